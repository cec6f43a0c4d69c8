"""Peak memory of a run through the runner over a fixed number of training steps, for two revisions side by side.

    OMP_NUM_THREADS=1 python benchmarks/peak_memory.py --model PreferDiff --users 150 --set hidden_size=3072 inner_size=3072
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/before python benchmarks/peak_memory.py ...   # the code before a change

Runs ``recbole_diffusion.run`` (the runner's whole path: data, model, trainer, checkpoints, validation, test) in a
fresh process on the first ``--users`` users of Amazon Beauty for ``--epochs`` epochs, so the number of training
steps is fixed, and prints one JSON record: the peak memory (CUDA's allocator peak on a GPU, the process's peak
RSS on a CPU), the model's parameters, the steps, and what the model, its gradients and Adam's two moments take
(16 bytes per float32 parameter). Run it again with a small ``hidden_size`` for the process's own share (the
interpreter, torch, RecBole, the data).
"""

import json
import os
import resource
import sys
import tempfile

import torch

import recbole_diffusion.quick_start.quick_start as pipeline
from common import apply_threads_and_overrides, single_model_parser
from recbole_diffusion.data.slices import write_user_slice


def measure(model, dataset, data_path, users, epochs, overrides):
    with tempfile.TemporaryDirectory(prefix="peak-memory-") as folder:
        sliced = write_user_slice(os.path.join(data_path, dataset, f"{dataset}.inter"), dataset, users,
                                  os.path.join(folder, "data"))
        os.chdir(folder)
        settings = {"data_path": sliced, "epochs": epochs, "eval_step": epochs, "state": "WARNING",
                    "show_progress": False, "checkpoint_dir": os.path.join(folder, "saved"), **overrides}
        recorded = {}
        original_build = pipeline.build_trainer

        def build_trainer(config, model_class, train_data):
            trainer = original_build(config, model_class, train_data)
            recorded.update(parameters=sum(p.numel() for p in trainer.model.parameters()),
                            steps_per_epoch=len(train_data), device=str(config["device"]))
            return trainer

        pipeline.build_trainer = build_trainer  # records the model's size and the steps of an epoch
        pipeline.run(model, dataset, config_dict=settings)
    on_cuda = recorded["device"].startswith("cuda")
    peak = torch.cuda.max_memory_allocated() if on_cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"model": model, "users": users, "epochs": epochs, "overrides": overrides, **recorded,
            "training_steps": recorded["steps_per_epoch"] * epochs,
            "peak_memory_mib": peak / 2 ** 20, "peak_kind": "cuda allocator" if on_cuda else "process peak RSS",
            "model_gradients_adam_mib": 16 * recorded["parameters"] / 2 ** 20}


def main():
    parser = single_model_parser(__doc__, "PreferDiff")
    parser.add_argument("--users", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    overrides = apply_threads_and_overrides(args)
    print(json.dumps(measure(args.model, args.dataset, os.path.abspath(args.data_path), args.users, args.epochs,
                             overrides)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
