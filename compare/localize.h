// Where a failing lockstep step broke (docs/compare.md, "Where it broke"):
// from the ops' outputs and gradients (common/activations.h) when the
// candidate reports them, the first op whose forward output or whose
// backward's input gradient is out of tolerance while what it read agrees;
// without them, the gradient tensors in backward order and the ops that lie
// between the last one that agrees and the first one that does not.
#ifndef COMPARE_LOCALIZE_H
#define COMPARE_LOCALIZE_H

#include <stddef.h>

#include "common/activations.h"
#include "common/model.h"

// What one step showed. fwd/bwd per op: 1 out of tolerance, 0 within, -1
// not reported; their errors in units of the RMS and the bounds; grad_bad
// per parameter tensor (canonical order): 1 out of tolerance, 0 within.
typedef struct {
    int n_ops;
    const signed char *fwd, *bwd;
    const double *fwd_err, *fwd_bound, *bwd_err, *bwd_bound;
    int logits_bad, loss_bad;   // logits_bad: 1 off, 0 agree, -1 not compared (an engine that offers none)
    const signed char *grad_bad;
} StepEvidence;

typedef struct {
    int found;
    int op;              // the op (forward index) whose forward or backward broke; act_count: the cross-entropy
    int backward;        // 0: its forward output; 1: its backward (an input gradient or its weight gradient)
    char op_name[40];
    char text[640];      // "first divergence: layer 0 rmsnorm before attention (layer0.norm1), backward: ..."
    double err, bound;   // the evidence's error and bound (units of the RMS; NaN when not applicable)
} Divergence;

// With the ops' evidence (the candidate reported at least some of them).
void localize_ops(const ModelShape *m, const ParamLayout *L, const StepEvidence *ev, Divergence *out);
// Without it: the gradient tensors in backward order, which agree, and the
// ops between the last that agrees and the first that does not (out, n).
// Returns 1 if some gradient is out of tolerance.
int localize_grads(const ModelShape *m, const ParamLayout *L, const signed char *grad_bad, char *out, size_t n);

// When the logits agree and the loss does not: both definitions of --loss
// computed from the reference's logits (the real positions gathered,
// document b's n[b] rows of V in order; targets tokens[b*(T+1) + t + 1]).
// If the candidate's loss is the other definition (1000 times closer to it
// than to the run's), writes a note saying so and what to do (out, len) and
// returns 1; else writes both values and returns 0.
int loss_definition_note(const double *ref_logits, const int *tokens, const int *n, int B, int T, int V,
                         double cand_loss, int token_mean, char *out, size_t len);

#endif
