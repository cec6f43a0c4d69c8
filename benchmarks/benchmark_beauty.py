"""DiffuRec, DiffuRecSys V1/V2 and RecBole's SASRec on Amazon Beauty under one protocol.

Accuracy mode (default): every model is trained and tested by RecBole's Trainer on configurations built by
``recbole_diffusion.quick_start.build_config``, i.e. the runner's protocol (leave-one-out, full ranking over all
items, HR and NDCG @5/10/20, early stopping on validation NDCG@10). Each model runs in its own subprocess, so its
peak memory is its own (CUDA: ``torch.cuda.max_memory_allocated``; CPU: peak RSS from ``resource.getrusage``).
Size and training overrides apply identically to every model. Prints a Markdown table and writes JSON and
Markdown next to ``--output``.

    # the spec's full-size protocol (GPU; every model at its own YAML defaults, up to 500 epochs, early stop)
    python benchmarks/benchmark_beauty.py --device cuda --data_path ../shared/data

    # a small CPU smoke run
    python benchmarks/benchmark_beauty.py --device cpu --users 500 --epochs 2 --hidden_size 32 --max_len 20

Throughput mode (``--throughput``): DiffuRec (or ``--models``) at its YAML sizes, which are the spec's
defaults (d 128, 4 blocks, 4 heads, L 50, batch 512, T 32), on full Beauty; no training to convergence.
Training: sequences / s over ``--train_batches`` optimiser steps after ``--warmup_batches``. Evaluation:
users / s of ``full_sort_predict`` (all T reverse steps and the scores over all items) over ``--eval_batches``
test batches after one warm-up batch.

    python benchmarks/benchmark_beauty.py --throughput --device cpu --data_path ../shared/data

Anything else written ``--key=value`` is passed to every model's RecBole configuration.
Logs and checkpoints go under ``--workdir`` (default: a folder under ``benchmarks/results/``, git-ignored);
checkpoints are deleted after the test evaluation unless ``--keep_checkpoints``.
"""

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_MODELS = ["DiffuRec", "DiffuRecSys-V1", "DiffuRecSys-V2", "SASRec"]
METRICS = [f"{name}@{k}" for name in ("hit", "ndcg") for k in (5, 10, 20)]
# CLI flag -> RecBole key; applied to every model when given.
SIZE_FLAGS = {
    "epochs": ("epochs", int),
    "hidden_size": ("hidden_size", int),
    "inner_size": ("inner_size", int),
    "n_layers": ("n_layers", int),
    "n_heads": ("n_heads", int),
    "max_len": ("MAX_ITEM_LIST_LENGTH", int),
    "train_batch_size": ("train_batch_size", int),
    "eval_batch_size": ("eval_batch_size", int),
    "learning_rate": ("learning_rate", float),
    "eval_step": ("eval_step", int),
    "stopping_step": ("stopping_step", int),
    "seed": ("seed", int),
}
# Per-model settings that make the protocol explicit (SASRec: full-softmax CE, no sampled negatives).
MODEL_SETTINGS = {"SASRec": {"loss_type": "CE", "train_neg_sample_args": None}}


# ----------------------------------------------------------------------------------------------- helpers


def peak_memory_mib(device_type):
    """Peak memory of this process so far: CUDA allocator peak, or peak RSS (Linux reports KiB)."""
    import torch

    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20, "torch.cuda.max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024
    return rss_bytes / 2 ** 20, "peak RSS of the model's process (getrusage)"


def device_settings(device):
    """RecBole 1.2.1 picks cuda when ``gpu_id`` is non-empty and CUDA is available, else cpu."""
    if device == "cpu":
        return {"gpu_id": "", "use_gpu": False}
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine")
    return {"gpu_id": "0", "use_gpu": True}


def write_subsample(data_path, dataset, n_users, folder):
    """Copy the rows of the first ``n_users`` users (file order) into ``folder/<dataset>/<dataset>.inter``."""
    source = os.path.join(data_path, dataset, f"{dataset}.inter")
    target_dir = os.path.join(folder, dataset)
    os.makedirs(target_dir, exist_ok=True)
    seen, rows = set(), 0
    with open(source, encoding="utf-8") as src, open(os.path.join(target_dir, f"{dataset}.inter"), "w",
                                                     encoding="utf-8") as dst:
        header = src.readline()
        dst.write(header)
        user_column = [c.split(":")[0] for c in header.rstrip("\n").split("\t")].index("user_id")
        for line in src:
            user = line.split("\t", user_column + 1)[user_column]
            if user not in seen:
                if len(seen) == n_users:
                    continue  # the file is grouped by user, but do not rely on it
                seen.add(user)
            dst.write(line)
            rows += 1
    return {"users": len(seen), "interactions": rows}


