"""What every diffusion recommender here shares: ranking by a sampled ``x0`` against the item table.

A subclass defines how a history becomes a condition (:meth:`encode_condition`) and how the network predicts
``x0`` from ``x_t`` under that condition (:meth:`denoise`); sampling, ensembles and scoring live here once.
"""

import torch
from recbole.model.abstract_recommender import SequentialRecommender

from recbole_diffusion.diffusion.keyed_noise import KeyedNoise
from recbole_diffusion.model.item_table import item_table


class DiffusionRecommender(SequentialRecommender):
    """Base of the diffusion models: ``self.item_embedding``, built here (learned ids or frozen text vectors,
    :mod:`recbole_diffusion.model.item_table`; ``self.hidden_size`` is its width), and ``self.diffusion`` (a
    ``GaussianDiffusion``), built by the subclass.

    Config keys read here: ``item_table`` and its keys, ``hidden_size``, ``embedding_init_std``, ``sampler``, ``ddpm_steps`` / ``ddim_steps`` (the reverse steps of that sampler,
    strided; ``None`` = all T), ``ddpm_variance``, ``n_ensemble``, ``eval_seed``.
    ``n_ensemble = k`` averages the scores of k independent reverse runs; scores are linear in ``x0``, so this
    equals scoring the mean of the k sampled ``x0`` (the k runs go through the network as one batch).

    Evaluation noise is reproducible: every draw of a reverse run (``x_T``, DDPM noise, DiffuRec's lambda) is
    keyed by ``(eval_seed, user id, ensemble member, step)``
    (:class:`recbole_diffusion.diffusion.keyed_noise.KeyedNoise`),
    never by torch's RNG. One checkpoint therefore gives one set of metrics, whatever ran before it, the
    evaluation batch size or the number of processes; a user's validation and test runs share their noise.
    Different ``eval_seed`` values give independent evaluations of the same checkpoint.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.item_embedding = item_table(config, dataset, self.n_items, config["hidden_size"],
                                         config["embedding_init_std"])
        self.hidden_size = self.item_embedding.embedding_dim
        self.sampler = config["sampler"]
        self.sampler_steps = config["ddim_steps"] if self.sampler == "ddim" else config["ddpm_steps"]
        self.ddpm_variance = config["ddpm_variance"]
        self.n_ensemble = config["n_ensemble"]
        self.eval_seed = config["seed"] if config["eval_seed"] is None else config["eval_seed"]

    def encode_condition(self, item_seq, item_seq_len):
        """Everything :meth:`denoise` needs from the history, computed once per reverse run."""
        raise NotImplementedError

    def denoise(self, condition, x_t, t, noise=None):
        """``x0_hat`` (``B x d``) for the noisy targets ``x_t`` at steps ``t`` under ``condition``.

        ``noise`` is the evaluation's :class:`KeyedNoise` for models that draw noise inside the network
        (DiffuRec's lambda); ``None`` in training, where torch's RNG is used.
        """
        raise NotImplementedError

    def generate(self, item_seq, item_seq_len, user_ids):
        """Mean of ``n_ensemble`` sampled ``x0`` per sequence, all reverse runs batched together.

        ``user_ids`` key the evaluation noise, so each user's sample depends on nothing else."""
        k = self.n_ensemble
        member = torch.arange(k, device=user_ids.device).repeat_interleave(user_ids.size(0))
        noise = KeyedNoise(self.eval_seed, torch.stack([user_ids.repeat(k), member], dim=1))
        condition = self.encode_condition(item_seq.repeat(k, 1), item_seq_len.repeat(k))
        x0 = self.diffusion.sample(
            lambda x_t, t: self.denoise(condition, x_t, t, noise), (k * item_seq.size(0), self.hidden_size),
            item_seq.device, sampler=self.sampler, sampler_steps=self.sampler_steps, variance=self.ddpm_variance,
            noise=noise,
        )
        return x0.view(k, -1, self.hidden_size).mean(dim=0)

    def predict(self, interaction):
        """Scores of the given items. RecBole's sampled evaluation repeats a history once per candidate;
        each user is sampled once, so all candidates of a user are scored against one ``x0``."""
        users, row_to_user = torch.unique(interaction[self.USER_ID], return_inverse=True)
        rows = torch.arange(row_to_user.size(0), device=row_to_user.device)
        first_row = torch.full_like(users, rows.size(0)).scatter_reduce(0, row_to_user, rows, reduce="amin")
        x0 = self.generate(interaction[self.ITEM_SEQ][first_row], interaction[self.ITEM_SEQ_LEN][first_row], users)
        return (x0[row_to_user] * self.item_embedding(interaction[self.ITEM_ID])).sum(dim=-1)

    def full_sort_predict(self, interaction):
        x0 = self.generate(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], interaction[self.USER_ID])
        return x0 @ self.item_embedding.weight.t()
