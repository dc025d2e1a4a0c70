"""The cascade answer check on answers in the shapes real models write."""

from __future__ import annotations

import json

import pytest

from classifier.answer_check import check, detect_kind, reasons
from classifier.answer_code import analyse_code, code_similarity, required_functions
from classifier.answer_extract import extract_choice, extract_final, mcq_options, same_final, to_number

MCQ = "Find the degree of Q(sqrt(2), sqrt(3)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:"


@pytest.mark.parametrize("answer,letter", [
    ("B", "B"), (" B. 4", "B"), ("The answer is (B).", "B"), ("**B**", "B"), ("(B) 4", "B"),
    ("The correct answer is B: 4.\n\nOption C is wrong because 2 is too small.", "B"),
    ("Option A looks tempting, but the answer is B.", "B"), ("Answer: B", "B"),
    ("I'm not sure, but B", "B"), ("\\boxed{B}", "B"), ("A dog barked.", None), ("", None),
])
def test_choice_extraction(answer, letter):
    assert extract_choice(answer, mcq_options(MCQ)) == letter


def test_choice_by_option_text():
    assert extract_choice("The degree is 4", mcq_options(MCQ)) == "B"


@pytest.mark.parametrize("answer,final,marked", [
    ("3 * 4 = 12, plus 6 is 18.\n#### 18", "18", True),
    ("So the total is \\boxed{\\frac{3}{4}}.", "\\frac{3}{4}", True),
    ("The answer is $1,250.", "1,250", True),
    ("She pays 12 dollars, then 30 dollars", "30", False),
    ("no digits here", None, False),
])
def test_final_extraction(answer, final, marked):
    assert extract_final(answer) == (final, marked)


@pytest.mark.parametrize("x,y,same", [
    ("1,250", "1250", True), ("\\frac{3}{4}", "0.75", True), ("3/4", "0.75", True), ("$5.50", "5.5", True),
    ("0.3333", "1/3", True), ("0.33", "1/3", False), ("18", "19", False), ("x = 5", "5", True), ("\\sqrt{2}", "\\sqrt{ 2 }", True),
    ("45^\\circ", "45", True), ("50%", "50", True),
])
def test_same_final(x, y, same):
    assert same_final(x, y) is same


def test_to_number_rejects_words():
    assert to_number("Tungsten") is None and to_number("1/0") is None


def test_mcq_agreement_and_disagreement():
    agree = check(MCQ, ["B", "The answer is (B)."])
    disagree = check(MCQ, ["B", "The answer is (C)."])
    assert agree.kind == disagree.kind == "mcq"
    assert agree.signals["agreement"] == 1.0 and disagree.signals["agreement"] == 0.0
    assert disagree.escalate > agree.escalate
    assert "disagreement" in reasons(disagree, 0.5)


def test_no_payload_escalates():
    lost = check(MCQ, ["This question is about field theory.", "B"])
    assert not lost.signals["found"]
    assert lost.escalate > check(MCQ, ["B", "B"]).escalate


def test_numeric_compares_values_not_strings():
    p = "A shop sells 3 boxes at $400 each and 50 more. How much money in total?"
    r = check(p, ["3 x 400 = 1200, plus 50.\n#### 1250", "The answer is $1,250."])
    assert r.kind == "numeric" and r.signals["agreement"] == 1.0
    assert check(p, ["#### 1250", "The answer is 1200."]).escalate > r.escalate


def test_logprobs_raise_the_score():
    confident = check(MCQ, ["B", "B"], [[-0.02], [-0.05]])
    unsure = check(MCQ, ["B", "B"], [[-1.6], [-0.05]])
    assert unsure.escalate > confident.escalate
    assert unsure.signals["mean_logprob"] == -1.6


def test_single_answer_uses_logprobs_only():
    r = check(MCQ, ["B"], [[-0.01]])
    assert r.signals["agreement"] is None and 0 < r.escalate < 1


CODE_PROMPT = "Write a function to sum a list.\nassert sum_list([1, 2, 3]) == 6"
LOOP = "```python\ndef sum_list(xs):\n    \"\"\"Sum.\"\"\"\n    total = 0\n    for x in xs:\n        total += x  # add\n    return total\n\nprint(sum_list([1]))\n```"
LOOP_RENAMED = "Here it is:\n```python\ndef sum_list(items):\n    acc = 0\n    for it in items:\n        acc += it\n    return acc\n```\nLinear time."
BUILTIN = "```python\ndef sum_list(xs):\n    return sum(xs)\n```"


