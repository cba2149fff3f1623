// The mixed-precision recipe's products on CUDA (see mixed.cuh). Every
// rounding is tensor_gpu/lowp.h's (the CPU emulation's own code), so a
// rounded operand or output is the CPU's bit for bit; only the fp32 sums
// inside cuBLAS run in another order.
#include "tensor_gpu/cuda/mixed.cuh"

#include "tensor_gpu/cuda/cuda_check.cuh"
#include "tensor_gpu/cuda/lowp_out.cuh"
#include "tensor_gpu/cuda/rmsnorm_rows.cuh"

namespace mgpt {

namespace {

constexpr int THREADS = 256;

// Blocks for a grid-stride loop over count elements (at most 4096 blocks).
unsigned blocks_for(size_t count) {
    const size_t b = (count + THREADS - 1) / THREADS;
    return b < 1 ? 1u : b > 4096 ? 4096u : (unsigned)b;
}

// The grid of a rows kernel: columns over x (THREADS a block), rows over y.
dim3 rows_grid(int rows, int cols) {
    const unsigned x = (unsigned)((cols + THREADS - 1) / THREADS);
    return dim3(x < 1 ? 1u : x > 16 ? 16u : x, rows < 1 ? 1u : rows > 32768 ? 32768u : (unsigned)rows);
}

bool aligned16(const void *p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The flat elementwise kernels' loop over count elements: with vec (every
// pointer 16-byte aligned) four(i) for each group i of four elements (one
// 16-byte access per operand), then one(i) for the elements left, one at a
// time. Each kernel writes its arithmetic once, as a per-element g, and
// applies it lane by lane in four() (lanes, convert4).
template <class Four4, class One>
__device__ __forceinline__ void elementwise(size_t count, bool vec, Four4 four, One one) {
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    size_t done = 0;
    if (vec) {
        for (size_t i = tid; i < count / 4; i += stride) four(i);
        done = count / 4 * 4;
    }
    for (size_t i = done + tid; i < count; i += stride) one(i);
}

__device__ __forceinline__ float4 load4(const float *p, size_t i) { return reinterpret_cast<const float4 *>(p)[i]; }
__device__ __forceinline__ void store4(float *p, size_t i, float4 v) { reinterpret_cast<float4 *>(p)[i] = v; }

// g lane by lane over one, two or three groups of four
template <class G> __device__ __forceinline__ float4 lanes(G g, float4 a) {
    return make_float4(g(a.x), g(a.y), g(a.z), g(a.w));
}
template <class G> __device__ __forceinline__ float4 lanes(G g, float4 a, float4 b) {
    return make_float4(g(a.x, b.x), g(a.y, b.y), g(a.z, b.z), g(a.w, b.w));
}
template <class G> __device__ __forceinline__ float4 lanes(G g, float4 a, float4 b, float4 c) {
    return make_float4(g(a.x, b.x, c.x), g(a.y, b.y, c.y), g(a.z, b.z, c.z), g(a.w, b.w, c.w));
}

// group i of four of dst (L's type) = F of each lane of x
template <class F> __device__ __forceinline__ void convert4(const F &f, typename F::T *dst, size_t i, float4 x) {
    Quad<typename F::T> y;
    y.v[0] = f(x.x), y.v[1] = f(x.y), y.v[2] = f(x.z), y.v[3] = f(x.w);
    reinterpret_cast<Quad<typename F::T> *>(dst)[i] = y;
}

// dst[i] = F(src[i]) over a contiguous count
template <class F>
__global__ void convert_flat_kernel(typename F::T *dst, const float *src, size_t count, bool vec) {
    const F f;
    elementwise(
        count, vec, [&](size_t i) { convert4(f, dst, i, load4(src, i)); }, [&](size_t i) { dst[i] = f(src[i]); });
}

// dst (rows, cols) contiguous = F(src (rows, cols) at row stride lds): rows
// over blockIdx.y, columns over x (no division per element)
template <class F>
__global__ void convert_rows_kernel(typename F::T *dst, const float *src, int rows, int cols, int lds) {
    const F f;
    for (int r = blockIdx.y; r < rows; r += gridDim.y)
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x)
            dst[(size_t)r * cols + c] = f(src[(size_t)r * lds + c]);
}

// x rounded to L where the recipe stores L: bf16, fp16; tf32 keeps fp32
__device__ inline float round_out(Lowp lp, float x) {
    return lp == Lowp::BF16 ? round_bf16(x) : lp == Lowp::FP16 ? round_fp16(x) : x;
}

// x (count) rounded in place (the contiguous case of lowp_round_inplace)
__global__ void round_flat_kernel(Lowp lp, float *x, size_t count, bool vec) {
    const auto g = [lp](float v) { return round_out(lp, v); };
    elementwise(
        count, vec, [&](size_t i) { store4(x, i, lanes(g, load4(x, i))); }, [&](size_t i) { x[i] = g(x[i]); });
}

__global__ void round_rows_kernel(Lowp lp, float *x, int rows, int cols, int ld) {
    for (int r = blockIdx.y; r < rows; r += gridDim.y)
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x)
            x[(size_t)r * ld + c] = round_out(lp, x[(size_t)r * ld + c]);
}

// dinp (+)= rnd(t), elementwise over count; as the CPU's zeroed dinp += rnd(t)
__global__ void add_rounded_kernel(Lowp lp, float *dinp, const float *t, size_t count, bool acc, bool vec) {
    // (dinp is read only when acc: an overwritten one may be uninitialized)
    const auto g = [lp](float d, float v) { return d + round_out(lp, v); };
    elementwise(
        count, vec,
        [&](size_t i) {
            const float4 d = acc ? load4(dinp, i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            store4(dinp, i, lanes(g, d, load4(t, i)));
        },
        [&](size_t i) { dinp[i] = g(acc ? dinp[i] : 0.0f, t[i]); });
}

// dinp = ((0 + rnd(t0)) + rnd(t1)) + rnd(t2), as three zeroed-dinp += rnd(t)
__global__ void add_rounded3_kernel(Lowp lp, float *dinp, const float *t0, const float *t1, const float *t2,
                                    size_t count, bool vec) {
    const auto g = [lp](float a, float b, float c) {
        return ((0.0f + round_out(lp, a)) + round_out(lp, b)) + round_out(lp, c);
    };
    elementwise(
        count, vec, [&](size_t i) { store4(dinp, i, lanes(g, load4(t0, i), load4(t1, i), load4(t2, i))); },
        [&](size_t i) { dinp[i] = g(t0[i], t1[i], t2[i]); });
}

// r = F(relu(rnd(x))): the CPU's rounded fc1 output, its relu_forward, then
// the operand's rounding (exact in bf16, fp16). The rounded output itself
// is not stored: relu's backward needs only its sign, which r keeps (bf16,
// fp16: r > 0 exactly where rnd(x) > 0; tf32 rounds nothing, x is it).
template <class F>
__global__ void round_relu_kernel(Lowp lp, const float *x, typename F::T *r, size_t count, bool vec) {
    const F f;
    const auto g = [lp](float v) {
        const float y = round_out(lp, v);
        return y > 0 ? y : 0.0f;
    };
    elementwise(
        count, vec, [&](size_t i) { convert4(f, r, i, lanes(g, load4(x, i))); },
        [&](size_t i) { r[i] = f(g(x[i])); });
}

__device__ inline float to_float(float x) { return x; }
__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ inline float to_float(__half x) { return __half2float(x); }

// d = F(y > 0 ? 0 + (0 + rnd(t)) : 0): the CPU's zeroed dfch_relu += rnd(t),
// its zeroed dfch += dfch_relu where fch > 0, then the operand's rounding.
// y: the sign of the stored fch (bf16, fp16: fc2's operand r; tf32: fch).
template <class F>
__global__ void relu_backward_lowp_kernel(Lowp lp, typename F::T *d, const float *t, const typename F::T *y,
                                          size_t count, bool vec) {
    using T = typename F::T;
    const F f;
    const auto g = [lp](float v, float x) {
        const float dr = 0.0f + round_out(lp, v);
        return x > 0 ? 0.0f + dr : 0.0f;
    };
    elementwise(
        count, vec,
        [&](size_t i) {
            const Quad<T> m = reinterpret_cast<const Quad<T> *>(y)[i];
            const float4 x = make_float4(to_float(m.v[0]), to_float(m.v[1]), to_float(m.v[2]), to_float(m.v[3]));
            convert4(f, d, i, lanes(g, load4(t, i), x));
        },
        [&](size_t i) { d[i] = f(g(t[i], to_float(y[i]))); });
}

// r = relu(y) on L values (bf16, fp16: fc1's output as cuBLAS rounded it):
// y > 0 ? y : +0, the CPU's relu_forward of the stored output (exact in L).
template <class F>
__global__ void relu_lowp_kernel(typename F::T *r, const typename F::T *y, size_t count, bool vec) {
    using T = typename F::T;
    const F f;
    const auto g = [f](T v) { return to_float(v) > 0 ? v : f(0.0f); };
    elementwise(
        count, vec,
        [&](size_t i) {
            Quad<T> q = reinterpret_cast<const Quad<T> *>(y)[i];
#pragma unroll
            for (int e = 0; e < QUAD; e++) q.v[e] = g(q.v[e]);
            reinterpret_cast<Quad<T> *>(r)[i] = q;
        },
        [&](size_t i) { r[i] = g(y[i]); });
}

// d = F(y > 0 ? 0 + d : 0) in place, on L values (bf16, fp16: d fc2's input
// gradient as cuBLAS rounded it, y relu's output): the CPU's zeroed
// dfch_relu += rnd(t), its zeroed dfch += dfch_relu where fch > 0, then
// the operand's rounding (exact: 0 + d only turns -0 into +0).
template <class F> __global__ void relu_mask_lowp_kernel(typename F::T *d, const typename F::T *y, size_t count, bool vec) {
    using T = typename F::T;
    const F f;
    const auto g = [f](T v, T m) { return f(to_float(m) > 0 ? 0.0f + to_float(v) : 0.0f); };
    elementwise(
        count, vec,
        [&](size_t i) {
            Quad<T> q = reinterpret_cast<const Quad<T> *>(d)[i];
            const Quad<T> m = reinterpret_cast<const Quad<T> *>(y)[i];
#pragma unroll
            for (int e = 0; e < QUAD; e++) q.v[e] = g(q.v[e], m.v[e]);
            reinterpret_cast<Quad<T> *>(d)[i] = q;
        },
        [&](size_t i) { d[i] = g(d[i], y[i]); });
}

// The recipe's rmsnorm rows (one warp per row, rmsnorm_rows.cuh) with the
// roundings around them fused in:
// res = rnd(p) + x (p NULL: res is x, not written); norm: ln = F(rmsnorm(res)),
// rstd; else ln = F(res).
// K > 0: the row in registers (rmsnorm_rows.cuh); K = 0: streamed.
template <int K, class F>
__global__ void residual_rmsnorm_lowp_kernel(Lowp lp, float *res, typename F::T *ln, float *rstd, const float *p,
                                             const float *x, int N, int C, bool norm) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    const int lane = threadIdx.x % WARP;
    if (row >= (size_t)N) return;
    const F f;
    const float *r = x + row * C;
    typename F::T *o = ln + row * C;
    if constexpr (K > 0) {
        float v[K][QUAD];
        load_row(v, r, lane);
        if (p) {
            float y[K][QUAD];
            load_row(y, p + row * C, lane);
            each_quad<K>([&](int k, int e) { v[k][e] = round_out(lp, y[k][e]) + v[k][e]; });
            store_row(res + row * C, v, lane);
        }
        if (norm) {
            const float s = row_rstd(v, C);
            store_row(o, v, lane, [=](float y) { return f(y * s); });
            if (rstd && lane == 0) rstd[row] = s;
        } else {
            store_row(o, v, lane, f);
        }
    } else {
        if (p) {
            float *o2 = res + row * C;
            const float *y = p + row * C;
            lane_channels<float>(C, lane, [=](int c) { return round_out(lp, y[c]) + r[c]; },
                                 [=](int c, float v) { o2[c] = v; });
            r = o2;
        }
        const auto put = [=](int c, float v) { o[c] = f(v); };
        if (norm) warp_rmsnorm(r, put, rstd + row, C, lane);
        else lane_channels<float>(C, lane, [=](int c) { return r[c]; }, put);
    }
}

// dinp += rmsnorm's backward of dy, dy = 0 + rnd(t0) (t1 NULL) or ((0 +
// rnd(t0)) + rnd(t1)) + rnd(t2): the CPU's zeroed input gradient += each
// rounded product, in its order; dlp (unless NULL) = F(dinp).
template <int K, class F>
__global__ void rmsnorm_backward_lowp_kernel(Lowp lp, float *dinp, typename F::T *dlp, const float *t0,
                                             const float *t1, const float *t2, const float *inp, const float *rstd,
                                             int N, int C) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    const int lane = threadIdx.x % WARP;
    if (row >= (size_t)N) return;
    const F f;
    const size_t o = row * C;
    float *dx = dinp + o;
    typename F::T *dl = dlp ? dlp + o : nullptr;
    if constexpr (K > 0) {
        float g[K][QUAD], xv[K][QUAD], d[K][QUAD];
        load_row(g, t0 + o, lane);
        if (t1) {
            float g1[K][QUAD], g2[K][QUAD];
            load_row(g1, t1 + o, lane);
            load_row(g2, t2 + o, lane);
            each_quad<K>([&](int k, int e) {
                g[k][e] = ((0.0f + round_out(lp, g[k][e])) + round_out(lp, g1[k][e])) + round_out(lp, g2[k][e]);
            });
        } else {
            each_quad<K>([&](int k, int e) { g[k][e] = 0.0f + round_out(lp, g[k][e]); });
        }
        load_row(xv, inp + o, lane);
        load_row(d, dx, lane);
        row_rmsnorm_backward(g, xv, rstd[row], C);
        each_quad<K>([&](int k, int e) { g[k][e] = d[k][e] + g[k][e]; });
        store_row(dx, g, lane);
        if (dl) store_row(dl, g, lane, f);
    } else {
        const auto dy = [=](int c) {
            const float d = 0.0f + round_out(lp, t0[o + c]);
            return t1 ? (d + round_out(lp, t1[o + c])) + round_out(lp, t2[o + c]) : d;
        };
        warp_rmsnorm_backward(
            dy, inp + o, rstd[row], [=](int c, float g) { return dx[c] + g; },
            [=](int c, float v) {
                dx[c] = v;
                if (dl) dl[c] = f(v);
            },
            C, lane);
    }
}

