// The plain-C reference for every layer of tensor_gpu/layers.h: the CUDA
// kernels are checked against these functions, and the CPU engine runs on them.
//
// Written once and compiled twice (tensor_gpu/cpu/module.mk):
//   -DREAL_BITS=64: real = double, names end in _f64
//   -DREAL_BITS=32: real = float,  names end in _f32
// In the float build every sum accumulates in float, as a GPU kernel would;
// only the scalars computed once per call (Adam's bias corrections, the
// returned mean loss) are computed in double.
//
// Shapes (layers.h): B documents, T positions, C channels, NH query heads,
// NKV key/value heads, HS head size, KV = NKV*HS, V vocab, N = B*T rows.
// Padding: positions t >= n[b] are padding; forward passes write 0 there and
// backward passes add nothing from there.
#include "tensor_gpu/layers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "tensor_gpu/cpu/engine_cpu.h"

#if REAL_BITS == 64
typedef double real;
#define SFX(name) name##_f64
#define SQRT sqrt
#define EXP exp
#define LOG log
#define FMA fma
#elif REAL_BITS == 32
typedef float real;
#define SFX(name) name##_f32
#define SQRT sqrtf
#define EXP expf
#define LOG logf
#define FMA fmaf
#else
#error "compile with -DREAL_BITS=64 or -DREAL_BITS=32"
#endif

// Test-only (common/engine.h Fault): the fault these layers commit. The CPU
// engine sets it at the start of each step and sample and clears it at the
// end; everywhere else it is FAULT_NONE and the clean path runs.
Fault SFX(layers_fault) = FAULT_NONE;
#define FAULT SFX(layers_fault)

// The order of the sums (layers.h ReduceOrder), set by the CPU engine around
// each step like the fault; ORDER_SEQ everywhere else.
ReduceOrder SFX(layers_order) = ORDER_SEQ;
#define ORDER SFX(layers_order)

// ---------------------------------------------------------------------------
// sums: every reduction of the layers goes through dot(), so that one switch
// gives each cpu:ORDER engine its own rounding. ORDER_SEQ is the plain loop
// (s = 0; s += x*y in index order), the reference order.

// The term i of a sum: x[i*sx] * y[i*sy], or x[i*sx] alone when y is NULL.
static inline real SFX(term)(const real *x, size_t sx, const real *y, size_t sy, size_t i) {
    return y ? x[i * sx] * y[i * sy] : x[i * sx];
}

static real SFX(dot_pairwise)(const real *x, size_t sx, const real *y, size_t sy, size_t n) {
    if (n <= 4) {
        real s = 0;
        for (size_t i = 0; i < n; i++) s += SFX(term)(x, sx, y, sy, i);
        return s;
    }
    const size_t h = n / 2;
    return SFX(dot_pairwise)(x, sx, y, sy, h) + SFX(dot_pairwise)(x + h * sx, sx, y ? y + h * sy : NULL, sy, n - h);
}

// K interleaved partial sums (K = 4 or 8): term i goes to sum i % K; the
// sums are combined as a tree (pairs of neighbours, then pairs of pairs).
static real SFX(dot_acc)(const real *x, size_t sx, const real *y, size_t sy, size_t n, int K) {
    real acc[8] = {0};
    size_t i = 0;
    if (K == 4)
        for (; i + 4 <= n; i += 4)
            for (int j = 0; j < 4; j++) acc[j] += SFX(term)(x, sx, y, sy, i + (size_t)j);
    else
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) acc[j] += SFX(term)(x, sx, y, sy, i + (size_t)j);
    for (int j = 0; i < n; i++, j++) acc[j] += SFX(term)(x, sx, y, sy, i);
    for (int w = K / 2; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) acc[j] += acc[j + w];
    return acc[0];
}

// sum_{i<n} x[i*sx] * y[i*sy] (y NULL: the sum of x) in the configured order.
static real SFX(dot)(const real *x, size_t sx, const real *y, size_t sy, size_t n) {
    real s = 0;
    switch (ORDER) {
    case ORDER_REV:
        for (size_t i = n; i-- > 0;) s += SFX(term)(x, sx, y, sy, i);
        return s;
    case ORDER_PAIRWISE: return SFX(dot_pairwise)(x, sx, y, sy, n);
    case ORDER_ACC4: return SFX(dot_acc)(x, sx, y, sy, n, 4);
    case ORDER_ACC8: return SFX(dot_acc)(x, sx, y, sy, n, 8);
    case ORDER_FMA:
        for (size_t i = 0; i < n; i++) s = y ? FMA(x[i * sx], y[i * sy], s) : s + x[i * sx];
        return s;
    default:
        for (size_t i = 0; i < n; i++) s += SFX(term)(x, sx, y, sy, i);
        return s;
    }
}

