"""Checks of the interaction data: the ``.inter`` file before RecBole reads it, the dataset right after, the split.

RecBole 1.2.1 reads a ``.inter`` file with pandas and quietly repairs what it cannot use: a missing timestamp
becomes the column mean (the interaction moves to an arbitrary place in its user's history and can become a
test target), an infinite one sorts last, an exact duplicate of a user's last row makes the validation target
equal the test target, users too short for leave-one-out leave the evaluation without a word. Malformed files
end in a pandas traceback. These checks refuse such input with one message that names the file and line (or
the configuration key) and says what to do, or let the run go on with a counted warning; the runner calls them
before any log file or checkpoint is written (:func:`recbole_diffusion.config.configurator.build_config` and
:func:`recbole_diffusion.quick_start.quick_start.prepare_data`).
"""

import codecs
import contextlib
import csv
import hashlib
import io
import logging
import logging.handlers
import os
import re
import sys
from typing import NamedTuple

import numpy as np
import pandas as pd

from recbole_diffusion.utils.files import read_file_bytes

# Strings pandas reads as missing by default (read_csv's na_values): RecBole drops such ids and fills such floats.
PANDAS_MISSING = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                            "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
FEATURE_TYPES = ("token", "token_seq", "float", "float_seq")
SEPARATOR_GUESSES = ("\t", ",", ";", "|", " ")
QUOTE = '"'  # pandas' quote character: RecBole's reader treats it as CSV quoting
LINES_SHOWN = 5
HEADER_EXAMPLE = "user_id:token<TAB>item_id:token<TAB>timestamp:float"
NOT_BLANK = re.compile(r"\S")


class FileSummary(NamedTuple):
    """What the pre-check saw in the interaction file(s), to count what RecBole's filters remove later."""

    rows: int   # data lines
    users: int  # distinct user tokens (summed over benchmark files)
    notes: tuple = ()  # (level, message) pairs for the run's log: what was read differently from the file


def _first_line_longer(path, line, fields, header):
    """Refuse a first data line with more fields than the header: pandas (RecBole's reader) then takes the extra
    leading fields as the row index, and every column of every row shifts."""
    _fail(path, line, f"the first data line has {fields} fields, the header {len(header.columns)}: pandas (RecBole's "
                      "reader) would take the extra leading field(s) as the row index and shift every column of "
                      "every row (user ids read from the item column, and so on). Remove the extra field(s) of this "
                      "line (a trailing separator counts as one), or name every column in the header.")


def _longer_rows_note(path, lines, fields, header):
    """The counted warning for rows with more fields than the header, which RecBole (pandas with ``usecols``)
    reads as the header's columns, dropping the rest; ``()`` when there are none."""
    if not len(lines):
        return ()
    return ((logging.WARNING, f"{path}:{lines[0]}: {len(lines)} line(s) have more fields than the header's "
                              f"{len(header.columns)} (the first has {fields}): RecBole reads the header's columns "
                              "and drops the fields after them, and so does this run. Check that the file's columns "
                              "are where the header says."),)


def _fail(path, line, problem):
    location = f"{path}:{line}" if line else str(path)
    raise ValueError(f"{location}: {problem}")


def _more_lines(lines):
    """Nothing for one line; `` (40 lines like it: 5, 9, 12, 20, 31, ...)`` for several."""
    lines = [int(line) for line in lines]
    if len(lines) == 1:
        return ""
    shown = ", ".join(str(line) for line in lines[:LINES_SHOWN])
    return f" ({len(lines)} lines like it: {shown}{', ...' if len(lines) > LINES_SHOWN else ''})"


def _value_text(value):
    """A value as the file wrote it: a token quoted, a number plainly."""
    return repr(value) if isinstance(value, str) else f"{float(value):g}"


def inter_file_path(config):
    """The ``.inter`` file RecBole will read for this configuration (``data_path`` is already joined)."""
    return os.path.join(config["data_path"], f"{config['dataset']}.inter")


def inter_file_paths(config):
    """Every interaction file RecBole reads: ``<name>.inter``, or one per ``benchmark_filename`` suffix."""
    if config["benchmark_filename"]:
        return [os.path.join(config["data_path"], f"{config['dataset']}.{suffix}.inter")
                for suffix in config["benchmark_filename"]]
    return [inter_file_path(config)]


ATOMIC_SUFFIXES = (".inter", ".item", ".user", ".kg", ".link", ".net")


def data_files_sha256(config):
    """SHA-256 of the dataset's atomic files that RecBole may read (``<name>*.inter``, ``.item``, ``.user``,
    ``.kg``, ``.link``, ``.net`` in its folder), names and content: a resumed comparison or search whose data
    changed is refused instead of mixing runs on two versions of the data. ``None`` when there is none yet (a
    dataset RecBole downloads): nothing to compare."""
    folder, name = config["data_path"], config["dataset"]
    digest, found = hashlib.sha256(), False
    for file in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, file)
        if file.startswith(name + ".") and file.endswith(ATOMIC_SUFFIXES) and os.path.isfile(path):
            found = True
            digest.update(file.encode("utf-8") + b"\0")
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest() if found else None  # None: RecBole has yet to download the dataset


