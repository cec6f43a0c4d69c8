"""One command line for every entry (the runner, ``compare``, ``tune``, ``recommend``, the self-check).

* An entry's own options are matched by their whole name only: argparse's prefix matching would turn a RecBole
  key into an option (``--seed=5`` into ``--seeds``, ``--trial=3`` into ``--trials``).
* Every other ``--key=value`` or ``--key value`` is a RecBole configuration key, in the entries that take them;
  a bare ``--resume`` means ``--resume=True``. A key that begins an option's name is refused with that option
  named (it is a typo of the option far more often than a configuration key).
* ``--config_files`` takes several files, space- or comma-separated, in one argument or several.
* Anything else gets the same message in every entry: ``unrecognised argument '...'``.
"""

import argparse
import re

# Configuration keys that may be given without a value, meaning True.
BARE_FLAGS = ("resume",)


def entry_parser(description, epilog=None):
    """An ``argparse`` parser for an entry, without prefix matching of its options."""
    return argparse.ArgumentParser(description=description, epilog=epilog, allow_abbrev=False)


def add_config_files(parser, help_text="YAML files, later ones win (space- or comma-separated)"):
    parser.add_argument("--config_files", nargs="*", default=[], help=help_text)


def config_file_list(entries):
    """``--config_files`` values as one list of paths: ``a.yaml b.yaml``, ``a.yaml,b.yaml`` or both."""
    return [path for entry in entries or [] for path in re.split(r"[,\s]+", entry) if path]


def _own_options(parser):
    return sorted(option for action in parser._actions for option in action.option_strings
                  if option.startswith("--"))


def _refuse(parser, item):
    parser.error(f"unrecognised argument {item!r}")


def key_value_overrides(parser, items):
    """RecBole keys given as ``--key=value`` or ``--key value`` (``--resume`` alone: True); anything else, and a
    key that begins one of the entry's own options, is refused through ``parser``."""
    overrides, index = {}, 0
    options = _own_options(parser)
    while index < len(items):
        item = items[index]
        if not item.startswith("--") or item == "--":
            _refuse(parser, item)
        key, equals, value = item[2:].partition("=")
        if not equals:
            if index + 1 < len(items) and not items[index + 1].startswith("--"):
                value = items[index + 1]
                index += 1
            elif key in BARE_FLAGS:
                value = "True"
            else:
                parser.error(f"{item} needs a value: configuration keys are written --key=value or --key value")
        longer = [option for option in options if option.startswith(f"--{key}")]
        if longer:
            parser.error(f"unrecognised argument {item!r}: options are matched by their whole name; did you mean "
                         f"{' or '.join(longer)}?")
        overrides[key] = value
        index += 1
    return overrides


def parse_entry(parser, argv, overrides=True):
    """``(args, overrides)``: the entry's own options (``args.config_files`` as a list of paths when the entry has
    that option) and, when the entry takes them, every RecBole key given (``{}`` otherwise: anything else is
    refused)."""
    args, rest = parser.parse_known_args(argv)
    if not overrides and rest:
        _refuse(parser, rest[0])
    if hasattr(args, "config_files"):
        args.config_files = config_file_list(args.config_files)
    return args, key_value_overrides(parser, rest) if overrides else {}
