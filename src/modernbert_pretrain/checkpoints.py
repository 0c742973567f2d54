"""The checkpoint files of a run, for training (load_from, init_from, autoresume) and export alike: find
them, read them (one file or an FSDP-sharded folder), describe them (step, tokens, LR, run info), build the
model they hold, and repair what a crash during a save left behind.

A checkpoint is read as the plain dict Composer wrote; this module imports no Composer, and neither
`train/` nor `export.py` reads checkpoint files any other way.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .model import ModernBertConfig, ModernBertForMaskedLM
from .model.hf import CONFIG_NAME, HubError, hub_snapshot, is_hub_id, load_into, normalize_key
from .schema import ConfigError

log = logging.getLogger(__name__)

LATEST = "latest-rank0.pt"
METADATA_NAME = "training_metadata.json"
"""The metadata file of an exported folder (written by export.py)."""
_CKPT_RE = re.compile(r"ba(\d+)")


class CheckpointError(ValueError):
    """A path is not a checkpoint we can use; the message says what was expected."""


def is_sharded(path: Path) -> bool:
    """A torch.distributed.checkpoint folder: what Composer writes under `fsdp.state_dict_type: sharded`
    (named `ep<epoch>-ba<batch>`, one `__<rank>_0.distcp` per rank beside `.metadata`)."""
    return path.is_dir() and not path.is_symlink() and (path / ".metadata").is_file()


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints of a run folder, monolithic files and sharded folders, oldest first (by batch number)."""
    found = [p for p in folder.glob("*.pt") if p.is_file() and not p.is_symlink() and _CKPT_RE.search(p.name)]
    found += [p for p in folder.iterdir() if is_sharded(p) and _CKPT_RE.search(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(_CKPT_RE.search(p.name).group(1)))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's latest checkpoint."""
    p = Path(path)
    if p.is_file() or is_sharded(p.resolve()):
        return p.resolve() if p.is_symlink() else p
    if p.is_dir():
        latest = p / LATEST
        if latest.exists():
            return latest.resolve()
        found = list_checkpoints(p)
        if found:
            return found[-1]
        raise CheckpointError(f"{p} holds no checkpoint (*.pt with a batch number, or {LATEST}); "
                              "point to a checkpoint file or a run's save folder")
    raise CheckpointError(f"checkpoint {p} does not exist")


def has_checkpoint(folder: str | Path) -> bool:
    """True when the folder has a committed checkpoint: one that `latest` points to."""
    latest = Path(folder) / LATEST
    return latest.is_symlink() and latest.exists()


def batch_of(path: Path) -> int:
    """The step (batch number) in a checkpoint file's name."""
    return int(_CKPT_RE.search(path.name).group(1))


def uncommitted(folder: str | Path) -> list[Path]:
    """Checkpoint files written after the one a valid `latest` points to (none without a valid `latest`).

    Composer writes a checkpoint, then moves `latest` to it; a crash in between leaves a file that may be
    truncated and that `latest` never vouched for."""
    p = Path(folder)
    latest = p / LATEST
    if not (p.is_dir() and latest.is_symlink() and latest.exists()):
        return []
    committed = batch_of(latest.resolve())
    return [file for file in list_checkpoints(p) if batch_of(file) > committed]


ASIDE_PREFIX = "rolled-back-"
"""Later checkpoints set aside by a rollback go to `<save.folder>/rolled-back-<time>/` (never deleted)."""
ASIDE_NOTE = "rolled_back.json"


def set_aside(folder: str | Path, files: list[Path], note: dict[str, Any]) -> Path:
    """Move `files` (checkpoints of `folder`, or its completion marker) into a new `rolled-back-<time>/` folder
    of it, with a note saying why. A rename within the folder: nothing is copied, nothing is deleted. The folder
    is not a checkpoint location: list_checkpoints, export and resume never look inside it."""
    p = Path(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = p / f"{ASIDE_PREFIX}{stamp}"
    n = 1
    while aside.exists():
        n += 1
        aside = p / f"{ASIDE_PREFIX}{stamp}-{n}"
    aside.mkdir()
    for file in files:
        file.replace(aside / file.name)
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "moved": [f.name for f in files], **note}
    (aside / ASIDE_NOTE).write_text(json.dumps(record, indent=2) + "\n")
    return aside


def settle_uncommitted(folder: str | Path) -> tuple[list[Path], Path | None]:
    """Checkpoint files newer than a valid `latest`: an interrupted save (a file that does not load) is removed;
    a complete checkpoint (one that loads: `latest` was rolled back to an earlier one, or a crash came between
    a save and the update of `latest`) is moved aside, never deleted. Returns (removed, aside folder or None);
    resuming from `latest` would otherwise refuse to overwrite these files."""
    later = uncommitted(folder)
    removed = [file for file in later if not checkpoint_loads(file)]
    for file in removed:
        log.warning("removing %s: an incomplete checkpoint written after the last committed one (a save cut off "
                    "by a crash); it does not load", file)
        _remove(file)
    complete = [file for file in later if file not in removed]
    if not complete:
        return removed, None
    latest = (Path(folder) / LATEST).resolve()
    aside = set_aside(folder, complete, {"resumed_from": latest.name, "reason": "found at start-up: newer than "
                                         f"{LATEST}, complete"})
    log.warning("%s names %s, but %d later complete checkpoint(s) exist (%s): `latest` was rolled back, or a "
                "crash came between a save and the update of `latest`. They are kept, moved to %s; this run "
                "resumes from %s (step %d). To continue from the newest instead, move them back and point %s at it",
                LATEST, latest.name, len(complete), ", ".join(f.name for f in complete), aside, latest.name,
                batch_of(latest), LATEST)
    return removed, aside


def load_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    file = resolve_checkpoint(path)
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{file} is not a readable checkpoint (truncated or corrupt): {err}; point at "
                              "another checkpoint file or run folder") from err
    if not isinstance(ckpt, dict) or "state" not in ckpt or "model" not in ckpt["state"]:
        raise CheckpointError(f"{file} is not a Composer checkpoint (no state/model)")
    ckpt["_path"] = str(file)
    return ckpt


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file, a run folder's latest checkpoint, or an FSDP sharded folder -> one in-memory state."""
    p = Path(path)
    if p.is_dir() and not is_sharded(p.resolve()):
        p = resolve_checkpoint(p)
    if is_sharded(p.resolve()):
        return _read_sharded(p.resolve())
    return load_checkpoint(p)