def check_inter_path_is_file(config):
    """Refuse a directory where the ``.inter`` file belongs (RecBole would report the dataset as missing)."""
    for path in inter_file_paths(config):
        if os.path.isdir(path):
            raise FileNotFoundError(f"{path} is a directory; the interaction file must be a file at that path "
                                    f"(<data_path>/{config['dataset']}/{config['dataset']}.inter).")


def decode_text(raw, path, encoding):
    """Decode ``raw``, naming the line and byte offset of the first undecodable byte."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        byte = raw[error.start:error.start + 1].hex()
        _fail(path, line, f"byte 0x{byte} at byte offset {error.start} (column {column}) is not valid {encoding}. "
                          f"Save the file as {encoding}, or set encoding: to the file's encoding (e.g. latin-1).")


class Header(NamedTuple):
    columns: list  # names, in file order
    types: dict    # name -> type
    fields: list   # "name:type" as written, what pandas' usecols needs


def _separator_hint(line, separator, expected_fields):
    for guess in SEPARATOR_GUESSES:
        if guess != separator and len(line.split(guess)) == expected_fields:
            return (f" The line is separated by {guess!r}, but field_separator is {separator!r}: convert the "
                    f"file to {separator!r} or set field_separator: {guess!r}.")
    return ""


def parse_header(text, path, separator):
    """Columns and types of the header line; refuses an empty file, missing ``:type``, unknown types."""
    if not NOT_BLANK.search(text):
        _fail(path, None, f"the file is empty. An interaction file starts with a header such as {HEADER_EXAMPLE} "
                          "and has one line per interaction.")
    if text.startswith("\ufeff"):
        _fail(path, 1, "the file starts with a byte order mark (BOM), which RecBole reads as part of the first "
                       "column's name. Save the file as UTF-8 without BOM.")
    first = text.split("\n", 1)[0].rstrip("\r")
    fields = first.split(separator)
    if len(fields) == 1:
        for guess in SEPARATOR_GUESSES:
            if guess != separator and all(part.count(":") == 1 for part in first.split(guess)) and guess in first:
                _fail(path, 1, f"the header {first!r} is separated by {guess!r}, but field_separator is "
                               f"{separator!r}: convert the file to {separator!r} or set field_separator: {guess!r}.")
    columns, types = [], {}
    for field in fields:
        if field.count(":") != 1:
            _fail(path, 1, f"header column {field!r} must be written name:type with one ':' (types: "
                           f"{', '.join(FEATURE_TYPES)}), e.g. {HEADER_EXAMPLE}.")
        name, kind = field.split(":")
        if kind not in FEATURE_TYPES:
            _fail(path, 1, f"header column {field!r} has type {kind!r}; the types are {', '.join(FEATURE_TYPES)}.")
        if name in types:
            _fail(path, 1, f"the header names column {name!r} twice; rename one of them.")
        columns.append(name)
        types[name] = kind
    return Header(columns, types, fields)


def _requested_columns(config, path):
    """The columns ``load_col`` names for the ``.inter`` file, ``None`` for all of them."""
    load_col = config["load_col"]
    if load_col is not None and "inter" not in load_col:
        raise ValueError(f"load_col={load_col!r}: has no 'inter' entry, so nothing would be loaded from {path}; "
                         "add inter: [user_id, item_id, timestamp].")
    return None if load_col is None or load_col["inter"] == "*" else list(load_col["inter"])


def loaded_columns(config, header, path):
    """The header columns RecBole loads (``load_col`` / ``unload_col``)."""
    requested = _requested_columns(config, path)
    dropped = set((config["unload_col"] or {}).get("inter") or [])
    return [name for name in header.columns if (requested is None or name in requested) and name not in dropped]


def absent_requested_columns_note(config, header, path):
    """The warning for columns ``load_col`` asks for and the header lacks, which RecBole skips (it loads the
    header's columns that ``load_col`` names); ``()`` when there are none. The id and time columns a run needs
    are refused before this (:func:`check_required_columns`)."""
    absent = [name for name in _requested_columns(config, path) or [] if name not in header.types]
    if not absent:
        return ()
    return ((logging.WARNING, f"{path}:1: no column {', '.join(map(repr, absent))}, which load_col['inter'] asks "
                              f"for (columns: {header.columns}); RecBole skips it, and so does this run."),)


def needs_time_order(config):
    """Whether RecBole orders the interactions by ``TIME_FIELD``: not for pre-split files (``benchmark_filename``),
    which it reads as they are (a sequential model's files then hold the histories, ``item_id_list``)."""
    if config["benchmark_filename"]:
        return False
    eval_args = config["eval_args"] or {}
    return eval_args.get("order") == "TO" or config["MODEL_TYPE"].name == "SEQUENTIAL"


def check_presplit_histories(config, header, loaded, path):
    """A sequential model's pre-split files (``benchmark_filename``) hold each row's history, ``item_id_list``, whose
    items share the targets' id map (``alias_of_item_id``): RecBole numbers an un-aliased list apart, so every
    model would read a history's items as other items."""
    list_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    if list_field not in header.types:
        raise ValueError(f"benchmark_filename={config['benchmark_filename']!r}: {path} has no column {list_field!r} "
                         f"(columns: {header.columns}); a sequential model's pre-split files hold each row's history "
                         f"as {list_field}:token_seq (space-separated item tokens, oldest first) beside the target "
                         f"{config['ITEM_ID_FIELD']}:token.")
    if list_field not in loaded:
        wanted = [name for name in header.columns if name in loaded or name == list_field]
        raise ValueError(f"load_col={config['load_col']!r}: must load {list_field!r} in 'inter' (each row's history "
                         f"in the pre-split files), e.g. --load_col=\"{{'inter': {wanted}}}\" or --load_col=None.")
    if list_field not in (config["alias_of_item_id"] or []):
        raise ValueError(f"benchmark_filename={config['benchmark_filename']!r}: set alias_of_item_id: "
                         f"[{list_field}] (--alias_of_item_id=\"['{list_field}']\"); without it RecBole numbers the "
                         f"items of {list_field} apart from {config['ITEM_ID_FIELD']}, and the model would read "
                         "every history's items as other items.")


def check_required_columns(config, header, loaded, path):
    """User and item ids typed token and loaded; the time column present, typed float and loaded when ordering."""
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
        field = config[key]
        if field is None:
            continue
        if field not in header.types:
            raise ValueError(f"{key}={field!r}: {path} has no such column (columns: {header.columns}). Rename the "
                             f"column in the file's header or set {key}.")
        if header.types[field] != "token":
            _fail(path, 1, f"column {field!r} ({key}) has type {header.types[field]!r}; ids must be typed token "
                           f"({field}:token).")
        if field not in loaded:
            raise ValueError(f"load_col={config['load_col']!r}: must load {field!r} in 'inter' ({key}).")
    if config["benchmark_filename"] and config["MODEL_TYPE"].name == "SEQUENTIAL":
        check_presplit_histories(config, header, loaded, path)
    time_field = config["TIME_FIELD"]
    if not needs_time_order(config):
        return
    if time_field not in header.types:
        remedy = "Add a timestamp column or set TIME_FIELD."
        if config["MODEL_TYPE"].name != "SEQUENTIAL":
            random_order = {**(config["eval_args"] or {}), "order": "RO"}
            remedy = (f"Add a timestamp column, set TIME_FIELD, or let {config['model']} (not a sequential model) "
                      f"split each user's interactions in random order: --eval_args=\"{random_order}\".")
        raise ValueError(f"TIME_FIELD={time_field!r}: {path} has no such column (columns: {header.columns}); "
                         f"sequential models and order TO sort each user's interactions by it. {remedy}")
    if header.types[time_field] != "float":
        _fail(path, 1, f"column {time_field!r} (TIME_FIELD) has type {header.types[time_field]!r}; RecBole would "
                       f"order by the token's id, not by time. Declare it {time_field}:float.")
    if time_field not in loaded:
        raise ValueError(f"load_col={config['load_col']!r}: must load {time_field!r} in 'inter' (TIME_FIELD) to "
                         "order sequences")


def _line_bounds(raw):
    """Start and end (exclusive, without the line break) of every line of ``raw``."""
    data = np.frombuffer(raw, dtype=np.uint8)
    breaks = np.flatnonzero(data == ord("\n"))
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(raw)]))
    if raw.endswith(b"\n"):
        starts, ends = starts[:-1], ends[:-1]
    carriage = np.zeros(len(ends), dtype=bool)
    nonempty = ends > starts
    carriage[nonempty] = data[ends[nonempty] - 1] == ord("\r")
    return data, starts, ends - carriage


