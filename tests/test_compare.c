// build/compare end to end: the engines agree where they should, every
// injected fault is caught and named, bad usage is refused, traces hold the
// verdict.
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "helpers.h"

// build/compare on data/names.txt with the given flags
#define COMPARE(...) th_tool("compare", "--data", th_names_path(), __VA_ARGS__, NULL)


static void expect_pass(ThRun r, const char *what) {
    cr_expect_eq(r.status, 0, "%s: exit %d\n%s%s", what, r.status, r.out, r.err);
    cr_expect(strstr(r.out, "PASS") != NULL, "%s: no PASS line", what);
    th_run_free(&r);
}

Test(compare, scalar_and_cpu_agree_in_fp64_and_fp32, .timeout = 120) {
    expect_pass(COMPARE("--engines", "scalar,cpu", "--steps", "25", "--quiet"), "fp64");
    expect_pass(COMPARE("--engines", "scalar,cpu", "--steps", "25", "--precision", "fp32", "--quiet"), "fp32");
    expect_pass(COMPARE("--engines", "scalar,cpu", "--steps", "10", "--batch", "5", "--n-kv-head", "2", "--n-layer",
                        "2", "--quiet"), "batch 5, GQA, 2 layers");
    expect_pass(COMPARE("--engines", "scalar,cpu", "--steps", "25", "--mode", "free", "--quiet"), "free-running");
}

// Free mode below fp64 says what its band can catch: a PASS there must not
// read as lockstep's. fp64's band (1e-9) catches subtle bugs: no note.
Test(compare, free_mode_below_fp64_says_it_catches_gross_errors_only, .timeout = 120) {
    ThRun r = COMPARE("--engines", "cpu@fp64,cpu", "--steps", "20", "--mode", "free", "--precision", "fp32", "--quiet",
                      "--inject-fault", "grad-sign");
    cr_expect_eq(r.status, 0, "a flipped gradient sign passes free mode's fp32 band at 20 steps:\n%s", r.out);
    cr_expect(strstr(r.out, "note: in fp32 two correct trainings part ways, so this band catches gross errors only") &&
                  strstr(r.out, "lockstep checks every step"),
              "%s", r.out);
    th_run_free(&r);
    r = COMPARE("--engines", "cpu@fp64,cpu", "--steps", "20", "--mode", "free", "--quiet", "--inject-fault",
                "grad-sign");
    cr_expect_eq(r.status, 1, "fp64's band catches the flipped gradient sign:\n%s", r.out);
    cr_expect(strstr(r.out, "gross errors only") == NULL, "%s", r.out);
    th_run_free(&r);
    r = COMPARE("--engines", "cpu@fp64,cpu", "--steps", "20", "--mode", "free", "--quiet");
    cr_expect_eq(r.status, 0, "%s", r.out);
    cr_expect(strstr(r.out, "gross errors only") == NULL, "no note in fp64:\n%s", r.out);
    th_run_free(&r);
}

// Determinism: the same comparison twice gives bit-identical traces (an
// engine against itself, `--engines cpu,cpu`, is refused: it proves nothing).
Test(compare, the_same_run_twice_is_bit_identical) {
    char a[4200], b[4200];
    snprintf(a, sizeof a, "%s/det-a.json", th_temp_dir());
    snprintf(b, sizeof b, "%s/det-b.json", th_temp_dir());
    expect_pass(COMPARE("--engines", "scalar,cpu", "--steps", "5", "--quiet", "--trace", a), "first run");
    expect_pass(COMPARE("--engines", "scalar,cpu", "--steps", "5", "--quiet", "--trace", b), "second run");
    ThRun r = th_tool("trace", "diff", a, b, NULL);
    cr_expect_eq(r.status, 0, "trace diff: %s", r.out);
    th_run_free(&r);
}

// The fp32 engine must fail the fp64 tolerances: they are tight enough to see
// a single float32 rounding.
Test(compare, fp64_tolerances_reject_fp32_arithmetic) {
    ThRun r = COMPARE("--engines", "scalar,cpu", "--steps", "2", "--precision", "fp32", "--rtol", "1e-12",
                      "--atol", "1e-15", "--quiet");
    cr_expect_eq(r.status, 1, "%s", r.out);
    th_run_free(&r);
}

static void expect_caught(const char *fault, const char *needle) {
    ThRun r = COMPARE("--engines", "scalar,cpu", "--steps", "3", "--inject-fault", fault);
    cr_expect_eq(r.status, 1, "%s: exit %d (want 1)\n%s", fault, r.status, r.out);
    const char *line = strstr(r.out, "FAIL at step");
    cr_assert(line, "%s: no failure reported:\n%s", fault, r.out);
    char first[256];
    snprintf(first, sizeof first, "%.*s", (int)strcspn(line, "\n"), line);
    cr_expect(strstr(first, needle) != NULL, "%s: the failure should name '%s': %s", fault, needle, first);
    th_run_free(&r);
}

