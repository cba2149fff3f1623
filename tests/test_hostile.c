// Issue 29, hostile inputs: files that are not files (/dev/zero, a FIFO)
// and exports too large to make (item 8); inputs that made the readers
// quadratic (item 10); text an engine or a trace controls on the terminal,
// duplicate JSON keys, a dimension too large, a long path in a message
// (item 16); the owner, mode and links of a file an output replaces (item
// 17); the fuzz targets (item 18).
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/model.h"
#include "common/safetensors.h"
#include "common/settings.h"
#include "common/strbuf.h"
#include "common/util.h"
#include "helpers.h"
#include "traces/trace_read.h"


// The tools run under `timeout -s KILL seconds`, so that a tool that blocks
// or reads forever (what these tests catch) fails its test instead of
// hanging it; and, outside the sanitizers (which reserve terabytes of
// address space), under a 16 GiB address-space limit, so that one that
// reads until memory runs out fails soon without taking the machine's.
static ThRun limited(int seconds, const char *tool, ...) {
#ifndef UNDER_ASAN
    struct rlimit rl = {16ull << 30, 16ull << 30};
    setrlimit(RLIMIT_AS, &rl);
#endif
    static char exe[PATH_MAX + 64], secs[16];
    snprintf(exe, sizeof exe, "%s/%.60s", th_build_dir(), tool);
    snprintf(secs, sizeof secs, "%d", seconds);
    char *argv[64] = {"/usr/bin/timeout", "-s", "KILL", secs, exe};
    int n = 5;
    va_list ap;
    va_start(ap, tool);
    for (const char *a = va_arg(ap, const char *); a; a = va_arg(ap, const char *)) {
        cr_assert_lt(n, 63, "too many arguments");
        argv[n++] = (char *)a;
    }
    va_end(ap);
    argv[n] = NULL;
    return th_run(argv);
}

