"""Inner-loop test-time-training server of SEAL's protocol (a ZMQ REP socket, JSON messages).

    python SEAL/general-knowledge/TTT_server.py --vllm_url http://127.0.0.1:8001 --base_model Qwen/Qwen2.5-7B \
        --judge_url http://127.0.0.1:8123 [--zmq_port 5555]
    # the skill vector in the served model: vLLM serves base + lambda * v (written once by inherit_weight.py)
    python SEAL/general-knowledge/TTT_server.py ... --served_model checkpoints/served/base+skill \
        --skill_vector skill.safetensors --alpha 1.0 [--skill_order post]

Start it with start_servers.sh, which starts vLLM first. Every request is one round:
  1. "baseline": the served model answers the questions without adapter (greedy, raw prompts);
  2. unless `skip_training` or no `train_sequences`: a fresh LoRA is trained on the sequences
     (seal_squad.ttt, SEAL's recipe, seed = the request's `seed`, else --seed), saved under
     --adapter_dir, loaded into vLLM, asked the same questions, unloaded and deleted;
  3. every answer is graded by the judge server's SQuAD grader (an empty answer is wrong, not sent).

Request  {"train_sequences": [str], "eval_questions": [{"question", "answer"[, "title", "context"]}],
          "lora_rank": 32, "lora_alpha": 64, "lora_dropout": 0, "finetune_epochs": 10,
          "finetune_lr": 1e-3, "batch_size": 1, "gradient_accumulation_steps": 1,
          "end_mask_substring": "", "skip_training": false, "seed": int}     (all but eval_questions optional)
         The question text is what the model is asked, e.g. "Topic: <title>\\n<question>".
Reply    {"baseline_accuracy", "adapter_accuracy", "adapter_gain", "baseline_texts", "adapter_texts",
          "baseline_correct", "adapter_correct", "gains" (+1/0/-1 per question),
          "seed", "epoch_losses", "seconds"}
Commands {"cmd": "info"} -> what this server serves, trains and grades with (the run JSON records it);
         {"cmd": "shutdown"} -> {"status": "bye"}, then the server exits.
Errors   any bad request or failure -> {"error": "..."}; the server keeps serving. A request is one
         ZMQ frame of at most 16 MiB (a larger one is dropped unanswered) holding one JSON object
         (no NaN or Infinity); settings are capped (REQUEST_LIMITS: at most 100 epochs, lr at most 1,
         10,000 sequences and 10,000 questions); error texts are cut and have keys redacted.
Token    with --auth_token_file (env TTT_TOKEN_FILE), every message, commands included, carries
         "auth_token": "<the file's token>" (query_server.py --ttt_token_file sends it). A field rather
         than a second frame: requests stay one SEAL-format JSON frame, and SEAL's own clients, which
         send none, keep working on a loopback server without a token. A --zmq_host other than
         loopback needs a token of at least 16 characters, or the server refuses to start.

Skill vector (option B): vLLM serves W + lambda*v with LoRA enabled, so every answer, the baseline
included, comes from W + lambda*v (+ the passage's LoRA). The run records the vector's fingerprint. The trainer holds the plain base W
("post", default: the paper's W + L_p + lambda*v, with L_p trained against W) or W + lambda*v
("pre", an ablation: L_p trained against the patched model).
"""

import argparse
import hashlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import zmq  # noqa: E402

from judge import JudgeError, check_server_token, default_judge_url, read_token_file, refuse_open_bind  # noqa: E402
from prompts import ANSWER_FIELDS, SQUAD_ANSWER_TEMPLATE, load_prompt_template, squad_answer_prompt  # noqa: E402
from seal_squad.grading import GRADER, grade, make_client  # noqa: E402
from seal_squad.serving import VLLMServer  # noqa: E402
from seal_squad.ttt import TTTRecipe, prepare_tokenizer, train_adapter  # noqa: E402
from utils import redact, write_json_atomic  # noqa: E402

log = logging.getLogger("TTT_server")

