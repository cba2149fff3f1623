// The fused training step (fused.cuh): one cooperative kernel per run of
// steps. The per-document math is tensor_gpu/cpu/layers.c's, position by
// position; the sums are grouped differently: the products over four
// interleaved partial sums (latency: a chain of dependent adds is what a
// small product waits on), row reductions (rmsnorm, softmax, the loss) over
// a warp's fixed butterfly, the gradient over documents per block and then
// over blocks in block order. Every order is fixed: deterministic.
//
// Inside a block every phase is a loop of the block's threads (or warps) over
// the phase's independent outputs, then END_PHASE (the block's barrier).
// Shapes (per document):
// n positions (n <= T <= Tmax), C channels, NH query heads, NKV kv heads, HS
// head size, KV = NKV*HS, Q = C + 2KV (q | k | v), H = 4C, V vocab.
#include <cooperative_groups.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "tensor_gpu/cuda/cuda_check.cuh"
#include "tensor_gpu/cuda/device_util.cuh"
#include "tensor_gpu/cuda/fused.cuh"
#include "tensor_gpu/layers.h"

namespace cg = cooperative_groups;

namespace mgpt {

// The block's dynamic shared memory, at namespace scope: its own name, so
// that tests/test_fused_emu.cc, which runs this kernel on the CPU, can give
// each block of a cooperative launch its own (emu/cuda_runtime.h).
extern __shared__ __align__(16) unsigned char fused_smem[];

namespace {


// Profiling (make FUSED_PROFILE=1 in a build of its own; off, PHASE is
// nothing): thread 0 of block 0 adds each phase's cycles (clock64, from the
// barrier before it to the one after it) into g_prof; the engine prints them
// per step when it is destroyed (fused_profile_report).
#define FUSED_PHASES(X)                                                                                        \
    X(load) X(embed) X(rms) X(qkv) X(scores) X(softmax) X(att_v) X(wo) X(fc1) X(fc2) X(lm_head) X(loss)        \
        X(lm_head_bwd) X(fc2_bwd) X(fc1_bwd) X(rms_bwd) X(wo_bwd) X(datt) X(softmax_bwd) X(dqkv) X(qkv_bwd)     \
            X(embed_bwd) X(out) X(partials) X(reduce_adam)
#define FUSED_PHASE_ID(name) FP_##name,
enum FusedPhase { FUSED_PHASES(FUSED_PHASE_ID) FP_NUM };
#ifdef FUSED_PROFILE
__device__ unsigned long long g_prof[FP_NUM + 1];   // [FP_NUM]: steps
__shared__ long long prof_last;
#define PHASE(k)                                                                                               \
    do {                                                                                                       \
        if (blockIdx.x == 0 && threadIdx.x == 0) {                                                             \
            const long long t_ = clock64();                                                                    \
            g_prof[FP_##k] += (unsigned long long)(t_ - prof_last);                                            \
            prof_last = t_;                                                                                    \
        }                                                                                                      \
    } while (0)
#define PHASE_START()                                                                                          \
    do {                                                                                                       \
        if (blockIdx.x == 0 && threadIdx.x == 0) prof_last = clock64(), g_prof[FP_NUM]++;                      \
    } while (0)
#else
#define PHASE(k) \
    do {         \
    } while (0)
#define PHASE_START() PHASE(load)
#endif

// The end of phase k: the block's barrier (the phases after it read what k
// wrote), then k's mark in the profile build.
#define END_PHASE(k)     \
    do {                 \
        __syncthreads(); \
        PHASE(k);        \
    } while (0)

#define FOR_BLOCK(i, count) for (int i = (int)threadIdx.x; i < (count); i += (int)blockDim.x)
// each warp a row: lane takes the row's elements lane, lane+32, ...
#define FOR_WARP_ROW(row, count) \
    for (int row = (int)(threadIdx.x / 32); row < (count); row += (int)(blockDim.x / 32))


// sum_{i<K} a[i*sa] * b[i*sb] over four interleaved partial sums, as
// (s0+s1)+(s2+s3); with RELU_B, b is relu(b).
template <bool RELU_B, typename real>
__device__ __forceinline__ real dot(const real *a, int sa, const real *b, int sb, int K) {
    real s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    auto bv = [&](int i) {
        const real x = b[i * sb];
        return RELU_B ? (x > 0 ? x : (real)0) : x;
    };
    int i = 0;
    for (; i + 3 < K; i += 4) {
        s0 += a[i * sa] * bv(i);
        s1 += a[(i + 1) * sa] * bv(i + 1);
        s2 += a[(i + 2) * sa] * bv(i + 2);
        s3 += a[(i + 3) * sa] * bv(i + 3);
    }
    for (; i < K; i++) s0 += a[i * sa] * bv(i);
    return (s0 + s1) + (s2 + s3);
}

// out[t,o] = in[t,:] . W[o,:] (+ res[t,o]) for t < n, o < OC; with RELU_IN
// the input is relu(in).
template <bool RELU_IN, typename real>
__device__ void mm_fwd(real *out, int ldo, const real *in, int ldi, const real *W, int ldw, int n, int IC, int OC,
                       const real *res, int ldr) {
    FOR_BLOCK(idx, n * OC) {
        const int t = idx / OC, o = idx - t * OC;
        real s = dot<RELU_IN>(W + o * ldw, 1, in + t * ldi, 1, IC);
        if (res) s = s + res[t * ldr + o];
        out[t * ldo + o] = s;
    }
}

// dinp[t,i] = sum_o dout[t,o] W[o,i] for t < n, i < IC; with gate, 0 where
// gate[t,i] <= 0 (the ReLU's backward).
template <typename real>
__device__ void mm_bwd_inp(real *dinp, int ldn, const real *dout, int ldd, const real *W, int ldw, int n, int IC,
                           int OC, const real *gate, int ldg) {
    FOR_BLOCK(idx, n * IC) {
        const int t = idx / IC, i = idx - t * IC;
        real s = dot<false>(dout + t * ldd, 1, W + i, ldw, OC);
        if (gate && !(gate[t * ldg + i] > 0)) s = 0;
        dinp[t * ldn + i] = s;
    }
}

// G[o,i] += sum_{t<n} dout[t,o] in[t,i] (G flat, row stride IC); with
// RELU_IN the input is relu(in).
template <bool RELU_IN, typename real>
__device__ void mm_bwd_w(real *G, const real *dout, int ldd, const real *in, int ldi, int n, int IC, int OC) {
    FOR_BLOCK(idx, OC * IC) {
        const int o = idx / IC, i = idx - o * IC;
        G[idx] += dot<RELU_IN>(dout + o, ldd, in + i, ldi, n);
    }
}

// The backward of out = in W^T (in (n,IC), W (OC,IC), out (n,OC)):
// dinp = dout W and G += dout^T in. RELU_IN: in is relu's
// input (fc2's: fch), so the weight gradient reads relu(in) and dinp is
// gated by in > 0.
template <bool RELU_IN, typename real>
__device__ void mm_bwd(real *dinp, int ldn, real *G, const real *dout, int ldd, const real *W, int ldw,
                       const real *in, int ldi, int n, int IC, int OC) {
    mm_bwd_inp(dinp, ldn, dout, ldd, W, ldw, n, IC, OC, RELU_IN ? in : (const real *)nullptr, RELU_IN ? ldi : 0);
    mm_bwd_w<RELU_IN>(G, dout, ldd, in, ldi, n, IC, OC);
}

// out = inp * rstd per row, rstd = (mean(inp^2) + eps)^-0.5; one warp a row.
template <typename real> __device__ void rms_fwd(real *out, real *rstd, const real *inp, int ld, int n, int C) {
    const int lane = threadIdx.x % 32;
    FOR_WARP_ROW(t, n) {
        const real *x = inp + t * ld;
        real ss = 0;
        for (int c = lane; c < C; c += 32) ss += x[c] * x[c];
        ss = warp_sum(ss);
        const real ms = ss * ((real)1 / (real)C);
        const real s = (real)1 / r_sqrt(ms + (real)RMSNORM_EPS);
        for (int c = lane; c < C; c += 32) out[t * ld + c] = x[c] * s;
        if (lane == 0) rstd[t] = s;
    }
}

// dinp (+)= s*dy - (s^3/C)(dy.x) x per row (layers.c's rmsnorm_backward).
template <typename real>
__device__ void rms_bwd(real *dinp, const real *dout, const real *inp, const real *rstd, int ld, int n, int C,
                        bool acc) {
    const int lane = threadIdx.x % 32;
    FOR_WARP_ROW(t, n) {
        const real *x = inp + t * ld, *dy = dout + t * ld;
        real *dx = dinp + t * ld;
        const real s = rstd[t];
        real d = 0;
        for (int c = lane; c < C; c += 32) d += dy[c] * x[c];
        d = warp_sum(d);
        const real k = s * s * s * d / (real)C;
        for (int c = lane; c < C; c += 32) {
            const real g = s * dy[c] - k * x[c];
            dx[c] = acc ? dx[c] + g : g;
        }
    }
}

// Reporting (FusedArgs.acts): rows t < n of an (n, width) shared-memory
// matrix of row stride ld into document b of a global (B,T,width) array,
// zeros at its padding; the square (NH,n,n) of row stride Tm of scores-like
// arrays into (B,NH,T,T) times mul, 0 above the diagonal and at padding. The
// block's barrier after: what the next phase overwrites has been read.
template <typename real>
__device__ void dump_rows(real *g, const real *src, int ld, int n, int T, int width, int b) {
    if (g) {
        real *o = g + (size_t)b * T * width;
        FOR_BLOCK(idx, T * width) {
            const int t = idx / width, c = idx - t * width;
            o[(size_t)t * width + c] = t < n ? src[t * ld + c] : (real)0;
        }
    }
    __syncthreads();
}

template <typename real>
__device__ void dump_square(real *g, const real *src, int Tm, int n, int T, int NH, int b, real mul) {
    if (g) {
        real *o = g + (size_t)b * NH * T * T;
        FOR_BLOCK(idx, NH * T * T) {
            const int h = idx / (T * T), r = idx - h * T * T, t = r / T, u = r - t * T;
            o[idx] = t < n && u <= t ? src[(h * Tm + t) * Tm + u] * mul : (real)0;
        }
    }
    __syncthreads();
}

// Test-only (FusedArgs.fault): element 0 of an (n, width) shared-memory
// array of row stride ld off by 1% of its largest |value| (thread 0 alone: a
// fault run is small), then the block's barrier.
template <typename real> __device__ void fault_bump(real *buf, int ld, int n, int width) {
    if (threadIdx.x == 0) {
        real mx = 0;
        for (int t = 0; t < n; t++)
            for (int c = 0; c < width; c++) {
                const real x = buf[t * ld + c] < 0 ? -buf[t * ld + c] : buf[t * ld + c];
                mx = x > mx ? x : mx;
            }
        buf[0] += (real)0.01 * (mx > 0 ? mx : (real)0.1);
    }
    __syncthreads();
}

// The op index of common/activations.h: embed 0, embed_norm 1, then 14 a
// layer from norm1 (k = 0) to res2 (k = 13), logits last.
enum FusedOp { FO_NORM1, FO_Q, FO_K, FO_V, FO_SCORES, FO_SOFTMAX, FO_ATTN, FO_ATTN_PROJ, FO_RES1, FO_NORM2, FO_FC1,
               FO_RELU, FO_FC2, FO_RES2, FO_PER_LAYER };
__device__ __forceinline__ int fused_op(int l, int k) { return 2 + FO_PER_LAYER * l + k; }

// The (B,T) positions and lengths of step s; with token_mean, inv_n_all =
// 1/sum(n) in double, the token mean's weight before its rounding to real
// (0 otherwise: doc-mean does not use it).
struct StepIn {
    int B, T;
    const int *n, *tok;
    const AdamScalars *sc;
    double inv_n_all;
};

template <typename real> __device__ StepIn step_in(const FusedArgs<real> &a, int s) {
    StepIn in;
    const char *rec = a.io + (size_t)s * a.io_stride;
    in.B = a.shapes ? a.shapes[2 * s] : a.B0;
    in.T = a.shapes ? a.shapes[2 * s + 1] : a.T0;
    in.n = reinterpret_cast<const int *>(rec + a.off_n);
    in.tok = reinterpret_cast<const int *>(rec + a.off_tok);
    in.sc = reinterpret_cast<const AdamScalars *>(rec + a.off_sc);
    in.inv_n_all = 0;
    if (a.token_mean) {
        long long n_all = 0;   // integers: exact
        for (int b = 0; b < in.B; b++) n_all += in.n[b];
        in.inv_n_all = 1.0 / (double)n_all;
    }
    return in;
}

// One document's forward, loss and backward; its gradient added into the
// block's accumulator. b: the document, in: the step, last: write the
// logits and ReLU inputs out.
template <typename real>
__device__ void train_document(const FusedArgs<real> &a, real *sm, const StepIn &in, int b, real *losses, bool last) {
    const FusedModel &m = a.m;
    const FusedSmem &s = a.s;
    const int C = m.C, NH = m.NH, HS = m.HS, KV = m.NKV * m.HS, Q = C + 2 * KV, H = 4 * C, V = m.V, Tm = m.Tmax;
    const int group = m.NH / m.NKV;
    const int ldC = C + 1, ldQ = Q + 1, ldH = H + 1, ldV = V + 1;
    const int n = in.n[b], T = in.T;
    const int *tok = in.tok + (size_t)b * (T + 1);   // inputs at t, targets at t+1
    const real scale = (real)1 / r_sqrt((real)HS);
    const int lane = threadIdx.x % 32;
    real *G = sm + s.grad;

    // x0 = rmsnorm(wte[tok] + wpe[t])                                    (n,C)
    real *enc = sm + s.enc, *x0 = sm + s.x0;
    // reporting: acts[op] (forward) and acts[n_ops + op] (backward), last step only
    real *const *rec = last ? a.acts : nullptr;
    const int nops = a.n_ops;
#define REC_F(op) (rec ? rec[(op)] : (real *)nullptr)
#define REC_B(op) (rec ? rec[nops + (op)] : (real *)nullptr)
    // test-only faults (FusedArgs.fault): op's output (FF) or the gradient its backward passes on (FB)
#define FF(op, buf, ld, w) \
    if (a.fault == 1 && a.fault_op == (op)) fault_bump(buf, ld, n, w)
#define FB(op, buf, ld, w) \
    if (a.fault == 2 && a.fault_op == (op)) fault_bump(buf, ld, n, w)
    FOR_BLOCK(idx, n * C) {
        const int t = idx / C, c = idx - t * C;
        enc[t * ldC + c] = sm[s.w_wte + tok[t] * ldC + c] + sm[s.w_wpe + t * ldC + c];
    }
    END_PHASE(embed);
    FF(0, enc, ldC, C);
    if (rec) dump_rows(REC_F(0), enc, ldC, n, T, C, b);
    rms_fwd(x0, sm + s.r0, enc, ldC, n, C);
    END_PHASE(rms);
    FF(1, x0, ldC, C);
    if (rec) dump_rows(REC_F(1), x0, ldC, n, T, C, b);
    const real *x = x0;   // the residual stream
    for (int l = 0; l < m.L; l++) {
        real *ln1 = sm + s.ln1[l], *qkv = sm + s.qkv[l], *att = sm + s.att[l], *atty = sm + s.atty[l];
        real *res2 = sm + s.res2[l], *ln2 = sm + s.ln2[l], *fch = sm + s.fch[l], *res3 = sm + s.res3[l];
        rms_fwd(ln1, sm + s.r1[l], x, ldC, n, C);
        END_PHASE(rms);
        FF(fused_op(l, FO_NORM1), ln1, ldC, C);
        mm_fwd<false>(qkv, ldQ, ln1, ldC, sm + s.w_qkv[l], ldC, n, C, Q, (const real *)nullptr, 0);   // (n,Q)
        END_PHASE(qkv);
        FF(fused_op(l, FO_Q), qkv, ldQ, C);
        FF(fused_op(l, FO_K), qkv + C, ldQ, KV);
        FF(fused_op(l, FO_V), qkv + C + KV, ldQ, KV);
        if (rec) {
            dump_rows(REC_F(fused_op(l, FO_NORM1)), ln1, ldC, n, T, C, b);
            dump_rows(REC_F(fused_op(l, FO_Q)), qkv, ldQ, n, T, C, b);
            dump_rows(REC_F(fused_op(l, FO_K)), qkv + C, ldQ, n, T, KV, b);
            dump_rows(REC_F(fused_op(l, FO_V)), qkv + C + KV, ldQ, n, T, KV, b);
        }
        // scores att[h,t,u] = q[t,h] . k[u,h/group] * scale, u <= t     (NH,n,n)
        FOR_BLOCK(idx, NH * n * n) {
            const int h = idx / (n * n), r = idx - h * n * n, t = r / n, u = r - t * n;
            if (u > t) continue;
            const real *qt = qkv + t * ldQ + h * HS, *ku = qkv + u * ldQ + C + (h / group) * HS;
            att[(h * Tm + t) * Tm + u] = dot<false>(qt, 1, ku, 1, HS) * scale;
        }
        END_PHASE(scores);
        FF(fused_op(l, FO_SCORES), att, Tm, 1);   // (head 0, query 0, key 0)
        if (rec) dump_square(REC_F(fused_op(l, FO_SCORES)), att, Tm, n, T, NH, b, (real)1);
        FOR_WARP_ROW(row, NH * n) {   // softmax of each row over u <= t
            const int h = row / n, t = row - h * n;
            real *ar = att + (h * Tm + t) * Tm;
            real mx = -(real)INFINITY;
            for (int u = lane; u <= t; u += 32) mx = ar[u] > mx ? ar[u] : mx;
            mx = warp_max(mx);
            real sum = 0;
            for (int u = lane; u <= t; u += 32) {
                ar[u] = r_exp(ar[u] - mx);
                sum += ar[u];
            }
            const real inv = (real)1 / warp_sum(sum);
            for (int u = lane; u <= t; u += 32) ar[u] *= inv;
        }
        END_PHASE(softmax);
        FF(fused_op(l, FO_SOFTMAX), att, Tm, 1);
        if (rec) dump_square(REC_F(fused_op(l, FO_SOFTMAX)), att, Tm, n, T, NH, b, (real)1);
        FOR_BLOCK(idx, n * C) {   // atty[t,c] = sum_u att[h,t,u] v[u, kv channel of c]   (n,C)
            const int t = idx / C, c = idx - t * C, h = c / HS, j = c - h * HS;
            const real *ar = att + (h * Tm + t) * Tm, *v = qkv + C + KV + (h / group) * HS + j;
            atty[t * ldC + c] = dot<false>(ar, 1, v, ldQ, t + 1);
        }
        END_PHASE(att_v);
        FF(fused_op(l, FO_ATTN), atty, ldC, C);
        mm_fwd<false>(res2, ldC, atty, ldC, sm + s.w_wo[l], ldC, n, C, C, x, ldC);   // wo + residual
        END_PHASE(wo);
        // wo's product and the residual add are one phase here: a fault in either lands on res1
        FF(fused_op(l, FO_ATTN_PROJ), res2, ldC, C);
        FF(fused_op(l, FO_RES1), res2, ldC, C);
        rms_fwd(ln2, sm + s.r2[l], res2, ldC, n, C);
        END_PHASE(rms);
        FF(fused_op(l, FO_NORM2), ln2, ldC, C);
        mm_fwd<false>(fch, ldH, ln2, ldC, sm + s.w_fc1[l], ldC, n, C, H, (const real *)nullptr, 0);   // (n,H)
        END_PHASE(fc1);
        FF(fused_op(l, FO_FC1), fch, ldH, H);
        mm_fwd<true>(res3, ldC, fch, ldH, sm + s.w_fc2[l], ldH, n, H, C, res2, ldC);   // fc2(relu) + residual
        END_PHASE(fc2);
        // relu, fc2's product and the residual add are one phase: their faults land on res2
        FF(fused_op(l, FO_FC2), res3, ldC, C);
        FF(fused_op(l, FO_RES2), res3, ldC, C);
        if (rec) {
            dump_rows(REC_F(fused_op(l, FO_ATTN)), atty, ldC, n, T, C, b);
            dump_rows(REC_F(fused_op(l, FO_RES1)), res2, ldC, n, T, C, b);
            dump_rows(REC_F(fused_op(l, FO_NORM2)), ln2, ldC, n, T, C, b);
            dump_rows(REC_F(fused_op(l, FO_FC1)), fch, ldH, n, T, H, b);
            dump_rows(REC_F(fused_op(l, FO_RES2)), res3, ldC, n, T, C, b);
        }
        if (last) {
            real *fo = a.fch[l] + (size_t)b * T * H;
            FOR_BLOCK(idx, T * H) {   // 0 at padding: every byte the host reads back is written
                const int t = idx / H, i = idx - t * H;
                fo[(size_t)t * H + i] = t < n ? fch[t * ldH + i] : (real)0;
            }
        }
        x = res3;
    }
    real *lg = sm + s.logits;
    mm_fwd<false>(lg, ldV, x, ldC, sm + s.w_lm, ldC, n, C, V, (const real *)nullptr, 0);   // (n,V)
    END_PHASE(lm_head);
    FF(nops - 1, lg, ldV, V);
    if (rec) dump_rows(REC_F(nops - 1), lg, ldV, n, T, V, b);
    if (last) {
        real *lo = a.logits + (size_t)b * T * V;
        FOR_BLOCK(idx, T * V) {
            const int t = idx / V, o = idx - t * V;
            lo[(size_t)t * V + o] = t < n ? lg[t * ldV + o] : (real)0;
        }
        END_PHASE(out);   // the loss overwrites the logits with their gradient
    }
    // cross-entropy per position; the logits become dlogits = (p - onehot) w
    const real w = (real)1 / ((real)n * (real)in.B);
    FOR_WARP_ROW(t, n) {   // one warp a position
        real *l = lg + t * ldV;
        const int target = tok[t + 1];
        // the weight: w = 1/(n*B) (doc-mean), or 1/n_all (token-mean, formed in double as layers.c does)
        const real wt = a.token_mean ? (real)in.inv_n_all : w;
        real mx = -(real)INFINITY;
        for (int i = lane; i < V; i += 32) mx = l[i] > mx ? l[i] : mx;
        mx = warp_max(mx);
        const real lt = l[target];
        __syncwarp();   // every lane has read l[target] before it is overwritten
        real sum = 0;
        for (int i = lane; i < V; i += 32) {
            l[i] = r_exp(l[i] - mx);
            sum += l[i];
        }
        sum = warp_sum(sum);
        const real inv = (real)1 / sum;
        for (int i = lane; i < V; i += 32) l[i] = (l[i] * inv - (real)(i == target)) * wt;
        if (lane == 0) losses[(size_t)b * T + t] = r_log(sum) - (lt - mx);
    }
    for (int t = n + (int)threadIdx.x; t < T; t += (int)blockDim.x) losses[(size_t)b * T + t] = 0;   // padding
    END_PHASE(loss);
    FB(nops, lg, ldV, V);   // the cross-entropy's backward: one past the table
    if (rec) dump_rows(REC_B(nops - 1), lg, ldV, n, T, V, b);   // dlogits

    // backward
    real *dx = sm + s.dx, *dh = sm + s.dh, *dln = sm + s.dln, *dqkv = sm + s.dqkv, *datty = sm + s.datty,
         *dpre = sm + s.dpre;
    mm_bwd<false>(dx, ldC, G + m.lm_head, lg, ldV, sm + s.w_lm, ldC, x, ldC, n, C, V);
    END_PHASE(lm_head_bwd);
    FB(nops - 1, dx, ldC, C);
    for (int l = m.L - 1; l >= 0; l--) {
        const real *x_in = l ? sm + s.res3[l - 1] : x0;
        const real *ln1 = sm + s.ln1[l], *qkv = sm + s.qkv[l], *att = sm + s.att[l], *atty = sm + s.atty[l];
        const real *res2 = sm + s.res2[l], *ln2 = sm + s.ln2[l], *fch = sm + s.fch[l];
        // MLP: res3 = fc2(relu(fc1(rmsnorm(res2)))) + res2; dx is d res3
        if (rec) {
            dump_rows(REC_B(fused_op(l, FO_RES2)), dx, ldC, n, T, C, b);
            dump_rows(REC_B(fused_op(l, FO_FC2)), dx, ldC, n, T, C, b);   // the residual passes it as it is
        }
        mm_bwd<true>(dh, ldH, G + m.fc2[l], dx, ldC, sm + s.w_fc2[l], ldH, fch, ldH, n, H, C);
        END_PHASE(fc2_bwd);
        // fc2's input gradient and relu's are one phase here
        FB(fused_op(l, FO_FC2), dh, ldH, H);
        FB(fused_op(l, FO_RELU), dh, ldH, H);
        if (rec) dump_rows(REC_B(fused_op(l, FO_FC1)), dh, ldH, n, T, H, b);   // gated: fc1's output gradient
        mm_bwd<false>(dln, ldC, G + m.fc1[l], dh, ldH, sm + s.w_fc1[l], ldC, ln2, ldC, n, C, H);
        END_PHASE(fc1_bwd);
        FB(fused_op(l, FO_FC1), dln, ldC, C);
        FB(fused_op(l, FO_RES2), dx, ldC, C);   // the residual's gradient res2 -> res1, as it passes
        if (rec) dump_rows(REC_B(fused_op(l, FO_NORM2)), dln, ldC, n, T, C, b);
        rms_bwd(dx, dln, res2, sm + s.r2[l], ldC, n, C, true);   // dx: d res2
        END_PHASE(rms_bwd);
        FB(fused_op(l, FO_NORM2), dx, ldC, C);
        if (rec) {
            dump_rows(REC_B(fused_op(l, FO_RES1)), dx, ldC, n, T, C, b);
            dump_rows(REC_B(fused_op(l, FO_ATTN_PROJ)), dx, ldC, n, T, C, b);
        }
        // attention: res2 = wo(attention(q, k, v of rmsnorm(x_in))) + x_in
        mm_bwd<false>(datty, ldC, G + m.wo[l], dx, ldC, sm + s.w_wo[l], ldC, atty, ldC, n, C, C);
        END_PHASE(wo_bwd);
        FB(fused_op(l, FO_ATTN_PROJ), datty, ldC, C);
        if (rec) dump_rows(REC_B(fused_op(l, FO_ATTN)), datty, ldC, n, T, C, b);
        FOR_BLOCK(idx, NH * n * n) {   // datt[h,t,u] = datty[t,h] . v[u]
            const int h = idx / (n * n), r = idx - h * n * n, t = r / n, u = r - t * n;
            if (u > t) continue;
            const real *d = datty + t * ldC + h * HS, *v = qkv + u * ldQ + C + KV + (h / group) * HS;
            dpre[(h * Tm + t) * Tm + u] = dot<false>(d, 1, v, 1, HS);
        }
        END_PHASE(datt);
        FB(fused_op(l, FO_ATTN), dpre, Tm, 1);   // the weighted sum's gradient into the softmax
        if (rec) dump_square(REC_B(fused_op(l, FO_SOFTMAX)), dpre, Tm, n, T, NH, b, (real)1);
        FOR_WARP_ROW(row, NH * n) {   // softmax backward: dpre = att (datt - sum att datt) scale
            const int h = row / n, t = row - h * n;
            const real *ar = att + (h * Tm + t) * Tm;
            real *dr = dpre + (h * Tm + t) * Tm;
            real wsum = 0;
            for (int u = lane; u <= t; u += 32) wsum += ar[u] * dr[u];
            wsum = warp_sum(wsum);
            for (int u = lane; u <= t; u += 32) dr[u] = ar[u] * (dr[u] - wsum) * scale;
        }
        END_PHASE(softmax_bwd);
        FB(fused_op(l, FO_SOFTMAX), dpre, Tm, 1);
        // the scores' gradient: dpre without the scale it carries into q.k
        if (rec) dump_square(REC_B(fused_op(l, FO_SCORES)), dpre, Tm, n, T, NH, b, r_sqrt((real)HS));
        FOR_BLOCK(idx, n * Q) {   // dq | dk | dv                             (n,Q)
            const int t = idx / Q, c = idx - t * Q;
            real g = 0;
            if (c < C) {   // dq[t,c] = sum_{u<=t} dpre[h,t,u] k[u]
                const int h = c / HS, j = c - h * HS;
                const real *dr = dpre + (h * Tm + t) * Tm, *k = qkv + C + (h / group) * HS + j;
                g = dot<false>(dr, 1, k, ldQ, t + 1);
            } else if (c < C + KV) {   // dk[t,kc] = sum_{r>=t} sum_{h of kv head} dpre[h,r,t] q[r,h]
                const int kh = (c - C) / HS, j = (c - C) - kh * HS;
                for (int h = kh * group; h < (kh + 1) * group; h++)   // over r = t .. n-1
                    g += dot<false>(dpre + (h * Tm + t) * Tm + t, Tm, qkv + t * ldQ + h * HS + j, ldQ, n - t);
            } else {   // dv[t,kc] = sum_{r>=t} sum_h att[h,r,t] datty[r,h]
                const int kh = (c - C - KV) / HS, j = (c - C - KV) - kh * HS;
                for (int h = kh * group; h < (kh + 1) * group; h++)
                    g += dot<false>(att + (h * Tm + t) * Tm + t, Tm, datty + t * ldC + h * HS + j, ldC, n - t);
            }
            dqkv[t * ldQ + c] = g;
        }
        END_PHASE(dqkv);
        FB(fused_op(l, FO_SCORES), dqkv, ldQ, C);   // the scores' gradient into q
        if (rec) {
            dump_rows(REC_B(fused_op(l, FO_Q)), dqkv, ldQ, n, T, C, b);
            dump_rows(REC_B(fused_op(l, FO_K)), dqkv + C, ldQ, n, T, KV, b);
            dump_rows(REC_B(fused_op(l, FO_V)), dqkv + C + KV, ldQ, n, T, KV, b);
        }
        mm_bwd<false>(dln, ldC, G + m.wq[l], dqkv, ldQ, sm + s.w_qkv[l], ldC, ln1, ldC, n, C, Q);
        END_PHASE(qkv_bwd);
        FB(fused_op(l, FO_Q), dln, ldC, C);
        FB(fused_op(l, FO_K), dln, ldC, C);
        FB(fused_op(l, FO_V), dln, ldC, C);
        FB(fused_op(l, FO_RES1), dx, ldC, C);
        if (rec) dump_rows(REC_B(fused_op(l, FO_NORM1)), dln, ldC, n, T, C, b);
        rms_bwd(dx, dln, x_in, sm + s.r1[l], ldC, n, C, true);   // dx: d x_in
        END_PHASE(rms_bwd);
        FB(fused_op(l, FO_NORM1), dx, ldC, C);
    }
    // x0 = rmsnorm(enc): d enc into dln, then into the embedding rows
    if (rec) dump_rows(REC_B(1), dx, ldC, n, T, C, b);
    rms_bwd(dln, dx, enc, sm + s.r0, ldC, n, C, false);
    END_PHASE(rms_bwd);
    FB(1, dln, ldC, C);
    if (rec) dump_rows(REC_B(0), dln, ldC, n, T, C, b);
#undef REC_F
#undef REC_B
    FOR_BLOCK(c, C) {   // one thread a channel, positions in order: repeated tokens add in order
        for (int t = 0; t < n; t++) {
            G[m.wte + (size_t)tok[t] * C + c] += dln[t * ldC + c];
            G[m.wpe + (size_t)t * C + c] += dln[t * ldC + c];
        }
    }
    END_PHASE(embed_bwd);
    if (a.fault == 2 && a.fault_op == 0 && b == 0) fault_bump(G + m.wte, C, m.V, C);   // its input: wte's gradient
#undef FF
#undef FB
}

// Where flat parameter i sits in shared memory. The table covers [0, P) in
// canonical order (fused_plan checks it), so one scan finds its tensor; one
// loop over all P parameters keeps every thread busy (a loop per tensor
// would run 3 + 4L short loops one after another).
__device__ __forceinline__ size_t smem_of(const FusedSmem &s, size_t i) {
    int k = 0;
    while (k + 1 < s.n_tensors && s.tensors[k + 1].flat <= i) k++;
    const FusedTensor &w = s.tensors[k];
    const int idx = (int)(i - w.flat), r = idx / w.cols, c = idx - r * w.cols;
    return w.smem + (size_t)r * (w.cols + 1) + c;
}

// The parameters from the canonical buffer flat into shared memory (padded
// rows), or back (to_global).
template <typename real>
__device__ void copy_weights(const FusedSmem &s, real *sm, real *flat, size_t P, bool to_global) {
    for (size_t i = threadIdx.x; i < P; i += blockDim.x) {
        real &here = sm[smem_of(s, i)];
        if (to_global) flat[i] = here;
        else here = flat[i];
    }
}

// Adam as adam_kernel (kernels.cu), on one parameter.
template <typename real>
__device__ __forceinline__ void adam_one(real &p, real g, real &m, real &v, real lr, real rc1, real rc2, real b1,
                                         real b2, real ep) {
    const real mi = b1 * m + ((real)1 - b1) * g;
    const real vi = b2 * v + ((real)1 - b2) * (g * g);
    m = mi;
    v = vi;
    const real m_hat = mi / rc1;
    const real v_hat = vi / rc2;
    p -= (lr * m_hat) / (r_sqrt(v_hat) + ep);
}

// MINB: the blocks per multiprocessor the registers must allow (launch
// bounds): 2 where shared memory lets two blocks share a multiprocessor and
// the grid has more than one block, else 1 (every register for latency).
template <typename real, int MINB>
__global__ void __launch_bounds__(FUSED_THREADS, MINB) fused_train_kernel(const FusedArgs<real> a) {
    real *sm = reinterpret_cast<real *>(fused_smem);
    const FusedModel &m = a.m;
    const FusedSmem &s = a.s;
    const size_t P = m.P;
    real *G = sm + s.grad;
    const real b1 = a.beta1, b2 = a.beta2, ep = a.eps;
    if (s.resident) {
        // one block: parameters and moments stay in shared memory for the launch
        real *M = sm + s.adam_m, *Vm = sm + s.adam_v;
        copy_weights(s, sm, a.params, P, false);
        for (size_t i = threadIdx.x; i < P; i += blockDim.x) M[i] = a.adam_m[i], Vm[i] = a.adam_v[i];
        for (int st = 0; st < a.nsteps; st++) {
            const StepIn in = step_in(a, st);
            for (size_t i = threadIdx.x; i < P; i += blockDim.x) G[i] = 0;
            __syncthreads();
            PHASE_START();
            real *losses = a.losses + (size_t)st * a.loss_stride;
            for (int b = 0; b < in.B; b++) train_document(a, sm, in, b, losses, st == a.nsteps - 1);
            const real lr = (real)in.sc->lr, rc1 = (real)in.sc->c1, rc2 = (real)in.sc->c2;
            for (size_t i = threadIdx.x; i < P; i += blockDim.x)
                adam_one(sm[smem_of(s, i)], G[i], M[i], Vm[i], lr, rc1, rc2, b1, b2, ep);
            END_PHASE(reduce_adam);
        }
        copy_weights(s, sm, a.params, P, true);
        for (size_t i = threadIdx.x; i < P; i += blockDim.x)
            a.adam_m[i] = M[i], a.adam_v[i] = Vm[i], a.grads[i] = G[i];
        return;
    }
    cg::grid_group grid = cg::this_grid();
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x, nthreads = (size_t)gridDim.x * blockDim.x;
    for (int st = 0; st < a.nsteps; st++) {
        const StepIn in = step_in(a, st);
        // the weights of this step into shared memory; the accumulator to 0
        PHASE_START();
        copy_weights(s, sm, a.params, P, false);
        for (size_t i = threadIdx.x; i < P; i += blockDim.x) G[i] = 0;
        END_PHASE(load);
        real *losses = a.losses + (size_t)st * a.loss_stride;
        for (int b = blockIdx.x; b < in.B; b += gridDim.x) train_document(a, sm, in, b, losses, st == a.nsteps - 1);
        real *part = a.partials + (size_t)blockIdx.x * P;
        for (size_t i = threadIdx.x; i < P; i += blockDim.x) part[i] = G[i];
        grid.sync();
        PHASE(partials);
        // the gradient: the blocks' partials in block order; then Adam
        const int used = in.B < (int)gridDim.x ? in.B : (int)gridDim.x;
        const real lr = (real)in.sc->lr, rc1 = (real)in.sc->c1, rc2 = (real)in.sc->c2;
        for (size_t i = tid; i < P; i += nthreads) {
            real gi = a.partials[i];
            for (int k = 1; k < used; k++) gi += a.partials[(size_t)k * P + i];
            a.grads[i] = gi;
            adam_one(a.params[i], gi, a.adam_m[i], a.adam_v[i], lr, rc1, rc2, b1, b2, ep);
        }
        grid.sync();   // the next step reads the updated parameters
        PHASE(reduce_adam);
    }
}

}  // namespace

bool fused_model_of(const ParamLayout *L, FusedModel *m) {
    const ModelShape &sh = L->shape;
    *m = FusedModel{};
    m->V = sh.vocab_size, m->C = sh.n_embd, m->NH = sh.n_head, m->NKV = sh.n_kv_head, m->HS = sh.head_dim;
    m->L = sh.n_layer, m->Tmax = sh.block_size, m->P = L->n_params;
    const size_t C = (size_t)sh.n_embd, KV = (size_t)sh.n_kv_head * sh.head_dim;
    bool adjacent = sh.n_layer <= FUSED_MAX_LAYERS;
    for (int i = 0; i < L->n_tensors; i++) {
        const ParamTensor *t = &L->t[i];
        const int l = t->layer;
        if (l >= FUSED_MAX_LAYERS) continue;
        switch (t->kind) {
        case P_WTE: m->wte = t->offset; break;
        case P_WPE: m->wpe = t->offset; break;
        case P_LM_HEAD: m->lm_head = t->offset; break;
        case P_ATTN_WQ: m->wq[l] = t->offset; break;
        case P_ATTN_WK: adjacent = adjacent && t->offset == m->wq[l] + C * C; break;
        case P_ATTN_WV: adjacent = adjacent && t->offset == m->wq[l] + (C + KV) * C; break;
        case P_ATTN_WO: m->wo[l] = t->offset; break;
        case P_MLP_FC1: m->fc1[l] = t->offset; break;
        case P_MLP_FC2: m->fc2[l] = t->offset; break;
        default: break;
        }
    }
    return adjacent;
}

template <typename real>
int fused_plan(const FusedModel &m, int max_batch, FusedSmem *s, size_t *smem_bytes, char *why, size_t whylen) {
    if (m.L < 1 || m.L > FUSED_MAX_LAYERS) {
        snprintf(why, whylen, "n_layer %d is outside the fused step's 1..%d", m.L, FUSED_MAX_LAYERS);
        return -1;
    }
    const size_t C = (size_t)m.C, KV = (size_t)m.NKV * m.HS, Q = C + 2 * KV, H = 4 * C, V = (size_t)m.V,
                 T = (size_t)m.Tmax, NH = (size_t)m.NH;
    size_t at = 0;
    auto take = [&at](size_t count) {
        const size_t here = at;
        at += (count + 1) / 2 * 2;   // keep every buffer 16-byte aligned for double
        return here;
    };
    memset(s, 0, sizeof *s);
    auto weight = [&](size_t *slot, size_t flat, size_t rows, size_t cols) {
        *slot = take(rows * (cols + 1));
        s->tensors[s->n_tensors++] = FusedTensor{flat, *slot, (int)rows, (int)cols};
    };
    weight(&s->w_wte, m.wte, V, C);
    weight(&s->w_wpe, m.wpe, T, C);
    weight(&s->w_lm, m.lm_head, V, C);
    for (int l = 0; l < m.L; l++) {
        weight(&s->w_qkv[l], m.wq[l], Q, C);
        weight(&s->w_wo[l], m.wo[l], C, C);
        weight(&s->w_fc1[l], m.fc1[l], H, C);
        weight(&s->w_fc2[l], m.fc2[l], C, H);
    }
    for (int k = 0; k < s->n_tensors; k++) {   // smem_of: the table covers [0, P) in order
        const FusedTensor &w = s->tensors[k];
        const size_t end = k + 1 < s->n_tensors ? s->tensors[k + 1].flat : m.P;
        if (w.flat + (size_t)w.rows * w.cols != end) {
            snprintf(why, whylen, "the parameter layout is not the canonical one the fused step reads");
            return -1;
        }
    }
    s->grad = take(m.P);
    s->enc = take(T * (C + 1));
    s->x0 = take(T * (C + 1));
    s->r0 = take(T);
    for (int l = 0; l < m.L; l++) {
        s->ln1[l] = take(T * (C + 1));
        s->r1[l] = take(T);
        s->qkv[l] = take(T * (Q + 1));
        s->att[l] = take(NH * T * T);
        s->atty[l] = take(T * (C + 1));
        s->res2[l] = take(T * (C + 1));
        s->ln2[l] = take(T * (C + 1));
        s->r2[l] = take(T);
        s->fch[l] = take(T * (H + 1));
        s->res3[l] = take(T * (C + 1));
    }
    s->logits = take(T * (V + 1));
    s->dx = take(T * (C + 1));
    s->dh = take(T * (H + 1));
    s->dln = take(T * (C + 1));
    s->dqkv = take(T * (Q + 1));
    s->datty = take(T * (C + 1));
    s->dpre = take(NH * T * T);
    int dev = 0, limit = 0, coop = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
    // a grid of one block keeps Adam's moments beside the weights when they fit
    if (max_batch == 1 && (at + 2 * ((m.P + 1) / 2 * 2)) * sizeof(real) <= (size_t)limit) {
        s->resident = 1;
        s->adam_m = take(m.P);
        s->adam_v = take(m.P);
    }
    s->elems = at;
    *smem_bytes = at * sizeof(real);
    if (!coop) {
        snprintf(why, whylen, "the device cannot launch cooperative kernels");
        return -1;
    }
    if (*smem_bytes > (size_t)limit) {
        snprintf(why, whylen, "the model needs %.1f KB of shared memory per block (weights, gradient and one "
                 "document's activations at block_size %d), the device gives %.1f KB", *smem_bytes / 1024.0,
                 m.Tmax, limit / 1024.0);
        return -1;
    }
    return 0;
}

template <typename real> const void *fused_kernel(int minb) {
    return minb == 2 ? reinterpret_cast<const void *>(fused_train_kernel<real, 2>)
                     : reinterpret_cast<const void *>(fused_train_kernel<real, 1>);
}

template <typename real> int fused_grid(FusedSmem *s, size_t smem_bytes, int max_batch, char *why, size_t whylen) {
    int dev = 0, sms = 0, per_sm = 0, sm_bytes = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sm_bytes, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
    s->minb = max_batch > 1 && 2 * (smem_bytes + 1024) <= (size_t)sm_bytes ? 2 : 1;
    const void *k = fused_kernel<real>(s->minb);
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_bytes));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, FUSED_THREADS, smem_bytes));
    if (per_sm < 1) {
        snprintf(why, whylen, "no block of the fused step fits on a multiprocessor (%.1f KB of shared memory)",
                 smem_bytes / 1024.0);
        return 0;
    }
    const int resident = per_sm * sms;
    return max_batch < resident ? max_batch : resident;
}

