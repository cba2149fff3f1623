// Every bound of compare's rules, tested from both sides. For each quantity
// (the loss, the logits, every gradient tensor, the parameters, m, v, the
// sampling probabilities) under each rule (fp64's fixed rule; the ratio rule
// of fp32, bf16, fp16 and tf32, with the noise reference's own fixed bound
// and the mixed precisions' cap), in lockstep; free mode's band after its
// window has filled and wrapped; each tier of the bench's loss check; and
// --against: an error planted just inside the bound passes and one just
// outside fails, naming that quantity. The bound is computed here from the
// table (compare/tolerance.c, read through rules_for) and the noise
// reference's error the clean run's trace records, never from compare's
// own arithmetic: a bound that compare loosens or tightens fails here.
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare/tolerance.h"
#include "helpers.h"

#define INSIDE 0.98
#define OUTSIDE 1.02
#define STEP 2   // the lockstep step the errors are planted at

static ThRun compare_args(const char *const *extra) {
    const char *args[64] = {"--data", th_names_path()};
    int n = 2;
    for (; *extra; extra++) args[n++] = *extra;
    args[n] = NULL;
    return th_tool_argv("compare", args);
}

// ---------------------------------------------------------------------------
// lockstep

// The clean lockstep run of precision p (scalar vs cpu), traced.
static cJSON *clean_lockstep(const char *prec, const char *trace) {
    const char *args[] = {"--engines", "scalar,cpu", "--precision", prec, "--steps", "3", "--batch", "2",
                          "--samples", "3", "--quiet", "--trace", trace, NULL};
    ThRun r = compare_args(args);
    cr_assert_eq(r.status, 0, "the clean %s run must pass:\n%s%s", prec, r.out, r.err);
    th_run_free(&r);
    return th_load_json(trace);
}

// The errors entry of (quantity, tensor) at STEP (probs: sample 1).
static const cJSON *entry(const cJSON *root, const char *q, const char *tensor) {
    const cJSON *list;
    if (!strcmp(q, "probs")) {
        list = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "sample_check"), "errors");
        tensor = "sample 1";
    } else {
        list = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(root, "steps"), STEP - 1), "errors");
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, list) {
        if (!strcmp(cJSON_GetObjectItem(e, "quantity")->valuestring, q) &&
            !strcmp(cJSON_GetObjectItem(e, "tensor")->valuestring, tensor))
            return e;
    }
    cr_assert_fail("no errors entry for %s %s at step %d", q, tensor, STEP);
    return NULL;
}

static double field(const cJSON *e, const char *k) {
    const cJSON *x = cJSON_GetObjectItem(e, k);
    cr_assert(cJSON_IsNumber(x), "errors entry lacks '%s'", k);
    return x->valuedouble;
}

// Run with --plant SPEC; expect a pass, or a failure whose first failure is
// `q` (and `tensor`), of the noise reference when `noise`.
static void expect_plant(const char *prec, const char *spec, int fail, const char *q, const char *tensor, int noise) {
    const char *tr = th_temp_path(fail ? "planted-fail.json" : "planted-pass.json");
    const char *args[] = {"--engines", "scalar,cpu", "--precision", prec, "--steps", "3", "--batch", "2", "--samples",
                          "3", "--quiet", "--trace", tr, "--plant", spec, NULL};
    ThRun r = compare_args(args);
    cr_expect_eq(r.status, fail ? 1 : 0, "%s --plant %s: exit %d, want %d\n%s%s", prec, spec, r.status, fail ? 1 : 0,
                 r.out, r.err);
    if (fail && r.status == 1) {
        cJSON *root = th_load_json(tr);
        const cJSON *ff = cJSON_GetObjectItem(root, "first_failure");
        cr_expect(cJSON_IsObject(ff), "%s: no first_failure", spec);
        if (cJSON_IsObject(ff)) {
            cr_expect_str_eq(cJSON_GetObjectItem(ff, "quantity")->valuestring, q, "%s: the failure names the quantity",
                             spec);
            const char *want = !strcmp(q, "probs") ? "sample 1" : tensor ? tensor : q;
            cr_expect_str_eq(cJSON_GetObjectItem(ff, "tensor")->valuestring, want, "%s: ... and the tensor", spec);
            cr_expect_eq(cJSON_IsTrue(cJSON_GetObjectItem(ff, "noise_reference")), noise != 0,
                         "%s: the failure is %sthe noise reference's", spec, noise ? "" : "not ");
        }
        cJSON_Delete(root);
    }
    th_run_free(&r);
}

