// --loss doc-mean|token-mean: the two batch losses every engine computes
// (scalar, cpu, the exec examples), and what compare says when a candidate's
// loss is the other definition.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define COMPARE(...) th_tool("compare", "--data", th_names_path(), __VA_ARGS__, NULL)
#define MICROGPT(...) th_tool("microgpt", "--data", th_names_path(), __VA_ARGS__, NULL)

// The first step's loss that microgpt prints ("step    1 /    2 | loss 3.2682").
static double first_loss(ThRun r) {
    cr_assert_eq(r.status, 0, "microgpt failed:\n%s%s", r.out, r.err);
    const char *p = strstr(r.out, "| loss ");
    cr_assert(p, "no loss line in:\n%s", r.out);
    double x = atof(p + 7);
    th_run_free(&r);
    return x;
}

Test(loss, the_definitions_differ_at_batch_4_and_agree_at_batch_1) {
    const double doc = first_loss(MICROGPT("--steps", "1", "--samples", "0", "--batch", "4"));
    const double tok = first_loss(MICROGPT("--steps", "1", "--samples", "0", "--batch", "4", "--loss", "token-mean"));
    cr_expect(doc > 3 && tok > 3 && doc != tok, "batch 4: doc-mean %.4f, token-mean %.4f", doc, tok);
    const double one_doc = first_loss(MICROGPT("--steps", "1", "--samples", "0"));
    const double one_tok = first_loss(MICROGPT("--steps", "1", "--samples", "0", "--loss", "token-mean"));
    cr_expect_eq(one_doc, one_tok, "batch 1: doc-mean %.4f, token-mean %.4f", one_doc, one_tok);
}

Test(loss, a_bad_definition_is_refused) {
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--loss", "sum"), "--loss: 'sum' is not doc-mean",
                    "--loss sum");
}

// scalar and cpu compute the token mean the same way (the cpu engine's
// cross-entropy against the formula: test_cpu_layers crossentropy_token_mean)
Test(loss, scalar_and_cpu_agree_on_the_token_mean, .timeout = 120) {
    ThRun r = COMPARE("--engines", "scalar,cpu", "--loss", "token-mean", "--batch", "4", "--n-layer", "2",
                      "--n-kv-head", "2", "--steps", "5", "--quiet");
    th_expect_status(r, 0, "PASS: lockstep", "scalar,cpu token-mean fp64");
    r = COMPARE("--engines", "scalar,cpu", "--loss", "token-mean", "--batch", "4", "--steps", "5", "--precision",
                "fp32", "--quiet");
    th_expect_status(r, 0, "PASS: lockstep", "scalar,cpu token-mean fp32");
}

static const char *numpy_python(void) {
    const char *py = th_python("import numpy");
    if (!py) cr_skip_test("no Python with numpy (make deps)");
    return py;
}

Test(loss, the_numpy_engine_passes_with_either_definition, .timeout = 120) {
    const char *py = numpy_python();
    char engines[600];
    snprintf(engines, sizeof engines, "scalar,exec:%s examples/numpy_engine.py", py);
    th_expect_status(COMPARE("--engines", engines, "--loss", "token-mean", "--batch", "4", "--steps", "3", "--quiet"),
                     0, "PASS: lockstep", "numpy token-mean");
    th_expect_status(COMPARE("--engines", engines, "--batch", "4", "--steps", "3", "--quiet"), 0, "PASS: lockstep",
                     "numpy doc-mean");
}

// A port whose loss is F.cross_entropy over the batch, run against the
// original's loss: its logits agree, its loss does not, and compare says why.
Test(loss, a_token_mean_port_is_recognised_under_doc_mean, .timeout = 120) {
    const char *py = numpy_python();
    char engines[600];
    snprintf(engines, sizeof engines, "scalar,exec:%s examples/numpy_engine.py --always-token-mean", py);
    ThRun r = COMPARE("--engines", engines, "--batch", "4", "--steps", "3");
    cr_expect_eq(r.status, 1, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "FAIL at step 1: the loss differs"), "%s", r.out);
    cr_expect(strstr(r.out, "is the token-mean of the reference's logits"), "no diagnosis in:\n%s", r.out);
    cr_expect(strstr(r.out, "run with --loss token-mean"), "no advice in:\n%s", r.out);
    th_run_free(&r);
    // and the other way round: the original's loss under --loss token-mean
    snprintf(engines, sizeof engines, "scalar,exec:%s examples/numpy_engine.py", py);
    r = COMPARE("--engines", engines, "--batch", "4", "--steps", "3", "--loss", "token-mean");
    cr_expect_eq(r.status, 0, "the numpy engine follows the config's loss: exit %d\n%s%s", r.status, r.out, r.err);
    th_run_free(&r);
    r = COMPARE("--engines", "scalar,cpu", "--batch", "4", "--steps", "3", "--plant", "loss@1=0.5", "--quiet");
    cr_expect_eq(r.status, 1, "a loss off by 0.5: exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "is neither"), "a loss that is neither definition is said to be neither:\n%s", r.out);
    th_run_free(&r);
}

// A wrong token-mean gradient (the loss is the token mean, the gradient the
// document mean's): caught at step 1 and named as the cross-entropy's backward.
Test(loss, a_wrong_token_mean_gradient_is_caught_at_the_cross_entropy, .timeout = 120) {
    const char *py = numpy_python();
    char engines[600];
    snprintf(engines, sizeof engines, "scalar,exec:%s examples/numpy_engine.py --token-mean-doc-grad", py);
    ThRun r = COMPARE("--engines", engines, "--batch", "4", "--steps", "3", "--loss", "token-mean");
    cr_expect_eq(r.status, 1, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "first divergence: the cross-entropy, backward"), "%s", r.out);
    th_run_free(&r);
}
