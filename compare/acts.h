// Lockstep's comparison of the ops' outputs and gradients (common/activations.h)
// where the candidate reports them: each engine's values, what they should be
// (the fp64 CPU engine on the reference's state, with the engine's own ReLU
// gates where those were matched), and the evidence a failing step is
// localized from (localize.h).
#ifndef COMPARE_ACTS_H
#define COMPARE_ACTS_H

#include "check.h"
#include "localize.h"
#include "common/activations.h"
#include "common/engine.h"

// Every op's output and gradient of one engine's step (the largest batch's
// room for each op).
typedef struct {
    int n_ops;
    size_t *off, total;
    double *fwd, *bwd;
    signed char *have_fwd, *have_bwd;   // [n_ops] the engine reported it
} ActSet;

void actset_init(ActSet *s, const ModelShape *m, int max_batch);
void actset_free(ActSet *s);
// Fetch what engine e reports of the step on batch b (nothing when it has no
// get_activation); returns how many outputs and gradients it reported.
int actset_fetch(ActSet *s, Engine *e, const ModelShape *m, const Batch *b);

// One step's comparison: the candidate's set and its expectation, the noise
// reference's members' and theirs (n_noise of them).
typedef struct {
    const ActSet *cand, *cand_exp;
    const ActSet *noise[NOISE_MEMBERS], *noise_exp[NOISE_MEMBERS];
    int n_noise;
} ActSides;

// Compare every op the candidate reported, outputs in forward order and
// gradients in backward order (quantities acts and dacts); the per-op
// verdicts, errors and bounds go to fwd/bwd/... (n_ops each).
void acts_compare(Step *S, const ModelShape *m, const Batch *b, const ActSides *sides, signed char *fwd,
                  signed char *bwd, double *fwd_err, double *fwd_bound, double *bwd_err, double *bwd_bound);

#endif
