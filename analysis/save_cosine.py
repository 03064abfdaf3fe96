"""Cosine similarity between two or more skill vectors, per layer and overall, streamed.

    python -m analysis.save_cosine --vector skill_p0.safetensors --vector skill_p1.safetensors \
        --output cosine.csv --heatmap cosine.png
    python -m analysis.save_cosine --pair RL_A BASE_A --pair SFT BASE --labels rl_delta sft_delta --output cos.csv

Each vector is a saved skill vector (--vector FILE) or rl - base of two checkpoints
(--pair RL BASE), e.g. RL skill vectors from different source passages, or an SFT delta against
an RL delta (the paper's observation: they are nearly orthogonal). For every pair of vectors the
CSV has one row per layer (tensors of model.layers.N), one for the tensors outside the layers
(embeddings, final norm, lm_head) and one for the whole vector. --exclude REGEX leaves tensors
out (e.g. embeddings of models with different vocabularies). --heatmap draws pairs x layers.
"""

import argparse
import csv
import itertools
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from analysis.extract_delta import iter_delta, layer_and_module
from checkpoint_io import CheckpointError, one_line_errors
from inherit_weight import SkillSource


def cosine_table(sources, exclude=None, quiet=False):
    """{(i, j): {group: cosine}} for all pairs i < j; groups are layer indices, 'outside' and 'all'."""
    keep = lambda n: not (exclude and exclude.search(n))  # noqa: E731
    names = [n for n in sources[0].vector_names() if keep(n)]
    for k, source in enumerate(sources[1:], 1):
        differ = sorted({n for n in source.vector_names() if keep(n)} ^ set(names))
        if differ:
            raise CheckpointError(f"vectors 0 and {k} have different tensors: {differ[:5]}; use --exclude to leave "
                                "them out")
    for name in names:
        shapes = {tuple(s.info(name).shape) for s in sources}
        if len(shapes) > 1:
            raise CheckpointError(f"{name} has shapes {sorted(shapes)} in the vectors (different vocabularies?); "
                                "use --exclude to leave it out")
    k = len(sources)
    dots = defaultdict(lambda: torch.zeros(k, k, dtype=torch.float64))
    for name in tqdm(names, desc="cosine", unit="tensor", disable=quiet, file=sys.stderr):
        layer, _ = layer_and_module(name)
        group = layer if layer is not None else "outside"
        iters = [iter_delta(s, name) for s in sources]
        for chunks in zip(*iters):
            matrix = torch.stack([c[2] for c in chunks])  # k x chunk, float32
            gram = (matrix @ matrix.T).double()
            dots[group] += gram
            dots["all"] += gram
    table = {}
    for i, j in itertools.combinations(range(k), 2):
        table[(i, j)] = {g: float(d[i, j] / (d[i, i].sqrt() * d[j, j].sqrt())) if d[i, i] > 0 and d[j, j] > 0
                         else float("nan") for g, d in dots.items()}
    return table


def group_order(groups):
    layers = sorted(g for g in groups if isinstance(g, int))
    return layers + [g for g in ("outside", "all") if g in groups]


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vector", action="append", default=[], help="a saved skill vector file (repeatable)")
    parser.add_argument("--pair", action="append", nargs=2, default=[], metavar=("RL", "BASE"),
                        help="a vector given as rl - base of two model dirs (repeatable)")
    parser.add_argument("--labels", nargs="+", help="names of the vectors (--vector ones first, then --pair ones)")
    parser.add_argument("--exclude", help="regex: tensors to leave out")
    parser.add_argument("--output", required=True, help="CSV file: vector_a, vector_b, group, cosine")
    parser.add_argument("--heatmap", help="PNG file: cosine per layer for every pair of vectors")
    args = parser.parse_args(argv)
    specs = [("vector", v) for v in args.vector] + [("pair", p) for p in args.pair]
    if len(specs) < 2:
        parser.error("give at least two vectors (--vector FILE and/or --pair RL BASE)")
    labels = args.labels or [Path(s[1]).stem if s[0] == "vector" else Path(s[1][0]).name for s in specs]
    if len(labels) != len(specs):
        parser.error(f"{len(labels)} labels for {len(specs)} vectors")
    sources = [SkillSource(skill_vectors=[s[1]]) if s[0] == "vector" else SkillSource(*s[1]) for s in specs]
    table = cosine_table(sources, re.compile(args.exclude) if args.exclude else None)
    groups = group_order(next(iter(table.values())).keys())
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["vector_a", "vector_b", "group", "cosine"])
        for (i, j), by_group in table.items():
            for g in groups:
                writer.writerow([labels[i], labels[j], g if isinstance(g, str) else f"layer{g}", by_group[g]])
    for (i, j), by_group in table.items():
        print(f"cos({labels[i]}, {labels[j]}) = {by_group['all']:.4f} overall")
    if args.heatmap:
        from analysis.heatmap import draw_heatmap

        draw_heatmap([[table[p][g] for g in groups] for p in table], [f"{labels[i]} vs {labels[j]}" for i, j in table],
                     [str(g) for g in groups], "cosine similarity per layer", args.heatmap, "cosine",
                     cmap="coolwarm", vmin=-1, vmax=1)
    print(f"cosine table written to {args.output}" + (f", heatmap to {args.heatmap}" if args.heatmap else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
