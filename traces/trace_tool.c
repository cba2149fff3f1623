// trace: inspect, diff and plot the JSON traces written by microgpt (kind
// "train") and compare (kind "compare"). docs/traces.md describes the format
// and this tool.
//
//   trace inspect FILE [--json]
//   trace diff A B [--tolerance X]
//   trace plot FILE... [--svg OUT.svg] [--width N] [--height N] [--log]
//
// Exit codes: 0 ok (diff: same), 1 diff found differences or an output file
// could not be written, 2 bad usage or an input that is not a readable trace.
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/atomic_file.h"
#include "common/util.h"
#include "traces/trace.h"
#include "traces/bench_view.h"
#include "traces/trace_read.h"

// ---------------------------------------------------------------------------
// Small helpers

typedef struct {
    char *s;
    size_t n, cap;
} Buf;

static void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(Buf *b, const char *fmt, ...) {
    for (;;) {
        size_t room = b->cap - b->n;
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, room, fmt, ap);
        va_end(ap);
        if (k < 0) die(EXIT_MISMATCH, "internal error: bad format");
        if ((size_t)k < room) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n <= (size_t)k) cap *= 2;
        b->s = xrealloc(b->s, cap);
        b->cap = cap;
    }
}

static void buf_free(Buf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

// Formatted numbers in a ring of static buffers (several per printf call).
static const char *fmtn(const char *fmt, double x) {
    static char ring[16][48];
    static int k;
    char *b = ring[k++ % 16];
    if (isnan(x)) snprintf(b, 48, "null");
    else if (isinf(x)) snprintf(b, 48, "%s", x > 0 ? "inf" : "-inf");
    else snprintf(b, 48, fmt, x);
    return b;
}

// The exact text of a double (what the writer wrote).
static const char *exact(double x) {
    static char ring[16][32];
    static int k;
    char *b = ring[k++ % 16];
    trace_format_number(x, b);
    return b;
}

static int same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

// Distance in units in the last place (representable doubles between a and b).
static uint64_t ulp_distance(double a, double b) {
    int64_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    if (ia < 0) ia = INT64_MIN - ia;
    if (ib < 0) ib = INT64_MIN - ib;
    return ia > ib ? (uint64_t)ia - (uint64_t)ib : (uint64_t)ib - (uint64_t)ia;
}

// |a-b| / max(|a|, |b|): symmetric, 0 when both are 0, inf when one is not finite.
static double rel_diff(double a, double b) {
    if (!isfinite(a) || !isfinite(b)) return same_bits(a, b) ? 0 : INFINITY;
    double d = fabs(a - b), m = fmax(fabs(a), fabs(b));
    return m == 0 ? 0 : d / m;
}

static TraceData load_or_die(const char *path) {
    TraceData t;
    char err[1024];
    if (trace_load(&t, path, err, sizeof err)) die(EXIT_USAGE, "%s", err);
    return t;
}

static int is_flag(const char *a) { return a[0] == '-' && a[1] != '\0'; }

// "--name value" or "--name=value": returns the value (advancing *i) when
// argv[*i] is that flag, NULL when it is another one.
static const char *flag_value(const char *cmd, int argc, char **argv, int *i, const char *name) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return NULL;
    if (a[n] == '=') return a + n + 1;
    if (a[n] != '\0') return NULL;
    if (*i + 1 >= argc) die(EXIT_USAGE, "%s: %s needs a value (see trace %s --help)", cmd, name, cmd);
    return argv[++*i];
}

static void unknown_flag(const char *cmd, const char *flag) {
    die(EXIT_USAGE, "%s: unknown flag '%s' (see trace %s --help)", cmd, flag, cmd);
}

// ---------------------------------------------------------------------------
// Statistics

enum { MEAN_WINDOW = 100 };

typedef struct {
    int first, last;       // step indices (-1 when there are no steps)
    int min, max;          // indices of the smallest/largest finite loss (-1: none)
    int non_finite;        // steps whose loss is null
    int k_first, k_last;   // steps in the first/last window (min(100, n))
    double mean_first, mean_last;  // over the finite losses in those windows (NaN: none)
} LossStats;

static double window_mean(const TraceData *t, int e, int from, int to) {
    double sum = 0;
    int n = 0;
    for (int i = from; i < to; i++) {
        double v = t->steps[i].loss[e];
        if (isfinite(v)) {
            sum += v;
            n++;
        }
    }
    return n ? sum / n : NAN;
}

static void loss_stats(const TraceData *t, int e, LossStats *s) {
    int n = t->n_steps;
    memset(s, 0, sizeof *s);
    s->first = n ? 0 : -1;
    s->last = n - 1;
    s->min = s->max = -1;
    for (int i = 0; i < n; i++) {
        double v = t->steps[i].loss[e];
        if (!isfinite(v)) {
            s->non_finite++;
            continue;
        }
        if (s->min < 0 || v < t->steps[s->min].loss[e]) s->min = i;
        if (s->max < 0 || v > t->steps[s->max].loss[e]) s->max = i;
    }
    int k = n < MEAN_WINDOW ? n : MEAN_WINDOW;
    s->k_first = s->k_last = k;
    s->mean_first = window_mean(t, e, 0, k);
    s->mean_last = window_mean(t, e, n - k, n);
}

typedef struct {
    int n;              // steps with a finite time
    double mean, median, total;
} TimeStats;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void time_stats(const TraceData *t, int e, TimeStats *s) {
    double *v = xmalloc((size_t)(t->n_steps > 0 ? t->n_steps : 1) * sizeof *v);
    int n = 0;
    double total = 0;
    for (int i = 0; i < t->n_steps; i++) {
        double x = t->steps[i].time_s[e];
        if (isfinite(x)) {
            v[n++] = x;
            total += x;
        }
    }
    s->n = n;
    s->total = total;
    s->mean = n ? total / n : NAN;
    if (n) {
        qsort(v, (size_t)n, sizeof *v, cmp_double);
        s->median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    } else {
        s->median = NAN;
    }
    free(v);
}

// The quantity a max_err key belongs to: "loss", "logits", "grads" (tensor
// gradients: keys ending in ".grad") or "params" (any other tensor name).
static const char *quantity_of(const char *key) {
    if (!strcmp(key, "loss") || !strcmp(key, "logits") || !strcmp(key, "grads") ||
        !strcmp(key, "params"))
        return key;
    size_t n = strlen(key);
    if (n >= 5 && !strcmp(key + n - 5, ".grad")) return "grads";
    return "params";
}

// The largest error of one max_err key over all steps.
typedef struct {
    const char *key;
    double err, rel;       // NaN-dominant maxima (a null error is worse than any number)
    int err_i, rel_i;      // step indices (-1: never present)
} ErrRow;

typedef struct {
    int n, cap;
    ErrRow *r;
} ErrTable;

static ErrRow *err_row(ErrTable *t, const char *key) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->r[i].key, key)) return &t->r[i];
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->r = xrealloc(t->r, (size_t)t->cap * sizeof *t->r);
    }
    ErrRow *r = &t->r[t->n++];
    r->key = key;
    r->err = r->rel = 0;
    r->err_i = r->rel_i = -1;
    return r;
}

static void take_max(double v, int i, double *best, int *best_i) {
    if (*best_i >= 0 && (isnan(*best) || !(isnan(v) || v > *best))) return;
    *best = v;
    *best_i = i;
}

static void err_table(const TraceData *t, ErrTable *tab) {
    memset(tab, 0, sizeof *tab);
    for (int i = 0; i < t->n_steps; i++) {
        const cJSON *v;
        cJSON_ArrayForEach(v, t->steps[i].max_err) {
            ErrRow *r = err_row(tab, v->string);
            take_max(cJSON_IsNumber(v) ? v->valuedouble : NAN, i, &r->err, &r->err_i);
        }
        cJSON_ArrayForEach(v, t->steps[i].max_rel) {
            ErrRow *r = err_row(tab, v->string);
            take_max(cJSON_IsNumber(v) ? v->valuedouble : NAN, i, &r->rel, &r->rel_i);
        }
    }
}

// tolerances[quantity].atol / .rtol (NaN when absent).
static void tolerance_of(const TraceData *t, const char *quantity, double *atol, double *rtol) {
    const cJSON *tol = cJSON_GetObjectItemCaseSensitive(t->root, "tolerances");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(tol, quantity);
    if (trace_get_number(q, "atol", atol)) *atol = NAN;
    if (trace_get_number(q, "rtol", rtol)) *rtol = NAN;
}

