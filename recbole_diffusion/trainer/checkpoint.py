"""Checkpoints that hold only tensors and plain data, written atomically and loaded without running code.

RecBole 1.2.1 pickles its whole ``Config`` into every checkpoint, so loading one means unpickling whatever the
file holds: a crafted ``.pth`` runs any command it names. The files written here hold tensors, numbers,
strings, lists, tuples and dicts only (the configuration as a dict of plain values, RNG states as tensors) and
are read with ``torch.load(weights_only=True)``, which refuses every other global before it is called.
RecBole's own format is refused with a message; ``trust_pickled=True`` opts in for files you wrote yourself.

A checkpoint records the configuration's hash (:func:`config_hash`, also in the "last" checkpoint's file name)
and the dataset's fingerprint (:func:`dataset_fingerprint`), so that resuming with another configuration or
recommending against changed data is refused instead of silently mixing them.
"""

import copy
import enum
import hashlib
import json
import os
import pickle
import random
import zipfile

import numpy as np
import scipy.sparse as sp
import torch

from recbole_diffusion.utils.files import atomic_write, saved_config, with_values_before_the_key

FORMAT = "recbole_diffusion.checkpoint/1"
# Keys that Config derives from the others (and rebuilds when a configuration is read back).
DERIVED_KEYS = frozenset({"model", "dataset", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "device",
                          "single_spec", "local_rank", "valid_metric_bigger"})
# Keys that may differ between a run and its resumption: they do not change what is trained or measured
# (evaluation noise is keyed by user, so the evaluation batch size does not change the metrics).
RESUME_MAY_DIFFER = ("epochs", "pretrain_epochs", "stopping_step", "show_progress", "state", "eval_batch_size",
                     "resume", "checkpoint_every", "ip", "port")
# Keys that differ between the processes of one distributed run (each machine has its own offset and nproc).
PER_PROCESS_KEYS = ("local_rank", "offset", "nproc", "device")
# Keys that say where a run happens, not what it computes: a run re-queued on another node, GPU or scratch folder
# resumes with other values. They stay in the configuration's hash (taking them out would change every hash, and
# the existing "last" checkpoints would no longer be found): a resume compares them apart from it.
LOCATION_KEYS = ("gpu_id", "use_gpu", "data_path", "checkpoint_dir", "trust_pickled_checkpoint")


class UnsafeCheckpointError(ValueError):
    """The file is not in this package's tensors-and-plain-data format (loading it could run code)."""


def plain(value):
    """``value`` as JSON-like plain data: enums by name, devices and other objects as their ``str``."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (np.integer, np.floating, np.bool_)):  # before float: np.float64 is a float
        return value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return str(value)


def plain_config(config):
    """Every key of a RecBole ``Config`` as plain data (what a checkpoint stores)."""
    return {key: plain(value) for key, value in config.final_config_dict.items()}


def host_copy(value):
    """A deep copy of ``value`` with every tensor copied to host memory (a training state kept for a pre-emption
    must not occupy the accelerator)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: host_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(host_copy(item) for item in value)
    return copy.deepcopy(value)


def config_hash(config_dict):
    """Short hash of a plain configuration, ignoring :data:`RESUME_MAY_DIFFER`, the derived keys and
    :data:`PER_PROCESS_KEYS` (every process of a distributed run hashes alike)."""
    kept = {key: value for key, value in config_dict.items()
            if key not in RESUME_MAY_DIFFER and key not in DERIVED_KEYS and key not in PER_PROCESS_KEYS}
    kept["model"], kept["dataset"] = config_dict.get("model"), config_dict.get("dataset")
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def differing_keys(saved, current, ignore=()):
    """Keys whose values differ between two plain configurations, outside :data:`RESUME_MAY_DIFFER` and ``ignore``."""
    keys = (set(saved) | set(current)) - set(RESUME_MAY_DIFFER) - set(ignore)
    return sorted(key for key in keys if saved.get(key) != current.get(key))


def resume_differences(saved, current, ignore=()):
    """``(refused, moved, added)``: the keys in which a saved configuration and the current one differ, as a resume
    sees them. ``moved``: :data:`LOCATION_KEYS` (the run continues elsewhere); ``added``: keys this package gained
    since the checkpoint was written (the run continues with their current values, the defaults unless set);
    ``refused``: every other difference outside :data:`RESUME_MAY_DIFFER` and ``ignore``. A key of
    :data:`~recbole_diffusion.utils.files.VALUES_BEFORE_THE_KEY` is not "added": the saved run had its earlier value."""
    saved = with_values_before_the_key(saved)
    differing = differing_keys(saved, current, ignore)
    added = [key for key in differing if key not in saved]
    moved = [key for key in differing if key in LOCATION_KEYS and key not in added]
    refused = [key for key in differing if key not in added and key not in moved]
    return refused, moved, added


