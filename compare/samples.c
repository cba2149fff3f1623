// The sampled names at the end of lockstep (samples.h). Sampling draws a
// token from softmax(logits/temperature) at each position, so two engines
// agree on a name when their probabilities agree and no draw falls within
// their difference of a cumulative boundary. In fp64 the names must be
// identical. In fp32 a draw can legitimately land between the two engines'
// boundaries; the first difference is accepted only if the candidate's
// pick is exactly what its own (scored) probabilities give for that draw and
// those probabilities agree with the reference's; the names after it are
// not compared, as the random streams no longer line up.
#include "samples.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

typedef struct {
    const Dataset *d;
    int sample, V;
} ProbAt;

void samples_token_text(const Dataset *d, int v, char *out, size_t n) {
    if (v >= d->n_chars) snprintf(out, n, "BOS");
    else if (d->vocab[v] >= 0x20 && d->vocab[v] < 0x7f) snprintf(out, n, "'%c'", (char)d->vocab[v]);
    else snprintf(out, n, "U+%04X", (unsigned)d->vocab[v]);
}

static void describe_prob(const void *ctx, size_t i, char *out, size_t n) {
    const ProbAt *c = ctx;
    char tok[16];
    samples_token_text(c->d, (int)(i % (size_t)c->V), tok, sizeof tok);
    snprintf(out, n, "sample %d, position %zu, token %s", c->sample + 1, i / (size_t)c->V, tok);
}

void samples_name_text(const Dataset *d, const int *ids, int len, char *out, size_t cap) {
    size_t k = 0;
    for (int j = 0; j < len && k + 5 < cap; j++) {
        char u[4];
        int m = utf8_encode(d->vocab[ids[j]], u);
        memcpy(out + k, u, (size_t)m);
        k += (size_t)m;
    }
    out[k] = '\0';
}

// The probabilities engine e gives each position of the document
// [BOS] + ids + [BOS]: one training step's forward on it (the logits at
// position t are those the sampler used for token t), then the state
// (p, m, v) is put back. Returns the number of positions.
int samples_score(Engine *e, const int *ids, int len, int block, int V, double temperature, const double *p,
                  const double *m, const double *v, double *probs) {
    const int n = len + 1 < block ? len + 1 : block, bos = V - 1;
    int tokens[n + 1], doc = 0;
    tokens[0] = bos;
    for (int j = 1; j <= n; j++) tokens[j] = j <= len ? ids[j - 1] : bos;
    Batch b = {.B = 1, .T = n, .n = (int[]){n}, .tokens = tokens, .doc = &doc};
    e->ops->step(e, &b, 0);
    e->ops->get_logits(e, probs);
    engine_set_state(e, p, m, v);   // (an engine that takes no moments keeps its own: sampling reads no moments)
    for (int t = 0; t < n; t++) engine_sample_probs(probs + (size_t)t * (size_t)V, V, temperature);
    return n;
}