// dinp = 0 + rnd(t), dlp = F(dinp): the head's input gradient and fc2's operand
template <class F>
__global__ void add_rounded_convert_kernel(Lowp lp, float *dinp, typename F::T *dlp, const float *t, size_t count,
                                           bool vec) {
    const F f;
    const auto g = [lp](float v) { return 0.0f + round_out(lp, v); };
    elementwise(
        count, vec,
        [&](size_t i) {
            const float4 y = lanes(g, load4(t, i));
            store4(dinp, i, y);
            convert4(f, dlp, i, y);
        },
        [&](size_t i) {
            const float y = g(t[i]);
            dinp[i] = y;
            dlp[i] = f(y);
        });
}

template <class F> void convert(cudaStream_t st, void *dst, const float *src, int rows, int cols, int lds) {
    typename F::T *d = static_cast<typename F::T *>(dst);
    if (lds == cols) {
        const size_t count = (size_t)rows * cols;
        convert_flat_kernel<F><<<blocks_for(count / 4 + 1), THREADS, 0, st>>>(d, src, count,
                                                                             aligned16(d) && aligned16(src));
        KERNEL_CHECK("convert_flat_kernel");
    } else {
        convert_rows_kernel<F><<<rows_grid(rows, cols), THREADS, 0, st>>>(d, src, rows, cols, lds);
        KERNEL_CHECK("convert_rows_kernel");
    }
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

cudaDataType_t lowp_type(Lowp lp) { return lp == Lowp::BF16 ? CUDA_R_16BF : lp == Lowp::FP16 ? CUDA_R_16F : CUDA_R_32F; }

// C (ldc) = alpha op(A) op(B) + beta C on lp's rounded operands, fp32 sums;
// C fp32, or (l_out) in L's type: the sums rounded to L as cuBLAS stores
// them (nearest even: test_gpu's test_lowp_gemm_out checks it)
void gemm_lowp(const MixedMM &m, cublasOperation_t ta, cublasOperation_t tb, int M, int Nn, int K, const void *A,
               int lda, const void *B, int ldb, float beta, void *C, int ldc, bool l_out = false) {
    const float alpha = 1.0f;
    const cudaDataType_t ty = lowp_type(m.lp);
    const cublasComputeType_t ct = m.lp == Lowp::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    CUBLAS_CHECK(cublasGemmEx(m.h, ta, tb, M, Nn, K, &alpha, A, ty, lda, B, ty, ldb, &beta, C,
                              l_out ? ty : CUDA_R_32F, ldc, ct, CUBLAS_GEMM_DEFAULT));
}

void need_l16(Lowp lp, const char *what) {
    if (lp == Lowp::TF32)
        throw CudaError(std::string("internal error: ") + what + " is for bf16 and fp16 (tf32 stores fp32)");
}

void check_fits(const MixedMM &m, size_t acts, size_t weights) {
    if (acts > m.cap || weights > m.wcap)
        throw CudaError("internal error: a mixed-precision product larger than its scratch");
}

}  // namespace

