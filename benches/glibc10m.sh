#!/usr/bin/env bash
# Benchmark the glibc walker on a real core with ~10 million chunks: a C program mallocs
# 10M small blocks (every 16th freed, so the free lists are busy too), stops itself, and
# gcore takes the core (in $COREHEAP_CACHE/bench). Then hyperfine times `frag` and
# `summary --by size`, which walk every chunk.
set -euo pipefail
n=${1:-10000000}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${COREHEAP_CACHE:-$HOME/.cache/coreheap}/bench
mkdir -p "$cache"
core="$cache/glibc-$n.core"
if [ ! -s "$core" ]; then
  cat > "$cache/many.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    void **v = malloc(n * sizeof *v);
    for (long i = 0; i < n; i++) v[i] = malloc(16 + (i % 4) * 16);
    for (long i = 0; i < n; i += 16) { free(v[i]); v[i] = 0; }
    fprintf(stderr, "ready\n");
    raise(SIGSTOP);
    return 0;
}
C
  gcc -O1 -o "$cache/many" "$cache/many.c"
  "$cache/many" "$n" 2> "$cache/many.log" &
  pid=$!
  until grep -q ready "$cache/many.log" 2>/dev/null; do sleep 0.2; done
  sleep 0.2
  gcore -o "$cache/gc" "$pid" >/dev/null 2>&1
  kill -9 "$pid" || true
  mv "$cache/gc.$pid" "$core"
fi
ls -l "$core"
(cd "$here" && cargo build --release -q)
bin="$here/target/release/coreheap"
"$bin" frag "$core" | head -4
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
hyperfine -N --warmup 1 --runs 5 "$bin frag --quiet $core" "$bin summary --by size --quiet $core"
