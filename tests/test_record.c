// Recorded runs (compare --against) made from a program's printed log by
// scripts/log_to_trace.py: the original microgpt.py's own lines pass within
// half a unit of their last printed digit, a loss off by two units fails at
// its step, the settings come from the trace (a flag that contradicts it and
// a trace without them are refused), and what was not recorded is said so.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define COMPARE(...) th_tool("compare", "--data", th_names_path(), __VA_ARGS__, NULL)

// The start of the original's output (../shared/golden/microgpt_seed42_stdout.txt).
static const char ORIGINAL_LOG[] = "num docs: 32033\n"
                                   "vocab size: 27\n"
                                   "num params: 4192\n"
                                   "step    1 / 1000 | loss 3.3660\n"
                                   "step    2 / 1000 | loss 3.4243\n"
                                   "step    3 / 1000 | loss 3.1778\n"
                                   "step    4 / 1000 | loss 3.0664\n"
                                   "step    5 / 1000 | loss 3.2209\n"
                                   "step    6 / 1000 | loss 2.9452\n"
                                   "step    7 / 1000 | loss 3.2894\n"
                                   "step    8 / 1000 | loss 3.3245\n"
                                   "step    9 / 1000 | loss 2.8990\n";

// scripts/log_to_trace.py with args (NULL-terminated) and the log in `log`.
static ThRun log_to_trace(const char *const *args) {
    const char *py = th_python("import sys");
    if (!py) {
        fprintf(stderr, "SKIP: no Python (apt-get install python3)\n");
        cr_skip_test("no Python");
    }
    char *argv[32] = {"/usr/bin/env", (char *)py, "scripts/log_to_trace.py"};
    int n = 3;
    for (; *args; args++) {
        cr_assert_lt(n, 31);
        argv[n++] = (char *)*args;
    }
    argv[n] = NULL;
    return th_run(argv);
}

// The log `text` written to name.log and converted to name.json (with extra flags).
static const char *convert(const char *name, const char *text, const char *flag, const char *value) {
    char file[64];
    snprintf(file, sizeof file, "%s.log", name);
    const char *log = th_write_temp(file, text, strlen(text));
    static char out[8][512];
    static int k;
    char *trace = out[k++ % 8];
    snprintf(trace, 512, "%s/%s.json", th_temp_dir(), name);
    const char *args[] = {log, "-o", trace, flag, value, NULL};
    ThRun r = log_to_trace(args);
    cr_assert_eq(r.status, 0, "log_to_trace %s: exit %d\n%s", name, r.status, r.err);
    th_run_free(&r);
    return trace;
}

Test(record, the_originals_own_log_passes_within_its_rounding, .timeout = 60) {
    const char *trace = convert("original", ORIGINAL_LOG, NULL, NULL);
    th_check_schema("against_trace.schema.json", trace, 0);
    ThRun r = COMPARE("--against", trace, "--engines", "cpu");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "PASS: "), "%s", r.out);
    cr_expect(strstr(r.out, "9 steps (0 with tensors)"), "%s", r.out);
    cr_expect(strstr(r.out, "the record is rounded to 4 decimals: tolerance 5e-05"), "%s", r.out);
    th_run_free(&r);
    // the whole run the original printed (the committed copy of its stdout), all 1000 steps
    ThRun w = log_to_trace((const char *[]){"tests/golden/original/microgpt_seed42_stdout.txt", "-o",
                                            th_temp_path("whole.json"), NULL});
    cr_assert_eq(w.status, 0, "%s", w.err);
    th_run_free(&w);
    th_expect_status(COMPARE("--against", th_temp_path("whole.json"), "--engines", "cpu", "--quiet"), 0,
                     "1000 steps (0 with tensors)", "the original's whole log");
}

Test(record, a_loss_two_units_off_in_its_last_digit_fails_at_its_step, .timeout = 60) {
    char *log = strdup(ORIGINAL_LOG);
    char *at = strstr(log, "loss 3.1778");
    cr_assert(at);
    memcpy(at, "loss 3.1780", 11);
    const char *trace = convert("off", log, NULL, NULL);
    free(log);
    ThRun r = COMPARE("--against", trace, "--engines", "cpu", "--quiet");
    cr_expect_eq(r.status, 1, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "first failure at step 3: the loss: recorded 3.1780, reference 3.17780212"), "%s", r.out);
    cr_expect(strstr(r.out, "> 5e-05"), "%s", r.out);
    th_run_free(&r);
}