// ---------------------------------------------------------------------------
// encoder: out[b,t,:] = wte[tokens[b,t]] + wpe[t]

void SFX(encoder_forward)(real *out, const int *tokens, const int *n, const real *wte,
                          const real *wpe, int B, int T, int C) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            real *o = out + ((size_t)b * T + t) * C;               // (C)
            if (t >= n[b]) {                                        // padding (its token is -1)
                memset(o, 0, (size_t)C * sizeof(real));
                continue;
            }
            const real *e = wte + (size_t)tokens[(size_t)b * (T + 1) + t] * C;  // (C)
            const real *p = wpe + (size_t)t * C;                               // (C)
            for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
        }
    }
}

void SFX(encoder_backward)(real *dwte, real *dwpe, const real *dout, const int *tokens,
                           const int *n, int B, int T, int C) {
    const int rev = ORDER != ORDER_SEQ;   // the other orders add the positions last to first
    for (int bi = 0; bi < B; bi++) {
        const int b = rev ? B - 1 - bi : bi;
        for (int ti = 0; ti < n[b]; ti++) {
            const int t = rev ? n[b] - 1 - ti : ti;
            const real *d = dout + ((size_t)b * T + t) * C;
            real *de = dwte + (size_t)tokens[(size_t)b * (T + 1) + t] * C;
            real *dp = dwpe + (size_t)t * C;
            for (int c = 0; c < C; c++) {
                de[c] += d[c];
                dp[c] += d[c];
            }
        }
    }
}

// ---------------------------------------------------------------------------
// rmsnorm (no weight): out = inp * rstd, rstd = (mean(inp^2) + eps)^-0.5
// A zero (padded) row stays zero.

void SFX(rmsnorm_forward)(real *out, real *rstd, const real *inp, int N, int C) {
    for (int i = 0; i < N; i++) {
        const real *x = inp + (size_t)i * C;   // (C)
        real *o = out + (size_t)i * C;         // (C)
        real ss = SFX(dot)(x, 1, x, 1, (size_t)C);
        real ms = ss * ((real)1 / (real)C);    // sum * n**-1, as the original
        real s = (real)1 / SQRT(ms + (real)RMSNORM_EPS);
        for (int c = 0; c < C; c++) o[c] = x[c] * s;
        rstd[i] = s;
    }
}

// With y = x*s, s = (mean(x^2) + eps)^-0.5, ds/dx_c = -s^3 x_c / C, so
// dx = s*dy - (s^3/C) * (dy.x) * x.
void SFX(rmsnorm_backward)(real *dinp, const real *dout, const real *inp, const real *rstd, int N,
                           int C) {
    for (int i = 0; i < N; i++) {
        const real *x = inp + (size_t)i * C;     // (C)
        const real *dy = dout + (size_t)i * C;   // (C)
        real *dx = dinp + (size_t)i * C;         // (C)
        const real s = rstd[i];
        if (FAULT == FAULT_RMSNORM_BWD) {        // test-only: drop the mean-square term
            for (int c = 0; c < C; c++) dx[c] += dy[c] * s;
            continue;
        }
        const real dot = SFX(dot)(dy, 1, x, 1, (size_t)C);   // dy . x
        const real k = s * s * s * dot / (real)C;
        for (int c = 0; c < C; c++) dx[c] += s * dy[c] - k * x[c];
    }
}

// ---------------------------------------------------------------------------
// matmul: out = inp @ w^T, inp (N,IC), w (OC,IC), out (N,OC)

void SFX(matmul_forward)(real *out, const real *inp, const real *w, int N, int IC, int OC) {
    for (int i = 0; i < N; i++) {
        const real *x = inp + (size_t)i * IC;
        real *o = out + (size_t)i * OC;
        for (int oc = 0; oc < OC; oc++) {
            o[oc] = SFX(dot)(w + (size_t)oc * IC, 1, x, 1, (size_t)IC);
        }
    }
}

