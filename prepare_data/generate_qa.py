r"""Stage-2 SFT data and GRPO prompts for LooGLE passages: question-answer pairs that the
generator proposes from each chunk of the passage.

    python -m prepare_data.generate_qa --input ../shared/data/loogle-sample/shortdep_qa.jsonl \
        --passages 0-4 --model Qwen/Qwen2.5-7B-Instruct --backend vllm --format sft
    python -m prepare_data.generate_qa ... --format grpo      # RL source passages

Proposers: `json` (default) asks for a JSON list of --questions_per_chunk pairs per chunk and
parses it leniently; `two_step` asks for questions one per line, then answers each with the
chunk in context (works with any generator, including the tiny CPU demo model). Pairs are
de-duplicated per passage (questions compared case- and punctuation-blind); malformed items
are skipped and counted in the manifest.

No leak of the evaluation set: the pairs come only from the generator reading the passage
text; the passage's LooGLE test QA are never shown to it, and a generated question equal to
one of those test questions is dropped anyway (counted as `eval_overlap`).

--format sft  -> DATA/passage{N}/stage2_sft.parquet (`messages`: closed-book solver prompt ->
                 answer; verl MultiTurnSFTDataset) + manifest_stage2.json
--format grpo -> DATA/passage{N}/grpo.parquet (verl RLHFDataset schema; the question in
                 extra_info["question"] for the judge reward) + manifest_grpo.json
"""

import argparse
import logging

from prepare_data.passages import RL_COLUMNS, SFT_COLUMNS, add_generation_args, check_generation_args, load_passages, parse_passage_ids, run_per_passage, templates_sha256
from prompts import (
    CONTEXT_SOLVER_TEMPLATE,
    PROPOSER_TEMPLATE,
    QUESTIONS_TEMPLATE,
    SOLVER_TEMPLATE,
    context_solver_prompt,
    proposer_prompt,
    questions_prompt,
    solver_prompt,
)
from utils import extract_answer, normalize_question, parse_qa_pairs, parse_questions

DATA_SOURCE = "loogle_generated"
ABILITY = "closed_book_qa"
OUTPUTS = {"sft": ("stage2", "stage2_sft.parquet"), "grpo": ("grpo", "grpo.parquet")}


def propose_json(args, passage, chunks, generator):
    """[(chunk, question, answer)] and the skip counts, from JSON-list proposals."""
    conversations = [[{"role": "user", "content": proposer_prompt(passage.title, c.text, args.questions_per_chunk)}] for c in chunks]
    outputs = generator.generate(conversations, args.max_new_tokens, args.temperature, args.top_p, args.seed, args.samples_per_chunk)
    triples, invalid = [], 0
    for chunk, completions in zip(chunks, outputs):
        for text in completions:
            parsed = parse_qa_pairs(text)
            invalid += parsed.invalid
            triples.extend((chunk, p["question"], p["answer"]) for p in parsed.pairs)
    return triples, {"invalid": invalid}


def propose_two_step(args, passage, chunks, generator):
    """[(chunk, question, answer)]: questions one per line, then answers with the chunk in context."""
    conversations = [[{"role": "user", "content": questions_prompt(passage.title, c.text, args.questions_per_chunk)}] for c in chunks]
    outputs = generator.generate(conversations, args.max_new_tokens, args.temperature, args.top_p, args.seed, args.samples_per_chunk)
    asked, no_question = [], 0
    for chunk, completions in zip(chunks, outputs):
        for text in completions:
            questions = parse_questions(text, limit=args.questions_per_chunk)
            no_question += not questions
            asked.extend((chunk, q) for q in questions)
    answer_prompts = [[{"role": "user", "content": context_solver_prompt(chunk.text, q)}] for chunk, q in asked]
    answers = generator.generate(answer_prompts, args.max_new_tokens, 0.0, 1.0, args.seed, 1) if answer_prompts else []
    triples, no_answer = [], 0
    for (chunk, question), (text,) in zip(asked, answers):
        answer = extract_answer(text)
        if answer:
            triples.append((chunk, question, answer))
        else:
            no_answer += 1
    return triples, {"invalid": no_question + no_answer}


PROPOSERS = {"json": propose_json, "two_step": propose_two_step}


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


def sft_row(passage, chunk, question, answer, index):
    return {
        "messages": [
            {"role": "user", "content": solver_prompt(passage.title, question)},
            {"role": "assistant", "content": answer},
        ],
        "task": "qa",
        "passage_id": passage.passage_id,
        "chunk_index": chunk.index,
    }


def grpo_row(passage, chunk, question, answer, index):
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": solver_prompt(passage.title, question)}],
        "ability": ABILITY,
        "reward_model": {"style": "model", "ground_truth": answer},
        "extra_info": {
            "index": index,
            "passage_id": passage.passage_id,
            "question": question,
            "chunk_index": chunk.index,
            "title": passage.title,
        },
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generation_args(parser, max_new_tokens=1024)
    parser.add_argument("--format", default="sft", choices=sorted(OUTPUTS), help="sft: stage2_sft.parquet (default); grpo: grpo.parquet")
    parser.add_argument("--proposer", default="json", choices=sorted(PROPOSERS), help="json (default) or two_step (see above)")
    parser.add_argument("--questions_per_chunk", type=int, default=5, help="pairs asked for per chunk (default: 5)")
    parser.add_argument("--samples_per_chunk", type=int, default=1, help="proposals sampled per chunk (>1 needs --temperature > 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        check_generation_args(args)
        if args.questions_per_chunk < 1 or args.samples_per_chunk < 1:
            raise ValueError("--questions_per_chunk and --samples_per_chunk must be >= 1")
        passages = load_passages(args.input, parse_passage_ids(args.passages))
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))

    make_row = sft_row if args.format == "sft" else grpo_row

    def build_rows(passage, chunks, n_chunks, tokenizer, get_generator):
        triples, skipped = PROPOSERS[args.proposer](args, passage, chunks, get_generator())
        kept, dropped = select_pairs(passage, triples)
        rows = [make_row(passage, chunk, q, a, i) for i, (chunk, q, a) in enumerate(kept)]
        return rows, {"qa": len(rows)}, {**skipped, **dropped}

    templates = [PROPOSER_TEMPLATE] if args.proposer == "json" else [QUESTIONS_TEMPLATE, CONTEXT_SOLVER_TEMPLATE]
    settings = {
        "proposer": args.proposer,
        "questions_per_chunk": args.questions_per_chunk,
        "samples_per_chunk": args.samples_per_chunk,
        "templates_sha256": templates_sha256(*templates, SOLVER_TEMPLATE),
    }
    stage, output_name = OUTPUTS[args.format]
    columns = SFT_COLUMNS if args.format == "sft" else RL_COLUMNS
    run_per_passage(args, passages, stage, output_name, columns, settings, build_rows)


if __name__ == "__main__":
    main()
