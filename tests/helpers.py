"""Small helpers the tests share (import them: `from helpers import free_port, load_state`).

Checkpoints are read here with plain safetensors/torch, independently of the operator's own
checkpoint I/O, so that tests of the operator compare against something it did not compute.
"""

import shutil
import socket
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def free_port():
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_state(model_dir):
    """Every tensor of an HF model dir (safetensors shards or legacy .bin), by name."""
    model_dir = Path(model_dir).resolve()
    state = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(f))
    for f in sorted(model_dir.glob("pytorch_model*.bin")):
        state.update(torch.load(f, weights_only=True))
    return state


def perturbed_copy(src, dst, seed, scale=1e-2):
    """A copy of model dir `src` at `dst` with seeded Gaussian noise (std `scale`) on every tensor,
    computed in float32 and stored in each tensor's own dtype, in one model.safetensors."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.index.json"))
    g = torch.Generator().manual_seed(seed)
    state = {n: (t.float() + torch.randn(t.shape, generator=g) * scale).to(t.dtype) for n, t in load_state(src).items()}
    save_file(state, Path(dst) / "model.safetensors", metadata={"format": "pt"})
    return Path(dst)
