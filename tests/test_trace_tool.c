// build/trace (inspect, diff, plot) run as a subprocess on small synthetic
// traces written with the trace writer, and the writer's exact numbers.
#include <criterion/criterion.h>
#include "helpers.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/dataset.h"
#include "common/model.h"
#include "common/settings.h"
#include "traces/trace.h"

// ---------------------------------------------------------------------------
// Fixture: a fresh folder for the traces of each test, another for the
// captured output of the tool (so the first holds only what a test puts there
// and what the tool writes).

static char g_dir[64], g_io[64];

static void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[PATH_MAX];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/trace-tool-test-XXXXXX");
    snprintf(g_io, sizeof g_io, "/tmp/trace-tool-io-XXXXXX");
    if (!mkdtemp(g_dir) || !mkdtemp(g_io)) cr_assert_fail("mkdtemp: %s", strerror(errno));
}

static void teardown(void) {
    rm_tree(g_dir);
    rm_tree(g_io);
}

TestSuite(trace_tool, .init = setup, .fini = teardown);

static const char *in_dir(const char *name) {
    static char ring[16][PATH_MAX];
    static int k;
    char *p = ring[k++ % 16];
    snprintf(p, PATH_MAX, "%s/%s", g_dir, name);
    return p;
}

static void write_text(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot create %s", path);
    cr_assert_eq(fwrite(text, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

// Run build/trace (tests/helpers.c).
#define run_argv(args) th_tool_argv("trace", (args))
#define run_tool(...) th_tool("trace", __VA_ARGS__)

static int count_char(const char *s, char c) {
    int n = 0;
    for (; *s; s++) n += *s == c;
    return n;
}

// The names of the files in g_dir, sorted, joined by spaces.
static char *dir_listing(void) {
    struct dirent **list;
    int n = scandir(g_dir, &list, NULL, alphasort);
    cr_assert(n >= 0);
    static char buf[4096];
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (strcmp(list[i]->d_name, ".") && strcmp(list[i]->d_name, "..")) {
            if (buf[0]) strcat(buf, " ");
            strncat(buf, list[i]->d_name, sizeof buf - strlen(buf) - 2);
        }
        free(list[i]);
    }
    free(list);
    return buf;
}

// ---------------------------------------------------------------------------
// Synthetic traces, written with the writer of traces/trace.h.

enum { MAX_STEPS = 256 };

typedef struct {
    int n_steps;
    double loss[MAX_STEPS];
    double time_s[MAX_STEPS];
    double lr;                  // the "lr" setting
    const char *text;           // the dataset's text
    const char *data_path;      // the dataset's path
    int n_samples;
    const char *samples[8];
} TrainSpec;

static void train_spec(TrainSpec *t, int n) {
    memset(t, 0, sizeof *t);
    cr_assert(n <= MAX_STEPS);
    t->n_steps = n;
    for (int i = 0; i < n; i++) {
        t->loss[i] = 3.3 - 0.01 * i + 0.05 * sin(i * 1.7);
        t->time_s[i] = 0.001 * (1 + i % 7);
    }
    t->lr = 0.01;
    t->text = "emma\nolivia\nava\nisabella\n";
    t->data_path = "data/names.txt";
    t->n_samples = 3;
    t->samples[0] = "mia";
    t->samples[1] = "ella";
    t->samples[2] = "zoe";
}

static void common_header(Trace *tr, double lr, int steps, const char *text, const char *data_path) {
    Settings s;
    settings_defaults(&s);
    s.lr = lr;
    s.steps = steps;
    Dataset d;
    char err[256];
    cr_assert_eq(dataset_from_text(&d, data_path, text, strlen(text), err, sizeof err), 0, "%s", err);
    ModelShape m = model_shape(&s, d.vocab_size);
    cJSON_AddItemToObject(tr->root, "settings", trace_settings(&s, &m));
    cJSON *ds = trace_dataset(&d);
    cJSON_ReplaceItemInObject(ds, "path", cJSON_CreateString(data_path));
    cJSON_AddItemToObject(tr->root, "dataset", ds);
    dataset_free(&d);
}

static const char *write_train(const char *name, const TrainSpec *t) {
    const char *path = in_dir(name);
    Trace tr;
    trace_open(&tr, path, "train");
    common_header(&tr, t->lr, t->n_steps, t->text, t->data_path);
    cJSON *eng = cJSON_AddObjectToObject(tr.root, "engine");
    cJSON_AddStringToObject(eng, "name", "scalar");
    cJSON_AddStringToObject(eng, "precision", "fp64");
    cJSON_AddNumberToObject(tr.root, "num_params", 4192);
    cJSON *steps = cJSON_AddArrayToObject(tr.root, "steps");
    for (int i = 0; i < t->n_steps; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "step", i + 1);
        trace_add_number(o, "lr", t->lr * (1 - (double)i / t->n_steps));
        trace_add_number(o, "loss", t->loss[i]);
        trace_add_number(o, "time_s", t->time_s[i]);
        cJSON_AddItemToArray(steps, o);
    }
    cJSON *samples = cJSON_AddArrayToObject(tr.root, "samples");
    for (int i = 0; i < t->n_samples; i++) cJSON_AddItemToArray(samples, cJSON_CreateString(t->samples[i]));
    trace_add_number(tr.root, "train_time_s", 0.5);
    trace_commit(&tr);
    return path;
}

typedef struct {
    int n_steps;
    double loss[2][MAX_STEPS];
    int fail_step;   // 1-based step of the first failure (0: pass)
} CompareSpec;

static void compare_spec(CompareSpec *c, int n) {
    memset(c, 0, sizeof *c);
    c->n_steps = n;
    for (int i = 0; i < n; i++) {
        c->loss[0][i] = 3.2 - 0.02 * i + 0.03 * cos(i * 0.9);
        c->loss[1][i] = c->loss[0][i];
    }
    c->fail_step = 7;
}

// The grads error of layer0.attn_wq at step i (1-based): 0.5 at the failing
// step, tiny elsewhere; logits errors 1e-16 * step.
static double wq_grad_err(const CompareSpec *c, int step) {
    return step == c->fail_step ? 0.5 : 1e-17 * step;
}

static const char *write_compare(const char *name, const CompareSpec *c) {
    const char *path = in_dir(name);
    Trace tr;
    trace_open(&tr, path, "compare");
    common_header(&tr, 0.01, c->n_steps, "emma\nolivia\nava\n", "data/names.txt");
    cJSON *engines = cJSON_AddArrayToObject(tr.root, "engines");
    const char *names[2] = {"scalar", "cpu"};
    for (int k = 0; k < 2; k++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", names[k]);
        cJSON_AddStringToObject(e, "precision", "fp64");
        cJSON_AddItemToArray(engines, e);
    }
    cJSON_AddStringToObject(tr.root, "mode", "lockstep");
    cJSON_AddStringToObject(tr.root, "precision", "fp64");
    cJSON *tol = cJSON_AddObjectToObject(tr.root, "tolerances");
    const char *qs[4] = {"loss", "logits", "grads", "params"};
    for (int q = 0; q < 4; q++) {
        cJSON *x = cJSON_AddObjectToObject(tol, qs[q]);
        trace_add_number(x, "atol", 1e-14);
        trace_add_number(x, "rtol", 1e-12);
    }
    cJSON *steps = cJSON_AddArrayToObject(tr.root, "steps");
    for (int i = 0; i < c->n_steps; i++) {
        int step = i + 1;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "step", step);
        trace_add_number(o, "lr", 0.01 * (1 - (double)i / c->n_steps));
        cJSON *l = cJSON_AddArrayToObject(o, "loss"), *t = cJSON_AddArrayToObject(o, "time_s");
        for (int k = 0; k < 2; k++) {
            cJSON_AddItemToArray(l, trace_number(c->loss[k][i]));
            cJSON_AddItemToArray(t, trace_number(k ? 0.0001 : 0.001));
        }
        cJSON *me = cJSON_AddObjectToObject(o, "max_err"), *mr = cJSON_AddObjectToObject(o, "max_rel");
        trace_add_number(me, "logits", 1e-16 * step);
        trace_add_number(me, "loss", fabs(c->loss[0][i] - c->loss[1][i]));
        trace_add_number(me, "wte.grad", 2e-17);
        trace_add_number(me, "layer0.attn_wq.grad", wq_grad_err(c, step));
        trace_add_number(me, "wte", 0);
        trace_add_number(mr, "logits", 1e-17);
        trace_add_number(mr, "loss", 0);
        trace_add_number(mr, "wte.grad", 1e-16);
        trace_add_number(mr, "layer0.attn_wq.grad", step == c->fail_step ? 2.0 : 1e-15);
        trace_add_number(mr, "wte", 0);
        cJSON_AddBoolToObject(o, "ok", step != c->fail_step);
        cJSON_AddItemToArray(steps, o);
    }
    cJSON_AddStringToObject(tr.root, "verdict", c->fail_step ? "fail" : "pass");
    if (c->fail_step) {
        cJSON *ff = cJSON_AddObjectToObject(tr.root, "first_failure");
        cJSON_AddNumberToObject(ff, "step", c->fail_step);
        cJSON_AddStringToObject(ff, "quantity", "grads");
        cJSON_AddStringToObject(ff, "tensor", "layer0.attn_wq");
        cJSON_AddNumberToObject(ff, "index", 37);
        cJSON_AddStringToObject(ff, "where", "layer0.attn_wq[2,5] (row 2, col 5)");
        trace_add_number(ff, "a", 0.75);
        trace_add_number(ff, "b", 0.25);
        trace_add_number(ff, "abs_err", 0.5);
        trace_add_number(ff, "tol", 2.5e-13);
    } else {
        cJSON_AddNullToObject(tr.root, "first_failure");
    }
    trace_commit(&tr);
    return path;
}

