"""py_frag: pymalloc fragmentation.

usage: python py_frag.py gcore|kernel [--objects N] [--stride S]

Allocates N (default 1,000,000) floats in a list, then keeps only every S-th
(default 50th) one and drops the rest, so 98% of the float blocks are free
but nearly every pymalloc pool (and so every arena) is still pinned by a
survivor.  Then writes truth.json, allocated_blocks.txt, debugmallocstats.txt
like py_heap.py and stops (SIGSTOP) or aborts.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pyapp import coretruth  # noqa: E402


def main():
    args = sys.argv[1:]
    if not args or args[0] not in ("gcore", "kernel"):
        sys.stderr.write(__doc__)
        sys.exit(2)
    kernel = args[0] == "kernel"
    n = 1000000
    stride = 50
    if "--objects" in args:
        n = int(args[args.index("--objects") + 1])
    if "--stride" in args:
        stride = int(args[args.index("--stride") + 1])

    ev, threads, tids = coretruth.start_blocked_threads(2)
    blocks_before = sys.getallocatedblocks()
    objs = [i + 0.5 for i in range(n)]
    blocks_peak = sys.getallocatedblocks()
    kept = objs[::stride]
    del objs
    blocks_after = sys.getallocatedblocks()

    truth = {
        **coretruth.header("py_frag", args[0], tids, kernel),
        "objects_allocated": n,
        "stride": stride,
        "objects_kept": len(kept),
        "object_type": "float",
        "object_sizeof": sys.getsizeof(kept[0]),
        "allocated_blocks_before": blocks_before,
        "allocated_blocks_peak": blocks_peak,
        "allocated_blocks_after_free": blocks_after,
        "expected": {"float_kept": len(kept)},
    }
    coretruth.finish(truth, kernel, "truth.json", "allocated_blocks.txt", "debugmallocstats.txt")
    ev.set()
    return kept


if __name__ == "__main__":
    main()
