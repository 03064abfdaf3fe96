"""Checkpoint I/O for the PaST operator: lazy reading and validation, sharded safetensors writing,
copying a model's other files, atomic publishing of outputs, and the streaming pipeline.

The merge math lives elsewhere (inherit_weight.py, calc_delta_and_save.py, merge_lora.py); they,
analysis/ and debug/ read and write checkpoints only through this module. Stdlib + torch only:
a safetensors file is an 8-byte little-endian header length, a JSON header
{name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the raw data; it is read
and written here directly, with pread/pwrite into caller-owned buffers, so nothing is
memory-mapped and reading a 70B model does not grow the process's memory.

Every check of an input runs when it is opened, before any output exists, and fails with a
`CheckpointError` whose one-line message names the file (and the tensor) and what to do.
"""

import contextlib
import functools
import json
import math
import os
import queue
import re
import shutil
import signal
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

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
# Config fields that must agree between models whose weights are combined.
ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "intermediate_size")
CHUNK_ELEMENTS = 4 * 2**20  # elements per read/written chunk: 8 MB of bf16
MERGE_FSDP_HINT = ("convert it first: bash scripts/merge_fsdp_to_hf.sh CKPT_DIR OUT_DIR "
                   "(= python -m verl.model_merger merge --backend fsdp --local_dir CKPT_DIR/actor "
                   "--target_dir OUT_DIR), or save with checkpoint.save_contents including hf_model")
RECOPY = "the file is damaged or was cut short (a partial download or copy): download or copy it again"


class CheckpointError(ValueError):
    """A checkpoint (or an output path) that cannot be used; the message is one line."""


# Errors an entry point reports as one line ("error: ...", exit code 2) instead of a traceback.
USER_ERRORS = (CheckpointError, FileNotFoundError, FloatingPointError)


def one_line_errors(main):
    """Decorate an entry point's main(argv): a USER_ERRORS exception ends it with its one-line
    message on stderr and exit code 2, not a traceback."""
    @functools.wraps(main)
    def run(argv=None):
        try:
            return main(argv)
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return run


def usable_cores():
    """The CPU cores this process may run on (its affinity mask: a container's or taskset's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def numel(shape):
    """Number of elements of a tensor of this shape (1 for a scalar)."""
    return math.prod(shape)


@dataclass
class TensorInfo:
    dtype: torch.dtype
    shape: tuple
    file: str = ""               # the file holding the data
    offset: int = 0              # absolute byte offset of the data in a safetensors file
    tensor: torch.Tensor = None  # the data, for torch.load-ed (.bin/.pth) files

    @property
    def numel(self):
        return numel(self.shape)

    @property
    def nbytes(self):
        return self.numel * self.dtype.itemsize


def read_json(path):
    """A JSON file (config.json, an index) as a dict; a broken one fails with its name."""
    try:
        value = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); fix it or copy it again") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} holds a JSON {type(value).__name__}, expected an object")
    return value


def read_safetensors_header(path):
    """({name: TensorInfo} in data order, metadata) of a .safetensors file, checked against its size."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        header_len = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
        if header_len is None or 8 + header_len > size:
            raise CheckpointError(f"{path} is not a complete safetensors file ({size} bytes, too short for "
                                  f"its header); {RECOPY}")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({e}); {RECOPY}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object; {RECOPY}")
    metadata = header.pop("__metadata__", None) or {}
    tensors, data_start = {}, 8 + header_len
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            valid = all(isinstance(x, int) and x >= 0 for x in (*shape, begin, end))
        except (TypeError, KeyError, ValueError):
            valid = False
        if not valid:
            raise CheckpointError(f"{path}: tensor {name} has a malformed header entry; {RECOPY}")
        if dtype not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has dtype {dtype}, which the operator does not handle")
        info = TensorInfo(SAFETENSORS_DTYPES[dtype], shape, str(path), data_start + begin)
        if end - begin != info.nbytes:
            raise CheckpointError(f"{path}: tensor {name} takes {end - begin} bytes in the header but "
                                  f"{list(shape)} {dtype} needs {info.nbytes}; {RECOPY}")
        tensors[name] = info
    ordered = dict(sorted(tensors.items(), key=lambda kv: kv[1].offset))
    for name, info in ordered.items():
        if info.offset + info.nbytes > size:
            raise CheckpointError(f"{path} is truncated: tensor {name} ends at byte {info.offset + info.nbytes} "
                                  f"but the file has {size} bytes; {RECOPY}")
    return ordered, metadata


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


