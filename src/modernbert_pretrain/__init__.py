"""Pretrain ModernBERT-style encoders with Composer and Streaming."""

__all__ = ["ModernBertConfig", "ModernBertForMaskedLM"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # On first use (PEP 562): a light submodule (data prep's spawned tokenizer workers import one) must not
    # load torch through this file.
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
