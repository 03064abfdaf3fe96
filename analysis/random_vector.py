"""A random control for a skill vector: Gaussian noise with the same per-tensor L2 norms, streamed.

    python -m analysis.random_vector --like skill.safetensors --output random_seed0.safetensors
    python -m analysis.random_vector --like skill.safetensors --output random_seed1.safetensors --seed 1
    python inherit_weight.py --skill_vector random_seed0.safetensors --alpha 1.0 \
        --target_models STAGE2 --output_dirs STAGE2_PLUS_RANDOM          # the control run

For every tensor of the skill vector --like (a .safetensors or .pth file from
calc_delta_and_save.py) the output holds a tensor of the same name, shape and dtype: Gaussian
noise scaled to exactly the L2 norm of that tensor (up to the rounding of the stored dtype; a
float32 vector is matched to ~1e-7). A zero tensor stays zero. So "target + alpha * random" moves
every tensor of the target as far as "target + alpha * skill" does, in a random direction: the
control for how much of a transfer's effect is the skill and how much is any perturbation that size.

The noise of a tensor depends only on --seed and the tensor's name (a torch.Generator seeded from
both), not on the order of the tensors or on the machine's core count: the same --seed gives the
same file (with the same torch version). Tensors are read and written chunk by chunk
(checkpoint_io), so a 70B vector never sits in memory; the output is written under a temporary
name and renamed into place when complete.

The output is always .safetensors. Its metadata is the skill vector's (architecture, tied
embeddings, dtype, grpo/base model: inherit_weight.py checks a target against them exactly as it
does for the skill vector), with `fingerprint` = sha256 of the new tensor data, `random_like` = the
skill vector's path and `seed`; inherit_weight.py records the fingerprint and the path in the
outputs' `past_transfer` metadata.
"""

import argparse
import hashlib
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from checkpoint_io import (CHUNK_ELEMENTS, DTYPE_NAMES, CheckpointError, CheckpointReader, SafetensorsWriter,
                           atomic_outputs, check_finite, check_output_paths, one_line_errors)

