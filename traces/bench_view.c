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
#include "common/strbuf.h"
#include "common/util.h"

static double num(const cJSON *o, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

static const char *str(const cJSON *o, const char *key) {
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
    return s ? s : "";
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
    printf("host CPU: %s; %.0f steps a run (%.0f untimed), %.0f timed runs; data %s; verdict %s\n",
           str(root, "host_cpu"), num(root, "steps"), num(root, "warmup_steps"), num(root, "repeats"),
           str(root, "bench_data"), str(root, "verdict"));
    if (*str(root, "injected_fault")) printf("injected fault: %s\n", str(root, "injected_fault"));
    const cJSON *z;
    cJSON_ArrayForEach(z, sizes) {
        printf("size %-8s %s; %.0f parameters; %.0f positions/step; %.3g FLOP/step\n", str(z, "name"), str(z, "spec"),
               num(z, "num_params"), num(z, "positions_per_step"), num(z, "flops_per_step"));
    }
    printf("\n%-8s %-24s %-5s %11s %11s %11s %12s %8s %8s %9s  %s\n", "size", "engine", "prec", "ms median",
           "ms min", "ms max", "tokens/s", "vs ref", "vs torch", "timed", "verdict");
    const cJSON *r;
    cJSON_ArrayForEach(r, rows) {
        char timed[32] = "-";
        if (!strcmp(str(r, "status"), "ok"))
            snprintf(timed, sizeof timed, "%.0fx%.0f%s", num(r, "repeats"), num(r, "steps_timed"),
                     cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "budget_limited")) ? "*" : "");
        printf("%-8s %-24.24s %-5s %11.4g %11.4g %11.4g %12.0f %7.2fx %7.2fx %9s  %s\n", str(r, "size"),
               str(r, "engine"), str(r, "precision"), num(r, "ms_per_step_median"), num(r, "ms_per_step_min"),
               num(r, "ms_per_step_max"), num(r, "tokens_per_s"), num(r, "speedup_vs_reference"),
               num(r, "speedup_vs_torch"), timed, str(r, "verdict_text"));
    }
    printf("(* : fewer runs or steps than asked for, within the time budget; nan: not measured)\n");
}

// One series of the plot: an (engine, precision) pair, its ms/step per size.
#define MAX_SERIES 24
#define MAX_SIZES 32
typedef struct {
    char label[200];
    double ms[MAX_SIZES];
} Series;

typedef struct {
    int n_sizes, n_series;
    char size[MAX_SIZES][32];
    Series s[MAX_SERIES];
    double lo, hi;   // log10 range of the finite values
} Chart;

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
            snprintf(c->s[si].label, sizeof c->s[si].label, "%s", label);
            for (int k = 0; k < MAX_SIZES; k++) c->s[si].ms[k] = NAN;
        }
        for (int k = 0; k < c->n_sizes; k++)
            if (!strcmp(c->size[k], str(r, "size"))) zi = k;
        const double ms = num(r, "ms_per_step_median");
        if (zi < 0 || !(ms > 0) || !isfinite(ms)) continue;
        c->s[si].ms[zi] = ms;
        if (log10(ms) < c->lo) c->lo = log10(ms);
        if (log10(ms) > c->hi) c->hi = log10(ms);
    }
    if (!isfinite(c->lo)) return -1;
    c->lo = floor(c->lo);
    c->hi = ceil(c->hi);
    if (c->hi <= c->lo) c->hi = c->lo + 1;
    return 0;
}

