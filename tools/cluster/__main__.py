"""make cluster-up / make cluster-down / make cluster-images:

python -m tools.cluster up        # start (or find running) the single-node cluster
python -m tools.cluster down      # stop it and restore the host; exit 1 if something differs
python -m tools.cluster images    # build obflow's images and load them into the node
"""

from __future__ import annotations

import sys
import time

from tools.cluster import node
from tools.cluster.node import IMAGES


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "up"
    started = time.monotonic()
    if command == "up":
        missing = node.missing_prerequisites()
        if missing and not node.is_up():
            print("cluster-up: missing " + "; ".join(missing), file=sys.stderr)
            return 1
        kubeconfig = node.up()
        print(f"cluster up in {time.monotonic() - started:.0f}s\nexport KUBECONFIG={kubeconfig}")
        return 0
    if command == "down":
        problems = node.down()
        for problem in problems:
            print(f"cluster-down: not restored: {problem}", file=sys.stderr)
        print(f"cluster down in {time.monotonic() - started:.0f}s")
        return 1 if problems else 0
    if command == "images":
        for image, outcome in node.load_images(IMAGES).items():
            print(f"{image}: {outcome}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
