// Issue 28: every kind of trace the tools write is valid against
// docs/trace.schema.json, checked both by a JSON Schema validator (the
// jsonschema module, tests/validate_schema.py) and by `trace validate`,
// which checks that very schema (compiled in, traces/json_schema.c) besides
// its consistency rules; the same bad traces are refused both ways. Traces
// are compact by default (--pretty indents them) and hold each error once;
// `trace export --csv` carries the judged columns and the bench table, and
// pandas reads each export in one call. The scripts answer --help, the GPU
// scripts need no .debs/ folder, and the parity suite prints each run as it
// finishes.
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "helpers.h"
#include "traces/json_schema.h"

#define SCHEMA "docs/trace.schema.json"

static const char *tmp(const char *name) { return th_temp_path(name); }

// A Python with jsonschema; in CI (CI set) its absence fails the test, elsewhere it skips it.
static const char *jsonschema_python(void) {
    const char *py = th_python("import jsonschema");
    if (!py) {
        if (getenv("CI")) cr_assert_fail("no Python with jsonschema in CI: make deps (scripts/install-deps.sh) puts it in .venv");
        fprintf(stderr, "SKIP: no Python with jsonschema (make deps puts it in .venv)\n");
        cr_skip_test("no Python with jsonschema");
    }
    return py;
}

// Exit status of tests/validate_schema.py SCHEMA file (0 valid, 1 not); its
// messages go to *msg (freed by the caller) when msg is not NULL.
static int py_validate(const char *file, char **msg) {
    const char *py = jsonschema_python();
    char *argv[] = {(char *)py, "tests/validate_schema.py", SCHEMA, (char *)file, NULL};
    ThRun r = th_run(argv);
    int st = r.status;
    if (msg) {
        size_t n = r.out_len + r.err_len + 1;
        *msg = malloc(n);
        snprintf(*msg, n, "%s%s", r.out, r.err);
    }
    th_run_free(&r);
    return st;
}

// Exit status of `trace validate file`; its line to *msg when not NULL.
static int c_validate(const char *file, char **msg) {
    ThRun r = th_tool("trace", "validate", file, NULL);
    int st = r.status;
    if (msg) {
        size_t n = r.out_len + r.err_len + 1;
        *msg = malloc(n);
        snprintf(*msg, n, "%s%s", r.out, r.err);
    }
    th_run_free(&r);
    return st;
}

// Valid both ways.
static void expect_valid(const char *file, const char *what) {
    char *m1 = NULL, *m2 = NULL;
    int c = c_validate(file, &m1), p = py_validate(file, &m2);
    cr_expect_eq(c, 0, "%s: trace validate refuses it: %s", what, m1);
    cr_expect_eq(p, 0, "%s: jsonschema refuses it against %s: %s", what, SCHEMA, m2);
    free(m1);
    free(m2);
}

// A tool's run that must exit `status` and write `trace`.
static void run_ok(ThRun r, int status, const char *what) {
    cr_assert_eq(r.status, status, "%s: exit %d (want %d)\n%s%s", what, r.status, status, r.out, r.err);
    th_run_free(&r);
}

// The file is one line of compact JSON: no newline but the last, no tab, no ": ".
static void expect_compact(const char *file, const char *what) {
    size_t n;
    char *s = th_read_file(file, &n);
    cr_expect(n > 0 && s[n - 1] == '\n', "%s: the trace ends with a newline", what);
    cr_expect(memchr(s, '\n', n - 1) == NULL && !strchr(s, '\t'), "%s: the trace is not one compact line", what);
    free(s);
}

#define DATA "--data", th_names_path()

// ---------------------------------------------------------------------------
// Every kind of trace, valid both ways.

