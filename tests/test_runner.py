"""The runner: argument handling, config merge order, model lookup, early errors, and runs from anywhere."""

import os
import subprocess
import sys
import time

import pytest
from recbole.data import create_dataset, data_preparation

from recbole_diffusion import runner
from recbole_diffusion.diffusion import denoiser_calls
from recbole_diffusion.config.configurator import build_config, get_model_class
from recbole_diffusion.quick_start.quick_start import run
from recbole_diffusion.runner import main, parse_args
from conftest import TINY, write_inter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_args_reads_model_dataset_files_and_overrides():
    model, dataset, files, overrides = parse_args(
        ["--model=SASRec", "--dataset=ml-1m", "--config_files", "a.yaml", "b.yaml,c.yaml", "d.yaml e.yaml", "--epochs=5",
         "--eval_args={'mode': 'full'}"])
    assert (model, dataset) == ("SASRec", "ml-1m")
    assert files == ["a.yaml", "b.yaml", "c.yaml", "d.yaml", "e.yaml"]
    assert overrides == {"epochs": "5", "eval_args": "{'mode': 'full'}"}


def test_parse_args_rejects_an_override_without_value(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--epochs"])
    assert "--key=value" in capsys.readouterr().err


def test_model_lookup_prefers_this_package_then_recbole():
    assert get_model_class("DiffuRec").__module__ == "recbole_diffusion.model.diffurec"
    assert get_model_class("SASRec").__module__ == "recbole.model.sequential_recommender.sasrec"
    with pytest.raises(ValueError) as error:
        get_model_class("DifuRec")
    assert "DiffuRec" in str(error.value) and "SASRec" in str(error.value) and "BERT4Rec" in str(error.value)
    assert "Did you mean DiffuRec" in str(error.value) and len(str(error.value)) < 600


def test_variant_names_apply_their_yaml_after_the_model_yaml(data_root):
    config, model_class = build_config("DiffuRecSys-V1", "ml-100k-small", config_dict={"data_path": data_root})
    assert model_class.__name__ == "DiffuRecSys" and config["model"] == "DiffuRecSys"
    assert config["cross_attention"] is True and config["offset_noise_scale"] == 0.0
    config, _ = build_config("PreferDiff-DDPM", "ml-100k-small", config_dict={"data_path": data_root})
    assert config["sampler"] == "ddpm" and config["preference_lambda"] == 0.4
    with pytest.raises(ValueError, match="DiffuRecSys-V2"):
        get_model_class("DiffuRecSys-V3")


def test_merge_order_overall_model_user_file_then_overrides(data_root, tmp_path):
    user_file = tmp_path / "user.yaml"
    user_file.write_text("hidden_size: 48\ninner_size: 96\n")
    settings = {"data_path": data_root}
    config, _ = build_config("DiffuRec", "ml-100k-small", config_dict=settings)
    assert config["hidden_size"] == 128 and config["diffusion_steps"] == 32  # model YAML over RecBole
    assert config["topk"] == [5, 10, 20] and config["valid_metric"] == "NDCG@10"  # our overall protocol
    config, _ = build_config("DiffuRec", "ml-100k-small", [str(user_file)], settings)
    assert (config["hidden_size"], config["inner_size"]) == (48, 96)  # user file over model YAML
    config, _ = build_config("DiffuRec", "ml-100k-small", [str(user_file)], {**settings, "hidden_size": "40"})
    assert config["hidden_size"] == 40  # command line over user file, converted like RecBole does
    config, _ = build_config("DiffuRec", "ml-100k")  # the copy inside recbole, found without data_path
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}  # ours over RecBole's YAML


def test_dataset_yaml_wins_over_model_yaml(data_root, tmp_path, monkeypatch):
    import recbole_diffusion.config.configurator as configurator

    shipped = configurator.properties_file
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "ml-100k-small.yaml").write_text("MAX_ITEM_LIST_LENGTH: 7\n")
    monkeypatch.setattr(configurator, "properties_file", lambda *parts: (
        str(tmp_path.joinpath(*parts)) if parts[0] == "dataset" else shipped(*parts)))
    config, _ = build_config("DiffuRec", "ml-100k-small", config_dict={"data_path": data_root})
    assert config["MAX_ITEM_LIST_LENGTH"] == 7  # the model YAML says 50


