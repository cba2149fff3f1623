// The tensor engine's layers: the contract that both backends implement, the
// plain-C reference in tensor_gpu/cpu/layers.c and the CUDA kernels in
// tensor_gpu/cuda/. Each layer has a forward and a hand-written backward.
//
// Dimensions (llm.c style):
//   B documents, T positions (the batch is padded to its longest document),
//   C = n_embd, NH query heads, NKV key/value heads, HS = C / NH head size,
//   KV = NKV * HS, V vocab size, N = B*T rows.
// Ragged batches: n[b] is the number of positions of document b; positions
//   t >= n[b] are padding. Forward passes write 0 at padded positions; nothing
//   computed at a padded position reaches a real one (attention is causal), and
//   the loss gives padded positions a zero gradient.
// tokens: (B, T+1) with row stride T+1 (common/model.h Batch): the input at
//   position t is tokens[b*(T+1)+t], its target tokens[b*(T+1)+t+1].
// Forward functions overwrite their outputs. Backward functions ACCUMULATE
//   (+=) into every gradient they write; the caller zeroes them first.
//
// The reference is written once and compiled twice, for real = double
// (suffix _f64) and real = float (suffix _f32).
#ifndef TENSOR_GPU_LAYERS_H
#define TENSOR_GPU_LAYERS_H

#include <stddef.h>

#define RMSNORM_EPS 1e-5

// The order in which the CPU reference takes its sums (cpu:ORDER engines).
// ORDER_SEQ, the reference order, is what the CUDA kernels are checked
// against; the others are legitimately different fp32 engines: the noise
// reference of compare's ratio rule and members of its calibration family
// (docs/compare.md). REV: every sum from its last term; PAIRWISE: halves
// summed recursively (blocks of 4); ACC4, ACC8: 4 or 8 interleaved partial
// sums combined as a tree; FMA: sequential with fused multiply-adds (and
// Adam's updates fused).
typedef enum { ORDER_SEQ, ORDER_REV, ORDER_PAIRWISE, ORDER_ACC4, ORDER_ACC8, ORDER_FMA, ORDER_NUM } ReduceOrder;
// "seq", "rev", "pairwise", "acc4", "acc8", "fma" ("?" otherwise)
const char *reduce_order_name(ReduceOrder o);
// ORDER_NUM if the name is none of those.
ReduceOrder reduce_order_from_name(const char *name);

