#!/usr/bin/env bash
# Make a large real core (default ~2 GiB) of a Python process for benchmarks, then time
# `coreheap info` (and later commands) on it with hyperfine.
#   benches/bigcore.sh [SIZE_MIB]         -> prints the core path, runs the benchmark
# The core goes to $COREHEAP_CACHE/bench (default ~/.cache/coreheap/bench), never the repo.
set -euo pipefail
size_mib=${1:-2048}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${COREHEAP_CACHE:-$HOME/.cache/coreheap}/bench
mkdir -p "$cache"
core="$cache/big-${size_mib}m.core"
if [ ! -s "$core" ]; then
  command -v gcore >/dev/null || { apt-get update -qq && apt-get install -y -qq gdb; }
  rm -f "$cache"/gc.*
  # Half the size in many small objects (pymalloc), half in large buffers (glibc mmap).
  /usr/bin/python3 - "$size_mib" "$cache/ready" <<'PY' &
import os, sys, signal, time
mib = int(sys.argv[1]); ready = sys.argv[2]
small = [("s%d" % i) * 3 for i in range(mib * 1024 * 1024 // 2 // 100)]
big = [bytes([i % 251]) * (8 << 20) for i in range(mib // 2 // 8)]
open(ready, "w").close()
os.kill(os.getpid(), signal.SIGSTOP)
time.sleep(3600)
PY
  pid=$!
  while [ ! -e "$cache/ready" ]; do sleep 0.5; done
  rm -f "$cache/ready"
  gcore -o "$cache/gc" "$pid" >/dev/null 2>&1
  kill -9 "$pid" || true
  mv "$cache/gc.$pid" "$core"
fi
ls -l "$core"
(cd "$here" && cargo build --release -q)
bin="$here/target/release/coreheap"
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
# Warm page cache is the steady state; cold (caches dropped, needs root) is what a user
# sees the first time.
hyperfine -N --warmup 2 --runs 20 "$bin info --quiet $core" "$bin info --json --quiet $core"
if [ -w /proc/sys/vm/drop_caches ]; then
  hyperfine -N --runs 5 --prepare 'sh -c "sync; echo 3 > /proc/sys/vm/drop_caches"' "$bin info --quiet $core"
fi
