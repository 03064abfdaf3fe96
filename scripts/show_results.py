"""Collect the evaluation results into tables: rows = passages, columns = model variants; and
one table per λ sweep (eval_loogle.sweep_alpha): rows = λ, columns = the sweep's targets.

    python scripts/show_results.py                                   # eval_results/ -> stdout
    python scripts/show_results.py --variants base stage2 inherited base-context \\
        --output results.md --csv results.csv --plot_dir results_plots

Walks RESULTS_DIR/<model tag>/<split>/test_results.json and recomputes every number from the
per-question rows in those files. Per variant two columns:

  acc %      judge accuracy: mean ± sample std over the runs (n = runs)
  ROUGE-L %  LooGLE's ROUGE-L recall of the answer against the reference (the `rougel` of each
             row), mean ± std over the runs. A continuous score: it still separates variants when
             every verdict is "no". ROUGE-L rather than the lexical judge's token F1 because it is
             in every results file whatever the judge (an LLM judge's score is 0 or 1); "–" where
             the answers were scored with --no_metrics, and for GSM8K.

Two overall rows: the mean over passages (each passage counts once; ± the std across passages,
n = passages) and the mean over questions (every question of every passage counts once; ± the
std over runs of the pooled per-run score, n = questions). Splits that are not passages (e.g.
gsm8k) are listed below them and left out of both. The judge backend and model head the table.

Plots (--plot_dir, default RESULTS_DIR/plots): results.png, every variant side by side per
passage (accuracy and ROUGE-L, run std as error bars); sweep_<name>.png, accuracy and ROUGE-L
against λ, one line per target.
"""

import argparse
import csv
import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from eval_loogle.common import DEFAULT_RESULTS_DIR, RESULTS_FILE
from eval_loogle.judge_utils import accuracy_summary

_PASSAGE = re.compile(r"passage(\d+)")
CONTINUOUS = "rougel"  # the per-answer field of the continuous score


@dataclass
class Cell:
    """One model variant on one split, summarised from its test_results.json."""

    accuracy: dict  # judge_utils.accuracy_summary: per_run, mean, std, n_runs, n_questions
    rougel: dict | None  # {per_run, mean, std}; None when the rows have no ROUGE-L
    per_run: dict  # run -> (correct answers, answers, sum of ROUGE-L or None)
    judge: str
    parse_failures: int
    sweep: dict | None  # the sweep record of eval_loogle.sweep_alpha, if any


