"""``holdout_items_ratio``: a share of the items held out of training entirely, for zero-shot ranking of unseen items.

The held-out items H are a seeded random ``holdout_items_ratio`` share of the items that have interactions (seed
``holdout_items_seed``, default ``seed``; items known only from the ``.item`` file are never drawn, so the share is
the share of rankable items). After RecBole's split:

* training: the rows whose target is in H are dropped, and the items of H are removed from every training history
  (the rest of the history keeps its order; it is not refilled from older items), so no held-out item is ever a
  training target or in a training history. A history left empty drops its row. A general (non-sequential) model's
  training rows with an item of H are dropped;
* validation: the rows whose target is in H are dropped, so early stopping never looks at a held-out target;
* test: every user as usual (all items), and
  :func:`recbole_diffusion.evaluation.metrics.heldout_test_result` gives the metrics over the test users whose
  target is in H (their histories may hold held-out items: at evaluation that is the user's real past).

What this does not hide: a model that scores every item in training (SASRec's cross-entropy over all items, sampled
negatives) still sees held-out items as negatives, which pushes an id model's rows for them down; a text table is
built from every item's text, which is the point.
"""

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader


def heldout_items(config, dataset):
    """The sorted ids of the held-out items, drawn among the items with interactions (empty when
    ``holdout_items_ratio`` is 0)."""
    ratio = config["holdout_items_ratio"]
    items = np.unique(dataset.inter_feat[dataset.iid_field].numpy())
    count = int(round(ratio * len(items)))
    if not count:
        return np.zeros(0, dtype=np.int64)
    seed = config["seed"] if config["holdout_items_seed"] is None else config["holdout_items_seed"]
    return np.sort(np.random.default_rng(seed).choice(items, size=count, replace=False)).astype(np.int64)


def _without_heldout_histories(dataset, inter, heldout):
    """``inter`` with the held-out items removed from its list fields (every ``*_list`` field moves alike) and the
    rows left without history dropped."""
    item_list = dataset.config["ITEM_ID_FIELD"] + dataset.config["LIST_SUFFIX"]
    length_field = dataset.config["ITEM_LIST_LENGTH_FIELD"]
    sequences, lengths = inter[item_list], inter[length_field]
    positions = torch.arange(sequences.size(1), device=sequences.device)
    keep = (positions < lengths[:, None]) & ~torch.isin(sequences, heldout)
    new_positions = keep.long().cumsum(dim=1) - 1
    rows = torch.arange(sequences.size(0), device=sequences.device)[:, None].expand_as(sequences)
    for field in [field for field in inter.columns if field.endswith(dataset.config["LIST_SUFFIX"])]:
        values = inter[field]
        moved = torch.zeros_like(values)
        moved[rows[keep], new_positions[keep]] = values[keep]
        inter[field] = moved
    inter[length_field] = keep.sum(dim=1).to(lengths.dtype)
    return inter[inter[length_field] > 0]


def drop_heldout_items(config, train_data, valid_data, heldout):
    """New training and validation loaders without the held-out items (see the module's docstring) and a note
    for the log with the counts."""
    if type(train_data) is not TrainDataLoader:
        raise ValueError(f"holdout_items_ratio: {config['model']} trains from a {type(train_data).__name__} (a "
                         "knowledge-graph or other special loader), which held-out items are not removed from; use "
                         "holdout_items_ratio 0 with it")
    held = torch.as_tensor(heldout)
    train_set, valid_set = train_data._dataset, valid_data._dataset
    item_field = config["ITEM_ID_FIELD"]
    train_inter = train_set.inter_feat
    before = len(train_inter)
    train_inter = train_inter[~torch.isin(train_inter[item_field], held)]
    if config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"] in train_inter.columns:
        train_inter = _without_heldout_histories(train_set, train_inter, held)
    valid_inter = valid_set.inter_feat
    valid_kept = ~torch.isin(valid_inter[item_field], held)
    if not len(train_inter) or not bool(valid_kept.any()):
        raise ValueError(f"holdout_items_ratio={config['holdout_items_ratio']}: holding {len(heldout)} of "
                         f"the items with interactions out leaves {len(train_inter)} training rows and "
                         f"{int(valid_kept.sum())} validation rows; hold out a smaller share")
    train = type(train_data)(config, train_set.copy(train_inter), train_data._sampler, shuffle=train_data.shuffle)
    valid = type(valid_data)(config, valid_set.copy(valid_inter[valid_kept]), valid_data._sampler,
                             shuffle=valid_data.shuffle)
    note = (f"holdout_items_ratio {config['holdout_items_ratio']}: {len(heldout)} of the items with interactions "
            f"held out of training; {before - len(train_inter)} of {before} training rows dropped (held-out target "
            f"or no history left), {int((~valid_kept).sum())} of {len(valid_kept)} validation rows dropped "
            "(held-out target); the test keeps every user and reports the held-out targets' users apart")
    return train, valid, note
