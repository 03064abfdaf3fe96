"""SEAL's prompts, verbatim: the SQuAD grader as SEAL sends it to GPT-4.1, the answer prompt and the
implication prompts. The expected texts below are SEAL's templates (knowledge-incorporation/src/
utils.py and src/data_generation/make_squad_data.py of github.com/Continual-Intelligence/SEAL, MIT)
filled by hand, so any change of wording, whitespace or message layout fails here. Then the one
setting per prompt (ANSWER_TEMPLATE, PROMPT_FILE) that reaches every stage of the drivers."""

import os
import re
import subprocess
import sys
from pathlib import Path

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


# --- one setting per prompt through the drivers ------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
GK = REPO / "SEAL" / "general-knowledge"


def dry_run(name, cwd, **settings):
    """A SQuAD driver under DRY_RUN=1 on a CPU: (return code, the commands it prints, stderr)."""
    env = {**os.environ, "PYTHON": sys.executable, "DRY_RUN": "1", "PAST_DEVICE": "cpu", **{k: str(v) for k, v in settings.items()}}
    done = subprocess.run(["bash", str(GK / name)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    return done.returncode, [line[len("DRY_RUN: "):] for line in done.stdout.splitlines() if line.startswith("DRY_RUN: ")], done.stderr


def test_answer_template_and_prompt_file_reach_every_stage_of_the_pipeline(tmp_path):
    """ANSWER_TEMPLATE reaches the GRPO data, the knowledge gate and (through eval_rows.sh and
    start_servers.sh) the TTT server that answers the evaluation; PROMPT_FILE reaches the
    implications of the evaluation passages and of every source round. Relative paths are made
    absolute, since the stages run in other folders."""
    (tmp_path / "answer.txt").write_text("Q: {question}\nA:")
    (tmp_path / "implications.txt").write_text("About {title}: {context}\nFacts:\n")
    prompts = {"ANSWER_TEMPLATE": "answer.txt", "PROMPT_FILE": "implications.txt"}
    rc, cmds, err = dry_run("run_squad_pipeline.sh", tmp_path, K=1, DATA_ROOT=tmp_path / "data", CKPT_ROOT=tmp_path / "ck",
                            RESULTS_DIR=tmp_path / "res", LOG_DIR=tmp_path / "logs", **prompts)
    assert rc == 0, err[-3000:]
    answer, implications = f"--answer_template {tmp_path}/answer.txt", f"--prompt_file {tmp_path}/implications.txt"
    by_script = {}
    for cmd in cmds:
        script = re.search(r"(\w+\.py)", cmd)
        if script:
            by_script.setdefault(script.group(1), []).append(cmd)
    assert len(by_script["make_implications.py"]) == 2  # the evaluation passages, round 1
    assert all(implications in c for c in by_script["make_implications.py"])
    assert len(by_script["make_source_data.py"]) == 1 and answer in by_script["make_source_data.py"][0]
    gate_answers = [c for c in by_script["knowledge_gate.py"] if "knowledge_gate.py answer " in c]
    assert len(gate_answers) == 2 and all(answer in c for c in gate_answers)  # the base and the SFT model
    rc, cmds, err = dry_run("eval_rows.sh", tmp_path, CONDITIONS="base", SQUAD_RESULTS=tmp_path / "res", **prompts)
    assert rc == 0, err
    assert [c for c in cmds if "TTT_server.py" in c][0].endswith(answer)


def test_a_missing_prompt_file_stops_the_driver_naming_the_setting(tmp_path):
    for name, setting in (("start_servers.sh", "ANSWER_TEMPLATE"), ("make_implications.sh", "PROMPT_FILE")):
        rc, cmds, err = dry_run(name, tmp_path, **{setting: "missing.txt"}, DATA_ROOT=tmp_path)
        assert rc == 2 and f"{setting}=missing.txt: no such file" in err and not cmds


def test_an_openai_judge_started_by_the_squad_drivers_is_seals_gpt_4_1_unless_judge_model_says_otherwise():
    def judge_model(**settings):
        env = {k: v for k, v in os.environ.items() if k != "JUDGE_MODEL"}
        env.update(PYTHON=sys.executable, PAST_DEVICE="cpu", **settings)
        done = subprocess.run(["bash", "-c", 'source scripts/common.sh && squad_judge_settings && echo "[${JUDGE_MODEL:-}]"'],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert judge_model(JUDGE_BACKEND="openai") == "[gpt-4.1]"
    assert judge_model(JUDGE_BACKEND="openai", JUDGE_MODEL="gpt-4.1-mini") == "[gpt-4.1-mini]"  # chosen on purpose
    assert judge_model(JUDGE_BACKEND="lexical") == "[]"
