/*
 * cpp_heap.cpp -- C++ native-heap ground-truth scenario for coreheap (issue 13).
 *
 * Build (inside each environment, with that environment's g++), three ways:
 *     g++ -O1 -g0 -pthread -o cpp_heap   cpp_heap.cpp             (symbols, no DWARF)
 *     g++ -O1 -g  -pthread -o cpp_heap_g cpp_heap.cpp             (with DWARF)
 *     g++ -O1 -g0 -pthread -o cpp_heap_s cpp_heap.cpp && strip    (no .symtab: RTTI only)
 * Run:
 *     cpp_heap gcore     # writes truth.json, then raise(SIGSTOP): the generator gcores it
 *     cpp_heap kernel    # writes truth.json, then abort() in main: kernel core, SIGABRT
 *
 * What it holds, and how (the truth file says it with the addresses):
 *   - polymorphic classes in std containers that globals own: shapes::Circle and Both
 *     (multiple inheritance) in a std::vector, shapes::Square in a std::map, Box<int> in
 *     a std::unordered_map keyed by heap strings, (anonymous namespace)::Hidden (RTTI
 *     name with GCC's '*' prefix) in a std::vector;
 *   - a Cache held only by the global g_cache, owning Entry structs (no vtable) through a
 *     std::vector;
 *   - a StackHeld object held only by a local variable of a thread blocked in sem_wait;
 *   - a RegHeld object held only in register r12 of a thread blocked in a futex wait
 *     loop written in assembly (x86_64; elsewhere the object is not made);
 *   - deliberately leaked chunks: 40 LeakedWidget and 50 malloc(200) blocks nothing
 *     points to (unreferenced), 25 two-node cycles of CycleNode (leaked, referenced by
 *     each other), 10 LeakedTree objects each owning 3 malloc(72) children (the trees
 *     unreferenced, the children referenced only by their leaked tree).
 * Addresses are written as text into a static buffer: a pointer kept in a global would
 * anchor what it points to. Nothing allocates after the truth is written (the truth
 * file has a static buffer and is never closed).
 */
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <gnu/libc-version.h>
#include <map>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string>
#include <sys/syscall.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

namespace shapes {
struct Shape {
    long id;
    explicit Shape(long i) : id(i) {}
    virtual ~Shape() {}
    virtual double area() const = 0;
};
struct Circle : Shape {
    double r;
    explicit Circle(long i) : Shape(i), r(i * 0.5) {}
    double area() const override { return 3.14159 * r * r; }
};
struct Square : Shape {
    double side;
    char tag[40];
    explicit Square(long i) : Shape(i), side((double)i)
    {
        snprintf(tag, sizeof tag, "square-%ld", i);
    }
    double area() const override { return side * side; }
};
}  // namespace shapes

struct Printable {
    virtual ~Printable() {}
    virtual const char *label() const { return "printable"; }
};

struct Both : shapes::Shape, Printable {
    int k[6];
    explicit Both(long i) : Shape(i) { memset(k, 0, sizeof k); }
    double area() const override { return 1.0; }
};

template <class T> struct Box : shapes::Shape {
    T value;
    T more[5];
    explicit Box(long i) : Shape(i), value((T)i) {}
    double area() const override { return (double)value; }
};

namespace {
struct Hidden : shapes::Shape {
    char note[24];
    explicit Hidden(long i) : Shape(i) { snprintf(note, sizeof note, "hidden %ld", i); }
    double area() const override { return 2.0; }
};
}  // namespace

struct Entry {  // no vtable: an untyped chunk
    long key;
    char text[48];
};

struct Cache {
    std::vector<Entry *> entries;
    long hits = 0;
    virtual ~Cache() {}
    virtual long size() const { return (long)entries.size(); }
};

