// Lockstep's state checks: the Adam moments, the sampled names, the fp32
// error-ratio rule (and the hole in the fixed rule it closes), excused-step
// accounting and the per-step errors list of the trace.
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define COMPARE(...) th_tool("compare", "--data", th_names_path(), __VA_ARGS__, NULL)

// An fp32 engine that drops gradients below 1e-6 passes the fixed rule
// (atol 1e-6, and the update is checked against Adam on its own gradients)
// but not the ratio rule: each dropped element is an error of ~1e-5 of its
// tensor's RMS, where fp32 rounding alone gives ~1e-7.
Test(lockstep, ratio_rule_catches_dropped_small_fp32_gradients, .timeout = 60) {
    ThRun fixed = COMPARE("--engines", "scalar,cpu", "--precision", "fp32", "--steps", "20", "--tolerance", "fixed",
                          "--inject-fault", "small-grads", "--quiet");
    cr_expect_eq(fixed.status, 0, "the fixed rule misses this bug (the reason for the ratio rule):\n%s", fixed.out);
    th_run_free(&fixed);
    ThRun r = COMPARE("--engines", "scalar,cpu", "--precision", "fp32", "--steps", "20", "--inject-fault",
                      "small-grads", "--quiet");
    cr_expect_eq(r.status, 1, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "ratio rule") != NULL, "the default in fp32 is the ratio rule:\n%s", r.out);
    const char *fail = strstr(r.out, "FAIL at step 1: the gradient of");
    cr_expect(fail != NULL, "caught at step 1 in a gradient:\n%s", r.out);
    cr_expect(strstr(r.out, "cpu = 0\n") != NULL, "the dropped element is shown:\n%s", r.out);
    th_run_free(&r);
    // and the sound fp32 engine passes the ratio rule over a longer run
    ThRun ok = COMPARE("--engines", "scalar,cpu", "--precision", "fp32", "--steps", "100", "--batch", "4",
                       "--n-layer", "2", "--quiet");
    cr_expect_eq(ok.status, 0, "%s", ok.out);
    th_run_free(&ok);
}

Test(lockstep, trace_lists_every_quantity_per_tensor_and_the_rule, .timeout = 60) {
    const char *tr = th_temp_path("ratio.json");
    ThRun r = COMPARE("--engines", "scalar,cpu", "--precision", "fp32", "--steps", "3", "--samples", "3", "--trace",
                      tr, "--quiet");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    th_run_free(&r);
    cJSON *root = th_load_json(tr);
    cr_expect_str_eq(cJSON_GetObjectItem(root, "tolerance_rule")->valuestring, "ratio");
    cr_expect_eq(cJSON_GetObjectItem(root, "steps_run")->valueint, 3);
    cJSON *step = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "steps"), 0);
    cr_assert(!cJSON_GetObjectItem(step, "max_err") && !cJSON_GetObjectItem(step, "max_rel"),
              "the older per-step maps would hold the errors' max_abs and max_rel a second time");
    cJSON *errors = cJSON_GetObjectItem(step, "errors");
    cr_assert(cJSON_IsArray(errors));
    int seen[6] = {0};
    static const char *const qs[6] = {"loss", "logits", "grads", "params", "m", "v"};
    cJSON *e;
    cJSON_ArrayForEach(e, errors) {
        const char *q = cJSON_GetObjectItem(e, "quantity")->valuestring;
        for (int i = 0; i < 6; i++)
            if (!strcmp(q, qs[i])) seen[i]++;
        cr_expect(cJSON_GetObjectItem(e, "tensor") && cJSON_GetObjectItem(e, "max_abs") &&
                  cJSON_GetObjectItem(e, "max_rel") && cJSON_GetObjectItem(e, "n_bad") &&
                  cJSON_GetObjectItem(e, "err_rms") && cJSON_GetObjectItem(e, "ref_err_rms") &&
                  cJSON_GetObjectItem(e, "bound") && cJSON_GetObjectItem(e, "rms"), "every field of an errors entry");
    }
    cr_expect_eq(seen[0], 1);
    cr_expect_eq(seen[1], 1);
    for (int i = 2; i < 6; i++) cr_expect_eq(seen[i], 9, "%s: one entry per tensor (9 with 1 layer)", qs[i]);
    cJSON *ex = cJSON_GetObjectItem(root, "excused_steps");
    cr_expect_eq(cJSON_GetObjectItem(ex, "count")->valueint, 0);
    cJSON *gf = cJSON_GetObjectItem(root, "gate_flips");
    cr_assert(cJSON_IsObject(gf), "the trace says whether ReLU gates were matched");
    cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(gf, "matching")), "scalar and cpu report their ReLU inputs");
    cJSON *s = cJSON_GetObjectItem(root, "sample_check");
    cr_assert(s, "the samples are in the trace");
    cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(s, "ok")));
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(s, "names")), 3);
    cJSON *mx = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "max_errors"), "grads");
    cr_expect(cJSON_GetObjectItem(mx, "rel_tensor") && cJSON_GetObjectItem(mx, "rel_step"),
              "the relative maximum names its own tensor and step");
    cJSON_Delete(root);
    ThRun in = th_tool("trace", "inspect", tr, NULL);
    cr_expect_eq(in.status, 0, "the trace tool reads the trace: %s%s", in.out, in.err);
    th_run_free(&in);
}

