// test_fused_emu: the fused training step (tensor_gpu/cuda/fused.cu), its own
// code, run on the CPU under the stand-in of tensor_gpu/cuda/emu/ (a
// std::thread for each CUDA thread, barriers for __syncthreads and the
// warp shuffles) and checked in lockstep against the CPU engine, so that a
// machine without a GPU (CI) tests its indexing, its phases and their
// barriers, the loss weights and the resident Adam. The same checks as
// test_gpu's engine_vs_cpu on the GPU: each step from the CPU engine's
// state, the loss, the logits and the gradients within test_gpu's
// tolerances (the gradients not where a ReLU input lies within the margin of
// 0), and the update the reference's Adam on the kernel's own gradients,
// bit for bit; then all the steps in one launch (the bench's run_steps:
// each step its record and shape) against one launch a step, bit for bit.
// What it cannot test is the GPU itself (the device's exp and
// log, timing, the real barriers and shuffles). Grids of one block and, as
// the engine launches them for batches (a block a document, the gradient
// summed over the blocks' partials in block order), of several blocks side
// by side (emu_launch_cooperative).
//
//   build/test_fused_emu
#include <cuda_runtime.h>   // emu/cuda_runtime.h (-Itensor_gpu/cuda/emu)
// fused.cu's shared array, per block: its namespace-scope declaration becomes
// one of mgpt::emu_block_smem() (emu/cuda_runtime.h), its use the calling
// thread's block's memory, so that a cooperative launch runs its blocks side
// by side, each with its own
#define fused_smem (*emu_block_smem())
#include "tensor_gpu/cuda/fused.cu"
#undef fused_smem

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

extern "C" {
#include "common/engine.h"
#include "common/model.h"
#include "common/pyrandom.h"
#include "common/settings.h"
#include "tensor_gpu/cpu/engine_cpu.h"
}
#include "tests/lockstep_tols.h"

namespace mgpt {
[[noreturn]] void throw_cuda_error(cudaError_t e, const char *call, const char *file, int line) {
    throw CudaError(std::string(call) + " failed (emulator error " + std::to_string(e) + ") at " + file + ":" +
                    std::to_string(line));
}
}  // namespace mgpt

using namespace mgpt;

static int g_fail = 0, g_checks = 0;

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("FAIL ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    g_fail++;
}

// |a-b| <= atol + rtol*|b| for each of the n (b the CPU engine's); returns the largest |a-b|
static double close(const std::string &what, const double *a, const double *b, size_t n, Tol t) {
    double mx = 0;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = std::fabs(a[i] - b[i]);
        if (!(d <= mx)) mx = d;   // NaN sticks
        if (!(d <= t.atol + t.rtol * std::fabs(b[i])) && bad++ == 0) first = i;
    }
    g_checks++;
    if (bad)
        failf("%s: %zu of %zu differ, the first at %zu: %.17g vs %.17g (max |diff| %.3e)", what.c_str(), bad, n, first,
              a[first], b[first], mx);
    return mx;
}