struct StackHeld {
    char payload[96];
    virtual ~StackHeld() {}
};
struct RegHeld {
    char payload[112];
    virtual ~RegHeld() {}
};
struct LeakedWidget {
    long serial;
    char text[64];
    virtual ~LeakedWidget() {}
};
struct CycleNode {
    CycleNode *peer;
    char pad[40];
    virtual ~CycleNode() {}
};
struct LeakedTree {
    void *kids[3];
    virtual ~LeakedTree() {}
};

enum { N_CIRCLE = 1000, N_SQUARE = 700, N_BOX = 300, N_HIDDEN = 50, N_BOTH = 20, N_ENTRY = 30,
       N_WIDGET = 40, N_PLAIN = 50, N_CYCLES = 25, N_TREES = 10, N_KIDS = 3 };

std::vector<shapes::Shape *> g_shapes;
std::map<int, shapes::Shape *> g_squares;
std::unordered_map<std::string, Box<int> *> g_boxes;
std::vector<shapes::Shape *> g_hidden;
Cache *g_cache;

static const char *mode;
static char exe_path[4096];
static char truth_buf[1 << 16];
static FILE *f_truth;
static char leaked_text[16384];  /* addresses of leaked samples, as text */
static char held_text[1024];
static char cache_text[512];
static long tids[3];
static sem_t ready, never;
static int futex_word;

static void die(const char *what)
{
    fprintf(stderr, "cpp_heap: %s (errno %d)\n", what, errno);
    _exit(1);
}

static long gettid_() { return (long)syscall(SYS_gettid); }

static void *stack_thread(void *)
{
    tids[1] = gettid_();
    StackHeld *volatile held = new StackHeld;
    memset(held->payload, 'S', sizeof held->payload);
    snprintf(held_text + strlen(held_text), 256, "\"stack_held\": {\"address\": \"0x%lx\", \"tid\": %ld, \"class\": \"StackHeld\"},\n",
             (unsigned long)(uintptr_t)held, tids[1]);
    sem_post(&ready);
    for (;;)
        sem_wait(&never);
    return nullptr;
}

#if defined(__x86_64__)
#define HAVE_REG 1
static const uintptr_t KEY = 0x5a5a5a5a5a5a5a5aULL;
static void *reg_thread(void *)
{
    tids[2] = gettid_();
    uintptr_t k;
    {
        RegHeld *r = new RegHeld;
        memset(r->payload, 'R', sizeof r->payload);
        snprintf(held_text + strlen(held_text), 256, "\"register_held\": {\"address\": \"0x%lx\", \"tid\": %ld, \"class\": \"RegHeld\", \"register\": \"r12\"},\n",
                 (unsigned long)(uintptr_t)r, tids[2]);
        k = (uintptr_t)r ^ KEY;
    }
    sem_post(&ready);
    /* From here the pointer is only in r12: futex(&futex_word, FUTEX_WAIT, 0) forever. The
     * syscall instruction keeps r12 (it clobbers rax, rcx, r11). */
    __asm__ volatile(
        "mov %0, %%r12\n\t"
        "xor %1, %%r12\n\t"
        "1:\n\t"
        "mov $202, %%eax\n\t"
        "mov %2, %%rdi\n\t"
        "xor %%esi, %%esi\n\t"
        "xor %%edx, %%edx\n\t"
        "xor %%r10d, %%r10d\n\t"
        "syscall\n\t"
        "jmp 1b\n\t"
        :
        : "r"(k), "r"(KEY), "r"(&futex_word)
        : "rax", "rcx", "rdx", "rsi", "rdi", "r10", "r11", "r12", "memory");
    return nullptr;
}
#else
#define HAVE_REG 0
#endif

/* Each leak in a function of its own: when it returns, its frame is below the stack
 * pointer (not scanned) and the callee-saved registers are the caller's again. */
