#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

ModelShape model_shape(const Settings *s, int vocab_size) {
    ModelShape m;
    m.vocab_size = vocab_size;
    m.n_embd = s->n_embd;
    m.n_head = s->n_head;
    m.n_kv_head = settings_kv_heads(s);
    m.head_dim = s->n_embd / s->n_head;
    m.n_layer = s->n_layer;
    m.block_size = s->block_size;
    return m;
}

static const char *const KIND_NAME[P_NUM_KINDS] = {
    "wte", "wpe", "lm_head", "attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2"};

static void kind_shape(const ModelShape *m, ParamKind k, int *rows, int *cols) {
    int C = m->n_embd, KV = m->n_kv_head * m->head_dim;
    switch (k) {
    case P_WTE: *rows = m->vocab_size; *cols = C; break;
    case P_WPE: *rows = m->block_size; *cols = C; break;
    case P_LM_HEAD: *rows = m->vocab_size; *cols = C; break;
    case P_ATTN_WQ: *rows = C; *cols = C; break;
    case P_ATTN_WK: *rows = KV; *cols = C; break;
    case P_ATTN_WV: *rows = KV; *cols = C; break;
    case P_ATTN_WO: *rows = C; *cols = C; break;
    case P_MLP_FC1: *rows = 4 * C; *cols = C; break;
    case P_MLP_FC2: *rows = C; *cols = 4 * C; break;
    default: *rows = *cols = 0;
    }
}

void layout_init(ParamLayout *L, const ModelShape *m) {
    L->shape = *m;
    L->n_tensors = N_GLOBAL_KINDS + N_LAYER_KINDS * m->n_layer;
    L->t = xcalloc((size_t)L->n_tensors, sizeof *L->t);
    size_t off = 0;
    int k = 0;
    for (int layer = -1; layer < m->n_layer; layer++) {
        int first = layer < 0 ? 0 : N_GLOBAL_KINDS;
        int last = layer < 0 ? N_GLOBAL_KINDS : P_NUM_KINDS;
        for (int kind = first; kind < last; kind++, k++) {
            ParamTensor *t = &L->t[k];
            t->kind = (ParamKind)kind;
            t->layer = layer;
            if (layer < 0) snprintf(t->name, sizeof t->name, "%s", KIND_NAME[kind]);
            else snprintf(t->name, sizeof t->name, "layer%d.%s", layer, KIND_NAME[kind]);
            kind_shape(m, t->kind, &t->rows, &t->cols);
            t->offset = off;
            t->size = (size_t)t->rows * (size_t)t->cols;
            off += t->size;
        }
    }
    L->n_params = off;
}

void layout_free(ParamLayout *L) {
    free(L->t);
    L->t = NULL;
    L->n_tensors = 0;
}

const ParamTensor *layout_tensor(const ParamLayout *L, ParamKind kind, int layer) {
    for (int i = 0; i < L->n_tensors; i++)
        if (L->t[i].kind == kind && (kind < N_GLOBAL_KINDS || L->t[i].layer == layer))
            return &L->t[i];
    die(EXIT_MISMATCH, "internal error: no tensor of kind %d layer %d", (int)kind, layer);
}

const ParamTensor *layout_tensor_at(const ParamLayout *L, size_t i) {
    for (int k = 0; k < L->n_tensors; k++)
        if (i >= L->t[k].offset && i < L->t[k].offset + L->t[k].size) return &L->t[k];
    return NULL;
}

void layout_describe(const ParamLayout *L, size_t i, char *out, size_t n) {
    const ParamTensor *t = layout_tensor_at(L, i);
    if (!t) {
        snprintf(out, n, "index %zu (out of range)", i);
        return;
    }
    size_t j = i - t->offset;
    int r = (int)(j / (size_t)t->cols), c = (int)(j % (size_t)t->cols);
    snprintf(out, n, "%s[%d,%d] (row %d, col %d)", t->name, r, c, r, c);
}

void params_init(const ParamLayout *L, PyRandom *r, double std, double *out) {
    for (size_t i = 0; i < L->n_params; i++) out[i] = pyrandom_gauss(r, 0.0, std);
}

void batch_make(Batch *b, const Dataset *d, long step, int B, int block_size) {
    b->B = B;
    b->n = xrealloc(b->n, (size_t)B * sizeof(int));
    b->doc = xrealloc(b->doc, (size_t)B * sizeof(int));
    int T = 0;
    for (int i = 0; i < B; i++) {
        b->doc[i] = (int)(((long long)step * B + i) % d->n_docs);
        int len;
        dataset_doc(d, b->doc[i], &len);
        int n = len + 1;  // len(tokens) - 1 with tokens = [BOS] + doc + [BOS]
        b->n[i] = n < block_size ? n : block_size;
        if (b->n[i] > T) T = b->n[i];
    }
    b->T = T;
    b->tokens = xrealloc(b->tokens, (size_t)B * (size_t)(T + 1) * sizeof(int));
    for (int i = 0; i < B; i++) {
        int len;
        const int *ids = dataset_doc(d, b->doc[i], &len);
        int *row = b->tokens + (size_t)i * (size_t)(T + 1);
        for (int t = 0; t <= T; t++) {
            if (t > b->n[i]) row[t] = -1;
            else if (t == 0 || t == len + 1) row[t] = d->bos;
            else row[t] = ids[t - 1];
        }
    }
}

void batch_check(const Batch *b, int max_batch, int block_size, int V) {
    if (b->B < 1 || b->B > max_batch)
        die(EXIT_MISMATCH, "internal error: batch %d not in 1..max_batch %d", b->B, max_batch);
    if (b->T < 1 || b->T > block_size)
        die(EXIT_MISMATCH, "internal error: batch T %d not in 1..block_size %d", b->T, block_size);
    for (int d = 0; d < b->B; d++) {
        if (b->n[d] < 1 || b->n[d] > b->T)
            die(EXIT_MISMATCH, "internal error: document %d has %d positions (T %d)", d, b->n[d], b->T);
        const int *row = b->tokens + (size_t)d * (size_t)(b->T + 1);
        for (int t = 0; t <= b->n[d]; t++)
            if (row[t] < 0 || row[t] >= V)
                die(EXIT_MISMATCH, "internal error: token %d at [%d,%d] not in 0..%d", row[t], d, t, V - 1);
    }
}

void batch_free(Batch *b) {
    free(b->n);
    free(b->doc);
    free(b->tokens);
    memset(b, 0, sizeof *b);
}

double lr_at(double lr, int step, int num_steps) {
    return lr * (1.0 - (double)step / (double)num_steps);
}