static void plant_both_sides(const char *prec, const char *q, const char *tensor, double bound, int noise) {
    char spec[256];
    // the loss is one number: a planted value is rounded to its ulp (2^-52
    // of it at most), which fp64's bound of a few ulps can lose in 2%; keep
    // two ulps on each side
    const double ulps = !strcmp(q, "loss") ? 2 * DBL_EPSILON : 0;
    for (int side = 0; side < 2; side++) {
        const double d = side ? fmax(bound * OUTSIDE, bound + ulps) : fmin(bound * INSIDE, bound - ulps);
        char member[16] = "";   // noise: the first member, noiseJ: member J
        if (noise) snprintf(member, sizeof member, noise == 1 ? "noise:" : "noise%d:", noise);
        snprintf(spec, sizeof spec, "%s%s%s%s@%d=%.17g", member, q, tensor ? ":" : "",
                 tensor ? tensor : "", !strcmp(q, "probs") ? 1 : STEP, d);
        expect_plant(prec, spec, side, q, tensor, noise);
    }
}

// The bound the candidate's error is held to, from the table: fp64 a fixed
// multiple of the RMS; else min(k * e_noise + floor, cap) (the gates are
// matched: scalar and cpu report their ReLU inputs).
static double bound_for(Precision p, Quantity q, const cJSON *e) {
    const PrecisionRules *r = rules_for(p);
    if (p == PREC_FP64) return r->fixed[q].scaled;
    return ratio_bound(r->ratio[q], field(e, "ref_err_rms"));
}

// Every quantity of one precision, from both sides: each gradient tensor;
// the parameters, m and v in one tensor each (the same code compares every
// tensor of a quantity); the noise reference's bound; the cap.
static void every_bound(Precision p) {
    const char *prec = precision_name(p);
    char name[64];
    snprintf(name, sizeof name, "clean-%s.json", prec);
    cJSON *root = clean_lockstep(prec, th_temp_path(name));
    static const char *const whole[] = {"loss", "logits", "probs"};
    for (size_t i = 0; i < 3; i++) {
        const Quantity q = quantity_from_name(whole[i]);
        plant_both_sides(prec, whole[i], NULL, bound_for(p, q, entry(root, whole[i], whole[i])), 0);
    }
    // the gradient of every tensor, in the trace's order
    const cJSON *e, *list = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(root, "steps"), STEP - 1),
                                                "errors");
    int grads = 0;
    cJSON_ArrayForEach(e, list) {
        if (strcmp(cJSON_GetObjectItem(e, "quantity")->valuestring, "grads")) continue;
        plant_both_sides(prec, "grads", cJSON_GetObjectItem(e, "tensor")->valuestring, bound_for(p, Q_GRADS, e), 0);
        grads++;
    }
    cr_expect_eq(grads, 9, "the default model has 9 tensors");
    static const struct { const char *q, *tensor; } one[] = {
        {"params", "lm_head"}, {"m", "layer0.attn_wq"}, {"v", "wpe"}};
    for (size_t i = 0; i < 3; i++)
        plant_both_sides(prec, one[i].q, one[i].tensor,
                         bound_for(p, quantity_from_name(one[i].q), entry(root, one[i].q, one[i].tensor)), 0);
    if (p != PREC_FP64) {
        // the noise reference's own fixed bound, each member in turn planted
        // (the largest member's error is the reference's)
        static const struct { const char *q, *tensor; } per[] = {
            {"loss", NULL}, {"logits", NULL}, {"grads", "layer0.mlp_fc1"}, {"params", "wte"}, {"m", "lm_head"},
            {"v", "layer0.attn_wo"}, {"probs", NULL}};
        for (size_t i = 0; i < sizeof per / sizeof per[0]; i++) {
            const Quantity q = quantity_from_name(per[i].q);
            const RatioRule rr = rules_for(p)->ratio[q];
            plant_both_sides(prec, per[i].q, per[i].tensor, rr.ref_cap, 1 + (int)(i % NOISE_MEMBERS));
            if (!(rr.cap > 0)) continue;
            // the cap: a noise error large enough that k e + floor exceeds
            // it (and inside the noise's own bound), then the candidate at the cap
            const double x = (rr.cap * 1.05 - rr.floor) / rr.k;
            cr_assert(x < rr.ref_cap * INSIDE, "%s %s: the cap %g can never bind (k %g, ref_cap %g)", prec, per[i].q,
                      rr.cap, rr.k, rr.ref_cap);
            char spec[512];
            for (int side = 0; side < 2; side++) {
                const char *t = per[i].tensor;
                const int at = !strcmp(per[i].q, "probs") ? 1 : STEP;
                snprintf(spec, sizeof spec, "noise:%s%s%s@%d=%.17g,%s%s%s@%d=%.17g", per[i].q, t ? ":" : "",
                         t ? t : "", at, x, per[i].q, t ? ":" : "", t ? t : "", at,
                         rr.cap * (side ? OUTSIDE : INSIDE));
                expect_plant(prec, spec, side, per[i].q, t, 0);
            }
        }
    }
    cJSON_Delete(root);
}

