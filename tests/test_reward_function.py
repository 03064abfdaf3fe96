"""reward_function.py as verl 0.9.1 runs it: loaded by file path through verl's own
load_reward_manager, scoring a DataProto built with the tiny tokenizer, against real judge
servers on loopback (the session's lexical judge, judges started by
scripts/train/start_judge_server.sh, and in-process judges in front of a scripted backend)."""

import ast
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import free_port, load_module_from_path, scripted_backend, serve
from judge import LEXICAL_THRESHOLD
from prompts import judge_messages
from reward_server import JudgeSettings, create_app

REPO_ROOT = Path(__file__).resolve().parent.parent
START_SCRIPT = REPO_ROOT / "scripts" / "train" / "start_judge_server.sh"
REWARD_FUNCTION = REPO_ROOT / "reward_function.py"
TOKEN_ENV = ("JUDGE_TOKEN_FILE", "JUDGE_AUTH_TOKEN")


def start_judge(log_dir, *args):
    """Run the start script on a free port; returns (url, pid, log file)."""
    port = free_port()
    env = {**os.environ, "JUDGE_PORT": str(port), "LOG_DIR": str(log_dir), "PYTHON": sys.executable}
    for name in TOKEN_ENV:
        env.pop(name, None)
    done = subprocess.run(["bash", str(START_SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    pid = int((Path(log_dir) / f"judge_server_{port}.pid").read_text())
    return done.stdout.strip(), pid, Path(log_dir) / f"judge_server_{port}.log"


@pytest.fixture(scope="module")
def reward_fn():
    return load_module_from_path("past_reward_function_under_test", REWARD_FUNCTION)


@pytest.fixture
def no_token_env(monkeypatch):
    for name in TOKEN_ENV:
        monkeypatch.delenv(name, raising=False)


def grpo_config(judge_url, *reward_kwargs):
    """verl's ppo_trainer config with the reward overrides the GRPO script passes."""
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose("ppo_trainer", overrides=[
            f"reward.custom_reward_function.path={REWARD_FUNCTION}",
            f"+reward.custom_reward_function.reward_kwargs.judge_url={judge_url}",
            *(f"+reward.custom_reward_function.reward_kwargs.{kw}" for kw in reward_kwargs),
        ])


def rollout_batch(tokenizer, rows):
    """A DataProto shaped like verl's rollout output: left-padded prompts, right-padded responses.
    rows: (passage_id, question, reference, response text)."""
    from verl import DataProto

    from prompts import solver_prompt

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


def score_with_verl(config, tokenizer, rows):
    """Each row scored by verl's reward manager the way its reward loop does (all at once)."""
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(config, tokenizer)
    assert manager.is_async_reward_score
    batch = rollout_batch(tokenizer, rows)

    async def score_all():
        return await asyncio.gather(*(manager.run_single(batch[i : i + 1]) for i in range(len(batch))))

    return manager, batch, manager.loop.run_until_complete(score_all())


@pytest.fixture(scope="module")
def loogle_qa(loogle_corpus):
    rows = [json.loads(line) for line in loogle_corpus.read_text().splitlines() if line.strip()]
    return [(pid, qa["Q"], qa["A"]) for pid, row in enumerate(rows) for qa in ast.literal_eval(row["qa_pairs"])]


@pytest.mark.slow
def test_verl_load_reward_manager_scores_loogle_rollouts_through_the_server(
    lexical_judge_url, tiny_tokenizer, loogle_qa, tmp_path, monkeypatch, no_token_env
):
    monkeypatch.chdir(tmp_path)  # verl loads the file by path from wherever the trainer runs
    # Per question a GRPO-like group: the reference behind a <think> block and an "Answer:" prefix,
    # the same rollout again (a cache hit), and the answer of a question from another passage.
    picked = loogle_qa[::5]
    rows = []
    for pid, q, a in picked:
        wrong = next(other for p, _, other in loogle_qa if p != pid)
        rollout = f"<think>I remember this part of the passage.</think>\nAnswer: {a}"
        q = f"{q} (GRPO step)"  # items the session's judge has not cached for other tests
        rows += [(pid, q, a, rollout), (pid, q, a, rollout), (pid, q, a, wrong)]
    manager, batch, outputs = score_with_verl(grpo_config(lexical_judge_url), tiny_tokenizer, rows)
    scores = [o["reward_score"] for o in outputs]
    assert scores[0::3] == [1.0] * len(picked)
    assert scores[1::3] == [1.0] * len(picked)
    assert max(scores[2::3]) < 1.0 and sum(scores[2::3]) / len(picked) < LEXICAL_THRESHOLD
    extra = [o["reward_extra_info"] for o in outputs]
    assert set(extra[0]) == {"score", "acc", "judge_cached", "judge_parse_failed", "judge_latency_s"}
    assert all(set(e) == set(extra[0]) for e in extra)  # verl takes the keys from the first result
    assert [e["acc"] for e in extra[0::3]] == [1.0] * len(picked)
    # The two identical rollouts of a group are judged once: exactly one of each pair is a cache hit.
    assert all(e1["judge_cached"] + e2["judge_cached"] == 1.0 for e1, e2 in zip(extra[0::3], extra[1::3]))
    rm_scores = manager.assemble_rm_scores(batch, scores)
    assert rm_scores.sum(dim=1).tolist() == pytest.approx(scores)


def _requests(url):
    import httpx

    return httpx.get(f"{url}/metrics").json()["requests"]


@pytest.mark.slow
def test_share_of_unparsed_verdicts_reaches_verls_validation_metrics(tiny_tokenizer, tmp_path, monkeypatch, no_token_env):
    """verl 0.9.1 aggregates every key compute_score returns into val-aux/<data_source>/<key>/mean@N."""
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    def reply(body):  # the judge is cut while thinking on every answer that mentions Lyon
        prompt = body["messages"][-1]["content"]
        return "<think>Lyon or Paris? It could be yes" if "Lyon" in prompt else "yes"

    monkeypatch.chdir(tmp_path)
    backend = scripted_backend(reply=reply, finish_reason="length")
    with serve(backend) as backend_url:
        settings = JudgeSettings(backend="vllm", base_url=f"{backend_url}/v1", judge_model="judge", retry_delay=0.01)
        with serve(create_app(settings)) as judge_url:
            rows = [(0, f"Capital {i}?", "Paris", "Paris" if i % 4 else "Lyon") for i in range(8)]
            _, batch, outputs = score_with_verl(grpo_config(judge_url), tiny_tokenizer, rows)
    infos = {k: [o["reward_extra_info"][k] for o in outputs] for k in outputs[0]["reward_extra_info"]}
    assert infos["judge_parse_failed"] == [1.0, 0.0, 0.0, 0.0] * 2
    metrics = RayPPOTrainer._val_metrics_update(None, batch.non_tensor_batch["data_source"], [str(i) for i in range(8)], infos, [])
    assert metrics["val-aux/loogle/judge_parse_failed/mean@1"] == pytest.approx(0.25)
    assert metrics["val-core/loogle/acc/mean@1"] == pytest.approx(0.75)


@pytest.mark.slow
def test_the_grader_reward_kwarg_reaches_the_backend_one_request_per_grader(reward_fn, monkeypatch, no_token_env):
    backend = scripted_backend(reply="yes")
    with serve(backend) as backend_url:
        settings = JudgeSettings(backend="vllm", base_url=f"{backend_url}/v1", judge_model="judge", retry_delay=0.01)
        with serve(create_app(settings)) as judge_url:

            async def both():
                calls = [reward_fn.compute_score("squad", f"Answer: Paris {i}", "Paris", {"question": f"Topic: France\nQ{i}?"},
                                                 judge_url=judge_url, grader=grader)
                         for i in range(6) for grader in ("loogle", "squad")]
                return await asyncio.gather(*calls)

            results = asyncio.run(both())
            requests = _requests(judge_url)
    assert all(r["score"] == 1.0 and r["judge_parse_failed"] == 0.0 for r in results)
    assert requests == 2  # twelve concurrent calls, one POST /judge per grader
    sent = [c["messages"] for c in backend.state.calls]
    assert len(sent) == 12
    for i in range(6):  # loogle grades the answer after "Answer:", squad the whole output (as the evaluation)
        for grader, graded in (("loogle", f"Paris {i}"), ("squad", f"Answer: Paris {i}")):
            assert judge_messages(f"Topic: France\nQ{i}?", "Paris", graded, grader) in sent


def test_the_squad_reward_grades_exactly_what_the_squad_evaluation_grades(reward_fn, no_token_env):
    """One rollout through both paths: the GRPO reward (compute_score, grader squad) and the SQuAD
    evaluation (seal_squad.grading.grade, as the TTT server and the gate call it) send the judge the
    same text: the whole output, stripped, not what follows its last "Answer:" line."""
    from judge import JudgeClient
    from seal_squad.grading import grade

    question, output = "Topic: Harbor Lighthouse\nWho built it?", "  The keeper's notes say so.\nAnswer: Ada Byrne\n"
    backend = scripted_backend(reply="yes")
    with serve(backend) as backend_url:
        settings = JudgeSettings(backend="vllm", base_url=f"{backend_url}/v1", judge_model="judge", retry_delay=0.01)
        with serve(create_app(settings)) as judge_url:
            reward = asyncio.run(reward_fn.compute_score("squad", output, "Ada Byrne", {"question": question},
                                                         judge_url=judge_url, grader="squad"))
            client = JudgeClient(judge_url)
            evaluated = grade(client, [question], ["Ada Byrne"], [output])
            client.close()
    graded = "The keeper's notes say so.\nAnswer: Ada Byrne"
    assert [c["messages"] for c in backend.state.calls] == [judge_messages(question, "Ada Byrne", graded, "squad")]
    assert reward["score"] == 1.0 and evaluated == [True]  # the second path was the server's cache hit: the same item


@pytest.mark.slow
def test_unknown_grader_is_refused_with_the_known_ones(reward_fn, lexical_judge_url, no_token_env):
    call = reward_fn.compute_score("loogle", "Paris", "Paris", {"question": "Capital?"}, judge_url=lexical_judge_url, grader="trivia")
    with pytest.raises(reward_fn.JudgeRequestError, match="HTTP 422.*known graders are loogle, squad"):
        asyncio.run(call)


@pytest.mark.slow
def test_unreachable_judge_raises_a_clear_error(reward_fn):
    url = f"http://127.0.0.1:{free_port()}"
    call = reward_fn.compute_score("loogle", "Paris", "Paris", {"question": "Capital?"}, judge_url=url, judge_retries=1)
    with pytest.raises(reward_fn.JudgeUnavailableError, match="failed 2 attempts.*start_judge_server.sh"):
        asyncio.run(call)


@pytest.mark.slow
def test_judge_url_comes_from_env_when_not_in_reward_kwargs(reward_fn, lexical_judge_url, monkeypatch, no_token_env):
    monkeypatch.setenv("JUDGE_SERVER_URL", lexical_judge_url)
    result = asyncio.run(reward_fn.compute_score("loogle", "Answer: the Eiffel Tower", "Eiffel Tower", {"question": "Which?"}))
    assert result["score"] == 1.0 and result["acc"] == 1.0 and result["judge_latency_s"] > 0


def test_rows_without_a_question_are_refused(reward_fn):
    with pytest.raises(ValueError, match="no 'question'.*extra_info"):
        asyncio.run(reward_fn.compute_score("loogle", "Paris", "Paris", {"index": 3}))


@pytest.mark.slow
def test_token_protected_judge_is_reached_through_a_token_file_and_the_token_is_never_logged(
    reward_fn, tmp_path, monkeypatch, caplog, no_token_env
):
    token = "tok-DO-NOT-LOG-" + os.urandom(8).hex()
    token_file = tmp_path / "judge.token"
    token_file.write_text(token + "\n")
    caplog.set_level(logging.DEBUG)  # every logger of the client side, httpx and httpcore included
    url, pid, server_log = start_judge(tmp_path, "--backend", "lexical", "--auth_token_file", str(token_file),
                                       "--log_level", "debug")
    errors = []
    try:
        def call(**kwargs):
            return asyncio.run(reward_fn.compute_score("loogle", "Paris", "Paris", {"question": "Capital?"}, judge_url=url, **kwargs))

        with pytest.raises(reward_fn.JudgeRequestError, match="HTTP 401.*judge_token_file") as refused:
            call()
        errors.append(str(refused.value))
        monkeypatch.setenv("JUDGE_AUTH_TOKEN", "wrong-token")
        with pytest.raises(reward_fn.JudgeRequestError, match="HTTP 401") as wrong:
            call()
        errors.append(str(wrong.value))
        monkeypatch.delenv("JUDGE_AUTH_TOKEN")
        assert call(judge_token_file=str(token_file))["score"] == 1.0  # the reward kwarg
        monkeypatch.setenv("JUDGE_TOKEN_FILE", str(token_file))
        assert call()["score"] == 1.0  # the env variable naming the file
        monkeypatch.delenv("JUDGE_TOKEN_FILE")
        monkeypatch.setenv("JUDGE_AUTH_TOKEN", token)
        assert call()["score"] == 1.0  # the token itself in the environment
        clients = [repr(b.client) for per_loop in reward_fn._batchers.values() for b in per_loop.values()]
    finally:
        os.kill(pid, signal.SIGTERM)
    client_log = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST" in client_log  # httpx's request log lines were captured
    server_text = server_log.read_text()
    assert "bearer token required" in server_text
    for text in (client_log, server_text, *errors, *clients):
        assert token not in text


@pytest.mark.slow
def test_start_script_reuses_a_running_server(lexical_judge_url, tmp_path):
    port = lexical_judge_url.rsplit(":", 1)[1]
    env = {**os.environ, "JUDGE_PORT": port, "LOG_DIR": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.strip() == lexical_judge_url
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
        "print(sorted(m for m in ('torch', 'transformers', 'fastapi', 'uvicorn', 'aiohttp', 'reward_server', 'verl') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize("already_imported", [False, True])
def test_decoy_utils_and_judge_modules_earlier_on_sys_path_are_not_used(lexical_judge_url, tmp_path, already_imported):
    """Inside verl's workers another `utils` (or `judge`) may come first on sys.path or be imported
    already; reward_function.py must still use its own, and leave the decoys to their owners."""
    decoys = tmp_path / "decoys"
    decoys.mkdir()
    for name in ("utils", "judge"):
        (decoys / f"{name}.py").write_text(f"DECOY = {name!r}\n")
    code = textwrap.dedent(f"""
        import asyncio, importlib.util, sys
        sys.path.insert(0, {str(decoys)!r})
        if {already_imported}:
            import utils, judge
        path_before = list(sys.path)
        spec = importlib.util.spec_from_file_location("custom_module_123", {str(REWARD_FUNCTION)!r})  # as verl does
        rf = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(rf)
        result = asyncio.run(rf.compute_score("loogle", "<think>hm</think>Answer: Paris", "Paris",
                                              {{"question": "Capital?"}}, judge_url={lexical_judge_url!r}))
        import utils, judge
        print(result["score"], utils.DECOY, judge.DECOY, sys.path == path_before)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", *TOKEN_ENV)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    # scored by the real graded_response and judge client; the decoys still answer to their names,
    # and sys.path is as it was (the venv's editable install may list the repo: that stays as is)
    assert done.stdout.split() == ["1.0", "utils", "judge", "True"]


def _network_namespaces_work():
    try:
        return subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _network_namespaces_work(), reason="NOT RUN: needs unprivileged network namespaces (unshare -rn)")
def test_judge_on_a_non_loopback_address_needs_a_token_and_serves_workers_with_the_token_file(tmp_path):
    """In a network namespace of its own (a private address on its loopback device, nothing of this
    machine's network): the judge refuses that address without a token, and with one it serves a
    reward client given the token file, and answers 401 to a request without it."""
    address = "10.231.0.1"
    token_file = tmp_path / "judge.token"
    token_file.write_text("tok-namespace-test\n")
    code = textwrap.dedent(f"""
        import asyncio, importlib.util, json, subprocess, sys, time
        import httpx
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "addr", "add", "{address}/32", "dev", "lo"], check=True)
        server = [sys.executable, {str(REPO_ROOT / 'reward_server.py')!r}, "--backend", "lexical", "--host", "{address}", "--port", "8123"]
        refused = subprocess.run(server, capture_output=True, text=True)
        proc = subprocess.Popen(server + ["--auth_token_file", {str(token_file)!r}], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        url = "http://{address}:8123"
        try:
            for _ in range(240):
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.25)
            spec = importlib.util.spec_from_file_location("rf", {str(REWARD_FUNCTION)!r})
            rf = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(rf)
            score = asyncio.run(rf.compute_score("loogle", "Paris", "Paris", {{"question": "Capital?"}}, judge_url=url,
                                                 judge_token_file={str(token_file)!r}))["score"]
            anonymous = httpx.post(url + "/judge", json={{"items": [{{"question": "q", "reference": "r", "response": "r"}}]}}).status_code
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        print(json.dumps({{"refused": refused.returncode, "why": refused.stderr, "score": score, "anonymous": anonymous}}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_ENV}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(["unshare", "-rn", sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["refused"] == 2 and f"refusing to listen on {address} without a bearer token" in outcome["why"]
    assert outcome["score"] == 1.0 and outcome["anonymous"] == 401