RECIPE_FIELDS = ("lora_rank", "lora_alpha", "lora_dropout", "finetune_epochs", "finetune_lr", "batch_size",
                 "gradient_accumulation_steps", "end_mask_substring", "seed")
REQUEST_FIELDS = ("train_sequences", "eval_questions", "skip_training", *RECIPE_FIELDS)
# What one request may ask for (SEAL's: 10 epochs, r 32, batch 1, ~10 sequences and ~5 questions a
# passage; its multi-passage run: ~2,000 sequences, 974 questions), so that no request holds the
# server for days. Numbers must be finite.
REQUEST_LIMITS = {"finetune_epochs": 100, "lora_rank": 1024, "lora_alpha": 4096, "finetune_lr": 1.0, "batch_size": 256,
                  "gradient_accumulation_steps": 256, "train_sequences": 10_000, "eval_questions": 10_000}
MAX_MESSAGE_BYTES = 16 << 20  # ZMQ drops a larger message (and its connection) before it is read
MAX_ERROR_CHARS = 2000


def vector_fingerprint(path):
    """The fingerprint calc_delta_and_save.py records in a vector's metadata (sha256 of its tensor
    data), else "file-sha256:" + the sha256 of the whole file (a minute for a 7B float32 vector)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        recorded = (f.metadata() or {}).get("fingerprint")
    if recorded:
        return recorded
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return "file-sha256:" + digest.hexdigest()


def same_model(a, b):
    if os.path.isdir(a) and os.path.isdir(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return a == b


class TTTServer:
    def __init__(self, args):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.args = args
        self.torch = torch
        served = args.served_model or args.base_model
        if args.skill_vector:
            if not args.served_model or same_model(args.served_model, args.base_model):
                raise ValueError("--skill_vector needs --served_model: the base + lambda * skill model vLLM serves "
                                 "(start_servers.sh writes it with inherit_weight.py)")
            if not os.path.isfile(args.skill_vector) or not args.skill_vector.endswith(".safetensors"):
                raise FileNotFoundError(f"--skill_vector {args.skill_vector}: no such .safetensors file "
                                        "(calc_delta_and_save.py --output skill.safetensors writes one)")
        elif args.served_model and not same_model(args.served_model, args.base_model):
            raise ValueError("--served_model differs from --base_model but no --skill_vector is given: "
                             "say which vector and --alpha it holds, so that the run records it")
        self.vllm = VLLMServer(args.vllm_url)
        if not same_model(self.vllm.model, served):
            raise ValueError(f"the vLLM server at {args.vllm_url} serves {self.vllm.model!r}, not {served!r}")
        self.judge, judge_health = make_client(args.judge_url, args.judge_token_file)
        self.answer_template = load_prompt_template(args.answer_template, ANSWER_FIELDS) if args.answer_template else SQUAD_ANSWER_TEMPLATE

        trainer_model = served if args.skill_vector and args.skill_order == "pre" else args.base_model
        log.info("loading the trainer's model %s (%s)", trainer_model, args.dtype)
        self.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(trainer_model))
        self.model = AutoModelForCausalLM.from_pretrained(trainer_model, dtype=getattr(torch, args.dtype)).to(self.device)
        stop_tokens = args.stop_token or [self.tokenizer.eos_token]
        self.stop_token_ids = []
        for token in stop_tokens:
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == self.tokenizer.unk_token_id:
                raise ValueError(f"--stop_token {token!r} is not a token of {trainer_model}'s tokenizer")
            self.stop_token_ids.append(token_id)
        self.sampling = {"temperature": args.eval_temperature, "top_p": args.eval_top_p, "max_new_tokens": args.eval_max_tokens}
        skill = None
        if args.skill_vector:
            log.info("fingerprinting the skill vector %s", args.skill_vector)
            skill = {"vector": str(args.skill_vector), "fingerprint": vector_fingerprint(args.skill_vector),
                     "alpha": args.alpha, "order": args.skill_order, "name": args.skill_name}
        self.description = {
            "served_model": served,
            "trainer_model": trainer_model,
            "base_model": args.base_model,
            "skill": skill,
            "vllm_url": args.vllm_url,
            "judge": {"url": self.judge.url, "grader": GRADER, "backend": judge_health.get("backend"),
                      "judge_model": judge_health.get("judge_model")},
            "max_seq_length": args.max_seq_length,
            "pads_in_loss": not args.mask_pads,
            "dtype": args.dtype,
            "eval_sampling": self.sampling,
            "stop_token_ids": self.stop_token_ids,
            "answer_template": self.answer_template,
            "default_seed": args.seed,
        }
        self.adapter_dir = Path(args.adapter_dir)
        self.adapter_dir.mkdir(parents=True, exist_ok=True)
        self.step = 0

    def handle(self, msg):
        if not isinstance(msg, dict):
            raise ValueError(f"a request is a JSON object, got {type(msg).__name__}")
        if "cmd" in msg:
            if msg["cmd"] == "info":
                return self.description
            raise ValueError(f"unknown cmd {str(msg['cmd'])[:60]!r}: use info or shutdown")
        unknown = sorted(set(msg) - set(REQUEST_FIELDS))
        if unknown:
            raise ValueError(f"unknown request field(s) {[name[:60] for name in unknown[:10]]}; known: {', '.join(REQUEST_FIELDS)}")
        check_limits(msg)
        questions = msg.get("eval_questions")
        if not isinstance(questions, list) or not questions or not all(
                isinstance(q, dict) and isinstance(q.get("question"), str) and isinstance(q.get("answer"), str) for q in questions):
            raise ValueError("eval_questions must be a non-empty list of {question, answer} objects with string values")
        sequences = msg.get("train_sequences") or []
        if not isinstance(sequences, list) or not all(isinstance(s, str) and s for s in sequences):
            raise ValueError("train_sequences must be a list of non-empty strings")
        recipe = TTTRecipe(max_seq_length=self.args.max_seq_length, pads_in_loss=not self.args.mask_pads,
                           **{"seed": self.args.seed, **{k: msg[k] for k in RECIPE_FIELDS if k in msg}})
        step, self.step = self.step, self.step + 1
        seconds = {}
        start = time.perf_counter()
        base_texts, base_ok = self.answer_and_grade(questions, model=None)
        seconds["baseline"] = time.perf_counter() - start
        reply = {"baseline_accuracy": sum(base_ok) / len(questions), "baseline_texts": base_texts, "baseline_correct": base_ok,
                 "seed": recipe.seed, "epoch_losses": []}
        if msg.get("skip_training") or not sequences:
            reply.update(adapter_accuracy=reply["baseline_accuracy"], adapter_texts=base_texts, adapter_correct=base_ok)
        else:
            adapter_path = (self.adapter_dir / f"step_{step}").resolve()  # vLLM runs in another cwd
            try:
                t = time.perf_counter()
                trained = train_adapter(self.model, self.tokenizer, sequences, recipe, adapter_path)
                seconds["train"] = time.perf_counter() - t
                t = time.perf_counter()
                with self.vllm.adapter(f"ttt_{self.args.zmq_port}_{step}", adapter_path) as name:
                    texts, ok = self.answer_and_grade(questions, model=name)
                seconds["adapter_eval"] = time.perf_counter() - t
            finally:
                if not self.args.keep_adapters:
                    shutil.rmtree(adapter_path, ignore_errors=True)
                if self.device.startswith("cuda"):  # the round's activations and optimizer state, returned
                    self.torch.cuda.empty_cache()
            reply.update(adapter_accuracy=sum(ok) / len(questions), adapter_texts=texts, adapter_correct=ok,
                         epoch_losses=trained["epoch_losses"])
        reply["adapter_gain"] = reply["adapter_accuracy"] - reply["baseline_accuracy"]
        reply["gains"] = [int(a) - int(b) for b, a in zip(reply["baseline_correct"], reply["adapter_correct"])]
        seconds["total"] = time.perf_counter() - start
        reply["seconds"] = seconds
        log.info("step %d: %d sequences, %d questions, baseline %.3f, adapter %.3f (%.1f s)", step, len(sequences),
                 len(questions), reply["baseline_accuracy"], reply["adapter_accuracy"], seconds["total"])
        return reply

    def answer_and_grade(self, questions, model):
        prompts = [squad_answer_prompt(q["question"], self.answer_template) for q in questions]
        texts = self.vllm.complete(prompts, model=model, stop_token_ids=self.stop_token_ids, **self.sampling)
        verdicts = grade(self.judge, [q["question"] for q in questions], [q["answer"] for q in questions], texts)
        return texts, verdicts


def check_limits(msg):
    """ValueError naming the setting when a request asks for more than REQUEST_LIMITS or for a
    number that is not finite (1e999 parses as infinity)."""
    for name, limit in REQUEST_LIMITS.items():
        value = msg.get(name)
        size = len(value) if isinstance(value, list) else value
        if isinstance(size, (int, float)) and not isinstance(size, bool) and not (math.isfinite(size) and size <= limit):
            what = f"{size} items" if isinstance(value, list) else f"{value!r}"
            raise ValueError(f"{name} {what} is over this server's limit {limit} (TTT_server.py REQUEST_LIMITS)")
    if isinstance(msg.get("lora_dropout"), float) and not math.isfinite(msg["lora_dropout"]):
        raise ValueError(f"lora_dropout must be a finite number, got {msg['lora_dropout']!r}")


SHUTDOWN = {"status": "bye"}


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def respond(server, frames, token):
    """The reply to one message (SHUTDOWN for an authorised shutdown); never raises."""
    if len(frames) != 1:
        return {"error": f"a request is one ZMQ frame holding one JSON object; got {len(frames)} frames"}
    try:
        msg = json.loads(frames[0], parse_constant=_no_constant)
    except RecursionError:
        return {"error": "request is not JSON this server reads: it nests too deep"}
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, NaN / Infinity
        return {"error": f"request is not JSON: {str(e)[:200]}"}
    if not isinstance(msg, dict):
        return {"error": f"a request is a JSON object, got {type(msg).__name__}"}
    given = msg.pop("auth_token", None)
    if token and not (isinstance(given, str) and secrets.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())):
        return {"error": "missing or wrong auth_token: this server wants the token of its --auth_token_file in every "
                         "message's auth_token field (query_server.py --ttt_token_file / env TTT_TOKEN_FILE)"}
    if msg.get("cmd") == "shutdown":
        return SHUTDOWN
    try:
        return server.handle(msg)
    except Exception as e:  # a bad request or a failed round must not stop the server
        log.error("request failed: %s", redact(traceback.format_exc()))
        return {"error": redact(f"{type(e).__name__}: {e}")[:MAX_ERROR_CHARS]}


def listen(ctx, host, port):
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.bind(f"tcp://{host}:{port}")
    return sock


def serve(server, host, port, ready_file=None, token=None):
    ctx = zmq.Context()
    sock = listen(ctx, host, port)
    log.info("TTT server listening on tcp://%s:%d%s", host, port, " (token required)" if token else "")
    if ready_file:  # what start_servers.sh waits for
        write_json_atomic(ready_file, server.description)
    try:
        while True:
            reply = respond(server, sock.recv_multipart(), token)
            try:
                try:
                    sock.send_json(reply)
                except (TypeError, ValueError) as e:  # a reply JSON cannot hold: say so instead
                    sock.send_json({"error": f"the reply is not JSON-serialisable: {str(e)[:200]}"})
            except zmq.ZMQError as e:
                log.error("cannot send the reply (%s): listening on a new socket", e)
                sock.close()
                sock = listen(ctx, host, port)
            if reply is SHUTDOWN:
                log.info("shutdown requested")
                return
    finally:
        sock.close()
        ctx.term()
        if ready_file:
            Path(ready_file).unlink(missing_ok=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm_url", required=True, help="the vLLM server, e.g. http://127.0.0.1:8001")
    parser.add_argument("--base_model", required=True, help="the plain base model W (HF dir or hub id)")
    parser.add_argument("--served_model", help="what vLLM serves, when not --base_model: base + lambda * skill (with --skill_vector)")
    parser.add_argument("--skill_vector", help="the skill vector the served model holds (recorded with its fingerprint)")
    parser.add_argument("--alpha", type=float, help="its lambda (required with --skill_vector)")
    parser.add_argument("--skill_name", default="v", help="what the results table calls the vector, e.g. 'v(K=2)' (default v)")
    parser.add_argument("--skill_order", choices=["post", "pre"], default="post",
                        help="post: train the LoRA against W (default, the paper's formula); pre: against W + lambda * skill")
    parser.add_argument("--judge_url", default=default_judge_url(), help="judge server (default env JUDGE_URL, JUDGE_SERVER_URL or http://127.0.0.1:8123)")
    parser.add_argument("--judge_token_file", default=os.environ.get("JUDGE_TOKEN_FILE"), help="file holding the judge's bearer token")
    parser.add_argument("--zmq_host", default="127.0.0.1", help="address to listen on (default loopback; any other needs --auth_token_file)")
    parser.add_argument("--auth_token_file", default=os.environ.get("TTT_TOKEN_FILE"),
                        help="file holding the token every message must carry in its auth_token field (default env "
                             "TTT_TOKEN_FILE; required for a non-loopback --zmq_host)")
    parser.add_argument("--zmq_port", type=int, default=5555)
    parser.add_argument("--max_seq_length", type=int, default=2048, help="training sequence length (default 2048, SEAL's)")
    parser.add_argument("--mask_pads", action="store_true", help="keep pad positions out of the loss (SEAL keeps them in)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="trainer model dtype (default bfloat16)")
    parser.add_argument("--device", help="trainer device (default cuda if available, else cpu)")
    parser.add_argument("--seed", type=int, default=0, help="TTT seed of requests that give none (default 0)")
    parser.add_argument("--eval_temperature", type=float, default=0.0)
    parser.add_argument("--eval_top_p", type=float, default=1.0)
    parser.add_argument("--eval_max_tokens", type=int, default=64)
    parser.add_argument("--stop_token", action="append", help="stop answering at this token (repeatable; default the tokenizer's EOS)")
    parser.add_argument("--answer_template", help="a text file with the answer prompt, {question} in it "
                        "(default: SEAL's, prompts.SQUAD_ANSWER_TEMPLATE)")
    parser.add_argument("--adapter_dir", default="outputs/seal/adapters", help="where adapters are written (vLLM must read it)")
    parser.add_argument("--keep_adapters", action="store_true", help="do not delete adapters after evaluation (debugging)")
    parser.add_argument("--ready_file", help="write the server's description (info) here once it listens")
    args = parser.parse_args(argv)
    if args.skill_vector and args.alpha is None:
        parser.error("--skill_vector needs --alpha (the lambda of the served base + lambda * skill)")
    try:
        token = args.auth_token_file and check_server_token(read_token_file(args.auth_token_file, "the TTT token file"), "TTT server")
    except JudgeError as e:
        parser.error(str(e))
    refused = refuse_open_bind(args.zmq_host, token, "TTT server (and its GPU)", "--auth_token_file")
    if refused:
        parser.error(f"{refused} (or env TTT_TOKEN_FILE); clients send it with query_server.py --ttt_token_file")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # closes the socket on the way out
    try:
        server = TTTServer(args)
    except (ValueError, OSError, RuntimeError) as e:  # bad settings, unreachable vLLM or judge
        parser.error(str(e))
    serve(server, args.zmq_host, args.zmq_port, args.ready_file, token or None)


if __name__ == "__main__":
    main()
