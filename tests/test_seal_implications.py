"""SEAL/general-knowledge/make_implications.py with the hf backend on the tiny model: k raw samples
per passage in SEAL's schema with its .meta, a prompt from a file, and resuming after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import squad_fixture
from prompts import ANSWER_FIELDS, IMPLICATIONS_TEMPLATES, implications_prompt, load_prompt_template, squad_answer_prompt, squad_question

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "SEAL" / "general-knowledge" / "make_implications.py"


def command(passages, output, model, *extra):
    return [sys.executable, str(SCRIPT), "--input", str(passages), "--output", str(output), "--model", str(model), *map(str, extra)]


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture
def passages(tmp_path):
    path = tmp_path / "passages.json"
    path.write_text(json.dumps(squad_fixture.passages()))
    return path


def test_k_samples_per_passage_in_seals_schema(passages, tiny_model_fp32, tmp_path):
    out = tmp_path / "implications.json"
    done = run(command(passages, out, tiny_model_fp32, "--k", 2, "--max_new_tokens", 12, "--chunk_passages", 4))
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert [{k: r[k] for k in ("title", "context", "questions")} for r in rows] == squad_fixture.passages()
    assert all(len(r["completions"]) == 2 and r["completions"][0] != r["completions"][1] for r in rows)
    assert rows[0]["prompt"] == implications_prompt(rows[0]["title"], rows[0]["context"], IMPLICATIONS_TEMPLATES["implications"])
    meta = json.loads(Path(f"{out}.meta").read_text())
    assert {k: meta[k] for k in ("model", "temperature", "top_p", "max_tokens", "n", "k")} == {
        "model": str(tiny_model_fp32), "temperature": 1.0, "top_p": 0.95, "max_tokens": 12, "n": 6, "k": 2}
    assert not Path(f"{out}.partial.jsonl").exists()
    # A finished output is not replaced without --overwrite.
    again = run(command(passages, out, tiny_model_fp32))
    assert again.returncode == 2 and "exists" in again.stderr


def test_prompt_from_a_file(passages, tiny_model_fp32, tmp_path):
    template = tmp_path / "seal_prompt.txt"
    template.write_text("Passage:\n{title}\n{context}\n\nWhat follows from it:\n")
    out = tmp_path / "implications.json"
    done = run(command(passages, out, tiny_model_fp32, "--k", 1, "--max_new_tokens", 4, "--prompt_file", template))
    assert done.returncode == 0, done.stderr
    row = json.loads(out.read_text())[2]
    assert row["prompt"] == f"Passage:\n{row['title']}\n{row['context']}\n\nWhat follows from it:\n"
    assert json.loads(Path(f"{out}.meta").read_text())["prompt"] == str(template)
    # A template with a wrong placeholder is refused before anything is written.
    template.write_text("Passage: {passage}\n")
    bad = run(command(passages, tmp_path / "bad.json", tiny_model_fp32, "--prompt_file", template))
    assert bad.returncode == 2 and "exactly the placeholders {title}, {context}" in bad.stderr
    assert not list(tmp_path.glob("bad.json*"))


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_uninterrupted_output(passages, tiny_model_fp32, tmp_path):
    args = ("--k", 2, "--max_new_tokens", 160, "--chunk_passages", 1, "--seed", 11)
    reference = tmp_path / "reference.json"
    assert run(command(passages, reference, tiny_model_fp32, *args)).returncode == 0

    out = tmp_path / "killed.json"
    partial = Path(f"{out}.partial.jsonl")
    proc = subprocess.Popen(command(passages, out, tiny_model_fp32, *args), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300
    while not (partial.exists() and len(partial.read_text().splitlines()) >= 2):  # header + one passage
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(partial.read_text().splitlines()) - 1
    assert 1 <= done_at_kill < 6 and not out.exists()

    # Other settings do not resume someone else's run.
    other = run(command(passages, out, tiny_model_fp32, "--k", 3, "--max_new_tokens", 160, "--chunk_passages", 1, "--seed", 11))
    assert other.returncode == 2 and "unfinished run with other settings" in other.stderr
    resumed = run(command(passages, out, tiny_model_fp32, *args))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {partial}: {done_at_kill} of 6 passages done" in resumed.stderr
    assert json.loads(out.read_text()) == json.loads(reference.read_text())
    assert not partial.exists()


@pytest.mark.parametrize("text, ok", [
    ("Q: {question}\nA:", True),
    ("{{literal}} Q: {question}\n", True),       # literal braces are doubled
    ("Q: {question} {title}", False),            # an unknown placeholder
    ("Q: {}", False),                            # a positional one
    ("Q: {question", False),                     # not a str.format template
    ("no placeholder", False),
])
def test_prompt_template_files_are_checked(tmp_path, text, ok):
    path = tmp_path / "answer.txt"
    path.write_text(text)
    if ok:
        assert load_prompt_template(path, ANSWER_FIELDS) == text
        assert squad_answer_prompt("Topic: T\nWhy?", text).count("Topic: T\nWhy?") == 1
    else:
        with pytest.raises(ValueError, match=str(path)):
            load_prompt_template(path, ANSWER_FIELDS)
    with pytest.raises(FileNotFoundError, match="prompt template file not found"):
        load_prompt_template(tmp_path / "missing.txt", ANSWER_FIELDS)


def test_questions_are_asked_with_their_topic():
    assert squad_question("Super Bowl 50", "Who won?") == "Topic: Super Bowl 50\nWho won?"
    prompt = squad_answer_prompt(squad_question("Super Bowl 50", "Who won?"))
    assert prompt.endswith("Topic: Super Bowl 50\nWho won?\nAnswer:\n")
