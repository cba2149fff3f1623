// Causal grouped-query attention, forward and backward (the contract is in
// kernels.cuh and tensor_gpu/layers.h; tensor_gpu/cpu/layers.c is the
// reference). Two implementations of each:
//
//   tiled (the default): one thread block per (document b, head). The
//     block copies the head's rows t < n[b] of q, k, v (backward: k, v,
//     dout, att; then q, dout, att, dpre) into shared memory, zero-padded to
//     a multiple of 4 rows and columns, and computes the T x T products with
//     each thread owning a 4 x 4 register tile (only the tiles on or below
//     the diagonal, only the rows of the document; the weighted sums give a
//     thread a pair of tile rows, one short and one long, so that every
//     thread has the same work), reading each operand's four values at one
//     step with one 16-byte shared load; the softmax and its backward take
//     one warp per row. Work and traffic scale with n[b], not T.
//   rows (the fallback): one warp per query row (dkv: per key row), reading
//     q, k, v from global memory; no shared memory.
//
// Which runs (attention_forward_path / attention_backward_path): the tiled
// kernels whenever their shared memory fits the device's opt-in limit per
// block (queried once per precision; 227 KiB on an H100/H200), i.e. with
// P = 4*ceil(T/4), R = 4*ceil(HS/4), H4 = HS made odd, S = P + 4 and
// elements of 4 (fp32) or 8 (fp64) bytes, hr = P R (rows layout), hq = P H4
// (quads layout, the score products' operands), ss = P S (attention_tiled.cuh):
//   forward 2 hq + hr + ss, dq 2 hq + hr + 2 ss, dkv 4 hr + 2 ss (the
//   recipe's bf16 and fp16 dkv keep q and dout in L: 2-byte elements); and in the
//   compact layouts (attention_tiled.cuh: when every thread of the block
//   holds at most one tile, or pair of tiles, e.g. T <= 64 at 256 threads)
//   forward hq + hr + max(hq, ss) (the scores over q), dq the same (datt
//   over dout, att read from global memory), dkv 2 hr + 2 ss (the
//   accumulators in registers).
// At the bench's e512 (T 64, HS 64, fp32) that is 49, 49 and 66 KiB (the
// recipe's bf16 dkv 50 KiB): four, four and three (bf16: four) blocks an
// SM, and the registers are bounded to match
// (__launch_bounds__). Longer blocks (T 256 always) and heads too wide for
// the limit run on the rows kernels, which take any T and HS. The backward
// picks its two kernels together (both tiled or both rows).
//
// Rounding (--fmad=false): every dot product (scores, dout.v) and every
// weighted sum (att @ v, dpre @ k) is summed by one thread in the reference's
// order (j, then s, ascending), so they carry the reference's bits given the
// same inputs (the recipe's bf16 and fp16 kernels round q, k, v and dout to
// L as they load them, and fuse the dot products' multiply and add, exact on
// those L values: lowp_out.cuh); the softmax's
// sum of exponentials and the backward's row sum
// use a warp's fixed butterfly, and dk, dv sum the positions of one query
// head at a time (the reference interleaves the heads). No atomics: the same
// inputs give the same bits on every run.
#include "tensor_gpu/cuda/kernels.cuh"

#include <cmath>
#include <string>

#include "tensor_gpu/cuda/cuda_check.cuh"
#include "tensor_gpu/cuda/attention_tiled.cuh"
#include "tensor_gpu/cuda/device_util.cuh"
#include "tensor_gpu/cuda/lowp_out.cuh"
#include "tensor_gpu/cuda/mixed.cuh"