def test_code_same_program_modulo_names_comments_docstrings_demo():
    keep = required_functions(CODE_PROMPT)
    assert keep == {"sum_list"}
    a, b = analyse_code(LOOP, keep), analyse_code(LOOP_RENAMED, keep)
    assert a.parses and b.parses and code_similarity(a, b) == 1.0
    c = analyse_code(BUILTIN, keep)
    assert 0 < code_similarity(a, c) < 1.0


def test_code_signals():
    same = check(CODE_PROMPT, [LOOP, LOOP_RENAMED])
    different = check(CODE_PROMPT, [LOOP, BUILTIN])
    broken = check(CODE_PROMPT, ["```python\ndef sum_list(xs):\n    return sum(xs\n```", LOOP])
    wrong_name = check(CODE_PROMPT, ["```python\ndef total(xs):\n    return sum(xs)\n```", LOOP])
    assert same.kind == "code"
    assert same.escalate < different.escalate < broken.escalate
    assert not broken.signals["parses"] and not broken.signals["valid"]
    assert wrong_name.signals["missing_function"] and wrong_name.escalate > different.escalate


SCHEMA_RF = {"type": "json_schema", "json_schema": {"name": "p", "schema": {
    "type": "object", "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}}}


def test_json_canonical_and_schema():
    a = '{"name": "Ada", "age": 36}'
    b = '```json\n{\n  "age": 36,\n  "name": "Ada"\n}\n```'
    ok = check("Extract as JSON: Ada, 36", [a, b], response_format=SCHEMA_RF)
    assert ok.kind == "json" and ok.signals["agreement"] == 1.0 and ok.signals["valid"]
    missing = check("Extract as JSON: Ada, 36", ['{"name": "Ada"}', a], response_format=SCHEMA_RF)
    assert missing.signals["schema_errors"] and not missing.signals["valid"]
    broken = check("Extract as JSON: Ada, 36", ['{"name": "Ada", "age": 36,', a], response_format=SCHEMA_RF)
    assert not broken.signals["found"]
    assert ok.escalate < missing.escalate and ok.escalate < broken.escalate


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}}]


def _call(name, args):
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": name, "arguments": args}}]}


def test_tool_call_validity_and_agreement():
    good = _call("get_weather", json.dumps({"city": "Paris"}))
    same = check("Weather in Paris?", [good, _call("get_weather", '{"city":"Paris"}')], tools=TOOLS)
    assert same.kind == "tool" and same.signals["tool_args_valid"] and same.signals["agreement"] == 1.0
    bad_args = check("Weather in Paris?", [_call("get_weather", '{"city": '), good], tools=TOOLS)
    unknown = check("Weather in Paris?", [_call("get_time", '{}'), good], tools=TOOLS)
    assert not bad_args.signals["tool_args_valid"] and not unknown.signals["tool_args_valid"]
    assert bad_args.escalate > same.escalate and unknown.escalate > same.escalate


def test_text_compares_what_answers_add_to_the_prompt():
    q = "who sings i've got to be me"
    same = check(q, ["Sammy Davis Jr. sang it.", "It was sung by Sammy Davis Jr"])
    other = check(q, ["Frank Sinatra", "Sammy Davis Jr."])
    assert same.kind == other.kind == "text"
    assert same.signals["agreement"] > 0.5 > other.signals["agreement"]
    assert other.escalate > same.escalate


def test_refusal_and_hedging():
    q = "What is the capital of Australia?"
    base = check(q, ["Canberra.", "Canberra"])
    hedged = check(q, ["I'm not sure, but probably Canberra.", "Canberra"])
    refused = check(q, ["I'm sorry, but I can't help with that.", "Canberra"])
    assert hedged.signals["hedges"] >= 1 and refused.signals["refusal"]
    assert base.escalate < hedged.escalate and base.escalate < refused.escalate


def test_messages_request_and_message_answers():
    msgs = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": MCQ}]
    r = check(msgs, [{"role": "assistant", "content": "B"}, "B"])
    assert r.kind == "mcq" and r.signals["agreement"] == 1.0