def _table_fast(raw, text, path, separator, header, wanted, encoding):
    """Line numbers and ``wanted`` columns of the data rows, counting separators with numpy and parsing with
    pandas' C reader: well under a second for a million rows. ``None`` where it does not apply."""
    data, starts, ends = _line_bounds(raw)
    if len(ends) and (ends - starts).max() >= csv.field_size_limit():
        return None  # the csv module's field limit decides: the row-by-row reader reports it
    separators = np.flatnonzero(data == ord(separator))
    field_counts = np.searchsorted(separators, ends) - np.searchsorted(separators, starts) + 1
    # pandas skips a line without a separator that str.strip() empties as blank, as it does an empty one
    blank = np.zeros(len(ends), dtype=bool)
    for index in np.flatnonzero(field_counts == 1):
        blank[index] = not raw[starts[index]:ends[index]].decode(encoding, errors="replace").strip()
    data_lines = np.flatnonzero(~blank[1:]) + 1  # 0-based indices of non-blank lines after the header
    if len(data_lines) and field_counts[data_lines[0]] > len(header.columns):
        _first_line_longer(path, data_lines[0] + 1, field_counts[data_lines[0]], header)
    longer = data_lines[field_counts[data_lines] > len(header.columns)]
    wrong = data_lines[field_counts[data_lines] < len(header.columns)]
    if len(wrong):
        first = raw[starts[wrong[0]]:ends[wrong[0]]].decode(encoding)
        _fail(path, wrong[0] + 1, f"the line has {field_counts[wrong[0]]} field(s), the header "
                                  f"{len(header.columns)}{_more_lines(wrong + 1)}."
                                  f"{_separator_hint(first, separator, len(header.columns))} Every line needs one "
                                  "value per header column.")
    usecols = [header.fields[header.columns.index(name)] for name in wanted]
    dtypes = {field: np.float64 if header.types[name] == "float" else "category"
              for field, name in zip(usecols, wanted)}
    read = dict(sep=separator, usecols=usecols, na_filter=False, encoding=encoding, engine="c",
                quoting=csv.QUOTE_NONE, skip_blank_lines=True)
    try:
        frame = pd.read_csv(io.BytesIO(raw), dtype=dtypes, **read)
    except ValueError:  # a float column holds something else: read it as text, classified below
        frame = pd.read_csv(io.BytesIO(raw), dtype={field: dtypes[field] if dtypes[field] == "category" else str
                                                    for field in usecols}, **read)
    if len(frame) != len(data_lines):
        return None
    notes = _longer_rows_note(path, longer + 1, field_counts[longer[0]] if len(longer) else 0, header)
    return data_lines + 1, {name: frame[field].array for name, field in zip(wanted, usecols)}, notes


