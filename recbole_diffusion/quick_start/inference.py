"""Use a trained model: RecBole's ``load_data_and_model`` for this package's checkpoints (and RecBole's models).

RecBole's own ``recbole.quick_start.load_data_and_model`` unpickles the file, looks the model up among RecBole's
models only and imports ray. :func:`load_data_and_model` reads the checkpoint without running code from it
(:func:`recbole_diffusion.trainer.checkpoint.load_checkpoint`), rebuilds the run's configuration from the plain data the
checkpoint stores (:func:`config_from_checkpoint`), loads the data through the training pipeline (same filtering,
same split) and refuses data whose item or user tokens changed since training.
"""

import contextlib
import io
import os
import warnings

import recbole_diffusion.trainer.checkpoint as ckpt
from recbole_diffusion import compat
from recbole_diffusion.data.checks import inter_file_paths
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data

# Keys a loaded model may be given other values for: where the data lies, where the model runs, how it logs, how
# many users one evaluation batch holds, and a diffusion model's reverse process (SAMPLER_KEYS: what inference
# costs, not what was trained, so a checkpoint trained with the default can be served with a -fast variant's
# sampler). Any other key would change the model or what it is measured on.
SAMPLER_KEYS = ("sampler", "ddim_steps", "ddpm_steps")
LOAD_OVERRIDES = ("data_path", "gpu_id", "use_gpu", "eval_batch_size", "show_progress", "state", *SAMPLER_KEYS)
# Keys RecBole's Config computes from ``eval_args``; passing them back would be ignored or refused.
REBUILT_KEYS = frozenset({"valid_neg_sample_args", "test_neg_sample_args"})


def _saved_config_dict(saved):
    """The checkpoint's plain configuration as ``config_dict`` for :func:`build_config`: the derived keys left
    for Config to rebuild, RecBole's normalised "no negative sampling" turned back into the ``None`` it came from.

    Text values go in quoted (:func:`_as_text`): RecBole's ``Config`` evaluates every text value of a
    ``config_dict`` as Python, so FEARec's ``fredom_type: 'None'`` would come back as ``None``, and a crafted
    checkpoint's text would run as code."""
    config_dict = {key: _as_text(value) for key, value in saved.items()
                   if key not in ckpt.DERIVED_KEYS and key not in REBUILT_KEYS}
    train_neg = config_dict.get("train_neg_sample_args")
    if isinstance(train_neg, dict) and train_neg.get("distribution") == "none":
        config_dict["train_neg_sample_args"] = None
    return config_dict


def _as_text(value):
    """``value``, a text one as the Python literal that ``Config``'s evaluation turns back into that same text."""
    return repr(value) if isinstance(value, str) else value


def _check_overrides(overrides):
    refused = sorted(set(overrides) - set(LOAD_OVERRIDES) - {"trust_pickled_checkpoint"})
    if refused:
        raise ValueError(f"cannot override {', '.join(refused)} when loading a trained model: only "
                         f"{', '.join(LOAD_OVERRIDES)} may differ from the configuration it was trained with")