// Adam as fused.cu's adam_one, in real, on the kernel's gradients: the update
// the kernel must have made, bit for bit (-ffp-contract=off here and
// --fmad=false for nvcc: no fused multiply-adds on either side).
template <typename real>
static void ref_adam(std::vector<real> &p, const std::vector<real> &g, std::vector<real> &m, std::vector<real> &v,
                     const AdamScalars &sc, const Settings &s) {
    const real b1 = (real)s.beta1, b2 = (real)s.beta2, ep = (real)s.eps;
    const real lr = (real)sc.lr, rc1 = (real)sc.c1, rc2 = (real)sc.c2;
    for (size_t i = 0; i < p.size(); i++) {
        const real mi = b1 * m[i] + ((real)1 - b1) * g[i];
        const real vi = b2 * v[i] + ((real)1 - b2) * (g[i] * g[i]);
        m[i] = mi;
        v[i] = vi;
        p[i] -= (lr * (mi / rc1)) / (r_sqrt(vi / rc2) + ep);
    }
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static int below(int n) {   // xorshift64*: the batches' lengths and tokens
    g_rng ^= g_rng >> 12, g_rng ^= g_rng << 25, g_rng ^= g_rng >> 27;
    return (int)((g_rng * 0x2545f4914f6cdd1dull >> 33) % (uint64_t)n);
}

struct Case {
    int V, C, NH, NKV, L, T, maxB, grid;
    bool token_mean;
    std::vector<std::pair<int, int>> steps;   // (B, T) of each step
    const char *why;
};

// One model: the fused kernel and the CPU engine in lockstep over the steps.
template <typename real> static void lockstep(const Case &k) {
    const bool fp64 = sizeof(real) == 8;
    const Precision prec = fp64 ? PREC_FP64 : PREC_FP32;
    const LockstepTols tol = lockstep_tols(fp64);   // test_gpu's
    Settings s;
    settings_defaults(&s);
    s.steps = 1000;
    s.token_mean = k.token_mean;
    ModelShape shape{k.V, k.C, k.NH, k.NKV, k.C / k.NH, k.L, k.T};
    ParamLayout L;
    layout_init(&L, &shape);
    const size_t P = L.n_params, H = 4 * (size_t)k.C;
    std::vector<double> init(P);
    PyRandom r;
    pyrandom_seed(&r, 42);
    params_init(&L, &r, 0.08, init.data());
    EngineConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.s = &s, cfg.L = &L, cfg.precision = prec, cfg.fault = FAULT_NONE, cfg.max_batch = k.maxB;
    char err[512] = "";
    Engine *cpu = cpu_engine_create(&cfg, init.data(), err, sizeof err);
    const std::string label = std::string(fp64 ? "fp64 " : "fp32 ") + k.why;
    FusedArgs<real> a{};
    size_t smem = 0;
    char why[256] = "";
    const int before = g_fail;
    if (!cpu) {
        failf("%s: cpu_engine_create: %s", label.c_str(), err);
    } else if (!fused_model_of(&L, &a.m)) {
        failf("%s: fused_model_of refused the canonical layout", label.c_str());
    } else if (fused_plan<real>(a.m, k.maxB, &a.s, &smem, why, sizeof why)) {
        failf("%s: fused_plan: %s", label.c_str(), why);
    }
    if (g_fail != before) {
        if (cpu) cpu->ops->destroy(cpu);
        layout_free(&L);
        return;
    }
    a.s.minb = 1;
    // the global buffers
    std::vector<real> params(P), grads(P), m(P, 0), v(P, 0), partials((size_t)k.grid * P),
        losses((size_t)k.maxB * k.T);
    std::vector<real> logits((size_t)k.maxB * k.T * k.V), fch((size_t)k.L * k.maxB * k.T * H);
    for (size_t i = 0; i < P; i++) params[i] = (real)init[i];
    // every step's batch record, laid out as the engine uploads them: Adam's
    // scalars, n at off_n, the tokens at off_tok; (B, T) of each in shapes
    const size_t nsteps = k.steps.size(), off_n = 64, off_tok = off_n + ((size_t)k.maxB * sizeof(int) + 15) / 16 * 16;
    const size_t stride = off_tok + (size_t)k.maxB * (k.T + 1) * sizeof(int);
    std::vector<char> io(nsteps * stride);
    std::vector<int> shapes;
    std::vector<std::vector<int>> ns(nsteps), toks(nsteps);
    std::vector<AdamScalars> scs(nsteps);
    for (size_t st = 0; st < nsteps; st++) {
        const int B = k.steps[st].first, T = k.steps[st].second;
        std::vector<int> &n = ns[st], &tok = toks[st];
        n.assign((size_t)B, 0), tok.assign((size_t)B * (T + 1), -1);
        for (int b = 0; b < B; b++) {
            n[b] = b == 0 ? T : 1 + below(T);   // a full-block document, the rest ragged
            for (int t = 0; t <= n[b]; t++) tok[(size_t)b * (T + 1) + t] = below(k.V);
        }
        scs[st] = {lr_at(s.lr, (int)st, s.steps), 1.0 - std::pow(s.beta1, (double)(st + 1)),
                   1.0 - std::pow(s.beta2, (double)(st + 1))};
        char *rec = io.data() + st * stride;
        memcpy(rec, &scs[st], sizeof scs[st]);
        memcpy(rec + off_n, n.data(), (size_t)B * sizeof(int));
        memcpy(rec + off_tok, tok.data(), tok.size() * sizeof(int));
        shapes.push_back(B), shapes.push_back(T);
    }
    a.params = params.data(), a.grads = grads.data(), a.adam_m = m.data(), a.adam_v = v.data();
    a.partials = partials.data();
    a.io_stride = stride, a.off_sc = 0, a.off_n = off_n, a.off_tok = off_tok;
    a.nsteps = 1, a.losses = losses.data(), a.loss_stride = losses.size(), a.logits = logits.data();
    for (int l = 0; l < k.L; l++) a.fch[l] = fch.data() + (size_t)l * k.maxB * k.T * H;
    a.beta1 = (real)s.beta1, a.beta2 = (real)s.beta2, a.eps = (real)s.eps;
    a.token_mean = k.token_mean;
    // a launch: the grid's blocks side by side, as the engine's cooperative launch
    auto launch = [&](const FusedArgs<real> &args) {
        emu_launch_cooperative(k.grid, FUSED_THREADS, smem, [&args] { fused_train_kernel<real, 1>(args); });
    };
    // one launch of step st's record
    auto launch_step = [&](size_t st) {
        FusedArgs<real> one = a;
        one.io = io.data() + st * stride, one.B0 = shapes[2 * st], one.T0 = shapes[2 * st + 1];
        launch(one);
    };

    std::vector<double> lb((size_t)k.maxB * k.T * k.V), gb(P), pb(P), mb(P), vb(P), tmp(P);
    double worst[3] = {0, 0, 0};
    int skipped = 0;
    for (size_t st = 0; st < nsteps; st++) {
        const int B = k.steps[st].first, T = k.steps[st].second;
        const std::vector<int> &n = ns[st];
        std::vector<int> doc((size_t)B);
        for (int b = 0; b < B; b++) doc[b] = b;
        Batch batch;
        memset(&batch, 0, sizeof batch);
        batch.B = B, batch.T = T, batch.n = ns[st].data(), batch.tokens = toks[st].data(), batch.doc = doc.data();
        const AdamScalars &sc = scs[st];
        const std::vector<real> p0 = params, m0 = m, v0 = v;
        launch_step(st);

        const double l_cpu = cpu->ops->step(cpu, &batch, (int)st);
        // the loss from the per-position losses, as crossentropy_mean takes it
        double loss = 0, n_all = 0;
        for (int b = 0; b < B; b++) {
            double d = 0;
            for (int t = 0; t < n[b]; t++) d += (double)losses[(size_t)b * T + t];
            loss += k.token_mean ? d : d / n[b];
            n_all += n[b];
        }
        loss = k.token_mean ? loss / n_all : loss / B;
        const std::string at = label + ", step " + std::to_string(st + 1);
        worst[0] = std::max(worst[0], close(at + " loss", &loss, &l_cpu, 1, tol.loss));
        cpu->ops->get_logits(cpu, lb.data());
        std::vector<double> la, lr;   // the real positions
        bool near_zero = false;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < n[b]; t++) {
                const size_t row = (size_t)b * T + t;
                for (int o = 0; o < k.V; o++) {
                    la.push_back((double)logits[row * k.V + o]);
                    lr.push_back(lb[row * k.V + o]);
                }
                for (int l = 0; l < k.L; l++)
                    for (size_t j = 0; j < H; j++)
                        near_zero |= std::fabs((double)a.fch[l][row * H + j]) < tol.relu_margin;
            }
        worst[1] = std::max(worst[1], close(at + " logits", la.data(), lr.data(), la.size(), tol.logits));
        cpu->ops->get_grads(cpu, gb.data());
        for (size_t i = 0; i < P; i++) tmp[i] = (double)grads[i];
        if (near_zero)   // the two may gate that ReLU input differently: a whole term of gradient
            skipped++;
        else
            worst[2] = std::max(worst[2], close(at + " grads", tmp.data(), gb.data(), P, tol.grads));
        // the update: Adam on the kernel's own gradients, bit for bit
        std::vector<real> pr = p0, mr = m0, vr = v0;
        ref_adam(pr, grads, mr, vr, sc, s);
        g_checks++;
        if (memcmp(pr.data(), params.data(), P * sizeof(real)) || memcmp(mr.data(), m.data(), P * sizeof(real)) ||
            memcmp(vr.data(), v.data(), P * sizeof(real)))
            failf("%s: the update is not Adam on the kernel's gradients, bit for bit", at.c_str());
        // lockstep: the next step from the CPU engine's state
        cpu->ops->get_params(cpu, pb.data());
        cpu->ops->get_moments(cpu, mb.data(), vb.data());
        for (size_t i = 0; i < P; i++) params[i] = (real)pb[i], m[i] = (real)mb[i], v[i] = (real)vb[i];
    }
    char blocks[32];
    snprintf(blocks, sizeof blocks, "%d blocks", k.grid);
    printf("%s: %s, %zu steps in lockstep with the cpu engine (%s, %.1f KB shared memory): max |diff| loss %.2e, "
           "logits %.2e, grads %.2e%s; Adam on the kernel's gradients bit for bit: %s\n", label.c_str(),
           a.s.resident ? "resident" : k.grid == 1 ? "one block" : blocks, nsteps,
           k.token_mean ? "token-mean" : "doc-mean",
           smem / 1024.0, worst[0], worst[1], worst[2], skipped ? " (ReLU-near-zero steps' gradients skipped)" : "",
           g_fail == before ? "PASS" : "FAIL");

    // the bench's launch (run_steps): every step in one launch, each on its
    // record and shape, against one launch a step from the same start: the
    // same losses and the same final state, bit for bit
    auto start = [&] {
        for (size_t i = 0; i < P; i++) params[i] = (real)init[i], m[i] = 0, v[i] = 0;
    };
    const size_t rows = (size_t)k.maxB * k.T;
    std::vector<real> one_by_one(nsteps * rows), all(nsteps * rows);
    start();
    for (size_t st = 0; st < nsteps; st++) {
        launch_step(st);
        std::copy(losses.begin(), losses.begin() + rows, one_by_one.begin() + st * rows);
    }
    const std::vector<real> state1[4] = {params, m, v, grads};
    start();
    FusedArgs<real> run = a;
    run.io = io.data(), run.shapes = shapes.data(), run.nsteps = (int)nsteps, run.losses = all.data(),
    run.loss_stride = rows;
    launch(run);
    const std::vector<real> state2[4] = {params, m, v, grads};
    bool same = true;
    for (size_t st = 0; st < nsteps; st++)   // the real positions' losses (the padding is 0 in both)
        same = same && !memcmp(one_by_one.data() + st * rows, all.data() + st * rows,
                               (size_t)shapes[2 * st] * shapes[2 * st + 1] * sizeof(real));
    for (int q = 0; q < 4; q++) same = same && state1[q] == state2[q];
    g_checks++;
    if (!same) failf("%s: %zu steps in one launch differ from one launch a step", label.c_str(), nsteps);
    printf("%s: %zu steps in one launch (shapes per step): losses and state %s\n", label.c_str(), nsteps,
           same ? "bit-identical to one launch a step: PASS" : "DIFFER: FAIL");
    cpu->ops->destroy(cpu);
    layout_free(&L);
}