// Exit 2 (not killed by the timeout: 137) with every needle in stderr. Frees r.
static void refused(ThRun r, const char *what, const char *n1, const char *n2) {
    cr_expect_eq(r.status, 2, "%s: exit %d (137: killed after its time)\n%s", what, r.status, r.err);
    cr_expect(strstr(r.err, n1), "%s: no '%s' in: %s", what, n1, r.err);
    if (n2) cr_expect(strstr(r.err, n2), "%s: no '%s' in: %s", what, n2, r.err);
    th_run_free(&r);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    cr_assert(f, "create %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

// A small train trace of microgpt (steps 1 and 2) for --against, with step
// 1's "tensors" set to `tensors`; returns its path.
static const char *against_trace(const char *tensors) {
    const char *t = th_case_path("run.json");
    ThRun r = th_tool("microgpt", "--data", th_names_path(), "--steps", "2", "--samples", "0", "--trace", t, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    cJSON *root = th_load_json(t);
    cJSON *s0 = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "steps"), 0);
    cJSON_AddStringToObject(s0, "tensors", tensors);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    write_file(t, text);
    free(text);
    return t;
}

// ---- item 8: not a file, or too large to make ----

Test(hostile, a_tensors_file_that_is_a_device_or_a_fifo_is_refused_at_once, .timeout = 120) {
    th_case_dir("against_dev");
    const char *fifo = th_case_path("fifo.safetensors");
    cr_assert_eq(mkfifo(fifo, 0644), 0, "mkfifo: %s", strerror(errno));
    const char *t = against_trace("/dev/zero");
    refused(limited(30, "compare", "--data", th_names_path(), "--engines", "scalar", "--against", t, NULL),
            "tensors /dev/zero", "/dev/zero is a character device, not a safetensors file", "regular file");
    t = against_trace(fifo);   // a FIFO that nothing writes: opening it would wait forever
    refused(limited(30, "compare", "--data", th_names_path(), "--engines", "scalar", "--against", t, NULL),
            "tensors a FIFO", "is a FIFO (named pipe), not a safetensors file", "step 1's \"tensors\"");
}

// Found by fuzz/fuzz_against.c: a file without the layout's first gradient
// but with the others (and one more tensor, so that the count matched) had
// the missing one compared from whatever the buffer held.
Test(hostile, a_tensors_file_missing_the_first_gradient_is_refused, .timeout = 60) {
    th_case_dir("against_missing");
    Settings s;
    settings_defaults(&s);
    ModelShape m = model_shape(&s, 27);   // names.txt: 26 letters and BOS
    ParamLayout L;
    layout_init(&L, &m);
    double *zero = calloc(L.n_params, sizeof *zero);
    StTensor *t = calloc((size_t)L.n_tensors + 1, sizeof *t);
    char (*names)[64] = calloc((size_t)L.n_tensors + 1, sizeof *names);
    int n = 0;
    for (int k = 1; k < L.n_tensors; k++, n++) {
        snprintf(names[n], sizeof names[n], "grads/%s", L.t[k].name);
        t[n] = (StTensor){.name = names[n], .dtype = ST_F64, .ndim = 2,
                          .shape = {(size_t)L.t[k].rows, (size_t)L.t[k].cols}, .data = zero + L.t[k].offset};
    }
    t[n++] = (StTensor){.name = "extra", .dtype = ST_F64, .ndim = 1, .shape = {1}, .data = zero};
    size_t len;
    char err[256];
    unsigned char *b = safetensors_encode(t, n, NULL, 0, &len, err, sizeof err);
    cr_assert(b, "%s", err);
    const char *file = th_case_path("step1.safetensors");
    FILE *f = fopen(file, "wb");
    cr_assert(f);
    fwrite(b, 1, len, f);
    fclose(f);
    char want[128];
    snprintf(want, sizeof want, "has some grads/ tensors but not 'grads/%s'", L.t[0].name);
    refused(limited(50, "compare", "--data", th_names_path(), "--engines", "scalar", "--against", against_trace(file),
                    NULL), "the first gradient missing", want, NULL);
    free(b);
    free(t);
    free(names);
    free(zero);
    layout_free(&L);
}

Test(hostile, trace_refuses_a_device_or_a_fifo_without_reading_it, .timeout = 60) {
    th_case_dir("trace_dev");
    const char *fifo = th_case_path("fifo.json");
    cr_assert_eq(mkfifo(fifo, 0644), 0, "mkfifo: %s", strerror(errno));
    refused(limited(20, "trace", "inspect", "/dev/zero", NULL), "inspect /dev/zero",
            "/dev/zero: is a character device, not a trace file", "save what a pipe or a device gives to a file");
    refused(limited(20, "trace", "inspect", fifo, NULL), "inspect a FIFO", "is a FIFO (named pipe), not a trace file",
            NULL);
    refused(limited(20, "trace", "diff", "/dev/zero", fifo, NULL), "diff", "is a character device", NULL);
}

Test(hostile, an_export_too_large_to_make_is_refused_before_allocating, .timeout = 90) {
    th_case_dir("export_big");
    const char *dir = th_case_path("export");
    refused(limited(60, "compare", "--data", th_names_path(), "--export-init", dir, "--steps", "100000000", NULL),
            "--export-init --steps 1e8", "not enough memory for --export-init's files", "export fewer --steps");
    cr_expect_neq(access(th_case_path("export/batches.safetensors"), F_OK), 0, "a refused export wrote its files");
}

// ---- item 10: linear readers ----

// A safetensors buffer of n F32 [1] tensors t0, t1, ...
static unsigned char *many_tensors(int n, size_t *len) {
    StrBuf h = {0};
    sb_printf(&h, "{");
    for (int i = 0; i < n; i++)
        sb_printf(&h, "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%d,%d]}", i ? "," : "", i, 4 * i,
                  4 * i + 4);
    sb_printf(&h, "}");
    *len = 8 + h.n + 4 * (size_t)n;
    unsigned char *b = calloc(1, *len);
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)h.n >> (8 * k));
    memcpy(b + 8, h.s, h.n);
    sb_free(&h);
    return b;
}

