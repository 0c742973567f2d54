"""Check a training YAML's data before spending GPU hours.

    python -m modernbert_pretrain.data.inspect <training yaml> [--batches N] [key=value ...]

Reads the YAML and the dotted overrides (``data.seq_len=512``) as train.py does
(``modernbert_pretrain.configfile``), takes its ``data:`` section as a ``DataConfig`` (other sections
belong to the training schema and are ignored), resolves paths relative to the YAML file (paths
given on the command line relative to the working directory), builds the training loader for rank 0 of 1, pulls N
steps and prints a summary. The last line is one JSON object with ``batches``, ``tokens``,
``packing_efficiency``, ``mask_rate``, ``special_tokens_masked`` and ``tokens_per_s`` (and a few
more).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from modernbert_pretrain.constants import IGNORE_INDEX
from modernbert_pretrain.data.config import DataConfig
from modernbert_pretrain.data.errors import DataConfigError
from modernbert_pretrain.data.loader import build_train_loader
from modernbert_pretrain.schema import ConfigError


def load_data_config(yaml_path: str, overrides: Sequence[str] = (), section: str = "data") -> DataConfig:
    """The ``section`` of a training YAML as a DataConfig with its paths resolved, read like train.py reads
    it (overrides, interpolation; YAML paths from the YAML's folder, command-line paths from the cwd)."""
    from modernbert_pretrain.configfile import config_dir, load_yaml
    from modernbert_pretrain.data.tokenizer_info import resolve_config

    try:
        root = load_yaml(yaml_path, list(overrides))
    except DataConfigError:
        raise
    except ConfigError as err:
        raise DataConfigError(str(err)) from err
    if root.get(section) is None:
        raise DataConfigError(f"{yaml_path}: no `{section}:` section")
    return resolve_config(DataConfig.from_dict(root[section], where=section), str(config_dir(yaml_path)))


class BatchStats:
    """Token, mask and packing counts over the inspected steps."""

    def __init__(self, is_special: np.ndarray, mask_id: int) -> None:
        self.is_special, self.mask_id = is_special, mask_id
        self.batches = self.tokens = self.slots = self.selectable = 0
        self.masked = self.special_masked = self.special_replacements = 0

    def add(self, batch: dict[str, Any]) -> None:
        self.batches += 1
        self.tokens += batch["num_real_tokens"]
        self.slots += batch["num_slot_tokens"]
        for mb in batch["microbatches"]:
            inputs, labels = mb["input_ids"].numpy(), mb["labels"].numpy()
            chosen = labels != IGNORE_INDEX
            originals = np.where(chosen, labels, inputs)  # (total,) the unmasked tokens
            self.selectable += int((~self.is_special[originals]).sum())
            self.masked += int(chosen.sum())
            self.special_masked += int(self.is_special[labels[chosen]].sum())
            replaced = chosen & (inputs != labels) & (inputs != self.mask_id)
            self.special_replacements += int(self.is_special[inputs[replaced]].sum())

    def summary(self, seconds: float) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "tokens": self.tokens,
            "slot_tokens": self.slots,
            "packing_efficiency": round(self.tokens / max(self.slots, 1), 6),
            "mask_rate": round(self.masked / max(self.selectable, 1), 6),
            "special_tokens_masked": self.special_masked,
            "special_replacements": self.special_replacements,
            "tokens_per_s": round(self.tokens / max(seconds, 1e-9), 1),
        }


def inspect(yaml_path: str, batches: int = 20, overrides: Sequence[str] = (), out=None) -> dict[str, Any]:
    """Build the loader of ``yaml_path`` and summarize its first ``batches`` steps (printed to ``out``)."""
    out = out or sys.stdout
    cfg = load_data_config(yaml_path, overrides)
    loader = build_train_loader(cfg, rank=0, world_size=1)
    info = loader.spec.info
    print(f"tokenizer {info.name}: {info.vocab_size} tokens, special ids {list(info.special_ids)[:12]}", file=out)
    resolved = loader.spec.cfg
    print(f"sources: {[os.path.join(s.local, s.split or resolved.split or '') for s in resolved.stream_list()]}",
          file=out)
    print(f"schedule: {loader.schedule!r}", file=out)
    stats = BatchStats(info.special_lookup(), info.mask_id)
    started = time.perf_counter()
    try:
        for step, batch in enumerate(loader):
            stats.add(batch)
            if step == 0:
                mb = batch["microbatches"][0]
                print(f"step 0: {len(batch['microbatches'])} microbatches; microbatch 0: input_ids "
                      f"{tuple(mb['input_ids'].shape)}, cu_seqlens {tuple(mb['cu_seqlens'].shape)}, max_seqlen "
                      f"{mb['max_seqlen']}", file=out)
            if step + 1 >= batches:
                break
    finally:
        loader.close()
    result = stats.summary(time.perf_counter() - started)
    print(json.dumps(result), file=out)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modernbert_pretrain.data.inspect",
        description="Build the training loader of a YAML, pull some steps and report packing and masking.")
    parser.add_argument("config", help="training YAML with a data: section")
    parser.add_argument("--batches", type=int, default=20, help="optimizer steps to pull (default 20)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.seq_len=512")
    args = parser.parse_intermixed_args(argv)
    if args.batches < 1:
        parser.error("--batches must be >= 1")
    try:
        inspect(args.config, args.batches, args.overrides)
    except (ValueError, RuntimeError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
