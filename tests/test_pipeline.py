"""End to end: the README's first command (scripts/quickstart.sh -> scripts/run_train_pipeline.sh)
on the shipped demo corpus, interrupted during GRPO like a user's Ctrl-C, then rerun.

Checks what a user would: the interrupted run leaves no judge server and no Ray process behind;
the rerun does not redo the finished SFT stages; the inherited targets are exactly
stage2(target) + (rl - stage2(source)); every variant has its eval file; the table's numbers are
the mean of the per-question verdicts.
"""

import csv
import json
import os
import signal
import socket
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE, TARGETS = 0, (1, 2)
VARIANTS = ("base", "stage2", "inherited", "base-context")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.mark.slow
def test_quickstart_interrupted_during_grpo_then_rerun(tmp_path):
    out = tmp_path / "quickstart"
    judge_url = f"http://127.0.0.1:{free_port()}"
    env = dict(os.environ, QUICKSTART_DIR=str(out), JUDGE_URL=judge_url, PYTHONUNBUFFERED="1")
    env.pop("JUDGE_SERVER_URL", None)

    # Run 1: interrupt once GRPO's Ray workers are up.
    log1 = tmp_path / "run1.log"
    with open(log1, "w") as log:
        proc = subprocess.Popen(["bash", "scripts/quickstart.sh"], cwd=REPO_ROOT, env=env, stdout=log,
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
    assert proc.returncode != 0
    assert not judge_answers(judge_url), "the interrupted pipeline left its judge server running"
    leftovers = processes_of_run(out)
    assert not leftovers, f"the interrupted pipeline left processes running: {leftovers}"
    assert not (out / "checkpoints" / f"passage{SOURCE}" / "grpo" / "final").exists()

    # Run 2: continues with GRPO, without redoing SFT.
    run2 = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)
    log2 = run2.stdout + run2.stderr
    (tmp_path / "run2.log").write_text(log2)
    assert run2.returncode == 0, log2[-6000:]
    for p, files in sft_weights.items():
        assert f"passage {p}: SFT done" in log2
        assert [f.stat().st_mtime_ns for f in files] == sft_mtimes[p], f"passage {p}'s SFT was redone"
    assert not judge_answers(judge_url)
    assert not processes_of_run(out)

    # The operator, checked against its definition in float32 with one cast.
    ckpt = out / "checkpoints"
    rl = weights(ckpt / f"passage{SOURCE}" / "grpo" / "final")
    start = weights(ckpt / f"passage{SOURCE}" / "stage2" / "final")
    assert any(not torch.equal(rl[k], start[k]) for k in rl), "GRPO did not change the model"
    for t in TARGETS:
        target = weights(ckpt / f"passage{t}" / "stage2" / "final")
        inherited = weights(ckpt / "inherited" / f"passage{t}")
        assert inherited.keys() == target.keys()
        for name, value in target.items():
            expected = (value.float() + (rl[name].float() - start[name].float())).to(value.dtype)
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
            assert float(table[(f"passage{t}", variant)]["mean"]) == pytest.approx(expected)
    assert (results / "results.md").read_text().count("passage") >= len(TARGETS)
