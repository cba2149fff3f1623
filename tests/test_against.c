// compare --export-init and compare --against: the exported inputs are the
// run's (read back with the safetensors decoder), a recorded trace that agrees
// passes, one that does not fails at the right step naming what differs, and
// malformed traces are refused.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "common/model.h"
#include "common/safetensors.h"

#define COMPARE(...) th_tool("compare", "--data", th_names_path(), __VA_ARGS__, NULL)

static const char *tmp(const char *name) {
    static char p[8][512];
    static int k;
    char *s = p[k++ % 8];
    snprintf(s, 512, "%s/%s", th_temp_dir(), name);
    return s;
}

Test(against, export_writes_the_initial_weights_documents_and_batches) {
    const char *dir = tmp("export");
    th_expect_status(COMPARE("--export-init", dir, "--steps", "4", "--batch", "3", "--n-kv-head", "2"), 0, "exported to",
                  "export");
    // init.safetensors: the canonical tensors, the values params_init draws
    StFile f;
    unsigned char *buf;
    char err[512], path[600];
    snprintf(path, sizeof path, "%s/init.safetensors", dir);
    cr_assert_eq(safetensors_read_file(path, &f, &buf, err, sizeof err), 0, "%s", err);
    Settings s;
    settings_defaults(&s);
    s.n_kv_head = 2;
    ModelShape m = model_shape(&s, 27);
    ParamLayout L;
    layout_init(&L, &m);
    cr_assert_eq(f.n, L.n_tensors);
    const StTensor *wk = st_find(&f, "layer0.attn_wk");
    cr_assert(wk);
    cr_expect_eq(wk->shape[0], 8, "GQA: attn_wk is (n_kv_head*head_dim, n_embd) = (8, 16)");
    cr_expect_eq(wk->shape[1], 16);
    // every value is the one params_init draws after the shuffle
    Dataset ds;
    cr_assert_eq(dataset_load(&ds, th_names_path(), err, sizeof err), 0, "%s", err);
    PyRandom rng;
    pyrandom_seed_text(&rng, s.seed);
    dataset_shuffle(&ds, &rng);
    double *want = malloc(L.n_params * sizeof *want), *got = malloc(L.n_params * sizeof *got);
    params_init(&L, &rng, s.init_std, want);
    for (int k = 0; k < L.n_tensors; k++) {
        const StTensor *x = st_find(&f, L.t[k].name);
        cr_assert(x && x->dtype == ST_F64 && x->shape[0] == (size_t)L.t[k].rows && x->shape[1] == (size_t)L.t[k].cols,
                  "%s", L.t[k].name);
        st_read_f64(x, got + L.t[k].offset);
    }
    cr_expect(!memcmp(want, got, L.n_params * sizeof *got), "init.safetensors is not the run's initial parameters");
    free(want);
    free(got);
    dataset_free(&ds);
    st_file_free(&f);
    free(buf);
    snprintf(path, sizeof path, "%s/batches.safetensors", dir);
    cr_assert_eq(safetensors_read_file(path, &f, &buf, err, sizeof err), 0, "%s", err);
    cr_expect_eq(f.n, 12, "three tensors a step");
    const StTensor *t = st_find(&f, "step4/tokens"), *n = st_find(&f, "step4/n"), *d = st_find(&f, "step4/doc");
    cr_assert(t && n && d);
    cr_expect_eq(t->shape[0], 3);
    int docs[3];
    st_read_i32(d, docs);
    cr_expect_eq(docs[0], 9, "step 4 (index 3) takes documents 9, 10, 11");
    int tok[64];
    cr_assert(st_numel(t) <= 64);
    st_read_i32(t, tok);
    cr_expect_eq(tok[0], 26, "each document starts with BOS (26)");
    st_file_free(&f);
    free(buf);
    layout_free(&L);
    // documents.txt: one a line, all of them
    snprintf(path, sizeof path, "%s/documents.txt", dir);
    size_t len;
    char *txt = th_read_file(path, &len);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) lines += txt[i] == '\n';
    cr_expect_eq(lines, 32033);
    free(txt);
    snprintf(path, sizeof path, "%s/settings.json", dir);
    txt = th_read_file(path, &len);
    cr_expect(strstr(txt, "\"format\":\t\"microgpt-export\""), "%s", txt);
    cr_expect(strstr(txt, "\"n_kv_head\":\t2"), "%s", txt);
    free(txt);
    th_expect_status(COMPARE("--export-init", dir, "--engines", "scalar"), 2, "runs no engine", "engines");
    th_expect_status(COMPARE("--export-init", "/nonexistent/x"), 2, "cannot create /nonexistent/x", "bad dir");
}

