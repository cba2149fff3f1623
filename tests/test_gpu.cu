// test_gpu: the CUDA backend checked against the CPU reference.
//
//   1. every kernel against its function in tensor_gpu/cpu/layers.c (the
//      _f64 and _f32 builds), on fresh random inputs of several shapes (sizes
//      that are not powers of two, T = 1, T > 32, head size > 32, ragged
//      batches, grouped-query heads, B*T = 4096), outputs poisoned with NaN before each
//      launch so that an element left unwritten fails; backward kernels both
//      overwriting (poisoned) and accumulating (onto random gradients); the
//      weight gradients both as one cuBLAS product and split-K (a short last
//      chunk, a scratch that holds fewer chunks, two runs the same bits);
//   2. the engine against the CPU engine, in lockstep over several steps
//      (batches up to 32 x 16 rows: its weight gradients split-K), and
//      under --loss token-mean on each path (token_mean_vs_cpu; the
//      cross-entropy kernel is checked in both losses in 1.);
//   3. determinism: two engines from the same initial weights give the same
//      bits over several steps (graph replay included), and so does an
//      engine without CUDA graphs;
//   4. sampling against the CPU engine, and the refusals.
// Prints the largest error per kernel; exits 1 on any failure. Where there is
// no usable GPU it says why and exits 0 (after checking that the engine
// refuses with that message).
//
//   build/test_gpu [--seed N] [--bench]
//   build/test_gpu --attn-bench [CALLS] [--attn-size e512|e128|e16|gqa]
// --bench instead times the weight gradients (one product vs split-K) and
// the embedding backward (the former gather vs the kernel) at issue 8's
// sizes, in microseconds per call. --attn-bench: instead of the tests, times
// the attention kernels (rows against tiled) at issue 8's sizes
// (scripts/attn_bench.sh). Both exit 2 without a GPU.
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "tensor_gpu/cuda/cuda_check.cuh"
#include "tensor_gpu/cuda/kernels.cuh"
#include "tensor_gpu/cuda/mixed.cuh"
#include "tests/lockstep_tols.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

extern "C" {
#include "common/engine.h"
#include "common/model.h"
#include "common/pyrandom.h"
#include "common/settings.h"
#include "common/util.h"
#include "tensor_gpu/cpu/engine_cpu.h"
#include "tensor_gpu/layers.h"
#include "tensor_gpu/lowp.h"
#include "tensor_gpu/mixed.h"
}
#include "tensor_gpu/cuda/engine_cuda.h"

using namespace mgpt;

// ---------------------------------------------------------------------------
// the CPU reference, by overloading on the precision

#define DEFINE_REFS(R, sfx)                                                                                     \
    static void ref_encoder_forward(R *o, const int *tok, const int *n, const R *wte, const R *wpe, int B, int T, \
                                    int C) {                                                                   \
        encoder_forward_##sfx(o, tok, n, wte, wpe, B, T, C);                                                   \
    }                                                                                                          \
    static void ref_encoder_backward(R *dwte, R *dwpe, const R *dout, const int *tok, const int *n, int B, int T, \
                                     int C) {                                                                  \
        encoder_backward_##sfx(dwte, dwpe, dout, tok, n, B, T, C);                                             \
    }                                                                                                          \
    static void ref_rmsnorm_forward(R *o, R *rstd, const R *inp, int N, int C) {                               \
        rmsnorm_forward_##sfx(o, rstd, inp, N, C);                                                             \
    }                                                                                                          \
    static void ref_rmsnorm_backward(R *dinp, const R *dout, const R *inp, const R *rstd, int N, int C) {      \
        rmsnorm_backward_##sfx(dinp, dout, inp, rstd, N, C);                                                   \
    }                                                                                                          \
    static void ref_matmul_forward(R *o, const R *inp, const R *w, int N, int IC, int OC) {                    \
        matmul_forward_##sfx(o, inp, w, N, IC, OC);                                                            \
    }                                                                                                          \
    static void ref_matmul_backward(R *dinp, R *dw, const R *dout, const R *inp, const R *w, int N, int IC,     \
                                    int OC) {                                                                  \
        matmul_backward_##sfx(dinp, dw, dout, inp, w, N, IC, OC);                                              \
    }                                                                                                          \
    static void ref_attention_forward(R *o, R *att, const R *q, const R *k, const R *v, const int *n, int B,   \
                                      int T, int NH, int NKV, int HS) {                                        \
        attention_forward_##sfx(o, att, q, k, v, n, B, T, NH, NKV, HS);                                        \
    }                                                                                                          \
    static void ref_attention_backward(R *dq, R *dk, R *dv, const R *dout, const R *att, const R *q,          \
                                       const R *k, const R *v, const int *n, int B, int T, int NH, int NKV,     \
                                       int HS) {                                                               \
        attention_backward_##sfx(dq, dk, dv, dout, att, q, k, v, n, B, T, NH, NKV, HS);                        \
    }                                                                                                          \
    static void ref_relu_forward(R *o, const R *inp, size_t c) { relu_forward_##sfx(o, inp, c); }              \
    static void ref_relu_backward(R *dinp, const R *dout, const R *inp, size_t c) {                            \
        relu_backward_##sfx(dinp, dout, inp, c);                                                               \
    }                                                                                                          \
    static void ref_residual_forward(R *o, const R *a, const R *b, size_t c) { residual_forward_##sfx(o, a, b, c); } \
    static double ref_crossentropy(R *dl, R *losses, const R *logits, const int *tok, const int *n, int B,     \
                                   int T, int V, bool token_mean) {                                            \
        return crossentropy_forward_backward_##sfx(dl, losses, logits, tok, n, B, T, V, token_mean);              \
    }                                                                                                          \
    static void ref_adam(R *p, const R *g, R *m, R *v, size_t c, double lr, double b1, double b2, double eps,  \
                         int step) {                                                                           \
        adam_update_##sfx(p, g, m, v, c, lr, b1, b2, eps, step);                                               \
    }

DEFINE_REFS(double, f64)
DEFINE_REFS(float, f32)

template <typename real> const char *prec_name();
template <> const char *prec_name<double>() { return "fp64"; }
template <> const char *prec_name<float>() { return "fp32"; }

// Largest allowed max|gpu - cpu| / max|cpu| per output tensor: the two differ
// only in summation order (and exp/log by an ulp).
template <typename real> double kernel_tol();
template <> double kernel_tol<double>() { return 1e-12; }
template <> double kernel_tol<float>() { return 1e-5; }

// ---------------------------------------------------------------------------
// bookkeeping

static int g_failures = 0;

struct KernelStat {
    int checks = 0, fails = 0;
    double max_abs = 0, max_rel = 0;
    bool exact = true;
};
static std::map<std::string, KernelStat> g_stats[2];   // [0] fp64, [1] fp32
static std::vector<std::string> g_order[2];

static const char *prec_name_of(Precision p) { return p == PREC_FP64 ? "fp64" : "fp32"; }

template <typename real> int prec_index() { return sizeof(real) == sizeof(float) ? 1 : 0; }

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    g_failures++;
}

struct Shape {
    int B, T, C, NH, NKV, V;
    int HS() const { return C / NH; }
    int KV() const { return NKV * HS(); }
    int N() const { return B * T; }
    std::string str() const {
        char b[128];
        snprintf(b, sizeof b, "B=%d T=%d C=%d NH=%d NKV=%d HS=%d V=%d", B, T, C, NH, NKV, HS(), V);
        return b;
    }
};

// gpu against ref (both of n elements); the error relative to the largest |ref|.
template <typename real>
static void check(const char *kernel, const char *what, const Shape &s, const real *gpu, const real *ref, size_t n) {
    double max_ref = 0, max_abs = 0;
    size_t worst = 0, n_nan = 0, first_nan = 0;
    bool exact = true;
    for (size_t i = 0; i < n; i++) {
        const double g = gpu[i], r = ref[i];
        if (!std::isfinite(g) || !std::isfinite(r)) {
            if (n_nan++ == 0) first_nan = i;
            exact = false;
            continue;
        }
        if (std::memcmp(&gpu[i], &ref[i], sizeof(real)) && g != r) exact = false;
        if (std::fabs(r) > max_ref) max_ref = std::fabs(r);
        const double e = std::fabs(g - r);
        if (e > max_abs) {
            max_abs = e;
            worst = i;
        }
    }
    const double rel = max_abs == 0 ? 0 : max_abs / (max_ref > 0 ? max_ref : 1e-300);
    const bool ok = n_nan == 0 && rel <= kernel_tol<real>();
    const int pi = prec_index<real>();
    if (!g_stats[pi].count(kernel)) g_order[pi].push_back(kernel);
    KernelStat &st = g_stats[pi][kernel];
    st.checks++;
    if (!ok) st.fails++;
    if (max_abs > st.max_abs) st.max_abs = max_abs;
    if (rel > st.max_rel) st.max_rel = rel;
    if (!exact) st.exact = false;
    if (n_nan)
        failf("%s %s: %s [%s]: %zu element(s) not finite, the first [%zu] = %g (cpu %g): unwritten or NaN",
              prec_name<real>(), kernel, what, s.str().c_str(), n_nan, first_nan, (double)gpu[first_nan],
              (double)ref[first_nan]);
    else if (!ok)
        failf("%s %s: %s [%s]: max|gpu-cpu| %.3e at [%zu] (gpu %.17g, cpu %.17g), relative %.3e > %.0e",
              prec_name<real>(), kernel, what, s.str().c_str(), max_abs, worst, (double)gpu[worst], (double)ref[worst],
              rel, kernel_tol<real>());
}

template <typename real>
static void check(const char *kernel, const char *what, const Shape &s, const std::vector<real> &gpu,
                  const std::vector<real> &ref) {
    if (gpu.size() != ref.size()) {
        failf("%s %s: %s: sizes differ (%zu, %zu)", prec_name<real>(), kernel, what, gpu.size(), ref.size());
        return;
    }
    check(kernel, what, s, gpu.data(), ref.data(), gpu.size());
}

// ---------------------------------------------------------------------------
// random inputs and device buffers

struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
    uint64_t next() {   // splitmix64
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return (double)(next() >> 11) * (1.0 / 9007199254740992.0); }   // [0,1)
    int below(int n) { return (int)(next() % (uint64_t)n); }
    double normal() {
        double u = uniform(), v = uniform();
        if (u < 1e-300) u = 1e-300;
        return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
    }
};

template <typename real> static std::vector<real> randn(Rng &r, size_t n, double scale = 1.0) {
    std::vector<real> x(n);
    for (auto &e : x) e = (real)(scale * r.normal());
    return x;
}

// Ragged lengths: document 0 is the longest (T), the last (B > 1) has 1 position.
static std::vector<int> make_lengths(Rng &r, int B, int T) {
    std::vector<int> n((size_t)B);
    for (int b = 0; b < B; b++) n[b] = 1 + r.below(T);
    n[0] = T;
    if (B > 1) n[B - 1] = 1;
    return n;
}

// (B, T+1): tokens at t <= n[b], -1 after.
static std::vector<int> make_tokens(Rng &r, const std::vector<int> &n, int T, int V) {
    const int B = (int)n.size();
    std::vector<int> tok((size_t)B * (T + 1), -1);
    for (int b = 0; b < B; b++)
        for (int t = 0; t <= n[b]; t++) tok[(size_t)b * (T + 1) + t] = r.below(V);
    return tok;
}

template <typename X> struct DevBuf {
    X *p = nullptr;
    size_t n = 0;
    explicit DevBuf(size_t count) : n(count) { p = static_cast<X *>(DEVICE_MALLOC((count ? count : 1) * sizeof(X), "test buffer")); }
    explicit DevBuf(const std::vector<X> &h) : DevBuf(h.size()) { up(h); }
    DevBuf(const DevBuf &) = delete;
    DevBuf &operator=(const DevBuf &) = delete;
    ~DevBuf() {
        if (cudaFree(p) != cudaSuccess) cudaGetLastError();
    }
    void up(const std::vector<X> &h) {
        if (h.size() != n) throw CudaError("test: upload of the wrong size");
        CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(X), cudaMemcpyHostToDevice));
    }
    std::vector<X> down() const {
        CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<X> h(n);
        CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(X), cudaMemcpyDeviceToHost));
        return h;
    }
    // all bits set: a NaN in float and in double
    void poison() { CUDA_CHECK(cudaMemset(p, 0xff, n * sizeof(X))); }
};

static const cudaStream_t ST = 0;   // the tests launch on the default stream

// The gradient a backward check starts from: when it accumulates, random (and
// uploaded into d); when it overwrites, 0 (and d poisoned).
template <typename real> static std::vector<real> grad_start(Rng &r, DevBuf<real> &d, bool acc) {
    if (!acc) {
        d.poison();
        return std::vector<real>(d.n, 0);
    }
    std::vector<real> h = randn<real>(r, d.n);
    d.up(h);
    return h;
}

// ---------------------------------------------------------------------------
// per-kernel tests

template <typename real> static void test_encoder(const Shape &s, Rng &r) {
    const int B = s.B, T = s.T, C = s.C, V = s.V, N = s.N(), Tw = T + 2;
    const std::vector<int> n = make_lengths(r, B, T), tok = make_tokens(r, n, T, V);
    const std::vector<real> wte = randn<real>(r, (size_t)V * C), wpe = randn<real>(r, (size_t)T * C);
    DevBuf<int> d_n(n), d_tok(tok);
    DevBuf<real> d_wte(wte), d_wpe(wpe);
    DevBuf<real> d_enc((size_t)N * C), d_x0((size_t)N * C), d_r0((size_t)N), d_ln((size_t)N * C), d_lr((size_t)N);

    std::vector<real> enc((size_t)N * C), x0((size_t)N * C), r0((size_t)N), ln((size_t)N * C), lr((size_t)N);
    ref_encoder_forward(enc.data(), tok.data(), n.data(), wte.data(), wpe.data(), B, T, C);
    ref_rmsnorm_forward(x0.data(), r0.data(), enc.data(), N, C);
    ref_rmsnorm_forward(ln.data(), lr.data(), x0.data(), N, C);

    d_enc.poison();
    encoder_forward(ST, d_enc.p, d_tok.p, d_n.p, d_wte.p, d_wpe.p, B, T, C);
    check("encoder_forward", "out", s, d_enc.down(), enc);

    for (auto *d : {&d_enc, &d_x0, &d_ln}) d->poison();
    d_r0.poison();
    d_lr.poison();
    encoder_rmsnorm_forward(ST, d_enc.p, d_x0.p, d_r0.p, d_ln.p, d_lr.p, d_tok.p, d_n.p, d_wte.p, d_wpe.p, B, T, C);
    check("encoder_rmsnorm_forward (fused)", "enc", s, d_enc.down(), enc);
    check("encoder_rmsnorm_forward (fused)", "x0", s, d_x0.down(), x0);
    check("encoder_rmsnorm_forward (fused)", "rstd0", s, d_r0.down(), r0);
    check("encoder_rmsnorm_forward (fused)", "ln", s, d_ln.down(), ln);
    check("encoder_rmsnorm_forward (fused)", "ln_rstd", s, d_lr.down(), lr);

    // backward: dwpe on the device has Tw > T rows (block_size rows in the
    // engine); the rows past T get nothing
    const std::vector<real> dout = randn<real>(r, (size_t)N * C);
    DevBuf<real> d_dout(dout), d_dwte((size_t)V * C), d_dwpe((size_t)Tw * C);
    for (int acc = 0; acc < 2; acc++) {
        std::vector<real> dwte = grad_start(r, d_dwte, acc), dwpe = grad_start(r, d_dwpe, acc);
        encoder_backward(ST, d_dwte.p, d_dwpe.p, d_dout.p, d_tok.p, d_n.p, B, T, C, V, Tw, acc != 0);
        ref_encoder_backward(dwte.data(), dwpe.data(), dout.data(), tok.data(), n.data(), B, T, C);
        check("encoder_backward", acc ? "dwte (+=)" : "dwte", s, d_dwte.down(), dwte);
        check("encoder_backward", acc ? "dwpe (+=)" : "dwpe", s, d_dwpe.down(), dwpe);
    }
}

// The rows held in registers (C = 128, 256, 512) load and store 16 bytes at
// a time where a row is aligned, element by element where not: the same
// values in the same order, so rows one element off their alignment must
// give the aligned rows' bits (forward with a residual, backward with +=).
template <typename real>
static void misaligned_rows(const Shape &s, const DevBuf<real> &a, const DevBuf<real> &b, const DevBuf<real> &dy) {
    const int N = s.N(), C = s.C;
    const size_t NC = (size_t)N * C;
    DevBuf<real> res(NC), out(NC), rs(N), dx(dy.down());
    DevBuf<real> a1(NC + 1), b1(NC + 1), res1(NC + 1), out1(NC + 1), rs1(N), dy1(NC + 1), dx1(NC + 1);
    auto shifted = [&](DevBuf<real> &d1, const DevBuf<real> &d) {
        CUDA_CHECK(cudaMemcpy(d1.p + 1, d.p, NC * sizeof(real), cudaMemcpyDeviceToDevice));
    };
    auto back = [&](const DevBuf<real> &d1) {
        std::vector<real> h = d1.down();
        return std::vector<real>(h.begin() + 1, h.end());
    };
    shifted(a1, a), shifted(b1, b), shifted(dy1, dy), shifted(dx1, dx);
    residual_rmsnorm_forward(ST, res.p, out.p, rs.p, a.p, b.p, N, C);
    residual_rmsnorm_forward(ST, res1.p + 1, out1.p + 1, rs1.p, a1.p + 1, b1.p + 1, N, C);
    rmsnorm_backward(ST, dx.p, dy.p, a.p, rs.p, N, C, true);
    rmsnorm_backward(ST, dx1.p + 1, dy1.p + 1, a1.p + 1, rs1.p, N, C, true);
    const std::vector<real> pairs[4][2] = {{back(res1), res.down()},
                                           {back(out1), out.down()},
                                           {rs1.down(), rs.down()},
                                           {back(dx1), dx.down()}};
    const char *names[4] = {"res", "out", "rstd", "dinp (+=)"};
    for (int i = 0; i < 4; i++) {
        const std::vector<real> &g = pairs[i][0], &w = pairs[i][1];
        size_t bad = 0;
        for (size_t j = 0; j < g.size(); j++) bad += std::memcmp(&g[j], &w[j], sizeof(real)) != 0;
        if (bad)
            failf("%s rmsnorm rows one element off alignment: %s [%s]: %zu of %zu values differ from the aligned "
                  "rows' (the element-wise loads or stores)",
                  prec_name<real>(), names[i], s.str().c_str(), bad, g.size());
    }
}

