"""Fit with scikit-learn, export plain weight tables (JSON) the pure scorer reads.

Soft labels are fitted by duplicating each row as a positive with weight w*y and a
negative with weight w*(1-y): logistic regression then minimises the cross-entropy to
the soft target exactly. Calibration is a Platt map fitted on a hashed slice of train
restricted to gold rows (per-model outcomes / feedback), because "complexity" is
defined by those outcomes, not by the coarse priors.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import orjson
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from classifier.features import DENSE_NAMES, featurize
from classifier.model import FORMAT, Classifier
from classifier.training.data import Example, is_cal, load

MAX_FEATURES = 8_000
MIN_DF = 10
C = 1.0
# Dense (shape/conversation) features are scaled up before fitting, i.e. regularised
# less than the ~30k lexical weights: they transfer to unseen prompt sets, while
# lexical weights partly memorise which benchmark a prompt came from.
DENSE_SCALE = 1.0
QUALITY_TARGET = 0.95   # fast tier unless that costs more than 5% of strong quality
REASONING_RANGE = (0.2, 0.6)
DELIBERATE_MIN = 0.75
DELIBERATE_Q = 0.95     # ... and the hardest few percent of gold prompts go to deliberate


def _identity(x: list[str]) -> list[str]:
    return x


def featurize_examples(examples: Sequence[Example], progress: Callable[[int], None] | None = None):
    toks, dens = [], []
    for i, e in enumerate(examples):
        t, d = featurize(e.request)
        toks.append(t)
        dens.append(d)
        if progress is not None and i % 500 == 499:
            progress(500)
    if progress is not None:
        progress(len(examples) % 500)
    return toks, np.asarray(dens, dtype=np.float64)


def _soft_fit(X, y: np.ndarray, w: np.ndarray, c: float) -> LogisticRegression:
    Xd = sparse.vstack([X, X]).tocsr()
    yd = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
    wd = np.concatenate([w * y, w * (1 - y)])
    keep = wd > 0
    clf = LogisticRegression(C=c, max_iter=2000, solver="lbfgs")
    clf.fit(Xd[keep], yd[keep], sample_weight=wd[keep])
    return clf


def _platt(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    if len(z) < 20 or len(set(np.round(y))) < 2:
        return 1.0, 0.0
    yd = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
    wd = np.concatenate([w * y, w * (1 - y)])
    lr = LogisticRegression(C=1e4, max_iter=1000)
    lr.fit(np.concatenate([z, z])[:, None], yd, sample_weight=wd)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def train(paths: Iterable[str | Path], out: str | Path, *, c: float = C,
          progress: Callable[[str, int, int], None] | None = None,
          extra_examples: Sequence[Example] = ()) -> dict[str, Any]:
    t0 = time.perf_counter()
    examples, specs = load(paths)
    examples = list(examples) + list(extra_examples)
    train_ex = [e for e in examples if e.split == "train"]
    if not train_ex:
        raise ValueError("no trainable rows found in the given data")
    fit_ex = [e for e in train_ex if not (e.gold and is_cal(e.key))]
    cal_ex = [e for e in train_ex if e.gold and is_cal(e.key)]
    if len(cal_ex) < 20:   # tiny data: calibrate in-sample rather than not at all
        fit_ex, cal_ex = train_ex, [e for e in train_ex if e.gold] or train_ex

    n_total = len(fit_ex) + len(cal_ex)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress("featurize", done, n_total)

    toks, D = featurize_examples(fit_ex, tick)
    ctoks, cD = featurize_examples(cal_ex, tick)
    vec = TfidfVectorizer(analyzer=_identity, lowercase=False, sublinear_tf=True,
                          min_df=min(MIN_DF, max(1, len(fit_ex) // 50)),
                          max_features=MAX_FEATURES, dtype=np.float64)
    Xl = vec.fit_transform(toks)
    mean = D.mean(axis=0)
    std = D.std(axis=0)
    std[std < 1e-9] = 1.0
    X = sparse.hstack([Xl, sparse.csr_matrix((D - mean) / std * DENSE_SCALE)]).tocsr()
    y = np.array([e.y for e in fit_ex])
    w = np.array([e.weight for e in fit_ex])
    if progress:
        progress("fit", 0, 1)
    lr = _soft_fit(X, y, w, c)
    if progress:
        progress("fit", 1, 1)
    coef = lr.coef_[0].copy()
    coef[Xl.shape[1]:] *= DENSE_SCALE   # back to the unscaled standardised inputs
    n_lex = Xl.shape[1]
    Xc = sparse.hstack([vec.transform(ctoks), sparse.csr_matrix((cD - mean) / std)]).tocsr()
    zc = Xc @ coef + lr.intercept_[0]
    yc = np.array([e.y for e in cal_ex])
    wc = np.array([e.weight for e in cal_ex])
    # Calibrate to "does the cheap model fail", the quantity the tiers are thresholded on.
    cheap_fail = np.array([1.0 - e.outcome[0] if e.outcome else e.y for e in cal_ex])
    a, b = _platt(zc, cheap_fail, wc)
    pc = 1 / (1 + np.exp(-(a * zc + b)))
    reasoning = _quality_threshold(pc, [e.outcome for e in cal_ex])
    deliberate = float(max(DELIBERATE_MIN, np.quantile(pc, DELIBERATE_Q))) if len(pc) else DELIBERATE_MIN
    deliberate = min(max(deliberate, reasoning + 0.1), 0.99)

    vocab = [None] * n_lex
    for term, idx in vec.vocabulary_.items():
        vocab[idx] = term
    keep = [i for i in range(n_lex) if abs(coef[i]) > 1e-6]   # zero weights still count in the norm
    artifact = {
        "format": FORMAT,
        "dense_names": list(DENSE_NAMES),
        "vocab": vocab,
        "idf": [round(float(v), 5) for v in vec.idf_],
        "lex_coef": [round(float(coef[i]), 6) for i in range(n_lex)],
        "dense_mean": [float(v) for v in mean],
        "dense_std": [float(v) for v in std],
        "dense_coef": [float(v) for v in coef[n_lex:]],
        "intercept": float(lr.intercept_[0]),
        "calibration": {"platt": [a, b], "target": "cheap model fails"},
        "thresholds": {"reasoning": round(reasoning, 4), "deliberate": round(deliberate, 4)},
        "floors": {"asks_reasoning": "reasoning"},
        "meta": {
            "C": c, "n_fit": len(fit_ex), "n_cal": len(cal_ex), "n_vocab": n_lex,
            "n_nonzero_lex": len(keep),
            "sources": _source_counts(fit_ex),
            "routing": {k: {"cheap": s.eval_cheap, "strong": s.eval_strong} for k, s in specs.items()},
        },
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(artifact))
    Classifier.load(out)   # fail now, not at router startup, if the export is inconsistent
    return {"seconds": round(time.perf_counter() - t0, 2), "n_fit": len(fit_ex), "n_cal": len(cal_ex),
            "n_vocab": n_lex, "thresholds": artifact["thresholds"], "platt": [a, b],
            "bytes": out.stat().st_size, "top_dense": _top_dense(coef[n_lex:])}


def _quality_threshold(p: np.ndarray, outcomes: Sequence[tuple[float, float] | None]) -> float:
    """Highest threshold whose routing (p >= t -> strong) keeps QUALITY_TARGET of the
    all-strong quality on the gold calibration rows, clamped to REASONING_RANGE."""
    m = np.array([o is not None for o in outcomes])
    lo, hi = REASONING_RANGE
    if m.sum() < 20:
        return 0.5
    pm = p[m]
    weak = np.array([o[0] for o in outcomes if o is not None])
    strong = np.array([o[1] for o in outcomes if o is not None])
    target = QUALITY_TARGET * strong.mean()
    for t in np.arange(hi, lo - 1e-9, -0.01):
        q = np.where(pm >= t, strong, weak).mean()
        if q >= target:
            return float(round(t, 2))
    return lo


def _source_counts(ex: Sequence[Example]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in ex:
        out[e.file] = out.get(e.file, 0) + 1
    return dict(sorted(out.items()))


def _top_dense(coef: np.ndarray) -> list[tuple[str, float]]:
    pairs = sorted(zip(DENSE_NAMES, coef), key=lambda p: -abs(p[1]))
    return [(n, round(float(v), 3)) for n, v in pairs if not math.isnan(v)]