Test(bounds, fp64_fixed_rule, .timeout = 240) { every_bound(PREC_FP64); }
Test(bounds, fp32_ratio_rule, .timeout = 240) { every_bound(PREC_FP32); }
Test(bounds, bf16_ratio_rule, .timeout = 240) { every_bound(PREC_BF16); }
Test(bounds, fp16_ratio_rule, .timeout = 240) { every_bound(PREC_FP16); }
Test(bounds, tf32_ratio_rule, .timeout = 240) { every_bound(PREC_TF32); }

// ---------------------------------------------------------------------------
// free mode: the judged quantity is the mean loss difference over the last
// W steps; a spike planted after the window has filled and wrapped moves the
// W means that hold it by spike / W.

static void free_both_sides(Precision p) {
    const char *prec = precision_name(p);
    const PrecisionRules *r = rules_for(p);
    const int W = r->drift_window, steps = 4 * W + 12, at = 2 * W + 3;
    char nsteps[16], name[64];
    snprintf(nsteps, sizeof nsteps, "%d", steps);
    snprintf(name, sizeof name, "free-%s.json", prec);
    const char *tr = th_temp_path(name);
    const char *clean[] = {"--engines", "scalar,cpu", "--mode", "free", "--precision", prec, "--steps", nsteps,
                           "--batch", "2", "--quiet", "--trace", tr, NULL};
    ThRun c = compare_args(clean);
    cr_assert_eq(c.status, 0, "%s%s", c.out, c.err);
    th_run_free(&c);
    cJSON *root = th_load_json(tr);
    const cJSON *js = cJSON_GetObjectItem(root, "steps");
    cr_assert_eq(cJSON_GetArraySize(js), steps);
    double diff[4096], mean[4096];
    for (int i = 0; i < steps; i++) {
        const cJSON *l = cJSON_GetObjectItem(cJSON_GetArrayItem(js, i), "loss");
        diff[i] = cJSON_GetArrayItem(l, 1)->valuedouble - cJSON_GetArrayItem(l, 0)->valuedouble;
    }
    double worst = 0;
    for (int i = 0; i < steps; i++) {
        const int w = i + 1 < W ? i + 1 : W;
        double s = 0;
        for (int j = i - w + 1; j <= i; j++) s += diff[j];
        mean[i] = s / w;
        if (fabs(mean[i]) > worst) worst = fabs(mean[i]);
    }
    cJSON_Delete(root);
    cr_assert_lt(worst, r->drift_tol * 0.5, "%s: the clean drift %g is too near the band %g to test it", prec, worst,
                 r->drift_tol);
    // the spike at step `at` moves the means of steps at .. at+W-1 by spike/W
    double top = -INFINITY;
    for (int i = at - 1; i < at - 1 + W; i++) top = fmax(top, mean[i]);
    for (int side = 0; side < 2; side++) {
        const double spike = W * (r->drift_tol * (side ? OUTSIDE : INSIDE) - top);
        char spec[128];
        snprintf(spec, sizeof spec, "loss@%d=%.17g", at, spike);
        const char *tp = th_temp_path("free-planted.json");
        const char *args[] = {"--engines", "scalar,cpu", "--mode", "free", "--precision", prec, "--steps", nsteps,
                              "--batch", "2", "--quiet", "--trace", tp, "--plant", spec, NULL};
        ThRun x = compare_args(args);
        cr_expect_eq(x.status, side, "%s free --plant %s (window %d, band %g): exit %d\n%s%s", prec, spec, W,
                     r->drift_tol, x.status, x.out, x.err);
        if (side && x.status == 1) {
            cJSON *t = th_load_json(tp);
            const int st = cJSON_GetObjectItem(cJSON_GetObjectItem(t, "drift"), "step")->valueint;
            cr_expect(st >= at && st < at + W, "%s: the largest drift at step %d, inside the spike's window %d..%d",
                      prec, st, at, at + W - 1);
            cJSON_Delete(t);
        }
        th_run_free(&x);
    }
    // the window wraps: a second spike W steps later, just inside on its own,
    // passes too (a window that kept the first would hold both)
    double top2 = -INFINITY;
    for (int i = at + W - 1; i < at - 1 + 2 * W; i++) top2 = fmax(top2, mean[i]);
    char spec[256];
    snprintf(spec, sizeof spec, "loss@%d=%.17g,loss@%d=%.17g", at, W * (r->drift_tol * INSIDE - top), at + W,
             W * (r->drift_tol * INSIDE - top2));
    const char *args[] = {"--engines", "scalar,cpu", "--mode", "free", "--precision", prec, "--steps", nsteps,
                          "--batch", "2", "--quiet", "--plant", spec, NULL};
    ThRun y = compare_args(args);
    cr_expect_eq(y.status, 0, "%s free --plant %s: two spikes a window apart, each inside: exit %d\n%s%s", prec, spec,
                 y.status, y.out, y.err);
    th_run_free(&y);
}

