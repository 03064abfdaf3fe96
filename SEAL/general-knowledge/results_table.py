"""The SQuAD table: SEAL's published rows and the paper's PaST number beside the rows of our run
JSONs (query_server.py), each row saying whose numbers it holds.

    python SEAL/general-knowledge/results_table.py results/seal/*.json
    python SEAL/general-knowledge/results_table.py results/seal --output table.md --csv table.csv --plot lambda.png

Accuracy = mean over passages of the passage's accuracy (macro), +- the standard deviation of the
passage means, as SEAL reports it. Published rows: single-passage TTT on SEAL's 200 evaluation
passages (974 questions), Qwen2.5-7B, greedy answers of at most 64 tokens, GPT-4.1 grader, SEAL's
prompts. Our rows say which judge graded them, and the column "comparable" marks every row graded by
another judge (a cheaper grader may be chosen on purpose) or asked with other prompts "no" with the
reasons, repeated in a note under the table: such a number measures something else. Numbers from
the lexical judge or a tiny model only check the plumbing. Our rows come in the table's order (base, passage only,
implications, skill only, implications + skill), the skill rows by vector, order (post/pre) and
lambda, so a lambda sweep, pre vs post and one vector against another (K=1 vs K rounds) read
down the table. --plot draws accuracy against lambda: one line per vector and order for
implications + skill (lambda 0 = the implications row, no vector) and one per vector for skill
only (lambda 0 = the base row).
"""

import argparse
import csv
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from seal_squad.results import SEAL_JUDGE_MODEL, not_comparable, read_run  # noqa: E402

COLUMNS = ["row", "implications by", "model TTT'd", "skill", "accuracy %", "+- std", "passages", "questions",
           "grader", "comparable", "numbers from"]

# (row, implications by, model TTT'd, skill, accuracy, std of passage means, source); std from SEAL's files.
PUBLISHED = [
    ("base, no adaptation", "-", "-", "-", 32.67, 26.18, "SEAL, published: results/query_server/eval/base.json (baseline)"),
    ("passage only", "-", "Qwen2.5-7B", "-", 33.51, 27.51, "SEAL, published: eval/naive.json"),
    ("base implications", "Qwen2.5-7B", "Qwen2.5-7B", "-", 39.68, 27.86, "SEAL, published: eval/base.json"),
    ("GPT-4.1 implications", "GPT-4.1", "Qwen2.5-7B", "-", 46.31, 26.79, "SEAL, published: eval/gpt4_1.json"),
    ("SEAL RL iter 1", "SEAL iter 1", "SEAL iter 1", "-", 42.68, 30.45, "SEAL, published: eval/iter1.json"),
    ("SEAL RL iter 2", "SEAL iter 2", "SEAL iter 2", "-", 46.99, 26.85, "SEAL, published: eval/iter2.json"),
    ("PaST", "Qwen2.5-7B", "Qwen2.5-7B", "+lambda*v, K rounds", 56.9, None, "PaST paper (arXiv:2601.11258), no std published"),
]
ROW_NAMES = {"base": "base, no adaptation", "passage": "passage only", "implications": "implications",
             "skill_only": "skill only (no TTT)", "implications_skill": "implications + skill"}
ROW_ORDER = list(ROW_NAMES)


def skill_label(skill, survival=None):
    kept = f"; {100 * survival['share']:.0f}% kept in {'/'.join(survival['served_dtypes'])}" if survival else ""
    return f"+{skill['alpha']:g}*{skill.get('name') or 'v'} ({skill['order']}; {skill['fingerprint'][:20]}{kept})"


def sort_key(run):
    condition = run.get("condition")
    skill = (run.get("server") or {}).get("skill") or {}
    rank = ROW_ORDER.index(condition) if condition in ROW_ORDER else len(ROW_ORDER)
    return rank, skill.get("name") or "", skill.get("order") or "", skill.get("alpha") or 0.0, run["exp_name"]


