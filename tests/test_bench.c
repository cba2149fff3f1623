// compare --bench end to end on the CPU engines: the table, equal work, the
// checks that make a wrong engine fail the bench, budgets and memory
// refusals, the trace and the Markdown file, and bad usage.
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "common/util.h"
#include "compare/bench_stats.h"
#include "helpers.h"

// A short bench on data/names.txt: 12 steps, 2 of them warm-up, 2 runs.
#define BENCH(...) \
    th_tool("compare", "--bench", "--data", th_names_path(), "--steps", "12", "--warmup", "2", "--repeats", "2", \
            "--quiet", __VA_ARGS__, NULL)

// The table row of engine `eng` (and precision) at size `size`, or NULL.
static const char *row_of(const char *out, const char *size, const char *eng, const char *prec) {
    char key[96];
    snprintf(key, sizeof key, "| %s | %s | %s |", size, eng, prec);
    return strstr(out, key);
}

// The verdict cell (the last one) of the row starting at r, copied to buf.
static const char *verdict_of(const char *r, char *buf, size_t n) {
    buf[0] = '\0';
    if (!r) return buf;
    const char *end = strchr(r, '\n');
    if (!end) return buf;
    const char *p = end - 1;   // the closing '|'
    const char *q = p - 1;
    while (q > r && *q != '|') q--;
    snprintf(buf, n, "%.*s", (int)(p - q - 2), q + 2);
    return buf;
}

// Cell n (0-based: size, engine, precision, ms/step, tokens/s, vs E1, vs
// fastest torch, ...) of the row starting at r, copied to buf.
static const char *cell_of(const char *r, int n, char *buf, size_t len) {
    buf[0] = '\0';
    if (!r) return buf;
    const char *p = r + 1;   // past the row's first '|'
    for (int k = 0; k < n && p; k++) p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL;
    const char *end = p ? strchr(p, '|') : NULL;
    if (!end) return buf;
    while (*p == ' ') p++;
    while (end > p && end[-1] == ' ') end--;
    snprintf(buf, len, "%.*s", (int)(end - p), p);
    return buf;
}

Test(bench, scalar_and_cpu_on_two_sizes_pass, .timeout = 120) {
    ThRun r = BENCH("--engines", "scalar,cpu", "--sizes", "b1,n_embd=8,n_head=2,batch=4", "--precision", "both");
    cr_assert_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    char v[256];
    cr_expect(strstr(verdict_of(row_of(r.out, "b1", "scalar", "fp64"), v, sizeof v), "reference"), "%s", r.out);
    cr_expect(strstr(verdict_of(row_of(r.out, "b1", "cpu", "fp64"), v, sizeof v), "pass"), "%s", r.out);
    cr_expect(strstr(verdict_of(row_of(r.out, "b1", "cpu", "fp32"), v, sizeof v), "pass"), "%s", r.out);
    cr_expect(row_of(r.out, "spec1", "cpu", "fp32") != NULL, "the SPEC is a size of its own:\n%s", r.out);
    cr_expect(row_of(r.out, "b1", "scalar", "fp32") == NULL, "the scalar engine runs once, in fp64");
    // equal work: every document fills the block (16 positions a step at batch 1, 64 at batch 4)
    cr_expect(strstr(r.out, "**b1**: batch=1; 12 steps; 16 positions/step"), "%s", r.out);
    cr_expect(strstr(r.out, "**spec1**: n_embd=8,n_head=2,batch=4; 12 steps; 64 positions/step"), "%s", r.out);
    cr_expect(strstr(r.out, "packed:") && strstr(r.out, "PASS: bench, 2 size(s)"), "%s", r.out);
    // 2 to 20 timed runs (--repeats 2, --max-repeats 20 by default) of the
    // 10 steps after the warm-up, and what stopped them
    int runs = 0, steps = 0;
    char what[32] = "";
    cr_expect_eq(sscanf(cell_of(row_of(r.out, "b1", "cpu", "fp64"), 9, v, sizeof v), "%dx%d (%31[a-z])", &runs, &steps,
                        what), 3, "%s", v);
    cr_expect(runs >= 2 && runs <= 20 && steps == 10, "%s", v);
    cr_expect(!strcmp(what, "noise") || !strcmp(what, "max") || !strcmp(what, "budget"), "%s", v);
    cr_expect(strstr(r.out, "\nStatistics: ms/step is the median of the timed runs, its 95% bootstrap confidence"),
              "%s", r.out);
    th_run_free(&r);
}

// An engine that computes the wrong thing fails the bench (exit 1, FAIL in
// its verdict), whatever its speed.
Test(bench, an_injected_fault_fails_the_bench, .timeout = 60) {
    const char *faults[] = {"attn-scale", "causal-mask", "rmsnorm-bwd", "grad-sign", "adam-bias"};
    for (size_t i = 0; i < sizeof faults / sizeof *faults; i++) {
        ThRun r = BENCH("--engines", "scalar,cpu", "--sizes", "b1", "--inject-fault", faults[i]);
        char v[256];
        cr_expect_eq(r.status, 1, "%s: exit %d\n%s", faults[i], r.status, r.out);
        cr_expect(strstr(verdict_of(row_of(r.out, "b1", "cpu", "fp64"), v, sizeof v), "FAIL: step"), "%s:\n%s",
                  faults[i], r.out);
        cr_expect(strstr(r.out, "FAIL: bench"), "%s", r.out);
        th_run_free(&r);
    }
}

// The mixed precisions bench too (the CPU engine's emulation here): each
// row checked against the fp64 oracle with its precision's bounds; a wrong
// Adam correction still fails in bf16 (the subtler faults move the loss
// less than bf16 rounding does: catching them is lockstep's work, not the
// bench's); fp16 is refused.
Test(bench, bf16_and_tf32_rows_are_checked, .timeout = 120) {
    const char *precs[] = {"bf16", "tf32"};
    for (int i = 0; i < 2; i++) {
        ThRun r = BENCH("--engines", "scalar,cpu", "--sizes", "b1,b32", "--precision", precs[i], "--max-repeats", "3");
        char v[256];
        cr_expect_eq(r.status, 0, "%s: exit %d\n%s%s", precs[i], r.status, r.out, r.err);
        for (int z = 0; z < 2; z++) {
            const char *size = z ? "b32" : "b1";
            cr_expect(strstr(verdict_of(row_of(r.out, size, "cpu", precs[i]), v, sizeof v), "pass"), "%s %s:\n%s",
                      precs[i], size, r.out);
            cr_expect(strstr(verdict_of(row_of(r.out, size, "scalar", "fp64"), v, sizeof v), "reference"), "%s", r.out);
        }
        th_run_free(&r);
    }
    ThRun bad = BENCH("--engines", "scalar,cpu", "--sizes", "b1", "--precision", "bf16", "--inject-fault", "adam-bias");
    char v[256];
    cr_expect_eq(bad.status, 1, "exit %d\n%s", bad.status, bad.out);
    cr_expect(strstr(verdict_of(row_of(bad.out, "b1", "cpu", "bf16"), v, sizeof v), "FAIL: step"), "%s", bad.out);
    th_run_free(&bad);
    th_expect_usage(BENCH("--engines", "cpu", "--sizes", "b1", "--precision", "fp16"), "no back-to-back timed run",
                    "fp16 bench");
}

