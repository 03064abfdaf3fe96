"""utils.py: token chunking of long LooGLE-format text (tests/loogle_fixture.py) with the tiny
tokenizer, the parsers on outputs the way models really write them, and the small shared helpers
(atomic JSON writes, hub ids)."""

import json

import pytest

from utils import (
    api_key_for,
    chunk_text,
    extract_answer,
    is_hub_id,
    normalize_question,
    parse_qa_pairs,
    parse_questions,
    parse_summary,
    redact,
    split_continuation,
    token_starts,
    write_json_atomic,
)


@pytest.fixture(scope="module")
def passage_text(loogle_corpus):
    with open(loogle_corpus, encoding="utf-8") as f:
        return json.loads(f.readline())["input"]


# --- chunking ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_tokens,overlap", [(256, 32), (100, 0), (64, 31)])
def test_chunks_cover_the_text_in_order_with_the_configured_overlap(passage_text, tiny_tokenizer, chunk_tokens, overlap):
    chunks = chunk_text(passage_text, tiny_tokenizer, chunk_tokens, overlap)
    starts = token_starts(passage_text, tiny_tokenizer)
    n_tokens = len(starts)
    assert len(chunks) > n_tokens // chunk_tokens  # a long passage gives many chunks
    assert chunks[0].start_char == 0 and chunks[0].start_token == 0
    assert chunks[-1].end_char == len(passage_text) and chunks[-1].end_token == n_tokens
    for k, chunk in enumerate(chunks):
        assert chunk.index == k
        assert chunk.text == passage_text[chunk.start_char : chunk.end_char]
        assert 0 < chunk.end_token - chunk.start_token <= chunk_tokens
    for prev, nxt in zip(chunks, chunks[1:]):
        shared = prev.end_token - nxt.start_token
        # exactly `overlap` tokens shared; a few more or less only to keep a character whole
        at_overlap = prev.end_token - overlap
        assert shared == overlap or (abs(shared - overlap) <= 3 and starts[at_overlap] == starts[at_overlap - 1])
        assert prev.start_char < nxt.start_char <= prev.end_char  # in order, no gap
    if overlap == 0:
        assert "".join(c.text for c in chunks) == passage_text


def test_chunks_end_at_sentence_ends_where_possible(passage_text, tiny_tokenizer):
    chunks = chunk_text(passage_text, tiny_tokenizer, 200, 20)
    ends_sentence = [c.text.rstrip().endswith((".", "!", "?", '."', ".)")) for c in chunks[:-1]]
    assert sum(ends_sentence) >= 0.9 * len(ends_sentence)
    # ... and the sentence search never shrinks a chunk below half the budget.
    assert all(c.end_token - c.start_token >= 100 for c in chunks[:-1])


def test_chunking_never_cuts_inside_a_character(tiny_tokenizer):
    text = "Café 😀 naïve. " * 40 + "Ünïcödé ends here."
    chunks = chunk_text(text, tiny_tokenizer, 7, 0)
    assert "".join(c.text for c in chunks) == text
    for chunk in chunks:
        assert chunk.text.encode("utf-8").decode("utf-8") == chunk.text
        assert not chunk.text.startswith("\ufffd")


def test_short_and_empty_texts(tiny_tokenizer):
    (only,) = chunk_text("One short sentence.", tiny_tokenizer, 512, 64)
    assert only.text == "One short sentence."
    assert chunk_text("", tiny_tokenizer, 512, 64) == []


@pytest.mark.parametrize("chunk_tokens,overlap", [(0, 0), (100, 50), (100, -1)])
def test_chunking_rejects_bad_sizes(tiny_tokenizer, chunk_tokens, overlap):
    with pytest.raises(ValueError, match="overlap_tokens"):
        chunk_text("Some text.", tiny_tokenizer, chunk_tokens, overlap)


def test_split_continuation_gives_verbatim_halves(passage_text, tiny_tokenizer):
    for chunk in chunk_text(passage_text, tiny_tokenizer, 128, 16)[:20]:
        prefix, rest = split_continuation(chunk.text, tiny_tokenizer)
        assert prefix + rest == chunk.text
        assert prefix.strip() and rest.strip()
        n = len(token_starts(chunk.text, tiny_tokenizer))
        assert 0.2 * n <= len(token_starts(prefix, tiny_tokenizer)) <= 0.8 * n


