"""Per-user metrics from target ranks, and the group metrics of the comparison (head / long tail, length).

The trainer layer records each test user's target rank (:func:`target_ranks`); the other functions turn ranks into
HR / NDCG per user and into group means. Used by ``compare`` and the self-check.
"""

import numpy as np
import torch

METRICS = [f"{name}@{k}" for name in ("hit", "ndcg") for k in (5, 10, 20)]
MAIN_METRIC = "ndcg@10"
HEAD_SHARE = 0.2
LENGTH_GROUPS = 5


def unrankable_rows(scores):
    """Rows of ``scores`` (users by items) that rank nothing: NaN or +inf anywhere, or -inf everywhere (-inf is how
    RecBole masks an item; ties of infinities fall back to ranking by item id)."""
    return (torch.isnan(scores) | torch.isposinf(scores)).any(dim=-1) | torch.isneginf(scores).all(dim=-1)


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


def per_user_metrics(positions, ks=(5, 10, 20)):
    """HR@k and NDCG@k per user from the 0-based target rank (one target per user, as in leave-one-out)."""
    positions = np.asarray(positions)
    out = {}
    for k in ks:
        inside = positions < k
        out[f"hit@{k}"] = inside.astype(float)
        out[f"ndcg@{k}"] = np.where(inside, 1.0 / np.log2(positions + 2.0), 0.0)
    return out


def group_metrics(positions, targets, lengths, item_counts, user_lengths):
    """Mean metrics for head vs long-tail targets and per sequence-length quintile.

    Head items are the top ``HEAD_SHARE`` of items by interaction count in the whole dataset (as in the
    DiffuRec / DiffuRecSys case studies); a user's length is their number of interactions. Users of equal
    length stay in one quintile, so quintiles can differ in size; each records its range of lengths.
    """
    metrics = per_user_metrics(positions)
    counts = np.asarray(item_counts)
    head_threshold = np.quantile(counts[counts > 0], 1 - HEAD_SHARE)
    is_head = counts[np.asarray(targets)] >= head_threshold
    lengths = np.asarray(user_lengths)[np.asarray(lengths)]
    edges = np.quantile(lengths, np.linspace(0, 1, LENGTH_GROUPS + 1)[1:-1])
    quintile = np.searchsorted(edges, lengths, side="left")
    groups = {"all users": np.ones_like(is_head), "head items": is_head, "long-tail items": ~is_head}
    for q in range(LENGTH_GROUPS):
        groups[f"length Q{q + 1}"] = quintile == q
    result = {
        name: {"users": int(mask.sum()), **{m: float(metrics[m][mask].mean()) if mask.any() else None for m in METRICS}}
        for name, mask in groups.items()
    }
    for q in range(LENGTH_GROUPS):
        members = lengths[quintile == q]
        result[f"length Q{q + 1}"]["lengths"] = [int(members.min()), int(members.max())] if members.size else None
    return result


def heldout_test_result(ranks, targets, heldout, ks):
    """Mean HR@k / NDCG@k (``ks``) over the test users whose target is in ``heldout``, and their number (metrics
    ``None`` if there are none): the zero-shot result of ``holdout_items_ratio``
    (:mod:`recbole_diffusion.data.heldout_items`)."""
    chosen = np.isin(targets, heldout)
    metrics = per_user_metrics(np.asarray(ranks)[chosen], tuple(ks))
    ordered = sorted(metrics, key=lambda metric: (metric.partition("@")[0], int(metric.partition("@")[2])))
    return {"users": int(chosen.sum()),
            **{metric: float(metrics[metric].mean()) if chosen.any() else None for metric in ordered}}
