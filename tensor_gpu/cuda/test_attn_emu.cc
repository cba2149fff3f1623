// test_attn_emu: the tiled attention kernels (attention_tiled.cuh), their own
// code, run on the CPU under the stand-in of emu/cuda_runtime.h and checked
// against the CPU reference (tensor_gpu/cpu/layers.c), so that a machine
// without a GPU (CI) still tests their indexing, padding, tiling,
// grouped-query sums and shared-memory use. What it cannot test is the GPU
// itself (timing, the real shuffles and barriers, the launch limits):
// test_gpu does that.
//
// Shapes: head sizes 1, 4, 5, 6, 8, 36, 64 (register tiles of 4, 16-byte
// loads or not), T from 1 to 70 (one and several warps of keys), MHA, GQA,
// MQA, ragged documents; blocks of 64, 96 and 256 threads, so that both
// layouts of each kernel run (compact: at most one tile per thread, the
// scores over an input and dkv's accumulators in registers; and not); q|k|v side by
// side (the engine's layout) with the rows 16-byte aligned and, again,
// shifted by one element (the scalar copies); backward overwriting (outputs
// NaN first) and accumulating. And the fused score products of the
// recipe's bf16/fp16 kernels (exact_operands: lowp_out.cuh) on bf16 inputs,
// bit for bit against multiply-then-add, and the kernels writing bf16 (dkv
// keeping q and dout in bf16) against the fp32 ones' outputs rounded to
// bf16, and on unrounded inputs (rounded as they load them) against their
// results on the rounded ones. Exits 1 on any mismatch.
//
//   build/test_attn_emu [--seed N]
#include "tensor_gpu/cuda/attention_tiled.cuh"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "tensor_gpu/layers.h"
#include "tensor_gpu/lowp.h"
}

using namespace mgpt;

static int g_fail = 0, g_checks = 0;

static void ref_forward(double *o, double *a, const double *q, const double *k, const double *v, const int *n, int B,
                        int T, int NH, int NKV, int HS) {
    attention_forward_f64(o, a, q, k, v, n, B, T, NH, NKV, HS);
}
static void ref_forward(float *o, float *a, const float *q, const float *k, const float *v, const int *n, int B,
                        int T, int NH, int NKV, int HS) {
    attention_forward_f32(o, a, q, k, v, n, B, T, NH, NKV, HS);
}
// What the kernels report (common/activations.h): the scores and the
// softmax output's gradient.
static void ref_scores(double *s, const double *q, const double *k, const int *n, int B, int T, int NH, int NKV,
                       int HS) {
    attention_scores_f64(s, q, k, n, B, T, NH, NKV, HS);
}
static void ref_scores(float *s, const float *q, const float *k, const int *n, int B, int T, int NH, int NKV, int HS) {
    attention_scores_f32(s, q, k, n, B, T, NH, NKV, HS);
}
static void ref_datt(double *ds, double *datt, const double *d, const double *a, const double *v, const int *n, int B,
                     int T, int NH, int NKV, int HS) {
    attention_backward_probe_f64(ds, datt, d, a, v, n, B, T, NH, NKV, HS);
}
static void ref_datt(float *ds, float *datt, const float *d, const float *a, const float *v, const int *n, int B,
                     int T, int NH, int NKV, int HS) {
    attention_backward_probe_f32(ds, datt, d, a, v, n, B, T, NH, NKV, HS);
}
static void ref_backward(double *dq, double *dk, double *dv, const double *d, const double *a, const double *q,
                         const double *k, const double *v, const int *n, int B, int T, int NH, int NKV, int HS) {
    attention_backward_f64(dq, dk, dv, d, a, q, k, v, n, B, T, NH, NKV, HS);
}
static void ref_backward(float *dq, float *dk, float *dv, const float *d, const float *a, const float *q,
                         const float *k, const float *v, const int *n, int B, int T, int NH, int NKV, int HS) {
    attention_backward_f32(dq, dk, dv, d, a, q, k, v, n, B, T, NH, NKV, HS);
}

