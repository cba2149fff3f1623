// Writing JSON traces (cJSON). Every tool's trace shares one envelope:
//   {"format": "microgpt-trace", "version": 1, "kind": "train" | "compare", ...}
// and is written to a temporary file beside FILE then renamed over it
// (common/atomic_file.h), so an interrupted run never leaves a truncated FILE.
// docs/traces.md describes the fields.
#ifndef TRACES_TRACE_H
#define TRACES_TRACE_H

#include <cjson/cJSON.h>

#include "common/dataset.h"
#include "common/model.h"
#include "common/settings.h"

#define TRACE_FORMAT "microgpt-trace"
#define TRACE_VERSION 1

typedef struct {
    char *path;     // final path (the temporary file: common/atomic_file.h)
    cJSON *root;
} Trace;

// Create the trace object and its temporary file (so an unwritable path is
// reported before the run starts: exits 2 with a message naming the path).
void trace_open(Trace *t, const char *path, const char *kind);
// Serialize, write the temporary file, rename it to the final path.
// Exits 1 with a message on failure (the temporary file is removed).
void trace_commit(Trace *t);
// Remove the temporary file and free everything (for error paths).
void trace_abandon(Trace *t);

// Building blocks shared by the tools.
cJSON *trace_settings(const Settings *s, const ModelShape *m);
cJSON *trace_dataset(const Dataset *d);
// A number that survives the trip through text bit for bit (the shortest of
// 15, 16 or 17 significant digits that reads back exactly); non-finite values
// become null. Use these for every float in a trace.
cJSON *trace_number(double x);
cJSON *trace_add_number(cJSON *obj, const char *name, double x);

#endif