def spread(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def judge_label(judge):
    judge = judge or {}
    return f"{judge.get('backend')}" + (f" ({judge['model']})" if judge.get("model") else "")


def summarise(doc):
    rows = doc["results"]
    accuracy = accuracy_summary(rows)
    per_run = {}
    has_rougel = all(CONTINUOUS in r for r in rows)
    for r in rows:
        correct, n, rougel = per_run.get(int(r["run"]), (0, 0, 0.0))
        per_run[int(r["run"])] = (correct + bool(r["verdict"]), n + 1, rougel + float(r[CONTINUOUS]) if has_rougel else None)
    rougel = None
    if has_rougel:
        values = [per_run[run][2] / per_run[run][1] for run in accuracy["runs"]]
        rougel = {"per_run": values, "mean": statistics.fmean(values), "std": spread(values)}
    return Cell(accuracy, rougel, per_run, judge_label(doc.get("judge")), sum(1 for r in rows if r.get("parse_failed")), doc.get("sweep"))


def collect(results_dir):
    """{(split, model tag): Cell} for every test_results.json under results_dir."""
    cells = {}
    for path in sorted(Path(results_dir).glob(f"*/*/{RESULTS_FILE}")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            cells[(path.parent.name, path.parent.parent.name)] = summarise(doc)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path} is not a readable test_results.json ({type(e).__name__}: {e}); rescore it") from None
    return cells


def split_order(splits):
    passages = sorted((s for s in splits if _PASSAGE.fullmatch(s)), key=lambda s: int(_PASSAGE.fullmatch(s).group(1)))
    return passages, sorted(s for s in splits if not _PASSAGE.fullmatch(s))


# --- Aggregates ----------------------------------------------------------------------------------


def over_passages(cells, score):
    """Mean over passages of `score` ("accuracy" or "rougel"), ± std across passages; None when a
    cell lacks the score."""
    summaries = [getattr(c, score) for c in cells]
    if not summaries or any(s is None for s in summaries):
        return None
    means = [s["mean"] for s in summaries]
    return {"mean": statistics.fmean(means), "std": spread(means), "n": len(means)}


def over_questions(cells, score):
    """Every question of every passage counted once: the pooled per-run score, mean over runs
    (= the passages' means weighted by their question counts) ± std over runs (only when every
    passage has the same runs, else None). n = questions."""
    if not cells or (score == "rougel" and any(c.rougel is None for c in cells)):
        return None
    n_questions = sum(c.accuracy["n_questions"] for c in cells)
    mean = sum(getattr(c, score)["mean"] * c.accuracy["n_questions"] for c in cells) / n_questions
    std = None
    runs = [sorted(c.per_run) for c in cells]
    if all(r == runs[0] for r in runs):
        pick = 0 if score == "accuracy" else 2
        pooled = [sum(c.per_run[run][pick] for c in cells) / sum(c.per_run[run][1] for c in cells) for run in runs[0]]
        std = spread(pooled)
    return {"mean": mean, "std": std, "n": n_questions}


def fmt(summary, n=None):
    if summary is None:
        return "–"
    text = f"{100 * summary['mean']:.1f}" + (f" ± {100 * summary['std']:.1f}" if summary["std"] is not None else "")
    return text + (f" (n={n})" if n is not None else "")


def cell_columns(cell):
    if cell is None:
        return ["–", "–"]
    return [fmt(cell.accuracy, cell.accuracy["n_runs"]), fmt(cell.rougel)]


def aggregate_columns(summary_acc, summary_rougel):
    return [fmt(summary_acc, summary_acc["n"]) if summary_acc else "–", fmt(summary_rougel)]


# --- Tables --------------------------------------------------------------------------------------


def judge_line(cells, order):
    """'Judge: X.' when one judge scored everything, else the judges per model tag in `order`."""
    labels = {tag: set() for tag in order}
    for (_, tag), c in cells.items():
        labels[tag].add(c.judge)
    distinct = set().union(*labels.values())
    if len(distinct) == 1:
        return f"Judge: {distinct.pop()}."
    return "Judge: " + "; ".join(f"{tag}: {', '.join(sorted(j))}" for tag, j in labels.items() if j) + "."


def header(first, columns):
    names = [f"{c} {k}" for c in columns for k in ("acc %", "ROUGE-L %")]
    return [f"| {first} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]


def parse_failure_line(cells):
    failed = [f"{tag} {split}: {c.parse_failures}" for (split, tag), c in sorted(cells.items()) if c.parse_failures]
    return ["Verdicts the judge's reply did not parse into (scored as no): " + "; ".join(failed) + "."] if failed else []


def variants_table(cells, variants):
    passages, others = split_order({s for s, v in cells if v in variants})
    lines = [judge_line({k: c for k, c in cells.items() if k[1] in variants}, variants), ""] + header("passage", variants)
    for split in passages:
        lines.append(f"| {split} | " + " | ".join(x for v in variants for x in cell_columns(cells.get((split, v)))) + " |")
    for label, aggregate in (("mean of passages", over_passages), ("mean of questions", over_questions)):
        row = []
        for v in variants:
            own = [cells[(p, v)] for p in passages if (p, v) in cells]
            row += aggregate_columns(aggregate(own, "accuracy"), aggregate(own, "rougel"))
        lines.append(f"| **overall, {label}** | " + " | ".join(row) + " |")
    for split in others:
        lines.append(f"| {split} | " + " | ".join(x for v in variants for x in cell_columns(cells.get((split, v)))) + " |")
    lines += [
        "",
        "acc: judge accuracy; ROUGE-L: LooGLE's ROUGE-L recall; in %, mean ± std over runs (n = runs).",
        "Overall, mean of passages: ± std across passages (n = passages); mean of questions: every question "
        "counts once, ± std over runs (n = questions).",
    ]
    return lines + parse_failure_line({k: c for k, c in cells.items() if k[1] in variants})


def sweeps(cells):
    """{sweep name: {passage split: {λ: (model tag, Cell)}}} for the cells a sweep wrote."""
    found = {}
    for (split, tag), c in cells.items():
        if c.sweep:
            found.setdefault(c.sweep["name"], {}).setdefault(split, {})[float(c.sweep["alpha"])] = (tag, c)
    return found


def sweep_table(name, by_split):
    passages, others = split_order(by_split)
    splits = passages + others
    alphas = sorted({a for s in splits for a in by_split[s]})
    records = [c.sweep for s in splits for _, c in by_split[s].values()]
    vectors = sorted({" + ".join(r["skill_vectors"]) for r in records})
    targets = sorted({r["target_model"] for r in records})
    cells = {(s, tag): c for s in splits for tag, c in by_split[s].values()}
    lines = [f"### λ sweep {name}: target + λ·({'; '.join(vectors)})", "",
             "Targets: " + "; ".join(targets) + ". " + judge_line(cells, sorted({t for _, t in cells})), ""]
    many = len(passages) > 1
    lines += header("λ", splits + (["mean of passages"] if many else []))
    for a in alphas:
        row = [x for s in splits for x in cell_columns(by_split[s].get(a, (None, None))[1])]
        if many:
            own = [by_split[p][a][1] for p in passages if a in by_split[p]]
            row += aggregate_columns(over_passages(own, "accuracy"), over_passages(own, "rougel"))
        lines.append(f"| {a:g} | " + " | ".join(row) + " |")
    lines += ["", "λ = 0 is the target alone (the stage-2-only row). Cells as above; the mean of passages "
              "averages the passages that have that λ (n = passages)."]
    return lines + parse_failure_line(cells)


def markdown(cells, variants):
    lines = variants_table(cells, variants) if variants else []
    for name, by_split in sorted(sweeps(cells).items()):
        lines += ([""] if lines else []) + sweep_table(name, by_split)
    return "\n".join(lines) + "\n"


def write_csv(path, cells, variants):
    """One row per cell plus the overall rows; scores as fractions, unrounded ("" = not available)."""

    def numbers(acc, rougel):
        values = [acc["mean"], acc["std"], (rougel or {}).get("mean"), (rougel or {}).get("std")]
        return ["" if x is None else x for x in values]

    passages, others = split_order({s for s, _ in cells})
    tags = list(variants) + sorted({t for (_, t), c in cells.items() if c.sweep})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "variant", "alpha", "accuracy_mean", "accuracy_std", "rougel_mean", "rougel_std",
                         "n_runs", "n_passages", "n_questions"])
        for split in passages + others:
            for tag in tags:
                if (c := cells.get((split, tag))) is not None:
                    alpha = c.sweep["alpha"] if c.sweep else ""
                    writer.writerow([split, tag, alpha, *numbers(c.accuracy, c.rougel), c.accuracy["n_runs"], 1, c.accuracy["n_questions"]])
        for v in variants:
            own = [cells[(p, v)] for p in passages if (p, v) in cells]
            if own:
                n_questions = sum(c.accuracy["n_questions"] for c in own)
                for label, aggregate in (("overall_passages", over_passages), ("overall_questions", over_questions)):
                    writer.writerow([label, v, "", *numbers(aggregate(own, "accuracy"), aggregate(own, "rougel")), "", len(own), n_questions])


