"""The Amazon Beauty benchmarks of BENCHMARKS.md: one model family against RecBole's SASRec, one protocol.

    # CPU protocol (sizes shrunk identically for every model, 10 epochs, validation every 2)
    python benchmarks/beauty.py --family diffurec --cpu
    python benchmarks/beauty.py --family guided --cpu
    # the specification's protocol (every model at its YAML sizes, early stopping; meant for a GPU)
    python benchmarks/beauty.py --family diffurec

A thin layer over ``recbole_diffusion.compare``: it fixes the models and the protocol's settings, can keep only
the first ``--users`` users of the data (written to a folder inside the output), then prints the summary's
main table and cost table. Every other argument (``--seeds 5``, ``--epochs 20``, ``--threads 1``, any RecBole
``--key value``) goes to the comparison unchanged and wins over the presets. Results: ``--output`` (default
``benchmarks/results/beauty-<family>[-cpu]``, git-ignored); run again to resume.
"""

import argparse
import os
import sys

from recbole_diffusion import compare
from recbole_diffusion.data.slices import write_user_slice

DATASET = "amazon-beauty"
FAMILIES = {
    "diffurec": {
        "models": "DiffuRec,DiffuRecSys-V1,DiffuRecSys-V2,SASRec",
        "cpu": {"hidden_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": 2, "MAX_ITEM_LIST_LENGTH": 20,
                "train_batch_size": 512},
    },
    "guided": {
        "models": "DreamRec,DreamRec-DDIM,PreferDiff,PreferDiff-DDPM,SASRec",
        "cpu": {"hidden_size": 64, "inner_size": 64, "n_layers": 1, "n_heads": 1, "MAX_ITEM_LIST_LENGTH": 10,
                "train_batch_size": 256},
    },
}
CPU_TRAINING = {"epochs": 10, "eval_step": 2, "learning_rate": 0.001, "eval_batch_size": 1024,
                "show_progress": False}


def compare_arguments(family, cpu, output, data_path, extra):
    """The argument list for ``recbole_diffusion.compare``: presets first, so the user's ``extra`` wins."""
    presets = {"data_path": data_path, **(FAMILIES[family]["cpu"] if cpu else {}), **(CPU_TRAINING if cpu else {})}
    arguments = ["--models", FAMILIES[family]["models"], "--dataset", DATASET, "--output", output]
    for key, value in presets.items():
        arguments += [f"--{key}", str(value)]
    return arguments + list(extra)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), required=True)
    parser.add_argument("--cpu", action="store_true", help="the CPU protocol (small sizes, 10 epochs)")
    parser.add_argument("--data_path", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    parser.add_argument("--users", type=int, default=None, help="keep only the first N users of the data")
    parser.add_argument("--output", default=None)
    args, extra = parser.parse_known_args(argv)
    output = args.output or os.path.join("benchmarks", "results", f"beauty-{args.family}{'-cpu' if args.cpu else ''}")
    data_path = os.path.abspath(args.data_path)
    if args.users:
        data_path = write_user_slice(os.path.join(data_path, DATASET, f"{DATASET}.inter"), DATASET, args.users,
                                     os.path.join(output, f"data-{args.users}-users"))
    code = compare.main(compare_arguments(args.family, args.cpu, output, data_path, extra))
    summary = os.path.join(output, "summary.md")
    if os.path.isfile(summary):
        with open(summary, encoding="utf-8") as handle:
            sections = handle.read().split("\n### ")
        print("\n\n".join("### " + s for s in sections if s.startswith(("All test users", "Cost"))))
    return code


if __name__ == "__main__":
    sys.exit(main())
