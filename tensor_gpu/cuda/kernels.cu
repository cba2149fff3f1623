// The CUDA kernels of the tensor engine (see kernels.cuh for the interface).
//
// Rounding: this file is compiled with --fmad=false (no fused multiply-add),
// IEEE division and square root, like the C reference compiled with
// -ffp-contract=off, and every formula is written in the reference's order.
// Elementwise layers (encoder, relu, residual, Adam) therefore give the
// reference's bits; the reductions differ from it only in their summation
// order (a warp butterfly instead of a sequential loop).
#include "tensor_gpu/cuda/kernels.cuh"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <string>

#include "tensor_gpu/cuda/cuda_check.cuh"
#include "tensor_gpu/cuda/device_util.cuh"
#include "tensor_gpu/cuda/rmsnorm_rows.cuh"

namespace mgpt {

// ---------------------------------------------------------------------------
// errors (cuda_check.cuh)

static std::string format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static std::string format(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

void throw_cuda_error(cudaError_t e, const char *call, const char *file, int line) {
    cudaGetLastError();   // clear a non-sticky error so later calls report their own
    throw CudaError(format("CUDA error at %s:%d: %s failed: %s (%s)", file, line, call,
                           cudaGetErrorName(e), cudaGetErrorString(e)));
}

const char *cublas_status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED (no usable GPU or driver?)";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED (out of memory)";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
    }
}

void throw_cublas_error(cublasStatus_t s, const char *call, const char *file, int line) {
    throw CudaError(format("cuBLAS error at %s:%d: %s failed: %s (%d)", file, line, call,
                           cublas_status_name(s), (int)s));
}

static std::string memory_report() {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        cudaGetLastError();
        return "free device memory unknown";
    }
    return format("the GPU has %zu of %zu bytes free", free_b, total_b);
}

void *device_malloc(size_t bytes, const char *what, const char *file, int line) {
    void *p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaSuccess) return p;
    cudaGetLastError();
    if (e == cudaErrorMemoryAllocation)
        throw CudaError(format("CUDA error at %s:%d: cudaMalloc of %zu bytes (%s) failed: out of device "
                               "memory (%s)", file, line, bytes, what, memory_report().c_str()));
    throw CudaError(format("CUDA error at %s:%d: cudaMalloc of %zu bytes (%s) failed: %s (%s)", file, line,
                           bytes, what, cudaGetErrorName(e), cudaGetErrorString(e)));
}

void *host_malloc_pinned(size_t bytes, const char *what, const char *file, int line) {
    void *p = nullptr;
    cudaError_t e = cudaMallocHost(&p, bytes);
    if (e == cudaSuccess) return p;
    cudaGetLastError();
    throw CudaError(format("CUDA error at %s:%d: cudaMallocHost of %zu bytes (%s, pinned host memory) "
                           "failed: %s (%s)", file, line, bytes, what, cudaGetErrorName(e),
                           cudaGetErrorString(e)));
}

// ---------------------------------------------------------------------------
// encoder

template <typename real>
__global__ void encoder_rmsnorm_kernel(real *enc, real *x0, real *rstd0, real *ln, real *ln_rstd,
                                       const int *tokens, const int *n, const real *wte, const real *wpe,
                                       int B, int T, int C) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    const int lane = threadIdx.x % WARP;
    if (row >= (size_t)B * T) return;   // whole warps leave together
    const int b = (int)(row / T), t = (int)(row % T);
    real *e = enc + row * C;
    if (t >= n[b]) {
        for (int c = lane; c < C; c += WARP) e[c] = 0;
    } else {
        const real *we = wte + (size_t)tokens[(size_t)b * (T + 1) + t] * C;
        const real *wp = wpe + (size_t)t * C;
        for (int c = lane; c < C; c += WARP) e[c] = we[c] + wp[c];
    }
    if (!x0) return;
    real *x = x0 + row * C, *o = ln ? ln + row * C : nullptr;
    warp_rmsnorm(e, [=](int c, real y) { x[c] = y; }, rstd0 + row, C, lane);
    if (ln) warp_rmsnorm(x, [=](int c, real y) { o[c] = y; }, ln_rstd + row, C, lane);
}

