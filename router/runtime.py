"""Everything a request needs, built once per config load.

A `Snapshot` is immutable once built; reload builds a new one and swaps the
reference, so in-flight requests finish on the snapshot they started with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accounting import PriceBook, PriceSpec
from classifier import Classifier
from router.classifiers import ClassifierSet
from router.config import TIERS, ModelEntry, TriageConfig
from router.upstream import Deployment

log = logging.getLogger("triage.runtime")


def deployment_for(entry: ModelEntry, drop_params: bool = True) -> Deployment:
    from router.config import OPENAI_COMPATIBLE

    p = entry.litellm_params
    provider = entry.provider
    if entry.openai_compatible:
        api_base = p.api_base or OPENAI_COMPATIBLE.get(provider)
        if not api_base:
            raise ValueError(f"model_list '{entry.model_name}': provider '{provider}' needs litellm_params.api_base")
        return Deployment(
            name=entry.model_name,
            model=entry.upstream_model,
            provider="openai",
            api_base=api_base.rstrip("/"),
            api_key=p.api_key,
            timeout=p.timeout,
            stream_idle_timeout=p.stream_timeout or p.timeout,
            headers=dict(p.extra_headers),
            supports_reasoning=bool(entry.model_info.supports_reasoning),
        )
    # Everything else goes through litellm, which wants the provider-prefixed id.
    return Deployment(
        name=entry.model_name,
        model=p.model,
        provider="litellm",
        api_base=p.api_base,
        api_key=p.api_key,
        timeout=p.timeout,
        stream_idle_timeout=p.stream_timeout or p.timeout,
        headers=dict(p.extra_headers),
        supports_reasoning=bool(entry.model_info.supports_reasoning),
        drop_params=drop_params,
    )


@dataclass(slots=True)
class Snapshot:
    config: TriageConfig
    deployments: dict[str, list[Deployment]]
    prices: PriceBook
    top_tier: str
    model_ids: list[str] = field(default_factory=list)
    policy_tables: Any = None
    classifiers: Any = None     # router.classifiers.ClassifierSet

    @classmethod
    def build(cls, config: TriageConfig) -> "Snapshot":
        deployments: dict[str, list[Deployment]] = {}
        for entry in config.model_list:
            try:
                deployments.setdefault(entry.model_name, []).append(deployment_for(entry, config.drop_params))
            except ValueError as e:
                raise ValueError(f"{config.source}: {e}") from None
        prices = price_book(config)
        top = [t for t in TIERS if t in config.tiers][-1]
        snap = cls(config=config, deployments=deployments, prices=prices, top_tier=top, model_ids=config.model_names)
        base = Path(config.source).resolve().parent if not config.source.startswith("<") else None
        try:
            snap.classifiers = ClassifierSet(config.classifier, base)
        except ValueError as e:
            raise ValueError(f"{config.source}: {e}") from None
        try:
            from router import policy  # noqa: PLC0415 - load time only

            build = getattr(policy, "build_tables", None)
            if build is not None:
                snap.policy_tables = build(config, prices)
        except ImportError:
            pass
        return snap

    @property
    def uses_litellm(self) -> bool:
        return any(d.provider == "litellm" for ds in self.deployments.values() for d in ds)


def price_book(config: TriageConfig) -> PriceBook:
    """Prices of every configured model_name (its first deployment's litellm model and model_info)."""
    specs: dict[str, PriceSpec] = {}
    for entry in config.model_list:
        specs.setdefault(entry.model_name, PriceSpec(name=entry.model_name, litellm_model=entry.litellm_params.model,
                                                     model_info=entry.model_info.model_dump(exclude_none=True)))
    try:
        return PriceBook.build(list(specs.values()),
                               allow_unpriced_at_estimate=config.accounting.settle_unpriced_at_estimate)
    except ValueError as e:
        raise ValueError(f"{config.source}: {e}") from None


def load_classifier() -> Classifier:
    return Classifier.load()