// The quadratic decoder took 13.8 s for the header and 14.2 s for the
// lookups (113 s in the measurement); now about 0.35 s in all.
Test(hostile, a_header_of_80000_tensors_decodes_in_linear_time, .timeout = 12) {
    size_t len;
    unsigned char *b = many_tensors(80000, &len);
    StFile f;
    char err[256];
    double t0 = now_seconds();
    cr_assert_eq(safetensors_decode(b, len, &f, err, sizeof err), 0, "%s", err);
    cr_expect_eq(f.n, 80000);
    char name[32];
    for (int i = 0; i < 80000; i += 1) {
        snprintf(name, sizeof name, "t%d", i);
        const StTensor *t = st_find(&f, name);
        cr_assert(t && !strcmp(t->name, name), "st_find %s", name);
    }
    cr_expect_null(st_find(&f, "t80000"));
    cr_log_info("80000 tensors: decoded and looked up in %.2f s", now_seconds() - t0);
    st_file_free(&f);
    // encoding them checks their names for repeats as quickly
    StTensor *t = calloc(80000, sizeof *t);
    char (*names)[16] = calloc(80000, sizeof *names);
    float zero = 0;
    for (int i = 0; i < 80000; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i);
        t[i] = (StTensor){.name = names[i], .dtype = ST_F32, .ndim = 1, .shape = {1}, .data = &zero};
    }
    size_t elen;
    unsigned char *e = safetensors_encode(t, 80000, NULL, 0, &elen, err, sizeof err);
    cr_expect(e, "%s", err);
    free(e);
    free(t);
    free(names);
    free(b);
}

// A compare trace of one step with n error records (long layout) or a
// max_err/max_rel map of n keys.
static const char *big_trace(const char *name, int n, int records) {
    const char *p = th_case_path(name);
    FILE *f = fopen(p, "w");
    cr_assert(f);
    fprintf(f, "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"compare\", \"complete\": true, "
               "\"engines\": [{\"name\": \"a\", \"precision\": \"fp64\"}, {\"name\": \"b\", \"precision\": \"fp64\"}], "
               "\"tolerances\": {\"params\": {\"atol\": 1e-15, \"rtol\": 1e-12}}, \"steps\": [{\"step\": 1, "
               "\"lr\": 0.01, \"loss\": [3.0, 3.0], \"ok\": true, ");
    if (records) {
        fprintf(f, "\"errors\": [");
        for (int i = 0; i < n; i++)
            fprintf(f, "%s{\"quantity\": \"params\", \"tensor\": \"t%d\", \"max_abs\": %g, \"max_rel\": 1e-15, "
                       "\"n_bad\": 0}", i ? ", " : "", i, 1e-16 * i);
        fprintf(f, "]");
    } else {
        for (int m = 0; m < 2; m++) {
            fprintf(f, "%s\"%s\": {", m ? ", " : "", m ? "max_rel" : "max_err");
            for (int i = 0; i < n; i++) fprintf(f, "%s\"t%d\": %g", i ? ", " : "", i, 1e-16 * i);
            fprintf(f, "}");
        }
    }
    fprintf(f, "}]}\n");
    fclose(f);
    return p;
}

// Before: 100k records took 18 s (validate) to 171 s (diff), a map of 200k
// keys 138 s (validate) to 435 s (inspect); now about a second each.
static void run_subcommands(const char *const *cmds, int n_cmds) {
    th_case_dir("big_traces");
    const char *files[2] = {big_trace("errors100k.json", 100000, 1), big_trace("map200k.json", 200000, 0)};
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < n_cmds; c++) {
            const char *f = files[k];
            double t0 = now_seconds();
            ThRun r = !strcmp(cmds[c], "inspect --json") ? limited(30, "trace", "inspect", "--json", f, NULL)
                    : !strcmp(cmds[c], "diff")          ? limited(30, "trace", "diff", f, f, NULL)
                    : !strcmp(cmds[c], "export")
                        ? limited(30, "trace", "export", "--csv", "--errors", f, "--out", "/dev/null", NULL)
                        : limited(30, "trace", cmds[c], f, NULL);
            cr_expect_eq(r.status, 0, "trace %s %s: exit %d (137: killed after 30 s)\n%.500s", cmds[c], f, r.status,
                         r.err);
            cr_log_info("trace %s %s: %.2f s", cmds[c], f, now_seconds() - t0);
            th_run_free(&r);
        }
}

Test(hostile, every_trace_subcommand_reads_large_traces_in_linear_time, .timeout = 400) {
    static const char *const cmds[] = {"validate", "inspect", "inspect --json", "diff", "plot"};
    run_subcommands(cmds, 5);
}

// (apart: its table is traces/tool_export.c's)
Test(hostile, trace_export_reads_large_traces_in_linear_time, .timeout = 100) {
    static const char *const cmds[] = {"export"};
    run_subcommands(cmds, 1);
}

