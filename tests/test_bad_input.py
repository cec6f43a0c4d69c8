"""Bad input is refused with one clear message before anything is written, or runs with a counted warning.

Every case writes a tiny dataset or config into ``tmp_path`` and runs the command line in-process from there:
a refusal exits with status 2, prints one ``error:`` line naming the file and line (or the key), and leaves
no ``log``, ``saved`` or ``log_tensorboard`` folder behind.
"""

import logging
import os
import time

import pytest
import torch

from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import run
from recbole_diffusion.runner import main

NAME = "tiny"
HEADER = "user_id:token\titem_id:token\ttimestamp:float"
TINY = ["--epochs=1", "--hidden_size=8", "--inner_size=16", "--n_layers=1", "--n_heads=1", "--MAX_ITEM_LIST_LENGTH=5",
        "--train_batch_size=16", "--eval_batch_size=64", "--show_progress=False", "--state=WARNING"]
WRITTEN = ("log", "saved", "log_tensorboard")


def rows(users=8, length=6, items=30):
    """``length`` interactions per user over ``items`` items (at least 20, the largest top-k), times 1, 2, ..."""
    return [f"{user}\t{(user * 7 + position) % items + 1}\t{position}"
            for user in range(1, users + 1) for position in range(1, length + 1)]


def lines(*parts):
    return "\n".join(parts) + "\n"


def write_inter(folder, content, name=NAME):
    """``content`` (text or bytes) as ``folder/data/name/name.inter``; returns the data path."""
    target = folder / "data" / name
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.inter"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(folder / "data")


def arguments(data_path, *extra, model="SASRec", name=NAME):
    return [f"--model={model}", f"--dataset={name}", f"--data_path={data_path}", *TINY, *extra]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(workdir, capsys, argv):
    """Run ``argv``; assert exit status 2, one ``error:`` line, quick, nothing written. Returns the message."""
    start = time.monotonic()
    code = main(argv)
    seconds = time.monotonic() - start
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2, errors
    assert len(errors) == 1, errors
    assert seconds < 20
    assert not [folder for folder in WRITTEN if (workdir / folder).exists()]
    return errors[0]


def assert_mentions(message, *fragments):
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# --- the interaction file, checked line by line before RecBole reads it -----------------------------------------