namespace mgpt {

// ---------------------------------------------------------------------------
// rows: one warp per row (the fallback for shapes the tiled kernels cannot hold)

// One warp per query row (b, h, t). Keys s <= t are taken 32 at a time, one per
// lane: the lane's score, then the chunk's max and sum of exponentials folded
// into the running max m and sum l (online softmax), and the running output
// rescaled by exp(m_old - m_new). Lane j%32 owns out[j] and lane s%32 owns
// att[s]. The scores are kept in att and turned into weights at the end.
template <typename real>
__global__ void attention_forward_rows_kernel(real *out, real *att, const real *q, int ldq, const real *k,
                                         const real *v, int ldkv, const int *n, int B, int T, int NH,
                                         int NKV, int HS, real scale, real *scores_out) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    const int lane = threadIdx.x % WARP;
    if (row >= (size_t)B * NH * T) return;
    const int t = (int)(row % T), h = (int)(row / T % NH), b = (int)(row / ((size_t)T * NH));
    const int C = NH * HS, kvo = (h / (NH / NKV)) * HS;
    real *a = att + row * T;                                 // (T) rows are (b,h,t)
    real *o = out + ((size_t)b * T + t) * C + h * HS;        // (HS)
    real *so = scores_out ? scores_out + row * T : nullptr;  // (reporting) the scores, 0 above the diagonal
    if (t >= n[b]) {                                         // padding
        for (int s = lane; s < T; s += WARP) a[s] = 0;
        for (int j = lane; j < HS; j += WARP) o[j] = 0;
        if (so)
            for (int s = lane; s < T; s += WARP) so[s] = 0;
        return;
    }
    if (so)
        for (int s = t + 1 + lane; s < T; s += WARP) so[s] = 0;
    const real *qt = q + ((size_t)b * T + t) * ldq + h * HS;
    const real *kb = k + (size_t)b * T * ldkv + kvo;
    const real *vb = v + (size_t)b * T * ldkv + kvo;
    for (int j = lane; j < HS; j += WARP) o[j] = 0;
    real m = neg_inf<real>(), l = 0;
    for (int base = 0; base <= t; base += WARP) {
        const int s = base + lane;
        const bool valid = s <= t;
        real score = neg_inf<real>();
        if (valid) {
            const real *ks = kb + (size_t)s * ldkv;
            real dot = 0;
            for (int j = 0; j < HS; j++) dot += qt[j] * ks[j];
            score = dot * scale;
            a[s] = score;
            if (so) so[s] = score;
        }
        const real m_new = warp_max(m > score ? m : score);   // finite: key `base` is valid
        const real corr = m == neg_inf<real>() ? (real)0 : r_exp(m - m_new);   // first chunk: nothing to rescale
        const real p = valid ? r_exp(score - m_new) : (real)0;
        l = l * corr + warp_sum(p);
        for (int j = 0; j < HS; j++) {
            const real pv = warp_sum(valid ? p * vb[(size_t)s * ldkv + j] : (real)0);
            if (lane == (j & (WARP - 1))) o[j] = o[j] * corr + pv;
        }
        m = m_new;
    }
    const real inv = (real)1 / l;
    for (int j = lane; j < HS; j += WARP) o[j] *= inv;
    for (int s = lane; s < T; s += WARP) a[s] = s <= t ? r_exp(a[s] - m) * inv : (real)0;
}

template <typename real>
static void attention_forward_rows(cudaStream_t st, real *out, real *att, const real *q, int ldq, const real *k,
                       const real *v, int ldkv, const int *n, int B, int T, int NH, int NKV, int HS,
                       real *scores_out = nullptr) {
    const real scale = (real)1 / std::sqrt((real)HS);
    attention_forward_rows_kernel<real><<<row_blocks((size_t)B * NH * T), ROW_THREADS, 0, st>>>(
        out, att, q, ldq, k, v, ldkv, n, B, T, NH, NKV, HS, scale, scores_out);
    KERNEL_CHECK("attention_forward_rows_kernel");
}