def describe_resume(saved, current, moved, added):
    """The log line of a resume that moved or gained keys (``None`` when it did neither)."""
    parts = []
    if moved:
        device = {"gpu_id", "use_gpu"} & set(moved)
        parts.append("it continues elsewhere (" + ", ".join(f"{key} {saved.get(key)!r} -> {current.get(key)!r}"
                                                          for key in moved) + ")"
                     + ("; on another device it continues, but not bit for bit" if device else ""))
    if added:
        parts.append("it was written before recbole_diffusion had " + ", ".join(added) + "; it continues with "
                     + ", ".join(f"{key}={current.get(key)!r}" for key in added))
    return "resume: " + "; ".join(parts) if parts else None


def _tokens_hash(tokens):
    return hashlib.sha256("\n".join(map(str, tokens)).encode("utf-8")).hexdigest()


def dataset_fingerprint(dataset):
    """What ties a checkpoint to its data: the item and user token maps (their hash and size) and the interactions
    of ``dataset`` (a training split: its user and item of every row, in RecBole's order), which any row added to,
    removed from or changed in the interaction file changes, since every user's targets move with it."""
    items = dataset.field2id_token[dataset.iid_field]
    users = dataset.field2id_token[dataset.uid_field]
    rows = np.stack([np.asarray(dataset.inter_feat[dataset.uid_field], dtype=np.int64),
                     np.asarray(dataset.inter_feat[dataset.iid_field], dtype=np.int64)])
    return {"n_items": len(items), "n_users": len(users),
            "item_tokens_sha256": _tokens_hash(items), "user_tokens_sha256": _tokens_hash(users),
            "interactions_sha256": hashlib.sha256(rows.tobytes()).hexdigest()}


def check_dataset_fingerprint(checkpoint, fingerprint, dataset_name, path, data_file):
    """Refuse data other than the training data, naming the cause: ``fingerprint`` is :func:`dataset_fingerprint`
    of the data read now from ``data_file`` (a checkpoint without a fingerprint, or one written before the
    interactions were fingerprinted, is checked as far as it goes)."""
    saved = checkpoint.get("dataset_fingerprint")
    if not saved:
        return
    changed = [key for key in saved if key in fingerprint and saved[key] != fingerprint[key]]
    if not changed:
        return
    if "item_tokens_sha256" in changed or "n_items" in changed:
        reason = (f"its items differ ({saved['n_items']} -> {fingerprint['n_items']} items): the item ids would map "
                  "to other items")
    elif "user_tokens_sha256" in changed or "n_users" in changed:
        reason = (f"users were added or removed ({saved['n_users']} -> {fingerprint['n_users']} users), so the "
                  "split and the targets differ")
    else:
        reason = ("the same users and items, but interactions were added, removed or reordered since training, so "
                  "the training, validation and test targets differ")
    raise ValueError(f"checkpoint {path!r} was trained on other data: the dataset {dataset_name!r} read now from "
                     f"{data_file} is not the one this model was trained on ({', '.join(changed)} differ); {reason}. "
                     "Use the training data.")


