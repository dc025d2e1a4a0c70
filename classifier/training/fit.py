"""One linear fitter with switchable parts, shared by leave-one-source-out and `triage train`.

Every part the model could carry is a recipe key, so the LOSO harness can measure each one
by switching it on or off, and the shipped artifact is fitted by exactly the code that was
measured. `RECIPE` holds what earned its place (README "Model selection").

Soft labels are fitted exactly by duplicating each row as a positive with weight w*y and a
negative with weight w*(1-y).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from classifier.features import DENSE_NAMES
from classifier.training.data import Example, is_cal

# The lean model (chosen by LOSO, README table). Parts that lost are kept as switches so
# the comparison can be rerun; their values here are "off".
RECIPE: dict[str, Any] = {
    "label": "soft",          # hard: y >= 0.5 -> 1 | soft: the derived soft y | fail: 1 - cheap score
    "weight": "one",          # one: every row 1 | project: data.py's per-source weights
    "balance": 0.0,           # 0 = off; 1 = every training file carries the same total weight
    "dedupe": False,          # keep one copy of a prompt found in several files
    "max_features": 4000,
    "min_df": 1,
    "C": 1.0,
    "class_weight": None,     # or "balanced"
    "dense": ("long_prompt",),  # hand features by name (features.DENSE_NAMES); () = text only
    "length_w": 0.15,         # post-fit prior added to the standardised log-length weight
    "char": 0,                # char 3-5-gram TF-IDF terms (0 = off)
    "priors": True,           # train on the rows without per-model outcomes (MATH, GSM8K, chat, CLINC...)
    "floors": True,           # tier floors for explicit proof asks / multi-part code asks (README)
    "cal": "insample",        # Platt map fitted on: insample (all gold train rows) | slice (a held-back 1/6)
}

QUALITY_TARGET = 0.95   # fast tier unless that costs more than 5% of strong quality
REASONING_RANGE = (0.2, 0.6)
DELIBERATE_MIN = 0.75
DELIBERATE_Q = 0.95     # ... and the hardest few percent of gold prompts go to deliberate


def recipe(**over: Any) -> dict[str, Any]:
    unknown = set(over) - set(RECIPE)
    if unknown:
        raise KeyError(f"unknown recipe keys: {sorted(unknown)}")
    return dict(RECIPE, **over)


class Feats:
    """Every example featurized once per process: a global term-count matrix (all uni/bigrams
    of the serving tokenizer), optional char n-gram counts, and the dense hand features.
    A fit picks its vocabulary and idf from its own training rows only."""

    def __init__(self) -> None:
        self.row: dict[tuple[str, str], int] = {}
        self.terms: dict[str, int] = {}
        self._indptr: list[int] = [0]
        self._indices: list[int] = []
        self._data: list[int] = []
        self.dense_rows: list[list[float]] = []
        self.texts: list[str] = []
        self._C: sparse.csr_matrix | None = None
        self._char: tuple[sparse.csr_matrix, np.ndarray] | None = None

    @classmethod
    def build(cls, examples: Sequence[Example]) -> "Feats":
        f = cls()
        f.add(examples)
        return f

    def add(self, examples: Sequence[Example]) -> None:
        from classifier.features import conversation, dense, tokens
        terms = self.terms
        for e in examples:
            k = (e.file, e.key)
            if k in self.row:
                continue
            conv = conversation(e.request)
            toks = tokens(conv.ask)
            counts: dict[int, int] = {}
            for t in toks:
                j = terms.setdefault(t, len(terms))
                counts[j] = counts.get(j, 0) + 1
            self.row[k] = len(self.dense_rows)
            self._indices.extend(counts)
            self._data.extend(counts.values())
            self._indptr.append(len(self._indices))
            self.dense_rows.append(dense(conv, toks))
            self.texts.append(conv.ask[:1000])
        self._C = None
        self._char = None

    def idx(self, examples: Sequence[Example]) -> np.ndarray:
        return np.array([self.row[(e.file, e.key)] for e in examples], dtype=np.int64)

    @property
    def counts(self) -> sparse.csr_matrix:
        if self._C is None:
            self._C = sparse.csr_matrix((np.array(self._data, dtype=np.float64), np.array(self._indices),
                                         np.array(self._indptr)), shape=(len(self._indptr) - 1, len(self.terms)))
        return self._C

    @property
    def char_counts(self) -> sparse.csr_matrix:
        if self._char is None:
            from sklearn.feature_extraction.text import CountVectorizer
            cv = CountVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=5, dtype=np.float64)
            self._char = (cv.fit_transform(self.texts).tocsr(), cv.get_feature_names_out())
        return self._char[0]

    @property
    def term_list(self) -> list[str]:
        out = [""] * len(self.terms)
        for t, j in self.terms.items():
            out[j] = t
        return out


def tfidf_vocab(C: sparse.csr_matrix, max_features: int, min_df: int) -> tuple[np.ndarray, np.ndarray]:
    """(column indices, idf) chosen on training rows: df >= min_df, then the most frequent
    max_features terms (ties by column); smooth idf, as sklearn's TfidfVectorizer."""
    n = C.shape[0]
    df = np.asarray((C > 0).sum(axis=0)).ravel()
    tf = np.asarray(C.sum(axis=0)).ravel()
    ok = np.flatnonzero(df >= min_df)
    order = ok[np.lexsort((ok, -tf[ok]))][:max_features]
    cols = np.sort(order)
    idf = np.log((1 + n) / (1 + df[cols])) + 1.0
    return cols, idf