def build(model, dataset, overrides):
    from recbole_diffusion.quick_start import build_config

    return build_config(model, dataset, config_dict={**overrides, **MODEL_SETTINGS.get(model.split("-")[0], {})})


def _synchronize(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------ per-model workers


def accuracy_worker(spec):
    """Train one model with RecBole's Trainer, then time the full-sort test evaluation separately."""
    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_trainer, init_logger, init_seed

    start_wall = time.perf_counter()
    config, model_class = build(spec["model"], spec["dataset"], spec["overrides"])
    device = config["device"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    recommender = model_class(config, train_data._dataset).to(device)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, recommender)

    epoch_seconds, epoch_losses, curve = [], [], []
    train_epoch = trainer._train_epoch

    def timed_train_epoch(*args, **kwargs):
        _synchronize(device)
        start = time.perf_counter()
        loss = train_epoch(*args, **kwargs)
        _synchronize(device)
        epoch_seconds.append(time.perf_counter() - start)
        epoch_losses.append(float(sum(loss) if isinstance(loss, tuple) else loss))
        return loss

    trainer._train_epoch = timed_train_epoch
    best_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False,
                                         callback_fn=lambda epoch, score: curve.append([epoch, float(score)]))

    # Best checkpoint first, then the timed test pass (full ranking of every test user, all reverse steps).
    checkpoint = torch.load(trainer.saved_model_file, map_location=device, weights_only=False)
    recommender.load_state_dict(checkpoint["state_dict"])
    recommender.load_other_parameter(checkpoint.get("other_parameter"))
    best_epoch = checkpoint.get("epoch")
    init_seed(config["seed"], config["reproducibility"])
    _synchronize(device)
    start = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    _synchronize(device)
    inference_seconds = time.perf_counter() - start
    if not spec.get("keep_checkpoints") and os.path.isfile(trainer.saved_model_file):
        os.remove(trainer.saved_model_file)
    peak, peak_kind = peak_memory_mib(device.type)
    n_batches = len(train_data)
    return {
        "model": spec["model"], "status": "ok",
        "test": {m: float(test_result[m]) for m in METRICS},
        "best_valid": {m: float(best_valid[m]) for m in METRICS} if best_valid else None,
        "best_valid_ndcg@10": float(best_score), "best_epoch": best_epoch,
        "validation_curve": curve, "train_loss_per_epoch": epoch_losses,
        "train_loss_per_batch": [loss / n_batches for loss in epoch_losses],
        "epochs": len(epoch_seconds), "seconds_per_epoch": sum(epoch_seconds) / max(len(epoch_seconds), 1),
        "train_seconds": sum(epoch_seconds),
        "inference_seconds": inference_seconds, "test_users": int(test_data.sample_size),
        "peak_memory_mib": peak, "peak_memory_kind": peak_kind,
        "n_items": int(dataset.item_num), "n_users": int(dataset.user_num),
        "train_sequences": int(len(train_data._dataset)),
        "parameters": int(sum(p.numel() for p in recommender.parameters())),
        "device": str(device), "torch_threads": torch.get_num_threads(),
        "config": {key: config[key] for key in ("hidden_size", "inner_size", "n_layers", "n_heads",
                                                 "MAX_ITEM_LIST_LENGTH", "train_batch_size", "eval_batch_size",
                                                 "learning_rate", "weight_decay", "epochs", "eval_step",
                                                 "stopping_step", "seed", "valid_metric", "item_init_std",
                                                 "diffusion_steps", "cross_attention", "offset_noise_scale",
                                                 "loss_type", "train_neg_sample_args")
                   if key in config.final_config_dict},
        "worker_wall_seconds": time.perf_counter() - start_wall,
    }


