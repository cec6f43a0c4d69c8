"""Train and evaluate any model of this package or of RecBole, like RecBole's ``run_recbole``.

Configuration is merged in RecBole's order, lowest first: RecBole's defaults, this package's
``properties/overall.yaml`` (the shared evaluation protocol), ``properties/model/<Model>.yaml``,
``properties/dataset/<dataset>.yaml``, the user's config files, then ``config_dict`` / ``--key=value``.
Everything is checked (config files, key values, the interaction file line by line, the loaded dataset and its
split) before a log file or checkpoint is written.

RecBole's distributed keys work as in RecBole (``nproc`` processes on this machine, ``world_size``, ``offset``,
``ip``, ``port``; ``train_batch_size`` is the global batch); :func:`run` spawns the processes, or joins the
process group of an external launcher (torchrun), see :mod:`recbole_diffusion.distributed`. Rank 0 alone writes
the log and the checkpoints; :func:`run` returns rank 0's result.
"""

import argparse
import difflib
import importlib
import logging
import os
import re
import signal
import socket
import sys
import time
from importlib import resources
from logging import getLogger
from typing import NamedTuple
from urllib.parse import urlparse

import numpy as np
import yaml

from recbole_diffusion import checkpoint, compat, distributed

compat.apply()

from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402
from recbole.utils import argument_list  # noqa: E402

from recbole_diffusion.model import MODELS  # noqa: E402
from recbole_diffusion.trainer import TrainingPreempted, get_trainer  # noqa: E402
from recbole_diffusion import data_checks  # noqa: E402
from recbole_diffusion.eval_policy import apply_eval_history_mask  # noqa: E402
from recbole_diffusion.validation import check_config_file, check_model_config, inter_file_path  # noqa: E402

DEFAULT_MODEL = "DiffuRec"
DEFAULT_DATASET = "ml-100k"
# Sizes of the no-argument demo: small enough to finish in minutes on two CPU cores.
DEMO_OVERRIDES = {"epochs": 3, "hidden_size": 64, "inner_size": 256, "n_layers": 2, "MAX_ITEM_LIST_LENGTH": 20,
                  "train_batch_size": 256, "eval_batch_size": 1024}
DATA_ENV_VAR = "RECBOLE_DIFFUSION_DATA"
RECBOLE_SUBPACKAGES = ("general_recommender", "sequential_recommender", "context_aware_recommender",
                       "knowledge_aware_recommender")
# Keys RecBole reads without declaring them in a YAML file.
RECBOLE_RUNTIME_KEYS = {"model", "dataset", "config_files", "nproc", "world_size", "offset", "ip", "port",
                        "local_rank", "gpu_id", "use_gpu", "benchmark_filename", "wandb_project", "log_wandb",
                        "enable_amp", "enable_scaler", "transform", "numerical_features", "discretization",
                        "train_neg_sample_args", "valid_neg_sample_args", "test_neg_sample_args", "ddp_backend"}


def properties_file(*parts):
    """Path of a YAML file shipped in ``properties/`` (works for editable and regular installs)."""
    return str(resources.files("recbole_diffusion.properties").joinpath(*parts))


def _recbole_properties(*parts):
    import recbole

    return os.path.join(os.path.dirname(recbole.__file__), "properties", *parts)


def recbole_model_names():
    """Class names of RecBole's built-in models, read from its model subpackages."""
    names = []
    for subpackage in RECBOLE_SUBPACKAGES:
        module = importlib.import_module(f"recbole.model.{subpackage}")
        names += [name for name in dir(module) if isinstance(getattr(module, name), type)]
    return sorted(set(names))


