"""Issue #16 in one command: the per-change figures (``hot.py``: one key, one service, 1,000
``key()``, beside the raw clients and the urllib floor, ratios and targets), then start-up and
idle memory (``once.py``: ``-once`` beside ``python -c pass`` and the floor of its libraries'
imports, idle RSS with one and 1,000 keys). Options after ``--`` go to ``hot.py``.

    .venv/bin/python bench/issue16.py                       # ~7 min
    .venv/bin/python bench/issue16.py -- --base-src /tmp/old --markdown
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    args = sys.argv[1:]
    hot_args = args[args.index("--") + 1 :] if "--" in args else []
    status = 0
    for script, extra in (("hot.py", hot_args), ("once.py", [])):
        print(f"\n===== bench/{script} {' '.join(extra)}".rstrip(), flush=True)
        status |= subprocess.call([sys.executable, str(HERE / script), *extra])
    return status


if __name__ == "__main__":
    sys.exit(main())
