"""DiffuRec / DiffuRecSys: shapes, gradients, padding, ensembles, learning, and runs through RecBole's Trainer."""

import copy
import os

import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_diffusion.model import DiffuRec, DiffuRecSys
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import run
from conftest import FAST, TINY, assert_checkpoint_reload_reproduces, assert_full_ranking_result

VARIANTS = os.path.join(os.path.dirname(__file__), "..", "properties", "model", "variants")


@pytest.fixture(scope="module")
def prepared(data_root):
    """Config and data loaders of the small ml-100k slice for DiffuRec."""
    config, _ = build_config("DiffuRec", "ml-100k-small", config_dict={**FAST, "data_path": data_root})
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    return config, dataset, data_preparation(config, dataset)


def make_model(prepared, model_class=DiffuRec, **overrides):
    """Build a model on the prepared data with some config keys overridden (the shared config is untouched)."""
    config, _, (train_data, _, _) = prepared
    model_config = copy.copy(config)
    model_config.final_config_dict = {**config.final_config_dict, **overrides}
    torch.manual_seed(0)
    return model_class(model_config, train_data._dataset)


def first_batch(prepared, split=0):
    loader = prepared[2][split]
    batch = next(iter(loader))
    return batch[0] if isinstance(batch, tuple) else batch


@pytest.mark.parametrize("model_class,overrides", [
    (DiffuRec, {}),
    (DiffuRec, {"position_embedding": True}),
    (DiffuRecSys, {"cross_attention": True, "offset_noise_scale": 0.001}),
])
def test_loss_is_finite_and_every_parameter_gets_a_gradient(prepared, model_class, overrides):
    model = make_model(prepared, model_class, **overrides)
    loss = model.calculate_loss(first_batch(prepared))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_scores_cover_all_items_and_predict_agrees_with_full_sort(prepared, monkeypatch):
    model = make_model(prepared).eval()
    batch = first_batch(prepared, split=2)
    torch.manual_seed(1)
    scores = model.full_sort_predict(batch)
    assert scores.shape == (len(batch), model.n_items) and torch.isfinite(scores).all()

    # Sampled evaluation repeats each history once per candidate: all candidates share one sampled x0.
    calls = []

    def fake_generate(item_seq, item_seq_len, user_ids):
        calls.append(len(item_seq))
        return model.item_embedding(item_seq).sum(dim=1) / item_seq_len[:, None]

    monkeypatch.setattr(model, "generate", fake_generate)
    users = torch.arange(4)
    candidates = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]])
    repeated = batch[users.repeat_interleave(3)]
    repeated.interaction[model.ITEM_ID] = candidates.flatten()
    point = model.predict(repeated)
    expected = model.full_sort_predict(batch[users]).gather(1, candidates).flatten()
    torch.testing.assert_close(point, expected, rtol=1e-5, atol=1e-5)
    assert calls[0] == 4  # one sampling run per user, not per candidate


def _pad_right(sequences, length):
    out = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, items in enumerate(sequences):
        out[row, : len(items)] = torch.tensor(items)
    return out, torch.tensor([len(items) for items in sequences])


def _approximate(model, item_seq, item_seq_len, x_t, t, gather_at=None):
    history, padding_mask, lengths = model.encode_condition(item_seq, item_seq_len)
    return model.denoise((history, padding_mask, lengths if gather_at is None else gather_at), x_t, t)


@pytest.mark.parametrize("position_embedding", [False, True])
def test_output_does_not_depend_on_the_amount_of_right_padding(prepared, position_embedding, monkeypatch):
    model = make_model(prepared, position_embedding=position_embedding).eval()
    monkeypatch.setattr(model, "_lambda", lambda like, t, noise: torch.full_like(like, 0.5))
    sequences = [[5, 9, 2, 7], [3, 4], [8, 1, 6, 2, 10, 11]]
    x_t, t = torch.randn(3, model.hidden_size), torch.tensor([0, 5, 31])
    short = _approximate(model, *_pad_right(sequences, 8), x_t, t)
    long = _approximate(model, *_pad_right(sequences, 20), x_t, t)
    torch.testing.assert_close(short, long, rtol=1e-5, atol=1e-5)


def test_right_padding_matches_the_authors_left_padding(prepared, monkeypatch):
    model = make_model(prepared).eval()
    monkeypatch.setattr(model, "_lambda", lambda like, t, noise: torch.full_like(like, 0.5))
    sequences = [[5, 9, 2, 7], [3, 4]]
    right, lengths = _pad_right(sequences, 6)
    left = torch.stack([torch.roll(row, int(6 - n)) for row, n in zip(right, lengths)])
    x_t, t = torch.randn(2, model.hidden_size), torch.tensor([3, 17])
    ours = _approximate(model, right, lengths, x_t, t)
    authors = _approximate(model, left, lengths, x_t, t, gather_at=torch.full_like(lengths, 6))
    torch.testing.assert_close(ours, authors, rtol=1e-5, atol=1e-5)


def test_without_positions_only_the_last_item_is_ordered(prepared, monkeypatch):
    """The authors' approximator ignores history order except the last item; positions change that."""
    x_t, t = torch.randn(1, 32), torch.tensor([4])
    outputs = {}
    for position_embedding in (False, True):
        model = make_model(prepared, position_embedding=position_embedding).eval()
        monkeypatch.setattr(model, "_lambda", lambda like, t, noise: torch.full_like(like, 0.5))
        a = _approximate(model, *_pad_right([[5, 9, 2, 7]], 6), x_t, t)
        b = _approximate(model, *_pad_right([[2, 5, 9, 7]], 6), x_t, t)
        outputs[position_embedding] = (a - b).abs().max().item()
    assert outputs[False] < 1e-5
    assert outputs[True] > 1e-3


