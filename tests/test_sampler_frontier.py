"""benchmarks/sampler_frontier.py on tiny checkpoints that a comparison trains here: files, numbers, resuming."""

import csv
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from recbole_diffusion.compare import load_runs, run_comparison
from recbole_diffusion.diffusion import denoiser_calls
from recbole_diffusion.evaluation.metrics import METRICS, per_user_metrics
from recbole_diffusion.evaluation.statistics import holm_adjust, tost_paired, wilcoxon_signed_rank
from conftest import TINY

BENCHMARKS_DIR = os.path.join(os.path.dirname(__file__), "..", "benchmarks")
SPEC = importlib.util.spec_from_file_location("sampler_frontier", os.path.join(BENCHMARKS_DIR, "sampler_frontier.py"))
frontier = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(frontier)

SEEDS = [2020, 2021]
# T = 10 with the cosine schedule (whose last step is pure noise, so one_step is swept too); PreferDiff's default
# is DDIM with 5 strides, DiffuRec's DDPM over all 10 steps.
SETTINGS = {**TINY, "epochs": 1, "diffusion_steps": 10, "beta_schedule": "cosine", "ddim_steps": 5}
EXPECTED = {"DiffuRec": ["DDPM-10", "DDPM-8", "DDPM-4", "DDPM-2", "DDIM-8", "DDIM-4", "DDIM-2", "DDIM-1", "one-step"],
            "PreferDiff": ["DDIM-5", "DDPM-10", "DDIM-2", "DDIM-1", "one-step"]}


