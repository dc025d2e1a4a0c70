"""A LiteLLM proxy config, as it is: map its settings onto Triage's, derive tiers when absent.

LiteLLM's sections (`general_settings`, `router_settings`, `litellm_settings`,
`environment_variables`) are read here, the settings that have a Triage
meaning are moved onto the top-level keys `TriageConfig` validates, and every
other setting is named in one warning line, so an operator sees at a glance
what their config does not do here.

Tier derivation (no `tiers` section): prices come from `model_info` or
litellm's bundled price map; the cheapest model(s) serve `fast`, reasoning-capable
models (`supports_reasoning`) serve `reasoning` cheapest first, and the dearest
model (price stands in for strength) serves `deliberate` as a 3-agent vote. Models that answer no
chat (embedding, image, audio modes) are left out of every tier.
"""

from __future__ import annotations

import os
from typing import Any

from accounting.prices import load_price_map, lookup

SECTIONS = ("general_settings", "router_settings", "litellm_settings", "environment_variables")
DELIBERATE_AGENTS = 3


def _fallbacks(value: Any) -> dict[str, list[str]]:
    """LiteLLM's `[{"gpt-4o": ["gpt-4o-mini"]}, ...]` as a mapping."""
    out: dict[str, list[str]] = {}
    items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    for item in items:
        if isinstance(item, dict):
            for k, v in item.items():
                vs = v if isinstance(v, list) else [v]
                out.setdefault(str(k), []).extend(str(x) for x in vs if x is not None)
    return out


def absorb(raw: dict[str, Any]) -> list[str]:
    """Move the LiteLLM sections' mapped settings into `raw` (in place); return the ignored ones."""
    ignored: list[str] = []
    env = raw.pop("environment_variables", None)
    if isinstance(env, dict):
        # LiteLLM exports these at startup so `os.environ/...` references below can use them.
        for k, v in env.items():
            os.environ.setdefault(str(k), str(v))
    gs = raw.pop("general_settings", None) or {}
    rs = raw.pop("router_settings", None) or {}
    ls = raw.pop("litellm_settings", None) or {}
    for name, section in (("general_settings", gs), ("router_settings", rs), ("litellm_settings", ls)):
        if not isinstance(section, dict):
            ignored.append(name)
    gs = gs if isinstance(gs, dict) else {}
    rs = rs if isinstance(rs, dict) else {}
    ls = ls if isinstance(ls, dict) else {}

    used: set[tuple[str, str]] = set()
    if "master_key" in gs:
        raw.setdefault("master_key", gs["master_key"])
        used.add(("general_settings", "master_key"))
    fb: dict[str, list[str]] = {}
    for name, section in (("litellm_settings", ls), ("router_settings", rs)):
        if section.get("default_fallbacks"):
            fb["*"] = list(dict.fromkeys([*fb.get("*", []), *section["default_fallbacks"]]))
            used.add((name, "default_fallbacks"))
        if "fallbacks" in section:
            for k, v in _fallbacks(section["fallbacks"]).items():
                fb[k] = list(dict.fromkeys([*fb.get(k, []), *v]))
            used.add((name, "fallbacks"))
        if "num_retries" in section and section["num_retries"] is not None:
            raw.setdefault("num_retries", section["num_retries"])
            used.add((name, "num_retries"))
    if fb:
        raw.setdefault("fallbacks", fb)
    if "drop_params" in ls:
        raw.setdefault("drop_params", bool(ls["drop_params"]))
        used.add(("litellm_settings", "drop_params"))
    timeout = rs.get("timeout", ls.get("request_timeout"))
    if timeout is not None:
        used.add(("router_settings", "timeout") if "timeout" in rs else ("litellm_settings", "request_timeout"))
        for m in raw.get("model_list") or ():
            lp = m.get("litellm_params") if isinstance(m, dict) else None
            if isinstance(lp, dict):
                lp.setdefault("timeout", timeout)
    for name, section in (("general_settings", gs), ("router_settings", rs), ("litellm_settings", ls)):
        ignored.extend(f"{name}.{k}" for k in section if (name, k) not in used)
    return ignored