def test_ensemble_averages_the_runs_of_each_user(prepared, monkeypatch):
    model = make_model(prepared, n_ensemble=3).eval()
    batch = first_batch(prepared, split=2)
    users = len(batch)
    runs = torch.arange(3 * users * model.hidden_size, dtype=torch.float32).view(3 * users, model.hidden_size)
    monkeypatch.setattr(model.diffusion, "sample", lambda denoise, shape, device, **kw: runs[: shape[0]])
    x0 = model.generate(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], batch[model.USER_ID])
    expected = (runs[:users] + runs[users: 2 * users] + runs[2 * users:]) / 3
    torch.testing.assert_close(x0, expected)


@pytest.mark.parametrize("key,value,message", [
    ("diffusion_steps", 0, "diffusion_steps=0"),
    ("beta_schedule", "quadratic", "beta_schedule='quadratic'"),
    ("hidden_size", 33, "hidden_size=33: must be divisible by n_heads=2"),
    ("lambda_uncertainty", -0.1, "lambda_uncertainty=-0.1"),
    ("n_ensemble", 0, "n_ensemble=0"),
    ("embedding_init_std", 0.0, "embedding_init_std=0.0"),
    ("ddpm_steps", 64, "ddpm_steps=64"),
    ("ddim_steps", 0, "ddim_steps=0"),
    ("sampler", "euler", "sampler='euler'"),
    ("cross_attention", "no", "cross_attention='no': must be True or False"),
    ("train_neg_sample_args", {"distribution": "uniform", "sample_num": 1, "dynamic": False},
     "train_neg_sample_args=.*trains on the positive target only"),
])
def test_bad_config_is_refused_when_the_model_is_built(prepared, key, value, message):
    pattern = message if ".*" in message else message.replace("(", r"\(").replace("[", r"\[")
    with pytest.raises(ValueError, match=pattern):
        make_model(prepared, **{key: value})


def test_diffurec_learns_a_deterministic_successor_pattern(data_root, in_tmp_cwd):
    """The next item is a fixed function of the last one; popularity is flat, so Pop stays near 10/60.

    Histories hold at most 7 items, so a list length of 8 truncates none. Without a checkpoint the test split
    is scored by the final weights, so validating once, after the last epoch, changes nothing that is tested."""
    common = {**FAST, "data_path": data_root, "epochs": 15, "learning_rate": 0.005, "stopping_step": 20,
              "eval_step": 15, "MAX_ITEM_LIST_LENGTH": 8}
    diffurec = run("DiffuRec", "successor", config_dict=common, saved=False)["test_result"]
    pop = run("Pop", "successor", config_dict={**common, "epochs": 1}, saved=False)["test_result"]
    assert pop["hit@10"] < 0.35
    assert diffurec["hit@10"] > 0.8
    assert diffurec["hit@10"] > 2.5 * pop["hit@10"]


@pytest.mark.parametrize("model,variant,cross_attention,offset_noise", [
    ("DiffuRec", None, False, False),
    ("DiffuRecSys", "DiffuRecSys-baseline.yaml", False, False),
    ("DiffuRecSys", "DiffuRecSys-V1.yaml", True, False),
    ("DiffuRecSys", "DiffuRecSys-V2.yaml", True, True),
])
def test_end_to_end_through_recbole_trainer_with_checkpoint_reload(data_root, in_tmp_cwd, model, variant,
                                                                   cross_attention, offset_noise):
    """Plumbing, not quality: the tiny slice and sizes, one epoch and T = 8 take every step of the path."""
    files = [os.path.join(VARIANTS, variant)] if variant else []
    settings = {**TINY, "data_path": data_root, "epochs": 1, "diffusion_steps": 8}
    config, _ = build_config(model, "ml-100k-tiny", config_file_list=files, config_dict=settings)
    assert config["cross_attention"] is cross_attention
    assert (config["offset_noise_scale"] > 0) is offset_noise
    result = run(model, "ml-100k-tiny", config_file_list=files, config_dict=settings)
    assert_full_ranking_result(result)
    assert_checkpoint_reload_reproduces(model, files, settings, result["saved_model_file"], dataset="ml-100k-tiny")


def test_approximator_has_a_dropout_after_every_block_and_before_its_norm(prepared):
    """The authors' TransformerBlock ends with a dropout: n_layers on the residual stream, plus the final one."""
    model = make_model(prepared, n_layers=3, hidden_dropout_prob=0.1)
    stack = model.approximator
    assert [type(module).__name__ for module in stack.block_dropouts] == ["Dropout"] * 3
    assert all(module.p == 0.1 for module in stack.block_dropouts) and stack.output_dropout.p == 0.1
    history = torch.randn(4, 6, model.hidden_size)
    padding = torch.zeros(4, 6, dtype=torch.bool)
    stack.train()
    first, second = stack(history, padding), stack(history, padding)
    assert not torch.allclose(first, second)
    stack.eval()
    torch.testing.assert_close(stack(history, padding), stack(history, padding))


@pytest.mark.parametrize("std", [1.0, 0.02])
def test_embedding_init_std_sets_items_and_positions(prepared, std):
    model = make_model(prepared, position_embedding=True, embedding_init_std=std)
    items = model.item_embedding.weight[1:]
    positions = model.position_embedding.weight
    assert torch.equal(model.item_embedding.weight[0], torch.zeros(model.hidden_size))
    assert items.std().item() == pytest.approx(std, rel=0.05)
    assert positions.std().item() == pytest.approx(std, rel=0.25)