int main() {
    // (V, C, NH, NKV, layers, block, max batch, blocks, token-mean, steps (B, T), why)
    const std::vector<Case> cases = {
        {27, 16, 4, 4, 1, 16, 1, 1, false, {{1, 16}, {1, 9}, {1, 1}}, "the default model, batch 1"},
        {27, 16, 4, 2, 2, 16, 4, 1, false, {{4, 16}, {3, 7}, {1, 16}}, "GQA, 2 layers, batches of 4 in one block"},
        {27, 16, 4, 2, 2, 16, 4, 1, true, {{4, 16}, {4, 11}}, "GQA, 2 layers, token-mean"},
        {27, 16, 2, 1, 1, 36, 2, 1, false, {{2, 36}, {2, 33}}, "MQA, block 36 (two warps of keys)"},
        // the engine's grid for batches: blocks side by side, a block taking
        // documents b, b+3, ...; a batch of 2 leaves the third block idle
        {27, 16, 4, 2, 1, 16, 5, 3, false, {{5, 16}, {2, 12}, {4, 9}}, "batches of 5 on 3 blocks"},
        {27, 16, 4, 2, 1, 16, 5, 3, true, {{5, 16}, {3, 10}}, "batches of 5 on 3 blocks, token-mean"},
    };
    for (const Case &k : cases) {
        lockstep<double>(k);
        lockstep<float>(k);
    }
    printf("test_fused_emu: %d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
