"""The SQuAD drivers (SEAL/general-knowledge/*.sh): DRY_RUN=1 prints the commands they would run,
settings come from the environment, extra arguments reach the Python entry point, bad settings
stop before anything starts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GK = REPO / "SEAL" / "general-knowledge"


def driver(name, *args, **settings):
    env = {**os.environ, "PYTHON": sys.executable, "DRY_RUN": "1", "PAST_DEVICE": "cpu"}
    env.update({k: str(v) for k, v in settings.items()})
    return subprocess.run(["bash", str(GK / name), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def commands(done):
    assert done.returncode == 0, done.stderr
    return [line[len("DRY_RUN: "):] for line in done.stdout.splitlines() if line.startswith("DRY_RUN: ")]


@pytest.mark.parametrize("name", ["make_implications.sh", "start_servers.sh", "eval_condition.sh", "results_table.sh"])
def test_help_is_the_header(name):
    done = subprocess.run(["bash", str(GK / name), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "Settings (environment)" in done.stdout and "set -euo" not in done.stdout


def test_make_implications_selects_then_generates(tmp_path):
    cmds = commands(driver("make_implications.sh", "--prompt", "rewrite", DATA_ROOT=tmp_path, SQUAD_INPUT="dev.json",
                           SQUAD_N=7, GENERATOR="/models/base", GEN_COMPLETIONS=2))
    passages = tmp_path / "squad" / "validation_seed42_from0_n7.json"
    assert cmds[0].endswith(f"squad_data.py --input dev.json --split validation --seed 42 --start 0 --n 7 --output {passages}")
    assert f"make_implications.py --input {passages} --output {tmp_path}/squad/validation_seed42_from0_n7.implications_base.json" in cmds[1]
    assert "--model /models/base --backend hf --k 2 --temperature 1.0 --top_p 0.95 --max_new_tokens 8192" in cmds[1]
    assert cmds[1].endswith("--prompt rewrite")  # the trailing argument comes last and wins
    # Passages that exist are not selected again.
    passages.parent.mkdir(parents=True)
    passages.write_text("[]")
    assert len(commands(driver("make_implications.sh", DATA_ROOT=tmp_path, SQUAD_N=7))) == 1


def test_start_servers_with_a_skill_vector(tmp_path):
    vector = tmp_path / "skill.safetensors"
    vector.write_bytes(b"")
    base = tmp_path / "base"
    base.mkdir()
    cmds = commands(driver("start_servers.sh", "--mask_pads", BASE_MODEL=base, SKILL_VECTOR=vector, ALPHA=0.3,
                           CKPT_ROOT=tmp_path / "ck", VLLM_PORT=9001, ZMQ_PORT=9555, MAX_SEQ_LENGTH=256))
    served = tmp_path / "ck" / "seal_served" / "skill_alpha0.3"
    assert cmds[0].endswith(f"inherit_weight.py --skill_vector {vector} --alpha 0.3 --target_models {base} --output_dirs {served}")
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in cmds[1]
    assert f"--model {served} --host 127.0.0.1 --port 9001 --max-model-len 256 --enable-lora --max-lora-rank 32" in cmds[1]
    assert "--dtype float32 --enforce-eager" in cmds[1]  # on a CPU, the trainer's dtype
    assert f"TTT_server.py --vllm_url http://127.0.0.1:9001 --base_model {base} --zmq_port 9555" in cmds[2]
    assert f"--served_model {served} --skill_vector {vector} --alpha 0.3 --skill_order post" in cmds[2]
    assert cmds[2].endswith("--mask_pads")
    # Without a vector: the base model itself, no inherit step.
    plain = commands(driver("start_servers.sh", BASE_MODEL="Qwen/Qwen2.5-7B"))
    assert len(plain) == 2 and "--model Qwen/Qwen2.5-7B " in plain[0] and "--skill_vector" not in plain[1]


@pytest.mark.parametrize("settings, message", [
    ({"SKILL_VECTOR": "/no/such.safetensors"}, "no such file"),
    ({"SKILL_VECTOR": "pyproject.toml", "BASE_MODEL": "Qwen/Qwen2.5-7B"}, "BASE_MODEL must be a local model dir"),
    ({"SKILL_ORDER": "later"}, "SKILL_ORDER must be post or pre"),
])
def test_start_servers_refuses_bad_settings(settings, message):
    done = driver("start_servers.sh", **settings)
    assert done.returncode == 2 and message in done.stderr and "DRY_RUN:" not in done.stdout


def test_eval_condition_picks_the_dataset_and_refuses_unknown_conditions(tmp_path):
    for condition, dataset in [("base", "p.json"), ("passage", "p.json"), ("skill_only", "p.json"),
                               ("implications", "i.json"), ("implications_skill", "i.json")]:
        cmd = commands(driver("eval_condition.sh", "--eval_times", "3", CONDITION=condition, PASSAGES="p.json",
                              IMPLICATIONS="i.json", SQUAD_RESULTS=tmp_path, ZMQ_PORT=5556))[0]
        assert f"query_server.py --condition {condition} --dataset {dataset} --output {tmp_path}/{condition}.json" in cmd
        assert "--zmq_port 5556" in cmd and cmd.endswith("--eval_times 3")
    done = driver("eval_condition.sh", CONDITION="gpt4")
    assert done.returncode == 2 and "CONDITION must be base, passage" in done.stderr
    # A finished run is kept.
    (tmp_path / "base.json").write_text("{}")
    kept = driver("eval_condition.sh", CONDITION="base", SQUAD_RESULTS=tmp_path, DRY_RUN=0)
    assert kept.returncode == 0 and "exists" in kept.stderr


def test_results_table_driver(tmp_path):
    cmd = commands(driver("results_table.sh", "--no_published", SQUAD_RESULTS=tmp_path))[0]
    assert cmd.endswith(f"results_table.py {tmp_path} --output {tmp_path}/table.md --csv {tmp_path}/table.csv --no_published")


@pytest.mark.parametrize("name", ["run_squad_pipeline.sh", "source_round.sh", "eval_rows.sh", "quickstart.sh"])
def test_part_2_help_is_the_header(name):
    done = subprocess.run(["bash", str(GK / name), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "set -euo" not in done.stdout and "environment" in done.stdout


@pytest.mark.parametrize("name, settings, message", [
    ("run_squad_pipeline.sh", {"K": "0"}, "K must be a positive number"),
    ("run_squad_pipeline.sh", {"SWEEP_ALPHAS": "0.5 big"}, "must be numbers, got 'big'"),
    ("run_squad_pipeline.sh", {"EVAL_GPU_PAIRS": "0-1"}, "VLLM_GPU:TTT_GPU pairs"),
    ("source_round.sh", {"DRY_RUN": "0", "MODEL": "Qwen/Qwen2.5-7B", "EXCLUDE": "x.json"}, "MODEL must be a local dir"),
    ("source_round.sh", {"DRY_RUN": "0", "MODEL": "SEAL", "EXCLUDE": "no.json"}, "EXCLUDE must be the evaluation passages"),
    ("source_round.sh", {"ROUND": "2", "DRY_RUN": "0", "MODEL": "SEAL", "EXCLUDE": "pyproject.toml", "ROUNDS_DIR": "/nonexistent"},
     "round 2 starts from round 1's vector"),
])
def test_part_2_drivers_refuse_bad_settings(name, settings, message):
    done = driver(name, **settings)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "+ " not in done.stderr.replace("(see: bash", "")  # nothing ran
