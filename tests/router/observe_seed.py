"""Seed traffic through the real proxy for the review-surface tests (dashboard, metrics, alerts)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tests.router.conftest import Proxy

EASY = "What is the capital of France?"
HARD = ("Prove that there are infinitely many primes, then derive step by step an asymptotic estimate of the "
        "prime counting function and explain each step of the derivation rigorously.")


@dataclass
class Seeded:
    acme_key: str
    acme_key_id: str
    globex_key: str
    globex_key_id: str
    acme_ids: list[str]
    globex_ids: list[str]
    refused: int


def _key(proxy: Proxy, tenant: str, **policy: object) -> tuple[str, str]:
    r = proxy.admin("POST", "/admin/keys", json={"tenant": tenant, **policy})
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["key_id"]


def seed(proxy: Proxy) -> Seeded:
    """Two tenants, every tier, one stream, one rating, budgets, and one refusal by a tiny budget."""
    acme, acme_id = _key(proxy, "acme", label="web")
    globex, globex_id = _key(proxy, "globex", label="batch")
    assert proxy.admin("PUT", "/admin/budgets", json={"tenant": "acme", "limit_usd": 5, "period": "month",
                                                      "soft_pct": 80}).status_code == 200
    assert proxy.admin("PUT", "/admin/budgets", json={"tenant": "globex", "limit_usd": 2, "period": "day"}).status_code == 200
    assert proxy.admin("PUT", "/admin/budgets", json={"key_id": acme_id, "limit_usd": 1, "period": "total"}).status_code == 200
    # small enough that, early in a month, the rate so far runs it out before the month ends
    assert proxy.admin("PUT", "/admin/budgets", json={"tenant": "acme", "tier": "deliberate", "limit_usd": 0.02,
                                                      "period": "month", "mode": "soft"}).status_code == 200
    ids: dict[str, list[str]] = {"acme": [], "globex": []}
    for key, tenant in ((acme, "acme"), (globex, "globex")):
        c = proxy.client(key)
        for model, text in (("triage/auto", EASY), ("triage/auto", HARD), ("triage/fast", EASY),
                            ("triage/reasoning", HARD), ("triage/deliberate", HARD)):
            raw = c.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": text}],
                                                               max_tokens=64)
            ids[tenant].append(raw.headers["x-request-id"])
        stream = c.chat.completions.create(model="triage/fast", messages=[{"role": "user", "content": EASY}],
                                           stream=True, max_tokens=32)
        for _ in stream:
            pass
    r = httpx.post(f"{proxy.base_url}/feedback", json={"request_id": ids["acme"][0], "score": 0.9},
                   headers={"authorization": f"Bearer {acme}"})
    assert r.status_code == 200, r.text
    # a key whose budget cannot fit any plan: refused before any upstream call
    poor, _ = _key(proxy, "acme", label="poor", budget_usd=0.0000001, period="day")
    refused = 0
    try:
        proxy.client(poor).chat.completions.create(model="triage/auto", messages=[{"role": "user", "content": EASY}])
    except Exception as e:  # openai.RateLimitError or APIStatusError 402/429
        refused = 1
        assert getattr(e, "status_code", None) in (402, 429), e
    return Seeded(acme, acme_id, globex, globex_id, ids["acme"], ids["globex"], refused)
