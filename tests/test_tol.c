// --tol QUANTITY=RTOL[:ATOL]: one quantity's bound loosened on top of the
// rule in force, the others left as they are; tested from both sides with
// compare's --plant (an error of DELTA x the tensor's RMS in one element).
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"

#define COMPARE(...) th_tool("compare", "--data", th_names_path(), __VA_ARGS__, NULL)

// fp64, fixed rule: the loss's bound is scaled x |loss| (+ rtol x |loss| with
// --tol loss=RTOL); a planted loss error of 0.9 RTOL passes, 1.1 RTOL fails.
Test(tol, the_loss_bound_moves_by_rtol_and_nothing_else, .timeout = 60) {
    th_expect_status(COMPARE("--engines", "scalar,cpu", "--steps", "3", "--quiet", "--plant", "loss@2=0.9e-6"), 1,
               "FAIL at step 2: the loss differs", "no --tol: an error of 9e-7 of the loss fails");
    th_expect_status(COMPARE("--engines", "scalar,cpu", "--steps", "3", "--quiet", "--tol", "loss=1e-6", "--plant",
                       "loss@2=0.9e-6"),
               0, "PASS", "--tol loss=1e-6: 0.9e-6 is inside");
    th_expect_status(COMPARE("--engines", "scalar,cpu", "--steps", "3", "--quiet", "--tol", "loss=1e-6", "--plant",
                       "loss@2=1.1e-6"),
               1, "FAIL at step 2: the loss differs", "--tol loss=1e-6: 1.1e-6 is outside");
    // the gradients keep their own bound
    th_expect_status(COMPARE("--engines", "scalar,cpu", "--steps", "3", "--quiet", "--tol", "loss=1e-6", "--plant",
                       "grads:wte@2=1e-9"),
               1, "FAIL at step 2: the gradient of wte", "--tol loss leaves the gradients' bound alone");
    // moments: both m and v
    th_expect_status(COMPARE("--engines", "scalar,cpu", "--steps", "3", "--quiet", "--tol", "moments=0:1", "--plant",
                       "m:wte@2=1e-3,v:wte@2=1e-3"),
               0, "PASS", "--tol moments covers m and v");
}

// The summary and the trace state the bound used.
Test(tol, the_summary_and_the_trace_state_it, .timeout = 60) {
    const char *trace = th_temp_path("tol.json");
    ThRun r = COMPARE("--engines", "scalar,cpu", "--steps", "2", "--tol", "logits=1e-9:1e-12", "--trace", trace);
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "--tol logits: atol 1e-12 + rtol 1e-09 x |b| added to each element's bound"), "%s",
              r.out);
    th_run_free(&r);
    char *j = th_read_file(trace, NULL);
    cr_expect(strstr(j, "\"extra_rtol\"") && strstr(j, "\"extra_atol\""), "the trace's tolerances lack --tol");
    free(j);
}

// fp32, ratio rule: an error far past the ratio bound fails, and passes once
// --tol adds an absolute allowance above it.
Test(tol, on_top_of_the_ratio_rule, .timeout = 60) {
    th_expect_status(COMPARE("--engines", "scalar,cpu", "--precision", "fp32", "--steps", "3", "--quiet", "--plant",
                       "grads:lm_head@2=1e-2"),
               1, "FAIL at step 2: the gradient of lm_head", "fp32: 1e-2 of the RMS is far out");
    th_expect_status(COMPARE("--engines", "scalar,cpu", "--precision", "fp32", "--steps", "3", "--quiet", "--tol",
                       "grads=0:1", "--plant", "grads:lm_head@2=1e-2"),
               0, "PASS", "fp32: --tol grads=0:1 admits it");
}

Test(tol, bad_values_are_refused) {
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--tol", "loss"), "is not QUANTITY=RTOL[:ATOL]", "no =");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--tol", "weights=1e-6"), "unknown quantity 'weights'",
                    "unknown quantity");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--tol", "loss=-1"), "is not RTOL[:ATOL]", "negative");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--tol", "loss=1e-6", "--tol", "loss=1e-5"),
                    "--tol: loss is given twice", "twice");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--tol", "moments=1e-6", "--tol", "v=1e-5"),
                    "--tol: v is given twice", "moments then v");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--mode", "free", "--tol", "loss=1e-6"),
                    "--tol applies to lockstep and --against", "free mode");
}
