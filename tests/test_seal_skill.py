"""The skill vector in the served model (option B): start_servers.sh with SKILL_VECTOR writes
base + lambda * v with inherit_weight.py and vLLM-CPU serves it with LoRA enabled. Served
(base + lambda*v) + a TTT LoRA equals HF's merge (base + LoRA) + lambda*v to fp32 precision; the
implications_skill and skill_only conditions record what was served and trained. One vLLM server
for the module, the tiny float32 model."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
import zmq
from peft import PeftModel
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import squad_fixture
from helpers import free_port, perturbed_copy
from prompts import squad_answer_prompt, squad_question
from seal_squad.serving import VLLMServer
from seal_squad.ttt import TTTRecipe, prepare_tokenizer, train_adapter

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
GK = REPO / "SEAL" / "general-knowledge"
ALPHA = 0.5
PASSAGES = [squad_fixture.PASSAGES[1], squad_fixture.PASSAGES[2]]
COMPLETIONS = ["1. The marsh orchid flowers in late June.\n2. Its seeds need a soil fungus.",
               "The foghorn dates from 1902.\nIt could be heard eleven miles out."]


def script_env(**settings):
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "PAST_DEVICE": "cpu"}
    env.update({k: str(v) for k, v in settings.items()})
    return env


@pytest.fixture(scope="module")
def skill_vector(tmp_path_factory, tiny_model_fp32):
    root = tmp_path_factory.mktemp("skill")
    rl = perturbed_copy(tiny_model_fp32, root / "rl", seed=1, scale=2e-2)
    vector = root / "skill.safetensors"
    done = subprocess.run([sys.executable, str(REPO / "calc_delta_and_save.py"), "--grpo_model", str(rl),
                           "--base_model", str(tiny_model_fp32), "--output", str(vector)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return vector


@pytest.fixture(scope="module")
def skill_servers(tmp_path_factory, tiny_model_fp32, skill_vector, lexical_judge_url):
    root = tmp_path_factory.mktemp("seal_skill")
    settings = dict(BASE_MODEL=tiny_model_fp32, SKILL_VECTOR=skill_vector, ALPHA=ALPHA, CKPT_ROOT=root / "checkpoints",
                    LOG_DIR=root / "logs", VLLM_PORT=free_port(), ZMQ_PORT=free_port(), MAX_SEQ_LENGTH=128,
                    VLLM_MAX_MODEL_LEN=512, START_JUDGE=0, JUDGE_URL=lexical_judge_url)
    done = subprocess.run(["bash", str(GK / "start_servers.sh")], capture_output=True, text=True, env=script_env(**settings),
                          cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    settings["served"] = root / "checkpoints" / "seal_served" / f"skill_alpha{ALPHA}"
    settings["root"] = root
    yield settings
    subprocess.run(["bash", str(GK / "start_servers.sh")], capture_output=True, text=True, env=script_env(STOP=1, **settings),
                   cwd=REPO, timeout=120)


def logprobs_served(url, model, prompts, n_tokens=6):
    """Greedy tokens and their top-5 log-probs {token id: logprob} per position, from vLLM."""
    out = []
    for prompt in prompts:
        reply = httpx.post(f"{url}/v1/completions", timeout=120, json={
            "model": model, "prompt": prompt, "max_tokens": n_tokens, "temperature": 0, "logprobs": 5,
            "return_tokens_as_token_ids": True, "return_token_ids": True}).json()
        choice = reply["choices"][0]
        tops = [{int(k.split(":")[1]): v for k, v in top.items()} for top in choice["logprobs"]["top_logprobs"]]
        out.append((choice["prompt_token_ids"], choice["token_ids"], tops))
    return out


def assert_same_logprobs(model, served, tolerance=1e-4):
    worst = 0.0
    for prompt_ids, tokens, tops in served:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + tokens])).logits[0]
        logprobs = torch.log_softmax(logits.float(), -1)[len(prompt_ids) - 1 : -1]
        for position, top in enumerate(tops):
            assert tokens[position] == int(logprobs[position].argmax())  # the same greedy token
            for token, value in top.items():
                worst = max(worst, abs(float(logprobs[position, token]) - value))
    assert worst < tolerance, worst
    return worst


def test_served_skill_plus_lora_equals_the_merged_model(skill_servers, skill_vector, tiny_model_fp32, tmp_path):
    url = f"http://127.0.0.1:{skill_servers['VLLM_PORT']}"
    server = VLLMServer(url)
    assert server.model == str(skill_servers["served"])
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model_fp32))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_fp32, dtype=torch.float32)
    # A TTT LoRA trained against the plain base ("post"), as the TTT server trains it.
    sequences = [f"{PASSAGES[0]['title']}\n{line}" for line in COMPLETIONS[0].splitlines()] + \
        [f"{PASSAGES[0]['title']}\n{PASSAGES[0]['context']}"]
    train_adapter(base, tokenizer, sequences, TTTRecipe(finetune_epochs=3, max_seq_length=64), tmp_path / "adapter")
    prompts = [squad_answer_prompt(squad_question(p["title"], q["question"])) for p in PASSAGES for q in p["questions"][:2]]
    vector = load_file(skill_vector)

    def plus_skill(model):
        with torch.no_grad():
            for name, param in model.named_parameters():
                param += ALPHA * vector[name]
        return model.eval()

    # No adapter: the served baseline is the skill-only model W + lambda*v.
    worst_base = assert_same_logprobs(plus_skill(AutoModelForCausalLM.from_pretrained(tiny_model_fp32, dtype=torch.float32)),
                                      logprobs_served(url, server.model, prompts))
    # With the adapter: vLLM's x(W + lambda*v)^T + x L^T = HF merge(W + L) + lambda*v.
    with server.adapter("equivalence", tmp_path / "adapter"):
        served = logprobs_served(url, "equivalence", prompts)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_fp32, dtype=torch.float32),
                                       str(tmp_path / "adapter")).merge_and_unload()
    worst = assert_same_logprobs(plus_skill(merged), served)
    print(f"\nmax |logprob difference| over top-5: {worst_base:.2e} without adapter, {worst:.2e} with it")
    assert served != logprobs_served(url, server.model, prompts)  # the adapter does change the answers


def evaluate(condition, servers, dataset, results, expect_ok=True):
    env = script_env(CONDITION=condition, PASSAGES=dataset, IMPLICATIONS=dataset, SQUAD_RESULTS=results,
                     ZMQ_PORT=servers["ZMQ_PORT"], LOG_DIR=servers["LOG_DIR"])
    done = subprocess.run(["bash", str(GK / "eval_condition.sh"), "--finetune_epochs", "3"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=900)
    assert (done.returncode == 0) == expect_ok, done.stdout[-2000:] + done.stderr[-4000:]
    return done if not expect_ok else json.loads((Path(results) / f"{condition}.json").read_text())


def test_skill_conditions_record_what_was_served(skill_servers, skill_vector, tiny_model_fp32):
    dataset = skill_servers["root"] / "implications.json"
    dataset.write_text(json.dumps([{**p, "completions": [c], "prompt": "(written by the test)"}
                                   for p, c in zip(PASSAGES, COMPLETIONS)]))
    results = skill_servers["root"] / "results"
    runs = {c: evaluate(c, skill_servers, dataset, results) for c in ("implications_skill", "skill_only")}
    with safe_open(str(skill_vector), "pt") as f:  # calc_delta_and_save.py's, where it records one
        fingerprint = (f.metadata() or {}).get("fingerprint") or "file-sha256:" + hashlib.sha256(Path(skill_vector).read_bytes()).hexdigest()
    for condition, run_json in runs.items():
        server = run_json["server"]
        assert server["served_model"] == str(skill_servers["served"]) and server["trainer_model"] == str(tiny_model_fp32)
        assert server["skill"] == {"vector": str(skill_vector), "fingerprint": fingerprint, "alpha": ALPHA, "order": "post", "name": "v"}
        assert run_json["n_articles"] == 2 and run_json["overall"]["n_questions"] == 4
        # float32 served model: every non-zero element of lambda * v is in it
        survival = run_json["skill_survival"]
        assert survival["share"] == 1.0 and survival["served_dtypes"] == ["float32"] and survival["nonzero"] > 0
    # skill_only trains nothing: its answers are the implications_skill run's baseline answers.
    answers = {c: [q[k] for a in runs[c]["articles"] for q in a["completions"][0]["questions"]]
               for c, k in (("implications_skill", "baseline_answer"), ("skill_only", "adapter_answer"))}
    assert answers["implications_skill"] == answers["skill_only"]
    # A condition without the skill is refused by this server, before any output is written.
    refused = evaluate("implications", skill_servers, dataset, results, expect_ok=False)
    assert "plain base model" in refused.stderr and not (results / "implications.json").exists()
    # The table shows the rows with lambda and the vector's fingerprint.
    table = subprocess.run([sys.executable, str(GK / "results_table.py"), str(results), "--no_published"],
                           capture_output=True, text=True, cwd=REPO)
    assert table.returncode == 0, table.stderr
    assert f"+{ALPHA:g}*v (post; {fingerprint[:20]}; 100% kept in float32)" in table.stdout and "skill only (no TTT)" in table.stdout


def test_pre_order_trains_against_the_served_model(skill_servers, skill_vector, tiny_model_fp32, lexical_judge_url):
    port = free_port()
    ready = skill_servers["root"] / "pre.ready.json"
    proc = subprocess.Popen([sys.executable, str(GK / "TTT_server.py"), "--vllm_url", f"http://127.0.0.1:{skill_servers['VLLM_PORT']}",
                             "--base_model", str(tiny_model_fp32), "--served_model", str(skill_servers["served"]),
                             "--skill_vector", str(skill_vector), "--alpha", str(ALPHA), "--skill_order", "pre",
                             "--judge_url", lexical_judge_url, "--zmq_port", str(port), "--dtype", "float32",
                             "--adapter_dir", str(skill_servers["root"] / "pre_adapters"), "--ready_file", str(ready)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        assert info["trainer_model"] == info["served_model"] == str(skill_servers["served"])
        assert info["skill"]["order"] == "pre"
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REQ)
        sock.connect(f"tcp://127.0.0.1:{port}")
        sock.send_json({"cmd": "shutdown"})
        assert sock.recv_json() == {"status": "bye"}
        sock.close()
        ctx.term()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill() if proc.poll() is None else None
