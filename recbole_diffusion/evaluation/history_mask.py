"""One history-masking policy for every model's full-ranking evaluation (the ``eval_history_mask`` key).

RecBole 1.2.1 masks (scores -inf before ranking), for general models and every other non-sequential model, the
items a user interacted with in the phases before the evaluated one: the training items at validation, the
training and validation items at test, minus that phase's own targets (a target the user already had keeps its
score). For sequential models it masks nothing. Comparing the two kinds then mixes two protocols;
``eval_history_mask`` chooses one for all:

* ``auto``: RecBole's behaviour; the evaluation loaders are RecBole's own, untouched;
* ``all``: sequential models are masked exactly like general ones: at each phase every item of the user's
  earlier phases (the whole history, not the ``MAX_ITEM_LIST_LENGTH`` window the model reads), minus the
  phase's targets;
* ``none``: no model is masked (general models rank their history items too).

The padding item is excluded in every case (RecBole's ``scores[:, 0] = -inf``). The mask travels as RecBole's
``history_index`` (row, item) index tensors on the CPU, as RecBole's own loader hands them over; RecBole's
``_full_sort_batch_eval`` applies it to the scores on their device.
"""

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.utils import ModelType

from recbole_diffusion.data.dataloader import FullSortEvalLoader

EVAL_HISTORY_MASKS = ("auto", "all", "none")


def history_mask_policy(config):
    """The configured policy; a configuration without the key (an older checkpoint's) is ``auto``."""
    return config["eval_history_mask"] or "auto"


def _pair_keys(users, items, item_num):
    """One int64 key per (user, item) pair: ``user * item_num + item``."""
    return np.asarray(users, dtype=np.int64) * item_num + np.asarray(items, dtype=np.int64)


class UserItemIndex:
    """Per-user item sets in CSR form, computed once; :meth:`batch_index` gathers a batch's without a loop."""

    def __init__(self, keys, user_num, item_num):
        keys = np.unique(keys)
        self.items = keys % item_num
        counts = np.bincount(keys // item_num, minlength=user_num)
        self.indptr = np.concatenate([[0], np.cumsum(counts)])

    def batch_index(self, users):
        """RecBole's ``history_index``: (row in the batch, item) for every item of every row's user."""
        users = np.asarray(users, dtype=np.int64)
        starts = self.indptr[users]
        counts = self.indptr[users + 1] - starts
        rows = np.repeat(np.arange(len(users)), counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        items = self.items[np.repeat(starts, counts) + within]
        return torch.from_numpy(rows), torch.from_numpy(items)


def sequential_history(config, earlier, current):
    """What RecBole masks for a general model, built from a sequential split: for each user, the items of the
    ``earlier`` phases' datasets minus the targets of ``current``.

    Each earlier row contributes its target and the first item of its input window; with RecBole's prefix
    augmentation (every interaction after a user's first is the target of one row) these cover every item the
    user had before the phase, however long the history, with one column of the item lists read.
    """
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    item_list = iid + config["LIST_SUFFIX"]
    item_num = current.item_num
    parts = []
    for dataset in earlier:
        frame = dataset.inter_feat
        users = frame[uid].numpy()
        parts += [_pair_keys(users, frame[iid].numpy(), item_num),
                  _pair_keys(users, frame[item_list][:, 0].numpy(), item_num)]
    keys = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    targets = _pair_keys(current.inter_feat[uid].numpy(), current.inter_feat[iid].numpy(), item_num)
    return UserItemIndex(keys[~np.isin(keys, targets)], current.user_num, item_num)


def apply_eval_history_mask(config, train_data, valid_data, test_data, real_tokens=False, history_from=None):
    """``(valid_data, test_data, note)``: the evaluation loaders under ``config['eval_history_mask']`` and a
    line for the log (``None`` when nothing changed).

    ``auto``, ``all`` for a non-sequential model and ``none`` for a sequential one keep RecBole's masking; RecBole's
    loaders themselves are returned unless ``real_tokens`` (this package's models) asks for full-ranking loaders
    that visit users by history length and cut padding
    (:class:`~recbole_diffusion.data.dataloader.FullSortEvalLoader`). The others are rebuilt from the same datasets
    and samplers. A sampled-ranking loader is kept as it is. ``history_from``: the ``(train, valid)`` loaders the
    masked histories are read from when they differ from the ones trained and validated on (``holdout_items_ratio``
    removes held-out items from those, not from what a user had).
    """
    policy = history_mask_policy(config)
    sequential = config["MODEL_TYPE"] == ModelType.SEQUENTIAL
    as_recbole = policy == "auto" or (policy == "all") != sequential
    if as_recbole and not real_tokens:
        return valid_data, test_data, None
    history_train, history_valid = history_from or (train_data, valid_data)
    loaders = []
    for earlier, loader in (((history_train,), valid_data), ((history_train, history_valid), test_data)):
        if not isinstance(loader, FullSortEvalDataLoader):
            loaders.append(loader)
            continue
        history = None
        if policy == "all" and sequential:
            history = sequential_history(config, [data._dataset for data in earlier], loader._dataset)
        loaders.append(FullSortEvalLoader(config, loader._dataset, loader._sampler, history,
                                          real_tokens=real_tokens and sequential))
    if as_recbole:
        note = None
    elif policy == "none":
        note = "eval_history_mask=none: the history items of this general model are not masked at evaluation"
    else:
        users = np.unique(test_data._dataset.inter_feat[config["USER_ID_FIELD"]].numpy())
        masked = np.diff(loaders[1].history.indptr)[users].mean() if len(users) else 0.0
        note = (f"eval_history_mask=all: this sequential model's evaluation masks each user's earlier items as "
                f"RecBole does for general models (at test {masked:.1f} items per user on average)")
    return loaders[0], loaders[1], note
