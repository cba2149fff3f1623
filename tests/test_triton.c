// examples/triton_engine.py, the training step with Triton kernels, through
// tests/triton_engine_check.py: with numpy alone it checks the engine's
// tables, parameter packing and protocol; where torch and triton import (a
// GPU, or Triton's interpreter on the CPU) also every activation and
// gradient of one step against an fp64 reference, under --loss doc-mean
// and token-mean, and where each planted bug shows first (token-mean-doc-grad:
// the token mean's loss with the doc mean's gradient weights). compare's
// lockstep runs of the engine need torch and triton: docs/outside_engines.md
// ("Triton").
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"

Test(triton, engine_check_script_passes, .timeout = 900) {
    const char *py;
    ThRun r = th_python_script("import numpy", "tests/triton_engine_check.py", &py);
    cr_expect_eq(r.status, 0, "tests/triton_engine_check.py with %s exited %d:\n%s%s", py, r.status, r.out, r.err);
    cr_expect(strstr(r.out, "triton_engine_check: ") && strstr(r.out, " passed, 0 failed"), "%s", r.out);
    cr_expect(strstr(r.out, "ok   create refuses an unknown loss") != NULL, "%s", r.out);
    if (!strstr(r.out, "SKIP")) {   // the engine ran: the token-mean checks were among them
        cr_expect(strstr(r.out, "ok   fp32 token-mean: loss, every gradient") &&
                      strstr(r.out, "ok   fp64 token-mean: loss, every gradient") &&
                      strstr(r.out, "ok   --plant-bug token-mean-doc-grad (token-mean): the loss right, first off at "
                                    "dacts/logits"),
                  "the token-mean checks did not all run and pass:\n%s", r.out);
    }
    if (strstr(r.out, "SKIP")) fprintf(stderr, "test_triton (%s): %s", py, strstr(r.out, "SKIP"));
    th_run_free(&r);
}
