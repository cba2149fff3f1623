// The CPU tensor engine: forward, fused cross-entropy, hand-written backward
// and Adam over whole (B,T,...) tensors, calling the reference layers of
// tensor_gpu/cpu/layers.c in the configured precision.
//
// Memory: four contiguous buffers of P elements in the canonical layout of
// common/model.h (parameters, gradients, Adam m, Adam v) and one activations
// buffer sized for max_batch documents of block_size positions. Parameters
// and gradients are reached through ParamPtrs, pointers into their buffer
// derived from the layout table; m and v are only ever used whole (Adam is
// elementwise), so they need none. Buffers are typed by the precision:
// double for fp64, float for fp32, held as void * and handed to the _f64 or
// _f32 layer by the LAYER() macro.
//
// bf16, fp16, tf32: the mixed-precision recipe of docs/mixed_precision.md,
// emulated on the fp32 build. The buffers are float (fp32 master weights,
// gradients, moments, activations); every matrix product goes through
// mm_forward/mm_backward to the recipe's products (tensor_gpu/cpu/mixed.c),
// which round both operands to the low precision (round-to-nearest-even,
// tensor_gpu/lowp.h), accumulate in fp32, and for bf16/fp16 round the
// activation (and activation-gradient) outputs. fp16 also scales the loss
// (dynamic, as torch's GradScaler).
#include "tensor_gpu/cpu/engine_cpu.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/activations.h"
#include "common/util.h"
#include "tensor_gpu/layers.h"
#include "tensor_gpu/lowp.h"
#include "tensor_gpu/mixed.h"

// Call layer function `fn` in the engine's precision. The buffers are void *,
// which converts to double * or float * implicitly.
#define LAYER(e, fn, ...) ((e)->fp32 ? fn##_f32(__VA_ARGS__) : fn##_f64(__VA_ARGS__))

typedef struct {
    void *wte, *wpe, *lm_head;        // (V,C) (T,C) (V,C)
    void **wq, **wk, **wv, **wo;      // [n_layer] (C,C) (KV,C) (KV,C) (C,C)
    void **fc1, **fc2;                // [n_layer] (4C,C) (C,4C)
} ParamPtrs;

// One layer's activations, in the order the forward pass makes them.
typedef struct {
    void *ln1, *ln1_rstd;     // (B,T,C) rmsnorm of the layer input, (B,T)
    void *q, *k, *v;          // (B,T,C) (B,T,KV) (B,T,KV)
    void *att;                // (B,NH,T,T) attention weights
    void *atty;               // (B,T,C) attention output
    void *attproj;            // (B,T,C) atty @ wo^T
    void *res2;               // (B,T,C) attproj + layer input
    void *ln2, *ln2_rstd;     // (B,T,C), (B,T)
    void *fch, *fch_relu;     // (B,T,4C) before and after relu
    void *fcproj;             // (B,T,C) fch_relu @ fc2^T
    void *res3;               // (B,T,C) layer output: fcproj + res2
} LayerActs;

typedef struct {
    // forward
    void *encoded;            // (B,T,C) wte[tok] + wpe[t]
    void *x0, *rstd0;         // (B,T,C) rmsnorm(encoded), (B,T)
    LayerActs *layer;         // [n_layer]
    void *logits;             // (B,T,V)
    void *losses;             // (B,T)
    // backward scratch
    void *dlogits;            // (B,T,V)
    void *dx;                 // (B,T,C) gradient of the residual stream
    void *dln;                // (B,T,C) gradient of an rmsnorm output
    void *datty;              // (B,T,C)
    void *dq, *dk, *dv;       // (B,T,C) (B,T,KV) (B,T,KV)
    void *dfch, *dfch_relu;   // (B,T,4C)
} Acts;

// The mixed-precision recipe's state (unused in fp64 and fp32).
typedef struct {
    MixedMM mm;               // the products (tensor_gpu/cpu/mixed.c)
    // fp16 loss scaling, as torch.cuda.amp.GradScaler with its defaults
    double scale;             // the next step's loss scale
    int good_steps;           // steps since the scale last changed
    int skipped;              // the last step's update was skipped
    double used_scale;        // the scale the last step used
} Mixed;

#define SCALE_GROWTH_INTERVAL 2000   // GradScaler: double the scale after 2000 clean steps
#define SCALE_INIT 65536.0           // GradScaler's init_scale, 2^16

typedef struct {
    Engine base;
    ModelShape m;
    int fp32;                 // float buffers: every precision but fp64
    int mixed;                // bf16, fp16 or tf32 (precision_is_mixed)
    Mixed mx;
    size_t es;                // bytes per element
    size_t P;                 // number of parameters
    void *params_mem, *grads_mem, *m_mem, *v_mem;   // (P) each, canonical layout
    ParamPtrs params, grads;
    void *acts_mem;
    Acts acts;
    size_t lm_flip;           // FAULT_GRAD_SIGN: the flat index whose gradient is negated
    double *logits_out;       // (max_batch,T,V) the last step's logits, NaN at padding
    double *relu_out;         // (L,max_batch,T,4C) the last step's ReLU inputs, NaN at padding
    int last_B, last_T;
    int *sample_tokens;       // (block_size+1) the sampler's prefix
    double *sample_probs;     // (V)
    double phase[4];          // the last step's forward, loss, backward, adam (s)
    ReduceOrder order;        // the order of the sums (cpu:ORDER; ORDER_SEQ for cpu)
    unsigned char *gates;     // (L,B,T,4C) ReLU gates forced on the next steps, or NULL
    size_t gates_n;
    // cfg.activations (common/activations.h): each op's gradient as the
    // backward makes it, the attention scores (its forward overwrites them
    // with the softmax) and the backward's attention intermediates
    int n_ops;
    void **dact;              // [n_ops] (max_batch, ...) each
    void **scores;            // [n_layer] (max_batch,NH,T,T)
    void *dsoftmax, *dscores; // (max_batch,NH,T,T) scratch
    int cur_B, cur_T;         // the last step's batch shape
    int n_ops_total;          // act_count: also FAULT_OP_BWD's index of the cross-entropy
} CpuEngine;