def throughput_worker(spec):
    """Training sequences / s and full-sort evaluation users / s at the model's configured sizes."""
    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    config, model_class = build(spec["model"], spec["dataset"], {"state": "WARNING", **spec["overrides"]})
    device = config["device"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, test_data = data_preparation(config, create_dataset(config))
    recommender = model_class(config, train_data._dataset).to(device)
    optimizer = torch.optim.Adam(recommender.parameters(), lr=config["learning_rate"],
                                 weight_decay=config["weight_decay"])
    warmup, timed = spec["warmup_batches"], spec["train_batches"]

    recommender.train()
    sequences, step_seconds, loop_seconds, losses = 0, 0.0, 0.0, []
    iterator = iter(train_data)
    for index in range(warmup + timed):
        fetch_start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:  # fewer batches than asked (a subsample): start another pass
            iterator = iter(train_data)
            batch = next(iterator)
        batch = batch.to(device)
        _synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = recommender.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        _synchronize(device)
        end = time.perf_counter()
        losses.append(float(loss.detach()))
        if index >= warmup:
            sequences += len(batch)
            step_seconds += end - start
            loop_seconds += end - fetch_start

    recommender.eval()
    users, eval_seconds = 0, 0.0
    eval_warmup, eval_timed = 1, spec["eval_batches"]
    eval_iterator = iter(test_data)
    with torch.no_grad():
        for index in range(eval_warmup + eval_timed):
            try:
                interaction = next(eval_iterator)[0]
            except StopIteration:  # fewer test batches than asked (a subsample): start another pass
                eval_iterator = iter(test_data)
                interaction = next(eval_iterator)[0]
            interaction = interaction.to(device)
            _synchronize(device)
            start = time.perf_counter()
            scores = recommender.full_sort_predict(interaction)
            _synchronize(device)
            if index >= eval_warmup:
                users += len(interaction)
                eval_seconds += time.perf_counter() - start
    assert scores.shape[-1] == test_data._dataset.item_num
    peak, peak_kind = peak_memory_mib(device.type)
    steps = config["ddpm_steps"] if config["sampler"] == "ddpm" else config["ddim_steps"]
    return {
        "model": spec["model"], "status": "ok", "device": str(device), "torch_threads": torch.get_num_threads(),
        "sizes": {key: config[key] for key in ("hidden_size", "inner_size", "n_layers", "n_heads",
                                                "MAX_ITEM_LIST_LENGTH", "train_batch_size", "eval_batch_size",
                                                "diffusion_steps", "beta_schedule", "sampler")
                  if key in config.final_config_dict},
        "reverse_steps": steps or config["diffusion_steps"],
        "n_items": int(test_data._dataset.item_num), "train_sequences": int(len(train_data._dataset)),
        "warmup_batches": warmup, "timed_train_batches": timed, "timed_train_sequences": sequences,
        "train_step_seconds": step_seconds, "train_loop_seconds": loop_seconds,
        "train_sequences_per_second": sequences / step_seconds if step_seconds else None,
        "train_sequences_per_second_incl_loading": sequences / loop_seconds if loop_seconds else None,
        "train_losses": losses,
        "timed_eval_batches": eval_timed, "timed_eval_users": users, "eval_seconds": eval_seconds,
        "eval_users_per_second": users / eval_seconds if eval_seconds else None,
        "peak_memory_mib": peak, "peak_memory_kind": peak_kind,
    }


def worker_main(spec_path, result_path):
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    os.makedirs(spec["run_dir"], exist_ok=True)
    os.chdir(spec["run_dir"])  # RecBole writes ./log and ./log_tensorboard here
    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    try:
        record = (throughput_worker if spec["mode"] == "throughput" else accuracy_worker)(spec)
    except Exception as error:  # noqa: BLE001  (recorded; the benchmark goes on with the next model)
        import traceback

        record = {"model": spec["model"], "status": "failed", "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc()}
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, default=str)


# ------------------------------------------------------------------------------------------ orchestration


def run_in_subprocess(spec, run_dir):
    """One model in a fresh Python process; its console output goes to ``run_dir/console.log``."""
    os.makedirs(run_dir, exist_ok=True)
    spec = {**spec, "run_dir": run_dir}
    spec_path, result_path = os.path.join(run_dir, "spec.json"), os.path.join(run_dir, "result.json")
    with open(spec_path, "w", encoding="utf-8") as handle:
        json.dump(spec, handle, indent=1)
    if os.path.exists(result_path):
        os.remove(result_path)
    start = time.perf_counter()
    with open(os.path.join(run_dir, "console.log"), "w", encoding="utf-8") as console:
        env = dict(os.environ)
        if spec.get("threads"):
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec["threads"])
        process = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", spec_path, result_path],
                                 stdout=console, stderr=subprocess.STDOUT, cwd=run_dir, env=env)
    wall = time.perf_counter() - start
    if os.path.isfile(result_path):
        with open(result_path, encoding="utf-8") as handle:
            record = json.load(handle)
    else:
        record = {"model": spec["model"], "status": "failed",
                  "error": f"worker exited with code {process.returncode} (see {run_dir}/console.log)"}
    record["wall_seconds"] = wall
    return record


