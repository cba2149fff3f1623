#include "activations.h"

#include <stdio.h>
#include <string.h>

// Per kind: its name (after "layer{l}." for the per-layer ones) and what it is.
static const struct {
    const char *name, *what;
} KINDS[ACT_KIND_NUM] = {
    [ACT_EMBED] = {"embed", "the embedding (wte[token] + wpe[position])"},
    [ACT_EMBED_NORM] = {"embed_norm", "the embedding's rmsnorm"},
    [ACT_NORM1] = {"norm1", "rmsnorm before attention"},
    [ACT_Q] = {"q", "q product (attn_wq)"},
    [ACT_K] = {"k", "k product (attn_wk)"},
    [ACT_V] = {"v", "v product (attn_wv)"},
    [ACT_SCORES] = {"scores", "attention scores (q.k / sqrt(head_dim))"},
    [ACT_SOFTMAX] = {"softmax", "attention softmax"},
    [ACT_ATTN] = {"attn", "attention weighted sum (softmax @ v)"},
    [ACT_ATTN_PROJ] = {"attn_proj", "attention output product (attn_wo)"},
    [ACT_RES1] = {"res1", "residual add after attention"},
    [ACT_NORM2] = {"norm2", "rmsnorm before the MLP"},
    [ACT_FC1] = {"fc1", "MLP up product (mlp_fc1)"},
    [ACT_RELU] = {"relu", "ReLU"},
    [ACT_FC2] = {"fc2", "MLP down product (mlp_fc2)"},
    [ACT_RES2] = {"res2", "residual add after the MLP (the layer output)"},
    [ACT_LOGITS] = {"logits", "lm_head product (the logits)"},
};

int act_count(const ModelShape *m) { return 3 + ACT_PER_LAYER * m->n_layer; }

void act_op(const ModelShape *m, int i, ActOp *op) {
    memset(op, 0, sizeof *op);
    const int last = act_count(m) - 1;
    if (i < 2 || i == last) {
        op->kind = i == 0 ? ACT_EMBED : i == 1 ? ACT_EMBED_NORM : ACT_LOGITS;
        op->layer = -1;
        snprintf(op->name, sizeof op->name, "%s", KINDS[op->kind].name);
        snprintf(op->what, sizeof op->what, "%s", KINDS[op->kind].what);
    } else {
        op->layer = (i - 2) / ACT_PER_LAYER;
        op->kind = (ActKind)(ACT_NORM1 + (i - 2) % ACT_PER_LAYER);
        snprintf(op->name, sizeof op->name, "layer%d.%s", op->layer, KINDS[op->kind].name);
        snprintf(op->what, sizeof op->what, "layer %d %s", op->layer, KINDS[op->kind].what);
    }
    const int C = m->n_embd, KV = m->n_kv_head * m->head_dim;
    switch (op->kind) {
    case ACT_K: case ACT_V: op->width = KV; break;
    case ACT_SCORES: case ACT_SOFTMAX: op->square = 1, op->width = m->n_head; break;
    case ACT_FC1: case ACT_RELU: op->width = 4 * C; break;
    case ACT_LOGITS: op->width = m->vocab_size; break;
    default: op->width = C; break;
    }
}

int act_find(const ModelShape *m, const char *name) {
    ActOp op;
    for (int i = 0; i < act_count(m); i++) {
        act_op(m, i, &op);
        if (!strcmp(op.name, name)) return i;
    }
    return -1;
}

int act_index(const ModelShape *m, ActKind kind, int layer) {
    if (kind == ACT_EMBED) return 0;
    if (kind == ACT_EMBED_NORM) return 1;
    if (kind == ACT_LOGITS) return act_count(m) - 1;
    return 2 + ACT_PER_LAYER * layer + (kind - ACT_NORM1);
}

size_t act_size(const ActOp *op, int B, int T) {
    return (size_t)B * (size_t)op->width * (size_t)T * (op->square ? (size_t)T : 1);
}

int act_real(const ActOp *op, const int *n, int B, int T, size_t j) {
    if (op->square) {   // (B,NH,T,T)
        const size_t s = j % (size_t)T, t = j / (size_t)T % (size_t)T, b = j / ((size_t)T * T * (size_t)op->width);
        return b < (size_t)B && t < (size_t)n[b] && s <= t;
    }
    const size_t t = j / (size_t)op->width % (size_t)T, b = j / ((size_t)op->width * T);
    return b < (size_t)B && t < (size_t)n[b];
}

int act_inputs(const ModelShape *m, int i, int in[2]) {
    ActOp op;
    act_op(m, i, &op);
    const int base = 2 + ACT_PER_LAYER * op.layer;                 // this layer's norm1
    const int layer_in = op.layer <= 0 ? 1 : base - 1;             // embed_norm or the last layer's res2
    const int at = base - ACT_NORM1;                               // index of kind k in this layer: at + k
    switch (op.kind) {
    case ACT_EMBED: return 0;
    case ACT_EMBED_NORM: in[0] = 0; return 1;
    case ACT_NORM1: in[0] = layer_in; return 1;
    case ACT_Q: case ACT_K: case ACT_V: in[0] = at + ACT_NORM1; return 1;
    case ACT_SCORES: in[0] = at + ACT_Q, in[1] = at + ACT_K; return 2;
    case ACT_SOFTMAX: in[0] = at + ACT_SCORES; return 1;
    case ACT_ATTN: in[0] = at + ACT_SOFTMAX, in[1] = at + ACT_V; return 2;
    case ACT_ATTN_PROJ: in[0] = at + ACT_ATTN; return 1;
    case ACT_RES1: in[0] = layer_in, in[1] = at + ACT_ATTN_PROJ; return 2;
    case ACT_NORM2: in[0] = at + ACT_RES1; return 1;
    case ACT_FC1: in[0] = at + ACT_NORM2; return 1;
    case ACT_RELU: in[0] = at + ACT_FC1; return 1;
    case ACT_FC2: in[0] = at + ACT_RELU; return 1;
    case ACT_RES2: in[0] = at + ACT_RES1, in[1] = at + ACT_FC2; return 2;
    case ACT_LOGITS: in[0] = m->n_layer ? act_count(m) - 2 : 1; return 1;
    default: return 0;
    }
}

ParamKind act_weight(const ActOp *op, ParamKind *second) {
    if (second) *second = P_NUM_KINDS;
    switch (op->kind) {
    case ACT_EMBED:
        if (second) *second = P_WPE;
        return P_WTE;
    case ACT_Q: return P_ATTN_WQ;
    case ACT_K: return P_ATTN_WK;
    case ACT_V: return P_ATTN_WV;
    case ACT_ATTN_PROJ: return P_ATTN_WO;
    case ACT_FC1: return P_MLP_FC1;
    case ACT_FC2: return P_MLP_FC2;
    case ACT_LOGITS: return P_LM_HEAD;
    default: return P_NUM_KINDS;
    }
}
