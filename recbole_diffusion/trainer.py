"""The one trainer layer every run goes through: RecBole's own trainer for the model, plus a schedule and checks.

:func:`get_trainer` returns the class RecBole would pick for the model (``Trainer`` for SASRec and for this
package's models, ``KGTrainer`` for knowledge-aware ones, ...) with :class:`PluginTrainerMixin` in front, so a
RecBole model keeps its trainer's behaviour and every run of the runner, ``compare`` and the self-check gains:

* a learning-rate schedule (``lr_scheduler: none | step``, StepLR's ``lr_step_size`` / ``lr_gamma`` and an
  optional linear warm-up over ``lr_warmup_epochs``), stepped once per training epoch as the authors do;
* what a report needs: training seconds and learning rate per epoch, the validation curve;
* evaluation that refuses NaN scores (a silent NaN would rank items arbitrarily and still print metrics);
* optionally, the rank of each evaluated user's target (``collect_target_ranks``), for per-user statistics.
"""

import time

import numpy as np
import torch
from recbole.utils import get_trainer as recbole_get_trainer

LR_SCHEDULERS = ("none", "step")


def lr_factor(epoch, step_size, gamma, warmup_epochs):
    """Multiplier of the base learning rate in (0-based) ``epoch``: linear warm-up times StepLR's decay.

    Warm-up reaches the base rate at epoch ``warmup_epochs - 1`` (``(epoch + 1) / warmup_epochs`` before);
    the decay is ``gamma ** (epoch // step_size)``, counted from the first epoch like ``torch``'s StepLR.
    """
    warmup = min(1.0, (epoch + 1) / warmup_epochs) if warmup_epochs else 1.0
    return warmup * gamma ** (epoch // step_size)


def build_lr_scheduler(optimizer, config):
    """A ``LambdaLR`` following :func:`lr_factor`, or ``None`` when ``lr_scheduler`` is ``none``."""
    if (config["lr_scheduler"] or "none") == "none":
        return None
    step_size, gamma, warmup = config["lr_step_size"], config["lr_gamma"], config["lr_warmup_epochs"] or 0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, step_size, gamma, warmup))


def target_ranks(scores, positive_u, positive_i, max_k):
    """0-based rank of each target item among its user's scores, ``max_k`` when outside the top ``max_k``.

    RecBole's evaluator hands ``positive_u`` / ``positive_i`` over on the CPU while ``scores`` live on the
    model's device; everything is moved to the scores' device first.
    """
    positive_u, positive_i = positive_u.to(scores.device), positive_i.to(scores.device)
    topk = torch.topk(scores, max_k, dim=-1).indices
    hits = topk[positive_u] == positive_i[:, None]
    outside = torch.full_like(positive_u, max_k)
    return torch.where(hits.any(dim=1), hits.long().argmax(dim=1), outside)


class PluginTrainerMixin:
    """Learning-rate schedule, per-epoch records, NaN-score refusal and target ranks over a RecBole trainer."""

    collect_target_ranks = False

    def __init__(self, config, model):
        super().__init__(config, model)
        self.lr_scheduler = build_lr_scheduler(self.optimizer, config)
        self.epoch_seconds, self.learning_rates, self.validation_curve = [], [], []
        self.target_rank_batches = []
        self._epoch = None

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._epoch = epoch_idx
        self.learning_rates.append(self.optimizer.param_groups[0]["lr"])
        start = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_seconds.append(time.perf_counter() - start)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
            self.logger.info(f"epoch {epoch_idx}: learning rate {self.learning_rates[-1]:.3g} -> "
                             f"{self.optimizer.param_groups[0]['lr']:.3g}")
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.validation_curve.append([self._epoch, float(score)])
        return score, result

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        self.target_rank_batches = []
        return super().evaluate(eval_data, load_best_model=load_best_model, model_file=model_file,
                                show_progress=show_progress)

    def _full_sort_batch_eval(self, batched_data):
        return self._inspect(*super()._full_sort_batch_eval(batched_data))

    def _neg_sample_batch_eval(self, batched_data):
        return self._inspect(*super()._neg_sample_batch_eval(batched_data))

    def _inspect(self, interaction, scores, positive_u, positive_i):
        """Refuse NaN scores; record target ranks when asked. Returns the batch unchanged."""
        nan_rows = torch.isnan(scores).any(dim=-1)
        if bool(nan_rows.any()):
            raise FloatingPointError(
                f"evaluation: the model scored NaN for {int(nan_rows.sum())} of {scores.size(0)} users in a "
                f"batch of {self.config['model']}; its metrics would be meaningless (check for a diverged run)")
        if self.collect_target_ranks:
            users = interaction[self.config["USER_ID_FIELD"]].to(scores.device)[positive_u.to(scores.device)]
            ranks = target_ranks(scores, positive_u, positive_i, max(self.config["topk"]))
            self.target_rank_batches.append((ranks.cpu(), positive_i.cpu(), users.cpu()))
        return interaction, scores, positive_u, positive_i

    def collected_target_ranks(self):
        """``(ranks, target items, users)`` as numpy arrays from the last :meth:`evaluate` call."""
        if not self.target_rank_batches:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        return tuple(torch.cat(parts).numpy() for parts in zip(*self.target_rank_batches))


_TRAINER_CLASSES = {}


def get_trainer(config, model):
    """RecBole's trainer for ``config['model']`` with :class:`PluginTrainerMixin` in front, built for ``model``."""
    base = recbole_get_trainer(config["MODEL_TYPE"], config["model"])
    if base not in _TRAINER_CLASSES:
        _TRAINER_CLASSES[base] = type(f"Plugin{base.__name__}", (PluginTrainerMixin, base), {})
    return _TRAINER_CLASSES[base](config, model)