size_t lowp_elem_bytes(Lowp lp) { return lp == Lowp::TF32 ? sizeof(float) : 2; }

void lowp_convert(cudaStream_t st, Lowp lp, void *dst, const float *src, int rows, int cols, int lds) {
    with_lowp(lp, [&](auto f) { convert<decltype(f)>(st, dst, src, rows, cols, lds); });
}

void lowp_convert_flat(cudaStream_t st, Lowp lp, void *dst, const float *src, size_t count) {
    with_lowp(lp, [&](auto f) {
        using F = decltype(f);
        typename F::T *d = static_cast<typename F::T *>(dst);
        convert_flat_kernel<F><<<blocks_for(count / 4 + 1), THREADS, 0, st>>>(d, src, count,
                                                                             aligned16(d) && aligned16(src));
        KERNEL_CHECK("convert_flat_kernel");
    });
}

void lowp_add_rounded(cudaStream_t st, Lowp lp, float *dinp, const float *t, size_t count, bool acc) {
    add_rounded_kernel<<<blocks_for(count / 4 + 1), THREADS, 0, st>>>(lp, dinp, t, count, acc,
                                                                      aligned16(dinp) && aligned16(t));
    KERNEL_CHECK("add_rounded_kernel");
}

void lowp_add_rounded3(cudaStream_t st, Lowp lp, float *dinp, const float *t0, const float *t1, const float *t2,
                       size_t count) {
    const bool vec = aligned16(dinp) && aligned16(t0) && aligned16(t1) && aligned16(t2);
    add_rounded3_kernel<<<blocks_for(count / 4 + 1), THREADS, 0, st>>>(lp, dinp, t0, t1, t2, count, vec);
    KERNEL_CHECK("add_rounded3_kernel");
}

