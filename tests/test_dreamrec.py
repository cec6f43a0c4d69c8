"""DreamRec / PreferDiff: the preference loss, guidance, negatives, learning, and runs through RecBole."""

import copy
import math

import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recbole_diffusion.diffusion import KeyedNoise
from recbole_diffusion.model.loss import batch_negative_centroids, cosine_error, preference_loss
from recbole_diffusion.model import DreamRec, PreferDiff
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import run
from conftest import FAST, TINY, assert_checkpoint_reload_reproduces, assert_full_ranking_result

SMALL_T = {"diffusion_steps": 200}


def test_cosine_error_closed_forms():
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    x = torch.tensor([[3.0, 0.0], [-2.0, 0.0], [0.0, 5.0]])  # parallel, opposite, orthogonal
    torch.testing.assert_close(cosine_error(x, e), torch.tensor([0.0, 4.0, 1.0]))


def test_preference_loss_matches_a_hand_computed_example():
    pos, neg = torch.tensor([0.1, 0.3]), torch.tensor([0.5, 0.2])
    lam, gamma = 0.4, 5.0
    batch_mean = lam * 0.2 - (1 - lam) * math.log(1 / (1 + math.exp(-(-gamma * (0.2 - 0.35)))))
    per_example = sum(lam * p - (1 - lam) * math.log(1 / (1 + math.exp(gamma * (p - n))))
                      for p, n in ((0.1, 0.5), (0.3, 0.2))) / 2
    assert preference_loss(pos, neg, lam, gamma).item() == pytest.approx(batch_mean, rel=1e-6)
    assert preference_loss(pos, neg, lam, gamma, batch_mean=False).item() == pytest.approx(per_example, rel=1e-6)


def _loss_of(x0_pos, x0_neg, e_pos, e_neg, lam=0.4):
    return preference_loss(cosine_error(x0_pos, e_pos), cosine_error(x0_neg, e_neg), lam, 5.0)


def test_negative_branch_gets_no_gradient_when_lambda_is_one():
    torch.manual_seed(0)
    e_pos, e_neg = torch.randn(4, 8), torch.randn(4, 8)
    x0_pos, x0_neg = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    _loss_of(x0_pos, x0_neg, e_pos, e_neg, lam=1.0).backward()
    assert torch.count_nonzero(x0_neg.grad) == 0 and torch.count_nonzero(x0_pos.grad) > 0
    x0_neg.grad = None
    _loss_of(x0_pos, x0_neg, e_pos, e_neg, lam=0.4).backward()
    assert torch.count_nonzero(x0_neg.grad) > 0


def test_loss_falls_toward_the_target_and_rises_toward_the_negative_centroid():
    torch.manual_seed(1)
    e_pos, e_neg, start = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    x0_neg = torch.randn(4, 8)
    toward_target = [_loss_of((1 - a) * start + a * e_pos, x0_neg, e_pos, e_neg).item() for a in (0, .25, .5, .75, 1)]
    toward_negative = [_loss_of((1 - a) * e_pos + a * e_neg, x0_neg, e_pos, e_neg).item() for a in (0, .25, .5, .75, 1)]
    assert all(later < earlier for earlier, later in zip(toward_target, toward_target[1:]))
    assert all(later > earlier for earlier, later in zip(toward_negative, toward_negative[1:]))


def test_batch_negative_centroids_average_the_other_targets_only():
    one_hot = torch.eye(6)
    torch.testing.assert_close(batch_negative_centroids(one_hot), (1 - torch.eye(6)) / 5)
    torch.manual_seed(2)
    sampled = batch_negative_centroids(one_hot, n_negatives=3)
    assert torch.all(sampled.diagonal() == 0)  # never itself
    torch.testing.assert_close(sampled.sum(dim=1), torch.ones(6))  # a mean of 3 one-hot rows
    assert torch.all((sampled == 0) | torch.isclose(sampled, torch.tensor(1 / 3)))  # 3 distinct others
    counts = sum(batch_negative_centroids(one_hot, n_negatives=3) * 3 for _ in range(2000)) / 2000
    torch.testing.assert_close(counts, (1 - torch.eye(6)) * 3 / 5, atol=0.05, rtol=0)  # uniform among the others


