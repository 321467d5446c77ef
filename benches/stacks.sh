#!/usr/bin/env bash
# Benchmark `stacks` on a ~2 GB core: Debian's python3 with 4 threads at rest and 1.9 GB of
# bytes objects stops itself and gcore takes the core (in $COREHEAP_CACHE/bench). `stacks`
# must not walk the heap: it is timed against `cat core > /dev/null` (reading the core once
# from the page cache) and the ratio printed. Usage: benches/stacks.sh [MiB]
set -euo pipefail
mib=${1:-1900}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${COREHEAP_CACHE:-$HOME/.cache/coreheap}/bench
mkdir -p "$cache"
core="$cache/stacks-$mib.core"
if [ ! -s "$core" ]; then
  rm -f "$cache/stacks-ready"
  /usr/bin/python3 - "$mib" "$cache/stacks-ready" <<'PY' &
import os, sys, signal, threading, time
mib = int(sys.argv[1])
blobs = [bytes([i % 251]) * (1 << 20) for i in range(mib)]
ev = threading.Event()
def deep(n):
    return deep(n - 1) if n else ev.wait()
for i in range(4):
    threading.Thread(target=deep, args=(20 * i,), daemon=True).start()
time.sleep(0.5)
open(sys.argv[2], "w").close()
os.kill(os.getpid(), signal.SIGSTOP)
time.sleep(3600)
PY
  pid=$!
  while [ ! -e "$cache/stacks-ready" ]; do sleep 0.5; done
  sleep 0.5
  gcore -o "$cache/gs" "$pid" >/dev/null 2>&1
  kill -9 "$pid" || true
  mv "$cache/gs.$pid" "$core"
fi
ls -l "$core"
(cd "$here" && cargo build --release -q)
bin="$here/target/release/coreheap"
"$bin" stacks --quiet "$core" | head -12
cat "$core" > /dev/null  # warm the page cache
t() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
best() { local b=999 x; for _ in 1 2 3 4 5; do x=$(t "$@"); b=$(echo "if ($x < $b) $x else $b" | bc); done; echo "$b"; }
cat_s=$(best sh -c "cat '$core' > /dev/null")
py_s=$(best "$bin" stacks --quiet "$core")
nat_s=$(best "$bin" stacks --quiet --native "$core")
loc_s=$(best "$bin" stacks --quiet --native --locals --json "$core")
printf 'cat core > /dev/null            %6.3f s\n' "$cat_s"
printf 'stacks                          %6.3f s  (%.2fx cat)\n' "$py_s" "$(echo "$py_s / $cat_s" | bc -l)"
printf 'stacks --native                 %6.3f s  (%.2fx cat)\n' "$nat_s" "$(echo "$nat_s / $cat_s" | bc -l)"
printf 'stacks --native --locals --json %6.3f s  (%.2fx cat)\n' "$loc_s" "$(echo "$loc_s / $cat_s" | bc -l)"