# --- Plots ---------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_variants(path, cells, variants):
    """Grouped bars: per passage (and the mean of passages) one bar per variant; accuracy on top,
    ROUGE-L below; error bars = std over runs (across passages for the mean)."""
    plt = _pyplot()
    passages, _ = split_order({s for s, v in cells if v in variants})
    groups = passages + ["mean of passages"]
    fig, axes = plt.subplots(2, 1, figsize=(max(5.0, 0.45 * len(groups) * len(variants) + 2), 6.5), sharex=True)
    width = 0.8 / len(variants)
    for ax, score, label in zip(axes, ("accuracy", "rougel"), ("judge accuracy (%)", "ROUGE-L recall (%)"), strict=True):
        for i, v in enumerate(variants):
            summaries = [getattr(cells[(p, v)], score) if (p, v) in cells else None for p in passages]
            summaries.append(over_passages([cells[(p, v)] for p in passages if (p, v) in cells], score))
            xs = [g + (i - (len(variants) - 1) / 2) * width for g, s in enumerate(summaries) if s]
            ax.bar(xs, [100 * s["mean"] for s in summaries if s], width, yerr=[100 * s["std"] for s in summaries if s], capsize=2, label=v)
        ax.set_ylabel(label)
        ax.set_ylim(0, 100)
    axes[0].legend(fontsize="small", ncol=min(len(variants), 4))
    axes[1].set_xticks(range(len(groups)), groups, rotation=45, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sweep(path, name, by_split):
    """Accuracy and ROUGE-L against λ, one line per target (passage)."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True)
    passages, others = split_order(by_split)
    for ax, score, label in zip(axes, ("accuracy", "rougel"), ("judge accuracy (%)", "ROUGE-L recall (%)"), strict=True):
        for split in passages + others:
            points = sorted((a, getattr(c, score)) for a, (_, c) in by_split[split].items() if getattr(c, score))
            if points:
                ax.errorbar([a for a, _ in points], [100 * s["mean"] for _, s in points], yerr=[100 * s["std"] for _, s in points],
                            marker="o", capsize=3, label=split)
        ax.set_ylabel(label)
        ax.set_ylim(0, 100)
        ax.axvline(0, color="gray", linewidth=0.5)
    axes[0].set_title(f"λ sweep {name}")
    axes[0].legend(fontsize="small")
    axes[1].set_xlabel("λ")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results_dir", default=DEFAULT_RESULTS_DIR, help=f"root of <model tag>/<split>/{RESULTS_FILE} (default {DEFAULT_RESULTS_DIR})")
    parser.add_argument("--variants", nargs="+", help="model tags to show, in this column order (default: all but sweeps, sorted)")
    parser.add_argument("--output", help="also write the markdown tables to this file")
    parser.add_argument("--csv", help="also write the numbers (fractions, unrounded) to this CSV file")
    parser.add_argument("--plot_dir", help="write results.png and sweep_<name>.png here (default RESULTS_DIR/plots)")
    parser.add_argument("--no_plots", action="store_true", help="skip the plots")
    args = parser.parse_args(argv)

    if not Path(args.results_dir).is_dir():
        parser.error(f"results folder not found: {args.results_dir} (score answers first, or pass --results_dir)")
    try:
        cells = collect(args.results_dir)
    except ValueError as e:
        parser.error(str(e))
    if not cells:
        parser.error(f"no */*/{RESULTS_FILE} under {args.results_dir}: score some answers first")
    found = sorted({v for (_, v), c in cells.items() if not c.sweep})
    variants = args.variants or found
    unknown = [v for v in variants if v not in found]
    if unknown:
        parser.error(f"no results for variant(s) {unknown} in {args.results_dir}; found: {found} (λ sweeps are shown in their own tables)")

    table = markdown(cells, variants)
    sys.stdout.write(table)
    if args.output:
        Path(args.output).write_text(table, encoding="utf-8")
    if args.csv:
        write_csv(args.csv, cells, variants)
    if not args.no_plots:
        plot_dir = Path(args.plot_dir or Path(args.results_dir) / "plots")
        plot_dir.mkdir(parents=True, exist_ok=True)
        written = [plot_variants(plot_dir / "results.png", cells, variants)] if variants else []
        for name, by_split in sorted(sweeps(cells).items()):
            written.append(plot_sweep(plot_dir / f"sweep_{re.sub(r'[^A-Za-z0-9._+-]', '_', name)}.png", name, by_split))
        for path in written:
            print(f"plot: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