// ---------------------------------------------------------------------------
// buffers

static void *at(const CpuEngine *e, void *buf, size_t i) { return (char *)buf + i * e->es; }

static void zero(const CpuEngine *e, void *buf, size_t count) { memset(buf, 0, count * e->es); }

static void to_double(const CpuEngine *e, double *out, const void *buf, size_t count) {
    if (e->fp32)
        for (size_t i = 0; i < count; i++) out[i] = (double)((const float *)buf)[i];
    else
        memcpy(out, buf, count * sizeof(double));
}

static void from_double(const CpuEngine *e, void *buf, const double *in, size_t count) {
    if (e->fp32)
        for (size_t i = 0; i < count; i++) ((float *)buf)[i] = (float)in[i];
    else
        memcpy(buf, in, count * sizeof(double));
}

static void **param_slot(ParamPtrs *p, const ParamTensor *t) {
    switch (t->kind) {
    case P_WTE: return &p->wte;
    case P_WPE: return &p->wpe;
    case P_LM_HEAD: return &p->lm_head;
    case P_ATTN_WQ: return &p->wq[t->layer];
    case P_ATTN_WK: return &p->wk[t->layer];
    case P_ATTN_WV: return &p->wv[t->layer];
    case P_ATTN_WO: return &p->wo[t->layer];
    case P_MLP_FC1: return &p->fc1[t->layer];
    case P_MLP_FC2: return &p->fc2[t->layer];
    default: die(EXIT_MISMATCH, "internal error: parameter kind %d", (int)t->kind);
    }
}

// Point p into buf (P elements, canonical layout), tensor by tensor from the table.
static void params_point(CpuEngine *e, ParamPtrs *p, void *buf, const ParamLayout *L) {
    const size_t nl = (size_t)L->shape.n_layer;
    void ***per_layer[] = {&p->wq, &p->wk, &p->wv, &p->wo, &p->fc1, &p->fc2};
    for (size_t i = 0; i < sizeof per_layer / sizeof per_layer[0]; i++)
        *per_layer[i] = xcalloc(nl, sizeof(void *));
    for (int i = 0; i < L->n_tensors; i++) *param_slot(p, &L->t[i]) = at(e, buf, L->t[i].offset);
}

static void params_unpoint(ParamPtrs *p) {
    free(p->wq); free(p->wk); free(p->wv); free(p->wo); free(p->fc1); free(p->fc2);
}

// Hands out consecutive slices of one buffer; with base NULL it only counts.
typedef struct {
    char *base;
    size_t es, used;
} Carver;

static void *carve(Carver *c, size_t count) {
    void *p = c->base ? c->base + c->used * c->es : NULL;
    c->used += count;
    return p;
}

// Point every activation into base, sized for B documents of T positions;
// returns the number of elements.
static size_t acts_point(Acts *a, char *base, size_t es, const ModelShape *m, int B) {
    const size_t T = (size_t)m->block_size, N = (size_t)B * T, C = (size_t)m->n_embd;
    const size_t KV = (size_t)m->n_kv_head * (size_t)m->head_dim, V = (size_t)m->vocab_size;
    const size_t att = N * (size_t)m->n_head * T;
    Carver c = {base, es, 0};
    a->encoded = carve(&c, N * C);
    a->x0 = carve(&c, N * C);
    a->rstd0 = carve(&c, N);
    for (int l = 0; l < m->n_layer; l++) {
        LayerActs *la = &a->layer[l];
        la->ln1 = carve(&c, N * C);
        la->ln1_rstd = carve(&c, N);
        la->q = carve(&c, N * C);
        la->k = carve(&c, N * KV);
        la->v = carve(&c, N * KV);
        la->att = carve(&c, att);
        la->atty = carve(&c, N * C);
        la->attproj = carve(&c, N * C);
        la->res2 = carve(&c, N * C);
        la->ln2 = carve(&c, N * C);
        la->ln2_rstd = carve(&c, N);
        la->fch = carve(&c, N * 4 * C);
        la->fch_relu = carve(&c, N * 4 * C);
        la->fcproj = carve(&c, N * C);
        la->res3 = carve(&c, N * C);
    }
    a->logits = carve(&c, N * V);
    a->losses = carve(&c, N);
    a->dlogits = carve(&c, N * V);
    a->dx = carve(&c, N * C);
    a->dln = carve(&c, N * C);
    a->datty = carve(&c, N * C);
    a->dq = carve(&c, N * C);
    a->dk = carve(&c, N * KV);
    a->dv = carve(&c, N * KV);
    a->dfch = carve(&c, N * 4 * C);
    a->dfch_relu = carve(&c, N * 4 * C);
    return c.used;
}

// The layers read their (test-only) fault and the order of their sums from
// file-scope variables: set for each step and sample, cleared after.
static void layers_enter(const CpuEngine *e) {
    if (e->fp32) layers_fault_f32 = e->base.cfg.fault, layers_order_f32 = e->order;
    else layers_fault_f64 = e->base.cfg.fault, layers_order_f64 = e->order;
}

static void layers_leave(const CpuEngine *e) {
    if (e->fp32) layers_fault_f32 = FAULT_NONE, layers_order_f32 = ORDER_SEQ;
    else layers_fault_f64 = FAULT_NONE, layers_order_f64 = ORDER_SEQ;
}

// ---------------------------------------------------------------------------
// the matrix products, plain or by the mixed-precision recipe

// out = inp @ w^T (layers.h), or the recipe's product (mixed.h).
static void mm_forward(CpuEngine *e, void *out, const void *inp, const void *w, int N, int IC, int OC) {
    if (!e->mixed) {
        LAYER(e, matmul_forward, out, inp, w, N, IC, OC);
        return;
    }
    mixed_matmul_forward(&e->mx.mm, out, inp, w, N, IC, OC);
}

