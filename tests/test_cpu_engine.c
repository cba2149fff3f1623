// The CPU tensor engine against the scalar reference, step by step, on a real
// dataset built in memory: before each step the CPU engine is given the
// scalar's parameters and Adam moments, then both take the same batch and
// the loss, the logits, every gradient, and the parameters and moments after
// Adam are compared. Also: each test-only fault shows up in a compared
// quantity, sample() draws valid tokens (the scalar's, in fp64), and a bad
// config is refused with a message.
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/dataset.h"
#include "common/engine.h"
#include "common/model.h"
#include "common/pyrandom.h"
#include "common/settings.h"
#include "common/util.h"
#include "scalar_ref/engine_scalar.h"
#include "tensor_gpu/cpu/engine_cpu.h"
#include "tensor_gpu/lowp.h"

// Elementwise tolerances, per compared tensor (each parameter tensor apart):
//   |a - b| <= atol + rtol*|b| + frac*max|b over the tensor|
// fp64: the same math in another summation order, so ~1e-12 relative.
// fp32: float rounding, so relative to the tensor's own scale as well.
typedef struct {
    double atol, rtol, frac;
} Tol;
static const Tol TOL_F64 = {1e-14, 1e-12, 0};
static const Tol TOL_F32 = {0, 1e-4, 1e-4};
#define N_STEPS 5
// A fault must push some compared quantity this far past the fp64 tolerance.
#define FAULT_MIN_RATIO 1e6

// A few dozen names; with block_size 8 the long ones are cropped, so a batch
// of 4 has documents of 8 positions next to shorter ones.
static const char NAMES[] =
    "emma\nolivia\nava\nisabella\nsophia\ncharlotte\nmia\namelia\nharper\nevelyn\n"
    "abigail\nemily\nelizabeth\nmila\nella\navery\nsofia\ncamila\naria\nscarlett\n"
    "victoria\nmadison\nluna\ngrace\nchloe\npenelope\nlayla\nriley\nzoey\nnora\n"
    "lily\neleanor\nhannah\nlillian\naddison\naubrey\nellie\nstella\nnatalie\nzoe\n"
    "leah\nhazel\nviolet\naurora\nsavannah\nal\nbo\nj\nmaximiliano\nquinn\n";

typedef struct {
    Settings s;
    Dataset d;
    ParamLayout L;
    double *init;
} Setup;

static void setup_make(Setup *u, int n_embd, int n_head, int n_kv_head, int n_layer, int block_size) {
    settings_defaults(&u->s);
    u->s.n_embd = n_embd;
    u->s.n_head = n_head;
    u->s.n_kv_head = n_kv_head;
    u->s.n_layer = n_layer;
    u->s.block_size = block_size;
    u->s.steps = N_STEPS;
    char err[256];
    cr_assert(dataset_from_text(&u->d, "names", NAMES, strlen(NAMES), err, sizeof err) == 0, "%s", err);
    PyRandom r;
    pyrandom_seed(&r, 42);
    dataset_shuffle(&u->d, &r);
    ModelShape m = model_shape(&u->s, u->d.vocab_size);
    layout_init(&u->L, &m);
    u->init = xmalloc(u->L.n_params * sizeof *u->init);
    params_init(&u->L, &r, u->s.init_std, u->init);
}

static void setup_free(Setup *u) {
    dataset_free(&u->d);
    layout_free(&u->L);
    free(u->init);
}

static EngineConfig config(const Setup *u, Precision p, Fault f, int max_batch) {
    EngineConfig c = {.s = &u->s, .L = &u->L, .precision = p, .fault = f, .max_batch = max_batch};
    return c;
}

static Engine *cpu_new(const Setup *u, Precision p, Fault f, int max_batch) {
    EngineConfig c = config(u, p, f, max_batch);
    char err[256] = "";
    Engine *e = cpu_engine_create(&c, u->init, err, sizeof err);
    cr_assert(e, "cpu_engine_create: %s", err);
    return e;
}

// ---------------------------------------------------------------------------
// comparing

typedef struct {
    double ratio;     // worst |a-b| / tolerance (<= 1 passes)
    double max_abs;   // largest |a-b|
    double max_rel;   // largest |a-b| / |b| where b != 0
    char where[96];   // the worst element
} Diff;

