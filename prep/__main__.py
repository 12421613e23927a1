"""Feature generation for any registered task: ``python -m prep <task> INPUT OUT [task flags]``.

    python -m prep squad dev-v1.1.json runs/squad-dev --split eval --nproc 4
    python -m prep gap gap-development.tsv runs/gap-dev
    python -m prep <task> --help          # the task's own flags
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from tasks import UnknownTaskError, get_task, task_names

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + f"\n\ntasks: {', '.join(task_names())}")
        return 0 if argv else 2
    try:
        spec = get_task(argv[0])
    except UnknownTaskError as err:
        print(f"python -m prep: error: {err}", file=sys.stderr)
        return 2
    from prep.cli import prep_command

    return prep_command(spec.name, spec.description, spec.prep, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