__attribute__((noinline)) static void leak_all()
{
    size_t n = 0;
    n += snprintf(leaked_text + n, sizeof leaked_text - n, "\"leaked_samples\": [");
    for (int i = 0; i < N_WIDGET; i++) {
        LeakedWidget *w = new LeakedWidget;
        w->serial = i;
        snprintf(w->text, sizeof w->text, "leaked widget %d", i);
        if (i < 3)
            n += snprintf(leaked_text + n, sizeof leaked_text - n,
                          "%s{\"address\": \"0x%lx\", \"class\": \"LeakedWidget\", \"unreferenced\": true}",
                          i ? ", " : "", (unsigned long)(uintptr_t)w);
    }
    for (int i = 0; i < N_PLAIN; i++) {
        char *p = (char *)malloc(200);
        snprintf(p, 200, "leaked plain block %d", i);
        if (i < 3)
            n += snprintf(leaked_text + n, sizeof leaked_text - n,
                          ", {\"address\": \"0x%lx\", \"class\": null, \"unreferenced\": true}",
                          (unsigned long)(uintptr_t)p);
    }
    for (int i = 0; i < N_CYCLES; i++) {
        CycleNode *a = new CycleNode, *b = new CycleNode;
        a->peer = b;
        b->peer = a;
        if (i < 2)
            n += snprintf(leaked_text + n, sizeof leaked_text - n,
                          ", {\"address\": \"0x%lx\", \"class\": \"CycleNode\", \"unreferenced\": false}",
                          (unsigned long)(uintptr_t)a);
    }
    for (int i = 0; i < N_TREES; i++) {
        LeakedTree *t = new LeakedTree;
        for (int j = 0; j < N_KIDS; j++) {
            t->kids[j] = malloc(72);
            memset(t->kids[j], 'k', 72);
        }
        if (i < 2)
            n += snprintf(leaked_text + n, sizeof leaked_text - n,
                          ", {\"address\": \"0x%lx\", \"class\": \"LeakedTree\", \"unreferenced\": true}"
                          ", {\"address\": \"0x%lx\", \"class\": null, \"unreferenced\": false}",
                          (unsigned long)(uintptr_t)t, (unsigned long)(uintptr_t)t->kids[0]);
    }
    snprintf(leaked_text + n, sizeof leaked_text - n, "],\n");
}

__attribute__((noinline)) static void fill()
{
    g_shapes.reserve(N_CIRCLE + N_BOTH);
    for (int i = 0; i < N_CIRCLE; i++)
        g_shapes.push_back(new shapes::Circle(i));
    for (int i = 0; i < N_BOTH; i++)
        g_shapes.push_back(new Both(i));
    for (int i = 0; i < N_SQUARE; i++)
        g_squares[i] = new shapes::Square(i);
    for (int i = 0; i < N_BOX; i++) {
        char key[64];
        snprintf(key, sizeof key, "box-key-number-%05d", i);
        g_boxes[key] = new Box<int>(i);
    }
    for (int i = 0; i < N_HIDDEN; i++)
        g_hidden.push_back(new Hidden(i));
    g_cache = new Cache;
    for (int i = 0; i < N_ENTRY; i++) {
        Entry *e = new Entry;
        e->key = i;
        snprintf(e->text, sizeof e->text, "cache entry %d", i);
        g_cache->entries.push_back(e);
    }
    snprintf(cache_text, sizeof cache_text,
             "\"static_held\": {\"address\": \"0x%lx\", \"class\": \"Cache\", \"symbol\": \"g_cache\"},\n"
             "\"static_held_entry\": {\"address\": \"0x%lx\", \"symbol\": \"g_cache\"},\n",
             (unsigned long)(uintptr_t)g_cache, (unsigned long)(uintptr_t)g_cache->entries[7]);
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "gcore") != 0 && strcmp(argv[1], "kernel") != 0)) {
        fprintf(stderr, "usage: %s gcore|kernel\n", argv[0]);
        return 2;
    }
    mode = argv[1];
    ssize_t n = readlink("/proc/self/exe", exe_path, sizeof exe_path - 1);
    if (n < 0)
        die("readlink /proc/self/exe");
    exe_path[n] = 0;
    f_truth = fopen("truth.json", "w");
    if (!f_truth)
        die("fopen truth.json");
    setvbuf(f_truth, truth_buf, _IOFBF, sizeof truth_buf);
    tids[0] = gettid_();
    sem_init(&ready, 0, 0);
    sem_init(&never, 0, 0);

    fill();
    leak_all();

    pthread_t t1, t2;
    if (pthread_create(&t1, nullptr, stack_thread, nullptr) != 0)
        die("pthread_create");
    while (sem_wait(&ready) != 0) {
    }