void lowp_round_relu(cudaStream_t st, Lowp lp, const float *x, void *r, size_t count) {
    with_lowp(lp, [&](auto f) {
        using F = decltype(f);
        typename F::T *o = static_cast<typename F::T *>(r);
        round_relu_kernel<F><<<blocks_for(count / 4 + 1), THREADS, 0, st>>>(lp, x, o, count,
                                                                           aligned16(x) && aligned16(o));
        KERNEL_CHECK("round_relu_kernel");
    });
}

void lowp_relu_backward(cudaStream_t st, Lowp lp, void *d, const float *t, const void *y, size_t count) {
    with_lowp(lp, [&](auto f) {
        using F = decltype(f);
        using T = typename F::T;
        T *o = static_cast<T *>(d);
        const T *m = static_cast<const T *>(y);
        // (Quad<T> of bf16 and fp16 is 8 bytes: 16-byte alignment is more than it needs)
        relu_backward_lowp_kernel<F><<<blocks_for(count / 4 + 1), THREADS, 0, st>>>(
            lp, o, t, m, count, aligned16(o) && aligned16(t) && aligned16(m));
        KERNEL_CHECK("relu_backward_lowp_kernel");
    });
}

// out = relu(y) (mask false) or out = its mask applied in place by y's
// sign (mask true), on lp's L values (bf16, fp16)
static void relu_l16(cudaStream_t st, Lowp lp, void *o, const void *y, size_t count, bool mask) {
    need_l16(lp, mask ? "lowp_relu_mask" : "lowp_relu");
    with_lowp(lp, [&](auto f) {
        using F = decltype(f);
        using T = typename F::T;
        T *out = static_cast<T *>(o);
        const T *in = static_cast<const T *>(y);
        const unsigned blocks = blocks_for(count / 4 + 1);
        const bool vec = aligned16(out) && aligned16(in);
        if (mask) {
            relu_mask_lowp_kernel<F><<<blocks, THREADS, 0, st>>>(out, in, count, vec);
            KERNEL_CHECK("relu_mask_lowp_kernel");
        } else {
            relu_lowp_kernel<F><<<blocks, THREADS, 0, st>>>(out, in, count, vec);
            KERNEL_CHECK("relu_lowp_kernel");
        }
    });
}