Test(lockstep, fp64_samples_identical_and_summary_honest, .timeout = 60) {
    ThRun r = COMPARE("--engines", "scalar,cpu", "--steps", "5", "--samples", "8", "--quiet", "--n-embd", "12",
                      "--n-head", "2", "--batch", "3");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "samples: 8 names, identical") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "5 of 5 steps run") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "ReLU gates: none flipped against scalar's") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "  m ") && strstr(r.out, "  v "), "the moments are in the summary:\n%s", r.out);
    th_run_free(&r);
    // a run stopped by a failure says how many steps it ran
    ThRun f = COMPARE("--engines", "scalar,cpu", "--steps", "5", "--inject-fault", "adam-bias", "--quiet");
    cr_expect_eq(f.status, 1);
    cr_expect(strstr(f.out, "1 of 5 steps run") != NULL, "%s", f.out);
    th_run_free(&f);
}

Test(lockstep, usage_errors) {
    static const char *const bad[][6] = {
        {"--tolerance", "ratio", NULL},                          // fp64 has no ratio rule
        {"--tolerance", "loose", NULL},
        {"--tolerance", NULL},
        {"--max-excused", "-1", NULL},
        {"--precision", "fp32", "--tolerance", "ratio", "--rtol", "1e-3"},
        {"--mode", "free", "--tolerance", "fixed", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[16] = {"--data", th_names_path(), "--engines", "scalar,cpu", "--steps", "1"};
        int n = 6;
        for (int j = 0; j < 6 && bad[i][j]; j++) args[n++] = bad[i][j];
        args[n] = NULL;
        ThRun r = th_tool_argv("compare", args);
        cr_expect_eq(r.status, 2, "case %zu: exit %d\n%s", i, r.status, r.err);
        cr_expect(strchr(r.err, '\n') == r.err + strlen(r.err) - 1, "case %zu: one line: %s", i, r.err);
        th_run_free(&r);
    }
}

// scripts/parity.sh: argument errors give one message and exit 2 (no shell
// error), and an engine that cannot run stops the suite with one message.
static ThRun parity(const char *a, const char *b) {
    char *const argv[] = {"/bin/bash", "scripts/parity.sh", (char *)a, (char *)b, NULL};
    return th_run(argv);
}

Test(lockstep, parity_script_usage, .timeout = 60) {
    static const char *const bad[][2] = {{"--backend", NULL}, {"--backend", "tpu"}, {"--steps", "x"},
                                         {"--steps", "0"}, {"--bogus", NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ThRun r = parity(bad[i][0], bad[i][1]);
        cr_expect_eq(r.status, 2, "%s %s: exit %d\n%s", bad[i][0], bad[i][1] ? bad[i][1] : "", r.status, r.err);
        cr_expect(strncmp(r.err, "parity: ", 8) == 0 && strchr(r.err, '\n') == r.err + strlen(r.err) - 1,
                  "one message: %s", r.err);
        cr_expect(strstr(r.err, "unbound") == NULL, "%s", r.err);
        th_run_free(&r);
    }
}

Test(lockstep, parity_stops_at_an_unavailable_engine, .timeout = 60) {
    char out[4300];
    snprintf(out, sizeof out, "%s/parity-cuda", th_temp_dir());
    char *const argv[] = {"/bin/bash", "scripts/parity.sh", "--backend", "cuda", "--steps", "1", "--out", out,
                          "--build", (char *)th_build_dir(), NULL};
    ThRun r = th_run(argv);
    if (r.status == 0) {   // a machine with a GPU: the suite ran
        cr_log_info("cuda is available here: the suite ran");
    } else {
        cr_expect_eq(r.status, 2, "exit %d\n%s%s", r.status, r.out, r.err);
        cr_expect(strchr(r.err, '\n') == r.err + strlen(r.err) - 1, "one message: %s", r.err);
        cr_expect(strstr(r.out, "parity suite") == NULL, "no summary after the stop:\n%s", r.out);
    }
    th_run_free(&r);
}
