"""py_trace: allocation sites for tracemalloc, run under PYTHONTRACEMALLOC=N.

usage: PYTHONTRACEMALLOC=10 python py_trace.py gcore|kernel

Builds populations at distinct lines of this file and of pyapp/models.py:
plain objects, dicts, lists, strs, tuples, bytearrays above pymalloc's 512-byte
limit (glibc chunks), a recursion deeper than 10 frames (traceback truncation,
cumulative statistics counting one frame several times), and, through ctypes,
traces in a foreign domain (PyTraceMalloc_Track, as numpy does).

pyapp.coretruth.finish writes the usual truth files and, because
PYTHONTRACEMALLOC is set, traces.json: snapshot.statistics() for every key
(and cumulative) over the traces whose most recent frame is in this file or in
pyapp/models.py ("files"). Nothing in those files runs between the snapshot
and the core, so these traces are exactly the ones the core holds.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pyapp import coretruth  # noqa: E402
from pyapp import models  # noqa: E402
from pyapp.models import Point, Response  # noqa: E402

KEEP = []


def records(n):
    out = []
    for i in range(n):
        out.append({"id": i, "name": "record-%05d" % i})
    return out


def responses(n):
    return [Response(i, "/r/%d" % i, 200) for i in range(n)]


def points(n):
    return [Point(float(i), float(-i)) for i in range(n)]


def buffers(n, size):
    return [bytearray(size) for _ in range(n)]


def deep(level, acc):
    # Allocates at every level: 14 levels > 10 frames, so tracebacks are cut.
    acc.append([level] * (level + 3))
    if level < 14:
        deep(level + 1, acc)
    return acc


def tuples(n):
    return [(i, str(i)) for i in range(n)]


def foreign_domain(n):
    """Traces in domain 7 through the C API (what numpy does for its data)."""
    try:
        import ctypes
    except ImportError:
        return None
    track = ctypes.pythonapi.PyTraceMalloc_Track
    track.argtypes = [ctypes.c_uint, ctypes.c_size_t, ctypes.c_size_t]
    track.restype = ctypes.c_int
    bufs = [ctypes.create_string_buffer(1000 + i) for i in range(n)]
    for i, b in enumerate(bufs):
        track(7, ctypes.addressof(b), 1000 + i)
    return bufs


def main():
    args = sys.argv[1:]
    if not args or args[0] not in ("gcore", "kernel"):
        sys.stderr.write(__doc__)
        sys.exit(2)
    kernel = args[0] == "kernel"
    KEEP.append(records(1501))
    KEEP.append(responses(777))
    KEEP.append(points(333))
    KEEP.append(buffers(21, 4000))
    KEEP.append(tuples(555))
    for _ in range(3):
        KEEP.append(deep(0, []))
    KEEP.append(foreign_domain(9))
    ev, threads, tids = coretruth.start_blocked_threads(2)
    truth = {
        **coretruth.header("py_trace", args[0], tids, kernel),
        "expected": {"pyapp.models.Response": 777, "pyapp.models.Point": 333},
        "trace_files": [os.path.abspath(__file__), os.path.abspath(models.__file__)],
    }
    coretruth.finish(truth, kernel, "truth.json", "allocated_blocks.txt", "debugmallocstats.txt")
    ev.set()


if __name__ == "__main__":
    main()
