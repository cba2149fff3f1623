// The CPU reference layers (tensor_gpu/cpu/layers.c) one by one:
//  - every backward against central finite differences of L = sum(out * dout)
//    in fp64, with random inputs and a random dout, on ragged batches (n[b] of
//    1, of the full T, and in between), T = 1, sizes that are not powers of
//    two and grouped-query attention (NH = 4 with NKV = 4, 2, 1);
//  - backwards accumulate: the gradients start from random values, not zeros;
//  - forwards against direct computations, and zeros at padded positions;
//  - cross-entropy's loss and dlogits, Adam against a hand computation;
//  - every _f32 function against its _f64 twin on the same inputs;
//  - the mixed-precision products against the exact product of the rounded
//    operands.
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/pyrandom.h"
#include "common/util.h"
#include "tensor_gpu/layers.h"
#include "tensor_gpu/lowp.h"
#include "tensor_gpu/mixed.h"

// Finite differences in fp64: central, step FD_H. An analytic gradient g
// passes where |g - fd| <= FD_ATOL + FD_RTOL * |fd|.
#define FD_H 1e-6
#define FD_ATOL 1e-8
#define FD_RTOL 1e-6
// fp64 against a direct fp64 computation (other summation orders):
// |a - b| <= EX_ATOL + EX_RTOL * |b|.
#define EX_ATOL 1e-14
#define EX_RTOL 1e-12
// fp32 against fp64 on the same (float-representable) inputs, all of order 1:
// |f32 - f64| <= F32_ATOL + F32_RTOL * |f64|.
#define F32_ATOL 1e-5
#define F32_RTOL 1e-4

// ---------------------------------------------------------------------------
// helpers

static PyRandom rng;

static void seed(uint64_t s) { pyrandom_seed(&rng, s); }
static double unif(void) { return 2.0 * pyrandom_random(&rng) - 1.0; }   // U(-1, 1)

// Random values in (-scale, scale), rounded to float so that the fp32 and
// fp64 functions see the same inputs.
static double *rand_vec(size_t n, double scale) {
    double *x = xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (double)(float)(scale * unif());
    return x;
}

static double *copy_vec(const double *x, size_t n) {
    double *y = xmalloc(n * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

static float *to_f32(const double *x, size_t n) {
    float *y = xmalloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}

static double *to_f64(const float *x, size_t n) {
    double *y = xmalloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = (double)x[i];
    return y;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// a -= b: what a backward added onto its random starting values
static void sub(double *a, const double *b, size_t n) {
    for (size_t i = 0; i < n; i++) a[i] -= b[i];
}

// tokens (B, T+1): random ids in [0, V) at t <= n[b], -1 beyond (as batch_make)
static int *rand_tokens(int B, int T, const int *n, int V) {
    int *tok = xmalloc((size_t)B * (size_t)(T + 1) * sizeof *tok);
    for (int b = 0; b < B; b++)
        for (int t = 0; t <= T; t++)
            tok[b * (T + 1) + t] = t <= n[b] ? (int)pyrandom_randbelow(&rng, (uint64_t)V) : -1;
    return tok;
}

// Expect |a - b| <= atol + rtol*|b| elementwise (NaN only where both are NaN).
static void expect_close(const double *a, const double *b, size_t n, double atol, double rtol,
                         const char *what) {
    double worst = 0, maxdiff = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) && isnan(b[i])) continue;
        double diff = fabs(a[i] - b[i]);
        double r = isnan(diff) ? INFINITY : diff / (atol + rtol * fabs(b[i]));
        if (diff > maxdiff || isnan(diff)) maxdiff = diff;
        if (r > worst) worst = r, wi = i;
    }
    cr_log_info("%s: max |diff| %.3g", what, maxdiff);
    cr_expect(worst <= 1.0, "%s[%zu]: %.17g vs %.17g (|diff| %.3g > %g + %g*|ref|)", what, wi, a[wi],
              b[wi], fabs(a[wi] - b[wi]), atol, rtol);
}

static void expect_close_f32(const float *a32, const double *b, size_t n, const char *what) {
    double *a = to_f64(a32, n);
    expect_close(a, b, n, F32_ATOL, F32_RTOL, what);
    free(a);
}

// L(ctx) = sum(out * dout) at the context's current inputs.
typedef double (*LossFn)(void *ctx);

