"""Which tokenizer wrote a shard folder, and whether ``data.tokenizer`` is the same one.

``tokenize_to_mds`` writes ``tokenizer_fingerprint.json`` beside ``index.json``: the tokenizer's
name, vocabulary size and a sha256 over its vocabulary (token -> id) and special tokens. Ids from
another tokenizer are valid integers that silently mean other tokens, so every stream is compared
before the loader reads a sample. Shards written by other tools have no fingerprint: they get a
warning, and the loader refuses the first id outside the vocabulary.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from functools import lru_cache
from typing import Any

from modernbert_pretrain.data.config import DataConfig, StreamConfig
from modernbert_pretrain.data.errors import ShardError, TokenizerMismatchError
from modernbert_pretrain.data.streaming_adapter import download_file

FINGERPRINT_NAME = "tokenizer_fingerprint.json"
FINGERPRINT_VERSION = 1

log = logging.getLogger(__name__)


def fingerprint_of(tokenizer: Any, name: str) -> dict[str, Any]:
    """The fingerprint of a loaded transformers tokenizer (``name``: where it was loaded from)."""
    vocab = sorted(((str(tok), int(i)) for tok, i in tokenizer.get_vocab().items()), key=lambda kv: (kv[1], kv[0]))
    special = sorted((str(t), int(i)) for t, i in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids))
    payload = json.dumps({"vocab": vocab, "special": special}, ensure_ascii=False, separators=(",", ":"))
    return {"version": FINGERPRINT_VERSION, "name": name, "vocab_size": len(tokenizer),
            "sha256": hashlib.sha256(payload.encode("utf-8")).hexdigest()}


@lru_cache(maxsize=16)
def tokenizer_fingerprint(name_or_path: str) -> dict[str, Any]:
    """Fingerprint of the tokenizer at ``name_or_path`` (cached per name)."""
    from modernbert_pretrain.data.tokenizer_info import load_tokenizer

    return fingerprint_of(load_tokenizer(name_or_path), name_or_path)


def write_fingerprint(folder: str, fingerprint: dict[str, Any]) -> str:
    path = os.path.join(folder, FINGERPRINT_NAME)
    with open(path, "w") as f:
        json.dump(fingerprint, f, indent=1)
        f.write("\n")
    return path


def read_fingerprint(folder: str) -> dict[str, Any] | None:
    """The fingerprint recorded in ``folder``, or None when there is none."""
    path = os.path.join(folder, FINGERPRINT_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        if not isinstance(record, dict) or not {"sha256", "vocab_size"} <= set(record):
            raise ValueError("expected an object with sha256 and vocab_size")
    except (OSError, ValueError) as err:
        raise ShardError(f"{path}: unreadable tokenizer fingerprint ({err}); re-create the shards with "
                         f"data_prep/tokenize_to_mds.py or delete the file to skip the check") from err
    return record


def _describe(fp: dict[str, Any]) -> str:
    return f"{fp.get('name', '?')} (vocabulary {fp.get('vocab_size')}, sha256 {str(fp.get('sha256'))[:12]})"


def _fetch_remote(stream: StreamConfig, folder: str, split: str | None, timeout: float) -> None:
    """Download the remote's fingerprint into ``folder`` when only the remote has it."""
    if stream.remote is None or os.path.isfile(os.path.join(folder, FINGERPRINT_NAME)):
        return
    remote = "/".join([stream.remote.rstrip("/")] + ([split] if split else []) + [FINGERPRINT_NAME])
    tmp = os.path.join(folder, f".{FINGERPRINT_NAME}.{os.getpid()}.tmp")  # ranks may fetch at once
    try:
        download_file(remote, tmp, timeout)
        os.replace(tmp, os.path.join(folder, FINGERPRINT_NAME))
    except Exception as err:  # no such file (other tools), or unreachable: treated as no fingerprint
        log.debug("no tokenizer fingerprint at %s: %s", remote, err)
        with contextlib.suppress(OSError):
            os.remove(tmp)


def check_stream_tokenizers(cfg: DataConfig, *, log_warnings: bool = True, fetch: bool = True) -> list[str]:
    """Compare every stream's recorded tokenizer with ``cfg.tokenizer`` (paths already resolved).

    Raises TokenizerMismatchError at the first stream written with another tokenizer. Returns (and
    logs) one warning per stream that has shards but no fingerprint. Streams with no local index
    yet (remote, not downloaded) are compared when their fingerprint can be fetched (``fetch``).
    """
    warnings = []
    for stream in cfg.stream_list():
        split = stream.split or cfg.split
        folder = os.path.join(stream.local, split or "")
        if fetch:
            _fetch_remote(stream, folder, split, cfg.download_timeout)
        recorded = read_fingerprint(folder)
        if recorded is None:
            if os.path.isfile(os.path.join(folder, "index.json")) or (stream.remote is not None and fetch):
                warnings.append(f"stream {stream.label}: shards in {folder} record no tokenizer (written by another "
                                f"tool?); they cannot be checked against data.tokenizer {cfg.tokenizer}, only each "
                                f"token id against its vocabulary as it is read")
            continue
        mine = tokenizer_fingerprint(cfg.tokenizer)
        if recorded["sha256"] != mine["sha256"]:
            raise TokenizerMismatchError(
                f"stream {stream.label}: the shards in {folder} were tokenized with {_describe(recorded)}, but "
                f"data.tokenizer is {_describe(mine)}; set data.tokenizer to the shards' tokenizer or re-tokenize "
                f"with data_prep/tokenize_to_mds.py --tokenizer {cfg.tokenizer}"
            )
    if log_warnings:
        for warning in warnings:
            log.warning(warning)
    return warnings


def preflight_tokenizer_check(cfg: DataConfig) -> list[str]:
    """``check_stream_tokenizers`` for a dry run, whose missing inputs are warnings: skipped when the
    tokenizer folder does not exist yet; downloads nothing (remote streams are compared from their
    local cache, if any); returns the warnings instead of logging them."""
    if os.path.isabs(cfg.tokenizer) and not os.path.exists(cfg.tokenizer):
        return []
    return check_stream_tokenizers(cfg, log_warnings=False, fetch=False)
