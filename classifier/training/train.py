"""`triage train`: fit the LOSO-chosen recipe (fit.RECIPE) and export the JSON artifact the
pure scorer reads. Byte-reproducible: same data and recipe, same bytes (sorted keys,
rounded weights, a content-hash version).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from classifier.model import FORMAT, Classifier, dumps
from classifier.training.data import Example, expand_paths, load
from classifier.training.fit import CODE_FLOOR_MIN, Feats, Fitted, fit, recipe

# The tier names the thresholds are fitted for, lowest first. The scorer only knows the
# names an artifact declares; the router maps them onto its configured tiers.
TIER_NAMES = ("fast", "reasoning", "deliberate")


class DataError(ValueError):
    """Unusable --data (missing, unreadable, not JSONL): one line for the CLI to print."""


def load_data(paths: Iterable[str | Path]) -> tuple[list[Example], dict[str, Any]]:
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("no --data given")
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such file or directory")
        if p.is_dir() and not any(p.glob("*.jsonl")):
            raise DataError(f"{p}: folder holds no *.jsonl files")
    files = expand_paths(paths)
    try:
        return load(files)
    except OSError as e:
        raise DataError(f"{getattr(e, 'filename', None) or 'data'}: {e.strerror or e}") from None
    except ValueError as e:   # orjson/json decode errors, bad fields
        raise DataError(f"unreadable data ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def export(m: Fitted, feats: Feats, specs: dict[str, Any] | None = None) -> dict[str, Any]:
    from classifier.features import DENSE_NAMES
    terms = feats.term_list
    n_lex = len(m.cols)
    if len(m.ccols):
        raise ValueError("char n-grams are a LOSO switch only; the serving scorer does not compute them")
    coef = m.coef
    r = m.recipe
    art: dict[str, Any] = {
        "format": FORMAT,
        "vocab": [terms[j] for j in m.cols],
        "idf": [round(float(v), 6) for v in m.idf],
        "coef": [round(float(v), 6) for v in coef[:n_lex]],
        "intercept": round(float(m.intercept), 6),
        "calibration": {"platt": [round(m.platt[0], 6), round(m.platt[1], 6)], "target": "cheap model fails"},
        "tiers": [{"name": TIER_NAMES[0], "min": 0.0},
                  {"name": TIER_NAMES[1], "min": round(float(m.thresholds[0]), 4)},
                  {"name": TIER_NAMES[2], "min": round(float(m.thresholds[1]), 4)}],
        "meta": {
            "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()},
            "n_fit": m.n_fit, "n_cal": m.n_cal, "n_vocab": n_lex,
            "routing": {k: {"cheap": s.eval_cheap, "strong": s.eval_strong} for k, s in (specs or {}).items()},
        },
    }
    if m.dense_idx:
        art["dense"] = {"names": [DENSE_NAMES[i] for i in m.dense_idx],
                        "mean": [round(float(v), 6) for v in m.mean], "std": [round(float(v), 6) for v in m.std],
                        "coef": [round(float(v), 6) for v in coef[n_lex:]]}
    if r["floors"]:
        art["floors"] = {"asks_reasoning": {"tier": TIER_NAMES[1], "min": 1e-12},
                         "code_multi": {"tier": TIER_NAMES[1], "min": CODE_FLOOR_MIN}}
    return art


def train(paths: Iterable[str | Path], out: str | Path, *, opts: dict[str, Any] | None = None,
          progress: Callable[[str, int, int], None] | None = None,
          extra_examples: Sequence[Example] = ()) -> dict[str, Any]:
    t0 = time.perf_counter()
    examples, specs = load_data(paths)
    examples = list(examples) + list(extra_examples)
    if progress:
        progress("featurize", 0, len(examples))
    feats = Feats.build(examples)
    if progress:
        progress("featurize", len(examples), len(examples))
        progress("fit", 0, 1)
    # The hashed 1-in-5 validation split stays out so `triage train`'s report is held out.
    m = fit([e for e in examples if e.split == "train"], feats, recipe(**(opts or {})))
    if progress:
        progress("fit", 1, 1)
    art = export(m, feats, specs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = dumps(art)
    out.write_bytes(data)
    clf = Classifier.load(out)   # fail now, not at router startup, if the export is inconsistent
    return {"seconds": round(time.perf_counter() - t0, 2), "n_fit": m.n_fit, "n_cal": m.n_cal,
            "n_vocab": len(m.cols), "thresholds": clf.thresholds, "platt": list(m.platt), "bytes": len(data),
            "version": clf.version, "top_terms": _top_terms(art)}


def _top_terms(art: dict[str, Any], k: int = 8) -> dict[str, list[str]]:
    c = np.array(art["coef"])
    order = np.argsort(c)
    return {"hard": [art["vocab"][i] for i in order[::-1][:k]], "easy": [art["vocab"][i] for i in order[:k]]}
