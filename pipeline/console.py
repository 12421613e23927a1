"""What a person running ``luigi --module pipeline ...`` reads: one line when each task starts and
ends, training progress (step, loss, sequences/s, ETA) every half minute, download progress.

luigi.cfg sets ``[core] log_level = WARNING``, so these lines replace Luigi's DEBUG stream
(``--log-level DEBUG`` on the command line brings it back). The handlers are registered when
``pipeline`` is imported and print to stdout.
"""

from __future__ import annotations

import time

import luigi

_started: dict[str, float] = {}
TRAIN_REPORT_EVERY_S = 30.0


def say(text: str) -> None:
    print(f"bertflow {time.strftime('%H:%M:%S')} {text}", flush=True)


def describe(task: luigi.Task, width: int = 100) -> str:
    """``GapFeatures(data=gap-test)``: the family and the parameters that tell it apart, briefly."""
    shown = []
    for name, param in task.get_params():
        value = task.param_kwargs[name]
        if not param.significant or value in (None, "", param._default if param._default is not None else object()):
            continue
        text = param.serialize(value)
        shown.append(f"{name}={text if len(text) <= 40 else text[:37] + '...'}")
    line = f"{task.task_family}({', '.join(shown)})"
    return line if len(line) <= width else line[: width - 4] + "...)"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")


@luigi.Task.event_handler(luigi.Event.START)
def _on_start(task: luigi.Task) -> None:
    _started[task.task_id] = time.monotonic()
    say(f"start {describe(task)}")


@luigi.Task.event_handler(luigi.Event.SUCCESS)
def _on_success(task: luigi.Task) -> None:
    took = time.monotonic() - _started.pop(task.task_id, time.monotonic())
    say(f"done  {describe(task)} in {_duration(took)}")


@luigi.Task.event_handler(luigi.Event.FAILURE)
def _on_failure(task: luigi.Task, exception: BaseException) -> None:
    took = time.monotonic() - _started.pop(task.task_id, time.monotonic())
    first = str(exception).strip().splitlines()[0] if str(exception).strip() else type(exception).__name__
    say(f"FAILED {describe(task)} after {_duration(took)}: {first}")


class TrainingReporter:
    """Prints a training run's progress (from its progress.json records) every ``every_s`` seconds."""

    def __init__(self, name: str, global_batch_size: int, every_s: float = TRAIN_REPORT_EVERY_S):
        self.name, self.global_batch_size, self.every_s = name, global_batch_size, every_s
        self._last = 0.0
        self._shown = None  # (phase, step) of the last line: a record is printed once

    def __call__(self, progress: dict | None) -> None:
        if not progress:
            return
        now = time.monotonic()
        phase = progress.get("phase", "train")
        step, total = int(progress.get("step") or 0), max(int(progress.get("total_steps") or 1), 1)
        if (phase, step) == self._shown or (self._shown and phase == self._shown[0] and now - self._last < self.every_s):
            return
        self._last, self._shown = now, (phase, step)
        parts = [f"{self.name}: {phase} step {step}/{total} ({100 * step / total:.0f}%)"]
        if isinstance(progress.get("loss"), (int, float)):
            parts.append(f"loss {progress['loss']:.4f}")
        speed = progress.get("sequences_per_second")
        if isinstance(speed, (int, float)) and speed > 0:
            parts.append(f"{speed:.1f} seq/s")
            if step < total:
                parts.append(f"ETA {_duration((total - step) * self.global_batch_size / speed)}")
        say(", ".join(parts))
