"""py_libs: a process that imports and uses real libraries, for coreheap's census.

usage: python py_libs.py gcore|kernel

Run with the interpreter of a virtual environment where make_corpus.py installed
numpy, pandas, SQLAlchemy, lxml and requests from PyPI.  Each library is imported
if it is there; the truth says which were (`libraries`, `libraries_missing`), so
a library whose wheel does not install for this interpreter only drops its own
populations.  Stdlib populations (always there): IntEnum/IntFlag/Enum members,
dataclasses (slots=True on 3.10+), generators with small and large frames
(suspended), asyncio tasks (pending, on a loop that is kept) and coroutines
(never started), datetime/time (naive and aware)/date/timedelta, Decimal, deque,
re.Pattern/re.Match, weakref containers, bytearray, array.array.  No network:
requests objects are built by hand.

Truth (pyapp.coretruth.finish): truth.json with the full gc.get_objects() census,
`populations` (the counts this scenario made and holds), `expected` (the classes
whose census count is exactly the population), `samples` (id() and type name of
objects, tracked and untracked by the gc, so they can be checked by address),
`cython_types` (census rows of Cython's shared types, with their module), plus
allocated_blocks.txt and debugmallocstats.txt; then SIGSTOP (gcore) or abort.
"""

import os
import sys

# numpy's OpenBLAS starts a thread per CPU at import: one thread only, so the core's
# threads are the ones the truth lists (it lists /proc/self/task anyway).
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import array  # noqa: E402
import asyncio  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import decimal  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import re  # noqa: E402
import weakref  # noqa: E402

from pyapp import coretruth  # noqa: E402
from pyapp.libmodels import Color, FrozenRec, Node, Perm, Rec, Shape, SlotRec  # noqa: E402

LIBS = ("numpy", "pandas", "sqlalchemy", "lxml", "requests")


def import_libs():
    have, missing = {}, {}
    mods = {}
    for name in LIBS:
        try:
            m = importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any import failure only drops that library
            missing[name] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            continue
        mods[name] = m
        have[name] = str(getattr(m, "__version__", "?"))
    if "lxml" in mods:
        from lxml import etree
        mods["lxml.etree"] = etree
    return mods, have, missing


def type_key(t):
    """The census key of a type: what coretruth.finish uses."""
    return coretruth.type_key(t)


def small_gen(i):
    yield i
    yield i + 1


def make_big_gen():
    """A generator function with 120 locals and a deep value stack (a large frame)."""
    n = 120
    lines = ["def big_gen(i):"]
    for k in range(n):
        lines.append("    v%d = i + %d" % (k, k))
    lines.append("    yield (" + " + ".join("v%d" % k for k in range(n)) + ")")
    lines.append("    yield v0")
    ns = {"__name__": __name__}
    exec(compile("\n".join(lines), __file__ + ":big_gen", "exec"), ns)
    return ns["big_gen"]


async def agen(i):
    yield i
    yield i + 1


async def waiter(i, ev):
    await ev.wait()
    return i