def _read_sharded(folder: Path) -> dict[str, Any]:
    """An FSDP sharded (torch.distributed.checkpoint) folder -> one in-memory state."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "full.pt"
        dcp_to_torch_save(str(folder), str(target))
        ckpt = torch.load(target, map_location="cpu", weights_only=False)
    if "state" not in ckpt:
        raise CheckpointError(f"{folder} is a sharded checkpoint without Composer state")
    ckpt["_path"] = str(folder)
    return ckpt


def encode_run_info(info: dict[str, Any]) -> dict[str, str]:
    """RunInfo's saved form: one JSON string, so that its structure does not depend on the config. An FSDP
    sharded checkpoint (torch.distributed.checkpoint) is loaded into the running state's structure, and a
    resumed run whose config had a key the saved one lacked (e.g. `fsdp: {state_dict_type: sharded}` for
    `fsdp: {}`) stopped with "Missing key in checkpoint state_dict"."""
    return {"json": json.dumps(info, default=str)}


def decode_run_info(saved: Any) -> Any:
    """The run info dict from its saved form; checkpoints written before the JSON form hold the dict itself."""
    if isinstance(saved, dict) and set(saved) == {"json"} and isinstance(saved["json"], str):
        return json.loads(saved["json"])
    return saved


def saved_run_info(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The run info a checkpoint holds, decoded; None when it has none."""
    return decode_run_info((ckpt["state"].get("callbacks") or {}).get("RunInfo"))


