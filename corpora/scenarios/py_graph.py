"""py_graph: ownership ground truth for coreheap's object graph.

usage: python py_graph.py gcore|kernel

Builds objects held by named holders, each holding only objects nothing else
references, and writes, before its core (pyapp.coretruth.finish), truth.json
with:
  owners            for each holder (module global list and dict, class
                    attribute cache, closure, lru_cache, a worker thread's
                    frame local, containers whose contents live outside the
                    object, strings interned at run time, C objects holding
                    references in their own fields: a suspended generator, an
                    iterator, a partial, a chain, a mapping proxy, a queue; and
                    23 more of less common kinds: a suspended coroutine and
                    async generator, nested and self-recursive closures, a
                    chained exception's tracebacks, a WeakKeyDictionary, a
                    bound method, a contextvars Context, a namespace, a
                    methodcaller, map/enumerate/zip, a dynamic class and
                    module, a function's defaults and __dict__, a frozenset,
                    a struct sequence with hidden fields, a dict view, a
                    cell, a memoryview, an array, a generator expression) its
                    address and the per-type counts of the
                    objects reachable only through it: a dominator computation
                    of the scenario's own over gc.get_referents (plus dict
                    keys, which dict_traverse skips but which own memory),
                    rooted at sys.modules, the sys dict, builtins and every
                    thread's frames
                    (weak references are no references: HOLD_WEAK's weakrefs
                    to HOLD_LIST's records leave those records HOLD_LIST's;
                    a dict subclass owns its keys as a dict does, and an
                    OrderedDict's nodes reference them a second time)
  marked            one object per holder and its chain of referrers from the
                    holder (checked with gc.get_referrers)
  cycles            K reference cycles made after the last collection (gc is
                    disabled until the core), per type
  refcount_excess   M objects whose refcount was raised through
                    ctypes.pythonapi.Py_IncRef and that every holder dropped,
                    per type
"""

import array
import collections
import contextvars
import ctypes
import functools
import gc
import itertools
import operator
import os
import queue
import sys
import threading
import types
import weakref

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pyapp import coretruth  # noqa: E402

N_LIST = 1501
N_DICT = 703
N_CACHE = 211
N_CLOSURE = 97
N_LRU = 131
N_BATCH = 257
K_CYCLES = 37
M_EXCESS = 23
N_WEAK = 307
N_DEQUE = 301
N_ODICT = 113
N_NAMES = 41
N_KINDS = 29


class Record:
    def __init__(self, i):
        self.name = "record-%06d" % i
        self.payload = b"payload-%06d" % i
        self.value = i + 0.5


class Slot:
    __slots__ = ("ident", "label")

    def __init__(self, i):
        self.ident = 100000 + i
        self.label = "slot-%d" % i


class Cache:
    store = {}


class Blob:
    def __init__(self, k):
        self.key_len = 10 ** 6 + len(k)


class Cyclic:
    def __init__(self, i):
        self.tag = "cyclic-%d" % i
        self.peer = None


class Orphan:
    def __init__(self, i):
        self.what = "orphan-%d" % i


class Item:
    def __init__(self, i):
        self.n = 20000 + i


HOLD_LIST = [Record(i) for i in range(N_LIST)]
HOLD_DICT = {"key-%05d" % i: (70000 + i, "value-%05d" % i) for i in range(N_DICT)}
# Weak references to records HOLD_LIST holds, plain ones and KeyedRefs (what a
# WeakValueDictionary keeps, with a strong `key` slot): a weakref's gc_traverse visits its
# callback only, so the records stay HOLD_LIST's, and HOLD_WEAK holds its weakrefs and keys.
HOLD_WEAK = ([weakref.ref(r) for r in HOLD_LIST[:N_WEAK]]
             + [weakref.KeyedRef(r, None, "weak-key-%d" % i)
                for i, r in enumerate(HOLD_LIST[N_WEAK:2 * N_WEAK])])