// Central differences of f with respect to each x[i], against the analytic g.
// Unless the gradient is known to vanish (must_move 0), the differences must
// not all be ~0, or the check would test nothing.
static void fd_check_ex(LossFn f, void *ctx, double *x, const double *g, size_t n, int must_move,
                        const char *what) {
    double *num = xmalloc(n * sizeof *num);
    for (size_t i = 0; i < n; i++) {
        const double x0 = x[i];
        x[i] = x0 + FD_H;
        double lp = f(ctx);
        x[i] = x0 - FD_H;
        double lm = f(ctx);
        x[i] = x0;
        num[i] = (lp - lm) / (2 * FD_H);
    }
    f(ctx);  // leave the context's outputs at the unperturbed inputs
    expect_close(g, num, n, FD_ATOL, FD_RTOL, what);
    double mx = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(num[i]));
    if (must_move)
        cr_expect(mx > 1e-3, "%s: finite differences all ~0 (max %.3g): the check tests nothing", what, mx);
    free(num);
}

static void fd_check(LossFn f, void *ctx, double *x, const double *g, size_t n, const char *what) {
    fd_check_ex(f, ctx, x, g, n, 1, what);
}

// Ragged batches used throughout: one document of 1 position, one at full T.
static const int N_RAGGED[] = {1, 5, 3};
static const int N_T1[] = {1, 1};

// ---------------------------------------------------------------------------
// encoder

typedef struct {
    double *wte, *wpe, *out, *dout;
    const int *tokens, *n;
    int B, T, C;
} EncCtx;

static double enc_loss(void *p) {
    EncCtx *c = p;
    encoder_forward_f64(c->out, c->tokens, c->n, c->wte, c->wpe, c->B, c->T, c->C);
    return dot(c->out, c->dout, (size_t)c->B * c->T * c->C);
}

static void check_encoder(int B, int T, const int *n, int C, int V) {
    const size_t NC = (size_t)B * T * C, VC = (size_t)V * C, TC = (size_t)T * C;
    int *tok = rand_tokens(B, T, n, V);
    EncCtx c = {rand_vec(VC, 1), rand_vec(TC, 1), xmalloc(NC * sizeof(double)), rand_vec(NC, 1),
                tok, n, B, T, C};
    enc_loss(&c);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < C; i++) {
                double want = t < n[b] ? c.wte[tok[b * (T + 1) + t] * C + i] + c.wpe[t * C + i] : 0.0;
                cr_expect(c.out[(b * T + t) * C + i] == want, "encoder out[%d,%d,%d]", b, t, i);
            }
    double *dwte0 = rand_vec(VC, 1), *dwpe0 = rand_vec(TC, 1);
    double *dwte = copy_vec(dwte0, VC), *dwpe = copy_vec(dwpe0, TC);
    encoder_backward_f64(dwte, dwpe, c.dout, tok, n, B, T, C);
    sub(dwte, dwte0, VC);
    sub(dwpe, dwpe0, TC);
    fd_check(enc_loss, &c, c.wte, dwte, VC, "encoder dwte");
    fd_check(enc_loss, &c, c.wpe, dwpe, TC, "encoder dwpe");

    float *wte32 = to_f32(c.wte, VC), *wpe32 = to_f32(c.wpe, TC), *dout32 = to_f32(c.dout, NC);
    float *out32 = xmalloc(NC * sizeof *out32);
    float *dwte32 = xcalloc(VC, sizeof *dwte32), *dwpe32 = xcalloc(TC, sizeof *dwpe32);
    encoder_forward_f32(out32, tok, n, wte32, wpe32, B, T, C);
    encoder_backward_f32(dwte32, dwpe32, dout32, tok, n, B, T, C);
    expect_close_f32(out32, c.out, NC, "encoder f32 out");
    expect_close_f32(dwte32, dwte, VC, "encoder f32 dwte");
    expect_close_f32(dwpe32, dwpe, TC, "encoder f32 dwpe");

    free(tok); free(c.wte); free(c.wpe); free(c.out); free(c.dout);
    free(dwte0); free(dwpe0); free(dwte); free(dwpe);
    free(wte32); free(wpe32); free(dout32); free(out32); free(dwte32); free(dwpe32);
}

Test(cpu_layers, encoder) {
    seed(1);
    check_encoder(3, 5, N_RAGGED, 5, 4);   // V = 4: tokens repeat, so dwte rows accumulate
    check_encoder(2, 1, N_T1, 3, 7);
}

// ---------------------------------------------------------------------------
// rmsnorm

typedef struct {
    double *inp, *out, *rstd, *dout;
    int N, C;
} NormCtx;

static double norm_loss(void *p) {
    NormCtx *c = p;
    rmsnorm_forward_f64(c->out, c->rstd, c->inp, c->N, c->C);
    return dot(c->out, c->dout, (size_t)c->N * c->C);
}

