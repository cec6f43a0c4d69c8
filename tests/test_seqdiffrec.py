"""SeqDiffRec (Du et al. 2023): shapes, gradients, padding, loss weights, one-step inference, config errors,
learning, and a run through RecBole's Trainer with checkpoint reload."""

import copy

import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_diffusion.diffusion import KeyedNoise, LossAwareTimestepSampler, UniformTimestepSampler
from recbole_diffusion.model import SeqDiffRec
from recbole_diffusion.config.configurator import build_config, get_model_class
from recbole_diffusion.quick_start.quick_start import run
from conftest import FAST, TINY, assert_checkpoint_reload_reproduces, assert_full_ranking_result


@pytest.fixture(scope="module")
def prepared(data_root):
    """Config and data loaders of the tiny ml-100k slice for SeqDiffRec (its YAML: T 1000, loss-aware steps)."""
    config, _ = build_config("SeqDiffRec", "ml-100k-tiny", config_dict={**TINY, "data_path": data_root})
    init_seed(config["seed"], True)
    return config, data_preparation(config, create_dataset(config))


def make_model(prepared, **overrides):
    config, (train_data, _, _) = prepared
    model_config = copy.copy(config)
    model_config.final_config_dict = {**config.final_config_dict, **overrides}
    torch.manual_seed(0)
    return SeqDiffRec(model_config, train_data._dataset)


def first_batch(prepared, split=0):
    batch = next(iter(prepared[1][split]))
    return batch[0] if isinstance(batch, tuple) else batch


def _pad_right(sequences, length):
    out = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, items in enumerate(sequences):
        out[row, : len(items)] = torch.tensor(items)
    return out, torch.tensor([len(items) for items in sequences])


@pytest.mark.parametrize("timestep_sampler", ["uniform", "loss_aware"])
def test_loss_is_finite_and_every_parameter_gets_a_gradient(prepared, timestep_sampler):
    model = make_model(prepared, timestep_sampler=timestep_sampler)
    expected = LossAwareTimestepSampler if timestep_sampler == "loss_aware" else UniformTimestepSampler
    assert isinstance(model.timestep_sampler, expected)
    loss = model.calculate_loss(first_batch(prepared))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_training_feeds_the_sampler_each_example_mse_and_weights_each_example_loss(prepared, monkeypatch):
    model = make_model(prepared, timestep_sampler="loss_aware").eval()  # no dropout: two passes agree
    batch = first_batch(prepared)
    size = len(batch)
    t = torch.arange(size) % model.diffusion.num_steps
    fed = []
    monkeypatch.setattr(model.timestep_sampler, "update", lambda steps, losses: fed.append((steps, losses)))
    losses = {}
    for name, weights in {"unit": torch.ones(size), "double": torch.full((size,), 2.0),
                          "first only": (torch.arange(size) == 0).float() * size}.items():
        monkeypatch.setattr(model.timestep_sampler, "sample", lambda n, device, w=weights: (t, w))
        torch.manual_seed(1)
        losses[name] = model.calculate_loss(batch)
    torch.testing.assert_close(losses["double"], 2 * losses["unit"])
    steps, mse = fed[0]
    assert torch.equal(steps, t) and mse.shape == (size,) and not mse.requires_grad
    # the first example alone: its MSE plus its cross-entropy
    x0 = model.item_embedding(batch[model.POS_ITEM_ID][:1])
    torch.manual_seed(1)
    x_t = model.diffusion.q_sample(model.item_embedding(batch[model.POS_ITEM_ID]), t)[:1]
    x0_hat = model.denoise(model.encode_condition(batch[model.ITEM_SEQ][:1], batch[model.ITEM_SEQ_LEN][:1]), x_t, t[:1])
    cross_entropy = torch.nn.functional.cross_entropy(x0_hat @ model.item_embedding.weight.t(),
                                                      batch[model.POS_ITEM_ID][:1])
    torch.testing.assert_close(losses["first only"], (x0_hat - x0).pow(2).mean() + cross_entropy, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fed[2][1][0], (x0_hat - x0).pow(2).mean().detach(), rtol=1e-5, atol=1e-6)


def test_sampler_state_is_in_the_state_dict_and_reloads(prepared):
    model = make_model(prepared, diffusion_steps=8, beta_schedule="cosine")
    model.calculate_loss(first_batch(prepared))
    state = model.state_dict()
    assert int(state["timestep_sampler.loss_counts"].sum()) == len(first_batch(prepared))
    fresh = make_model(prepared, diffusion_steps=8, beta_schedule="cosine")
    fresh.load_state_dict(state)
    assert torch.equal(fresh.timestep_sampler.loss_history, model.timestep_sampler.loss_history)
    assert torch.equal(fresh.timestep_sampler.probabilities(), model.timestep_sampler.probabilities())


def test_one_step_inference_is_one_call_at_the_noisiest_step(prepared, monkeypatch):
    model = make_model(prepared).eval()
    batch = first_batch(prepared, split=2)
    users = batch[model.USER_ID]
    calls = []
    denoise = model.denoise

    def counted(condition, x_t, t, noise=None):
        calls.append(t.unique().tolist())
        return denoise(condition, x_t, t, noise)

    monkeypatch.setattr(model, "denoise", counted)
    scores = model.full_sort_predict(batch)
    assert calls == [[model.diffusion.num_steps - 1]]
    assert scores.shape == (len(batch), model.n_items) and torch.isfinite(scores).all()
    # x_T is the user's keyed noise; the one call's x0_hat is what is ranked
    x_T = KeyedNoise(model.eval_seed, torch.stack([users, torch.zeros_like(users)], dim=1)).normal(
        KeyedNoise.START, model.diffusion.num_steps, (model.hidden_size,))
    t = torch.full_like(users, model.diffusion.num_steps - 1)
    x0_hat = denoise(model.encode_condition(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]), x_T, t)
    torch.testing.assert_close(scores, x0_hat @ model.item_embedding.weight.t())


