// compare --bench: every engine trains the same documents from the same
// initial weights at each size; each is timed (bench_run.c), its losses are
// checked against the engines before it, and a Markdown table, a trace and
// progress lines report it (docs/BENCHMARKS.md).
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "bench_stats.h"
#include "engines.h"
#include "common/atomic_file.h"
#include "common/strbuf.h"
#include "common/util.h"

#define MAX_ROWS_PER_SIZE (2 * MAX_ENGINES + 2 * BENCH_TORCH_ROWS)

typedef struct {
    BenchSize z;
    BenchRow rows[MAX_ROWS_PER_SIZE];
    int n_rows;
} SizeResult;

static const char *status_word(RowStatus s) {
    return s == ROW_OK ? "ok" : s == ROW_SKIPPED ? "skipped" : s == ROW_UNAVAILABLE ? "unavailable" : "failed";
}

// The relative agreement two engines' losses must show at step j
// (0-based; docs/BENCHMARKS.md has the measurements behind each bound).
// Step 1 is the forward from the shared initial weights: only rounding
// separates the engines (measured on the sweep: fp64 <= 3.9e-16, fp32 <=
// 3.3e-8). Step 2 follows one Adam update from the same state, whose
// g/(|g|+eps) magnifies the rounding of near-zero gradients (fp64 pairs <=
// 2.1e-7, fp32 <= 1.8e-5). Later steps follow each engine's own trajectory,
// where training dynamics set the differences (--loss-rtol; <= 7.8e-3 over
// the sweep's 100 steps).
// The mixed precisions (the lower of the two rows' precisions decides):
// bf16 and fp16 round every product's operands to 8 or 11 bits, tf32 to 11
// bits with fp32 outputs, and PyTorch autocast's recipe differs from ours
// (bf16 attention). Measured (H200, b1/b256/e128/e512, cuda against torch
// and the CPU emulation against the fp64 oracle, scripts/bench_early_steps.py):
// bf16 step 1 <= 9.6e-5, step 2 <= 2.6e-4; tf32 step 1 <= 2.4e-6, step 2 <=
// 1.2e-4 (e512). The bounds are about 10x those.
static int product_bits(Precision p) {
    return p == PREC_FP64 ? 53 : p == PREC_FP32 ? 24 : p == PREC_TF32 ? 11 : p == PREC_FP16 ? 10 : 8;
}

static Precision lower_precision(Precision pa, Precision pb) {
    return product_bits(pa) < product_bits(pb) ? pa : pb;
}

static double loss_rtol(const Options *o, int j, Precision pa, Precision pb) {
    return j >= 2 ? o->b.loss_rtol : rules_for(lower_precision(pa, pb))->bench_rtol[j];
}

// The steps whose mean loss is compared at step j (0-based): 1, the step
// itself, except after step 2 where either row is a mixed precision: two
// trainings that differ by bf16 rounding part ways step by step (at e512,
// cuda bf16 and torch autocast bf16 differ by 5.4% at step 10 in its
// recovery from the lr jump, while the means of the steps so far stay
// within 0.5%), so there, as in free mode, the mean of the last 50 steps
// (the table's bench_window).
static int loss_window(int j, Precision pa, Precision pb) {
    if (j < 2) return 1;
    const Precision lo = precision_is_mixed(pa) ? pa : pb;
    const int w = rules_for(precision_is_mixed(lo) ? lo : lower_precision(pa, pb))->bench_window;
    return j + 1 < w ? j + 1 : w;
}

static double mean_loss(const BenchRow *r, int j, int w) {
    double sum = 0;
    for (int i = j - w + 1; i <= j; i++) sum += r->losses[i];
    return sum / w;
}

// Test-only (--plant loss@STEP=DELTA): the last row's loss at STEP times 1 + DELTA.
static void apply_plant(const Options *o, SizeResult *sr) {
    for (int i = 0; i < o->n_plants && sr->n_rows; i++) {
        const Plant *p = &o->plant[i];
        BenchRow *r = &sr->rows[sr->n_rows - 1];
        if (p->q == Q_LOSS && r->status == ROW_OK && p->step <= r->steps_ran) r->losses[p->step - 1] *= 1 + p->delta;
    }
}

