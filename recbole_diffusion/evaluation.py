"""Per-user metrics from target ranks, and the group metrics of the comparison (head / long tail, length).

The trainer layer records each test user's target rank (:func:`recbole_diffusion.trainer.target_ranks`);
these functions turn ranks into HR / NDCG per user and into group means. Used by ``compare`` and the self-check.
"""

import numpy as np

METRICS = [f"{name}@{k}" for name in ("hit", "ndcg") for k in (5, 10, 20)]
MAIN_METRIC = "ndcg@10"
HEAD_SHARE = 0.2
LENGTH_GROUPS = 5


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


METRIC_LABELS = {"hit": "HR", "ndcg": "NDCG", "mrr": "MRR", "recall": "Recall", "precision": "Precision"}


def _number(value):
    """Four decimals, as RecBole logs metrics; "-" for a missing value."""
    return "-" if value is None else f"{float(value):.4f}"


def _metric_table(metrics):
    """Metric names as rows and cut-offs as columns (``ndcg@10`` -> row NDCG, column @10); others below."""
    rows, cutoffs, plain = {}, set(), []
    for key, value in metrics.items():
        name, at, k = str(key).partition("@")
        if at and k.isdigit():
            rows.setdefault(name, {})[int(k)] = value
            cutoffs.add(int(k))
        else:
            plain.append((str(key), value))
    cutoffs = sorted(cutoffs)
    label = max([len(METRIC_LABELS.get(name, name)) for name in rows] + [len(key) for key, _ in plain] + [4])
    lines = []
    if rows:
        lines.append(" " * label + "".join(f"{'@' + str(k):>9}" for k in cutoffs))
        for name, values in rows.items():
            cells = "".join(f"{_number(values[k]) if k in values else '':>9}" for k in cutoffs)
            lines.append(f"{METRIC_LABELS.get(name, name):<{label}}{cells}".rstrip())
    lines += [f"{key:<{label}}{_number(value):>9}" for key, value in plain]
    return lines


def format_run_summary(result):
    """The end of a command-line run as text: test metrics as a table, the best epoch and validation score,
    the checkpoint and log paths. ``result`` is ``quick_start.fit_and_test``'s dict; absent keys are skipped."""
    lines = []
    test = result.get("test_result")
    if test:
        lines += ["Test metrics:"] + ["  " + line for line in _metric_table(test)]
    elif "test_result" in result:
        lines.append("Test metrics: none (no test users)")
    if result.get("best_valid_score") is not None:
        epoch = f" at epoch {result['best_epoch']}" if result.get("best_epoch") is not None else ""
        lines.append(f"Best validation score {_number(result['best_valid_score'])}{epoch}")
    elif result.get("best_epoch") is not None:
        lines.append(f"Best epoch {result['best_epoch']}")
    for key, label in (("saved_model_file", "Checkpoint"), ("last_checkpoint_file", "Last checkpoint (--resume)"),
                       ("log_file", "Log file")):
        if result.get(key):
            lines.append(f"{label}: {result[key]}")
    return "\n".join(lines)
