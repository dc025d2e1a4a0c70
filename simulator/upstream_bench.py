"""Microbenchmark: requests/s of ``Upstream.complete`` / ``stream`` against the mock.

    python -m simulator.upstream_bench [--requests 20000] [--concurrency 64] [--mode inloop|process]

``inloop`` serves the mock from the same uvloop as the client (one core does
both sides, so it bounds the client's per-request overhead from above);
``process`` runs the mock in a subprocess (the client gets its own core).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from typing import Any

import uvloop

from router.upstream import Deployment, Upstream
from simulator.app import build_app
from simulator.server import MockServer, _config
from simulator.state import MockSettings


async def _drive(up: Upstream, dep: Deployment, n: int, conc: int, stream: bool) -> float:
    body: dict[str, Any] = {"model": "bench", "messages": [{"role": "user", "content": "What is 6*7?"}],
                            "max_tokens": 16}
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            if stream:
                async for _ in up.stream(dep, body):
                    pass
            else:
                await up.complete(dep, body)

    await asyncio.gather(*(worker() for _ in range(min(conc, 200))))  # warm-up sized pool
    left = n
    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return n / (time.perf_counter() - t)


async def _run(mode: str, n: int, conc: int) -> dict[str, float]:
    up = Upstream()
    await up.start()
    server = task = mock = None
    try:
        if mode == "inloop":
            import uvicorn

            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            server = uvicorn.Server(_config(build_app(MockSettings(prompt_cache=False)), "127.0.0.1", port, "critical"))
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started:
                await asyncio.sleep(0.01)
            base = f"http://127.0.0.1:{port}/v1"
        else:
            mock = MockServer(MockSettings(prompt_cache=False), mode="process").start()
            base = mock.base_url
        dep = Deployment(name="bench", model="mock-fast", api_base=base, api_key="sk-bench", timeout=30)
        return {
            "complete_rps": await _drive(up, dep, n, conc, False),
            "stream_rps": await _drive(up, dep, n // 2, conc, True),
        }
    finally:
        await up.close()
        if server is not None:
            server.should_exit = True
            if task is not None:
                await task
        if mock is not None:
            mock.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser("upstream-bench")
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--mode", choices=("inloop", "process"), default="process")
    a = p.parse_args(argv)
    res = uvloop.run(_run(a.mode, a.requests, a.concurrency))
    print({k: round(v) for k, v in res.items()} | {"mode": a.mode, "concurrency": a.concurrency})


if __name__ == "__main__":
    main()