// Check each row's losses against the rows before it: for every step, the
// first earlier row that ran it is its reference.
static void verify(const Options *o, SizeResult *sr) {
    apply_plant(o, sr);
    for (int i = 0; i < sr->n_rows; i++) {
        BenchRow *r = &sr->rows[i];
        r->max_drift = 0;
        if (r->status != ROW_OK) {
            r->fail = r->status == ROW_FAILED;
            snprintf(r->verdict, sizeof r->verdict, "%s: %s", r->fail ? "FAIL" : status_word(r->status), r->why);
            continue;
        }
        int ref_of[MAX_ROWS_PER_SIZE] = {0}, own = 0, bad_step = -1, bad_ref = -1;
        double bad_tol = 0;
        for (int j = 0; j < r->steps_ran; j++) {
            int q = -1;
            for (int k = 0; k < i && q < 0; k++)
                if (sr->rows[k].status == ROW_OK && sr->rows[k].steps_ran > j) q = k;
            if (q < 0) {
                own++;
                continue;
            }
            ref_of[q]++;
            const BenchRow *ref = &sr->rows[q];
            const double tol = loss_rtol(o, j, r->prec, ref->prec);
            const int w = loss_window(j, r->prec, ref->prec);
            const double d = fabs(mean_loss(r, j, w) - mean_loss(ref, j, w)) / fabs(mean_loss(ref, j, w));
            if (!(d <= r->max_drift)) {
                r->max_drift = d;
                r->drift_step = j + 1;
            }
            if (!(d <= tol) && bad_step < 0) bad_step = j, bad_ref = q, bad_tol = tol;
        }
        r->drift_tol = o->b.loss_rtol;
        r->checked_against[0] = '\0';
        for (int k = 0; k < i; k++)
            if (ref_of[k]) {
                size_t len = strlen(r->checked_against);
                snprintf(r->checked_against + len, sizeof r->checked_against - len, "%s%s %s", len ? ", " : "",
                         sr->rows[k].engine, precision_name(sr->rows[k].prec));
            }
        r->checked = r->checked_against[0] != '\0';
        if (bad_step >= 0) {
            const BenchRow *ref = &sr->rows[bad_ref];
            const int w = loss_window(bad_step, r->prec, ref->prec);
            const double a = mean_loss(r, bad_step, w), b = mean_loss(ref, bad_step, w);
            char what[64] = "loss";
            if (w > 1) snprintf(what, sizeof what, "mean loss of steps %d-%d", bad_step + 2 - w, bad_step + 1);
            r->fail = 1;
            snprintf(r->verdict, sizeof r->verdict, "FAIL: step %d %s %.12g, %s %s %.12g (rel diff %.1e > %.0e)",
                     bad_step + 1, what, a, ref->engine, precision_name(ref->prec), b, fabs(a - b) / fabs(b), bad_tol);
        } else if (!r->checked) {
            snprintf(r->verdict, sizeof r->verdict, "reference");
        } else if (own) {
            snprintf(r->verdict, sizeof r->verdict, "pass (max rel diff %.1e at step %d; reference for %d later steps)",
                     r->max_drift, r->drift_step, own);
        } else {
            snprintf(r->verdict, sizeof r->verdict, "pass (max rel diff %.1e at step %d)", r->max_drift, r->drift_step);
        }
    }
}

static void fmt_bytes(double b, char *out, size_t n) {
    const double mib = b / (1 << 20);
    if (!(b > 0)) snprintf(out, n, "-");
    else snprintf(out, n, mib < 10 ? "%.1f" : "%.0f", mib);
}

// A row that ran on fewer than BENCH_CI_MIN_RUNS runs has no interval.
static int few_runs(const BenchRow *r) {
    return r->status == ROW_OK && r->repeats < BENCH_CI_MIN_RUNS;
}

// The ms/step cell: "median (interval) [min-max]", or the median marked as
// resting on too few runs for an interval.
static void fmt_ms(const BenchRow *r, char *out, size_t n) {
    if (r->status != ROW_OK) snprintf(out, n, "-");
    else if (!few_runs(r) && isfinite(r->ci_lo))
        snprintf(out, n, "%.4g (%.4g-%.4g) [%.4g-%.4g]", r->ms_med, r->ci_lo, r->ci_hi, r->ms_min, r->ms_max);
    else if (r->repeats == 1) snprintf(out, n, "%.4g (n=1: no interval)", r->ms_med);
    else snprintf(out, n, "%.4g (n=%d: no interval) [%.4g-%.4g]", r->ms_med, r->repeats, r->ms_min, r->ms_max);
}

// A speedup: num's median over den's (NaN when either did not run), with
// the bootstrap interval of that ratio (NaN: a row of too few runs, or a
// row over itself); few: the fewer runs of the two when under the minimum.
typedef struct {
    double x, lo, hi;
    int few;
} Speedup;

