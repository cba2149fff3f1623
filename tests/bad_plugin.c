// Plugins that are wrong in one way each, for tests/test_outside.c and
// tests/test_hardening.c; built with -DBAD=1 (another ABI version), 2 (a
// required entry NULL), 3 (the entry symbol missing), 4 (create refuses), 5
// (step reports an error), 6 (sample returns a token past the vocabulary),
// 7 (create refuses with a message that fills err without a NUL), 8 (a name
// with a terminal escape sequence and a newline; otherwise a working engine).
#include <microgpt/engine_abi.h>
#include <stdio.h>
#include <string.h>

#include "common/engine_export.h"
#include "tensor_gpu/cpu/engine_cpu.h"

#if BAD == 4
static mg_engine *refuse(const mg_config *c, const double *init, char *err, size_t errlen) {
    (void)init;
    snprintf(err, errlen, "no device for %d layers", c->n_layer);
    return NULL;
}
#endif
#if BAD == 5
static const char *always(mg_engine *e) {
    (void)e;
    return "the device fell off the bus";
}
#endif

#if BAD == 6
static int (*real_sample)(mg_engine *, const mg_sampler *, double, int *);
static int g_vocab;
static mg_engine *(*real_create)(const mg_config *, const double *, char *, size_t);
static mg_engine *create_noting_vocab(const mg_config *c, const double *init, char *err, size_t errlen) {
    g_vocab = c->vocab_size;
    return real_create(c, init, err, errlen);
}
// the first token is vocab_size: one past the last id (BOS)
static int past_vocab(mg_engine *e, const mg_sampler *s, double temperature, int *out) {
    int n = real_sample(e, s, temperature, out);
    out[0] = g_vocab;
    return n > 0 ? n : 1;
}
#endif
#if BAD == 7
static mg_engine *unterminated(const mg_config *c, const double *init, char *err, size_t errlen) {
    (void)c, (void)init;
    memset(err, 'x', errlen);
    return NULL;
}
#endif

#if BAD == 3
MG_EXPORT const mg_engine_abi *microgpt_engine_abi_v0(void) { return engine_export("bad", cpu_engine_create); }
#else
MG_EXPORT const mg_engine_abi *microgpt_engine_abi_v1(void) {
    static mg_engine_abi t;
    t = *engine_export("bad", cpu_engine_create);
#if BAD == 1
    t.abi_version = 2;
#elif BAD == 2
    t.get_grads = NULL;
#elif BAD == 4
    t.create = refuse;
#elif BAD == 5
    t.error = always;
#elif BAD == 6
    real_create = t.create, real_sample = t.sample;
    t.create = create_noting_vocab, t.sample = past_vocab;
#elif BAD == 7
    t.create = unterminated;
#elif BAD == 8
    t.name = "evil\x1b[2J\nname";
#endif
    return &t;
}
#endif