template <typename real>
void encoder_forward(cudaStream_t st, real *out, const int *tokens, const int *n, const real *wte,
                     const real *wpe, int B, int T, int C) {
    encoder_rmsnorm_kernel<real><<<row_blocks((size_t)B * T), ROW_THREADS, 0, st>>>(
        out, nullptr, nullptr, nullptr, nullptr, tokens, n, wte, wpe, B, T, C);
    KERNEL_CHECK("encoder_rmsnorm_kernel (encoder_forward)");
}

template <typename real>
void encoder_rmsnorm_forward(cudaStream_t st, real *enc, real *x0, real *rstd0, real *ln, real *ln_rstd,
                             const int *tokens, const int *n, const real *wte, const real *wpe, int B,
                             int T, int C) {
    encoder_rmsnorm_kernel<real><<<row_blocks((size_t)B * T), ROW_THREADS, 0, st>>>(
        enc, x0, rstd0, ln, ln_rstd, tokens, n, wte, wpe, B, T, C);
    KERNEL_CHECK("encoder_rmsnorm_kernel");
}

// Block (x, y): x < V the token v = x (a row of dwte), else the position
// t = x - V (a row of dwpe); channels c = 32y + lane. Warp w sums its own
// contiguous range of the N positions (dwte: the ones holding token v, found
// 32 at a time with a ballot) or of the B documents (dwpe: those with t <
// n[b]), in order; warp 0 then adds the 8 partial sums in warp order. The
// tokens are read B*T times per block row, the gradient rows once.
constexpr int ENC_WARPS = 8;

template <typename real>
__global__ void encoder_backward_kernel(real *dwte, real *dwpe, const real *dout, const int *tokens,
                                        const int *n, int B, int T, int C, int V, bool acc) {
    __shared__ real part[ENC_WARPS][WARP];
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int c = blockIdx.y * WARP + lane;
    const bool is_wte = (int)blockIdx.x < V;
    const int row = is_wte ? (int)blockIdx.x : (int)blockIdx.x - V;   // v, or t
    real s = 0;
    if (is_wte) {
        const int P = B * T, per = (P + ENC_WARPS - 1) / ENC_WARPS;
        const int p0 = warp * per, p1 = P < p0 + per ? P : p0 + per;
        for (int base = p0; base < p1; base += WARP) {   // warp-uniform
            const int p = base + lane;
            bool hit = false;
            if (p < p1) {
                const int b = p / T, t = p % T;
                hit = t < n[b] && tokens[(size_t)b * (T + 1) + t] == row;
            }
            for (unsigned m = __ballot_sync(FULL_MASK, hit); m; m &= m - 1) {   // the hits in order
                const int k = __ffs(m) - 1;
                if (c < C) s += dout[(size_t)(base + k) * C + c];
            }
        }
    } else if (row < T) {
        const int per = (B + ENC_WARPS - 1) / ENC_WARPS;
        const int b0 = warp * per, b1 = B < b0 + per ? B : b0 + per;
        for (int b = b0; b < b1; b++)
            if (row < n[b] && c < C) s += dout[((size_t)b * T + row) * C + c];
    }
    part[warp][lane] = s;
    __syncthreads();
    if (warp != 0 || c >= C) return;
    real tot = part[0][lane];
    for (int w = 1; w < ENC_WARPS; w++) tot += part[w][lane];
    real *g = (is_wte ? dwte : dwpe) + (size_t)row * C + c;
    if (!acc) *g = tot;
    else if (is_wte || row < T) *g += tot;   // rows t >= T of dwpe: left as they are
}

