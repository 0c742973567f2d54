"""Reading a YAML config file with `key=value` overrides from the command line, for train.py and the
data inspector alike.

The YAML is read with OmegaConf (so `${workdir}` interpolation works); a relative `workdir` in the YAML is
taken from the YAML's folder. Override values that are paths (by their key's last part) are resolved where
they are typed: against the directory the command runs in, through the same resolver that tells a
Hugging Face Hub id (`data.tokenizer=org/name`) from a folder. Paths written in the YAML are resolved
later, against the YAML's folder, by the schema that knows which keys are paths.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .schema import ConfigError

CLI_PATH_KEYS = ("workdir", "path", "folder", "local", "remote", "tokenizer", "metrics_file")
"""Keys (last dotted part) whose command-line values are paths."""
HUB_MODEL_KEYS = ("load_from.path", "init_from.path")
"""Keys that may also name a Hugging Face Hub model (`owner/name`): kept as is when no such local path exists."""


def resolve_cli_value(key: str, value: Any) -> Any:
    """An override's value with a relative path made absolute against the working directory."""
    from .data.tokenizer_info import resolve_path, resolve_tokenizer
    from .model.hf import is_hub_id

    leaf = key.rsplit(".", 1)[-1]
    if not (isinstance(value, str) and value and leaf in CLI_PATH_KEYS) or value.startswith("${"):
        return value
    if leaf == "tokenizer":
        return resolve_tokenizer(value, os.getcwd())
    local = resolve_path(value, os.getcwd(), key)
    if key in HUB_MODEL_KEYS and is_hub_id(value) and not os.path.exists(local):
        return value
    return local


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` strings -> {key: value}; a value is read as YAML (so `[1, 2]` is a list), its `${...}`
    interpolations left for `load_yaml` to resolve against the whole config."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. optimizer.lr=3e-4)")
        key, raw = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"override {item!r} has no key before '='; write key=value (e.g. optimizer.lr=3e-4)")
        out[key.strip()] = resolve_cli_value(key.strip(), _override_value(item, raw))
    return out


def _override_value(item: str, raw: str) -> Any:
    if not raw:
        return ""
    try:
        # to_container without resolving: reading the node would resolve `${...}` against this one-key config
        return OmegaConf.to_container(OmegaConf.create(f"v: {raw}"), resolve=False)["v"]
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(err)}); close its "
                          "brackets, or quote a value meant as text") from err


def _yaml_problem(err: BaseException, path: Path | None = None) -> str:
    """A YAML error as `<file>:<line>:<column>: <problem>` (YAML's line and column, counted from 1), or the problem
    alone for an override's value."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or not problem:
        return " ".join(str(err).split())
    hint = ""
    if "\\t" in problem or _char_at(path, mark.line, mark.column) == "\t":
        hint = " (a tab: indent YAML with spaces)"
    elif problem.startswith("found duplicate key"):
        hint = " (a key may appear once per mapping: keep one)"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: {problem}{hint}" if path is not None else problem + hint


def _char_at(path: Path | None, line: int, column: int) -> str:
    """The character at a 0-based position of a text file ('' when there is none); libyaml does not name it."""
    try:
        text = path.read_text().splitlines()[line] if path is not None else ""
    except (OSError, ValueError, IndexError):
        return ""
    return text[column] if column < len(text) else ""


def load_yaml(yaml_path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """YAML + overrides -> a plain dict with interpolations resolved. Paths in the YAML stay as written
    (except `workdir`); paths in overrides are absolute."""
    path = Path(yaml_path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        conf = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse YAML: {_yaml_problem(err, path)}") from err
    except (OmegaConfBaseException, OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot parse YAML: {err}") from err
    if not isinstance(OmegaConf.to_container(conf), dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    if "workdir" in conf and isinstance(conf.workdir, str) and not os.path.isabs(conf.workdir):
        conf.workdir = str((config_dir(path) / conf.workdir).resolve())
    given = parse_overrides(list(overrides or []))
    for key, value in given.items():
        try:
            OmegaConf.update(conf, key, value, merge=True, force_add=True)
        except OmegaConfBaseException as err:
            raise ConfigError(f"override {key}={value!r}: {_omegaconf_problem(err)}") from err
    for key, value in given.items():  # resolved after all overrides are in: one may refer to another
        try:
            node = OmegaConf.select(conf, key)  # a scalar is resolved here, a mapping or list below
            if isinstance(node, (DictConfig, ListConfig)):
                OmegaConf.to_container(node, resolve=True)
        except OmegaConfBaseException as err:
            raise ConfigError(f"override {key}={value!r}: cannot resolve it: {_omegaconf_problem(err)}; refer to a "
                              "key of the config, e.g. ${workdir}") from err
    try:
        return OmegaConf.to_container(conf, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: cannot resolve interpolation: {_omegaconf_problem(err)}") from err


def _omegaconf_problem(err: OmegaConfBaseException) -> str:
    """OmegaConf's message without the lines of object types it appends; the key at fault named."""
    message = str(err).split("\n")[0].strip()
    key = getattr(err, "full_key", None)
    return f"{message} (at key {key})" if key and str(key) not in message else message


def config_dir(yaml_path: str | os.PathLike) -> Path:
    """The folder relative paths in a YAML are taken from."""
    return Path(yaml_path).resolve().parent