// max|got - want| / max|want| within the tolerance of test_gpu, every element finite
template <typename real>
static void check(const char *what, const std::string &shape, const real *got, const std::vector<real> &want,
                  size_t stride, size_t cols, size_t off) {
    double max_ref = 0, max_err = 0;
    size_t bad = 0, first_bad = 0;
    const size_t rows = want.size() / cols;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            const double g = got[i * stride + off + j], w = want[i * cols + j];
            if (!std::isfinite(g) || !std::isfinite(w)) {
                if (!bad++) first_bad = i * cols + j;
                continue;
            }
            max_ref = std::fabs(w) > max_ref ? std::fabs(w) : max_ref;
            max_err = std::fabs(g - w) > max_err ? std::fabs(g - w) : max_err;
        }
    const double rel = max_err == 0 ? 0 : max_err / (max_ref > 0 ? max_ref : 1e-300);
    const double tol = sizeof(real) == 8 ? 1e-12 : 1e-5;
    g_checks++;
    if (bad || rel > tol) {
        g_fail++;
        if (bad)
            printf("FAIL: %s [%s]: %zu element(s) not finite, the first [%zu]\n", what, shape.c_str(), bad, first_bad);
        else
            printf("FAIL: %s [%s]: relative error %.3e > %.0e\n", what, shape.c_str(), rel, tol);
    }
}

// An output functor that claims exact operands (as the recipe's bf16 and
// fp16 ones do: lowp_out.cuh) and stores fp32: the kernels then fuse the
// score products' multiply and add.
struct SameExact {
    using T = float;
    static constexpr bool exact_operands = true;
    float operator()(float x) const { return x; }
    static float widen(float x) { return x; }
};

// The recipe's bf16 output functor (lowp_out.cuh's ToBf16) for the CPU: the
// bits of the bf16, from lowp.h's rounding; dkv then also keeps q and dout
// in it in shared memory.
struct Bf16Bits {
    uint16_t b;
};
struct EmuBf16 {
    using T = Bf16Bits;
    static constexpr bool exact_operands = true;
    T operator()(float x) const { return T{(uint16_t)(lowp_bits(round_bf16(x)) >> 16)}; }
    static float widen(T x) { return lowp_float((uint32_t)x.b << 16); }
};

