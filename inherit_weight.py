"""The PaST operator: add a skill vector to one or more target models, streaming, exactly.

For every tensor:  out = target + alpha * (rl - base),  computed in float32 and cast once to the
target's dtype. `rl` is the GRPO result, `base` the exact checkpoint GRPO started from, `target`
a model SFT-ed on another domain. rl and base are read once for all targets of a run; no model is
ever loaded whole (a few MB-sized chunks are in memory at a time), so any model size runs in well
under 1 GB of RAM and the run is bound by the disk.

    python inherit_weight.py --grpo_model RL --base_model BASE \
        --target_models T1 T2 --output_dirs O1 O2 [--alpha 1.0]
    python inherit_weight.py --skill_vector skill.safetensors --target_models T1 --output_dirs O1
    python inherit_weight.py ... --exclude 'embed_tokens|lm_head'   # keep the target's embeddings
    python inherit_weight.py ... --dry_run                          # checks and plan, writes nothing

Inputs are HF model dirs (model.safetensors, sharded safetensors with an index, or legacy
pytorch_model.bin), or verl checkpoint dirs holding HF weights in `actor/huggingface`. Each output
is a complete HF model dir (the target's config, generation config, tokenizer and chat template),
written under a temporary name and renamed when complete.

This file stands alone (torch, safetensors, json, tqdm): copy it to a cluster and run it.
`CheckpointReader` (lazy tensor access) is reused by calc_delta_and_save.py and analysis/.
"""

import argparse
import json
import os
import queue
import re
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

# ----------------------------------------------------------------------------------------------
# Lazy checkpoint reading

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors",
                "pytorch_model.bin.index.json", "pytorch_model.bin")
EMBED_SUFFIX = "embed_tokens.weight"
LM_HEAD = "lm_head.weight"
# Config fields that must agree between the models of one transfer.
ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "intermediate_size")
MERGE_FSDP_HINT = ("convert it first: bash scripts/merge_fsdp_to_hf.sh CKPT_DIR OUT_DIR "
                   "(= python -m verl.model_merger merge --backend fsdp --local_dir CKPT_DIR/actor "
                   "--target_dir OUT_DIR), or save with checkpoint.save_contents including hf_model")


@dataclass
class TensorInfo:
    dtype: torch.dtype
    shape: tuple
    file: str = ""      # safetensors file holding the data
    offset: int = 0     # absolute byte offset of the data in that file
    tensor: torch.Tensor = None  # for torch.load-ed (.bin/.pth) checkpoints

    @property
    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def itemsize(self):
        return self.dtype.itemsize

    @property
    def nbytes(self):
        return self.numel * self.itemsize


def read_safetensors_header(path):
    """Return ({name: TensorInfo}, metadata) from a .safetensors file without touching its data."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {entry['dtype']}")
        tensors[name] = TensorInfo(SAFETENSORS_DTYPES[entry["dtype"]], tuple(entry["shape"]),
                                   str(path), 8 + header_len + entry["data_offsets"][0])
    return tensors, metadata


def find_weights_dir(path):
    """The dir that holds a model's HF weights: the dir itself, or verl's actor/huggingface."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    for candidate in (path, path / "huggingface", path / "actor" / "huggingface"):
        if any((candidate / f).exists() for f in WEIGHT_FILES) or list(candidate.glob("model-*.safetensors")):
            return candidate
    for candidate in (path, path / "actor"):
        if list(candidate.glob("model_world_size_*_rank_*.pt")):
            raise FileNotFoundError(f"{candidate} holds FSDP shards but no HF weights; {MERGE_FSDP_HINT}")
    raise FileNotFoundError(f"no model weights in {path}: expected one of {', '.join(WEIGHT_FILES)} "
                            "(or a verl checkpoint dir with actor/huggingface)")


