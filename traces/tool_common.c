// What the trace subcommands share: text buffers, number formats, loading,
// flags, loss and time statistics, the per-tensor error table, failures.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic_file.h"
#include "common/util.h"
#include "traces/tool.h"
#include "traces/trace.h"
#include "traces/trace_read.h"

// ---------------------------------------------------------------------------
// Small helpers


// Formatted numbers in a ring of static buffers (several per printf call).
const char *fmtn(const char *fmt, double x) {
    static char ring[16][48];
    static int k;
    char *b = ring[k++ % 16];
    if (isnan(x)) snprintf(b, 48, "null");
    else if (isinf(x)) snprintf(b, 48, "%s", x > 0 ? "inf" : "-inf");
    else snprintf(b, 48, fmt, x);
    return b;
}

// The exact text of a double (what the writer wrote).
const char *exact(double x) {
    static char ring[16][32];
    static int k;
    char *b = ring[k++ % 16];
    trace_format_number(x, b);
    return b;
}

int same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

// Distance in units in the last place (representable doubles between a and b).
uint64_t ulp_distance(double a, double b) {
    int64_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    if (ia < 0) ia = INT64_MIN - ia;
    if (ib < 0) ib = INT64_MIN - ib;
    return ia > ib ? (uint64_t)ia - (uint64_t)ib : (uint64_t)ib - (uint64_t)ia;
}

// |a-b| / max(|a|, |b|): symmetric, 0 when both are 0, inf when one is not finite.
double rel_diff(double a, double b) {
    if (!isfinite(a) || !isfinite(b)) return same_bits(a, b) ? 0 : INFINITY;
    double d = fabs(a - b), m = fmax(fabs(a), fabs(b));
    return m == 0 ? 0 : d / m;
}

TraceData load_or_die(const char *path) {
    TraceData t;
    char err[1024];
    if (trace_load(&t, path, err, sizeof err)) die(EXIT_USAGE, "%s", err);
    return t;
}

int is_flag(const char *a) { return a[0] == '-' && a[1] != '\0'; }

// "--name value" or "--name=value": returns the value (advancing *i) when
// argv[*i] is that flag, NULL when it is another one.
const char *flag_value(const char *cmd, int argc, char **argv, int *i, const char *name) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return NULL;
    if (a[n] == '=') return a + n + 1;
    if (a[n] != '\0') return NULL;
    if (*i + 1 >= argc) die(EXIT_USAGE, "%s: %s needs a value (see trace %s --help)", cmd, name, cmd);
    return argv[++*i];
}

void unknown_flag(const char *cmd, const char *flag) {
    die(EXIT_USAGE, "%s: unknown flag '%s' (see trace %s --help)", cmd, flag, cmd);
}

// ---------------------------------------------------------------------------
// Statistics

enum { MEAN_WINDOW = 100 };


