"""Session-wide fixtures: tiny Qwen2-style checkpoints built locally, once per test session, and
a LooGLE-format corpus written by the tests themselves (tests/loogle_fixture.py).

The builder is scripts/make_tiny_model.py (pytest puts scripts/ on sys.path), so tests and the
CPU quickstart use the very same models. Nothing here needs data from outside the repository;
the only exception is the `loogle_sample` fixture of the tests marked `real_sample`, extra checks
against LooGLE's real sample that run where it lies beside the repo (CI) and are reported as not
run elsewhere.
"""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import free_port, perturbed_copy, wait_for_health
from loogle_fixture import write_loogle_corpus
from make_tiny_model import build_model, build_tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
LOOGLE_SAMPLE = SHARED_DIR / "data" / "loogle-sample" / "shortdep_qa.jsonl"
SQUAD_SAMPLE = SHARED_DIR / "data" / "squad-sample" / "squad_val_sample.json"

# Keep the 2-core machine responsive and the tests offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def loogle_corpus(tmp_path_factory):
    """Five long LooGLE-format documents (see tests/loogle_fixture.py) with 6, 12, 9, 25 and 4 QA pairs."""
    return write_loogle_corpus(tmp_path_factory.mktemp("loogle") / "shortdep_qa.jsonl")


@pytest.fixture(scope="session")
def loogle_sample():
    """LooGLE's real 5-document sample; only for tests marked `real_sample`."""
    if not LOOGLE_SAMPLE.exists():
        pytest.skip(f"NOT RUN: real-sample extra check; LooGLE's sample is not at {LOOGLE_SAMPLE} (CI has it)")
    return LOOGLE_SAMPLE


@pytest.fixture(scope="session")
def squad_sample():
    """40 real SQuAD v1.1 dev passages in SEAL's grouped schema; only for tests marked `real_sample`."""
    if not SQUAD_SAMPLE.exists():
        pytest.skip(f"NOT RUN: real-sample extra check; the SQuAD sample is not at {SQUAD_SAMPLE} (CI has it)")
    return SQUAD_SAMPLE


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


def tiny_model_fixture(name, folder, doc, **layout):
    """A session fixture `name`: the tiny model (same initialisation every time) stored in `layout`."""
    def fixture(tiny_models_dir, tiny_tokenizer):
        return build_model(tiny_models_dir / folder, tokenizer=tiny_tokenizer, **layout)

    fixture.__doc__ = doc
    return pytest.fixture(fixture, scope="session", name=name)


tiny_model = tiny_model_fixture("tiny_model", "untied", "Untied embeddings, one model.safetensors, bf16.")
tiny_model_fp32 = tiny_model_fixture(
    "tiny_model_fp32", "fp32", "The same model in float32: where served (vLLM) and HF results must agree to fp32 precision "
    "(the SQuAD tests: TTT, LoRA serving, the skill vector patched into the served model).", dtype="float32")
tiny_model_tied = tiny_model_fixture("tiny_model_tied", "tied", "tie_word_embeddings=True: only model.embed_tokens.weight is stored.",
                                     tied=True)
tiny_model_sharded = tiny_model_fixture("tiny_model_sharded", "sharded", "Several model-0000k-of-0000N.safetensors files plus "
                                        "model.safetensors.index.json.", max_shard_size="300KB")
tiny_model_bin = tiny_model_fixture("tiny_model_bin", "bin", "Legacy pytorch_model.bin weights.", legacy_bin=True)


@pytest.fixture(scope="session")
def tiny_skill_vector(tiny_model, tmp_path_factory):
    """A saved float32 skill vector for `tiny_model`: rl - base with rl = tiny_model plus seeded noise
    (std 0.02, the size of the weights themselves, so that every λ gives other outputs)."""
    from calc_delta_and_save import save_skill_vector

    root = tmp_path_factory.mktemp("skill")
    rl = perturbed_copy(tiny_model, root / "rl", seed=1, scale=2e-2)
    save_skill_vector(rl, tiny_model, root / "skill.safetensors", quiet=True)
    return root / "skill.safetensors"


@pytest.fixture(scope="session")
def lexical_judge_url(tmp_path_factory):
    """One real judge server (lexical backend) for the whole session, started the way users start
    it (scripts/train/start_judge_server.sh); its log is in the fixture's tmp folder."""
    log_dir = tmp_path_factory.mktemp("judge")
    port = free_port()
    env = {**os.environ, "JUDGE_PORT": str(port), "LOG_DIR": str(log_dir), "PYTHON": sys.executable}
    env.pop("JUDGE_SERVER_URL", None)
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "train" / "start_judge_server.sh"), "--backend", "lexical"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    pid = int((log_dir / f"judge_server_{port}.pid").read_text())
    yield done.stdout.strip()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="session")
def transformers_serve_url(tiny_model, tmp_path_factory):
    """`transformers serve` (a real OpenAI-compatible server) on the tiny model, for the session;
    the URL without the /v1 suffix."""
    cli = Path(sys.executable).with_name("transformers")
    port = free_port()
    log = tmp_path_factory.mktemp("transformers_serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [str(cli), "serve", str(tiny_model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc, log, timeout=120)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