// --tol loss=RTOL widens --against's loss check on top of the rounding: the
// loss 2 units off (|a-b| 2e-4, about 6.3e-5 of the loss) passes with rtol
// 7e-5 (5e-5 + 7e-5 x 3.18 > 2e-4) and fails with 4e-5 (5e-5 + 1.3e-4 < 2e-4).
Test(record, tol_loss_widens_the_recorded_loss_check, .timeout = 60) {
    char *log = strdup(ORIGINAL_LOG);
    char *at = strstr(log, "loss 3.1778");
    cr_assert(at);
    memcpy(at, "loss 3.1780", 11);
    const char *trace = convert("off-tol", log, NULL, NULL);
    free(log);
    ThRun r = COMPARE("--against", trace, "--engines", "cpu", "--tol", "loss=7e-5");
    cr_expect_eq(r.status, 0, "rtol 7e-5: %s%s", r.out, r.err);
    cr_expect(strstr(r.out, "+ --tol loss: atol 0 + rtol 7e-05 x |loss|"), "%s", r.out);
    th_run_free(&r);
    th_expect_status(COMPARE("--against", trace, "--engines", "cpu", "--quiet", "--tol", "loss=4e-5"), 1,
                     "first failure at step 3: the loss", "rtol 4e-5");
}

Test(record, a_trace_without_settings_is_refused_unless_the_flags_say_them, .timeout = 60) {
    static const char bare[] = "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"train\", \"steps\": "
                               "[{\"step\": 1, \"loss\": 3.366}, {\"step\": 2, \"loss\": 3.4243}]}";
    const char *trace = th_write_temp("bare.json", bare, strlen(bare));
    th_expect_usage(COMPARE("--against", trace, "--engines", "cpu"),
                    "records no settings; give the flags that change the numbers: --seed, --steps, --batch, "
                    "--n-embd, --n-head, --n-layer, --block-size, --lr, --init-std (the original's: --seed 42",
                    "no settings");
    th_expect_usage(COMPARE("--against", trace, "--engines", "cpu", "--steps", "1000", "--lr", "0.01"),
                    "flags that change the numbers: --seed, --batch, --n-embd, --n-head, --n-layer, --block-size, "
                    "--init-std (",
                    "some flags");
    // every one given: checked, its decimals detected from the numbers
    ThRun r = COMPARE("--against", trace, "--engines", "cpu", "--seed", "42", "--steps", "1000", "--batch", "1",
                      "--n-embd", "16", "--n-head", "4", "--n-layer", "1", "--block-size", "16", "--lr", "0.01",
                      "--init-std", "0.08");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "the record is rounded to 4 decimals: tolerance 5e-05"), "%s", r.out);
    th_run_free(&r);
    // settings that lack some: the rest are named
    static const char some[] = "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"train\", \"settings\": "
                               "{\"steps\": 1000, \"batch\": 1}, \"steps\": [{\"step\": 1, \"loss\": 3.366}]}";
    th_expect_usage(COMPARE("--against", th_write_temp("some.json", some, strlen(some)), "--engines", "cpu"),
                    "records only some settings; give the flags that change the numbers: --seed, --n-embd,",
                    "some settings");
    // a declared precision the numbers exceed is bad data
    static const char liar[] = "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"train\", "
                               "\"loss_decimals\": 2, \"steps\": [{\"step\": 1, \"loss\": 3.366}]}";
    th_expect_usage(COMPARE("--against", th_write_temp("liar.json", liar, strlen(liar)), "--engines", "cpu", "--seed",
                            "42", "--steps", "1000", "--batch", "1", "--n-embd", "16", "--n-head", "4", "--n-layer",
                            "1", "--block-size", "16", "--lr", "0.01", "--init-std", "0.08"),
                    "step 1's loss 3.366 has more than the 2 decimals of \"loss_decimals\"",
                    "loss_decimals");
}

Test(record, a_200_step_record_takes_its_schedule_from_the_trace, .timeout = 60) {
    ThRun m = th_tool("microgpt", "--data", th_names_path(), "--steps", "200", "--samples", "0", NULL);
    cr_assert_eq(m.status, 0, "%s", m.err);
    cr_assert(strstr(m.out, "step  200 /  200 | loss "), "%s", m.out);
    const char *trace = convert("s200", m.out, NULL, NULL);
    th_expect_status(COMPARE("--against", trace, "--engines", "cpu", "--quiet"), 0, "200 steps (0 with tensors)",
                     "200 steps");
    th_expect_usage(COMPARE("--against", trace, "--engines", "cpu", "--steps", "1000"),
                    "was recorded with steps 200; --steps 1000 contradicts it", "--steps 1000");
    th_expect_usage(COMPARE("--against", trace, "--engines", "cpu", "--batch", "2"),
                    "was recorded with batch 1; --batch 2 contradicts it", "--batch 2");
    // the same log is not a 1000-step run either
    const char *args[] = {th_write_temp("s200b.log", m.out, m.out_len), "--steps", "1000", NULL};
    ThRun r = log_to_trace(args);
    cr_expect_eq(r.status, 2, "%s", r.err);
    cr_expect(strstr(r.err, "--steps 1000, but the log's lines say 'step N / 200'"), "%s", r.err);
    th_run_free(&r);
    th_run_free(&m);
}

