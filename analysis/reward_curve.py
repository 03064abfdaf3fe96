"""GRPO reward per training step, from the metrics file verl's file logger writes.

    python -m analysis.reward_curve checkpoints/passage0/grpo/metrics.jsonl --output reward.png
    python -m analysis.reward_curve checkpoints/passage0/grpo/metrics*.jsonl --output reward.png --json reward.json

scripts/train/grpo.sh has verl write $GRPO_DIR/metrics.jsonl, one JSON line per step:
{"step": N, "data": {metric: value}}. A resumed run (RESUME=1) moves the earlier file aside to
metrics.<unix time>.jsonl: give the files of one run oldest first (the glob above does), and a
step in a later file replaces the same step in an earlier one. Prints the number of steps and the
mean reward of the first and the last 20% of them (at least one step each), and draws the reward
against the step. --metric picks another logged metric (default critic/score/mean, the mean
reward of the step's rollouts); lines without it (e.g. validation-only steps) are skipped.
"""

import argparse
import json
import sys
from pathlib import Path

DEFAULT_METRIC = "critic/score/mean"


def fifth(n):
    """How many steps the first and the last 20% of n steps are: at least one."""
    return max(1, n // 5)


def read_metric(paths, metric=DEFAULT_METRIC):
    """{step: value} of one metric over one run's metrics files, later files' steps winning."""
    values, seen = {}, set()
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such file (grpo.sh writes $GRPO_DIR/metrics.jsonl once training starts)")
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"{path} is empty: the run has logged no step yet")
        for n, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                step, data = int(record["step"]), dict(record["data"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: not a line of verl's file logger, "
                                 f'{{"step": N, "data": {{metric: value}}}} ({e!r})') from None
            seen.update(data)
            if data.get(metric) is not None:
                values[step] = float(data[metric])
    if not values:
        names = ", ".join(str(p) for p in paths)
        raise ValueError(f"{metric} is in no line of {names}; metrics logged there (pick one with --metric): "
                         f"{', '.join(sorted(seen))}")
    return values


def reward_summary(path_or_paths, metric=DEFAULT_METRIC):
    """{"steps", "rewards", "first_20pct", "last_20pct"} of one run's metrics file(s), steps ascending;
    the 20% figures are mean rewards of the first and last fifth of the steps (at least one step)."""
    paths = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    values = read_metric(paths, metric)
    steps = sorted(values)
    rewards = [values[s] for s in steps]
    k = fifth(len(steps))
    return {"steps": steps, "rewards": rewards,
            "first_20pct": sum(rewards[:k]) / k, "last_20pct": sum(rewards[-k:]) / k}


def draw_curve(summary, metric, title, output):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(summary["steps"], summary["rewards"], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", help="metrics.jsonl file(s) of one GRPO run, oldest first")
    parser.add_argument("--output", required=True, help="PNG file to write: the metric against the step")
    parser.add_argument("--metric", default=DEFAULT_METRIC, help=f"the logged metric (default {DEFAULT_METRIC})")
    parser.add_argument("--json", help="also write the summary here: steps, rewards, first_20pct, last_20pct")
    args = parser.parse_args(argv)
    try:
        summary = reward_summary(args.metrics, args.metric)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run = args.metrics[-1]
    n = len(summary["steps"])
    print(f"{run}: {n} steps ({summary['steps'][0]}-{summary['steps'][-1]}); {args.metric}: "
          f"first 20% ({fifth(n)} of them) {summary['first_20pct']:.4f}, last 20% {summary['last_20pct']:.4f}")
    draw_curve(summary, args.metric, f"{args.metric} per step ({run})", args.output)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"plot written to {args.output}" + (f", summary to {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