#define TENSOR_LAYERS_DECLARE(real, sfx)                                                          \
    /* out[b,t,:] = wte[tokens[b,t]] + wpe[t]                               (B,T,C) */            \
    void encoder_forward_##sfx(real *out, const int *tokens, const int *n, const real *wte,      \
                               const real *wpe, int B, int T, int C);                            \
    void encoder_backward_##sfx(real *dwte, real *dwpe, const real *dout, const int *tokens,     \
                                const int *n, int B, int T, int C);                              \
    /* out = inp * rstd, rstd[i] = (mean_c inp[i,c]^2 + 1e-5)^-0.5           (N,C), (N) */        \
    void rmsnorm_forward_##sfx(real *out, real *rstd, const real *inp, int N, int C);             \
    void rmsnorm_backward_##sfx(real *dinp, const real *dout, const real *inp, const real *rstd,  \
                                int N, int C);                                                   \
    /* out = inp @ w^T, w row-major (OC,IC), no bias                        (N,OC) */            \
    void matmul_forward_##sfx(real *out, const real *inp, const real *w, int N, int IC, int OC);  \
    void matmul_backward_##sfx(real *dinp, real *dw, const real *dout, const real *inp,           \
                               const real *w, int N, int IC, int OC);                            \
    /* causal multi-head attention with grouped-query heads (query head h      */                \
    /* reads key/value head h / (NH/NKV)):                                     */                \
    /* att[b,h,t,s] = softmax_{s<=t}(q[b,t,h]·k[b,s,kvh] / sqrt(HS)), 0 for s>t */                \
    /* out[b,t,h*HS+j] = sum_s att[b,h,t,s] v[b,s,kvh*HS+j]                    */                \
    /* q (B,T,C), k and v (B,T,KV), att (B,NH,T,T), out (B,T,C)                */                \
    void attention_forward_##sfx(real *out, real *att, const real *q, const real *k,             \
                                 const real *v, const int *n, int B, int T, int NH, int NKV,     \
                                 int HS);                                                        \
    void attention_backward_##sfx(real *dq, real *dk, real *dv, const real *dout,                 \
                                  const real *att, const real *q, const real *k, const real *v,  \
                                  const int *n, int B, int T, int NH, int NKV, int HS);          \
    /* For reporting (common/activations.h): the scaled scores q.k/sqrt(HS) of   */              \
    /* the forward's first pass (0 where s > t and on padded rows), and the      */              \
    /* backward's intermediates: datt = dout.v (the softmax output's gradient)   */              \
    /* and dscores = att * (datt - sum_s att*datt) (its input's), (B,NH,T,T)     */              \
    void attention_scores_##sfx(real *scores, const real *q, const real *k, const int *n, int B,  \
                                int T, int NH, int NKV, int HS);                                 \
    /* the forward's other two passes: att = softmax(scores) row by row (in    */                 \
    /* place when att == scores), out = att @ v                                */                 \
    void attention_softmax_##sfx(real *att, const real *scores, const int *n, int B, int T,      \
                                 int NH);                                                        \
    void attention_wsum_##sfx(real *out, const real *att, const real *v, const int *n, int B,     \
                              int T, int NH, int NKV, int HS);                                   \
    void attention_backward_probe_##sfx(real *dscores, real *datt, const real *dout,             \
                                        const real *att, const real *v, const int *n, int B,     \
                                        int T, int NH, int NKV, int HS);                         \
    /* out = max(0, inp) elementwise; backward: dinp += dout * (inp > 0)         */              \
    void relu_forward_##sfx(real *out, const real *inp, size_t count);                           \
    void relu_backward_##sfx(real *dinp, const real *dout, const real *inp, size_t count);       \
    /* the same with the gates given: open[i] decides, not inp[i] > 0 (compare's  */             \
    /* fp64 model with another engine's gate pattern: docs/compare.md)           */             \
    void relu_forward_gated_##sfx(real *out, const real *inp, const unsigned char *open,         \
                                  size_t count);                                                 \
    void relu_backward_gated_##sfx(real *dinp, const real *dout, const unsigned char *open,      \
                                   size_t count);                                                \
    /* out = a + b elementwise (the residual connections)                       */               \
    void residual_forward_##sfx(real *out, const real *a, const real *b, size_t count);          \
    /* Softmax cross-entropy, fused forward and backward:                       */               \
    /* losses[b,t] = -log softmax(logits[b,t])[target]; returns the loss         */              \
    /* mean_b(mean_{t<n[b]} losses[b,t]) (doc-mean) or, with token_mean, the   */               \
    /* mean over all sum(n) positions; dlogits = (probs - onehot) * w[b],        */              \
    /* w[b] = 1/(n[b]*B) or 1/sum(n); 0 (and losses 0) at padded positions.      */              \
    /* logits, dlogits (B,T,V)                                                   */              \
    double crossentropy_forward_backward_##sfx(real *dlogits, real *losses, const real *logits,   \
                                               const int *tokens, const int *n, int B, int T,    \
                                               int V, int token_mean);                           \
    /* Adam as the original: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;         */              \
    /* p -= lr_t * (m / c1) / (sqrt(v / c2) + eps), c1 = 1 - b1^(step+1), c2 likewise */         \
    void adam_update_##sfx(real *p, const real *g, real *m, real *v, size_t count, double lr_t,   \
                           double beta1, double beta2, double eps, int step);

TENSOR_LAYERS_DECLARE(double, f64)
TENSOR_LAYERS_DECLARE(float, f32)

#endif
