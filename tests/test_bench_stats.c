// The bench's statistics (compare/bench_stats.c): the bootstrap interval of
// a median and of a ratio of medians, on data whose answer is known.
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>

#include "compare/bench_stats.h"

Test(bench_stats, the_median) {
    const double odd[] = {3, 1, 2}, even[] = {4, 1, 3, 2};
    cr_expect_eq(bench_median(odd, 3), 2);
    cr_expect_eq(bench_median(even, 4), 2.5);
    cr_expect(isnan(bench_median(odd, 0)));
}

// Identical runs: every resample has the same median, so the interval has
// no width, and the noise is 0.
Test(bench_stats, identical_runs_give_a_zero_width_interval) {
    const double x[] = {1.25, 1.25, 1.25, 1.25, 1.25};
    double lo, hi;
    cr_assert_eq(bench_median_ci(x, 5, &lo, &hi), 0);
    cr_expect(lo == 1.25 && hi == 1.25, "[%g, %g]", lo, hi);
    cr_expect_eq(bench_rel_noise(x, 5), 0);
    cr_assert_eq(bench_ratio_ci(x, 5, x, 5, &lo, &hi), 0);
    cr_expect(lo == 1 && hi == 1, "[%g, %g]", lo, hi);
}

// 1..9 in some order: the median is 5. A resample's median is at most x(2)
// with probability P(Binomial(9, 2/9) >= 5) = 0.029 and at most x(3) with
// 0.145, so the 2.5% point is x(2) or, by the resampling's own noise,
// x(3); symmetrically the 97.5% point is x(8) or x(7). Never min or max,
// never the median itself.
Test(bench_stats, a_known_sample_s_interval) {
    const double x[] = {5, 9, 1, 7, 3, 8, 2, 6, 4};
    double lo, hi;
    cr_assert_eq(bench_median_ci(x, 9, &lo, &hi), 0);
    cr_expect(lo >= 2 && lo <= 3, "low end %g, want x(2) or x(3)", lo);
    cr_expect(hi >= 7 && hi <= 8, "high end %g, want x(7) or x(8)", hi);
    cr_expect(lo < 5 && 5 < hi, "the interval [%g, %g] holds the median", lo, hi);
    cr_expect_float_eq(bench_rel_noise(x, 9), (hi - lo) / 2 / 5, 1e-15);
    // deterministic: the same figures, the same interval
    double lo2, hi2;
    bench_median_ci(x, 9, &lo2, &hi2);
    cr_expect(lo == lo2 && hi == hi2);
}

// Fewer than 3 runs, or a run that is not a number: no interval.
Test(bench_stats, too_few_runs_give_no_interval) {
    const double x[] = {1, 2, NAN, 4};
    double lo, hi;
    cr_expect_eq(bench_median_ci(x, 2, &lo, &hi), -1);
    cr_expect(isnan(lo) && isnan(hi));
    cr_expect(isnan(bench_rel_noise(x, 1)));
    cr_expect_eq(bench_median_ci(x, 4, &lo, &hi), -1, "a NaN run");
    cr_expect_eq(bench_ratio_ci(x, 2, x, 2, &lo, &hi), -1);
    cr_expect(isnan(lo) && isnan(hi));
    const double zero[] = {0, 0, 0};
    cr_expect_eq(bench_ratio_ci(x, 2, zero, 3, &lo, &hi), -1);
}

// Two clearly separated rows: the ratio's interval lies between the
// extreme ratios and excludes 1; swapping them inverts it.
Test(bench_stats, the_ratio_of_two_separated_rows) {
    const double slow[] = {10, 11, 12, 10.5, 11.5}, fast[] = {1, 1.1, 0.9, 1.05, 0.95};
    double lo, hi, ilo, ihi;
    cr_assert_eq(bench_ratio_ci(slow, 5, fast, 5, &lo, &hi), 0);
    cr_expect(lo >= 10 / 1.1 && hi <= 12 / 0.9 && lo <= 11 && 11 <= hi, "[%g, %g]", lo, hi);
    cr_assert_eq(bench_ratio_ci(fast, 5, slow, 5, &ilo, &ihi), 0);
    cr_expect(ihi < 1 && ilo >= 0.9 / 12 && ihi <= 1.1 / 10, "[%g, %g]", ilo, ihi);
}

// The interval is a 95% one: over 400 samples of 21 uniform values its
// coverage of the true median (0.5) is near 95%. An interval too narrow
// (the quartiles: about 50%) or too wide (min-max: 100%) fails.
Test(bench_stats, coverage_of_the_true_median) {
    uint64_t s = 12345;
    int covered = 0;
    const int trials = 400, n = 21;
    for (int t = 0; t < trials; t++) {
        double x[21], lo, hi;
        for (int i = 0; i < n; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            x[i] = (double)(s >> 11) * 0x1p-53;
        }
        cr_assert_eq(bench_median_ci(x, n, &lo, &hi), 0);
        covered += lo <= 0.5 && 0.5 <= hi;
    }
    const double c = (double)covered / trials;
    cr_expect(c >= 0.88 && c <= 0.99, "coverage %.3f of a 95%% interval", c);
}
