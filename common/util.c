#include "util.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
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

const char *file_kind(unsigned mode) {
    const mode_t m = (mode_t)mode;
    return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO (named pipe)" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

// ---- Text for messages (issue 29) ----

// A ring of growing buffers for the helpers below (per thread).
static char *ring_buffer(size_t need) {
    static __thread char *ring[16];
    static __thread size_t cap[16];
    static __thread unsigned k;
    unsigned i = k++ % 16;
    if (cap[i] < need) {
        char *b = realloc(ring[i], need);
        if (!b) alloc_fail(need, __FILE__, __LINE__);
        ring[i] = b;
        cap[i] = need;
    }
    return ring[i];
}

// The length of the well-formed UTF-8 sequence at s (at most n bytes) of a
// code point that a terminal shows as a character, or 0: C1 controls, the
// line and paragraph separators and the bidirectional overrides (which
// reorder what follows them) are not.
static size_t utf8_shown(const unsigned char *s, size_t n) {
    size_t k = s[0] >= 0xc2 && s[0] <= 0xdf ? 2 : s[0] >= 0xe0 && s[0] <= 0xef ? 3 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;
    if (!k || k > n) return 0;
    uint32_t cp = s[0] & (0x7f >> k);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t lowest[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < lowest[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;   // overlong, surrogate
    if (cp < 0xa0 || cp == 0x2028 || cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) ||
        cp == 0x200e || cp == 0x200f || cp == 0x061c)
        return 0;
    return k;
}

const char *text_safe_n(const char *s, size_t len, size_t max) {
    if (!s) return "(null)";
    size_t n = 0;
    while (n < len && s[n]) n++;   // len bounds the read: s need not be NUL-terminated
    char *out = ring_buffer(n + 4);
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0;
    int cut = 0;
    while (i < n) {
        const size_t k = u[i] < 0x80 ? 1 : utf8_shown(u + i, n - i);
        if (max > 0 && o + (k ? k : 1) > max) {
            cut = 1;
            break;
        }
        if (k == 1 && u[i] >= 0x20 && u[i] < 0x7f) out[o++] = (char)u[i++];
        else if (k > 1) memcpy(out + o, u + i, k), o += k, i += k;
        else out[o++] = '?', i++;   // a control character, DEL, a stray or malformed byte
    }
    memcpy(out + o, cut ? "..." : "", cut ? 4 : 1);
    return out;
}

const char *path_short(const char *path) {
    if (!path) return "(null)";
    const size_t n = strlen(path);
    if (n <= 160) return path;
    char *out = ring_buffer(124);
    memcpy(out, path, 60);
    memcpy(out + 60, "...", 3);
    memcpy(out + 63, path + n - 60, 61);
    return out;
}

// ---- An index of strings ----

static uint64_t str_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;   // FNV-1a
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

// The slot of key: where it is, or the empty slot where it would go.
static size_t strindex_slot(const StrIndex *x, const char *key) {
    size_t i = (size_t)str_hash(key) & (x->cap - 1);
    while (x->key[i] && strcmp(x->key[i], key)) i = (i + 1) & (x->cap - 1);
    return i;
}

int strindex_get(const StrIndex *x, const char *key) {
    if (!x->cap) return -1;
    size_t i = strindex_slot(x, key);
    return x->key[i] ? x->val[i] : -1;
}

int strindex_put(StrIndex *x, const char *key, int val) {
    if (2 * (x->n + 1) > x->cap) {   // at most half full
        StrIndex y = {0, x->cap ? 2 * x->cap : 16, NULL, NULL};
        y.key = xcalloc(y.cap, sizeof *y.key);
        y.val = xcalloc(y.cap, sizeof *y.val);
        for (size_t i = 0; i < x->cap; i++)
            if (x->key[i]) {
                size_t j = strindex_slot(&y, x->key[i]);
                y.key[j] = x->key[i];
                y.val[j] = x->val[i];
                y.n++;
            }
        strindex_free(x);
        *x = y;
    }
    size_t i = strindex_slot(x, key);
    if (x->key[i]) return x->val[i];
    x->key[i] = key;
    x->val[i] = val;
    x->n++;
    return -1;
}

void strindex_free(StrIndex *x) {
    free(x->key);
    free(x->val);
    memset(x, 0, sizeof *x);
}

// ---- Duplicate JSON keys ----

// where[0..at) is the path of v; appends each member's part below it.
static int dup_walk(const cJSON *v, const char **key, char *where, size_t n, size_t at) {
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) return 0;
    if (cJSON_IsObject(v)) {
        int k = 0;
        for (const cJSON *c = v->child; c && k <= 8; c = c->next) k++;
        if (k <= 8) {   // small objects: every pair
            for (const cJSON *c = v->child; c; c = c->next)
                for (const cJSON *d = v->child; d != c; d = d->next)
                    if (c->string && d->string && !strcmp(c->string, d->string)) {
                        *key = c->string;
                        return 1;
                    }
        } else {
            StrIndex seen = {0};
            for (const cJSON *c = v->child; c; c = c->next)
                if (c->string && strindex_put(&seen, c->string, 0) >= 0) {
                    *key = c->string;
                    strindex_free(&seen);
                    return 1;
                }
            strindex_free(&seen);
        }
    }
    int i = 0;
    for (const cJSON *c = v->child; c; c = c->next, i++) {
        if (!cJSON_IsObject(c) && !cJSON_IsArray(c)) continue;
        size_t m = at;
        if (m < n) {
            int w = cJSON_IsObject(v) ? snprintf(where + m, n - m, "%s%s", m ? "." : "", c->string ? c->string : "?")
                                      : snprintf(where + m, n - m, "[%d]", i);
            m = w < 0 ? m : m + (size_t)w < n ? m + (size_t)w : n - 1;
        }
        if (dup_walk(c, key, where, n, m)) return 1;
        if (at < n) where[at] = '\0';
    }
    return 0;
}

int json_duplicate_key(const cJSON *root, const char **key, char *where, size_t n) {
    *key = NULL;
    if (n) where[0] = '\0';
    return dup_walk(root, key, where, n, 0);
}
