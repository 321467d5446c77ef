"""py_ft_threads: threads allocating into their own mimalloc heaps (free-threaded CPython).

usage: python py_ft_threads.py gcore|kernel

On a free-threaded build every thread state has its own mimalloc heaps (MEM, OBJECT, GC,
GC_PRE; Include/internal/pycore_mimalloc.h), and a thread that ends leaves its segments
abandoned in the interpreter's pool while its objects live on. This scenario:
  * starts 3 worker threads; worker i creates 1500 * (i + 1) `FtItem` (a plain class: GC
    objects with the managed-dict pre-header), 400 `FtSlot` (`__slots__`: GC, no
    pre-header), strs, floats, lists and dicts, publishes them in WORKERS[i], and waits;
  * runs one more thread to its end after it made 900 `Orphaned` objects, which the main
    thread keeps (their blocks are in abandoned segments);
  * the main thread makes 1000 `FtItem` of its own.
Then pyapp.coretruth.finish writes truth.json (the gc census), allocated_blocks.txt and
mimalloc.txt (mimalloc's live blocks per heap tag and block size, pyapp/mitruth.py), and
stops itself (SIGSTOP, gcore mode) or aborts (kernel mode).
"""

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pyapp import coretruth  # noqa: E402


class FtItem(object):
    def __init__(self, owner, i):
        self.owner = owner
        self.i = i
        self.label = "item-%s-%d" % (owner, i)


class FtSlot(object):
    __slots__ = ("owner", "value")

    def __init__(self, owner, value):
        self.owner = owner
        self.value = value


class Orphaned(object):
    def __init__(self, i):
        self.i = i
        self.payload = [i, float(i) + 0.5, "orphan-%d" % i]


WORKERS = {}
ORPHANS = []
EV = threading.Event()
READY = []


def worker(k):
    name = "w%d" % k
    items = [FtItem(name, i) for i in range(1500 * (k + 1))]
    slots = [FtSlot(name, float(i)) for i in range(400)]
    extra = {"strs": ["%s-%06d" % (name, i) * 3 for i in range(300)],
             "dicts": [{"k": i, "n": name} for i in range(200)]}
    WORKERS[name] = (items, slots, extra)
    READY.append(threading.get_native_id())
    EV.wait()


def finisher():
    ORPHANS.extend(Orphaned(i) for i in range(900))


def main():
    args = sys.argv[1:]
    if not args or args[0] not in ("gcore", "kernel"):
        sys.stderr.write(__doc__)
        sys.exit(2)
    kernel = args[0] == "kernel"
    t = threading.Thread(target=finisher, name="finisher")
    t.start()
    t.join()
    tids = [threading.get_native_id()]
    threads = []
    for k in range(3):
        w = threading.Thread(target=worker, args=(k,), name="worker-%d" % k, daemon=True)
        w.start()
        while len(READY) < k + 1:
            threading.Event().wait(0.001)
        threads.append(w)
    tids.extend(READY)
    mine = [FtItem("main", i) for i in range(1000)]
    truth = {
        **coretruth.header("py_ft_threads", args[0], tids, kernel),
        "expected": {"__main__.FtItem": 1000 + sum(1500 * (k + 1) for k in range(3)),
                     "__main__.FtSlot": 1200, "__main__.Orphaned": 900},
    }
    coretruth.finish(truth, kernel, "truth.json", "allocated_blocks.txt", "debugmallocstats.txt")
    EV.set()
    return mine


if __name__ == "__main__":
    main()
