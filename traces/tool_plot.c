// trace plot: loss and error curves as a text chart (and an SVG, tool_svg.c).
#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/atomic_file.h"
#include "common/cli.h"
#include "common/util.h"
#include "traces/bench_view.h"
#include "traces/plot.h"
#include "traces/tool.h"
#include "traces/trace.h"
#include "traces/trace_read.h"

// ---------------------------------------------------------------------------
// plot: series, axes, the text chart and the SVG



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
    free(p->mark_x);
    free(p->mark_kind);
    for (int i = 0; i < p->n; i++) {
        free(p->s[i].label);
        free(p->s[i].x);
        free(p->s[i].y);
    }
    free(p->s);
}

int usable(const Panel *p, double y) { return isfinite(y) && (!p->log || y > 0); }


double axis_t(const Axis *a, double v) { return a->log ? log10(v) : v; }
// In halves, so that a range near +-1e308 does not overflow to infinity.
double axis_frac(const Axis *a, double v) {
    return (0.5 * axis_t(a, v) - 0.5 * a->lo) / (0.5 * a->hi - 0.5 * a->lo);
}

int cell_of(double f, int n) {
    if (!(f >= -1.0 / n) ) return -1;  // NaN too
    if (f > 1 + 1.0 / n) return n;
    return (int)lround(f * (n - 1));
}

static double nice_step(double x) {
    if (!(x > 0) || !isfinite(x)) return 1;
    double e = floor(log10(x)), f = x / pow(10, e);
    double m = f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10;
    double st = m * pow(10, e);
    return isfinite(st) ? st : 5 * pow(10, e);  // near DBL_MAX
}

// Ticks at multiples of a 1/2/5 step inside [lo, hi]; when `extend`, the
// range grows to the ticks just outside.
static void linear_ticks(Axis *a, double lo, double hi, int want, int extend) {
    double step = nice_step((0.5 * hi - 0.5 * lo) / (want > 1 ? want - 1 : 1) * 2);
    double k0 = extend ? floor(lo / step) : ceil(lo / step - 1e-9);
    double k1 = extend ? ceil(hi / step) : floor(hi / step + 1e-9);
    a->nt = 0;
    for (double k = k0; k <= k1 && a->nt < 64; k++) {
        double v = k * step;
        if (!isfinite(v)) continue;
        if (fabs(v) < step * 1e-9) v = 0;
        a->tick[a->nt++] = v;
    }
    if (extend) {
        a->lo = fmax(k0 * step, -DBL_MAX);
        a->hi = fmin(k1 * step, DBL_MAX);
    }
}