class CheckpointReader:
    """Read-only, lazy view of the tensors of a checkpoint.

    `path` is a model dir (sharded or single safetensors, legacy .bin, verl actor/huggingface) or a
    single .safetensors / .pth file (a saved skill vector). Safetensors data is read with pread into
    caller-owned buffers: nothing is memory-mapped, so reading a model does not grow the process's
    RSS. .bin/.pth files are torch.load-ed with mmap (one file at a time as they are needed).
    """

    def __init__(self, path):
        path = Path(path)
        self.metadata = {}
        self.tensors = {}
        self._fds = {}
        self._lock = threading.Lock()
        if path.is_file():
            self.model_dir, files = None, [path]
        else:
            self.model_dir = find_weights_dir(path)
            files = self._weight_files(self.model_dir)
        self.path = path
        for file in files:
            if file.suffix == ".safetensors":
                tensors, metadata = read_safetensors_header(file)
                self.metadata.update(metadata)
            else:
                state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
                if not isinstance(state, dict):
                    raise ValueError(f"{file}: expected a dict of tensors, got {type(state).__name__}")
                tensors = {n: TensorInfo(t.dtype, tuple(t.shape), str(file), tensor=t.contiguous())
                           for n, t in state.items()}
            for name in tensors:
                if name in self.tensors:
                    raise ValueError(f"tensor {name} appears in two weight files of {path}")
            self.tensors.update(tensors)
        self.config = None
        if self.model_dir is not None and (self.model_dir / "config.json").exists():
            self.config = json.loads((self.model_dir / "config.json").read_text())

    @staticmethod
    def _weight_files(model_dir):
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            index = model_dir / index_name
            if index.exists():
                weight_map = json.loads(index.read_text())["weight_map"]
                return [model_dir / f for f in sorted(set(weight_map.values()))]
        for single in ("model.safetensors", "pytorch_model.bin"):
            if (model_dir / single).exists():
                return [model_dir / single]
        shards = sorted(model_dir.glob("model-*.safetensors"))
        if shards:
            return shards
        raise FileNotFoundError(f"no weights in {model_dir}")

    @property
    def tied(self):
        """Whether the model's config ties lm_head to the input embeddings (transformers re-ties at load)."""
        return bool(self.config and self.config.get("tie_word_embeddings", False))

    def names(self):
        """Tensor names in storage order (file by file, by offset)."""
        return list(self.tensors)

    def info(self, name):
        return self.tensors[name]

    def read_into(self, name, start, end, buffer):
        """Read elements [start, end) of the flattened tensor into the uint8 `buffer`; return a typed view."""
        info = self.tensors[name]
        itemsize = info.itemsize
        nbytes = (end - start) * itemsize
        out = buffer[:nbytes]
        if info.tensor is not None:
            out.view(info.dtype).copy_(info.tensor.reshape(-1)[start:end])
            return out.view(info.dtype)
        fd = self._fd(info.file)
        view = memoryview(out.numpy())
        offset, done = info.offset + start * itemsize, 0
        while done < nbytes:
            n = os.preadv(fd, [view[done:]], offset + done)
            if n == 0:
                raise IOError(f"{info.file} is truncated (tensor {name})")
            done += n
        return out.view(info.dtype)

    def get(self, name):
        """The whole tensor (a fresh copy)."""
        info = self.tensors[name]
        buffer = torch.empty(info.nbytes, dtype=torch.uint8)
        return self.read_into(name, 0, info.numel, buffer).reshape(info.shape)

    def _fd(self, file):
        with self._lock:
            if file not in self._fds:
                self._fds[file] = os.open(file, os.O_RDONLY)
            return self._fds[file]

    def close(self):
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}


def effective_names(reader):
    """Names as transformers sees the model: a tied model also has lm_head (= its embeddings).

    Returns {effective name: stored name}. A tied model's stored lm_head (if any) is ignored, as
    transformers re-ties it to the embeddings at load time.
    """
    names = {n: n for n in reader.names()}
    if reader.tied:
        embed = [n for n in names if n.endswith(EMBED_SUFFIX)]
        if len(embed) == 1:
            names[LM_HEAD] = embed[0]
    return names


def config_fingerprint(config):
    return {k: config.get(k) for k in ARCH_KEYS + ("vocab_size",) if config and k in config}


# ----------------------------------------------------------------------------------------------
# Streaming safetensors writing