static Speedup speedup(const BenchRow *num, const BenchRow *den) {
    Speedup s = {NAN, NAN, NAN, 0};
    if (!num || !den || num->status != ROW_OK || den->status != ROW_OK || !(den->ms_med > 0)) return s;
    s.x = num->ms_med / den->ms_med;
    if (num == den) return s;
    const int n = num->repeats < den->repeats ? num->repeats : den->repeats;
    if (n < BENCH_CI_MIN_RUNS) s.few = n;
    else bench_ratio_ci(num->ms, num->repeats, den->ms, den->repeats, &s.lo, &s.hi);
    return s;
}

// "1.23x (1.20-1.26)", "1.23x (n=1: no interval)", "1.00x" (a row over
// itself), or "-" when either time is missing.
static void fmt_speedup(const BenchRow *num, const BenchRow *den, char *out, size_t n) {
    const Speedup s = speedup(num, den);
    if (!isfinite(s.x)) snprintf(out, n, "-");
    else if (s.few) snprintf(out, n, "%.2fx (n=%d: no interval)", s.x, s.few);
    else if (isfinite(s.lo)) snprintf(out, n, "%.2fx (%.2f-%.2f)", s.x, s.lo, s.hi);
    else snprintf(out, n, "%.2fx", s.x);
}

// What stopped the timing, for the table's timed column.
static const char *stop_mark(const Options *o, const BenchRow *r) {
    if (r->repeats < o->b.repeats || r->timed_steps < o->s.steps - o->b.warmup || r->stop == STOP_BUDGET)
        return " (budget)";
    return r->stop == STOP_NOISE ? " (noise)" : r->stop == STOP_MAX ? " (max)" : "";
}

static int is_torch_row(const BenchRow *r) {
    return !strncmp(r->engine, "torch-", 6);
}

// The PyTorch reference of the speedups: the fastest PyTorch row (by
// median) of precision p that ran and passed its check, whichever way it
// ran (graph, compile, eager): a speedup over PyTorch is over its best, and
// a wrong row is no one's reference. NULL if none.
static const BenchRow *fastest_torch_row(const SizeResult *sr, Precision p) {
    const BenchRow *best = NULL;
    for (int i = 0; i < sr->n_rows; i++) {
        const BenchRow *r = &sr->rows[i];
        if (is_torch_row(r) && r->prec == p && r->status == ROW_OK && !r->fail && (!best || r->ms_med < best->ms_med))
            best = r;
    }
    return best;
}

static int has_compile_time(const BenchRow *r) {
    return !strcmp(r->engine, "torch-compile") && isfinite(r->compile_s);
}

// An engine's device string may name the path it took after "; path "
// (the CUDA engine: "NVIDIA H200; path fused (...)"): the table shows the
// engine as "cuda (fused)" and the GPU by its name alone.
static void engine_label(const BenchRow *r, char *out, size_t n) {
    const char *p = strstr(r->device, "; path ");
    if (!p) {
        snprintf(out, n, "%s", r->engine);
        return;
    }
    p += strlen("; path ");
    const size_t len = strcspn(p, " ;(");
    snprintf(out, n, "%s (%.*s)", r->engine, (int)len, p);
}

// Whether an engine's device string names the host's processor: an exec
// engine on the CPU says "cpu" or "cpu (what it runs on)".
static int on_host_cpu(const char *device, const char *host_cpu) {
    return !strcmp(device, host_cpu) || (!strncmp(device, "cpu", 3) && strchr(" (", device[3]));
}

static void device_name_only(const char *device, char *out, size_t n) {
    const char *p = strstr(device, "; path ");
    snprintf(out, n, "%.*s", p ? (int)(p - device) : (int)strlen(device), device);
}

// The reference of the speedups: the first engine's first row, if it ran.
static const BenchRow *ref_row(const SizeResult *sr) {
    return sr->n_rows && sr->rows[0].status == ROW_OK ? &sr->rows[0] : NULL;
}

// The index of the first PyTorch row of size sr in precision p, or -1.
static int first_torch_row(const SizeResult *sr, Precision p) {
    for (int i = 0; i < sr->n_rows; i++)
        if (is_torch_row(&sr->rows[i]) && sr->rows[i].prec == p) return i;
    return -1;
}