static void diff_merge(Diff *into, const Diff *d) {
    if (d->ratio > into->ratio || isnan(d->ratio)) {
        into->ratio = d->ratio;
        memcpy(into->where, d->where, sizeof into->where);
    }
    into->max_abs = fmax(into->max_abs, d->max_abs);
    into->max_rel = fmax(into->max_rel, d->max_rel);
}

// a against the reference b, n elements; NaN must be at the same places.
static Diff diff(const double *a, const double *b, size_t n, Tol tol, const char *what) {
    double scale = 0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(b[i])) scale = fmax(scale, fabs(b[i]));
    Diff d = {0, 0, 0, ""};
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) {
            if (!isnan(a[i]) != !isnan(b[i])) d.ratio = INFINITY, worst = i;
            continue;
        }
        double e = fabs(a[i] - b[i]);
        if (e == 0) continue;
        double r = e / (tol.atol + tol.rtol * fabs(b[i]) + tol.frac * scale);
        d.max_abs = fmax(d.max_abs, e);
        if (b[i] != 0) d.max_rel = fmax(d.max_rel, e / fabs(b[i]));
        if (r > d.ratio) d.ratio = r, worst = i;
    }
    snprintf(d.where, sizeof d.where, "%s[%zu]: %.17g vs %.17g", what, worst, a[worst], b[worst]);
    return d;
}

// Parameter-shaped buffers, tensor by tensor (the tensors come from the layout table).
static Diff diff_params(const double *a, const double *b, const ParamLayout *L, Tol tol, const char *what) {
    Diff all = {0, 0, 0, ""};
    for (int k = 0; k < L->n_tensors; k++) {
        const ParamTensor *t = &L->t[k];
        char name[80];
        snprintf(name, sizeof name, "%s %s", what, t->name);
        Diff d = diff(a + t->offset, b + t->offset, t->size, tol, name);
        diff_merge(&all, &d);
    }
    return all;
}

typedef struct {
    Diff loss, logits, grads, params, m, v;
    int ragged, full;   // some batch had mixed n; some document had n = block_size
} Result;

// N_STEPS steps of the CPU engine (precision p, fault f) against the scalar
// engine, batch B, the CPU engine set to the scalar's state before each step.
static Result run_vs_scalar(const Setup *u, int B, Precision p, Fault f, Tol tol, int steps) {
    const size_t P = u->L.n_params, V = (size_t)u->L.shape.vocab_size;
    EngineConfig sc_cfg = config(u, PREC_FP64, FAULT_NONE, B);
    Engine *sc = scalar_engine_create(&sc_cfg, u->init);
    Engine *cpu = cpu_new(u, p, f, B);
    double *pa = xmalloc(P * sizeof *pa), *pb = xmalloc(P * sizeof *pb);
    double *ma = xmalloc(P * sizeof *ma), *mb = xmalloc(P * sizeof *mb);
    double *va = xmalloc(P * sizeof *va), *vb = xmalloc(P * sizeof *vb);
    double *la = xmalloc((size_t)B * (size_t)u->s.block_size * V * sizeof *la);
    double *lb = xmalloc((size_t)B * (size_t)u->s.block_size * V * sizeof *lb);
    Result res;
    memset(&res, 0, sizeof res);
    Batch batch;
    memset(&batch, 0, sizeof batch);
    for (int step = 0; step < steps; step++) {
        batch_make(&batch, &u->d, step, B, u->s.block_size);
        for (int b = 0; b < B; b++) {
            res.ragged |= batch.n[b] != batch.T;
            res.full |= batch.n[b] == u->s.block_size;
        }
        sc->ops->get_params(sc, pb);
        sc->ops->get_moments(sc, mb, vb);
        cpu->ops->set_state(cpu, pb, mb, vb);

        double loss_b = sc->ops->step(sc, &batch, step);
        double loss_a = cpu->ops->step(cpu, &batch, step);
        char what[64];
        snprintf(what, sizeof what, "step %d loss", step);
        Diff d = diff(&loss_a, &loss_b, 1, tol, what);
        diff_merge(&res.loss, &d);

        const size_t nl = (size_t)B * (size_t)batch.T * V;
        sc->ops->get_logits(sc, lb);
        cpu->ops->get_logits(cpu, la);
        snprintf(what, sizeof what, "step %d logits", step);
        d = diff(la, lb, nl, tol, what);
        diff_merge(&res.logits, &d);

        sc->ops->get_grads(sc, pb);
        cpu->ops->get_grads(cpu, pa);
        snprintf(what, sizeof what, "step %d grad", step);
        d = diff_params(pa, pb, &u->L, tol, what);
        diff_merge(&res.grads, &d);

        sc->ops->get_params(sc, pb);
        cpu->ops->get_params(cpu, pa);
        snprintf(what, sizeof what, "step %d param", step);
        d = diff_params(pa, pb, &u->L, tol, what);
        diff_merge(&res.params, &d);

        sc->ops->get_moments(sc, mb, vb);
        cpu->ops->get_moments(cpu, ma, va);
        snprintf(what, sizeof what, "step %d adam m", step);
        d = diff_params(ma, mb, &u->L, tol, what);
        diff_merge(&res.m, &d);
        snprintf(what, sizeof what, "step %d adam v", step);
        d = diff_params(va, vb, &u->L, tol, what);
        diff_merge(&res.v, &d);
    }
    batch_free(&batch);
    free(pa); free(pb); free(ma); free(mb); free(va); free(vb); free(la); free(lb);
    sc->ops->destroy(sc);
    cpu->ops->destroy(cpu);
    return res;
}