def model_variants():
    """Variant names, from ``properties/model/variants/<Model>-<variant>.yaml`` (e.g. ``DiffuRecSys-V1``)."""
    folder = resources.files("recbole_diffusion.properties").joinpath("model", "variants")
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def get_model_class(name):
    """Look ``name`` up among this package's models first, then RecBole's; list both when it is unknown."""
    if name in MODELS:
        return MODELS[name]
    from recbole.utils import get_model

    try:
        return get_model(name)
    except (ValueError, AttributeError, ImportError):  # exlib models import xgboost and lightgbm
        pass
    raise ValueError(
        f"model={name!r} is not a model of recbole_diffusion ({', '.join(sorted(MODELS))}; variants: "
        f"{', '.join(model_variants())}) nor of RecBole ({', '.join(recbole_model_names())})."
    )


def resolve_model(name):
    """``(model class, model name, variant YAML or None)`` for a model name or a variant name."""
    if name in model_variants():
        base = name.split("-")[0]
        return get_model_class(base), base, properties_file("model", "variants", f"{name}.yaml")
    return get_model_class(name), name, None


class PluginConfig(Config):
    """RecBole's ``Config`` without its own reading of ``sys.argv`` (overrides arrive as ``config_dict``), and
    with this package's process-group set-up where RecBole's asserts a GPU per process and joins with NCCL."""

    def _load_cmd_line(self):
        return dict()

    def _init_device(self):
        if "local_rank" in self.final_config_dict:
            distributed.join_group(self.final_config_dict)
        else:
            super()._init_device()


def _read_yaml_keys(path):
    if not os.path.isfile(path):
        return set()
    with open(path, encoding="utf-8") as handle:
        return set((yaml.safe_load(handle) or {}).keys())


def config_file_values(path):
    """A user's YAML file as RecBole's ``Config`` reads it (its loader makes ``1e-3`` a float, not a string).

    RecBole's loader builder and converter below use nothing of the instance they are methods of."""
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle.read(), Loader=Config._build_yaml_loader(None)) or {}


def override_values(config_dict):
    """``--key=value`` strings as RecBole's ``Config`` converts them (numbers, lists, dicts, booleans)."""
    return Config._convert_config_dict(None, dict(config_dict))


def known_config_keys(model_name, dataset):
    """Every key that RecBole's defaults, RecBole's or this package's model and dataset YAMLs define."""
    keys = set(RECBOLE_RUNTIME_KEYS)
    for names in (argument_list.general_arguments, argument_list.training_arguments,
                  argument_list.evaluation_arguments, argument_list.dataset_arguments):
        keys |= set(names)
    for path in (_recbole_properties("overall.yaml"), _recbole_properties("dataset", "sample.yaml"),
                 _recbole_properties("dataset", f"{dataset}.yaml"), _recbole_properties("model", f"{model_name}.yaml"),
                 properties_file("overall.yaml"), properties_file("model", f"{model_name}.yaml"),
                 properties_file("dataset", f"{dataset}.yaml")):
        keys |= _read_yaml_keys(path)
    return keys


