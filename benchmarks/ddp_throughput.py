"""Training throughput of one model with 1, 2, ... processes (RecBole's distributed mode through the runner).

    python benchmarks/ddp_throughput.py --model PreferDiff --dataset ml-100k --nproc 1 2 --epochs 2

Each setting trains ``--epochs`` epochs without validation through the runner's pipeline (one process, or
``nproc`` spawned processes with gloo on CPUs, NCCL on GPUs) and reports the last epoch's training sequences
per second over the whole (global) batch; the first epochs warm up. ``train_batch_size`` is the global batch
in every setting, so the optimiser steps are the same.
"""

import json
import platform

import torch

from common import apply_threads_and_overrides, single_model_parser
from recbole_diffusion.quick_start import launcher
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data, rank_config, spawn_settings


def train_epochs(config, model_class):
    """Seconds of each training epoch and the number of training sequences."""
    data = prepare_data(config)
    trainer = build_trainer(config, model_class, data.train)
    trainer.fit(data.train, None, saved=False)
    return {"epoch_seconds": trainer.epoch_seconds, "sequences": data.train.sample_size}


def _rank(local_rank, model, dataset, config_dict):
    return train_epochs(*rank_config(local_rank, model, dataset, None, config_dict))


def measure(model, dataset, nproc, config_dict):
    config, model_class = build_config(model, dataset, config_dict={**config_dict, "nproc": nproc})
    launch = launcher.plan_launch(config, given_keys=set(config_dict))
    if launch is None:
        timing = train_epochs(config, model_class)
    else:
        timing = launcher.spawn(_rank, nproc, (model, dataset, spawn_settings(config, config_dict, launch)))
    return {"model": model, "dataset": dataset, "nproc": nproc, "backend": launch.backend if launch else None,
            "device": str(config["device"]), "threads_per_process": torch.get_num_threads(),
            "sizes": {key: config[key] for key in ("hidden_size", "n_layers", "MAX_ITEM_LIST_LENGTH",
                                                   "train_batch_size", "diffusion_steps")},
            "train_sequences_per_second": timing["sequences"] / timing["epoch_seconds"][-1], **timing}


def main():
    parser = single_model_parser(__doc__, "DiffuRec")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    overrides = {"data_path": args.data_path, "epochs": args.epochs, "state": "WARNING", "show_progress": False,
                 **apply_threads_and_overrides(args)}
    results = [measure(args.model, args.dataset, nproc, overrides) for nproc in args.nproc]
    base = results[0]["train_sequences_per_second"] / results[0]["nproc"]
    for result in results:
        result["scaling_efficiency"] = result["train_sequences_per_second"] / (base * result["nproc"])
    print(json.dumps({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "runs": results}, indent=1))


if __name__ == "__main__":
    main()