def fmt(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}f}"


def accuracy_table(records):
    lines = ["| model | HR@5 | HR@10 | HR@20 | NDCG@5 | NDCG@10 | NDCG@20 | epochs run (best) | train s / epoch "
             "| test inference s (users) | peak memory MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | failed: {r['error']} |" + " |" * 9)
            continue
        metrics = " | ".join(fmt(r["test"][m]) for m in METRICS)
        lines.append(f"| {r['model']} | {metrics} | {r['epochs']} ({r['best_epoch']}) | "
                     f"{r['seconds_per_epoch']:.1f} | {r['inference_seconds']:.1f} ({r['test_users']}) | "
                     f"{r['peak_memory_mib']:.0f} |")
    return "\n".join(lines)


def throughput_table(records):
    lines = ["| model | sizes (d / blocks / heads / L / batch / T) | train sequences / s (incl. loading) "
             "| eval users / s (full sort, reverse steps) | peak memory MiB |", "|---|---|---|---|---|"]
    for r in records:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | failed: {r['error']} | | | |")
            continue
        s = r["sizes"]
        sizes = (f"{s['hidden_size']} / {s['n_layers']} / {s['n_heads']} / {s['MAX_ITEM_LIST_LENGTH']} / "
                 f"{s['train_batch_size']} / {s.get('diffusion_steps', '-')}")
        lines.append(f"| {r['model']} | {sizes} | {r['train_sequences_per_second']:.0f} "
                     f"({r['train_sequences_per_second_incl_loading']:.0f}); {r['timed_train_sequences']} seqs "
                     f"| {r['eval_users_per_second']:.1f} ({r['reverse_steps']} steps); {r['timed_eval_users']} "
                     f"users | {r['peak_memory_mib']:.0f} |")
    return "\n".join(lines)


