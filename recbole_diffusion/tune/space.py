"""Search spaces in RecBole's ``.hyper`` format, read as RecBole 1.2.1's ``HyperTuning`` reads them, as Optuna
distributions.

``key choice [...]``, ``key uniform a,b``, ``key quniform a,b,q``, ``key loguniform a,b`` with natural-log bounds
(``loguniform -8,0`` is e^-8 .. 1). Values are parsed with ``ast.literal_eval``, never ``eval``; full-line ``#``
comments are allowed (RecBole's reader refuses them). ``quniform a,b,q`` takes the multiples of ``q`` that hyperopt
takes (``round(uniform(a, b) / q) * q``, so ``quniform 1,10,4`` is 0, 4 or 8), integers when ``q`` is whole (hyperopt
gives floats such as 64.0). List and dict choices, which Optuna cannot store, travel as labels.
"""

import ast
import math
import os
from typing import NamedTuple

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

KINDS = ("choice", "uniform", "quniform", "loguniform")


class Param(NamedTuple):
    """One searched key: its ``.hyper`` line and the Optuna distribution it becomes."""

    name: str
    kind: str
    text: str          # the value as written, e.g. "-8,0": part of the study's identity
    distribution: object
    labels: dict       # choice label -> value, for lists and dicts that Optuna cannot store as choices


def _numbers(text, count, where):
    parts = text.split(",")
    if len(parts) != count:
        raise ValueError(f"{where}: expected {count} comma-separated numbers, got {text!r}")
    try:
        return [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"{where}: {text!r} holds something that is not a number") from None


def parse_param(line, where):
    """A ``.hyper`` line (``name kind value``, value spaces removed as RecBole does) as a :class:`Param`."""
    fields = line.split()
    if len(fields) < 3:
        raise ValueError(f"{where}: expected 'key kind values', got {line.strip()!r}")
    name, kind, text = fields[0], fields[1], "".join(fields[2:])
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {kind!r} for {name}; expected one of {', '.join(KINDS)}")
    labels = {}
    if kind == "choice":
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"{where}: the choices of {name}, {text!r}, are not a Python literal list") from None
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"{where}: the choices of {name} must be a non-empty list, got {text!r}")
        choices = []
        for value in values:
            if value is None or isinstance(value, (bool, int, float, str)):
                choices.append(value)
            else:
                labels[repr(value)] = value
                choices.append(repr(value))
        if len(set(map(repr, choices))) != len(choices):
            raise ValueError(f"{where}: the choices of {name} repeat a value: {text!r}")
        return Param(name, kind, text, CategoricalDistribution(choices), labels)
    if kind == "quniform":
        low, high, step = _numbers(text, 3, where)
        if step <= 0:
            raise ValueError(f"{where}: the step of {name} must be positive, got {step:g}")
    else:
        low, high = _numbers(text, 2, where)
    if not low < high:
        raise ValueError(f"{where}: the bounds of {name} must satisfy low < high, got {text!r}")
    if kind == "uniform":
        return Param(name, kind, text, FloatDistribution(low, high), labels)
    if kind == "loguniform":
        return Param(name, kind, text, FloatDistribution(math.exp(low), math.exp(high), log=True), labels)
    # hyperopt's quniform is round(uniform(low, high) / q) * q: multiples of q, from round(low / q) * q to
    # round(high / q) * q (RecBole's meaning); Optuna's step counts from low instead.
    first, last = round(low / step), round(high / step)
    if first == last:
        raise ValueError(f"{where}: {name} has a single multiple of {step:g} between {low:g} and {high:g}; write it "
                         "as a fixed key")
    if float(step).is_integer():
        return Param(name, kind, text, IntDistribution(first * int(step), last * int(step), step=int(step)), labels)
    decimals = max(0, -math.floor(math.log10(step)) + 6)  # multiples of 0.1 without float noise (0.30000000000000004)
    return Param(name, kind, text, FloatDistribution(round(first * step, decimals), round(last * step, decimals),
                                                     step=step), labels)


def read_space(path):
    """The search space of a ``.hyper`` file: ``{key: Param}`` in file order."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"search space {path!r} does not exist (pass --space FILE, a RecBole .hyper file)")
    space = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            param = parse_param(line, f"{path}:{number}")
            if param.name in space:
                raise ValueError(f"{path}:{number}: {param.name} is searched twice")
            space[param.name] = param
    if not space:
        raise ValueError(f"search space {path!r} has no key to search")
    return space


def suggest(trial, space):
    """The trial's values of every searched key, as the configuration receives them."""
    values = {}
    for name, param in space.items():
        distribution = param.distribution
        if isinstance(distribution, CategoricalDistribution):
            value = trial.suggest_categorical(name, distribution.choices)
        elif isinstance(distribution, IntDistribution):
            value = trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step)
        else:
            value = trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step,
                                        log=distribution.log)
        values[name] = param.labels.get(value, value) if isinstance(value, str) else value
    return values


def decoded_params(params, space):
    """A trial's stored parameters (choice labels) as configuration values."""
    return {name: space[name].labels.get(value, value) if isinstance(value, str) and name in space else value
            for name, value in params.items()}