// Below the table, for each size and precision PyTorch ran in: which of its
// rows was the speedups' reference, and how long torch.compile took (its
// warm-up, which the timed steps leave out).
static void torch_summary(const SizeResult *res, int nz, StrBuf *t) {
    int lines = 0;
    for (int zi = 0; zi < nz; zi++) {
        const SizeResult *sr = &res[zi];
        for (int i = 0; i < sr->n_rows; i++) {
            const BenchRow *r = &sr->rows[i];
            if (!is_torch_row(r) || first_torch_row(sr, r->prec) != i) continue;
            if (!lines++) sb_printf(t, "\nPyTorch (\"vs fastest torch\" is the fastest row's median over each row's):\n\n");
            const BenchRow *ft = fastest_torch_row(sr, r->prec);
            sb_printf(t, "- %s %s: ", sr->z.name, precision_name(r->prec));
            if (ft) sb_printf(t, "fastest %s (%.4g ms/step)", ft->engine, ft->ms_med);
            else sb_printf(t, "no PyTorch row ran and passed");
            for (int k = i; k < sr->n_rows; k++) {
                const BenchRow *c = &sr->rows[k];
                if (c->prec != r->prec || !has_compile_time(c)) continue;
                char mode[32] = "";
                if (strcmp(c->compile_mode, "default")) snprintf(mode, sizeof mode, " (%s)", c->compile_mode);
                sb_printf(t, "; %s%s: compiled in %.1f s (not timed)", c->engine, mode, c->compile_s);
            }
            sb_printf(t, "\n");
        }
    }
}

// Below the table: how the figures and their intervals are made, what
// stopped the timing, and which rows rest on too few runs for an interval.
static void stats_summary(const Options *o, const SizeResult *res, int nz, StrBuf *t) {
    sb_printf(t, "\nStatistics: ms/step is the median of the timed runs, its 95%% bootstrap confidence interval "
              "(%d resamples, fixed seed) in parentheses and the min-max in brackets; a speedup's interval bootstraps "
              "the ratio of the two medians, each row resampled on its own. ", BENCH_CI_RESAMPLES);
    if (o->b.noise_target > 0)
        sb_printf(t, "Our engines time at least %d run(s) (--repeats) and at most %d (--max-repeats): they stop once "
                  "the interval's half-width is within %.3g%% of the median (--noise-target; *timed* says (noise)), "
                  "at the most with the noise still over (max), or when the time budget of %.0f s is spent (budget). ",
                  o->b.repeats, o->b.max_repeats, 100 * o->b.noise_target, o->b.budget_s);
    else
        sb_printf(t, "Every engine times %d run(s) (--repeats; --noise-target 0), fewer where the time budget of "
                  "%.0f s is spent (budget). ", o->b.repeats, o->b.budget_s);
    sb_printf(t, "PyTorch's rows time %d run(s), fixed by --repeats.\n", o->b.repeats);
    int few = 0;
    for (int zi = 0; zi < nz; zi++)
        for (int i = 0; i < res[zi].n_rows; i++) {
            const BenchRow *r = &res[zi].rows[i];
            if (!few_runs(r)) continue;
            if (!few++)
                sb_printf(t, "\nToo few runs for an interval (fewer than %d): these rows' figures, and every speedup "
                          "with them, rest on the runs shown and are marked \"no interval\":", BENCH_CI_MIN_RUNS);
            sb_printf(t, "%s %s %s %s (n=%d)", few > 1 ? "," : "", res[zi].z.name, r->engine,
                      precision_name(r->prec), r->repeats);
        }
    if (few) sb_printf(t, ".\n");
}

