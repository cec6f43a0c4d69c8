"""Make RecBole 1.2.1 work on today's numpy, PyTorch and Python; imported by the package before RecBole is used.

RecBole missing (on Python 3.12+ it is installed with ``--no-deps``, README) gets one message saying how to install
it (:func:`require_recbole`). Each fix is small, idempotent and covered by ``tests/test_compat.py``:

* numpy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``, which ``recbole.config.Config``
  reads in ``compatibility_settings``; they are restored as aliases of the types that replaced them.
* ``recbole/model/sequential_recommender/sine.py`` turns on autograd anomaly detection for the whole process
  when it is imported (importing any RecBole sequential model imports it), which slows training 3 to 5 times;
  it is turned off again (:func:`keep_autograd_anomaly_detection_off`).
* Checkpoints need no fix: this package's trainer writes and reads them in a tensors-and-plain-data format
  (:mod:`recbole_diffusion.trainer.checkpoint`) under PyTorch's ``weights_only=True``, and RecBole's own pickled files
  are refused, so nothing here makes ``torch.load`` unpickle code.
* ``Dataset._fill_nan`` fills missing values with ``feat[field].fillna(..., inplace=True)``: pandas 2.2 warns
  about that chained assignment and under pandas 3's copy-on-write it fills nothing. It is replaced by the
  same filling written as an assignment (:func:`fill_nan`), which works on pandas 1.3 to 3. (setup.cfg still
  holds pandas below 3, for RecBole's token-sequence features.)
* ``Interaction.sort`` (every sequential dataset sorts by user and time) calls ``np.argsort`` on a torch
  tensor, which numpy 2 deprecates through torch's ``__array_wrap__``; it is replaced by the same stable sort
  of the key as a numpy array (:func:`sort_interaction`).
* RecBole's graph models (NGCF, LightGCN, GCMC, NCL, SpectralCF, KGIN, MCCLK) fill their adjacency matrix with
  ``dok_matrix._update``, which scipy 1.12 removed (the matrix is no longer a dict); it is put back as an update of
  the matrix's own dict (:func:`restore_dok_update`).
* RecBole's trainer module creates its scaler through ``torch.cuda.amp``, deprecated since PyTorch 2.4 (a
  FutureWarning in every run); it gets an ``amp`` namespace that calls ``torch.amp`` with ``"cuda"`` instead.
* RecBole's BERT4Rec (``loss_type: CE``) scores every item at all ``int(mask_ratio * MAX_ITEM_LIST_LENGTH)``
  mask slots of every training row and then zeroes the padded slots' losses; on short histories most slots are
  padding (Amazon Beauty at L 20: 84 % of them), so three quarters of its training time went to scores it threw
  away. Its loss is computed on the real slots only (:func:`bert4rec_scores_real_mask_slots_only`): the same
  loss and gradients, up to float rounding; training runs 3.7 times faster there (BENCHMARKS run 23).
* ``recbole.quick_start`` imports ray at import time (ray needs ``pkg_resources`` and numpy < 2). This
  package never imports it: :mod:`recbole_diffusion.quick_start` builds the pipeline from RecBole's parts.
* RecBole's evaluation collector calls ``.cpu()`` on an int and a Counter, so ItemCoverage, GiniIndex,
  AveragePopularity and TailPercentage failed at the first validation; it moves tensors only
  (:func:`collect_tensors_only`).
* RecBole's ``Config`` points ml-100k at the copy inside the recbole package whatever ``data_path`` says, so a
  user's own ml-100k (a slice, or one with other atomic files) was silently replaced by RecBole's. With a
  ``data_path`` given, ml-100k is read from ``<data_path>/ml-100k`` like every other name; without one the copy
  stays the default (:func:`follow_data_path_for_ml100k`).
* RecBole's distributed mode asserts a GPU per process and joins with NCCL in ``Config``, and wraps CPU modules
  with ``device_ids`` in its trainer: ``recbole_diffusion.config.configurator.PluginConfig`` and the trainer layer
  set the processes up instead (:mod:`recbole_diffusion.utils.collectives`). Every process would also open its own
  TensorBoard folder: ranks other than 0 get a writer that writes nothing (:func:`tensorboard_on_rank_zero`).
* RecBole's ``ensure_dir`` checks that a folder is missing and then creates it, so two processes of a distributed
  run that both create ``saved/`` can fail with ``FileExistsError`` (2 of 13 two-rank CPU runs here); it
  creates the folder unless it exists, in one step (:func:`create_folders_concurrently`).
* RaCT logs the file it loads with ``print``'s convention (the path as a second argument), which made ``logging``
  print "--- Logging error ---" and a traceback in each stage that loads weights; the message and the path are
  joined (:func:`log_pretrained_paths_without_logging_errors`).
"""

