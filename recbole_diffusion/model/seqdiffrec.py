"""SeqDiffRec: Du, Yuan, Huang, Zhao, Zhou, "Sequential Recommendation with Diffusion Models" (arXiv 2304.04541).

The authors call their model DiffRec; it is named SeqDiffRec here so that it cannot shadow RecBole's own
``DiffRec`` (Wang et al., SIGIR 2023, a general recommender), which the runner still reaches by that name.

What the paper states, and how it is built here:

* Only the target item is diffused; the history is not noised. A forward transition maps the discrete target
  ``y`` to its embedding ``x0 = E[y]``, then ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``.
* A reverse transition maps the denoised representation back to a distribution over all items with a linear
  layer; its KL term is a cross-entropy over all items.
* The rest of the bound is simplified to an MSE: a Transformer encoder over the history and the noised target
  (the "Denoise Sequential Recommender") predicts ``x0`` directly from any step.
* Training draws the steps by importance, favouring the steps with the highest recent MSE
  (``timestep_sampler: loss_aware``, :class:`~recbole_diffusion.diffusion.LossAwareTimestepSampler`).
* Inference predicts ``x0`` from one step instead of running the chain (``sampler: one_step``).

Choices where the paper's public text is silent, each stated once:

* The forward transition is the embedding itself (no extra Gaussian around ``E[y]``), as in the other models
  of this package; ``E`` is learned through both loss terms, as in Diffusion-LM.
* The reverse transition's linear layer is tied to the item table (``x0_hat @ E.T``, no bias): the same
  vectors map items to representations and back, it adds no ``n_items x d`` parameters, and ranking is the
  inner product every model here uses.
* Loss per example: ``mse_weight * mean_d (x0_hat - x0)^2 + CE(x0_hat @ E.T, y)``; the cross-entropy is
  taken of the prediction ``x0_hat`` (as DiffuRec's rounding), so the one-step inference is what is
  trained; ``mse_weight`` 1 (an unweighted sum of the bound's terms). The MSE averages over the ``d``
  dimensions so that its scale does not grow with ``d``.
* Importance sampling follows improved-diffusion's loss-second-moment resampler with its constants (10
  losses per step, a 0.001 uniform share); the sampler's profile is the per-example MSE (the paper's
  criterion) and every example's whole loss is weighted by ``1 / (T p_t)``, so the objective is the
  uniform-step one in expectation (unbiased), only with less variance.
* Network: the noised target plus its step embedding (sinusoid of ``t * 1000 / T`` and an MLP, as DiffuRec)
  is one more token beside the history; every token attends to every real token (padding masked on the key
  side), pre-norm blocks, and the output at the target token is ``x0_hat``. Positions are learned and count
  back from the target: row 0 is the target, row ``k`` the k-th newest history item (padding-independent,
  see :func:`~recbole_diffusion.model.layers.positions_from_end`). Dropout applies to the history embeddings
  and inside the blocks, not to the noised target.
* Inference starts at the noisiest step, ``x_{T-1}`` drawn from N(0, I) (keyed by user, as for every model):
  the only step whose marginal is known without ``x0``. The ``x0_hat`` of that one call is ranked against
  ``E``. The core's other samplers (DDPM, DDIM, strided) run on the same network by setting ``sampler``.
* Sizes (``properties/model/SeqDiffRec.yaml``): RecBole's SASRec shape (d 64, 2 blocks, 2 heads, FFN 256,
  histories of 50), the paper's Transformer baseline; items initialised N(0, 1) as by the other models' authors.
* T = 1000 with DDPM's linear 1e-4 .. 0.02 schedule. It spends many steps near pure noise, the regime the
  one-step inference runs in; on the synthetic successor data it beat cosine at T = 1000 (test HR@10 0.86-0.95
  against 0.72-0.87, 3 seeds, 10 epochs). The one-step start needs ``abar_{T-1}`` near 0: linear leaves 4e-5
  at T = 1000 but 0.36 at T = 100, so the configuration check refuses ``one_step`` above 0.01 (use cosine,
  which reaches noise at any T, for a small T).
"""

import torch
from recbole.utils import InputType
from torch import nn
from torch.nn import functional as F

from recbole_diffusion.diffusion import GaussianDiffusion, TimestepEmbedding, make_timestep_sampler
from recbole_diffusion.model.base import DiffusionRecommender
from recbole_diffusion.model.checks import check_seqdiffrec
from recbole_diffusion.model.layers import TransformerStack, embedding_table, positions_from_end


class SeqDiffRec(DiffusionRecommender):
    r"""Du et al.'s sequential DiffRec: MSE + item cross-entropy, loss-aware steps, one-step inference."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        check_seqdiffrec(config)
        super().__init__(config, dataset)
        self.mse_weight = config["mse_weight"]

        init_std = config["embedding_init_std"]
        self.position_embedding = embedding_table(self.max_seq_length + 1, self.hidden_size, init_std)
        self.embedding_dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.encoder = TransformerStack(self.hidden_size, config["n_layers"], config["n_heads"],
                                        config["inner_size"], config["hidden_dropout_prob"])

        steps = config["diffusion_steps"]
        self.diffusion = GaussianDiffusion(steps, config["beta_schedule"])
        self.timestep_sampler = make_timestep_sampler(config["timestep_sampler"], steps,
                                                      config["loss_aware_history"], config["loss_aware_uniform_share"])
        self.time_embedding = TimestepEmbedding(self.hidden_size, t_scale=1000.0 / steps)

    def encode_condition(self, item_seq, item_seq_len):
        """History item embeddings plus positions 1..L counted back from the newest item, dropout; the padding
        mask of the target token followed by the history (the target is never padding), built once per run."""
        positions = positions_from_end(item_seq_len, item_seq.size(1)) + 1
        hidden = self.item_embedding(item_seq) + self.position_embedding(positions)
        padding = item_seq == 0
        return self.embedding_dropout(hidden), torch.cat([padding.new_zeros(padding.size(0), 1), padding], dim=1)

    def denoise(self, condition, x_t, t, noise=None):
        """The Denoise Sequential Recommender: ``x0_hat`` read at the noised target's token."""
        history, mask = condition
        target = x_t + self.time_embedding(t) + self.position_embedding.weight[0]
        hidden = torch.cat([target[:, None, :], history], dim=1)
        return self.encoder(hidden, mask)[:, 0]

    def calculate_loss(self, interaction):
        target = interaction[self.POS_ITEM_ID]
        x0 = self.item_embedding(target)
        t, weights = self.timestep_sampler.sample(x0.size(0), x0.device)
        x0_hat = self.denoise(self.encode_condition(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]),
                              self.diffusion.q_sample(x0, t), t)
        mse = (x0_hat - x0).pow(2).mean(dim=-1)
        cross_entropy = F.cross_entropy(x0_hat @ self.item_embedding.weight.t(), target, reduction="none")
        self.timestep_sampler.update(t, mse.detach())
        return (weights * (self.mse_weight * mse + cross_entropy)).mean()
