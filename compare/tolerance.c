#include "tolerance.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"

static const char *const Q_NAMES[Q_NUM] = {"loss", "logits", "grads", "params", "m", "v", "probs", "acts", "dacts"};
static const char *const Q_WHAT[Q_NUM] = {
    "the reference's loss", "the reference's logits", "the reference's gradients",
    "Adam in fp64 on the candidate's own gradients", "Adam in fp64 on the candidate's own gradients",
    "Adam in fp64 on the candidate's own gradients", "the reference's sampling probabilities",
    "the fp64 model's op outputs on the same state", "the fp64 model's op gradients on the same state"};

const char *quantity_name(Quantity q) { return q < Q_NUM ? Q_NAMES[q] : "?"; }
const char *quantity_what(Quantity q) { return q < Q_NUM ? Q_WHAT[q] : "?"; }

Quantity quantity_from_name(const char *name) {
    for (int q = 0; q < Q_NUM; q++)
        if (!strcmp(name, Q_NAMES[q])) return (Quantity)q;
    return Q_NUM;
}

// The noise reference: three CPU engines whose sums differ from the plain
// engine's (and from each other's) as a tree reduction, a blocked reduction
// and fused multiply-adds do: the orders GPU kernels, BLAS and compilers use.
// The plain order is left out so that the CPU engine is never its own noise
// reference (--engines scalar,cpu).
const ReduceOrder NOISE_ORDERS[NOISE_MEMBERS] = {ORDER_PAIRWISE, ORDER_ACC4, ORDER_FMA};

// --against, a record's tensors (tolerance.h): measured on records of
// independent implementations (docs/calibration/measured-against.json;
// `calibrate.py derive --write` writes this line too).
const double AGAINST_FP64_SCALED[Q_NUM] = {[Q_LOGITS] = 2e-10, [Q_GRADS] = 2e-9, [Q_PARAMS] = 1e-9};
const double AGAINST_FP32_SCALED[Q_NUM] = {[Q_LOGITS] = 5, [Q_GRADS] = 50, [Q_PARAMS] = 10};

