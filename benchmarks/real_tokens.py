"""Training and evaluation throughput through the pipeline's own loaders, for two revisions side by side.

    OMP_NUM_THREADS=1 python benchmarks/real_tokens.py --model DiffuRec --sizes spec --threads 1
    OMP_NUM_THREADS=1 python benchmarks/real_tokens.py --model DiffuRec --sizes cpu --threads 1 --set batch_by_length=True
    # the code before a change, by the same script:
    git worktree add /tmp/before <revision>
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/before python benchmarks/real_tokens.py --model DiffuRec --sizes spec --threads 1

Builds the model on full Amazon Beauty (untrained: the seconds stand, the scores mean nothing) and times, through
the loaders ``prepare_data`` hands the trainer (so whatever a revision does to its batches is measured):
``--train_batches`` optimiser steps on the training loader's first batches after one warm-up (a loader that
shuffles gives a random sample of batches), and full-ranking evaluation of every ``--eval_every``-th test batch,
from the middle of the first ``--eval_every`` on, with the model's default sampler (a systematic sample over the
loader's order, which may be sorted by length).
Sizes: ``spec`` = the model's YAML (DiffuRec: MODELS.md's d 128, 4 blocks, L 50, T 32); ``cpu`` = the CPU protocol
of ``benchmarks/beauty.py``. Prints one JSON record. Only APIs every revision since the layout of issue 19 has are
used (``build_config``, ``prepare_data``, ``build_trainer``).
"""

import json
import platform
import time

import torch

from beauty import FAMILIES
from common import apply_threads_and_overrides, single_model_parser
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data

GUIDED = ("DreamRec", "PreferDiff")


def sizes(model, kind):
    if kind == "spec":
        return {}
    return FAMILIES["guided" if model.startswith(GUIDED) else "diffurec"]["cpu"]


def measure(model, dataset, data_path, kind, train_batches, eval_every, overrides):
    config, model_class = build_config(model, dataset, config_dict={
        "data_path": data_path, "state": "WARNING", "show_progress": False, **sizes(model, kind), **overrides})
    data = prepare_data(config)
    trainer = build_trainer(config, model_class, data.train)
    recommender, optimizer = trainer.model, trainer.optimizer

    recommender.train()
    sequences, tokens, seconds = 0, 0, 0.0
    for index, batch in enumerate(data.train):
        if index > train_batches:
            break
        start = time.perf_counter()
        optimizer.zero_grad()
        recommender.calculate_loss(batch).backward()
        optimizer.step()
        if index:  # batch 0 warms up
            sequences += len(batch)
            tokens += batch[config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]].numel()
            seconds += time.perf_counter() - start

    recommender.eval()
    users, eval_tokens, eval_seconds = 0, 0, 0.0
    with torch.inference_mode():
        for index, (interaction, *_rest) in enumerate(data.test):
            if index % eval_every != eval_every // 2:
                continue
            start = time.perf_counter()
            recommender.full_sort_predict(interaction)
            eval_seconds += time.perf_counter() - start
            users += len(interaction)
            eval_tokens += interaction[config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]].numel()
    return {
        "model": model, "sizes": kind, "overrides": overrides, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "config": {key: config[key] for key in ("hidden_size", "n_layers", "n_heads", "MAX_ITEM_LIST_LENGTH",
                                                "train_batch_size", "eval_batch_size", "diffusion_steps", "sampler")},
        "train_sequences_per_second": sequences / seconds, "timed_train_sequences": sequences,
        "train_positions_per_sequence": tokens / sequences,
        "eval_users_per_second": users / eval_seconds, "timed_eval_users": users,
        "eval_positions_per_user": eval_tokens / users,
    }


def main():
    parser = single_model_parser(__doc__, "DiffuRec")
    parser.add_argument("--sizes", choices=("spec", "cpu"), default="spec")
    parser.add_argument("--train_batches", type=int, default=20)
    parser.add_argument("--eval_every", type=int, default=4, help="time every N-th test batch (default 4)")
    args = parser.parse_args()
    overrides = apply_threads_and_overrides(args)
    print(json.dumps(measure(args.model, args.dataset, args.data_path, args.sizes, args.train_batches, args.eval_every, overrides)))


if __name__ == "__main__":
    main()