@pytest.fixture(scope="module")
def prepared(data_root):
    config, _ = build_config("PreferDiff", "ml-100k-small", config_dict={**FAST, **SMALL_T, "data_path": data_root})
    init_seed(config["seed"], True)
    return config, data_preparation(config, create_dataset(config))


def make_model(prepared, model_class=PreferDiff, **overrides):
    config, (train_data, _, _) = prepared
    model_config = copy.copy(config)
    model_config.final_config_dict = {**config.final_config_dict, "model": model_class.__name__, **overrides}
    torch.manual_seed(0)
    return model_class(model_config, train_data._dataset)


def test_guidance_combines_the_conditional_and_null_branches(prepared):
    model = make_model(prepared, guidance_weight=3.0).eval()
    h, x_t, t = torch.randn(5, 32), torch.randn(5, 32), torch.randint(0, 200, (5,))
    conditional = model.predict_x0(x_t, h, t)
    unconditional = model.predict_x0(x_t, model.null_guidance.expand(5, -1), t)
    torch.testing.assert_close(model.denoise(h, x_t, t), 4.0 * conditional - 3.0 * unconditional)
    model.guidance_weight = 0.0
    torch.testing.assert_close(model.denoise(h, x_t, t), conditional)


def test_unguided_sampling_equals_sampling_the_conditional_model(prepared):
    model = make_model(prepared, guidance_weight=0.0, sampler="ddpm").eval()
    batch = next(iter(prepared[1][2]))[0]
    seq, seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    users = batch[model.USER_ID]
    generated = model.generate(seq, seq_len, users)
    h = model.encode_condition(seq, seq_len)
    noise = KeyedNoise(model.eval_seed, torch.stack([users, torch.zeros_like(users)], dim=1))
    direct = model.diffusion.sample(lambda x_t, t: model.predict_x0(x_t, h, t), (len(seq), 32), seq.device,
                                    sampler="ddpm", variance="posterior", noise=noise)
    torch.testing.assert_close(generated, direct)


def test_null_guidance_is_used_with_probability_p(prepared):
    model = make_model(prepared, cfg_dropout_prob=0.1)
    guidance = torch.randn(200_000, 32)
    replaced = (model.drop_guidance(guidance) == model.null_guidance).all(dim=1).float().mean().item()
    assert abs(replaced - 0.1) < 4 * math.sqrt(0.1 * 0.9 / 200_000)


def test_recbole_sampled_negatives_are_averaged_per_example(prepared):
    """With train_neg_sample_args sample_num m, RecBole tiles the batch m times, one negative per copy."""
    model = make_model(prepared, train_neg_sample_args={"distribution": "uniform", "sample_num": 3, "alpha": 1.0,
                                                        "dynamic": False, "candidate_num": 0})
    positives = torch.tensor([1, 2])
    interaction = Interaction({model.POS_ITEM_ID: positives.repeat(3), model.NEG_ITEM_ID: torch.tensor([5, 6, 7, 8, 9, 10])})
    rows, centroids = model.negative_centroids(interaction, model.item_embedding(positives.repeat(3)))
    assert rows == slice(0, 2)
    table = model.item_embedding.weight
    torch.testing.assert_close(centroids, torch.stack([table[[5, 7, 9]].mean(0), table[[6, 8, 10]].mean(0)]))


@pytest.mark.parametrize("key,value,message", [
    ("guidance_weight", -1.0, "guidance_weight=-1.0"),
    ("cfg_dropout_prob", 1.0, r"cfg_dropout_prob=1.0: must lie in \[0, 1\)"),
    ("preference_lambda", 1.5, "preference_lambda=1.5"),
    ("preference_gamma", 0.0, "preference_gamma=0.0"),
    ("neg_samples", 256, "neg_samples=256: must be smaller than train_batch_size=256"),
    ("ddim_steps", 500, "ddim_steps=500: must be between 1 and diffusion_steps=200"),
    ("n_heads", 3, "hidden_size=32: must be divisible by n_heads=3"),
    ("preference_batch_mean", "yes", "preference_batch_mean='yes': must be True or False"),
    ("train_batch_size", 1, "train_batch_size=1: must be at least 2 when the negatives are the other targets"),
    ("train_neg_sample_args", {"distribution": "uniform", "sample_num": 2, "dynamic": True},
     "dynamic negative sampling"),
])
def test_bad_config_is_refused_when_the_model_is_built(prepared, key, value, message):
    with pytest.raises(ValueError, match=message):
        make_model(prepared, **{key: value})


