"""The training YAML's typed schema, validated before any work starts.

A YAML is read with OmegaConf (so `${workdir}` interpolation works), merged with `key=value`
overrides from the command line, then built into `TrainConfig`. Relative paths in a YAML are
relative to that YAML's folder; relative paths given on the command line are relative to the
directory the command runs in.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .configfile import config_dir, load_yaml
from .data.config import DataConfig
from .model.config import ModernBertConfig
from .schema import BEFORE, ConfigError, build, check_keys

DecayShape = Literal["linear", "cosine", "1-sqrt"]


def switch_word(value: Any) -> Any:
    """YAML 1.1 reads unquoted on/off/yes/no/true/false as booleans, in a file and on the command line alike:
    take a boolean, or the string true/false, as 'on'/'off'. Anything else is left for the type check."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return "on" if value.lower() == "true" else "off"
    return value


@dataclass
class ModelSection:
    """`model:` a preset plus any ModernBertConfig field as an override."""

    preset: str = "base"
    """tiny, tiny-large, base or large (shapes: docs/architecture.md, "Model shapes")."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """ModernBertConfig fields set on top of the preset (written inline in the YAML)."""

    @classmethod
    def from_dict(cls, values: dict) -> ModelSection:
        values = dict(values)
        preset = values.pop("preset", "base")
        names = [f.name for f in dataclasses.fields(ModernBertConfig)]
        check_keys(values, [n for n in names if n != "preset"], "model")
        section = cls(preset=preset, overrides=values)
        section.build()  # validate now
        return section

    def build(self, **extra) -> ModernBertConfig:
        try:
            return ModernBertConfig.from_preset(self.preset, **{**self.overrides, **extra})
        except ValueError as err:
            raise ConfigError(f"model: {err}") from err


@dataclass
class OptimizerConfig:
    """StableAdamW (torch-optimi) with fully decoupled weight decay; no decay on norms and biases."""

    lr: float = 8e-4
    """Peak learning rate."""
    betas: tuple[float, float] = (0.9, 0.98)
    """Adam betas."""
    eps: float = 1e-6
    """Adam epsilon."""
    weight_decay: float = 1e-5
    """Fully decoupled weight decay per step at peak LR (scaled by lr / max_lr as the LR moves)."""
    kahan_sum: bool | None = None
    """Kahan summation for low-precision weights (None: optimi's default, on for bf16 weights)."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optimizer.lr must be positive, got {self.lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optimizer.betas must be in [0, 1), got {list(self.betas)}")
        if not self.eps > 0:
            raise ConfigError(f"optimizer.eps must be positive, got {self.eps}")
        if self.weight_decay < 0:
            raise ConfigError(f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class DecayConfig:
    """The decay part of warmup-stable-decay."""

    shape: DecayShape = "1-sqrt"
    """linear, cosine or 1-sqrt."""
    tokens: int = 0
    """Length of the decay; it ends at max_tokens. 0 means the rest of the phase after the warmup."""
    final_lr_fraction: float = 0.0
    """LR at the end, as a fraction of the peak."""

    def __post_init__(self) -> None:
        if self.tokens < 0:
            raise ConfigError(f"scheduler.decay.tokens must be >= 0, got {self.tokens}")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ConfigError(f"scheduler.decay.final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")


@dataclass
class LrDrop:
    """A step change of the LR at a token count (large phase 1 drops 5e-4 -> 5e-5 for its last 800B)."""

    at_tokens: int
    """Token count (of this phase) from which the fraction applies."""
    lr_fraction: float
    """Multiplier of the peak LR from then on."""


@dataclass
class SchedulerConfig:
    """All schedules count tokens (sequences x seq_len) of the phase's own clock."""

    warmup_tokens: int = 0
    """Linear warmup from 0 to the peak LR."""
    decay: DecayConfig | None = None
    """null: constant after warmup. Otherwise warmup-stable-decay."""
    drops: list[LrDrop] = field(default_factory=list)
    """Step changes applied during the stable part."""

    def __post_init__(self) -> None:
        if self.warmup_tokens < 0:
            raise ConfigError(f"scheduler.warmup_tokens must be >= 0, got {self.warmup_tokens}")

    def decay_span(self, max_tokens: int) -> int:
        """Tokens the decay lasts (it ends at max_tokens): decay.tokens, or with `decay.tokens: 0` everything
        after the warmup; 0 without a decay. The validation, the scheduler and the plan all read this."""
        if self.decay is None:
            return 0
        return self.decay.tokens or max(max_tokens - self.warmup_tokens, 0)


@dataclass
class LoadFromConfig:
    """Start a later phase from an earlier phase's checkpoint."""

    path: str
    """A Composer checkpoint file (.pt) or a run folder (its latest checkpoint is used), or released weights: a
    Hugging Face model folder or Hub id such as answerdotai/ModernBERT-base (weights only; fresh optimizer moments)."""
    weights_only: bool = False
    """Load only the weights, not the optimizer moments."""


@dataclass
class InitFromConfig:
    """Initialize a larger model from a smaller one."""

    path: str
    """A checkpoint of ours, a run folder, or a Hugging Face model folder or Hub id."""
    mode: Literal["tile"] = "tile"
    """Centre tiling (the ModernBERT large recipe)."""


@dataclass
class SaveConfig:
    """Checkpoints."""

    folder: str = "checkpoints"
    """Where checkpoints go (one per interval, plus a `latest` pointer)."""
    interval: str = "1000000000tok"
    """Composer time string: e.g. '20000000000tok' or '1000ba'."""
    keep: int = -1
    """How many to keep; -1 keeps all (the stable phase's are the pre-decay checkpoints users anneal from)."""

    def __post_init__(self) -> None:
        if not (self.interval.endswith("tok") or self.interval.endswith("ba")):
            raise ConfigError(f"save.interval must end in 'tok' or 'ba' (e.g. '1000000tok'), got {self.interval!r}")
        try:
            if int(float(self.interval.rstrip("tokba"))) <= 0:
                raise ValueError
        except ValueError as err:
            raise ConfigError(f"save.interval must be a positive count, got {self.interval!r}") from err
        if self.keep == 0 or self.keep < -1:
            raise ConfigError(f"save.keep must be -1 (all) or a positive count, got {self.keep}")


@dataclass
class ExportConfig:
    """Hugging Face folders written during training."""

    folder: str = "hf"
    """Where the folders go (one per export, named step<batch>-tok<tokens>)."""
    interval: str = "checkpoint"
    """'checkpoint' (with every checkpoint) or a Composer time string ('...tok' / '...ba')."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weight dtype of the exported safetensors."""


@dataclass
class EvalConfig:
    """Held-out evaluation."""

    interval: str = "1000000000tok"
    """How often, as a Composer time string ('...tok' or '...ba')."""
    batches: int = 20
    """Microbatches per evaluation."""
    data: dict[str, Any] = field(default_factory=dict)
    """Overrides of the training `data:` section (e.g. split, local, mask_prob): any data field, typed and
    checked like it; relative paths are taken from the YAML's folder."""

    def __post_init__(self) -> None:
        self.data = DataConfig.check_overrides(self.data, "eval.data")


@dataclass
class FSDPConfig:
    """Fully sharded data parallelism, on torch's FSDP2 (``fully_shard``) through Composer's FSDP2 path
    (docs/architecture.md, "Data parallelism"). ``fsdp: {}`` takes every default; ``fsdp: null`` is DDP."""

    reshard_after_forward: bool = True
    """Free the gathered parameters after each forward (FULL_SHARD) or keep them until backward
    (SHARD_GRAD_OP: faster, more memory)."""
    state_dict_type: Literal["sharded", "full"] = "sharded"
    """Checkpoints as one torch.distributed.checkpoint folder of per-rank shards, or one gathered file."""
    activation_checkpointing: bool = False
    """Recompute each wrapped block's activations in backward."""
    mixed_precision: Literal["DEFAULT", "PURE", "FULL"] = "DEFAULT"
    """Composer's FSDP2 mixed-precision policy under amp_bf16 (DEFAULT: bf16 compute, fp32 gradient
    reduction)."""
    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP"] | None = None
    """FSDP1's name for the same choice, accepted so that older YAMLs keep working: when given, it decides
    ``reshard_after_forward`` (FULL_SHARD: true, SHARD_GRAD_OP: false)."""

    def __post_init__(self) -> None:
        if self.sharding_strategy is not None:
            self.reshard_after_forward = self.sharding_strategy == "FULL_SHARD"

    def composer_options(self) -> dict[str, Any]:
        """Keyword arguments of Composer's FSDP2Config."""
        return {"reshard_after_forward": self.reshard_after_forward, "state_dict_type": self.state_dict_type,
                "activation_checkpointing": self.activation_checkpointing,
                "mixed_precision": self.mixed_precision}


@dataclass
class LoggingConfig:
    """Observability."""

    wandb: bool = False
    """Log to Weights & Biases (offline when no API key is set)."""
    project: str = "modernbert-pretrain"
    """W&B project."""
    console_interval: str = "1ba"
    """Console log interval."""
    progress_bar: bool = True
    """Composer's progress bar."""
    metrics_file: str | None = None
    """Append one JSON line per step (batch, tokens, loss, lr, global batch size) to this file."""


@dataclass
class TrainConfig:
    """One phase of training."""

    run_name: str
    """Name of the run (checkpoint file names, W&B)."""
    data: DataConfig
    """The training loader."""
    max_tokens: int
    """Token budget of this phase (sequences x seq_len)."""
    workdir: str = "."
    """Base folder for `${workdir}` interpolation in the YAML."""
    seed: int = 17
    """Seed for init, data order and masking."""
    model: ModelSection = field(default_factory=ModelSection)
    """Model shape."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """StableAdamW settings."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """LR schedule in tokens."""
    load_from: LoadFromConfig | None = None
    """Earlier phase's checkpoint to continue from (clock, data order and schedule restart)."""
    init_from: InitFromConfig | None = None
    """Smaller model to tile from."""
    save: SaveConfig = field(default_factory=SaveConfig)
    """Checkpointing."""
    autoresume: bool = True
    """Resume this run from its own latest checkpoint after a crash."""
    nonfinite_loss: Literal["stop", "skip"] = "stop"
    """On a NaN/Inf loss: stop (the last good checkpoint stays) or skip the batch and count it."""
    nonfinite_max_skipped: int = 5
    """With nonfinite_loss: skip, the most consecutive steps that may be skipped; the next non-finite one stops
    the run (exit 3). One bad batch does not make the next ones non-finite; a row of them means broken weights.
    A run whose last step was skipped is never marked complete."""
    eval: EvalConfig | None = None
    """Held-out evaluation."""
    export: ExportConfig | None = None
    """Export Hugging Face folders during training (null: export afterwards with modernbert_pretrain.export)."""
    precision: Literal["auto", "fp32", "amp_bf16"] = "auto"
    """auto: bf16 autocast on GPU, fp32 on CPU."""
    compile: Literal["auto", "on", "off"] = field(default="auto", metadata={BEFORE: switch_word})
    """torch.compile the model: auto compiles on GPU only. Unquoted on/off/true/false are accepted."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Loggers."""
    fsdp: FSDPConfig | None = None
    """Shard parameters, gradients and optimizer state over the ranks (FSDP2); null: DDP."""

    def __post_init__(self) -> None:
        if self.max_tokens <= 0:
            raise ConfigError(f"max_tokens must be positive, got {self.max_tokens}")
        self._check_one_step()
        model = self.model.build()
        if self.data.seq_len > model.max_position_embeddings:
            raise ConfigError(f"data.seq_len={self.data.seq_len} exceeds the model's max_position_embeddings="
                              f"{model.max_position_embeddings}; lower seq_len or raise model.max_position_embeddings")
        decay_tokens = self.scheduler.decay_span(self.max_tokens)
        if decay_tokens > self.max_tokens:
            raise ConfigError(f"scheduler.decay.tokens={decay_tokens} is longer than max_tokens={self.max_tokens}")
        if self.scheduler.warmup_tokens + decay_tokens > self.max_tokens:
            raise ConfigError(f"scheduler.warmup_tokens + decay tokens ({self.scheduler.warmup_tokens} + "
                              f"{decay_tokens}) exceed max_tokens={self.max_tokens}")
        if self.nonfinite_max_skipped < 1:
            raise ConfigError(f"nonfinite_max_skipped must be >= 1 (consecutive skipped steps before the run stops), "
                              f"got {self.nonfinite_max_skipped}; use nonfinite_loss: stop to skip none")
        if self.load_from is not None and self.init_from is not None:
            raise ConfigError("set either load_from (continue a phase) or init_from (tile a smaller model), not both")

    def _check_one_step(self) -> None:
        """The run stops at the first step boundary at or past max_tokens, so a budget below the first step would
        silently train that whole step."""
        data = self.data
        first = data.batch_size_warmup_start or data.global_batch_size  # sequences in the first step
        name = "data.batch_size_warmup_start" if data.batch_size_warmup_start else "data.global_batch_size"
        tokens = first * data.seq_len
        if self.max_tokens < tokens:
            raise ConfigError(f"max_tokens={self.max_tokens} is less than one optimizer step: the first step "
                              f"trains {tokens} tokens ({name}={first} x data.seq_len={data.seq_len}); set "
                              f"max_tokens >= {tokens} or a smaller batch")

    def model_config(self, **extra) -> ModernBertConfig:
        return self.model.build(**extra)

    def check_world_size(self, world_size: int) -> None:
        self.data.check_world_size(world_size)

    def eval_data(self) -> DataConfig:
        """The evaluation loader's data config: the training one with `eval.data` applied."""
        if self.eval is None or not self.eval.data:
            return self.data
        return self.data.with_overrides(**self.eval.data)


# ---------------------------------------------------------------------------------------- loading
def load_raw(yaml_path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """YAML + overrides -> a plain dict with interpolations resolved and relative paths made absolute."""
    return _resolve_paths(load_yaml(yaml_path, overrides), config_dir(yaml_path))


# Paths outside the data section; the data section's paths are resolved by the data package itself
# (data.tokenizer_info.resolve_config), which also knows a Hub tokenizer name from a folder.
_PATH_FIELDS = {("load_from", "path"), ("init_from", "path"), ("save", "folder"), ("export", "folder"),
                ("logging", "metrics_file")}


_HUB_FIELDS = {("load_from", "path"), ("init_from", "path")}


def _resolve_paths(raw: dict, base_dir: Path) -> dict:
    from .data.tokenizer_info import resolve_path
    from .model.hf import is_hub_id

    for section, key in _PATH_FIELDS:
        value = raw[section].get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str) and value:
            local = resolve_path(value, str(base_dir), f"{section}.{key}")
            if (section, key) in _HUB_FIELDS and is_hub_id(value) and not os.path.exists(local):
                continue
            raw[section][key] = local
    return raw


def _resolve_data(cfg: TrainConfig, base_dir: str) -> None:
    """The training data config and the evaluation overrides with their paths resolved against the YAML's
    folder (command-line paths are absolute already); the merged evaluation config is validated now."""
    from .data.tokenizer_info import resolve_config

    cfg.data = resolve_config(cfg.data, base_dir)
    if cfg.eval is None or not cfg.eval.data:
        return
    try:
        merged = resolve_config(cfg.data.with_overrides(**cfg.eval.data), base_dir)
    except ConfigError as err:
        raise ConfigError(f"eval.data: {err}") from err
    cfg.eval.data = {key: getattr(merged, key) for key in cfg.eval.data}


def load(yaml_path, overrides: list[str] | None = None) -> tuple[dict[str, Any], TrainConfig]:
    """The resolved plain dict (for logging and checkpoints) and the validated config, from one read."""
    raw = load_raw(yaml_path, overrides)
    cfg = build(TrainConfig, raw)
    _resolve_data(cfg, str(config_dir(yaml_path)))
    return raw, cfg


def load_config(yaml_path, overrides: list[str] | None = None) -> TrainConfig:
    return load(yaml_path, overrides)[1]