template <typename real>
void encoder_backward(cudaStream_t st, real *dwte, real *dwpe, const real *dout, const int *tokens,
                      const int *n, int B, int T, int C, int V, int Tw, bool acc) {
    const dim3 grid(blocks_for((size_t)V + (size_t)Tw, 1), blocks_for((size_t)C, WARP));
    encoder_backward_kernel<real><<<grid, ENC_WARPS * WARP, 0, st>>>(dwte, dwpe, dout, tokens, n, B, T, C, V,
                                                                     acc);
    KERNEL_CHECK("encoder_backward_kernel");
}

// ---------------------------------------------------------------------------
// rmsnorm

// K > 0: the row in registers (rmsnorm_rows.cuh); K = 0: streamed.
template <int K, typename real>
__global__ void residual_rmsnorm_kernel(real *res, real *out, real *rstd, const real *a, const real *b,
                                        int N, int C) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    const int lane = threadIdx.x % WARP;
    if (row >= (size_t)N) return;
    const real *x = a + row * C;
    if constexpr (K > 0) {
        real v[K][QUAD];
        load_row(v, x, lane);
        if (b) {   // res = a + b first
            real y[K][QUAD];
            load_row(y, b + row * C, lane);
            each_quad<K>([&](int k, int e) { v[k][e] = v[k][e] + y[k][e]; });
            store_row(res + row * C, v, lane);
        }
        const real s = row_rstd(v, C);
        store_row(out + row * C, v, lane, [=](real y) { return y * s; });
        if (rstd && lane == 0) rstd[row] = s;
    } else {
        if (b) {   // res = a + b first
            real *r = res + row * C;
            const real *y = b + row * C;
            lane_channels<real>(C, lane, [=](int c) { return x[c] + y[c]; }, [=](int c, real v) { r[c] = v; });
            x = r;
        }
        real *o = out + row * C;
        warp_rmsnorm(x, [=](int c, real y) { o[c] = y; }, rstd + row, C, lane);
    }
}

template <typename real>
void rmsnorm_forward(cudaStream_t st, real *out, real *rstd, const real *inp, int N, int C) {
    residual_rmsnorm_forward<real>(st, nullptr, out, rstd, inp, nullptr, N, C);
}

template <typename real>
void residual_rmsnorm_forward(cudaStream_t st, real *res, real *out, real *rstd, const real *a,
                              const real *b, int N, int C) {
    with_row_regs(C, [&](auto k) {
        residual_rmsnorm_kernel<decltype(k)::value, real>
            <<<row_blocks((size_t)N), ROW_THREADS, 0, st>>>(res, out, rstd, a, b, N, C);
        KERNEL_CHECK("residual_rmsnorm_kernel");
    });
}

// dx (+)= s*dy - (s^3/C) (dy.x) x, written as the reference writes it.
template <int K, typename real>
__global__ void rmsnorm_backward_kernel(real *dinp, const real *dout, const real *inp, const real *rstd,
                                        int N, int C, bool acc) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    const int lane = threadIdx.x % WARP;
    if (row >= (size_t)N) return;
    const real *x = inp + row * C, *dy = dout + row * C;
    real *dx = dinp + row * C;
    if constexpr (K > 0) {
        real g[K][QUAD], xv[K][QUAD], d[K][QUAD];
        load_row(g, dy, lane);
        load_row(xv, x, lane);
        if (acc) load_row(d, dx, lane);
        row_rmsnorm_backward(g, xv, rstd[row], C);
        if (acc) each_quad<K>([&](int k, int e) { g[k][e] = d[k][e] + g[k][e]; });
        store_row(dx, g, lane);
    } else {
        warp_rmsnorm_backward(
            [=](int c) { return dy[c]; }, x, rstd[row], [=](int c, real g) { return acc ? dx[c] + g : g; },
            [=](int c, real v) { dx[c] = v; }, C, lane);
    }
}

