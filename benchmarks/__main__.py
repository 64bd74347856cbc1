"""``make bench``: run every benchmark, each printing its own table."""

from __future__ import annotations

import sys

from benchmarks import datahub_throughput


def main() -> int:
    return datahub_throughput.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