// dinp += dout @ w (N,IC); dw += dout^T @ inp (OC,IC)
// ORDER_SEQ accumulates row by row into dinp and dw (each sum starts from
// what was there); the other orders take each element's sum in their order
// (strided) and add it.
void SFX(matmul_backward)(real *dinp, real *dw, const real *dout, const real *inp, const real *w,
                          int N, int IC, int OC) {
    if (ORDER != ORDER_SEQ) {
        for (int i = 0; i < N; i++)
            for (int ic = 0; ic < IC; ic++)
                dinp[(size_t)i * IC + ic] += SFX(dot)(dout + (size_t)i * OC, 1, w + ic, (size_t)IC, (size_t)OC);
        for (int oc = 0; oc < OC; oc++)
            for (int ic = 0; ic < IC; ic++)
                dw[(size_t)oc * IC + ic] += SFX(dot)(dout + oc, (size_t)OC, inp + ic, (size_t)IC, (size_t)N);
        return;
    }
    for (int i = 0; i < N; i++) {
        const real *d = dout + (size_t)i * OC;   // (OC)
        real *dx = dinp + (size_t)i * IC;        // (IC)
        for (int oc = 0; oc < OC; oc++) {
            const real *wr = w + (size_t)oc * IC;
            for (int ic = 0; ic < IC; ic++) dx[ic] += d[oc] * wr[ic];
        }
    }
    for (int oc = 0; oc < OC; oc++) {
        real *dwr = dw + (size_t)oc * IC;        // (IC)
        for (int i = 0; i < N; i++) {
            const real g = dout[(size_t)i * OC + oc];
            const real *x = inp + (size_t)i * IC;
            for (int ic = 0; ic < IC; ic++) dwr[ic] += g * x[ic];
        }
    }
}

// ---------------------------------------------------------------------------
// causal grouped-query attention
// q (B,T,C) head h in channels [h*HS, (h+1)*HS); k, v (B,T,KV); att (B,NH,T,T)
// holds the softmax weights (0 above the diagonal and on padded rows).

static real SFX(att_scale)(int HS) {
    if (FAULT == FAULT_ATTN_SCALE) return (real)1 / (real)HS;   // test-only
    return (real)1 / SQRT((real)HS);
}

// The last key position query t of a document of n positions attends to.
static int SFX(att_last)(int t, int n) {
    if (FAULT == FAULT_CAUSAL_MASK && t + 1 < n) return t + 1;  // test-only: one step ahead
    return t;
}

// The forward in three passes over the rows (the engine reports what lies
// between them: common/activations.h): the scaled scores, the softmax
// shifted by the row's max, the weighted sum of the values.
void SFX(attention_forward)(real *out, real *att, const real *q, const real *k, const real *v,
                            const int *n, int B, int T, int NH, int NKV, int HS) {
    SFX(attention_scores)(att, q, k, n, B, T, NH, NKV, HS);
    SFX(attention_softmax)(att, att, n, B, T, NH);
    SFX(attention_wsum)(out, att, v, n, B, T, NH, NKV, HS);
}

void SFX(attention_softmax)(real *att, const real *scores, const int *n, int B, int T, int NH) {
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const size_t row = (((size_t)b * NH + h) * T + t) * T;
                real *a = att + row;
                const real *sc = scores + row;
                if (t >= n[b]) {   // padding
                    memset(a, 0, (size_t)T * sizeof(real));
                    continue;
                }
                const int last = SFX(att_last)(t, n[b]);
                real mx = -INFINITY;
                for (int s = 0; s <= last; s++)
                    if (sc[s] > mx) mx = sc[s];
                for (int s = 0; s <= last; s++) a[s] = EXP(sc[s] - mx);
                for (int s = last + 1; s < T; s++) a[s] = 0;
                const real inv = (real)1 / SFX(dot)(a, 1, NULL, 0, (size_t)last + 1);
                for (int s = 0; s <= last; s++) a[s] *= inv;
            }
}