template <typename real> static void test_rmsnorm(const Shape &s, Rng &r) {
    const int N = s.N(), C = s.C;
    std::vector<real> inp = randn<real>(r, (size_t)N * C);
    for (int c = 0; c < C; c++) inp[(size_t)(N - 1) * C + c] = 0;   // a padded (zero) row
    const std::vector<real> a = randn<real>(r, (size_t)N * C), b = randn<real>(r, (size_t)N * C);
    DevBuf<real> d_inp(inp), d_a(a), d_b(b), d_out((size_t)N * C), d_res((size_t)N * C), d_rstd((size_t)N);
    std::vector<real> out((size_t)N * C), rstd((size_t)N), res((size_t)N * C);

    d_out.poison();
    d_rstd.poison();
    rmsnorm_forward(ST, d_out.p, d_rstd.p, d_inp.p, N, C);
    ref_rmsnorm_forward(out.data(), rstd.data(), inp.data(), N, C);
    check("rmsnorm_forward", "out", s, d_out.down(), out);
    check("rmsnorm_forward", "rstd", s, d_rstd.down(), rstd);

    d_res.poison();
    residual_forward(ST, d_res.p, d_a.p, d_b.p, (size_t)N * C);
    ref_residual_forward(res.data(), a.data(), b.data(), (size_t)N * C);
    check("residual_forward", "out", s, d_res.down(), res);

    d_res.poison();
    d_out.poison();
    d_rstd.poison();
    residual_rmsnorm_forward(ST, d_res.p, d_out.p, d_rstd.p, d_a.p, d_b.p, N, C);
    std::vector<real> out2((size_t)N * C), rstd2((size_t)N);
    ref_rmsnorm_forward(out2.data(), rstd2.data(), res.data(), N, C);
    check("residual_rmsnorm_forward (fused)", "res", s, d_res.down(), res);
    check("residual_rmsnorm_forward (fused)", "out", s, d_out.down(), out2);
    check("residual_rmsnorm_forward (fused)", "rstd", s, d_rstd.down(), rstd2);

    const std::vector<real> dout = randn<real>(r, (size_t)N * C);
    DevBuf<real> d_dout(dout), d_dinp((size_t)N * C), d_rs(rstd);
    for (int acc = 0; acc < 2; acc++) {
        std::vector<real> dinp = acc ? randn<real>(r, (size_t)N * C) : std::vector<real>((size_t)N * C, 0);
        if (acc) d_dinp.up(dinp);
        else d_dinp.poison();
        rmsnorm_backward(ST, d_dinp.p, d_dout.p, d_inp.p, d_rs.p, N, C, acc != 0);
        ref_rmsnorm_backward(dinp.data(), dout.data(), inp.data(), rstd.data(), N, C);
        check("rmsnorm_backward", acc ? "dinp (+=)" : "dinp", s, d_dinp.down(), dinp);
    }
    if (C % 128 == 0) misaligned_rows<real>(s, d_a, d_b, d_dout);
}

// the first `cols` columns of each of `rows` rows of stride ld
template <typename real> static std::vector<real> columns(const std::vector<real> &x, int rows, int ld, int cols) {
    std::vector<real> y((size_t)rows * cols);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) y[(size_t)i * cols + j] = x[(size_t)i * ld + j];
    return y;
}

template <typename real> static void test_matmul(const Shape &s, Rng &r, cublasHandle_t h, int sms) {
    const int N = s.N(), C = s.C;
    const int cases[][2] = {{C, C}, {C, 4 * C}, {4 * C, C}, {C, s.V}, {C, C + 2 * s.KV()}};
    for (const auto &cs : cases) {
        const int IC = cs[0], OC = cs[1], ld = OC + 3;   // ld: a wider row stride, as in the q|k|v buffer
        const std::vector<real> inp = randn<real>(r, (size_t)N * IC), w = randn<real>(r, (size_t)OC * IC, 0.1);
        DevBuf<real> d_inp(inp), d_w(w), d_out((size_t)N * OC), d_outw((size_t)N * ld);
        std::vector<real> out((size_t)N * OC);
        ref_matmul_forward(out.data(), inp.data(), w.data(), N, IC, OC);
        d_out.poison();
        matmul_forward(h, d_out.p, OC, d_inp.p, d_w.p, N, IC, OC);
        check("matmul_forward (cuBLAS)", "out", s, d_out.down(), out);
        d_outw.poison();
        matmul_forward(h, d_outw.p, ld, d_inp.p, d_w.p, N, IC, OC);
        check("matmul_forward (cuBLAS)", "out, row stride > OC", s, columns(d_outw.down(), N, ld, OC), out);

        const std::vector<real> dout = randn<real>(r, (size_t)N * OC);
        std::vector<real> doutw((size_t)N * ld, (real)NAN);   // dout in a wider row stride
        for (int i = 0; i < N; i++)
            for (int j = 0; j < OC; j++) doutw[(size_t)i * ld + j] = dout[(size_t)i * OC + j];
        DevBuf<real> d_dout(doutw), d_dinp((size_t)N * IC), d_dw((size_t)OC * IC);
        // one cuBLAS product for dw, then (where these rows get split) the split-K dw
        const size_t nscr = dw_scratch_count(N, IC, OC, sms);
        DevBuf<real> d_scr(nscr);
        for (int split = 0; split < (nscr ? 2 : 1); split++) {
            const DwScratch<real> ws = split ? DwScratch<real>{d_scr.p, nscr, sms} : DwScratch<real>{nullptr, 0, sms};
            const char *name = split ? "matmul_backward (split-K dw)" : "matmul_backward (cuBLAS)";
            for (int acc = 0; acc < 2; acc++) {
                std::vector<real> dinp = grad_start(r, d_dinp, acc), dw = grad_start(r, d_dw, acc);
                d_scr.poison();
                matmul_backward(h, d_dinp.p, acc != 0, d_dw.p, acc != 0, d_dout.p, ld, d_inp.p, d_w.p, N, IC, OC, ws);
                ref_matmul_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), N, IC, OC);
                check(name, acc ? "dinp (+=)" : "dinp", s, d_dinp.down(), dinp);
                check(name, acc ? "dw (+=)" : "dw", s, d_dw.down(), dw);
            }
        }
    }
}

// The split-K dw on its own (dinp NULL), at row counts it splits: S dividing
// N and not (a short last chunk), small and wide weights, the split a
// smaller scratch allows, overwriting (poisoned) and accumulating, and two
// runs giving the same bits. dw_split must split each of them.
template <typename real> static void test_dw_split(Rng &r, cublasHandle_t h, int sms) {
    struct Case {
        int N, IC, OC, max_parts;   // max_parts: the scratch holds that many partials (0: all it asks)
    };
    const Case cases[] = {
        {4096, 16, 27, 0},    // the default model's lm_head at batch 256: S divides N
        {4096, 64, 16, 0},    // mlp_fc2
        {4099, 16, 16, 0},    // a short last chunk
        {1000, 48, 40, 0},    // a few chunks, the last one short
        {2777, 256, 192, 0},  // 2 x 2 tiles of 128 x 128, a short last chunk
        {4096, 16, 27, 3},    // a scratch of 3 partials: 3 chunks, the last one short
        {300, 24, 20, 0},     // 2 chunks of 150 rows
    };
    for (const Case &c : cases) {
        const int N = c.N, IC = c.IC, OC = c.OC, ld = OC + 5;
        const Shape s{1, N, IC, 1, 1, OC};   // in the messages: T = N rows, C = IC, V = OC
        DwSplit sp = dw_split(N, IC, OC, sms);
        size_t nscr = dw_scratch_count(N, IC, OC, sms);
        if (c.max_parts) nscr = (size_t)c.max_parts * OC * IC;
        if (sp.S < 2 || !nscr) {
            failf("dw_split(N %d, IC %d, OC %d, %d SMs) does not split (S %d): the test expects it to", N, IC, OC,
                  sms, sp.S);
            continue;
        }
        const std::vector<real> inp = randn<real>(r, (size_t)N * IC), dout = randn<real>(r, (size_t)N * OC);
        std::vector<real> doutw((size_t)N * ld, (real)NAN);
        for (int i = 0; i < N; i++)
            for (int j = 0; j < OC; j++) doutw[(size_t)i * ld + j] = dout[(size_t)i * OC + j];
        const std::vector<real> w((size_t)OC * IC, 0);
        DevBuf<real> d_inp(inp), d_dout(doutw), d_dw((size_t)OC * IC), d_scr(nscr);
        const DwScratch<real> ws{d_scr.p, nscr, sms};
        std::vector<real> dinp((size_t)N * IC);   // the reference computes it too; not compared here
        for (int acc = 0; acc < 2; acc++) {
            std::vector<real> dw = acc ? randn<real>(r, (size_t)OC * IC) : std::vector<real>((size_t)OC * IC, 0);
            const std::vector<real> dw0 = dw;
            std::vector<real> got[2];
            for (int run = 0; run < 2; run++) {
                if (acc) d_dw.up(dw0);
                else d_dw.poison();
                d_scr.poison();
                matmul_backward(h, (real *)nullptr, false, d_dw.p, acc != 0, d_dout.p, ld, d_inp.p, (const real *)nullptr,
                                N, IC, OC, ws);
                got[run] = d_dw.down();
            }
            ref_matmul_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), N, IC, OC);
            char what[96];
            snprintf(what, sizeof what, "dw%s, dinp NULL, scratch for %d partials", acc ? " (+=)" : "",
                     (int)(nscr / ((size_t)OC * IC)));
            check("matmul_backward (split-K dw)", what, s, got[0], dw);
            if (memcmp(got[0].data(), got[1].data(), got[0].size() * sizeof(real)))
                failf("%s split-K dw (N %d, IC %d, OC %d): two runs on the same inputs differ", prec_name<real>(), N,
                      IC, OC);
        }
    }
}

// The inputs of one attention shape, on the host and the device, and the
// reference's outputs.
template <typename real> struct AttnCase {
    const Shape s;
    const int B, T, C, NH, NKV, HS, KV, N, QKV;
    const size_t natt;
    std::vector<int> n;
    std::vector<real> q, k, v, qkv, out, att, dout;
    DevBuf<int> d_n;
    DevBuf<real> d_q, d_k, d_v, d_qkv, d_dout, d_attr;
    AttnCase(const Shape &sh, Rng &r)
        : s(sh), B(sh.B), T(sh.T), C(sh.C), NH(sh.NH), NKV(sh.NKV), HS(sh.HS()), KV(sh.KV()), N(sh.N()),
          QKV(C + 2 * KV), natt((size_t)B * NH * T * T), n(make_lengths(r, B, T)), q(randn<real>(r, (size_t)N * C)),
          k(randn<real>(r, (size_t)N * KV)), v(randn<real>(r, (size_t)N * KV)), qkv(interleave(q, k, v)),
          out((size_t)N * C), att(reference()), dout(randn<real>(r, (size_t)N * C)), d_n(n), d_q(q), d_k(k),
          d_v(v), d_qkv(qkv), d_dout(dout), d_attr(att) {}
    // the reference forward: fills out, returns att
    std::vector<real> reference() {
        std::vector<real> w(natt);
        ref_attention_forward(out.data(), w.data(), q.data(), k.data(), v.data(), n.data(), B, T, NH, NKV, HS);
        return w;
    }
    // (N, C+2KV) rows q|k|v: the engine's layout
    std::vector<real> interleave(const std::vector<real> &a, const std::vector<real> &b, const std::vector<real> &c) const {
        std::vector<real> x((size_t)N * QKV);
        for (int i = 0; i < N; i++) {
            for (int j = 0; j < C; j++) x[(size_t)i * QKV + j] = a[(size_t)i * C + j];
            for (int j = 0; j < KV; j++) {
                x[(size_t)i * QKV + C + j] = b[(size_t)i * KV + j];
                x[(size_t)i * QKV + C + KV + j] = c[(size_t)i * KV + j];
            }
        }
        return x;
    }
};

// The device results of one implementation, kept to compare the automatic
// choice with bit for bit: out, att, and dq, dk, dv (acc = false).
template <typename real> struct AttnResult {
    std::vector<real> out, att, dq, dk, dv;
};

// One shape through one implementation (path: Tiled or Rows, or Auto),
// checked against the reference: forward with q, k, v apart and side by side;
// backward overwriting (outputs poisoned) and accumulating, apart and side
// by side. The kernel names in the table carry the path.
template <typename real> static AttnResult<real> test_attention_path(AttnCase<real> &a, AttnPath path, Rng &r) {
    const Shape &s = a.s;
    const int B = a.B, T = a.T, C = a.C, NH = a.NH, NKV = a.NKV, HS = a.HS, KV = a.KV, N = a.N, QKV = a.QKV;
    const std::string fname = std::string("attention_forward (") + attn_path_name(path) + ")";
    const std::string bname = std::string("attention_backward (") + attn_path_name(path) + ")";
    AttnResult<real> res;
    DevBuf<real> d_out((size_t)N * C), d_att(a.natt);
    d_out.poison();
    d_att.poison();
    attention_forward(ST, d_out.p, d_att.p, a.d_q.p, C, a.d_k.p, a.d_v.p, KV, a.d_n.p, B, T, NH, NKV, HS, path);
    res.out = d_out.down();
    res.att = d_att.down();
    check(fname.c_str(), "out", s, res.out, a.out);
    check(fname.c_str(), "att", s, res.att, a.att);
    d_out.poison();
    d_att.poison();
    attention_forward(ST, d_out.p, d_att.p, a.d_qkv.p, QKV, a.d_qkv.p + C, a.d_qkv.p + C + KV, QKV, a.d_n.p, B, T, NH,
                      NKV, HS, path);
    check(fname.c_str(), "out (q|k|v in one buffer)", s, d_out.down(), a.out);
    check(fname.c_str(), "att (q|k|v in one buffer)", s, d_att.down(), a.att);

    // backward from the reference's att
    DevBuf<real> d_dpre(a.natt);
    DevBuf<real> d_dq((size_t)N * C), d_dk((size_t)N * KV), d_dv((size_t)N * KV), d_dqkv((size_t)N * QKV);
    for (int acc = 0; acc < 2; acc++) {
        std::vector<real> dq = acc ? randn<real>(r, (size_t)N * C) : std::vector<real>((size_t)N * C, 0);
        std::vector<real> dk = acc ? randn<real>(r, (size_t)N * KV) : std::vector<real>((size_t)N * KV, 0);
        std::vector<real> dv = acc ? randn<real>(r, (size_t)N * KV) : std::vector<real>((size_t)N * KV, 0);
        if (acc) {
            d_dq.up(dq);
            d_dk.up(dk);
            d_dv.up(dv);
        } else {
            d_dq.poison();
            d_dk.poison();
            d_dv.poison();
        }
        d_dpre.poison();   // scratch: only what the first kernel writes may be read
        attention_backward(ST, d_dq.p, C, d_dk.p, d_dv.p, KV, d_dpre.p, a.d_dout.p, a.d_attr.p, a.d_q.p, C, a.d_k.p,
                           a.d_v.p, KV, a.d_n.p, B, T, NH, NKV, HS, acc != 0, path);
        ref_attention_backward(dq.data(), dk.data(), dv.data(), a.dout.data(), a.att.data(), a.q.data(), a.k.data(),
                               a.v.data(), a.n.data(), B, T, NH, NKV, HS);
        const std::vector<real> gq = d_dq.down(), gk = d_dk.down(), gv = d_dv.down();
        check(bname.c_str(), acc ? "dq (+=)" : "dq", s, gq, dq);
        check(bname.c_str(), acc ? "dk (+=)" : "dk", s, gk, dk);
        check(bname.c_str(), acc ? "dv (+=)" : "dv", s, gv, dv);
        if (!acc) {   // and in the engine's layout: q|k|v and dq|dk|dv side by side
            res.dq = gq;
            res.dk = gk;
            res.dv = gv;
            d_dqkv.poison();
            d_dpre.poison();
            attention_backward(ST, d_dqkv.p, QKV, d_dqkv.p + C, d_dqkv.p + C + KV, QKV, d_dpre.p, a.d_dout.p,
                               a.d_attr.p, a.d_qkv.p, QKV, a.d_qkv.p + C, a.d_qkv.p + C + KV, QKV, a.d_n.p, B, T, NH,
                               NKV, HS, false, path);
            const std::vector<real> g = d_dqkv.down();
            std::vector<real> sq((size_t)N * C), sk((size_t)N * KV), sv((size_t)N * KV);
            for (int i = 0; i < N; i++) {
                for (int j = 0; j < C; j++) sq[(size_t)i * C + j] = g[(size_t)i * QKV + j];
                for (int j = 0; j < KV; j++) {
                    sk[(size_t)i * KV + j] = g[(size_t)i * QKV + C + j];
                    sv[(size_t)i * KV + j] = g[(size_t)i * QKV + C + KV + j];
                }
            }
            check(bname.c_str(), "dq (q|k|v in one buffer)", s, sq, dq);
            check(bname.c_str(), "dk (q|k|v in one buffer)", s, sk, dk);
            check(bname.c_str(), "dv (q|k|v in one buffer)", s, sv, dv);
        }
    }
    return res;
}

// Which implementation Auto took, per precision: [0] tiled, [1] rows (forward
// and backward counted apart); main() requires both to have been exercised.
static int g_attn_auto[2][2];

template <typename real> static bool same_bits(const std::vector<real> &x, const std::vector<real> &y) {
    return x.size() == y.size() && !std::memcmp(x.data(), y.data(), x.size() * sizeof(real));
}

// Both implementations of one shape against the reference (the tiled one
// where it fits; forcing it where it does not must be refused), then the
// automatic choice, which must give the bits of the path it names.
template <typename real> static void test_attention(const Shape &s, Rng &r) {
    AttnCase<real> a(s, r);
    const AttnPath fwd = attention_forward_path<real>(a.T, a.HS), bwd = attention_backward_path<real>(a.T, a.HS);
    const bool tiled_fits = fwd == AttnPath::Tiled && bwd == AttnPath::Tiled;
    AttnResult<real> tiled, rows = test_attention_path(a, AttnPath::Rows, r);
    if (tiled_fits) {
        tiled = test_attention_path(a, AttnPath::Tiled, r);
    } else {   // at least one of the two does not fit: forcing it must be refused with the reason
        bool refused = false;
        std::string msg;
        try {
            test_attention_path(a, AttnPath::Tiled, r);
        } catch (const CudaError &x) {
            msg = x.what();
            refused = strstr(x.what(), "do not fit in shared memory") != nullptr;
        }
        if (!refused)
            failf("%s attention [%s]: the tiled kernels do not fit (forward %s, backward %s) but forcing them was "
                  "not refused (%s)", prec_name<real>(), s.str().c_str(), attn_path_name(fwd), attn_path_name(bwd),
                  msg.empty() ? "no error" : msg.c_str());
        // the half that fits, alone
        if (fwd == AttnPath::Tiled) {
            DevBuf<real> d_out((size_t)a.N * a.C), d_att(a.natt);
            d_out.poison();
            d_att.poison();
            attention_forward(ST, d_out.p, d_att.p, a.d_q.p, a.C, a.d_k.p, a.d_v.p, a.KV, a.d_n.p, a.B, a.T, a.NH,
                              a.NKV, a.HS, AttnPath::Tiled);
            tiled.out = d_out.down();
            tiled.att = d_att.down();
            check("attention_forward (tiled)", "out", s, tiled.out, a.out);
            check("attention_forward (tiled)", "att", s, tiled.att, a.att);
        }
    }
    const AttnResult<real> au = test_attention_path(a, AttnPath::Auto, r);
    const AttnResult<real> &fe = fwd == AttnPath::Tiled ? tiled : rows, &be = bwd == AttnPath::Tiled ? tiled : rows;
    if (!same_bits(au.out, fe.out) || !same_bits(au.att, fe.att))
        failf("%s attention_forward [%s]: auto does not give the bits of the %s kernels it names", prec_name<real>(),
              s.str().c_str(), attn_path_name(fwd));
    if (!be.dq.empty() && (!same_bits(au.dq, be.dq) || !same_bits(au.dk, be.dk) || !same_bits(au.dv, be.dv)))
        failf("%s attention_backward [%s]: auto does not give the bits of the %s kernels it names", prec_name<real>(),
              s.str().c_str(), attn_path_name(bwd));
    const int pi = prec_index<real>();
    g_attn_auto[pi][fwd == AttnPath::Tiled ? 0 : 1]++;
    g_attn_auto[pi][bwd == AttnPath::Tiled ? 0 : 1]++;
    printf("  %s attention [%s]: auto takes %s (forward), %s (backward)\n", prec_name<real>(), s.str().c_str(),
           attn_path_name(fwd), attn_path_name(bwd));
}

template <typename real> static void test_relu(const Shape &s, Rng &r) {
    const size_t count = (size_t)s.N() * 4 * s.C;
    std::vector<real> inp = randn<real>(r, count);
    for (size_t i = 0; i < count; i += 7) inp[i] = 0;   // relu'(0) = 0
    const std::vector<real> dout = randn<real>(r, count);
    DevBuf<real> d_inp(inp), d_dout(dout), d_out(count), d_dinp(count);
    std::vector<real> out(count);
    d_out.poison();
    relu_forward(ST, d_out.p, d_inp.p, count);
    ref_relu_forward(out.data(), inp.data(), count);
    check("relu_forward", "out", s, d_out.down(), out);
    for (int acc = 0; acc < 2; acc++) {
        std::vector<real> dinp = acc ? randn<real>(r, count) : std::vector<real>(count, 0);
        if (acc) d_dinp.up(dinp);
        else d_dinp.poison();
        relu_backward(ST, d_dinp.p, d_dout.p, d_inp.p, count, acc != 0);
        ref_relu_backward(dinp.data(), dout.data(), inp.data(), count);
        check("relu_backward", acc ? "dinp (+=)" : "dinp", s, d_dinp.down(), dinp);
    }
}