def build(mods):
    keep = {}
    pops = []
    samples = []

    def pop(name, typ, count, what, objs=None):
        pops.append({"name": name, "type": typ, "count": count, "what": what})
        if objs:
            # the first 3 and the last: tracked and untracked objects, by address
            for o in list(objs[:3]) + [objs[-1]]:
                samples.append({"addr": id(o), "type": type_key(type(o)), "tracked": gc.is_tracked(o),
                                "population": name})

    # ---- enum
    keep["perm_combos"] = [Perm.R | Perm.W, Perm.R | Perm.X, Perm.W | Perm.X, Perm.R | Perm.W | Perm.X]
    members = list(Color) + list(Perm) + list(Shape)
    keep["enum_members"] = members
    pop("intenum_members", "pyapp.libmodels.Color", 23, "IntEnum members 0..22", list(Color))
    pop("intflag_members", "pyapp.libmodels.Perm", len(list(Perm)), "IntFlag canonical members",
        list(Perm))
    pop("enum_members", "pyapp.libmodels.Shape", 11, "Enum members", list(Shape))

    # ---- dataclasses
    keep["recs"] = [Rec(i, "rec-%d" % i, [i]) for i in range(149)]
    pop("dataclass", "pyapp.libmodels.Rec", 149, "@dataclass", keep["recs"])
    keep["frozen"] = [FrozenRec(i, i * 0.25 + 0.125) for i in range(61)]
    pop("dataclass_frozen", "pyapp.libmodels.FrozenRec", 61, "@dataclass(frozen=True)", keep["frozen"])
    keep["slotrecs"] = [SlotRec(i, i + 0.5, "slot-%d" % i) for i in range(173)]
    pop("dataclass_slots", "pyapp.libmodels.SlotRec", 173,
        "@dataclass(slots=True) (3.10+; explicit __slots__ before)", keep["slotrecs"])

    # ---- generators: started (suspended at a yield) and not started
    gens = [small_gen(i) for i in range(137)]
    for g in gens:
        next(g)
    big_gen = make_big_gen()
    bigs = [big_gen(i) for i in range(89)]
    for g in bigs:
        next(g)
    fresh = [small_gen(i) for i in range(19)]
    keep["gens"] = gens + bigs + fresh
    pop("generators_small", "generator", 137, "small frame, suspended", gens)
    pop("generators_big", "generator", 89, "120 locals, suspended", bigs)
    pop("generators_unstarted", "generator", 19, "small frame, never started", fresh)

    # ---- asyncio: a loop (not running) with 41 pending tasks suspended in Event.wait(),
    # 29 coroutines never started, 13 async generators.
    loop = asyncio.new_event_loop()

    async def setup():
        ev = asyncio.Event()
        tasks = [asyncio.ensure_future(waiter(i, ev)) for i in range(41)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return ev, tasks

    ev, tasks = loop.run_until_complete(setup())
    coros = [waiter(i, ev) for i in range(29)]
    agens = [agen(i) for i in range(13)]
    keep["asyncio"] = (loop, ev, tasks, coros, agens)
    pop("asyncio_tasks", type_key(type(tasks[0])), 41, "pending Tasks, suspended in Event.wait()",
        tasks)
    pop("coroutines_unstarted", "coroutine", 29, "never started", coros)
    pop("async_generators", "async_generator", 13, "never started", agens)

    # ---- datetime
    tzs = [datetime.timezone(datetime.timedelta(hours=h - 11, minutes=30)) for h in range(23)]
    naive_t = [datetime.time(i % 24, i % 60, i % 59, 1000 + i) for i in range(211)]
    aware_t = [datetime.time(i % 24, 7, 9, tzinfo=tzs[i % 23]) for i in range(97)]
    dts = [datetime.datetime(2020, 1 + i % 12, 1 + i % 28, i % 24, tzinfo=tzs[i % 23] if i % 2 else None)
           for i in range(123)]
    dates = [datetime.date(2000 + i, 1 + i % 12, 1 + i % 28) for i in range(67)]
    deltas = [datetime.timedelta(days=i, seconds=i * 7 + 1) for i in range(59)]
    keep["datetime"] = (tzs, naive_t, aware_t, dts, dates, deltas)
    pop("time_naive", "datetime.time", 211, "datetime.time without tzinfo", naive_t)
    pop("time_aware", "datetime.time", 97, "datetime.time with tzinfo", aware_t)
    pop("datetimes", "datetime.datetime", 123, "half with tzinfo", dts)
    pop("dates", "datetime.date", 67, "datetime.date", dates)
    pop("timedeltas", "datetime.timedelta", 59, "datetime.timedelta (+23 in the timezones)", deltas)

    # ---- decimal, deque, re, weakref, bytearray, array
    keep["decimals"] = [decimal.Decimal("%d.%03d" % (i, i % 1000)) for i in range(313)]
    pop("decimals", type_key(decimal.Decimal), 313, "Decimal('i.iii')", keep["decimals"])
    keep["deques"] = [collections.deque(range(i % 5), maxlen=8) for i in range(47)]
    pop("deques", "collections.deque", 47, "deque(maxlen=8)", keep["deques"])
    pats = [re.compile(r"item-(\d+)-%d-(?P<tail>[a-z]*)" % i) for i in range(19)]
    matches = [pats[i % 19].match("item-%d-%d-abc" % (i, i % 19)) for i in range(71)]
    keep["re"] = (pats, matches)
    pop("re_patterns", type_key(type(pats[0])), 19, "re.compile", pats)
    pop("re_matches", type_key(type(matches[0])), 71, "Pattern.match", matches)
    nodes = [Node(i) for i in range(53)]
    wvd = weakref.WeakValueDictionary()
    for n in nodes:
        wvd[n.ident] = n
    wset = weakref.WeakSet(nodes[:31])
    refs = [weakref.ref(n) for n in nodes[:43]]
    keep["weak"] = (nodes, wvd, wset, refs)
    pop("weak_nodes", "pyapp.libmodels.Node", 53, "weakly referenced", nodes)
    pop("weakrefs", type_key(type(refs[0])), 43, "weakref.ref(node) (WeakValueDictionary/WeakSet refs come on top)", refs)
    keep["bytearrays"] = [bytearray(b"b" * (16 + 97 * i)) for i in range(83)]
    pop("bytearrays", "bytearray", 83, "16..8000 bytes", keep["bytearrays"])
    keep["arrays"] = [array.array("d", range(100 + i)) for i in range(37)]
    pop("arrays", "array.array", 37, "array('d') of 100+i", keep["arrays"])

    # ---- untracked atoms, for the address sample
    keep["ints"] = [10 ** 20 + i for i in range(31)]
    pop("big_ints", "int", 31, "10**20 + i", keep["ints"])
    keep["floats"] = [i * 1.5 + 0.1 for i in range(31)]
    pop("floats", "float", 31, "i*1.5 + 0.1", keep["floats"])
    keep["strs"] = ["libs-%06d" % i for i in range(31)]
    pop("strs", "str", 31, "'libs-%06d'", keep["strs"])
    keep["bytes"] = [b"bytes-%06d" % i for i in range(31)]
    pop("bytes", "bytes", 31, "b'bytes-%06d'", keep["bytes"])

    # ---- libraries
    np = mods.get("numpy")
    if np is not None:
        small = [np.arange(10 + i % 7, dtype=np.int64) for i in range(101)]
        medium = [np.full(10000 + i, float(i)) for i in range(23)]
        large = [np.zeros(1 << 21) + i for i in range(3)]
        scalars = [np.float64(i) * 1.5 for i in range(57)]
        dtype_classes = [type(np.dtype(c)) for c in ("float64", "int32", "complex128", "bool")]
        keep["numpy"] = (small, medium, large, scalars, dtype_classes)
        nd = type_key(np.ndarray)
        pop("ndarray_small", nd, 101, "arange(10..16) int64", small)
        pop("ndarray_medium", nd, 23, "full(10000+i) float64 (data on the glibc heap)", medium)
        pop("ndarray_large", nd, 3, "zeros(2**21) float64 (16 MiB, mmapped data)", large)
        pop("numpy_scalars", type_key(type(scalars[0])), 57, "np.float64 scalars", scalars)
        pop("numpy_dtype_classes", type_key(type(dtype_classes[0])), 4,
            "DType classes (heap types, no GC header)", dtype_classes)
    pd = mods.get("pandas")
    if pd is not None:
        df = pd.DataFrame({
            "ident": list(range(1013)),
            "name": ["row-%d" % i for i in range(1013)],
            "value": [i * 0.5 for i in range(1013)],
            "flag": [i % 3 == 0 for i in range(1013)],
            "when": pd.date_range("2021-01-01", periods=1013, freq="h"),
        })
        series = [pd.Series([i, i + 1, i + 2], name="s%d" % i) for i in range(7)]
        summed = df.groupby("flag")["value"].sum()
        keep["pandas"] = (df, series, summed)
        pop("dataframes", type_key(pd.DataFrame), 1, "DataFrame 1013 x 5", [df])
        pop("series", type_key(pd.Series), 7, "Series of 3", series)
    sa = mods.get("sqlalchemy")
    if sa is not None:
        from sqlalchemy.orm import sessionmaker
        from pyapp.ormmodels import Base, User
        engine = sa.create_engine("sqlite://")
        Base.metadata.create_all(engine)
        session = sessionmaker(bind=engine, expire_on_commit=False)()
        users = [User(name="user%d" % i, email="u%d@example.invalid" % i) for i in range(127)]
        session.add_all(users)
        session.commit()
        keep["sqlalchemy"] = (engine, session, users)
        pop("orm_users", "pyapp.ormmodels.User", 127, "ORM objects, committed to in-memory sqlite",
            users)
    lx = mods.get("lxml.etree")
    if lx is not None:
        root = lx.Element("root")
        for i in range(257):
            el = lx.SubElement(root, "item", id=str(i))
            el.text = "text %d" % i
        elements = list(root)
        parsed = lx.fromstring(b"<doc>" + b"".join(b"<p n='%d'/>" % i for i in range(29)) + b"</doc>")
        keep["lxml"] = (root, elements, parsed)
        pop("lxml_elements", type_key(type(root)), 257, "SubElement proxies held in a list",
            elements)
    rq = mods.get("requests")
    if rq is not None:
        sessions = [rq.Session() for _ in range(11)]
        reqs = [rq.Request("GET", "http://service.invalid/item/%d" % i, headers={"X-N": str(i)},
                           params={"q": str(i)}) for i in range(17)]
        preps = [r.prepare() for r in reqs[:13]]
        resps = []
        for i in range(19):
            r = rq.models.Response()
            r.status_code = 200 + i % 3
            r._content = b'{"n": %d}' % i
            r.headers = rq.structures.CaseInsensitiveDict({"Content-Type": "application/json"})
            r.url = "http://service.invalid/item/%d" % i
            r.encoding = "utf-8"
            r.request = preps[i % 13]
            resps.append(r)
        keep["requests"] = (sessions, reqs, preps, resps)
        pop("requests_sessions", "requests.sessions.Session", 11, "Session()", sessions)
        pop("requests_requests", "requests.models.Request", 17, "Request(GET ...)", reqs)
        pop("requests_prepared", "requests.models.PreparedRequest", 13, "Request.prepare()", preps)
        pop("requests_responses", "requests.models.Response", 19, "Response() filled by hand",
            resps)
    return keep, pops, samples


# Populations whose census count is exactly what the scenario made (nothing else makes
# instances of their class): make_corpus.py checks them before recording a case.
EXPECTED = ("dataclass", "dataclass_frozen", "dataclass_slots", "weak_nodes", "orm_users",
            "requests_sessions", "requests_requests", "requests_prepared", "requests_responses",
            "dataframes")


def main():
    args = sys.argv[1:]
    if not args or args[0] not in ("gcore", "kernel"):
        sys.stderr.write(__doc__)
        sys.exit(2)
    kernel = args[0] == "kernel"
    mods, have, missing = import_libs()
    keep, pops, samples = build(mods)
    main_tid = coretruth.threading.get_native_id()
    tids = [main_tid] + sorted(int(t) for t in os.listdir("/proc/self/task") if int(t) != main_tid)
    expected = {}
    for p in pops:
        if p["name"] in EXPECTED:
            expected[p["type"]] = expected.get(p["type"], 0) + p["count"]
    truth = {
        **coretruth.header("py_libs", args[0], tids, kernel),
        "prefix": sys.prefix,
        "libraries": have,
        "libraries_missing": missing,
        "populations": pops,
        "expected": expected,
        "samples": samples,
    }
    coretruth.finish(truth, kernel, "truth.json", "allocated_blocks.txt", "debugmallocstats.txt",
                     cython_types=True)
    return keep


if __name__ == "__main__":
    main()
