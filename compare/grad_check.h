// The engine-agnostic check that names the gradients an engine lost: a custom
// kernel that cuts autograd leaves every tensor before it with no gradient.
#ifndef COMPARE_GRAD_CHECK_H
#define COMPARE_GRAD_CHECK_H

#include <stdio.h>

#include "common/model.h"

// Print one line to f naming every tensor whose gradient is all zero in cand
// while ref's is not (e.g. "wte, wpe"); returns how many (nothing is printed
// for 0).
int grads_zero_report(const ParamLayout *L, const double *cand, const double *ref, const char *cand_name, FILE *f);

#endif
