"""The judge prompt and its strict verdict parser, on the odd replies judges really give."""

import pytest

from prompts import judge_messages, parse_verdict


def test_judge_messages_carry_question_reference_and_response():
    messages = judge_messages("Who painted it?", "Picardo", "José Luis Picardo painted it")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "Question: Who painted it?" in user
    assert "Gold answer: Picardo" in user
    assert "Response: José Luis Picardo painted it" in user
    assert "yes or no" in user  # the reply format the parser expects


def test_judge_messages_keep_braces_and_newlines_verbatim():
    messages = judge_messages("What is {x}?", "{x} = 1\n2", "{}")
    assert "What is {x}?" in messages[1]["content"] and "{x} = 1\n2" in messages[1]["content"]


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("yes", True),
        ("No", False),
        ("YES.", True),
        ("**Yes**", True),
        ("Verdict: no", False),
        ("yes\n\nThe response names the same city.", True),  # trailing explanation
        ("No. The gold answer is Paris, the response says Lyon.", False),
        ("  \n no \n", False),
        ("<think>Yes or no? The city differs, so no.</think>\nNo", False),  # reasoning judge
        ("<THINK>could be yes, could be no</THINK> yes", True),
    ],
)
def test_clear_verdicts(reply, verdict):
    assert parse_verdict(reply) is verdict


@pytest.mark.parametrize(
    "reply",
    [
        "",  # empty
        None,
        "   ",
        "yes, no",  # both words
        "Yes and no: it depends.",
        "I cannot say yes or no.",
        "Correct.",  # neither word
        "The response matches the gold answer.",
        "Yesterday at noon",  # the words only inside longer words
        "nope",
        " Ab directising Def discrimovising Def",  # what the random tiny model says
    ],
)
def test_unclear_replies_are_not_verdicts(reply):
    assert parse_verdict(reply) is None