def test_kind_detection():
    assert detect_kind(MCQ, ["B"]) == "mcq"
    assert detect_kind(CODE_PROMPT, [BUILTIN]) == "code"
    assert detect_kind("What is 12 * 7?", ["12 * 7 = 84"]) == "numeric"
    assert detect_kind("Which element has the symbol W?", ["The answer is Tungsten."]) == "text"
    assert detect_kind("Give me JSON", ['{"a": 1}']) == "json"


def test_empty_answers_rejected():
    with pytest.raises(ValueError):
        check("q", [])


def test_huge_answer_is_bounded():
    r = check(MCQ, ["x " * 500_000 + "The answer is B", "B"])
    assert r.signals["choices"][0] == "B"


def test_few_shot_continuation_is_ignored():
    p = "Q: Tom has 3 apples and buys 4. How many?\nA:"
    r = check(p, ["3 + 4 = 7. The answer is 7.\n\nQ: Ann has 2 cats. How many?\nA: The answer is 2.",
                  "He has 7 apples. The answer is 7."])
    assert r.signals["finals"] == ["7", "7"] and r.signals["agreement"] == 1.0


def test_mbpp_begin_done_and_humaneval_completion():
    mbpp = ("You are an expert Python programmer, and here is your task: Write a function to sum a list. "
            "Your code should pass these tests:\n\nassert sum_list([1, 2, 3]) == 6\n")
    r = check(mbpp, ["[BEGIN]\n'def sum_list(xs):\r\n  return sum(xs)'\n[DONE]", BUILTIN])
    assert r.signals["parses"] and r.signals["agreement"] == 1.0
    he = 'def add(a, b):\n    """Add two numbers.\n    >>> add(1, 2)\n    3\n    """\n'
    r = check(he, ["    return a + b\n", "```python\ndef add(a, b):\n    return a + b\n```"])
    assert r.kind == "code" and r.signals["parses"] and r.signals["agreement"] == 1.0


def test_latex_shorthand():
    assert same_final("\\frac12", "\\frac{1}{2}") and same_final("\\dfrac{\\sqrt3}{2}", "\\frac{\\sqrt{3}}{2}")


def test_answer_token_logprob_from_openai_entries():
    def toks(lp):
        return [{"token": "Answer", "logprob": -0.001}, {"token": ":", "logprob": -0.001},
                {"token": " 42", "logprob": lp}, {"token": "\nlorem", "logprob": -0.05}]
    p = "What is 6 * 7?"
    sure = check(p, ["Answer: 42\nlorem"], [toks(-0.02)])
    unsure = check(p, ["Answer: 42\nlorem"], [toks(-1.5)])
    assert sure.signals["answer_logprob"] == -0.02 and unsure.signals["answer_logprob"] == -1.5
    assert unsure.escalate - sure.escalate > 0.3
    assert "low_logprob" in reasons(unsure, 0.5)


@pytest.mark.parametrize("answer,letter", [
    ("I think it's B because 4 is right.", "B"), ("The correct answer is: B) 4", "B"), ("**Answer:** (C) 2", "C"),
    ("I would go with C.", "C"), ("It is A good question; the degree is 4.", "B"),
])
def test_softer_commitments(answer, letter):
    assert extract_choice(answer, mcq_options(MCQ)) == letter


def test_yes_no_answers_compare_by_verdict():
    q = "Is the Great Wall of China visible from the Moon with the naked eye?"
    assert check(q, ["No, because it is too narrow.", "Yes, because it is long."]).signals["agreement"] == 0.0
    assert check(q, ["No.", "**No** - it is far too narrow to see."]).signals["agreement"] == 1.0


@pytest.mark.parametrize("answer,final", [
    ("She sells 16 - 3 - 4 = 9 eggs at $2.\n\nTherefore, she makes $18 every day.\n\nNote: the 4 muffins are not sold.", "18"),
    ("Step 1: 3 * 4 = 12.\nStep 2: 12 + 6 = 18.\nShe has **18 apples** left, from 4 baskets.", "18"),
    ("So, 3 * 4 = 12 muffins are left.", "12"),
])
def test_unmarked_final_prefers_the_conclusion(answer, final):
    assert extract_final(answer)[0] == final


def test_multiple_choice_about_code_is_mcq():
    p = "What does this function return for 3?\n```python\ndef f(x):\n    return x * 2\n```\nA. 3\nB. 6\nC. 9\nD. 0\nAnswer:"
    r = check(p, ["B", "The answer is (B) 6"])
    assert r.kind == "mcq" and r.signals["agreement"] == 1.0
