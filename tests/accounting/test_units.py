from __future__ import annotations

import asyncio
import dataclasses
import math
from datetime import datetime, timezone

import orjson
import pytest
from pydantic import ValidationError

from accounting import count_text_tokens, estimate_prompt_tokens
from accounting.breaker import CircuitBreaker
from accounting.models import LedgerRecord, UpstreamCall
from accounting.settings import day_month
from accounting.spool import Spool
from accounting.tokens import PER_MESSAGE_OVERHEAD, PER_REQUEST_OVERHEAD


def test_token_counts_are_real_tokens():
    assert count_text_tokens("") == 0
    n = count_text_tokens("The quick brown fox jumps over the lazy dog.")
    assert 8 <= n <= 12  # a real BPE count, not bytes/4 (= 11) by accident
    assert count_text_tokens("hello " * 100) <= 101


def test_prompt_estimate_is_an_upper_bound():
    text = "数学の証明を示してください。" * 20  # CJK: more tokens than a naive word count
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
    est = estimate_prompt_tokens(msgs)
    assert est >= count_text_tokens(text) + count_text_tokens("be brief") + 2 * PER_MESSAGE_OVERHEAD
    assert est >= math.ceil(len(text.encode()) / 4)
    parts = [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}]}]
    assert estimate_prompt_tokens(parts) >= 1000 + PER_REQUEST_OVERHEAD
    assert estimate_prompt_tokens([]) == PER_REQUEST_OVERHEAD


def test_breaker_opens_after_threshold_and_closes_on_first_good_probe():
    b = CircuitBreaker(threshold=2)
    b.failure()
    assert b.allow()
    b.failure()
    assert not b.allow() and b.state == "open"
    assert asyncio.run(b.usable(_answer(False))) is False
    assert b.state == "open"
    assert asyncio.run(b.usable(_answer(True))) is True  # no cooldown: the first probe that answers wins
    assert b.state == "closed" and b.allow()


def test_breaker_probe_is_shared_and_never_older_than_the_caller():
    b = CircuitBreaker(threshold=1)
    b.failure()
    calls: list[int] = []

    async def run() -> list[bool]:
        gate = asyncio.Event()

        async def probe() -> bool:
            calls.append(1)
            await gate.wait()
            return len(calls) > 1  # the first probe (started before Redis came back) fails

        first = asyncio.create_task(b.usable(probe))
        await asyncio.sleep(0)  # the first caller starts the probe
        late = [asyncio.create_task(b.usable(probe)) for _ in range(5)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(first, *late)

    res = asyncio.run(run())
    assert res[0] is False
    assert res[1:] == [True] * 5, "callers that arrived during a failing probe must get a fresh one (shared)"
    assert len(calls) == 2


def _answer(ok: bool):
    async def probe() -> bool:
        return ok
    return probe


async def test_spool_keeps_what_fails(tmp_path):
    s = Spool(tmp_path)
    for i in range(3):
        s.append({"i": i})
    with open(s.path, "ab") as f:
        f.write(b'{"torn":')  # a crash mid-write leaves a partial line
    seen = []

    async def flaky(e):
        if e["i"] == 1 and not seen.count(1):
            seen.append(1)
            raise ConnectionError
        seen.append(e["i"])

    assert await s.replay(flaky) == 1
    assert s.pending() == 3  # 1, 2 and the torn line are back in the live spool
    assert await s.replay(flaky) == 2
    assert s.pending() == 0


def test_ledger_row_is_every_field_and_reads_back():
    """The row settle writes is the record's fields, in order; a stored row validates back into the same
    record (strings coerced, unknown fields from other versions ignored, a bad kind refused)."""
    rec = LedgerRecord(request_id="req_1", key_id="k", tenant="t", complexity=0.25, decision={"signals": ["x"], "s": {1, 2}},
                       calls=[UpstreamCall(model="m", prompt_tokens=3, completion_tokens=4, cost_usd=1e-05, cost_nusd=10_000,
                                           hop="fallback", billed_failure=True)], cost_nusd=10_000, ts=1.5)
    row = orjson.loads(rec.to_json())
    assert list(row) == [f.name for f in dataclasses.fields(LedgerRecord)]
    assert list(row["calls"][0]) == [f.name for f in dataclasses.fields(UpstreamCall)]
    assert row["decision"]["s"] == [1, 2] and row["calls"][0]["cost_usd"] == 1e-05
    back = LedgerRecord.from_dict({**row, "from_a_newer_version": 1})
    rec.decision = {"signals": ["x"], "s": [1, 2]}
    assert back == rec and isinstance(back.calls[0], UpstreamCall)
    assert LedgerRecord.from_dict({"request_id": "r", "key_id": "k", "tenant": "t",
                                   "calls": [{"model": "m", "prompt_tokens": "7"}]}).total_usage().prompt_tokens == 7
    with pytest.raises(ValidationError):
        LedgerRecord.from_dict({"request_id": "r", "key_id": "k", "tenant": "t", "kind": "bogus"})


def test_day_buckets_match_the_utc_calendar_at_midnight():
    midnight = datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()
    for ts in (midnight - 86400.5, midnight - 1, midnight - 4e-7, midnight - 6e-7, midnight, midnight + 1e-7, 0.0, -1.0):
        at = datetime.fromtimestamp(ts, timezone.utc)
        assert day_month(ts) == (at.strftime("%Y-%m-%d"), at.strftime("%Y-%m")), ts
    assert day_month(midnight - 1) == ("2026-02-28", "2026-02")