// ---------------------------------------------------------------------------
// diff

Test(trace_tool, diff_identical_traces_exit_0) {
    TrainSpec t;
    train_spec(&t, 40);
    const char *a = write_train("a.json", &t), *b = write_train("b.json", &t);
    ThRun r = run_tool("diff", a, b, NULL);
    cr_assert_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_assert(strstr(r.out, "loss: bit-identical over 40 steps"), "%s", r.out);
    cr_assert(strstr(r.out, "settings: equal"), "%s", r.out);
    cr_assert(strstr(r.out, "samples: identical (3)"), "%s", r.out);
    cr_assert(strstr(r.out, "result: the same"), "%s", r.out);
    cr_assert_str_empty(r.err);
    th_run_free(&r);
}

Test(trace_tool, diff_last_bit_of_one_loss) {
    TrainSpec t;
    train_spec(&t, 40);
    const char *a = write_train("a.json", &t);
    double before = t.loss[36];
    t.loss[36] = nextafter(t.loss[36], INFINITY);
    const char *b = write_train("b.json", &t);
    ThRun r = run_tool("diff", a, b, NULL);
    cr_assert_eq(r.status, 1, "exit %d\n%s%s", r.status, r.out, r.err);
    char want[200];
    snprintf(want, sizeof want, "first difference at step 37: A = %.17g, B = %.17g", before, t.loss[36]);
    cr_assert(strstr(r.out, want), "expected '%s' in:\n%s", want, r.out);
    cr_assert(strstr(r.out, "1 ulp)"), "%s", r.out);
    cr_assert(strstr(r.out, "loss: 1 of 40 steps differ"), "%s", r.out);
    cr_assert(strstr(r.out, "largest absolute difference"), "%s", r.out);
    cr_assert(strstr(r.out, "settings: equal"), "%s", r.out);
    cr_assert(strstr(r.out, "result: the traces differ (loss)"), "%s", r.out);
    th_run_free(&r);
    // Reversed, the same step and the same distance.
    r = run_tool("diff", b, a, NULL);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.out, "first difference at step 37"), "%s", r.out);
    cr_assert(strstr(r.out, "1 ulp)"), "%s", r.out);
    th_run_free(&r);
}

Test(trace_tool, diff_ulps_across_zero_and_largest_difference) {
    TrainSpec t;
    train_spec(&t, 10);
    t.loss[2] = -DBL_TRUE_MIN;
    const char *a = write_train("a.json", &t);
    t.loss[2] = DBL_TRUE_MIN;      // 2 ulps away: -min, -0/+0, +min
    t.loss[8] += 0.25;             // the largest absolute difference
    const char *b = write_train("b.json", &t);
    ThRun r = run_tool("diff", a, b, NULL);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.out, "first difference at step 3:"), "%s", r.out);
    cr_assert(strstr(r.out, "2 ulps)"), "%s", r.out);
    cr_assert(strstr(r.out, "largest absolute difference 0.25 at step 9"), "%s", r.out);
    cr_assert(strstr(r.out, "loss: 2 of 10 steps differ"), "%s", r.out);
    th_run_free(&r);
}

Test(trace_tool, diff_tolerance) {
    TrainSpec t;
    train_spec(&t, 20);
    const char *a = write_train("a.json", &t);
    t.loss[9] *= 1 + 1e-12;
    const char *b = write_train("b.json", &t);
    ThRun r = run_tool("diff", a, b, "--tolerance", "1e-9", NULL);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "all within the relative tolerance"), "%s", r.out);
    cr_assert(strstr(r.out, "first difference at step 10"), "%s", r.out);
    th_run_free(&r);
    r = run_tool("diff", "--tolerance=1e-15", a, b, NULL);
    cr_assert_eq(r.status, 1, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "beyond the relative tolerance"), "%s", r.out);
    th_run_free(&r);
    r = run_tool("diff", a, b, NULL);
    cr_assert_eq(r.status, 1);
    th_run_free(&r);
}

Test(trace_tool, diff_reports_settings) {
    TrainSpec t;
    train_spec(&t, 12);
    const char *a = write_train("a.json", &t);
    t.lr = 0.02;
    const char *b = write_train("b.json", &t);
    ThRun r = run_tool("diff", a, b, NULL);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.out, "settings: 1 difference"), "%s", r.out);
    cr_assert(strstr(r.out, "settings.lr: A = 0.01, B = 0.02"), "%s", r.out);
    // The per-step learning rates follow the setting.
    cr_assert(strstr(r.out, "lr: 12 of 12 steps differ"), "%s", r.out);
    cr_assert(strstr(r.out, "loss: bit-identical"), "%s", r.out);
    cr_assert(strstr(r.out, "result: the traces differ (settings, lr)"), "%s", r.out);
    th_run_free(&r);
}

