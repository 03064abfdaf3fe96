"""LooGLE evaluation end to end on CPU: eval parquet for two passages of the test corpus ->
closed-book answers from the tiny model (hf backend, seeded runs, resumable) -> verdicts from a
judge server (lexical backend) started for real by scripts/train/start_judge_server.sh ->
show_results.py. Plus LooGLE's automatic metrics on hand-made pairs with known values, the
new-token budget by LooGLE split, the passage-in-context prompt, GSM8K's numeric match and the
errors a user gets for bad input."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from eval_loogle import generate_answers, score_answers, score_answers_with_server
from eval_loogle.common import EvalSet, context_conversations, load_eval_set, model_tag_from_path, write_json_atomic
from eval_loogle.judge_utils import accuracy_summary, final_number, judge_numeric
from helpers import free_port
from prepare_data import loogle_to_parquet

REPO_ROOT = Path(__file__).resolve().parent.parent
SHOW_RESULTS = REPO_ROOT / "scripts" / "show_results.py"
PASSAGES = (0, 4)  # 6 and 4 questions
N_RUNS = 2
FAST = ["--max_new_tokens", "8", "--batch_size", "16"]  # the tiny model talks nonsense anyway


# --- Small pure pieces -------------------------------------------------------------------------


def test_model_tag_names_the_variant_not_the_passage():
    assert model_tag_from_path("checkpoints/passage3/stage2/final") == "stage2"
    assert model_tag_from_path("/x/checkpoints/passage12/stage1/final/") == "stage1"
    assert model_tag_from_path("checkpoints/inherited/round1/passage3") == "inherited-round1"
    assert model_tag_from_path("/models/Qwen2.5-7B-Instruct") == "Qwen2.5-7B-Instruct"


def test_accuracy_summary_from_verdicts():
    rows = [{"run": 0, "verdict": v} for v in (True, False, False, False)] + [{"run": 1, "verdict": v} for v in (True, True, True, False)]
    summary = accuracy_summary(rows)
    assert summary["per_run"] == [0.25, 0.75]
    assert summary["mean"] == pytest.approx(0.5)
    assert summary["std"] == pytest.approx(math.sqrt(0.125))  # sample std of 0.25 and 0.75
    assert (summary["n_runs"], summary["n_questions"]) == (2, 4)


def test_gsm8k_numeric_match():
    assert final_number("so 3 + 4 = 7\n#### 7") == 7.0
    assert final_number("The answer is $1,250.") == 1250.0
    assert final_number("#### -3.5 apples, 4 pears") == -3.5
    items = [
        {"reference": "72", "response": "She sold 48 + 24 = 72 clips.\n#### 72"},
        {"reference": "10", "response": "#### 10.0"},
        {"reference": "5", "response": "#### 6 (not 5)"},  # the number right after #### counts
        {"reference": "3", "response": "no number here"},
    ]
    assert [r["verdict"] for r in judge_numeric(items)] == [True, True, False, False]


def test_context_prompt_keeps_head_and_tail_and_fits(tiny_tokenizer, loogle_corpus):
    from generation import render_chat
    from prepare_data.passages import load_passages

    (passage,) = load_passages(loogle_corpus, [0])
    question = "Who rebuilt the salt works in Dún Laoghaire in 1834?"
    questions = [{"index": 0, "question": question, "reference": "-", "prompt": [], "loogle_split": None}]
    eval_set = EvalSet(split="passage0", data_file="-", data_source="loogle", passage_id=0, title=passage.title, questions=questions)
    budget = 600
    conversations, kept = context_conversations(eval_set, passage.text, tiny_tokenizer, budget)
    prompt = conversations[0][0]["content"]
    assert len(render_chat(tiny_tokenizer, conversations[0])) <= budget
    assert 0 < kept[0] < len(tiny_tokenizer(passage.text)["input_ids"])
    assert passage.text[:100] in prompt and passage.text.rstrip()[-100:] in prompt  # cut in the middle
    assert prompt.rstrip().endswith(f"Question: {question}\nAnswer:")


# --- New tokens by LooGLE split -----------------------------------------------------------------


def with_loogle_split(eval_parquet, splits, out_dir):
    """A copy of an eval set (in out_dir/passage{N}/) whose rows carry the given loogle_split
    values, row by row (None: no field, as in eval sets made before it existed)."""
    frame = pd.read_parquet(eval_parquet)
    infos = []
    for info, split in zip(frame["extra_info"], splits, strict=True):
        info = {k: v for k, v in info.items() if k != "loogle_split"}
        infos.append(info if split is None else {**info, "loogle_split": split})
    frame["extra_info"] = infos
    out = Path(out_dir) / eval_parquet.parent.name / "eval.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out)
    return out


@pytest.mark.parametrize(
    "splits, explicit, budgets, recorded",
    [
        (["longdep"] * 4, None, [500] * 4, {"max_new_tokens": 500, "max_new_tokens_from": "loogle_split", "loogle_split": {"longdep": 4}}),
        (["shortdep"] * 4, None, [300] * 4, {"max_new_tokens": 300, "max_new_tokens_from": "loogle_split", "loogle_split": {"shortdep": 4}}),
        (["shortdep", "longdep", "longdep", "shortdep"], None, [300, 500, 500, 300],
         {"max_new_tokens": {"shortdep": 300, "longdep": 500}, "max_new_tokens_from": "loogle_split", "loogle_split": {"shortdep": 2, "longdep": 2}}),
        (["longdep"] * 4, 64, [64] * 4, {"max_new_tokens": 64, "max_new_tokens_from": "--max_new_tokens"}),
    ],
)
def test_new_token_budget_follows_the_loogle_split(data_dir, tiny_model, tmp_path, splits, explicit, budgets, recorded):
    with_loogle_split(data_dir / "passage4" / "eval.parquet", splits, tmp_path)
    args = ["--passage_idx", "4", "--model_path", str(tiny_model), "--data_dir", str(tmp_path), "--backend", "hf"]
    parser = generate_answers.argparse.ArgumentParser()
    generate_answers.add_generation_args(parser)
    _, header, _, got = generate_answers.prepare(parser.parse_args(args + (["--max_new_tokens", str(explicit)] if explicit else [])))
    assert got == budgets
    assert {k: header["generation"][k] for k in recorded} == recorded
    assert "loogle_split_missing" not in header["generation"]


def test_long_dependency_eval_set_gets_500_new_tokens(loogle_corpus, tiny_model, tmp_path):
    longdep = tmp_path / "longdep_qa.jsonl"  # the corpus in a file named as LooGLE's long-dependency QA
    longdep.write_bytes(Path(loogle_corpus).read_bytes())
    loogle_to_parquet.main(["--input", str(longdep), "--output_dir", str(tmp_path), "--passages", "4"])
    parser = generate_answers.argparse.ArgumentParser()
    generate_answers.add_generation_args(parser)
    _, header, _, budgets = generate_answers.prepare(parser.parse_args(["--passage_idx", "4", "--model_path", str(tiny_model),
                                                                        "--data_dir", str(tmp_path), "--backend", "hf"]))
    assert budgets == [500] * 4 and header["generation"]["max_new_tokens"] == 500


def test_rows_without_a_loogle_split_are_shortdep_and_recorded(data_dir, tiny_model, tmp_path):
    with_loogle_split(data_dir / "passage4" / "eval.parquet", [None, None, "longdep", None], tmp_path)
    eval_set = load_eval_set(4, data_dir=tmp_path)
    budgets, settings = generate_answers.answer_budgets(eval_set)
    assert budgets == [300, 300, 500, 300]
    assert settings["loogle_split"] == {"shortdep": 3, "longdep": 1}
    assert settings["loogle_split_missing"].startswith("3 question(s) without extra_info.loogle_split, taken as shortdep")


def test_unknown_loogle_split_is_a_clear_error(data_dir, tmp_path):
    path = with_loogle_split(data_dir / "passage4" / "eval.parquet", ["longdep_qa", None, None, None], tmp_path)
    with pytest.raises(ValueError, match=r"row 0: extra_info.loogle_split is 'longdep_qa', expected one of \('shortdep', 'longdep'\)") as e:
        load_eval_set(4, data_dir=tmp_path)
    assert str(path) in str(e.value)


@pytest.mark.slow
def test_mixed_splits_are_answered_with_their_budgets(data_dir, tiny_model, tmp_path, monkeypatch):
    # LooGLE's 300/500 scaled down: the tiny model rarely stops early, and 500 tokens take long on CPU
    monkeypatch.setattr(generate_answers, "MAX_NEW_TOKENS", {"shortdep": 3, "longdep": 5})
    with_loogle_split(data_dir / "passage4" / "eval.parquet", ["longdep", "shortdep", "longdep", "shortdep"], tmp_path)
    answers = tmp_path / "answers.json"
    generate_answers.main(["--passage_idx", "4", "--model_path", str(tiny_model), "--n_runs", "1", "--data_dir", str(tmp_path),
                           "--output_file", str(answers), "--temperature", "0"])
    doc = json.loads(answers.read_text())
    assert doc["generation"]["max_new_tokens"] == {"shortdep": 3, "longdep": 5}
    assert [a["index"] for a in doc["answers"]] == [0, 1, 2, 3]  # both groups answered, in question order
    # an explicit budget on the same file is other settings: refused, not mixed in
    with pytest.raises(SystemExit):
        generate_answers.main(["--passage_idx", "4", "--model_path", str(tiny_model), "--n_runs", "1", "--data_dir", str(tmp_path),
                               "--output_file", str(answers), "--temperature", "0", "--max_new_tokens", "3"])


# --- End to end with the tiny model and a real judge server ------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, loogle_corpus):
    out = tmp_path_factory.mktemp("data")
    loogle_to_parquet.main(["--input", str(loogle_corpus), "--output_dir", str(out), "--passages", ",".join(map(str, PASSAGES))])
    return out


@pytest.fixture(scope="module")
def judge_url(lexical_judge_url):
    return lexical_judge_url


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model, data_dir, judge_url):
    """Both passages answered and judged by the server: passage 0 with generate_answers then
    score_answers_with_server, passage 4 with scripts/eval/eval_sft.sh (eval_with_remote).
    Returns the results dir."""
    results = tmp_path_factory.mktemp("eval_results")
    generate_answers.main(["--passage_idx", "0", "--model_path", str(tiny_model), "--model_tag", "tiny",
                           "--n_runs", str(N_RUNS), "--data_dir", str(data_dir), "--results_dir", str(results), *FAST])
    score_answers_with_server.main(["--answers_file", str(results / "tiny" / "passage0" / "answers.json"),
                                    "--results_dir", str(results), "--judge_url", judge_url])
    env = {"passage_id": 4, "MODEL_PATH": tiny_model, "MODEL_TAG": "tiny", "N_RUNS": N_RUNS, "DATA_ROOT": data_dir,
           "RESULTS_DIR": results, "JUDGE_URL": judge_url}
    run_script("scripts/eval/eval_sft.sh", env, *FAST)
    return results


def run_script(script, env, *args):
    env = {**os.environ, "PYTHON": sys.executable, **{k: str(v) for k, v in env.items()}}
    done = subprocess.run(["bash", str(REPO_ROOT / script), *args], capture_output=True, text=True, timeout=600, env=env, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def cell(table, row, column):
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == row:
            return cells[header.index(column)]
    raise AssertionError(f"no row {row!r} in\n{table}")


def parse_cell(text):
    """'30.0 ± 14.1 (n=2)' -> (30.0, 14.1, 2); a ROUGE-L cell '30.0 ± 14.1' -> (30.0, 14.1, None)."""
    m = re.fullmatch(r"(\d+\.\d) ± (\d+\.\d)(?: \(n=(\d+)\))?", text)
    assert m, text
    return float(m.group(1)), float(m.group(2)), int(m.group(3)) if m.group(3) else None


def show_results(results_dir, *args):
    done = subprocess.run([sys.executable, str(SHOW_RESULTS), "--results_dir", str(results_dir), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_results_files_hold_the_verdicts(evaluated, tiny_model, data_dir, judge_url):
    for p in PASSAGES:
        doc = json.loads((evaluated / "tiny" / f"passage{p}" / "test_results.json").read_text())
        n_questions = len(load_eval_set(p, data_dir=data_dir).questions)
        assert len(doc["results"]) == N_RUNS * n_questions
        assert doc["model_path"] == str(tiny_model) and doc["passage_id"] == p
        assert doc["judge"]["backend"] == "lexical" and doc["judge"]["where"] == judge_url
        assert doc["generation"]["n_runs"] == N_RUNS and doc["generation"]["prompt"] == "closed_book"
        assert {r["run"] for r in doc["results"]} == set(range(N_RUNS))
        for r in doc["results"]:
            assert r["seed"] == doc["generation"]["base_seed"] + r["run"]
            assert set(r) >= {"question", "reference", "answer", "run", "score", "verdict"}
        per_run = [sum(r["verdict"] for r in doc["results"] if r["run"] == k) / n_questions for k in range(N_RUNS)]
        assert doc["accuracy"]["per_run"] == pytest.approx(per_run)
        assert doc["accuracy"]["mean"] == pytest.approx(sum(per_run) / N_RUNS)


@pytest.mark.slow
def test_server_and_local_lexical_verdicts_agree(evaluated, tmp_path):
    answers = evaluated / "tiny" / "passage0" / "answers.json"
    out = tmp_path / "local.json"
    score_answers.main(["--answers_file", str(answers), "--output_file", str(out)])
    local = json.loads(out.read_text())
    served = json.loads((evaluated / "tiny" / "passage0" / "test_results.json").read_text())
    assert [r["verdict"] for r in local["results"]] == [r["verdict"] for r in served["results"]]
    assert [r["score"] for r in local["results"]] == pytest.approx([r["score"] for r in served["results"]])
    for doc in (local, served):
        assert set(doc["automatic_metrics"]["mean"]) >= {"bleu1", "bleu4", "rouge1", "rouge2", "rougel", "meteor"}
    assert local["automatic_metrics"]["mean"] == pytest.approx(served["automatic_metrics"]["mean"])


@pytest.mark.slow
def test_known_verdicts_give_the_known_accuracy_in_the_table(evaluated, judge_url, tmp_path):
    """Answers rewritten by hand (the reference itself = correct, nonsense = wrong) must come back
    from the server with exactly the intended accuracy, and show_results must print it."""
    doc = json.loads((evaluated / "tiny" / "passage4" / "answers.json").read_text())
    correct = {0: {0}, 1: {0, 1, 2}}  # run -> question indices answered right
    for a in doc["answers"]:
        a["answer"] = a["reference"] if a["index"] in correct[a["run"]] else "zebra quantum marmalade"
    doc["model_tag"] = "oracle"
    answers = tmp_path / "oracle_answers.json"
    write_json_atomic(answers, doc)
    results = tmp_path / "results"
    score_answers_with_server.main(["--answers_file", str(answers), "--results_dir", str(results), "--judge_url", judge_url])
    n = len({a["index"] for a in doc["answers"]})
    expected = [1 / n, 3 / n]
    table = show_results(results, "--no_plots")
    mean, std, runs = parse_cell(cell(table, "passage4", "oracle acc %"))
    assert runs == 2
    assert mean == pytest.approx(100 * sum(expected) / 2, abs=0.05)
    assert std == pytest.approx(100 * abs(expected[1] - expected[0]) / math.sqrt(2), abs=0.05)
    # ROUGE-L recall of the reference against itself is 1, of the nonsense 0: the same numbers
    assert parse_cell(cell(table, "passage4", "oracle ROUGE-L %")) == (mean, std, None)
    assert table.splitlines()[0] == "Judge: lexical."


@pytest.mark.slow
def test_table_matches_the_per_question_verdicts(evaluated, tmp_path):
    table_file, csv_file, plots = tmp_path / "results.md", tmp_path / "results.csv", tmp_path / "plots"
    table = show_results(evaluated, "--output", str(table_file), "--csv", str(csv_file), "--plot_dir", str(plots))
    assert table_file.read_text() == table
    means = []
    for p in PASSAGES:
        doc = json.loads((evaluated / "tiny" / f"passage{p}" / "test_results.json").read_text())
        per_run = [sum(r["verdict"] for r in doc["results"] if r["run"] == k) / sum(r["run"] == k for r in doc["results"]) for k in range(N_RUNS)]
        mean = sum(per_run) / N_RUNS
        std = math.sqrt(sum((x - mean) ** 2 for x in per_run) / (N_RUNS - 1))
        assert parse_cell(cell(table, f"passage{p}", "tiny acc %")) == (round(100 * mean, 1), round(100 * std, 1), N_RUNS)
        rougel = sum(r["rougel"] for r in doc["results"]) / len(doc["results"])
        assert parse_cell(cell(table, f"passage{p}", "tiny ROUGE-L %"))[0] == round(100 * rougel, 1)
        means.append((mean, len(doc["results"]) // N_RUNS))
    overall_mean, _, n_passages = parse_cell(cell(table, "**overall, mean of passages**", "tiny acc %"))
    assert (overall_mean, n_passages) == (round(100 * sum(m for m, _ in means) / 2, 1), 2)
    by_question, _, n_questions = parse_cell(cell(table, "**overall, mean of questions**", "tiny acc %"))
    assert n_questions == sum(n for _, n in means)
    assert by_question == round(100 * sum(m * n for m, n in means) / n_questions, 1)
    csv_rows = csv_file.read_text().splitlines()
    assert csv_rows[0] == "split,variant,alpha,accuracy_mean,accuracy_std,rougel_mean,rougel_std,n_runs,n_passages,n_questions"
    assert len(csv_rows) == 1 + len(PASSAGES) + 2
    assert (plots / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_runs_are_seeded_and_generation_resumes(evaluated, tiny_model, data_dir, tmp_path):
    first = json.loads((evaluated / "tiny" / "passage0" / "answers.json").read_text())
    answers = tmp_path / "answers.json"
    # one run into a fresh file reproduces run 0 (same seed) ...
    generate_answers.main(["--passage_idx", "0", "--model_path", str(tiny_model), "--n_runs", "1",
                           "--data_dir", str(data_dir), "--output_file", str(answers), *FAST])
    again = json.loads(answers.read_text())
    run0 = [a["response"] for a in first["answers"] if a["run"] == 0]
    assert [a["response"] for a in again["answers"]] == run0
    assert run0 != [a["response"] for a in first["answers"] if a["run"] == 1]  # another seed, other samples
    # ... and asking for 2 runs keeps run 0 and adds run 1
    generate_answers.main(["--passage_idx", "0", "--model_path", str(tiny_model), "--n_runs", "2",
                           "--data_dir", str(data_dir), "--output_file", str(answers), *FAST])
    resumed = json.loads(answers.read_text())
    assert [a["response"] for a in resumed["answers"] if a["run"] == 0] == run0
    assert [a["response"] for a in resumed["answers"]] == [a["response"] for a in first["answers"]]
    # other settings on the same file are refused instead of mixed in
    with pytest.raises(SystemExit):
        generate_answers.main(["--passage_idx", "0", "--model_path", str(tiny_model), "--n_runs", "3", "--temperature", "0.1",
                               "--data_dir", str(data_dir), "--output_file", str(answers), *FAST])


def test_scripts_dry_run_print_the_command_with_passthrough_args():
    out = run_script("scripts/eval/eval_sft.sh", {"DRY_RUN": 1, "passage_id": 4, "MODEL_TAG": "inherited"}, "--temperature", "0.5").stdout
    assert "-m eval_loogle.eval_with_remote --passage_idx 4 " in out and "--model_tag inherited" in out and out.rstrip().endswith("--temperature 0.5")
    assert "checkpoints/passage4/stage2/final" in out
    out = run_script("scripts/eval_with_context.sh", {"DRY_RUN": 1, "MAX_CONTEXT_TOKENS": 8192}).stdout
    assert "--context_file" in out and "--max_context_tokens 8192" in out
    out = run_script("scripts/eval_gsm8k.sh", {"DRY_RUN": 1}).stdout
    assert "--data_file" in out and "gsm8k/test.parquet" in out and "--temperature 0" in out


@pytest.mark.slow
def test_eval_with_context_script(tiny_model, data_dir, judge_url, loogle_corpus, tmp_path):
    env = {"passage_id": 4, "MODEL_PATH": tiny_model, "N_RUNS": 1, "DATA_ROOT": data_dir, "RESULTS_DIR": tmp_path,
           "JUDGE_URL": judge_url, "LOOGLE": loogle_corpus, "MAX_CONTEXT_TOKENS": 512}
    run_script("scripts/eval_with_context.sh", env, *FAST)
    doc = json.loads((tmp_path / f"{model_tag_from_path(tiny_model)}-context" / "passage4" / "test_results.json").read_text())
    assert doc["generation"]["prompt"] == "passage_in_context" and doc["generation"]["max_context_tokens"] == 512
    assert 0 < doc["generation"]["passage_tokens_kept"] < 512


@pytest.mark.slow
def test_eval_gsm8k_script(tiny_model, tmp_path):
    from prepare_data import preprocess_gsm8k

    raw = tmp_path / "gsm8k_test.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": "3 + 4 = 7\n#### 7"},
        {"question": "A box holds 12 eggs. How many eggs are in 2 boxes?", "answer": "12 * 2 = 24\n#### 24"},
    ]))
    gsm8k = tmp_path / "data" / "gsm8k" / "test.parquet"
    preprocess_gsm8k.main(["--input", str(raw), "--output", str(gsm8k)])
    env = {"MODEL_PATH": tiny_model, "MODEL_TAG": "stage2", "GSM8K_FILE": gsm8k, "RESULTS_DIR": tmp_path / "results"}
    run_script("scripts/eval_gsm8k.sh", env, "--max_new_tokens", "8")
    doc = json.loads((tmp_path / "results" / "stage2" / "gsm8k" / "test_results.json").read_text())
    assert doc["judge"]["backend"] == "numeric_exact_match" and doc["split"] == "gsm8k"
    assert [r["reference"] for r in doc["results"]] == ["7", "24"] and doc["generation"]["temperature"] == 0


# --- Bad input ---------------------------------------------------------------------------------


def test_unknown_passage_index_is_a_clear_error(tiny_model, data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        generate_answers.main(["--passage_idx", "7", "--model_path", str(tiny_model), "--data_dir", str(data_dir), "--results_dir", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "no eval set for passage 7" in err and "[0, 4]" in err and "prepare_data.loogle_to_parquet" in err
    assert not any(tmp_path.iterdir())


def test_missing_model_path_is_a_clear_error(data_dir, tmp_path, capsys):
    missing = tmp_path / "checkpoints" / "passage0" / "stage2" / "final"
    with pytest.raises(SystemExit):
        generate_answers.main(["--passage_idx", "0", "--model_path", str(missing), "--data_dir", str(data_dir), "--results_dir", str(tmp_path / "r")])
    assert f"model path not found: {missing}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content", ["", "{}", '{"answers": []}'])
def test_empty_answers_file_is_a_clear_error(tmp_path, capsys, content):
    answers = tmp_path / "answers.json"
    answers.write_text(content)
    for scorer in (score_answers, score_answers_with_server):
        with pytest.raises(SystemExit):
            scorer.main(["--answers_file", str(answers), "--results_dir", str(tmp_path / "r")])
        assert "holds no answers" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_judge_server_down_is_a_clear_error(tmp_path, capsys):
    answers = tmp_path / "answers.json"
    write_json_atomic(answers, {"model_tag": "m", "model_path": "m", "split": "passage0", "data_file": "d", "generation": {},
                                "answers": [{"index": 0, "run": 0, "seed": 0, "question": "q", "reference": "r", "response": "r", "answer": "r"}]})
    with pytest.raises(SystemExit):
        score_answers_with_server.main(["--answers_file", str(answers), "--results_dir", str(tmp_path / "r"),
                                        "--judge_url", f"http://127.0.0.1:{free_port()}"])
    assert "judge server not reachable" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_gsm8k_answers_scored_by_numeric_match(tmp_path):
    answers = tmp_path / "answers.json"
    rows = [("72", "48 + 24 = 72\n#### 72", 0), ("10", "#### 12", 0), ("72", "Answer: 72", 1), ("10", "so 10 in all", 1)]
    write_json_atomic(answers, {
        "model_tag": "stage2", "model_path": "m", "split": "gsm8k", "data_file": "data/gsm8k/test.parquet",
        "data_source": "gsm8k", "generation": {},
        "answers": [{"index": i % 2, "run": run, "seed": run, "question": "q", "reference": ref, "response": resp, "answer": resp}
                    for i, (ref, resp, run) in enumerate(rows)],
    })
    score_answers.main(["--answers_file", str(answers), "--results_dir", str(tmp_path / "r")])
    doc = json.loads((tmp_path / "r" / "stage2" / "gsm8k" / "test_results.json").read_text())
    assert doc["judge"]["backend"] == "numeric_exact_match"
    assert doc["accuracy"]["per_run"] == [0.5, 1.0]
