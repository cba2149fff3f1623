// The CUDA backend's layers: the kernels of tensor_gpu/layers.h (the
// contract; tensor_gpu/cpu/layers.c is the reference each one is tested
// against in tests/test_gpu.cu), the fused forms the engine uses, and the matrix
// products through cuBLAS. Every launcher enqueues on `st` (cuBLAS: on the
// handle's stream) and returns without synchronizing; every launch is checked
// (cuda_check.cuh). Instantiated for real = double and real = float.
//
// Shapes as in layers.h: B documents, T positions, C channels, NH query heads,
// NKV key/value heads, HS head size, KV = NKV*HS, V vocab, N = B*T rows;
// positions t >= n[b] are padding (n is a device array of B ints, tokens a
// device array (B, T+1)). Row strides (ld*) are in elements, so that q, k and v
// can live side by side in one (N, C+2*KV) buffer.
//
// Backward launchers take `acc`: true adds into the gradients (+=, the
// contract), false overwrites them (= as if they had been zeroed first, so the
// engine needs no memset). Every element of every gradient is written either
// way, padded rows included (with 0 when acc is false).
//
// Determinism: no floating-point atomics anywhere. Every sum is taken by one
// thread in a fixed order or by a warp's fixed butterfly, so the same inputs
// give the same bits on every run.
#ifndef TENSOR_GPU_CUDA_KERNELS_CUH
#define TENSOR_GPU_CUDA_KERNELS_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace mgpt {

// ---- embedding --------------------------------------------------------------
// out[b,t,:] = wte[tokens[b,t]] + wpe[t]; 0 at padding.                  (B,T,C)
template <typename real>
void encoder_forward(cudaStream_t st, real *out, const int *tokens, const int *n, const real *wte,
                     const real *wpe, int B, int T, int C);
// Fused: enc = encoder(...); x0 = rmsnorm(enc) (rstd0); and, when ln is not
// NULL, ln = rmsnorm(x0) (ln_rstd) - the first layer's input norm. One warp per row.
template <typename real>
void encoder_rmsnorm_forward(cudaStream_t st, real *enc, real *x0, real *rstd0, real *ln, real *ln_rstd,
                             const int *tokens, const int *n, const real *wte, const real *wpe, int B,
                             int T, int C);
// dwte (V,C) and dwpe (Tw,C) with Tw >= T rows (the wpe table has block_size
// rows; rows t >= T get nothing). Deterministic gather, one launch: a block
// per (token or position, 32 channels); its 8 warps each sum a fixed range
// of positions (of documents for dwpe) in order, then the 8 partial sums are
// added in warp order. No atomics; the order differs from the reference's.
template <typename real>
void encoder_backward(cudaStream_t st, real *dwte, real *dwpe, const real *dout, const int *tokens,
                      const int *n, int B, int T, int C, int V, int Tw, bool acc);

// ---- rmsnorm (no weight) ------------------------------------------------------
// out = inp * rstd, rstd[i] = (mean_c inp[i,c]^2 + 1e-5)^-0.5.           (N,C), (N)
template <typename real>
void rmsnorm_forward(cudaStream_t st, real *out, real *rstd, const real *inp, int N, int C);
// Fused residual + rmsnorm: res = a + b; out = rmsnorm(res).
template <typename real>
void residual_rmsnorm_forward(cudaStream_t st, real *res, real *out, real *rstd, const real *a,
                              const real *b, int N, int C);
template <typename real>
void rmsnorm_backward(cudaStream_t st, real *dinp, const real *dout, const real *inp, const real *rstd,
                      int N, int C, bool acc);

// ---- elementwise --------------------------------------------------------------
template <typename real> void residual_forward(cudaStream_t st, real *out, const real *a, const real *b, size_t count);
template <typename real> void relu_forward(cudaStream_t st, real *out, const real *inp, size_t count);
// dinp (+)= dout * (inp > 0)
template <typename real>
void relu_backward(cudaStream_t st, real *dinp, const real *dout, const real *inp, size_t count, bool acc);

// ---- matrix products (cuBLAS; fp64 Dgemm, fp32 Sgemm without TF32) -------------
// out (N,OC) row stride ldo = inp (N,IC) @ w^T, w row-major (OC,IC)
template <typename real>
void matmul_forward(cublasHandle_t h, real *out, int ldo, const real *inp, const real *w, int N, int IC, int OC);
// dinp (N,IC) (+)= dout @ w; dw (OC,IC) (+)= dout^T @ inp; dout (N,OC) row
// stride ldd. dinp or dw may be NULL (skipped).
//
// dw is a product with k = N (all B*T rows) and a small output, which cuBLAS
// runs on as many blocks as dw has tiles (1..16 for this model), each looping
// over all N rows. So dw is split over the rows (split-K): the N rows in S
// chunks of K rows (the last one shorter when S does not divide N), the S
// partial products (S,OC,IC) by one strided-batched product (plus one for the
// short chunk) into the scratch, then one kernel adds the S partials in chunk
// order into dw. Deterministic (no atomics, a fixed order); the rounding
// differs from one product's. S = 1 (one plain product) where dw already
// fills the GPU, the rows are few, or the scratch is too small.
template <typename real> struct DwScratch {
    real *p;       // device scratch of `count` reals (NULL, 0: never split)
    size_t count;
    int sms;       // the GPU's multiprocessor count, which S is chosen for
};
struct DwSplit {
    int S, K;      // S partial products of K rows, the last of N - (S-1)K rows
};
// The split of dw for N rows: about two waves of blocks (dw's 128x128 tiles
// times S), chunks of at least DW_MIN_ROWS rows.
constexpr int DW_MIN_ROWS = 128;
DwSplit dw_split(int N, int IC, int OC, int sms, int real_bytes = 4);   // real_bytes 8: fp64
// The scratch reals the split of this product needs (0 when it is not split).
size_t dw_scratch_count(int N, int IC, int OC, int sms);
template <typename real>
void matmul_backward(cublasHandle_t h, real *dinp, bool acc_dinp, real *dw, bool acc_dw, const real *dout,
                     int ldd, const real *inp, const real *w, int N, int IC, int OC, const DwScratch<real> &ws);

