// Chi-square tests of the sampler check (chisq.h).
#include "chisq.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "common/util.h"

// Q(a, x) by its continued fraction (modified Lentz), for x >= a + 1, where
// it converges fast and keeps a small Q's relative precision.
static double gamma_q_cf(double a, double x) {
    const double tiny = DBL_MIN / DBL_EPSILON;
    double b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
    for (int i = 1; i < 10000; i++) {
        const double an = -i * (i - a);
        b += 2;
        d = an * d + b;
        if (fabs(d) < tiny) d = tiny;
        c = b + an / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1 / d;
        const double del = d * c;
        h *= del;
        if (fabs(del - 1) < DBL_EPSILON) break;
    }
    return exp(-x + a * log(x) - lgamma(a)) * h;
}

// P(a, x) by its series, for x < a + 1 (there Q is not small, so 1 - P loses
// nothing that matters).
static double gamma_p_series(double a, double x) {
    double ap = a, del = 1 / a, sum = del;
    for (int i = 0; i < 10000; i++) {
        ap += 1;
        del *= x / ap;
        sum += del;
        if (fabs(del) < fabs(sum) * DBL_EPSILON) break;
    }
    return sum * exp(-x + a * log(x) - lgamma(a));
}

double chisq_sf(double x, int df) {
    if (!(x > 0)) return 1;
    if (isinf(x)) return 0;
    const double a = 0.5 * df, h = 0.5 * x;
    return h < a + 1 ? 1 - gamma_p_series(a, h) : gamma_q_cf(a, h);
}

// Pool the categories whose weight w (their smallest expected count) is
// below CHISQ_MIN_EXPECTED into one group, growing it by the next smallest
// category while the pool's total is still below it. The other categories
// keep a group each; the pool is the last group. Returns the groups.
static int pool(const double *w, int k, int *group, int *pool_group, int *pooled) {
    char *in = xcalloc((size_t)k, 1);
    double W = 0;
    int n = 0;
    for (int i = 0; i < k; i++)
        if (w[i] < CHISQ_MIN_EXPECTED) in[i] = 1, W += w[i], n++;
    while (n > 0 && n < k && W < CHISQ_MIN_EXPECTED) {
        int j = -1;
        for (int i = 0; i < k; i++)
            if (!in[i] && (j < 0 || w[i] < w[j])) j = i;
        in[j] = 1, W += w[j], n++;
    }
    int G = 0;
    for (int i = 0; i < k; i++)
        if (!in[i]) group[i] = G++;
    for (int i = 0; i < k; i++)
        if (in[i]) group[i] = G;
    *pool_group = n ? G : -1;
    *pooled = n;
    free(in);
    return G + (n > 0);
}

// The statistic's df and p-value from the groups (df 0: nothing to test).
static void finish(ChiResult *r) {
    r->df = r->groups - 1;
    r->p = r->df > 0 ? chisq_sf(r->stat, r->df) : 1;
}

ChiResult chisq_fit(const int *counts, const double *prob, int k, int *group) {
    ChiResult r = {.worst = -1, .pool_group = -1};
    double N = 0;
    for (int i = 0; i < k; i++) N += counts[i];
    double *w = xmalloc((size_t)k * sizeof *w);
    for (int i = 0; i < k; i++) w[i] = N * prob[i];
    r.groups = pool(w, k, group, &r.pool_group, &r.pooled);
    double *O = xcalloc((size_t)r.groups, sizeof *O), *E = xcalloc((size_t)r.groups, sizeof *E);
    for (int i = 0; i < k; i++) O[group[i]] += counts[i], E[group[i]] += w[i];
    double worst = -1;
    for (int g = 0; g < r.groups; g++) {
        // a count where the reference gives probability 0 is impossible: infinite
        const double t = E[g] > 0 ? (O[g] - E[g]) * (O[g] - E[g]) / E[g] : O[g] > 0 ? INFINITY : 0;
        r.stat += t;
        if (t > worst) worst = t, r.worst = g, r.expected = E[g], r.observed = O[g];
    }
    finish(&r);
    free(w), free(O), free(E);
    return r;
}

ChiResult chisq_two_sample(const int *a, const int *b, int k, int *group) {
    ChiResult r = {.worst = -1, .pool_group = -1};
    double N = 0, M = 0;
    for (int i = 0; i < k; i++) N += a[i], M += b[i];
    const double tot = N + M, small = N < M ? N : M;
    double *w = xmalloc((size_t)k * sizeof *w);
    for (int i = 0; i < k; i++) w[i] = tot > 0 ? small * (a[i] + b[i]) / tot : 0;
    r.groups = pool(w, k, group, &r.pool_group, &r.pooled);
    double *A = xcalloc((size_t)r.groups, sizeof *A), *B = xcalloc((size_t)r.groups, sizeof *B);
    for (int i = 0; i < k; i++) A[group[i]] += a[i], B[group[i]] += b[i];
    double worst = -1;
    for (int g = 0; g < r.groups; g++) {
        const double c = A[g] + B[g], ea = N * c / tot, eb = M * c / tot;
        const double t = c > 0 ? (A[g] - ea) * (A[g] - ea) / ea + (B[g] - eb) * (B[g] - eb) / eb : 0;
        r.stat += t;
        if (t > worst) worst = t, r.worst = g, r.expected = M > 0 ? N * B[g] / M : 0, r.observed = A[g];
    }
    finish(&r);
    free(w), free(A), free(B);
    return r;
}

SamplerTest sampler_test(const int *first, const double *p0, int V, const int *len_cand, const int *len_ref,
                         int T, int *group_first, int *group_len) {
    SamplerTest s = {.first = chisq_fit(first, p0, V, group_first),
                     .length = chisq_two_sample(len_cand, len_ref, T + 1, group_len)};
    s.failed = s.first.p < SAMPLER_ALPHA / 2 || s.length.p < SAMPLER_ALPHA / 2;
    return s;
}
