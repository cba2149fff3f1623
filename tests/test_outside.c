// Outside engines end to end: the example plugin and the numpy engine pass
// lockstep against the scalar engine; broken plugins and lying processes get
// the right message and exit code, and the processes are always reaped.
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "common/model.h"
#include "compare/engines.h"
#include "scalar_ref/engine_scalar.h"

#define COMPARE(...) th_tool("compare", "--data", th_names_path(), __VA_ARGS__, NULL)

static const char *plugin(const char *name) {
    static char path[8][512];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 512, "plugin:%s/%s", th_build_dir(), name);
    return p;
}

Test(outside, example_plugin_passes_lockstep_against_scalar, .timeout = 120) {
    const char *e = plugin("libmicrogpt_example_engine.so");
    char engines[600];
    snprintf(engines, sizeof engines, "scalar,%s", e);
    th_expect_status(COMPARE("--engines", engines, "--steps", "20", "--quiet"), 0, "PASS: lockstep", "fp64");
    th_expect_status(COMPARE("--engines", engines, "--steps", "20", "--precision", "fp32", "--quiet"), 0,
                  "PASS: lockstep", "fp32");
    // and it is really the plugin that runs: a fault injected into it is caught
    th_expect_status(COMPARE("--engines", engines, "--steps", "2", "--inject-fault", "grad-sign"), 1,
                  "FAIL at step 1: the gradient of lm_head[1,2]", "injected fault");
}

// examples/naive_engine.c: written against the public header alone
Test(outside, independent_naive_plugin_passes_lockstep_against_scalar, .timeout = 120) {
    char engines[600];
    snprintf(engines, sizeof engines, "scalar,%s", plugin("libmicrogpt_naive_engine.so"));
    th_expect_status(COMPARE("--engines", engines, "--steps", "20", "--quiet"), 0, "PASS: lockstep", "fp64");
    th_expect_status(COMPARE("--engines", engines, "--steps", "6", "--batch", "5", "--n-kv-head", "2", "--n-layer", "2",
                          "--quiet"), 0, "PASS: lockstep", "batch 5, GQA, 2 layers");
    th_expect_status(COMPARE("--engines", engines, "--steps", "2", "--precision", "fp32"), 2,
                  "the naive engine computes in fp64 only", "fp32 refused by create");
}

Test(outside, broken_plugins_are_refused_with_the_reason) {
    char engines[600];
    snprintf(engines, sizeof engines, "scalar,plugin:%s/nonexistent.so", th_build_dir());
    th_expect_status(COMPARE("--engines", engines, "--steps", "1"), 2, "cannot open shared object file", "no file");
    th_expect_status(COMPARE("--engines", "scalar,plugin:nonexistent.so", "--steps", "1"), 2,
                  "write ./NAME.so", "a bare name");
    const struct { const char *lib, *needle; int status; } bad[] = {
        {"tests/libbad_plugin1.so", "speaks engine ABI version 2; this compare speaks version 1", 2},
        {"tests/libbad_plugin2.so", "its ABI table has no 'get_grads' (required)", 2},
        {"tests/libbad_plugin3.so", "does not export microgpt_engine_abi_v1", 2},
        {"tests/libbad_plugin4.so", "no device for 1 layers", 2},
        {"tests/libbad_plugin5.so", "step failed: the device fell off the bus", 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(engines, sizeof engines, "scalar,%s", plugin(bad[i].lib));
        th_expect_status(COMPARE("--engines", engines, "--steps", "1"), bad[i].status, bad[i].needle, bad[i].lib);
    }
}

Test(outside, cuda_is_a_plugin_found_beside_compare) {
    setenv("MICROGPT_CUDA_ENGINE", "/nonexistent/libcuda_engine.so", 1);
    th_expect_status(COMPARE("--engines", "scalar,cuda", "--steps", "1"), 2, "/nonexistent/libcuda_engine.so is missing",
                  "MICROGPT_CUDA_ENGINE");
    // cuda:fused and cuda:layered are the same plugin with the path forced
    th_expect_status(COMPARE("--engines", "scalar,cuda:fused", "--steps", "1"), 2,
                     "/nonexistent/libcuda_engine.so is missing", "engine cuda:fused");
    th_expect_status(COMPARE("--engines", "scalar,cuda:layered", "--steps", "1"), 2,
                     "/nonexistent/libcuda_engine.so is missing", "engine cuda:layered");
    unsetenv("MICROGPT_CUDA_ENGINE");
    // without a GPU (CI) or with one, the plugin beside compare loads; a
    // usage error does not load it at all
    ThRun r = COMPARE("--engines", "cuda,bogus");
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "unknown engine 'bogus' (scalar, cpu, cuda, cuda:fused, cuda:layered, plugin:PATH.so or exec:CMD ARGS)"), "%s",
              r.err);
    th_run_free(&r);
}

