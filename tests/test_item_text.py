"""Item tables from item text: the local encoder's real output, the cache, whitening, user vectors, refusals and a
text-table model trained through RecBole's Trainer."""

import os
import shutil

import numpy as np
import pytest
import torch
from recbole.data import create_dataset

from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.model.item_table import whiten
from recbole_diffusion.data.slices import ML100K_INTER, write_item_subset
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data, run, transfer_and_test
from recbole_diffusion.runner import main
from recbole_diffusion.text import item_vectors as item_vectors_module
from recbole_diffusion.text.encoder import TextEncoder, checked_file, sha256_of
from recbole_diffusion.text.item_vectors import (item_texts, item_vectors, read_vector_file,
                                                 vector_file_width, write_vector_file)
from recbole_diffusion.utils.files import atomic_header
from conftest import TINY, assert_full_ranking_result

pytest.importorskip("tokenizers", reason="the text extra is not installed")
ML100K_ITEM = ML100K_INTER[:-len(".inter")] + ".item"
DATASET = "ml-100k-tiny"
FAST_TEXT = {**TINY, "diffusion_steps": 10, "ddim_steps": 5, "epochs": 1}

# sentence-transformers 6.3.0 (transformers 5.25.0, torch 2.13.0 CPU) on the same weights, 2026-12-06: the first six
# values of each text's vector.
REFERENCE = {
    "Toy Story (1995). Genres: Animation Children's Comedy":
        [-0.05679173, -0.02076261, 0.02532958, -0.00367012, -0.01424915, 0.01712982],
    "GoldenEye (1995). Genres: Action Adventure Thriller":
        [-0.03234994, -0.05605853, 0.00332887, -0.02213608, -0.03272542, 0.007379],
    "Four Rooms (1995). Genres: Thriller":
        [0.03260975, -0.03171058, -0.04380385, 0.02547335, -0.03272379, 0.05970165],
}


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder()


@pytest.fixture(scope="module")
def text_root(data_root, tmp_path_factory):
    """``data_root``'s tiny ml-100k slice with ml-100k's ``.item`` file beside it, and a text cache shared by the
    module's tests (the slice's items are encoded once)."""
    root = tmp_path_factory.mktemp("text-data")
    shutil.copytree(os.path.join(data_root, DATASET), root / DATASET)
    shutil.copy(ML100K_ITEM, root / DATASET / f"{DATASET}.item")
    return str(root)


@pytest.fixture(scope="module")
def text_settings(text_root, tmp_path_factory):
    return {"data_path": text_root, "text_cache_dir": str(tmp_path_factory.mktemp("text-cache")),
            "item_text_fields": ["movie_title", "release_year", "class"],
            "item_text_template": "{movie_title} ({release_year}). Genres: {class}"}


def dataset_of(settings, model="PreferDiff", dataset=DATASET, **overrides):
    config, _ = build_config(model, dataset, config_dict={**FAST_TEXT, **settings, **overrides})
    return config, create_dataset(config)


def test_encoder_matches_sentence_transformers(encoder):
    vectors = encoder.encode(list(REFERENCE))
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(vectors[:, :6], np.array(list(REFERENCE.values())), atol=1e-6)