static void log_diff(const char *label, const char *q, const Diff *d) {
    cr_log_info("%s %-7s max|diff| %.3g  max rel %.3g  worst/tol %.3g  (%s)", label, q, d->max_abs,
                d->max_rel, d->ratio, d->where);
}

// Every compared quantity within tolerance.
static void expect_agree(const Setup *u, int B, Precision p, const char *label) {
    Tol tol = p == PREC_FP64 ? TOL_F64 : TOL_F32;
    Result r = run_vs_scalar(u, B, p, FAULT_NONE, tol, N_STEPS);
    const struct { const char *name; const Diff *d; } q[] = {
        {"loss", &r.loss}, {"logits", &r.logits}, {"grads", &r.grads},
        {"params", &r.params}, {"adam m", &r.m}, {"adam v", &r.v}};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        log_diff(label, q[i].name, q[i].d);
        cr_expect(q[i].d->ratio <= 1.0, "%s: %s off by %.3g x the tolerance at %s", label, q[i].name,
                  q[i].d->ratio, q[i].d->where);
    }
    if (B > 1) cr_expect(r.ragged && r.full, "%s: the batches were meant to be ragged with a full-length document", label);
}

// ---------------------------------------------------------------------------
// agreement with the scalar engine

Test(cpu_engine, fp64_gqa_2layers_batch1) {
    Setup u;
    setup_make(&u, 12, 4, 2, 2, 8);
    expect_agree(&u, 1, PREC_FP64, "fp64 B=1 NKV=2 L=2");
    setup_free(&u);
}

Test(cpu_engine, fp64_gqa_2layers_batch4) {
    Setup u;
    setup_make(&u, 12, 4, 2, 2, 8);
    expect_agree(&u, 4, PREC_FP64, "fp64 B=4 NKV=2 L=2");
    setup_free(&u);
}

Test(cpu_engine, fp64_mqa_batch3) {
    Setup u;
    setup_make(&u, 12, 4, 1, 1, 8);
    expect_agree(&u, 3, PREC_FP64, "fp64 B=3 NKV=1 L=1");
    setup_free(&u);
}

Test(cpu_engine, fp64_original_shape) {
    Setup u;
    setup_make(&u, 16, 4, 0, 1, 16);   // the original: n_kv_head = n_head
    expect_agree(&u, 1, PREC_FP64, "fp64 B=1 original shape");
    setup_free(&u);
}

Test(cpu_engine, fp32_gqa_2layers_batch1) {
    Setup u;
    setup_make(&u, 12, 4, 2, 2, 8);
    expect_agree(&u, 1, PREC_FP32, "fp32 B=1 NKV=2 L=2");
    setup_free(&u);
}

Test(cpu_engine, fp32_gqa_2layers_batch4) {
    Setup u;
    setup_make(&u, 12, 4, 2, 2, 8);
    expect_agree(&u, 4, PREC_FP32, "fp32 B=4 NKV=2 L=2");
    setup_free(&u);
}

// ---------------------------------------------------------------------------
// faults: each one is seen, and only where it should be

