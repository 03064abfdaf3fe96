"""scripts/show_results.py on result folders with known verdicts and ROUGE-L scores: the cells,
both overall rows, non-passage splits, the judge header, λ-sweep tables, CSV, plots, column
order and the errors for bad input."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from eval_loogle.common import results_path, write_json_atomic
from eval_loogle.judge_utils import judged_rows, results_document

REPO_ROOT = Path(__file__).resolve().parent.parent
SHOW_RESULTS = REPO_ROOT / "scripts" / "show_results.py"


def write_results(results_dir, variant, split, correct_per_run, n_questions, rougel_per_run=None, data_source="loogle",
                  judge=None, sweep=None, unparsed=0):
    """A test_results.json whose run r has exactly correct_per_run[r] correct answers, every answer
    of run r a ROUGE-L recall of rougel_per_run[r] (no ROUGE-L at all when None, as --no_metrics
    writes it) and the first `unparsed` verdicts of run 0 marked as parse failures."""
    answers = [
        {"index": i, "run": run, "seed": run, "question": f"q{i}", "reference": "r", "response": "x", "answer": "x"}
        for run in range(len(correct_per_run))
        for i in range(n_questions)
    ]
    verdicts = []
    for a in answers:
        right = a["index"] < correct_per_run[a["run"]]
        verdicts.append({"score": float(right), "verdict": right, **({"parse_failed": True} if a["run"] == 0 and a["index"] < unparsed else {})})
    answers_doc = {"model_tag": variant, "model_path": f"checkpoints/{variant}", "split": split, "data_file": "d",
                   "data_source": data_source, "generation": {"n_runs": len(correct_per_run)}, "answers": answers}
    rows = judged_rows(answers_doc, verdicts)
    if rougel_per_run is not None:
        for row in rows:
            row["rougel"] = rougel_per_run[row["run"]]
    doc = results_document(answers_doc, rows, judge or {"backend": "lexical", "model": None})
    if sweep is not None:
        doc["sweep"] = sweep
    write_json_atomic(results_path(results_dir, variant, split), doc)


def run(*args):
    return subprocess.run([sys.executable, str(SHOW_RESULTS), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def table_rows(lines):
    """{first cell: [other cells]} of the markdown table in `lines` (header row under 'header')."""
    rows = {}
    for line in lines:
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows["header" if not rows else cells[0]] = cells if not rows else cells[1:]
    return rows


def sections(stdout):
    """The output split at the λ-sweep headings: [variants part, sweep 1, ...]."""
    parts = [[]]
    for line in stdout.splitlines():
        if line.startswith("### λ sweep"):
            parts.append([])
        parts[-1].append(line)
    return parts


def sd(*xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "eval_results"
    write_results(root, "stage2", "passage0", [2, 4], 10, [0.25, 0.35])  # acc 20, 40 %; R-L 25, 35 %
    write_results(root, "stage2", "passage10", [1, 3], 5, [0.5, 0.6])  # acc 20, 60 %
    write_results(root, "inherited", "passage0", [6], 10, [0.7])  # acc 60 %
    write_results(root, "inherited", "gsm8k", [3, 1], 4, data_source="openai/gsm8k", judge={"backend": "numeric_exact_match", "model": None})
    return root


def test_cells_both_overall_rows_and_extra_splits(results, tmp_path):
    done = run("--results_dir", results, "--variants", "stage2", "inherited", "--output", tmp_path / "t.md", "--csv", tmp_path / "t.csv",
               "--plot_dir", tmp_path / "plots")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout.splitlines())
    assert rows["header"] == ["passage", "stage2 acc %", "stage2 ROUGE-L %", "inherited acc %", "inherited ROUGE-L %"]
    assert rows["passage0"] == [f"30.0 ± {100 * sd(0.2, 0.4):.1f} (n=2)", f"30.0 ± {100 * sd(0.25, 0.35):.1f}", "60.0 ± 0.0 (n=1)", "70.0 ± 0.0"]
    assert rows["passage10"] == [f"40.0 ± {100 * sd(0.2, 0.6):.1f} (n=2)", f"55.0 ± {100 * sd(0.5, 0.6):.1f}", "–", "–"]
    # mean of passages: (30 + 40) / 2, std across the two passage means; n = passages
    assert rows["**overall, mean of passages**"][:2] == [f"35.0 ± {100 * sd(0.3, 0.4):.1f} (n=2)", f"42.5 ± {100 * sd(0.3, 0.55):.1f}"]
    # mean of questions: 15 questions, pooled per run (2+1)/15 and (4+3)/15; R-L (10·0.25 + 5·0.5)/15, (10·0.35 + 5·0.6)/15
    acc_q, rl_q = (0.2 + 7 / 15) / 2, (5 / 15 + 6.5 / 15) / 2
    assert rows["**overall, mean of questions**"][:2] == [f"{100 * acc_q:.1f} ± {100 * sd(0.2, 7 / 15):.1f} (n=15)",
                                                        f"{100 * rl_q:.1f} ± {100 * sd(5 / 15, 6.5 / 15):.1f}"]
    assert rows["**overall, mean of passages**"][2:] == ["60.0 ± 0.0 (n=1)", "70.0 ± 0.0"]
    assert rows["**overall, mean of questions**"][2:] == ["60.0 ± 0.0 (n=10)", "70.0 ± 0.0"]
    assert rows["gsm8k"] == ["–", "–", f"50.0 ± {100 * sd(0.75, 0.25):.1f} (n=2)", "–"]  # no ROUGE-L for GSM8K
    order = list(rows)[1:]
    assert order == ["passage0", "passage10", "**overall, mean of passages**", "**overall, mean of questions**", "gsm8k"]
    assert "Judge: stage2: lexical; inherited: lexical, numeric_exact_match." in done.stdout.splitlines()[0]
    assert (tmp_path / "t.md").read_text() == done.stdout

    with open(tmp_path / "t.csv", newline="") as f:
        records = {(r["split"], r["variant"]): r for r in csv.DictReader(f)}
    assert float(records[("passage10", "stage2")]["accuracy_mean"]) == pytest.approx(0.4)
    assert float(records[("passage10", "stage2")]["rougel_mean"]) == pytest.approx(0.55)
    assert records[("passage10", "stage2")]["n_runs"] == "2" and records[("passage10", "stage2")]["n_questions"] == "5"
    assert float(records[("overall_passages", "stage2")]["accuracy_mean"]) == pytest.approx(0.35)
    assert float(records[("overall_questions", "stage2")]["accuracy_mean"]) == pytest.approx(acc_q)
    assert records[("overall_questions", "stage2")]["n_questions"] == "15"
    assert records[("gsm8k", "inherited")]["rougel_mean"] == ""
    # one grouped plot for all variants, not one per variant
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["results.png"]
    assert (tmp_path / "plots" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_zero_accuracy_variants_still_differ_by_rouge_l_and_one_judge_heads_the_table(tmp_path):
    root = tmp_path / "r"
    judge = {"backend": "openai", "model": "gpt-4o-mini", "where": "http://127.0.0.1:8123"}
    write_results(root, "stage2", "passage3", [0, 0], 6, [0.10, 0.14], judge=judge)
    write_results(root, "inherited", "passage3", [0, 0], 6, [0.31, 0.29], judge=judge)
    done = run("--results_dir", root, "--no_plots")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "Judge: openai (gpt-4o-mini)."
    rows = table_rows(done.stdout.splitlines())
    assert rows["passage3"] == ["0.0 ± 0.0 (n=2)", "30.0 ± 1.4", "0.0 ± 0.0 (n=2)", "12.0 ± 2.8"]  # columns sorted: inherited, stage2


def test_uneven_runs_and_missing_rouge_l(tmp_path):
    root = tmp_path / "r"
    write_results(root, "stage2", "passage1", [1, 2, 3], 4, [0.1, 0.2, 0.3])
    write_results(root, "stage2", "passage2", [2], 4, None)  # scored with --no_metrics: no ROUGE-L
    done = run("--results_dir", root, "--no_plots")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout.splitlines())
    assert rows["passage2"] == ["50.0 ± 0.0 (n=1)", "–"]
    assert rows["**overall, mean of passages**"] == ["50.0 ± 0.0 (n=2)", "–"]
    # runs differ between passages: no run-pooled std, the mean still counts every question once
    assert rows["**overall, mean of questions**"] == ["50.0 (n=8)", "–"]


def test_unparsed_verdicts_are_reported(tmp_path):
    root = tmp_path / "r"
    write_results(root, "stage2", "passage0", [1, 1], 5, [0.1, 0.1], unparsed=2)
    done = run("--results_dir", root, "--no_plots")
    assert done.returncode == 0, done.stderr
    assert "did not parse into (scored as no): stage2 passage0: 2." in done.stdout


def test_sweep_table_and_plot(tmp_path):
    root = tmp_path / "r"
    write_results(root, "stage2", "passage3", [1], 4, [0.2])
    vector = "checkpoints/skill_vectors/sources_0.safetensors"
    for passage, points in ((3, {0.0: ([1, 1], 0.2), 1.0: ([3, 2], 0.5), -0.5: ([0, 0], 0.1)}), (4, {0.0: ([2, 2], 0.4), 1.0: ([4, 4], 0.9)})):
        for alpha, (correct, rougel) in points.items():
            sweep = {"name": "inherited", "alpha": alpha, "alphas": [alpha], "target_model": f"checkpoints/passage{passage}/stage2/final",
                     "skill_vectors": [vector]}
            write_results(root, f"inherited_a{alpha:g}", f"passage{passage}", correct, 4, [rougel] * len(correct), sweep=sweep)
    done = run("--results_dir", root, "--plot_dir", tmp_path / "plots", "--csv", tmp_path / "t.csv")
    assert done.returncode == 0, done.stderr
    main_part, sweep_part = sections(done.stdout)
    assert table_rows(main_part)["header"] == ["passage", "stage2 acc %", "stage2 ROUGE-L %"]  # sweep tags not among the variants
    assert sweep_part[0] == f"### λ sweep inherited: target + λ·({vector})"
    rows = table_rows(sweep_part)
    assert rows["header"] == ["λ", "passage3 acc %", "passage3 ROUGE-L %", "passage4 acc %", "passage4 ROUGE-L %",
                              "mean of passages acc %", "mean of passages ROUGE-L %"]
    assert list(rows)[1:] == ["-0.5", "0", "1"]
    assert rows["1"] == [f"62.5 ± {100 * sd(0.75, 0.5):.1f} (n=2)", "50.0 ± 0.0", "100.0 ± 0.0 (n=2)", "90.0 ± 0.0",
                         f"{100 * 0.8125:.1f} ± {100 * sd(0.625, 1.0):.1f} (n=2)", f"70.0 ± {100 * sd(0.5, 0.9):.1f}"]
    assert rows["-0.5"][2:4] == ["–", "–"] and rows["-0.5"][4] == "0.0 ± 0.0 (n=1)"
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["results.png", "sweep_inherited.png"]
    with open(tmp_path / "t.csv", newline="") as f:
        records = {(r["split"], r["variant"]): r for r in csv.DictReader(f)}
    assert records[("passage3", "inherited_a-0.5")]["alpha"] == "-0.5"
    assert float(records[("passage4", "inherited_a1")]["rougel_mean"]) == pytest.approx(0.9)


def test_default_columns_are_all_variants_sorted(results):
    done = run("--results_dir", results, "--no_plots")
    assert done.returncode == 0, done.stderr
    assert table_rows(done.stdout.splitlines())["header"][1::2] == ["inherited acc %", "stage2 acc %"]
    assert not (results / "plots").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--variants", "stage3"], "no results for variant(s) ['stage3']"),
        (["--results_dir", "nowhere"], "results folder not found: nowhere"),
    ],
)
def test_bad_arguments_are_clear_errors(results, args, message):
    done = run("--results_dir", results, *args)
    assert done.returncode == 2 and message in done.stderr


def test_empty_or_broken_results_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    done = run("--results_dir", tmp_path / "empty")
    assert done.returncode == 2 and "no */*/test_results.json" in done.stderr
    broken = tmp_path / "broken" / "stage2" / "passage0" / "test_results.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"results": []}')
    done = run("--results_dir", tmp_path / "broken")
    assert done.returncode == 2 and "not a readable test_results.json" in done.stderr and "rescore it" in done.stderr