static const char *python(int numpy) { return th_python(numpy ? "import numpy" : "import sys"); }

Test(outside, numpy_engine_passes_lockstep_against_scalar, .timeout = 120) {
    const char *py = python(1);
    if (!py) {
        fprintf(stderr, "SKIP: no Python with numpy (/usr/bin/python3 or $MICROGPT_PYTHON): apt-get install "
                    "python3-numpy\n");
        cr_skip_test("no Python with numpy");
    }
    char engines[600], plog[600], f[700];
    snprintf(engines, sizeof engines, "scalar,exec:%s examples/numpy_engine.py", py);
    // every message of the run is one of docs/schemas/exec_*.schema.json
    snprintf(plog, sizeof plog, "%s/protocol", th_temp_dir());
    setenv("MG_PROTOCOL_LOG", plog, 1);
    th_expect_status(COMPARE("--engines", engines, "--steps", "20", "--quiet"), 0, "PASS: lockstep", "fp64");
    unsetenv("MG_PROTOCOL_LOG");
    snprintf(f, sizeof f, "%s.requests", plog);
    th_check_schema("exec_request.schema.json", f, 1);
    snprintf(f, sizeof f, "%s.replies", plog);
    th_check_schema("exec_reply.schema.json", f, 1);
    th_expect_status(COMPARE("--engines", engines, "--steps", "10", "--batch", "4", "--n-kv-head", "2", "--n-layer", "2",
                          "--precision", "fp32", "--quiet"), 0, "PASS: lockstep", "fp32, batch 4, GQA, 2 layers");
    // the autograd-cut bug: compare fails at step 1 and names the tensors that got no gradient
    snprintf(engines, sizeof engines, "scalar,exec:%s examples/numpy_engine.py --broken-rmsnorm", py);
    ThRun r = COMPARE("--engines", engines, "--steps", "5");
    cr_expect_eq(r.status, 1, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "FAIL at step 1"), "%s", r.out);
    cr_expect(strstr(r.out, "not in the reference: wte wpe (2 of 9 tensors"), "%s", r.out);
    th_run_free(&r);
}

// Run compare against tests/liar_engine.py in a mode; the liar must be gone
// afterwards (killed and reaped, not left running).
static void liar_args(const char *mode, int status, const char *needle, const char *timeout, const char *extra) {
    const char *py = python(0);
    if (!py) cr_skip_test("no python3");
    char pidfile[512], engines[1200];
    snprintf(pidfile, sizeof pidfile, "%s/liar-%s.pid", th_temp_dir(), mode);
    remove(pidfile);
    snprintf(engines, sizeof engines, "scalar,exec:%s tests/liar_engine.py %s %s", py, mode, pidfile);
    ThRun r = extra ? COMPARE("--engines", engines, "--steps", "2", "--exec-timeout", timeout, "--n-embd", extra)
                    : COMPARE("--engines", engines, "--steps", "2", "--exec-timeout", timeout);
    cr_expect_eq(r.status, status, "%s: exit %d (want %d)\n%s%s", mode, r.status, status, r.out, r.err);
    cr_expect(strstr(r.err, needle) || strstr(r.out, needle), "%s: the output lacks '%s':\n%s%s", mode, needle, r.out,
              r.err);
    th_run_free(&r);
    char *pid = th_read_file(pidfile, NULL);
    long p = atol(pid);
    free(pid);
    cr_assert(p > 0);
    cr_expect(kill((pid_t)p, 0) == -1 && errno == ESRCH, "%s: the engine process %ld is still there", mode, p);
}

