#!/usr/bin/env bash
# Benchmark the CPython census on a real core with ~20 million objects: Debian's python3
# builds a list of 10M floats and 10M small tuples/strs, stops itself, and gcore takes the
# core (in $COREHEAP_CACHE/bench). hyperfine then times `summary` (pymalloc and glibc walks,
# typing every allocation) and `frag`.
set -euo pipefail
n=${1:-10000000}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${COREHEAP_CACHE:-$HOME/.cache/coreheap}/bench
mkdir -p "$cache"
core="$cache/py-$n.core"
if [ ! -s "$core" ]; then
  rm -f "$cache/py-ready"
  /usr/bin/python3 - "$n" "$cache/py-ready" <<'PY' &
import os, sys, signal, time
n = int(sys.argv[1])
floats = [i + 0.5 for i in range(n)]
pairs = [(i, "s%d" % i) for i in range(n // 2)]
open(sys.argv[2], "w").close()
os.kill(os.getpid(), signal.SIGSTOP)
time.sleep(3600)
PY
  pid=$!
  while [ ! -e "$cache/py-ready" ]; do sleep 0.5; done
  sleep 0.5
  gcore -o "$cache/gc" "$pid" >/dev/null 2>&1
  kill -9 "$pid" || true
  mv "$cache/gc.$pid" "$core"
fi
ls -l "$core"
(cd "$here" && cargo build --release -q)
bin="$here/target/release/coreheap"
"$bin" summary --top 6 "$core"
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
cp --reflink=auto "$core" "$cache/py-copy.core"
cat "$core" "$cache/py-copy.core" > /dev/null   # warm the page cache
hyperfine -N --warmup 1 --runs 3 --export-json "$cache/py20m.json" \
  "cat $core" "$bin summary --quiet $core" "$bin frag --quiet $core" \
  "$bin diff --quiet $core $cache/py-copy.core" "$bin summary --by owner --quiet $core" \
  "$bin diff --by owner --quiet $core $cache/py-copy.core"
python3 - "$cache/py20m.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base, summ = r[0]["mean"], r[1]["mean"]
for x in r:
    c = x["command"].replace(sys.argv[1].rsplit("/", 1)[0] + "/", "")
    print("%-70s %7.2f s  %5.2f x cat  %5.2f x summary" % (c[-70:], x["mean"], x["mean"] / base, x["mean"] / summ))
PY
# Maximum resident set (anonymous and file pages: the map of the core counts) of each.
for args in "summary" "summary --by owner"; do
  /usr/bin/time -f "max RSS of $args: %M KiB" "$bin" $args --quiet "$core" > /dev/null
done 2>&1 | grep "max RSS"
