#include "grad_check.h"

#include <string.h>

static int all_zero(const double *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (x[i] != 0) return 0;   // NaN is not zero: it is reported as a mismatch
    return 1;
}

int grads_zero_report(const ParamLayout *L, const double *cand, const double *ref, const char *cand_name, FILE *f) {
    int n = 0;
    for (int k = 0; k < L->n_tensors; k++) {
        const ParamTensor *t = &L->t[k];
        if (!all_zero(cand + t->offset, t->size) || all_zero(ref + t->offset, t->size)) continue;
        if (n++ == 0) fprintf(f, "  gradient missing (all zero) in %s, not in the reference:", cand_name);
        fprintf(f, " %s", t->name);
    }
    if (n)
        fprintf(f, " (%d of %d tensors; no gradient reaches them: is the graph cut, e.g. a custom op whose output "
                "has no grad_fn?)\n", n, L->n_tensors);
    return n;
}