// The fused score products against the multiply-then-add ones, bit for bit,
// on inputs rounded to bf16 (whose products are exact in fp32): forward out
// and att, backward dq, dk, dv and dpre. And the kernels writing bf16
// (EmuBf16: fused scores, dkv's q and dout in bf16) against the fp32
// kernels' outputs rounded to bf16, bit for bit; and the same kernels on the
// inputs unrounded (as the engine stores them: they round what they load)
// against their own results on the rounded inputs, bit for bit.
static size_t exact_mismatches(const std::vector<float> &a, const std::vector<float> &b) {
    size_t bad = 0;
    for (size_t i = 0; i < a.size(); i++) bad += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return bad;
}
static void run_exact(int B, int T, int NH, int NKV, int HS, int threads, std::mt19937_64 &rng) {
    const int C = NH * HS, KV = NKV * HS, QKV = C + 2 * KV, N = B * T;
    const size_t natt = (size_t)B * NH * T * T;
    std::normal_distribution<double> nd;
    auto randn = [&](size_t c) {
        std::vector<float> x(c);
        for (auto &e : x) e = (float)nd(rng);
        return x;
    };
    auto bf16_values = [](std::vector<float> x) {
        for (auto &e : x) e = round_bf16(e);
        return x;
    };
    std::vector<int> n((size_t)B);
    for (int b = 0; b < B; b++) n[b] = 1 + (int)(rng() % (uint64_t)T);
    n[0] = T;
    const std::vector<float> qkv_raw = randn((size_t)N * QKV), dout_raw = randn((size_t)N * C);
    const std::vector<float> qkv = bf16_values(qkv_raw), dout = bf16_values(dout_raw);
    const float scale = 1.0f / std::sqrt((float)HS);
    std::vector<float> res[2][4];   // [fused][out, att, dq|dk|dv, dpre]
    for (int fused = 0; fused < 2; fused++) {
        std::vector<float> o((size_t)N * C, NAN), a(natt, NAN), g((size_t)N * QKV, NAN), dpre(natt, NAN);
        const float *q = qkv.data(), *k = q + C, *v = q + C + KV;
        emu_launch(B * NH, threads, [&] {
            if (fused) attention_forward_tiled_kernel<float, SameExact>(o.data(), a.data(), q, QKV, k, v, QKV,
                                                                        n.data(), T, NH, NKV, HS, scale);
            else attention_forward_tiled_kernel<float>(o.data(), a.data(), q, QKV, k, v, QKV, n.data(), T, NH, NKV,
                                                       HS, scale);
        });
        emu_launch(B * NH, threads, [&] {
            if (fused) attention_backward_dq_tiled_kernel<float, SameExact>(g.data(), QKV, dpre.data(), dout.data(),
                                                                            a.data(), k, v, QKV, n.data(), T, NH,
                                                                            NKV, HS, scale, false);
            else attention_backward_dq_tiled_kernel<float>(g.data(), QKV, dpre.data(), dout.data(), a.data(), k, v,
                                                           QKV, n.data(), T, NH, NKV, HS, scale, false);
        });
        emu_launch(B * NKV, threads, [&] {
            attention_backward_dkv_tiled_kernel<float>(g.data() + C, g.data() + C + KV, QKV, dpre.data(), a.data(),
                                                       dout.data(), q, QKV, n.data(), T, NH, NKV, HS, false);
        });
        res[fused][0] = o, res[fused][1] = a, res[fused][2] = g, res[fused][3] = dpre;
    }
    // fused (got) against multiply-then-add (want), bit for bit
    auto cmp_exact = [&](const char *what, const std::vector<float> &got, const std::vector<float> &want,
                         const char *from = "multiply-then-add on bf16 inputs") {
        g_checks++;
        const size_t bad = exact_mismatches(got, want);
        if (bad) {
            g_fail++;
            printf("FAIL: fused score products [B=%d T=%d NH=%d NKV=%d HS=%d, %d threads] %s: %zu of %zu values "
                   "differ from %s\n", B, T, NH, NKV, HS, threads, what, bad, got.size(), from);
        }
    };
    {   // outputs in bf16, from the rounded inputs and from the unrounded ones
        struct L16 {
            std::vector<Bf16Bits> o, g;
            std::vector<float> a, dpre;
        };
        auto run_l = [&](const std::vector<float> &in, const std::vector<float> &dy) {
            L16 r{std::vector<Bf16Bits>((size_t)N * C, Bf16Bits{0xffff}),
                  std::vector<Bf16Bits>((size_t)N * QKV, Bf16Bits{0xffff}), std::vector<float>(natt, NAN),
                  std::vector<float>(natt, NAN)};
            const float *q = in.data(), *k = q + C, *v = q + C + KV;
            emu_launch(B * NH, threads, [&] {
                attention_forward_tiled_kernel<float, EmuBf16>(r.o.data(), r.a.data(), q, QKV, k, v, QKV, n.data(),
                                                               T, NH, NKV, HS, scale);
            });
            emu_launch(B * NH, threads, [&] {
                attention_backward_dq_tiled_kernel<float, EmuBf16>(r.g.data(), QKV, r.dpre.data(), dy.data(),
                                                                   r.a.data(), k, v, QKV, n.data(), T, NH, NKV, HS,
                                                                   scale, false);
            });
            emu_launch(B * NKV, threads, [&] {
                attention_backward_dkv_tiled_kernel<float, EmuBf16>(r.g.data() + C, r.g.data() + C + KV, QKV,
                                                                    r.dpre.data(), r.a.data(), dy.data(), q, QKV,
                                                                    n.data(), T, NH, NKV, HS, false);
            });
            return r;
        };
        const L16 l = run_l(qkv, dout), raw = run_l(qkv_raw, dout_raw);
        auto cmp_l = [&](const char *what, const std::vector<Bf16Bits> &got, const std::vector<float> &want) {
            size_t bad = 0;
            for (size_t i = 0; i < got.size(); i++) bad += got[i].b != EmuBf16{}(want[i]).b;
            g_checks++;
            if (bad) {
                g_fail++;
                printf("FAIL: bf16 outputs [B=%d T=%d NH=%d NKV=%d HS=%d, %d threads] %s: %zu of %zu values differ "
                       "from the fp32 kernels' rounded to bf16\n", B, T, NH, NKV, HS, threads, what, bad, got.size());
            }
        };
        cmp_l("out", l.o, res[0][0]);
        cmp_l("dq|dk|dv", l.g, res[0][2]);
        cmp_exact("att (bf16 outputs)", l.a, res[0][1]);
        cmp_exact("dpre (bf16 outputs)", l.dpre, res[0][3]);
        auto cmp_raw = [&](const char *what, const std::vector<Bf16Bits> &got, const std::vector<Bf16Bits> &want) {
            size_t bad = 0;
            for (size_t i = 0; i < got.size(); i++) bad += got[i].b != want[i].b;
            g_checks++;
            if (bad) {
                g_fail++;
                printf("FAIL: bf16 kernels on unrounded inputs [B=%d T=%d NH=%d NKV=%d HS=%d, %d threads] %s: %zu of "
                       "%zu values differ from their results on the inputs rounded to bf16\n", B, T, NH, NKV, HS,
                       threads, what, bad, got.size());
            }
        };
        cmp_raw("out", raw.o, l.o);
        cmp_raw("dq|dk|dv", raw.g, l.g);
        cmp_exact("att (bf16 kernels, unrounded inputs)", raw.a, l.a, "their results on the inputs rounded to bf16");
        cmp_exact("dpre (bf16 kernels, unrounded inputs)", raw.dpre, l.dpre,
                  "their results on the inputs rounded to bf16");
    }
    const char *what[] = {"out", "att", "dq|dk|dv", "dpre"};
    for (int i = 0; i < 4; i++) cmp_exact(what[i], res[1][i], res[0][i]);
}

