"""Heatmap (layers x module types) of skill-vector statistics from analysis.extract_delta.

    python -m analysis.heatmap --stats stats.csv --metric rel_l2 --output rel_l2.png

Metrics: l2, rel_l2 (needs the base model's norms in the stats), mean_abs, max_abs,
near_zero_frac. Rows are transformer layers, columns module types (attention, MLP, norms, biases);
tensors outside the layers (embeddings, final norm, lm_head) are listed in the title line.
"""

import argparse
import sys
from pathlib import Path

from analysis.extract_delta import read_rows

MODULE_ORDER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                "input_layernorm", "post_attention_layernorm", "q_proj.bias", "k_proj.bias", "v_proj.bias"]
METRICS = ["l2", "rel_l2", "mean_abs", "max_abs", "near_zero_frac"]


def layer_module_grid(rows, metric):
    """(layers, modules, grid[layer][module] or None) from per-tensor rows."""
    layer_rows = [r for r in rows if r["layer"] is not None]
    if not layer_rows:
        raise ValueError("no per-layer tensors in the statistics (names like model.layers.N....)")
    layers = sorted({r["layer"] for r in layer_rows})
    present = {r["module"] for r in layer_rows}
    modules = [m for m in MODULE_ORDER if m in present] + sorted(present - set(MODULE_ORDER))
    values = {(r["layer"], r["module"]): r[metric] for r in layer_rows}
    grid = [[values.get((layer, module)) for module in modules] for layer in layers]
    return layers, modules, grid


def draw_heatmap(grid, row_labels, col_labels, title, output, colorbar_label, cmap="viridis", vmin=None, vmax=None):
    """Save a labelled heatmap PNG (missing cells blank). Shared with analysis.save_cosine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
    fig, ax = plt.subplots(figsize=(2.5 + 0.6 * len(col_labels), 2.5 + 0.28 * len(row_labels)))
    image = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stats", required=True, help="CSV/JSON written by python -m analysis.extract_delta")
    parser.add_argument("--metric", default="rel_l2", choices=METRICS, help="statistic to show (default rel_l2)")
    parser.add_argument("--output", required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    rows = read_rows(args.stats)
    if args.metric == "rel_l2" and all(r["rel_l2"] is None for r in rows):
        print("error: the statistics have no base norms; rerun extract_delta with --base_model, "
              "or pick --metric l2", file=sys.stderr)
        return 2
    try:
        layers, modules, grid = layer_module_grid(rows, args.metric)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    outside = ", ".join(f"{r['module']}={r[args.metric]:.3g}" for r in rows
                        if r["layer"] is None and r[args.metric] is not None)
    title = f"{args.metric} of the skill vector ({Path(args.stats).name})" + (f"\n{outside}" if outside else "")
    draw_heatmap(grid, [str(layer) for layer in layers], modules, title, args.output, args.metric)
    print(f"heatmap of {args.metric} ({len(layers)} layers x {len(modules)} module types) written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
