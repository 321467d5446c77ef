/*
 * c_heap.c -- glibc malloc ground-truth scenario for coreheap.
 *
 * Build (inside each environment, with that environment's gcc):
 *     gcc -O1 -g0 -pthread -o c_heap c_heap.c
 * Run:
 *     c_heap gcore     # writes truth, then raise(SIGSTOP): the generator gcores + SIGKILLs it
 *     c_heap kernel    # writes truth, then worker thread 2 calls abort(): kernel core, SIGABRT
 *
 * Files written into the current directory: truth.json, malloc_info.xml.
 *
 * Design (see corpora/README.md for the full description):
 *   - mallopt(M_ARENA_MAX, 3), main + 5 worker threads, run strictly one after
 *     another so the arena assignment is deterministic (main+t3 share the main
 *     arena, t1+t5 and t2+t4 share the two extra arenas).  The program does not
 *     assume this: every thread reads its arena from its own chunk headers.
 *   - every thread k (0 = main) allocates chunk sizes unique to k (see the
 *     SIZE_* macros), with every freed chunk followed by a live guard chunk so
 *     nothing coalesces.
 *   - every free() is classified by comparing mallinfo before/after it
 *     (smblks+1: fastbin; ordblks+1 and fordblks+chunk: a bin; unchanged:
 *     tcache).  So the truth is observed, not assumed (glibc 2.43 has no
 *     fastbins and 16 tcache slots per bin; older glibc has 7 and fastbins).
 *   - phase A (each thread in turn): every allocation.  Phase B (each thread
 *     in turn, after all of phase A): frees, then a big "sorter" malloc that
 *     moves every chunk of the unsorted bin into its small/large bin.
 *     Phase C: only frees, so those chunks stay in the unsorted bin (and
 *     small ones beyond the tcache limit go to fastbins).
 *   - the truth files are fopen()ed first and set to static buffers; nothing
 *     calls malloc/free after the mallinfo snapshot.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <gnu/libc-version.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __GLIBC_PREREQ
#define __GLIBC_PREREQ(a, b) 0
#endif

#if __GLIBC_PREREQ(2, 33)
typedef struct mallinfo2 mi_t;
#define MI() mallinfo2()
#define MALLINFO_KIND "mallinfo2"
#else
typedef struct mallinfo mi_t;
#define MI() mallinfo()
#define MALLINFO_KIND "mallinfo"
#endif

#define NWORKERS 5
#define NTHREADS (NWORKERS + 1)
#define ARENA_MAX 3
#define ABORT_THREAD 2 /* worker index that calls abort() in kernel mode */
#define HEAP_MAX_SIZE_64 (64UL * 1024 * 1024)

/* chunk sizes, thread k = 0 (main) .. 5 */
#define SIZE_PLAIN(k) (0x90 + 0x10 * (k))    /* 0x90..0xe0   live only */
#define SIZE_GUARD(k) (0x1b0 + 0x20 * (k))   /* 0x1b0..0x250 live guards */
#define SIZE_TCACHE(k) (0x310 + 0x20 * (k))  /* 0x310..0x3b0 1+k freed -> tcache */
#define SIZE_SMALL(k) (0x2a0 + 0x10 * (k))   /* 0x2a0..0x2f0 tcache full, then small/unsorted (not 0x120, a new thread's DTV in the main arena; not 0x250/0x290/0x300, the tcache structs) */
#define SIZE_LARGE1(k) (0x500 + 0x40 * (k))  /* 0x500..0x640 large/unsorted */
#define SIZE_LARGE2(k) (0x2000 + 0x100 * (k)) /* 0x2000..0x2500 large/unsorted */
#define SIZE_FAST(k) (0x30 + 0x10 * (k))     /* 0x30..0x80   tcache full, then fastbins */
#define SIZE_SORTER(k) (0x6000 + 0x100 * (k)) /* 0x6000..0x6500 live, triggers bin sorting */

