"""The lean HTTP/1.1 upstream client against a scripted real server (plain TCP and TLS): keep-alive reuse,
stale connections, framing and encodings, and the failure kinds each broken answer maps to."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
import subprocess
import zlib
from typing import Any, Callable

import orjson
import pytest

from router.upstream import Deployment, Upstream, UpstreamError
from router.upstream.http1 import Pool, Target

COMPLETION = orjson.dumps({"id": "c1", "object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
CHUNKS = [{"id": "s", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": w},
                                                                        "finish_reason": None}]}
          for w in ("a", "b", "c")]
CHUNKS.append({"id": "s", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {},
                                                                          "finish_reason": "stop"}]})
CHUNKS.append({"id": "s", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 3,
                                                                                      "completion_tokens": 3}})
SSE = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in CHUNKS) + b"data: [DONE]\n\n"


def ok(body: bytes = COMPLETION, ctype: bytes = b"application/json", extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\nContent-Length: %d\r\n" % len(body) + extra
            + b"\r\n" + body)


def chunked(parts: list[bytes], ctype: bytes = b"application/json", extra: bytes = b"", end: bool = True) -> bytes:
    out = b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n"
    out += b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts if p)
    return out + (b"0\r\n\r\n" if end else b"")


Answer = bytes | tuple[bytes, bool] | None


def then_close(out: bytes) -> tuple[bytes, bool]:
    return out, True


class Scripted:
    """A real HTTP/1.1 server; ``script(conn_no, req_no_on_conn, body)`` returns the bytes to answer with
    (``then_close(bytes)``: and close the connection after them), or None to close it without answering.
    Every request received is recorded."""

    def __init__(self, script: Callable[[int, int, bytes], Answer], tls: ssl.SSLContext | None = None):
        self.script, self.tls = script, tls
        self.seen: list[tuple[int, int, bytes]] = []
        self.heads: list[bytes] = []
        self.conns = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self.writers:
            w.close()
        self.server.close()

    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.conns += 1
        n, i = self.conns, 0
        self.writers.append(w)
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await r.readexactly(length)
                i += 1
                self.seen.append((n, i, body))
                self.heads.append(head)
                out = self.script(n, i, body)
                if out is None:
                    break
                close = isinstance(out, tuple)
                w.write(out[0] if isinstance(out, tuple) else out)
                await w.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


def dep_for(srv: Scripted, **kw: Any) -> Deployment:
    return Deployment(name="d", model="m", api_base=srv.url(), api_key="sk-test-key-123456", timeout=3,
                      stream_idle_timeout=2, **kw)


def req(text: str = "hi") -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


async def stream_all(up: Upstream, dep: Deployment) -> tuple[list[dict], UpstreamError | None]:
    got: list[dict] = []
    try:
        async with contextlib.aclosing(up.stream(dep, req())) as it:
            async for c in it:
                got.append(c)
    except UpstreamError as e:
        return got, e
    return got, None


async def test_keep_alive_reuses_one_connection_and_the_wire_is_complete(up):
    async with Scripted(lambda n, i, b: ok()) as srv:
        d = dep_for(srv, headers={"x-team": "t"})
        for _ in range(5):
            assert (await up.complete(d, req()))["choices"][0]["message"]["content"] == "hi"
        assert srv.conns == 1 and len(srv.seen) == 5
        assert orjson.loads(srv.seen[0][2]) == req()
        # concurrent requests open more connections, which are then kept too
        await asyncio.gather(*(up.complete(d, req()) for _ in range(4)))
        conns = srv.conns
        for _ in range(3):
            await up.complete(d, req())
        assert srv.conns == conns


async def test_connection_close_and_eof_delimited_bodies_are_not_reused(up):
    eof_body = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + COMPLETION
    answers = {1: ok(extra=b"Connection: close\r\n"), 2: then_close(eof_body), 3: ok()}
    async with Scripted(lambda n, i, b: answers[n]) as srv:
        d = dep_for(srv)
        for _ in range(4):
            assert (await up.complete(d, req()))["id"] == "c1"
        # the close-delimited body was read to its end, and neither connection was used again
        assert [(n, i) for n, i, _ in srv.seen] == [(1, 1), (2, 1), (3, 1), (3, 2)]


async def test_an_idle_connection_the_server_closed_is_not_used(up):
    async with Scripted(lambda n, i, b: ok()) as srv:
        d = dep_for(srv)
        await up.complete(d, req())
        for w in srv.writers:
            w.close()  # keep-alive timeout on the server side
        await asyncio.sleep(0.05)
        assert (await up.complete(d, req()))["id"] == "c1"
        assert srv.conns == 2 and len(srv.seen) == 2


async def test_stale_connection_race_is_retried_once_on_a_fresh_connection(up):
    # The server closes the reused connection as the request arrives, without reading it: the typical
    # stale keep-alive race. The request goes out once more, on a new connection, and succeeds.
    async with Scripted(lambda n, i, b: None if (n, i) == (1, 2) else ok()) as srv:
        d = dep_for(srv)
        await up.complete(d, req("one"))
        assert (await up.complete(d, req("two")))["id"] == "c1"
        assert [(n, i) for n, i, _ in srv.seen] == [(1, 1), (1, 2), (2, 1)]
    # the same for a stream
    async with Scripted(lambda n, i, b: None if (n, i) == (1, 2) else ok(SSE, b"text/event-stream")) as srv:
        d = dep_for(srv)
        assert (await stream_all(up, d))[1] is None
        chunks, err = await stream_all(up, d)
        assert err is None and chunks[-1]["usage"]["completion_tokens"] == 3
        assert [(n, i) for n, i, _ in srv.seen] == [(1, 1), (1, 2), (2, 1)]


async def test_no_double_send(up):
    # a new connection that closes without an answer: not retried here (the chain decides), and billed
    async with Scripted(lambda n, i, b: None) as srv:
        with pytest.raises(UpstreamError) as ei:
            await up.complete(dep_for(srv), req())
        assert ei.value.kind == "disconnect" and ei.value.consumed == {"raw": ""}
        assert len(srv.seen) == 1
    # a reused connection that answered in part: the server read the request, never sent again
    async with Scripted(lambda n, i, b: ok() if i == 1 else then_close(b"HTTP/1.1 200 OK\r\nContent-Length: 90\r\n\r\n{")) as srv:
        d = dep_for(srv)
        await up.complete(d, req())
        with pytest.raises(UpstreamError) as ei:
            await up.complete(d, req())
        assert ei.value.kind == "disconnect" and ei.value.consumed is not None
        assert len(srv.seen) == 2
    # stale, and the retry's fresh connection fails too: two sends in all, never three
    async with Scripted(lambda n, i, b: ok() if n == 1 and i == 1 else None) as srv:
        d = dep_for(srv)
        await up.complete(d, req())
        with pytest.raises(UpstreamError) as ei:
            await up.complete(d, req())
        assert ei.value.kind == "disconnect"
        assert [(n, i) for n, i, _ in srv.seen] == [(1, 1), (1, 2), (2, 1)]


async def test_chunked_gzip_and_deflate_bodies(up):
    gz = gzip.compress(COMPLETION)
    raw_deflate = zlib.compressobj(wbits=-15)
    rd = raw_deflate.compress(COMPLETION) + raw_deflate.flush()
    answers = [chunked([COMPLETION[:7], COMPLETION[7:40], COMPLETION[40:]]),
               chunked([gz[:10], gz[10:]], extra=b"Content-Encoding: gzip\r\n"),
               ok(zlib.compress(COMPLETION), extra=b"Content-Encoding: deflate\r\n"),
               ok(rd, extra=b"Content-Encoding: deflate\r\n"),
               b"HTTP/1.1 100 Continue\r\n\r\n" + ok()]
    async with Scripted(lambda n, i, b: answers[i - 1]) as srv:
        d = dep_for(srv)
        for _ in answers:
            r = await up.complete(d, req())
            assert r["choices"][0]["message"]["content"] == "hi" and r["usage"]["total_tokens"] == 4
        assert srv.conns == 1
    gsse = gzip.compress(SSE)
    cut = [gsse[i:i + 17] for i in range(0, len(gsse), 17)]
    async with Scripted(lambda n, i, b: chunked(cut, b"text/event-stream", b"Content-Encoding: gzip\r\n")) as srv:
        chunks, err = await stream_all(up, dep_for(srv))
        assert err is None and [c.get("usage") for c in chunks][-1] == {"prompt_tokens": 3, "completion_tokens": 3}
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "abc"
        assert b"\r\nAccept-Encoding: gzip, deflate\r\n" in srv.heads[0]


async def test_short_and_malformed_answers_map_to_their_kinds(up):
    answers = {
        "short": then_close(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
                            + COMPLETION),
        "cut_chunked": then_close(chunked([COMPLETION[:20]], end=False)),
        "garbage": b"SMTP ready\r\n\r\n",
        "bad_json": ok(b"{\"choices\": [1"),
    }
    order = list(answers)
    async with Scripted(lambda n, i, b: answers[order[n - 1]] if i == 1 else None) as srv:
        d = dep_for(srv)
        kinds = {}
        for name in order:
            with pytest.raises(UpstreamError) as ei:
                await up.complete(d, req())
            kinds[name] = (ei.value.kind, ei.value.consumed is not None)
        assert kinds == {"short": ("disconnect", True), "cut_chunked": ("disconnect", True),
                         "garbage": ("bad_response", False), "bad_json": ("bad_response", True)}
    # a stream cut mid-body: partial, after the chunks that came
    sse_cut = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    first = b"data: " + orjson.dumps(CHUNKS[0]) + b"\n\n"
    async with Scripted(lambda n, i, b: then_close(sse_cut + b"%x\r\n" % len(first) + first + b"\r\n")) as srv:
        chunks, err = await stream_all(up, dep_for(srv))
        assert len(chunks) == 1 and err is not None and err.kind == "disconnect" and err.partial


async def test_error_statuses_keep_retry_after(up):
    body = b'{"error": {"message": "slow down"}}'
    async with Scripted(lambda n, i, b: (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n"
                                         b"Content-Length: %d\r\n\r\n" % len(body) + body)) as srv:
        with pytest.raises(UpstreamError) as ei:
            await up.complete(dep_for(srv), req())
        assert (ei.value.kind, ei.value.retry_after, ei.value.message) == ("rate_limited", 7.0, "d: slow down")
        _, err = await stream_all(up, dep_for(srv))
        assert err is not None and err.kind == "rate_limited" and err.retry_after == 7.0
        assert srv.conns == 1  # an error answer read to its end leaves the connection reusable


async def test_a_slow_stream_consumer_gets_every_byte(up):
    # ~1.5 MB of events (over the pause threshold) read slowly: reading pauses and resumes, nothing is lost
    big = [{"id": "s", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": f"{k:06d}" + "x" * 1000}, "finish_reason": None}]}
           for k in range(1500)]
    big += CHUNKS[-2:]
    wire = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in big) + b"data: [DONE]\n\n"
    async with Scripted(lambda n, i, b: ok(wire, b"text/event-stream")) as srv:
        got = []
        async with contextlib.aclosing(up.stream(dep_for(srv), req())) as it:
            async for c in it:
                got.append(c)
                if len(got) % 100 == 0:
                    await asyncio.sleep(0.01)
        assert len(got) == len(big)
        assert [c["choices"][0]["delta"]["content"][:6] for c in got[:1500]] == [f"{k:06d}" for k in range(1500)]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("tls")
    key, crt = str(d / "key.pem"), str(d / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return crt, key


async def test_tls_with_a_trusted_certificate_and_rejection_of_an_untrusted_one(cert):
    crt, key = cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(crt, key)
    client_ctx = ssl.create_default_context(cafile=crt)
    async with Scripted(lambda n, i, b: ok() if b else None, tls=server_ctx) as srv:
        async with Upstream(ssl_context=client_ctx) as up:
            d = dep_for(srv)
            for _ in range(3):
                assert (await up.complete(d, req()))["id"] == "c1"
            srv.script = lambda n, i, b: ok(SSE, b"text/event-stream")
            chunks, err = await stream_all(up, d)
            assert err is None and chunks[-1]["usage"]
            assert srv.conns == 1
        # the system trust store does not know this certificate: a connect error, nothing sent
        async with Upstream() as up:
            with pytest.raises(UpstreamError) as ei:
                await up.complete(dep_for(srv), req())
            assert ei.value.kind == "connect" and ei.value.consumed is None
        assert len(srv.seen) == 4


async def test_pool_limit_queues_requests_and_targets_build_the_head():
    t = Target("http://[::1]:8080/v1/chat/completions?api-version=1", {"Authorization": "Bearer k"})
    assert t.head.startswith(b"POST /v1/chat/completions?api-version=1 HTTP/1.1\r\nHost: [::1]:8080\r\n")
    assert b"Accept-Encoding: gzip, deflate\r\n" in t.head and t.head.endswith(b"Content-Length: ")
    with pytest.raises(ValueError):
        Target("http://h/v1", {"x": "a\r\nInjected: 1"})
    async with Scripted(lambda n, i, b: ok()) as srv:
        pool = Pool(limit=2)
        tgt = Target(srv.url() + "/chat/completions", {})
        rs = await asyncio.gather(*(pool.post(tgt, b"{}", 3, 3) for _ in range(10)))
        assert {r.status for r in rs} == {200} and srv.conns <= 2
        pool.close()
