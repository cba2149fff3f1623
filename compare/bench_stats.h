// The bench's statistics (docs/BENCHMARKS.md, "How the bench measures"):
// each timed run gives one ms/step figure; a row reports their median with a
// 95% percentile-bootstrap confidence interval, and a speedup (a ratio of two
// rows' medians) an interval from bootstrapping that ratio, both rows
// resampled independently. The resampling draws from a fixed-seed generator,
// reseeded on every call: the same figures always give the same interval.
// compare --bench writes these into its table and trace, and `trace inspect`
// and `trace diff` recompute them from a trace's ms_per_step arrays.
#ifndef COMPARE_BENCH_STATS_H
#define COMPARE_BENCH_STATS_H

#define BENCH_CI_LEVEL 0.95          // the intervals' confidence level
#define BENCH_CI_RESAMPLES 2000      // bootstrap resamples per interval
#define BENCH_CI_MIN_RUNS 3          // fewer runs than this: no interval (the row is marked)
#define BENCH_CI_SEED 0x6d6963726f677074ULL   // "microgpt"

// The median of x[0 .. n-1] (NaN when n < 1).
double bench_median(const double *x, int n);
// The 95% bootstrap interval of the median of x[0 .. n-1] in [*lo, *hi]:
// 0, or -1 with both NaN when n < BENCH_CI_MIN_RUNS or a value is not
// finite. Identical values give a zero-width interval.
int bench_median_ci(const double *x, int n, double *lo, double *hi);
// The interval's relative half-width, (hi - lo) / 2 / median: the noise
// --noise-target compares with. NaN when there is no interval.
double bench_rel_noise(const double *x, int n);
// The 95% bootstrap interval of median(num) / median(den), num and den
// resampled independently: 0, or -1 with both NaN when either has fewer
// than BENCH_CI_MIN_RUNS values, a value is not finite, or den's are not > 0.
int bench_ratio_ci(const double *num, int n_num, const double *den, int n_den, double *lo, double *hi);

#endif
