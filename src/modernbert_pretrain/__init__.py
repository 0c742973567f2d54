"""Pretrain ModernBERT-style encoders with Composer and Streaming."""

from .model import ModernBertConfig, ModernBertForMaskedLM

__all__ = ["ModernBertConfig", "ModernBertForMaskedLM"]
__version__ = "0.1.0"