// Per query row (b,h,t): datt[s] = dout.v[s]; wsum = sum_s att[s] datt[s];
// dpre[s] = att[s] (datt[s] - wsum) scale (kept for the dk kernel); dq (+)=
// sum_s dpre[s] k[s]. One warp per row; lanes over keys.
template <typename real>
__global__ void attention_backward_dq_rows_kernel(real *dq, int lddq, real *dpre, const real *dout, const real *att,
                                             const real *k, const real *v, int ldkv, const int *n, int B, int T,
                                             int NH, int NKV, int HS, real scale, bool acc, real *datt_out) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    const int lane = threadIdx.x % WARP;
    if (row >= (size_t)B * NH * T) return;
    const int t = (int)(row % T), h = (int)(row / T % NH), b = (int)(row / ((size_t)T * NH));
    const int C = NH * HS, kvo = (h / (NH / NKV)) * HS;
    real *dqt = dq + ((size_t)b * T + t) * lddq + h * HS;
    if (!acc)
        for (int j = lane; j < HS; j += WARP) dqt[j] = 0;
    real *go = datt_out ? datt_out + row * T : nullptr;   // (reporting) dout.v, 0 above the diagonal
    if (go)
        for (int s = (t < n[b] ? t + 1 : 0) + lane; s < T; s += WARP) go[s] = 0;
    if (t >= n[b]) return;   // padded rows add nothing
    const real *a = att + row * T, *d = dout + ((size_t)b * T + t) * C + h * HS;
    real *dp = dpre + row * T;
    const real *kb = k + (size_t)b * T * ldkv + kvo;
    const real *vb = v + (size_t)b * T * ldkv + kvo;
    real wsum = 0;
    for (int base = 0; base <= t; base += WARP) {   // pass 1: datt (kept in dpre) and wsum
        const int s = base + lane;
        real w = 0;
        if (s <= t) {
            const real *vs = vb + (size_t)s * ldkv;
            real datt = 0;
            for (int j = 0; j < HS; j++) datt += d[j] * vs[j];
            dp[s] = datt;
            if (go) go[s] = datt;
            w = a[s] * datt;
        }
        wsum += warp_sum(w);
    }
    for (int base = 0; base <= t; base += WARP) {   // pass 2: dpre and dq
        const int s = base + lane;
        const bool valid = s <= t;
        real g = 0;
        if (valid) {
            g = a[s] * (dp[s] - wsum) * scale;
            dp[s] = g;
        }
        for (int j = 0; j < HS; j++) {
            const real sum = warp_sum(valid ? g * kb[(size_t)s * ldkv + j] : (real)0);
            if (lane == (j & (WARP - 1))) dqt[j] += sum;
        }
    }
}

// Per key row (b, kv head g, s): dk[s] (+)= sum_{h in g} sum_{s<=t<n} dpre[b,h,t,s] q[t,h];
// dv[s] (+)= sum_h sum_t att[b,h,t,s] dout[t,h]. One warp per row; lanes over
// query positions; heads in order. No atomics: each gradient row has one owner.
template <typename real>
__global__ void attention_backward_dkv_rows_kernel(real *dk, real *dv, int lddkv, const real *dpre, const real *att,
                                              const real *dout, const real *q, int ldq, const int *n, int B,
                                              int T, int NH, int NKV, int HS, bool acc) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    const int lane = threadIdx.x % WARP;
    if (row >= (size_t)B * NKV * T) return;
    const int s = (int)(row % T), g = (int)(row / T % NKV), b = (int)(row / ((size_t)T * NKV));
    const int C = NH * HS, group = NH / NKV, nb = n[b];
    real *dks = dk + ((size_t)b * T + s) * lddkv + g * HS;
    real *dvs = dv + ((size_t)b * T + s) * lddkv + g * HS;
    if (!acc)
        for (int j = lane; j < HS; j += WARP) dks[j] = dvs[j] = 0;
    if (s >= nb) return;
    for (int h = g * group; h < (g + 1) * group; h++) {
        const size_t arow = ((size_t)b * NH + h) * T;   // row (b,h,0) of att and dpre
        for (int base = s; base < nb; base += WARP) {
            const int t = base + lane;
            const bool valid = t < nb;
            const real aw = valid ? att[(arow + t) * T + s] : (real)0;
            const real gw = valid ? dpre[(arow + t) * T + s] : (real)0;
            const real *dt = dout + ((size_t)b * T + (valid ? t : s)) * C + h * HS;
            const real *qt = q + ((size_t)b * T + (valid ? t : s)) * ldq + h * HS;
            for (int j = 0; j < HS; j++) {
                const real sv = warp_sum(aw * dt[j]);
                const real sk = warp_sum(gw * qt[j]);
                if (lane == (j & (WARP - 1))) {
                    dvs[j] += sv;
                    dks[j] += sk;
                }
            }
        }
    }
}

