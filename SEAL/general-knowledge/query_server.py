"""Evaluate one condition through the TTT server: n passages x k completions x eval_times rounds
-> a run JSON in SEAL's format (overall = mean of the passage means).

    python SEAL/general-knowledge/query_server.py --condition implications \
        --dataset data/squad/implications_base.json --output results/seal/implications.json
    python SEAL/general-knowledge/query_server.py --condition base --dataset data/squad/squad_val_eval.json --output ...

Conditions (what each passage's adapter is trained on; what the server must serve):
  base                no training: the served base model answers (SEAL's "base, no adaptation")
  passage             the passage alone (SEAL's "passage only")
  implications        the passage's implications + the passage, one round per completion
  skill_only          no training, on a server that serves base + lambda * skill
  implications_skill  implications, on a server that serves base + lambda * skill (PaST's row)
The server says what it serves ({"cmd": "info"}); a condition that does not fit it is refused,
and the run JSON records it (served model, trainer model, lambda, the vector's fingerprint, judge).
With a skill vector, the share of its elements that survive the cast of W + lambda * v to the
served dtype is measured once per served model (seal_squad/precision.py), logged and recorded
("skill_survival"); below 50% the log recommends float32 serving (SERVED_DTYPE=float32).

Questions are asked as "Topic: <title>\\n<question>". Round r of a completion uses TTT seed
--seed + r. Finished passages are kept in OUT.partial.jsonl: a rerun with the same settings
resumes after them; the run JSON is written when every passage is done.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import zmq  # noqa: E402
from tqdm import tqdm  # noqa: E402

from judge import JudgeError, read_token_file  # noqa: E402
from prompts import squad_question  # noqa: E402
from seal_squad.data import count_questions, load_passages  # noqa: E402
from seal_squad.partial import PartialFile  # noqa: E402
from seal_squad.precision import cached_survival, report  # noqa: E402
from seal_squad.results import article_entry, completion_entry, overall_stats  # noqa: E402
from seal_squad.sequences import training_sequences  # noqa: E402
from utils import write_json_atomic  # noqa: E402

log = logging.getLogger("query_server")

# condition -> (what the adapter trains on, whether the server must serve a skill vector)
CONDITIONS = {
    "base": (None, False),
    "passage": ("passage", False),
    "implications": ("implications", False),
    "skill_only": (None, True),
    "implications_skill": ("implications", True),
}


class TTTClient:
    """REQ side of the TTT server; a request without a reply within `timeout_s` is resent on a new
    socket (ZMQ's lazy-pirate pattern), up to `attempts` times. With a `token`, every message
    carries it in its auth_token field (TTT_server.py's docstring)."""

    def __init__(self, endpoint, timeout_s, attempts, token=None):
        self.endpoint, self.timeout_ms, self.attempts = endpoint, int(timeout_s * 1000), attempts
        self.token = token
        self.ctx = zmq.Context()

    def __repr__(self):
        return f"TTTClient({self.endpoint!r}, token={'yes' if self.token else 'no'})"

    def request(self, payload, timeout_s=None, attempts=None):
        problem = None
        timeout_ms = self.timeout_ms if timeout_s is None else int(timeout_s * 1000)
        attempts = attempts or self.attempts
        for attempt in range(1, attempts + 1):
            sock = self.ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoint)
            try:
                sock.send_json({**payload, "auth_token": self.token} if self.token else payload)
                if sock.poll(timeout_ms, zmq.POLLIN):
                    reply = sock.recv_json()
                    if "error" not in reply:
                        return reply
                    problem = f"the server answered an error: {reply['error']}"
                else:
                    problem = f"no reply within {timeout_ms / 1000:g} s"
            finally:
                sock.close()
            log.warning("TTT server %s, attempt %d/%d: %s", self.endpoint, attempt, attempts, problem)
        raise RuntimeError(f"TTT server at {self.endpoint} failed {attempts} attempt(s); last: {problem}")

    def close(self):
        self.ctx.term()


def completions_for(item, train_on, k, where):
    """The completions to evaluate for one passage ("" = no self-edit: the passage only, or none)."""
    if train_on != "implications":
        return [""]
    completions = [c for c in item["completions"] if c.strip()][:k]
    if not completions:
        log.warning("%s: no non-empty completion; evaluating it on the passage alone", where)
        return [""]
    return completions


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--condition", required=True, choices=list(CONDITIONS))
    p.add_argument("--dataset", required=True, help="passages JSON (squad_data.py) or implications JSON (make_implications.py)")
    p.add_argument("--output", required=True, help="the run JSON to write")
    p.add_argument("--exp_name", help="name recorded in the run JSON (default: the condition)")
    p.add_argument("--n_articles", type=int, default=0, help="first N passages of --dataset; 0 = all")
    p.add_argument("--k_completions", type=int, default=1, help="completions per passage (default 1, SEAL's evaluation)")
    p.add_argument("--eval_times", type=int, default=1, help="TTT rounds per completion (default 1)")
    p.add_argument("--seed", type=int, default=0, help="TTT seed of round 0 (round r: seed + r)")
    p.add_argument("--lora_rank", type=int, default=32)
    p.add_argument("--lora_alpha", type=int, default=64)
    p.add_argument("--lora_dropout", type=float, default=0.0)
    p.add_argument("--finetune_epochs", type=int, default=10)
    p.add_argument("--finetune_lr", type=float, default=1e-3)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--end_mask_substring", default="", help="no loss up to and including this text (SEAL's option)")
    p.add_argument("--no_split_newlines", dest="split_newlines", action="store_false",
                   help="one sequence per ---segment instead of one per line (SEAL's evaluation splits lines)")
    p.add_argument("--server_host", default="127.0.0.1")
    p.add_argument("--zmq_port", type=int, default=5555)
    p.add_argument("--ttt_token_file", default=os.environ.get("TTT_TOKEN_FILE"),
                   help="file holding the TTT server's token (its --auth_token_file; default env TTT_TOKEN_FILE)")
    p.add_argument("--timeout_s", type=float, default=3600, help="seconds to wait for one round's reply")
    p.add_argument("--attempts", type=int, default=2, help="tries per round (a timeout or an error reply is retried)")
    p.add_argument("--shutdown", action="store_true", help="stop the TTT server when done")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming OUT.partial.jsonl")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    train_on, needs_skill = CONDITIONS[args.condition]
    if os.path.exists(args.output) and not args.overwrite:
        sys.exit(f"{args.output} exists (a finished run); pass --overwrite to redo it")
    dataset = load_passages(args.dataset)
    if args.n_articles:
        if args.n_articles > len(dataset):
            sys.exit(f"--n_articles {args.n_articles}: {args.dataset} has only {len(dataset)} passages")
        dataset = dataset[: args.n_articles]
    if train_on == "implications" and not all("completions" in item for item in dataset):
        sys.exit(f"--condition {args.condition} needs implications: {args.dataset} has passages without 'completions' "
                 "(make them with make_implications.py)")
    if min(args.k_completions, args.eval_times) < 1:
        sys.exit("--k_completions and --eval_times must be >= 1")

    try:
        token = read_token_file(args.ttt_token_file, "the TTT token file") if args.ttt_token_file else None
    except JudgeError as e:
        sys.exit(str(e))
    client = TTTClient(f"tcp://{args.server_host}:{args.zmq_port}", args.timeout_s, args.attempts, token)
    try:
        try:  # answered at once by a running server
            server = client.request({"cmd": "info"}, timeout_s=30, attempts=1)
        except RuntimeError as e:
            sys.exit(f"{e}. Is a TTT server running there? Start one with SEAL/general-knowledge/start_servers.sh "
                     "(the same ZMQ_PORT), or pass --zmq_port / --server_host")
        if needs_skill != bool(server.get("skill")):
            sys.exit(f"--condition {args.condition} needs a TTT server that serves "
                     f"{'base + lambda * skill (start_servers.sh with SKILL_VECTOR)' if needs_skill else 'the plain base model (no SKILL_VECTOR)'}; "
                     f"this one serves {server.get('served_model')} (skill: {server.get('skill')})")
        survival = None
        if needs_skill:
            skill = server["skill"]
            try:
                survival = cached_survival(server["base_model"], server["served_model"], skill["vector"], skill["alpha"])
            except (ValueError, OSError) as e:
                sys.exit(f"cannot measure how much of {skill['vector']} survives in {server['served_model']}: {e}")
            log.info(report(survival))
        lora_params = {k: getattr(args, k) for k in ("lora_rank", "lora_alpha", "lora_dropout", "finetune_epochs",
                                                      "finetune_lr", "batch_size", "gradient_accumulation_steps")}
        settings = {"condition": args.condition, "dataset": str(args.dataset), "n_articles": len(dataset),
                    "k_completions": args.k_completions, "eval_times": args.eval_times, "seed": args.seed,
                    "split_newlines": args.split_newlines, "end_mask_substring": args.end_mask_substring, **lora_params}
        try:
            partial = PartialFile(args.output, {"settings": settings, "server": server}, args.overwrite)
        except ValueError as e:
            sys.exit(str(e))
        articles = partial.records
        if articles:
            log.info("resuming %s: %d of %d passages already done", partial.path, len(articles), len(dataset))
        start = time.time()
        progress = tqdm(dataset, desc=args.condition, unit="passage", initial=len(articles))
        for index in range(len(articles), len(dataset)):
            item = dataset[index]
            questions = [{"title": item["title"], "context": item["context"], "question": squad_question(item["title"], q["question"]),
                          "answer": q["answer"]} for q in item["questions"]]
            entries = []
            for text in completions_for(item, train_on, args.k_completions, f"{args.dataset} passage {index}"):
                sequences = training_sequences(item["title"], item["context"], text, args.split_newlines) if train_on else []
                replies = [client.request({"train_sequences": sequences, "eval_questions": questions, **lora_params,
                                           "end_mask_substring": args.end_mask_substring, "skip_training": train_on is None,
                                           "seed": args.seed + rep})
                           for rep in range(args.eval_times)]
                entries.append(completion_entry(text, item["questions"], replies))
            partial.append([article_entry(item, entries)])
            progress.update(1)
            progress.set_postfix(adapter=f"{overall_stats(articles)['adapter_mean_accuracy']:.3f}")
        progress.close()
        overall = overall_stats(articles)
        meta_file = Path(str(args.dataset) + ".meta")
        run = {
            "overall": overall,
            "timestamp": time.strftime("%m%d_%H%M%S"),
            "exp_name": args.exp_name or args.condition,
            "dataset": str(args.dataset),
            "split_newlines": args.split_newlines,
            "n_articles": len(articles),
            "k_completions": args.k_completions,
            "eval_times": args.eval_times,
            "lora_params": {"rank": args.lora_rank, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
                            "epochs": args.finetune_epochs, "lr": args.finetune_lr, "batch_size": args.batch_size,
                            "grad_accum_steps": args.gradient_accumulation_steps},
            "articles": articles,
            "condition": args.condition,
            "server": server,
            "skill_survival": survival,
            "dataset_meta": json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else None,
            "seed": args.seed,
            "seconds": round(time.time() - start, 1),
        }
        write_json_atomic(args.output, run)
        partial.remove()
        print(f"{args.condition}: {len(articles)} passages, {count_questions(dataset)} questions; accuracy "
              f"{overall['adapter_mean_accuracy']:.4f} +- {overall['adapter_std_of_article_means']:.4f} (mean +- std of "
              f"passage means; baseline {overall['baseline_mean_accuracy']:.4f}) -> {args.output}")
        if args.shutdown:
            client.request({"cmd": "shutdown"})
    finally:
        client.close()


if __name__ == "__main__":
    main()
