"""Training and evaluation throughput of a model at its YAML sizes (DiffuRec: the spec's defaults).

    python benchmarks/throughput.py --model DiffuRec --dataset amazon-beauty --data_path ../shared/data

Times ``--train_batches`` optimiser steps (training sequences / s) and ``--eval_batches`` full-sort
evaluation batches with all reverse steps (users / s), after one warm-up batch each. No training to
convergence: the numbers are a yardstick for later changes, on the machine they were taken on.
"""

import json
import platform
import time

import torch

from common import apply_threads_and_overrides, single_model_parser
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data


def measure(model, dataset, data_path, train_batches, eval_batches, overrides):
    config, model_class = build_config(model, dataset, config_dict={"data_path": data_path, "state": "WARNING",
                                                                    **overrides})
    data = prepare_data(config)
    train_data, test_data = data.train, data.test
    trainer = build_trainer(config, model_class, train_data)  # the model and optimiser every run uses
    recommender, optimizer = trainer.model, trainer.optimizer
    synchronize = torch.cuda.synchronize if config["device"].type == "cuda" else (lambda: None)

    recommender.train()
    sequences, seconds = 0, 0.0
    for index, batch in enumerate(train_data):
        if index > train_batches:
            break
        batch = batch.to(config["device"])
        synchronize()
        start = time.perf_counter()
        optimizer.zero_grad()
        recommender.calculate_loss(batch).backward()
        optimizer.step()
        synchronize()
        if index:  # batch 0 warms up
            sequences += len(batch)
            seconds += time.perf_counter() - start

    recommender.eval()
    users, eval_seconds = 0, 0.0
    with torch.no_grad():
        for index, (interaction, *_rest) in enumerate(test_data):
            if index > eval_batches:
                break
            interaction = interaction.to(config["device"])
            synchronize()
            start = time.perf_counter()
            recommender.full_sort_predict(interaction)
            synchronize()
            if index:
                users += len(interaction)
                eval_seconds += time.perf_counter() - start
    return {
        "model": model, "dataset": dataset, "device": str(config["device"]), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "sizes": {key: config[key] for key in ("hidden_size", "n_layers", "n_heads", "MAX_ITEM_LIST_LENGTH",
                                               "train_batch_size", "eval_batch_size", "diffusion_steps")},
        "parameters": sum(parameter.numel() for parameter in recommender.parameters()),
        "peak_cuda_memory_gib": (torch.cuda.max_memory_allocated(config["device"]) / 2**30
                                 if config["device"].type == "cuda" else None),
        "train_sequences_per_second": sequences / seconds, "timed_train_sequences": sequences,
        "eval_users_per_second": users / eval_seconds, "timed_eval_users": users,
    }


def main():
    parser = single_model_parser(__doc__, "DiffuRec")
    parser.add_argument("--train_batches", type=int, default=20)
    parser.add_argument("--eval_batches", type=int, default=4)
    args = parser.parse_args()
    overrides = apply_threads_and_overrides(args)
    print(json.dumps(measure(args.model, args.dataset, args.data_path, args.train_batches, args.eval_batches,
                             overrides), indent=1))


if __name__ == "__main__":
    main()
