"""Using a trained model: ``recbole_diffusion.load_data_and_model`` and ``python -m recbole_diffusion.recommend``."""

import csv
import os
from collections import defaultdict

import pytest
import torch
from recbole.data.interaction import Interaction

import recbole_diffusion
from conftest import successor_rows, write_inter
import recbole_diffusion.trainer.checkpoint as ckpt
from recbole_diffusion import recommend
from recbole_diffusion.quick_start.quick_start import run
from recbole_diffusion.trainer import get_trainer

TINY = {"epochs": 1, "train_batch_size": 256, "show_progress": False, "state": "WARNING"}
TRANSFORMER = {"hidden_size": 8, "inner_size": 16, "n_layers": 1, "n_heads": 1}
# DiffuRec reads 5 of the successor users' 8 items (its history is truncated), SASRec all 8; BPR is a general model.
MODELS = {"DiffuRec": {**TRANSFORMER, "MAX_ITEM_LIST_LENGTH": 5, "diffusion_steps": 8, "ddim_steps": 4},
          "SASRec": {**TRANSFORMER, "MAX_ITEM_LIST_LENGTH": 8},
          "BPR": {"embedding_size": 8, "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
          # RecBole's softmax-CPR model reads a target in full_sort_predict; FEARec's YAML holds the text 'None'.
          "SASRecCPR": {**TRANSFORMER, "MAX_ITEM_LIST_LENGTH": 8, "reranker_CAN_NUM": 20},
          "FEARec": {**TRANSFORMER, "n_layers": 2, "MAX_ITEM_LIST_LENGTH": 8},
          # NeuMF and the context-aware FM have no full_sort_predict (scored pair by pair, as RecBole evaluates them);
          # EASE is a traditional model.
          "NeuMF": {"mf_embedding_size": 8, "mlp_embedding_size": 8, "mlp_hidden_size": [16],
                    "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
          "FM": {"embedding_size": 8, "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
          "EASE": {}}
USERS = ["7", "1", "300", "42", "2"]


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """One tiny run of each model on ``successor``: ``{model: (result, settings)}``."""
    folder = tmp_path_factory.mktemp("recommend")
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for model, extra in MODELS.items():
            settings = {**TINY, **extra, "data_path": data_root, "checkpoint_dir": str(folder / "saved"),
                        "log_root": str(folder / "log")}
            runs[model] = run(model, "successor", config_dict=settings), settings
    return runs


def model_file(trained, model):
    return trained[model][0]["saved_model_file"]


def histories(data_root):
    """Each user's item tokens in time order, read straight from the interaction file."""
    events = defaultdict(list)
    with open(os.path.join(data_root, "successor", "successor.inter"), encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            user, item, stamp = line.rstrip("\n").split("\t")
            events[user].append((float(stamp), item))
    return {user: [item for _, item in sorted(stamped)] for user, stamped in events.items()}


def expected_top_k(model, dataset, data_root, users, k, include_seen):
    """Top-k rows computed independently: the last MAX_ITEM_LIST_LENGTH items of the file's history, scored by
    ``full_sort_predict``, padding and (unless asked) seen items removed."""
    history = histories(data_root)
    max_length = dataset.config["MAX_ITEM_LIST_LENGTH"]
    sequences = torch.zeros((len(users), max_length), dtype=torch.long)
    lengths = torch.zeros(len(users), dtype=torch.long)
    excluded = torch.zeros((len(users), dataset.item_num), dtype=torch.bool)
    excluded[:, 0] = True
    for row, user in enumerate(users):
        items = torch.as_tensor(dataset.token2id(dataset.iid_field, history[user]))
        window = items[-max_length:]
        sequences[row, :len(window)] = window
        lengths[row] = len(window)
        if not include_seen:
            excluded[row, items] = True
    user_ids = torch.as_tensor(dataset.token2id(dataset.uid_field, users))
    interaction = Interaction({"user_id": user_ids, "item_id_list": sequences, "item_length": lengths,
                               "item_id": torch.zeros_like(lengths)})  # no target: the padding id
    with torch.no_grad():
        scores = model.full_sort_predict(interaction).view(len(users), -1)
    values, items = torch.topk(scores.masked_fill(excluded, float("-inf")), k)
    tokens = dataset.id2token(dataset.iid_field, items.numpy())
    return [(user, rank + 1, str(tokens[row, rank]), float(values[row, rank]))
            for row, user in enumerate(users) for rank in range(k)]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["user_id", "rank", "item_id", "score"]
    return [(user, int(rank), item, float(score)) for user, rank, item, score in rows[1:]]


def test_load_data_and_model_gives_recboles_tuple_with_the_trained_model(trained, in_tmp_cwd):
    result, _ = trained["DiffuRec"]
    config, model, dataset, train_data, valid_data, test_data = recbole_diffusion.load_data_and_model(
        result["saved_model_file"])
    assert type(model).__name__ == "DiffuRec" and not model.training
    assert config["model"] == "DiffuRec" and config["MAX_ITEM_LIST_LENGTH"] == 5
    saved = ckpt.load_checkpoint(result["saved_model_file"])
    assert ckpt.config_hash(ckpt.plain_config(config)) == saved["config_hash"]
    assert all(torch.equal(saved["state_dict"][key], value.cpu()) for key, value in model.state_dict().items())
    assert train_data._dataset is not dataset and len(test_data._dataset) == dataset.user_num - 1
    test_result = get_trainer(config, model).evaluate(test_data, load_best_model=False)
    assert ckpt.plain(test_result) == result["test_result"]


@pytest.mark.parametrize("model_name, include_seen, k", [("DiffuRec", False, 52), ("DiffuRec", True, 7),
                                                        ("SASRec", False, 52), ("SASRecCPR", False, 52),
                                                        ("FEARec", False, 52)])
def test_command_top_k_equals_full_sort_predict_on_whole_histories(trained, data_root, in_tmp_cwd, model_name,
                                                                     include_seen, k):
    output = in_tmp_cwd / "top.csv"
    argv = [f"--model_file={model_file(trained, model_name)}", f"--users={','.join(USERS)}", f"--k={k}",
            f"--output={output}"] + (["--include_seen"] if include_seen else [])
    assert recommend.main(argv) == 0
    _, model, dataset, *_ = recbole_diffusion.load_data_and_model(model_file(trained, model_name))
    expected = expected_top_k(model, dataset, data_root, USERS, k, include_seen)
    written = read_csv(output)
    assert [row[:3] for row in written] == [row[:3] for row in expected]
    assert [row[3] for row in written] == pytest.approx([row[3] for row in expected], rel=1e-6)
    seen = histories(data_root)
    if include_seen:
        assert any(item in seen[user] for user, _, item, _ in written)
    else:  # k = 60 items - 8 seen: every unseen item, and only those
        every_item = set(dataset.field2id_token["item_id"][1:])
        for user in USERS:
            assert {item for row_user, _, item, _ in written if row_user == user} == every_item - set(seen[user])


@pytest.mark.parametrize("model_name", ["BPR", "NeuMF", "FM", "EASE"])
def test_a_general_model_scores_users_by_id_without_their_items(model_name, trained, data_root, in_tmp_cwd):
    output = in_tmp_cwd / "top.csv"
    # eval_batch_size 100 over 61 items: NeuMF's and FM's pairs are scored one user at a time
    assert recommend.main([f"--model_file={model_file(trained, model_name)}", "--users=1,300", "--k=52",
                           "--eval_batch_size=100", f"--output={output}"]) == 0
    _, model, dataset, *_ = recbole_diffusion.load_data_and_model(model_file(trained, model_name))
    user_ids = torch.as_tensor(dataset.token2id(dataset.uid_field, ["1", "300"]))
    every_item = torch.arange(dataset.item_num)
    with torch.no_grad():  # each (user, item) pair through predict
        scores = torch.stack([model.predict(Interaction({"user_id": user.repeat(dataset.item_num),
                                                         "item_id": every_item})) for user in user_ids])
    seen = histories(data_root)
    for row, user in enumerate(["1", "300"]):
        scores[row, torch.as_tensor(dataset.token2id(dataset.iid_field, seen[user]))] = float("-inf")
    scores[:, 0] = float("-inf")
    values, items = torch.topk(scores, 52)
    tokens = dataset.id2token(dataset.iid_field, items.numpy())
    written = read_csv(output)
    assert [row[2] for row in written] == [str(token) for token in tokens.reshape(-1)]
    assert [row[3] for row in written] == pytest.approx(values.reshape(-1).tolist(), rel=1e-6, abs=1e-7)


def test_fewer_unseen_items_than_k_gives_what_remains(trained, in_tmp_cwd, capsys):
    output = in_tmp_cwd / "top.csv"
    assert recommend.main([f"--model_file={model_file(trained, 'SASRec')}", "--users=1", "--k=60",
                           f"--output={output}"]) == 0
    assert len(read_csv(output)) == 52
    assert "fewer than 60 unseen items remain for user(s) 1" in capsys.readouterr().err


def test_the_table_and_repeated_calls_are_identical(trained, in_tmp_cwd, capsys):
    argv = [f"--model_file={model_file(trained, 'DiffuRec')}", "--users=1,2", "--k=3"]
    outputs = []
    for _ in range(2):
        assert recommend.main(argv) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert sorted(os.listdir(in_tmp_cwd)) == []  # no log/, no log_tensorboard/: recommend trains nothing
    lines = outputs[0].splitlines()
    assert lines[0].split() == ["user_id", "rank", "item_id", "score"] and len(lines) == 1 + 2 * 3
    assert [line.split()[:2] for line in lines[1:4]] == [["1", "1"], ["1", "2"], ["1", "3"]]


def test_unknown_user_tokens_are_named_and_nothing_is_written(trained, in_tmp_cwd, capsys):
    output = in_tmp_cwd / "top.csv"
    status = recommend.main([f"--model_file={model_file(trained, 'SASRec')}", "--users=1,nobody,99999",
                             f"--output={output}"])
    assert status == 2
    message = capsys.readouterr().err
    assert "unknown user tokens nobody, 99999" in message
    assert sorted(os.listdir(in_tmp_cwd)) == []


def test_a_users_file_is_read_verbatim_one_token_per_line(trained, in_tmp_cwd, capsys):
    """Tokens may hold commas or spaces, which --users splits and strips: --users_file keeps them as they are."""
    listed = in_tmp_cwd / "users.txt"
    listed.write_text("1\n\n2\n", encoding="utf-8")
    model = f"--model_file={model_file(trained, 'SASRec')}"
    assert recommend.main([model, f"--users_file={listed}", "--k=2"]) == 0
    from_file = capsys.readouterr().out
    assert recommend.main([model, "--users=1,2", "--k=2"]) == 0
    assert capsys.readouterr().out == from_file
    listed.write_text("1 \na,b\n", encoding="utf-8")
    assert recommend.main([model, f"--users_file={listed}"]) == 2
    assert "unknown user tokens 1 , a,b" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recommend.parse_args([model, "--users=1", f"--users_file={listed}"])


@pytest.mark.parametrize("arguments, message", [
    (["--model_file=missing.pth", "--users=1"], "no such file"),
    (["--users=1", "--k=0"], "must be at least 1"),
    (["--users=1", "--k=61"], "only 60 items"),
])
def test_bad_arguments_exit_2(trained, in_tmp_cwd, capsys, arguments, message):
    if not any(argument.startswith("--model_file") for argument in arguments):
        arguments = [f"--model_file={model_file(trained, 'SASRec')}"] + arguments
    assert recommend.main(arguments + [f"--output={in_tmp_cwd / 'top.csv'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (in_tmp_cwd / "top.csv").exists()


def test_changed_data_is_refused(trained, tmp_path, in_tmp_cwd):
    changed_root = write_inter(tmp_path / "changed", "successor", successor_rows() + [(1, 999, 9)])
    with pytest.raises(ValueError, match="not the one this model was trained on"):
        recbole_diffusion.load_data_and_model(model_file(trained, "SASRec"), data_path=changed_root)


def test_moved_data_is_named_and_found_with_data_path(trained, data_root, tmp_path, in_tmp_cwd):
    saved = ckpt.load_checkpoint(model_file(trained, "SASRec"))
    saved["config"]["data_path"] = str(tmp_path / "gone" / "successor")
    saved["config_hash"] = ckpt.config_hash(saved["config"])  # as if trained on data since moved
    moved = str(tmp_path / "moved.pth")
    ckpt.save_checkpoint(saved, moved)
    with pytest.raises(FileNotFoundError, match="no longer exists.*data_path="):
        recbole_diffusion.load_data_and_model(moved)
    config, model, *_ = recbole_diffusion.load_data_and_model(moved, data_path=data_root)
    assert config["data_path"] == os.path.join(data_root, "successor")


def test_recboles_pickled_format_needs_trust_pickled(trained, tmp_path, in_tmp_cwd):
    config, model, *_ = recbole_diffusion.load_data_and_model(model_file(trained, "SASRec"))
    recbole_file = str(tmp_path / "recbole.pth")
    torch.save({"config": config, "epoch": 0, "cur_step": 0, "best_valid_score": 0.1, "state_dict": model.state_dict(),
                "other_parameter": {}, "optimizer": {}}, recbole_file, pickle_protocol=4)  # RecBole 1.2.1's format
    with pytest.raises(ckpt.UnsafeCheckpointError, match="trust_pickled"):
        recbole_diffusion.load_data_and_model(recbole_file)
    _, trusted, *_ = recbole_diffusion.load_data_and_model(recbole_file, trust_pickled=True)
    assert all(torch.equal(value, trusted.state_dict()[key]) for key, value in model.state_dict().items())


def test_only_keys_that_keep_the_model_may_be_overridden(trained, in_tmp_cwd):
    with pytest.raises(ValueError, match="cannot override hidden_size"):
        recbole_diffusion.load_data_and_model(model_file(trained, "SASRec"), hidden_size=16)


def test_a_diffusion_checkpoint_can_be_scored_with_another_sampler(trained, in_tmp_cwd, capsys):
    """The -fast variants' samplers on a checkpoint trained with the default: same weights, fewer reverse calls."""
    path = model_file(trained, "DiffuRec")
    config, model, *_, test_data = recbole_diffusion.load_data_and_model(path)
    fast_config, fast, *_ = recbole_diffusion.load_data_and_model(path, sampler="ddim", ddim_steps=1)
    assert (model.sampler, model.sampler_steps) == ("ddpm", None) and (fast.sampler, fast.sampler_steps) == ("ddim", 1)
    assert fast_config["sampler"] == "ddim" and fast_config["ddim_steps"] == 1
    assert all(torch.equal(value, fast.state_dict()[key]) for key, value in model.state_dict().items())
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        assert not torch.equal(model.full_sort_predict(batch), fast.full_sort_predict(batch))
    assert recommend.main(["--model_file", path, "--users", "7", "--sampler", "ddim", "--ddim_steps", "2"]) == 0
    with pytest.raises(ValueError, match="ddim_steps"):
        recbole_diffusion.load_data_and_model(path, sampler="ddim", ddim_steps=0)
    with pytest.raises(ValueError, match="SASRec has no reverse process, so sampler cannot be set"):
        recbole_diffusion.load_data_and_model(model_file(trained, "SASRec"), sampler="ddim")
    capsys.readouterr()
    assert recommend.main(["--model_file", model_file(trained, "SASRec"), "--users", "7", "--sampler", "ddim"]) == 2
    assert "has no reverse process" in capsys.readouterr().err


def test_a_checkpoint_from_before_a_new_key_loads_with_the_keys_default(trained, tmp_path, in_tmp_cwd):
    """A key the package gained since training (here eval_history_mask) takes its default, with a warning;
    a configuration that does not hash as written is still refused."""
    saved = ckpt.load_checkpoint(model_file(trained, "SASRec"))
    del saved["config"]["eval_history_mask"]
    saved["config_hash"] = ckpt.config_hash(saved["config"])  # as written before the key existed
    older = str(tmp_path / "older.pth")
    ckpt.save_checkpoint(saved, older)
    with pytest.warns(UserWarning, match="written before recbole_diffusion had eval_history_mask"):
        config, model, *_ = recbole_diffusion.load_data_and_model(older)
    assert config["eval_history_mask"] == "auto"
    saved["config_hash"] = ckpt.config_hash(dict(saved["config"], learning_rate=0.5))  # not what it holds
    ckpt.save_checkpoint(saved, older)
    with pytest.raises(ValueError, match="cannot be rebuilt as it was trained"):
        recbole_diffusion.load_data_and_model(older)


def test_text_values_come_back_as_text_and_never_run(trained, tmp_path, in_tmp_cwd):
    """RecBole's Config evaluates a config_dict's text as Python: a checkpoint's text must reach it quoted, so that
    FEARec's 'None' stays text (as trained) and a crafted checkpoint's text does not run."""
    config, *_ = recbole_diffusion.load_data_and_model(model_file(trained, "FEARec"))
    assert config["fredom_type"] == "None"
    saved = ckpt.load_checkpoint(model_file(trained, "SASRec"))
    saved["config"]["hidden_act"] = "__import__('pathlib').Path('ran').touch() or 'gelu'"
    saved["config_hash"] = ckpt.config_hash(saved["config"])
    crafted = str(tmp_path / "crafted.pth")
    ckpt.save_checkpoint(saved, crafted)
    with pytest.raises(KeyError, match="__import__"):  # no such activation: the text reached the model as text
        recbole_diffusion.load_data_and_model(crafted)
    assert not os.path.exists("ran")


def test_a_checkpoint_never_decides_by_itself_to_be_read_unsafely(trained, tmp_path, in_tmp_cwd, monkeypatch):
    """A checkpoint whose stored configuration says trust_pickled_checkpoint is read once, safely: only the
    caller's own setting may unpickle a file."""
    saved = ckpt.load_checkpoint(model_file(trained, "SASRec"))
    saved["config"]["trust_pickled_checkpoint"] = True
    saved["config_hash"] = ckpt.config_hash(saved["config"])
    claims_trust = str(tmp_path / "claims-trust.pth")
    ckpt.save_checkpoint(saved, claims_trust)
    reads = []
    original_load = torch.load

    def recorded(path, *args, **kwargs):
        if str(path) == claims_trust:
            reads.append(kwargs.get("weights_only"))
        return original_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recorded)
    config, model, *_ = recbole_diffusion.load_data_and_model(claims_trust)
    assert reads == [True] and config["trust_pickled_checkpoint"] is False


def test_rows_appended_for_known_users_and_items_are_refused_naming_the_cause(trained, tmp_path, in_tmp_cwd):
    """The same users and items, one more interaction: every target of that user moves; before the interactions
    were fingerprinted this was accepted. A new user is named as such, not as a change of item ids."""
    rows = successor_rows()
    appended = write_inter(tmp_path / "appended", "successor", rows + [(rows[0][0], rows[1][1], 99)])
    with pytest.raises(ValueError, match=r"interactions were added, removed or reordered") as refused:
        recbole_diffusion.load_data_and_model(model_file(trained, "SASRec"), data_path=appended)
    assert os.path.join(appended, "successor", "successor.inter") in str(refused.value)
    new_user = write_inter(tmp_path / "new-user", "successor", rows + [(9999, rows[0][1], 1), (9999, rows[1][1], 2)])
    with pytest.raises(ValueError, match=r"users were added or removed") as refused:
        recbole_diffusion.load_data_and_model(model_file(trained, "SASRec"), data_path=new_user)
    assert "map to other items" not in str(refused.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_scores_that_rank_nothing_are_refused(trained, in_tmp_cwd, monkeypatch, value):
    from recbole_diffusion.quick_start.inference import load_data_and_model

    config, model, dataset, _, _, test_data = load_data_and_model(model_file(trained, "SASRec"))
    full_sort = model.full_sort_predict

    def spoiled(interaction):
        scores = full_sort(interaction).clone()
        scores[:, 3] = value
        return scores

    monkeypatch.setattr(model, "full_sort_predict", spoiled)
    users = recommend.user_ids_of(dataset, ["1", "2"])
    with pytest.raises(FloatingPointError, match="NaN or an infinity"):
        recommend.top_k(config, model, dataset, test_data, users, 5)