// doc-mean (weights 1/(n[b]*B)) and token-mean (1/sum(n)), each against layers.c's
template <typename real> static void test_crossentropy(const Shape &s, Rng &r) {
    const int B = s.B, T = s.T, V = s.V, N = s.N();
    for (const bool token_mean : {false, true}) {
        const char *kernel = token_mean ? "crossentropy (token-mean)" : "crossentropy_forward_backward";
        const std::vector<int> n = make_lengths(r, B, T), tok = make_tokens(r, n, T, V);
        const std::vector<real> logits = randn<real>(r, (size_t)N * V, 3.0);
        DevBuf<int> d_n(n), d_tok(tok);
        DevBuf<real> d_logits(logits), d_dl((size_t)N * V), d_losses((size_t)N);
        std::vector<real> dl((size_t)N * V), losses((size_t)N);
        d_dl.poison();
        d_losses.poison();
        crossentropy_forward_backward(ST, d_dl.p, d_losses.p, d_logits.p, d_tok.p, d_n.p, B, T, V, token_mean);
        const double loss =
            ref_crossentropy(dl.data(), losses.data(), logits.data(), tok.data(), n.data(), B, T, V, token_mean);
        check(kernel, "dlogits", s, d_dl.down(), dl);
        const std::vector<real> gl = d_losses.down();
        check(kernel, "losses", s, gl, losses);
        const real gmean = (real)crossentropy_mean(gl.data(), n.data(), B, T, token_mean), rmean = (real)loss;
        check(kernel, "mean loss", s, &gmean, &rmean, 1);
    }
}

template <typename real> static void test_adam(const Shape &s, Rng &r) {
    const size_t count = 1000 + 37 * (size_t)s.C;
    const double b1 = 0.85, b2 = 0.99, eps = 1e-8;
    std::vector<real> p = randn<real>(r, count, 0.1), m = randn<real>(r, count, 0.01), v(count);
    for (auto &x : v) x = (real)(1e-4 * r.uniform());
    DevBuf<real> d_p(p), d_m(m), d_v(v), d_g(count);
    DevBuf<AdamScalars> d_sc((size_t)1);
    for (int step : {0, 6, 999}) {
        const std::vector<real> g = randn<real>(r, count, 0.01);
        d_g.up(g);
        const double lr_t = 0.01 * (1.0 - step / 1000.0);
        d_sc.up({adam_scalars(lr_t, b1, b2, step)});
        adam_update(ST, d_p.p, d_g.p, d_m.p, d_v.p, count, d_sc.p, b1, b2, eps);
        ref_adam(p.data(), g.data(), m.data(), v.data(), count, lr_t, b1, b2, eps, step);
        check("adam_update", "p", s, d_p.down(), p);
        check("adam_update", "m", s, d_m.down(), m);
        check("adam_update", "v", s, d_v.down(), v);
        d_p.up(p);   // go on from the reference's state
        d_m.up(m);
        d_v.up(v);
    }
}

template <typename real>
static void kernel_tests(const std::vector<Shape> &shapes, Rng &r, cublasHandle_t h, int sms) {
    test_dw_split<real>(r, h, sms);
    for (const Shape &s : shapes) {
        test_encoder<real>(s, r);
        test_rmsnorm<real>(s, r);
        test_matmul<real>(s, r, h, sms);
        test_attention<real>(s, r);
        test_relu<real>(s, r);
        test_crossentropy<real>(s, r);
        test_adam<real>(s, r);
    }
    const int pi = prec_index<real>();
    printf("\nkernels, %s, against tensor_gpu/cpu/layers.c (_%s), %zu shapes; error = max|gpu-cpu| over an output,\n"
           "rel = that / max|cpu|, tolerance rel <= %.0e; bit-exact: every element equal\n",
           prec_name<real>(), pi ? "f32" : "f64", shapes.size(), kernel_tol<real>());
    printf("  %-34s %6s %12s %12s %9s  %s\n", "kernel", "checks", "max error", "max rel", "bit-exact", "result");
    for (const std::string &k : g_order[pi]) {
        const KernelStat &st = g_stats[pi][k];
        printf("  %-34s %6d %12.3e %12.3e %9s  %s\n", k.c_str(), st.checks, st.max_abs, st.max_rel,
               st.exact ? "yes" : "no", st.fails ? "FAIL" : "PASS");
    }
}

// ---------------------------------------------------------------------------
// engine tests

struct Model {
    Settings s;
    ParamLayout L;
    std::vector<double> init;
    int max_batch;
    Model(int V, int C, int NH, int NKV, int nl, int T, int maxB, uint64_t seed) : max_batch(maxB) {
        settings_defaults(&s);
        s.steps = 1000;
        ModelShape m;
        m.vocab_size = V;
        m.n_embd = C;
        m.n_head = NH;
        m.n_kv_head = NKV;
        m.head_dim = C / NH;
        m.n_layer = nl;
        m.block_size = T;
        layout_init(&L, &m);
        init.resize(L.n_params);
        PyRandom r;
        pyrandom_seed(&r, seed);
        params_init(&L, &r, 0.08, init.data());
    }
    ~Model() { layout_free(&L); }
    EngineConfig cfg(Precision p) const {
        EngineConfig c;
        memset(&c, 0, sizeof c);
        c.s = &s;
        c.L = &L;
        c.precision = p;
        c.fault = FAULT_NONE;
        c.max_batch = max_batch;
        return c;
    }
    const ModelShape &shape() const { return L.shape; }
};

// A batch of B documents of which the longest has T positions.
struct HostBatch {
    std::vector<int> n, tokens, doc;
    Batch b;
    HostBatch(Rng &r, int B, int T, int V) {
        n = make_lengths(r, B, T);
        tokens = make_tokens(r, n, T, V);
        doc.resize((size_t)B);
        for (int i = 0; i < B; i++) doc[i] = i;
        b.B = B;
        b.T = T;
        b.n = n.data();
        b.tokens = tokens.data();
        b.doc = doc.data();
    }
};


// |a-b| <= atol + rtol*|b| elementwise (b the CPU engine's); NaN must match NaN.
static bool close(const char *what, int step, const double *a, const double *b, size_t n, Tol t, double *worst) {
    size_t bad = 0, first = 0;
    double mx = 0;
    for (size_t i = 0; i < n; i++) {
        if (std::isnan(b[i]) && std::isnan(a[i])) continue;
        const double d = std::fabs(a[i] - b[i]);
        if (d > mx) mx = d;
        if (!(d <= t.atol + t.rtol * std::fabs(b[i])) && bad++ == 0) first = i;
    }
    if (worst && mx > *worst) *worst = mx;
    if (bad)
        failf("engine vs cpu, step %d: %s: %zu of %zu element(s) out of tolerance, the first [%zu]: cuda %.17g, "
              "cpu %.17g", step, what, bad, n, first, a[first], b[first]);
    return bad == 0;
}

struct Step {
    int B, T;
};

static Engine *make_cuda(const Model &mdl, Precision p) {
    const EngineConfig c = mdl.cfg(p);
    char err[512] = "";
    Engine *e = cuda_engine_create(&c, mdl.init.data(), err, sizeof err);
    if (!e) failf("cuda_engine_create (%s): %s", precision_name(p), err);
    return e;
}

// The reference's Adam (layers.c) in precision p on (par, m, v) with the
// gradients g, all held as double.
static void ref_adam_step(Precision p, const Settings &s, int step, std::vector<double> &par, const std::vector<double> &g,
                          std::vector<double> &m, std::vector<double> &v) {
    const size_t n = par.size();
    const double lr = lr_at(s.lr, step, s.steps);
    if (p == PREC_FP64) {
        adam_update_f64(par.data(), g.data(), m.data(), v.data(), n, lr, s.beta1, s.beta2, s.eps, step);
        return;
    }
    std::vector<float> pf(n), gf(n), mf(n), vf(n);
    for (size_t i = 0; i < n; i++) {
        pf[i] = (float)par[i];
        gf[i] = (float)g[i];
        mf[i] = (float)m[i];
        vf[i] = (float)v[i];
    }
    adam_update_f32(pf.data(), gf.data(), mf.data(), vf.data(), n, lr, s.beta1, s.beta2, s.eps, step);
    for (size_t i = 0; i < n; i++) {
        par[i] = pf[i];
        m[i] = mf[i];
        v[i] = vf[i];
    }
}

static double max_abs_diff(const std::vector<double> &a, const std::vector<double> &b) {
    double mx = 0;
    for (size_t i = 0; i < a.size(); i++) {
        const double d = std::fabs(a[i] - b[i]);
        if (!(d <= mx)) mx = d;   // NaN sticks
    }
    return mx;
}

// One lockstep step of the CUDA engine against the CPU engine (engine_vs_cpu,
// token_mean_vs_cpu): both start from the CPU engine's state. The loss, the
// logits (NaN at padding) and the gradients within the precision's
// tolerances (the gradients not where a ReLU input lies within the margin of
// 0: the two may gate it differently); the ReLU inputs NaN at padding; the
// update the reference's Adam on the engine's own gradients, bit for bit.
// Then the engine goes on from the CPU engine's state.
struct LockstepCheck {
    std::string label;   // e.g. "engine vs cpu fp64": names every failure
    Precision p;
    const Settings &s;
    size_t P, V, H;
    int n_layer;
    Tol t_loss, t_logit, t_grad;
    double margin;   // a ReLU input this close to 0 may flip
    std::vector<double> la, lb, ga, gb, pa, pb, ma, mb, va, vb, relu;
    std::vector<double> p0, m0, v0;   // the state the CUDA engine starts the step from
    double worst[4] = {0, 0, 0, 0};   // loss, logits, grads; parameters vs the CPU engine's
    int skipped = 0, failed_steps = 0;

    LockstepCheck(const std::string &label_, Precision p_, const Model &mdl)
        : label(label_), p(p_), s(mdl.s), P(mdl.L.n_params), V((size_t)mdl.shape().vocab_size),
          H(4 * (size_t)mdl.shape().n_embd), n_layer(mdl.shape().n_layer) {
        const LockstepTols tol = lockstep_tols(p == PREC_FP64);
        t_loss = tol.loss, t_logit = tol.logits, t_grad = tol.grads, margin = tol.relu_margin;
        const size_t rows = (size_t)mdl.max_batch * mdl.shape().block_size;
        la.resize(rows * V), lb.resize(la.size());
        for (std::vector<double> *v : {&ga, &gb, &pa, &pb, &ma, &mb, &va, &vb}) v->resize(P);
        relu.resize((size_t)mdl.shape().n_layer * rows * H);
        p0 = mdl.init, m0.assign(P, 0.0), v0.assign(P, 0.0);
    }

    // returns the CPU engine's loss
    double step(Engine *cpu, Engine *gpu, const Batch *b, int step) {
        const int before = g_failures;
        const double l_cpu = cpu->ops->step(cpu, b, step), l_gpu = gpu->ops->step(gpu, b, step);
        close((label + " loss").c_str(), step + 1, &l_gpu, &l_cpu, 1, t_loss, &worst[0]);
        cpu->ops->get_logits(cpu, lb.data());
        gpu->ops->get_logits(gpu, la.data());
        close((label + " logits").c_str(), step + 1, la.data(), lb.data(), (size_t)b->B * b->T * V, t_logit,
              &worst[1]);
        gpu->ops->get_relu_inputs(gpu, relu.data());
        bool near_zero = false;
        for (int l = 0; l < n_layer; l++)
            for (int d = 0; d < b->B; d++)
                for (int tt = 0; tt < b->T; tt++)
                    for (size_t j = 0; j < H; j++) {
                        const double x = relu[(((size_t)l * b->B + d) * b->T + tt) * H + j];
                        if (tt >= b->n[d]) {
                            if (!std::isnan(x)) failf("%s: get_relu_inputs: not NaN at a padded position", label.c_str());
                        } else if (std::fabs(x) < margin) {
                            near_zero = true;
                        }
                    }
        cpu->ops->get_grads(cpu, gb.data());
        gpu->ops->get_grads(gpu, ga.data());
        if (near_zero) {   // the two engines may disagree on that gate: a whole term of gradient
            skipped++;
            printf("  %s step %d: a ReLU input within %.0e of 0: gradients not compared\n", label.c_str(), step + 1,
                   margin);
        } else {
            close((label + " grads").c_str(), step + 1, ga.data(), gb.data(), P, t_grad, &worst[2]);
        }
        // the update: the reference's Adam on the engine's own gradients, exactly
        ref_adam_step(p, s, step, p0, ga, m0, v0);
        gpu->ops->get_params(gpu, pa.data());
        gpu->ops->get_moments(gpu, ma.data(), va.data());
        const double dp = max_abs_diff(pa, p0), dm = max_abs_diff(ma, m0), dv = max_abs_diff(va, v0);
        if (dp != 0 || dm != 0 || dv != 0)
            failf("%s, step %d: the update differs from the reference's Adam on the engine's gradients (max |diff| "
                  "params %.3e, m %.3e, v %.3e)", label.c_str(), step + 1, dp, dm, dv);
        cpu->ops->get_params(cpu, pb.data());
        cpu->ops->get_moments(cpu, mb.data(), vb.data());
        const double dpc = max_abs_diff(pa, pb);
        if (dpc > worst[3]) worst[3] = dpc;
        if (g_failures != before) failed_steps++;
        // lockstep: go on from the CPU engine's state
        gpu->ops->set_state(gpu, pb.data(), mb.data(), vb.data());
        p0 = pb, m0 = mb, v0 = vb;
        return l_cpu;
    }
};

// The CUDA engine in lockstep with the CPU engine: each step both start from
// the CPU engine's state. The loss, logits (NaN at padding) and gradients are
// compared within tolerances. The update is checked exactly: the engine's
// parameters and moments must be the reference's Adam applied to the engine's
// own gradients, bit for bit. (Comparing them with the CPU engine's instead
// would mostly measure Adam's first steps amplifying a gradient difference:
// where |g| is near eps, lr*g/(|g|+eps) moves by lr*eps*dg/(|g|+eps)^2, which
// in fp32 reaches 1e-6 for dg ~ 1e-11. That difference is still printed.)
static void engine_vs_cpu(Precision p, Rng &r) {
    const bool fp64 = p == PREC_FP64;
    const Model mdl(27, 16, 4, 2, 2, 16, 32, 42);   // batches of 19, 20 and 32: split-K weight gradients
    const EngineConfig c = mdl.cfg(p);
    char err[512] = "";
    Engine *cpu = cpu_engine_create(&c, mdl.init.data(), err, sizeof err);
    if (!cpu) {
        failf("cpu_engine_create: %s", err);
        return;
    }
    Engine *gpu = make_cuda(mdl, p);
    if (!gpu) {
        cpu->ops->destroy(cpu);
        return;
    }
    const ModelShape &m = mdl.shape();
    const std::vector<Step> sched = {{8, 16}, {3, 5}, {1, 1}, {32, 16}, {5, 16}, {2, 9}, {20, 16}, {1, 16}, {19, 15}};
    LockstepCheck ls(std::string("engine vs cpu ") + prec_name_of(p), p, mdl);
    for (size_t k = 0; k < sched.size(); k++) {
        HostBatch hb(r, sched[k].B, sched[k].T, m.vocab_size);
        ls.step(cpu, gpu, &hb.b, (int)k);
    }
    printf("engine vs cpu engine, %s, lockstep, %zu steps (V 27, C 16, NH 4, NKV 2, 2 layers, batches up to 32): "
           "max |diff| loss %.2e, logits %.2e, grads %.2e%s; Adam on the engine's gradients reproduced bit for bit "
           "(parameters vs the cpu engine's: max |diff| %.2e)%s\n",
           fp64 ? "fp64" : "fp32", sched.size(), ls.worst[0], ls.worst[1], ls.worst[2],
           ls.skipped ? " (ReLU-near-zero steps' gradients skipped)" : "", ls.worst[3],
           ls.failed_steps ? ": FAIL" : ": PASS");

    // sampling: after the same steps, from the same state and the same draws,
    // fp64 must produce the CPU engine's documents
    cpu->ops->get_params(cpu, ls.pb.data());
    gpu->ops->set_state(gpu, ls.pb.data(), nullptr, nullptr);
    PyRandom ra, rb;
    pyrandom_seed(&ra, 7);
    pyrandom_seed(&rb, 7);
    std::vector<int> oa((size_t)m.block_size), ob((size_t)m.block_size);
    int same = 0, docs = 8;
    for (int i = 0; i < docs; i++) {
        const int na = gpu->ops->sample(gpu, &ra, 0.5, oa.data()), nb = cpu->ops->sample(cpu, &rb, 0.5, ob.data());
        bool valid = na >= 0 && na <= m.block_size;
        for (int j = 0; valid && j < na; j++) valid = oa[j] >= 0 && oa[j] < m.vocab_size - 1;
        if (!valid) failf("sample (%s): an invalid document (length %d)", fp64 ? "fp64" : "fp32", na);
        if (na == nb && !memcmp(oa.data(), ob.data(), (size_t)na * sizeof(int))) same++;
    }
    if (fp64 && same != docs) failf("sample (fp64): %d of %d documents differ from the CPU engine's", docs - same, docs);
    printf("sampling, %s: %d of %d documents identical to the CPU engine's%s\n", fp64 ? "fp64" : "fp32", same, docs,
           fp64 ? (same == docs ? ": PASS" : ": FAIL") : " (fp32 may differ; checked valid)");
    gpu->ops->destroy(gpu);
    cpu->ops->destroy(cpu);
}

// Everything an engine reports after a step, as raw bytes.
static std::vector<double> snapshot(Engine *e, const Model &mdl, const Batch *b, double loss) {
    const ModelShape &m = mdl.shape();
    const size_t P = mdl.L.n_params;
    const size_t nl = (size_t)b->B * b->T * m.vocab_size, nr = (size_t)m.n_layer * b->B * b->T * 4 * m.n_embd;
    std::vector<double> s(1 + nl + nr + 4 * P);
    s[0] = loss;
    double *x = s.data() + 1;
    e->ops->get_logits(e, x);
    e->ops->get_relu_inputs(e, x + nl);
    e->ops->get_grads(e, x + nl + nr);
    e->ops->get_params(e, x + nl + nr + P);
    e->ops->get_moments(e, x + nl + nr + 2 * P, x + nl + nr + 3 * P);
    return s;
}

