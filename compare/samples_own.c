// --sampler own (samples.h): the candidate samples with its own randomness,
// so its names cannot be the reference's; what it drew is tested against the
// reference's distribution instead. From the same final state the reference
// gives its exact probabilities of the first token (position 0) and samples
// SAMPLER_REF_FACTOR x N names with the harness's stream; the candidate
// samples N names with its own generator (an exec engine) or, for an engine
// that has none (in-process, plugin), with the harness's stream past the
// reference's draws: the same generator, none of the same draws. Two
// chi-square tests (chisq.h) then judge the first character (BOS at
// position 0: the empty name) and the name length, at a false-alarm rate of
// SAMPLER_ALPHA per run.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "samples.h"
#include "common/util.h"

#define EXAMPLES 20   // names of each engine written to the trace

// Category c of a test as text: a first character (BOS is the empty name)
// or a length.
static void category_text(const Dataset *d, int length_test, int c, int bos, char *out, size_t n) {
    if (length_test) snprintf(out, n, "%d", c);
    else if (c == bos) snprintf(out, n, "BOS (the empty name)");
    else samples_token_text(d, c, out, n);
}

// The worst group of one test: "length 0: expected 41.3, got 0", or with
// the pooled categories listed.
static void worst_text(const Dataset *d, int length_test, const ChiResult *t, const int *group, int k, int bos,
                       char *out, size_t n) {
    const char *what = length_test ? "length" : "first character";
    if (t->worst < 0) {
        snprintf(out, n, "no %s to test", what);
        return;
    }
    size_t at = 0;
    if (t->worst == t->pool_group && t->pooled > 1)
        at = (size_t)snprintf(out, n, "the pooled rare %s (", length_test ? "lengths" : "first characters");
    else at = (size_t)snprintf(out, n, "%s ", what);
    int listed = 0;
    for (int c = 0; c < k && at < n; c++) {
        if (group[c] != t->worst) continue;
        char s[32];
        category_text(d, length_test, c, bos, s, sizeof s);
        at += (size_t)snprintf(out + at, n - at, "%s%s", listed++ ? ", " : "", s);
    }
    if (at < n && t->worst == t->pool_group && t->pooled > 1) at += (size_t)snprintf(out + at, n - at, ")");
    if (at < n) snprintf(out + at, n - at, ": expected %.1f, got %.0f", t->expected, t->observed);
}

static void add_ints(cJSON *o, const char *key, const int *x, int n) {
    cJSON_AddItemToObject(o, key, cJSON_CreateIntArray(x, n));
}

static void test_to_json(cJSON *o, const ChiResult *t, const char *worst) {
    cJSON_AddNumberToObject(o, "chi2", t->stat);
    cJSON_AddNumberToObject(o, "df", t->df);
    cJSON_AddNumberToObject(o, "p", t->p);
    cJSON_AddNumberToObject(o, "groups", t->groups);
    cJSON_AddNumberToObject(o, "pooled", t->pooled);
    cJSON_AddStringToObject(o, "most_deviant", worst);
    cJSON_AddNumberToObject(o, "expected", t->expected);
    cJSON_AddNumberToObject(o, "observed", t->observed);
}

// Sample n names with engine e (its own generator where it has one, else
// rng), counting their lengths (and first tokens, where first is not NULL);
// the first EXAMPLES go to the JSON array ex (NULL: none).
static void sample_names(Engine *e, int own, PyRandom *rng, const Options *o, const Dataset *d, int n, int T,
                         int bos, int *len, int *first, cJSON *ex) {
    int *buf = xmalloc((size_t)T * sizeof *buf);
    for (int i = 0; i < n; i++) {
        const int k = own ? e->ops->sample_own(e, o->s.temperature, buf)
                          : e->ops->sample(e, rng, o->s.temperature, buf);
        len[k]++;
        if (first) first[k ? buf[0] : bos]++;
        if (ex && i < EXAMPLES) {
            char s[4 * 64 + 8];
            samples_name_text(d, buf, k, s, sizeof s);
            cJSON_AddItemToArray(ex, cJSON_CreateString(s));
        }
    }
    free(buf);
}

