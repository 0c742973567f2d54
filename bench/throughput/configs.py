"""The three configurations, their document-length distributions, the variants and the prepared sweep."""

from __future__ import annotations

from dataclasses import dataclass, field

# Targets from the speed issue (one H100, bf16): real tokens/s, and at least 2.5x transformers in the same run.
TARGETS = {"base@1024": 470_000, "large@1024": 215_000, "base@8192": 360_000}
TARGET_RATIO = 2.5


@dataclass(frozen=True)
class DocDist:
    """Document lengths: lognormal body (median, sigma) with probability 1 - tail_frac, else Pareto
    (tail_min, tail_alpha); lengths at least min_len."""

    median: float
    sigma: float
    tail_frac: float
    tail_min: float
    tail_alpha: float
    min_len: int = 8


@dataclass(frozen=True)
class BenchConfig:
    name: str
    preset: str
    seq_len: int
    rows: int
    """Microbatch in rows of seq_len tokens (transformers' microbatch; ours unless --rows is given)."""
    docs: DocDist
    overrides: dict = field(default_factory=dict)


# Mean about 410 tokens, about 37% of tokens in documents longer than 1024 (split into chunks).
_DOCS_1024 = DocDist(median=200, sigma=1.0, tail_frac=0.08, tail_min=500, tail_alpha=1.5)
# Phase 2 upweights long documents: a longer body and a heavier tail (mean about 930 tokens).
_DOCS_8192 = DocDist(median=260, sigma=1.2, tail_frac=0.10, tail_min=1000, tail_alpha=1.2)
_LONG_ROPE = {"global_rope_theta": 160000.0}

CONFIGS = {
    "base@1024": BenchConfig("base@1024", "base", 1024, 64, _DOCS_1024),
    "large@1024": BenchConfig("large@1024", "large", 1024, 32, _DOCS_1024),
    "base@8192": BenchConfig("base@8192", "base", 8192, 8, _DOCS_8192, overrides=_LONG_ROPE),
}
# --tiny: the same three measurements at sizes a 2-core CPU runs in seconds.
_TINY_DOCS_1024 = DocDist(median=25, sigma=1.0, tail_frac=0.08, tail_min=60, tail_alpha=1.5)
_TINY_DOCS_8192 = DocDist(median=30, sigma=1.2, tail_frac=0.10, tail_min=120, tail_alpha=1.2)
TINY_CONFIGS = {
    "base@1024": BenchConfig("base@1024", "tiny", 128, 4, _TINY_DOCS_1024),
    "large@1024": BenchConfig("large@1024", "tiny-large", 128, 4, _TINY_DOCS_1024),
    "base@8192": BenchConfig("base@8192", "tiny", 512, 2, _TINY_DOCS_8192, overrides=_LONG_ROPE),
}


@dataclass(frozen=True)
class Variant:
    """One measurement. impl: 'ours' or 'transformers'."""

    impl: str
    attn: str = "auto"
    compile: bool = False
    compile_scope: str = "model"  # model: the whole ForMaskedLM; encoder: ModernBertModel; layers: each layer
    compile_mode: str | None = None
    dynamic: bool | None = None  # torch.compile(dynamic=...); the trainer uses True
    cuda_graphs: bool = False
    bf16_weights: bool = False
    rows: int | None = None  # None: the config's rows
    rows_mult: int = 1  # times the rows above (the sweep's "larger microbatch")
    static_shapes: bool = True
    label: str = ""

    def describe(self) -> str:
        if self.label:
            return self.label
        if self.impl == "transformers":
            return "transformers sdpa" + (" compiled" if self.compile else "") + (
                f" rows={self.rows}" if self.rows else "")
        parts = [f"ours {self.attn}"]
        if self.compile:
            parts.append("compile" + ("" if self.compile_scope == "model" else f"[{self.compile_scope}]"))
        flags = ((self.compile_mode, self.compile_mode), (self.dynamic is not None, f"dynamic={self.dynamic}"),
                 (self.cuda_graphs, "cudagraphs"), (self.bf16_weights, "bf16-weights"),
                 (self.rows, f"rows={self.rows}"), (self.rows_mult != 1, f"rows x{self.rows_mult}"),
                 (not self.static_shapes, "dynamic-shapes"))
        parts += [text for on, text in flags if on]
        return " ".join(parts)

    def rows_for(self, bc: BenchConfig) -> int:
        """Rows per microbatch of this variant in configuration `bc`."""
        return (self.rows or bc.rows) * self.rows_mult


def sweep_variants(configs: list[str]) -> list[tuple[str, Variant]]:
    """A prepared set, most important first, so that --max-seconds cuts the levers, not the headline."""
    hf = Variant("transformers")
    best = Variant("ours", compile=True)
    out: list[tuple[str, Variant]] = []
    for name in configs:  # headline: baseline and the compiled default in every configuration
        out += [(name, hf), (name, best)]
    levers = {
        "base@1024": [
            Variant("ours"),  # eager
            Variant("ours", attn="flex", compile=True),
            Variant("ours", compile=True, bf16_weights=True),
            Variant("ours", compile=True, rows_mult=2),
            Variant("ours", compile=True, compile_scope="encoder"),
            Variant("ours", compile=True, compile_scope="layers"),
            # what train/builder.py does today: encoder only, dynamic=True, batches of real tokens only
            Variant("ours", compile=True, compile_scope="encoder", dynamic=True, static_shapes=False),
            Variant("ours", compile=True, cuda_graphs=True),
        ],
        "large@1024": [Variant("ours", compile=True, bf16_weights=True)],
        "base@8192": [Variant("ours", attn="flex", compile=True)],
    }
    for name in configs:
        out += [(name, v) for v in levers.get(name, [])]
    return out
