// Tolerances and error statistics of the comparator. An element of engine A
// (the candidate) agrees with the reference B when
//     |a - b| <= atol + rtol * |b|
// NaN never agrees, not even with NaN: a NaN in either engine is a failure.
#ifndef COMPARE_TOLERANCE_H
#define COMPARE_TOLERANCE_H

#include <stddef.h>

#include "common/engine.h"

// Lockstep compares, per step: the logits, the loss, the gradients, and the
// update (the parameters and Adam's moments m and v after the step); at the
// end the sampling probabilities of the sampled names.
typedef enum { Q_LOSS, Q_LOGITS, Q_GRADS, Q_PARAMS, Q_M, Q_V, Q_PROBS, Q_NUM } Quantity;
// The quantities the trace's per-step max_err/max_rel objects hold (the
// older format; the "errors" list has them all).
#define Q_NUM_LEGACY 4

typedef struct {
    double atol, rtol;
} Tolerance;

const char *quantity_name(Quantity q);
// What each quantity is compared against, for the messages.
const char *quantity_what(Quantity q);
// The defaults for a precision; docs/compare.md says why.
Tolerance tolerance_default(Precision p, Quantity q);

typedef struct {
    size_t n;            // elements compared
    double max_abs;      // largest |a - b|
    size_t max_abs_at;
    double max_rel;      // relative error: max|a - b| / max|b| (0 if b is all zero)
    size_t max_rel_at;   // where max|a - b| is
    double max_ratio;    // largest |a - b| / (atol + rtol*|b|): > 1 means a failure
    size_t worst_at;     // where max_ratio is
    long n_bad;          // elements out of tolerance (NaN included)
    size_t first_bad;    // the first of them (valid when n_bad > 0)
} ErrStats;

// The fp32 error-ratio rule (--tolerance ratio, docs/compare.md): per
// tensor, with errors scaled by the RMS of the expected values,
//     err(candidate) <= k * err(plain fp32 CPU reference) + floor
// where both errors are taken against the same fp64 expectation. For the
// mixed precisions the reference is the CPU emulation of the candidate's
// recipe, and the bound is also capped: err(candidate) <= cap, the largest
// error the recipe itself was measured to make (with a margin), so that the
// emulation, which is its own ratio reference, is held to something too.
typedef struct {
    double k, floor;
    double cap;   // 0: none (fp32)
} RatioRule;
// The rule for a candidate computing in p (fp32 or a mixed precision).
RatioRule ratio_default(Precision p, Quantity q);
// The rule for one tensor: r, without the cap for the gradient of mlp_fc1
// (ReLU gate flips dominate its error: tolerance.c).
RatioRule ratio_for_tensor(RatioRule r, Quantity q, const char *tensor);
// min(k * ref_err + floor, cap): the largest scaled error allowed.
double ratio_bound(RatioRule r, double ref_err);
// Free mode's default loss band for a precision (--drift-tol).
double drift_tol_default(Precision p);
// Lockstep's default --relu-margin for a precision.
double relu_margin_default(Precision p);
// Root mean square of x (n elements; NaN if any is NaN).
double rms_of(const double *x, size_t n);
// max|a - b| / rms(b) (max|a-b| itself when rms(b) is 0; NaN if any is NaN).
double scaled_err(const double *a, const double *b, size_t n);
// The absolute tolerance the ratio rule gives a tensor whose expected values
// have RMS `rms`, when the fp32 reference's scaled error is ref_err.
Tolerance ratio_tolerance(RatioRule r, double ref_err, double rms);

// Compare a and b (n elements) and accumulate into *st (zero it first). The
// relative error is taken against the largest |b| of this call (a tensor, or
// a document's logits): an elementwise |a-b|/|b| means nothing for entries
// that cancel to rounding noise.
void err_compare(const double *a, const double *b, size_t n, Tolerance t, ErrStats *st);
// Merge statistics into a running maximum (offset: where s's indices start).
void err_merge(ErrStats *into, const ErrStats *s, size_t offset);

#endif