// dinp += dout @ w, dw += dout^T @ inp (layers.h), or the recipe's (mixed.h).
static void mm_backward(CpuEngine *e, void *dinp, void *dw, const void *dout, const void *inp, const void *w, int N,
                        int IC, int OC) {
    if (!e->mixed) {
        LAYER(e, matmul_backward, dinp, dw, dout, inp, w, N, IC, OC);
        return;
    }
    mixed_matmul_backward(&e->mx.mm, dinp, dw, dout, inp, w, N, IC, OC);
}

// ---------------------------------------------------------------------------
// what the engine reports (cfg.activations) and the per-op faults of the tests

static size_t op_elems(const CpuEngine *e, int i) {
    ActOp op;
    act_op(&e->m, i, &op);
    return act_size(&op, e->cur_B, e->cur_T);
}

// The loss's gradient with respect to op (kind, layer)'s output, as the backward has it in src.
static void rec_grad(CpuEngine *e, ActKind kind, int layer, const void *src) {
    if (!e->dact) return;
    const int i = act_index(&e->m, kind, layer);
    memcpy(e->dact[i], src, op_elems(e, i) * e->es);
}

// Element 0 of buf (count elements) off by 1% of the largest |value| (10%
// in the mixed precisions, whose own rounding is up to 0.4%): a planted bug
// that the localisation must name (FAULT_OP_FWD, FAULT_OP_BWD).
static void bump(const CpuEngine *e, void *buf, size_t count) {
    double mx = 0;
    for (size_t i = 0; i < count; i++) {
        const double x = e->fp32 ? fabs((double)((float *)buf)[i]) : fabs(((double *)buf)[i]);
        if (x > mx) mx = x;
    }
    const double d = (e->mixed ? 0.1 : 0.01) * (mx > 0 ? mx : 0.1);
    if (e->fp32) ((float *)buf)[0] += (float)d;
    else ((double *)buf)[0] += d;
}

static int fault_at(const CpuEngine *e, Fault f, ActKind kind, int layer) {
    return e->base.cfg.fault == f && e->base.cfg.fault_op == act_index(&e->m, kind, layer);
}

// FAULT_OP_FWD: op (kind, layer)'s output buf (count elements) is off.
static void fault_fwd(const CpuEngine *e, ActKind kind, int layer, void *buf, size_t count) {
    if (fault_at(e, FAULT_OP_FWD, kind, layer)) bump(e, buf, count);
}

// FAULT_OP_BWD: the gradient op (kind, layer)'s backward passes to its
// input, dinp (count elements), is off.
static void fault_bwd(const CpuEngine *e, ActKind kind, int layer, void *dinp, size_t count) {
    if (fault_at(e, FAULT_OP_BWD, kind, layer)) bump(e, dinp, count);
}

// ---------------------------------------------------------------------------
// the model

// Layer l's forced ReLU gates for a step of N = B*T rows (cpu_engine_force_gates), or NULL.
static const unsigned char *layer_gates(const CpuEngine *e, int l, int N) {
    const size_t per = (size_t)N * 4 * (size_t)e->m.n_embd;
    return e->gates && e->gates_n == per * (size_t)e->m.n_layer ? e->gates + (size_t)l * per : NULL;
}

// Forward pass of B documents (tokens (B,T+1), n[b] positions each) up to the logits.
static void forward(CpuEngine *e, const int *tokens, const int *n, int B, int T) {
    const ModelShape *m = &e->m;
    const int C = m->n_embd, NH = m->n_head, NKV = m->n_kv_head, HS = m->head_dim;
    const int KV = NKV * HS, V = m->vocab_size, N = B * T;
    const size_t NC = (size_t)N * C, NKVs = (size_t)N * KV, N4C = (size_t)N * 4 * C;
    const size_t att_n = (size_t)B * NH * T * T;
    const ParamPtrs *p = &e->params;
    Acts *a = &e->acts;

    LAYER(e, encoder_forward, a->encoded, tokens, n, p->wte, p->wpe, B, T, C);
    fault_fwd(e, ACT_EMBED, -1, a->encoded, NC);
    LAYER(e, rmsnorm_forward, a->x0, a->rstd0, a->encoded, N, C);   // the original norms the embedding
    fault_fwd(e, ACT_EMBED_NORM, -1, a->x0, NC);
    void *x = a->x0;                                                  // (B,T,C) residual stream
    for (int l = 0; l < m->n_layer; l++) {
        LayerActs *la = &a->layer[l];
        LAYER(e, rmsnorm_forward, la->ln1, la->ln1_rstd, x, N, C);
        fault_fwd(e, ACT_NORM1, l, la->ln1, NC);
        mm_forward(e, la->q, la->ln1, p->wq[l], N, C, C);
        fault_fwd(e, ACT_Q, l, la->q, NC);
        mm_forward(e, la->k, la->ln1, p->wk[l], N, C, KV);
        fault_fwd(e, ACT_K, l, la->k, NKVs);
        mm_forward(e, la->v, la->ln1, p->wv[l], N, C, KV);
        fault_fwd(e, ACT_V, l, la->v, NKVs);
        // attention in its three passes (layers.c attention_forward): the
        // scores kept apart when they are reported
        void *sc = e->scores ? e->scores[l] : la->att;
        LAYER(e, attention_scores, sc, la->q, la->k, n, B, T, NH, NKV, HS);
        fault_fwd(e, ACT_SCORES, l, sc, att_n);
        LAYER(e, attention_softmax, la->att, sc, n, B, T, NH);
        fault_fwd(e, ACT_SOFTMAX, l, la->att, att_n);
        LAYER(e, attention_wsum, la->atty, la->att, la->v, n, B, T, NH, NKV, HS);
        fault_fwd(e, ACT_ATTN, l, la->atty, NC);
        mm_forward(e, la->attproj, la->atty, p->wo[l], N, C, C);
        fault_fwd(e, ACT_ATTN_PROJ, l, la->attproj, NC);
        LAYER(e, residual_forward, la->res2, la->attproj, x, NC);
        fault_fwd(e, ACT_RES1, l, la->res2, NC);
        LAYER(e, rmsnorm_forward, la->ln2, la->ln2_rstd, la->res2, N, C);
        fault_fwd(e, ACT_NORM2, l, la->ln2, NC);
        mm_forward(e, la->fch, la->ln2, p->fc1[l], N, C, 4 * C);
        fault_fwd(e, ACT_FC1, l, la->fch, N4C);
        const unsigned char *open = layer_gates(e, l, N);
        if (open) LAYER(e, relu_forward_gated, la->fch_relu, la->fch, open, N4C);
        else LAYER(e, relu_forward, la->fch_relu, la->fch, N4C);
        fault_fwd(e, ACT_RELU, l, la->fch_relu, N4C);
        mm_forward(e, la->fcproj, la->fch_relu, p->fc2[l], N, 4 * C, C);
        fault_fwd(e, ACT_FC2, l, la->fcproj, NC);
        LAYER(e, residual_forward, la->res3, la->fcproj, la->res2, NC);
        fault_fwd(e, ACT_RES2, l, la->res3, NC);
        x = la->res3;
    }
    mm_forward(e, a->logits, x, p->lm_head, N, C, V);
    fault_fwd(e, ACT_LOGITS, -1, a->logits, (size_t)N * V);
}