def run_info(ckpt: dict[str, Any]) -> dict[str, Any]:
    info = saved_run_info(ckpt)
    if not info or "model_config" not in info:
        raise CheckpointError(f"{ckpt.get('_path')} has no run info (model config); was it written by this "
                              "framework's train.py?")
    return info


def read_run_info(path: str | Path) -> dict[str, Any]:
    """A checkpoint's run info alone: a file is memory-mapped; from a sharded folder only those entries are
    read (in a distributed run every rank must call this, as torch.distributed.checkpoint's load is a
    collective there)."""
    p = Path(path).resolve()
    if not is_sharded(p):
        return run_info(load_checkpoint(p, mmap=True))
    import warnings

    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to load in a single process"
        ckpt = _load_state_dict_from_keys(keys={"state.callbacks.RunInfo"}, checkpoint_id=str(p))
    ckpt["_path"] = str(p)
    return run_info(ckpt)


def model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """ComposerMLM keys ('model.<hf key>') -> transformers keys."""
    out = {}
    for key, value in ckpt["state"]["model"].items():
        key = normalize_key(key)
        if key.startswith("model."):
            key = key[len("model."):]
        out[normalize_key(key)] = value
    return out


def describe(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Step, tokens (phase-local and over all phases), LR, phase chain and configs of a loaded checkpoint."""
    state = ckpt["state"]
    info = run_info(ckpt)
    step, tokens = _clock(state)
    lr = None
    for optim in (state.get("optimizers") or {}).values():
        groups = optim.get("param_groups") or []
        if groups:
            lr = float(groups[0].get("lr"))
    return {"phase": info.get("phase"), "step": step, "tokens_seen": tokens, **cumulative(info, step, tokens),
            "lr": lr, "model_config": info["model_config"], "tokenizer": info.get("tokenizer"),
            "train_config": info.get("train_config"), "checkpoint": ckpt.get("_path")}


# ------------------------------------------------------------------ counts across phases
# Each phase is a new run whose Composer clock starts at 0. A run records in its run info (`prior`) what the
# model it started from had seen before it: {"tokens_seen", "steps", "phases", "source"}, null counts when
# unknown. Totals are prior + the run's own clock, so they chain over any number of phases.
FRESH = {"tokens_seen": 0, "steps": 0, "phases": [], "source": None}
"""The prior of a run that starts from scratch, or from init_from (a tiled model starts a new count)."""


def unknown_prior(source: str | None) -> dict[str, Any]:
    """Weights of unknown history: counts null; the phase chain starts with a null for the unknown phases."""
    return {"tokens_seen": None, "steps": None, "phases": [None], "source": source}


def _legacy_prior(train_config: dict | None) -> dict[str, Any]:
    """For run info written before `prior` was recorded: a run without load_from started from scratch; one with
    load_from had a history nobody wrote down."""
    load_from = (train_config or {}).get("load_from")
    return FRESH if not load_from else unknown_prior(None)


def cumulative(info: dict[str, Any], step: int, tokens: int) -> dict[str, Any]:
    """total_tokens_seen, total_steps (null when the prior is unknown) and the phase chain, oldest first, of a
    model at phase-local `step` and `tokens` of the run described by `info` (run info or export metadata)."""
    prior = info.get("prior") or _legacy_prior(info.get("train_config"))
    before_tokens, before_steps = prior.get("tokens_seen"), prior.get("steps")
    return {"total_tokens_seen": None if before_tokens is None else before_tokens + tokens,
            "total_steps": None if before_steps is None else before_steps + step,
            "phases": [*prior.get("phases", []), info.get("phase")]}


def prior_of_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a run that starts from this checkpoint of ours has seen before it: the checkpoint's totals."""
    info = saved_run_info(ckpt)
    if not info:
        return unknown_prior(ckpt.get("_path"))
    totals = cumulative(info, *_clock(ckpt["state"]))
    return {"tokens_seen": totals["total_tokens_seen"], "steps": totals["total_steps"], "phases": totals["phases"],
            "source": ckpt.get("_path")}


def prior_of_hf_folder(folder: Path, source: str) -> dict[str, Any]:
    """The same for a Hugging Face folder: known when it is one of our exports (its training_metadata.json),
    unknown otherwise (released weights)."""
    path = folder / METADATA_NAME
    try:
        meta = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        meta = {}
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int) or \
            not isinstance(meta.get("tokens_seen"), int):
        return unknown_prior(source)
    if "total_tokens_seen" in meta:
        totals = {k: meta.get(k) for k in ("total_tokens_seen", "total_steps", "phases")}
        totals["phases"] = totals["phases"] or [None, meta.get("phase")]
    else:  # an export written before totals were recorded
        totals = cumulative(meta, meta["step"], meta["tokens_seen"])
    return {"tokens_seen": totals["total_tokens_seen"], "steps": totals["total_steps"],
            "phases": totals["phases"], "source": source}


