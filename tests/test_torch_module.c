// PyTorch models checked through the adapter examples/mg_torch.py
// (docs/outside_engines.md, "Check my PyTorch model in 10 minutes"): a GPT
// written the usual way (nn.Linear, F.cross_entropy's token mean,
// torch.optim.Adam) passes fp64 lockstep at batch 4 with 2 layers through an
// adapter of under 30 lines; a transposed weight given the wrong map fails
// naming the tensor (by its shape, by the adapter's probe where it is square,
// and by lockstep's first divergence without the probe); and the walkthrough's
// commands run as the document shows them. Needs a Python with torch >= 2
// ($MICROGPT_PYTHON, or .venv from `make deps TORCH=1`); skips, saying so,
// where there is none.
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

#define COMPARE(...) th_tool("compare", "--data", th_names_path(), __VA_ARGS__, NULL)
#define USUAL "examples/torch_module_engine.py"
#define GPT2 "examples/torch_module_conv1d.py"
#define CASES "tests/torch_module_cases.py"

static const char *torch_python(void) {
    const char *py = th_python("import torch, torch.nn.functional as F; F.scaled_dot_product_attention; "
                               "import torch.utils._python_dispatch");
    if (!py) {
        fprintf(stderr, "SKIP: no Python with PyTorch >= 2 ($MICROGPT_PYTHON, .venv/bin/python, /usr/bin/python3, "
                        "python3): make deps TORCH=1 installs it into .venv\n");
        cr_skip_test("no Python with PyTorch >= 2 (make deps TORCH=1)");
    }
    return py;
}

// "scalar,exec:PY SCRIPT ARGS" (one of 4 rotating buffers)
static const char *engines(const char *script_and_args) {
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "scalar,exec:%s %s", torch_python(), script_and_args);
    return b;
}

// Expect exit `status` and every needle (NULL-terminated) in the output.
static void expect_all(ThRun r, int status, const char *what, const char *const *needles) {
    cr_expect_eq(r.status, status, "%s: exit %d (want %d)\n%s%s", what, r.status, status, r.out, r.err);
    for (; *needles; needles++)
        cr_expect(strstr(r.out, *needles) || strstr(r.err, *needles), "%s: the output lacks '%s':\n%s%s", what,
                  *needles, r.out, r.err);
    th_run_free(&r);
}
#define EXPECT(r, status, what, ...) expect_all((r), (status), (what), (const char *const[]){__VA_ARGS__, NULL})

Test(torch_module, usual_style_model_passes_fp64_lockstep_through_a_short_adapter, .timeout = 600) {
    torch_python();
    // the adapter: the part of the file after its marker, under 30 lines
    char *src = th_read_file(USUAL, NULL);
    const char *adapter = strstr(src, "# ---- the adapter ----");
    cr_assert(adapter, USUAL " has no '# ---- the adapter ----' line");
    int lines = 0;
    for (const char *p = adapter; *p; p++)
        if (*p == '\n') lines++;
    cr_expect_lt(lines, 30, "the adapter of " USUAL " is %d lines", lines);
    free(src);
    // every message of the run is one of docs/schemas/exec_*.schema.json
    char plog[600], f[700];
    snprintf(plog, sizeof plog, "%s/torch-module-protocol", th_temp_dir());
    setenv("MG_PROTOCOL_LOG", plog, 1);
    EXPECT(COMPARE("--engines", engines(USUAL), "--loss", "token-mean", "--batch", "4", "--n-layer", "2", "--steps",
                   "5", "--samples", "2", "--quiet"),
           0, "token-mean, batch 4, 2 layers", "PASS: lockstep, scalar (fp64) vs exec:",
           "5 of 5 steps run, batch 4, fixed rule; samples: 2 names identical",
           "\n  acts ", "\n  dacts ");   // the ops the adapter reported were compared
    unsetenv("MG_PROTOCOL_LOG");
    snprintf(f, sizeof f, "%s.requests", plog);
    th_check_schema("exec_request.schema.json", f, 1);
    snprintf(f, sizeof f, "%s.replies", plog);
    th_check_schema("exec_reply.schema.json", f, 1);
    EXPECT(COMPARE("--engines", engines(USUAL), "--loss", "token-mean", "--batch", "3", "--n-layer", "2", "--n-kv-head",
                   "2", "--steps", "3", "--quiet"),
           0, "grouped-query attention", "PASS: lockstep", "3 of 3 steps run, batch 3, fixed rule");
    // the model computes the token mean: asked for the document mean, create says what to do
    EXPECT(COMPARE("--engines", engines(USUAL), "--steps", "2"), 2, "doc-mean",
           "this model's own loss is the token-mean", "run compare with --loss token-mean");
}

