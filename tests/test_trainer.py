"""The trainer layer: learning-rate schedule, RecBole's own trainers kept, NaN scores refused, target ranks."""

import pytest
import torch
from recbole.trainer import Trainer

from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import build_trainer, fit_and_test, prepare_data
from recbole_diffusion.evaluation.metrics import target_ranks
from recbole_diffusion.trainer.trainer import PluginTrainerMixin, lr_factor
from conftest import TINY, TINY_USERS


def _pipeline(model, data_root, **settings):
    """Config, data and trainer on the tiny slice: these tests check the trainer's bookkeeping, not learning."""
    config, model_class = build_config(model, "ml-100k-tiny", config_dict={
        **TINY, "data_path": data_root, **settings})
    data = prepare_data(config)
    return data, build_trainer(config, model_class, data.train)


def test_lr_factor_is_warmup_times_step_decay():
    assert [lr_factor(e, 2, 0.5, 0) for e in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert [lr_factor(e, 100, 0.1, 4) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(250, 100, 0.1, 0) == pytest.approx(0.01)


def test_learning_rate_follows_the_schedule_epoch_by_epoch(data_root, in_tmp_cwd):
    data, trainer = _pipeline("DiffuRec", data_root, epochs=5, eval_step=5, learning_rate=0.01, diffusion_steps=8,
                              lr_scheduler="step", lr_step_size=2, lr_gamma=0.5, lr_warmup_epochs=2)
    fit_and_test(trainer, data, saved=False)
    expected = [0.01 * lr_factor(epoch, 2, 0.5, 2) for epoch in range(5)]
    assert trainer.learning_rates == pytest.approx(expected)  # 0.005, 0.01, 0.005, 0.005, 0.0025
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * lr_factor(5, 2, 0.5, 2))
    assert len(trainer.epoch_seconds) == 5 and [epoch for epoch, _ in trainer.validation_curve] == [4]


def test_without_a_schedule_the_rate_stays_or_warms_up_and_recbole_models_keep_their_trainer(data_root, in_tmp_cwd):
    data, trainer = _pipeline("SASRec", data_root, epochs=2, learning_rate=0.003)
    assert isinstance(trainer, PluginTrainerMixin) and isinstance(trainer, Trainer)
    assert trainer.lr_scheduler is None
    fit_and_test(trainer, data, saved=False)
    assert trainer.learning_rates == [0.003, 0.003]
    data, trainer = _pipeline("SASRec", data_root, epochs=2, learning_rate=0.003, lr_warmup_epochs=2)
    fit_and_test(trainer, data, saved=False)
    assert trainer.learning_rates == pytest.approx([0.0015, 0.003])  # a warm-up needs no lr_scheduler


def test_a_schedule_is_refused_for_a_trainer_that_steps_its_own_optimizers(data_root, in_tmp_cwd):
    """RecBole's RecVAE trainer switches between its encoder's and decoder's optimizers every epoch: a schedule
    built on the trainer's optimizer would silently change nothing."""
    with pytest.raises(ValueError, match="optimizer_decoder, optimizer_encoder.*lr_scheduler: none"):
        _pipeline("RecVAE", data_root, epochs=1, lr_scheduler="step", lr_step_size=1, lr_gamma=0.5)
    assert _pipeline("RecVAE", data_root, epochs=1)[1].lr_scheduler is None


def test_model_yamls_carry_the_authors_schedules(data_root):
    diffurec, _ = build_config("DiffuRec", "ml-100k-small", config_dict={"data_path": data_root})
    paper, _ = build_config("DiffuRecSys-paper", "ml-100k-small", config_dict={"data_path": data_root})
    sasrec, _ = build_config("SASRec", "ml-100k-small", config_dict={"data_path": data_root})
    assert (diffurec["lr_scheduler"], diffurec["lr_step_size"], diffurec["lr_gamma"]) == ("step", 100, 0.1)
    assert (paper["lr_step_size"], paper["epochs"], paper["hidden_size"], paper["MAX_ITEM_LIST_LENGTH"],
            paper["weight_decay"]) == (30, 41, 256, 100, 1e-4)
    assert sasrec["lr_scheduler"] == "none"
    diffurec_paper, _ = build_config("DiffuRec-paper", "ml-100k-small", config_dict={"data_path": data_root})
    assert (diffurec_paper["eval_step"], diffurec_paper["stopping_step"], diffurec_paper["epochs"]) == (20, 5, 500)


@pytest.mark.parametrize("key, value, message", [
    ("lr_scheduler", "cosine", "lr_scheduler='cosine'"),
    ("lr_step_size", 0, "lr_step_size=0"),
    ("lr_gamma", 1.5, "lr_gamma=1.5"),
    ("lr_warmup_epochs", -1, "lr_warmup_epochs=-1"),
    ("eval_seed", -3, "eval_seed=-3"),
    ("item_init_std", 0.02, "renamed embedding_init_std"),
])
def test_bad_trainer_keys_are_refused_before_training(data_root, key, value, message):
    settings = {"data_path": data_root, "lr_scheduler": "step", "lr_step_size": 10, "lr_gamma": 0.5, key: value}
    with pytest.raises(ValueError, match=message):
        build_config("SASRec", "ml-100k-small", config_dict=settings)


def test_step_schedule_without_its_keys_is_refused(data_root):
    with pytest.raises(ValueError, match="lr_step_size=None: must be set"):
        build_config("SASRec", "ml-100k-small", config_dict={"data_path": data_root, "lr_scheduler": "step"})


def _some_items(scores, value):
    scores = scores.clone()
    scores[:, 5:9] = value
    return scores


@pytest.mark.parametrize("spoil", [lambda scores: scores * float("nan"),
                                   lambda scores: _some_items(scores, float("inf")),
                                   lambda scores: torch.full_like(scores, float("-inf"))],
                         ids=["nan", "+inf on some items", "-inf everywhere"])
def test_scores_that_rank_nothing_stop_evaluation_with_a_message(data_root, in_tmp_cwd, monkeypatch, spoil):
    """+inf on a few items or -inf on all of them gives metrics too (the ranking by item id that ties fall back to)."""
    data, trainer = _pipeline("DiffuRec", data_root, epochs=1)
    full_sort = trainer.model.full_sort_predict
    monkeypatch.setattr(trainer.model, "full_sort_predict", lambda interaction: spoil(full_sort(interaction)))
    with pytest.raises(FloatingPointError, match="scored NaN or an infinity"):
        trainer.evaluate(data.test, load_best_model=False)
    monkeypatch.setattr(trainer.model, "full_sort_predict",
                        lambda interaction: _some_items(full_sort(interaction), float("-inf")))
    assert trainer.evaluate(data.test, load_best_model=False)  # -inf on a few items is a mask: it ranks


def test_target_ranks_are_positions_in_the_top_k():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.8, 0.1, 0.2, 0.7]])
    positive_u, positive_i = torch.tensor([0, 0, 1]), torch.tensor([2, 0, 3])
    assert target_ranks(scores, positive_u, positive_i, max_k=3).tolist() == [1, 3, 1]


def test_test_ranks_are_collected_for_every_test_user(data_root, in_tmp_cwd):
    data, trainer = _pipeline("PreferDiff", data_root, epochs=1)
    result = fit_and_test(trainer, data, saved=False)
    ranks, targets, users = trainer.collected_target_ranks()
    assert len(ranks) == len(targets) == len(users) == len(set(users.tolist())) == TINY_USERS
    hit10 = float((ranks < 10).mean())
    assert hit10 == pytest.approx(result["test_result"]["hit@10"], abs=1e-4)
