"""The simulator's per-question difficulty model: cheap models fail on hard questions, and
their logprobs and sample agreement carry that signal; the control API says what it knows."""

from __future__ import annotations

import httpx
import openai
import pytest

from simulator import difficulty as dm
from simulator.server import MockServer
from simulator.state import MockSettings

SKILLS = {"cheap": 0.45, "strong": 0.95}


@pytest.fixture(scope="module")
def sim():
    with MockServer(MockSettings(difficulty=True, model_skill=SKILLS)) as m:
        yield m


def questions(n: int) -> list[str]:
    return [f"Question {i}: what is the value of item {i}?" for i in range(n)]


def test_cheap_fails_exactly_on_questions_harder_than_its_skill():
    qs = questions(300)
    truths = [dm.judge("cheap", q, SKILLS) for q in qs]
    assert all(t.correct == (t.difficulty < 0.45) for t in truths)
    assert all((t.answer == t.correct_answer) == t.correct for t in truths)
    share = sum(t.correct for t in truths) / len(truths)
    assert 0.3 < share < 0.6
    strong = [dm.judge("strong", q, SKILLS) for q in qs]
    assert sum(t.correct for t in strong) > sum(t.correct for t in truths)


def test_samples_agree_on_easy_questions_and_scatter_on_hard_ones():
    agree_easy = agree_hard = n_easy = n_hard = 0
    for q in questions(300):
        a = [dm.judge("cheap", q, SKILLS, sample=f"{seed}|0.8").answer for seed in range(3)]
        if dm.judge("cheap", q, SKILLS).correct:
            n_easy += 1
            agree_easy += len(set(a)) == 1
        else:
            n_hard += 1
            agree_hard += len(set(a)) == 1
    assert agree_easy == n_easy
    assert agree_hard / n_hard < 0.3


def test_logprob_of_the_answer_separates_right_from_wrong_except_near_the_edge():
    ts = [dm.judge("cheap", q, SKILLS) for q in questions(400)]
    right = [t.answer_logprob for t in ts if t.correct]
    wrong = [t.answer_logprob for t in ts if not t.correct]
    assert sum(right) / len(right) > -0.4 > sum(wrong) / len(wrong)
    assert max(wrong) <= -0.6 and min(right) >= -0.7


def test_api_returns_logprobs_and_truth(sim):
    sim.reset()
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-x")
    q = questions(40)
    for text in q:
        r = client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": text}],
                                           logprobs=True, seed=1, temperature=0.7)
        content = r.choices[0].message.content
        toks = r.choices[0].logprobs.content
        assert "".join(t.token for t in toks) == content
        t = httpx.post(sim.root_url + "/_mock/truth",
                       json={"model": "cheap", "question": text, "seed": 1, "temperature": 0.7}).json()
        assert content.startswith(f"Answer: {t['answer']}")
        assert toks[2].logprob == t["answer_logprob"]
        assert t["correct"] == (t["answer"] == t["correct_answer"])
    plain = client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": q[0]}])
    assert plain.choices[0].logprobs is None


def test_stream_carries_logprobs_per_chunk(sim):
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-x")
    text, lps = "", []
    for ch in client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "Question 7"}],
                                             logprobs=True, stream=True):
        if ch.choices and ch.choices[0].delta.content:
            text += ch.choices[0].delta.content
            lps += [e.logprob for e in ch.choices[0].logprobs.content]
    t = dm.judge("cheap", "Question 7", SKILLS)
    assert text.startswith(f"Answer: {t.answer}") and lps[2] == t.answer_logprob


def test_verifier_judges_proposed_answers(sim):
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-x")
    checked = 0
    for q in questions(60):
        t = dm.judge("cheap", q, SKILLS)
        if t.difficulty >= SKILLS["strong"] + 0.15:
            continue
        for proposed, expect in ((t.correct_answer, "YES"), (t.correct_answer + 1, "NO")):
            r = client.chat.completions.create(model="strong", messages=[
                {"role": "user", "content": q}, {"role": "assistant", "content": f"Answer: {proposed}"},
                {"role": "user", "content": f"{dm.VERIFY_PREFIX} Answer: {proposed}\nIs it correct? Reply YES or NO."}])
            assert r.choices[0].message.content == expect
            checked += 1
    assert checked > 50


def test_truth_api_rejects_bad_payloads(sim):
    r = httpx.post(sim.root_url + "/_mock/truth", json={"question": "q"})
    assert r.status_code == 400 and r.json()["error"]["message"]
