"""Small datasets cut from RecBole atomic files: what the self-check, the tests and the benchmarks train on."""

import os

from recbole_diffusion.text.item_vectors import SOURCE_SEPARATOR
from recbole_diffusion.utils.files import parse_atomic_header

ML100K_INTER = os.path.join(os.path.dirname(__import__("recbole").__file__), "dataset_example", "ml-100k",
                            "ml-100k.inter")
ML100K_ITEM = ML100K_INTER[:-len(".inter")] + ".item"


def write_user_slice(source_inter, name, n_users, folder, positions=False):
    """Copy every row of the first ``n_users`` users (in file order; ``None``: all) of ``source_inter`` to
    ``folder/<name>/<name>.inter`` and return ``folder``, RecBole's ``data_path`` for dataset ``name``.

    ``positions``: the times written as positions (:func:`write_in_positions`). The file is written beside its
    target and moved into place, so a run reading an earlier copy of the same slice (a second search started on it)
    never sees a half-written file."""
    target_dir = os.path.join(folder, name)
    os.makedirs(target_dir, exist_ok=True)
    target_path = os.path.join(target_dir, f"{name}.inter")
    partial_path = f"{target_path}.{os.getpid()}.partial"
    kept = {}
    with open(source_inter, encoding="utf-8") as source, open(partial_path, "w", encoding="utf-8") as target:
        header = source.readline()
        target.write(header)
        columns = _column_names(header)
        user_column = columns.index("user_id")
        for line in source:
            user = line.rstrip("\r\n").split("\t")[user_column]
            if user not in kept and (n_users is None or len(kept) < n_users):
                kept[user] = []
            if user in kept:
                if positions:
                    kept[user].append(line.rstrip("\r\n").split("\t"))
                else:
                    target.write(line)
        if positions:
            write_in_positions(target, kept, columns.index("timestamp"))
    os.replace(partial_path, target_path)
    return folder


def write_in_positions(target, rows_by_user, time_column):
    """Write each user's rows (lists of cells) in time order, ties in the order given, with the time replaced by
    their positions 1, 2, ...: RecBole keeps times as float32, where Unix seconds closer than about a minute tie
    and fall back to the file's order, so positions keep leave-one-out's targets those of the exact times."""
    for rows in rows_by_user.values():
        rows.sort(key=lambda row: float(row[time_column]))  # stable: ties keep the given order
        for position, row in enumerate(rows, 1):
            row[time_column] = str(position)
            target.write("\t".join(row) + "\n")


def write_item_subset(source_inter, source_item, name, keep_item, folder, max_users=None, positions=False):
    """``folder/<name>/<name>.inter`` and ``.item`` with only the items whose ``.item`` row ``keep_item`` accepts
    (called with ``{field name: value}``) and the interactions with them, of the first ``max_users`` users (in file
    order; all by default). Two calls with disjoint ``keep_item`` cut two item-disjoint datasets from one, the
    source and target of a zero-shot transfer (e.g. ml-100k's films by release year). ``positions``: the kept
    interactions' times written as positions (:func:`write_in_positions`). Returns ``folder``."""
    target_dir = os.path.join(folder, name)
    os.makedirs(target_dir, exist_ok=True)
    with open(source_item, encoding="utf-8") as source, \
            open(os.path.join(target_dir, f"{name}.item"), "w", encoding="utf-8") as target:
        header = source.readline()
        target.write(header)
        fields = _column_names(header)
        kept_items = set()
        for line in source:
            row = dict(zip(fields, line.rstrip("\r\n").split("\t")))
            if keep_item(row):
                kept_items.add(row["item_id"])
                target.write(line)
    with open(source_inter, encoding="utf-8") as source, \
            open(os.path.join(target_dir, f"{name}.inter"), "w", encoding="utf-8") as target:
        header = source.readline()
        target.write(header)
        columns = _column_names(header)
        user_column, item_column = columns.index("user_id"), columns.index("item_id")
        users = {}
        for line in source:
            cells = line.rstrip("\r\n").split("\t")
            user = cells[user_column]
            if max_users is not None and user not in users and len(users) >= max_users:
                continue
            users.setdefault(user, [])
            if cells[item_column] in kept_items:
                if positions:
                    users[user].append(cells)
                else:
                    target.write(line)
        if positions:
            write_in_positions(target, users, columns.index("timestamp"))
    return folder


def _column_names(header):
    return [name for name, _ in parse_atomic_header(header)]


def _header(path):
    with open(path, encoding="utf-8") as handle:
        return handle.readline()


def merged_headers(sources):
    """``{suffix: header line}`` of the files a merge of ``sources`` writes (``inter``, and ``item`` when the sources
    have one), checked before anything is written: every source has each file, with the same header."""
    headers = {}
    for suffix in ("inter", "item"):
        paths = {source: os.path.join(path, f"{source}.{suffix}") for source, path in sources.items()}
        present = [source for source, path in paths.items() if os.path.isfile(path)]
        if suffix == "item" and not present:
            continue
        if len(present) != len(paths):
            missing = [path for source, path in paths.items() if source not in present]
            raise FileNotFoundError(f"merge_datasets: {', '.join(missing)} missing (every source needs its .{suffix} "
                                    "file when one has it)")
        found = {source: _header(path) for source, path in paths.items()}
        if len(set(found.values())) > 1:
            raise ValueError(f"merge_datasets: the sources' .{suffix} headers differ: " + "; ".join(
                f"{source}: {header.strip()}" for source, header in found.items()))
        headers[suffix] = next(iter(found.values()))
    return headers


def write_merged_dataset(sources, name, folder, user_field="user_id", item_field="item_id"):
    """``folder/<name>/<name>.inter`` (and ``.item`` when the sources have one) with every row of every source, each
    user and item token prefixed by its source's name and ``/``, so that the sources share no user or item
    (``merge_datasets``: pretraining on several datasets). ``sources``: ``{source name: folder holding
    <source>.inter}``. The sources' headers must be equal, file by file (:func:`merged_headers`). Returns
    ``folder``."""
    headers = merged_headers(sources)
    target_dir = os.path.join(folder, name)
    os.makedirs(target_dir, exist_ok=True)
    for suffix, header in headers.items():
        fields = (user_field, item_field) if suffix == "inter" else (item_field,)
        names = _column_names(header)
        columns = [names.index(field) for field in fields if field in names]
        target_path = os.path.join(target_dir, f"{name}.{suffix}")
        partial_path = f"{target_path}.{os.getpid()}.partial"
        with open(partial_path, "w", encoding="utf-8") as target:
            target.write(header)
            for source, path in sources.items():
                with open(os.path.join(path, f"{source}.{suffix}"), encoding="utf-8") as handle:
                    handle.readline()
                    for line in handle:
                        cells = line.rstrip("\r\n").split("\t")
                        if not line.strip():
                            continue
                        for column in columns:
                            cells[column] = source + SOURCE_SEPARATOR + cells[column]
                        target.write("\t".join(cells) + "\n")
        os.replace(partial_path, target_path)
    return folder