Test(bounds, free_mode_band_fp64, .timeout = 60) { free_both_sides(PREC_FP64); }
Test(bounds, free_mode_band_fp32, .timeout = 60) { free_both_sides(PREC_FP32); }
Test(bounds, free_mode_band_bf16_past_its_window, .timeout = 120) { free_both_sides(PREC_BF16); }

// ---------------------------------------------------------------------------
// the bench: every row's losses against the rows before it, step 1 and step 2
// to their tiers, later steps to --loss-rtol (with a mixed precision, the
// means of the last bench_window steps)

typedef struct {
    double a[256], b[256];
    int n;
} Losses;

static void bench_losses(const char *trace, Losses *L) {
    cJSON *root = th_load_json(trace);
    const cJSON *rows = cJSON_GetObjectItem(root, "bench");
    cr_assert_eq(cJSON_GetArraySize(rows), 2, "two rows");
    for (int k = 0; k < 2; k++) {
        const cJSON *ls = cJSON_GetObjectItem(cJSON_GetArrayItem(rows, k), "losses");
        L->n = cJSON_GetArraySize(ls);
        for (int i = 0; i < L->n && i < 256; i++) (k ? L->a : L->b)[i] = cJSON_GetArrayItem(ls, i)->valuedouble;
    }
    cJSON_Delete(root);
}

static double wmean(const double *x, int j, int w) {
    double s = 0;
    for (int i = j - w + 1; i <= j; i++) s += x[i];
    return s / w;
}

// The factor the last row's loss at step `at` (1-based) takes so that the
// largest relative difference of the means it is part of reaches tol * f.
static double bench_delta(const Losses *L, int at, double tol, double f, int window) {
    double best = INFINITY;
    const int j0 = at - 1;
    for (int j = j0; j < L->n; j++) {
        const int w = j < 2 ? 1 : (j + 1 < window ? j + 1 : window);
        if (j - w + 1 > j0) break;   // no longer in the window
        if (j >= 2 && j0 < 2 && window == 1) break;
        const double A = wmean(L->a, j, w), B = wmean(L->b, j, w);
        // A + delta * a[j0] / w = B + |B| tol f
        const double d = (B + fabs(B) * tol * f - A) * w / L->a[j0];
        if (d < best) best = d;
        if (j < 2) break;   // steps 1 and 2 are judged alone
    }
    return best;
}

static void bench_tier(const char *prec, int tier) {
    const Precision p = precision_from_name(prec);
    const PrecisionRules *r = rules_for(p);
    const int window = r->bench_window, steps = window > 1 ? window + 12 : 12;
    char nsteps[16];
    snprintf(nsteps, sizeof nsteps, "%d", steps);
    const char *tr = th_temp_path("bench-clean.json");
    const char *clean[] = {"--bench", "--engines", "scalar,cpu", "--precision", prec, "--steps", nsteps,
                           "--repeats", "1", "--warmup", "1", "--quiet", "--trace", tr, NULL};
    ThRun c = compare_args(clean);
    cr_assert_eq(c.status, 0, "%s%s", c.out, c.err);
    th_run_free(&c);
    Losses L;
    bench_losses(tr, &L);
    cr_assert_eq(L.n, steps);
    const double tol = tier < 2 ? r->bench_rtol[tier] : BENCH_LOSS_RTOL;
    const int at = tier < 2 ? tier + 1 : steps - 4;
    for (int side = 0; side < 2; side++) {
        const double d = bench_delta(&L, at, tol, side ? OUTSIDE : INSIDE, tier < 2 ? 1 : window);
        char spec[128];
        snprintf(spec, sizeof spec, "loss@%d=%.17g", at, d);
        const char *args[] = {"--bench", "--engines", "scalar,cpu", "--precision", prec, "--steps", nsteps,
                              "--repeats", "1", "--warmup", "1", "--quiet", "--plant", spec, NULL};
        ThRun x = compare_args(args);
        cr_expect_eq(x.status, side, "bench %s tier %d (tolerance %g, window %d) --plant %s: exit %d\n%s%s", prec,
                     tier + 1, tol, tier < 2 ? 1 : window, spec, x.status, x.out, x.err);
        if (side && x.status == 1) {
            char want[64];
            snprintf(want, sizeof want, "FAIL: step %d", tier < 2 ? at : at);
            cr_expect(strstr(x.out, "FAIL: step") != NULL, "%s tier %d: the row names the failing step:\n%s", prec,
                      tier + 1, x.out);
        }
        th_run_free(&x);
    }
}