// THE TABLE. Every constant below is measured (docs/compare.md, "How the
// constants were measured"; scripts/calibrate.py derives each one from
// docs/calibration/measured-cpu.json and measured-gpu.json, `calibrate.py
// derive --write` writes them here, and `make calibrate-check` checks that
// the table still matches its derivation).
//
// fp64 (the fixed rule): max|a - b| <= scaled * rms(b) per tensor; two fp64
// engines differ by rounding alone.
// fp32 (--tolerance fixed): the per-element table of earlier versions, kept
// for users who want absolute bounds; the default for fp32 is the ratio rule.
#define FIXED64(s) {0, 0, s}
static const PrecisionRules RULES[PREC_NUM] = {
    [PREC_FP64] =
        {
            .fixed = {[Q_LOSS] = FIXED64(2e-15), [Q_LOGITS] = FIXED64(2e-14), [Q_GRADS] = FIXED64(5e-13),
                      [Q_PARAMS] = FIXED64(2e-15), [Q_M] = FIXED64(1e-14), [Q_V] = FIXED64(2e-14),
                      [Q_PROBS] = FIXED64(1e-13), [Q_ACTS] = FIXED64(1e-13), [Q_DACTS] = FIXED64(1e-12)},
            .drift_tol = 1e-9, .drift_window = 1, .relu_margin = 5e-15,
            .bench_rtol = {1e-12, 1e-5}, .bench_window = 1,
        },
    [PREC_FP32] =
        {
            .fixed = {[Q_LOSS] = {1e-6, 1e-5, 0}, [Q_LOGITS] = {1e-5, 1e-5, 0}, [Q_GRADS] = {1e-6, 1e-4, 0},
                      [Q_PARAMS] = {1e-7, 1e-6, 0}, [Q_M] = {1e-7, 1e-5, 0}, [Q_V] = {1e-10, 4e-6, 0},
                      [Q_PROBS] = {1e-5, 1e-5, 0}, [Q_ACTS] = {1e-5, 1e-5, 0}, [Q_DACTS] = {1e-6, 1e-4, 0}},
            .ratio = {[Q_LOSS] = {150, 2e-8, 0, 5e-7}, [Q_LOGITS] = {4, 1e-6, 0, 1e-5}, [Q_GRADS] = {15, 2e-6, 0, 0.0002},
                      [Q_PARAMS] = {2.5, 2e-7, 0, 2e-6}, [Q_M] = {3, 1e-6, 0, 2e-5}, [Q_V] = {10, 5e-7, 0, 0.0001},
                      [Q_PROBS] = {4, 5e-6, 0, 5e-5}, [Q_ACTS] = {6, 1e-6, 0, 5e-5}, [Q_DACTS] = {15, 2e-6, 0, 0.0005}},
            .drift_tol = 0.5, .drift_window = 1, .relu_margin = 2e-6,
            .bench_rtol = {1e-6, 1e-4}, .bench_window = 1,
        },
    [PREC_BF16] =
        {
            .ratio = {[Q_LOSS] = {2, 0.0002, 0.005, 0.005}, [Q_LOGITS] = {2, 0.02, 0.05, 0.05}, [Q_GRADS] = {2, 0.05, 5, 5},
                      [Q_PARAMS] = {3, 2e-7, 2e-6, 2e-6}, [Q_M] = {2.5, 1e-6, 2e-5, 2e-5}, [Q_V] = {8, 5e-7, 0.0001, 0.0001},
                      [Q_PROBS] = {4, 0.05, 0.5, 0.5}, [Q_ACTS] = {2, 0.02, 0.5, 0.5}, [Q_DACTS] = {2, 0.05, 5, 5}},
            .drift_tol = 3e-2, .drift_window = 50, .relu_margin = 0.05,
            .bench_rtol = {1e-3, 3e-3}, .bench_window = 50,
        },
    [PREC_FP16] =
        {
            .ratio = {[Q_LOSS] = {2, 5e-5, 0.0005, 0.0005}, [Q_LOGITS] = {2, 0.002, 0.01, 0.01}, [Q_GRADS] = {2, 0.005, 0.5, 0.5},
                      [Q_PARAMS] = {3, 2e-7, 2e-6, 2e-6}, [Q_M] = {2.5, 1e-6, 2e-5, 2e-5}, [Q_V] = {6, 5e-7, 0.0001, 0.0001},
                      [Q_PROBS] = {2, 0.005, 0.1, 0.1}, [Q_ACTS] = {2, 0.002, 0.05, 0.05}, [Q_DACTS] = {2, 0.005, 0.5, 0.5}},
            .drift_tol = 3e-2, .drift_window = 50, .relu_margin = 0.005,
            .bench_rtol = {1e-3, 3e-3}, .bench_window = 50,
        },
    [PREC_TF32] =
        {
            .ratio = {[Q_LOSS] = {2, 2e-5, 0.0002, 0.0002}, [Q_LOGITS] = {2, 0.001, 0.005, 0.005}, [Q_GRADS] = {2, 0.005, 0.5, 0.5},
                      [Q_PARAMS] = {3, 2e-7, 2e-6, 2e-6}, [Q_M] = {2, 1e-6, 2e-5, 2e-5}, [Q_V] = {8, 5e-7, 0.0001, 0.0001},
                      [Q_PROBS] = {2.5, 0.005, 0.05, 0.05}, [Q_ACTS] = {2, 0.002, 0.05, 0.05}, [Q_DACTS] = {2.5, 0.005, 0.2, 0.2}},
            .drift_tol = 3e-2, .drift_window = 50, .relu_margin = 0.005,
            .bench_rtol = {3e-5, 1e-3}, .bench_window = 50,
        },
};

const PrecisionRules *rules_for(Precision p) { return p >= 0 && p < PREC_NUM ? &RULES[p] : NULL; }

static void json_number(StrBuf *b, const char *key, double v, int comma) {
    sb_printf(b, "\"%s\": %.17g%s", key, v, comma ? ", " : "");
}

char *rules_json(void) {
    StrBuf b = {0};
    sb_printf(&b, "{\"noise_orders\": [");
    for (int j = 0; j < NOISE_MEMBERS; j++)
        sb_printf(&b, "\"%s\"%s", reduce_order_name(NOISE_ORDERS[j]), j + 1 < NOISE_MEMBERS ? ", " : "");
    sb_printf(&b, "], \"bench_loss_rtol\": %.17g", BENCH_LOSS_RTOL);
    const double *against[2] = {AGAINST_FP64_SCALED, AGAINST_FP32_SCALED};
    for (int k = 0; k < 2; k++) {
        sb_printf(&b, ", \"against_%s_scaled\": {", k ? "fp32" : "fp64");
        for (int q = 0, first = 1; q < Q_NUM; q++)
            if (against[k][q] > 0)
                sb_printf(&b, "%s\"%s\": %.17g", first ? "" : ", ", Q_NAMES[q], against[k][q]), first = 0;
        sb_printf(&b, "}");
    }
    sb_printf(&b, ", \"precisions\": {");
    for (int p = 0; p < PREC_NUM; p++) {
        const PrecisionRules *r = &RULES[p];
        sb_printf(&b, "%s\"%s\": {", p ? ", " : "", precision_name((Precision)p));
        json_number(&b, "drift_tol", r->drift_tol, 1);
        sb_printf(&b, "\"drift_window\": %d, ", r->drift_window);
        json_number(&b, "relu_margin", r->relu_margin, 1);
        sb_printf(&b, "\"bench_rtol\": [%.17g, %.17g], \"bench_window\": %d, \"quantities\": {", r->bench_rtol[0],
                      r->bench_rtol[1], r->bench_window);
        for (int q = 0; q < Q_NUM; q++) {
            const Tolerance *f = &r->fixed[q];
            const RatioRule *x = &r->ratio[q];
            sb_printf(&b, "%s\"%s\": {", q ? ", " : "", Q_NAMES[q]);
            json_number(&b, "atol", f->atol, 1);
            json_number(&b, "rtol", f->rtol, 1);
            json_number(&b, "scaled", f->scaled, 1);
            json_number(&b, "k", x->k, 1);
            json_number(&b, "floor", x->floor, 1);
            json_number(&b, "cap", x->cap, 1);
            json_number(&b, "ref_cap", x->ref_cap, 0);
            sb_printf(&b, "}");
        }
        sb_printf(&b, "}}");
    }
    sb_printf(&b, "}}");
    return b.s;
}

