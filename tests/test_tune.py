"""The hyper-parameter search: .hyper parsing, outputs, reproduction, resume after a kill, failures, pruning."""

import csv
import json
import math
import os
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from recbole_diffusion import tune
from recbole_diffusion.config.configurator import known_config_keys, properties_file
from recbole_diffusion.quick_start.quick_start import run

from conftest import TINY

FIXED = {**TINY, "epochs": 2, "eval_step": 1, "stopping_step": 10, "diffusion_steps": 4, "eval_batch_size": 256}
SEARCH_OPTIONS = {"threads": 1, "prune_startup_trials": 1, "prune_warmup_epochs": 0}


def write_space(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def read_trials(directory):
    with open(os.path.join(directory, "trials.csv"), encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ----- .hyper files -------------------------------------------------------------------------------------------

def test_recbole_repository_hyper_file_parses_with_the_same_meaning(tmp_path):
    """The example of RecBole's repository (hyper.test): natural-log bounds, and list choices written as text."""
    path = write_space(tmp_path / "hyper.test", "learning_rate loguniform -8,0\n"
                                                "embedding_size choice [64,96,128]\n"
                                                "mlp_hidden_size choice ['[64,64,64]','[128,128]']\n")
    space = tune.read_space(path)
    lr = space["learning_rate"].distribution
    assert lr.log and math.isclose(lr.low, math.exp(-8)) and math.isclose(lr.high, 1.0)
    assert space["embedding_size"].distribution.choices == (64, 96, 128)
    assert space["mlp_hidden_size"].distribution.choices == ("[64,64,64]", "[128,128]")


def test_hyper_kinds_spaces_in_values_and_comments(tmp_path):
    path = write_space(tmp_path / "s.hyper", "# a comment line\n\n"
                                             "dropout uniform 0.1, 0.5\n"
                                             "hidden_size quniform 32,128,32\n"
                                             "lambda_uncertainty quniform 0.0,0.01,0.005\n"
                                             "mlp choice [[64, 64], [128]]\n")
    space = tune.read_space(path)
    assert (space["dropout"].distribution.low, space["dropout"].distribution.high) == (0.1, 0.5)
    hidden = space["hidden_size"].distribution
    assert isinstance(hidden, optuna.distributions.IntDistribution) and (hidden.low, hidden.high, hidden.step) == (
        32, 128, 32)
    assert isinstance(space["lambda_uncertainty"].distribution, optuna.distributions.FloatDistribution)
    mlp = space["mlp"]  # lists Optuna cannot store as choices travel as labels and come back as lists
    assert mlp.distribution.choices == ("[64, 64]", "[128]")
    assert tune.decoded_params({"mlp": "[64, 64]", "dropout": 0.2}, space) == {"mlp": [64, 64], "dropout": 0.2}


def test_quniform_takes_the_multiples_of_q_as_hyperopt_does(tmp_path):
    """hyperopt's quniform(a, b, q) is round(uniform(a, b) / q) * q: multiples of q, not a + k q."""
    space = tune.read_space(write_space(tmp_path / "q.hyper", "n quniform 1,10,4\nx quniform 0.05,0.42,0.1\n"))
    n, x = space["n"].distribution, space["x"].distribution
    assert (n.low, n.high, n.step) == (0, 8, 4)
    assert (x.low, x.high, x.step) == (0.0, 0.4, 0.1)
    trial = optuna.trial.FixedTrial({"n": 8, "x": 0.3})
    assert tune.suggest(trial, space) == {"n": 8, "x": 0.3}


@pytest.mark.parametrize("line, message", [
    ("lr normal 0,1", "unknown kind 'normal'"),
    ("lr uniform 1,0", "low < high"),
    ("lr uniform 0,x", "not a number"),
    ("lr quniform 0,10", "3 comma-separated"),
    ("size choice __import__('os').getcwd()", "not a Python literal list"),
    ("size choice []", "non-empty list"),
    ("size choice [1,1]", "repeat"),
    ("size choice", "expected 'key kind values'"),
])
def test_bad_hyper_lines_are_refused_with_file_and_line(tmp_path, line, message):
    path = write_space(tmp_path / "bad.hyper", f"# header\n{line}\n")
    with pytest.raises(ValueError, match=message) as error:
        tune.read_space(path)
    assert f"{path}:2" in str(error.value)


@pytest.mark.parametrize("model", ["DiffuRec", "DiffuRecSys", "DreamRec", "PreferDiff", "SeqDiffRec", "SASRec",
                                   "GRU4Rec", "BERT4Rec"])
def test_shipped_search_spaces_parse_and_name_keys_the_model_uses(model):
    space = tune.read_space(properties_file("hyper", f"{model}.hyper"))
    assert set(space) <= known_config_keys(model, "ml-100k")
    assert tune.default_space_file(f"{model}") == properties_file("hyper", f"{model}.hyper")


def test_a_model_without_a_shipped_space_is_told_to_pass_one():
    with pytest.raises(FileNotFoundError, match=r"no default search space for NARM .*SASRec.*--space FILE"):
        tune.default_space_file("NARM")


def test_bad_searches_are_refused_before_anything_is_written(data_root, tmp_path):
    space = write_space(tmp_path / "s.hyper", "learning_rate loguniform -7,-4\n")
    study = tmp_path / "study"
    common = dict(space_file=space, directory=str(study))
    overrides = {**FIXED, "data_path": data_root}
    with pytest.raises(ValueError, match="both fixed"):
        tune.prepare_search("DiffuRec", "ml-100k-tiny", [], {**overrides, "learning_rate": 0.01}, **common)
    typo = write_space(tmp_path / "typo.hyper", "learning_rat loguniform -7,-4\n")
    with pytest.raises(ValueError, match="learning_rat"):
        tune.prepare_search("DiffuRec", "ml-100k-tiny", [], overrides, space_file=typo, directory=str(study))
    with pytest.raises(ValueError, match="grid needs a space of choices"):
        tune.prepare_search("DiffuRec", "ml-100k-tiny", [], overrides, sampler="grid", **common)
    with pytest.raises(FileNotFoundError):
        tune.prepare_search("DiffuRec", "no-such-dataset", [], overrides, **common)
    assert not study.exists()


# ----- a search -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_search(data_root, tmp_path_factory):
    """A 3-trial DiffuRec search on the tiny slice starting from the defaults, its best two configurations
    confirmed with one more seed."""
    folder = tmp_path_factory.mktemp("search")
    space = write_space(folder / "space.hyper",
                        "learning_rate loguniform -7,-3\nemb_dropout_prob choice [0.1,0.3,0.5]\n")
    search = tune.prepare_search("DiffuRec", "ml-100k-tiny", [], {**FIXED, "data_path": data_root},
                                 space_file=space, directory=str(folder / "study"), trials=3, pruner="none",
                                 confirm_seeds=1, confirm_top=2, start_from_defaults=True, **SEARCH_OPTIONS)
    study = tune.run_search(search)
    return search, study


def test_a_search_writes_every_output(finished_search):
    search, study = finished_search
    for name in ("trials.csv", "best.yaml", "summary.md", "history.png", "confirm.csv", "study.db"):
        assert os.path.isfile(os.path.join(search.directory, name)), name
    rows = read_trials(search.directory)
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3
    for row, trial in zip(rows, study.trials):
        assert float(row["best_valid_ndcg@10"]) == pytest.approx(trial.value)
        assert float(row["test_ndcg@10"]) == pytest.approx(trial.user_attrs["test"]["ndcg@10"])
        assert row["epochs"] == "2" and float(row["seconds"]) > 0
    summary = open(os.path.join(search.directory, "summary.md"), encoding="utf-8").read()
    assert "--config_files=" + os.path.join(search.directory, "best.yaml") in summary
    assert "Confirmation with 1 other seeds" in summary
    with open(os.path.join(search.directory, "confirm.csv"), encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 2


def test_the_first_trial_runs_the_defaults_and_the_summary_compares_with_them(finished_search):
    search, study = finished_search
    assert study.trials[0].params == {"learning_rate": 0.001, "emb_dropout_prob": 0.3}  # DiffuRec.yaml's values
    assert study.trials[0].user_attrs["defaults"] is True
    summary = open(os.path.join(search.directory, "summary.md"), encoding="utf-8").read()
    assert f"Against the defaults (trial 0: learning_rate=0.001, emb_dropout_prob=0.3): validation ndcg@10 " \
           f"{study.trials[0].value:.4f}" in summary


def test_defaults_outside_the_space_are_refused(data_root, tmp_path):
    space = write_space(tmp_path / "s.hyper", "n_heads choice [2,3]\n")
    overrides = {key: value for key, value in FIXED.items() if key != "n_heads"}
    with pytest.raises(ValueError, match="n_heads's default 4 is outside the space"):
        tune.prepare_search("DiffuRec", "ml-100k-tiny", [], {**overrides, "data_path": data_root}, space_file=space,
                            directory=str(tmp_path / "study"), start_from_defaults=True)


def test_the_choice_ignores_test_metrics_and_follows_the_confirmation(finished_search):
    search, study = finished_search
    with open(os.path.join(search.directory, "confirm.csv"), encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    chosen = max(rows, key=lambda row: float(row["mean_valid_ndcg@10"]))
    header = open(os.path.join(search.directory, "best.yaml"), encoding="utf-8").readline()
    assert f"trial {chosen['trial']}," in header


def test_best_yaml_reproduces_the_chosen_trial(finished_search, in_tmp_cwd):
    search, study = finished_search
    path = os.path.join(search.directory, "best.yaml")
    header = open(path, encoding="utf-8").readline()
    number = int(header.split("trial ")[1].split(",")[0])
    settings = yaml.safe_load(open(path, encoding="utf-8"))
    assert settings["seed"] == search.seed and set(search.space) <= set(settings)
    result = run("DiffuRec", "ml-100k-tiny", config_file_list=[path], config_dict={"checkpoint_dir": str(in_tmp_cwd)})
    assert result["best_valid_score"] == pytest.approx(study.trials[number].value, abs=1e-12)
    assert result["test_result"] == pytest.approx(study.trials[number].user_attrs["test"], abs=1e-12)


def test_a_rerun_is_a_no_op_and_another_search_is_refused(finished_search, data_root, capsys):
    search, study = finished_search
    again = tune.run_search(search)
    assert len(again.trials) == 3
    assert "3 trial(s) finished" in capsys.readouterr().out
    other = search._replace(fixed={**search.fixed, "learning_rate": 0.5}, space={})
    with pytest.raises(ValueError, match=r"fixed learning_rate: '<absent>' then, 0.5 now"):
        tune.run_search(other)
    with tune.study_lock(search.directory):
        with pytest.raises(ValueError, match="another search is running"):
            tune.run_search(search)
    with pytest.raises(ValueError, match="the data files changed"):
        tune.run_search(search._replace(data_sha256="0" * 64))  # the same search on edited data


def test_a_study_made_before_the_data_fingerprint_continues():
    from recbole_diffusion.tune.study import identity_differences

    now = {"model": "SASRec", "dataset": "d", "metric": "ndcg@10", "maximize": True, "fixed": {}, "space": {},
           "data_sha256": "a" * 64}
    older = {key: value for key, value in now.items() if key != "data_sha256"}
    assert identity_differences(older, now) == []
    assert identity_differences({**now, "data_sha256": "b" * 64}, now) == [
        "the data files changed (their SHA-256 differs)"]


def test_a_failing_trial_is_recorded_and_the_search_goes_on(data_root, tmp_path):
    """SeqDiffRec, whose one-call sampler needs a schedule that reaches noise at T 4 (cosine)."""
    space = write_space(tmp_path / "s.hyper", "n_heads choice [2,3]\n")  # hidden 16 is not divisible by 3
    overrides = {key: value for key, value in FIXED.items() if key != "n_heads"}
    overrides.update(data_path=data_root, epochs=1, beta_schedule="cosine")
    search = tune.prepare_search("SeqDiffRec", "ml-100k-tiny", [], overrides,
                                 space_file=space, directory=str(tmp_path / "study"), trials=2, sampler="grid",
                                 pruner="none", **SEARCH_OPTIONS)
    tune.run_search(search)
    rows = {row["n_heads"]: row for row in read_trials(search.directory)}
    assert rows["3"]["state"] == "FAIL" and "divisible" in rows["3"]["error"]
    assert rows["2"]["state"] == "COMPLETE"
    assert "n_heads" in open(os.path.join(search.directory, "best.yaml"), encoding="utf-8").read()


def test_pruning_stops_a_trial_that_is_forced_to_be_bad(data_root, tmp_path):
    """Two trials that learn, then one whose learning rate leaves the model at its initialisation."""
    space = write_space(tmp_path / "s.hyper", "learning_rate loguniform -16,-3\n")
    sasrec = {key: value for key, value in FIXED.items() if key != "diffusion_steps"}
    search = tune.prepare_search("SASRec", "ml-100k-tiny", [], {**sasrec, "epochs": 3, "data_path": data_root},
                                 space_file=space, directory=str(tmp_path / "study"), trials=3,
                                 prune_startup_trials=2, prune_warmup_epochs=0, threads=1)
    os.makedirs(search.directory)
    study = tune.open_study(search)
    for rate in (0.02, 0.03, 2e-7):
        study.enqueue_trial({"learning_rate": rate})
    tune.run_search(search)
    states = [row["state"] for row in read_trials(search.directory)]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"]
    bad = optuna.load_study(study_name=tune.STUDY_NAME, storage=search.storage_url).trials[2]
    assert bad.user_attrs["epochs"] < 3 and len(bad.intermediate_values) == bad.user_attrs["epochs"]


def test_a_resumed_search_draws_new_configurations(data_root, tmp_path):
    """The sampler's random stream is not stored in the study: a resumed search moves it on instead of drawing
    the first part's configurations again (RandomSampler repeated trials 0-2 exactly)."""
    space = write_space(tmp_path / "s.hyper", "learning_rate loguniform -7,-3\nemb_dropout_prob uniform 0.1,0.5\n")
    search = tune.prepare_search("DiffuRec", "ml-100k-tiny", [], {**FIXED, "data_path": data_root}, space_file=space,
                                 directory=str(tmp_path / "study"), sampler="random")
    os.makedirs(search.directory)
    drawn = []
    for _ in range(2):  # the search, then the same search resumed
        study = tune.open_study(search)
        for _ in range(3):
            trial = study.ask()
            drawn.append(tuple(tune.suggest(trial, search.space).values()))
            study.tell(trial, 0.0)
    assert len(set(drawn)) == 6


def test_a_searched_key_named_like_a_run_column_keeps_its_own_column(tmp_path):
    """Searching ``epochs`` (a run column too): the trial's searched value and the epochs it ran both stay."""
    from types import SimpleNamespace

    from recbole_diffusion.tune.reports import write_trials_csv

    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"epochs": 40}, distributions={"epochs": optuna.distributions.IntDistribution(10, 50)}, value=0.5,
        user_attrs={"epochs": 7, "best_epoch": 3, "seconds": 1.5, "validation_curve": [[3, 0.5]]}))
    search = SimpleNamespace(metric="ndcg@10", maximize=True, space={"epochs": None})
    write_trials_csv(study, search, str(tmp_path / "trials.csv"))
    [row] = read_trials(str(tmp_path))
    assert (row["param_epochs"], row["epochs"], row["best_epoch"]) == ("40", "7", "3")


# ----- a killed search ---------------------------------------------------------------------------------------

def running(pid):
    """Whether ``pid`` is a live process (a zombie waiting to be reaped does not count)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_search_resumes_without_repeating_finished_trials(data_root, tmp_path):
    space = write_space(tmp_path / "s.hyper", "learning_rate loguniform -7,-3\n")
    study_dir = str(tmp_path / "study")
    cli = ["--model", "DiffuRec", "--dataset", "ml-100k-tiny", "--space", space, "--study", study_dir, "--trials",
           "2", "--pruner", "none", "--threads", "1", f"--data_path={data_root}"]
    cli += [f"--{key}={value}" for key, value in FIXED.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    search = subprocess.Popen([sys.executable, "-m", "recbole_diffusion.tune", *cli], env=env, cwd=str(tmp_path),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first_record = os.path.join(study_dir, "work", "trial-0", "record.json")
    second_log = os.path.join(study_dir, "work", "trial-1", "output.log")
    deadline = time.time() + 240
    while not os.path.isfile(second_log) and search.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert os.path.isfile(second_log), "the search never started its second trial"
    children = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(search.pid)], capture_output=True,
                                                   text=True).stdout.split()]
    assert children, "the trial runs in a process of its own"
    search.kill()  # SIGKILL: no handler runs; trial 1 stays "running" in the study
    search.wait()
    first_written = os.path.getmtime(first_record)
    deadline = time.time() + 4  # the trial itself would run on for longer (imports, data, training)
    while time.time() < deadline and any(map(running, children)):
        time.sleep(0.2)
    assert not any(map(running, children)), "a trial process outlived the search that started it"
    stranded = optuna.load_study(study_name=tune.STUDY_NAME, storage=f"sqlite:///{study_dir}/study.db")
    assert [t.state.name for t in stranded.trials] == ["COMPLETE", "RUNNING"]

    done = subprocess.run([sys.executable, "-m", "recbole_diffusion.tune", *cli], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 trial(s) finished, 1 interrupted one(s) to rerun" in done.stdout
    assert os.path.getmtime(first_record) == first_written  # trial 0 was not run again
    trials = optuna.load_study(study_name=tune.STUDY_NAME, storage=f"sqlite:///{study_dir}/study.db").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == trials[1].params
    assert len(done.stdout.strip().splitlines()) == 3  # the resume note, one line for the trial, the best
    assert json.loads(open(os.path.join(study_dir, "work", "trial-2", "record.json")).read())["state"] == "COMPLETE"


def test_cli_refuses_bad_options_with_status_2(capsys):
    assert tune.main(["--model", "DiffuRec", "--sampler", "bayes"]) == 2
    assert "--sampler 'bayes'" in capsys.readouterr().err



def test_a_study_path_that_is_a_file_is_refused(data_root, tmp_path, capsys):
    space = write_space(tmp_path / "s.hyper", "learning_rate loguniform -7,-4\n")
    taken = tmp_path / "taken"
    taken.write_text("a file\n", encoding="utf-8")
    argv = ["--model", "SASRec", "--dataset", "ml-100k-tiny", "--space", space, "--study", str(taken), "--trials", "1",
            "--data_path", data_root, *[f"--{key}={value}" for key, value in FIXED.items()]]
    assert tune.main(argv) == 2
    assert "is a file; a study is a folder" in capsys.readouterr().err and taken.read_text() == "a file\n"


def test_a_search_stopped_by_its_timeout_says_so(data_root, tmp_path, capsys):
    space = write_space(tmp_path / "s.hyper", "learning_rate loguniform -7,-4\n")
    search = tune.prepare_search("SASRec", "ml-100k-tiny", [], {**FIXED, "data_path": data_root}, space_file=space,
                                 directory=str(tmp_path / "study"), trials=3, timeout=0.01, pruner="none",
                                 **SEARCH_OPTIONS)
    tune.run_search(search)
    assert "holds 1 of 3 finished trials (--timeout stopped it" in capsys.readouterr().out


def test_a_trial_rerun_by_an_older_search_is_not_rerun_again():
    """A rerun recorded only by its ``retry_of`` (searches before Optuna's retry callback was used) counts as the
    rerun of its interrupted trial: resuming queues only interrupted trials that no trial reruns."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from recbole_diffusion.tune.study import recover_interrupted

    study = optuna.create_study()
    distributions = {"learning_rate": FloatDistribution(1e-4, 1e-2)}
    for number, (state, params, attrs) in enumerate([
            (optuna.trial.TrialState.FAIL, {"learning_rate": 1e-3}, {}),
            (optuna.trial.TrialState.PRUNED, {"learning_rate": 1e-3}, {"retry_of": 0}),
            (optuna.trial.TrialState.FAIL, {"learning_rate": 5e-3}, {})]):
        study.add_trial(create_trial(state=state, params=params, distributions=distributions, user_attrs=attrs,
                                     value=None if state != optuna.trial.TrialState.COMPLETE else 0.0))
    assert recover_interrupted(study) == 1
    waiting = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert [t.params for t in waiting] == [{"learning_rate": 5e-3}]