template <typename real>
static void attention_backward_rows(cudaStream_t st, real *dq, int lddq, real *dk, real *dv, int lddkv, real *dpre,
                        const real *dout, const real *att, const real *q, int ldq, const real *k,
                        const real *v, int ldkv, const int *n, int B, int T, int NH, int NKV, int HS,
                        bool acc, real *datt_out = nullptr) {
    const real scale = (real)1 / std::sqrt((real)HS);
    attention_backward_dq_rows_kernel<real><<<row_blocks((size_t)B * NH * T), ROW_THREADS, 0, st>>>(
        dq, lddq, dpre, dout, att, k, v, ldkv, n, B, T, NH, NKV, HS, scale, acc, datt_out);
    KERNEL_CHECK("attention_backward_dq_rows_kernel");
    attention_backward_dkv_rows_kernel<real><<<row_blocks((size_t)B * NKV * T), ROW_THREADS, 0, st>>>(
        dk, dv, lddkv, dpre, att, dout, q, ldq, n, B, T, NH, NKV, HS, acc);
    KERNEL_CHECK("attention_backward_dkv_rows_kernel");
}

// ---------------------------------------------------------------------------
// dispatch

enum TiledKernel { TK_FORWARD, TK_DQ, TK_DKV };

// Shared memory of one block of a tiled kernel, in bytes (the layouts above).
static int tiled_threads(int T, int HS);
template <typename real, class Out = Same<real>> static size_t tiled_bytes(TiledKernel which, int T, int HS) {
    const TileDims d(T, HS);
    const int th = tiled_threads(T, HS);
    const size_t hr = (size_t)d.rows_elems(), hq = (size_t)d.quads_elems(), ss = (size_t)d.square_elems();
    const size_t slot = hq > ss ? hq : ss;
    const bool sc = scores_compact(T, th);
    if (which == TK_FORWARD) return (sc ? slot + hq + hr : 2 * hq + hr + ss) * sizeof(real);   // S over Q, or Q, K, V, S
    if (which == TK_DQ) return (sc ? hr + hq + slot : hr + 2 * hq + 2 * ss) * sizeof(real);   // D over dO, or K, V, dO, A, D
    // Q and dO (in L with exact operands), A, Pd; dK, dV unless in registers
    return 2 * hr * sizeof(DkvOperand<real, Out>) + (dkv_compact(T, HS, th) ? 2 * ss : 2 * ss + 2 * hr) * sizeof(real);
}

