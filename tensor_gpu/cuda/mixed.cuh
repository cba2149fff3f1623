// The mixed-precision recipe's matrix products on CUDA (docs/mixed_precision.md):
// the GPU form of tensor_gpu/mixed.h (the CPU reference each one is tested
// against in tests/test_gpu.cu), for the layered path of the engine, fp32 buffers.
//
//   bf16: both operands rounded to bf16 (round-to-nearest-even with
//         tensor_gpu/lowp.h) into __nv_bfloat16 scratch, cublasGemmEx with
//         CUDA_R_16BF A and B, CUBLAS_COMPUTE_32F (tensor cores, fp32
//         accumulation) into an fp32 C; the activation outputs and each
//         input gradient then rounded to bf16 by a kernel with lowp.h (an
//         fp32 C and our own rounding: no trust in cuBLAS's conversion).
//   fp16: as bf16 with __half and CUDA_R_16F (and fp16's range: lowp.h's
//         round_fp16 overflows to inf and rounds subnormals).
//   tf32: both operands rounded to tf32 (lowp.h) into fp32 scratch, then
//         CUBLAS_COMPUTE_32F_FAST_TF32: on pre-rounded operands the tensor
//         cores' own conversion is exact, whatever it rounds with; outputs fp32.
// Input gradients: the product into fp32 scratch (beta 0), rounded on its
// own, then added in fp32 (never beta = 1 into a rounded C). Weight
// gradients: fp32 C, beta 0 or 1 (the fp32 master gradient); one product,
// not split over the rows (the fp32 path's split-K is not used here).
// The handle must allow tensor cores (the engine's is pedantic: it keeps a
// second handle in CUBLAS_DEFAULT_MATH for these) and have atomics off.
#ifndef TENSOR_GPU_CUDA_MIXED_CUH
#define TENSOR_GPU_CUDA_MIXED_CUH

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace mgpt {

enum class Lowp { BF16, FP16, TF32 };

// Scratch for products of at most `cap` elements of an activation operand
// (rows x width) and `wcap` weight elements.
struct MixedMM {
    Lowp lp;
    cublasHandle_t h;   // tensor-core math allowed, atomics off, on the engine's stream
    void *a, *d, *w;    // rounded input, output gradient, weight: bf16 or (tf32) float
    float *t;           // (cap) fp32 product before its rounding
    size_t cap, wcap;
};

// The value of a 16-bit L element (bf16: the float's upper half; fp16), on
// the host: exact.
inline float lowp16_value(Lowp lp, uint16_t bits) {
    if (lp == Lowp::FP16) {
        __half_raw hr;
        hr.x = bits;
        return __half2float(__half(hr));
    }
    const uint32_t u = (uint32_t)bits << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// Bytes of element of a rounded operand.
size_t lowp_elem_bytes(Lowp lp);
// The rounded operand i elements past base.
inline void *lowp_at(Lowp lp, void *base, size_t i) { return static_cast<char *>(base) + i * lowp_elem_bytes(lp); }
inline const void *lowp_at(Lowp lp, const void *base, size_t i) {
    return static_cast<const char *>(base) + i * lowp_elem_bytes(lp);
}

// dst (rows, cols) contiguous = src (rows, cols; row stride lds) rounded to
// lp's operand type (bf16: __nv_bfloat16; fp16: __half; tf32: float holding
// tf32 values).
void lowp_convert(cudaStream_t st, Lowp lp, void *dst, const float *src, int rows, int cols, int lds);

// The recipe's attention (fp32, implemented in attention.cu) on the L values
// of its inputs, with its outputs written straight in L: what
// attention_forward / attention_backward on q, k, v (and dout) rounded to L
// (bf16, fp16; tf32 rounds nothing), then lowp_convert, would write (the
// same bits). The inputs may hold unrounded fp32 (the products' outputs as
// they come): the tiled kernels round them as they load them, the rows path
// rounds them in place first. Forward: out_lp (B*T, C) contiguous; out
// (B*T, C) is scratch for the rows path. Backward, not accumulating:
// dqkv_lp (B*T, ld) contiguous, dq | dk | dv at columns 0, C, C + KV with
// ld = C + 2 KV; dqkv (the same shape, fp32) scratch for the rows path;
// q, k, v of row stride ldqkv, dout (B*T, C).
void attention_forward_lowp(cudaStream_t st, Lowp lp, void *out_lp, float *out, float *att, float *q, int ldq,
                            float *k, float *v, int ldkv, const int *n, int B, int T, int NH, int NKV, int HS);
void attention_backward_lowp(cudaStream_t st, Lowp lp, void *dqkv_lp, float *dqkv, int ld, float *dpre, float *dout,
                             const float *att, float *q, float *k, float *v, int ldqkv, const int *n, int B, int T,
                             int NH, int NKV, int HS);
// dst (count) = src rounded, as lowp_convert of one contiguous row.
void lowp_convert_flat(cudaStream_t st, Lowp lp, void *dst, const float *src, size_t count);
// x (rows, cols; row stride ld) = round_bf16(x) / round_fp16(x) in place (an
// activation stored in L; lp BF16 or FP16).
void lowp_round_inplace(cudaStream_t st, Lowp lp, float *x, int rows, int cols, int ld);

// The recipe's elementwise steps that the engine fuses with a rounding, each
// the CPU's sequence of operations (tensor_gpu/cpu/engine_cpu.c) bit for bit.
// rnd_out: the rounding of a stored activation or input gradient (bf16,
// fp16: to L; tf32: none); L(): the operand conversion of lowp_convert.
//   dinp (+)= rnd_out(t)                        (a zeroed dinp += rnd_out(t))
void lowp_add_rounded(cudaStream_t st, Lowp lp, float *dinp, const float *t, size_t count, bool acc);
//   dinp = ((0 + rnd_out(t0)) + rnd_out(t1)) + rnd_out(t2): the stacked
//   q|k|v products' input gradients added in the CPU's order
void lowp_add_rounded3(cudaStream_t st, Lowp lp, float *dinp, const float *t0, const float *t1, const float *t2,
                       size_t count);
//   r = L(relu(rnd_out(x))): fc1's output x, fc2's operand r (the rounded
//   output itself is not kept: r has its sign, bf16 and fp16)
void lowp_round_relu(cudaStream_t st, Lowp lp, const float *x, void *r, size_t count);
//   d = L(y > 0 ? 0 + (0 + rnd_out(t)) : 0): fc2's input gradient t through
//   relu's backward into fc1's rounded output gradient. y holds the sign of
//   fc1's stored output, in L's type: bf16, fp16: fc2's operand r (whose
//   sign it is); tf32: the fp32 output itself (r may have rounded it to 0)
void lowp_relu_backward(cudaStream_t st, Lowp lp, void *d, const float *t, const void *y, size_t count);
// bf16, fp16 (tf32 refused), on L values (fc1's output y and fc2's input
// gradient d as cuBLAS stores them rounded: mixed_gemm_forward_lp,
// mixed_gemm_dinp_lp), the same arithmetic:
//   r = relu(y): fc2's operand
void lowp_relu(cudaStream_t st, Lowp lp, void *r, const void *y, size_t count);
//   d = L(y > 0 ? 0 + d : 0) in place, y = relu's output r (its sign)
void lowp_relu_mask(cudaStream_t st, Lowp lp, void *d, const void *y, size_t count);
//   dinp = 0 + rnd_out(t) and dlp = L(dinp): the head's input gradient and
//   the next product's output-gradient operand
void lowp_add_rounded_convert(cudaStream_t st, Lowp lp, float *dinp, void *dlp, const float *t, size_t count);
// The rmsnorm rows (one warp per row) with the recipe's roundings fused in:
//   res = rnd_out(p) + x (p NULL: res is x, not written); norm: ln =
//   L(rmsnorm(res)) and rstd; else ln = L(res). (N, C) contiguous.
void lowp_residual_rmsnorm(cudaStream_t st, Lowp lp, float *res, void *ln, float *rstd, const float *p,
                           const float *x, int N, int C, bool norm);
//   dinp += rmsnorm_backward(dy) with dy = 0 + rnd_out(t0) (t1, t2 NULL) or
//   ((0 + rnd_out(t0)) + rnd_out(t1)) + rnd_out(t2) (the CPU's zeroed input
//   gradient += each rounded product), inp the norm's input, rstd its; then
//   dlp = L(dinp) unless dlp is NULL.
void lowp_rmsnorm_backward(cudaStream_t st, Lowp lp, float *dinp, void *dlp, const float *t0, const float *t1,
                           const float *t2, const float *inp, const float *rstd, int N, int C);

// fp16's dynamic loss scaling (as the CPU engine, tensor_gpu/cpu/engine_cpu.c).
// ls: a device pair {scale, 1/scale} (so that one CUDA graph serves every
// scale). x (n) *= ls[0]: the loss gradient, before the backward.
void loss_scale_apply(cudaStream_t st, float *x, size_t n, const float *ls);
// g (n) *= ls[1], and *bad = 1 if any g is then inf or NaN (*bad must be 0
// before: every writer stores the same 1, no atomics needed).
void loss_unscale_check(cudaStream_t st, float *g, size_t n, const float *ls, int *bad);
// dst (n) = src where *flag is set (an overflowed step's update undone).
void restore_if(cudaStream_t st, float *dst, const float *src, size_t n, const int *flag);

// The products on operands already rounded (lowp_convert: type and layout
// of L, contiguous rows of IC, a_lp (N,IC), w_lp (OC,IC)), as the engine
// runs them: every operand rounded once a step and kept for the backward.
//   out (N,OC; row stride ldo) = a_lp @ w_lp^T; round: out = rnd_out(out)
void mixed_gemm_forward(const MixedMM &m, float *out, int ldo, const void *a_lp, const void *w_lp, int N, int IC,
                        int OC, bool round);
//   t (N,IC) = d_lp (N,OC; row stride ldd) @ w_lp, fp32, not rounded
void mixed_gemm_dinp(const MixedMM &m, float *t, const void *d_lp, int ldd, const void *w_lp, int N, int IC, int OC);
// bf16, fp16 (tf32 refused): the same products with their output stored in
// L, rounded by cuBLAS from its fp32 sums (nearest even, as rnd_out):
//   out_lp (N,OC; row stride ldo) = rnd_out(a_lp @ w_lp^T)
void mixed_gemm_forward_lp(const MixedMM &m, void *out_lp, int ldo, const void *a_lp, const void *w_lp, int N, int IC,
                           int OC);
//   t_lp (N,IC) = rnd_out(d_lp @ w_lp)
void mixed_gemm_dinp_lp(const MixedMM &m, void *t_lp, const void *d_lp, int ldd, const void *w_lp, int N, int IC,
                        int OC);
//   dw (OC,IC) (+)= d_lp^T @ a_lp, fp32
void mixed_gemm_dw(const MixedMM &m, float *dw, bool acc, const void *d_lp, int ldd, const void *a_lp, int N,
                   int IC, int OC);

// The products on fp32 operands (converted into m's scratch; tested one by
// one against tensor_gpu/mixed.h in tests/test_gpu.cu):
// out (N,OC) row stride ldo = rnd(inp) (N,IC) @ rnd(w)^T, w (OC,IC); bf16,
// fp16: out rounded to L.
void mixed_matmul_forward(const MixedMM &m, float *out, int ldo, const float *inp, const float *w, int N, int IC,
                          int OC);
// dinp (N,IC) (+)= rnd_out(rnd(dout) @ rnd(w)) (bf16, fp16: the product
// rounded before the fp32 add; tf32: not rounded); dw (OC,IC) (+)= rnd(dout)^T @
// rnd(inp), fp32. dout (N,OC) row stride ldd. dinp or dw may be NULL.
void mixed_matmul_backward(const MixedMM &m, float *dinp, bool acc_dinp, float *dw, bool acc_dw, const float *dout,
                           int ldd, const float *inp, const float *w, int N, int IC, int OC);

}  // namespace mgpt

#endif