def _table_rows(text, path, separator, header, wanted):
    """Line numbers, ``wanted`` columns and notes, read record by record (quoted fields, multi-character
    separators)."""
    stream = io.StringIO(text, newline="")
    if len(separator) == 1:
        reader = csv.reader(stream, delimiter=separator)
    else:
        reader = (line.rstrip("\r\n").split(separator) for line in stream)
    indices = [header.columns.index(name) for name in wanted]
    lines, values, longer, longer_fields = [], [[] for _ in wanted], [], 0
    line = 0
    try:
        for record in reader:
            start = line + 1
            line = reader.line_num if len(separator) == 1 else line + 1
            if start == 1 or not record or (len(record) == 1 and not record[0].strip()):
                continue  # the header, or a blank line (pandas skips whitespace without a separator too)
            if line != start:
                _fail(path, start, f"a quote character {QUOTE} opens a field that runs on to line {line}; RecBole "
                                   f"reads {QUOTE} as CSV quoting. Remove the quote characters or close the quote.")
            if len(record) > len(header.columns):
                if not lines:
                    _first_line_longer(path, start, len(record), header)
                longer_fields = longer_fields or len(record)
                longer.append(start)
            elif len(record) < len(header.columns):
                raw_line = text.split("\n")[start - 1].rstrip("\r")
                _fail(path, start, f"the line has {len(record)} field(s), the header {len(header.columns)}."
                                   f"{_separator_hint(raw_line, separator, len(header.columns))}"
                                   " Every line needs one value per header column.")
            lines.append(start)
            for column, index in zip(values, indices):
                column.append(record[index])
    except csv.Error as error:
        quoted = QUOTE in text.split("\n", line + 1)[line]
        cause = (f"the quote character {QUOTE} on this line opens a field that runs on; remove the quote characters"
                 if quoted else "shorten that field or split it into several columns")
        _fail(path, line + 1, f"{error}: RecBole's reader (pandas' python engine) cannot read a field over "
                              f"{csv.field_size_limit()} characters; {cause}.")
    columns = {name: pd.Categorical(column) if header.types[name] == "token" else np.asarray(column, dtype=object)
               for name, column in zip(wanted, values)}
    return np.asarray(lines), columns, _longer_rows_note(path, longer, longer_fields, header)