// The device's opt-in shared memory per block, queried once per precision
// and output type (Out: attention_tiled.cuh); the tiled kernels are allowed
// that much dynamic shared memory (they have no static shared memory). The
// first call runs outside any graph capture (the engine's first step of a
// shape is eager).
template <typename real, class Out = Same<real>> static size_t tiled_limit() {
    static const size_t limit = [] {
        int dev = 0, optin = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
        CUDA_CHECK(cudaFuncSetAttribute(attention_forward_tiled_kernel<real, Out>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
        CUDA_CHECK(cudaFuncSetAttribute(attention_backward_dq_tiled_kernel<real, Out>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
        CUDA_CHECK(cudaFuncSetAttribute(attention_backward_dkv_tiled_kernel<real, Out>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
        return (size_t)optin;
    }();
    return limit;
}

// Threads per block: enough for the larger product's tiles (whole warps,
// 64 to TILED_THREADS); the loops stride over whatever is left.
static int tiled_threads(int T, int HS) {
    const int NT = pad4(T) / TILE, JW = pad4(HS) / TILE, dkv = 2 * row_pairs(NT) * JW;   // dkv: dk and dv pairs
    const int tiles = lower_tiles(NT) > dkv ? lower_tiles(NT) : dkv;
    int th = (tiles + WARP - 1) / WARP * WARP;
    if (th < 2 * WARP) th = 2 * WARP;
    return th > TILED_THREADS ? TILED_THREADS : th;
}

template <typename real> AttnPath attention_forward_path(int T, int HS) {
    return tiled_bytes<real>(TK_FORWARD, T, HS) <= tiled_limit<real>() ? AttnPath::Tiled : AttnPath::Rows;
}

template <typename real> AttnPath attention_backward_path(int T, int HS) {
    const size_t lim = tiled_limit<real>();
    return tiled_bytes<real>(TK_DQ, T, HS) <= lim && tiled_bytes<real>(TK_DKV, T, HS) <= lim ? AttnPath::Tiled
                                                                                               : AttnPath::Rows;
}

const char *attn_path_name(AttnPath p) {
    return p == AttnPath::Tiled ? "tiled" : p == AttnPath::Rows ? "rows" : "auto";
}

// Auto resolved; Tiled on a shape it cannot hold is refused.
static AttnPath resolve(AttnPath asked, AttnPath fits, const char *what, int T, int HS) {
    if (asked == AttnPath::Auto) return fits;
    if (asked == AttnPath::Tiled && fits != AttnPath::Tiled)
        throw CudaError(std::string(what) + ": the tiled kernels do not fit in shared memory at T=" +
                        std::to_string(T) + " HS=" + std::to_string(HS) + " (use the rows kernels)");
    return asked;
}

// The tiled kernels' launches, outputs stored by Out.
template <typename real, class Out>
static void forward_tiled(cudaStream_t st, typename Out::T *out, real *att, const real *q, int ldq, const real *k,
                          const real *v, int ldkv, const int *n, int B, int T, int NH, int NKV, int HS,
                          real *scores_out = nullptr) {
    if ((size_t)B * NH == 0) return;
    tiled_limit<real, Out>();
    const real scale = (real)1 / std::sqrt((real)HS);
    attention_forward_tiled_kernel<real, Out><<<blocks_for((size_t)B * NH, 1), tiled_threads(T, HS),
                                                tiled_bytes<real>(TK_FORWARD, T, HS), st>>>(
        out, att, q, ldq, k, v, ldkv, n, T, NH, NKV, HS, scale, scores_out);
    KERNEL_CHECK("attention_forward_tiled_kernel");
}

template <typename real, class Out>
static void backward_tiled(cudaStream_t st, typename Out::T *dq, int lddq, typename Out::T *dk, typename Out::T *dv,
                           int lddkv, real *dpre, const real *dout, const real *att, const real *q, int ldq,
                           const real *k, const real *v, int ldkv, const int *n, int B, int T, int NH, int NKV,
                           int HS, bool acc, real *datt_out = nullptr) {
    if ((size_t)B * NH == 0) return;
    tiled_limit<real, Out>();
    const real scale = (real)1 / std::sqrt((real)HS);
    const int th = tiled_threads(T, HS);
    attention_backward_dq_tiled_kernel<real, Out><<<blocks_for((size_t)B * NH, 1), th,
                                                    tiled_bytes<real>(TK_DQ, T, HS), st>>>(
        dq, lddq, dpre, dout, att, k, v, ldkv, n, T, NH, NKV, HS, scale, acc, datt_out);
    KERNEL_CHECK("attention_backward_dq_tiled_kernel");
    attention_backward_dkv_tiled_kernel<real, Out><<<blocks_for((size_t)B * NKV, 1), th,
                                                     tiled_bytes<real, Out>(TK_DKV, T, HS), st>>>(
        dk, dv, lddkv, dpre, att, dout, q, ldq, n, T, NH, NKV, HS, acc);
    KERNEL_CHECK("attention_backward_dkv_tiled_kernel");
}

template <typename real>
void attention_forward(cudaStream_t st, real *out, real *att, const real *q, int ldq, const real *k,
                       const real *v, int ldkv, const int *n, int B, int T, int NH, int NKV, int HS,
                       AttnPath path, real *scores_out) {
    if (resolve(path, attention_forward_path<real>(T, HS), "attention_forward", T, HS) == AttnPath::Rows) {
        attention_forward_rows(st, out, att, q, ldq, k, v, ldkv, n, B, T, NH, NKV, HS, scores_out);
        return;
    }
    forward_tiled<real, Same<real>>(st, out, att, q, ldq, k, v, ldkv, n, B, T, NH, NKV, HS, scores_out);
}

template <typename real>
void attention_backward(cudaStream_t st, real *dq, int lddq, real *dk, real *dv, int lddkv, real *dpre,
                        const real *dout, const real *att, const real *q, int ldq, const real *k,
                        const real *v, int ldkv, const int *n, int B, int T, int NH, int NKV, int HS,
                        bool acc, AttnPath path, real *datt_out) {
    if (resolve(path, attention_backward_path<real>(T, HS), "attention_backward", T, HS) == AttnPath::Rows) {
        attention_backward_rows(st, dq, lddq, dk, dv, lddkv, dpre, dout, att, q, ldq, k, v, ldkv, n, B, T, NH,
                                NKV, HS, acc, datt_out);
        return;
    }
    backward_tiled<real, Same<real>>(st, dq, lddq, dk, dv, lddkv, dpre, dout, att, q, ldq, k, v, ldkv, n, B, T, NH,
                                     NKV, HS, acc, datt_out);
}

// The recipe's attention (mixed.cuh): the fp32 kernels with their inputs
// taken as L values and their outputs written in L by the functor (the same
// bits as fp32 on rounded inputs, then lowp_convert); on the rows path, the
// inputs rounded in place, fp32 into the scratch, then converted.
void attention_forward_lowp(cudaStream_t st, Lowp lp, void *out_lp, float *out, float *att, float *q, int ldq,
                            float *k, float *v, int ldkv, const int *n, int B, int T, int NH, int NKV, int HS) {
    if (attention_forward_path<float>(T, HS) == AttnPath::Rows) {
        if (lp != Lowp::TF32) {
            lowp_round_inplace(st, lp, q, B * T, NH * HS, ldq);
            lowp_round_inplace(st, lp, k, B * T, NKV * HS, ldkv);
            lowp_round_inplace(st, lp, v, B * T, NKV * HS, ldkv);
        }
        attention_forward_rows(st, out, att, q, ldq, k, v, ldkv, n, B, T, NH, NKV, HS);
        lowp_convert(st, lp, out_lp, out, B * T, NH * HS, NH * HS);
        return;
    }
    with_lowp(lp, [&](auto f) {
        using F = decltype(f);
        forward_tiled<float, F>(st, static_cast<typename F::T *>(out_lp), att, q, ldq, k, v, ldkv, n, B, T, NH, NKV,
                                HS);
    });
}

void attention_backward_lowp(cudaStream_t st, Lowp lp, void *dqkv_lp, float *dqkv, int ld, float *dpre, float *dout,
                             const float *att, float *q, float *k, float *v, int ldqkv, const int *n, int B, int T,
                             int NH, int NKV, int HS) {
    const int C = NH * HS, KV = NKV * HS;
    if (ld != C + 2 * KV)
        throw CudaError("attention_backward_lowp: dq|dk|dv must be rows of C + 2 KV = " + std::to_string(C + 2 * KV) +
                        ", not " + std::to_string(ld));
    if (attention_backward_path<float>(T, HS) == AttnPath::Rows) {
        if (lp != Lowp::TF32) {
            lowp_round_inplace(st, lp, dout, B * T, C, C);
            lowp_round_inplace(st, lp, q, B * T, C, ldqkv);
            lowp_round_inplace(st, lp, k, B * T, KV, ldqkv);
            lowp_round_inplace(st, lp, v, B * T, KV, ldqkv);
        }
        attention_backward_rows(st, dqkv, ld, dqkv + C, dqkv + C + KV, ld, dpre, dout, att, q, ldqkv, k, v, ldqkv, n,
                                B, T, NH, NKV, HS, false);
        lowp_convert(st, lp, dqkv_lp, dqkv, B * T, ld, ld);
        return;
    }
    with_lowp(lp, [&](auto f) {
        using F = decltype(f);
        typename F::T *d = static_cast<typename F::T *>(dqkv_lp);
        backward_tiled<float, F>(st, d, ld, d + C, d + C + KV, ld, dpre, dout, att, q, ldqkv, k, v, ldqkv, n, B, T,
                                 NH, NKV, HS, false);
    });
}

// ---------------------------------------------------------------------------
// instantiations

#define MGPT_INSTANTIATE_ATTENTION(real)                                                                        \
    template AttnPath attention_forward_path<real>(int, int);                                                  \
    template AttnPath attention_backward_path<real>(int, int);                                                 \
    template void attention_forward<real>(cudaStream_t, real *, real *, const real *, int, const real *,      \
                                          const real *, int, const int *, int, int, int, int, int, AttnPath,  \
                                          real *);                                                            \
    template void attention_backward<real>(cudaStream_t, real *, int, real *, real *, int, real *,            \
                                           const real *, const real *, const real *, int, const real *,      \
                                           const real *, int, const int *, int, int, int, int, int, bool,    \
                                           AttnPath, real *);

MGPT_INSTANTIATE_ATTENTION(double)
MGPT_INSTANTIATE_ATTENTION(float)

}  // namespace mgpt