template <typename real>
void rmsnorm_backward(cudaStream_t st, real *dinp, const real *dout, const real *inp, const real *rstd,
                      int N, int C, bool acc) {
    with_row_regs(C, [&](auto k) {
        rmsnorm_backward_kernel<decltype(k)::value, real>
            <<<row_blocks((size_t)N), ROW_THREADS, 0, st>>>(dinp, dout, inp, rstd, N, C, acc);
        KERNEL_CHECK("rmsnorm_backward_kernel");
    });
}

// ---------------------------------------------------------------------------
// elementwise

template <typename real>
__global__ void residual_kernel(real *out, const real *a, const real *b, size_t count) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

template <typename real>
void residual_forward(cudaStream_t st, real *out, const real *a, const real *b, size_t count) {
    residual_kernel<real><<<ew_blocks(count), EW_THREADS, 0, st>>>(out, a, b, count);
    KERNEL_CHECK("residual_kernel");
}

template <typename real> __global__ void relu_forward_kernel(real *out, const real *inp, size_t count) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        const real x = inp[i];
        out[i] = x > 0 ? x : (real)0;
    }
}

template <typename real> void relu_forward(cudaStream_t st, real *out, const real *inp, size_t count) {
    relu_forward_kernel<real><<<ew_blocks(count), EW_THREADS, 0, st>>>(out, inp, count);
    KERNEL_CHECK("relu_forward_kernel");
}

// relu'(0) = 0, as the original's (x > 0) * grad
template <typename real>
__global__ void relu_backward_kernel(real *dinp, const real *dout, const real *inp, size_t count, bool acc) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        if (acc) {
            if (inp[i] > 0) dinp[i] += dout[i];
        } else {
            dinp[i] = inp[i] > 0 ? dout[i] : (real)0;
        }
    }
}

template <typename real>
void relu_backward(cudaStream_t st, real *dinp, const real *dout, const real *inp, size_t count, bool acc) {
    relu_backward_kernel<real><<<ew_blocks(count), EW_THREADS, 0, st>>>(dinp, dout, inp, count, acc);
    KERNEL_CHECK("relu_backward_kernel");
}

// ---------------------------------------------------------------------------
// matrix products. Row-major X (rows, cols) is column-major X^T, so
//   out^T (OC,N)  = w (OC,IC)       * inp^T (IC,N):   gemm(T, N)
//   dinp^T (IC,N) = w^T (IC,OC)     * dout^T (OC,N):  gemm(N, N)
//   dw^T (IC,OC)  = inp^T (IC,N)    * dout (N,OC):    gemm(N, T)

static void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                 double alpha, const double *A, int lda, const double *B, int ldb, double beta, double *C,
                 int ldc) {
    CUBLAS_CHECK(cublasDgemm(h, ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc));
}

static void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                 float alpha, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    CUBLAS_CHECK(cublasSgemm(h, ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc));
}

// S products of the same shape, operand i at A + i*sa, B + i*sb, C + i*sc
static void gemm_batched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                         double alpha, const double *A, int lda, long long sa, const double *B, int ldb,
                         long long sb, double beta, double *C, int ldc, long long sc, int S) {
    CUBLAS_CHECK(cublasDgemmStridedBatched(h, ta, tb, m, n, k, &alpha, A, lda, sa, B, ldb, sb, &beta, C, ldc, sc, S));
}

static void gemm_batched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                         float alpha, const float *A, int lda, long long sa, const float *B, int ldb, long long sb,
                         float beta, float *C, int ldc, long long sc, int S) {
    CUBLAS_CHECK(cublasSgemmStridedBatched(h, ta, tb, m, n, k, &alpha, A, lda, sa, B, ldb, sb, &beta, C, ldc, sc, S));
}

template <typename real>
void matmul_forward(cublasHandle_t h, real *out, int ldo, const real *inp, const real *w, int N, int IC, int OC) {
    gemm(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, (real)1, w, IC, inp, IC, (real)0, out, ldo);
}

