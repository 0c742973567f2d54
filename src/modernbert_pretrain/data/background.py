"""Build batches in one background process (``num_workers: 1``), a few steps ahead.

The process owns the StreamingDataset and the pipeline. With every step it sends the pipeline
state *after* that step, so the loader's state always matches the last step it handed out, however
far the process has run ahead. A new iteration (or a restore) starts a fresh process from that
state, which is exact and reads only the packer's buffer.
"""

from __future__ import annotations

import queue
import traceback
from typing import Any

import torch
import torch.multiprocessing as mp

_POLL_S = 0.2


def _send(out: Any, stop: Any, item: tuple) -> bool:
    while not stop.is_set():
        try:
            out.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _run(spec: Any, template: Any, state: dict[str, Any] | None, out: Any, stop: Any) -> None:
    """Worker body. ``template``: the parent's pipeline (fork), or None to build one from ``spec``."""
    torch.set_num_threads(1)
    pipeline = None
    try:
        pipeline = template if template is not None else spec.build()
        if state is not None:
            pipeline.load_state_dict(state)
        else:
            pipeline.reset()
        while not stop.is_set():
            batch = pipeline.next_step()
            if batch is None:
                _send(out, stop, ("end", None, None, None))
                return
            if not _send(out, stop, ("batch", batch, pipeline.state_dict(), dict(pipeline.last_metrics))):
                return
    except BaseException as err:  # report everything, including KeyboardInterrupt, to the parent
        _send(out, stop, ("error", err, traceback.format_exc(), None))
    finally:
        if pipeline is not None:
            # A spawned worker made its own dataset and skips atexit handlers: release its shared
            # memory now. A forked worker uses the parent's, which the parent releases.
            pipeline.close(release_shared_memory=template is None)


class BackgroundBuilder:
    """Iterator of (batch, state after it, metrics) produced by a spawned process."""

    def __init__(self, spec: Any, template: Any, state: dict[str, Any] | None, prefetch_steps: int) -> None:
        # fork, like torch's DataLoader workers: fast to start, no re-import of the main module, and
        # the child inherits the parent's StreamingDataset (whose setup synchronizes ranks through
        # torch.distributed, which a child must not use). The child touches no CUDA.
        forking = "fork" in mp.get_all_start_methods()
        ctx = mp.get_context("fork" if forking else "spawn")
        self._queue = ctx.Queue(maxsize=max(1, prefetch_steps))
        self._stop = ctx.Event()
        args = (spec, template if forking else None, state, self._queue, self._stop)
        self._process = ctx.Process(target=_run, args=args, daemon=True, name=f"data-rank{spec.layout.rank}")
        self._process.start()

    def __iter__(self):
        return self

    def __next__(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        while True:
            try:
                kind, payload, extra, metrics = self._queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._process.is_alive():
                    raise RuntimeError(
                        f"the data loader's background process exited (code {self._process.exitcode}) "
                        f"without an error report; rerun with data.num_workers: 0 to see the failure"
                    ) from None
        if kind == "end":
            self.stop()
            raise StopIteration
        if kind == "error":
            self.stop()
            note = f"\n--- in the data loader's background process ---\n{extra}"
            try:
                payload.add_note(note)
            except AttributeError:  # Python < 3.11
                pass
            raise payload
        return payload, extra, metrics

    def stop(self) -> None:
        if self._process is None:
            return
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except (queue.Empty, OSError, ValueError):
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._queue.close()
        self._process = None