def test_unknown_keys_are_warned_with_a_suggestion(data_root, capsys):
    build_config("DiffuRec", "ml-100k-small", config_dict={"data_path": data_root, "learning_rat": "0.01",
                                                          "lambda": "0.4"})
    err = capsys.readouterr().err
    assert "'learning_rat' is not used" in err and "learning_rate" in err
    assert "'lambda' is not used" in err
    build_config("DiffuRec", "ml-100k-small", config_dict={"data_path": data_root, "learning_rate": "0.01",
                                                          "encoding": "utf-8"})  # RecBole reads encoding, undeclared
    assert "not used" not in capsys.readouterr().err


def test_missing_dataset_fails_fast_saying_where_it_looked(tmp_path, in_tmp_cwd):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as error:
        build_config("DiffuRec", "amazon-beauty", config_dict={"data_path": str(tmp_path / "nowhere")})
    message = str(error.value)
    assert time.monotonic() - start < 10
    assert str(tmp_path / "nowhere") in message and "--data_path" in message
    with pytest.raises(FileNotFoundError, match="RecBole knows no download"):
        build_config("DiffuRec", "no-such-dataset", config_dict={"data_path": str(tmp_path)})
    assert not os.listdir(in_tmp_cwd)


def test_ml100k_without_data_path_reads_a_local_copy_first_then_recboles(tmp_path, in_tmp_cwd, monkeypatch):
    monkeypatch.delenv("RECBOLE_DIFFUSION_DATA", raising=False)
    config, _ = build_config("DiffuRec", "ml-100k")
    assert config["data_path"].endswith(os.path.join("recbole", "dataset_example", "ml-100k"))
    write_inter(in_tmp_cwd / "dataset", "ml-100k", [(user, item, item) for user in (1, 2) for item in (1, 2, 3)])
    config, _ = build_config("DiffuRec", "ml-100k")
    assert os.path.samefile(config["data_path"], in_tmp_cwd / "dataset" / "ml-100k")


def test_dataset_without_timestamp_is_refused(tmp_path):
    root = write_inter(tmp_path, "untimed", [(1, 1), (1, 2), (2, 1)], header=("user_id:token", "item_id:token"))
    with pytest.raises(ValueError, match="TIME_FIELD='timestamp'.*no such column"):
        build_config("DiffuRec", "untimed", config_dict={"data_path": root})


def test_bad_value_stops_before_anything_is_written(data_root, in_tmp_cwd, capsys):
    code = main(["--model=DiffuRec", "--dataset=ml-100k-small", f"--data_path={data_root}", "--diffusion_steps=0"])
    assert code == 2
    assert "diffusion_steps=0" in capsys.readouterr().err
    assert not os.listdir(in_tmp_cwd)


@pytest.mark.parametrize("model", ["SASRec", "BERT4Rec", "GRU4Rec"])
def test_recbole_builtin_runs_through_the_same_entry(model, data_root, in_tmp_cwd):
    result = run(model, "ml-100k-tiny", config_dict={**TINY, "data_path": data_root, "epochs": 1})
    assert set(result) >= {"best_valid_score", "best_valid_result", "test_result"}
    assert result["test_result"]["hit@20"] >= result["test_result"]["hit@10"] >= result["test_result"]["hit@5"]


def test_each_run_in_one_process_writes_its_own_log(data_root, in_tmp_cwd):
    """Two runs in one process (compare --in-process, a notebook): RecBole's logger is set up through
    logging.basicConfig, a no-op once handlers exist, so the second run used to write into the first run's file."""
    import logging

    root = logging.getLogger()
    outside, level = root.handlers[:], root.level  # pytest's own handlers, which make basicConfig a no-op too
    for handler in outside:
        root.removeHandler(handler)
    try:
        settings = {**TINY, "data_path": data_root, "epochs": 1, "state": "INFO"}
        results = [run("GRU4Rec", "ml-100k-tiny", config_dict={**settings, "seed": seed}) for seed in (11, 12)]
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        for handler in outside:
            root.addHandler(handler)
        root.setLevel(level)
    first, second = (result["log_file"] for result in results)
    assert first != second
    with open(first, encoding="utf-8") as handle:
        first_text = handle.read()
    with open(second, encoding="utf-8") as handle:
        second_text = handle.read()
    assert "seed = 11" in first_text and "seed = 12" not in first_text
    assert "seed = 12" in second_text and second_text.count("[Training]") == 1