Test(torch_module, gpt2_layout_passes_and_its_wrong_transposes_are_named, .timeout = 600) {
    torch_python();
    // weights stored (in, out), a fused qkv cut by rows, a longer wpe; the adapter computes the doc-mean loss
    EXPECT(COMPARE("--engines", engines(GPT2), "--batch", "4", "--n-layer", "2", "--steps", "4", "--quiet"), 0,
           "GPT-2 layout", "PASS: lockstep", "4 of 4 steps run, batch 4, fixed rule");
    // not square: the shape names it at create
    EXPECT(COMPARE("--engines", engines(GPT2 " --wrong-transpose mlp_fc1"), "--steps", "2"), 2, "mlp_fc1",
           "'create' failed: ValueError: name map: layer0.mlp_fc1: ",
           "it is stored (in, out), so its map entry needs transpose=True: "
           "mg_torch.param('h.0.mlp.c_fc.weight', transpose=True)");
    // part of the fused weight: its shape too
    EXPECT(COMPARE("--engines", engines(GPT2 " --wrong-transpose attn_wq"), "--steps", "2"), 2, "attn_wq",
           "name map: layer0.attn_wq: ", "rows 0:16 of it", "transpose=True, rows=...)");
    // square: the probe sees how the module multiplies by it
    EXPECT(COMPARE("--engines", engines(GPT2 " --wrong-transpose attn_wo"), "--steps", "2"), 2, "attn_wo",
           "name map: layer0.attn_wo -> 'h.0.attn.c_proj.weight': the model multiplies by it as x @ W with W as "
           "stored", "its map entry needs transpose=True");
    // an nn.Linear weight declared transposed
    EXPECT(COMPARE("--engines", engines(GPT2 " --wrong-transpose lm_head"), "--steps", "2"), 2, "lm_head",
           "name map: lm_head: ",
           "stored (out, in) already, as nn.Linear's: its map entry must not say transpose=True");
    // without the probe, lockstep fails at step 1 and its first divergence is the product with that weight
    EXPECT(COMPARE("--engines", engines(GPT2 " --wrong-transpose attn_wo --no-map-check"), "--steps", "2"), 1,
           "attn_wo, lockstep", "FAIL at step 1",
           "first divergence: layer 0 attention output product (attn_wo) (layer0.attn_proj), forward: its output is "
           "off");
}

