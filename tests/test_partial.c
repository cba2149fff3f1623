// Partial engines (docs/outside_engines.md, "Partial engines"): an engine
// that offers no logits, or cannot report or take Adam's moments, is never
// asked for them; lockstep checks the rest, says per quantity what it checked
// and what was not offered, and, without moments, follows the candidate's own
// trajectory. Planted bugs are still caught: a wrong gradient, a wrong Adam
// step, and a moment stored wrong (through the parameters, a step later).
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define COMPARE(...) th_tool("compare", "--data", th_names_path(), __VA_ARGS__, NULL)

static const char *numpy_python(void) {
    const char *py = th_python("import numpy");
    if (!py) {
        fprintf(stderr, "SKIP: no Python with numpy (/usr/bin/python3 or $MICROGPT_PYTHON): apt-get install "
                        "python3-numpy\n");
        cr_skip_test("no Python with numpy");
    }
    return py;
}

// "scalar,exec:PY examples/numpy_engine.py FLAGS" (one of 8 rotating buffers)
static const char *numpy_engines(const char *flags) {
    static char buf[8][700];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "scalar,exec:%s examples/numpy_engine.py %s", numpy_python(), flags);
    return p;
}

// "REF,plugin:BUILD/tests/libpartial_pluginN.so" (tests/partial_plugin.c)
static const char *partial_engines(const char *ref, int n) {
    static char buf[8][700];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s,plugin:%s/tests/libpartial_plugin%d.so", ref, th_build_dir(), n);
    return p;
}

// A run's output must hold needle.
static void expect_out(const ThRun *r, const char *needle, const char *what) {
    cr_expect(strstr(r->out, needle) != NULL, "%s: the output lacks '%s':\n%s%s", what, needle, r->out, r->err);
}

// No line of the protocol log (MG_PROTOCOL_LOG=log: log.requests) holds needle.
static void expect_never_sent(const char *log, const char *needle, const char *what) {
    char f[600];
    snprintf(f, sizeof f, "%s.requests", log);
    char *s = th_read_file(f, NULL);
    cr_expect(strstr(s, "\"op\":\"step\"") || strstr(s, "\"op\": \"step\""), "%s: the log %s has no step", what, f);
    cr_expect(strstr(s, needle) == NULL, "%s: compare sent %s, which the engine does not offer:\n%s", what, needle, s);
    free(s);
}

static const char *protocol_log(const char *name) {
    const char *p = th_temp_path(name);
    char f[600];
    snprintf(f, sizeof f, "%s.requests", p);
    remove(f);
    snprintf(f, sizeof f, "%s.replies", p);
    remove(f);
    setenv("MG_PROTOCOL_LOG", p, 1);
    return p;
}

// The quantities entry q of a compare trace: checked, or not and why.
static void expect_quantity(cJSON *root, const char *q, int checked, const char *reason) {
    cJSON *x = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "quantities"), q);
    cr_assert(cJSON_IsObject(x), "the trace's quantities has no '%s'", q);
    cr_expect_eq(cJSON_IsTrue(cJSON_GetObjectItem(x, "checked")), checked, "quantities.%s.checked", q);
    if (reason) {
        cJSON *rs = cJSON_GetObjectItem(x, "reason");
        cr_expect(cJSON_IsString(rs) && !strcmp(rs->valuestring, reason), "quantities.%s.reason should be '%s'", q,
                  reason);
        cr_expect(cJSON_IsString(cJSON_GetObjectItem(x, "engine")), "quantities.%s names the engine", q);
    }
}

