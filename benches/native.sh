#!/usr/bin/env bash
# `coreheap leaks` against chap's `count leaked` on one 1.2 GB C core with ~9 M chunks.
#   benches/native.sh [CHAP_BINARY] [N]
# A C program mallocs N (default 9 000 000) nodes of 24..248 usable bytes (about 1.2 GB)
# into 1000 singly linked lists whose heads a static array holds; then it drops the head
# of every 10th list (a leaked chain: its head unreferenced, the rest referenced by leaked
# nodes) and leaks one node in 64 outright (unreferenced). It prints what it leaked,
# stops itself, and gcore takes the core (in $COREHEAP_CACHE/bench, never the repo).
# Both tools then run on the same core, one after the other, with their wall time and max
# RSS from /usr/bin/time. chap's source is public (vmware/chap, built with CMake); without
# a chap binary the comparison is skipped, and the script says so.
set -euo pipefail
chap=${1:-}
n=${2:-9000000}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${COREHEAP_CACHE:-$HOME/.cache/coreheap}/bench
mkdir -p "$cache"
core="$cache/native2-$n.core"
truth="$cache/native2-$n.truth"
if [ ! -s "$core" ] || [ ! -s "$truth" ]; then
  command -v gcore >/dev/null || { apt-get update -qq && apt-get install -y -qq gdb; }
  cat > "$cache/native.c" <<'C'
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define LISTS 1000
struct node { struct node *next; long serial; char payload[]; };
static struct node *heads[LISTS];
/* In a function of its own: when it returns, its frame is below the stack pointer and the
 * callee-saved registers are main's again, so no stale copy of a leaked pointer anchors it. */
__attribute__((noinline)) static void build(long n, long *leaked, long *unref) {
    struct node *tails[LISTS] = {0};
    for (long i = 0; i < n; i++) {
        size_t usable = 24 + 16 * (size_t)(i % 15);      /* 24..248 */
        struct node *x = malloc(usable);
        x->next = NULL;
        x->serial = i;
        memset(x->payload, 'a' + i % 26, usable - sizeof *x);
        if (i % 64 == 63) { ++*leaked; ++*unref; continue; } /* dropped: nothing points to it */
        int l = (int)(i % LISTS);
        if (tails[l]) tails[l]->next = x; else heads[l] = x;
        tails[l] = x;
    }
    for (int l = 0; l < LISTS; l += 10) {                 /* leaked chains */
        for (struct node *x = heads[l]; x; x = x->next) ++*leaked;
        if (heads[l]) ++*unref;
        heads[l] = NULL;
    }
    memset(tails, 0, sizeof tails);
}
int main(int argc, char **argv) {
    long n = atol(argv[1]), leaked = 0, unref = 0;
    build(n, &leaked, &unref);
    fprintf(stderr, "leaked %ld unreferenced %ld\n", leaked, unref);
    fprintf(stderr, "ready\n");
    raise(SIGSTOP);
    return 0;
}
C
  gcc -O1 -o "$cache/native" "$cache/native.c"
  rm -f "$cache/native.log"
  "$cache/native" "$n" 2> "$cache/native.log" &
  pid=$!
  until grep -q ready "$cache/native.log" 2>/dev/null; do sleep 0.5; done
  sleep 0.2
  gcore -o "$cache/nat" "$pid" >/dev/null 2>&1
  kill -9 "$pid" || true
  mv "$cache/nat.$pid" "$core"
  grep leaked "$cache/native.log" > "$truth"
fi
ls -l "$core"
echo "the process says: $(cat "$truth")"
(cd "$here" && cargo build --release -q)
bin="$here/target/release/coreheap"
measure() { # label, command...: wall seconds and max RSS of one run
  local label=$1
  shift
  /usr/bin/time -f "$label: %e s wall, %M KiB max RSS" "$@"
}
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time; }
cat "$core" > /dev/null # the page cache holds the core for both tools
measure "coreheap leaks" "$bin" leaks --quiet "$core" > "$cache/native-coreheap.txt"
head -3 "$cache/native-coreheap.txt"
if [ -z "$chap" ]; then
  echo "no chap binary given (benches/native.sh CHAP_BINARY): the comparison with chap is skipped"
  exit 0
fi
if [ ! -x "$chap" ]; then
  echo "$chap is not an executable: the comparison with chap is skipped"
  exit 0
fi
# chap reads its commands from standard input when it is not a terminal.
printf 'count leaked\ncount unreferenced\n' > "$cache/native-chap.cmds"
measure "chap count leaked" "$chap" "$core" < "$cache/native-chap.cmds" > "$cache/native-chap.txt" 2>&1
grep -E "allocations|^chap count" "$cache/native-chap.txt"