def warn_unknown_keys(user_keys, model_name, dataset):
    """Warn about keys no YAML or RecBole default defines: a typo would otherwise be ignored silently."""
    known = known_config_keys(model_name, dataset)
    messages = []
    for key in sorted(set(user_keys) - known):
        close = difflib.get_close_matches(key, known, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        messages.append(f"config key {key!r} is not used by {model_name} or RecBole{hint}")
    for message in messages:
        print(f"WARNING: {message}", file=sys.stderr)
    return messages


def _url_reachable(url, timeout=3.0):
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_data_path(config, data_path_given):
    """Point ``config['data_path']`` at the dataset's folder, or fail fast with where it was looked for.

    Without an explicit ``data_path`` the folders tried are RecBole's default (``dataset/<name>``),
    ``$RECBOLE_DIFFUSION_DATA/<name>``, ``../shared/data/<name>`` beside this checkout (the project's
    benchmark data), and for ml-100k the copy inside the installed ``recbole`` package.
    """
    import recbole

    dataset = config["dataset"]
    if os.path.isfile(inter_file_path(config)) or config["benchmark_filename"]:
        return
    tried = [config["data_path"]]
    if not data_path_given:
        checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        candidates = [os.path.join(os.environ[DATA_ENV_VAR], dataset)] if os.environ.get(DATA_ENV_VAR) else []
        candidates.append(os.path.join(checkout, "..", "shared", "data", dataset))
        candidates.append(os.path.join(os.path.dirname(recbole.__file__), "dataset_example", dataset))
        for folder in candidates:
            if os.path.isfile(os.path.join(folder, f"{dataset}.inter")):
                config["data_path"] = os.path.normpath(folder)
                return
            tried.append(os.path.normpath(folder))
    with open(_recbole_properties("dataset", "url.yaml"), encoding="utf-8") as handle:
        url = (yaml.safe_load(handle) or {}).get(dataset)
    ours = os.path.isfile(properties_file("dataset", f"{dataset}.yaml"))
    if url and not ours and _url_reachable(url):
        return  # RecBole downloads it into data_path
    reason = ("RecBole's copy under that name is a different preprocessing, so it is not downloaded" if ours
              else f"RecBole's download address {url} cannot be reached" if url
              else "RecBole knows no download for that name")
    raise FileNotFoundError(
        f"dataset {dataset!r} not found: looked for {dataset}.inter in {', '.join(tried)}; {reason}. "
        f"Pass --data_path=<folder that holds {dataset}/{dataset}.inter> (for this project's benchmark sets: "
        f"--data_path=../shared/data) or set {DATA_ENV_VAR}."
    )


def merge_config(model=None, dataset=None, config_file_list=None, config_dict=None):
    """The configuration merged in this package's order, unchecked: ``(config, model_class, model name, keys the
    user set)``. With ``local_rank`` in ``config_dict`` this process joins the distributed run's process group."""
    dataset = dataset or DEFAULT_DATASET
    model_class, model, variant = resolve_model(model or DEFAULT_MODEL)
    user_files = list(config_file_list or [])
    config_dict = dict(config_dict or {})
    user_keys = set(config_dict)
    for path in user_files:
        check_config_file(path)
        user_keys |= _read_yaml_keys(path)
    files = [properties_file("overall.yaml")]
    files += [path for path in (properties_file("model", f"{model}.yaml"), variant,
                                properties_file("dataset", f"{dataset}.yaml")) if path and os.path.isfile(path)]
    try:
        config = PluginConfig(model=model_class, dataset=dataset, config_file_list=files + user_files,
                              config_dict=config_dict)
    except (TypeError, AttributeError) as error:  # RecBole's Config on a value of the wrong type, e.g. topk
        raise ValueError(f"the configuration has a value of the wrong type: {error}") from None
    return config, model_class, model, user_keys


def build_config(model=None, dataset=None, config_file_list=None, config_dict=None):
    """Merge the configuration, then check it and the interaction file before anything is written.

    ``model`` may name a variant (``DiffuRecSys-V1``): its YAML applies right after the model's. A refusal
    raises ``ValueError`` or ``FileNotFoundError`` naming the file and line or the key, and what to do.

    Returns ``(config, model_class)``.
    """
    config, model_class, model, user_keys = merge_config(model, dataset, config_file_list, config_dict)
    warn_unknown_keys(user_keys, model, config["dataset"])
    check_model_config(model, config)
    data_checks.check_inter_path_is_file(config)
    resolve_data_path(config, data_path_given="data_path" in user_keys)
    config["data_path"] = os.path.abspath(config["data_path"])  # stays valid if the caller changes directory
    data_checks.check_interaction_files(config)
    return config, model_class


class RunData(NamedTuple):
    """A dataset split for one run, with the counts that group metrics need (read before the split)."""

    dataset: object
    train: object
    valid: object
    test: object
    item_counts: np.ndarray   # interactions per item id over the whole file
    user_lengths: np.ndarray  # interactions per user id over the whole file


def prepare_data(config, summary=None):
    """Seed, load and check the dataset, split it as the configuration says, then start the log.

    The checks (:mod:`recbole_diffusion.data_checks`) run before the log file exists, so refused data leaves
    nothing behind; RecBole's messages of the loading reach the log afterwards, with the checks' counted notes.
    ``summary``: what ``check_interaction_files`` found, when it already ran (before processes were spawned).
    The evaluation loaders follow ``eval_history_mask`` (:mod:`recbole_diffusion.eval_policy`).
    """
    init_seed(config["seed"], config["reproducibility"])
    if summary is None:
        summary = data_checks.check_interaction_files(config)
    with data_checks.held_log_records() as held_records:
        dataset = create_dataset(config)
        messages = data_checks.check_loaded_dataset(config, dataset, summary)
        # Described and counted before data_preparation, which turns a sequential dataset's table into prefixes.
        dataset_description = str(dataset)
        item_counts = np.bincount(np.asarray(dataset.inter_feat[dataset.iid_field]), minlength=dataset.item_num)
        user_lengths = np.bincount(np.asarray(dataset.inter_feat[dataset.uid_field]), minlength=dataset.user_num)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        messages += data_checks.check_split(config, dataset, train_data, valid_data, test_data, user_lengths)
        valid_data, test_data, note = apply_eval_history_mask(config, train_data, valid_data, test_data)
        if note:
            messages.append((logging.INFO, note))
    init_log(config)
    logger = getLogger()
    logger.info(config)
    logger.info(dataset_description)
    for record in held_records:
        logger.handle(record)
    for level, message in messages:
        logger.log(level, message)
    return RunData(dataset, train_data, valid_data, test_data, item_counts, user_lengths)


def init_log(config):
    """RecBole's log (file and console) in a single process and on rank 0; other ranks print errors only."""
    if distributed.is_rank_zero():
        init_logger(config)
        return
    console = logging.StreamHandler()
    console.setLevel(logging.ERROR)
    console.setFormatter(logging.Formatter(f"rank {distributed.rank()}: %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.ERROR, handlers=[console])


def build_trainer(config, model_class, train_data):
    """The model, seeded and on ``config['device']``, inside this package's trainer layer.

    The trainer records the training data's fingerprint in every checkpoint it writes. In a distributed run
    each process has its own seed (training noise differs by rank); the model starts from rank 0's weights.
    """
    init_seed(config["seed"] + distributed.rank(), config["reproducibility"])
    recommender = model_class(config, train_data._dataset).to(config["device"])
    getLogger().info(recommender)
    trainer = get_trainer(config, recommender)
    trainer.dataset_fingerprint = checkpoint.dataset_fingerprint(train_data._dataset)
    return trainer


def resume_file(config):
    """The "last" checkpoint a ``resume: True`` run continues from (``None``: start anew); see
    :func:`recbole_diffusion.checkpoint.resumable_checkpoint`. Checked before anything is written."""
    if not config["resume"]:
        return None
    return checkpoint.resumable_checkpoint(checkpoint.plain_config(config), config["checkpoint_dir"])


def _log_file():
    for handler in getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def best_epoch(trainer):
    """The epoch whose validation score is the best one (the first, as RecBole keeps the first best)."""
    for epoch, score in trainer.validation_curve:
        if score == trainer.best_valid_score:
            return epoch
    return None


def fit_and_test(trainer, data, saved=True, resume_from=None, epoch_callback=None):
    """Train with early stopping on validation, then evaluate the best checkpoint on the test split.

    ``resume_from``: a "last" checkpoint to continue (exactly: same batches, same noise, same metrics).
    ``epoch_callback(epoch, valid_score)``: called after each validation (RecBole's ``callback_fn``); an exception
    it raises ends training and propagates (the tuner's pruning).
    Returns RecBole's result dict (metrics as plain floats) plus ``saved_model_file``, ``last_checkpoint_file``,
    ``best_epoch``, ``epochs_trained`` (in this process), ``log_file`` and ``test_seconds``; the trainer keeps the
    per-epoch records and the test users' target ranks (:class:`recbole_diffusion.trainer.PluginTrainerMixin`).
    """
    config, logger = trainer.config, getLogger()
    if resume_from:
        trainer.resume_checkpoint(resume_from)
    elif config["resume"]:
        logger.info("resume: no checkpoint of this configuration yet, training starts at epoch 0")
    best_valid_score, best_valid_result = trainer.fit(
        data.train, data.valid, saved=saved, show_progress=config["show_progress"], callback_fn=epoch_callback
    )
    trainer.collect_target_ranks = True
    start = time.perf_counter()
    test_result = trainer.evaluate(data.test, load_best_model=saved, show_progress=config["show_progress"])
    test_seconds = time.perf_counter() - start
    trainer.collect_target_ranks = False
    logger.info(f"best valid : {checkpoint.plain(best_valid_result)}")
    logger.info(f"test result: {checkpoint.plain(test_result)}")
    return {
        "best_valid_score": float(best_valid_score),
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": checkpoint.plain(best_valid_result),
        "test_result": checkpoint.plain(test_result),
        "best_epoch": best_epoch(trainer),
        "epochs_trained": len(trainer.epoch_seconds),
        "saved_model_file": trainer.saved_model_file if saved else None,
        "last_checkpoint_file": trainer.last_checkpoint_file if saved and trainer.checkpoint_every else None,
        "log_file": _log_file(),
        "test_seconds": test_seconds,
    }


def run(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, epoch_callback=None):
    """Train ``model`` on ``dataset`` and evaluate it on the test split; returns RecBole's result dict.

    Keys: ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result`` (plain floats),
    ``best_epoch``, ``epochs_trained``, ``saved_model_file`` (the checkpoint of the best epoch, when ``saved``),
    ``last_checkpoint_file`` (what ``resume: True`` continues from), ``log_file`` and ``test_seconds``.
    With ``resume: True`` in the configuration a killed run continues where its last checkpoint stopped.
    ``epoch_callback(epoch, valid_score)`` runs after each validation (single-process runs only).

    ``nproc`` > 1 (or ``world_size`` > 1) spawns the processes after every check passed and returns rank 0's
    result here. Started by torchrun or a scheduler (``RANK`` / ``WORLD_SIZE`` set), this process is one rank
    and every rank returns rank 0's result.
    """
    external = distributed.launcher_keys()
    if external:
        config, model_class = build_config(model, dataset, config_file_list, {**(config_dict or {}), **external})
        try:
            return _train_in_group(config, model_class, saved)[1]
        finally:
            distributed.leave_group()
    config, model_class = build_config(model, dataset, config_file_list, config_dict)
    launch = distributed.plan_launch(config, given_keys=set(config_dict or {}) | _file_keys(config_file_list))
    if launch is None:
        resume_from = resume_file(config)
        data = prepare_data(config)
        trainer = build_trainer(config, model_class, data.train)
        return fit_and_test(trainer, data, saved=saved, resume_from=resume_from, epoch_callback=epoch_callback)
    if epoch_callback is not None:
        raise ValueError("an epoch callback (the tuner's pruning) needs a single-process run: nproc / world_size 1")
    worker_dict = spawn_settings(config, config_dict, launch)
    resume_file(config)
    summary = data_checks.check_interaction_files(config)
    return distributed.spawn(_spawned_rank, launch.nproc, (model, dataset, config_file_list, worker_dict, saved,
                                                           summary), offset=launch.offset)


def spawn_settings(config, config_dict, launch):
    """The ``config_dict`` each spawned process merges: the user's keys, the launch's and the data folder found
    here. ``config`` gets the launch's keys too, so that it hashes like the processes' configuration."""
    for key, value in launch.config_keys().items():
        config[key] = value
    data_folder = os.path.dirname(os.path.normpath(config["data_path"]))  # Config appends the dataset's name
    return {**(config_dict or {}), **launch.config_keys(), "data_path": data_folder}


def rank_config(local_rank, model, dataset, config_file_list, config_dict):
    """``(config, model_class)`` of one spawned process, checked already by the launching process; building it
    joins the process group."""
    config, model_class, _, _ = merge_config(model, dataset, config_file_list,
                                             {**config_dict, "local_rank": local_rank})
    config["data_path"] = os.path.abspath(config["data_path"])  # as build_config leaves it: the same hash
    return config, model_class


def _file_keys(config_file_list):
    return set().union(*(_read_yaml_keys(path) for path in config_file_list or []))


def run_rank(local_rank, model, dataset, config_file_list, config_dict, saved=True, summary=None):
    """One spawned process of a distributed run (see :func:`rank_config`): trains its share and evaluates;
    returns ``(trainer, rank 0's result)``."""
    config, model_class = rank_config(local_rank, model, dataset, config_file_list, config_dict)
    return _train_in_group(config, model_class, saved, summary)


def _spawned_rank(local_rank, *args):
    return run_rank(local_rank, *args)[1]


def _train_in_group(config, model_class, saved, summary=None):
    """Rank 0 decides what to resume from; every process trains and tests; everyone gets rank 0's result."""
    resume_from = distributed.broadcast_object(resume_file(config) if distributed.is_rank_zero() else None)
    data = prepare_data(config, summary)
    trainer = build_trainer(config, model_class, data.train)
    result = fit_and_test(trainer, data, saved=saved, resume_from=resume_from)
    return trainer, distributed.broadcast_object(result)


def key_value_overrides(parser, items):
    """RecBole keys given as ``--key=value`` or ``--key value`` (the comparison's and the tuner's form); anything
    else is refused through ``parser``."""
    overrides, index = {}, 0
    while index < len(items):
        item = items[index]
        if not item.startswith("--"):
            parser.error(f"unrecognised argument {item!r}")
        if "=" in item:
            key, value = item[2:].split("=", 1)
        elif index + 1 < len(items) and not items[index + 1].startswith("--"):
            key, value = item[2:], items[index + 1]
            index += 1
        else:
            parser.error(f"{item} needs a value")
        overrides[key] = value
        index += 1
    return overrides


def parse_args(argv=None):
    """``--model``, ``--dataset``, ``--config_files`` (several; also "a.yaml b.yaml" or a,b) and ``--key=value``."""
    parser = argparse.ArgumentParser(
        description="Train and evaluate a recommender of recbole_diffusion or RecBole.",
        epilog="Any other --key=value overrides that RecBole configuration key, e.g. --epochs=5. --resume "
               "(resume: True) continues a killed run from its last checkpoint.",
    )
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL})")
    parser.add_argument("--dataset", "-d", default=DEFAULT_DATASET, help=f"dataset name (default {DEFAULT_DATASET})")
    parser.add_argument("--config_files", nargs="*", default=[], help="YAML files, later ones win")
    args, rest = parser.parse_known_args(argv)
    overrides = {}
    for item in rest:
        if item == "--resume":
            item = "--resume=True"
        if not item.startswith("--") or "=" not in item:
            parser.error(f"unrecognised argument {item!r}: overrides are written --key=value")
        key, value = item[2:].split("=", 1)
        overrides[key] = value
    files = [path for entry in args.config_files for path in re.split(r"[,\s]+", entry) if path]
    return args.model, args.dataset, files, overrides


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    model, dataset, config_files, overrides = parse_args(argv)
    if not argv:  # only a bare command is the demo; explicit arguments get the YAML defaults
        overrides = dict(DEMO_OVERRIDES)
        print(f"No arguments: a {overrides['epochs']}-epoch {DEFAULT_MODEL} demo on {DEFAULT_DATASET} (small sizes).")
    try:
        result = run(model, dataset, config_files, overrides)
    except TrainingPreempted as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except distributed.WorkerFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from recbole_diffusion.evaluation import format_run_summary

    if not distributed.launched_externally() or int(os.environ["RANK"]) == 0:
        print(format_run_summary(result))
    return 0
