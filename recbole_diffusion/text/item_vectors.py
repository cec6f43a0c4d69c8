"""One vector per item of a RecBole dataset, from the item's text or from the user's own vectors.

Text: the ``.item`` file's ``item_text_fields``, joined by ``item_text_template`` (a ``str.format`` template naming
the fields; by default the values joined by ``". "``), encoded by :class:`~recbole_diffusion.text.encoder.TextEncoder`.
An item whose text fields are all empty, or which the ``.item`` file lacks, has no text.

Vectors are written once per dataset, encoder and text to ``text_cache_dir`` (default
``$XDG_CACHE_HOME/recbole-diffusion`` or ``~/.cache/recbole-diffusion``; the data folder may be read-only) as a
RecBole atomic feature file: a header ``item_id:token<TAB>item_text_emb:float_seq`` and one row per item with text,
the floats separated by RecBole's ``seq_separator``. That is the form RecBole's own ``preload_weight`` reads, and a
user who has other vectors (say, the PreferDiff paper's 3072-d API embeddings) gives such a file as
``item_text_embeddings`` and skips the encoder: its token column is the item id field, its one ``float_seq`` column
the vectors.
"""

import hashlib
import json
import logging
import os
import re
import string
import time
from typing import NamedTuple

import numpy as np
import pandas as pd

from recbole_diffusion.text.encoder import ENCODERS, TextEncoder
from recbole_diffusion.utils.files import parse_atomic_header

VECTOR_FIELD = "item_text_emb"
# A merged dataset's tokens are "<source dataset>/<token>" (merge_datasets; recbole_diffusion.data.slices).
SOURCE_SEPARATOR = "/"
DEFAULT_JOINER = ". "


class ItemVectors(NamedTuple):
    """``vectors`` (``n_items x d`` float32, RecBole's item ids; zero rows where ``has_vector`` is False, row 0 is
    the padding item) and ``source``, what they came from (a file path), for the log."""

    vectors: np.ndarray
    has_vector: np.ndarray
    source: str


def default_cache_dir():
    """``$XDG_CACHE_HOME/recbole-diffusion``, else ``~/.cache/recbole-diffusion``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "recbole-diffusion")


def vector_file_width(path, field_separator="\t", seq_separator=" "):
    """The number of values in the first row of a vector file's ``float_seq`` column (``None`` if it has no such
    column or no row): the width a text table from this file will have, known before the dataset is built."""
    with open(path, encoding="utf-8") as handle:
        kinds = [kind for _, kind in parse_atomic_header(handle.readline(), field_separator)]
        if "float_seq" not in kinds:
            return None
        column = kinds.index("float_seq")
        for line in handle:
            if line.strip():
                cells = line.rstrip("\r\n").split(field_separator)
                return len([value for value in cells[column].split(seq_separator) if value]) \
                    if column < len(cells) else None
    return None


def template_fields(template):
    """The field names a ``str.format`` template refers to (``{title}``, ``{title[0]}`` and ``{title!r}`` name
    ``title``; a positional ``{}`` or ``{0}`` names the empty string or a number, which no field is)."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            names.append(re.split(r"[.\[]", name, maxsplit=1)[0])
    return names


def item_texts(config, dataset):
    """``{item token: text}`` for the dataset's items whose ``item_text_fields`` are not all missing or empty.

    The ``.item`` file is read as RecBole reads it (pandas, RecBole's ``field_separator`` and ``encoding``): quoted
    fields, short rows and missing values (``NaN``, empty) alike."""
    fields, template = config["item_text_fields"], config["item_text_template"]
    path = os.path.join(config["data_path"], f"{config['dataset']}.item")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"item_table is text, but {path} does not exist: item text comes from the dataset's "
                                ".item file (item_text_fields), or give your own vectors with item_text_embeddings")
    frame = pd.read_csv(path, delimiter=config["field_separator"], dtype=str, encoding=config["encoding"],
                        engine="python")
    columns = {column.partition(":")[0]: column for column in frame.columns}
    item_field = config["ITEM_ID_FIELD"]
    missing = [field for field in [item_field, *fields] if field not in columns]
    if missing:
        raise ValueError(f"item_text_fields: {path} has no field {', '.join(map(repr, missing))}; its fields are "
                         f"{', '.join(columns)}")
    known = dataset.field2token_id[dataset.iid_field]
    frame = frame[frame[columns[item_field]].isin(list(known))]
    values = frame[[columns[field] for field in fields]].fillna("").apply(lambda column: column.str.strip())
    values.columns = fields
    texts = {}
    for token, row in zip(frame[columns[item_field]], values.to_dict("records")):
        if any(row.values()):
            texts[token] = (template.format(**row) if template
                            else DEFAULT_JOINER.join(value for value in row.values() if value))
    return texts


