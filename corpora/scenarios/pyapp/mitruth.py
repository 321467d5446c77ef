"""mimalloc's own count of live blocks, written by a free-threaded CPython about itself.

A free-threaded build (PEP 703, `--disable-gil`) has no pymalloc: every object and
PyMem_Malloc block is a mimalloc block in the calling thread's heaps
(Include/internal/pycore_mimalloc.h: heaps[4] = MEM, OBJECT, GC, GC_PRE per thread state;
the heap tag is its index), and a dead thread's blocks stay in the interpreter's abandoned
pool. `sys._debugmallocstats()` prints no per-size-class counts there, so this module asks
mimalloc itself: `mi_heap_visit_blocks(heap, true, visitor, arg)` for every heap of every
thread state and `_mi_abandoned_pool_visit_blocks(pool, tag, true, visitor, arg)` for each
tag (CPython 3.13 Objects/mimalloc/heap.c, segment.c; the visitor is called once per
allocated block with its usable size, which is the block size in release builds). Both are
hidden symbols: their addresses come from the executable's symbol table and load base.

Exactness: a count made by Python code would count its own temporaries (the visitor's
argument ints, the tuples ctypes builds). So the visitor, the count and the writing are C
(corpora/scenarios/mitruth.c, built by make_corpus.py as /opt/coreheap/bin/libmitruth.so),
loaded with ctypes.PyDLL (the thread state stays attached: no deferred free runs) and
called with no arguments as the last step before the core: `MiCounter().run`, prepared
before the census, allocates nothing while it runs.

Output, one line per (tag, block size): "TAG SIZE COUNT".
Offsets: CPython 3.13.5 free-threaded (round2-facts.md C.3): _PyThreadStateImpl.mimalloc at
0x158 (heaps[] 8 bytes further), sizeof(mi_heap_t) 0xbf8, PyInterpreterState.mimalloc
(the abandoned pool) at 0x2a40.
"""

import ctypes
import os
import struct
import sys

OFFSETS = {(3, 13): {"tstate_mimalloc": 0x158, "heap_size": 0xBF8, "interp_pool": 0x2A40}}
NTAGS = 4
MAXHEAPS = 4096  # as mitruth.c
LIB = os.environ.get("COREHEAP_MITRUTH_LIB", "/opt/coreheap/bin/libmitruth.so")


class Params(ctypes.Structure):
    _fields_ = [("visit_heap", ctypes.c_void_p), ("visit_pool", ctypes.c_void_p),
                ("pool", ctypes.c_void_p), ("fd", ctypes.c_int64), ("nheaps", ctypes.c_uint64),
                ("heaps", ctypes.c_uint64 * MAXHEAPS), ("tags", ctypes.c_uint64 * MAXHEAPS)]


def free_threaded():
    return hasattr(sys, "_is_gil_enabled") and not sys._is_gil_enabled()


def _symbols(path, names):
    """Values of the named symbols in an ELF64 file's .symtab (stdlib only)."""
    with open(path, "rb") as f:
        data = f.read()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    out = {}
    for s in secs:
        if s[1] != 2:  # SHT_SYMTAB
            continue
        strtab = secs[s[6]]
        for off in range(s[4], s[4] + s[5], 24):
            st_name, _info, _other, _shndx, st_value, _size = struct.unpack_from("<IBBHQQ", data, off)
            if not st_value:
                continue
            end = data.index(b"\0", strtab[4] + st_name)
            n = data[strtab[4] + st_name:end].decode("ascii", "replace")
            if n in names:
                out[n] = st_value
    return out


def _load_base(exe):
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == exe and int(parts[2], 16) == 0:
                return int(parts[0].split("-")[0], 16)
    return None


class MiCounter(object):
    """Set up before the census; `prepare(fd)` after it; then `run()` last, if not None."""

    def __init__(self):
        self.error = None
        # the C counter once prepared; no bound method is kept here, which would be freed
        # between the census and the core
        self.run = None
        off = OFFSETS.get(sys.version_info[:2])
        exe = os.readlink("/proc/self/exe")
        syms = _symbols(exe, {"mi_heap_visit_blocks", "_mi_abandoned_pool_visit_blocks",
                              "_mi_heap_main"})
        base = _load_base(exe)
        if off is None or base is None or len(syms) < 2:
            self.error = "no offsets/symbols for %s (%s)" % (sys.version.split()[0], sorted(syms))
            return
        if not os.path.exists(LIB):
            self.error = "%s is missing (make_corpus.py builds it from mitruth.c)" % LIB
            return
        self.off = off
        self.base = base
        self.syms = syms
        api = ctypes.pythonapi
        for fn in ("PyInterpreterState_Get", "PyInterpreterState_ThreadHead", "PyThreadState_Next"):
            getattr(api, fn).restype = ctypes.c_void_p
            getattr(api, fn).argtypes = [] if fn == "PyInterpreterState_Get" else [ctypes.c_void_p]
        self.api = api
        self.lib = ctypes.PyDLL(LIB)
        self.params = Params.in_dll(self.lib, "mt_params")
        fn = self.lib.mt_run
        fn.restype = None
        fn.argtypes = []
        self.fn = fn

    def prepare(self, fd):
        """Fill mt_params (every thread state's 4 heaps, mimalloc's main heap, the
        abandoned pool, the fd): after the census, before the final step."""
        if self.error:
            os.write(fd, ("error " + self.error + "\n").encode())
            return
        p = self.params
        p.visit_heap = self.base + self.syms["mi_heap_visit_blocks"]
        p.visit_pool = self.base + self.syms["_mi_abandoned_pool_visit_blocks"]
        interp = self.api.PyInterpreterState_Get()
        p.pool = interp + self.off["interp_pool"]
        p.fd = fd
        n = 0
        ts = self.api.PyInterpreterState_ThreadHead(interp)
        while ts and n + NTAGS < MAXHEAPS:
            for tag in range(NTAGS):
                p.heaps[n] = ts + self.off["tstate_mimalloc"] + 8 + tag * self.off["heap_size"]
                p.tags[n] = tag
                n += 1
            ts = self.api.PyThreadState_Next(ts)
        if "_mi_heap_main" in self.syms:
            p.heaps[n] = self.base + self.syms["_mi_heap_main"]
            p.tags[n] = 0
            n += 1
        p.nheaps = n
        self.run = self.fn
