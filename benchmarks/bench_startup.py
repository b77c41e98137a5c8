"""Start-up cost of the installed plugin on a project that has no transfer tests.

A temporary project with ``--tests`` trivial tests and a ``[tool.pytest_transfer]``
table (so the plugin reads its settings) is run with ``python -m pytest -q``,
alternately with the plugin and with ``-p no:transfer``, ``--rounds`` times
each; printed are the median wall-clock times, their ratio (target <= 1.05)
and whether torch or numpy was imported (they must not be). Run::

    .venv/bin/python benchmarks/bench_startup.py
    .venv/bin/python benchmarks/bench_startup.py --rounds 21
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = """
import json, sys
import pytest
code = pytest.main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "numpy", "torchvision", "filelock") if m in sys.modules)
print(json.dumps({"code": int(code), "heavy": heavy}))
"""


def make_project(root: Path, tests: int) -> None:
    (root / "pyproject.toml").write_text('[tool.pytest_transfer]\nseed = 1\nbatch_size = 32\n')
    body = "\n\n".join(f"def test_{i}():\n    assert {i} + 1 > {i}" for i in range(tests))
    (root / "test_plain.py").write_text(body + "\n")


def run(root: Path, *extra: str) -> tuple[float, list[str]]:
    # byte-code is cached (outside the source tree), as in an installed environment
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE, "-q", "-p", "no:cacheprovider", *extra], cwd=root,
                         capture_output=True, text=True, check=True, env=env)
    wall = time.perf_counter() - start
    return wall, json.loads(out.stdout.strip().splitlines()[-1])["heavy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--tests", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_project(root, args.tests)
        run(root)  # warm the file system cache and the byte-code of both configurations
        run(root, "-p", "no:transfer")
        with_plugin, without, heavy = [], [], set()
        for r in range(args.rounds):
            order = [True, False] if r % 2 == 0 else [False, True]
            for plugin in order:
                wall, imported = run(root) if plugin else run(root, "-p", "no:transfer")
                (with_plugin if plugin else without).append(wall)
                if plugin:
                    heavy.update(imported)
    a, b = statistics.median(with_plugin), statistics.median(without)
    print(f"pytest -q on {args.tests} plain tests, {args.rounds} rounds (median wall clock):")
    print(f"  with pytest-transfer:   {a * 1000:7.1f} ms")
    print(f"  with -p no:transfer:    {b * 1000:7.1f} ms")
    print(f"  start-up ratio:         {a / b:.3f}  (target <= 1.05)")
    print(f"  heavy modules imported: {sorted(heavy) or 'none'}")


if __name__ == "__main__":
    main()
