#include "engine_scalar.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpt.h"
#include "pymath.h"
#include "common/util.h"

typedef struct {
    Engine base;
    ScalarGPT gpt;
    size_t P;
    double *m, *v;        // Adam moments
    double *grads;        // gradients of the last step
    double *logits;       // (B,T,V) of the last step
    double *relu_in;      // (L,B,T,4C) ReLU inputs of the last step
    int last_B, last_T;
    ScalarStats stats;
    double last_phase[4];   // the last step's forward, order, backward, adam (s)
} ScalarEngine;

static void adam(ScalarEngine *e, int step) {
    const Settings *s = e->base.cfg.s;
    Node *p = e->gpt.g.n;  // parameters are the first P nodes
    const double b1 = s->beta1, b2 = s->beta2;
    const double lr_t = lr_at(s->lr, step, s->steps);
    const double c1 = 1.0 - py_pow(b1, (double)(step + 1));
    const double c2 = 1.0 - py_pow(b2, (double)(step + 1));
    for (size_t i = 0; i < e->P; i++) {
        double g = p[i].grad;
        e->grads[i] = g;
        e->m[i] = b1 * e->m[i] + (1.0 - b1) * g;
        e->v[i] = b2 * e->v[i] + (1.0 - b2) * py_pow2(g);
        double m_hat = e->m[i] / c1;
        double v_hat = e->v[i] / c2;
        p[i].data -= (lr_t * m_hat) / (py_pow_half(v_hat) + s->eps);
        p[i].grad = 0.0;
    }
}

static double scalar_step(Engine *base, const Batch *b, int step) {
    ScalarEngine *e = (ScalarEngine *)base;
    ScalarGPT *s = &e->gpt;
    Graph *g = &s->g;
    const int Vn = s->m.vocab_size;
    if (b->B > e->base.cfg.max_batch)
        die(EXIT_MISMATCH, "internal error: batch %d > max_batch %d", b->B, e->base.cfg.max_batch);
    double t0 = now_seconds();
    graph_reset(g);
    e->last_B = b->B;
    e->last_T = b->T;
    size_t row = (size_t)b->T * (size_t)Vn;
    for (size_t i = 0; i < (size_t)b->B * row; i++) e->logits[i] = NAN;
    const size_t H = 4 * (size_t)s->m.n_embd, doc_relu = (size_t)b->T * H;
    for (size_t i = 0; i < (size_t)s->m.n_layer * (size_t)b->B * doc_relu; i++) e->relu_in[i] = NAN;
    s->relu_layer_stride = (size_t)b->B * doc_relu;
    V *doc_loss = xmalloc((size_t)b->B * sizeof(V));
    // doc-mean: each document's mean, then their mean; token-mean: every
    // position weighs 1/N, N the batch's trained positions
    const int token_mean = e->base.cfg.s->token_mean;
    double n_all = 0;
    for (int d = 0; d < b->B; d++) n_all += b->n[d];
    for (int d = 0; d < b->B; d++) {
        s->relu_in = e->relu_in + (size_t)d * doc_relu;
        doc_loss[d] = sgpt_doc_loss(s, b->tokens + (size_t)d * (size_t)(b->T + 1), b->n[d],
                                    token_mean ? 1.0 / n_all : 1.0 / (double)b->n[d], e->logits + (size_t)d * row);
    }
    s->relu_in = NULL;
    // B = 1 is the original: the document's loss is the loss.
    V loss = b->B == 1 ? doc_loss[0]
             : token_mean ? g_sum(g, doc_loss, b->B)
                          : g_mulc(g, g_sum(g, doc_loss, b->B), 1.0 / (double)b->B);
    free(doc_loss);
    double t1 = now_seconds();
    size_t len = graph_order(g, loss);
    double t2 = now_seconds();
    graph_propagate(g, loss, len);
    double t3 = now_seconds();
    double value = D(g, loss);
    adam(e, step);
    double t4 = now_seconds();
    ScalarStats *st = &e->stats;
    st->steps++;
    st->nodes += (double)(g->len - g->n_leaves);
    st->t_forward += t1 - t0;
    st->t_order += t2 - t1;
    st->t_backward += t3 - t2;
    st->t_adam += t4 - t3;
    e->last_phase[0] = t1 - t0, e->last_phase[1] = t2 - t1, e->last_phase[2] = t3 - t2, e->last_phase[3] = t4 - t3;
    return value;
}

