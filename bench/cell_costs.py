"""Record the cost of reference runs for `marlbench reproduce --dry-run` on a fresh install.

    python bench/cell_costs.py --conditions "quiet|loaded" RESULTS [RESULTS ...] \
        > marlbench/presets/cell_costs.json

Every completed run under the folders contributes its training seconds per step, evaluation
seconds per episode, env and agent count (from its run.json), keyed by results folder name; the
file also names the code commits, torch thread counts and CPU count of those runs and the
conditions they ran under (whether other jobs shared the machine), so whoever reads an estimate
knows what machine state it came from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from marlbench.reproduce import measured_run


def main(folders: list[str], conditions: str) -> None:
    runs: dict[str, list[dict]] = {}
    commits, threads = set(), set()
    for folder in folders:
        for path in sorted(Path(folder).glob("*/*/*/seed-*/run.json")):
            summary = json.loads(path.read_text())
            runs.setdefault(path.parent.parent.name, []).append(asdict(measured_run(summary)))
            commits.add(summary.get("code_commit"))
            threads.add(summary.get("torch_threads"))
    note = (f"reference runs: commits {sorted(map(str, commits))}, torch threads "
            f"{sorted(map(str, threads))}, {os.cpu_count()} CPUs, {conditions}")
    json.dump({"note": note, "runs": runs}, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="results roots")
    parser.add_argument("--conditions", required=True,
                        help="how the machine was loaded while the runs ran, e.g. 'quiet'")
    args = parser.parse_args()
    main(args.folders, args.conditions)