def _as_numbers(values, path, lines, name, missing_allowed):
    """Float values of a float column; refuses text, infinities, and missing values unless allowed."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        numbers, missing = values, np.zeros(len(values), dtype=bool)
    else:
        text = pd.Series(values, dtype=object).str.strip()
        missing = text.isin(PANDAS_MISSING).to_numpy() | (text.str.lower() == "nan").to_numpy()
        numbers = pd.to_numeric(text.where(~missing, "nan"), errors="coerce").to_numpy(dtype=np.float64)
        not_numbers = np.isnan(numbers) & ~missing
        if not_numbers.any():
            first = np.flatnonzero(not_numbers)[0]
            _fail(path, lines[first], f"{name} {values[first]!r} is not a number{_more_lines(lines[not_numbers])}. "
                                      f"{name} must be a number (e.g. Unix seconds, or the positions 1, 2, 3 of "
                                      "each user's history); convert those values or delete the lines.")
    if not missing_allowed and missing.any():
        _fail(path, lines[missing][0], f"{name} is missing{_more_lines(lines[missing])}. RecBole would fill it "
                                       "with the column mean, which moves the interaction to an arbitrary place in "
                                       "the user's history (it can become a test target). Fill in the value or "
                                       "delete those lines.")
    infinite = np.isinf(numbers) | (np.isnan(numbers) & ~missing)
    if infinite.any():
        first = np.flatnonzero(infinite)[0]
        _fail(path, lines[first], f"{name} {_value_text(values[first])} is not finite{_more_lines(lines[infinite])} "
                                  "(an infinite time sorts last and becomes the user's test target). Use finite "
                                  "numbers or delete those lines.")
    return numbers


def _check_ids(config, columns, lines, path):
    """Refuse ids that pandas reads as missing ('' or 'NA', ...): RecBole drops those lines."""
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
        field = config[key]
        if field not in columns:
            continue
        ids = columns[field]
        missing_codes = [code for code, token in enumerate(ids.categories) if token in PANDAS_MISSING]
        if missing_codes:
            missing = np.isin(ids.codes, missing_codes)
            value = ids.categories[missing_codes[0]]
            _fail(path, lines[missing][0], f"{field} is missing ({value!r}){_more_lines(lines[missing])}; pandas "
                                           "reads it as no value and RecBole drops the line. Fill in the id or "
                                           "delete those lines.")


def padded_id_notes(config, columns, lines, path):
    """A counted warning for ids with spaces around them: RecBole keeps the spaces, so ``"242 "`` and ``"242"``
    become two users or items."""
    notes = []
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
        field = config[key]
        if field not in columns:
            continue
        ids = columns[field]
        tokens = pd.Index(ids.categories).astype(str)
        padded_codes = np.flatnonzero(tokens != tokens.str.strip())
        if len(padded_codes):
            padded = np.isin(ids.codes, padded_codes)
            notes.append((logging.WARNING, f"{path}:{lines[padded][0]}: {field} {tokens[padded_codes[0]]!r} has "
                          f"spaces around it{_more_lines(lines[padded])}; {len(padded_codes)} {field} value(s) have "
                          "them, and RecBole keeps them, so each is another id than the same one without spaces. "
                          "Strip the spaces from the file if they are the same."))
    return notes


def _check_duplicates(config, columns, lines, path):
    """Refuse rows equal in user, item and time unless ``rm_dup_inter`` says how RecBole should remove them."""
    keys = [name for name in (config["USER_ID_FIELD"], config["ITEM_ID_FIELD"], config["TIME_FIELD"])
            if name in columns]
    removed = config["rm_dup_inter"] is not None or config["drop_exact_duplicates"]
    if (removed and not config["benchmark_filename"]) or len(keys) < 2:
        return  # RecBole's filters (which drop_exact_duplicates joins) do not run on pre-split benchmark files
    if config["benchmark_filename"] and config["TIME_FIELD"] not in keys:
        return  # pre-split rows without times may differ in what is not compared here, e.g. a sequential file's history
    frame = pd.DataFrame({name: columns[name].codes if hasattr(columns[name], "codes") else columns[name]
                          for name in keys})
    if not pd.util.hash_pandas_object(frame, index=False).duplicated().any():
        return  # no two rows hash alike, so none is equal (the exact comparison below is slower)
    repeated = frame.duplicated(keep="first").to_numpy()
    if not repeated.any():
        return
    row = np.flatnonzero(repeated)[0]
    original = np.flatnonzero((frame.to_numpy() == frame.to_numpy()[row]).all(axis=1))[0]
    shown = ", ".join(f"{name} {_value_text(columns[name][row])}" for name in keys)
    remedy = ("RecBole applies no filter to pre-split files (benchmark_filename), so delete them from the file."
              if config["benchmark_filename"] else
              "Delete the duplicates, or set drop_exact_duplicates: True (drops only rows equal in these columns, "
              "keeping the first; repeats at other times stay), or rm_dup_inter: first (RecBole keeps the first "
              "interaction of each user-item pair, which also drops repeats at other times).")
    _fail(path, lines[row], f"exact duplicate of line {lines[original]} ({shown}){_more_lines(lines[repeated])}. "
                            "With leave-one-out a duplicated last interaction makes the "
                            f"validation target equal the test target and inflates the metrics. {remedy}")


def time_order_notes(config, columns, lines, path):
    """Counted warnings about what chooses leave-one-out's targets (the last one or two of a user's interactions
    by ``TIME_FIELD``): RecBole keeps the times as float32, where times closer than float32 tells apart (64 s near
    today's Unix seconds, 131 s for milliseconds) tie, and ties, like exact ties in the file, keep the file's line
    order. Counted on the file as read, before RecBole's filters; with ``rm_dup_inter`` RecBole first sorts by the
    exact times (pandas), so only exact ties are left, in an order pandas' sort does not define."""
    user_field, item_field, time_field = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"], config["TIME_FIELD"]
    minimum = leave_one_out_minimum(config)
    if (not needs_time_order(config) or minimum is None
            or not {user_field, item_field, time_field} <= set(columns)):
        return []
    users = np.asarray(columns[user_field].codes)
    items = np.asarray(columns[item_field].codes)
    exact = np.asarray(columns[time_field], dtype=np.float64)
    line_order = np.arange(len(users))
    order = np.lexsort((line_order, exact, users))  # by user, exact time, line
    stored = np.lexsort((line_order, exact.astype(np.float32), users))  # as RecBole sorts
    sorted_users, sorted_times = users[order], exact[order]
    last = np.flatnonzero(np.append(sorted_users[1:] != sorted_users[:-1], True))
    length = last - np.append(0, last[:-1] + 1) + 1
    mode = config["eval_args"]["split"]["LS"]
    # (offset from the user's last interaction, interactions needed) of each target the split makes
    targets = {"valid_and_test": [(0, minimum.get("test")), (1, minimum.get("validation"))],
               "test_only": [(0, minimum.get("test"))], "valid_only": [(0, minimum.get("validation"))]}[mode]
    moved, tied = np.zeros(len(last), dtype=bool), np.zeros(len(last), dtype=bool)
    for offset, needed in targets:
        has = length >= needed
        positions = last[has] - offset
        moved[has] |= items[order[positions]] != items[stored[positions]]
        tied[has] |= sorted_times[positions] == sorted_times[positions - 1]  # needed >= 2: an earlier row exists
    before = (" (counted on the file, before RecBole's filters remove rows)"
              if set(_filters_set(config)) - {"rm_dup_inter"} else "")
    notes = []
    if moved.any() and config["rm_dup_inter"] is None:
        notes.append((logging.WARNING, f"{path}: {int(moved.sum())} of {len(last)} users get another test or "
                      f"validation target than their exact {time_field} order gives{before}: RecBole stores "
                      f"{time_field} as float32, which cannot tell apart times this close (their order falls back "
                      "to the file's lines). Write each user's positions 1, 2, 3, ... as the time (subtracting the "
                      "smallest time helps only as far as the remaining span is small)."))
    if tied.any():
        order_of_ties = ("RecBole's duplicate removal (rm_dup_inter) sorts them with pandas in no defined order"
                         if config["rm_dup_inter"] is not None else "RecBole orders ties by the file's lines")
        notes.append((logging.WARNING, f"{path}: {int(tied.sum())} of {len(last)} users' test or validation "
                      f"target has the same {time_field} as the interaction before it{before}; {order_of_ties}, "
                      "so that order chooses those targets."))
    return notes


def _ascii_compatible(encoding):
    probe = "\t\n\r,;| :" + QUOTE
    return probe.encode(encoding, errors="replace") == probe.encode("ascii")


def scan_interaction_file(path, config):
    """Check one ``.inter`` file the way RecBole will read it; returns its :class:`FileSummary`.

    Refuses, naming the line: undecodable bytes, an empty file or a header only, header columns without a
    valid ``:type``, a wrong field separator, rows with fewer fields than the header (more: a counted warning, as
    RecBole reads the header's columns; whitespace-only lines are skipped, as pandas does), missing ids,
    a missing, non-numeric or infinite timestamp (any loaded float column: non-numeric or infinite), exact
    duplicate rows unless ``rm_dup_inter`` is set, quotes that swallow lines or exceed the csv field limit.
    """
    separator = config["field_separator"] or "\t"
    encoding = config["encoding"] or "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"encoding={encoding!r}: Python knows no such encoding; use e.g. utf-8 or latin-1.") from None
    raw = read_file_bytes(path, "interaction file")
    text = decode_text(raw, path, encoding)
    header = parse_header(text, path, separator)
    loaded = loaded_columns(config, header, path)
    check_required_columns(config, header, loaded, path)
    threshold = config["threshold"]
    field = next(iter(threshold)) if isinstance(threshold, dict) and len(threshold) == 1 else None
    if field is not None and field not in loaded:
        remedy = (f"add it to load_col, e.g. --load_col=\"{{'inter': {loaded + [field]}}}\"" if field in header.types
                  else f"the file has no such column (columns: {header.columns})")
        _fail(path, 1, f"threshold={threshold!r}: column {field!r} is not loaded, and RecBole labels interactions by "
                       f"it; {remedy}.")
    header_end = text.find("\n")
    if header_end < 0 or not NOT_BLANK.search(text, header_end):
        _fail(path, None, "the file has a header but no interactions; add one line per interaction "
                          f"(columns: {header.columns}).")
    wanted = [name for name in loaded
              if name in (config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]) or header.types[name] == "float"]
    table = None
    if len(separator) == 1 and QUOTE not in text and _ascii_compatible(encoding):
        table = _table_fast(raw, text, path, separator, header, wanted, encoding)
    if table is None:
        table = _table_rows(text, path, separator, header, wanted)
    lines, columns, notes = table
    notes = absent_requested_columns_note(config, header, path) + notes
    _check_ids(config, columns, lines, path)
    for name in wanted:
        if header.types[name] == "float":
            columns[name] = _as_numbers(columns[name], path, lines, name,
                                        missing_allowed=name != config["TIME_FIELD"])
    _check_duplicates(config, columns, lines, path)
    notes = tuple(notes) + tuple(padded_id_notes(config, columns, lines, path)) + tuple(
        time_order_notes(config, columns, lines, path))
    user_field = config["USER_ID_FIELD"]
    users = len(columns[user_field].categories) if user_field in columns else 0
    return FileSummary(rows=len(lines), users=users, notes=notes)