Test(trace_tool, diff_dataset_and_samples) {
    TrainSpec t;
    train_spec(&t, 5);
    const char *a = write_train("a.json", &t);
    // Only the path differs: shown, not counted.
    t.data_path = "elsewhere/names.txt";
    const char *b = write_train("b.json", &t);
    ThRun r = run_tool("diff", a, b, NULL);
    cr_assert_eq(r.status, 0, "%s", r.out);
    cr_assert(strstr(r.out, "dataset.path: A = \"data/names.txt\", B = \"elsewhere/names.txt\" (not counted)"),
              "%s", r.out);
    th_run_free(&r);
    // Other documents with the same characters: sha256, bytes, ... differ.
    t.text = "emma\nolivia\nava\nisabella\nbella\n";
    t.samples[1] = "elle";
    const char *c = write_train("c.json", &t);
    r = run_tool("diff", a, c, NULL);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.out, "dataset.sha256"), "%s", r.out);
    cr_assert(strstr(r.out, "sample 2: A \"ella\", B \"elle\""), "%s", r.out);
    cr_assert(strstr(r.out, "result: the traces differ (dataset, samples)"), "%s", r.out);
    th_run_free(&r);
}

Test(trace_tool, diff_different_lengths) {
    TrainSpec t;
    train_spec(&t, 10);
    const char *a = write_train("a.json", &t);
    t.n_steps = 9;
    const char *b = write_train("b.json", &t);
    ThRun r = run_tool("diff", a, b, NULL);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.out, "steps: A has 10, B has 9"), "%s", r.out);
    th_run_free(&r);
}

Test(trace_tool, diff_compare_traces_per_engine) {
    CompareSpec c;
    compare_spec(&c, 12);
    const char *a = write_compare("a.json", &c);
    c.loss[1][4] += 1e-13;
    const char *b = write_compare("b.json", &c);
    ThRun r = run_tool("diff", a, b, NULL);
    cr_assert_eq(r.status, 1, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "loss of scalar (reference): bit-identical over 12 steps"), "%s", r.out);
    cr_assert(strstr(r.out, "loss of cpu (candidate): 1 of 12 steps differ"), "%s", r.out);
    cr_assert(strstr(r.out, "first difference at step 5"), "%s", r.out);
    cr_assert(strstr(r.out, "verdict: both fail"), "%s", r.out);
    th_run_free(&r);
    c.fail_step = 0;
    const char *p = write_compare("pass.json", &c);
    r = run_tool("diff", b, p, NULL);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.out, "verdict: A = fail, B = pass"), "%s", r.out);
    th_run_free(&r);
}

Test(trace_tool, diff_refuses_different_kinds) {
    TrainSpec t;
    train_spec(&t, 5);
    CompareSpec c;
    compare_spec(&c, 5);
    const char *a = write_train("a.json", &t), *b = write_compare("b.json", &c);
    ThRun r = run_tool("diff", a, b, NULL);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, b) && strstr(r.err, "compare trace"), "%s", r.err);
    cr_assert_eq(count_char(r.err, '\n'), 1, "%s", r.err);
    cr_assert_str_empty(r.out);
    th_run_free(&r);
}

// ---------------------------------------------------------------------------
// inspect

Test(trace_tool, inspect_train_text) {
    TrainSpec t;
    train_spec(&t, 30);
    t.loss[16] = 1.25;   // the minimum, at step 17
    const char *a = write_train("a.json", &t);
    ThRun r = run_tool("inspect", a, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "kind \"train\""), "%s", r.out);
    cr_assert(strstr(r.out, "version 1"), "%s", r.out);
    cr_assert(strstr(r.out, "steps: 30"), "%s", r.out);
    cr_assert(strstr(r.out, "lr=0.01"), "%s", r.out);
    cr_assert(strstr(r.out, "engine: scalar (fp64)"), "%s", r.out);
    const char *min = strstr(r.out, "\n  min ");
    cr_assert(min, "%s", r.out);
    char line[128];
    snprintf(line, sizeof line, "%.*s", (int)(strchr(min + 1, '\n') - min - 1), min + 1);
    cr_assert(strstr(line, " 1.25 "), "%s", line);
    size_t len = strlen(line);
    cr_assert(len > 10 && !strcmp(line + len - 10, "at step 17"), "%s", line);
    cr_assert(strstr(r.out, "mean of the first 30 steps"), "%s", r.out);
    cr_assert(strstr(r.out, "\"mia\", \"ella\", \"zoe\""), "%s", r.out);
    cr_assert(strstr(r.out, "median"), "%s", r.out);
    th_run_free(&r);
}

static const cJSON *get(const cJSON *o, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    cr_assert(v, "no \"%s\" in the JSON", name);
    return v;
}

static int same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