// Raw documents keep the data's ragged lengths; the report says which.
Test(bench, raw_data_is_ragged_and_said, .timeout = 60) {
    ThRun r = BENCH("--engines", "cpu", "--sizes", "b32", "--bench-data", "raw");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "data raw:"), "%s", r.out);
    cr_expect(!strstr(r.out, "**b32**: batch=32; 12 steps; 512 positions/step"), "names are shorter than the block:\n%s",
              r.out);
    th_run_free(&r);
}

// The scalar engine's graph for a large size cannot fit: refused with the
// estimate before anything is allocated; the bench still succeeds, since the
// next size is timed and checked.
Test(bench, a_size_that_cannot_fit_is_skipped_with_the_estimate, .timeout = 60) {
    ThRun r = BENCH("--engines", "scalar", "--sizes", "e512,b1");
    char v[256];
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(verdict_of(row_of(r.out, "e512", "scalar", "fp64"), v, sizeof v), "skipped: needs about"), "%s",
              r.out);
    cr_expect(strstr(verdict_of(row_of(r.out, "b1", "scalar", "fp64"), v, sizeof v), "reference"), "%s", r.out);
    cr_expect(strstr(r.out, "PASS: bench, 2 size(s)"), "%s", r.out);
    th_run_free(&r);
}

// Every step's batch is built only for an engine that fits, their bytes in
// its estimate (issue #29 item 8: batch=1000000 built 7.4 GB of batches, then
// skipped both engines): under a 2 GB address-space limit the engine is
// skipped with the estimate, nothing is built, and a bench that timed
// nothing is not a pass.
Test(bench, batches_that_cannot_fit_are_never_built, .timeout = 120) {
#ifdef UNDER_ASAN
    cr_skip_test("AddressSanitizer reserves more address space than the limit this test sets");
#endif
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "ulimit -v 2000000; exec '%s/compare' --bench --data '%s' --engines cpu --sizes "
             "batch=1000000 --steps 100 --quiet", th_build_dir(), th_names_path());
    char *const argv[] = {"/bin/sh", "-c", cmd, NULL};
    const double t0 = now_seconds();
    ThRun r = th_run(argv);
    cr_expect_eq(r.status, 2, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "skipped: needs about") && strstr(r.out, "nothing was timed"), "%s%s", r.out, r.err);
    cr_expect(strstr(r.err, "out of memory") == NULL, "the batches were never allocated:\n%s", r.err);
    cr_expect_lt(now_seconds() - t0, 60.0, "no 7.6 GB of batches built first");
    th_run_free(&r);
}

// A bench in which every engine is skipped at every size timed and checked
// nothing: not a pass. Exit 2 (as an engine that cannot run here), a
// verdict line and a message that say so, and the trace's verdict too.
Test(bench, a_bench_that_timed_nothing_is_not_a_pass, .timeout = 60) {
    const char *tr = th_temp_path("skipped.json");
    ThRun r = BENCH("--engines", "scalar", "--sizes", "e512", "--trace", tr);
    char v[256];
    cr_expect_eq(r.status, 2, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(verdict_of(row_of(r.out, "e512", "scalar", "fp64"), v, sizeof v), "skipped: needs about"), "%s",
              r.out);
    cr_expect(!strstr(r.out, "PASS") && strstr(r.out, "SKIPPED: bench, 1 size(s): nothing was timed"), "%s", r.out);
    cr_expect(strstr(r.err, "bench: nothing was timed"), "the reason on stderr too: %s", r.err);
    cJSON *j = th_load_json(tr);
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "verdict")), "skipped");
    cJSON_Delete(j);
    th_run_free(&r);
}

// The table is the bench's result: stdout on a full disk is exit 1 with the
// reason on stderr, not a silent 0.
Test(bench, a_table_that_cannot_be_written_is_exit_1, .timeout = 60) {
    const char *err = th_temp_path("full.err");
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "'%s/compare' --bench --data %s --engines cpu --sizes b1 --steps 6 --warmup 1 "
             "--repeats 1 --quiet >/dev/full 2>'%s'", th_build_dir(), th_names_path(), err);
    int st = system(cmd);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit %d", WEXITSTATUS(st));
    char *text = th_read_file(err, NULL);
    cr_expect(strstr(text, "writing the table to standard output failed: No space left"), "%s", text);
    free(text);
}

// A slow engine times fewer steps within its budget and the table says so.
Test(bench, the_time_budget_limits_a_slow_engine, .timeout = 60) {
    ThRun r = th_tool("compare", "--bench", "--data", th_names_path(), "--engines", "scalar", "--sizes", "b32",
                      "--steps", "200", "--repeats", "3", "--time-budget", "0.3", "--quiet", NULL);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    const char *row = row_of(r.out, "b32", "scalar", "fp64");
    cr_assert(row, "%s", r.out);
    cr_expect(strstr(row, "(budget)") && strstr(row, "1x") == strstr(row, "| 1x") + 2, "%s", r.out);
    th_run_free(&r);
}

// Without a GPU the cuda engine's row says why; the others still run; exit 2.
Test(bench, cuda_without_a_gpu_is_unavailable, .timeout = 60) {
    ThRun r = BENCH("--engines", "cpu,cuda", "--sizes", "b1");
    char v[256];
    if (r.status == 0) {   // a machine with a GPU
        cr_expect(strstr(verdict_of(row_of(r.out, "b1", "cuda", "fp64"), v, sizeof v), "pass"), "%s", r.out);
    } else {
        cr_expect_eq(r.status, 2, "%s%s", r.out, r.err);
        cr_expect(strstr(verdict_of(row_of(r.out, "b1", "cuda", "fp64"), v, sizeof v), "unavailable: "), "%s", r.out);
        cr_expect(strstr(verdict_of(row_of(r.out, "b1", "cpu", "fp64"), v, sizeof v), "reference"), "%s", r.out);
    }
    th_run_free(&r);
}

// --baseline torch adds the three PyTorch rows: timed where torch and a GPU
// exist, otherwise skipped with the reason (never an error).
Test(bench, the_torch_baseline_runs_or_says_why, .timeout = 900) {
    ThRun r = BENCH("--engines", "cpu", "--sizes", "b1", "--baseline", "torch");
    char v[256];
    cr_expect(r.status == 0, "exit %d\n%s%s", r.status, r.out, r.err);
    const char *engines[] = {"torch-graph", "torch-compile", "torch-eager"};
    for (int k = 0; k < 3; k++) {
        const char *eng = engines[k];
        verdict_of(row_of(r.out, "b1", eng, "fp64"), v, sizeof v);
        cr_expect(strstr(v, "pass") || strstr(v, "unavailable: torch"), "%s: %s\n%s", eng, v, r.out);
        if (k) cr_expect(row_of(r.out, "b1", engines[k - 1], "fp64") < row_of(r.out, "b1", eng, "fp64"),
                         "the rows in the order graph, compile, eager:\n%s", r.out);
    }
    th_run_free(&r);
}