Test(trace_schema, every_kind_of_trace_is_valid_both_ways, .timeout = 300) {
    jsonschema_python();
    char plugin[3][600];
    for (int k = 0; k < 3; k++)
        snprintf(plugin[k], sizeof plugin[k], "scalar,plugin:%s/tests/libpartial_plugin%d.so", th_build_dir(), k + 1);
    struct {
        const char *name;
        ThRun r;
        int status;
    } runs[] = {
        {"train.json", th_tool("microgpt", DATA, "--steps", "3", "--samples", "2", "--trace", tmp("train.json"), NULL), 0},
        {"train-stopped.json", th_tool("microgpt", DATA, "--steps", "5", "--lr", "1e300", "--trace",
                                       tmp("train-stopped.json"), NULL), 1},
        {"bench-scalar.json", th_tool("bench_scalar", DATA, "--steps", "3", "--repeats", "1", "--samples", "2",
                                      "--trace", tmp("bench-scalar.json"), NULL), 0},
        {"lockstep-fp64.json", th_tool("compare", DATA, "--engines", "scalar,cpu", "--steps", "2", "--quiet",
                                       "--trace", tmp("lockstep-fp64.json"), NULL), 0},
        {"lockstep-fp32.json", th_tool("compare", DATA, "--engines", "scalar,cpu", "--precision", "fp32", "--steps",
                                       "2", "--samples", "2", "--quiet", "--trace", tmp("lockstep-fp32.json"), NULL), 0},
        {"lockstep-fail.json", th_tool("compare", DATA, "--engines", "scalar,cpu", "--precision", "fp32", "--steps",
                                       "2", "--inject-fault", "op-fwd:layer0.q", "--keep-going", "--quiet", "--trace",
                                       tmp("lockstep-fail.json"), NULL), 1},
        {"lockstep-fp16.json", th_tool("compare", DATA, "--engines", "scalar,cpu", "--precision", "fp16", "--steps",
                                       "2", "--quiet", "--trace", tmp("lockstep-fp16.json"), NULL), 0},
        {"free-fp64.json", th_tool("compare", DATA, "--engines", "scalar,cpu", "--mode", "free", "--steps", "3",
                                   "--quiet", "--trace", tmp("free-fp64.json"), NULL), 0},
        {"free-bf16.json", th_tool("compare", DATA, "--engines", "scalar,cpu", "--mode", "free", "--precision",
                                   "bf16", "--steps", "3", "--quiet", "--trace", tmp("free-bf16.json"), NULL), 0},
        {"partial1.json", th_tool("compare", DATA, "--engines", plugin[0], "--steps", "2", "--quiet", "--trace",
                                  tmp("partial1.json"), NULL), 0},
        {"partial2.json", th_tool("compare", DATA, "--engines", plugin[1], "--steps", "2", "--quiet", "--trace",
                                  tmp("partial2.json"), NULL), 0},
        {"partial3.json", th_tool("compare", DATA, "--engines", plugin[2], "--steps", "2", "--quiet", "--trace",
                                  tmp("partial3.json"), NULL), 0},
        {"bench.json", th_tool("compare", DATA, "--bench", "--engines", "scalar,cpu", "--precision", "both",
                               "--sizes", "b1;n_embd=8,n_head=2", "--steps", "6", "--warmup", "1", "--repeats", "1",
                               "--quiet", "--trace", tmp("bench.json"), NULL), 0},
    };
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        run_ok(runs[i].r, runs[i].status, runs[i].name);
        expect_compact(tmp(runs[i].name), runs[i].name);
        expect_valid(tmp(runs[i].name), runs[i].name);
    }
    // the bench trace was the one the old schema refused (engines are names, steps a count)
    cJSON *b = th_load_json(tmp("bench.json"));
    cr_expect(cJSON_IsString(cJSON_GetArrayItem(cJSON_GetObjectItem(b, "engines"), 0)));
    cr_expect(cJSON_IsNumber(cJSON_GetObjectItem(b, "steps")));
    cJSON_Delete(b);
    // compare --against writes no trace: what it reads is a recorded train
    // trace, from a run's trace or from a printed log (scripts/log_to_trace.py)
    ThRun r = th_tool("microgpt", DATA, "--steps", "4", "--samples", "0", NULL);
    cr_assert_eq(r.status, 0);
    const char *log = th_write_temp("run.log", r.out, r.out_len);
    th_run_free(&r);
    const char *py = th_python("import json");
    cr_assert(py, "no Python");
    char *argv[] = {(char *)py, "scripts/log_to_trace.py", (char *)log, "-o", (char *)tmp("recorded.json"), "--steps",
                    "4", NULL};
    run_ok(th_run(argv), 0, "log_to_trace.py");
    expect_valid(tmp("recorded.json"), "a recorded run (log_to_trace.py)");
    run_ok(th_tool("compare", DATA, "--against", tmp("recorded.json"), "--engines", "scalar", "--quiet", NULL), 0,
           "compare --against the recorded run");
    run_ok(th_tool("compare", DATA, "--against", tmp("train.json"), "--engines", "cpu", "--quiet", NULL), 0,
           "compare --against a microgpt trace");
}

// ---------------------------------------------------------------------------
// The same bad traces refused both ways.

static const char TRAIN[] =
    "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"train\",\"complete\":true,"
    "\"settings\":{\"seed\":\"42\",\"steps\":2,\"batch\":1},"
    "\"dataset\":{\"path\":\"d.txt\",\"sha256\":\"0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d\"},"
    "\"engine\":{\"name\":\"scalar\",\"precision\":\"fp64\"},"
    "\"steps\":[{\"step\":1,\"lr\":0.01,\"loss\":3.3,\"time_s\":0.1},{\"step\":2,\"lr\":0.005,\"loss\":3.1,\"time_s\":0.1}]}";
static const char COMPARE_T[] =
    "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"compare\",\"complete\":true,"
    "\"engines\":[{\"name\":\"scalar\",\"precision\":\"fp64\",\"offers\":{\"logits\":true}},"
    "{\"name\":\"cpu\",\"precision\":\"fp32\"}],\"mode\":\"lockstep\",\"precision\":\"fp32\","
    "\"verdict\":\"pass\",\"steps\":[{\"step\":1,\"lr\":0.01,\"loss\":[3.3,3.3],\"time_s\":[0.1,0.1],\"ok\":true,"
    "\"errors\":[{\"quantity\":\"grads\",\"tensor\":\"wte\",\"max_abs\":1e-9,\"max_rel\":1e-8,\"n_bad\":0,"
    "\"err_rms\":1e-7,\"rms\":0.01,\"ref_err_rms\":1e-7,\"bound\":1e-5}]}]}";
static const char BENCH_T[] =
    "{\"format\":\"microgpt-trace\",\"version\":1,\"kind\":\"bench\",\"complete\":true,"
    "\"engines\":[\"scalar\",\"cpu\"],\"steps\":10,\"sizes\":[{\"name\":\"b1\",\"spec\":\"batch=1\"}],"
    "\"bench\":[{\"size\":\"b1\",\"engine\":\"cpu\",\"precision\":\"fp64\",\"status\":\"ok\","
    "\"ms_per_step_median\":0.5,\"ms_per_step\":[0.5],\"verdict\":\"pass\",\"a_new_statistic\":1}],"
    "\"verdict\":\"pass\"}";