static Result fault_run(Fault f) {
    Setup u;
    setup_make(&u, 12, 4, 2, 2, 8);
    Result r = run_vs_scalar(&u, 4, PREC_FP64, f, TOL_F64, 1);
    cr_log_info("fault %s: loss %.3g logits %.3g grads %.3g params %.3g (worst/tol)", fault_name(f),
                r.loss.ratio, r.logits.ratio, r.grads.ratio, r.params.ratio);
    setup_free(&u);
    return r;
}

static void expect_caught(const Diff *d, Fault f, const char *q) {
    cr_expect(d->ratio >= FAULT_MIN_RATIO, "fault %s: %s only %.3g x the tolerance (%s)", fault_name(f), q,
              d->ratio, d->where);
}

static void expect_clean(const Diff *d, Fault f, const char *q) {
    cr_expect(d->ratio <= 1.0, "fault %s should not touch %s: %.3g x the tolerance (%s)", fault_name(f), q,
              d->ratio, d->where);
}

Test(cpu_engine, fault_attn_scale) {
    Result r = fault_run(FAULT_ATTN_SCALE);
    expect_caught(&r.loss, FAULT_ATTN_SCALE, "loss");
    expect_caught(&r.logits, FAULT_ATTN_SCALE, "logits");
}

Test(cpu_engine, fault_causal_mask) {
    Result r = fault_run(FAULT_CAUSAL_MASK);
    expect_caught(&r.logits, FAULT_CAUSAL_MASK, "logits");
}

Test(cpu_engine, fault_rmsnorm_bwd) {
    Result r = fault_run(FAULT_RMSNORM_BWD);
    expect_clean(&r.loss, FAULT_RMSNORM_BWD, "loss");
    expect_clean(&r.logits, FAULT_RMSNORM_BWD, "logits");
    expect_caught(&r.grads, FAULT_RMSNORM_BWD, "grads");
}

Test(cpu_engine, fault_grad_sign) {
    Result r = fault_run(FAULT_GRAD_SIGN);
    expect_clean(&r.logits, FAULT_GRAD_SIGN, "logits");
    expect_caught(&r.grads, FAULT_GRAD_SIGN, "grads");
    cr_expect(strstr(r.grads.where, "lm_head") != NULL, "fault grad-sign: worst gradient %s, not in lm_head",
              r.grads.where);
}

Test(cpu_engine, fault_adam_bias) {
    Result r = fault_run(FAULT_ADAM_BIAS);
    expect_clean(&r.logits, FAULT_ADAM_BIAS, "logits");
    expect_clean(&r.grads, FAULT_ADAM_BIAS, "grads");
    expect_caught(&r.params, FAULT_ADAM_BIAS, "params");
}

// The grad-sign fault flips exactly lm_head[1,2] and nothing else.
Test(cpu_engine, fault_grad_sign_element) {
    Setup u;
    setup_make(&u, 12, 4, 2, 2, 8);
    const size_t P = u.L.n_params;
    Engine *clean = cpu_new(&u, PREC_FP64, FAULT_NONE, 2), *bad = cpu_new(&u, PREC_FP64, FAULT_GRAD_SIGN, 2);
    Batch batch;
    memset(&batch, 0, sizeof batch);
    batch_make(&batch, &u.d, 0, 2, u.s.block_size);
    clean->ops->step(clean, &batch, 0);
    bad->ops->step(bad, &batch, 0);
    double *ga = xmalloc(P * sizeof *ga), *gb = xmalloc(P * sizeof *gb);
    clean->ops->get_grads(clean, ga);
    bad->ops->get_grads(bad, gb);
    const ParamTensor *lm = layout_tensor(&u.L, P_LM_HEAD, -1);
    const size_t flip = lm->offset + (size_t)lm->cols + 2;
    cr_expect(ga[flip] != 0 && gb[flip] == -ga[flip], "lm_head[1,2]: %g vs %g", gb[flip], ga[flip]);
    for (size_t i = 0; i < P; i++)
        if (i != flip) cr_expect(ga[i] == gb[i], "gradient %zu changed", i);
    free(ga); free(gb);
    batch_free(&batch);
    clean->ops->destroy(clean);
    bad->ops->destroy(bad);
    setup_free(&u);
}

// ---------------------------------------------------------------------------
// sampling