// FAULT_OP_BWD inside the attention's backward, which is one call: the
// gradient each of its three parts passes to its inputs. The weighted sum's
// into v; the scores' into q; the softmax's into the scores, as if
// dscores[0] (document 0, head 0, query 0, key 0) were off by d: then dq and
// dk carry d * scale * k and d * scale * q at that pair.
static void attention_backward_faults(CpuEngine *e, int l, int B, int T) {
    const ModelShape *m = &e->m;
    const int C = m->n_embd, HS = m->head_dim, KV = m->n_kv_head * HS;
    const size_t NC = (size_t)B * T * C, NKVs = (size_t)B * T * KV;
    Acts *a = &e->acts;
    fault_bwd(e, ACT_ATTN, l, a->dv, NKVs);
    fault_bwd(e, ACT_SCORES, l, a->dq, NC);
    if (!fault_at(e, FAULT_OP_BWD, ACT_SOFTMAX, l)) return;
    const size_t att_n = (size_t)B * m->n_head * T * T;
    double mx = 0;
    for (size_t i = 0; i < att_n && e->dscores; i++) {
        const double x = e->fp32 ? fabs((double)((float *)e->dscores)[i]) : fabs(((double *)e->dscores)[i]);
        if (x > mx) mx = x;
    }
    const double d = (e->mixed ? 0.1 : 0.01) * (mx > 0 ? mx : 0.1), scale = 1.0 / sqrt((double)HS);
    const LayerActs *la = &a->layer[l];
    for (int j = 0; j < HS; j++) {   // dq[0, 0, head 0] and dk[0, 0, kv head 0]
        if (e->fp32) {
            ((float *)a->dq)[j] += (float)(d * scale * ((const float *)la->k)[j]);
            ((float *)a->dk)[j] += (float)(d * scale * ((const float *)la->q)[j]);
        } else {
            ((double *)a->dq)[j] += d * scale * ((const double *)la->k)[j];
            ((double *)a->dk)[j] += d * scale * ((const double *)la->q)[j];
        }
    }
    if (e->dscores) {
        if (e->fp32) ((float *)e->dscores)[0] += (float)d;
        else ((double *)e->dscores)[0] += d;
    }
}