// ---- the C side of the PyTorch rows, with tests/fake_torch_baseline.py ----
// The fake takes torch_baseline.py's command line and writes its result with
// the timings a test chooses, and the losses of the cpu engine (taken from a
// bench trace of it), so that its rows pass the bench's check.

#define TORCH_BENCH(py, ...) BENCH("--engines", "cpu", "--sizes", "b1", "--baseline", "torch", "--python", py, __VA_ARGS__)

// A Python for the fake (the standard library only), with the environment
// that makes the bench run it; NULL (the test skips) if there is none.
static const char *fake_torch_setup(void) {
    const char *py = th_python("import json, argparse, struct");
    if (!py) {
        fprintf(stderr, "SKIP: no Python 3 for tests/fake_torch_baseline.py\n");
        return NULL;
    }
    const char *tr = th_temp_path("cpu-losses-trace.json");
    ThRun r = BENCH("--engines", "cpu", "--sizes", "b1", "--trace", tr);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    th_run_free(&r);
    cJSON *j = th_load_json(tr);
    char *losses = cJSON_PrintUnformatted(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "bench"), 0),
                                                             "losses"));
    setenv("FAKE_TORCH_LOSSES", th_write_temp("cpu-losses.json", losses, strlen(losses)), 1);
    setenv("MICROGPT_TORCH_BASELINE", "tests/fake_torch_baseline.py", 1);
    free(losses);
    cJSON_Delete(j);
    return py;
}

// The trace's row of engine eng (precision fp64), or NULL.
static const cJSON *trace_row(const cJSON *trace, const char *eng) {
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(trace, "bench"))
        if (!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(r, "engine")), eng)) return r;
    return NULL;
}

static double trace_num(const cJSON *row, const char *key) {
    const cJSON *x = cJSON_GetObjectItem(row, key);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

// The speedups divide by the fastest PyTorch row of the size and precision,
// whichever it is (here the compile row, then the graph row), and say which;
// every PyTorch row is checked; torch.compile's time is printed, not timed.
Test(bench, the_speedups_use_the_fastest_torch_row, .timeout = 120) {
    const char *py = fake_torch_setup();
    if (!py) cr_skip_test("no Python 3");
    const struct {
        const char *ms, *compile_s, *fastest, *slow, *slow_x, *compiled;
    } cases[] = {
        {"graph=2,compile=1,eager=5", "23.4", "torch-compile", "torch-graph", "0.50x (n=2: no interval)",
         "compiled in 23.4 s (not timed)"},
        {"graph=1,compile=2,eager=5", "7.5", "torch-graph", "torch-compile", "0.50x (n=2: no interval)",
         "compiled in 7.5 s (not timed)"},
    };
    for (int c = 0; c < 2; c++) {
        setenv("FAKE_TORCH_MS", cases[c].ms, 1);
        setenv("FAKE_TORCH_COMPILE_S", cases[c].compile_s, 1);
        const char *tr = th_temp_path(c ? "fastest-graph.json" : "fastest-compile.json");
        ThRun r = TORCH_BENCH(py, "--trace", tr);
        char v[256];
        cr_expect_eq(r.status, 0, "case %d: exit %d\n%s%s", c, r.status, r.out, r.err);
        const char *engines[] = {"torch-graph", "torch-compile", "torch-eager"};
        for (int k = 0; k < 3; k++) {
            cr_expect(strstr(verdict_of(row_of(r.out, "b1", engines[k], "fp64"), v, sizeof v), "pass (max rel diff"),
                      "case %d: %s is checked against cpu: %s\n%s", c, engines[k], v, r.out);
            if (k) cr_expect(row_of(r.out, "b1", engines[k - 1], "fp64") < row_of(r.out, "b1", engines[k], "fp64"),
                             "the rows in the order graph, compile, eager:\n%s", r.out);
        }
        cr_expect(strstr(r.out, "| vs fastest torch |"), "%s", r.out);
        cr_expect_str_eq(cell_of(row_of(r.out, "b1", cases[c].fastest, "fp64"), 6, v, sizeof v), "1.00x (fastest)",
                         "case %d:\n%s", c, r.out);
        cr_expect_str_eq(cell_of(row_of(r.out, "b1", cases[c].slow, "fp64"), 6, v, sizeof v), cases[c].slow_x,
                         "case %d:\n%s", c, r.out);
        cr_expect_str_eq(cell_of(row_of(r.out, "b1", "torch-eager", "fp64"), 6, v, sizeof v), "0.20x (n=2: no interval)",
                         "case %d:\n%s", c, r.out);
        char line[128];
        snprintf(line, sizeof line, "- b1 fp64: fastest %s (", cases[c].fastest);
        cr_expect(strstr(r.out, line), "case %d: the table names the fastest row (%s):\n%s", c, line, r.out);
        snprintf(line, sizeof line, "; torch-compile: %s\n", cases[c].compiled);
        cr_expect(strstr(r.out, line), "case %d: the compile time (%s):\n%s", c, line, r.out);
        // the trace: every row's speedup over the fastest row, and its name
        cJSON *j = th_load_json(tr);
        const cJSON *cpu = trace_row(j, "cpu"), *fast = trace_row(j, cases[c].fastest);
        cr_assert(cpu && fast, "%s", r.out);
        const double want = trace_num(fast, "ms_per_step_median") / trace_num(cpu, "ms_per_step_median");
        cr_expect(fabs(trace_num(cpu, "speedup_vs_torch") - want) <= 1e-9 * want, "case %d: cpu's speedup %g, want %g",
                  c, trace_num(cpu, "speedup_vs_torch"), want);
        cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cpu, "speedup_vs_torch_row")), cases[c].fastest);
        cr_expect_eq(trace_num(trace_row(j, "torch-compile"), "compile_s"), atof(cases[c].compile_s));
        cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(trace_row(j, "torch-compile"), "compile_mode")),
                         "default");
        cJSON_Delete(j);
        th_run_free(&r);
    }
}

