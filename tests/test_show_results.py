"""scripts/show_results.py on result folders with known verdicts: the table's cells, the overall
row, non-passage splits, CSV, plots, column order and the errors for bad input."""

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


def write_results(results_dir, variant, split, correct_per_run, n_questions, data_source="loogle", judge=None):
    """A test_results.json whose run r has exactly correct_per_run[r] correct answers."""
    answers = [
        {"index": i, "run": run, "seed": run, "question": f"q{i}", "reference": "r", "response": "x", "answer": "x"}
        for run in range(len(correct_per_run))
        for i in range(n_questions)
    ]
    verdicts = [{"score": float(a["index"] < correct_per_run[a["run"]]), "verdict": a["index"] < correct_per_run[a["run"]]} for a in answers]
    answers_doc = {"model_tag": variant, "model_path": f"checkpoints/{variant}", "split": split, "data_file": "d",
                   "data_source": data_source, "generation": {"n_runs": len(correct_per_run)}, "answers": answers}
    doc = results_document(answers_doc, judged_rows(answers_doc, verdicts), judge or {"backend": "lexical", "model": None})
    write_json_atomic(results_path(results_dir, variant, split), doc)


def run(*args):
    return subprocess.run([sys.executable, str(SHOW_RESULTS), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def table_rows(stdout):
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "eval_results"
    write_results(root, "stage2", "passage0", [2, 4], 10)  # 20%, 40%
    write_results(root, "stage2", "passage10", [5, 5, 8], 10)  # 50, 50, 80
    write_results(root, "inherited", "passage0", [6], 10)  # 60%
    write_results(root, "inherited", "gsm8k", [3, 1], 4, data_source="openai/gsm8k", judge={"backend": "numeric_exact_match", "model": None})
    return root


def test_table_cells_overall_and_extra_splits(results, tmp_path):
    done = run("--results_dir", results, "--variants", "stage2", "inherited", "--output", tmp_path / "t.md", "--csv", tmp_path / "t.csv",
               "--plot_dir", tmp_path / "plots")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert rows["passage"] == ["stage2", "inherited"]
    std0 = 100 * math.sqrt(((0.2 - 0.3) ** 2 + (0.4 - 0.3) ** 2) / 1)
    assert rows["passage0"] == [f"30.0 ± {std0:.1f} (n=2)", "60.0 ± 0.0 (n=1)"]
    std10 = 100 * math.sqrt(((0.5 - 0.6) ** 2 * 2 + (0.8 - 0.6) ** 2) / 2)
    assert rows["passage10"] == [f"60.0 ± {std10:.1f} (n=3)", "–"]
    # overall = mean of passage means (0.3, 0.6), std across passages; inherited has one passage
    assert rows["**overall**"] == [f"45.0 ± {100 * math.sqrt(2 * 0.15 ** 2):.1f} (n=2)", "60.0 ± 0.0 (n=1)"]
    assert rows["gsm8k"] == ["–", f"50.0 ± {100 * math.sqrt(2 * 0.25 ** 2):.1f} (n=2)"]
    order = [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| ")]
    assert order == ["passage", "passage0", "passage10", "**overall**", "gsm8k"]  # numeric order, extras last
    assert "inherited: lexical, numeric_exact_match" in done.stdout
    assert (tmp_path / "t.md").read_text() == done.stdout

    with open(tmp_path / "t.csv", newline="") as f:
        records = {(r["split"], r["variant"]): r for r in csv.DictReader(f)}
    assert float(records[("passage10", "stage2")]["mean"]) == pytest.approx(0.6)
    assert records[("passage10", "stage2")]["n"] == "3" and records[("passage10", "stage2")]["n_questions"] == "10"
    assert float(records[("overall", "stage2")]["mean"]) == pytest.approx(0.45)
    for variant in ("stage2", "inherited"):
        assert (tmp_path / "plots" / f"{variant}.png").read_bytes()[:4] == b"\x89PNG"


def test_default_columns_are_all_variants_sorted(results):
    done = run("--results_dir", results, "--no_plots")
    assert done.returncode == 0, done.stderr
    assert table_rows(done.stdout)["passage"] == ["inherited", "stage2"]
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
