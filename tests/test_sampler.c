// --sampler own: a candidate that samples with its own randomness is judged
// by the distribution of its names (compare/chisq.c, compare/samples_own.c).
// The chi-square helpers against values computed by hand and from closed
// forms; the false-alarm rate of the whole test simulated with a correct
// sampler; then compare end to end: the numpy engine's own sampler passes,
// its planted BOS-first bug fails naming the category, bad values are
// refused, and without the flag the names are compared as before.
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "common/pyrandom.h"
#include "compare/chisq.h"

#define COMPARE(...) th_tool("compare", "--data", th_names_path(), __VA_ARGS__, NULL)

// Reference values of the chi-square survival function from its closed
// forms (Python's math, double precision): even df, exp(-x/2) times the
// partial sum of the Poisson series; odd df, erfc(sqrt(x/2)) plus
// exp(-x/2) sum_{k=1}^{(df-1)/2} (x/2)^(k-1/2) / Gamma(k+1/2).
Test(chisq, survival_function_matches_the_closed_forms) {
    static const struct { double x; int df; double q; } ref[] = {
        {3.841458820694124, 1, 0.050000000000000079},  {0.5, 1, 0.47950012218695348},
        {50, 1, 1.5374597944280351e-12},               {10, 2, 0.006737946999085467},
        {1, 2, 0.60653065971263342},                   {0.5, 3, 0.91889141165467603},
        {11.0705, 5, 0.049999955428043641},            {29.5883, 10, 0.00099999941680894251},
        {10, 20, 0.96817194269379525},                 {40, 20, 0.0049954123083075881},
        {80, 30, 1.9756232434910647e-06},              {20, 26, 0.79155647639487448},
        {65.75, 26, 2.7006114864222634e-05},           {200, 16, 7.9303949095844575e-34},
        {5, 7, 0.65996322969428278},
    };
    for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++) {
        const double q = chisq_sf(ref[i].x, ref[i].df);
        cr_expect(fabs(q - ref[i].q) <= 1e-11 * ref[i].q, "Q(x=%g, df=%d) = %.17g, expected %.17g", ref[i].x,
                  ref[i].df, q, ref[i].q);
    }
    cr_expect_eq(chisq_sf(0, 3), 1.0);
    cr_expect_eq(chisq_sf(-1, 3), 1.0);
    cr_expect_eq(chisq_sf(INFINITY, 3), 0.0);
}

// 100 draws of three categories: E = 25, 25, 50; chi2 = 25/25 + 25/25 + 0 = 2,
// df 2, p = exp(-1).
Test(chisq, goodness_of_fit_by_hand) {
    int g[3];
    ChiResult r = chisq_fit((int[]){30, 20, 50}, (double[]){0.25, 0.25, 0.5}, 3, g);
    cr_expect_float_eq(r.stat, 2.0, 1e-12);
    cr_expect_eq(r.df, 2);
    cr_expect_float_eq(r.p, exp(-1.0), 1e-12);
    cr_expect_eq(r.pooled, 0);
    cr_expect_eq(r.worst, g[0], "the first of the tied largest terms");
    cr_expect_float_eq(r.expected, 25.0, 1e-12);
    cr_expect_float_eq(r.observed, 30.0, 1e-12);
}

