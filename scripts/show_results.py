"""Collect the evaluation results into one table: rows = passages, columns = model variants.

    python scripts/show_results.py                                   # eval_results/ -> stdout
    python scripts/show_results.py --variants base stage2 inherited base-context \\
        --output results.md --csv results.csv --plot_dir results_plots

Walks RESULTS_DIR/<model tag>/<split>/test_results.json. Each cell is the judge accuracy in
percent, mean ± sample std over the runs, recomputed from the per-question verdicts in the file,
with n = the number of runs. The overall row is the mean over the passages a variant was
evaluated on, ± the std across those passages, n = the number of passages. Splits that are not
passages (e.g. gsm8k) are listed below the overall row and left out of it. A bar plot per
variant (accuracy per passage with the run std as error bar) goes to --plot_dir.
"""

import argparse
import csv
import json
import re
import statistics
import sys
from pathlib import Path

from eval_loogle.common import DEFAULT_RESULTS_DIR, RESULTS_FILE
from eval_loogle.judge_utils import accuracy_summary

_PASSAGE = re.compile(r"passage(\d+)")


def collect(results_dir):
    """{(split, variant): summary} from every test_results.json under results_dir, plus the
    judges used per variant."""
    cells, judges = {}, {}
    for path in sorted(Path(results_dir).glob(f"*/*/{RESULTS_FILE}")):
        variant, split = path.parent.parent.name, path.parent.name
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            summary = accuracy_summary(doc["results"])
        except (json.JSONDecodeError, KeyError, ValueError) as e:
            raise ValueError(f"{path} is not a readable test_results.json ({type(e).__name__}: {e}); rescore it") from None
        cells[(split, variant)] = summary
        judge = doc.get("judge") or {}
        judges.setdefault(variant, set()).add(f"{judge.get('backend')}" + (f" ({judge['model']})" if judge.get("model") else ""))
    return cells, judges


def split_order(splits):
    passages = sorted((s for s in splits if _PASSAGE.fullmatch(s)), key=lambda s: int(_PASSAGE.fullmatch(s).group(1)))
    return passages, sorted(s for s in splits if not _PASSAGE.fullmatch(s))


def overall(cells, passages, variant):
    means = [cells[(p, variant)]["mean"] for p in passages if (p, variant) in cells]
    if not means:
        return None
    return {"mean": statistics.fmean(means), "std": statistics.stdev(means) if len(means) > 1 else 0.0, "n": len(means)}


def fmt(mean, std, n):
    return f"{100 * mean:.1f} ± {100 * std:.1f} (n={n})"


def markdown_table(cells, judges, variants):
    passages, others = split_order({s for s, _ in cells})
    lines = ["| passage | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for split in passages:
        row = [fmt(c["mean"], c["std"], c["n_runs"]) if (c := cells.get((split, v))) else "–" for v in variants]
        lines.append(f"| {split} | " + " | ".join(row) + " |")
    row = [fmt(o["mean"], o["std"], o["n"]) if (o := overall(cells, passages, v)) else "–" for v in variants]
    lines.append("| **overall** | " + " | ".join(row) + " |")
    for split in others:
        row = [fmt(c["mean"], c["std"], c["n_runs"]) if (c := cells.get((split, v))) else "–" for v in variants]
        lines.append(f"| {split} | " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Accuracy in %: mean ± std over runs (n = runs); overall: mean ± std over passages (n = passages).")
    lines.append("Judge: " + "; ".join(f"{v}: {', '.join(sorted(judges[v]))}" for v in variants if v in judges) + ".")
    return "\n".join(lines) + "\n"


def write_csv(path, cells, variants):
    passages, others = split_order({s for s, _ in cells})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "variant", "mean", "std", "n", "n_questions"])
        for split in passages + others:
            for v in variants:
                if (c := cells.get((split, v))) is not None:
                    writer.writerow([split, v, c["mean"], c["std"], c["n_runs"], c["n_questions"]])
        for v in variants:
            if (o := overall(cells, passages, v)) is not None:
                writer.writerow(["overall", v, o["mean"], o["std"], o["n"], ""])


def plot_variants(plot_dir, cells, variants):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    passages, _ = split_order({s for s, _ in cells})
    written = []
    for v in variants:
        names = [p for p in passages if (p, v) in cells]
        if not names:
            continue
        means = [100 * cells[(p, v)]["mean"] for p in names]
        stds = [100 * cells[(p, v)]["std"] for p in names]
        o = overall(cells, passages, v)
        names, means, stds = names + ["overall"], means + [100 * o["mean"]], stds + [100 * o["std"]]
        fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(names) + 2), 3.5))
        ax.bar(names, means, yerr=stds, capsize=3, color=["tab:blue"] * (len(names) - 1) + ["tab:gray"])
        ax.set_ylabel("judge accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(v)
        ax.tick_params(axis="x", labelrotation=45)
        fig.tight_layout()
        out = plot_dir / f"{re.sub(r'[^A-Za-z0-9._+-]', '_', v)}.png"
        fig.savefig(out, dpi=120)
        plt.close(fig)
        written.append(out)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results_dir", default=DEFAULT_RESULTS_DIR, help=f"root of <model tag>/<split>/{RESULTS_FILE} (default {DEFAULT_RESULTS_DIR})")
    parser.add_argument("--variants", nargs="+", help="model tags to show, in this column order (default: all, sorted)")
    parser.add_argument("--output", help="also write the markdown table to this file")
    parser.add_argument("--csv", help="also write the numbers (fractions, unrounded) to this CSV file")
    parser.add_argument("--plot_dir", help="write a bar plot PNG per variant here (default RESULTS_DIR/plots)")
    parser.add_argument("--no_plots", action="store_true", help="skip the bar plots")
    args = parser.parse_args(argv)

    if not Path(args.results_dir).is_dir():
        parser.error(f"results folder not found: {args.results_dir} (score answers first, or pass --results_dir)")
    try:
        cells, judges = collect(args.results_dir)
    except ValueError as e:
        parser.error(str(e))
    if not cells:
        parser.error(f"no */*/{RESULTS_FILE} under {args.results_dir}: score some answers first")
    found = sorted({v for _, v in cells})
    variants = args.variants or found
    unknown = [v for v in variants if v not in found]
    if unknown:
        parser.error(f"no results for variant(s) {unknown} in {args.results_dir}; found: {found}")

    table = markdown_table(cells, judges, variants)
    sys.stdout.write(table)
    if args.output:
        Path(args.output).write_text(table, encoding="utf-8")
    if args.csv:
        write_csv(args.csv, cells, variants)
    if not args.no_plots:
        for path in plot_variants(args.plot_dir or Path(args.results_dir) / "plots", cells, variants):
            print(f"plot: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
