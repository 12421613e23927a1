"""What a person running ``luigi --module pipeline ...`` reads: one line when each task starts and
ends, training progress (step, loss, sequences/s, ETA) every half minute, download progress, and
one line per error.

luigi.cfg sets ``[core] log_level = WARNING``, so these lines replace Luigi's DEBUG stream
(``--log-level DEBUG`` on the command line brings it back). The handlers are registered when
``pipeline`` is imported and print to stdout.

Errors: Luigi logs a failed task's, a failed ``complete()`` / ``requires()``'s and a refused
parameter's traceback on its ``luigi-interface`` logger. Every record of that logger is also
written, traceback and all, to ``<runs_dir>/logs/luigi.log`` (appended, one command after
another); below DEBUG the console gets one line instead of a record with a traceback:
``FAILED <task> after 3s: <message> (traceback: runs/logs/luigi.log)`` for a task that failed,
``error: <message> (traceback: ...)`` for the rest. At ``--log-level DEBUG`` the console shows
Luigi's records as they are, tracebacks included.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import luigi

_started: dict[str, float] = {}
TRAIN_REPORT_EVERY_S = 30.0
LOG_FOLDER = "logs"  # under the runs folder
LUIGI_LOG = "luigi.log"  # Luigi's own log, tracebacks included
LUIGI_LOGGER = "luigi-interface"


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
    where = "" if _console_shows_tracebacks() else f" (traceback: {_LOG.last_path or 'above'})"
    say(f"FAILED {describe(task)} after {_duration(took)}: {first_line(exception)}{where}")


def first_line(exception: BaseException) -> str:
    """An exception's message, first line (its type's name if it has none)."""
    text = str(exception).strip()
    return text.splitlines()[0] if text else type(exception).__name__


def luigi_log_path() -> Path:
    """``<runs_dir>/logs/luigi.log``: where Luigi's records go with their tracebacks."""
    from pipeline.artifacts import bertflow

    return Path(bertflow().runs_dir) / LOG_FOLDER / LUIGI_LOG


# Luigi's record about a command whose task was refused as it was made comes after the command line
# is gone (luigi.retcodes), so --bertflow-runs-dir could no longer be read: the path noted before.
_REFUSED_COMMAND = "Uncaught exception in luigi"
_command_log: list[Path] = []


def note_command_line() -> None:
    """Called as a task is made: while a ``luigi`` command line is parsed, note its log path."""
    from luigi.cmdline_parser import CmdlineParser

    if CmdlineParser.get_instance() is not None:
        _command_log[:] = [luigi_log_path()]


def _console_shows_tracebacks() -> bool:
    """True at ``--log-level DEBUG`` (or no ``[core] log_level``): Luigi's records reach the console whole."""
    return logging.getLogger(LUIGI_LOGGER).getEffectiveLevel() <= logging.DEBUG


def _has_traceback(record: logging.LogRecord) -> bool:
    """True when a record carries a traceback: its exception's, or one Luigi wrote into the message
    (``Will not run X ... due to error in complete() method:\n<traceback>``)."""
    if record.exc_info and record.exc_info[1] is not None:
        return True
    return "Traceback (most recent call last):" in record.getMessage()


def _exception_line(record: logging.LogRecord) -> str:
    """The raised exception's message, first line, from a record that carries a traceback."""
    if record.exc_info and record.exc_info[1] is not None:
        return first_line(record.exc_info[1])
    lines = record.getMessage().rstrip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    # After the last frame: its source lines (indented), then "module.Error: message" at the margin.
    tail = [line for line in lines[frames[-1] + 1 if frames else 0:] if line and not line[0].isspace()]
    if not tail:
        return lines[-1].strip() if lines else record.getMessage()
    kind, _, message = tail[0].partition(": ")
    return message.strip() or kind


class LuigiLog(logging.Filter):
    """On Luigi's ``luigi-interface`` logger: every record also goes to :func:`luigi_log_path`; below
    DEBUG, a record with a traceback reaches the console as one line (a failed task's from the
    FAILURE handler above, the others' here). Should the log file fail, the console keeps everything."""

    def __init__(self):
        super().__init__()
        self._files: dict[Path, logging.Handler] = {}
        self._busy = False
        self.last_path: Path | None = None  # where the last record went (None: the console only)

    def _write(self, record: logging.LogRecord) -> Path | None:
        """Append ``record`` to the log file; None where there is none: an in-process ``luigi.build``
        (no command line) writes one only into a runs folder that exists, never making one for it."""
        from luigi.cmdline_parser import CmdlineParser

        refused = record.msg == _REFUSED_COMMAND
        path = _command_log[0] if refused and _command_log else luigi_log_path()
        handler = self._files.get(path)
        if handler is None:
            if not (refused or CmdlineParser.get_instance() is not None or path.parent.parent.is_dir()):
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [pid %(process)d] %(message)s"))
            self._files[path] = handler
        handler.handle(record)
        return path

    def filter(self, record: logging.LogRecord) -> bool:
        if self._busy:  # a record logged while this one is handled (reading the config, say)
            return True
        self._busy = True
        try:
            path = self._write(record)
        except Exception:  # noqa: BLE001 - no log file: the traceback must not be lost
            path = None
        finally:
            self._busy = False
        self.last_path = path
        if path is None or _console_shows_tracebacks() or not _has_traceback(record):
            return True
        if not str(record.msg).startswith("[pid %s] Worker %s failed"):  # a task's: _on_failure says it
            say(f"error: {_exception_line(record)} (traceback: {path})")
        return False


_LOG = LuigiLog()
logging.getLogger(LUIGI_LOGGER).addFilter(_LOG)


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
