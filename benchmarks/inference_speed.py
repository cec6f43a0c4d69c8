"""Full-ranking evaluation speed of one diffusion model at CPU sizes, for timing the code before and after a change.

    OMP_NUM_THREADS=1 python benchmarks/inference_speed.py --model DiffuRec --threads 1 --repeats 3
    # the same measurement of another revision of the package (the script itself stays this one):
    git worktree add /tmp/before <revision>
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/before python benchmarks/inference_speed.py --model DiffuRec --threads 1

The model (the CPU sizes of ``benchmarks/beauty.py``: d 64, 2 blocks, L 20 for the DiffuRec family; d 64,
1 block, L 10 for DreamRec / PreferDiff) is built with its seed and not trained: its weights, and so its scores,
are the same in every revision that builds the model the same way. The test split of the first ``--users``
users of Amazon Beauty is evaluated ``--repeats`` times through the trainer's ``evaluate`` (RecBole's
evaluator) with the model's default sampler; it prints users / s (the best repeat and all of them), the test
metrics and a fingerprint of the scores of the first evaluation batch (a hash of each user's top-20 items and
the scores' sum), which must be equal before and after a change that is meant to keep the metrics.
Only APIs older revisions share are used (``build_config``, ``prepare_data``, ``build_trainer``, ``evaluate``).
"""

import argparse
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time

import torch

from beauty import CPU_TRAINING, DATASET, FAMILIES
import recbole_diffusion
from recbole_diffusion.data.slices import write_user_slice
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data

GUIDED = ("DreamRec", "PreferDiff")


def sizes_for(model):
    """The CPU sizes of the model's family in ``benchmarks/beauty.py``."""
    return FAMILIES["guided" if model.startswith(GUIDED) else "diffurec"]["cpu"]


def revision():
    """The imported package's folder and its git revision (with ``+changes`` when its tree differs)."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(recbole_diffusion.__file__)))
    try:
        commit = subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no", "--",
                                "recbole_diffusion"], capture_output=True, text=True, check=True).stdout.strip()
        return folder, commit + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return folder, None


def score_fingerprint(trainer, test_data):
    """Hash of the first batch's top-20 items per user, and the sum of its scores (as the evaluator sees them)."""
    batch = next(iter(test_data))
    trainer.model.eval()
    with torch.no_grad():
        _, scores, _, _ = trainer._full_sort_batch_eval(batch)
    top = torch.topk(scores, 20, dim=-1).indices
    return {"top20_sha1": hashlib.sha1(top.cpu().numpy().tobytes()).hexdigest()[:16],
            "score_sum": float(scores[torch.isfinite(scores)].double().sum())}


def measure(model, data_path, users, repeats, eval_batch_size):
    settings = {**sizes_for(model), "data_path": data_path, "eval_batch_size": eval_batch_size,
                "state": "WARNING", "show_progress": False}
    config, model_class = build_config(model, DATASET, config_dict=settings)
    data = prepare_data(config)
    trainer = build_trainer(config, model_class, data.train)
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = trainer.evaluate(data.test, load_best_model=False)
        seconds.append(time.perf_counter() - start)
    test_users = len(data.test.uid_list) if hasattr(data.test, "uid_list") else data.test.sample_size
    folder, commit = revision()
    return {
        "model": model, "package": folder, "revision": commit, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "users": users, "test_users": test_users, "items": data.dataset.item_num,
        "sampler": config["sampler"], "sampler_steps": config["ddim_steps"] if config["sampler"] == "ddim"
        else config["ddpm_steps"], "diffusion_steps": config["diffusion_steps"], "sizes": sizes_for(model),
        "eval_batch_size": eval_batch_size,
        "users_per_second": test_users / min(seconds),
        "seconds_per_1000_users": min(seconds) / test_users * 1000,
        "users_per_second_each_repeat": [round(test_users / s, 2) for s in seconds],
        "test": {key: round(float(value), 6) for key, value in result.items()},
        "first_batch": score_fingerprint(trainer, data.test),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="DiffuRec", help="a diffusion model or variant (default DiffuRec)")
    parser.add_argument("--data_path", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"),
                        help="the folder holding amazon-beauty/")
    parser.add_argument("--users", type=int, default=2000, help="evaluate the first N users of the data")
    parser.add_argument("--repeats", type=int, default=3, help="timed evaluations; the fastest one is reported")
    parser.add_argument("--eval_batch_size", type=int, default=CPU_TRAINING["eval_batch_size"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        data_path = write_user_slice(os.path.join(os.path.abspath(args.data_path), DATASET, f"{DATASET}.inter"),
                                     DATASET, args.users, folder)
        cwd = os.getcwd()
        os.chdir(folder)  # RecBole's ./log and ./saved land in the temporary folder
        try:
            record = measure(args.model, data_path, args.users, args.repeats, args.eval_batch_size)
        finally:
            os.chdir(cwd)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