Test(partial, numpy_without_logits_passes_and_says_logits_not_offered, .timeout = 120) {
    const char *log = protocol_log("no-logits");
    const char *trace = th_temp_path("no-logits.json");
    ThRun r = COMPARE("--engines", numpy_engines("--no-logits"), "--steps", "5", "--batch", "2", "--samples", "3",
                      "--trace", trace);
    unsetenv("MG_PROTOCOL_LOG");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    expect_out(&r, "PASS: lockstep, scalar", "no logits");
    expect_out(&r, "quantities: loss checked, logits not offered (exec:", "no logits");
    expect_out(&r, "grads checked, params checked, m checked, v checked, probs not offered (exec:", "no logits");
    expect_out(&r, "| logits - |", "the step line");
    expect_out(&r, "samples: 3 names, identical in scalar and exec:", "the names are still compared");
    cr_expect(strstr(r.out, "trajectory:") == NULL, "with moments it is ordinary lockstep:\n%s", r.out);
    th_run_free(&r);
    // the protocol: never a request for logits; every line of the schemas
    expect_never_sent(log, "\"what\": \"logits\"", "no logits");
    expect_never_sent(log, "\"what\":\"logits\"", "no logits");
    char f[600];
    snprintf(f, sizeof f, "%s.replies", log);
    th_check_schema("exec_reply.schema.json", f, 1);
    char *rep = th_read_file(f, NULL);
    cr_expect(strstr(rep, "\"offers\": {\"logits\": false, \"moments\": true, \"set_moments\": true}"),
              "the create reply declares it: %s", rep);
    free(rep);
    snprintf(f, sizeof f, "%s.requests", log);
    th_check_schema("exec_request.schema.json", f, 1);
    // the trace: per quantity, and what each engine offers
    th_check_schema("../trace.schema.json", trace, 0);
    cJSON *root = th_load_json(trace);
    expect_quantity(root, "logits", 0, "not offered");
    expect_quantity(root, "probs", 0, "not offered");
    expect_quantity(root, "loss", 1, NULL);
    expect_quantity(root, "m", 1, NULL);
    cJSON *of = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(root, "engines"), 1), "offers");
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItem(of, "logits")) && cJSON_IsTrue(cJSON_GetObjectItem(of, "moments")) &&
                  cJSON_IsTrue(cJSON_GetObjectItem(of, "set_moments")),
              "engines[1].offers");
    cJSON *tj = cJSON_GetObjectItem(root, "trajectory");
    cr_expect_str_eq(cJSON_GetObjectItem(tj, "follows")->valuestring, "reference");
    cJSON_Delete(root);
}

Test(partial, numpy_without_moments_passes_on_its_own_trajectory, .timeout = 180) {
    const char *log = protocol_log("no-moments");
    const char *trace = th_temp_path("no-moments.json");
    ThRun r = COMPARE("--engines", numpy_engines("--no-moments"), "--steps", "4", "--batch", "2", "--trace", trace);
    unsetenv("MG_PROTOCOL_LOG");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    expect_out(&r, "PASS: lockstep on the candidate's own trajectory, scalar (fp64)", "no moments");
    expect_out(&r, "4 of 4 steps run, batch 2, fixed rule", "no moments");
    expect_out(&r, "m not offered (exec:", "no moments");
    expect_out(&r, "v not offered (exec:", "no moments");
    expect_out(&r, "logits checked, grads checked, params checked", "no moments");
    // what the run can and cannot show then
    expect_out(&r, "trajectory: the candidate's own (exec:", "no moments");
    expect_out(&r, "offers no Adam moments): it trains from the same start on the same batches and learning rates, "
                   "and every step the reference starts from its parameters", "no moments");
    expect_out(&r, "its moments are not seen, so a moment bug shows only through the parameters, from the step after "
                   "it", "no moments");
    expect_out(&r, "| m - | v - |", "the step line");
    th_run_free(&r);
    expect_never_sent(log, "\"what\": \"moments\"", "no moments");
    expect_never_sent(log, "\"what\":\"moments\"", "no moments");
    th_check_schema("../trace.schema.json", trace, 0);
    cJSON *root = th_load_json(trace);
    expect_quantity(root, "m", 0, "not offered");
    expect_quantity(root, "v", 0, "not offered");
    expect_quantity(root, "params", 1, NULL);
    cJSON *tj = cJSON_GetObjectItem(root, "trajectory");
    cr_expect_str_eq(cJSON_GetObjectItem(tj, "follows")->valuestring, "candidate");
    cr_expect(strstr(cJSON_GetObjectItem(tj, "text")->valuestring, "a moment bug shows only through the parameters"));
    cJSON_Delete(root);
    // fp32 under the ratio rule, whose noise reference keeps its own moments the same way
    th_expect_status(COMPARE("--engines", numpy_engines("--no-moments --no-logits"), "--steps", "20", "--batch", "2",
                             "--precision", "fp32", "--quiet"),
                     0, "PASS: lockstep on the candidate's own trajectory", "fp32, no moments, no logits");
    // moments reported but not taken: its own trajectory, m and v checked from the ones it reports
    r = COMPARE("--engines", numpy_engines("--no-set-moments"), "--steps", "4", "--batch", "2", "--quiet");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    expect_out(&r, "PASS: lockstep on the candidate's own trajectory", "no set_moments");
    expect_out(&r, "cannot take Adam moments)", "no set_moments");
    expect_out(&r, "m checked, v checked", "no set_moments");
    expect_out(&r, "from the moments it reports", "no set_moments");
    th_run_free(&r);
}

