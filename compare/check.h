// One comparison of lockstep (check.c): a candidate's tensor against what it
// should be, under the fixed or the ratio rule, with its trace entry, the
// run's maxima and the first failure. lockstep.c and samples.c use it.
#ifndef COMPARE_CHECK_H
#define COMPARE_CHECK_H

#include <cjson/cJSON.h>

#include "compare.h"

// The largest value of one statistic over a run, and where it was.
typedef struct {
    double v;
    int step;            // 1-based; 0: never set
    char tensor[96];
} Where;

typedef struct {
    Where abs[Q_NUM];    // max|a-b|
    Where rel[Q_NUM];    // max|a-b| / max|b| of one tensor
    Where err[Q_NUM];    // ratio rule: max|a-b| / rms(b) of the candidate
    double err_ref[Q_NUM], err_bound[Q_NUM];   // ... the noise reference's and the bound there
    Where ratio[Q_NUM];  // ratio rule: the largest err(cand) / err(noise reference), where the latter > 0
    Where noise[Q_NUM];  // ratio rule: the noise reference's largest error (held to ref_cap)
    long n_bad[Q_NUM];
    int seen[Q_NUM];     // the quantity was compared at all
} Totals;

typedef struct {
    int failed;
    int step;
    char others[512];    // every tensor out of tolerance at the failing step
    Quantity q;
    char tensor[96];
    size_t index;
    char where[200];
    double a, b, abs_err, tol;
    long n_bad;
    int ratio;           // the ratio rule applied
    double cand_err, ref_err, bound, rms;
    int noise;           // it is the noise reference that failed its own fixed bound (ref_cap)
    char member[32];     // ... which member (cpu:ORDER)
    double ref_cap;
} Failure;

// The noise reference's values in one comparison (ratio rule): member j's
// values x[j] and what they should be, e[j]. n = 0 under the fixed rule.
typedef struct {
    int n;
    const double *x[NOISE_MEMBERS], *e[NOISE_MEMBERS];
} Noise;

// Describe element i of a compared array for a message.
typedef void (*Describe)(const void *ctx, size_t i, char *out, size_t n);

// One step's (or the samples') comparisons.
typedef struct {
    const Options *o;
    int step;                          // 1-based, for the messages and maxima
    cJSON *errors, *max_err, *max_rel; // trace entries (NULL: no trace)
    Totals T;
    Failure f;
    long bad[Q_NUM];                   // elements out of tolerance per quantity
    int gates_matched;                 // the gradients' expectations follow each engine's own ReLU gates
    double last_err, last_bound;       // the last check's error and bound, in units of the RMS
    signed char *grad_bad;             // (n_tensors) per gradient tensor: out of tolerance (NULL: not kept)
} Step;

// Compare the candidate's a with b, what it should be (n elements). Under
// the ratio rule nz holds the noise reference's values (ignored under the
// fixed rule). legacy_key: the key in the older max_err/max_rel objects
// (NULL: none).
ErrStats check(Step *S, Quantity q, const char *tensor, const char *legacy_key, const double *a, const double *b,
               const Noise *nz, size_t n, Describe describe, const void *dctx);

void totals_merge(Totals *into, const Totals *s);
// Print the first failure (FAIL at step ...) with both values and the rule.
void failure_print(const Options *o, const Failure *f);
void failure_to_json(cJSON *ff, const Failure *f);
// The summary's table of largest errors; each maximum names its own tensor and step.
void totals_print(const Options *o, const Totals *T);
void totals_to_json(cJSON *mx, const Options *o, const Totals *T);

#endif