Test(bounds, bench_tiers_fp64, .timeout = 120) {
    for (int t = 0; t < 3; t++) bench_tier("fp64", t);
}
Test(bounds, bench_tiers_fp32, .timeout = 120) {
    for (int t = 0; t < 3; t++) bench_tier("fp32", t);
}
Test(bounds, bench_tiers_bf16, .timeout = 180) {
    for (int t = 0; t < 3; t++) bench_tier("bf16", t);
}
Test(bounds, bench_tiers_tf32, .timeout = 180) {
    for (int t = 0; t < 3; t++) bench_tier("tf32", t);
}

// ---------------------------------------------------------------------------
// --against: a recorded run (the numpy engine, fp64 and fp32) with one loss
// or one tensor element moved just inside or just outside its bound

static void against_both_sides(const char *prec) {
    const char *py = th_python("import numpy");
    if (!py) {
        fprintf(stderr, "SKIP: no Python with numpy (make deps makes .venv with it)\n");
        cr_skip_test("no Python with numpy");
    }
    const Precision p = precision_from_name(prec);
    char dir[1024], trace[1100], ref[1100], bad[1100], cmd[16384];
    snprintf(dir, sizeof dir, "%s", th_temp_path(prec));
    const char *exp[] = {"--export-init", dir, "--steps", "6", "--batch", "2", NULL};
    ThRun e = compare_args(exp);
    cr_assert_eq(e.status, 0, "%s", e.err);
    th_run_free(&e);
    // the run in its precision, and in fp64 (what each value should be)
    snprintf(trace, sizeof trace, "%s/trace.json", dir);
    snprintf(ref, sizeof ref, "%s/ref/trace.json", dir);
    snprintf(bad, sizeof bad, "%s/planted/trace.json", dir);
    // tensors at steps 1, 3 and 6
    const int every = 3;
    snprintf(cmd, sizeof cmd, "mkdir -p %s/ref && cp %s/*.json %s/*.safetensors %s/ref/ && "
             "%s examples/record_trace.py %s %s --tensors-every %d --precision %s && "
             "%s examples/record_trace.py %s %s --tensors-every %d --precision fp64",
             dir, dir, dir, dir, py, dir, trace, every, prec, py, dir, ref, every);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    const char *ok[] = {"--against", trace, "--engines", "scalar", "--batch", "2", "--quiet", NULL};
    ThRun r0 = compare_args(ok);
    cr_assert_eq(r0.status, 0, "the recorded run passes:\n%s%s", r0.out, r0.err);
    // an fp32 record's PASS says how little it holds after step 1; fp64's says nothing of the kind
    cr_expect_eq(strstr(r0.out, "catch gross errors only; lockstep (exec: or plugin:) checks every step") != NULL,
                 precision_from_name(prec) == PREC_FP32, "%s:\n%s", prec, r0.out);
    th_run_free(&r0);
    const PrecisionRules *r = rules_for(p);
    // the loss is held to free mode's band; a tensor to the record's
    // calibrated bound in units of the tensor's RMS (fp32 from step 2 on),
    // fp32's step 1 to lockstep's fixed table per element
    struct {
        const char *what;
        int step;
        Quantity q;
    } cases[] = {{"loss", 5, Q_LOSS},   {"grads/layer0.attn_wv", 3, Q_GRADS}, {"params/wte", 6, Q_PARAMS},
                 {"logits", 3, Q_LOGITS}, {"grads/lm_head", 1, Q_GRADS},         {"params/wpe", 1, Q_PARAMS},
                 {"logits", 1, Q_LOGITS}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int side = 0; side < 2; side++) {
            char mode[128];
            Tolerance t = r->fixed[cases[i].q];
            if (p == PREC_FP64 || cases[i].step > 1)   // a record's own trajectory
                t = (Tolerance){.scaled = (p == PREC_FP64 ? AGAINST_FP64_SCALED : AGAINST_FP32_SCALED)[cases[i].q]};
            if (cases[i].q == Q_LOSS) snprintf(mode, sizeof mode, "add:%.17g", r->drift_tol);
            else if (t.scaled > 0) snprintf(mode, sizeof mode, "scaled:%.17g", t.scaled);
            else snprintf(mode, sizeof mode, "elem:%.17g:%.17g", t.atol, t.rtol);
            snprintf(cmd, sizeof cmd, "%s tests/plant_record.py %s %s %s %s %d %.17g %s", py, trace, ref, bad,
                     cases[i].what, cases[i].step, side ? OUTSIDE : INSIDE, mode);
            cr_assert_eq(system(cmd), 0, "%s", cmd);
            const char *args[] = {"--against", bad, "--engines", "scalar", "--batch", "2", "--quiet", NULL};
            ThRun x = compare_args(args);
            cr_expect_eq(x.status, side, "--against %s: %s at step %d, %g of its bound (%s): exit %d\n%s%s", prec,
                         cases[i].what, cases[i].step, side ? OUTSIDE : INSIDE, mode, x.status, x.out, x.err);
            if (side && x.status == 1) {
                char want[96];
                snprintf(want, sizeof want, "first failure at step %d", cases[i].step);
                cr_expect(strstr(x.out, want), "%s: %s\n%s", cases[i].what, want, x.out);
            }
            th_run_free(&x);
        }
}

