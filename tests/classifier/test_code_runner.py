"""Code answers compared by running them on the prompt's own calls (offline, opt-in)."""

from __future__ import annotations

import pytest

from classifier.answer_check import check
from classifier.answer_code import probes
from classifier.training.code_runner import run_code

PROMPT = ("Write a function to sum a list.\nYour code should pass these tests:\n"
          "assert sum_list([1, 2, 3]) == 6\nassert sum_list([]) == 0\nassert not sum_list([-1, 1])")
GOOD = "```python\ndef sum_list(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n```"
GOOD_OTHER = "Sure:\n```python\ndef sum_list(xs):\n    return sum(xs)\n\nprint(sum_list(input()))\n```"
BAD = "```python\ndef sum_list(xs):\n    return max(xs)\n```"


def test_probes_from_asserts_and_doctests():
    assert probes(PROMPT) == [{"call": "sum_list([1, 2, 3])", "test": "sum_list([1, 2, 3]) == 6"},
                              {"call": "sum_list([])", "test": "sum_list([]) == 0"},
                              {"call": "sum_list([-1, 1])", "test": "not sum_list([-1, 1])"}]
    he = 'def add(a, b):\n    """\n    >>> add(1, 2)\n    3\n    """\n'
    assert probes(he) == [{"call": "add(1, 2)", "expect_repr": "3"}]


def test_runner_runs_and_reports_tests():
    calls = probes(PROMPT)
    assert [r["ok"] for r in run_code("def sum_list(xs):\n    return sum(xs)", calls)] == [True, True, True]
    bad = run_code("def sum_list(xs):\n    return max(xs)", calls)
    assert bad[0] == {"out": "3", "ok": False} and bad[1]["out"] == "!ValueError"


@pytest.mark.parametrize("code", [
    "import os\nos.system('touch pwned')\ndef sum_list(xs): return 6",
    "import subprocess\ndef sum_list(xs): return 6",
    "def sum_list(xs):\n    open('pwned', 'w').write('x')\n    return 6",
    "import socket\ndef sum_list(xs): return 6",
])
def test_runner_refuses_processes_network_and_writes(code, tmp_path):
    res = run_code(code, probes(PROMPT))
    assert res is not None and all(r["out"].startswith("!") for r in res)


def test_runner_times_out():
    assert run_code("def sum_list(xs):\n    while True:\n        pass", probes(PROMPT)) is None


def test_check_uses_outputs_and_the_prompts_tests():
    same = check(PROMPT, [GOOD, GOOD_OTHER], run_code=run_code)
    assert same.signals["ran"] and same.signals["tests_passed"] == 1.0
    assert same.signals["agreement"] == 1.0          # different code, same outputs (demo input() is not run)
    wrong = check(PROMPT, [BAD, GOOD], run_code=run_code)
    assert wrong.signals["tests_passed"] == 0.0 and wrong.signals["agreement"] < 0.5
    assert wrong.escalate - same.escalate > 0.5
    plain = check(PROMPT, [GOOD, GOOD_OTHER])        # no runner: syntax trees only
    assert "ran" not in plain.signals and plain.signals["agreement"] < 1.0
