// Failures that name the op that broke (compare/localize.c, docs/compare.md
// "Where it broke"): a fault planted in each op of the model, in its forward
// and in its backward, on the CPU engine, is named as that op; without the
// ops' outputs the report walks the gradient tensors in backward order; the
// trace keeps the first divergence and trace inspect prints it.
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare/localize.h"
#include "helpers.h"

// Plant fault F (op-fwd:OP or op-bwd:OP) and return the trace's first divergence.
static void expect_named(const char *prec, const char *fault, const char *op, const char *direction,
                         const char *text_has) {
    const char *tr = th_temp_path("loc.json");
    ThRun r = th_tool("compare", "--data", th_names_path(), "--engines", "scalar,cpu", "--precision", prec, "--steps",
                      "2", "--batch", "2", "--n-layer", "2", "--n-kv-head", "2", "--quiet", "--inject-fault", fault,
                      "--trace", tr, NULL);
    cr_expect_eq(r.status, 1, "%s %s: exit %d\n%s%s", prec, fault, r.status, r.out, r.err);
    cr_expect(strstr(r.out, "first divergence: ") != NULL, "%s %s: the report names the op:\n%s", prec, fault, r.out);
    cJSON *t = th_load_json(tr);
    const cJSON *s1 = cJSON_GetArrayItem(cJSON_GetObjectItem(t, "steps"), 0);
    const cJSON *fd = cJSON_GetObjectItem(s1, "first_divergence");
    cr_assert(cJSON_IsObject(fd), "%s %s: step 1 records its first divergence", prec, fault);
    cr_expect_str_eq(cJSON_GetObjectItem(fd, "direction")->valuestring, direction, "%s %s", prec, fault);
    const char *text = cJSON_GetObjectItem(fd, "text")->valuestring;
    if (op) cr_expect_str_eq(cJSON_GetObjectItem(fd, "op")->valuestring, op, "%s %s: %s", prec, fault, text);
    if (text_has) cr_expect(strstr(text, text_has) != NULL, "%s %s: '%s' in\n%s", prec, fault, text_has, text);
    cr_expect(cJSON_IsString(cJSON_GetObjectItem(t, "first_divergence")), "the run's first divergence");
    cJSON_Delete(t);
    th_run_free(&r);
}

// Every op of layer 1 of a 2-layer GQA model (and the ops outside the layers),
// forward: the op whose output is off is named.
static void forward_faults(const char *prec) {
    static const char *const ops[] = {"embed", "embed_norm", "layer1.norm1", "layer1.q", "layer1.k", "layer1.v",
                                      "layer1.scores", "layer1.softmax", "layer1.attn", "layer1.attn_proj",
                                      "layer1.res1", "layer1.norm2", "layer1.fc1", "layer1.relu", "layer1.fc2",
                                      "layer1.res2", "logits", "layer0.q"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        char f[64];
        snprintf(f, sizeof f, "op-fwd:%s", ops[i]);
        expect_named(prec, f, ops[i], "forward", NULL);
    }
}

