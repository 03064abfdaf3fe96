"""Compare two checkpoints tensor by tensor: which tensors differ, by how much, names only in one.

    python debug/compare_checkpoints.py A B                # exact: any differing bit counts
    python debug/compare_checkpoints.py A B --atol 1e-6    # values within 1e-6 count as equal
    python debug/compare_checkpoints.py A B --show 50      # list up to 50 differing tensors

A and B are model dirs (single or sharded safetensors, pytorch_model.bin, verl actor/huggingface)
or single .safetensors / .pth files such as saved skill vectors. Tensors are compared as
transformers uses them: a tied model's lm_head is its embeddings. For every tensor in both:
dtype, shape, max |A − B| and the relative norm ||A − B|| / ||B|| (float64, read chunk by chunk,
so any model size works). Tensors of different dtypes (bf16 against float32) differ; their values
are still compared, after upcasting.

Exit code: 0 when both hold the same tensors, of the same dtypes, with equal values (bit for bit,
or within --atol); 1 when anything differs; 2 when an input cannot be read.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file from anywhere

from checkpoint_io import CHUNK_ELEMENTS, CheckpointReader, effective_names, one_line_errors  # noqa: E402


def difference(name, chunk_pairs, atol=0.0, note=""):
    """One row {name, equal, max_abs, rel_norm, changed, numel, note} for a tensor from its (A, B)
    chunk pairs, in float64. A `note` (dtypes or shapes that differ) makes the row unequal."""
    same_bits, max_abs, diff_sq, ref_sq, changed, total = True, 0.0, 0.0, 0.0, 0, 0
    for x, y in chunk_pairs:
        x, y = x.reshape(-1), y.reshape(-1)
        same_bits = same_bits and x.dtype == y.dtype and torch.equal(x.view(torch.uint8), y.view(torch.uint8))
        d = x.double() - y.double()
        if d.numel():
            max_abs = max(max_abs, float(d.abs().max()))
        diff_sq, ref_sq = diff_sq + float(d.square().sum()), ref_sq + float(y.double().square().sum())
        changed, total = changed + int((d != 0).sum()), total + d.numel()
    rel = diff_sq ** 0.5 / ref_sq ** 0.5 if ref_sq > 0 else (0.0 if diff_sq == 0 else float("inf"))
    return dict(name=name, equal=not note and (same_bits or max_abs <= atol), max_abs=max_abs, rel_norm=rel,
                changed=changed, numel=total, note=note)


def compare_tensor(a, a_name, b, b_name, buffers, atol):
    ia, ib = a.info(a_name), b.info(b_name)
    if ia.shape != ib.shape:
        return difference(a_name, [], note=f"shape {list(ia.shape)} vs {list(ib.shape)}")
    dtypes = [str(i.dtype).removeprefix("torch.") for i in (ia, ib)]
    pairs = ((x, b.read_into(b_name, start, end, buffers[1])) for start, end, x in a.chunks(a_name, buffers[0]))
    return difference(a_name, pairs, atol, f"dtype {dtypes[0]} vs {dtypes[1]}" if ia.dtype != ib.dtype else "")


def compare(path_a, path_b, atol=0.0):
    """(one row per tensor in both, names only in A, names only in B)."""
    with CheckpointReader(path_a) as a, CheckpointReader(path_b) as b:
        names_a, names_b = effective_names(a), effective_names(b)
        buffers = [torch.empty(CHUNK_ELEMENTS * 8, dtype=torch.uint8) for _ in range(2)]
        rows = [{**compare_tensor(a, names_a[n], b, names_b[n], buffers, atol), "name": n}
                for n in names_a if n in names_b]
        return rows, sorted(set(names_a) - set(names_b)), sorted(set(names_b) - set(names_a))


def report(rows, only_a, only_b, show, only_a_label="only in A", only_b_label="only in B"):
    """Print the differing rows (the first `show`) and the names only on one side; return how many
    problems there are (0: equal)."""
    differ = [r for r in rows if not r["equal"]]
    for r in differ[:show]:
        numbers = (f"max |A-B| = {r['max_abs']:.6g}, ||A-B||/||B|| = {r['rel_norm']:.6g}, "
                   f"{r['changed']} of {r['numel']} elements" if r["numel"] else "")
        print(f"differs  {r['name']}: {', '.join(x for x in (numbers, r['note']) if x)}")
    if len(differ) > show:
        print(f"... and {len(differ) - show} more differing tensors (--show N lists more)")
    for label, names in ((only_a_label, only_a), (only_b_label, only_b)):
        for name in names:
            print(f"{label}  {name}")
    return len(differ) + len(only_a) + len(only_b)


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="first checkpoint: model dir or .safetensors/.pth file")
    parser.add_argument("b", help="second checkpoint (the reference for relative norms)")
    parser.add_argument("--atol", type=float, default=0.0,
                        help="values whose max |A - B| is at most this count as equal (default 0: bit for bit)")
    parser.add_argument("--show", type=int, default=20, help="how many differing tensors to list (default 20)")
    args = parser.parse_args(argv)
    rows, only_a, only_b = compare(args.a, args.b, args.atol)
    problems = report(rows, only_a, only_b, args.show)
    worst = max(rows, key=lambda r: r["max_abs"], default=None)
    print(f"{sum(not r['equal'] for r in rows)} of {len(rows)} common tensors differ"
          + (f" (largest max |A-B|: {worst['max_abs']:.6g} in {worst['name']})" if worst and worst["max_abs"] else "")
          + f"; {len(only_a)} only in A, {len(only_b)} only in B")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
