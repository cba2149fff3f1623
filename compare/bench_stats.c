// Bootstrap intervals of the bench's medians and speedups (bench_stats.h).
#include "bench_stats.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The median of v[0 .. n-1], which it sorts.
static double median_sorting(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double bench_median(const double *x, int n) {
    if (n < 1) return NAN;
    double *v = xmalloc((size_t)n * sizeof *v);
    memcpy(v, x, (size_t)n * sizeof *v);
    const double m = median_sorting(v, n);
    free(v);
    return m;
}

// splitmix64: a small generator whose stream the seed alone decides.
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// A uniform index in [0, n).
static int draw(uint64_t *s, int n) {
    return (int)(((next_u64(s) >> 11) * 0x1p-53) * n);
}

// The median of a resample (with replacement) of x[0 .. n-1]; tmp holds n.
static double resampled_median(uint64_t *s, const double *x, int n, double *tmp) {
    for (int i = 0; i < n; i++) tmp[i] = x[draw(s, n)];
    return median_sorting(tmp, n);
}

static int usable(const double *x, int n) {
    if (n < BENCH_CI_MIN_RUNS) return 0;
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

// The percentile interval of the BENCH_CI_RESAMPLES statistics in stat[] (sorted here).
static void percentiles(double *stat, double *lo, double *hi) {
    const int B = BENCH_CI_RESAMPLES;
    qsort(stat, B, sizeof *stat, cmp_double);
    const double tail = (1 - BENCH_CI_LEVEL) / 2;
    int i_lo = (int)floor(tail * B), i_hi = (int)ceil((1 - tail) * B) - 1;
    if (i_lo < 0) i_lo = 0;
    if (i_hi > B - 1) i_hi = B - 1;
    *lo = stat[i_lo];
    *hi = stat[i_hi];
}

int bench_median_ci(const double *x, int n, double *lo, double *hi) {
    *lo = *hi = NAN;
    if (!usable(x, n)) return -1;
    uint64_t s = BENCH_CI_SEED;
    double *tmp = xmalloc((size_t)n * sizeof *tmp), *stat = xmalloc(BENCH_CI_RESAMPLES * sizeof *stat);
    for (int b = 0; b < BENCH_CI_RESAMPLES; b++) stat[b] = resampled_median(&s, x, n, tmp);
    percentiles(stat, lo, hi);
    free(tmp);
    free(stat);
    return 0;
}

double bench_rel_noise(const double *x, int n) {
    double lo, hi;
    if (bench_median_ci(x, n, &lo, &hi)) return NAN;
    const double m = bench_median(x, n);
    return m > 0 ? (hi - lo) / 2 / m : NAN;
}

int bench_ratio_ci(const double *num, int n_num, const double *den, int n_den, double *lo, double *hi) {
    *lo = *hi = NAN;
    if (!usable(num, n_num) || !usable(den, n_den)) return -1;
    for (int i = 0; i < n_den; i++)
        if (!(den[i] > 0)) return -1;
    uint64_t s = BENCH_CI_SEED;
    double *tn = xmalloc((size_t)n_num * sizeof *tn), *td = xmalloc((size_t)n_den * sizeof *td);
    double *stat = xmalloc(BENCH_CI_RESAMPLES * sizeof *stat);
    for (int b = 0; b < BENCH_CI_RESAMPLES; b++) {
        const double a = resampled_median(&s, num, n_num, tn);
        stat[b] = a / resampled_median(&s, den, n_den, td);
    }
    percentiles(stat, lo, hi);
    free(tn);
    free(td);
    free(stat);
    return 0;
}
