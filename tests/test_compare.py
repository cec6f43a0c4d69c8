"""The comparison command: runs, files, table numbers, t-tests, failures and resuming after a kill."""

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from scipy import stats

from recbole_diffusion import PreferDiff
from recbole_diffusion.compare import METRICS, exact_test_metric, main, parse_args, prepare_comparison, run_comparison
from conftest import TINY, TINY_USERS

SEEDS = [2020, 2021]
DATASET = "ml-100k-tiny"  # the runs check the comparison's bookkeeping, not the models


def test_parse_args_accepts_both_override_forms_and_seed_lists():
    models, dataset, seeds, output, files, overrides, reference, isolate, threads, keep, configs = parse_args(
        ["--models", "SASRec,DiffuRec", "--dataset", "ml-1m", "--seeds", "3", "--epochs", "50",
         "--hidden_size=64", "--output", "out", "--reference", "DiffuRec", "--threads", "1", "--keep_checkpoints"])
    assert (models, dataset, seeds, output) == (["SASRec", "DiffuRec"], "ml-1m", [2020, 2021, 2022], "out")
    assert overrides == {"epochs": "50", "hidden_size": "64"} and reference == "DiffuRec" and isolate
    assert threads == 1 and parse_args(["--models", "Pop", "--dataset", "x"])[8] is None
    assert keep and not parse_args(["--models", "Pop", "--dataset", "x"])[9] and configs == {}
    assert parse_args(["--models", "Pop", "--dataset", "x", "--seeds", "7,11"])[2] == [7, 11]
    assert parse_args(["--models", "Pop", "--dataset", "x"])[3].startswith("comparison-")


def _overrides(data_root):
    settings = {**TINY, "data_path": data_root, "epochs": 2}
    return {key: str(value) for key, value in settings.items()}


def _cli(data_root, output):
    args = ["--models", "SASRec,DiffuRec,PreferDiff", "--dataset", DATASET, "--seeds", "2", "--output", output,
            "--threads", "1"]
    for key, value in _overrides(data_root).items():
        args += [f"--{key}", value]
    return args


def _cell(summary, title, model, metric):
    """The (mean, std, improvement, p) of one cell of summary.md."""
    section = summary.split(f"### {title}")[1].split("###")[0]
    row = next(line for line in section.splitlines() if line.startswith(f"| {model}"))
    cell = row.split("|")[2 + METRICS.index(metric)].strip()
    mean, std, *rest = re.findall(r"[-+]?\d+\.?\d*(?:e-?\d+)?", cell)
    return float(mean), float(std), rest