Test(trace_tool, inspect_train_json) {
    TrainSpec t;
    train_spec(&t, 150);
    t.loss[120] = 0.125;   // the minimum, step 121
    t.loss[3] = 9.5;       // the maximum, step 4
    const char *a = write_train("a.json", &t);
    ThRun r = run_tool("inspect", "--json", a, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cJSON *j = cJSON_Parse(r.out);
    cr_assert(j, "not JSON:\n%s", r.out);
    cr_assert_str_eq(get(j, "kind")->valuestring, "train");
    cr_assert_eq(get(j, "steps")->valueint, 150);
    const cJSON *loss = cJSON_GetArrayItem(get(j, "loss"), 0);
    cr_assert(loss);
    cr_assert_eq(get(get(loss, "min"), "step")->valueint, 121);
    cr_assert(same_bits(get(get(loss, "min"), "value")->valuedouble, 0.125));
    cr_assert_eq(get(get(loss, "max"), "step")->valueint, 4);
    cr_assert(same_bits(get(get(loss, "last"), "value")->valuedouble, t.loss[149]));
    // The windows are 100 steps; the means are exact (same order of summation).
    double first = 0, last = 0;
    for (int i = 0; i < 100; i++) first += t.loss[i];
    for (int i = 50; i < 150; i++) last += t.loss[i];
    cr_assert_eq(get(get(loss, "mean_first"), "steps")->valueint, 100);
    cr_assert(same_bits(get(get(loss, "mean_first"), "value")->valuedouble, first / 100));
    cr_assert(same_bits(get(get(loss, "mean_last"), "value")->valuedouble, last / 100));
    // time_s cycles through 1..7 ms: 150 steps = 21 full cycles + 3 -> median 4 ms.
    const cJSON *time = cJSON_GetArrayItem(get(j, "time_per_step_s"), 0);
    cr_assert(same_bits(get(time, "median")->valuedouble, 0.004), "median %.17g",
              get(time, "median")->valuedouble);
    cr_assert_eq(cJSON_GetArraySize(get(j, "samples")), 3);
    cr_assert_str_eq(get(get(j, "dataset"), "path")->valuestring, "data/names.txt");
    cJSON_Delete(j);
    th_run_free(&r);
}

Test(trace_tool, inspect_time_per_step) {
    TrainSpec t;
    train_spec(&t, 5);
    const double ms[5] = {5, 1, 4, 2, 30};   // sorted 1 2 4 5 30: median 4, mean 8.4
    for (int i = 0; i < 5; i++) t.time_s[i] = ms[i] / 1000;
    const char *a = write_train("a.json", &t);
    ThRun r = run_tool("inspect", "--json", a, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cJSON *j = cJSON_Parse(r.out);
    cr_assert(j);
    const cJSON *time = cJSON_GetArrayItem(get(j, "time_per_step_s"), 0);
    cr_assert(same_bits(get(time, "median")->valuedouble, 0.004));
    double sum = 0;
    for (int i = 0; i < 5; i++) sum += t.time_s[i];
    cr_assert(same_bits(get(time, "mean")->valuedouble, sum / 5));
    cr_assert_eq(get(time, "steps")->valueint, 5);
    cJSON_Delete(j);
    th_run_free(&r);
    r = run_tool("inspect", a, NULL);
    cr_assert(strstr(r.out, "time per step: mean 8.4 ms, median 4 ms"), "%s", r.out);
    th_run_free(&r);
}

Test(trace_tool, inspect_compare_text) {
    CompareSpec c;
    compare_spec(&c, 12);
    const char *a = write_compare("c.json", &c);
    ThRun r = run_tool("inspect", a, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "kind \"compare\""), "%s", r.out);
    cr_assert(strstr(r.out, "engines: scalar (fp64, reference), cpu (fp64, candidate)"), "%s", r.out);
    cr_assert(strstr(r.out, "verdict: fail (1 of 12 steps not ok)"), "%s", r.out);
    const char *ff = strstr(r.out, "first failure: step 7: grads of layer0.attn_wq out of tolerance at index 37, "
                                   "layer0.attn_wq[2,5] (row 2, col 5): cpu = 0.75, scalar (reference) = 0.25, "
                                   "|a-b| = 0.5 > tolerance 2.5e-13");
    cr_assert(ff, "%s", r.out);
    // The table: the largest error of layer0.attn_wq.grad is 0.5 at step 7;
    // logits grow with the step: 1.2e-15 at step 12.
    const char *row = strstr(r.out, "  grads    layer0.attn_wq.grad");
    cr_assert(row, "%s", r.out);
    char line[256];
    snprintf(line, sizeof line, "%.*s", (int)(strchr(row, '\n') - row), row);
    cr_assert(strstr(line, " 0.5 ") && strstr(line, " 7 ") && strstr(line, " 2 "), "%s", line);
    row = strstr(r.out, "  logits   logits");
    cr_assert(row, "%s", r.out);
    snprintf(line, sizeof line, "%.*s", (int)(strchr(row, '\n') - row), row);
    cr_assert(strstr(line, " 1.2e-15 ") && strstr(line, " 12 "), "%s", line);
    cr_assert(strstr(r.out, "  params   wte "), "%s", r.out);
    th_run_free(&r);
}

Test(trace_tool, inspect_compare_json) {
    CompareSpec c;
    compare_spec(&c, 9);
    const char *a = write_compare("c.json", &c);
    ThRun r = run_tool("inspect", a, "--json", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cJSON *j = cJSON_Parse(r.out);
    cr_assert(j, "%s", r.out);
    cr_assert_str_eq(get(j, "verdict")->valuestring, "fail");
    cr_assert_eq(get(j, "failed_steps")->valueint, 1);
    const cJSON *ff = get(j, "first_failure");
    cr_assert_eq(get(ff, "step")->valueint, 7);
    cr_assert(strstr(get(ff, "text")->valuestring, "step 7: grads of layer0.attn_wq"));
    int found = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, get(j, "max_errors")) {
        if (strcmp(get(row, "name")->valuestring, "layer0.attn_wq.grad")) continue;
        found = 1;
        cr_assert_str_eq(get(row, "quantity")->valuestring, "grads");
        cr_assert(same_bits(get(row, "max_err")->valuedouble, 0.5));
        cr_assert_eq(get(row, "step")->valueint, 7);
        cr_assert(same_bits(get(row, "rtol")->valuedouble, 1e-12));
    }
    cr_assert(found, "%s", r.out);
    cr_assert_eq(cJSON_GetArraySize(get(j, "loss")), 2);
    cJSON_Delete(j);
    th_run_free(&r);
}

Test(trace_tool, inspect_json_numbers_are_exact) {
    // Losses spread over the whole double range go through the writer, the
    // reader and the tool's JSON without losing a bit.
    TrainSpec t;
    train_spec(&t, 64);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 64; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v = ldexp((double)(x >> 11) / 9007199254740992.0 + 0.5, (int)(x % 1800) - 900);
        t.loss[i] = v;
    }
    t.loss[40] = DBL_TRUE_MIN * 3;   // subnormal: the smallest
    const char *a = write_train("a.json", &t);
    ThRun r = run_tool("inspect", "--json", a, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cJSON *j = cJSON_Parse(r.out);
    cr_assert(j);
    const cJSON *loss = cJSON_GetArrayItem(get(j, "loss"), 0);
    cr_assert_eq(get(get(loss, "min"), "step")->valueint, 41);
    cr_assert(same_bits(get(get(loss, "min"), "value")->valuedouble, DBL_TRUE_MIN * 3));
    cr_assert(same_bits(get(get(loss, "first"), "value")->valuedouble, t.loss[0]));
    cr_assert(same_bits(get(get(loss, "last"), "value")->valuedouble, t.loss[63]));
    cJSON_Delete(j);
    th_run_free(&r);
}

// ---------------------------------------------------------------------------
// plot

static int count_str(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub)) n++;
    return n;
}

