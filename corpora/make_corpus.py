#!/usr/bin/env python3
"""make_corpus.py -- regenerate coreheap's core-dump test corpus.

  make_corpus.py generate [--out DIR] [--envs host,pyenv,bullseye,trixie,sid]
                          [--kinds gcore,kernel] [--filters 0x33,0x37]
                          [--scenarios c_heap,py_heap,py_leak,py_frag,py_libs]
  make_corpus.py reference [--force] [--py-scale F] [--scenarios py_heap,c_heap,py_leak]
  make_corpus.py roots [--envs bullseye,trixie,sid,ft-3.13]

Must run as root (chroot, /proc/sys/kernel/core_pattern, /opt/coreheap).
Stdlib only.  See corpora/README.md.

Environments:
  host        the host system: /usr/bin/python3 and the host gcc
  pyenv       every pyenv CPython >= 3.8 ($PYENV_ROOT or ~/.pyenv), as
              pyenv-3.8 ... pyenv-3.13 (also accepted one by one); Python
              scenarios only (the C scenario would be the host's again)
  <suite>     any Debian suite (bullseye, bookworm, trixie, sid, ...): a
              debootstrap'ed root in $COREHEAP_CACHE/roots/<suite>, created on
              demand; processes run there with chroot, gcore runs inside it.
  ft-3.13     a free-threaded CPython 3.13 (--disable-gil) built once from trixie's
              python3.13 source package inside the trixie root (ensure_ft); runs
              py_heap, py_leak and py_ft_threads (FT_SCENARIOS) with mimalloc truth
In every environment the scenarios are installed as /opt/coreheap/scenarios
and the C program is built as /opt/coreheap/bin/c_heap (inside the root for
chroot environments, on the host itself for host/pyenv).
"""

import argparse
import configparser
import filecmp
import glob
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCEN_SRC = os.path.join(HERE, "scenarios")
CACHE = os.path.abspath(os.path.expanduser(os.environ.get("COREHEAP_CACHE", "~/.cache/coreheap")))
ROOTS = os.path.join(CACHE, "roots")
VENVS = os.path.join(CACHE, "venvs")  # py_libs virtual environments of host/pyenv
PYENV_ROOT = os.path.abspath(os.path.expanduser(os.environ.get("PYENV_ROOT", "~/.pyenv")))
IN_ROOT_PREFIX = "/opt/coreheap"  # same path inside every root, and on the host
REFERENCE_DIR = os.path.join(HERE, "reference")
REFERENCE_LIMIT = 60 * 1000 * 1000
# The committed reference set: (scenario, kind, environments). py_leak (two cores, ~2 MB
# compressed) is made in the host environment only: one pair is enough for `diff`.
REFERENCE_CASES = [("py_heap", "gcore", "host,bullseye,trixie,sid"),
                   ("c_heap", "kernel", "host,bullseye,trixie,sid"),
                   ("py_leak", "gcore", "host")]

ALL_SCENARIOS = ["c_heap", "py_heap", "py_leak", "py_frag", "py_libs",
                 "py_threads", "c_crash", "py_trace", "py_trace1", "py_trace_leak", "py_graph",
                 "cpp_heap", "cpp_heap_g", "cpp_heap_s", "py_ft_threads"]
# The C++ scenario (corpora/scenarios/cpp_heap.cpp), built three ways: (g++ flags, strip).
# cpp_heap has its .symtab but no DWARF, cpp_heap_g has DWARF, cpp_heap_s is stripped (its
# classes are named from RTTI alone).
CPP_SCENARIOS = {
    "cpp_heap": (["-O1", "-g0"], False),
    "cpp_heap_g": (["-O1", "-g"], False),
    "cpp_heap_s": (["-O1", "-g0"], True),
}
NATIVE_SCENARIOS = ("c_heap", "c_crash") + tuple(CPP_SCENARIOS)
# The free-threaded environments (ft-*) run these: the census, the leak pair, and
# threads allocating into their own mimalloc heaps (py_ft_threads, those environments only).
FT_SCENARIOS = ["py_heap", "py_leak", "py_ft_threads"]
# Scenarios run under tracemalloc: the script they run and their extra environment. They
# run once per environment (gcore, the first filter): tracemalloc does not depend on how
# the core is taken, and the leak pair's compare_to needs both cores of one process.
TRACE_SCENARIOS = {
    "py_trace": ("py_trace", {"PYTHONTRACEMALLOC": "10"}),
    "py_trace1": ("py_trace", {"PYTHONTRACEMALLOC": "1"}),
    "py_trace_leak": ("py_leak", {"PYTHONTRACEMALLOC": "10"}),
}
# Scenarios that end in a crash of their own (kernel cores only) and the signal.
CRASH_SCENARIOS = {"c_crash": signal.SIGSEGV}
# py_libs: what make_corpus.py installs from PyPI into a virtual environment per
# interpreter (pip picks the newest versions compatible with each Python; wheels only,
# so a library without a wheel for an interpreter fails fast and is left out there).
LIB_PACKAGES = ["numpy", "pandas", "SQLAlchemy", "lxml", "requests"]
IN_ROOT_VENV = IN_ROOT_PREFIX + "/venv"  # py_libs venv inside a Debian root
DEFAULT_ENVS = "host,pyenv,bullseye,trixie,sid"
# debootstrap cannot resolve gdb's dependencies on some suites (virtual
# packages, e.g. bookworm's libboost-regex1.74.0-icu72): gdb comes with apt-get.
ROOT_PACKAGES = ["python3", "gcc", "libc6-dev", "libc6-dbg"]
APT_OPTS = ["-o", "Acquire::Check-Valid-Until=false", "-o", "Dpkg::Use-Pty=0"]

T_DEBOOTSTRAP = 3600
T_APT = 1800
T_BUILD = 300
T_TO_STOP = 300  # scenario start -> stopped / aborted
T_GCORE = 600
T_ZSTD = 1800
T_PROBE = 60
T_PIP = 900

NT_PRSTATUS = 1
NT_SIGINFO = 0x53494749
NT_FILE = 0x46494C45

CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBUGINFOD_URLS": "",
}
PY_ENV = {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}


class Failure(Exception):
    pass


def apt_mirror():
    """The Debian mirror debootstrap uses: $COREHEAP_MIRROR, else the machine's own apt
    configuration (the first `URIs:` of /etc/apt/sources.list.d/*.sources, else the
    first `deb` line of /etc/apt/sources.list), so no host is named here."""
    env = os.environ.get("COREHEAP_MIRROR")
    if env:
        return env
    schemes = ("http://", "https://", "ftp://", "file:")
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            with open(path) as f:
                for line in f:
                    if line.strip().lower().startswith("uris:"):
                        for uri in line.split(":", 1)[1].split():
                            if uri.startswith(schemes):
                                return uri
        except OSError:
            continue
    try:
        with open("/etc/apt/sources.list") as f:
            for line in f:
                parts = line.split()
                if not parts or parts[0] != "deb":
                    continue
                parts = parts[1:]
                if parts and parts[0].startswith("["):  # deb [arch=... signed-by=...] URI
                    while parts and not parts[0].endswith("]"):
                        parts.pop(0)
                    parts = parts[1:]
                if parts and parts[0].startswith(schemes):
                    return parts[0]
    except OSError:
        pass
    raise Failure("no Debian mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list: "
                  "set COREHEAP_MIRROR")


# Lines logged by an environment's preparation on the background thread (Ahead): held
# and printed when the main thread reaches that environment, so the log reads in order.
_HELD = threading.local()


def log(msg):
    held = getattr(_HELD, "lines", None)
    if held is not None:
        held.append(msg)
        return
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def run(cmd, timeout, what, env=None, log_path=None, cwd=None):
    """Run a command with a timeout; raise Failure with a clear message."""
    t0 = time.time()
    out = open(log_path, "ab") if log_path else subprocess.PIPE
    try:
        p = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                           env=env or CLEAN_ENV, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise Failure("%s: timed out after %ds: %s" % (what, timeout, " ".join(cmd)))
    finally:
        if log_path:
            out.close()
    if p.returncode != 0:
        tail = ""
        if log_path:
            with open(log_path, "rb") as f:
                tail = f.read()[-3000:].decode("utf-8", "replace")
        elif p.stdout:
            tail = p.stdout[-3000:].decode("utf-8", "replace")
        raise Failure("%s: exit %d: %s\n%s" % (what, p.returncode, " ".join(cmd), tail))
    return (p.stdout or b"").decode("utf-8", "replace"), time.time() - t0