static void check_rmsnorm(int N, int C) {
    const size_t NC = (size_t)N * C;
    NormCtx c = {rand_vec(NC, 2), xmalloc(NC * sizeof(double)), xmalloc((size_t)N * sizeof(double)),
                 rand_vec(NC, 1), N, C};
    if (N > 2) memset(c.inp + (size_t)2 * C, 0, (size_t)C * sizeof(double));   // a padded row
    norm_loss(&c);
    double *want = xmalloc(NC * sizeof *want);
    for (int i = 0; i < N; i++) {
        double ms = 0;
        for (int j = 0; j < C; j++) ms += c.inp[i * C + j] * c.inp[i * C + j];
        double s = 1.0 / sqrt(ms / C + 1e-5);
        for (int j = 0; j < C; j++) want[i * C + j] = c.inp[i * C + j] * s;
    }
    expect_close(c.out, want, NC, EX_ATOL, EX_RTOL, "rmsnorm out vs direct");
    if (N > 2)
        for (int j = 0; j < C; j++) cr_expect(c.out[2 * C + j] == 0.0, "rmsnorm of a zero row is zero");

    double *d0 = rand_vec(NC, 1), *dinp = copy_vec(d0, NC);
    rmsnorm_backward_f64(dinp, c.dout, c.inp, c.rstd, N, C);
    sub(dinp, d0, NC);
    fd_check(norm_loss, &c, c.inp, dinp, NC, "rmsnorm dinp");

    float *inp32 = to_f32(c.inp, NC), *dout32 = to_f32(c.dout, NC);
    float *out32 = xmalloc(NC * sizeof *out32), *rstd32 = xmalloc((size_t)N * sizeof *rstd32);
    float *dinp32 = xcalloc(NC, sizeof *dinp32);
    rmsnorm_forward_f32(out32, rstd32, inp32, N, C);
    rmsnorm_backward_f32(dinp32, dout32, inp32, rstd32, N, C);
    expect_close_f32(out32, c.out, NC, "rmsnorm f32 out");
    double *rstd_scaled = xmalloc((size_t)N * sizeof *rstd_scaled);   // rstd is up to 316: compare relative
    float *rstd32_scaled = xmalloc((size_t)N * sizeof *rstd32_scaled);
    for (int i = 0; i < N; i++) rstd_scaled[i] = 1.0, rstd32_scaled[i] = (float)(rstd32[i] / c.rstd[i]);
    expect_close_f32(rstd32_scaled, rstd_scaled, (size_t)N, "rmsnorm f32 rstd / f64 rstd");
    expect_close_f32(dinp32, dinp, NC, "rmsnorm f32 dinp");

    free(c.inp); free(c.out); free(c.rstd); free(c.dout); free(want); free(d0); free(dinp);
    free(inp32); free(dout32); free(out32); free(rstd32); free(dinp32); free(rstd_scaled);
    free(rstd32_scaled);
}

Test(cpu_layers, rmsnorm) {
    seed(2);
    check_rmsnorm(7, 5);
    check_rmsnorm(1, 3);
}

// ---------------------------------------------------------------------------
// matmul

typedef struct {
    double *inp, *w, *out, *dout;
    int N, IC, OC;
} MatCtx;

static double mat_loss(void *p) {
    MatCtx *c = p;
    matmul_forward_f64(c->out, c->inp, c->w, c->N, c->IC, c->OC);
    return dot(c->out, c->dout, (size_t)c->N * c->OC);
}

static void check_matmul(int N, int IC, int OC) {
    const size_t NI = (size_t)N * IC, NO = (size_t)N * OC, W = (size_t)OC * IC;
    MatCtx c = {rand_vec(NI, 1), rand_vec(W, 1), xmalloc(NO * sizeof(double)), rand_vec(NO, 1), N, IC, OC};
    mat_loss(&c);
    double *want = xcalloc(NO, sizeof *want);
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++)
            for (int k = 0; k < IC; k++) want[i * OC + o] += c.inp[i * IC + k] * c.w[o * IC + k];
    expect_close(c.out, want, NO, EX_ATOL, EX_RTOL, "matmul out vs direct");

    double *dinp0 = rand_vec(NI, 1), *dw0 = rand_vec(W, 1);
    double *dinp = copy_vec(dinp0, NI), *dw = copy_vec(dw0, W);
    matmul_backward_f64(dinp, dw, c.dout, c.inp, c.w, N, IC, OC);
    sub(dinp, dinp0, NI);
    sub(dw, dw0, W);
    fd_check(mat_loss, &c, c.inp, dinp, NI, "matmul dinp");
    fd_check(mat_loss, &c, c.w, dw, W, "matmul dw");

    float *inp32 = to_f32(c.inp, NI), *w32 = to_f32(c.w, W), *dout32 = to_f32(c.dout, NO);
    float *out32 = xmalloc(NO * sizeof *out32);
    float *dinp32 = xcalloc(NI, sizeof *dinp32), *dw32 = xcalloc(W, sizeof *dw32);
    matmul_forward_f32(out32, inp32, w32, N, IC, OC);
    matmul_backward_f32(dinp32, dw32, dout32, inp32, w32, N, IC, OC);
    expect_close_f32(out32, c.out, NO, "matmul f32 out");
    expect_close_f32(dinp32, dinp, NI, "matmul f32 dinp");
    expect_close_f32(dw32, dw, W, "matmul f32 dw");

    free(c.inp); free(c.w); free(c.out); free(c.dout); free(want);
    free(dinp0); free(dw0); free(dinp); free(dw);
    free(inp32); free(w32); free(dout32); free(out32); free(dinp32); free(dw32);
}