// plot --smooth N over many steps: linear in the steps whatever N (it was
// steps x N: 200k steps at N 100k took minutes).
Test(hostile, plot_smooth_is_linear_in_the_steps, .timeout = 120) {
    th_case_dir("smooth");
    const char *p = th_case_path("long.json");
    FILE *f = fopen(p, "w");
    cr_assert(f);
    fprintf(f, "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"train\", \"complete\": true, "
               "\"engine\": {\"name\": \"scalar\"}, \"steps\": [");
    for (int i = 0; i < 200000; i++) fprintf(f, "%s{\"step\": %d, \"loss\": %g}", i ? ", " : "", i + 1, 3.0 - 1e-6 * i);
    fprintf(f, "]}\n");
    fclose(f);
    ThRun r = limited(30, "trace", "plot", "--smooth", "100000", p, NULL);
    cr_expect_eq(r.status, 0, "exit %d (137: killed after 30 s)\n%.500s", r.status, r.err);
    th_run_free(&r);
}

// trace diff of two bench traces matches rows by size, engine and precision:
// 20,000 rows took 102 s (each row searched for in the other trace), now 2 s.
Test(hostile, bench_diff_matches_rows_in_linear_time, .timeout = 180) {
    th_case_dir("bench_rows");
    const char *small = th_case_path("b.json"), *big = th_case_path("big.json");
    ThRun r = th_tool("compare", "--bench", "--data", th_names_path(), "--engines", "cpu", "--sizes", "b1", "--steps",
                      "12", "--warmup", "2", "--repeats", "3", "--quiet", "--trace", small, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    cJSON *t = th_load_json(small);
    cJSON *rows = cJSON_GetObjectItemCaseSensitive(t, "bench"), *sizes = cJSON_GetObjectItemCaseSensitive(t, "sizes");
    const cJSON *row = cJSON_GetArrayItem(rows, 0), *size = cJSON_GetArrayItem(sizes, 0);
    cJSON *many_rows = cJSON_CreateArray(), *many_sizes = cJSON_CreateArray();
    for (int i = 0; i < 20000; i++) {
        char name[32];
        snprintf(name, sizeof name, "s%d", i);
        cJSON *x = cJSON_Duplicate(row, 1), *z = cJSON_Duplicate(size, 1);
        cJSON_ReplaceItemInObjectCaseSensitive(x, "size", cJSON_CreateString(name));
        cJSON_ReplaceItemInObjectCaseSensitive(z, "name", cJSON_CreateString(name));
        cJSON_AddItemToArray(many_rows, x);
        cJSON_AddItemToArray(many_sizes, z);
    }
    cJSON_ReplaceItemInObjectCaseSensitive(t, "bench", many_rows);
    cJSON_ReplaceItemInObjectCaseSensitive(t, "sizes", many_sizes);
    char *text = cJSON_PrintUnformatted(t);
    write_file(big, text);
    free(text);
    cJSON_Delete(t);
    r = limited(30, "trace", "diff", big, big, NULL);
    cr_expect_eq(r.status, 0, "exit %d (137: killed after 30 s)\n%.500s", r.status, r.err);
    cr_expect(strstr(r.out, "0 missing in B") != NULL, "%.300s", r.out);
    th_run_free(&r);
}

// ---- item 16: another program's text, repeated keys, sizes, long paths ----

static int has_control(const char *s) {
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\n') || *s == 0x7f) return 1;
    return 0;
}

Test(hostile, an_engines_error_text_reaches_the_terminal_sanitized, .timeout = 60) {
    const char *py = th_python("import json");
    if (!py) cr_skip_test("no Python 3 to run an exec engine");
    th_case_dir("exec_text");
    const char *script = th_case_path("engine.py");
    write_file(script, "import json, sys\n"
                       "sys.stdin.buffer.readline()\n"
                       "sys.stdout.write(json.dumps({'ok': False, 'error': 'boom\\x1b[2J\\nsecond line\\x07'}) + "
                       "'\\n')\n"
                       "sys.stdout.flush()\n");
    char engines[PATH_MAX + 64];
    snprintf(engines, sizeof engines, "scalar,exec:%s %s", py, script);
    ThRun r = limited(50, "compare", "--data", th_names_path(), "--engines", engines, "--steps", "1", NULL);
    cr_expect_eq(r.status, 2, "exit %d: %s", r.status, r.err);
    cr_expect(strstr(r.err, "'create' failed: boom?[2J?second line?"), "%s", r.err);
    cr_expect(!has_control(r.err), "a control character reached stderr: %s", r.err);
    th_run_free(&r);
    // a key twice in a reply: refused (Python's reader takes the last, cJSON the first)
    write_file(script, "import sys\n"
                       "sys.stdin.buffer.readline()\n"
                       "sys.stdout.write('{\"ok\": true, \"name\": \"a\", \"name\": \"b\"}\\n')\n"
                       "sys.stdout.flush()\n");
    refused(limited(50, "compare", "--data", th_names_path(), "--engines", engines, "--steps", "1", NULL),
            "a key twice", "the reply to 'create' has the key \"name\" twice", "send it once");
}

Test(hostile, a_traces_engine_names_and_keys_reach_the_terminal_sanitized) {
    th_case_dir("trace_text");
    const char *t = th_case_path("t.json");
    write_file(t, "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"compare\", \"verdict\": \"FAIL\\u001b]0;x\\u0007\", "
                  "\"engines\": [{\"name\": \"ref\\u001b[2J\", \"precision\": \"fp64\"}, "
                  "{\"name\": \"cand\\nFAKE: all good\", \"precision\": \"fp32\"}], "
                  "\"steps\": [{\"step\": 1, \"loss\": [1, 1], \"max_err\": {\"w\\u001b[31m.grad\": 1e-3}}]}");
    static const char *const cmds[3] = {"inspect", "plot", "diff"};
    for (int c = 0; c < 3; c++) {
        ThRun r = c == 2 ? th_tool("trace", "diff", t, t, NULL) : th_tool("trace", cmds[c], t, NULL);
        cr_expect(r.status == 0, "trace %s: exit %d: %s", cmds[c], r.status, r.err);
        cr_expect(!has_control(r.out), "trace %s printed a control character:\n%s", cmds[c], r.out);
        cr_expect(!strstr(r.out, "\nFAKE"), "trace %s printed an engine's newline:\n%s", cmds[c], r.out);
        th_run_free(&r);
    }
    ThRun r = th_tool("trace", "inspect", t, NULL);
    cr_expect(strstr(r.out, "ref?[2J") && strstr(r.out, "cand?FAKE: all good") && strstr(r.out, "w?[31m.grad"),
              "%s", r.out);
    th_run_free(&r);
    // UTF-8 text is shown as it is
    write_file(t, "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"train\", \"engine\": {\"name\": "
                  "\"m\\u00fcller \\u2014 \\u540d\"}, \"steps\": [{\"loss\": 1}]}");
    r = th_tool("trace", "inspect", t, NULL);
    cr_expect(strstr(r.out, "engine: m\xc3\xbcller \xe2\x80\x94 \xe5\x90\x8d"), "%s", r.out);
    th_run_free(&r);
    cr_expect_str_eq(text_safe("a\x1b[2Jb\x9b\xe2\x80\xae!"), "a?[2Jb?" "?" "?" "?!");   // ESC, a C1 byte, RIGHT-TO-LEFT OVERRIDE
    cr_expect_str_eq(text_safe_n("abcdef", (size_t)-1, 4), "abcd...");
}

// A plugin's name (its ABI table's) is text it controls: sanitized in the
// summary, the trace and what the trace tools print from it.
Test(hostile, a_plugins_name_reaches_the_terminal_sanitized, .timeout = 60) {
    th_case_dir("plugin_name");
    const char *t = th_case_path("t.json");
    char eng[PATH_MAX];
    snprintf(eng, sizeof eng, "scalar,plugin:%s/tests/libbad_plugin8.so", th_build_dir());
    ThRun r = th_tool("compare", "--data", th_names_path(), "--engines", eng, "--steps", "2", "--trace", t, NULL);
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect(!has_control(r.out) && !has_control(r.err), "compare printed a plugin's control characters:\n%s%s", r.out,
              r.err);
    th_run_free(&r);
    static const char *const cmds[2] = {"inspect", "export"};
    for (int c = 0; c < 2; c++) {
        r = c ? th_tool("trace", "export", "--csv", t, NULL) : th_tool("trace", "inspect", t, NULL);
        cr_expect_eq(r.status, 0, "trace %s: %s", cmds[c], r.err);
        cr_expect(!has_control(r.out), "trace %s printed the plugin's control characters:\n%s", cmds[c], r.out);
        th_run_free(&r);
    }
}


// A safetensors file of this header (its 8-byte length first) and 4 bytes of
// data: the decoder must refuse it; its message is left in err.
static void expect_header_refused(const char *header, int k, char *err, size_t n) {
    size_t hl = strlen(header);
    unsigned char *b = calloc(1, 8 + hl + 4);
    b[0] = (unsigned char)hl;
    memcpy(b + 8, header, hl);
    StFile f;
    err[0] = '\0';
    cr_expect_eq(safetensors_decode(b, 8 + hl + 4, &f, err, n), -1, "header %d was accepted", k);
    free(b);
}
Test(hostile, a_key_twice_in_a_trace_or_a_safetensors_header_is_refused) {
    th_case_dir("dup");
    const char *t = th_case_path("t.json");
    write_file(t, "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"train\", "
                  "\"steps\": [{\"step\": 1, \"loss\": 2.5, \"loss\": 9}]}");
    refused(th_tool("trace", "inspect", t, NULL), "trace", "the key \"loss\" appears twice in steps[0]",
            "Python's takes the last");
    write_file(t, "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"train\", \"kind\": \"compare\", "
                  "\"steps\": []}");
    ThRun r = th_tool("trace", "validate", t, NULL);   // validate: exit 1, the reason on stdout
    cr_expect_eq(r.status, 1, "exit %d", r.status);
    cr_expect(strstr(r.out, "the key \"kind\" appears twice in the top-level object"), "%s", r.out);
    th_run_free(&r);
    static const char *const headers[3][2] = {
        {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,4]}}",
         "tensor 'a': the key 'dtype' appears twice"},
        {"{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
         "__metadata__: the key 'k' appears twice"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
         "\"data_offsets\":[0,4]}}", "tensor 'a' appears twice in the header"},
    };
    for (int k = 0; k < 3; k++) {
        char err[256];
        expect_header_refused(headers[k][0], k, err, sizeof err);
        cr_expect(strstr(err, headers[k][1]), "header %d: %s", k, err);
    }
}

