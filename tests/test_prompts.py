"""The judge's graders' prompts: each carries the question, gold answer and response verbatim and
asks for the reply format its verdict rule reads (judge.py)."""

import pytest

from prompts import JUDGE_PROMPTS, judge_messages


@pytest.mark.parametrize("grader, roles, response_label, reply_format", [
    ("loogle", ["system", "user"], "Response", "yes or no"),
    ("squad", ["user"], "Student answer", "Respond 'yes' or 'no'"),  # SEAL sends one user message
])
def test_judge_messages_carry_question_reference_and_response(grader, roles, response_label, reply_format):
    messages = judge_messages("Who painted it?", "Picardo", "José Luis Picardo painted it", grader)
    assert [m["role"] for m in messages] == roles
    user = messages[-1]["content"]
    assert "Question: Who painted it?" in user
    assert "Gold answer: Picardo" in user
    assert f"{response_label}: José Luis Picardo painted it" in user
    assert reply_format in user  # the reply format the verdict rules expect


def test_the_default_grader_is_loogle_and_the_graders_differ():
    assert judge_messages("Q?", "A", "B") == judge_messages("Q?", "A", "B", "loogle")
    assert judge_messages("Q?", "A", "B", "squad") != judge_messages("Q?", "A", "B", "loogle")
    assert set(JUDGE_PROMPTS) == {"loogle", "squad"}


def test_judge_messages_keep_braces_and_newlines_verbatim():
    for grader in JUDGE_PROMPTS:
        messages = judge_messages("What is {x}?", "{x} = 1\n2", "{}", grader)
        assert "What is {x}?" in messages[-1]["content"] and "{x} = 1\n2" in messages[-1]["content"]


def test_unknown_grader_names_the_known_ones():
    with pytest.raises(ValueError, match="known graders are loogle, squad"):
        judge_messages("Q?", "A", "B", "trivia")
