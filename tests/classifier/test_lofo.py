from __future__ import annotations

import json
import math

from classifier.training.data import load
from classifier.training.fixture import write_fixture
from classifier.training.lofo import lofo, main
from classifier.training.train import DEFAULTS, fit_artifact


def _two_files(tmp_path):
    a = write_fixture(tmp_path / "routing_a.jsonl", n=200, seed=1)
    b = write_fixture(tmp_path / "routing_b.jsonl", n=200, seed=2)
    return [a, b]


def test_lofo_holds_each_file_out(tmp_path):
    ex, specs = load(_two_files(tmp_path))
    res = lofo(ex, specs)
    assert set(res["lofo"]) == {"routing_a.jsonl", "routing_b.jsonl"}
    for part in ("lofo", "in_dist"):
        for r in res[part].values():
            assert 0.0 <= r["triage"]["auroc"] <= 1.0 and not math.isnan(r["triage"]["apgr"])
    assert {"lofo_auroc", "lofo_apgr", "in_dist_auroc", "lofo_mean"} <= set(res["summary"])


def test_lofo_cli_json(tmp_path, capsys):
    files = _two_files(tmp_path)
    out = tmp_path / "lofo.json"
    main(["--data", *map(str, files), "--opt", "length_w=0.1", "--json", str(out)])
    rep = json.loads(out.read_text())
    assert rep["opts"] == {"length_w": 0.1} and "summary" in capsys.readouterr().out


def test_length_prior_is_added_to_the_length_weight(tmp_path):
    ex, specs = load(_two_files(tmp_path))
    # The prior is added after the fit, so the fitted part is identical with or without it.
    base = fit_artifact(ex, specs, {"length_w": 0.0})
    lifted = fit_artifact(ex, specs, {"length_w": 0.5})
    i = base["dense_names"].index("long_prompt")
    assert abs(lifted["dense_coef"][i] - base["dense_coef"][i] - 0.5) < 1e-9
    assert fit_artifact(ex, specs)["meta"]["options"] == DEFAULTS
