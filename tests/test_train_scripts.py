"""The training drivers under DRY_RUN=1: each prints its exact commands and validates its verl
overrides with Hydra `--cfg job` against the installed verl; these tests read the composed
configs back and check the values a user relies on. Nothing trains here.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "scripts" / "train"
CONFIG_BLOCK = re.compile(r"^--- composed config \[(.+?)\] ---\n(.*?)^--- end composed config \[\1\] ---$", re.M | re.S)


def dry_run(script, env=None, args=(), check=True):
    base_env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    full_env = {**base_env, "DRY_RUN": "1", "PAST_DEVICE": "cpu", "PYTHON": sys.executable, **(env or {})}
    result = subprocess.run(
        ["bash", str(script), *args], env=full_env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    if check:
        assert result.returncode == 0, f"{script.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def configs(stdout):
    """{label: composed config} for every verl launch the script printed."""
    return {label: yaml.safe_load(body) for label, body in CONFIG_BLOCK.findall(stdout)}


def plus_keys(stdout):
    return [word.split("=", 1)[0][1:] for word in stdout.split() if word.startswith("+") and "=" in word]


@pytest.fixture(scope="module")
def default_configs():
    """verl's own default configs (no overrides), to tell new keys from existing ones."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return {
            "ppo": compose(config_name="ppo_trainer"),
            "sft": compose(config_name="sft_trainer_engine"),
        }


def assert_plus_only_on_new_keys(stdout, default):
    from omegaconf import OmegaConf

    for key in plus_keys(stdout):
        assert OmegaConf.select(default, key, default="<absent>") == "<absent>", (
            f"+{key}: the key exists in verl's config, so a typo in it would slip through; drop the '+'"
        )


