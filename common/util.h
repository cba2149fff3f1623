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

// What a file of st_mode `mode` is when it is not a regular file ("a
// directory", "a FIFO (named pipe)", ...), for a refusal that names it.
const char *file_kind(unsigned mode);

// Monotonic wall clock in seconds.
double now_seconds(void);

// Strict number parsing: the whole string must be a number in range.
// Return 0 on success, -1 otherwise (nothing is printed).
int parse_int(const char *s, long min, long max, long *out);
int parse_double(const char *s, double *out);

// ---- Text for messages (issue 29) ----

// Text that another program controls (an engine's error text and names, a
// trace's or a tensor file's strings), as it may reach a terminal: printable
// ASCII and well-formed UTF-8 characters as they are, every other byte
// (control characters such as ESC and newline, DEL, C1 controls, malformed
// UTF-8, bidirectional overrides) shown as '?'. len: the bytes of s to show
// ((size_t)-1: up to its NUL); max > 0 cuts longer text to max bytes and
// "...". The result stays valid for 16 more calls (a ring of buffers).
const char *text_safe_n(const char *s, size_t len, size_t max);
#define text_safe(s) text_safe_n((s), (size_t)-1, 0)
// A path for a message: one longer than 160 bytes as its first 60 bytes,
// "..." and its last 60, so that the reason after it stays in view (the
// same ring of buffers).
const char *path_short(const char *path);

// ---- An index of strings ----

// A hash index from strings to ints. The strings are not copied: each must
// stay where it is while indexed. Allocation failure exits (xmalloc).
typedef struct {
    size_t n, cap;
    const char **key;
    int *val;
} StrIndex;
// key's value, or -1 when absent.
int strindex_get(const StrIndex *x, const char *key);
// Add key with val unless it is there: returns its value then, else -1.
int strindex_put(StrIndex *x, const char *key, int val);
void strindex_free(StrIndex *x);

// The first key that appears twice in one JSON object anywhere under root
// (cJSON keeps both and reads the first; Python's json the last): 1 with
// *key set to it and where to that object's path ("steps[2].max_err"; ""
// for root itself), 0 when every key is distinct. Linear in the document.
struct cJSON;
int json_duplicate_key(const struct cJSON *root, const char **key, char *where, size_t n);

#endif