Test(trace_tool, plot_text_and_svg) {
    TrainSpec t;
    train_spec(&t, 100);
    const char *a = write_train("a.json", &t);
    for (int i = 0; i < 100; i++) t.loss[i] += 0.5;
    const char *b = write_train("b.json", &t);
    const char *svg = in_dir("out.svg");
    ThRun r = run_tool("plot", a, b, "--svg", svg, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    // The text chart: both glyphs, a y axis with values, the x axis, a legend.
    cr_assert(strstr(r.out, "legend: * "), "%s", r.out);
    cr_assert(strstr(r.out, "o ") && strstr(r.out, "b.json"), "%s", r.out);
    cr_assert(strstr(r.out, "+---"), "%s", r.out);
    cr_assert(strstr(r.out, "100"), "%s", r.out);
    cr_assert(strstr(r.out, "step"), "%s", r.out);
    cr_assert_str_empty(r.err);
    size_t n;
    char *s = th_read_file(svg, &n);
    cr_assert(strncmp(s, "<svg", 4) == 0, "%.60s", s);
    cr_assert(n > 8 && strcmp(s + n - 7, "</svg>\n") == 0);
    cr_assert_eq(count_str(s, "<path"), 2, "%s", s);
    cr_assert(strstr(s, " d=\"M"), "%s", s);
    // Balanced: every element is closed or self-closing.
    cr_assert_eq(count_str(s, "<text"), count_str(s, "</text>"));
    free(s);
    cr_assert_str_eq(dir_listing(), "a.json b.json out.svg");
    th_run_free(&r);
}

// Every line of a CSV has the header's columns; the lines, header included.
static int csv_lines(const char *csv, const char *header) {
    size_t hl = strlen(header);
    cr_assert(!strncmp(csv, header, hl) && csv[hl] == '\n', "the CSV's first line is not %s: %.200s", header, csv);
    int lines = 0;
    for (const char *p = csv; *p; p = strchr(p, '\n') + 1, lines++) {
        cr_assert(strchr(p, '\n'), "an unterminated line: %s", p);
        int commas = 0;
        for (const char *q = p; *q != '\n'; q++) commas += *q == ',';
        cr_expect_eq(commas, count_char(header, ','), "line %d: %.*s", lines + 1, (int)strcspn(p, "\n"), p);
    }
    return lines;
}

// trace export writes the CSV alone to stdout (its default, and --out -);
// plot --svg - the SVG alone (nothing else goes to stdout).
Test(trace_tool, export_and_svg_on_stdout_alone) {
    TrainSpec t;
    train_spec(&t, 5);
    const char *a = write_train("a.json", &t);
    CompareSpec c;
    compare_spec(&c, 8);
    const char *b = write_compare("c.json", &c);
    const char *steps = "step,lr,loss,time_s", *errors = "step,quantity,tensor,max_abs,max_rel,n_bad,err_rms,rms,ref_err_rms,bound";
    const struct { const char *args[7], *header; int lines; } cases[] = {
        {{"export", "--csv", a, NULL}, steps, 6},
        {{"export", "--csv", a, "--out", "-", NULL}, steps, 6},
        {{"export", "--csv", "--errors", b, "--out", "-", NULL}, errors, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ThRun r = run_argv(cases[i].args);
        cr_assert_eq(r.status, 0, "%s", r.err);
        int n = csv_lines(r.out, cases[i].header);
        if (cases[i].lines) cr_expect_eq(n, cases[i].lines, "%s", r.out);
        else cr_expect_gt(n, 8, "%s", r.out);
        cr_expect_str_empty(r.err);
        th_run_free(&r);
    }
    ThRun r = run_tool("plot", a, "--svg", "-", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(!strncmp(r.out, "<svg", 4) && r.out_len > 7 && !strcmp(r.out + r.out_len - 7, "</svg>\n"), "%s", r.out);
    th_run_free(&r);
    cr_assert_str_eq(dir_listing(), "a.json c.json");
}

Test(trace_tool, plot_compare_has_error_panel) {
    CompareSpec c;
    compare_spec(&c, 40);
    for (int i = 0; i < 40; i++) c.loss[1][i] += 0.01;
    const char *a = write_compare("c.json", &c);
    const char *svg = in_dir("c.svg");
    ThRun r = run_tool("plot", a, "--svg", svg, "--log", "--width", "640", "--height", "480", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "largest error per step (log scale)"), "%s", r.out);
    cr_assert(strstr(r.out, "scalar") && strstr(r.out, "cpu"), "%s", r.out);
    cr_assert(strstr(r.out, "logits") && strstr(r.out, "grads"), "%s", r.out);
    char *s = th_read_file(svg, NULL);
    cr_assert(strstr(s, "width=\"640\" height=\"480\""), "%.200s", s);
    cr_assert_eq(count_str(s, "<path"), 4, "two losses and two errors:\n%s", s);
    cr_assert(strstr(s, "largest error per step"));
    cr_assert(strstr(s, ">1e-12</text>"), "log ticks expected:\n%s", s);
    free(s);
    cr_assert_str_eq(dir_listing(), "c.json c.svg");
    th_run_free(&r);
}

// Read a trace, let `edit` change its JSON, write it back.
static void edit_trace(const char *path, void (*edit)(cJSON *root)) {
    char *text = th_read_file(path, NULL);
    cJSON *root = cJSON_Parse(text);
    cr_assert(root, "%s is not JSON", path);
    free(text);
    edit(root);
    char *out = cJSON_Print(root);
    write_text(path, out, strlen(out));
    free(out);
    cJSON_Delete(root);
}

// A free-mode bf16 trace as compare --mode free writes one: max_err holds the
// loss difference of the step, window_drift the judged |mean a-b| of the last
// 50 steps, drift the tolerance and the window.
static void make_free_bf16(cJSON *root) {
    cJSON_ReplaceItemInObject(root, "mode", cJSON_CreateString("free"));
    cJSON_ReplaceItemInObject(cJSON_GetArrayItem(cJSON_GetObjectItem(root, "engines"), 1), "precision",
                              cJSON_CreateString("bf16"));
    double sum = 0, diffs[MAX_STEPS];
    int i = 0;
    cJSON *st;
    cJSON_ArrayForEach(st, cJSON_GetObjectItem(root, "steps")) {
        const cJSON *l = cJSON_GetObjectItem(st, "loss");
        diffs[i] = cJSON_GetArrayItem(l, 1)->valuedouble - cJSON_GetArrayItem(l, 0)->valuedouble;
        sum += diffs[i] - (i >= 50 ? diffs[i - 50] : 0);
        cJSON_DeleteItemFromObject(st, "max_rel");
        cJSON *me = cJSON_CreateObject();
        trace_add_number(me, "loss", fabs(diffs[i]));
        cJSON_ReplaceItemInObject(st, "max_err", me);
        trace_add_number(st, "window_drift", fabs(sum) / (i + 1 < 50 ? i + 1 : 50));
        cJSON_ReplaceItemInObject(st, "ok", cJSON_CreateTrue());
        i++;
    }
    cJSON *dr = cJSON_AddObjectToObject(root, "drift");
    trace_add_number(dr, "tol", 0.01);
    cJSON_AddNumberToObject(dr, "window", 50);
}

// Free mode judges the window mean: the plots draw it with its tolerance,
// besides the per-step difference that crosses the tolerance while the run passes.
Test(trace_tool, plot_free_draws_the_window_mean) {
    CompareSpec c;
    compare_spec(&c, 80);
    c.fail_step = 0;
    for (int i = 0; i < 80; i++) c.loss[1][i] += i % 2 ? 0.02 : -0.018;
    const char *a = write_compare("f.json", &c);
    edit_trace(a, make_free_bf16);
    const char *svg = in_dir("f.svg");
    ThRun r = run_tool("plot", a, "--svg", svg, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "loss difference per step (log scale)"), "%s", r.out);
    cr_expect(strstr(r.out, "window mean: |mean a-b| of 50 steps (judged)"), "%s", r.out);
    cr_expect(strstr(r.out, "- tolerance 0.01 on the 50-step window mean (judged)"), "%s", r.out);
    cr_expect(!strstr(r.out, "excused") && !strstr(r.out, "failing"), "%s", r.out);
    char *s = th_read_file(svg, NULL);
    cr_expect_eq(count_str(s, "<path"), 4, "two losses, the per-step difference, the window mean:\n%s", s);
    cr_expect(strstr(s, "window mean: |mean a-b| of 50 steps (judged)</text>"), "%s", s);
    cr_expect(strstr(s, "tolerance 0.01 on the 50-step window mean (judged)</text>"), "%s", s);
    cr_expect_eq(count_str(s, "class=\"bound\""), 1, "%s", s);
    cr_expect(strstr(s, "class=\"bound\" data-value=\"0.01\""), "%s", s);
    cr_expect(!strstr(s, "excused step") && !strstr(s, "failing step"), "%s", s);
    free(s);
    th_run_free(&r);
}

static void distinct_atols(cJSON *root) {
    cJSON *tol = cJSON_GetObjectItem(root, "tolerances");
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(tol, "logits"), "atol", cJSON_CreateNumber(1e-13));
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(tol, "grads"), "atol", cJSON_CreateNumber(1e-15));
}