Test(hostile, a_dimension_too_large_says_so_with_the_limit) {
    static const char *const headers[3][2] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e20],\"data_offsets\":[0,4]}}",
         "dimension 0 (1e+20) is too large: the limit is 2^53 = 9007199254740992"},
        {"{\"a\":{\"dtype\":\"F64\",\"shape\":[4503599627370496,4503599627370496],\"data_offsets\":[0,4]}}",
         "dimension 1 (4503599627370496) is too large: the tensor's bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "dimension 0 is not a non-negative integer"},
    };
    for (int k = 0; k < 3; k++) {
        char err[256];
        expect_header_refused(headers[k][0], k, err, sizeof err);
        cr_expect(strstr(err, headers[k][1]), "header %d: %s", k, err);
        if (k == 1) cr_expect(strstr(err, "2^64-1 = 18446744073709551615"), "%s", err);
    }
}

// A path of about 2,000 characters under th_case_current() (none of it exists).
static const char *long_path(const char *last) {
    static char p[PATH_MAX];
    int k = snprintf(p, sizeof p, "%s", th_case_current());
    for (int i = 0; i < 16; i++) k += snprintf(p + k, sizeof p - (size_t)k, "/%0120d", i);
    snprintf(p + k, sizeof p - (size_t)k, "/%s", last);
    return p;
}

