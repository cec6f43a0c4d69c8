"""PreferDiff-T on ml-100k (BENCHMARKS.md run 22): zero-shot ranking of unseen items and of an unseen dataset.

    python benchmarks/text_zero_shot.py encoder     # the encoder's time and peak memory on ml-100k's 1,682 items
    python benchmarks/text_zero_shot.py bases       # a transfer's target table against the training's axes
    python benchmarks/text_zero_shot.py heldout     # 20 % of the items held out of training; 3 seeds
    python benchmarks/text_zero_shot.py transfer    # older films -> films from 1995, zero-shot; 3 seeds
    python benchmarks/text_zero_shot.py aligned     # the zero-shot again, the target's rows in the training's axes
    python benchmarks/text_zero_shot.py report      # transfer.md from the records of stages transfer and aligned

Stage ``heldout`` is one ``compare`` of SASRec (RecBole's defaults, d 64), PreferDiff with an id table and
PreferDiff-T (text table: all-MiniLM-L6-v2's 384-d vectors of "<title> (<year>). Genres: <genres>") on ml-100k
(RecBole's copy, its times written as each user's positions in exact time order) with ``holdout_items_ratio`` 0.2
(a different draw per seed); PreferDiff (ids) runs at d 384, the text table's width, and both at FFN 384
(:data:`MODEL_CONFIG`), so the two differ in the table alone. Its ``summary.md`` has every user's metrics and the
"held-out items" table (the users whose test target no model saw in training), each with paired t-tests against
SASRec. Stage ``transfer`` cuts ml-100k into three item-disjoint datasets by release year (:data:`CUTS`;
``recbole_diffusion.data.slices.write_item_subset``, times as positions too), trains PreferDiff-T on each of the
two older ones and on their merge (``merge_datasets``: more pretraining data; ``compare``, checkpoints kept), evaluates each seed's checkpoint
on the films from 1995 with ``transfer_from`` (no training on them), and trains SASRec, Pop and PreferDiff-T
in-domain on those for reference (``compare``); its text tables are whitened with ``zca`` (:data:`TRANSFER`), since
stage ``bases`` measured that the authors' ``pca`` puts the target's table in axes unrelated to the training's.

Stage ``aligned`` was added after the zero-shot results (exploratory, not the plan's): it evaluates each source
checkpoint on the films from 1995 again, with the target's rows put through the whitening the source's table had
(fitted on the source's films) instead of whitened alone, so that the network reads them in the axes it was trained
in; a control row rebuilds the table ``transfer_from`` builds and must reproduce the zero-shot record, and a source
checkpoint transferred onto its own dataset must reproduce its in-domain test.

Stages ``heldout`` and ``transfer`` resume (``compare`` keeps finished runs; a zero-shot record is redone only when
its checkpoint or settings changed). Training is capped
at :data:`TRAINING` (early stopping on validation NDCG@10, patience stated there).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

from recbole_diffusion.data.slices import ML100K_INTER, ML100K_ITEM, write_item_subset, write_user_slice

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.join(HERE, "text-zero-shot")
SEEDS = 3
TEXT = {"item_text_fields": "['movie_title','release_year','class']",
        "item_text_template": "{movie_title} ({release_year}). Genres: {class}"}
# metric_decimal_place: RecBole rounds metrics to 4 digits, too coarse for paired tests of scores near 0.001.
TRAINING = {"epochs": 60, "eval_step": 1, "stopping_step": 5, "show_progress": False, "metric_decimal_place": 8}
# Films by release year: two sources, their merge, and the target.
CUTS = {"ml-100k-before-1990": (0, 1990), "ml-100k-1990-1994": (1990, 1995), "ml-100k-from-1995": (1995, 10000)}
TARGET = "ml-100k-from-1995"
MERGED = "ml-100k-before-1995"
SEED_OF_SELF_CHECK = 2020  # stage aligned: whose source checkpoints are transferred onto their own data
SOURCES = {"ml-100k-before-1990": {}, "ml-100k-1990-1994": {},
           MERGED: {"merge_datasets": "['ml-100k-before-1990','ml-100k-1990-1994']"}}
# PreferDiff's FFN width is its hidden size in the authors' code: 384 for both tables (PreferDiff-T's model width is
# the text table's 384 whatever hidden_size says; its inner_size must be given).
MODEL_CONFIG = {"PreferDiff": {"hidden_size": 384, "inner_size": 384}, "PreferDiff-T": {"inner_size": 384}}
# Stage transfer: text tables keep the encoder's axes (``bases``: the authors' pca gives each dataset its own); Pop,
# a general model, ranks without masking the user's earlier items, as the sequential models and the random line do.
TRANSFER = {"text_whitening": "zca", "eval_history_mask": "none"}


def data_folder(max_users):
    """The folder of the stage's datasets under ``--root``: one per ``--max_users``, so that a smoke test's slices
    are never read as the full data (``compare`` compares settings, not the rows behind a path)."""
    return "data" if max_users is None else f"data-{max_users}-users"


def release_year(row):
    """A film's release year, ``None`` where ml-100k's field is not a year (2 films)."""
    return int(row["release_year"]) if row["release_year"].isdigit() else None


def write_transfer_datasets(folder, max_users=None):
    """The item-disjoint datasets of stage ``transfer`` (the two films with no year are in none), their times
    written as each user's positions (exact time order, ties in file order: RecBole's float32 copy of ml-100k's Unix
    seconds would reorder them)."""
    for name, (low, high) in CUTS.items():
        def kept(row, low=low, high=high):
            return release_year(row) is not None and low <= release_year(row) < high

        write_item_subset(ML100K_INTER, ML100K_ITEM, name, kept, folder, max_users, positions=True)
    return folder


def compare_command(models, dataset, output, extra, data_path=None, keep_checkpoints=False, seeds=SEEDS):
    """``recbole_diffusion.compare`` for ``models`` with the stage's settings (PreferDiff's width by file)."""
    command = [sys.executable, "-m", "recbole_diffusion.compare", "--models", ",".join(models), "--dataset", dataset,
               "--seeds", str(seeds), "--output", output, "--threads", "1"]
    if keep_checkpoints:
        command.append("--keep_checkpoints")
    for model in models:
        if model in MODEL_CONFIG:
            path = os.path.join(os.path.dirname(output), f"{model}.yaml")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write("".join(f"{key}: {value}\n" for key, value in MODEL_CONFIG[model].items()))
            command += ["--model_config", f"{model}={path}"]
    settings = {**({"data_path": data_path} if data_path else {}), **TEXT, **TRAINING, **extra}
    for key, value in settings.items():
        command += [f"--{key}", str(value)]
    return command


def call(command):
    print("$ " + " ".join(command), flush=True)
    return subprocess.call(command)


def encoder_stage(root, cache_dir):
    """Seconds and peak memory of encoding ml-100k's item texts once (no cache), written to ``encoder.json``."""
    from recbole.data import create_dataset

    from recbole_diffusion.config.configurator import build_config
    from recbole_diffusion.text.encoder import TextEncoder
    from recbole_diffusion.text.item_vectors import item_texts

    config, _ = build_config("PreferDiff-T", "ml-100k", config_dict={"text_cache_dir": cache_dir, "state": "WARNING"})
    texts = item_texts(config, create_dataset(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    encoder = TextEncoder()
    loaded = time.perf_counter() - start
    vectors = encoder.encode(list(texts.values()))
    seconds = time.perf_counter() - start
    record = {"items": len(texts), "width": int(vectors.shape[1]), "load_seconds": loaded,
              "total_seconds": seconds, "items_per_second": len(texts) / (seconds - loaded),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "peak_rss_before_mb": before / 1024, "threads": int(__import__("torch").get_num_threads())}
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "encoder.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    print(record)
    return 0


def source_whitenings(vectors, floor, basis):
    """Each source's whitening (fitted on its rows in ``vectors``, by source) and the merge's joint step: the
    merge's table is each source whitened alone, stacked, then whitened once more (model/item_table.py)."""
    from recbole_diffusion.model.item_table import whitening

    steps = {source: whitening(rows, floor, basis) for source, rows in vectors.items()}
    return steps, whitening(np.vstack([steps[source](rows) for source, rows in vectors.items()]), floor, basis)


def bases_stage(root, cache_dir):
    """How far a transfer's target table is from the axes the model was trained in (``bases.json``): ml-100k's films
    from 1995 whitened alone (what ``transfer_from`` builds) against the same films put through the whitening a
    source's table had (the space the network was trained in: a single source's, or the merge's, each source alone
    and then jointly, through either source's first step), the mean cosine of a film's two rows, under the authors'
    ``pca`` and under ``zca``; the merge's two sources are compared the same way."""
    import csv

    from recbole.data import create_dataset

    from recbole_diffusion.config.configurator import build_config
    from recbole_diffusion.model.item_table import WHITENING_BASES, whiten
    from recbole_diffusion.text.item_vectors import item_vectors

    config, _ = build_config("PreferDiff-T", "ml-100k", config_dict={"text_cache_dir": cache_dir, "state": "WARNING"})
    dataset = create_dataset(config)
    found = item_vectors(config, dataset)
    with open(ML100K_ITEM, encoding="utf-8") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        years = {row["item_id:token"]: release_year({"release_year": row["release_year:token"]}) for row in rows}
    year = np.array([years.get(token) or 0 for token in dataset.field2id_token[dataset.iid_field]])
    cuts = {name: found.has_vector & (year > 0) & (low <= year) & (year < high) for name, (low, high) in CUTS.items()}
    floor = config["text_whitening_floor"]
    older = [source for source in SOURCES if source != MERGED]
    target = found.vectors[cuts[TARGET]]

    def mean_cosine(alone, in_training_axes):
        return float(np.mean(np.sum(alone * in_training_axes, axis=1)
                             / (np.linalg.norm(alone, axis=1) * np.linalg.norm(in_training_axes, axis=1))))

    record = {}
    for basis in WHITENING_BASES:
        alone = whiten(target, floor, basis)
        steps, joint = source_whitenings({source: found.vectors[cuts[source]] for source in older}, floor, basis)
        record[basis] = {
            **{f"{TARGET} under {source}'s whitening": mean_cosine(alone, steps[source](target)) for source in older},
            **{f"{TARGET} under the merge's whitening, through {source}'s step":
               mean_cosine(alone, joint(steps[source](target))) for source in older},
            f"{older[1]} under {older[0]}'s whitening": mean_cosine(
                whiten(found.vectors[cuts[older[1]]], floor, basis), steps[older[0]](found.vectors[cuts[older[1]]]))}
    record["films"] = {name: int(rows.sum()) for name, rows in cuts.items()}
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "bases.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    print(json.dumps(record, indent=2))
    return 0


def transfer_stage(root, extra, seeds, max_users):
    """Train PreferDiff-T on each source (and on their merge), evaluate every seed's checkpoint on the target, then
    train the in-domain references on the target."""
    from recbole_diffusion.quick_start.quick_start import run

    data_path = write_transfer_datasets(os.path.join(root, data_folder(max_users)), max_users)
    for source, settings in SOURCES.items():
        code = call(compare_command(["PreferDiff-T"], source, os.path.join(root, "transfer", source),
                                    {**settings, **TRANSFER, **extra}, data_path, keep_checkpoints=True, seeds=seeds))
        if code:
            return code
    zero_shot = os.path.join(root, "transfer", "zero-shot")
    os.makedirs(zero_shot, exist_ok=True)
    for source in SOURCES:
        runs = os.path.join(root, "transfer", source, "runs")
        for name in sorted(os.listdir(runs)):
            with open(os.path.join(runs, name), encoding="utf-8") as handle:
                trained = json.load(handle)
            record_path = os.path.join(zero_shot, f"{source}-{name}")
            if trained.get("status") != "ok":
                continue
            settings = {"data_path": data_path, **TEXT, **TRAINING, **MODEL_CONFIG["PreferDiff-T"], **TRANSFER,
                        **extra, "seed": trained["seed"], "transfer_from": trained["checkpoint"]}
            made_from = {"settings": settings, "checkpoint_mtime": os.path.getmtime(trained["checkpoint"])}
            if os.path.isfile(record_path):
                with open(record_path, encoding="utf-8") as handle:
                    done = json.load(handle)
                if {key: done.get(key) for key in made_from} == made_from:
                    continue  # done, from this checkpoint with these settings; anything else is redone
            result = run("PreferDiff-T", TARGET, config_dict=settings, saved=False)
            with open(record_path, "w", encoding="utf-8") as handle:
                json.dump({"source": source, "seed": trained["seed"], "source_test": trained["test"], **made_from,
                           **result}, handle, indent=2)
    # The in-domain references last: they cost the most, and the zero-shot records do not depend on them.
    return call(compare_command(["Pop", "SASRec", "PreferDiff-T"], TARGET, os.path.join(root, "transfer", "target"),
                                {**TRANSFER, **extra}, data_path, seeds=seeds))


def aligned_stage(root, extra, max_users):
    """``transfer/aligned.json``: every source checkpoint's zero-shot metrics on the target with the target's rows
    whitened alone (the control: what ``transfer_from`` builds) and put through the source's whitening (for the
    merge: its joint step after either source's own step, since a film from 1995 belongs to neither)."""
    import torch
    from recbole.data import create_dataset

    from recbole_diffusion.config.configurator import build_config
    from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data, transfer_and_test
    from recbole_diffusion.text.item_vectors import item_vectors

    data_path = write_transfer_datasets(os.path.join(root, data_folder(max_users)), max_users)
    base = {"data_path": data_path, **TEXT, **TRAINING, **MODEL_CONFIG["PreferDiff-T"], **TRANSFER, **extra}

    def table_rows(config, dataset):
        """The dataset's items that have a vector (the padding row excluded) and their vectors, as the table has."""
        found = item_vectors(config, dataset)
        rows = found.has_vector.copy()
        rows[0] = False
        return rows, found.vectors[rows].astype(np.float64)

    older = [source for source in SOURCES if source != MERGED]
    configs = {source: build_config("PreferDiff-T", source, config_dict={**base, "state": "WARNING"})[0]
               for source in older}
    vectors = {source: table_rows(config, create_dataset(config))[1] for source, config in configs.items()}
    floor, basis = configs[older[0]]["text_whitening_floor"], configs[older[0]]["text_whitening"]
    steps, joint = source_whitenings(vectors, floor, basis)
    variants = {source: {f"{source}'s whitening": steps[source]} for source in older}
    variants[MERGED] = {f"the merge's, through {source}'s step": (lambda rows, step=steps[source]: joint(step(rows)))
                        for source in older}
    start = time.perf_counter()
    record = {"settings": base, "floor": floor, "basis": basis, "runs": [], "self_transfer": []}
    for source in older:  # the pipeline's check: a checkpoint transferred onto its own data must give its own test
        with open(os.path.join(root, "transfer", source, "runs", f"PreferDiff-T-seed{SEED_OF_SELF_CHECK}.json"),
                  encoding="utf-8") as handle:
            trained = json.load(handle)
        config, model_class = build_config("PreferDiff-T", source, config_dict={
            **base, "seed": trained["seed"], "transfer_from": trained["checkpoint"]})
        data = prepare_data(config, log_file=False)
        result = transfer_and_test(build_trainer(config, model_class, data.train), data, trained["checkpoint"])
        record["self_transfer"].append({"source": source, "seed": trained["seed"], "in_domain_test": trained["test"],
                                        "transferred_test": result["test_result"]})
    for source in SOURCES:
        runs = os.path.join(root, "transfer", source, "runs")
        for name in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
            with open(os.path.join(runs, name), encoding="utf-8") as handle:
                trained = json.load(handle)
            if trained.get("status") != "ok":
                continue
            for label, step in {"whitened alone (control)": None, **variants[source]}.items():
                config, model_class = build_config("PreferDiff-T", TARGET, config_dict={
                    **base, "seed": trained["seed"], "transfer_from": trained["checkpoint"]})
                data = prepare_data(config, log_file=False)
                trainer = build_trainer(config, model_class, data.train)
                if step is not None:
                    rows, target = table_rows(config, data.dataset)
                    with torch.no_grad():
                        trainer.model.item_embedding.weight[torch.from_numpy(rows)] = torch.as_tensor(
                            step(target), dtype=torch.float32, device=trainer.model.item_embedding.weight.device)
                result = transfer_and_test(trainer, data, trained["checkpoint"])
                record["runs"].append({"source": source, "seed": trained["seed"], "target_table": label,
                                       "test_result": result["test_result"]})
                print(source, trained["seed"], label, result["test_result"], flush=True)
    record["wall_seconds"] = time.perf_counter() - start
    with open(os.path.join(root, "transfer", "aligned.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    return 0


def random_ranking(n_items, k):
    """HR@k and NDCG@k of a uniformly random full ranking of ``n_items`` items (one target per user)."""
    return k / n_items, sum(1 / np.log2(rank + 2) for rank in range(k)) / n_items


def report_stage(root, max_users=None):
    """``transfer.md``: zero-shot PreferDiff-T on the target beside the in-domain runs and a random ranking (mean ±
    std over seeds; the paired t-test, by seed, of each in-domain model's NDCG@10 against the zero-shot runs')."""
    from recbole_diffusion.compare import load_runs
    from recbole_diffusion.evaluation.statistics import paired_t_test

    zero_shot = os.path.join(root, "transfer", "zero-shot")
    records = []
    for name in sorted(os.listdir(zero_shot)):
        with open(os.path.join(zero_shot, name), encoding="utf-8") as handle:
            records.append(json.load(handle))
    target = load_runs(os.path.join(root, "transfer", "target"))
    labels = {source: source for source in SOURCES}
    labels[MERGED] = f"the merge of {' and '.join(source for source in SOURCES if source != MERGED)}"
    rows = {f"PreferDiff-T, zero-shot, trained on {labels[source]}":
            {record["seed"]: record["test_result"] for record in records if record["source"] == source}
            for source in SOURCES}
    aligned_path = os.path.join(root, "transfer", "aligned.json")
    if os.path.isfile(aligned_path):  # stage aligned's rows, after the plan's: the target's rows in the source's axes
        with open(aligned_path, encoding="utf-8") as handle:
            aligned = [run for run in json.load(handle)["runs"] if run["target_table"] != "whitened alone (control)"]
        for source in SOURCES:
            for table in sorted({run["target_table"] for run in aligned if run["source"] == source}):
                rows[f"PreferDiff-T, zero-shot, trained on {labels[source]}, the target's rows in {table} "
                     "(exploratory)"] = {run["seed"]: run["test_result"] for run in aligned
                                         if run["source"] == source and run["target_table"] == table}
    for model in ("PreferDiff-T", "SASRec", "Pop"):
        rows[f"{model}, trained on the target"] = {r["seed"]: r["test"] for r in target
                                                   if r["model"] == model and r["status"] == "ok"}
    reference = rows[f"PreferDiff-T, zero-shot, trained on {labels[MERGED]}"]
    lines = ["| model | seeds | HR@10 | NDCG@10 | NDCG@20 | p (NDCG@10 vs zero-shot from the merge) |",
             "|---|---|---|---|---|---|"]
    for label, results in rows.items():
        values = list(results.values())
        cells = [f"{np.mean([r[m] for r in values]):.4f}"
                 + (f" ± {np.std([r[m] for r in values], ddof=1):.4f}" if len(values) > 1 else "") if values else "-"
                 for m in ("hit@10", "ndcg@10", "ndcg@20")]
        shared = sorted(set(results) & set(reference))
        p_value = None if results is reference else paired_t_test([results[s]["ndcg@10"] for s in shared],
                                                                  [reference[s]["ndcg@10"] for s in shared])
        lines.append(f"| {label} | {len(values)} | " + " | ".join(cells) +
                     f" | {'-' if p_value is None else f'{p_value:.3g}'} |")
    with open(os.path.join(root, data_folder(max_users), TARGET, f"{TARGET}.inter"), encoding="utf-8") as handle:
        handle.readline()
        n_items = len({line.split("\t")[1] for line in handle})
    hit, ndcg = random_ranking(n_items, 10)
    lines.append(f"| random ranking of the {n_items} items (expected) | - | {hit:.4f} | {ndcg:.4f} | "
                 f"{random_ranking(n_items, 20)[1]:.4f} | - |")
    with open(os.path.join(root, "transfer", "transfer.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["encoder", "bases", "heldout", "transfer", "report", "aligned"])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="where the records go (default %(default)s)")
    parser.add_argument("--text_cache_dir", default=None, help="the text cache (default: the package's)")
    parser.add_argument("--seeds", type=int, default=SEEDS, help="seeds per model (default %(default)s)")
    parser.add_argument("--max_users", type=int, default=None,
                        help="only the first N users of ml-100k (a smoke test; default all)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra settings for every run (e.g. epochs=1 for a smoke test)")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.set)
    if args.text_cache_dir:
        extra["text_cache_dir"] = args.text_cache_dir
    if args.stage == "encoder":
        return encoder_stage(args.root, args.text_cache_dir or os.path.join(args.root, "encoder-cache"))
    if args.stage == "bases":
        return bases_stage(args.root, args.text_cache_dir or os.path.join(args.root, "encoder-cache"))
    if args.stage == "heldout":
        data_path = write_user_slice(ML100K_INTER, "ml-100k", args.max_users,
                                     os.path.join(args.root, data_folder(args.max_users)), positions=True)
        shutil.copy(ML100K_ITEM, os.path.join(data_path, "ml-100k", "ml-100k.item"))
        return call(compare_command(["SASRec", "PreferDiff", "PreferDiff-T"], "ml-100k",
                                    os.path.join(args.root, "heldout"), {"holdout_items_ratio": 0.2, **extra},
                                    data_path, seeds=args.seeds))
    if args.stage == "transfer":
        return transfer_stage(args.root, extra, args.seeds, args.max_users)
    if args.stage == "aligned":
        return aligned_stage(args.root, extra, args.max_users)
    return report_stage(args.root, args.max_users)


if __name__ == "__main__":
    sys.exit(main())
