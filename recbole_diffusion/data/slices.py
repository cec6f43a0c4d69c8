"""Small datasets cut from RecBole atomic files: what the self-check, the tests and the benchmarks train on."""

import os

ML100K_INTER = os.path.join(os.path.dirname(__import__("recbole").__file__), "dataset_example", "ml-100k",
                            "ml-100k.inter")


def write_user_slice(source_inter, name, n_users, folder):
    """Copy every row of the first ``n_users`` users (in file order) of ``source_inter`` to
    ``folder/<name>/<name>.inter`` and return ``folder``, RecBole's ``data_path`` for dataset ``name``.

    The file is written beside its target and moved into place, so a run reading an earlier copy of the same
    slice (a second search started on it) never sees a half-written file."""
    target_dir = os.path.join(folder, name)
    os.makedirs(target_dir, exist_ok=True)
    target_path = os.path.join(target_dir, f"{name}.inter")
    partial_path = f"{target_path}.{os.getpid()}.partial"
    kept = set()
    with open(source_inter, encoding="utf-8") as source, open(partial_path, "w", encoding="utf-8") as target:
        header = source.readline()
        target.write(header)
        user_column = [field.split(":")[0] for field in header.rstrip("\n").split("\t")].index("user_id")
        for line in source:
            user = line.split("\t")[user_column]
            if user not in kept and len(kept) < n_users:
                kept.add(user)
            if user in kept:
                target.write(line)
    os.replace(partial_path, target_path)
    return folder
