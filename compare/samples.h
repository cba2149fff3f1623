// Lockstep's last check (--samples N): from the reference's final state both
// engines sample N names with the same random stream; the names must be the
// same, and the probabilities of every sampling step, scored on the
// reference's names, must agree (samples.c).
#ifndef COMPARE_SAMPLES_H
#define COMPARE_SAMPLES_H

#include <cjson/cJSON.h>

#include "check.h"

typedef struct {
    int failed;
    Totals T;             // the probabilities' errors
    Failure f;            // the first probability out of tolerance
    int n;                // names sampled
    int diff_sample;      // the first name that differs (-1: none)
    int diff_pos;         // the position in it
    int explained;        // fp32: the difference is a draw that fp32 rounding may decide (see samples.c)
    char note[512];       // what the difference is
} SampleResult;

// eng[0..ne-1]: the reference, the candidate and (ratio rule) the noise
// reference's engines; every engine is left in the state (p, m, v). Writes "samples" into
// root (NULL: no trace).
SampleResult samples_check(Run *r, Engine **eng, int ne, const double *p, const double *m, const double *v,
                           cJSON *root);
void samples_print(const Options *o, const SampleResult *s);

#endif