Test(bounds, against_fp64, .timeout = 120) { against_both_sides("fp64"); }
Test(bounds, against_fp32, .timeout = 120) { against_both_sides("fp32"); }

// ---------------------------------------------------------------------------
// ReLU gate matching: a flip is matched (the candidate's gradients compared
// with the fp64 model under its own gates) only when both inputs lie within
// --relu-margin of 0. Planted as reported inputs +d (REF) and -d (CAND) at the
// first unit while both engines computed with the same gate: within the
// margin the flip is matched and the candidate's gradients, which do not
// follow the gate it reported, fail; just beyond it the flip is not matched
// and the run passes, the trace saying so.
static void relu_margin_both_sides(Precision p) {
    const char *prec = precision_name(p);
    const double margin = rules_for(p)->relu_margin;
    for (int side = 0; side < 2; side++) {
        char spec[96];
        snprintf(spec, sizeof spec, "relu@%d=%.17g", STEP, margin * (side ? OUTSIDE : INSIDE));
        const char *tr = th_temp_path("relu.json");
        const char *args[] = {"--engines", "scalar,cpu", "--precision", prec, "--steps", "3", "--batch", "2",
                              "--quiet", "--trace", tr, "--plant", spec, NULL};
        ThRun r = compare_args(args);
        cr_expect_eq(r.status, side ? 0 : 1, "%s --plant %s (margin %g): exit %d\n%s%s", prec, spec, margin, r.status,
                     r.out, r.err);
        cJSON *t = th_load_json(tr);
        const cJSON *g = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(t, "steps"), STEP - 1),
                                             "gate_flips");
        cr_assert(cJSON_IsObject(g), "%s: step %d records its gate flips", spec, STEP);
        cr_expect_eq(cJSON_IsTrue(cJSON_GetObjectItem(g, "matched")), !side, "%s: matched %s", spec,
                     side ? "no" : "yes");
        if (side) cr_expect_eq(cJSON_GetObjectItem(g, "beyond_margin")->valueint, 1);
        cJSON_Delete(t);
        th_run_free(&r);
    }
}

Test(bounds, relu_margin_fp32, .timeout = 60) { relu_margin_both_sides(PREC_FP32); }
Test(bounds, relu_margin_bf16, .timeout = 60) { relu_margin_both_sides(PREC_BF16); }
Test(bounds, relu_margin_fp64, .timeout = 60) { relu_margin_both_sides(PREC_FP64); }
Test(bounds, relu_margin_fp16, .timeout = 60) { relu_margin_both_sides(PREC_FP16); }
Test(bounds, relu_margin_tf32, .timeout = 60) { relu_margin_both_sides(PREC_TF32); }