// Backward pass from a->dlogits into the (zeroed) gradients. Each layer
// backward accumulates, so dx, the gradient of the residual stream, collects
// both the skip path and the branch through the rmsnorm.
static void backward(CpuEngine *e, const int *tokens, const int *n, int B, int T) {
    const ModelShape *m = &e->m;
    const int C = m->n_embd, NH = m->n_head, NKV = m->n_kv_head, HS = m->head_dim;
    const int KV = NKV * HS, V = m->vocab_size, N = B * T;
    const ParamPtrs *p = &e->params, *g = &e->grads;
    Acts *a = &e->acts;
    const size_t NC = (size_t)N * C, NKVs = (size_t)N * KV, N4C = (size_t)N * 4 * C;

    void *x_last = m->n_layer ? a->layer[m->n_layer - 1].res3 : a->x0;
    rec_grad(e, ACT_LOGITS, -1, a->dlogits);
    zero(e, a->dx, NC);
    mm_backward(e, a->dx, g->lm_head, a->dlogits, x_last, p->lm_head, N, C, V);
    fault_bwd(e, ACT_LOGITS, -1, a->dx, NC);
    for (int l = m->n_layer - 1; l >= 0; l--) {
        LayerActs *la = &a->layer[l];
        void *x_in = l ? a->layer[l - 1].res3 : a->x0;
        // MLP: res3 = fc2(relu(fc1(rmsnorm(res2)))) + res2
        rec_grad(e, ACT_RES2, l, a->dx);
        rec_grad(e, ACT_FC2, l, a->dx);
        zero(e, a->dfch_relu, N4C);
        mm_backward(e, a->dfch_relu, g->fc2[l], a->dx, la->fch_relu, p->fc2[l], N, 4 * C, C);
        fault_bwd(e, ACT_FC2, l, a->dfch_relu, N4C);
        rec_grad(e, ACT_RELU, l, a->dfch_relu);
        zero(e, a->dfch, N4C);
        const unsigned char *open = layer_gates(e, l, N);
        if (open) LAYER(e, relu_backward_gated, a->dfch, a->dfch_relu, open, N4C);
        else LAYER(e, relu_backward, a->dfch, a->dfch_relu, la->fch, N4C);
        fault_bwd(e, ACT_RELU, l, a->dfch, N4C);
        rec_grad(e, ACT_FC1, l, a->dfch);
        zero(e, a->dln, NC);
        mm_backward(e, a->dln, g->fc1[l], a->dfch, la->ln2, p->fc1[l], N, C, 4 * C);
        fault_bwd(e, ACT_FC1, l, a->dln, NC);
        rec_grad(e, ACT_NORM2, l, a->dln);
        // the residual's gradient res2 -> res1 passes as it is (fault_bwd of res2: on it)
        fault_bwd(e, ACT_RES2, l, a->dx, NC);
        LAYER(e, rmsnorm_backward, a->dx, a->dln, la->res2, la->ln2_rstd, N, C);
        fault_bwd(e, ACT_NORM2, l, a->dx, NC);
        rec_grad(e, ACT_RES1, l, a->dx);
        rec_grad(e, ACT_ATTN_PROJ, l, a->dx);
        // attention: res2 = wo(attention(wq, wk, wv of rmsnorm(x_in))) + x_in
        zero(e, a->datty, NC);
        mm_backward(e, a->datty, g->wo[l], a->dx, la->atty, p->wo[l], N, C, C);
        fault_bwd(e, ACT_ATTN_PROJ, l, a->datty, NC);
        rec_grad(e, ACT_ATTN, l, a->datty);
        if (e->dact) {   // the softmax's and the scores' gradients, for the report
            LAYER(e, attention_backward_probe, e->dscores, e->dsoftmax, a->datty, la->att, la->v, n, B, T, NH, NKV,
                  HS);
        }
        zero(e, a->dq, NC);
        zero(e, a->dk, NKVs);
        zero(e, a->dv, NKVs);
        LAYER(e, attention_backward, a->dq, a->dk, a->dv, a->datty, la->att, la->q, la->k, la->v, n,
              B, T, NH, NKV, HS);
        attention_backward_faults(e, l, B, T);
        if (e->dact) {
            rec_grad(e, ACT_SOFTMAX, l, e->dsoftmax);
            rec_grad(e, ACT_SCORES, l, e->dscores);
        }
        rec_grad(e, ACT_Q, l, a->dq);
        rec_grad(e, ACT_K, l, a->dk);
        rec_grad(e, ACT_V, l, a->dv);
        zero(e, a->dln, NC);
        mm_backward(e, a->dln, g->wq[l], a->dq, la->ln1, p->wq[l], N, C, C);
        fault_bwd(e, ACT_Q, l, a->dln, NC);
        mm_backward(e, a->dln, g->wk[l], a->dk, la->ln1, p->wk[l], N, C, KV);
        fault_bwd(e, ACT_K, l, a->dln, NC);
        mm_backward(e, a->dln, g->wv[l], a->dv, la->ln1, p->wv[l], N, C, KV);
        fault_bwd(e, ACT_V, l, a->dln, NC);
        rec_grad(e, ACT_NORM1, l, a->dln);
        fault_bwd(e, ACT_RES1, l, a->dx, NC);
        LAYER(e, rmsnorm_backward, a->dx, a->dln, x_in, la->ln1_rstd, N, C);
        fault_bwd(e, ACT_NORM1, l, a->dx, NC);
    }
    // x0 = rmsnorm(wte[tok] + wpe[t])
    rec_grad(e, ACT_EMBED_NORM, -1, a->dx);
    zero(e, a->dln, NC);
    LAYER(e, rmsnorm_backward, a->dln, a->dx, a->encoded, a->rstd0, N, C);
    fault_bwd(e, ACT_EMBED_NORM, -1, a->dln, NC);
    rec_grad(e, ACT_EMBED, -1, a->dln);
    LAYER(e, encoder_backward, g->wte, g->wpe, a->dln, tokens, n, B, T, C);
    if (fault_at(e, FAULT_OP_BWD, ACT_EMBED, -1))   // its "input" is the parameters: wte's gradient
        bump(e, g->wte, (size_t)m->vocab_size * C);
}


// ---------------------------------------------------------------------------
// EngineOps

static double cpu_step_end(CpuEngine *e, const Batch *b, double loss);

// fp16: divide the gradients by the step's loss scale (exact); 1 if one of
// them is inf or NaN (the scaled backward overflowed fp16).
static int unscale_grads(CpuEngine *e) {
    float *g = e->grads_mem;
    const float inv = (float)(1.0 / e->mx.used_scale);
    int bad = 0;
    for (size_t i = 0; i < e->P; i++) {
        g[i] *= inv;
        bad |= !isfinite(g[i]);
    }
    return bad;
}

static int cpu_step_phases(Engine *base, EnginePhase *out) {
    const CpuEngine *e = (const CpuEngine *)base;
    static const char *name[4] = {"forward", "loss", "backward", "adam"};
    for (int k = 0; k < 4; k++) out[k] = (EnginePhase){name[k], e->phase[k]};
    return 4;
}

static int cpu_step_skipped(Engine *base, double *scale) {
    CpuEngine *e = (CpuEngine *)base;
    if (scale) *scale = e->mx.used_scale;
    return e->mx.skipped;
}

