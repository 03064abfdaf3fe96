"""Every driver that trains, generates or evaluates, under DRY_RUN=1 on a simulated 8-GPU node (a
fake `nvidia-smi` on PATH listing 8 GPUs of 80 GB, no PAST_DEVICE, no CUDA_VISIBLE_DEVICES, as on
a stock GPU node), the LooGLE pipeline on two such nodes: each exits 0, and every verl launch it
prints was validated by Hydra (`--cfg job`; run_verl prints the composed config only then). The
runs are shared by the tests below; the pipelines cover the drivers they call, so each distinct
verl config is composed about once. Settings a GPU node must refuse (NNODES=2 without a Ray
cluster or MASTER_ADDR, a 7B GRPO on one GPU) stop before any command.
"""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from helpers import fake_nvidia_smi

REPO = Path(__file__).resolve().parent.parent
GK = REPO / "SEAL" / "general-knowledge"
CONFIG_BLOCK = re.compile(r"^--- composed config \[(.+?)\] ---\n(.*?)^--- end composed config \[\1\] ---$", re.M | re.S)
# Drivers that neither train, generate nor evaluate: set-up, the CPU demos, data mixing, checkpoint
# conversion, the results table.
NOT_ON_THE_GPU_PATH = {"common.sh", "setup.sh", "test.sh", "quickstart.sh", "merge_data.sh", "merge_fsdp_to_hf.sh",
                       "results_table.sh"}


