// Lockstep's last check (--samples N): from the reference's final state both
// engines sample N names with the same random stream; the names must be the
// same, and the probabilities of every sampling step, scored on the
// reference's names, must agree (samples.c). With --sampler own the
// candidate samples with its own randomness and the distribution of its names
// is tested instead (samples_own.c).
#ifndef COMPARE_SAMPLES_H
#define COMPARE_SAMPLES_H

#include <cjson/cJSON.h>

#include "check.h"
#include "chisq.h"

typedef struct {
    int failed;
    Totals T;             // the probabilities' errors
    Failure f;            // the first probability out of tolerance
    int n;                // names sampled
    int diff_sample;      // the first name that differs (-1: none)
    int diff_pos;         // the position in it
    int explained;        // fp32: the difference is a draw that fp32 rounding may decide (see samples.c)
    char note[512];       // what the difference is
    char unscored[256];   // the engine that offers no logits: the probabilities were not compared (empty: they were)
    int own;              // --sampler own: the distribution test ran (the fields below)
    int m;                // own: the names the reference sampled
    int own_rng;          // own: the candidate drew with its own generator (else an independent stream)
    SamplerTest test;     // own: the first character's and the length's chi-square tests
    char worst[2][200];   // own: each test's most deviant category ("length 0: expected 41.3, got 0")
} SampleResult;

// eng[0..ne-1]: the reference, the candidate and (ratio rule) the noise
// reference's engines; every engine is left in the state (p, m, v). Writes "samples" into
// root (NULL: no trace).
SampleResult samples_check(Run *r, Engine **eng, int ne, const double *p, const double *m, const double *v,
                           cJSON *root);
void samples_print(const Options *o, const SampleResult *s);
// What the verdict line says of the samples: which check ran and its result
// ("; samples: 20 names identical", "; samples: own sampler, distribution
// test p 0.41 (first character), 0.73 (length)").
void samples_verdict(const SampleResult *s, char *out, size_t n);

// samples.c's pieces samples_own.c shares. The probabilities engine e gives
// each position of [BOS] + ids + [BOS] (len ids; NULL when len is 0), from
// the state (p, m, v), which it is left in (an engine that takes no moments
// keeps its own); returns the positions. e must offer its logits.
int samples_score(Engine *e, const int *ids, int len, int block, int V, double temperature, const double *p,
                  const double *m, const double *v, double *probs);
// Token v as text: 'a', U+00E9, or BOS.
void samples_token_text(const Dataset *d, int v, char *out, size_t n);
// A name's text (UTF-8).
void samples_name_text(const Dataset *d, const int *ids, int len, char *out, size_t cap);
// --sampler own's check (samples_check calls it).
SampleResult samples_own_check(Run *r, Engine **eng, const double *p, const double *m, const double *v,
                               cJSON *root);
void samples_own_print(const Options *o, const SampleResult *s);

#endif