// ---- causal grouped-query attention (attention.cu) ------------------------------
// q (B,T,·) row stride ldq, head h at channels [h*HS, (h+1)*HS); k, v row
// stride ldkv, kv head h/(NH/NKV); out (B,T,C) with C = NH*HS; att
// (B,NH,T,T) the softmax weights (0 above the diagonal and on padded rows).
//
// Two implementations (`path`; the engine leaves it at Auto):
//   Tiled: one thread block per (document, head) with the head's rows of the
//     document in shared memory and the T x T products in register tiles;
//   Rows: one warp per query (or key) row reading global memory, for the
//     shapes whose shared memory would not fit.
// Auto takes Tiled where it fits the device's shared memory per block
// (attention_forward_path / attention_backward_path say which); Tiled on a
// shape that does not fit throws. Both are deterministic and agree with the
// reference to rounding (attention.cu says which shapes fit).
enum class AttnPath { Auto, Tiled, Rows };
// The path Auto takes for T positions and head size HS on the current device.
template <typename real> AttnPath attention_forward_path(int T, int HS);
template <typename real> AttnPath attention_backward_path(int T, int HS);
const char *attn_path_name(AttnPath p);   // "auto", "tiled", "rows"

// scores_out (optional, (B,NH,T,T)): the scaled scores q.k/sqrt(HS) before
// the softmax, 0 above the diagonal and on padding (the engine reports them:
// common/activations.h).
template <typename real>
void attention_forward(cudaStream_t st, real *out, real *att, const real *q, int ldq, const real *k,
                       const real *v, int ldkv, const int *n, int B, int T, int NH, int NKV, int HS,
                       AttnPath path = AttnPath::Auto, real *scores_out = nullptr);
// dq (row stride lddq), dk and dv (row stride lddkv) (+)= the gradients;
// dpre (B,NH,T,T) is scratch (the softmax backward per query row, rows t <
// n[b], keys s <= t). Two kernels: per query head dq and dpre, then per kv
// head dk and dv, summing its query heads in a fixed order (no atomics,
// deterministic with grouped heads).
// datt_out (optional, (B,NH,T,T)): the softmax output's gradient dout.v, 0
// above the diagonal and on padding (reported as above; dpre / scale is the
// scores' gradient).
template <typename real>
void attention_backward(cudaStream_t st, real *dq, int lddq, real *dk, real *dv, int lddkv, real *dpre,
                        const real *dout, const real *att, const real *q, int ldq, const real *k,
                        const real *v, int ldkv, const int *n, int B, int T, int NH, int NKV, int HS,
                        bool acc, AttnPath path = AttnPath::Auto, real *datt_out = nullptr);

// ---- softmax cross-entropy, fused forward + backward ---------------------------
// losses[b,t] = -log softmax(logits[b,t])[target]; dlogits = (probs -
// onehot) w, w = 1/(n[b]*B) (doc-mean) or, with token_mean, 1/sum(n) (n read
// on the device); 0 at padding. One warp per row. The mean loss is taken on
// the host from the losses (crossentropy_mean), in the CPU reference's order.
template <typename real>
void crossentropy_forward_backward(cudaStream_t st, real *dlogits, real *losses, const real *logits,
                                   const int *tokens, const int *n, int B, int T, int V, bool token_mean);
// From host copies of losses (B,T) and n (B): mean_b(mean_{t<n[b]} losses[b,t])
// (doc-mean), or with token_mean the sum of every real position's loss / sum(n).
template <typename real> double crossentropy_mean(const real *losses, const int *n, int B, int T, bool token_mean);

// ---- Adam -----------------------------------------------------------------------
// The per-step scalars, computed in double on the host and read by the kernel
// from device memory (so that a captured CUDA graph serves every step).
struct AdamScalars {
    double lr;   // lr_t of this step
    double c1;   // 1 - beta1^(step+1)
    double c2;   // 1 - beta2^(step+1)
};
AdamScalars adam_scalars(double lr_t, double beta1, double beta2, int step);
// p -= lr_t * (m/c1) / (sqrt(v/c2) + eps) after the moment updates; sc is a
// device pointer.
template <typename real>
void adam_update(cudaStream_t st, real *p, const real *g, real *m, real *v, size_t count,
                 const AdamScalars *sc, double beta1, double beta2, double eps);

// Test-only (compare --inject-fault op-fwd:OP, op-bwd:OP): element 0 of a
// (rows, width) array of row stride ld plus frac times its largest |value|.
template <typename real> void fault_bump(cudaStream_t st, real *buf, int ld, int rows, int width, double frac);

}  // namespace mgpt

#endif
