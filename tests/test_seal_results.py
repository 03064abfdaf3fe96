"""seal_squad.results (SEAL's aggregation: macro mean over passages) and results_table.py."""

import hashlib
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import load_module_from_path
from prompts import IMPLICATIONS_TEMPLATES, SQUAD_ANSWER_TEMPLATE
from seal_squad.results import article_entry, completion_entry, not_comparable, overall_stats, read_run

REPO = Path(__file__).resolve().parent.parent
TABLE = REPO / "SEAL" / "general-knowledge" / "results_table.py"


def reply(base, adapter):
    """A TTT server reply for per-question verdicts `base` and `adapter`."""
    return {"baseline_accuracy": sum(base) / len(base), "adapter_accuracy": sum(adapter) / len(adapter),
            "baseline_texts": ["b"] * len(base), "adapter_texts": ["a"] * len(adapter),
            "baseline_correct": base, "adapter_correct": adapter}


def passage(n_questions, title="T"):
    return {"title": title, "context": "C", "questions": [{"question": f"q{i}", "answer": "x"} for i in range(n_questions)]}


def test_macro_mean_over_passages_of_completion_means_of_round_means():
    # Passage 0: 2 questions, 2 completions x 2 rounds; passage 1: 4 questions, 1 completion x 2 rounds.
    p0, p1 = passage(2), passage(4)
    a0 = article_entry(p0, [completion_entry("c0", p0["questions"], [reply([0, 0], [1, 0]), reply([0, 0], [1, 1])]),
                            completion_entry("c1", p0["questions"], [reply([0, 0], [0, 0]), reply([0, 0], [1, 0])])])
    a1 = article_entry(p1, [completion_entry("c0", p1["questions"], [reply([1, 0, 0, 0], [1, 1, 1, 0])] * 2)])
    c0 = a0["completions"][0]["stats"]
    assert c0["adapter_mean"] == 0.75 and c0["adapter_std"] == pytest.approx(statistics.stdev([0.5, 1.0]))
    assert a0["stats"]["adapter_mean_accuracy"] == pytest.approx((0.75 + 0.25) / 2)
    assert a0["stats"]["adapter_std_over_completions"] == pytest.approx(statistics.stdev([0.75, 0.25]))
    overall = overall_stats([a0, a1])
    assert overall["adapter_mean_accuracy"] == pytest.approx((0.5 + 0.75) / 2)  # macro
    assert overall["adapter_std_of_article_means"] == pytest.approx(statistics.stdev([0.5, 0.75]))
    assert overall["baseline_mean_accuracy"] == pytest.approx((0 + 0.25) / 2)
    assert overall["mean_gain"] == pytest.approx(0.625 - 0.125)
    assert overall["n_questions"] == 6
    # Per question, every round of every completion counts once: (1+2+0+1 + 3+3) / (8 + 8).
    assert overall["adapter_micro_accuracy"] == pytest.approx(10 / 16)
    details = a0["completions"][0]["questions"]
    assert [(d["rep"], d["question"], d["adapter_correct"]) for d in details] == [(0, "q0", 1), (0, "q1", 0), (1, "q0", 1), (1, "q1", 1)]


def write_run(path, condition, accuracy, std, skill=None, model="m", judge=("lexical", None),
              answer_template=SQUAD_ANSWER_TEMPLATE, implications_prompt=IMPLICATIONS_TEMPLATES["implications"]):
    p = passage(2)
    run = {"overall": {"adapter_mean_accuracy": accuracy, "adapter_std_of_article_means": std, "n_questions": 2},
           "exp_name": condition, "n_articles": 1, "k_completions": 1, "eval_times": 1,
           "articles": [article_entry(p, [completion_entry("", p["questions"], [reply([0, 0], [1, 0])])])],
           "condition": condition,
           "dataset_meta": {"model": "gen-model", "prompt_sha256": hashlib.sha256(implications_prompt.encode()).hexdigest()},
           "server": {"trainer_model": model, "skill": skill, "judge": {"backend": judge[0], "judge_model": judge[1]},
                      "answer_template": answer_template}}
    path.write_text(json.dumps(run))
    return path


