from __future__ import annotations

import json

import numpy as np
import typer
from typer.testing import CliRunner

from router.commands.classifier import register

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")   # typer collapses a single-command app; keep it a group
    def _noop() -> None:
        pass
    return app


def test_classify_streams_jsonl(tmp_path):
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    lines = [
        {"id": 1, "prompt": "hello!"},
        {"id": 2, "messages": [{"role": "user", "content": [{"type": "text", "text": "Prove that $\\sqrt{2}$ is irrational."}]}]},
        {"id": 3, "prompt": ""},
    ]
    inp.write_text("\n".join(json.dumps(r) for r in lines) + "\n\nnot json\n")
    res = runner.invoke(_app(), ["classify", "--input", str(inp), "--output", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert 0 <= r["complexity"] <= 1 and r["tier"] in ("fast", "reasoning", "deliberate")
        assert isinstance(r["signals"], list)
    assert rows[1]["complexity"] > rows[0]["complexity"]
    assert "prompt" in rows[0] and "messages" in rows[1]   # input preserved


def test_classify_many_lines(tmp_path):
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    with inp.open("w") as fh:
        for i in range(3000):
            fh.write(json.dumps({"prompt": f"question number {i}: what is {i} + {i}?"}) + "\n")
    res = runner.invoke(_app(), ["classify", "-i", str(inp), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert sum(1 for _ in out.open()) == 3000


def test_train_then_eval_cli(fixture_file, tmp_path):
    art = tmp_path / "m.json"
    res = runner.invoke(_app(), ["train", "--data", str(fixture_file), "--out", str(art), "--no-baselines"])
    assert res.exit_code == 0, res.output
    assert art.exists() and "APGR" in res.output
    plot = tmp_path / "p.png"
    rep = tmp_path / "r.json"
    res = runner.invoke(_app(), ["eval", "--model", str(art), "--data", str(fixture_file), "--plot", str(plot),
                                 "--json", str(rep), "--no-baselines"])
    assert res.exit_code == 0, res.output
    assert plot.exists() and "routing_fixture.jsonl" in json.loads(rep.read_text())["files"]


def test_train_requires_data(tmp_path):
    res = runner.invoke(_app(), ["train", "--out", str(tmp_path / "x.json")])
    assert res.exit_code != 0


def test_missing_or_unreadable_data_is_one_line_not_a_traceback(tmp_path):
    missing = tmp_path / "nope"
    for args in (["train", "--data", str(missing), "--out", str(tmp_path / "x.json")],
                 ["eval", "--data", str(missing), "--no-baselines"],
                 ["eval", "--loso", "--data", str(missing)]):
        res = runner.invoke(_app(), args)
        assert res.exit_code == 2, res.output
        assert "Traceback" not in res.output and res.output.strip().count("\n") == 0, res.output
        assert "nope" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok", "label": 1}\n{not json\n')
    res = runner.invoke(_app(), ["train", "--data", str(bad), "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "unreadable data" in res.output and "Traceback" not in res.output
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    res = runner.invoke(_app(), ["train", "--data", str(empty), "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "no *.jsonl" in res.output


def test_train_set_overrides_the_recipe(fixture_file, tmp_path):
    art = tmp_path / "m.json"
    res = runner.invoke(_app(), ["train", "--data", str(fixture_file), "--out", str(art), "--no-baselines",
                                 "--set", "C=0.5", "--set", 'dense=["long_prompt"]'])
    assert res.exit_code == 0, res.output
    meta = json.loads(art.read_text())["meta"]["recipe"]
    assert meta["C"] == 0.5 and meta["dense"] == ["long_prompt"]
    res = runner.invoke(_app(), ["train", "--data", str(fixture_file), "--out", str(art), "--set", "nope=1"])
    assert res.exit_code != 0 and "unknown recipe key" in res.output


def test_ledger_rows_count_once_each(tmp_path):
    """Noisy feedback: a tenant's rated row weighs what a public row weighs (1), not more."""
    from classifier.training.data import load
    from classifier.training.fit import recipe, targets
    rows = [{"request_id": f"r{i}", "tenant": "t", "tier": "fast" if i % 3 else "reasoning", "prompt": f"ask {i}",
             "quality": 0.1 if i % 2 else 0.9} for i in range(30)]
    f = tmp_path / "ledger.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    ex, _ = load([f])
    _, w = targets(ex, recipe())
    assert len(ex) > 10 and np.allclose(w, 1.0)