Test(torch_module, usual_style_wrong_maps_and_refusals_are_named, .timeout = 600) {
    torch_python();
    // square nn.Linear weight declared (in, out): the probe, then lockstep without it
    EXPECT(COMPARE("--engines", engines(CASES " linear-transposed"), "--loss", "token-mean", "--steps", "2"), 2,
           "linear-transposed", "name map: layer0.attn_wq -> 'blocks.0.attn.query.weight' (transpose=True): the model "
           "multiplies by it as x @ W^T", "its map entry must not say transpose=True");
    EXPECT(COMPARE("--engines", engines(CASES " linear-transposed --no-map-check"), "--loss", "token-mean", "--steps",
                   "2"),
           1, "linear-transposed, lockstep", "FAIL at step 1",
           "first divergence: layer 0 q product (attn_wq) (layer0.q), forward: its output is off",
           "what it reads agrees: layer0.norm1");
    // no module hooks at all: the dispatcher's view of the products names it alone
    EXPECT(COMPARE("--engines", engines(CASES " conv1d-no-hooks"), "--steps", "2"), 2, "conv1d-no-hooks",
           "name map: layer0.attn_wo -> 'h.0.attn.c_proj.weight': the model multiplies by it as x @ W");
    EXPECT(COMPARE("--engines", engines(CASES " typo"), "--loss", "token-mean", "--steps", "2"), 2, "typo",
           "the model has no parameter 'blocks.0.mlp.fc1.weight'; did you mean 'blocks.0.mlp.fc.weight'");
    EXPECT(COMPARE("--engines", engines(CASES " bias"), "--loss", "token-mean", "--steps", "2"), 2, "bias",
           "the model's trainable parameter 'lm_head.bias' is in no tensor of the name map");
    EXPECT(COMPARE("--engines", engines(CASES " betas"), "--loss", "token-mean", "--steps", "2"), 2, "betas",
           "the optimizer's betas (0.9, 0.999), the harness's (0.85, 0.99)");
    EXPECT(COMPARE("--engines", engines(CASES " tied"), "--loss", "token-mean", "--steps", "2"), 2, "tied",
           "are the same parameter (tied weights?)");
}

// ---- the walkthrough, followed literally ----

// Does `want` (a line of a ```text block, "..." standing for anything) match
// one line of `out`?
static int line_matches(const char *out, const char *want) {
    for (const char *line = out; *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        char *l = strndup(line, n);
        const char *at = l;
        int ok = 1;
        for (const char *w = want; ok && *w;) {
            const char *dots = strstr(w, "...");
            size_t k = dots ? (size_t)(dots - w) : strlen(w);
            char *piece = strndup(w, k);
            const char *hit = k ? strstr(at, piece) : at;   // each piece after the one before
            if (!hit) ok = 0;
            else at = hit + k;
            free(piece);
            w += k + (dots ? 3 : 0);
        }
        free(l);
        if (ok) return 1;
        if (!end) break;
        line = end + 1;
    }
    return 0;
}

