"""prepare_data on LooGLE-format data the tests write (tests/loogle_fixture.py) and on the demo
corpus: every parquet read back by verl's own RLHFDataset / MultiTurnSFTDataset with the tiny
tokenizer, generation with the hf backend and the tiny model, the model-free cloze proposer,
resumability (a killed run finished by a rerun equals one clean run), and bad input. One extra
check (marked real_sample) runs the data code over LooGLE's real sample where it is available."""

import ast
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from prepare_data import generate_mixed_data, generate_qa, loogle_to_parquet, world
from prepare_data.cloze import BLANK, cloze_items, sentence_spans
from prepare_data.generate_qa import select_pairs
from prepare_data.passages import Passage, load_passages, parse_passage_ids
from prompts import cloze_question, solver_prompt
from utils import chunk_text

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO_ROOT / "demo" / "corpus.jsonl"
# Small enough for 2 CPU cores: 3 chunks of <= 96 tokens per passage, 16 new tokens.
SIZES = ["--chunk_tokens", "96", "--overlap_tokens", "16", "--max_chunks", "3", "--max_new_tokens", "16"]


def corpus_rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def rl_dataset(path, tokenizer, tmp_path):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    config = OmegaConf.create({"max_prompt_length": 512, "cache_dir": str(tmp_path / "verl_cache")})
    return RLHFDataset(str(path), tokenizer, config)


def sft_dataset(path, tokenizer):
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    return MultiTurnSFTDataset(str(path), tokenizer, OmegaConf.create({"max_length": 1024, "truncation": "error"}))


def manifest(data_dir, passage_id, stage):
    return json.loads((Path(data_dir) / f"passage{passage_id}" / f"manifest_{stage}.json").read_text())


# --- eval sets ----------------------------------------------------------------------------------


def test_eval_parquet_per_passage_read_by_verl(loogle_corpus, tiny_tokenizer, tmp_path):
    loogle_to_parquet.main(["--input", str(loogle_corpus), "--output_dir", str(tmp_path / "data"), "--passages", "0-4"])
    for passage_id, row in enumerate(corpus_rows(loogle_corpus)):
        qa_pairs = ast.literal_eval(row["qa_pairs"])
        path = tmp_path / "data" / f"passage{passage_id}" / "eval.parquet"
        dataset = rl_dataset(path, tiny_tokenizer, tmp_path)
        assert len(dataset) == len(qa_pairs)
        for index in (0, len(qa_pairs) - 1):
            item = dataset[index]
            qa = qa_pairs[index]
            assert item["data_source"] == "loogle"
            assert item["reward_model"] == {"style": "model", "ground_truth": qa["A"]}
            assert item["extra_info"]["passage_id"] == passage_id and item["extra_info"]["index"] == index
            assert item["extra_info"]["question"] == qa["Q"] and item["extra_info"]["evidence"] == qa["S"]
            assert item["extra_info"]["loogle_split"] == "shortdep"  # from the file's name, shortdep_qa.jsonl
            # Closed-book: the question in the solver prompt, no passage text.
            assert item["raw_prompt"] == [{"role": "user", "content": solver_prompt(row["title"], qa["Q"])}]
        info = manifest(tmp_path / "data", passage_id, "eval")
        assert info["rows"] == len(qa_pairs) and info["settings"]["loogle_split"] == "shortdep"


def test_eval_split_from_the_file_name_or_option(loogle_corpus, tmp_path, capsys):
    import pyarrow.parquet as pq

    def splits(input_file, *extra):
        out = tmp_path / input_file.stem
        loogle_to_parquet.main(["--input", str(input_file), "--output_dir", str(out), "--passages", "4", *extra])
        rows = pq.read_table(out / "passage4" / "eval.parquet").to_pylist()
        assert manifest(out, 4, "eval")["settings"]["loogle_split"] == rows[0]["extra_info"]["loogle_split"]
        return {r["extra_info"]["loogle_split"] for r in rows}

    longdep = tmp_path / "longdep_qa.jsonl"
    longdep.write_bytes(loogle_corpus.read_bytes())
    neutral = tmp_path / "my_documents.jsonl"
    neutral.write_bytes(loogle_corpus.read_bytes())
    assert splits(longdep) == {"longdep"}
    assert splits(neutral) == {"shortdep"} and splits(neutral, "--split", "longdep") == {"longdep"}
    with pytest.raises(SystemExit):
        loogle_to_parquet.main(["--input", str(longdep), "--output_dir", str(tmp_path / "x"), "--split", "shortdep"])
    assert "--split shortdep, but the file name 'longdep_qa.jsonl' says longdep" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# --- bad input ----------------------------------------------------------------------------------


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD_ROW = {"input": "Some text. More text.", "title": "T", "qa_pairs": "[{'Q': 'q?', 'A': 'a', 'S': 's'}]", "output": "none"}