static double cpu_step(Engine *base, const Batch *b, int step) {
    CpuEngine *e = (CpuEngine *)base;
    const Settings *s = e->base.cfg.s;
    const int B = b->B, T = b->T, V = e->m.vocab_size;
    Acts *a = &e->acts;
    batch_check(b, e->base.cfg.max_batch, e->m.block_size, e->m.vocab_size);
    e->cur_B = B, e->cur_T = T;
    layers_enter(e);

    double t[5];
    t[0] = now_seconds();
    forward(e, b->tokens, b->n, B, T);
    t[1] = now_seconds();
    double loss = LAYER(e, crossentropy_forward_backward, a->dlogits, a->losses, a->logits,
                        b->tokens, b->n, B, T, V, e->base.cfg.s->token_mean);
    // FAULT_OP_BWD at act_count (one past the table): the cross-entropy's gradient
    if (e->base.cfg.fault == FAULT_OP_BWD && e->base.cfg.fault_op == e->n_ops_total) bump(e, a->dlogits, (size_t)B * T * V);
    t[2] = now_seconds();
    const int scaled = e->base.cfg.precision == PREC_FP16;
    if (scaled) {   // fp16: backward from loss * scale (exact: the scale is a power of 2)
        e->mx.used_scale = e->mx.scale;
        for (int d = 0; d < B; d++) {   // the real positions: padding carries no gradient
            float *dl = (float *)a->dlogits + (size_t)d * T * V;
            for (size_t i = 0; i < (size_t)b->n[d] * V; i++) dl[i] *= (float)e->mx.scale;
        }
    }
    zero(e, e->grads_mem, e->P);
    backward(e, b->tokens, b->n, B, T);
    t[3] = now_seconds();
    for (int k = 0; k < 3; k++) e->phase[k] = t[k + 1] - t[k];
    e->phase[3] = 0;
    if (scaled && unscale_grads(e)) {
        // as GradScaler: an inf or NaN gradient skips the update and halves the scale
        e->mx.skipped = 1;
        e->mx.scale *= 0.5;
        e->mx.good_steps = 0;
        return cpu_step_end(e, b, loss);
    }
    if (e->base.cfg.fault == FAULT_GRAD_SIGN) {   // test-only
        if (e->fp32) ((float *)e->grads_mem)[e->lm_flip] *= -1.0f;
        else ((double *)e->grads_mem)[e->lm_flip] *= -1.0;
    }
    if (e->base.cfg.fault == FAULT_SMALL_GRADS)   // test-only: below the fixed fp32 atol
        for (size_t i = 0; i < e->P; i++) {
            if (e->fp32 && fabsf(((float *)e->grads_mem)[i]) < 1e-6f) ((float *)e->grads_mem)[i] = 0.0f;
            if (!e->fp32 && fabs(((double *)e->grads_mem)[i]) < 1e-6) ((double *)e->grads_mem)[i] = 0.0;
        }
    LAYER(e, adam_update, e->params_mem, e->grads_mem, e->m_mem, e->v_mem, e->P,
          lr_at(s->lr, step, s->steps), s->beta1, s->beta2, s->eps, step);
    e->phase[3] = now_seconds() - t[3];
    if (scaled) {
        e->mx.skipped = 0;
        if (++e->mx.good_steps == SCALE_GROWTH_INTERVAL) e->mx.scale *= 2.0, e->mx.good_steps = 0;
    }
    return cpu_step_end(e, b, loss);
}

// After a step (done or skipped): keep what the comparator reads back.
static double cpu_step_end(CpuEngine *e, const Batch *b, double loss) {
    const int B = b->B, T = b->T, V = e->m.vocab_size;
    Acts *a = &e->acts;

    // keep the logits (the sampler reuses the activations), NaN at padding
    const size_t row = (size_t)T * (size_t)V;
    to_double(e, e->logits_out, a->logits, (size_t)B * row);
    for (int d = 0; d < B; d++)
        for (size_t i = (size_t)b->n[d] * (size_t)V; i < row; i++) e->logits_out[(size_t)d * row + i] = NAN;
    // and the ReLU inputs, for the comparator
    const size_t H = 4 * (size_t)e->m.n_embd, lrow = (size_t)T * H;
    for (int l = 0; l < e->m.n_layer; l++) {
        double *dst = e->relu_out + (size_t)l * (size_t)B * lrow;
        to_double(e, dst, a->layer[l].fch, (size_t)B * lrow);
        for (int d = 0; d < B; d++)
            for (size_t i = (size_t)b->n[d] * H; i < lrow; i++) dst[(size_t)d * lrow + i] = NAN;
    }
    e->last_B = B;
    e->last_T = T;
    layers_leave(e);
    return loss;
}

// The buffer that holds op's output after a step.
static const void *fwd_buf(const CpuEngine *e, const ActOp *op) {
    const Acts *a = &e->acts;
    const LayerActs *la = op->layer >= 0 ? &a->layer[op->layer] : NULL;
    switch (op->kind) {
    case ACT_EMBED: return a->encoded;
    case ACT_EMBED_NORM: return a->x0;
    case ACT_NORM1: return la->ln1;
    case ACT_Q: return la->q;
    case ACT_K: return la->k;
    case ACT_V: return la->v;
    case ACT_SCORES: return e->scores[op->layer];
    case ACT_SOFTMAX: return la->att;
    case ACT_ATTN: return la->atty;
    case ACT_ATTN_PROJ: return la->attproj;
    case ACT_RES1: return la->res2;
    case ACT_NORM2: return la->ln2;
    case ACT_FC1: return la->fch;
    case ACT_RELU: return la->fch_relu;
    case ACT_FC2: return la->fcproj;
    case ACT_RES2: return la->res3;
    default: return a->logits;
    }
}

static int cpu_get_activation(Engine *base, int i, int grad, double *out) {
    CpuEngine *e = (CpuEngine *)base;
    if (!e->dact || i < 0 || i >= e->n_ops) return -1;
    ActOp op;
    act_op(&e->m, i, &op);
    const size_t count = act_size(&op, e->cur_B, e->cur_T);
    to_double(e, out, grad ? e->dact[i] : fwd_buf(e, &op), count);
    // fp16: the backward ran on loss * scale (a power of 2: exact to undo)
    if (grad && e->base.cfg.precision == PREC_FP16)
        for (size_t j = 0; j < count; j++) out[j] /= e->mx.used_scale;
    return 0;
}

