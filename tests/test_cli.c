// build/microgpt's command line: every bad input is refused with one clear
// message and exit code 2 (1 for a run that diverges), and --trace writes
// what a failed or interrupted run did, marked incomplete.
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#include "helpers.h"

static const char *exe(void) {
    static char p[4200];
    snprintf(p, sizeof p, "%s/microgpt", th_build_dir());
    return p;
}

#define run(...) th_tool("microgpt", __VA_ARGS__)

static void expect_refused(int code, const char *needle, ThRun r, const char *what) {
    cr_expect_eq(r.status, code, "%s: exit %d, want %d (stderr: %s)", what, r.status, code, r.err);
    cr_expect(strstr(r.err, needle) != NULL, "%s: stderr should mention '%s': %s", what, needle, r.err);
    cr_expect(strchr(r.err, '\n') == r.err + strlen(r.err) - 1, "%s: one line: %s", what, r.err);
    th_run_free(&r);
}

#define REFUSED(code, needle, ...) expect_refused(code, needle, run(__VA_ARGS__, NULL), #__VA_ARGS__)

Test(cli, help_lists_every_flag) {
    ThRun r = run("--help", NULL);
    cr_assert_eq(r.status, 0);
    const char *flags[] = {"--data", "--seed", "--steps", "--n-embd", "--n-head", "--n-kv-head",
                           "--n-layer", "--block-size", "--lr", "--temperature", "--samples",
                           "--batch", "--trace", "--help"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        cr_expect(strstr(r.out, flags[i]) != NULL, "--help does not mention %s", flags[i]);
    th_run_free(&r);
}

// Each tool's --help lists each flag once: the flags that start a line
// ("  --flag ...") are all different.
static void expect_each_flag_once(const char *tool) {
    ThRun r = th_tool(tool, "--help", NULL);
    cr_assert_eq(r.status, 0, "%s --help: exit %d", tool, r.status);
    char seen[200][40];
    int n = 0;
    for (const char *line = r.out; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        const char *p = line + 2;   // a flag's own line: two spaces, then the flag
        if (strncmp(line, "  --", 4)) continue;
        size_t k = strcspn(p, " ,=\n");
        if (k >= sizeof seen[0]) continue;
        char flag[40];
        snprintf(flag, sizeof flag, "%.*s", (int)k, p);
        for (int i = 0; i < n; i++) cr_expect(strcmp(seen[i], flag), "%s --help lists %s twice", tool, flag);
        if (n < 200) snprintf(seen[n++], sizeof seen[0], "%s", flag);
    }
    cr_expect_gt(n, 10, "%s --help: only %d flags found", tool, n);
    th_run_free(&r);
}

Test(cli, help_lists_each_flag_once) {
    expect_each_flag_once("microgpt");
    expect_each_flag_once("compare");
}

Test(cli, bad_data_is_refused_naming_the_file) {
    REFUSED(2, "/nonexistent/names.txt", "--data", "/nonexistent/names.txt");
    const char *empty = th_write_temp("empty.txt", "", 0);
    REFUSED(2, "no documents", "--data", empty);
    const char *blank = th_write_temp("blank.txt", " \n\t\n\r\n", 6);
    REFUSED(2, "blank.txt", "--data", blank);
    const char *bad = th_write_temp("bad.txt", "anna\nbob\nc\xffy\n", 13);
    REFUSED(2, "line 3", "--data", bad);
    REFUSED(2, "bad.txt", "--data", bad);
    REFUSED(2, "read error", "--data", th_temp_dir());
}

Test(cli, impossible_settings_are_refused) {
    REFUSED(2, "not divisible", "--n-embd", "10", "--n-head", "4");
    REFUSED(2, "--n-embd", "--n-embd", "0");
    REFUSED(2, "--n-head", "--n-head", "0");
    REFUSED(2, "--n-layer", "--n-layer", "0");
    REFUSED(2, "--block-size", "--block-size", "-3");
    REFUSED(2, "--batch", "--batch", "0");
    REFUSED(2, "--n-kv-head", "--n-kv-head", "3");
    REFUSED(2, "--temperature", "--temperature", "0");
    REFUSED(2, "--temperature", "--temperature", "-0.5");
    // finite, but 1/temperature overflows: the original raises OverflowError
    REFUSED(2, "1/temperature overflows a double", "--temperature", "5e-324");
    REFUSED(2, "--lr", "--lr", "-1");
}

Test(cli, malformed_flags_are_refused) {
    REFUSED(2, "unknown flag '--frobnicate'", "--frobnicate");
    REFUSED(2, "unknown flag 'extra'", "extra");
    REFUSED(2, "'abc' is not an integer", "--steps", "abc");
    REFUSED(2, "'1e3' is not an integer", "--steps", "1e3");
    REFUSED(2, "is not a finite number", "--lr", "fast");
    REFUSED(2, "is not a finite number", "--lr", "nan");
    REFUSED(2, "is not an integer", "--seed", "1.5");
    REFUSED(2, "needs a value", "--steps");
    REFUSED(2, "is not an integer", "--samples", " 3");
}

// The trace of a failed run: "complete": false, the message and the step.
static void expect_incomplete(const char *path, const char *reason, int step) {
    char *text = th_read_file(path, NULL);
    cJSON *t = cJSON_Parse(text);
    cr_assert(t, "the trace of the stopped run is not JSON: %s", text);
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItem(t, "complete")), "not marked incomplete");
    const char *why = cJSON_GetStringValue(cJSON_GetObjectItem(t, "stop_reason"));
    cr_expect(why && strstr(why, reason), "stop_reason '%s' should mention '%s'", why ? why : "(none)", reason);
    cJSON *st = cJSON_GetObjectItem(t, "stop_step"), *steps = cJSON_GetObjectItem(t, "steps");
    cr_assert(cJSON_IsNumber(st), "no stop_step");
    if (step > 0) cr_expect_eq(st->valueint, step);
    cr_expect_eq(cJSON_GetArraySize(steps), st->valueint, "the steps array ends at stop_step");
    cJSON_Delete(t);
    free(text);
}

