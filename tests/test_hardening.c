// Issue 29, "Hardening round two": no output replaces a file the run reads
// (a plugin, an exec engine's script), --export-init replaces its files
// together or not at all, two outputs of one run may not be the same file, a
// flag whose value was left out does not take the next flag for a file name,
// and a plugin cannot make compare read out of bounds (tokens past the
// vocabulary, a create() message without its NUL).
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

#define COMPARE(...) th_tool("compare", "--data", th_names_path(), __VA_ARGS__, NULL)


// The data's absolute path, for tests that run the tools in th_case_current() (so that a
// file a tool should not have made lands there, never in the repository).
static const char *data_abs(void) {
    static char p[PATH_MAX];
    if (!realpath(th_names_path(), p)) cr_assert_fail("realpath %s: %s", th_names_path(), strerror(errno));
    return p;
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    char *b = th_read_file(from, &n);
    FILE *f = fopen(to, "wb");
    cr_assert(f, "create %s: %s", to, strerror(errno));
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
    free(b);
}

static int same_bytes(const char *a, const char *b) {
    size_t na, nb;
    char *x = th_read_file(a, &na), *y = th_read_file(b, &nb);
    int same = na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

// Exit 2 with every needle in stderr. Frees r.
static void refused(ThRun r, const char *const *needles, int n, const char *what) {
    cr_expect_eq(r.status, 2, "%s: exit %d: %s", what, r.status, r.err);
    for (int i = 0; i < n; i++) cr_expect(strstr(r.err, needles[i]), "%s: no '%s' in: %s", what, needles[i], r.err);
    th_run_free(&r);
}

// Item 1: a plugin library and an exec engine's script are inputs.
Test(hardening, no_output_replaces_a_plugin_or_an_exec_script) {
    th_case_dir("inputs");
    char so[4700], orig[4700], engines[5000];
    snprintf(orig, sizeof orig, "%s/libmicrogpt_naive_engine.so", th_build_dir());
    snprintf(so, sizeof so, "%s", th_case_path("n.so"));
    copy_file(orig, so);
    snprintf(engines, sizeof engines, "scalar,plugin:%s", so);
    const char *says[] = {so, "is also an input of this run (the plugin --engines loads:"};
    refused(COMPARE("--engines", engines, "--steps", "2", "--trace", so), says, 2, "--trace over the plugin");
    refused(COMPARE("--engines", engines, "--steps", "2", "--timeline", so), says, 2, "--timeline over the plugin");
    refused(COMPARE("--bench", "--engines", engines, "--steps", "10", "--markdown", so), says, 2,
            "--markdown over the plugin");
    cr_expect(same_bytes(orig, so), "the plugin was changed");
    // the words of an exec engine's command that name files
    const char *py = th_case_path("engine.py");
    FILE *f = fopen(py, "w");
    cr_assert(f);
    fputs("raise SystemExit(3)\n", f);
    fclose(f);
    snprintf(engines, sizeof engines, "scalar,exec:python3 '%s' --fp64", py);
    const char *says_exec[] = {"--trace", "a file named in the exec engine's command of --engines:"};
    refused(COMPARE("--engines", engines, "--steps", "2", "--trace", py), says_exec, 2, "--trace over the script");
    char *got = th_read_file(py, NULL);
    cr_expect_str_eq(got, "raise SystemExit(3)\n", "the script was changed");
    free(got);
}

// Item 2: a refused last file leaves the folder as it was.
Test(hardening, export_init_replaces_all_its_files_or_none, .timeout = 60) {
    th_case_dir("export");
    const char *dir = th_case_path("e");
    ThRun r = COMPARE("--export-init", dir, "--steps", "2");
    cr_assert_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    const char *names[4] = {"settings.json", "init.safetensors", "documents.txt", "batches.safetensors"};
    char keep[4][4700];
    for (int k = 0; k < 4; k++) {
        char from[4700];
        snprintf(from, sizeof from, "%s/%s", dir, names[k]);
        snprintf(keep[k], sizeof keep[k], "%s", th_case_path(names[k]));
        copy_file(from, keep[k]);
    }
    char last[4700];
    snprintf(last, sizeof last, "%s/batches.safetensors", dir);
    cr_assert_eq(chmod(last, 0444), 0);
    const char *says[] = {last, "is read-only", "no file was written"};
    refused(COMPARE("--export-init", dir, "--steps", "3", "--seed", "7"), says, 3, "a read-only last file");
    for (int k = 0; k < 4; k++) {
        char now[4700];
        snprintf(now, sizeof now, "%s/%s", dir, names[k]);
        cr_expect(same_bytes(keep[k], now), "%s was replaced: the folder mixes two exports", names[k]);
    }
    cr_expect_eq(chmod(last, 0644), 0);
    r = COMPARE("--export-init", dir, "--steps", "3", "--seed", "7");
    cr_expect_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    char now[4700];
    snprintf(now, sizeof now, "%s/settings.json", dir);
    cr_expect(!same_bytes(keep[0], now), "a writable folder was not exported to");
}

// Item 3: two outputs, one file (in th_case_current(), under two spellings).
Test(hardening, two_outputs_may_not_be_the_same_file) {
    const char *d = data_abs();  // before leaving the repository root
    cr_assert_eq(chdir(th_case_dir("same")), 0);
    const char *both_tt[] = {"--trace", "--timeline", "are the same file: one output would replace the other"};
    refused(th_tool("compare", "--data", d, "--engines", "scalar,cpu", "--steps", "1", "--trace", "x", "--timeline",
                    "x", NULL), both_tt, 3, "--trace x --timeline x");
    refused(th_tool("compare", "--data", d, "--engines", "scalar,cpu", "--steps", "1", "--trace", "./x", "--timeline",
                    "x", NULL), both_tt, 3, "./x and x");
    refused(th_tool("compare", "--data", d, "--engines", "scalar,cpu", "--steps", "1", "--trace", "x", "--timeline",
                    "../same/x", NULL), both_tt, 3, "x and ../same/x");
    const char *both_tm[] = {"--markdown x", "--trace ./x", "are the same file"};
    refused(th_tool("compare", "--data", d, "--bench", "--engines", "scalar", "--steps", "10", "--markdown", "x",
                    "--trace", "./x", NULL), both_tm, 3, "--markdown x --trace ./x");
    const char *both_stdout[] = {"--trace -", "--timeline -", "both write to standard output"};
    refused(th_tool("compare", "--data", d, "--engines", "scalar,cpu", "--steps", "1", "--trace", "-", "--timeline",
                    "-", NULL), both_stdout, 3, "- twice");
    refused(th_tool("microgpt", "--data", d, "--steps", "1", "--trace", "x", "--timeline", "./x", NULL), both_tt, 3,
            "microgpt --trace x --timeline ./x");
    cr_expect_neq(access("x", F_OK), 0, "a refused run wrote x");
    // an existing file under two names (a symlink) is one file too
    FILE *f = fopen("y", "w");
    cr_assert(f);
    fclose(f);
    cr_assert_eq(symlink("y", "link"), 0);
    refused(th_tool("microgpt", "--data", d, "--steps", "1", "--trace", "link", "--timeline", "y", NULL), both_tt, 3,
            "a symlink and its target");
    // distinct files are fine
    ThRun r = th_tool("microgpt", "--data", d, "--steps", "1", "--samples", "0", "--trace", "t.json", "--timeline",
                      "tl.json", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
}

// Item 4: `--flag --next` is a missing value, not a file named --next, for
// every path flag of every tool (run in th_case_current(): a wrongly made file lands there).
Test(hardening, a_missing_value_is_not_taken_for_a_file_name) {
    const char *d = data_abs();  // before leaving the repository root
    cr_assert_eq(chdir(th_case_dir("missing")), 0);
    static const struct { const char *tool, *argv[10]; } cases[] = {
        {"compare", {"--engines", "scalar,cpu", "--steps", "1", "--trace", "--quiet", NULL}},
        {"compare", {"--engines", "scalar,cpu", "--steps", "1", "--timeline", "--quiet", NULL}},
        {"compare", {"--bench", "--engines", "scalar", "--steps", "10", "--markdown", "--quiet", NULL}},
        {"compare", {"--engines", "scalar", "--against", "--quiet", NULL}},
        {"compare", {"--export-init", "--quiet", NULL}},
        {"compare", {"--bench", "--engines", "scalar", "--baseline", "torch", "--python", "--quiet", NULL}},
        {"compare", {"--engines", "scalar,cpu", "--trace=--quiet", NULL}},
        {"microgpt", {"--steps", "1", "--trace", "--samples", "0", NULL}},
        {"microgpt", {"--steps", "1", "--timeline", "--samples", "0", NULL}},
        {"trace", {"plot", "t.json", "--svg", "--log", NULL}},
        {"trace", {"export", "--csv", "t.json", "--out", "--errors", NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *args[16];
        int n = 0;
        if (strcmp(cases[i].tool, "trace")) args[n++] = "--data", args[n++] = d;
        for (const char *const *a = cases[i].argv; *a; a++) args[n++] = *a;
        args[n] = NULL;
        char what[256] = "";
        for (const char *const *a = cases[i].argv; *a; a++)
            snprintf(what + strlen(what), sizeof what - strlen(what), " %s", *a);
        const char *says[] = {"its value is missing", "to name a file that begins with '--', write ./--"};
        refused(th_tool_argv(cases[i].tool, args), says, 2, what);
    }
    // --data too, and the way to name such a file still works
    const char *says[] = {"--data: its value is missing ('--steps' is a flag)"};
    refused(th_tool("microgpt", "--data", "--steps", "1", NULL), says, 1, "--data --steps");
    cr_expect_neq(access("--quiet", F_OK), 0, "a file named --quiet was written");
    cr_expect_neq(access("--samples", F_OK), 0, "a file named --samples was written");
    ThRun r = th_tool("microgpt", "--data", d, "--steps", "1", "--samples", "0", "--trace", "./--t", NULL);
    cr_expect_eq(r.status, 0, "./--t: %s", r.err);
    th_run_free(&r);
    cr_expect_eq(access("--t", F_OK), 0, "./--t was not written");
}

static const char *bad_plugin(int n) {
    static char p[4600];
    snprintf(p, sizeof p, "scalar,plugin:%s/tests/libbad_plugin%d.so", th_build_dir(), n);
    return p;
}

// Item 5: the sampled tokens index the vocabulary.
Test(hardening, a_plugin_sampling_past_the_vocabulary_is_stopped) {
    ThRun r = COMPARE("--engines", bad_plugin(6), "--steps", "1", "--samples", "2");
    cr_expect_eq(r.status, 1, "exit %d: %s", r.status, r.err);
    cr_expect(strstr(r.err, "libbad_plugin6.so (bad): sample: token 0 is 27, not a character id (0 to 25; BOS ends "
                            "a sample)"), "%s", r.err);
    th_run_free(&r);
}

// The longest run of c in s.
static size_t longest_run(const char *s, char c) {
    size_t best = 0, n = 0;
    for (; *s; s++) {
        n = *s == c ? n + 1 : 0;
        if (n > best) best = n;
    }
    return best;
}

// Item 6: create() fills its 512-byte message buffer with no NUL.
Test(hardening, a_create_message_without_its_nul_is_cut_at_the_buffer) {
    ThRun r = COMPARE("--engines", bad_plugin(7), "--steps", "1");
    cr_expect_eq(r.status, 2, "exit %d: %s", r.status, r.err);
    cr_expect(strstr(r.err, "the plugin's create() message has no terminating NUL; cut at 511 bytes: xxx"), "%s",
              r.err);
    cr_expect_eq(longest_run(r.err, 'x'), 511, "the message shows %zu bytes of the buffer, not 511",
                 longest_run(r.err, 'x'));
    th_run_free(&r);
}
