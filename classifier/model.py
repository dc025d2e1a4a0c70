"""Serving-side scorer: plain Python over JSON weight tables (no sklearn, no pickle).

A linear model over sublinear TF-IDF (l2-normalised) word uni/bigrams plus a small
standardised dense vector, then a Platt map to a calibrated probability. Scoring one
typical prompt is a few hundred dict lookups and a handful of C-level regex scans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import orjson

from classifier.features import DENSE_NAMES, conversation, dense, tokens

DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "complexity_v1.json"
FORMAT = "triage-complexity/1"
TIERS = ("fast", "reasoning", "deliberate")

# Human-readable names for a dense feature that pushes the score *down* because its
# value is below the training mean (e.g. a short prompt).
_LOW_NAMES = {
    "long_prompt": "short_prompt",
    "many_words": "few_words",
    "many_lines": "single_line",
    "long_words": "plain_words",
}


@dataclass(frozen=True, slots=True)
class Classification:
    complexity: float
    tier: str
    signals: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"complexity": self.complexity, "tier": self.tier, "signals": list(self.signals)}


class Classifier:
    __slots__ = ("_table", "_dense_a", "_dense_mean", "_bias", "_cal_a", "_cal_b", "thresholds",
                 "meta", "_names", "_floors")

    def __init__(self, artifact: Mapping[str, Any]) -> None:
        if artifact.get("format") != FORMAT:
            raise ValueError(f"not a Triage complexity artifact (format={artifact.get('format')!r})")
        if list(artifact["dense_names"]) != list(DENSE_NAMES):
            raise ValueError("artifact dense features do not match this code version")
        vocab = artifact["vocab"]
        idf = artifact["idf"]
        coef = artifact["lex_coef"]
        if not (len(vocab) == len(idf) == len(coef)):
            raise ValueError("artifact vocabulary tables have mismatched lengths")
        self._table: dict[str, tuple[float, float]] = {
            t: (float(i), float(c)) for t, i, c in zip(vocab, idf, coef)
        }
        std = [s if s > 1e-9 else 1.0 for s in artifact["dense_std"]]
        self._dense_mean = [float(m) for m in artifact["dense_mean"]]
        self._dense_a = [float(c) / s for c, s in zip(artifact["dense_coef"], std)]
        self._bias = float(artifact["intercept"])
        self._cal_a, self._cal_b = (float(x) for x in artifact["calibration"]["platt"])
        th = artifact["thresholds"]
        self.thresholds: dict[str, float] = {"reasoning": float(th["reasoning"]),
                                             "deliberate": float(th["deliberate"])}
        self.meta: dict[str, Any] = dict(artifact.get("meta", {}))
        # An explicit "prove / step by step / derive" ask is the user telling us a single
        # quick pass is not what they want. The public data has too few such prompts for
        # the weight to be learned, so the artifact may declare it a floor at this tier.
        # Each floor: dense feature name -> tier (fires when the feature is > 0) or
        # {"tier", "min"} (fires when the feature is >= min). Unknown names are rejected so
        # an artifact never silently loses a floor it was evaluated with.
        self._floors: list[tuple[int, float, float, str]] = []
        for name, spec in artifact.get("floors", {}).items():
            if name not in DENSE_NAMES:
                raise ValueError(f"artifact floor on unknown feature {name!r}")
            tier, lo = (spec, 1e-12) if isinstance(spec, str) else (spec["tier"], float(spec["min"]))
            if tier in self.thresholds:
                self._floors.append((DENSE_NAMES.index(name), lo, self.thresholds[tier], name))
        self._names = DENSE_NAMES

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Classifier":
        p = Path(path) if path is not None else DEFAULT_ARTIFACT
        return cls(orjson.loads(p.read_bytes()))

    # -- scoring -----------------------------------------------------------------
    def _score(self, messages: Sequence[Mapping[str, Any]] | str | None, tools: Any,
               explain: bool) -> tuple[float, list[str]]:
        conv = conversation(messages, tools)
        toks = tokens(conv.ask)
        counts: dict[str, int] = {}
        for t in toks:
            counts[t] = counts.get(t, 0) + 1
        table = self._table
        num = 0.0
        sq = 0.0
        best_term, best_c = "", 0.0
        for t, c in counts.items():
            e = table.get(t)
            if e is None:
                continue
            w = (1.0 + math.log(c)) * e[0] if c > 1 else e[0]
            sq += w * w
            contrib = w * e[1]
            num += contrib
            if explain and abs(contrib) > abs(best_c):
                best_term, best_c = t, contrib
        norm = math.sqrt(sq)
        lexical = num / norm if norm > 0 else 0.0
        x = dense(conv, toks)
        z = self._bias + lexical
        contribs = []
        for a, m, v in zip(self._dense_a, self._dense_mean, x):
            contribs.append(a * (v - m))
        z += sum(contribs)
        u = self._cal_a * z + self._cal_b
        p = 1.0 / (1.0 + math.exp(-u)) if u > -700 else 0.0
        fired = []
        for i, lo, floor, name in self._floors:
            if x[i] >= lo:
                fired.append(name)
                if p < floor:
                    p = floor
        if not explain:
            return p, []
        signals = self._explain(p, contribs, x, lexical, best_term, best_c / norm if norm else 0.0)
        for name in reversed(fired):   # a floor that fired is always named
            if name not in signals:
                signals = [name] + signals[:2]
        return p, signals

    def _explain(self, p: float, contribs: list[float], x: list[float], lexical: float,
                 term: str, term_c: float) -> list[str]:
        up = p >= self.thresholds["reasoning"]
        ranked = []
        for name, c, m, v in zip(self._names, contribs, self._dense_mean, x):
            if (c > 0) == up and abs(c) >= 0.1:
                if up and v < m:
                    continue   # "hard because it is *not* long" explains nothing to a user
                label = name if v >= m else _LOW_NAMES.get(name, "no_" + name)
                ranked.append((abs(c), label))
        if term and (term_c > 0) == up and abs(lexical) >= 0.1:
            ranked.append((abs(lexical), "wording:" + ("<number>" if term == "0" else term)))
        ranked.sort(key=lambda r: (-r[0], r[1]))
        return [label for _, label in ranked[:3]]

    def tier_for(self, complexity: float) -> str:
        if complexity >= self.thresholds["deliberate"]:
            return "deliberate"
        if complexity >= self.thresholds["reasoning"]:
            return "reasoning"
        return "fast"

    def score(self, messages: Sequence[Mapping[str, Any]] | str | None, tools: Any = None) -> float:
        """Calibrated complexity only (what eval and batch ranking need)."""
        return self._score(messages, tools, False)[0]

    def classify(self, messages: Sequence[Mapping[str, Any]] | str | None, tools: Any = None) -> Classification:
        p, signals = self._score(messages, tools, True)
        p = round(p, 6)
        return Classification(p, self.tier_for(p), signals)

    def classify_batch(self, batch: Sequence[Sequence[Mapping[str, Any]] | str | None]) -> list[Classification]:
        return [self.classify(m) for m in batch]