def test_results_table_puts_seals_rows_beside_ours(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    write_run(runs / "implications.json", "implications", 0.41234, 0.2)
    skill = {"vector": "v.safetensors", "fingerprint": "sha256:" + "ab" * 32, "alpha": 0.5, "order": "post"}
    write_run(runs / "implications_skill.json", "implications_skill", 0.5, 0.1, skill=skill)
    done = subprocess.run([sys.executable, str(TABLE), str(runs), "--csv", str(tmp_path / "t.csv"), "--output", str(tmp_path / "t.md")],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("| row | implications by | model TTT'd | skill | accuracy %")
    assert any("base implications" in line and "39.68" in line and "SEAL, published" in line for line in lines)
    assert any(line.startswith("| PaST |") and "56.9" in line and "PaST paper" in line for line in lines)
    ours = [line for line in lines if "ours:" in line]
    assert len(ours) == 2
    assert "| implications | gen-model | m | - | 41.23 | 20.0 | 1 | 2 | lexical | no: graded by lexical, not gpt-4.1 |" in ours[0]
    assert "| implications + skill | gen-model | m | +0.5*v (post; sha256:ababababababa) | 50.0 |" in ours[1]
    assert (tmp_path / "t.md").read_text() == done.stdout  # the note under the table too
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("row,implications by,")


def test_rows_graded_by_another_judge_or_with_other_prompts_are_marked_not_comparable(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    write_run(runs / "a.json", "implications", 0.4, 0.1, judge=("openai", "gpt-4.1"))
    write_run(runs / "b.json", "passage", 0.3, 0.1, judge=("openai", "gpt-4.1-mini"))
    write_run(runs / "c.json", "base", 0.2, 0.1, judge=("openai", "gpt-4.1-2025-04-14"), answer_template="Q: {question}\nA:")
    write_run(runs / "d.json", "implications_skill", 0.5, 0.1, judge=("openai", "gpt-4.1"), implications_prompt="{title} {context}",
              skill={"vector": "v.safetensors", "fingerprint": "sha256:" + "ab" * 32, "alpha": 1.0, "order": "post"})
    done = subprocess.run([sys.executable, str(TABLE), str(runs)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    comparable = {line.split(" | ")[0][2:]: line.split(" | ")[9] for line in done.stdout.splitlines() if "ours:" in line}
    assert comparable == {"base, no adaptation": "no: another answer prompt", "passage only": "no: graded by openai gpt-4.1-mini, not gpt-4.1",
                          "implications": "yes", "implications + skill": "no: implications from another prompt"}
    assert all(line.split(" | ")[9] == "(reference)" for line in done.stdout.splitlines()
               if line.startswith("|") and ("published" in line or "PaST paper" in line))
    note = done.stdout.split("**Not comparable with the published rows**")[1]
    assert "(3 of our 4" in note and "b.json" in note and "c.json" in note and "d.json" in note and "a.json" not in note
    assert "JUDGE_MODEL=gpt-4.1" in note
    assert not_comparable({"overall": {}}) == ["its judge and prompts are not recorded"]  # e.g. SEAL's own files


def test_results_table_reads_seals_own_run_files_and_refuses_others(tmp_path):
    seal_style = write_run(tmp_path / "base.json", "base", 0.3968, 0.2786)
    run = json.loads(seal_style.read_text())
    for key in ("condition", "server", "dataset_meta"):
        run.pop(key)
    seal_style.write_text(json.dumps(run))
    done = subprocess.run([sys.executable, str(TABLE), str(seal_style), "--no_published"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "| run base |" in done.stdout and "39.68" in done.stdout
    (tmp_path / "other.json").write_text(json.dumps({"overall": {}}))
    with pytest.raises(ValueError, match="missing exp_name"):
        read_run(tmp_path / "other.json")
    bad = subprocess.run([sys.executable, str(TABLE), str(tmp_path / "other.json")], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "not a run JSON" in bad.stderr


def test_ablation_rows_in_order_and_accuracy_against_lambda(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()

    def skill(alpha, order="post", name="v(K=2)", fp="ab"):
        return {"vector": "v.safetensors", "fingerprint": "sha256:" + fp * 32, "alpha": alpha, "order": order, "name": name}

    write_run(runs / "a.json", "implications_skill", 0.40, 0.1, skill=skill(1.0))
    write_run(runs / "b.json", "implications_skill", 0.35, 0.1, skill=skill(0.5))
    write_run(runs / "c.json", "implications_skill", 0.30, 0.1, skill=skill(0.5, order="pre"))
    write_run(runs / "d.json", "skill_only", 0.20, 0.1, skill=skill(0.5))
    write_run(runs / "e.json", "implications_skill", 0.33, 0.1, skill=skill(0.5, name="v(K=1)", fp="cd"))
    write_run(runs / "f.json", "implications", 0.25, 0.1)
    write_run(runs / "g.json", "base", 0.10, 0.1)
    plot = tmp_path / "lambda.png"
    done = subprocess.run([sys.executable, str(TABLE), str(runs), "--no_published", "--plot", str(plot)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    ours = [line.split(" | ")[3] for line in done.stdout.splitlines()[2:] if "ours:" in line]
    assert ours == ["-", "-", "+0.5*v(K=2) (post; sha256:ababababababa)", "+0.5*v(K=1) (post; sha256:cdcdcdcdcdcdc)",
                    "+0.5*v(K=2) (post; sha256:ababababababa)", "+1*v(K=2) (post; sha256:ababababababa)",
                    "+0.5*v(K=2) (pre; sha256:ababababababa)"]
    assert plot.stat().st_size > 0
    module = load_module_from_path("results_table", TABLE)
    points = module.lambda_points([json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))])
    assert points == {"implications + v(K=2) (post)": {0.0: 25.0, 0.5: 35.0, 1.0: 40.0},
                      "implications + v(K=2) (pre)": {0.0: 25.0, 0.5: 30.0},
                      "implications + v(K=1) (post)": {0.0: 25.0, 0.5: 33.0},
                      "skill only, v(K=2)": {0.0: 10.0, 0.5: 20.0}}
    # Nothing with a vector: no plot, a clear error.
    bare = subprocess.run([sys.executable, str(TABLE), str(runs / "f.json"), "--plot", str(tmp_path / "x.png")],
                          capture_output=True, text=True, cwd=REPO)
    assert bare.returncode == 2 and "no run with a skill vector" in bare.stderr and not (tmp_path / "x.png").exists()