// With 3 runs a row (here PyTorch's: 1, 1.01, 1.02 x its ms) has an
// interval, and so has every speedup between two such rows: the fake's
// runs put 0.5 inside the compile row's over the graph row's.
Test(bench, speedups_have_intervals, .timeout = 120) {
    const char *py = fake_torch_setup();
    if (!py) cr_skip_test("no Python 3");
    setenv("FAKE_TORCH_MS", "graph=2,compile=1,eager=5", 1);
    const char *tr = th_temp_path("intervals.json");
    ThRun r = th_tool("compare", "--bench", "--data", th_names_path(), "--steps", "12", "--warmup", "2", "--repeats",
                      "3", "--quiet", "--engines", "cpu", "--sizes", "b1", "--baseline", "torch", "--python", py,
                      "--trace", tr, NULL);
    cr_assert_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    cJSON *j = th_load_json(tr);
    const cJSON *g = trace_row(j, "torch-graph");
    const double lo = trace_num(g, "speedup_vs_torch_ci_low"), hi = trace_num(g, "speedup_vs_torch_ci_high");
    cr_expect(lo < 0.5 && 0.5 < hi && hi - lo < 0.05, "torch-graph over torch-compile: [%g, %g]", lo, hi);
    char v[256], want[64];
    snprintf(want, sizeof want, "0.50x (%.2f-%.2f)", lo, hi);
    cr_expect_str_eq(cell_of(row_of(r.out, "b1", "torch-graph", "fp64"), 6, v, sizeof v), want, "%s", r.out);
    cr_expect_str_eq(cell_of(row_of(r.out, "b1", "torch-graph", "fp64"), 3, v, sizeof v), "2.02 (2-2.04) [2-2.04]",
                     "the median, its interval (the 3 runs' min-max) and the min-max:\n%s", r.out);
    cr_expect_str_eq(cell_of(row_of(r.out, "b1", "torch-graph", "fp64"), 9, v, sizeof v), "3x10",
                     "PyTorch's runs are fixed by --repeats:\n%s", r.out);
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(g, "stopped")), "fixed");
    // the cpu row (at least 3 runs): its interval holds its median, and
    // its speedup over torch has one too
    const cJSON *c = trace_row(j, "cpu");
    cr_expect(trace_num(c, "ms_per_step_ci_low") <= trace_num(c, "ms_per_step_median") &&
              trace_num(c, "ms_per_step_median") <= trace_num(c, "ms_per_step_ci_high"), "cpu's interval");
    cr_expect(trace_num(c, "speedup_vs_torch_ci_low") <= trace_num(c, "speedup_vs_torch") &&
              trace_num(c, "speedup_vs_torch") <= trace_num(c, "speedup_vs_torch_ci_high"), "cpu's speedup's interval");
    cJSON_Delete(j);
    th_run_free(&r);
}

// A PyTorch row with wrong losses fails the bench like any engine, and is
// nobody's reference however fast it is; a compile that fails says why.
Test(bench, every_torch_row_is_checked, .timeout = 120) {
    const char *py = fake_torch_setup();
    if (!py) cr_skip_test("no Python 3");
    setenv("FAKE_TORCH_MS", "graph=2,compile=1,eager=5", 1);
    setenv("FAKE_TORCH_WRONG", "compile", 1);
    ThRun r = TORCH_BENCH(py, "--trace", th_temp_path("wrong.json"));
    char v[256];
    cr_expect_eq(r.status, 1, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(verdict_of(row_of(r.out, "b1", "torch-compile", "fp64"), v, sizeof v), "FAIL: step 1 loss"),
              "%s", r.out);
    cr_expect(strstr(verdict_of(row_of(r.out, "b1", "torch-graph", "fp64"), v, sizeof v), "pass"), "%s", r.out);
    cr_expect(strstr(r.out, "- b1 fp64: fastest torch-graph ("), "the failing compile row is no reference:\n%s", r.out);
    cr_expect_str_eq(cell_of(row_of(r.out, "b1", "torch-graph", "fp64"), 6, v, sizeof v), "1.00x (fastest)");
    th_run_free(&r);
    unsetenv("FAKE_TORCH_WRONG");
    setenv("FAKE_TORCH_FAIL", "compile", 1);
    r = TORCH_BENCH(py, "--trace", th_temp_path("failed.json"));
    cr_expect_eq(r.status, 1, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(verdict_of(row_of(r.out, "b1", "torch-compile", "fp64"), v, sizeof v),
                     "FAIL: torch.compile failed after 1.5 s: Unsupported: fake"), "%s", r.out);
    cr_expect_str_eq(cell_of(row_of(r.out, "b1", "torch-compile", "fp64"), 3, v, sizeof v), "-", "no timings");
    cr_expect(!strstr(r.out, "compiled in"), "%s", r.out);
    th_run_free(&r);
}

// --torch-compile reaches the script: max-autotune is said with the compile
// time, off drops the row; a bad value or one without --baseline is refused.
Test(bench, the_torch_compile_flag, .timeout = 120) {
    const char *py = fake_torch_setup();
    if (!py) cr_skip_test("no Python 3");
    const char *tr = th_temp_path("autotune.json");
    ThRun r = TORCH_BENCH(py, "--torch-compile", "max-autotune", "--trace", tr);
    cr_expect_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "; torch-compile (max-autotune): compiled in 23.4 s (not timed)"), "%s", r.out);
    cJSON *j = th_load_json(tr);
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(trace_row(j, "torch-compile"), "compile_mode")),
                     "max-autotune");
    cJSON_Delete(j);
    th_run_free(&r);
    r = TORCH_BENCH(py, "--torch-compile", "off");
    char v[256];
    cr_expect_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(!strstr(r.out, "torch-compile"), "%s", r.out);
    cr_expect(strstr(verdict_of(row_of(r.out, "b1", "torch-eager", "fp64"), v, sizeof v), "pass"), "%s", r.out);
    th_run_free(&r);
    th_expect_usage(BENCH("--engines", "cpu", "--baseline", "torch", "--torch-compile", "fast"),
                    "--torch-compile: 'fast' is not default, max-autotune or off", "a bad mode");
    th_expect_usage(BENCH("--engines", "cpu", "--torch-compile", "off"), "--torch-compile: only with --baseline torch",
                    "--torch-compile without the baseline");
    th_expect_usage(th_tool("compare", "--engines", "scalar,cpu", "--torch-compile", "off", NULL),
                    "only applies to --bench", "--torch-compile without --bench");
    th_expect_usage(BENCH("--engines", "cpu", "--baseline", "torch", "--torch-compile", "off", "--torch-compile",
                          "off"), "--torch-compile", "--torch-compile twice");
}

