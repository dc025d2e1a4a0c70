"""Leave-one-source-out (LOSO): the referee for every part of the classifier.

A source is one data file: each file is one public collection with its own model pair
(routing files) or its own labelling rule (proxy files), which is what an unseen routing
set differs in. Held-out file f is scored by models that saw neither f (so its model pair
and its prompt style are unseen) nor any row of the same *task family* from another file
(MMLU is in both routing files, GSM8K and MATH in a routing and a proxy file): each held-out
row is scored by a model trained without its family, so "unseen task" holds too. Prompts of
the held-out file found anywhere else are dropped from training as well.

Per fold: APGR (and AUROC of "cheap model fails") where the file has per-model outcomes;
otherwise AUROC against the file's own difficulty proxy (MATH level >= 4, GSM8K >= 4 solution
steps, arena-hard vs creative writing). Files with one class only (CLINC, Self-Instruct) are
training data, not folds. The LOSO mean is the mean of each fold's headline figure.

Run: python -m classifier.training.loso --data ../shared/data [--baselines] [--ablation]
     [--set key=value ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from classifier.training.data import Example, family, load
from classifier.training.fit import RECIPE, Feats, fit, recipe
from classifier.training.metrics import apgr, auroc, ece

Scorer = Callable[[Sequence[Example], Sequence[Example]], np.ndarray]   # (train, held) -> scores


@dataclass(slots=True)
class Fold:
    file: str
    kind: str                 # "apgr" or the proxy's name
    held: list[Example]
    target: np.ndarray        # binary "hard" per held row (cheap fails / proxy)


def _proxy(e: Example) -> float | None:
    x = e.extra
    if "level" in x:
        return float(int(x["level"]) >= 4)
    if "n_solution_lines" in x:
        return float(int(x["n_solution_lines"] or 0) >= 4)
    if x.get("label_hint") in ("hard_prompt", "creative_writing"):
        return float(x["label_hint"] == "hard_prompt")
    return None


_PROXY_NAMES = {"level": "AUROC level>=4", "n_solution_lines": "AUROC steps>=4", "label_hint": "AUROC hard vs creative"}


def folds(examples: Sequence[Example]) -> list[Fold]:
    out = []
    for f in sorted({e.file for e in examples}):
        rows = [e for e in examples if e.file == f]
        gold = [e for e in rows if e.outcome is not None]
        if gold:
            out.append(Fold(f, "apgr", gold, np.array([float(e.outcome[0] < 0.5) for e in gold])))
            continue
        prox = [(e, _proxy(e)) for e in rows]
        prox = [(e, t) for e, t in prox if t is not None]
        if prox and len({t for _, t in prox}) == 2:
            kind = next(_PROXY_NAMES[k] for k in _PROXY_NAMES if k in prox[0][0].extra)
            out.append(Fold(f, kind, [e for e, _ in prox], np.array([t for _, t in prox])))
    return out


def score_fold(fold: Fold, examples: Sequence[Example], scorer: Scorer) -> np.ndarray:
    """Scores for the held rows, each from a model that saw neither the file nor the row's family."""
    held_keys = {e.key for e in fold.held}
    outside = {family(e.source) for e in examples if e.file != fold.file}
    base = [e for e in examples if e.file != fold.file and e.key not in held_keys]
    groups: dict[str | None, list[int]] = {}
    for i, e in enumerate(fold.held):
        fam = family(e.source)
        groups.setdefault(fam if fam in outside else None, []).append(i)
    s = np.zeros(len(fold.held))
    for fam, idx in sorted(groups.items(), key=lambda kv: str(kv[0])):
        train = base if fam is None else [e for e in base if family(e.source) != fam]
        # Nothing left to learn from (e.g. a single file): a constant score, i.e. random routing.
        s[idx] = scorer(train, [fold.held[i] for i in idx]) if train else 0.5
    return s


def fold_metrics(fold: Fold, s: np.ndarray, calibrated: bool) -> dict[str, float]:
    m = {"auroc": auroc(s, fold.target)}
    if fold.kind == "apgr":
        weak = np.array([e.outcome[0] for e in fold.held])
        strong = np.array([e.outcome[1] for e in fold.held])
        m["apgr"] = apgr(s, weak, strong)
        if calibrated:
            m["ece"] = ece(s, 1 - weak)
    m["headline"] = m.get("apgr", m["auroc"])
    return m


