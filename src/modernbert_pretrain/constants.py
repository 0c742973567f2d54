"""Values shared by the data, model and training packages (this module imports nothing)."""

IGNORE_INDEX = -100
"""Label of a position that takes no part in the MLM loss (torch's cross-entropy default, and the
value transformers' ModernBERT config records as `sparse_pred_ignore_index`)."""
