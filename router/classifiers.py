"""Which complexity artifact scores a tenant's requests, and the promote/rollback store.

Resolution, most specific first: the store's promoted artifact for the tenant, the config's
`classifier.tenants.<t>.model`, the store's promoted default, the config's `classifier.model`,
the shipped artifact.

The store is a folder (`classifier.store` in the config): `active.json` names the promoted
artifact per tenant (`"*"` = every tenant) with its history for rollback, and candidate
artifacts are copied next to it under their content version, so a promoted file cannot
change under the proxy. Every worker stats `active.json` once per request (a syscall, no
Redis round trip) and re-reads it when it changed, so a promote reaches all workers on
the host with the next request. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from classifier import Classifier

log = logging.getLogger("triage.classifier")
ACTIVE = "active.json"
DEFAULT_KEY = "*"


class ArtifactCache:
    """Loaded artifacts by (path, size, mtime): promotes and reloads share one copy per file."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, int, int], Classifier] = {}

    def get(self, path: str | None) -> Classifier:
        p = Path(path) if path else None
        if p is None:
            key = ("<shipped>", 0, 0)
        else:
            try:
                st = p.stat()
            except OSError as e:
                raise ValueError(f"classifier model {p}: {e.strerror or e}") from None
            key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        clf = self._by.get(key)
        if clf is None:
            try:
                clf = Classifier.load(p)
            except OSError as e:
                raise ValueError(f"classifier model {p}: {e.strerror or e}") from None
            except ValueError as e:
                raise ValueError(f"classifier model {p}: {e}") from None
            if len(self._by) > 32:
                self._by.clear()
            self._by[key] = clf
        return clf


def read_active(store: str | Path) -> dict[str, Any]:
    p = Path(store) / ACTIVE
    try:
        data = orjson.loads(p.read_bytes())
    except FileNotFoundError:
        return {"active": {}, "history": {}}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: not a classifier store index")
    data.setdefault("active", {})
    data.setdefault("history", {})
    return data


def _write_active(store: Path, data: dict[str, Any]) -> None:
    store.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=store, prefix=".active.", suffix=".json")
    with os.fdopen(fd, "wb") as fh:
        fh.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    os.replace(tmp, store / ACTIVE)


def promote(store: str | Path, artifact: str | Path, tenant: str | None, note: str = "") -> dict[str, Any]:
    """Copy the artifact into the store under its version and make it active for the tenant."""
    store = Path(store)
    clf = Classifier.load(artifact)   # refuse a broken file before anything changes
    store.mkdir(parents=True, exist_ok=True)
    dest = store / f"{clf.version}.json"
    if not dest.exists():
        tmp = store / f".{clf.version}.tmp"
        shutil.copyfile(artifact, tmp)
        os.replace(tmp, dest)
    data = read_active(store)
    key = tenant or DEFAULT_KEY
    prev = data["active"].get(key)
    if prev is not None:
        data["history"].setdefault(key, []).append(prev)
    entry = {"version": clf.version, "path": dest.name, "note": note}
    data["active"][key] = entry
    _write_active(store, data)
    return entry


def rollback(store: str | Path, tenant: str | None) -> dict[str, Any] | None:
    """Re-activate the previously promoted artifact; None when there was none (back to config)."""
    store = Path(store)
    data = read_active(store)
    key = tenant or DEFAULT_KEY
    if key not in data["active"]:
        raise ValueError(f"nothing promoted for {'tenant ' + tenant if tenant else 'the default'}: nothing to roll back")
    hist = data["history"].get(key) or []
    if hist:
        data["active"][key] = hist.pop()
    else:
        data["active"].pop(key)
    _write_active(store, data)
    return data["active"].get(key)


@dataclass(slots=True)
class _Stamp:
    ino: int = -1
    size: int = -1
    mtime: int = -1


_CACHE = ArtifactCache()


def _resolve(path: str | None, base: Path | None) -> str | None:
    if not path:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() or base is None else base / p)


class ClassifierSet:
    """The classifiers a worker scores with, per tenant; rebuilt on config reload. Relative
    paths are relative to the config file's folder."""

    def __init__(self, spec: Any = None, base: Path | None = None, cache: ArtifactCache | None = None) -> None:
        self.cache = cache or _CACHE
        # Loaded eagerly, so a bad path fails startup or /admin/reload (keeping the old set).
        self.default = self.cache.get(_resolve(getattr(spec, "model", None), base))
        self.tenants: dict[str, Classifier] = {
            t: self.cache.get(_resolve(s.model, base)) for t, s in (getattr(spec, "tenants", None) or {}).items()
            if s.model}
        store = _resolve(getattr(spec, "store", None), base)
        self.store = Path(store) if store else None
        self._stamp = _Stamp()
        self._promoted: dict[str, Classifier] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the store's index if it changed since the last look (one stat call)."""
        if self.store is None:
            return
        try:
            st = os.stat(self.store / ACTIVE)
            stamp = _Stamp(st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = _Stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        promoted: dict[str, Classifier] = {}
        try:
            data = read_active(self.store)
            for key, entry in data["active"].items():
                promoted[key] = self.cache.get(str(self.store / entry["path"]))
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as e:
            # A broken index must not take the proxy down: keep serving what was active.
            log.error("classifier store %s unreadable, keeping the previous artifacts: %s", self.store, e)
            return
        self._promoted = promoted

    def for_tenant(self, tenant: str | None) -> Classifier:
        self.refresh()
        if tenant is not None:
            c = self._promoted.get(tenant) or self.tenants.get(tenant)
            if c is not None:
                return c
        return self._promoted.get(DEFAULT_KEY) or self.default
