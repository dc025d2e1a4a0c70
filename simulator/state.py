"""The simulator's settings and its mutable state (stats, fault rules, prompt cache)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from simulator import model as mm

DEFAULT_MODELS = ["mock-fast", "mock-mini", "mock-reasoner", "gpt-4o-mini", "o3-mini"]


@dataclass
class MockSettings:
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    completion_tokens: int = 16
    disagreement: float = 0.25
    difficulty: bool = False          # per-question difficulty model (simulator/difficulty.py)
    model_skill: dict[str, float] = field(default_factory=dict)
    reasoning_models: list[str] = field(default_factory=list)
    prompt_cache: bool = True
    cache_min_tokens: int = 256
    hang_s: float = 300.0
    disconnect_after_chunks: int = 2
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    model_overrides: dict[str, dict[str, float]] = field(default_factory=dict)
    keep_bodies: int = 100


class MockState:
    """Mutable server state; shared with the test process in thread mode."""

    def __init__(self, settings: MockSettings):
        self.initial = dataclasses.replace(settings)
        self.settings = settings
        self.cache = mm.PromptCache(min_tokens=settings.cache_min_tokens)
        self.ids = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        self.settings = dataclasses.replace(self.initial)
        self.cache.clear()
        self.cache.min_tokens = self.settings.cache_min_tokens
        self.faults: list[dict[str, Any]] = []
        self.total = 0
        self.requests: dict[str, int] = {}
        self.paths: dict[str, int] = {}
        self.faults_injected: dict[str, int] = {}
        self.last: deque[dict[str, Any]] = deque(maxlen=self.settings.keep_bodies)
        self.last_by_model: dict[str, dict[str, Any]] = {}
        self.billed: deque[dict[str, Any]] = deque(maxlen=10_000)

    def bill(self, plan: Any, fault: str | None) -> None:
        """What a provider would invoice for one generated chat answer (streams: the whole answer, even
        if the client stops reading)."""
        u = plan.usage()
        self.billed.append({"model": plan.model, "fault": fault, "prompt_tokens": u.get("prompt_tokens", 0),
                            "completion_tokens": u.get("completion_tokens", 0)})

    def record(self, path: str, model: str, body: Any, headers: dict[str, str], auth: str | None) -> None:
        self.total += 1
        self.requests[model] = self.requests.get(model, 0) + 1
        self.paths[path] = self.paths.get(path, 0) + 1
        rec = {
            "path": path,
            "model": model,
            "body": body,
            "headers": headers,
            "api_key_sha256": hashlib.sha256(auth.encode()).hexdigest()[:16] if auth else None,
        }
        self.last.append(rec)
        self.last_by_model[model] = rec

    def take_fault(self, model: str) -> dict[str, Any] | None:
        for i, rule in enumerate(self.faults):
            if rule["model"] in ("*", model):
                rule["count"] -= 1
                if rule["count"] <= 0:
                    del self.faults[i]
                return rule
        return None

    def update_settings(self, patch: dict[str, Any]) -> None:
        names = {f.name for f in dataclasses.fields(MockSettings)}
        bad = set(patch) - names
        if bad:
            raise ValueError(f"unknown settings: {sorted(bad)}")
        self.settings = dataclasses.replace(self.settings, **patch)
        self.cache.min_tokens = self.settings.cache_min_tokens
        if self.last.maxlen != self.settings.keep_bodies:
            self.last = deque(self.last, maxlen=self.settings.keep_bodies)

    def stats(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "requests": self.requests,
            "paths": self.paths,
            "faults_injected": self.faults_injected,
            "billed": list(self.billed),
            "last": list(self.last),
            "last_by_model": self.last_by_model,
        }