void SFX(attention_wsum)(real *out, const real *att, const real *v, const int *n, int B, int T, int NH, int NKV,
                         int HS) {
    const int C = NH * HS, KV = NKV * HS, group = NH / NKV;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                real *oh = out + ((size_t)b * T + t) * C + h * HS;   // (HS)
                if (t >= n[b]) {                                     // padding
                    memset(oh, 0, (size_t)HS * sizeof(real));
                    continue;
                }
                const int last = SFX(att_last)(t, n[b]);
                const real *a = att + (((size_t)b * NH + h) * T + t) * T;   // (T)
                const real *vh = v + (size_t)b * T * KV + (h / group) * HS;  // (T,HS) rows of stride KV
                for (int j = 0; j < HS; j++) oh[j] = SFX(dot)(a, 1, vh + j, (size_t)KV, (size_t)last + 1);
            }
}

// Per query row: datt[s] = dout.v[s]; dv[s] += att[s]*dout; softmax backward
// dpre[s] = att[s]*(datt[s] - sum_s' att[s']*datt[s']); then through the
// scaled dot product into dq and dk. datt is recomputed instead of stored, so
// no scratch buffer is needed.
static void SFX(attention_backward_ordered)(real *dq, real *dk, real *dv, const real *dout, const real *att,
                                            const real *q, const real *k, const real *v, const int *n, int B,
                                            int T, int NH, int NKV, int HS);

void SFX(attention_backward)(real *dq, real *dk, real *dv, const real *dout, const real *att,
                             const real *q, const real *k, const real *v, const int *n, int B,
                             int T, int NH, int NKV, int HS) {
    if (ORDER != ORDER_SEQ) {
        SFX(attention_backward_ordered)(dq, dk, dv, dout, att, q, k, v, n, B, T, NH, NKV, HS);
        return;
    }
    const int C = NH * HS, KV = NKV * HS, group = NH / NKV;
    const real scale = SFX(att_scale)(HS);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < n[b]; t++) {                               // padded rows add nothing
            const int last = SFX(att_last)(t, n[b]);
            for (int h = 0; h < NH; h++) {
                const int kvo = (h / group) * HS;
                const real *a = att + (((size_t)b * NH + h) * T + t) * T;  // (T)
                const size_t qo = ((size_t)b * T + t) * C + h * HS;
                const real *qt = q + qo, *d = dout + qo;                   // (HS)
                real *dqt = dq + qo;                                       // (HS)
                real wsum = 0;                                             // sum_s att[s]*datt[s]
                for (int s = 0; s <= last; s++) {
                    const size_t so = ((size_t)b * T + s) * KV + kvo;
                    real datt = 0;
                    for (int j = 0; j < HS; j++) datt += d[j] * v[so + j];
                    wsum += a[s] * datt;
                    for (int j = 0; j < HS; j++) dv[so + j] += a[s] * d[j];
                }
                for (int s = 0; s <= last; s++) {
                    const size_t so = ((size_t)b * T + s) * KV + kvo;
                    real datt = 0;
                    for (int j = 0; j < HS; j++) datt += d[j] * v[so + j];
                    const real dpre = a[s] * (datt - wsum) * scale;
                    for (int j = 0; j < HS; j++) {
                        dqt[j] += dpre * k[so + j];
                        dk[so + j] += dpre * qt[j];
                    }
                }
            }
        }
    }
}

