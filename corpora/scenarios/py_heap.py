"""py_heap: CPython heap ground truth for coreheap.

usage: python py_heap.py gcore|kernel [--scale F]

Builds populations with distinctive counts, keeps them alive, starts two
threads blocked on an Event, then (pyapp.coretruth.finish) writes, in the
current directory:
  truth.json            pid, tids, exe, versions, expected populations,
                        object sizes, gc.get_objects() census
  allocated_blocks.txt  sys.getallocatedblocks() taken in the final step
  debugmallocstats.txt  sys._debugmallocstats() output (fd 2 is pointed there)
and stops itself with SIGSTOP (gcore mode) or calls os.abort() (kernel mode).

--scale multiplies the small-object population counts (default 1.0); the
reference set may use a smaller scale to keep the committed cores small.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from collections import OrderedDict  # noqa: E402

from pyapp import coretruth  # noqa: E402
from pyapp.models import Outer, Point, Registry, Response  # noqa: E402


def scaled(n, scale):
    """Scale a count, keeping it odd (distinctive) and >= 1."""
    m = max(1, int(round(n * scale)))
    return m if m % 2 else m + 1


def build(scale):
    keep = {}
    pops = []  # [{"name", "type", "count", "what"}]

    def pop(name, typ, count, what, sizeof=None):
        d = {"name": name, "type": typ, "count": count, "what": what}
        if sizeof is not None:
            d["sizeof"] = sizeof
        pops.append(d)

    n_resp = scaled(12345, scale)
    keep["responses"] = [Response(i, "/api/v1/item/%d" % i, 200 + i % 5) for i in range(n_resp)]
    pop("responses", "pyapp.models.Response", n_resp,
        "Response(ident=i, path='/api/v1/item/<i>', status=200+i%5)",
        sys.getsizeof(keep["responses"][0]))
    pop("response_paths", "str", n_resp, "the distinct path strs of the Responses",
        sys.getsizeof(keep["responses"][0].path))

    n_pt = scaled(4321, scale)
    keep["points"] = [Point(i * 0.5, -i * 0.25 - 0.125) for i in range(n_pt)]
    pop("points", "pyapp.models.Point", n_pt, "Point(x=i*0.5, y=-i*0.25-0.125), __slots__",
        sys.getsizeof(keep["points"][0]))
    pop("point_floats", "float", 2 * n_pt, "the x and y floats of the Points")

    n_inner = scaled(777, scale)
    keep["inners"] = [Outer.Inner(i % 7) for i in range(n_inner)]
    pop("inners", "pyapp.models.Outer.Inner", n_inner, "Outer.Inner(tag=i%7)",
        sys.getsizeof(keep["inners"][0]))

    n_reg = 3
    regs = []
    for r in range(n_reg):
        reg = Registry()
        for i in range(101 + r):
            reg["key-%d-%d" % (r, i)] = keep["responses"][i]
        regs.append(reg)
    keep["registries"] = regs
    pop("registries", "pyapp.models.Registry", n_reg,
        "Registry (dict subclass) with 101, 102, 103 str->Response items",
        sys.getsizeof(regs[0]))

    n_od = scaled(555, scale)
    keep["odicts"] = [OrderedDict([("a", i), ("b", -i), ("c", None)]) for i in range(n_od)]
    pop("odicts", "collections.OrderedDict", n_od, "OrderedDict a/b/c",
        sys.getsizeof(keep["odicts"][0]))

    n_list = scaled(2222, scale)
    keep["lists"] = [[None, True, i] for i in range(n_list)]
    pop("small_lists", "list", n_list, "[None, True, i]", sys.getsizeof(keep["lists"][0]))

    n_tup = scaled(3333, scale)
    keep["tuples"] = [(i, "t", None) for i in range(n_tup)]
    pop("small_tuples", "tuple", n_tup,
        "(i, 't', None): untracked by the gc after a collection, so not in the census",
        sys.getsizeof(keep["tuples"][0]))

    n_set = scaled(444, scale)
    keep["sets"] = [{i, -i - 1} for i in range(n_set)]
    pop("sets", "set", n_set, "{i, -i-1}", sys.getsizeof(keep["sets"][0]))

    n_dict = scaled(1111, scale)
    keep["dicts"] = [{"k": i, "v": [i]} for i in range(n_dict)]
    pop("small_dicts", "dict", n_dict, "{'k': i, 'v': [i]} (the [i] lists are counted in small_dict_lists)",
        sys.getsizeof(keep["dicts"][0]))
    pop("small_dict_lists", "list", n_dict, "the [i] lists inside small_dicts")

    n_sa = scaled(5001, scale)
    keep["str_ascii"] = ["s%06d" % i for i in range(n_sa)]
    pop("short_ascii_str", "str", n_sa, "'s%06d' % i", sys.getsizeof(keep["str_ascii"][0]))
    n_su = scaled(1001, scale)
    keep["str_ucs2"] = ["ключ-%d" % i for i in range(n_su)]
    pop("short_ucs2_str", "str", n_su, "'ключ-%d' % i (UCS-2)", sys.getsizeof(keep["str_ucs2"][0]))
    n_s4 = scaled(501, scale)
    keep["str_ucs4"] = ["\U0001F40D-%d" % i for i in range(n_s4)]
    pop("short_ucs4_str", "str", n_s4, "snake emoji + '-%d' (UCS-4)", sys.getsizeof(keep["str_ucs4"][0]))

    n_int = scaled(6001, scale)
    keep["ints"] = [10 ** 30 + i for i in range(n_int)]
    pop("big_ints", "int", n_int, "10**30 + i", sys.getsizeof(keep["ints"][0]))
    n_fl = scaled(7001, scale)
    keep["floats"] = [i + 0.1 for i in range(n_fl)]
    pop("floats", "float", n_fl, "i + 0.1", sys.getsizeof(keep["floats"][0]))

    # large objects (> 512 bytes: glibc malloc, not pymalloc)
    keep["bytes_3000"] = [bytes([i % 251]) * 3000 for i in range(97)]
    pop("bytes_3000", "bytes", 97, "bytes of 3000 (glibc heap)", sys.getsizeof(keep["bytes_3000"][0]))
    keep["bytes_300k"] = [bytes([0x5A + i]) * (300 * 1024) for i in range(5)]
    pop("bytes_300k", "bytes", 5, "bytes of 300 KiB (mmapped by glibc)",
        sys.getsizeof(keep["bytes_300k"][0]))
    keep["str_2000"] = [("L%02d" % i) * 666 + "xx" for i in range(41)]
    pop("str_2000", "str", 41, "ascii str of 2000 chars (glibc heap)", sys.getsizeof(keep["str_2000"][0]))
    keep["str_ucs2_1500"] = [("Ж%d" % i) * 750 for i in range(11)]
    pop("str_ucs2_1500", "str", 11, "UCS-2 str of 1500 chars (glibc heap)",
        sys.getsizeof(keep["str_ucs2_1500"][0]))
    keep["tuples_200"] = [tuple(range(i, i + 200)) for i in range(23)]
    pop("tuples_200", "tuple", 23, "tuple of 200 ints (glibc heap)", sys.getsizeof(keep["tuples_200"][0]))
    keep["lists_10000"] = [[i] * 10000 for i in range(3)]
    pop("lists_10000", "list", 3, "list of 10000 items (item array on the glibc heap)",
        sys.getsizeof(keep["lists_10000"][0]))
    keep["big_dicts"] = [{"bk%d-%d" % (d, i): i for i in range(5000)} for d in range(2)]
    pop("big_dicts", "dict", 2, "dict of 5000 str->int (keys table on the glibc heap)",
        sys.getsizeof(keep["big_dicts"][0]))

    # churn: create and drop, so the free lists are not empty
    for _ in range(3):
        junk = [{} for _ in range(1000)]
        junk += [[] for _ in range(1000)]
        junk += [float(i) + 0.5 for i in range(1000)]
        junk += [(i, i) for i in range(1000)]
        del junk

    return keep, pops


def class_sizes():
    """sys.getsizeof of throw-away instances (not part of the populations)."""
    r = Response(1, "/x", 200)
    sizes = {
        "pyapp.models.Response": sys.getsizeof(r),
        "pyapp.models.Response.__dict__": sys.getsizeof(r.__dict__),
        "pyapp.models.Point": sys.getsizeof(Point(1.0, 2.0)),
        "pyapp.models.Outer.Inner": sys.getsizeof(Outer.Inner(1)),
        "pyapp.models.Registry(empty)": sys.getsizeof(Registry()),
    }
    del r
    return sizes


def main():
    args = sys.argv[1:]
    if not args or args[0] not in ("gcore", "kernel"):
        sys.stderr.write(__doc__)
        sys.exit(2)
    kernel = args[0] == "kernel"
    scale = 1.0
    if "--scale" in args:
        scale = float(args[args.index("--scale") + 1])

    sizes = class_sizes()
    keep, pops = build(scale)
    ev, threads, tids = coretruth.start_blocked_threads(2)

    truth = {
        **coretruth.header("py_heap", args[0], tids, kernel),
        "scale": scale,
        "populations": pops,
        "expected": {},
        "sizes": sizes,
    }
    expected = {}
    for p in pops:
        if p["type"].startswith("pyapp.") or p["type"] == "collections.OrderedDict":
            expected[p["type"]] = expected.get(p["type"], 0) + p["count"]
    truth["expected"] = expected
    coretruth.finish(truth, kernel, "truth.json", "allocated_blocks.txt", "debugmallocstats.txt")
    # gcore mode: the generator kills us while stopped; if continued, just exit
    ev.set()
    return keep


if __name__ == "__main__":
    main()
