"""Composer glue: the ComposerModel, optimizer, token schedules, callbacks and the trainer builder."""
