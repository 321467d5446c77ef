#!/usr/bin/env bash
# The census on a realistic mixed workload (issue 16): a ~1.2 GB gcore core of Debian's
# python3 holding ~16.6 M objects — 3 M instances of a __slots__ class, 3 M short str,
# 1.5 M two-key dicts, 1 M instances of a plain class (managed dicts / inline values), 100 k
# bytes objects of 1.5 KB. In one run it times `cat core > /dev/null` (the page-cache read
# every analysis must do at least once) and `summary`, `frag`, `diff` of the same core,
# prints each as a ratio to the read, and samples the peak anonymous memory (RssAnon) of
# `summary` as a share of the core's size.
#   benches/mixed.sh [SCALE]     (SCALE 1.0 = the populations above)
# The core goes to $COREHEAP_CACHE/bench (default ~/.cache/coreheap/bench), never the repo.
set -euo pipefail
scale=${1:-1.0}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${COREHEAP_CACHE:-$HOME/.cache/coreheap}/bench
mkdir -p "$cache"
core="$cache/mixed-$scale.core"
if [ ! -s "$core" ]; then
  command -v gcore >/dev/null || { apt-get update -qq && apt-get install -y -qq gdb; }
  rm -f "$cache/mixed-ready"
  /usr/bin/python3 - "$scale" "$cache/mixed-ready" <<'PY' &
import os, sys, signal, time
k = float(sys.argv[1])
class Slotted:
    __slots__ = ("a", "b", "c")
    def __init__(self, i):
        self.a = i; self.b = None; self.c = 1.5
class Plain:
    def __init__(self, i):
        self.x = i; self.y = "p"
slotted = [Slotted(i) for i in range(int(3_000_000 * k))]
strs = ["s%07d" % i for i in range(int(3_000_000 * k))]
dicts = [{"id": i, "v": None} for i in range(int(1_500_000 * k))]
plain = [Plain(i) for i in range(int(1_000_000 * k))]
blobs = [bytes([i % 251]) * 1500 for i in range(int(100_000 * k))]
open(sys.argv[2], "w").close()
os.kill(os.getpid(), signal.SIGSTOP)
time.sleep(3600)
PY
  pid=$!
  while [ ! -e "$cache/mixed-ready" ]; do sleep 0.5; done
  sleep 0.5
  gcore -o "$cache/gcm" "$pid" >/dev/null 2>&1
  kill -9 "$pid" || true
  mv "$cache/gcm.$pid" "$core"
fi
ls -l "$core"
(cd "$here" && cargo build --release -q)
bin="$here/target/release/coreheap"
size=$(stat -c %s "$core")

# Peak RssAnon of one run, sampled every 20 ms from /proc.
peak_anon() {
  "$@" >/dev/null 2>&1 &
  local pid=$! peak=0 v
  while kill -0 "$pid" 2>/dev/null; do
    v=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
    sleep 0.02
  done
  wait "$pid" || true
  echo "$peak"
}
cat "$core" > /dev/null   # warm the page cache
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
cp --reflink=auto "$core" "$cache/mixed-copy.core"
hyperfine -N --warmup 1 --runs 3 --export-json "$cache/mixed.json" \
  "cat $core" "$bin summary --quiet $core" "$bin frag --quiet $core" \
  "$bin diff --quiet $core $cache/mixed-copy.core"
python3 - "$cache/mixed.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base, summ = r[0]["mean"], r[1]["mean"]
for x in r:
    print("%-60s %7.2f s  %5.2f x cat  %5.2f x summary" % (x["command"][-60:], x["mean"], x["mean"] / base, x["mean"] / summ))
PY
/usr/bin/time -f "summary max RSS (anonymous and file pages): %M KiB" "$bin" summary --quiet "$core" 2>&1 >/dev/null | grep "max RSS"
kb=$(peak_anon "$bin" summary --quiet "$core")
echo "summary peak RssAnon: $((kb / 1024)) MiB = $(python3 -c "print('%.1f' % ($kb * 1024 * 100 / $size))") % of the core ($((size >> 20)) MiB)"
"$bin" summary --top 8 --quiet "$core"