# ------------------------------------------------------------------ ELF core
def core_notes(path):
    """[(type, name, desc)] of every PT_NOTE segment of an ELF64 LE core."""
    with open(path, "rb") as f:
        eh = f.read(64)
        if len(eh) < 64 or eh[:4] != b"\x7fELF":
            raise Failure("%s: not an ELF file" % path)
        if eh[4] != 2 or eh[5] != 1:
            raise Failure("%s: not ELF64 little-endian" % path)
        e_type = struct.unpack_from("<H", eh, 16)[0]
        if e_type != 4:
            raise Failure("%s: e_type %d is not ET_CORE" % (path, e_type))
        e_phoff, e_shoff = struct.unpack_from("<QQ", eh, 32)
        e_phentsize, e_phnum = struct.unpack_from("<HH", eh, 54)
        if e_phnum == 0xFFFF:  # extended numbering: real count in section 0's sh_info
            f.seek(e_shoff)
            sh = f.read(64)
            e_phnum = struct.unpack_from("<I", sh, 44)[0]
        notes = []
        for i in range(e_phnum):
            f.seek(e_phoff + i * e_phentsize)
            p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack("<IIQQQQ", f.read(40))
            if p_type != 4:
                continue
            f.seek(p_offset)
            data = f.read(p_filesz)
            off = 0
            while off + 12 <= len(data):
                namesz, descsz, ntype = struct.unpack_from("<III", data, off)
                name = data[off + 12:off + 12 + namesz].rstrip(b"\0")
                doff = off + 12 + ((namesz + 3) & ~3)
                notes.append((ntype, name, data[doff:doff + descsz]))
                off = doff + ((descsz + 3) & ~3)
        return notes


def nt_file_paths(notes):
    """Mapped file names of the NT_FILE note, in order, deduplicated."""
    for ntype, name, desc in notes:
        if ntype == NT_FILE and name == b"CORE":
            count = struct.unpack_from("<Q", desc, 0)[0]
            names = desc[16 + 24 * count:].split(b"\0")[:count]
            seen, out = set(), []
            for n in names:
                s = n.decode("utf-8", "surrogateescape")
                if s not in seen:
                    seen.add(s)
                    out.append(s)
            return out
    return None


def core_summary(path):
    notes = core_notes(path)
    threads = []
    siginfo = None
    for ntype, name, desc in notes:
        if ntype == NT_PRSTATUS and name == b"CORE" and len(desc) >= 36:
            cursig = struct.unpack_from("<h", desc, 12)[0]
            pid = struct.unpack_from("<i", desc, 32)[0]
            threads.append({"tid": pid, "cursig": cursig})
        elif ntype == NT_SIGINFO and name == b"CORE" and siginfo is None and len(desc) >= 4:
            siginfo = struct.unpack_from("<i", desc, 0)[0]
    files = nt_file_paths(notes)
    if files is None:
        raise Failure("%s: no NT_FILE note" % path)
    if not threads:
        raise Failure("%s: no NT_PRSTATUS note" % path)
    return {"threads": threads, "siginfo_signo": siginfo, "mapped_files": files,
            "bytes": os.path.getsize(path),
            "allocated_bytes": os.stat(path).st_blocks * 512}


# ------------------------------------------------------------------ environments
class Env(object):
    def __init__(self, name, kind, root, python, suite):
        self.name = name
        self.kind = kind  # host | pyenv | chroot
        self.root = root  # "/" or the chroot directory
        self.python = python  # path inside the root
        self.suite = suite
        self.info = {}

    @property
    def chroot(self):
        return self.kind == "chroot"

    def host_path(self, in_root_path):
        if self.root == "/":
            return in_root_path
        return os.path.join(self.root, in_root_path.lstrip("/"))

    def wrap(self, cmd):
        """A command that runs inside the environment (for helper tools)."""
        return (["chroot", self.root] + cmd) if self.chroot else cmd


