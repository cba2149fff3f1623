#include "gpt.h"

#include <stdlib.h>
#include <string.h>

#include "pymath.h"
#include "common/util.h"

void sgpt_init(ScalarGPT *s, const ParamLayout *L, const double *init_params) {
    memset(s, 0, sizeof *s);
    s->m = L->shape;
    s->L = L;
    graph_init(&s->g, init_params, L->n_params);
    int C = s->m.n_embd, KV = s->m.n_kv_head * s->m.head_dim, T = s->m.block_size;
    size_t kv = (size_t)s->m.n_layer * (size_t)T * (size_t)KV;
    s->keys = xmalloc(kv * sizeof(V));
    s->values = xmalloc(kv * sizeof(V));
    int wide = 4 * C > s->m.vocab_size ? 4 * C : s->m.vocab_size;
    s->x = xmalloc((size_t)C * sizeof(V));
    s->res = xmalloc((size_t)C * sizeof(V));
    s->tmp = xmalloc((size_t)C * sizeof(V));
    s->q = xmalloc((size_t)C * sizeof(V));
    s->attn = xmalloc((size_t)C * sizeof(V));
    s->hid = xmalloc((size_t)wide * sizeof(V));
    s->logits = xmalloc((size_t)wide * sizeof(V));
    s->probs = xmalloc((size_t)wide * sizeof(V));
    s->exps = xmalloc((size_t)(wide > T ? wide : T) * sizeof(V));
    s->att_logits = xmalloc((size_t)T * sizeof(V));
    s->att_w = xmalloc((size_t)T * sizeof(V));
}

void sgpt_free(ScalarGPT *s) {
    graph_free(&s->g);
    free(s->keys); free(s->values);
    free(s->x); free(s->res); free(s->tmp); free(s->q); free(s->attn);
    free(s->hid); free(s->logits); free(s->probs); free(s->exps);
    free(s->att_logits); free(s->att_w);
    memset(s, 0, sizeof *s);
}

static V param(const ScalarGPT *s, ParamKind k, int layer) {
    return (V)layout_tensor(s->L, k, layer)->offset;
}

// linear(x, w) = [sum(w[o][i] * x[i] for i) for o]: weight on the left.
static void linear(Graph *g, const V *x, int nin, V w, int nout, V *out) {
    g_linear(g, w, x, nin, nout, out);
}

// rmsnorm: ms = sum(x*x) * n**-1; scale = (ms + 1e-5) ** -0.5; x * scale
static void rmsnorm(Graph *g, const V *x, int n, V *out) {
    V ms = g_mulc(g, g_dot(g, x, 1, x, 1, n), py_pow((double)n, -1.0));
    V scale = g_pow(g, g_addc(g, ms, 1e-5), -0.5);
    for (int i = 0; i < n; i++) out[i] = g_mul(g, x[i], scale);
}

void sgpt_softmax(ScalarGPT *s, const V *logits, int n, V *probs) {
    Graph *g = &s->g;
    double mx = D(g, logits[0]);
    for (int i = 1; i < n; i++)
        if (D(g, logits[i]) > mx) mx = D(g, logits[i]);
    for (int i = 0; i < n; i++) s->exps[i] = g_exp(g, g_addc(g, logits[i], -mx));
    V total = g_sum(g, s->exps, n);
    // e / total is e * total**-1 with a new pow node for every element; the
    // nodes are all alike, so pow is called once for all of them.
    const double t = D(g, total), inv = py_pow(t, -1.0), dinv = -1.0 * py_pow(t, -2.0);
    for (int i = 0; i < n; i++) {
        V p = g_node(g, inv, total, dinv, g->sink, 0.0);
        probs[i] = g_mul(g, s->exps[i], p);
    }
}

