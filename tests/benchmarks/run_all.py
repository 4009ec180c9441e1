"""`make bench`: run every tests/benchmarks/bench_*.py module's ``main()``.

Each benchmark reads real data from $SHARED_DATA (../shared/data), writes raw results
and plots under $BENCH_OUT, and its write-up lives in docs/benchmarks/<area>.md.
``python -m tests.benchmarks.run_all --only serving`` runs a subset.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time

import tests.benchmarks as pkg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="substrings of module names")
    ns = parser.parse_args(argv)
    names = sorted(
        m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("bench_")
    )
    if ns.only:
        names = [n for n in names if any(s in n for s in ns.only)]
    failed = []
    for name in names:
        print(f"=== {name}", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"tests.benchmarks.{name}")
        rc = module.main([])
        print(f"=== {name} rc={rc} in {time.perf_counter() - start:.0f}s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
