"""/openapi.json describes the surface, and schemathesis, driven by it against the live proxy over HTTP,
finds no 5xx and no error that is not OpenAI-shaped. Plus a property test of chat request validation."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import pytest
import redis
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.http.errors import ProxyError
from router.http.schemas import validate_chat
from simulator.server import MockServer
from simulator.state import MockSettings
from tests.router.conftest import MASTER, Proxy, make_config, start_proxy


@pytest.fixture(scope="module")
def live(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """One proxy for the whole module: schemathesis makes one test per operation."""
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    r.close()
    tmp = tmp_path_factory.mktemp("openapi")
    with MockServer(MockSettings()) as mock:
        path = tmp / "triage.yaml"
        path.write_text(yaml.safe_dump(make_config(mock.base_url, redis_server.url)))
        server, thread, root = start_proxy(path)
        try:
            yield Proxy(root_url=root, master_key=MASTER, config_path=path, mock=mock, redis_url=redis_server.url,
                        server=server)
        finally:
            server.should_exit = True
            thread.join(15)


@pytest.fixture(scope="module")
def api_schema(live: Proxy):
    return schemathesis.openapi.from_url(live.root_url + "/openapi.json")


def test_openapi_lists_every_route(live: Proxy) -> None:
    doc = httpx.get(live.root_url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for p, m in [("/v1/chat/completions", "post"), ("/v1/models", "get"), ("/admin/keys", "post"),
                 ("/admin/keys/{key_id}", "delete"), ("/admin/tenants/{tenant}", "put"), ("/v1/feedback", "post"),
                 ("/v1/usage", "get"), ("/admin/ledger/export", "get"), ("/healthz", "get")]:
        assert m in paths[p], (p, m)
    chat = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "messages" in chat["required"]


def test_openapi_can_be_turned_off(tmp_path: Path, redis_url: str, mock_upstream) -> None:
    path = tmp_path / "off.yaml"
    path.write_text(yaml.safe_dump(make_config(mock_upstream.base_url, redis_url,
                                               server={"max_body_bytes": 65536, "openapi": False})))
    server, thread, root = start_proxy(path)
    try:
        r = httpx.get(root + "/openapi.json")
        assert r.status_code == 404 and set(r.json()) == {"error"}
    finally:
        server.should_exit = True
        thread.join(15)


def _shaped(response, anthropic: bool = False) -> None:
    status = response.status_code
    assert status < 500, f"{status} on {response.request.method} {response.request.url}: {response.text[:300]}"
    if status >= 400:
        body = response.json()
        if anthropic:  # the Anthropic Messages routes answer in Anthropic's error shape, as its SDK expects
            assert body["type"] == "error" and body["error"]["type"] and body["error"]["message"], body
            return
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["message"]


def _checker(root: str, op):
    anthropic = "/messages" in op.path

    @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy())
    def check(case) -> None:
        _shaped(case.call(base_url=root, headers={"authorization": f"Bearer {MASTER}"}, timeout=30),
                anthropic=anthropic)

    return check


SKIP = ("/ui/static", "/metrics", "/admin/reload")  # files and Prometheus text; a reload of the fixture's config


def test_schemathesis_no_5xx_every_error_shaped(live: Proxy, api_schema) -> None:
    """Every operation in /openapi.json, a bounded number of generated requests each, over real HTTP."""
    failures: list[str] = []
    ran = 0
    for result in api_schema.get_all_operations():
        op = result.ok()
        if op.path in ("/", "/ui", "/ui/") or op.path.startswith(SKIP):  # HTML pages
            continue

        try:
            _checker(live.root_url, op)()
            ran += 1
        except AssertionError as e:
            failures.append(f"{op.method.upper()} {op.path}: {str(e)[:300]}")
    assert ran >= 20
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------ property: request validation

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
                    max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={
    "model": JSON | st.sampled_from(["triage/auto", "small"]),
    "messages": JSON | st.just([{"role": "user", "content": "hi"}]),
    "stream": JSON, "max_tokens": JSON, "max_completion_tokens": JSON, "n": JSON, "metadata": JSON,
    "stream_options": JSON, "reasoning_effort": JSON, "tools": JSON,
})


@settings(max_examples=300, deadline=None)
@given(body=FIELDS | JSON)
def test_chat_validation_accepts_or_refuses_with_a_shaped_400(body) -> None:
    try:
        req = validate_chat(body)
    except ProxyError as e:
        assert e.status == 400 and e.message
        return
    # accepted: the typed fields are exactly what was sent, nothing coerced
    assert isinstance(body, dict)
    assert req.stream is body.get("stream", False)
    for f in ("max_tokens", "max_completion_tokens", "n"):
        if body.get(f) is not None:
            assert type(body[f]) is int and getattr(req, f) == body[f]