// The value of a JSON item as short text: numbers exactly, strings as they are.
static void item_text(const cJSON *v, Buf *b) {
    if (!v) buf_printf(b, "(absent)");
    else if (cJSON_IsNumber(v)) buf_printf(b, "%s", exact(v->valuedouble));
    else if (cJSON_IsString(v)) buf_printf(b, "%s", v->valuestring);
    else if (cJSON_IsNull(v)) buf_printf(b, "null");
    else if (cJSON_IsBool(v)) buf_printf(b, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else {
        char *s = cJSON_PrintUnformatted(v);
        if (!s) die(EXIT_MISMATCH, "out of memory");
        if (strlen(s) > 72) buf_printf(b, "%.69s...", s);
        else buf_printf(b, "%s", s);
        free(s);
    }
}

// first_failure in words, e.g. "step 7: grads of layer0.attn_wq.grad, index
// 37 (row 2, col 5): scalar = ..., cpu = ..., |a-b| = 1.2e-10 > tolerance 1e-12".
static void failure_words(const TraceData *t, const cJSON *ff, Buf *b) {
    double step, index, a, bv, abs_err;
    int has_a = trace_get_number(ff, "a", &a) == 0;
    int has_b = trace_get_number(ff, "b", &bv) == 0;
    if (trace_get_number(ff, "step", &step) == 0) buf_printf(b, "step %s: ", exact(step));
    const char *q = trace_get_string(ff, "quantity");
    const char *tensor = trace_get_string(ff, "tensor");
    buf_printf(b, "%s", q ? q : "a value");
    if (tensor && (!q || strcmp(tensor, q) != 0)) buf_printf(b, " of %s", tensor);
    buf_printf(b, " out of tolerance");
    if (trace_get_number(ff, "index", &index) == 0) buf_printf(b, " at index %s", exact(index));
    const cJSON *where = cJSON_GetObjectItemCaseSensitive(ff, "where");
    if (where && !cJSON_IsNull(where)) {
        buf_printf(b, ", ");
        item_text(where, b);
    }
    // As compare writes them: a is the candidate (engines[1]), b the reference (engines[0]).
    if (has_a || has_b) {
        buf_printf(b, ": %s = %s, %s (reference) = %s", t->engine[1], has_a ? fmtn("%.17g", a) : "?",
                   t->engine[0], has_b ? fmtn("%.17g", bv) : "?");
    }
    int has_err = trace_get_number(ff, "abs_err", &abs_err) == 0;
    if (!has_err && has_a && has_b) {
        abs_err = fabs(a - bv);
        has_err = 1;
    }
    if (has_err) buf_printf(b, ", |a-b| = %s", fmtn("%.3g", abs_err));
    const cJSON *tol = cJSON_GetObjectItemCaseSensitive(ff, "tol");
    if (cJSON_IsNumber(tol)) {
        buf_printf(b, " > tolerance %s", fmtn("%.3g", tol->valuedouble));
    } else if (cJSON_IsObject(tol)) {
        double atol, rtol;
        int ha = trace_get_number(tol, "atol", &atol) == 0;
        int hr = trace_get_number(tol, "rtol", &rtol) == 0;
        buf_printf(b, " beyond the tolerance");
        if (ha) buf_printf(b, " atol %s", fmtn("%.3g", atol));
        if (hr) buf_printf(b, "%s rtol %s", ha ? "," : "", fmtn("%.3g", rtol));
    } else if (tol && !cJSON_IsNull(tol)) {
        buf_printf(b, " beyond the tolerance ");
        item_text(tol, b);
    }
}

static int failed_steps(const TraceData *t) {
    int n = 0;
    for (int i = 0; i < t->n_steps; i++) n += t->steps[i].ok == 0;
    return n;
}

// ---------------------------------------------------------------------------
// inspect

static void inspect_usage(FILE *f) {
    fprintf(f,
            "usage: trace inspect FILE [--json]\n"
            "A summary of one trace (kind \"train\" or \"compare\"): format version, settings,\n"
            "dataset, engine(s), number of steps, the loss (first, last, min and max with\n"
            "their steps, mean of the first and of the last 100 steps) and the time per\n"
            "step (mean, median) of each engine. Train traces: the samples. Compare traces:\n"
            "mode, tolerances, the verdict, the first failure in words and a table of the\n"
            "largest error of each quantity/tensor over all steps.\n\n"
            "  --json     print the summary as JSON (numbers exact) instead of text\n"
            "  --help     this text\n\n"
            "Exit codes: 0 ok, 2 bad usage or FILE is not a readable trace.\n");
}

// The members of an object as "key=value" pairs wrapped at ~78 columns;
// nested objects on their own lines below.
static void print_pairs(const cJSON *obj, const char *indent) {
    int col = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, obj) {
        if (cJSON_IsObject(v)) continue;
        Buf b = {0};
        buf_printf(&b, "%s=", v->string);
        item_text(v, &b);
        if (col && col + 1 + (int)b.n > 78) {
            putchar('\n');
            col = 0;
        }
        if (!col) col = printf("%s%s", indent, b.s);
        else col += printf(" %s", b.s);
        buf_free(&b);
    }
    if (col) putchar('\n');
    cJSON_ArrayForEach(v, obj) {
        if (!cJSON_IsObject(v)) continue;
        char deeper[64];
        snprintf(deeper, sizeof deeper, "%s  ", indent);
        printf("%s%s:\n", indent, v->string);
        print_pairs(v, deeper);
    }
}

static void inspect_text(const TraceData *t) {
    const cJSON *root = t->root;
    printf("%s: microgpt-trace version %d, kind \"%s\"\n", t->path, TRACE_VERSION,
           trace_kind_name(t->kind));
    const cJSON *settings = cJSON_GetObjectItemCaseSensitive(root, "settings");
    if (settings) {
        printf("settings:\n");
        print_pairs(settings, "  ");
    } else {
        printf("settings: (absent)\n");
    }
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(root, "dataset");
    if (ds) {
        const char *p = trace_get_string(ds, "path");
        const char *sha = trace_get_string(ds, "sha256");
        double docs, bytes, vocab;
        printf("dataset: %s", p ? p : "(no path)");
        Buf b = {0};
        if (trace_get_number(ds, "documents", &docs) == 0)
            buf_printf(&b, "%s%s documents", b.n ? ", " : "", exact(docs));
        if (trace_get_number(ds, "bytes", &bytes) == 0)
            buf_printf(&b, "%s%s bytes", b.n ? ", " : "", exact(bytes));
        if (trace_get_number(ds, "vocab_size", &vocab) == 0)
            buf_printf(&b, "%svocab %s", b.n ? ", " : "", exact(vocab));
        if (sha) buf_printf(&b, "%ssha256 %.12s...", b.n ? ", " : "", sha);
        if (b.n) printf(" (%s)", b.s);
        printf("\n");
        buf_free(&b);
    } else {
        printf("dataset: (absent)\n");
    }
    if (t->kind == TRACE_KIND_TRAIN) {
        printf("engine: %s%s%s%s\n", t->engine[0], *t->precision[0] ? " (" : "", t->precision[0],
               *t->precision[0] ? ")" : "");
    } else {
        printf("engines: %s (%s%sreference), %s (%s%scandidate)\n", t->engine[0], t->precision[0],
               *t->precision[0] ? ", " : "", t->engine[1], t->precision[1],
               *t->precision[1] ? ", " : "");
        const char *mode = trace_get_string(root, "mode");
        const char *prec = trace_get_string(root, "precision");
        printf("mode: %s, precision: %s\n", mode ? mode : "(absent)", prec ? prec : "(absent)");
        const cJSON *tol = cJSON_GetObjectItemCaseSensitive(root, "tolerances");
        if (tol) {
            printf("tolerances:\n");
            const cJSON *q;
            cJSON_ArrayForEach(q, tol) {
                printf("  %-8s", q->string);
                if (!cJSON_IsObject(q)) {  // a single number, e.g. "drift"
                    Buf b = {0};
                    item_text(q, &b);
                    printf(" %s\n", b.s);
                    buf_free(&b);
                    continue;
                }
                double atol, rtol;
                int ha = trace_get_number(q, "atol", &atol) == 0;
                int hr = trace_get_number(q, "rtol", &rtol) == 0;
                printf(" atol %-9s rtol %s\n", ha ? fmtn("%.3g", atol) : "-", hr ? fmtn("%.3g", rtol) : "-");
            }
        }
    }
    double np;
    if (trace_get_number(root, "num_params", &np) == 0) printf("parameters: %s\n", exact(np));
    if (t->n_steps) printf("steps: %d (step %d to %d)\n", t->n_steps, t->steps[0].step,
                           t->steps[t->n_steps - 1].step);
    else printf("steps: 0\n");

    for (int e = 0; e < t->n_engines && t->n_steps; e++) {
        LossStats s;
        loss_stats(t, e, &s);
        const TraceStep *st = t->steps;
        if (t->n_engines > 1) printf("loss of %s (%s):\n", t->engine[e], e ? "candidate" : "reference");
        else printf("loss:\n");
        printf("  first    %-12s at step %d\n", fmtn("%.6g", st[s.first].loss[e]), st[s.first].step);
        printf("  last     %-12s at step %d\n", fmtn("%.6g", st[s.last].loss[e]), st[s.last].step);
        if (s.min >= 0) {
            printf("  min      %-12s at step %d\n", fmtn("%.6g", st[s.min].loss[e]), st[s.min].step);
            printf("  max      %-12s at step %d\n", fmtn("%.6g", st[s.max].loss[e]), st[s.max].step);
        }
        printf("  mean of the first %d steps  %s\n", s.k_first, fmtn("%.6g", s.mean_first));
        printf("  mean of the last %d steps   %s\n", s.k_last, fmtn("%.6g", s.mean_last));
        if (s.non_finite) printf("  non-finite (null) losses: %d\n", s.non_finite);
    }
    for (int e = 0; e < t->n_engines && t->n_steps; e++) {
        TimeStats ts;
        time_stats(t, e, &ts);
        if (t->n_engines > 1) printf("time per step of %s: ", t->engine[e]);
        else printf("time per step: ");
        if (ts.n) printf("mean %s ms, median %s ms (%s s over %d steps)\n",
                         fmtn("%.4g", ts.mean * 1e3), fmtn("%.4g", ts.median * 1e3),
                         fmtn("%.4g", ts.total), ts.n);
        else printf("not recorded\n");
    }
    double tt;
    if (trace_get_number(root, "train_time_s", &tt) == 0)
        printf("training time: %s s\n", fmtn("%.4g", tt));

    if (t->kind == TRACE_KIND_COMPARE) {
        const char *verdict = trace_get_string(root, "verdict");
        int nf = failed_steps(t);
        printf("verdict: %s", verdict ? verdict : "(absent)");
        if (nf) printf(" (%d of %d steps not ok)", nf, t->n_steps);
        printf("\n");
        const cJSON *ff = cJSON_GetObjectItemCaseSensitive(root, "first_failure");
        if (cJSON_IsObject(ff)) {
            Buf b = {0};
            failure_words(t, ff, &b);
            printf("first failure: %s\n", b.s);
            buf_free(&b);
            double nbad;
            if (trace_get_number(ff, "elements_out_of_tolerance", &nbad) == 0)
                printf("  elements out of tolerance at that step: %s\n", exact(nbad));
            const char *others = trace_get_string(ff, "tensors_out_of_tolerance");
            if (others) printf("  out of tolerance at that step: %s\n", others);
        } else if (ff) {
            printf("first failure: none\n");
        }
        const cJSON *drift = cJSON_GetObjectItemCaseSensitive(root, "drift");
        if (drift) {
            double ma, tol, step;
            int hm = trace_get_number(drift, "max_abs", &ma) == 0;
            int hs = trace_get_number(drift, "step", &step) == 0;
            int ht = trace_get_number(drift, "tol", &tol) == 0;
            printf("drift (free mode): max |a-b| %s", hm ? fmtn("%.3g", ma) : "?");
            if (hs) printf(" at step %s", exact(step));
            if (ht) printf(", tolerance %s", fmtn("%.3g", tol));
            printf("\n");
        }
        ErrTable tab;
        err_table(t, &tab);
        if (tab.n) {
            int w = 6;
            for (int i = 0; i < tab.n; i++)
                if ((int)strlen(tab.r[i].key) > w) w = (int)strlen(tab.r[i].key);
            printf("largest error over all steps:\n");
            printf("  %-8s %-*s  %-10s %-7s  %-10s %-7s  %-9s %-9s\n", "quantity", w, "name",
                   "max |a-b|", "step", "max rel", "step", "atol", "rtol");
            for (int i = 0; i < tab.n; i++) {
                const ErrRow *r = &tab.r[i];
                const char *q = quantity_of(r->key);
                double atol, rtol;
                tolerance_of(t, q, &atol, &rtol);
                char es[16] = "-", rs[16] = "-";
                if (r->err_i >= 0) snprintf(es, sizeof es, "%d", t->steps[r->err_i].step);
                if (r->rel_i >= 0) snprintf(rs, sizeof rs, "%d", t->steps[r->rel_i].step);
                printf("  %-8s %-*s  %-10s %-7s  %-10s %-7s  %-9s %-9s\n", q, w, r->key,
                       r->err_i >= 0 ? fmtn("%.3g", r->err) : "-", es,
                       r->rel_i >= 0 ? fmtn("%.3g", r->rel) : "-", rs,
                       isnan(atol) ? "-" : fmtn("%.3g", atol), isnan(rtol) ? "-" : fmtn("%.3g", rtol));
            }
        }
        free(tab.r);
        static const char *const extra[] = {"final_params", "bench"};
        for (size_t k = 0; k < sizeof extra / sizeof *extra; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, extra[k]);
            if (!cJSON_IsObject(v)) continue;
            printf("%s:\n", extra[k]);
            print_pairs(v, "  ");
        }
    }
    const cJSON *samples = cJSON_GetObjectItemCaseSensitive(root, "samples");
    if (samples) {
        printf("samples (%d):", cJSON_GetArraySize(samples));
        int col = 78;
        const cJSON *s;
        cJSON_ArrayForEach(s, samples) {
            int len = (int)strlen(s->valuestring) + 4;
            if (col + len > 78) {
                printf("\n ");
                col = 1;
            }
            col += printf(" \"%s\"%s", s->valuestring, s->next ? "," : "");
        }
        printf("\n");
    }
}

