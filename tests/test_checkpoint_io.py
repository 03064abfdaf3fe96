"""checkpoint_io.py: what it writes is what safetensors/transformers read, what it reads is checked up
front, outputs appear whole or not at all, and the pipeline stops cleanly on any failure."""

import json
import shutil
import struct
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from checkpoint_io import (CHUNK_ELEMENTS, CheckpointError, CheckpointReader, ShardedWriter, atomic_outputs,
                           check_output_paths, copy_model_files, effective_names, find_weights_dir, numel,
                           parse_size, read_safetensors_header, shard_layout, stream_chunks)
from helpers import load_state


def sample_tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "b.weight": torch.randn(300, 7, generator=g).to(torch.bfloat16),
        "a.bias": torch.randn(5, generator=g),
        "c.steps": torch.arange(12, dtype=torch.int64).reshape(3, 4),
        "d.mask": torch.tensor([True, False, True]),
        "e.scale": torch.tensor(2.5, dtype=torch.float16),  # 0-dim
        "f.empty": torch.empty(0, 4),
    }


def test_numel_and_sizes():
    assert numel(()) == 1 and numel((3, 0)) == 0 and numel((2, 3, 4)) == 24
    assert parse_size("5GB") == 5 * 10**9 and parse_size("300KB") == 300_000 and parse_size("2MiB") == 2 * 2**20
    assert parse_size(1234) == 1234
    with pytest.raises(CheckpointError, match="not understood"):
        parse_size("5 gigs")
    entries = [(n, torch.float32, (10,)) for n in "abcd"]  # 40 bytes each
    assert [[e[0] for e in shard] for shard in shard_layout(entries, 100)] == [["a", "b"], ["c", "d"]]
    assert shard_layout([], 100) == [[]]


def test_sharded_writer_output_reads_back_with_safetensors(tmp_path):
    tensors = sample_tensors()
    entries = [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    writer = ShardedWriter(tmp_path / "out", entries, max_shard_size=1000, metadata={"note": "x"})
    for name in reversed(list(tensors)):  # tensors may arrive in any order, each in chunks
        raw = tensors[name].reshape(-1).view(torch.uint8) if tensors[name].numel() else torch.empty(0, dtype=torch.uint8)
        for start in range(0, max(len(raw), 1), 999):
            writer.write(name, raw[start:start + 999])
    writer.finish()
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    shards = sorted((tmp_path / "out").glob("model-*-of-*.safetensors"))
    assert len(shards) == len(writer.files) > 1 and set(index["weight_map"].values()) == {s.name for s in shards}
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    for shard in shards:
        with safe_open(shard, "pt") as f:
            assert f.metadata() == {"format": "pt", "note": "x"}
    loaded = load_state(tmp_path / "out")
    assert sorted(loaded) == sorted(tensors)
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t)
    # And back through the reader: partial ranges and whole tensors.
    with CheckpointReader(tmp_path / "out") as reader:
        buffer = torch.empty(CHUNK_ELEMENTS * 8, dtype=torch.uint8)
        assert torch.equal(reader.read_into("b.weight", 7, 20, buffer), tensors["b.weight"].reshape(-1)[7:20])
        assert torch.equal(reader.get("c.steps"), tensors["c.steps"]) and reader.get("e.scale").shape == ()
        assert reader.info("b.weight").nbytes == 300 * 7 * 2


def write_raw(path, header, data=b""):
    raw = json.dumps(header).encode() if isinstance(header, dict) else header
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize("case", ["truncated", "short", "header_beyond_file", "not_json", "not_object",
                                  "malformed_entry", "offsets_vs_shape", "dtype"])