static void report(const Options *o, SizeResult *res, int nz, const char *cpu, const char *gpu, StrBuf *t) {
    char runs[64];
    if (o->b.noise_target > 0 && o->b.max_repeats > o->b.repeats)
        snprintf(runs, sizeof runs, "%d to %d timed runs", o->b.repeats, o->b.max_repeats);
    else snprintf(runs, sizeof runs, "%d timed run(s)", o->b.repeats);
    sb_printf(t, "## compare --bench: %d step(s) a run, the first %d untimed; %s per engine and size\n\n",
       o->s.steps, o->b.warmup, runs);
    sb_printf(t, "Machine: %s%s%s. Speedups are ratios of median ms/step: over the first engine listed (%s, %s; \"-\" "
          "where it did not run) and over the fastest PyTorch row of the size in the same precision (the one that passed "
          "with the lowest median, named below the table).\n\n",
       cpu, gpu[0] ? "; GPU " : "", gpu, o->names[0], precision_name(engine_supports(o->names[0], o->prec) ? (o->b.both_precisions ? PREC_FP64 : o->prec) : PREC_FP64));
    sb_printf(t, "| size | engine | precision | ms/step median (95%% CI) [min-max] | tokens/s | vs %s | vs fastest torch | host MiB | "
          "device MiB | timed | verdict |\n",
       o->names[0]);
    sb_printf(t, "|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int zi = 0; zi < nz; zi++) {
        SizeResult *sr = &res[zi];
        const BenchRow *ref = ref_row(sr);
        for (int i = 0; i < sr->n_rows; i++) {
            const BenchRow *r = &sr->rows[i];
            char ms[160], tps[32] = "-", vr[48], vt[64], hb[16], db[16], timed[48] = "-";
            fmt_ms(r, ms, sizeof ms);
            if (r->status == ROW_OK) {
                snprintf(tps, sizeof tps, "%.0f", sr->z.positions / (r->ms_med / 1e3));
                snprintf(timed, sizeof timed, "%dx%d%s", r->repeats, r->timed_steps, stop_mark(o, r));
            }
            const BenchRow *ft = fastest_torch_row(sr, r->prec);
            fmt_speedup(ref, r, vr, sizeof vr);
            fmt_speedup(ft, r, vt, sizeof vt);
            if (ft == r) snprintf(vt + strlen(vt), sizeof vt - strlen(vt), " (fastest)");
            fmt_bytes(r->peak_host_bytes, hb, sizeof hb);
            fmt_bytes(r->peak_device_bytes, db, sizeof db);
            char label[96];
            engine_label(r, label, sizeof label);
            sb_printf(t, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", sr->z.name, label, precision_name(r->prec),
               ms, tps, vr, vt, hb, db, timed, r->verdict);
        }
    }
    stats_summary(o, res, nz, t);
    torch_summary(res, nz, t);
    sb_printf(t, "\nSizes (tokens/s counts trained positions, the same for every engine of a size):\n\n");
    for (int zi = 0; zi < nz; zi++) {
        const BenchSize *z = &res[zi].z;
        sb_printf(t, "- **%s**: %s; %d steps; %.0f positions/step; %zu parameters; %.3g FLOP/step (estimate); data %s\n",
           z->name, z->spec, z->s.steps, z->positions, z->L.n_params, z->flops, z->data_desc);
    }
    int notes = 0;
    for (int zi = 0; zi < nz; zi++)
        for (int i = 0; i < res[zi].n_rows; i++) {
            const BenchRow *r = &res[zi].rows[i];
            if (r->status == ROW_OK && r->why[0]) {
                if (!notes++) sb_printf(t, "\nNotes:\n\n");
                sb_printf(t, "- %s %s %s: %s\n", res[zi].z.name, r->engine, precision_name(r->prec), r->why);
            }
        }
}

static cJSON *row_json(const Options *o, const SizeResult *sr, const BenchRow *r) {
    cJSON *x = cJSON_CreateObject();
    const BenchSize *z = &sr->z;
    cJSON_AddStringToObject(x, "size", z->name);
    cJSON_AddStringToObject(x, "engine", r->engine);
    cJSON_AddStringToObject(x, "precision", precision_name(r->prec));
    cJSON_AddStringToObject(x, "status", status_word(r->status));
    if (r->why[0]) cJSON_AddStringToObject(x, "why", r->why);
    cJSON_AddStringToObject(x, "device", r->device);
    cJSON_AddItemToObject(x, "settings", trace_settings(&z->s, &z->L.shape));
    trace_add_number(x, "ms_per_step_median", r->ms_med);
    trace_add_number(x, "ms_per_step_min", r->ms_min);
    trace_add_number(x, "ms_per_step_max", r->ms_max);
    trace_add_number(x, "ms_per_step_ci_low", r->ci_lo);
    trace_add_number(x, "ms_per_step_ci_high", r->ci_hi);
    trace_add_number(x, "ms_per_step_rel_noise", r->noise);
    cJSON_AddBoolToObject(x, "few_runs", few_runs(r));
    if (bench_stop_name(r->stop)) cJSON_AddStringToObject(x, "stopped", bench_stop_name(r->stop));
    else cJSON_AddNullToObject(x, "stopped");
    cJSON *ms = cJSON_AddArrayToObject(x, "ms_per_step");
    for (int i = 0; i < r->repeats; i++) cJSON_AddItemToArray(ms, trace_number(r->ms[i]));
    trace_add_number(x, "tokens_per_s", r->status == ROW_OK ? z->positions / (r->ms_med / 1e3) : NAN);
    cJSON_AddNumberToObject(x, "repeats", r->repeats);
    cJSON_AddNumberToObject(x, "warmup_steps", r->warmup);
    cJSON_AddNumberToObject(x, "steps_timed", r->timed_steps);
    cJSON_AddBoolToObject(x, "budget_limited",
                          r->status == ROW_OK && (r->repeats < o->b.repeats || r->timed_steps < o->s.steps - o->b.warmup));
    const BenchRow *ref = ref_row(sr), *ft = fastest_torch_row(sr, r->prec);
    const Speedup vr = speedup(ref, r), vt = speedup(ft, r);
    trace_add_number(x, "speedup_vs_reference", vr.x);
    trace_add_number(x, "speedup_vs_reference_ci_low", vr.lo);
    trace_add_number(x, "speedup_vs_reference_ci_high", vr.hi);
    trace_add_number(x, "speedup_vs_torch", vt.x);
    trace_add_number(x, "speedup_vs_torch_ci_low", vt.lo);
    trace_add_number(x, "speedup_vs_torch_ci_high", vt.hi);
    if (ft) cJSON_AddStringToObject(x, "speedup_vs_torch_row", ft->engine);
    else cJSON_AddNullToObject(x, "speedup_vs_torch_row");
    if (!strcmp(r->engine, "torch-compile")) {
        trace_add_number(x, "compile_s", r->compile_s);
        cJSON_AddStringToObject(x, "compile_mode", r->compile_mode);
    }
    trace_add_number(x, "peak_host_bytes", r->peak_host_bytes);
    trace_add_number(x, "peak_device_bytes", r->peak_device_bytes);
    cJSON_AddStringToObject(x, "checked_against", r->checked_against);
    trace_add_number(x, "max_loss_rel_diff", r->status == ROW_OK && r->checked ? r->max_drift : NAN);
    cJSON_AddNumberToObject(x, "max_loss_rel_diff_step", r->drift_step);
    trace_add_number(x, "loss_rtol", r->drift_tol);
    cJSON_AddStringToObject(x, "verdict", r->fail ? "fail" : r->status != ROW_OK ? status_word(r->status)
                                          : r->checked ? "pass" : "reference");
    cJSON_AddStringToObject(x, "verdict_text", r->verdict);
    cJSON *ls = cJSON_AddArrayToObject(x, "losses");
    for (int i = 0; i < r->steps_ran; i++) cJSON_AddItemToArray(ls, trace_number(r->losses[i]));
    return x;
}