Test(partial, planted_bugs_in_partial_engines_are_caught, .timeout = 180) {
    // a wrong gradient: caught at step 1 as ever, with or without logits and moments
    ThRun r = COMPARE("--engines", numpy_engines("--no-logits --no-moments --broken-rmsnorm"), "--steps", "3",
                      "--batch", "2");
    cr_expect_eq(r.status, 1, "%s%s", r.out, r.err);
    expect_out(&r, "FAIL at step 1: the gradient of", "broken rmsnorm");
    expect_out(&r, "not in the reference: wte wpe", "broken rmsnorm");
    th_run_free(&r);
    // a moment stored wrong (beta2 0.999): the first update is right (the
    // bias correction cancels beta2), the second is not, and without moments
    // it shows only there, through the parameters
    r = COMPARE("--engines", numpy_engines("--no-moments --wrong-beta2"), "--steps", "4", "--batch", "2");
    cr_expect_eq(r.status, 1, "%s%s", r.out, r.err);
    const char *s1 = strstr(r.out, "step    1 |"), *nl = s1 ? strchr(s1, '\n') : NULL;
    cr_expect(nl && nl - s1 > 4 && !strncmp(nl - 4, "| ok", 4), "step 1 passes:\n%s", r.out);
    expect_out(&r, "FAIL at step 2: the updated parameter", "wrong beta2, no moments");
    expect_out(&r, "the update is off while the gradients agree", "wrong beta2, no moments");
    th_run_free(&r);
    // with its moments reported (not taken) the same bug is seen in v at step 1
    th_expect_status(COMPARE("--engines", numpy_engines("--no-set-moments --wrong-beta2"), "--steps", "3", "--batch",
                             "2"),
                     1, "FAIL at step 1: Adam's second moment v of", "wrong beta2, moments reported");
    // the plugins: the CPU engine's faults, with no moments (2) and no logits (1)
    th_expect_status(COMPARE("--engines", partial_engines("scalar", 2), "--steps", "2", "--batch", "2",
                             "--inject-fault", "grad-sign"),
                     1, "FAIL at step 1: the gradient of lm_head[1,2]", "plugin 2, grad-sign");
    th_expect_status(COMPARE("--engines", partial_engines("scalar", 2), "--steps", "2", "--batch", "2",
                             "--inject-fault", "adam-bias"),
                     1, "FAIL at step 1: the updated parameter", "plugin 2, adam-bias");
    th_expect_status(COMPARE("--engines", partial_engines("scalar", 1), "--steps", "2", "--batch", "2",
                             "--inject-fault", "grad-sign"),
                     1, "FAIL at step 1: the gradient of lm_head[1,2]", "plugin 1, grad-sign");
    // a forward bug without logits: caught in the loss (and the ops it reports)
    th_expect_status(COMPARE("--engines", partial_engines("scalar", 1), "--steps", "2", "--batch", "2",
                             "--inject-fault", "attn-scale"),
                     1, "FAIL at step 1", "plugin 1, attn-scale");
}