Test(compare, every_injected_fault_is_caught_and_named, .timeout = 60) {
    expect_caught("attn-scale", "logits[");           // the forward pass changes
    expect_caught("causal-mask", "logits[");
    expect_caught("rmsnorm-bwd", "the gradient of");  // only the backward changes
    expect_caught("grad-sign", "the gradient of lm_head[1,2]");
    expect_caught("adam-bias", "the updated parameter");
}

Test(compare, trace_records_the_verdict_and_first_failure) {
    char tr[4300];
    snprintf(tr, sizeof tr, "%s/cmp.json", th_temp_dir());
    ThRun r = COMPARE("--engines", "scalar,cpu", "--steps", "3", "--inject-fault", "grad-sign", "--trace", tr);
    cr_assert_eq(r.status, 1);
    char *text = th_read_file(tr, NULL);
    cJSON *root = cJSON_Parse(text);
    cr_assert(root, "the trace is JSON");
    cr_expect_str_eq(cJSON_GetObjectItem(root, "kind")->valuestring, "compare");
    cr_expect_str_eq(cJSON_GetObjectItem(root, "verdict")->valuestring, "fail");
    cJSON *ff = cJSON_GetObjectItem(root, "first_failure");
    cr_assert(cJSON_IsObject(ff));
    cr_expect_str_eq(cJSON_GetObjectItem(ff, "tensor")->valuestring, "lm_head");
    cr_expect_str_eq(cJSON_GetObjectItem(ff, "quantity")->valuestring, "grads");
    cr_expect_eq(cJSON_GetObjectItem(ff, "step")->valueint, 1);
    cJSON *steps = cJSON_GetObjectItem(root, "steps");
    cr_expect_eq(cJSON_GetArraySize(steps), 1, "stopped at the failing step");
    int grad = 0, param = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(cJSON_GetArrayItem(steps, 0), "errors")) {
        const char *q = cJSON_GetObjectItem(e, "quantity")->valuestring, *tn = cJSON_GetObjectItem(e, "tensor")->valuestring;
        grad |= !strcmp(q, "grads") && !strcmp(tn, "lm_head");
        param |= !strcmp(q, "params") && !strcmp(tn, "layer0.mlp_fc2");
    }
    cr_expect(grad && param, "per-tensor errors for gradients and parameters");
    cJSON_Delete(root);
    free(text);
    th_run_free(&r);
}

Test(compare, keep_going_runs_every_step) {
    ThRun r = COMPARE("--engines", "scalar,cpu", "--steps", "4", "--inject-fault", "adam-bias", "--keep-going");
    cr_expect_eq(r.status, 1);
    cr_expect(strstr(r.out, "step    4 |") != NULL, "all 4 steps ran:\n%s", r.out);
    th_run_free(&r);
}

Test(compare, bad_usage_is_refused) {
    th_expect_usage(COMPARE("--steps", "3"), "--engines", "no engines");
    th_expect_usage(COMPARE("--engines", "scalar,gpu"), "unknown engine 'gpu'", "unknown engine");
    th_expect_usage(COMPARE("--engines", "scalar"), "two engines", "one engine");
    th_expect_usage(COMPARE("--engines", "scalar", "--bench", "--precision", "fp32"), "fp64 only",
                 "fp32 with no tensor engine");
    th_expect_usage(COMPARE("--engines", "cpu,cpu"), "'cpu' is named twice", "an engine against itself");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--batch", "100000", "--n-embd", "1024", "--n-head", "1"),
                 "not enough memory for the two engines", "settings that cannot fit");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--every", "2", "--every=3"), "--every is given twice",
                 "a repeated flag");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--keep-going=yes"), "takes no value", "a switch with a value");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--mode", "free", "--keep-going"), "only applies to --mode lockstep",
                 "a lockstep flag in free mode");
    th_expect_usage(COMPARE("--engines", "cpu,scalar", "--inject-fault", "grad-sign"), "candidate",
                 "a fault in the scalar engine");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--inject-fault", "typo"), "unknown fault", "unknown fault");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--precision", "fp8"), "fp8", "unknown precision");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--mode", "sideways"), "sideways", "unknown mode");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--rtol", "-1"), "--rtol", "negative tolerance");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--n-embd", "10"), "not divisible", "impossible model");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--steps", "0"), "--steps", "no steps");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--bench", "--mode", "free"), "--mode does not apply to --bench",
                 "bench and free");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--sizes", "sweep"), "only applies to --bench", "bench flag alone");
    // free mode samples nothing: the sampling flags would be silently ignored
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--mode", "free", "--samples", "3"),
                    "--samples only applies to --mode lockstep: --mode free compares the loss curves and samples "
                    "no names", "--samples in free mode");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--mode", "free", "--temperature", "0.7"),
                    "--temperature only applies to --mode lockstep", "--temperature in free mode");
}