def recipe_scorer(r: dict[str, Any], feats: Feats) -> Scorer:
    def score(train: Sequence[Example], held: Sequence[Example]) -> np.ndarray:
        return fit(train, feats, r).proba(held, feats)
    return score


def run(examples: Sequence[Example], scorer: Scorer, *, calibrated: bool = True,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"folds": {}, "_scores": {}}
    for fold in folds(examples):
        t0 = time.perf_counter()
        sc = score_fold(fold, examples, scorer)
        res["_scores"][fold.file] = (fold, sc)
        m = fold_metrics(fold, sc, calibrated)
        m["n"] = len(fold.held)
        m["kind"] = fold.kind
        res["folds"][fold.file] = m
        if log:
            log(f"  {fold.file}: {_cells(m)} ({time.perf_counter() - t0:.1f}s)")
    res["summary"] = summarise(res["folds"])
    return res


def summarise(fs: dict[str, dict[str, Any]]) -> dict[str, float]:
    gold = [m for m in fs.values() if m["kind"] == "apgr"]
    s = {"loso_mean": float(np.mean([m["headline"] for m in fs.values()]))}
    if gold:
        s["apgr_mean"] = float(np.mean([m["apgr"] for m in gold]))
        s["auroc_gold_mean"] = float(np.mean([m["auroc"] for m in gold]))
        if all("ece" in m for m in gold):
            s["ece_mean"] = float(np.mean([m["ece"] for m in gold]))
    return s