// The plugins stay in the table what they do not offer and report any call
// to it through error() (exit 1): a passing run is one that never called it,
// samples included (scoring reads logits and puts the state back).
Test(partial, plugins_are_never_asked_for_what_they_do_not_offer, .timeout = 180) {
    const struct {
        int n;
        const char *says;
    } v[] = {
        {1, "logits not offered (plugin:"},
        {2, "m not offered (plugin:"},
        {3, "logits not offered (plugin:"},   // a table from before offers(): NULL entries
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        ThRun r = COMPARE("--engines", partial_engines("scalar", v[i].n), "--steps", "3", "--batch", "2", "--samples",
                          "3");
        cr_expect_eq(r.status, 0, "plugin %d: %s%s", v[i].n, r.out, r.err);
        expect_out(&r, v[i].says, "plugin");
        expect_out(&r, "samples: 3 names, identical", "plugin");
        th_run_free(&r);
        r = COMPARE("--engines", partial_engines("scalar", v[i].n), "--steps", "10", "--batch", "2", "--precision",
                    "fp32", "--quiet");
        cr_expect_eq(r.status, 0, "plugin %d, fp32: %s%s", v[i].n, r.out, r.err);
        th_run_free(&r);
    }
    // its own sampler: only the reference's logits are read
    th_expect_status(COMPARE("--engines", partial_engines("scalar", 1), "--steps", "2", "--sampler", "own",
                             "--samples", "100", "--quiet"),
                     0, "samples: own sampler", "plugin 1, --sampler own");
    // a partial reference: without its moments the run follows the candidate
    // (which reports and takes them: m and v are checked); without its
    // logits none are compared, and a failing loss is not traced to its
    // definition
    char engines[700];
    snprintf(engines, sizeof engines, "plugin:%s/tests/libpartial_plugin2.so,scalar", th_build_dir());
    ThRun r = COMPARE("--engines", engines, "--steps", "3", "--batch", "2");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    expect_out(&r, "PASS: lockstep on the candidate's own trajectory", "reference 2");
    expect_out(&r, "(the reference plugin:", "reference 2");
    expect_out(&r, "m checked, v checked", "reference 2");
    th_run_free(&r);
    snprintf(engines, sizeof engines, "plugin:%s/tests/libpartial_plugin1.so,scalar", th_build_dir());
    r = COMPARE("--engines", engines, "--steps", "3", "--batch", "2", "--samples", "2");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    expect_out(&r, "PASS: lockstep, plugin:", "reference 1");
    expect_out(&r, "logits not offered (plugin:", "reference 1");
    expect_out(&r, "probabilities not compared: plugin:", "reference 1");
    th_run_free(&r);
    th_expect_status(COMPARE("--engines", engines, "--steps", "2", "--sampler", "own"), 2,
                     "--sampler own needs the reference's logits", "reference 1, --sampler own");
}

