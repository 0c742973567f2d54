"""Batch-size warmup as a pure function of the global slot-token clock.

The clock counts slot tokens: sequences x ``seq_len`` summed over all ranks. Every rank advances
it by the same amount each step (the global batch size is the same everywhere), so all ranks agree
on it without communication, and a resumed run finds the schedule where it left off.

The global batch grows from ``start`` to ``full`` in steps of ``granularity`` sequences
(``device_microbatch_size x world_size``, so every size is whole microbatches on every rank),
spending the same number of optimizer steps at every size below ``full``; that number is chosen
so the warmup spans about ``warmup_tokens``. The recipe: 768 -> 4608 sequences over 50B tokens at
sequence length 1024.
"""

from __future__ import annotations

from bisect import bisect_right


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class BatchSizeWarmup:
    """Global batch size (sequences) as a function of slot tokens seen."""

    def __init__(self, start: int, full: int, warmup_tokens: int, seq_len: int, granularity: int) -> None:
        if granularity < 1 or seq_len < 1:
            raise ValueError(f"granularity={granularity} and seq_len={seq_len} must be >= 1")
        for name, value in (("start", start), ("full", full)):
            if value < 1 or value % granularity:
                raise ValueError(
                    f"batch size warmup: {name}={value} must be a positive multiple of the granularity "
                    f"{granularity} (device_microbatch_size x world_size)"
                )
        if start > full:
            raise ValueError(f"batch size warmup: start={start} exceeds the full batch size {full}")
        if warmup_tokens < 0:
            raise ValueError(f"batch size warmup: warmup_tokens={warmup_tokens} must be >= 0")
        self.start, self.full, self.seq_len, self.granularity = start, full, seq_len, granularity
        self.warmup_tokens = warmup_tokens
        sizes = list(range(start, full, granularity)) if warmup_tokens > 0 else []
        self.sizes: list[int] = sizes
        """Batch sizes below ``full``, in order; each lasts ``steps_per_size`` steps."""
        self.steps_per_size = max(1, round(warmup_tokens / (seq_len * sum(sizes)))) if sizes else 0
        bounds, total = [], 0
        for size in sizes:
            total += self.steps_per_size * size * seq_len
            bounds.append(total)
        self._bounds = bounds  # slot tokens at which each warmup size ends

    @classmethod
    def constant(cls, full: int, seq_len: int, granularity: int) -> BatchSizeWarmup:
        """No warmup: ``full`` from the first step."""
        return cls(full, full, 0, seq_len, granularity)

    @property
    def warmup_steps(self) -> int:
        return self.steps_per_size * len(self.sizes)

    @property
    def warmup_end_tokens(self) -> int:
        """Slot tokens after the last warmup step (the exact span; ``warmup_tokens`` is the target)."""
        return self._bounds[-1] if self._bounds else 0

    def batch_size_at(self, tokens_seen: int) -> int:
        """Global batch size (sequences) of the step that starts at ``tokens_seen`` slot tokens."""
        i = bisect_right(self._bounds, tokens_seen)
        return self.sizes[i] if i < len(self.sizes) else self.full

    def tokens_after(self, steps: int) -> int:
        """Slot tokens seen after ``steps`` optimizer steps."""
        if steps <= self.warmup_steps:
            done, rest = divmod(steps, self.steps_per_size) if self.steps_per_size else (0, 0)
            before = self._bounds[done - 1] if done else 0
            return before + (rest * self.sizes[done] * self.seq_len if rest else 0)
        return self.warmup_end_tokens + (steps - self.warmup_steps) * self.full * self.seq_len

    def steps_for(self, max_tokens: int) -> int:
        """Optimizer steps until the clock reaches at least ``max_tokens`` slot tokens."""
        if max_tokens <= 0:
            return 0
        if max_tokens > self.warmup_end_tokens:
            beyond = max_tokens - self.warmup_end_tokens
            return self.warmup_steps + _ceil_div(beyond, self.full * self.seq_len)
        i = bisect_right(self._bounds, max_tokens - 1)  # warmup size in progress at max_tokens
        before = self._bounds[i - 1] if i else 0
        return i * self.steps_per_size + _ceil_div(max_tokens - before, self.sizes[i] * self.seq_len)

    def schedule(self) -> list[tuple[int, int]]:
        """(batch size, steps) pairs of the warmup, in order."""
        return [(size, self.steps_per_size) for size in self.sizes]

    def __repr__(self) -> str:
        return (f"BatchSizeWarmup(start={self.start}, full={self.full}, warmup_tokens={self.warmup_tokens}, "
                f"seq_len={self.seq_len}, granularity={self.granularity}, sizes={len(self.sizes)} x "
                f"{self.steps_per_size} steps)")
