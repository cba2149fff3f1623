// Plugins that are wrong in one way each, for tests/test_outside.c; built
// with -DBAD=1 (another ABI version), 2 (a required entry NULL), 3 (the entry
// symbol missing), 4 (create refuses), 5 (step reports an error).
#include <microgpt/engine_abi.h>
#include <stdio.h>

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
#endif
    return &t;
}
#endif