static void cpu_logits(Engine *base, double *out) {
    CpuEngine *e = (CpuEngine *)base;
    memcpy(out, e->logits_out,
           (size_t)e->last_B * (size_t)e->last_T * (size_t)e->m.vocab_size * sizeof *out);
}

static void cpu_relu_inputs(Engine *base, double *out) {
    CpuEngine *e = (CpuEngine *)base;
    memcpy(out, e->relu_out, (size_t)e->m.n_layer * (size_t)e->last_B * (size_t)e->last_T * 4 *
                                 (size_t)e->m.n_embd * sizeof *out);
}

static void cpu_grads(Engine *base, double *out) {
    CpuEngine *e = (CpuEngine *)base;
    to_double(e, out, e->grads_mem, e->P);
}

static void cpu_params(Engine *base, double *out) {
    CpuEngine *e = (CpuEngine *)base;
    to_double(e, out, e->params_mem, e->P);
}

static void cpu_moments(Engine *base, double *m, double *v) {
    CpuEngine *e = (CpuEngine *)base;
    to_double(e, m, e->m_mem, e->P);
    to_double(e, v, e->v_mem, e->P);
}

static void cpu_set_state(Engine *base, const double *params, const double *m, const double *v) {
    CpuEngine *e = (CpuEngine *)base;
    from_double(e, e->params_mem, params, e->P);
    if (m) from_double(e, e->m_mem, m, e->P);
    if (v) from_double(e, e->v_mem, v, e->P);
}

// As the original: start at BOS, each token from softmax(logits / temperature)
// at the last position, stop at BOS or after block_size tokens. A full forward
// over the growing prefix per token (no key/value cache). The softmax is done
// in double the way scalar_sample does it, so fp64 draws the same tokens.
static int cpu_sample(Engine *base, PyRandom *r, double temperature, int *out) {
    CpuEngine *e = (CpuEngine *)base;
    const int V = e->m.vocab_size, bos = V - 1;
    int *tok = e->sample_tokens;                   // (1, T+1) with T = pos+1
    double *w = e->sample_probs;                   // (V)
    layers_enter(e);
    tok[0] = bos;
    int len = 0;
    for (int pos = 0; pos < e->m.block_size; pos++) {
        int n = pos + 1;
        tok[n] = bos;                              // target slot: not read by the forward
        forward(e, tok, &n, 1, n);
        to_double(e, w, at(e, e->acts.logits, (size_t)pos * (size_t)V), (size_t)V);
        int token = engine_sample_token(r, w, V, temperature);
        if (token == bos) break;
        out[len++] = token;
        tok[pos + 1] = token;
    }
    layers_leave(e);
    return len;
}

static void cpu_destroy(Engine *base) {
    CpuEngine *e = (CpuEngine *)base;
    if (!e) return;
    params_unpoint(&e->params);
    params_unpoint(&e->grads);
    free(e->params_mem);
    free(e->grads_mem);
    free(e->m_mem);
    free(e->v_mem);
    free(e->acts.layer);
    free(e->acts_mem);
    free(e->logits_out);
    free(e->relu_out);
    free(e->sample_tokens);
    free(e->sample_probs);
    free(e->gates);
    for (int i = 0; e->dact && i < e->n_ops; i++) free(e->dact[i]);
    free(e->dact);
    for (int l = 0; e->scores && l < e->m.n_layer; l++) free(e->scores[l]);
    free(e->scores);
    free(e->dsoftmax);
    free(e->dscores);
    if (e->mixed) mixed_mm_free(&e->mx.mm);
    free(e);
}

static const EngineOps CPU_OPS = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .step = cpu_step,
    .get_logits = cpu_logits,
    .get_grads = cpu_grads,
    .get_params = cpu_params,
    .get_moments = cpu_moments,
    .set_state = cpu_set_state,
    .sample = cpu_sample,
    .get_relu_inputs = cpu_relu_inputs,
    .step_skipped = cpu_step_skipped,
    .step_phases = cpu_step_phases,
    .get_activation = cpu_get_activation,
};

// ---------------------------------------------------------------------------
// creation

static Engine *fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static Engine *fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

float (*cpu_lowp_round_test)(float) = NULL;

// Test-only (FAULT_LOWP_TRUNCATE): the dropped bits cut off instead of
// rounded (fp16: the mantissa cut to 10 bits, then fp16's range applied).
static float trunc_bf16(float x) { return lowp_float(lowp_bits(x) & 0xffff0000u); }
static float trunc_tf32(float x) { return lowp_float(lowp_bits(x) & 0xffffe000u); }
static float trunc_fp16(float x) { return round_fp16(trunc_tf32(x)); }

// The recipe's products (sized for the largest: rows N = max_batch*T, widths
// C, 4C and V) and fp16's loss scale.
static void mixed_init(CpuEngine *e, const EngineConfig *cfg) {
    const ModelShape *m = &e->m;
    const size_t N = (size_t)cfg->max_batch * (size_t)m->block_size, C = (size_t)m->n_embd;
    const size_t V = (size_t)m->vocab_size, wide = 4 * C > V ? 4 * C : V;
    float (*round)(float) = cpu_lowp_round_test;
    if (!round && cfg->fault == FAULT_LOWP_TRUNCATE)
        round = cfg->precision == PREC_BF16 ? trunc_bf16 : cfg->precision == PREC_FP16 ? trunc_fp16 : trunc_tf32;
    mixed_mm_init(&e->mx.mm, cfg->precision, N, wide, wide * C, round);
    e->mx.scale = e->mx.used_scale = cfg->loss_scale > 0 ? cfg->loss_scale : SCALE_INIT;
}