void lowp_relu(cudaStream_t st, Lowp lp, void *r, const void *y, size_t count) { relu_l16(st, lp, r, y, count, false); }

void lowp_relu_mask(cudaStream_t st, Lowp lp, void *d, const void *y, size_t count) {
    relu_l16(st, lp, d, y, count, true);
}

void lowp_residual_rmsnorm(cudaStream_t st, Lowp lp, float *res, void *ln, float *rstd, const float *p,
                           const float *x, int N, int C, bool norm) {
    with_lowp(lp, [&](auto f) {
        using F = decltype(f);
        with_row_regs(C, [&](auto k) {
            residual_rmsnorm_lowp_kernel<decltype(k)::value, F><<<row_blocks((size_t)N), ROW_THREADS, 0, st>>>(
                lp, res, static_cast<typename F::T *>(ln), rstd, p, x, N, C, norm);
            KERNEL_CHECK("residual_rmsnorm_lowp_kernel");
        });
    });
}

void lowp_rmsnorm_backward(cudaStream_t st, Lowp lp, float *dinp, void *dlp, const float *t0, const float *t1,
                           const float *t2, const float *inp, const float *rstd, int N, int C) {
    with_lowp(lp, [&](auto f) {
        using F = decltype(f);
        with_row_regs(C, [&](auto k) {
            rmsnorm_backward_lowp_kernel<decltype(k)::value, F><<<row_blocks((size_t)N), ROW_THREADS, 0, st>>>(
                lp, dinp, static_cast<typename F::T *>(dlp), t0, t1, t2, inp, rstd, N, C);
            KERNEL_CHECK("rmsnorm_backward_lowp_kernel");
        });
    });
}