def _weight_files(model_dir):
    """The weight files of a model dir and its index's {tensor: file} (None without an index)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = model_dir / index_name
        if index.exists():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index} has no weight_map; {RECOPY}")
            for name, file in weight_map.items():
                if not (model_dir / file).is_file():
                    raise CheckpointError(f"{index} puts tensor {name} in {file}, which is missing from "
                                          f"{model_dir}; the copy is incomplete: copy or download that shard")
            return [model_dir / f for f in sorted(set(weight_map.values()))], weight_map
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (model_dir / single).exists():
            return [model_dir / single], None
    return sorted(model_dir.glob("model-*.safetensors")), None


def _torch_load(file):
    try:
        state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a file we cannot use
        first_line = (str(e).splitlines() or [""])[0]
        raise CheckpointError(f"{file} cannot be read ({type(e).__name__}: {first_line}); {RECOPY}") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointError(f"{file}: expected a dict of tensors, got {type(state).__name__}")
    return {n: TensorInfo(t.dtype, tuple(t.shape), str(file), tensor=t.contiguous()) for n, t in state.items()}


class CheckpointReader:
    """Read-only, lazy view of the tensors of a checkpoint, validated when opened.

    `path` is a model dir (sharded or single safetensors, legacy .bin, verl actor/huggingface) or a
    single .safetensors / .pth file (a saved skill vector). Safetensors data is read with pread into
    caller-owned buffers; .bin/.pth files are torch.load-ed with mmap.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.metadata, self.tensors, self.config = {}, {}, None
        self._fds, self._lock = {}, threading.Lock()
        if self.path.is_file():
            self.model_dir, files, weight_map = None, [self.path], None
        else:
            self.model_dir = find_weights_dir(self.path)
            files, weight_map = _weight_files(self.model_dir)
        for file in files:
            if file.suffix == ".safetensors":
                tensors, metadata = read_safetensors_header(file)
                self.metadata.update(metadata)
            else:
                tensors = _torch_load(file)
            for name in tensors:
                if name in self.tensors:
                    raise CheckpointError(f"tensor {name} is stored twice in {self.path} "
                                          f"({Path(self.tensors[name].file).name} and {file.name})")
            self.tensors.update(tensors)
        for name, file in (weight_map or {}).items():
            if name not in self.tensors or Path(self.tensors[name].file).name != Path(file).name:
                raise CheckpointError(f"{self.model_dir}: the index puts tensor {name} in {file}, which does not "
                                      f"hold it; the shards and the index come from different checkpoints")
        if self.model_dir is not None and (self.model_dir / "config.json").exists():
            self.config = read_json(self.model_dir / "config.json")

    @property
    def tied(self):
        """Whether lm_head is the input embeddings: the config ties them (transformers re-ties at load);
        a file without config (a saved skill vector) is tied when it stores embeddings but no lm_head."""
        if self.config is not None:
            return bool(self.config.get("tie_word_embeddings", False))
        return self.model_dir is None and LM_HEAD not in self.tensors and len(self._embeddings()) == 1

    def _embeddings(self):
        return [n for n in self.tensors if n.endswith(EMBED_SUFFIX)]

    def names(self):
        """Tensor names in storage order (file by file, by offset)."""
        return list(self.tensors)

    def info(self, name):
        return self.tensors[name]

    def read_into(self, name, start, end, buffer):
        """Read elements [start, end) of the flattened tensor into the uint8 `buffer`; return a typed view."""
        info = self.tensors[name]
        nbytes = (end - start) * info.dtype.itemsize
        out = buffer[:nbytes]
        if info.tensor is not None:
            out.view(info.dtype).copy_(info.tensor.reshape(-1)[start:end])
            return out.view(info.dtype)
        fd = self._fd(info.file)
        view = memoryview(out.numpy())
        offset, done = info.offset + start * info.dtype.itemsize, 0
        while done < nbytes:
            n = os.preadv(fd, [view[done:]], offset + done)
            if n == 0:
                raise CheckpointError(f"{info.file} became shorter while it was read (tensor {name}); "
                                      "was it being overwritten?")
            done += n
        return out.view(info.dtype)

    def chunks(self, name, buffer):
        """Yield (start, end, typed view) over the tensor, CHUNK_ELEMENTS at a time, into `buffer`."""
        total = self.tensors[name].numel
        for start in range(0, total, CHUNK_ELEMENTS):
            end = min(start + CHUNK_ELEMENTS, total)
            yield start, end, self.read_into(name, start, end, buffer)

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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def effective_names(reader):
    """{name as transformers sees the model: stored name}. A tied model also has lm_head (= its
    embeddings); a stored lm_head of a tied model is ignored, as transformers re-ties it at load."""
    names = {n: n for n in reader.names()}
    if reader.tied and len(reader._embeddings()) == 1:
        names[LM_HEAD] = reader._embeddings()[0]
    return names