import contextlib
import copy
import functools
import logging
import os
import sys
import types
import warnings

import numpy as np
import torch

NUMPY_REMOVED_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}


def restore_numpy_aliases():
    """Put back the numpy 1 aliases that RecBole's ``Config`` reads (no-op on numpy 1)."""
    for name, replacement in NUMPY_REMOVED_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, replacement)


def restore_dok_update():
    """Give scipy's ``dok_matrix`` the ``_update(dict)`` RecBole's graph models call (no-op where it exists)."""
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = lambda self, data: self._dict.update(data)


def fill_nan(self):
    """RecBole 1.2.1's ``Dataset._fill_nan`` with each column assigned rather than filled in place.

    TOKEN fields get 0 (``[PAD]``), FLOAT fields their column mean, and a missing sequence (a float NaN in
    a TOKEN_SEQ / FLOAT_SEQ field) becomes an empty array, exactly as in RecBole.
    """
    from recbole.utils import FeatureType, set_color

    self.logger.debug(set_color("Filling nan", "green"))
    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x)


def fill_missing_values_by_assignment():
    """Give RecBole's ``Dataset`` the :func:`fill_nan` above."""
    from recbole.data.dataset.dataset import Dataset

    Dataset._fill_nan = fill_nan


def sort_interaction(self, by, ascending=True):
    """RecBole 1.2.1's ``Interaction.sort`` (same checks, same stable order) with numpy sorting an array."""
    if isinstance(by, str):
        by = [by]
    elif not isinstance(by, (list, tuple)):
        raise TypeError(f"Wrong type of by [{by}].")
    for b in by:
        if b not in self.interaction:
            raise ValueError(f"[{b}] is not exist in interaction [{self}].")
    if isinstance(ascending, bool):
        ascending = [ascending]
    elif not isinstance(ascending, (list, tuple)) or not all(isinstance(a, bool) for a in ascending):
        raise TypeError(f"Wrong type of ascending [{ascending}].")
    if len(by) != len(ascending):
        if len(ascending) != 1:
            raise ValueError(f"by [{by}] and ascending [{ascending}] should have same length.")
        ascending = ascending * len(by)
    for b, a in zip(by[::-1], ascending[::-1]):
        key = self.interaction[b] if len(self.interaction[b].shape) == 1 else self.interaction[b][..., 0]
        index = torch.from_numpy(np.argsort(np.asarray(key), kind="stable"))
        self._reindex(index if a else index.flip(0))


def sort_interactions_as_arrays():
    """Give RecBole's ``Interaction`` the :func:`sort_interaction` above."""
    from recbole.data.interaction import Interaction

    Interaction.sort = sort_interaction


class _CudaAmp(types.ModuleType):
    """``torch.cuda.amp`` as RecBole's trainer uses it, built on ``torch.amp`` (same arguments, no warning)."""

    def __init__(self):
        super().__init__("torch.cuda.amp")
        self.GradScaler = functools.partial(torch.amp.GradScaler, "cuda")

    @staticmethod
    def autocast(enabled=True, dtype=torch.float16, cache_enabled=True):
        return torch.amp.autocast("cuda", enabled=enabled, dtype=dtype, cache_enabled=cache_enabled)

    def __getattr__(self, name):
        return getattr(torch.cuda.amp, name)


def use_torch_amp_in_recbole_trainer():
    """Route RecBole's trainer from the deprecated ``torch.cuda.amp`` to ``torch.amp`` (PyTorch >= 2.3)."""
    import recbole.trainer.trainer as trainer_module

    if hasattr(torch.amp, "GradScaler") and not isinstance(trainer_module.amp, _CudaAmp):
        trainer_module.amp = _CudaAmp()