#if HAVE_REG
    if (pthread_create(&t2, nullptr, reg_thread, nullptr) != 0)
        die("pthread_create");
    while (sem_wait(&ready) != 0) {
    }
#endif
    (void)t2;

    int kernel = strcmp(mode, "kernel") == 0;
    FILE *f = f_truth;
    fprintf(f, "{\n\"scenario\": \"cpp_heap\",\n\"mode\": \"%s\",\n", mode);
    fprintf(f, "\"pid\": %ld,\n\"tids\": [%ld, %ld", (long)getpid(), tids[0], tids[1]);
    if (HAVE_REG)
        fprintf(f, ", %ld", tids[2]);
    fprintf(f, "],\n\"exe\": \"%s\",\n", exe_path);
    if (kernel)
        fprintf(f, "\"signal\": 6,\n\"signal_tid\": %ld,\n", tids[0]);
    else
        fprintf(f, "\"signal\": null,\n\"signal_tid\": null,\n");
    fprintf(f, "\"glibc_version\": \"%s\",\n\"python_version\": null,\n", gnu_get_libc_version());
    fprintf(f, "\"classes\": {\"shapes::Circle\": %d, \"shapes::Square\": %d, \"Box<int>\": %d, "
               "\"(anonymous namespace)::Hidden\": %d, \"Both\": %d, \"Cache\": 1, \"StackHeld\": 1, "
               "\"RegHeld\": %d, \"LeakedWidget\": %d, \"CycleNode\": %d, \"LeakedTree\": %d},\n",
            N_CIRCLE, N_SQUARE, N_BOX, N_HIDDEN, N_BOTH, HAVE_REG, N_WIDGET, 2 * N_CYCLES, N_TREES);
    fprintf(f, "\"leaked\": {\"count\": %d, \"by_class\": {\"LeakedWidget\": %d, \"CycleNode\": %d, "
               "\"LeakedTree\": %d, \"<untyped glibc>\": %d}},\n",
            N_WIDGET + N_PLAIN + 2 * N_CYCLES + N_TREES * (1 + N_KIDS), N_WIDGET, 2 * N_CYCLES,
            N_TREES, N_PLAIN + N_TREES * N_KIDS);
    fprintf(f, "\"unreferenced\": {\"count\": %d, \"by_class\": {\"LeakedWidget\": %d, "
               "\"LeakedTree\": %d, \"<untyped glibc>\": %d}},\n",
            N_WIDGET + N_TREES + N_PLAIN, N_WIDGET, N_TREES, N_PLAIN);
    /* What each holder keeps alive alone: the Cache its vector's buffer and the entries;
     * the stack- and register-held objects hold no pointer. */
    fprintf(f, "\"retained_count\": {\"Cache\": %d, \"StackHeld\": 1%s},\n", 2 + N_ENTRY,
            HAVE_REG ? ", \"RegHeld\": 1" : "");
    fputs(leaked_text, f);
    fputs(held_text, f);
    fputs(cache_text, f);
    fprintf(f, "\"end\": true\n}\n");
    fflush(f); /* no fclose: it would free() */

    if (!kernel) {
        raise(SIGSTOP);
        for (;;)
            pause();
    }
    abort();
}