// After a few steps of training, sample() draws valid tokens; in fp64 it
// draws the scalar's tokens from the same generator state.
static void check_samples(Precision p) {
    Setup u;
    setup_make(&u, 12, 4, 2, 2, 8);
    EngineConfig sc_cfg = config(&u, PREC_FP64, FAULT_NONE, 2);
    Engine *sc = scalar_engine_create(&sc_cfg, u.init), *cpu = cpu_new(&u, p, FAULT_NONE, 2);
    Batch batch;
    memset(&batch, 0, sizeof batch);
    for (int step = 0; step < 3; step++) {
        batch_make(&batch, &u.d, step, 2, u.s.block_size);
        sc->ops->step(sc, &batch, step);
        cpu->ops->step(cpu, &batch, step);
    }
    const int V = u.L.shape.vocab_size, T = u.s.block_size;
    PyRandom ra, rb;
    pyrandom_seed(&ra, 7);
    pyrandom_seed(&rb, 7);
    int *a = xmalloc((size_t)T * sizeof *a), *b = xmalloc((size_t)T * sizeof *b);
    int same = 0, total_len = 0;
    const int n_samples = 20;
    for (int i = 0; i < n_samples; i++) {
        int na = cpu->ops->sample(cpu, &ra, u.s.temperature, a);
        int nb = sc->ops->sample(sc, &rb, u.s.temperature, b);
        cr_assert(na >= 0 && na <= T, "sample length %d not in 0..%d", na, T);
        for (int j = 0; j < na; j++)
            cr_expect(a[j] >= 0 && a[j] < V - 1, "sample %d token %d = %d: not a character", i, j, a[j]);
        same += na == nb && !memcmp(a, b, (size_t)na * sizeof *a);
        total_len += na;
    }
    cr_log_info("%s: %d of %d samples equal to the scalar's, mean length %.2f", p == PREC_FP64 ? "fp64" : "fp32",
                same, n_samples, (double)total_len / n_samples);
    cr_expect(total_len > 0, "every sample was empty");
    if (p == PREC_FP64) cr_expect(same == n_samples, "fp64 sampled the scalar's tokens in only %d of %d", same, n_samples);
    free(a); free(b);
    batch_free(&batch);
    sc->ops->destroy(sc);
    cpu->ops->destroy(cpu);
    setup_free(&u);
}

Test(cpu_engine, sample_fp64) { check_samples(PREC_FP64); }
Test(cpu_engine, sample_fp32) { check_samples(PREC_FP32); }

// sample() leaves the last step's logits alone
Test(cpu_engine, sample_keeps_logits) {
    Setup u;
    setup_make(&u, 12, 4, 2, 2, 8);
    Engine *cpu = cpu_new(&u, PREC_FP64, FAULT_NONE, 4);
    Batch batch;
    memset(&batch, 0, sizeof batch);
    batch_make(&batch, &u.d, 0, 4, u.s.block_size);
    cpu->ops->step(cpu, &batch, 0);
    const size_t n = (size_t)4 * (size_t)batch.T * (size_t)u.L.shape.vocab_size;
    double *l0 = xmalloc(n * sizeof *l0), *l1 = xmalloc(n * sizeof *l1);
    cpu->ops->get_logits(cpu, l0);
    PyRandom r;
    pyrandom_seed(&r, 1);
    int out[8];
    cpu->ops->sample(cpu, &r, 1.0, out);
    cpu->ops->get_logits(cpu, l1);
    for (size_t i = 0; i < n; i++)
        cr_assert((isnan(l0[i]) && isnan(l1[i])) || l0[i] == l1[i], "logit %zu changed by sample()", i);
    free(l0); free(l1);
    batch_free(&batch);
    cpu->ops->destroy(cpu);
    setup_free(&u);
}

// ---------------------------------------------------------------------------
// the mixed-precision recipes (docs/mixed_precision.md)