// The create reply's "offers" is checked: an unknown key or a value that is
// not a boolean is refused at create (exit 2), naming it.
Test(partial, a_malformed_offers_reply_is_refused, .timeout = 60) {
    const char *py = th_python("import sys");
    if (!py) cr_skip_test("no python3");
    static const char script[] =
        "import json, sys\n"
        "line = sys.stdin.buffer.readline()\n"
        "req = json.loads(line)\n"
        "sys.stdin.buffer.read(req['bytes'])\n"
        "offers = json.loads(sys.argv[1])\n"
        "sys.stdout.write(json.dumps({'ok': True, 'protocol': 1, 'name': 'x', 'offers': offers}) + '\\n')\n"
        "sys.stdout.flush()\n"
        "sys.stdin.buffer.readline()\n";
    const char *path = th_write_temp("offers_engine.py", script, sizeof script - 1);
    const struct {
        const char *offers, *needle;
    } bad[] = {
        {"{\\\"logit\\\": false}", "\"offers\" has 'logit'; its keys are logits, moments and set_moments"},
        {"{\\\"moments\\\": 0}", "\"offers\": \"moments\" must be true or false"},
        {"[false]", "\"offers\" must be an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char engines[1200];
        snprintf(engines, sizeof engines, "scalar,exec:%s %s \"%s\"", py, path, bad[i].offers);
        th_expect_status(COMPARE("--engines", engines, "--steps", "1"), 2, bad[i].needle, bad[i].offers);
    }
}

// mg_protocol.serve refuses a request for what the engine did not offer (the
// protocol's own assertion, whatever the engine does), naming it.
Test(partial, mg_protocol_refuses_what_was_not_offered, .timeout = 60) {
    const char *py = th_python("import sys");
    if (!py) cr_skip_test("no python3");
    static const char script[] =
        "import io, json, sys\n"
        "sys.path.insert(0, 'examples')\n"
        "import mg_protocol\n"
        "class E:\n"
        "    name, device = 'e', 'cpu'\n"
        "    offers = {'logits': False, 'moments': False, 'set_moments': False}\n"
        "    def __init__(self, cfg, data): pass\n"
        "    def get(self, what): return {}\n"
        "    def set_state(self, data): pass\n"
        "params = mg_protocol.st_encode({'params/w': ('F64', [1, 1], bytes(8))})\n"
        "moments = mg_protocol.st_encode({'params/w': ('F64', [1, 1], bytes(8)), 'adam_m/w': ('F64', [1, 1], "
        "bytes(8)), 'adam_v/w': ('F64', [1, 1], bytes(8))})\n"
        "msgs = [({'op': 'create', 'protocol': 1, 'config': {}}, params), ({'op': 'get', 'what': 'logits'}, None),\n"
        "        ({'op': 'get', 'what': 'moments'}, None), ({'op': 'set_state'}, moments), ({'op': 'set_state'}, "
        "params), ({'op': 'quit'}, None)]\n"
        "buf = b''\n"
        "for m, data in msgs:\n"
        "    if data is not None: m['bytes'] = len(data)\n"
        "    buf += json.dumps(m).encode() + b'\\n' + (data or b'')\n"
        "out = io.BytesIO()\n"
        "mg_protocol.serve(E, io.BytesIO(buf), out)\n"
        "sys.stdout.write(out.getvalue().decode())\n";
    const char *path = th_write_temp("refuse_check.py", script, sizeof script - 1);
    char *const argv[] = {(char *)py, (char *)path, NULL};
    ThRun r = th_run(argv);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    // create: offers all false; then three refusals; then set_state without moments and quit succeed
    cr_expect(strstr(r.out, "\"offers\": {\"logits\": false, \"moments\": false, \"set_moments\": false}"), "%s",
              r.out);
    cr_expect(strstr(r.out, "protocol violation: compare asked for 'get logits', which this engine's create reply did "
                            "not offer"), "%s", r.out);
    cr_expect(strstr(r.out, "compare asked for 'get moments'"), "%s", r.out);
    cr_expect(strstr(r.out, "compare asked for 'set_state' with Adam moments"), "%s", r.out);
    int oks = 0;
    for (const char *p = r.out; (p = strstr(p, "{\"ok\": true")); p++) oks++;
    cr_expect_eq(oks, 3, "create, set_state with the parameters only, quit: %s", r.out);
    th_run_free(&r);
}

// Free mode reads only the losses and the final parameters: a partial engine runs as any.
Test(partial, free_mode_runs_a_partial_engine, .timeout = 120) {
    th_expect_status(COMPARE("--engines", numpy_engines("--no-logits --no-moments"), "--steps", "5", "--batch", "2",
                             "--mode", "free"),
                     0, "PASS: free-running", "free mode");
}