Test(cpu_layers, matmul) {
    seed(3);
    check_matmul(7, 5, 3);
    check_matmul(1, 3, 11);
    check_matmul(6, 12, 48);
}

// ---------------------------------------------------------------------------
// attention

typedef struct {
    double *q, *k, *v, *out, *att, *dout;
    const int *n;
    int B, T, NH, NKV, HS;
} AttCtx;

static double att_loss(void *p) {
    AttCtx *c = p;
    attention_forward_f64(c->out, c->att, c->q, c->k, c->v, c->n, c->B, c->T, c->NH, c->NKV, c->HS);
    return dot(c->out, c->dout, (size_t)c->B * c->T * c->NH * c->HS);
}

// The layer's formula, written out plainly: no max shift, exp and sums as is.
static void att_direct(double *out, double *att, const AttCtx *c) {
    const int B = c->B, T = c->T, NH = c->NH, HS = c->HS, C = NH * HS, KV = c->NKV * HS;
    memset(out, 0, (size_t)B * T * C * sizeof *out);
    memset(att, 0, (size_t)B * NH * T * T * sizeof *att);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const int kvh = h / (NH / c->NKV);
            for (int t = 0; t < c->n[b]; t++) {
                double *a = att + (((size_t)b * NH + h) * T + t) * T, sum = 0;
                for (int s = 0; s <= t; s++) {
                    double d = 0;
                    for (int j = 0; j < HS; j++)
                        d += c->q[(b * T + t) * C + h * HS + j] * c->k[(b * T + s) * KV + kvh * HS + j];
                    a[s] = exp(d / sqrt((double)HS));
                    sum += a[s];
                }
                for (int s = 0; s <= t; s++) a[s] /= sum;
                for (int j = 0; j < HS; j++)
                    for (int s = 0; s <= t; s++)
                        out[(b * T + t) * C + h * HS + j] += a[s] * c->v[(b * T + s) * KV + kvh * HS + j];
            }
        }
}

static void check_attention(int B, int T, const int *n, int NH, int NKV, int HS) {
    const int C = NH * HS, KV = NKV * HS;
    const size_t NC = (size_t)B * T * C, NKVs = (size_t)B * T * KV, A = (size_t)B * NH * T * T;
    AttCtx c = {rand_vec(NC, 1.5), rand_vec(NKVs, 1.5), rand_vec(NKVs, 1), xmalloc(NC * sizeof(double)),
                xmalloc(A * sizeof(double)), rand_vec(NC, 1), n, B, T, NH, NKV, HS};
    att_loss(&c);
    double *want = xmalloc(NC * sizeof *want), *want_att = xmalloc(A * sizeof *want_att);
    att_direct(want, want_att, &c);
    expect_close(c.out, want, NC, EX_ATOL, EX_RTOL, "attention out vs direct");
    expect_close(c.att, want_att, A, EX_ATOL, EX_RTOL, "attention att vs direct");

    double *dq0 = rand_vec(NC, 1), *dk0 = rand_vec(NKVs, 1), *dv0 = rand_vec(NKVs, 1);
    double *dq = copy_vec(dq0, NC), *dk = copy_vec(dk0, NKVs), *dv = copy_vec(dv0, NKVs);
    attention_backward_f64(dq, dk, dv, c.dout, c.att, c.q, c.k, c.v, n, B, T, NH, NKV, HS);
    sub(dq, dq0, NC);
    sub(dk, dk0, NKVs);
    sub(dv, dv0, NKVs);
    // with T = 1 each query sees only its own key: softmax = 1, so dq = dk = 0 exactly
    fd_check_ex(att_loss, &c, c.q, dq, NC, T > 1, "attention dq");
    fd_check_ex(att_loss, &c, c.k, dk, NKVs, T > 1, "attention dk");
    fd_check(att_loss, &c, c.v, dv, NKVs, "attention dv");

    float *q32 = to_f32(c.q, NC), *k32 = to_f32(c.k, NKVs), *v32 = to_f32(c.v, NKVs);
    float *dout32 = to_f32(c.dout, NC), *out32 = xmalloc(NC * sizeof *out32);
    float *att32 = xmalloc(A * sizeof *att32);
    float *dq32 = xcalloc(NC, sizeof *dq32), *dk32 = xcalloc(NKVs, sizeof *dk32);
    float *dv32 = xcalloc(NKVs, sizeof *dv32);
    attention_forward_f32(out32, att32, q32, k32, v32, n, B, T, NH, NKV, HS);
    attention_backward_f32(dq32, dk32, dv32, dout32, att32, q32, k32, v32, n, B, T, NH, NKV, HS);
    expect_close_f32(out32, c.out, NC, "attention f32 out");
    expect_close_f32(att32, c.att, A, "attention f32 att");
    expect_close_f32(dq32, dq, NC, "attention f32 dq");
    expect_close_f32(dk32, dk, NKVs, "attention f32 dk");
    expect_close_f32(dv32, dv, NKVs, "attention f32 dv");

    free(c.q); free(c.k); free(c.v); free(c.out); free(c.att); free(c.dout); free(want); free(want_att);
    free(dq0); free(dk0); free(dv0); free(dq); free(dk); free(dv);
    free(q32); free(k32); free(v32); free(dout32); free(out32); free(att32);
    free(dq32); free(dk32); free(dv32);
}

