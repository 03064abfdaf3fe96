"""Extract a skill vector, skill = rl - base, and save it to one file (streaming, float32 math).

    python calc_delta_and_save.py --grpo_model RL --base_model BASE --output skill.safetensors
    python calc_delta_and_save.py ... --dtype bfloat16      # half the size, no longer exact
    python calc_delta_and_save.py ... --output skill.pth    # the original release's format

A `.safetensors` vector carries metadata (config fingerprint of its source models, tensor count,
dtype, tied embeddings) that `inherit_weight.py --skill_vector FILE` checks against each target.
A float32 vector applied with `--skill_vector` gives bit-identical outputs to the direct
`--grpo_model/--base_model` path. A `.pth` file is a plain {name: tensor} dict (held in memory
while it is written) without metadata, as the original release wrote it.

If both source models tie lm_head to the embeddings, only the embedding delta is stored (it is
also the lm_head delta); otherwise lm_head gets its own delta.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from inherit_weight import (CHUNK_ELEMENTS, SkillSource, TransferError, config_fingerprint,
                            safetensors_header)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def iter_delta(source, name, dtype, buffers):
    """Yield chunks of (rl - base) for one tensor, computed in float32 and cast to dtype."""
    delta32, out_buf = buffers[0], buffers[1]
    for start, end, delta in source.iter_delta(name, delta32, buffers[2:]):
        if not torch.isfinite(delta.sum()) and not torch.isfinite(delta).all():
            raise FloatingPointError(f"NaN or Inf in rl - base for {name} (elements {start}..{end}); check the inputs")
        out = out_buf[: (end - start) * dtype.itemsize].view(dtype)
        out.copy_(delta)
        yield out


def save_skill_vector(grpo_model, base_model, output, dtype="float32", overwrite=False, quiet=False):
    """Write the skill vector to `output` (.safetensors or .pth); returns (tensor count, bytes)."""
    output = Path(output)
    if output.suffix not in (".safetensors", ".pth"):
        raise TransferError(f"--output {output}: use a .safetensors (recommended) or .pth file name")
    if output.exists() and not overwrite:
        raise TransferError(f"{output} exists; pass --overwrite to replace it")
    torch_dtype = DTYPES[dtype]
    source = SkillSource(grpo_model, base_model)
    try:
        names = source.vector_names()
        shapes = {n: source.info(n).shape for n in names}
        for n in names:
            if not source.info(n).dtype.is_floating_point:
                raise TransferError(f"{n} has non-float dtype {source.info(n).dtype}; no skill vector for it")
        total = sum(source.info(n).numel for n in names) * torch_dtype.itemsize
        buffers = [torch.empty(CHUNK_ELEMENTS, dtype=torch.float32)] + \
            [torch.empty(CHUNK_ELEMENTS * 8, dtype=torch.uint8) for _ in range(3)]
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.tmp-", dir=output.parent)
        progress = tqdm(total=total, unit="B", unit_scale=True, desc="skill vector", disable=quiet, file=sys.stderr)
        try:
            with os.fdopen(fd, "wb") as f:
                if output.suffix == ".safetensors":
                    metadata = {
                        "format": "pt", "past_skill_vector": "1", "dtype": dtype,
                        "tensor_count": str(len(names)),
                        "config_fingerprint": json.dumps(config_fingerprint(source.readers[1].config), sort_keys=True),
                        "tied_embeddings": "true" if source.tied else "false",
                        "grpo_model": str(grpo_model), "base_model": str(base_model),
                    }
                    f.write(safetensors_header([(n, torch_dtype, shapes[n]) for n in names], metadata))
                    for n in names:
                        for chunk in iter_delta(source, n, torch_dtype, buffers):
                            f.write(memoryview(chunk.view(torch.uint8).numpy()))
                            progress.update(chunk.numel() * torch_dtype.itemsize)
                else:
                    state = {}
                    for n in names:
                        parts = [c.clone() for c in iter_delta(source, n, torch_dtype, buffers)]
                        state[n] = torch.cat(parts).reshape(shapes[n]) if parts else torch.empty(shapes[n], dtype=torch_dtype)
                        progress.update(state[n].numel() * torch_dtype.itemsize)
                    torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, output)
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            progress.close()
        return len(names), total
    finally:
        source.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpo_model", required=True, help="the RL (GRPO) result: HF model dir or verl checkpoint dir")
    parser.add_argument("--base_model", required=True, help="the exact checkpoint RL started from")
    parser.add_argument("--output", required=True, help="skill vector file: .safetensors (with metadata) or .pth")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                        help="stored dtype (default float32, exact; bfloat16 halves the file but rounds)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    try:
        count, nbytes = save_skill_vector(args.grpo_model, args.base_model, args.output, args.dtype, args.overwrite)
    except (TransferError, FileNotFoundError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"skill vector ({count} tensors, {args.dtype}, {nbytes / 1e9:.3f} GB) written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
