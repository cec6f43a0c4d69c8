"""One command line for every entry: the same forms of --config_files and of RecBole keys, no option matched by a
prefix, and the same message for anything unrecognised."""

import pytest

from recbole_diffusion import compare, recommend, runner, selfcheck, tune

FILE_FORMS = [["--config_files", "a.yaml", "b.yaml"], ["--config_files=a.yaml,b.yaml"],
              ["--config_files", "a.yaml b.yaml"], ["--config_files", "a.yaml,b.yaml"]]


def runner_files_and_overrides(argv):
    _, _, files, overrides = runner.parse_args(["--model=SASRec", *argv])
    return files, overrides


def compare_files_and_overrides(argv):
    parsed = compare.parse_args(["--models", "SASRec", "--dataset", "x", *argv])
    return parsed[4], parsed[5]


def tune_files_and_overrides(argv):
    _, files, overrides = tune.parse_args(["--model", "SASRec", *argv])
    return files, overrides


ENTRIES = [runner_files_and_overrides, compare_files_and_overrides, tune_files_and_overrides]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("files", FILE_FORMS)
def test_config_files_take_the_same_forms_everywhere(entry, files):
    assert entry(files)[0] == ["a.yaml", "b.yaml"]


@pytest.mark.parametrize("entry", ENTRIES)
def test_both_override_forms_work_everywhere(entry):
    assert entry(["--epochs=5", "--learning_rate", "0.01", "--eval_args={'mode': 'full'}"])[1] == {
        "epochs": "5", "learning_rate": "0.01", "eval_args": "{'mode': 'full'}"}


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_bare_resume_means_true_and_other_bare_keys_are_refused(entry, capsys):
    assert entry(["--resume", "--epochs", "3"])[1] == {"resume": "True", "epochs": "3"}
    with pytest.raises(SystemExit):
        entry(["--epochs"])
    assert "--epochs needs a value" in capsys.readouterr().err


def test_a_recbole_key_is_never_taken_for_an_option_it_begins():
    """``--seed=5`` once became ``--seeds 5`` (seeds 2020-2024) and ``--trial=3`` became ``--trials 3``."""
    assert compare.parse_args(["--models", "SASRec", "--dataset", "x", "--seed=5"])[2] == [5]
    assert compare.parse_args(["--models", "SASRec", "--dataset", "x", "--seed", "7"])[2] == [7]
    assert runner.parse_args(["--seed=5"])[3] == {"seed": "5"}
    assert tune.parse_args(["--seed=5"])[2] == {"seed": "5"}


@pytest.mark.parametrize("entry, argv, option", [
    (tune_files_and_overrides, ["--trial=3"], "--trials"),
    (compare_files_and_overrides, ["--model=SASRec"], "--models"),
    (tune_files_and_overrides, ["--prune", "none"], "--prune_startup_trials"),
])
def test_an_option_prefix_is_refused_with_the_option_named(entry, argv, option, capsys):
    with pytest.raises(SystemExit):
        entry(argv)
    err = capsys.readouterr().err
    assert "unrecognised argument" in err and option in err


def test_seed_and_seeds_together_are_refused(capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(["--models", "SASRec", "--dataset", "x", "--seed", "5", "--seeds", "3"])
    assert "--seed and --seeds" in capsys.readouterr().err


def test_a_seed_written_as_a_count_is_refused_and_a_list_of_one_seed_is_not(capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(["--models", "SASRec", "--dataset", "x", "--seeds", "2022"])
    assert "--seed 2022 (or --seeds 2022,)" in capsys.readouterr().err
    assert compare.parse_args(["--models", "SASRec", "--dataset", "x", "--seeds", "2022,"]).seeds == [2022]
    assert compare.parse_args(["--models", "SASRec", "--dataset", "x", "--seeds", "999"]).seeds[-1] == 3018


@pytest.mark.parametrize("parse", [
    lambda argv: runner.parse_args(argv),
    lambda argv: compare.parse_args(["--models", "SASRec", "--dataset", "x", *argv]),
    lambda argv: tune.parse_args(argv),
    lambda argv: recommend.parse_args(["--model_file", "m.pth", "--users", "1", *argv]),
    lambda argv: selfcheck.main(argv),
])
def test_anything_unrecognised_gets_the_same_message(parse, capsys):
    with pytest.raises(SystemExit):
        parse(["stray"])
    assert "error: unrecognised argument 'stray'" in capsys.readouterr().err


@pytest.mark.parametrize("parse", [
    lambda argv: recommend.parse_args(["--model_file", "m.pth", "--users", "1", *argv]),
    lambda argv: selfcheck.main(argv),
])
def test_entries_without_configuration_keys_refuse_them_the_same_way(parse, capsys):
    with pytest.raises(SystemExit):
        parse(["--epochs=5"])
    assert "error: unrecognised argument '--epochs=5'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--us", "1"])  # a prefix of recommend's --users, of nothing of the self-check's
    assert "error: unrecognised argument '--us'" in capsys.readouterr().err
