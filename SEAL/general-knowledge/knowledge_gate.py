"""The knowledge gate between a source round's SFT and its GRPO: does the SFT model know its
passages? It must answer its own source questions clearly better than the base model.

    python SEAL/general-knowledge/knowledge_gate.py answer --model ROUND/stage1/final \\
        --passages ROUND/passages.json --output ROUND/gate/sft.json --judge_url http://127.0.0.1:8123
    python SEAL/general-knowledge/knowledge_gate.py answer --model Qwen/Qwen2.5-7B ... --output ROUND/gate/base.json
    python SEAL/general-knowledge/knowledge_gate.py decide --base ROUND/gate/base.json --sft ROUND/gate/sft.json \\
        --output ROUND/gate.json [--margin 0.05] [--override]

`answer` asks one model every question of the passages closed book, as the evaluation asks them
(the raw answer prompt of "Topic: <title>\\n<question>", greedy, at most --max_new_tokens tokens,
stop at EOS), grades the answers with the judge server's squad grader (an empty answer is wrong)
and writes them with the macro accuracy (mean of the passages' accuracies, SEAL's aggregation).
One model per call, so that a GPU run frees the model before the next loads.

`decide` compares the two accuracies: the SFT model passes with a gain of at least --margin
(default 0.05 = 5 points). It prints the decision, records it in --output, and exits 3 when the
gate fails, unless --override, which records and prints that the failure was overridden.
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from generation import BACKENDS  # noqa: E402
from judge import default_judge_url  # noqa: E402
from prepare_data.passages import add_backend_args, make_generator_from_args  # noqa: E402
from prompts import ANSWER_FIELDS, SQUAD_ANSWER_TEMPLATE, load_prompt_template, squad_answer_prompt, squad_question  # noqa: E402
from seal_squad.data import count_questions, load_passages  # noqa: E402
from seal_squad.grading import GRADER, grade, make_client  # noqa: E402
from seal_squad.source import GATE_MARGIN, gate_decision, macro_accuracy  # noqa: E402
from utils import write_json_atomic  # noqa: E402


def answer(args):
    passages = load_passages(args.passages)
    template = load_prompt_template(args.answer_template, ANSWER_FIELDS) if args.answer_template else SQUAD_ANSWER_TEMPLATE
    client, health = make_client(args.judge_url, args.judge_token_file)
    questions = [squad_question(p["title"], q["question"]) for p in passages for q in p["questions"]]
    generator = make_generator_from_args(args)
    texts = [t[0] for t in generator.complete([squad_answer_prompt(q, template) for q in questions], args.max_new_tokens)]
    verdicts = grade(client, questions, [q["answer"] for p in passages for q in p["questions"]], texts)
    detail, i = [], 0
    for p in passages:
        rows = []
        for q in p["questions"]:
            rows.append({"question": questions[i], "answer": q["answer"], "response": texts[i], "correct": verdicts[i]})
            i += 1
        detail.append({"passage_id": p.get("passage_id"), "title": p["title"], "questions": rows})
    accuracy = macro_accuracy([[q["correct"] for q in d["questions"]] for d in detail])
    write_json_atomic(args.output, {
        "model": str(args.model), "passages": str(args.passages), "n_passages": len(passages),
        "n_questions": count_questions(passages), "accuracy": accuracy, "micro_accuracy": sum(verdicts) / len(verdicts),
        "judge": {"url": client.url, "grader": GRADER, "backend": health.get("backend"), "judge_model": health.get("judge_model")},
        "max_new_tokens": args.max_new_tokens, "answer_template": template, "detail": detail})
    print(f"{args.model}: {100 * accuracy:.1f}% of {len(verdicts)} source questions ({len(passages)} passages) -> {args.output}")


def decide(args):
    base, sft = (json.loads(Path(f).read_text(encoding="utf-8")) for f in (args.base, args.sft))
    if base["passages"] != sft["passages"] or base["n_questions"] != sft["n_questions"]:
        sys.exit(f"{args.base} and {args.sft} answer different questions ({base['passages']} vs {sft['passages']})")
    passed, message = gate_decision(sft["accuracy"], base["accuracy"], args.margin)
    overridden = not passed and args.override
    if overridden:
        message += "; OVERRIDDEN (GATE_OVERRIDE=1): GRPO runs anyway"
    write_json_atomic(args.output, {"base_model": base["model"], "sft_model": sft["model"], "base_accuracy": base["accuracy"],
                                    "sft_accuracy": sft["accuracy"], "gain": sft["accuracy"] - base["accuracy"],
                                    "margin": args.margin, "passed": passed, "overridden": overridden, "message": message,
                                    "answers": {"base": str(args.base), "sft": str(args.sft)}})
    print(message)
    if not passed:
        print(message, file=sys.stderr)
        if not overridden:
            sys.exit(3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("answer", help="answer and grade the source questions with one model")
    p.add_argument("--model", required=True, help="HF dir or hub id (hf, vllm), or a served model name (openai)")
    p.add_argument("--passages", required=True, help="the round's passages (squad_data.py)")
    p.add_argument("--output", required=True, help="writes the answers, their verdicts and the macro accuracy (JSON)")
    p.add_argument("--judge_url", default=default_judge_url(),
                   help="a judge server with the squad grader (default: env JUDGE_URL, JUDGE_SERVER_URL, else http://127.0.0.1:8123)")
    p.add_argument("--judge_token_file", default=os.environ.get("JUDGE_TOKEN_FILE"),
                   help="the judge's bearer token file (default: env JUDGE_TOKEN_FILE); the token is never printed")
    p.add_argument("--backend", default="hf", choices=BACKENDS, help="how the model answers (default %(default)s)")
    add_backend_args(p, concurrency=64)
    p.add_argument("--max_new_tokens", type=int, default=64, help="answer length in tokens (default %(default)s, as GRPO's responses)")
    p.add_argument("--answer_template", help="a text file with the answer prompt, {question} in it, the one "
                   "TTT_server.py gets (default: SEAL's, prompts.SQUAD_ANSWER_TEMPLATE)")
    p.set_defaults(run=answer, seed=0)  # greedy answers; vLLM's engine seed
    p = sub.add_parser("decide", help="compare the SFT model's accuracy with the base model's")
    p.add_argument("--base", required=True, help="`answer` output of the base model")
    p.add_argument("--sft", required=True, help="`answer` output of the SFT model")
    p.add_argument("--output", required=True, help="the decision (JSON)")
    p.add_argument("--margin", type=float, default=GATE_MARGIN, help=f"accuracy gain needed (default {GATE_MARGIN})")
    p.add_argument("--override", action="store_true", help="record a failure but exit 0 (GRPO runs anyway)")
    p.set_defaults(run=decide)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))


if __name__ == "__main__":
    main()
