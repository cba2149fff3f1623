// Bench traces (kind "bench", written by compare --bench) for the trace
// tool: the table (inspect), a JSON copy (inspect --json), and ms/step per
// size and engine as a text chart or an SVG (plot). docs/traces.md.
#include "bench_view.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace_read.h"
#include "common/atomic_file.h"
#include "compare/bench_stats.h"
#include "common/strbuf.h"
#include "common/util.h"

static double num(const cJSON *o, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

// x with fmt, or "-" where it is not finite (not measured): a table never
// prints nan.
static const char *fnum(const char *fmt, double x) {
    static char ring[16][48];
    static int k;
    char *b = ring[k++ % 16];
    if (isfinite(x)) snprintf(b, sizeof ring[0], fmt, x);
    else snprintf(b, sizeof ring[0], "-");
    return b;
}

// A string of the trace as it may be shown (text_safe: a trace's text reaches the terminal).
static const char *str(const cJSON *o, const char *key) {
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
    return s ? text_safe(s) : "";
}

// A row's timed runs (its ms_per_step array; a value that is not a number
// is NaN): a fresh array and its length in *n, or NULL with *n 0.
static double *row_runs(const cJSON *r, int *n) {
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(r, "ms_per_step");
    *n = cJSON_IsArray(ms) ? cJSON_GetArraySize(ms) : 0;
    if (!*n) return NULL;
    double *v = xmalloc((size_t)*n * sizeof *v);
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, ms) v[i++] = cJSON_IsNumber(x) ? x->valuedouble : NAN;
    return v;
}

// A row's median ms/step and its interval: as recorded, or recomputed from
// its runs for a trace that did not record them (bench_stats.h). *n: the runs.
typedef struct {
    double med, lo, hi, min, max;
    int n;
} RowTimes;

static RowTimes row_times(const cJSON *r) {
    RowTimes t = {num(r, "ms_per_step_median"), num(r, "ms_per_step_ci_low"), num(r, "ms_per_step_ci_high"),
                  num(r, "ms_per_step_min"), num(r, "ms_per_step_max"), 0};
    double *v = row_runs(r, &t.n);
    if (!isfinite(t.med) && t.n) t.med = bench_median(v, t.n);
    if (!isfinite(t.lo) || !isfinite(t.hi)) bench_median_ci(v, t.n, &t.lo, &t.hi);
    free(v);
    return t;
}

// "1.23x (1.20-1.26)" with the recorded interval; "1.23x (no interval)"
// where a row had too few runs (or the trace recorded none); "1.00x" for a
// row over itself (self: the reference, or the fastest PyTorch row); "-".
static void fmt_speedup(const cJSON *r, const char *key, int self, char *out, size_t n) {
    char k_lo[64], k_hi[64];
    snprintf(k_lo, sizeof k_lo, "%s_ci_low", key);
    snprintf(k_hi, sizeof k_hi, "%s_ci_high", key);
    const double x = num(r, key), lo = num(r, k_lo), hi = num(r, k_hi);
    if (!isfinite(x)) snprintf(out, n, "-");
    else if (isfinite(lo) && isfinite(hi)) snprintf(out, n, "%.2fx (%.2f-%.2f)", x, lo, hi);
    else snprintf(out, n, self ? "%.2fx" : "%.2fx (no interval)", x);
}

