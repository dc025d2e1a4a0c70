"""`triage cascade score` / `eval`: streaming JSONL in, scores out, clear errors on bad lines."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from router.commands.cascade import register

runner = CliRunner()
MCQ = "Pick one.\nA. red\nB. blue\nC. green\nAnswer:"


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")   # keep the app a group
    def _noop() -> None:
        pass
    return app


def test_score_adds_escalate_and_signals(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [
        {"id": 1, "prompt": MCQ, "answers": ["B", "The answer is (B)."], "logprobs": [[-0.01], [-0.02]]},
        {"id": 2, "prompt": MCQ, "answers": ["B", "C"]},
        {"id": 3, "messages": [{"role": "user", "content": "Return JSON with key a"}],
         "answers": ['{"a": 1}', '{"a": 1}'], "response_format": {"type": "json_object"}},
    ]
    inp.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = runner.invoke(_app(), ["cascade", "score", "--input", str(inp), "--output", str(out)])
    assert res.exit_code == 0, res.output
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["id"] for g in got] == [1, 2, 3]
    assert got[1]["escalate"] > got[0]["escalate"]
    assert got[0]["kind"] == "mcq" and got[2]["kind"] == "json"
    assert got[1]["signals"]["choices"] == ["B", "C"]
    assert got[0]["answers"] == rows[0]["answers"]        # input kept


def test_bad_lines_are_reported_and_skipped(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = ["not json", json.dumps([1, 2]), json.dumps({"answers": ["a"]}),
             json.dumps({"prompt": "q", "answers": []}), json.dumps({"prompt": "q", "answers": [3]}),
             json.dumps({"prompt": "q", "answers": ["a"], "logprobs": [["x"]]}),
             json.dumps({"prompt": "q", "answers": ["a"], "logprobs": [[-0.1], [-0.2]]}),
             "", json.dumps({"prompt": MCQ, "answers": ["A", "A"]})]
    inp.write_text("\n".join(lines) + "\n")
    res = runner.invoke(_app(), ["cascade", "score", "-i", str(inp), "-o", str(out)])
    assert res.exit_code == 0, res.output
    err = res.output
    for n, why in [(1, "invalid JSON"), (2, "not a JSON object"), (3, "`prompt`"), (4, "non-empty list"),
                   (5, "answers[0]"), (6, "logprobs[0]"), (7, "at most one entry")]:
        assert f"line {n}: " in err and why in err, (n, err)
    assert "scored 1 rows, skipped 7" in err
    assert len(out.read_text().splitlines()) == 1


def test_strict_stops_at_first_bad_line(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"prompt": MCQ, "answers": ["A"]}) + "\n{oops\n")
    res = runner.invoke(_app(), ["cascade", "score", "-i", str(inp), "-o", str(out), "--strict"])
    assert res.exit_code == 2 and "line 2" in res.output


def test_missing_input_is_one_line_error(tmp_path):
    res = runner.invoke(_app(), ["cascade", "score", "-i", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no such file" in res.output and "Traceback" not in res.output


def test_many_lines_stream(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    with inp.open("w") as fh:
        for i in range(2000):
            fh.write(json.dumps({"prompt": f"What is {i} + 1?", "answers": [f"#### {i + 1}", f"{i + (i % 2)}"]}) + "\n")
    res = runner.invoke(_app(), ["cascade", "score", "-i", str(inp), "-o", str(out)])
    assert res.exit_code == 0, res.output
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == 2000
    assert got[1]["signals"]["agreement"] == 1.0 and got[2]["signals"]["agreement"] == 0.0


def test_eval_synthetic(tmp_path):
    res = runner.invoke(_app(), ["cascade", "eval", "--n", "200"])
    assert res.exit_code == 0, res.output
    assert "check" in res.output and "oracle" in res.output
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "answers": ["a"]}) + "\n")
    res = runner.invoke(_app(), ["cascade", "eval", "--input", str(bad)])
    assert res.exit_code == 2 and "labels" in res.output


def test_score_run_code_is_opt_in(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    prompt = "Write a function to add.\nassert add(1, 2) == 3"
    inp.write_text(json.dumps({"prompt": prompt, "answers": ["def add(a, b):\n    return a - b",
                                                              "def add(a, b):\n    return a + b"]}) + "\n")
    res = runner.invoke(_app(), ["cascade", "score", "-i", str(inp), "-o", str(out)])
    assert res.exit_code == 0
    assert "tests_passed" not in json.loads(out.read_text())["signals"]
    res = runner.invoke(_app(), ["cascade", "score", "-i", str(inp), "-o", str(out), "--run-code"])
    assert res.exit_code == 0
    assert json.loads(out.read_text())["signals"]["tests_passed"] == 0.0
