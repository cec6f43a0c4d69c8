"""The one trainer layer every run goes through: RecBole's own trainer for the model, plus a schedule and checks.

:func:`get_trainer` returns the class RecBole would pick for the model (``Trainer`` for SASRec and for this
package's models, ``KGTrainer`` for knowledge-aware ones, ...) with :class:`PluginTrainerMixin` in front, so a
RecBole model keeps its trainer's behaviour and every run of the runner, ``compare`` and the self-check gains:

* a learning-rate schedule (``lr_scheduler: none | step``, StepLR's ``lr_step_size`` / ``lr_gamma``) and an
  optional linear warm-up over ``lr_warmup_epochs`` (with either), stepped once per training epoch as the authors do;
* what a report needs: training seconds and learning rate per epoch, the validation curve;
* evaluation that refuses NaN scores (a silent NaN would rank items arbitrarily and still print metrics);
* optionally, the rank of each evaluated user's target (``collect_target_ranks``), for per-user statistics;
* checkpoints of tensors and plain data only (:mod:`recbole_diffusion.trainer.checkpoint`): the best epoch's model, and
  every ``checkpoint_every`` epochs a resumable "last" checkpoint with everything the next epoch depends on
  (model, optimiser, schedule, early-stopping state, records, every RNG state); on SIGTERM the step in progress
  finishes, the state of the last completed epoch is written, and :class:`TrainingPreempted` is raised;
* in a distributed run (:mod:`recbole_diffusion.utils.collectives`): the DDP wrap for CPU and CUDA processes with
  RecBole's ``sync_grad_loss`` trick (parameters unused in a step get a zero gradient, so no process waits for
  them), rank 0 alone writing checkpoints, evaluation metrics computed from every process's per-user rows with
  each user counted once, one SIGTERM decision for all processes, and every process's RNG state in the "last"
  checkpoint.

Evaluation draws its noise from keys (seed, user, step; :class:`recbole_diffusion.diffusion.keyed_noise.KeyedNoise`), not
from a generator, so it has no state to save: a resumed run evaluates exactly like an uninterrupted one.
"""

import os
import signal
import threading
import time

import numpy as np
import torch
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_diffusion.evaluation.metrics import target_ranks, unrankable_rows
import recbole_diffusion.trainer.checkpoint as ckpt
from recbole_diffusion.data.checks import inter_file_paths
from recbole_diffusion.utils import collectives
from recbole_diffusion.utils.staged_models import pretraining_stage


class TrainingPreempted(Exception):
    """SIGTERM stopped training; the last completed epoch's state is in :attr:`checkpoint_file` (``None``: nothing
    to resume, the run starts anew)."""

    def __init__(self, checkpoint_file, epoch):
        self.checkpoint_file, self.epoch = checkpoint_file, epoch
        where = (f"resumable from {checkpoint_file} (run again with --resume)" if checkpoint_file else
                 "nothing to resume (no epoch of this run had completed, or saved=False): running it again starts "
                 "anew")
        super().__init__(f"training stopped by SIGTERM during epoch {epoch}; {where}")


def lr_factor(epoch, step_size, gamma, warmup_epochs):
    """Multiplier of the base learning rate in (0-based) ``epoch``: linear warm-up times StepLR's decay.

    Warm-up reaches the base rate at epoch ``warmup_epochs - 1`` (``(epoch + 1) / warmup_epochs`` before);
    the decay is ``gamma ** (epoch // step_size)``, counted from the first epoch like ``torch``'s StepLR.
    """
    warmup = min(1.0, (epoch + 1) / warmup_epochs) if warmup_epochs else 1.0
    return warmup * gamma ** (epoch // step_size)


def build_lr_scheduler(optimizer, config):
    """A ``LambdaLR`` following :func:`lr_factor` (``lr_scheduler`` ``step``, or ``none`` with a warm-up alone), or
    ``None`` when the rate stays (``none`` without warm-up); the schedules are checked by
    :mod:`recbole_diffusion.config.checks`."""
    schedule, warmup = config["lr_scheduler"] or "none", config["lr_warmup_epochs"] or 0
    if schedule == "none" and not warmup:
        return None
    step_size, gamma = (config["lr_step_size"], config["lr_gamma"]) if schedule == "step" else (1, 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, step_size, gamma, warmup))