_SUMMARIES = {}


def check_interaction_files(config):
    """:func:`scan_interaction_file` for every interaction file of ``config``, summed (``None`` when the
    ``.inter`` file is yet to be downloaded by RecBole); a file that has not changed since it was last checked
    under the same settings is not read again."""
    settings = tuple(repr(config[key]) for key in ("field_separator", "encoding", "load_col", "unload_col",
                                                   "USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD", "rm_dup_inter",
                                                   "drop_exact_duplicates", "threshold", "benchmark_filename",
                                                   "eval_args", "MODEL_TYPE"))
    paths = inter_file_paths(config)
    if not config["benchmark_filename"] and not os.path.exists(paths[0]):
        return None  # a dataset RecBole downloads into data_path (configurator.resolve_data_path allowed it)
    summaries = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"dataset {config['dataset']!r}: no interaction file at {path}. Put <name>/<name>.inter under a "
                f"folder and pass --data_path=<that folder> (for the benchmark sets of this project, "
                f"--data_path=../shared/data), or set RECBOLE_DIFFUSION_DATA to it."
            )
        status = os.stat(path)
        key = (os.path.abspath(path), status.st_size, status.st_mtime_ns, settings)
        if key not in _SUMMARIES:
            _SUMMARIES[key] = scan_interaction_file(path, config)
        summaries.append(_SUMMARIES[key])
    return FileSummary(rows=sum(s.rows for s in summaries), users=sum(s.users for s in summaries),
                       notes=tuple(note for s in summaries for note in s.notes))


