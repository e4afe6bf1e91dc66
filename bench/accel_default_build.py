"""Benchmark: the README's main job from a fresh clone, twice: wall time and bitstream identity.

Targets (issue 5): the default build (``python -m accel.build --board ulx3s``: train, compress
and quantize the digits model, generate the accelerator, verify it in simulation, synthesize,
place and route, bitstream, report) in <= 5 minutes on 2 cores; the same bitstream SHA-256 on a
rebuild.

The clone is made with ``git clone`` of this checkout's committed HEAD into a temporary folder;
``python -m`` runs there with the installed dependencies (the project's own code comes from the
clone, since ``-m`` puts the working folder first on the path). Commit before running it.

    python bench/accel_default_build.py [--runs 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, check=True,
                              capture_output=True, text=True).stdout.strip()
        print(f"fresh clone of {head} in {clone}")
        for run in range(args.runs):
            out = Path(tmp) / f"out{run}"
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "accel.build", "--board", "ulx3s",
                                   "--out", str(out)], cwd=clone)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                print(f"run {run + 1}: FAILED (exit {done.returncode}) after {seconds:.0f} s")
                return 1
            report = json.loads((out / "report.json").read_text())
            rows.append({"seconds": seconds, "sha256": report["bitstream_sha256"],
                         "clock_mhz": report["clock_mhz"], "fmax_mhz": report["fmax_mhz"],
                         "tool_seconds": report["tool_seconds"]})
            print(f"run {run + 1}: {seconds:.0f} s ({seconds / 60:.2f} min), clock "
                  f"{report['clock_mhz']:.1f} MHz (fmax {report['fmax_mhz']:.1f}), bitstream "
                  f"{report['bitstream_sha256'][:16]}..., tools {report['tool_seconds']}",
                  flush=True)
    first = rows[0]["seconds"]
    identical = len({r["sha256"] for r in rows}) == 1
    print(f"target default build <= 5 min: {'met' if first <= 300 else 'NOT met'} "
          f"({first / 60:.2f} min for the first run)")
    print(f"target identical bitstream on a rebuild: {'met' if identical else 'NOT met'} "
          f"({len(rows)} runs)")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "identical": identical}, indent=2) + "\n")
    return 0 if first <= 300 and identical else 1


if __name__ == "__main__":
    sys.exit(main())