static void text_chart(const Chart *c, int width) {
    const int bar = width - 46 > 10 ? width - 46 : 10;
    printf("ms/step per size and engine (median; log scale, %g to %g ms across the bar)\n", pow(10, c->lo),
           pow(10, c->hi));
    for (int k = 0; k < c->n_sizes; k++) {
        for (int i = 0; i < c->n_series; i++) {
            const double ms = c->s[i].ms[k];
            printf("%-7s %-26.26s ", i ? "" : c->size[k], c->s[i].label);
            if (!isfinite(ms)) {
                printf("%*s not measured\n", 0, "");
                continue;
            }
            int n = (int)lround((log10(ms) - c->lo) / (c->hi - c->lo) * bar);
            if (n < 1) n = 1;
            for (int j = 0; j < n; j++) putchar('#');
            printf(" %.4g\n", ms);
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

static void svg_chart(const Chart *c, const cJSON *root, int W, int H, StrBuf *o) {
    const double left = 70, right = 230, top = 40, bottom = 50;
    const double pw = W - left - right, ph = H - top - bottom;
    sb_printf(o, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
           "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
        W, H, W, H);
    sb_printf(o, "<text x=\"%g\" y=\"22\" font-size=\"15\">ms/step per size and engine (median; verdict ", left);
    out_text(o, str(root, "verdict"));
    sb_printf(o, ")</text>\n");
    // y: log10 ms, a gridline per decade
    for (double d = c->lo; d <= c->hi + 1e-9; d += 1) {
        const double y = top + ph * (1 - (d - c->lo) / (c->hi - c->lo));
        sb_printf(o, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, y, left + pw, y);
        sb_printf(o, "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", left - 6, y + 4, pow(10, d));
    }
    sb_printf(o, "<text transform=\"translate(18,%g) rotate(-90)\" text-anchor=\"middle\">ms/step (log)</text>\n",
        top + ph / 2);
    const double dx = c->n_sizes > 1 ? pw / (c->n_sizes - 1) : 0;
    for (int k = 0; k < c->n_sizes; k++) {
        const double x = left + (c->n_sizes > 1 ? k * dx : pw / 2);
        sb_printf(o, "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#eee\"/>\n", x, top, x, top + ph);
        sb_printf(o, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">", x, top + ph + 18);
        out_text(o, c->size[k]);
        sb_printf(o, "</text>\n");
    }
    sb_printf(o, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">size</text>\n", left + pw / 2, top + ph + 38);
    sb_printf(o, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#444\"/>\n", left, top, pw, ph);
    for (int i = 0; i < c->n_series; i++) {
        const char *col = COLORS[i % 10];
        const char *dash = i >= 10 ? " stroke-dasharray=\"5,3\"" : "";
        // the line joins neighbouring sizes the series ran at
        int prev = -1;
        for (int k = 0; k < c->n_sizes; k++) {
            const double ms = c->s[i].ms[k];
            if (!isfinite(ms)) {
                prev = -1;
                continue;
            }
            const double x = left + (c->n_sizes > 1 ? k * dx : pw / 2);
            const double y = top + ph * (1 - (log10(ms) - c->lo) / (c->hi - c->lo));
            if (prev >= 0) {
                const double px = left + prev * dx;
                const double py = top + ph * (1 - (log10(c->s[i].ms[prev]) - c->lo) / (c->hi - c->lo));
                sb_printf(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
                    px, py, x, y, col, dash);
            }
            sb_printf(o, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>", x, y, col);
            out_text(o, c->s[i].label);
            sb_printf(o, " at %s: %.4g ms</title></circle>\n", c->size[k], ms);
            prev = k;
        }
        // the legend, outside the data on the right
        const double ly = top + 8 + 18 * i;
        sb_printf(o, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
            left + pw + 14, ly, left + pw + 38, ly, col, dash);
        sb_printf(o, "<text x=\"%g\" y=\"%.1f\">", left + pw + 44, ly + 4);
        out_text(o, c->s[i].label);
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
    if (outfile_open(&out, svg, err, sizeof err) || outfile_write(&out, o.s, o.n, err, sizeof err)) {
        fprintf(stderr, "%s: --svg %s: %s\n", prog_name(), svg, err);
        rc = EXIT_MISMATCH;
    } else {
        printf("wrote %s (%d series over %d sizes)\n", svg, c->n_series, c->n_sizes);
    }
    sb_free(&o);
    free(c);
    return rc;
}

// The row of b with the same size, engine and precision as r, or NULL.
static const cJSON *row_like(const cJSON *rows, const cJSON *r) {
    const cJSON *x;
    cJSON_ArrayForEach(x, rows) {
        if (!strcmp(str(x, "size"), str(r, "size")) && !strcmp(str(x, "engine"), str(r, "engine")) &&
            !strcmp(str(x, "precision"), str(r, "precision")))
            return x;
    }
    return NULL;
}

static int verdict_rank(const char *v) {
    return !strcmp(v, "fail") ? 2 : (!strcmp(v, "pass") || !strcmp(v, "reference")) ? 0 : 1;
}

int bench_view_diff(const cJSON *a, const cJSON *b, double slower_tol) {
    const cJSON *ra = cJSON_GetObjectItemCaseSensitive(a, "bench"), *rb = cJSON_GetObjectItemCaseSensitive(b, "bench");
    printf("ms/step medians, B against A (slower by more than %.3g counts):\n", slower_tol);
    printf("%-8s %-24s %-5s %11s %11s %8s  %s\n", "size", "engine", "prec", "A ms", "B ms", "B/A", "");
    int worse = 0, slower = 0, faster = 0, missing = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, ra) {
        const cJSON *q = row_like(rb, r);
        const double ma = num(r, "ms_per_step_median"), mb = q ? num(q, "ms_per_step_median") : NAN;
        const char *note = "";
        if (!q) {
            note = "missing in B";
            missing++;
        } else if (verdict_rank(str(q, "verdict")) > verdict_rank(str(r, "verdict"))) {
            note = "verdict worse";
            worse++;
        } else if (isfinite(ma) && isfinite(mb) && mb > ma * (1 + slower_tol)) {
            note = "slower";
            slower++;
        } else if (isfinite(ma) && isfinite(mb) && mb * (1 + slower_tol) < ma) {
            note = "faster";
            faster++;
        }
        char v[160] = "";
        if (q && strcmp(str(q, "verdict"), str(r, "verdict")))
            snprintf(v, sizeof v, " (verdict %s -> %s)", str(r, "verdict"), str(q, "verdict"));
        printf("%-8s %-24.24s %-5s %11.4g %11.4g %7.3fx  %s%s\n", str(r, "size"), str(r, "engine"),
               str(r, "precision"), ma, mb, mb / ma, note, v);
    }
    cJSON_ArrayForEach(r, rb) {
        if (!row_like(ra, r)) printf("%-8s %-24.24s %-5s only in B\n", str(r, "size"), str(r, "engine"), str(r, "precision"));
    }
    printf("%d slower, %d faster, %d with a worse verdict, %d missing in B\n", slower, faster, worse, missing);
    return slower || worse || missing ? EXIT_MISMATCH : 0;
}