// The trace holds one object per (size, engine, precision) with the
// documented keys; --markdown holds the table printed on stdout.
Test(bench, trace_and_markdown, .timeout = 60) {
    const char *dir = th_temp_dir();
    char tr[512], md[512];
    snprintf(tr, sizeof tr, "%s/bench.json", dir);
    snprintf(md, sizeof md, "%s/bench.md", dir);
    ThRun r = BENCH("--engines", "scalar,cpu", "--sizes", "b1", "--trace", tr, "--markdown", md);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    char *mdt = th_read_file(md, NULL);
    cr_expect(strstr(r.out, mdt) == r.out, "the Markdown file is the table printed:\n%s\n---\n%s", mdt, r.out);
    free(mdt);
    cJSON *j = th_load_json(tr);
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "kind")), "bench");
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "verdict")), "pass");
    const cJSON *rows = cJSON_GetObjectItem(j, "bench");
    cr_assert_eq(cJSON_GetArraySize(rows), 2);
    const char *keys[] = {"engine", "precision", "settings", "ms_per_step_median", "ms_per_step_min",
                          "ms_per_step_max", "tokens_per_s", "steps_timed", "peak_host_bytes", "peak_device_bytes",
                          "verdict", "losses", "size", "ms_per_step_ci_low", "ms_per_step_ci_high",
                          "ms_per_step_rel_noise", "few_runs", "stopped", "speedup_vs_reference_ci_low",
                          "speedup_vs_reference_ci_high", "speedup_vs_torch_ci_low", "speedup_vs_torch_ci_high"};
    for (int i = 0; i < 2; i++) {
        const cJSON *row = cJSON_GetArrayItem(rows, i);
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
            cr_expect(cJSON_HasObjectItem(row, keys[k]), "row %d lacks %s", i, keys[k]);
        cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(row, "losses")), 12);
        cr_expect_eq(cJSON_GetObjectItem(row, "steps_timed")->valueint, 10);
        const double lo = cJSON_GetObjectItem(row, "ms_per_step_min")->valuedouble,
                     med = cJSON_GetObjectItem(row, "ms_per_step_median")->valuedouble,
                     hi = cJSON_GetObjectItem(row, "ms_per_step_max")->valuedouble;
        cr_expect(lo > 0 && lo <= med && med <= hi, "min %g median %g max %g", lo, med, hi);
        // an interval within min-max that holds the median, from 3 runs on
        const cJSON *cl = cJSON_GetObjectItem(row, "ms_per_step_ci_low"), *ch = cJSON_GetObjectItem(row, "ms_per_step_ci_high");
        if (cJSON_GetObjectItem(row, "repeats")->valueint >= 3) {
            cr_expect(cJSON_IsFalse(cJSON_GetObjectItem(row, "few_runs")));
            cr_expect(cJSON_IsNumber(cl) && cJSON_IsNumber(ch) && lo <= cl->valuedouble && cl->valuedouble <= med &&
                      med <= ch->valuedouble && ch->valuedouble <= hi, "row %d's interval", i);
        } else {
            cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(row, "few_runs")) && cJSON_IsNull(cl) && cJSON_IsNull(ch));
        }
    }
    cr_expect_eq(cJSON_GetObjectItem(j, "max_repeats")->valueint, 20);
    cr_expect_eq(cJSON_GetObjectItem(j, "noise_target")->valuedouble, 0.02);
    cr_expect_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "statistics"), "resamples")->valueint, 2000);
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 1), "verdict")), "pass");
    cJSON_Delete(j);
    th_run_free(&r);
    th_check_schema("../trace.schema.json", tr, 0);
    // the trace tool reads it: the table, and ms/step per size and engine;
    // a speedup that was not measured (no PyTorch here) is "-", never nan
    r = th_tool("trace", "inspect", tr, NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "kind \"bench\"") && strstr(r.out, "b1       scalar") && strstr(r.out, "b1       cpu"),
              "%s", r.out);
    cr_expect(!strstr(r.out, "nanx") && !strstr(r.out, " nan ") && strstr(r.out, "95% CI"), "%s", r.out);
    th_run_free(&r);
    char svg[512];
    snprintf(svg, sizeof svg, "%s/bench.svg", dir);
    r = th_tool("trace", "plot", tr, "--svg", svg, NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    char *text = th_read_file(svg, NULL);
    cr_expect(strstr(text, "<svg") && strstr(text, ">scalar fp64</text>") && strstr(text, ">cpu fp64</text>") &&
              strstr(text, ">b1</text>"), "%s", text);
    free(text);
    th_run_free(&r);
    r = th_tool("trace", "plot", tr, NULL);
    cr_expect(r.status == 0 && strstr(r.out, "ms/step per size and engine") && strstr(r.out, "cpu fp64"), "%s%s",
              r.out, r.err);
    th_run_free(&r);
}

// The reader refuses a bench trace whose rows do not hold together.
Test(bench, a_malformed_bench_trace_is_refused) {
    const char *bad = "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"bench\", \"sizes\": [{\"name\": "
                      "\"b1\"}], \"bench\": [{\"size\": \"b9\", \"engine\": \"cpu\", \"precision\": \"fp64\", "
                      "\"verdict\": \"pass\"}]}";
    const char *path = th_write_temp("bad-bench.json", bad, strlen(bad));
    ThRun r = th_tool("trace", "inspect", path, NULL);
    cr_expect_eq(r.status, 2, "%s", r.out);
    cr_expect(strstr(r.err, "is of size \"b9\", which \"sizes\" does not list"), "%s", r.err);
    th_run_free(&r);
}

Test(bench, bad_usage_is_refused) {
    th_expect_usage(BENCH("--engines", "cpu", "--sizes", "huge"), "unknown size 'huge'", "unknown size");
    th_expect_usage(BENCH("--engines", "cpu", "--sizes", "batch=2,batch=3"), "batch is given twice", "repeated key");
    th_expect_usage(BENCH("--engines", "cpu", "--sizes", "width=3"), "unknown setting 'width'", "unknown key");
    th_expect_usage(BENCH("--engines", "cpu", "--sizes", "batch=0"), "batch='0'", "batch 0");
    th_expect_usage(BENCH("--engines", "cpu", "--sizes", "n_embd=10,n_head=4"), "must divide", "impossible size");
    th_expect_usage(th_tool("compare", "--bench", "--data", th_names_path(), "--engines", "cpu", "--steps", "5", NULL),
                 "leaves nothing to time", "fewer steps than the warm-up");
    th_expect_usage(BENCH("--engines", "cpu", "--repeats", "0"), "--repeats", "no repeats");
    th_expect_usage(BENCH("--engines", "cpu", "--baseline", "jax"), "not a known baseline", "unknown baseline");
    th_expect_usage(BENCH("--engines", "cpu", "--keep-going"), "does not apply to --bench", "a lockstep flag");
    th_expect_usage(BENCH("--engines", "cpu", "--trace", "/"), "is a directory", "a directory as the trace");
    ThRun r = BENCH("--engines", "cpu", "--trace", th_names_path());
    cr_expect(r.out_len == 0, "the data as the trace is refused before the run, not after: %s", r.out);
    th_expect_usage(r, "is also an input", "the data as the trace");
    th_expect_usage(th_tool("compare", "--engines", "scalar,cpu", "--repeats", "3", NULL), "only applies to --bench",
                 "a bench flag without --bench");
    // the bench samples nothing: the sampling flags would be silently ignored
    th_expect_usage(BENCH("--engines", "cpu", "--samples", "3"),
                    "--samples does not apply to --bench: the bench times training and samples no names",
                    "--samples with --bench");
    th_expect_usage(BENCH("--engines", "cpu", "--temperature", "0.7"), "--temperature does not apply to --bench",
                    "--temperature with --bench");
}

