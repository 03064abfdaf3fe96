"""The training drivers for real, on the CPU (cpu_compat), with the tiny fixture model:
sft.sh (both stages, on data the data code builds from a LooGLE sample passage),
merge_fsdp_to_hf.sh, grpo.sh (vLLM-CPU rollouts, the real judge server with its lexical
backend, reward_function.py) and two rounds of grpo_round10.sh.

Every run gets an environment marker; whatever still carries it afterwards (Ray, vLLM, workers)
is killed, pass or fail. Ray runs as a private local instance with bounded CPUs.
"""

import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from make_tiny_model import build_model

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "scripts" / "train"
PYTHON = sys.executable

pytestmark = pytest.mark.slow

SFT_ENV = {"TOTAL_STEPS": "2", "TRAIN_BATCH_SIZE": "2", "MICRO_BATCH_SIZE": "2", "MAX_LENGTH": "256", "LR": "1e-3"}
GRPO_ENV = {
    "ROLLOUT_N": "8", "TRAIN_BATCH_SIZE": "2", "PPO_MINI_BATCH_SIZE": "2", "MICRO_BATCH_SIZE": "4", "LR": "1e-4",
    "MAX_PROMPT_LENGTH": "192", "MAX_RESPONSE_LENGTH": "8", "TOTAL_STEPS": "2", "SAVE_FREQ": "2", "TEST_FREQ": "-1",
    "VAL_BEFORE_TRAIN": "False", "RAY_NUM_CPUS": "8",
}
# The tiny model, barely trained, spreads its probability over the whole vocabulary: sampling
# from its top 50 tokens (in the rollouts, through grpo.sh's trailing Hydra overrides, and when
# choosing the references) makes a shared word likely enough for rewards to vary in a group.
# vLLM then reports the raw (pre-top-k) log-probs, which the actor's log-probs must match.
ROLLOUT_TOP_K = 50
GRPO_ARGS = [f"actor_rollout_ref.rollout.top_k={ROLLOUT_TOP_K}", "actor_rollout_ref.rollout.logprobs_mode=raw_logprobs"]


def kill_marked(marker):
    """SIGKILL every process whose environment carries `marker` (Ray daemons, workers, vLLM)."""
    needle = f"PAST_TEST_RUN={marker}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def run_script(args, env, log, timeout):
    """Run a driver to completion with its output in `log`; returns (returncode, wall seconds)."""
    marker = uuid.uuid4().hex
    full_env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "RAY_ADDRESS")}
    full_env.update({"PAST_DEVICE": "cpu", "PYTHON": PYTHON, "PAST_TEST_RUN": marker, **env})
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", *map(str, args)], env=full_env, cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = "timeout"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            kill_marked(marker)
    wall = time.monotonic() - start
    print(f"{Path(args[0]).name}: {wall:.0f} s wall on CPU", file=sys.stderr)
    return returncode, wall


def assert_ran(returncode, log):
    assert returncode == 0, f"exit {returncode}; last lines of {log}:\n" + "".join(Path(log).read_text().splitlines(True)[-40:])


def weights(model_dir):
    tensors = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        tensors.update(load_file(f))
    assert tensors, f"no safetensors in {model_dir}"
    return tensors


def step_metrics(log):
    """{step: {metric: value}} from verl's console logger lines."""
    steps = {}
    for match in re.finditer(r"step:(\d+) - (.*)", Path(log).read_text()):
        metrics = {}
        for item in match.group(2).split(" - "):
            key, _, value = item.rpartition(":")
            number = re.sub(r"^np\.\w+\((.*)\)$", r"\1", value.strip())
            try:
                metrics[key] = float(number)
            except ValueError:
                pass
        steps.setdefault(int(match.group(1)), {}).update(metrics)
    return steps


def python_module(*args, timeout=600):
    subprocess.run([PYTHON, "-m", *map(str, args)], cwd=REPO, check=True, timeout=timeout,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, tiny_model, loogle_corpus):
    """data/passage{0,1}/ (SFT data of passage 0, GRPO prompts of both) built by the data code,
    with the tiny model as generator."""
    root = tmp_path_factory.mktemp("data")
    small = ["--model", tiny_model, "--backend", "hf", "--max_chunks", "2", "--chunk_tokens", "64",
             "--overlap_tokens", "8", "--max_new_tokens", "16", "--output_dir", root, "--input", loogle_corpus]
    python_module("prepare_data.generate_mixed_data", "--passages", "0", *small)
    python_module("prepare_data.generate_qa", "--passages", "0", "--format", "sft", "--proposer", "two_step", *small)
    python_module("prepare_data.generate_qa", "--passages", "0-1", "--format", "grpo", "--proposer", "two_step", *small)
    return root


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, data_root, tiny_model):
    ckpt_root = tmp_path_factory.mktemp("ckpt")
    log = ckpt_root / "sft.log"
    returncode, wall = run_script(
        [TRAIN / "sft.sh"],
        {"passage_id": "0", "BASE_MODEL": str(tiny_model), "DATA_ROOT": str(data_root), "CKPT_ROOT": str(ckpt_root), **SFT_ENV},
        log, timeout=900)
    assert_ran(returncode, log)
    return ckpt_root