// Two engines from the same initial weights, and a third without CUDA
// graphs, over the same batches: every reported value identical to the bit.
// Shapes repeat so that graphs get captured (second sight) and replayed.
static void determinism(Precision p, Rng &r) {
    const Model mdl(27, 16, 4, 2, 2, 16, 32, 1234);
    Engine *e1 = make_cuda(mdl, p), *e2 = make_cuda(mdl, p);
    setenv("MICROGPT_CUDA_GRAPHS", "0", 1);
    Engine *e3 = make_cuda(mdl, p);
    unsetenv("MICROGPT_CUDA_GRAPHS");
    if (e1 && e2 && e3) {
        // and 32 x 16 and 23 x 13 rows: split-K weight gradients (a short last chunk in the second)
        const std::vector<Step> sched = {{8, 16}, {8, 16}, {8, 16}, {3, 7},   {8, 16},  {3, 7},   {3, 7},   {1, 1},
                                         {1, 1},  {1, 1},  {8, 16}, {5, 12}, {32, 16}, {32, 16}, {32, 16}, {23, 13},
                                         {23, 13}, {23, 13}};
        int diff_runs = 0, diff_graphs = 0;
        for (size_t k = 0; k < sched.size(); k++) {
            HostBatch hb(r, sched[k].B, sched[k].T, mdl.shape().vocab_size);
            const double l1 = e1->ops->step(e1, &hb.b, (int)k), l2 = e2->ops->step(e2, &hb.b, (int)k),
                         l3 = e3->ops->step(e3, &hb.b, (int)k);
            const std::vector<double> s1 = snapshot(e1, mdl, &hb.b, l1), s2 = snapshot(e2, mdl, &hb.b, l2),
                                      s3 = snapshot(e3, mdl, &hb.b, l3);
            if (memcmp(s1.data(), s2.data(), s1.size() * sizeof(double))) {
                diff_runs++;
                failf("determinism %s step %zu: two engines from the same state differ", precision_name(p), k + 1);
            }
            if (memcmp(s1.data(), s3.data(), s1.size() * sizeof(double))) {
                diff_graphs++;
                failf("determinism %s step %zu: the engine with CUDA graphs differs from the one without",
                      precision_name(p), k + 1);
            }
        }
        printf("determinism, %s, %zu steps (graphs captured and replayed): two engines %s; with vs without CUDA "
               "graphs %s\n", precision_name(p), sched.size(), diff_runs ? "DIFFER: FAIL" : "bit-identical: PASS",
               diff_graphs ? "DIFFER: FAIL" : "bit-identical: PASS");
    }
    for (Engine *e : {e1, e2, e3})
        if (e) e->ops->destroy(e);
}

// run_steps (the benchmark's timed region) against the same steps one
// step() at a time: the same losses and the same final state, to the bit,
// also for shapes it has to capture before it ever ran them (token_mean:
// under --loss token-mean).
static void run_steps_vs_step(Precision p, Rng &r, bool token_mean = false) {
    const bool fp64 = p == PREC_FP64;
    Model mdl(27, 16, 4, 2, 2, 16, 8, 99);
    mdl.s.token_mean = token_mean;
    Engine *e1 = make_cuda(mdl, p), *e2 = make_cuda(mdl, p);
    if (e1 && e2) {
        const std::vector<Step> sched = {{8, 16}, {8, 16}, {8, 16}, {3, 7}, {8, 16}, {2, 5}, {8, 16}, {4, 9}};
        std::vector<HostBatch> hb;
        for (const Step &st : sched) hb.emplace_back(r, st.B, st.T, mdl.shape().vocab_size);
        std::vector<Batch> bs;
        for (const HostBatch &h : hb) bs.push_back(h.b);
        std::vector<double> l1(sched.size()), l2(sched.size());
        // the first two steps one at a time on both, the rest in one run
        for (int k = 0; k < 2; k++) l1[k] = e1->ops->step(e1, &bs[k], k), l2[k] = e2->ops->step(e2, &bs[k], k);
        for (size_t k = 2; k < sched.size(); k++) l1[k] = e1->ops->step(e1, &bs[k], (int)k);
        double sec = -1;
        const int rc = e2->ops->run_steps(e2, bs.data() + 2, 2, (int)sched.size() - 2, l2.data() + 2, &sec);
        const Batch *last = &bs.back();
        const std::vector<double> s1 = snapshot(e1, mdl, last, l1.back()), s2 = snapshot(e2, mdl, last, l2.back());
        const bool same_l = !memcmp(l1.data(), l2.data(), l1.size() * sizeof(double));
        const bool same_s = !memcmp(s1.data(), s2.data(), s1.size() * sizeof(double));
        if (rc || !(sec > 0)) failf("run_steps %s: returned %d, %g s", precision_name(p), rc, sec);
        if (!same_l) failf("run_steps %s: the losses differ from step()'s", precision_name(p));
        if (!same_s) failf("run_steps %s: the state after the run differs from step()'s", precision_name(p));
        const size_t dev = e2->ops->device_bytes(e2);
        if (dev < 4 * mdl.L.n_params * (fp64 ? 8 : 4)) failf("device_bytes %zu is less than the parameters hold", dev);
        printf("run_steps, %s%s, %zu steps (new shapes captured before their first run): losses and state %s; %.3f ms "
               "on the events; device_bytes %zu\n", precision_name(p), token_mean ? " token-mean" : "", sched.size() - 2,
               same_l && same_s ? "bit-identical to step(): PASS" : "DIFFER: FAIL", 1e3 * sec, dev);
    }
    for (Engine *e : {e1, e2})
        if (e) e->ops->destroy(e);
}

// The path the engine took, from its device() string ("...; path fused ...").
static std::string path_of(Engine *e) {
    const char *d = e->ops->device(e), *p = strstr(d, "; path ");
    return p ? std::string(p + 7, strcspn(p + 7, " ;(")) : std::string("?");
}

// --loss token-mean (every real position weighs 1/sum(n), layers.c's
// token_mean) on the path MICROGPT_CUDA_PATH forces (want: "fused" or
// "layered"): the CUDA engine in lockstep with the CPU engine, each step from
// the CPU engine's state, batches of 4 above all: the loss, the logits and
// the gradients within engine_vs_cpu's tolerances, and the update the
// reference's Adam on the engine's own gradients, bit for bit. The shape
// (4,16) comes three times with other lengths each time: on the layered path
// the third replays the graph the second captured, so the weight 1/sum(n)
// must come from the step's n on the device, not from the capture. A CPU
// engine with doc-mean on the first batch shows that the two losses differ
// there (else the check could not tell them apart).
static void token_mean_vs_cpu(Precision p, const char *want, Rng &r) {
    Model mdl(27, 16, 4, 2, 2, 16, 8, 77), doc(27, 16, 4, 2, 2, 16, 8, 77);
    mdl.s.token_mean = 1;
    const EngineConfig c = mdl.cfg(p), cd = doc.cfg(p);
    char err[512] = "";
    Engine *cpu = cpu_engine_create(&c, mdl.init.data(), err, sizeof err);
    Engine *cpu_doc = cpu ? cpu_engine_create(&cd, doc.init.data(), err, sizeof err) : nullptr;
    Engine *gpu = cpu_doc ? make_cuda(mdl, p) : nullptr;
    if (!cpu || !cpu_doc || !gpu) {
        if (!cpu_doc) failf("cpu_engine_create (token-mean %s): %s", prec_name_of(p), err);
        for (Engine *e : {cpu, cpu_doc})
            if (e) e->ops->destroy(e);
        return;
    }
    const std::string path = path_of(gpu);
    if (path != want) failf("token-mean %s: the engine took path %s, not %s", prec_name_of(p), path.c_str(), want);
    const ModelShape &m = mdl.shape();
    const std::vector<Step> sched = {{4, 16}, {4, 16}, {4, 16}, {4, 9}, {1, 12}, {8, 16}, {3, 7}};
    LockstepCheck ls(std::string("token-mean ") + prec_name_of(p), p, mdl);
    double l_tok0 = 0, l_doc0 = 0;
    long long prev_sum = -1;
    for (size_t k = 0; k < sched.size(); k++) {
        // a repeated shape gets another sum(n) than the step before (the replayed graph must see it)
        auto sum_n = [](const HostBatch &h) {
            long long x = 0;
            for (int v : h.n) x += v;
            return x;
        };
        std::unique_ptr<HostBatch> hb(new HostBatch(r, sched[k].B, sched[k].T, m.vocab_size));
        const bool repeated = k > 0 && sched[k].B == sched[k - 1].B && sched[k].T == sched[k - 1].T;
        for (int tries = 0; repeated && sum_n(*hb) == prev_sum && tries < 100; tries++)
            hb.reset(new HostBatch(r, sched[k].B, sched[k].T, m.vocab_size));
        prev_sum = sum_n(*hb);
        const double l_cpu = ls.step(cpu, gpu, &hb->b, (int)k);
        if (k == 0) {
            l_tok0 = l_cpu;
            l_doc0 = cpu_doc->ops->step(cpu_doc, &hb->b, 0);
            if (!(std::fabs(l_doc0 - l_tok0) > ls.t_loss.atol + ls.t_loss.rtol * std::fabs(l_tok0)))
                failf("token-mean %s: the first batch's token-mean loss %.17g is the doc-mean's %.17g within the "
                      "tolerance: the check cannot tell them apart", prec_name_of(p), l_tok0, l_doc0);
        }
    }
    printf("token-mean vs cpu engine, %s, path %s, lockstep, %zu steps (batches of 4, the shape (4,16) replayed; "
           "first batch: token-mean %.6f, doc-mean %.6f): max |diff| loss %.2e, logits %.2e, grads %.2e%s; Adam on "
           "the engine's gradients reproduced bit for bit%s\n",
           prec_name_of(p), path.c_str(), sched.size(), l_tok0, l_doc0, ls.worst[0], ls.worst[1], ls.worst[2],
           ls.skipped ? " (ReLU-near-zero steps' gradients skipped)" : "", ls.failed_steps ? ": FAIL" : ": PASS");
    for (Engine *e : {gpu, cpu_doc, cpu}) e->ops->destroy(e);
}

// The fused step against the CPU engine over the shapes its indexing depends
// on (head size, grouped heads, layers, block length, batch, vocabulary):
// lockstep, 3 steps each from the CPU engine's state, ragged batches with a
// full-block document; loss, logits, gradients and the updated parameters
// within tolerance (the update: the reference's Adam on the engine's own
// gradients, bit for bit, as engine_vs_cpu checks).
static void fused_vs_cpu_shapes(Precision p, Rng &r) {
    const bool fp64 = p == PREC_FP64;
    struct S { int V, C, NH, NKV, L, T, B; const char *why; };
    const std::vector<S> shapes = {
        {27, 16, 4, 4, 1, 16, 1, "the default model, batch 1"},
        {27, 16, 4, 4, 1, 16, 32, "the default model, batch 32 (several documents a block)"},
        {28, 15, 3, 1, 2, 9, 5, "head size 5, multi-query, 2 layers"},
        {11, 12, 2, 2, 3, 7, 3, "head size 6, 3 layers, small vocabulary"},
        {40, 8, 8, 2, 4, 12, 4, "head size 1, 4 query heads a kv head, 4 layers, V > 32"},
        {27, 24, 4, 2, 1, 1, 6, "block size 1"},
        {27, 16, 1, 1, 1, 33, 3, "head size 16 (one head), block 33"},
    };
    setenv("MICROGPT_CUDA_PATH", "fused", 1);
    int failed = 0;
    for (const S &z : shapes) {
        const Model mdl(z.V, z.C, z.NH, z.NKV, z.L, z.T, z.B, 4321 + z.C);
        const EngineConfig c = mdl.cfg(p);
        char err[512] = "";
        Engine *cpu = cpu_engine_create(&c, mdl.init.data(), err, sizeof err);
        Engine *gpu = cpu ? make_cuda(mdl, p) : nullptr;
        if (!cpu || !gpu) {
            if (!cpu) failf("cpu_engine_create: %s", err);
            if (cpu) cpu->ops->destroy(cpu);
            failed++;
            continue;
        }
        if (path_of(gpu) != "fused") failf("fused shapes (%s): the engine took path %s", z.why, path_of(gpu).c_str());
        const size_t P = mdl.L.n_params, V = (size_t)z.V, H = 4 * (size_t)z.C;
        const LockstepTols tol = lockstep_tols(fp64);
        const Tol t_loss = tol.loss, t_logit = tol.logits, t_grad = tol.grads;
        const double margin = tol.relu_margin;
        std::vector<double> la((size_t)z.B * z.T * V), lb(la.size()), ga(P), gb(P), pa(P), pb(P), ma(P), mb(P), va(P),
            vb(P), relu((size_t)z.L * z.B * z.T * H);
        std::vector<double> p0(mdl.init), m0(P, 0.0), v0(P, 0.0);
        const int before = g_failures;
        for (int step = 0; step < 3; step++) {
            HostBatch hb(r, z.B, z.T, z.V);
            hb.n[0] = z.T;   // a document that fills the block
            const Batch *b = &hb.b;
            const double l_cpu = cpu->ops->step(cpu, b, step), l_gpu = gpu->ops->step(gpu, b, step);
            close("loss", step + 1, &l_gpu, &l_cpu, 1, t_loss, nullptr);
            cpu->ops->get_logits(cpu, lb.data());
            gpu->ops->get_logits(gpu, la.data());
            close("logits", step + 1, la.data(), lb.data(), la.size(), t_logit, nullptr);
            gpu->ops->get_relu_inputs(gpu, relu.data());
            bool near_zero = false;
            for (double x : relu) near_zero = near_zero || (!std::isnan(x) && std::fabs(x) < margin);
            cpu->ops->get_grads(cpu, gb.data());
            gpu->ops->get_grads(gpu, ga.data());
            if (!near_zero) close("grads", step + 1, ga.data(), gb.data(), P, t_grad, nullptr);
            ref_adam_step(p, mdl.s, step, p0, ga, m0, v0);
            gpu->ops->get_params(gpu, pa.data());
            gpu->ops->get_moments(gpu, ma.data(), va.data());
            if (max_abs_diff(pa, p0) != 0 || max_abs_diff(ma, m0) != 0 || max_abs_diff(va, v0) != 0)
                failf("fused shapes (%s), step %d: the update differs from the reference's Adam on the engine's "
                      "gradients", z.why, step + 1);
            cpu->ops->get_params(cpu, pb.data());
            cpu->ops->get_moments(cpu, mb.data(), vb.data());
            gpu->ops->set_state(gpu, pb.data(), mb.data(), vb.data());
            p0 = pb, m0 = mb, v0 = vb;
        }
        if (g_failures != before) {
            failed++;
            printf("  fused vs cpu %s: V %d C %d NH %d NKV %d L %d T %d B %d (%s): FAIL\n", prec_name_of(p), z.V, z.C,
                   z.NH, z.NKV, z.L, z.T, z.B, z.why);
        }
        gpu->ops->destroy(gpu);
        cpu->ops->destroy(cpu);
    }
    unsetenv("MICROGPT_CUDA_PATH");
    printf("fused step vs cpu engine, %s, lockstep, %zu shapes x 3 steps (head sizes 1..16, MQA/GQA, 1-4 layers, "
           "block 1..33, batch 1..32, full-block documents): %s\n", prec_name_of(p), shapes.size(),
           failed ? "FAIL" : "PASS");
}

// The path choice: auto takes the fused step where it fits and the layered
// one where not; a forced fused path that cannot take the model, or an
// unknown value, is refused with the reason.
static void path_choice() {
    const Model small(27, 16, 4, 4, 1, 16, 8, 1), big(27, 256, 4, 4, 2, 64, 8, 1);
    Engine *e = make_cuda(small, PREC_FP64);
    const std::string ps = e ? path_of(e) : "?";
    if (e) e->ops->destroy(e);
    e = make_cuda(big, PREC_FP32);
    const std::string pb = e ? path_of(e) : "?";
    if (e) e->ops->destroy(e);
    if (ps != "fused" || pb != "layered")
        failf("auto path: the default model took %s (want fused), n_embd 256 block 64 took %s (want layered)",
              ps.c_str(), pb.c_str());
    char err[512] = "";
    setenv("MICROGPT_CUDA_PATH", "fused", 1);
    EngineConfig c = big.cfg(PREC_FP64);
    e = cuda_engine_create(&c, big.init.data(), err, sizeof err);
    if (e || !strstr(err, "fused step cannot take")) failf("a forced fused path was not refused (%s)", err);
    if (e) e->ops->destroy(e);
    printf("refusal of MICROGPT_CUDA_PATH=fused for n_embd 256: \"%s\"\n", err);
    setenv("MICROGPT_CUDA_PATH", "sideways", 1);
    err[0] = '\0';
    c = small.cfg(PREC_FP64);
    e = cuda_engine_create(&c, small.init.data(), err, sizeof err);
    if (e || !strstr(err, "not auto, fused or layered")) failf("an unknown MICROGPT_CUDA_PATH was not refused (%s)", err);
    if (e) e->ops->destroy(e);
    unsetenv("MICROGPT_CUDA_PATH");
    printf("auto path: default model %s, n_embd 256 %s: %s\n", ps.c_str(), pb.c_str(),
           ps == "fused" && pb == "layered" ? "PASS" : "FAIL");
}

// ---------------------------------------------------------------------------
// --bench: GPU time per call of the weight gradients and the embedding
// backward at issue 8's sizes, before (one cuBLAS product with k = N; the
// one-thread-per-element gather below) and after (split-K; the block-per-row
// kernel of kernels.cu).

// The embedding backward as it was: one thread per gradient element scans
// every position (tokens staged in shared memory). Kept only as the bench's
// "before".
constexpr int OLD_ENC_CHUNK = 2048;
template <typename real>
__global__ void old_encoder_backward_kernel(real *dwte, real *dwpe, const real *dout, const int *tokens, const int *n,
                                            int B, int T, int C, int V, int Tw) {
    __shared__ int tok_s[OLD_ENC_CHUNK];
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t nwte = (size_t)V * C, nwpe = (size_t)Tw * C;
    const bool is_wte = i < nwte, is_wpe = !is_wte && i < nwte + nwpe;
    const int v = is_wte ? (int)(i / C) : -2, t = is_wpe ? (int)((i - nwte) / C) : 0, c = (int)(i % C);
    real s = 0;
    for (int p0 = 0; p0 < B * T; p0 += OLD_ENC_CHUNK) {
        const int np = B * T - p0 < OLD_ENC_CHUNK ? B * T - p0 : OLD_ENC_CHUNK;
        __syncthreads();
        for (int k = threadIdx.x; k < np; k += blockDim.x) {
            const int p = p0 + k;
            tok_s[k] = p % T < n[p / T] ? tokens[(size_t)(p / T) * (T + 1) + p % T] : -1;
        }
        __syncthreads();
        if (is_wte) {
            for (int k = 0; k < np; k++)
                if (tok_s[k] == v) s += dout[(size_t)(p0 + k) * C + c];
        } else if (is_wpe && t < T) {
            for (int b = 0; b < B; b++) {
                const int k = b * T + t - p0;
                if (k >= 0 && k < np && tok_s[k] >= 0) s += dout[((size_t)b * T + t) * C + c];
            }
        }
    }
    if (is_wte) dwte[i] = s;
    else if (is_wpe) dwpe[i - nwte] = s;
}

// Two CUDA events, destroyed with the object (also when a check throws).
struct EventPair {
    cudaEvent_t a = nullptr, b = nullptr;
    EventPair() {
        CUDA_CHECK(cudaEventCreate(&a));
        CUDA_CHECK(cudaEventCreate(&b));
    }
    EventPair(const EventPair &) = delete;
    EventPair &operator=(const EventPair &) = delete;
    ~EventPair() {
        cudaEventDestroy(a);
        cudaEventDestroy(b);
    }
};

// Mean GPU time of one call of f, in microseconds (3 warm-up calls, then reps timed).
template <typename F> static double time_us(F f, int reps = 20) {
    for (int i = 0; i < 3; i++) f();
    EventPair ev;
    CUDA_CHECK(cudaEventRecord(ev.a, ST));
    for (int i = 0; i < reps; i++) f();
    CUDA_CHECK(cudaEventRecord(ev.b, ST));
    CUDA_CHECK(cudaEventSynchronize(ev.b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, ev.a, ev.b));
    return 1e3 * ms / reps;
}

