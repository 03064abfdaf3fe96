"""SEAL's prompts, verbatim: the SQuAD grader as SEAL sends it to GPT-4.1, the answer prompt and the
implication prompts. The expected texts below are SEAL's templates (knowledge-incorporation/src/
utils.py and src/data_generation/make_squad_data.py of github.com/Continual-Intelligence/SEAL, MIT)
filled by hand, so any change of wording, whitespace or message layout fails here."""

from prompts import (DEFAULT_IMPLICATIONS_PROMPT, IMPLICATIONS_TEMPLATES, implications_prompt, judge_messages,
                     squad_answer_prompt, squad_question)

QUESTION = "Topic: Harbor Lighthouse\nWhen was it built?"


def test_the_squad_grader_is_seals_template_as_one_user_message():
    sent = judge_messages(QUESTION, "1871", "It was built in 1871.", "squad")
    assert sent == [{"role": "user", "content": (
        "You are a grading assistant. Your job is to determine whether a student's answer correctly answers the "
        "question based solely on the provided gold answer. Do not use any outside knowledge. The student answer can "
        "include additional information, but it must at least fully convey the gold answer and must not contradict "
        "it. Ignore style, phrasing, or extra details that do not affect correctness. Respond ONLY with 'yes' or "
        "'no'.\n\n"
        "Question: Topic: Harbor Lighthouse\nWhen was it built?\nGold answer: 1871\nStudent answer: It was built in "
        "1871.\nIs the student answer correct based solely on the gold answer? Respond 'yes' or 'no'.")}]


def test_the_default_answer_prompt_is_seals_with_its_final_newline():
    prompt = squad_answer_prompt(squad_question("Harbor Lighthouse", "When was it built?"))
    assert prompt == ("Let's answer a question directly and concisely.\n"
                      "Question: Topic: Harbor Lighthouse\nWhen was it built?\n"
                      "Answer:\n")


def test_the_default_implications_prompt_and_its_variants_are_seals():
    assert DEFAULT_IMPLICATIONS_PROMPT == "implications"
    passage = ("Harbor Lighthouse", "Built in 1871.")
    filled = {name: implications_prompt(*passage, template) for name, template in IMPLICATIONS_TEMPLATES.items()}
    body = "Passage:\nHarbor Lighthouse\nBuilt in 1871.\n\n"
    assert filled == {
        "implications": "Let's read the following passage and produce a list of implications derived directly or "
                        "indirectly from the content.\n\n" + body + "Implications:\n",
        "implications-long": "Let's read the following passage and produce a long list of implications derived "
                             "directly or indirectly from the content.\n\n" + body + "Implications:\n",
        "implications-very-long": "Let's read the following passage and produce a very long list of implications "
                                  "derived directly or indirectly from the content.\n\n" + body + "Implications:\n",
        "rewrite": "Let's read the following passage and rewrite it in a few different ways, each one separated by a "
                   "newline.\n\n" + body + "Rewritten passages:\n",
        "self-qa": "Let's read the following passage and rewrite it in a question-answer format.\n\n" + body
                   + "Question 1: ",
    }
    assert implications_prompt(*passage) == filled["implications"]