def test_neg_samples_beside_recbole_sampler_is_refused(prepared):
    """neg_samples would be silently ignored: RecBole's sampler decides the number of negatives."""
    with pytest.raises(ValueError, match="neg_samples=8: only counts batch negatives"):
        make_model(prepared, neg_samples=8, train_neg_sample_args={"distribution": "uniform", "sample_num": 2,
                                                                     "alpha": 1.0, "dynamic": False})


def test_dreamrec_refuses_recbole_sampled_negatives(prepared):
    """DreamRec reads item_id as the target; RecBole's sampler would overwrite it in the repeated rows."""
    with pytest.raises(ValueError, match="DreamRec trains on the positive target only"):
        make_model(prepared, DreamRec, train_neg_sample_args={"distribution": "uniform", "sample_num": 2,
                                                               "dynamic": False})


def test_a_batch_of_one_gets_a_random_item_as_negative_and_a_finite_loss(prepared):
    """RecBole keeps a last partial batch; with a single example there is no other target to contrast."""
    model = make_model(prepared)
    positives = torch.tensor([4])
    rows, centroid = model.negative_centroids(Interaction({model.POS_ITEM_ID: positives}),
                                              model.item_embedding(positives))
    assert rows == slice(None) and centroid.shape == (1, 32)
    assert any(torch.equal(centroid[0], row) for row in model.item_embedding.weight[1:])
    interaction = Interaction({model.ITEM_SEQ: torch.tensor([[1, 2, 3, 0]]), model.ITEM_SEQ_LEN: torch.tensor([3]),
                               model.POS_ITEM_ID: positives})
    loss = model.calculate_loss(interaction)
    assert torch.isfinite(loss)
    loss.backward()


@pytest.mark.parametrize("model", ["DreamRec", "PreferDiff"])
def test_learns_a_deterministic_successor_pattern(data_root, in_tmp_cwd, model):
    """Histories of at most 7 items fit a list of 8; the final weights score the test split (no checkpoint), so
    validating once, after the last epoch, changes nothing that is tested (DreamRec samples all T steps)."""
    common = {**FAST, **SMALL_T, "data_path": data_root, "epochs": 15, "learning_rate": 0.005, "stopping_step": 20,
              "eval_step": 15, "MAX_ITEM_LIST_LENGTH": 8}
    learned = run(model, "successor", config_dict=common, saved=False)["test_result"]
    pop = run("Pop", "successor", config_dict={**common, "epochs": 1}, saved=False)["test_result"]
    assert learned["hit@10"] > 0.8 and learned["hit@10"] > 2.5 * pop["hit@10"]


@pytest.mark.parametrize("model,overrides", [
    ("DreamRec", {}),
    ("PreferDiff", {}),
    ("PreferDiff", {"sampler": "ddpm", "preference_batch_mean": False, "neg_samples": 16}),
    ("PreferDiff", {"train_neg_sample_args": "{'distribution': 'popularity', 'sample_num': 4}"}),
])
def test_end_to_end_through_recbole_trainer_with_checkpoint_reload(data_root, in_tmp_cwd, model, overrides):
    """Plumbing, not quality: the tiny slice and sizes, one epoch, T = 10 (5 DDIM steps) take every step of the path."""
    settings = {**TINY, "diffusion_steps": 10, "ddim_steps": 5, "data_path": data_root, "epochs": 1, **overrides}
    result = run(model, "ml-100k-tiny", config_dict=settings)
    assert_full_ranking_result(result)
    assert_checkpoint_reload_reproduces(model, [], settings, result["saved_model_file"], dataset="ml-100k-tiny")


def test_embedding_init_std_sets_items_and_positions_but_not_the_null_vector(prepared):
    """The null vector stands in for the encoder's output, which leaves a LayerNorm: it keeps N(0, 1)."""
    model = make_model(prepared, embedding_init_std=0.02, hidden_size=256)
    assert model.item_embedding.weight[1:].std().item() == pytest.approx(0.02, rel=0.05)
    assert model.position_embedding.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.null_guidance.std().item() == pytest.approx(1.0, rel=0.2)
    assert [type(module).__name__ for module in model.encoder.block_dropouts] == ["Identity"]