Test(hostile, a_long_path_leaves_the_reason_in_view) {
    th_case_dir("long");
    const char *p = long_path("t.json");
    cr_assert_gt(strlen(p), 1900);
    ThRun r = th_tool("trace", "inspect", p, NULL);
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "...") && strstr(r.err, "cannot open: No such file or directory"), "%s", r.err);
    cr_expect_lt(strlen(r.err), 400, "the path is shown whole: %zu bytes", strlen(r.err));
    th_run_free(&r);
    r = th_tool("microgpt", "--data", th_names_path(), "--steps", "1", "--trace", p, NULL);
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "--trace ") && strstr(r.err, "does not exist"), "%s", r.err);
    cr_expect_lt(strlen(r.err), 600, "%s", r.err);
    th_run_free(&r);
    cr_expect_str_eq(path_short("short/path"), "short/path");
    char shortened[200];
    snprintf(shortened, sizeof shortened, "%s", path_short(p));
    cr_expect_eq(strlen(shortened), 123);
    cr_expect(!strncmp(shortened, p, 60) && !strncmp(shortened + 60, "...", 3) &&
              !strcmp(shortened + 63, p + strlen(p) - 60), "%s", shortened);
}

// ---- item 17: the file an output replaces ----

static void a_train_trace(const char *path) {
    write_file(path, "{\"format\": \"microgpt-trace\", \"version\": 1, \"kind\": \"train\", \"steps\": [{\"loss\": 2.5}]}");
}

