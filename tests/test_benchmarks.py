"""The benchmark scripts' own logic: the Beauty user subsample, the argument presets, the item-table geometry."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import torch

from recbole_diffusion.compare import parse_args
from recbole_diffusion.data.slices import write_user_slice

SPEC = importlib.util.spec_from_file_location(
    "beauty_benchmark", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "beauty.py"))
beauty = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(beauty)


def test_subsample_keeps_every_row_of_the_first_users_only(tmp_path):
    source = tmp_path / "data" / "amazon-beauty"
    source.mkdir(parents=True)
    rows = [("3", "10", "0"), ("1", "11", "0"), ("3", "12", "1"), ("2", "13", "0"), ("1", "14", "1"), ("3", "15", "2")]
    (source / "amazon-beauty.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n" + "".join("\t".join(r) + "\n" for r in rows))
    folder = write_user_slice(str(source / "amazon-beauty.inter"), "amazon-beauty", 2, str(tmp_path / "sub"))
    lines = (tmp_path / "sub" / "amazon-beauty" / "amazon-beauty.inter").read_text().splitlines()
    assert folder == str(tmp_path / "sub") and lines[0].startswith("user_id:token")
    assert [tuple(line.split("\t")) for line in lines[1:]] == [r for r in rows if r[0] in ("3", "1")]


def test_cpu_presets_reach_compare_and_user_arguments_win():
    arguments = beauty.compare_arguments("guided", True, "out", "/data", ["--epochs", "3", "--seeds", "2"])
    models, dataset, seeds, output, _, overrides, _, _, _, _, _ = parse_args(arguments)
    assert models == ["DreamRec", "DreamRec-DDIM", "PreferDiff", "PreferDiff-DDPM", "SASRec"]
    assert (dataset, seeds, output) == ("amazon-beauty", [2020, 2021], "out")
    assert overrides["epochs"] == "3" and overrides["MAX_ITEM_LIST_LENGTH"] == "10"
    assert overrides["hidden_size"] == "64" and overrides["data_path"] == "/data"
    full = parse_args(beauty.compare_arguments("diffurec", False, "out", "/data", []))
    assert set(full[5]) == {"data_path"}  # the full protocol keeps every model's YAML sizes


BENCHMARKS_DIR = os.path.join(os.path.dirname(__file__), "..", "benchmarks")
sys.path.insert(0, BENCHMARKS_DIR)  # the single-model scripts import benchmarks/common.py, as when run directly
GEOMETRY_SPEC = importlib.util.spec_from_file_location(
    "embedding_geometry", os.path.join(BENCHMARKS_DIR, "embedding_geometry.py"))
embedding_geometry = importlib.util.module_from_spec(GEOMETRY_SPEC)
GEOMETRY_SPEC.loader.exec_module(embedding_geometry)


def test_item_table_geometry_tells_orthogonal_from_collapsed_rows():
    pairs = torch.tensor([[0, 1, 2], [1, 2, 3]])
    orthogonal = 3.0 * torch.eye(4)
    spread = embedding_geometry.item_table_geometry(orthogonal, pairs)
    assert spread["row_norm"] == pytest.approx(3.0)
    assert spread["pair_cosine"] == pytest.approx(0.0, abs=1e-6)
    assert spread["cosine_to_mean"] == pytest.approx(0.5)  # each unit row against (1, 1, 1, 1) / 2
    collapsed = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0], [1.0, 1e-3]])
    alike = embedding_geometry.item_table_geometry(collapsed, pairs)
    assert alike["pair_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert alike["cosine_to_mean"] == pytest.approx(1.0, abs=1e-5)


def test_forward_snr_matches_the_closed_form_of_the_issue():
    """trunc_lin, T 32: abar_0 = 1 - 0.013125, so SNR_0 is about 75 for N(0, 1) rows and 0.03 at std 0.02."""
    from recbole_diffusion.diffusion import GaussianDiffusion

    abar = GaussianDiffusion(32, "trunc_lin").alphas_cumprod
    unit = embedding_geometry.forward_snr(torch.ones(10, 4), abar)
    assert unit[0].item() == pytest.approx((1 - 0.013125) / 0.013125)
    assert unit[0].item() == pytest.approx(75.2, abs=0.1) and bool((unit[1:] < unit[:-1]).all())
    small = embedding_geometry.forward_snr(torch.full((10, 4), 0.02), abar)
    assert small[0].item() == pytest.approx(0.0301, abs=1e-3) and bool((small < 1).all())


def test_geometry_script_measures_a_checkpoint(data_root, tmp_path, monkeypatch, capsys):
    import json

    from recbole_diffusion.quick_start.quick_start import run
    from conftest import TINY

    monkeypatch.chdir(tmp_path)
    settings = {**TINY, "data_path": data_root, "epochs": 1}
    checkpoint = run("DiffuRec-smallinit", "ml-100k-tiny", config_dict=settings)["saved_model_file"]
    overrides = [f"{key}={value}" for key, value in settings.items() if key != "data_path"]
    monkeypatch.setattr(sys, "argv", ["embedding_geometry.py", "--model", "DiffuRec-smallinit", "--dataset",
                                      "ml-100k-tiny", "--data_path", data_root, "--checkpoint", checkpoint,
                                      "--set", *overrides])
    embedding_geometry.main()
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["checkpoint"] == checkpoint and 0 <= record["valid_ndcg@10"] <= 1
    assert record["share_of_steps_snr_below_1"] == 1.0 and record["snr_first_step"] < 1
    assert len(record["row_norm_quartiles"]) == 3


STUDY_SPEC = importlib.util.spec_from_file_location("study_beauty", os.path.join(BENCHMARKS_DIR, "study_beauty.py"))
study_beauty = importlib.util.module_from_spec(STUDY_SPEC)
STUDY_SPEC.loader.exec_module(study_beauty)


def test_the_study_s_final_runs_use_each_search_s_best_yaml_with_the_cap_lifted(tmp_path):
    command = study_beauty.final_command(["SASRec", "PreferDiff"], str(tmp_path), "/data")
    args = parse_args(command[3:])  # after: python -m recbole_diffusion.compare
    assert args.model_configs == {model: str(tmp_path / "tune" / model / "best.yaml")
                                  for model in ("SASRec", "PreferDiff")}
    assert args.seeds == [2020, 2021, 2022] and args.output == str(tmp_path / "final")
    assert args.overrides["epochs"] == "200" and args.overrides["eval_step"] == "2"
    assert args.overrides["data_path"] == "/data"


def test_a_second_stream_takes_a_subset_of_the_final_seeds(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(study_beauty, "search_finished", lambda folder: True)
    monkeypatch.setattr(study_beauty, "_call", calls.append)
    assert study_beauty.main(["final", "--models", "BERT4Rec", "--seeds", "2022", "--root", str(tmp_path)]) is None
    args = parse_args(calls[0][3:])
    assert args.models == ["BERT4Rec"] and args.seeds == [2022] and args.output == str(tmp_path / "final")
    for argv in (["final", "--seeds", "2023"], ["paper", "--seeds", "2020"], ["final", "--seeds", ","],
                 ["final", "--seeds", "x"]):
        with pytest.raises(SystemExit):
            study_beauty.main(argv + ["--root", str(tmp_path)])
    assert len(calls) == 1


def test_sasrec_is_rerun_at_l10_and_diffurec_paper_keeps_its_recipe_under_the_study_s_cap(tmp_path):
    short = parse_args(study_beauty.sasrec_l10_command(str(tmp_path), "/data")[3:])
    assert short.models == ["SASRec"] and short.output == str(tmp_path / "final-sasrec-L10")
    assert short.model_configs == {"SASRec": str(tmp_path / "tune" / "SASRec" / "best.yaml")}
    assert short.overrides["MAX_ITEM_LIST_LENGTH"] == "10" and short.seeds == [2020, 2021, 2022]
    paper = parse_args(study_beauty.paper_command(str(tmp_path), "/data")[3:])
    assert paper.models == ["DiffuRec-paper"] and paper.seeds == [2020] and paper.model_configs == {}
    assert (paper.overrides["epochs"], paper.overrides["eval_step"], paper.overrides["stopping_step"]) == (
        "300", "5", "4")
    assert paper.overrides["hidden_size"] == "64" and paper.overrides["MAX_ITEM_LIST_LENGTH"] == "20"
    assert "learning_rate" not in paper.overrides  # untuned: the recipe's own


@pytest.mark.parametrize("states, finished", [
    (["COMPLETE"] * 5 + ["PRUNED"] * 3, True),
    (["COMPLETE"] * 7, False),
    (["COMPLETE"] * 7 + ["RUNNING"], False),
    (["COMPLETE"] * 4 + ["FAIL"] + ["COMPLETE"] * 4, True),  # a failed trial, retried
])
def test_a_search_counts_as_finished_when_its_trials_ran(tmp_path, states, finished):
    (tmp_path / "best.yaml").write_text("learning_rate: 0.001\n", encoding="utf-8")
    rows = "".join(f"{number},{state}\n" for number, state in enumerate(states))
    (tmp_path / "trials.csv").write_text("number,state\n" + rows, encoding="utf-8")
    assert study_beauty.search_finished(str(tmp_path)) is finished


def _record(model, seed, ndcg):
    return {"model": model, "seed": seed, "status": "ok", "test": {"ndcg@10": ndcg, "hit@10": 2 * ndcg},
            "train_seconds": 100.0,
            "epochs": 10, "seconds_per_1000_users": 2.0}


def test_the_study_report_holm_adjusts_the_paired_tests_against_sasrec():
    from scipy import stats

    records = [_record("SASRec", seed, value) for seed, value in zip((1, 2, 3), (0.040, 0.042, 0.041))]
    records += [_record("DiffuRec", seed, value) for seed, value in zip((1, 2, 3), (0.030, 0.033, 0.031))]
    records += [_record("GRU4Rec", seed, value) for seed, value in zip((1, 2), (0.041, 0.045))]
    records.append({"model": "PreferDiff", "seed": 1, "status": "failed", "error": "x"})
    table = study_beauty.report_table(records)
    rows = {line.split("|")[1].strip(): line.split("|") for line in table.splitlines()[2:]}
    assert list(rows) == ["SASRec", "DiffuRec", "GRU4Rec"]  # the reference first, the failed run left out
    p_diffurec = stats.ttest_rel([0.030, 0.033, 0.031], [0.040, 0.042, 0.041]).pvalue
    p_gru4rec = stats.ttest_rel([0.041, 0.045], [0.040, 0.042]).pvalue
    holm = sorted([p_diffurec, p_gru4rec])
    expected = {p_diffurec: None, p_gru4rec: None}
    expected[holm[0]] = min(1, 2 * holm[0])
    expected[holm[1]] = max(expected[holm[0]], min(1, holm[1]))
    assert float(rows["DiffuRec"][5]) == pytest.approx(p_diffurec, rel=1e-2)
    assert float(rows["DiffuRec"][6]) == pytest.approx(expected[p_diffurec], rel=1e-2)
    assert float(rows["GRU4Rec"][6]) == pytest.approx(expected[p_gru4rec], rel=1e-2)
    assert rows["DiffuRec"][3].strip().startswith("0.0313 ± ") and "-0.0097" in rows["DiffuRec"][4]
    assert "2 seeds" in rows["GRU4Rec"][4] and rows["SASRec"][4].strip() == "reference"


def test_the_study_report_meets_the_l10_models_with_sasrec_at_l10(tmp_path):
    for folder, model, values in (("final", "SASRec", (0.040, 0.042, 0.041)),
                                  ("final", "PreferDiff", (0.010, 0.012, 0.011)),
                                  ("final-sasrec-L10", "SASRec", (0.030, 0.031, 0.032)),
                                  ("final-paper", "DiffuRec-paper", (0.020,))):
        os.makedirs(tmp_path / folder / "runs", exist_ok=True)
        for seed, value in zip((2020, 2021, 2022), values):
            (tmp_path / folder / "runs" / f"{model}-seed{seed}.json").write_text(
                json.dumps(_record(model, seed, value)), encoding="utf-8")
    text = study_beauty.report_text(str(tmp_path))
    sections = text.split("\n### ")[1:]
    short_title = "Every model against tuned SASRec at L 10 (DreamRec's and PreferDiff's L)"
    assert [section.splitlines()[0] for section in sections] == [
        "Every model against tuned SASRec (L 20), NDCG@10", f"{short_title}, NDCG@10",
        "Every model against tuned SASRec (L 20), HR@10", f"{short_title}, HR@10"]
    main, short, main_hr, short_hr = sections
    assert "| DiffuRec-paper | 1 | 0.0200 |" in main and "SASRec (L 10)" not in main
    assert "| test HR@10 |" in main_hr and "| DiffuRec-paper | 1 | 0.0400 |" in main_hr
    for table, difference in ((short, "-0.0200"), (short_hr, "-0.0400")):
        rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
        assert list(rows)[:2] == ["model", "SASRec (L 10)"] and "SASRec" not in rows  # L 20's SASRec left out
        assert rows["SASRec (L 10)"].split("|")[4].strip() == "reference"
        assert difference in rows["PreferDiff"] and "(-33.3 %, 1 seed) | n/a |" in rows["DiffuRec-paper"]


def _load_benchmark(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__), "..", "benchmarks",
                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_text_zero_shot_cuts_item_disjoint_datasets_by_release_year(tmp_path):
    text_zero_shot = _load_benchmark("text_zero_shot")
    folder = text_zero_shot.write_transfer_datasets(str(tmp_path), max_users=50)
    items = {}
    for name in text_zero_shot.CUTS:
        with open(os.path.join(folder, name, f"{name}.item"), encoding="utf-8") as handle:
            handle.readline()
            years = {line.split("\t")[0]: int(line.split("\t")[2]) for line in handle}
        with open(os.path.join(folder, name, f"{name}.inter"), encoding="utf-8") as handle:
            handle.readline()
            rows = [line.split("\t") for line in handle]
        assert rows and {row[1] for row in rows} <= set(years) and len({row[0] for row in rows}) <= 50
        items[name] = years
    for name, (low, high) in text_zero_shot.CUTS.items():
        assert low <= min(items[name].values()) and max(items[name].values()) < high
        with open(os.path.join(folder, name, f"{name}.inter"), encoding="utf-8") as handle:
            time_column = handle.readline().rstrip("\n").split("\t").index("timestamp:float")
            by_user = {}
            for line in handle:
                cells = line.rstrip("\n").split("\t")
                by_user.setdefault(cells[0], []).append(int(cells[time_column]))
        assert all(times == list(range(1, len(times) + 1)) for times in by_user.values())  # positions, in order


def test_text_zero_shot_gives_both_tables_one_ffn_width_and_the_transfer_the_encoder_s_axes(tmp_path, monkeypatch):
    text_zero_shot = _load_benchmark("text_zero_shot")
    command = text_zero_shot.compare_command(["SASRec", "PreferDiff", "PreferDiff-T"], "ml-100k",
                                             str(tmp_path / "heldout"), {})
    configs = parse_args(command[3:]).model_configs
    assert set(configs) == {"PreferDiff", "PreferDiff-T"}
    assert "inner_size: 384" in open(configs["PreferDiff"]).read() and \
        "inner_size: 384" in open(configs["PreferDiff-T"]).read()
    # Stage transfer, its training stubbed: every run and zero-shot evaluation reads the tables in the encoder's
    # axes, and a zero-shot record is redone when its checkpoint changed.
    calls, evaluated, order = [], [], []
    monkeypatch.setattr(text_zero_shot, "call", lambda command: calls.append(parse_args(command[3:])) or
                        order.append("train") or 0)
    import recbole_diffusion.quick_start.quick_start as quick_start
    monkeypatch.setattr(quick_start, "run", lambda model, dataset, config_dict, saved: evaluated.append(
        config_dict) or order.append("zero-shot") or {"test_result": {"ndcg@10": 0.1}})
    checkpoint = tmp_path / "best.pth"
    checkpoint.write_bytes(b"x")
    for source in text_zero_shot.SOURCES:
        runs = tmp_path / "transfer" / source / "runs"
        runs.mkdir(parents=True)
        (runs / "PreferDiff-T-seed2020.json").write_text(json.dumps(
            {"status": "ok", "seed": 2020, "test": {}, "checkpoint": str(checkpoint)}), encoding="utf-8")
    assert text_zero_shot.transfer_stage(str(tmp_path), {}, 1, 20) == 0
    assert all(args.overrides["text_whitening"] == "zca" for args in calls) and len(calls) == 4
    assert calls[0].overrides["data_path"].endswith("data-20-users")  # a smoke test's slices apart from the data
    assert len(evaluated) == 3 and all(settings["text_whitening"] == "zca" and settings["inner_size"] == 384
                                       for settings in evaluated)
    # the sources, then the zero-shot evaluations, then the (costlier) in-domain references on the target
    assert order == ["train"] * 3 + ["zero-shot"] * 3 + ["train"] and calls[-1].dataset == text_zero_shot.TARGET
    text_zero_shot.transfer_stage(str(tmp_path), {}, 1, 20)
    assert len(evaluated) == 3  # done, the same checkpoints: kept
    os.utime(checkpoint, (1, 1))
    text_zero_shot.transfer_stage(str(tmp_path), {}, 1, 20)
    assert len(evaluated) == 6  # retrained checkpoints: evaluated again
    text_zero_shot.transfer_stage(str(tmp_path), {"guidance_weight": "4"}, 1, 20)
    assert len(evaluated) == 9  # other settings: evaluated again


def test_random_ranking_closed_form():
    text_zero_shot = _load_benchmark("text_zero_shot")
    hit, ndcg = text_zero_shot.random_ranking(4, 2)
    assert hit == 0.5 and ndcg == pytest.approx((1 + 1 / np.log2(3)) / 4)


BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "benchmarks")


@pytest.mark.parametrize("script", sorted(name for name in os.listdir(BENCHMARKS) if name.endswith(".sh")))
def test_gpu_scripts_parse_and_name_files_that_exist(script):
    """A GPU loan is too short to find a typo: every shell script parses, and every repository file it names exists."""
    import re
    import subprocess

    path = os.path.join(BENCHMARKS, script)
    assert subprocess.run(["bash", "-n", path], capture_output=True, text=True).returncode == 0
    with open(path, encoding="utf-8") as handle:
        named = set(re.findall(r"benchmarks/[\w./-]+\.(?:py|sh|yaml)", handle.read()))
    missing = [name for name in named if not os.path.isfile(os.path.join(BENCHMARKS, "..", name))]
    assert not missing


def test_gpu_stages_are_bounded_by_the_seconds_left(tmp_path):
    """``bounded CAP RESERVE command`` runs a stage when min(CAP, seconds left - RESERVE) is 20 s or more, and
    skips it, saying so, when less would remain (the stop at the bound is ``timeout``'s)."""
    import subprocess

    script = (f"budget=60; start=$(date +%s); source {os.path.join(BENCHMARKS, 'gpu_common.sh')}; "
              "bounded 100 45 echo ran-1; bounded 100 0 echo ran-2; bounded 19 0 sleep 30")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=str(tmp_path), timeout=60)
    lines = result.stdout.splitlines()
    assert lines[0] == "SKIPPED (time): echo ran-1" and lines[1] == "ran-2"
    assert lines[2].startswith("SKIPPED (time): sleep 30")