Engine *cpu_engine_create(const EngineConfig *cfg, const double *init_params, char *err,
                          size_t errlen) {
    if (engine_config_check(cfg, init_params, "cpu", err, errlen)) return NULL;
    const ModelShape *m = &cfg->L->shape;
    // a rough element count, in double so that it cannot wrap
    const double pos = (double)cfg->max_batch * m->block_size;
    const double need = pos * ((m->n_layer + 1.0) * (40.0 * m->n_embd + (double)m->n_head * m->block_size + 4) +
                               2.0 * m->vocab_size);
    if (need > 1e12)
        return fail(err, errlen, "cpu engine: activations for max_batch %d would need about %.3g "
                    "elements", cfg->max_batch, need);

    CpuEngine *e = xcalloc(1, sizeof *e);
    e->base.ops = &CPU_OPS;
    e->base.cfg = *cfg;
    e->m = *m;
    e->fp32 = cfg->precision != PREC_FP64;
    e->mixed = precision_is_mixed(cfg->precision);
    e->es = e->fp32 ? sizeof(float) : sizeof(double);
    e->P = cfg->L->n_params;

    e->params_mem = xmalloc(e->P * e->es);
    e->grads_mem = xcalloc(e->P, e->es);
    e->m_mem = xcalloc(e->P, e->es);
    e->v_mem = xcalloc(e->P, e->es);
    params_point(e, &e->params, e->params_mem, cfg->L);
    params_point(e, &e->grads, e->grads_mem, cfg->L);
    from_double(e, e->params_mem, init_params, e->P);

    e->acts.layer = xcalloc((size_t)m->n_layer, sizeof *e->acts.layer);
    size_t n_acts = acts_point(&e->acts, NULL, e->es, m, cfg->max_batch);
    e->acts_mem = xcalloc(n_acts, e->es);
    acts_point(&e->acts, e->acts_mem, e->es, m, cfg->max_batch);

    // FAULT_GRAD_SIGN flips lm_head[1,2] (its last element if lm_head is smaller)
    const ParamTensor *lm = layout_tensor(cfg->L, P_LM_HEAD, -1);
    e->lm_flip = lm->offset + (lm->rows > 1 && lm->cols > 2 ? (size_t)lm->cols + 2 : lm->size - 1);

    e->logits_out = xmalloc((size_t)cfg->max_batch * (size_t)m->block_size * (size_t)m->vocab_size *
                            sizeof *e->logits_out);
    e->relu_out = xmalloc((size_t)m->n_layer * (size_t)cfg->max_batch * (size_t)m->block_size * 4 *
                          (size_t)m->n_embd * sizeof *e->relu_out);
    e->sample_tokens = xmalloc((size_t)(m->block_size + 1) * sizeof *e->sample_tokens);
    e->sample_probs = xmalloc((size_t)m->vocab_size * sizeof *e->sample_probs);
    if (e->mixed) mixed_init(e, cfg);
    e->n_ops_total = act_count(m);
    if (cfg->activations) {   // every op's output and gradient kept for get_activation
        e->n_ops = e->n_ops_total;
        e->dact = xcalloc((size_t)e->n_ops, sizeof *e->dact);
        for (int i = 0; i < e->n_ops; i++) {
            ActOp op;
            act_op(m, i, &op);
            e->dact[i] = xcalloc(act_size(&op, cfg->max_batch, m->block_size), e->es);
        }
        const size_t att = (size_t)cfg->max_batch * m->n_head * m->block_size * m->block_size;
        e->scores = xcalloc((size_t)m->n_layer, sizeof *e->scores);
        for (int l = 0; l < m->n_layer; l++) e->scores[l] = xcalloc(att, e->es);
        e->dsoftmax = xcalloc(att, e->es);
        e->dscores = xcalloc(att, e->es);
    }
    return &e->base;
}

Engine *cpu_engine_create_order(const EngineConfig *cfg, const double *init_params, ReduceOrder order, char *err,
                                size_t errlen) {
    if ((int)order < 0 || order >= ORDER_NUM) {
        snprintf(err, errlen, "cpu engine: unknown order of sums %d", (int)order);
        return NULL;
    }
    Engine *base = cpu_engine_create(cfg, init_params, err, errlen);
    if (base) ((CpuEngine *)base)->order = order;
    return base;
}

ReduceOrder cpu_engine_order(const Engine *base) { return ((const CpuEngine *)base)->order; }

void cpu_engine_force_gates(Engine *base, const unsigned char *open, size_t n) {
    CpuEngine *e = (CpuEngine *)base;
    if (!open) {
        free(e->gates);
        e->gates = NULL;
        e->gates_n = 0;
        return;
    }
    if (e->gates_n != n) {
        free(e->gates);
        e->gates = xmalloc(n);
        e->gates_n = n;
    }
    memcpy(e->gates, open, n);
}

static const char *const ORDER_NAMES[ORDER_NUM] = {"seq", "rev", "pairwise", "acc4", "acc8", "fma"};

const char *reduce_order_name(ReduceOrder o) { return o >= 0 && o < ORDER_NUM ? ORDER_NAMES[o] : "?"; }

ReduceOrder reduce_order_from_name(const char *name) {
    for (int o = 0; o < ORDER_NUM; o++)
        if (!strcmp(name, ORDER_NAMES[o])) return (ReduceOrder)o;
    return ORDER_NUM;
}

double cpu_engine_bytes(const ModelShape *m, size_t n_params, int B, Precision p) {
    const double C = m->n_embd, KV = (double)m->n_kv_head * m->head_dim, V = m->vocab_size, L = m->n_layer;
    const double NH = m->n_head, T = m->block_size, P = (double)n_params;
    const double real = p == PREC_FP64 ? 8 : 4, rows = (double)B * T;
    const double wide = 4 * C > V ? 4 * C : V;   // mixed: the rounding scratch (mixed_init)
    const double mixed = precision_is_mixed(p) ? 4 * (3 * rows * wide + wide * C) : 0;
    return real * (4 * P + rows * (L * (24 * C + 4 * (C + 2 * KV) + 2 * NH * T) + 8 * C + 3 * V)) + 8 * 2 * P + mixed;
}
