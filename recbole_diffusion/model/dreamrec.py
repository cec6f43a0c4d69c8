"""DreamRec (Yang et al.; NeurIPS 2023) and PreferDiff (Liu et al.; ICLR 2025): guided diffusion.

A causal SASRec-style encoder turns the history into a guidance vector ``h``; an MLP denoiser predicts ``x0``
from ``[x_t, h, t_emb]``. Training replaces ``h`` by a learned null vector with probability
``cfg_dropout_prob``; sampling combines both with classifier-free guidance, ``(1 + w) f(x_t, h) - w f(x_t,
null)``, and ranks all items by ``x0 @ E.T``. DreamRec trains on the x0-MSE; PreferDiff on the preference
loss of :mod:`recbole_diffusion.model.loss`.

Choices where the papers leave room: positions count back from the newest item, whereas the authors
right-pad and count from the oldest (:func:`~recbole_diffusion.model.layers.positions_from_end` says why and
what differs); dropout is off at evaluation and the padding row is never recommended (the authors' DreamRec
code keeps dropout on and scores the padding row). The null guidance vector stays N(0, 1) whatever
``embedding_init_std`` is: it replaces the encoder's output, which leaves a LayerNorm at unit scale.
"""

import torch
from recbole.utils import InputType
from torch import nn

from recbole_diffusion.diffusion import GaussianDiffusion, TimestepEmbedding, guided_prediction
from recbole_diffusion.model.base import DiffusionRecommender
from recbole_diffusion.model.checks import check_guided
from recbole_diffusion.model.layers import TransformerStack, embedding_table, positions_from_end
from recbole_diffusion.model.loss import batch_negative_centroids, cosine_error, preference_loss, x0_mse_loss


class DreamRec(DiffusionRecommender):
    r"""DreamRec: guided diffusion of the target embedding, x0-MSE loss, no negatives."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        check_guided(config)
        super().__init__(config, dataset)
        self.guidance_weight = config["guidance_weight"]
        self.cfg_dropout_prob = config["cfg_dropout_prob"]

        self.position_embedding = embedding_table(self.max_seq_length, self.hidden_size, config["embedding_init_std"])
        self.embedding_dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.encoder = TransformerStack(self.hidden_size, config["n_layers"], config["n_heads"],
                                        config["inner_size"], config["hidden_dropout_prob"], causal=True)
        self.null_guidance = nn.Parameter(torch.randn(1, self.hidden_size))

        self.diffusion = GaussianDiffusion(config["diffusion_steps"], config["beta_schedule"])
        self.time_embedding = TimestepEmbedding(self.hidden_size, hidden_mult=2, activation="gelu")
        self.denoiser = nn.Linear(3 * self.hidden_size, self.hidden_size)

    def encode_condition(self, item_seq, item_seq_len):
        """The guidance ``h``: causal encoder output at the last real position."""
        hidden = self.item_embedding(item_seq) + self.position_embedding(
            positions_from_end(item_seq_len, item_seq.size(1)))
        output = self.encoder(self.embedding_dropout(hidden), item_seq == 0)
        return self.gather_indexes(output, item_seq_len - 1)

    def predict_x0(self, x_t, guidance, t):
        """The denoiser ``f(x_t, h, t)``, unguided."""
        return self.denoiser(torch.cat([x_t, guidance, self.time_embedding(t)], dim=-1))

    def denoise(self, condition, x_t, t, noise=None):
        """Guided ``x0_hat``; the conditional and null branches run as one batch (the network draws no noise)."""
        if self.guidance_weight == 0:
            return self.predict_x0(x_t, condition, t)
        null = self.null_guidance.expand_as(condition)
        both = self.predict_x0(torch.cat([x_t, x_t]), torch.cat([condition, null]), torch.cat([t, t]))
        conditional, unconditional = both.chunk(2)
        return guided_prediction(conditional, unconditional, self.guidance_weight)

    def drop_guidance(self, guidance):
        """Replace each example's guidance by the null vector with probability ``cfg_dropout_prob``."""
        dropped = torch.rand(guidance.size(0), 1, device=guidance.device) < self.cfg_dropout_prob
        return torch.where(dropped, self.null_guidance.expand_as(guidance), guidance)

    def calculate_loss(self, interaction):
        guidance = self.drop_guidance(self.encode_condition(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]))
        x0 = self.item_embedding(interaction[self.POS_ITEM_ID])
        t = self.diffusion.sample_timesteps(x0.size(0), x0.device)
        x0_hat = self.predict_x0(self.diffusion.q_sample(x0, t), guidance, t)
        return x0_mse_loss(x0_hat, x0)


class PreferDiff(DreamRec):
    r"""PreferDiff: DreamRec's network trained with the preference loss against a centroid of negatives.

    Negatives are the other targets of the batch (all, or ``neg_samples`` of them) unless RecBole's sampler is
    on (``train_neg_sample_args`` with ``sample_num`` = m): RecBole then tiles the batch m times with one
    sampled negative per copy, and the m negatives of each example are averaged into its centroid.
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.preference_lambda = config["preference_lambda"]
        self.preference_gamma = config["preference_gamma"]
        self.preference_batch_mean = config["preference_batch_mean"]
        self.neg_samples = config["neg_samples"]
        sampler_args = config["train_neg_sample_args"]
        self.sampled_negatives = sampler_args["sample_num"] if sampler_args["distribution"] != "none" else 0

    def negative_centroids(self, interaction, positives):
        """``(rows of the examples, B x d centroids)`` from RecBole's sampled negatives or from the batch.

        A batch of one example (RecBole keeps a last partial batch) has no other target: its negative is then
        one uniformly drawn item, so training neither stops on a NaN nor skips the example.
        """
        if not self.sampled_negatives and positives.size(0) == 1:
            random_item = torch.randint(1, self.n_items, (1,), device=positives.device)
            return slice(None), self.item_embedding(random_item)
        if not self.sampled_negatives:
            return slice(None), batch_negative_centroids(positives, self.neg_samples)
        batch = positives.size(0) // self.sampled_negatives
        negatives = self.item_embedding(interaction[self.NEG_ITEM_ID].view(self.sampled_negatives, batch).t())
        return slice(0, batch), negatives.mean(dim=1)

    def calculate_loss(self, interaction):
        positives = self.item_embedding(interaction[self.POS_ITEM_ID])
        rows, centroids = self.negative_centroids(interaction, positives)
        positives = positives[rows]
        guidance = self.drop_guidance(self.encode_condition(interaction[self.ITEM_SEQ][rows],
                                                            interaction[self.ITEM_SEQ_LEN][rows]))
        t = self.diffusion.sample_timesteps(positives.size(0), positives.device)
        x_t = torch.cat([self.diffusion.q_sample(positives, t), self.diffusion.q_sample(centroids, t)])
        x0_pos, x0_neg = self.predict_x0(x_t, torch.cat([guidance, guidance]), torch.cat([t, t])).chunk(2)
        return preference_loss(cosine_error(x0_pos, positives), cosine_error(x0_neg, centroids),
                               self.preference_lambda, self.preference_gamma, self.preference_batch_mean)
