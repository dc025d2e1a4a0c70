"""Load generator, run as its own process: ``python bench/loadgen.py '<json spec>'`` -> JSON on stdout.

Modes
    closed   N connections, each sends its next request when the last answered (max req/s)
    open     requests scheduled at a fixed rate; latency counts from the *scheduled* send
             time, so a stalled server is charged for the queue it causes (no coordinated omission)
    rounds   sequential (c=1) rounds, targets interleaved round by round (overhead)
    burst    n requests started at once (budget race)
A target is {"port", "path", "headers", "body", "host"?}; "track": true records SSE content events.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from httpc import Pool, Result, build_request  # noqa: E402

clock = time.perf_counter


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def summary(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "p50": pct(xs, 50), "p90": pct(xs, 90), "p99": pct(xs, 99),
            "max": max(xs), "mean": statistics.fmean(xs)}


class Target:
    def __init__(self, t: dict[str, Any], limit: int):
        self.host = t.get("host", "127.0.0.1")
        self.port = int(t["port"])
        body = json.dumps(t["body"]).encode() if t.get("body") is not None else b""
        self.raw = build_request("POST" if body else "GET", t["path"], self.host, self.port, body, t.get("headers"))
        self.pool = Pool(self.host, self.port, limit)


class Stats:
    def __init__(self) -> None:
        self.lat: list[float] = []
        self.ttft: list[float] = []
        self.gaps: list[float] = []
        self.status: dict[str, int] = {}
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.codes: dict[str, int] = {}

    def add(self, res: Result | None, start: float, track: bool, exc: BaseException | None = None) -> None:
        if res is None:
            self.errors += 1
            k = type(exc).__name__ if exc else "error"
            self.error_kinds[k] = self.error_kinds.get(k, 0) + 1
            return
        # a stream that fails after its 200 header reports the error as an SSE event (counted as "599")
        if res.status < 400 and res.body[:16].startswith(b'data: {"error"'):
            res.body = res.body[6:].split(b"\n", 1)[0]
            res.status = 599
        key = str(res.status)
        self.status[key] = self.status.get(key, 0) + 1
        if res.status >= 400:
            self.errors += 1
            try:
                code = json.loads(res.body)["error"]["code"]
            except Exception:
                code = "?"
            self.codes[str(code)] = self.codes.get(str(code), 0) + 1
            return
        self.lat.append((res.t_end - start) * 1000)
        if track and res.t_first is not None:
            self.ttft.append((res.t_first - start) * 1000)
            ev = res.t_events
            self.gaps.extend((ev[i] - ev[i - 1]) * 1000 for i in range(1, len(ev)))

    def out(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ok": len(self.lat), "errors": self.errors, "status": self.status,
                             "error_kinds": self.error_kinds, "error_codes": self.codes, "lat_ms": summary(self.lat)}
        if self.ttft:
            d["ttft_ms"] = summary(self.ttft)
            d["gap_ms"] = summary(self.gaps)
            if len(self.gaps) > 1:
                d["gap_ms"]["stdev"] = statistics.pstdev(self.gaps)
        return d


async def one(t: Target, st: Stats, start: float, track: bool, timeout: float) -> None:
    try:
        res = await t.pool.request(t.raw, track, timeout)
    except Exception as e:
        st.add(None, start, track, e)
        return
    st.add(res, start, track)


async def closed(spec: dict[str, Any]) -> dict[str, Any]:
    conc, track, timeout = int(spec["concurrency"]), bool(spec.get("track")), float(spec.get("timeout", 30))
    t = Target(spec["target"], conc)
    warm, dur = float(spec.get("warmup", 1.0)), float(spec["duration"])
    max_n = int(spec.get("max_requests", 10**9))
    st = Stats()
    warm_st = Stats()
    t0 = clock()
    t_measure, t_stop = t0 + warm, t0 + warm + dur
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while True:
            now = clock()
            if now >= t_stop or sent >= max_n:
                return
            sent += 1
            await one(t, st if now >= t_measure else warm_st, now, track, timeout)

    await asyncio.gather(*(worker() for _ in range(conc)))
    elapsed = max(clock() - max(t_measure, t0), 1e-9)
    out = st.out()
    out.update(mode="closed", concurrency=conc, elapsed_s=elapsed, rps=out["ok"] / elapsed,
               warmup_ok=len(warm_st.lat), warmup_errors=warm_st.errors)
    t.pool.close()
    return out


async def open_loop(spec: dict[str, Any]) -> dict[str, Any]:
    rate, dur = float(spec["rate"]), float(spec["duration"])
    track, timeout = bool(spec.get("track")), float(spec.get("timeout", 10))
    t = Target(spec["target"], int(spec.get("max_conn", 2048)))
    n = int(rate * dur)
    st = Stats()
    tasks = []
    t0 = clock() + 0.05
    i = 0
    while i < n:
        now = clock()
        due = t0 + i / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        # fire everything that is due; latency is measured from `due`, not from now
        while i < n and t0 + i / rate <= now:
            tasks.append(asyncio.ensure_future(one(t, st, t0 + i / rate, track, timeout)))
            i += 1
    await asyncio.gather(*tasks)
    elapsed = clock() - t0
    out = st.out()
    out.update(mode="open", rate=rate, offered=n, elapsed_s=elapsed, achieved_rps=out["ok"] / max(dur, 1e-9),
               connections=t.pool.count)
    t.pool.close()
    return out


async def rounds(spec: dict[str, Any]) -> dict[str, Any]:
    targets = {name: Target(ts, 1) for name, ts in spec["targets"].items()}
    track, n, r = bool(spec.get("track")), int(spec["n"]), int(spec["rounds"])
    timeout = float(spec.get("timeout", 30))
    res: dict[str, Any] = {name: {"round_p50": [], "round_p99": [], "round_ttft_p50": [], "round_gap_stdev": [],
                                   "round_gap_p99": [], "errors": 0} for name in targets}
    for t in targets.values():  # warm every connection and code path first
        for _ in range(int(spec.get("warmup", 20))):
            await one(t, Stats(), clock(), track, timeout)
    for _ in range(r):
        for name, t in targets.items():
            st = Stats()
            for _ in range(n):
                await one(t, st, clock(), track, timeout)
            o = st.out()
            rr = res[name]
            rr["errors"] += st.errors
            if st.lat:
                rr["round_p50"].append(o["lat_ms"]["p50"])
                rr["round_p99"].append(o["lat_ms"]["p99"])
            if st.ttft:
                rr["round_ttft_p50"].append(o["ttft_ms"]["p50"])
                rr["round_gap_stdev"].append(o["gap_ms"].get("stdev", 0.0))
                rr["round_gap_p99"].append(o["gap_ms"]["p99"])
    for t in targets.values():
        t.pool.close()
    return {"mode": "rounds", "n": n, "rounds": r, "targets": res}


async def burst(spec: dict[str, Any]) -> dict[str, Any]:
    n, timeout = int(spec["n"]), float(spec.get("timeout", 60))
    t = Target(spec["target"], n)
    # open every connection first so the requests race at the proxy, not in connect()
    conns = await asyncio.gather(*(t.pool._get() for _ in range(n)))
    t.pool.idle.extend(conns)
    st = Stats()
    start = clock()
    await asyncio.gather(*(one(t, st, start, False, timeout) for _ in range(n)))
    out = st.out()
    out.update(mode="burst", n=n, elapsed_s=clock() - start)
    t.pool.close()
    return out


MODES = {"closed": closed, "open": open_loop, "rounds": rounds, "burst": burst}


def main() -> None:
    spec = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out = asyncio.run(MODES[spec["mode"]](spec))
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