// Where the recipe rounds: bf16 and fp16 store every product (the logits
// among them) in the low precision; tf32 rounds only the operands, so its
// logits are fp32; the master gradients and weights stay fp32 in all three
// (not every gradient is a bf16 value); the loss is near the fp32 engine's.
Test(cpu_engine, mixed_precisions_round_where_the_recipe_says) {
    Setup u;
    setup_make(&u, 12, 4, 2, 2, 8);
    static const Precision ps[3] = {PREC_BF16, PREC_FP16, PREC_TF32};
    float (*const rnd[3])(float) = {round_bf16, round_fp16, round_bf16};
    Batch batch;
    memset(&batch, 0, sizeof batch);
    batch_make(&batch, &u.d, 0, 4, u.s.block_size);
    Engine *f32 = cpu_new(&u, PREC_FP32, FAULT_NONE, 4);
    const double loss32 = f32->ops->step(f32, &batch, 0);
    const size_t nl = (size_t)4 * (size_t)batch.T * (size_t)u.L.shape.vocab_size, P = u.L.n_params;
    double *l = xmalloc(nl * sizeof *l), *g = xmalloc(P * sizeof *g);
    for (int k = 0; k < 3; k++) {
        Engine *e = cpu_new(&u, ps[k], FAULT_NONE, 4);
        const double loss = e->ops->step(e, &batch, 0);
        cr_expect(fabs(loss - loss32) < 2e-2 * loss32, "%s loss %.9g vs fp32 %.9g", precision_name(ps[k]), loss,
                  loss32);
        e->ops->get_logits(e, l);
        size_t real = 0, low = 0;
        for (size_t i = 0; i < nl; i++) {
            if (isnan(l[i])) continue;   // padding
            real++;
            low += (double)rnd[k]((float)l[i]) == l[i];
        }
        if (ps[k] == PREC_TF32)
            cr_expect(low < real / 2, "tf32 logits are fp32 (only %zu of %zu are bf16 values by chance)", low, real);
        else
            cr_expect_eq(low, real, "%s: every logit is a %s value (%zu of %zu)", precision_name(ps[k]),
                         precision_name(ps[k]), low, real);
        e->ops->get_grads(e, g);
        size_t g_low = 0;
        for (size_t i = 0; i < P; i++) g_low += (double)round_bf16((float)g[i]) == g[i];
        cr_expect(g_low < P / 2, "%s: the master gradients are fp32 (%zu of %zu are bf16 values)",
                  precision_name(ps[k]), g_low, P);
        e->ops->destroy(e);
    }
    free(l);
    free(g);
    f32->ops->destroy(f32);
    batch_free(&batch);
    setup_free(&u);
}

static float no_rounding(float x) { return x; }

// The recipe's plumbing apart from its rounding: with the rounding made the
// identity, every mixed precision computes what the fp32 engine computes, up
// to fp32's own rounding (an activation gradient is summed apart before it
// is added, where fp32 adds the products into it directly), over 5 steps at
// batch 4 with GQA and 2 layers. A product that overwrote instead of
// accumulating, or read the wrong operand, would be off by a whole term.
Test(cpu_engine, mixed_recipe_without_rounding_is_fp32) {
    Setup u;
    setup_make(&u, 12, 4, 2, 2, 8);
    static const Precision ps[3] = {PREC_BF16, PREC_FP16, PREC_TF32};
    cpu_lowp_round_test = no_rounding;
    for (int k = 0; k < 3; k++) {
        Engine *a = cpu_new(&u, PREC_FP32, FAULT_NONE, 4), *b = cpu_new(&u, ps[k], FAULT_NONE, 4);
        const size_t P = u.L.n_params;
        double *ga = xmalloc(P * sizeof *ga), *gb = xmalloc(P * sizeof *gb);
        double *pa = xmalloc(P * sizeof *pa), *pb = xmalloc(P * sizeof *pb);
        Batch batch;
        memset(&batch, 0, sizeof batch);
        double worst_g = 0, worst_p = 0, worst_l = 0;
        for (int step = 0; step < 5; step++) {
            batch_make(&batch, &u.d, step, 4, u.s.block_size);
            const double la = a->ops->step(a, &batch, step), lb = b->ops->step(b, &batch, step);
            worst_l = fmax(worst_l, fabs(la - lb) / la);
            a->ops->get_grads(a, ga), b->ops->get_grads(b, gb);
            a->ops->get_params(a, pa), b->ops->get_params(b, pb);
            for (int t = 0; t < u.L.n_tensors; t++) {   // each tensor against its own largest gradient
                const ParamTensor *pt = &u.L.t[t];
                double mx = 0, d = 0;
                for (size_t i = pt->offset; i < pt->offset + pt->size; i++) {
                    mx = fmax(mx, fabs(ga[i]));
                    d = fmax(d, fabs(ga[i] - gb[i]));
                }
                worst_g = fmax(worst_g, mx > 0 ? d / mx : d);
            }
            for (size_t i = 0; i < P; i++) worst_p = fmax(worst_p, fabs(pa[i] - pb[i]));
            b->ops->set_state(b, pa, NULL, NULL);   // both go on from fp32's parameters
        }
        cr_log_info("%s without rounding vs fp32: loss %.2e, grads %.2e of each tensor's max, params %.2e",
                    precision_name(ps[k]), worst_l, worst_g, worst_p);
        cr_expect(worst_l < 1e-6, "%s: loss differs by %.3g", precision_name(ps[k]), worst_l);
        cr_expect(worst_g < 1e-5, "%s: gradients differ by %.3g of the tensor's max", precision_name(ps[k]), worst_g);
        cr_expect(worst_p < 1e-3, "%s: parameters differ by %.3g", precision_name(ps[k]), worst_p);
        free(ga), free(gb), free(pa), free(pb);
        batch_free(&batch);
        a->ops->destroy(a), b->ops->destroy(b);
    }
    cpu_lowp_round_test = NULL;
    setup_free(&u);
}