// A copy of a JSON value whose numbers print exactly (cJSON's own printer
// may drop the last bits).
static cJSON *dup_exact(const cJSON *v) {
    if (cJSON_IsNumber(v)) return trace_number(v->valuedouble);
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        cJSON *o = cJSON_IsArray(v) ? cJSON_CreateArray() : cJSON_CreateObject();
        const cJSON *c;
        cJSON_ArrayForEach(c, v) {
            if (cJSON_IsArray(v)) cJSON_AddItemToArray(o, dup_exact(c));
            else cJSON_AddItemToObject(o, c->string, dup_exact(c));
        }
        return o;
    }
    return cJSON_Duplicate(v, 1);
}

static cJSON *at_step(const TraceData *t, int i, int e) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", t->steps[i].step);
    trace_add_number(o, "value", t->steps[i].loss[e]);
    return o;
}

static void inspect_json(const TraceData *t) {
    const cJSON *root = t->root;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "file", t->path);
    cJSON_AddStringToObject(j, "format", TRACE_FORMAT);
    cJSON_AddNumberToObject(j, "version", TRACE_VERSION);
    cJSON_AddStringToObject(j, "kind", trace_kind_name(t->kind));
    const cJSON *settings = cJSON_GetObjectItemCaseSensitive(root, "settings");
    cJSON_AddItemToObject(j, "settings", settings ? dup_exact(settings) : cJSON_CreateNull());
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(root, "dataset");
    if (ds) {
        cJSON *d = cJSON_AddObjectToObject(j, "dataset");
        static const char *const keys[] = {"path", "documents", "bytes", "vocab_size", "sha256"};
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(ds, keys[k]);
            if (v) cJSON_AddItemToObject(d, keys[k], dup_exact(v));
        }
    } else {
        cJSON_AddNullToObject(j, "dataset");
    }
    cJSON *engines = cJSON_AddArrayToObject(j, "engines");
    for (int e = 0; e < t->n_engines; e++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->engine[e]);
        cJSON_AddStringToObject(o, "precision", t->precision[e]);
        cJSON_AddItemToArray(engines, o);
    }
    double np;
    if (trace_get_number(root, "num_params", &np) == 0) trace_add_number(j, "num_params", np);
    cJSON_AddNumberToObject(j, "steps", t->n_steps);
    cJSON *losses = cJSON_AddArrayToObject(j, "loss");
    cJSON *times = cJSON_AddArrayToObject(j, "time_per_step_s");
    for (int e = 0; e < t->n_engines && t->n_steps; e++) {
        LossStats s;
        loss_stats(t, e, &s);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "engine", t->engine[e]);
        cJSON_AddItemToObject(o, "first", at_step(t, s.first, e));
        cJSON_AddItemToObject(o, "last", at_step(t, s.last, e));
        cJSON_AddItemToObject(o, "min", s.min >= 0 ? at_step(t, s.min, e) : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "max", s.max >= 0 ? at_step(t, s.max, e) : cJSON_CreateNull());
        cJSON *mf = cJSON_AddObjectToObject(o, "mean_first");
        cJSON_AddNumberToObject(mf, "steps", s.k_first);
        trace_add_number(mf, "value", s.mean_first);
        cJSON *ml = cJSON_AddObjectToObject(o, "mean_last");
        cJSON_AddNumberToObject(ml, "steps", s.k_last);
        trace_add_number(ml, "value", s.mean_last);
        cJSON_AddNumberToObject(o, "non_finite", s.non_finite);
        cJSON_AddItemToArray(losses, o);

        TimeStats ts;
        time_stats(t, e, &ts);
        cJSON *to = cJSON_CreateObject();
        cJSON_AddStringToObject(to, "engine", t->engine[e]);
        trace_add_number(to, "mean", ts.mean);
        trace_add_number(to, "median", ts.median);
        trace_add_number(to, "total", ts.total);
        cJSON_AddNumberToObject(to, "steps", ts.n);
        cJSON_AddItemToArray(times, to);
    }
    double tt;
    if (trace_get_number(root, "train_time_s", &tt) == 0) trace_add_number(j, "train_time_s", tt);
    if (t->kind == TRACE_KIND_COMPARE) {
        static const char *const copy[] = {"mode", "precision", "tolerances", "verdict"};
        for (size_t k = 0; k < sizeof copy / sizeof *copy; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, copy[k]);
            cJSON_AddItemToObject(j, copy[k], v ? dup_exact(v) : cJSON_CreateNull());
        }
        cJSON_AddNumberToObject(j, "failed_steps", failed_steps(t));
        const cJSON *ff = cJSON_GetObjectItemCaseSensitive(root, "first_failure");
        if (cJSON_IsObject(ff)) {
            cJSON *o = dup_exact(ff);
            Buf b = {0};
            failure_words(t, ff, &b);
            cJSON_AddStringToObject(o, "text", b.s);
            buf_free(&b);
            cJSON_AddItemToObject(j, "first_failure", o);
        } else {
            cJSON_AddNullToObject(j, "first_failure");
        }
        ErrTable tab;
        err_table(t, &tab);
        cJSON *rows = cJSON_AddArrayToObject(j, "max_errors");
        for (int i = 0; i < tab.n; i++) {
            const ErrRow *r = &tab.r[i];
            cJSON *o = cJSON_CreateObject();
            const char *q = quantity_of(r->key);
            cJSON_AddStringToObject(o, "name", r->key);
            cJSON_AddStringToObject(o, "quantity", q);
            if (r->err_i >= 0) {
                trace_add_number(o, "max_err", r->err);
                cJSON_AddNumberToObject(o, "step", t->steps[r->err_i].step);
            }
            if (r->rel_i >= 0) {
                trace_add_number(o, "max_rel", r->rel);
                cJSON_AddNumberToObject(o, "rel_step", t->steps[r->rel_i].step);
            }
            double atol, rtol;
            tolerance_of(t, q, &atol, &rtol);
            if (!isnan(atol)) trace_add_number(o, "atol", atol);
            if (!isnan(rtol)) trace_add_number(o, "rtol", rtol);
            cJSON_AddItemToArray(rows, o);
        }
        free(tab.r);
        static const char *const opt[] = {"drift", "final_params", "bench"};
        for (size_t k = 0; k < sizeof opt / sizeof *opt; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, opt[k]);
            if (v) cJSON_AddItemToObject(j, opt[k], dup_exact(v));
        }
    }
    const cJSON *samples = cJSON_GetObjectItemCaseSensitive(root, "samples");
    if (samples) cJSON_AddItemToObject(j, "samples", cJSON_Duplicate(samples, 1));
    char *text = cJSON_Print(j);
    if (!text) die(EXIT_MISMATCH, "out of memory while printing JSON");
    printf("%s\n", text);
    free(text);
    cJSON_Delete(j);
}

