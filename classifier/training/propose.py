"""A tenant's candidate artifact: shared data + the tenant's rated ledger rows, judged on the
tenant's own held-out rows and on leave-one-source-out against the model it would replace.

Tenant rows are split by a hash of the normalised prompt (1 in 3 held out), so `propose`
and `promote` agree on which rows are held out without storing anything. Each rated row
counts once (weight 1, like any public row): feedback is noisy, and up-weighting it
erased the gain in the issue-12 experiment.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from classifier.features import last_user_text
from classifier.model import Classifier, dumps
from classifier.training.data import Example, _h, ledger_label, normalise
from classifier.training.metrics import auroc

TENANT_HOLDOUT_MOD = 3


def tenant_examples(rows: Iterable[dict[str, Any]], tenant: str | None = None) -> list[Example]:
    """Rated rows with a stored prompt -> examples (labels as data.ledger_label, weight 1)."""
    out: list[Example] = []
    seen: set[str] = set()
    for r in rows:
        if tenant is not None and r.get("tenant") != tenant:
            continue
        lab = ledger_label(r)
        if lab is None:
            continue
        key = normalise(last_user_text(r["prompt"]))
        if not key or key in seen:
            continue
        seen.add(key)
        split = "held" if _h(key, "tenant") % TENANT_HOLDOUT_MOD == 0 else "train"
        out.append(Example(r["prompt"], lab[0], 1.0, "ledger:" + str(r.get("tenant")), "ledger/" + str(r.get("tier")),
                           key, "train", True, extra={"tenant_split": split}))
    return out


def split(examples: Sequence[Example]) -> tuple[list[Example], list[Example]]:
    train = [e for e in examples if e.extra.get("tenant_split") != "held"]
    held = [e for e in examples if e.extra.get("tenant_split") == "held"]
    return train, held


def tenant_figures(clf: Classifier, held: Sequence[Example]) -> dict[str, Any]:
    """AUROC of "this answer was not good enough" and Brier score on the held-out rows."""
    if not held:
        return {"n": 0, "auroc": None, "brier": None}
    p = np.array([clf.score(e.request) for e in held])
    y = np.array([float(e.y >= 0.5) for e in held])
    a = auroc(p, y)
    return {"n": len(held), "positives": int(y.sum()), "auroc": None if np.isnan(a) else round(a, 4),
            "brier": round(float(np.mean((p - y) ** 2)), 4)}


def worse(candidate: dict[str, Any], current: dict[str, Any], margin: float = 0.0) -> str | None:
    """Why the candidate is worse on the tenant's held-out rows, or None."""
    if not candidate["n"]:
        return "no held-out rated rows for this tenant to check the candidate on"
    if candidate["auroc"] is not None and current["auroc"] is not None:
        if candidate["auroc"] < current["auroc"] - margin:
            return f"held-out AUROC {candidate['auroc']:.3f} < current {current['auroc']:.3f}"
        return None
    if candidate["brier"] > current["brier"] + margin:
        return f"held-out Brier {candidate['brier']:.3f} > current {current['brier']:.3f} (one class only: no AUROC)"
    return None


def propose(shared: Sequence[str | Path], rows: Iterable[dict[str, Any]], tenant: str | None, current: Classifier,
            out: str | Path, *, loso: bool = True, log: Any = None) -> dict[str, Any]:
    from classifier.training.fit import Feats, fit, recipe
    from classifier.training.train import export, load_data

    examples, specs = load_data(shared)
    t_ex = tenant_examples(rows, tenant)
    t_train, t_held = split(t_ex)
    public_train = [e for e in examples if e.split == "train"]
    feats = Feats.build(list(examples) + t_ex)
    r = recipe(**{k: (tuple(v) if isinstance(v, list) else v)
                  for k, v in (current.meta.get("recipe") or {}).items() if k in recipe()})
    m = fit(public_train + t_train, feats, r)
    art = export(m, feats, specs)
    art["meta"]["tenant"] = {"name": tenant, "train_rows": len(t_train), "held_rows": len(t_held)}
    data = dumps(art)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_bytes(data)
    cand = Classifier.load(out)
    report: dict[str, Any] = {
        "candidate": {"version": cand.version, "path": str(out), "tenant_held_out": tenant_figures(cand, t_held)},
        "current": {"version": current.version, "tenant_held_out": tenant_figures(current, t_held)},
        "tenant_rows": {"train": len(t_train), "held_out": len(t_held)},
    }
    if loso:
        from classifier.training.loso import recipe_scorer, run
        base = run(examples, recipe_scorer(r, feats), log=log)["summary"]
        with_t = run(list(examples) + [replace(e, split="train") for e in t_train], recipe_scorer(r, feats), log=log)["summary"]
        report["current"]["loso"] = base
        report["candidate"]["loso"] = with_t
    report["refusal"] = worse(report["candidate"]["tenant_held_out"], report["current"]["tenant_held_out"])
    return report