static void excuse_step_3(cJSON *root) {
    cJSON *ex = cJSON_AddArrayToObject(root, "excused_steps"), *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "step", 3);
    cJSON_AddItemToArray(ex, e);
}

// Lockstep: each plotted quantity has its own bound (its atol, in its colour);
// the legend names failing and excused steps only when there are some.
Test(trace_tool, plot_lockstep_bounds_and_marks) {
    CompareSpec c;
    compare_spec(&c, 20);
    c.fail_step = 0;
    const char *a = write_compare("c.json", &c);
    edit_trace(a, distinct_atols);
    const char *svg = in_dir("c.svg");
    ThRun r = run_tool("plot", a, "--svg", svg, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "- logits atol 1e-13 (tolerance floor)"), "%s", r.out);
    cr_expect(strstr(r.out, "= grads atol 1e-15 (tolerance floor)"), "%s", r.out);
    cr_expect(!strstr(r.out, "excused") && !strstr(r.out, "failing"), "%s", r.out);
    char *s = th_read_file(svg, NULL);
    cr_expect_eq(count_str(s, "class=\"bound\""), 2, "%s", s);
    cr_expect(strstr(s, "class=\"bound\" data-value=\"1e-13\""), "%s", s);
    cr_expect(strstr(s, "class=\"bound\" data-value=\"1e-15\""), "%s", s);
    cr_expect(strstr(s, "logits atol 1e-13 (tolerance floor)</text>"), "%s", s);
    cr_expect(strstr(s, "grads atol 1e-15 (tolerance floor)</text>"), "%s", s);
    cr_expect(!strstr(s, "excused step") && !strstr(s, "failing step"), "%s", s);
    free(s);
    th_run_free(&r);

    // A failing step, none excused: only the failing step in the legends.
    compare_spec(&c, 20);
    a = write_compare("c.json", &c);
    r = run_tool("plot", a, "--svg", svg, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "F failing step (marked under the axis)"), "%s", r.out);
    cr_expect(!strstr(r.out, "excused"), "%s", r.out);
    s = th_read_file(svg, NULL);
    cr_expect(strstr(s, ">failing step</text>") && !strstr(s, "excused step"), "%s", s);
    free(s);
    th_run_free(&r);

    // An excused step too: both.
    edit_trace(a, excuse_step_3);
    r = run_tool("plot", a, "--svg", svg, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "F failing step, E excused step (marked under the axis)"), "%s", r.out);
    s = th_read_file(svg, NULL);
    cr_expect(strstr(s, ">failing step</text>") && strstr(s, ">excused step</text>"), "%s", s);
    free(s);
    th_run_free(&r);
}

Test(trace_tool, plot_text_size) {
    TrainSpec t;
    train_spec(&t, 60);
    const char *a = write_train("a.json", &t);
    ThRun r = run_tool("plot", a, "--width", "50", "--height", "8", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    // The plot's title (the trace, its engine, its steps), a blank line, the
    // panel's title, then 8 chart rows, each at most 50 characters.
    cr_expect(strstr(r.out, "a.json: scalar fp64, 60 steps\n\n") != NULL, "title: %s", r.out);
    const char *p = strchr(strchr(strchr(r.out, '\n') + 1, '\n') + 1, '\n') + 1;
    for (int row = 0; row < 8; row++) {
        const char *e = strchr(p, '\n');
        cr_assert(e);
        cr_assert(e - p <= 50, "row %d is %d wide", row, (int)(e - p));
        const char *axis = strpbrk(p, "|+");
        cr_assert(axis && axis < e, "row %d has no y axis:\n%s", row, r.out);
        p = e + 1;
    }
    cr_assert(strncmp(p + strspn(p, " "), "++", 2) == 0 || strncmp(p + strspn(p, " "), "+-", 2) == 0,
              "x axis expected after 8 rows:\n%s", r.out);
    th_run_free(&r);
}

Test(trace_tool, plot_failure_leaves_no_file) {
    TrainSpec t;
    train_spec(&t, 10);
    const char *a = write_train("a.json", &t);
    const char *old = in_dir("old.svg");
    write_text(old, "OLD", 3);
    // An unreadable input: the existing output is untouched.
    ThRun r = run_tool("plot", a, in_dir("missing.json"), "--svg", old, NULL);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "missing.json"), "%s", r.err);
    cr_assert_str_empty(r.out);
    char *s = th_read_file(old, NULL);
    cr_assert_str_eq(s, "OLD");
    free(s);
    th_run_free(&r);
    // An output folder that does not exist.
    r = run_tool("plot", a, "--svg", in_dir("no/such/dir/x.svg"), NULL);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "no/such/dir/x.svg"), "%s", r.err);
    cr_assert_str_empty(r.out, "reported before the chart: %s", r.out);
    th_run_free(&r);
    // An output that is a folder.
    mkdir(in_dir("sub"), 0755);
    r = run_tool("plot", a, "--svg", in_dir("sub"), NULL);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "sub"), "%s", r.err);
    th_run_free(&r);
    cr_assert_str_eq(dir_listing(), "a.json old.svg sub");
}

// ---------------------------------------------------------------------------
// Errors: one line naming the file, exit 2, nothing on stdout.

static void expect_bad(const char *path, const char *problem) {
    const char *good = in_dir("good.json");
    if (access(good, F_OK) != 0) {
        TrainSpec t;
        train_spec(&t, 3);
        write_train("good.json", &t);
    }
    ThRun runs[4] = {
        run_tool("inspect", path, NULL),
        run_tool("diff", good, path, NULL),
        run_tool("diff", path, good, NULL),
        run_tool("plot", path, NULL),
    };
    for (int k = 0; k < 4; k++) {
        ThRun *r = &runs[k];
        cr_assert_eq(r->status, 2, "[%d] %s: exit %d\n%s", k, path, r->status, r->err);
        cr_assert(strstr(r->err, path), "[%d] the message does not name %s: %s", k, path, r->err);
        cr_assert(strstr(r->err, problem), "[%d] expected '%s' in: %s", k, problem, r->err);
        cr_assert_eq(count_char(r->err, '\n'), 1, "[%d] one line expected: %s", k, r->err);
        cr_assert_str_empty(r->out, "[%d] %s", k, r->out);
        th_run_free(r);
    }
}

static const char *bad_file(const char *name, const char *text) {
    const char *p = in_dir(name);
    write_text(p, text, strlen(text));
    return p;
}

#define ENVELOPE "\"format\": \"microgpt-trace\", \"version\": 1, "

Test(trace_tool, errors_unreadable_inputs) {
    expect_bad(in_dir("missing.json"), "cannot open: No such file or directory");
    mkdir(in_dir("folder.json"), 0755);
    expect_bad(in_dir("folder.json"), "is a directory");
    expect_bad(bad_file("empty.json", ""), "is empty");
    expect_bad(bad_file("blank.json", " \n\t\n"), "is empty");
    const char *bin = in_dir("binary.json");
    write_text(bin, "{\"a\0", 4);
    expect_bad(bin, "NUL byte");
}