void sgpt_forward(ScalarGPT *s, int token, int pos) {
    Graph *g = &s->g;
    const ModelShape *m = &s->m;
    const int C = m->n_embd, HS = m->head_dim, KV = m->n_kv_head * HS, T = m->block_size;
    const int group = m->n_head / m->n_kv_head;
    const double att_scale = py_pow(py_pow((double)HS, 0.5), -1.0);  // / head_dim**0.5
    V *x = s->x;

    V wte = param(s, P_WTE, -1) + (V)token * (V)C, wpe = param(s, P_WPE, -1) + (V)pos * (V)C;
    for (int i = 0; i < C; i++) x[i] = g_add(g, wte + (V)i, wpe + (V)i);
    rmsnorm(g, x, C, x);

    for (int l = 0; l < m->n_layer; l++) {
        V *keys = s->keys + (size_t)l * (size_t)T * (size_t)KV;
        V *values = s->values + (size_t)l * (size_t)T * (size_t)KV;
        memcpy(s->res, x, (size_t)C * sizeof(V));
        rmsnorm(g, x, C, x);
        linear(g, x, C, param(s, P_ATTN_WQ, l), C, s->q);
        linear(g, x, C, param(s, P_ATTN_WK, l), KV, keys + (size_t)pos * (size_t)KV);
        linear(g, x, C, param(s, P_ATTN_WV, l), KV, values + (size_t)pos * (size_t)KV);
        for (int h = 0; h < m->n_head; h++) {
            const V *q = s->q + h * HS;
            const int kvo = (h / group) * HS;  // this head's key/value channels
            for (int t = 0; t <= pos; t++) {
                const V *k = keys + (size_t)t * (size_t)KV + kvo;
                s->att_logits[t] = g_mulc(g, g_dot(g, q, 1, k, 1, HS), att_scale);
            }
            sgpt_softmax(s, s->att_logits, pos + 1, s->att_w);
            for (int j = 0; j < HS; j++)
                s->attn[h * HS + j] = g_dot(g, s->att_w, 1, values + kvo + j, KV, pos + 1);
        }
        linear(g, s->attn, C, param(s, P_ATTN_WO, l), C, x);
        for (int i = 0; i < C; i++) x[i] = g_add(g, x[i], s->res[i]);
        memcpy(s->res, x, (size_t)C * sizeof(V));
        rmsnorm(g, x, C, s->tmp);
        linear(g, s->tmp, C, param(s, P_MLP_FC1, l), 4 * C, s->hid);
        if (s->relu_in) {
            double *r = s->relu_in + (size_t)l * s->relu_layer_stride + (size_t)pos * (size_t)(4 * C);
            for (int i = 0; i < 4 * C; i++) r[i] = D(g, s->hid[i]);
        }
        for (int i = 0; i < 4 * C; i++) s->hid[i] = g_relu(g, s->hid[i]);
        linear(g, s->hid, 4 * C, param(s, P_MLP_FC2, l), C, x);
        for (int i = 0; i < C; i++) x[i] = g_add(g, x[i], s->res[i]);
    }
    linear(g, x, C, param(s, P_LM_HEAD, -1), m->vocab_size, s->logits);
}

V sgpt_doc_loss(ScalarGPT *s, const int *tokens, int n, double weight, double *logits_out) {
    Graph *g = &s->g;
    const int Vn = s->m.vocab_size;
    V *losses = xmalloc((size_t)n * sizeof(V));
    for (int pos = 0; pos < n; pos++) {
        sgpt_forward(s, tokens[pos], pos);
        if (logits_out)
            for (int i = 0; i < Vn; i++) logits_out[(size_t)pos * (size_t)Vn + (size_t)i] = D(g, s->logits[i]);
        sgpt_softmax(s, s->logits, Vn, s->probs);
        V lp = g_log(g, s->probs[tokens[pos + 1]]);
        losses[pos] = g_mulc(g, lp, -1.0);  // -x is x * -1
    }
    V loss = g_mulc(g, g_sum(g, losses, n), weight);  // (1 / n) * sum(losses)
    free(losses);
    return loss;
}