def test_nan_loss_stops_training_with_a_message(data_root, in_tmp_cwd, monkeypatch):
    from recbole_diffusion.model import DiffuRec

    monkeypatch.setattr(DiffuRec, "calculate_loss", lambda self, interaction: self.item_embedding.weight.sum() * float("nan"))
    with pytest.raises(ValueError, match="loss is nan"):
        run("DiffuRec", "ml-100k-tiny", config_dict={**TINY, "data_path": data_root, "epochs": 1})


def test_installed_entry_point_runs_from_any_directory(data_root, tmp_path):
    """From an unrelated folder, the package finds its YAML files and writes logs there."""
    done = subprocess.run(
        [sys.executable, "-m", "recbole_diffusion", "--model=DiffuRecSys", "--dataset=ml-100k-tiny",
         f"--data_path={data_root}", "--epochs=1", "--hidden_size=16", "--inner_size=32", "--n_layers=1",
         "--n_heads=2", "--MAX_ITEM_LIST_LENGTH=10", "--diffusion_steps=8", "--show_progress=False"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Test metrics:" in done.stdout and "NDCG" in done.stdout  # the run summary (format_run_summary)
    assert "cross_attention" in done.stderr + done.stdout  # DiffuRecSys.yaml was found and logged
    assert os.path.isdir(tmp_path / "log") and os.path.isdir(tmp_path / "saved")


def test_a_regular_install_carries_every_yaml_file(tmp_path):
    """`pip install .` (not editable) ships properties/ inside the package, found without the checkout."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), checkout], check=True, timeout=300, cwd=tmp_path)
    probe = ("import os, recbole_diffusion.config.configurator as q; "
             "print(q.properties_file('overall.yaml')); print(q.resolve_model('DiffuRecSys-V2')[2]); "
             "print(os.path.isfile(q.properties_file('model', 'PreferDiff.yaml')))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr[-3000:]
    overall, variant, exists = done.stdout.split()
    assert overall.startswith(str(site)) and variant.startswith(str(site)) and exists == "True"
    assert os.path.isfile(overall) and os.path.isfile(variant)


def test_only_a_bare_command_runs_the_demo(monkeypatch, capsys):
    """No arguments: the small demo; the same model and dataset named explicitly: the YAML defaults."""
    calls = []
    monkeypatch.setattr(runner, "run", lambda *args: calls.append(args) or {"test_result": {}})
    assert runner.main([]) == 0
    assert calls[-1] == ("DiffuRec", "ml-100k", [], runner.DEMO_OVERRIDES) and "demo" in capsys.readouterr().out
    assert runner.main(["--model=DiffuRec", "--dataset=ml-100k"]) == 0
    assert calls[-1] == ("DiffuRec", "ml-100k", [], {}) and "demo" not in capsys.readouterr().out


def test_a_relative_data_path_becomes_absolute(data_root, in_tmp_cwd):
    """The comparison changes directory per run; the merged configuration must not depend on the cwd."""
    config, _ = build_config("DiffuRec", "ml-100k-small", config_dict={"data_path": os.path.relpath(data_root)})
    assert config["data_path"] == os.path.join(str(data_root), "ml-100k-small")


@pytest.mark.parametrize("model, default_sampler, sampler, steps, calls", [
    ("DiffuRec", "ddpm", "ddim", 1, 2), ("DiffuRecSys", "ddpm", "one_step", None, 1),
    ("PreferDiff", "ddim", "one_step", None, 1)])
def test_fast_variants_change_only_the_sampler(data_root, model, default_sampler, sampler, steps, calls):
    """``<Model>-fast`` (BENCHMARKS run 18) is the model's default with the cheap sampler: 2 or 1 calls per user."""
    settings = {**TINY, "data_path": data_root}
    default, _ = build_config(model, "ml-100k-tiny", config_dict=settings)
    fast, model_class = build_config(f"{model}-fast", "ml-100k-tiny", config_dict=settings)
    assert model_class.__name__ == model and fast["sampler"] == sampler
    assert (fast["ddim_steps"] if sampler == "ddim" else None) == steps
    changed = {key for key in default.final_config_dict
               if key not in ("sampler", "ddim_steps") and fast[key] != default[key]}
    assert default["sampler"] == default_sampler and not changed, changed
    dataset = create_dataset(fast)
    recommender = model_class(fast, data_preparation(fast, dataset)[0]._dataset)
    assert denoiser_calls(recommender.sampler, recommender.sampler_steps, recommender.diffusion.num_steps) == calls
