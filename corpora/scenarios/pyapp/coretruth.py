"""Ground-truth writing shared by the coreheap Python scenarios.

Stdlib only, Python 3.8+.  Deliberately imports nothing but os, sys, gc and
threading (no json: that would map the _json extension and pull in re/enum),
so the set of mapped ELF files and of live objects stays small.

The end of every scenario is `finish()`:
  1. the truth files are opened (os.open: no Python file objects),
  2. gc.collect(), then gc.disable() so no collection runs until the core,
  3. census: gc.get_objects() counted by "module.qualname" of the type
     ("dict", "list" for builtins), written with the rest of the truth,
     then every census object is dropped,
  4. the final step, in which every callable and constant is pre-bound:
     fd 2 -> debugmallocstats file, n = sys.getallocatedblocks(),
     os.write(fd, b"%d\n" % n), sys._debugmallocstats(), then
     os.kill(pid, SIGSTOP) (gcore mode) or os.abort() (kernel mode).
"""

import gc
import os
import sys
import threading

SIGSTOP = 19  # x86_64 Linux; `import signal` would pull in enum


def python_version():
    """Same string as platform.python_version() (without importing platform)."""
    return sys.version.split()[0]


def glibc_version():
    v = os.confstr("CS_GNU_LIBC_VERSION") or ""
    return v[len("glibc "):] if v.startswith("glibc ") else v


def header(scenario, mode, tids, kernel):
    """The fields every Python scenario's truth file starts with: what the tests match the
    core against (pid, thread ids, executable, the signal's thread for a kernel core) and
    the versions of the interpreter and glibc that made it."""
    return {
        "scenario": scenario,
        "mode": mode,
        "pid": os.getpid(),
        "tids": tids,
        "exe": os.readlink("/proc/self/exe"),
        "signal": None,
        "signal_tid": tids[0] if kernel else None,
        "glibc_version": glibc_version(),
        "python_version": python_version(),
    }


def start_blocked_threads(n=2):
    """Start n threads blocked on an Event; return (event, threads, tids).

    tids[0] is the main thread's native id, then the threads in start order."""
    ev = threading.Event()
    started = []
    tids = [threading.get_native_id()]
    threads = []

    def run():
        started.append(threading.get_native_id())
        ev.wait()

    for i in range(n):
        t = threading.Thread(target=run, name="blocked-%d" % i, daemon=True)
        t.start()
        while len(started) < i + 1:
            threading.Event().wait(0.001)
        threads.append(t)
    tids.extend(started)
    return ev, threads, tids


# ---------------------------------------------------------------- tiny JSON
def _jstr(s, out):
    out.append('"')
    for ch in s:
        c = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 0x20 <= c < 0x7F:
            out.append(ch)
        elif c > 0xFFFF:
            c -= 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF)))
        else:
            out.append("\\u%04x" % c)
    out.append('"')


def _jval(o, out, indent, level):
    if o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, int):
        out.append(str(int(o)))
    elif isinstance(o, float):
        out.append(repr(o))
    elif isinstance(o, str):
        _jstr(o, out)
    elif isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        pad = "\n" + " " * (indent * (level + 1)) if level < 2 else ""
        sep = "," + pad if pad else ", "
        out.append("{" + pad)
        first = True
        for k, v in o.items():
            if not first:
                out.append(sep)
            first = False
            _jstr(str(k), out)
            out.append(": ")
            _jval(v, out, indent, level + 1)
        out.append(("\n" + " " * (indent * level) if pad else "") + "}")
    elif isinstance(o, (list, tuple)):
        out.append("[")
        first = True
        for v in o:
            if not first:
                out.append(", ")
            first = False
            _jval(v, out, indent, level + 1)
        out.append("]")
    else:
        raise TypeError("cannot encode %r" % type(o))


def dumps(o, indent=1):
    out = []
    _jval(o, out, indent, 0)
    out.append("\n")
    return "".join(out)