static int cmd_inspect(int argc, char **argv) {
    const char *file = NULL;
    int json = 0, flags_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!flags_done && is_flag(a)) {
            if (!strcmp(a, "--")) flags_done = 1;
            else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
                inspect_usage(stdout);
                return 0;
            } else if (!strcmp(a, "--json")) json = 1;
            else unknown_flag("inspect", a);
        } else if (!file) {
            file = a;
        } else {
            die(EXIT_USAGE, "inspect: one FILE at a time ('%s' is extra; see trace inspect --help)", a);
        }
    }
    if (!file) die(EXIT_USAGE, "inspect: no FILE given (see trace inspect --help)");
    TraceData t = load_or_die(file);
    if (t.kind == TRACE_KIND_BENCH) bench_view_inspect(t.root, t.path, json);
    else if (json) inspect_json(&t);
    else inspect_text(&t);
    trace_data_free(&t);
    stdout_check();
    return 0;
}

// ---------------------------------------------------------------------------
// diff

static void diff_usage(FILE *f) {
    fprintf(f,
            "usage: trace diff A B [--tolerance X]\n"
            "Compare two traces of the same kind. Lists the settings and dataset fields\n"
            "that differ, then compares the losses step by step (for compare traces each\n"
            "engine's loss): bit-identical or not, the first step where they differ (both\n"
            "values with %%.17g and the distance in ulps), the largest absolute and relative\n"
            "difference and their steps. Also the learning rates, the step numbers, the\n"
            "samples (train) and the verdicts (compare). The engines, timings and the\n"
            "dataset path are shown but do not count as differences.\n\n"
            "  --tolerance X   treat relative differences |a-b|/max(|a|,|b|) <= X as equal\n"
            "                  (losses and learning rates); samples then do not count\n"
            "  --help          this text\n\n"
            "Exit codes: 0 same (losses bit-identical, or within X, and settings equal),\n"
            "1 the traces differ, 2 bad usage or an input that is not a readable trace.\n");
}

// Compare two JSON values exactly (numbers by their bits).
static int json_equal(const cJSON *a, const cJSON *b) {
    if (!a || !b) return a == b;
    if (cJSON_IsNumber(a) && cJSON_IsNumber(b)) return same_bits(a->valuedouble, b->valuedouble);
    if (cJSON_IsArray(a) && cJSON_IsArray(b)) {
        if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) return 0;
        const cJSON *x = a->child, *y = b->child;
        for (; x && y; x = x->next, y = y->next)
            if (!json_equal(x, y)) return 0;
        return 1;
    }
    if (cJSON_IsObject(a) && cJSON_IsObject(b)) {
        if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) return 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, a) {
            if (!json_equal(x, cJSON_GetObjectItemCaseSensitive(b, x->string))) return 0;
        }
        return 1;
    }
    return cJSON_Compare(a, b, 1);
}

static void print_value(const cJSON *v) {
    Buf b = {0};
    if (cJSON_IsString(v)) buf_printf(&b, "\"%s\"", v->valuestring);
    else item_text(v, &b);
    fputs(b.s, stdout);
    buf_free(&b);
}

// List the members of objects a and b that differ; `ignore` (may be NULL) is
// a member shown but not counted. Returns the number of counted differences.
static int diff_object(const char *what, const cJSON *a, const cJSON *b, const char *ignore) {
    if (!a && !b) {
        printf("%s: absent in both\n", what);
        return 0;
    }
    int counted = 0, shown = 0;
    Buf out = {0};
    const cJSON *pass[2] = {a, b};
    for (int p = 0; p < 2; p++) {
        const cJSON *x;
        cJSON_ArrayForEach(x, pass[p]) {
            const cJSON *in_a = cJSON_GetObjectItemCaseSensitive(a, x->string);
            const cJSON *in_b = cJSON_GetObjectItemCaseSensitive(b, x->string);
            if (p == 1 && in_a) continue;  // already seen in a's pass
            if (json_equal(in_a, in_b)) continue;
            int count = !(ignore && !strcmp(x->string, ignore));
            counted += count;
            shown++;
            buf_printf(&out, "  %s.%s: A = ", what, x->string);
            Buf v = {0};
            if (cJSON_IsString(in_a)) buf_printf(&v, "\"%s\"", in_a->valuestring);
            else item_text(in_a, &v);
            buf_printf(&out, "%s, B = ", v.s);
            v.n = 0;
            if (cJSON_IsString(in_b)) buf_printf(&v, "\"%s\"", in_b->valuestring);
            else item_text(in_b, &v);
            buf_printf(&out, "%s%s\n", v.s, count ? "" : " (not counted)");
            buf_free(&v);
        }
    }
    if (!a || !b) {
        printf("%s: only in %s\n", what, a ? "A" : "B");
        buf_free(&out);
        return 1;
    }
    if (!shown) printf("%s: equal\n", what);
    else if (!counted) printf("%s: equal except:\n%s", what, out.s);
    else printf("%s: %d difference%s\n%s", what, counted, counted == 1 ? "" : "s", out.s);
    buf_free(&out);
    return counted;
}

typedef struct {
    int n;               // steps compared (the common prefix)
    int n_bits;          // steps not bit-identical
    int n_diff;          // steps beyond the tolerance (= n_bits without one)
    int first_bits;      // index of the first step not bit-identical (-1: none)
    int first_diff;      // index of the first step beyond the tolerance (-1: none)
    double max_abs, max_rel;
    int max_abs_i, max_rel_i;
} SeriesDiff;

static void diff_series(const double *a, const double *b, int n, double tol, SeriesDiff *d) {
    memset(d, 0, sizeof *d);
    d->n = n;
    d->first_bits = d->first_diff = d->max_abs_i = d->max_rel_i = -1;
    for (int i = 0; i < n; i++) {
        if (same_bits(a[i], b[i])) continue;
        d->n_bits++;
        if (d->first_bits < 0) d->first_bits = i;
        double r = rel_diff(a[i], b[i]);
        double ab = isfinite(a[i]) && isfinite(b[i]) ? fabs(a[i] - b[i]) : INFINITY;
        if (!(r <= tol)) {
            d->n_diff++;
            if (d->first_diff < 0) d->first_diff = i;
        }
        if (d->max_abs_i < 0 || ab > d->max_abs) {
            d->max_abs = ab;
            d->max_abs_i = i;
        }
        if (d->max_rel_i < 0 || r > d->max_rel) {
            d->max_rel = r;
            d->max_rel_i = i;
        }
    }
}

static void print_pair_diff(const char *what, const double *a, const double *b, int i, int step) {
    printf("  first %s at step %d: A = %s, B = %s", what, step, fmtn("%.17g", a[i]),
           fmtn("%.17g", b[i]));
    if (isfinite(a[i]) && isfinite(b[i])) {
        uint64_t u = ulp_distance(a[i], b[i]);
        printf(" (B - A = %s, %llu ulp%s)\n", fmtn("%.3g", b[i] - a[i]), (unsigned long long)u,
               u == 1 ? "" : "s");
    } else {
        printf(" (not finite)\n");
    }
}

// Report one per-step series; returns 1 if it counts as a difference.
static int report_series(const char *name, const double *a, const double *b, const int *steps,
                         int n, double tol, int detail) {
    SeriesDiff d;
    diff_series(a, b, n, tol, &d);
    if (!d.n_bits) {
        printf("%s: bit-identical over %d step%s\n", name, n, n == 1 ? "" : "s");
        return 0;
    }
    if (!d.n_diff)
        printf("%s: not bit-identical at %d of %d steps, all within the relative tolerance %s\n",
               name, d.n_bits, n, fmtn("%.3g", tol));
    else if (tol > 0)
        printf("%s: %d of %d steps differ beyond the relative tolerance %s (%d not bit-identical)\n",
               name, d.n_diff, n, fmtn("%.3g", tol), d.n_bits);
    else
        printf("%s: %d of %d steps differ\n", name, d.n_diff, n);
    if (d.first_diff >= 0 && d.first_diff != d.first_bits)
        print_pair_diff("difference beyond the tolerance", a, b, d.first_diff, steps[d.first_diff]);
    print_pair_diff("difference", a, b, d.first_bits, steps[d.first_bits]);
    if (detail) {
        printf("  largest absolute difference %s at step %d\n", fmtn("%.3g", d.max_abs),
               steps[d.max_abs_i]);
        printf("  largest relative difference %s at step %d\n", fmtn("%.3g", d.max_rel),
               steps[d.max_rel_i]);
    }
    return d.n_diff > 0;
}