def test_encoder_output_does_not_depend_on_the_batch(encoder):
    texts = ["Heat (1995). Genres: Action Crime Thriller", "A", "Jumanji (1995). Genres: Adventure Children's Fantasy"]
    together = encoder.encode(texts)
    alone = np.concatenate([encoder.encode([text]) for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_similar_texts_are_closer_than_unrelated_ones(encoder):
    space, astronauts, cooking = encoder.encode(["a film about space travel", "a movie about astronauts",
                                                 "recipes for cooking pasta"])
    assert space @ astronauts > 0.5 > space @ cooking + 0.4


def test_a_weights_file_with_another_hash_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match="not the pinned"):
        checked_file(str(tmp_path), "model.safetensors", "0" * 64)
    assert checked_file(str(tmp_path), "model.safetensors", sha256_of(path)) == str(path)


def test_item_text_follows_the_template_and_covers_the_dataset_items(text_settings):
    config, dataset = dataset_of(text_settings)
    texts = item_texts(config, dataset)
    assert texts["1"] == "Toy Story (1995). Genres: Animation Children's Comedy"
    assert set(texts) == set(dataset.field2token_id["item_id"]) - {"[PAD]"}


def test_vectors_are_cached_once_and_reused(text_settings, monkeypatch):
    config, dataset = dataset_of(text_settings)
    first = item_vectors(config, dataset)
    assert os.path.dirname(first.source) == text_settings["text_cache_dir"]
    assert first.has_vector[1:].all() and not first.has_vector[0]
    monkeypatch.setattr(TextEncoder, "encode", lambda *args, **kwargs: pytest.fail("the cache was not used"))
    again = item_vectors(config, dataset)
    assert again.source == first.source
    np.testing.assert_array_equal(again.vectors, first.vectors)
    other, _ = dataset_of(text_settings, item_text_template="{movie_title}")
    assert item_vectors_module.cache_path(other, item_texts(other, dataset)) != first.source


def test_the_cached_file_is_the_encoders_output_in_recbole_atomic_format(text_settings, encoder):
    config, dataset = dataset_of(text_settings)
    found = item_vectors(config, dataset)
    with open(found.source, encoding="utf-8") as handle:
        assert handle.readline() == "item_id:token\titem_text_emb:float_seq\n"
    toy_story = dataset.field2token_id["item_id"]["1"]
    np.testing.assert_allclose(found.vectors[toy_story], encoder.encode([item_texts(config, dataset)["1"]])[0],
                               atol=1e-6)


def test_whitening_gives_identity_covariance():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8)) + 3.0
    whitened = whiten(vectors, 1e-6)
    np.testing.assert_allclose(whitened.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(whitened.T @ whitened / len(whitened), np.eye(8), atol=1e-8)


def test_zca_whitening_is_the_inverse_square_root_of_the_covariance_and_keeps_the_encoder_s_axes():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 1.0
    centred = vectors - vectors.mean(axis=0)
    closed_form = centred @ np.linalg.inv(sqrtm(centred.T @ centred / len(vectors))).real
    np.testing.assert_allclose(whiten(vectors, 1e-9, "zca"), closed_form, atol=1e-8)
    # Two datasets of one encoder whitened alone: under zca a shared item lands at nearly the same row (the
    # encoder's axes); under pca each table has its own eigenvector axes and signs.
    first, second = vectors[:250], vectors[150:]
    shared = slice(150, 250)

    def mean_cosine(basis):
        a, b = whiten(first, 1e-9, basis)[shared], whiten(second, 1e-9, basis)[:100]
        return np.mean(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))

    assert mean_cosine("zca") > 0.9 > mean_cosine("pca")


def test_whitening_fewer_items_than_dimensions_stays_finite_and_unit_on_the_spanned_directions():
    vectors = np.random.default_rng(1).normal(size=(5, 16))
    whitened = whiten(vectors, 1e-6)
    assert np.isfinite(whitened).all() and np.abs(whitened).max() < 10
    eigenvalues = np.sort(np.linalg.eigvalsh(whitened.T @ whitened / len(whitened)))
    np.testing.assert_allclose(eigenvalues[-4:], 1.0, atol=1e-8)
    np.testing.assert_allclose(eigenvalues[:-4], 0.0, atol=1e-8)


def write_user_vectors(folder, dataset, width=8, skip=(), extra=()):
    """A user's vector file for the dataset's items (less ``skip``, plus ``extra`` unknown tokens)."""
    rng = np.random.default_rng(3)
    tokens = [token for token in dataset.field2token_id["item_id"] if token != "[PAD]" and token not in skip]
    tokens += list(extra)
    path = os.path.join(folder, "vectors.itememb")
    write_vector_file(path, "item_id", tokens, rng.normal(size=(len(tokens), width)))
    return path