double rms_of(const double *x, size_t n) {
    if (!n) return 0;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s / (double)n);
}

double scaled_err(const double *a, const double *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - b[i]);
        if (isnan(e)) return NAN;
        if (e > d) d = e;
    }
    double r = rms_of(b, n);
    return r > 0 ? d / r : d;
}

// mlp_fc1's gradient takes a whole row dfch[t,j] * ln2[t,:] from every
// position whose ReLU gate j differs from the expectation's: compared with
// the gates matched (lockstep.c) that never happens; when an engine reports
// no ReLU inputs the gates cannot be matched and a cap would only say how
// many gates flipped, so there it has none.
RatioRule ratio_for_tensor(RatioRule r, Quantity q, const char *tensor) {
    const char *dot = strrchr(tensor, '.');
    if (q == Q_GRADS && !strcmp(dot ? dot + 1 : tensor, "mlp_fc1")) r.cap = 0;
    return r;
}

double ratio_bound(RatioRule r, double ref_err) {
    double b = r.k * ref_err + r.floor;
    return r.cap > 0 && !(b <= r.cap) ? r.cap : b;
}

void err_compare(const double *a, const double *b, size_t n, Tolerance t, ErrStats *st) {
    double bmax = 0, dmax = 0;
    size_t dmax_at = 0;
    int nan_seen = 0;
    const double base = t.atol + (t.scaled > 0 ? t.scaled * rms_of(b, n) : 0);
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        double lim = base + t.rtol * fabs(b[i]);
        if (!(d <= lim) && st->n_bad++ == 0) st->first_bad = i;  // NaN lands here too
        if (isnan(d)) {
            if (!nan_seen) dmax_at = i;
            nan_seen = 1;
            continue;
        }
        if (fabs(b[i]) > bmax) bmax = fabs(b[i]);
        if (d > dmax) {
            dmax = d;
            dmax_at = i;
        }
        double ratio = lim > 0 ? d / lim : (d > 0 ? INFINITY : 0);
        if (ratio > st->max_ratio) {
            st->max_ratio = ratio;
            st->worst_at = i;
        }
    }
    st->n += n;
    ErrStats s = {0};
    s.max_abs = nan_seen ? NAN : dmax;
    s.max_abs_at = s.max_rel_at = dmax_at;
    s.max_rel = nan_seen ? NAN : bmax > 0 ? dmax / bmax : (dmax > 0 ? INFINITY : 0);
    if (nan_seen) s.max_ratio = NAN;
    // fold this call's maxima in
    ErrStats keep = *st;
    keep.n_bad = 0;
    keep.n = 0;
    err_merge(&keep, &s, 0);
    st->max_abs = keep.max_abs;
    st->max_abs_at = keep.max_abs_at;
    st->max_rel = keep.max_rel;
    st->max_rel_at = keep.max_rel_at;
    if (nan_seen) {
        st->max_ratio = NAN;
        st->worst_at = dmax_at;
    }
}

static int bigger(double x, double y) { return isnan(x) ? !isnan(y) : x > y; }

void err_merge(ErrStats *into, const ErrStats *s, size_t offset) {
    if (s->n_bad && !into->n_bad) into->first_bad = s->first_bad + offset;
    into->n_bad += s->n_bad;
    into->n += s->n;
    if (bigger(s->max_abs, into->max_abs)) {
        into->max_abs = s->max_abs;
        into->max_abs_at = s->max_abs_at + offset;
    }
    if (bigger(s->max_rel, into->max_rel)) {
        into->max_rel = s->max_rel;
        into->max_rel_at = s->max_rel_at + offset;
    }
    if (bigger(s->max_ratio, into->max_ratio)) {
        into->max_ratio = s->max_ratio;
        into->worst_at = s->worst_at + offset;
    }
}
