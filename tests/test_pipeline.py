"""End to end: the README's first command, `bash scripts/quickstart.sh`, as a user runs it: in a
fresh clone of the commit under test, in a folder with nothing beside it, reusing the test
environment (PAST_VENV) whose editable install points at another checkout. One quickstart-sized
run serves several checks: it is interrupted during GRPO like a user's Ctrl-C, then rerun; its
data are the demo's with fewer stage-2 rows per passage than SFT_BATCH_SIZE (counted from the
manifests, not hoped for).

Checks what a user would: the clone runs its own code; the interrupted run leaves no judge
server and no Ray process behind; the rerun does not redo the finished SFT stages; the small
stage-2 sets train with a fitted batch; no finished stage keeps FSDP shards or optimizer state;
the inherited targets are exactly stage2(target) + (rl - stage2(source)); every variant has its
eval file and the table is the mean of the per-question verdicts; the last line says what the
numbers mean. The quick tests below check that a pipeline without a configured LLM judge stops
before its data stage.
"""

import csv
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from helpers import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE, TARGETS = 0, (1, 2)
VARIANTS = ("base", "stage2", "inherited", "base-context")
SFT_BATCH_SIZE = 4  # demo/quickstart.env
# Fewer stage-2 rows per passage than SFT_BATCH_SIZE: the cloze proposer asks one question per
# chunk, and at most 3 chunks are used.
SMALL_DATA = {"MAX_CHUNKS": "3", "QUESTIONS_PER_CHUNK": "1"}
RESUMABLE = re.compile(r"^(model|optim|extra_state)_world_size_\d+_rank_\d+\.pt$")


def judge_answers(url):
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except OSError:
        return False


def processes_of_run(quickstart_dir):
    """Processes started by this run, whatever their name or process group (Ray's gcs_server,
    raylet and workers, vLLM engines, the judge): they all inherit QUICKSTART_DIR."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.environ().get("QUICKSTART_DIR") == str(quickstart_dir):
                found.append(" ".join(proc.info["cmdline"] or [])[:120])
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def wait_for_line(log_path, needle, proc, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if needle in log_path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            pytest.fail(f"quickstart exited ({proc.returncode}) before '{needle}':\n{log_path.read_text()[-4000:]}")
        time.sleep(2)
    pytest.fail(f"'{needle}' not seen within {timeout_s} s:\n{log_path.read_text()[-4000:]}")


def weights(model_dir):
    tensors = {}
    for shard in sorted(Path(model_dir).resolve().glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def pth_files():
    site = Path(sysconfig.get_paths()["purelib"])
    return {p.name: p.read_text() for p in site.glob("*.pth")}


def user_env(**extra):
    """The environment of a user's shell: no PYTHON/PYTHONPATH pointing into the test checkout."""
    env = {k: v for k, v in os.environ.items() if k not in (
        "PYTHON", "PYTHONPATH", "PYTHONSAFEPATH", "PAST_DETECTED", "JUDGE_URL", "JUDGE_SERVER_URL", "JUDGE_TOKEN_FILE",
        "JUDGE_AUTH_TOKEN", "WANDB_API_KEY", "RAY_ADDRESS")}
    return {**env, "PAST_VENV": sys.prefix, "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A fresh clone of the commit under test, alone in its folder (nothing beside it)."""
    root = tmp_path_factory.mktemp("fresh") / "PaST"
    for cmd in (["git", "init", "-q", str(root)], ["git", "-C", str(root), "fetch", "-q", str(REPO_ROOT), "HEAD"],
                ["git", "-C", str(root), "checkout", "-q", "FETCH_HEAD"]):
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert sorted(p.name for p in root.parent.iterdir()) == ["PaST"]
    check = subprocess.run(["bash", "scripts/setup.sh", "--check"], cwd=root, env=user_env(), capture_output=True,
                           text=True, timeout=120)
    if check.returncode != 0:
        pytest.fail(f"the test environment {sys.prefix} is not set up for this commit, so the quickstart would"
                    f" reinstall it: run `bash scripts/setup.sh` first.\n{check.stdout}{check.stderr}")
    return root


@pytest.mark.slow
def test_quickstart_in_a_fresh_clone_interrupted_during_grpo_then_rerun(clone, tmp_path):
    out = clone / "outputs" / "quickstart"
    judge_url = f"http://127.0.0.1:{free_port()}"
    env = user_env(QUICKSTART_DIR=str(out), JUDGE_URL=judge_url, **SMALL_DATA)
    pth_before = pth_files()

    # Run 1: interrupt once GRPO's Ray workers are up.
    log1 = tmp_path / "run1.log"
    start = time.monotonic()
    with open(log1, "w") as log:
        proc = subprocess.Popen(["bash", "scripts/quickstart.sh"], cwd=clone, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_line(log1, "3/7 GRPO", proc, timeout_s=1200)
        wait_for_line(log1, "TaskRunner", proc, timeout_s=300)
        time.sleep(10)
        sft_weights = {p: sorted((out / "checkpoints" / f"passage{p}" / "stage2" / "final").resolve().glob("*.safetensors"))
                       for p in (SOURCE, *TARGETS)}
        sft_mtimes = {p: [f.stat().st_mtime_ns for f in files] for p, files in sft_weights.items()}
        assert all(sft_mtimes.values()), "SFT should be complete before GRPO starts"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"quickstart run 1 (set-up, data, SFT, GRPO start): {time.monotonic() - start:.0f} s", file=sys.stderr)
    assert proc.returncode != 0
    assert not judge_answers(judge_url), "the interrupted pipeline left its judge server running"
    leftovers = processes_of_run(out)
    assert not leftovers, f"the interrupted pipeline left processes running: {leftovers}"
    assert not (out / "checkpoints" / f"passage{SOURCE}" / "grpo" / "final").exists()

    # Run 2: continues with GRPO, without redoing SFT.
    start = time.monotonic()
    run2 = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=1800)
    print(f"quickstart run 2 (GRPO to the table): {time.monotonic() - start:.0f} s", file=sys.stderr)
    log2 = run2.stdout + run2.stderr
    (tmp_path / "run2.log").write_text(log2)
    assert run2.returncode == 0, log2[-6000:]
    for p, files in sft_weights.items():
        assert f"passage {p}: SFT done" in log2
        assert [f.stat().st_mtime_ns for f in files] == sft_mtimes[p], f"passage {p}'s SFT was redone"
    assert not judge_answers(judge_url)
    assert not processes_of_run(out)

    # The clone ran its own code, and the venv's editable install was left alone.
    logs = log1.read_text() + log2
    roots = set(re.findall(r"\] device: .*?; code: (\S+);", logs))
    assert roots == {str(clone)}, roots
    foreign = {str(REPO_ROOT), *(line for text in pth_before.values() for line in text.splitlines() if line.startswith("/"))}
    assert not [path for path in foreign if path in logs.replace(sys.prefix, "<venv>")], "the run used another checkout's code"
    assert pth_files() == pth_before
    assert f"judge: {judge_url} (backend lexical" in logs  # the word-overlap judge, chosen by name (demo/quickstart.env)

    # Small data: every stage-2 set is smaller than the batch; SFT fitted the batch to it.
    ckpt = out / "checkpoints"
    for p in (SOURCE, *TARGETS):
        manifest = json.loads((out / "data" / f"passage{p}" / "manifest_stage2.json").read_text())
        assert 0 < manifest["rows"] < SFT_BATCH_SIZE, manifest
        assert f"{manifest['rows']} rows for SFT_BATCH_SIZE {SFT_BATCH_SIZE}" in (ckpt / f"passage{p}" / "stage2" / "run.log").read_text()
    # Finished stages keep their final HF model only.
    assert not [str(f) for f in ckpt.rglob("*") if RESUMABLE.match(f.name)], "FSDP shards or optimizer state left"

    # The operator, checked against its definition in float32 with one cast.
    rl = weights(ckpt / f"passage{SOURCE}" / "grpo" / "final")
    start_model = weights(ckpt / f"passage{SOURCE}" / "stage2" / "final")
    assert any(not torch.equal(rl[k], start_model[k]) for k in rl), "GRPO did not change the model"
    for t in TARGETS:
        target = weights(ckpt / f"passage{t}" / "stage2" / "final")
        inherited = weights(ckpt / "inherited" / f"passage{t}")
        assert inherited.keys() == target.keys()
        for name, value in target.items():
            expected = (value.float() + (rl[name].float() - start_model[name].float())).to(value.dtype)
            assert torch.equal(inherited[name], expected), name

    # Every variant evaluated; the table is the mean of the per-question verdicts.
    results = out / "eval_results"
    table = {(row["split"], row["variant"]): row for row in csv.DictReader(open(results / "results.csv"))}
    for t in TARGETS:
        for variant in VARIANTS:
            doc = json.loads((results / variant / f"passage{t}" / "test_results.json").read_text())
            per_run = {}
            for row in doc["results"]:
                per_run.setdefault(row["run"], []).append(row["verdict"])
            assert len(per_run) == 2
            expected = statistics.fmean(sum(v) / len(v) for v in per_run.values())
            row = table[(f"passage{t}", variant)]
            assert float(row["accuracy_mean"]) == pytest.approx(expected)
    assert (results / "results.md").read_text().count("passage") >= len(TARGETS)
    # GRPO's reward per step, kept through the pruning and plotted
    reward = json.loads((results / "grpo_reward.json").read_text())
    assert reward["steps"] == [1, 2] and (results / "grpo_reward.png").read_bytes().startswith(b"\x89PNG")
    assert run2.stdout.strip().splitlines()[-1].startswith("What the numbers mean:")