// A tiny bench (issue 28's size) with flags added.
#define TINY_BENCH(...)                                                                                            \
    th_tool("compare", "--bench", "--data", th_names_path(), "--engines", "scalar,cpu", "--steps", "6", "--warmup", \
            "1", "--repeats", "1", "--sizes", "default", __VA_ARGS__, NULL)

static int count_of(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub)) n++;
    return n;
}

// --markdown - and --trace -: stdout carries the table once, or the trace
// alone; the report (the table included) goes to stderr. A bench trace's
// SVG on stdout (trace plot --svg -) is the SVG alone.
Test(bench, markdown_and_trace_on_stdout_alone, .timeout = 60) {
    ThRun r = TINY_BENCH("--markdown", "-");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(!strncmp(r.out, "## compare --bench", 18), "stdout is the table: %s", r.out);
    cr_expect_eq(count_of(r.out, "| size | engine | precision |"), 1, "the table's header once on stdout: %s", r.out);
    cr_expect_eq(count_of(r.out, "| default | cpu | fp64 |"), 1, "%s", r.out);
    cr_expect(!strstr(r.out, "PASS: bench") && strstr(r.err, "PASS: bench"), "the verdict on stderr: %s", r.err);
    th_run_free(&r);
    r = TINY_BENCH("--trace", "-", "--quiet");
    char *json = strdup(r.out);
    cJSON *j = th_stdout_json(r, 0, "PASS: bench", "--bench --trace -");
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "kind")), "bench");
    cJSON_Delete(j);
    const char *tr = th_write_temp("stdout-bench.json", json, strlen(json));
    free(json);
    r = th_tool("trace", "plot", tr, "--svg", "-", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(!strncmp(r.out, "<svg", 4) && r.out_len > 7 && !strcmp(r.out + r.out_len - 7, "</svg>\n"),
              "stdout is the SVG alone: %s", r.out);
    cr_expect(strstr(r.err, "wrote -"), "%s", r.err);
    th_run_free(&r);
}

// bench_scalar's --samples, --temperature and --trace do what they say: at
// the defaults the samples are the original's (SPEC.md), and the trace is a
// train trace of the best run with the timings.
Test(bench, bench_scalar_samples_and_trace, .timeout = 120) {
    char tr[512];
    snprintf(tr, sizeof tr, "%s/bs.json", th_temp_dir());
    ThRun r = th_tool("bench_scalar", "--data", th_names_path(), "--repeats", "1", "--trace", tr, NULL);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "sample  1      kamon\n") && strstr(r.out, "sample 20      anton\n"), "%s", r.out);
    cJSON *j = th_load_json(tr);
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "kind")), "train");
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "steps")), 1000);
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "samples"), 4)), "vialan");
    cr_expect(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "bench"), "ms_per_step")->valuedouble > 0);
    cJSON_Delete(j);
    th_run_free(&r);
    r = th_tool("bench_scalar", "--data", th_names_path(), "--repeats", "1", "--steps", "20", "--samples", "3",
                "--temperature", "1.5", NULL);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "sample  3 ") && !strstr(r.out, "sample  4 ") && strstr(r.out, "temperature 1.5"), "%s",
              r.out);
    th_run_free(&r);
}

// trace diff of two bench traces judges each row by the 95% bootstrap
// intervals of A's and B's medians, from the rows' timed runs: slower only
// when they do not overlap and B/A is above 1 + --tolerance (exit 1),
// faster when they do not overlap and B/A is below 1 / (1 + --tolerance)
// (exit 0); overlapping intervals are no significant change; rows of fewer
// than 3 runs are not judged; a worse verdict or a row missing in B is exit 1.
#define BT(runs, verdict)                                                                                          \
    "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"bench\", \"sizes\": [{\"name\": \"b1\"}], "      \
    "\"bench\": [{\"size\": \"b1\", \"engine\": \"cuda\", \"precision\": \"fp32\", \"verdict\": \"" verdict "\", " \
    "\"status\": \"ok\", \"ms_per_step_median\": null, \"ms_per_step\": [" runs "]}]}"
static const char *bench_trace(const char *name, const char *text) {
    return th_write_temp(name, text, strlen(text));
}

Test(bench, trace_diff_of_bench_traces) {
    const char *a = bench_trace("a.json", BT("1.00, 1.01, 0.99, 1.02, 0.98", "pass"));
    const char *slow = bench_trace("slow.json", BT("1.30, 1.31, 1.29, 1.32, 1.28", "pass"));
    const char *noisy = bench_trace("noisy.json", BT("1.02, 0.90, 1.15, 0.97, 1.06", "pass"));
    const char *one = bench_trace("one.json", BT("2.0", "pass"));
    const char *fail = bench_trace("fail.json", BT("0.50, 0.51, 0.49", "fail"));
    ThRun r = th_tool("trace", "diff", a, slow, NULL);
    cr_expect(r.status == 1 && strstr(r.out, "1.300x") && strstr(r.out, "  slower\n") && strstr(r.out, "1 slower, 0 faster") &&
              strstr(r.out, "1.3 (1.28-1.32)"), "%d %s%s", r.status, r.out, r.err);
    th_run_free(&r);
    r = th_tool("trace", "diff", slow, a, NULL);
    cr_expect(r.status == 0 && strstr(r.out, "  faster\n") && strstr(r.out, "0 slower, 1 faster"), "%d %s%s", r.status,
              r.out, r.err);
    th_run_free(&r);
    // significant, but not by more than a 50% tolerance
    r = th_tool("trace", "diff", a, slow, "--tolerance", "0.5", NULL);
    cr_expect(r.status == 0 && strstr(r.out, "slower, by less than the tolerance (50%)") && strstr(r.out, "0 slower"),
              "%d %s%s", r.status, r.out, r.err);
    th_run_free(&r);
    // the same timings with more noise: the medians differ by 2%, the runs overlap
    r = th_tool("trace", "diff", a, noisy, NULL);
    cr_expect(r.status == 0 && strstr(r.out, "no significant change") && strstr(r.out, "0 slower, 0 faster, 1 with no"),
              "%d %s%s", r.status, r.out, r.err);
    th_run_free(&r);
    // twice as slow, but from one run: not judged
    r = th_tool("trace", "diff", a, one, NULL);
    cr_expect(r.status == 0 && strstr(r.out, "not judged: too few runs (A n=5, B n=1)") && strstr(r.out, "0 slower"),
              "%d %s%s", r.status, r.out, r.err);
    th_run_free(&r);
    r = th_tool("trace", "diff", a, fail, NULL);
    cr_expect(r.status == 1 && strstr(r.out, "verdict worse"), "%d %s%s", r.status, r.out, r.err);
    th_run_free(&r);
}
#undef BT