Test(cpu_layers, attention_mha) {
    seed(4);
    check_attention(3, 5, N_RAGGED, 4, 4, 3);
}

Test(cpu_layers, attention_gqa_2kv) {
    seed(5);
    check_attention(3, 5, N_RAGGED, 4, 2, 3);
}

Test(cpu_layers, attention_gqa_1kv) {
    seed(6);
    check_attention(3, 5, N_RAGGED, 4, 1, 3);
}

Test(cpu_layers, attention_t1) {
    seed(7);
    check_attention(2, 1, N_T1, 4, 2, 3);
}

// ---------------------------------------------------------------------------
// relu and residual

typedef struct {
    double *inp, *out, *dout;
    size_t n;
} ReluCtx;

static double relu_loss(void *p) {
    ReluCtx *c = p;
    relu_forward_f64(c->out, c->inp, c->n);
    return dot(c->out, c->dout, c->n);
}

Test(cpu_layers, relu) {
    seed(8);
    const size_t n = 13;
    ReluCtx c = {rand_vec(n, 1), xmalloc(n * sizeof(double)), rand_vec(n, 1), n};
    for (size_t i = 0; i < n; i++)   // keep the finite differences off the kink
        if (fabs(c.inp[i]) < 0.05) c.inp[i] = c.inp[i] < 0 ? -0.05 : 0.05;
    relu_loss(&c);
    for (size_t i = 0; i < n; i++) cr_expect(c.out[i] == (c.inp[i] > 0 ? c.inp[i] : 0.0), "relu out[%zu]", i);
    double *d0 = rand_vec(n, 1), *dinp = copy_vec(d0, n);
    relu_backward_f64(dinp, c.dout, c.inp, n);
    sub(dinp, d0, n);
    fd_check(relu_loss, &c, c.inp, dinp, n, "relu dinp");

    // at exactly 0 the gradient is 0, as the original's (x > 0) * grad
    double zero_in = 0.0, zero_dout = 1.0, zero_d = 0.0;
    relu_backward_f64(&zero_d, &zero_dout, &zero_in, 1);
    cr_expect(zero_d == 0.0, "relu'(0) must be 0");

    float *inp32 = to_f32(c.inp, n), *dout32 = to_f32(c.dout, n), *out32 = xmalloc(n * sizeof *out32);
    float *dinp32 = xcalloc(n, sizeof *dinp32);
    relu_forward_f32(out32, inp32, n);
    relu_backward_f32(dinp32, dout32, inp32, n);
    expect_close_f32(out32, c.out, n, "relu f32 out");
    expect_close_f32(dinp32, dinp, n, "relu f32 dinp");
    free(c.inp); free(c.out); free(c.dout); free(d0); free(dinp);
    free(inp32); free(dout32); free(out32); free(dinp32);
}

