/* mitruth.c: mimalloc's live blocks counted inside a free-threaded CPython, in C so that
 * nothing is allocated while counting (pyapp/mitruth.py loads it with ctypes.PyDLL and
 * calls mt_run() with no arguments as the very last step before the core).
 *
 * mt_params is filled by mitruth.py beforehand: the addresses of mimalloc's
 * mi_heap_visit_blocks and CPython's _mi_abandoned_pool_visit_blocks (hidden symbols of
 * the interpreter, CPython 3.13 Objects/mimalloc/heap.c and segment.c), every heap to
 * visit with its tag, the interpreter's abandoned pool and the output fd. The visitor is
 * mimalloc's mi_block_visit_fun: called once per page with block == NULL, then once per
 * allocated block with its usable size (the block size in release builds).
 * Output: one line "TAG SIZE COUNT" per heap tag and block size. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

typedef bool visit_fn(const void *heap, const void *area, void *block, size_t size, void *arg);
typedef bool heap_visit_fn(const void *heap, bool visit_blocks, visit_fn *v, void *arg);
typedef bool pool_visit_fn(void *pool, uint8_t tag, bool visit_blocks, visit_fn *v, void *arg);

#define NTAGS 4
#define SLOTS ((128 * 1024 >> 3) + 1)
#define NBIG 256
#define MAXHEAPS 4096

struct mt_params {
    heap_visit_fn *visit_heap;
    pool_visit_fn *visit_pool;
    void *pool;
    int64_t fd;
    uint64_t nheaps;
    uint64_t heaps[MAXHEAPS];
    uint64_t tags[MAXHEAPS];
};
struct mt_params mt_params;

static uint64_t counts[NTAGS][SLOTS];
static struct { uint64_t tag, size, n; } big[NBIG];
static size_t nbig;
static unsigned cur_tag;
static char out[1 << 20];

static bool visit(const void *heap, const void *area, void *block, size_t size, void *arg) {
    (void)heap; (void)area; (void)arg;
    if (block == NULL)
        return true;
    if ((size >> 3) < SLOTS && (size & 7) == 0) {
        counts[cur_tag][size >> 3]++;
        return true;
    }
    for (size_t i = 0; i < nbig; i++)
        if (big[i].tag == cur_tag && big[i].size == size) {
            big[i].n++;
            return true;
        }
    if (nbig < NBIG) {
        big[nbig].tag = cur_tag;
        big[nbig].size = size;
        big[nbig].n = 1;
        nbig++;
    }
    return true;
}

void mt_run(void) {
    struct mt_params *p = &mt_params;
    /* each call counts afresh (py_leak counts at two stages of one process) */
    for (unsigned t = 0; t < NTAGS; t++)
        for (size_t s = 0; s < SLOTS; s++)
            counts[t][s] = 0;
    nbig = 0;
    for (uint64_t i = 0; i < p->nheaps && i < MAXHEAPS; i++) {
        cur_tag = (unsigned)(p->tags[i] % NTAGS);
        p->visit_heap((const void *)p->heaps[i], true, visit, NULL);
    }
    if (p->visit_pool && p->pool)
        for (unsigned t = 0; t < NTAGS; t++) {
            cur_tag = t;
            p->visit_pool(p->pool, (uint8_t)t, true, visit, NULL);
        }
    size_t len = 0;
    for (unsigned t = 0; t < NTAGS; t++)
        for (size_t s = 0; s < SLOTS; s++)
            if (counts[t][s] && len + 64 < sizeof out)
                len += (size_t)snprintf(out + len, sizeof out - len, "%u %zu %llu\n", t, s << 3,
                                        (unsigned long long)counts[t][s]);
    for (size_t i = 0; i < nbig && len + 64 < sizeof out; i++)
        len += (size_t)snprintf(out + len, sizeof out - len, "%llu %llu %llu\n",
                                (unsigned long long)big[i].tag, (unsigned long long)big[i].size,
                                (unsigned long long)big[i].n);
    size_t done = 0;
    while (done < len) {
        ssize_t n = write((int)p->fd, out + done, len - done);
        if (n <= 0)
            break;
        done += (size_t)n;
    }
}
