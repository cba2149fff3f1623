// The tiled attention kernels (attention.cu has the design and which shapes
// take them): device code only, so that test_attn_emu.cc can also run it on
// the CPU under tensor_gpu/cuda/emu/ (no GPU needed).
#ifndef TENSOR_GPU_CUDA_ATTENTION_TILED_CUH
#define TENSOR_GPU_CUDA_ATTENTION_TILED_CUH

#include <cstddef>
#include <type_traits>

#include "tensor_gpu/cuda/device_util.cuh"

namespace mgpt {

// tiled: one block per (document, head), the head in shared memory

// How a kernel's outputs (out; dq, dk, dv) are stored: as they are (Same),
// or converted by the recipe's functor for L (lowp_out.cuh), which saves the
// mixed path a conversion pass. Accumulating (acc) needs Same.
template <typename real> struct Same {
    using T = real;
    __device__ real operator()(real x) const { return x; }
};
template <typename real, class Out> constexpr bool same_out = std::is_same<typename Out::T, real>::value;

// Whether the score-like products (q k^T, dout v^T) may fuse their multiply
// and add: Out says so (exact_operands) when every operand of theirs is an L
// value whose products are exact in fp32 (bf16, fp16: lowp_out.cuh), so that
// fma(x, y, acc) rounds once where acc + x*y would round x*y exactly and
// then the sum: the same bits, one instruction instead of two.
template <class Out, class = void> struct ExactOperands : std::false_type {};
template <class Out>
struct ExactOperands<Out, std::void_t<decltype(Out::exact_operands)>> : std::bool_constant<Out::exact_operands> {};

// The value a kernel takes of an input (q, k, v, dout) as it loads it: with
// exact operands the L value (Out::widen(Out(x)): the engine keeps the
// recipe's q, k, v and dout unrounded, and rounding them here saves a pass
// over each), else the input as stored.
template <class Out> struct InputOf {
    template <typename real> __device__ real operator()(real x) const {
        if constexpr (ExactOperands<Out>::value) return Out::widen(Out{}(x));
        else return x;
    }
};

__device__ __forceinline__ float fma_rn(float x, float y, float z) { return __fmaf_rn(x, y, z); }
__device__ __forceinline__ double fma_rn(double x, double y, double z) { return __fma_rn(x, y, z); }

// acc + x*y: fused where the product is exact (Exact), else the
// reference's multiply then add (the kernels build with --fmad=false)
template <bool Exact, typename real> __device__ __forceinline__ real mac(real acc, real x, real y) {
    if constexpr (Exact) return fma_rn(x, y, acc);
    else return acc + x * y;
}

constexpr int TILE = 4;              // each thread's register tile: TILE x TILE outputs
constexpr int TILED_THREADS = 256;   // the most threads per block

__host__ __device__ __forceinline__ int pad4(int x) { return (x + TILE - 1) / TILE * TILE; }

// The shared-memory geometry of a head (P rows: T padded to TILE), in
// three layouts, every row or group 16-byte aligned so that a thread reads
// its four values of a tile with one 16-byte load:
//   rows (P, R), R = HS padded to TILE: the operands read along a row
//     (v, k, q, dout in the weighted sums), x[t][j] at t R + j;
//   quads (P/4 groups of H4 quads): the operands of the score products
//     (q, k; dout, v), x[t][j] at ((t/4) H4 + j) 4 + t%4, so that the four
//     rows of a tile at one j are one load; H4 = HS made odd, so that the
//     groups of different tiles at one j fall on different banks;
//   square (P, S), S = P + TILE: scores, att, dpre (rows 4 apart on
//     different banks).
struct TileDims {
    int P, R, H4, S;
    __host__ __device__ TileDims(int T, int HS) : P(pad4(T)), R(pad4(HS)), H4(HS | 1), S(pad4(T) + TILE) {}
    __host__ __device__ int rows_elems() const { return P * R; }
    __host__ __device__ int quads_elems() const { return P * H4; }
    __host__ __device__ int square_elems() const { return P * S; }
    __host__ __device__ int quad_at(int t, int j) const { return ((t / TILE) * H4 + j) * TILE + t % TILE; }
};

// The document's length, clamped to [0, T] (a longer n would index past the block).
__device__ __forceinline__ int doc_len(const int *n, int b, int T) {
    const int nb = n[b];
    return nb < 0 ? 0 : (nb > T ? T : nb);
}

// put(r, c, get(r, c)) for r < rows, c < cols, the block's threads over the
// elements in order (neighbouring threads, neighbouring columns), each with
// LOAD_UNROLL loads in flight before it stores them (the copies are bound by
// the latency of global memory). (r, c) are stepped, not divided. X: a real
// or a 16-byte vector of them.
constexpr int LOAD_UNROLL = 4;
template <typename X, typename Get, typename Put>
__device__ __forceinline__ void load_matrix(int rows, int cols, Get get, Put put) {
    const int count = rows * cols, st = blockDim.x;
    if (count == 0) return;
    const int dr = st / cols, dc = st % cols;
    int r = threadIdx.x / cols, c = threadIdx.x % cols;
    for (int i0 = threadIdx.x; i0 < count; i0 += LOAD_UNROLL * st) {
        X x[LOAD_UNROLL];
        int rr[LOAD_UNROLL], cc[LOAD_UNROLL];
#pragma unroll
        for (int u = 0; u < LOAD_UNROLL; u++) {
            rr[u] = r;
            cc[u] = c;
            x[u] = r < rows ? get(r, c) : X{};
            r += dr;
            c += dc;
            if (c >= cols) {
                c -= cols;
                r++;
            }
        }
#pragma unroll
        for (int u = 0; u < LOAD_UNROLL; u++)
            if (i0 + u * st < count) put(rr[u], cc[u], x[u]);
    }
}

// 16-byte loads: N reals at a time, where the rows allow it.
template <typename real> struct Vec16;
template <> struct Vec16<float> {
    using V = float4;
    static constexpr int N = 4;
    __device__ static float at(const V &v, int e) { return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w; }
    __device__ static V make(const float *x) { return V{x[0], x[1], x[2], x[3]}; }
};
template <> struct Vec16<double> {
    using V = double2;
    static constexpr int N = 2;
    __device__ static double at(const V &v, int e) { return e == 0 ? v.x : v.y; }
    __device__ static V make(const double *x) { return V{x[0], x[1]}; }
};
// rows starting at src with a stride of ld reals are all 16-byte aligned
template <typename real> __device__ __forceinline__ bool aligned16(const real *src, size_t ld) {
    return (reinterpret_cast<size_t>(src) % 16 == 0) && ld % Vec16<real>::N == 0;
}

// The TILE reals of shared memory at p (a multiple of TILE reals from the
// 16-byte aligned start), in 16-byte accesses.
template <typename real> __device__ __forceinline__ void lds4(real (&x)[TILE], const real *p) {
    using W = Vec16<real>;
#pragma unroll
    for (int i = 0; i < TILE / W::N; i++) {
        const typename W::V v = reinterpret_cast<const typename W::V *>(p)[i];
#pragma unroll
        for (int e = 0; e < W::N; e++) x[i * W::N + e] = W::at(v, e);
    }
}
template <typename real> __device__ __forceinline__ void sts4(real *p, const real (&x)[TILE]) {
    using W = Vec16<real>;
#pragma unroll
    for (int i = 0; i < TILE / W::N; i++) reinterpret_cast<typename W::V *>(p)[i] = W::make(x + i * W::N);
}

// dst (rows layout) = rows [0, nb) of the head slice src (row stride ld, HS
// columns), each value stored as cv(x) (X: real, or the L type of the
// recipe's exact operands, which holds their values exactly); 0 in rows
// nb..pad4(nb)-1 and columns HS..R-1, which whole tiles read. Rows from
// pad4(nb) on are never read. 16-byte loads when HS is a multiple of 4 (no
// padding columns) and the rows are aligned.
template <typename X, typename real, class Cv = Same<real>>
__device__ void load_rows(X *dst, const real *src, int ld, int nb, int HS, const TileDims &d, Cv cv = Cv{}) {
    using W = Vec16<real>;
    if (HS % TILE == 0 && aligned16(src, ld)) {
        load_matrix<typename W::V>(
            pad4(nb), HS / W::N,
            [=](int r, int c) {
                return r < nb ? *reinterpret_cast<const typename W::V *>(src + (size_t)r * ld + c * W::N)
                              : typename W::V{};
            },
            [=](int r, int c, const typename W::V &x) {
                if constexpr (std::is_same<X, real>::value) {
                    real y[W::N];
#pragma unroll
                    for (int e = 0; e < W::N; e++) y[e] = cv(W::at(x, e));
                    *reinterpret_cast<typename W::V *>(dst + r * d.R + c * W::N) = W::make(y);
                } else {
                    static_assert(W::N == QUAD, "L operands are fp32 values, four to a 16-byte load");
                    Quad<X> y;
#pragma unroll
                    for (int e = 0; e < QUAD; e++) y.v[e] = cv(W::at(x, e));
                    *reinterpret_cast<Quad<X> *>(dst + r * d.R + c * W::N) = y;
                }
            });
        return;
    }
    load_matrix<real>(
        pad4(nb), d.R, [=](int r, int c) { return r < nb && c < HS ? src[(size_t)r * ld + c] : (real)0; },
        [=](int r, int c, real x) { dst[r * d.R + c] = cv(x); });
}

// lds4 from a rows matrix of X (real, or L values, widened exactly by Out)
template <class Out, typename X, typename real> __device__ __forceinline__ void lds4_as(real (&x)[TILE], const X *p) {
    if constexpr (std::is_same<X, real>::value) {
        lds4(x, p);
    } else {
        const Quad<X> q = *reinterpret_cast<const Quad<X> *>(p);
#pragma unroll
        for (int e = 0; e < TILE; e++) x[e] = Out::widen(q.v[e]);
    }
}

// Out's TILE values of o at p (global memory): one access where vec (p
// aligned to the whole quad), else TILE.
template <class Out, typename real>
__device__ __forceinline__ void store4(typename Out::T *p, const real (&o)[TILE], bool vec, Out cv) {
    using T = typename Out::T;
    if (vec) {
        Quad<T> q;
#pragma unroll
        for (int c = 0; c < TILE; c++) q.v[c] = cv(o[c]);
        *reinterpret_cast<Quad<T> *>(p) = q;
    } else {
#pragma unroll
        for (int c = 0; c < TILE; c++) p[c] = cv(o[c]);
    }
}
// whether rows of Out::T at dst with stride ld take store4's single access
template <typename T> __device__ __forceinline__ bool quad_rows(const T *dst, int ld, int HS) {
    return HS % TILE == 0 && ld % TILE == 0 && reinterpret_cast<size_t>(dst) % sizeof(Quad<T>) == 0;
}

// dst (quads layout) = the same rows [0, nb) of src, each value as cv(x),
// 0 in rows up to pad4(nb) (columns j < HS only: the score products run over
// j < HS). Neighbouring threads take neighbouring rows, whose stores fall on
// different banks.
template <typename real, class Cv = Same<real>>
__device__ void load_quads(real *dst, const real *src, int ld, int nb, int HS, const TileDims &d, Cv cv = Cv{}) {
    using W = Vec16<real>;
    if (HS % TILE == 0 && aligned16(src, ld)) {
        load_matrix<typename W::V>(
            HS / W::N, pad4(nb),
            [=](int c, int t) {
                return t < nb ? *reinterpret_cast<const typename W::V *>(src + (size_t)t * ld + c * W::N)
                              : typename W::V{};
            },
            [=](int c, int t, const typename W::V &x) {
#pragma unroll
                for (int e = 0; e < W::N; e++) dst[d.quad_at(t, c * W::N + e)] = cv(W::at(x, e));
            });
        return;
    }
    load_matrix<real>(
        HS, pad4(nb), [=](int j, int t) { return t < nb ? src[(size_t)t * ld + j] : (real)0; },
        [=](int j, int t, real x) { dst[d.quad_at(t, j)] = cv(x); });
}

// dst (square) = the causal part (s <= t < nb) of the (T, T) matrix src; 0
// elsewhere up to pad4(nb) (above the diagonal, padded rows), so that
// products over s or t may run over whole tiles. 16-byte loads when T is a
// multiple of 4 and src aligned: they read the whole of rows t < nb up to
// pad4(nb) <= T, so those must have been written (att is whole; the dpre
// scratch's rows t < n[b] are written whole by the dq kernel).
template <typename real>
__device__ void load_causal(real *dst, const real *src, int T, int nb, const TileDims &d) {
    using W = Vec16<real>;
    if (T % TILE == 0 && aligned16(src, (size_t)T)) {
        load_matrix<typename W::V>(
            pad4(nb), pad4(nb) / W::N,
            [=](int t, int c) {
                return t < nb ? *reinterpret_cast<const typename W::V *>(src + (size_t)t * T + c * W::N)
                              : typename W::V{};
            },
            [=](int t, int c, const typename W::V &x) {
                real y[W::N];
#pragma unroll
                for (int e = 0; e < W::N; e++) {
                    const int s = c * W::N + e;
                    y[e] = t < nb && s <= t ? W::at(x, e) : (real)0;
                }
                *reinterpret_cast<typename W::V *>(dst + t * d.S + c * W::N) = W::make(y);
            });
        return;
    }
    load_matrix<real>(
        pad4(nb), pad4(nb), [=](int t, int s) { return t < nb && s <= t ? src[(size_t)t * T + s] : (real)0; },
        [=](int t, int s, real x) { dst[t * d.S + s] = x; });
}

// The tile (ti, si) of number idx on or below the diagonal: idx = ti(ti+1)/2 + si, si <= ti.
__device__ __forceinline__ void lower_tile(int idx, int &ti, int &si) {
    int r = (int)((sqrtf(8.0f * (float)idx + 1.0f) - 1.0f) * 0.5f);
    while (r * (r + 1) / 2 > idx) r--;
    while ((r + 1) * (r + 2) / 2 <= idx) r++;
    ti = r;
    si = idx - r * (r + 1) / 2;
}

// The lower tiles of a product of NT tile rows (the tiles on or below the diagonal).
__host__ __device__ __forceinline__ int lower_tiles(int NT) { return NT * (NT + 1) / 2; }

// The weighted sums run over the causal triangle, so tile row ti has work
// in proportion to ti + 1 (att @ v, dpre @ k) or NT - ti (dk, dv): a thread
// takes the pair of tile rows (pr, NT-1-pr) one after the other, and every
// thread the same work (the middle row alone when NT is odd).
__host__ __device__ __forceinline__ int row_pairs(int NT) { return (NT + 1) / 2; }
__device__ __forceinline__ int pair_row(int pr, int half, int NT) { return half == 0 ? pr : NT - 1 - pr; }

// The compact layouts: when every thread of the block holds at most one tile
// (or pair of tiles) of a product (decided by T and the block's size, never
// by n[b], so that the host sizes the shared memory the same way:
// attention.cu), a product may overwrite one of its own inputs
// (tiles_abt_in_place), and dkv keeps its accumulators in registers (one
// thread a pair of dk tiles or of dv tiles). Fewer bytes per block, more
// blocks per SM.
__host__ __device__ __forceinline__ bool scores_compact(int T, int threads) {
    return lower_tiles(pad4(T) / TILE) <= threads;
}
__host__ __device__ __forceinline__ bool dkv_compact(int T, int HS, int threads) {
    return 2 * row_pairs(pad4(T) / TILE) * (pad4(HS) / TILE) <= threads;
}

// acc = the tile (ti, si) of a b^T (a, b quads): acc[r][c] = sum_j
// a[4ti+r][j] b[4si+c][j], j ascending from 0 (as the reference's dot
// products); one 16-byte load of each operand per j.
template <bool Exact, typename real>
__device__ __forceinline__ void tile_abt(real (&acc)[TILE][TILE], const real *a, const real *b, int ti, int si, int HS,
                                         const TileDims &d) {
    const real *ap = a + ti * d.H4 * TILE, *bp = b + si * d.H4 * TILE;
    for (int r = 0; r < TILE; r++)
        for (int c = 0; c < TILE; c++) acc[r][c] = 0;
    for (int j = 0; j < HS; j++) {
        real x[TILE], y[TILE];
        lds4(x, ap + j * TILE);
        lds4(y, bp + j * TILE);
        for (int r = 0; r < TILE; r++)
            for (int c = 0; c < TILE; c++) acc[r][c] = mac<Exact>(acc[r][c], x[r], y[c]);
    }
}

template <typename real>
__device__ __forceinline__ void store_tile(real *out, const real (&acc)[TILE][TILE], int ti, int si, real mul,
                                           const TileDims &d) {
    real *o = out + ti * TILE * d.S + si * TILE;
    for (int r = 0; r < TILE; r++) {
        real x[TILE];
        for (int c = 0; c < TILE; c++) x[c] = acc[r][c] * mul;
        sts4(o + r * d.S, x);
    }
}

// out (square): out[t][s] = (sum_j a[t][j] b[s][j]) * mul for the tiles on or
// below the diagonal of rows < nb (a, b quads). Entries above the diagonal
// inside a diagonal tile are computed too; the row pass overwrites them.
template <bool Exact, typename real>
__device__ void tiles_abt(real *out, const real *a, const real *b, int nb, int HS, real mul, const TileDims &d) {
    const int NT = (nb + TILE - 1) / TILE;
    for (int idx = threadIdx.x; idx < lower_tiles(NT); idx += blockDim.x) {
        int ti, si;
        lower_tile(idx, ti, si);
        real acc[TILE][TILE];
        tile_abt<Exact>(acc, a, b, ti, si, HS, d);
        store_tile(out, acc, ti, si, mul, d);
    }
}

// tiles_abt where out may overlap a or b (scores_compact: at most one tile
// per thread): every tile is computed, then, after a barrier (every thread
// of the block must call this), stored.
template <bool Exact, typename real>
__device__ void tiles_abt_in_place(real *out, const real *a, const real *b, int nb, int HS, real mul,
                                   const TileDims &d) {
    const int NT = (nb + TILE - 1) / TILE, idx = threadIdx.x;
    const bool mine = idx < lower_tiles(NT);
    int ti = 0, si = 0;
    real acc[TILE][TILE];
    if (mine) {
        lower_tile(idx, ti, si);
        tile_abt<Exact>(acc, a, b, ti, si, HS, d);
    }
    __syncthreads();
    if (mine) store_tile(out, acc, ti, si, mul, d);
}

// dst[t][j] (+)= sum_{s <= t} p[t][s] x[s][j] for t < nb, j < HS (dst in
// global memory, row stride ldd; acc: starting from dst, as the reference
// adds into it; else from 0). p (square) is 0 above the diagonal and on rows
// >= nb, x (rows) 0 on rows nb..pad4(nb)-1. A thread's tiles are 4 rows by
// the 4 columns 4jc..4jc+3, for the pair of tile rows of row_pairs; s
// ascends from 0 in whole tiles up to the tile's last row (the terms past
// t add p = 0 times x), as in the reference.
template <typename real, class Out>
__device__ void tiles_pv(typename Out::T *dst, int ldd, bool acc, const real *p, const real *x, int nb, int HS,
                         const TileDims &d, Out cv) {
    const int NT = (nb + TILE - 1) / TILE, JW = d.R / TILE;
    const bool vec = quad_rows(dst, ldd, HS);
    for (int idx = threadIdx.x; idx < row_pairs(NT) * JW; idx += blockDim.x) {
        const int pr = idx / JW, jc = idx % JW;
        for (int half = 0; half < 2; half++) {
            const int ti = pair_row(pr, half, NT), t0 = ti * TILE;
            if (half == 1 && ti == pr) break;   // the middle row of an odd NT: done
            real o[TILE][TILE];
#pragma unroll
            for (int r = 0; r < TILE; r++)
#pragma unroll
                for (int c = 0; c < TILE; c++) {
                    const int t = t0 + r, j = jc * TILE + c;
                    if constexpr (same_out<real, Out>)
                        o[r][c] = acc && t < nb && j < HS ? dst[(size_t)t * ldd + j] : (real)0;
                    else o[r][c] = 0;
                }
            for (int s0 = 0; s0 <= t0; s0 += TILE) {
                real w[TILE][TILE];
                for (int r = 0; r < TILE; r++) lds4(w[r], p + (t0 + r) * d.S + s0);
                for (int u = 0; u < TILE; u++) {
                    real y[TILE];
                    lds4(y, x + (s0 + u) * d.R + jc * TILE);
                    for (int r = 0; r < TILE; r++)
                        for (int c = 0; c < TILE; c++) o[r][c] += w[r][u] * y[c];
                }
            }
#pragma unroll
            for (int r = 0; r < TILE; r++) {
                const int t = t0 + r;
                if (t >= nb) continue;
                if (vec) store4(dst + (size_t)t * ldd + jc * TILE, o[r], true, cv);
                else
                    for (int c = 0; c < TILE; c++)
                        if (jc * TILE + c < HS) dst[(size_t)t * ldd + jc * TILE + c] = cv(o[r][c]);
            }
        }
    }
}

// Rows [r0, r1) of a head slice (HS columns, row stride ld) set to zero.
template <typename T> __device__ void zero_rows(T *dst, int ld, int r0, int r1, int HS, T zero) {
    for (int i = threadIdx.x; i < (r1 - r0) * HS; i += blockDim.x) dst[(size_t)(r0 + i / HS) * ld + i % HS] = zero;
}

// Forward, one block per (b, h): S = q k^T * scale (lower tiles), then per
// row (one warp) the causal softmax into S and att, then out = S v.
template <typename real, class Out = Same<real>>
__global__ void __launch_bounds__(TILED_THREADS, sizeof(real) == 4 ? 4 : 1)
attention_forward_tiled_kernel(typename Out::T *out, real *att, const real *q, int ldq, const real *k, const real *v,
                               int ldkv, const int *n, int T, int NH, int NKV, int HS, real scale,
                               real *scores_out = nullptr) {
    extern __shared__ __align__(16) unsigned char smem_bytes[];
    constexpr bool exact = ExactOperands<Out>::value;
    const TileDims d(T, HS);
    const int b = blockIdx.x / NH, h = blockIdx.x % NH, nb = doc_len(n, b, T);
    const int C = NH * HS, kvo = (h / (NH / NKV)) * HS;
    // compact: S over Q (Q's slot as large as either); else Q, K, V, S
    const bool compact = scores_compact(T, blockDim.x);
    const int hq = d.quads_elems(), slot = compact && d.square_elems() > hq ? d.square_elems() : hq;
    real *Q = reinterpret_cast<real *>(smem_bytes), *K = Q + slot, *V = K + hq;
    real *S = compact ? Q : V + d.rows_elems();
    const InputOf<Out> in;
    load_quads(Q, q + (size_t)b * T * ldq + h * HS, ldq, nb, HS, d, in);
    load_quads(K, k + (size_t)b * T * ldkv + kvo, ldkv, nb, HS, d, in);
    load_rows(V, v + (size_t)b * T * ldkv + kvo, ldkv, nb, HS, d, in);
    __syncthreads();
    if (compact) tiles_abt_in_place<exact>(S, Q, K, nb, HS, scale, d);
    else tiles_abt<exact>(S, Q, K, nb, HS, scale, d);
    __syncthreads();
    const int lane = threadIdx.x % WARP;
    real *ab = att + (size_t)blockIdx.x * T * T;   // (T,T) of (b,h)
    // scores_out (reporting: common/activations.h): the scaled scores, 0 above the diagonal and on padding
    real *sb = scores_out ? scores_out + (size_t)blockIdx.x * T * T : nullptr;
    for (int t = threadIdx.x / WARP; t < d.P; t += blockDim.x / WARP) {   // whole warps per row
        real *sr = S + t * d.S;
        real *ar = t < T ? ab + (size_t)t * T : nullptr;
        if (t >= nb) {   // padding (and the pad rows of S)
            for (int s = lane; s < d.P; s += WARP) {
                sr[s] = 0;
                if (ar && s < T) ar[s] = 0;
                if (sb && t < T && s < T) sb[(size_t)t * T + s] = 0;
            }
            continue;
        }
        if (sb)
            for (int s = lane; s < T; s += WARP) sb[(size_t)t * T + s] = s <= t ? sr[s] : (real)0;
        real mx = neg_inf<real>();
        for (int s = lane; s <= t; s += WARP) mx = sr[s] > mx ? sr[s] : mx;
        mx = warp_max(mx);   // finite: key 0 is always there
        real sum = 0;
        for (int s = lane; s <= t; s += WARP) {
            const real e = r_exp(sr[s] - mx);
            sr[s] = e;
            sum += e;
        }
        const real inv = (real)1 / warp_sum(sum);
        for (int s = lane; s < d.P; s += WARP) {
            const real a = s <= t ? sr[s] * inv : (real)0;
            sr[s] = a;
            if (s < T) ar[s] = a;
        }
    }
    __syncthreads();
    const Out cv;
    typename Out::T *ob = out + (size_t)b * T * C + h * HS;   // (T,HS) of row stride C
    tiles_pv(ob, C, false, S, V, nb, HS, d, cv);
    zero_rows(ob, C, nb, T, HS, cv((real)0));
}

// Backward 1, one block per (b, h): D = dout v^T (lower tiles); per row (one
// warp) wsum = sum_s att[s] D[s] and dpre[s] = att[s] (D[s] - wsum) scale,
// into D and the dpre scratch (rows < nb, 0 above the diagonal); then dq
// (+)= D k.
template <typename real, class Out = Same<real>>
__global__ void __launch_bounds__(TILED_THREADS, sizeof(real) == 4 ? 4 : 1)
attention_backward_dq_tiled_kernel(typename Out::T *dq, int lddq, real *dpre, const real *dout, const real *att,
                                   const real *k, const real *v, int ldkv, const int *n, int T, int NH, int NKV,
                                   int HS, real scale, bool acc, real *datt_out = nullptr) {
    extern __shared__ __align__(16) unsigned char smem_bytes[];
    constexpr bool exact = ExactOperands<Out>::value;
    const TileDims d(T, HS);
    const int b = blockIdx.x / NH, h = blockIdx.x % NH, nb = doc_len(n, b, T);
    const int C = NH * HS, kvo = (h / (NH / NKV)) * HS;
    // compact: K, V, and D over dO; the row pass reads att from global
    // memory. Else K, V, dO, A (att's causal part), D.
    // (dO last: in the compact layout its slot is as large as D)
    const bool compact = scores_compact(T, blockDim.x);
    const int hq = d.quads_elems();
    real *K = reinterpret_cast<real *>(smem_bytes), *V = K + d.rows_elems(), *dO = V + hq;
    real *A = compact ? nullptr : dO + hq, *D = compact ? dO : A + d.square_elems();
    const size_t ao = (size_t)blockIdx.x * T * T;   // (T,T) of (b,h) in att and dpre
    const InputOf<Out> in;
    load_rows(K, k + (size_t)b * T * ldkv + kvo, ldkv, nb, HS, d, in);
    load_quads(V, v + (size_t)b * T * ldkv + kvo, ldkv, nb, HS, d, in);
    load_quads(dO, dout + (size_t)b * T * C + h * HS, C, nb, HS, d, in);
    if (!compact) load_causal(A, att + ao, T, nb, d);
    __syncthreads();
    if (compact) tiles_abt_in_place<exact>(D, dO, V, nb, HS, (real)1, d);
    else tiles_abt<exact>(D, dO, V, nb, HS, (real)1, d);
    __syncthreads();
    const int lane = threadIdx.x % WARP;
    for (int t = threadIdx.x / WARP; t < d.P; t += blockDim.x / WARP) {   // whole warps per row
        real *dr = D + t * d.S;
        const real *ar = compact ? att + ao + (size_t)(t < T ? t : 0) * T : A + t * d.S;   // read at s <= t < nb only
        // datt_out (reporting): the softmax output's gradient dout.v, 0 above the diagonal and on padding
        real *gr = datt_out && t < T ? datt_out + ao + (size_t)t * T : nullptr;
        if (t >= nb) {   // padded rows add nothing
            for (int s = lane; s < d.P; s += WARP) dr[s] = 0;
            if (gr)
                for (int s = lane; s < T; s += WARP) gr[s] = 0;
            continue;
        }
        if (gr)
            for (int s = lane; s < T; s += WARP) gr[s] = s <= t ? dr[s] : (real)0;
        real w = 0;
        for (int s = lane; s <= t; s += WARP) w += ar[s] * dr[s];
        const real wsum = warp_sum(w);
        real *pr = dpre + ao + (size_t)t * T;
        for (int s = lane; s < d.P; s += WARP) {
            const real g = s <= t ? ar[s] * (dr[s] - wsum) * scale : (real)0;
            dr[s] = g;
            if (s < T) pr[s] = g;   // whole rows: the dkv kernel's 16-byte loads read them
        }
    }
    __syncthreads();
    const Out cv;
    if constexpr (!same_out<real, Out>) acc = false;   // converted outputs are written, not added to
    typename Out::T *dqb = dq + (size_t)b * T * lddq + h * HS;
    tiles_pv(dqb, lddq, acc, D, K, nb, HS, d, cv);
    if (!acc) zero_rows(dqb, lddq, nb, T, HS, cv((real)0));
}

// One dk or dv tile, key rows s0..s0+3 by columns 4jc..4jc+3, accumulating
// one query head: g[r][c] += sum_{s0 <= t < nb} pw[t][s0+r] x[t][4jc+c]
// (dk: pw = dpre, x = q; dv: pw = att, x = dout), t ascending (att and dpre
// are 0 for t < s, so the queries below the tile's first row add nothing and
// are skipped).
template <class Out, typename X, typename real>
__device__ __forceinline__ void dkv_tile(real (&g)[TILE][TILE], const real *pw, const X *x, int s0, int jc, int nb,
                                         const TileDims &d) {
    for (int t = s0; t < nb; t++) {
        real a[TILE], y[TILE];
        lds4(a, pw + t * d.S + s0);
        lds4_as<Out>(y, x + t * d.R + jc * TILE);
        for (int r = 0; r < TILE; r++)
            for (int c = 0; c < TILE; c++) g[r][c] += a[r] * y[c];
    }
}

// Backward 2, one block per (b, kv head g): for each of its query heads in
// order, dk[s] += sum_{s <= t < nb} dpre[t][s] q[t] and dv[s] += sum_t
// att[t][s] dout[t], each 4 x 4 tile of the accumulators owned by one
// thread: in its registers when every thread has at most one pair of dk or
// dv tiles (dkv_compact: Q, dO, A, Pd in shared memory; the first half of
// the threads dk, the second dv), else in (rows) shared-memory accumulators
// dK, dV; then written out (rows >= nb: 0, or kept with acc). With exact
// operands (the recipe's bf16, fp16) q and dout are L values and sit in
// shared memory in L (exactly; half the bytes: four blocks an SM at e512
// instead of three, one wave of blocks instead of two).
template <typename real, class Out>
using DkvOperand = std::conditional_t<ExactOperands<Out>::value, typename Out::T, real>;
template <typename real, class Out> constexpr int dkv_blocks_per_sm() {
    return sizeof(real) == 8 ? 1 : ExactOperands<Out>::value ? 4 : 3;
}

template <typename real, class Out = Same<real>>
__global__ void __launch_bounds__(TILED_THREADS, dkv_blocks_per_sm<real, Out>())
attention_backward_dkv_tiled_kernel(typename Out::T *dk, typename Out::T *dv, int lddkv, const real *dpre, const real *att,
                                    const real *dout, const real *q, int ldq, const int *n, int T, int NH, int NKV,
                                    int HS, bool acc) {
    extern __shared__ __align__(16) unsigned char smem_bytes[];
    const TileDims d(T, HS);
    const int b = blockIdx.x / NKV, g = blockIdx.x % NKV, nb = doc_len(n, b, T);
    const int C = NH * HS, group = NH / NKV;
    const bool compact = dkv_compact(T, HS, blockDim.x);
    using X = DkvOperand<real, Out>;
    X *Q = reinterpret_cast<X *>(smem_bytes), *dO = Q + d.rows_elems();
    real *A = reinterpret_cast<real *>(dO + d.rows_elems());
    real *Pd = A + d.square_elems(), *dK = compact ? nullptr : Pd + d.square_elems();
    real *dV = compact ? nullptr : dK + d.rows_elems();
    const Out cv;
    if constexpr (!same_out<real, Out>) acc = false;   // converted outputs are written, not added to
    typename Out::T *dkb = dk + (size_t)b * T * lddkv + g * HS, *dvb = dv + (size_t)b * T * lddkv + g * HS;
    const int NT = (nb + TILE - 1) / TILE, JW = d.R / TILE, NPJ = row_pairs(NT) * JW, npj = NPJ > 0 ? NPJ : 1;
    // compact: this thread's role (dk or dv), pair of tiles and their
    // accumulators (the gradients so far with acc, else 0)
    const int tid = threadIdx.x, role = tid < NPJ ? 0 : 1, pr = (tid % npj) / JW, jcm = tid % JW;
    const bool mine = compact && tid < 2 * NPJ;
    typename Out::T *mydst = role == 0 ? dkb : dvb;
    const bool vec = quad_rows(dkb, lddkv, HS) && quad_rows(dvb, lddkv, HS);
    real gr[2][TILE][TILE];   // (every index known at compile time: registers)
#pragma unroll
    for (int half = 0; half < 2; half++)
#pragma unroll
        for (int r = 0; r < TILE; r++)
#pragma unroll
            for (int c = 0; c < TILE; c++) {
                const int s = pair_row(pr, half, NT) * TILE + r, j = jcm * TILE + c;
                gr[half][r][c] = 0;
                if constexpr (same_out<real, Out>)
                    if (mine && acc && s < nb && j < HS) gr[half][r][c] = mydst[(size_t)s * lddkv + j];
            }
    if (!compact) {
        if constexpr (same_out<real, Out>) {
            if (acc) {
                load_rows(dK, dkb, lddkv, nb, HS, d);
                load_rows(dV, dvb, lddkv, nb, HS, d);
            }
        }
        if (!acc) {
            load_matrix<real>(pad4(nb), d.R, [](int, int) { return (real)0; },
                              [=](int r, int c, real x) { dK[r * d.R + c] = dV[r * d.R + c] = x; });
        }
    }
    for (int h = g * group; h < (g + 1) * group; h++) {
        __syncthreads();   // the previous head's products are done with Q, dO, A, Pd
        const size_t ao = ((size_t)b * NH + h) * T * T;
        if constexpr (std::is_same<X, real>::value) {
            const InputOf<Out> in;
            load_rows(Q, q + (size_t)b * T * ldq + h * HS, ldq, nb, HS, d, in);
            load_rows(dO, dout + (size_t)b * T * C + h * HS, C, nb, HS, d, in);
        } else {   // (L values: rounded by cv as they are stored)
            load_rows(Q, q + (size_t)b * T * ldq + h * HS, ldq, nb, HS, d, cv);
            load_rows(dO, dout + (size_t)b * T * C + h * HS, C, nb, HS, d, cv);
        }
        load_causal(A, att + ao, T, nb, d);
        load_causal(Pd, dpre + ao, T, nb, d);
        __syncthreads();
        if (compact) {
            if (mine) {
                const real *pw = role == 0 ? Pd : A;
                const X *x = role == 0 ? Q : dO;
                dkv_tile<Out>(gr[0], pw, x, pair_row(pr, 0, NT) * TILE, jcm, nb, d);
                if (pair_row(pr, 1, NT) != pr) dkv_tile<Out>(gr[1], pw, x, pair_row(pr, 1, NT) * TILE, jcm, nb, d);
            }
            continue;
        }
        for (int idx = tid; idx < 2 * NT * JW; idx += blockDim.x) {   // gr[0]: the tile's, in turn
            const int ro = idx / (NT * JW), s0 = (idx % (NT * JW)) / JW * TILE, jc = idx % JW;
            real *acc_m = ro == 0 ? dK : dV;
            for (int r = 0; r < TILE; r++)
                for (int c = 0; c < TILE; c++) gr[0][r][c] = acc_m[(s0 + r) * d.R + jc * TILE + c];
            dkv_tile<Out>(gr[0], ro == 0 ? Pd : A, ro == 0 ? Q : dO, s0, jc, nb, d);
            for (int r = 0; r < TILE; r++)
                for (int c = 0; c < TILE; c++) acc_m[(s0 + r) * d.R + jc * TILE + c] = gr[0][r][c];
        }
    }
    if (compact) {
        if (mine)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int ti = pair_row(pr, half, NT);
                if (half == 1 && ti == pr) continue;
#pragma unroll
                for (int r = 0; r < TILE; r++) {
                    const int s = ti * TILE + r;
                    if (s >= nb) continue;
                    if (vec) store4(mydst + (size_t)s * lddkv + jcm * TILE, gr[half][r], true, cv);
                    else
#pragma unroll
                        for (int c = 0; c < TILE; c++)
                            if (jcm * TILE + c < HS) mydst[(size_t)s * lddkv + jcm * TILE + c] = cv(gr[half][r][c]);
                }
            }
        if (!acc) {
            zero_rows(dkb, lddkv, nb, T, HS, cv((real)0));
            zero_rows(dvb, lddkv, nb, T, HS, cv((real)0));
        }
        return;
    }
    __syncthreads();
    for (int i = tid; i < T * HS; i += blockDim.x) {
        const int r = i / HS, c = i % HS;
        if (r < nb) {
            dkb[(size_t)r * lddkv + c] = cv(dK[r * d.R + c]);
            dvb[(size_t)r * lddkv + c] = cv(dV[r * d.R + c]);
        } else if (!acc) {
            dkb[(size_t)r * lddkv + c] = cv((real)0);
            dvb[(size_t)r * lddkv + c] = cv((real)0);
        }
    }
}

}  // namespace mgpt

#endif