static void write_trace(const Options *o, SizeResult *res, int nz, const char *cpu, const char *verdict) {
    Trace t = {0};
    trace_open(&t, o->s.trace_path, "bench");
    cJSON *eng = cJSON_AddArrayToObject(t.root, "engines");
    for (int k = 0; k < o->n_engines; k++) cJSON_AddItemToArray(eng, cJSON_CreateString(o->names[k]));
    cJSON_AddStringToObject(t.root, "host_cpu", cpu);
    cJSON_AddNumberToObject(t.root, "steps", o->s.steps);
    cJSON_AddNumberToObject(t.root, "warmup_steps", o->b.warmup);
    cJSON_AddNumberToObject(t.root, "repeats", o->b.repeats);
    cJSON_AddNumberToObject(t.root, "max_repeats", o->b.noise_target > 0 ? o->b.max_repeats : o->b.repeats);
    trace_add_number(t.root, "noise_target", o->b.noise_target);
    cJSON *st = cJSON_AddObjectToObject(t.root, "statistics");
    cJSON_AddStringToObject(st, "interval", "percentile bootstrap of the median; speedups: of the ratio of medians, "
                            "each row resampled independently");
    trace_add_number(st, "level", BENCH_CI_LEVEL);
    cJSON_AddNumberToObject(st, "resamples", BENCH_CI_RESAMPLES);
    cJSON_AddNumberToObject(st, "min_runs", BENCH_CI_MIN_RUNS);
    trace_add_number(t.root, "time_budget_s", o->b.budget_s);
    cJSON *lt = cJSON_AddObjectToObject(t.root, "loss_rtol");
    for (int p = 0; p < PREC_NUM; p++)
        for (int j = 0; j < 2; j++) {
            char key[32];
            snprintf(key, sizeof key, "step%d_%s", j + 1, precision_name((Precision)p));
            trace_add_number(lt, key, rules_for((Precision)p)->bench_rtol[j]);
        }
    trace_add_number(lt, "later", o->b.loss_rtol);
    cJSON_AddStringToObject(t.root, "bench_data", o->b.raw_docs ? "raw" : "packed");
    if (o->fault != FAULT_NONE) cJSON_AddStringToObject(t.root, "injected_fault", fault_name(o->fault));
    cJSON *sz = cJSON_AddArrayToObject(t.root, "sizes");
    for (int zi = 0; zi < nz; zi++) {
        const BenchSize *z = &res[zi].z;
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "name", z->name);
        cJSON_AddStringToObject(x, "spec", z->spec);
        cJSON_AddItemToObject(x, "settings", trace_settings(&z->s, &z->L.shape));
        cJSON_AddStringToObject(x, "data", z->data_desc);
        cJSON_AddNumberToObject(x, "num_params", (double)z->L.n_params);
        trace_add_number(x, "positions_per_step", z->positions);
        trace_add_number(x, "flops_per_step", z->flops);
        cJSON_AddItemToArray(sz, x);
    }
    cJSON *rows = cJSON_AddArrayToObject(t.root, "bench");
    for (int zi = 0; zi < nz; zi++)
        for (int i = 0; i < res[zi].n_rows; i++) cJSON_AddItemToArray(rows, row_json(o, &res[zi], &res[zi].rows[i]));
    cJSON_AddStringToObject(t.root, "verdict", verdict);
    trace_commit(&t);
}