// --trace - and --timeline - (lockstep and free): stdout carries the JSON
// alone, the run's report goes to stderr (`--trace - | jq`).
Test(compare, trace_and_timeline_on_stdout_alone) {
    cJSON *j = th_stdout_json(COMPARE("--engines", "scalar,cpu", "--steps", "2", "--trace", "-"), 0, "PASS: lockstep",
                              "--trace -");
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "kind")), "compare");
    cJSON_Delete(j);
    j = th_stdout_json(COMPARE("--engines", "scalar,cpu", "--steps", "2", "--mode", "free", "--timeline", "-"), 0,
                       "PASS: free", "--mode free --timeline -");
    cr_expect(cJSON_GetArraySize(cJSON_GetObjectItem(j, "traceEvents")) > 0);
    cJSON_Delete(j);
    j = th_stdout_json(COMPARE("--engines", "scalar,cpu", "--steps", "2", "--inject-fault", "grad-sign", "--trace",
                               "-"), 1, "FAIL at step 1", "a failing run's --trace -");
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "verdict")), "fail");
    cJSON_Delete(j);
}

// Without a GPU, asking for the CUDA engine is a usage error that says so.
Test(compare, cuda_without_a_gpu_says_so) {
    ThRun r = COMPARE("--engines", "scalar,cuda", "--steps", "2");
    if (r.status == 0) {
        cr_log_info("a GPU is present: the CUDA engine ran");
    } else {
        cr_expect_eq(r.status, 2, "%s", r.err);
        cr_expect(strstr(r.err, "BACKEND=cpu") != NULL, "the message points to the CPU backend: %s", r.err);
    }
    th_run_free(&r);
}

Test(compare, flags_take_equals) {
    ThRun r = COMPARE("--engines=scalar,cpu", "--steps=2", "--quiet", "--mode=free");
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "PASS: free"), "%s", r.out);
    th_run_free(&r);
}

Test(compare, unwritable_trace_leaves_nothing) {
    ThRun r = COMPARE("--engines", "scalar,cpu", "--steps", "2", "--trace", "/nonexistent/x.json");
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "/nonexistent/x.json") != NULL, "%s", r.err);
    th_run_free(&r);
}

// --timeline: each engine's steps on its own track.
Test(compare, timeline_has_a_track_per_engine) {
    char tl[4200];
    snprintf(tl, sizeof tl, "%s/cmp-timeline.json", th_temp_dir());
    expect_pass(COMPARE("--engines", "scalar,cpu", "--steps", "3", "--quiet", "--timeline", tl), "with a timeline");
    char *text = th_read_file(tl, NULL);
    int steps[2] = {0, 0};
    for (const char *p = strstr(text, "\"name\":\"step\""); p; p = strstr(p + 1, "\"name\":\"step\"")) {
        const char *tid = strstr(p, "\"tid\":");
        cr_assert(tid);
        steps[tid[6] == '1']++;
    }
    cr_expect(steps[0] == 3 && steps[1] == 3, "step events: %d and %d", steps[0], steps[1]);
    cr_expect(strstr(text, "\"name\":\"scalar\"") && strstr(text, "\"name\":\"cpu\""), "track names: %s", text);
    cr_expect(!strstr(text, "ratio rule"), "no third track in fp64: %s", text);
    // inside each step, the engine's phases: the scalar engine's four, the cpu engine's four
    static const char *phases[] = {"forward", "order (DFS)", "backward", "adam", "loss"};
    for (size_t i = 0; i < sizeof phases / sizeof *phases; i++) {
        char want[64];
        snprintf(want, sizeof want, "\"name\":\"%s\"", phases[i]);
        int count = 0;
        for (const char *p = strstr(text, want); p; p = strstr(p + 1, want)) count++;
        const int expect = !strcmp(phases[i], "forward") || !strcmp(phases[i], "backward") || !strcmp(phases[i], "adam")
                               ? 6 : 3;
        cr_expect_eq(count, expect, "phase %s: %d events, want %d", phases[i], count, expect);
    }
    free(text);
    // fp32 lockstep runs the noise reference too (the ratio rule): its track is named
    expect_pass(COMPARE("--engines", "scalar,cpu", "--steps", "2", "--precision", "fp32", "--quiet", "--timeline", tl),
                "fp32 with a timeline");
    text = th_read_file(tl, NULL);
    cr_expect(strstr(text, "\"tid\":2") && strstr(text, "ratio rule's reference"), "the third track: %s", text);
    free(text);
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--bench", "--timeline", tl), "--timeline applies",
                 "a timeline of the bench");
}