double window_mean(const TraceData *t, int e, int from, int to) {
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

void loss_stats(const TraceData *t, int e, LossStats *s) {
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


int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void time_stats(const TraceData *t, int e, TimeStats *s) {
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
const char *quantity_of(const char *key) {
    char tensor[64];
    return trace_key_quantity(key, tensor);
}



// The row of key (a hash lookup: a map of 200k keys is read in linear time).
ErrRow *err_row(ErrTable *t, const char *key) {
    int i = strindex_put(&t->index, key, t->n);
    if (i >= 0) return &t->r[i];
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

void take_max(double v, int i, double *best, int *best_i) {
    if (*best_i >= 0 && (isnan(*best) || !(isnan(v) || v > *best))) return;
    *best = v;
    *best_i = i;
}

void err_table(const TraceData *t, ErrTable *tab) {
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

void err_table_free(ErrTable *tab) {
    free(tab->r);
    strindex_free(&tab->index);
    memset(tab, 0, sizeof *tab);
}

// tolerances[quantity].atol / .rtol (NaN when absent).
void tolerance_of(const TraceData *t, const char *quantity, double *atol, double *rtol) {
    const cJSON *tol = cJSON_GetObjectItemCaseSensitive(t->root, "tolerances");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(tol, quantity);
    if (trace_get_number(q, "atol", atol)) *atol = NAN;
    if (trace_get_number(q, "rtol", rtol)) *rtol = NAN;
}

// The value of a JSON item as short text: numbers exactly, strings as
// text_safe() shows them (a trace's text reaches the terminal).
void item_text(const cJSON *v, StrBuf *b) {
    if (!v) sb_printf(b, "(absent)");
    else if (cJSON_IsNumber(v)) sb_printf(b, "%s", exact(v->valuedouble));
    else if (cJSON_IsString(v)) sb_printf(b, "%s", text_safe(v->valuestring));
    else if (cJSON_IsNull(v)) sb_printf(b, "null");
    else if (cJSON_IsBool(v)) sb_printf(b, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else {
        char *s = cJSON_PrintUnformatted(v);
        if (!s) die(EXIT_MISMATCH, "out of memory");
        sb_printf(b, "%s", text_safe_n(s, (size_t)-1, strlen(s) > 72 ? 69 : 0));
        free(s);
    }
}

// first_failure in words, e.g. "step 7: grads of layer0.attn_wq.grad, index
// 37 (row 2, col 5): scalar = ..., cpu = ..., |a-b| = 1.2e-10 > tolerance 1e-12".
void failure_words(const TraceData *t, const cJSON *ff, StrBuf *b) {
    double step, index, a, bv, abs_err;
    int has_a = trace_get_number(ff, "a", &a) == 0;
    int has_b = trace_get_number(ff, "b", &bv) == 0;
    if (trace_get_number(ff, "step", &step) == 0) sb_printf(b, "step %s: ", exact(step));
    const char *q = trace_get_string(ff, "quantity");
    const char *tensor = trace_get_string(ff, "tensor");
    sb_printf(b, "%s", q ? text_safe(q) : "a value");
    if (tensor && (!q || strcmp(tensor, q) != 0)) sb_printf(b, " of %s", text_safe(tensor));
    sb_printf(b, " out of tolerance");
    if (trace_get_number(ff, "index", &index) == 0) sb_printf(b, " at index %s", exact(index));
    const cJSON *where = cJSON_GetObjectItemCaseSensitive(ff, "where");
    if (where && !cJSON_IsNull(where)) {
        sb_printf(b, ", ");
        item_text(where, b);
    }
    // As compare writes them: a is the candidate (engines[1]), b the reference (engines[0]).
    if (has_a || has_b) {
        sb_printf(b, ": %s = %s, %s (reference) = %s", text_safe(t->engine[1]), has_a ? fmtn("%.17g", a) : "?",
                   text_safe(t->engine[0]), has_b ? fmtn("%.17g", bv) : "?");
    }
    int has_err = trace_get_number(ff, "abs_err", &abs_err) == 0;
    if (!has_err && has_a && has_b) {
        abs_err = fabs(a - bv);
        has_err = 1;
    }
    if (has_err) sb_printf(b, ", |a-b| = %s", fmtn("%.3g", abs_err));
    const cJSON *tol = cJSON_GetObjectItemCaseSensitive(ff, "tol");
    if (cJSON_IsNumber(tol)) {
        sb_printf(b, " > tolerance %s", fmtn("%.3g", tol->valuedouble));
    } else if (cJSON_IsObject(tol)) {
        double atol, rtol;
        int ha = trace_get_number(tol, "atol", &atol) == 0;
        int hr = trace_get_number(tol, "rtol", &rtol) == 0;
        sb_printf(b, " beyond the tolerance");
        if (ha) sb_printf(b, " atol %s", fmtn("%.3g", atol));
        if (hr) sb_printf(b, "%s rtol %s", ha ? "," : "", fmtn("%.3g", rtol));
    } else if (tol && !cJSON_IsNull(tol)) {
        sb_printf(b, " beyond the tolerance ");
        item_text(tol, b);
    }
}

int failed_steps(const TraceData *t) {
    int n = 0;
    for (int i = 0; i < t->n_steps; i++) n += t->steps[i].ok == 0;
    return n;
}
