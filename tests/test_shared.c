// What every engine shares, checked against values computed outside the
// harness (CPython 3.11, or the definitions of the original written out
// here), so that a bug in common/ cannot pass because both engines agree on
// it: the batch of each step, the lr schedule, Adam's constants and update,
// and golden losses at batch > 1 from an independent implementation
// (scripts/golden_batch.py, committed output in tests/golden/py_b*.txt).
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dataset.h"
#include "common/engine.h"
#include "common/model.h"
#include "common/pyrandom.h"
#include "common/settings.h"
#include "scalar_ref/engine_scalar.h"
#include "tensor_gpu/cpu/engine_cpu.h"
#include "helpers.h"

static void doc_text(const Dataset *d, int i, char *out, size_t cap) {
    int len;
    const int *tok = dataset_doc(d, i, &len);
    size_t k = 0;
    for (int j = 0; j < len && k + 4 < cap; j++) {
        char u[4];
        int m = utf8_encode(d->vocab[tok[j]], u);
        memcpy(out + k, u, (size_t)m);
        k += (size_t)m;
    }
    out[k] = '\0';
}

static void names_shuffled(Dataset *d) {
    char err[512];
    cr_assert_eq(dataset_load(d, th_names_path(), err, sizeof err), 0, "%s", err);
    PyRandom r;
    pyrandom_seed_text(&r, "42");
    dataset_shuffle(d, &r);
}

// docs[(s*B + b) % N] on names.txt shuffled by CPython's random.seed(42):
// the names below are what CPython gives for those indices.
Test(shared, batch_of_step_s_is_docs_s_times_B_plus_b_mod_N) {
    Dataset d;
    names_shuffled(&d);
    cr_assert_eq(d.n_docs, 32033);
    static const struct {
        long step;
        int B;
        int idx[8];
        const char *name[8];
    } want[] = {
        {0, 4, {0, 1, 2, 3}, {"yuheng", "diondre", "xavien", "jori"}},
        {1000, 5, {5000, 5001, 5002, 5003, 5004}, {"sevana", "danaya", "inez", "deslyn", "eileen"}},
        {4004, 8, {32032, 0, 1, 2, 3, 4, 5, 6},
         {"yovani", "yuheng", "diondre", "xavien", "jori", "juanluis", "erandi", "phia"}},
        {123456, 3, {18005, 18006, 18007}, {"aizlee", "yafet", "fabrizio"}},
    };
    Batch b = {0};
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        batch_make(&b, &d, want[w].step, want[w].B, 16);
        cr_assert_eq(b.B, want[w].B);
        int T = 0;
        for (int i = 0; i < b.B; i++) {
            cr_expect_eq(b.doc[i], want[w].idx[i], "step %ld, B %d, document %d: docs[%d], want docs[%d]",
                         want[w].step, want[w].B, i, b.doc[i], want[w].idx[i]);
            char s[64];
            doc_text(&d, b.doc[i], s, sizeof s);
            cr_expect_str_eq(s, want[w].name[i]);
            int n = (int)strlen(want[w].name[i]) + 1;   // [BOS] + name + [BOS] trains len+1 positions
            cr_expect_eq(b.n[i], n < 16 ? n : 16);
            if (b.n[i] > T) T = b.n[i];
            // inputs: BOS then the name; the last target is BOS; -1 past it
            cr_expect_eq(b.tokens[(size_t)i * (size_t)(b.T + 1)], d.bos);
            cr_expect_eq(b.tokens[(size_t)i * (size_t)(b.T + 1) + (size_t)b.n[i]], d.bos);
            for (int t = b.n[i] + 1; t <= b.T; t++) cr_expect_eq(b.tokens[(size_t)i * (size_t)(b.T + 1) + t], -1);
        }
        cr_expect_eq(b.T, T, "T is the longest document's positions");
    }
    // a document longer than the block is cropped to block_size positions
    batch_make(&b, &d, 1, 1, 4);   // docs[1] = diondre (7 letters)
    cr_expect_eq(b.n[0], 4);
    cr_expect_eq(b.T, 4);
    batch_free(&b);
    dataset_free(&d);
}

