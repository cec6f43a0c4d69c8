"""Training losses of the guided diffusion models (DreamRec, PreferDiff), as pure functions of tensors."""

import torch
from torch.nn import functional as F


def x0_mse_loss(x0_hat, target_embedding):
    """DreamRec: mean squared error between the predicted ``x0`` and the target item embedding."""
    return F.mse_loss(x0_hat, target_embedding)


def cosine_error(x0_hat, target_embedding):
    """Per-example ``(cos(x0_hat, e) - 1)^2``: 0 when the prediction points exactly at ``e``."""
    return (F.cosine_similarity(x0_hat, target_embedding, dim=-1) - 1.0) ** 2


def preference_loss(pos_error, neg_error, lambda_, gamma, batch_mean=True):
    """PreferDiff: ``lambda * Lpos - (1 - lambda) * log sigmoid(-gamma * (Lpos - Lneg))``.

    ``pos_error`` / ``neg_error`` are the per-example cosine errors of the positive and of the negative
    centroid. ``batch_mean=True`` averages them over the batch before the log-sigmoid (the authors' code);
    ``False`` applies the formula per example and averages the result.
    """
    if batch_mean:
        pos_error, neg_error = pos_error.mean(), neg_error.mean()
    loss = lambda_ * pos_error - (1.0 - lambda_) * F.logsigmoid(-gamma * (pos_error - neg_error))
    return loss.mean()


def batch_negative_centroids(target_embedding, n_negatives=None):
    """Per example, the mean embedding of other targets in the batch: all ``B - 1`` of them, or
    ``n_negatives`` distinct ones drawn uniformly among them (without replacement, as the authors). Shape ``B x d``."""
    batch_size = target_embedding.size(0)
    if n_negatives is None or n_negatives >= batch_size - 1:
        return (target_embedding.sum(dim=0, keepdim=True) - target_embedding) / (batch_size - 1)
    random_keys = torch.rand(batch_size, batch_size - 1, device=target_embedding.device)
    draws = random_keys.topk(n_negatives, dim=1).indices
    others = draws + (draws >= torch.arange(batch_size, device=draws.device)[:, None]).long()
    return target_embedding[others].mean(dim=1)
