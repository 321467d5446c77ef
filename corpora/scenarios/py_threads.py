"""py_threads: thread-stack ground truth for `coreheap stacks`.

usage: python py_threads.py gcore|kernel

Starts five threads that come to rest in distinctive places:
  sleeper     blocked in time.sleep (a C call)
  lock-wait   blocked acquiring a held threading.Lock
  deep        30 levels deep in a recursive function, then waiting on an Event
  generator   inside a running generator's body, waiting on an Event
  coroutine   inside a coroutine driven by send(), awaiting a nested coroutine
and waits until sys._current_frames() is the same twice in a row. Then writes
truth.json in the current directory:
  pid, tids, exe, versions, signal_tid
  threads: {native id: {"name", "ident", "frames": [[file, line, function], ...]}}
           frames outermost first, as traceback.extract_stack lists them; the
           main thread's frames are taken on the very line of the final
           os.abort() / os.kill(SIGSTOP)
  locals:  {native id: {function: {name: [type, value]}}} of the marked frames
           (value: a str itself, a number's repr, a list's "len N")
plus allocated_blocks.txt and debugmallocstats.txt like the other scenarios,
and stops itself with SIGSTOP (gcore mode) or calls os.abort() (kernel mode).
"""

import gc
import os
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pyapp import coretruth  # noqa: E402

MARKED = ("sleeper", "recurse_bottom", "gen_body", "coro_inner", "lock_waiter")
READY = []
LOCK = threading.Lock()
EV = threading.Event()


def sleeper(label, seconds):
    count = 41
    ratio = 2.5
    READY.append(threading.get_native_id())
    time.sleep(seconds)
    return count, ratio, label


def lock_waiter(names):
    held = len(names)
    READY.append(threading.get_native_id())
    LOCK.acquire()
    return held


def recurse_bottom(depth, tag):
    items = [depth, tag, None]
    READY.append(threading.get_native_id())
    EV.wait()
    return items


def recurse(depth, tag):
    if depth == 0:
        return recurse_bottom(depth, tag)
    return recurse(depth - 1, tag) + 1


def gen_body(start):
    x = start + 7
    word = "gen-%d" % start
    READY.append(threading.get_native_id())
    EV.wait()
    yield x
    yield word


def gen_runner():
    total = 0
    for v in gen_body(5):
        total += 1
    return total


async def coro_inner(k):
    doubled = k * 2
    READY.append(threading.get_native_id())
    EV.wait()
    return doubled


async def coro_outer():
    return await coro_inner(3)


def coro_runner():
    c = coro_outer()
    try:
        c.send(None)
    except StopIteration:
        pass


def frames_of(f):
    return [[fs.filename, fs.lineno, fs.name] for fs in traceback.extract_stack(f)]


def shown(v):
    """What identifies the value: a str itself, a number's repr, a list's length."""
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return "len %d" % len(v)
    return repr(v)


def marked_locals(f):
    out = {}
    while f is not None:
        name = f.f_code.co_name
        if name in MARKED:
            out[name] = {k: [type(v).__name__, shown(v)] for k, v in dict(f.f_locals).items()
                         if isinstance(v, (int, float, str, list)) and not isinstance(v, bool)}
        f = f.f_back
    return out


def snapshot(names_by_ident):
    cur = sys._current_frames()
    me = threading.get_ident()
    threads = {}
    locs = {}
    for ident, f in cur.items():
        if ident == me:
            continue
        nid, name = names_by_ident[ident]
        threads[str(nid)] = {"name": name, "ident": ident, "frames": frames_of(f)}
        locs[str(nid)] = marked_locals(f)
    return threads, locs


def main_stack():
    """The caller's stack, outermost first, at the caller's current line."""
    return frames_of(sys._getframe(1))


def main():
    kernel = sys.argv[1] == "kernel"
    LOCK.acquire()
    specs = [
        ("sleeper", sleeper, ("zzz", 3600)),
        ("lock-wait", lock_waiter, (["a", "b", "c"],)),
        ("deep", recurse, (30, "deep")),
        ("generator", gen_runner, ()),
        ("coroutine", coro_runner, ()),
    ]
    threads = []
    for name, fn, args in specs:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        t.start()
        threads.append(t)
    while len(READY) < len(specs):
        time.sleep(0.01)
    names_by_ident = {t.ident: (t.native_id, t.name) for t in threads}
    # Every thread is about to block (or blocked): wait until two snapshots agree.
    prev = None
    for _ in range(100):
        time.sleep(0.2)
        snap = snapshot(names_by_ident)
        if snap == prev:
            break
        prev = snap
    else:
        raise SystemExit("threads did not come to rest")
    threads_truth, locals_truth = snap
    pid = os.getpid()
    main_nid = threading.get_native_id()
    truth = {
        "scenario": "py_threads",
        "pid": pid,
        "exe": sys.executable,
        "python_version": coretruth.python_version(),
        "glibc_version": coretruth.glibc_version(),
        "tids": sorted([main_nid] + [t.native_id for t in threads]),
        "signal": 6 if kernel else None,
        "signal_tid": main_nid if kernel else None,
        "main_tid": main_nid,
        "threads": threads_truth,
        "locals": locals_truth,
    }
    finish(truth, kernel, str(main_nid))


def finish(truth, kernel, main_key, _abort=os.abort, _kill=os.kill, _dup2=os.dup2,
           _write=os.write, _dms=sys._debugmallocstats, _getab=sys.getallocatedblocks,
           _sigstop=coretruth.SIGSTOP):
    """Truth files, then the final step, all on the line that stops the process: the main
    thread's frames are taken there, and (as in pyapp.coretruth.finish) nothing but the
    blocks count allocates between sys.getallocatedblocks() and the core."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd_truth = os.open("truth.json", flags, 0o644)
    fd_blocks = os.open("allocated_blocks.txt", flags, 0o644)
    fd_dms = os.open("debugmallocstats.txt", flags, 0o644)
    pid = truth["pid"]
    gc.collect()
    gc.disable()
    truth["threads"][main_key] = {"name": "MainThread", "ident": threading.get_ident(), "frames": main_stack()}; write_truth(fd_truth, truth); _dup2(fd_dms, 2); n = _getab(); s = b"%d\n" % n; _write(fd_blocks, s); _dms(); _abort() if kernel else _kill(pid, _sigstop)  # noqa: E702,E501


def write_truth(fd, truth):
    data = coretruth.dumps(truth).encode("ascii")
    while data:
        n = os.write(fd, data)
        data = data[n:]
    os.close(fd)


if __name__ == "__main__":
    main()
