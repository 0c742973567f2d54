"""Score exported checkpoints on downstream tasks (GLUE, retrieval, embedded offline tasks)."""
