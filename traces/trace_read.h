// Reading JSON traces back (the other half of trace.h): load a file, check
// the envelope {"format": "microgpt-trace", "version": 1, "kind": ...} and the
// shape of the fields the tools rely on, and extract the per-step series.
// docs/traces.md describes the format.
#ifndef TRACES_TRACE_READ_H
#define TRACES_TRACE_READ_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef enum { TRACE_KIND_TRAIN, TRACE_KIND_COMPARE, TRACE_KIND_BENCH } TraceKind;

// One per-tensor error record of a compare step, from either layout:
//   long:   "errors": [{"quantity": "grads", "tensor": "layer0.attn_wq",
//                       "max_abs": x, "max_rel": y, "n_bad": k}, ...]
//   maps:   "max_err": {"layer0.attn_wq.grad": x, ...}, "max_rel": {...}
// quantity is one of TRACE_QUANTITIES; tensor is the tensor's name (the
// quantity itself for loss and logits).
#define TRACE_QUANTITIES "loss, logits, grads, params, m, v, acts, dacts"
#define N_TRACE_QUANTITIES 8
// The position of a quantity in TRACE_QUANTITIES (0 to 7; 3, params, for
// another string).
int trace_quantity_index(const char *quantity);
typedef struct {
    const char *quantity;   // a static string
    char tensor[64];
    double max_abs, max_rel;  // NaN: null (non-finite) or absent
    int n_bad;              // elements outside the tolerance; -1 when not recorded
} TraceError;

// One element of "steps". Numbers that are absent or null (the writer turns
// non-finite values into null) read as NaN.
typedef struct {
    int step;              // "step" (1-based); index + 1 when absent
    double lr;             // learning rate of the step
    double loss[2];        // train: loss[0]; compare: engines[0], engines[1]
    double time_s[2];      // seconds the step took (per engine for compare)
    int ok;                // compare: 1 or 0; -1 when absent (always for train)
    const cJSON *max_err;  // compare: {quantity or tensor: largest |a-b|}, or NULL
    const cJSON *max_rel;  // compare: {same keys: largest |a-b|/|b|}, or NULL
                           // (built from "errors" when a trace has only the long layout)
    int n_errors;
    TraceError *errors;    // compare: the records of the step, either layout
} TraceStep;

typedef struct {
    char *path;
    cJSON *root;             // the whole document (the const cJSON * above point into it)
    TraceKind kind;
    int n_engines;           // 1 (train) or 2 (compare)
    const char *engine[2];   // engine names; when absent "unknown" (train) or "a"/"b" (compare)
    const char *precision[2];// "" when absent
    int n_steps;
    TraceStep *steps;
    int complete;            // "complete": 1, 0; -1 when absent (older traces: complete)
    const char *stop_reason; // with complete 0
    int stop_step;           // with complete 0; 0 when null
    cJSON *derived;          // max_err/max_rel maps built from "errors" (owned)
} TraceData;

// Read, parse and check `path`. Returns 0, or -1 with one line in err that
// starts with the path and says what is wrong (cannot open, not JSON with
// line and column, not a microgpt trace, unsupported version or kind, a
// malformed field). The caller owns *t afterwards (trace_data_free).
int trace_load(TraceData *t, const char *path, char *err, size_t errlen);
// The same from text in memory: len bytes and a NUL at text[len]; `path` names it in messages.
int trace_load_text(TraceData *t, const char *path, const char *text, size_t len, char *err, size_t errlen);
void trace_data_free(TraceData *t);

const char *trace_kind_name(TraceKind k);
// The quantity of a max_err key: "loss", "logits", "grads" (".grad"), "m"
// (".m"), "v" (".v") or "params" (any other tensor name); the tensor's name
// (without the suffix) goes to tensor.
const char *trace_key_quantity(const char *key, char tensor[64]);

// obj[name] as a number: 0 and the value (NaN for null), 1 when absent,
// -1 when present with another type.
int trace_get_number(const cJSON *obj, const char *name, double *out);
// obj[name] when it is a string, else NULL.
const char *trace_get_string(const cJSON *obj, const char *name);

// The text trace_number() writes for x: the shortest of %.15g, %.16g, %.17g
// that reads back to the same bits; "null" for NaN and infinities.
void trace_format_number(double x, char buf[32]);

#endif
