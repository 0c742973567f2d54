"""What the loader needs from a tokenizer: special token ids, the mask id and the vocabulary size.

Also resolves paths of a data config against the config file's directory (never the working
directory).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from modernbert_pretrain.data.config import DataConfig, StreamConfig
from modernbert_pretrain.data.errors import DataConfigError, TokenizerLoadError

_URL_SCHEMES = ("s3://", "gs://", "oci://", "azure://", "azure-dl://", "http://", "https://", "sftp://",
                "dbfs:", "hf://")


@dataclass(frozen=True)
class TokenizerInfo:
    """Token ids the loader relies on."""

    name: str
    """Where the tokenizer was loaded from."""
    vocab_size: int
    """``len(tokenizer)``: every id is below this (embedding rows the model needs)."""
    special_ids: tuple[int, ...]
    """All special ids ([CLS], [SEP], [PAD], [MASK], [UNK], added special tokens): never masked."""
    mask_id: int
    cls_id: int | None
    sep_id: int | None
    pad_id: int | None

    def special_lookup(self) -> np.ndarray:
        """Boolean table over the vocabulary: True at special ids. Shape (vocab_size,)."""
        table = np.zeros(self.vocab_size, dtype=bool)
        table[list(self.special_ids)] = True
        return table

    def replacement_ids(self) -> np.ndarray:
        """Ids a random replacement may draw from: the non-special vocabulary. Shape (n,)."""
        return np.flatnonzero(~self.special_lookup()).astype(np.int64)


def load_tokenizer(name_or_path: str):
    """Load a fast transformers tokenizer, or raise TokenizerLoadError naming the source."""
    try:
        tokenizer = _from_pretrained(name_or_path)
    except Exception as err:  # transformers raises OSError, ValueError, HTTP errors ...
        hint = ("the folder should hold tokenizer.json and tokenizer_config.json (see "
                "data_prep/train_tokenizer.py)") if os.path.isdir(name_or_path) else (
            "give a local folder (relative to the config file) or a Hugging Face name that is "
            "reachable or cached")
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise TokenizerLoadError(f"cannot load tokenizer {name_or_path!r}: {reason[:300]}; {hint}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerLoadError(f"tokenizer {name_or_path!r} is not a fast tokenizer (needs tokenizer.json)")
    return tokenizer


def _from_pretrained(name_or_path: str):
    """What ``AutoTokenizer.from_pretrained`` returns. A local folder whose tokenizer_config.json names
    PreTrainedTokenizerFast (what data_prep/train_tokenizer.py and ModernBERT's released tokenizer write) is
    loaded with that class directly, which is the class AutoTokenizer resolves it to: importing transformers'
    auto classes costs 3.5 s more on a 2-core CPU (they pull in its generation utilities and sklearn), in every
    dry run and data-prep process."""
    config = os.path.join(name_or_path, "tokenizer_config.json")
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as f:
                settings = json.load(f)
        except (OSError, ValueError):
            settings = {}
        if isinstance(settings, dict) and settings.get("tokenizer_class") == "PreTrainedTokenizerFast" \
                and "auto_map" not in settings:
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(name_or_path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path)


@lru_cache(maxsize=16)
def tokenizer_info(name_or_path: str) -> TokenizerInfo:
    """Read special ids and vocabulary size of a tokenizer (cached per name)."""
    tokenizer = load_tokenizer(name_or_path)
    if tokenizer.mask_token_id is None:
        raise TokenizerLoadError(
            f"tokenizer {name_or_path!r} has no mask token; register [MASK] as its mask_token"
        )
    special = set(int(i) for i in tokenizer.all_special_ids)
    for token_id, added in tokenizer.added_tokens_decoder.items():
        if getattr(added, "special", False):
            special.add(int(token_id))
    return TokenizerInfo(
        name=name_or_path,
        vocab_size=len(tokenizer),
        special_ids=tuple(sorted(special)),
        mask_id=int(tokenizer.mask_token_id),
        cls_id=tokenizer.cls_token_id,
        sep_id=tokenizer.sep_token_id,
        pad_id=tokenizer.pad_token_id,
    )


# ---- path resolution --------------------------------------------------------------------------


def is_url(path: str) -> bool:
    return path.startswith(_URL_SCHEMES)


def resolve_path(path: str, config_dir: str | None, field_name: str) -> str:
    """Absolute form of ``path``: as is when absolute or a URL, else joined to ``config_dir``."""
    path = os.path.expanduser(path)
    if is_url(path) or os.path.isabs(path):
        return path
    if config_dir is None:
        raise DataConfigError(
            f"{field_name}: relative path {path!r} needs the config file's directory; pass "
            f"config_dir= (paths are never taken from the working directory) or use an absolute path"
        )
    return os.path.normpath(os.path.join(os.path.abspath(config_dir), path))


def resolve_tokenizer(name: str, config_dir: str | None) -> str:
    """A tokenizer folder relative to the config file, or the name unchanged (a Hub name)."""
    expanded = os.path.expanduser(name)
    if os.path.isabs(expanded):
        return expanded
    if expanded.startswith(("./", "../")) or expanded in (".", ".."):
        return resolve_path(expanded, config_dir, "data.tokenizer")
    if config_dir is not None:
        candidate = os.path.join(os.path.abspath(config_dir), expanded)
        if os.path.isdir(candidate):
            return os.path.normpath(candidate)
    return name


def resolve_config(cfg: DataConfig, config_dir: str | None) -> DataConfig:
    """A copy of ``cfg`` with every path made absolute relative to ``config_dir``."""

    def fix_stream(stream: StreamConfig, where: str) -> StreamConfig:
        remote = stream.remote
        if remote is not None and not is_url(remote):
            remote = resolve_path(remote, config_dir, f"{where}.remote")
        return dataclasses.replace(stream, local=resolve_path(stream.local, config_dir, f"{where}.local"),
                                   remote=remote)

    streams = [fix_stream(s, f"data.streams[{i}]") for i, s in enumerate(cfg.streams)]
    local = resolve_path(cfg.local, config_dir, "data.local") if cfg.local is not None else None
    remote = cfg.remote
    if remote is not None and not is_url(remote):
        remote = resolve_path(remote, config_dir, "data.remote")
    return dataclasses.replace(cfg, streams=streams, local=local, remote=remote,
                               tokenizer=resolve_tokenizer(cfg.tokenizer, config_dir))