static int diff_samples(const TraceData *A, const TraceData *B, int counts) {
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(A->root, "samples");
    const cJSON *sb = cJSON_GetObjectItemCaseSensitive(B->root, "samples");
    if (!sa && !sb) return 0;
    if (!sa || !sb) {
        printf("samples: only in %s%s\n", sa ? "A" : "B", counts ? "" : " (not counted)");
        return counts;
    }
    int na = cJSON_GetArraySize(sa), nb = cJSON_GetArraySize(sb), n = na < nb ? na : nb;
    int ndiff = 0, first = -1;
    for (int i = 0; i < n; i++) {
        const char *x = cJSON_GetArrayItem(sa, i)->valuestring;
        const char *y = cJSON_GetArrayItem(sb, i)->valuestring;
        if (strcmp(x, y)) {
            ndiff++;
            if (first < 0) first = i;
        }
    }
    if (!ndiff && na == nb) {
        printf("samples: identical (%d)\n", na);
        return 0;
    }
    printf("samples: ");
    if (na != nb) printf("A has %d, B has %d; ", na, nb);
    printf("%d of %d differ%s\n", ndiff, n, counts ? "" : " (not counted with --tolerance)");
    int shown = 0;
    for (int i = first; i >= 0 && i < n && shown < 5; i++) {
        const char *x = cJSON_GetArrayItem(sa, i)->valuestring;
        const char *y = cJSON_GetArrayItem(sb, i)->valuestring;
        if (!strcmp(x, y)) continue;
        printf("  sample %d: A \"%s\", B \"%s\"\n", i + 1, x, y);
        shown++;
    }
    return counts;
}

static int cmd_diff(int argc, char **argv) {
    const char *files[2] = {NULL, NULL};
    int nfiles = 0, flags_done = 0;
    double tol = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!flags_done && is_flag(a)) {
            const char *v;
            if (!strcmp(a, "--")) flags_done = 1;
            else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
                diff_usage(stdout);
                return 0;
            } else if ((v = flag_value("diff", argc, argv, &i, "--tolerance"))) {
                if (parse_double(v, &tol) || tol < 0)
                    die(EXIT_USAGE, "diff: --tolerance '%s' is not a number >= 0", v);
            } else {
                unknown_flag("diff", a);
            }
        } else if (nfiles < 2) {
            files[nfiles++] = a;
        } else {
            die(EXIT_USAGE, "diff: two files A and B ('%s' is extra; see trace diff --help)", a);
        }
    }
    if (nfiles < 2) die(EXIT_USAGE, "diff: needs two files A and B (see trace diff --help)");
    TraceData A = load_or_die(files[0]), B = load_or_die(files[1]);
    if (A.kind != B.kind)
        die(EXIT_USAGE, "diff: %s is a %s trace but %s is a %s trace; diff compares traces of the "
            "same kind", B.path, trace_kind_name(B.kind), A.path, trace_kind_name(A.kind));

    printf("A: %s (%s trace, %d steps)\n", A.path, trace_kind_name(A.kind), A.n_steps);
    printf("B: %s (%s trace, %d steps)\n", B.path, trace_kind_name(B.kind), B.n_steps);
    Buf why = {0};
#define DIFFERS(what) buf_printf(&why, "%s%s", why.n ? ", " : "", what)
    if (diff_object("settings", cJSON_GetObjectItemCaseSensitive(A.root, "settings"),
                    cJSON_GetObjectItemCaseSensitive(B.root, "settings"), NULL))
        DIFFERS("settings");
    if (diff_object("dataset", cJSON_GetObjectItemCaseSensitive(A.root, "dataset"),
                    cJSON_GetObjectItemCaseSensitive(B.root, "dataset"), "path"))
        DIFFERS("dataset");
    if (A.kind == TRACE_KIND_COMPARE) {
        static const char *const setup[] = {"mode", "precision", "tolerances", "injected_fault"};
        for (size_t k = 0; k < sizeof setup / sizeof *setup; k++) {
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(A.root, setup[k]);
            const cJSON *y = cJSON_GetObjectItemCaseSensitive(B.root, setup[k]);
            if (json_equal(x, y)) continue;
            printf("%s: A = ", setup[k]);
            print_value(x);
            printf(", B = ");
            print_value(y);
            printf("\n");
            DIFFERS(setup[k]);
        }
    }
    for (int e = 0; e < A.n_engines; e++) {
        if (!strcmp(A.engine[e], B.engine[e]) && !strcmp(A.precision[e], B.precision[e])) continue;
        printf("%s: A = %s (%s), B = %s (%s) (not counted)\n",
               A.n_engines == 1 ? "engine" : e ? "candidate engine" : "reference engine", A.engine[e],
               A.precision[e], B.engine[e], B.precision[e]);
    }

    int n = A.n_steps < B.n_steps ? A.n_steps : B.n_steps;
    if (A.n_steps != B.n_steps) {
        printf("steps: A has %d, B has %d (comparing the first %d)\n", A.n_steps, B.n_steps, n);
        DIFFERS("number of steps");
    }
    int *steps = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *steps);
    double *va = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *va);
    double *vb = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *vb);
    int bad_step = -1;
    for (int i = 0; i < n; i++) {
        steps[i] = A.steps[i].step;
        if (A.steps[i].step != B.steps[i].step && bad_step < 0) bad_step = i;
    }
    if (bad_step >= 0) {
        printf("step numbers: differ from index %d on (A step %d, B step %d)\n", bad_step,
               A.steps[bad_step].step, B.steps[bad_step].step);
        DIFFERS("step numbers");
    }
    for (int e = 0; e < A.n_engines; e++) {
        char name[160];
        if (A.n_engines > 1)
            snprintf(name, sizeof name, "loss of %s (%s)", A.engine[e], e ? "candidate" : "reference");
        else snprintf(name, sizeof name, "loss");
        for (int i = 0; i < n; i++) {
            va[i] = A.steps[i].loss[e];
            vb[i] = B.steps[i].loss[e];
        }
        if (report_series(name, va, vb, steps, n, tol, 1)) DIFFERS(A.n_engines > 1 ? name : "loss");
    }
    for (int i = 0; i < n; i++) {
        va[i] = A.steps[i].lr;
        vb[i] = B.steps[i].lr;
    }
    if (report_series("lr", va, vb, steps, n, tol, 0)) DIFFERS("lr");

    if (A.kind == TRACE_KIND_TRAIN) {
        if (diff_samples(&A, &B, tol == 0)) DIFFERS("samples");
    } else {
        const char *x = trace_get_string(A.root, "verdict"), *y = trace_get_string(B.root, "verdict");
        if ((x || y) && (!x || !y || strcmp(x, y))) {
            printf("verdict: A = %s, B = %s\n", x ? x : "(absent)", y ? y : "(absent)");
            DIFFERS("verdict");
        } else if (x) {
            printf("verdict: both %s\n", x);
        }
        const cJSON *fa = cJSON_GetObjectItemCaseSensitive(A.root, "first_failure");
        const cJSON *fb = cJSON_GetObjectItemCaseSensitive(B.root, "first_failure");
        if (!json_equal(fa, fb)) {
            for (int k = 0; k < 2; k++) {
                const cJSON *f = k ? fb : fa;
                printf("first failure %c: ", 'A' + k);
                if (cJSON_IsObject(f)) {
                    Buf b = {0};
                    failure_words(k ? &B : &A, f, &b);
                    printf("%s\n", b.s);
                    buf_free(&b);
                } else {
                    printf("none\n");
                }
            }
        }
    }
    for (int e = 0; e < A.n_engines; e++) {
        TimeStats ta, tb;
        time_stats(&A, e, &ta);
        time_stats(&B, e, &tb);
        if (!ta.n && !tb.n) continue;
        printf("time per step%s%s: A mean %s ms, B mean %s ms (not counted)\n",
               A.n_engines > 1 ? " of " : "", A.n_engines > 1 ? A.engine[e] : "",
               fmtn("%.4g", ta.mean * 1e3), fmtn("%.4g", tb.mean * 1e3));
    }
#undef DIFFERS
    int differ = why.n > 0;
    if (differ) printf("result: the traces differ (%s)\n", why.s);
    else if (tol > 0) printf("result: the same within the relative tolerance %s\n", fmtn("%.3g", tol));
    else printf("result: the same (losses bit-identical, settings equal)\n");
    buf_free(&why);
    free(steps);
    free(va);
    free(vb);
    trace_data_free(&A);
    trace_data_free(&B);
    stdout_check();
    return differ ? EXIT_MISMATCH : 0;
}

// ---------------------------------------------------------------------------
// plot: series, axes, the text chart and the SVG

typedef struct {
    char *label;
    int n;
    double *x, *y;
    int dashed;
} Series;

typedef struct {
    const char *title;
    const char *ylabel;  // SVG: the y axis title
    int log;        // log10 y axis
    int use_max;    // text chart: a column shows the max of its steps (else the mean)
    int n, cap;
    Series *s;
    const char *empty_note;  // said instead of a chart when nothing can be drawn
} Panel;

static Series *panel_add(Panel *p, const char *label, int n, int dashed) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 4;
        p->s = xrealloc(p->s, (size_t)p->cap * sizeof *p->s);
    }
    Series *s = &p->s[p->n++];
    s->label = xstrdup(label);
    s->n = n;
    s->x = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *s->x);
    s->y = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *s->y);
    s->dashed = dashed;
    return s;
}