def run_row(path, run):
    server = run.get("server") or {}
    skill = server.get("skill")
    condition = run.get("condition")
    meta = run.get("dataset_meta") or {}
    trains = condition not in ("base", "skill_only")
    judge = server.get("judge") or {}
    apart = not_comparable(run)
    overall = run["overall"]
    questions = overall.get("n_questions") or sum(
        1 for a in run["articles"] for q in a["completions"][0]["questions"] if q.get("rep", 0) == 0)
    return [
        ROW_NAMES.get(condition, f"run {run['exp_name']}"),
        meta.get("model", "-") if condition in ("implications", "implications_skill") else "-",
        server.get("trainer_model", "?") if trains else "-",
        skill_label(skill, run.get("skill_survival")) if skill else "-",
        round(100 * overall["adapter_mean_accuracy"], 2),
        round(100 * overall["adapter_std_of_article_means"], 2),
        run["n_articles"],
        questions,
        f"{judge.get('backend', '?')} {judge.get('judge_model') or ''}".strip() if judge else "?",
        "no: " + "; ".join(apart) if apart else "yes",
        f"ours: {path}",
    ]


def run_files(paths):
    files = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.json")) if p.is_dir() else [p])
    return files


def lambda_points(runs):
    """{line label: {lambda: accuracy %}} from the runs with a skill vector and their lambda-0 rows."""
    zero = {r["condition"]: 100 * r["overall"]["adapter_mean_accuracy"] for r in runs
            if r.get("condition") in ("implications", "base")}
    lines = {}
    for run in runs:
        skill = (run.get("server") or {}).get("skill")
        condition = run.get("condition")
        if not skill or condition not in ("implications_skill", "skill_only"):
            continue
        name = skill.get("name") or "v"
        if condition == "implications_skill":
            label, origin = f"implications + {name} ({skill['order']})", zero.get("implications")
        else:
            label, origin = f"skill only, {name}", zero.get("base")
        line = lines.setdefault(label, {})
        if origin is not None:
            line[0.0] = origin
        line[float(skill["alpha"])] = 100 * run["overall"]["adapter_mean_accuracy"]
    return lines


def plot_lambda(runs, path):
    """Accuracy (%) against lambda, one line per vector and order (lambda_points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = lambda_points(runs)
    if not lines:
        raise ValueError("no run with a skill vector (implications_skill or skill_only) to plot against lambda")
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in sorted(lines.items()):
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", label=label)
    ax.set_xlabel("lambda (served model: base + lambda * v)")
    ax.set_ylabel("accuracy % (mean of passage means)")
    ax.set_ylim(0, 100)
    ax.set_title("SQuAD knowledge incorporation: accuracy vs lambda")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run JSONs of query_server.py, or folders of them")
    parser.add_argument("--output", help="also write the markdown table here")
    parser.add_argument("--csv", help="also write the table as CSV here")
    parser.add_argument("--plot", help="also draw accuracy vs lambda into this image (PNG)")
    parser.add_argument("--no_published", action="store_true", help="only our rows")
    args = parser.parse_args(argv)
    files = run_files(args.runs)
    if not files:
        parser.error(f"no run JSON found in {' '.join(args.runs)}")
    try:
        runs = sorted(((read_run(f), f) for f in files), key=lambda pair: sort_key(pair[0]))
        ours = [run_row(f, run) for run, f in runs]
        if args.plot:
            plot_lambda([run for run, _ in runs], args.plot)
    except ValueError as e:
        parser.error(str(e))
    published = [] if args.no_published else [[r, i, m, s, a, sd, "200", "974", "GPT-4.1", "(reference)", src]
                                                for r, i, m, s, a, sd, src in PUBLISHED]
    rows = published + ours
    table = markdown(rows)
    apart = [f"{row[0]} ({f})" for row, (run, f) in zip(ours, runs) if not_comparable(run)]
    if apart:
        table += (f"\n**Not comparable with the published rows** ({len(apart)} of our {len(ours)}: another judge than "
                  f"SEAL's {SEAL_JUDGE_MODEL}, or other prompts; see the column \"comparable\"): {', '.join(apart)}. To "
                  f"compare, grade with JUDGE_BACKEND=openai JUDGE_MODEL={SEAL_JUDGE_MODEL} and keep SEAL's prompts "
                  "(ANSWER_TEMPLATE and PROMPT_FILE unset).\n")
    print(table, end="")
    if args.output:
        Path(args.output).write_text(table, encoding="utf-8")
    if args.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        Path(args.csv).write_text(buffer.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main()
