"""Leave-one-file-out (LOFO) evaluation: the closest proxy we have for unseen public sets.

For each file with per-model outcomes, fit on the *other* files only (rows whose
normalised prompt also occurs in the held-out file are dropped too: GSM8K appears in
several files) and score every outcome row of the held-out file. The in-distribution
split (train -> held-out 20%) is reported next to it, because a generalisation change
must not buy LOFO by giving up the ordinary case.

Run: python -m classifier.training.lofo --data ../shared/data [--baselines] [--opt length_w=0.3]
Model choice uses the mean over folds of AUROC and APGR.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from classifier.model import Classifier
from classifier.training.data import Example, load
from classifier.training.evaluate import _length_scorer, _litellm, _tfidf_lr
from classifier.training.metrics import apgr, auroc
from classifier.training.train import fit_artifact

Scorer = Callable[[Sequence[Example]], np.ndarray]


def _metrics(s: np.ndarray, ex: Sequence[Example]) -> dict[str, float]:
    weak = np.array([e.outcome[0] for e in ex])
    strong = np.array([e.outcome[1] for e in ex])
    return {"auroc": auroc(s, (weak < 0.5).astype(float)), "apgr": apgr(s, weak, strong)}


def _clf_scorer(artifact: dict[str, Any]) -> Scorer:
    clf = Classifier(artifact)   # the serving scorer, so figures are what ships
    return lambda ex: np.array([clf.score(e.request) for e in ex])


def lofo(examples: Sequence[Example], specs: dict[str, Any], opts: dict[str, Any] | None = None, *,
         baselines: bool = False, in_dist: bool = True, cache: dict | None = None,
         log: Callable[[str], None] | None = None) -> dict[str, Any]:
    cache = {} if cache is None else cache
    gold_files = sorted({e.file for e in examples if e.outcome is not None})
    fixed: dict[str, Scorer] = {}
    if baselines:
        fixed["length"] = _length_scorer
        ll = _litellm()
        if ll is not None:
            fixed["litellm"] = ll
    out: dict[str, Any] = {"opts": dict(opts or {}), "lofo": {}, "in_dist": {}}
    for f in gold_files:
        t0 = time.perf_counter()
        held = [e for e in examples if e.file == f and e.outcome is not None]
        held_keys = {e.key for e in held}
        train_ex = [e for e in examples if e.file != f and e.key not in held_keys]
        res = {"triage": _metrics(_clf_scorer(fit_artifact(train_ex, specs, opts, cache=cache))(held), held)}
        if baselines:
            tl = _tfidf_lr([e for e in train_ex if e.split == "train"])
            scorers = dict(fixed, **({"tfidf_lr": tl} if tl is not None else {}))
            for name, fn in scorers.items():
                res[name] = _metrics(np.asarray(fn(held), dtype=float), held)
        out["lofo"][f] = res
        if log:
            log(f"lofo {f}: {res['triage']} ({time.perf_counter() - t0:.1f}s)")
    if in_dist:
        score = _clf_scorer(fit_artifact(examples, specs, opts, cache=cache))
        for f in gold_files:
            val = [e for e in examples if e.file == f and e.outcome is not None and e.split == "val"]
            out["in_dist"][f] = {"triage": _metrics(score(val), val)}
    out["summary"] = summary(out)
    return out


def summary(res: dict[str, Any]) -> dict[str, float]:
    s: dict[str, float] = {}
    for part in ("lofo", "in_dist"):
        folds = [r["triage"] for r in res[part].values()]
        if folds:
            s[part + "_auroc"] = float(np.mean([m["auroc"] for m in folds]))
            s[part + "_apgr"] = float(np.mean([m["apgr"] for m in folds]))
    if "lofo_auroc" in s:
        s["lofo_mean"] = (s["lofo_auroc"] + s["lofo_apgr"]) / 2
    return s


def format_lofo(res: dict[str, Any]) -> str:
    lines = [f"options: {res['opts'] or 'defaults'}"]
    for part in ("lofo", "in_dist"):
        for f, r in res[part].items():
            cells = "  ".join(f"{n} {m['auroc']:.3f}/{m['apgr']:.3f}" for n, m in r.items())
            lines.append(f"  {part:<7} {f:<36} {cells}")
    lines.append("  summary (AUROC/APGR means): " + ", ".join(f"{k}={v:.4f}" for k, v in res["summary"].items()))
    return "\n".join(lines)


def _parse_opts(items: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        k, _, v = it.partition("=")
        out[k] = float(v) if any(ch in v for ch in ".e") else int(v)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--opt", nargs="*", default=[], help="training option overrides, key=value")
    ap.add_argument("--baselines", action="store_true", help="also length, LiteLLM, TF-IDF+LR per fold")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    examples, specs = load(a.data)
    res = lofo(examples, specs, _parse_opts(a.opt), baselines=a.baselines, log=print)
    print(format_lofo(res))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