@pytest.fixture(scope="module")
def sft_dry(tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("ckpt") / "passage3"
    env = {"passage_id": "3", "MODEL": "/models/base", "CKPT_DIR": str(ckpt), "DATA_DIR": "/data/passage3"}
    return dry_run(TRAIN / "sft.sh", env, args=["optim.weight_decay=0.05"]), ckpt


def test_sft_dry_run_composes_both_stages(sft_dry, default_configs):
    result, ckpt = sft_dry
    cfgs = configs(result.stdout)
    assert list(cfgs) == ["sft passage 3 stage 1", "sft passage 3 stage 2"]
    s1, s2 = cfgs["sft passage 3 stage 1"], cfgs["sft passage 3 stage 2"]
    assert s1["model"]["path"] == "/models/base"
    assert s2["model"]["path"] == f"{ckpt}/stage1/final"  # stage 2 starts from stage 1's recorded result
    assert s1["data"]["train_files"] == "/data/passage3/stage1_sft.parquet"
    assert s2["data"]["train_files"] == "/data/passage3/stage2_sft.parquet"
    for stage, cfg in (("1", s1), ("2", s2)):
        assert cfg["trainer"]["default_local_dir"] == f"{ckpt}/stage{stage}"
        assert "hf_model" in cfg["checkpoint"]["save_contents"]
        assert cfg["trainer"]["resume_mode"] == "disable"
        assert cfg["trainer"]["logger"] == ["console"]
        assert cfg["optim"]["weight_decay"] == 0.05  # trailing args reach verl
        # The CPU overrides (this test forces PAST_DEVICE=cpu).
        assert cfg["trainer"]["device"] == "cpu"
        assert cfg["engine"]["strategy"] == "fsdp2"
        assert cfg["model"]["override_config"]["attn_implementation"] == "sdpa"
    assert "-m torch.distributed.run --standalone" in result.stdout
    assert_plus_only_on_new_keys(result.stdout, default_configs["sft"])


def test_sft_refuses_existing_run_dir_unless_resume(tmp_path):
    ckpt = tmp_path / "passage0"
    (ckpt / "stage1" / "global_step_4").mkdir(parents=True)
    env = {"CKPT_DIR": str(ckpt), "STAGES": "1"}
    refused = dry_run(TRAIN / "sft.sh", env, check=False)
    assert refused.returncode != 0
    assert "RESUME=1" in refused.stderr and "--- composed config" not in refused.stdout
    resumed = dry_run(TRAIN / "sft.sh", {**env, "RESUME": "1"})
    assert configs(resumed.stdout)["sft passage 0 stage 1"]["trainer"]["resume_mode"] == "auto"


def test_sft_multi_node_uses_torchrun_rendezvous(tmp_path):
    env = {"PAST_DEVICE": "gpu", "WANDB_API_KEY": "set", "NNODES": "2", "NODE_RANK": "1", "N_GPUS_PER_NODE": "8",
           "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400", "STAGES": "1", "CKPT_DIR": str(tmp_path)}
    result = dry_run(TRAIN / "sft.sh", env)
    line = next(l for l in result.stdout.splitlines() if l.startswith("DRY_RUN [sft passage 0 stage 1]"))
    for arg in ("--nnodes=2", "--nproc_per_node=8", "--node_rank=1", "--rdzv_backend=c10d",
                "--rdzv_endpoint=10.0.0.1:29400"):
        assert arg in line
    cfg = configs(result.stdout)["sft passage 0 stage 1"]
    assert cfg["trainer"]["nnodes"] == 2 and cfg["trainer"]["n_gpus_per_node"] == 8
    assert cfg["trainer"]["logger"] == ["console", "wandb"]  # wandb only when WANDB_API_KEY is set
    assert cfg["trainer"]["device"] == "cuda" and cfg["engine"]["strategy"] == "fsdp"  # GPU path untouched


def test_sft_rejects_bad_passage_id():
    result = dry_run(TRAIN / "sft.sh", {"passage_id": "x"}, check=False)
    assert result.returncode == 2 and "passage_id must be a number" in result.stderr


@pytest.fixture(scope="module")
def grpo_dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo_out")
    (out / "metrics.jsonl").write_text('{"step": 1, "data": {"critic/score/mean": 0.5}}\n')  # an earlier run's metrics, kept aside
    env = {"passage_id": "2", "DATA_DIR": "/data/passage2", "CKPT_DIR": "/ckpt/passage2", "GRPO_DIR": str(out),
           "JUDGE_URL": "http://10.1.2.3:9000", "ROLLOUT_N": "6"}
    return dry_run(TRAIN / "grpo.sh", env, args=["actor_rollout_ref.actor.clip_ratio=0.3"]), out


def test_grpo_dry_run_config(grpo_dry, default_configs):
    result, out = grpo_dry
    cfgs = configs(result.stdout)
    cfg = cfgs["grpo passage 2"]
    assert cfg["algorithm"]["adv_estimator"] == "grpo"
    assert cfg["actor_rollout_ref"]["model"]["path"] == "/ckpt/passage2/stage2/final"
    assert cfg["data"]["train_files"] == "/data/passage2/grpo.parquet"
    assert cfg["data"]["val_files"] == "/data/passage2/eval.parquet"
    reward = cfg["reward"]["custom_reward_function"]
    assert reward["path"] == str(REPO / "reward_function.py")
    assert reward["name"] == "compute_score"
    assert reward["reward_kwargs"]["judge_url"] == "http://10.1.2.3:9000"
    # The legacy top-level keys, which verl 0.9.1 ignores, stay unset.
    assert cfg["custom_reward_function"]["path"] is None and cfg["reward_model"]["reward_manager"] is None
    actor = cfg["actor_rollout_ref"]["actor"]
    assert actor["use_kl_loss"] is True and actor["kl_loss_coef"] > 0
    assert "hf_model" in actor["checkpoint"]["save_contents"]
    assert actor["clip_ratio"] == 0.3
    rollout = cfg["actor_rollout_ref"]["rollout"]
    assert rollout["n"] == 6 and rollout["name"] == "vllm"
    assert cfg["trainer"]["default_local_dir"] == str(out)
    assert cfg["trainer"]["save_freq"] > 0  # verl saves at the last step only when save_freq > 0
    # CPU overrides.
    assert cfg["trainer"]["device"] == "cpu" and actor["strategy"] == "fsdp2"
    assert rollout["enforce_eager"] is True and cfg["ray_kwargs"]["ray_init"]["num_gpus"] == 1
    assert_plus_only_on_new_keys(result.stdout, default_configs["ppo"])
    assert "reward.custom_reward_function.reward_kwargs.judge_url" in plus_keys(result.stdout)
    # verl's file logger writes every step's metrics (the reward mean) to the run dir; its path reaches
    # the Ray workers through runtime_env, and an earlier metrics.jsonl is moved aside, not truncated.
    assert cfg["trainer"]["logger"] == ["console", "file"]
    assert cfg["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]["VERL_FILE_LOGGER_PATH"] == f"{out}/metrics.jsonl"
    moved = re.escape(f"DRY_RUN: mv {out}/metrics.jsonl {out}/metrics.")
    assert re.search(rf"^{moved}\d+\.jsonl$", result.stdout, re.M)
    assert (out / "metrics.jsonl").exists()  # DRY_RUN moves nothing


def test_grpo_refuses_group_of_one():
    result = dry_run(TRAIN / "grpo.sh", {"ROLLOUT_N": "1"}, check=False)
    assert result.returncode == 2 and "ROLLOUT_N > 1" in result.stderr


def test_grpo_single_schedule(tmp_path):
    result = dry_run(TRAIN / "grpo_single.sh", {"passage_id": "1", "CKPT_DIR": "/ckpt/passage1", "GRPO_DIR": str(tmp_path / "o")})
    cfg = configs(result.stdout)["grpo passage 1"]
    assert cfg["data"]["train_batch_size"] == 8 and cfg["trainer"]["total_epochs"] == 15
    assert cfg["trainer"]["default_local_dir"] == str(tmp_path / "o")


def test_grpo_round10_dry_run_chains_rounds(tmp_path, default_configs):
    env = {"K": "2", "SOURCE_PASSAGES": "4 7 9", "TARGET_PASSAGES": "0", "CKPT_ROOT": "/ck", "DATA_ROOT": "/d",
           "ROUNDS_DIR": str(tmp_path / "r10")}
    result = dry_run(TRAIN / "grpo_round10.sh", env)
    cfgs = configs(result.stdout)
    assert list(cfgs) == ["grpo passage 4", "grpo passage 7"]
    r1, r2 = cfgs["grpo passage 4"], cfgs["grpo passage 7"]
    assert r1["actor_rollout_ref"]["model"]["path"] == "/ck/passage4/stage2/final"
    assert r2["actor_rollout_ref"]["model"]["path"] == f"{tmp_path}/r10/round2/start"
    assert r2["data"]["train_files"] == "/d/passage7/grpo.parquet"
    assert r2["trainer"]["default_local_dir"] == f"{tmp_path}/r10/round2/grpo"
    lines = [l for l in result.stdout.splitlines() if l.startswith("DRY_RUN: ")]
    skill1 = f"{tmp_path}/r10/round1/skill_vector.safetensors"
    assert any("calc_delta_and_save.py" in l and f"--grpo_model {tmp_path}/r10/round1/grpo/final" in l
               and "--base_model /ck/passage4/stage2/final" in l and f"--output {skill1}" in l for l in lines)
    assert any("inherit_weight.py" in l and f"--skill_vector {skill1}" in l
               and "--target_models /ck/passage7/stage2/final" in l
               and f"--output_dirs {tmp_path}/r10/round2/start" in l for l in lines)
    assert any("inherit_weight.py" in l and "--target_models /ck/passage0/stage2/final" in l for l in lines)
    assert_plus_only_on_new_keys(result.stdout, default_configs["ppo"])


def test_grpo_round10_needs_distinct_sources():
    result = dry_run(TRAIN / "grpo_round10.sh", {"K": "2", "SOURCE_PASSAGES": "3 3"}, check=False)
    assert result.returncode == 2 and "distinct" in result.stderr


def test_all_sft_and_sft_iter(tmp_path):
    result = dry_run(TRAIN / "all_sft.sh", {"PASSAGES": "0,2", "STAGES": "1", "MODEL": "/m", "CKPT_ROOT": str(tmp_path)})
    cfgs = configs(result.stdout)
    assert [c["data"]["train_files"] for c in cfgs.values()] == [
        str(REPO / "data/passage0/stage1_sft.parquet"), str(REPO / "data/passage2/stage1_sft.parquet")]
    assert all(c["model"]["path"] == "/m" for c in cfgs.values())

    result = dry_run(TRAIN / "sft_iter.sh", {"PASSAGES": "3,1", "MODEL": "/m", "SFT_ITER_DIR": str(tmp_path)})
    paths = [c["model"]["path"] for c in configs(result.stdout).values()]
    # passage 3 from the base model, passage 1 from passage 3's final stage-2 model.
    assert paths == ["/m", f"{tmp_path}/passage3/stage1/final", f"{tmp_path}/passage3/stage2/final",
                     f"{tmp_path}/passage1/stage1/final"]


def test_merge_data_mixes_passages(tmp_path):
    import pandas as pd

    # Shards as prepare_data writes them: a passage_id column, and a manifest written last.
    for pid in (0, 1):
        (tmp_path / f"passage{pid}").mkdir()
        pd.DataFrame({"messages": [[{"role": "user", "content": f"p{pid} q{i}"}] for i in range(3)],
                      "passage_id": [pid] * 3}).to_parquet(tmp_path / f"passage{pid}" / "stage2_sft.parquet")
        (tmp_path / f"passage{pid}" / "manifest_stage2.json").write_text(
            json.dumps({"stage": "stage2", "passage_id": pid, "output": "stage2_sft.parquet", "rows": 3}))
    env = {"PASSAGES": "0-1", "NAME": "stage2_sft", "DATA_ROOT": str(tmp_path)}
    full_env = {**os.environ, "PAST_DEVICE": "cpu", "PYTHON": sys.executable, **env}
    subprocess.run(["bash", str(TRAIN / "merge_data.sh")], env=full_env, check=True, timeout=120, capture_output=True)
    merged = pd.read_parquet(tmp_path / "merged_0-1" / "stage2_sft.parquet")
    assert sorted(m[0]["content"] for m in merged.messages) == sorted(f"p{p} q{i}" for p in (0, 1) for i in range(3))
    missing = subprocess.run(["bash", str(TRAIN / "merge_data.sh")], env={**full_env, "PASSAGES": "0-2"},
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "passage2/stage2_sft.parquet" in missing.stderr


def test_grpo_on_two_nodes_gives_workers_the_heads_address_and_only_the_token_path(tmp_path, default_configs):
    """NNODES=2: reward workers run on both nodes, so the judge URL is the head's address
    (MASTER_ADDR), never loopback, and the token travels as a file path (the token itself must
    not appear in any printed line: verl prints its config and Ray init kwargs)."""
    token_file = tmp_path / "judge_token"
    token_file.write_text("s3cr3t-t0ken-value\n")
    env = {"NNODES": "2", "MASTER_ADDR": "10.1.2.3", "JUDGE_TOKEN_FILE": str(token_file), "GRPO_DIR": str(tmp_path / "g"),
           "PAST_DEVICE": "gpu", "N_GPUS_PER_NODE": "8", "RAY_ADDRESS": "auto"}
    result = dry_run(TRAIN / "grpo.sh", env)
    cfg = configs(result.stdout)["grpo passage 0"]
    kwargs = cfg["reward"]["custom_reward_function"]["reward_kwargs"]
    assert kwargs == {"judge_url": "http://10.1.2.3:8123", "judge_token_file": str(token_file)}
    assert cfg["trainer"]["nnodes"] == 2 and cfg["trainer"]["n_gpus_per_node"] == 8
    assert "s3cr3t-t0ken-value" not in result.stdout + result.stderr
    assert_plus_only_on_new_keys(result.stdout, default_configs["ppo"])

    # The judge for it binds that address and requires the token file (written if missing).
    judge = dry_run(REPO / "scripts/train/start_judge_server.sh", {**env, "JUDGE_BACKEND": "openai"})
    server = next(line for line in judge.stdout.splitlines() if "reward_server.py" in line)
    assert "--host 10.1.2.3 --port 8123" in server and f"--auth_token_file {token_file}" in server
    assert judge.stdout.splitlines()[-1] == "http://10.1.2.3:8123"


def test_loopback_judge_with_two_nodes_is_refused():
    for script in (TRAIN / "grpo.sh", TRAIN / "start_judge_server.sh", REPO / "scripts/run_train_pipeline.sh"):
        result = dry_run(script, {"NNODES": "2", "JUDGE_URL": "http://127.0.0.1:8123", "LOOGLE": str(REPO / "demo/corpus.jsonl")},
                         check=False)
        assert result.returncode == 2, script
        assert "JUDGE_URL=http://127.0.0.1:8123 is loopback" in result.stderr and "DRY_RUN [" not in result.stdout