class _NullWriter:
    """A TensorBoard ``SummaryWriter`` that writes nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


_TENSORBOARD = {"off": False}  # set inside no_tensorboard()


@contextlib.contextmanager
def no_tensorboard():
    """Trainers built inside open no TensorBoard folder (inference, which trains nothing: ``recommend``)."""
    before, _TENSORBOARD["off"] = _TENSORBOARD["off"], True
    try:
        yield
    finally:
        _TENSORBOARD["off"] = before


def tensorboard_on_rank_zero():
    """RecBole's trainer opens a TensorBoard folder per process; in a distributed run only rank 0 keeps one, and
    inside :func:`no_tensorboard` none does."""
    import recbole.trainer.trainer as trainer_module

    recbole_get_tensorboard = trainer_module.get_tensorboard
    if getattr(recbole_get_tensorboard, "rank_zero_only", False):
        return

    def get_tensorboard(logger):
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if _TENSORBOARD["off"] or (distributed and torch.distributed.get_rank() != 0):
            return _NullWriter()
        return recbole_get_tensorboard(logger)

    get_tensorboard.rank_zero_only = True
    trainer_module.get_tensorboard = get_tensorboard


def create_folders_concurrently():
    """Replace RecBole's ``ensure_dir`` (in every module that imported it by name) with ``os.makedirs(...,
    exist_ok=True)``: the same folder, with no window between the check and the creation for a second process."""
    import recbole.data.dataset.dataset
    import recbole.data.utils
    import recbole.trainer.trainer
    import recbole.utils
    import recbole.utils.logger
    import recbole.utils.utils

    def ensure_dir(dir_path):
        os.makedirs(dir_path, exist_ok=True)

    for module in (recbole.utils.utils, recbole.utils, recbole.utils.logger, recbole.trainer.trainer,
                   recbole.data.utils, recbole.data.dataset.dataset):
        module.ensure_dir = ensure_dir


class _JoinArgumentsWithoutPlaceholders(logging.Filter):
    """A record whose message has no ``%`` placeholder for its arguments gets them appended, as ``print`` would."""

    def filter(self, record):
        if record.args and isinstance(record.msg, str) and "%" not in record.msg:
            record.msg, record.args = " ".join([record.msg, *map(str, record.args)]), ()
        return True


def log_pretrained_paths_without_logging_errors():
    """RaCT logs ``logger.info("Load pretrained model from", path)``, print's convention: logging found no
    placeholder for the path and printed "--- Logging error ---" with a traceback, twice per run, in every stage
    that loads weights. RecBole's logger (the root logger) joins such a message and its arguments instead."""
    root = logging.getLogger()
    if not any(isinstance(each, _JoinArgumentsWithoutPlaceholders) for each in root.filters):
        root.addFilter(_JoinArgumentsWithoutPlaceholders())


def keep_autograd_anomaly_detection_off():
    """Import RecBole's sequential models now and undo what ``recbole/model/sequential_recommender/sine.py`` does
    at import: ``torch.autograd.set_detect_anomaly(True)`` for the whole process. Loading any RecBole sequential
    model (SASRec too) imports it, and anomaly mode records a stack trace per autograd op: training ran 3 to 5
    times slower. A user who turned anomaly detection on before importing this package keeps it."""
    enabled_by_user = torch.is_anomaly_enabled() and "recbole.model.sequential_recommender.sine" not in sys.modules
    import recbole.model.sequential_recommender  # noqa: F401  (imports sine.py)

    if not enabled_by_user:
        torch.autograd.set_detect_anomaly(False)


RECBOLE_VERSION = "1.2.1"
INSTALL_RECBOLE = f"pip install --no-deps recbole=={RECBOLE_VERSION}"


def require_recbole():
    """Import RecBole, or say in one message how to install it.

    On Python 3.12 and newer pip cannot install RecBole 1.2.1 with its dependencies (its pin ``ray<=2.6.3`` has no
    wheels there), so the README installs it with ``--no-deps`` and this package requires RecBole's other
    dependencies itself (setup.cfg); a user who skipped that step gets this message rather than a bare
    ``ModuleNotFoundError``. A dependency of RecBole that is missing is named as such."""
    try:
        import recbole
    except ModuleNotFoundError as error:
        if error.name != "recbole":
            raise
        raise ModuleNotFoundError(
            f"recbole-diffusion needs RecBole {RECBOLE_VERSION}, which is not installed in this Python "
            f"({sys.executable}). Install it with\n    {INSTALL_RECBOLE}\nthen this package (README, Install); "
            "--no-deps because RecBole's pin of ray has no wheels for Python 3.12 and newer, and this package "
            "installs RecBole's other dependencies itself.", name="recbole") from error
    if getattr(recbole, "__version__", RECBOLE_VERSION) != RECBOLE_VERSION:
        warnings.warn(f"recbole-diffusion patches RecBole {RECBOLE_VERSION} (recbole_diffusion/compat.py); this is "
                      f"RecBole {recbole.__version__}, on which its patches and checks are untested", stacklevel=2)
    try:  # RecBole's modules that import its dependencies (colorlog, tensorboard, scikit-learn, ...)
        import recbole.data  # noqa: F401
        import recbole.evaluator  # noqa: F401
        import recbole.utils  # noqa: F401
    except ModuleNotFoundError as error:
        if error.name.split(".")[0] == "recbole":
            raise
        missing = error.name.split(".")[0]
        raise ModuleNotFoundError(
            f"RecBole cannot be imported: its dependency {missing!r} is missing. Installing this package "
            "(pip install -e . or pip install recbole-diffusion) installs RecBole's dependencies.",
            name=missing) from error


