"""Hugging Face datasets named on the command line: ``--input hf:NAME[:CONFIG[:SPLIT]]``.

``NAME`` is a hub dataset (``allenai/c4``) or a local folder of data files (``hf:/data/my_corpus``);
``CONFIG`` defaults to the dataset's default configuration, ``SPLIT`` to ``train``. An empty field
takes its default: ``hf:allenai/c4:en`` is split ``train``, ``hf:NAME::validation`` the default
configuration's validation split. The name ends at the first ``:``, so a local folder whose path holds a
``:`` cannot be named this way (pass its files instead).

The split is read with ``datasets.load_dataset(NAME, CONFIG, split=SPLIT, streaming=True)``: nothing is
downloaded ahead, records come in the dataset's order. A streamed dataset is a list of shards (one per data
file for the file formats of the hub); ``shard_count`` and ``iter_shard_documents`` expose them so that
``--parts`` can deal whole shards to parts (see ``parts.py``). A dataset that cannot be opened (an unknown
name, no network, offline mode without a cached copy, a missing split) raises ``InputDataError`` in one line
naming the dataset and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from modernbert_pretrain.data.errors import InputDataError

PREFIX = "hf:"
SYNTAX = "hf:NAME[:CONFIG[:SPLIT]] (e.g. hf:allenai/c4:en:train, or hf:/path/to/folder)"
_BATCH_ROWS = 1024


@dataclass(frozen=True)
class HfSpec:
    name: str
    config: str | None
    split: str

    @property
    def text(self) -> str:
        """The canonical spelling, used in plans and messages: ``hf:NAME:CONFIG:SPLIT``."""
        return f"{PREFIX}{self.name}:{self.config or ''}:{self.split}"


def is_hf(item: str) -> bool:
    return item.startswith(PREFIX)


def parse_spec(item: str) -> HfSpec:
    """The dataset an ``hf:`` input names; InputDataError for a malformed one."""
    fields = item[len(PREFIX):].split(":")
    if len(fields) > 3 or not fields[0]:
        raise InputDataError(f"{item}: expected {SYNTAX}")
    fields += [""] * (3 - len(fields))
    return HfSpec(fields[0], fields[1] or None, fields[2] or "train")


def _offline() -> bool:
    values = {os.environ.get(v, "").strip().lower() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    return bool(values & {"1", "true", "yes", "on"})


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _open_error(spec: HfSpec, err: BaseException) -> InputDataError:
    if os.path.isdir(spec.name):
        fix = f"check that the folder holds data files (jsonl, parquet, csv ...) and has a '{spec.split}' split"
    elif _offline():
        fix = ("HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set and no cached copy was found: unset it (or cache the "
               "dataset once with network access), or pass a local folder or its files")
    else:
        fix = (f"check the name, config and split ({SYNTAX}), the network, and HF_TOKEN for a gated dataset; "
               f"or pass a local folder or its files")
    return InputDataError(f"{spec.text}: cannot open the dataset ({_first_line(err)}); {fix}")


@lru_cache(maxsize=16)
def _open(spec: HfSpec):
    """The streamed split and its resolved data files (opened once per process)."""
    try:
        import datasets

        # its own error logging would add lines to our one-line errors, which name the file and record
        datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)
        builder = datasets.load_dataset_builder(spec.name, spec.config)
        if getattr(builder.config, "on_mixed_types", None) is not None:
            # JSON data: by default a shard whose field mixes types (a list among strings) is read with every
            # value JSON-encoded, "text" becoming '"text"': refuse such a shard instead of changing the texts.
            # (Passed to load_dataset_builder, None is dropped as "not given"; streaming reads the attribute.)
            builder.config.on_mixed_types = None
        stream = builder.as_streaming_dataset(split=spec.split)
    except Exception as err:  # datasets raises many types: ConnectionError, DatasetNotFoundError, ValueError ...
        raise _open_error(spec, err) from err
    files = (builder.config.data_files or {}).get(spec.split) if builder.config.data_files else None
    return stream, [str(f) for f in files or []]


def shard_count(item: str) -> int:
    """Shards of the streamed split (``IterableDataset.num_shards``): the units ``--parts`` deals out."""
    return _open(parse_spec(item))[0].num_shards


def identity(item: str) -> str:
    """What the plan records of the dataset: a hash of its resolved data files (a hub file's address holds the
    revision) and, for local files, their sizes; so a changed dataset makes another plan."""
    stream, files = _open(parse_spec(item))
    sized = [[f, os.path.getsize(f) if os.path.isfile(f) else None] for f in files]
    payload = json.dumps({"shards": stream.num_shards, "files": sized})
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


def check(item: str) -> str:
    """The canonical spelling of an ``hf:`` input, once the dataset opened."""
    spec = parse_spec(item)
    _open(spec)
    return spec.text


def _shard_files(shard) -> str:
    kwargs = getattr(shard._ex_iterable, "kwargs", None) or {}
    files = kwargs.get("original_files") or kwargs.get("files") or []
    return ", ".join(str(f) for f in files[:2]) + (" ..." if len(files) > 2 else "")


def _texts(batch: dict, text_field: str, where, first: int) -> Iterator[str]:
    """The texts of one batch of rows; ``where(n)`` names record ``n`` in an error."""
    if text_field not in batch:
        raise InputDataError(f"{where(first)}: no field '{text_field}' (fields: {sorted(batch)[:10]}); "
                             f"pass --text-field")
    for offset, value in enumerate(batch[text_field]):
        if value is not None and not isinstance(value, str):
            raise InputDataError(f"{where(first + offset)}: field '{text_field}' is {type(value).__name__}, "
                                 f"expected a string")
        yield value or ""


def iter_shard_documents(item: str, start: int, end: int, text_field: str = "text") -> Iterator[str]:
    """The texts of shards ``[start, end)`` of an ``hf:`` input, in order (null text = empty document)."""
    spec = parse_spec(item)
    stream = _open(spec)[0]
    for index in range(start, end):
        shard = stream.shard(num_shards=stream.num_shards, index=index)
        source = _shard_files(shard)

        def where(record: int, index=index, source=source) -> str:
            return f"{spec.text}: shard {index} ({source}): record {record}"

        record = 1
        batches = shard.iter(batch_size=_BATCH_ROWS)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception as err:  # pyarrow/json/network errors of the data files
                raise InputDataError(f"{where(record)} or a later one: cannot read ({_first_line(err)})") from err
            size = len(next(iter(batch.values()), []))
            yield from _texts(batch, text_field, where, record)
            record += size


def iter_hf_documents(item: str, text_field: str = "text") -> Iterator[str]:
    """Every text of an ``hf:`` input, shard after shard."""
    return iter_shard_documents(item, 0, shard_count(item), text_field)
