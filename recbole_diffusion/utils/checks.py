"""Small checks of configuration values, each raising ``ValueError`` that names the key, its value and what is
allowed: the vocabulary of every key check in the package (the models', the configuration's)."""


def fail(key, value, requirement):
    raise ValueError(f"{key}={value!r}: {requirement}")


def require_int(config, key, minimum):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(key, value, f"must be an integer >= {minimum}")
    return value


def require_in(config, key, allowed):
    value = config[key]
    if value not in allowed:
        fail(key, value, f"must be one of {list(allowed)}")


def require_range(config, key, low, high, low_open=False, high_open=False):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(key, value, "must be a number")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        fail(key, value, f"must lie in {interval}")


def require_bool(config, key):
    """True or False; 1 and 0 (RecBole reads ``--key=1`` as the integer, and its own ``if config[key]`` takes it)
    are stored as the booleans they mean. A string is refused: RecBole would take any non-empty one, 'no'
    included, as true."""
    value = config[key]
    if not isinstance(value, bool) and not (isinstance(value, int) and value in (0, 1)):
        fail(key, value, "must be True or False (or 1 or 0; a string such as 'no' is neither: write --key=True or "
                         "--key=False)")
    config[key] = bool(value)
    return config[key]