// lr_t = lr * (1 - step / num_steps); the expected values are CPython's.
Test(shared, lr_schedule_is_the_originals) {
    cr_expect(lr_at(0.01, 0, 1000) == 0.01);
    cr_expect(lr_at(0.01, 500, 1000) == 0.005);
    cr_expect(lr_at(0.01, 999, 1000) == 1.000000000000001e-05, "%a", lr_at(0.01, 999, 1000));
    cr_expect(lr_at(0.01, 1, 3) == 0.006666666666666668, "%a", lr_at(0.01, 1, 3));
    cr_expect(lr_at(0.02, 7, 40) == 0.02 * (1.0 - 7.0 / 40.0));
}

Test(shared, settings_defaults_are_the_originals) {
    Settings s;
    settings_defaults(&s);
    cr_expect(s.beta1 == 0.85 && s.beta2 == 0.99 && s.eps == 1e-8, "Adam (%g, %g, %g)", s.beta1, s.beta2, s.eps);
    cr_expect(s.lr == 0.01 && s.init_std == 0.08 && s.temperature == 0.5);
    cr_expect(s.n_embd == 16 && s.n_head == 4 && s.n_layer == 1 && s.block_size == 16 && s.steps == 1000);
    cr_expect(s.samples == 20 && s.batch == 1 && !strcmp(s.seed, "42"));
}

// One Adam step of each engine from zero moments, against the original's
// formulas with its constants written out: m = 0.15000000000000002 g (that
// is 1 - 0.85 in float64), v = 0.010000000000000009 g^2 (1 - 0.99), bias
// corrections 1 - 0.85 and 1 - 0.99 at step 1, eps 1e-8, lr 0.01.
static void adam_step_of(const char *engine) {
    Dataset d;
    names_shuffled(&d);
    Settings s;
    settings_defaults(&s);
    s.steps = 10;
    ModelShape m = model_shape(&s, d.vocab_size);
    ParamLayout L;
    layout_init(&L, &m);
    const size_t P = L.n_params;
    double *p0 = malloc(P * sizeof *p0), *g = malloc(P * sizeof *g), *p1 = malloc(P * sizeof *p1);
    double *mm = malloc(P * sizeof *mm), *vv = malloc(P * sizeof *vv);
    PyRandom r;
    pyrandom_seed_text(&r, "42");
    params_init(&L, &r, 0.08, p0);
    EngineConfig cfg = {.s = &s, .L = &L, .precision = PREC_FP64, .fault = FAULT_NONE, .max_batch = 1};
    char err[256] = "";
    Engine *e = !strcmp(engine, "scalar") ? scalar_engine_create(&cfg, p0) : cpu_engine_create(&cfg, p0, err, sizeof err);
    cr_assert(e, "%s: %s", engine, err);
    Batch b = {0};
    batch_make(&b, &d, 0, 1, 16);
    e->ops->step(e, &b, 0);
    e->ops->get_grads(e, g);
    e->ops->get_params(e, p1);
    e->ops->get_moments(e, mm, vv);
    size_t bad = 0;
    for (size_t i = 0; i < P; i++) {
        double em = 0.15000000000000002 * g[i], ev = 0.010000000000000009 * (g[i] * g[i]);
        double ep = p0[i] - (0.01 * (em / 0.15000000000000002)) / (sqrt(ev / 0.010000000000000009) + 1e-8);
        if (fabs(mm[i] - em) > 1e-15 * fabs(em) || fabs(vv[i] - ev) > 1e-15 * fabs(ev) ||
            fabs(p1[i] - ep) > 1e-15 * fabs(ep) + 1e-18) {
            if (!bad++)
                cr_log_error("%s: element %zu: m %.17g (want %.17g), v %.17g (want %.17g), p %.17g (want %.17g)",
                             engine, i, mm[i], em, vv[i], ev, p1[i], ep);
        }
    }
    cr_expect_eq(bad, 0, "%s: %zu elements differ from Adam with the original's constants", engine, bad);
    // step 2 uses the bias corrections 1 - 0.85^2 and 1 - 0.99^2 (CPython's values)
    double *g2 = malloc(P * sizeof *g2), *p2 = malloc(P * sizeof *p2), *m2 = malloc(P * sizeof *m2),
           *v2 = malloc(P * sizeof *v2);
    batch_make(&b, &d, 1, 1, 16);
    e->ops->step(e, &b, 1);
    e->ops->get_grads(e, g2);
    e->ops->get_params(e, p2);
    e->ops->get_moments(e, m2, v2);
    const double lr1 = 0.01 * (1.0 - 1.0 / 10.0);
    bad = 0;
    for (size_t i = 0; i < P; i++) {
        double em = 0.85 * mm[i] + 0.15000000000000002 * g2[i];
        double ev = 0.99 * vv[i] + 0.010000000000000009 * (g2[i] * g2[i]);
        double ep = p1[i] - (lr1 * (em / (1.0 - 0.7224999999999999))) / (sqrt(ev / 0.01990000000000003) + 1e-8);
        if (fabs(p2[i] - ep) > 1e-14 * fabs(ep) + 1e-18 && !bad++)
            cr_log_error("%s step 2: element %zu: p %.17g (want %.17g)", engine, i, p2[i], ep);
    }
    cr_expect_eq(bad, 0, "%s: step 2's update differs from the original's", engine);
    e->ops->destroy(e);
    batch_free(&b);
    free(p0), free(g), free(p1), free(mm), free(vv), free(g2), free(p2), free(m2), free(v2);
    layout_free(&L);
    dataset_free(&d);
}