// An axis over [vmin, vmax] with about `want` ticks. `extend`: a linear
// axis grows to the ticks just outside the data (else it keeps the data
// range plus a small margin, ticks inside).
void axis_make(Axis *a, double vmin, double vmax, int log_scale, int want, int extend) {
    memset(a, 0, sizeof *a);
    a->log = log_scale;
    if (!log_scale) {
        if (0.5 * vmax - 0.5 * vmin <= fabs(vmax) * 0.5e-12) {
            double pad = vmin == 0 ? 1 : fabs(vmin) * 0.05;
            vmin = fmax(vmin - pad, -DBL_MAX);
            vmax = fmin(vmax + pad, DBL_MAX);
        }
        if (!extend) {
            double pad = (0.5 * vmax - 0.5 * vmin) * 0.06;
            vmin = fmax(vmin - pad, -DBL_MAX);
            vmax = fmin(vmax + pad, DBL_MAX);
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
int panel_range(const Panel *p, double *x0, double *x1, double *y0, double *y1) {
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

const char GLYPHS[MAX_SERIES + 1] = "*o+x@%&$~^";
const char *const COLORS[MAX_SERIES] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                               "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                                               "#bcbd22", "#17becf"};

const char *tick_label(double v) { return fmtn("%.4g", v); }

// The text chart's bound lines, one character each (hline[h]).
static const char HLINE_CHARS[MAX_HLINES + 1] = "-=:.";

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
            int c = cell_of(axis_frac(ax, s->x[k]), W);
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

int label_width(const Axis *a) {
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
        for (int h = 0; h < p->n_hlines; h++)
            if (usable(p, p->hline[h].y)) {
                lo = fmin(lo, p->hline[h].y);
                hi = fmax(hi, p->hline[h].y);
            }
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
            int r = cell_of(1 - axis_frac(&ay, v), H);
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
    for (int h = 0; h < p->n_hlines; h++) {  // the bounds, under the curves
        if (!usable(p, p->hline[h].y)) continue;
        int r = cell_of(1 - axis_frac(&ay, p->hline[h].y), H);
        for (int c = 0; r >= 0 && r < H && c < W; c++)
            if (grid[r * W + c] == ' ') grid[r * W + c] = HLINE_CHARS[h];
    }
    // Rows, with the y ticks at their nearest rows.
    const char **label = xcalloc((size_t)H, sizeof *label);
    for (int i = 0; i < ay.nt; i++) {
        int r = cell_of(1 - axis_frac(&ay, ay.tick[i]), H);
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
        int c = cell_of(f, W);
        if (c < 0 || c >= W) continue;
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
    int n_fail = 0, n_excused = 0;
    for (int i = 0; i < p->n_marks; i++) {
        n_fail += p->mark_kind[i] == 'F';
        n_excused += p->mark_kind[i] == 'E';
    }
    if (p->n_marks) {  // failing and excused steps, under their columns
        char *m = xmalloc((size_t)W + 1);
        memset(m, ' ', (size_t)W);
        m[W] = '\0';
        for (int i = 0; i < p->n_marks; i++) {
            int c = cell_of(axis_frac(ax, p->mark_x[i]), W);
            if (c >= 0 && c < W && m[c] != 'F') m[c] = p->mark_kind[i];
        }
        printf("%*s  %s\n", lw, "", m);
        free(m);
    }
    printf("%*s  %s\n", lw, "", labels);
    printf("%*s  %*s\n", lw, "", W / 2 + 2, "step");
    for (int si = 0; si < p->n; si++)
        printf("%s %c %s\n", si ? "       " : "legend:", GLYPHS[si], p->s[si].label);
    if (overlap) printf("        # where curves overlap\n");
    for (int h = 0; h < p->n_hlines; h++)
        if (usable(p, p->hline[h].y)) printf("        %c %s\n", HLINE_CHARS[h], p->hline[h].label);
    if (n_fail || n_excused)
        printf("        %s%s%s (marked under the axis)\n", n_fail ? "F failing step" : "",
               n_fail && n_excused ? ", " : "", n_excused ? "E excused step" : "");
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

void plot_usage(FILE *f) {
    fprintf(f,
            "usage: trace plot FILE [FILE...] [--svg OUT.svg] [--width N] [--height N] [--log]\n"
            "                  [--smooth N]\n"
            "Plot the loss curves of one or more traces: a text chart on stdout, each\n"
            "curve with its own glyph (a column shows the mean of the steps it covers;\n"
            "'#' where curves overlap), axes with values and a legend. Compare traces add\n"
            "both engines' losses, and a second panel on a log scale: lockstep, the largest\n"
            "logits error and the largest gradient error of each step, each with its own\n"
            "atol (the floor of atol + rtol*|b|) as a line; free mode, the loss difference\n"
            "of each step and the judged window mean (--drift-window) with its tolerance.\n"
            "Failing (F) and excused (E) steps are marked (the legend names those present).\n"
            "The title names the trace, its engines and precisions, the verdict, and says\n"
            "when a run stopped early.\n\n"
            "  --svg OUT.svg  also write the chart as an SVG line chart to OUT.svg (atomic:\n"
            "                 written to a temporary file and renamed; never partial)\n"
            "  --width N      text chart width in characters (default 80, 30..1000); with\n"
            "                 --svg, the SVG width in pixels instead (default 900, 200..20000)\n"
            "  --height N     text chart height in rows (default 20, 5..500); with --svg, the\n"
            "                 SVG height in pixels instead (default 520 or 760 with two\n"
            "                 panels, 150..20000)\n"
            "  --log          log scale for the loss axis\n"
            "  --smooth N     draw each loss curve as the mean of the N steps around each\n"
            "                 step (null losses left out); errors are never smoothed\n"
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

// Centred moving mean over the finite values of `win` steps: prefix sums,
// so that a wide window costs no more than a narrow one (linear in steps).
static void smooth_series(Series *s, const TraceData *d, int e, int win) {
    const int n = d->n_steps;
    double *sum = xcalloc((size_t)n + 1, sizeof *sum);
    int *cnt = xcalloc((size_t)n + 1, sizeof *cnt);
    for (int j = 0; j < n; j++) {
        const double x = d->steps[j].loss[e];
        sum[j + 1] = sum[j] + (isfinite(x) ? x : 0);
        cnt[j + 1] = cnt[j] + (isfinite(x) != 0);
    }
    for (int i = 0; i < s->n && i < n; i++) {
        const int lo = i - win / 2 < 0 ? 0 : i - win / 2;
        const int hi = i + (win - 1) / 2 >= n ? n - 1 : i + (win - 1) / 2;
        const int k = cnt[hi + 1] - cnt[lo];
        s->y[i] = isfinite(d->steps[i].loss[e]) && k ? (sum[hi + 1] - sum[lo]) / k : NAN;
    }
    free(sum);
    free(cnt);
}

static void add_mark(Panel *p, double x, char kind) {
    p->mark_x = xrealloc(p->mark_x, (size_t)(p->n_marks + 1) * sizeof *p->mark_x);
    p->mark_kind = xrealloc(p->mark_kind, (size_t)(p->n_marks + 1));
    p->mark_x[p->n_marks] = x;
    p->mark_kind[p->n_marks++] = kind;
}

// Failing steps (ok false) and excused ones, on both panels.
static void add_marks(Panel *panels, const TraceData *d) {
    if (d->kind != TRACE_KIND_COMPARE) return;
    for (int i = 0; i < d->n_steps; i++)
        if (d->steps[i].ok == 0)
            for (int p = 0; p < 2; p++) add_mark(&panels[p], d->steps[i].step, 'F');
    const cJSON *x, *ex = cJSON_GetObjectItemCaseSensitive(d->root, "excused_steps");
    cJSON_ArrayForEach(x, ex) {
        double st;
        if (trace_get_number(x, "step", &st) == 0 && isfinite(st))
            for (int p = 0; p < 2; p++) add_mark(&panels[p], st, 'E');
    }
}

static void add_hline(Panel *p, double y, int series, const char *label) {
    if (p->n_hlines == MAX_HLINES || !isfinite(y)) return;
    p->hline[p->n_hlines].y = y;
    p->hline[p->n_hlines].series = series;
    snprintf(p->hline[p->n_hlines++].label, sizeof p->hline[0].label, "%s", label);
}

// The bounds of the error panel (one compare trace): free mode, the allowed
// drift of the judged series (the window mean, or the per-step difference
// with a window of 1); lockstep, each plotted quantity's own atol (the floor
// of atol + rtol*|b|), in its series' colour.
// series_of: the error panel's series of logits, grads, the per-step loss
// difference and the window mean (-1: not drawn).
static void tolerance_lines(Panel *errs, const TraceData *d, const int series_of[4]) {
    static const char *const qs[2] = {"logits", "grads"};
    char label[96];
    double tol = NAN, window = 1;
    const cJSON *drift = cJSON_GetObjectItemCaseSensitive(d->root, "drift");
    if (drift && trace_get_number(drift, "tol", &tol) == 0 && isfinite(tol)) {
        int w = series_of[3] >= 0;
        if (trace_get_number(drift, "window", &window) || !(window > 1)) window = 1;
        if (w) snprintf(label, sizeof label, "tolerance %s on the %g-step window mean (judged)", fmtn("%.3g", tol),
                        window);
        else snprintf(label, sizeof label, "tolerance %s on the loss |a-b| (judged)", fmtn("%.3g", tol));
        add_hline(errs, tol, series_of[w ? 3 : 2], label);
        return;
    }
    for (int q = 0; q < 2; q++) {
        double atol, rtol;
        if (series_of[q] < 0) continue;
        tolerance_of(d, qs[q], &atol, &rtol);
        snprintf(label, sizeof label, "%s atol %s (tolerance floor)", qs[q], fmtn("%.3g", atol));
        add_hline(errs, atol, series_of[q], label);
    }
}

// "FILE: scalar fp64 vs cpu fp32, lockstep, verdict pass" (train: the engine
// and the steps); "(stopped at step N: reason)" for an incomplete run.
static void plot_title(char *out, size_t n, const TraceData *t, int nfiles) {
    StrBuf b = {0};
    for (int f = 0; f < nfiles && f < 3; f++) {
        const TraceData *d = &t[f];
        sb_printf(&b, "%s%s: ", f ? "; " : "", d->path);
        for (int e = 0; e < d->n_engines; e++)
            sb_printf(&b, "%s%s%s%s", e ? " vs " : "", text_safe(d->engine[e]), *d->precision[e] ? " " : "",
                      text_safe(d->precision[e]));
        const char *mode = trace_get_string(d->root, "mode"), *verdict = trace_get_string(d->root, "verdict");
        if (mode) sb_printf(&b, ", %s", text_safe(mode));
        if (verdict) sb_printf(&b, ", verdict %s", text_safe(verdict));
        sb_printf(&b, ", %d step%s", d->n_steps, d->n_steps == 1 ? "" : "s");
        if (d->complete == 0) sb_printf(&b, " (stopped at step %d: %s)", d->stop_step, text_safe(d->stop_reason));
    }
    if (nfiles > 3) sb_printf(&b, "; and %d more", nfiles - 3);
    snprintf(out, n, "%s", b.s ? b.s : "");
    sb_free(&b);
}

int plot_view(PlotView *v, const TraceData *t, int nfiles, int log_scale, long smooth, int svg, long tw, long sw,
              char *why, size_t n) {
    memset(v, 0, sizeof *v);
    Panel *panels = v->panels;
    Panel *loss = &panels[0], *errs = &panels[1];
    loss->title = log_scale ? "loss (log scale)" : "loss";
    loss->log = log_scale;
    loss->ylabel = "loss";
    loss->empty_note = "no finite losses to draw";
    errs->title = "largest error per step (log scale)";
    errs->log = 1;
    errs->ylabel = "max |a-b|";
    errs->use_max = 1;
    int n_compare = 0, have_err = 0, series_of[4] = {-1, -1, -1, -1};
    const TraceData *cmp = NULL;
    for (int f = 0; f < nfiles; f++) {
        const TraceData *d = &t[f];
        for (int e = 0; e < d->n_engines; e++) {
            char label[1024];
            if (d->n_engines > 1 || nfiles > 1)
                snprintf(label, sizeof label, "%s: %s", d->path, text_safe(d->engine[e]));
            else snprintf(label, sizeof label, "%s", text_safe(d->engine[e]));
            if (smooth > 1) snprintf(label + strlen(label), sizeof label - strlen(label), " (mean of %ld)", smooth);
            if (loss->n == MAX_SERIES) {
                snprintf(why, n, "plot: too many curves (at most %d: a train trace has one, a compare trace two)",
                         MAX_SERIES);
                plot_view_free(v);
                return -1;
            }
            Series *s = panel_add(loss, label, d->n_steps, e == 1);
            for (int i = 0; i < d->n_steps; i++) {
                s->x[i] = d->steps[i].step;
                s->y[i] = d->steps[i].loss[e];
            }
            if (smooth > 1) smooth_series(s, d, e, (int)smooth);
        }
        add_marks(panels, d);
        if (d->kind != TRACE_KIND_COMPARE) continue;
        n_compare++;
        cmp = d;
        for (int k = 0; k < 4; k++) series_of[k] = -1;
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
        // Free mode with --drift-window W > 1 judges the mean of loss[1] -
        // loss[0] over the last W steps ("window_drift"), not a step's own.
        const cJSON *jsteps = cJSON_GetObjectItemCaseSensitive(d->root, "steps"), *js;
        int has_window = 0;
        double window = NAN;
        cJSON_ArrayForEach(js, jsteps) has_window |= cJSON_GetObjectItemCaseSensitive(js, "window_drift") != NULL;
        if (has[0] || has[1]) has_window = 0;
        trace_get_number(cJSON_GetObjectItemCaseSensitive(d->root, "drift"), "window", &window);
        if (has[2] || has_window) errs->title = "loss difference per step (log scale)";
        for (int q = 0; q < 4; q++) {
            if (q < 3 ? !has[q] : !has_window) continue;
            char label[1024], what[128];
            if (q == 3 && isfinite(window))
                snprintf(what, sizeof what, "window mean: |mean a-b| of %g steps (judged)", window);
            else if (q == 3) snprintf(what, sizeof what, "window mean: |mean a-b| (judged)");
            else if (q == 2) snprintf(what, sizeof what, "%s", has_window ? "loss |a-b| per step" : "loss |a-b|");
            else snprintf(what, sizeof what, "%s", qs[q]);
            if (nfiles > 1) snprintf(label, sizeof label, "%s: %s", d->path, what);
            else snprintf(label, sizeof label, "%s", what);
            if (errs->n == MAX_SERIES) {
                snprintf(why, n, "plot: too many compare traces for the error panel");
                plot_view_free(v);
                return -1;
            }
            series_of[q] = errs->n;
            Series *s = panel_add(errs, label, d->n_steps, q == 1 || (q == 2 && has_window));
            js = jsteps ? jsteps->child : NULL;
            for (int i = 0; i < d->n_steps; i++, js = js ? js->next : NULL) {
                double y = NAN;
                if (q == 1) y = step_grad_err(&d->steps[i]);
                else if (q == 3) trace_get_number(js, "window_drift", &y);
                else trace_get_number(d->steps[i].max_err, qs[q], &y);
                s->x[i] = d->steps[i].step;
                s->y[i] = y;
                if (!isnan(y)) have_err = 1;
            }
        }
    }
    if (n_compare == 1) tolerance_lines(errs, cmp, series_of);
    errs->empty_note = have_err ? "every error is exactly 0 (nothing to draw on a log scale)"
                                : "no per-step errors (max_err) in the trace";
    int np = v->np = n_compare ? 2 : 1;

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
        StrBuf b = {0};
        for (int f = 0; f < nfiles; f++) sb_printf(&b, "%s%s", f ? ", " : "", path_short(t[f].path));
        snprintf(why, n, "plot: %s: nothing to plot (no steps with a finite%s loss)", b.s,
                 log_scale ? ", positive" : "");
        sb_free(&b);
        plot_view_free(v);
        return -1;
    }
    Axis ax;
    if (x1 - x0 < 1) {  // one step: it sits in the middle
        x0 -= 0.5;
        x1 += 0.5;
    }
    axis_make(&ax, x0, x1, 0, svg ? (int)(sw / 110) : (int)(tw / 12), x1 - x0 > 2);
    int k = 0;  // steps are whole numbers
    for (int i = 0; i < ax.nt; i++)
        if (ax.tick[i] == floor(ax.tick[i])) ax.tick[k++] = ax.tick[i];
    ax.nt = k;
    v->ax = ax;
    plot_title(v->title, sizeof v->title, t, nfiles);
    return 0;
}

void plot_view_text(const PlotView *v, long tw, long th) {
    printf("%s\n\n", v->title);
    for (int p = 0; p < v->np; p++) text_panel(&v->panels[p], &v->ax, (int)tw, (int)th);
}

void plot_view_free(PlotView *v) {
    for (int p = 0; p < 2; p++) panel_free(&v->panels[p]);
    memset(v, 0, sizeof *v);
}

int cmd_plot(int argc, char **argv) {
    const char **files = xcalloc((size_t)argc, sizeof *files);
    int nfiles = 0, flags_done = 0, log_scale = 0;
    long smooth = 1;
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
                svg = cli_path("plot: --svg", v);
            } else if ((v = flag_value("plot", argc, argv, &i, "--width"))) {
                if (parse_int(v, 1, 100000, &width))
                    die(EXIT_USAGE, "plot: --width '%s' is not a positive integer", v);
            } else if ((v = flag_value("plot", argc, argv, &i, "--smooth"))) {
                if (parse_int(v, 1, 1000000, &smooth))
                    die(EXIT_USAGE, "plot: --smooth '%s' is not a number of steps >= 1", v);
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
            die(EXIT_USAGE, "--svg %s: is a directory", path_short(svg));
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

    PlotView v;
    char why[2048];
    if (plot_view(&v, t, nfiles, log_scale, smooth, svg != NULL, tw, sw, why, sizeof why)) die(EXIT_USAGE, "%s", why);
    // the SVG's path is checked before anything is printed (common/atomic_file.h);
    // "--svg -" writes the SVG alone to stdout
    char aerr[512];
    OutFile out;
    if (svg && outfile_open(&out, svg, aerr, sizeof aerr)) die(EXIT_USAGE, "--svg %s: %s", path_short(svg), aerr);
    int to_stdout = svg && out.kind == OUT_STDOUT;
    if (!to_stdout) plot_view_text(&v, tw, th);

    int rc = 0;
    if (svg) {
        if (sh < 0) sh = v.np == 2 ? 760 : 520;
        StrBuf b = {0};
        svg_render(&b, v.title, v.panels, v.np, &v.ax, (int)sw, (int)sh);
        if (outfile_write(&out, b.s, b.n, aerr, sizeof aerr))
            die(EXIT_MISMATCH, "--svg %s: could not write the file: %s", path_short(svg), aerr);
        if (!to_stdout) printf("wrote %s\n", svg);
        sb_free(&b);
    }
    plot_view_free(&v);
    for (int f = 0; f < nfiles; f++) trace_data_free(&t[f]);
    free(t);
    free(files);
    stdout_check();
    return rc;
}