def architecture(config):
    """The config fields (ARCH_KEYS) that must agree between models whose weights are combined."""
    return {k: config.get(k) for k in ARCH_KEYS}


def check_architecture(expected, expected_label, config, label):
    for key in ARCH_KEYS:
        if expected.get(key) != config.get(key):
            raise CheckpointError(f"config mismatch: {key} = {expected.get(key)!r} in {expected_label} but "
                                  f"{config.get(key)!r} in {label}; weights only combine between models of "
                                  "one architecture")


def check_same_tensors(readers, labels):
    """Refuse checkpoints whose tensors (as transformers sees them) differ in names or shapes;
    returns each reader's effective_names."""
    names = [effective_names(r) for r in readers]
    for k in range(1, len(readers)):
        check_same_names(names[0], names[k], labels[0], labels[k])
        for name in names[0]:
            a, b = readers[0].info(names[0][name]).shape, readers[k].info(names[k][name]).shape
            if a != b:
                raise CheckpointError(f"{name}: shape {list(a)} in {labels[0]} but {list(b)} in {labels[k]}; "
                                      "only checkpoints of one shape combine")
    return names


def check_same_names(a, b, a_label, b_label):
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise CheckpointError(f"tensor names differ: only in {a_label}: {only_a[:5]}{' ...' if len(only_a) > 5 else ''}"
                              f"; only in {b_label}: {only_b[:5]}{' ...' if len(only_b) > 5 else ''}")


def check_finite(x, what):
    """Refuse NaN or Inf in tensor x (inputs or results of the math), naming `what`."""
    # A sum is one fast pass; only when it is not finite do we look element-wise (a huge sum is legal).
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise FloatingPointError(f"NaN or Inf in {what}; check the inputs (an exploded or corrupted checkpoint?)")


# ----------------------------------------------------------------------------------------------
# Writing