template <typename real> static void bench(cublasHandle_t h, int sms, Rng &r) {
    struct Cfg {
        const char *name;
        int B, T, C, V;
    };
    const Cfg cfgs[] = {{"default model (C 16, T 16) at batch 256", 256, 16, 16, 27},
                        {"C 128 (T 16) at batch 256", 256, 16, 128, 27},
                        {"C 512 (T 64) at batch 64", 64, 64, 512, 28}};
    for (const Cfg &g : cfgs) {
        const int N = g.B * g.T, C = g.C;
        printf("%s %s, N = %d rows:\n", prec_name<real>(), g.name, N);
        const struct {
            const char *w;
            int IC, OC;
        } prods[] = {{"lm_head", C, g.V}, {"mlp_fc2", 4 * C, C}, {"mlp_fc1", C, 4 * C}, {"attn_wo", C, C},
                     {"attn_wqkv", C, 3 * C}};
        for (const auto &pr : prods) {
            const int IC = pr.IC, OC = pr.OC;
            const std::vector<real> inp = randn<real>(r, (size_t)N * IC), dout = randn<real>(r, (size_t)N * OC);
            const size_t nscr = dw_scratch_count(N, IC, OC, sms);
            DevBuf<real> d_inp(inp), d_dout(dout), d_dw((size_t)OC * IC), d_scr(nscr);
            const DwScratch<real> none{nullptr, 0, sms}, ws{d_scr.p, nscr, sms};
            const double t0 = time_us([&] {
                matmul_backward(h, (real *)nullptr, false, d_dw.p, false, d_dout.p, OC, d_inp.p, (const real *)nullptr, N,
                                IC, OC, none);
            });
            const double t1 = time_us([&] {
                matmul_backward(h, (real *)nullptr, false, d_dw.p, false, d_dout.p, OC, d_inp.p, (const real *)nullptr, N,
                                IC, OC, ws);
            });
            const DwSplit sp = dw_split(N, IC, OC, sms, (int)sizeof(real));
            printf("  dW %-9s (OC %4d, IC %4d): one product %8.1f us; split-K S %3d x %4d rows %8.1f us (%.1fx)\n",
                   pr.w, OC, IC, t0, sp.S, sp.K, t1, t0 / t1);
        }
        const int B = g.B, T = g.T, V = g.V;
        const std::vector<int> n = make_lengths(r, B, T), tok = make_tokens(r, n, T, V);
        const std::vector<real> dout = randn<real>(r, (size_t)N * C);
        DevBuf<int> d_n(n), d_tok(tok);
        DevBuf<real> d_dout(dout), d_dwte((size_t)V * C), d_dwpe((size_t)T * C);
        const double t0 = time_us([&] {
            old_encoder_backward_kernel<real><<<(unsigned)(((size_t)(V + T) * C + 255) / 256), 256, 0, ST>>>(
                d_dwte.p, d_dwpe.p, d_dout.p, d_tok.p, d_n.p, B, T, C, V, T);
            KERNEL_CHECK("old_encoder_backward_kernel");
        });
        const double t1 = time_us(
            [&] { encoder_backward(ST, d_dwte.p, d_dwpe.p, d_dout.p, d_tok.p, d_n.p, B, T, C, V, T, false); });
        printf("  encoder_backward (V %d, ragged lengths): one thread per element %8.1f us; block per row %8.1f us "
               "(%.1fx)\n", V, t0, t1, t0 / t1);
    }
}

static void refusals() {
    const Model mdl(27, 16, 4, 2, 1, 16, 2, 1);
    EngineConfig c = mdl.cfg(PREC_FP64);
    char err[512] = "";
    c.fault = FAULT_ATTN_SCALE;
    Engine *e = cuda_engine_create(&c, mdl.init.data(), err, sizeof err);
    if (e || !strstr(err, "fault")) failf("a fault was not refused clearly (%s)", err);
    if (e) e->ops->destroy(e);
    printf("refusal of --inject-fault on cuda: \"%s\"\n", err);
    // a batch whose activations cannot fit is refused with the estimate, before any allocation
    const Model big(27, 16, 4, 4, 1, 16, 60000000, 1);
    EngineConfig cb = big.cfg(PREC_FP64);
    err[0] = '\0';
    e = cuda_engine_create(&cb, big.init.data(), err, sizeof err);
    if (e || !strstr(err, "not enough device memory")) failf("a size that cannot fit was not refused (%s)", err);
    if (e) e->ops->destroy(e);
    printf("refusal of a size that cannot fit: \"%s\"\n", err);
    // a split-K setting that is neither 0 nor 1
    setenv("MICROGPT_DW_SPLIT", "yes", 1);
    c.fault = FAULT_NONE;
    err[0] = '\0';
    e = cuda_engine_create(&c, mdl.init.data(), err, sizeof err);
    unsetenv("MICROGPT_DW_SPLIT");
    if (e || !strstr(err, "MICROGPT_DW_SPLIT")) failf("MICROGPT_DW_SPLIT=yes was not refused (%s)", err);
    if (e) e->ops->destroy(e);
    printf("refusal of MICROGPT_DW_SPLIT=yes: \"%s\"\n", err);
}

// ---------------------------------------------------------------------------
// the mixed-precision recipe (mixed.cuh) against its CPU reference
// (tensor_gpu/cpu/mixed.c) and lowp.h

static const char *lowp_name(Lowp lp) { return lp == Lowp::BF16 ? "bf16" : lp == Lowp::FP16 ? "fp16" : "tf32"; }

// Floats of every class the rounding treats apart (tests/test_lowp.c's):
// ties to even both ways at bf16's and tf32's cut, just above and below
// half, carries into the exponent, +-0, +-inf, NaNs with payload only in the
// dropped bits, subnormals, the largest finites; then random bit patterns
// (every exponent) and random normals.
static std::vector<float> rounding_inputs(Rng &r, size_t n_random) {
    std::vector<uint32_t> u = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u,
                               0xff800001u, 0x7f808000u, 0x7f801000u, 0x00000001u, 0x80000001u, 0x007fffffu,
                               0x00008000u, 0x00018000u, 0x7f7fffffu, 0xff7fffffu, 0x7f7f8000u, 0x7f7f7fffu,
                               0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x3f808001u, 0x3fffffffu, 0x3f801000u,
                               0x3f803000u, 0x3f800fffu, 0x3f801001u, 0xbf808000u, 0xbf818000u, 0x3f7fffffu};
    for (size_t i = 0; i < n_random; i++) u.push_back((uint32_t)r.next());
    for (int cut : {16, 13})   // random kept parts with dropped parts exactly half, half +- 1
        for (int i = 0; i < 2000; i++) {
            const uint32_t keep = (uint32_t)r.next() & ~((1u << cut) - 1u), half = 1u << (cut - 1);
            for (uint32_t d : {half, half - 1u, half + 1u}) u.push_back(keep | d);
        }
    std::vector<float> x;
    for (uint32_t b : u) x.push_back(lowp_float(b));
    for (size_t i = 0; i < n_random; i++) x.push_back((float)r.normal());
    return x;
}

__global__ void cuda_bf16_rn_kernel(uint16_t *out, const float *x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
}

// lowp_convert and lowp_round_inplace against lowp.h, bit for bit (NaNs
// included: the kernels round with lowp.h itself; fp16's __half: a NaN for a
// NaN), through a row stride;
// and lowp.h's bf16 against CUDA's __float2bfloat16_rn on every non-NaN.
static void test_lowp_kernels(Rng &r) {
    const std::vector<float> x = rounding_inputs(r, 200000);
    const int cols = 61, lds = 64, rows = (int)((x.size() + cols - 1) / cols);
    std::vector<float> src((size_t)rows * lds, 1.0f);
    for (size_t i = 0; i < x.size(); i++) src[i / cols * lds + i % cols] = x[i];
    const size_t n = (size_t)rows * cols;
    DevBuf<float> d_src(src), d_f(n);
    DevBuf<uint16_t> d_h(n);
    size_t bad[6] = {0, 0, 0, 0, 0, 0}, first[6] = {0, 0, 0, 0, 0, 0};
    auto count = [&](int k, size_t i) {
        if (bad[k]++ == 0) first[k] = i;
    };
    d_h.poison();
    lowp_convert(ST, Lowp::BF16, d_h.p, d_src.p, rows, cols, lds);
    const std::vector<uint16_t> hb = d_h.down();
    d_f.poison();
    lowp_convert(ST, Lowp::TF32, d_f.p, d_src.p, rows, cols, lds);
    const std::vector<float> hf = d_f.down();
    d_h.poison();
    lowp_convert(ST, Lowp::FP16, d_h.p, d_src.p, rows, cols, lds);
    const std::vector<uint16_t> hh = d_h.down();
    for (size_t i = 0; i < n; i++) {
        const float v = src[i / cols * lds + i % cols];
        if (hb[i] != (uint16_t)(lowp_bits(round_bf16(v)) >> 16)) count(0, i);
        if (lowp_bits(hf[i]) != lowp_bits(round_tf32(v))) count(1, i);
        const float h = lowp16_value(Lowp::FP16, hh[i]), rh = round_fp16(v);   // NaN: a NaN (payloads differ)
        if (v == v ? lowp_bits(h) != lowp_bits(rh) : h == h) count(4, i);
    }
    // in place through the stride; the columns past cols stay as they were
    DevBuf<float> d_x(src), d_x16(src);
    lowp_round_inplace(ST, Lowp::BF16, d_x.p, rows, cols, lds);
    lowp_round_inplace(ST, Lowp::FP16, d_x16.p, rows, cols, lds);
    const std::vector<float> hx = d_x.down(), hx16 = d_x16.down();
    for (size_t i = 0; i < src.size(); i++) {
        const bool in = (int)(i % lds) < cols;
        if (lowp_bits(hx[i]) != lowp_bits(in ? round_bf16(src[i]) : src[i])) count(2, i);
        if (lowp_bits(hx16[i]) != lowp_bits(in ? round_fp16(src[i]) : src[i])) count(5, i);
    }
    DevBuf<float> d_c(columns(src, rows, lds, cols));
    d_h.poison();
    cuda_bf16_rn_kernel<<<256, 256>>>(d_h.p, d_c.p, n);
    KERNEL_CHECK("cuda_bf16_rn_kernel");
    const std::vector<uint16_t> hc = d_h.down();
    for (size_t i = 0; i < n; i++) {
        const float v = src[i / cols * lds + i % cols];
        if (v == v && hc[i] != (uint16_t)(lowp_bits(round_bf16(v)) >> 16)) count(3, i);
    }
    // contiguous (the four-at-a-time kernels), from an aligned start and from
    // one float past it (the one-at-a-time fallback), odd lengths
    const std::vector<float> xc = columns(src, rows, lds, cols);
    size_t flat_bad = 0, flat_checked = 0;
    for (Lowp lp : {Lowp::BF16, Lowp::FP16, Lowp::TF32})
        for (size_t off : {(size_t)0, (size_t)1}) {
            const size_t m = n - off;
            DevBuf<float> d_in(xc), d_out(m);
            DevBuf<uint16_t> d_o16(m);
            d_out.poison();
            d_o16.poison();
            lowp_convert(ST, lp, lp == Lowp::TF32 ? (void *)d_out.p : (void *)d_o16.p, d_in.p + off, 1, (int)m, (int)m);
            lowp_round_inplace(ST, lp, d_in.p + off, 1, (int)m, (int)m);
            const std::vector<float> ho = d_out.down(), hr = d_in.down();
            const std::vector<uint16_t> h16 = d_o16.down();
            for (size_t i = 0; i < m; i++) {
                const float v = xc[i + off];
                if (v != v) continue;   // NaN payloads: checked above
                const float want = lp == Lowp::BF16 ? round_bf16(v) : lp == Lowp::FP16 ? round_fp16(v) : round_tf32(v);
                const float got = lp == Lowp::TF32 ? ho[i] : lowp16_value(lp, h16[i]);
                const float in_place = hr[i + off], want_in_place = lp == Lowp::TF32 ? v : want;
                flat_bad += lowp_bits(got) != lowp_bits(want) || lowp_bits(in_place) != lowp_bits(want_in_place);
                flat_checked++;
            }
            if (off == 1 && lowp_bits(hr[0]) != lowp_bits(xc[0])) flat_bad++;   // before the start: untouched
        }
    if (flat_bad) failf("rounding kernels, contiguous: %zu of %zu values differ from lowp.h", flat_bad, flat_checked);
    printf("rounding kernels, contiguous (aligned and one float off, bf16/fp16/tf32, convert and in place): %zu "
           "values bit-identical to lowp.h%s\n", flat_checked, flat_bad ? ": FAIL" : ": PASS");
    const char *what[6] = {"lowp_convert bf16 vs lowp.h round_bf16", "lowp_convert tf32 vs lowp.h round_tf32",
                           "lowp_round_inplace bf16 vs lowp.h (row stride)", "lowp.h round_bf16 vs __float2bfloat16_rn",
                           "lowp_convert fp16 vs lowp.h round_fp16", "lowp_round_inplace fp16 vs lowp.h (row stride)"};
    for (int k = 0; k < 6; k++) {
        const size_t i = first[k];
        const float v = bad[k] ? src[k == 2 || k == 5 ? i : i / cols * lds + i % cols] : 0.0f;
        if (bad[k])
            failf("%s: %zu of %zu values differ, the first input 0x%08x", what[k], bad[k], n, lowp_bits(v));
        printf("rounding kernels: %s, %zu values (ties, carries, +-0, inf, NaN, subnormals, random): %s\n", what[k],
               n, bad[k] ? "FAIL" : "bit-identical: PASS");
    }
}

// The float values of n elements of L at d16 (bf16, fp16 bits) or d32 (tf32)
static std::vector<float> lowp_values(Lowp lp, const DevBuf<uint16_t> &d16, const DevBuf<float> &d32, size_t n) {
    std::vector<float> v(n);
    if (lp == Lowp::TF32) {
        const std::vector<float> h = d32.down();
        std::copy(h.begin(), h.begin() + (ptrdiff_t)n, v.begin());
        return v;
    }
    const std::vector<uint16_t> h = d16.down();
    for (size_t i = 0; i < n; i++)
        v[i] = lowp16_value(lp, h[i]);
    return v;
}

// The engine's fused recipe kernels (mixed.cuh: lowp_add_rounded(3),
// lowp_convert_flat, lowp_round_relu, lowp_relu_backward, lowp_relu,
// lowp_relu_mask, lowp_add_rounded_convert) against the CPU
// engine's sequence of operations written out with lowp.h, bit for bit (a
// NaN for a NaN), in each L, from an aligned start (four at a time) and one
// float past it (one at a time), on the rounding inputs (ties, carries,
// +-0, inf, NaN, subnormals) and relu masks of both signs, zeros included.
static void test_lowp_fused(Rng &r) {
    const std::vector<float> a = rounding_inputs(r, 60000);
    const size_t n = a.size();
    std::vector<float> b(n), c(n), x(n);
    for (size_t i = 0; i < n; i++) {
        b[i] = a[(i * 7919) % n];
        c[i] = (float)r.normal() * 1e-3f;
        x[i] = i % 5 == 0 ? (i % 2 ? -0.0f : 0.0f) : (float)r.normal();
    }
    size_t bad = 0, checked = 0;
    const char *first = nullptr;
    auto same = [](float g, float w) { return w != w ? g != g : lowp_bits(g) == lowp_bits(w); };
    auto check = [&](const char *what, float g, float w) {
        checked++;
        if (!same(g, w) && bad++ == 0) first = what;
    };
    for (Lowp lp : {Lowp::BF16, Lowp::FP16, Lowp::TF32}) {
        auto out = [lp](float v) { return lp == Lowp::BF16 ? round_bf16(v) : lp == Lowp::FP16 ? round_fp16(v) : v; };
        auto opnd = [lp](float v) {
            return lp == Lowp::BF16 ? round_bf16(v) : lp == Lowp::FP16 ? round_fp16(v) : round_tf32(v);
        };
        for (size_t off : {(size_t)0, (size_t)1}) {
            const size_t m = n - off;
            DevBuf<float> da(a), db(b), dc(c), dsum(n), dacc(c), d32(n);
            DevBuf<uint16_t> d16(n);
            void *dl = lp == Lowp::TF32 ? (void *)d32.p : (void *)d16.p;
            dsum.poison();
            lowp_add_rounded3(ST, lp, dsum.p + off, da.p + off, db.p + off, dc.p + off, m);
            lowp_add_rounded(ST, lp, dacc.p + off, da.p + off, m, true);
            const std::vector<float> hs = dsum.down(), hacc = dacc.down();
            for (size_t i = off; i < n; i++) {
                check("lowp_add_rounded3", hs[i], ((0.0f + out(a[i])) + out(b[i])) + out(c[i]));
                check("lowp_add_rounded (+=)", hacc[i], c[i] + out(a[i]));
            }
            d16.poison(), d32.poison();
            lowp_convert_flat(ST, lp, dl, da.p + off, m);
            std::vector<float> hl = lowp_values(lp, d16, d32, m);
            for (size_t i = 0; i < m; i++) check("lowp_convert_flat", hl[i], opnd(a[i + off]));
            // fc1's raw output xr (the rounding inputs: ties, subnormals that
            // round to 0, NaN, +-0) through round_relu into r, then relu's
            // backward with the sign from r (bf16, fp16) or xr itself (tf32)
            std::vector<float> xr(n);
            for (size_t i = 0; i < n; i++) xr[i] = i % 2 ? b[i] : x[i];
            DevBuf<float> dxr(xr), d32r(n);
            DevBuf<uint16_t> d16r(n);
            void *dr = lp == Lowp::TF32 ? (void *)d32r.p : (void *)d16r.p;
            d16r.poison(), d32r.poison();
            lowp_round_relu(ST, lp, dxr.p + off, dr, m);
            hl = lowp_values(lp, d16r, d32r, m);
            const std::vector<float> hx = dxr.down();
            for (size_t i = 0; i < m; i++) {
                const float y = out(xr[i + off]);
                check("lowp_round_relu (relu operand)", hl[i], opnd(y > 0 ? y : 0.0f));
            }
            for (size_t i = 0; i < n; i++)
                if (!same(hx[i], xr[i])) bad++, first = "lowp_round_relu (its input changed)";
            const void *sign = lp == Lowp::TF32 ? (const void *)(dxr.p + off) : (const void *)((uint16_t *)dr);
            d16.poison(), d32.poison();
            lowp_relu_backward(ST, lp, dl, da.p + off, sign, m);
            hl = lowp_values(lp, d16, d32, m);
            for (size_t i = 0; i < m; i++) {
                const float g = 0.0f + out(a[i + off]);
                check("lowp_relu_backward", hl[i], opnd(out(xr[i + off]) > 0 ? 0.0f + g : 0.0f));
            }
            if (lp != Lowp::TF32) {
                // bf16, fp16: fc1's output stored in L (xr's L values y),
                // relu into r, then fc2's input gradient stored in L (a's L
                // values) masked in place by r's sign
                std::vector<float> yl(n);
                for (size_t i = 0; i < n; i++) yl[i] = out(xr[i]);
                DevBuf<float> dyl(yl);
                DevBuf<uint16_t> dy16(n), dm16(n);
                lowp_convert_flat(ST, lp, dy16.p, dyl.p, n);   // exact: L values
                d16r.poison();
                lowp_relu(ST, lp, d16r.p, dy16.p + off, m);
                hl = lowp_values(lp, d16r, d32r, m);
                for (size_t i = 0; i < m; i++) {
                    const float y = yl[i + off];
                    check("lowp_relu", hl[i], y > 0 ? y : 0.0f);
                }
                lowp_convert_flat(ST, lp, dm16.p, da.p, n);
                const uint16_t before = dm16.down()[0];
                lowp_relu_mask(ST, lp, dm16.p + off, d16r.p, m);
                const std::vector<uint16_t> hm = dm16.down();
                for (size_t i = off; i < n; i++) {
                    const float g = out(a[i]);
                    const float got = lowp16_value(lp, hm[i]);
                    check("lowp_relu_mask", got, opnd(yl[i] > 0 ? 0.0f + g : 0.0f));
                }
                if (off && hm[0] != before) bad++, first = "lowp_relu_mask (wrote before its start)";
            }
            // the head's dx = 0 + rnd(t) and its rounded copy
            DevBuf<float> dd(n);
            dd.poison(), d16.poison(), d32.poison();
            lowp_add_rounded_convert(ST, lp, dd.p + off, dl, da.p + off, m);
            const std::vector<float> hd = dd.down();
            hl = lowp_values(lp, d16, d32, m);
            for (size_t i = 0; i < m; i++) {
                const float y = 0.0f + out(a[i + off]);
                check("lowp_add_rounded_convert (dinp)", hd[i + off], y);
                check("lowp_add_rounded_convert (operand)", hl[i], opnd(y));
            }
        }
    }
    if (bad) failf("fused rounding kernels: %zu of %zu values differ from lowp.h, the first in %s", bad, checked, first);
    printf("fused rounding kernels (add_rounded3, add_rounded +=, convert_flat, round_relu, relu_backward, "
           "relu and relu_mask on L values, add_rounded_convert; "
           "bf16/fp16/tf32, aligned and one float off): %zu values bit-identical to lowp.h: PASS\n", checked);
}