static void liar(const char *mode, int status, const char *needle, const char *timeout) {
    liar_args(mode, status, needle, timeout, NULL);
}

Test(outside, a_process_that_crashes_hangs_or_lies_is_named_and_reaped, .timeout = 120) {
    // initial parameters (n_embd 96: 1.2 MB) larger than a pipe holds, to a process that reads none
    liar_args("no-read", 2, "the process read no more of the 'create' request within 1 s (--exec-timeout); killed it",
              "1", "96");
    liar("crash-create", 2, "exited with status 3 while compare waited for the reply to 'create'", "10");
    liar("crash-step", 1, "was killed by signal 11 (Segmentation fault) while compare waited for the reply to 'step'",
         "10");
    liar("hang", 1, "no reply to 'step' within 1 s (--exec-timeout); killed the process", "1");
    // the reply names where the engine raised; its traceback reaches stderr
    liar("refuse-step", 1, "'step' failed: RuntimeError: out of device memory (at ", "10");
    liar("refuse-step", 1, "liar_engine.py:45 in step)", "10");
    liar("refuse-step", 1, "raise RuntimeError(\"out of device memory\")", "10");
    liar("garbage", 1, "the reply to 'step' is not a JSON object on one line: 'this is not json'", "10");
    liar("short", 1, "exited with status 0 while compare waited for the data to 'get logits' (what it sent was cut "
         "short)", "10");
    liar("wrong-shape", 1, "tensor 'logits' is F64 [1,", "10");
    liar("missing", 1, "lacks the tensor 'logits' (expected F64 [1,", "10");
    liar("nan", 1, "FAIL at step 1: logits[0,0,0]", "10");
}

Test(outside, exec_usage_errors) {
    ThRun r = COMPARE("--engines", "scalar,exec:", "--steps", "1");
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "unknown engine 'exec:'"), "%s", r.err);
    th_run_free(&r);
    th_expect_status(COMPARE("--engines", "scalar,exec:/nonexistent/engine", "--steps", "1"), 2,
                  "exited with status 127 (127: the shell did not find the command)", "no such command");
    th_expect_status(COMPARE("--engines", "scalar,cpu", "--exec-timeout", "0"), 2, "--exec-timeout: '0'", "timeout 0");
}