// (N, C+2KV) rows a|b|c
template <typename real>
static void interleave(real *x, const std::vector<real> &a, const std::vector<real> &b, const std::vector<real> &c,
                       int N, int C, int KV) {
    const int ld = C + 2 * KV;
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < C; j++) x[(size_t)i * ld + j] = a[(size_t)i * C + j];
        for (int j = 0; j < KV; j++) {
            x[(size_t)i * ld + C + j] = b[(size_t)i * KV + j];
            x[(size_t)i * ld + C + KV + j] = c[(size_t)i * KV + j];
        }
    }
}

// A buffer of n reals starting `shift` elements after a 16-byte boundary.
template <typename real> struct Buf {
    std::vector<real> mem;
    real *p;
    Buf(size_t n, int shift, real fill) : mem(n + 16 / sizeof(real) + (size_t)shift, fill) {
        uintptr_t a = reinterpret_cast<uintptr_t>(mem.data());
        a = (a + 15) / 16 * 16;
        p = reinterpret_cast<real *>(a) + shift;
    }
};

template <typename real>
static void run(int B, int T, int NH, int NKV, int HS, int threads, int shift, std::mt19937_64 &rng) {
    const int C = NH * HS, KV = NKV * HS, QKV = C + 2 * KV, N = B * T;
    const size_t natt = (size_t)B * NH * T * T;
    char name[160];
    snprintf(name, sizeof name, "%s B=%d T=%d NH=%d NKV=%d HS=%d, %d threads, rows %s", sizeof(real) == 8 ? "fp64" : "fp32",
             B, T, NH, NKV, HS, threads, shift ? "shifted" : "aligned");
    const std::string sh = name;
    std::normal_distribution<double> nd;
    auto randn = [&](size_t c) {
        std::vector<real> x(c);
        for (auto &e : x) e = (real)nd(rng);
        return x;
    };
    std::vector<int> n((size_t)B);
    for (int b = 0; b < B; b++) n[b] = 1 + (int)(rng() % (uint64_t)T);
    n[0] = T;
    if (B > 1) n[B - 1] = 1;
    const std::vector<real> q = randn((size_t)N * C), k = randn((size_t)N * KV), v = randn((size_t)N * KV),
                            dout = randn((size_t)N * C);
    Buf<real> qkv((size_t)N * QKV, shift, 0);
    interleave(qkv.p, q, k, v, N, C, KV);
    std::vector<real> out((size_t)N * C), att(natt);
    ref_forward(out.data(), att.data(), q.data(), k.data(), v.data(), n.data(), B, T, NH, NKV, HS);
    const real scale = (real)1 / std::sqrt((real)HS);

    Buf<real> o((size_t)N * C, 0, (real)NAN), a(natt, 0, (real)NAN), sc(natt, 0, (real)NAN);
    emu_launch(B * NH, threads, [&] {
        attention_forward_tiled_kernel<real>(o.p, a.p, qkv.p, QKV, qkv.p + C, qkv.p + C + KV, QKV, n.data(), T, NH,
                                             NKV, HS, scale, sc.p);
    });
    check("forward out", sh, o.p, out, C, C, 0);
    check("forward att", sh, a.p, att, T, T, 0);
    std::vector<real> scores(natt), want_datt(natt), want_ds(natt);
    ref_scores(scores.data(), q.data(), k.data(), n.data(), B, T, NH, NKV, HS);
    check("forward scores (reported)", sh, sc.p, scores, T, T, 0);
    ref_datt(want_ds.data(), want_datt.data(), dout.data(), att.data(), v.data(), n.data(), B, T, NH, NKV, HS);

    Buf<real> at(natt, 0, 0);   // the backward from the reference's att
    for (size_t i = 0; i < natt; i++) at.p[i] = att[i];
    for (int acc = 0; acc < 2; acc++) {
        std::vector<real> dq = acc ? randn((size_t)N * C) : std::vector<real>((size_t)N * C, 0);
        std::vector<real> dk = acc ? randn((size_t)N * KV) : std::vector<real>((size_t)N * KV, 0);
        std::vector<real> dv = acc ? randn((size_t)N * KV) : std::vector<real>((size_t)N * KV, 0);
        Buf<real> g((size_t)N * QKV, shift, (real)NAN), dpre(natt, 0, (real)NAN), gd(natt, 0, (real)NAN);
        if (acc) interleave(g.p, dq, dk, dv, N, C, KV);
        emu_launch(B * NH, threads, [&] {
            attention_backward_dq_tiled_kernel<real>(g.p, QKV, dpre.p, dout.data(), at.p, qkv.p + C, qkv.p + C + KV,
                                                     QKV, n.data(), T, NH, NKV, HS, scale, acc != 0,
                                                     acc ? nullptr : gd.p);
        });
        if (!acc) check("backward datt (reported)", sh, gd.p, want_datt, T, T, 0);
        emu_launch(B * NKV, threads, [&] {
            attention_backward_dkv_tiled_kernel<real>(g.p + C, g.p + C + KV, QKV, dpre.p, at.p, dout.data(), qkv.p,
                                                      QKV, n.data(), T, NH, NKV, HS, acc != 0);
        });
        ref_backward(dq.data(), dk.data(), dv.data(), dout.data(), att.data(), q.data(), k.data(), v.data(), n.data(),
                     B, T, NH, NKV, HS);
        check(acc ? "backward dq (+=)" : "backward dq", sh, g.p, dq, QKV, C, 0);
        check(acc ? "backward dk (+=)" : "backward dk", sh, g.p, dk, QKV, KV, C);
        check(acc ? "backward dv (+=)" : "backward dv", sh, g.p, dv, QKV, KV, C + KV);
    }
}