void bench_view_inspect(const cJSON *root, const char *path, int json) {
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "bench");
    const cJSON *sizes = cJSON_GetObjectItemCaseSensitive(root, "sizes");
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", path);
        cJSON_AddStringToObject(o, "kind", "bench");
        cJSON_AddStringToObject(o, "verdict", str(root, "verdict"));
        cJSON_AddItemToObject(o, "sizes", cJSON_Duplicate(sizes, 1));
        cJSON_AddItemToObject(o, "bench", cJSON_Duplicate(rows, 1));
        char *text = cJSON_Print(o);
        cJSON_Delete(o);
        if (!text) die(EXIT_MISMATCH, "inspect: out of memory");
        printf("%s\n", text);
        free(text);
        return;
    }
    printf("%s: microgpt-trace version 1, kind \"bench\"\n", path);
    printf("host CPU: %s; %.0f steps a run (%.0f untimed), %.0f timed runs", str(root, "host_cpu"), num(root, "steps"),
           num(root, "warmup_steps"), num(root, "repeats"));
    if (num(root, "noise_target") > 0 && num(root, "max_repeats") > num(root, "repeats"))
        printf(" at least, up to %.0f while the noise is over %.3g%%", num(root, "max_repeats"),
               100 * num(root, "noise_target"));
    printf("; data %s; verdict %s\n", str(root, "bench_data"), str(root, "verdict"));
    if (*str(root, "injected_fault")) printf("injected fault: %s\n", str(root, "injected_fault"));
    const cJSON *z;
    cJSON_ArrayForEach(z, sizes) {
        printf("size %-8s %s; %.0f parameters; %.0f positions/step; %.3g FLOP/step\n", str(z, "name"), str(z, "spec"),
               num(z, "num_params"), num(z, "positions_per_step"), num(z, "flops_per_step"));
    }
    printf("\n%-8s %-24s %-5s %11s %-23s %11s %11s %12s %-20s %-20s %-16s  %s\n", "size", "engine", "prec", "ms median",
           "95% CI", "ms min", "ms max", "tokens/s", "vs ref", "vs torch", "timed", "verdict");
    const cJSON *r;
    int few = 0;
    cJSON_ArrayForEach(r, rows) {
        const RowTimes t = row_times(r);
        char timed[48] = "-", ci[48] = "-", vr[48], vt[48];
        const int ok = !strcmp(str(r, "status"), "ok");
        if (ok) {
            const char *stop = str(r, "stopped");
            snprintf(timed, sizeof timed, "%.0fx%.0f%s%s%s", num(r, "repeats"), num(r, "steps_timed"),
                     cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "budget_limited")) ? "*" : "",
                     *stop && strcmp(stop, "fixed") ? " " : "", strcmp(stop, "fixed") ? stop : "");
            if (isfinite(t.lo) && isfinite(t.hi)) snprintf(ci, sizeof ci, "%.4g-%.4g", t.lo, t.hi);
            else if (isfinite(t.med)) snprintf(ci, sizeof ci, "n=%d: no interval", t.n), few++;
        }
        fmt_speedup(r, "speedup_vs_reference", !strcmp(str(r, "verdict"), "reference"), vr, sizeof vr);
        fmt_speedup(r, "speedup_vs_torch", !strcmp(str(r, "speedup_vs_torch_row"), str(r, "engine")), vt, sizeof vt);
        printf("%-8s %-24.24s %-5s %11s %-23s %11s %11s %12s %-20s %-20s %-16s  %s\n", str(r, "size"), str(r, "engine"),
               str(r, "precision"), fnum("%.4g", t.med), ci, fnum("%.4g", t.min), fnum("%.4g", t.max),
               fnum("%.0f", num(r, "tokens_per_s")), vr, vt, timed, str(r, "verdict_text"));
    }
    printf("(95%% CI: the median's bootstrap interval, speedups' in parentheses; timed: runs x steps and what stopped "
           "them (noise target met, max_repeats, budget); *: fewer runs or steps than asked for, within the time "
           "budget; -: not measured)\n");
    if (few) printf("%d row(s) rest on fewer than %d runs: no interval\n", few, BENCH_CI_MIN_RUNS);
}

// One series of the plot: an (engine, precision) pair; per size its median,
// interval (NaN: none), min and max ms/step.
#define MAX_SERIES 24
#define MAX_SIZES 32
typedef struct {
    char label[200];
    double ms[MAX_SIZES], lo[MAX_SIZES], hi[MAX_SIZES], min[MAX_SIZES], max[MAX_SIZES];
    int n[MAX_SIZES];
} Series;

typedef struct {
    int n_sizes, n_series;
    char size[MAX_SIZES][32];
    Series s[MAX_SERIES];
    double lo, hi;   // log10 range of the finite values
} Chart;

static void chart_span(Chart *c, double v) {
    if (!(v > 0) || !isfinite(v)) return;
    if (log10(v) < c->lo) c->lo = log10(v);
    if (log10(v) > c->hi) c->hi = log10(v);
}

