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
    /* out = max(0, inp) elementwise; backward: dinp += dout * (inp > 0)         */              \
    void relu_forward_##sfx(real *out, const real *inp, size_t count);                           \
    void relu_backward_##sfx(real *dinp, const real *dout, const real *inp, size_t count);       \
    /* out = a + b elementwise (the residual connections)                       */               \
    void residual_forward_##sfx(real *out, const real *a, const real *b, size_t count);          \
    /* Softmax cross-entropy, fused forward and backward:                       */               \
    /* losses[b,t] = -log softmax(logits[b,t])[target]; returns the loss         */              \
    /* mean_b(mean_{t<n[b]} losses[b,t]); dlogits = (probs - onehot)/(n[b]*B),   */              \
    /* 0 (and losses 0) at padded positions. logits, dlogits (B,T,V)             */              \
    double crossentropy_forward_backward_##sfx(real *dlogits, real *losses, const real *logits,   \
                                               const int *tokens, const int *n, int B, int T,    \
                                               int V);                                           \
    /* Adam as the original: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;         */              \
    /* p -= lr_t * (m / c1) / (sqrt(v / c2) + eps), c1 = 1 - b1^(step+1), c2 likewise */         \
    void adam_update_##sfx(real *p, const real *g, real *m, real *v, size_t count, double lr_t,   \
                           double beta1, double beta2, double eps, int step);

TENSOR_LAYERS_DECLARE(double, f64)
TENSOR_LAYERS_DECLARE(float, f32)

#endif