static void panel_free(Panel *p) {
    for (int i = 0; i < p->n; i++) {
        free(p->s[i].label);
        free(p->s[i].x);
        free(p->s[i].y);
    }
    free(p->s);
}

static int usable(const Panel *p, double y) { return isfinite(y) && (!p->log || y > 0); }

typedef struct {
    int log;
    double lo, hi;     // the axis range, in log10 units when log
    int nt;
    double tick[64];   // tick values (not log10)
} Axis;

static double axis_t(const Axis *a, double v) { return a->log ? log10(v) : v; }
static double axis_frac(const Axis *a, double v) { return (axis_t(a, v) - a->lo) / (a->hi - a->lo); }

static double nice_step(double x) {
    double e = floor(log10(x)), f = x / pow(10, e);
    double m = f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10;
    return m * pow(10, e);
}

// Ticks at multiples of a 1/2/5 step inside [lo, hi]; when `extend`, the
// range grows to the ticks just outside.
static void linear_ticks(Axis *a, double lo, double hi, int want, int extend) {
    double step = nice_step((hi - lo) / (want > 1 ? want - 1 : 1));
    double k0 = extend ? floor(lo / step) : ceil(lo / step - 1e-9);
    double k1 = extend ? ceil(hi / step) : floor(hi / step + 1e-9);
    a->nt = 0;
    for (double k = k0; k <= k1 && a->nt < 64; k++) {
        double v = k * step;
        if (fabs(v) < step * 1e-9) v = 0;
        a->tick[a->nt++] = v;
    }
    if (extend) {
        a->lo = k0 * step;
        a->hi = k1 * step;
    }
}

// An axis over [vmin, vmax] with about `want` ticks. `extend`: a linear
// axis grows to the ticks just outside the data (else it keeps the data
// range plus a small margin, ticks inside).
static void axis_make(Axis *a, double vmin, double vmax, int log_scale, int want, int extend) {
    memset(a, 0, sizeof *a);
    a->log = log_scale;
    if (!log_scale) {
        if (vmax - vmin <= fabs(vmax) * 1e-12) {
            double pad = vmin == 0 ? 1 : fabs(vmin) * 0.05;
            vmin -= pad;
            vmax += pad;
        }
        if (!extend) {
            double pad = (vmax - vmin) * 0.03;
            vmin -= pad;
            vmax += pad;
            a->lo = vmin;
            a->hi = vmax;
        }
        linear_ticks(a, vmin, vmax, want, extend);
        return;
    }
    double l0 = log10(vmin), l1 = log10(vmax);
    if (l1 - l0 >= 1) {
        // Decades, every `every`-th one labelled; the range is a whole number of those.
        int every = (int)ceil((ceil(l1) - floor(l0)) / (want > 1 ? want - 1 : 1));
        if (every < 1) every = 1;
        a->lo = floor(floor(l0) / every) * every;
        a->hi = ceil(ceil(l1) / every) * every;
        for (double k = a->lo; k <= a->hi && a->nt < 64; k += every) a->tick[a->nt++] = pow(10, k);
        return;
    }
    // Less than a decade: round numbers inside the data range, spaced logarithmically.
    if (l1 - l0 < 1e-9) {
        l0 -= 0.05;
        l1 += 0.05;
        vmin = pow(10, l0);
        vmax = pow(10, l1);
    }
    double pad = (l1 - l0) * 0.05;
    a->lo = l0 - pad;
    a->hi = l1 + pad;
    linear_ticks(a, pow(10, a->lo), pow(10, a->hi), want, 0);
    int k = 0;
    for (int i = 0; i < a->nt; i++)
        if (a->tick[i] > 0) a->tick[k++] = a->tick[i];
    a->nt = k;
}

// The x and y ranges of the usable points of a panel; 0 when there are none.
static int panel_range(const Panel *p, double *x0, double *x1, double *y0, double *y1) {
    int any = 0;
    for (int i = 0; i < p->n; i++)
        for (int k = 0; k < p->s[i].n; k++) {
            double x = p->s[i].x[k], y = p->s[i].y[k];
            if (!usable(p, y)) continue;
            if (!any || x < *x0) *x0 = x;
            if (!any || x > *x1) *x1 = x;
            if (!any || y < *y0) *y0 = y;
            if (!any || y > *y1) *y1 = y;
            any = 1;
        }
    return any;
}

static const char GLYPHS[] = "*o+x@%&$~^";
enum { MAX_SERIES = (int)sizeof GLYPHS - 1 };
static const char *const COLORS[MAX_SERIES] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                               "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                                               "#bcbd22", "#17becf"};

static const char *tick_label(double v) { return fmtn("%.4g", v); }

// The points of each series binned into W columns: val[si*W+c] is the mean
// (or max) of the usable points of series si in column c, cnt the number.
// Returns the number of points that cannot be drawn; *lo, *hi the range of
// the binned values (untouched when there are none).
static int bin_columns(const Panel *p, const Axis *ax, int W, double *val, int *cnt, double *lo,
                       double *hi) {
    int skipped = 0, any = 0;
    for (int si = 0; si < p->n; si++) {
        const Series *s = &p->s[si];
        double *v = val + (size_t)si * W;
        int *n = cnt + (size_t)si * W;
        for (int c = 0; c < W; c++) {
            v[c] = 0;
            n[c] = 0;
        }
        for (int k = 0; k < s->n; k++) {
            if (!usable(p, s->y[k])) {
                skipped++;
                continue;
            }
            int c = (int)lround(axis_frac(ax, s->x[k]) * (W - 1));
            if (c < 0 || c >= W) continue;
            if (p->use_max) v[c] = n[c] ? fmax(v[c], s->y[k]) : s->y[k];
            else v[c] += s->y[k];
            n[c]++;
        }
        for (int c = 0; c < W; c++) {
            if (!n[c]) continue;
            if (!p->use_max) v[c] /= n[c];
            if (!any || v[c] < *lo) *lo = v[c];
            if (!any || v[c] > *hi) *hi = v[c];
            any = 1;
        }
    }
    return skipped;
}

static int label_width(const Axis *a) {
    int lw = 1;
    for (int i = 0; i < a->nt; i++) {
        int l = (int)strlen(tick_label(a->tick[i]));
        if (l > lw) lw = l;
    }
    return lw;
}

static void text_panel(const Panel *p, const Axis *ax, int width, int height) {
    double x0 = 0, x1 = 0, y0 = 0, y1 = 0;
    if (!panel_range(p, &x0, &x1, &y0, &y1)) {
        printf("%s: %s\n\n", p->title, p->empty_note);
        return;
    }
    int H = height, want = height >= 12 ? 5 : 3;
    // The y range is that of the binned values (what is drawn); the plot
    // width depends on the tick labels, which depend on the range: settle it.
    Axis ay;
    axis_make(&ay, y0, y1, p->log, want, 0);
    int lw = label_width(&ay), W = 0;
    double *val = NULL;
    int *cnt = NULL, skipped = 0;
    for (int pass = 0; pass < 3; pass++) {
        int w = width - lw - 2;
        if (w < 10) w = 10;
        if (w == W) break;
        W = w;
        val = xrealloc(val, (size_t)p->n * (size_t)W * sizeof *val);
        cnt = xrealloc(cnt, (size_t)p->n * (size_t)W * sizeof *cnt);
        double lo = y0, hi = y1;
        skipped = bin_columns(p, ax, W, val, cnt, &lo, &hi);
        axis_make(&ay, lo, hi, p->log, want, 0);
        int l = label_width(&ay);
        if (l > lw) lw = l;
    }
    // Steps per column, for the title.
    int most = 0;
    for (int i = 0; i < p->n; i++) if (p->s[i].n > most) most = p->s[i].n;
    double per_col = (double)most / W;
    printf("%s", p->title);
    if (per_col > 1)
        printf(" (each column: the %s of about %.0f steps)", p->use_max ? "max" : "mean", ceil(per_col));
    printf("\n");

    char *grid = xmalloc((size_t)W * (size_t)H);
    int *owner = xmalloc((size_t)W * (size_t)H * sizeof *owner);
    memset(grid, ' ', (size_t)W * (size_t)H);
    for (int c = 0; c < W * H; c++) owner[c] = -1;
    int overlap = 0;
    for (int si = 0; si < p->n; si++) {
        for (int c = 0; c < W; c++) {
            if (!cnt[(size_t)si * W + c]) continue;
            double v = val[(size_t)si * W + c];
            int r = (int)lround((1 - axis_frac(&ay, v)) * (H - 1));
            if (r < 0) r = 0;
            if (r >= H) r = H - 1;
            int cell = r * W + c;
            if (owner[cell] < 0 || owner[cell] == si) {
                grid[cell] = GLYPHS[si];
                owner[cell] = si;
            } else {
                grid[cell] = '#';
                overlap = 1;
            }
        }
    }
    free(val);
    free(cnt);
    // Rows, with the y ticks at their nearest rows.
    const char **label = xcalloc((size_t)H, sizeof *label);
    for (int i = 0; i < ay.nt; i++) {
        int r = (int)lround((1 - axis_frac(&ay, ay.tick[i])) * (H - 1));
        if (r >= 0 && r < H && !label[r]) label[r] = tick_label(ay.tick[i]);
    }
    for (int r = 0; r < H; r++) {
        printf("%*s %c%.*s\n", lw, label[r] ? label[r] : "", label[r] ? '+' : '|', W, grid + r * W);
    }
    // The x axis: a line with '+' at the ticks, the tick labels under them.
    char *line = xmalloc((size_t)W + 1), *labels = xmalloc((size_t)W + 32);
    memset(line, '-', (size_t)W);
    line[W] = '\0';
    memset(labels, ' ', (size_t)W + 31);
    labels[W + 31] = '\0';
    int used_to = -1;
    for (int i = 0; i < ax->nt; i++) {
        double f = axis_frac(ax, ax->tick[i]);
        if (f < -1e-9 || f > 1 + 1e-9) continue;
        int c = (int)lround(f * (W - 1));
        line[c] = '+';
        const char *t = tick_label(ax->tick[i]);
        int l = (int)strlen(t), start = c - l / 2;
        if (start < 0) start = 0;
        if (start <= used_to + 1 || start + l > W + 30) continue;
        memcpy(labels + start, t, (size_t)l);
        used_to = start + l - 1;
    }
    int end = W + 30;
    while (end > 0 && labels[end] == ' ') end--;
    labels[end + 1] = '\0';
    printf("%*s +%s\n", lw, "", line);
    printf("%*s  %s\n", lw, "", labels);
    printf("%*s  %*s\n", lw, "", W / 2 + 2, "step");
    for (int si = 0; si < p->n; si++)
        printf("%s %c %s\n", si ? "       " : "legend:", GLYPHS[si], p->s[si].label);
    if (overlap) printf("        # where curves overlap\n");
    if (skipped)
        printf("(%d point%s not drawn: %s)\n", skipped, skipped == 1 ? "" : "s",
               p->log ? "null, zero or negative on a log scale" : "null");
    printf("\n");
    free(line);
    free(labels);
    free(label);
    free(grid);
    free(owner);
}

