"""loogle-clean/clean_loogle.py: LooGLE-format files with the defects real copies have (a broken
qa_pairs literal, empty, malformed and repeated QA, stray whitespace, a repeated document) are
cleaned into jsonl the pipeline reads, with a manifest that accounts for every drop; bad input
is refused before anything is written; the hub path runs through `datasets` on a local
repository laid out like bigai-nlco/LooGLE (the real hub cannot be reached from the tests)."""

import ast
import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import load_module_from_path
from prepare_data.passages import load_passages

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "loogle-clean" / "clean_loogle.py"


@pytest.fixture(scope="module")
def clean_loogle():
    return load_module_from_path("clean_loogle", SCRIPT)


def read_rows(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_rows(path, rows):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return Path(path)


def with_defects(rows):
    """LooGLE rows (at least 5) with one of each defect, and what cleaning must make of them."""
    rows = copy.deepcopy(rows[:5])
    qa = [ast.literal_eval(r["qa_pairs"]) for r in rows]
    # row 0: an empty question, an item without an answer, stray spaces in a kept answer
    qa[0].append({"Q": "   ", "A": "something", "S": ""})
    qa[0].append({"Q": "A question without an answer?", "S": ""})
    qa[0][0]["A"] = "  " + qa[0][0]["A"].replace(" ", "   ") + " \n"
    # row 2: a question asked twice (other case and punctuation)
    qa[2].append({"Q": qa[2][0]["Q"].upper().rstrip("?") + " ?", "A": "another answer", "S": ""})
    for r, pairs in zip(rows, qa):
        r["qa_pairs"] = repr(pairs)
    # row 1: a qa_pairs literal cut off mid-item (unparseable)
    rows[1]["qa_pairs"] = rows[1]["qa_pairs"][: len(rows[1]["qa_pairs"]) // 2]
    # row 3: Windows line ends, trailing spaces, a padded title
    original_text = rows[3]["input"]
    rows[3]["input"] = "\n  " + original_text.replace("\n", "   \r\n") + "  \n\n"
    rows[3]["title"] = "  " + rows[3]["title"] + "\t"
    # row 5: row 4 again, with one question of its own and one it shares with row 4
    extra = {"Q": "Which question only the repeated copy asks?", "A": "This one.", "S": ""}
    repeated = {**rows[4], "qa_pairs": repr([*ast.literal_eval(rows[4]["qa_pairs"])[:1], extra])}
    # row 6: no document text
    rows += [repeated, {"input": "  ", "title": "Empty", "qa_pairs": "[]", "output": "none"}]
    expected = {
        "dropped_by_reason": {"document_duplicate": 1, "document_missing_field": 1, "qa_duplicate": 2, "qa_empty": 1,
                              "qa_malformed": 1, "qa_pairs_unparseable": 1},
        "source_rows": [[0], [2], [3], [4, 5]],
        "qa_out": [len(qa[0]) - 2, len(qa[2]) - 1, len(qa[3]), len(qa[4]) + 1],
        "text_3": original_text.strip(), "answer_0": " ".join(qa[0][0]["A"].split()), "extra": extra,
    }
    return rows, expected


def check_cleaned(out, config, rows_in, expected):
    manifest = json.loads((out / f"manifest_{config}.json").read_text(encoding="utf-8"))
    path = out / f"{config}.jsonl"
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and manifest["bytes"] == path.stat().st_size
    assert manifest["documents_in"] == len(rows_in) and manifest["documents_out"] == len(expected["source_rows"])
    assert manifest["dropped_by_reason"] == expected["dropped_by_reason"]
    assert sum(manifest["dropped_by_reason"].values()) == len(manifest["dropped"])
    assert {(d["row"], d["reason"]) for d in manifest["dropped"]} >= {(1, "qa_pairs_unparseable"), (5, "document_duplicate"), (6, "document_missing_field")}
    assert [p["source_rows"] for p in manifest["passages"]] == expected["source_rows"]
    assert [p["qa"] for p in manifest["passages"]] == expected["qa_out"] and manifest["qa_out"] == sum(expected["qa_out"])
    # what the pipeline reads: passage N = the N-th row, every row valid
    passages = load_passages(path)
    assert [len(p.qa_pairs) for p in passages] == expected["qa_out"]
    assert [p.title for p in passages] == [rows_in[r[0]]["title"].strip() for r in expected["source_rows"]]
    assert passages[0].qa_pairs[0]["A"] == expected["answer_0"]
    assert passages[2].text == expected["text_3"] and "\r" not in path.read_text(encoding="utf-8")
    assert expected["extra"] in passages[3].qa_pairs  # the repeated document's own question is kept
    for passage in passages:
        assert all(qa["Q"] == " ".join(qa["Q"].split()) and qa["Q"] and qa["A"] for qa in passage.qa_pairs)
        assert all(line == line.rstrip() for line in passage.text.split("\n"))
    # LooGLE's own row format: qa_pairs stays a Python-literal string
    assert all(isinstance(r["qa_pairs"], str) and set(r) == {"input", "title", "qa_pairs", "output"} for r in read_rows(path))
    return manifest


def test_defects_are_cleaned_and_accounted_for(clean_loogle, loogle_corpus, tmp_path):
    rows, expected = with_defects(read_rows(loogle_corpus))
    source = write_rows(tmp_path / "LooGLE" / "shortdep_qa.jsonl", rows)
    out = tmp_path / "data" / "loogle"
    clean_loogle.main(["--input", str(source), "--output_dir", str(out)])
    manifest = check_cleaned(out, "shortdep_qa", rows, expected)
    assert manifest["source"] == {"file": str(source), "config": "shortdep_qa", "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    assert sorted(p.name for p in out.iterdir()) == ["manifest_shortdep_qa.json", "shortdep_qa.jsonl"]
    # cleaning its own output changes nothing and drops nothing
    again = tmp_path / "again"
    clean_loogle.main(["--input", str(out / "shortdep_qa.jsonl"), "--output_dir", str(again)])
    assert (again / "shortdep_qa.jsonl").read_bytes() == (out / "shortdep_qa.jsonl").read_bytes()
    assert json.loads((again / "manifest_shortdep_qa.json").read_text())["dropped"] == []


def test_runs_as_a_file_from_anywhere_on_both_configs_and_formats(loogle_corpus, tmp_path):
    rows = read_rows(loogle_corpus)
    short = write_rows(tmp_path / "in" / "shortdep_qa.json", rows[:3])  # LooGLE's .json files: one object per line
    long_dir = tmp_path / "in" / "longdep_qa"
    long_dir.mkdir()
    pd.DataFrame(rows[3:]).to_parquet(long_dir / "test-00000-of-00001.parquet")  # the hub's file layout
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--input", str(short), str(long_dir / "test-00000-of-00001.parquet"),
                           "--output_dir", str(tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [len(load_passages(tmp_path / "out" / f"{c}.jsonl")) for c in ("shortdep_qa", "longdep_qa")] == [3, 2]
    assert "shortdep_qa: 3 of 3 documents" in done.stderr and "longdep_qa: 2 of 2 documents" in done.stderr
    usage = subprocess.run([sys.executable, str(SCRIPT), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "--output_dir" in usage.stdout and "bigai-nlco/LooGLE" in usage.stdout


def test_bad_input_is_refused_before_anything_is_written(clean_loogle, loogle_corpus, tmp_path, capsys):
    rows = read_rows(loogle_corpus)
    out = tmp_path / "out"
    good = write_rows(tmp_path / "shortdep_qa.jsonl", rows)
    cases = [
        ([str(write_rows(tmp_path / "loogle.jsonl", rows))], "cannot tell which LooGLE configuration"),
        ([str(good), str(tmp_path / "missing" / "longdep_qa.jsonl")], "input file not found"),
        ([str(good), str(write_rows(tmp_path / "x" / "shortdep_qa.jsonl", rows))], "two inputs hold shortdep_qa"),
        ([str(good), str(write_rows(tmp_path / "longdep_qa.jsonl", [{"text": "not LooGLE"}] * 3))], "no usable LooGLE documents"),
    ]
    broken = tmp_path / "b" / "longdep_qa.jsonl"
    broken.parent.mkdir()
    broken.write_text(json.dumps(rows[0]) + "\n{truncated\n")
    cases.append(([str(good), str(broken)], r"longdep_qa.jsonl line 2: not valid JSON"))
    for inputs, message in cases:
        with pytest.raises(SystemExit):
            clean_loogle.main(["--input", *inputs, "--output_dir", str(out)])
        err = capsys.readouterr().err
        assert message.replace("\\", "") in err, err
        assert not out.exists()  # the good first file is not written either


def test_old_outputs_stay_whole_when_a_rerun_fails(clean_loogle, loogle_corpus, tmp_path, capsys):
    rows = read_rows(loogle_corpus)
    out = tmp_path / "out"
    clean_loogle.main(["--input", str(write_rows(tmp_path / "shortdep_qa.jsonl", rows)), "--output_dir", str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SystemExit):
        clean_loogle.main(["--input", str(write_rows(tmp_path / "new" / "shortdep_qa.jsonl", [{"x": 1}])), "--output_dir", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def hub_replica(root, rows_by_config):
    """A local dataset repository laid out like bigai-nlco/LooGLE: a README whose YAML names the
    configurations, each a folder of parquet files with a test split."""
    lines = ["---", "configs:"]
    for config, rows in rows_by_config.items():
        (root / config).mkdir(parents=True)
        pd.DataFrame(rows).to_parquet(root / config / "test-00000-of-00001.parquet")
        lines += [f"- config_name: {config}", "  data_files:", "  - split: test", f"    path: {config}/test-*"]
    (root / "README.md").write_text("\n".join([*lines, "---", ""]))
    return root


def test_hub_path_through_datasets(clean_loogle, loogle_corpus, tmp_path, monkeypatch):
    import datasets

    rows, expected = with_defects(read_rows(loogle_corpus))
    repo = hub_replica(tmp_path / "LooGLE", {"shortdep_qa": rows, "longdep_qa": read_rows(loogle_corpus)[:2]})
    monkeypatch.setattr(clean_loogle, "HUB_DATASET", str(repo))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    clean_loogle.main(["--output_dir", str(out)])
    manifest = check_cleaned(out, "shortdep_qa", rows, expected)
    assert manifest["source"]["hub_dataset"] == str(repo) and manifest["source"]["split"] == "test"
    assert manifest["source"]["config"] == "shortdep_qa" and manifest["source"]["fingerprint"]
    assert len(load_passages(out / "longdep_qa.jsonl")) == 2
    clean_loogle.main(["--output_dir", str(tmp_path / "only_long"), "--configs", "longdep_qa"])
    assert sorted(p.name for p in (tmp_path / "only_long").iterdir()) == ["longdep_qa.jsonl", "manifest_longdep_qa.json"]


def test_unreachable_hub_is_a_clear_error(clean_loogle, tmp_path, monkeypatch, capsys):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as e:
        clean_loogle.main(["--output_dir", str(tmp_path / "out")])
    assert "could not load bigai-nlco/LooGLE (shortdep_qa, split test) from the hub" in str(e.value)
    assert "pass --input" in str(e.value) and not (tmp_path / "out").exists()


@pytest.mark.real_sample
def test_real_loogle_sample_with_defects(clean_loogle, loogle_sample, tmp_path):
    """Extra check where LooGLE's real sample is available: as it is, nothing is dropped; with
    the defects injected, the same accounting as on the fixture."""
    clean_loogle.main(["--input", str(loogle_sample), "--output_dir", str(tmp_path / "as_is")])
    manifest = json.loads((tmp_path / "as_is" / "manifest_shortdep_qa.json").read_text())
    rows = read_rows(loogle_sample)
    assert manifest["dropped"] == [] and manifest["documents_out"] == len(rows)
    assert manifest["qa_out"] == sum(len(ast.literal_eval(r["qa_pairs"])) for r in rows)
    defective, expected = with_defects(rows)
    source = write_rows(tmp_path / "in" / "shortdep_qa.jsonl", defective)
    clean_loogle.main(["--input", str(source), "--output_dir", str(tmp_path / "out")])
    check_cleaned(tmp_path / "out", "shortdep_qa", defective, expected)