// Expected counts 40, 50, 3, 2, 5: the two below 5 are pooled (together 5);
// terms 4/40, 0, 49/5 (category 4, the worst), 25/5 (the pool).
Test(chisq, sparse_categories_are_pooled) {
    int g[5];
    ChiResult r = chisq_fit((int[]){38, 50, 0, 0, 12}, (double[]){0.4, 0.5, 0.03, 0.02, 0.05}, 5, g);
    cr_expect_eq(r.groups, 4);
    cr_expect_eq(r.df, 3);
    cr_expect_eq(r.pooled, 2);
    cr_expect(g[2] == g[3] && g[2] == r.pool_group && g[0] != g[2] && g[4] != g[2], "categories 2 and 3 pooled");
    cr_expect_float_eq(r.stat, 0.1 + 9.8 + 5.0, 1e-12);
    cr_expect_float_eq(r.p, chisq_sf(14.9, 3), 1e-15);
    cr_expect_eq(r.worst, g[4]);
    cr_expect_float_eq(r.expected, 5.0, 1e-12);
    // a pool still below 5 takes the next smallest category: 2 + 2 < 5, so 46 joins
    ChiResult s = chisq_fit((int[]){50, 46, 2, 2}, (double[]){0.5, 0.46, 0.02, 0.02}, 4, g);
    cr_expect_eq(s.groups, 2);
    cr_expect_eq(s.pooled, 3);
    cr_expect(g[1] == g[2] && g[2] == g[3] && g[0] != g[1]);
    cr_expect_eq(s.df, 1);
    cr_expect_float_eq(s.stat, 0.0, 1e-12);
    // everything sparse: one group, nothing to test
    ChiResult t = chisq_fit((int[]){1, 2}, (double[]){0.5, 0.5}, 2, g);
    cr_expect_eq(t.df, 0);
    cr_expect_eq(t.p, 1.0);
}

// A 2 x 2 table: a = (30, 70) of N = 100, b = (150, 250) of M = 400. Column
// totals 180, 320: E_a = 36, 64, E_b = 144, 256; chi2 = 1 + 0.5625 + 0.25 +
// 0.140625 = 1.953125, df 1. The report's expected: N x b's frequency, 37.5.
Test(chisq, two_samples_by_hand) {
    int g[2];
    ChiResult r = chisq_two_sample((int[]){30, 70}, (int[]){150, 250}, 2, g);
    cr_expect_float_eq(r.stat, 1.953125, 1e-12);
    cr_expect_eq(r.df, 1);
    cr_expect_float_eq(r.p, erfc(sqrt(1.953125 / 2)), 1e-14);
    cr_expect_eq(r.worst, g[0]);
    cr_expect_float_eq(r.expected, 37.5, 1e-12);
    cr_expect_float_eq(r.observed, 30.0, 1e-12);
    // categories neither sample has are pooled away and add nothing
    int h[4];
    ChiResult z = chisq_two_sample((int[]){30, 0, 70, 0}, (int[]){150, 0, 250, 0}, 4, h);
    cr_expect_float_eq(z.stat, 1.953125, 1e-12);
    cr_expect_eq(z.df, 1);
}

// ---- the false-alarm rate, simulated with a correct sampler ----

#define SIM_V 27   // 26 characters and BOS, as names.txt
#define SIM_T 16

// A toy model of names with what makes the real test hard: a skewed first
// character with rare ones (pooled), BOS among them (the empty name), and a
// length that depends on the first character. One name: its first token and
// its length.
typedef struct {
    double cum[SIM_V];   // the first token's cumulative probabilities
    double stop[SIM_V];  // per first character, the chance to stop at each later position
} Toy;

static Toy toy_model(double *p0) {
    Toy m;
    double total = 0;
    for (int i = 0; i < SIM_V - 1; i++) total += p0[i] = exp(-0.2 * i);
    for (int i = 0; i < SIM_V - 1; i++) p0[i] = 0.97 * p0[i] / total;
    p0[SIM_V - 1] = 0.03;   // BOS: 30 empty names expected in 1000
    double c = 0;
    for (int i = 0; i < SIM_V; i++) m.cum[i] = c += p0[i], m.stop[i] = 0.1 + 0.05 * (i % 5);
    m.cum[SIM_V - 1] = 1;
    return m;
}

static void toy_name(const Toy *m, PyRandom *r, int *first, int *len) {
    const double u = pyrandom_random(r);
    int lo = 0, hi = SIM_V - 1;
    while (lo < hi) {   // the first c with u < cum[c]
        int mid = (lo + hi) / 2;
        if (u < m->cum[mid]) hi = mid;
        else lo = mid + 1;
    }
    *first = lo;
    if (lo == SIM_V - 1) {
        *len = 0;
        return;
    }
    const int extra = (int)floor(log(1 - pyrandom_random(r)) / log(1 - m->stop[lo]));
    *len = 1 + (extra < SIM_T - 1 ? extra : SIM_T - 1);
}