# --- parsing model outputs ----------------------------------------------------------------------

QA_OUTPUTS = [
    # (model output, expected questions, expected invalid count)
    ('[{"question": "Where was Picardo born?", "answer": "Jerez"}]', ["Where was Picardo born?"], 0),
    (
        'Sure! Here are the pairs:\n```json\n[\n  {"question": "Q one?", "answer": "A one"},\n'
        '  {"question": "Q two?", "answer": "A two"}\n]\n```\nLet me know if you need more.',
        ["Q one?", "Q two?"],
        0,
    ),
    ('[{"question": "Trailing?", "answer": "commas",},\n {"question": "Two?", "answer": "yes",},]', ["Trailing?", "Two?"], 0),
    # cut off by max_new_tokens in the middle of the third item
    ('[{"question": "First?", "answer": "1"}, {"question": "Second?", "answer": "2"}, {"question": "Thi', ["First?", "Second?"], 0),
    ("[{'question': 'Single quotes?', 'answer': \"Python's literal\"}]", ["Single quotes?"], 0),
    ('{"qa_pairs": [{"question": "Wrapped?", "answer": "in an object"}]}', ["Wrapped?"], 0),
    ('[{"Question": "Capitalised keys?", "Answer": 1919}, {"Q": "Short keys?", "A": "ok"}]', ["Capitalised keys?", "Short keys?"], 0),
    ('[{"question": "No answer?"}, {"question": "Good?", "answer": "yes"}, {"question": "", "answer": "x"}]', ["Good?"], 2),
    ('<think>The excerpt says [1] many things {maybe}.</think>\n[{"question": "After thinking?", "answer": "ok"}]<|im_end|>junk', ["After thinking?"], 0),
    ('[{"question": "Brackets [1] and \\"quotes\\" inside?", "answer": "a {b} c"}]', ['Brackets [1] and "quotes" inside?'], 0),
    ('{"question": "Loose object one?", "answer": "a"}\n{"question": "Loose object two?", "answer": "b"}', ["Loose object one?", "Loose object two?"], 0),
    ("1. Q: When was he born?\n   A: 18 June 1919\n2. Q: Where?\n   A: Jerez de la Frontera", ["When was he born?", "Where?"], 0),
    ("Q1: Who taught him?\nA1: Luis Moya Blanco\n\nQ2: Which school?\nA2: The Escuela Técnica\nSuperior de Arquitectura", ["Who taught him?", "Which school?"], 0),
    ("**Question 1:** What did he study first?\n**Answer:** Law.\n\n**Question 2:** Why did he stop?\n**Answer:** The war.", ["What did he study first?", "Why did he stop?"], 0),
    ("Question: Inline? Answer: yes, inline\nQuestion: Unanswered?", ["Inline?"], 1),
    ("Sorry, I cannot help with that.", [], 1),
    ("", [], 1),
    ("ighisingTOnalornirc month reve ZTOnalorn Z Z Zising", [], 1),
]


@pytest.mark.parametrize("text,questions,invalid", QA_OUTPUTS)
def test_parse_qa_pairs_on_real_world_outputs(text, questions, invalid):
    parsed = parse_qa_pairs(text)
    assert [p["question"] for p in parsed.pairs] == questions
    assert parsed.invalid == invalid
    assert all(p["answer"].strip() for p in parsed.pairs)


def test_parse_qa_pairs_keeps_answers_intact():
    parsed = parse_qa_pairs('```\n[{"question": "Q?", "answer": "A \\"quoted\\" answer, with a comma"}]\n```')
    assert parsed.pairs == [{"question": "Q?", "answer": 'A "quoted" answer, with a comma'}]
    parsed = parse_qa_pairs('[{"Question": "Year?", "Answer": 1919}]')
    assert parsed.pairs == [{"question": "Year?", "answer": "1919"}]
    parsed = parse_qa_pairs("Q1: Which school?\nA1: The Escuela Técnica\nSuperior de Arquitectura")
    assert parsed.pairs[0]["answer"] == "The Escuela Técnica Superior de Arquitectura"