def test_user_vectors_make_the_frozen_whitened_table_and_set_the_width(text_settings, tmp_path, caplog):
    _, dataset = dataset_of(text_settings)
    missing = ["50", "100"]
    path = write_user_vectors(str(tmp_path), dataset, skip=missing, extra=["no-such-item"])
    config, dataset = dataset_of(text_settings, item_table="text", item_text_embeddings=path, hidden_size=32)
    from recbole_diffusion.model import PreferDiff

    model = PreferDiff(config, dataset)
    table = model.item_embedding.weight
    assert model.hidden_size == 8 and table.shape == (dataset.item_num, 8) and not table.requires_grad
    found = read_vector_file(path, dataset)
    rows = found.has_vector.copy()
    np.testing.assert_allclose(table[rows].numpy(), whiten(found.vectors[rows], 1e-6), atol=1e-5)
    for token in missing:
        assert torch.count_nonzero(table[dataset.field2token_id["item_id"][token]]) == 0
    assert torch.count_nonzero(table[0]) == 0
    assert "2 of" in caplog.text and "have no text vector" in caplog.text


@pytest.mark.parametrize("content,message", [
    ("item_id:token\tv:float_seq\n1\t1 2\n1\t1 2\n", "repeats item '1'"),
    ("item_id:token\tv:float_seq\n1\t1 2\n2\t1 2 3\n", "every row must hold 2"),
    ("item_id:token\tv:float_seq\n1\t1 nan\n", "not all finite"),
    ("item_id:token\tv:float_seq\nnot-an-item\t1 2\n", "no row of"),
    ("movie:token\tv:float_seq\n1\t1 2\n", "must have a column item_id:token"),
])
def test_a_vector_file_whose_rows_do_not_match_the_items_is_refused(text_settings, tmp_path, content, message):
    _, dataset = dataset_of(text_settings)
    path = tmp_path / "vectors.itememb"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_vector_file(str(path), dataset)


@pytest.mark.parametrize("extra,fragments", [
    (["--item_text_fields=['movie_title', 'plot']"], ["item_text_fields", "no field plot", "movie_title"]),
    (["--item_text_template={title}"], ["item_text_template", "names title"]),
    (["--item_text_embeddings=/no/such/file"], ["item_text_embeddings", "is not a file"]),
    (["--item_text_encoder=bert-huge"], ["item_text_encoder", "all-MiniLM-L6-v2"]),
    (["--model=SASRec", "--item_table=text"], ["item_table", "this package's diffusion models", "SASRec"]),
])
def test_bad_text_settings_are_refused_before_anything_is_written(text_root, tmp_path, monkeypatch, capsys, extra,
                                                                  fragments):
    monkeypatch.chdir(tmp_path)
    argv = [f"--model=PreferDiff-T", f"--dataset={DATASET}", f"--data_path={text_root}", "--epochs=1", *extra]
    if not any(argument.startswith("--item_text_fields") for argument in extra):
        argv.append("--item_text_fields=['movie_title']")
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(fragment in errors[0] for fragment in fragments), errors
    assert not os.listdir(tmp_path)


def test_preferdiff_t_trains_through_recbole_with_a_frozen_text_table(text_settings, in_tmp_cwd):
    result = run("PreferDiff-T", DATASET, config_dict={**FAST_TEXT, **text_settings})
    assert_full_ranking_result(result)
    state = torch.load(result["saved_model_file"], weights_only=False)["state_dict"]
    config, dataset = dataset_of(text_settings, item_table="text")
    found = item_vectors(config, dataset)
    rows = found.has_vector
    np.testing.assert_allclose(state["item_embedding.weight"][rows].numpy(), whiten(found.vectors[rows], 1e-6),
                               atol=1e-5)


@pytest.mark.parametrize("model", ["DiffuRec", "DreamRec", "SeqDiffRec"])
def test_every_model_takes_a_text_table(text_settings, tmp_path, model):
    _, dataset = dataset_of(text_settings, model=model, diffusion_steps=1000)
    path = write_user_vectors(str(tmp_path), dataset, width=16)
    config, dataset = dataset_of(text_settings, model=model, item_table="text", item_text_embeddings=path,
                                 diffusion_steps=1000)
    from recbole_diffusion.model import MODELS

    instance = MODELS[model](config, dataset)
    assert instance.hidden_size == 16 and not instance.item_embedding.weight.requires_grad


def _year(row):
    return int(row["release_year"]) if row["release_year"].isdigit() else None