def parse_size(size):
    """'5GB' -> 5_000_000_000 (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024, as in transformers)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)?\s*", size, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"size {size!r} not understood: use e.g. 5GB, 500MB, 300KB or a byte count")
    units = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30, None: 1}
    unit = match.group(2).lower() if match.group(2) else None
    return int(float(match.group(1)) * units[unit])


def safetensors_header(entries, metadata):
    """Header bytes of a safetensors file; entries = [(name, dtype, shape)] in data order."""
    header, offset = {"__metadata__": metadata}, 0
    for name, dtype, shape in entries:
        nbytes = dtype.itemsize
        for s in shape:
            nbytes *= s
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def shard_layout(entries, max_shard_size):
    """Greedy packing in order (as huggingface_hub does): [[(name, dtype, shape), ...], ...]."""
    shards, current, current_size = [], [], 0
    for entry in entries:
        nbytes = entry[1].itemsize
        for s in entry[2]:
            nbytes *= s
        if current and current_size + nbytes > max_shard_size:
            shards.append(current)
            current, current_size = [], 0
        current.append(entry)
        current_size += nbytes
    if current or not shards:
        shards.append(current)
    return shards


WRITEBACK_BYTES = 64 * 2**20


class ShardedWriter:
    """Writes tensors, chunk by chunk, into HF-style sharded safetensors whose layout is fixed up front.

    Each tensor's place is known from the planned headers, so tensors may arrive in any order (a
    run with several targets streams them in one order) while every output keeps its own layout.
    """

    def __init__(self, out_dir, entries, max_shard_size, metadata=None):
        self.out_dir = Path(out_dir)
        self.shards = shard_layout(entries, max_shard_size)
        self.metadata = {"format": "pt", **(metadata or {})}
        n = len(self.shards)
        self.files = (["model.safetensors"] if n == 1 else
                      [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
        self.total_size = sum(d.itemsize * _numel(s) for _, d, s in entries)
        self._place = {}  # name -> [shard index, byte offset of the next chunk]
        self._fds = []
        for i, shard in enumerate(self.shards):
            header = safetensors_header(shard, self.metadata)
            fd = os.open(self.out_dir / self.files[i], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            self._fds.append(fd)
            os.write(fd, header)
            offset = len(header)
            for name, dtype, shape in shard:
                self._place[name] = [i, offset]
                offset += dtype.itemsize * _numel(shape)
        self._unflushed = [0] * n

    def write(self, name, data):
        """Write the next chunk (uint8 tensor) of tensor `name`; a tensor's chunks come in order."""
        place = self._place[name]
        fd, view = self._fds[place[0]], memoryview(data.numpy())
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], place[1] + done)
        place[1] += done
        self._unflushed[place[0]] += done
        if self._unflushed[place[0]] >= WRITEBACK_BYTES:
            # Start writeback now (DONTNEED on dirty pages queues it without waiting), so the
            # final fsync has little left and our output does not crowd the page cache.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            self._unflushed[place[0]] = 0

    def finish(self):
        """fsync and close every shard and write the index (for more than one shard)."""
        for fd in self._fds:
            os.fsync(fd)
        self.abort()
        if len(self.files) > 1:
            index = {"metadata": {"total_size": self.total_size},
                     "weight_map": {name: self.files[i] for name, (i, _) in self._place.items()}}
            (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")

    def abort(self):
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def fresh_tmp_dir(final_dir):
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-", dir=final_dir.parent))


def publish_dir(tmp_dir, final_dir):
    """Rename a finished tmp dir to its final name (replacing an old one only after it is complete)."""
    final_dir = Path(final_dir)
    old = None
    if final_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.old-", dir=final_dir.parent))
        os.replace(final_dir, old / final_dir.name)
    os.replace(tmp_dir, final_dir)
    if old is not None:
        shutil.rmtree(old)
    fd = os.open(final_dir.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# Planning and checks (everything here runs before any output exists)

CHUNK_ELEMENTS = 4 * 2**20  # elements per read/written chunk: 8 MB of bf16
BLOCK_ELEMENTS = 2**18      # elements per float32 compute step: 1 MB buffers that stay in the CPU cache


class TransferError(ValueError):
    """A problem with the inputs, found before anything is written."""


@dataclass
class TargetPlan:
    reader: CheckpointReader
    output_dir: Path
    untie: bool                                  # write lm_head and tie_word_embeddings=false
    sources: dict = field(default_factory=dict)  # output name -> stored target tensor name
    apply: dict = field(default_factory=dict)    # output name -> leading elements receiving the vector
    embeddings_note: str = ""
    excluded: list = field(default_factory=list)


class SkillSource:
    """The skill vector: (rl - base) read from two checkpoints, or a saved vector file."""

    def __init__(self, grpo_model=None, base_model=None, skill_vector=None):
        if skill_vector is not None:
            if grpo_model or base_model:
                raise TransferError("give either --skill_vector or --grpo_model/--base_model, not both")
            self.vector = CheckpointReader(skill_vector)
            self.readers = [self.vector]
            meta = self.vector.metadata
            self.fingerprint = json.loads(meta["config_fingerprint"]) if "config_fingerprint" in meta else None
            names = {n: n for n in self.vector.names()}
            # A vector without lm_head comes from tied models (stored once; a .pth of the original
            # release never has it either): its embedding delta is also the lm_head delta.
            embed = [n for n in names if n.endswith(EMBED_SUFFIX)]
            self.tied = LM_HEAD not in names and len(embed) == 1
            if self.tied:
                names[LM_HEAD] = embed[0]
            self.names = {n: [s] for n, s in names.items()}
            self.description = f"skill vector {skill_vector}"
            if "tensor_count" in meta and int(meta["tensor_count"]) != len(self.vector.names()):
                raise TransferError(f"{skill_vector}: metadata says {meta['tensor_count']} tensors, file has "
                                    f"{len(self.vector.names())}; the file is damaged, recompute it")
        else:
            if not (grpo_model and base_model):
                raise TransferError("need --grpo_model and --base_model (or --skill_vector FILE)")
            rl, base = CheckpointReader(grpo_model), CheckpointReader(base_model)
            self.readers = [rl, base]
            for reader in self.readers:
                if reader.config is None:
                    raise TransferError(f"{reader.model_dir} has no config.json")
            check_configs([rl, base])
            rl_names, base_names = effective_names(rl), effective_names(base)
            check_same_names(rl_names, base_names, f"grpo model {grpo_model}", f"base model {base_model}")
            for name in rl_names:
                a, b = rl.info(rl_names[name]), base.info(base_names[name])
                if a.shape != b.shape:
                    raise TransferError(f"{name}: grpo model has shape {list(a.shape)}, base model "
                                        f"{list(b.shape)}; rl must be trained from exactly this base")
            # Both tied: the vector's lm_head *is* its embedding delta (stored once).
            self.tied = rl.tied and base.tied
            self.fingerprint = config_fingerprint(base.config)
            self.names = {n: [rl_names[n], base_names[n]] for n in rl_names}
            self.description = f"rl {grpo_model} - base {base_model}"

    def info(self, name):
        return self.readers[0].info(self.names[name][0])

    def vector_names(self):
        """Distinct tensors of the vector: a tied pair's lm_head is its embeddings, counted once."""
        return [n for n in self.names if not (n == LM_HEAD and self.tied)]

    def iter_delta(self, name, delta32, buffers):
        """Yield (start, end, float32 chunk of rl - base or of the saved vector) for one tensor.

        delta32: float32 buffer of CHUNK_ELEMENTS; buffers: one uint8 buffer per reader, 8 bytes an element.
        """
        numel = self.info(name).numel
        for start in range(0, numel, CHUNK_ELEMENTS):
            end = min(start + CHUNK_ELEMENTS, numel)
            delta = delta32[: end - start]
            delta.copy_(self.readers[0].read_into(self.names[name][0], start, end, buffers[0]))
            if len(self.readers) == 2:
                delta.sub_(self.readers[1].read_into(self.names[name][1], start, end, buffers[1]))
            yield start, end, delta

    def close(self):
        for reader in self.readers:
            reader.close()


def check_configs(readers):
    first = readers[0]
    for other in readers[1:]:
        for key in ARCH_KEYS:
            a, b = first.config.get(key), other.config.get(key)
            if a != b:
                raise TransferError(f"config mismatch: {key} = {a!r} in {first.model_dir} but {b!r} in "
                                    f"{other.model_dir}; a skill vector only transfers between models "
                                    "of one architecture")


def check_same_names(a, b, a_label, b_label):
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise TransferError(f"tensor names differ: only in {a_label}: {only_a[:5]}{' ...' if len(only_a) > 5 else ''}; "
                            f"only in {b_label}: {only_b[:5]}{' ...' if len(only_b) > 5 else ''}")


def plan_target(source, target_dir, output_dir, exclude, shared_vocab_rows):
    target = CheckpointReader(target_dir)
    if target.config is None:
        raise TransferError(f"target {target.model_dir} has no config.json; an output needs the target's config")
    if source.fingerprint is not None:
        for key, value in source.fingerprint.items():
            if key != "vocab_size" and target.config.get(key) != value:
                raise TransferError(f"config mismatch: {key} = {value!r} in the skill vector's source models "
                                    f"but {target.config.get(key)!r} in target {target.model_dir}")
    target_names = effective_names(target)
    check_same_names(source.names, target_names, source.description, f"target {target_dir}")
    excluded = [n for n in target_names if exclude is not None and exclude.search(n)]
    # A tied target can only receive a separate lm_head delta by being untied in the output.
    untie = (target.tied and LM_HEAD in target_names and not source.tied
             and LM_HEAD not in excluded)
    plan = TargetPlan(target, Path(output_dir), untie, excluded=excluded)
    stored = set(target.names())
    for name, stored_name in target_names.items():
        if name == LM_HEAD and target.tied and not untie and name not in stored:
            continue  # stays tied: lm_head is not stored, it follows the embeddings
        if name == LM_HEAD and target.tied and not untie:
            # A tied target storing a (stale) lm_head: transformers ignores it; keep its bytes.
            plan.sources[name], plan.apply[name] = name, 0
            continue
        plan.sources[name] = stored_name
        t_info = target.info(stored_name)
        if name in excluded or not t_info.dtype.is_floating_point:
            plan.apply[name] = 0
            continue
        v_info = source.info(name)
        if not v_info.dtype.is_floating_point:
            raise TransferError(f"{name}: the skill vector tensor has non-float dtype {v_info.dtype}")
        if v_info.shape == t_info.shape:
            plan.apply[name] = t_info.numel
            continue
        if (len(v_info.shape) == len(t_info.shape) >= 1 and v_info.shape[1:] == t_info.shape[1:]
                and (name.endswith(EMBED_SUFFIX) or name == LM_HEAD)):
            v_rows, t_rows = v_info.shape[0], t_info.shape[0]
            shared = min(v_rows, t_rows)
            what = (f"rows {shared}..{t_rows - 1} exist only in the target" if t_rows > v_rows
                    else f"rows {shared}..{v_rows - 1} exist only in the skill vector")
            if not shared_vocab_rows:
                raise TransferError(
                    f"vocabulary mismatch in {name}: skill vector has {v_rows} rows, target {target_dir} has "
                    f"{t_rows}; {what}. Pass --shared_vocab_rows to apply the vector to rows 0..{shared - 1} only "
                    f"(the target's other rows stay untouched) if token ids 0..{shared - 1} mean the same in both "
                    f"tokenizers, or --exclude to leave this tensor as the target's.")
            plan.apply[name] = shared * _numel(t_info.shape[1:])
            continue
        raise TransferError(f"{name}: skill vector has shape {list(v_info.shape)} but target {target_dir} has "
                            f"{list(t_info.shape)}")
    if target.tied and not untie:
        plan.embeddings_note = ("tied embeddings kept tied: the embedding delta also acts as the lm_head delta"
                                if source.tied else
                                "tied target kept tied: lm_head is excluded, the embeddings follow --exclude")
    elif untie:
        plan.embeddings_note = ("target was tied but the source models are not: the output is UNTIED "
                                "(tie_word_embeddings=false) and stores lm_head = target embeddings + lm_head delta")
    elif source.tied and LM_HEAD in stored:
        plan.embeddings_note = ("source models are tied: the target's own lm_head received the embedding delta")
    else:
        plan.embeddings_note = "untied embeddings: lm_head and embeddings each received their own delta"
    return plan


def check_outputs(plans, inputs, overwrite):
    resolved_inputs = {Path(p).resolve() for p in inputs}
    seen = set()
    for plan in plans:
        out = plan.output_dir.resolve()
        if out in seen:
            raise TransferError(f"output dir {plan.output_dir} is given twice")
        seen.add(out)
        for inp in resolved_inputs:
            if out == inp or out in inp.parents:
                raise TransferError(f"output dir {plan.output_dir} is (or contains) the input {inp}; "
                                    "choose a new output dir")
        if out.exists() and not overwrite:
            raise TransferError(f"output dir {plan.output_dir} exists; pass --overwrite to replace it")


# ----------------------------------------------------------------------------------------------
# The streaming transfer: a reader thread, float32 math here, a writer thread

@dataclass
class Chunk:
    name: str
    start: int
    end: int
    inputs: list          # uint8 buffers: one per vector stream, then one per target
    outputs: list         # uint8 buffers, one per target
    views: list = None
    results: list = None


def _check_finite(x, what):
    # A sum is one fast pass; only when it is not finite do we look element-wise (a huge sum is legal).
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise FloatingPointError(f"NaN or Inf in {what}; check the inputs (an exploded or corrupted checkpoint?)")


def _raise_on_sigterm(signum, frame):
    raise KeyboardInterrupt("terminated (SIGTERM)")


def transfer(source, plans, alpha=1.0, max_shard_size="5GB", quiet=False):
    """Run the transfer for all targets at once; returns one summary dict per target."""
    max_shard_size = parse_size(max_shard_size)
    order = list(plans[0].sources)
    for plan in plans[1:]:
        order += [n for n in plan.sources if n not in order]
    n_vec = len(source.readers)

    def target_entries(plan):  # each output keeps its target's own tensor order
        return [(n, plan.reader.info(s).dtype, plan.reader.info(s).shape) for n, s in plan.sources.items()]

    max_item = lambda infos: max([i.itemsize for i in infos] + [1])
    vec_item = [max_item([r.info(source.names[n][k]) for n in order if n in source.names
                          for r in [source.readers[k]]]) for k in range(n_vec)]
    tgt_item = [max_item([p.reader.info(s) for s in p.sources.values()]) for p in plans]
    slots = queue.Queue()
    for _ in range(3):  # one chunk being read, one computed, one written
        slots.put(([torch.empty(CHUNK_ELEMENTS * i, dtype=torch.uint8) for i in vec_item + tgt_item],
                   [torch.empty(CHUNK_ELEMENTS * i, dtype=torch.uint8) for i in tgt_item]))
    delta32 = torch.empty(BLOCK_ELEMENTS, dtype=torch.float32)
    out32 = torch.empty(BLOCK_ELEMENTS, dtype=torch.float32)

    tmp_dirs, writers = [], []
    stats = [dict(sumsq=0.0, changed=set(), copied=0, bytes=0) for _ in plans]
    total_bytes = sum(sum(plan.reader.info(s).nbytes for s in plan.sources.values()) for plan in plans)
    to_compute, to_write = queue.Queue(maxsize=2), queue.Queue(maxsize=2)
    failure = []
    stop = threading.Event()

    def reader_loop():
        try:
            for name in order:
                v_numel = source.info(name).numel if name in source.names else 0
                t_numel = [p.reader.info(p.sources[name]).numel if name in p.sources else 0 for p in plans]
                need_vec = any(p.apply.get(name, 0) for p in plans)
                total = max(t_numel)
                for start in range(0, max(total, 1), CHUNK_ELEMENTS):
                    end = min(start + CHUNK_ELEMENTS, total)
                    while True:
                        try:
                            inputs, outputs = slots.get(timeout=0.5)
                            break
                        except queue.Empty:
                            if stop.is_set():
                                return
                    chunk = Chunk(name, start, end, inputs, outputs, views=[])
                    for k in range(n_vec):
                        vend = min(end, v_numel)
                        chunk.views.append(source.readers[k].read_into(source.names[name][k], start, vend, inputs[k])
                                           if need_vec and vend > start else None)
                    for j, plan in enumerate(plans):
                        tend = min(end, t_numel[j])
                        chunk.views.append(plan.reader.read_into(plan.sources[name], start, tend, inputs[n_vec + j])
                                           if tend > start else None)
                    _put(to_compute, chunk)
            _put(to_compute, None)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            failure.append(e)
            stop.set()

    def writer_loop():
        try:
            while True:
                chunk = _get(to_write)
                if chunk is None:
                    return
                for j, result in enumerate(chunk.results):
                    if result is not None:
                        writers[j].write(chunk.name, result)
                        stats[j]["bytes"] += result.numel()
                        progress.update(result.numel())
                slots.put((chunk.inputs, chunk.outputs))
        except BaseException as e:  # noqa: BLE001
            failure.append(e)
            stop.set()

    def _put(q, item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.5)
                return
            except queue.Full:
                pass

    def _get(q):
        while not stop.is_set():
            try:
                return q.get(timeout=0.5)
            except queue.Empty:
                pass
        return None

    def compute(chunk):
        """out = target + alpha * delta for every target, block by block, in float32; one cast."""
        vec = chunk.views[:n_vec]
        m = vec[0].numel() if vec[0] is not None else 0
        targets = chunk.views[n_vec:]
        chunk.results = [None if t is None else chunk.outputs[j][: t.numel() * t.element_size()]
                         for j, t in enumerate(targets)]
        applied = [max(0, min(plan.apply.get(chunk.name, 0) - chunk.start, m)) for plan in plans]
        for j, t in enumerate(targets):
            if t is not None and (not t.dtype.is_floating_point or applied[j] < t.numel()):
                # Bytes outside the applied range (excluded tensors, extra vocabulary rows) stay exact.
                chunk.results[j][applied[j] * t.element_size():].copy_(t.view(torch.uint8)[applied[j] * t.element_size():])
        for bs in range(0, max([t.numel() for t in targets if t is not None] + [0]), BLOCK_ELEMENTS):
            be_vec = min(bs + BLOCK_ELEMENTS, m)
            delta = delta32[: max(be_vec - bs, 0)]
            if be_vec > bs:
                delta.copy_(vec[0][bs:be_vec])
                if n_vec == 2:
                    delta.sub_(vec[1][bs:be_vec])  # float32 - bf16 upcasts exactly: = rl.float() - base.float()
                if alpha != 1.0:
                    delta.mul_(alpha)
            sumsq = {}
            for j, (plan, t) in enumerate(zip(plans, targets)):
                if t is None or not t.dtype.is_floating_point:
                    continue
                be = min(bs + BLOCK_ELEMENTS, t.numel())
                if be <= bs:
                    continue
                a = max(0, min(applied[j], be) - bs)  # applied elements of this block
                o = out32[: be - bs]
                o.copy_(t[bs:be])
                if a:
                    o[:a].add_(delta[:a])
                    if a not in sumsq:
                        sumsq[a] = float(torch.dot(delta[:a], delta[:a]))
                    stats[j]["sumsq"] += sumsq[a]
                    if sumsq[a] > 0:
                        stats[j]["changed"].add(chunk.name)
                _check_finite(o, f"{chunk.name} (target {plan.reader.path}, elements "
                              f"{chunk.start + bs}..{chunk.start + be})")
                if a:
                    out = chunk.results[j].view(t.dtype)[bs:bs + a]
                    out.copy_(o[:a])  # the one cast to the target's dtype
                    if t.dtype not in (torch.float32, torch.bfloat16) and not torch.isfinite(out).all():
                        raise FloatingPointError(f"{chunk.name}: the result overflows {t.dtype} "
                                                 f"(target {plan.reader.path})")

    interrupted = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        # Turn SIGTERM into an exception so the temporary dirs are removed on the way out.
        signal.signal(signal.SIGTERM, _raise_on_sigterm)
    torch_threads = torch.get_num_threads()
    # One compute thread: the reader and writer threads need the other cores, and with cache-sized
    # blocks one core keeps up with the disk.
    torch.set_num_threads(1)
    progress = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="writing", disable=quiet, file=sys.stderr)
    t0 = time.perf_counter()
    threads = []
    try:
        for plan in plans:
            tmp = fresh_tmp_dir(plan.output_dir)
            tmp_dirs.append(tmp)
            writers.append(ShardedWriter(tmp, target_entries(plan), max_shard_size))
        threads = [threading.Thread(target=reader_loop, daemon=True), threading.Thread(target=writer_loop, daemon=True)]
        for t in threads:
            t.start()
        while True:
            chunk = _get(to_compute)
            if chunk is None:
                break
            compute(chunk)
            _put(to_write, chunk)
        _put(to_write, None)
        for t in threads:
            t.join()
        if failure:
            raise failure[0]
        if stop.is_set():
            raise RuntimeError("transfer stopped")
        for plan, writer, tmp in zip(plans, writers, tmp_dirs):
            writer.finish()
            copy_model_files(plan, tmp)
        seconds = time.perf_counter() - t0
        for plan, tmp in zip(plans, tmp_dirs):
            publish_dir(tmp, plan.output_dir)
        tmp_dirs = []
    except BaseException:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        for writer in writers:
            writer.abort()
        for tmp in tmp_dirs:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        progress.close()
        torch.set_num_threads(torch_threads)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, interrupted)
    summaries = []
    for plan, st in zip(plans, stats):
        summaries.append(dict(
            target=str(plan.reader.path), output=str(plan.output_dir), alpha=alpha,
            tensors=len(plan.sources), tensors_changed=len(st["changed"]),
            excluded=sorted(plan.excluded), skill_norm=st["sumsq"] ** 0.5, bytes=st["bytes"],
            seconds=seconds, embeddings=plan.embeddings_note))
    return summaries