def tfidf(C: sparse.csr_matrix, cols: np.ndarray, idf: np.ndarray) -> sparse.csr_matrix:
    X = C[:, cols].tocsr().astype(np.float64)
    X.data = 1.0 + np.log(X.data)
    X = X @ sparse.diags(idf)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.diags(1.0 / norms) @ X


def targets(examples: Sequence[Example], r: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([e.y for e in examples], dtype=np.float64)
    if r["label"] == "fail":
        y = np.array([1.0 - e.outcome[0] if e.outcome is not None else e.y for e in examples])
    elif r["label"] == "hard":
        y = (y >= 0.5).astype(np.float64)
    w = np.array([e.weight if r["weight"] == "project" else 1.0 for e in examples], dtype=np.float64)
    if r["balance"] > 0:
        tot: dict[str, float] = {}
        for e, wi in zip(examples, w):
            tot[e.file] = tot.get(e.file, 0.0) + wi
        mean_tot = sum(tot.values()) / len(tot)
        w = w * np.array([(mean_tot / tot[e.file]) ** r["balance"] for e in examples])
    if r["class_weight"] == "balanced":
        pos = float((w * y).sum())
        neg = float((w * (1 - y)).sum())
        w_pos, w_neg = (pos + neg) / (2 * max(pos, 1e-9)), (pos + neg) / (2 * max(neg, 1e-9))
        return y, w * (y * w_pos + (1 - y) * w_neg)
    return y, w * (len(w) / w.sum())


def select(examples: Sequence[Example], r: dict[str, Any]) -> list[Example]:
    out = [e for e in examples if r["priors"] or e.gold]
    if r["dedupe"]:
        seen: set[str] = set()
        keep = []
        # Per-model outcomes first: where a prompt is in a routing file and a proxy file, the
        # outcome is the better label.
        for e in sorted(out, key=lambda e: (not e.gold, e.file)):
            if e.key not in seen:
                seen.add(e.key)
                keep.append(e)
        order = {id(e): i for i, e in enumerate(out)}
        out = sorted(keep, key=lambda e: order[id(e)])
    return out


@dataclass(slots=True)
class Fitted:
    cols: np.ndarray       # columns of Feats.counts = the vocabulary
    idf: np.ndarray
    ccols: np.ndarray      # char n-gram columns (empty = off)
    cidf: np.ndarray
    dense_idx: list[int]
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray       # lexical, char, dense (standardised)
    intercept: float
    recipe: dict[str, Any]
    platt: tuple[float, float] = (1.0, 0.0)
    thresholds: tuple[float, float] = (0.5, 0.9)   # reasoning, deliberate (calibrated p)
    n_fit: int = 0
    n_cal: int = 0

    def decision(self, examples: Sequence[Example], feats: Feats) -> np.ndarray:
        return design(self, feats.idx(examples), feats) @ self.coef + self.intercept

    def proba(self, examples: Sequence[Example], feats: Feats) -> np.ndarray:
        a, b = self.platt
        p = 1 / (1 + np.exp(-(a * self.decision(examples, feats) + b)))
        if self.recipe["floors"]:
            fl = floor_mask(examples, feats)
            p = np.where(fl, np.maximum(p, self.thresholds[0]), p)
        return p


def design(m: Fitted, rows: np.ndarray, feats: Feats) -> sparse.csr_matrix:
    blocks = [tfidf(feats.counts[rows], m.cols, m.idf)]
    if len(m.ccols):
        blocks.append(tfidf(feats.char_counts[rows], m.ccols, m.cidf))
    if m.dense_idx:
        D = np.array([[feats.dense_rows[i][j] for j in m.dense_idx] for i in rows], dtype=np.float64)
        blocks.append(sparse.csr_matrix((D - m.mean) / m.std))
    return sparse.hstack(blocks).tocsr()


CODE_FLOOR_MIN = 1.098612   # log1p(2) rounded down: 4+ programming terms, or 3 with two requirements


def floor_mask(examples: Sequence[Example], feats: Feats) -> np.ndarray:
    ia, ic = DENSE_NAMES.index("asks_reasoning"), DENSE_NAMES.index("code_multi")
    d = [feats.dense_rows[i] for i in feats.idx(examples)]
    return np.array([x[ia] > 0 or x[ic] >= CODE_FLOOR_MIN for x in d], dtype=bool)


def fit(examples: Sequence[Example], feats: Feats, r: dict[str, Any]) -> Fitted:
    """Fit on `examples` (all of them: callers pass only training rows), then calibrate."""
    ex = select(examples, r)
    if not ex:
        raise ValueError("no trainable rows found in the given data")
    cal_ex = [e for e in ex if e.gold]
    if r["cal"] == "slice" and sum(is_cal(e.key) for e in cal_ex) >= 20:
        cal_ex = [e for e in cal_ex if is_cal(e.key)]
        ex = [e for e in ex if not (e.gold and is_cal(e.key))]
    if len(cal_ex) < 20:
        cal_ex = ex
    y, w = targets(ex, r)
    if len({v >= 0.5 for v in y}) < 2:
        raise ValueError("the training rows all carry the same label; add the public data "
                         "(e.g. --data ../shared/data --data ledger.jsonl) or more rated traffic")
    rows = feats.idx(ex)
    C = feats.counts[rows]
    cols, idf = tfidf_vocab(C, int(r["max_features"]), min(int(r["min_df"]), max(1, len(ex) // 50)))
    ccols = cidf = np.zeros(0)
    if r["char"]:
        ccols, cidf = tfidf_vocab(feats.char_counts[rows], int(r["char"]), 5)
    dense_idx = [DENSE_NAMES.index(n) for n in r["dense"]]
    mean = std = np.zeros(0)
    if dense_idx:
        D = np.array([[feats.dense_rows[i][j] for j in dense_idx] for i in rows], dtype=np.float64)
        mean, std = D.mean(axis=0), D.std(axis=0)
        std[std < 1e-9] = 1.0
    m = Fitted(cols, idf, ccols, cidf, dense_idx, mean, std, np.zeros(0), 0.0, dict(r))
    X = design(m, rows, feats)
    soft = bool(((y > 0) & (y < 1)).any())
    if soft:
        Xf = sparse.vstack([X, X]).tocsr()
        yf = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
        wf = np.concatenate([w * y, w * (1 - y)])
        keep = wf > 0
        Xf, yf, wf = Xf[keep], yf[keep], wf[keep]
    else:
        Xf, yf, wf = X, y, w
    lr = LogisticRegression(C=float(r["C"]), max_iter=3000, solver="lbfgs")
    lr.fit(Xf, yf, sample_weight=wf)
    m.coef = lr.coef_[0].copy()
    m.intercept = float(lr.intercept_[0])
    if r["length_w"] and "long_prompt" in r["dense"]:
        n_before = X.shape[1] - len(dense_idx)
        m.coef[n_before + list(r["dense"]).index("long_prompt")] += float(r["length_w"])
    m.n_fit, m.n_cal = len(ex), len(cal_ex)
    calibrate(m, cal_ex, feats)
    return m


def calibrate(m: Fitted, cal_ex: Sequence[Example], feats: Feats) -> None:
    """Platt map to P(cheap model fails) on gold rows, then tier thresholds on that scale."""
    z = m.decision(cal_ex, feats)
    fail = np.array([1.0 - e.outcome[0] if e.outcome is not None else e.y for e in cal_ex])
    w = np.array([e.weight for e in cal_ex])
    if len(z) >= 20 and len(set(np.round(fail))) >= 2:
        lr = LogisticRegression(C=1e4, max_iter=1000)
        yd = np.concatenate([np.ones(len(z)), np.zeros(len(z))])
        lr.fit(np.concatenate([z, z])[:, None], yd, sample_weight=np.concatenate([w * fail, w * (1 - fail)]))
        m.platt = (float(lr.coef_[0, 0]), float(lr.intercept_[0]))
    a, b = m.platt
    p = 1 / (1 + np.exp(-(a * z + b)))
    reasoning = _quality_threshold(p, [e.outcome for e in cal_ex])
    deliberate = float(max(DELIBERATE_MIN, np.quantile(p, DELIBERATE_Q))) if len(p) else DELIBERATE_MIN
    m.thresholds = (reasoning, min(max(deliberate, reasoning + 0.1), 0.99))


def _quality_threshold(p: np.ndarray, outcomes: Sequence[tuple[float, float] | None]) -> float:
    """Highest threshold whose routing (p >= t -> strong) keeps QUALITY_TARGET of the
    all-strong quality on the gold calibration rows, clamped to REASONING_RANGE."""
    mask = np.array([o is not None for o in outcomes], dtype=bool)
    lo, hi = REASONING_RANGE
    if mask.sum() < 20:
        return 0.5
    pm = p[mask]
    weak = np.array([o[0] for o in outcomes if o is not None])
    strong = np.array([o[1] for o in outcomes if o is not None])
    target = QUALITY_TARGET * strong.mean()
    for t in np.arange(hi, lo - 1e-9, -0.01):
        if np.where(pm >= t, strong, weak).mean() >= target:
            return float(round(t, 2))
    return lo
