#!/usr/bin/env bash
# `coreheap info` on a real core of a process with many file mappings (default 100 000):
# the join of PT_LOAD segments and NT_FILE entries, and the module table, must stay
# O(n log n). A C program maps one file at N page offsets with gaps (so the kernel cannot
# merge them), stops itself, and gcore dumps it; then hyperfine times `info` against
# `cat core > /dev/null` of the same file in the same run.
#   benches/manymaps.sh [N]
# The core goes to $COREHEAP_CACHE/bench (default ~/.cache/coreheap/bench), never the repo.
set -euo pipefail
n=${1:-100000}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${COREHEAP_CACHE:-$HOME/.cache/coreheap}/bench
mkdir -p "$cache"
core="$cache/maps-$n.core"
if [ ! -s "$core" ]; then
  command -v gcore >/dev/null || { apt-get update -qq && apt-get install -y -qq gdb; }
  # Every mapping counts against vm.max_map_count (65530 by default).
  want=$((2 * n + 1000)) # each page mapped inside the reservation splits it
  if [ "$(cat /proc/sys/vm/max_map_count)" -lt "$want" ]; then
    echo "$want" > /proc/sys/vm/max_map_count
  fi
  cat > "$cache/manymaps.c" <<'C'
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    /* One reservation, then a page of the file every second page of it. */
    char *base = mmap(NULL, (size_t)n * 8192, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) { perror("reserve"); return 1; }
    for (long i = 0; i < n; i++) {
        if (mmap(base + i * 8192, 4096, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, (i % 256) * 4096) == MAP_FAILED) {
            perror("mmap"); return 1;
        }
    }
    fclose(fopen(argv[3], "w"));
    kill(getpid(), SIGSTOP);
    sleep(3600);
    return 0;
}
C
  gcc -O1 -o "$cache/manymaps" "$cache/manymaps.c"
  head -c $((256 * 4096)) /dev/urandom > "$cache/manymaps.data"
  rm -f "$cache/ready" "$cache"/mm.*
  "$cache/manymaps" "$n" "$cache/manymaps.data" "$cache/ready" &
  pid=$!
  while [ ! -e "$cache/ready" ]; do sleep 0.2; done
  gcore -o "$cache/mm" "$pid" >/dev/null 2>&1
  kill -9 "$pid" || true
  mv "$cache/mm.$pid" "$core"
fi
ls -l "$core"
(cd "$here" && cargo build --release -q)
bin="$here/target/release/coreheap"
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
echo "mappings in the core: $("$bin" info --json --quiet "$core" | grep -c '"start"')"
hyperfine -N --warmup 1 --runs 5 "cat $core" "$bin info --quiet $core" "$bin info --json --quiet $core"