static int chart_build(const cJSON *root, Chart *c) {
    memset(c, 0, sizeof *c);
    const cJSON *z;
    cJSON_ArrayForEach(z, cJSON_GetObjectItemCaseSensitive(root, "sizes")) {
        if (c->n_sizes == MAX_SIZES) break;
        snprintf(c->size[c->n_sizes++], sizeof c->size[0], "%s", str(z, "name"));
    }
    c->lo = INFINITY;
    c->hi = -INFINITY;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(root, "bench")) {
        char label[200];
        snprintf(label, sizeof label, "%s %s", str(r, "engine"), str(r, "precision"));
        int si = -1, zi = -1;
        for (int i = 0; i < c->n_series; i++)
            if (!strcmp(c->s[i].label, label)) si = i;
        if (si < 0) {
            if (c->n_series == MAX_SERIES) continue;
            si = c->n_series++;
            Series *s = &c->s[si];
            snprintf(s->label, sizeof s->label, "%s", label);
            for (int k = 0; k < MAX_SIZES; k++) s->ms[k] = s->lo[k] = s->hi[k] = s->min[k] = s->max[k] = NAN;
        }
        for (int k = 0; k < c->n_sizes; k++)
            if (!strcmp(c->size[k], str(r, "size"))) zi = k;
        const RowTimes t = row_times(r);
        if (zi < 0 || !(t.med > 0) || !isfinite(t.med)) continue;
        Series *s = &c->s[si];
        s->ms[zi] = t.med;
        s->lo[zi] = t.lo;
        s->hi[zi] = t.hi;
        s->min[zi] = isfinite(t.min) ? t.min : t.med;
        s->max[zi] = isfinite(t.max) ? t.max : t.med;
        s->n[zi] = t.n;
        chart_span(c, t.med);
        chart_span(c, s->min[zi]);
        chart_span(c, s->max[zi]);
    }
    if (!isfinite(c->lo)) return -1;
    c->lo = floor(c->lo);
    c->hi = ceil(c->hi);
    if (c->hi <= c->lo) c->hi = c->lo + 1;
    return 0;
}

static void text_chart(const Chart *c, int width) {
    const int bar = width - 46 > 10 ? width - 46 : 10;
    printf("ms/step per size and engine (median, bar on a log scale from %g to %g ms; 95%% CI in parentheses, "
           "min-max in brackets)\n", pow(10, c->lo), pow(10, c->hi));
    for (int k = 0; k < c->n_sizes; k++) {
        for (int i = 0; i < c->n_series; i++) {
            const Series *s = &c->s[i];
            const double ms = s->ms[k];
            printf("%-7s %-26.26s ", i ? "" : c->size[k], s->label);
            if (!isfinite(ms)) {
                printf("not measured\n");
                continue;
            }
            int n = (int)lround((log10(ms) - c->lo) / (c->hi - c->lo) * bar);
            if (n < 1) n = 1;
            for (int j = 0; j < n; j++) putchar('#');
            if (isfinite(s->lo[k]) && isfinite(s->hi[k])) printf(" %.4g (%.4g-%.4g)", ms, s->lo[k], s->hi[k]);
            else printf(" %.4g (n=%d: no interval)", ms, s->n[k]);
            printf(" [%.4g-%.4g]\n", s->min[k], s->max[k]);
        }
    }
}

// text with &, <, > and " escaped
static void out_text(StrBuf *o, const char *t) {
    for (; *t; t++) {
        if (*t == '&') sb_printf(o, "&amp;");
        else if (*t == '<') sb_printf(o, "&lt;");
        else if (*t == '>') sb_printf(o, "&gt;");
        else if (*t == '"') sb_printf(o, "&quot;");
        else sb_printf(o, "%c", *t);
    }
}