FILE_CASES = {
    "empty": ("", ["tiny.inter", "the file is empty", "header"]),
    "header only": (lines(HEADER), ["tiny.inter", "header but no interactions"]),
    "header only, blank lines": (lines(HEADER, "", ""), ["tiny.inter", "header but no interactions"]),
    "header without types": (lines("user_id\titem_id\ttimestamp", *rows()),
                             ["tiny.inter:1:", "'user_id'", "name:type"]),
    "unknown type": (lines("user_id:token\titem_id:token\ttimestamp:date", *rows()),
                     ["tiny.inter:1:", "type 'date'", "token, token_seq, float, float_seq"]),
    "commas instead of tabs": (lines(HEADER.replace("\t", ","), *[row.replace("\t", ",") for row in rows()]),
                               ["tiny.inter:1:", "separated by ','", "field_separator"]),
    "commas in a tab file": (lines(HEADER, *rows()[:2], "1,5,3", *rows()[3:]),
                             ["tiny.inter:4:", "the line has 1 field(s), the header 3", "separated by ','"]),
    "a first data line longer than the header": (lines(HEADER, "1\t2\t3\t", *rows()),
                                                ["tiny.inter:2:", "first data line has 4 fields", "row index"]),
    "a quoted first data line longer than the header": (lines(HEADER, '1\t"2"\t3\t7', *rows()),
                                                       ["tiny.inter:2:", "first data line has 4 fields"]),
    "a row with a field missing": (lines(HEADER, "1\t2", *rows()), ["tiny.inter:2:", "2 field(s)"]),
    "non-numeric timestamp": (lines(HEADER, *rows()[:4], "1\t7\tabc", *rows()[5:]),
                              ["tiny.inter:6:", "timestamp 'abc' is not a number"]),
    "date as timestamp": (lines(HEADER, *rows()[:4], "1\t7\t2020-01-31", *rows()[5:]),
                          ["tiny.inter:6:", "'2020-01-31' is not a number", "Unix seconds"]),
    "NaN timestamps": (lines(HEADER, *rows()[:6], "2\t3\tnan", *rows()[7:12], "3\t4\tNaN", *rows()[13:]),
                       ["tiny.inter:8:", "timestamp is missing (2 lines like it: 8, 14)", "column mean"]),
    "empty timestamp": (lines(HEADER, *rows()[:6], "2\t3\t", *rows()[7:]), ["tiny.inter:8:", "timestamp is missing"]),
    "infinite timestamp": (lines(HEADER, *rows()[:2], "1\t4\tinf", *rows()[3:]),
                           ["tiny.inter:4:", "timestamp inf is not finite", "test target"]),
    "missing item id": (lines(HEADER, *rows()[:9], "2\tNA\t4", *rows()[10:]),
                        ["tiny.inter:11:", "item_id is missing", "'NA'"]),
    "exact duplicate rows": (lines(HEADER, *rows()[:6], rows()[5], *rows()[6:]),
                             ["tiny.inter:8:", "duplicate of line 7", "drop_exact_duplicates: True",
                              "rm_dup_inter"]),
    "byte order mark": ("\ufeff" + lines(HEADER, *rows()), ["tiny.inter:1:", "byte order mark"]),
    "no user_id column": (lines("uid:token\titem_id:token\ttimestamp:float", *rows()),
                          ["USER_ID_FIELD='user_id'", "tiny.inter has no such column", "'uid'"]),
    "no timestamp column": (lines("user_id:token\titem_id:token", *[row.rsplit("\t", 1)[0] for row in rows()]),
                            ["TIME_FIELD='timestamp'", "tiny.inter has no such column"]),
    "timestamp typed token": (lines("user_id:token\titem_id:token\ttimestamp:token", *rows()),
                              ["tiny.inter:1:", "timestamp:float"]),
    "user id typed float": (lines("user_id:float\titem_id:token\ttimestamp:float", *rows()),
                            ["tiny.inter:1:", "user_id:token"]),
    "a field over the csv size limit": (lines(HEADER, *rows()[:2], "1\t" + "9" * 200_000 + "\t3", *rows()[3:]),
                                        ["tiny.inter:4:", "field larger than field limit"]),
    "an unclosed quote": (lines(HEADER, *rows()[:2], '1\t"9\t3', *rows()[3:]), ["tiny.inter:4:", "quote"]),
    "a quote spanning lines": (lines(HEADER, *rows()[:2], '1\t"9\t3', '2"\t4', *rows()[5:]),
                               ["tiny.inter:4:", "runs on to line 5"]),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_a_broken_interaction_file_is_refused_naming_the_line(case, workdir, capsys):
    content, fragments = FILE_CASES[case]
    assert_mentions(refused(workdir, capsys, arguments(write_inter(workdir, content))), *fragments)


def test_non_utf8_bytes_are_refused_with_line_and_offset(workdir, capsys):
    content = lines(HEADER, *rows()[:2]).encode() + "1\tcaf\u00e9\t3\n".encode("latin-1")
    message = refused(workdir, capsys, arguments(write_inter(workdir, content)))
    assert_mentions(message, "tiny.inter:4:", "byte 0xe9", f"byte offset {len(content) - 4}", "utf-8", "encoding")


def test_a_directory_where_the_interaction_file_belongs_is_refused(workdir, capsys):
    (workdir / "data" / NAME / f"{NAME}.inter").mkdir(parents=True)
    message = refused(workdir, capsys, arguments(str(workdir / "data")))
    assert_mentions(message, "tiny.inter is a directory")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_interaction_file_is_refused(workdir, capsys):
    data_path = write_inter(workdir, lines(HEADER, *rows()))
    path = workdir / "data" / NAME / f"{NAME}.inter"
    path.chmod(0)
    try:
        assert_mentions(refused(workdir, capsys, arguments(data_path)), "tiny.inter", "permission denied")
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("last_line", ['9\t"item 9"\t1', "9\t5\t1"], ids=["quoted token", "plain"])
def test_crlf_blank_lines_and_quoted_tokens_pass_the_checks(last_line, workdir):
    from recbole_diffusion.data.checks import check_interaction_files
    from recbole_diffusion.config.configurator import build_config

    content = lines(HEADER, *rows(), "", last_line).replace("\n", "\r\n")
    config, _ = build_config("SASRec", NAME, config_dict={"data_path": write_inter(workdir, content)})
    assert check_interaction_files(config)[:2] == (49, 9)


@pytest.mark.parametrize("quoted", [False, True], ids=["fast reader", "row-by-row reader"])
def test_rows_with_extra_fields_run_as_recbole_reads_them_with_one_counted_warning(quoted, workdir, caplog):
    """RecBole (pandas with usecols) reads the header's columns of a longer row; RecBole's own test dataset ends
    with one. Lines of whitespace alone are skipped by pandas like blank ones."""
    last = '9\t"item 9"\t1' if quoted else "9\t5\t1"
    content = lines(HEADER, *rows()[:3], "1\t9\t4\t5", "   ", *rows()[4:10], "2\t5\t6\t\t", " \r", *rows()[10:], last)
    data_path = write_inter(workdir, content)
    with caplog.at_level(logging.WARNING):
        assert main(arguments(data_path)) == 0
    warnings = [record.getMessage() for record in caplog.records if "more fields than the header" in record.getMessage()]
    assert len(warnings) == 1, warnings
    assert_mentions(warnings[0], "tiny.inter:5: 2 line(s) have more fields than the header's 3 (the first has 4)",
                    "RecBole reads the header's columns")
    assert not [record for record in caplog.records if "removed" in record.getMessage()]  # every row was read


def test_a_read_that_permissions_deny_is_refused_also_as_root(workdir, capsys, monkeypatch):
    from recbole_diffusion.utils import files

    def denied(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    data_path = write_inter(workdir, lines(HEADER, *rows()))
    monkeypatch.setattr(files, "open", denied, raising=False)
    assert_mentions(refused(workdir, capsys, arguments(data_path)), "tiny.inter cannot be read (permission denied)")
    monkeypatch.undo()
    config = workdir / "settings.yaml"
    config.write_text("epochs: 1\n", encoding="utf-8")
    monkeypatch.setattr(files, "open", denied, raising=False)
    message = refused(workdir, capsys, arguments(data_path, f"--config_files={config}"))
    assert_mentions(message, "settings.yaml", "permission denied")


def test_the_python_api_raises_the_same_message(workdir):
    data_path = write_inter(workdir, lines(HEADER, *rows()[:2], "1\t4\tinf", *rows()[3:]))
    with pytest.raises(ValueError, match=r"tiny\.inter:4: timestamp inf is not finite"):
        run("SASRec", NAME, config_dict={"data_path": data_path, "epochs": 1})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run("SASRec", NAME, config_file_list=[str(workdir / "missing.yaml")], config_dict={"data_path": data_path})
    assert not [folder for folder in WRITTEN if (workdir / folder).exists()]


# --- the loaded dataset and its leave-one-out split -------------------------------------------------------------

def test_every_user_too_short_for_a_test_target_is_refused(workdir, capsys):
    data_path = write_inter(workdir, lines(HEADER, *rows(users=10, length=2)))
    message = refused(workdir, capsys, arguments(data_path))
    assert_mentions(message, "tiny.inter", "no user has enough interactions for a test target",
                    "3 interactions for a test target", "longest history here has 2", "eval_args")


def test_every_user_too_short_for_a_validation_target_is_refused(workdir, capsys):
    data_path = write_inter(workdir, lines(HEADER, *rows(users=10, length=3)))
    message = refused(workdir, capsys, arguments(data_path))
    assert_mentions(message, "no user has enough interactions for a validation target",
                    "4 interactions for a validation target")


def test_too_few_items_for_the_largest_cutoff_is_refused(workdir, capsys):
    data_path = write_inter(workdir, lines(HEADER, *rows(items=12)))
    assert_mentions(refused(workdir, capsys, arguments(data_path)), "topk=[5, 10, 20]", "12 items")


def test_filters_that_remove_every_interaction_are_refused(workdir, capsys):
    data_path = write_inter(workdir, lines(HEADER, *rows()))
    message = refused(workdir, capsys, arguments(data_path, "--user_inter_num_interval=[100,inf)"))
    assert_mentions(message, "filtering settings")


def test_short_users_are_counted_in_a_warning(workdir, capsys, caplog):
    short = [f"{user}\t{user}\t{position}" for user in (20, 21) for position in (1, 2)]
    single = ["22\t5\t1"]
    data_path = write_inter(workdir, lines(HEADER, *rows(), *short, *single))
    with caplog.at_level(logging.WARNING):
        assert main(arguments(data_path)) == 0
    warnings = [record.getMessage() for record in caplog.records if "have no test target" in record.getMessage()]
    assert len(warnings) == 1
    assert_mentions(warnings[0], "3 of 11 users have no test target", "3 of 11 users have no validation target",
                    "1 with a single interaction are not used at all", "test metrics cover 8 users",
                    'user_inter_num_interval: "[4,inf)"')


def test_a_sampled_ranking_larger_than_what_users_left_unseen_is_counted_in_a_warning(workdir, caplog):
    """30 items, 6 per user: uni100 cannot draw 100 distinct negatives for anyone (RecBole repeats them)."""
    data_path = write_inter(workdir, lines(HEADER, *rows()))
    mode = "--eval_args={'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'mode': 'uni100', 'group_by': 'user'}"
    with caplog.at_level(logging.WARNING):
        assert main(arguments(data_path, mode)) == 0
    warnings = [record.getMessage() for record in caplog.records if "sampled negatives" in record.getMessage()]
    assert len(warnings) == 2 and "8 of 8 users" in warnings[0] and "1-in-101" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(arguments(data_path, mode.replace("uni100", "uni10"))) == 0
    assert not [record for record in caplog.records if "sampled negatives" in record.getMessage()]


def test_duplicates_run_with_rm_dup_inter_and_filters_are_counted(workdir, capsys, caplog):
    duplicated = rows()[:6] + [rows()[5]] + rows()[6:]
    short = [f"20\t{item}\t{item}" for item in (1, 2)]
    data_path = write_inter(workdir, lines(HEADER, *duplicated, *short))
    with caplog.at_level(logging.INFO):
        code = main(arguments(data_path, "--rm_dup_inter=first", "--user_inter_num_interval=[4,inf)"))
    assert code == 0
    messages = [record.getMessage() for record in caplog.records]
    assert any("rm_dup_inter='first'" in message and "removed 3 of 51 interactions and 1 of 9 users" in message
               for message in messages), [m for m in messages if "removed" in m]
    assert not any("have no test target" in message for message in messages)


# --- configuration values and files ----------------------------------------------------------------------------

CONFIG_CASES = {
    "epochs 0": (["--epochs=0"], ["epochs=0", "integer >= 1"]),
    "epochs not a number": (["--epochs=abc"], ["epochs='abc'", "must be an integer"]),
    "epochs a float": (["--epochs=2.5"], ["epochs=2.5", "must be an integer"]),
    "learning rate 0": (["--learning_rate=0"], ["learning_rate=0"]),
    "negative learning rate": (["--learning_rate=-0.1"], ["learning_rate=-0.1"]),
    "train batch 0": (["--train_batch_size=0"], ["train_batch_size=0", "integer >= 1"]),
    "eval batch 0": (["--eval_batch_size=0"], ["eval_batch_size=0", "integer >= 1"]),
    "infinite float": (["--weight_decay=1e999"], ["weight_decay=inf", "finite"]),
    "bool as a number": (["--show_progress=3"], ["show_progress=3", "True or False"]),
    "unknown rm_dup_inter": (["--rm_dup_inter=bogus"], ["rm_dup_inter='bogus'", "first", "last"]),
    "topk not a list": (["--topk=abc"], ["topk", "wrong type"]),
    "history length 0": (["--MAX_ITEM_LIST_LENGTH=0"], ["MAX_ITEM_LIST_LENGTH=0"]),
    "valid_metric's cut-off not computed": (["--topk=[5]"], ["valid_metric='NDCG@10'", "needs a cut-off of topk [5]", "computed: Hit@5, NDCG@5"]),
    "valid_metric not among metrics": (["--valid_metric=MRR@10"], ["valid_metric='MRR@10'", "not among metrics"]),
    "unknown metric": (["--metrics=['Recall','NDGC']"], ["RecBole refuses the metrics", "no metric named 'NDGC'"]),
    "value metric in a full ranking": (["--metrics=['AUC']", "--valid_metric=AUC"], ["RecBole refuses", "Full sort"]),
    "no metrics": (["--metrics=[]"], ["metrics=[]", "name at least one metric"]),
    "valid_metric without its cut-off": (["--valid_metric=NDCG"], ["valid_metric='NDCG'", "needs a cut-off"]),
    "empty topk": (["--topk=[]"], ["topk=[]", "non-empty list"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_bad_value_is_refused_naming_the_key(case, workdir, capsys):
    extra, fragments = CONFIG_CASES[case]
    data_path = write_inter(workdir, lines(HEADER, *rows()))
    assert_mentions(refused(workdir, capsys, arguments(data_path, *extra)), *fragments)


def test_values_recbole_accepts_are_accepted(workdir):
    """Types follow RecBole's YAML annotations: FEARec's ``global_ratio: 1  # (float)`` takes 0.6, DiffRec's
    ``noise_scale: 0.001  # (int)`` (an annotation its own default contradicts) takes 0.002; torch clips with
    ``norm_type: inf``. NaN is still refused there, and an integer key still refuses a fraction."""
    from recbole_diffusion.config.configurator import build_config

    data_path = write_inter(workdir, lines(HEADER, *rows()))
    fearec, _ = build_config("FEARec", NAME, config_dict={"data_path": data_path, "global_ratio": 0.6, "n_layers": 2})
    assert fearec["global_ratio"] == 0.6
    diffrec, _ = build_config("DiffRec", NAME, config_dict={"data_path": data_path, "noise_scale": 0.002})
    assert diffrec["noise_scale"] == 0.002
    clipped = workdir / "clip.yaml"
    clipped.write_text("clip_grad_norm: {max_norm: 5, norm_type: .inf}\n", encoding="utf-8")
    config, _ = build_config("SASRec", NAME, [str(clipped)], {"data_path": data_path})
    assert config["clip_grad_norm"]["norm_type"] == float("inf")
    clipped.write_text("clip_grad_norm: {max_norm: 5, norm_type: .nan}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"clip_grad_norm\['norm_type'\]=nan: must be a finite number"):
        build_config("SASRec", NAME, [str(clipped)], {"data_path": data_path})
    with pytest.raises(ValueError, match="topk_factor=1.5: must be an integer"):
        build_config("FEARec", NAME, config_dict={"data_path": data_path, "topk_factor": 1.5, "n_layers": 2})
    with pytest.raises(ValueError, match="n_layers=1: must be at least 2 for FEARec"):  # RecBole divides by 0
        build_config("FEARec", NAME, config_dict={"data_path": data_path, "n_layers": 1})


def test_renamed_id_and_time_fields_are_loaded_without_setting_load_col(workdir):
    """The protocol's load_col names RecBole's default columns; renaming the fields makes it load the new ones."""
    data_path = write_inter(workdir, lines("uid:token\tiid:token\tts:float", *rows()))
    fields = ["--USER_ID_FIELD=uid", "--ITEM_ID_FIELD=iid", "--TIME_FIELD=ts"]
    assert main(arguments(data_path, *fields)) == 0
    from recbole_diffusion.config.configurator import build_config

    config, _ = build_config("SASRec", NAME, config_dict={"data_path": data_path, "USER_ID_FIELD": "uid",
                                                          "ITEM_ID_FIELD": "iid", "TIME_FIELD": "ts"})
    assert config["load_col"]["inter"] == ["uid", "iid", "ts"]


def test_a_run_that_never_validates_may_leave_valid_metric_uncomputed(workdir):
    """RecBole reads valid_metric only when it validates (eval_step > 0 and a validation split)."""
    from recbole_diffusion.config.configurator import build_config

    data_path = write_inter(workdir, lines(HEADER, *rows()))
    build_config("SASRec", NAME, config_dict={"data_path": data_path, "metrics": ["Recall"], "eval_step": 0})
    test_only = {"split": {"LS": "test_only"}, "order": "TO", "mode": "full", "group_by": "user"}
    build_config("SASRec", NAME, config_dict={"data_path": data_path, "metrics": ["Recall"], "eval_args": test_only})


def test_coverage_and_popularity_metrics_are_computed(workdir, capsys):
    """RecBole 1.2.1's collector called .cpu() on the item count and counter these metrics read (compat.py)."""
    data_path = write_inter(workdir, lines(HEADER, *rows()))
    metrics = "--metrics=['Recall','ItemCoverage','GiniIndex','AveragePopularity','TailPercentage']"
    assert main(arguments(data_path, metrics, "--topk=[10]", "--valid_metric=Recall@10")) == 0
    out = capsys.readouterr().out
    assert "itemcoverage" in out and "giniindex" in out and "tailpercentage" in out


def test_lines_that_pandas_strips_to_nothing_are_skipped(workdir):
    from recbole_diffusion.config.configurator import build_config
    from recbole_diffusion.data.checks import check_interaction_files

    content = lines(HEADER, *rows()[:3], "\x1c", " \x0b", *rows()[3:])
    config, _ = build_config("SASRec", NAME, config_dict={"data_path": write_inter(workdir, content)})
    assert check_interaction_files(config)[:2] == (48, 8)


def test_exact_duplicates_in_pre_split_files_are_refused_whatever_the_filters(workdir, capsys):
    """RecBole runs no filter on benchmark_filename files: drop_exact_duplicates (or rm_dup_inter) would not
    remove them, so they are refused, saying so."""
    folder = workdir / "data" / NAME
    folder.mkdir(parents=True)
    train = rows()[:40]
    for part, content in (("train", train + [train[3]]), ("valid", rows()[40:44]), ("test", rows()[44:])):
        (folder / f"{NAME}.{part}.inter").write_text(lines(HEADER, *content), encoding="utf-8")
    message = refused(workdir, capsys, arguments(str(workdir / "data"), "--drop_exact_duplicates=True",
                                                 "--benchmark_filename=['train','valid','test']", model="BPR"))
    assert_mentions(message, "tiny.train.inter:42:", "exact duplicate of line 5", "no filter to pre-split files")


def write_presplit_histories(workdir, histories=True):
    """Pre-split files for a sequential model (RecBole's format): each row a user, its history (oldest first) and
    the next item; every prefix in train, the second-to-last item in valid, the last in test."""
    folder = workdir / "data" / NAME
    folder.mkdir(parents=True)
    sequences = {}
    for row in rows(length=8):
        user, item, _ = row.split("\t")
        sequences.setdefault(user, []).append(item)
    header = "user_id:token\titem_id_list:token_seq\titem_id:token" if histories else HEADER
    for part, targets in (("train", range(1, 6)), ("valid", [6]), ("test", [7])):
        content = [f"{user}\t{' '.join(items[:target])}\t{items[target]}" if histories
                   else f"{user}\t{items[target]}\t{target}" for user, items in sequences.items() for target in targets]
        (folder / f"{NAME}.{part}.inter").write_text(lines(header, *content), encoding="utf-8")
    return str(workdir / "data"), sequences


PRESPLIT = "--benchmark_filename=['train','valid','test']"


def test_pre_split_files_of_a_sequential_model_need_histories_that_share_the_item_ids(workdir, capsys):
    """RecBole numbers an un-aliased item_id_list apart from item_id: the model would read every history's items as
    other items, so that is refused, as are pre-split files without histories (RecBole fails on an attribute)."""
    data_path, _ = write_presplit_histories(workdir)
    message = refused(workdir, capsys, arguments(data_path, PRESPLIT, "--load_col=None"))
    assert_mentions(message, "set alias_of_item_id: [item_id_list]", "other items")
    message = refused(workdir, capsys, arguments(data_path, PRESPLIT, "--alias_of_item_id=['item_id_list']"))
    assert_mentions(message, "must load 'item_id_list'", "--load_col=None")  # the default load_col
    (workdir / "data").rename(workdir / "histories")
    data_path, _ = write_presplit_histories(workdir, histories=False)
    message = refused(workdir, capsys, arguments(data_path, PRESPLIT))
    assert_mentions(message, "tiny.train.inter has no column 'item_id_list'", "item_id_list:token_seq")


def test_pre_split_histories_may_repeat_a_target_after_other_histories(workdir):
    """Without times, two pre-split rows of one user and one target item are not duplicates: their histories differ
    (a repeated item), and RecBole reads both."""
    from recbole_diffusion.data.checks import check_interaction_files

    data_path, sequences = write_presplit_histories(workdir)
    user, items = next(iter(sequences.items()))
    with open(os.path.join(data_path, NAME, f"{NAME}.train.inter"), "a", encoding="utf-8") as handle:
        handle.write(f"{user}\t{' '.join(items[:3])}\t{items[1]}\n")  # items[1] again, after a longer history
    config, _ = build_config("SASRec", NAME, config_dict={"data_path": data_path, "load_col": None,
                                                          "benchmark_filename": ["train", "valid", "test"],
                                                          "alias_of_item_id": ["item_id_list"]})
    check_interaction_files(config)


def test_pre_split_files_are_found_where_any_dataset_is(workdir, monkeypatch):
    """Without data_path, pre-split files are looked for in the same folders as a whole file (here
    RECBOLE_DIFFUSION_DATA), by their first part."""
    data_path, _ = write_presplit_histories(workdir)
    monkeypatch.setenv("RECBOLE_DIFFUSION_DATA", data_path)
    config, _ = build_config("SASRec", NAME, config_dict={"load_col": None, "alias_of_item_id": ["item_id_list"],
                                                          "benchmark_filename": ["train", "valid", "test"]})
    assert os.path.normpath(config["data_path"]) == os.path.normpath(os.path.join(data_path, NAME))


def test_pre_split_histories_train_without_timestamps_and_recommend_the_whole_history(workdir):
    """With alias_of_item_id, pre-split histories run (no time column: RecBole does not order them), and recommend
    continues each user's whole history (the file's lists are narrower than MAX_ITEM_LIST_LENGTH)."""
    from recbole_diffusion import load_data_and_model
    from recbole_diffusion.recommend import model_input

    data_path, sequences = write_presplit_histories(workdir)
    result = run("SASRec", NAME, config_dict={"data_path": data_path, "benchmark_filename": ["train", "valid", "test"],
                                              "load_col": None, "alias_of_item_id": ["item_id_list"],
                                              "MAX_ITEM_LIST_LENGTH": 10, "epochs": 1, "show_progress": False,
                                              "hidden_size": 8, "inner_size": 16, "n_layers": 1, "n_heads": 1})
    config, model, dataset, _, _, test_data = load_data_and_model(result["saved_model_file"])
    users = ["3", "5"]
    user_ids = torch.as_tensor(dataset.token2id(dataset.uid_field, users))
    given = model_input(config, dataset, test_data, user_ids)
    for row, user in enumerate(users):
        history = dataset.id2token(dataset.iid_field, given["item_id_list"][row, :given["item_length"][row]].numpy())
        assert list(history) == sequences[user]


def test_threshold_is_refused_on_an_unloaded_column_and_noted_for_sequential_models(workdir, capsys):
    """The protocol's load_col takes the column threshold names; a load_col of the user's that leaves it out is
    refused."""
    rated = [f"{row}\t{1 + index % 5}" for index, row in enumerate(rows())]
    data_path = write_inter(workdir, lines(HEADER + "\trating:float", *rated))
    without = "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}"
    message = refused(workdir, capsys, arguments(data_path, "--threshold={'rating': 4}", without))
    assert_mentions(message, "tiny.inter:1:", "threshold={'rating': 4}", "column 'rating' is not loaded", "load_col")
    message = refused(workdir, capsys, arguments(data_path, "--threshold={'stars': 4}",
                                                 "--load_col={'inter': ['user_id', 'item_id', 'timestamp', 'stars']}"))
    assert_mentions(message, "column 'stars' is not loaded", "the file has no such column")
    loaded = "--load_col={'inter': ['user_id', 'item_id', 'timestamp', 'rating']}"
    assert main(arguments(data_path, "--threshold={'rating': 4}", loaded)) == 0
    assert_mentions(capsys.readouterr().err, "SASRec (a sequential model) does not read",
                    "val_interval: {rating: '[4,inf)'}")
    assert main(arguments(data_path, "--threshold={'rating': 4}", loaded, model="Pop")) == 0
    assert_mentions(capsys.readouterr().err, "a ranking evaluation (eval_args mode", "does not read",
                    "val_interval: {rating: '[4,inf)'}")
    assert main(arguments(data_path, "--threshold={'rating': 4}")) == 0  # the protocol's load_col takes rating


def test_a_load_col_column_the_file_lacks_is_skipped_with_a_warning(workdir, caplog):
    """RecBole loads the header's columns that load_col names and skips the others."""
    data_path = write_inter(workdir, lines(HEADER, *rows()))
    with caplog.at_level(logging.WARNING):
        assert main(arguments(data_path, "--load_col={'inter': ['user_id', 'item_id', 'timestamp', 'rating']}")) == 0
    warnings = [record.getMessage() for record in caplog.records if "load_col" in record.getMessage()]
    assert len(warnings) == 1 and "tiny.inter:1: no column 'rating'" in warnings[0], warnings
    assert "RecBole skips it" in warnings[0]


def test_exact_duplicates_alone_are_dropped_with_drop_exact_duplicates(workdir, caplog):
    """The remedy offered for exact duplicates keeps a repeat of the same item at another time, which
    rm_dup_inter: first would delete."""
    from recbole.data import create_dataset

    from recbole_diffusion.config.configurator import build_config

    duplicated = rows()[:6] + [rows()[5], "1\t9\t99"] + rows()[6:]  # an exact duplicate; user 1 buys 9 again
    data_path = write_inter(workdir, lines(HEADER, *duplicated))
    with caplog.at_level(logging.INFO):
        assert main(arguments(data_path, "--drop_exact_duplicates=True")) == 0
    messages = [record.getMessage() for record in caplog.records]
    assert any("drop_exact_duplicates=True" in m and "removed 1 of 50 interactions and 0 of 8 users" in m
               for m in messages), [m for m in messages if "removed" in m]
    config, _ = build_config("SASRec", NAME, config_dict={"data_path": data_path, "drop_exact_duplicates": True})
    dataset = create_dataset(config)
    assert len(dataset.inter_feat) == 49  # only the exact duplicate went; the repeat at time 99 stays
    config, _ = build_config("SASRec", NAME, config_dict={"data_path": data_path, "rm_dup_inter": "first"})
    assert len(create_dataset(config).inter_feat) == 48


def test_nan_and_infinity_in_yaml_are_refused_for_diffusion_models(workdir, capsys):
    data_path = write_inter(workdir, lines(HEADER, *rows()))
    config = workdir / "guided.yaml"
    config.write_text("guidance_weight: .inf\n", encoding="utf-8")
    message = refused(workdir, capsys, arguments(data_path, f"--config_files={config}", model="DreamRec"))
    assert_mentions(message, "guidance_weight=inf", "finite")
    message = refused(workdir, capsys, arguments(data_path, "--guidance_weight=.inf", model="DreamRec"))
    assert_mentions(message, "guidance_weight='.inf'", "must be a number")
    config.write_text("train_neg_sample_args: {distribution: uniform, sample_num: 1, alpha: .nan}\n", encoding="utf-8")
    message = refused(workdir, capsys, arguments(data_path, f"--config_files={config}", "--loss_type=BPR"))
    assert_mentions(message, "train_neg_sample_args['alpha']=nan", "finite")


YAML_CASES = {
    "does not parse": ("epochs: 5\nlearning_rate: [0.1\n", ["broken.yaml:", "not valid YAML"]),
    "a list": ("- epochs\n- 5\n", ["broken.yaml", "must be a mapping", "list"]),
    "a plain string": ("epochs 5\n", ["broken.yaml", "must be a mapping", "str"]),
    "a number as key": ("5: epochs\n", ["broken.yaml", "key 5"]),
    "load_col without inter": ("load_col:\n  user: [user_id]\n", ["load_col=", "no 'inter' entry"]),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_a_bad_config_file_is_refused_naming_it(case, workdir, capsys):
    text, fragments = YAML_CASES[case]
    data_path = write_inter(workdir, lines(HEADER, *rows()))
    config = workdir / "broken.yaml"
    config.write_text(text, encoding="utf-8")
    assert_mentions(refused(workdir, capsys, arguments(data_path, f"--config_files={config}")), *fragments)


def test_a_missing_or_directory_config_file_is_refused(workdir, capsys):
    data_path = write_inter(workdir, lines(HEADER, *rows()))
    message = refused(workdir, capsys, arguments(data_path, f"--config_files={workdir / 'absent.yaml'}"))
    assert_mentions(message, "absent.yaml", "does not exist")
    (workdir / "folder.yaml").mkdir()
    message = refused(workdir, capsys, arguments(data_path, f"--config_files={workdir / 'folder.yaml'}"))
    assert_mentions(message, "folder.yaml", "is a directory")


def test_a_non_utf8_config_file_is_refused_naming_the_line(workdir, capsys):
    data_path = write_inter(workdir, lines(HEADER, *rows()))
    config = workdir / "latin.yaml"
    config.write_bytes(b"epochs: 1\n# caf\xe9\n")
    assert_mentions(refused(workdir, capsys, arguments(data_path, f"--config_files={config}")),
                    "latin.yaml:2:", "byte 0xe9", "UTF-8")



def test_a_config_file_of_only_comments_sets_nothing(workdir, capsys):
    """A template with every line commented out means "no keys": the run goes on as without the file."""
    data_path = write_inter(workdir, lines(HEADER, *rows()))
    template = workdir / "template.yaml"
    template.write_text("# epochs: 5\n# learning_rate: 0.01\n", encoding="utf-8")
    from recbole_diffusion.config.configurator import build_config

    with_template, _ = build_config("SASRec", NAME, [str(template)], {"data_path": data_path})
    without, _ = build_config("SASRec", NAME, [], {"data_path": data_path})
    assert with_template["epochs"] == without["epochs"] and with_template["learning_rate"] == without["learning_rate"]


@pytest.mark.parametrize("setting, fragments", [
    ("--trust_pickled_checkpoint=no", ["trust_pickled_checkpoint='no'", "True or False"]),
    ("--resume=no", ["resume='no'", "True or False"]),
    ("--batch_by_length=yes", ["batch_by_length='yes'", "True or False"]),
    ("--checkpoint_every=-1", ["checkpoint_every=-1", "integer >= 0"]),
    ("--checkpoint_every=abc", ["checkpoint_every='abc'", "integer >= 0"]),
])
def test_the_packages_own_keys_are_typed(setting, fragments, workdir, capsys):
    """A string where a boolean belongs once meant True (--resume=no resumed); a negative or non-numeric
    checkpoint_every wrote nothing or ended in a traceback after the log was written."""
    data_path = write_inter(workdir, lines(HEADER, *rows()))
    assert_mentions(refused(workdir, capsys, arguments(data_path, setting)), *fragments)


def test_a_truncated_checkpoint_is_refused_naming_it_without_offering_trust(workdir, capsys, tmp_path):
    import torch

    import recbole_diffusion.trainer.checkpoint as ckpt

    whole = tmp_path / "whole.pth"
    ckpt.save_checkpoint({"state_dict": {"w": torch.ones(1000)}}, str(whole))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    for trust in (False, True):
        with pytest.raises(ValueError, match="damaged or incomplete") as refused_load:
            ckpt.load_checkpoint(str(cut), trust_pickled=trust)
        assert "cut.pth" in str(refused_load.value) and "trust_pickled" not in str(refused_load.value)


def _scan_notes(data_path, **settings):
    from recbole_diffusion.config.configurator import build_config
    from recbole_diffusion.data.checks import check_interaction_files

    config, _ = build_config("SASRec", NAME, config_dict={"data_path": data_path, "state": "WARNING", **settings})
    return [note for _, note in check_interaction_files(config).notes]


def test_times_that_float32_cannot_order_or_exact_ties_are_counted_with_what_chooses_the_targets(workdir, caplog):
    """RecBole keeps the time column as float32: Unix seconds 10 s apart tie there and fall back to the file's
    line order, which here reverses user 1's last three interactions (its test and validation targets)."""
    reversed_user = [f"1\t{item}\t{1_700_000_000 + 10 * position}" for position, item in reversed(list(enumerate(
        range(1, 7))))]
    others = [row for row in rows() if not row.startswith("1\t")]
    notes = _scan_notes(write_inter(workdir, lines(HEADER, *reversed_user, *others)))
    assert len(notes) == 1
    assert_mentions(notes[0], "1 of 8 users get another test or validation target", "float32",
                    "Write each user's positions")
    # RecBole's duplicate removal sorts by the exact times first: no float32 note then.
    assert _scan_notes(write_inter(workdir, lines(HEADER, *reversed_user, *others)),
                       rm_dup_inter="first") == []
    # A user with two interactions has no target for a sequential model: not counted.
    short = [f"9\t{item}\t{1_700_000_000 + 10 * position}" for position, item in ((1, 5), (0, 6))]
    assert _scan_notes(write_inter(workdir, lines(HEADER, *rows(), *short))) == []
    # Positions 1, 2, ... in reverse line order: float32 keeps them apart, so nothing to say.
    positions = [f"1\t{item}\t{position}" for position, item in reversed(list(enumerate(range(1, 7), 1)))]
    assert _scan_notes(write_inter(workdir, lines(HEADER, *positions, *others))) == []
    # An exact tie at the end: the line order chooses between the two targets.
    tied = [row if not row.startswith("2\t") or not row.endswith("\t6") else row[:-1] + "5" for row in rows()]
    notes = _scan_notes(write_inter(workdir, lines(HEADER, *tied)))
    assert len(notes) == 1 and "1 of 8 users' test or validation target has the same timestamp" in notes[0]
    with caplog.at_level(logging.WARNING):  # and a run logs it
        assert main(arguments(write_inter(workdir, lines(HEADER, *tied)))) == 0
    assert any("has the same timestamp" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("quoted", [False, True])
def test_ids_with_spaces_around_them_are_counted_as_other_ids(workdir, quoted):
    padded = [row.replace("\t", " \t", 1) if index % 2 and row.startswith("3\t") else row
              for index, row in enumerate(rows())]
    if quoted:  # a quoted item id somewhere sends the file through the slower reader
        padded = [f'{row.split(chr(9))[0]}\t"{row.split(chr(9))[1]}"\t{row.split(chr(9))[2]}'
                  if row.startswith("4\t") else row for row in padded]
    notes = _scan_notes(write_inter(workdir, lines(HEADER, *padded)))
    spaced = [note for note in notes if "spaces around it" in note]
    assert len(spaced) == 1
    assert_mentions(spaced[0], "user_id '3 ' has spaces around it", "3 lines like it", "1 user_id value(s)")


def test_one_and_zero_are_booleans_as_in_recbole(workdir, capsys):
    """RecBole reads --show_progress=0 as the integer 0 and takes it as False; it was refused as not a boolean."""
    from recbole_diffusion.config.configurator import build_config
    from recbole_diffusion.runner import parse_args

    data_path = write_inter(workdir, lines(HEADER, *rows()))
    overrides = parse_args(["--model=SASRec", "--show_progress=0", "--batch_by_length=1", "--resume=0"])[3]
    config, _ = build_config("SASRec", NAME, config_dict={**overrides, "data_path": data_path})
    assert (config["show_progress"], config["batch_by_length"], config["resume"]) == (False, True, False)
    assert_mentions(refused(workdir, capsys, arguments(data_path, "--show_progress=2")),
                    "show_progress=2", "True or False")


def test_a_general_model_without_times_is_offered_the_random_order_that_then_runs(workdir, capsys):
    """Order TO (this dataset's YAML, say) needs a time column; a general model can split in random order instead,
    and the refusal says how, keeping the other eval_args."""
    from recbole_diffusion.config.configurator import build_config
    from recbole_diffusion.data.checks import check_interaction_files

    data_path = write_inter(workdir, lines("user_id:token\titem_id:token",
                                           *[row.rsplit("\t", 1)[0] for row in rows()]))
    time_order = "--eval_args={'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'mode': 'full'}"
    message = refused(workdir, capsys, arguments(data_path, time_order, model="BPR"))
    assert_mentions(message, "TIME_FIELD='timestamp'", "BPR (not a sequential model)", "'order': 'RO'")
    offered = message.split("--eval_args=")[1].rstrip(".").strip('"')
    config, _ = build_config("BPR", NAME, config_dict={"data_path": data_path, "eval_args": eval(offered)})
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    check_interaction_files(config)  # passes