// The other orders: per document and key/value head, the score gradients of
// the group's query heads are written out first (dpre (G,T,T)), then every
// output element is one sum in the configured order: dq over the keys, dk and
// dv over the queries (and the group's heads, in head order).
static void SFX(attention_backward_ordered)(real *dq, real *dk, real *dv, const real *dout, const real *att,
                                            const real *q, const real *k, const real *v, const int *n, int B,
                                            int T, int NH, int NKV, int HS) {
    const int C = NH * HS, KV = NKV * HS, group = NH / NKV;
    const real scale = SFX(att_scale)(HS);
    const size_t TT = (size_t)T * T;
    real *dpre = calloc((size_t)group * TT + TT, sizeof(real));   // (G,T,T) and datt (T,T)
    if (!dpre) die(EXIT_USAGE, "out of memory (attention backward scratch, %zu elements)", (size_t)group * TT + TT);
    real *datt = dpre + (size_t)group * TT;
    for (int b = 0; b < B; b++) {
        const int nb = n[b];
        for (int g = 0; g < NKV; g++) {
            const int kvo = g * HS;
            const real *kb = k + (size_t)b * T * KV + kvo, *vb = v + (size_t)b * T * KV + kvo;   // (T,HS), stride KV
            memset(dpre, 0, (size_t)group * TT * sizeof(real));
            for (int hh = 0; hh < group; hh++) {
                const int h = g * group + hh;
                real *dp = dpre + (size_t)hh * TT;                                   // (T,T)
                for (int t = 0; t < nb; t++) {
                    const int last = SFX(att_last)(t, nb);
                    const real *a = att + (((size_t)b * NH + h) * T + t) * T;         // (T)
                    const real *d = dout + ((size_t)b * T + t) * C + h * HS;         // (HS)
                    real *dt = datt + (size_t)t * T;
                    for (int s = 0; s <= last; s++) dt[s] = SFX(dot)(d, 1, vb + (size_t)s * KV, 1, (size_t)HS);
                    const real wsum = SFX(dot)(a, 1, dt, 1, (size_t)last + 1);
                    for (int s = 0; s <= last; s++) dp[(size_t)t * T + s] = a[s] * (dt[s] - wsum) * scale;
                    real *dqt = dq + ((size_t)b * T + t) * C + h * HS;
                    for (int j = 0; j < HS; j++)
                        dqt[j] += SFX(dot)(dp + (size_t)t * T, 1, kb + j, (size_t)KV, (size_t)last + 1);
                }
            }
            for (int s = 0; s < nb; s++)
                for (int j = 0; j < HS; j++) {
                    real sk = 0, sv = 0;
                    for (int hh = 0; hh < group; hh++) {
                        const int h = g * group + hh;
                        const real *qh = q + (size_t)b * T * C + h * HS + j;                  // (T), stride C
                        const real *oh = dout + (size_t)b * T * C + h * HS + j;               // (T), stride C
                        const real *ah = att + ((size_t)b * NH + h) * TT + s;                 // (T), stride T
                        sk += SFX(dot)(dpre + (size_t)hh * TT + s, (size_t)T, qh, (size_t)C, (size_t)nb);
                        sv += SFX(dot)(ah, (size_t)T, oh, (size_t)C, (size_t)nb);
                    }
                    dk[((size_t)b * T + s) * KV + kvo + j] += sk;
                    dv[((size_t)b * T + s) * KV + kvo + j] += sv;
                }
        }
    }
    free(dpre);
}

void SFX(attention_scores)(real *scores, const real *q, const real *k, const int *n, int B, int T, int NH, int NKV,
                           int HS) {
    const int C = NH * HS, KV = NKV * HS, group = NH / NKV;
    const real scale = SFX(att_scale)(HS);
    memset(scores, 0, (size_t)B * NH * T * T * sizeof(real));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < n[b]; t++) {
                real *a = scores + (((size_t)b * NH + h) * T + t) * T;
                const real *qt = q + ((size_t)b * T + t) * C + h * HS;
                const int last = SFX(att_last)(t, n[b]);
                for (int s = 0; s <= last; s++)
                    a[s] = SFX(dot)(qt, 1, k + ((size_t)b * T + s) * KV + (h / group) * HS, 1, (size_t)HS) * scale;
            }
}

void SFX(attention_backward_probe)(real *dscores, real *datt, const real *dout, const real *att, const real *v,
                                   const int *n, int B, int T, int NH, int NKV, int HS) {
    const int C = NH * HS, KV = NKV * HS, group = NH / NKV;
    memset(dscores, 0, (size_t)B * NH * T * T * sizeof(real));
    memset(datt, 0, (size_t)B * NH * T * T * sizeof(real));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < n[b]; t++) {
                const size_t row = (((size_t)b * NH + h) * T + t) * T;
                const real *a = att + row, *d = dout + ((size_t)b * T + t) * C + h * HS;
                const int last = SFX(att_last)(t, n[b]);
                for (int s = 0; s <= last; s++)
                    datt[row + s] = SFX(dot)(d, 1, v + ((size_t)b * T + s) * KV + (h / group) * HS, 1, (size_t)HS);
                const real wsum = SFX(dot)(a, 1, datt + row, 1, (size_t)last + 1);
                for (int s = 0; s <= last; s++) dscores[row + s] = a[s] * (datt[row + s] - wsum);
            }
}

// ---------------------------------------------------------------------------
// relu and the residual add (elementwise)

void SFX(relu_forward)(real *out, const real *inp, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = inp[i] > 0 ? inp[i] : 0;
}

