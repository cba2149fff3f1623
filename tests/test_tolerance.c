// The comparator's tolerance rule |a-b| <= atol + rtol*|b| and its statistics.
#include <criterion/criterion.h>
#include <math.h>

#include "compare/tolerance.h"

static const Tolerance T = {1e-12, 1e-6};

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
}

Test(tolerance, statistics_and_relative_error) {
    double b[4] = {0.5, -4.0, 0.0, 1e-20};
    double a[4] = {0.5 + 1e-9, -4.0 - 3e-9, 1e-13, 1e-20};
    ErrStats s = {0};
    err_compare(a, b, 4, (Tolerance){1e-15, 1e-12}, &s);
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

Test(tolerance, defaults_are_tight_in_fp64_and_loose_in_fp32) {
    for (int q = 0; q < Q_NUM; q++) {
        Tolerance d = tolerance_default(PREC_FP64, (Quantity)q), f = tolerance_default(PREC_FP32, (Quantity)q);
        cr_expect_leq(d.rtol, 1e-12, "%s: fp64 rtol must catch a float32 rounding (6e-8)", quantity_name((Quantity)q));
        cr_expect_gt(f.rtol, d.rtol);
        cr_expect_leq(f.rtol, 1e-4);
    }
}