// The recipe's attention (attention_forward_lowp, attention_backward_lowp):
// the fp32 kernels taking unrounded inputs and using their L values (bf16,
// fp16: rounded as they are loaded, or in place on the rows path), writing
// their outputs in L (and, in bf16 and fp16, fusing the score products'
// multiply and add) must give the bits of the fp32 kernels on the inputs
// rounded to L followed by lowp_convert, on the tiled path (grouped heads,
// ragged documents, T not a multiple of 4) and on the rows path (T 256,
// HS 128).
static void test_lowp_attention(Rng &r) {
    size_t bad = 0, checked = 0;
    std::string first;
    auto cmp = [&](const std::string &what, const std::vector<uint32_t> &g, const std::vector<uint32_t> &w) {
        for (size_t i = 0; i < g.size(); i++, checked++)
            if (g[i] != w[i] && bad++ == 0) first = what;
    };
    struct Case { int B, T, NH, NKV, HS; };
    // compact layouts (T 64, T 17), the others (T 96: the tiles outnumber the threads), the rows path
    const Case cases[] = {{3, 64, 2, 1, 64}, {4, 17, 4, 2, 12}, {2, 96, 2, 1, 64}, {1, 256, 2, 1, 128}};
    for (Lowp lp : {Lowp::BF16, Lowp::FP16, Lowp::TF32})
        for (const Case &k : cases) {
            const int B = k.B, T = k.T, NH = k.NH, NKV = k.NKV, HS = k.HS, N = B * T;
            const int C = NH * HS, KV = NKV * HS, QKV = C + 2 * KV;
            const size_t natt = (size_t)B * NH * T * T;
            const std::vector<int> n = make_lengths(r, B, T);
            DevBuf<int> dn(n);
            const std::vector<float> hqkv = randn<float>(r, (size_t)N * QKV, 0.5), hdout = randn<float>(r, (size_t)N * C, 0.1);
            // the recipe's kernels take the inputs unrounded (the engine's q, k, v and dout) and use their L
            // values; the fp32 kernels get those L values
            DevBuf<float> qkv_raw(hqkv), dout_raw(hdout), qkv(hqkv), dout(hdout);
            lowp_round_inplace(ST, lp, qkv.p, N, QKV, QKV);
            lowp_round_inplace(ST, lp, dout.p, N, C, C);
            const float *q = qkv.p, *kk = qkv.p + C, *v = qkv.p + C + KV;
            float *qr = qkv_raw.p, *kr = qkv_raw.p + C, *vr = qkv_raw.p + C + KV;
            DevBuf<float> out(N * (size_t)C), att(natt), att2(natt), scratch(N * (size_t)C);
            // L in 32-bit words: enough for bf16, fp16 and tf32, poisoned alike
            DevBuf<uint32_t> lo((size_t)N * QKV), lo_ref((size_t)N * QKV);
            lo.poison(), lo_ref.poison(), att2.poison(), scratch.poison();
            attention_forward(ST, out.p, att.p, q, QKV, kk, v, QKV, dn.p, B, T, NH, NKV, HS);
            lowp_convert(ST, lp, lo_ref.p, out.p, N, C, C);
            attention_forward_lowp(ST, lp, lo.p, scratch.p, att2.p, qr, QKV, kr, vr, QKV, dn.p, B, T, NH, NKV, HS);
            const std::string where = std::string(lowp_name(lp)) + " T " + std::to_string(T) + " HS " +
                                      std::to_string(HS) + " (" +
                                      attn_path_name(attention_forward_path<float>(T, HS)) + ")";
            cmp("attention_forward_lowp out, " + where, lo.down(), lo_ref.down());
            {
                const std::vector<float> a = att.down(), b = att2.down();
                std::vector<uint32_t> ua(a.size()), ub(b.size());
                std::memcpy(ua.data(), a.data(), a.size() * 4), std::memcpy(ub.data(), b.data(), b.size() * 4);
                cmp("attention_forward_lowp att, " + where, ub, ua);
            }
            DevBuf<float> dqkv((size_t)N * QKV), dqkv2((size_t)N * QKV), dpre(natt), dpre2(natt);
            dqkv.poison(), dqkv2.poison(), lo.poison(), lo_ref.poison();
            attention_backward(ST, dqkv.p, QKV, dqkv.p + C, dqkv.p + C + KV, QKV, dpre.p, dout.p, att.p, q, QKV, kk, v,
                               QKV, dn.p, B, T, NH, NKV, HS, false);
            lowp_convert(ST, lp, lo_ref.p, dqkv.p, N, QKV, QKV);
            attention_backward_lowp(ST, lp, lo.p, dqkv2.p, QKV, dpre2.p, dout_raw.p, att.p, qr, kr, vr, QKV, dn.p, B, T,
                                    NH, NKV, HS);
            cmp("attention_backward_lowp dq|dk|dv, " + where, lo.down(), lo_ref.down());
        }
    bool refused = false;
    try {
        DevBuf<int> dn(std::vector<int>{4});
        DevBuf<float> x(64);
        DevBuf<uint32_t> l(64);
        attention_backward_lowp(ST, Lowp::BF16, l.p, x.p, 2, x.p, x.p, x.p, x.p, x.p, x.p, 4, dn.p, 1, 4, 1, 1, 1);
    } catch (const CudaError &) {
        refused = true;
    }
    if (!refused) failf("attention_backward_lowp: dq|dk|dv rows narrower than C + 2 KV were not refused");
    if (bad)
        failf("recipe attention: %zu of %zu values differ from the fp32 kernels then lowp_convert, the first in %s",
              bad, checked, first.c_str());
    printf("recipe attention (unrounded inputs, outputs written in L; bf16/fp16/tf32, tiled and rows): %zu values "
           "bit-identical to the fp32 kernels on the inputs' L values then lowp_convert: %s\n", checked,
           bad ? "FAIL" : "PASS");
}

// cuBLAS storing a product in L (mixed_gemm_forward_lp, mixed_gemm_dinp_lp:
// the engine's fc1 output and fc2 input gradient in bf16 and fp16) against
// the same product stored in fp32 and then rounded by lowp.h (lowp_convert):
// the same bits, but where the two cuBLAS kernels' fp32 sums fall on either
// side of a rounding boundary of L (one unit in the last place, at most 1
// value in 1000; truncation instead of rounding to nearest would differ in
// about half). fp16: sums past 65504 must become inf as lowp.h rounds them
// (the loss scaler relies on it; some rows are scaled to get there).
static void test_lowp_gemm_out(Rng &r) {
    auto hex16 = [](uint16_t u) {
        char b[8];
        snprintf(b, sizeof b, "%04x", u);
        return std::string(b);
    };
    size_t checked = 0, near = 0, far = 0, infs = 0;
    std::string first;
    // N, IC, OC: odd sizes; the engine's fc1 at n_embd 128 (batch 8) and 512 (batch 64)
    const int shapes[][3] = {{67, 40, 96}, {512, 128, 512}, {4096, 512, 2048}};
    for (Lowp lp : {Lowp::BF16, Lowp::FP16})
        for (const auto &sh : shapes) {
            const int N = sh[0], IC = sh[1], OC = sh[2];
            std::vector<float> a = randn<float>(r, (size_t)N * IC), d = randn<float>(r, (size_t)N * OC, 0.1);
            const std::vector<float> w = randn<float>(r, (size_t)OC * IC, 0.1);
            // rows of +-30000 (fp16 operands still), whose sums go past fp16's range
            for (int n = 3; n < N; n += 16) {
                for (int i = 0; i < IC; i++) a[(size_t)n * IC + i] = a[(size_t)n * IC + i] < 0 ? -3e4f : 3e4f;
                for (int o = 0; o < OC; o++) d[(size_t)n * OC + o] = d[(size_t)n * OC + o] < 0 ? -3e4f : 3e4f;
            }
            DevBuf<float> da(a), dd(d), dw(w), o32((size_t)N * (OC > IC ? OC : IC));
            DevBuf<uint16_t> al((size_t)N * IC), dl((size_t)N * OC), wl((size_t)OC * IC), ref(o32.n), got(o32.n);
            lowp_convert(ST, lp, al.p, da.p, N, IC, IC);
            lowp_convert(ST, lp, dl.p, dd.p, N, OC, OC);
            lowp_convert(ST, lp, wl.p, dw.p, OC, IC, IC);
            cublasHandle_t h;
            CUBLAS_CHECK(cublasCreate(&h));
            CUBLAS_CHECK(cublasSetStream(h, ST));
            CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));   // as the engine's handles
            CUBLAS_CHECK(cublasSetAtomicsMode(h, CUBLAS_ATOMICS_NOT_ALLOWED));
            CUBLAS_CHECK(cublasSetWorkspace(h, nullptr, 0));
            const mgpt::MixedMM gm{lp, h, nullptr, nullptr, nullptr, nullptr, 0, 0};
            for (int dinp = 0; dinp < 2; dinp++) {
                const size_t count = (size_t)N * (dinp ? IC : OC);
                ref.poison(), got.poison();
                if (!dinp) {
                    mixed_gemm_forward(gm, o32.p, OC, al.p, wl.p, N, IC, OC, false);
                    mixed_gemm_forward_lp(gm, got.p, OC, al.p, wl.p, N, IC, OC);
                } else {
                    mixed_gemm_dinp(gm, o32.p, dl.p, OC, wl.p, N, IC, OC);
                    mixed_gemm_dinp_lp(gm, got.p, dl.p, OC, wl.p, N, IC, OC);
                }
                lowp_convert(ST, lp, ref.p, o32.p, 1, (int)count, (int)count);
                const std::vector<uint16_t> g = got.down(), e = ref.down();
                const uint16_t inf_bits = lp == Lowp::BF16 ? 0x7f80 : 0x7c00;
                for (size_t i = 0; i < count; i++, checked++) {
                    infs += (e[i] & 0x7fff) == inf_bits;
                    if (g[i] == e[i]) continue;
                    const bool finite = (e[i] & 0x7fff) < inf_bits && (g[i] & 0x7fff) < inf_bits;
                    const bool one_ulp = finite && (g[i] & 0x8000) == (e[i] & 0x8000) &&
                                         (g[i] > e[i] ? g[i] - e[i] : e[i] - g[i]) == 1;
                    if (one_ulp) near++;
                    else if (far++ == 0)
                        first = std::string(lowp_name(lp)) + (dinp ? " dinp" : " forward") + " N " +
                                std::to_string(N) + " IC " + std::to_string(IC) + " OC " + std::to_string(OC) +
                                " [" + std::to_string(i) + "]: 0x" + hex16(g[i]) + ", lowp.h 0x" + hex16(e[i]);
                }
            }
            CUBLAS_CHECK(cublasDestroy(h));
        }
    const bool bad = far || near * 1000 > checked;
    if (bad)
        failf("cuBLAS storing L: %zu of %zu values more than one unit off the fp32 product rounded by lowp.h (the "
              "first: %s), %zu one unit off (at most 1 in 1000 allowed)", far, checked, first.c_str(), near);
    if (!infs) failf("cuBLAS storing L: the fp16 overflow case did not happen (no inf in the reference)");
    printf("cuBLAS storing L (fc1 forward, fc2 dinp; bf16, fp16): %zu values, %zu bit-identical to the fp32 product "
           "rounded by lowp.h (%zu inf among them), %zu one unit off: %s\n", checked, checked - near - far, infs,
           near, bad || !infs ? "FAIL" : "PASS");
}

// The recipe's rmsnorm rows (lowp_residual_rmsnorm, lowp_rmsnorm_backward)
// against the unfused sequence each replaces, bit for bit: the rounding
// kernels (tested against lowp.h above) around the fp32 rmsnorm kernels
// (tested against the CPU reference): with and without the residual, with
// and without the norm, from one and from three rounded input gradients.
static void test_lowp_rows(Rng &r) {
    size_t bad = 0, checked = 0;
    const char *first = nullptr;
    auto cmp = [&](const char *what, const std::vector<float> &g, const std::vector<float> &w) {
        for (size_t i = 0; i < g.size(); i++, checked++)
            if (lowp_bits(g[i]) != lowp_bits(w[i]) && bad++ == 0) first = what;
    };
    auto cmp16 = [&](const char *what, const DevBuf<uint16_t> &g, const DevBuf<uint16_t> &w) {
        const std::vector<uint16_t> a = g.down(), b = w.down();
        for (size_t i = 0; i < a.size(); i++, checked++)
            if (a[i] != b[i] && bad++ == 0) first = what;
    };
    for (Lowp lp : {Lowp::BF16, Lowp::FP16, Lowp::TF32})
        for (int C : {72, 256, 512}) {
            const int N = 67;
            const size_t NC = (size_t)N * C;
            std::vector<float> p(NC), x(NC), t(3 * NC), dx0(NC);
            for (size_t i = 0; i < NC; i++) {
                p[i] = (float)r.normal() * 0.3f;
                x[i] = (float)r.normal();
                dx0[i] = (float)r.normal() * 1e-2f;
            }
            for (auto &v : t) v = (float)r.normal() * 1e-2f;
            DevBuf<float> dp(p), dpr(p), dxv(x), dt(t), res(NC), res_ref(NC), ln_ref(NC), rstd(N), rstd_ref(N);
            // the operands: uint16 (bf16, fp16) or float (tf32) in 32-bit words, enough for both
            DevBuf<uint16_t> lo(2 * NC), lo_ref(2 * NC);
            auto opnds = [&](const DevBuf<uint16_t> &a, const DevBuf<uint16_t> &b, const char *what) {
                if (lp != Lowp::TF32) {
                    cmp16(what, a, b);
                    return;
                }
                const std::vector<uint16_t> ha = a.down(), hb = b.down();
                std::vector<float> fa(NC), fb(NC);
                std::memcpy(fa.data(), ha.data(), NC * sizeof(float));
                std::memcpy(fb.data(), hb.data(), NC * sizeof(float));
                cmp(what, fa, fb);
            };
            if (lp != Lowp::TF32) lowp_round_inplace(ST, lp, dpr.p, N, C, C);
            for (int mode = 0; mode < 3; mode++) {   // residual + norm, norm only, residual only
                const bool with_p = mode != 1, norm = mode != 2;
                res.poison(), lo.poison(), lo_ref.poison(), rstd.poison(), rstd_ref.poison();
                lowp_residual_rmsnorm(ST, lp, with_p ? res.p : nullptr, lo.p, norm ? rstd.p : nullptr,
                                      with_p ? dp.p : nullptr, dxv.p, N, C, norm);
                const float *in = dxv.p;
                if (with_p) {
                    residual_forward(ST, res_ref.p, dpr.p, dxv.p, NC);
                    in = res_ref.p;
                }
                if (norm) {
                    rmsnorm_forward(ST, ln_ref.p, rstd_ref.p, in, N, C);
                    in = ln_ref.p;
                }
                lowp_convert(ST, lp, lo_ref.p, in, N, C, C);
                const char *what[3] = {"lowp_residual_rmsnorm (residual, norm)", "lowp_residual_rmsnorm (norm)",
                                       "lowp_residual_rmsnorm (residual, no norm)"};
                opnds(lo, lo_ref, what[mode]);
                if (norm)
                    for (float v : rstd.down())
                        if (!std::isfinite(v) || v <= 0) {
                            bad++, first = "lowp_residual_rmsnorm (rstd unwritten)";
                            break;
                        }
                if (with_p) cmp(what[mode], res.down(), res_ref.down());
                if (norm) cmp(what[mode], rstd.down(), rstd_ref.down());
            }
            // the backward's rstd: the norm of x (the forward loop's last
            // mode has no norm, so rstd_ref holds no row's)
            DevBuf<float> rs(N), lnx(NC);
            rmsnorm_forward(ST, lnx.p, rs.p, dxv.p, N, C);
            for (int three = 0; three < 2; three++) {
                DevBuf<float> dx(dx0), dx_ref(dx0), dy(NC);
                lo.poison(), lo_ref.poison();
                const float *t1 = three ? dt.p + NC : nullptr, *t2 = three ? dt.p + 2 * NC : nullptr;
                lowp_rmsnorm_backward(ST, lp, dx.p, lo.p, dt.p, t1, t2, dxv.p, rs.p, N, C);
                if (three) lowp_add_rounded3(ST, lp, dy.p, dt.p, dt.p + NC, dt.p + 2 * NC, NC);
                else lowp_add_rounded(ST, lp, dy.p, dt.p, NC, false);
                rmsnorm_backward(ST, dx_ref.p, dy.p, dxv.p, rs.p, N, C, true);
                lowp_convert(ST, lp, lo_ref.p, dx_ref.p, N, C, C);
                const char *what = three ? "lowp_rmsnorm_backward (three inputs)" : "lowp_rmsnorm_backward (one input)";
                const std::vector<float> hdx = dx.down();
                for (float v : hdx)
                    if (!std::isfinite(v)) {
                        bad++, first = "lowp_rmsnorm_backward (not finite: the check would prove nothing)";
                        break;
                    }
                cmp(what, hdx, dx_ref.down());
                opnds(lo, lo_ref, what);
                DevBuf<float> dx2(dx0);   // no operand asked for: dinp alone
                lowp_rmsnorm_backward(ST, lp, dx2.p, nullptr, dt.p, t1, t2, dxv.p, rs.p, N, C);
                cmp(what, dx2.down(), dx_ref.down());
            }
        }
    if (bad) failf("recipe rmsnorm rows: %zu of %zu values differ from the unfused kernels, the first in %s", bad,
                   checked, first);
    printf("recipe rmsnorm rows (residual_rmsnorm, rmsnorm_backward with their roundings; bf16/fp16/tf32, C 72, 256 "
           "and 512): %zu values bit-identical to the unfused kernels: %s\n", checked, bad ? "FAIL" : "PASS");
}

// One output element of a product of rounded operands: its exact value
// (double) and a bound on any fp32 summation of its K terms, in any order and
// with rounding or truncation in each addition or alignment (tensor cores):
// |fp32 sum - exact| <= (K + 4) 2^-21 sum|terms| (each of the K additions
// errs by at most 2 ulps of a partial sum of magnitude <= sum|terms|).
struct Exact {
    double v, bound, gamma;   // gamma: the bound per unit of sum|terms|, (K + 4) 2^-21
};

static Exact exact_dot(const float *a, size_t sa, const float *b, size_t sb, int K, float (*rnd)(float)) {
    double s = 0, m = 0;
    for (int k = 0; k < K; k++) {
        const double t = (double)rnd(a[k * sa]) * (double)rnd(b[k * sb]);
        s += t;
        m += std::fabs(t);
    }
    return Exact{s, (K + 4) * std::ldexp(m, -21), (K + 4) * std::ldexp(1.0, -21)};
}

static float identity(float x) { return x; }

struct MixedStat {
    size_t n = 0, exact = 0, boundary = 0, bad = 0, unrounded_far = 0;
    double max_abs = 0;
};