def describe_prior(prior: dict[str, Any]) -> str:
    """One phrase for the log: how many tokens the loaded model had seen."""
    if prior.get("tokens_seen") is None:
        return ("tokens seen before this run: unknown (the loaded weights do not record it), so "
                "total_tokens_seen is null in this run's checkpoints and exports")
    phases = ", ".join("?" if p is None else str(p) for p in prior.get("phases") or []) or "-"
    return f"tokens seen before this run: {prior['tokens_seen']} (phases: {phases})"


def _clock(state: dict[str, Any]) -> tuple[int, int]:
    """(step, tokens) of the run's own clock at the checkpoint."""
    stamp = state.get("timestamp", {}) or {}
    stamp = stamp.get("Timestamp", stamp)
    return _time_value(stamp.get("batch")), _time_value(stamp.get("token"))


def _time_value(value) -> int:
    if value is None:
        return 0
    if hasattr(value, "value"):
        return int(value.value)
    if isinstance(value, dict) and "value" in value:
        return int(value["value"])
    return int(value)


def build_model(ckpt: dict[str, Any], **config_overrides) -> ModernBertForMaskedLM:
    """The model a loaded checkpoint holds: its run info's model config (plus overrides) and its weights."""
    values = dict(run_info(ckpt)["model_config"])
    values.update(config_overrides)
    try:
        config = ModernBertConfig.from_dict(values)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{ckpt.get('_path')}: its model config cannot be mapped to ModernBERT: {err}") from err
    model = ModernBertForMaskedLM(config, init=False)
    load_weights(model, ckpt)
    return model


def load_weights(model: ModernBertForMaskedLM, ckpt: dict[str, Any], field: str | None = None) -> None:
    """A loaded checkpoint's weights into `model` (init_from, load_from and export share this). Weights that do
    not fit, e.g. of another model size, are a CheckpointError naming the file, the differing config fields and
    the fix (prefixed with the config field, such as load_from.path, when given)."""
    where = f"{field}: " if field else ""
    try:
        state = model_state(ckpt)
    except (AttributeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}{ckpt.get('_path')} holds no model weights in the expected form (state/model "
                              f"of a Composer checkpoint): {err}") from err
    try:
        load_into(model, state)
    except (ValueError, RuntimeError) as err:
        saved = (saved_run_info(ckpt) or {}).get("model_config") or {}
        ours = model.config.to_dict()
        changed = [f"{k}: {saved[k]!r} there, {ours.get(k)!r} here" for k in SHAPE_KEYS
                   if k in saved and saved[k] != ours.get(k)]
        what = "; ".join(changed) if changed else str(err)
        fix = (f"set model.preset={saved['preset']!r} (and its overrides) to continue it, or use init_from to "
               "tile it into a larger model") if changed and "preset" in saved else "point at a checkpoint of this model"
        raise CheckpointError(f"{where}{ckpt.get('_path')} holds a model that does not fit this run's "
                              f"(model.preset={ours.get('preset')!r}): {what}; {fix}") from err


