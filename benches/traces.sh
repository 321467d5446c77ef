#!/usr/bin/env bash
# Benchmark tracemalloc trace recovery on a real core: Debian's python3 runs under
# PYTHONTRACEMALLOC=1, builds N floats and N/2 (int, str) pairs (about 2N traces), stops
# itself, and gcore takes the core (in $COREHEAP_CACHE/bench). hyperfine then times, in
# the same run: `summary --by type` (walks and census), `summary --by lineno` (the same
# plus every trace recovered, grouped and typed by the census) and `info` (which recovers
# every trace to report tracemalloc's state). The issue's bound: recovering the traces
# costs no more than 2 x `summary --by type`.
set -euo pipefail
n=${1:-6000000}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${COREHEAP_CACHE:-$HOME/.cache/coreheap}/bench
mkdir -p "$cache"
core="$cache/trace-$n.core"
if [ ! -s "$core" ]; then
  rm -f "$cache/trace-ready"
  PYTHONTRACEMALLOC=1 /usr/bin/python3 - "$n" "$cache/trace-ready" <<'PY' &
import os, sys, signal, time
n = int(sys.argv[1])
floats = [i + 0.5 for i in range(n)]
pairs = [(i, "s%d" % i) for i in range(n // 2)]
open(sys.argv[2], "w").close()
os.kill(os.getpid(), signal.SIGSTOP)
time.sleep(3600)
PY
  pid=$!
  while [ ! -e "$cache/trace-ready" ]; do sleep 0.5; done
  sleep 0.5
  gcore -o "$cache/tgc" "$pid" >/dev/null 2>&1
  kill -9 "$pid" || true
  mv "$cache/tgc.$pid" "$core"
fi
ls -l "$core"
(cd "$here" && nice cargo build --release -q)
bin="$here/target/release/coreheap"
"$bin" info --quiet "$core" | grep tracemalloc
"$bin" summary --quiet --by lineno --top 4 "$core"
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
hyperfine -N --warmup 1 --runs 3 \
  "$bin summary --quiet --by type $core" \
  "$bin summary --quiet --by lineno $core" \
  "$bin info --quiet $core"
