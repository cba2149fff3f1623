// Writing JSON traces (cJSON). Every tool's trace shares one envelope:
//   {"format": "microgpt-trace", "version": 1, "kind": "train" | "compare" |
//    "bench", "complete": true | false, ...}
// and is written once, at the end, as common/atomic_file.h writes outputs
// (FILE is never half-written; "-" is stdout), compact unless --pretty
// (trace_set_pretty). A run that stops early still writes its trace: die()
// (bad data, a non-finite loss, out of memory...) and SIGINT/SIGTERM (for
// tools that watch for them) write it with "complete": false, "stop_reason"
// and "stop_step". docs/traces.md describes the fields, docs/trace.schema.json
// their types.
#ifndef TRACES_TRACE_H
#define TRACES_TRACE_H

#include <cjson/cJSON.h>

#include "common/atomic_file.h"
#include "common/dataset.h"
#include "common/model.h"
#include "common/settings.h"

#define TRACE_FORMAT "microgpt-trace"
#define TRACE_VERSION 1

typedef struct {
    char *path;     // as given
    OutFile out;
    cJSON *root;
    int step;       // the step the run is at (1-based; 0 before the first): stop_step
} Trace;

// How traces are written: compact (one line, no whitespace; the default) or,
// with on = 1 (the tools' --pretty), indented for reading. Set before the
// trace is written.
void trace_set_pretty(int on);

// Create the trace object and check its path (so an unwritable path, or one
// that is an input of the run, is refused before the run starts: exits 2
// with a message naming the path). From here until trace_commit or
// trace_abandon, die() writes the trace marked incomplete with its message.
void trace_open(Trace *t, const char *path, const char *kind);
// Serialize and write it marked "complete": true, free everything. Exits 1
// with a message when it cannot be written.
void trace_commit(Trace *t);
// Write it marked "complete": false with the reason and t->step, free
// everything. Returns 0, or -1 after printing why it could not be written.
int trace_stop(Trace *t, const char *reason);
// Free everything without writing (the trace is not wanted after all).
void trace_abandon(Trace *t);

// Write the trace marked incomplete ("interrupted by SIGINT at step N"),
// put back the handlers and re-raise the signal: the process ends as the
// signal would have ended it.
void trace_exit_on_signal(Trace *t, int sig) __attribute__((noreturn));

// Building blocks shared by the tools.
cJSON *trace_settings(const Settings *s, const ModelShape *m);
// The head of a train trace of the scalar engine: settings, dataset, engine
// and num_params; returns the (empty) "steps" array.
cJSON *trace_train_header(Trace *t, const Settings *s, const ModelShape *m, const Dataset *d, size_t n_params);
cJSON *trace_dataset(const Dataset *d);
// A number that survives the trip through text bit for bit (the shortest of
// 15, 16 or 17 significant digits that reads back exactly); non-finite values
// become null. Use these for every float in a trace.
cJSON *trace_number(double x);
cJSON *trace_add_number(cJSON *obj, const char *name, double x);

#endif