// Backward: the gradient an op's backward passes on is off; the report names
// the op (with the other ops that pass gradient into the same input, which
// the outputs alone cannot tell apart: q, k and v into norm1; a residual add
// and the norm that reads the same stream).
static void backward_faults(const char *prec) {
    static const struct { const char *op, *named, *text; } cases[] = {
        {"loss", "loss", "the cross-entropy, backward"},
        {"logits", "logits", "lm_head product (the logits) (logits), backward"},
        {"layer1.res2", "layer1.norm2", "layer 1 residual add after the MLP"},
        {"layer1.fc2", "layer1.fc2", "MLP down product (mlp_fc2) (layer1.fc2), backward"},
        {"layer1.relu", "layer1.relu", "layer 1 ReLU (layer1.relu), backward"},
        {"layer1.fc1", "layer1.fc1", "MLP up product (mlp_fc1) (layer1.fc1), backward"},
        {"layer1.norm2", "layer1.norm2", "layer 1 rmsnorm before the MLP (layer1.norm2)"},
        {"layer1.attn_proj", "layer1.attn_proj", "attention output product (attn_wo) (layer1.attn_proj), backward"},
        {"layer1.attn", "layer1.attn", "attention weighted sum (softmax @ v) (layer1.attn), backward"},
        {"layer1.softmax", "layer1.softmax", "attention softmax (layer1.softmax), backward"},
        {"layer1.scores", "layer1.scores", "attention scores (q.k / sqrt(head_dim)) (layer1.scores), backward"},
        {"layer1.q", "layer1.q", "layer 1 q product (attn_wq) (layer1.q)"},
        {"layer1.k", "layer1.q", "layer 1 k product (attn_wk) (layer1.k)"},
        {"layer1.v", "layer1.q", "layer 1 v product (attn_wv) (layer1.v)"},
        {"layer1.norm1", "layer1.norm1", "layer 1 rmsnorm before attention (layer1.norm1)"},
        {"layer0.fc1", "layer0.fc1", "layer 0 MLP up product"},
        {"embed_norm", "embed_norm", "the embedding's rmsnorm (embed_norm), backward"},
        {"embed", "embed", "its weight gradient wte"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char f[64];
        snprintf(f, sizeof f, "op-bwd:%s", cases[i].op);
        expect_named(prec, f, cases[i].named, "backward", cases[i].text);
    }
}

Test(localize, every_op_forward_fp64, .timeout = 120) { forward_faults("fp64"); }
Test(localize, every_op_backward_fp64, .timeout = 120) { backward_faults("fp64"); }
Test(localize, every_op_forward_fp32, .timeout = 120) { forward_faults("fp32"); }
Test(localize, every_op_backward_fp32, .timeout = 120) { backward_faults("fp32"); }
Test(localize, bf16_forward_and_backward, .timeout = 120) {
    expect_named("bf16", "op-fwd:layer1.softmax", "layer1.softmax", "forward", NULL);
    expect_named("bf16", "op-bwd:layer1.fc1", "layer1.fc1", "backward", NULL);
}

// The existing faults are named as their op too.
Test(localize, the_named_faults_land_on_their_op, .timeout = 60) {
    expect_named("fp64", "attn-scale", "layer0.scores", "forward", NULL);
    // the mask takes effect in the softmax (the scores at s <= t are right)
    expect_named("fp64", "causal-mask", "layer0.softmax", "forward", NULL);
    // every rmsnorm backward drops a term: the first to run is layer 1's before the MLP
    expect_named("fp64", "rmsnorm-bwd", "layer1.norm2", "backward", "layer 1 rmsnorm before the MLP");
}

// Without the ops (the candidate keeps none: an exec engine that does not
// report them), the gradient tensors are listed in backward order with the
// ops that lie between the last that agrees and the first that does not.
Test(localize, without_activations_the_gradients_in_backward_order) {
    const ModelShape m = {.vocab_size = 27, .n_embd = 16, .n_head = 4, .n_kv_head = 4, .head_dim = 4, .n_layer = 1,
                          .block_size = 16};
    ParamLayout L;
    layout_init(&L, &m);
    signed char bad[9] = {0};
    // wte wpe lm_head wq wk wv wo fc1 fc2: everything below wo is off
    bad[0] = bad[1] = bad[3] = bad[4] = bad[5] = 1;
    char out[2048];
    cr_assert_eq(localize_grads(&m, &L, bad, out, sizeof out), 1);
    cr_expect(strstr(out, "gradients in backward order: lm_head ok, layer0.mlp_fc2 ok, layer0.mlp_fc1 ok, "
                          "layer0.attn_wo ok, layer0.attn_wv OFF") != NULL, "%s", out);
    cr_expect(strstr(out, "the first off is layer0.attn_wv") != NULL, "%s", out);
    cr_expect(strstr(out, "layer 0 attention weighted sum") && strstr(out, "layer 0 attention softmax") &&
                  strstr(out, "layer 0 attention scores") && strstr(out, "(layer0.v)"),
              "the attention's backward and the v product lie between attn_wo and attn_wv:\n%s", out);
    cr_expect(strstr(out, "(layer0.attn_proj)") == NULL, "attn_wo agrees: its op is not a suspect:\n%s", out);
    signed char none[9] = {0};
    cr_expect_eq(localize_grads(&m, &L, none, out, sizeof out), 0, "nothing off: nothing to say");
    layout_free(&L);
}

// The same through compare, with an exec engine that keeps no activations.
Test(localize, an_engine_without_activations_is_localized_from_gradients, .timeout = 60) {
    const char *py = th_python("import numpy");
    if (!py) {
        fprintf(stderr, "SKIP: no Python with numpy (make deps makes .venv with it)\n");
        cr_skip_test("no Python with numpy");
    }
    char eng[512];
    snprintf(eng, sizeof eng, "scalar,exec:%s tests/no_acts_engine.py --broken-rmsnorm", py);
    ThRun r = th_tool("compare", "--data", th_names_path(), "--engines", eng, "--steps", "2", "--quiet", NULL);
    cr_expect_eq(r.status, 1, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "gradients in backward order: lm_head ok") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "the first off is") != NULL, "%s", r.out);
    th_run_free(&r);
}