Test(cpu_layers, residual) {
    seed(9);
    const size_t n = 11;
    double *a = rand_vec(n, 1), *b = rand_vec(n, 1), *out = xmalloc(n * sizeof *out);
    residual_forward_f64(out, a, b, n);
    for (size_t i = 0; i < n; i++) cr_expect(out[i] == a[i] + b[i], "residual out[%zu]", i);
    float *a32 = to_f32(a, n), *b32 = to_f32(b, n), *out32 = xmalloc(n * sizeof *out32);
    residual_forward_f32(out32, a32, b32, n);
    for (size_t i = 0; i < n; i++) cr_expect(out32[i] == a32[i] + b32[i], "residual f32 out[%zu]", i);
    free(a); free(b); free(out); free(a32); free(b32); free(out32);
}

// ---------------------------------------------------------------------------
// cross-entropy

typedef struct {
    double *logits, *dlogits, *losses;
    const int *tokens, *n;
    int B, T, V, token_mean;
} XentCtx;

static double xent_loss(void *p) {
    XentCtx *c = p;
    return crossentropy_forward_backward_f64(c->dlogits, c->losses, c->logits, c->tokens, c->n, c->B,
                                             c->T, c->V, c->token_mean);
}

static void check_crossentropy(int B, int T, const int *n, int V, int token_mean) {
    const size_t NV = (size_t)B * T * V, N = (size_t)B * T;
    int *tok = rand_tokens(B, T, n, V);
    XentCtx c = {rand_vec(NV, 3), xmalloc(NV * sizeof(double)), xmalloc(N * sizeof(double)), tok, n, B, T, V, token_mean};
    for (int b = 0; b < B; b++)   // padded logits must not be read
        for (size_t i = (size_t)n[b] * V; i < (size_t)T * V; i++) c.logits[(size_t)b * T * V + i] = NAN;
    double loss = xent_loss(&c);

    // direct: p = exp(l) / sum(exp(l)), loss = mean_b mean_t -log p[target]
    // (doc-mean) or the mean of -log p[target] over all positions (token-mean)
    double *want_d = xcalloc(NV, sizeof *want_d), *want_l = xcalloc(N, sizeof *want_l), want = 0, n_all = 0;
    for (int b = 0; b < B; b++) n_all += n[b];
    for (int b = 0; b < B; b++) {
        const double w = token_mean ? 1 / n_all : 1 / (n[b] * (double)B);
        double doc = 0;
        for (int t = 0; t < n[b]; t++) {
            const double *l = c.logits + ((size_t)b * T + t) * V;
            const int y = tok[b * (T + 1) + t + 1];
            double z = 0;
            for (int i = 0; i < V; i++) z += exp(l[i]);
            for (int i = 0; i < V; i++)
                want_d[((size_t)b * T + t) * V + i] = (exp(l[i]) / z - (i == y)) * w;
            want_l[b * T + t] = -log(exp(l[y]) / z);
            doc += want_l[b * T + t];
        }
        want += token_mean ? doc / n_all : doc / n[b] / B;
    }
    cr_log_info("crossentropy loss %.17g vs direct %.17g", loss, want);
    cr_expect(fabs(loss - want) <= EX_ATOL + EX_RTOL * fabs(want), "crossentropy loss %.17g vs direct %.17g",
              loss, want);
    expect_close(c.losses, want_l, N, EX_ATOL, EX_RTOL, "crossentropy losses vs direct");
    expect_close(c.dlogits, want_d, NV, EX_ATOL, EX_RTOL, "crossentropy dlogits vs direct");

    // dlogits is the gradient of the returned loss (the padded NaN logits are never perturbed
    // into reach: their dlogits is 0 and the loss does not depend on them)
    double *dl = copy_vec(c.dlogits, NV);
    fd_check(xent_loss, &c, c.logits, dl, NV, "crossentropy dlogits");

    float *logits32 = to_f32(c.logits, NV), *dl32 = xmalloc(NV * sizeof *dl32), *losses32 = xmalloc(N * sizeof *losses32);
    double loss32 = crossentropy_forward_backward_f32(dl32, losses32, logits32, tok, n, B, T, V, token_mean);
    cr_log_info("crossentropy f32 loss %.9g vs f64 %.17g", loss32, loss);
    cr_expect(fabs(loss32 - loss) <= F32_ATOL + F32_RTOL * fabs(loss), "crossentropy f32 loss %.9g vs %.17g",
              loss32, loss);
    expect_close_f32(losses32, c.losses, N, "crossentropy f32 losses");
    expect_close_f32(dl32, dl, NV, "crossentropy f32 dlogits");

    free(tok); free(c.logits); free(c.dlogits); free(c.losses); free(want_d); free(want_l);
    free(dl); free(logits32); free(dl32); free(losses32);
}

