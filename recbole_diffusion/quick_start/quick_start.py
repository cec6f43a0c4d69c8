"""Train and evaluate any model of this package or of RecBole, like RecBole's ``run_recbole``: the one pipeline
that the runner, ``compare``, ``tune``, ``recommend`` and the self-check go through.

:func:`run` builds the checked configuration (:mod:`recbole_diffusion.config.configurator`), then in each process
:func:`prepare_data` (load, check, split, start the log), :func:`build_trainer` (the model in this package's trainer
layer) and :func:`fit_and_test` (early stopping on validation, the best checkpoint on the test split).

RecBole's distributed keys work as in RecBole (``nproc`` processes on this machine, ``world_size``, ``offset``,
``ip``, ``port``; ``train_batch_size`` is the global batch); :func:`run` spawns the processes
(:mod:`recbole_diffusion.quick_start.launcher`), or joins the process group of an external launcher (torchrun).
Rank 0 alone writes the log and the checkpoints; :func:`run` returns rank 0's result.
"""

import logging
import os
import resource
import time
from logging import getLogger
from typing import NamedTuple

import numpy as np
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed

import recbole_diffusion.data.checks as data_checks
import recbole_diffusion.quick_start.launcher as launcher
import recbole_diffusion.trainer.checkpoint as ckpt
from recbole_diffusion.config.configurator import build_config, config_file_keys, merge_config, model_config_keys
from recbole_diffusion.data.dataloader import LengthBatchedTrainLoader
from recbole_diffusion.data.heldout_items import drop_heldout_items, heldout_items
from recbole_diffusion.evaluation.history_mask import apply_eval_history_mask
from recbole_diffusion.evaluation.metrics import heldout_test_result
from recbole_diffusion.model import MODELS
from recbole_diffusion.model.item_table import TEXT_TABLE_KEYS
from recbole_diffusion.trainer import get_trainer
from recbole_diffusion.utils import collectives
from recbole_diffusion.utils.staged_models import next_stage, pretraining_stage, saved_weights


class RunData(NamedTuple):
    """A dataset split for one run, with the counts that group metrics need (read before the split)."""

    dataset: object
    train: object
    valid: object
    test: object
    item_counts: np.ndarray   # interactions per item id over the whole file
    user_lengths: np.ndarray  # interactions per user id over the whole file
    heldout_items: np.ndarray  # item ids held out of training (holdout_items_ratio; empty when 0)


def prepare_data(config, summary=None, log_file=True):
    """Seed, load and check the dataset, split it as the configuration says, then start the log.

    The checks (:mod:`recbole_diffusion.data.checks`) run before the log file exists, so refused data leaves
    nothing behind; RecBole's messages of the loading reach the log afterwards, with the checks' counted notes.
    ``summary``: what ``check_interaction_files`` found, when it already ran (before processes were spawned).
    The evaluation loaders follow ``eval_history_mask`` (:mod:`recbole_diffusion.evaluation.history_mask`); for this
    package's models they visit users by history length and cut padding, and ``batch_by_length`` forms the training
    batches by length (:mod:`recbole_diffusion.data.dataloader`). ``log_file=False`` logs to the console only
    (inference writes no log).
    """
    end_previous_log()
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
        history_from = (train_data, valid_data)  # what users had, held-out items included
        heldout = heldout_items(config, dataset)
        if heldout.size:
            train_data, valid_data, note = drop_heldout_items(config, train_data, valid_data, heldout)
            messages.append((logging.INFO, note))
        ours = config["model"] in MODELS  # this package's models train and evaluate over real tokens
        if ours and config["batch_by_length"]:
            train_data = LengthBatchedTrainLoader(config, train_data._dataset, train_data._sampler,
                                                  shuffle=train_data.shuffle)
        valid_data, test_data, note = apply_eval_history_mask(config, train_data, valid_data, test_data,
                                                              real_tokens=ours, history_from=history_from)
        if note:
            messages.append((logging.INFO, note))
    init_log(config, log_file)
    logger = getLogger()
    logger.info(config)
    logger.info(dataset_description)
    for record in held_records:
        logger.handle(record)
    for level, message in messages:
        logger.log(level, message)
    return RunData(dataset, train_data, valid_data, test_data, item_counts, user_lengths, heldout)


_run_log_handlers = []  # the root logger's handlers that the last run in this process installed (init_log)


def end_previous_log():
    """Detach and close the log handlers of an earlier run in this process (``compare --in-process``, the
    self-check, a notebook). RecBole's ``init_logger`` goes through ``logging.basicConfig``, which does nothing
    while the root logger has handlers: a second run would write into the first run's file and open none of its
    own. Handlers that this package did not install (a notebook's, pytest's) stay."""
    root = logging.getLogger()
    for handler in _run_log_handlers:
        root.removeHandler(handler)
        handler.close()
    _run_log_handlers.clear()


