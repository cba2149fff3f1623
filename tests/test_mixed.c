// compare with the mixed-precision recipes (docs/mixed_precision.md): the
// CPU engine's emulation passes lockstep against the fp64 oracle in bf16,
// fp16 and tf32; a candidate that truncates instead of rounding to nearest
// is caught at step 1; fp16's skipped (overflowed) steps are compared as
// skipped, counted and limited; the new flags' bad uses are refused.
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define COMPARE(...) th_tool("compare", "--data", th_names_path(), __VA_ARGS__, NULL)

static const char *const PRECS[3] = {"bf16", "fp16", "tf32"};

Test(mixed, lockstep_passes_in_each_precision, .timeout = 120) {
    for (int k = 0; k < 3; k++) {
        ThRun r = COMPARE("--engines", "scalar,cpu", "--precision", PRECS[k], "--steps", "20", "--batch", "3",
                          "--n-layer", "2", "--samples", "3", "--quiet");
        cr_expect_eq(r.status, 0, "%s: exit %d\n%s%s", PRECS[k], r.status, r.out, r.err);
        char want[64];
        snprintf(want, sizeof want, "vs cpu (%s), 20 of 20 steps run", PRECS[k]);
        cr_expect(strstr(r.out, want) != NULL, "%s: %s\n%s", PRECS[k], want, r.out);
        cr_expect(strstr(r.out, "ratio rule (vs the noise reference: the cpu engine's emulation of the recipe") != NULL, "%s: the rule\n%s", PRECS[k],
                  r.out);
        th_run_free(&r);
    }
}

// A candidate whose rounding truncates (what a kernel that converts with
// a plain cast of the top bits does) against the emulation that rounds to
// nearest even: its products are biased toward zero. The logits' error (about
// 3x the emulation's) stays under their floor (the median noise), but the
// attention's inputs are off by 13-17x the noise at step 1 (bf16: q 0.39 of
// its RMS, allowed 0.11): caught at step 1, localized to a forward op.
Test(mixed, truncation_instead_of_rounding_is_caught_at_step_1, .timeout = 60) {
    for (int k = 0; k < 3; k++) {
        ThRun r = COMPARE("--engines", "scalar,cpu", "--precision", PRECS[k], "--steps", "4", "--batch", "3",
                          "--inject-fault", "lowp-truncate", "--quiet");
        cr_expect_eq(r.status, 1, "%s: exit %d\n%s%s", PRECS[k], r.status, r.out, r.err);
        cr_expect(strstr(r.out, "FAIL at step 1: ") != NULL, "%s: caught at step 1:\n%s", PRECS[k], r.out);
        cr_expect(strstr(r.out, "first divergence: ") && strstr(r.out, ", forward: its output is off"),
                  "%s: localized to a forward op:\n%s", PRECS[k], r.out);
        char want[64];
        snprintf(want, sizeof want, "the %s CPU engine with its sums in", PRECS[k]);
        cr_expect(strstr(r.out, want) != NULL, "%s: the ratio names its noise reference, the emulation:\n%s",
                  PRECS[k], r.out);
        th_run_free(&r);
    }
}

// At an initial loss scale of 2^24 the scaled gradients overflow fp16 until
// the scale has halved to 2^19: steps 1-4 and 7 are skipped (measured). A
// skipped step is compared as one (forward as usual; no update at all),
// printed, counted in the summary and the trace; more than --max-excused
// of them fail the run.
Test(mixed, fp16_skipped_steps_are_compared_counted_and_limited, .timeout = 60) {
    char tr[4300];
    snprintf(tr, sizeof tr, "%s/fp16.json", th_temp_dir());
    ThRun r = COMPARE("--engines", "scalar,cpu", "--precision", "fp16", "--loss-scale", "16777216", "--steps", "10",
                      "--batch", "3", "--max-excused", "5", "--quiet", "--trace", tr);
    cr_expect_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "step    1 | ") && strstr(r.out, "(update skipped: fp16 gradient overflow at loss scale "
                                                         "1.67772e+07)"),
              "the skipped step is printed, with --quiet too:\n%s", r.out);
    cr_expect(strstr(r.out, "skipped updates (fp16 loss scaling: a gradient overflowed): 5 (allowed 5), the first at "
                            "step 1\n") != NULL,
              "the summary counts them:\n%s", r.out);
    th_run_free(&r);
    cJSON *root = th_load_json(tr);
    cJSON *sk = cJSON_GetObjectItem(root, "skipped_steps");
    cr_assert(sk, "the trace has skipped_steps");
    cr_expect_eq(cJSON_GetObjectItem(sk, "count")->valueint, 5);
    cr_expect_eq(cJSON_GetObjectItem(sk, "first")->valueint, 1);
    cJSON *s1 = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "steps"), 0);
    cr_expect(cJSON_GetObjectItem(s1, "skipped_loss_scale") != NULL, "step 1 is marked skipped in the trace");
    cJSON_Delete(root);
    th_expect_status(th_tool("trace", "inspect", tr, NULL), 0,
                     "skipped updates (fp16 loss scaling, a gradient overflowed): 5 (allowed 5), the first at step 1",
                     "trace inspect shows the skipped steps");
    // the default limit, max(3, 1% of the steps), is exceeded
    ThRun many = COMPARE("--engines", "scalar,cpu", "--precision", "fp16", "--loss-scale", "16777216", "--steps", "10",
                         "--batch", "3", "--quiet");
    cr_expect_eq(many.status, 1, "exit %d\n%s", many.status, many.out);
    cr_expect(strstr(many.out, "5 (allowed 3), the first at step 1: too many, the run fails") != NULL, "%s", many.out);
    th_run_free(&many);
    // at the default scale (2^16) nothing overflows here
    ThRun dflt = COMPARE("--engines", "scalar,cpu", "--precision", "fp16", "--steps", "10", "--batch", "3", "--quiet");
    cr_expect_eq(dflt.status, 0, "%s", dflt.out);
    cr_expect(strstr(dflt.out, "a gradient overflowed): 0 (allowed 3)") != NULL, "%s", dflt.out);
    th_run_free(&dflt);
}