Test(cli, divergence_names_the_step_and_writes_an_incomplete_trace) {
    char tr[4200];
    snprintf(tr, sizeof tr, "%s/diverged.json", th_temp_dir());
    REFUSED(1, "step 2: the gradient wte[", "--data", th_names_path(), "--lr", "1e300", "--steps", "50",
            "--trace", tr);
    expect_incomplete(tr, "step 2: the gradient wte[", 2);
    REFUSED(1, "not finite", "--data", th_names_path(), "--lr", "100", "--steps", "50", "--trace", tr);
    expect_incomplete(tr, "not finite", 0);
}

Test(cli, unwritable_trace_is_refused_before_training) {
    ThRun r = run("--data", th_names_path(), "--trace", "/nonexistent/dir/t.json", NULL);
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "/nonexistent/dir/t.json") != NULL, "%s", r.err);
    cr_expect(strstr(r.out, "step") == NULL, "nothing was trained: %s", r.out);
    th_run_free(&r);
    REFUSED(2, "is a directory", "--data", th_names_path(), "--trace", th_temp_dir());
}

// An interrupted run writes what it did, marked incomplete, dies of the
// signal, and leaves no temporary file; an ignored signal stays ignored.
static int run_and_signal(const char *tr, int sig, int ignore) {
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        if (ignore) signal(sig, SIG_IGN);
        execl(exe(), exe(), "--data", th_names_path(), "--steps", ignore ? "1500" : "100000", "--trace", tr,
              (char *)NULL);
        _exit(127);
    }
    usleep(300 * 1000);
    kill(pid, sig);
    int st;
    waitpid(pid, &st, 0);
    return st;
}

static int files_in(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) files++;
    closedir(d);
    return files;
}

Test(cli, interrupted_run_writes_an_incomplete_trace) {
    char dir[4200], tr[4300];
    snprintf(dir, sizeof dir, "%s/interrupt", th_temp_dir());
    mkdir(dir, 0755);
    snprintf(tr, sizeof tr, "%s/t.json", dir);
    int sigs[2] = {SIGTERM, SIGINT};
    for (int k = 0; k < 2; k++) {
        int st = run_and_signal(tr, sigs[k], 0);
        cr_expect(WIFSIGNALED(st) && WTERMSIG(st) == sigs[k], "the run should end by signal %d", sigs[k]);
        expect_incomplete(tr, sigs[k] == SIGINT ? "interrupted by SIGINT" : "interrupted by SIGTERM", 0);
        cr_expect_eq(files_in(dir), 1, "the interrupted run left other files in %s", dir);
    }
    // nohup-style: the ignored signal changes nothing, the run completes
    int st = run_and_signal(tr, SIGTERM, 1);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "an ignored SIGTERM must not stop the run");
    char *text = th_read_file(tr, NULL);
    cr_expect(strstr(text, "\"complete\":true"), "the run should be complete");
    free(text);
}