// fp16 scales the loss like torch's GradScaler: a step whose scaled
// gradients overflow fp16 is skipped (parameters and moments untouched, bit
// for bit) and halves the scale; a step that does not overflow updates.
Test(cpu_engine, mixed_fp16_overflow_skips_the_update_and_halves_the_scale) {
    Setup u;
    setup_make(&u, 12, 4, 2, 2, 8);
    EngineConfig c = config(&u, PREC_FP16, FAULT_NONE, 4);
    c.loss_scale = 0x1p40;   // dlogits * 2^40 is far past fp16's 65504
    char err[256] = "";
    Engine *e = cpu_engine_create(&c, u.init, err, sizeof err);
    cr_assert(e, "%s", err);
    const size_t P = u.L.n_params;
    double *p0 = xmalloc(P * sizeof *p0), *p1 = xmalloc(P * sizeof *p1), *m = xmalloc(P * sizeof *m),
           *v = xmalloc(P * sizeof *v), *g = xmalloc(P * sizeof *g);
    Batch batch;
    memset(&batch, 0, sizeof batch);
    batch_make(&batch, &u.d, 0, 4, u.s.block_size);
    e->ops->get_params(e, p0);
    const double loss = e->ops->step(e, &batch, 0);
    cr_expect(isfinite(loss), "the forward is not scaled: loss %g", loss);
    double scale = 0;
    cr_expect(e->ops->step_skipped(e, &scale) == 1, "an overflowing step is skipped");
    cr_expect_eq(scale, 0x1p40, "at the scale it used (%g)", scale);
    e->ops->get_grads(e, g);
    size_t bad = 0;
    for (size_t i = 0; i < P; i++) bad += !isfinite(g[i]);
    cr_expect(bad > 0, "its gradients overflowed");
    e->ops->get_params(e, p1);
    e->ops->get_moments(e, m, v);
    for (size_t i = 0; i < P; i++) {
        cr_assert(p1[i] == p0[i], "parameter %zu changed in a skipped step", i);
        cr_assert(m[i] == 0 && v[i] == 0, "moment %zu changed in a skipped step", i);
    }
    e->ops->step(e, &batch, 1);
    e->ops->step_skipped(e, &scale);
    cr_expect_eq(scale, 0x1p39, "the next step uses half the scale (%g)", scale);
    e->ops->destroy(e);
    // at a scale that fits, the step updates, and power-of-two scales agree
    // closely (exactly but where fp16 underflows)
    double *q = xmalloc(P * sizeof *q);
    for (int k = 0; k < 2; k++) {
        c.loss_scale = k ? 0x1p12 : 0x1p8;
        e = cpu_engine_create(&c, u.init, err, sizeof err);
        cr_assert(e, "%s", err);
        e->ops->step(e, &batch, 0);
        cr_expect(e->ops->step_skipped(e, &scale) == 0, "scale %g: not skipped", c.loss_scale);
        e->ops->get_params(e, k ? q : p1);
        e->ops->destroy(e);
    }
    double worst = 0, moved = 0;
    for (size_t i = 0; i < P; i++) {
        worst = fmax(worst, fabs(q[i] - p1[i]));
        moved = fmax(moved, fabs(p1[i] - p0[i]));
    }
    cr_expect(moved > 1e-3, "the update moved the parameters (by %g)", moved);
    cr_expect(worst < 1e-2 * moved, "scales 2^8 and 2^12 give nearly the same update (%g of %g)", worst, moved);
    free(q);
    free(p0), free(p1), free(m), free(v), free(g);
    batch_free(&batch);
    setup_free(&u);
}