// S chunks of K = ceil(N/S) rows, at least DW_MIN_ROWS each; S = 1: none
static DwSplit split_rows(int N, long long S) {
    if (S > N / DW_MIN_ROWS) S = N / DW_MIN_ROWS;
    if (S < 2) return DwSplit{1, N};
    const int K = (int)((N + S - 1) / S);
    return DwSplit{(N + K - 1) / K, K};   // ceil(N/K) <= S chunks: the last one N - (S-1)K rows
}

DwSplit dw_split(int N, int IC, int OC, int sms, int real_bytes) {
    const long long tiles = (long long)((OC + 127) / 128) * ((IC + 127) / 128);
    // fp64: from 16 output tiles on, the partials' traffic costs what the
    // split gains (H200, test_gpu --bench: n_embd 512, N 4096: attn_wo 67 us
    // plain vs 70 split, mlp_fc1 163 vs 200, mlp_fc2 160 vs 238)
    if (real_bytes == 8 && tiles >= 16) return DwSplit{1, N};
    return split_rows(N, sms > 0 ? 2LL * sms / tiles : 1);
}

size_t dw_scratch_count(int N, int IC, int OC, int sms) {
    const DwSplit sp = dw_split(N, IC, OC, sms);
    return sp.S > 1 ? (size_t)sp.S * OC * IC : 0;
}

// dw (+)= the sum of the S partials (S,count) at part, in chunk order.
template <typename real>
__global__ void dw_reduce_kernel(real *dw, const real *part, int S, size_t count, bool acc) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        real s = part[i];
        for (int j = 1; j < S; j++) s += part[(size_t)j * count + i];
        dw[i] = acc ? dw[i] + s : s;
    }
}

// dw^T (IC,OC) (+)= inp^T (IC,N) * dout (N,OC), split over the N rows when
// the split pays and the scratch holds it (kernels.cuh).
template <typename real>
static void matmul_dw(cublasHandle_t h, real *dw, bool acc, const real *dout, int ldd, const real *inp, int N,
                      int IC, int OC, const DwScratch<real> &ws) {
    DwSplit sp = dw_split(N, IC, OC, ws.sms, (int)sizeof(real));
    const size_t count = (size_t)OC * IC;
    if (sp.S > 1 && (!ws.p || (size_t)sp.S * count > ws.count))   // as many chunks as the scratch holds
        sp = split_rows(N, ws.p ? (long long)(ws.count / count) : 0);
    if (sp.S <= 1) {
        gemm(h, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, (real)1, inp, IC, dout, ldd, acc ? (real)1 : (real)0, dw, IC);
        return;
    }
    const int K = sp.K, full = N / K, tail = N - full * K;   // full chunks of K rows, then one of tail rows
    gemm_batched(h, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, K, (real)1, inp, IC, (long long)K * IC, dout, ldd,
                 (long long)K * ldd, (real)0, ws.p, IC, (long long)count, full);
    if (tail)
        gemm(h, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, tail, (real)1, inp + (size_t)full * K * IC, IC,
             dout + (size_t)full * K * ldd, ldd, (real)0, ws.p + (size_t)full * count, IC);
    cudaStream_t st = nullptr;
    CUBLAS_CHECK(cublasGetStream(h, &st));
    dw_reduce_kernel<real><<<ew_blocks(count), EW_THREADS, 0, st>>>(dw, ws.p, full + (tail ? 1 : 0), count, acc);
    KERNEL_CHECK("dw_reduce_kernel");
}

template <typename real>
void matmul_backward(cublasHandle_t h, real *dinp, bool acc_dinp, real *dw, bool acc_dw, const real *dout,
                     int ldd, const real *inp, const real *w, int N, int IC, int OC, const DwScratch<real> &ws) {
    if (dinp) gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, (real)1, w, IC, dout, ldd, acc_dinp ? (real)1 : (real)0, dinp, IC);
    if (dw) matmul_dw(h, dw, acc_dw, dout, ldd, inp, N, IC, OC, ws);
}