// The trace build/microgpt records is one program's run: the tensor engine
// reproduces it; a tampered loss fails at its step.
Test(against, a_recorded_training_run_is_checked_step_by_step, .timeout = 60) {
    const char *trace = tmp("train.json");
    ThRun r = th_tool("microgpt", "--data", th_names_path(), "--steps", "12", "--samples", "0", "--trace", trace,
                      "--pretty", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    th_check_schema("against_trace.schema.json", trace, 0);
    th_expect_status(COMPARE("--against", trace, "--engines", "cpu", "--quiet"), 0, "PASS", "cpu reproduces scalar");
    th_expect_status(COMPARE("--against", trace, "--engines", "cpu", "--n-embd", "8", "--n-head", "2"), 2,
                  "recorded with n_embd 16; --n-embd 8 contradicts it", "other settings");
    th_expect_status(COMPARE("--against", trace, "--engines", "scalar,cpu"), 2, "the one reference engine", "2 engines");
    th_expect_status(COMPARE("--against", trace, "--engines", "cpu", "--trace", tmp("x.json")), 2,
                  "--trace does not apply to --against", "--trace");
    th_expect_status(COMPARE("--against", trace, "--engines", "cpu", "--keep-going"), 2, "--against takes", "lockstep flag");
    th_expect_status(COMPARE("--against", trace, "--engines", "cpu", "--precision", "fp32"), 2, "was recorded in fp64",
                  "other precision");
    th_expect_status(COMPARE("--against", trace, "--engines", "cpu", "--steps", "30"), 2,
                  "recorded with steps 12; --steps 30 contradicts it", "other schedule");
    // change step 7's loss in its last digits
    size_t len;
    char *txt = th_read_file(trace, &len);
    char *s7 = strstr(txt, "\"step\":\t7,");
    cr_assert(s7, "no step 7 in\n%s", txt);
    char *loss = strstr(s7, "\"loss\":\t");
    cr_assert(loss);
    loss += 8;
    char *end;
    double x = strtod(loss, &end);
    char repl[64];
    int k = snprintf(repl, sizeof repl, "%.17g", x + 1e-6);
    char *out = malloc(len + 64);
    size_t pre = (size_t)(loss - txt);
    memcpy(out, txt, pre);
    memcpy(out + pre, repl, (size_t)k);
    strcpy(out + pre + k, end);
    const char *bad = th_write_temp("tampered.json", out, strlen(out));
    th_expect_status(COMPARE("--against", bad, "--engines", "cpu", "--quiet"), 1, "first failure at step 7: the loss",
                  "tampered");
    // a step whose "tensors" is not a path is refused, not skipped (issue #29 item 15)
    const char *l7 = strstr(s7, "\"loss\":\t");
    snprintf(out, len + 64, "%.*s\"tensors\":\t5,\n\t\t\t%s", (int)(l7 - txt), txt, l7);
    th_expect_status(COMPARE("--against", th_write_temp("tensors5.json", out, strlen(out)), "--engines", "cpu",
                             "--quiet"),
                     2, "step 7's \"tensors\" is not a string", "\"tensors\": 5");
    free(out);
    free(txt);
    const char *junk = th_write_temp("junk.json", "{\"format\": \"microgpt-trace\"", 27);
    th_expect_status(COMPARE("--against", junk, "--engines", "cpu"), 2, "junk.json", "not JSON");
}

// The outside workflow's first half: export into dir (batch 2, `steps`
// steps) and record the numpy engine's run from it into dir/trace.json
// (tensors every `every` steps, and at step 1); the Python that ran it. The
// test skips without numpy.
static const char *record_numpy(const char *dir, const char *steps, int every, char *trace, size_t n) {
    const char *py = th_python("import numpy");
    if (!py) {
        fprintf(stderr, "SKIP: no Python with numpy (make deps)\n");
        cr_skip_test("no Python with numpy");
    }
    th_expect_status(COMPARE("--export-init", dir, "--steps", steps, "--batch", "2"), 0, NULL, "export");
    snprintf(trace, n, "%s/trace.json", dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s examples/record_trace.py %s %s --tensors-every %d", py, dir, trace, every);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    return py;
}

// The whole outside workflow: export, train elsewhere (numpy), check.
Test(against, an_outside_run_from_the_export_passes_and_a_broken_one_is_named, .timeout = 120) {
    const char *dir = tmp("outside");
    char trace[600], cmd[2048];
    const char *py = record_numpy(dir, "8", 4, trace, sizeof trace);
    th_expect_status(COMPARE("--against", trace, "--engines", "scalar", "--batch", "2", "--quiet"), 0,
                  "8 steps (3 with tensors)", "good run");
    th_check_schema("against_trace.schema.json", trace, 0);
    snprintf(cmd, sizeof cmd, "%s/settings.json", dir);
    th_check_schema("export_settings.schema.json", cmd, 0);
    snprintf(cmd, sizeof cmd, "%s examples/record_trace.py %s %s --tensors-every 4 --broken-rmsnorm", py, dir, trace);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    ThRun r = COMPARE("--against", trace, "--engines", "scalar", "--batch", "2", "--quiet");
    cr_expect_eq(r.status, 1, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "first failure at step 1: the gradient of wte"), "%s", r.out);
    cr_expect(strstr(r.out, "not in the reference: wte wpe"), "%s", r.out);
    th_run_free(&r);
    // a tensor file of the wrong shape is bad data
    snprintf(cmd, sizeof cmd, "cp %s/step1.safetensors %s/step4.safetensors.bak && cp %s/init.safetensors "
             "%s/step4.safetensors", dir, dir, dir, dir);
    cr_assert_eq(system(cmd), 0);
    th_expect_status(COMPARE("--against", trace, "--engines", "scalar", "--batch", "2", "--quiet"), 2,
                  "step4.safetensors holds 9 tensors, 0 of them logits", "foreign tensors");
}

// What the calibrated fp64 bounds of a record still catch (they allow a
// free-running record's own trajectory, 2e-10 to 2e-9 of each tensor's RMS:
// docs/compare.md): a record whose gradients went through fp32 on the way to
// the file (exact loss, logits and parameters; every gradient rounded to
// float32, a relative error up to 6e-8) fails at step 1 naming a gradient,
// and a correct record's statistic is printed against its bound.
Test(against, an_fp64_record_with_fp32_gradients_fails, .timeout = 120) {
    const char *dir = tmp("fp32grads");
    char trace[600], cmd[4096];
    const char *py = record_numpy(dir, "6", 3, trace, sizeof trace);
    ThRun r = COMPARE("--against", trace, "--engines", "scalar");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, " x RMS) |") && strstr(r.out, "grads 2e-09 x each tensor's RMS"), "%s", r.out);
    th_run_free(&r);
    // every grads/<tensor> of step 1's file through float32
    snprintf(cmd, sizeof cmd,
             "%s -c \"import sys; sys.path.insert(0, 'examples'); import numpy as np, mg_protocol as m; "
             "f = '%s/step1.safetensors'; t = m.st_decode(open(f, 'rb').read()); "
             "t = {k: (d, s, np.frombuffer(b, '<f8').astype('<f4').astype('<f8').tobytes()) "
             "if k.startswith('grads/') else (d, s, b) for k, (d, s, b) in t.items()}; "
             "open(f, 'wb').write(m.st_encode(t))\"",
             py, dir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    r = COMPARE("--against", trace, "--engines", "scalar", "--quiet");
    cr_expect_eq(r.status, 1, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "first failure at step 1: the gradient of "), "%s", r.out);
    th_run_free(&r);
}