Test(shared, adam_constants_and_update_scalar) { adam_step_of("scalar"); }
Test(shared, adam_constants_and_update_cpu) { adam_step_of("cpu"); }

// The scalar engine against scripts/golden_batch.py's losses, with the
// settings of the golden file's "# flags:" line.
static void golden_batch(const char *name) {
    char golden[128], tr[4300];
    snprintf(golden, sizeof golden, "tests/golden/%s.txt", name);
    snprintf(tr, sizeof tr, "%s/%s.json", th_temp_dir(), name);
    char *text = th_read_file(golden, NULL);
    double want[64];
    int n = 0;
    const char *args[32] = {"--data", th_names_path(), "--samples", "0", "--trace", tr};
    int na = 6;
    char flags[256] = "";
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        int step;
        double x;
        if (!strncmp(line, "# flags: ", 9)) snprintf(flags, sizeof flags, "%s", line + 9);
        if (line[0] == '#') continue;
        cr_assert_eq(sscanf(line, "%d %lf", &step, &x), 2, "%s: bad line '%s'", golden, line);
        cr_assert(n < 64 && step == n + 1);
        want[n++] = x;
    }
    free(text);
    cr_assert(flags[0], "%s has no '# flags:' line", golden);
    for (char *f = strtok(flags, " "); f && na < 30; f = strtok(NULL, " ")) args[na++] = f;
    args[na] = NULL;
    ThRun r = th_tool_argv("microgpt", args);
    cr_assert_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    char *js = th_read_file(tr, NULL);
    cJSON *root = cJSON_Parse(js);
    cr_assert(root);
    cJSON *st = cJSON_GetObjectItem(root, "steps");
    cr_assert_eq(cJSON_GetArraySize(st), n);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double got = cJSON_GetObjectItem(cJSON_GetArrayItem(st, i), "loss")->valuedouble;
        double rel = fabs(got - want[i]) / fabs(want[i]);
        cr_expect_leq(rel, 1e-12, "%s step %d: loss %.17g, independent implementation %.17g", name, i + 1, got,
                      want[i]);
        if (rel > worst) worst = rel;
    }
    cr_log_info("%s: %d losses within %.1e relative of the independent implementation", name, n, worst);
    cJSON_Delete(root);
    free(js);
}

Test(shared, golden_losses_at_batch_4, .timeout = 60) { golden_batch("py_b4"); }
Test(shared, golden_losses_at_batch_8, .timeout = 60) { golden_batch("py_b8"); }
Test(shared, golden_losses_batch_3_two_layers_head_8_block_8, .timeout = 60) { golden_batch("py_b3_l2_h2_t8"); }