SampleResult samples_own_check(Run *r, Engine **eng, const double *p, const double *m, const double *v,
                               cJSON *root) {
    const Options *o = r->o;
    const int N = o->s.samples, M = SAMPLER_REF_FACTOR * N, T = o->s.block_size, V = r->L.shape.vocab_size;
    const int bos = V - 1, own = eng[1]->ops->sample_own != NULL;
    SampleResult res = {.own = 1, .own_rng = own, .n = N, .m = M, .diff_sample = -1, .diff_pos = -1};
    int *first = xcalloc((size_t)V, sizeof *first), *gf = xmalloc((size_t)V * sizeof *gf);
    int *len_c = xcalloc((size_t)T + 1, sizeof *len_c), *len_r = xcalloc((size_t)T + 1, sizeof *len_r);
    int *gl = xmalloc(((size_t)T + 1) * sizeof *gl);
    double *p0 = xmalloc((size_t)V * sizeof *p0);
    cJSON *js = root ? cJSON_AddObjectToObject(root, "sample_check") : NULL;
    cJSON *ex = js ? cJSON_AddObjectToObject(js, "examples") : NULL;
    // the reference: the exact probabilities of the first token, and M names
    samples_score(eng[0], NULL, 0, T, V, o->s.temperature, p, m, v, p0);
    PyRandom rng = r->rng;   // as the harness's sampler: the stream after the initial weights
    sample_names(eng[0], 0, &rng, o, &r->d, M, T, bos, len_r, NULL,
                 ex ? cJSON_AddArrayToObject(ex, "reference") : NULL);
    // the candidate: its own generator, or the stream past the reference's draws
    sample_names(eng[1], own, &rng, o, &r->d, N, T, bos, len_c, first,
                 ex ? cJSON_AddArrayToObject(ex, "candidate") : NULL);
    res.test = sampler_test(first, p0, V, len_c, len_r, T, gf, gl);
    res.failed = res.test.failed;
    worst_text(&r->d, 0, &res.test.first, gf, V, bos, res.worst[0], sizeof res.worst[0]);
    worst_text(&r->d, 1, &res.test.length, gl, T + 1, bos, res.worst[1], sizeof res.worst[1]);
    if (js) {
        cJSON_AddStringToObject(js, "sampler", "own");
        cJSON_AddStringToObject(js, "candidate_rng", own ? "own" : "independent stream");
        cJSON_AddNumberToObject(js, "n", N);
        cJSON_AddNumberToObject(js, "reference_n", M);
        cJSON_AddNumberToObject(js, "alpha", SAMPLER_ALPHA);
        test_to_json(cJSON_AddObjectToObject(js, "first_character"), &res.test.first, res.worst[0]);
        test_to_json(cJSON_AddObjectToObject(js, "length"), &res.test.length, res.worst[1]);
        cJSON *c = cJSON_AddObjectToObject(js, "counts");
        add_ints(c, "first_candidate", first, V);
        cJSON_AddItemToObject(c, "first_reference_probs", cJSON_CreateDoubleArray(p0, V));
        add_ints(c, "length_candidate", len_c, T + 1);
        add_ints(c, "length_reference", len_r, T + 1);
        cJSON_AddBoolToObject(js, "ok", !res.failed);
    }
    free(first), free(gf), free(len_c), free(len_r), free(gl), free(p0);
    return res;
}

// One test's line: its statistic, p-value and most deviant category.
static void print_test(const char *what, const ChiResult *t, const char *worst) {
    char fail[48] = "";
    if (t->p < SAMPLER_ALPHA / 2) snprintf(fail, sizeof fail, " < %g: FAIL", SAMPLER_ALPHA / 2);
    printf("  %s: chi2 %.2f, df %d, p %.3g%s; most deviant: %s\n", what, t->stat, t->df, t->p, fail, worst);
}

void samples_own_print(const Options *o, const SampleResult *s) {
    printf("samples: own sampler: %s sampled %d names %s, %s %d with the harness's stream; chi-square tests at a "
           "false-alarm rate of %g per run (%g each)%s\n", o->names[1], s->n,
           s->own_rng ? "with its own randomness" : "with a stream independent of the reference's (it has no generator "
           "of its own)", o->names[0], s->m, SAMPLER_ALPHA, SAMPLER_ALPHA / 2, s->failed ? ": FAIL" : "");
    char what[200];
    snprintf(what, sizeof what, "first character (BOS: the empty name) vs %s's exact probabilities", o->names[0]);
    print_test(what, &s->test.first, s->worst[0]);
    snprintf(what, sizeof what, "name length vs %s's %d names", o->names[0], s->m);
    print_test(what, &s->test.length, s->worst[1]);
}