def config_from_checkpoint(checkpoint, source="checkpoint", **overrides):
    """The run's RecBole ``Config`` rebuilt from a checkpoint's plain configuration, ``(config, model_class)``.

    ``overrides`` may set :data:`LOAD_OVERRIDES` only (``data_path`` is the folder that holds
    ``<dataset>/<dataset>.inter``, as for training). The rebuilt configuration must hash like the saved one
    (:func:`recbole_diffusion.checkpoint.config_hash`, overridden keys put back): anything else would mean the
    model is rebuilt differently from the one trained, except keys the package gained since the checkpoint was
    written, which take their defaults (with a warning). ``source`` names the checkpoint in messages.
    """
    _check_overrides(overrides)
    saved = checkpoint["config"]
    sampler_keys = sorted(set(overrides) & set(SAMPLER_KEYS))
    if sampler_keys and "sampler" not in saved:
        raise ValueError(f"{source}: {saved.get('model')} has no reverse process, so {', '.join(sampler_keys)} "
                         "cannot be set (they apply to this package's diffusion models)")
    dataset_folder = saved["data_path"]
    if "data_path" not in overrides and not os.path.isdir(dataset_folder):
        raise FileNotFoundError(
            f"{source}: the dataset folder it was trained on, {dataset_folder}, no longer exists. Pass the folder "
            f"that now holds {saved['dataset']}/{saved['dataset']}.inter: data_path=<folder> in Python, "
            f"--data_path=<folder> on the command line.")
    config_dict = _saved_config_dict(saved)
    config_dict["data_path"] = _as_text(os.path.dirname(os.path.normpath(dataset_folder)))
    config_dict.update(overrides)
    with contextlib.redirect_stderr(io.StringIO()):  # unknown keys were warned about when the model was trained
        config, model_class = build_config(saved["model"], saved["dataset"], config_dict=config_dict)
    if checkpoint.get("config_hash"):
        rebuilt = ckpt.plain_config(config)
        comparable = dict(rebuilt, **{key: saved.get(key) for key in overrides})
        added = sorted(set(comparable) - set(saved))
        if added and ckpt.config_hash({k: v for k, v in comparable.items() if k not in added}) == \
                checkpoint["config_hash"]:
            # Keys this package gained after the checkpoint was written take their defaults, which keep the old
            # behaviour (a new key's default must): the rest of the configuration is exactly the trained one.
            warnings.warn(f"{source}: written before recbole_diffusion had {', '.join(added)}; "
                          f"using {', '.join(f'{key}={comparable[key]!r}' for key in added)}", stacklevel=2)
            comparable = {k: v for k, v in comparable.items() if k not in added}
        if ckpt.config_hash(comparable) != checkpoint["config_hash"]:
            differing = ckpt.differing_keys(saved, comparable)
            raise ValueError(
                f"{source}: its configuration cannot be rebuilt as it was trained ("
                + (", ".join(f"{key}: {saved.get(key)!r} -> {comparable.get(key)!r}" for key in differing)
                   or "the hash differs") + "); this version of recbole_diffusion or RecBole reads it differently")
    if not os.path.isdir(config["checkpoint_dir"]):  # trained elsewhere: the trainer would create the old folder
        config["checkpoint_dir"] = os.path.dirname(os.path.abspath(source)) if os.path.isfile(source) else "saved"
    return config, model_class


def load_data_and_model(model_file, trust_pickled=False, write_logs=True, **overrides):
    """Load a trained model with its data, like RecBole's ``recbole.quick_start.load_data_and_model``.

    Returns ``(config, model, dataset, train_data, valid_data, test_data)``: the model holds the checkpoint's
    weights, in eval mode on ``config['device']``; the data is filtered and split exactly as for training.
    ``overrides``: ``data_path`` (the folder holding ``<dataset>/``, when the data moved), ``gpu_id``, ``use_gpu``,
    ``eval_batch_size``, ``show_progress``, ``state``, and for a diffusion model ``sampler``, ``ddim_steps``,
    ``ddpm_steps`` (score with another reverse process than the one trained with, e.g. a ``-fast`` variant's:
    the weights are the same). ``trust_pickled=True`` also reads RecBole's own
    (pickled) checkpoint format: only for files you wrote yourself, as unpickling can run code.
    ``overrides`` are read as RecBole reads a ``config_dict`` (text is evaluated: ``data_path="2024"`` would be
    the number 2024; pass ``"'2024'"``), while the checkpoint's own text values are kept as text.
    Refuses data whose item or user tokens differ from the training data's. ``write_logs=False`` (``recommend``)
    writes no log file and no TensorBoard folder: the console alone.
    """
    checkpoint = ckpt.load_checkpoint(model_file, map_location="cpu", trust_pickled=trust_pickled)
    # Only the caller decides whether a file may be unpickled: a checkpoint's own configuration never does.
    overrides["trust_pickled_checkpoint"] = bool(trust_pickled)
    config, model_class = config_from_checkpoint(checkpoint, source=model_file, **overrides)
    data = prepare_data(config, log_file=write_logs)
    ckpt.check_dataset_fingerprint(checkpoint, ckpt.dataset_fingerprint(data.train._dataset), config["dataset"],
                                   model_file, ", ".join(inter_file_paths(config)))
    with contextlib.nullcontext() if write_logs else compat.no_tensorboard():
        trainer = build_trainer(config, model_class, data.train)
    trainer.load_model_file(model_file, checkpoint=checkpoint)  # the file is read once
    model = trainer.model.eval()
    return config, model, data.dataset, data.train, data.valid, data.test
