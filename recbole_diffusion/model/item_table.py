"""The item table a model diffuses and scores against: learned ids (``item_table: id``) or frozen, whitened text
vectors (``item_table: text``, PreferDiff-T's table; MODELS.md, PreferDiff).

A text table makes every item, seen in training or not, a point of the space the model denoises in: an item that
never appeared in training is ranked by where its text puts it. It is built once, when the model is, from
:func:`recbole_diffusion.text.item_vectors.item_vectors`, and never trained.

Choices, against the authors' code:

* The table's width sets the model's width (``hidden_size`` is not used; the log says so), as in the authors' code,
  where d is the embedding's 3072. The authors put no trained map between the text and the ranked space; ours is
  optional and off by default (``item_text_adapter``: one learned square linear map, no bias, starting at the
  identity, applied to every row alike, so items never trained on stay rankable).
* Whitening (``text_whitening``) is the authors' by default (``pca``: rotated to the covariance's eigenvectors, so
  each dataset's table has its own axes, in the order and signs its eigenvectors happen to have). ``zca`` rotates
  back to the encoder's axes afterwards: the same unit covariance, but the tables of two datasets from one encoder
  share the encoder's coordinates, which a transfer (``transfer_from``) needs, since the trained network reads the
  target's table in the axes it was trained in. On ml-100k's year cuts, a target film's row whitened alone and the
  same film under a source's whitening have a mean cosine of about 0 under ``pca`` and 0.24-0.48 under ``zca``
  (BENCHMARKS run 22: a few hundred films per source estimate a 384-d covariance loosely).
* Whitening floors the eigenvalues at ``text_whitening_floor`` times the largest instead of adding the authors'
  absolute 1e-7: with fewer items than dimensions (or any rank-deficient table) the covariance has zero
  eigenvalues, whose directions then stay near zero instead of blowing numerical noise up by 1/sqrt(1e-7).
  Directions above the floor come out at unit variance exactly as the authors' do.
* A dataset's table is whitened once. A merge of several datasets (``merge_datasets``, pretraining on several
  domains) is whitened as the authors do: each source's rows alone, then all of them stacked, once more (on one
  domain that second pass is the identity, up to the floor). A target dataset of a transfer is one domain.
* The padding row is zero (never scored, masked in every history), where the authors' is random. Items without a
  vector get the table's centre, a zero row after whitening: they score 0 against every sample, neither pushed up
  nor down (:func:`~recbole_diffusion.text.item_vectors.item_vectors` warns with their count).
"""

import logging

import numpy as np
import torch
from torch import nn

from recbole_diffusion.model.layers import embedding_table
from recbole_diffusion.text.item_vectors import SOURCE_SEPARATOR
from recbole_diffusion.text.item_vectors import item_vectors

ITEM_TABLES = ("id", "text")
WHITENING_BASES = ("pca", "zca")
# The state-dict keys of a text table's rows (without and with the adapter): what a transfer rebuilds from the
# target's text instead of loading.
TEXT_TABLE_KEYS = ("item_embedding.weight", "item_embedding.table.weight")


class AdaptedTextTable(nn.Module):
    """The frozen text table followed by a learned square linear map (``item_text_adapter``), the identity at the
    start. Used as an ``nn.Embedding`` is: called on ids, and ``weight`` for every row."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.adapter = nn.Linear(table.embedding_dim, table.embedding_dim, bias=False)
        with torch.no_grad():
            self.adapter.weight.copy_(torch.eye(table.embedding_dim))
        self.embedding_dim = table.embedding_dim

    def forward(self, ids):
        return self._adapted(self.table(ids))

    @property
    def weight(self):
        return self._adapted(self.table.weight)

    def _adapted(self, rows):
        """The adapter's rows in float32 under autocast too (RecBole's ``enable_amp``), as an id table's rows are:
        the diffusion targets and their noise keep full precision."""
        if not torch.amp.is_autocast_available(rows.device.type):
            return self.adapter(rows)
        with torch.autocast(rows.device.type, enabled=False):
            return self.adapter(rows.float())


def whitening(vectors, floor, basis="pca"):
    """The whitening fitted on the rows of ``vectors``, as a function of rows: centred by their mean, rotated to the
    eigenvectors of their covariance and scaled by ``1 / sqrt(max(eigenvalue, floor * largest eigenvalue))`` (unit
    covariance on every direction above the floor; float64). ``basis`` ``zca`` then rotates back to the vectors'
    own axes."""
    if basis not in WHITENING_BASES:
        raise ValueError(f"whitening basis {basis!r}: one of {', '.join(WHITENING_BASES)}")
    vectors = np.asarray(vectors, dtype=np.float64)
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(vectors))
    floored = np.maximum(eigenvalues, floor * max(eigenvalues.max(), np.finfo(np.float64).tiny))
    projection = eigenvectors / np.sqrt(floored)
    if basis == "zca":
        projection = projection @ eigenvectors.T
    return lambda rows: (np.asarray(rows, dtype=np.float64) - mean) @ projection


def whiten(vectors, floor, basis="pca"):
    """``vectors`` whitened by their own statistics (:func:`whitening`)."""
    return whitening(vectors, floor, basis)(vectors)


def text_item_table(config, dataset):
    """The frozen table of whitened item vectors; the padding row and items without a vector are zero."""
    found = item_vectors(config, dataset)
    rows = found.has_vector.copy()
    rows[0] = False
    floor, basis = config["text_whitening_floor"], config["text_whitening"]
    vectors = found.vectors.astype(np.float64)
    if config["merge_datasets"]:
        tokens = np.asarray(dataset.field2id_token[dataset.iid_field], dtype=str)
        for source in config["merge_datasets"]:
            domain = rows & np.char.startswith(tokens, source + SOURCE_SEPARATOR)
            if domain.any():
                vectors[domain] = whiten(vectors[domain], floor, basis)
    table = np.zeros(found.vectors.shape, dtype=np.float32)
    table[rows] = whiten(vectors[rows], floor, basis)
    return nn.Embedding.from_pretrained(torch.from_numpy(table), freeze=True, padding_idx=0)


def item_table(config, dataset, n_items, hidden_size, init_std):
    """The model's item table: learned ``N(0, init_std^2)`` ids, or the frozen text table (whose width is then the
    model's)."""
    if config["item_table"] != "text":
        return embedding_table(n_items, hidden_size, init_std, padding_idx=0)
    table = text_item_table(config, dataset)
    width = table.embedding_dim
    if width % config["n_heads"]:
        raise ValueError(f"item_table text: the text vectors' width {width} (the model's width) is not a multiple of "
                         f"n_heads {config['n_heads']}")
    logging.getLogger().info(f"item_table text: the model's width is the text table's, {width} "
                             f"(hidden_size {hidden_size} is not used)"
                             f"{'; a learned linear adapter follows it' if config['item_text_adapter'] else ''}")
    return AdaptedTextTable(table) if config["item_text_adapter"] else table
