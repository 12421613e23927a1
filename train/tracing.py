"""Profiling hooks the loop always calls, so profiling never edits the loop.

- ``NullProfiler``: the default ``profiler`` argument of :func:`train.loop.train`; its
  ``step()`` does nothing. A profiling stage passes a real ``torch.profiler.profile`` (which has
  the same ``step()``) instead.
- ``Tracer``: named ranges around data wait, forward, backward and the optimizer step. Off, a
  range is a no-op; on (``--nvtx``), each range is a ``torch.profiler.record_function`` (shows
  in torch.profiler traces on every device) and, on CUDA, also an NVTX range (shows in Nsight
  Systems).
"""

from __future__ import annotations

import contextlib

import torch

RANGE_NAMES = ("data_wait", "forward", "backward", "optimizer_step")


class NullProfiler:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def step(self) -> None:
        pass


class Tracer:
    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = enabled
        self.nvtx = enabled and device.type == "cuda"

    @contextlib.contextmanager
    def range(self, name: str):
        if not self.enabled:
            yield
            return
        if self.nvtx:
            torch.cuda.nvtx.range_push(name)
        try:
            with torch.profiler.record_function(name):
                yield
        finally:
            if self.nvtx:
                torch.cuda.nvtx.range_pop()
