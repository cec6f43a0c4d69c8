"""The atomic-file cutters of ``recbole_diffusion.data.slices``: line endings and a last line without a newline."""

import os

from recbole_diffusion.data.slices import write_item_subset, write_user_slice
from recbole_diffusion.utils.files import atomic_header, parse_atomic_header


def _write(path, lines, ending):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(ending.join(lines))  # no newline after the last row


def _users(path):
    with open(path, encoding="utf-8") as handle:
        handle.readline()
        return [line.rstrip("\r\n").split("\t")[1] for line in handle if line.strip()]


def test_parse_atomic_header_names_and_types():
    assert parse_atomic_header("item_id:token\tvec:float_seq\r\n") == [("item_id", "token"), ("vec", "float_seq")]


def test_user_slice_counts_users_with_crlf_and_a_last_line_without_newline(tmp_path):
    """The user column is last: its cells must be read without the line ending, or the last row's user (no newline)
    would count as a new user and take a place of the slice."""
    source = tmp_path / "source.inter"
    rows = ["item_id:token\tuser_id:token", "1\ta", "2\tb", "3\ta", "4\tc", "5\tb"]
    for ending in ("\n", "\r\n"):
        _write(source, rows, ending)
        folder = write_user_slice(str(source), "cut", 2, str(tmp_path / ending.encode().hex()))
        assert _users(os.path.join(folder, "cut", "cut.inter")) == ["a", "b", "a", "b"]


def test_a_slice_in_positions_orders_each_user_by_time_and_leaves_no_order_to_float32(tmp_path):
    source = tmp_path / "source.inter"
    rows = ["user_id:token\titem_id:token\ttimestamp:float", "a\t1\t1700000090", "b\t7\t5", "a\t2\t1700000010",
            "a\t3\t1700000010", "c\t9\t1", "a\t4\t1700000050"]
    _write(source, rows, "\n")
    folder = write_user_slice(str(source), "cut", 2, str(tmp_path / "cut"), positions=True)
    with open(os.path.join(folder, "cut", "cut.inter"), encoding="utf-8") as handle:
        kept = [line.rstrip("\n").split("\t") for line in handle][1:]
    # a: times 10 (item 2), 10 (item 3, after it in the file), 50, 90; b: one row; c is the third user
    assert kept == [["a", "2", "1"], ["a", "3", "2"], ["a", "4", "3"], ["a", "1", "4"], ["b", "7", "1"]]


def test_item_subset_keeps_the_chosen_items_and_their_interactions(tmp_path):
    item, inter = tmp_path / "source.item", tmp_path / "source.inter"
    _write(item, ["item_id:token\tyear:float", "1\t1990", "2\t2000", "3\t1985"], "\r\n")
    _write(inter, ["user_id:token\titem_id:token", "a\t1", "a\t2", "b\t3", "b\t2", "c\t3"], "\r\n")
    write_item_subset(str(inter), str(item), "old", lambda row: float(row["year"]) < 1995, str(tmp_path))
    assert atomic_header(str(tmp_path / "old" / "old.item")) == [("item_id", "token"), ("year", "float")]
    with open(tmp_path / "old" / "old.inter", encoding="utf-8") as handle:
        kept = [line.rstrip("\r\n").split("\t") for line in handle][1:]
    assert kept == [["a", "1"], ["b", "3"], ["c", "3"]]
    _write(inter, ["user_id:token\titem_id:token\ttimestamp:float", "a\t1\t900", "a\t3\t100", "a\t2\t50",
                   "b\t3\t7"], "\n")
    write_item_subset(str(inter), str(item), "old", lambda row: float(row["year"]) < 1995, str(tmp_path),
                      positions=True)
    with open(tmp_path / "old" / "old.inter", encoding="utf-8") as handle:
        kept = [line.rstrip("\n").split("\t") for line in handle][1:]
    assert kept == [["a", "3", "1"], ["a", "1", "2"], ["b", "3", "1"]]  # item 2 (year 2000) left out
