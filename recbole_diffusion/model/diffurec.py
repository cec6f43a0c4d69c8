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
  except which item is last; with it, learned positions count back from the newest item (our choice; the
  authors have no positions, see :func:`~recbole_diffusion.model.layers.positions_from_end`).
* Each approximator block ends with a dropout on its output, and one more comes before the final LayerNorm,
  as in the authors' ``TransformerBlock``.
* ``lambda ~ N(lambda_uncertainty, lambda_uncertainty)`` is drawn elementwise in training and inference,
  as the authors do. With the default 0.001, ``x_t`` reaches the approximator only faintly in every variant:
  added to the history at a thousandth of its scale, or, with cross-attention, as a query whose attention
  logits are so small that the weights are nearly uniform over the history. This is the specification's
  design, kept as is; ``lambda_uncertainty`` is the knob.
"""

import torch
from recbole.utils import InputType
from torch import nn
from torch.nn import functional as F

from recbole_diffusion.diffusion import GaussianDiffusion, TimestepEmbedding
from recbole_diffusion.model.base import DiffusionRecommender
from recbole_diffusion.model.checks import check_diffurec
from recbole_diffusion.model.layers import TransformerStack, embedding_table, positions_from_end


class DiffuRec(DiffusionRecommender):
    r"""DiffuRec: the target embedding is diffused and an x0-predicting transformer reads the history."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        check_diffurec(config)
        super().__init__(config, dataset)
        self.lambda_uncertainty = config["lambda_uncertainty"]
        self.offset_noise_scale = config["offset_noise_scale"]

        self.position_embedding = (
            embedding_table(self.max_seq_length, self.hidden_size, config["embedding_init_std"])
            if config["position_embedding"] else None
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
            config["hidden_dropout_prob"], dropout_after_each_block=True,
        )

    def encode_condition(self, item_seq, item_seq_len):
        """Item (and optional position) embeddings of the history, dropout then LayerNorm; its padding; lengths."""
        hidden = self.item_embedding(item_seq)
        if self.position_embedding is not None:
            hidden = hidden + self.position_embedding(positions_from_end(item_seq_len, item_seq.size(1)))
        return self.embedding_norm(self.embedding_dropout(hidden)), item_seq == 0, item_seq_len

    def _lambda(self, like, t, noise):
        """Elementwise ``lambda ~ N(lambda_uncertainty, lambda_uncertainty)`` shaped like ``like``
        (from the evaluation's keyed ``noise`` at step ``t`` when given, else from torch's RNG)."""
        standard = (torch.randn_like(like) if noise is None
                    else noise.normal(noise.LAMBDA, t, like.shape[1:]).to(like.device, like.dtype))
        return self.lambda_uncertainty + abs(self.lambda_uncertainty) * standard

    def denoise(self, condition, x_t, t, noise=None):
        """The approximator: ``x0_hat`` from the encoded history, ``x_t`` and the step ``t``."""
        history, padding_mask, item_seq_len = condition
        query = x_t + self.time_embedding(t)
        if self.cross_attention is None:
            hidden = history + self._lambda(history, t, noise) * query[:, None, :]
        else:
            scaled = self._lambda(query, t, noise)[:, None, :] * query[:, None, :]
            attended, _ = self.cross_attention(scaled, history, history, key_padding_mask=padding_mask,
                                               need_weights=False)
            hidden = history + attended
        output = self.approximator(hidden, padding_mask)
        return self.gather_indexes(output, item_seq_len - 1)

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.POS_ITEM_ID]
        x0 = self.item_embedding(target)
        t = self.diffusion.sample_timesteps(x0.size(0), x0.device)
        x_t = self.diffusion.q_sample(x0, t, offset_noise_scale=self.offset_noise_scale)
        x0_hat = self.denoise(self.encode_condition(item_seq, item_seq_len), x_t, t)
        logits = x0_hat @ self.item_embedding.weight.t()
        return F.cross_entropy(logits, target)


class DiffuRecSys(DiffuRec):
    r"""DiffuRecSys: DiffuRec with cross-attention and offset noise (its YAML defaults to the paper's V2)."""