def test_sft_two_stages_on_generated_data(sft_run, data_root, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for stage in (1, 2):
        rows = pd.read_parquet(data_root / "passage0" / f"stage{stage}_sft.parquet")
        assert len(rows) > 0 and "messages" in rows
    stage1, stage2 = sft_run / "passage0/stage1/final", sft_run / "passage0/stage2/final"
    assert stage2.is_symlink() and os.readlink(stage2) == "global_step_2/huggingface"
    model = AutoModelForCausalLM.from_pretrained(stage2)
    tokenizer = AutoTokenizer.from_pretrained(stage2)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Who was Picardo?"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    assert model.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] > ids["input_ids"].shape[1]
    base, w1, w2 = weights(tiny_model), weights(stage1), weights(stage2)
    assert any(not torch.equal(base[k], w1[k]) for k in base), "stage 1 did not change the base model"
    assert any(not torch.equal(w1[k], w2[k]) for k in w1), "stage 2 did not change the stage-1 model"


def test_sft_rerun_refuses_existing_run(sft_run, data_root, tiny_model, tmp_path):
    log = tmp_path / "rerun.log"
    before = os.readlink(sft_run / "passage0/stage1/final")
    returncode, _ = run_script(
        [TRAIN / "sft.sh"],
        {"passage_id": "0", "BASE_MODEL": str(tiny_model), "DATA_ROOT": str(data_root), "CKPT_ROOT": str(sft_run), **SFT_ENV},
        log, timeout=300)
    assert returncode != 0 and "RESUME=1" in log.read_text()
    assert os.readlink(sft_run / "passage0/stage1/final") == before


def test_merge_fsdp_to_hf_matches_hf_export(sft_run, tmp_path):
    step_dir = (sft_run / "passage0/stage2/final").resolve().parent
    fsdp_only = tmp_path / step_dir.name
    shutil.copytree(step_dir, fsdp_only)
    for f in (fsdp_only / "huggingface").glob("*.safetensors"):
        f.unlink()  # as saved without hf_model in checkpoint.save_contents
    log = tmp_path / "merge.log"
    returncode, _ = run_script([REPO / "scripts/merge_fsdp_to_hf.sh", fsdp_only, tmp_path / "merged"], {}, log, timeout=600)
    assert_ran(returncode, log)
    merged, exported = weights(tmp_path / "merged"), weights(step_dir / "huggingface")
    assert merged.keys() == exported.keys()
    for name, tensor in exported.items():
        # The hf_model export keeps the FSDP master dtype (float32 for SFT); the merger writes the
        # config's dtype (bfloat16): the same weights, rounded once.
        assert torch.equal(merged[name], tensor.to(merged[name].dtype)), name
    assert (tmp_path / "merged" / "tokenizer.json").exists() and not (tmp_path / "merged.partial").exists()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def judge_url(tmp_path_factory):
    """The real judge server (lexical backend), started the way users start it."""
    log_dir = tmp_path_factory.mktemp("judge")
    port = free_port()
    env = {**os.environ, "JUDGE_PORT": str(port), "LOG_DIR": str(log_dir), "PYTHON": PYTHON}
    url = subprocess.run(["bash", TRAIN / "start_judge_server.sh", "--backend", "lexical"], env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout.strip()
    yield url
    pid_file = log_dir / f"judge_server_{port}.pid"
    os.kill(int(pid_file.read_text()), signal.SIGTERM)


@pytest.fixture(scope="module")
def varied_prompts(sft_run, data_root, tmp_path_factory):
    """The data code's GRPO prompts for passage 0, each with a reference made of the words the
    tiny stage-2 model emits most, just enough of them that about half of its sampled answers
    share a word with it: the judge's rewards then vary inside a GRPO group (the tiny model
    cannot answer the real questions)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from judge import normalize_answer
    from utils import extract_answer

    model_dir = sft_run / "passage0/stage2/final"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)  # as vLLM runs it
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = pd.read_parquet(data_root / "passage0" / "grpo.parquet").head(2)
    torch.manual_seed(0)
    n = 64
    references = []
    for prompt in rows.prompt:
        ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**ids, do_sample=True, temperature=1.0, top_k=ROLLOUT_TOP_K, top_p=1.0,
                             max_new_tokens=int(GRPO_ENV["MAX_RESPONSE_LENGTH"]), num_return_sequences=n,
                             pad_token_id=tokenizer.pad_token_id)
        answers = [set(normalize_answer(extract_answer(a)).split())
                   for a in tokenizer.batch_decode(out[:, ids["input_ids"].shape[1]:], skip_special_tokens=True)]
        words = []
        for word, _ in collections.Counter(w for a in answers for w in a).most_common():
            words.append(word)
            if sum(1 for a in answers if a & set(words)) >= n / 2:
                break
        references.append(" ".join(words))
    rows = rows.assign(reward_model=[{"style": "model", "ground_truth": r} for r in references])
    varied = tmp_path_factory.mktemp("varied") / "grpo.parquet"
    rows.to_parquet(varied)
    return varied


def test_grpo_cpu_with_vllm_rollouts_and_judge(sft_run, data_root, judge_url, varied_prompts, tmp_path):
    out = tmp_path / "grpo"
    log = tmp_path / "grpo.log"
    returncode, wall = run_script(
        [TRAIN / "grpo.sh", *GRPO_ARGS],
        {"passage_id": "0", "DATA_ROOT": str(data_root), "CKPT_ROOT": str(sft_run), "OUTPUT_DIR": str(out),
         "TRAIN_FILES": str(varied_prompts), "VAL_FILES": str(varied_prompts), "JUDGE_URL": judge_url, **GRPO_ENV},
        log, timeout=900)
    assert_ran(returncode, log)
    steps = step_metrics(log)
    assert sorted(steps) == [1, 2]
    for metrics in steps.values():
        # vLLM started from dummy weights; tiny gaps mean the actor's weights really reached it.
        assert metrics["training/rollout_probs_diff_max"] < 0.05
    assert max(m["critic/score/mean"] for m in steps.values()) > 0, "the judge never rewarded a rollout"
    learning = [m for m in steps.values() if m["critic/advantages/max"] > 0]
    assert learning, "rewards never varied inside a group"
    assert all(m["actor/grad_norm"] > 0 for m in learning)
    final = out / "final"
    assert os.readlink(final) == "global_step_2/actor/huggingface"
    start, trained = weights(sft_run / "passage0/stage2/final"), weights(final)
    assert start.keys() == trained.keys()
    assert any(not torch.equal(start[k], trained[k]) for k in start), "GRPO left the model unchanged"


def test_grpo_round10_two_rounds(sft_run, data_root, judge_url, varied_prompts, tiny_tokenizer, tmp_path):
    """Round 1 on passage 0, round 2 on passage 1: round 2 must start from
    stage2(passage 1) + (rl_1 - stage2(passage 0)), checked on the weights."""
    ckpt_root, rounds_data = tmp_path / "ckpt", tmp_path / "data"
    (ckpt_root / "passage0/stage2").mkdir(parents=True)
    os.symlink(sft_run / "passage0/stage2/final", ckpt_root / "passage0/stage2/final")
    # Passage 1's stage-2 model: another tiny model (seed 1) of the same architecture; its
    # weights differ everywhere from passage 0's, which is what the check below needs.
    build_model(ckpt_root / "passage1/stage2/final", seed=1, tokenizer=tiny_tokenizer)
    for pid in (0, 1):
        (rounds_data / f"passage{pid}").mkdir(parents=True)
    shutil.copy(varied_prompts, rounds_data / "passage0/grpo.parquet")
    shutil.copy(data_root / "passage1/grpo.parquet", rounds_data / "passage1/grpo.parquet")
    out = tmp_path / "round10"
    log = tmp_path / "round10.log"
    returncode, wall = run_script(
        [TRAIN / "grpo_round10.sh", *GRPO_ARGS],
        {"K": "2", "SOURCE_PASSAGES": "0 1", "CKPT_ROOT": str(ckpt_root), "DATA_ROOT": str(rounds_data),
         "OUT_DIR": str(out), "VAL_FILES": str(varied_prompts), "JUDGE_URL": judge_url, **GRPO_ENV},
        log, timeout=1500)
    assert_ran(returncode, log)
    assert len((out / "rounds.log").read_text().splitlines()) == 2

    s1, s2 = weights(ckpt_root / "passage0/stage2/final"), weights(ckpt_root / "passage1/stage2/final")
    rl1, start2, rl2 = weights(out / "round1/grpo/final"), weights(out / "round2/start"), weights(out / "round2/grpo/final")
    skill1 = load_file(out / "round1/skill_vector.safetensors")
    assert any(not torch.equal(rl1[k], s1[k]) for k in s1), "round 1 learned nothing: the check below would be empty"
    for name in s2:
        expected = (s2[name].float() + (rl1[name].float() - s1[name].float())).to(s2[name].dtype)
        assert torch.equal(start2[name], expected), name
        assert torch.equal(skill1[name].float(), rl1[name].float() - s1[name].float()), name

    def distance(a, b):
        return sum(float((a[k].float() - b[k].float()).pow(2).sum()) for k in a) ** 0.5

    # Round 2's GRPO result lies closest to the inherited start, not to either stage-2 model.
    assert distance(rl2, start2) < min(distance(rl2, s2), distance(rl2, s1), distance(rl2, rl1))