SampleResult samples_check(Run *r, Engine **eng, int ne, const double *p, const double *m, const double *v,
                           cJSON *root) {
    const Options *o = r->o;
    if (o->sampler_own) return samples_own_check(r, eng, p, m, v, root);
    const int N = o->s.samples, T = o->s.block_size, V = r->L.shape.vocab_size, bos = V - 1;
    SampleResult res = {.n = N, .diff_sample = -1, .diff_pos = -1};
    int *ids[2], *len[2];
    PyRandom *before = xmalloc((size_t)N * sizeof *before);   // the stream before each name
    for (int k = 0; k < 2; k++) {
        ids[k] = xmalloc((size_t)N * (size_t)T * sizeof(int));
        len[k] = xmalloc((size_t)N * sizeof(int));
        PyRandom rng = r->rng;   // as the original: the stream after the initial weights
        for (int i = 0; i < N; i++) {
            if (k == 0) before[i] = rng;
            len[k][i] = eng[k]->ops->sample(eng[k], &rng, o->s.temperature, ids[k] + (size_t)i * (size_t)T);
        }
    }
    cJSON *js = root ? cJSON_AddObjectToObject(root, "sample_check") : NULL;
    Step S = {.o = o, .step = o->s.steps, .errors = js ? cJSON_AddArrayToObject(js, "errors") : NULL};
    double *probs[2 + NOISE_MEMBERS];
    for (int k = 0; k < ne; k++) probs[k] = xmalloc((size_t)T * (size_t)V * sizeof(double));
    cJSON *names = js ? cJSON_AddArrayToObject(js, "names") : NULL;
    // the first difference of the names (a name ends with BOS, or at T tokens)
    for (int i = 0; i < N && res.diff_sample < 0; i++) {
        const int *a = ids[1] + (size_t)i * (size_t)T, *b = ids[0] + (size_t)i * (size_t)T;
        for (int j = 0; j <= T && j <= len[0][i] && j <= len[1][i]; j++) {
            if (j == T) break;   // both full length and equal
            int ta = j < len[1][i] ? a[j] : bos, tb = j < len[0][i] ? b[j] : bos;
            if (ta != tb) {
                res.diff_sample = i, res.diff_pos = j;
                break;
            }
            if (ta == bos) break;
        }
    }
    const int compared = res.diff_sample < 0 ? N : res.diff_sample + 1;
    // the probabilities need both engines' logits (a partial engine may offer none:
    // the names are still compared)
    const int scored = engine_offers_logits(eng[0]) && engine_offers_logits(eng[1]);
    if (!scored)
        snprintf(res.unscored, sizeof res.unscored, "%s", engine_offers_logits(eng[1]) ? o->names[0] : o->names[1]);
    for (int i = 0; i < compared; i++) {
        const int *ri = ids[0] + (size_t)i * (size_t)T;
        int n = 0;
        for (int k = 0; k < ne && scored; k++)
            n = samples_score(eng[k], ri, len[0][i], T, V, o->s.temperature, p, m, v, probs[k]);
        char tensor[32];
        snprintf(tensor, sizeof tensor, "sample %d", i + 1);
        ProbAt at = {&r->d, i, V};
        Noise nz = {0};
        for (int k = 2; k < ne; k++) nz.x[nz.n] = probs[k], nz.e[nz.n++] = probs[0];
        for (int pi = 0; pi < o->n_plants; pi++) {   // test-only (--plant)
            const Plant *pl = &o->plant[pi];
            if (pl->relu || pl->q != Q_PROBS || pl->step != i + 1) continue;
            if (pl->noise && ne < 3) die(EXIT_USAGE, "--plant noise:...: only the ratio rule has a noise reference");
            if (!scored) die(EXIT_USAGE, "--plant probs: %s offers no logits", res.unscored);
            probs[pl->noise ? 2 : 1][0] = probs[0][0] + pl->delta * rms_of(probs[0], (size_t)n * (size_t)V);
        }
        if (scored)
            check(&S, Q_PROBS, tensor, NULL, probs[1], probs[0], &nz, (size_t)n * (size_t)V, describe_prob, &at);
        if (names) {
            char s[4 * 64 + 8];
            cJSON *pair = cJSON_CreateArray();
            for (int k = 0; k < 2; k++) {
                samples_name_text(&r->d, ids[k] + (size_t)i * (size_t)T, len[k][i], s, sizeof s);
                cJSON_AddItemToArray(pair, cJSON_CreateString(s));
            }
            cJSON_AddItemToArray(names, pair);
        }
        if (i != res.diff_sample) continue;
        // the first difference: REF drew tb, CAND ta at position j
        const int j = res.diff_pos;
        int ta = j < len[1][i] ? ids[1][(size_t)i * (size_t)T + j] : bos, tb = j < len[0][i] ? ri[j] : bos;
        char sa[16], sb[16];
        samples_token_text(&r->d, ta, sa, sizeof sa);
        samples_token_text(&r->d, tb, sb, sizeof sb);
        if (engine_prec(o, 1) == PREC_FP64) {
            snprintf(res.note, sizeof res.note, "sample %d differs at position %d: %s drew %s, %s drew %s (fp64 "
                     "names must be identical)", i + 1, j, o->names[0], sb, o->names[1], sa);
            res.failed = 1;
        } else if (!scored) {
            // whether rounding at a boundary explains it needs the candidate's own probabilities
            snprintf(res.note, sizeof res.note, "sample %d differs at position %d: %s drew %s, %s drew %s; %s offers no "
                     "logits, so whether %s rounding at a boundary explains it cannot be checked (--sampler own tests "
                     "the names' distribution instead)", i + 1, j, o->names[0], sb, o->names[1], sa, res.unscored,
                     precision_name(engine_prec(o, 1)));
            res.failed = 1;
        } else {
            // the draw: the stream before this name, j draws on
            PyRandom rng = before[i];
            for (int d = 0; d < j; d++) pyrandom_random(&rng);
            double w[V];
            memcpy(w, probs[1] + (size_t)j * (size_t)V, sizeof w);
            int pick = (int)pyrandom_choice_weighted(&rng, w, (size_t)V);
            res.explained = pick == ta && !S.bad[Q_PROBS];
            snprintf(res.note, sizeof res.note, "sample %d differs at position %d: %s drew %s, %s drew %s; %s's "
                     "own probabilities there give %s for the same draw%s", i + 1, j, o->names[0], sb, o->names[1],
                     sa, o->names[1], pick == ta ? sa : "another token",
                     res.explained ? " (rounding decides a draw at a boundary; later names not compared)"
                                   : ": its sampler disagrees with its own forward");
            if (!res.explained) res.failed = 1;
        }
    }
    if (S.f.failed) res.failed = 1;
    res.T = S.T;
    res.f = S.f;
    if (js) {
        cJSON_AddStringToObject(js, "sampler", "harness");
        cJSON_AddNumberToObject(js, "n", N);
        cJSON_AddNumberToObject(js, "compared", compared);
        cJSON_AddBoolToObject(js, "identical", res.diff_sample < 0);
        if (!scored) cJSON_AddStringToObject(js, "probs_not_offered_by", res.unscored);
        if (res.note[0]) cJSON_AddStringToObject(js, "difference", res.note);
        cJSON_AddBoolToObject(js, "ok", !res.failed);
    }
    for (int k = 0; k < ne; k++) free(probs[k]);
    for (int k = 0; k < 2; k++) {
        free(ids[k]);
        free(len[k]);
    }
    free(before);
    return res;
}