def rng_states(train_generator=None):
    """Every random state a training run draws from, as tensors and plain data."""
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "python": [version, list(state), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if train_generator is not None:
        states["train_loader"] = train_generator.get_state()
    return states


def set_rng_states(states, train_generator=None):
    """Restore what :func:`rng_states` recorded (its tensors on any device: a trainer reads checkpoints onto its
    own)."""
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"].cpu())
    if states["cuda"] and torch.cuda.is_available():
        # A run moved to a machine with fewer visible GPUs restores the states of those it has (it continues, though
        # not bit for bit, as any move between devices).
        for index, state in enumerate(states["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.cpu(), index)
    if train_generator is not None and "train_loader" in states:
        train_generator.set_state(states["train_loader"].cpu())


def encode_state(value):
    """Model state outside ``state_dict`` (``other_parameter``, tensor attributes) as tensors and plain data.

    numpy arrays become tensors and scipy sparse matrices their CSR parts, each tagged so that
    :func:`decode_state` rebuilds the original type; anything else that is not plain data is refused.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return {"__numpy__": torch.from_numpy(np.ascontiguousarray(value))}
    if sp.issparse(value):
        matrix = value.tocsr()
        return {"__csr__": [torch.from_numpy(matrix.data), torch.from_numpy(matrix.indices),
                            torch.from_numpy(matrix.indptr), list(matrix.shape)]}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, dict):  # keys keep their type (RippleNet looks its ripple sets up by integer user id)
        return {_state_key(key): encode_state(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return tuple(encode_state(item) for item in value)
    if isinstance(value, list):
        return [encode_state(item) for item in value]
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint (tensors and plain data only)")


def _state_key(key):
    """A dict key as plain data: numbers, text, booleans and None as themselves (numpy's as Python's), anything
    else as its text."""
    if isinstance(key, (np.integer, np.floating, np.bool_)):
        return key.item()
    return key if isinstance(key, (bool, int, float, str)) or key is None else str(key)


def decode_state(value, device):
    """Inverse of :func:`encode_state`; tensors go to ``device``, numpy and scipy values to host memory (``value``
    may have been read onto an accelerator)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        if set(value) == {"__numpy__"}:
            return value["__numpy__"].cpu().numpy()
        if set(value) == {"__csr__"}:
            data, indices, indptr, shape = value["__csr__"]
            parts = (data.cpu().numpy(), indices.cpu().numpy(), indptr.cpu().numpy())
            return sp.csr_matrix(parts, shape=tuple(shape))
        return {key: decode_state(item, device) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_state(item, device) for item in value]
    if isinstance(value, tuple):
        return tuple(decode_state(item, device) for item in value)
    return value


def model_extra_state(model):
    """What a model keeps outside its ``state_dict``: RecBole's ``other_parameter()`` plus every tensor held as a
    plain attribute (RecBole's ``DiffRec`` keeps its loss history that way). A submodule that ``other_parameter()``
    also names (the feature-aware models' ``FeatureSeqEmbLayer``) is left out: its weights are in the
    ``state_dict``, and the model builds the module itself."""
    tensors = {name: value for name, value in vars(model).items() if isinstance(value, torch.Tensor)}
    other = {key: value for key, value in model.other_parameter().items() if not isinstance(value, torch.nn.Module)}
    return {"other_parameter": encode_state(other), "tensor_attributes": encode_state(tensors)}


def load_model_extra_state(model, extra, device):
    """Put back what :func:`model_extra_state` recorded."""
    model.load_other_parameter(decode_state(extra["other_parameter"], device) or None)
    for name, value in decode_state(extra["tensor_attributes"], device).items():
        setattr(model, name, value)


def save_checkpoint(payload, path):
    """Write ``payload`` (tensors and plain data) to ``path`` atomically: a process killed during the write leaves
    the previous file intact (:func:`recbole_diffusion.utils.files.atomic_write`)."""
    with atomic_write(path) as handle:
        torch.save(dict(payload, format=FORMAT), handle)


def _cut_short(path):
    """Whether ``path`` is a torch checkpoint whose write was cut short: empty, or a zip archive (what torch.save
    writes) without its central directory."""
    with open(path, "rb") as handle:
        start = handle.read(4)
    return not start or (start == b"PK\x03\x04" and not zipfile.is_zipfile(path))


# What a staged model's pretraining stage saves (:func:`pretrained_weights`).
PRETRAINED_KEYS = ("epoch", "state_dict", "optimizer", "other_parameter")


def pretrained_weights(model, optimizer, epoch):
    """A pretraining stage's file (RaCT, S3Rec): RecBole's ``PretrainTrainer`` keys without the pickled
    configuration it held, so the next stage's plain ``torch.load`` reads it under PyTorch >= 2.6's
    ``weights_only``."""
    return dict(zip(PRETRAINED_KEYS, (epoch, model.state_dict(), optimizer.state_dict(), model.other_parameter())))


def load_checkpoint(path, map_location="cpu", trust_pickled=False):
    """Read a checkpoint written by :func:`save_checkpoint` without running any code from the file.

    ``trust_pickled=True`` also reads RecBole's own format (it unpickles the file: only for files you made);
    its ``config`` is then turned into plain data like ours.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=not trust_pickled)
    except Exception as error:
        if _cut_short(path):
            raise ValueError(f"checkpoint {path!r} is damaged or incomplete (not a whole torch checkpoint: a write "
                             "that was cut short, or another kind of file); use another checkpoint, e.g. the best "
                             "epoch's or an earlier one") from None
        if trust_pickled or not isinstance(error, (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError,
                                                   ValueError)):
            raise
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "unsupported" in line.lower()), lines[0] if lines else "")
        raise UnsafeCheckpointError(
            f"checkpoint {path!r} refused: it is not a recbole_diffusion checkpoint of tensors and plain data "
            f"(loading stopped before anything in it ran: {reason or type(error).__name__}). RecBole's own .pth files "
            "pickle Python objects, and unpickling a file can execute code. If you wrote this file yourself with "
            "RecBole, load it with trust_pickled=True (command line: --trust_pickled_checkpoint=True)."
        ) from None
    if trust_pickled:
        if not isinstance(checkpoint.get("config"), dict):
            checkpoint["config"] = plain_config(checkpoint["config"])
        return checkpoint
    if isinstance(checkpoint, dict) and tuple(checkpoint) == PRETRAINED_KEYS:
        raise ValueError(f"{path!r} holds a pretraining stage's weights, not a tested run's checkpoint: pass it to the "
                         "next stage as --pre_model_path, then use the checkpoint that stage saves")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UnsafeCheckpointError(
            f"checkpoint {path!r} refused: format {checkpoint.get('format') if isinstance(checkpoint, dict) else None!r}"
            f", expected {FORMAT!r}")
    return checkpoint


def last_checkpoint_path(checkpoint_dir, model, dataset, hash_):
    """Where a run writes its resumable "last" checkpoint: one file per model, dataset and configuration."""
    return os.path.join(checkpoint_dir, f"{model}-{dataset}-{hash_}-last.pth")


def find_last_checkpoints(checkpoint_dir, model, dataset):
    """Every "last" checkpoint of ``model`` on ``dataset`` in ``checkpoint_dir``, newest first."""
    if not os.path.isdir(checkpoint_dir):
        return []
    prefix, suffix = f"{model}-{dataset}-", "-last.pth"
    paths = [os.path.join(checkpoint_dir, name) for name in os.listdir(checkpoint_dir)
             if name.startswith(prefix) and name.endswith(suffix)
             and len(name) == len(prefix) + 12 + len(suffix)]
    return sorted(paths, key=os.path.getmtime, reverse=True)


def resumable_checkpoint(config_dict, checkpoint_dir):
    """The "last" checkpoint to resume for this plain configuration, ``None`` when this configuration never ran.

    The file named by the configuration's hash, or else the newest "last" checkpoint of the same model and dataset
    whose configuration differs only where :func:`resume_differences` allows (another node, GPU, data or checkpoint
    folder; keys the package gained since). A checkpoint of another configuration is never resumed (it would
    silently continue another experiment): the run starts anew, and :func:`other_configuration_note` says why.
    """
    path = last_checkpoint_path(checkpoint_dir, config_dict["model"], config_dict["dataset"],
                                config_hash(config_dict))
    if os.path.isfile(path):
        return path
    for other in find_last_checkpoints(checkpoint_dir, config_dict["model"], config_dict["dataset"]):
        if not resume_differences(saved_config(other), config_dict)[0]:
            return other
    return None


def other_configuration_note(config_dict, checkpoint_dir):
    """For a ``resume: True`` run that starts anew: the newest "last" checkpoint of the same model and dataset (of
    another configuration) and the keys that differ, so that a changed key by mistake is seen; ``None`` if there
    is none. That checkpoint is left as it is."""
    others = find_last_checkpoints(checkpoint_dir, config_dict["model"], config_dict["dataset"])
    if not others:
        return None
    saved = saved_config(others[0])
    differing = resume_differences(saved, config_dict)[0]
    return (f"resume: no checkpoint of this configuration in {checkpoint_dir}, so training starts at epoch 0. The "
            f"newest one of {config_dict['model']} on {config_dict['dataset']} ({others[0]}, left as it is) is "
            "another configuration: it differs in "
            + ", ".join(f"{key} ({saved.get(key)!r} -> {config_dict.get(key)!r})" for key in differing)
            + f"; only {', '.join(RESUME_MAY_DIFFER + LOCATION_KEYS)} may change on resume. To continue that run, "
            "give its configuration.")