static int scalar_step_phases(Engine *base, EnginePhase *out) {
    const ScalarEngine *e = (const ScalarEngine *)base;
    static const char *name[4] = {"forward", "order (DFS)", "backward", "adam"};
    for (int k = 0; k < 4; k++) out[k] = (EnginePhase){name[k], e->last_phase[k]};
    return 4;
}

static void scalar_logits(Engine *base, double *out) {
    ScalarEngine *e = (ScalarEngine *)base;
    memcpy(out, e->logits, (size_t)e->last_B * (size_t)e->last_T * (size_t)e->gpt.m.vocab_size * sizeof *out);
}

static void scalar_relu_inputs(Engine *base, double *out) {
    ScalarEngine *e = (ScalarEngine *)base;
    memcpy(out, e->relu_in, (size_t)e->gpt.m.n_layer * (size_t)e->last_B * (size_t)e->last_T *
                                4 * (size_t)e->gpt.m.n_embd * sizeof *out);
}

static void scalar_grads(Engine *base, double *out) {
    ScalarEngine *e = (ScalarEngine *)base;
    memcpy(out, e->grads, e->P * sizeof *out);
}

static void scalar_params(Engine *base, double *out) {
    ScalarEngine *e = (ScalarEngine *)base;
    for (size_t i = 0; i < e->P; i++) out[i] = e->gpt.g.n[i].data;
}

static void scalar_moments(Engine *base, double *m, double *v) {
    ScalarEngine *e = (ScalarEngine *)base;
    memcpy(m, e->m, e->P * sizeof *m);
    memcpy(v, e->v, e->P * sizeof *v);
}

static void scalar_set_state(Engine *base, const double *params, const double *m, const double *v) {
    ScalarEngine *e = (ScalarEngine *)base;
    for (size_t i = 0; i < e->P; i++) e->gpt.g.n[i].data = params[i];
    if (m) memcpy(e->m, m, e->P * sizeof *m);
    if (v) memcpy(e->v, v, e->P * sizeof *v);
}

static int scalar_sample(Engine *base, PyRandom *r, double temperature, int *out) {
    ScalarEngine *e = (ScalarEngine *)base;
    ScalarGPT *s = &e->gpt;
    Graph *g = &s->g;
    const int Vn = s->m.vocab_size, bos = Vn - 1;
    const double inv_t = py_pow(temperature, -1.0);  // l / temperature is l * temperature**-1
    double *w = xmalloc((size_t)Vn * sizeof *w);
    V *scaled = xmalloc((size_t)Vn * sizeof *scaled);
    graph_reset(g);
    int token = bos, len = 0;
    for (int pos = 0; pos < s->m.block_size; pos++) {
        sgpt_forward(s, token, pos);
        for (int i = 0; i < Vn; i++) scaled[i] = g_mulc(g, s->logits[i], inv_t);
        sgpt_softmax(s, scaled, Vn, s->probs);
        for (int i = 0; i < Vn; i++) w[i] = D(g, s->probs[i]);
        token = (int)pyrandom_choice_weighted(r, w, (size_t)Vn);
        if (token == bos) break;
        out[len++] = token;
    }
    graph_reset(g);
    free(w);
    free(scaled);
    return len;
}