Test(hostile, a_replaced_output_keeps_its_owner_and_mode) {
    if (geteuid() != 0) cr_skip_test("not root: only root can give a file to another user (chown), which this checks");
    th_case_dir("owner");
    const char *t = th_case_path("t.json"), *out = th_case_path("out.csv");
    a_train_trace(t);
    write_file(out, "old\n");
    cr_assert_eq(chown(out, 1234, 2345), 0, "chown: %s", strerror(errno));
    cr_assert_eq(chmod(out, 0640), 0);
    ThRun r = th_tool("trace", "export", "--csv", t, "--out", out, NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    struct stat st;
    cr_assert_eq(stat(out, &st), 0);
    cr_expect_eq(st.st_uid, 1234, "the owner became uid %d", (int)st.st_uid);
    cr_expect_eq(st.st_gid, 2345, "the group became gid %d", (int)st.st_gid);
    cr_expect_eq(st.st_mode & 07777, 0640, "the mode became %04o", (unsigned)(st.st_mode & 07777));
    char *got = th_read_file(out, NULL);
    cr_expect(!strncmp(got, "step,lr,loss", 12), "not replaced: %s", got);
    free(got);
}

Test(hostile, a_setuid_or_setgid_file_is_never_an_output) {
    th_case_dir("setuid");
    const char *t = th_case_path("t.json"), *out = th_case_path("tool");
    a_train_trace(t);
    for (int k = 0; k < 2; k++) {
        write_file(out, "#!/bin/sh\n");
        cr_assert_eq(chmod(out, k ? 02755 : 04755), 0);
        refused(th_tool("trace", "export", "--csv", t, "--out", out, NULL), k ? "setgid" : "setuid",
                k ? "is setgid (mode 2755)" : "is setuid (mode 4755)", "an output never replaces such a file");
        char *got = th_read_file(out, NULL);
        cr_expect_str_eq(got, "#!/bin/sh\n", "the file was replaced");
        free(got);
    }
}

Test(hostile, replacing_a_file_with_other_links_says_the_link_is_broken) {
    th_case_dir("links");
    const char *t = th_case_path("t.json"), *out = th_case_path("out.csv"), *other = th_case_path("other.csv");
    a_train_trace(t);
    write_file(out, "old\n");
    cr_assert_eq(link(out, other), 0, "link: %s", strerror(errno));
    ThRun r = th_tool("trace", "export", "--csv", t, "--out", out, NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.err, "had 2 hard links: it was replaced by a new file, so the link is broken"), "%s", r.err);
    th_run_free(&r);
    char *got = th_read_file(other, NULL);
    cr_expect_str_eq(got, "old\n");
    free(got);
    // one link: nothing said
    r = th_tool("trace", "export", "--csv", t, "--out", other, NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(!strstr(r.err, "hard link"), "%s", r.err);
    th_run_free(&r);
}

// ---- item 18: every reader has a fuzz target, and make fuzz runs each ----

Test(hostile, every_reader_has_a_fuzz_target_with_a_seed_corpus) {
    static const char *const targets[] = {"dataset", "trace", "settings", "safetensors", "exec_reply", "against",
                                          "trace_tools"};
    char *mk = th_read_file("fuzz/module.mk", NULL);
    cr_expect(strstr(mk, "FUZZ_TARGETS := $(sort $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c)))"),
              "make fuzz should run every fuzz/fuzz_*.c");
    free(mk);
    for (size_t k = 0; k < sizeof targets / sizeof *targets; k++) {
        char p[256];
        snprintf(p, sizeof p, "fuzz/fuzz_%s.c", targets[k]);
        cr_expect_eq(access(p, R_OK), 0, "%s is missing", p);
        snprintf(p, sizeof p, "fuzz/corpus/%s", targets[k]);
        struct stat st;
        cr_expect(stat(p, &st) == 0 && S_ISDIR(st.st_mode), "%s: no seed corpus", p);
        char cmd[300];
        snprintf(cmd, sizeof cmd, "test -n \"$(ls -A %s 2>/dev/null)\"", p);
        cr_expect_eq(system(cmd), 0, "%s is empty", p);
    }
}
