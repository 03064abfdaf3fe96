"""Extract a skill vector, skill = rl - base, and save it to one file (streaming, float32 math).

    python calc_delta_and_save.py --grpo_model RL --base_model BASE --output skill.safetensors
    python calc_delta_and_save.py ... --dtype bfloat16      # half the size, no longer exact
    python calc_delta_and_save.py ... --output skill.pth    # the original release's format

A `.safetensors` vector carries metadata that `inherit_weight.py --skill_vector FILE` checks
against each target and records in its outputs: `architecture` (the config fields a target must
share), `fingerprint` (sha256 of the vector's tensor data), `grpo_model`, `base_model`, `dtype`,
`tied_embeddings`. A float32 vector applied with `--skill_vector` gives bit-identical weights to
the direct `--grpo_model/--base_model` path. A `.pth` file is a plain {name: tensor} dict (held
in memory while it is written) without metadata, as the original release wrote it.

If both source models tie lm_head to the embeddings, only the embedding delta is stored (it is
also the lm_head delta); otherwise lm_head gets its own delta. Needs inherit_weight.py and
checkpoint_io.py beside it.
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from checkpoint_io import (CHUNK_ELEMENTS, SafetensorsWriter, architecture, atomic_outputs,
                           check_finite, check_output_paths, one_line_errors, stream_chunks)
from inherit_weight import SkillSource, TransferError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TensorDict:
    """A writer (as stream_chunks takes) into tensors in memory, for the .pth format."""

    def __init__(self, entries):
        self.tensors = {name: torch.empty(shape, dtype=dtype) for name, dtype, shape in entries}
        self.max_itemsize = max([dtype.itemsize for _, dtype, _ in entries] + [1])
        self._written = dict.fromkeys(self.tensors, 0)

    def write(self, name, data):
        done = self._written[name]
        self.tensors[name].view(-1).view(torch.uint8)[done: done + data.numel()].copy_(data)
        self._written[name] += data.numel()


def save_skill_vector(grpo_model, base_model, output, dtype="float32", overwrite=False, quiet=False):
    """Write the skill vector to `output` (.safetensors or .pth); returns (tensor count, bytes)."""
    output, torch_dtype = Path(output), DTYPES[dtype]
    if output.suffix not in (".safetensors", ".pth"):
        raise TransferError(f"--output {output}: use a .safetensors (recommended) or .pth file name")
    check_output_paths([output], [grpo_model, base_model], overwrite)
    skill = SkillSource(grpo_model, base_model)
    try:
        names = skill.vector_names()
        for n in names:
            if not skill.info(n).dtype.is_floating_point:
                raise TransferError(f"{n} has non-float dtype {skill.info(n).dtype}; no skill vector for it")
        entries = [(n, torch_dtype, skill.info(n).shape) for n in names]
        total = sum(skill.info(n).numel for n in names) * torch_dtype.itemsize
        delta, scratch, digest = torch.empty(CHUNK_ELEMENTS), torch.empty(CHUNK_ELEMENTS), hashlib.sha256()

        def compute(name, start, end, blocks, outs):
            d = skill.delta(blocks, delta[: end - start], scratch[: end - start])
            check_finite(d, f"rl - base for {name} (elements {start}..{end})")
            out = outs[0][: (end - start) * torch_dtype.itemsize]
            out.view(torch_dtype).copy_(d)
            digest.update(out.numpy())  # in file order: the chunks come tensor by tensor, in order
            return [out]

        metadata = {"past_skill_vector": "1", "dtype": dtype,
                    "architecture": json.dumps(architecture(skill.streams[1].config)),
                    "tied_embeddings": "true" if skill.tied else "false",
                    "grpo_model": str(Path(grpo_model).resolve()), "base_model": str(Path(base_model).resolve()),
                    "fingerprint": "sha256:" + "0" * 64}  # the same length as the digest written at the end
        progress = tqdm(total=total, unit="B", unit_scale=True, desc="skill vector", disable=quiet, file=sys.stderr)
        with atomic_outputs([output]) as [tmp]:
            safetensors = output.suffix == ".safetensors"
            writer = SafetensorsWriter(tmp, entries, metadata) if safetensors else TensorDict(entries)
            try:
                stream_chunks([(n, skill.info(n).numel, skill.inputs(n)) for n in names], compute, [writer],
                              on_write=progress.update)
                if safetensors:
                    writer.finish({**metadata, "fingerprint": "sha256:" + digest.hexdigest()})
                else:
                    torch.save(writer.tensors, tmp)
            finally:
                progress.close()
                if safetensors:
                    writer.close()
        return len(names), total
    finally:
        skill.close()


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpo_model", required=True, help="the RL (GRPO) result: HF model dir or verl checkpoint dir")
    parser.add_argument("--base_model", required=True, help="the exact checkpoint RL started from")
    parser.add_argument("--output", required=True, help="skill vector file: .safetensors (with metadata) or .pth")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                        help="stored dtype (default float32, exact; bfloat16 halves the file but rounds)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    count, nbytes = save_skill_vector(args.grpo_model, args.base_model, args.output, args.dtype, args.overwrite)
    print(f"skill vector ({count} tensors, {args.dtype}, {nbytes / 1e9:.3f} GB) written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
