r"""Stage-2 SFT data and GRPO prompts for LooGLE passages: question-answer pairs about each chunk
of the passage.

    python -m prepare_data.generate_qa --input data/loogle/shortdep_qa.jsonl \
        --passages 0-4 --model Qwen/Qwen2.5-7B-Instruct --backend vllm --format sft
    python -m prepare_data.generate_qa ... --format grpo      # RL source passages
    python -m prepare_data.generate_qa --input demo/corpus.jsonl --passages 0-2 \
        --model checkpoints/tiny-qwen2 --proposer cloze --output_dir data/demo   # no model runs

Proposers:
  json      (default) the generator writes a JSON list of --questions_per_chunk pairs per
            chunk, parsed leniently
  two_step  the generator writes questions one per line, then answers each with the chunk in
            context (works with any generator, even one that cannot write JSON)
  cloze     RULE-BASED, NOT MODEL OUTPUT: fill-in-the-blank questions made from the chunk's own
            sentences, the answer a name, number or word of the sentence, verbatim
            (prepare_data/cloze.py). Deterministic; gives rows for any passage with words in it,
            on any machine; --model only supplies the chunking tokenizer. The CPU quickstart
            uses it, since a tiny random model writes no usable QA. The manifest says so
            (settings.pairs_from).
  world     RULE-BASED, NOT MODEL OUTPUT, for the synthetic world's passages (prepare_data/world.py):
            the world's own questions about the known kinds (home town, trade, sport) of each
            person whose facts the chunk states, answered from the chunk's sentences; each person
            and kind asked once, up to --questions_per_chunk per chunk. Never the skill kinds
            (colour, pet, food): those are the passage's held-out QA. No model runs.
Pairs are de-duplicated per passage (questions compared case- and punctuation-blind); malformed
items are skipped and counted in the manifest.

No leak of the evaluation set: the pairs come only from the passage text (and the generator
reading it); the passage's LooGLE test QA are never shown to it, and a generated question equal
to one of those test questions is dropped anyway (counted as `eval_overlap`).

--format sft  -> DATA/passage{N}/stage2_sft.parquet (`messages`: closed-book solver prompt ->
                 answer; verl MultiTurnSFTDataset) + manifest_stage2.json
--format grpo -> DATA/passage{N}/grpo.parquet (verl RLHFDataset schema; the question in
                 extra_info["question"] for the judge reward) + manifest_grpo.json
"""

from prepare_data import world
from prepare_data.cloze import cloze_items
from prepare_data.passages import RL_COLUMNS, SFT_COLUMNS, generate_per_prompt, generation_cli, rl_row, run_per_passage, sft_row, templates_sha256
from prompts import (
    CLOZE_TEMPLATE,
    CONTEXT_SOLVER_TEMPLATE,
    PROPOSER_TEMPLATE,
    QUESTIONS_TEMPLATE,
    SOLVER_TEMPLATE,
    cloze_question,
    context_solver_prompt,
    proposer_prompt,
    questions_prompt,
    solver_prompt,
)
from utils import extract_answer, normalize_question, parse_qa_pairs, parse_questions

DATA_SOURCE = "loogle_generated"
ABILITY = "closed_book_qa"
OUTPUTS = {"sft": ("stage2", "stage2_sft.parquet"), "grpo": ("grpo", "grpo.parquet")}


def _proposals(args, chunks, get_generator, make_prompt):
    """(chunk, completion) for every completion the generator writes for `make_prompt(chunk)`."""
    outputs = generate_per_prompt(get_generator(), args, [make_prompt(c) for c in chunks], args.samples_per_chunk)
    return [(chunk, text) for chunk, completions in zip(chunks, outputs) for text in completions]


def propose_json(args, passage, chunks, get_generator):
    """[(chunk, question, answer)] and the skip counts, from JSON-list proposals."""
    triples, invalid = [], 0
    for chunk, text in _proposals(args, chunks, get_generator, lambda c: proposer_prompt(passage.title, c.text, args.questions_per_chunk)):
        parsed = parse_qa_pairs(text)
        invalid += parsed.invalid
        triples.extend((chunk, p["question"], p["answer"]) for p in parsed.pairs)
    return triples, {"invalid": invalid}


def propose_two_step(args, passage, chunks, get_generator):
    """[(chunk, question, answer)]: questions one per line, then answers with the chunk in context."""
    asked, no_question = [], 0
    for chunk, text in _proposals(args, chunks, get_generator, lambda c: questions_prompt(passage.title, c.text, args.questions_per_chunk)):
        questions = parse_questions(text, limit=args.questions_per_chunk)
        no_question += not questions
        asked.extend((chunk, q) for q in questions)
    answer_prompts = [[{"role": "user", "content": context_solver_prompt(chunk.text, q)}] for chunk, q in asked]
    answers = get_generator().generate(answer_prompts, args.max_new_tokens, 0.0, 1.0, args.seed, 1) if answer_prompts else []
    triples, no_answer = [], 0
    for (chunk, question), (text,) in zip(asked, answers):
        answer = extract_answer(text)
        if answer:
            triples.append((chunk, question, answer))
        else:
            no_answer += 1
    return triples, {"invalid": no_question + no_answer}