// R runs of the sampler test (N candidate names against the toy's exact p0,
// 4N reference names) with the candidate drawn from the same model: how
// many fail, and how many have each p-value below 0.01.
typedef struct {
    int failed, first_below, length_below;
} SimCount;

static SimCount simulate(int R, int N, uint64_t seed) {
    double p0[SIM_V];
    const Toy m = toy_model(p0);
    PyRandom r;
    pyrandom_seed(&r, seed);
    SimCount c = {0};
    for (int k = 0; k < R; k++) {
        int first[SIM_V] = {0}, lc[SIM_T + 1] = {0}, lr[SIM_T + 1] = {0}, gf[SIM_V], gl[SIM_T + 1], f, l;
        for (int i = 0; i < SAMPLER_REF_FACTOR * N; i++) toy_name(&m, &r, &f, &l), lr[l]++;
        for (int i = 0; i < N; i++) toy_name(&m, &r, &f, &l), lc[l]++, first[f]++;
        SamplerTest t = sampler_test(first, p0, SIM_V, lc, lr, SIM_T, gf, gl);
        c.failed += t.failed;
        c.first_below += t.first.p < 0.01;
        c.length_below += t.length.p < 0.01;
    }
    return c;
}

// The stated false-alarm rate, 1e-3 per run, measured: 20000 runs at the
// default N = 1000 give about 20 false alarms; more than 35 (or fewer than
// 7) would happen by chance with probability < 1e-3 if the rate were 1e-3.
// The p-values are uniform too: each test is below 0.01 in about 1% of runs.
Test(chisq, a_correct_sampler_fails_at_the_stated_rate, .timeout = 300) {
    const int R = 20000;
    SimCount c = simulate(R, SAMPLER_OWN_NAMES, 12345);
    cr_log_info("false alarms: %d of %d runs (rate %.2e; stated %g); p < 0.01: first character %d, length %d",
                c.failed, R, (double)c.failed / R, SAMPLER_ALPHA, c.first_below, c.length_below);
    fprintf(stderr, "sampler test, simulated: %d false alarms in %d runs (%.2e, stated %g); p < 0.01 in %d "
            "(first character) and %d (length) runs, expected about %d\n", c.failed, R, (double)c.failed / R,
            SAMPLER_ALPHA, c.first_below, c.length_below, R / 100);
    cr_expect(c.failed >= 7 && c.failed <= 35, "%d false alarms in %d runs: not a rate of %g", c.failed, R,
              SAMPLER_ALPHA);
    // 200 expected, standard deviation 14: 4 of them either way
    cr_expect(c.first_below >= 144 && c.first_below <= 256, "first character: p < 0.01 in %d of %d", c.first_below,
              R);
    cr_expect(c.length_below >= 144 && c.length_below <= 256, "length: p < 0.01 in %d of %d", c.length_below, R);
}

// ---- compare end to end ----

static const char *numpy_engine(const char *flags) {
    static char buf[4][700];
    static int k;
    const char *py = th_python("import numpy");
    if (!py) cr_skip_test("no Python with numpy (make deps)");
    char *e = buf[k++ % 4];
    snprintf(e, 700, "scalar,exec:%s examples/numpy_engine.py%s%s", py, flags[0] ? " " : "", flags);
    return e;
}

static cJSON *sample_check(const char *trace) {
    cJSON *root = th_load_json(trace);
    cJSON *s = cJSON_DetachItemFromObject(root, "sample_check");
    cJSON_Delete(root);
    cr_assert(s, "the trace has no sample_check");
    return s;
}

static double test_p(cJSON *s, const char *test) {
    cJSON *t = cJSON_GetObjectItem(s, test);
    cr_assert(t, "sample_check has no %s", test);
    return cJSON_GetObjectItem(t, "p")->valuedouble;
}