#define N_PLAIN(k) (101 + 2 * (k))
#define N_TCACHE(k) (1 + (k))
#define N_SMALL 37
#define N_SMALL_FREE1 21 /* phase 1 */
#define N_SMALL_FREE2 5  /* phase 2 */
#define N_LARGE1 15
#define N_LARGE1_FREE1 5
#define N_LARGE1_FREE2 3
#define N_LARGE2 9
#define N_LARGE2_FREE1 3
#define N_LARGE2_FREE2 1
#define N_FAST 25 /* all freed in phase 2 */
#define N_SORTER 3
#define MAXN 256

struct entry {
    const char *role;
    size_t chunk_size;
    long count;
    const char *bin; /* for bin_freed: small / large / unsorted */
};

struct sample {
    const char *role;
    size_t chunk_size;
    uintptr_t chunk_addr;
};

#define MAXE 16
struct trec {
    int index;
    long tid;
    char arena[32];
    struct entry live[MAXE];
    int nlive;
    struct entry tcache[MAXE];
    int ntcache;
    struct entry fast[MAXE];
    int nfast;
    struct entry bins[MAXE];
    int nbins;
    struct entry mm[MAXE];
    int nmm;
    struct sample samples[MAXE];
    int nsamples;
    /* pointers kept between phases */
    void *plain[MAXN], *guard[MAXN], *tc[MAXN], *small[MAXN], *large1[MAXN], *large2[MAXN],
        *fast_[MAXN], *sorter[MAXN], *mmp[8];
    int nguard;
};

static struct trec T[NTHREADS];
static pthread_t threads[NTHREADS];
static sem_t sem_done;
static sem_t sem_go2[NTHREADS];
static int pipes[NTHREADS][2];
static const char *mode;

static char truth_buf[1 << 20];
static char mi_buf[1 << 20];
static FILE *f_truth, *f_mi;
static char exe_path[4096];

static void die(const char *msg, size_t a, size_t b)
{
    /* no stdio (it may allocate); write + _exit */
    char buf[512];
    int n = snprintf(buf, sizeof buf, "c_heap: FATAL: %s (0x%zx, 0x%zx)\n", msg, a, b);
    if (write(2, buf, (size_t)n) < 0) {
    }
    _exit(3);
}

static long my_tid(void) { return (long)syscall(SYS_gettid); }

/* the chunk header word just below the user pointer (gcc -Wall cannot know malloc initialises it) */
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
static size_t hdr_size(void *p) { return ((const volatile size_t *)p)[-1]; }

/* malloc a chunk of exactly `chunk` bytes and verify it */
static void *xalloc(size_t chunk)
{
    size_t req = chunk - 8;
    void *p = malloc(req);
    if (!p)
        die("malloc failed", chunk, 0);
    size_t h = hdr_size(p);
    if (h & 2) { /* mmapped */
        if ((h & ~(size_t)7) != malloc_usable_size(p) + 16)
            die("mmapped chunk size mismatch", h, malloc_usable_size(p));
    } else {
        if (malloc_usable_size(p) + 8 != chunk)
            die("chunk size mismatch (usable+8)", chunk, malloc_usable_size(p));
        if ((h & ~(size_t)7) != chunk)
            die("chunk size mismatch (header)", chunk, h);
    }
    memset(p, 0x40 + (int)(chunk >> 4 & 0x3f), req < 64 ? req : 64);
    return p;
}

static void add(struct entry *arr, int *n, const char *role, size_t cs, long count, const char *bin)
{
    if (count == 0)
        return;
    for (int i = 0; i < *n; i++)
        if (arr[i].chunk_size == cs && arr[i].role == role && arr[i].bin == bin) {
            arr[i].count += count;
            return;
        }
    if (*n >= MAXE)
        die("too many entries", cs, 0);
    arr[*n].role = role;
    arr[*n].chunk_size = cs;
    arr[*n].count = count;
    arr[*n].bin = bin;
    (*n)++;
}

static void sample(struct trec *t, const char *role, void *p)
{
    if (t->nsamples >= MAXE)
        return;
    t->samples[t->nsamples].role = role;
    t->samples[t->nsamples].chunk_size = hdr_size(p) & ~(size_t)7;
    t->samples[t->nsamples].chunk_addr = (uintptr_t)p - 16;
    t->nsamples++;
}

