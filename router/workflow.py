"""Which workflow a request is a step of, and the blocks its prompt is made of.

A workflow id comes from `x-triage-workflow` (else `metadata.triage_workflow` or `metadata.workflow`,
else the `x-triage-session` conversation id), a step name from
`x-triage-step` (or `metadata.triage_step`). They are client labels: validated,
kept inside the caller's tenant (accounting hashes them into its keys), and
never trusted as anything else.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from accounting.tokens import count_text_tokens
from router.http.errors import bad_request

log = logging.getLogger("triage.workflow")
_ID = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,127}$")  # printable ASCII, 1-128 chars
PARAGRAPH_MIN_CHARS = 200  # shorter paragraphs stay part of their neighbour's block


@dataclass(slots=True)
class Workflow:
    id: str
    step: str
    max_cost_usd: float | None = None


def _label(value: Any, param: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise bad_request(f"'{param}' must be 1-128 printable ASCII characters.", param=param)
    return value


def identify(headers: Any, raw: dict[str, Any]) -> Workflow | None:
    meta = raw.get("metadata")
    md: dict[str, Any] = meta if isinstance(meta, dict) else {}
    wid: Any = headers.get("x-triage-workflow")
    param = "x-triage-workflow"
    for k in ("triage_workflow", "workflow"):
        if wid is None and k in md:
            wid, param = md[k], f"metadata.{k}"
    if wid is None:
        wid, param = headers.get("x-triage-session"), "x-triage-session"
    if wid is None:
        return None
    step: Any = headers.get("x-triage-step")
    sparam = "x-triage-step"
    for k in ("triage_step", "step"):
        if step is None and k in md:
            step, sparam = md[k], f"metadata.{k}"
    cap: Any = headers.get("x-triage-workflow-max-cost")
    cparam = "x-triage-workflow-max-cost"
    if cap is None and "triage_workflow_max_cost" in md:
        cap, cparam = md["triage_workflow_max_cost"], "metadata.triage_workflow_max_cost"
    max_cost = None
    if cap is not None:
        try:
            max_cost = float(cap)
        except (TypeError, ValueError):
            raise bad_request(f"'{cparam}' must be a number of US dollars.", param=cparam) from None
        if not (0 < max_cost < 1e9):
            raise bad_request(f"'{cparam}' must be a positive amount below $1e9.", param=cparam)
    return Workflow(_label(wid, param), _label(step, sparam) if step is not None else "", max_cost)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                t = part.get("text")
                if isinstance(t, str):
                    out.append(t)
                elif isinstance(part.get("image_url"), dict):
                    out.append(str(part["image_url"].get("url", ""))[:4096])
        return "\n\n".join(out)
    return "" if content is None else str(content)


def blocks(messages: list[Any]) -> list[tuple[str, int]]:
    """(hash, tokens) per block: each message's paragraphs, short ones merged forward, so a message, a plan or
    a document pasted again in a later step is recognised whole or in part, and no token counts twice."""
    out: list[tuple[str, int]] = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        role = str(m.get("role", ""))
        text = _text(m.get("content"))
        calls = m.get("tool_calls")
        if calls:
            text += "\n\n" + str(calls)
        buf = ""
        for para in text.split("\n\n"):
            buf = f"{buf}\n\n{para}" if buf else para
            if len(buf) >= PARAGRAPH_MIN_CHARS:
                out.append(_block(role, buf))
                buf = ""
        if buf:
            out.append(_block(role, buf))
    return out


def _block(role: str, text: str) -> tuple[str, int]:
    return hashlib.sha256(f"{role}\x00{text}".encode()).hexdigest()[:24], count_text_tokens(text)


async def observe_workflow(st: Any, wf: Workflow, rec: Any, messages: list[Any], calls: list[Any]) -> None:
    """The step's place in its workflow and the context earlier steps already sent, into the record."""
    rec.workflow, rec.workflow_step = wf.id, wf.step
    if st.workflows is None:
        return
    ok = [c for c in calls if c.status == "ok"]
    model = ok[-1].model if ok else rec.model
    prompt = max((c.prompt_tokens for c in ok), default=0)
    prices = st.snapshot.prices
    try:
        rate = prices.rates(model, prompt).input * 1e9 if model in prices else 0.0
        res = await st.workflows.observe(
            rec.tenant, wf.id, wf.step, blocks(messages), tier=rec.tier, cost_nusd=sum(c.nusd() for c in calls),
            prompt_tokens=sum(c.prompt_tokens for c in calls), cached_tokens=sum(c.cached_tokens for c in calls),
            input_nusd_per_token=rate)
    except Exception:  # the workflow view is best effort; the ledger row is what bills
        log.warning("workflow accounting failed for request %s", rec.request_id)
        return
    rec.workflow_depth, rec.redundant_tokens, rec.redundant_nusd = res.step, res.redundant_tokens, res.redundant_nusd


async def workflow_left(st: Any, adm: Any, tenant: str, wf: Workflow | None, h: dict[str, str],
                        cap: float | None) -> dict[str, str]:
    """What a capped workflow's later steps may still spend (its cap less settled and held spend), as a header."""
    if adm.workflow_scope and wf is not None and cap:
        try:
            spent, held = await st.accountant.workflow_spent(tenant, wf.id)
            h["x-triage-workflow-remaining-usd"] = f"{max(round(cap * 1e9) - spent - held, 0) / 1e9:.6f}"
        except Exception:  # a header is not worth failing an answer for
            log.warning("workflow budget read failed for request %s", adm.request_id)
    return h