def copy_model_files(plan, out_dir):
    """Everything but the weights: config, generation config, tokenizer, chat template."""
    src = plan.reader.model_dir
    for f in src.iterdir():
        if not f.is_file() or f.suffix in (".safetensors", ".bin", ".pt", ".pth") or f.name.endswith(".index.json"):
            continue
        shutil.copy2(f, out_dir / f.name)
    if plan.untie:
        config = json.loads((src / "config.json").read_text())
        config["tie_word_embeddings"] = False
        (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# Entry point

def inherit(target_models, output_dirs, grpo_model=None, base_model=None, skill_vector=None, alpha=1.0,
            exclude=None, overwrite=False, dry_run=False, shared_vocab_rows=False, max_shard_size="5GB",
            quiet=False):
    """Write target + alpha * skill for every target; all checks run before anything is written.

    Returns one summary dict per target (a plan without numbers when dry_run).
    """
    if len(target_models) != len(output_dirs):
        raise TransferError(f"{len(target_models)} target models but {len(output_dirs)} output dirs; "
                            "give one output dir per target")
    if not target_models:
        raise TransferError("no target models given")
    parse_size(max_shard_size)
    exclude_re = re.compile(exclude) if exclude else None
    source = SkillSource(grpo_model, base_model, skill_vector)
    plans = []
    try:
        for target_dir, output_dir in zip(target_models, output_dirs):
            plans.append(plan_target(source, target_dir, output_dir, exclude_re, shared_vocab_rows))
        check_outputs(plans, [p for p in (grpo_model, base_model, skill_vector) if p] + list(target_models), overwrite)
        if dry_run:
            return [dict(target=str(p.reader.path), output=str(p.output_dir), alpha=alpha, tensors=len(p.sources),
                         tensors_receiving=sum(1 for v in p.apply.values() if v), excluded=sorted(p.excluded),
                         bytes=sum(p.reader.info(s).nbytes for s in p.sources.values()),
                         embeddings=p.embeddings_note, dry_run=True) for p in plans]
        return transfer(source, plans, alpha=alpha, max_shard_size=max_shard_size, quiet=quiet)
    finally:
        source.close()
        for plan in plans:
            plan.reader.close()


def format_summary(s):
    if s.get("dry_run"):
        return (f"[dry run] {s['target']} -> {s['output']}: {s['tensors']} tensors, {s['tensors_receiving']} would "
                f"receive {s['alpha']} * skill, excluded {len(s['excluded'])}, {s['bytes'] / 1e9:.3f} GB to write; "
                f"{s['embeddings']}")
    gbps = s["bytes"] / 1e9 / max(s["seconds"], 1e-9)
    return (f"{s['target']} -> {s['output']}: {s['tensors_changed']} of {s['tensors']} tensors changed, "
            f"excluded {len(s['excluded'])}, ||alpha*skill|| = {s['skill_norm']:.6g}, {s['bytes'] / 1e9:.3f} GB "
            f"written in {s['seconds']:.1f} s ({gbps:.2f} GB/s of output); {s['embeddings']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpo_model", help="the RL (GRPO) result: HF model dir or verl checkpoint dir")
    parser.add_argument("--base_model", help="the exact checkpoint RL started from")
    parser.add_argument("--skill_vector", help="a saved skill vector (calc_delta_and_save.py) instead of rl/base")
    parser.add_argument("--target_models", nargs="+", required=True, help="model dirs to add the skill to")
    parser.add_argument("--output_dirs", nargs="+", required=True, help="one new model dir per target")
    parser.add_argument("--alpha", type=float, default=1.0, help="scale lambda of the skill vector (default 1.0)")
    parser.add_argument("--exclude", help="regex: tensors whose names match keep the target's values "
                        "(e.g. 'embed_tokens|lm_head')")
    parser.add_argument("--shared_vocab_rows", action="store_true",
                        help="on a vocabulary-size mismatch, apply the vector to the shared leading rows only "
                        "(only when those token ids mean the same in both tokenizers)")
    parser.add_argument("--max_shard_size", default="5GB", help="output shard size (default 5GB, as huggingface_hub)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output dirs (after success)")
    parser.add_argument("--dry_run", action="store_true", help="run all checks and print the plan; write nothing")
    args = parser.parse_args(argv)
    try:
        summaries = inherit(args.target_models, args.output_dirs, grpo_model=args.grpo_model,
                            base_model=args.base_model, skill_vector=args.skill_vector, alpha=args.alpha,
                            exclude=args.exclude, overwrite=args.overwrite, dry_run=args.dry_run,
                            shared_vocab_rows=args.shared_vocab_rows, max_shard_size=args.max_shard_size)
    except (TransferError, FileNotFoundError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in summaries:
        print(format_summary(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