void samples_print(const Options *o, const SampleResult *s) {
    if (s->own) samples_own_print(o, s);
    else if (s->diff_sample < 0 && s->unscored[0])
        printf("samples: %d names, identical in %s and %s; probabilities not compared: %s offers no logits\n", s->n,
               o->names[0], o->names[1], s->unscored);
    else if (s->diff_sample < 0)
        printf("samples: %d names, identical in %s and %s; probabilities of every sampling step: max|a-b| %.3e "
               "(%s)\n", s->n, o->names[0], o->names[1], s->T.abs[Q_PROBS].v, s->T.abs[Q_PROBS].tensor);
    else
        printf("samples: %s%s\n", s->note, s->failed ? ": FAIL" : "");
}

void samples_verdict(const SampleResult *s, char *out, size_t n) {
    if (s->own)
        snprintf(out, n, "; samples: own sampler, distribution test p %.3g (first character), %.3g (length), "
                 "false-alarm rate %g", s->test.first.p, s->test.length.p, SAMPLER_ALPHA);
    else if (s->diff_sample < 0)
        snprintf(out, n, "; samples: %d names identical", s->n);
    else
        snprintf(out, n, "; samples: names differ at sample %d%s", s->diff_sample + 1,
                 s->explained ? " (fp32 rounding at a boundary)" : "");
}