def collect_tensors_only():
    """RecBole's evaluation ``Collector.get_data_struct`` moves every collected resource to the CPU with ``.cpu()``,
    but the item count it collects for ItemCoverage (``data.num_items``) is an int and the item counter for
    GiniIndex, AveragePopularity and TailPercentage (``data.count_items``) a Counter: those metrics failed at the
    first validation. It is replaced by the same collection that moves tensors only."""
    from recbole.evaluator.collector import Collector

    def get_data_struct(self):
        for key, value in self.data_struct._data_dict.items():
            if isinstance(value, torch.Tensor):
                self.data_struct._data_dict[key] = value.cpu()
        returned_struct = copy.deepcopy(self.data_struct)
        for key in ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label"):
            if key in self.data_struct:
                del self.data_struct[key]
        return returned_struct

    Collector.get_data_struct = get_data_struct


def follow_data_path_for_ml100k():
    """After RecBole's ``Config._set_default_parameters``, a given ``data_path`` (config file, dict or command line)
    holds ml-100k too, as it holds every other dataset."""
    from recbole.config import Config

    recbole_defaults = Config._set_default_parameters
    if getattr(recbole_defaults, "follows_data_path", False):
        return

    def set_default_parameters(self):
        recbole_defaults(self)
        given = self.external_config_dict.get("data_path")
        if self.dataset == "ml-100k" and given is not None:
            self.final_config_dict["data_path"] = os.path.join(given, self.dataset)

    set_default_parameters.follows_data_path = True
    Config._set_default_parameters = set_default_parameters


def bert4rec_scores_real_mask_slots_only():
    """Replace BERT4Rec's cross-entropy ``calculate_loss`` by the same loss over its real mask slots only.

    RecBole's version gathers the hidden state at each of the row's mask slots (``MASK_INDEX``, padded with 0),
    scores all items there, and averages the cross-entropy over the slots whose index is above 0 (so, like
    RecBole, an item masked at position 0 is not a target). This one gathers those slots first and scores them
    alone; the forward pass, its dropout draws, the masking and the BPR loss are RecBole's. RecBole's function
    stays reachable as ``BERT4Rec.calculate_loss.recbole`` (``tests/test_compat.py`` holds the two equal)."""
    from recbole.model.sequential_recommender.bert4rec import BERT4Rec

    recbole_loss = BERT4Rec.calculate_loss
    if hasattr(recbole_loss, "recbole"):
        return

    def calculate_loss(self, interaction):
        if self.loss_type != "CE":
            return recbole_loss(self, interaction)
        mask_index = interaction[self.MASK_INDEX]
        hidden = self.forward(interaction[self.MASK_ITEM_SEQ])
        rows, slots = (mask_index > 0).nonzero(as_tuple=True)
        logits = hidden[rows, mask_index[rows, slots]] @ self.item_embedding.weight[: self.n_items].T + self.output_bias
        return torch.nn.functional.cross_entropy(logits, interaction[self.POS_ITEMS][rows, slots])

    calculate_loss.recbole = recbole_loss
    BERT4Rec.calculate_loss = calculate_loss


def apply():
    """Apply every fix; safe to call more than once."""
    require_recbole()
    restore_numpy_aliases()
    restore_dok_update()
    keep_autograd_anomaly_detection_off()
    fill_missing_values_by_assignment()
    sort_interactions_as_arrays()
    use_torch_amp_in_recbole_trainer()
    tensorboard_on_rank_zero()
    create_folders_concurrently()
    log_pretrained_paths_without_logging_errors()
    collect_tensors_only()
    follow_data_path_for_ml100k()
    bert4rec_scores_real_mask_slots_only()