/* allocate n chunks, each followed by a live guard chunk */
static void alloc_guarded(struct trec *t, void **dst, int n, size_t cs)
{
    for (int i = 0; i < n; i++) {
        dst[i] = xalloc(cs);
        t->guard[t->nguard++] = xalloc(SIZE_GUARD(t->index));
        if (t->nguard >= MAXN)
            die("too many guards", 0, 0);
    }
}

/* free p and classify where it went by the mallinfo delta.
   bin_name: the bin a chunk that lands in the unsorted bin will be in at
   core time ("small"/"large" if a sorter malloc follows, else "unsorted"). */
static void free_classified(struct trec *t, const char *role, void *p, size_t cs, const char *bin_name)
{
    mi_t a = MI();
    free(p);
    mi_t b = MI();
    if (b.smblks == a.smblks + 1 && b.ordblks == a.ordblks && (size_t)(b.fsmblks - a.fsmblks) == cs) {
        add(t->fast, &t->nfast, role, cs, 1, NULL);
    } else if (b.ordblks == a.ordblks + 1 && b.smblks == a.smblks &&
               (size_t)(b.fordblks - a.fordblks) == cs) {
        add(t->bins, &t->nbins, role, cs, 1, bin_name);
    } else if (b.ordblks == a.ordblks && b.smblks == a.smblks && b.fordblks == a.fordblks &&
               b.uordblks == a.uordblks) {
        add(t->tcache, &t->ntcache, role, cs, 1, NULL);
    } else {
        die("free() did something unexpected (coalesced?)", cs, (size_t)(b.fordblks - a.fordblks));
    }
}

static const char *sorted_bin(size_t cs) { return cs < 0x400 ? "small" : "large"; }

/* phase A: every allocation of thread k (all threads do phase A before
   anybody frees, so no allocation can be carved out of a freed chunk) */
static void phaseA(int k)
{
    struct trec *t = &T[k];
    t->index = k;
    t->tid = my_tid();

    for (int i = 0; i < N_PLAIN(k); i++)
        t->plain[i] = xalloc(SIZE_PLAIN(k));
    sample(t, "plain", t->plain[0]);
    sample(t, "plain", t->plain[N_PLAIN(k) - 1]);

    /* arena from the chunk header of the first plain chunk */
    size_t h = hdr_size(t->plain[0]);
    if (h & 4) {
        uintptr_t heap = (uintptr_t)t->plain[0] & ~(uintptr_t)(HEAP_MAX_SIZE_64 - 1);
        snprintf(t->arena, sizeof t->arena, "0x%lx", (unsigned long)*(uintptr_t *)heap);
    } else {
        snprintf(t->arena, sizeof t->arena, "main");
    }

    alloc_guarded(t, t->tc, N_TCACHE(k), SIZE_TCACHE(k));
    alloc_guarded(t, t->small, N_SMALL, SIZE_SMALL(k));
    alloc_guarded(t, t->large1, N_LARGE1, SIZE_LARGE1(k));
    alloc_guarded(t, t->large2, N_LARGE2, SIZE_LARGE2(k));
    alloc_guarded(t, t->fast_, N_FAST, SIZE_FAST(k));
    sample(t, "guard", t->guard[0]);

    /* mmapped chunks: never freed (freeing one raises the mmap threshold) */
    int nmm = k == 0 ? 3 : 1;
    for (int i = 0; i < nmm; i++) {
        size_t req = (1u << 20) + (k == 0 ? 0x3000 * (size_t)i : 0x10000 * (size_t)k) + 100;
        void *p = malloc(req);
        if (!p)
            die("mmap malloc failed", req, 0);
        size_t hs = hdr_size(p);
        if (!(hs & 2))
            die("large chunk not mmapped", req, hs);
        memset(p, 0x6d, 64);
        t->mmp[i] = p;
        add(t->mm, &t->nmm, "mmapped", hs & ~(size_t)7, 1, NULL);
        sample(t, "mmapped", p);
    }

    /* Warm-up free, still in phase A: glibc 2.43 allocates the thread's
       tcache on its first free() (older glibc on the first malloc()); doing
       it now takes it from the top chunk, not from some chunk another
       thread freed.  The chunk stays in the tcache (counted there). */
    mi_t a = MI();
    free(t->tc[0]);
    mi_t b = MI();
    if (b.ordblks != a.ordblks || b.smblks != a.smblks)
        die("warm-up free did not go to the tcache", SIZE_TCACHE(k), 0);
    add(t->tcache, &t->ntcache, "tcache", SIZE_TCACHE(k), 1, NULL);
}

