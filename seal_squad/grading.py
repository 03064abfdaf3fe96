"""Answers -> verdicts through the project's judge server, with its SQuAD grader (SEAL's rule).

The grader sees the question as the model saw it (with its "Topic:" line), the gold answer and
the whole answer, stripped (utils.graded_response: the GRPO reward grades the same text), and
answers yes or no (GPT-4.1 in SEAL's runs; the judge server's lexical backend offline). An empty answer is wrong and never sent, as in SEAL; a reply that is no verdict
counts as wrong (the server scores it 0).
"""

from judge import JudgeClient
from utils import graded_response

GRADER = "squad"


def grade(client, questions, references, answers):
    """One bool per answer. `client` is a judge.JudgeClient; all non-empty answers go in one request."""
    if not len(questions) == len(references) == len(answers):
        raise ValueError(f"{len(questions)} questions, {len(references)} references, {len(answers)} answers")
    verdicts = [False] * len(answers)
    graded = [graded_response(a, GRADER) for a in answers]
    sent = [i for i, a in enumerate(graded) if a]
    items = [{"question": questions[i], "reference": references[i], "response": graded[i]} for i in sent]
    for i, result in zip(sent, client.judge(items, grader=GRADER)):
        verdicts[i] = bool(result["verdict"])
    return verdicts


def make_client(url, token_file=None):
    """A JudgeClient, checked to answer and to know the SQuAD grader; returns (client, its /health)."""
    client = JudgeClient(url, token_file=token_file)
    health = client.health()
    graders = health.get("graders")
    if graders is not None and GRADER not in graders:
        raise ValueError(f"the judge at {client.url} has no {GRADER!r} grader (it has {graders}); update reward_server.py")
    return client, health