Test(cpu_layers, crossentropy) {
    seed(10);
    check_crossentropy(3, 5, N_RAGGED, 7, 0);
    check_crossentropy(2, 1, N_T1, 5, 0);
    check_crossentropy(1, 4, (const int[]){4}, 27, 0);
}

// --loss token-mean: every position weighs 1/sum(n), whatever its document's length
Test(cpu_layers, crossentropy_token_mean) {
    seed(11);
    check_crossentropy(3, 5, N_RAGGED, 7, 1);
    check_crossentropy(2, 1, N_T1, 5, 1);
}

// ---------------------------------------------------------------------------
// Adam

static void check_adam(int step, int zero_moments) {
    const size_t n = 17;
    const double lr = 0.0073, b1 = 0.85, b2 = 0.99, eps = 1e-8;
    double *p = rand_vec(n, 1), *g = rand_vec(n, 0.1), *m = rand_vec(n, 0.05), *v = rand_vec(n, 0.01);
    for (size_t i = 0; i < n; i++) {
        v[i] = fabs(v[i]);
        if (zero_moments) m[i] = v[i] = 0;
    }
    g[3] = 0;   // a parameter the batch did not touch
    double *p0 = copy_vec(p, n), *wp = copy_vec(p, n), *wm = copy_vec(m, n), *wv = copy_vec(v, n);
    for (size_t i = 0; i < n; i++) {   // by hand, as scalar_ref/engine_scalar.c adam()
        wm[i] = b1 * wm[i] + (1.0 - b1) * g[i];
        wv[i] = b2 * wv[i] + (1.0 - b2) * g[i] * g[i];
        double m_hat = wm[i] / (1.0 - pow(b1, step + 1.0));
        double v_hat = wv[i] / (1.0 - pow(b2, step + 1.0));
        wp[i] -= (lr * m_hat) / (sqrt(v_hat) + eps);
    }
    float *p32 = to_f32(p, n), *g32 = to_f32(g, n), *m32 = to_f32(m, n), *v32 = to_f32(v, n);
    adam_update_f64(p, g, m, v, n, lr, b1, b2, eps, step);
    adam_update_f32(p32, g32, m32, v32, n, lr, b1, b2, eps, step);
    expect_close(p, wp, n, 0, 1e-15, "adam p vs hand");
    expect_close(m, wm, n, 0, 1e-15, "adam m vs hand");
    expect_close(v, wv, n, 0, 1e-15, "adam v vs hand");
    for (size_t i = 0; i < n; i++)   // the update is not lost in p's rounding
        cr_expect(i == 3 && zero_moments ? p[i] == p0[i] : fabs(p[i] - p0[i]) > 1e-4 * lr,
                  "adam p[%zu] did not move as it should", i);
    expect_close_f32(p32, wp, n, "adam f32 p");
    expect_close_f32(m32, wm, n, "adam f32 m");
    expect_close_f32(v32, wv, n, "adam f32 v");
    free(p); free(g); free(m); free(v); free(wp); free(wm); free(wv); free(p0);
    free(p32); free(g32); free(m32); free(v32);
}

Test(cpu_layers, adam) {
    seed(11);
    check_adam(0, 1);
    check_adam(3, 0);
    check_adam(57, 0);
}

// ---------------------------------------------------------------------------
// the mixed-precision recipe's products (tensor_gpu/mixed.h) against the
// exact product of the rounded operands, computed in double: for bf16 and
// fp16 each output is that exact value rounded to L, except where the fp32
// sum lands on the other side of an L rounding boundary (one L ulp, rare);
// tf32's outputs are the fp32 sums (within fp32 summation error of the
// exact value, and farther from the unrounded operands' product); dinp and
// dw accumulate onto what they held.

// The largest difference from the exact product allowed: one ulp of L at x
// (bf16, fp16: a rounding boundary crossed), or fp32 summation error over
// terms whose magnitudes sum to sabs (tf32).
static double lowp_slack(Precision p, double x, double sabs) {
    int e;
    frexp(fabs(x), &e);   // |x| in [2^(e-1), 2^e)
    if (p == PREC_BF16) return ldexp(1.0, e - 1 - 7) * 1.0001;
    if (p == PREC_FP16) return fmax(ldexp(1.0, e - 1 - 10), 0x1p-24) * 1.0001;
    return 0x1p-18 * sabs;
}

