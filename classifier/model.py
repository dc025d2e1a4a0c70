"""Serving-side scorer: plain Python over JSON weight tables (no sklearn, no pickle, no I/O
after load).

A linear model over sublinear, l2-normalised TF-IDF of word uni/bigrams of the last human
ask, optionally a few standardised hand features the artifact names, then a Platt map to a
calibrated P(a cheap single pass fails). Tier names and their thresholds come from the
artifact; this module knows none of them.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import orjson

from classifier.features import CHEAP_DENSE, DENSE_NAMES, conversation, dense, keyword_stats, tokens

DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "complexity_v2.json"
FORMAT = "triage-complexity/2"

# A dense feature pushing the score down because it is below the training mean reads better
# under its opposite name.
_LOW_NAMES = {"long_prompt": "short_prompt", "many_words": "few_words", "many_lines": "single_line"}


@dataclass(frozen=True, slots=True)
class Classification:
    complexity: float
    tier: str
    signals: list[str]
    version: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"complexity": self.complexity, "tier": self.tier, "signals": list(self.signals),
                "version": self.version}


def artifact_version(artifact: Mapping[str, Any]) -> str:
    """Content hash of everything but the version itself: equal weights, equal version."""
    body = {k: v for k, v in artifact.items() if k != "version"}
    return "cx2-" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def dumps(artifact: Mapping[str, Any]) -> bytes:
    """Canonical bytes (sorted keys), with the content version filled in."""
    art = dict(artifact)
    art["version"] = artifact_version(art)
    return orjson.dumps(art, option=orjson.OPT_SORT_KEYS)


class Classifier:
    __slots__ = ("_table", "_dense_idx", "_dense_a", "_dense_mean", "_dense_names", "_bias", "_cal_a",
                 "_cal_b", "tiers", "version", "meta", "_floors", "_cheap")

    def __init__(self, artifact: Mapping[str, Any]) -> None:
        if artifact.get("format") != FORMAT:
            raise ValueError(f"not a Triage complexity artifact (format={artifact.get('format')!r}, want {FORMAT})")
        try:
            vocab, idf, coef = artifact["vocab"], artifact["idf"], artifact["coef"]
            if not (len(vocab) == len(idf) == len(coef)):
                raise ValueError("artifact vocabulary tables have mismatched lengths")
            # token -> (idf, coef, idf * idf, idf * coef)
            self._table: dict[str, tuple[float, float, float, float]] = {
                str(t): (float(i), float(c), float(i) * float(i), float(i) * float(c))
                for t, i, c in zip(vocab, idf, coef)}
            d = artifact.get("dense") or {"names": [], "mean": [], "std": [], "coef": []}
            unknown = [n for n in d["names"] if n not in DENSE_NAMES]
            if unknown:
                raise ValueError(f"artifact uses features this code does not compute: {unknown}")
            if not (len(d["names"]) == len(d["mean"]) == len(d["std"]) == len(d["coef"])):
                raise ValueError("artifact dense tables have mismatched lengths")
            self._dense_names = list(d["names"])
            self._dense_idx = [DENSE_NAMES.index(n) for n in d["names"]]
            self._dense_mean = [float(m) for m in d["mean"]]
            self._dense_a = [float(c) / (float(s) if float(s) > 1e-9 else 1.0) for c, s in zip(d["coef"], d["std"])]
            self._bias = float(artifact["intercept"])
            self._cal_a, self._cal_b = (float(x) for x in artifact["calibration"]["platt"])
            # Ordered tiers, lowest first: [{"name", "min"}]; a score takes the last tier whose min it reaches.
            tiers = [(str(t["name"]), float(t["min"])) for t in artifact["tiers"]]
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed complexity artifact: {e!r}") from None
        if not tiers or tiers[0][1] != 0.0 or any(b[1] <= a[1] for a, b in zip(tiers, tiers[1:])):
            raise ValueError("artifact tiers must start at min 0 and increase strictly")
        self.tiers: tuple[tuple[str, float], ...] = tuple(tiers)
        names = {n for n, _ in tiers}
        # Optional floors: dense feature name -> {"tier", "min"}; the score is lifted to that
        # tier's threshold when the feature reaches min. Unknown names are rejected so an
        # artifact never silently loses a floor it was evaluated with.
        self._floors: list[tuple[int, float, float, str]] = []
        for name, spec in (artifact.get("floors") or {}).items():
            if name not in DENSE_NAMES or spec.get("tier") not in names:
                raise ValueError(f"artifact floor {name!r} names an unknown feature or tier")
            self._floors.append((DENSE_NAMES.index(name), float(spec.get("min", 1e-12)),
                                 dict(self.tiers)[spec["tier"]], name))
        # The features this artifact reads; when all are cheap, dense() skips the word split and regexes.
        self._cheap = {*self._dense_idx, *(f[0] for f in self._floors)} <= CHEAP_DENSE
        self.version = str(artifact.get("version") or artifact_version(artifact))
        self.meta: dict[str, Any] = dict(artifact.get("meta", {}))

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Classifier":
        p = Path(path) if path is not None else DEFAULT_ARTIFACT
        try:
            art = orjson.loads(p.read_bytes())
        except orjson.JSONDecodeError as e:
            raise ValueError(f"{p}: not JSON ({e})") from None
        if not isinstance(art, dict):
            raise ValueError(f"{p}: not a complexity artifact")
        return cls(art)

    @property
    def thresholds(self) -> dict[str, float]:
        """Entry threshold of every tier above the lowest, by the artifact's tier names."""
        return {n: m for n, m in self.tiers[1:]}

    # -- scoring -----------------------------------------------------------------
    def _score(self, messages: Sequence[Mapping[str, Any]] | str | None, tools: Any,
               explain: bool) -> tuple[float, list[str]]:
        conv = conversation(messages, tools)
        toks = tokens(conv.ask)
        counts = Counter(toks)  # first-seen order: the sums below add in the order they always have
        get = self._table.get
        log = math.log
        num = sq = 0.0
        pos: list[tuple[float, str]] = []  # (contribution, token), for the explanation
        neg: list[tuple[float, str]] = []
        for t, c in counts.items():
            e = get(t)
            if e is None:
                continue
            if c == 1:  # w = idf: its products are precomputed, bit for bit the same
                sq += e[2]
                v = e[3]
            else:
                w = (1.0 + log(c)) * e[0]
                sq += w * w
                v = w * e[1]
            num += v
            if explain:
                (pos if v > 0 else neg).append((v, t))
        norm = math.sqrt(sq)
        z = self._bias + (num / norm if norm > 0 else 0.0)
        x: list[float] = []
        if self._dense_idx or self._floors:
            x = dense(conv, toks, keyword_stats(toks, counts), self._cheap)
        dense_c = [a * (x[i] - m) for i, a, m in zip(self._dense_idx, self._dense_a, self._dense_mean)]
        z += sum(dense_c)
        u = self._cal_a * z + self._cal_b
        p = 1.0 / (1.0 + math.exp(-u)) if u > -700 else 0.0
        fired = []
        for i, lo, floor, name in self._floors:
            if x[i] >= lo:
                fired.append(name)
                p = max(p, floor)
        if not explain:
            return p, []
        up = len(self.tiers) > 1 and p >= self.tiers[1][1]
        # (-weight, signal): plain tuples sort by weight descending, then name
        ranked: list[tuple[float, str]] = []
        for c, t in (pos if up else neg):
            r = abs(c) / norm
            if r >= 0.05:
                ranked.append((-r, "wording:" + ("<number>" if t == "0" else t)))
        for dname, di, dm, dc in zip(self._dense_names, self._dense_idx, self._dense_mean, dense_c):
            if (dc > 0) == up and abs(dc) >= 0.1:
                ranked.append((-abs(dc), dname if x[di] >= dm else _LOW_NAMES.get(dname, "no_" + dname)))
        ranked.sort()
        signals = fired + [s for _, s in ranked if s not in fired]
        return p, signals[:3]

    def tier_for(self, complexity: float) -> str:
        name = self.tiers[0][0]
        for n, lo in self.tiers[1:]:
            if complexity >= lo:
                name = n
        return name

    def score(self, messages: Sequence[Mapping[str, Any]] | str | None, tools: Any = None) -> float:
        """Calibrated complexity only (what eval and batch ranking need)."""
        return self._score(messages, tools, False)[0]

    def classify(self, messages: Sequence[Mapping[str, Any]] | str | None, tools: Any = None) -> Classification:
        p, signals = self._score(messages, tools, True)
        p = round(p, 6)
        return Classification(p, self.tier_for(p), signals, self.version)

    def classify_batch(self, batch: Sequence[Sequence[Mapping[str, Any]] | str | None]) -> list[Classification]:
        return [self.classify(m) for m in batch]
