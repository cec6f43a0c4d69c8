"""Does training on batches formed by length (``batch_by_length``) cost quality? The evidence for its default.

    python benchmarks/batch_by_length.py run        # both arms of every model and seed (resumable)
    python benchmarks/batch_by_length.py report     # the non-inferiority tests, as stated in BENCHMARKS.md
    python benchmarks/batch_by_length.py run --models PreferDiff --arms recbole   # a part, e.g. one per core
    python benchmarks/batch_by_length.py run --models PreferDiff --arms by-length --seeds 2023,2024

Each model of :data:`ARMS` trains with the CPU protocol of ``benchmarks/beauty.py`` on full Amazon Beauty, once with
RecBole's batches and once with ``batch_by_length: True``, with the same seeds (``python -m
recbole_diffusion.compare``, one process per run, one thread). The test is one-sided and paired across seeds:
H0 "the mean of (by length - RecBole's) test NDCG@10 is at most -margin", margin = :data:`MARGIN` times the
RecBole arm's mean; rejecting it at :data:`ALPHA` for every model puts the key on by default. Records:
``benchmarks/batch-by-length/<model>-<arm>/`` (the runs' JSON; logs and checkpoints in git-ignored ``work/``).
"""

import argparse
import os
import sys

import numpy as np
from scipy import stats

from beauty import compare_arguments
from recbole_diffusion import compare
from recbole_diffusion.compare import load_runs

HERE = os.path.dirname(os.path.abspath(__file__))
# model -> (preset family, seeds, extra arguments): configurations that learn at CPU sizes (BENCHMARKS runs 9, 15).
ARMS = {
    "DiffuRec-smallinit": ("diffurec", 3, []),
    "PreferDiff": ("guided", 5, ["--learning_rate", "0.01", "--epochs", "30", "--eval_step", "3"]),
}
MARGIN = 0.10  # of the RecBole arm's mean test NDCG@10
ALPHA = 0.05


def output(root, model, by_length):
    return os.path.join(root, f"{model}-{'by-length' if by_length else 'recbole'}")


ARM_NAMES = {"recbole": False, "by-length": True}


def run(root, data_path, models=tuple(ARMS), arms=tuple(ARM_NAMES), seeds=None):
    """Both arms of ``models``; ``seeds`` (e.g. "2023,2024") runs those of a model's seeds only, so that two
    processes can share a model's seeds."""
    for model in models:
        family, count, extra = ARMS[model]
        for by_length in (ARM_NAMES[arm] for arm in arms):
            arguments = compare_arguments(family, True, output(root, model, by_length), data_path,
                                          ["--models", model, "--seeds", seeds or str(count), "--threads", "1",
                                           "--batch_by_length", str(by_length), *extra])
            compare.main(arguments)
    return 0


def non_inferiority(without, with_key):
    """``(mean difference, margin, p)`` of the one-sided paired test that ``with_key`` is not worse by the margin."""
    without, with_key = np.asarray(without, float), np.asarray(with_key, float)
    differences = with_key - without
    margin = MARGIN * without.mean()
    se = differences.std(ddof=1) / np.sqrt(len(differences))
    p = float(stats.t.sf((differences.mean() + margin) / se, len(differences) - 1)) if se > 0 else \
        float(differences.mean() <= -margin)
    return float(differences.mean()), float(margin), p


def report(root):
    lines = ["| model | seeds | RecBole's batches: NDCG@10 | by length: NDCG@10 | difference | margin | p (one-sided) "
             "| s / epoch, RecBole's | s / epoch, by length |", "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for model in ARMS:
        runs = [{r["seed"]: r for r in load_runs(output(root, model, arm)) if r["status"] == "ok"}
                for arm in (False, True)]
        seeds = sorted(set(runs[0]) & set(runs[1]))
        if len(seeds) < 2:
            lines.append(f"| {model} | {len(seeds)} | pending | | | | | | |")
            verdicts.append(False)
            continue
        ndcg = [[runs[arm][seed]["test"]["ndcg@10"] for seed in seeds] for arm in (0, 1)]
        seconds = [np.mean([runs[arm][seed]["seconds_per_epoch"] for seed in seeds]) for arm in (0, 1)]
        mean, margin, p = non_inferiority(*ndcg)
        verdicts.append(p < ALPHA)
        lines.append(f"| {model} | {len(seeds)} | {np.mean(ndcg[0]):.4f} ± {np.std(ndcg[0], ddof=1):.4f} | "
                     f"{np.mean(ndcg[1]):.4f} ± {np.std(ndcg[1], ddof=1):.4f} | {mean:+.4f} | {margin:.4f} | {p:.3g} | "
                     f"{seconds[0]:.1f} | {seconds[1]:.1f} |")
    lines.append("")
    lines.append(f"Non-inferior at margin {MARGIN:.0%} (alpha {ALPHA}) for every model: "
                 f"{'yes: batch_by_length on by default' if all(verdicts) else 'no: batch_by_length stays off'}")
    print("\n".join(lines))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("run", "report"))
    parser.add_argument("--root", default=os.path.join(HERE, "batch-by-length"))
    parser.add_argument("--data_path", default=os.path.join(HERE, "..", "..", "shared", "data"))
    parser.add_argument("--models", default=",".join(ARMS), help="comma-separated, of: " + ", ".join(ARMS))
    parser.add_argument("--arms", default=",".join(ARM_NAMES), help="comma-separated, of: " + ", ".join(ARM_NAMES))
    parser.add_argument("--seeds", help="comma-separated seeds, a part of each model's (default: all of them)")
    args = parser.parse_args(argv)
    models, arms = args.models.split(","), args.arms.split(",")
    unknown = sorted(set(models) - set(ARMS)) + sorted(set(arms) - set(ARM_NAMES))
    if unknown:
        parser.error(f"unknown model or arm: {', '.join(unknown)}")
    root = os.path.abspath(args.root)
    if args.stage == "report":
        return report(root)
    return run(root, os.path.abspath(args.data_path), models, arms, args.seeds)


if __name__ == "__main__":
    sys.exit(main())
