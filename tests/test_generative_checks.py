"""benchmarks/generative_checks.py on tiny checkpoints trained here: settings, numbers, tests and files."""

import csv
import importlib.util
import os
import sys

import pytest
import torch

from recbole_diffusion.compare import load_runs, run_comparison
from recbole_diffusion.evaluation.statistics import holm_adjust
from conftest import TINY

BENCHMARKS_DIR = os.path.join(os.path.dirname(__file__), "..", "benchmarks")
sys.path.insert(0, BENCHMARKS_DIR)  # the script imports its neighbours, as when run directly
SPEC = importlib.util.spec_from_file_location("generative_checks", os.path.join(BENCHMARKS_DIR,
                                                                                 "generative_checks.py"))
checks = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(checks)

SETTINGS = {**TINY, "epochs": 1, "diffusion_steps": 10, "beta_schedule": "cosine", "ddim_steps": 5}


@pytest.fixture(scope="module")
def checked(data_root, tmp_path_factory):
    runs = str(tmp_path_factory.mktemp("generative") / "runs")
    threads = torch.get_num_threads()
    try:
        run_comparison(["DiffuRec", "PreferDiff", "SeqDiffRec", "SASRec"], "ml-100k-tiny", [2020], runs,
                       overrides={**SETTINGS, "data_path": data_root}, isolate=False, threads=1,
                       keep_checkpoints=True)
        assert checks.main(["--runs", runs, "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    with open(os.path.join(runs, "generative", "generative.csv"), encoding="utf-8") as handle:
        return runs, list(csv.DictReader(handle))


def test_a_second_call_keeps_the_checked_runs_without_their_checkpoints(checked):
    """A study's checks span sessions: runs already in generative.csv keep their rows, even with the checkpoint gone."""
    runs, rows = checked
    for record in load_runs(runs):
        if record.get("checkpoint"):
            os.rename(record["checkpoint"], record["checkpoint"] + ".away")
    try:
        assert checks.main(["--runs", runs, "--threads", "1"]) == 0
    finally:
        for record in load_runs(runs):
            if record.get("checkpoint"):
                os.rename(record["checkpoint"] + ".away", record["checkpoint"])
    with open(os.path.join(runs, "generative", "generative.csv"), encoding="utf-8") as handle:
        again = list(csv.DictReader(handle))
    assert [(row["run"], row["setting"]) for row in again] == [(row["run"], row["setting"]) for row in rows]
    assert [float(row["ndcg@10"]) for row in again] == pytest.approx([float(row["ndcg@10"]) for row in rows])


def test_each_diffusion_run_gets_its_settings_and_sasrec_none(checked):
    _, rows = checked
    settings = {}
    for row in rows:
        settings.setdefault(row["model"], []).append(row["setting"])
    assert settings == {"DiffuRec": ["as trained", "one call (one_step)", "x_t = 0", "lambda = 0"],
                        "PreferDiff": ["as trained", "one call (one_step)", "x_t = 0"],
                        "SeqDiffRec": ["as trained", "x_t = 0"]}  # its default is one call already


def test_as_trained_reproduces_the_run_and_the_tests_are_holm_adjusted(checked):
    runs, rows = checked
    recorded = {record["model"]: record["test"]["ndcg@10"] for record in load_runs(runs)}
    for model in ("DiffuRec", "PreferDiff"):
        own = [row for row in rows if row["model"] == model]
        assert float(own[0]["ndcg@10"]) == pytest.approx(recorded[model], abs=5.1e-5)
        assert own[0]["verdict"] == "reference" and float(own[0]["share_of_steps_snr_below_1"]) >= 0
        for row in own[1:]:
            assert float(row["margin"]) == pytest.approx(0.02 * float(own[0]["ndcg@10"]), rel=1e-3)
        for kind in ("tost", "wilcoxon"):  # Holm over the run's settings, from the raw p-values
            raw = [float(row[f"{kind}_p"]) if row[f"{kind}_p"] else None for row in own[1:]]
            adjusted = [float(row[f"{kind}_p_holm"]) if row[f"{kind}_p_holm"] else None for row in own[1:]]
            assert adjusted == [p if p is None else pytest.approx(p, rel=1e-3) for p in holm_adjust(raw)]
    assert os.path.getsize(os.path.join(runs, "generative", "generative.md")) > 0


def test_zero_input_makes_every_denoiser_call_see_zeros(data_root):
    from recbole_diffusion.config.configurator import build_config
    from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data

    config, model_class = build_config("PreferDiff", "ml-100k-tiny", config_dict={**SETTINGS, "data_path": data_root})
    data = prepare_data(config)
    model = build_trainer(config, model_class, data.train).model.eval()
    batch = next(iter(data.test))[0]
    condition = model.encode_condition(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
    t = torch.full((batch[model.ITEM_SEQ].size(0),), 3, dtype=torch.long)
    x_t = torch.randn(batch[model.ITEM_SEQ].size(0), model.hidden_size)
    expected = model.denoise(condition, torch.zeros_like(x_t), t)
    checks.zero_input(model)
    assert torch.equal(model.denoise(condition, x_t, t), expected)
    assert not torch.equal(type(model).denoise(model, condition, x_t, t), expected)


def test_lambda_0_leaves_diffurec_blind_to_x_t(data_root):
    """DiffuRec's x_t (with the step embedding) enters only through lambda * query: at lambda 0 the denoiser's
    output no longer depends on it, which is what the 'lambda = 0' setting removes."""
    from recbole_diffusion.config.configurator import build_config
    from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data

    config, model_class = build_config("DiffuRec", "ml-100k-tiny", config_dict={**SETTINGS, "data_path": data_root})
    data = prepare_data(config)
    model = build_trainer(config, model_class, data.train).model.eval()
    batch = next(iter(data.test))[0]
    condition = model.encode_condition(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
    size = batch[model.ITEM_SEQ].size(0)
    t, x_t = torch.full((size,), 3, dtype=torch.long), torch.randn(size, model.hidden_size)
    with torch.no_grad():
        assert not torch.allclose(model.denoise(condition, x_t, t), model.denoise(condition, 2 * x_t, t))
        model.lambda_uncertainty = 0.0
        assert torch.equal(model.denoise(condition, x_t, t), model.denoise(condition, 2 * x_t, t + 2))


def test_the_direction_is_the_signed_rank_statistic_s():
    import numpy as np

    # the mean is positive (one large gain), the ranks say lower (many small losses): the test's side
    differences = np.array([0.9, -0.1, -0.1, -0.1, -0.1, -0.1, 0.0])
    assert differences.mean() > 0 and checks.signed_rank_direction(differences) == "lower"
    # tied |differences| share one rank (per-user NDCG differences tie often): 3 gains beat 2 equal losses
    assert checks.signed_rank_direction(np.array([1.0, 1.0, 1.0, -1.0, -1.0])) == "higher"


def test_verdicts_read_equivalence_and_direction_at_alpha():
    assert checks.verdict(0.01, 0.2, "lower") == "equivalent"
    assert checks.verdict(0.3, 0.01, "lower") == "lower" and checks.verdict(0.3, 0.01, "higher") == "higher"
    assert checks.verdict(0.01, 0.01, "lower") == "equivalent and lower"
    assert checks.verdict(0.3, 0.3, "higher") == "inconclusive" and checks.verdict(None, None, "lower") == "inconclusive"