static const char *const COLORS[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                     "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

// The y of ms on the chart's log scale.
static double y_of(const Chart *c, double top, double ph, double ms) {
    return top + ph * (1 - (log10(ms) - c->lo) / (c->hi - c->lo));
}

// Sizes are categories: a band each, no line between them. In its band each
// (engine, precision) has a slot of its own, left to right in legend order:
// a vertical whisker from min to max with caps, a bar over the median's 95%
// interval where there is one, and the median as a dot. Every element of
// the data stays in its slot (tests/test_bench.c checks the SVG for it).
static void svg_chart(const Chart *c, const cJSON *root, int W, int H, StrBuf *o) {
    const double left = 70, right = 230, top = 40, bottom = 50;
    const double pw = W - left - right, ph = H - top - bottom;
    sb_printf(o, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
           "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
        W, H, W, H);
    sb_printf(o, "<text x=\"%g\" y=\"22\" font-size=\"15\">ms/step per size and engine (median, 95%% CI bar, "
              "min-max whiskers; verdict ", left);
    out_text(o, str(root, "verdict"));
    sb_printf(o, ")</text>\n");
    // y: log10 ms, a gridline per decade
    for (double d = c->lo; d <= c->hi + 1e-9; d += 1) {
        const double y = top + ph * (1 - (d - c->lo) / (c->hi - c->lo));
        sb_printf(o, "<line class=\"grid\" x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, y,
                  left + pw, y);
        sb_printf(o, "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", left - 6, y + 4, pow(10, d));
    }
    sb_printf(o, "<text transform=\"translate(18,%g) rotate(-90)\" text-anchor=\"middle\">ms/step (log)</text>\n",
        top + ph / 2);
    // x: one band per size, separated by light lines, named below
    const double band = pw / (c->n_sizes > 0 ? c->n_sizes : 1);
    for (int k = 0; k < c->n_sizes; k++) {
        const double x0 = left + k * band;
        if (k) sb_printf(o, "<line class=\"grid\" x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#eee\"/>\n", x0,
                         top, x0, top + ph);
        sb_printf(o, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">", x0 + band / 2, top + ph + 18);
        out_text(o, c->size[k]);
        sb_printf(o, "</text>\n");
    }
    sb_printf(o, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">size</text>\n", left + pw / 2, top + ph + 38);
    sb_printf(o, "<rect class=\"frame\" x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#444\"/>\n",
              left, top, pw, ph);
    const double slot = band * 0.8 / (c->n_series > 0 ? c->n_series : 1);
    const double half = slot * 0.3 < 6 ? slot * 0.3 : 6;   // half the width of a cap and of the interval's bar
    for (int i = 0; i < c->n_series; i++) {
        const Series *s = &c->s[i];
        const char *col = COLORS[i % 10];
        const char *hollow = i >= 10 ? "white" : col;   // past 10 series the colours repeat: hollow dots
        for (int k = 0; k < c->n_sizes; k++) {
            const double ms = s->ms[k];
            if (!isfinite(ms)) continue;
            const double x = left + k * band + band * 0.1 + (i + 0.5) * slot;
            const double y_min = y_of(c, top, ph, s->min[k]), y_max = y_of(c, top, ph, s->max[k]);
            sb_printf(o, "<g class=\"row\"><title>");
            out_text(o, s->label);
            sb_printf(o, " at %s: median %.4g ms", c->size[k], ms);
            if (isfinite(s->lo[k])) sb_printf(o, ", 95%% CI %.4g-%.4g", s->lo[k], s->hi[k]);
            else sb_printf(o, ", n=%d: no interval", s->n[k]);
            sb_printf(o, ", min %.4g, max %.4g</title>\n", s->min[k], s->max[k]);
            sb_printf(o, "<line class=\"whisker\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", x,
                      y_min, x, y_max, col);
            for (int e = 0; e < 2; e++) {
                const double y = e ? y_max : y_min;
                sb_printf(o, "<line class=\"cap\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n",
                          x - half, y, x + half, y, col);
            }
            if (isfinite(s->lo[k]) && isfinite(s->hi[k])) {
                const double y_hi = y_of(c, top, ph, s->hi[k]), y_lo = y_of(c, top, ph, s->lo[k]);
                sb_printf(o, "<rect class=\"ci\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" "
                          "fill-opacity=\"0.35\" stroke=\"%s\"/>\n", x - half, y_hi, 2 * half, y_lo - y_hi, col, col);
            }
            sb_printf(o, "<circle class=\"median\" cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\" stroke=\"%s\"/></g>\n",
                      x, y_of(c, top, ph, ms), hollow, col);
        }
        // the legend, outside the data on the right
        const double ly = top + 8 + 18 * i;
        sb_printf(o, "<circle class=\"legend\" cx=\"%g\" cy=\"%.1f\" r=\"4\" fill=\"%s\" stroke=\"%s\"/>\n",
                  left + pw + 22, ly, hollow, col);
        sb_printf(o, "<text x=\"%g\" y=\"%.1f\">", left + pw + 34, ly + 4);
        out_text(o, s->label);
        sb_printf(o, "</text>\n");
    }
    sb_printf(o, "</svg>\n");
}

int bench_view_plot(const cJSON *root, const char *svg, int width, int height) {
    Chart *c = xmalloc(sizeof *c);
    if (chart_build(root, c)) {
        free(c);
        fprintf(stderr, "%s: plot: the bench trace has no measured ms/step to draw\n", prog_name());
        return EXIT_MISMATCH;
    }
    if (!svg) {
        text_chart(c, width > 0 ? width : 80);
        free(c);
        return fflush(stdout) == 0 ? 0 : EXIT_MISMATCH;
    }
    StrBuf o = {0};
    const int H = height > 0 ? height : (int)(110 + 18 * (c->n_series > 16 ? c->n_series : 16));
    svg_chart(c, root, width > 0 ? width : 900, H, &o);
    char err[512];
    int rc = 0;
    OutFile out;
    // as trace plot of the other kinds: a path that cannot be an output is a
    // usage error (2), a write that fails is exit 1
    if (outfile_open(&out, svg, err, sizeof err)) {
        fprintf(stderr, "%s: --svg %s: %s\n", prog_name(), path_short(svg), err);
        rc = EXIT_USAGE;
    } else if (outfile_write(&out, o.s, o.n, err, sizeof err)) {
        fprintf(stderr, "%s: --svg %s: could not write the file: %s\n", prog_name(), path_short(svg), err);
        rc = EXIT_MISMATCH;
    } else {
        printf("wrote %s (%d series over %d sizes)\n", svg, c->n_series, c->n_sizes);
    }
    sb_free(&o);
    free(c);
    return rc;
}

// Rows are matched by size, engine and precision through a hash index of
// those keys (linear in the rows, however many a trace holds).
typedef struct {
    StrIndex ix;
    char **keys;   // owned: the index points into them
    const cJSON **rows;
    int n;
} RowIndex;

static char *row_key(const cJSON *r) {
    const char *z = str(r, "size"), *e = str(r, "engine"), *p = str(r, "precision");
    const size_t n = strlen(z) + strlen(e) + strlen(p) + 3;
    char *k = xmalloc(n);
    snprintf(k, n, "%s\x1f%s\x1f%s", z, e, p);
    return k;
}

static void row_index(const cJSON *rows, RowIndex *x) {
    memset(x, 0, sizeof *x);
    const int n = cJSON_GetArraySize(rows);
    x->keys = xcalloc((size_t)n + 1, sizeof *x->keys);
    x->rows = xcalloc((size_t)n + 1, sizeof *x->rows);
    const cJSON *r;
    cJSON_ArrayForEach(r, rows) {
        x->keys[x->n] = row_key(r);
        x->rows[x->n] = r;
        strindex_put(&x->ix, x->keys[x->n], x->n);   // a repeated row: the first one, as before
        x->n++;
    }
}

static void row_index_free(RowIndex *x) {
    for (int i = 0; i < x->n; i++) free(x->keys[i]);
    free(x->keys);
    free(x->rows);
    strindex_free(&x->ix);
}

// The row of the index with the same size, engine and precision as r, or NULL.
static const cJSON *row_like(const RowIndex *x, const cJSON *r) {
    char *k = row_key(r);
    const int i = strindex_get(&x->ix, k);
    free(k);
    return i >= 0 ? x->rows[i] : NULL;
}

static int verdict_rank(const char *v) {
    return !strcmp(v, "fail") ? 2 : (!strcmp(v, "pass") || !strcmp(v, "reference")) ? 0 : 1;
}

// "1.234 (1.2-1.3)": a median and its interval, or the median alone.
static const char *fmt_med_ci(const RowTimes *t) {
    static char ring[4][64];
    static int k;
    char *b = ring[k++ % 4];
    if (!isfinite(t->med)) snprintf(b, sizeof ring[0], "-");
    else if (isfinite(t->lo) && isfinite(t->hi)) snprintf(b, sizeof ring[0], "%.4g (%.4g-%.4g)", t->med, t->lo, t->hi);
    else snprintf(b, sizeof ring[0], "%.4g (n=%d)", t->med, t->n);
    return b;
}

int bench_view_diff(const cJSON *a, const cJSON *b, double slower_tol) {
    const cJSON *ra = cJSON_GetObjectItemCaseSensitive(a, "bench"), *rb = cJSON_GetObjectItemCaseSensitive(b, "bench");
    printf("ms/step medians (%.0f%% bootstrap interval), B against A: a row is slower (faster) only when the two\n"
           "intervals do not overlap and B/A is above %.4g (below %.4g), --tolerance %.3g; rows of fewer than %d runs\n"
           "are not judged\n", 100 * BENCH_CI_LEVEL, 1 + slower_tol, 1 / (1 + slower_tol), slower_tol, BENCH_CI_MIN_RUNS);
    printf("%-8s %-24s %-5s %-26s %-26s %8s  %s\n", "size", "engine", "prec", "A ms (95% CI)", "B ms (95% CI)", "B/A", "");
    int worse = 0, slower = 0, faster = 0, same = 0, within = 0, unjudged = 0, missing = 0;
    RowIndex ia, ib;
    row_index(ra, &ia);
    row_index(rb, &ib);
    const cJSON *r;
    cJSON_ArrayForEach(r, ra) {
        const cJSON *q = row_like(&ib, r);
        const RowTimes ta = row_times(r), tb = q ? row_times(q) : (RowTimes){NAN, NAN, NAN, NAN, NAN, 0};
        const double ma = ta.med, mb = tb.med, ratio = mb / ma;
        char note[96] = "";
        if (!q) {
            snprintf(note, sizeof note, "missing in B");
            missing++;
        } else if (verdict_rank(str(q, "verdict")) > verdict_rank(str(r, "verdict"))) {
            snprintf(note, sizeof note, "verdict worse");
            worse++;
        } else if (!isfinite(ma) || !isfinite(mb)) {
            snprintf(note, sizeof note, "not timed in %s", !isfinite(ma) && !isfinite(mb) ? "either" : isfinite(ma) ? "B" : "A");
        } else if (!isfinite(ta.lo) || !isfinite(ta.hi) || !isfinite(tb.lo) || !isfinite(tb.hi)) {
            snprintf(note, sizeof note, "not judged: too few runs (A n=%d, B n=%d)", ta.n, tb.n);
            unjudged++;
        } else if (tb.lo <= ta.hi && ta.lo <= tb.hi) {
            snprintf(note, sizeof note, "no significant change");
            same++;
        } else if (ratio > 1 + slower_tol) {
            snprintf(note, sizeof note, "slower");
            slower++;
        } else if (ratio < 1 / (1 + slower_tol)) {
            snprintf(note, sizeof note, "faster");
            faster++;
        } else {
            snprintf(note, sizeof note, "%s, by less than the tolerance (%.3g%%)", ratio > 1 ? "slower" : "faster",
                     100 * slower_tol);
            within++;
        }
        char v[160] = "";
        if (q && strcmp(str(q, "verdict"), str(r, "verdict")))
            snprintf(v, sizeof v, " (verdict %s -> %s)", str(r, "verdict"), str(q, "verdict"));
        printf("%-8s %-24.24s %-5s %-26s %-26s %8s  %s%s\n", str(r, "size"), str(r, "engine"), str(r, "precision"),
               fmt_med_ci(&ta), fmt_med_ci(&tb), fnum("%.3fx", ratio), note, v);
    }
    cJSON_ArrayForEach(r, rb) {
        if (!row_like(&ia, r)) printf("%-8s %-24.24s %-5s only in B\n", str(r, "size"), str(r, "engine"), str(r, "precision"));
    }
    row_index_free(&ia);
    row_index_free(&ib);
    printf("%d slower, %d faster, %d with no significant change, %d changed by less than the tolerance, %d not judged "
           "(too few runs), %d with a worse verdict, %d missing in B\n", slower, faster, same, within, unjudged, worse,
           missing);
    if (slower || worse || missing)
        printf("result: B is worse (a significant slowdown, a worse verdict or a missing row)\n");
    else
        printf("result: no row significantly slower, none worse or missing%s%s\n",
               faster ? "; some significantly faster" : "", unjudged ? "; some rows not judged (too few runs)" : "");
    return slower || worse || missing ? EXIT_MISMATCH : 0;
}