Test(trace_tool, errors_unreadable_permission) {
    if (geteuid() == 0) {
        teardown();   // a skipped test does not run the fixture's fini
        cr_skip_test("running as root: permissions do not stop reads");
    }
    const char *p = bad_file("secret.json", "{}");
    chmod(p, 0);
    expect_bad(p, "cannot open: Permission denied");
}

Test(trace_tool, errors_not_json) {
    expect_bad(bad_file("text.json", "hello world\n"), "not JSON (syntax error at line 1, column 1)");
    expect_bad(bad_file("garbage.json", "{\"format\": \"microgpt-trace\"}\nxyz"),
               "not JSON (syntax error at line 2");
    expect_bad(bad_file("cut.json", "{\"format\": \"microgpt-trace\", \"steps\": [1, 2"), "truncated?");
    // A real trace cut in half.
    TrainSpec t;
    train_spec(&t, 20);
    size_t n;
    char *full = th_read_file(write_train("whole.json", &t), &n);
    const char *half = in_dir("half.json");
    write_text(half, full, n / 2);
    free(full);
    expect_bad(half, "not JSON");
}

Test(trace_tool, errors_not_a_trace) {
    expect_bad(bad_file("array.json", "[1, 2, 3]"), "not a microgpt trace");
    expect_bad(bad_file("noformat.json", "{\"version\": 1, \"kind\": \"train\", \"steps\": []}"),
               "not a microgpt trace (no \"format\"");
    expect_bad(bad_file("otherformat.json", "{\"format\": \"chrome-trace\", \"version\": 1}"),
               "not a microgpt trace (\"format\" is not");
}

Test(trace_tool, errors_version_kind_fields) {
    expect_bad(bad_file("v2.json", "{\"format\": \"microgpt-trace\", \"version\": 2, \"kind\": \"train\", \"steps\": []}"),
               "unsupported trace version 2 (this tool reads version 1)");
    expect_bad(bad_file("vs.json", "{\"format\": \"microgpt-trace\", \"version\": \"1\", \"kind\": \"train\"}"),
               "\"version\" is missing or not a number");
    expect_bad(bad_file("kind.json", "{" ENVELOPE "\"kind\": \"sweep\", \"steps\": []}"),
               "unsupported trace kind \"sweep\"");
    expect_bad(bad_file("bench.json", "{" ENVELOPE "\"kind\": \"bench\", \"steps\": []}"),
               "bench trace: \"sizes\" is missing or not an array");
    expect_bad(bad_file("nokind.json", "{" ENVELOPE "\"steps\": []}"), "\"kind\" is missing");
    expect_bad(bad_file("nosteps.json", "{" ENVELOPE "\"kind\": \"train\"}"), "has no \"steps\" array");
    expect_bad(bad_file("stepsobj.json", "{" ENVELOPE "\"kind\": \"train\", \"steps\": {}}"),
               "\"steps\" is not an array");
    expect_bad(bad_file("lossstr.json",
                        "{" ENVELOPE "\"kind\": \"train\", \"steps\": [{\"step\": 1, \"loss\": 3}, "
                        "{\"step\": 2, \"loss\": \"3.1\"}]}"),
               "steps[1].loss is not a number");
    expect_bad(bad_file("noloss.json", "{" ENVELOPE "\"kind\": \"train\", \"steps\": [{\"step\": 1}]}"),
               "steps[0] has no \"loss\"");
    expect_bad(bad_file("pair.json", "{" ENVELOPE "\"kind\": \"compare\", \"steps\": [{\"step\": 1, \"loss\": 3}]}"),
               "steps[0].loss is not a pair");
    expect_bad(bad_file("settings.json", "{" ENVELOPE "\"kind\": \"train\", \"settings\": 5, \"steps\": []}"),
               "\"settings\" is not a JSON object");
    expect_bad(bad_file("maxerr.json",
                        "{" ENVELOPE "\"kind\": \"compare\", \"steps\": [{\"loss\": [1, 1], "
                        "\"max_err\": {\"logits\": \"big\"}}]}"),
               "steps[0].max_err.logits is not a number");
}

Test(trace_tool, minimal_traces_are_accepted) {
    // Optional parts missing: no settings, dataset, engines, tolerances, verdict.
    const char *t = bad_file("t.json", "{" ENVELOPE "\"kind\": \"train\", \"steps\": [{\"loss\": 2.5}, {\"loss\": null}]}");
    const char *c = bad_file("c.json", "{" ENVELOPE "\"kind\": \"compare\", \"steps\": [{\"loss\": [2.5, 2.5]}]}");
    ThRun r = run_tool("inspect", t, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "non-finite (null) losses: 1"), "%s", r.out);
    th_run_free(&r);
    r = run_tool("inspect", c, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "verdict: (absent)"), "%s", r.out);
    th_run_free(&r);
    r = run_tool("plot", c, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "no per-step errors"), "%s", r.out);
    th_run_free(&r);
    r = run_tool("diff", t, t, NULL);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    th_run_free(&r);
}

Test(trace_tool, errors_usage) {
    TrainSpec t;
    train_spec(&t, 3);
    const char *a = write_train("a.json", &t);
    struct {
        const char *args[8];
        const char *msg;
    } cases[] = {
        {{NULL}, "usage: trace"},
        {{"frobnicate", NULL}, "unknown command 'frobnicate'"},
        {{"--bogus", NULL}, "unknown flag '--bogus'"},
        {{"inspect", NULL}, "no FILE given"},
        {{"inspect", a, "--bogus", NULL}, "unknown flag '--bogus'"},
        {{"inspect", a, a, NULL}, "one FILE at a time"},
        {{"diff", a, NULL}, "needs two files"},
        {{"diff", a, a, "--tolerance", "abc", NULL}, "--tolerance 'abc'"},
        {{"diff", a, a, "--tolerance", NULL}, "--tolerance needs a value"},
        {{"diff", a, a, "-x", NULL}, "unknown flag '-x'"},
        {{"plot", NULL}, "no FILE given"},
        {{"plot", a, "--width", "0", NULL}, "--width"},
        {{"plot", a, "--height", "x", NULL}, "--height 'x'"},
        {{"plot", a, "--svg", in_dir("o.svg"), "--width", "20", NULL}, "SVG width"},
        {{"plot", a, "--nope", NULL}, "unknown flag '--nope'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ThRun r = run_argv(cases[i].args);
        cr_assert_eq(r.status, 2, "case %zu: exit %d", i, r.status);
        cr_assert(strstr(r.err, cases[i].msg), "case %zu: expected '%s' in: %s", i, cases[i].msg, r.err);
        cr_assert_str_empty(r.out, "case %zu", i);
        th_run_free(&r);
    }
    cr_assert_str_eq(dir_listing(), "a.json");
}

Test(trace_tool, help) {
    const char *cmds[] = {"inspect", "diff", "plot"};
    for (int i = 0; i < 3; i++) {
        char want[64];
        snprintf(want, sizeof want, "usage: trace %s", cmds[i]);
        ThRun r = run_tool(cmds[i], "--help", NULL);
        cr_assert_eq(r.status, 0);
        cr_assert(strstr(r.out, want), "%s", r.out);
        cr_assert(strstr(r.out, "Exit codes"), "%s", r.out);
        th_run_free(&r);
        r = run_tool("help", cmds[i], NULL);
        cr_assert_eq(r.status, 0);
        cr_assert(strstr(r.out, want), "%s", r.out);
        th_run_free(&r);
    }
    ThRun r = run_tool("--help", NULL);
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "inspect") && strstr(r.out, "diff") && strstr(r.out, "plot"));
    th_run_free(&r);
}