void lowp_add_rounded_convert(cudaStream_t st, Lowp lp, float *dinp, void *dlp, const float *t, size_t count) {
    with_lowp(lp, [&](auto f) {
        using F = decltype(f);
        typename F::T *o = static_cast<typename F::T *>(dlp);
        add_rounded_convert_kernel<F><<<blocks_for(count / 4 + 1), THREADS, 0, st>>>(
            lp, dinp, o, t, count, aligned16(dinp) && aligned16(o) && aligned16(t));
        KERNEL_CHECK("add_rounded_convert_kernel");
    });
}

void lowp_round_inplace(cudaStream_t st, Lowp lp, float *x, int rows, int cols, int ld) {
    if (ld == cols) {
        const size_t count = (size_t)rows * cols;
        round_flat_kernel<<<blocks_for(count / 4 + 1), THREADS, 0, st>>>(lp, x, count, aligned16(x));
        KERNEL_CHECK("round_flat_kernel");
    } else {
        round_rows_kernel<<<rows_grid(rows, cols), THREADS, 0, st>>>(lp, x, rows, cols, ld);
        KERNEL_CHECK("round_rows_kernel");
    }
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
void mixed_gemm_forward(const MixedMM &m, float *out, int ldo, const void *a_lp, const void *w_lp, int N, int IC,
                        int OC, bool round) {
    gemm_lowp(m, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, w_lp, IC, a_lp, IC, 0.0f, out, ldo);
    if (round && m.lp != Lowp::TF32) lowp_round_inplace(stream_of(m.h), m.lp, out, N, OC, ldo);
}

void mixed_gemm_dinp(const MixedMM &m, float *t, const void *d_lp, int ldd, const void *w_lp, int N, int IC, int OC) {
    gemm_lowp(m, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, w_lp, IC, d_lp, ldd, 0.0f, t, IC);
}

void mixed_gemm_forward_lp(const MixedMM &m, void *out_lp, int ldo, const void *a_lp, const void *w_lp, int N, int IC,
                           int OC) {
    need_l16(m.lp, "mixed_gemm_forward_lp");
    gemm_lowp(m, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, w_lp, IC, a_lp, IC, 0.0f, out_lp, ldo, true);
}

void mixed_gemm_dinp_lp(const MixedMM &m, void *t_lp, const void *d_lp, int ldd, const void *w_lp, int N, int IC,
                        int OC) {
    need_l16(m.lp, "mixed_gemm_dinp_lp");
    gemm_lowp(m, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, w_lp, IC, d_lp, ldd, 0.0f, t_lp, IC, true);
}

void mixed_gemm_dw(const MixedMM &m, float *dw, bool acc, const void *d_lp, int ldd, const void *a_lp, int N,
                   int IC, int OC) {
    gemm_lowp(m, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, a_lp, IC, d_lp, ldd, acc ? 1.0f : 0.0f, dw, IC);
}

void mixed_matmul_forward(const MixedMM &m, float *out, int ldo, const float *inp, const float *w, int N, int IC,
                          int OC) {
    check_fits(m, (size_t)N * IC, (size_t)OC * IC);
    cudaStream_t st = stream_of(m.h);
    lowp_convert(st, m.lp, m.a, inp, N, IC, IC);
    lowp_convert(st, m.lp, m.w, w, OC, IC, IC);
    mixed_gemm_forward(m, out, ldo, m.a, m.w, N, IC, OC, true);
}

void mixed_matmul_backward(const MixedMM &m, float *dinp, bool acc_dinp, float *dw, bool acc_dw, const float *dout,
                           int ldd, const float *inp, const float *w, int N, int IC, int OC) {
    check_fits(m, (size_t)N * (IC > OC ? IC : OC), (size_t)OC * IC);
    cudaStream_t st = stream_of(m.h);
    lowp_convert(st, m.lp, m.d, dout, N, OC, ldd);   // (N,OC) contiguous
    if (dinp) {
        lowp_convert(st, m.lp, m.w, w, OC, IC, IC);
        mixed_gemm_dinp(m, m.t, m.d, OC, m.w, N, IC, OC);
        lowp_add_rounded(st, m.lp, dinp, m.t, (size_t)N * IC, acc_dinp);
    }
    if (dw) {
        lowp_convert(st, m.lp, m.a, inp, N, IC, IC);
        mixed_gemm_dw(m, dw, acc_dw, m.d, OC, m.a, N, IC, OC);
    }
}

}  // namespace mgpt