@pytest.fixture(scope="module")
def comparison(data_root, tmp_path_factory):
    """A comparison killed after its first finished run (each run in its own process), then resumed to the end
    with ``--in-process``: the resume logic is the same, and five runs need not each import torch and RecBole.
    PreferDiff fails in training there (its loss raises), as a run that fails at run time does."""
    output = str(tmp_path_factory.mktemp("comparison") / "out")
    process = subprocess.Popen([sys.executable, "-m", "recbole_diffusion.compare", *_cli(data_root, output)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = os.path.join(output, "runs", "SASRec-seed2020.json")
    deadline = time.monotonic() + 240
    while not os.path.exists(first) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert os.path.exists(first)
    first_written = os.stat(first).st_mtime_ns
    printed = io.StringIO()
    threads = torch.get_num_threads()
    def failing_loss(self, interaction):
        raise RuntimeError("simulated failure in training")

    try:
        with contextlib.redirect_stdout(printed), pytest.MonkeyPatch.context() as patch:
            patch.setattr(PreferDiff, "calculate_loss", failing_loss)
            code = main([*_cli(data_root, output), "--in-process"])
    finally:
        torch.set_num_threads(threads)  # --threads 1 applies to this process in-process
    return output, first_written, code, printed.getvalue()


def test_resumed_comparison_keeps_finished_runs_and_completes_the_rest(comparison):
    output, first_written, code, _ = comparison
    assert os.stat(os.path.join(output, "runs", "SASRec-seed2020.json")).st_mtime_ns == first_written
    names = sorted(os.listdir(os.path.join(output, "runs")))
    assert names == sorted(f"{m}-seed{s}.json" for m in ("SASRec", "DiffuRec", "PreferDiff") for s in SEEDS)
    for name in ("runs.csv", "summary.md"):
        assert os.path.getsize(os.path.join(output, name)) > 0
    for name in ("quality_vs_cost.png", "validation_curves.png"):
        with open(os.path.join(output, name), "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert code == 1  # PreferDiff failed


def _records(output):
    records = {}
    for name in os.listdir(os.path.join(output, "runs")):
        with open(os.path.join(output, "runs", name), encoding="utf-8") as handle:
            record = json.load(handle)
        records[(record["model"], record["seed"])] = record
    return records


def test_progress_prints_one_line_per_finished_run(comparison):
    output, _, _, printed = comparison
    lines = printed.splitlines()
    assert "resuming: 1 finished run(s) kept, 5 to go" in lines
    run_lines = [line for line in lines if line.startswith("[")]
    assert [line.split(":")[0] for line in run_lines] == [
        "[1/5] SASRec seed 2021", "[2/5] DiffuRec seed 2020", "[3/5] DiffuRec seed 2021",
        "[4/5] PreferDiff seed 2020", "[5/5] PreferDiff seed 2021"]
    records = _records(output)
    for line in run_lines[:3]:
        model, _, seed = line.split(":")[0].split()[1:]
        record = records[(model, int(seed))]
        assert line.endswith(f": ndcg@10 {record['test']['ndcg@10']:.4f}, {record['epochs']} epochs in "
                             f"{record['wall_seconds']:.1f}s")
    assert all(": FAILED: " in line for line in run_lines[3:])
    assert lines[-1].startswith("4 run(s) finished, 2 failed; summary: ")


def test_a_failing_model_is_recorded_and_the_others_finish(comparison):
    output, _, _, _ = comparison
    records = _records(output)
    for seed in SEEDS:
        assert records[("PreferDiff", seed)]["status"] == "failed"
        assert "simulated failure in training" in records[("PreferDiff", seed)]["error"]
        assert records[("SASRec", seed)]["status"] == records[("DiffuRec", seed)]["status"] == "ok"
    with open(os.path.join(output, "summary.md"), encoding="utf-8") as handle:
        failed = handle.read().split("### Failed runs")[1]
    assert "PreferDiff seed 2020" in failed and "PreferDiff seed 2021" in failed


def test_run_records_hold_metrics_costs_and_consistent_groups(comparison):
    output, _, _, _ = comparison
    for (model, seed), record in _records(output).items():
        if record["status"] != "ok":
            continue
        assert set(record["test"]) == set(METRICS) and record["epochs"] >= 1
        assert record["train_seconds"] > 0 and record["seconds_per_1000_users"] > 0 and record["peak_memory_mb"] > 0
        assert record["config"]["seed"] == seed and record["validation_curve"] and record["torch_threads"] == 1
        groups = record["groups"]
        for metric in METRICS:  # per-user ranks reproduce RecBole's own metrics (rounded to 4 places)
            assert groups["all users"][metric] == pytest.approx(record["test"][metric], abs=6e-5)
        head, tail = groups["head items"], groups["long-tail items"]
        assert head["users"] + tail["users"] == groups["all users"]["users"]
        assert sum(groups[f"length Q{q}"]["users"] for q in range(1, 6)) == groups["all users"]["users"]
        spans = [groups[f"length Q{q}"]["lengths"] for q in range(1, 6) if groups[f"length Q{q}"]["users"]]
        assert all(low <= high for low, high in spans)
        assert all(spans[i][1] < spans[i + 1][0] for i in range(len(spans) - 1))  # ordered, ties never split
        mixed = (head["users"] * head["hit@10"] + tail["users"] * tail["hit@10"]) / groups["all users"]["users"]
        assert mixed == pytest.approx(groups["all users"]["hit@10"])


def test_summary_and_csv_agree_with_the_run_records_and_scipy(comparison):
    output, _, _, _ = comparison
    records = _records(output)
    with open(os.path.join(output, "summary.md"), encoding="utf-8") as handle:
        summary = handle.read()
    for metric in METRICS:
        ours = [exact_test_metric(records[("DiffuRec", s)], metric) for s in SEEDS]
        reference = [exact_test_metric(records[("SASRec", s)], metric) for s in SEEDS]
        mean, std, rest = _cell(summary, "All test users", "DiffuRec", metric)
        assert mean == pytest.approx(np.mean(ours), abs=1e-4)
        assert std == pytest.approx(np.std(ours, ddof=1), abs=1e-4)
        ref_mean, _, _ = _cell(summary, "All test users", "SASRec (reference)", metric)
        assert ref_mean == pytest.approx(np.mean(reference), abs=1e-4)
        if np.mean(reference) > 0:
            assert float(rest[0]) == pytest.approx((np.mean(ours) / np.mean(reference) - 1) * 100, abs=0.06)
        expected = stats.ttest_rel(ours, reference).pvalue if np.any(np.subtract(ours, reference)) else 1.0
        assert float(rest[1]) == pytest.approx(expected, rel=1e-2, abs=1e-12)
    q1 = records[("SASRec", SEEDS[0])]["groups"]["length Q1"]
    assert f"### length Q1 ({q1['lengths'][0]}-{q1['lengths'][1]} interactions, {q1['users']} users)" in summary
    with open(os.path.join(output, "runs.csv"), encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    for row in rows:
        if row["status"] == "ok":
            record = records[(row["model"], int(row["seed"]))]
            assert float(row["ndcg@10"]) == pytest.approx(record["test"]["ndcg@10"])
            assert float(row["seconds_per_1000_users"]) == pytest.approx(record["seconds_per_1000_users"])


def test_in_process_mode_resumes_without_rerunning(comparison, data_root, monkeypatch):
    """A second call with the same settings finds every run finished and trains nothing."""
    import recbole_diffusion.compare as compare

    output, _, _, _ = comparison
    ok = {k for k, r in _records(output).items() if r["status"] == "ok"}
    monkeypatch.setattr(compare, "_trial", lambda *args: pytest.fail(f"re-ran {args[:3]}"))
    models = sorted({m for m, _ in ok})
    records = run_comparison(models, DATASET, SEEDS, output, overrides=_overrides(data_root), isolate=False)
    assert {(r["model"], r["seed"]) for r in records} == ok


def test_a_sampled_ranking_records_each_test_user_once(data_root, tmp_path):
    """Under uni10 RecBole's batch holds a row per (user, candidate): the per-user ranks (groups, paired tests,
    seconds per 1,000 users) must still name each test user once, as a full ranking does."""
    overrides = {**_overrides(data_root), "epochs": "1"}
    sampled = {**overrides, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni10",
                                          "group_by": "user"}}
    full, = run_comparison(["SASRec"], DATASET, [2020], str(tmp_path / "full"), overrides=overrides, isolate=False)
    uni, = run_comparison(["SASRec"], DATASET, [2020], str(tmp_path / "uni10"), overrides=sampled, isolate=False)
    assert uni["status"] == "ok" and "groups_note" not in uni
    assert uni["test_users"] == full["test_users"] > 50
    assert set(uni["groups"]) == set(full["groups"])
    # from the per-user ranks, as RecBole computes it (4 digits)
    assert uni["groups"]["all users"]["ndcg@10"] == pytest.approx(uni["test"]["ndcg@10"], abs=1e-4)


def test_a_variant_s_runs_are_recorded_under_its_name_and_resume(data_root, tmp_path, monkeypatch):
    """A variant (``DiffuRec-smallinit``) trains as its class, but its records, its resume and its summary row
    go by the name asked for: keyed by the class, every resumed comparison would train it again."""
    import recbole_diffusion.compare as compare

    output = str(tmp_path / "variant")
    overrides = {**_overrides(data_root), "epochs": "1"}
    records = run_comparison(["DiffuRec-smallinit"], DATASET, [2020], output, overrides=overrides, isolate=False)
    assert [(r["model"], r["model_class"], r["status"]) for r in records] == [("DiffuRec-smallinit", "DiffuRec", "ok")]
    monkeypatch.setattr(compare, "_trial", lambda *args: pytest.fail(f"re-ran {args[:3]}"))
    assert run_comparison(["DiffuRec-smallinit"], DATASET, [2020], output, overrides=overrides, isolate=False)
    with open(os.path.join(output, "summary.md"), encoding="utf-8") as handle:
        assert "| DiffuRec-smallinit |" in handle.read()


def test_a_model_config_applies_to_its_model_only_and_the_command_line_wins(data_root, tmp_path, capsys):
    """--model_config SASRec=best.yaml: the file reaches SASRec's runs (its eval_step), not GRU4Rec's; a key also on
    the command line (epochs) takes the command line's value; each record names its file and the file's hash."""
    best = tmp_path / "best.yaml"
    best.write_text("eval_step: 2\nepochs: 1\n", encoding="utf-8")
    output = str(tmp_path / "tuned")
    argv = ["--models", "SASRec,GRU4Rec", "--dataset", DATASET, "--seeds", "1", "--output", output, "--in_process",
            "--model_config", f"SASRec={best}"]
    for key, value in {**_overrides(data_root), "epochs": "2"}.items():
        argv += [f"--{key}", value]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    records = _records(output)
    sasrec, gru4rec = records[("SASRec", 2020)], records[("GRU4Rec", 2020)]
    assert sasrec["epochs"] == gru4rec["epochs"] == 2
    assert len(sasrec["validation_curve"]) == 1 and len(gru4rec["validation_curve"]) == 2
    assert sasrec["model_config"] == str(best) and gru4rec["model_config"] is None
    assert sasrec["settings"]["model_config_sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    with open(os.path.join(output, "summary.md"), encoding="utf-8") as handle:
        assert f"SASRec: `{best}`" in handle.read()
    import recbole_diffusion.compare as compare

    overrides = {**_overrides(data_root), "epochs": "2"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compare, "_trial", lambda *args: pytest.fail(f"re-ran {args[:3]}"))
        # GRU4Rec alone, later: SASRec's own file is no reason to refuse the folder
        assert run_comparison(["GRU4Rec"], DATASET, [2020], output, overrides=overrides, isolate=False)
        best.write_text("eval_step: 1\nepochs: 1\n", encoding="utf-8")  # the search ran on: another setting
        with pytest.raises(ValueError, match="other settings"):
            run_comparison(["SASRec"], DATASET, [2020], output, overrides=overrides, isolate=False,
                           model_configs={"SASRec": str(best)})


def test_a_bad_configuration_is_refused_before_anything_is_written(data_root, tmp_path, capsys):
    """A key every run would refuse (one model's or all models') ends the command at once, exit status 2."""
    output = tmp_path / "never"
    argv = ["--models", "SASRec,PreferDiff", "--dataset", DATASET, "--output", str(output), "--in_process",
            "--data_path", data_root, "--neg_samples", "10000"]
    assert main(argv) == 2
    assert "neg_samples=10000" in capsys.readouterr().err and not output.exists()


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "no run to make"),
    (["--models", "SASRec,SASRec"], "SASRec is listed twice"),
    (["--reference", "BERT4Rec"], "--reference BERT4Rec: not among --models"),
    (["--output", __file__], "is a file"),
    (["--seeds", "x"], "a count (e.g. 3) or a comma-separated list"),
    (["--seeds", "1,1"], "seed 1 is listed twice"),
    (["--model_config", "Pop=a.yaml"], "'Pop' is not among --models"),
    (["--model_config", "SASRec"], "write MODEL=FILE"),
    (["--model_config", "SASRec=a.yaml,SASRec=b.yaml"], "given two files"),
])
def test_a_bad_model_config_is_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--models", "SASRec,GRU4Rec", "--dataset", "x", *argv])
    assert message in capsys.readouterr().err


def test_model_configs_are_read_from_repeated_or_comma_separated_options():
    parsed = parse_args(["--models", "SASRec,GRU4Rec,BPR", "--dataset", "x", "--model_config", "SASRec=a.yaml",
                         "--model_config", "GRU4Rec=b.yaml,BPR=c.yaml"])
    assert parsed.model_configs == {"SASRec": "a.yaml", "GRU4Rec": "b.yaml", "BPR": "c.yaml"}


def test_a_folder_of_runs_with_other_settings_is_refused(comparison, data_root, monkeypatch):
    """Resuming into a folder made with other epochs (or data, or files) would mix runs in one table."""
    import recbole_diffusion.compare as compare

    output, _, _, _ = comparison
    monkeypatch.setattr(compare, "_trial", lambda *args: pytest.fail("trained despite the mismatch"))
    with pytest.raises(ValueError, match="other settings.*epochs"):
        run_comparison(["SASRec"], DATASET, SEEDS, output, overrides={**_overrides(data_root), "epochs": "3"})


def test_tables_use_the_unrounded_metric_of_the_per_user_ranks():
    rounded = {"status": "ok", "test": {"ndcg@10": 0.0007}}
    assert exact_test_metric(rounded, "ndcg@10") == 0.0007  # a record without groups: RecBole's value
    assert exact_test_metric({**rounded, "groups": {"all users": {"ndcg@10": 0.000651}}}, "ndcg@10") == 0.000651


def test_relative_improvement_uses_only_the_seeds_both_models_share():
    from recbole_diffusion.compare import comparison_table

    def record(model, seed, value):
        return {"model": model, "seed": seed, "status": "ok", "test": {m: value for m in METRICS}}

    records = [record("SASRec", 1, 0.10), record("SASRec", 2, 0.10), record("SASRec", 3, 0.40),
               record("DiffuRec", 1, 0.11), record("DiffuRec", 2, 0.12)]
    table = comparison_table(records, ["SASRec", "DiffuRec"], "SASRec", lambda r, m: r["test"][m], "t")
    row = next(line for line in table.splitlines() if line.startswith("| DiffuRec"))
    # seeds 1 and 2: (0.115 - 0.10) / 0.10 = +15 %; against all three SASRec seeds it would read -42.5 %
    assert "(+15.0%, p=" in row


def test_held_out_items_get_their_own_group_and_table(data_root, tmp_path):
    output = str(tmp_path / "heldout")
    overrides = {**_overrides(data_root), "epochs": "1", "holdout_items_ratio": "0.5"}
    records = run_comparison(["SASRec", "GRU4Rec"], DATASET, [2020, 2021], output, overrides=overrides,
                             isolate=False)
    for record in records:
        group = record["groups"]["held-out items"]
        assert 0 < group["users"] < record["test_users"] and set(METRICS) <= set(group)
    counts = sorted({record["groups"]["held-out items"]["users"] for record in records})
    assert len(counts) == 2  # each seed draws its own items, so the group's users differ
    with open(os.path.join(output, "summary.md"), encoding="utf-8") as handle:
        assert f"held-out items ({counts[0]}-{counts[1]} users, by seed)" in handle.read()


def test_several_targets_per_user_report_recboles_metrics_and_say_why(data_root, tmp_path):
    """A ratio split gives each user several test targets: the per-user metrics (one target each) would count
    targets as users; the tables then use RecBole's values, and the summary says so."""
    output = str(tmp_path / "ratio")
    overrides = {**_overrides(data_root), "epochs": "1", "eval_args": "{'split': {'RS': [0.8, 0.1, 0.1]}, "
                 "'order': 'RO', 'group_by': 'user', 'mode': 'full'}"}
    record, = run_comparison(["Pop"], DATASET, [2020], output, overrides=overrides, isolate=False)
    assert record["groups"] == {} and "test targets of" in record["groups_note"]
    assert exact_test_metric(record, "hit@10") == record["test"]["hit@10"]
    targets, users = (int(word) for word in record["groups_note"].split()[0:5:4])  # "N test targets of M users"
    assert users == record["test_users"] <= TINY_USERS < targets  # users counted, not targets
    with open(os.path.join(output, "summary.md"), encoding="utf-8") as handle:
        summary = handle.read()
    assert "Note: Pop seed 2020:" in summary and f"{record['test']['hit@10']:.4f}" in summary


def test_another_model_joining_a_folder_after_the_data_changed_is_refused(data_root, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(os.path.join(data_root, DATASET), data / DATASET)
    output = str(tmp_path / "runs")
    overrides = {**_overrides(str(data)), "epochs": "1"}
    run_comparison(["Pop"], DATASET, [2020], output, overrides=overrides, isolate=False)
    inter = data / DATASET / f"{DATASET}.inter"
    inter.write_text("".join(inter.read_text(encoding="utf-8").splitlines(keepends=True)[:-5]), encoding="utf-8")
    with pytest.raises(ValueError, match="other settings"):
        run_comparison(["SASRec"], DATASET, [2020], output, overrides=overrides, isolate=False)


def test_a_resumed_comparison_refuses_changed_data_or_config_files_and_keeps_older_records(data_root, tmp_path,
                                                                                          monkeypatch):
    """Settings record the data files' and config files' content: a run on another version of either is not
    mixed into the table. A record written before those fingerprints existed is compared on what it has."""
    import shutil

    import recbole_diffusion.compare as compare

    data = tmp_path / "data"
    shutil.copytree(os.path.join(data_root, DATASET), data / DATASET)
    shared = tmp_path / "shared.yaml"
    shared.write_text("learning_rate: 0.001\n", encoding="utf-8")
    output = str(tmp_path / "runs")
    overrides = {**_overrides(str(data)), "epochs": "1"}
    record, = run_comparison(["Pop"], DATASET, [2020], output, [str(shared)], overrides, isolate=False)
    assert len(record["settings"]["data_sha256"]) == 64 and len(record["settings"]["config_files_sha256"]) == 1
    monkeypatch.setattr(compare, "_trial", lambda *args: pytest.fail(f"re-ran {args[:3]}"))
    assert run_comparison(["Pop"], DATASET, [2020], output, [str(shared)], overrides, isolate=False)  # unchanged

    shared.write_text("learning_rate: 0.01\n", encoding="utf-8")
    with pytest.raises(ValueError, match="other settings"):
        run_comparison(["Pop"], DATASET, [2020], output, [str(shared)], overrides, isolate=False)
    shared.write_text("learning_rate: 0.001\n", encoding="utf-8")
    inter = data / DATASET / f"{DATASET}.inter"
    kept = inter.read_text(encoding="utf-8").splitlines(keepends=True)
    inter.write_text("".join(kept[:-5]), encoding="utf-8")  # five interactions fewer
    with pytest.raises(ValueError, match="other settings"):
        run_comparison(["Pop"], DATASET, [2020], output, [str(shared)], overrides, isolate=False)

    path = os.path.join(output, "runs", "Pop-seed2020.json")
    older = json.load(open(path, encoding="utf-8"))
    for key in compare.SETTINGS_ADDED_LATER:
        del older["settings"][key]
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(older, handle)
    assert run_comparison(["Pop"], DATASET, [2020], output, [str(shared)], overrides, isolate=False)


def test_processes_sharing_a_folder_never_run_one_run_twice(comparison, data_root, tmp_path, monkeypatch, capsys):
    """A run planned here but claimed by another process, or finished by one since the plan, is skipped (each
    with one line saying so) and its record kept; one finished with other settings is refused."""
    import fcntl

    import recbole_diffusion.compare as compare

    output = str(tmp_path / "shared")
    shutil.copytree(comparison[0], output)
    runs = os.path.join(output, "runs")
    for name in ("SASRec-seed2020.json", "SASRec-seed2021.json"):
        os.rename(os.path.join(runs, name), os.path.join(tmp_path, name))  # not finished when the plan is made
    planned = prepare_comparison(["SASRec"], DATASET, SEEDS, output, overrides=_overrides(data_root))
    assert planned.todo == [("SASRec", 2020), ("SASRec", 2021)]
    os.rename(os.path.join(tmp_path, "SASRec-seed2020.json"), os.path.join(runs, "SASRec-seed2020.json"))
    monkeypatch.setattr(compare, "_trial", lambda *args: pytest.fail(f"re-ran {args[:3]}"))
    with open(os.path.join(output, "work", "SASRec-seed2021", ".claim"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another live process holds it
        records = run_comparison(["SASRec"], DATASET, SEEDS, output, overrides=_overrides(data_root),
                                 isolate=False, prepared=planned)
    printed = capsys.readouterr().out
    assert "SASRec seed 2020: skipped, another process finished it" in printed
    assert "SASRec seed 2021: skipped, another process is running it" in printed
    assert [(r["model"], r["seed"]) for r in records] == [("SASRec", 2020)]
    assert not os.path.exists(os.path.join(runs, "SASRec-seed2021.json"))
    with open(os.path.join(tmp_path, "SASRec-seed2021.json"), encoding="utf-8") as handle:
        other = json.load(handle)
    other["settings"] = {**other["settings"], "overrides": {**other["settings"]["overrides"], "epochs": "3"}}
    with open(os.path.join(runs, "SASRec-seed2021.json"), "w", encoding="utf-8") as handle:
        json.dump(other, handle)
    with pytest.raises(ValueError, match="finished by another process with other settings"):
        run_comparison(["SASRec"], DATASET, SEEDS, output, overrides=_overrides(data_root), isolate=False,
                       prepared=planned)
