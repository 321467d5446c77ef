"""py_leak: a "service" that leaks one LeakedResponse per request.

usage: python py_leak.py gcore|kernel [--requests N] [--stop-at A|B|AB]

Each request builds a pyapp.models.LeakedResponse (request_no int, a ~200
char str body, a dict of 3 headers) and appends it to the module-level
REGISTRY list (the leak), and also creates and drops innocent churn (temporary
dicts, lists and strs).

gcore mode (default --stop-at AB): after N requests it writes truth_A.json,
allocated_blocks_A.txt, debugmallocstats_A.txt and stops itself (SIGSTOP);
the generator takes core A and sends SIGCONT; it serves up to 3N requests,
writes the *_B files and stops again for core B.

kernel mode: a process can dump only one kernel core, so the generator runs
the program twice: --stop-at A aborts after N requests (core A), --stop-at B
serves 3N requests without stopping at A and aborts (core B).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pyapp import coretruth  # noqa: E402
from pyapp.models import LeakedResponse  # noqa: E402
from pyapp.models import __file__ as models_file  # noqa: E402

REGISTRY = []  # the leak
SERVED = [0]


def make_body(req_no):
    return ("response body %08d; " % req_no) * 8 + "end"  # 195 chars


def make_headers(req_no):
    return {
        "content-type": "text/plain; charset=utf-8",
        "x-request-id": "req-%08d" % req_no,
        "x-served-by": "leaky-%d" % (req_no % 4),
    }


def handle(req_no):
    resp = LeakedResponse(req_no, make_body(req_no), make_headers(req_no))
    REGISTRY.append(resp)  # the leak
    # innocent churn: all dropped at the end of the request
    tmp = {"q": req_no, "l": [req_no] * 5, "s": "tmp-%d" % req_no}
    parts = [str(i * req_no) for i in range(10)]
    joined = "-".join(parts)
    scratch = [tmp, parts, joined, (req_no, joined)]
    del tmp, parts, joined, scratch
    SERVED[0] += 1


def part_sizes():
    """sys.getsizeof of a throw-away LeakedResponse and its parts."""
    r = LeakedResponse(10 ** 9, make_body(12345678), make_headers(12345678))
    d = {
        "pyapp.models.LeakedResponse": sys.getsizeof(r),
        "pyapp.models.LeakedResponse.__dict__": sys.getsizeof(r.__dict__),
        "body_str": sys.getsizeof(r.body),
        "body_len": len(r.body),
        "headers_dict": sys.getsizeof(r.headers),
        "header_values_str": [sys.getsizeof(v) for v in r.headers.values()],
        "request_no_int": sys.getsizeof(r.request_no),
    }
    del r
    return d


def stage(name, kernel, tids, sizes, mode):
    truth = {
        **coretruth.header("py_leak", mode, tids, kernel),
        "stage": name,
        "requests_served": SERVED[0],
        "leaked": len(REGISTRY),
        "expected": {"pyapp.models.LeakedResponse": len(REGISTRY)},
        "leak_per_request": {
            "objects": ["pyapp.models.LeakedResponse", "str (body)", "dict (headers)",
                        "str x-request-id", "str x-served-by", "int request_no (if > 256)"],
            "note": "the content-type value is a shared constant",
        },
        "sizes": sizes,
        # under PYTHONTRACEMALLOC (the py_trace_leak case): the files whose traces
        # traces_<stage>.json compares (pyapp.coretruth.write_traces)
        "trace_files": [os.path.abspath(__file__), os.path.abspath(models_file)],
    }
    coretruth.finish(truth, kernel, "truth_%s.json" % name, "allocated_blocks_%s.txt" % name,
                     "debugmallocstats_%s.txt" % name)


def main():
    args = sys.argv[1:]
    if not args or args[0] not in ("gcore", "kernel"):
        sys.stderr.write(__doc__)
        sys.exit(2)
    mode = args[0]
    kernel = mode == "kernel"
    n = 2000
    if "--requests" in args:
        n = int(args[args.index("--requests") + 1])
    stop_at = "AB"
    if "--stop-at" in args:
        stop_at = args[args.index("--stop-at") + 1]
    if kernel and stop_at not in ("A", "B"):
        sys.stderr.write("kernel mode needs --stop-at A or --stop-at B\n")
        sys.exit(2)

    sizes = part_sizes()
    ev, threads, tids = coretruth.start_blocked_threads(2)
    req = 0
    while req < n:
        req += 1
        handle(req)
    if "A" in stop_at:
        stage("A", kernel, tids, sizes, mode)
    while req < 3 * n:
        req += 1
        handle(req)
    if "B" in stop_at:
        stage("B", kernel, tids, sizes, mode)
    ev.set()


if __name__ == "__main__":
    main()
