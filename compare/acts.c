#include "acts.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

void actset_init(ActSet *s, const ModelShape *m, int max_batch) {
    memset(s, 0, sizeof *s);
    s->n_ops = act_count(m);
    s->off = xmalloc((size_t)s->n_ops * sizeof *s->off);
    for (int i = 0; i < s->n_ops; i++) {
        ActOp op;
        act_op(m, i, &op);
        s->off[i] = s->total;
        s->total += act_size(&op, max_batch, m->block_size);
    }
    s->fwd = xmalloc(s->total * sizeof *s->fwd);
    s->bwd = xmalloc(s->total * sizeof *s->bwd);
    s->have_fwd = xcalloc((size_t)s->n_ops, 1);
    s->have_bwd = xcalloc((size_t)s->n_ops, 1);
}

void actset_free(ActSet *s) {
    free(s->off);
    free(s->fwd);
    free(s->bwd);
    free(s->have_fwd);
    free(s->have_bwd);
    memset(s, 0, sizeof *s);
}

int actset_fetch(ActSet *s, Engine *e, const ModelShape *m, const Batch *b) {
    (void)m;
    int n = 0;
    for (int i = 0; i < s->n_ops; i++) {
        s->have_fwd[i] = e->ops->get_activation && !e->ops->get_activation(e, i, 0, s->fwd + s->off[i]);
        s->have_bwd[i] = e->ops->get_activation && !e->ops->get_activation(e, i, 1, s->bwd + s->off[i]);
        n += s->have_fwd[i] + s->have_bwd[i];
    }
    (void)b;
    return n;
}

typedef struct {
    const ActOp *op;
    const size_t *idx;   // the real elements' indices in the (B,T,...) array
    int T;
} ActAt;

// Element i of the gathered real values as "layer0.q[b,t,j] (document b, position t, channel j)".
static void describe_act(const void *ctx, size_t i, char *out, size_t n) {
    const ActAt *c = ctx;
    const size_t j = c->idx[i], T = (size_t)c->T, w = (size_t)c->op->width;
    if (c->op->square) {
        const size_t s = j % T, t = j / T % T, h = j / (T * T) % w, b = j / (T * T * w);
        snprintf(out, n, "%s[%zu,%zu,%zu,%zu] (document %zu, head %zu, query %zu, key %zu)", c->op->name, b, h, t, s, b,
                 h, t, s);
    } else {
        const size_t col = j % w, t = j / w % T, b = j / (w * T);
        snprintf(out, n, "%s[%zu,%zu,%zu] (document %zu, position %zu, channel %zu)", c->op->name, b, t, col, b, t, col);
    }
}

static void gather(const double *src, const size_t *idx, size_t n, double *dst) {
    for (size_t i = 0; i < n; i++) dst[i] = src[idx[i]];
}

// One direction (0 outputs, 1 gradients) of op i, if the candidate reported it.
static void compare_op(Step *S, const ModelShape *m, const Batch *b, const ActSides *sd, int i, int grad,
                       size_t *idx, double *buf, signed char *bad, double *err, double *bound) {
    const ActSet *c = sd->cand;
    bad[i] = -1;
    if (!(grad ? c->have_bwd[i] : c->have_fwd[i]) || !(grad ? sd->cand_exp->have_bwd[i] : sd->cand_exp->have_fwd[i]))
        return;
    ActOp op;
    act_op(m, i, &op);
    const size_t size = act_size(&op, b->B, b->T);
    size_t nreal = 0;
    for (size_t j = 0; j < size; j++)
        if (act_real(&op, b->n, b->B, b->T, j)) idx[nreal++] = j;
    const size_t off = c->off[i];
#define SRC(set) ((grad ? (set)->bwd : (set)->fwd) + off)
    double *a = buf, *e = buf + nreal;
    gather(SRC(c), idx, nreal, a);
    gather(SRC(sd->cand_exp), idx, nreal, e);
    Noise nz = {0};
    for (int k = 0; k < sd->n_noise; k++) {
        const ActSet *x = sd->noise[k], *xe = sd->noise_exp[k];
        if (!(grad ? x->have_bwd[i] : x->have_fwd[i])) continue;
        double *vx = buf + (size_t)(2 + 2 * nz.n) * nreal, *ve = vx + nreal;
        gather(SRC(x), idx, nreal, vx);
        gather(SRC(xe), idx, nreal, ve);
        nz.x[nz.n] = vx, nz.e[nz.n++] = ve;
    }
#undef SRC
    ActAt at = {&op, idx, b->T};
    const ErrStats s = check(S, grad ? Q_DACTS : Q_ACTS, op.name, NULL, a, e, &nz, nreal, describe_act, &at);
    bad[i] = s.n_bad > 0;
    err[i] = S->last_err;
    bound[i] = S->last_bound;
}

void acts_compare(Step *S, const ModelShape *m, const Batch *b, const ActSides *sd, signed char *fwd,
                  signed char *bwd, double *fwd_err, double *fwd_bound, double *bwd_err, double *bwd_bound) {
    const int n = sd->cand->n_ops;
    size_t largest = 0;
    for (int i = 0; i < n; i++) {
        ActOp op;
        act_op(m, i, &op);
        const size_t z = act_size(&op, b->B, b->T);
        if (z > largest) largest = z;
    }
    size_t *idx = xmalloc(largest * sizeof *idx);
    double *buf = xmalloc((size_t)(2 + 2 * NOISE_MEMBERS) * largest * sizeof *buf);
    for (int i = 0; i < n; i++) compare_op(S, m, b, sd, i, 0, idx, buf, fwd, fwd_err, fwd_bound);
    for (int i = n - 1; i >= 0; i--) compare_op(S, m, b, sd, i, 1, idx, buf, bwd, bwd_err, bwd_bound);
    free(idx);
    free(buf);
}
