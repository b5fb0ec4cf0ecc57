"""`make bench`: every benchmark in this folder, one after the other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: further runs of a benchmark with other arguments (the README's figures come from these too)
VARIANTS = {"bench_web.py": [["--rate", "8000"]]}

if __name__ == "__main__":
    failures = 0
    for script in sorted(HERE.glob("bench_*.py")):
        for args in [[], *VARIANTS.get(script.name, [])]:
            print(f"\n=== {' '.join([script.name, *args])} ===", flush=True)
            failures += subprocess.run([sys.executable, str(script), *args], cwd=HERE.parent).returncode != 0
    sys.exit(1 if failures else 0)