// ---------------------------------------------------------------------------
// bad configs

static void expect_refused(EngineConfig c, const double *init, const char *needle) {
    char err[256] = "";
    Engine *e = cpu_engine_create(&c, init, err, sizeof err);
    cr_expect(e == NULL, "a bad config (%s) was accepted", needle);
    cr_expect(strstr(err, needle) != NULL, "message \"%s\" does not mention %s", err, needle);
    if (e) e->ops->destroy(e);
}

Test(cpu_engine, bad_config) {
    Setup u;
    setup_make(&u, 12, 4, 2, 2, 8);
    expect_refused(config(&u, PREC_FP64, FAULT_NONE, 0), u.init, "max_batch");
    expect_refused(config(&u, PREC_FP64, FAULT_NONE, -3), u.init, "max_batch");
    expect_refused(config(&u, PREC_NUM, FAULT_NONE, 1), u.init, "precision");
    expect_refused(config(&u, PREC_FP64, FAULT_NUM, 1), u.init, "fault");
    expect_refused(config(&u, PREC_FP64, FAULT_NONE, 1), NULL, "parameters");
    ParamLayout bad = u.L;   // n_head that does not divide over the kv heads
    bad.shape.n_kv_head = 3;
    EngineConfig c = config(&u, PREC_FP32, FAULT_NONE, 1);
    c.L = &bad;
    expect_refused(c, u.init, "n_kv_head");
    setup_free(&u);
}

// Past the loss scale's horizon: GradScaler's rule over a long run. Every
// step reports the scale it used; an overflow halves it and restarts the
// count; 2000 consecutive clean steps double it.
Test(cpu_engine, mixed_fp16_scale_doubles_after_2000_clean_steps, .timeout = 120) {
    enum { GROWTH = 2000, MAX_STEPS = 8000 };
    Setup u;
    setup_make(&u, 8, 2, 2, 1, 8);
    u.s.steps = MAX_STEPS;   // the learning rate stays positive throughout
    EngineConfig c = config(&u, PREC_FP16, FAULT_NONE, 2);
    c.loss_scale = 0x1p40;   // overflows: the first steps are skipped until the scale fits
    char err[256] = "";
    Engine *e = cpu_engine_create(&c, u.init, err, sizeof err);
    cr_assert(e, "%s", err);
    Batch batch;
    memset(&batch, 0, sizeof batch);
    double expected = c.loss_scale, scale = 0;
    int clean = 0, skips = 0, doubled_at = -1, step = 0;
    for (; step < MAX_STEPS && doubled_at < 0; step++) {
        batch_make(&batch, &u.d, step, 2, u.s.block_size);
        e->ops->step(e, &batch, step);
        const int skipped = e->ops->step_skipped(e, &scale);
        cr_assert_eq(scale, expected, "step %d (%d clean steps before it) used scale %g, expected %g", step, clean,
                     scale, expected);
        if (skipped) {
            expected *= 0.5, clean = 0, skips++;
        } else if (++clean == GROWTH) {
            expected *= 2, clean = 0, doubled_at = step + 1;
        }
    }
    cr_assert(skips > 0, "the scale 2^40 overflowed at least once");
    cr_assert(doubled_at > 0 && doubled_at < MAX_STEPS, "2000 clean steps in a row within %d steps", MAX_STEPS);
    batch_make(&batch, &u.d, doubled_at, 2, u.s.block_size);
    e->ops->step(e, &batch, doubled_at);
    e->ops->step_skipped(e, &scale);
    cr_expect_eq(scale, expected, "step %d, after 2000 clean steps, uses the doubled scale %g (it used %g)", doubled_at,
                 expected, scale);
    batch_free(&batch);
    e->ops->destroy(e);
    setup_free(&u);
}