CHAT_MODES = (None, "chat", "responses", "completion")


def chat_capable(entry: dict[str, Any], price_map: dict[str, Any]) -> bool:
    """Embedding, image, audio and rerank deployments answer no chat: they never serve a tier."""
    info = entry.get("model_info") or {}
    lp = entry.get("litellm_params") or {}
    mode = info.get("mode") if isinstance(info, dict) else None
    if mode is None:
        mode = (lookup(price_map, str(lp.get("model", ""))) or {}).get("mode")
    return mode in CHAT_MODES


def _price(entry: dict[str, Any], price_map: dict[str, Any]) -> tuple[float | None, bool]:
    """(input + output $/token or None when unpriced, supports_reasoning)."""
    info = entry.get("model_info") or {}
    lp = entry.get("litellm_params") or {}
    row = lookup(price_map, str(lp.get("model", ""))) or {}
    i = info.get("input_cost_per_token", row.get("input_cost_per_token"))
    o = info.get("output_cost_per_token", row.get("output_cost_per_token"))
    reasoning = info.get("supports_reasoning")
    if reasoning is None:
        reasoning = row.get("supports_reasoning")
    try:
        price = float(i or 0) + float(o or 0) if (i is not None or o is not None) else None
    except (TypeError, ValueError):
        price = None
    return price, bool(reasoning)


def derive_tiers(model_list: list[Any]) -> tuple[dict[str, Any], str]:
    """Tiers from the model list and prices, and the one line that says what was derived."""
    price_map = load_price_map()
    seen: dict[str, tuple[float | None, bool]] = {}
    for e in model_list:
        if isinstance(e, dict) and isinstance(e.get("model_name"), str) and chat_capable(e, price_map):
            p, r = _price(e, price_map)
            prev = seen.get(e["model_name"])
            # several deployments of one alias: the dearest is what a call may cost
            if prev is None or (p is not None and (prev[0] is None or p > prev[0])):
                seen[e["model_name"]] = (p, r or (prev[1] if prev else False))
            if r and isinstance(e.get("model_info") or {}, dict):
                # the price map knows it reasons: call it as a reasoning model (effort, no think prompt)
                e["model_info"] = {**(e.get("model_info") or {})}
                e["model_info"].setdefault("supports_reasoning", True)
    names = list(seen)
    if not names:
        return {}, "no models to derive tiers from"
    priced = [n for n in names if seen[n][0] is not None]
    tiers: dict[str, Any] = {}
    if priced:
        low = min(seen[n][0] for n in priced)  # type: ignore[type-var]
        fast = [n for n in priced if seen[n][0] == low]
        top = max(priced, key=lambda n: seen[n][0])  # type: ignore[arg-type, return-value]
    else:
        fast, top = [names[0]], names[-1]
    tiers["fast"] = {"models": fast}
    reasoners = sorted((n for n in names if seen[n][1]), key=lambda n: seen[n][0] if seen[n][0] is not None else float("inf"))  # type: ignore[arg-type, return-value]
    if reasoners:
        tiers["reasoning"] = {"models": reasoners, "reasoning_effort": "medium"}
    if top not in fast:
        tiers["deliberate"] = {"models": [top] * DELIBERATE_AGENTS, "strategy": "vote", "aggregator": top}
    parts = [f"fast={'+'.join(fast)}"]
    parts.append(f"reasoning={'+'.join(reasoners)}" if reasoners else "reasoning=none (no model supports_reasoning)")
    parts.append(f"deliberate={DELIBERATE_AGENTS}x{top} vote" if "deliberate" in tiers
                 else "deliberate=none (one price level)")
    return tiers, "derived tiers from model_list prices: " + ", ".join(parts)