@pytest.fixture(scope="module")
def disjoint_settings(text_settings, tmp_path_factory):
    """Two item-disjoint datasets cut from ml-100k by release year (before 1995: ``ml-old``; from 1995: ``ml-new``),
    of the first 120 users, sharing the module's text cache."""
    root = str(tmp_path_factory.mktemp("disjoint"))
    write_item_subset(ML100K_INTER, ML100K_ITEM, "ml-old", lambda row: (_year(row) or 9999) < 1995, root, 120)
    write_item_subset(ML100K_INTER, ML100K_ITEM, "ml-new", lambda row: 1995 <= (_year(row) or 0), root, 120)
    write_item_subset(ML100K_INTER, ML100K_ITEM, "ml-80s", lambda row: (_year(row) or 9999) < 1990, root, 120)
    write_item_subset(ML100K_INTER, ML100K_ITEM, "ml-early-90s", lambda row: 1990 <= (_year(row) or 0) < 1995, root,
                      120)
    return {**FAST_TEXT, **text_settings, "data_path": root}


@pytest.fixture(scope="module")
def trained_on_old(disjoint_settings, tmp_path_factory):
    """A PreferDiff-T checkpoint trained one epoch on ``ml-old``, and a PreferDiff (id table) one."""
    folder = str(tmp_path_factory.mktemp("checkpoints"))
    settings = {**disjoint_settings, "checkpoint_dir": folder}
    return {model: run(model, "ml-old", config_dict=settings)["saved_model_file"] for model in ("PreferDiff-T",
                                                                                                 "PreferDiff")}


def test_the_two_cut_datasets_share_no_item(disjoint_settings):
    _, old = dataset_of(disjoint_settings, dataset="ml-old")
    _, new = dataset_of(disjoint_settings, dataset="ml-new")
    old_items, new_items = (set(data.field2token_id["item_id"]) - {"[PAD]"} for data in (old, new))
    assert old_items and new_items and not old_items & new_items


def test_zero_shot_transfer_keeps_every_weight_but_the_table_which_is_the_targets(disjoint_settings, trained_on_old,
                                                                                   in_tmp_cwd):
    checkpoint_path = trained_on_old["PreferDiff-T"]
    config, model_class = build_config("PreferDiff-T", "ml-new",
                                       config_dict={**disjoint_settings, "transfer_from": checkpoint_path})
    data = prepare_data(config, log_file=False)
    trainer = build_trainer(config, model_class, data.train)
    result = transfer_and_test(trainer, data, checkpoint_path)
    assert result["trained_on"] == "ml-old" and result["epochs_trained"] == 0
    assert all(np.isfinite(value) for value in result["test_result"].values())
    saved = torch.load(checkpoint_path, weights_only=False)["state_dict"]
    state = trainer.model.state_dict()
    assert all(torch.equal(saved[key], state[key]) for key in saved if key != "item_embedding.weight")
    assert state["item_embedding.weight"].shape[0] == data.dataset.item_num != saved["item_embedding.weight"].shape[0]
    found = item_vectors(config, data.dataset)
    np.testing.assert_allclose(state["item_embedding.weight"][found.has_vector].numpy(),
                               whiten(found.vectors[found.has_vector], 1e-6), atol=1e-5)


def test_the_runner_transfers_and_reports_it(disjoint_settings, trained_on_old, in_tmp_cwd, capsys):
    argv = ["--model=PreferDiff-T", "--dataset=ml-new", f"--transfer_from={trained_on_old['PreferDiff-T']}",
            *(f"--{key}={value}" for key, value in disjoint_settings.items())]
    assert main(argv) == 0
    assert "Zero-shot: " in capsys.readouterr().out
    assert not os.path.isdir("saved") or not os.listdir("saved")  # no checkpoint is written


