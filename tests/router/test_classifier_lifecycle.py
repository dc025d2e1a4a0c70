"""Per-tenant classifier artifacts through the real proxy: rated traffic -> `triage classifier
propose` -> `promote` (refused when worse on the tenant's held-out rows unless --force) ->
`rollback`; the version in every ledger row and in x-triage-decision; `classifier.model`
per tenant hot-reloaded by /admin/reload."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import orjson
import typer
import yaml
from typer.testing import CliRunner

from classifier import Classifier
from classifier.training.fixture import write_fixture
from router.commands.classifier import register
from tests.router.conftest import MASTER, Proxy, make_config, start_proxy

runner = CliRunner()

# The tenant's own notion of hard: anything about its in-house "zorblax" ledger system fails
# the fast tier; nothing in the public data can know that.
HARD = ["Reconcile the zorblax ledger for account {n} against last quarter",
        "Why does the zorblax export for batch {n} drop rows?",
        "Migrate zorblax rule set {n} to the new schema"]
EASY = ["What is the capital of country number {n} on my list?", "Say hello to team {n}",
        "Translate 'thank you' into language {n}", "What day of the week is day {n}?"]


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _cli(*args: str) -> str:
    res = runner.invoke(_app(), list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def _decision_version(resp: httpx.Response) -> str:
    return resp.headers["x-triage-decision"].rsplit("classifier=", 1)[1]


def _ask(px: Proxy, key: str, prompt: str, model: str = "triage/auto") -> httpx.Response:
    with px.http() as c:
        r = c.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                   json={"model": model, "messages": [{"role": "user", "content": prompt}]})
    assert r.status_code == 200, r.text
    return r


def _rated_traffic(px: Proxy, key: str, n: int = 120) -> None:
    rng = random.Random(3)
    for i in range(n):
        hard = i % 2 == 0
        prompt = rng.choice(HARD if hard else EASY).format(n=i)
        r = _ask(px, key, prompt, model="triage/fast")
        score = 0.1 if hard else 0.9
        with px.http() as c:
            fb = c.post("/v1/feedback", headers={"authorization": f"Bearer {key}"},
                        json={"request_id": r.headers["x-request-id"], "score": score})
        assert fb.status_code == 200, fb.text


def _ledger(px: Proxy, tenant: str) -> list[dict]:
    r = px.admin("GET", "/admin/ledger/export", params={"tenant": tenant})
    assert r.status_code == 200, r.text
    return [orjson.loads(line) for line in r.content.splitlines() if line.strip()]


def test_propose_promote_rollback_through_the_proxy(tmp_path: Path, redis_url: str, mock_upstream) -> None:
    store = tmp_path / "store"
    cfg = make_config(mock_upstream.base_url, redis_url, classifier={"store": str(store)})
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(cfg))
    server, thread, root = start_proxy(path)
    px = Proxy(root_url=root, master_key=MASTER, config_path=path, mock=mock_upstream, redis_url=redis_url, server=server)
    try:
        key = px.create_key("acme")
        assert px.admin("PUT", "/admin/tenants/acme", json={"store_prompts": True}).status_code == 200
        shipped = Classifier.load()
        _rated_traffic(px, key)
        rows = _ledger(px, "acme")
        assert rows and all(r["classifier"] == shipped.version for r in rows)

        public = write_fixture(tmp_path / "public" / "routing_fixture.jsonl", n=200)
        cand = tmp_path / "cand.json"
        out = _cli("classifier", "propose", "--tenant", "acme", "--data", str(public), "--out", str(cand),
                   "--no-loso", "--store", str(store), "--redis-url", redis_url)
        assert "candidate" in out and "promote with" in out, out
        cv = Classifier.load(cand).version
        assert cv != shipped.version

        probe = HARD[0].format(n=999)
        before = _ask(px, key, probe)
        assert _decision_version(before) == shipped.version

        # A candidate that ranks the tenant's rows backwards is refused, unless forced.
        flipped = tmp_path / "flipped.jsonl"
        flipped.write_text("\n".join(json.dumps({**r, "quality": 1 - r["quality"]}) for r in rows if r["quality"] is not None))
        bad = tmp_path / "bad.json"
        _cli("train", "--data", str(public), "--data", str(flipped), "--out", str(bad), "--no-baselines")
        res = runner.invoke(_app(), ["classifier", "promote", str(bad), "--tenant", "acme", "--store", str(store),
                                     "--redis-url", redis_url])
        assert res.exit_code == 2 and "refused" in res.output, res.output
        assert _decision_version(_ask(px, key, probe)) == shipped.version

        out = _cli("classifier", "promote", str(cand), "--tenant", "acme", "--store", str(store), "--redis-url", redis_url)
        assert "promoted" in out
        after = _ask(px, key, probe)
        assert _decision_version(after) == cv                      # the next request, no reload
        assert float(after.headers["x-triage-complexity"]) > float(before.headers["x-triage-complexity"])
        other = px.create_key("other")
        assert _decision_version(_ask(px, other, probe)) == shipped.version   # other tenants untouched
        assert _ledger(px, "acme")[-1]["classifier"] == cv

        bv = Classifier.load(bad).version
        _cli("classifier", "promote", str(bad), "--tenant", "acme", "--store", str(store), "--redis-url", redis_url, "--force")
        assert _decision_version(_ask(px, key, probe)) == bv
        assert "rolled back" in _cli("classifier", "rollback", "--tenant", "acme", "--store", str(store))
        assert _decision_version(_ask(px, key, probe)) == cv
        _cli("classifier", "rollback", "--tenant", "acme", "--store", str(store))
        assert _decision_version(_ask(px, key, probe)) == shipped.version
        res = runner.invoke(_app(), ["classifier", "rollback", "--tenant", "acme", "--store", str(store)])
        assert res.exit_code == 2 and "nothing to roll back" in res.output

        # Config-level per-tenant model, hot-reloaded.
        cfg["classifier"] = {"store": str(store), "tenants": {"other": {"model": str(cand)}}}
        px.rewrite_config(cfg)
        assert px.reload().status_code == 200
        assert _decision_version(_ask(px, other, probe)) == cv
        assert _decision_version(_ask(px, key, probe)) == shipped.version
        # A config naming a missing artifact is refused by reload; the old set keeps serving.
        cfg["classifier"] = {"model": str(tmp_path / "nope.json")}
        px.rewrite_config(cfg)
        r = px.reload()
        assert r.status_code == 400 and "nope.json" in r.json()["error"]["message"]
        assert _decision_version(_ask(px, other, probe)) == cv
    finally:
        server.should_exit = True
        thread.join(15)