def paired_ci(a: dict[str, Any], b: dict[str, Any], n_boot: int = 200, seed: int = 0) -> tuple[float, float, float]:
    """LOSO-mean difference a - b with a 95% paired bootstrap interval (rows resampled
    within each held-out source, the same rows for both models)."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        d = []
        for f, (fold, sa) in a["_scores"].items():
            sb = b["_scores"][f][1]
            idx = rng.integers(0, len(fold.held), len(fold.held))
            sub = Fold(fold.file, fold.kind, [fold.held[i] for i in idx], fold.target[idx])
            d.append(fold_metrics(sub, sa[idx], False)["headline"] - fold_metrics(sub, sb[idx], False)["headline"])
        diffs.append(float(np.mean(d)))
    point = a["summary"]["loso_mean"] - b["summary"]["loso_mean"]
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return point, float(lo), float(hi)


def _cells(m: dict[str, Any]) -> str:
    if m["kind"] == "apgr":
        return f"APGR {m['apgr']:.3f} AUROC {m['auroc']:.3f}" + (f" ECE {m['ece']:.3f}" if "ece" in m else "")
    return f"{m['kind']} {m['auroc']:.3f}"


# Each candidate part, as a change to the lean baseline (plain TF-IDF 1-2-grams, 4k terms, LR).
ABLATION: dict[str, dict[str, Any]] = {
    "soft labels (derived y)": {"label": "soft"},
    "labels = cheap fails (1 - cheap score)": {"label": "fail"},
    "per-source weights (data.py priors)": {"weight": "project"},
    "equal total weight per file": {"balance": 1.0},
    "sqrt per-file balance": {"balance": 0.5},
    "dedupe across files": {"dedupe": True},
    "class balance": {"class_weight": "balanced"},
    "C 0.3": {"C": 0.3},
    "C 3": {"C": 3.0},
    "vocab 8k": {"max_features": 8000},
    "vocab 2k": {"max_features": 2000},
    "min_df 20": {"min_df": 20},
    "char 3-5-grams (4k)": {"char": 4000},
    "length feature": {"dense": ("long_prompt",)},
    "length feature + prior 0.15": {"dense": ("long_prompt",), "length_w": 0.15},
    "all 20 hand features": {"dense": "ALL"},
    "tier floors (proof / code asks)": {"floors": True},
    "gold files only (no proxies/priors)": {"priors": False},
    "calibration on a held-back slice": {"cal": "slice"},
}
# The previous shipped model's parts, together, on this harness.
SHIPPED_V1 = {"label": "soft", "weight": "project", "max_features": 4000, "min_df": 20, "dense": "ALL",
              "length_w": 0.15, "floors": True, "cal": "slice"}


def _resolve(over: dict[str, Any]) -> dict[str, Any]:
    from classifier.features import DENSE_NAMES
    over = dict(over)
    if over.get("dense") == "ALL":
        over["dense"] = tuple(DENSE_NAMES)
    return over


def baselines(feats: Feats) -> dict[str, Scorer]:
    from classifier.training.evaluate import _length_scorer, _litellm
    out: dict[str, Scorer] = {"length": lambda tr, held: _length_scorer(held)}
    ll = _litellm()
    if ll is not None:
        out["litellm"] = lambda tr, held: ll(held)
    return out


def format_table(rows: dict[str, dict[str, Any]], ref: str | None = None) -> str:
    names = list(next(iter(rows.values()))["folds"])
    head = "| model | " + " | ".join(n.removesuffix(".jsonl") for n in names) + \
        " | LOSO mean | APGR mean | AUROC (gold) | Δ mean |"
    lines = [head, "|" + "---|" * (len(names) + 5)]
    base = rows[ref]["summary"]["loso_mean"] if ref in rows else None
    for label, res in rows.items():
        cells = []
        for n in names:
            m = res["folds"][n]
            cells.append(f"{m['apgr']:.3f} / {m['auroc']:.3f}" if m["kind"] == "apgr" else f"{m['auroc']:.3f}")
        s = res["summary"]
        d = f"{s['loso_mean'] - base:+.4f}" if base is not None and label != ref else ""
        lines.append(f"| {label} | " + " | ".join(cells) +
                     f" | {s['loso_mean']:.4f} | {s.get('apgr_mean', float('nan')):.3f} | "
                     f"{s.get('auroc_gold_mean', float('nan')):.3f} | {d} |")
    return "\n".join(lines)


def _parse(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        k, _, v = it.partition("=")
        if k not in RECIPE:
            raise SystemExit(f"unknown recipe key {k!r}; known: {', '.join(RECIPE)}")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
        if isinstance(out[k], list):
            out[k] = tuple(out[k])
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--set", nargs="*", default=[], help="recipe overrides, key=JSON value")
    ap.add_argument("--baselines", action="store_true", help="also length, LiteLLM and the previous model's parts")
    ap.add_argument("--ablation", action="store_true", help="each candidate part on top of the lean baseline")
    ap.add_argument("--only", nargs="*", default=None, help="ablation rows to run (substring match)")
    ap.add_argument("--base", nargs="*", default=[], help="with --ablation: recipe the parts are added to (key=JSON)")
    ap.add_argument("--ci", action="store_true", help="paired bootstrap 95%% interval of each row vs the first")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from classifier.training.data import expand_paths
    paths = expand_paths(a.data)
    missing = [str(p) for p in paths if not p.exists()] or ([] if paths else a.data)
    if missing:
        raise SystemExit(f"no such data: {', '.join(missing)}")
    examples, _ = load(paths)
    feats = Feats.build(examples)
    rows: dict[str, dict[str, Any]] = {}
    lean = "plain TF-IDF + LR (baseline)"
    plain = {"label": "hard", "dense": (), "length_w": 0.0}   # the baseline
    todo: dict[str, dict[str, Any]] = {}
    if a.ablation:
        base = dict(plain, **_parse(a.base))
        if a.base:
            lean = f"base {a.base}"
        todo[lean] = base
        for k, v in ABLATION.items():
            if (a.only is None or any(o in k for o in a.only)) and any(base.get(kk) != vv for kk, vv in v.items()):
                todo["+ " + k] = dict(base, **v)
    if a.baselines:
        todo["previous shipped model's parts (v1)"] = SHIPPED_V1
    if not a.ablation:
        todo["shipped recipe" + (f" {a.set}" if a.set else "")] = _parse(a.set)
    for label, over in todo.items():
        print(f"{label}:", flush=True)
        rows[label] = run(examples, recipe_scorer(recipe(**_resolve(over)), feats), log=print)
    if a.baselines:
        for name, sc in baselines(feats).items():
            print(f"{name}:", flush=True)
            rows[name] = run(examples, sc, calibrated=False, log=print)
    print(format_table(rows, lean if lean in rows else None))
    if a.ci and len(rows) > 1:
        names = list(rows)
        for n in names[1:]:
            d, lo, hi = paired_ci(rows[n], rows[names[0]])
            print(f"  {n} - {names[0]}: {d:+.4f} (95% CI {lo:+.4f} .. {hi:+.4f})")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in rows.items()},
                      fh, indent=1, default=float)


if __name__ == "__main__":
    main()