def model_from_checkpoint(path: str | Path, **config_overrides) -> ModernBertForMaskedLM:
    """Our checkpoint file/run folder, or a Hugging Face folder or Hub id -> the model it holds."""
    folder = hf_folder(path, "init_from.path")
    if folder is not None:
        try:
            return ModernBertForMaskedLM.from_pretrained(folder, **config_overrides)
        except (CheckpointError, ConfigError):
            raise
        except Exception as err:  # noqa: BLE001 - safetensors/json/torch raise many types for a bad file
            raise CheckpointError(f"{_hf_file(folder, err)} cannot be loaded: {err}; re-export or re-download "
                                  "that folder") from err
    return build_model(read_checkpoint(path), **config_overrides)


def hf_folder(path: str | Path, field: str) -> Path | None:
    """The Hugging Face model folder `path` names: a local folder with config.json, or a Hub id such as
    answerdotai/ModernBERT-base (downloaded, or taken from the Hugging Face cache offline). None for anything
    else (a checkpoint of ours or a run folder). Only a string that is not a local path is looked up on the Hub."""
    p = Path(path)
    if p.is_dir() and (p / CONFIG_NAME).is_file():
        return p
    if p.is_absolute() or p.exists() or not is_hub_id(str(path)):
        return None
    try:
        return hub_snapshot(str(path))
    except HubError as err:
        raise ConfigError(f"{field}: {err}") from err


# Fields that change what the weights compute without changing their shapes.
_BEHAVIOUR_FIELDS = ("global_rope_theta", "local_rope_theta", "local_attention", "global_attn_every_n_layers",
                     "hidden_activation", "norm_eps", "max_position_embeddings")


def load_pretrained_weights(model: ModernBertForMaskedLM, folder: Path, source: str,
                            weights_only: bool) -> dict[str, Any]:
    """load_from with a Hugging Face folder: its weights go into this run's model (the YAML's config stays in
    charge); the optimizer starts fresh, as such a folder holds no moments. Returns the run's prior (what the
    folder's model had seen, when it is one of our exports)."""
    try:
        pretrained = ModernBertForMaskedLM.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ConfigError(f"load_from.path: cannot read the Hugging Face model {source}: {err}") from err
    theirs, ours = pretrained.config, model.config
    if theirs.tie_word_embeddings != ours.tie_word_embeddings:
        raise ConfigError(f"load_from.path: {source} has tie_word_embeddings={theirs.tie_word_embeddings} but this run "
                          f"has {ours.tie_word_embeddings}; set model.tie_word_embeddings: "
                          f"{str(theirs.tie_word_embeddings).lower()}")
    try:
        load_into(model, pretrained.state_dict())
    except ValueError as err:
        raise ConfigError(f"load_from.path: {source} does not fit this run's model (model.preset="
                          f"{ours.preset!r}): {err}") from err
    differ = [f"{name}={getattr(theirs, name)!r} there, {getattr(ours, name)!r} here" for name in _BEHAVIOUR_FIELDS
              if getattr(theirs, name) != getattr(ours, name)]
    if differ:
        log.warning("load_from: this run's model config differs from %s's and is used: %s", source, "; ".join(differ))
    note = "" if weights_only else " (load_from.weights_only: false, but there are no moments to load)"
    prior = prior_of_hf_folder(folder, source)
    log.warning("load_from: loaded the weights of the Hugging Face model %s (%s); optimizer moments start fresh, "
                "as a Hugging Face folder holds none%s; %s", source, folder, note, describe_prior(prior))
    return prior


def _hf_file(folder: Path, err: BaseException) -> Path:
    """The file of a Hugging Face folder that the error is about (safetensors errors do not name it)."""
    if CONFIG_NAME in str(err):
        return folder / CONFIG_NAME
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return weights[0] if len(weights) == 1 else folder