// Two benches of the same engine on the same work are no significant
// change (exit 0). Two benches run at different moments (or side by side)
// on a shared machine see different loads, which is a real difference the
// diff must report, so the two halves come from one bench: its runs taken
// alternately (A the odd ones, B the even ones), interleaved in time, each
// half's median and interval recomputed from its own runs. Runs of 200
// steps, many scheduler ticks each.
static void keep_alternate_runs(cJSON *root, int parity) {
    cJSON *row;
    cJSON_ArrayForEach(row, cJSON_GetObjectItem(root, "bench")) {
        cJSON *ms = cJSON_GetObjectItem(row, "ms_per_step");
        double v[64];
        int n = 0, i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, ms) {
            if (i++ % 2 == parity && n < 64) v[n++] = x->valuedouble;
        }
        cJSON *kept = cJSON_CreateDoubleArray(v, n);
        cJSON_ReplaceItemInObject(row, "ms_per_step", kept);
        double lo, hi, mn = v[0], mx = v[0];
        for (int k = 1; k < n; k++) mn = fmin(mn, v[k]), mx = fmax(mx, v[k]);
        cr_assert_eq(bench_median_ci(v, n, &lo, &hi), 0, "%d runs: no interval", n);
        cJSON_ReplaceItemInObject(row, "ms_per_step_median", cJSON_CreateNumber(bench_median(v, n)));
        cJSON_ReplaceItemInObject(row, "ms_per_step_ci_low", cJSON_CreateNumber(lo));
        cJSON_ReplaceItemInObject(row, "ms_per_step_ci_high", cJSON_CreateNumber(hi));
        cJSON_ReplaceItemInObject(row, "ms_per_step_min", cJSON_CreateNumber(mn));
        cJSON_ReplaceItemInObject(row, "ms_per_step_max", cJSON_CreateNumber(mx));
        cJSON_ReplaceItemInObject(row, "repeats", cJSON_CreateNumber(n));
    }
}

Test(bench, two_benches_of_the_same_engine_are_no_significant_change, .timeout = 120) {
    const char *whole = th_temp_path("same.json");
    ThRun r = th_tool("compare", "--bench", "--data", th_names_path(), "--engines", "cpu", "--sizes", "b1", "--steps",
                      "202", "--warmup", "2", "--repeats", "10", "--max-repeats", "10", "--noise-target", "0",
                      "--quiet", "--trace", whole, NULL);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    th_run_free(&r);
    const char *tr[2];
    for (int k = 0; k < 2; k++) {
        cJSON *j = th_load_json(whole);
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "verdict")), "pass");
        keep_alternate_runs(j, k);
        char *text = cJSON_Print(j);
        tr[k] = th_write_temp(k ? "same-b.json" : "same-a.json", text, strlen(text));
        free(text);
        cJSON_Delete(j);
    }
    r = th_tool("trace", "diff", tr[0], tr[1], NULL);
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "b1       cpu") && strstr(r.out, "0 slower, 0 faster, "), "%s", r.out);
    th_run_free(&r);
}

// A row of one run (--repeats 1 --max-repeats 1) is marked: no interval for
// its median or its speedups, the summary lists it, the trace says so.
Test(bench, a_row_of_one_run_is_marked, .timeout = 60) {
    const char *tr = th_temp_path("one-run.json");
    ThRun r = th_tool("compare", "--bench", "--data", th_names_path(), "--engines", "scalar,cpu", "--sizes", "b1",
                      "--steps", "12", "--warmup", "2", "--repeats", "1", "--max-repeats", "1", "--quiet", "--trace",
                      tr, NULL);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    char v[256];
    const char *row = row_of(r.out, "b1", "cpu", "fp64");
    cr_expect(strstr(cell_of(row, 3, v, sizeof v), " (n=1: no interval)"), "%s", v);
    cr_expect(strstr(cell_of(row, 5, v, sizeof v), "x (n=1: no interval)"), "the speedup over scalar: %s", v);
    cr_expect(strstr(r.out, "Too few runs for an interval (fewer than 3)") && strstr(r.out, "b1 cpu fp64 (n=1)") &&
              strstr(r.out, "b1 scalar fp64 (n=1)"), "%s", r.out);
    cJSON *j = th_load_json(tr);
    const cJSON *c = trace_row(j, "cpu");
    cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(c, "few_runs")));
    cr_expect(cJSON_IsNull(cJSON_GetObjectItem(c, "ms_per_step_ci_low")) &&
              cJSON_IsNull(cJSON_GetObjectItem(c, "speedup_vs_reference_ci_low")));
    cr_expect(isfinite(trace_num(c, "speedup_vs_reference")));
    cJSON_Delete(j);
    th_run_free(&r);
    r = th_tool("trace", "inspect", tr, NULL);
    cr_expect(r.status == 0 && strstr(r.out, "n=1: no interval") && strstr(r.out, "x (no interval)") &&
              strstr(r.out, "2 row(s) rest on fewer than 3 runs"), "%s", r.out);
    th_run_free(&r);
}

// --noise-target: a loose target stops at the first runs that meet it and
// says so; a target no timing meets runs to --max-repeats and says that;
// 0 times exactly --repeats runs.
Test(bench, the_noise_target_stops_the_timing, .timeout = 120) {
    const struct {
        const char *target, *max, *stopped, *mark;
    } cases[] = {
        {"1", "30", "noise", " (noise)"},   // a half-width within 100% of the median: met at once
        {"1e-9", "4", "max_repeats", " (max)"},
        {"0", "30", "fixed", ""},
    };
    for (int c = 0; c < 3; c++) {
        const char *tr = th_temp_path("noise.json");
        ThRun r = th_tool("compare", "--bench", "--data", th_names_path(), "--engines", "cpu", "--sizes", "b1",
                          "--steps", "30", "--warmup", "2", "--repeats", "3", "--max-repeats", cases[c].max,
                          "--noise-target", cases[c].target, "--trace", tr, NULL);
        cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
        cJSON *j = th_load_json(tr);
        const cJSON *row = trace_row(j, "cpu");
        const int runs = (int)trace_num(row, "repeats");
        cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(row, "stopped")), cases[c].stopped, "case %d", c);
        if (c == 0) {
            cr_expect(runs >= 3 && runs < 30, "case %d: %d runs", c, runs);
            cr_expect(trace_num(row, "ms_per_step_rel_noise") <= 1, "case %d", c);
            cr_expect(strstr(r.err, "; stopped: noise ") && strstr(r.err, "% <= 100%"), "the progress line: %s", r.err);
        } else {
            cr_expect_eq(runs, c == 1 ? 4 : 3, "case %d", c);
        }
        if (c == 1) cr_expect(strstr(r.err, "; stopped: --max-repeats 4 with the noise"), "%s", r.err);
        char v[256], want[64];
        snprintf(want, sizeof want, "%dx28%s", runs, cases[c].mark);
        cr_expect_str_eq(cell_of(row_of(r.out, "b1", "cpu", "fp64"), 9, v, sizeof v), want, "case %d:\n%s", c, r.out);
        cJSON_Delete(j);
        th_run_free(&r);
    }
    th_expect_usage(BENCH("--engines", "cpu", "--max-repeats", "1"), "--max-repeats 1 is fewer than --repeats 2",
                    "max below min");
    th_expect_usage(BENCH("--engines", "cpu", "--noise-target", "-1"), "--noise-target: '-1'", "a negative target");
    th_expect_usage(BENCH("--engines", "cpu", "--max-repeats", "65"), "--max-repeats: '65'", "over 64");
    th_expect_usage(th_tool("compare", "--engines", "scalar,cpu", "--noise-target", "0.1", NULL),
                    "only applies to --bench", "--noise-target without --bench");
}

