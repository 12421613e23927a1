"""``python -m prep.<task> INPUT OUT ...``: the task's feature CLI under its short name (``python -m prep <task>`` is the same)."""

import sys

from prep.__main__ import main

if __name__ == "__main__":
    sys.exit(main([__spec__.name.rsplit(".", 1)[1], *sys.argv[1:]]))