def init_log(config, log_file=True):
    """RecBole's log (file and console) in a single process and on rank 0; other ranks print errors only.
    ``log_file=False``: the console alone, at the configuration's ``state`` level."""
    before = set(logging.getLogger().handlers)
    _init_log(config, log_file)
    _run_log_handlers.extend(handler for handler in logging.getLogger().handlers if handler not in before)


def _init_log(config, log_file):
    if collectives.is_rank_zero() and log_file:
        init_logger(config)
        return
    level = logging.ERROR if not collectives.is_rank_zero() else getattr(logging, str(config["state"]).upper(),
                                                                         logging.INFO)
    prefix = f"rank {collectives.rank()}: " if not collectives.is_rank_zero() else ""
    console = logging.StreamHandler()
    console.setLevel(level)
    console.setFormatter(logging.Formatter(f"{prefix}%(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[console])


def build_trainer(config, model_class, train_data):
    """The model, seeded and on ``config['device']``, inside this package's trainer layer.

    The trainer records the training data's fingerprint in every checkpoint it writes. In a distributed run
    each process has its own seed (training noise differs by rank); the model starts from rank 0's weights.
    """
    init_seed(config["seed"] + collectives.rank(), config["reproducibility"])
    recommender = model_class(config, train_data._dataset).to(config["device"])
    getLogger().info(recommender)
    trainer = get_trainer(config, recommender)
    trainer.dataset_fingerprint = ckpt.dataset_fingerprint(train_data._dataset)
    return trainer


def resume_file(config):
    """The "last" checkpoint a ``resume: True`` run continues from (``None``: start anew); see
    :func:`recbole_diffusion.trainer.checkpoint.resumable_checkpoint`. Ask it once the data and the model are built:
    RecBole's data transforms and some models add keys to the configuration (BERT4Rec's ``MASK_ITEM_SEQ``, ...),
    and the trainer names its checkpoint by the configuration it sees."""
    if not config["resume"]:
        return None
    return ckpt.resumable_checkpoint(ckpt.plain_config(config), config["checkpoint_dir"])


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


def _heldout_result(trainer, data):
    """The last test's metrics over the users whose target is held out (``holdout_items_ratio``), logged; ``None``
    when no item is held out."""
    if not len(data.heldout_items):
        return None
    ranks, targets, _ = trainer.collected_target_ranks()
    result = heldout_test_result(ranks, targets, data.heldout_items, trainer.config["topk"])
    getLogger().info(f"test result, users whose target is held out of training: {result}")
    return result


def fit_and_test(trainer, data, saved=True, resume_from=None, epoch_callback=None):
    """Train with early stopping on validation, then evaluate the best checkpoint on the test split.

    ``resume_from``: a "last" checkpoint to continue (exactly: same batches, same noise, same metrics).
    ``epoch_callback(epoch, valid_score)``: called after each validation (RecBole's ``callback_fn``); an exception
    it raises ends training and propagates (the tuner's pruning).
    Returns RecBole's result dict (metrics as plain floats) plus ``saved_model_file``, ``last_checkpoint_file``,
    ``best_epoch``, ``epochs_trained`` (in this process), ``resumed_from``, ``log_file``, ``test_seconds`` and the
    peak memory (``peak_memory_mb``: the CUDA allocator's peak since training began on a GPU, the process's peak
    RSS on a CPU, as ``peak_memory_kind`` says); the trainer keeps the per-epoch records and the test users' target
    ranks (:class:`recbole_diffusion.trainer.trainer.PluginTrainerMixin`).
    """
    config, logger = trainer.config, getLogger()
    device = torch.device(config["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _resume(trainer, resume_from)
    best_valid_score, best_valid_result = trainer.fit(
        data.train, data.valid, saved=saved, show_progress=config["show_progress"], callback_fn=epoch_callback
    )
    trainer.collect_target_ranks = True
    start = time.perf_counter()
    test_result = trainer.evaluate(data.test, load_best_model=saved, show_progress=config["show_progress"])
    test_seconds = time.perf_counter() - start
    trainer.collect_target_ranks = False
    logger.info(f"best valid : {ckpt.plain(best_valid_result)}")
    logger.info(f"test result: {ckpt.plain(test_result)}")
    heldout_result = _heldout_result(trainer, data)
    on_cuda = device.type == "cuda"
    peak = (torch.cuda.max_memory_allocated(device) if on_cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "best_valid_score": float(best_valid_score),
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": ckpt.plain(best_valid_result),
        "test_result": ckpt.plain(test_result),
        **({"test_result_heldout_items": heldout_result} if heldout_result is not None else {}),
        "best_epoch": best_epoch(trainer),
        "epochs_trained": len(trainer.epoch_seconds),
        "resumed_from": resume_from,
        "saved_model_file": trainer.saved_model_file if saved else None,
        "last_checkpoint_file": trainer.last_checkpoint_file if saved and trainer.checkpoint_every else None,
        "log_file": _log_file(),
        "test_seconds": test_seconds,
        "peak_memory_mb": peak / 2 ** 20,
        "peak_memory_kind": "cuda max_memory_allocated" if on_cuda else "process peak RSS",
    }


def _resume(trainer, resume_from):
    """Continue from ``resume_from``; under ``resume: True`` without one, say why training starts at epoch 0."""
    config, logger = trainer.config, getLogger()
    if resume_from:
        trainer.resume_checkpoint(resume_from)
    elif config["resume"]:
        other = ckpt.other_configuration_note(ckpt.plain_config(config), config["checkpoint_dir"])
        if other is None:
            logger.info("resume: no checkpoint of this configuration yet, training starts at epoch 0")
        else:
            logger.warning(other)


def pretrain(trainer, data, resume_from=None):
    """A RecBole model's pretraining stage (:func:`~recbole_diffusion.utils.staged_models.pretraining_stage`):
    RecBole's ``PretrainTrainer`` trains ``pretrain_epochs`` epochs and saves the weights every ``save_step``; there
    is nothing to test. Returns ``train_stage``, ``pretrained_model_file`` (the last weights it saves, also when a
    resumed stage had nothing left to train), ``next_train_stage`` (the stage that loads them through
    ``pre_model_path``), ``epochs_trained``, ``resumed_from``, ``last_checkpoint_file`` and ``log_file``."""
    config = trainer.config
    _resume(trainer, resume_from)
    trainer.fit(data.train, show_progress=config["show_progress"])
    stage, weights = pretraining_stage(config), saved_weights(config)[-1]
    getLogger().info(f"pretrained weights (train_stage {stage}): {weights}")
    return {"train_stage": stage, "pretrained_model_file": weights,
            "next_train_stage": next_stage(config), "epochs_trained": len(trainer.epoch_seconds),
            "resumed_from": resume_from,
            "last_checkpoint_file": trainer.last_checkpoint_file if trainer.checkpoint_every else None,
            "log_file": _log_file()}


def transfer_and_test(trainer, data, path):
    """Zero-shot on another dataset (``transfer_from``): the checkpoint's weights, all but its item table, which is
    this dataset's (built from its text when the model was), evaluated on this dataset's validation and test splits
    without training. Returns :func:`fit_and_test`'s keys that apply (no checkpoint is written) and
    ``transfer_from``."""
    config, logger = trainer.config, getLogger()
    checkpoint = ckpt.load_checkpoint(path, map_location=trainer.device,
                                      trust_pickled=bool(config["trust_pickled_checkpoint"]))
    state = {key: value for key, value in checkpoint["state_dict"].items() if key not in TEXT_TABLE_KEYS}
    own = trainer.model.state_dict()
    differing = sorted(set(state) ^ (set(own) - set(TEXT_TABLE_KEYS)))
    differing += sorted(key for key in state if key in own and state[key].shape != own[key].shape)
    saved_width = next(checkpoint["state_dict"][key] for key in TEXT_TABLE_KEYS
                       if key in checkpoint["state_dict"]).shape[1]
    if saved_width != trainer.model.hidden_size:
        raise ValueError(f"transfer_from: {path} was trained on text vectors {saved_width} wide, this dataset's are "
                         f"{trainer.model.hidden_size} wide (the width of a text table is the model's): give vectors of "
                         "the same encoder or width")
    if differing:
        raise ValueError(f"transfer_from: {path} holds another architecture than this configuration builds "
                         f"(trained on {checkpoint['config'].get('dataset')}; differing: {', '.join(differing[:5])}); "
                         "give the training's sizes")
    changed = [f"{key} ({checkpoint['config'][key]!r} -> {config[key]!r})" for key in model_config_keys(config["model"])
               if key in checkpoint["config"] and checkpoint["config"][key] != config[key]]
    if changed:
        logger.warning(f"transfer_from: model keys differ from the checkpoint's training: {', '.join(changed)}; this "
                       "run uses its own values (a different T or schedule makes the trained denoiser meaningless)")
    if config["text_whitening"] == "pca":
        logger.warning("transfer_from with text_whitening pca (the authors' whitening): this dataset's table is "
                       "whitened in its own eigenvector axes, which are unrelated to those the model was trained in, "
                       "so the network reads its items in a rotated space; train and transfer with text_whitening zca "
                       "to keep the encoder's axes (recbole_diffusion/model/item_table.py)")
    trainer.model.load_state_dict(state, strict=False)
    logger.info(f"transfer_from {path} (trained on {checkpoint['config'].get('dataset')}): every weight but the item "
                f"table, which is {config['dataset']}'s; no training")
    show = config["show_progress"]
    valid_result = trainer.evaluate(data.valid, load_best_model=False, show_progress=show)
    trainer.collect_target_ranks = True
    start = time.perf_counter()
    test_result = trainer.evaluate(data.test, load_best_model=False, show_progress=show)
    test_seconds = time.perf_counter() - start
    trainer.collect_target_ranks = False
    logger.info(f"valid result: {ckpt.plain(valid_result)}")
    logger.info(f"test result: {ckpt.plain(test_result)}")
    heldout_result = _heldout_result(trainer, data)
    return {**({"test_result_heldout_items": heldout_result} if heldout_result is not None else {}),
            "transfer_from": path, "trained_on": checkpoint["config"].get("dataset"),
            "best_valid_score": float(valid_result[config["valid_metric"].lower()]),
            "valid_score_bigger": config["valid_metric_bigger"], "best_valid_result": ckpt.plain(valid_result),
            "test_result": ckpt.plain(test_result), "epochs_trained": 0, "log_file": _log_file(),
            "test_seconds": test_seconds}


def run(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, epoch_callback=None,
        report=None):
    """Train ``model`` on ``dataset`` and evaluate it on the test split; returns RecBole's result dict.

    Keys: ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result`` (plain floats),
    ``best_epoch``, ``epochs_trained``, ``saved_model_file`` (the checkpoint of the best epoch, when ``saved``),
    ``last_checkpoint_file`` (what ``resume: True`` continues from), ``log_file``, ``test_seconds`` and the peak
    memory (see :func:`fit_and_test`). With ``resume: True`` in the configuration a killed run continues where its
    last checkpoint stopped. ``epoch_callback(epoch, valid_score)`` runs after each validation (single-process runs
    only). ``report(config, trainer, data, result)``, a module-level function, replaces the result by what it
    returns (JSON-plain in a distributed run): what ``compare`` records of a run, computed where the trainer lives.

    ``nproc`` > 1 (or ``world_size`` > 1) spawns the processes after every check passed and returns rank 0's
    result here. Started by torchrun or a scheduler (``RANK`` / ``WORLD_SIZE`` set), this process is one rank
    and every rank returns rank 0's result.
    """
    external = launcher.launcher_keys()
    if external:
        config, model_class = build_config(model, dataset, config_file_list, {**(config_dict or {}), **external})
        finished = False
        try:
            result = train_in_process(config, model_class, saved, report=report)[1]
            finished = True
            return result
        finally:
            collectives.leave_group(finished)
    config, model_class = build_config(model, dataset, config_file_list, config_dict)
    launch = launcher.plan_launch(config, given_keys=set(config_dict or {}) | config_file_keys(config_file_list))
    if launch is None:
        return train_in_process(config, model_class, saved, epoch_callback, report)[1]
    if epoch_callback is not None:
        raise ValueError("an epoch callback (the tuner's pruning) needs a single-process run: nproc / world_size 1")
    worker_dict = spawn_settings(config, config_dict, launch)
    resume_file(config)  # reads the checkpoint folder here, so that an unreadable checkpoint fails before a spawn
    summary = data_checks.check_interaction_files(config)
    return launcher.spawn(_spawned_rank, launch.nproc, (model, dataset, config_file_list, worker_dict, saved,
                                                         summary, report), offset=launch.offset)


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


def run_rank(local_rank, model, dataset, config_file_list, config_dict, saved=True, summary=None, report=None):
    """One spawned process of a distributed run (see :func:`rank_config`): trains its share and evaluates;
    returns ``(trainer, rank 0's result)``."""
    config, model_class = rank_config(local_rank, model, dataset, config_file_list, config_dict)
    return train_in_process(config, model_class, saved, summary=summary, report=report)


def _spawned_rank(local_rank, *args):
    return run_rank(local_rank, *args)[1]


def train_in_process(config, model_class, saved, epoch_callback=None, report=None, summary=None):
    """This process's part of a run, alone or as one rank: rank 0 decides what to resume from, every process
    trains and tests; returns ``(trainer, rank 0's result or report)``."""
    data = prepare_data(config, summary)
    trainer = build_trainer(config, model_class, data.train)
    resume_from = collectives.broadcast_object(resume_file(config) if collectives.is_rank_zero() else None)
    if config["transfer_from"]:
        result = transfer_and_test(trainer, data, config["transfer_from"])
    elif pretraining_stage(config):
        result = pretrain(trainer, data, resume_from)
    else:
        result = fit_and_test(trainer, data, saved=saved, resume_from=resume_from, epoch_callback=epoch_callback)
    if report is not None:
        result = report(config, trainer, data, result)
    return trainer, collectives.broadcast_object(result)
