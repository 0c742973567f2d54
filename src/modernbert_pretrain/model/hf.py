"""Hugging Face folders: config.json + model.safetensors that transformers' ModernBertForMaskedLM loads,
and loading such folders (ours or transformers') back. All key renaming lives here."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import ModernBertConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_TIED = "decoder.weight"
_EMBEDDING = "model.embeddings.tok_embeddings.weight"
_STRIP_PREFIXES = ("_orig_mod.", "module.")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What a model folder needs; a Hub repo may also hold ONNX exports, other frameworks' weights and so on.
_HUB_FILES = [CONFIG_NAME, WEIGHTS_NAME, "model.safetensors.index.json", "model-*.safetensors"]


def to_hf_state_dict(model: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Our module names are transformers' names, so this is an identity map minus a tied decoder (transformers
    re-ties it on load); an untied decoder is written under its own name."""
    tied = model.config.tie_word_embeddings
    out = {}
    for key, value in model.state_dict().items():
        key = normalize_key(key)
        if key == _TIED and tied:
            continue
        value = value.detach()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous().cpu()
    return out


def normalize_key(key: str) -> str:
    """Strip wrappers that torch.compile / DDP add to parameter names."""
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
        key = key.replace("._orig_mod.", ".")
    return key


def save_pretrained(model, out_dir, *, dtype: torch.dtype | None = None, extra_config: dict | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = to_hf_state_dict(model, dtype)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"refusing to save: non-finite values in {bad[:5]} (training diverged?)")
    hf_config = model.config.to_hf_dict()
    for name in ("global_rope_theta", "local_rope_theta"):
        value = hf_config[name]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"refusing to save config with {name}={value!r}: it must be a positive number")
    if dtype is not None:
        hf_config["torch_dtype"] = str(dtype).replace("torch.", "")
    if extra_config:
        hf_config.update(extra_config)
    (out / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    # safetensors creates the file 0600 whatever the umask; give it the mode every other file gets.
    os.chmod(out / WEIGHTS_NAME, 0o666 & ~current_umask())
    return out


def current_umask() -> int:
    """The process umask, read without changing it (os.umask can only set it, which races with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load_hf_config(path) -> ModernBertConfig:
    path = Path(path)
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: {path} is not a Hugging Face model folder")
    try:
        hf = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_file} is not valid JSON: {err}") from err
    return ModernBertConfig.from_hf_dict(hf)


def load_hf_state_dict(path) -> dict[str, torch.Tensor]:
    path = Path(path)
    single = path / WEIGHTS_NAME
    if single.is_file():
        return _load_safetensors(single)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for name in files:
            state.update(_load_safetensors(path / name))
        return state
    legacy = path / "pytorch_model.bin"
    if legacy.is_file():
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no model.safetensors (or pytorch_model.bin) in {path}")


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type, and OSError
        raise ValueError(f"{file} is not a readable safetensors file ({err}); download or export it again") from err


def load_into(model, state: dict[str, torch.Tensor]) -> None:
    """Load a transformers-named state dict; missing or unexpected keys are an error naming them."""
    state = {normalize_key(k): v for k, v in state.items()}
    _check_decoder(model.config.tie_word_embeddings, state)
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    for key, param in model.state_dict().items():
        if state[key].shape != param.shape:
            raise ValueError(f"{key}: checkpoint shape {tuple(state[key].shape)} != model shape {tuple(param.shape)}")
    model.load_state_dict(state, strict=True)
    model.tie_weights()


def _check_decoder(tied: bool, state: dict[str, torch.Tensor]) -> None:
    """A tied model takes its decoder from the embedding; a distinct `decoder.weight` then means the weights
    come from an untied model, and loading them would overwrite the embedding with the decoder."""
    decoder, embedding = state.get(_TIED), state.get(_EMBEDDING)
    if embedding is None:
        return  # reported as a missing key
    if not tied:
        if decoder is None:
            raise ValueError(f"the config has an untied decoder (tie_word_embeddings: false) but the weights have no "
                             f"{_TIED}; they come from a tied model: set tie_word_embeddings: true")
        return
    if decoder is not None and not (decoder.shape == embedding.shape and torch.equal(decoder, embedding)):
        raise ValueError(f"the weights hold a {_TIED} that differs from {_EMBEDDING} (an untied decoder) but the "
                         "config ties them (tie_word_embeddings: true); set tie_word_embeddings: false")
    state[_TIED] = embedding


def from_pretrained(cls, path, **config_overrides):
    config = load_hf_config(path)
    if config_overrides:
        values = config.to_dict()
        values.update(config_overrides)
        config = ModernBertConfig.from_dict(values)
    model = cls(config, init=False)
    load_into(model, load_hf_state_dict(path))
    return model


def is_hub_id(name: str) -> bool:
    """`owner/name`, the shape of a Hugging Face Hub model id (e.g. answerdotai/ModernBERT-base)."""
    return bool(_HUB_ID.match(name)) and ".." not in name


class HubError(ValueError):
    """A Hub model id could not be resolved to a local folder."""


def hub_snapshot(repo_id: str) -> Path:
    """The local folder of a Hub model: downloaded, or found in the Hugging Face cache when offline."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES))
    except Exception as err:  # noqa: BLE001 - network, auth, cache and id errors all mean "not available"
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise HubError(f"{repo_id!r} is not a local path and could not be fetched from the Hugging Face Hub "
                       f"({type(err).__name__}: {first}); check the network, or download it where there is one "
                       f"(`huggingface-cli download {repo_id}`) and give its folder") from err