def test_pipeline_without_an_llm_judge_stops_before_the_data_stage(tmp_path, tiny_model):
    """No judge answers and none is named: whatever the model (a local dir or a hub id), the
    pipeline says how to configure one and writes nothing."""
    for model in (str(tiny_model), "Qwen/Qwen2.5-7B-Instruct"):
        env = user_env(MODEL=model, LOOGLE=str(REPO_ROOT / "demo/corpus.jsonl"), JUDGE_URL=f"http://127.0.0.1:{free_port()}",
                       DATA_ROOT=str(tmp_path / "data"), CKPT_ROOT=str(tmp_path / "ck"), PAST_DEVICE="cpu",
                       PYTHON=sys.executable, LOG_DIR=str(tmp_path / "logs"))
        env.pop("JUDGE_BACKEND", None)
        done = subprocess.run(["bash", "scripts/run_train_pipeline.sh"], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode != 0
        assert "no judge answers at" in done.stderr and "JUDGE_BACKEND=openai" in done.stderr
        assert "1/7 data" not in done.stdout and not (tmp_path / "data").exists() and not (tmp_path / "ck").exists()


def test_pipeline_refuses_a_lexical_judge_nobody_chose(tmp_path, lexical_judge_url):
    env = user_env(MODEL="Qwen/Qwen2.5-7B-Instruct", LOOGLE=str(REPO_ROOT / "demo/corpus.jsonl"), JUDGE_URL=lexical_judge_url,
                   DATA_ROOT=str(tmp_path / "data"), PAST_DEVICE="cpu", PYTHON=sys.executable)
    env.pop("JUDGE_BACKEND", None)
    done = subprocess.run(["bash", "scripts/run_train_pipeline.sh"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "lexical word-overlap judge, which no one chose" in done.stderr
    assert not (tmp_path / "data").exists()
