"""Reading training/eval files and turning them into (soft) routing labels.

The target is P(a cheap single pass fails or falls clearly short of a strong model).
Formats are detected per row by their fields, so one `--data` list can mix them:

* per-model ``scores`` (routing files, BBH direct-vs-CoT, the self-generated fixture):
  gold. cheap = the cheaper model group (sidecar ``*.models.json`` prices, otherwise the
  model with the lower mean score in the file), strong = the other.
  y = (1 - cheap) * (0.5 + 0.5 * strong): a cheap failure the strong model fixes is a
  full positive; a prompt nobody solves is only half (hard, but escalating buys nothing).
* MATH ``level`` and GSM8K ``n_solution_lines``: difficulty proxies, soft y, low weight.
* arena-hard / creative writing / CLINC / Self-Instruct: coarse priors, low weight and
  CLINC subsampled, because these files differ from the rest in *style* and would
  otherwise teach "short and casual = easy" instead of difficulty.
* ledger export rows (request_id, tier, quality, prompt): see ``ledger_label``.
* generic ``label`` (0..1): used as is.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from classifier.features import last_user_text

VAL_MOD = 5          # 1 in 5 normalised prompts is held out
CAL_SALT = "cal"     # independent hash for the calibration slice of train
CLINC_KEEP = 0.2     # fraction of CLINC rows kept (style-dominance guard)
NONE_CORRECT = 0.5   # label of a prompt neither model solves

_NORM_RE = re.compile(r"[\W_]+")

# Blended USD per 1M tokens for files without a sidecar; CoT is ~6x the tokens of direct.
KNOWN_PRICES = {
    "gpt-4": 20.0,
    "mixtral": 0.6,
    "/direct": 1.0,
    "/cot": 6.0,
}


def normalise(text: str) -> str:
    return _NORM_RE.sub(" ", text.lower()).strip()


def _h(key: str, salt: str = "") -> int:
    return int(hashlib.sha1((salt + key).encode("utf-8")).hexdigest()[:8], 16)


def split_of(key: str) -> str:
    """Deterministic split by normalised prompt, so duplicates across files agree."""
    return "val" if _h(key) % VAL_MOD == 0 else "train"


def is_cal(key: str) -> bool:
    return _h(key, CAL_SALT) % 6 == 0


@dataclass(slots=True)
class Example:
    request: Any              # prompt string or messages list
    y: float                  # soft label in [0, 1]
    weight: float
    file: str
    source: str
    key: str
    split: str
    gold: bool = False        # per-model outcome or real feedback
    outcome: tuple[float, float] | None = None   # (cheap score, strong score) for routing eval
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RoutingSpec:
    cheap: list[str]
    strong: list[str]
    eval_cheap: str       # display names of the groups
    eval_strong: str
    price_cheap: float
    price_strong: float


def _price(model: str, sidecar: dict[str, Any]) -> float | None:
    info = sidecar.get(model)
    if isinstance(info, dict) and "input_price" in info:
        return (float(info["input_price"]) + float(info.get("output_price", info["input_price"]))) / 2
    for k, v in KNOWN_PRICES.items():
        if k in model.lower():
            return v
    return None


def routing_spec(rows: list[dict[str, Any]], sidecar: dict[str, Any]) -> RoutingSpec:
    models = sorted({m for r in rows for m in r["scores"]})
    means = {m: sum(float(r["scores"].get(m, 0) or 0) for r in rows) / max(1, len(rows)) for m in models}
    prices = {m: _price(m, sidecar) for m in models}
    if all(p is not None for p in prices.values()) and len(set(prices.values())) > 1:
        mid = (min(prices.values()) + max(prices.values())) / 2
        cheap = [m for m in models if prices[m] < mid]
        strong = [m for m in models if prices[m] >= mid]
    else:
        lo = min(models, key=lambda m: (means[m], m))
        cheap, strong = [lo], [m for m in models if m != lo] or [lo]
    # Drop models that are far below their group's best (e.g. a chat-QA model scoring
    # 0.19 on everything): they measure output-format mismatch, not prompt difficulty.
    cheap = [m for m in cheap if means[m] >= 0.75 * max(means[c] for c in cheap)]
    strong = [m for m in strong if means[m] >= 0.75 * max(means[s] for s in strong)]
    pc = sum(prices.get(m) or 1.0 for m in cheap) / len(cheap)
    ps = sum(prices.get(m) or pc * 10.0 for m in strong) / len(strong)
    return RoutingSpec(cheap, strong, "+".join(cheap), "+".join(strong), pc, ps)


def ledger_label(row: dict[str, Any]) -> tuple[float, float] | None:
    """(y, weight) for a ledger export row, or None to skip.

    fast + quality<0.5 -> positive (the cheap tier fell short); fast + quality>=0.5 ->
    negative. Higher tier + quality<0.5 -> positive at half weight (even the strong tier
    struggled, so the cheap one almost surely would). Higher tier + quality>=0.5 is
    skipped: we cannot tell whether fast would have sufficed, and labelling it positive
    would only teach the model to agree with its own past routing.
    """
    q = row.get("quality")
    if row.get("prompt") is None or q is None:
        return None
    q = float(q)
    if row.get("tier") == "fast":
        return (1.0, 1.0) if q < 0.5 else (0.0, 1.0)
    return (1.0, 0.5) if q < 0.5 else None


def _request_of(row: dict[str, Any]) -> Any:
    if isinstance(row.get("messages"), list):
        return row["messages"]
    p = row.get("prompt")
    return p if isinstance(p, str) else None


# (soft label, weight) per coarse source. Arena-hard is hard for a cheap model mostly
# when it asks for code/maths; a flat 0.8 taught "write ..." => hard, so it stays moderate.
# The style-prone files (arena-hard, creative, CLINC) carry weight 0.2: at 0.6-0.7 they
# taught style, and leave-one-file-out AUROC rose on all three gold files when they were
# down-weighted. CLINC stays as the anchor for assistant-command asks (dropping it
# entirely lost 0.03 APGR on unseen llmrouter).
PRIORS = {
    "hard_prompt": (0.7, 0.2),
    "creative_writing": (0.25, 0.2),
    "clinc": (0.03, 0.2),
    "self_instruct": (0.15, 1.0),
    "math_level_base": 0.15, "math_level_step": 0.15, "math_weight": 0.4,
    "gsm8k_base": 0.1, "gsm8k_step": 0.08, "gsm8k_weight": 0.25,
}


def _prior_label(row: dict[str, Any], file: str) -> tuple[float, float] | None:
    src = str(row.get("source", ""))
    hint = row.get("label_hint")
    if "level" in row and isinstance(row.get("level"), int):
        lv = min(5, max(1, int(row["level"])))
        return (PRIORS["math_level_base"] + PRIORS["math_level_step"] * lv, PRIORS["math_weight"])
    if "n_solution_lines" in row:
        steps = int(row.get("n_solution_lines") or 2)
        y = PRIORS["gsm8k_base"] + PRIORS["gsm8k_step"] * max(0, steps - 2)
        return (min(0.75, y), PRIORS["gsm8k_weight"])
    if hint in ("hard_prompt", "creative_writing"):
        return PRIORS[hint]
    if src.startswith("clinc150") or "clinc" in file:
        return PRIORS["clinc"]
    if src.startswith("self_instruct"):
        return PRIORS["self_instruct"]
    return None


# Task families that occur in more than one file under different names. Leave-one-source-out
# drops a held-out task's copies from every training file, so "unseen task" means unseen.
_FAMILY_ALIASES = {"hendrycks_math": "math", "agentverse-mgsm": "gsm8k", "arena_hard_v0.1": "arena",
                   "arena_hard_v2.0": "arena", "clinc150": "clinc", "self_instruct": "self_instruct"}


def family(source: str) -> str:
    """Task family of a `source` (`<dataset>/<task>[/<subtask>]`): the task for multi-task
    collections (routellm/mmlu/x -> mmlu, llmrouter/gsm8k -> gsm8k), else the dataset."""
    parts = source.lower().split("/")
    if parts[0] in ("routellm", "llmrouter") and len(parts) > 1:
        name = parts[1]
    else:
        name = parts[0]
    return _FAMILY_ALIASES.get(name, name)


def _iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield json.loads(line)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.glob("*.jsonl")))
        else:
            out.append(p)
    return out


def load_file(path: Path) -> tuple[list[Example], RoutingSpec | None]:
    rows = list(_iter_jsonl(path))
    sidecar_path = path.with_suffix(".models.json")
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
    scored = [r for r in rows if isinstance(r.get("scores"), dict) and len(r["scores"]) >= 2]
    spec = routing_spec(scored, sidecar) if scored else None
    out: list[Example] = []
    seen: set[str] = set()
    for r in rows:
        req = _request_of(r)
        if req is None:
            continue
        text = last_user_text(req)
        key = normalise(text)
        if not key or key in seen:
            continue
        seen.add(key)
        src = str(r.get("source", path.stem))
        if spec is not None and isinstance(r.get("scores"), dict) and len(r["scores"]) >= 2:
            sc = r["scores"]
            cheap = sum(float(sc.get(m) or 0) for m in spec.cheap) / len(spec.cheap)
            strong = sum(float(sc.get(m) or 0) for m in spec.strong) / len(spec.strong)
            y = (1 - cheap) * (NONE_CORRECT + (1 - NONE_CORRECT) * strong)
            # Tier-level outcome: expected quality of a random model of each group.
            outcome = (cheap, strong)
            out.append(Example(req, y, 1.0, path.name, src, key, split_of(key), True, outcome))
            continue
        if "request_id" in r and "tier" in r and "quality" in r:
            lab = ledger_label(r)
            if lab is not None:
                out.append(Example(req, lab[0], lab[1], path.name, "ledger/" + str(r.get("tier")),
                                   key, split_of(key), True))
            continue
        if isinstance(r.get("label"), (int, float, bool)):
            out.append(Example(req, float(r["label"]), 1.0, path.name, src, key, split_of(key), True))
            continue
        lab = _prior_label(r, path.name)
        if lab is None:
            continue
        if src.startswith("clinc150") and (_h(key, "clinc") % 1000) >= CLINC_KEEP * 1000:
            continue
        extra = {k: r[k] for k in ("level", "n_solution_lines", "label_hint") if k in r}
        out.append(Example(req, lab[0], lab[1], path.name, src, key, split_of(key), extra=extra))
    return out, spec


def load(paths: Iterable[str | Path]) -> tuple[list[Example], dict[str, RoutingSpec]]:
    examples: list[Example] = []
    specs: dict[str, RoutingSpec] = {}
    for p in expand_paths(paths):
        ex, spec = load_file(p)
        examples.extend(ex)
        if spec is not None:
            specs[p.name] = spec
    return examples, specs