// A complete trace: the fields docs/traces.md promises, losses that
// round-trip, and nothing left beside it.
Test(cli, trace_has_the_documented_fields) {
    char tr[4200];
    snprintf(tr, sizeof tr, "%s/ok.json", th_temp_dir());
    ThRun r = run("--data", th_names_path(), "--steps", "3", "--samples", "2", "--trace", tr, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    char *t = th_read_file(tr, NULL);
    const char *keys[] = {"\"format\"", "\"microgpt-trace\"", "\"version\"", "\"settings\"", "\"dataset\"",
                          "\"sha256\"", "\"0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d\"",
                          "\"engine\"", "\"precision\"", "\"steps\"", "\"lr\"", "\"loss\"", "\"time_s\"",
                          "\"samples\"", "3.3659669475848504"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        cr_expect(strstr(t, keys[i]) != NULL, "trace lacks %s", keys[i]);
    free(t);
    th_run_free(&r);
}

// getopt_long's conventions: --flag=value, no repeats, switches without values.
Test(cli, flags_take_equals_and_are_given_once) {
    ThRun r = run("--data", th_names_path(), "--steps=2", "--samples=1", "--temperature=1e-300", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "step    2 /    2"), "--steps=2 was not taken: %s", r.out);
    th_run_free(&r);
    REFUSED(2, "--steps is given twice", "--steps", "3", "--steps=4");
    REFUSED(2, "--lr is given twice", "--lr", "0.1", "--lr", "0.1");
    REFUSED(2, "--trace: empty path", "--trace=");
    REFUSED(2, "'' is not an integer", "--steps=");
    REFUSED(2, "unknown flag '--stepsx=3'", "--stepsx=3");
}

Test(cli, impossible_sizes_exit_2_with_the_memory_estimate) {
    REFUSED(2, "not enough memory for the scalar engine", "--data", th_names_path(), "--n-embd", "100000", "--n-head", "1");
    REFUSED(2, "GiB are available", "--data", th_names_path(), "--batch", "1000000", "--n-embd", "64");
}

Test(cli, the_data_loader_caps_what_it_reads) {
    REFUSED(2, "line 1 is longer than 1048576 bytes", "--data", "/dev/zero");
    static char line[(1 << 20) + 8];
    memset(line, 'a', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    const char *p = th_write_temp("oneline.txt", line, sizeof line);
    REFUSED(2, "oneline.txt: line 1 is longer", "--data", p);
}

// A full disk: exit 1 with a message, not 0.
Test(cli, a_failed_write_to_stdout_is_exit_1) {
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "'%s' --data %s --steps 2 --samples 1 >/dev/full 2>/dev/null", exe(), th_names_path());
    int st = system(cmd);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit %d", WEXITSTATUS(st));
}

// --timeline: Chrome trace-event JSON, the four phases of every step in order.
Test(cli, timeline_has_every_phase_of_every_step) {
    char tl[4200];
    snprintf(tl, sizeof tl, "%s/timeline.json", th_temp_dir());
    ThRun r = run("--data", th_names_path(), "--steps", "3", "--samples", "0", "--timeline", tl, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    char *text = th_read_file(tl, NULL);
    cJSON *t = cJSON_Parse(text);
    cr_assert(t, "not JSON: %s", text);
    cJSON *ev = cJSON_GetObjectItem(t, "traceEvents"), *e;
    static const char *const phase[4] = {"forward", "order (DFS)", "backward", "adam"};
    int n = 0;
    double end = 0;
    cJSON_ArrayForEach(e, ev) {
        if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(e, "ph")), "X")) continue;
        cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(e, "name")), phase[n % 4]);
        cr_expect_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "args"), "step")->valueint, n / 4 + 1);
        double ts = cJSON_GetObjectItem(e, "ts")->valuedouble, dur = cJSON_GetObjectItem(e, "dur")->valuedouble;
        cr_expect(ts >= end - 1e-3 && dur >= 0, "event %d overlaps the one before", n);
        end = ts + dur;
        n++;
    }
    cr_expect_eq(n, 12, "%d phase events for 3 steps", n);
    cJSON_Delete(t);
    free(text);
    ThRun b = th_tool("bench_scalar", "--steps", "2", "--timeline", tl, NULL);
    cr_expect_eq(b.status, 2, "bench_scalar refuses --timeline");
    th_run_free(&b);
}

// Not enough memory (here a 100 MB address-space limit) is exit 2 with the
// estimate, and the trace is still written, marked incomplete with the reason.
Test(cli, out_of_memory_still_writes_the_trace) {
#ifdef UNDER_ASAN
    cr_skip_test("AddressSanitizer reserves more address space than the limit this test sets");
#endif
    char tr[4200], cmd[9000];
    snprintf(tr, sizeof tr, "%s/oom.json", th_temp_dir());
    snprintf(cmd, sizeof cmd, "ulimit -v 100000 && exec '%s/microgpt' --data '%s' --batch 64 --steps 3 --trace '%s'",
             th_build_dir(), th_names_path(), tr);
    char *const argv[] = {"/bin/sh", "-c", cmd, NULL};
    ThRun r = th_run(argv);
    cr_expect_eq(r.status, 2, "%s", r.err);
    cr_expect(strstr(r.err, "not enough memory"), "%s", r.err);
    char *t = th_read_file(tr, NULL);
    cJSON *j = cJSON_Parse(t);
    cr_assert(j, "not JSON: %s", t);
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItem(j, "complete")), "%s", t);
    const char *why = cJSON_GetStringValue(cJSON_GetObjectItem(j, "stop_reason"));
    cr_expect(why && strstr(why, "not enough memory"), "the reason: %s", t);
    cJSON_Delete(j);
    free(t);
    th_run_free(&r);
}