@pytest.mark.parametrize("model,extra,fragments", [
    ("PreferDiff-T", {"checkpoint": "PreferDiff"}, ["id item table", "ml-old"]),
    ("PreferDiff", {}, ["needs item_table text"]),
    ("DreamRec", {"item_table": "text"}, ["holds a PreferDiff model, not DreamRec"]),
    ("PreferDiff-T", {"text_whitening": "zca"}, ["text_whitening 'pca'", "this run's is 'zca'"]),
])
def test_a_transfer_that_cannot_hold_is_refused(disjoint_settings, trained_on_old, in_tmp_cwd, capsys, model, extra,
                                                fragments):
    checkpoint = trained_on_old[extra.pop("checkpoint", "PreferDiff-T")]
    settings = {**disjoint_settings, **extra, "transfer_from": checkpoint}
    argv = [f"--model={model}", "--dataset=ml-new", *(f"--{key}={value}" for key, value in settings.items())]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(fragment in errors[0] for fragment in fragments), errors
    assert not os.listdir(in_tmp_cwd)


def test_a_merge_of_two_datasets_prefixes_every_token_and_whitens_each_source_then_all(disjoint_settings):
    settings = {**disjoint_settings, "merge_datasets": ["ml-80s", "ml-early-90s"], "item_table": "text"}
    config, dataset = dataset_of(settings, dataset="ml-before-1995")
    assert config["data_path"].startswith(disjoint_settings["text_cache_dir"])
    tokens = dataset.field2id_token["item_id"][1:]
    assert all(token.split("/")[0] in ("ml-80s", "ml-early-90s") for token in tokens)
    from recbole_diffusion.model import PreferDiff

    table = PreferDiff(config, dataset).item_embedding.weight.numpy()
    found = item_vectors(config, dataset)
    parts = []
    for source in ("ml-80s", "ml-early-90s"):
        rows = found.has_vector & np.char.startswith(np.asarray(dataset.field2id_token["item_id"], dtype=str),
                                                     source + "/")
        parts.append((rows, whiten(found.vectors[rows], 1e-6)))
    stacked = np.zeros(found.vectors.shape)
    for rows, whitened in parts:
        stacked[rows] = whitened
    rows = found.has_vector
    np.testing.assert_allclose(table[rows], whiten(stacked[rows], 1e-6), atol=1e-4)


@pytest.fixture(scope="module")
def merged_checkpoint(disjoint_settings, tmp_path_factory):
    """A PreferDiff-T checkpoint trained one epoch on the merge of ``ml-80s`` and ``ml-early-90s``."""
    settings = {**disjoint_settings, "merge_datasets": ["ml-80s", "ml-early-90s"],
                "checkpoint_dir": str(tmp_path_factory.mktemp("merged-checkpoints"))}
    return run("PreferDiff-T", "ml-before-1995", config_dict=settings)["saved_model_file"]


def test_a_model_pretrained_on_a_merge_transfers(disjoint_settings, merged_checkpoint, in_tmp_cwd):
    transferred = run("PreferDiff-T", "ml-new", config_dict={**disjoint_settings, "transfer_from": merged_checkpoint},
                      saved=False)
    assert transferred["trained_on"] == "ml-before-1995" and transferred["epochs_trained"] == 0


@pytest.mark.parametrize("sources,dataset,message", [
    (["ml-80s"], "mix", "two or more different"),
    (["ml-80s", "ml-80s"], "mix", "two or more different"),
    (["ml-80s", "ml-new"], "ml-new", "a name of its own"),
    (["ml-80s", "ml-none"], "mix", "no interaction file"),
])
def test_a_bad_merge_is_refused(disjoint_settings, sources, dataset, message):
    with pytest.raises(ValueError, match=message):
        build_config("PreferDiff", dataset, config_dict={**disjoint_settings, "merge_datasets": sources})


