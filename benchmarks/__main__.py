"""``make bench``: run every benchmark, each printing its own table."""

from __future__ import annotations

import sys

from benchmarks import (
    capture_throughput,
    datahub_throughput,
    job_throughput,
    operator_reconcile,
    parallelism,
    recovery,
    rescale,
    scale_model,
    scaling,
)


def main() -> int:
    datahub_throughput.main([])
    print()
    capture_throughput.main([])
    print()
    job_throughput.main([])
    print()
    scaling.main([])
    print()
    scaling.main(["--taskmanagers", "2"])
    print()
    scale_model.main([])
    print()
    recovery.main([])
    print()
    operator_reconcile.main([])
    print()
    rescale.main([])
    print()
    return parallelism.main(["--parallelism", "10,128", "--records", "10000"])


if __name__ == "__main__":
    sys.exit(main())
