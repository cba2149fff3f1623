#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char *g_prog = "microgpt";

void set_prog_name(const char *argv0) {
    const char *slash = strrchr(argv0, '/');
    g_prog = slash ? slash + 1 : argv0;
}

const char *prog_name(void) { return g_prog; }

typedef void (*DieHook)(int code, const char *msg);
static DieHook g_die_hook[4];

void add_die_hook(DieHook hook) {
    for (int k = 0; k < 4; k++)
        if (!g_die_hook[k] || g_die_hook[k] == hook) {
            g_die_hook[k] = hook;
            return;
        }
}

void remove_die_hook(DieHook hook) {
    for (int k = 0; k < 4; k++)
        if (g_die_hook[k] == hook) g_die_hook[k] = NULL;
}

static __attribute__((noreturn)) void die_msg(int code, const char *msg) {
    fflush(stdout);
    fprintf(stderr, "%s: %s\n", g_prog, msg);
    for (int k = 0; k < 4; k++) {
        DieHook hook = g_die_hook[k];
        g_die_hook[k] = NULL;  // a failure inside a hook must not call it again
        if (hook) hook(code, msg);
    }
    exit(code);
}

void die(int code, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    die_msg(code, msg);
}

// Out of memory is a resource problem (exit 2), not a mismatch.
static void alloc_fail(size_t n, const char *file, int line) {
    char msg[256];
    snprintf(msg, sizeof msg, "out of memory: could not allocate %zu bytes (%s:%d)", n, file, line);
    die_msg(EXIT_USAGE, msg);
}

void stdout_check(void) {
    if (fflush(stdout) != 0 || ferror(stdout))
        die(EXIT_MISMATCH, "writing standard output failed: %s", strerror(errno ? errno : EIO));
}

void *xmalloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) alloc_fail(n, file, line);
    return p;
}

void *xcalloc_at(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) alloc_fail(n * size, file, line);
    return p;
}

void *xrealloc_at(void *old, size_t n, const char *file, int line) {
    void *p = realloc(old, n ? n : 1);
    if (!p) alloc_fail(n, file, line);
    return p;
}

char *xstrdup_at(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *p = xmalloc_at(n, file, line);
    memcpy(p, s, n);
    return p;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int parse_int(const char *s, long min, long max, long *out) {
    if (!s || !*s || isspace((unsigned char)*s)) return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end != '\0' || v < min || v > max) return -1;
    *out = v;
    return 0;
}

int parse_double(const char *s, double *out) {
    if (!s || !*s || isspace((unsigned char)*s)) return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    // ERANGE for an underflow is fine: 5e-324 is a finite number
    if ((errno && !(errno == ERANGE && fabs(v) <= DBL_MIN)) || *end != '\0' || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

// A number from a file such as /sys/fs/cgroup/memory.max; -1 when absent or "max".
static double read_number(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    double x = -1;
    if (fscanf(f, "%lf", &x) != 1) x = -1;
    fclose(f);
    return x;
}

double mem_available(void) {
    double best = INFINITY;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        double kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) best = kb * 1024;
        fclose(f);
    }
    double max = read_number("/sys/fs/cgroup/memory.max"), cur = read_number("/sys/fs/cgroup/memory.current");
    if (max > 0 && cur >= 0 && max - cur < best) best = max - cur;
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (double)rl.rlim_cur < best)
        best = (double)rl.rlim_cur;
    return best;
}

void memory_check(double need, const char *what, const char *hint) {
    double have = mem_available();
    if (need > have)
        die(EXIT_USAGE, "not enough memory for %s: it needs about %.1f GiB, %.1f GiB are available; %s", what,
            need / 1073741824.0, have / 1073741824.0, hint);
}
