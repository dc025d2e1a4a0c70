"""Held-out evaluation of an artifact against random, length-only, TF-IDF+LR and
LiteLLM's complexity_router heuristic, per routing file with per-model outcomes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from classifier.features import last_user_text
from classifier.model import Classifier
from classifier.training.data import Example, RoutingSpec, load
from classifier.training.metrics import apgr, auroc, cost_saved_at, ece, routing_curve

Scorer = Callable[[Sequence[Example]], np.ndarray]
MIN_SOURCE_ROWS = 40


def _random_scorer(ex: Sequence[Example]) -> np.ndarray:
    # All-ties = the expectation over random routers (metrics break ties in expectation),
    # so "random" is exactly APGR 0.5 instead of one noisy draw.
    return np.full(len(ex), 0.5)


def _length_scorer(ex: Sequence[Example]) -> np.ndarray:
    return np.array([float(len(last_user_text(e.request))) for e in ex])


def _tfidf_lr(train_ex: Sequence[Example]) -> Scorer | None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = [last_user_text(e.request) for e in train_ex]
    labels = [int(e.y >= 0.5) for e in train_ex]
    if len(set(labels)) < 2:
        return None
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000))
    pipe.fit(texts, labels)
    return lambda ex: pipe.predict_proba([last_user_text(e.request) for e in ex])[:, 1]


def _litellm() -> Scorer | None:
    """LiteLLM's hand-weighted complexity_router score, if the installed litellm ships it."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        from unittest.mock import MagicMock

        from litellm.router_strategy.complexity_router.complexity_router import ComplexityRouter
        router = ComplexityRouter(model_name="triage-eval", litellm_router_instance=MagicMock())
    except Exception:  # noqa: BLE001 - any import/ctor failure just drops the baseline
        return None

    def score(ex: Sequence[Example]) -> np.ndarray:
        return np.array([float(router.classify(last_user_text(e.request))[1]) for e in ex])
    return score


def evaluate(model_path: str | Path | None, paths: Iterable[str | Path], *,
             plot: str | Path | None = None, baselines: bool = True,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    examples, specs = load(paths)
    clf = Classifier.load(model_path)
    val = [e for e in examples if e.split == "val"]
    scorers: dict[str, Scorer] = {
        "triage": lambda ex: np.array([clf.score(e.request) for e in ex]),
        "random": _random_scorer,
        "length": _length_scorer,
    }
    if baselines:
        if progress:
            progress("fitting TF-IDF+LR baseline")
        tl = _tfidf_lr([e for e in examples if e.split == "train"])
        if tl is not None:
            scorers["tfidf_lr"] = tl
        ll = _litellm()
        if ll is not None:
            scorers["litellm"] = ll
    calibrated = {"triage", "tfidf_lr", "random"}
    files: dict[str, Any] = {}
    by_file: dict[str, list[Example]] = {}
    for e in val:
        if e.outcome is not None:
            by_file.setdefault(e.file, []).append(e)
    for fname, ex in sorted(by_file.items()):
        spec: RoutingSpec = specs[fname]
        weak = np.array([e.outcome[0] for e in ex])
        strong = np.array([e.outcome[1] for e in ex])
        fails = (weak < 0.5).astype(float)
        res: dict[str, Any] = {"n": len(ex), "cheap": spec.eval_cheap, "strong": spec.eval_strong,
                               "weak_quality": float(weak.mean()), "strong_quality": float(strong.mean()),
                               "scorers": {}, "curves": {}, "per_source": {}}
        for name, fn in scorers.items():
            if progress:
                progress(f"{fname}: {name}")
            s = np.asarray(fn(ex), dtype=float)
            saved, share = cost_saved_at(s, weak, strong, spec.price_cheap, spec.price_strong)
            res["scorers"][name] = {
                "auroc": auroc(s, fails), "apgr": apgr(s, weak, strong),
                "cost_saved_95": saved, "strong_share_95": share,
                "ece": ece(s, fails) if name in calibrated else None,
            }
            x, q = routing_curve(s, weak, strong)
            res["curves"][name] = (x.tolist(), q.tolist())
            if name == "triage":
                srcs = sorted({e.source for e in ex})
                for src in srcs:
                    m = np.array([e.source == src for e in ex])
                    if m.sum() >= MIN_SOURCE_ROWS:
                        res["per_source"][src] = {"n": int(m.sum()), "auroc": auroc(s[m], fails[m]),
                                                  "fail_rate": float(fails[m].mean())}
        files[fname] = res
    report = {"files": files, "scorers": list(scorers)}
    if plot:
        try:
            _plot(report, Path(plot))
            report["plot"] = str(plot)
        except ImportError:   # matplotlib is an optional extra; the table still stands
            report["plot"] = None
    return report


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "   -  "
    return f"{v:6.3f}"


def format_report(report: dict[str, Any]) -> str:
    lines = []
    for fname, res in report["files"].items():
        lines.append(f"\n{fname}  (held-out n={res['n']}; cheap={res['cheap']} q={res['weak_quality']:.3f}, "
                     f"strong={res['strong']} q={res['strong_quality']:.3f})")
        lines.append(f"  {'router':<10} {'AUROC':>6} {'APGR':>6} {'saved@95':>8} {'strong%':>7} {'ECE':>6}")
        for name, m in res["scorers"].items():
            lines.append(f"  {name:<10} {_fmt(m['auroc'])} {_fmt(m['apgr'])} {_fmt(m['cost_saved_95']):>8} "
                         f"{_fmt(m['strong_share_95']):>7} {_fmt(m['ece'])}")
        if res["per_source"]:
            lines.append("  triage AUROC within source (does it rank difficulty, not style?):")
            for src, m in sorted(res["per_source"].items()):
                lines.append(f"    {src:<44} n={m['n']:<5} fail={m['fail_rate']:.2f} AUROC={_fmt(m['auroc'])}")
    return "\n".join(lines)


def _plot(report: dict[str, Any], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = report["files"]
    n = max(1, len(files))
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    for ax, (fname, res) in zip(axes[0], files.items()):
        for name, (x, q) in res["curves"].items():
            ax.plot(x, q, label=f"{name} (APGR {res['scorers'][name]['apgr']:.3f})", lw=1.4)
        ax.axhline(res["strong_quality"], color="k", ls=":", lw=0.8)
        ax.axhline(0.95 * res["strong_quality"], color="grey", ls="--", lw=0.8)
        ax.set_title(fname, fontsize=9)
        ax.set_xlabel("share of calls to strong model (cost ->)")
        ax.set_ylabel("quality")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
