"""reward_function.py as verl 0.9.1 runs it: loaded by file path through verl's own
load_reward_manager, scoring a DataProto built with the tiny tokenizer, against a judge server
started by scripts/train/start_judge_server.sh (lexical backend) on a free loopback port."""

import ast
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from prompts import solver_prompt
from reward_server import LEXICAL_THRESHOLD

REPO_ROOT = Path(__file__).resolve().parent.parent
START_SCRIPT = REPO_ROOT / "scripts" / "train" / "start_judge_server.sh"
REWARD_FUNCTION = REPO_ROOT / "reward_function.py"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_judge(log_dir, *args):
    """Run the start script on a free port; returns (url, pid, completed process)."""
    port = free_port()
    env = {**os.environ, "JUDGE_PORT": str(port), "LOG_DIR": str(log_dir), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(START_SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    pid = int((Path(log_dir) / f"judge_server_{port}.pid").read_text())
    return done.stdout.strip(), pid, done


def stop(pid):
    os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="module")
def judge_url(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("judge_logs")
    url, pid, _ = start_judge(log_dir)
    yield url
    stop(pid)


def load_module_from_path(name, path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reward_fn():
    return load_module_from_path("past_reward_function_under_test", REWARD_FUNCTION)


def grpo_config(judge_url):
    """verl's ppo_trainer config with the reward overrides the GRPO script passes."""
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose("ppo_trainer", overrides=[
            f"reward.custom_reward_function.path={REWARD_FUNCTION}",
            f"+reward.custom_reward_function.reward_kwargs.judge_url={judge_url}",
        ])


def rollout_batch(tokenizer, rows):
    """A DataProto shaped like verl's rollout output: left-padded prompts, right-padded responses.
    rows: (passage_id, question, reference, response text)."""
    from verl import DataProto

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": solver_prompt("LooGLE", q)}],
                                      add_generation_prompt=True, tokenize=False)
        for _, q, _, _ in rows
    ]
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    response_ids = [tokenizer(r + "<|im_end|>", add_special_tokens=False)["input_ids"] for _, _, _, r in rows]
    p_len, r_len = max(map(len, prompt_ids)), max(map(len, response_ids))
    prompt_t = torch.full((len(rows), p_len), pad)
    response_t = torch.full((len(rows), r_len), pad)
    mask = torch.zeros((len(rows), p_len + r_len), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        prompt_t[i, p_len - len(p):] = torch.tensor(p)
        response_t[i, : len(r)] = torch.tensor(r)
        mask[i, p_len - len(p): p_len + len(r)] = 1
    return DataProto.from_dict(
        tensors={"prompts": prompt_t, "responses": response_t, "attention_mask": mask,
                 "input_ids": torch.cat([prompt_t, response_t], dim=1)},
        non_tensors={
            "data_source": np.array(["loogle"] * len(rows), dtype=object),
            "reward_model": np.array([{"style": "model", "ground_truth": ref} for _, _, ref, _ in rows], dtype=object),
            "extra_info": np.array([{"index": i, "passage_id": pid, "question": q}
                                    for i, (pid, q, _, _) in enumerate(rows)], dtype=object),
        },
    )


@pytest.fixture(scope="module")
def loogle_qa(loogle_sample):
    rows = [json.loads(line) for line in loogle_sample.read_text().splitlines() if line.strip()]
    return [(pid, qa["Q"], qa["A"]) for pid, row in enumerate(rows) for qa in ast.literal_eval(row["qa_pairs"])]


@pytest.mark.slow
def test_verl_load_reward_manager_scores_loogle_rollouts_through_the_server(
    judge_url, tiny_tokenizer, loogle_qa, tmp_path, monkeypatch
):
    from verl.trainer.ppo.reward import load_reward_manager

    monkeypatch.chdir(tmp_path)  # verl loads the file by path from wherever the trainer runs
    manager = load_reward_manager(grpo_config(judge_url), tiny_tokenizer)
    assert manager.is_async_reward_score

    # Per question a GRPO-like group: the reference behind a <think> block and an "Answer:" prefix,
    # the same rollout again (a cache hit), and the answer of a question from another passage.
    picked = [qa for qa in loogle_qa if qa[2] != "No."][::5]
    rows = []
    for pid, q, a in picked:
        wrong = next(other for p, _, other in loogle_qa if p != pid and other != "No.")
        rollout = f"<think>I remember this part of the passage.</think>\nAnswer: {a}"
        rows += [(pid, q, a, rollout), (pid, q, a, rollout), (pid, q, a, wrong)]
    batch = rollout_batch(tiny_tokenizer, rows)

    async def score_all():
        return await asyncio.gather(*(manager.run_single(batch[i : i + 1]) for i in range(len(batch))))

    outputs = manager.loop.run_until_complete(score_all())
    scores = [o["reward_score"] for o in outputs]
    assert scores[0::3] == [1.0] * len(picked)
    assert scores[1::3] == [1.0] * len(picked)
    assert max(scores[2::3]) < LEXICAL_THRESHOLD
    extra = [o["reward_extra_info"] for o in outputs]
    assert set(extra[0]) == {"score", "acc", "judge_cached", "judge_parse_failed", "judge_latency_s"}
    assert [e["acc"] for e in extra[2::3]] == [0.0] * len(picked)
    # The two identical rollouts of a group are judged once: exactly one of each pair is a cache hit.
    assert all(e1["judge_cached"] + e2["judge_cached"] == 1.0 for e1, e2 in zip(extra[0::3], extra[1::3]))
    rm_scores = manager.assemble_rm_scores(batch, scores)
    assert rm_scores.sum(dim=1).tolist() == pytest.approx(scores)


@pytest.mark.slow
def test_unreachable_judge_raises_a_clear_error(reward_fn):
    url = f"http://127.0.0.1:{free_port()}"
    call = reward_fn.compute_score("loogle", "Paris", "Paris", {"question": "Capital?"}, judge_url=url, judge_retries=1)
    with pytest.raises(reward_fn.JudgeUnavailableError, match="failed 2 attempts.*start_judge_server.sh"):
        asyncio.run(call)


@pytest.mark.slow
def test_judge_url_comes_from_env_when_not_in_reward_kwargs(reward_fn, judge_url, monkeypatch):
    monkeypatch.setenv("JUDGE_SERVER_URL", judge_url)
    result = asyncio.run(reward_fn.compute_score("loogle", "Answer: the Eiffel Tower", "Eiffel Tower", {"question": "Which?"}))
    assert result["score"] == 1.0 and result["acc"] == 1.0 and result["judge_latency_s"] > 0


def test_rows_without_a_question_are_refused(reward_fn):
    with pytest.raises(ValueError, match="no 'question'.*extra_info"):
        asyncio.run(reward_fn.compute_score("loogle", "Paris", "Paris", {"index": 3}))


@pytest.mark.slow
def test_auth_token_is_sent_from_the_environment(reward_fn, tmp_path, monkeypatch):
    url, pid, _ = start_judge(tmp_path, "--auth_token", "t0ken")
    try:
        call = lambda: reward_fn.compute_score("loogle", "Paris", "Paris", {"question": "Capital?"}, judge_url=url)  # noqa: E731
        monkeypatch.delenv("JUDGE_AUTH_TOKEN", raising=False)
        with pytest.raises(reward_fn.JudgeRequestError, match="HTTP 401"):
            asyncio.run(call())
        monkeypatch.setenv("JUDGE_AUTH_TOKEN", "t0ken")
        assert asyncio.run(call())["score"] == 1.0
    finally:
        stop(pid)


@pytest.mark.slow
def test_start_script_reuses_a_running_server(judge_url, tmp_path):
    port = judge_url.rsplit(":", 1)[1]
    env = {**os.environ, "JUDGE_PORT": port, "LOG_DIR": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.strip() == judge_url
    assert "already running" in done.stderr


@pytest.mark.slow
def test_start_script_fails_with_the_servers_reason(tmp_path):
    env = {**os.environ, "JUDGE_PORT": str(free_port()), "LOG_DIR": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(START_SCRIPT), "--backend", "vllm"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 1 and done.stdout == ""
    assert "exited during start-up" in done.stderr and "needs --base_url" in done.stderr


def test_reward_function_imports_nothing_heavy(tmp_path):
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('rf', {str(REWARD_FUNCTION)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(sorted(m for m in ('torch', 'transformers', 'fastapi', 'uvicorn', 'reward_server', 'verl') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