template <typename real> void fused_train(cudaStream_t st, const FusedArgs<real> &a, int grid, size_t smem_bytes) {
    void *args[] = {const_cast<FusedArgs<real> *>(&a)};
    CUDA_CHECK(cudaLaunchCooperativeKernel(fused_kernel<real>(a.s.minb), dim3(grid), dim3(FUSED_THREADS), args,
                                           smem_bytes, st));
    KERNEL_CHECK("fused_train_kernel");
}

void fused_profile_report() {
#ifdef FUSED_PROFILE
    unsigned long long prof[FP_NUM + 1] = {0};
    if (cudaMemcpyFromSymbol(prof, g_prof, sizeof prof) != cudaSuccess || !prof[FP_NUM]) {
        cudaGetLastError();
        return;
    }
    static const char *names[] = {
#define FUSED_PHASE_NAME(name) #name,
        FUSED_PHASES(FUSED_PHASE_NAME)};
    unsigned long long total = 0;
    for (int k = 0; k < FP_NUM; k++) total += prof[k];
    fprintf(stderr, "fused profile (block 0, cycles per step over %llu steps; total %.0f):\n", prof[FP_NUM],
            (double)total / prof[FP_NUM]);
    for (int k = 0; k < FP_NUM; k++)
        if (prof[k])
            fprintf(stderr, "  %-12s %9.0f  %5.1f%%\n", names[k], (double)prof[k] / prof[FP_NUM], 100.0 * prof[k] / total);
    const unsigned long long zero[FP_NUM + 1] = {0};
    if (cudaMemcpyToSymbol(g_prof, zero, sizeof zero) != cudaSuccess) cudaGetLastError();
#endif
}

#define MGPT_FUSED_INSTANTIATE(real)                                                                       \
    template int fused_plan<real>(const FusedModel &, int, FusedSmem *, size_t *, char *, size_t);              \
    template int fused_grid<real>(FusedSmem *, size_t, int, char *, size_t);                                            \
    template void fused_train<real>(cudaStream_t, const FusedArgs<real> &, int, size_t);

MGPT_FUSED_INSTANTIATE(double)
MGPT_FUSED_INSTANTIATE(float)

}  // namespace mgpt