@pytest.mark.parametrize(
    "text,summary",
    [
        ("Summary: Picardo was an architect.", "Picardo was an architect."),
        ("<think>short</think>\n\n**Summary:** He moved to Madrid.<|im_end|>", "He moved to Madrid."),
        ("Here is a summary of the excerpt: He studied law.", "He studied law."),
        ("A plain summary with no label.", "A plain summary with no label."),
        ("", None),
        ("   <|im_end|>", None),
        ("<think>never closed", None),
    ],
)
def test_parse_summary(text, summary):
    assert parse_summary(text) == summary


def test_parse_questions_one_per_line():
    text = "Here are 3 questions:\n1. When was Picardo born?\n2) Who was his teacher?\n\n- Q3: Where did he study?\n2. Who was his teacher?"
    assert parse_questions(text) == ["When was Picardo born?", "Who was his teacher?", "Where did he study?"]
    assert parse_questions(text, limit=2) == ["When was Picardo born?", "Who was his teacher?"]
    assert parse_questions("<|im_end|>") == []


def test_normalize_question_ignores_case_spacing_and_punctuation():
    assert normalize_question("Where was  José Luis Picardo born?") == normalize_question("where was josé luis picardo born")
    assert normalize_question("Who?") != normalize_question("Why?")


def test_extract_answer_still_strips_reasoning_and_labels():
    assert extract_answer("<think>hmm</think>Answer: Pan-Islamism.<|im_end|>") == "Pan-Islamism."
    assert extract_answer("Let me think.\nAnswer: 1919") == "1919"


# --- small shared helpers -----------------------------------------------------------------------


def test_write_json_atomic_replaces_whole_files_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "doc.json"
    write_json_atomic(target, {"title": "Zürich", "n": 1})
    assert json.loads(target.read_text(encoding="utf-8")) == {"title": "Zürich", "n": 1}
    assert "Zürich" in target.read_text(encoding="utf-8")  # unicode kept readable
    # a write that fails midway (an object JSON cannot hold) keeps the old file, and no temp file
    with pytest.raises(TypeError):
        write_json_atomic(target, {"bad": object()})
    assert json.loads(target.read_text(encoding="utf-8")) == {"title": "Zürich", "n": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["doc.json"]


@pytest.mark.parametrize("name,hub", [
    ("Qwen/Qwen2.5-7B-Instruct", True), ("meta-llama/Llama-3.1-8B", True), ("bigai-nlco/LooGLE", True),
    ("checkpoints/passage0", False), ("data/loogle", False), ("./model", False), ("../x/y", False),
    ("Qwen2.5-7B", False), ("a/b/c", False), ("org/-bad", False), ("org/na..me", False), ("/abs/path", False),
])
def test_is_hub_id(name, hub):
    assert is_hub_id(name) is hub


def test_api_key_for_gives_the_openai_key_to_openai_only(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-0123456789")
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    assert api_key_for("https://api.openai.com/v1") == "sk-openai-0123456789"
    for other in ("http://api.openai.com/v1", "https://api.openai.com.evil.example/v1", "http://127.0.0.1:8000/v1",
                  "https://openai-proxy.example/v1"):
        assert api_key_for(other) is None, other
    monkeypatch.setenv("VLLM_API_KEY", "vllm-key")
    assert api_key_for("http://127.0.0.1:8000/v1") == "vllm-key"
    assert api_key_for("https://api.openai.com/v1") == "sk-openai-0123456789"
    assert api_key_for("http://127.0.0.1:8000/v1", "named") == "named"


def test_redact_hides_the_keys_this_process_holds_and_anything_key_shaped(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "plain-openai-key-0123")
    monkeypatch.setenv("VLLM_API_KEY", "vllm-key-4567")
    text = ("Incorrect API key provided: plain-openai-key-0123 / sk-proj-AbC_dEf-123456 / vllm-key-4567 / "
            "Authorization: Bearer tok.en-x / token-given-89")
    assert redact(text, "token-given-89") == ("Incorrect API key provided: [redacted] / [redacted] / [redacted] / "
                                              "Authorization: Bearer [redacted] / [redacted]")
    assert redact("HTTP 404: model 'judge' not found") == "HTTP 404: model 'judge' not found"