@pytest.mark.parametrize("broken,message", [
    ("inter", "timestamp"),
    ("item", "has no field class"),
])
def test_a_merge_with_a_bad_source_is_refused_before_anything_is_written(disjoint_settings, tmp_path, broken,
                                                                        message):
    root = tmp_path / "data"
    for source in ("ml-80s", "ml-new"):
        shutil.copytree(os.path.join(disjoint_settings["data_path"], source), root / source)
    path = root / "ml-new" / f"ml-new.{broken}"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if broken == "inter":  # a missing timestamp in the second source
        cells = lines[1].split("\t")
        lines[1] = "\t".join(cells[:-1] + ["\n"])
    else:  # neither source's .item has the text field "class" (headers equal, so the text check fires)
        for source in ("ml-80s", "ml-new"):
            item = root / source / f"{source}.item"
            rows = [line.rstrip("\n").split("\t") for line in item.read_text(encoding="utf-8").splitlines()]
            index = [cell.partition(":")[0] for cell in rows[0]].index("class")
            item.write_text("".join("\t".join(row[:index] + row[index + 1:]) + "\n" for row in rows), encoding="utf-8")
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines), encoding="utf-8")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=message):
        build_config("PreferDiff-T", "mix", config_dict={**disjoint_settings, "data_path": str(root),
                                                         "text_cache_dir": str(cache),
                                                         "merge_datasets": ["ml-80s", "ml-new"]})
    assert not cache.exists()


