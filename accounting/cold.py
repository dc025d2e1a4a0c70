"""The cold ledger: old ledger entries moved from Redis streams to day-partitioned Parquet.

Layout under the root (a directory or any fsspec URL, e.g. ``s3://bucket/triage``)::

    tenant=<t>/day=<YYYY-MM-DD>/<first id>_<last id>.parquet

Compaction moves one batch (stream ids ``first..last``, oldest first) at a time, so that a crash
at any point loses and doubles nothing:

1. ``pending = first|last`` is recorded in the tenant's ``ledger:cold`` hash (Redis);
2. one file per (tenant, day, batch) is written under a deterministic name, atomically (temp +
   fsync + rename locally; object stores publish an object whole);
3. one script, in the tenant's slot, checks ``pending``, trims the stream up to ``last``, moves the
   watermark to ``last`` and clears ``pending``.

A re-run finds ``pending`` and redoes 2-3 for that same range: same names, same rows, so the files
are overwritten with themselves. Readers take only files at or below the watermark and drop stream
entries at or below it, reading the stream first and the watermark after, so hot + cold never shows
a row twice, nor misses one, whenever a compaction commits.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Callable

import orjson

from . import redis_keys as rk
from .models import LedgerRecord, to_nusd

COLD_EXTRA = "pip install 'triage-gateway[cold]'  (duckdb, pyarrow, fsspec)"


class ColdUnavailable(RuntimeError):
    pass


def _need(mod: str) -> Any:
    try:
        return __import__(mod)
    except ImportError:
        raise ColdUnavailable(f"the cold ledger needs {mod}: {COLD_EXTRA}") from None


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _sid(v: str) -> tuple[int, int]:
    """A stream id as a comparable (ms, seq)."""
    ms, _, seq = v.partition("-")
    return int(ms), int(seq or 0)


def _schema() -> Any:
    pa = _need("pyarrow")
    i64, st = pa.int64(), pa.string()
    return pa.schema([
        ("stream_id", st), ("request_id", st), ("tenant", st), ("key_id", st), ("ts", pa.float64()), ("day", st),
        ("kind", st), ("pre", st), ("cost_nusd", i64), ("cf_nusd", i64), ("pt", i64), ("cached", i64), ("ct", i64),
        ("rt", i64), ("cfe", i64), ("bf", i64), ("refest", i64), ("q", i64), ("comment", st), ("d", st),
    ])


def _row(sid: str, rec: dict[str, Any], q: Any, comment: Any) -> dict[str, Any]:
    """One Parquet row: the record verbatim (``d``) plus the integers a report sums, counted as settle
    (or refuse) counted them into the rollup under the same ``key|tier|model|bucket|workflow|`` prefix."""
    from .accountant import Accountant, complexity_bucket  # noqa: PLC0415 - one bucketing/prefix rule

    lr = LedgerRecord.from_dict(rec)
    u = lr.total_usage()
    ts = float(rec.get("ts") or int(sid.split("-")[0]) / 1000)
    cost = lr.cost_nusd if lr.cost_nusd is not None else to_nusd(lr.cost_usd or 0.0)
    cf = lr.counterfactual_nusd
    if cf is None:
        cf = to_nusd(lr.counterfactual_cost_usd) if lr.counterfactual_cost_usd is not None else cost
    refusal = getattr(lr, "kind", None) == "refusal"
    return {
        "stream_id": sid, "request_id": lr.request_id, "tenant": lr.tenant, "key_id": lr.key_id,
        "ts": ts, "day": datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d"),
        "kind": "refusal" if refusal else "request",
        "pre": Accountant.rollup_prefix(lr.key_id, lr.tier, lr.model, complexity_bucket(lr.complexity), lr.workflow),
        "cost_nusd": cost, "cf_nusd": cf, "pt": u.prompt_tokens, "cached": u.cached_tokens,
        "ct": u.completion_tokens, "rt": u.reasoning_tokens,
        "cfe": int((lr.counterfactual_method or "").startswith("top-tier-plan")),
        "bf": sum(1 for c in lr.calls if getattr(c, "billed_failure", False)),
        "refest": lr.refused_estimate_nusd or 0,
        "q": int(_s(q)) if q is not None else None, "comment": _s(comment) if comment else None,
        "d": orjson.dumps(rec).decode(),
    }


@dataclass
class CompactResult:
    tenant: str
    rows: int = 0
    files: int = 0
    batches: int = 0


class ColdLedger:
    """A cold-ledger root. ``hooks`` (tests only) is called at each step name and may raise to
    simulate a crash there: ``pending``, ``file``, ``files``, ``commit``."""

    def __init__(self, url: str, *, hooks: Callable[[str], None] | None = None):
        fsspec = _need("fsspec")
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.hooks = hooks or (lambda step: None)

    # -- names ----------------------------------------------------------------------------------

    def _dir(self, tenant: str, day: str) -> str:
        return f"{self.root}/tenant={tenant}/day={day}"

    @staticmethod
    def batch_name(first: str, last: str) -> str:
        return f"{first}_{last}.parquet"

    # -- writing --------------------------------------------------------------------------------

    def _write(self, path: str, rows: list[dict[str, Any]]) -> None:
        pa = _need("pyarrow")
        pq = __import__("pyarrow.parquet").parquet
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows, schema=_schema()), sink)
        data = sink.getvalue().to_pybytes()
        if self.local:
            d = os.path.dirname(path)
            os.makedirs(d, exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)  # the rename itself must survive a power cut
            finally:
                os.close(fd)
        else:
            self.fs.makedirs(os.path.dirname(path), exist_ok=True)
            self.fs.pipe_file(path, data)  # an object store publishes the object whole or not at all

    async def compact_tenant(self, redis: Any, tenant: str, older_than_days: float, *, batch: int = 5000,
                             now: float | None = None) -> CompactResult:
        """Move every entry of ``tenant``'s stream older than ``older_than_days`` to Parquet."""
        res = CompactResult(tenant)
        cutoff_ms = int(((now or datetime.now(timezone.utc).timestamp()) - older_than_days * 86400) * 1000)
        commit = redis.register_script(resources.files("accounting").joinpath("lua", "compact.lua").read_text())
        ck, stream = rk.ledger_cold(tenant), rk.ledger(tenant)
        while True:
            wm, pending = await redis.hmget(ck, "wm", "pending")
            if pending:  # a crashed run's batch: redo exactly that range
                first, last = _s(pending).split("|")
                entries = await redis.xrange(stream, min=first, max=last)
            else:
                lo = "(" + _s(wm) if wm else "-"
                entries = await redis.xrange(stream, min=lo, max=f"({cutoff_ms}-0", count=batch)
                if not entries:
                    return res
                first, last = _s(entries[0][0]), _s(entries[-1][0])
                await redis.hset(ck, "pending", f"{first}|{last}")
            self.hooks("pending")
            recs = [(_s(sid), orjson.loads(f[b"d"] if b"d" in f else f["d"])) for sid, f in entries]
            async with redis.pipeline(transaction=False) as p:
                for _, r in recs:
                    p.hmget(rk.request(tenant, r["request_id"]), "q", "comment")
                qs = await p.execute()
            by_day: dict[str, list[dict[str, Any]]] = {}
            for (sid, r), (q, c) in zip(recs, qs):
                row = _row(sid, r, q, c)
                by_day.setdefault(row["day"], []).append(row)
            name = self.batch_name(first, last)
            for day, rows in sorted(by_day.items()):
                await asyncio.to_thread(self._write, f"{self._dir(tenant, day)}/{name}", rows)
                self.hooks("file")
                res.files += 1
            self.hooks("files")
            n = await commit(keys=[stream, ck], args=[first, last, len(recs)])
            if int(n) < 0:
                raise RuntimeError(f"compaction of {tenant} lost its pending batch {first}..{last} to another run")
            self.hooks("commit")
            res.rows += len(recs)
            res.batches += 1

    # -- reading --------------------------------------------------------------------------------

    async def watermark(self, redis: Any, tenant: str) -> tuple[int, int] | None:
        """The last stream id committed to the cold ledger (everything up to it is in files, not the stream)."""
        wm = await redis.hget(rk.ledger_cold(tenant), "wm")
        return _sid(_s(wm)) if wm else None

    async def _files(self, redis: Any, tenant: str, days: list[str] | None = None,
                     wm: tuple[int, int] | None | bool = True) -> list[str]:
        """Committed files only: a batch whose last id is past the watermark is pending (its rows are
        still in the stream), whether or not ``pending`` names it at the moment we look."""
        if wm is True:
            wm = await self.watermark(redis, tenant)
        if wm is None:
            return []
        assert not isinstance(wm, bool)  # True was resolved above; False is not a watermark

        def ls() -> list[str]:
            base = f"{self.root}/tenant={tenant}"
            try:
                found = self.fs.glob(f"{base}/day=*/*.parquet")
            except FileNotFoundError:
                return []
            out = []
            for f in sorted(found):
                day = f.rsplit("/day=", 1)[1].split("/", 1)[0]
                name = os.path.basename(f)
                if not name.endswith(".parquet") or "_" not in name or (days is not None and day not in days):
                    continue
                if _sid(name[:-len(".parquet")].split("_", 1)[1]) <= wm:
                    out.append(f)
            return out

        return await asyncio.to_thread(ls)

    def _query(self, files: list[str], sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        duckdb = _need("duckdb")
        con = duckdb.connect()
        try:
            if not self.local:
                con.register_filesystem(self.fs)
                files = [f"{self.fs.protocol[0] if isinstance(self.fs.protocol, tuple) else self.fs.protocol}://{f}"
                         for f in files]
            rel = f"read_parquet({list(files)!r}, hive_partitioning = false)"  # day/tenant come from the rows
            return con.execute(sql.replace("{files}", rel), params or []).fetchall()
        finally:
            con.close()

    async def records(self, redis: Any, tenant: str, since_ts: float | None = None,
                      wm: tuple[int, int] | None | bool = True) -> list[tuple[dict[str, Any], Any]]:
        """(record, stored quality in millionths or None) of every cold entry since ``since_ts``, oldest
        first, up to the watermark ``wm`` (default: read now)."""
        files = await self._files(redis, tenant, wm=wm)
        if not files:
            return []
        # by stream id (settle time), as the hot side filters, so a row is in or out on both sides alike
        rows = await asyncio.to_thread(
            self._query, files, "SELECT d, q, comment FROM {files} "
            "WHERE CAST(split_part(stream_id, '-', 1) AS BIGINT) >= ? "
            "ORDER BY CAST(split_part(stream_id, '-', 1) AS BIGINT), CAST(split_part(stream_id, '-', 2) AS BIGINT)",
            [int(since_ts * 1000) if since_ts is not None else 0])
        return [(orjson.loads(d), (q, c)) for d, q, c in rows]

    async def rollups(self, redis: Any, tenant: str, days: list[str]) -> dict[str, dict[str, int]]:
        """Per day, the ``<prefix><metric>`` counters settle, refuse and feedback keep in the rollup
        hashes, recomputed from cold rows (for days whose hash has expired). Refusals by reason
        (``ref:<reason>``) are not in the ledger rows, so only their total comes back."""
        files = await self._files(redis, tenant, days)
        if not files:
            return {}
        sql = """SELECT day, pre, kind, count(*), sum(cost_nusd), sum(cf_nusd), sum(pt), sum(cached), sum(ct),
                        sum(rt), sum(cfe), sum(bf), sum(refest), sum(q), count(q),
                        sum(CASE WHEN q IS NULL THEN 0 ELSE cost_nusd END)
                 FROM {files} GROUP BY ALL"""
        out: dict[str, dict[str, int]] = {}
        for (day, pre, kind, n, cost, cf, pt, cached, ct, rt, cfe, bf, refest, qsum, qn,
             qcost) in await asyncio.to_thread(self._query, files, sql):
            h = out.setdefault(day, {})
            if kind == "refusal":
                metrics: tuple[tuple[str, Any], ...] = (("ref", n), ("refest", refest))
            else:
                metrics = (("n", n), ("cost", cost), ("cf", cf), ("pt", pt), ("cached", cached), ("ct", ct),
                           ("rt", rt), ("cfe", cfe), ("bf", bf))
                if qn:
                    metrics += (("qsum", qsum), ("qn", qn), ("qcost", qcost))
            for k, v in metrics:
                if v:
                    h[pre + k] = h.get(pre + k, 0) + int(v)
        return out


async def compact_all(redis: Any, cold: ColdLedger, older_than_days: float, tenants: list[str] | None = None,
                      lock_s: int = 600) -> list[CompactResult]:
    """Compact every tenant (or those named), one compactor per tenant at a time across processes."""
    from .reports import tenants as all_tenants  # noqa: PLC0415

    out = []
    for t in tenants or await all_tenants(redis):
        token = uuid.uuid4().hex
        if not await redis.set(rk.ledger_cold_lock(t), token, nx=True, ex=lock_s):
            continue  # another worker or replica is on this tenant
        try:
            out.append(await cold.compact_tenant(redis, t, older_than_days))
        finally:
            if _s(await redis.get(rk.ledger_cold_lock(t)) or b"") == token:
                await redis.delete(rk.ledger_cold_lock(t))
    return out


async def compact_forever(redis: Any, cold: ColdLedger, older_than_days: float, every_s: float) -> None:
    """``serve``'s schedule: compact every ``every_s`` seconds; the per-tenant lock lets every worker
    and replica run this loop while only one compacts a given tenant at a time."""
    import logging  # noqa: PLC0415
    import random  # noqa: PLC0415

    log = logging.getLogger("triage.cold")
    await asyncio.sleep(random.uniform(0, every_s))  # workers started together don't all wake together
    while True:
        try:
            res = await compact_all(redis, cold, older_than_days)
            moved = sum(r.rows for r in res)
            if moved:
                log.info("cold ledger: moved %d entries to %s", moved, cold.url)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a failed run is retried next period; the stream keeps the rows
            log.warning("cold ledger compaction failed: %s: %s", type(e).__name__, e)
        await asyncio.sleep(every_s)