def write_file(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    data = text.encode("utf-8")
    while data:
        n = os.write(fd, data)
        data = data[n:]
    os.close(fd)


# ---------------------------------------------------------------- type names
def type_key(t):
    """The census key of type t: "module.qualname" ("dict" for builtins), as
    repr(t) names it.  A heap type whose __module__ is not a str (Cython 3.1+'s
    _common_types_metatype has a getset descriptor there) is named by its tp_name,
    which is what type.__repr__ then prints."""
    mod = t.__dict__.get("__module__") if t.__flags__ & (1 << 9) else None
    if not t.__flags__ & (1 << 9):  # static type: tp_name is "module.name" or "name"
        mod = getattr(t, "__module__", None)
    qual = getattr(t, "__qualname__", None)
    if type(mod) is not str or type(qual) is not str:
        r = type.__repr__(t)
        if r.startswith("<class '") and r.endswith("'>"):
            return r[8:-2]
        return t.__name__
    return qual if mod == "builtins" else "%s.%s" % (mod, qual)


_type_key = type_key


# ---------------------------------------------------------------- tracemalloc
_TRACE_PREV = []  # the previous stage's filtered snapshot (py_leak under tracemalloc)


def _frames(tb):
    return [[f.filename, f.lineno] for f in tb]


def _stats(stats):
    return [[st.size, st.count, _frames(st.traceback)] for st in stats]


def write_traces(truth, path):
    """Under PYTHONTRACEMALLOC: snapshot.statistics() of every key (and cumulative) over
    the traces whose most recent frame is in truth["trace_files"], written to path; with
    a previous stage, also compare_to() against its snapshot. Called after gc.collect()
    and gc.disable(), before anything of the scenario's own files can run again."""
    import tracemalloc
    snap = tracemalloc.take_snapshot()
    files = truth.get("trace_files") or []
    snap = snap.filter_traces([tracemalloc.Filter(True, f) for f in files])
    cur, peak = tracemalloc.get_traced_memory()
    out = {"max_nframe": tracemalloc.get_traceback_limit(), "files": files,
           "traces": len(snap.traces), "traced_memory": cur, "peak_traced_memory": peak,
           "statistics": {}, "text": {}}
    for key, cum in (("lineno", False), ("filename", False), ("traceback", False),
                     ("lineno", True), ("filename", True)):
        name = key + ("_cumulative" if cum else "")
        stats = snap.statistics(key, cum)
        out["statistics"][name] = _stats(stats)
        out["text"][name] = [str(st) for st in stats[:30]]
    if _TRACE_PREV:
        prev = _TRACE_PREV[0]
        out["compare_to"] = {}
        out["compare_text"] = {}
        for key in ("lineno", "filename", "traceback"):
            diff = snap.compare_to(prev, key)
            out["compare_to"][key] = [[d.size, d.size_diff, d.count, d.count_diff,
                                       _frames(d.traceback)] for d in diff]
            out["compare_text"][key] = [str(d) for d in diff[:30]]
        del _TRACE_PREV[:]
    _TRACE_PREV.append(snap)
    write_file(path, dumps(out))
    del snap, out


# ---------------------------------------------------------------- the end
def finish(truth, kernel, truth_path, blocks_path, dms_path,
           _getpid=os.getpid, _dup2=os.dup2, _getab=sys.getallocatedblocks,
           _write=os.write, _dms=sys._debugmallocstats, _abort=os.abort,
           _kill=os.kill, _sigstop=SIGSTOP, cython_types=False, after_collect=None):
    """Census + truth file + final step.  In gcore mode this returns after
    the process is continued (SIGCONT); in kernel mode it never returns.
    after_collect, if given, runs after the last collection (gc stays disabled).

    The final step is inlined here, with every callable pre-bound as a
    default argument, so it creates no frame (3.8-3.10) and looks up no
    global between the census and the core."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd_truth = os.open(truth_path, flags, 0o644)
    fd_blocks = os.open(blocks_path, flags, 0o644)
    fd_dms = os.open(dms_path, flags, 0o644)
    fd_err = os.dup(2)
    pid = _getpid()
    tracing = bool(os.environ.get("PYTHONTRACEMALLOC"))
    if tracing:
        # A copy made here: growing the scenario's own dict after the snapshot would free
        # and reallocate a block traced at one of the scenario's lines.
        truth = dict(truth)
    truth["signal"] = 6 if kernel else None
    truth["census_kind"] = "gc.get_objects"
    # Free-threaded builds: mimalloc counts its own live blocks just before the core
    # (pyapp/mitruth.py), written to mimalloc<suffix>.txt next to the truth file.
    mic = fd_mi = None
    if hasattr(sys, "_is_gil_enabled") and not sys._is_gil_enabled():
        from pyapp import mitruth
        mic = mitruth.MiCounter()
        fd_mi = os.open("mimalloc" + truth_path[len("truth"):-len(".json")] + ".txt", flags, 0o644)
        truth["free_threaded"] = True
        truth["mimalloc_error"] = mic.error

    gc.collect()
    gc.disable()  # no automatic collection until the core is taken
    if tracing:
        write_traces(truth, "traces" + truth_path[len("truth"):])
    # gc.get_objects() does not list the permanent generation (gc.freeze(); CPython 3.12
    # starts with objects in it): move them back to the oldest generation so the census
    # lists every tracked object. Nothing is freed or allocated by this.
    truth["gc_freeze_count"] = gc.get_freeze_count()
    gc.unfreeze()
    if after_collect is not None:
        after_collect()  # garbage that must survive until the core (py_graph's cycles)

    objs = gc.get_objects()
    names = {}
    counts = {}
    for o in objs:
        t = type(o)
        key = names.get(t)
        if key is None:
            key = names[t] = _type_key(t)
        counts[key] = counts.get(key, 0) + 1
    o = t = key = None
    del objs, names
    truth["census"] = dict(sorted(counts.items()))
    truth["census_total"] = sum(counts.values())
    if cython_types:
        # Cython's shared types (cython_function_or_method, fused_cython_function, ...)
        # live in a per-Cython-version module "_cython_X_Y_Z".
        truth["cython_types"] = {k: v for k, v in truth["census"].items() if k.startswith("_cython_")}
    data = dumps(truth).encode("ascii")
    while data:
        written = os.write(fd_truth, data)
        data = data[written:]
    os.close(fd_truth)
    del truth["census"], counts, data, written
    truth.pop("cython_types", None)

    _mi_run = None
    if mic is not None:
        mic.prepare(fd_mi)
        _mi_run = mic.run  # bound here: calling it allocates nothing

    # ---- final step: nothing below allocates except n and s
    _dup2(fd_dms, 2)
    n = _getab()
    s = b"%d\n" % n
    _write(fd_blocks, s)
    _dms()
    if _mi_run is not None:
        _mi_run()  # last: mimalloc's live blocks as the core has them (pyapp/mitruth.py)
    if kernel:
        _abort()
    _kill(pid, _sigstop)

    # only reached in gcore mode, after SIGCONT
    os.dup2(fd_err, 2)
    os.close(fd_err)
    os.close(fd_blocks)
    os.close(fd_dms)
    if fd_mi is not None:
        os.close(fd_mi)
    gc.enable()
