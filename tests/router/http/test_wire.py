"""The bytes on the wire, read off a raw socket: answers framed right when requests are pipelined or kept
alive, `Expect: 100-continue` honoured, streams chunked to their end. `triage serve`'s HTTP protocol
(`router/http/protocol.py`) holds a response's head back to send it with the body in one write; these
check that nothing is lost, reordered or delayed past the next message because of it."""

from __future__ import annotations

import json
import re
import socket
import time

import redis as redis_sync

from accounting import redis_keys as rk
from tests.router.conftest import Proxy

GATEWAY_ID = re.compile(r"^req_[0-9a-f]{24}$")


class Wire:
    def __init__(self, root_url: str) -> None:
        host, port = root_url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        got = self.sock.recv(65536)
        assert got, "the server closed the connection"
        self.buf += got

    def _take_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """One response: status, headers (lowercase names), the whole body (chunks joined)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            assert k.lower() not in headers, f"header {k} sent twice"
            headers[k.lower()] = v.strip()
        if "content-length" in headers:
            return status, headers, self._take(int(headers["content-length"]))
        assert headers.get("transfer-encoding") == "chunked", headers
        body = b""
        while True:
            size = int(self._take_line(), 16)
            chunk = self._take(size + 2)
            if size == 0:
                return status, headers, body
            body += chunk[:-2]

    def close(self) -> None:
        self.sock.close()


def _chat(key: str, content: str, *, stream: bool = False, extra: bytes = b"") -> tuple[bytes, bytes]:
    body = json.dumps({"model": "triage/fast", "max_tokens": 16, "stream": stream,
                       "messages": [{"role": "user", "content": content}]}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer " + key.encode() + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n"
            + extra + b"\r\n")
    return head, body


def test_pipelined_and_kept_alive_answers_are_framed_in_order(proxy: Proxy) -> None:
    key = proxy.create_key("wire")
    w = Wire(proxy.root_url)
    try:
        reqs = [b"".join(_chat(key, f"say {i}")) for i in range(2)]
        reqs.append(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        reqs.append(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}")  # no key
        w.send(b"".join(reqs))  # all four in one segment: uvicorn answers them one after another
        ids = set()
        for _ in range(2):
            status, h, body = w.response()
            assert status == 200 and h["content-type"] == "application/json"
            assert GATEWAY_ID.match(h["x-request-id"]) and h["x-triage-tier"] == "fast"
            assert int(h["x-triage-cost-nusd"]) > 0
            ids.add(h["x-request-id"])
            assert json.loads(body)["choices"][0]["message"]["content"]
        assert len(ids) == 2
        status, h, body = w.response()
        assert status == 200 and json.loads(body) == {"status": "ok"}
        status, h, body = w.response()
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
        assert GATEWAY_ID.match(h["x-request-id"])
        # the connection is still good for the next request
        w.send(b"".join(_chat(key, "once more")))
        status, h, body = w.response()
        assert status == 200 and json.loads(body)["usage"]["cost_nusd"] == int(h["x-triage-cost-nusd"])
        assert w.buf == b""
    finally:
        w.close()


def test_expect_100_continue_gets_its_interim_answer_first(proxy: Proxy) -> None:
    key = proxy.create_key("wire100")
    w = Wire(proxy.root_url)
    try:
        head, body = _chat(key, "hello", extra=b"expect: 100-continue\r\n")
        w.send(head)
        assert w._take_line() == b"HTTP/1.1 100 Continue"  # sent before the body, or the client would wait
        assert w._take_line() == b""
        w.send(body)
        status, h, out = w.response()
        assert status == 200 and json.loads(out)["choices"]
    finally:
        w.close()


def test_a_stream_is_chunked_to_its_end(proxy: Proxy) -> None:
    key = proxy.create_key("wirestream")
    w = Wire(proxy.root_url)
    try:
        w.send(b"".join(_chat(key, "stream please", stream=True)))
        status, h, body = w.response()
        assert status == 200 and h["content-type"].startswith("text/event-stream")
        assert GATEWAY_ID.match(h["x-request-id"]) and h["x-triage-tier"] == "fast"
        events = body.split(b"\n\n")
        assert events[-2] == b"data: [DONE]" and events[-3].startswith(b": triage-cost ")
        assert any(e.startswith(b"data: {") for e in events)
        w.send(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        assert w.response()[0] == 200
    finally:
        w.close()


def test_a_client_that_leaves_mid_stream_stops_it_and_pays_for_what_it_got(proxy: Proxy) -> None:
    key = proxy.create_key("wireleave")
    proxy.mock.update_settings(completion_tokens=200, itl_ms=50)  # ten seconds if streamed to the end
    w = Wire(proxy.root_url)
    try:
        w.send(b"".join(_chat(key, "a long story", stream=True)))
        while b'"content":"' not in w.buf.replace(b'"content":""', b""):
            w._fill()  # the answer has started
    finally:
        w.close()
    r = redis_sync.Redis.from_url(proxy.redis_url)
    deadline = time.monotonic() + 30
    while not r.xlen(rk.ledger("wireleave")):
        assert time.monotonic() < deadline, "the cut stream was never settled"
        time.sleep(0.05)
    (_, fields), = r.xrange(rk.ledger("wireleave"))
    rec = json.loads(fields[b"d"])
    assert rec["status"] == "cancelled" and rec["partial"], rec  # not streamed on to the end for nobody
    assert 0 < sum(c["completion_tokens"] for c in rec["calls"]) < 200
