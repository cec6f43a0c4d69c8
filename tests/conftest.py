"""Shared fixtures: small RecBole datasets written to a temporary folder, and fast model settings."""

import os

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_trainer, init_seed

import recbole_diffusion  # noqa: F401  (applies the compatibility fixes before RecBole is used)

ML100K_INTER = os.path.join(os.path.dirname(__import__("recbole").__file__), "dataset_example", "ml-100k",
                            "ml-100k.inter")

# Small sizes so one epoch on a few hundred users takes about a second on 2 CPU cores.
FAST = {
    "hidden_size": 32, "inner_size": 64, "n_layers": 1, "n_heads": 2, "MAX_ITEM_LIST_LENGTH": 20,
    "train_batch_size": 256, "eval_batch_size": 512, "show_progress": False, "state": "WARNING",
}
# Smaller still, for runs that only have to go through the pipeline (train, save, reload, evaluate) and need
# not learn anything: pair with the ``ml-100k-tiny`` slice.
TINY = {**FAST, "hidden_size": 16, "inner_size": 32, "MAX_ITEM_LIST_LENGTH": 10}
TINY_USERS = 100


def write_inter(folder, name, rows, header=("user_id:token", "item_id:token", "timestamp:float")):
    """Write ``rows`` as ``folder/name/name.inter`` (RecBole atomic format) and return ``folder``."""
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    with open(os.path.join(folder, name, f"{name}.inter"), "w", encoding="utf-8") as handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            handle.write("\t".join(str(value) for value in row) + "\n")
    return str(folder)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """Folder with ``ml-100k-small`` (the first 200 users of ml-100k), ``ml-100k-tiny`` (the first
    ``TINY_USERS`` of them) and ``successor`` (synthetic)."""
    root = tmp_path_factory.mktemp("data")
    with open(ML100K_INTER, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in handle]
    user, item, stamp = (header.index(column) for column in ("user_id:token", "item_id:token", "timestamp:float"))
    keep = set(sorted({row[user] for row in rows}, key=int)[:200])
    write_inter(root, "ml-100k-small", [(r[user], r[item], r[stamp]) for r in rows if r[user] in keep])
    tiny = set(sorted(keep, key=int)[:TINY_USERS])
    write_inter(root, "ml-100k-tiny", [(r[user], r[item], r[stamp]) for r in rows if r[user] in tiny])
    write_inter(root, "successor", successor_rows())
    return str(root)


def successor_rows(n_users=300, n_items=60, length=8, seed=0):
    """Every user walks a fixed random cycle over the items from a random start: the next item is a
    deterministic function of the last one, and every item is about equally popular."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_items) + 1
    successor = {int(order[k]): int(order[(k + 1) % n_items]) for k in range(n_items)}
    rows = []
    for user in range(1, n_users + 1):
        item = int(rng.integers(1, n_items + 1))
        for position in range(1, length + 1):
            rows.append((user, item, position))
            item = successor[item]
    return rows


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run in an empty working directory, so logs and checkpoints land there (and can be checked)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_full_ranking_result(result):
    """The runner's result holds HR / NDCG @5/10/20 in [0, 1] and a written checkpoint."""
    assert set(result["test_result"]) == {f"{name}@{k}" for name in ("hit", "ndcg") for k in (5, 10, 20)}
    assert all(0.0 <= value <= 1.0 for value in result["test_result"].values())
    assert os.path.isfile(result["saved_model_file"])


def assert_checkpoint_reload_reproduces(model, config_files, settings, checkpoint, dataset="ml-100k-small"):
    """Fresh models loaded from ``checkpoint`` hold its weights and give identical test metrics."""
    from recbole_diffusion.config.configurator import build_config

    config, model_class = build_config(model, dataset, config_file_list=config_files, config_dict=settings)
    init_seed(config["seed"], True)
    train_data, _, test_data = data_preparation(config, create_dataset(config))
    evaluations = []
    for _ in range(2):
        trainer = get_trainer(config["MODEL_TYPE"], model)(config, model_class(config, train_data._dataset))
        torch.manual_seed(123)
        evaluations.append(trainer.evaluate(test_data, load_best_model=True, model_file=checkpoint))
    assert evaluations[0] == evaluations[1]
    saved_state = torch.load(checkpoint, weights_only=False)["state_dict"]
    assert all(torch.equal(saved_state[key], value) for key, value in trainer.model.state_dict().items())
