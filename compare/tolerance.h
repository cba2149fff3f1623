// Tolerances and error statistics of the comparator. An element of engine A
// (the candidate) agrees with the reference B when
//     |a - b| <= atol + rtol * |b|
// NaN never agrees, not even with NaN: a NaN in either engine is a failure.
#ifndef COMPARE_TOLERANCE_H
#define COMPARE_TOLERANCE_H

#include <stddef.h>

#include "common/engine.h"

typedef enum { Q_LOSS, Q_LOGITS, Q_GRADS, Q_PARAMS, Q_NUM } Quantity;

typedef struct {
    double atol, rtol;
} Tolerance;

const char *quantity_name(Quantity q);
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

// Compare a and b (n elements) and accumulate into *st (zero it first). The
// relative error is taken against the largest |b| of this call (a tensor, or
// a document's logits): an elementwise |a-b|/|b| means nothing for entries
// that cancel to rounding noise.
void err_compare(const double *a, const double *b, size_t n, Tolerance t, ErrStats *st);
// Merge statistics into a running maximum (offset: where s's indices start).
void err_merge(ErrStats *into, const ErrStats *s, size_t offset);

#endif