// trace inspect prints the first divergence of a failing compare trace.
Test(localize, trace_inspect_prints_the_first_divergence, .timeout = 60) {
    const char *tr = th_temp_path("inspect.json");
    ThRun r = th_tool("compare", "--data", th_names_path(), "--engines", "scalar,cpu", "--steps", "2", "--quiet",
                      "--inject-fault", "op-bwd:layer0.relu", "--trace", tr, NULL);
    cr_assert_eq(r.status, 1);
    th_run_free(&r);
    ThRun in = th_tool("trace", "inspect", tr, NULL);
    cr_expect_eq(in.status, 0, "%s", in.err);
    cr_expect(strstr(in.out, "first divergence: layer 0 ReLU (layer0.relu), backward") != NULL, "%s", in.out);
    th_run_free(&in);
}

// An engine that reports only some ops (the PyTorch adapter reports its
// nn.Linear products alone): the first reported op that is off is named
// with the unreported ops before it as suspects, never "what it reads
// agrees" when what it reads was not seen.
Test(localize, unreported_ops_are_named_as_suspects) {
    const ModelShape m = {.vocab_size = 27, .n_embd = 16, .n_head = 4, .n_kv_head = 4, .head_dim = 4, .n_layer = 1,
                          .block_size = 16};
    ParamLayout L;
    layout_init(&L, &m);
    const int n = act_count(&m);
    signed char fwd[64], bwd[64], grad_bad[9] = {0};
    double err[64], bound[64];
    cr_assert(n <= 64);
    for (int i = 0; i < n; i++) fwd[i] = bwd[i] = 0, err[i] = 0.1, bound[i] = 1e-12;
    const int proj = act_find(&m, "layer0.attn_proj"), res1 = act_find(&m, "layer0.res1"),
              norm2 = act_find(&m, "layer0.norm2");
    cr_assert(proj >= 0 && res1 > proj && norm2 > res1);
    for (int i = proj; i < n; i++) fwd[i] = 1;   // a fault in attn_wo's product: everything after it is off
    StepEvidence ev = {.n_ops = n, .fwd = fwd, .bwd = bwd, .fwd_err = err, .fwd_bound = bound, .bwd_err = err,
                       .bwd_bound = bound, .logits_bad = 1, .grad_bad = grad_bad};
    Divergence d;
    localize_ops(&m, &L, &ev, &d);
    cr_expect(d.found && d.op == proj && strstr(d.text, "what it reads agrees: layer0.attn"),
              "every op reported: the product itself:\n%s", d.text);
    fwd[proj] = fwd[res1] = -1;   // the adapter reports neither
    localize_ops(&m, &L, &ev, &d);
    cr_expect(d.found && d.op == norm2, "the first reported op off: %s", d.text);
    cr_expect(strstr(d.text, "what it reads agrees") == NULL, "its input was not seen:\n%s", d.text);
    cr_expect(strstr(d.text, "not reported") && strstr(d.text, "layer0.res1") && strstr(d.text, "layer0.attn_proj"),
              "the unreported ops before it are suspects:\n%s", d.text);
    // backward: the gradient into layer0.fc1's output is off, what relu passed into it (relu's gradient) unseen
    for (int i = 0; i < n; i++) fwd[i] = 0;
    const int fc1 = act_find(&m, "layer0.fc1"), relu = act_find(&m, "layer0.relu");
    for (int i = 0; i <= fc1; i++) bwd[i] = 1;
    ev.logits_bad = 0;
    localize_ops(&m, &L, &ev, &d);
    cr_expect(d.found && d.backward && strstr(d.text, "while the gradient it received agrees"), "%s", d.text);
    bwd[relu] = -1;
    localize_ops(&m, &L, &ev, &d);
    cr_expect(d.found && d.backward && strstr(d.text, "agrees") == NULL && strstr(d.text, "not reported") &&
                  strstr(d.text, "layer0.relu"),
              "relu's gradient unseen: it is a suspect:\n%s", d.text);
    layout_free(&L);
}
