// Chi-square tests for the sampler check of --sampler own (samples_own.c):
// a candidate that samples with its own randomness cannot give the same
// names as the reference, so what it drew is tested against the reference's
// distribution instead: the first character against the reference's exact
// probabilities at position 0, the name length against the reference's own
// names. In the library so that tests/test_sampler.c can check the
// statistics, and simulate their false-alarm rate, without an engine.
#ifndef COMPARE_CHISQ_H
#define COMPARE_CHISQ_H

// The false-alarm rate of one run's sampler check: the two tests together,
// each at half of it (Bonferroni), so a correct sampler fails at most this
// often whatever the dependence of the two tests.
#define SAMPLER_ALPHA 1e-3
// A category whose expected count is below this is pooled with the others
// that are (and, if they are still below it together, with the next
// smallest): the chi-square distribution describes the statistic only where
// every expected count is at least about 5.
#define CHISQ_MIN_EXPECTED 5.0
// --sampler own: the candidate's names when --samples is not given, the
// fewest it may be given (fewer leave too few counts to test anything), and
// how many times as many names the reference samples.
#define SAMPLER_OWN_NAMES 1000
#define SAMPLER_OWN_MIN_NAMES 100
#define SAMPLER_REF_FACTOR 4

// P(X >= x) for X chi-square with df degrees of freedom (df >= 1): the
// regularized upper incomplete gamma function Q(df/2, x/2). 1 for x <= 0.
double chisq_sf(double x, int df);

// One test's result. The categories are pooled into groups (group[i] is
// category i's); `worst` is the group whose term of the statistic is the
// largest, with the candidate's expected and observed count there.
typedef struct {
    double stat, p;
    int df;              // groups - 1 (0: one group, nothing to test; p = 1)
    int groups;
    int worst;           // a group index (-1: none)
    double expected;     // the worst group: N x the reference's probability (or frequency) of it
    double observed;     // the worst group: the candidate's count
    int pooled;          // categories in the pooled group (0: none pooled)
    int pool_group;      // the pooled group's index (-1: none)
} ChiResult;

// Goodness of fit: counts[0..k-1] (the candidate's, N = their sum) against
// the probabilities prob[0..k-1] (summing to 1). group: k ints (out).
ChiResult chisq_fit(const int *counts, const double *prob, int k, int *group);
// Homogeneity of two samples over k categories: a (the candidate's counts,
// N in all) and b (the reference's, M in all); a 2 x groups contingency
// table. `expected` is N x b's frequency of the worst group. group: k ints (out).
ChiResult chisq_two_sample(const int *a, const int *b, int k, int *group);

// The sampler check on counts: the candidate's first tokens first[0..V-1]
// (id V-1, BOS, is the empty name) against the reference's probabilities p0
// at position 0, and the candidate's name lengths len_cand[0..T] against the
// reference's len_ref[0..T]. Fails when either p-value is below
// SAMPLER_ALPHA / 2. The groups: group_first (V ints), group_len (T+1 ints), out.
typedef struct {
    ChiResult first, length;
    int failed;
} SamplerTest;
SamplerTest sampler_test(const int *first, const double *p0, int V, const int *len_cand, const int *len_ref,
                         int T, int *group_first, int *group_len);

#endif