Test(record, the_summary_says_what_was_not_recorded, .timeout = 120) {
    const char *trace = convert("nolog", ORIGINAL_LOG, "--name", "microgpt.py");
    ThRun r = COMPARE("--against", trace, "--engines", "cpu", "--quiet");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "(recorded by microgpt.py, fp64)"), "%s", r.out);
    cr_expect(strstr(r.out, "; logits, grads, params: not recorded"), "%s", r.out);
    cr_expect(!strstr(r.out, "0.000e+00"), "%s", r.out);
    th_run_free(&r);
    // a run that recorded gradients and parameters but no logits (numpy records them)
    const char *py = th_python("import numpy");
    if (!py) {
        fprintf(stderr, "SKIP the tensor part: no Python with numpy\n");
        return;
    }
    const char *dir = th_temp_path("nologits");
    th_expect_status(COMPARE("--export-init", dir, "--steps", "4", "--batch", "2"), 0, NULL, "export");
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "%s examples/record_trace.py %s %s/trace.json --tensors-every 2 && %s -c 'import sys; "
             "sys.path.insert(0, \"examples\"); import glob, mg_protocol as m\n"
             "for f in glob.glob(\"%s/step*.safetensors\"):\n"
             "    t = m.st_decode(open(f, \"rb\").read()); del t[\"logits\"]; open(f, \"wb\").write(m.st_encode(t))'",
             py, dir, dir, py, dir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    snprintf(cmd, sizeof cmd, "%s/trace.json", dir);
    r = COMPARE("--against", cmd, "--engines", "scalar", "--quiet");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "4 steps (3 with tensors)"), "%s", r.out);
    cr_expect(strstr(r.out, ", grads ") && strstr(r.out, ", params "), "%s", r.out);
    cr_expect(strstr(r.out, "; logits: not recorded"), "%s", r.out);
    cr_expect(!strstr(r.out, "logits 0.000e+00"), "%s", r.out);
    th_run_free(&r);
}

Test(record, log_to_trace_explains_what_it_cannot_use) {
    ThRun h = log_to_trace((const char *[]){"--help", NULL});
    cr_expect_eq(h.status, 0, "%s", h.err);
    cr_expect(strstr(h.out, "usage: log_to_trace.py") && strstr(h.out, "loss_decimals"), "%s", h.out);
    th_run_free(&h);
    const struct {
        const char *log, *want;
    } bad[] = {
        {"num docs: 3\nhello\n", "no step lines found"},
        {"step 1 | loss 3.1\nstep 2 | loss 3.0\nstep 2 | loss 2.9\n", "bad.log:3: step 2 after step 2: the steps "
                                                                     "do not increase"},
        {"step 1 | loss 3.1\nstep 3 | loss 3.0\n", "bad.log:2: step 3 where step 2 was due"},
        {"step 2 | loss 3.1\n", "bad.log:1: step 2 where step 1 was due"},
        {"step 1 / 5 | loss 3.1\nstep 2 / 6 | loss 3.0\n", "step 2 / 6, but earlier lines say / 5"},
        {"step 1 / 1 | loss 3.1\nstep 2 / 1 | loss 3.0\n", "the log has 2 steps, more than the 1-step schedule"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *args[] = {th_write_temp("bad.log", bad[i].log, strlen(bad[i].log)), NULL};
        ThRun r = log_to_trace(args);
        cr_expect_eq(r.status, 2, "%s: exit %d\n%s", bad[i].want, r.status, r.err);
        cr_expect(strstr(r.err, bad[i].want), "want '%s' in\n%s", bad[i].want, r.err);
        cr_expect_eq(r.out_len, 0, "no trace on an error:\n%s", r.out);
        th_run_free(&r);
    }
    ThRun r = log_to_trace((const char *[]){th_temp_path("absent.log"), NULL});
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "cannot read"), "%s", r.err);
    th_run_free(&r);
    // the loose form: other words between, an exponent, a non-finite loss
    static const char loose[] = "[0.1s] Step: 1, lr 0.01, Loss = 3.366e+00\nstep 2 train loss: nan\n";
    const char *args[] = {th_write_temp("loose.log", loose, strlen(loose)), NULL};
    ThRun l = log_to_trace(args);
    cr_expect_eq(l.status, 0, "%s", l.err);
    cr_expect(strstr(l.out, "\"loss_decimals\": 3"), "%s", l.out);
    cr_expect(strstr(l.out, "\"loss\": 3.366") && strstr(l.out, "\"loss\": null"), "%s", l.out);
    th_run_free(&l);
}