FINGERPRINT_PLACEHOLDER = "sha256:" + "0" * 64  # the length of the digest written at the end
DTYPE_LABELS = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def tensor_generator(seed, name):
    """A torch.Generator seeded from (seed, tensor name) only: each tensor's noise is independent
    of the others and of their order."""
    digest = hashlib.sha256(f"past-random-vector\0{seed}\0{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def noise_chunks(seed, name, total):
    """Yield float32 chunks of the tensor's standard-normal noise, CHUNK_ELEMENTS at a time; the
    same (seed, name, total) yields the same values."""
    generator = tensor_generator(seed, name)
    for start in range(0, total, CHUNK_ELEMENTS):
        yield torch.randn(min(CHUNK_ELEMENTS, total - start), generator=generator)


def tensor_norm(reader, name, buffer):
    """The L2 norm of a stored tensor, accumulated in float64 chunk by chunk."""
    sumsq, total = 0.0, reader.info(name).numel
    for start in range(0, total, CHUNK_ELEMENTS):
        end = min(start + CHUNK_ELEMENTS, total)
        chunk = reader.read_into(name, start, end, buffer)
        check_finite(chunk, f"{name} of {reader.path} (elements {start}..{end})")
        chunk = chunk.double()
        sumsq += float(torch.dot(chunk, chunk))
    return sumsq ** 0.5


def random_like_chunks(reader, name, seed, buffer):
    """Yield float64 chunks of the tensor's random counterpart: its noise scaled to the stored
    tensor's L2 norm (zeros when that is 0). Two passes over the same noise: its norm, then the values."""
    total = reader.info(name).numel
    target = tensor_norm(reader, name, buffer)
    if target == 0:
        for start in range(0, total, CHUNK_ELEMENTS):
            yield torch.zeros(min(CHUNK_ELEMENTS, total - start), dtype=torch.float64)
        return
    noise_sumsq = 0.0
    for chunk in noise_chunks(seed, name, total):
        chunk = chunk.double()
        noise_sumsq += float(torch.dot(chunk, chunk))
    scale = target / noise_sumsq ** 0.5
    for chunk in noise_chunks(seed, name, total):
        yield chunk.double().mul_(scale)


def output_metadata(reader, like, seed):
    """The skill vector's metadata, with what makes this file a random control of it."""
    metadata = {k: v for k, v in reader.metadata.items() if k != "format"}
    metadata.setdefault("past_skill_vector", "1")
    metadata.setdefault("tied_embeddings", "true" if reader.tied else "false")
    dtypes = {reader.info(n).dtype for n in reader.names()}
    if len(dtypes) == 1 and next(iter(dtypes)) in DTYPE_LABELS:
        metadata.setdefault("dtype", DTYPE_LABELS[next(iter(dtypes))])
    metadata.update(fingerprint=FINGERPRINT_PLACEHOLDER, random_like=str(Path(like).resolve()), seed=str(seed))
    return metadata


def save_random_vector(like, output, seed=0, overwrite=False, quiet=False):
    """Write the random counterpart of skill vector `like` to `output` (see the module docstring);
    returns (tensor count, bytes of tensor data)."""
    like, output = Path(like), Path(output)
    if not like.exists():
        raise FileNotFoundError(f"--like {like} does not exist; give a skill vector file from calc_delta_and_save.py")
    if not like.is_file() or like.suffix not in (".safetensors", ".pth"):
        raise CheckpointError(f"--like {like} is not a skill vector file: give the .safetensors (or .pth) file "
                              "that calc_delta_and_save.py wrote, not a model dir")
    if output.suffix != ".safetensors":
        raise CheckpointError(f"--output {output}: use a .safetensors file name")
    check_output_paths([output], [like], overwrite)
    reader = CheckpointReader(like)
    try:
        names = reader.names()
        if not names:
            raise CheckpointError(f"--like {like} holds no tensors; {like} is not a skill vector")
        for n in names:
            dtype = reader.info(n).dtype
            if not dtype.is_floating_point or dtype not in DTYPE_NAMES:
                raise CheckpointError(f"--like {like}: tensor {n} has non-float dtype {dtype}; a skill vector "
                                      "holds float tensors only")
        entries = [(n, reader.info(n).dtype, reader.info(n).shape) for n in names]
        total_bytes = sum(reader.info(n).nbytes for n in names)
        metadata = output_metadata(reader, like, seed)
        max_itemsize = max(dtype.itemsize for _, dtype, _ in entries)
        read_buffer = torch.empty(CHUNK_ELEMENTS * max_itemsize, dtype=torch.uint8)
        out_buffer = torch.empty(CHUNK_ELEMENTS * max_itemsize, dtype=torch.uint8)
        digest = hashlib.sha256()
        progress = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="random vector", disable=quiet,
                        file=sys.stderr)
        with atomic_outputs([output]) as [tmp]:
            writer = SafetensorsWriter(tmp, entries, metadata)
            try:
                for name, dtype, _ in entries:
                    for chunk in random_like_chunks(reader, name, seed, read_buffer):
                        out = out_buffer[: chunk.numel() * dtype.itemsize]
                        out.view(dtype).copy_(chunk)  # the one cast to the stored dtype
                        writer.write(name, out)
                        digest.update(out.numpy())  # in file order, as calc_delta_and_save.py does
                        progress.update(out.numel())
                writer.finish({**metadata, "fingerprint": "sha256:" + digest.hexdigest()})
            finally:
                progress.close()
                writer.close()
        return len(names), total_bytes
    finally:
        reader.close()


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--like", required=True, metavar="SKILL",
                        help="the skill vector to imitate: a .safetensors (or .pth) file from calc_delta_and_save.py")
    parser.add_argument("--output", required=True, metavar="RANDOM",
                        help="the random vector to write: a new .safetensors file (not --like)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed (default 0); the same seed gives the same file, so report it with results")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    args = parser.parse_args(argv)
    count, nbytes = save_random_vector(args.like, args.output, args.seed, args.overwrite)
    print(f"random vector ({count} tensors, {nbytes / 1e9:.3f} GB, seed {args.seed}, per-tensor norms of {args.like}) "
          f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