def optimizer_state(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    optims = ckpt["state"].get("optimizers") or {}
    if not optims:
        return None
    if len(optims) != 1:
        raise CheckpointError(f"{ckpt.get('_path')} holds several optimizers {list(optims)}; expected one")
    return next(iter(optims.values()))


def _remove(path: Path) -> None:
    """A checkpoint file, or a sharded checkpoint's folder."""
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink()


def checkpoint_loads(path: Path) -> bool:
    """Whether a checkpoint file loads, or a sharded checkpoint's metadata reads."""
    try:
        if is_sharded(path):
            # The metadata is written last, after every rank's shard (torch.distributed.checkpoint's
            # FileSystemWriter.finish); a folder whose metadata reads is complete.
            from torch.distributed.checkpoint import FileSystemReader

            FileSystemReader(str(path)).read_metadata()
            return True
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        return True
    except Exception:  # noqa: BLE001 - any failure means the file is not a usable checkpoint
        return False


def point_latest(folder: Path, checkpoint: Path) -> None:
    """Point `latest` at a checkpoint of the folder atomically: a new link renamed over the old name."""
    tmp = folder / f".{LATEST}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(checkpoint.name)
    tmp.replace(folder / LATEST)


def repair_latest(folder: str | Path) -> Path | None:
    """Make `latest` point at the newest complete checkpoint, and remove what a crash left half-written.

    Composer writes a checkpoint in place, then removes and re-creates `latest`. A crash can leave a
    truncated file newer than `latest`, or no `latest` at all. Files newer than a valid `latest` are settled by
    `settle_uncommitted`: removed when they do not load, moved aside when they do. Without a valid `latest`,
    the newest checkpoint that loads is chosen and `latest` is re-created atomically (a new link renamed over
    the old name)."""
    p = Path(folder)
    if not p.is_dir():
        return None
    latest = p / LATEST
    if latest.is_symlink() and latest.exists():
        target = latest.resolve()
        if checkpoint_loads(target):
            settle_uncommitted(p)
            return target
        aside = target.with_name(target.name + ".corrupt")
        target.replace(aside)  # kept for inspection; no longer a *.pt, so never chosen again
        log.warning("`latest` points at %s, which does not load (a corrupt file); moved it to %s and falling "
                    "back to the newest checkpoint that loads", target, aside.name)
    chosen = None
    for file in reversed(list_checkpoints(p)):
        if checkpoint_loads(file):
            chosen = file
            break
        log.warning("removing %s: not a complete checkpoint (crash during a save?)", file)
        _remove(file)
    if chosen is None:
        if latest.is_symlink():
            latest.unlink()
        return None
    point_latest(p, chosen)
    log.warning("`latest` was missing, dangling or corrupt; it now points at %s: resuming from there", chosen.name)
    return chosen


# Config fields that decide the shape of the weights: a resume with any of them changed cannot load.
SHAPE_KEYS = ("preset", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "hidden_activation", "global_attn_every_n_layers", "norm_bias",
              "attention_bias", "mlp_bias", "decoder_bias")


def check_same_model(folder: str | Path, model_config: dict[str, Any]) -> None:
    """Refuse to resume the run in `folder` with a model of another shape (e.g. a changed model.preset)."""
    saved = read_run_info(Path(folder) / LATEST).get("model_config", {})
    changed = [k for k in SHAPE_KEYS if k in saved and saved.get(k) != model_config.get(k)]
    if changed:
        what = ", ".join(f"{k}: {saved.get(k)!r} -> {model_config.get(k)!r}" for k in changed)
        raise CheckpointError(f"model: the run in {folder} was saved with another model ({what}); resume it with "
                              f"model.preset={saved.get('preset')!r} (and its overrides), or choose a new save.folder "
                              "(load_from/init_from start a new run from it)")