/* phase B: first frees, then a "sorter" malloc that moves the unsorted
   chunks into small/large bins */
static void phaseB(int k)
{
    struct trec *t = &T[k];
    for (int i = 1; i < N_TCACHE(k); i++) /* tc[0] was the warm-up free */
        free_classified(t, "tcache", t->tc[i], SIZE_TCACHE(k), "unsorted");
    for (int i = 0; i < N_SMALL_FREE1; i++)
        free_classified(t, "small", t->small[i], SIZE_SMALL(k), sorted_bin(SIZE_SMALL(k)));
    for (int i = 0; i < N_LARGE1_FREE1; i++)
        free_classified(t, "large1", t->large1[i], SIZE_LARGE1(k), sorted_bin(SIZE_LARGE1(k)));
    for (int i = 0; i < N_LARGE2_FREE1; i++)
        free_classified(t, "large2", t->large2[i], SIZE_LARGE2(k), sorted_bin(SIZE_LARGE2(k)));

    /* a request larger than any free chunk: sorts the unsorted bin into
       small/large bins and is served from the top chunk */
    mi_t a = MI();
    for (int i = 0; i < N_SORTER; i++)
        t->sorter[i] = xalloc(SIZE_SORTER(k));
    mi_t b = MI();
    /* fordblks includes the top chunk, so only ordblks must be unchanged */
    if (a.ordblks != b.ordblks)
        die("sorter malloc consumed a free chunk", (size_t)a.ordblks, (size_t)b.ordblks);
    sample(t, "sorter", t->sorter[0]);
}

/* phase C: only frees; they stay in the unsorted bin / fastbins / tcache */
static void phaseC(int k)
{
    struct trec *t = &T[k];
    for (int i = N_SMALL_FREE1; i < N_SMALL_FREE1 + N_SMALL_FREE2; i++)
        free_classified(t, "small", t->small[i], SIZE_SMALL(k), "unsorted");
    for (int i = N_LARGE1_FREE1; i < N_LARGE1_FREE1 + N_LARGE1_FREE2; i++)
        free_classified(t, "large1", t->large1[i], SIZE_LARGE1(k), "unsorted");
    for (int i = N_LARGE2_FREE1; i < N_LARGE2_FREE1 + N_LARGE2_FREE2; i++)
        free_classified(t, "large2", t->large2[i], SIZE_LARGE2(k), "unsorted");
    for (int i = 0; i < N_FAST; i++)
        free_classified(t, "fast", t->fast_[i], SIZE_FAST(k), "unsorted");

    /* live set */
    add(t->live, &t->nlive, "plain", SIZE_PLAIN(k), N_PLAIN(k), NULL);
    add(t->live, &t->nlive, "guard", SIZE_GUARD(k), t->nguard, NULL);
    add(t->live, &t->nlive, "small", SIZE_SMALL(k), N_SMALL - N_SMALL_FREE1 - N_SMALL_FREE2, NULL);
    add(t->live, &t->nlive, "large1", SIZE_LARGE1(k), N_LARGE1 - N_LARGE1_FREE1 - N_LARGE1_FREE2, NULL);
    add(t->live, &t->nlive, "large2", SIZE_LARGE2(k), N_LARGE2 - N_LARGE2_FREE1 - N_LARGE2_FREE2, NULL);
    add(t->live, &t->nlive, "sorter", SIZE_SORTER(k), N_SORTER, NULL);
}

static void *worker(void *arg)
{
    int k = (int)(intptr_t)arg;
    phaseA(k);
    sem_post(&sem_done);
    while (sem_wait(&sem_go2[k]) != 0) {
    }
    phaseB(k);
    sem_post(&sem_done);
    while (sem_wait(&sem_go2[k]) != 0) {
    }
    phaseC(k);
    sem_post(&sem_done);
    for (;;) {
        char c = 0;
        ssize_t r = read(pipes[k][0], &c, 1);
        if (r == 1 && c == 'a')
            abort();
        if (r == 0)
            pause();
    }
    return NULL;
}

