"""Reading a user's file with one clear error, and writing results atomically.

Every file a user hands over (a config file, an interaction file) is read through :func:`read_file_bytes`, so a
missing file, a directory or a file without read permission gets the same message everywhere. Checkpoints and the
per-run JSON records of ``compare`` and ``tune`` are written through :func:`atomic_write`: a process killed while
writing leaves the previous file intact (and at most a stray ``.tmp-<pid>`` file). RecBole's atomic files' header
lines (``name:type`` columns) are parsed in one place, :func:`parse_atomic_header`. :func:`claimed` lets
processes that share an output folder split its jobs.
"""

import contextlib
import json
import os

try:
    import fcntl
except ImportError:  # Windows: no claims, one process per output folder
    fcntl = None

import torch


def read_file_bytes(path, what):
    """The file's bytes, or a ``FileNotFoundError`` that says why it cannot be read (missing, a directory,
    permissions); ``what`` names the file's role, e.g. "interaction file"."""
    if os.path.isdir(path):
        raise FileNotFoundError(f"{what} {path} is a directory, not a file.")
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist.") from None
    except PermissionError:
        raise FileNotFoundError(f"{what} {path} cannot be read (permission denied); make it readable "
                                f"(chmod u+r {path}) or run as its owner.") from None
    except OSError as error:
        raise FileNotFoundError(f"{what} {path} cannot be read: {error.strerror or error}.") from None


@contextlib.contextmanager
def atomic_write(path, mode="wb", newline=None):
    """A handle on a temporary file that replaces ``path`` once the block ends without an error (flushed and
    synced first); the folder is created if needed. Text modes write UTF-8 with ``newline`` as ``open``'s."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": newline})) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_json(path, record):
    """Write ``record`` as JSON atomically (the comparison's and the tuner's per-run records)."""
    with atomic_write(path, "w") as handle:
        json.dump(record, handle, indent=1, default=str)


def read_json(path):
    """A JSON file's value, ``None`` when the file does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# Keys this package gained after checkpoints were written, whose every earlier checkpoint was made with one value
# (the behaviour before the key existed): a checkpoint without the key is read as having it, so that a resume or a
# transfer with another value is refused instead of taken for a key the checkpoint never had.
VALUES_BEFORE_THE_KEY = {"text_whitening": "pca"}


def with_values_before_the_key(config):
    """A checkpoint's saved configuration with :data:`VALUES_BEFORE_THE_KEY` for the keys it lacks."""
    return {**VALUES_BEFORE_THE_KEY, **config}


def saved_config(path):
    """The configuration a checkpoint of this package stores (:func:`with_values_before_the_key`), read without
    loading its tensors (memory-mapped)."""
    return with_values_before_the_key(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["config"])


def parse_atomic_header(line, field_separator="\t"):
    """``[(name, type)]`` of a RecBole atomic file's header line (``item_id:token`` gives ``("item_id", "token")``)."""
    return [tuple(column.partition(":")[::2]) for column in line.rstrip("\r\n").split(field_separator)]


def atomic_header(path, field_separator="\t", encoding="utf-8"):
    """:func:`parse_atomic_header` of the first line of the atomic file at ``path``."""
    with open(path, encoding=encoding) as handle:
        return parse_atomic_header(handle.readline(), field_separator)


@contextlib.contextmanager
def claimed(folder):
    """Whether this process holds ``folder``'s claim for the block: an exclusive, non-blocking ``flock`` on
    ``folder/.claim``, which the system releases when the holder ends, even killed, so a claim never outlives its
    process and a resumed job is never locked out. Two processes sharing an output folder (``compare`` on a
    cluster) thus never run one job at once. Always ``True`` where ``fcntl`` is missing (Windows)."""
    os.makedirs(folder, exist_ok=True)
    if fcntl is None:
        yield True
        return
    with open(os.path.join(folder, ".claim"), "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
