"""Data loaders over real tokens: batches of histories of similar length, each cut after its longest history.

RecBole pads every history to ``MAX_ITEM_LIST_LENGTH``. On Amazon Beauty the training prefixes hold 8.4 real
items on average and the test histories 7.7, so at L = 50 about 5 positions in 6 are padding, and a random batch
of 512 always holds one history of length 50: cutting a batch after its longest history gains nothing unless
batches are formed by length. This package's models mask padding on the key side and read their output at the
last real position, so the columns that every row of a batch pads change nothing they compute.

* :class:`FullSortEvalLoader`: RecBole's full-ranking loader with a chosen history mask (``eval_history_mask``)
  and, for this package's models, the users visited in order of history length (longest first) with each batch
  cut after its longest history. Evaluation noise is keyed by user (and DiffuRec's per-position noise by element
  index, which a cut does not move), so a user's scores do not depend on the batch: the metrics are the same.
* :class:`LengthBatchedTrainLoader`: with ``batch_by_length: True``, training batches of similar lengths, each cut
  after its longest history. Cutting changes which random numbers each batch draws (dropout, DiffuRec's lambda
  over B x L x d), so it belongs to that key; RecBole's own loader trains when the key is off.
"""

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader

# Batches per pool: a random pool of this many batches is sorted by length and cut into batches, whose order is then
# shuffled. Within a pool of 50 batches the neighbours of a history have nearly its length, and every epoch mixes
# the histories of a length differently.
POOL_BATCHES = 50


def cut_to_longest(interaction, config):
    """``interaction`` with every ``<field>_list`` column cut after its longest real history (in place)."""
    longest = int(interaction[config["ITEM_LIST_LENGTH_FIELD"]].max())
    for name in interaction.columns:
        value = interaction[name]
        if name.endswith(config["LIST_SUFFIX"]) and value.dim() >= 2 and value.size(1) > longest:
            interaction[name] = value[:, :longest]
    return interaction


def by_length(dataset, config):
    """A copy of a sequential dataset with its rows in order of history length, longest first (stable)."""
    lengths = dataset.inter_feat[config["ITEM_LIST_LENGTH_FIELD"]].numpy()
    order = np.argsort(-lengths, kind="stable")
    return dataset.copy(dataset.inter_feat[torch.from_numpy(order)])


class FullSortEvalLoader(FullSortEvalDataLoader):
    """RecBole's full-ranking loader with the history mask ``history`` (an object whose ``batch_index(users)``
    gives RecBole's ``history_index``, or ``None``: nothing masked) and, with ``real_tokens``, length-ordered,
    cut batches (a sequential dataset only)."""

    def __init__(self, config, dataset, sampler, history=None, real_tokens=False):
        self.history, self.real_tokens = history, real_tokens
        super().__init__(config, by_length(dataset, config) if real_tokens else dataset, sampler, shuffle=False)

    def collate_fn(self, index):
        interaction, _, positive_u, positive_i = super().collate_fn(index)
        if self.real_tokens:
            cut_to_longest(interaction, self.config)
        if self.history is None:
            return interaction, None, positive_u, positive_i
        return interaction, self.history.batch_index(interaction[self.uid_field].numpy()), positive_u, positive_i


class LengthBatchedTrainLoader(TrainDataLoader):
    """Training batches of similar history lengths, each cut after its longest history (``batch_by_length``).

    Every epoch draws, from the loader's own seeded generator only (so a resumed run draws the same batches): a
    permutation of the rows, cut into pools of :data:`POOL_BATCHES` batches; each pool sorted by length (stably, so
    rows of one length keep their random order) and cut into batches of ``train_batch_size``; then a permutation
    of the batches. In a distributed run the batches are the global batches of every process (``train_batch_size``
    stays the global batch): each process takes every ``world_size``-th row of each, and a batch smaller than the
    number of processes is filled with its own rows repeated, as RecBole's ``DistributedSampler`` pads.
    """

    def __init__(self, config, dataset, sampler, shuffle=True):
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        self.global_batch = self.step if config["single_spec"] else self.step * config["world_size"]  # rows
        self.lengths = torch.as_tensor(dataset.inter_feat[config["ITEM_LIST_LENGTH_FIELD"]])

    def epoch_batches(self):
        """This process's row indices of every batch of the coming epoch (draws from :attr:`generator`; with
        ``shuffle: False`` the rows keep their order and only the pools are sorted)."""
        rows = (torch.randperm(self.sample_size, generator=self.generator) if self.shuffle
                else torch.arange(self.sample_size))
        pool = self.global_batch * POOL_BATCHES
        batches = []
        for start in range(0, self.sample_size, pool):
            members = rows[start:start + pool]
            ordered = members[torch.argsort(self.lengths[members], stable=True)]
            batches += list(ordered.split(self.global_batch))
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]
        if self.config["single_spec"]:
            return batches
        world_size, rank = self.config["world_size"], torch.distributed.get_rank()
        return [batch.repeat((world_size + len(batch) - 1) // len(batch))[rank::world_size] if len(batch) < world_size
                else batch[rank::world_size] for batch in batches]

    def __iter__(self):
        for indices in self.epoch_batches():
            yield cut_to_longest(self.collate_fn(indices.numpy()), self.config)

    def __len__(self):
        return (self.sample_size + self.global_batch - 1) // self.global_batch