// relu'(0) = 0, as the original's (x > 0) * grad.
void SFX(relu_backward)(real *dinp, const real *dout, const real *inp, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (inp[i] > 0) dinp[i] += dout[i];
}

void SFX(relu_forward_gated)(real *out, const real *inp, const unsigned char *open, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = open[i] ? inp[i] : 0;
}

void SFX(relu_backward_gated)(real *dinp, const real *dout, const unsigned char *open, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (open[i]) dinp[i] += dout[i];
}

void SFX(residual_forward)(real *out, const real *a, const real *b, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = a[i] + b[i];
}

// ---------------------------------------------------------------------------
// softmax cross-entropy, fused forward + backward. logits, dlogits (B,T,V);
// losses (B,T). Every real position of document b carries weight 1/(n[b]*B),
// so the loss is the mean over documents of each document's mean.

double SFX(crossentropy_forward_backward)(real *dlogits, real *losses, const real *logits,
                                          const int *tokens, const int *n, int B, int T, int V, int token_mean) {
    double loss = 0, n_all = 0;
    for (int b = 0; b < B; b++) n_all += n[b];
    for (int b = 0; b < B; b++) {
        // d loss / d losses[b,t]
        const real w = token_mean ? (real)(1.0 / n_all) : (real)1 / ((real)n[b] * (real)B);
        double doc = 0;
        for (int t = 0; t < T; t++) {
            const size_t bt = (size_t)b * T + t;
            const real *l = logits + bt * V;   // (V)
            real *dl = dlogits + bt * V;       // (V)
            if (t >= n[b]) {                   // padding: no loss, no gradient
                memset(dl, 0, (size_t)V * sizeof(real));
                losses[bt] = 0;
                continue;
            }
            const int target = tokens[(size_t)b * (T + 1) + t + 1];
            real mx = l[0];
            for (int i = 1; i < V; i++)
                if (l[i] > mx) mx = l[i];
            for (int i = 0; i < V; i++) dl[i] = EXP(l[i] - mx);   // exps, kept in dlogits for the next pass
            const real sum = SFX(dot)(dl, 1, NULL, 0, (size_t)V);
            const real inv = (real)1 / sum;
            for (int i = 0; i < V; i++) dl[i] = (dl[i] * inv - (i == target)) * w;
            // -log p[target] = log(sum) - (l[target] - mx): no log of an underflowed p
            losses[bt] = LOG(sum) - (l[target] - mx);
            doc += (double)losses[bt];
        }
        loss += token_mean ? doc : doc / (double)n[b];
    }
    return token_mean ? loss / n_all : loss / (double)B;
}

// ---------------------------------------------------------------------------
// Adam, exactly as the original (no weight decay). The bias corrections are
// per-call scalars, computed in double (on the host, for a GPU kernel).

void SFX(adam_update)(real *p, const real *g, real *m, real *v, size_t count, double lr_t,
                      double beta1, double beta2, double eps, int step) {
    const double c1 = 1.0 - pow(beta1, (double)(step + 1));
    // test-only fault: the second-moment correction uses beta1
    const double c2 = 1.0 - pow(FAULT == FAULT_ADAM_BIAS ? beta1 : beta2, (double)(step + 1));
    const real b1 = (real)beta1, b2 = (real)beta2, rc1 = (real)c1, rc2 = (real)c2;
    const real lr = (real)lr_t, ep = (real)eps;
    if (ORDER == ORDER_FMA) {   // the cpu:fma engine's update: every multiply-add fused
        for (size_t i = 0; i < count; i++) {
            m[i] = FMA(b1, m[i], ((real)1 - b1) * g[i]);
            v[i] = FMA(b2, v[i], ((real)1 - b2) * (g[i] * g[i]));
            p[i] -= (lr * (m[i] / rc1)) / (SQRT(v[i] / rc2) + ep);
        }
        return;
    }
    for (size_t i = 0; i < count; i++) {
        m[i] = b1 * m[i] + ((real)1 - b1) * g[i];
        v[i] = b2 * v[i] + ((real)1 - b2) * (g[i] * g[i]);
        const real m_hat = m[i] / rc1;
        const real v_hat = v[i] / rc2;
        p[i] -= (lr * m_hat) / (SQRT(v_hat) + ep);
    }
}
