// The comparator's element rule |a-b| <= atol + rtol*|b| + scaled*rms(b), its
// statistics, and the one table of constants (compare/tolerance.c): its
// shape, and that `compare --rules` prints exactly it.
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compare/tolerance.h"
#include "helpers.h"

static const Tolerance T = {1e-12, 1e-6, 0};

Test(tolerance, boundary_is_inclusive) {
    double b[2] = {1.0, -2.0};
    double a[2] = {1.0 + (1e-12 + 1e-6) * 0.999, -2.0 - (1e-12 + 2e-6) * 0.999};
    ErrStats s = {0};
    err_compare(a, b, 2, T, &s);
    cr_expect_eq(s.n_bad, 0, "both within atol + rtol*|b|");
    a[0] = 1.0 + 1.01e-6 + 1e-12;
    ErrStats s2 = {0};
    err_compare(a, b, 2, T, &s2);
    cr_expect_eq(s2.n_bad, 1);
    cr_expect_eq(s2.first_bad, 0);
    cr_expect_gt(s2.max_ratio, 1.0);
}

Test(tolerance, relative_part_scales_with_the_reference_not_the_candidate) {
    // b = 0: only atol applies, however large a is
    double b[1] = {0.0}, a[1] = {2e-12};
    ErrStats s = {0};
    err_compare(a, b, 1, T, &s);
    cr_expect_eq(s.n_bad, 1);
}

// The scaled part is in units of the RMS of b over the compared block: one
// bound for every element, whatever its own size (an entry that cancels to
// rounding noise is held to the tensor's scale, not its own).
Test(tolerance, scaled_part_follows_the_rms_of_the_block) {
    double b[4] = {3.0, -4.0, 0.0, 1e-30};   // rms = 2.5
    const Tolerance t = {0, 0, 1e-10};
    double a[4];
    memcpy(a, b, sizeof a);
    a[2] = 2.5e-10 * 0.99;   // just inside at the zero entry
    ErrStats in = {0};
    err_compare(a, b, 4, t, &in);
    cr_expect_eq(in.n_bad, 0, "inside: %g", in.max_ratio);
    a[3] = 1e-30 + 2.5e-10 * 1.01;   // just outside at the tiny entry
    ErrStats out = {0};
    err_compare(a, b, 4, t, &out);
    cr_expect_eq(out.n_bad, 1);
    cr_expect_eq(out.first_bad, 3);
    cr_expect_float_eq(rms_of(b, 4), 2.5, 1e-15);
    cr_expect_float_eq(scaled_err(a, b, 4), 2.5e-10 * 1.01 / 2.5, 1e-20);
}

Test(tolerance, nan_never_agrees) {
    double b[3] = {1.0, NAN, 3.0}, a[3] = {1.0, NAN, NAN};
    ErrStats s = {0};
    err_compare(a, b, 3, T, &s);
    cr_expect_eq(s.n_bad, 2, "NaN vs NaN and NaN vs 3 both fail");
    cr_expect_eq(s.first_bad, 1);
    cr_expect(isnan(s.max_abs), "a NaN is reported as the largest error");
    double c[3] = {1.0, 2.0, 3.0}, inf[3] = {1.0, 2.0, INFINITY};
    ErrStats s2 = {0};
    err_compare(inf, c, 3, T, &s2);
    cr_expect_eq(s2.n_bad, 1, "inf vs a finite value fails");
    cr_expect(isnan(scaled_err(a, b, 3)));
}

Test(tolerance, statistics_and_relative_error) {
    double b[4] = {0.5, -4.0, 0.0, 1e-20};
    double a[4] = {0.5 + 1e-9, -4.0 - 3e-9, 1e-13, 1e-20};
    ErrStats s = {0};
    err_compare(a, b, 4, (Tolerance){1e-15, 1e-12, 0}, &s);
    cr_expect_eq(s.n, 4);
    cr_expect_float_eq(s.max_abs, 3e-9, 1e-15);
    cr_expect_eq(s.max_abs_at, 1);
    cr_expect_float_eq(s.max_rel, 3e-9 / 4.0, 1e-15, "relative to the largest |b|");
    cr_expect_eq(s.n_bad, 3);
    cr_expect_eq(s.first_bad, 0);
}

Test(tolerance, merge_keeps_maxima_and_offsets) {
    ErrStats all = {0}, x = {0}, y = {0};
    double b1[2] = {1, 1}, a1[2] = {1, 1 + 1e-3};
    double b2[2] = {1, 1}, a2[2] = {1 + 1e-2, 1};
    err_compare(a1, b1, 2, T, &x);
    err_compare(a2, b2, 2, T, &y);
    err_merge(&all, &x, 0);
    err_merge(&all, &y, 100);
    cr_expect_eq(all.n, 4);
    cr_expect_eq(all.n_bad, 2);
    cr_expect_eq(all.first_bad, 1, "the first failure keeps its own offset");
    cr_expect_eq(all.max_abs_at, 100, "the largest error is in the second block");
    cr_expect_float_eq(all.max_abs, 1e-2, 1e-15);
}