// ---------------------------------------------------------------------------
// cross-entropy: one warp per row (b,t); the exponentials are kept in dlogits
// between the two passes, as the reference does. The weight of a real
// position: 1/(n[b]*B) (doc-mean), or with token_mean 1/n_all, n_all =
// sum(n) summed by the warp from the device copy of n (the step's graph reads
// the batch from fixed addresses, so it cannot be a launch argument), formed
// as layers.c does: (real)(1.0 / n_all) in double.

template <typename real>
__global__ void crossentropy_kernel(real *dlogits, real *losses, const real *logits, const int *tokens,
                                    const int *n, int B, int T, int V, bool token_mean) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    const int lane = threadIdx.x % WARP;
    if (row >= (size_t)B * T) return;
    const int b = (int)(row / T), t = (int)(row % T);
    const real *l = logits + row * V;
    real *dl = dlogits + row * V;
    if (t >= n[b]) {
        for (int i = lane; i < V; i += WARP) dl[i] = 0;
        if (lane == 0) losses[row] = 0;
        return;
    }
    const int target = tokens[(size_t)b * (T + 1) + t + 1];
    real mx = neg_inf<real>();
    for (int i = lane; i < V; i += WARP) mx = l[i] > mx ? l[i] : mx;
    mx = warp_max(mx);
    real sum = 0;
    for (int i = lane; i < V; i += WARP) {
        const real e = r_exp(l[i] - mx);
        dl[i] = e;
        sum += e;
    }
    sum = warp_sum(sum);
    const real inv = (real)1 / sum;
    real w;
    if (token_mean) {
        long long n_all = 0;   // integers: exact in any order
        for (int i = lane; i < B; i += WARP) n_all += n[i];
        n_all = warp_sum(n_all);
        w = (real)(1.0 / (double)n_all);
    } else {
        w = (real)1 / ((real)n[b] * (real)B);
    }
    for (int i = lane; i < V; i += WARP) dl[i] = (dl[i] * inv - (real)(i == target)) * w;
    if (lane == 0) losses[row] = r_log(sum) - (l[target] - mx);
}

template <typename real>
void crossentropy_forward_backward(cudaStream_t st, real *dlogits, real *losses, const real *logits,
                                   const int *tokens, const int *n, int B, int T, int V, bool token_mean) {
    crossentropy_kernel<real><<<row_blocks((size_t)B * T), ROW_THREADS, 0, st>>>(dlogits, losses, logits,
                                                                                 tokens, n, B, T, V, token_mean);
    KERNEL_CHECK("crossentropy_kernel");
}

// In layers.c's order: each document's losses summed in double; doc-mean
// divides each sum by n[b] and their sum by B, token-mean sums the sums and
// divides by n_all (a double sum of the n[b]).
template <typename real> double crossentropy_mean(const real *losses, const int *n, int B, int T, bool token_mean) {
    double loss = 0, n_all = 0;
    for (int b = 0; b < B; b++) n_all += n[b];
    for (int b = 0; b < B; b++) {
        double doc = 0;
        for (int t = 0; t < n[b] && t < T; t++) doc += (double)losses[(size_t)b * T + t];
        loss += token_mean ? doc : doc / (double)n[b];
    }
    return token_mean ? loss / n_all : loss / (double)B;
}

// ---------------------------------------------------------------------------
// Adam

AdamScalars adam_scalars(double lr_t, double beta1, double beta2, int step) {
    AdamScalars s;
    s.lr = lr_t;
    s.c1 = 1.0 - std::pow(beta1, (double)(step + 1));
    s.c2 = 1.0 - std::pow(beta2, (double)(step + 1));
    return s;
}