def write_vector_file(path, item_field, tokens, vectors, seq_separator=" "):
    """Write ``tokens`` and their ``vectors`` as a RecBole atomic feature file (moved into place when complete)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(f"{item_field}:token\t{VECTOR_FIELD}:float_seq\n")
        for token, vector in zip(tokens, vectors):
            handle.write(token + "\t" + seq_separator.join(f"{value:.9g}" for value in vector) + "\n")
    os.replace(partial, path)


def read_vector_file(path, dataset, seq_separator=" ", field_separator="\t"):
    """``ItemVectors`` from an atomic feature file of item vectors (see the module's docstring).

    Rows of tokens the dataset lacks are skipped (the file may cover more items); a repeated token, rows of different
    lengths or a non-finite value are refused."""
    item_field = dataset.iid_field
    with open(path, encoding="utf-8") as handle:
        header = parse_atomic_header(handle.readline(), field_separator)
        names = [name for name, _ in header]
        float_columns = [index for index, (_, kind) in enumerate(header) if kind == "float_seq"]
        if item_field not in names or header[names.index(item_field)][1] != "token" or len(float_columns) != 1:
            raise ValueError(f"item_text_embeddings: {path} must have a column {item_field}:token (the item id "
                             f"field) and one float_seq column; its header is "
                             f"{', '.join(name + ':' + kind for name, kind in header)}")
        item_column, vector_column = names.index(item_field), float_columns[0]
        known = dataset.field2token_id[item_field]
        rows, seen, width, skipped = {}, set(), None, 0
        for line_number, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            cells = line.rstrip("\r\n").split(field_separator)
            token = cells[item_column]
            if token in seen:
                raise ValueError(f"item_text_embeddings: {path} line {line_number} repeats item {token!r}")
            seen.add(token)
            if token not in known:
                skipped += 1
                continue
            try:
                vector = np.array([float(value) for value in cells[vector_column].split(seq_separator) if value],
                                  dtype=np.float64)
            except (IndexError, ValueError) as error:
                raise ValueError(f"item_text_embeddings: {path} line {line_number}: {error}") from error
            width = len(vector) if width is None else width
            if len(vector) != width or not np.isfinite(vector).all():
                raise ValueError(f"item_text_embeddings: {path} line {line_number} (item {token!r}) has "
                                 f"{len(vector)} values{'' if np.isfinite(vector).all() else ', not all finite'}; "
                                 f"every row must hold {width} finite values")
            rows[known[token]] = vector
    if not rows:
        raise ValueError(f"item_text_embeddings: no row of {path} is an item of the dataset "
                         f"({skipped} rows of other items)")
    vectors = np.zeros((dataset.item_num, width), dtype=np.float32)
    has_vector = np.zeros(dataset.item_num, dtype=bool)
    ids = np.fromiter(rows, dtype=np.int64, count=len(rows))
    vectors[ids] = np.stack(list(rows.values()))
    has_vector[ids] = True
    if skipped:
        logging.getLogger().info(f"item_text_embeddings: {skipped} rows of {path} are items the dataset does not have "
                          "(skipped)")
    return ItemVectors(vectors, has_vector, path)


def cache_path(config, texts):
    """The cache file of these texts under the configured encoder: the dataset's name, the encoder's, and a digest
    of the encoder's pinned weights and every item's text (so another text or encoder is another file)."""
    name = config["item_text_encoder"]
    digest = hashlib.sha256(json.dumps([name, ENCODERS[name].weights_sha256, config["seq_separator"],
                                        sorted(texts.items())]).encode())
    cache_dir = config["text_cache_dir"] or default_cache_dir()
    return os.path.join(cache_dir, f"{config['dataset']}-{name}-{digest.hexdigest()[:16]}.itememb")


def encode_item_texts(config, dataset):
    """The cached vectors of the dataset's item texts, encoding (and caching) them on first use."""
    texts = item_texts(config, dataset)
    if not texts:
        raise ValueError(f"item_text_fields {config['item_text_fields']}: no item of {config['dataset']} has text")
    path = cache_path(config, texts)
    if not os.path.isfile(path):
        start = time.perf_counter()
        encoder = TextEncoder(config["item_text_encoder"])
        tokens = sorted(texts)
        vectors = encoder.encode([texts[token] for token in tokens])
        write_vector_file(path, dataset.iid_field, tokens, vectors, config["seq_separator"])
        logging.getLogger().info(f"encoded {len(tokens)} item texts with {encoder.name} in "
                                 f"{time.perf_counter() - start:.1f} s; cached in {path}")
    return read_vector_file(path, dataset, config["seq_separator"])


def item_vectors(config, dataset):
    """The dataset's item vectors: the user's ``item_text_embeddings`` file, else the encoded item text.

    Items without a vector are counted in one warning; their rows stay zero (the caller says what that means)."""
    if config["item_text_embeddings"]:
        result = read_vector_file(config["item_text_embeddings"], dataset, config["seq_separator"],
                                  config["field_separator"])
    else:
        result = encode_item_texts(config, dataset)
    without = np.flatnonzero(~result.has_vector[1:]) + 1
    if len(without):
        examples = ", ".join(map(str, dataset.id2token(dataset.iid_field, without[:5])))
        logging.getLogger().warning(f"{len(without)} of {dataset.item_num - 1} items have no text vector (e.g. {examples}) "
                             f"in {result.source}")
    return result