static void scalar_destroy(Engine *base) {
    ScalarEngine *e = (ScalarEngine *)base;
    sgpt_free(&e->gpt);
    free(e->m);
    free(e->v);
    free(e->grads);
    free(e->logits);
    free(e->relu_in);
    free(e);
}

static const EngineOps SCALAR_OPS = {
    .name = "scalar",
    .destroy = scalar_destroy,
    .step = scalar_step,
    .get_logits = scalar_logits,
    .get_grads = scalar_grads,
    .get_params = scalar_params,
    .get_moments = scalar_moments,
    .set_state = scalar_set_state,
    .sample = scalar_sample,
    .get_relu_inputs = scalar_relu_inputs,
    .step_phases = scalar_step_phases,
};

Engine *scalar_engine_create(const EngineConfig *cfg, const double *init_params) {
    ScalarEngine *e = xcalloc(1, sizeof *e);
    e->base.ops = &SCALAR_OPS;
    e->base.cfg = *cfg;
    if (e->base.cfg.max_batch < 1) e->base.cfg.max_batch = 1;
    sgpt_init(&e->gpt, cfg->L, init_params);
    e->P = cfg->L->n_params;
    e->m = xcalloc(e->P, sizeof *e->m);
    e->v = xcalloc(e->P, sizeof *e->v);
    e->grads = xcalloc(e->P, sizeof *e->grads);
    const ModelShape *m = &cfg->L->shape;
    e->logits = xmalloc((size_t)e->base.cfg.max_batch * (size_t)m->block_size * (size_t)m->vocab_size *
                        sizeof *e->logits);
    e->relu_in = xmalloc((size_t)m->n_layer * (size_t)e->base.cfg.max_batch * (size_t)m->block_size * 4 *
                         (size_t)m->n_embd * sizeof *e->relu_in);
    return &e->base;
}

void scalar_engine_stats(const Engine *base, ScalarStats *out) { *out = ((const ScalarEngine *)base)->stats; }

// Graph nodes of one document of n positions: every multiply-add is a
// product node and a running-sum node; the rest (norms, softmax, loss) is
// a few nodes per channel, head and position.
static double doc_nodes(const ModelShape *m, int n) {
    const double C = m->n_embd, KV = (double)m->n_kv_head * m->head_dim, Vn = m->vocab_size;
    const double L = m->n_layer, NH = m->n_head;
    double total = 0;
    for (int p = 0; p < n; p++) {
        double mac = L * (2 * C * C + 2 * KV * C + 8 * C * C + 2 * C * (p + 1)) + Vn * C;
        total += 2 * mac + 8 * (L * (6 * C + NH * (p + 1)) + Vn + C);
    }
    return total;
}

double scalar_engine_bytes(const ParamLayout *L, const Dataset *d, int B, int steps) {
    const ModelShape *m = &L->shape;
    // the graph grows to the largest step's; the batches repeat after n_docs documents
    long windows = steps < 1 ? 1 : steps;
    if (windows > (long)d->n_docs + 1) windows = (long)d->n_docs + 1;
    double worst = 0;
    for (long s = 0; s < windows; s++) {
        double nodes = 0;
        for (int b = 0; b < B; b++) {
            int len;
            dataset_doc(d, (int)(((long long)s * B + b) % d->n_docs), &len);
            nodes += doc_nodes(m, len + 1 < m->block_size ? len + 1 : m->block_size);
        }
        if (nodes > worst) worst = nodes;
        if ((double)B * d->n_docs > 1e8) break;  // huge batches: the first step is representative
    }
    // 52 bytes a node in the arrays (node, children, chain, ordering), a
    // quarter more for the doubling arrays (measured: 1.1-1.3x the peak RSS);
    // the per-parameter state and the per-step logits and ReLU inputs on top
    const double P = (double)L->n_params;
    const double per_step = (double)B * m->block_size * (m->vocab_size + 4.0 * m->n_embd * m->n_layer);
    return 1.25 * 52 * (worst + P) + 8 * (4 * P + per_step);
}