def host_codename():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("VERSION_CODENAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown"


def pyenv_versions():
    out = {}
    vdir = os.path.join(PYENV_ROOT, "versions")
    if not os.path.isdir(vdir):
        return out
    for v in os.listdir(vdir):
        parts = v.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            continue
        major, minor = int(parts[0]), int(parts[1])
        if (major, minor) < (3, 8):
            continue
        exe = os.path.join(vdir, v, "bin", "python%d.%d" % (major, minor))
        if not os.path.exists(exe):
            continue
        key = "%d.%d" % (major, minor)
        if key not in out or tuple(map(int, parts)) > tuple(map(int, out[key][0].split("."))):
            out[key] = (v, exe)
    return out


def resolve_envs(spec):
    envs = []
    pyv = None
    for name in [s.strip() for s in spec.split(",") if s.strip()]:
        if name == "host":
            envs.append(Env("host", "host", "/", "/usr/bin/python3", host_codename()))
        elif name == "pyenv" or name.startswith("pyenv-"):
            if pyv is None:
                pyv = pyenv_versions()
            if name == "pyenv":
                if not pyv:
                    raise Failure("--envs pyenv: no pyenv CPython >= 3.8 under %s" % PYENV_ROOT)
                keys = sorted(pyv, key=lambda k: tuple(map(int, k.split("."))))
            else:
                keys = [name[len("pyenv-"):]]
                if keys[0] not in pyv:
                    raise Failure("--envs %s: no such pyenv version under %s (have: %s)"
                                  % (name, PYENV_ROOT, ", ".join(sorted(pyv)) or "none"))
            for k in keys:
                envs.append(Env("pyenv-" + k, "pyenv", "/", pyv[k][1], host_codename()))
        elif name in FT_ENVS:
            suite = FT_ENVS[name][0]
            envs.append(Env(name, "chroot", os.path.join(ROOTS, suite), ft_python(name), suite))
        elif name.replace("-", "").isalnum():
            envs.append(Env(name, "chroot", os.path.join(ROOTS, name), "/usr/bin/python3", name))
        else:
            raise Failure("bad environment name %r" % name)
    seen = set()
    out = []
    for e in envs:
        if e.name not in seen:
            seen.add(e.name)
            out.append(e)
    return out


MOUNTED = []


def proc_mounted(root):
    target = os.path.join(root, "proc")
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[1] == target:
                return True
    return False


def ensure_proc(root):
    if not proc_mounted(root):
        os.makedirs(os.path.join(root, "proc"), exist_ok=True)
        run(["mount", "-t", "proc", "proc", os.path.join(root, "proc")], 60, "mount /proc in " + root)
        MOUNTED.append(os.path.join(root, "proc"))


def unmount_ours():
    while MOUNTED:
        m = MOUNTED.pop()
        subprocess.run(["umount", m], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def debootstrap_running(path):
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if any(b"debootstrap" in c for c in cmd[:2]) and path.encode() in cmd:
            return True
    return False


def ensure_root(env, need_cpp=False):
    """Create the Debian root on demand and make sure it has what we need."""
    root = env.root
    suite = env.suite
    os.makedirs(ROOTS, exist_ok=True)
    if not os.path.exists(os.path.join(root, "usr/bin/python3")):
        tmp = root + ".tmp"
        logp = os.path.join(ROOTS, suite + ".log")
        if os.path.exists(root):
            raise Failure("%s exists but has no usr/bin/python3: remove it to recreate it" % root)
        if debootstrap_running(tmp):
            raise Failure("a debootstrap into %s is running: wait for it" % tmp)
        if shutil.which("debootstrap") is None:
            log("  installing debootstrap on the host")
            run(["apt-get", "update"], T_APT, "apt-get update")
            run(["apt-get", "install", "-y", "debootstrap"], T_APT, "apt-get install debootstrap")
        if os.path.exists(tmp):
            if proc_mounted(tmp):
                run(["umount", os.path.join(tmp, "proc")], 60, "umount stale proc")
            shutil.rmtree(tmp)
        log("  creating %s root with debootstrap (log: %s)" % (suite, logp))
        with open(logp, "w") as f:
            f.write("debootstrap %s\n" % suite)
        _, dt = run(["debootstrap", "--variant=minbase", "--include=" + ",".join(ROOT_PACKAGES),
                     suite, tmp, apt_mirror()], T_DEBOOTSTRAP, "debootstrap " + suite, log_path=logp)
        os.rename(tmp, root)
        with open(logp, "a") as f:
            f.write("done 0\n")
        log("  created %s in %.0fs" % (root, dt))
    ensure_proc(root)
    want = [("gdb", "usr/bin/gdb"), ("gcc", "usr/bin/gcc"), ("libc6-dev", "usr/include/stdio.h")]
    if need_cpp:
        want.append(("g++", "usr/bin/g++"))
    missing = [p for p, f in want if not os.path.exists(os.path.join(root, f))]
    if missing:
        log("  installing %s into %s" % (" ".join(missing), root))
        shutil.copyfile("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
        logp = os.path.join(ROOTS, suite + ".apt.log")
        run(["chroot", root, "apt-get"] + APT_OPTS + ["update"], T_APT, "apt-get update in " + suite,
            log_path=logp)
        run(["chroot", root, "apt-get"] + APT_OPTS + ["install", "-y", "--no-install-recommends"]
            + missing, T_APT, "apt-get install in " + suite, log_path=logp)


# ------------------------------------------------------------------ free-threaded CPython
# No free-threaded interpreter is packaged by Debian or PyPI (round2-facts C.5), so the
# `ft-3.13` environment builds one, once, from trixie's python3.13 source package inside the
# trixie root (its compiler and headers; the binary links against trixie's glibc and runs
# there): the pristine orig tarball, `./configure --disable-gil` (PEP 703; WITH_MIMALLOC is on by
# default), no PGO/LTO, -O1 to keep the build short on CI.
FT_ENVS = {"ft-3.13": ("trixie", "python3.13", "3.13t")}
FT_PREFIX = IN_ROOT_PREFIX + "-ft"  # /opt/coreheap-ft inside the root, i.e. under the cache
FT_BUILD_DEPS = ["make", "dpkg-dev", "xz-utils", "pkg-config", "libffi-dev", "zlib1g-dev"]
T_FT_BUILD = 5400


def ft_python(name):
    _suite, _src, tag = FT_ENVS[name]
    return "%s/%s/bin/python%s" % (FT_PREFIX, tag, tag)


def ensure_ft(env, logdir):
    """Build the free-threaded interpreter of a ft-* environment if its root lacks it."""
    suite, srcpkg, tag = FT_ENVS[env.name]
    root = env.root
    exe = env.host_path(env.python)
    stamp = env.host_path("%s/%s/.coreheap-built" % (FT_PREFIX, tag))
    if os.path.exists(exe) and os.path.exists(stamp):
        return
    logp = os.path.join(ROOTS, "%s-%s.build.log" % (suite, tag))
    log("  building free-threaded %s in %s (log: %s)" % (tag, root, logp))
    t0 = time.time()
    shutil.copyfile("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
    # deb-src for the suite, from the machine's own apt configuration (no host named here)
    with open(os.path.join(root, "etc/apt/sources.list.d/coreheap-src.list"), "w") as f:
        f.write("deb-src %s %s main\n" % (apt_mirror(), suite))
    apt = ["chroot", root, "apt-get"] + APT_OPTS
    run(apt + ["update"], T_APT, "apt-get update in " + suite, log_path=logp)
    run(apt + ["install", "-y", "--no-install-recommends"] + FT_BUILD_DEPS, T_APT,
        "apt-get install build deps in " + suite, log_path=logp)
    src = "%s/src-%s" % (FT_PREFIX, tag)
    hsrc = env.host_path(src)
    if os.path.exists(hsrc):
        shutil.rmtree(hsrc)
    os.makedirs(hsrc)
    # --download-only: the pristine orig tarball (the CPython release), without Debian's
    # patches, which assume Debian's own configure flags and multiarch layout.
    run(["chroot", root, "sh", "-c", "cd %s && apt-get %s source --download-only %s"
         % (src, " ".join(APT_OPTS), srcpkg)], T_APT, "apt-get source " + srcpkg, log_path=logp)
    origs = sorted(p for p in glob.glob(os.path.join(hsrc, "%s_*.orig.tar.*" % srcpkg))
                   if not p.endswith(".asc"))
    if not origs:
        raise Failure("apt-get source %s: no orig tarball in %s" % (srcpkg, hsrc))
    run(["tar", "-xf", origs[-1], "-C", hsrc, "--strip-components=1", "--one-top-level=cpython"],
        600, "unpack " + os.path.basename(origs[-1]), log_path=logp)
    prefix = "%s/%s" % (FT_PREFIX, tag)
    build = ("cd %s/cpython && nice -n 10 env OPT='-DNDEBUG -O1' ./configure --disable-gil "
             "--prefix=%s --without-ensurepip --disable-test-modules && "
             "nice -n 10 make -j2 && nice -n 10 make install" % (src, prefix))
    t1 = time.time()
    run(["chroot", root, "sh", "-c", build], T_FT_BUILD, "build free-threaded " + tag, log_path=logp)
    out, _ = run(["chroot", root, env.python, "-c",
                  "import sys, sysconfig; print(sys.version.split()[0], "
                  "sysconfig.get_config_var('Py_GIL_DISABLED'), sys._is_gil_enabled())"],
                 T_PROBE, "probe " + tag)
    if out.split()[1:] != ["1", "False"]:
        raise Failure("%s is not free-threaded: %s" % (env.python, out.strip()))
    shutil.rmtree(hsrc)
    with open(stamp, "w") as f:
        f.write("%s built in %.0fs (configure+make+install %.0fs)\n" % (out.strip(), time.time() - t0,
                                                                     time.time() - t1))
    log("  built %s (%s) in %.0fs" % (env.python, out.strip(), time.time() - t0))


def install_scenarios(env, need_c, logdir, need_crash=False, need_cpp=()):
    """Copy the scenarios to /opt/coreheap/scenarios and build c_heap (and c_crash, and the
    C++ scenario's builds). The Python and glibc versions are probed by prepare_env."""
    dst = env.host_path(IN_ROOT_PREFIX + "/scenarios")
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(SCEN_SRC, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    info = env.info
    if need_c:
        bindir = env.host_path(IN_ROOT_PREFIX + "/bin")
        os.makedirs(bindir, exist_ok=True)
        exe = IN_ROOT_PREFIX + "/bin/c_heap"
        if os.path.exists(env.host_path(exe)):
            os.unlink(env.host_path(exe))
        cmd = env.wrap(["gcc", "-O1", "-g0", "-pthread", "-o", exe,
                        IN_ROOT_PREFIX + "/scenarios/c_heap.c"])
        _, dt = run(cmd, T_BUILD, "build c_heap in " + env.name,
                    log_path=os.path.join(logdir, "build-%s.log" % env.name))
        out, _ = run(env.wrap(["gcc", "--version"]), T_PROBE, "gcc --version")
        info["gcc"] = out.splitlines()[0] if out else None
        info["c_heap"] = exe
        log("  built %s%s in %.1fs (%s)" % ("" if env.root == "/" else env.root, exe, dt, info["gcc"]))
    if env.name in FT_ENVS:
        # mimalloc's own count of its live blocks, in C (scenarios/mitruth.c, pyapp/mitruth.py)
        bindir = env.host_path(IN_ROOT_PREFIX + "/bin")
        os.makedirs(bindir, exist_ok=True)
        run(env.wrap(["gcc", "-O1", "-shared", "-fPIC", "-o", IN_ROOT_PREFIX + "/bin/libmitruth.so",
                      IN_ROOT_PREFIX + "/scenarios/mitruth.c"]), T_BUILD, "build libmitruth.so in " + env.name,
            log_path=os.path.join(logdir, "build-%s.log" % env.name))
    if need_crash:
        # -O0 -g: the crash frame keeps its own DWARF (file:line) and frame pointers.
        bindir = env.host_path(IN_ROOT_PREFIX + "/bin")
        os.makedirs(bindir, exist_ok=True)
        exe = IN_ROOT_PREFIX + "/bin/c_crash"
        if os.path.exists(env.host_path(exe)):
            os.unlink(env.host_path(exe))
        run(env.wrap(["gcc", "-O0", "-g", "-o", exe, IN_ROOT_PREFIX + "/scenarios/c_crash.c"]),
            T_BUILD, "build c_crash in " + env.name,
            log_path=os.path.join(logdir, "build-%s.log" % env.name))
        info["c_crash"] = exe
    for scen in need_cpp:
        flags, stripped = CPP_SCENARIOS[scen]
        bindir = env.host_path(IN_ROOT_PREFIX + "/bin")
        os.makedirs(bindir, exist_ok=True)
        exe = IN_ROOT_PREFIX + "/bin/" + scen
        if os.path.exists(env.host_path(exe)):
            os.unlink(env.host_path(exe))
        logp = os.path.join(logdir, "build-%s.log" % env.name)
        run(env.wrap(["g++"] + flags + ["-pthread", "-o", exe,
                                         IN_ROOT_PREFIX + "/scenarios/cpp_heap.cpp"]),
            T_BUILD, "build %s in %s" % (scen, env.name), log_path=logp)
        if stripped:
            run(env.wrap(["strip", exe]), T_BUILD, "strip %s in %s" % (scen, env.name),
                log_path=logp)
        out, _ = run(env.wrap(["g++", "--version"]), T_PROBE, "g++ --version")
        info["g++"] = out.splitlines()[0] if out else None
        info[scen] = exe
    out, _ = run(env.wrap(["gdb", "--version"]), T_PROBE, "gdb --version in " + env.name)
    info["gdb"] = out.splitlines()[0] if out else None


def probe_python(env):
    """The environment's Python and glibc versions, into env.info."""
    out, _ = run(env.wrap([env.python, "-c",
                           "import sys,os;print(sys.version.split()[0]);"
                           "print(os.confstr('CS_GNU_LIBC_VERSION'))"]), T_PROBE, "probe " + env.name)
    lines = out.split("\n")
    env.info["python"] = env.python
    env.info["python_version"] = lines[0].strip()
    env.info["glibc_version"] = lines[1].strip().replace("glibc ", "")


# ------------------------------------------------------------------ py_libs venvs
def host_pip_cert():
    """The CA bundle the machine's pip is set up with ($PIP_CERT, the `cert` of the
    global pip config), else the system bundle: copied into a root for pip there."""
    if os.environ.get("PIP_CERT"):
        return os.environ["PIP_CERT"]
    for conf in ("/etc/pip.conf", "/etc/xdg/pip/pip.conf"):
        cp = configparser.ConfigParser()
        try:
            cp.read(conf)
        except configparser.Error:
            continue
        for sec in ("install", "global"):
            if cp.has_option(sec, "cert"):
                return cp.get(sec, "cert")
    for f in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if f and os.path.exists(f):
            return f
    return None


def pip_env(env):
    """Environment for pip: the clean one plus the machine's PIP_* settings (index,
    timeout, certificate); inside a root, host paths are replaced by copies in the root."""
    penv = dict(CLEAN_ENV)
    for k, v in os.environ.items():
        if k.startswith("PIP_") and k not in ("PIP_CERT", "PIP_FIND_LINKS", "PIP_CONFIG_FILE"):
            penv[k] = v
    penv["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    penv["PIP_NO_INPUT"] = "1"
    if not env.chroot:
        for k in ("PIP_CERT", "PIP_FIND_LINKS", "PIP_CONFIG_FILE"):
            if os.environ.get(k):
                penv[k] = os.environ[k]
        return penv
    cert = host_pip_cert()
    if cert and os.path.exists(cert):
        dst = IN_ROOT_PREFIX + "/pip/ca.pem"
        os.makedirs(os.path.dirname(env.host_path(dst)), exist_ok=True)
        shutil.copyfile(cert, env.host_path(dst))
        penv["PIP_CERT"] = dst
    for conf in ("/etc/pip.conf", "/etc/xdg/pip/pip.conf"):
        if os.path.exists(conf):
            dst = IN_ROOT_PREFIX + "/pip/pip.conf"
            shutil.copyfile(conf, env.host_path(dst))
            penv["PIP_CONFIG_FILE"] = dst
            break
    shutil.copyfile("/etc/resolv.conf", env.host_path("/etc/resolv.conf"))
    return penv


def venv_dir(env):
    """In-environment path of the py_libs venv (cached: never in the repository)."""
    return IN_ROOT_VENV if env.chroot else os.path.join(VENVS, env.name)


def ensure_libs_venv(env, logdir):
    """Create (once, cached) the py_libs virtual environment of env and install
    LIB_PACKAGES into it, one by one, wheels only. Returns the info recorded in
    index.json: venv, python, seconds, installed {name: version}, failed {name: error}.
    A library that does not install is left out for this interpreter only."""
    t0 = time.time()
    vdir = venv_dir(env)
    vpy = vdir + "/bin/python"
    stamp_path = env.host_path(vdir + "/coreheap-libs.json")
    pyver = env.info.get("python_version")
    try:
        with open(stamp_path) as f:
            stamp = json.load(f)
        if stamp.get("python_version") == pyver and stamp.get("packages") == LIB_PACKAGES:
            stamp["cached"] = True
            stamp["seconds"] = round(time.time() - t0, 1)
            return stamp
    except (OSError, ValueError):
        pass
    logp = os.path.join(logdir, "venv-%s.log" % env.name)
    log("  creating the py_libs venv %s%s (log: %s)" % (
        "" if env.root == "/" else env.root, vdir, logp))
    if os.path.exists(env.host_path(vdir)):
        shutil.rmtree(env.host_path(vdir))
    os.makedirs(os.path.dirname(env.host_path(vdir)), exist_ok=True)
    try:
        run(env.wrap([env.python, "-m", "venv", vdir]), T_APT, "venv in " + env.name, log_path=logp)
    except Failure:
        # Debian splits ensurepip off into python3-venv.
        if env.kind == "pyenv":
            raise
        log("  installing python3-venv in %s" % env.name)
        if os.path.exists(env.host_path(vdir)):
            shutil.rmtree(env.host_path(vdir))
        if env.chroot:
            shutil.copyfile("/etc/resolv.conf", env.host_path("/etc/resolv.conf"))
        run(env.wrap(["apt-get"] + APT_OPTS + ["update"]), T_APT, "apt-get update in " + env.name,
            log_path=logp)
        run(env.wrap(["apt-get"] + APT_OPTS + ["install", "-y", "--no-install-recommends",
                                              "python3-venv"]),
            T_APT, "apt-get install python3-venv in " + env.name, log_path=logp)
        run(env.wrap([env.python, "-m", "venv", vdir]), T_APT, "venv in " + env.name, log_path=logp)
    penv = pip_env(env)
    pip = env.wrap([vpy, "-m", "pip", "install", "--quiet"])
    try:  # an old bundled pip may not know the newest wheel tags; not fatal
        run(pip + ["--upgrade", "pip"], T_PIP, "pip upgrade in " + env.name, env=penv, log_path=logp)
    except Failure as e:
        log("  %s: pip upgrade failed, keeping the bundled pip: %s" % (env.name, str(e).splitlines()[0]))
    installed, failed = {}, {}
    for pkg in LIB_PACKAGES:
        try:
            run(pip + ["--only-binary", ":all:", pkg], T_PIP, "pip install %s in %s" % (pkg, env.name),
                env=penv, log_path=logp)
        except Failure as e:
            lines = [x for x in str(e).splitlines() if x.strip()]
            err = [x for x in lines if x.startswith("ERROR")]
            failed[pkg] = (err or lines)[0][:300]
            log("  %s: %s does not install: %s" % (env.name, pkg, failed[pkg]))
    out, _ = run(env.wrap([vpy, "-m", "pip", "list", "--format=json"]), T_PROBE,
                 "pip list in " + env.name, env=penv)
    versions = {d["name"].lower(): d["version"] for d in json.loads(out[out.index("["):])}
    for pkg in LIB_PACKAGES:
        if pkg not in failed:
            installed[pkg] = versions.get(pkg.lower(), "?")
    stamp = {"venv": vdir, "python": vpy, "python_version": pyver, "packages": LIB_PACKAGES,
             "installed": installed, "failed": failed, "created_unix": int(time.time()),
             "install_seconds": round(time.time() - t0, 1)}
    with open(stamp_path, "w") as f:
        json.dump(stamp, f, indent=1)
    stamp = dict(stamp, cached=False, seconds=round(time.time() - t0, 1))
    log("  venv ready in %.0fs: %s%s" % (time.time() - t0, ", ".join(
        "%s %s" % kv for kv in sorted(installed.items())),
        ("; not installed: " + ", ".join(sorted(failed))) if failed else ""))
    return stamp


# ------------------------------------------------------------------ core_pattern
class CorePattern(object):
    PATH = "/proc/sys/kernel/core_pattern"

    def __init__(self):
        self.saved = None

    def current(self):
        with open(self.PATH) as f:
            return f.read().rstrip("\n")

    def setup(self):
        """Make kernel cores land in the process's cwd as core / core.PID."""
        cur = self.current()
        if cur not in ("core", "core.%p"):
            log("core_pattern is %r: setting it to 'core' for this run" % cur)
            self.saved = cur
            with open(self.PATH, "w") as f:
                f.write("core")

    def restore(self):
        if self.saved is not None:
            with open(self.PATH, "w") as f:
                f.write(self.saved)
            log("core_pattern restored to %r" % self.saved)
            self.saved = None


# ------------------------------------------------------------------ running cases
LIVE = set()  # pids of scenario processes we started


def kill_ours():
    for pid in list(LIVE):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass
        LIVE.discard(pid)


def task_states(pid):
    states = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                s = f.read()
            states.append(s[s.rindex(")") + 2])
    except OSError:
        return None
    return states


def tail_of(path, n=2000):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


def spawn(env, cmd, workdir_in_root, kind, filt, outdir, extra_env=None):
    """Start a scenario: wrapper sets RLIMIT_CORE and coredump_filter, then
    chroots (chroot envs) and chdirs into the run directory, then execs."""
    filt_text = filt

    def pre():
        if kind == "kernel":
            resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        else:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        with open("/proc/self/coredump_filter", "w") as f:
            f.write(filt_text)
        if env.chroot:
            os.chroot(env.root)
        os.chdir(workdir_in_root)

    penv = dict(CLEAN_ENV)
    penv.update(PY_ENV)
    penv.update(extra_env or {})
    out = open(os.path.join(outdir, "stdout.txt"), "ab")
    err = open(os.path.join(outdir, "stderr.txt"), "ab")
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=penv,
                             preexec_fn=pre, start_new_session=True, close_fds=True)
    finally:
        out.close()
        err.close()
    LIVE.add(p.pid)
    # A fast scenario (c_heap in kernel mode) may already have dumped and become a zombie,
    # whose coredump_filter reads empty; pre() wrote it before exec in any case.
    try:
        with open("/proc/%d/coredump_filter" % p.pid) as f:
            text = f.read().strip()
    except OSError:
        text = ""
    got = int(text, 16) if text else int(filt, 16)
    if got != int(filt, 16):
        raise Failure("coredump_filter of pid %d is %#x, wanted %s" % (p.pid, got, filt))
    return p


def wait_stopped(p, marker, outdir, what):
    t0 = time.time()
    while True:
        rc = p.poll()
        if rc is not None:
            LIVE.discard(p.pid)
            raise Failure("%s: exited with %s before stopping\nstderr: %s"
                          % (what, rc, tail_of(os.path.join(outdir, "stderr.txt"))))
        st = task_states(p.pid)
        if st and all(s == "T" for s in st) and os.path.exists(marker):
            return time.time() - t0
        if time.time() - t0 > T_TO_STOP:
            raise Failure("%s: not stopped after %ds (states %s)" % (what, T_TO_STOP, st))
        time.sleep(0.05)


def take_gcore(env, pid, run_in_root, run_host, core_name, logp):
    prefix = run_in_root + "/gcore"
    _, dt = run(env.wrap(["gcore", "-o", prefix, str(pid)]), T_GCORE, "gcore %d" % pid,
                log_path=logp)
    produced = os.path.join(run_host, "gcore.%d" % pid)
    if not os.path.exists(produced):
        raise Failure("gcore wrote no %s (see %s)" % (produced, logp))
    os.rename(produced, os.path.join(run_host, core_name))
    return dt


def find_kernel_core(run_host, pid):
    for name in ("core", "core.%d" % pid):
        p = os.path.join(run_host, name)
        if os.path.exists(p):
            return p
    return None


def parse_dms(path):
    """Sum of the 'blocks in use' column of sys._debugmallocstats()."""
    total = 0
    in_table = False
    found = False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("class   size   num pools"):
                found = True
                continue
            if line.startswith("-----"):
                in_table = True
                continue
            if in_table:
                parts = line.split()
                if len(parts) == 5 and all(x.isdigit() for x in parts):
                    total += int(parts[3])
                    continue
                in_table = False
    if not found:
        raise Failure("%s: no 'class   size   num pools' table" % path)
    return total


def scenario_cmd(env, scen, kind, extra):
    if scen in NATIVE_SCENARIOS:
        return [IN_ROOT_PREFIX + "/bin/" + scen, kind] + extra
    python = env.python
    if scen == "py_libs":
        python = env.info.get("libs", {}).get("python") or env.python
    script = TRACE_SCENARIOS.get(scen, (scen, None))[0]
    return [python, "-s", "-B", IN_ROOT_PREFIX + "/scenarios/%s.py" % script, kind] + extra


def stages_of(scen):
    return ["A", "B"] if scen in ("py_leak", "py_trace_leak") else [None]


def sfx(stage):
    return "" if stage is None else "_" + stage


def run_case(env, scen, kind, filt, out_root, py_scale=None):
    case_rel = "%s/%s-%s-%s" % (env.name, scen, kind, filt)
    case_dir = os.path.join(out_root, case_rel)
    if os.path.exists(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    if env.chroot:
        run_in_root = "/tmp/coreheap-run/%s-%s-%s" % (scen, kind, filt)
        run_host = env.host_path(run_in_root)
        if os.path.exists(run_host):
            shutil.rmtree(run_host)
        os.makedirs(run_host)
    else:
        run_in_root = run_host = case_dir
    gcore_log = os.path.join(case_dir, "gcore.log")
    timings = {}
    extra = []
    if scen == "py_heap" and py_scale is not None:
        extra = ["--scale", repr(py_scale)]
    if scen == "py_trace_leak":
        extra = ["--requests", "600"]
    stages = stages_of(scen)
    pids = {}
    t_case = time.time()

    scen_env = TRACE_SCENARIOS.get(scen, (None, None))[1]
    if kind == "gcore":
        p = spawn(env, scenario_cmd(env, scen, kind, extra), run_in_root, kind, filt, run_host,
                  scen_env)
        try:
            for i, st in enumerate(stages):
                marker = os.path.join(run_host, "truth%s.json" % sfx(st))
                timings["to_stop" + sfx(st)] = wait_stopped(p, marker, run_host, case_rel)
                timings["gcore" + sfx(st)] = take_gcore(env, p.pid, run_in_root, run_host,
                                                        "core" + sfx(st), gcore_log)
                pids[st] = p.pid
                if i + 1 < len(stages):
                    os.kill(p.pid, signal.SIGCONT)
        finally:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()
            LIVE.discard(p.pid)
    else:
        runs = [(st, ["--stop-at", st]) for st in stages] if scen == "py_leak" else [(None, [])]
        for st, more in runs:
            p = spawn(env, scenario_cmd(env, scen, kind, extra + more), run_in_root, kind, filt,
                      run_host, scen_env)
            t0 = time.time()
            try:
                rc = p.wait(timeout=T_TO_STOP)
            except subprocess.TimeoutExpired:
                raise Failure("%s: did not abort within %ds" % (case_rel, T_TO_STOP))
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                LIVE.discard(p.pid)
            timings["run" + sfx(st)] = time.time() - t0
            want = CRASH_SCENARIOS.get(scen, signal.SIGABRT)
            if rc != -want:
                raise Failure("%s: exit status %s, expected %s\nstderr: %s"
                              % (case_rel, rc, signal.Signals(want).name,
                                 tail_of(os.path.join(run_host, "stderr.txt"))))
            c = find_kernel_core(run_host, p.pid)
            if c is None:
                raise Failure("%s: the kernel wrote no core (core_pattern %r, RLIMIT_CORE unlimited) in %s"
                              % (case_rel, CorePattern().current(), run_host))
            os.rename(c, os.path.join(run_host, "core" + sfx(st)))
            pids[st] = p.pid

    if env.chroot:
        for name in sorted(os.listdir(run_host)):
            shutil.move(os.path.join(run_host, name), os.path.join(case_dir, name))
        shutil.rmtree(run_host)
    # gdb writes unreadable/unused ranges (e.g. the PROT_NONE tail of a
    # 64 MiB arena heap) as real zeros: punch holes so the cache stays small.
    # The content is unchanged.
    if shutil.which("fallocate"):
        for st in stages:
            run(["fallocate", "--dig-holes", os.path.join(case_dir, "core" + sfx(st))], T_GCORE,
                "fallocate --dig-holes")
    timings["total"] = time.time() - t_case
    return validate_case(env, scen, kind, filt, out_root, case_rel, stages, pids, timings)


def validate_case(env, scen, kind, filt, out_root, case_rel, stages, pids, timings):
    case_dir = os.path.join(out_root, case_rel)
    entry = {
        "id": case_rel, "env": env.name, "env_kind": env.kind, "suite": env.suite,
        "scenario": scen, "kind": kind, "filter": filt, "dir": case_rel,
        "sysroot": env.root, "glibc_version": None, "python_version": None,
        "stages": [], "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    for st in stages:
        s = sfx(st)
        core = os.path.join(case_dir, "core" + s)
        truth_p = os.path.join(case_dir, "truth%s.json" % s)
        if not os.path.exists(core):
            raise Failure("%s: missing %s" % (case_rel, core))
        with open(truth_p) as f:
            try:
                truth = json.load(f)
            except ValueError as e:
                raise Failure("%s: %s does not parse: %s" % (case_rel, truth_p, e))
        summ = core_summary(core)
        if summ["bytes"] < 64 * 1024:
            raise Failure("%s: %s is only %d bytes" % (case_rel, core, summ["bytes"]))
        core_tids = sorted(t["tid"] for t in summ["threads"])
        if core_tids != sorted(truth["tids"]):
            raise Failure("%s: core threads %s != truth tids %s" % (case_rel, core_tids, truth["tids"]))
        if truth["pid"] != pids[st]:
            raise Failure("%s: truth pid %s != process pid %s" % (case_rel, truth["pid"], pids[st]))
        census = truth.get("census")
        for typ, want in sorted((truth.get("expected") or {}).items()):
            if census is not None and "." in typ and census.get(typ) != want:
                raise Failure("%s: census has %s x %s, the scenario holds %s"
                              % (case_rel, census.get(typ), typ, want))
        if kind == "kernel":
            first = summ["threads"][0]
            want = int(CRASH_SCENARIOS.get(scen, signal.SIGABRT))
            if first["cursig"] != want or first["tid"] != truth["signal_tid"]:
                raise Failure("%s: first core thread %s, expected tid %s with signal %d"
                              % (case_rel, first, truth["signal_tid"], want))
        stage = {
            "stage": st, "core": case_rel + "/core" + s, "truth": case_rel + "/truth%s.json" % s,
            "pid": truth["pid"], "exe": truth["exe"], "core_bytes": summ["bytes"],
            "core_disk_bytes": summ["allocated_bytes"], "core_threads": summ["threads"],
            "core_siginfo_signo": summ["siginfo_signo"], "mapped_files": summ["mapped_files"],
        }
        if scen == "c_heap":
            mi = os.path.join(case_dir, "malloc_info.xml")
            with open(mi) as f:
                if "<malloc version=" not in f.read():
                    raise Failure("%s: bad malloc_info.xml" % case_rel)
            stage["malloc_info"] = case_rel + "/malloc_info.xml"
        elif scen == "c_crash" or scen in CPP_SCENARIOS:
            pass
        else:
            dms = os.path.join(case_dir, "debugmallocstats%s.txt" % s)
            ab = os.path.join(case_dir, "allocated_blocks%s.txt" % s)
            stage["allocated_blocks_file"] = case_rel + "/allocated_blocks%s.txt" % s
            # Under tracemalloc the object allocator is its hook, not pymalloc, and
            # _PyObject_DebugMallocStats prints no pool table (Objects/obmalloc.c:
            # _PyMem_PymallocEnabled): those cases have no debugmallocstats truth.
            if env.name in FT_ENVS:
                # No pymalloc: mimalloc's own count of its live blocks (pyapp/mitruth.py).
                mi = os.path.join(case_dir, "mimalloc%s.txt" % s)
                total = 0
                with open(mi) as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) != 3 or not all(x.isdigit() for x in parts):
                            raise Failure("%s: %s: %r" % (case_rel, mi, line.strip()))
                        total += int(parts[2])
                if total == 0:
                    raise Failure("%s: %s counts no block" % (case_rel, mi))
                stage["mimalloc"] = case_rel + "/mimalloc%s.txt" % s
                stage["mimalloc_blocks"] = total
            elif scen not in TRACE_SCENARIOS:
                stage["debugmallocstats"] = case_rel + "/debugmallocstats%s.txt" % s
                stage["dms_blocks_in_use"] = parse_dms(dms)
            with open(ab) as f:
                stage["allocated_blocks"] = int(f.read().strip())
            if scen in TRACE_SCENARIOS:
                tr = os.path.join(case_dir, "traces%s.json" % s)
                if not os.path.exists(tr):
                    raise Failure("%s: the scenario wrote no %s (was PYTHONTRACEMALLOC set?)"
                                  % (case_rel, tr))
                with open(tr) as f:
                    if "statistics" not in json.load(f):
                        raise Failure("%s: %s has no statistics" % (case_rel, tr))
                stage["traces"] = case_rel + "/traces%s.json" % s
        entry["stages"].append(stage)
        if scen == "py_libs":
            entry["libraries"] = truth.get("libraries")
            entry["libraries_missing"] = truth.get("libraries_missing")
        entry["glibc_version"] = truth.get("glibc_version")
        entry["python_version"] = truth.get("python_version")
    entry["core"] = entry["stages"][0]["core"]
    entry["truth"] = entry["stages"][0]["truth"]
    return entry


def applicable(env, scen):
    if env.name in FT_ENVS or scen == "py_ft_threads":
        return env.name in FT_ENVS and scen in FT_SCENARIOS
    return not (scen in NATIVE_SCENARIOS and env.kind == "pyenv")


def kind_applicable(scen, kind):
    """A scenario that crashes by itself has kernel cores only."""
    return not (scen in CRASH_SCENARIOS and kind != "kernel")


def prepare_env(env, scen_here, logdir):
    """The slow, cached part of an environment's preparation: its Debian root (debootstrap,
    gdb and compilers; the free-threaded build of an ft-* environment), its Python and glibc
    versions (env.info; the venv's stamp needs them) and its py_libs venv. Raises Failure
    when the environment cannot run at all; returns the venv's stamp, or the Failure that
    kept it from being made (py_libs then runs without libraries), or None."""
    if env.chroot:
        ensure_root(env, need_cpp=any(s in CPP_SCENARIOS for s in scen_here))
        if env.name in FT_ENVS:
            ensure_ft(env, logdir)
    elif not os.path.exists(env.python):
        raise Failure("%s: %s not found" % (env.name, env.python))
    probe_python(env)
    if "py_libs" not in scen_here:
        return None
    try:
        return ensure_libs_venv(env, logdir)
    except Failure as e:
        return e


class Ahead(object):
    """Prepares the environments on a background thread, each while the previous one's cases
    run: on a machine without the cache, the roots (debootstrap, apt), the venvs (pip) and
    the free-threaded build are minutes of mostly network and disk work each, which then
    overlap the cores' CPU work instead of adding to it. One ahead, never more: an
    environment's root is only changed (apt, a build) once the cases before it are done, so
    `ahead` environments listed after the last one — the free-threaded build in the trixie
    root — wait for every case in that root. The main thread takes each environment's
    result in order (`take`); the lines its preparation logged are printed then."""

    def __init__(self, jobs, logdir):
        self.jobs = jobs  # [(env, scenarios it runs)]
        self.logdir = logdir
        self.results = [None] * len(jobs)
        self.done = [threading.Event() for _ in jobs]
        self.taken = [threading.Event() for _ in jobs]
        self.thread = threading.Thread(target=self._run, name="prepare", daemon=True)
        self.thread.start()

    def _run(self):
        for i, (env, scen) in enumerate(self.jobs):
            if i > 0:
                self.taken[i - 1].wait()
            _HELD.lines = []
            try:
                r = (None, prepare_env(env, scen, self.logdir))
            except BaseException as e:  # handed to the main thread, raised there
                r = (e, None)
            self.results[i] = (r, _HELD.lines)
            _HELD.lines = None
            self.done[i].set()

    def take(self, i):
        """Environment i's preparation: (exception or None, venv result), once it is done."""
        self.done[i].wait()
        r, lines = self.results[i]
        for line in lines:
            log(line)
        self.taken[i].set()
        return r


def generate(out, envs, kinds, filters, scenarios, py_scale=None, index_extra=None, ahead=()):
    """Run the matrix; returns (entries, failures). `ahead`: environments only prepared (their
    roots, builds and venvs), after the others, for a later run (see Ahead)."""
    os.makedirs(out, exist_ok=True)
    logdir = os.path.join(out, "logs")
    os.makedirs(logdir, exist_ok=True)
    entries, failures = [], []
    cp = CorePattern()
    t_all = time.time()
    env_info = {}
    try:
        if "kernel" in kinds:
            cp.setup()
        jobs = []
        for env in envs:
            scen_here = [s for s in scenarios if applicable(env, s)]
            for s in scenarios:
                if s not in scen_here:
                    log("[%s] %s: not applicable (the pyenv environments share the host's "
                        "glibc: c_heap runs in 'host')" % (env.name, s))
            if scen_here:
                jobs.append((env, scen_here))
        prep = Ahead(jobs + [(env, []) for env in ahead], logdir)
        for i, (env, scen_here) in enumerate(jobs):
            t_env = time.time()
            log("[%s] preparing" % env.name)
            err, libs = prep.take(i)
            try:
                # Any other exception than a Failure goes on up, as it did unprepared.
                if err is not None:
                    raise err
                install_scenarios(env, "c_heap" in scen_here, logdir, "c_crash" in scen_here,
                                  [s for s in scen_here if s in CPP_SCENARIOS])
            except Failure as e:
                failures.append({"env": env.name, "error": str(e)})
                log("[%s] FAILED to prepare: %s" % (env.name, e))
                continue
            if isinstance(libs, Failure):
                # py_libs still runs, with the stdlib populations only; the failure is recorded.
                failures.append({"env": env.name, "error": "py_libs venv: %s" % libs})
                log("[%s] FAILED to make the py_libs venv (py_libs runs without libraries): %s"
                    % (env.name, libs))
            elif libs is not None:
                env.info["libs"] = libs
            env_info[env.name] = dict(env.info, kind=env.kind, suite=env.suite, sysroot=env.root)
            for scen in scen_here:
                for kind in kinds:
                    if not kind_applicable(scen, kind):
                        continue
                    for filt in filters:
                        if scen in TRACE_SCENARIOS and (kind != "gcore" or filt != filters[0]):
                            continue
                        cid = "%s/%s-%s-%s" % (env.name, scen, kind, filt)
                        t0 = time.time()
                        try:
                            e = run_case(env, scen, kind, filt, out, py_scale)
                            entries.append(e)
                            log("  ok   %-40s %6.1fs  core %s" % (
                                cid, time.time() - t0,
                                " + ".join("%.1f MB" % (s["core_bytes"] / 1e6) for s in e["stages"])))
                        except Failure as ex:
                            failures.append({"case": cid, "error": str(ex)})
                            log("  FAIL %-40s %6.1fs\n%s" % (cid, time.time() - t0, ex))
                        finally:
                            kill_ours()
            log("[%s] done in %.1fs" % (env.name, time.time() - t_env))
        for i, env in enumerate(ahead, start=len(jobs)):
            t_env = time.time()
            log("[%s] preparing for a later run" % env.name)
            err, _ = prep.take(i)
            if isinstance(err, Failure):
                # Not this run's failure: the later run prepares it again and reports it.
                log("[%s] FAILED to prepare: %s" % (env.name, err))
            elif err is not None:
                raise err
            log("[%s] prepared in %.1fs" % (env.name, time.time() - t_env))
    finally:
        kill_ours()
        cp.restore()
        unmount_ours()
    index = {
        "format": 1,
        "generator": "corpora/make_corpus.py",
        "host": {"codename": host_codename(), "kernel": os.uname().release},
        "created_unix": int(time.time()),
        "seconds": round(time.time() - t_all, 1),
        "envs": env_info,
        # py_libs: libraries that did not install per environment (left out there only)
        "libs_not_installed": {n: i["libs"]["failed"] for n, i in env_info.items()
                               if i.get("libs", {}).get("failed")},
        "cases": entries,
        "failures": failures,
    }
    if index_extra:
        index.update(index_extra)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, indent=1, sort_keys=False)
        f.write("\n")
    log("%d cases ok, %d failures, %.1fs; index: %s" % (
        len(entries), len(failures), time.time() - t_all, os.path.join(out, "index.json")))
    return entries, failures


# ------------------------------------------------------------------ reference
def dir_size(path):
    total = 0
    for dp, _dn, fn in os.walk(path):
        for n in fn:
            p = os.path.join(dp, n)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def reference(args):
    if os.path.exists(REFERENCE_DIR) and os.listdir(REFERENCE_DIR) and not args.force:
        raise Failure("%s exists: every replacement stays in git history, so it is only "
                      "regenerated on purpose: pass --force" % REFERENCE_DIR)
    if host_codename() != "bookworm":
        raise Failure("the reference set's host suite must be bookworm, this host is %s"
                      % host_codename())
    work = os.path.join(CACHE, "reference-work")
    if os.path.exists(work):
        shutil.rmtree(work)
    envs = resolve_envs("host,bullseye,trixie,sid")
    t0 = time.time()
    entries = []
    every = [scen for scen, _k, _e in REFERENCE_CASES]
    chosen = split(args.scenarios) if args.scenarios else every
    for scen in chosen:
        if scen not in every:
            raise Failure("the reference set has no %r cases (have %s)" % (scen, ", ".join(every)))
    partial = set(chosen) != set(every)
    if partial and not os.path.exists(os.path.join(REFERENCE_DIR, "index.json")):
        raise Failure("--scenarios replaces part of an existing reference set; there is none")
    env_info = {}
    for scen, kind, env_spec in REFERENCE_CASES:
        if scen not in chosen:
            continue
        names = set(split(env_spec))
        e, fails = generate(work, [x for x in envs if x.name in names], [kind], ["0x33"], [scen],
                            py_scale=args.py_scale)
        if fails:
            raise Failure("reference: %d failures, see above" % len(fails))
        entries.extend(e)
        # index.json lists the last run's environments only: merge them (c_heap adds gcc)
        with open(os.path.join(work, "index.json")) as f:
            for n, info in json.load(f)["envs"].items():
                env_info[n] = dict(env_info.get(n, {}), **info)

    stage_dir = REFERENCE_DIR + ".new"
    if os.path.exists(stage_dir):
        shutil.rmtree(stage_dir)
    os.makedirs(stage_dir)
    suite_of = {e.name: e.suite for e in envs}
    root_of = {e.name: e.root for e in envs}
    cases = []
    sysroot_files = {}
    for ent in sorted(entries, key=lambda x: (x["suite"], x["scenario"])):
        suite = suite_of[ent["env"]]
        src_dir = os.path.join(work, ent["dir"])
        rel = "%s/%s-%s-%s" % (suite, ent["scenario"], ent["kind"], ent["filter"])
        dst_dir = os.path.join(stage_dir, rel)
        os.makedirs(dst_dir)
        cores = ["core" + sfx(st["stage"]) for st in ent["stages"]]  # py_leak: core_A, core_B
        for name in sorted(os.listdir(src_dir)):
            if name in cores or name in ("stdout.txt", "stderr.txt", "gcore.log"):
                continue
            shutil.copyfile(os.path.join(src_dir, name), os.path.join(dst_dir, name))
        for core in cores:
            tz = time.time()
            run(["zstd", "-19", "--long", "-T2", "-q", "-f", os.path.join(src_dir, core),
                 "-o", os.path.join(dst_dir, core + ".zst")], T_ZSTD, "zstd %s/%s" % (rel, core))
            log("  zstd %-44s %.1fs: %.1f MB -> %.2f MB" % (
                rel + "/" + core, time.time() - tz, os.path.getsize(os.path.join(src_dir, core)) / 1e6,
                os.path.getsize(os.path.join(dst_dir, core + ".zst")) / 1e6))
        files = sysroot_files.setdefault(suite, set())
        for st in ent["stages"]:
            for path in st["mapped_files"]:
                if path.endswith(" (deleted)"):
                    raise Failure("%s maps a deleted file: %s" % (rel, path))
                src = os.path.join(root_of[ent["env"]], path.lstrip("/"))
                if not os.path.exists(src):
                    raise Failure("%s: mapped file %s not found at %s" % (rel, path, src))
                if is_elf(src):
                    files.add(path)
        c = dict(ent)
        c["id"] = rel
        c["dir"] = rel
        c["sysroot"] = suite + "/sysroot"
        c["core"] = rel + "/" + cores[0] + ".zst"
        c["core_compression"] = "zstd"
        c["truth"] = rel + "/" + os.path.basename(ent["truth"])
        c["env"] = suite
        c["generated_in_env"] = ent["env"]
        for s in c["stages"]:
            s["core"] = rel + "/core%s.zst" % sfx(s["stage"])
            for k in ("truth", "malloc_info", "debugmallocstats", "allocated_blocks_file"):
                if k in s:
                    s[k] = rel + "/" + os.path.basename(s[k])
        cases.append(c)
    py_scale = args.py_scale
    suites = {suite_of[n]: dict(env_info[n], sysroot=suite_of[n] + "/sysroot", generated_in_env=n)
              for n in env_info}
    if partial:
        # Keep the other scenarios' cases and the sysroot files they need, as committed.
        with open(os.path.join(REFERENCE_DIR, "index.json")) as f:
            old = json.load(f)
        py_scale = old.get("py_scale", py_scale)
        # ... and the suites' records (this run may have visited some suites only)
        suites = dict((s, dict(old["suites"].get(s, {}), **suites.get(s, {})))
                      for s in list(old["suites"]) + [s for s in suites if s not in old["suites"]])
        for c in old["cases"]:
            if c["scenario"] in chosen:
                continue
            shutil.copytree(os.path.join(REFERENCE_DIR, c["dir"]), os.path.join(stage_dir, c["dir"]))
            cases.append(c)
        for suite, paths in old["sysroot_files"].items():
            for path in paths:
                dst = os.path.join(stage_dir, suite, "sysroot", path.lstrip("/"))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy2(os.path.join(REFERENCE_DIR, suite, "sysroot", path.lstrip("/")), dst)
                sysroot_files.setdefault(suite, set()).add(path)
        cases.sort(key=lambda c: c["id"])
    for suite in sorted(sysroot_files):
        env_name = [e.name for e in envs if e.suite == suite][0]
        for path in sorted(sysroot_files[suite]):
            src = os.path.join(root_of[env_name], path.lstrip("/"))
            dst = os.path.join(stage_dir, suite, "sysroot", path.lstrip("/"))
            if partial and os.path.exists(dst):
                # Kept from the committed set. A file the new cores map too must be the same
                # build, else the kept cases (or the new ones) would point at the wrong file.
                if filecmp.cmp(src, dst, shallow=False):
                    continue
                if any(path in st["mapped_files"] for c in cases
                       if c["scenario"] not in chosen and c["env"] == suite for st in c["stages"]):
                    raise Failure("%s:%s differs from the committed copy that kept cases map: "
                                  "regenerate the whole set (no --scenarios)" % (suite, path))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
    index = {
        "format": 1,
        "generator": "corpora/make_corpus.py reference",
        "py_scale": py_scale,
        "suites": suites,
        "sysroot_files": {s: sorted(v) for s, v in sorted(sysroot_files.items())},
        "cases": cases,
    }
    with open(os.path.join(stage_dir, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    total = dir_size(stage_dir)
    for suite in sorted(sysroot_files):
        log("  %-9s sysroot %5.1f MB, cores+truth %5.1f MB" % (
            suite, dir_size(os.path.join(stage_dir, suite, "sysroot")) / 1e6,
            (dir_size(os.path.join(stage_dir, suite)) - dir_size(os.path.join(stage_dir, suite, "sysroot"))) / 1e6))
    log("reference total: %.2f MB (%d bytes), limit %.0f MB, %.0fs" % (
        total / 1e6, total, REFERENCE_LIMIT / 1e6, time.time() - t0))
    if total > REFERENCE_LIMIT:
        raise Failure("reference set is %.1f MB > %.0f MB: rerun with a smaller --py-scale "
                      "(left in %s)" % (total / 1e6, REFERENCE_LIMIT / 1e6, stage_dir))
    if os.path.exists(REFERENCE_DIR):
        shutil.rmtree(REFERENCE_DIR)
    os.rename(stage_dir, REFERENCE_DIR)
    shutil.rmtree(work)
    log("wrote %s" % REFERENCE_DIR)


# ------------------------------------------------------------------ main
def split(s):
    return [x.strip() for x in s.split(",") if x.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    g = sub.add_parser("generate", help="build the full corpus")
    g.add_argument("--out", default=os.path.join(CACHE, "corpus"))
    g.add_argument("--envs", default=DEFAULT_ENVS)
    g.add_argument("--kinds", default="gcore,kernel")
    g.add_argument("--filters", default="0x33,0x37")
    g.add_argument("--scenarios", default=",".join(ALL_SCENARIOS))
    g.add_argument("--py-scale", type=float, default=None,
                   help="population scale of py_heap (default: its own 1.0)")
    g.add_argument("--prepare-ahead", default="",
                   help="environments only to prepare (roots, builds, venvs), after the others, "
                        "for a later run: tests/run-all's free-threaded build")
    r = sub.add_parser("reference", help="regenerate corpora/reference (committed: not casually)")
    r.add_argument("--force", action="store_true", help="replace an existing reference set")
    r.add_argument("--scenarios", default=None,
                   help="replace only these scenarios' cases (py_heap,c_heap,py_leak), keeping the rest "
                        "as committed")
    r.add_argument("--py-scale", type=float, default=1.0)
    ro = sub.add_parser("roots", help="only create/update the Debian roots")
    ro.add_argument("--envs", default="bullseye,trixie,sid")
    args = ap.parse_args()
    if args.cmd is None:
        ap.print_help()
        return 2
    # SIGTERM/SIGHUP: unwind through the finally blocks (restore core_pattern, kill children)
    def _term(signum, _frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGHUP, _term)
    if os.geteuid() != 0:
        log("make_corpus.py must run as root (chroot, core_pattern, coredump_filter, /opt/coreheap)")
        return 2
    for tool in ("gcc", "g++", "gdb", "gcore", "zstd", "chroot", "mount"):
        if shutil.which(tool, path=CLEAN_ENV["PATH"]) is None:
            log("missing host tool: %s (apt-get install gcc g++ gdb zstd)" % tool)
            return 2
    try:
        if args.cmd == "generate":
            kinds = split(args.kinds)
            filters = split(args.filters)
            scenarios = split(args.scenarios)
            for k in kinds:
                if k not in ("gcore", "kernel"):
                    raise Failure("unknown kind %r" % k)
            for f in filters:
                int(f, 16)
            for s in scenarios:
                if s not in ALL_SCENARIOS:
                    raise Failure("unknown scenario %r (have %s)" % (s, ", ".join(ALL_SCENARIOS)))
            envs = resolve_envs(args.envs)
            ahead = [e for e in resolve_envs(args.prepare_ahead) if e.name not in
                     {x.name for x in envs}] if args.prepare_ahead else []
            _, failures = generate(os.path.abspath(args.out), envs, kinds, filters, scenarios,
                                   args.py_scale, ahead=ahead)
            if failures:
                log("FAILURES:")
                for fl in failures:
                    log("  %s: %s" % (fl.get("case") or fl.get("env"), fl["error"].splitlines()[0]))
                return 1
        elif args.cmd == "reference":
            reference(args)
        elif args.cmd == "roots":
            for env in resolve_envs(args.envs):
                if not env.chroot:
                    raise Failure("%s is not a Debian suite" % env.name)
                log("[%s]" % env.name)
                ensure_root(env)
                if env.name in FT_ENVS:
                    ensure_ft(env, None)
            unmount_ours()
    except Failure as e:
        log("ERROR: %s" % e)
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        kill_ours()
        unmount_ours()
    return 0


if __name__ == "__main__":
    sys.exit(main())