FILTER_KEYS = ("drop_exact_duplicates", "rm_dup_inter", "val_interval", "user_inter_num_interval",
               "item_inter_num_interval")


def _filters_set(config):
    """The filtering keys that remove interactions in this configuration (RecBole's "[0,inf)" keeps all)."""
    return {key: config[key] for key in FILTER_KEYS
            if config[key] not in (None, False) and str(config[key]).replace(" ", "") != "[0,inf)"}


def check_loaded_dataset(config, dataset, summary):
    """Right after ``create_dataset``: enough items for the ranking cut-offs, and what RecBole's filters removed.

    Returns ``(level, message)`` pairs for the log: the file check's notes (rows read differently from the
    file), what the configured filters removed (INFO), or a WARNING when interactions disappeared without a
    filter key (e.g. users or items missing from ``.user`` / ``.item`` files).
    """
    items = dataset.item_num - 1  # without the padding id
    largest_k = max(config["topk"])
    if items < largest_k:
        raise ValueError(f"topk={config['topk']}: dataset {config['dataset']!r} has {items} items, fewer than the "
                         f"largest cut-off {largest_k}, so a full ranking cannot fill the top {largest_k}. Lower "
                         "topk (e.g. --topk=[5,10]) or use a dataset with more items.")
    notes = list(summary.notes) if summary is not None else []
    if summary is None or config["benchmark_filename"]:
        return notes
    frame = dataset.inter_feat
    removed_rows = summary.rows - len(frame)
    if removed_rows <= 0:
        return notes
    users = frame[dataset.uid_field].nunique() if dataset.uid_field in frame else summary.users
    counts = (f"{removed_rows} of {summary.rows} interactions and {summary.users - users} of {summary.users} "
              "users")
    filters = _filters_set(config)
    if filters:
        settings = ", ".join(f"{key}={value!r}" for key, value in filters.items())
        return notes + [(logging.INFO, f"RecBole's filters ({settings}) removed {counts}; the metrics cover the rest.")]
    return notes + [(logging.WARNING, f"RecBole removed {counts} while loading (filter_inter_by_user_or_item drops "
                              "interactions of users or items missing from the .user / .item files); the metrics "
                              "cover the rest.")]


def expected_splits(config):
    """``(validation, test)``: whether the configured split produces each of them."""
    if config["benchmark_filename"]:
        files = len(config["benchmark_filename"])
        return files >= 2, files >= 3
    split = (config["eval_args"] or {}).get("split") or {}
    if not split:
        return False, False
    mode, value = next(iter(split.items()))
    if mode == "LS":
        return value in ("valid_and_test", "valid_only"), value in ("valid_and_test", "test_only")
    ratios = list(value or []) + [0, 0, 0]
    return ratios[1] > 0, ratios[2] > 0


def leave_one_out_minimum(config):
    """Interactions a user needs for a ``{"test": n, "validation": n}`` target under leave-one-out, or ``None``
    for another split. A sequential model's first interaction is only ever history, so it needs one more."""
    split = (config["eval_args"] or {}).get("split") or {}
    if config["benchmark_filename"] or "LS" not in split:
        return None
    history = 1 if config["MODEL_TYPE"].name == "SEQUENTIAL" else 0
    mode = split["LS"]
    if mode == "valid_and_test":
        return {"test": 2 + history, "validation": 3 + history}
    return {"validation" if mode == "valid_only" else "test": 2 + history}