class _GatheringEvaluator:
    """RecBole's evaluator fed with every process's rows of an evaluation, each sample once, in sample order.

    RecBole's own gathering averages each process's rounded metrics weighted by its sample count, and its
    ``DistributedSampler`` pads the last processes with repeated samples: metrics differ from one process's.
    Every process computes the same metrics from the same gathered rows, so early stopping agrees everywhere.
    """

    ROW_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")

    def __init__(self, evaluator, trainer):
        self.evaluator, self.trainer = evaluator, trainer

    def evaluate(self, struct):
        rows = {key: struct[key] for key in self.ROW_KEYS if key in struct}
        gathered = collectives.gather_unique_rows(rows, self.trainer.eval_sample_indices)
        for key, value in gathered.items():
            struct.set(key, value)
        return self.evaluator.evaluate(struct)

    def __getattr__(self, name):
        return getattr(self.evaluator, name)


class PluginTrainerMixin:
    """Learning-rate schedule, records, NaN-score refusal, target ranks and safe, resumable checkpoints."""

    collect_target_ranks = False

    def __init__(self, config, model):
        self.distributed = not config["single_spec"]
        # RecBole's AbstractTrainer wraps with DistributedDataParallel(device_ids=[local_rank]), which DDP refuses
        # for a CPU module: it is told the run is single while it builds, and the wrap is done below.
        config["single_spec"] = True
        try:
            super().__init__(config, model)
        finally:
            config["single_spec"] = not self.distributed
        self.eval_sample_indices, self._eval_row = [], 0
        self._target_rank_samples = []
        if self.distributed:
            self.model, self.distributed_model = collectives.wrap_model(self.model, self.device)
            self.evaluator = _GatheringEvaluator(self.evaluator, self)
            self.saved_model_file = collectives.broadcast_object(self.saved_model_file)  # named by rank 0's clock
        self.lr_scheduler = build_lr_scheduler(self.optimizer, config)
        own_optimizers = self._other_optimizers()
        if self.lr_scheduler is not None and own_optimizers:
            raise ValueError(f"lr_scheduler={config['lr_scheduler']!r}, "
                             f"lr_warmup_epochs={config['lr_warmup_epochs']!r}: {config['model']}'s trainer steps its "
                             f"own optimizers ({', '.join(sorted(own_optimizers))}), which a schedule would not "
                             "change; use lr_scheduler: none without a warm-up.")
        self.epoch_seconds, self.learning_rates, self.validation_curve = [], [], []
        self.target_rank_batches = []
        self._epoch = None
        self.config_plain = ckpt.plain_config(config)
        self.config_hash = ckpt.config_hash(self.config_plain)
        self.dataset_fingerprint = None  # set by quick_start.build_trainer from the training data
        self.checkpoint_every = config["checkpoint_every"] if config["checkpoint_every"] is not None else 1
        self.last_checkpoint_file = ckpt.last_checkpoint_path(self.checkpoint_dir, config["model"],
                                                              config["dataset"], self.config_hash)
        self.finished = False
        self._saving = False
        self._pending_rng = None
        self._train_generator = None
        self._epoch_start_state = None
        self._resumed = False
        self._stop_requested = False

    # ----- training -------------------------------------------------------------------------------------------

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's ``fit``, resumable: restores the RNG states of a resumed run, writes "last" checkpoints
        and turns SIGTERM into a checkpoint and :class:`TrainingPreempted`."""
        self._train_generator = getattr(train_data, "generator", None)
        sampler = getattr(train_data, "sampler", None)
        if self.distributed and isinstance(sampler, torch.utils.data.distributed.DistributedSampler):
            sampler.seed = self.config["seed"]  # its shuffle would otherwise ignore the configured seed
        if self._pending_rng is not None:
            ckpt.set_rng_states(self._pending_rng, self._train_generator)
            self._pending_rng = None
        epochs = self.config["pretrain_epochs"] if pretraining_stage(self.config) else self.epochs
        if self.start_epoch >= epochs or self.cur_step > self.stopping_step:
            self.logger.info(f"training already ended at epoch {self.start_epoch - 1} (epochs={epochs}, "
                             f"stopping_step={self.stopping_step}): nothing left to train")
            self.finished = True
            return self.best_valid_score, self.best_valid_result
        self._saving = saved
        restore_handler = self._catch_sigterm()
        try:
            result = super().fit(train_data, valid_data, verbose=verbose, saved=saved,
                                 show_progress=show_progress, callback_fn=callback_fn)
        except TrainingPreempted:
            self._write_last(self._epoch_start_state)
            raise
        finally:
            restore_handler()
            self._epoch_start_state = None  # the epoch's copy is released whatever ended training
            self.tensorboard.flush()  # a distributed rank ends without the interpreter's exit (exit_finished_rank)
        self.finished = True
        if self._writes_last_checkpoints():
            self._write_last(self._training_state(next_epoch=self._epoch + 1 if self._epoch is not None else 0))
        return result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        """RecBole's epoch, after securing the state it starts from for a pre-emption.

        Every ``checkpoint_every`` epochs that state is written as the "last" checkpoint. Otherwise SIGTERM during
        the epoch must write it, so a copy is kept, in host memory (never on the accelerator), until the epoch
        ends. The first epoch of a run needs neither: a fresh run that is stopped starts anew (it is seeded), and a
        resumed one starts from the file it resumed.
        """
        self._epoch = epoch_idx
        self._epoch_start_state = None
        if self._saving and epoch_idx > self.start_epoch:
            if self.checkpoint_every > 0 and epoch_idx % self.checkpoint_every == 0:
                self._write_last(self._training_state(next_epoch=epoch_idx))
            else:
                self._epoch_start_state = self._training_state(next_epoch=epoch_idx, keep=True)
        if self._should_stop():
            raise TrainingPreempted(self._preempted_file(), epoch_idx)
        self.learning_rates.append(self.optimizer.param_groups[0]["lr"])
        start = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=self._stoppable(loss_func),
                                    show_progress=show_progress)
        if self.distributed and loss is not None:
            loss = collectives.mean_over_ranks(loss, self.device)  # the epoch's loss over the global batches
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

    def _stoppable(self, loss_func):
        """The model's loss, checking before each training step whether SIGTERM asked to stop."""
        loss_func = loss_func or self.model.calculate_loss

        def loss_unless_stopped(interaction):
            if self._should_stop():
                raise TrainingPreempted(self._preempted_file(), self._epoch)
            return loss_func(interaction)

        return loss_unless_stopped

    def _should_stop(self):
        """Whether SIGTERM asked to stop, in any process of a distributed run (all stop at the same step)."""
        if self.distributed:
            return collectives.any_rank(self._stop_requested, self.device)
        return self._stop_requested

    def _catch_sigterm(self):
        """Make SIGTERM request a stop at the next training step; returns a function restoring the old handler."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGTERM)

        def request_stop(signum, frame):
            self.logger.warning("SIGTERM: stopping after the current training step and writing the last checkpoint")
            self._stop_requested = True

        signal.signal(signal.SIGTERM, request_stop)
        return lambda: signal.signal(signal.SIGTERM, previous)

    # ----- checkpoints ----------------------------------------------------------------------------------------

    def save_pretrained_model(self, epoch, saved_model_file):
        """RecBole's ``PretrainTrainer`` (S3Rec, RaCT) saves tensors and plain data
        (:func:`~recbole_diffusion.trainer.checkpoint.pretrained_weights`)."""
        torch.save(ckpt.pretrained_weights(self.model, self.optimizer, epoch), saved_model_file)
        self.saved_model_file = saved_model_file

    def _writes_last_checkpoints(self):
        return self._saving and self.checkpoint_every > 0

    def _preempted_file(self):
        """The "last" checkpoint a pre-empted epoch resumes from: ``None`` without saving, and in a fresh run's
        first epoch (nothing is written: running the command again starts it anew, exactly)."""
        if not self._saving or (self._epoch == self.start_epoch and not self._resumed):
            return None
        return self.last_checkpoint_file

    def _common_payload(self):
        return {"model": self.config["model"], "dataset": self.config["dataset"], "config": self.config_plain,
                "config_hash": self.config_hash, "dataset_fingerprint": self.dataset_fingerprint}

    def _training_state(self, next_epoch, keep=False):
        """Everything epoch ``next_epoch`` depends on, as tensors and plain data (``None`` on ranks other than 0,
        which only hand their RNG states over). ``keep``: copied to host memory, to be written later; otherwise the
        live tensors, to be written at once (no copy is made)."""
        rng = ckpt.rng_states(self._train_generator)
        rng_by_rank = collectives.all_gather_object(rng) if self.distributed else None
        if not collectives.is_rank_zero():
            return None
        state = {
            **self._common_payload(),
            "kind": "last",
            "next_epoch": next_epoch,
            "finished": self.finished,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "best_valid_result": ckpt.plain(self.best_valid_result),
            "best_model_file": self.saved_model_file,
            "state_dict": self.model.state_dict(),
            "model_extra": ckpt.model_extra_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "other_optimizers": {name: optimizer.state_dict() for name, optimizer in self._other_optimizers().items()},
            "optimizer_alias": self._optimizer_alias(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "records": {"epoch_seconds": self.epoch_seconds, "learning_rates": self.learning_rates,
                        "validation_curve": self.validation_curve,
                        "train_loss": [[epoch, ckpt.plain(loss)] for epoch, loss in self.train_loss_dict.items()]},
            "rng": rng,
            "rng_by_rank": rng_by_rank,
        }
        return ckpt.host_copy(state) if keep else state

    def _other_optimizers(self):
        """The optimizers the trainer holds besides ``optimizer``, by attribute name: RecBole's RecVAE trainer holds
        one per part (encoder, decoder) and points ``optimizer`` at the one in use."""
        return {name: value for name, value in vars(self).items()
                if isinstance(value, torch.optim.Optimizer) and name != "optimizer"}

    def _optimizer_alias(self):
        """The name of the other optimizer ``optimizer`` now is, ``None`` when it is its own."""
        return next((name for name, value in self._other_optimizers().items() if value is self.optimizer), None)

    def _write_last(self, state):
        if state is None or not self._saving or not collectives.is_rank_zero():
            return
        ckpt.save_checkpoint(state, self.last_checkpoint_file)
        self.logger.info(f"last checkpoint (resumes at epoch {state['next_epoch']}): {self.last_checkpoint_file}")

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """The best epoch's model, in the safe format (replaces RecBole's pickled ``Config``)."""
        if not collectives.is_rank_zero():
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        ckpt.save_checkpoint({**self._common_payload(), "kind": "best", "epoch": epoch, "cur_step": self.cur_step,
                              "best_valid_score": float(self.best_valid_score),
                              "state_dict": self.model.state_dict(),
                              "model_extra": ckpt.model_extra_state(self.model)}, path)
        if verbose:
            self.logger.info(f"Saving current best: {path}")

    def _load_checkpoint_file(self, path):
        """Read ``path`` safely and check it belongs to this model and data."""
        checkpoint = ckpt.load_checkpoint(path, map_location=self.device,
                                          trust_pickled=bool(self.config["trust_pickled_checkpoint"]))
        return self._checked(checkpoint, path)

    def _checked(self, checkpoint, path):
        """``checkpoint`` (read from ``path``) after checking it belongs to this model and data."""
        saved_model = checkpoint["config"].get("model")
        if saved_model and saved_model != self.config["model"]:
            raise ValueError(f"checkpoint {path!r} holds a {saved_model} model, not {self.config['model']}")
        if self.dataset_fingerprint is not None:
            ckpt.check_dataset_fingerprint(checkpoint, self.dataset_fingerprint, self.config["dataset"], path,
                                           ", ".join(inter_file_paths(self.config)))
        return checkpoint

    def load_model_file(self, path, checkpoint=None):
        """Load a checkpoint's model weights (and state kept outside ``state_dict``) into :attr:`model`;
        ``checkpoint``: the file's content when the caller has read it already (it is not read again).

        In a distributed run rank 0 reads the file (the one it wrote) and the others wait for its weights, so
        the other machines need no copy of it; they return ``None``.
        """
        if collectives.is_rank_zero():
            checkpoint = self._load_checkpoint_file(path) if checkpoint is None else self._checked(checkpoint, path)
        if checkpoint is not None:
            self._load_weights(checkpoint)
        if self.distributed:
            collectives.broadcast_module_state(self.model)
            extra = collectives.broadcast_object(ckpt.model_extra_state(self.model) if checkpoint else None)
            if checkpoint is None:
                ckpt.load_model_extra_state(self.model, extra, self.device)
        self.logger.info(f"Loading model structure and parameters from {path}")
        return checkpoint

    def _load_weights(self, checkpoint):
        self.model.load_state_dict(checkpoint["state_dict"])
        if "model_extra" in checkpoint:
            ckpt.load_model_extra_state(self.model, checkpoint["model_extra"], self.device)
        else:  # RecBole's own format, read with trust_pickled_checkpoint
            self.model.load_other_parameter(checkpoint.get("other_parameter"))

    def resume_checkpoint(self, resume_file):
        """Continue the run a "last" checkpoint recorded, from the epoch after it (RecBole's method, exact)."""
        checkpoint = self._load_checkpoint_file(resume_file)
        if checkpoint.get("kind") != "last":
            raise ValueError(f"checkpoint {resume_file!r} is a {checkpoint.get('kind', 'RecBole')} checkpoint; "
                             "resume needs a -last.pth checkpoint (written every checkpoint_every epochs)")
        saved = checkpoint["config"]
        refused, moved, added = ckpt.resume_differences(saved, self.config_plain,
                                                        ignore=ckpt.PER_PROCESS_KEYS if self.distributed else ())
        if refused:
            raise ValueError(
                f"cannot resume from {resume_file!r}: its configuration differs in "
                + ", ".join(f"{key} ({saved.get(key)!r} -> {self.config_plain.get(key)!r})" for key in refused)
                + f". Only {', '.join(ckpt.RESUME_MAY_DIFFER + ckpt.LOCATION_KEYS)} may change on resume.")
        note = ckpt.describe_resume(saved, self.config_plain, moved, added)
        if note:
            self.logger.warning(note)
        self._load_weights(checkpoint)
        others = self._other_optimizers()
        if others and "other_optimizers" not in checkpoint:
            raise ValueError(f"cannot resume from {resume_file!r}: it was written before recbole_diffusion kept this "
                             f"trainer's {', '.join(sorted(others))}, so the optimizers' state is lost; start anew.")
        for name, optimizer_state in checkpoint.get("other_optimizers", {}).items():
            others[name].load_state_dict(optimizer_state)
        if checkpoint.get("optimizer_alias"):
            self.optimizer = others[checkpoint["optimizer_alias"]]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.lr_scheduler is not None and checkpoint["lr_scheduler"] is not None:
            self.lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        self.start_epoch = checkpoint["next_epoch"]
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint["best_valid_result"]
        self.saved_model_file = self._best_model_file_here(checkpoint["best_model_file"])
        self.finished = checkpoint["finished"]
        records = checkpoint["records"]
        self.epoch_seconds = list(records["epoch_seconds"])
        self.learning_rates = list(records["learning_rates"])
        self.validation_curve = [list(point) for point in records["validation_curve"]]
        self.train_loss_dict = {epoch: loss for epoch, loss in records["train_loss"]}
        self._pending_rng = checkpoint["rng"]
        if self.distributed:
            by_rank = checkpoint.get("rng_by_rank") or []
            if len(by_rank) != self.config["world_size"]:
                raise ValueError(f"cannot resume from {resume_file!r} with world_size={self.config['world_size']}: "
                                 f"it holds the random states of {len(by_rank) or 1} process(es)")
            self._pending_rng = by_rank[collectives.rank()]
        self.last_checkpoint_file = os.path.abspath(resume_file)
        self._resumed = True
        self.logger.info(f"resumed from {resume_file}: training continues at epoch {self.start_epoch}")
        return checkpoint

    def _best_model_file_here(self, best_model_file):
        """The best epoch's checkpoint of a resumed run: the file of that name in this run's checkpoint folder when
        it holds one (a run that moved to another folder), else where it was written."""
        moved = os.path.join(self.checkpoint_dir, os.path.basename(best_model_file or ""))
        return moved if best_model_file and os.path.isfile(moved) else best_model_file

    # ----- evaluation -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's ``evaluate``; the best (or given) checkpoint is read in the safe format. In a distributed run
        the metrics and target ranks cover every process's samples, each once."""
        self.target_rank_batches, self._target_rank_samples = [], []
        if load_best_model and eval_data:
            self.load_model_file(model_file or self.saved_model_file)
        if self.distributed and eval_data:
            self.eval_sample_indices, self._eval_row = list(eval_data.sampler), 0
        result = super().evaluate(eval_data, load_best_model=False, model_file=model_file,
                                  show_progress=show_progress)
        if self.distributed and self.collect_target_ranks and eval_data:
            self._gather_target_ranks()
        return result

    def _map_reduce(self, result, num_sample):
        """Nothing to average: :class:`_GatheringEvaluator` computed the metrics from every process's rows."""
        return result

    # Scoring runs under torch.inference_mode (no autograd bookkeeping at all, cheaper than evaluate's no_grad).
    # It covers the batch's scoring only: the checkpoint loading and the gathering of evaluate stay under
    # no_grad, so no tensor the model keeps for training (loaded weights, a sampler's state) is an inference
    # tensor. The scores leave it; RecBole's collector reads them in functional operations only.

    def _full_sort_batch_eval(self, batched_data):
        with torch.inference_mode():
            batch = super()._full_sort_batch_eval(batched_data)
        return self._inspect(*batch)

    def _neg_sample_batch_eval(self, batched_data):
        with torch.inference_mode():
            batch = super()._neg_sample_batch_eval(batched_data)
        # A sampled ranking's interaction holds a row per (user, candidate); row_idx names each row's user in the
        # batch, the index that positive_u and the score rows use.
        return self._inspect(*batch, user_of_row=batched_data[1])

    def _inspect(self, interaction, scores, positive_u, positive_i, user_of_row=None):
        """Refuse scores that rank nothing (:func:`~recbole_diffusion.evaluation.metrics.unrankable_rows`); record
        target ranks when asked. ``user_of_row``: the batch user of each interaction row when there are several
        rows per user (a sampled ranking); otherwise row ``k`` is the batch's user ``k``. Returns the batch
        unchanged."""
        bad_rows = unrankable_rows(scores)
        if bool(bad_rows.any()):
            raise FloatingPointError(
                f"evaluation: the model scored NaN or an infinity (+inf, or -inf for every item) for "
                f"{int(bad_rows.sum())} of {scores.size(0)} users in a batch of {self.config['model']}; its metrics "
                "would be meaningless (check for a diverged run)")
        if self.collect_target_ranks:
            user_ids = interaction[self.config["USER_ID_FIELD"]].cpu()
            if user_of_row is not None:
                user_ids = user_ids.new_zeros(scores.size(0)).index_copy_(0, user_of_row.cpu(), user_ids)
            users = user_ids[positive_u.cpu()]
            ranks = target_ranks(scores, positive_u, positive_i, max(self.config["topk"]))
            self.target_rank_batches.append((ranks.cpu(), positive_i.cpu(), users))
            if self.distributed:
                rows = self._eval_row + positive_u.cpu().numpy()
                self._target_rank_samples.append(np.asarray(self.eval_sample_indices)[rows])
        if self.distributed:
            self._eval_row += scores.size(0)
        return interaction, scores, positive_u, positive_i

    def _gather_target_ranks(self):
        """Every process's target ranks, each sample once (from the lowest rank holding it), in sample order."""
        local = self.collected_target_ranks()
        samples = np.concatenate(self._target_rank_samples) if self._target_rank_samples else np.zeros(0, np.int64)
        parts = collectives.all_gather_object((local, samples))
        masks = collectives.owned_by_lowest_rank([part[1] for part in parts])
        kept = [np.concatenate([part[0][column][mask] for part, mask in zip(parts, masks)]) for column in range(3)]
        kept_samples = np.concatenate([part[1][mask] for part, mask in zip(parts, masks)])
        order = np.argsort(kept_samples, kind="stable")
        self.target_rank_batches = [tuple(torch.from_numpy(column[order]) for column in kept)]
        self._target_rank_samples = [kept_samples[order]]

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
