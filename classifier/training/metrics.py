"""Routing metrics. Ties in a score are resolved in expectation (random tie-breaking),
which is what a router with a coarse score actually achieves on average."""

from __future__ import annotations

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    labels = labels.astype(bool)
    npos, nneg = int(labels.sum()), int((~labels).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):            # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(s))
    r[order] = ranks
    return float((r[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def routing_curve(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(strong-call share, mean quality) at every tie-group boundary, highest score first."""
    n = len(scores)
    order = np.argsort(-scores, kind="mergesort")
    s, gain = scores[order], (strong - weak)[order]
    base = weak.sum()
    xs, ys = [0.0], [base / n]
    cum = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and s[j + 1] == s[i]:
            j += 1
        cum += gain[i:j + 1].sum()
        xs.append((j + 1) / n)
        ys.append((base + cum) / n)
        i = j + 1
    return np.array(xs), np.array(ys)


def apgr(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> float:
    x, q = routing_curve(scores, weak, strong)
    pw, ps = weak.mean(), strong.mean()
    if ps - pw <= 1e-12:
        return float("nan")
    pgr = (q - pw) / (ps - pw)
    return float(np.sum((x[1:] - x[:-1]) * (pgr[1:] + pgr[:-1]) / 2))


def cost_saved_at(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray,
                  price_weak: float, price_strong: float, frac: float = 0.95) -> tuple[float, float]:
    """(cost saved vs all-strong, strong-call share) at the cheapest point reaching
    `frac` of the all-strong quality; linear interpolation between boundaries."""
    x, q = routing_curve(scores, weak, strong)
    target = frac * strong.mean()
    share = 1.0
    if q[0] >= target:
        share = 0.0
    else:
        for k in range(1, len(x)):
            if q[k] >= target:
                t = (target - q[k - 1]) / (q[k] - q[k - 1]) if q[k] > q[k - 1] else 1.0
                share = float(x[k - 1] + t * (x[k] - x[k - 1]))
                break
    cost = share * price_strong + (1 - share) * price_weak
    return float(1 - cost / price_strong), share


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    probs = np.clip(probs, 0, 1)
    idx = np.minimum((probs * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(probs[m].mean() - labels[m].mean())
    return float(total / len(probs))