def test_damaged_safetensors_headers_are_refused(tmp_path, case):
    good = tmp_path / "good.safetensors"
    save_file({"x": torch.zeros(4, 4), "y": torch.ones(8)}, good, metadata={"format": "pt"})
    raw = good.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + header_len])
    bad = tmp_path / "bad.safetensors"
    last = max((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"][1])
    message = {
        "truncated": (raw[:-3], rf"is truncated: tensor {last} ends at byte {len(raw)} but the file has {len(raw) - 3}"),
        "short": (raw[:5], "not a complete safetensors file"),
        "header_beyond_file": (struct.pack("<Q", 10**6) + raw[8:], "not a complete safetensors file"),
        "not_json": (raw[:8] + b"{'x': nope" + raw[18:], "header is not valid JSON"),
        "not_object": (None, "header is not a JSON object"),
        "malformed_entry": (None, "tensor x has a malformed header entry"),
        "offsets_vs_shape": (None, r"tensor x takes 60 bytes in the header but \[4, 4\] F32 needs 64"),
        "dtype": (None, "tensor x has dtype C64"),
    }[case]
    data, pattern = message
    if data is not None:
        bad.write_bytes(data)
    elif case == "not_object":
        write_raw(bad, b"[1, 2]    ")
    else:
        entry = {"malformed_entry": {"dtype": "F32", "shape": [4, "4"], "data_offsets": [0, 64]},
                 "offsets_vs_shape": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 60]},
                 "dtype": {"dtype": "C64", "shape": [4, 4], "data_offsets": [0, 64]}}[case]
        write_raw(bad, {"x": entry}, b"\0" * 64)
    with pytest.raises(CheckpointError, match=pattern) as err:
        read_safetensors_header(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert read_safetensors_header(good)[0]["x"].shape == (4, 4)


def test_damaged_model_dirs_are_refused_when_opened(tiny_model_sharded, tiny_model, tmp_path):
    def copy(name):
        return Path(shutil.copytree(tiny_model_sharded, tmp_path / name))

    missing = copy("missing")
    index = json.loads((missing / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (missing / shard).unlink()
    with pytest.raises(CheckpointError, match=rf"puts tensor \S+ in {shard}, which is missing"):
        CheckpointReader(missing)

    wrong = copy("wrong")
    first, second = sorted(set(index["weight_map"].values()))[:2]
    name = next(n for n, f in index["weight_map"].items() if f == first)
    (wrong / "model.safetensors.index.json").write_text(json.dumps({**index, "weight_map": {
        **index["weight_map"], name: second}}))
    with pytest.raises(CheckpointError, match=f"the index puts tensor {name} in {second}, which does not hold it"):
        CheckpointReader(wrong)

    broken_index = copy("broken_index")
    (broken_index / "model.safetensors.index.json").write_text('{"weight_map": {')
    with pytest.raises(CheckpointError, match="model.safetensors.index.json is not valid JSON"):
        CheckpointReader(broken_index)

    broken_config = Path(shutil.copytree(tiny_model, tmp_path / "broken_config"))
    (broken_config / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="config.json holds a JSON list, expected an object"):
        CheckpointReader(broken_config)

    bad_bin = tmp_path / "bad_bin"
    bad_bin.mkdir()
    (bad_bin / "pytorch_model.bin").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="pytorch_model.bin cannot be read"):
        CheckpointReader(bad_bin)


def test_weights_dir_and_tied_names(tiny_model, tiny_model_tied, tmp_path):
    hf = tmp_path / "run" / "global_step_2" / "actor" / "huggingface"
    shutil.copytree(tiny_model, hf)
    assert find_weights_dir(tmp_path / "run" / "global_step_2") == hf
    fsdp = tmp_path / "fsdp" / "actor"
    fsdp.mkdir(parents=True)
    (fsdp / "model_world_size_1_rank_0.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="merge_fsdp_to_hf.sh"):
        find_weights_dir(fsdp.parent)
    with pytest.raises(FileNotFoundError, match="no model weights"):
        find_weights_dir(tmp_path)

    with CheckpointReader(tiny_model_tied) as tied, CheckpointReader(tiny_model) as untied:
        assert tied.tied and not untied.tied
        assert effective_names(tied)["lm_head.weight"] == "model.embed_tokens.weight"
        assert effective_names(untied)["lm_head.weight"] == "lm_head.weight"
    # A saved vector (no config) without lm_head came from tied models: its embeddings stand for the head.
    state = load_state(tiny_model_tied)
    save_file(state, tmp_path / "vector.safetensors")
    with CheckpointReader(tmp_path / "vector.safetensors") as vector:
        assert vector.tied and effective_names(vector)["lm_head.weight"] == "model.embed_tokens.weight"


def test_copy_model_files_and_output_checks(tiny_model, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    copy_model_files(tiny_model, out, {"tie_word_embeddings": False})
    assert not list(out.glob("*.safetensors")) and (out / "tokenizer.json").exists()
    assert json.loads((out / "config.json").read_text()) == {
        **json.loads((Path(tiny_model) / "config.json").read_text()), "tie_word_embeddings": False}

    check_output_paths([tmp_path / "new1", tmp_path / "new2"], [tiny_model], overwrite=False)
    for outputs, inputs, pattern in (([out], [], "exists; pass --overwrite"),
                                     ([tmp_path / "a", tmp_path / "a"], [], "given twice"),
                                     ([tiny_model], [tiny_model], r"is \(or contains\) the input"),
                                     ([Path(tiny_model).parent], [tiny_model], r"is \(or contains\) the input")):
        with pytest.raises(CheckpointError, match=pattern):
            check_output_paths(outputs, inputs, overwrite=False)
    check_output_paths([out], [], overwrite=True)


def test_atomic_outputs_publish_whole_or_nothing(tmp_path):
    final_dir, final_file = tmp_path / "model", tmp_path / "vector.safetensors"
    final_dir.mkdir()
    (final_dir / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_outputs([final_dir, final_file]) as (tmp_dir, tmp_file):
            tmp_dir.mkdir()
            (tmp_dir / "new.txt").write_text("new")
            tmp_file.write_bytes(b"partial")
            raise RuntimeError("mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and (final_dir / "old.txt").exists()

    with atomic_outputs([final_dir, final_file]) as (tmp_dir, tmp_file):
        assert tmp_dir.parent.name.startswith(".model.tmp-") and tmp_dir.parent.parent == tmp_path
        tmp_dir.mkdir()
        (tmp_dir / "new.txt").write_text("new")
        tmp_file.write_bytes(b"complete")
        assert not (final_dir / "new.txt").exists()  # nothing is published before the block ends
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "vector.safetensors"]
    assert [p.name for p in final_dir.iterdir()] == ["new.txt"] and final_file.read_bytes() == b"complete"


def test_stream_chunks_order_and_failures(tmp_path):
    tensors = {"w": torch.arange(2 * CHUNK_ELEMENTS + 5, dtype=torch.float32), "v": torch.ones(3, dtype=torch.bfloat16)}
    save_file(tensors, tmp_path / "in.safetensors")
    reader = CheckpointReader(tmp_path / "in.safetensors")
    jobs = [(n, reader.info(n).numel, [(reader, n)]) for n in ("w", "v")]

    class Collect:
        max_itemsize = 4

        def __init__(self):
            self.chunks = []

        def write(self, name, data):
            self.chunks.append((name, data.clone()))

    def double(name, start, end, blocks, outs):
        out = outs[0][: (end - start) * 4].view(torch.float32)
        out.copy_(blocks[0].float() * 2)
        return [out.view(torch.uint8)]

    writer, threads, torch_threads = Collect(), threading.active_count(), torch.get_num_threads()
    stream_chunks(jobs, double, [writer])
    assert [name for name, _ in writer.chunks] == ["w", "w", "w", "v"]
    w = torch.cat([c.view(torch.float32) for n, c in writer.chunks if n == "w"])
    assert torch.equal(w, tensors["w"] * 2)

    def failing_compute(name, start, end, blocks, outs):
        if start > 0:
            raise ValueError("compute failed")
        return double(name, start, end, blocks, outs)

    class FailingWriter(Collect):
        def write(self, name, data):
            raise OSError("No space left on device")

    for compute, writers, error in ((failing_compute, [Collect()], ValueError),
                                    (double, [FailingWriter()], OSError)):
        with pytest.raises(error):
            stream_chunks(jobs, compute, writers)
    (tmp_path / "in.safetensors").write_bytes(b"")  # the reader thread fails mid-run
    with pytest.raises(CheckpointError, match="became shorter while it was read"):
        stream_chunks(jobs, double, [Collect()])
    assert threading.active_count() == threads and torch.get_num_threads() == torch_threads
    reader.close()


def test_tiny_model_reads_like_safetensors_does(tiny_model, tiny_model_sharded, tiny_model_bin):
    for model in (tiny_model, tiny_model_sharded, tiny_model_bin):
        expected = load_state(model)
        with CheckpointReader(model) as reader:
            assert sorted(reader.names()) == sorted(expected) and reader.config["model_type"] == "qwen2"
            for name, tensor in expected.items():
                assert torch.equal(reader.get(name), tensor), name
