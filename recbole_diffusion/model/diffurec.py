"""DiffuRec (Li, Sun, Li; TOIS 2023) and DiffuRecSys (Zolghadr et al.; RecSys'24 ROEGEN).

Both diffuse the target item's embedding and recover it with a transformer "approximator" that reads the
history; the loss is cross-entropy of ``x0_hat @ E.T`` over all items, and ranking uses a full reverse run.
DiffuRecSys is DiffuRec with two switches, so it is the same class with other YAML defaults:

* ``cross_attention``: the noised target (plus its step embedding, scaled by lambda) queries the history
  through one cross-attention layer, and that output is added to every history position before the
  transformer blocks, instead of adding the scaled target itself. This follows the paper; the authors'
  code differs (softmax over heads, blocks fed the original input) and is not copied.
* ``offset_noise_scale``: training noise ``randn(B, d) + scale * randn(B, 1)``; inference keeps ``randn``.

The paper's ablation is three settings of these keys: baseline (False, 0), V1 (True, 0), V2 (True, > 0);
``properties/model/variants/`` has one YAML each.

Choices where the authors' code and the specification leave room, stated once:

* Padding is masked on the key side (the authors mask query rows, so real items attend to padding).
* Without ``position_embedding`` (the authors' setting) the approximator ignores the order of the history
  except which item is last; with it, learned positions count back from the last item, so right padding
  (RecBole) and left padding (the authors) give the same output.
* ``lambda ~ N(lambda_uncertainty, lambda_uncertainty)`` is drawn elementwise in training and inference,
  as the authors do.
* ``n_ensemble = k`` averages the scores of k independent reverse runs; scores are linear in ``x0``, so
  this equals scoring the mean of the k sampled ``x0`` (all k runs go through the network as one batch).
"""

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn
from torch.nn import functional as F

from recbole_diffusion.diffusion import GaussianDiffusion, TimestepEmbedding
from recbole_diffusion.model.layers import TransformerStack, positions_from_end
from recbole_diffusion.validation import check_diffurec


class DiffuRec(SequentialRecommender):
    r"""DiffuRec: the target embedding is diffused and an x0-predicting transformer reads the history."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        check_diffurec(config)
        self.hidden_size = config["hidden_size"]
        self.lambda_uncertainty = config["lambda_uncertainty"]
        self.offset_noise_scale = config["offset_noise_scale"]
        self.sampler = config["sampler"]
        self.sampler_steps = config["sampler_steps"]
        self.ddpm_variance = config["ddpm_variance"]
        self.n_ensemble = config["n_ensemble"]

        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.position_embedding = (
            nn.Embedding(self.max_seq_length, self.hidden_size) if config["position_embedding"] else None
        )
        self.embedding_dropout = nn.Dropout(config["emb_dropout_prob"])
        self.embedding_norm = nn.LayerNorm(self.hidden_size)

        self.diffusion = GaussianDiffusion(config["diffusion_steps"], config["beta_schedule"])
        self.time_embedding = TimestepEmbedding(self.hidden_size, t_scale=1000.0 / config["diffusion_steps"])
        self.cross_attention = (
            nn.MultiheadAttention(self.hidden_size, config["n_heads"], dropout=config["attn_dropout_prob"],
                                  batch_first=True)
            if config["cross_attention"] else None
        )
        self.approximator = TransformerStack(
            self.hidden_size, config["n_layers"], config["n_heads"], config["inner_size"],
            config["hidden_dropout_prob"],
        )
        self.output_dropout = nn.Dropout(config["hidden_dropout_prob"])

    def encode_history(self, item_seq, item_seq_len):
        """Item (and optional position) embeddings of the history, dropout then LayerNorm, and its padding."""
        hidden = self.item_embedding(item_seq)
        if self.position_embedding is not None:
            hidden = hidden + self.position_embedding(positions_from_end(item_seq_len, item_seq.size(1)))
        return self.embedding_norm(self.embedding_dropout(hidden)), item_seq == 0

    def _lambda(self, shape, device):
        """Elementwise ``lambda ~ N(lambda_uncertainty, lambda_uncertainty)``."""
        mean = torch.full(shape, float(self.lambda_uncertainty), device=device)
        return torch.normal(mean, mean.abs())

    def forward(self, history, padding_mask, item_seq_len, x_t, t):
        """The approximator: ``x0_hat`` (``B x d``) from the encoded history, ``x_t`` and the step ``t``."""
        query = x_t + self.time_embedding(t)
        if self.cross_attention is None:
            hidden = history + self._lambda(history.shape, history.device) * query[:, None, :]
        else:
            scaled = self._lambda(query.shape, query.device)[:, None, :] * query[:, None, :]
            attended, _ = self.cross_attention(scaled, history, history, key_padding_mask=padding_mask,
                                               need_weights=False)
            hidden = history + attended
        output = self.approximator(hidden, padding_mask)
        return self.gather_indexes(self.output_dropout(output), item_seq_len - 1)

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.POS_ITEM_ID]
        history, padding_mask = self.encode_history(item_seq, item_seq_len)
        x0 = self.item_embedding(target)
        t = self.diffusion.sample_timesteps(x0.size(0), x0.device)
        x_t = self.diffusion.q_sample(x0, t, offset_noise_scale=self.offset_noise_scale)
        x0_hat = self.forward(history, padding_mask, item_seq_len, x_t, t)
        logits = x0_hat @ self.item_embedding.weight.t()
        return F.cross_entropy(logits, target)

    def generate(self, item_seq, item_seq_len):
        """Mean of ``n_ensemble`` sampled ``x0`` per sequence, all reverse runs batched together."""
        k = self.n_ensemble
        item_seq, item_seq_len = item_seq.repeat(k, 1), item_seq_len.repeat(k)
        history, padding_mask = self.encode_history(item_seq, item_seq_len)

        def denoise(x_t, t):
            return self.forward(history, padding_mask, item_seq_len, x_t, t)

        x0 = self.diffusion.sample(denoise, (item_seq.size(0), self.hidden_size), item_seq.device,
                                   sampler=self.sampler, sampler_steps=self.sampler_steps,
                                   variance=self.ddpm_variance)
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


class DiffuRecSys(DiffuRec):
    r"""DiffuRecSys: DiffuRec with cross-attention and offset noise (its YAML defaults to the paper's V2)."""