template <typename real>
__global__ void adam_kernel(real *p, const real *g, real *m, real *v, size_t count, const AdamScalars *sc,
                            real b1, real b2, real ep) {
    const real lr = (real)sc->lr, rc1 = (real)sc->c1, rc2 = (real)sc->c2;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        const real gi = g[i];
        const real mi = b1 * m[i] + ((real)1 - b1) * gi;
        const real vi = b2 * v[i] + ((real)1 - b2) * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        const real m_hat = mi / rc1;
        const real v_hat = vi / rc2;
        p[i] -= (lr * m_hat) / (r_sqrt(v_hat) + ep);
    }
}

template <typename real>
void adam_update(cudaStream_t st, real *p, const real *g, real *m, real *v, size_t count, const AdamScalars *sc,
                 double beta1, double beta2, double eps) {
    adam_kernel<real><<<ew_blocks(count), EW_THREADS, 0, st>>>(p, g, m, v, count, sc, (real)beta1, (real)beta2,
                                                               (real)eps);
    KERNEL_CHECK("adam_kernel");
}

// ---------------------------------------------------------------------------
// test-only (compare --inject-fault op-fwd:OP, op-bwd:OP): element 0 of a
// (rows, width) array of row stride ld off by frac of its largest |value|
// (frac * 0.1 when it is all 0). One thread: a fault run is small.

template <typename real>
__global__ void fault_bump_kernel(real *buf, int ld, int rows, int width, real frac) {
    real mx = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < width; j++) {
            const real x = buf[(size_t)i * ld + j];
            mx = (x < 0 ? -x : x) > mx ? (x < 0 ? -x : x) : mx;
        }
    buf[0] += frac * (mx > 0 ? mx : (real)0.1);
}

template <typename real> void fault_bump(cudaStream_t st, real *buf, int ld, int rows, int width, double frac) {
    fault_bump_kernel<real><<<1, 1, 0, st>>>(buf, ld, rows, width, (real)frac);
    KERNEL_CHECK("fault_bump_kernel");
}

// ---------------------------------------------------------------------------
// instantiations

#define MGPT_INSTANTIATE(real)                                                                                \
    template void encoder_forward<real>(cudaStream_t, real *, const int *, const int *, const real *,         \
                                        const real *, int, int, int);                                        \
    template void encoder_rmsnorm_forward<real>(cudaStream_t, real *, real *, real *, real *, real *,         \
                                                const int *, const int *, const real *, const real *, int,   \
                                                int, int);                                                   \
    template void encoder_backward<real>(cudaStream_t, real *, real *, const real *, const int *, const int *, \
                                         int, int, int, int, int, bool);                                     \
    template void rmsnorm_forward<real>(cudaStream_t, real *, real *, const real *, int, int);                \
    template void residual_rmsnorm_forward<real>(cudaStream_t, real *, real *, real *, const real *,          \
                                                 const real *, int, int);                                    \
    template void rmsnorm_backward<real>(cudaStream_t, real *, const real *, const real *, const real *, int, \
                                         int, bool);                                                         \
    template void residual_forward<real>(cudaStream_t, real *, const real *, const real *, size_t);           \
    template void relu_forward<real>(cudaStream_t, real *, const real *, size_t);                             \
    template void relu_backward<real>(cudaStream_t, real *, const real *, const real *, size_t, bool);        \
    template void matmul_forward<real>(cublasHandle_t, real *, int, const real *, const real *, int, int, int); \
    template void matmul_backward<real>(cublasHandle_t, real *, bool, real *, bool, const real *, int,        \
                                        const real *, const real *, int, int, int, const DwScratch<real> &); \
    template void crossentropy_forward_backward<real>(cudaStream_t, real *, real *, const real *, const int *, \
                                                      const int *, int, int, int, bool);                     \
    template double crossentropy_mean<real>(const real *, const int *, int, int, bool);                      \
    template void adam_update<real>(cudaStream_t, real *, const real *, real *, real *, size_t,               \
                                    const AdamScalars *, double, double, double);                            \
    template void fault_bump<real>(cudaStream_t, real *, int, int, int, double);

MGPT_INSTANTIATE(double)
MGPT_INSTANTIATE(float)

}  // namespace mgpt