def _users_in(loader, user_field):
    if loader is None or user_field is None:
        return 0
    return len(np.unique(np.asarray(loader._dataset.inter_feat[user_field])))


def check_split(config, dataset, train, valid, test, user_lengths):
    """After ``data_preparation``: refuse a split without any test or validation target (the run would end
    with ``test_result`` None or never validate); warn, counted, about users left out of evaluation.

    Returns ``(level, message)`` pairs for the log.
    """
    users = int(np.count_nonzero(user_lengths))
    longest = int(user_lengths.max()) if len(user_lengths) else 0
    user_field = dataset.uid_field
    evaluated = {"validation": _users_in(valid, user_field), "test": _users_in(test, user_field)}
    expected = dict(zip(("validation", "test"), expected_splits(config)))
    minimum = leave_one_out_minimum(config)
    split = (config["eval_args"] or {}).get("split")
    kind = "sequential" if config["MODEL_TYPE"].name == "SEQUENTIAL" else config["MODEL_TYPE"].name.lower()
    if minimum:
        rule = (f"with leave-one-out (eval_args split {split}) a {kind} model needs "
                + " and ".join(f"{count} interactions for a {name} target" for name, count in minimum.items()))
    else:
        rule = f"eval_args split {split} decides which users get one"
    for name in ("test", "validation"):
        if expected[name] and evaluated[name] == 0:
            raise ValueError(
                f"dataset {config['dataset']!r} ({inter_file_paths(config)[0]}): no user has enough interactions "
                f"for a {name} target: {rule}; the longest history here has {longest}. Use a dataset with longer "
                "histories or change eval_args."
            )
    messages = _sampled_ranking_notes(config, dataset, user_lengths)
    left_out = [f"{users - evaluated[name]} of {users} users have no {name} target"
                for name in ("test", "validation") if expected[name] and evaluated[name] < users]
    if not left_out:
        return messages
    unused = users - _users_in(train, user_field)
    unused_text = f" ({unused} with a single interaction are not used at all)" if unused > 0 else ""
    drop_hint = (f" To leave them out explicitly, set user_inter_num_interval: \"[{max(minimum.values())},inf)\"."
                 if minimum else "")
    return messages + [(logging.WARNING, f"{'; '.join(left_out)}: {rule}. They only train the model{unused_text}; "
                                         f"the test metrics cover {evaluated['test']} users.{drop_hint}")]


SAMPLED_MODE = re.compile(r"^(uni|pop)(\d+)$")


def _sampled_ranking_notes(config, dataset, user_lengths):
    """A counted warning for a sampled ranking (``uni100``, ``pop100``) that some users cannot fill with distinct
    items they have not interacted with: RecBole draws the negatives with replacement, and for those users
    repeats are certain, so their metrics are not those of a 1-in-(N + 1) ranking."""
    modes = (config["eval_args"] or {}).get("mode") or {}
    sampled = [(split, mode, SAMPLED_MODE.match(str(mode))) for split, mode in
               (sorted(modes.items()) if isinstance(modes, dict) else [])]
    sampled = [(split, mode, int(match.group(2))) for split, mode, match in sampled if match]
    if not sampled:
        return []  # a full ranking: nothing to count
    items = dataset.item_num - 1  # without the padding id
    frame = dataset.inter_feat
    pairs = np.unique(np.asarray(frame[dataset.uid_field]).astype(np.int64) * dataset.item_num
                      + np.asarray(frame[dataset.iid_field]))
    distinct = np.bincount(pairs // dataset.item_num, minlength=len(user_lengths))
    lengths = distinct[user_lengths > 0]  # distinct items of each user (id 0 pads)
    notes = []
    for split, mode, negatives in sampled:
        short = int(np.count_nonzero(lengths > items - negatives))
        if short:
            notes.append((logging.WARNING, f"eval_args mode {mode} ({split}): {short} of {len(lengths)} users have "
                                           f"fewer than {negatives} "
                                           f"of the {items} items left that they did not interact with, so their "
                                           f"{negatives} sampled negatives (RecBole draws them with replacement) "
                                           "certainly repeat items and their metrics are not those of a "
                                           f"1-in-{negatives + 1} ranking. Use a full ranking (mode full) or fewer "
                                           "negatives on a catalogue this small."))
    return notes


@contextlib.contextmanager
def held_log_records():
    """Hold the root logger's records (INFO and up) while the data is loaded and checked, before the log file
    exists; the caller replays them once it does, so RecBole's dataset and split messages still reach the log.
    A refused run drops them and leaves no log."""
    root = logging.getLogger()
    holder = logging.handlers.BufferingHandler(capacity=sys.maxsize)
    level = root.level
    root.addHandler(holder)
    root.setLevel(min(level, logging.INFO) if level else logging.NOTSET)
    try:
        yield holder.buffer
    finally:
        root.removeHandler(holder)
        root.setLevel(level)
