"""What every diffusion recommender here shares: ranking by a sampled ``x0`` against the item table.

A subclass defines how a history becomes a condition (:meth:`encode_condition`) and how the network predicts
``x0`` from ``x_t`` under that condition (:meth:`denoise`); sampling, ensembles and scoring live here once.
"""

import torch
from recbole.model.abstract_recommender import SequentialRecommender


class DiffusionRecommender(SequentialRecommender):
    """Base of the diffusion models: ``self.diffusion`` (a ``GaussianDiffusion``) and ``self.item_embedding``.

    Config keys read here: ``sampler``, ``ddpm_steps`` / ``ddim_steps`` (the reverse steps of that sampler,
    strided; ``None`` = all T), ``ddpm_variance``, ``n_ensemble``.
    ``n_ensemble = k`` averages the scores of k independent reverse runs; scores are linear in ``x0``, so this
    equals scoring the mean of the k sampled ``x0`` (the k runs go through the network as one batch).
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        self.sampler = config["sampler"]
        self.sampler_steps = config["ddim_steps"] if self.sampler == "ddim" else config["ddpm_steps"]
        self.ddpm_variance = config["ddpm_variance"]
        self.n_ensemble = config["n_ensemble"]

    def encode_condition(self, item_seq, item_seq_len):
        """Everything :meth:`denoise` needs from the history, computed once per reverse run."""
        raise NotImplementedError

    def denoise(self, condition, x_t, t):
        """``x0_hat`` (``B x d``) for the noisy targets ``x_t`` at steps ``t`` under ``condition``."""
        raise NotImplementedError

    def generate(self, item_seq, item_seq_len):
        """Mean of ``n_ensemble`` sampled ``x0`` per sequence, all reverse runs batched together."""
        k = self.n_ensemble
        condition = self.encode_condition(item_seq.repeat(k, 1), item_seq_len.repeat(k))
        x0 = self.diffusion.sample(
            lambda x_t, t: self.denoise(condition, x_t, t), (k * item_seq.size(0), self.hidden_size),
            item_seq.device, sampler=self.sampler, sampler_steps=self.sampler_steps, variance=self.ddpm_variance,
        )
        return x0.view(k, -1, self.hidden_size).mean(dim=0)

    def predict(self, interaction):
        """Scores of the given items. RecBole's sampled evaluation repeats a history once per candidate;
        each distinct history is sampled once, so all candidates of a user are scored against one ``x0``."""
        histories, row_to_history = torch.unique(interaction[self.ITEM_SEQ], dim=0, return_inverse=True)
        x0 = self.generate(histories, (histories != 0).sum(dim=1))[row_to_history]
        return (x0 * self.item_embedding(interaction[self.ITEM_ID])).sum(dim=-1)

    def full_sort_predict(self, interaction):
        x0 = self.generate(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return x0 @ self.item_embedding.weight.t()