@pytest.mark.parametrize(
    "rows,passages,message",
    [
        ([GOOD_ROW, "{not json"], "1", r"bad\.jsonl line 2 \(passage 1\): not valid JSON"),
        ([GOOD_ROW, {**GOOD_ROW, "input": "   "}], "0-1", r"bad\.jsonl line 2 \(passage 1\): the passage text \('input'\) is empty"),
        ([{"title": "T", "qa_pairs": "[]"}], "0", r"bad\.jsonl line 1 \(passage 0\): missing or non-string field 'input'"),
        ([{**GOOD_ROW, "qa_pairs": "[{'Q': 'q?'"}], "0", r"line 1 \(passage 0\): 'qa_pairs' is not a Python literal"),
        ([{**GOOD_ROW, "qa_pairs": "[{'Q': 'q?'}]"}], "0", r"qa_pairs\[0\] needs string fields Q and A"),
        ([GOOD_ROW, GOOD_ROW], "1-3", r"passage id\(s\) \[2, 3\] out of range: .*bad\.jsonl has 2 passages \(ids 0\.\.1\)"),
        ([GOOD_ROW], "0-x", r"bad passage range '0-x'"),
    ],
)
def test_bad_input_is_a_clear_error_before_any_output(tmp_path, capsys, rows, passages, message, tiny_model):
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "data"
    for entry_point, extra in [
        (loogle_to_parquet, []),
        (generate_mixed_data, ["--model", str(tiny_model), *SIZES]),
        (generate_qa, ["--model", str(tiny_model), *SIZES]),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            entry_point.main(["--input", str(bad), "--output_dir", str(out), "--passages", passages, *extra])
        assert exit_info.value.code == 2
        assert re.search(message, capsys.readouterr().err), entry_point.__name__
        assert not out.exists()


def test_missing_file_and_bad_sizes_are_clear_errors(tmp_path, capsys, loogle_corpus, tiny_model):
    with pytest.raises(SystemExit):
        generate_qa.main(["--input", str(tmp_path / "nope.jsonl"), "--passages", "0", "--model", str(tiny_model)])
    assert "LooGLE file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate_mixed_data.main(["--input", str(loogle_corpus), "--passages", "0", "--model", str(tiny_model), "--chunk_tokens", "64", "--overlap_tokens", "32"])
    assert "--overlap_tokens < chunk_tokens/2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate_qa.main(["--input", str(loogle_corpus), "--passages", "0", "--model", str(tmp_path / "no-model")])
    assert "is neither a local model directory nor a hub id" in capsys.readouterr().err


def test_passage_ranges():
    assert parse_passage_ids("0-4") == [0, 1, 2, 3, 4]
    assert parse_passage_ids("0,2,5-7") == [0, 2, 5, 6, 7]
    assert parse_passage_ids("3") == [3]
    with pytest.raises(ValueError, match="the end is before the start"):
        parse_passage_ids("4-2")


# --- stage 1 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage1_dir(loogle_corpus, tiny_model, tmp_path_factory):
    data = tmp_path_factory.mktemp("stage1")
    generate_mixed_data.main(["--input", str(loogle_corpus), "--passages", "0-1", "--output_dir", str(data), "--model", str(tiny_model), *SIZES])
    return data


def test_stage1_data_read_by_verl_with_verbatim_recall_and_continue(stage1_dir, loogle_corpus, tiny_tokenizer):
    rows = corpus_rows(loogle_corpus)
    for passage_id in (0, 1):
        path = stage1_dir / f"passage{passage_id}" / "stage1_sft.parquet"
        frame = pd.read_parquet(path)
        info = manifest(stage1_dir, passage_id, "stage1")
        assert len(sft_dataset(path, tiny_tokenizer)) == len(frame) == info["rows"]
        assert info["counts"]["chunks"] == 3
        assert info["counts"]["recall"] == info["counts"]["continue"] == 3
        assert info["counts"]["summary"] + info["skipped"]["summary_empty"] == 3
        assert frame["task"].value_counts().to_dict() == {t: info["counts"][t] for t in ("summary", "recall", "continue") if info["counts"][t]}
        text = rows[passage_id]["input"]
        recalled = [m[1]["content"] for m, t in zip(frame["messages"], frame["task"]) if t == "recall"]
        # recall targets: verbatim spans, in order, each starting inside the previous (overlap)
        positions = [text.index(span) for span in recalled]
        assert positions[0] == 0 and positions == sorted(positions)
        assert all(p < q < p + len(s) for p, q, s in zip(positions, positions[1:], recalled))
        for messages, task in zip(frame["messages"], frame["task"]):
            assert [m["role"] for m in messages] == ["user", "assistant"] and messages[1]["content"].strip()
            if task == "continue":
                prefix = messages[0]["content"].split("exactly as it appears in the document.\n\n", 1)[1]
                assert prefix + messages[1]["content"] in text
        item = sft_dataset(path, tiny_tokenizer)[0]
        assert item["loss_mask"].sum() > 0  # the assistant turn is trained on


def test_stage1_rerun_skips_complete_passages_and_redoes_changed_or_partial_ones(stage1_dir, loogle_corpus, tiny_model, caplog):
    args = ["--input", str(loogle_corpus), "--passages", "0-1", "--output_dir", str(stage1_dir), "--model", str(tiny_model), *SIZES]
    p0, p1 = (stage1_dir / f"passage{i}" / "stage1_sft.parquet" for i in (0, 1))
    before = (p0.stat().st_mtime_ns, p1.stat().st_mtime_ns)
    with caplog.at_level("INFO"):
        generate_mixed_data.main(args)
    assert (p0.stat().st_mtime_ns, p1.stat().st_mtime_ns) == before
    assert caplog.text.count("is complete, skipping") == 2
    # A parquet without its manifest (the run died between the two) is redone.
    (stage1_dir / "passage1" / "manifest_stage1.json").unlink()
    generate_mixed_data.main(args)
    assert p0.stat().st_mtime_ns == before[0] and p1.stat().st_mtime_ns != before[1]
    # Other settings: redone, and the manifest records them.
    generate_mixed_data.main([*args, "--tasks", "recall,continue"])
    info = manifest(stage1_dir, 0, "stage1")
    assert info["settings"]["tasks"] == ["recall", "continue"] and "summary" not in info["counts"]
    assert set(pd.read_parquet(p0)["task"]) == {"recall", "continue"}


@pytest.mark.slow
def test_killed_generation_finished_by_a_rerun_equals_one_clean_run(loogle_corpus, tiny_model, tmp_path):
    """SIGKILL in the middle of passage 1, rerun: the data equals an uninterrupted run's (seeded sampling)."""
    def command(out):
        return [sys.executable, "-m", "prepare_data.generate_mixed_data", "--input", str(loogle_corpus), "--passages", "0-2",
                "--output_dir", str(out), "--model", str(tiny_model), *SIZES, "--max_new_tokens", "24",
                "--temperature", "0.9", "--top_p", "0.95", "--seed", "5", "--summaries_per_chunk", "2"]

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "passage 1 (" in line and "generating" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    assert (killed / "passage0" / "manifest_stage1.json").exists()
    assert not (killed / "passage1" / "manifest_stage1.json").exists()
    assert not (killed / "passage1" / "stage1_sft.parquet").exists()

    rerun = subprocess.run(command(killed), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "passage 0: " in rerun.stderr and "is complete, skipping" in rerun.stderr
    clean = tmp_path / "clean"
    once = subprocess.run(command(clean), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert once.returncode == 0, once.stderr[-3000:]
    for passage_id in range(3):
        a = pd.read_parquet(killed / f"passage{passage_id}" / "stage1_sft.parquet")
        b = pd.read_parquet(clean / f"passage{passage_id}" / "stage1_sft.parquet")
        assert a.to_json() == b.to_json()
        assert (a["task"] == "summary").sum() >= 3  # sampled summaries are part of what is compared
        ma, mb = manifest(killed, passage_id, "stage1"), manifest(clean, passage_id, "stage1")
        assert (ma["counts"], ma["settings"]) == (mb["counts"], mb["settings"])


# --- stage 2 and GRPO ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qa_dir(loogle_corpus, tiny_model, tmp_path_factory):
    data = tmp_path_factory.mktemp("qa")
    common = ["--input", str(loogle_corpus), "--passages", "0-1", "--output_dir", str(data), "--model", str(tiny_model), *SIZES]
    generate_qa.main([*common, "--proposer", "two_step", "--format", "sft", "--questions_per_chunk", "2"])
    generate_qa.main([*common, "--proposer", "two_step", "--format", "grpo", "--questions_per_chunk", "2"])
    return data


def test_stage2_and_grpo_data_read_by_verl(qa_dir, loogle_corpus, tiny_tokenizer, tmp_path):
    rows = corpus_rows(loogle_corpus)
    for passage_id in (0, 1):
        sft_path = qa_dir / f"passage{passage_id}" / "stage2_sft.parquet"
        grpo_path = qa_dir / f"passage{passage_id}" / "grpo.parquet"
        sft_info, grpo_info = manifest(qa_dir, passage_id, "stage2"), manifest(qa_dir, passage_id, "grpo")
        assert sft_info["rows"] > 0 and len(sft_dataset(sft_path, tiny_tokenizer)) == sft_info["rows"] == sft_info["counts"]["qa"]
        dataset = rl_dataset(grpo_path, tiny_tokenizer, tmp_path)
        assert len(dataset) == grpo_info["rows"] > 0
        title = rows[passage_id]["title"]
        for index in range(len(dataset)):
            item = dataset[index]
            question = item["extra_info"]["question"]
            assert item["raw_prompt"] == [{"role": "user", "content": solver_prompt(title, question)}]
            assert item["extra_info"]["passage_id"] == passage_id and item["extra_info"]["index"] == index
            assert item["reward_model"]["ground_truth"].strip()
        # The same seeded generator: the GRPO prompts are the stage-2 questions.
        sft_questions = [m[0]["content"] for m in pd.read_parquet(sft_path)["messages"]]
        assert sft_questions == [dataset[i]["raw_prompt"][0]["content"] for i in range(len(dataset))]


def test_no_loogle_test_question_in_training_data(qa_dir, stage1_dir, loogle_corpus):
    for passage_id, row in enumerate(corpus_rows(loogle_corpus)[:2]):
        test_questions = [qa["Q"] for qa in ast.literal_eval(row["qa_pairs"])]
        training_text = json.dumps(
            [pd.read_parquet(qa_dir / f"passage{passage_id}" / f).to_dict("records") for f in ("stage2_sft.parquet", "grpo.parquet")]
            + [pd.read_parquet(stage1_dir / f"passage{passage_id}" / "stage1_sft.parquet").to_dict("records")],
            default=str, ensure_ascii=False,
        )
        assert not [q for q in test_questions if q in training_text]


def test_generated_pairs_equal_to_test_questions_are_dropped():
    passage = Passage(0, "T", "text", [{"Q": "Where was José Luis Picardo born?", "A": "Jerez"}])
    triples = [
        (None, "where was José Luis Picardo born", "Jerez"),  # the test question, other case/punctuation
        (None, "When did Picardo die?", "2010"),
        (None, "When did Picardo  die?", "27 July 2010"),  # duplicate
        (None, "Who taught Picardo?", "Luis Moya Blanco"),
    ]
    kept, skipped = select_pairs(passage, triples)
    assert [q for _, q, _ in kept] == ["When did Picardo die?", "Who taught Picardo?"]
    assert skipped == {"duplicates": 1, "eval_overlap": 1}


def test_json_proposer_counts_the_tiny_models_garbage_as_invalid(loogle_corpus, tiny_model, tiny_tokenizer, tmp_path):
    generate_qa.main(["--input", str(loogle_corpus), "--passages", "0", "--output_dir", str(tmp_path), "--model", str(tiny_model), *SIZES])
    info = manifest(tmp_path, 0, "stage2")
    # The random tiny model never writes a JSON list: every proposal is skipped and counted.
    assert info["rows"] == 0 and info["skipped"]["invalid"] == 3
    assert len(sft_dataset(tmp_path / "passage0" / "stage2_sft.parquet", tiny_tokenizer)) == 0


def test_loaded_passages_keep_ids_and_sources(loogle_corpus):
    passages = load_passages(loogle_corpus, [4, 1])
    assert [p.passage_id for p in passages] == [1, 4]
    assert passages[1].source.endswith("shortdep_qa.jsonl line 5")
    assert passages[0].title == corpus_rows(loogle_corpus)[1]["title"]


# --- the cloze proposer (rule-based, no model) ----------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_only(tiny_tokenizer, tmp_path_factory):
    """A folder with the tiny tokenizer and no model weights: whatever runs with it as --model
    provably loads no generator."""
    folder = tmp_path_factory.mktemp("tokenizer_only")
    tiny_tokenizer.save_pretrained(folder)
    return folder


def run_cloze(corpus, out, model, passages, fmt, *extra):
    generate_qa.main(["--input", str(corpus), "--passages", passages, "--output_dir", str(out), "--model", str(model),
                      "--proposer", "cloze", "--format", fmt, *SIZES, "--questions_per_chunk", "3", *extra])


@pytest.mark.parametrize("corpus_name", ["demo", "loogle_corpus"])
def test_cloze_gives_stage2_and_grpo_rows_for_every_passage_read_by_verl(corpus_name, request, tokenizer_only, tiny_tokenizer, tmp_path):
    corpus = DEMO_CORPUS if corpus_name == "demo" else request.getfixturevalue("loogle_corpus")
    n = len(corpus_rows(corpus))
    for fmt in ("sft", "grpo"):
        run_cloze(corpus, tmp_path, tokenizer_only, f"0-{n - 1}", fmt)
    for passage in load_passages(corpus):
        folder = tmp_path / f"passage{passage.passage_id}"
        chunks = chunk_text(passage.text, tiny_tokenizer, 96, 16)
        stage2, grpo = manifest(tmp_path, passage.passage_id, "stage2"), manifest(tmp_path, passage.passage_id, "grpo")
        for info in (stage2, grpo):
            assert info["settings"]["proposer"] == "cloze" and info["settings"]["pairs_from"].startswith("rules:")
            assert "no model output" in info["settings"]["pairs_from"]
        assert 0 < stage2["rows"] <= 3 * 3 and grpo["rows"] == stage2["rows"]
        sft = sft_dataset(folder / "stage2_sft.parquet", tiny_tokenizer)
        rl = rl_dataset(folder / "grpo.parquet", tiny_tokenizer, tmp_path)
        assert len(sft) == len(rl) == stage2["rows"]
        assert all(sft[i]["loss_mask"].sum() > 0 for i in range(len(sft)))
        test_questions = {qa["Q"] for qa in passage.qa_pairs}
        frame = pd.read_parquet(folder / "stage2_sft.parquet")
        for i, (messages, chunk_index) in enumerate(zip(frame["messages"], frame["chunk_index"])):
            item = rl[i]
            question, answer = item["extra_info"]["question"], item["reward_model"]["ground_truth"]
            assert messages[0]["content"] == item["raw_prompt"][0]["content"] == solver_prompt(passage.title, question)
            assert messages[1]["content"] == answer and answer.strip() and question not in test_questions
            # the answer is a span of its chunk, and the question is that chunk's sentence with the span blanked
            chunk = chunks[chunk_index]
            assert answer in chunk.text and question.startswith(cloze_question(passage.title, "")) and question.count(BLANK) == 1
            sentence = question[len(cloze_question(passage.title, "")):]
            assert sentence.replace(BLANK, answer).strip("… ") in " ".join(chunk.text.split())


def test_cloze_is_deterministic_and_counts_what_it_drops(loogle_corpus, tokenizer_only, tmp_path):
    for out in ("a", "b"):
        run_cloze(loogle_corpus, tmp_path / out, tokenizer_only, "1", "sft")
    a, b = (pd.read_parquet(tmp_path / out / "passage1" / "stage2_sft.parquet") for out in ("a", "b"))
    assert len(a) > 0 and a.to_json() == b.to_json()
    info = manifest(tmp_path / "a", 1, "stage2")
    # the fixture's filler sentences repeat: each is asked about once, the repeats counted
    assert info["skipped"]["repeated_sentences"] > 0 and info["skipped"]["duplicates"] == info["skipped"]["eval_overlap"] == 0
    questions = [m[0]["content"] for m in a["messages"]]
    assert len(set(questions)) == len(questions) == info["rows"]
    with pytest.raises(SystemExit):
        run_cloze(loogle_corpus, tmp_path / "c", tokenizer_only, "1", "sft", "--samples_per_chunk", "2")
    assert not (tmp_path / "c").exists()


def test_cloze_question_equal_to_a_test_question_is_dropped(tokenizer_only, tiny_tokenizer, tmp_path):
    text = "Ansel Drue kept the green lamp for thirty-two years. The lamp was lit in 1871 on Kestrel Point."
    passage = Passage(0, "Varrow", text, [])
    (chunk,) = chunk_text(text, tiny_tokenizer, 96, 16)
    first = cloze_question("Varrow", cloze_items(text, "Varrow", [chunk])[0][1].sentence)
    corpus = tmp_path / "one.jsonl"
    corpus.write_text(json.dumps({"input": passage.text, "title": "Varrow", "output": "none",
                                  "qa_pairs": repr([{"Q": first.upper(), "A": "x", "S": ""}])}) + "\n")
    run_cloze(corpus, tmp_path, tokenizer_only, "0", "grpo")
    info = manifest(tmp_path, 0, "grpo")
    assert info["skipped"]["eval_overlap"] == 1 and info["rows"] == 1
    assert pd.read_parquet(tmp_path / "passage0" / "grpo.parquet")["extra_info"][0]["question"] != first


@pytest.mark.parametrize("text", [
    "Hello",
    " ".join(["the river ran slowly past the old mill and the long low fields beyond it"] * 30),  # one sentence, many chunks
    "Zürich’s naïve café… «Ça va», dit-elle.",
    "1 2 3 4 5",
])
def test_cloze_gives_rows_for_any_passage_with_words(text, tokenizer_only, tiny_tokenizer, tmp_path):
    corpus = tmp_path / "odd.jsonl"
    corpus.write_text(json.dumps({"input": text, "title": "Odd", "qa_pairs": "[]", "output": "none"}, ensure_ascii=False) + "\n")
    run_cloze(corpus, tmp_path, tokenizer_only, "0", "sft")
    frame = pd.read_parquet(tmp_path / "passage0" / "stage2_sft.parquet")
    assert len(frame) > 0
    assert all(m[1]["content"] in text for m in frame["messages"])
    assert len(sft_dataset(tmp_path / "passage0" / "stage2_sft.parquet", tiny_tokenizer)) == len(frame)


def test_cloze_spans_are_numbers_and_names_from_the_sentence():
    text = ("The Varrow Lighthouse Cooperative was founded in 1871 by eleven families. The first keeper was "
            "Ansel Drue, who kept the lamp for thirty-two years. Today the cooperative has four hundred members. "
            "The watch book has never missed a night, e.g. in storms.")
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "The Varrow Lighthouse Cooperative was founded in 1871 by eleven families.",
        "The first keeper was Ansel Drue, who kept the lamp for thirty-two years.",
        "Today the cooperative has four hundred members.",
        "The watch book has never missed a night, e.g. in storms.",  # "e.g. in": no sentence end
    ]
    chunk = type("Chunk", (), {"index": 0, "start_char": 0, "end_char": len(text), "text": text})()
    items = [item for _, item in cloze_items(text, "The Varrow Lighthouse Cooperative", [chunk])]
    assert len(items) == 4
    for item in items:
        assert text[item.start_char : item.start_char + len(item.answer)] == item.answer
    answers = [item.answer for item in items]
    assert answers[0] in {"1871", "eleven"}  # the title's name is never asked for
    assert answers[1] in {"Ansel Drue", "thirty-two"} and answers[2] == "four hundred"  # "Today" is no name
    assert answers[3] == "missed"  # no number or name: the (first) longest word


@pytest.mark.real_sample
def test_real_loogle_sample_through_the_data_code(loogle_sample, tokenizer_only, tiny_tokenizer, tmp_path):
    """Extra check where LooGLE's real sample is available: eval sets, recall/continue stage-1 data
    and cloze stage-2/GRPO data for all its passages, read back by verl."""
    n = len(corpus_rows(loogle_sample))
    loogle_to_parquet.main(["--input", str(loogle_sample), "--output_dir", str(tmp_path)])
    generate_mixed_data.main(["--input", str(loogle_sample), "--passages", f"0-{n - 1}", "--output_dir", str(tmp_path),
                              "--model", str(tokenizer_only), "--tasks", "recall,continue", *SIZES])
    for fmt in ("sft", "grpo"):
        run_cloze(loogle_sample, tmp_path, tokenizer_only, f"0-{n - 1}", fmt)
    for passage in load_passages(loogle_sample):
        folder = tmp_path / f"passage{passage.passage_id}"
        assert len(rl_dataset(folder / "eval.parquet", tiny_tokenizer, tmp_path)) == len(passage.qa_pairs) > 0
        assert len(sft_dataset(folder / "stage1_sft.parquet", tiny_tokenizer)) == 2 * 3
        assert len(sft_dataset(folder / "stage2_sft.parquet", tiny_tokenizer)) == manifest(tmp_path, passage.passage_id, "stage2")["rows"] > 0
        grpo = rl_dataset(folder / "grpo.parquet", tiny_tokenizer, tmp_path)
        assert len(grpo) > 0 and all(grpo[i]["reward_model"]["ground_truth"] in passage.text for i in range(len(grpo)))


# --- mixing shards --------------------------------------------------------------------------------


def test_mix_data_concatenates_complete_shards_keeping_passage_ids(qa_dir, tiny_tokenizer, tmp_path, capsys):
    from prepare_data import mix_data

    out = tmp_path / "mixed" / "grpo_0-1.parquet"
    mix_data.main(["--data_dir", str(qa_dir), "--passages", "0-1", "--file", "grpo.parquet", "--output", str(out), "--shuffle"])
    dataset = rl_dataset(out, tiny_tokenizer, tmp_path)
    sizes = [manifest(qa_dir, p, "grpo")["rows"] for p in (0, 1)]
    assert len(dataset) == sum(sizes)
    items = [dataset[i] for i in range(len(dataset))]
    assert sorted(item["extra_info"]["passage_id"] for item in items) == [0] * sizes[0] + [1] * sizes[1]
    assert [item["extra_info"]["index"] for item in items] == list(range(len(items)))

    sft_out = tmp_path / "mixed" / "stage2.parquet"
    mix_data.main(["--data_dir", str(qa_dir), "--passages", "0-1", "--file", "stage2_sft.parquet", "--output", str(sft_out)])
    assert pd.read_parquet(sft_out)["passage_id"].tolist() == [0] * sizes[0] + [1] * sizes[1]

    # A shard without its manifest (interrupted) or a missing one is refused, by name.
    (qa_dir / "passage1" / "manifest_grpo.json").rename(tmp_path / "saved.json")
    try:
        with pytest.raises(SystemExit):
            mix_data.main(["--data_dir", str(qa_dir), "--passages", "0-1", "--file", "grpo.parquet", "--output", str(tmp_path / "x.parquet")])
        assert "passage1/grpo.parquet: no matching manifest for passage 1" in capsys.readouterr().err
    finally:
        (tmp_path / "saved.json").rename(qa_dir / "passage1" / "manifest_grpo.json")
    with pytest.raises(SystemExit):
        mix_data.main(["--data_dir", str(qa_dir), "--passages", "0-2", "--file", "grpo.parquet", "--output", str(tmp_path / "x.parquet")])
    assert "missing shard" in capsys.readouterr().err and not (tmp_path / "x.parquet").exists()


# --- other datasets (local files in each dataset's own format) --------------------------------------


def test_preprocess_gsm8k_squad_narrativeqa_read_by_verl(tmp_path, tiny_tokenizer, capsys):
    from prepare_data import preprocess_gsm8k, preprocess_narrativeqa, preprocess_squad

    gsm8k = write_jsonl(tmp_path / "gsm8k.jsonl", [
        {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
        {"question": "A book costs $1,200. Two cost?", "answer": "2 * 1200 = 2400\n#### 2,400"},
    ])
    preprocess_gsm8k.main(["--input", str(gsm8k), "--output", str(tmp_path / "gsm8k.parquet")])
    items = rl_dataset(tmp_path / "gsm8k.parquet", tiny_tokenizer, tmp_path)
    assert [items[i]["reward_model"]["ground_truth"] for i in range(2)] == ["7", "2400"]
    assert "Tom has 3 apples" in items[0]["raw_prompt"][0]["content"] and items[1]["extra_info"]["index"] == 1

    squad = tmp_path / "dev-v2.0.json"
    squad.write_text(json.dumps({"version": "v2.0", "data": [{"title": "Normans", "paragraphs": [{
        "context": "The Normans gave their name to Normandy, a region in France.",
        "qas": [
            {"id": "a1", "question": "In what country is Normandy?", "answers": [{"text": "France", "answer_start": 54}], "is_impossible": False},
            {"id": "a2", "question": "Who gave their name to Paris?", "answers": [], "is_impossible": True},
        ]}]}]}))
    preprocess_squad.main(["--input", str(squad), "--output", str(tmp_path / "squad.parquet")])
    preprocess_squad.main(["--input", str(squad), "--output", str(tmp_path / "squad_cb.parquet"), "--closed_book"])
    with_context, closed = (rl_dataset(tmp_path / f, tiny_tokenizer, tmp_path) for f in ("squad.parquet", "squad_cb.parquet"))
    assert len(with_context) == len(closed) == 1  # the unanswerable v2.0 question is left out
    assert with_context[0]["reward_model"]["ground_truth"] == "France"
    assert "region in France" in with_context[0]["raw_prompt"][0]["content"]
    assert "region in France" not in closed[0]["raw_prompt"][0]["content"]
    assert closed[0]["raw_prompt"][0]["content"] == solver_prompt("Normans", "In what country is Normandy?")

    narrative = write_jsonl(tmp_path / "narrativeqa.jsonl", [{
        "document": {"id": "d1", "summary": {"text": "Ansel keeps the green lamp for thirty-two years.", "title": "Varrow"}},
        "question": {"text": "How long does Ansel keep the lamp?"},
        "answers": [{"text": "Thirty-two years"}, {"text": "32 years"}],
    }])
    preprocess_narrativeqa.main(["--input", str(narrative), "--output", str(tmp_path / "nqa.parquet")])
    (item,) = [rl_dataset(tmp_path / "nqa.parquet", tiny_tokenizer, tmp_path)[0]]
    assert item["reward_model"]["ground_truth"] == "Thirty-two years"
    assert list(item["extra_info"]["answers"]) == ["Thirty-two years", "32 years"]

    bad = write_jsonl(tmp_path / "bad_gsm8k.jsonl", [{"question": "No final answer?", "answer": "just words"}])
    with pytest.raises(SystemExit):
        preprocess_gsm8k.main(["--input", str(bad), "--output", str(tmp_path / "bad.parquet")])
    assert "bad_gsm8k.jsonl row 0: need `question` and an `answer` ending in '#### <number>'" in capsys.readouterr().err
    assert not (tmp_path / "bad.parquet").exists()


# --- bash drivers ---------------------------------------------------------------------------------

SCRIPTS = REPO_ROOT / "scripts" / "gen_data"


@pytest.mark.parametrize("script,args", [("gen_sft_data.sh", []), ("gen_sft_data.sh", ["0", "zero"]), ("gen_rl_data.sh", ["0"]), ("process_loogle_eval.sh", ["a-b"])])
def test_drivers_print_usage_on_bad_arguments(script, args):
    out = subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "usage:" in out.stderr


@pytest.mark.slow
def test_drivers_generate_every_file_for_a_passage(loogle_corpus, tiny_model, tmp_path, tiny_tokenizer):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LOOGLE": str(loogle_corpus), "DATA_ROOT": str(tmp_path), "GENERATOR": str(tiny_model),
           "GEN_BACKEND": "hf", "CHUNK_TOKENS": "96", "OVERLAP_TOKENS": "16", "MAX_CHUNKS": "2", "SUMMARY_MAX_NEW_TOKENS": "16",
           "QA_MAX_NEW_TOKENS": "16", "QUESTIONS_PER_CHUNK": "2", "PROPOSER": "two_step", "PYTHON": sys.executable}
    for script, args in [("process_loogle_eval.sh", ["3"]), ("gen_sft_data.sh", ["", "3"]), ("gen_rl_data.sh", ["", "3"])]:
        out = subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    folder = tmp_path / "passage3"
    assert sorted(p.name for p in folder.iterdir()) == [
        "eval.parquet", "grpo.parquet", "manifest_eval.json", "manifest_grpo.json", "manifest_stage1.json",
        "manifest_stage2.json", "stage1_sft.parquet", "stage2_sft.parquet",
    ]
    assert len(rl_dataset(folder / "eval.parquet", tiny_tokenizer, tmp_path)) == 25
    assert manifest(tmp_path, 3, "stage2")["settings"]["proposer"] == "two_step"


# --- the synthetic world (prepare_data/world.py) and its proposer -------------------------------


def write_world(out, seed=0, *extra):
    world.main(["--output_dir", str(out), "--seed", str(seed), "--passages", "3", "--people_per_passage", "4",
                "--pretrain_people", "8", *extra])
    return corpus_rows(out / "passages.jsonl"), corpus_rows(out / "pretrain.jsonl"), json.loads((out / "world.json").read_text())


def test_world_is_deterministic_from_its_seed_and_keeps_passages_apart(tmp_path):
    passages, pretrain, facts = write_world(tmp_path / "a")
    again = write_world(tmp_path / "b")
    assert (passages, pretrain) == again[:2]
    assert write_world(tmp_path / "c", 1)[0] != passages
    # LooGLE's format, read back by the loader every stage uses
    loaded = load_passages(tmp_path / "a" / "passages.jsonl")
    assert [p.title for p in loaded] == [r["title"] for r in passages]
    names = [{p["name"] for p in group} for group in facts["passages"] + facts["pretrain"]]
    assert sum(map(len, names)) == len(set().union(*names)), "a person appears in two documents"
    for row, people in zip(passages, facts["passages"]):
        # every fact in the text, in each of the passage's biographies; QA only about the skill kinds
        for person in people:
            stated = {(kind, value) for name, kind, value in world.facts_in(row["input"], world.KNOWN_KINDS + world.SKILL_KINDS)
                      if name == person["name"]}
            assert stated == {(k, person[k]) for k in world.VALUES}
            assert sum(line.count(person["name"]) for line in row["input"].splitlines()) == 3 * 6  # 3 bios x 6 facts
        assert {qa["type"] for qa in row["qa_pairs"]} == set(world.SKILL_KINDS)
        assert all(qa["A"] in qa["S"] and qa["A"] in row["input"] and len(qa["A"].split()) == 1 for qa in row["qa_pairs"])
    # pretraining: every person's known kinds; the skill kinds only for --pretrain_skill_share of them
    for share, kinds in ((0, world.KNOWN_KINDS), (1, world.KNOWN_KINDS + world.SKILL_KINDS)):
        for row in write_world(tmp_path / f"share{share}", 0, "--pretrain_skill_share", str(share))[1]:
            assert {qa["type"] for qa in row["qa_pairs"]} == set(kinds)
    asked = [{qa["type"] for qa in row["qa_pairs"]} for row in pretrain]
    assert all(set(world.KNOWN_KINDS) <= kinds for kinds in asked)


def test_world_refuses_impossible_sizes_before_writing(tmp_path, capsys):
    with pytest.raises(SystemExit):
        world.main(["--output_dir", str(tmp_path / "w"), "--people_per_passage", "0"])
    with pytest.raises(SystemExit):
        world.main(["--output_dir", str(tmp_path / "w"), "--pretrain_people", "1000000"])
    with pytest.raises(SystemExit):
        world.main(["--output_dir", str(tmp_path / "w"), "--pretrain_skill_share", "1.5"])
    err = capsys.readouterr().err
    assert "distinct names" in err and "a share, from 0 to 1" in err and not (tmp_path / "w").exists()


def test_world_proposer_asks_each_known_fact_once_read_by_verl(tokenizer_only, tiny_tokenizer, tmp_path):
    write_world(tmp_path / "world")
    corpus = tmp_path / "world" / "passages.jsonl"
    generate_qa.main(["--input", str(corpus), "--passages", "0-2", "--output_dir", str(tmp_path / "data"), "--model",
                      str(tokenizer_only), "--proposer", "world", "--format", "sft", "--chunk_tokens", "96",
                      "--overlap_tokens", "16", "--questions_per_chunk", "100"])
    facts = json.loads((tmp_path / "world" / "world.json").read_text())
    for passage, people in zip(load_passages(corpus), facts["passages"]):
        info = manifest(tmp_path / "data", passage.passage_id, "stage2")
        assert info["settings"]["proposer"] == "world" and "no model output" in info["settings"]["pairs_from"]
        frame = pd.read_parquet(tmp_path / "data" / f"passage{passage.passage_id}" / "stage2_sft.parquet")
        expected = {(solver_prompt(passage.title, world.QUESTIONS[k].format(name=p["name"])), p[k])
                    for p in people for k in world.KNOWN_KINDS}
        assert {(m[0]["content"], m[1]["content"]) for m in frame["messages"]} == expected
        assert len(frame) == len(expected) == info["rows"] and info["skipped"]["facts_not_asked"] == 0
        assert len(sft_dataset(tmp_path / "data" / f"passage{passage.passage_id}" / "stage2_sft.parquet", tiny_tokenizer)) == len(frame)