// gpu against the CPU reference cpu and the exact product ex: out stored in
// L (bf16 outputs): gpu is an L value, rounds a value within the bound, and
// equals cpu unless the bound straddles an L rounding boundary (then within
// that one step); fp32 outputs: within the bound of exact and 2 bounds of
// cpu. start: the gradient accumulated onto (nullptr: overwritten).
static void check_mixed(const char *kernel, const char *what, Lowp lp, bool l_out, const float *gpu, const float *cpu,
                        const std::vector<Exact> &ex, const float *start, MixedStat &st, const char *shape) {
    float (*rout)(float) = lp == Lowp::FP16 ? round_fp16 : round_bf16;   // the L of an L-stored output
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < ex.size(); i++) {
        const float g = gpu[i], c = cpu[i], s0 = start ? start[i] : 0.0f;
        const double e = ex[i].v, b = ex[i].bound;
        bool ok;
        if (l_out) {
            const float lo = rout((float)(e - b)), hi = rout((float)(e + b));
            if (lo == hi) {
                ok = lowp_bits(g) == lowp_bits(c) || g == c;
                st.exact++;
            } else {
                ok = std::fabs((double)g - c) <= (double)(hi - lo) + std::ldexp(std::fabs(s0) + std::fabs(hi), -22);
                st.boundary++;
            }
            if (!start) ok = ok && g == rout(g) && g >= lo && g <= hi;
        } else {
            // accumulating (dw with beta 1): cuBLAS may sum onto s0, which
            // then counts among the terms
            const double tol = b + ex[i].gamma * std::fabs(s0) + std::ldexp(std::fabs(s0) + std::fabs(e) + b, -22);
            ok = std::fabs((double)g - (s0 + e)) <= tol && std::fabs((double)g - c) <= 2 * tol;
        }
        const double d = std::fabs((double)g - c);
        if (!(d <= st.max_abs)) st.max_abs = d;
        if (!ok && bad++ == 0) first = i;
    }
    st.n += ex.size();
    st.bad += bad;
    if (bad)
        failf("%s %s %s [%s]: %zu of %zu element(s) wrong, the first [%zu]: gpu %.9g, cpu %.9g, exact %.9g "
              "(bound %.3g)", lowp_name(lp), kernel, what, shape, bad, ex.size(), first, (double)gpu[first],
              (double)cpu[first], (start ? start[first] : 0.0) + ex[first].v, ex[first].bound);
}

// Each product (forward, dinp, dw) of mixed.cuh on random inputs against
// tensor_gpu/cpu/mixed.c and the exact product of the rounded operands,
// overwriting (poisoned) and accumulating, through row strides; tf32: proof
// that the operands were rounded (an output farther from the unrounded
// operands' product than the bound, in every shape with IC <= 64).
static void test_mixed_products(Rng &r, Lowp lp) {
    const Precision p = lp == Lowp::BF16 ? PREC_BF16 : lp == Lowp::FP16 ? PREC_FP16 : PREC_TF32;
    float (*rnd)(float) = lp == Lowp::BF16 ? round_bf16 : lp == Lowp::FP16 ? round_fp16 : round_tf32;
    const bool l_out = lp != Lowp::TF32;
    // N, IC, OC, extra row stride of out and dout
    const int shapes[][4] = {{1, 16, 27, 0}, {7, 12, 11, 3}, {37, 24, 50, 0}, {64, 16, 64, 8}, {45, 80, 67, 1},
                             {130, 48, 192, 0}, {33, 13, 5, 2}, {16, 64, 256, 0}, {250, 16, 40, 5}};
    MixedStat sf, sdi, sdw;
    int unrounded_checked = 0, unrounded_caught = 0;
    for (const auto &sh : shapes) {
        const int N = sh[0], IC = sh[1], OC = sh[2], ld = OC + sh[3];
        char shape[96];
        snprintf(shape, sizeof shape, "N=%d IC=%d OC=%d ld=%d", N, IC, OC, ld);
        const std::vector<float> inp = randn<float>(r, (size_t)N * IC), w = randn<float>(r, (size_t)OC * IC, 0.1);
        std::vector<float> dout = randn<float>(r, (size_t)N * OC, 0.01);
        const size_t wide = (size_t)(IC > OC ? IC : OC);
        ::MixedMM cm;
        mixed_mm_init(&cm, p, (size_t)N, wide, (size_t)OC * IC, nullptr);
        DevBuf<char> d_a((size_t)N * wide * 4), d_d((size_t)N * wide * 4), d_w((size_t)OC * IC * 4);
        DevBuf<float> d_t((size_t)N * wide);
        cublasHandle_t h;
        CUBLAS_CHECK(cublasCreate(&h));
        CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));   // as the engine's second handle
        CUBLAS_CHECK(cublasSetAtomicsMode(h, CUBLAS_ATOMICS_NOT_ALLOWED));
        CUBLAS_CHECK(cublasSetWorkspace(h, nullptr, 0));
        const mgpt::MixedMM gm{lp, h, d_a.p, d_d.p, d_w.p, d_t.p, (size_t)N * wide, (size_t)OC * IC};
        DevBuf<float> d_inp(inp), d_wt(w), d_out((size_t)N * ld);

        // forward: out = rnd(inp) @ rnd(w)^T (bf16: rounded)
        std::vector<Exact> ex((size_t)N * OC), ex_raw((size_t)N * OC);
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                ex[(size_t)n * OC + o] = exact_dot(&inp[(size_t)n * IC], 1, &w[(size_t)o * IC], 1, IC, rnd);
                ex_raw[(size_t)n * OC + o] = exact_dot(&inp[(size_t)n * IC], 1, &w[(size_t)o * IC], 1, IC, identity);
            }
        std::vector<float> out((size_t)N * OC);
        ::mixed_matmul_forward(&cm, out.data(), inp.data(), w.data(), N, IC, OC);
        d_out.poison();
        mgpt::mixed_matmul_forward(gm, d_out.p, ld, d_inp.p, d_wt.p, N, IC, OC);
        const std::vector<float> g = columns(d_out.down(), N, ld, OC);
        check_mixed("mixed_matmul_forward", "out", lp, l_out, g.data(), out.data(), ex, nullptr, sf, shape);
        if (!l_out && IC <= 64) {   // tf32 (bf16's, fp16's rounded outputs: the check above); past
            unrounded_checked++;    // IC 64 the bound is too wide to tell the two apart
            size_t far = 0;
            for (size_t i = 0; i < g.size(); i++) far += std::fabs((double)g[i] - ex_raw[i].v) > ex_raw[i].bound;
            unrounded_caught += far > 0;
        }

        // backward: dinp (+)= rnd(rnd(dout) @ rnd(w)), dw (+)= rnd(dout)^T @ rnd(inp)
        std::vector<float> doutw((size_t)N * ld, NAN);
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) doutw[(size_t)n * ld + o] = dout[(size_t)n * OC + o];
        DevBuf<float> d_dout(doutw), d_dinp((size_t)N * IC), d_dw((size_t)OC * IC);
        std::vector<Exact> exi((size_t)N * IC), exw((size_t)OC * IC);
        for (int n = 0; n < N; n++)
            for (int i = 0; i < IC; i++)
                exi[(size_t)n * IC + i] = exact_dot(&dout[(size_t)n * OC], 1, &w[i], (size_t)IC, OC, rnd);
        for (int o = 0; o < OC; o++)
            for (int i = 0; i < IC; i++)
                exw[(size_t)o * IC + i] = exact_dot(&dout[o], (size_t)OC, &inp[i], (size_t)IC, N, rnd);
        for (int acc = 0; acc < 2; acc++) {
            const std::vector<float> di0 = grad_start(r, d_dinp, acc), dw0 = grad_start(r, d_dw, acc);
            std::vector<float> di = di0, dw = dw0;
            ::mixed_matmul_backward(&cm, di.data(), dw.data(), dout.data(), inp.data(), w.data(), N, IC, OC);
            mgpt::mixed_matmul_backward(gm, d_dinp.p, acc != 0, d_dw.p, acc != 0, d_dout.p, ld, d_inp.p, d_wt.p, N, IC,
                                        OC);
            const std::vector<float> gi = d_dinp.down(), gw = d_dw.down();
            check_mixed("mixed_matmul_backward", acc ? "dinp (+=)" : "dinp", lp, l_out, gi.data(), di.data(), exi,
                        acc ? di0.data() : nullptr, sdi, shape);
            check_mixed("mixed_matmul_backward", acc ? "dw (+=)" : "dw", lp, false, gw.data(), dw.data(), exw,
                        acc ? dw0.data() : nullptr, sdw, shape);
        }
        // determinism: the same product twice, the same bits
        std::vector<float> again;
        d_out.poison();
        mgpt::mixed_matmul_forward(gm, d_out.p, ld, d_inp.p, d_wt.p, N, IC, OC);
        again = columns(d_out.down(), N, ld, OC);
        if (memcmp(again.data(), g.data(), g.size() * sizeof(float)))
            failf("%s mixed_matmul_forward [%s]: two runs differ", lowp_name(lp), shape);
        CUBLAS_CHECK(cublasDestroy(h));
        mixed_mm_free(&cm);
    }
    if (unrounded_caught != unrounded_checked)
        failf("%s mixed_matmul_forward: %d of %d shapes' outputs are all within the bound of the product of the "
              "UNROUNDED operands: the operands do not look rounded", lowp_name(lp), unrounded_checked - unrounded_caught,
              unrounded_checked);
    const struct {
        const char *name;
        const MixedStat &s;
    } rows[] = {{"forward", sf}, {"dinp", sdi}, {"dw", sdw}};
    printf("mixed products, %s, %zu shapes, vs tensor_gpu/cpu/mixed.c and the exact product of the rounded operands "
           "(bound (K+4) 2^-21 sum|terms|):\n", lowp_name(lp), sizeof shapes / sizeof shapes[0]);
    for (const auto &row : rows)
        printf("  %-8s %8zu elements, max|gpu-cpu| %.3e%s, %zu wrong: %s\n", row.name, row.s.n, row.s.max_abs,
               l_out && row.s.exact + row.s.boundary
                   ? (" (" + std::to_string(row.s.exact) + " required equal to the cpu's, " +
                      std::to_string(row.s.boundary) + " at an L rounding boundary)").c_str()
                   : "",
               row.s.bad, row.s.bad ? "FAIL" : "PASS");
}

// rms of x[0..n) (NaN skipped)
static double rms_of(const double *x, size_t n) {
    double s = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!std::isnan(x[i])) s += x[i] * x[i], k++;
    return k ? std::sqrt(s / (double)k) : 0;
}

// max|a - b| / rms(b) over n (NaN where both are NaN skipped; NaN in one: inf)
static double err_rms(const double *a, const double *b, size_t n) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) {
        if (std::isnan(a[i]) && std::isnan(b[i])) continue;
        const double d = std::fabs(a[i] - b[i]);
        if (!(d <= mx)) mx = std::isnan(d) ? INFINITY : d;
    }
    const double r = rms_of(b, n);
    return mx == 0 ? 0 : mx / (r > 0 ? r : 1e-300);
}

// The CUDA engine in bf16 / tf32 in lockstep with the CPU engine's emulation
// of the same recipe (each step from the CPU engine's state): loss, logits
// and each gradient tensor within the caps of docs/mixed_precision.md
// (the emulation's own error against fp64, doubled: a sound GPU differs from
// the emulation by far less; mlp_fc1's gradient has no cap there, nor here);
// bf16 (fp16) logits are bf16 (fp16) values (tf32's are not all tf32
// values); no step skipped where the CPU engine skips none (fp16 at its
// default scale); and the update is the reference's fp32 Adam on the
// engine's own gradients, bit for bit. The layered path (the fused one
// refuses the mixed precisions).
static void engine_vs_cpu_mixed(Precision p, Rng &r, bool token_mean = false) {
    const bool bf16 = p == PREC_BF16, fp16 = p == PREC_FP16, l_out = p != PREC_TF32;
    const char *pn = precision_name(p);
    float (*rnd)(float) = bf16 ? round_bf16 : fp16 ? round_fp16 : round_tf32;
    Model mdl(27, 16, 4, 2, 2, 16, 8, 42);
    mdl.s.token_mean = token_mean;   // --loss token-mean: the same CE kernel, weights 1/sum(n)
    const EngineConfig c = mdl.cfg(p);
    char err[512] = "";
    Engine *cpu = cpu_engine_create(&c, mdl.init.data(), err, sizeof err);
    if (!cpu) {
        failf("cpu_engine_create (%s): %s", pn, err);
        return;
    }
    Engine *gpu = make_cuda(mdl, p);
    if (!gpu) {
        cpu->ops->destroy(cpu);
        return;
    }
    const std::string path = path_of(gpu);
    if (path != "layered") failf("%s: the engine took path %s, not layered", pn, path.c_str());
    const ModelShape &m = mdl.shape();
    const size_t P = mdl.L.n_params, V = (size_t)m.vocab_size;
    const double cap_loss = bf16 ? 3e-3 : fp16 ? 4e-4 : 3e-4, cap_logits = bf16 ? 5e-2 : fp16 ? 6e-3 : 5e-3;
    const double cap_grads = p == PREC_TF32 ? 1.5 : 2;
    const std::vector<Step> sched = {{8, 16}, {3, 5}, {1, 1}, {5, 16}, {2, 9}, {1, 16}, {8, 13}};
    const size_t rows = (size_t)mdl.max_batch * m.block_size;
    std::vector<double> la(rows * V), lb(la.size()), ga(P), gb(P), pa(P), pb(P), ma(P), mb(P), va(P), vb(P);
    std::vector<double> p0(mdl.init), m0(P, 0.0), v0(P, 0.0);
    double worst_loss = 0, worst_logits = 0, worst_grads = 0;
    size_t logits_not_lowp = 0, logits_total = 0, relu_bad = 0;
    std::vector<double> ra(rows * 4 * (size_t)m.n_embd * (size_t)m.n_layer), rb(ra.size());
    int failed_steps = 0;
    for (size_t k = 0; k < sched.size(); k++) {
        HostBatch hb(r, sched[k].B, sched[k].T, m.vocab_size);
        const Batch *b = &hb.b;
        const int step = (int)k, before = g_failures;
        const double l_cpu = cpu->ops->step(cpu, b, step), l_gpu = gpu->ops->step(gpu, b, step);
        const double el = std::fabs(l_gpu - l_cpu) / std::fabs(l_cpu);
        if (el > worst_loss) worst_loss = el;
        if (!(el <= cap_loss)) failf("%s engine vs cpu, step %d: loss %.9g vs %.9g (relative %.3e > %.0e)", pn, step + 1,
                                     l_gpu, l_cpu, el, cap_loss);
        cpu->ops->get_logits(cpu, lb.data());
        gpu->ops->get_logits(gpu, la.data());
        const size_t nl = (size_t)b->B * b->T * V;
        const double elg = err_rms(la.data(), lb.data(), nl);
        if (elg > worst_logits) worst_logits = elg;
        if (!(elg <= cap_logits))
            failf("%s engine vs cpu, step %d: logits max|diff|/rms %.3e > %.0e", pn, step + 1, elg, cap_logits);
        for (size_t i = 0; i < nl; i++) {
            if (std::isnan(la[i]) != std::isnan(lb[i])) failf("%s step %d: logits NaN at other places", pn, step + 1);
            if (std::isnan(la[i])) continue;
            logits_total++;
            const float f = (float)la[i];
            logits_not_lowp += f != rnd(f);
        }
        double sc_cpu = 0, sc_gpu = 0;
        const int sk_cpu = cpu->ops->step_skipped(cpu, &sc_cpu);
        const int sk_gpu = gpu->ops->step_skipped ? gpu->ops->step_skipped(gpu, &sc_gpu) : -1;
        if (sk_gpu != sk_cpu || (fp16 && sc_gpu != sc_cpu))
            failf("%s engine vs cpu, step %d: update skipped %d at scale %g (cpu: %d at %g)", pn, step + 1, sk_gpu,
                  sc_gpu, sk_cpu, sc_cpu);
        // the ReLU inputs as the recipe stores them: L values (bf16, fp16),
        // NaN where the CPU's are (padding)
        cpu->ops->get_relu_inputs(cpu, rb.data());
        gpu->ops->get_relu_inputs(gpu, ra.data());
        for (size_t i = 0; i < (size_t)m.n_layer * b->B * b->T * 4 * m.n_embd; i++) {
            if (std::isnan(ra[i]) != std::isnan(rb[i])) relu_bad++;
            else if (!std::isnan(ra[i]) && l_out && (float)ra[i] != rnd((float)ra[i])) relu_bad++;
        }
        cpu->ops->get_grads(cpu, gb.data());
        gpu->ops->get_grads(gpu, ga.data());
        for (int t = 0; t < mdl.L.n_tensors; t++) {
            const ParamTensor *pt = &mdl.L.t[t];
            const double e = err_rms(ga.data() + pt->offset, gb.data() + pt->offset, pt->size);
            if (pt->kind == P_MLP_FC1) continue;   // ReLU gates flip between roundings: no cap (the docs)
            if (e > worst_grads) worst_grads = e;
            if (!(e <= cap_grads))
                failf("%s engine vs cpu, step %d: gradient of tensor %d (kind %d, layer %d) max|diff|/rms %.3e > %.1f",
                      pn, step + 1, t, (int)pt->kind, pt->layer, e, cap_grads);
        }
        if (sk_gpu != 1) ref_adam_step(PREC_FP32, mdl.s, step, p0, ga, m0, v0);   // a skipped step: no update
        gpu->ops->get_params(gpu, pa.data());
        gpu->ops->get_moments(gpu, ma.data(), va.data());
        const double dp = max_abs_diff(pa, p0), dm = max_abs_diff(ma, m0), dv = max_abs_diff(va, v0);
        if (dp != 0 || dm != 0 || dv != 0)
            failf("%s engine vs cpu, step %d: the update differs from %s (params %.3e, m %.3e, v %.3e)", pn, step + 1,
                  sk_gpu == 1 ? "none (a skipped step)" : "fp32 Adam on the engine's gradients", dp, dm, dv);
        if (g_failures != before) failed_steps++;
        cpu->ops->get_params(cpu, pb.data());
        cpu->ops->get_moments(cpu, mb.data(), vb.data());
        gpu->ops->set_state(gpu, pb.data(), mb.data(), vb.data());
        p0 = pb;
        m0 = mb;
        v0 = vb;
    }
    if (l_out && logits_not_lowp) failf("%s engine: %zu of %zu logits are not %s values", pn, logits_not_lowp, logits_total, pn);
    if (relu_bad) failf("%s engine: %zu ReLU inputs (get_relu_inputs) are not %s values or NaN elsewhere than the cpu's",
                        pn, relu_bad, l_out ? pn : "fp32");
    if (!l_out && !logits_not_lowp) failf("tf32 engine: every logit is a tf32 value: its outputs look rounded");
    printf("engine vs cpu engine, %s%s (the emulation), lockstep, %zu steps (V 27, C 16, NH 4, NKV 2, 2 layers, batches "
           "up to 8), path %s: largest loss diff (relative) %.2e (cap %.0e), logits max|diff|/rms %.2e (cap %.0e), "
           "grads but mlp_fc1 max|diff|/rms %.2e (cap %.1f); logits not %s values: %zu of %zu; fp32 Adam on the "
           "engine's gradients reproduced bit for bit%s\n", pn, token_mean ? " token-mean" : "", sched.size(),
           path.c_str(), worst_loss, cap_loss,
           worst_logits, cap_logits, worst_grads, cap_grads, pn, logits_not_lowp, logits_total,
           failed_steps ? ": FAIL" : ": PASS");
    gpu->ops->destroy(gpu);
    cpu->ops->destroy(cpu);
}

// The mixed precisions and the paths: auto takes the layered one, fused is
// refused with the reason.
static void mixed_refusals() {
    const Model mdl(27, 16, 4, 4, 1, 16, 1, 1);
    for (Precision p : {PREC_BF16, PREC_FP16, PREC_TF32}) {
        Engine *e = make_cuda(mdl, p);
        if (e) {
            if (path_of(e) != "layered") failf("%s: auto took path %s, not layered", precision_name(p), path_of(e).c_str());
            printf("%s, MICROGPT_CUDA_PATH=auto: %s\n", precision_name(p), e->ops->device(e));
            e->ops->destroy(e);
        }
        setenv("MICROGPT_CUDA_PATH", "fused", 1);
        const EngineConfig c = mdl.cfg(p);
        char err[512] = "";
        e = cuda_engine_create(&c, mdl.init.data(), err, sizeof err);
        unsetenv("MICROGPT_CUDA_PATH");
        if (e || !strstr(err, "layered path")) failf("%s with MICROGPT_CUDA_PATH=fused was not refused (%s)",
                                                     precision_name(p), err);
        if (e) e->ops->destroy(e);
        printf("refusal of %s on the fused path: \"%s\"\n", precision_name(p), err);
    }
}

