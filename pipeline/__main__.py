"""Where the last FullRun put its results: ``python -m pipeline`` (after ``luigi ... FullRun``).

Prints the path of ``summary.md`` for FullRun with the parameters luigi.cfg gives it, and the
TensorBoard command, whether this invocation ran anything or found everything cached.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    from pipeline.fullrun import FullRun

    summary = Path(FullRun().output().path)
    if not summary.is_file():
        print("no finished FullRun for this configuration yet: luigi --module pipeline FullRun --local-scheduler")
        return 1
    print(f"run summary: {summary}")
    for line in summary.read_text(encoding="utf-8").splitlines():
        if line.startswith("tensorboard "):
            print(f"TensorBoard: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