Test(tolerance, ratio_bound_is_k_times_the_noise_plus_the_floor_capped) {
    const RatioRule r = {4, 1e-6, 1e-3, 0};
    cr_expect_float_eq(ratio_bound(r, 2e-6), 9e-6, 1e-20);
    cr_expect_float_eq(ratio_bound(r, 1.0), 1e-3, 1e-20, "the cap binds");
    const RatioRule nocap = {4, 1e-6, 0, 0};
    cr_expect_float_eq(ratio_bound(nocap, 1.0), 4 + 1e-6, 1e-12, "no cap: none");
    cr_expect(isnan(ratio_bound(nocap, NAN)), "a NaN noise error gives no bound (every element fails)");
    cr_expect_float_eq(ratio_bound(r, NAN), 1e-3, 1e-20, "... or the cap (the noise reference then fails its own)");
    // mlp_fc1's gradient loses its cap only when the gates cannot be matched
    cr_expect_eq(ratio_for_tensor(r, Q_GRADS, "layer3.mlp_fc1").cap, 0);
    cr_expect_eq(ratio_for_tensor(r, Q_GRADS, "layer3.mlp_fc2").cap, r.cap);
    cr_expect_eq(ratio_for_tensor(r, Q_PARAMS, "layer3.mlp_fc1").cap, r.cap);
}

Test(tolerance, quantity_names_round_trip) {
    for (int q = 0; q < Q_NUM; q++) cr_expect_eq(quantity_from_name(quantity_name((Quantity)q)), (Quantity)q);
    cr_expect_eq(quantity_from_name("gradients"), Q_NUM);
}

// What each rule must be, whatever its measured constants: fp64 bounds
// every quantity by a fixed multiple of its RMS that an fp32 rounding (6e-8)
// exceeds by orders of magnitude; fp32 and the mixed precisions judge every
// quantity by the ratio rule, with a factor >= 2 (FlashAttention's), a floor
// and a fixed bound on the noise reference itself; the mixed precisions also
// cap the candidate's error; the bench's step-2 agreement is looser than
// step 1's; free mode's band and window are set.
Test(tolerance, every_precision_has_a_complete_rule) {
    for (int p = 0; p < PREC_NUM; p++) {
        const PrecisionRules *r = rules_for((Precision)p);
        cr_assert(r, "precision %d has rules", p);
        const char *pn = precision_name((Precision)p);
        for (int q = 0; q < Q_NUM; q++) {
            const char *qn = quantity_name((Quantity)q);
            if (p == PREC_FP64) {
                cr_expect(r->fixed[q].scaled > 0 && r->fixed[q].scaled <= 1e-10,
                          "fp64 %s: scaled %g must be > 0 and catch a float32 rounding", qn, r->fixed[q].scaled);
                continue;
            }
            const RatioRule *x = &r->ratio[q];
            cr_expect(x->k >= 2, "%s %s: k %g", pn, qn, x->k);
            cr_expect(x->floor > 0, "%s %s: floor %g", pn, qn, x->floor);
            cr_expect(x->ref_cap > 0, "%s %s: the noise reference needs its fixed bound", pn, qn);
            cr_expect(x->ref_cap >= x->floor, "%s %s: ref_cap %g below the floor %g", pn, qn, x->ref_cap, x->floor);
            if (precision_is_mixed((Precision)p))
                cr_expect(x->cap > 0 && x->cap < x->k * x->ref_cap + x->floor,
                          "%s %s: cap %g must bind below k*ref_cap + floor = %g", pn, qn, x->cap,
                          x->k * x->ref_cap + x->floor);
        }
        cr_expect(r->drift_tol > 0 && r->drift_window >= 1, "%s: free mode's band", pn);
        cr_expect(r->relu_margin > 0, "%s: relu margin", pn);
        cr_expect(r->bench_rtol[0] > 0 && r->bench_rtol[1] >= r->bench_rtol[0] && r->bench_rtol[1] < BENCH_LOSS_RTOL,
                  "%s: the bench's tiers", pn);
        cr_expect_eq(r->bench_window > 1, precision_is_mixed((Precision)p), "%s: bench window %d", pn, r->bench_window);
    }
    for (int j = 0; j < NOISE_MEMBERS; j++)
        cr_expect_neq(NOISE_ORDERS[j], ORDER_SEQ, "the plain order is never in the noise reference");
}

static double num(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert(cJSON_IsNumber(x), "'%s' missing", k);
    return x->valuedouble;
}

// compare --rules prints the table itself: what calibrate.py checks against
// its measurement is what the runs use.
Test(tolerance, compare_rules_prints_the_table, .timeout = 30) {
    ThRun r = th_tool("compare", "--rules", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cJSON *j = cJSON_Parse(r.out);
    cr_assert(j, "not JSON: %s", r.out);
    const cJSON *precs = cJSON_GetObjectItem(j, "precisions");
    for (int p = 0; p < PREC_NUM; p++) {
        const PrecisionRules *t = rules_for((Precision)p);
        const cJSON *x = cJSON_GetObjectItem(precs, precision_name((Precision)p));
        cr_assert(x, "%s missing", precision_name((Precision)p));
        cr_expect_eq(num(x, "drift_tol"), t->drift_tol);
        cr_expect_eq(num(x, "relu_margin"), t->relu_margin);
        const cJSON *qs = cJSON_GetObjectItem(x, "quantities");
        for (int q = 0; q < Q_NUM; q++) {
            const cJSON *y = cJSON_GetObjectItem(qs, quantity_name((Quantity)q));
            cr_expect_eq(num(y, "scaled"), t->fixed[q].scaled);
            cr_expect_eq(num(y, "k"), t->ratio[q].k);
            cr_expect_eq(num(y, "floor"), t->ratio[q].floor);
            cr_expect_eq(num(y, "cap"), t->ratio[q].cap);
            cr_expect_eq(num(y, "ref_cap"), t->ratio[q].ref_cap);
        }
    }
    cJSON_Delete(j);
    th_run_free(&r);
    th_expect_usage(th_tool("compare", "--rules", "--steps", "3", NULL), "takes no other flag", "--rules with flags");
}
