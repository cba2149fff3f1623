// The mixed-precision recipe's products on CUDA (see mixed.cuh). Every
// rounding is tensor_gpu/lowp.h's (the CPU emulation's own code), so a
// rounded operand or output is the CPU's bit for bit; only the fp32 sums
// inside cuBLAS run in another order.
#include "tensor_gpu/cuda/mixed.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "tensor_gpu/cuda/cuda_check.cuh"

#include "tensor_gpu/lowp.h"   // static inline C: the CPU's rounding, __host__ __device__ here

namespace mgpt {

namespace {

constexpr int THREADS = 256;

// Blocks for a grid-stride loop over count elements (at most 4096 blocks).
unsigned blocks_for(size_t count) {
    const size_t b = (count + THREADS - 1) / THREADS;
    return b < 1 ? 1u : b > 4096 ? 4096u : (unsigned)b;
}

// x rounded to bf16 (nearest even, lowp.h), as the bf16 whose bits are the
// rounded float's upper half (exact: the rounded float is a bf16 value).
__device__ inline __nv_bfloat16 bf16_of(float x) {
    return __ushort_as_bfloat16((unsigned short)(lowp_bits(round_bf16(x)) >> 16));
}

__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, int rows, int cols, int lds) {
    const size_t count = (size_t)rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = bf16_of(src[i / cols * lds + i % cols]);
}

// x rounded to fp16 by lowp.h, as a __half (the conversion of an fp16 value,
// or of +-inf or NaN, is exact)
__device__ inline __half fp16_of(float x) { return __float2half_rn(round_fp16(x)); }

__global__ void to_fp16_kernel(__half *dst, const float *src, int rows, int cols, int lds) {
    const size_t count = (size_t)rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = fp16_of(src[i / cols * lds + i % cols]);
}

__global__ void to_tf32_kernel(float *dst, const float *src, int rows, int cols, int lds) {
    const size_t count = (size_t)rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = round_tf32(src[i / cols * lds + i % cols]);
}

// x rounded to L where the recipe stores L: bf16, fp16; tf32 keeps fp32
__device__ inline float round_out(Lowp lp, float x) {
    return lp == Lowp::BF16 ? round_bf16(x) : lp == Lowp::FP16 ? round_fp16(x) : x;
}

__global__ void round_kernel(Lowp lp, float *x, int rows, int cols, int ld) {
    const size_t count = (size_t)rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        float *p = x + i / cols * ld + i % cols;
        *p = round_out(lp, *p);
    }
}

// dinp (+)= rnd(t), elementwise over count; as the CPU's zeroed dinp += rnd(t)
__global__ void add_rounded_kernel(Lowp lp, float *dinp, const float *t, size_t count, bool acc) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        dinp[i] = (acc ? dinp[i] : 0.0f) + round_out(lp, t[i]);
}

__global__ void scale_kernel(float *x, size_t n, const float *ls) {
    const float s = ls[0];
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

__global__ void unscale_check_kernel(float *g, size_t n, const float *ls, int *bad) {
    const float inv = ls[1];
    bool b = false;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float x = g[i] * inv;
        g[i] = x;
        b = b || !isfinite(x);
    }
    if (b) *bad = 1;
}

__global__ void restore_kernel(float *dst, const float *src, size_t n, const int *flag) {
    if (!*flag) return;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

cudaStream_t stream_of(cublasHandle_t h) {
    cudaStream_t st = nullptr;
    CUBLAS_CHECK(cublasGetStream(h, &st));
    return st;
}

// C (fp32, ldc) = alpha op(A) op(B) + beta C on lp's rounded operands
void gemm_lowp(const MixedMM &m, cublasOperation_t ta, cublasOperation_t tb, int M, int Nn, int K, const void *A,
               int lda, const void *B, int ldb, float beta, float *C, int ldc) {
    const float alpha = 1.0f;
    const cudaDataType_t ty = m.lp == Lowp::BF16 ? CUDA_R_16BF : m.lp == Lowp::FP16 ? CUDA_R_16F : CUDA_R_32F;
    const cublasComputeType_t ct = m.lp == Lowp::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    CUBLAS_CHECK(cublasGemmEx(m.h, ta, tb, M, Nn, K, &alpha, A, ty, lda, B, ty, ldb, &beta, C, CUDA_R_32F, ldc, ct,
                              CUBLAS_GEMM_DEFAULT));
}

void check_fits(const MixedMM &m, size_t acts, size_t weights) {
    if (acts > m.cap || weights > m.wcap)
        throw CudaError("internal error: a mixed-precision product larger than its scratch");
}

}  // namespace