@pytest.fixture(scope="module")
def gpu_node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_node")
    path = fake_nvidia_smi(tmp / "bin", 8)
    drop = ("PAST_DEVICE", "PAST_DETECTED", "CUDA_VISIBLE_DEVICES", "JUDGE_URL", "JUDGE_SERVER_URL", "WANDB_API_KEY",
            "NNODES", "N_GPUS_PER_NODE", "RAY_ADDRESS", "MASTER_ADDR")
    base = {k: v for k, v in os.environ.items() if k not in drop}
    base.update({"PATH": path, "PYTHON": sys.executable, "DRY_RUN": "1", "LOG_DIR": str(tmp / "logs")})

    def run(script, settings=None, args=()):
        env = {**base, **{k: str(v) for k, v in (settings or {}).items()}}
        return subprocess.run(["bash", str(script), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)

    return tmp, run


@pytest.fixture(scope="module")
def runs(gpu_node):
    """{name: CompletedProcess} of the dry runs every test here reads."""
    tmp, run = gpu_node
    roots = lambda name: {"DATA_ROOT": tmp / name / "data", "CKPT_ROOT": tmp / name / "ck",  # noqa: E731
                          "RESULTS_DIR": tmp / name / "res"}
    jobs = {
        "loogle pipeline, 2 nodes": lambda: run(REPO / "scripts/run_train_pipeline.sh", {
            **roots("loogle"), "NNODES": 2, "N_GPUS_PER_NODE": 8, "MASTER_ADDR": "10.1.2.3", "RAY_ADDRESS": "auto",
            "JUDGE_BACKEND": "openai", "LOOGLE": REPO / "demo/corpus.jsonl", "SOURCE_PASSAGES": 0, "TARGET_PASSAGES": 1,
            "CONTROLS": 1, "ALPHA": 0.5}),
        "squad pipeline": lambda: run(GK / "run_squad_pipeline.sh", {**roots("squad"), "K": 2}),
        "grpo_round10": lambda: run(REPO / "scripts/train/grpo_round10.sh", {
            **roots("r10"), "K": 1, "SOURCE_PASSAGES": 3, "TARGET_PASSAGES": 4, "ROUNDS_DIR": tmp / "r10/rounds"}),
        "grpo_single with LoRA": lambda: run(REPO / "scripts/train/grpo_single.sh", roots("single"),
                                             args=["actor_rollout_ref.model.lora_rank=32"]),
        "all_sft": lambda: run(REPO / "scripts/train/all_sft.sh", {**roots("all"), "PASSAGES": 0, "STAGES": 1}),
        "sft_iter": lambda: run(REPO / "scripts/train/sft_iter.sh", {**roots("iter"), "PASSAGES": 0}),
        "eval_rows": lambda: run(GK / "eval_rows.sh", {**roots("rows"), "CONDITIONS": "base"}),
        "sweep_alpha": lambda: run(REPO / "scripts/eval/sweep_alpha.sh",
                                   {**roots("sweep"), "SKILL_VECTOR": "/sv/skill.safetensors"}),
        "eval_gsm8k": lambda: run(REPO / "scripts/eval_gsm8k.sh", roots("gsm8k")),
        "test_merge": lambda: run(REPO / "scripts/test_merge.sh", roots("merge")),
        "make_implications": lambda: run(GK / "make_implications.sh", roots("impl")),
        "judge on GPU 7": lambda: run(REPO / "scripts/train/start_judge_server.sh", {
            "JUDGE_BACKEND": "vllm", "JUDGE_GPUS": 7, "JUDGE_MODEL": "Qwen/Qwen2.5-7B-Instruct"}),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: Hydra's composing is CPU-bound
        futures = {name: pool.submit(job) for name, job in jobs.items()}
    return {name: future.result() for name, future in futures.items()}


def configs(stdout):
    return [(label, yaml.safe_load(body)) for label, body in CONFIG_BLOCK.findall(stdout)]


def test_every_driver_dry_runs_on_an_8_gpu_node_with_its_configs_validated(runs):
    ran = set()
    for name, done in runs.items():
        assert done.returncode == 0, f"{name}:\n{done.stderr[-3000:]}"
        banners = re.findall(r"^\[(.+?\.sh)\] device: (.*)$", done.stderr, re.M)
        assert banners and all(device.startswith("gpu (nvidia-smi lists 8 GPU(s))") for _, device in banners), name
        ran.update(script for script, _ in banners)
        # Every verl launch printed is followed by the config Hydra composed for it.
        launches = re.findall(r"^DRY_RUN \[(.+?)\]: ", done.stdout, re.M)
        assert launches == [label for label, _ in configs(done.stdout)], name
    drivers = {p.name for p in [*(REPO / "scripts").rglob("*.sh"), *GK.glob("*.sh")]} - NOT_ON_THE_GPU_PATH
    assert drivers <= ran, f"drivers not run on the GPU node: {sorted(drivers - ran)}"
    composed = sum(len(configs(done.stdout)) for done in runs.values())
    assert composed == 14  # 4 + 1 LooGLE, 2 x (1 + 1) SQuAD, 1 round, 1 single, 1 + 2 SFT drivers


def test_loogle_pipeline_on_two_nodes(runs, gpu_node):
    """The README's two-node command: GRPO spans both nodes with the head's judge URL, rollouts
    sized to what they need; SFT on the head's GPUs; the GPU memory estimate over 16 GPUs."""
    done = runs["loogle pipeline, 2 nodes"]
    assert "judge at http://10.1.2.3:8123 (token file" in done.stdout
    cfgs = dict(configs(done.stdout))
    grpo = cfgs["grpo passage 0"]
    assert grpo["reward"]["custom_reward_function"]["reward_kwargs"]["judge_url"] == "http://10.1.2.3:8123"
    assert grpo["trainer"]["nnodes"] == 2 and grpo["trainer"]["n_gpus_per_node"] == 8
    assert grpo["trainer"]["device"] == "cuda" and grpo["actor_rollout_ref"]["rollout"]["max_model_len"] == 1024 + 512
    assert all(c["trainer"]["nnodes"] == 1 for label, c in cfgs.items() if label.startswith("sft"))
    assert "GPU memory estimate per GPU (7.62B parameters, FSDP over 16 GPU(s))" in done.stderr
    assert "--backend vllm" in done.stdout  # data generation: vLLM is importable here
    tmp, _ = gpu_node
    # CONTROLS=1: a random vector of the skill's norms, and -ALPHA x the skill, each inherited,
    # evaluated and in the table; GRPO's reward per step plotted
    ck, skill = str(tmp / "loogle" / "ck"), str(tmp / "loogle" / "ck" / "skill_vectors" / "sources_0")
    assert f"analysis.random_vector --like {skill}.safetensors --output {skill}.random.safetensors" in done.stdout
    assert f"inherit_weight.py --skill_vector {skill}.random.safetensors --alpha 0.5 --target_models {ck}/passage1/stage2/final --output_dirs {ck}/random_vector/passage1" in done.stdout
    assert f"inherit_weight.py --skill_vector {skill}.safetensors --alpha -0.5 --target_models {ck}/passage1/stage2/final --output_dirs {ck}/negated/passage1" in done.stdout
    assert "--variants base stage2 inherited random_vector negated base-context" in done.stdout
    assert f"analysis.reward_curve {ck}/passage0/grpo/metrics\\*.jsonl" in done.stdout  # the glob, quoted by show_cmd


def test_squad_pipeline_on_a_stock_gpu_node(runs, gpu_node):
    """No CUDA_VISIBLE_DEVICES (a stock node): Hydra composes every round's SFT (the raw-text dataset
    class) and GRPO (the pass-through template, the squad grader, 64-token responses) config, and
    the evaluation's groups are spread over the four GPU pairs."""
    tmp, _ = gpu_node
    done = runs["squad pipeline"]
    cfgs = configs(done.stdout)
    assert [label for label, _ in cfgs] == ["sft passage 1 stage 1", "grpo passage 0", "sft passage 2 stage 1", "grpo passage 0"]
    template = (GK / "raw_prompt.jinja").read_text()
    ck = tmp / "squad" / "ck"
    for k, (_, sft), (_, grpo) in ((1, *cfgs[0:2]), (2, *cfgs[2:4])):
        round_dir = ck / "squad_rounds" / f"round{k}"
        assert sft["data"]["custom_cls"] == {"path": "pkg://seal_squad.sft_dataset", "name": "RawTextSFTDataset"}
        assert sft["data"]["train_files"] == str(round_dir / "data" / "stage1_sft.parquet") and sft["data"]["pad_mode"] == "no_padding"
        assert sft["model"]["path"] == str(ck / "base" / "Qwen2.5-7B") and sft["model"]["lora_rank"] == 0
        assert sft["trainer"]["n_gpus_per_node"] == 8 and sft["trainer"]["device"] == "cuda"
        assert grpo["actor_rollout_ref"]["model"]["custom_chat_template"] == template
        assert grpo["actor_rollout_ref"]["model"]["path"] == str(round_dir / ("stage1/final" if k == 1 else "start"))
        assert grpo["reward"]["custom_reward_function"]["reward_kwargs"]["grader"] == "squad"
        assert grpo["data"]["max_response_length"] == 64 and grpo["actor_rollout_ref"]["rollout"]["name"] == "vllm"
        assert grpo["actor_rollout_ref"]["rollout"]["max_model_len"] == 512 + 64
        assert grpo["trainer"]["n_gpus_per_node"] == 8 and grpo["algorithm"]["adv_estimator"] == "grpo"
    v1 = ck / "squad_rounds" / "round1" / "skill_vector.safetensors"
    assert f"inherit_weight.py --skill_vector {v1} --alpha 1.0 --target_models {ck}/squad_rounds/round2/stage1/final" in done.stdout
    # The evaluation: six server groups on four pairs, in two waves; the PaST row on pair 2:3.
    groups = [line for line in done.stdout.splitlines() if line.startswith("DRY_RUN: env VLLM_GPUS=")]
    assert [re.search(r"VLLM_GPUS=(\d) TTT_GPU=(\d)", g).groups() for g in groups] == \
        [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7"), ("0", "1"), ("2", "3")]
    assert "CONDITIONS=base\\ passage\\ implications" in groups[0]
    assert "SKILL_ORDER=post" in groups[1] and "RUN_SUFFIX=_K2_a1.0_post" in groups[1] and "ALPHA=1.0" in groups[1]
    assert "SKILL_ORDER=pre" in groups[4] and "round1/skill_vector.safetensors" in groups[5]


def test_grpo_of_the_7b_default_on_one_gpu_is_refused_with_the_fixes(runs, gpu_node):
    """grpo_single.sh's default (Qwen2.5-7B, verl's fp32 model_dtype) needs ~174 GiB on its one GPU
    before activations: refused before verl starts, naming more GPUs, LoRA and offload. With LoRA
    it fits, and the estimate is printed in one line."""
    tmp, run = gpu_node
    refused = run(REPO / "scripts/train/grpo_single.sh", {"CKPT_ROOT": tmp / "refused"})
    assert refused.returncode == 1 and "DRY_RUN [" not in refused.stdout
    message = refused.stderr.strip().splitlines()[-1]
    assert message.startswith("GRPO of passage 0: about 174 GiB per GPU before activations, more than a GPU's 80 GiB")
    for fix in ("more GPUs (N_GPUS_PER_NODE, NNODES: at least 3 in all)", "actor_rollout_ref.model.lora_rank=32",
                "actor_rollout_ref.actor.fsdp_config.param_offload=True"):
        assert fix in message
    lora = runs["grpo_single with LoRA"].stderr
    assert re.search(r"^GPU memory estimate per GPU \(7\.62B parameters, FSDP over 1 GPU\(s\)\): 60\.2 GiB before"
                     r" activations \(actor \(fp32, LoRA\) 28\.4, vLLM rollout .* of 79\.6 GiB$", lora, re.M)


@pytest.mark.parametrize("script, settings, message", [
    ("scripts/train/grpo.sh", {"N_GPUS_PER_NODE": 8, "MASTER_ADDR": "10.1.2.3"}, "NNODES=2 needs the Ray cluster"),
    ("scripts/run_train_pipeline.sh", {"N_GPUS_PER_NODE": 8, "MASTER_ADDR": "10.1.2.3", "LOOGLE": REPO / "demo/corpus.jsonl"},
     "set RAY_ADDRESS"),
    ("SEAL/general-knowledge/run_squad_pipeline.sh", {"N_GPUS_PER_NODE": 8, "MASTER_ADDR": "10.1.2.3"}, "set RAY_ADDRESS"),
    ("scripts/train/sft.sh", {"N_GPUS_PER_NODE": 8}, "NNODES=2: set MASTER_ADDR to node 0's address"),
    ("scripts/train/sft.sh", {"MASTER_ADDR": "10.1.2.3", "JUDGE_GPUS": 7},
     "NNODES=2: set N_GPUS_PER_NODE, the same on every node (this node would default to its 7 free GPU(s), JUDGE_GPUS=7"),
    ("scripts/train/grpo.sh", {"RAY_ADDRESS": "auto", "MASTER_ADDR": "10.1.2.3"}, "NNODES=2: set N_GPUS_PER_NODE"),
])
def test_two_nodes_without_what_they_need_are_refused(gpu_node, script, settings, message):
    _, run = gpu_node
    done = run(REPO / script, {"NNODES": 2, "JUDGE_BACKEND": "openai", **settings})
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert "DRY_RUN" not in done.stdout