def validation_lines(records):
    lines = []
    for r in records:
        if r.get("status") == "ok" and r.get("validation_curve") is not None:
            curve = ", ".join(f"{e}:{s:.4f}" for e, s in r["validation_curve"])
            loss = ", ".join(f"{x:.3f}" for x in r["train_loss_per_batch"])
            lines.append(f"- {r['model']}: valid NDCG@10 by epoch {curve}; mean train loss per batch {loss}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     epilog="Any other --key=value is passed to every model's RecBole config.")
    parser.add_argument("--models", default=None,
                        help=f"comma-separated (default {','.join(DEFAULT_MODELS)}; --throughput: DiffuRec)")
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--data_path", default=os.path.join(REPO, "..", "shared", "data"),
                        help="folder holding <dataset>/<dataset>.inter (default ../shared/data beside the repo)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    for flag, (key, kind) in SIZE_FLAGS.items():
        parser.add_argument(f"--{flag}", type=kind, default=None, help=f"RecBole {key} for every model")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per model process (default: torch's own choice)")
    parser.add_argument("--users", type=int, default=None,
                        help="subsample: keep the first N users (written to a temp folder as a .inter file)")
    parser.add_argument("--output", default=None, help="results file (.json or .md; the other is written beside it)")
    parser.add_argument("--workdir", default=None, help="logs and checkpoints (default: beside --output)")
    parser.add_argument("--keep_checkpoints", action="store_true")
    parser.add_argument("--throughput", action="store_true", help="throughput mode instead of training")
    parser.add_argument("--warmup_batches", type=int, default=2)
    parser.add_argument("--train_batches", type=int, default=20)
    parser.add_argument("--eval_batches", type=int, default=4)
    parser.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    passthrough = {}
    for item in rest:
        if not item.startswith("--") or "=" not in item:
            parser.error(f"unrecognised argument {item!r}: config overrides are written --key=value")
        key, value = item[2:].split("=", 1)
        passthrough[key] = value
    return args, passthrough


def main(argv=None):
    args, passthrough = parse_args(argv)
    if args._worker:
        worker_main(*args._worker)
        return 0
    models = [m for m in (args.models or ("DiffuRec" if args.throughput else ",".join(DEFAULT_MODELS))).split(",") if m]
    sys.path.insert(0, REPO)
    from recbole_diffusion.quick_start import resolve_model

    for model in models:
        resolve_model(model)  # unknown names fail here, before anything runs

    overrides = {key: getattr(args, flag) for flag, (key, _) in SIZE_FLAGS.items() if getattr(args, flag) is not None}
    if args.hidden_size is not None and args.inner_size is None:
        overrides["inner_size"] = 4 * args.hidden_size  # keep the FFN at 4d, as every model's YAML does
    overrides.update(passthrough)
    overrides.update(device_settings(args.device))
    overrides.setdefault("show_progress", False)

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    mode = "throughput" if args.throughput else "accuracy"
    output = args.output or os.path.join(REPO, "benchmarks", "results", f"beauty-{mode}-{stamp}", "results.json")
    output = os.path.abspath(output)
    base = os.path.splitext(output)[0]
    workdir = os.path.abspath(args.workdir or base + "-work")
    os.makedirs(os.path.dirname(output), exist_ok=True)

    data_path = os.path.abspath(args.data_path)
    subsample, temp_dir = None, None
    try:
        if args.users:
            temp_dir = tempfile.mkdtemp(prefix="beauty-subsample-")
            subsample = write_subsample(data_path, args.dataset, args.users, temp_dir)
            data_path = temp_dir
            print(f"subsample: first {subsample['users']} users, {subsample['interactions']} interactions "
                  f"-> {temp_dir}", flush=True)
        overrides["data_path"] = data_path
        spec_base = {"mode": mode, "dataset": args.dataset, "overrides": overrides,
                     "keep_checkpoints": args.keep_checkpoints, "warmup_batches": args.warmup_batches,
                     "train_batches": args.train_batches, "eval_batches": args.eval_batches,
                     "threads": args.threads}
        records, start = [], time.perf_counter()
        for index, model in enumerate(models, 1):
            run_dir = os.path.join(workdir, model)
            overrides_model = {**overrides, "checkpoint_dir": os.path.join(run_dir, "checkpoints")}
            record = run_in_subprocess({**spec_base, "model": model, "overrides": overrides_model}, run_dir)
            records.append(record)
            if record["status"] != "ok":
                line = f"FAILED: {record['error']}"
            elif mode == "throughput":
                line = (f"train {record['train_sequences_per_second']:.0f} seq/s, "
                        f"eval {record['eval_users_per_second']:.1f} users/s")
            else:
                line = (f"test NDCG@10 {record['test']['ndcg@10']:.4f}, {record['epochs']} epochs, "
                        f"{record['seconds_per_epoch']:.1f} s/epoch")
            print(f"[{index}/{len(models)}] {model}: {line} ({record['wall_seconds']:.0f} s wall)", flush=True)
        total_wall = time.perf_counter() - start
    finally:
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)

    import torch

    meta = {
        "mode": mode, "dataset": args.dataset, "models": models, "command": " ".join([sys.executable] + sys.argv),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "wall_seconds": total_wall,
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "threads": args.threads, "overrides": {k: v for k, v in overrides.items() if k != "data_path"},
        "data_path": os.path.abspath(args.data_path), "subsample": subsample, "workdir": workdir,
    }
    table = throughput_table(records) if args.throughput else accuracy_table(records)
    markdown = [f"# {args.dataset}: {mode} ({meta['date_utc']})", "", f"Command: `{meta['command']}`", "",
                f"Overrides for every model: `{json.dumps(meta['overrides'])}`; torch threads: {args.threads or 'default'}; "
                f"subsample: {subsample}; "
                f"wall time {total_wall:.0f} s.", "", table, ""]
    if not args.throughput:
        markdown += ["Validation curves and training loss (mean per batch):", "", validation_lines(records), ""]
    with open(base + ".json", "w", encoding="utf-8") as handle:
        json.dump({"meta": meta, "runs": records}, handle, indent=1, default=str)
    with open(base + ".md", "w", encoding="utf-8") as handle:
        handle.write("\n".join(markdown))
    if not args.throughput:
        with open(base + ".csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["model", *METRICS, "epochs", "seconds_per_epoch", "inference_seconds", "peak_memory_mib"])
            for r in records:
                if r["status"] == "ok":
                    writer.writerow([r["model"], *(r["test"][m] for m in METRICS), r["epochs"],
                                     r["seconds_per_epoch"], r["inference_seconds"], r["peak_memory_mib"]])
    print()
    print(table)
    print(f"\nwall time {total_wall:.0f} s; results: {base}.json, {base}.md")
    return 1 if any(r["status"] != "ok" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
