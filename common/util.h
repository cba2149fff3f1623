// Small shared helpers: fatal errors with exit codes, checked allocation, timing.
#ifndef COMMON_UTIL_H
#define COMMON_UTIL_H

#include <stddef.h>
#include <stdio.h>

// Exit codes shared by every tool (README.md, "Exit codes").
enum {
    EXIT_MISMATCH = 1,   // a check failed (compare), or a run failed: non-finite loss, write error
    EXIT_USAGE = 2,      // bad flags, impossible settings, bad input data, no GPU, out of memory
};

// Print "<prog>: <message>\n" to stderr and exit with `code`.
void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
// Hooks die() (and an allocation failure) calls after printing, before exit,
// each at most once: the trace and the timeline of the failed run are
// written there. At most 4.
void add_die_hook(void (*hook)(int code, const char *msg));
void remove_die_hook(void (*hook)(int code, const char *msg));
// Flush stdout; on a write error (a full disk, a closed pipe) exit 1 with a message.
void stdout_check(void);
// The program name used as the prefix of every message (set once in main).
void set_prog_name(const char *argv0);
const char *prog_name(void);

// Allocation that never returns NULL: on failure prints file, line and size, exits 2.
void *xmalloc_at(size_t n, const char *file, int line);
void *xcalloc_at(size_t n, size_t size, const char *file, int line);
void *xrealloc_at(void *p, size_t n, const char *file, int line);
char *xstrdup_at(const char *s, const char *file, int line);
#define xmalloc(n) xmalloc_at((n), __FILE__, __LINE__)
#define xcalloc(n, s) xcalloc_at((n), (s), __FILE__, __LINE__)
#define xrealloc(p, n) xrealloc_at((p), (n), __FILE__, __LINE__)
#define xstrdup(s) xstrdup_at((s), __FILE__, __LINE__)

// Bytes of memory this process can still get: the least of MemAvailable,
// the cgroup's limit less its use, and RLIMIT_AS (INFINITY when unknown).
double mem_available(void);
// Exit 2 when `need` bytes exceed mem_available(): "not enough memory for
// <what>: it needs about X GiB, Y GiB are available; <hint>".
void memory_check(double need, const char *what, const char *hint);

// Monotonic wall clock in seconds.
double now_seconds(void);

// Strict number parsing: the whole string must be a number in range.
// Return 0 on success, -1 otherwise (nothing is printed).
int parse_int(const char *s, long min, long max, long *out);
int parse_double(const char *s, double *out);

#endif
