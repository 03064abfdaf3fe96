"""What every bash driver shares through scripts/common.sh: --help from the header comment, the
device line at the start (PAST_DEVICE, nvidia-smi, torch.cuda), the code root it runs, GPUs kept
for a local judge, passage ranges, DRY_RUN for drivers without verl (merge_and_eval.sh), and the
checks that run before anything heavy (scripts/preflight.py). Nothing trains here.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import fake_nvidia_smi

REPO = Path(__file__).resolve().parent.parent
DRIVERS = sorted(p for p in (REPO / "scripts").rglob("*.sh") if p.name != "common.sh")


def run(script, env=None, args=(), cwd=REPO, timeout=300):
    full_env = {k: v for k, v in os.environ.items() if k not in ("JUDGE_URL", "JUDGE_SERVER_URL", "PAST_DETECTED")}
    full_env.update({"PYTHON": sys.executable, **(env or {})})
    return subprocess.run(["bash", str(script), *args], env=full_env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def header(script):
    lines = Path(script).read_text().splitlines()[1:]
    out = []
    for line in lines:
        if not line.startswith("#"):
            break
        out.append(re.sub(r"^# ?", "", line))
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("script", DRIVERS, ids=lambda p: str(p.relative_to(REPO / "scripts")))
def test_help_prints_the_header_comment_only(script, tmp_path):
    done = run(script, args=["--help"], cwd=tmp_path, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == header(script)
    assert done.stderr == ""  # answered before anything is detected or started
    assert "set -euo pipefail" not in done.stdout and len(done.stdout.splitlines()) >= 3
    assert f"scripts/{script.relative_to(REPO / 'scripts')}" in done.stdout  # shows how to run it


def banner(stderr):
    return next(line for line in stderr.splitlines() if "] device: " in line)


def test_device_detection_forced_by_past_device_and_printed_first():
    done = run(REPO / "scripts/train/sft.sh", {"DRY_RUN": "1", "PAST_DEVICE": "cpu", "STAGES": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == banner(done.stderr)
    assert banner(done.stderr).startswith("[sft.sh] device: cpu (PAST_DEVICE=cpu)")
    assert f"code: {REPO};" in banner(done.stderr)
    bad = run(REPO / "scripts/train/sft.sh", {"DRY_RUN": "1", "PAST_DEVICE": "tpu"})
    assert bad.returncode == 2 and "PAST_DEVICE must be cpu or gpu" in bad.stderr


def test_device_detection_without_past_device(tmp_path):
    env = {"DRY_RUN": "1", "STAGES": "1", "PAST_DEVICE": ""}
    # No GPU listed: torch.cuda.is_available() in the project's Python decides (False here).
    no_gpu = run(REPO / "scripts/train/sft.sh", {**env, "PATH": fake_nvidia_smi(tmp_path / "none", 0)})
    assert no_gpu.returncode == 0, no_gpu.stderr
    assert "device: cpu (no NVIDIA GPU: nvidia-smi lists none, torch.cuda.is_available() is False" in no_gpu.stderr
    # Two GPUs listed: gpu, and one training process per GPU.
    two = run(REPO / "scripts/train/sft.sh", {**env, "PATH": fake_nvidia_smi(tmp_path / "two", 2)})
    assert two.returncode == 0, two.stderr
    assert "device: gpu (nvidia-smi lists 2 GPU(s))" in two.stderr
    assert "--nproc_per_node=2" in two.stdout


def test_judge_gpus_are_left_out_of_training(tmp_path):
    env = {"DRY_RUN": "1", "PAST_DEVICE": "gpu", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", "JUDGE_GPUS": "6,7"}
    sft = run(REPO / "scripts/train/sft.sh", {**env, "STAGES": "1"})
    assert sft.returncode == 0, sft.stderr
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5;" in banner(sft.stderr) and "--nproc_per_node=6" in sft.stdout
    judge = run(REPO / "scripts/train/start_judge_server.sh",
                {**env, "JUDGE_BACKEND": "vllm", "JUDGE_MODEL": "Qwen/Qwen2.5-7B-Instruct", "LOG_DIR": str(tmp_path)})
    assert judge.returncode == 0, judge.stderr
    vllm = shlex.split(next(line for line in judge.stdout.splitlines() if "vllm.entrypoints" in line))
    assert "CUDA_VISIBLE_DEVICES=6,7" in vllm and vllm[vllm.index("--tensor-parallel-size") + 1] == "2"
    server = next(line for line in judge.stdout.splitlines() if "reward_server.py" in line)
    assert "--backend vllm" in server and "--base_url http://127.0.0.1:8000/v1" in server
    assert judge.stdout.splitlines()[-1] == "http://127.0.0.1:8123"
    too_many = run(REPO / "scripts/train/sft.sh", {**env, "N_GPUS_PER_NODE": "8"})
    assert too_many.returncode == 2 and "only 6 GPU(s) are free for training" in too_many.stderr


def test_a_checkout_whose_python_imports_other_code_is_refused(tmp_path):
    """A copy of the drivers without the package beside it: Python would import PaST from the
    editable install (another checkout), so the driver stops before doing anything."""
    shutil.copytree(REPO / "scripts", tmp_path / "scripts")
    done = run(tmp_path / "scripts/train/sft.sh", {"DRY_RUN": "1", "PAST_DEVICE": "cpu"})
    assert done.returncode == 2
    assert f"not from this checkout {tmp_path}" in done.stderr and "DRY_RUN [" not in done.stdout


def passages(spec):
    return subprocess.run(["bash", "-c", f'source "{REPO}/scripts/common.sh" >/dev/null 2>&1; expand_passages "$1"', "x", spec],
                          capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable, "PAST_DEVICE": "cpu"})


def test_passage_ranges():
    assert passages("0,2,5-7").stdout.split() == ["0", "2", "5", "6", "7"]
    assert passages("3").stdout.split() == ["3"] and passages("1 4").stdout.split() == ["1", "4"]
    for bad in ("a-b", "5-2", "1,,x", ""):
        done = passages(bad)
        assert done.returncode == 2 and done.stdout == "", bad


def test_merge_and_eval_dry_run_prints_and_writes_nothing(tmp_path):
    env = {"DRY_RUN": "1", "PAST_DEVICE": "cpu", "SKILL_VECTOR": "/sv/skill.safetensors", "TARGET_PASSAGES": "1,3",
           "ALPHA": "0.5", "CKPT_ROOT": str(tmp_path / "ck"), "RESULTS_DIR": str(tmp_path / "res")}
    done = run(REPO / "scripts/merge_and_eval.sh", env)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("DRY_RUN: ")]
    assert "inherit_weight.py --skill_vector /sv/skill.safetensors --alpha 0.5" in lines[0]
    assert f"--target_models {tmp_path}/ck/passage1/stage2/final {tmp_path}/ck/passage3/stage2/final" in lines[0]
    evals = [line for line in lines if "eval_loogle.eval_with_remote" in line]
    assert len(evals) == 2 and "--passage_idx 3" in evals[1] and f"--model_path {tmp_path}/ck/inherited/passage3" in evals[1]
    assert all("--max_new_tokens" not in line for line in evals)  # the budget comes from the eval set's split
    assert list(tmp_path.iterdir()) == []
    neither = run(REPO / "scripts/merge_and_eval.sh", {**env, "SKILL_VECTOR": ""})
    assert neither.returncode == 2 and "set SKILL_VECTOR, or GRPO_MODEL and GRPO_BASE_MODEL" in neither.stderr


def write_sft(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"messages": [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
                               for i in range(rows)]}).to_parquet(path)
    (path.parent / "manifest_stage2.json").write_text(json.dumps(
        {"stage": "stage2", "output": path.name, "rows": rows, "counts": {"qa": rows}, "skipped": {"unparsed": 7}}))


def test_sft_refuses_empty_data_before_verl_starts(tmp_path):
    write_sft(tmp_path / "data/passage0/stage2_sft.parquet", 0)
    (tmp_path / "ck/stage1/final").mkdir(parents=True)
    (tmp_path / "ck/stage1/final/config.json").write_text("{}")
    done = run(REPO / "scripts/train/sft.sh", {"PAST_DEVICE": "cpu", "STAGES": "2", "DATA_ROOT": str(tmp_path / "data"),
                                                 "CKPT_DIR": str(tmp_path / "ck")})
    assert done.returncode != 0
    message = done.stderr.strip().splitlines()[-1]
    assert f"{tmp_path}/data/passage0/stage2_sft.parquet has no rows" in message
    assert "SFT stage 2 of passage 0" in message and "skipped: unparsed 7" in message
    assert "Traceback" not in done.stderr and "torch.distributed.run" not in done.stderr
    assert not (tmp_path / "ck/stage2").exists()


@pytest.mark.parametrize("rows,batch,ranks,fitted", [
    (3, 4, 1, "3 1"),     # fewer rows than the batch: the rows are the batch, micro divides it
    (1, 32, 1, "1 1"),
    (9, 32, 8, "8 1"),    # one row per rank
    (100, 32, 8, "32 2"),  # enough rows: unchanged
])
def test_sft_batch_fits_the_rows(tmp_path, rows, batch, ranks, fitted):
    data = tmp_path / "stage2_sft.parquet"
    write_sft(data, rows)
    done = subprocess.run([sys.executable, REPO / "scripts/preflight.py", "sft", "--data", data, "--stage", "SFT stage 2",
                           "--batch", str(batch), "--micro", "2", "--ranks", str(ranks)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == fitted
    assert (len(lines) == 2) == (fitted != f"{batch} 2")
    if len(lines) == 2:
        assert f"{rows} rows for SFT_BATCH_SIZE {batch}" in lines[1]


def test_sft_refuses_fewer_rows_than_ranks(tmp_path):
    data = tmp_path / "stage2_sft.parquet"
    write_sft(data, 3)
    done = subprocess.run([sys.executable, REPO / "scripts/preflight.py", "sft", "--data", data, "--stage", "SFT stage 2",
                           "--batch", "32", "--micro", "2", "--ranks", "8"], capture_output=True, text=True)
    assert done.returncode == 3 and "fewer than its 8 data-parallel ranks" in done.stderr and done.stdout == ""


@pytest.mark.parametrize("prompts,batch,mini,micro,n,ranks,fitted", [
    (100, 32, 16, 4, 8, 8, (32, 16, 4)),  # the paper's setting, unchanged
    (3, 4, 4, 4, 4, 1, (3, 3, 4)),        # fewer prompts than the batch
    (5, 32, 16, 4, 8, 16, (4, 4, 2)),     # 16 ranks, groups of 8: an even batch; micro batch shrinks
    (200, 32, 16, 4, 8, 7, (28, 14, 4)),  # 7 GPUs (one kept for the judge)
])
def test_grpo_batch_fits_verl_divisibility(prompts, batch, mini, micro, n, ranks, fitted):
    sys.path.insert(0, str(REPO / "scripts"))
    from preflight import fit_grpo

    got = fit_grpo(prompts, batch, mini, micro, n, ranks)
    assert got == fitted
    b, m, u = got
    assert b <= prompts and b % m == 0 and (b * n) % ranks == 0 and (m * n) % ranks == 0 and (m * n // ranks) % u == 0
    assert fit_grpo(1, batch, mini, micro, 8, 16) is None  # 1 prompt x 8 responses cannot fill 16 ranks


def test_eval_parquet_without_questions_is_refused(tmp_path):
    eval_set = tmp_path / "data/passage2/eval.parquet"
    eval_set.parent.mkdir(parents=True)
    pd.DataFrame({"prompt": pd.Series([], dtype=object)}).to_parquet(eval_set)
    done = run(REPO / "scripts/eval/eval_sft.sh", {"PAST_DEVICE": "cpu", "passage_id": "2", "DATA_ROOT": str(tmp_path / "data"),
                                                     "MODEL_PATH": "/nonexistent", "START_JUDGE": "0"})
    assert done.returncode != 0
    assert f"{eval_set} has no questions" in done.stderr and "Traceback" not in done.stderr


def test_disk_estimate_for_a_7b_run():
    sys.path.insert(0, str(REPO / "scripts"))
    from preflight import disk_estimate

    params = 7_615_616_512  # Qwen2.5-7B-Instruct
    parts = disk_estimate(params, sft_stages=42, grpo_runs=1, inherited=20, ckpt_to_keep=1, export_dtype="fp32",
                          keep_resumable=False)
    kept = sum(p[1] for p in parts)
    assert kept == pytest.approx(params * (4 * 42 + 4 + 4 + 4 * 20))
    grpo_peak = next(p[2] for p in parts if p[0].startswith("GRPO"))
    assert grpo_peak == pytest.approx(2 * params * 16)  # a second checkpoint while the first still exists
    bf16 = disk_estimate(params, 42, 1, 20, 1, "bf16", False)
    assert sum(p[1] for p in bf16) < kept * 0.6


def test_other_nodes_wait_for_stage_1_then_stop_with_a_clear_message(tmp_path):
    """NNODES=2, node 1, stage 2: node 0 records stage 1's final model on the shared filesystem;
    when it never appears, node 1 gives up after STAGE_WAIT_S naming what to check."""
    done = run(REPO / "scripts/train/sft.sh", {"PAST_DEVICE": "cpu", "NNODES": "2", "NODE_RANK": "1", "STAGES": "2",
                                                 "MASTER_ADDR": "10.0.0.1", "STAGE_WAIT_S": "5", "CKPT_DIR": str(tmp_path)})
    assert done.returncode == 1
    assert "node 1: waiting up to 5s" in done.stderr
    assert f"{tmp_path}/stage1/final did not appear within 5s" in done.stderr and "filesystem every node sees" in done.stderr


def test_gpu_memory_estimate_for_the_7b_default():
    """Qwen2.5-7B in verl's fp32 model_dtype: 16 bytes a parameter of actor state (weights, gradients,
    Adam's two moments) and 4 of reference, sharded over the GPUs, plus vLLM's share of the GPU."""
    sys.path.insert(0, str(REPO / "scripts"))
    from preflight import GIB, gpu_memory_estimate

    params, gpu = 7_615_616_512, 80 * GIB

    def per_gpu(ranks, lora=False, param_offload=False, optimizer_offload=False):
        parts = gpu_memory_estimate(params, ranks, "fp32", "fp32", lora, param_offload, optimizer_offload, True, False,
                                    0.4, gpu)
        return dict((label.split(" (")[0], value) for label, value in parts)

    one = per_gpu(1)
    assert one["actor"] == pytest.approx(16 * params) and one["reference model"] == pytest.approx(4 * params)
    assert one["vLLM rollout"] == pytest.approx(0.4 * gpu)
    assert sum(one.values()) > gpu  # one 80 GB GPU cannot hold it
    eight = per_gpu(8)
    assert eight["actor"] == pytest.approx(2 * params) and sum(eight.values()) < gpu
    lora = per_gpu(1, lora=True)
    assert lora == {"actor": pytest.approx(4 * params), "vLLM rollout": pytest.approx(0.4 * gpu)}  # ref = actor without adapter
    offloaded = per_gpu(1, param_offload=True, optimizer_offload=True)
    assert offloaded["actor"] == 0 and sum(offloaded.values()) < gpu


def test_parameter_count_from_config_json(tiny_model, tmp_path):
    """A dir with only a config.json (or a cached hub config) is counted from its shapes: the
    count agrees with the tiny model's safetensors and with Qwen2.5-7B's published 7,615,616,512."""
    sys.path.insert(0, str(REPO / "scripts"))
    from preflight import KNOWN_PARAMETER_COUNTS, parameter_count

    config_only = tmp_path / "tiny"
    config_only.mkdir()
    shutil.copy(Path(tiny_model) / "config.json", config_only / "config.json")
    assert parameter_count(config_only) == parameter_count(tiny_model) > 0
    qwen7b = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
              "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False}
    (tmp_path / "qwen7b").mkdir()
    (tmp_path / "qwen7b/config.json").write_text(json.dumps(qwen7b))
    assert parameter_count(tmp_path / "qwen7b") == KNOWN_PARAMETER_COUNTS["Qwen/Qwen2.5-7B"] == 7_615_616_512


def test_shared_filesystem_marks(tmp_path):
    """The nodes check's protocol on real dirs: the head writes a mark, each node answers for the
    dirs where it finds it, the head must then see each answer. A node with its own (unshared)
    copy of a dir is named; every mark is removed afterwards."""
    sys.path.insert(0, str(REPO / "scripts"))
    from preflight import answer_marks, unshared_dirs, write_marks

    data, ckpt, elsewhere = tmp_path / "data", tmp_path / "ckpt", tmp_path / "node2_local" / "ckpt"
    write_marks([str(data), str(ckpt)], "t0k")
    answers = {"10.0.0.1": answer_marks([str(data), str(ckpt)], "t0k", "10.0.0.1")}
    # Node 2 mounts data, but its ckpt is a local disk: it finds no mark there.
    elsewhere.mkdir(parents=True)
    answers["10.0.0.2"] = answer_marks([str(data), str(elsewhere)], "t0k", "10.0.0.2")
    answers["10.0.0.2"][str(ckpt)] = answers["10.0.0.2"].pop(str(elsewhere))
    assert answers["10.0.0.1"] == {str(data): True, str(ckpt): True}
    problems = unshared_dirs([str(data), str(ckpt)], "t0k", answers)
    assert problems == [f"node 10.0.0.2 does not see {ckpt} (no .past_shared_check mark written there from this node)"]
    assert list(data.iterdir()) == [] and list(ckpt.iterdir()) == []
    # All shared: no problem.
    write_marks([str(data)], "t1")
    assert unshared_dirs([str(data)], "t1", {n: answer_marks([str(data)], "t1", n) for n in ("a", "b")}) == []


def common_sh(script, env=None, timeout=60):
    return subprocess.run(["bash", "-c", f'source "{REPO}/scripts/common.sh" >/dev/null 2>&1; {script}'], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHON": sys.executable, "PAST_DEVICE": "cpu", **(env or {})})


def test_stopping_a_server_pair_waits_until_every_process_has_exited():
    """eval_rows.sh's stop: a server that takes 3 s to exit after SIGTERM, with a child of its own
    (vLLM's engine), both carrying the pair's marker; wait_marked_exit returns once both are gone.
    One that ignores SIGTERM is killed after the timeout."""
    script = '''
export PAST_SERVER_PAIR=test.$$
sh -c 'trap "sleep 3; kill $child; exit 0" TERM; sleep 600 & child=$!; wait $child' &
server=$!
sleep 1; kill -TERM $server; t0=$SECONDS
wait_marked_exit "PAST_SERVER_PAIR=$PAST_SERVER_PAIR" 30
processes_marked "PAST_SERVER_PAIR=$PAST_SERVER_PAIR"; echo "left ${#run_pids[@]} after $((SECONDS - t0)) s"
sh -c 'trap "" TERM; sleep 600' &
sleep 1; kill -TERM $!
wait_marked_exit "PAST_SERVER_PAIR=$PAST_SERVER_PAIR" 2
processes_marked "PAST_SERVER_PAIR=$PAST_SERVER_PAIR"; echo "left ${#run_pids[@]}"
'''
    done = common_sh(script)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("left 0 after ") and int(first.split()[3]) >= 2
    assert second == "left 0" and "killing what did not stop within 2 s" in done.stderr


def test_generation_defaults_to_hf_on_a_gpu_without_vllm(tmp_path):
    """A GPU node whose Python lacks vLLM: data generation and implications use transformers, said
    once; with vLLM importable they use vllm."""
    blocker = tmp_path / "no_vllm"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['vllm'] = None  # as if not installed\n")
    gpu = {"DRY_RUN": "1", "PATH": fake_nvidia_smi(tmp_path / "bin", 8), "PAST_DEVICE": "", "DATA_ROOT": str(tmp_path / "d")}
    without = {**gpu, "PYTHONPATH": str(blocker)}
    for script, args in ((REPO / "scripts/gen_data/gen_sft_data.sh", ["0", "0"]),
                         (REPO / "SEAL/general-knowledge/make_implications.sh", [])):
        done = run(script, without, args=args)
        assert done.returncode == 0, done.stderr
        assert "--backend hf" in done.stdout and "--backend vllm" not in done.stdout
        assert "vLLM is not installed" in done.stderr
        with_vllm = run(script, gpu, args=args)
        assert with_vllm.returncode == 0 and "--backend vllm" in with_vllm.stdout and "vLLM is not installed" not in with_vllm.stderr


@pytest.mark.slow
def test_nodes_check_against_a_local_ray_cluster(tmp_path):
    """preflight.py nodes against a real one-node Ray cluster on loopback (declaring 2 GPUs): its
    Ray task answers for the dirs (shared, as they are one filesystem), and the settings a cluster
    cannot serve are refused: more nodes than it has, a node offering the judge's GPUs, a shell without
    the cluster's authentication token."""
    import secrets
    import signal
    import socket
    import tempfile
    import time

    from helpers import free_port

    ray_cli = Path(sys.executable).with_name("ray")
    temp_dir = tempfile.mkdtemp(prefix="/tmp/ray_")  # Ray's socket paths must stay short
    port = free_port()
    address = f"127.0.0.1:{port}"
    # Ray 2.60 turns token authentication on for a head once ~/.ray/auth_token exists (any
    # earlier ray.init writes it) while its clients stay 'disabled': one explicit mode and token for
    # the head, `ray status` and preflight.py, as a user's cluster with authentication has them.
    token_file = tmp_path / "ray_auth_token"
    token_file.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_memory_monitor_refresh_ms": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token_file)}
    env.pop("RAY_AUTH_TOKEN", None)
    head_log = tmp_path / "ray_head.log"
    # --block: the head and everything it starts live in this test's own session, stopped by its id.
    with open(head_log, "wb") as log:
        head = subprocess.Popen([ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                                 "--num-cpus=1", "--num-gpus=2", f"--temp-dir={temp_dir}", "--include-dashboard=false",
                                 "--disable-usage-stats"], stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        # Poll the GCS port, not `ray status`: one that cannot get through waits ~40 s
        # before failing, which hid why; the one `ray status` after it says why.
        deadline = time.time() + 300
        while True:
            assert head.poll() is None, f"the local Ray head exited: {head_log.read_text()[-3000:]}"
            assert time.time() < deadline, f"the local Ray head did not start in 300 s: {head_log.read_text()[-3000:]}"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        status = subprocess.run([ray_cli, "status", f"--address={address}"], capture_output=True, text=True, env=env,
                                timeout=300)
        assert status.returncode == 0, f"ray status: {status.stderr[-2000:]}\nhead: {head_log.read_text()[-3000:]}"

        def nodes(*args, env=env):
            return subprocess.run([sys.executable, REPO / "scripts/preflight.py", "nodes", "--stage", "GRPO", "--address", address,
                                   *args], capture_output=True, text=True, env=env, timeout=180)

        dirs = [str(tmp_path / "ck"), str(tmp_path / "data")]
        ok = nodes("--nnodes", "1", "--gpus_per_node", "2", "--dirs", *dirs)
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert f"1 Ray node(s), 2 GPU(s) each for training; {', '.join(dirs)} shared by all" in ok.stdout
        assert [list(Path(d).iterdir()) for d in dirs] == [[], []]  # the marks are gone
        judge = nodes("--nnodes", "1", "--gpus_per_node", "1", "--judge_gpus", "7", "--training_gpu_ids", "0", "--dirs", *dirs)
        assert judge.returncode == 3 and "may place workers on the judge's GPU(s) JUDGE_GPUS=7" in judge.stderr
        assert "CUDA_VISIBLE_DEVICES=0 ray start --head --num-gpus=1" in judge.stderr
        two = nodes("--nnodes", "2", "--gpus_per_node", "2", "--dirs", *dirs)
        assert two.returncode == 3 and "has 1 node(s), not NNODES=2" in two.stderr
        no_token = nodes("--nnodes", "1", "--gpus_per_node", "2", "--dirs", *dirs,
                         env={k: v for k, v in env.items() if not k.startswith("RAY_AUTH")})
        assert no_token.returncode == 3 and f"cannot join the Ray cluster at {address}" in no_token.stderr
        assert "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH" in no_token.stderr and "Traceback" not in no_token.stderr
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