def test_sources_with_different_headers_are_refused(tmp_path):
    from recbole_diffusion.data.slices import write_merged_dataset

    for name, header in (("a", "user_id:token\titem_id:token\ttimestamp:float"),
                         ("b", "user_id:token\titem_id:token")):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.inter").write_text(header + "\n1\t2\t3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="headers differ"):
        write_merged_dataset({"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}, "ab", str(tmp_path / "out"))


def test_the_item_file_is_read_as_recbole_reads_it(tmp_path):
    """Quoted fields (with a tab inside), a short row and a literal NaN, as pandas (RecBole) reads them."""
    folder = tmp_path / "quoted"
    folder.mkdir()
    (folder / "quoted.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
        f"{user}\t{item}\t{time}\n" for user in (1, 2) for time, item in enumerate((1, 2, 3, 4))), encoding="utf-8")
    (folder / "quoted.item").write_text(
        'item_id:token\ttitle:token_seq\tgenre:token_seq\n1\t"Toy Story, The"\tAnimation\n'
        '2\t"Tab\tInside"\tDrama\n3\tOnly title\n4\tNaN\tNaN\n', encoding="utf-8")
    config, dataset = dataset_of({"data_path": str(tmp_path), "item_text_fields": ["title", "genre"]},
                                 dataset="quoted")
    assert item_texts(config, dataset) == {"1": "Toy Story, The. Animation", "2": "Tab\tInside. Drama",
                                           "3": "Only title"}


def test_a_dataset_found_without_data_path_gets_its_item_text(text_root, text_settings, monkeypatch, in_tmp_cwd):
    monkeypatch.setenv("RECBOLE_DIFFUSION_DATA", text_root)
    settings = {key: value for key, value in text_settings.items() if key != "data_path"}
    config, _ = build_config("PreferDiff-T", DATASET, config_dict={**FAST_TEXT, **settings})
    assert config["data_path"] == os.path.join(text_root, DATASET)


@pytest.mark.parametrize("overrides,message", [
    ({"item_text_template": "{} {movie_title}"}, "positional"),
    ({"n_heads": 5}, "must divide the text table's width 384"),
])
def test_text_settings_refused_before_the_data_loads(text_settings, overrides, message):
    with pytest.raises(ValueError, match=message):
        build_config("PreferDiff-T", DATASET, config_dict={**FAST_TEXT, **text_settings, **overrides})


def test_a_user_vector_files_width_is_checked_before_the_data_loads(text_settings, tmp_path):
    path = str(tmp_path / "vectors.item")
    write_vector_file(path, "item_id", ["1", "2"], np.ones((2, 6)))
    assert vector_file_width(path) == 6
    assert atomic_header(path) == [("item_id", "token"), ("item_text_emb", "float_seq")]
    with pytest.raises(ValueError, match="must divide the text table's width 6"):
        build_config("PreferDiff-T", DATASET, config_dict={**FAST_TEXT, **text_settings, "n_heads": 4,
                                                            "item_text_embeddings": path})


def test_hidden_size_is_not_checked_where_the_text_table_sets_the_width(text_settings):
    config, _ = build_config("PreferDiff-T", DATASET, config_dict={**FAST_TEXT, **text_settings, "hidden_size": 10,
                                                                     "n_heads": 4})
    assert config["n_heads"] == 4


def test_a_transfer_with_other_model_keys_warns_and_names_them(disjoint_settings, trained_on_old, in_tmp_cwd,
                                                                caplog):
    settings = {**disjoint_settings, "guidance_weight": 0.5, "transfer_from": trained_on_old["PreferDiff-T"],
                "holdout_items_ratio": 0.3}
    result = run("PreferDiff-T", "ml-new", config_dict=settings, saved=False)
    assert "guidance_weight (8.0 -> 0.5)" in caplog.text
    assert "transfer_from with text_whitening pca" in caplog.text  # the authors' whitening rotates the target
    assert result["test_result_heldout_items"]["users"] > 0


def test_a_checkpoint_of_a_merge_reloads_from_its_merged_data(merged_checkpoint, in_tmp_cwd):
    from recbole_diffusion.quick_start.inference import load_data_and_model

    config, model, dataset, *_ = load_data_and_model(merged_checkpoint)
    assert config["dataset"] == "ml-before-1995" and model.item_embedding.weight.shape[0] == dataset.item_num


def test_the_optional_adapter_starts_at_the_identity_and_trains_while_the_table_stays(text_settings, tmp_path):
    from recbole.data.interaction import Interaction

    from recbole_diffusion.model import PreferDiff

    _, dataset = dataset_of(text_settings)
    path = write_user_vectors(str(tmp_path), dataset)
    config, dataset = dataset_of(text_settings, item_table="text", item_text_embeddings=path, item_text_adapter=True)
    model = PreferDiff(config, dataset)
    table = model.item_embedding.table.weight.detach().clone()
    assert torch.equal(model.item_embedding.weight.detach(), table) and not model.item_embedding.table.weight.requires_grad
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    items = torch.arange(1, 9)
    interaction = Interaction({model.ITEM_SEQ: items.view(4, 2), model.ITEM_SEQ_LEN: torch.full((4,), 2),
                               model.POS_ITEM_ID: torch.arange(10, 14)})
    model.calculate_loss(interaction).backward()
    optimizer.step()
    assert torch.equal(model.item_embedding.table.weight, table)
    assert not torch.equal(model.item_embedding.adapter.weight.detach(), torch.eye(8))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as enable_amp's autocast: an id table's rows stay float32
        assert model.item_embedding(items).dtype == model.item_embedding.weight.dtype == torch.float32


def test_a_transfer_keeps_the_adapter_and_rebuilds_the_table(disjoint_settings, in_tmp_cwd):
    settings = {**disjoint_settings, "item_text_adapter": True}
    trained = run("PreferDiff-T", "ml-old", config_dict=settings)["saved_model_file"]
    config, model_class = build_config("PreferDiff-T", "ml-new", config_dict={**settings, "transfer_from": trained})
    data = prepare_data(config, log_file=False)
    trainer = build_trainer(config, model_class, data.train)
    transfer_and_test(trainer, data, trained)
    saved = torch.load(trained, weights_only=False)["state_dict"]
    assert torch.equal(trainer.model.item_embedding.adapter.weight, saved["item_embedding.adapter.weight"])
    assert trainer.model.item_embedding.table.weight.shape[0] == data.dataset.item_num


def test_a_transfer_in_the_encoder_s_axes_uses_the_target_s_zca_table_without_the_warning(disjoint_settings,
                                                                                           in_tmp_cwd, caplog):
    settings = {**disjoint_settings, "text_whitening": "zca"}
    trained = run("PreferDiff-T", "ml-old", config_dict=settings)["saved_model_file"]
    config, model_class = build_config("PreferDiff-T", "ml-new", config_dict={**settings, "transfer_from": trained})
    data = prepare_data(config, log_file=False)
    trainer = build_trainer(config, model_class, data.train)
    result = transfer_and_test(trainer, data, trained)
    assert all(np.isfinite(value) for value in result["test_result"].values())
    found = item_vectors(config, data.dataset)
    np.testing.assert_allclose(trainer.model.item_embedding.weight[found.has_vector].numpy(),
                               whiten(found.vectors[found.has_vector], 1e-6, "zca"), atol=1e-5)
    assert "text_whitening pca" not in caplog.text
