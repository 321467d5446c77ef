/* c_crash: a native crash with a known innermost frame, for `coreheap stacks`.
 *
 * usage: c_crash kernel
 *
 * Writes truth.json (pid, tids, exe, the expected crash function and signal) in the
 * current directory, then dereferences a null pointer in crash_here(), called through
 * three levels of descend(). Built with -O0 -g so the scenario carries its own DWARF
 * (file:line of the crash) and frame pointers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <gnu/libc-version.h>

struct node {
    int value;
    struct node *next;
};

__attribute__((noinline)) int crash_here(struct node *n)
{
    return n->next->value; /* CRASH LINE: n->next is NULL */
}

__attribute__((noinline)) int descend(struct node *n, int depth)
{
    if (depth > 0)
        return descend(n, depth - 1) + 1;
    return crash_here(n);
}

int main(int argc, char **argv)
{
    char exe[4096];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[k > 0 ? k : 0] = 0;
    FILE *f = fopen("truth.json", "w");
    if (!f)
        return 1;
    fprintf(f,
            "{\"scenario\": \"c_crash\", \"pid\": %d, \"tids\": [%d], \"signal_tid\": %d,\n"
            " \"exe\": \"%s\", \"signal\": 11, \"crash_function\": \"crash_here\",\n"
            " \"glibc_version\": \"%s\", \"python_version\": null,\n"
            " \"crash_file\": \"c_crash.c\", \"callers\": [\"descend\", \"descend\", \"descend\", \"descend\", \"main\"]}\n",
            (int)getpid(), (int)getpid(), (int)getpid(), exe, gnu_get_libc_version());
    fclose(f);
    struct node n = {argc, NULL};
    return descend(&n, 3);
}