size_t lowp_elem_bytes(Lowp lp) { return lp == Lowp::TF32 ? sizeof(float) : 2; }

void lowp_convert(cudaStream_t st, Lowp lp, void *dst, const float *src, int rows, int cols, int lds) {
    const unsigned g = blocks_for((size_t)rows * cols);
    if (lp == Lowp::BF16) {
        to_bf16_kernel<<<g, THREADS, 0, st>>>(static_cast<__nv_bfloat16 *>(dst), src, rows, cols, lds);
        KERNEL_CHECK("to_bf16_kernel");
    } else if (lp == Lowp::FP16) {
        to_fp16_kernel<<<g, THREADS, 0, st>>>(static_cast<__half *>(dst), src, rows, cols, lds);
        KERNEL_CHECK("to_fp16_kernel");
    } else {
        to_tf32_kernel<<<g, THREADS, 0, st>>>(static_cast<float *>(dst), src, rows, cols, lds);
        KERNEL_CHECK("to_tf32_kernel");
    }
}

void lowp_round_inplace(cudaStream_t st, Lowp lp, float *x, int rows, int cols, int ld) {
    round_kernel<<<blocks_for((size_t)rows * cols), THREADS, 0, st>>>(lp, x, rows, cols, ld);
    KERNEL_CHECK("round_kernel");
}

void loss_scale_apply(cudaStream_t st, float *x, size_t n, const float *ls) {
    scale_kernel<<<blocks_for(n), THREADS, 0, st>>>(x, n, ls);
    KERNEL_CHECK("scale_kernel");
}

void loss_unscale_check(cudaStream_t st, float *g, size_t n, const float *ls, int *bad) {
    unscale_check_kernel<<<blocks_for(n), THREADS, 0, st>>>(g, n, ls, bad);
    KERNEL_CHECK("unscale_check_kernel");
}

void restore_if(cudaStream_t st, float *dst, const float *src, size_t n, const int *flag) {
    restore_kernel<<<blocks_for(n), THREADS, 0, st>>>(dst, src, n, flag);
    KERNEL_CHECK("restore_kernel");
}

// Row-major X (rows, cols) is column-major X^T, as in kernels.cu:
//   out^T (OC,N)  = w (OC,IC)    * inp^T (IC,N):   gemm(T, N)
//   dinp^T (IC,N) = w^T (IC,OC)  * dout^T (OC,N):  gemm(N, N)
//   dw^T (IC,OC)  = inp^T (IC,N) * dout (N,OC):    gemm(N, T)
void mixed_matmul_forward(const MixedMM &m, float *out, int ldo, const float *inp, const float *w, int N, int IC,
                          int OC) {
    check_fits(m, (size_t)N * IC, (size_t)OC * IC);
    cudaStream_t st = stream_of(m.h);
    lowp_convert(st, m.lp, m.a, inp, N, IC, IC);
    lowp_convert(st, m.lp, m.w, w, OC, IC, IC);
    gemm_lowp(m, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, m.w, IC, m.a, IC, 0.0f, out, ldo);
    if (m.lp != Lowp::TF32) lowp_round_inplace(st, m.lp, out, N, OC, ldo);
}

void mixed_matmul_backward(const MixedMM &m, float *dinp, bool acc_dinp, float *dw, bool acc_dw, const float *dout,
                           int ldd, const float *inp, const float *w, int N, int IC, int OC) {
    check_fits(m, (size_t)N * (IC > OC ? IC : OC), (size_t)OC * IC);
    cudaStream_t st = stream_of(m.h);
    lowp_convert(st, m.lp, m.d, dout, N, OC, ldd);   // (N,OC) contiguous
    if (dinp) {
        lowp_convert(st, m.lp, m.w, w, OC, IC, IC);
        gemm_lowp(m, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, m.w, IC, m.d, OC, 0.0f, m.t, IC);
        const size_t count = (size_t)N * IC;
        add_rounded_kernel<<<blocks_for(count), THREADS, 0, st>>>(m.lp, dinp, m.t, count, acc_dinp);
        KERNEL_CHECK("add_rounded_kernel");
    }
    if (dw) {
        lowp_convert(st, m.lp, m.a, inp, N, IC, IC);
        gemm_lowp(m, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, m.a, IC, m.d, OC, acc_dw ? 1.0f : 0.0f, dw, IC);
    }
}

}  // namespace mgpt
