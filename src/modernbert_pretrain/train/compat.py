"""Workarounds for composer 0.32.1, in one place."""

from __future__ import annotations


def per_node_signal_files() -> None:
    """Give each node its own signal file name.

    Composer's autoresume makes local rank 0 of every node create and then remove a signal file in the save
    folder, under a name broadcast from global rank 0: on a save folder that all nodes share (how clusters
    keep checkpoints), two nodes remove the same file and one fails with FileNotFoundError at start-up.
    Appending the node rank keeps the name identical within a node and distinct across nodes."""
    from composer.utils import dist

    if getattr(dist.get_node_signal_file_name, "_per_node", False):
        return
    shared = dist.get_node_signal_file_name

    def per_node(rng=None) -> str:
        return f"{shared(rng)}_n{dist.get_node_rank()}"

    per_node._per_node = True
    dist.get_node_signal_file_name = per_node
