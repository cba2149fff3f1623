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
#include <string.h>

#include "tensor_gpu/cpu/engine_cpu.h"

#if REAL_BITS == 64
typedef double real;
#define SFX(name) name##_f64
#define SQRT sqrt
#define EXP exp
#define LOG log
#elif REAL_BITS == 32
typedef float real;
#define SFX(name) name##_f32
#define SQRT sqrtf
#define EXP expf
#define LOG logf
#else
#error "compile with -DREAL_BITS=64 or -DREAL_BITS=32"
#endif

// Test-only (common/engine.h Fault): the fault these layers commit. The CPU
// engine sets it at the start of each step and sample and clears it at the
// end; everywhere else it is FAULT_NONE and the clean path runs.
Fault SFX(layers_fault) = FAULT_NONE;
#define FAULT SFX(layers_fault)

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
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < n[b]; t++) {
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
        real ss = 0;
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
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
        real dot = 0;                            // dy . x
        for (int c = 0; c < C; c++) dot += dy[c] * x[c];
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
            const real *wr = w + (size_t)oc * IC;
            real sum = 0;
            for (int ic = 0; ic < IC; ic++) sum += wr[ic] * x[ic];
            o[oc] = sum;
        }
    }
}

// dinp += dout @ w (N,IC); dw += dout^T @ inp (OC,IC)
void SFX(matmul_backward)(real *dinp, real *dw, const real *dout, const real *inp, const real *w,
                          int N, int IC, int OC) {
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

void SFX(attention_forward)(real *out, real *att, const real *q, const real *k, const real *v,
                            const int *n, int B, int T, int NH, int NKV, int HS) {
    const int C = NH * HS, KV = NKV * HS, group = NH / NKV;
    const real scale = SFX(att_scale)(HS);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            real *o = out + ((size_t)b * T + t) * C;                // (C)
            for (int h = 0; h < NH; h++) {
                real *a = att + (((size_t)b * NH + h) * T + t) * T;  // (T)
                real *oh = o + h * HS;                               // (HS)
                memset(a, 0, (size_t)T * sizeof(real));
                memset(oh, 0, (size_t)HS * sizeof(real));
                if (t >= n[b]) continue;                             // padding
                const int last = SFX(att_last)(t, n[b]);
                const int kvo = (h / group) * HS;                    // this head's k/v channels
                const real *qt = q + ((size_t)b * T + t) * C + h * HS;
                // pass 1: scaled scores and their max
                real mx = -INFINITY;
                for (int s = 0; s <= last; s++) {
                    const real *ks = k + ((size_t)b * T + s) * KV + kvo;
                    real dot = 0;
                    for (int j = 0; j < HS; j++) dot += qt[j] * ks[j];
                    a[s] = dot * scale;
                    if (a[s] > mx) mx = a[s];
                }
                // pass 2: softmax, shifted by the max
                real sum = 0;
                for (int s = 0; s <= last; s++) {
                    a[s] = EXP(a[s] - mx);
                    sum += a[s];
                }
                const real inv = (real)1 / sum;
                for (int s = 0; s <= last; s++) a[s] *= inv;
                // pass 3: weighted sum of the values
                for (int s = 0; s <= last; s++) {
                    const real *vs = v + ((size_t)b * T + s) * KV + kvo;
                    for (int j = 0; j < HS; j++) oh[j] += a[s] * vs[j];
                }
            }
        }
    }
}

// Per query row: datt[s] = dout.v[s]; dv[s] += att[s]*dout; softmax backward
// dpre[s] = att[s]*(datt[s] - sum_s' att[s']*datt[s']); then through the
// scaled dot product into dq and dk. datt is recomputed instead of stored, so
// no scratch buffer is needed.
void SFX(attention_backward)(real *dq, real *dk, real *dv, const real *dout, const real *att,
                             const real *q, const real *k, const real *v, const int *n, int B,
                             int T, int NH, int NKV, int HS) {
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

void SFX(residual_forward)(real *out, const real *a, const real *b, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = a[i] + b[i];
}

// ---------------------------------------------------------------------------
// softmax cross-entropy, fused forward + backward. logits, dlogits (B,T,V);
// losses (B,T). Every real position of document b carries weight 1/(n[b]*B),
// so the loss is the mean over documents of each document's mean.

double SFX(crossentropy_forward_backward)(real *dlogits, real *losses, const real *logits,
                                          const int *tokens, const int *n, int B, int T, int V) {
    double loss = 0;
    for (int b = 0; b < B; b++) {
        const real w = (real)1 / ((real)n[b] * (real)B);   // d loss / d losses[b,t]
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
            real sum = 0;
            for (int i = 0; i < V; i++) {
                dl[i] = EXP(l[i] - mx);        // exps, kept in dlogits for the next pass
                sum += dl[i];
            }
            const real inv = (real)1 / sum;
            for (int i = 0; i < V; i++) dl[i] = (dl[i] * inv - (i == target)) * w;
            // -log p[target] = log(sum) - (l[target] - mx): no log of an underflowed p
            losses[bt] = LOG(sum) - (l[target] - mx);
            doc += (double)losses[bt];
        }
        loss += doc / (double)n[b];
    }
    return loss / (double)B;
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
    for (size_t i = 0; i < count; i++) {
        m[i] = b1 * m[i] + ((real)1 - b1) * g[i];
        v[i] = b2 * v[i] + ((real)1 - b2) * (g[i] * g[i]);
        const real m_hat = m[i] / rc1;
        const real v_hat = v[i] / rc2;
        p[i] -= (lr * m_hat) / (SQRT(v_hat) + ep);
    }
}