int main(int argc, char **argv) {
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], nullptr, 10);
        } else {
            fprintf(stderr, "usage: %s [--seed N]\n", argv[0]);
            return 2;
        }
    }
    std::mt19937_64 rng(seed);
    // B, T, NH, NKV, HS, threads
    const int shapes[][6] = {
        {1, 1, 4, 4, 4, 64},   {3, 7, 3, 1, 4, 96},    {4, 16, 4, 2, 4, 64},  {2, 37, 6, 3, 4, 64},
        {2, 5, 4, 4, 1, 64},   {3, 6, 2, 2, 5, 96},    {2, 11, 2, 1, 6, 64},  {3, 3, 4, 2, 8, 64},
        {2, 40, 2, 2, 36, 96}, {2, 70, 2, 2, 5, 96},  {2, 64, 2, 1, 64, 256}, {2, 9, 2, 1, 40, 96},
        {2, 40, 4, 2, 64, 96}, {2, 64, 2, 1, 64, 64},
    };
    for (const auto &s : shapes)
        for (int shift = 0; shift < 2; shift++) {
            run<double>(s[0], s[1], s[2], s[3], s[4], s[5], shift, rng);
            run<float>(s[0], s[1], s[2], s[3], s[4], s[5], shift, rng);
        }
    // the fused score products (exact_operands) on bf16 inputs: compact and not, ragged, GQA
    const int exact_shapes[][6] = {{3, 64, 4, 2, 64, 256}, {2, 37, 2, 1, 12, 64}, {2, 64, 2, 2, 64, 64}};
    for (const auto &s : exact_shapes) run_exact(s[0], s[1], s[2], s[3], s[4], s[5], rng);
    if (g_fail) {
        printf("test_attn_emu: FAILED (%d of %d checks; seed %llu)\n", g_fail, g_checks, seed);
        return 1;
    }
    printf("test_attn_emu: the tiled attention kernels, run on the CPU, match the reference: %d checks passed "
           "(seed %llu)\n", g_checks, seed);
    return 0;
}