static void put_entries(const char *name, struct entry *e, int n, int with_bin)
{
    fprintf(f_truth, "\"%s\": [", name);
    for (int i = 0; i < n; i++) {
        fprintf(f_truth, "%s{\"chunk_size\": %zu, \"count\": %ld, \"role\": \"%s\"", i ? ", " : "",
                e[i].chunk_size, e[i].count, e[i].role);
        if (with_bin)
            fprintf(f_truth, ", \"bin\": \"%s\"", e[i].bin);
        fprintf(f_truth, "}");
    }
    fprintf(f_truth, "]");
}

static void write_truth(void)
{
    mi_t m = MI(); /* snapshot first: nothing below allocates */
    malloc_info(0, f_mi);
    fflush(f_mi);

    int kernel = strcmp(mode, "kernel") == 0;
    FILE *f = f_truth;
    fprintf(f, "{\n\"scenario\": \"c_heap\",\n\"mode\": \"%s\",\n", mode);
    fprintf(f, "\"pid\": %ld,\n\"tids\": [", (long)getpid());
    for (int k = 0; k < NTHREADS; k++)
        fprintf(f, "%s%ld", k ? ", " : "", T[k].tid);
    fprintf(f, "],\n\"exe\": \"%s\",\n", exe_path);
    if (kernel)
        fprintf(f, "\"signal\": 6,\n\"signal_tid\": %ld,\n", T[ABORT_THREAD].tid);
    else
        fprintf(f, "\"signal\": null,\n\"signal_tid\": null,\n");
    fprintf(f, "\"glibc_version\": \"%s\",\n\"python_version\": null,\n", gnu_get_libc_version());
    fprintf(f, "\"arena_max\": %d,\n\"heap_max_size\": %lu,\n", ARENA_MAX, HEAP_MAX_SIZE_64);
    fprintf(f, "\"mallinfo_kind\": \"%s\",\n", MALLINFO_KIND);
    fprintf(f,
            "\"mallinfo\": {\"arena\": %zu, \"ordblks\": %zu, \"smblks\": %zu, \"hblks\": %zu, "
            "\"hblkhd\": %zu, \"usmblks\": %zu, \"fsmblks\": %zu, \"uordblks\": %zu, "
            "\"fordblks\": %zu, \"keepcost\": %zu},\n",
            (size_t)m.arena, (size_t)m.ordblks, (size_t)m.smblks, (size_t)m.hblks, (size_t)m.hblkhd,
            (size_t)m.usmblks, (size_t)m.fsmblks, (size_t)m.uordblks, (size_t)m.fordblks,
            (size_t)m.keepcost);
    /* tcache limit as observed on the main thread's "small" size */
    long tc_limit = 0;
    for (int i = 0; i < T[0].ntcache; i++)
        if (strcmp(T[0].tcache[i].role, "small") == 0)
            tc_limit = T[0].tcache[i].count;
    fprintf(f, "\"tcache_count_observed\": %ld,\n", tc_limit);
    long nfast = 0;
    for (int k = 0; k < NTHREADS; k++)
        for (int i = 0; i < T[k].nfast; i++)
            nfast += T[k].fast[i].count;
    fprintf(f, "\"has_fastbins\": %s,\n", nfast > 0 ? "true" : "false");

    fprintf(f, "\"arenas\": [");
    int first = 1;
    for (int k = 0; k < NTHREADS; k++) {
        int seen = 0;
        for (int j = 0; j < k; j++)
            if (strcmp(T[j].arena, T[k].arena) == 0)
                seen = 1;
        if (seen)
            continue;
        fprintf(f, "%s{\"arena\": \"%s\", \"threads\": [", first ? "" : ", ", T[k].arena);
        first = 0;
        int f2 = 1;
        for (int j = k; j < NTHREADS; j++)
            if (strcmp(T[j].arena, T[k].arena) == 0) {
                fprintf(f, "%s%d", f2 ? "" : ", ", j);
                f2 = 0;
            }
        fprintf(f, "]}");
    }
    fprintf(f, "],\n\"threads\": [\n");
    for (int k = 0; k < NTHREADS; k++) {
        struct trec *t = &T[k];
        fprintf(f, "  {\"index\": %d, \"tid\": %ld, \"arena\": \"%s\",\n   ", k, t->tid, t->arena);
        put_entries("live", t->live, t->nlive, 0);
        fprintf(f, ",\n   ");
        put_entries("tcache", t->tcache, t->ntcache, 0);
        fprintf(f, ",\n   ");
        put_entries("fastbin_freed", t->fast, t->nfast, 0);
        fprintf(f, ",\n   ");
        put_entries("bin_freed", t->bins, t->nbins, 1);
        fprintf(f, ",\n   ");
        put_entries("mmapped", t->mm, t->nmm, 0);
        fprintf(f, ",\n   \"samples\": [");
        for (int i = 0; i < t->nsamples; i++)
            fprintf(f, "%s{\"role\": \"%s\", \"chunk_size\": %zu, \"chunk_addr\": \"0x%lx\"}",
                    i ? ", " : "", t->samples[i].role, t->samples[i].chunk_size,
                    (unsigned long)t->samples[i].chunk_addr);
        fprintf(f, "]}%s\n", k + 1 < NTHREADS ? "," : "");
    }
    fprintf(f, "],\n\"mmapped\": [");
    /* aggregate mmapped over threads */
    struct entry agg[MAXE * NTHREADS];
    int nagg = 0;
    for (int k = 0; k < NTHREADS; k++)
        for (int i = 0; i < T[k].nmm; i++)
            add(agg, &nagg, "mmapped", T[k].mm[i].chunk_size, T[k].mm[i].count, NULL);
    for (int i = 0; i < nagg; i++)
        fprintf(f, "%s{\"chunk_size\": %zu, \"count\": %ld}", i ? ", " : "", agg[i].chunk_size,
                agg[i].count);
    fprintf(f, "]\n}\n");
    fflush(f); /* no fclose: it would free() */
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "gcore") != 0 && strcmp(argv[1], "kernel") != 0)) {
        fprintf(stderr, "usage: %s gcore|kernel\n", argv[0]);
        return 2;
    }
    mode = argv[1];
    if (mallopt(M_ARENA_MAX, ARENA_MAX) != 1)
        die("mallopt failed", 0, 0);

    ssize_t n = readlink("/proc/self/exe", exe_path, sizeof exe_path - 1);
    if (n < 0)
        die("readlink /proc/self/exe", (size_t)errno, 0);
    exe_path[n] = 0;

    /* truth files first, on static buffers */
    f_truth = fopen("truth.json", "w");
    f_mi = fopen("malloc_info.xml", "w");
    if (!f_truth || !f_mi)
        die("fopen truth files", (size_t)errno, 0);
    setvbuf(f_truth, truth_buf, _IOFBF, sizeof truth_buf);
    setvbuf(f_mi, mi_buf, _IOFBF, sizeof mi_buf);

    sem_init(&sem_done, 0, 0);
    for (int k = 0; k < NTHREADS; k++) {
        sem_init(&sem_go2[k], 0, 0);
        if (pipe(pipes[k]) != 0)
            die("pipe", (size_t)errno, 0);
    }

    /* strictly sequential: one thread at a time */
    phaseA(0);
    for (int k = 1; k < NTHREADS; k++) {
        if (pthread_create(&threads[k], NULL, worker, (void *)(intptr_t)k) != 0)
            die("pthread_create", (size_t)k, 0);
        while (sem_wait(&sem_done) != 0) {
        }
    }
    phaseB(0);
    for (int k = 1; k < NTHREADS; k++) {
        sem_post(&sem_go2[k]);
        while (sem_wait(&sem_done) != 0) {
        }
    }
    phaseC(0);
    for (int k = 1; k < NTHREADS; k++) {
        sem_post(&sem_go2[k]);
        while (sem_wait(&sem_done) != 0) {
        }
    }

    write_truth();

    if (strcmp(mode, "gcore") == 0) {
        raise(SIGSTOP);
        for (;;)
            pause();
    }
    if (write(pipes[ABORT_THREAD][1], "a", 1) != 1)
        die("write pipe", (size_t)errno, 0);
    for (;;)
        pause();
}