// Sampling goes through both interfaces too: from the same state and random
// stream, the plugin and the numpy process draw the scalar engine's samples
// and leave the stream where it leaves it.
Test(outside, plugin_and_process_engines_sample_as_the_scalar_engine, .timeout = 60) {
    const char *py = python(1);
    if (!py) cr_skip_test("no Python with numpy");
    Settings s;
    settings_defaults(&s);
    s.steps = 3;
    Dataset d;
    char err[512];
    cr_assert_eq(dataset_load(&d, th_names_path(), err, sizeof err), 0, "%s", err);
    PyRandom r;
    pyrandom_seed_text(&r, s.seed);
    dataset_shuffle(&d, &r);
    ModelShape m = model_shape(&s, d.vocab_size);
    ParamLayout L;
    layout_init(&L, &m);
    double *init = malloc(L.n_params * sizeof *init);
    params_init(&L, &r, s.init_std, init);
    EngineConfig cfg = {.s = &s, .L = &L, .precision = PREC_FP64, .fault = FAULT_NONE, .max_batch = 1};
    enum { NE = 4 };
    char names[NE][600];
    snprintf(names[0], sizeof names[0], "scalar");
    snprintf(names[1], sizeof names[1], "%s", plugin("libmicrogpt_example_engine.so"));
    snprintf(names[2], sizeof names[2], "exec:%s examples/numpy_engine.py", py);
    snprintf(names[3], sizeof names[3], "%s", plugin("libmicrogpt_naive_engine.so"));
    Engine *e[NE];
    for (int k = 0; k < NE; k++) {
        e[k] = engine_new(names[k], &cfg, init, err, sizeof err);
        cr_assert(e[k], "%s: %s", names[k], err);
    }
    Batch b = {0};
    for (int step = 0; step < s.steps; step++) {
        batch_make(&b, &d, step, 1, s.block_size);
        for (int k = 0; k < NE; k++) e[k]->ops->step(e[k], &b, step);
    }
    // the ReLU inputs of the last step (what lockstep reads to excuse a gate
    // flip) agree at the real positions, through both interfaces
    const size_t nr = (size_t)L.n_params;   // more than (L,1,T,4C) needs
    double *relu0 = malloc(nr * sizeof(double)), *relu = malloc(nr * sizeof(double));
    e[0]->ops->get_relu_inputs(e[0], relu0);
    for (int k = 1; k < NE; k++) {
        if (!e[k]->ops->get_relu_inputs) continue;
        e[k]->ops->get_relu_inputs(e[k], relu);
        for (int t = 0; t < b.n[0]; t++)
            for (int j = 0; j < 4 * m.n_embd; j++) {
                size_t i = (size_t)t * 4 * m.n_embd + j;
                cr_expect(fabs(relu[i] - relu0[i]) <= 1e-12, "%s: relu input %d,%d is %g, the scalar engine's %g",
                          names[k], t, j, relu[i], relu0[i]);
            }
    }
    cr_expect(e[2]->ops->get_relu_inputs != NULL, "the numpy engine says it reports its ReLU inputs");
    free(relu0);
    free(relu);
    PyRandom rk[NE];
    int tok[NE][64], n[NE];
    for (int i = 0; i < 5; i++) {
        for (int k = 0; k < NE; k++) {
            if (i == 0) rk[k] = r;
            n[k] = e[k]->ops->sample(e[k], &rk[k], s.temperature, tok[k]);
        }
        for (int k = 1; k < NE; k++) {
            cr_expect_eq(n[k], n[0], "%s: sample %d has %d tokens, the scalar engine's %d", names[k], i, n[k], n[0]);
            cr_expect(!memcmp(tok[k], tok[0], (size_t)n[0] * sizeof(int)), "%s: sample %d differs", names[k], i);
            cr_expect(!memcmp(&rk[k], &rk[0], sizeof rk[0]), "%s: the random stream is elsewhere after sample %d",
                      names[k], i);
        }
    }
    for (int k = 0; k < NE; k++) e[k]->ops->destroy(e[k]);
    batch_free(&b);
    free(init);
    layout_free(&L);
    dataset_free(&d);
}

// examples/torch_engine.py where PyTorch 2 is installed (the GPU machine):
// lockstep passes, and the detached RMSNorm fails at step 1 naming wte, wpe.
Test(outside, torch_engine_passes_and_its_broken_rmsnorm_is_named, .timeout = 300) {
    const char *py = th_python("import numpy, torch, torch.nn.functional as F; F.scaled_dot_product_attention");
    if (!py) {
        fprintf(stderr, "SKIP: no Python with numpy and PyTorch >= 2 (/usr/bin/python3, python3 or $MICROGPT_PYTHON); "
                    "on a GPU machine: scripts/outside_gpu_check.sh\n");
        cr_skip_test("no PyTorch >= 2");
    }
    char engines[800];
    snprintf(engines, sizeof engines, "scalar,exec:%s examples/torch_engine.py", py);
    th_expect_status(COMPARE("--engines", engines, "--steps", "10", "--batch", "3", "--n-kv-head", "2", "--quiet"), 0,
                  "PASS: lockstep", "torch fp64");
    th_expect_status(COMPARE("--engines", engines, "--steps", "10", "--precision", "fp32", "--quiet"), 0,
                  "PASS: lockstep", "torch fp32");
    snprintf(engines, sizeof engines, "scalar,exec:%s examples/torch_engine.py --broken-rmsnorm", py);
    ThRun r = COMPARE("--engines", engines, "--steps", "10");
    cr_expect_eq(r.status, 1, "%s%s", r.out, r.err);
    cr_expect(strstr(r.out, "FAIL at step 1"), "%s", r.out);
    cr_expect(strstr(r.out, "not in the reference: wte wpe (2 of 9 tensors"), "%s", r.out);
    th_run_free(&r);
}