@pytest.fixture(scope="module")
def swept(data_root, tmp_path_factory):
    """Two seeds of PreferDiff, and in a second folder one of DiffuRec and of SASRec (the reference), trained one
    epoch with kept checkpoints, then swept."""
    runs = str(tmp_path_factory.mktemp("frontier") / "runs")
    reference = os.path.join(runs, "one-seed")
    threads = torch.get_num_threads()
    try:
        overrides = {**SETTINGS, "data_path": data_root}
        run_comparison(["PreferDiff"], "ml-100k-tiny", SEEDS, runs, overrides=overrides, isolate=False, threads=1,
                       keep_checkpoints=True)
        run_comparison(["DiffuRec", "SASRec"], "ml-100k-tiny", SEEDS[:1], reference, overrides=overrides,
                       isolate=False, threads=1, keep_checkpoints=True)
        output = os.path.join(runs, "frontier")
        assert frontier.main(["--runs", runs, reference, "--output", output, "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    with open(os.path.join(output, "frontier.csv"), encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return runs, reference, output, rows


def _evaluation(output, model, seed):
    with open(os.path.join(output, "evaluations", f"{model}-seed{seed}.json"), encoding="utf-8") as handle:
        evaluation = json.load(handle)
    return evaluation, np.load(os.path.join(output, "evaluations", f"{model}-seed{seed}.npz"))


def test_every_setting_is_a_row_with_its_calls_and_the_default_reproduces_the_runs(swept):
    runs, reference, output, rows = swept
    for name in ("frontier.csv", "frontier.md", "frontier.png"):
        assert os.path.getsize(os.path.join(output, name)) > 0
    records = {(r["model"], r["seed"]): r for folder in (runs, reference) for r in load_runs(folder)}
    for model, settings in EXPECTED.items():
        seeds = SEEDS if model == "PreferDiff" else SEEDS[:1]
        model_rows = [row for row in rows if row["model"] == model]
        assert [row["setting"] for row in model_rows] == settings
        for row in model_rows:
            sampler, steps = row["sampler"], int(row["sampler_steps"]) if row["sampler_steps"] else None
            assert int(row["calls_per_user"]) == denoiser_calls(sampler, steps, 10)
            assert float(row["seconds_per_1000_users"]) > 0 and row["seeds"] == str(len(seeds))
        default = model_rows[0]
        assert default["default"] == "True" and default["verdict"] == ""
        for metric in METRICS:  # the default sampler re-evaluated: the metrics its runs recorded
            recorded = np.mean([records[(model, seed)]["test"][metric] for seed in seeds])
            assert float(default[f"{metric}_mean"]) == pytest.approx(recorded, abs=5.1e-5)
        for seed in seeds:
            assert _evaluation(output, model, seed)[0]["default_matches_run_record"]
    point = rows[-1]
    assert point["model"] == "SASRec" and point["setting"] == "reference"
    assert float(point["seconds_per_1000_users"]) > 0
    one_seed = [row for row in rows if row["model"] == "DiffuRec" and row["default"] == "False"]
    assert all(row["seed_direction"] in ("higher", "lower", "equal") and row["seed_t_p"] == "" for row in one_seed)


def test_tests_recompute_from_the_saved_per_user_ranks(swept):
    _, _, output, rows = swept
    model, setting = "PreferDiff", "DDIM-1"
    per_seed = [_evaluation(output, model, seed)[1] for seed in SEEDS]

    def user_ndcg(name):
        return np.mean([per_user_metrics(arrays[f"ranks/{name}"])["ndcg@10"] for arrays in per_seed], axis=0)

    values, reference = user_ndcg(setting), user_ndcg("DDIM-5")
    model_rows = [row for row in rows if row["model"] == model]
    row = next(r for r in model_rows if r["setting"] == setting)
    margin = 0.02 * reference.mean()
    assert float(row["margin"]) == pytest.approx(margin)
    assert float(row["ndcg@10_mean"]) == pytest.approx(values.mean())
    wilcoxon = wilcoxon_signed_rank(values, reference)
    if wilcoxon is None:
        assert row["user_wilcoxon_p"] == ""
    else:
        assert float(row["user_wilcoxon_p"]) == pytest.approx(wilcoxon)
    if margin > 0:
        assert float(row["tost_p"]) == pytest.approx(tost_paired(values, reference, margin)["p"])
        tested = [r for r in model_rows if r["default"] == "False"]
        adjusted = holm_adjust([float(r["tost_p"]) for r in tested])
        assert [float(r["tost_p_holm"]) for r in tested] == pytest.approx(adjusted)
    assert row["verdict"] in ("equivalent", "equivalent, lower", "equivalent, higher", "lower", "higher",
                              "inconclusive")


def test_a_setting_gives_the_same_metrics_on_every_evaluation(swept):
    runs, _, output, _ = swept
    record = next(r for r in load_runs(runs) if r["model"] == "PreferDiff")
    _, trainer, test_data, added_keys = frontier.load_checkpoint_run(record["checkpoint"])
    assert added_keys == []
    result, _, ranks = frontier.evaluate_setting(trainer, test_data, "ddim", 2)
    evaluation, arrays = _evaluation(output, "PreferDiff", record["seed"])
    saved = next(s for s in evaluation["settings"] if s["name"] == "DDIM-2")
    assert result["metrics"] == saved["metrics"] and np.array_equal(ranks, arrays["ranks/DDIM-2"])


def test_markdown_names_the_cheapest_setting_and_a_rerun_evaluates_nothing(swept, monkeypatch):
    runs, reference, output, rows = swept
    with open(os.path.join(output, "frontier.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert "## DiffuRec" in text and "## PreferDiff" in text and text.count("Cheapest setting") == 2
    assert "Reference: SASRec" in text and "DDPM-10*" in text and "DDIM-5*" in text and "margin" in text

    def refuse(path, **options):
        raise AssertionError(f"{path} evaluated again")

    monkeypatch.setattr(frontier, "load_checkpoint_run", refuse)
    assert frontier.main(["--runs", runs, reference, "--output", output, "--models", "PreferDiff"]) == 0
    with open(os.path.join(output, "frontier.csv"), encoding="utf-8") as handle:
        again = [row for row in csv.DictReader(handle)]
    assert [row["setting"] for row in again if row["model"] == "PreferDiff"] == EXPECTED["PreferDiff"]
    assert {row["model"] for row in again} == {"PreferDiff", "SASRec"}


def test_an_evaluation_taken_with_another_sweep_is_taken_again(swept, monkeypatch):
    """A checkpoint evaluated by an older sweep (here: its record lacks the sweep) is evaluated again, whole."""
    runs, reference, output, rows = swept
    path = os.path.join(output, "evaluations", "DiffuRec-seed2020.json")
    evaluation, _ = _evaluation(output, "DiffuRec", 2020)
    assert frontier.swept_with_current_sweep(evaluation) and evaluation["sweep"] == "short"
    older = {key: value for key, value in evaluation.items() if key not in ("sweep", "sweep_settings")}
    older["settings"] = [s for s in evaluation["settings"] if s["name"] != "DDIM-1"]
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(older, handle)
    assert not frontier.swept_with_current_sweep(older)
    loaded, original = [], frontier.load_checkpoint_run
    monkeypatch.setattr(frontier, "load_checkpoint_run",
                        lambda path, **options: loaded.append(path) or original(path, **options))
    assert frontier.main(["--runs", runs, reference, "--output", output, "--models", "DiffuRec"]) == 0
    assert len(loaded) == 1
    again, arrays = _evaluation(output, "DiffuRec", 2020)
    assert [s["name"] for s in again["settings"]] == EXPECTED["DiffuRec"] and "ranks/DDIM-1" in arrays
    assert frontier.swept_with_current_sweep(again)


def test_a_setting_whose_scores_are_not_finite_is_recorded_as_failed_and_not_tested(swept, tmp_path, monkeypatch):
    """A sampler that diverges (the trainer refuses NaN scores) is a result: a failed row, the others tested."""
    runs, reference, output, rows = swept
    original = frontier.evaluate_setting

    def diverging(trainer, test_data, sampler=None, steps=None):
        if (sampler, steps) == ("ddim", 2):
            raise FloatingPointError("evaluation: the model scored NaN for 3 of 4 users")
        return original(trainer, test_data, sampler, steps)

    monkeypatch.setattr(frontier, "evaluate_setting", diverging)
    failing = str(tmp_path / "failing")
    for _ in range(2):  # the second run reads the saved evaluations, failed settings included
        assert frontier.main(["--runs", runs, "--output", failing, "--models", "PreferDiff"]) == 0
    with open(os.path.join(failing, "frontier.csv"), encoding="utf-8") as handle:
        again = {row["setting"]: row for row in csv.DictReader(handle)}
    assert list(again) == EXPECTED["PreferDiff"]
    assert again["DDIM-2"]["verdict"] == "failed in 2 of 2 seeds: evaluation: the model scored NaN for 3 of 4 users"
    assert again["DDIM-2"]["ndcg@10_mean"] == "" and again["DDIM-2"]["calls_per_user"] == "3"
    expected = {row["setting"]: row for row in rows if row["model"] == "PreferDiff"}
    tested = [name for name in EXPECTED["PreferDiff"][1:] if name != "DDIM-2"]
    for name in tested:  # the others are untouched, and Holm adjusts over the settings actually tested
        assert again[name]["ndcg@10_mean"] == expected[name]["ndcg@10_mean"]
    assert [float(again[name]["tost_p_holm"]) for name in tested] == pytest.approx(
        holm_adjust([float(again[name]["tost_p"]) for name in tested]))
    with open(os.path.join(failing, "frontier.md"), encoding="utf-8") as handle:
        assert "| DDIM-2 | 3 | - | - | - |" in handle.read()


def test_a_default_sampler_whose_scores_are_not_finite_stops_the_sweep(swept, tmp_path, monkeypatch):
    runs, reference, output, rows = swept

    def diverging(*args, **kwargs):
        raise FloatingPointError("evaluation: the model scored NaN")

    monkeypatch.setattr(frontier, "evaluate_setting", diverging)
    with pytest.raises(FloatingPointError, match="NaN"):
        frontier.main(["--runs", runs, "--output", str(tmp_path / "out"), "--models", "PreferDiff"])


def test_runs_without_kept_checkpoints_are_refused(tmp_path):
    runs = tmp_path / "runs"
    (runs / "runs").mkdir(parents=True)
    (runs / "runs" / "DiffuRec-seed1.json").write_text(json.dumps(
        {"model": "DiffuRec", "seed": 1, "status": "ok", "checkpoint": None, "test": {}}))
    with pytest.raises(ValueError, match="compare --keep_checkpoints"):
        frontier.run_frontier([str(runs)], str(tmp_path / "out"))
    assert frontier.setting_name("ddpm", None, 32) == "DDPM-32"
    assert frontier.setting_name("one_step", None, 32) == "one-step"
