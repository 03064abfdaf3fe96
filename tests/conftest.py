"""Session-wide fixtures: tiny Qwen2-style checkpoints built locally, once per test session.

The builder is scripts/make_tiny_model.py (pytest puts scripts/ on sys.path), so tests and the
CPU quickstart use the very same models.
"""

import os
from pathlib import Path

import pytest

from make_tiny_model import build_model, build_tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
LOOGLE_SAMPLE = SHARED_DIR / "data" / "loogle-sample" / "shortdep_qa.jsonl"

# Keep the 2-core machine responsive and the tests offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def loogle_sample():
    if not LOOGLE_SAMPLE.exists():
        pytest.fail(f"LooGLE sample missing: expected {LOOGLE_SAMPLE} (the shared/ folder beside the repo)")
    return LOOGLE_SAMPLE


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_model(tiny_models_dir, tiny_tokenizer):
    """Untied embeddings, one model.safetensors, bf16."""
    return build_model(tiny_models_dir / "untied", tokenizer=tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_tied(tiny_models_dir, tiny_tokenizer):
    """tie_word_embeddings=True: only model.embed_tokens.weight is stored."""
    return build_model(tiny_models_dir / "tied", tied=True, tokenizer=tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_sharded(tiny_models_dir, tiny_tokenizer):
    """Several model-0000k-of-0000N.safetensors files plus model.safetensors.index.json."""
    return build_model(tiny_models_dir / "sharded", max_shard_size="300KB", tokenizer=tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_bin(tiny_models_dir, tiny_tokenizer):
    """Legacy pytorch_model.bin weights."""
    return build_model(tiny_models_dir / "bin", legacy_bin=True, tokenizer=tiny_tokenizer)
