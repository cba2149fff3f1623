// Partial engine plugins for tests/test_partial.c (docs/outside_engines.md,
// "Partial engines"): the CPU tensor engine behind the ABI, offering less.
// Built with -DPARTIAL=1 (offers() leaves out MG_OFFERS_LOGITS), 2 (offers()
// leaves out the moments: neither get_moments nor set_state with m and v, as
// an optimizer of its own), 3 (a table that ends before offers, with
// get_logits and get_moments NULL: not offered either). What is left out must
// never be called: each such entry stays in the table (1, 2) and, if called,
// reports the breach through error(), which stops compare with exit code 1.
// The CPU engine's faults (--inject-fault grad-sign, adam-bias) still work.
#include <microgpt/engine_abi.h>
#include <stddef.h>
#include <stdio.h>

#include "common/engine_export.h"
#include "tensor_gpu/cpu/engine_cpu.h"

static mg_engine_abi g_table;            // what compare holds
static const mg_engine_abi *g_inner;     // the CPU engine's table (engine_export)
static const char *g_breach;             // set when compare called what is not offered

static const char *breach(mg_engine *e) {
    (void)e;
    return g_breach;
}

#if PARTIAL == 1
static unsigned offers(mg_engine *e) {
    (void)e;
    return MG_OFFERS_MOMENTS | MG_OFFERS_SET_MOMENTS;
}
static void no_logits(mg_engine *e, double *out) {
    (void)e, (void)out;
    g_breach = "get_logits was called, and this engine's offers() leaves out MG_OFFERS_LOGITS";
}
#elif PARTIAL == 2
static unsigned offers(mg_engine *e) {
    (void)e;
    return MG_OFFERS_LOGITS;
}
static void no_moments(mg_engine *e, double *m, double *v) {
    (void)e, (void)m, (void)v;
    g_breach = "get_moments was called, and this engine's offers() leaves out MG_OFFERS_MOMENTS";
}
static void params_only(mg_engine *e, const double *p, const double *m, const double *v) {
    if (m || v) {
        g_breach = "set_state was given Adam moments, and this engine's offers() leaves out MG_OFFERS_SET_MOMENTS";
        return;
    }
    g_inner->set_state(e, p, NULL, NULL);
}
#endif

// The table as the CPU engine's create() leaves it (its optional entries are
// set there), with this variant's changes.
static void patch(void) {
    mg_engine_abi t = *g_inner;
    t.create = g_table.create;
    t.name = "partial";
    t.error = breach;
#if PARTIAL == 1
    t.offers = offers;
    t.get_logits = no_logits;
#elif PARTIAL == 2
    t.offers = offers;
    t.get_moments = no_moments;
    t.set_state = params_only;
#elif PARTIAL == 3
    t.get_logits = NULL;
    t.get_moments = NULL;
    t.offers = NULL;
    t.size = (unsigned)offsetof(mg_engine_abi, offers);   // built before offers existed
#endif
    g_table = t;
}

static mg_engine *create(const mg_config *c, const double *init, char *err, size_t errlen) {
    mg_engine *e = g_inner->create(c, init, err, errlen);
    patch();
    return e;
}

MG_EXPORT const mg_engine_abi *microgpt_engine_abi_v1(void) {
    g_inner = engine_export("partial", cpu_engine_create);
    g_table.create = create;
    patch();
    return &g_table;
}