Test(sampler, the_numpy_engine_own_sampler_passes, .timeout = 180) {
    const char *tr = th_temp_path("own.json");
    char plog[4200], f[4300];
    snprintf(plog, sizeof plog, "%s/own_protocol", th_temp_dir());
    setenv("MG_PROTOCOL_LOG", plog, 1);   // the "own" requests are in docs/schemas/exec_request.schema.json
    ThRun r = COMPARE("--engines", numpy_engine(""), "--steps", "5", "--sampler", "own", "--quiet", "--trace", tr);
    unsetenv("MG_PROTOCOL_LOG");
    cr_expect_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "PASS: lockstep") && strstr(r.out, "; samples: own sampler, distribution test p "),
              "the verdict line says which check ran:\n%s", r.out);
    cr_expect(strstr(r.out, "sampled 1000 names with its own randomness, scalar 4000 with the harness's stream"),
              "%s", r.out);
    cr_expect(strstr(r.out, "first character (BOS: the empty name) vs scalar's exact probabilities: chi2 "), "%s",
              r.out);
    cr_expect(strstr(r.out, "name length vs scalar's 4000 names: chi2 "), "%s", r.out);
    cr_expect(!strstr(r.out, "FAIL"), "%s", r.out);
    th_run_free(&r);
    cJSON *s = sample_check(tr);
    cr_expect_str_eq(cJSON_GetObjectItem(s, "sampler")->valuestring, "own");
    cr_expect_str_eq(cJSON_GetObjectItem(s, "candidate_rng")->valuestring, "own");
    cr_expect_eq(cJSON_GetObjectItem(s, "n")->valueint, 1000);
    cr_expect_eq(cJSON_GetObjectItem(s, "reference_n")->valueint, 4000);
    cr_expect_float_eq(cJSON_GetObjectItem(s, "alpha")->valuedouble, 1e-3, 1e-15);
    cr_expect(test_p(s, "first_character") >= 5e-4 && test_p(s, "length") >= 5e-4);
    cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(s, "ok")));
    cJSON_Delete(s);
    snprintf(f, sizeof f, "%s.requests", plog);
    char *req = th_read_file(f, NULL);
    cr_expect(strstr(req, "{\"temperature\":0.5,\"own\":true,\"op\":\"sample\"}\n"), "no own sample request");
    free(req);
    th_check_schema("exec_request.schema.json", f, 1);
    snprintf(f, sizeof f, "%s.replies", plog);
    th_check_schema("exec_reply.schema.json", f, 1);
}

// A bug in a sampler that only ever draws with its own randomness: BOS's
// probability zeroed at the first position, so no name is empty. (Given the
// harness's draws, its names would differ; a port that never takes them was
// not checked at all before --sampler own.)
Test(sampler, a_sampler_that_never_ends_at_once_fails_naming_the_category, .timeout = 180) {
    const char *tr = th_temp_path("bos.json");
    ThRun r = COMPARE("--engines", numpy_engine("--sampler-no-bos-first"), "--steps", "5", "--sampler", "own",
                      "--quiet", "--trace", tr);
    cr_expect_eq(r.status, 1, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "FAIL: lockstep") && strstr(r.out, "; samples: own sampler, distribution test p "),
              "%s", r.out);
    cr_expect(strstr(r.out, "most deviant: length 0: expected ") && strstr(r.out, ", got 0\n"),
              "the length test names the empty name:\n%s", r.out);
    cr_expect(strstr(r.out, "most deviant: first character BOS (the empty name): expected "),
              "the first-character test names BOS:\n%s", r.out);
    th_run_free(&r);
    cJSON *s = sample_check(tr);
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItem(s, "ok")));
    cr_expect(test_p(s, "length") < 5e-4, "length p %g", test_p(s, "length"));
    cJSON *len = cJSON_GetObjectItem(s, "length");
    cr_expect(strstr(cJSON_GetObjectItem(len, "most_deviant")->valuestring, "length 0: expected "));
    cr_expect_eq(cJSON_GetObjectItem(len, "observed")->valuedouble, 0.0);
    cJSON_Delete(s);
}