def propose_cloze(args, passage, chunks, get_generator):
    """[(chunk, question, answer)] without a model: up to --questions_per_chunk cloze items per
    chunk, spread over its sentences; a sentence the passage repeats is asked about once."""
    by_chunk, seen, repeated = {}, set(), 0
    for chunk, item in cloze_items(passage.text, passage.title, chunks):
        question = cloze_question(passage.title, item.sentence)
        if normalize_question(question) in seen:
            repeated += 1
            continue
        seen.add(normalize_question(question))
        by_chunk.setdefault(chunk.index, (chunk, []))[1].append((question, item.answer))
    triples, not_asked = [], 0
    for chunk, pairs in by_chunk.values():
        k = min(args.questions_per_chunk, len(pairs))
        picked = sorted({round(i * (len(pairs) - 1) / max(k - 1, 1)) for i in range(k)})
        not_asked += len(pairs) - len(picked)
        triples.extend((chunk, *pairs[i]) for i in picked)
    return triples, {"repeated_sentences": repeated, "sentences_not_asked": not_asked}


def propose_world(args, passage, chunks, get_generator):
    """[(chunk, question, answer)] without a model: the world's known-kind questions about the
    facts each chunk states, each (person, kind) once, up to --questions_per_chunk per chunk."""
    asked, stated, triples = set(), set(), []
    for chunk in chunks:
        facts = {(name, kind): value for name, kind, value in world.facts_in(chunk.text)}
        stated |= set(facts)
        new = [(name, kind) for name, kind in facts if (name, kind) not in asked][:args.questions_per_chunk]
        for name, kind in new:
            asked.add((name, kind))
            triples.append((chunk, world.QUESTIONS[kind].format(name=name), facts[(name, kind)]))
    return triples, {"facts_not_asked": len(stated - asked)}


PROPOSERS = {"json": propose_json, "two_step": propose_two_step, "cloze": propose_cloze, "world": propose_world}
PROPOSER_TEMPLATES = {"json": [PROPOSER_TEMPLATE], "two_step": [QUESTIONS_TEMPLATE, CONTEXT_SOLVER_TEMPLATE], "cloze": [CLOZE_TEMPLATE],
                      "world": [*world.QUESTIONS.values()]}


def select_pairs(passage, triples):
    """Drop repeated questions and any that equals one of the passage's LooGLE test questions."""
    test_questions = {normalize_question(qa["Q"]) for qa in passage.qa_pairs}
    seen, kept, skipped = set(), [], {"duplicates": 0, "eval_overlap": 0}
    for chunk, question, answer in triples:
        key = normalize_question(question)
        if key in test_questions:
            skipped["eval_overlap"] += 1
        elif key in seen or not key:
            skipped["duplicates"] += 1
        else:
            seen.add(key)
            kept.append((chunk, question, answer))
    return kept, skipped


def grpo_row(passage, chunk, question, answer, index):
    return rl_row(
        DATA_SOURCE, ABILITY, solver_prompt(passage.title, question), answer,
        index=index, passage_id=passage.passage_id, question=question, chunk_index=chunk.index, title=passage.title,
    )


def main(argv=None):
    options = [
        ("--format", {"default": "sft", "choices": sorted(OUTPUTS), "help": "sft: stage2_sft.parquet (default); grpo: grpo.parquet"}),
        ("--proposer", {"default": "json", "choices": sorted(PROPOSERS), "help": "json (default), two_step, cloze or world (rule-based, no model; see above)"}),
        ("--questions_per_chunk", {"type": int, "default": 5, "help": "pairs asked for per chunk (default: 5)"}),
        ("--samples_per_chunk", {"type": int, "default": 1, "help": "proposals sampled per chunk (>1 needs --temperature > 0)"}),
    ]

    def check(args):
        if args.questions_per_chunk < 1 or args.samples_per_chunk < 1:
            raise ValueError("--questions_per_chunk and --samples_per_chunk must be >= 1")
        if args.proposer in ("cloze", "world") and args.samples_per_chunk != 1:
            raise ValueError(f"--proposer {args.proposer} is deterministic: --samples_per_chunk must be 1")

    args, passages = generation_cli(argv, __doc__, 1024, options, check)

    def build_rows(passage, chunks, n_chunks, tokenizer, get_generator):
        triples, skipped = PROPOSERS[args.proposer](args, passage, chunks, get_generator)
        kept, dropped = select_pairs(passage, triples)
        if args.format == "sft":
            rows = [sft_row("qa", passage, chunk, solver_prompt(passage.title, q), a) for chunk, q, a in kept]
        else:
            rows = [grpo_row(passage, chunk, q, a, i) for i, (chunk, q, a) in enumerate(kept)]
        return rows, {"qa": len(rows)}, {**skipped, **dropped}

    pairs_from = {
        "cloze": "rules: cloze questions made from the passage's own sentences, answers verbatim spans (no model output)",
        "world": "rules: the synthetic world's known-kind questions about the facts the passage states (no model output)",
    }.get(args.proposer, f"model output: {args.model} ({args.backend} backend)")
    settings = {
        "proposer": args.proposer,
        "pairs_from": pairs_from,
        "questions_per_chunk": args.questions_per_chunk,
        "samples_per_chunk": args.samples_per_chunk,
        "templates_sha256": templates_sha256(*PROPOSER_TEMPLATES[args.proposer], SOLVER_TEMPLATE),
    }
    stage, output_name = OUTPUTS[args.format]
    columns = SFT_COLUMNS if args.format == "sft" else RL_COLUMNS
    run_per_passage(args, passages, stage, output_name, columns, settings, build_rows)


if __name__ == "__main__":
    main()