Test(torch_module, walkthrough_commands_run_as_documented, .timeout = 900) {
    const char *py = torch_python();
    th_names_path();
    // python3 on PATH is the Python with torch (the walkthrough's `. .venv/bin/activate`)
    char abs[2 * PATH_MAX + 2], dir[PATH_MAX], shim[PATH_MAX + 16];
    if (strchr(py, '/')) {
        if (py[0] == '/') snprintf(abs, sizeof abs, "%s", py);
        else {
            char cwd[PATH_MAX];
            cr_assert(getcwd(cwd, sizeof cwd));
            snprintf(abs, sizeof abs, "%s/%s", cwd, py);
        }
    } else {   // a bare name found on PATH
        char cmd[300];
        snprintf(cmd, sizeof cmd, "command -v %s", py);
        FILE *p = popen(cmd, "r");
        cr_assert(p && fgets(abs, (int)sizeof abs, p), "cannot find %s on PATH", py);
        abs[strcspn(abs, "\n")] = '\0';
        pclose(p);
    }
    snprintf(dir, sizeof dir, "%s/walkthrough-bin", th_temp_dir());
    mkdir(dir, 0755);
    snprintf(shim, sizeof shim, "%s/python3", dir);
    FILE *s = fopen(shim, "w");
    cr_assert(s);
    fprintf(s, "#!/bin/sh\nexec '%s' \"$@\"\n", abs);
    fclose(s);
    chmod(shim, 0755);
    char path[8192];
    snprintf(path, sizeof path, "%s:%s", dir, getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    setenv("PATH", path, 1);

    // the section: from its heading to the next heading of level 2 or 3 outside a code block
    char *doc = th_read_file("docs/outside_engines.md", NULL);
    char *sec = strstr(doc, "\n### Check my PyTorch model in 10 minutes\n");
    cr_assert(sec, "docs/outside_engines.md has no '### Check my PyTorch model in 10 minutes' section");
    char *usual = th_read_file(USUAL, NULL), *gpt2 = th_read_file(GPT2, NULL);
    int n_cmd = 0, n_py = 0, n_text = 0, in_block = 0;
    char info[32] = "", *block = NULL;
    size_t blen = 0;
    ThRun last = {0};
    int have_last = 0;
    char *line = strchr(sec + 1, '\n') + 1;
    while (line && *line) {
        char *end = strchr(line, '\n');
        if (end) *end = '\0';
        if (!in_block && (!strncmp(line, "## ", 3) || !strncmp(line, "### ", 4))) break;
        if (!strncmp(line, "```", 3)) {
            if (!in_block) {   // opening: its info string
                in_block = 1;
                snprintf(info, sizeof info, "%s", line + 3);
                block = calloc(1, 1);
                blen = 0;
            } else {           // closing: act on the block
                in_block = 0;
                if (!strcmp(info, "python")) {
                    n_py++;
                    cr_expect(strstr(usual, block) || strstr(gpt2, block),
                              "the walkthrough's python block is in neither " USUAL " nor " GPT2 ":\n%s", block);
                } else if (!strcmp(info, "sh")) {
                    if (have_last) th_run_free(&last), have_last = 0;
                    // one command a line; its expected exit status in a trailing "# exit N"
                    char *out = calloc(1, 1), *err = calloc(1, 1);
                    for (char *c = strtok(block, "\n"); c; c = strtok(NULL, "\n")) {
                        if (!*c || c[0] == '#') continue;
                        const char *ex = strstr(c, "# exit ");
                        int want = ex ? atoi(ex + 7) : 0;
                        char cmd[4096];
                        if (!strncmp(c, "build/", 6)) snprintf(cmd, sizeof cmd, "%s/%s", th_build_dir(), c + 6);
                        else snprintf(cmd, sizeof cmd, "%s", c);
                        char *argv[] = {"/bin/sh", "-c", cmd, NULL};
                        ThRun r = th_run(argv);
                        n_cmd++;
                        cr_expect_eq(r.status, want, "the walkthrough's command exited %d (its text says %d): %s\n%s%s",
                                     r.status, want, c, r.out, r.err);
                        out = realloc(out, strlen(out) + r.out_len + 1), strcat(out, r.out);
                        err = realloc(err, strlen(err) + r.err_len + 1), strcat(err, r.err);
                        th_run_free(&r);
                    }
                    last = (ThRun){.out = out, .err = err};
                    have_last = 1;
                } else if (!strcmp(info, "text")) {
                    cr_expect(have_last, "a ```text block with no ```sh block before it:\n%s", block);
                    n_text++;
                    for (char *w = strtok(block, "\n"); have_last && w; w = strtok(NULL, "\n"))
                        cr_expect(line_matches(last.out, w) || line_matches(last.err, w),
                                  "the walkthrough's output line is not in what its command printed:\n  %s\n"
                                  "printed:\n%s%s", w, last.out, last.err);
                    th_run_free(&last);
                    have_last = 0;
                }
                free(block);
                block = NULL;
            }
        } else if (in_block) {
            size_t k = strlen(line);
            block = realloc(block, blen + k + 2);
            memcpy(block + blen, line, k);
            blen += k;
            block[blen++] = '\n';
            block[blen] = '\0';
        }
        line = end ? end + 1 : NULL;
    }
    if (have_last) th_run_free(&last);
    free(block);
    cr_expect(!in_block, "the walkthrough ends inside a code block");
    // the section still has what it had when this test was written
    cr_expect_geq(n_cmd, 7, "the walkthrough ran %d commands", n_cmd);
    cr_expect_geq(n_text, 7, "the walkthrough has %d output blocks", n_text);
    cr_expect_geq(n_py, 2, "the walkthrough quotes %d python blocks", n_py);
    free(usual);
    free(gpt2);
    free(doc);
}
