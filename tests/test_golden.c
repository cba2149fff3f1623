// The faithful port against the original's own output: the default run
// against tests/golden/original (stdout byte for byte, every loss in all 64
// bits, the samples), and other settings against tests/golden (see its
// MANIFEST). Both are the original's outputs, committed so that a clone needs
// only data/names.txt.
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

// Losses written in full precision: "... | loss 3.3660 3.3659669475848504".
static int full_losses(const char *text, double *out, int cap) {
    int n = 0;
    for (const char *p = strstr(text, "| loss "); p && n < cap; p = strstr(p + 1, "| loss ")) {
        const char *sp = strchr(p + 7, ' ');
        cr_assert(sp, "malformed golden line");
        out[n++] = strtod(sp + 1, NULL);
    }
    return n;
}

// The same text without the full-precision column: what the original prints.
static char *strip_full(const char *text) {
    char *o = malloc(strlen(text) + 1), *q = o;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        const char *loss = strstr(p, "| loss ");
        if (loss && loss < p + len) {
            const char *sp = strchr(loss + 7, ' ');
            if (sp && sp < p + len) len = (size_t)(sp - p);
        }
        memcpy(q, p, len);
        q += len;
        if (!nl) break;
        *q++ = '\n';
        p = nl + 1;
    }
    *q = '\0';
    return o;
}

// Run build/microgpt with the flags (and a trace), return stdout; the trace's
// losses go to losses[], its samples count to *n_samples.
static char *run_microgpt(const char *flags, double *losses, int cap, int *n_losses, cJSON **trace) {
    char exe[4200], tr[4200];
    snprintf(exe, sizeof exe, "%s/microgpt", th_build_dir());
    snprintf(tr, sizeof tr, "%s/golden-trace.json", th_temp_dir());
    char *argv[64], buf[1024];
    int argc = 0;
    argv[argc++] = exe;
    snprintf(buf, sizeof buf, "%s", flags);
    char *save = NULL;
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) argv[argc++] = t;
    argv[argc++] = "--data";
    argv[argc++] = (char *)th_names_path();
    argv[argc++] = "--trace";
    argv[argc++] = tr;
    argv[argc] = NULL;
    ThRun r = th_run(argv);
    cr_assert_eq(r.status, 0, "microgpt %s failed (%d): %s", flags, r.status, r.err);
    char *text = th_read_file(tr, NULL);
    cJSON *root = cJSON_Parse(text);
    free(text);
    cr_assert(root, "the trace is not JSON");
    cJSON *steps = cJSON_GetObjectItem(root, "steps");
    int n = 0;
    cJSON *s;
    cJSON_ArrayForEach(s, steps) {
        cr_assert_lt(n, cap);
        losses[n++] = cJSON_GetObjectItem(s, "loss")->valuedouble;
    }
    *n_losses = n;
    *trace = root;
    char *out = r.out;
    r.out = NULL;
    th_run_free(&r);
    return out;
}

static void check_run(const char *flags, const char *golden_full, const char *golden_stdout) {
    static double want[1000000], got[1000000];
    char *full = th_read_file(golden_full, NULL);
    int nw = full_losses(full, want, 1000000);
    cr_assert_gt(nw, 0, "no losses in %s", golden_full);
    char *expect_out = golden_stdout ? th_read_file(golden_stdout, NULL) : strip_full(full);
    int ng;
    cJSON *trace;
    char *out = run_microgpt(flags, got, 1000000, &ng, &trace);
    cr_assert_eq(ng, nw, "%s: %d steps traced, golden has %d", flags, ng, nw);
    int bad = 0, first = -1;
    for (int i = 0; i < nw; i++)
        if (memcmp(&got[i], &want[i], sizeof(double)) != 0 && bad++ == 0) first = i;
    if (!*flags) flags = "(default settings)";
    cr_expect_eq(bad, 0, "%s: %d of %d losses differ in their bits; first at step %d: %.17g vs %.17g",
                 flags, bad, nw, first + 1, first >= 0 ? got[first] : 0.0, first >= 0 ? want[first] : 0.0);
    if (strcmp(out, expect_out) != 0) {
        size_t k = 0;
        while (out[k] && out[k] == expect_out[k]) k++;
        cr_expect_fail("%s: stdout differs from the original's at byte %zu", flags, k);
    }
    // the samples in the trace are the printed ones
    cJSON *samples = cJSON_GetObjectItem(trace, "samples"), *smp;
    int i = 0;
    cJSON_ArrayForEach(smp, samples) {
        char line[512];
        snprintf(line, sizeof line, "sample %2d: %s\n", ++i, smp->valuestring);
        cr_expect(strstr(expect_out, line) != NULL, "trace sample '%s' is not in the golden output", line);
    }
    cJSON_Delete(trace);
    free(out);
    free(full);
    free(expect_out);
}

Test(golden, default_run_is_bit_identical_to_the_original, .timeout = 120) {
    check_run("", "tests/golden/original/microgpt_seed42_full.txt",
              "tests/golden/original/microgpt_seed42_stdout.txt");
}

Test(golden, other_settings_are_bit_identical_to_the_original, .timeout = 300) {
    char *manifest = th_read_file("tests/golden/MANIFEST", NULL);
    int checked = 0;
    char *save = NULL;
    for (char *line = strtok_r(manifest, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || !strchr(line, '|')) continue;
        char name[64], flags[512];
        cr_assert_eq(sscanf(line, "%63s | %511[^\n]", name, flags), 2, "bad MANIFEST line: %s", line);
        char path[128];
        snprintf(path, sizeof path, "tests/golden/%s.txt", name);
        check_run(flags, path, NULL);
        checked++;
    }
    cr_expect_geq(checked, 5, "the MANIFEST lists %d runs", checked);
    free(manifest);
}