static void xml_text(Buf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
            case '&': buf_printf(b, "&amp;"); break;
            case '<': buf_printf(b, "&lt;"); break;
            case '>': buf_printf(b, "&gt;"); break;
            case '"': buf_printf(b, "&quot;"); break;
            case '\'': buf_printf(b, "&apos;"); break;
            default:
                if ((unsigned char)*s < 0x20) buf_printf(b, " ");
                else buf_printf(b, "%c", *s);
        }
    }
}

static void svg_panel(Buf *b, const Panel *p, const Axis *ax, double top, double width,
                      double height) {
    const double ml = 78, mr = 20, mt = 30, mb = 44;
    double left = ml, pw = width - ml - mr, ptop = top + mt, ph = height - mt - mb;
    buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"14\" font-weight=\"bold\">", left,
               top + 19);
    xml_text(b, p->title);
    buf_printf(b, "</text>\n");
    double x0 = 0, x1 = 0, y0 = 0, y1 = 0;
    if (!panel_range(p, &x0, &x1, &y0, &y1)) {
        buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                      "stroke=\"#999\"/>\n", left, ptop, pw, ph);
        buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#555\">",
                   left + pw / 2, ptop + ph / 2);
        xml_text(b, p->empty_note);
        buf_printf(b, "</text>\n");
        return;
    }
    Axis ay;
    axis_make(&ay, y0, y1, p->log, ph >= 200 ? 6 : 4, 0);
    // Grid and y ticks.
    for (int i = 0; i < ay.nt; i++) {
        double y = ptop + (1 - axis_frac(&ay, ay.tick[i])) * ph;
        if (y < ptop - 0.5 || y > ptop + ph + 0.5) continue;
        buf_printf(b, "<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#e4e4e4\"/>\n",
                   left, y, left + pw, y);
        buf_printf(b, "<text x=\"%.1f\" y=\"%.2f\" text-anchor=\"end\">%s</text>\n", left - 6,
                   y + 4, tick_label(ay.tick[i]));
    }
    for (int i = 0; i < ax->nt; i++) {
        double f = axis_frac(ax, ax->tick[i]);
        if (f < -1e-9 || f > 1 + 1e-9) continue;
        double x = left + f * pw;
        buf_printf(b, "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n",
                   x, ptop, x, ptop + ph);
        buf_printf(b, "<text x=\"%.2f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x,
                   ptop + ph + 16, tick_label(ax->tick[i]));
    }
    buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                  "stroke=\"#333\"/>\n", left, ptop, pw, ph);
    buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", left + pw / 2,
               ptop + ph + 34);
    buf_printf(b, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
               16.0, ptop + ph / 2, p->ylabel);
    // The curves: one path each, broken where a point cannot be drawn.
    buf_printf(b, "<g fill=\"none\" stroke-width=\"1.5\" stroke-linejoin=\"round\">\n");
    for (int si = 0; si < p->n; si++) {
        const Series *s = &p->s[si];
        buf_printf(b, "<path stroke=\"%s\"%s d=\"", COLORS[si],
                   s->dashed ? " stroke-dasharray=\"6 3\"" : "");
        int pen = 0, pts = 0;
        for (int k = 0; k < s->n; k++) {
            if (!usable(p, s->y[k])) {
                pen = 0;
                continue;
            }
            double x = left + axis_frac(ax, s->x[k]) * pw;
            double y = ptop + (1 - axis_frac(&ay, s->y[k])) * ph;
            buf_printf(b, "%s%.2f %.2f", pen ? " L" : (pts ? " M" : "M"), x, y);
            pen = 1;
            pts++;
        }
        // A lone point would draw nothing: mark it with a dot.
        if (pts == 1) buf_printf(b, " h0.01\" stroke-linecap=\"round\" stroke-width=\"4");
        buf_printf(b, "\"/>\n");
    }
    buf_printf(b, "</g>\n");
    // Legend, in the top right corner of the plot.
    int longest = 0;
    for (int si = 0; si < p->n; si++)
        if ((int)strlen(p->s[si].label) > longest) longest = (int)strlen(p->s[si].label);
    double lwid = 40 + longest * 6.6, lhei = 8 + 16 * p->n;
    double lx = left + pw - lwid - 8, ly = ptop + 8;
    if (lx < left + 4) lx = left + 4;
    buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" "
                  "fill-opacity=\"0.85\" stroke=\"#bbb\"/>\n", lx, ly, lwid, lhei);
    for (int si = 0; si < p->n; si++) {
        double y = ly + 14 + 16 * si;
        buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                      "stroke-width=\"2\"%s/>\n", lx + 6, y - 4, lx + 30, y - 4, COLORS[si],
                   p->s[si].dashed ? " stroke-dasharray=\"6 3\"" : "");
        buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">", lx + 36, y);
        xml_text(b, p->s[si].label);
        buf_printf(b, "</text>\n");
    }
}

static void svg_render(Buf *b, const Panel *panels, int np, const Axis *ax, int width, int height) {
    buf_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                  "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
               width, height, width, height);
    buf_printf(b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    double top = 0;
    for (int i = 0; i < np; i++) {
        double h = np == 1 ? height : (i == 0 ? 0.55 : 0.45) * height;
        svg_panel(b, &panels[i], ax, top, width, h);
        top += h;
    }
    buf_printf(b, "</svg>\n");
}

static void plot_usage(FILE *f) {
    fprintf(f,
            "usage: trace plot FILE [FILE...] [--svg OUT.svg] [--width N] [--height N] [--log]\n"
            "Plot the loss curves of one or more traces: a text chart on stdout, each\n"
            "curve with its own glyph (a column shows the mean of the steps it covers;\n"
            "'#' where curves overlap), axes with values and a legend. Compare traces add\n"
            "both engines' losses, and a second panel with the largest logits error and\n"
            "the largest gradient error of each step on a log scale.\n\n"
            "  --svg OUT.svg  also write the chart as an SVG line chart to OUT.svg (atomic:\n"
            "                 written to a temporary file and renamed; never partial)\n"
            "  --width N      text chart width in characters (default 80, 30..1000); with\n"
            "                 --svg, the SVG width in pixels instead (default 900, 200..20000)\n"
            "  --height N     text chart height in rows (default 20, 5..500); with --svg, the\n"
            "                 SVG height in pixels instead (default 520 or 760 with two\n"
            "                 panels, 150..20000)\n"
            "  --log          log scale for the loss axis\n"
            "  --help         this text\n\n"
            "Exit codes: 0 ok, 1 OUT.svg could not be written, 2 bad usage or an input that\n"
            "is not a readable trace.\n");
}

// Largest grads error of a step: the "grads" entry or the largest "*.grad" entry.
static double step_grad_err(const TraceStep *s) {
    double best = NAN;
    int any = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, s->max_err) {
        if (strcmp(quantity_of(v->string), "grads") != 0) continue;
        double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        if (!any || isnan(x) || (!isnan(best) && x > best)) best = x;
        any = 1;
    }
    return best;
}

