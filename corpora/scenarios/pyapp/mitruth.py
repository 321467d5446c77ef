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

Exactness: everything is allocated in `MiCounter()` (before the census); `count_and_write()`
runs last, just before the core, through PyDLL calls (the thread state stays attached, so
no deferred free runs), counting into preallocated ctypes arrays. What it allocates
afterwards (ints, strs, bytes) is freed before the core, and none of those types has a
free list that would keep the block allocated (3.13 Include/internal/pycore_freelist.h).

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
SLOTS = (128 * 1024 >> 3) + 1  # block sizes up to MI_MEDIUM_OBJ_SIZE_MAX (3.13), by size / 8
BIG = 256  # distinct larger block sizes


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
    def __init__(self):
        self.error = None
        off = OFFSETS.get(sys.version_info[:2])
        exe = os.readlink("/proc/self/exe")
        syms = _symbols(exe, {"mi_heap_visit_blocks", "_mi_abandoned_pool_visit_blocks",
                              "_mi_heap_main"})
        base = _load_base(exe)
        if off is None or base is None or len(syms) < 2:
            self.error = "no offsets/symbols for %s (%s)" % (sys.version.split()[0], sorted(syms))
            return
        self.off = off
        api = ctypes.pythonapi
        for fn in ("PyInterpreterState_Get", "PyInterpreterState_ThreadHead", "PyThreadState_Next"):
            getattr(api, fn).restype = ctypes.c_void_p
            getattr(api, fn).argtypes = [] if fn == "PyInterpreterState_Get" else [ctypes.c_void_p]
        self.api = api
        self.VISIT = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
        self.cb = self.VISIT(self._visit)
        # PYFUNCTYPE: called with the thread state attached (no detach, no deferred frees)
        self.visit_heap = ctypes.PYFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool,
                                            self.VISIT, ctypes.c_void_p)(base + syms["mi_heap_visit_blocks"])
        self.visit_pool = ctypes.PYFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_uint8, ctypes.c_bool,
                                            self.VISIT, ctypes.c_void_p)(
            base + syms["_mi_abandoned_pool_visit_blocks"])
        self.main_heap = base + syms["_mi_heap_main"] if "_mi_heap_main" in syms else None
        libc = ctypes.PyDLL(None)
        self.write = libc.write
        self.write.restype = ctypes.c_ssize_t
        self.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
        self.memcpy = libc.memcpy
        self.memcpy.restype = ctypes.c_void_p
        self.memcpy.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        self.counts = (ctypes.c_uint64 * (NTAGS * SLOTS))()
        self.big = (ctypes.c_uint64 * (3 * BIG))()  # (tag, size, count) triples
        self.nbig = 0
        self.tag = 0
        self.buf = ctypes.create_string_buffer(1 << 20)
        self.heaps = []  # (heap address, tag), in the order visited
        self.done = 0
        # warm the callback path once (its argument tuple comes from the tuple free list)
        self._visit(None, None, None, 0, None)

    def _visit(self, heap, area, block, size, arg):
        if block:
            if size < (SLOTS << 3):
                self.counts[self.tag * SLOTS + (size >> 3)] += 1
            else:
                self._big(size)
        return True

    def _big(self, size):
        i = 0
        while i < self.nbig:
            if self.big[3 * i] == self.tag and self.big[3 * i + 1] == size:
                self.big[3 * i + 2] += 1
                return
            i += 1
        if self.nbig < BIG:
            self.big[3 * i] = self.tag
            self.big[3 * i + 1] = size
            self.big[3 * i + 2] = 1
            self.nbig += 1

    def prepare(self):
        """The heaps to visit: call after the census, before the final step."""
        if self.error:
            return
        interp = self.api.PyInterpreterState_Get()
        ts = self.api.PyInterpreterState_ThreadHead(interp)
        n = 0
        while ts and n < 10000:
            for tag in range(NTAGS):
                self.heaps.append((ts + self.off["tstate_mimalloc"] + 8 + tag * self.off["heap_size"], tag))
            ts = self.api.PyThreadState_Next(ts)
            n += 1
        if self.main_heap:
            self.heaps.append((self.main_heap, 0))
        self.pool = interp + self.off["interp_pool"]

    def count_and_write(self, fd):
        """Visit every heap and the abandoned pool, write the counts to fd."""
        if self.error:
            line = ("error " + self.error + "\n").encode()
            self.memcpy(self.buf, line, len(line))
            self.write(fd, self.buf, len(line))
            line = None
            return
        for h in self.heaps:
            self.tag = h[1]
            self.visit_heap(h[0], True, self.cb, None)
        h = None
        for tag in range(NTAGS):
            self.tag = tag
            self.visit_pool(self.pool, tag, True, self.cb, None)
        pos = 0
        for i in range(NTAGS * SLOTS):
            c = self.counts[i]
            if c:
                line = (str(i // SLOTS) + " " + str((i % SLOTS) << 3) + " " + str(c) + "\n").encode()
                self.memcpy(ctypes.addressof(self.buf) + pos, line, len(line))
                pos += len(line)
        for i in range(self.nbig):
            line = (str(self.big[3 * i]) + " " + str(self.big[3 * i + 1]) + " "
                    + str(self.big[3 * i + 2]) + "\n").encode()
            self.memcpy(ctypes.addressof(self.buf) + pos, line, len(line))
            pos += len(line)
        line = c = None
        self.write(fd, self.buf, pos)
        pos = None