def test_predict_agrees_with_full_sort(prepared):
    """Sampled evaluation repeats each history once per candidate; the keyed noise gives each user one x0."""
    model = make_model(prepared).eval()
    batch = first_batch(prepared, split=2)
    users = torch.arange(4)
    candidates = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]])
    repeated = batch[users.repeat_interleave(3)]
    repeated.interaction[model.ITEM_ID] = candidates.flatten()
    expected = model.full_sort_predict(batch[users]).gather(1, candidates).flatten()
    torch.testing.assert_close(model.predict(repeated), expected, rtol=1e-5, atol=1e-5)


def test_output_depends_on_history_order_but_not_on_the_amount_of_right_padding(prepared):
    model = make_model(prepared).eval()
    sequences = [[5, 9, 2, 7], [3, 4], [8, 1, 6, 2, 10, 11]]
    x_t, t = torch.randn(3, model.hidden_size), torch.tensor([0, 500, 999])
    short = model.denoise(model.encode_condition(*_pad_right(sequences, 8)), x_t, t)
    long = model.denoise(model.encode_condition(*_pad_right(sequences, 20)), x_t, t)
    torch.testing.assert_close(short, long, rtol=1e-5, atol=1e-5)
    reordered = model.denoise(model.encode_condition(*_pad_right([[9, 5, 2, 7], [4, 3], [8, 1, 6, 2, 11, 10]], 8)),
                              x_t, t)
    assert (reordered - short).abs().amax(dim=1).min() > 1e-4


@pytest.mark.parametrize("key,value,message", [
    ("timestep_sampler", "importance", "timestep_sampler='importance': must be one of"),
    ("loss_aware_history", 0, "loss_aware_history=0: must be an integer >= 1"),
    ("loss_aware_uniform_share", 0.0, r"loss_aware_uniform_share=0.0: must lie in \(0, 1\]"),
    ("loss_aware_uniform_share", 1.5, "loss_aware_uniform_share=1.5"),
    ("mse_weight", -1.0, "mse_weight=-1.0"),
    ("sampler", "euler", "sampler='euler': must be one of.*one_step"),
    ("diffusion_steps", 100, r"sampler='one_step': predicts x0 from N\(0, I\) at t = T-1.*abar = 0.364"),
    ("n_heads", 3, "hidden_size=16: must be divisible by n_heads=3"),
    ("train_neg_sample_args", {"distribution": "uniform", "sample_num": 1, "dynamic": False},
     "SeqDiffRec trains on the positive target only"),
])
def test_bad_config_is_refused_when_the_model_is_built(prepared, key, value, message):
    with pytest.raises(ValueError, match=message):
        make_model(prepared, **{key: value})


def test_runner_refuses_a_bad_timestep_sampler_before_writing_anything(data_root, in_tmp_cwd):
    with pytest.raises(ValueError, match="timestep_sampler='importance'"):
        run("SeqDiffRec", "ml-100k-tiny",
            config_dict={**TINY, "data_path": data_root, "timestep_sampler": "importance"})
    assert not list(in_tmp_cwd.iterdir())


def test_learns_a_deterministic_successor_pattern(data_root, in_tmp_cwd):
    """The YAML's T = 1000, loss-aware steps and one-step inference at FAST sizes. Histories of at most 7 items
    fit a list of 8; the final weights score the test split (no checkpoint), so one validation at the end suffices."""
    common = {**FAST, "data_path": data_root, "epochs": 15, "learning_rate": 0.005, "stopping_step": 20,
              "eval_step": 15, "MAX_ITEM_LIST_LENGTH": 8}
    learned = run("SeqDiffRec", "successor", config_dict=common, saved=False)["test_result"]
    pop = run("Pop", "successor", config_dict={**common, "epochs": 1}, saved=False)["test_result"]
    assert pop["hit@10"] < 0.35
    assert learned["hit@10"] > 0.8 and learned["hit@10"] > 2.5 * pop["hit@10"]


def test_end_to_end_through_recbole_trainer_with_checkpoint_reload(data_root, in_tmp_cwd):
    """Plumbing, not quality: the tiny slice and sizes, one epoch, T = 8 (cosine, so x_{T-1} is noise)."""
    settings = {**TINY, "data_path": data_root, "epochs": 1, "diffusion_steps": 8, "beta_schedule": "cosine"}
    result = run("SeqDiffRec", "ml-100k-tiny", config_dict=settings)
    assert_full_ranking_result(result)
    assert_checkpoint_reload_reproduces("SeqDiffRec", [], settings, result["saved_model_file"], dataset="ml-100k-tiny")
    state = torch.load(result["saved_model_file"], weights_only=False)["state_dict"]
    assert int(state["timestep_sampler.loss_counts"].min()) >= 10  # past the uniform warm-up: loss-aware


def test_yaml_defaults_and_recbole_diffrec_still_reachable(prepared):
    config = prepared[0]
    assert (config["timestep_sampler"], config["sampler"], config["diffusion_steps"], config["beta_schedule"]) == \
        ("loss_aware", "one_step", 1000, "linear")
    assert get_model_class("SeqDiffRec") is SeqDiffRec
    assert get_model_class("DiffRec").__module__.startswith("recbole.model.general_recommender")