# Containers whose contents live outside the object: a deque's blocks (items spread over
# several, the first from a left index past 0), an OrderedDict's nodes (each holds a second
# reference to its key), a defaultdict's and a set subclass's tables (their base's layout).
HOLD_DEQUE = collections.deque(Item(30000 + i) for i in range(N_DEQUE))
for _i in range(N_DEQUE // 3):
    HOLD_DEQUE.popleft()
    HOLD_DEQUE.append(Item(40000 + _i))
HOLD_ODICT = collections.OrderedDict(("odict-%05d" % i, Item(50000 + i)) for i in range(N_ODICT))
HOLD_DDICT = collections.defaultdict(list)
for _i in range(N_ODICT):
    HOLD_DDICT["ddict-%d" % (_i % 17)].append(Item(60000 + _i))


class TagSet(set):
    pass


HOLD_SETSUB = TagSet("tag-%05d" % i for i in range(N_ODICT))
for _i in range(N_CACHE):
    Cache.store["cache-%d" % _i] = ["entry-%d" % _i]
# Strings interned at run time that only their holder uses: a mortal interned string's
# reference count leaves out the interpreter's interned dict (3.8-3.11, 3.13+), so they
# are their holder's (3.12 makes interned strings immortal: then nobody's, here too).
HOLD_INTERNED = [sys.intern("interned_%05d" % _i) for _i in range(N_NAMES)]
HOLD_GETTER = operator.attrgetter(*("field_%03d.part_%03d" % (_i, _i) for _i in range(N_NAMES)))


# C objects whose references are in their own struct fields, or in a suspended frame.
def _suspended(n):
    kept = [Item(80000 + i) for i in range(n)]
    yield len(kept)
    yield kept


HOLD_GEN = _suspended(N_KINDS)
next(HOLD_GEN)
HOLD_ITER = iter([Item(81000 + _i) for _i in range(N_KINDS)])
next(HOLD_ITER)
HOLD_PARTIAL = functools.partial(Item, [Item(82000 + _i) for _i in range(N_KINDS)],
                                 extra=[Item(83000 + _i) for _i in range(N_KINDS)])
HOLD_CHAIN = itertools.chain([Item(84000 + _i) for _i in range(N_KINDS)], [Item(84500)])
HOLD_PROXY = types.MappingProxyType({"proxy-%d" % _i: [Item(85000 + _i)] for _i in range(N_KINDS)})
HOLD_QUEUE = queue.Queue()
for _i in range(N_KINDS):
    HOLD_QUEUE.put(Item(86000 + _i))
del _i

# Holders whose references go through frames, cells and C structs of less common kinds:
# a suspended coroutine and async generator, nested closures and a self-recursive one, a
# chained exception whose tracebacks keep finished frames (and their locals), a
# WeakKeyDictionary's values, a bound method, a context's HAMT, a namespace, a
# methodcaller, builtin iterators, a dynamically made class and module, a function's
# defaults and __dict__, a frozenset, a struct sequence, a dict view, a cell, a memoryview
# and a generator expression.
class _Suspend:
    def __await__(self):
        yield


async def _coro(n):
    kept = [Item(87000 + i) for i in range(n)]
    await _Suspend()
    return kept


HOLD_CORO = _coro(N_KINDS)
HOLD_CORO.send(None)


async def _agen(n):
    kept = [Item(88000 + i) for i in range(n)]
    yield len(kept)
    yield kept


HOLD_AGEN = _agen(N_KINDS)
try:
    HOLD_AGEN.asend(None).send(None)
except StopIteration:
    pass


def _outer(n):
    a = [Item(89000 + i) for i in range(n)]

    def middle():
        b = [Item(89500 + i) for i in range(n)]

        def inner():
            return a, b
        return inner
    return middle()


HOLD_NESTED = _outer(N_KINDS)


def _recursive(n):
    data = [Item(89800 + i) for i in range(n)]

    def walk(k):
        return walk(k - 1) if k else data
    return walk


HOLD_RECURSIVE = _recursive(N_KINDS)


def _fail(n):
    local = [Item(90000 + i) for i in range(n)]
    raise ValueError("inner", len(local))


def _raise_chain(n):
    try:
        try:
            _fail(n)
        except ValueError as e:
            raise KeyError("outer") from e
    except KeyError as e:
        return e


HOLD_EXC = _raise_chain(N_KINDS)
HOLD_WKD = weakref.WeakKeyDictionary()
for _i in range(N_KINDS):
    HOLD_WKD[HOLD_LIST[2 * N_WEAK + _i]] = Item(91000 + _i)


class _Box:
    def __init__(self, items):
        self.items = items

    def get(self):
        return self.items


HOLD_BOUND = _Box([Item(91500 + _i) for _i in range(N_KINDS)]).get
_VAR = contextvars.ContextVar("probe")
HOLD_CTX = contextvars.copy_context()
HOLD_CTX.run(_VAR.set, [Item(92000 + _i) for _i in range(N_KINDS)])
HOLD_NS = types.SimpleNamespace(items=[Item(92500 + _i) for _i in range(N_KINDS)])
HOLD_CALLER = operator.methodcaller("index", [Item(93000 + _i) for _i in range(N_KINDS)],
                                    key=[Item(93500 + _i) for _i in range(N_KINDS)])
HOLD_MAP = map(repr, [Item(94000 + _i) for _i in range(N_KINDS)])
HOLD_ENUM = enumerate([Item(94500 + _i) for _i in range(N_KINDS)])
HOLD_ZIP = zip([Item(95000 + _i) for _i in range(N_KINDS)], (Item(95500),))
HOLD_CLASS = type("Dynamic", (object,), {"items": [Item(96000 + _i) for _i in range(N_KINDS)]})
HOLD_MODULE = types.ModuleType("probe_module")
HOLD_MODULE.items = [Item(96500 + _i) for _i in range(N_KINDS)]


def _make_func(n):
    def f(a=[Item(97000 + i) for i in range(n)], *, b=[Item(97500)]):
        return a, b
    f.extra = [Item(97600 + i) for i in range(n)]
    return f


HOLD_FUNC = _make_func(N_KINDS)
HOLD_FROZEN = frozenset(Item(98000 + _i) for _i in range(N_KINDS))
# Ten visible fields and three of the hidden ones (after ob_size's count).
HOLD_STRUCTSEQ = os.stat_result(tuple(Item(98500 + _i) for _i in range(10)),
                                {"st_atime": Item(98510), "st_mtime": Item(98511),
                                 "st_ctime_ns": Item(98512)})
HOLD_VIEW = {"view-%d" % _i: Item(99000 + _i) for _i in range(N_KINDS)}.values()
HOLD_CELL = types.CellType([Item(99500 + _i) for _i in range(N_KINDS)])
HOLD_MEMORYVIEW = memoryview(bytearray(b"m" * 3000))
HOLD_ARRAY = array.array("d", range(N_KINDS))
HOLD_GENEXPR = (x for x in [Item(99700 + _i) for _i in range(N_KINDS)])
del _i


def make_closure():
    items = [Slot(i) for i in range(N_CLOSURE)]

    def get():
        return items

    return get


CLOSURE = make_closure()


@functools.lru_cache(maxsize=None)
def lookup(k):
    return Blob(k)


for _i in range(N_LRU):
    lookup("lru-key-%d" % _i)
del _i

WORKER = {}


def serve(ready, done):
    batch = [Item(i) for i in range(N_BATCH)]
    WORKER["batch_id"] = id(batch)
    WORKER["tid"] = threading.get_native_id()
    ready.set()
    done.wait()
    return len(batch)


INSTANCE_DICTS = set()


def instance_dict_id(o):
    """id of o's materialised instance __dict__, read without materialising it
    (tp_dictoffset up to 3.10; the managed dict pointer 3 words before the object from
    3.11, odd when it holds values in 3.12)."""
    t = type(o)
    off = getattr(t, "__dictoffset__", 0)
    if isinstance(o, type) or not t.__flags__ & (1 << 9):
        return None
    if off > 0:
        return ctypes.c_void_p.from_address(id(o) + off).value
    if off == -1 and sys.version_info >= (3, 11):
        v = ctypes.c_void_p.from_address(id(o) - 24).value
        return None if v is None or v & 1 else v
    return None


def referents(o):
    r = gc.get_referents(o)
    if isinstance(o, dict) and id(o) not in INSTANCE_DICTS:
        # dict_traverse skips str keys (they are not GC objects), but a dict owns them.
        # An instance __dict__ shares its keys with the class (split table): its
        # attribute names belong to the type's cached keys, not to the dict.
        r = list(r) + list(o)
    else:
        d = instance_dict_id(o)
        if d:
            INSTANCE_DICTS.add(d)
    return r


def reach(starts, blocked):
    """ids reachable from starts, not entering blocked (an id)."""
    seen = set()
    stack = [o for o in starts if id(o) != blocked]
    while stack:
        o = stack.pop()
        i = id(o)
        if i in seen or i == blocked:
            continue
        seen.add(i)
        stack.extend(referents(o))
    del stack, o
    return seen


def roots():
    """sys.modules, the sys dict, builtins and every thread's frames except this
    computation's own and main()'s, whose locals hold the holders while it runs (and
    hold none of them at the core)."""
    out = [sys.modules, sys.__dict__, __builtins__.__dict__ if hasattr(__builtins__, "__dict__")
           else __builtins__]
    for f in sys._current_frames().values():
        while f is not None:
            if f.f_code.co_name not in ("main", "dominated", "roots"):
                # 3.11+ frame objects do not traverse a running frame: add what it holds
                # (not f_locals: reading it would keep a locals dict in the frame object).
                out.extend((f, f.f_code, f.f_globals, f.f_builtins))
            f = f.f_back
    return out


def dominated(holder):
    """Per-type counts of the objects reachable from holder and from no root without
    passing through it (the holder included). An object referenced from outside what
    gc.get_referents shows (C statics such as the one-character str cache, interned
    strings, 3.11+ interpreter frames) is a root too: its refcount is larger than the
    references found to it (gc.c's own rule for externally referenced objects)."""
    rs = roots()
    others = reach(rs, id(holder))
    members = []
    seen = set()
    stack = [holder]
    while stack:
        o = stack.pop()
        i = id(o)
        if i in seen or i in others:
            continue
        seen.add(i)
        members.append(o)
        stack.extend(referents(o))
    indeg = {}
    for o in members:
        for r in referents(o):
            if id(r) in seen:
                indeg[id(r)] = indeg.get(id(r), 0) + 1
    # References held here: the members list and getrefcount's argument (the loop
    # variables are cleared first: they would be one more).
    o = r = None
    external = set()
    for i in range(len(members)):
        if members[i] is not holder and \
                sys.getrefcount(members[i]) - 2 > indeg.get(id(members[i]), 0):
            external.add(id(members[i]))
    if external:
        # Whatever the external objects reach is not the holder's alone.
        stack = [o for o in members if id(o) in external]
        while stack:
            o = stack.pop()
            if id(o) not in seen:
                continue
            seen.discard(id(o))
            stack.extend(referents(o))
    counts = {}
    for o in members:
        if id(o) in seen:
            k = coretruth.type_key(type(o))
            counts[k] = counts.get(k, 0) + 1
    del stack, o, r, rs, others, seen, members, indeg, external
    return dict(sorted(counts.items()))


def chain_ok(chain):
    """Each object is a referrer of the next (gc.get_referrers, which sees only objects
    the collector tracks; an untracked container, e.g. a dict of atomic tuples, by its
    referents)."""
    for a, b in zip(chain, chain[1:]):
        if gc.is_tracked(a):
            if not any(r is a for r in gc.get_referrers(b)):
                return False
        elif not any(r is b for r in referents(a)):
            return False
    return True


def excess():
    ids = []
    for i in range(M_EXCESS):
        o = Orphan(i)
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(o))
        ids.append(id(o))
        del o
    return ids


