"""How fast the command line answers: `studylib --help` and three argument errors, each a fresh process.

    python benchmarks/bench_cli.py [--repeats 5]

The commands are run interleaved (round-robin), `--repeats` times each; the script prints the median and
the spread of the wall time per command. The goal (issue 19) is under 1 s: the parser imports no torch.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "studylib --help": ["--help"],
    "recover --lr inf": ["recover", "M", "--train", "lora", "--loss", "ce", "--lr", "inf", "--out", "X"],
    "prune --ratio 1.5": ["prune", "M", "--paradigm", "layerwise", "--criterion", "bi", "--ratio", "1.5", "--out", "X"],
    "evaluate --benchmarks ,": ["evaluate", "M", "--benchmarks", ",", "--out", "X.json"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "studylib.cli", *argv], capture_output=True, text=True)
            times[name].append(time.perf_counter() - t0)
            expected = 0 if argv == ["--help"] else 2
            assert r.returncode == expected, (name, r.returncode, r.stderr[-300:])
    print(f"| command | median (s) | min-max (s) | runs |\n|---|---|---|---|")
    for name, ts in times.items():
        print(f"| `{name}` | {statistics.median(ts):.3f} | {min(ts):.3f}-{max(ts):.3f} | {len(ts)} |")


if __name__ == "__main__":
    main()