// ---------------------------------------------------------------------------
// trace_number: what the writer prints parses back to the same bits.

static uint64_t rng_next(uint64_t *s) {
    // splitmix64
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double from_bits(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

enum { N_ROUND_TRIP = 200000 };

static int fill_round_trip_values(double *v) {
    static const double special[] = {
        0.0, -0.0, 1.0, -1.0, 0.1, 0.2, 0.3, 1.0 / 3, 2.0 / 3, 1e23, 9007199254740993.0,
        DBL_MIN, -DBL_MIN, DBL_TRUE_MIN, -DBL_TRUE_MIN, DBL_MAX, -DBL_MAX, DBL_EPSILON,
        2.2250738585072009e-308,   // the largest subnormal
        4.9406564584124654e-324, 1e-320, 1.7976931348623157e308, 5e-324, 1e308, 1e-300,
        3.3659669475848504, 0.009000000000000001, 123456789012345678.0, 5.0e-324 * 3,
    };
    int n = 0;
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) {
        double near[3] = {special[i], nextafter(special[i], INFINITY), nextafter(special[i], -INFINITY)};
        for (int k = 0; k < 3; k++)
            if (isfinite(near[k])) v[n++] = near[k];
    }
    uint64_t s = 42;
    while (n < N_ROUND_TRIP) {
        uint64_t u = rng_next(&s);
        switch (n % 4) {
            case 0: break;                                                    // any bits
            case 1: u &= 0x800FFFFFFFFFFFFFull; break;                        // subnormal
            case 2: u = (u & 0x800FFFFFFFFFFFFFull) | ((uint64_t)(1023 + (int)(u >> 52 & 63) - 32) << 52);
                    break;                                                    // near 1
            case 3: u = (u & 0x800FFFFFFFFFFFFFull) | ((uint64_t)(u % 2 ? 1 + (u >> 53) % 40 : 2046 - (u >> 53) % 40) << 52);
                    break;                                                    // tiny or huge
        }
        double d = from_bits(u);
        if (!isfinite(d)) continue;
        v[n++] = d;
    }
    return n;
}

Test(trace_number, round_trips_through_cjson) {
    double *v = malloc(N_ROUND_TRIP * sizeof *v);
    cr_assert(v);
    int n = fill_round_trip_values(v);
    int subnormal = 0;
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON_AddItemToArray(arr, trace_number(v[i]));
        subnormal += fpclassify(v[i]) == FP_SUBNORMAL;
    }
    cr_assert_gt(subnormal, n / 8, "the sample should hold many subnormals");
    // Printed the way trace_commit prints, parsed the way trace_load parses.
    char *text = cJSON_Print(arr);
    cr_assert(text);
    cJSON *back = cJSON_Parse(text);
    cr_assert(back);
    cr_assert_eq(cJSON_GetArraySize(back), n);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, back) {
        cr_assert(cJSON_IsNumber(it), "item %d is not a number", i);
        cr_assert(same_bits(it->valuedouble, v[i]), "%.17g came back as %.17g", v[i], it->valuedouble);
        i++;
    }
    free(text);
    cJSON_Delete(arr);
    cJSON_Delete(back);
    free(v);
}

Test(trace_number, shortest_text_and_non_finite) {
    const struct {
        double x;
        const char *text;
    } cases[] = {
        {0.1, "0.1"}, {0.01, "0.01"}, {1e-08, "1e-08"}, {-0.0, "-0"}, {3.0, "3"},
        {0.1 + 0.2, "0.30000000000000004"}, {DBL_TRUE_MIN, "4.94065645841247e-324"},
        {DBL_MAX, "1.7976931348623157e+308"}, {1.0 / 3, "0.3333333333333333"},
        {0.009000000000000001, "0.009000000000000001"}, {2.0 / 3, "0.6666666666666666"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cJSON *n = trace_number(cases[i].x);
        cr_assert(cJSON_IsRaw(n));
        cr_assert_str_eq(n->valuestring, cases[i].text);
        cJSON_Delete(n);
    }
    double bad[] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        cJSON *n = trace_number(bad[i]);
        cr_assert(cJSON_IsNull(n));
        cJSON_Delete(n);
    }
}

Test(trace_number, round_trips_through_a_trace_file) {
    char dir[] = "/tmp/trace-number-XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/n.json", dir);
    double *v = malloc(N_ROUND_TRIP * sizeof *v);
    cr_assert(v);
    int n = fill_round_trip_values(v);
    if (n > 20000) n = 20000;
    Trace tr;
    trace_open(&tr, path, "train");
    cJSON *arr = cJSON_AddArrayToObject(tr.root, "values");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(arr, trace_number(v[i]));
    trace_add_number(tr.root, "nan", NAN);
    trace_commit(&tr);
    char *text = th_read_file(path, NULL);
    cJSON *root = cJSON_Parse(text);
    cr_assert(root);
    cr_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "nan")));
    const cJSON *back = cJSON_GetObjectItemCaseSensitive(root, "values");
    cr_assert_eq(cJSON_GetArraySize(back), n);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, back) {
        cr_assert(same_bits(it->valuedouble, v[i]), "%.17g came back as %.17g", v[i], it->valuedouble);
        i++;
    }
    cJSON_Delete(root);
    free(text);
    free(v);
    unlink(path);
    // trace_commit renamed its temporary file: nothing else is left.
    cr_assert_eq(rmdir(dir), 0, "%s is not empty after the commit", dir);
}

// trace plot ends the same way for every kind of trace on the same
// condition: an --svg path that cannot be an output is a usage error (2), a
// write that fails (a full disk) is 1.
Test(trace_tool, plot_exit_codes_are_the_same_for_every_kind, .timeout = 120) {
    th_case_dir("plot_exits");
    const char *train = th_case_path("train.json"), *bench = th_case_path("bench.json");
    ThRun r = th_tool("microgpt", "--data", th_names_path(), "--steps", "5", "--samples", "0", "--trace", train, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    r = th_tool("compare", "--bench", "--data", th_names_path(), "--engines", "cpu", "--sizes", "b1", "--steps", "12",
                "--warmup", "2", "--repeats", "2", "--quiet", "--trace", bench, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    const char *traces[2] = {train, bench};
    for (int k = 0; k < 2; k++) {
        th_expect_status(th_tool("trace", "plot", traces[k], "--svg", "/nonexistent-dir/x.svg", NULL), 2,
                         "does not exist", traces[k]);
        th_expect_status(th_tool("trace", "plot", traces[k], "--svg", "/dev/full", NULL), 1, "could not write the file",
                         traces[k]);
    }
}
