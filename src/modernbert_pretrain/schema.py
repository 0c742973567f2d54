"""Typed dict -> dataclass conversion with errors that name the field and the fix.

Unknown keys are errors that name the closest valid key (the published code silently ignored
`auto_resume` for `autoresume`)."""

from __future__ import annotations

import dataclasses
import decimal
import difflib
import os
import re
import types
import typing
from typing import Any, Union


class ConfigError(ValueError):
    """A configuration problem, raised before any work starts."""


def closest(key: str, options) -> str:
    match = difflib.get_close_matches(key, list(options), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {sorted(options)}"


def check_keys(values: dict, allowed, where: str) -> None:
    for key in values:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}{closest(str(key), allowed)}")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def coerce(value: Any, tp, where: str) -> Any:
    """Convert a YAML value to `tp`, or raise a ConfigError that says what was expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of "
                          f"{[_type_name(a) for a in args]}")
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        builder = getattr(tp, "from_dict", None)
        if builder is not None:
            try:
                return builder(value)
            except ConfigError:
                raise
            except (ValueError, TypeError) as err:
                raise ConfigError(f"{where}: {err}") from err
        return build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return _coerce_scalar(value, tp, where)


_COUNT_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_COUNT_RE = re.compile(r"^\s*([+-]?[0-9][0-9_]*(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*(?:tok|tokens)?\s*$",
                       re.IGNORECASE)


def read_count(value: Any) -> int | None:
    """A whole number from an int, an integral float or a string such as ``1_024``, ``1.7e12``, ``50B`` or
    ``1.7T`` (suffixes K/M/B/G/T, optional ``tok``); None when `value` is not one (booleans included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if not isinstance(value, str):
        return None
    match = _COUNT_RE.match(value)
    if not match:
        return None
    # Decimal keeps '1.7T' exact (1.7 * 10**12 in floats is not a whole number for every mantissa).
    number = decimal.Decimal(match.group(1).replace("_", "")) * _COUNT_SUFFIXES[match.group(2).lower()]
    return int(number) if number == number.to_integral_value() else None


def _coerce_scalar(value: Any, tp, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        count = read_count(value)
        if count is not None:
            return count
        raise ConfigError(f"{where}: expected an integer (e.g. 1024 or 1.7e12), got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number (e.g. 8e-4), got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


BEFORE = "before"
"""Field metadata key: a function applied to the YAML value before type checking (e.g. to read YAML's
booleans as the words they were typed as)."""


def _before(f: dataclasses.Field, value: Any) -> Any:
    normalize = f.metadata.get(BEFORE)
    return value if normalize is None else normalize(value)


def build(cls, values: dict, where: str = ""):
    """Build dataclass `cls` from a dict, checking keys and types; `__post_init__` checks values."""
    prefix = f"{where}." if where else ""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    check_keys(values, fields, where or cls.__name__)
    kwargs = {name: coerce(_before(fields[name], value), hints[name], f"{prefix}{name}")
              for name, value in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{where or cls.__name__}: missing required key(s) {missing}") from err
        raise ConfigError(f"{where or cls.__name__}: {err}") from err
    except ValueError as err:  # from __post_init__: add the path unless the message already has it
        msg = str(err)
        if not where or msg.startswith(where):
            raise
        raise type(err)(f"{where}: {msg}") if isinstance(err, ConfigError) else ConfigError(f"{where}: {msg}") from err


DEBUG_ENV = "MODERNBERT_DEBUG"
"""Set to 1 to see the traceback behind a one-line refusal, in every command (same as --debug)."""


def debug_requested(flag: bool = False) -> bool:
    """--debug on the command line, or MODERNBERT_DEBUG set to anything but empty or 0."""
    return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")