// base with the first `from` replaced by `to` (which must occur)
static const char *mutate(const char *name, const char *base, const char *from, const char *to) {
    const char *at = strstr(base, from);
    cr_assert(at, "%s: '%s' not in the template", name, from);
    size_t n = strlen(base) - strlen(from) + strlen(to) + 1;
    char *s = malloc(n);
    snprintf(s, n, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
    const char *p = th_write_temp(name, s, strlen(s));
    free(s);
    return p;
}

Test(trace_schema, the_same_bad_traces_are_refused_both_ways, .timeout = 120) {
    jsonschema_python();
    // the templates themselves are valid (a bench row may carry statistics the schema does not name)
    expect_valid(th_write_temp("train.json", TRAIN, strlen(TRAIN)), "train template");
    expect_valid(th_write_temp("compare.json", COMPARE_T, strlen(COMPARE_T)), "compare template");
    expect_valid(th_write_temp("bench.json", BENCH_T, strlen(BENCH_T)), "bench template");
    struct {
        const char *name, *base, *from, *to, *where;
    } bad[] = {
        // issue 28's two findings, turned around: a bench trace with engine objects, a step array
        {"bench-engine-objects", BENCH_T, "[\"scalar\",\"cpu\"]", "[{\"name\":\"scalar\"},{\"name\":\"cpu\"}]", "engines[0]"},
        {"bench-steps-array", BENCH_T, "\"steps\":10", "\"steps\":[{\"step\":1}]", "steps"},
        {"bench-no-rows", BENCH_T, "\"bench\":[", "\"rows\":[", "bench"},
        {"bench-row-no-verdict", BENCH_T, "\"verdict\":\"pass\",\"a_new", "\"a_new", "verdict"},
        {"bench-status", BENCH_T, "\"status\":\"ok\"", "\"status\":\"fine\"", "status"},
        {"bench-negative-time", BENCH_T, "\"ms_per_step_median\":0.5", "\"ms_per_step_median\":-0.5", "ms_per_step_median"},
        {"bench-verdict", BENCH_T, "}],\"verdict\":\"pass\"", "}],\"verdict\":\"ok\"", "verdict"},
        {"compare-engine-name", COMPARE_T, "{\"name\":\"cpu\",\"precision\":\"fp32\"}", "\"cpu\"", "engines[1]"},
        {"compare-three-engines", COMPARE_T, "{\"name\":\"cpu\",\"precision\":\"fp32\"}",
         "{\"name\":\"cpu\"},{\"name\":\"cuda\"}", "engines"},
        {"compare-offers-extra", COMPARE_T, "{\"logits\":true}", "{\"logits\":true,\"tensors\":true}", "offers"},
        {"compare-loss-number", COMPARE_T, "\"loss\":[3.3,3.3]", "\"loss\":3.3", "loss"},
        {"compare-loss-triple", COMPARE_T, "\"loss\":[3.3,3.3]", "\"loss\":[3.3,3.3,3.3]", "loss"},
        {"compare-no-loss", COMPARE_T, "\"loss\":[3.3,3.3],", "", "loss"},
        {"compare-ok-string", COMPARE_T, "\"ok\":true", "\"ok\":\"yes\"", "ok"},
        {"compare-mode", COMPARE_T, "\"lockstep\"", "\"sideways\"", "mode"},
        {"compare-precision", COMPARE_T, "\"precision\":\"fp32\",\"verdict\"", "\"precision\":\"fp8\",\"verdict\"",
         "precision"},
        {"compare-verdict", COMPARE_T, "\"verdict\":\"pass\"", "\"verdict\":\"maybe\"", "verdict"},
        {"compare-quantity", COMPARE_T, "\"quantity\":\"grads\"", "\"quantity\":\"probs\"", "quantity"},
        {"compare-negative-error", COMPARE_T, "\"max_abs\":1e-9", "\"max_abs\":-1e-9", "max_abs"},
        {"compare-bound-string", COMPARE_T, "\"bound\":1e-5", "\"bound\":\"1e-5\"", "bound"},
        {"compare-err-rms-negative", COMPARE_T, "\"err_rms\":1e-7", "\"err_rms\":-1e-7", "err_rms"},
        {"compare-n-bad-fraction", COMPARE_T, "\"n_bad\":0", "\"n_bad\":0.5", "n_bad"},
        {"compare-long-tensor", COMPARE_T, "\"tensor\":\"wte\"",
         "\"tensor\":\"a234567890123456789012345678901234567890123456789012345678901234\"", "tensor"},
        {"compare-no-max-abs", COMPARE_T, "\"max_abs\":1e-9,", "", "max_abs"},
        {"compare-step-zero", COMPARE_T, "\"step\":1,", "\"step\":0,", "step"},
        {"train-loss-pair", TRAIN, "\"loss\":3.3,", "\"loss\":[3.3,3.3],", "loss"},
        {"train-loss-string", TRAIN, "\"loss\":3.3,", "\"loss\":\"3.3\",", "loss"},
        {"train-steps-object", TRAIN, "\"steps\":[{", "\"steps\":{\"a\":{", "steps"},
        {"train-engine-array", TRAIN, "\"engine\":{\"name\":\"scalar\",\"precision\":\"fp64\"}",
         "\"engine\":[\"scalar\"]", "engine"},
        {"train-sha256", TRAIN, "0a30b5557f", "0A30B5557F", "sha256"},
        {"train-batch-zero", TRAIN, "\"batch\":1", "\"batch\":0", "batch"},
        {"train-seed-float", TRAIN, "\"seed\":\"42\"", "\"seed\":4.2", "seed"},
        {"train-samples", TRAIN, "\"steps\":[{\"step\":1", "\"samples\":[\"ann\",3],\"steps\":[{\"step\":1", "samples"},
        {"version-2", TRAIN, "\"version\":1", "\"version\":2", "version"},
        {"kind-unknown", TRAIN, "\"kind\":\"train\"", "\"kind\":\"tune\"", "kind"},
        {"no-format", TRAIN, "\"format\":\"microgpt-trace\",", "", "format"},
        {"incomplete-no-reason", TRAIN, "\"complete\":true", "\"complete\":false,\"stop_step\":2", "stop_reason"},
        {"complete-with-reason", TRAIN, "\"complete\":true", "\"complete\":true,\"stop_reason\":\"x\"", "stop_reason"},
        {"complete-string", TRAIN, "\"complete\":true", "\"complete\":\"yes\"", "complete"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char file[96];
        snprintf(file, sizeof file, "%s.json", bad[i].name);
        const char *p = mutate(file, bad[i].base, bad[i].from, bad[i].to);
        char *m1 = NULL, *m2 = NULL;
        int c = c_validate(p, &m1), py = py_validate(p, &m2);
        cr_expect_eq(c, 1, "%s: trace validate should refuse it (exit %d): %s", bad[i].name, c, m1);
        cr_expect_eq(py, 1, "%s: jsonschema should refuse it (exit %d): %s", bad[i].name, py, m2);
        cr_expect(strstr(m1, bad[i].where) != NULL, "%s: trace validate's message should name %s: %s", bad[i].name,
                  bad[i].where, m1);
        free(m1);
        free(m2);
    }
    // what a schema cannot say, trace validate checks on top: steps that do
    // not increase, one record per tensor and quantity, bench rows of listed sizes
    struct {
        const char *name, *base, *from, *to, *msg;
    } inconsistent[] = {
        {"steps-decrease", TRAIN, "\"step\":2,", "\"step\":1,", "does not follow"},
        {"two-records", COMPARE_T, "\"bound\":1e-5}]",
         "\"bound\":1e-5},{\"quantity\":\"grads\",\"tensor\":\"wte\",\"max_abs\":0}]", "two records"},
        {"unknown-size", BENCH_T, "{\"size\":\"b1\"", "{\"size\":\"b2\"", "does not list"},
    };
    for (size_t i = 0; i < sizeof inconsistent / sizeof *inconsistent; i++) {
        char file[96];
        snprintf(file, sizeof file, "%s.json", inconsistent[i].name);
        const char *p = mutate(file, inconsistent[i].base, inconsistent[i].from, inconsistent[i].to);
        char *m = NULL;
        cr_expect_eq(c_validate(p, &m), 1, "%s: trace validate should refuse it: %s", inconsistent[i].name, m);
        cr_expect(strstr(m, inconsistent[i].msg), "%s: %s", inconsistent[i].name, m);
        free(m);
        cr_expect_eq(py_validate(p, NULL), 0, "%s: the schema alone cannot see it", inconsistent[i].name);
    }
}

// trace validate checks the schema of the source tree, not a copy of its rules.
Test(trace_schema, trace_validate_checks_the_schema_file_itself) {
    ThRun r = th_tool("trace", "validate", "--schema", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    size_t n;
    char *file = th_read_file(SCHEMA, &n);
    cr_expect(r.out_len == n && !memcmp(r.out, file, n),
              "trace validate --schema differs from %s: rebuild (the schema is compiled in)", SCHEMA);
    free(file);
    th_run_free(&r);
}

// The validator itself: each keyword as the specification has it, and a
// schema with a keyword it does not implement refused rather than ignored.
static int v(const char *schema, const char *doc) {
    cJSON *s = cJSON_Parse(schema), *d = cJSON_Parse(doc);
    cr_assert(s && d, "bad JSON in the test: %s / %s", schema, doc);
    char err[512];
    int rc = json_schema_validate(s, d, err, sizeof err);
    cJSON_Delete(s);
    cJSON_Delete(d);
    return rc;
}

Test(trace_schema, the_validator_implements_each_keyword) {
    cr_expect_eq(v("{\"type\":\"integer\"}", "1.0"), 0, "1.0 is an integer");
    cr_expect_eq(v("{\"type\":\"integer\"}", "1.5"), 1);
    cr_expect_eq(v("{\"type\":\"number\"}", "true"), 1, "a boolean is not a number");
    cr_expect_eq(v("{\"type\":[\"number\",\"null\"]}", "null"), 0);
    cr_expect_eq(v("{\"const\":1}", "true"), 1, "true is not 1");
    cr_expect_eq(v("{\"const\":{\"a\":[1,2]}}", "{\"a\":[1,2.0]}"), 0);
    cr_expect_eq(v("{\"enum\":[\"a\",\"b\"]}", "\"c\""), 1);
    cr_expect_eq(v("{\"maxLength\":2}", "\"\xc3\xa9\xc3\xa9\""), 0, "lengths count code points");
    cr_expect_eq(v("{\"minLength\":3}", "\"\xc3\xa9\xc3\xa9\""), 1);
    cr_expect_eq(v("{\"pattern\":\"^[0-9a-f]{4}$\"}", "\"0a1f\""), 0);
    cr_expect_eq(v("{\"pattern\":\"^[0-9a-f]{4}$\"}", "\"0A1F\""), 1);
    cr_expect_eq(v("{\"pattern\":\"b\"}", "\"abc\""), 0, "a pattern is searched, not anchored");
    cr_expect_eq(v("{\"minimum\":0}", "\"-1\""), 0, "minimum applies to numbers only");
    cr_expect_eq(v("{\"exclusiveMinimum\":0}", "0"), 1);
    cr_expect_eq(v("{\"items\":{\"type\":\"string\"},\"minItems\":1}", "[]"), 1);
    cr_expect_eq(v("{\"items\":{\"type\":\"string\"},\"maxItems\":1}", "[\"a\",\"b\"]"), 1);
    cr_expect_eq(v("{\"required\":[\"a\"]}", "{\"b\":1}"), 1);
    cr_expect_eq(v("{\"required\":[\"a\"]}", "[1]"), 0, "required applies to objects only");
    cr_expect_eq(v("{\"properties\":{\"a\":{\"type\":\"string\"}},\"additionalProperties\":false}", "{\"a\":\"x\"}"), 0);
    cr_expect_eq(v("{\"properties\":{\"a\":{\"type\":\"string\"}},\"additionalProperties\":false}", "{\"b\":1}"), 1);
    cr_expect_eq(v("{\"additionalProperties\":{\"type\":\"number\"}}", "{\"b\":\"x\"}"), 1);
    cr_expect_eq(v("{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"number\"}]}", "null"), 1);
    cr_expect_eq(v("{\"oneOf\":[{\"type\":\"number\"},{\"type\":\"integer\"}]}", "1"), 1, "both match: not one");
    cr_expect_eq(v("{\"oneOf\":[{\"type\":\"number\"},{\"type\":\"integer\"}]}", "1.5"), 0);
    cr_expect_eq(v("{\"not\":{\"required\":[\"x\"]}}", "{\"x\":1}"), 1);
    cr_expect_eq(v("{\"if\":{\"const\":1},\"then\":false,\"else\":true}", "1"), 1);
    cr_expect_eq(v("{\"if\":{\"const\":1},\"then\":false,\"else\":true}", "2"), 0);
    cr_expect_eq(v("{\"$defs\":{\"n\":{\"type\":\"number\"}},\"items\":{\"$ref\":\"#/$defs/n\"}}", "[1,\"a\"]"), 1);
    cr_expect_eq(v("{\"$ref\":\"#/$defs/none\"}", "1"), -1, "a reference that does not resolve");
    cr_expect_eq(v("{\"uniqueItems\":true}", "[1,1]"), -1, "an unimplemented keyword is refused, not ignored");
    cr_expect_eq(v("{\"$defs\":{\"x\":{\"dependentRequired\":{}}}}", "1"), -1, "in any subschema");
    cJSON *s = cJSON_Parse("{\"properties\":{\"a\":{\"items\":{\"format\":\"date\"}}}}");
    char err[512];
    cr_expect_eq(json_schema_supported(s, err, sizeof err), -1);
    cr_expect(strstr(err, "format") && strstr(err, "#/properties/a/items"), "%s", err);
    cJSON_Delete(s);
    // where a violation is: the path in the document
    s = cJSON_Parse("{\"properties\":{\"steps\":{\"items\":{\"properties\":{\"loss\":{\"type\":\"number\"}}}}}}");
    cJSON *d = cJSON_Parse("{\"steps\":[{\"loss\":1},{\"loss\":\"x\"}]}");
    cr_expect_eq(json_schema_validate(s, d, err, sizeof err), 1);
    cr_expect(strstr(err, "at steps[1].loss: \"x\" is not of type 'number'"), "%s", err);
    cJSON_Delete(s);
    cJSON_Delete(d);
}

// ---------------------------------------------------------------------------
// Compact by default, --pretty for humans; each error stored once.

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

Test(trace_schema, traces_are_compact_unless_pretty, .timeout = 120) {
    run_ok(th_tool("microgpt", DATA, "--steps", "3", "--trace", tmp("c.json"), NULL), 0, "microgpt");
    run_ok(th_tool("microgpt", DATA, "--steps", "3", "--trace", tmp("p.json"), "--pretty", NULL), 0,
           "microgpt --pretty");
    expect_compact(tmp("c.json"), "microgpt");
    char *p = th_read_file(tmp("p.json"), NULL);
    cr_expect(strstr(p, "\n\t\"settings\":\t{") != NULL, "--pretty indents the trace:\n%.300s", p);
    free(p);
    cJSON *a = th_load_json(tmp("c.json")), *b = th_load_json(tmp("p.json"));
    cJSON_DeleteItemFromArray(cJSON_GetObjectItem(a, "steps"), 0);   // times differ: compare the rest
    cJSON_DeleteItemFromArray(cJSON_GetObjectItem(b, "steps"), 0);
    cJSON_DeleteItemFromObject(a, "steps");
    cJSON_DeleteItemFromObject(b, "steps");
    cJSON_DeleteItemFromObject(a, "train_time_s");
    cJSON_DeleteItemFromObject(b, "train_time_s");
    cr_expect(cJSON_Compare(a, b, 1), "the same trace, compact or indented");
    cJSON_Delete(a);
    cJSON_Delete(b);
    // compare (lockstep, free, bench) and bench_scalar take it too
    run_ok(th_tool("compare", DATA, "--engines", "scalar,cpu", "--precision", "fp32", "--steps", "2", "--quiet",
                   "--trace", tmp("cmp.json"), NULL), 0, "compare");
    run_ok(th_tool("compare", DATA, "--engines", "scalar,cpu", "--precision", "fp32", "--steps", "2", "--quiet",
                   "--pretty", "--trace", tmp("cmp-pretty.json"), NULL), 0, "compare --pretty");
    run_ok(th_tool("compare", DATA, "--bench", "--engines", "cpu", "--steps", "3", "--warmup", "1", "--repeats", "1",
                   "--quiet", "--pretty", "--trace", tmp("bench-pretty.json"), NULL), 0, "compare --bench --pretty");
    run_ok(th_tool("bench_scalar", DATA, "--steps", "2", "--repeats", "1", "--samples", "0", "--pretty", "--trace",
                   tmp("bs-pretty.json"), NULL), 0, "bench_scalar --pretty");
    expect_compact(tmp("cmp.json"), "compare");
    static const char *const pretty[3] = {"cmp-pretty.json", "bench-pretty.json", "bs-pretty.json"};
    for (int k = 0; k < 3; k++) {
        char *s = th_read_file(tmp(pretty[k]), NULL);
        cr_expect(strstr(s, "\n\t\"kind\":\t") != NULL, "%s is indented", pretty[k]);
        free(s);
    }
    // each error once: the long records, not also the older max_err/max_rel maps
    char *c = th_read_file(tmp("cmp.json"), NULL);
    cr_expect_eq(count(c, "\"max_err\""), 0, "a lockstep trace repeats its errors in max_err maps");
    cr_expect_eq(count(c, "\"max_rel\":{"), 0, "a lockstep trace repeats its errors in max_rel maps");
    cr_expect_gt(count(c, "\"err_rms\""), 2 * 36, "the records are there");
    free(c);
    // ... and every reader still reads it: the tools build the maps from the records
    ThRun r = th_tool("trace", "inspect", tmp("cmp.json"), NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "lm_head.grad") != NULL, "inspect lists the gradients' largest errors:\n%s", r.out);
    th_run_free(&r);
    r = th_tool("trace", "plot", tmp("cmp.json"), NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "no per-step errors") == NULL, "plot draws the error panel:\n%s", r.out);
    th_run_free(&r);
    r = th_tool("trace", "diff", tmp("cmp.json"), tmp("cmp-pretty.json"), "--tolerance", "1", NULL);
    cr_expect(strstr(r.out, "errors per tensor") != NULL, "diff compares the errors:\n%s", r.out);
    th_run_free(&r);
    const char *py = th_python("import json");
    if (py) {
        char code[600];
        snprintf(code, sizeof code,
                 "import sys; sys.path.insert(0, 'scripts'); import calibrate; r = calibrate.reduce_trace('%s'); "
                 "assert len(r['quantities']['grads']['e']) == 2 and None not in r['quantities']['grads']['e'][0], r",
                 tmp("cmp.json"));
        char *argv[] = {(char *)py, "-c", code, NULL};
        ThRun pr = th_run(argv);
        cr_expect_eq(pr.status, 0, "calibrate.py's reduce_trace reads the compact trace: %s", pr.err);
        th_run_free(&pr);
    }
    // a switch of the trace: refused without one; listed once in each tool's help
    th_expect_usage(th_tool("microgpt", DATA, "--pretty", NULL), "--pretty applies to --trace", "no trace");
    th_expect_usage(th_tool("microgpt", DATA, "--pretty", "--pretty", "--trace", tmp("x.json"), NULL), "--pretty",
                    "twice");
    static const char *const tools[3] = {"microgpt", "compare", "bench_scalar"};
    for (int k = 0; k < 3; k++) {
        ThRun h = th_tool(tools[k], "--help", NULL);
        cr_expect_eq(h.status, 0);
        cr_expect_eq(count(h.out, "--pretty "), 1, "%s --help lists --pretty once:\n%s", tools[k], h.out);
        th_run_free(&h);
    }
}

// ---------------------------------------------------------------------------
// trace export --csv: the judged columns, the bench table; pandas reads each.

static const char *pandas_python(void) {
    const char *py = th_python("import pandas");
    if (!py) {
        if (getenv("CI")) cr_assert_fail("no Python with pandas in CI: make deps (scripts/install-deps.sh) puts it in .venv");
        fprintf(stderr, "SKIP: pandas is not installed (make deps puts it in .venv)\n");
    }
    return py;
}

static int starts(const char *s, const char *prefix) { return !strncmp(s, prefix, strlen(prefix)); }

static char *export_csv(const char *trace, int errors, const char *out) {
    ThRun r = errors ? th_tool("trace", "export", "--csv", trace, "--errors", "--out", out, NULL)
                     : th_tool("trace", "export", "--csv", trace, "--out", out, NULL);
    cr_assert_eq(r.status, 0, "export %s: %s", trace, r.err);
    th_run_free(&r);
    return th_read_file(out, NULL);
}

Test(trace_schema, export_has_the_judged_columns_and_pandas_reads_each, .timeout = 120) {
    run_ok(th_tool("microgpt", DATA, "--steps", "3", "--trace", tmp("train.json"), NULL), 0, "train");
    run_ok(th_tool("compare", DATA, "--engines", "scalar,cpu", "--precision", "fp32", "--steps", "2", "--samples",
                   "2", "--inject-fault", "grad-sign", "--keep-going", "--quiet", "--trace", tmp("ratio.json"), NULL),
           1, "lockstep, ratio rule, failing");
    run_ok(th_tool("compare", DATA, "--engines", "scalar,cpu", "--steps", "2", "--quiet", "--trace",
                   tmp("fixed.json"), NULL), 0, "lockstep fp64");
    run_ok(th_tool("compare", DATA, "--engines", "scalar,cpu", "--mode", "free", "--precision", "bf16", "--steps", "3",
                   "--quiet", "--trace", tmp("free.json"), NULL), 0, "free");
    run_ok(th_tool("compare", DATA, "--bench", "--engines", "scalar,cpu", "--sizes", "b1;n_embd=8,n_head=2", "--steps",
                   "4", "--warmup", "1", "--repeats", "1", "--quiet", "--trace", tmp("bench.json"), NULL),
           0, "bench");
    char *e = export_csv(tmp("ratio.json"), 1, tmp("ratio-errors.csv"));
    cr_expect(starts(e, "step,quantity,tensor,max_abs,max_rel,n_bad,err_rms,rms,ref_err_rms,bound\n"),
              "the judged columns: %.200s", e);
    cr_expect(strstr(e, "\n2,probs,sample 1,") != NULL, "the sampled names' probabilities, at the last step");
    free(e);
    e = export_csv(tmp("fixed.json"), 1, tmp("fixed-errors.csv"));
    cr_expect(strstr(e, "\n1,logits,logits,") != NULL, "%.300s", e);
    free(e);
    char *s = export_csv(tmp("free.json"), 0, tmp("free.csv"));
    cr_expect(starts(s, "step,lr,loss_scalar,loss_cpu,time_s_scalar,time_s_cpu,ok,drift,drift_tol\n"),
              "free mode: the judged drift and its bound: %.200s", s);
    free(s);
    s = export_csv(tmp("bench.json"), 0, tmp("bench.csv"));
    cr_expect(starts(s, "size,engine,precision,status,"), "the bench table: %.200s", s);
    cr_expect(strstr(s, ",ms_per_step_median,") && strstr(s, ",verdict,") && strstr(s, ",size_num_params"),
              "%.400s", s);
    cr_expect_eq(count(s, "\n"), 1 + 4, "a header and one row per size and engine:\n%s", s);
    free(s);
    export_csv(tmp("train.json"), 0, tmp("train.csv"));
    export_csv(tmp("ratio.json"), 0, tmp("ratio.csv"));
    ThRun r = th_tool("trace", "export", "--csv", tmp("bench.json"), "--errors", NULL);
    th_expect_usage(r, "--errors needs a compare trace", "--errors on a bench trace");
    const char *py = pandas_python();
    if (!py) cr_skip_test("pandas is not installed (make deps puts it in .venv)");
    static const char *const files[] = {"train.csv", "ratio.csv", "ratio-errors.csv", "fixed-errors.csv", "free.csv",
                                        "bench.csv"};
    for (size_t k = 0; k < sizeof files / sizeof *files; k++) {
        char code[900];
        snprintf(code, sizeof code, "import pandas; d = pandas.read_csv('%s'); assert len(d) > 0 and len(d.columns) > 3, d",
                 tmp(files[k]));
        char *argv[] = {(char *)py, "-c", code, NULL};
        ThRun pr = th_run(argv);
        cr_expect_eq(pr.status, 0, "pandas.read_csv(%s): %s", files[k], pr.err);
        th_run_free(&pr);
    }
    // what the columns say: under the ratio rule a record is out of
    // tolerance exactly when err_rms > bound, and the fault makes some
    char code[900];
    snprintf(code, sizeof code,
             "import pandas; d = pandas.read_csv('%s'); d = d[d.quantity != 'probs']; "
             "assert ((d.n_bad > 0) == (d.err_rms > d.bound)).all(); assert (d.n_bad > 0).any(); "
             "assert d.bound.notna().all() and d.ref_err_rms.notna().all()",
             tmp("ratio-errors.csv"));
    char *argv[] = {(char *)py, "-c", code, NULL};
    ThRun pr = th_run(argv);
    cr_expect_eq(pr.status, 0, "the judged columns decide: %s", pr.err);
    th_run_free(&pr);
    snprintf(code, sizeof code,
             "import pandas; d = pandas.read_csv('%s'); assert d.verdict.isin(['reference', 'pass']).all(), d; "
             "assert d.ms_per_step_median.dtype.kind == 'f'",
             tmp("bench.csv"));
    ThRun br = th_run(argv);
    cr_expect_eq(br.status, 0, "the bench table's columns: %s", br.err);
    th_run_free(&br);
}

// ---------------------------------------------------------------------------
// Scripts: --help everywhere; no .debs/ needed; parity streams its runs.

Test(trace_schema, every_script_answers_help, .timeout = 120) {
    DIR *d = opendir("scripts");
    cr_assert(d, "run from the repository root");
    const char *py = th_python("import json");
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        const char *name = e->d_name;
        size_t len = strlen(name);
        int sh = len > 3 && !strcmp(name + len - 3, ".sh"), pyf = len > 3 && !strcmp(name + len - 3, ".py");
        if (!sh && !pyf) continue;
        if (pyf && !py) continue;
        char path[300];
        snprintf(path, sizeof path, "scripts/%s", name);
        // no GPU, no CUDA, no build needed; at most 30 s
        char *argv[] = {"/usr/bin/timeout", "30", sh ? "/bin/bash" : (char *)py, path, "--help", NULL};
        ThRun r = th_run(argv);
        cr_expect_eq(r.status, 0, "%s --help: exit %d\n%s%s", path, r.status, r.out, r.err);
        int usage = 0;
        for (const char *l = r.out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
            while (*l == ' ') l++;
            usage |= !strncasecmp(l, "usage:", 6);
        }
        cr_expect(usage, "%s --help prints no 'usage:' line:\n%s%s", path, r.out, r.err);
        th_run_free(&r);
        n++;
    }
    closedir(d);
    cr_expect_geq(n, 10, "the scripts were found (%d)", n);
}