static void check_mixed_matmul(Precision p, int N, int IC, int OC) {
    float (*rnd)(float) = p == PREC_BF16 ? round_bf16 : p == PREC_FP16 ? round_fp16 : round_tf32;
    MixedMM mm;
    mixed_mm_init(&mm, p, (size_t)N, (size_t)(IC > OC ? IC : OC), (size_t)IC * OC, NULL);
    double *x = rand_vec((size_t)N * IC, 1.0), *w = rand_vec((size_t)OC * IC, 0.5);
    double *dy = rand_vec((size_t)N * OC, 1.0), *dx0 = rand_vec((size_t)N * IC, 1.0);
    double *dw0 = rand_vec((size_t)OC * IC, 1.0);
    float *x32 = to_f32(x, (size_t)N * IC), *w32 = to_f32(w, (size_t)OC * IC), *dy32 = to_f32(dy, (size_t)N * OC);
    float *out = xmalloc((size_t)N * OC * sizeof *out);
    float *dx = to_f32(dx0, (size_t)N * IC), *dw = to_f32(dw0, (size_t)OC * IC);
    mixed_matmul_forward(&mm, out, x32, w32, N, IC, OC);
    mixed_matmul_backward(&mm, dx, dw, dy32, x32, w32, N, IC, OC);
#define R(v) ((double)rnd((float)(v)))
    long exact = 0, total = 0, apart = 0;
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {   // out[i,o] = L(sum_c rx[i,c] rw[o,c])
            double s = 0, sabs = 0, plain = 0;
            for (int c = 0; c < IC; c++) {
                const double t = R(x[(size_t)i * IC + c]) * R(w[(size_t)o * IC + c]);
                s += t, sabs += fabs(t), plain += x[(size_t)i * IC + c] * w[(size_t)o * IC + c];
            }
            const double want = p == PREC_TF32 ? s : R(s), got = out[(size_t)i * OC + o];
            cr_assert(fabs(got - want) <= lowp_slack(p, want, sabs), "%s forward [%d,%d]: %.9g, want %.9g",
                      precision_name(p), i, o, got, want);
            exact += got == want, total++;
            apart += fabs(got - plain) > lowp_slack(PREC_TF32, want, sabs);   // the operands were rounded
        }
    for (int i = 0; i < N; i++)
        for (int c = 0; c < IC; c++) {   // dx[i,c] = dx0 + L(sum_o rdy[i,o] rw[o,c]), the sum rounded alone
            double s = 0, sabs = 0;
            for (int o = 0; o < OC; o++) {
                const double t = R(dy[(size_t)i * OC + o]) * R(w[(size_t)o * IC + c]);
                s += t, sabs += fabs(t);
            }
            const double part = p == PREC_TF32 ? s : R(s);
            const double want = (double)((float)dx0[(size_t)i * IC + c] + (float)part), got = dx[(size_t)i * IC + c];
            cr_assert(fabs(got - want) <= lowp_slack(p, part, sabs) + 0x1p-23 * fabs(want),
                      "%s dinp [%d,%d]: %.9g, want %.9g", precision_name(p), i, c, got, want);
            exact += got == want, total++;
        }
    for (int o = 0; o < OC; o++)
        for (int c = 0; c < IC; c++) {   // dw[o,c] = dw0 + sum_i rdy[i,o] rx[i,c], in fp32: not rounded to L
            double s = dw0[(size_t)o * IC + c];
            for (int i = 0; i < N; i++) s += R(dy[(size_t)i * OC + o]) * R(x[(size_t)i * IC + c]);
            const double got = dw[(size_t)o * IC + c];
            cr_assert(fabs(got - s) <= 1e-5 * (1 + fabs(s)), "%s dw [%d,%d]: %.9g, want %.9g (fp32 sums)",
                      precision_name(p), o, c, got, s);
        }
#undef R
    cr_log_info("%s %dx%dx%d: %ld of %ld outputs exactly the rounded exact product; %ld of %ld forward outputs "
                "away from the unrounded operands' product", precision_name(p), N, IC, OC, exact, total, apart,
                (long)N * OC);
    if (p != PREC_TF32)
        cr_expect(exact >= total * 99 / 100, "%s: only %ld of %ld outputs exact", precision_name(p), exact, total);
    cr_expect(apart >= (long)N * OC / 2, "%s: the operands were not rounded (%ld of %ld outputs differ)",
              precision_name(p), apart, (long)N * OC);
    free(x); free(w); free(dy); free(dx0); free(dw0);
    free(x32); free(w32); free(dy32); free(out); free(dx); free(dw);
    mixed_mm_free(&mm);
}

Test(cpu_layers, mixed_matmul) {
    seed(17);
    static const Precision ps[3] = {PREC_BF16, PREC_FP16, PREC_TF32};
    for (int k = 0; k < 3; k++) {
        check_mixed_matmul(ps[k], 5, 7, 9);
        check_mixed_matmul(ps[k], 13, 16, 64);
        check_mixed_matmul(ps[k], 8, 64, 27);
    }
}