// Engines without a generator of their own (in-process, plugins) sample
// from a stream independent of the reference's, and pass.
Test(sampler, engines_without_a_generator_get_an_independent_stream, .timeout = 120) {
    ThRun r = COMPARE("--engines", "scalar,cpu", "--steps", "5", "--sampler", "own", "--quiet");
    cr_expect_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "cpu sampled 1000 names with a stream independent of the reference's"), "%s", r.out);
    th_run_free(&r);
    char engines[600];
    snprintf(engines, sizeof engines, "scalar,plugin:%s/libmicrogpt_naive_engine.so", th_build_dir());
    r = COMPARE("--engines", engines, "--steps", "3", "--sampler", "own", "--samples", "300", "--quiet");
    cr_expect_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "sampled 300 names with a stream independent"), "%s", r.out);
    th_run_free(&r);
}

Test(sampler, bad_values_are_refused) {
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--sampler", "mine"), "--sampler: 'mine' is not harness or own",
                    "an unknown sampler");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--sampler"), "--sampler", "no value");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--sampler", "own", "--samples", "20"),
                    "--sampler own: --samples 20 leaves too few names", "too few names");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--sampler", "own", "--mode", "free"),
                    "--sampler only applies to --mode lockstep", "free mode");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--sampler", "own", "--bench"),
                    "--sampler does not apply to --bench", "bench");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--sampler", "own", "--sampler", "harness"),
                    "--sampler is given twice", "given twice");
    th_expect_usage(COMPARE("--engines", "scalar,cpu", "--sampler", "own", "--plant", "probs@1=0.1"),
                    "--sampler own compares no probabilities", "a probability plant");
}

// An exec engine written before "own" still works with the default, and
// under --sampler own the failure says what the request asked.
Test(sampler, an_engine_without_own_works_by_default_and_is_told_why_not, .timeout = 120) {
    const char *py = th_python("import numpy");
    if (!py) cr_skip_test("no Python with numpy (make deps)");
    static const char old[] =
        "import os, sys\n"
        "sys.path.insert(0, os.path.join(os.getcwd(), 'examples'))\n"
        "import mg_protocol, numpy_engine\n"
        "class Old(numpy_engine.NumpyEngine):\n"
        "    def sample(self, data, temperature):   # written before --sampler own\n"
        "        return numpy_engine.NumpyEngine.sample(self, data, temperature)\n"
        "mg_protocol.serve(Old)\n";
    const char *path = th_write_temp("old_engine.py", old, sizeof old - 1);
    char engines[1200];
    snprintf(engines, sizeof engines, "scalar,exec:%s %s", py, path);
    ThRun r = COMPARE("--engines", engines, "--steps", "3", "--samples", "5", "--quiet");
    cr_expect_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "samples: 5 names, identical"), "%s", r.out);
    th_run_free(&r);
    r = COMPARE("--engines", engines, "--steps", "3", "--sampler", "own", "--quiet");
    cr_expect_eq(r.status, 1, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.err, "'sample own' failed: TypeError") &&
              strstr(r.err, "(--sampler own: the request {\"op\":\"sample\",\"own\":true} carries no uniforms"),
              "%s", r.err);
    th_run_free(&r);
}

// Without --sampler (or with harness) the names are compared as before, and
// the verdict line and the trace say so.
Test(sampler, the_default_compares_the_names_as_before, .timeout = 120) {
    const char *tr = th_temp_path("harness.json");
    ThRun r = COMPARE("--engines", "scalar,cpu", "--steps", "5", "--samples", "8", "--quiet", "--trace", tr);
    cr_expect_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "fixed rule; samples: 8 names identical\n"), "%s", r.out);
    cr_expect(strstr(r.out, "samples: 8 names, identical in scalar and cpu"), "%s", r.out);
    th_run_free(&r);
    cJSON *s = sample_check(tr);
    cr_expect_str_eq(cJSON_GetObjectItem(s, "sampler")->valuestring, "harness");
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(s, "names")), 8);
    cr_expect(!cJSON_GetObjectItem(s, "first_character"));
    cJSON_Delete(s);
    r = COMPARE("--engines", "scalar,cpu", "--steps", "5", "--samples", "8", "--sampler", "harness", "--quiet");
    cr_expect_eq(r.status, 0, "exit %d\n%s%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "; samples: 8 names identical\n"), "%s", r.out);
    th_run_free(&r);
}