CYCLE_IDS = []


def make_cycles():
    """K cycles of two Cyclic objects; runs after finish()'s last gc.collect()."""
    for i in range(K_CYCLES):
        a = Cyclic(2 * i)
        b = Cyclic(2 * i + 1)
        a.peer = b
        b.peer = a
        CYCLE_IDS.append(id(a))
        del a, b


def cycle_types():
    # Built before the core with the same shape as make_cycles(): two Cyclic objects,
    # their tag strs, and (3.8-3.10) their instance dicts.
    a = Cyclic(-1)
    b = Cyclic(-2)
    a.peer = b
    b.peer = a
    counts = {}
    seen = set()
    stack = [a]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, type):
            continue
        seen.add(id(o))
        k = coretruth.type_key(type(o))
        counts[k] = counts.get(k, 0) + 1
        stack.extend(referents(o))
    a.peer = b.peer = None
    del a, b, stack, o, seen
    return {k: v * K_CYCLES for k, v in sorted(counts.items())}


def main():
    args = sys.argv[1:]
    if not args or args[0] not in ("gcore", "kernel"):
        sys.stderr.write(__doc__)
        sys.exit(2)
    mode = args[0]
    kernel = mode == "kernel"
    ev, threads, tids = coretruth.start_blocked_threads(2)
    ready, done = threading.Event(), threading.Event()
    worker = threading.Thread(target=serve, args=(ready, done), name="serve", daemon=True)
    worker.start()
    ready.wait()
    tids.append(WORKER["tid"])
    excess_ids = excess()
    gc.collect()

    # The worker's local, found without touching its frame's f_locals (which would keep
    # a second reference in the frame object's locals dict).
    batch = [o for o in gc.get_objects() if id(o) == WORKER["batch_id"]][0]
    holders = [
        ("__main__.HOLD_LIST", "module global", HOLD_LIST),
        ("__main__.HOLD_DICT", "module global", HOLD_DICT),
        ("__main__.HOLD_WEAK", "module global", HOLD_WEAK),
        ("__main__.HOLD_DEQUE", "module global", HOLD_DEQUE),
        ("__main__.HOLD_ODICT", "module global", HOLD_ODICT),
        ("__main__.HOLD_DDICT", "module global", HOLD_DDICT),
        ("__main__.HOLD_SETSUB", "module global", HOLD_SETSUB),
        ("__main__.HOLD_INTERNED", "module global", HOLD_INTERNED),
        ("__main__.HOLD_GETTER", "module global", HOLD_GETTER),
        ("__main__.HOLD_GEN", "module global", HOLD_GEN),
        ("__main__.HOLD_ITER", "module global", HOLD_ITER),
        ("__main__.HOLD_PARTIAL", "module global", HOLD_PARTIAL),
        ("__main__.HOLD_CHAIN", "module global", HOLD_CHAIN),
        ("__main__.HOLD_PROXY", "module global", HOLD_PROXY),
        ("__main__.HOLD_QUEUE", "module global", HOLD_QUEUE),
        ("__main__.HOLD_CORO", "module global", HOLD_CORO),
        ("__main__.HOLD_AGEN", "module global", HOLD_AGEN),
        ("__main__.HOLD_NESTED", "module global", HOLD_NESTED),
        ("__main__.HOLD_RECURSIVE", "module global", HOLD_RECURSIVE),
        ("__main__.HOLD_EXC", "module global", HOLD_EXC),
        ("__main__.HOLD_WKD", "module global", HOLD_WKD),
        ("__main__.HOLD_BOUND", "module global", HOLD_BOUND),
        ("__main__.HOLD_CTX", "module global", HOLD_CTX),
        ("__main__.HOLD_NS", "module global", HOLD_NS),
        ("__main__.HOLD_CALLER", "module global", HOLD_CALLER),
        ("__main__.HOLD_MAP", "module global", HOLD_MAP),
        ("__main__.HOLD_ENUM", "module global", HOLD_ENUM),
        ("__main__.HOLD_ZIP", "module global", HOLD_ZIP),
        ("__main__.HOLD_CLASS", "module global", HOLD_CLASS),
        ("__main__.HOLD_MODULE", "module global", HOLD_MODULE),
        ("__main__.HOLD_FUNC", "module global", HOLD_FUNC),
        ("__main__.HOLD_FROZEN", "module global", HOLD_FROZEN),
        ("__main__.HOLD_STRUCTSEQ", "module global", HOLD_STRUCTSEQ),
        ("__main__.HOLD_VIEW", "module global", HOLD_VIEW),
        ("__main__.HOLD_CELL", "module global", HOLD_CELL),
        ("__main__.HOLD_MEMORYVIEW", "module global", HOLD_MEMORYVIEW),
        ("__main__.HOLD_ARRAY", "module global", HOLD_ARRAY),
        ("__main__.HOLD_GENEXPR", "module global", HOLD_GENEXPR),
        ("__main__.Cache.store", "class attribute", Cache.store),
        ("__main__.CLOSURE", "module global", CLOSURE),
        ("__main__.lookup", "module global", lookup),
        ("thread %d frame serve() local 'batch'" % WORKER["tid"], "thread frame", batch),
    ]
    # Counted first, while main() holds nothing but the holders themselves.
    owners = [{"owner": name, "kind": kind, "address": id(h), "types": dominated(h)}
              for name, kind, h in holders]
    del holders
    chains = [
        ("__main__.HOLD_LIST", [HOLD_LIST, HOLD_LIST[700]]),
        ("__main__.HOLD_DICT", [HOLD_DICT, HOLD_DICT["key-00350"]]),
        ("__main__.HOLD_WEAK", [HOLD_WEAK, HOLD_WEAK[N_WEAK + 5]]),
        ("__main__.HOLD_DEQUE", [HOLD_DEQUE, HOLD_DEQUE[150]]),
        ("__main__.HOLD_ODICT", [HOLD_ODICT, HOLD_ODICT["odict-00077"]]),
        ("__main__.Cache.store", [Cache.store, Cache.store["cache-100"]]),
        ("__main__.CLOSURE", [CLOSURE, CLOSURE.__closure__, CLOSURE.__closure__[0],
                              CLOSURE.__closure__[0].cell_contents]),
        ("__main__.lookup", [lookup]),
        (owners[-1]["owner"], [batch, batch[128]]),
    ]
    if sys.version_info[:2] != (3, 12):
        # (3.12's interned strings are immortal: what keeps one alive is the interned dict.)
        chains.append(("__main__.HOLD_INTERNED", [HOLD_INTERNED, HOLD_INTERNED[17]]))
    marked = [{"owner": name, "target": id(chain[-1]), "chain": [id(x) for x in chain],
               "chain_checked": chain_ok(chain)} for name, chain in chains]
    del chains, batch
    truth = {
        **coretruth.header("py_graph", mode, tids, kernel),
        "owners": owners,
        "marked": marked,
        "cycles": {"count": K_CYCLES, "types": cycle_types()},
        "refcount_excess": {"count": M_EXCESS, "types": {"__main__.Orphan": M_EXCESS},
                            "addresses": excess_ids},
        "expected": {"__main__.Record": N_LIST, "__main__.Orphan": M_EXCESS},
    }
    del owners, marked
    coretruth.finish(truth, kernel, "truth.json", "allocated_blocks.txt", "debugmallocstats.txt",
                     after_collect=make_cycles)
    done.set()
    ev.set()


if __name__ == "__main__":
    main()