static void write_markdown(const char *path, const StrBuf *t) {
    char err[512];
    OutFile out;
    if (outfile_open(&out, path, err, sizeof err) || outfile_write(&out, t->s, t->n, err, sizeof err))
        die(EXIT_MISMATCH, "--markdown %s: %s", path, err);
}

static void progress(const Options *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress(const Options *o, const char *fmt, ...) {
    if (o->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

// A timed row's progress line: its figures and why its timing stopped.
static void row_progress(const Options *o, const BenchRow *r) {
    char ms[160], why[128] = "";
    fmt_ms(r, ms, sizeof ms);
    if (r->stop == STOP_NOISE)
        snprintf(why, sizeof why, "; stopped: noise %.2g%% <= %.3g%%", 100 * r->noise, 100 * o->b.noise_target);
    else if (r->stop == STOP_MAX)
        snprintf(why, sizeof why, "; stopped: --max-repeats %d with the noise %.2g%% > %.3g%%", r->repeats,
                 100 * r->noise, 100 * o->b.noise_target);
    else if (r->stop == STOP_BUDGET)
        snprintf(why, sizeof why, "; stopped: the time budget (%.0f s) was spent", o->b.budget_s);
    progress(o, "  %-7s %s  %s ms/step, %d run(s) of %d steps%s", r->engine, precision_name(r->prec), ms, r->repeats,
             r->timed_steps, why);
}

// A PyTorch row's progress line, and torch.compile's time (not timed).
static void torch_progress(const Options *o, const BenchRow *r) {
    if (r->status == ROW_OK)
        row_progress(o, r);
    else
        progress(o, "  %s %s  %s: %s", r->engine, precision_name(r->prec), status_word(r->status), r->why);
    if (has_compile_time(r))
        progress(o, "  %s %s  compiled in %.1f s (not timed)", r->engine, precision_name(r->prec), r->compile_s);
}

#define NOTHING_TIMED "nothing was timed: every engine at every size was skipped or could not run (see verdict)"

// A slow CPU engine's step time predicted from its rate (FLOP/s) at the
// sizes before: 0 when unknown.
typedef struct {
    const char *engine;
    Precision prec;
    double flops_per_s;
} Rate;

int bench_main(Options *o) {
    if (o->s.steps < 2) die(EXIT_USAGE, "--bench: --steps %d leaves nothing to time: use --steps 10 or more", o->s.steps);
    if (o->b.warmup >= o->s.steps)
        die(EXIT_USAGE, "--bench: --steps %d with %d warm-up step(s) leaves nothing to time: use --steps %d or more",
            o->s.steps, o->b.warmup, o->b.warmup + 5);
    if (o->b.repeats > BENCH_MAX_REPEATS) die(EXIT_USAGE, "--repeats: at most %d", BENCH_MAX_REPEATS);
    if (o->b.max_repeats < o->b.repeats) o->b.max_repeats = o->b.repeats;   // set by cli.c; a caller that did not
    SizeResult *res = xcalloc(MAX_SIZES, sizeof *res);
    BenchSize *sizes = xcalloc(MAX_SIZES, sizeof *sizes);
    const int nz = bench_sizes_parse(o->b.sizes, &o->s, sizes, MAX_SIZES);
    for (int i = 0; i < nz; i++) res[i].z = sizes[i];
    free(sizes);
    Precision precs[2] = {o->prec, PREC_FP32};
    int n_precs = 1;
    if (o->b.both_precisions) precs[0] = PREC_FP64, n_precs = 2;
    char workdir[] = "/tmp/microgpt-bench.XXXXXX";
    if (o->b.baseline && !mkdtemp(workdir)) die(EXIT_USAGE, "bench: cannot make a temporary folder: %s", strerror(errno));
    char cpu[256], gpu[128] = "";
    bench_host_cpu(cpu, sizeof cpu);
    Rate rates[2 * MAX_ENGINES] = {{0}};
    int failed = 0, unavailable = 0, timed = 0;
    for (int zi = 0; zi < nz; zi++) {
        SizeResult *sr = &res[zi];
        BenchSize *z = &sr->z;
        bench_size_prepare(z, o->b.raw_docs);
        progress(o, "size %s (%d/%d): %s; %.0f positions/step, %.3g FLOP/step", z->name, zi + 1, nz, z->spec,
                 z->positions, z->flops);
        for (int k = 0; k < o->n_engines; k++) {
            const char *name = o->names[k];
            for (int pi = 0; pi < n_precs; pi++) {
                Precision p = engine_supports(name, precs[pi]) ? precs[pi] : PREC_FP64;
                if (pi && p != precs[pi]) continue;   // the scalar engine runs once, in fp64
                BenchRow *row = &sr->rows[sr->n_rows++];
                Rate *rate = &rates[2 * k + pi];
                const double predict = rate->flops_per_s > 0 ? z->flops / rate->flops_per_s : 0;
                if (predict * (1 + o->b.warmup) > 3 * o->b.budget_s && predict > o->b.budget_s / 2) {
                    memset(row, 0, sizeof *row);
                    snprintf(row->engine, sizeof row->engine, "%s", name);
                    row->prec = p;
                    row->status = ROW_SKIPPED;
                    row->peak_host_bytes = row->peak_device_bytes = row->compile_s = NAN;
                    snprintf(row->why, sizeof row->why, "a step would take about %.0f s (its rate at the sizes before), "
                             "over the %.0f s time budget", predict, o->b.budget_s);
                    bench_row_stats(row);
                } else {
                    bench_run_engine(o, z, name, p, k == 1 ? o->fault : FAULT_NONE, row);
                }
                if (row->status == ROW_OK) {
                    rate->flops_per_s = z->flops / (row->ms_med / 1e3);
                    if (!gpu[0] && !on_host_cpu(row->device, cpu)) device_name_only(row->device, gpu, sizeof gpu);
                    row_progress(o, row);
                } else {
                    progress(o, "  %-7s %s  %s: %s", name, precision_name(p), status_word(row->status), row->why);
                }
                if (row->status == ROW_UNAVAILABLE) unavailable = 1;
            }
        }
        if (o->b.baseline)
            for (int pi = 0; pi < n_precs; pi++) {
                BenchRow *rows = &sr->rows[sr->n_rows];
                const int nt = bench_run_torch(o, z, precs[pi], workdir, rows);
                sr->n_rows += nt;
                for (int k = 0; k < nt; k++) torch_progress(o, &rows[k]);
            }
        verify(o, sr);
        for (int i = 0; i < sr->n_rows; i++) {
            failed |= sr->rows[i].fail;
            timed |= sr->rows[i].status == ROW_OK;
        }
        // keep what the report needs; the documents and batches can go
        for (int i = 0; z->batches && i < z->s.steps; i++) batch_free(&z->batches[i]);
        free(z->batches);
        z->batches = NULL;
    }
    StrBuf t = {0};
    report(o, res, nz, cpu, gpu, &t);
    fwrite(t.s, 1, t.n, stdout);
    fflush(stdout);
    // a bench that timed nothing (every engine at every size skipped or
    // unavailable) checked nothing either: not a pass
    printf("\n%s: bench, %d size(s)%s\n", failed ? "FAIL" : !timed ? "SKIPPED" : "PASS", nz,
           failed ? ": an engine's losses disagree with the reference, or a run failed (see verdict)"
           : !timed ? ": " NOTHING_TIMED
           : unavailable ? "; some engines could not run here (see verdict)" : "");
    // stdout's table is the bench's result: a write that failed (a full
    // disk) fails the run, after the trace and the temporary files are done
    int out_errno = 0;
    errno = 0;   // a stale errno must not name the failure
    if (fflush(stdout) != 0 || ferror(stdout)) out_errno = errno ? errno : EIO;
    if (o->s.trace_path) write_trace(o, res, nz, cpu, failed ? "fail" : !timed ? "skipped" : "pass");
    if (o->b.markdown) write_markdown(o->b.markdown, &t);
    if (o->b.baseline) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", workdir);
        if (system(cmd)) fprintf(stderr, "bench: warning: could not remove %s\n", workdir);
    }
    sb_free(&t);
    for (int zi = 0; zi < nz; zi++) {
        for (int i = 0; i < res[zi].n_rows; i++) free(res[zi].rows[i].losses);
        bench_size_free(&res[zi].z);
    }
    free(res);
    if (out_errno) die(EXIT_MISMATCH, "bench: writing the table to standard output failed: %s", strerror(out_errno));
    if (failed) return 1;
    if (!timed) die(EXIT_USAGE, "bench: " NOTHING_TIMED);
    if (unavailable) exit(EXIT_USAGE);
    return 0;
}
