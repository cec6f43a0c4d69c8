"""The command line ends with a readable summary of the result dict (quick_start.main)."""

import numpy as np

from recbole_diffusion.runner import format_run_summary

RESULT = {
    "best_valid_score": np.float64(0.0131),
    "valid_score_bigger": True,
    "best_valid_result": {"hit@10": 0.0318, "ndcg@10": 0.0131},
    "test_result": {"hit@5": np.float64(0.0138), "hit@10": 0.0255, "hit@20": 0.0477,
                    "ndcg@5": 0.01, "ndcg@10": np.float64(0.0137), "ndcg@20": 0.0192},
    "best_epoch": 3,
    "saved_model_file": "saved/SASRec-Nov-29-2026_13-49-17.pth",
    "last_checkpoint_file": "saved/SASRec-ml-100k-29c0019cae65-last.pth",
    "log_file": "/runs/log/SASRec/SASRec-ml-100k.log",
    "test_seconds": 1.2,
}


def test_summary_is_a_metric_table_with_best_epoch_checkpoint_and_log():
    lines = format_run_summary(RESULT).splitlines()
    assert lines[0] == "Test metrics:"
    assert lines[1].split() == ["@5", "@10", "@20"]
    assert lines[2].split() == ["HR", "0.0138", "0.0255", "0.0477"]
    assert lines[3].split() == ["NDCG", "0.0100", "0.0137", "0.0192"]
    assert "Best validation score 0.0131 at epoch 3" in lines
    assert "Checkpoint: saved/SASRec-Nov-29-2026_13-49-17.pth" in lines
    assert "Last checkpoint (--resume): saved/SASRec-ml-100k-29c0019cae65-last.pth" in lines
    assert "Log file: /runs/log/SASRec/SASRec-ml-100k.log" in lines
    assert "np.float64" not in format_run_summary(RESULT)


def test_columns_line_up():
    header, hr, ndcg = format_run_summary(RESULT).splitlines()[1:4]
    assert len(header) == len(hr) == len(ndcg)
    assert header.index("@10") + len("@10") == hr.index("0.0255") + len("0.0255")


def test_absent_keys_are_skipped():
    """The summary prints what the result holds: RecBole's own keys only, or no checkpoint (saved=False)."""
    minimal = {key: RESULT[key] for key in ("best_valid_score", "valid_score_bigger", "best_valid_result",
                                             "test_result")}
    text = format_run_summary({**minimal, "saved_model_file": None})
    assert "Best validation score 0.0131" in text and "epoch" not in text
    assert "Checkpoint" not in text and "Log file" not in text and "None" not in text
    assert format_run_summary({}) == ""


def test_other_metrics_and_no_test_users():
    text = format_run_summary({"test_result": {"mrr@10": 0.1, "recall@5": 0.2, "auc": 0.75}, "best_epoch": 0})
    lines = text.splitlines()
    assert lines[1].split() == ["@5", "@10"]
    assert lines[2].split() == ["MRR", "0.1000"] and lines[2].endswith("0.1000")
    assert lines[3].split() == ["Recall", "0.2000"]
    assert lines[4].split() == ["auc", "0.7500"]
    assert "Best epoch 0" in lines
    assert format_run_summary({"test_result": None}) == "Test metrics: none (no test users)"