Test(mixed, free_running_stays_in_the_band, .timeout = 60) {
    ThRun r = COMPARE("--engines", "scalar,cpu", "--precision", "bf16", "--mode", "free", "--steps", "100",
                      "--quiet");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "PASS: free-running, scalar (fp64) vs cpu (bf16)") != NULL, "%s", r.out);
    th_run_free(&r);
}

Test(mixed, bad_usage_is_refused) {
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--loss-scale", "1024"), "only fp16", "a scale without fp16");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--precision", "fp16", "--loss-scale", "1000"), "power of two",
                    "a scale that is not a power of two");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--precision", "fp16", "--loss-scale", "0x1p101"),
                    "power of two", "a scale too large");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--precision", "fp16", "--bench"), "no back-to-back timed run",
                    "bench in fp16");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--precision", "bf16", "--rtol", "1e-2"), "both --rtol and --atol",
                    "half a fixed tolerance");
    th_expect_usage(COMPARE("--engines", "cpu,scalar", "--precision", "tf32"), "needs an fp64 reference",
                    "a low-precision reference");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--precision", "fp32", "--inject-fault", "lowp-truncate"),
                    "only the mixed precisions", "a rounding fault in fp32");
    th_expect_usage(COMPARE("--engines", "scalar", "--bench", "--precision", "bf16"), "fp64 only", "bf16 and scalar");
}

// fp16's loss scale and its skipped steps cross the plugin ABI
// (mg_config.loss_scale, mg_engine_abi.step_skipped): the CPU engine as a
// plugin, from 2^24, skips and reports the steps the built-in one does.
Test(mixed, fp16_skips_cross_the_plugin_abi) {
    char so[4300];
    snprintf(so, sizeof so, "scalar,plugin:%s/libmicrogpt_example_engine.so", th_build_dir());
    ThRun r = COMPARE("--engines", so, "--precision", "fp16", "--loss-scale", "16777216", "--steps", "8", "--batch",
                      "3", "--max-excused", "5", "--quiet");
    cr_expect_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "skipped updates (fp16 loss scaling: a gradient overflowed): 5 (allowed 5), the first at "
                            "step 1") != NULL, "the plugin's skips are not reported:\n%s", r.out);
    th_run_free(&r);
}

// The CUDA engine runs bf16, fp16 and tf32 (the layered path): on a machine
// without a GPU none is refused as not implemented, each gets as far as the
// GPU check; where there is a GPU, each runs and passes.
Test(mixed, cuda_takes_the_mixed_precisions) {
    char so[4300];
    snprintf(so, sizeof so, "%s/libmicrogpt_cuda_engine.so", th_build_dir());
    if (access(so, F_OK)) {
        cr_log_info("no CUDA engine in this build (%s): nothing to check", so);
        return;
    }
    for (int k = 0; k < 3; k++) {
        ThRun r = COMPARE("--engines", "scalar,cuda", "--precision", PRECS[k], "--steps", "2");
        cr_expect(strstr(r.out, "not implemented on CUDA") == NULL && strstr(r.err, "not implemented on CUDA") == NULL,
                  "%s on cuda is refused as not implemented:\n%s%s", PRECS[k], r.out, r.err);
        cr_expect(r.status == 0 || (r.status == 2 && strstr(r.err, "no usable GPU") != NULL),
                  "%s on cuda: exit %d, neither a passing run nor the missing GPU:\n%s%s", PRECS[k], r.status, r.out,
                  r.err);
        th_run_free(&r);
    }
}