// The GPU scripts build with the system's libcjson where there is no .debs/
// (a copy of each script in a tree without one: they get past that step and
// stop at the missing GPU, or the missing build, never at .debs/).
Test(trace_schema, gpu_scripts_need_no_debs_folder, .timeout = 120) {
    const char *dir = th_case_dir("nodebs");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/scripts && cp scripts/attn_bench.sh scripts/gpu_bench.sh scripts/gpu_check.sh scripts/cjson_deps.sh %s/scripts/",
             dir, dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "cd %s && PATH=/usr/bin:/bin bash scripts/attn_bench.sh", dir);
    char *a1[] = {"/bin/bash", "-c", cmd, NULL};
    ThRun r = th_run(a1);
    cr_expect(!strstr(r.err, "dpkg") && !strstr(r.out, "dpkg") && !strstr(r.err, ".debs/*.deb"),
              "attn_bench.sh needs .debs/:\n%s%s", r.out, r.err);
    cr_expect(strstr(r.err, "no GPU") || strstr(r.err, "the build failed"), "attn_bench.sh: %s%s", r.out, r.err);
    th_run_free(&r);
    snprintf(cmd, sizeof cmd, "cd %s && PATH=/usr/bin:/bin bash scripts/gpu_bench.sh --out %s/out", dir, dir);
    char *a2[] = {"/bin/bash", "-c", cmd, NULL};
    r = th_run(a2);
    cr_expect(!strstr(r.err, "dpkg") && !strstr(r.out, "dpkg"), "gpu_bench.sh needs .debs/:\n%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "build/compare") != NULL, "gpu_bench.sh goes on to the build:\n%s%s", r.out, r.err);
    th_run_free(&r);
    snprintf(cmd, sizeof cmd,
             "cd %s && bash scripts/gpu_check.sh --out %s/out --build %s/b --skip "
             "gpu,build,test-gpu,parity,bench,bench-nographs,determinism,sanitizer,profile,kernel-bench",
             dir, dir, dir);
    char *a3[] = {"/bin/bash", "-c", cmd, NULL};
    r = th_run(a3);
    cr_expect_eq(r.status, 0, "gpu_check.sh's deps check fails without .debs/:\n%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "libcjson: the system headers") != NULL, "%s%s", r.out, r.err);
    th_run_free(&r);
}

Test(trace_schema, parity_prints_each_run_as_it_finishes, .timeout = 180) {
    const char *out = th_case_dir("parity");
    char *argv[] = {"/bin/bash", "scripts/parity.sh", "--backend", "cpu", "--steps", "2", "--jobs", "1", "--build",
                    (char *)th_build_dir(), "--out", (char *)out, "--only", "base-fp64,free-fp32", NULL};
    ThRun r = th_run(argv);
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    const char *first = strstr(r.out, "[ 1/2] base-fp64 ");
    const char *second = strstr(r.out, "[ 2/2] free-fp32 ");
    const char *table = strstr(r.out, "parity suite:");
    cr_expect(first && second && table && first < second && second < table,
              "each run's line comes as it finishes, before the table:\n%s", r.out);
    cr_expect(first && strstr(first, "PASS"), "%s", r.out);
    th_run_free(&r);
    // a run that cannot run here (exit 2: cuda without a GPU) stops the suite
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "bash scripts/parity.sh --backend cuda --steps 2 --build %s --out %s --only base-fp64,free-fp32,base-fp32",
             th_build_dir(), out);
    char *c2[] = {"/bin/bash", "-c", cmd, NULL};
    r = th_run(c2);
    if (r.status == 0) {
        fprintf(stderr, "SKIP the exit-2 case: the cuda engine runs here\n");
    } else {
        cr_expect_eq(r.status, 2, "%s%s", r.out, r.err);
        cr_expect(strstr(r.out, "no further run starts") && !strstr(r.out, "[ 2/3]"), "%s%s", r.out, r.err);
    }
    th_run_free(&r);
    // unknown names are refused with the list
    snprintf(cmd, sizeof cmd, "bash scripts/parity.sh --backend cpu --build %s --out %s --only nope", th_build_dir(), out);
    r = th_run(c2);
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "no run named 'nope'") && strstr(r.err, "base-fp64"), "%s", r.err);
    th_run_free(&r);
}