static int cmd_plot(int argc, char **argv) {
    const char **files = xcalloc((size_t)argc, sizeof *files);
    int nfiles = 0, flags_done = 0, log_scale = 0;
    const char *svg = NULL;
    long width = -1, height = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!flags_done && is_flag(a)) {
            const char *v;
            if (!strcmp(a, "--")) flags_done = 1;
            else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
                plot_usage(stdout);
                free(files);
                return 0;
            } else if (!strcmp(a, "--log")) log_scale = 1;
            else if ((v = flag_value("plot", argc, argv, &i, "--svg"))) {
                if (!*v) die(EXIT_USAGE, "plot: --svg needs a file name");
                svg = v;
            } else if ((v = flag_value("plot", argc, argv, &i, "--width"))) {
                if (parse_int(v, 1, 100000, &width))
                    die(EXIT_USAGE, "plot: --width '%s' is not a positive integer", v);
            } else if ((v = flag_value("plot", argc, argv, &i, "--height"))) {
                if (parse_int(v, 1, 100000, &height))
                    die(EXIT_USAGE, "plot: --height '%s' is not a positive integer", v);
            } else {
                unknown_flag("plot", a);
            }
        } else {
            files[nfiles++] = a;
        }
    }
    if (!nfiles) die(EXIT_USAGE, "plot: no FILE given (see trace plot --help)");
    long tw = 80, th = 20, sw = 900, sh = -1;
    if (svg) {
        if (width >= 0) sw = width;
        if (height >= 0) sh = height;
        if (sw < 200 || sw > 20000) die(EXIT_USAGE, "plot: --width %ld: the SVG width must be 200..20000 pixels", sw);
        if (sh >= 0 && (sh < 150 || sh > 20000))
            die(EXIT_USAGE, "plot: --height %ld: the SVG height must be 150..20000 pixels", sh);
        struct stat st;
        if (stat(svg, &st) == 0 && S_ISDIR(st.st_mode))
            die(EXIT_USAGE, "--svg %s: is a directory", svg);
    } else {
        if (width >= 0) tw = width;
        if (height >= 0) th = height;
        if (tw < 30 || tw > 1000) die(EXIT_USAGE, "plot: --width %ld: the text chart width must be 30..1000", tw);
        if (th < 5 || th > 500) die(EXIT_USAGE, "plot: --height %ld: the text chart height must be 5..500", th);
    }

    TraceData *t = xcalloc((size_t)nfiles, sizeof *t);
    for (int f = 0; f < nfiles; f++) t[f] = load_or_die(files[f]);
    if (t[0].kind == TRACE_KIND_BENCH) {   // ms/step per size and engine
        if (nfiles > 1) die(EXIT_USAGE, "plot: a bench trace is drawn alone (%s is one)", files[0]);
        int rc = bench_view_plot(t[0].root, svg, svg ? (int)sw : (int)tw, svg ? (int)sh : -1);
        trace_data_free(&t[0]);
        free(t);
        free(files);
        return rc;
    }
    for (int f = 1; f < nfiles; f++)
        if (t[f].kind == TRACE_KIND_BENCH) die(EXIT_USAGE, "plot: a bench trace is drawn alone (%s is one)", files[f]);

    Panel panels[2] = {{0}, {0}};
    Panel *loss = &panels[0], *errs = &panels[1];
    loss->title = log_scale ? "loss (log scale)" : "loss";
    loss->log = log_scale;
    loss->ylabel = "loss";
    loss->empty_note = "no finite losses to draw";
    errs->title = "largest error per step (log scale)";
    errs->log = 1;
    errs->ylabel = "max |a-b|";
    errs->use_max = 1;
    int n_compare = 0, have_err = 0;
    for (int f = 0; f < nfiles; f++) {
        const TraceData *d = &t[f];
        for (int e = 0; e < d->n_engines; e++) {
            char label[1024];
            if (d->n_engines > 1 || nfiles > 1) snprintf(label, sizeof label, "%s: %s", d->path, d->engine[e]);
            else snprintf(label, sizeof label, "%s", d->engine[e]);
            if (loss->n == MAX_SERIES)
                die(EXIT_USAGE, "plot: too many curves (at most %d: a train trace has one, a compare trace two)",
                    MAX_SERIES);
            Series *s = panel_add(loss, label, d->n_steps, e == 1);
            for (int i = 0; i < d->n_steps; i++) {
                s->x[i] = d->steps[i].step;
                s->y[i] = d->steps[i].loss[e];
            }
        }
        if (d->kind != TRACE_KIND_COMPARE) continue;
        n_compare++;
        // logits and grads (lockstep); a trace with neither (free mode) shows
        // its loss difference instead.
        static const char *const qs[3] = {"logits", "grads", "loss"};
        int has[3] = {0, 0, 0};
        for (int i = 0; i < d->n_steps; i++) {
            const cJSON *v;
            cJSON_ArrayForEach(v, d->steps[i].max_err) {
                const char *q = quantity_of(v->string);
                for (int k = 0; k < 3; k++) has[k] |= !strcmp(q, qs[k]);
            }
        }
        if (has[0] || has[1]) has[2] = 0;
        for (int q = 0; q < 3; q++) {
            if (!has[q]) continue;
            char label[1024];
            const char *what = q == 2 ? "loss |a-b|" : qs[q];
            if (nfiles > 1) snprintf(label, sizeof label, "%s: %s", d->path, what);
            else snprintf(label, sizeof label, "%s", what);
            if (errs->n == MAX_SERIES) die(EXIT_USAGE, "plot: too many compare traces for the error panel");
            Series *s = panel_add(errs, label, d->n_steps, q == 1);
            for (int i = 0; i < d->n_steps; i++) {
                double v = NAN;
                if (q == 1) v = step_grad_err(&d->steps[i]);
                else trace_get_number(d->steps[i].max_err, qs[q], &v);
                s->x[i] = d->steps[i].step;
                s->y[i] = v;
                if (!isnan(v)) have_err = 1;
            }
        }
    }
    errs->empty_note = have_err ? "every error is exactly 0 (nothing to draw on a log scale)"
                                : "no per-step errors (max_err) in the trace";
    int np = n_compare ? 2 : 1;

    // One x axis (steps) for every panel.
    double x0 = 0, x1 = 0, y0, y1;
    int any = 0;
    for (int p = 0; p < np; p++) {
        double a = 0, b = 0;
        if (!panel_range(&panels[p], &a, &b, &y0, &y1)) continue;
        if (!any || a < x0) x0 = a;
        if (!any || b > x1) x1 = b;
        any = 1;
    }
    if (!any) {
        Buf b = {0};
        for (int f = 0; f < nfiles; f++) buf_printf(&b, "%s%s", f ? ", " : "", files[f]);
        die(EXIT_USAGE, "plot: %s: nothing to plot (no steps with a finite%s loss)", b.s,
            log_scale ? ", positive" : "");
    }
    Axis ax;
    if (x1 == x0) {
        x0 -= 1;
        x1 += 1;
    }
    axis_make(&ax, x0, x1, 0, svg ? (int)(sw / 110) : (int)(tw / 12), 1);
    // the SVG's path is checked before anything is printed (common/atomic_file.h);
    // "--svg -" writes the SVG alone to stdout
    char aerr[512];
    OutFile out;
    if (svg && outfile_open(&out, svg, aerr, sizeof aerr)) die(EXIT_USAGE, "--svg %s: %s", svg, aerr);
    int to_stdout = svg && out.kind == OUT_STDOUT;
    if (!to_stdout)
        for (int p = 0; p < np; p++) text_panel(&panels[p], &ax, (int)tw, (int)th);

    int rc = 0;
    if (svg) {
        if (sh < 0) sh = np == 2 ? 760 : 520;
        Buf b = {0};
        svg_render(&b, panels, np, &ax, (int)sw, (int)sh);
        if (outfile_write(&out, b.s, b.n, aerr, sizeof aerr))
            die(EXIT_MISMATCH, "--svg %s: could not write the file: %s", svg, aerr);
        if (!to_stdout) printf("wrote %s\n", svg);
        buf_free(&b);
    }
    for (int p = 0; p < 2; p++) panel_free(&panels[p]);
    for (int f = 0; f < nfiles; f++) trace_data_free(&t[f]);
    free(t);
    free(files);
    stdout_check();
    return rc;
}

// ---------------------------------------------------------------------------

static void usage(FILE *f) {
    fprintf(f,
            "usage: trace COMMAND [ARGS]\n"
            "Inspect, compare and plot the JSON traces written by microgpt and compare\n"
            "(--trace FILE). docs/traces.md describes the format.\n\n"
            "commands:\n"
            "  inspect FILE [--json]          a summary of one trace\n"
            "  diff A B [--tolerance X]       compare two traces of the same kind step by step\n"
            "  plot FILE... [--svg OUT.svg]   loss curves as a text chart, optionally an SVG\n"
            "  help [COMMAND]                 this text, or a command's\n\n"
            "`trace COMMAND --help` describes a command and its flags.\n"
            "Exit codes: 0 ok (diff: the same), 1 diff found differences or an output file\n"
            "could not be written, 2 bad usage or an input that is not a readable trace.\n");
}

int main(int argc, char **argv) {
    set_prog_name(argv[0]);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        const char *topic = argc > 2 && !strcmp(cmd, "help") ? argv[2] : NULL;
        if (!topic) usage(stdout);
        else if (!strcmp(topic, "inspect")) inspect_usage(stdout);
        else if (!strcmp(topic, "diff")) diff_usage(stdout);
        else if (!strcmp(topic, "plot")) plot_usage(stdout);
        else die(EXIT_USAGE, "help: unknown command '%s' (commands: inspect, diff, plot)", topic);
        return 0;
    }
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 1, argv + 1);
    if (!strcmp(cmd, "diff")) return cmd_diff(argc - 1, argv + 1);
    if (!strcmp(cmd, "plot")) return cmd_plot(argc - 1, argv + 1);
    if (is_flag(cmd)) die(EXIT_USAGE, "unknown flag '%s' before the command (see trace --help)", cmd);
    die(EXIT_USAGE, "unknown command '%s' (commands: inspect, diff, plot; see trace --help)", cmd);
}
