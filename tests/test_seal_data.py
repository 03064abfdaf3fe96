"""seal_squad.data and SEAL/general-knowledge/squad_data.py: SEAL's grouped schema from grouped JSON,
raw SQuAD rows (json, jsonl, parquet) and the original nested JSON; SEAL's seeded selection rule."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import squad_fixture
from seal_squad.data import check_passages, count_questions, group_rows, load_passages, load_squad, select

REPO = Path(__file__).resolve().parent.parent
SQUAD_DATA = REPO / "SEAL" / "general-knowledge" / "squad_data.py"


def run_squad_data(*args):
    return subprocess.run([sys.executable, str(SQUAD_DATA), *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)


@pytest.fixture
def grouped_file(tmp_path):
    path = tmp_path / "grouped.json"
    path.write_text(json.dumps(squad_fixture.passages()))
    return path


def test_selection_is_seals_rule_exactly():
    items = [{"title": f"t{i}", "context": f"c{i}", "questions": [{"question": "q", "answer": "a"}]} for i in range(50)]
    expected = list(items)
    random.seed(7)
    random.shuffle(expected)
    assert select(items, seed=7, start=10, n=5) == expected[10:15]
    assert select(items, seed=7, start=0, n=None) == expected
    # The caller's list and the global RNG are left alone.
    assert items[0]["title"] == "t0"
    state = random.getstate()
    select(items, seed=3, start=0, n=2)
    assert random.getstate() == state
    # Disjoint, adjacent windows of one shuffle (the source rounds of part 2 rely on it).
    assert not {p["title"] for p in select(items, 42, 0, 20)} & {p["title"] for p in select(items, 42, 20, 20)}


def test_selection_beyond_the_data_is_an_error():
    items = squad_fixture.passages()
    with pytest.raises(ValueError, match="only 6 passages"):
        select(items, 42, 4, 3)
    with pytest.raises(ValueError, match="n >= 1"):
        select(items, 42, 0, 0)


def test_raw_rows_are_grouped_by_paragraph_in_order_of_first_appearance(tmp_path):
    rows = squad_fixture.raw_rows()
    expected = squad_fixture.grouped_raw_rows()
    assert group_rows(rows, "rows") == expected  # answer = the first reference; titles with spaces; unanswerable dropped
    # The same from every file format the loader reads.
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet")  # answers come back as numpy arrays
    (tmp_path / "nested.json").write_text(json.dumps(squad_fixture.nested_json()))
    for name in ("rows.json", "rows.jsonl", "rows.parquet"):
        assert load_squad(str(tmp_path / name)) == expected, name
    assert load_squad(str(tmp_path / "nested.json")) == squad_fixture.grouped_nested_json()
    assert count_questions(expected) == squad_fixture.N_QUESTIONS


def test_grouped_json_is_read_as_it_is(grouped_file):
    assert load_squad(str(grouped_file)) == squad_fixture.passages()
    assert load_passages(grouped_file) == squad_fixture.passages()


@pytest.mark.parametrize("mutate, message", [
    (lambda items: items[2].pop("context"), "passage 2: missing or non-string field 'context'"),
    (lambda items: items[1].update(questions=[]), "passage 1: 'questions' must be a non-empty list"),
    (lambda items: items[0]["questions"][1].pop("answer"), r"passage 0: questions\[1\] needs string fields"),
    (lambda items: items[3].update(context="  "), "passage 3: the context is empty"),
    (lambda items: items[4].update(completions=["ok", 3]), "passage 4: 'completions' must be a list of strings"),
])
def test_schema_errors_name_the_passage(mutate, message):
    items = squad_fixture.passages()
    mutate(items)
    with pytest.raises(ValueError, match=message):
        check_passages(items, "f.json")


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a hub dataset id"):
        load_squad("no_such_file")
    with pytest.raises(FileNotFoundError, match="input file not found"):
        load_squad(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text(json.dumps([{"title": "t", "question": "q?"}]))
    with pytest.raises(ValueError, match="row 0: need string fields context and question"):
        load_squad(str(tmp_path / "bad.json"))


def test_cli_writes_the_selection_in_the_grouped_schema(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in squad_fixture.raw_rows()))
    out = tmp_path / "out" / "eval.json"
    done = run_squad_data("--input", rows, "--seed", 42, "--start", 1, "--n", 3, "--output", out)
    assert done.returncode == 0, done.stderr
    expected = select(squad_fixture.grouped_raw_rows(), 42, 1, 3)
    # Each passage carries its position in the shuffle.
    assert json.loads(out.read_text()) == [{**p, "passage_id": 1 + i} for i, p in enumerate(expected)]
    assert f"3 passages, {count_questions(expected)} questions" in done.stdout
    # An existing output is kept unless --overwrite; an impossible selection writes nothing.
    assert "exists" in run_squad_data("--input", rows, "--n", 2, "--output", out).stderr
    bad = run_squad_data("--input", rows, "--start", 5, "--n", 3, "--output", tmp_path / "none.json")
    assert bad.returncode == 2 and "only 6 passages" in bad.stderr and not (tmp_path / "none.json").exists()


@pytest.mark.real_sample
def test_real_sample_reads_and_selects(squad_sample, tmp_path):
    passages = load_squad(str(squad_sample))
    assert len(passages) == 40 and count_questions(passages) == 226
    assert check_passages(passages, "sample") == passages
    assert all(q["answer"].strip() for p in passages for q in p["questions"])
    out = tmp_path / "sample_eval.json"
    done = run_squad_data("--input", squad_sample, "--start", 0, "--n", 10, "--output", out)
    assert done.returncode == 0, done.stderr
    shuffled = list(passages)
    random.seed(42)
    random.shuffle(shuffled)
    assert json.loads(out.read_text()) == [{**p, "passage_id": i} for i, p in enumerate(shuffled[:10])]
