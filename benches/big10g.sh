#!/usr/bin/env bash
# The 10 GB scale benchmark (issue 15): a gcore core of Debian's python3 holding about
# 150 M objects (SCALE 1.0) — floats, (int, str) tuples, instances of a __slots__ class and
# two-key dicts — then, in one run: `cat core > /dev/null` (the page-cache read every analysis
# must do once), `summary --by type` (ratio to the read), and `summary --by owner` (wall time
# and maximum resident set as a share of the core).
#   benches/big10g.sh [SCALE]      (0.1 makes a ~1 GB core for a quick look)
# Needs RAM for the process (about the core's size) and twice the core's size on disk; the
# core goes to $COREHEAP_CACHE/bench (default ~/.cache/coreheap/bench), never the repo.
set -euo pipefail
scale=${1:-1.0}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${COREHEAP_CACHE:-$HOME/.cache/coreheap}/bench
mkdir -p "$cache"
core="$cache/big-$scale.core"
if [ ! -s "$core" ]; then
  command -v gcore >/dev/null || { apt-get update -qq && apt-get install -y -qq gdb; }
  rm -f "$cache/big-ready"
  /usr/bin/python3 - "$scale" "$cache/big-ready" <<'PY' &
import os, sys, signal, time
k = float(sys.argv[1])
class Slot:
    __slots__ = ("a", "b")
    def __init__(self, i):
        self.a = i; self.b = None
floats = [i + 0.5 for i in range(int(50_000_000 * k))]
pairs = [(i, "s%d" % i) for i in range(int(25_000_000 * k))]
slots = [Slot(i) for i in range(int(20_000_000 * k))]
dicts = [{"id": i, "v": None} for i in range(int(5_000_000 * k))]
open(sys.argv[2], "w").close()
os.kill(os.getpid(), signal.SIGSTOP)
time.sleep(3600)
PY
  pid=$!
  while [ ! -e "$cache/big-ready" ]; do sleep 1; done
  sleep 1
  gcore -o "$cache/gcb" "$pid" >/dev/null 2>&1
  kill -9 "$pid" || true
  mv "$cache/gcb.$pid" "$core"
fi
ls -l "$core"
(cd "$here" && cargo build --release -q)
bin="$here/target/release/coreheap"
size=$(stat -c %s "$core")
t() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
cat "$core" > /dev/null
tc=$(t cat "$core")
ts=$(t "$bin" summary --quiet "$core")
echo "cat: $tc s; summary --by type: $ts s = $(echo "scale=2; $ts / $tc" | bc) x cat"
/usr/bin/time -f "%e %M" -o "$cache/big-owner.time" "$bin" summary --by owner --top 5 --quiet "$core"
read -r to kb < "$cache/big-owner.time"
echo "summary --by owner: $to s = $(echo "scale=2; $to / $ts" | bc) x summary; max RSS $((kb / 1024)) MiB = $(python3 -c "print('%.1f' % ($kb * 1024 * 100 / $size))") % of the core"