// The SVG draws sizes as categories: per row a median dot, its interval and
// min-max whiskers inside the size's band; nothing joins one size to the
// next (no polyline, no path, no line wider than a whisker's cap).
Test(bench, the_plot_has_categorical_sizes_and_whiskers) {
#define ROW(size, eng, med, lo, hi, mn, mx, runs)                                                              \
    "{\"size\": \"" size "\", \"engine\": \"" eng "\", \"precision\": \"fp64\", \"verdict\": \"pass\", "        \
    "\"status\": \"ok\", \"ms_per_step_median\": " med ", \"ms_per_step_ci_low\": " lo ", \"ms_per_step_ci_high\": " \
    hi ", \"ms_per_step_min\": " mn ", \"ms_per_step_max\": " mx ", \"ms_per_step\": [" runs "]}"
    const char *text =
        "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"bench\", \"verdict\": \"pass\", \"sizes\": "
        "[{\"name\": \"b1\"}, {\"name\": \"b32\"}, {\"name\": \"e64\"}], \"bench\": ["
        ROW("b1", "cpu", "1", "0.9", "1.1", "0.5", "2", "0.5, 0.9, 1, 1.1, 2") ", "
        ROW("b1", "scalar", "10", "9", "11", "8", "12", "8, 9, 10, 11, 12") ", "
        ROW("b32", "cpu", "3", "null", "null", "3", "3", "3") ", "
        ROW("b32", "scalar", "100", "90", "110", "80", "120", "80, 90, 100, 110, 120") ", "
        ROW("e64", "cpu", "20", "19", "21", "15", "25", "15, 19, 20, 21, 25") ", "
        ROW("e64", "scalar", "1000", "900", "1100", "800", "1200", "800, 900, 1000, 1100, 1200") "]}";
#undef ROW
    const char *tr = th_write_temp("plot-bench.json", text, strlen(text));
    const char *svg = th_temp_path("plot-bench.svg");
    ThRun r = th_tool("trace", "plot", tr, "--svg", svg, NULL);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    th_run_free(&r);
    char *s = th_read_file(svg, NULL);
    cr_expect(!strstr(s, "<polyline") && !strstr(s, "<path"), "%s", s);
    int whiskers = 0, caps = 0, bars = 0, dots = 0;
    for (const char *p = strstr(s, "<line"); p; p = strstr(p + 1, "<line")) {
        char cls[32] = "";
        double x1, y1, x2, y2;
        cr_assert_eq(sscanf(p, "<line class=\"%31[a-z]\" x1=\"%lf\" y1=\"%lf\" x2=\"%lf\" y2=\"%lf\"", cls, &x1, &y1,
                            &x2, &y2), 5, "every line has a class: %.80s", p);
        if (!strcmp(cls, "grid")) continue;   // the decades and the bands' borders
        cr_expect(fabs(x2 - x1) <= 12, "a %s line %g wide joins more than one size's slot: %.120s", cls, fabs(x2 - x1), p);
        if (!strcmp(cls, "whisker")) {
            whiskers++;
            cr_expect(x1 == x2, "a whisker is vertical: %.120s", p);
        } else if (!strcmp(cls, "cap")) {
            caps++;
            cr_expect(y1 == y2, "%.120s", p);
        } else {
            cr_expect(0, "an unexpected line: %.120s", p);
        }
    }
    for (const char *p = strstr(s, "class=\"ci\""); p; p = strstr(p + 1, "class=\"ci\"")) bars++;
    for (const char *p = strstr(s, "class=\"median\""); p; p = strstr(p + 1, "class=\"median\"")) dots++;
    cr_expect_eq(whiskers, 6, "one min-max whisker per row");
    cr_expect_eq(caps, 12, "two caps per whisker");
    cr_expect_eq(bars, 5, "an interval's bar for each row with one (b32 cpu has one run)");
    cr_expect_eq(dots, 6);
    // a whisker spans min to max on the log axis: b1 cpu's (0.5 to 2, a
    // factor 4) is 3.4 times as long as b1 scalar's (8 to 12, 1.5)
    const char *wc = strstr(s, "cpu fp64 at b1");
    const char *ws = strstr(s, "scalar fp64 at b1");
    cr_assert(wc && ws, "%s", s);
    double a1, a2, b1, b2;
    cr_assert_eq(sscanf(strstr(wc, "<line class=\"whisker\""), "<line class=\"whisker\" x1=\"%*f\" y1=\"%lf\" x2=\"%*f\" "
                        "y2=\"%lf\"", &a1, &a2), 2);
    cr_assert_eq(sscanf(strstr(ws, "<line class=\"whisker\""), "<line class=\"whisker\" x1=\"%*f\" y1=\"%lf\" x2=\"%*f\" "
                        "y2=\"%lf\"", &b1, &b2), 2);
    cr_expect(fabs(a1 - a2) > 2 * fabs(b1 - b2), "cpu's min-max (x4) spans more than scalar's (x1.5): %g, %g", a1 - a2,
              b1 - b2);
    free(s);
}

// An engine that cannot take Adam's moments (a partial engine) is created
// afresh for each run instead of being reset with set_state. An exec engine
// on the CPU ("cpu (numpy ...)") is not named as the machine's GPU.
Test(bench, an_engine_that_cannot_take_moments_runs_every_repeat, .timeout = 300) {
    const char *py = th_python("import numpy");
    if (!py) cr_skip_test("no Python with numpy for examples/numpy_engine.py (make deps)");
    char eng[600];
    snprintf(eng, sizeof eng, "cpu,exec:%s examples/numpy_engine.py --no-set-moments", py);
    ThRun r = BENCH("--engines", eng, "--sizes", "b1", "--noise-target", "0");   // BENCH: 2 runs
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "2x10") && strstr(r.out, "pass (max rel diff"), "two runs, checked:\n%s", r.out);
    cr_expect(strstr(r.out, "Machine: ") && !strstr(r.out, "; GPU"), "no GPU named:\n%s", r.out);
    th_run_free(&r);
}