def parse_size(size):
    """'5GB' -> 5_000_000_000 (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024, as in transformers)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)?\s*", size, flags=re.IGNORECASE)
    if not match:
        raise CheckpointError(f"size {size!r} not understood: use e.g. 5GB, 500MB, 300KB or a byte count")
    units = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30, None: 1}
    unit = match.group(2).lower() if match.group(2) else None
    return int(float(match.group(1)) * units[unit])


def safetensors_header(entries, metadata):
    """Header bytes of a safetensors file; entries = [(name, dtype, shape)] in data order."""
    header, offset = {"__metadata__": metadata}, 0
    for name, dtype, shape in entries:
        nbytes = dtype.itemsize * numel(shape)
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def shard_layout(entries, max_shard_size):
    """Greedy packing in order (as huggingface_hub does): [[(name, dtype, shape), ...], ...]."""
    shards, current, current_size = [], [], 0
    for entry in entries:
        nbytes = entry[1].itemsize * numel(entry[2])
        if current and current_size + nbytes > max_shard_size:
            shards.append(current)
            current, current_size = [], 0
        current.append(entry)
        current_size += nbytes
    if current or not shards:
        shards.append(current)
    return shards


WRITEBACK_BYTES = 64 * 2**20


class SafetensorsWriter:
    """One safetensors file whose layout is fixed up front; tensors arrive chunk by chunk, in any order.

    `finish(metadata)` may rewrite the metadata with values of the same length (a digest of the data
    known only at the end)."""

    def __init__(self, path, entries, metadata=None):
        self.path, self.entries = Path(path), list(entries)
        self.metadata = {"format": "pt", **(metadata or {})}
        self.max_itemsize = max([dtype.itemsize for _, dtype, _ in self.entries] + [1])
        header = safetensors_header(self.entries, self.metadata)
        self._header_len = len(header)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(self._fd, header)
        self._next, offset = {}, len(header)  # name -> byte offset of its next chunk
        for name, dtype, shape in self.entries:
            self._next[name] = offset
            offset += dtype.itemsize * numel(shape)
        self._unflushed = 0

    def write(self, name, data):
        """Write the next chunk (uint8 tensor) of tensor `name`; a tensor's chunks come in order."""
        view, done = memoryview(data.numpy()), 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], self._next[name] + done)
        self._next[name] += done
        self._unflushed += done
        if self._unflushed >= WRITEBACK_BYTES:
            # Start writeback now (DONTNEED on dirty pages queues it without waiting), so the
            # final fsync has little left and the output does not crowd the page cache.
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
            self._unflushed = 0

    def finish(self, metadata=None):
        if metadata is not None:
            header = safetensors_header(self.entries, {"format": "pt", **metadata})
            if len(header) != self._header_len:
                raise ValueError("finish(metadata) must keep the header's length")
            os.pwrite(self._fd, header, 0)
        os.fsync(self._fd)
        self.close()

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ShardedWriter:
    """HF-style sharded safetensors (model-0000k-of-0000N.safetensors + index) in `out_dir`, or one
    model.safetensors; the layout is fixed up front from `entries` (each output keeps its own
    order), chunks may arrive in any order of tensors."""

    def __init__(self, out_dir, entries, max_shard_size, metadata=None):
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir, self.shards = out_dir, shard_layout(entries, max_shard_size)
        n = len(self.shards)
        self.files = (["model.safetensors"] if n == 1 else
                      [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
        self.total_size = sum(d.itemsize * numel(s) for _, d, s in entries)
        self.writers, self._shard_of = [], {}
        try:
            for i, shard in enumerate(self.shards):
                self.writers.append(SafetensorsWriter(out_dir / self.files[i], shard, metadata))
                self._shard_of.update({name: i for name, _, _ in shard})
        except BaseException:
            self.close()
            raise
        self.max_itemsize = max(w.max_itemsize for w in self.writers)

    def write(self, name, data):
        self.writers[self._shard_of[name]].write(name, data)

    def finish(self):
        """fsync and close every shard and write the index (for more than one shard)."""
        for writer in self.writers:
            writer.finish()
        if len(self.files) > 1:
            index = {"metadata": {"total_size": self.total_size},
                     "weight_map": {name: self.files[i] for name, i in self._shard_of.items()}}
            (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")

    def close(self):
        for writer in self.writers:
            writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def copy_model_files(model_dir, out_dir, config_updates=None):
    """Everything of a model dir but its weights: config, generation config, tokenizer, chat template.
    `config_updates` are set in the copied config.json."""
    for f in Path(model_dir).iterdir():
        if not f.is_file() or f.suffix in (".safetensors", ".bin", ".pt", ".pth") or f.name.endswith(".index.json"):
            continue
        shutil.copy2(f, Path(out_dir) / f.name)
    if config_updates:
        config = {**read_json(Path(model_dir) / "config.json"), **config_updates}
        (Path(out_dir) / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def check_output_paths(outputs, inputs, overwrite):
    """Refuse an output given twice, one that is (or contains) an input, or an existing one without overwrite."""
    resolved_inputs = [Path(p).resolve() for p in inputs]
    seen = set()
    for output in outputs:
        out = Path(output).resolve()
        if out in seen:
            raise CheckpointError(f"output {output} is given twice")
        seen.add(out)
        for inp in resolved_inputs:
            if out == inp or out in inp.parents:
                raise CheckpointError(f"output {output} is (or contains) the input {inp}; choose a new output")
        if out.exists() and not overwrite:
            raise CheckpointError(f"output {output} exists; pass --overwrite to replace it")


def _raise_on_sigterm(signum, frame):
    raise KeyboardInterrupt("terminated (SIGTERM)")


@contextlib.contextmanager
def atomic_outputs(final_paths):
    """Yield one temporary path per final path, to write a file or a dir at; when the block succeeds,
    rename each into place (an existing one is replaced only then); when it fails, SIGTERM included,
    remove them. The temporary paths lie in hidden `.NAME.tmp-*` dirs beside the final ones."""
    final_paths = [Path(p) for p in final_paths]
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    tmp_dirs = []
    try:
        for final in final_paths:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp_dirs.append(Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent)))
        yield [tmp / final.name for tmp, final in zip(tmp_dirs, final_paths)]
        for tmp, final in zip(tmp_dirs, final_paths):
            if final.exists():
                os.replace(final, tmp / ".replaced")
            os.replace(tmp / final.name, final)
            shutil.rmtree(tmp)  # with the replaced output, if any
            fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        tmp_dirs = []
    finally:
        for tmp in tmp_dirs:
            shutil.rmtree(tmp, ignore_errors=True)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


# ----------------------------------------------------------------------------------------------
# The streaming pipeline: a reader thread, the caller's computation, a writer thread

def read_buffers(tensors):
    """One uint8 buffer per input stream of `tensors` (see stream_chunks), a chunk of its largest dtype."""
    itemsizes = {}
    for _, _, inputs in tensors:
        for s, source in enumerate(inputs):
            if source is not None:
                itemsizes[s] = max(itemsizes.get(s, 1), source[0].info(source[1]).dtype.itemsize)
    n_streams = max([len(inputs) for _, _, inputs in tensors] + [0])
    return [torch.empty(CHUNK_ELEMENTS * itemsizes.get(s, 1), dtype=torch.uint8) for s in range(n_streams)]


def read_chunk(inputs, start, end, buffers):
    """Elements [start, end) of every input stream: a typed view each, None where a stream is not read
    or its tensor ends before `start`."""
    blocks = []
    for source, buffer in zip(inputs, buffers):
        stop = min(end, source[0].info(source[1]).numel) if source is not None else start
        blocks.append(source[0].read_into(source[1], start, stop, buffer) if stop > start else None)
    return blocks


def computed_tensors(tensors, compute, layouts):
    """The sequential twin of stream_chunks for one output: yield (name, tensor) once `compute` has
    filled the tensor chunk by chunk (its outs are slices of it); layouts[name] = (dtype, shape).
    Memory: one result tensor at a time."""
    tensors = list(tensors)
    buffers = read_buffers(tensors)
    for name, total, inputs in tensors:
        dtype, shape = layouts[name]
        result = torch.empty(shape, dtype=dtype)
        flat, size = result.view(-1).view(torch.uint8), dtype.itemsize
        for start in range(0, max(total, 1), CHUNK_ELEMENTS):
            end = min(start + CHUNK_ELEMENTS, total)
            compute(name, start, end, read_chunk(inputs, start, end, buffers), [flat[start * size: end * size]])
        yield name, result


def stream_chunks(tensors, compute, writers, on_write=None, in_flight=3):
    """Run `compute` over every chunk of `tensors` while the next chunk is read and the last one written.

    tensors: [(name, numel, inputs)], in processing order; inputs has one entry per input stream
    (the same streams for every tensor): (CheckpointReader, stored name), or None when that stream
    is not needed for this tensor. Each tensor is cut into chunks of CHUNK_ELEMENTS over [0, numel).
    compute(name, start, end, blocks, outs) runs in the calling thread; blocks are read_chunk's
    views, outs one uint8 buffer per writer (a chunk of its largest dtype); it returns one uint8
    chunk (or None) per writer, which a writer thread passes to writer.write(name, chunk) in order.
    Memory: `in_flight` sets of buffers. Any failure stops all threads and is raised here.
    """
    tensors = list(tensors)
    free = queue.Queue()
    for _ in range(in_flight):  # one chunk being read, one computed, one written
        free.put((read_buffers(tensors), [torch.empty(CHUNK_ELEMENTS * w.max_itemsize, dtype=torch.uint8)
                                          for w in writers]))
    to_compute, to_write = queue.Queue(maxsize=2), queue.Queue(maxsize=2)
    stop, failure, done = threading.Event(), [], object()

    def put(q, item):
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                return q.put(item, timeout=0.5)

    def get(q):
        while not stop.is_set():
            with contextlib.suppress(queue.Empty):
                return q.get(timeout=0.5)
        return done

    def guarded(loop):
        def run():
            try:
                loop()
            except BaseException as e:  # noqa: BLE001 - handed to the calling thread
                failure.append(e)
                stop.set()
        return run

    @guarded
    def read_loop():
        for name, total, inputs in tensors:
            for start in range(0, max(total, 1), CHUNK_ELEMENTS):
                end = min(start + CHUNK_ELEMENTS, total)
                buffers = get(free)
                if buffers is done:
                    return
                put(to_compute, (name, start, end, buffers, read_chunk(inputs, start, end, buffers[0])))
        put(to_compute, done)

    @guarded
    def write_loop():
        while (item := get(to_write)) is not done:
            name, buffers, results = item
            for writer, chunk in zip(writers, results):
                if chunk is not None:
                    writer.write(name, chunk)
                    if on_write:
                        on_write(chunk.numel())
            free.put(buffers)

    torch_threads = torch.get_num_threads()
    # torch on one thread: its OpenMP workers spin-wait, and beside the reader and writer threads
    # that cost 4-10x the wall time on 2 cores. A compute that wants more cores runs its own
    # threads (inherit_weight.Transfer: one per usable core).
    torch.set_num_threads(1)
    threads = [threading.Thread(target=read_loop, daemon=True), threading.Thread(target=write_loop, daemon=True)]
    try:
        for t in threads:
            t.start()
        while (item := get(to_compute)) is not done:
            name, start, end, buffers, blocks = item
            put(to_write, (name, buffers, compute(name, start, end, blocks, buffers[1])))
        put(to_write, done)
        for t in threads:
            t.join()
        if failure:
            raise failure[0]
        if stop.is_set():
            raise RuntimeError("streaming stopped")
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join(timeout=5)
        torch.set_num_threads(torch_threads)


@dataclass
class ModelOutput:
    """A new HF model dir for write_models: its weights' layout and metadata, and the model dir whose
    other files (config, tokenizer, ...) it gets, with `config_updates` set in its config.json."""
    path: Path
    entries: list
    copy_from: Path
    metadata: dict = None
    config_updates: dict = None


def write_models(outputs, tensors, compute, max_shard_size, on_write=None):
    """Write every ModelOutput at once, its weights streamed through `compute` (see stream_chunks,
    one writer per output in order); all are published only when all are complete."""
    with atomic_outputs([o.path for o in outputs]) as tmp_dirs:
        writers = []
        try:
            for output, tmp in zip(outputs, tmp_dirs):
                writers.append(ShardedWriter(tmp, output.entries, max_shard_size, output.metadata))
            stream_chunks(tensors, compute, writers, on_write)
            for output, writer, tmp in zip(outputs, writers, tmp_dirs):
                writer.finish()
                copy_model_files(output.copy_from, tmp, output.config_updates)
        finally:
            for writer in writers:
                writer.close()
