"""Merge ``bench.json`` files from several runs over the same videos into one report.

    python benchmarks/merge_bench.py RUN1/bench.json RUN2/bench.json --out DIR

Writes ``DIR/bench.json``, ``bench.md`` and ``bench.png`` with the rows of every run and the
per-model summary recomputed over all of them (the whole job's clock: the first report's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scenescribe.bench_report import load_report, merge_reports, to_markdown, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    report = merge_reports([load_report(p) for p in args.reports])
    write_report(report, args.out)
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
