"""``make bench``: run every benchmark, each printing its own table."""

from __future__ import annotations

import sys

from benchmarks import capture_throughput, datahub_throughput, job_throughput, recovery


def main() -> int:
    datahub_throughput.main([])
    print()
    capture_throughput.main([])
    print()
    job_throughput.main([])
    print()
    return recovery.main([])


if __name__ == "__main__":
    sys.exit(main())