// fp16 past an overflow: at loss scale 2^24 the first step's scaled
// gradients overflow fp16 (any gradient over 65504 / 2^24 = 3.9e-3), so the
// engine skips its update (parameters, m and v untouched, bit for bit) and
// halves the scale, as the CPU engine does; a step it does not skip is fp32
// Adam on its own gradients, bit for bit; some later step runs its update.
// (Each engine trains on its own; only step 1's skip is required of both:
// later, a gradient near 65504 / scale may overflow in one and not the other.)
static void fp16_overflow(Rng &r) {
    const Model mdl(27, 16, 4, 2, 2, 16, 4, 7);
    EngineConfig c = mdl.cfg(PREC_FP16);
    c.loss_scale = 16777216.0;
    char err[512] = "";
    Engine *cpu = cpu_engine_create(&c, mdl.init.data(), err, sizeof err);
    Engine *gpu = cpu ? cuda_engine_create(&c, mdl.init.data(), err, sizeof err) : nullptr;
    if (!cpu || !gpu) {
        failf("fp16 overflow: engine creation: %s", err);
        if (cpu) cpu->ops->destroy(cpu);
        return;
    }
    const size_t P = mdl.L.n_params;
    std::vector<double> p0(P), m0(P, 0.0), v0(P, 0.0), pa(P), ma(P), va(P), ga(P);
    gpu->ops->get_params(gpu, p0.data());   // the engine's fp32 weights, not the fp64 initial ones
    int skipped = 0, ran = 0, bad = 0;
    double scale = 0;
    std::string seq;
    for (int k = 0; k < 16; k++) {   // 2^24 down to 2^16 takes 8 skips at most for gradients below 1
        HostBatch hb(r, 3, 16, mdl.shape().vocab_size);
        cpu->ops->step(cpu, &hb.b, k);
        gpu->ops->step(gpu, &hb.b, k);
        double sc_cpu = 0;
        const int sk = gpu->ops->step_skipped(gpu, &scale), sk_cpu = cpu->ops->step_skipped(cpu, &sc_cpu);
        seq += sk ? "s" : ".";
        if (k == 0 && (!sk || !sk_cpu || scale != 16777216.0 || sc_cpu != scale))
            failf("fp16 overflow: step 1 at scale 2^24 not skipped by both (cuda %d at %g, cpu %d at %g)", sk, scale,
                  sk_cpu, sc_cpu);
        gpu->ops->get_params(gpu, pa.data());
        gpu->ops->get_moments(gpu, ma.data(), va.data());
        gpu->ops->get_grads(gpu, ga.data());
        const std::vector<double> p_before(p0);
        if (sk) skipped++;
        else ran++, ref_adam_step(PREC_FP32, mdl.s, k, p0, ga, m0, v0);
        if (max_abs_diff(pa, p0) != 0 || max_abs_diff(ma, m0) != 0 || max_abs_diff(va, v0) != 0) {
            // say where: the first element of each array that differs, and the step's gradient there
            bad++;
            size_t nonfinite = 0;
            for (double g : ga) nonfinite += !std::isfinite(g);
            printf("fp16 overflow: step %d (%s at scale %g, %zu non-finite gradient(s)):", k + 1,
                   sk ? "skipped" : "updated", scale, nonfinite);
            const char *what[3] = {"params", "m", "v"};
            const std::vector<double> *got[3] = {&pa, &ma, &va}, *want[3] = {&p0, &m0, &v0};
            for (int w = 0; w < 3; w++) {
                size_t n_diff = 0, first = 0;
                for (size_t i = 0; i < P; i++)
                    if (!((*got[w])[i] == (*want[w])[i])) first = n_diff++ ? first : i;
                if (n_diff)
                    printf(" %s: %zu differ, first [%zu] got %.9g want %.9g (before %.9g, gradient %.9g);", what[w],
                           n_diff, first, (*got[w])[first], (*want[w])[first], w ? 0.0 : p_before[first], ga[first]);
            }
            printf("\n");
        }
        p0 = pa, m0 = ma, v0 = va;   // each engine trains on (lockstep is not the point here)
    }
    if (bad) failf("fp16 overflow: %d step(s) whose state is not the skipped or the Adam-updated one", bad);
    if (!ran) failf("fp16 overflow: every step skipped (the scale never came down to fit: %g)", scale);
    printf("fp16 loss scaling from 2^24, 16 steps (s: update skipped): %s (%d skipped), last scale %g; skipped "
           "steps left the state untouched and the others are fp32 Adam on the engine's gradients, bit for bit%s\n",
           seq.c_str(), skipped, scale, bad || !ran ? ": FAIL" : ": PASS");
    gpu->ops->destroy(gpu);
    cpu->ops->destroy(cpu);
}

// --attn-bench: the attention kernels timed, rows against tiled, at issue 8's
// sizes (every position real, q|k|v side by side as in the engine), with
// CUDA events over `iters` calls after 3 warm-up calls; the tiled results
// are checked against the rows ones first. Exits 1 if they disagree.

template <typename real> static void attn_bench_one(const char *name, int B, int T, int NH, int NKV, int HS, int iters,
                                                    Rng &r) {
    const int C = NH * HS, KV = NKV * HS, QKV = C + 2 * KV, N = B * T;
    const size_t natt = (size_t)B * NH * T * T;
    const Shape s{B, T, C, NH, NKV, 1};
    DevBuf<int> d_n(std::vector<int>((size_t)B, T));
    DevBuf<real> qkv(randn<real>(r, (size_t)N * QKV)), dout(randn<real>(r, (size_t)N * C));
    DevBuf<real> out((size_t)N * C), att(natt), dpre(natt), dqkv((size_t)N * QKV);
    const real *q = qkv.p, *k = qkv.p + C, *v = qkv.p + C + KV;
    const AttnPath fp = attention_forward_path<real>(T, HS), bp = attention_backward_path<real>(T, HS);
    double us[2][2] = {{0, 0}, {0, 0}};   // [rows, tiled][forward, backward]
    std::vector<real> ref[3];   // the rows kernels' out, att and dq|dk|dv
    for (int pi = 0; pi < 2; pi++) {
        const AttnPath p = pi ? AttnPath::Tiled : AttnPath::Rows;
        const bool fwd_ok = !pi || fp == AttnPath::Tiled, bwd_ok = !pi || bp == AttnPath::Tiled;
        if (fwd_ok) {
            us[pi][0] = time_us(
                [&] { attention_forward(ST, out.p, att.p, q, QKV, k, v, QKV, d_n.p, B, T, NH, NKV, HS, p); }, iters);
            const std::vector<real> o = out.down(), a = att.down();
            if (!pi) {
                ref[0] = o;
                ref[1] = a;
            } else {
                check("bench: attention_forward tiled vs rows", "out", s, o, ref[0]);
                check("bench: attention_forward tiled vs rows", "att", s, a, ref[1]);
            }
        }
        // the backward's att: the rows forward's, for both paths
        attention_forward(ST, out.p, att.p, q, QKV, k, v, QKV, d_n.p, B, T, NH, NKV, HS, AttnPath::Rows);
        if (bwd_ok) {
            us[pi][1] = time_us(
                [&] {
                    attention_backward(ST, dqkv.p, QKV, dqkv.p + C, dqkv.p + C + KV, QKV, dpre.p, dout.p, att.p, q,
                                       QKV, k, v, QKV, d_n.p, B, T, NH, NKV, HS, false, p);
                },
                iters);
            const std::vector<real> g = dqkv.down();
            if (!pi) ref[2] = g;
            else check("bench: attention_backward tiled vs rows", "dq|dk|dv", s, g, ref[2]);
        }
    }
    auto cell = [](double t) {
        char b[32];
        if (t > 0) snprintf(b, sizeof b, "%9.1f", t);
        else snprintf(b, sizeof b, "%9s", "(no fit)");
        return std::string(b);
    };
    auto ratio = [](double a, double b) {
        char x[32];
        if (a > 0 && b > 0) snprintf(x, sizeof x, "%6.1fx", a / b);
        else snprintf(x, sizeof x, "%7s", "-");
        return std::string(x);
    };
    printf("%-5s %-5s B=%-3d T=%-3d NH=%d NKV=%d HS=%-3d | forward rows %s tiled %s %s | backward (dq+dkv) rows %s "
           "tiled %s %s\n", prec_name<real>(), name, B, T, NH, NKV, HS, cell(us[0][0]).c_str(), cell(us[1][0]).c_str(),
           ratio(us[0][0], us[1][0]).c_str(), cell(us[0][1]).c_str(), cell(us[1][1]).c_str(),
           ratio(us[0][1], us[1][1]).c_str());
}

static void attn_bench(int iters, const char *only, Rng &r) {
    printf("attention kernels, us per call (CUDA events, mean of %d calls after 3 warm-up), rows = the warp-per-row "
           "kernels, tiled = the shared-memory kernels\n", iters);
    struct Size { const char *name; int B, T, NH, NKV, HS; };
    const Size sizes[] = {
        {"e512", 64, 64, 8, 8, 64},    // n_embd 512, 8 heads, block 64, batch 64
        {"e128", 256, 16, 4, 4, 32},   // n_embd 128, 4 heads, block 16, batch 256
        {"e16", 256, 16, 4, 4, 4},     // n_embd 16, 4 heads, block 16, batch 256
        {"gqa", 64, 64, 8, 2, 64},     // e512 with 2 kv heads
    };
    bool any = false;
    for (int pi = 0; pi < 2; pi++)
        for (const Size &z : sizes) {
            if (only && strcmp(only, z.name)) continue;
            any = true;
            if (pi) attn_bench_one<double>(z.name, z.B, z.T, z.NH, z.NKV, z.HS, iters, r);
            else attn_bench_one<float>(z.name, z.B, z.T, z.NH, z.NKV, z.HS, iters, r);
        }
    if (!any) failf("--attn-size %s: no such size (e512, e128, e16, gqa)", only);
}

static void mixed_tests(Rng &r);

// 1-4 of the list at the top (--only mixed: the mixed precisions alone).
static void all_tests(Rng &r, cublasHandle_t h, int sms, bool only_mixed) {
    // B, T, C, NH, NKV, V
    const std::vector<Shape> shapes = {
        {1, 1, 16, 4, 4, 27},    // T = 1, one document
        {3, 7, 12, 3, 1, 11},    // nothing a power of two; three query heads share one kv head
        {4, 16, 16, 4, 2, 27},   // the default model with grouped-query attention
        {2, 37, 24, 6, 3, 50},   // T > 32: keys in two chunks of a warp; V > 32
        {5, 9, 80, 2, 1, 67},    // head size 40 > 32, C > 64
        {8, 16, 16, 4, 4, 27},   // batch 8
        {70, 33, 8, 2, 1, 13},   // 2310 positions, ragged
        {256, 16, 16, 4, 2, 27}, // the default model at batch 256: every weight gradient split-K
        {37, 61, 48, 4, 2, 40},  // 2257 rows, ragged: split-K with a short last chunk; 2 channel blocks
        {3, 5, 128, 2, 1, 7},    // C 128, 256, 512: rmsnorm rows held in registers
        {2, 7, 256, 4, 4, 7},
        {3, 6, 512, 8, 8, 9},
    };
    // and attention alone at the head sizes and lengths its kernels
    // treat apart: HS 1, 5, 6, 8, 36, 64, 128 (register tiles of 4, a
    // warp's 32 lanes), T up to 256 (T = 256 with HS 128 takes the rows
    // kernels: too large for shared memory; fp64 T = 96 with HS 64:
    // a tiled forward and a rows backward), MHA, GQA and MQA
    const std::vector<Shape> attn_shapes = {
        {2, 5, 4, 4, 4, 11},      // HS 1
        {3, 6, 10, 2, 2, 11},     // HS 5
        {2, 11, 12, 2, 1, 11},    // HS 6, one kv head
        {3, 3, 32, 4, 2, 11},     // HS 8, T 3
        {2, 40, 72, 2, 2, 11},    // HS 36, T 40
        {2, 70, 10, 2, 2, 11},    // HS 5, T 70
        {2, 64, 128, 2, 1, 11},   // HS 64, T 64 (the e512 bench's head), one kv head
        {1, 33, 128, 1, 1, 11},   // HS 128
        {2, 96, 256, 4, 2, 11},   // HS 64, T 96
        {2, 256, 256, 2, 1, 11},  // HS 128, T 256
    };
    if (only_mixed) return mixed_tests(r);
    printf("attention: the implementation auto takes per shape\n");
    for (const Shape &s : attn_shapes) test_attention<double>(s, r);
    for (const Shape &s : attn_shapes) test_attention<float>(s, r);
    kernel_tests<double>(shapes, r, h, sms);
    kernel_tests<float>(shapes, r, h, sms);
    for (int pi = 0; pi < 2; pi++)   // so that both implementations were checked under auto
        if (!g_attn_auto[pi][0] || !g_attn_auto[pi][1])
            failf("%s attention: auto took the tiled kernels %d time(s) and the rows kernels %d time(s) over "
                  "the test shapes: expected both", pi ? "fp32" : "fp64", g_attn_auto[pi][0], g_attn_auto[pi][1]);
    printf("\n");
    // the engine tests on each path (MICROGPT_CUDA_PATH forces one)
    for (const char *path : {"layered", "fused"}) {
        printf("\n--- path %s\n", path);
        setenv("MICROGPT_CUDA_PATH", path, 1);
        engine_vs_cpu(PREC_FP64, r);
        engine_vs_cpu(PREC_FP32, r);
        determinism(PREC_FP64, r);
        determinism(PREC_FP32, r);
        run_steps_vs_step(PREC_FP64, r);
        run_steps_vs_step(PREC_FP32, r);
        token_mean_vs_cpu(PREC_FP64, path, r);
        token_mean_vs_cpu(PREC_FP32, path, r);
        run_steps_vs_step(PREC_FP64, r, true);
        unsetenv("MICROGPT_CUDA_PATH");
    }
    printf("\n");
    fused_vs_cpu_shapes(PREC_FP64, r);
    fused_vs_cpu_shapes(PREC_FP32, r);
    path_choice();
    refusals();
    mixed_tests(r);
}

// The mixed-precision recipe (bf16, fp16, tf32): rounding, products, engine.
static void mixed_tests(Rng &r) {
    printf("\n--- mixed precision\n");
    test_lowp_kernels(r);
    test_lowp_fused(r);
    test_lowp_rows(r);
    test_lowp_attention(r);
    test_lowp_gemm_out(r);
    for (Lowp lp : {Lowp::BF16, Lowp::FP16, Lowp::TF32}) test_mixed_products(r, lp);
    for (Precision p : {PREC_BF16, PREC_TF32}) {
        engine_vs_cpu_mixed(p, r);
        determinism(p, r);
        run_steps_vs_step(p, r);
    }
    engine_vs_cpu_mixed(PREC_FP16, r);
    determinism(PREC_FP16, r);
    // --loss token-mean through the recipe (fp16: the weights under loss scaling)
    engine_vs_cpu_mixed(PREC_BF16, r, true);
    engine_vs_cpu_mixed(PREC_FP16, r, true);
    fp16_overflow(r);
    mixed_refusals();
}

// ---------------------------------------------------------------------------

int main(int argc, char **argv) {
    set_prog_name(argv[0]);
    uint64_t seed = (uint64_t)time(nullptr) ^ ((uint64_t)getpid() << 16);
    bool do_bench = false;  // --bench
    bool only_mixed = false;   // --only mixed
    int bench_iters = 0;   // --attn-bench: > 0
    const char *bench_size = nullptr;   // --attn-size: one size only
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], nullptr, 10);
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            if (strcmp(argv[++i], "mixed")) {
                fprintf(stderr, "%s: --only takes mixed (the mixed-precision tests alone), not '%s'\n", argv[0], argv[i]);
                return 2;
            }
            only_mixed = true;
        } else if (!strcmp(argv[i], "--bench")) {
            do_bench = true;
        } else if (!strcmp(argv[i], "--attn-bench")) {
            bench_iters = 20;
            if (i + 1 < argc && argv[i + 1][0] != '-') {
                char *end = nullptr;
                const long it = strtol(argv[++i], &end, 10);
                if (*end || it < 1 || it > 100000) {
                    fprintf(stderr, "%s: --attn-bench takes a number of calls from 1 to 100000, not '%s'\n", argv[0],
                            argv[i]);
                    return 2;
                }
                bench_iters = (int)it;
            }
        } else if (!strcmp(argv[i], "--attn-size") && i + 1 < argc) {
            bench_size = argv[++i];
            if (strcmp(bench_size, "e512") && strcmp(bench_size, "e128") && strcmp(bench_size, "e16") &&
                strcmp(bench_size, "gqa")) {
                fprintf(stderr, "%s: --attn-size takes e512, e128, e16 or gqa, not '%s'\n", argv[0], bench_size);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [--seed N] [--only mixed | --bench | --attn-bench [CALLS] [--attn-size e512|e128|e16|gqa]]\n", argv[0]);
            return 2;
        }
    }
    char why[512];
    if ((do_bench || bench_iters) && !cuda_available(why, sizeof why)) {
        fprintf(stderr, "%s: %s needs a GPU: %s\n", argv[0], do_bench ? "--bench" : "--attn-bench", why);
        return 2;
    }
    if (!cuda_available(why, sizeof why)) {
        // still check that the engine refuses with that message
        const Model mdl(27, 16, 4, 4, 1, 16, 1, 1);
        const EngineConfig c = mdl.cfg(PREC_FP64);
        char err[512] = "";
        Engine *e = cuda_engine_create(&c, mdl.init.data(), err, sizeof err);
        if (e || !strstr(err, "no usable GPU") || !strstr(err, "BACKEND=cpu")) {
            printf("test_gpu: FAIL: without a GPU, cuda_engine_create should refuse with the reason (got \"%s\")\n",
                   err);
            if (e) e->ops->destroy(e);
            return 1;
        }
        printf("test_gpu: SKIP: %s\n", why);
        return 0;
    }
    try {
        int dev = 0;
        cudaDeviceProp prop;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
        int rt = 0, drv = 0, cb = 0;
        CUDA_CHECK(cudaRuntimeGetVersion(&rt));
        CUDA_CHECK(cudaDriverGetVersion(&drv));
        cublasHandle_t h;
        CUBLAS_CHECK(cublasCreate(&h));
        CUBLAS_CHECK(cublasGetVersion(h, &cb));
        CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));   // as the engine sets it up
        CUBLAS_CHECK(cublasSetWorkspace(h, nullptr, 0));
        printf("test_gpu: %s (compute capability %d.%d, %d SMs), CUDA runtime %d, driver %d, cuBLAS %d; seed %llu\n",
               prop.name, prop.major, prop.minor, prop.multiProcessorCount, rt, drv, cb, (unsigned long long)seed);
        Rng r(seed);
        if (do_bench) {
            bench<float>(h, prop.multiProcessorCount, r);
            bench<double>(h, prop.multiProcessorCount, r);
        } else if (bench_iters) {
            attn_bench(bench_iters, bench_size, r);
        } else {
            all_tests(r, h, prop.multiProcessorCount, only_mixed);
        }
        CUBLAS_CHECK(cublasDestroy(h));
        CUDA_CHECK(cudaDeviceSynchronize());
    } catch (const std::exception &x) {
        failf("%s", x.what());
    }
    if (g_failures) {
        printf("\ntest_gpu: FAILED (%d failure(s); seed %llu)\n", g_failures, (unsigned long long)seed);
        return 1;
    }
    printf("\ntest_gpu: all passed (seed %llu)\n", (unsigned long long)seed);
    return 0;
}
