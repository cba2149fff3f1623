// trace validate: check that files are well-formed, consistent traces: the
// reader's checks (traces/trace_read.c: the envelope, the fields the tools
// rely on, the consistency rules), then docs/trace.schema.json itself,
// compiled in and checked by traces/json_schema.c, so that this command and
// any JSON Schema validator (tests/validate_schema.py) judge a trace alike.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "traces/json_schema.h"
#include "traces/tool.h"

// docs/trace.schema.json (traces/module.mk makes the include from it)
static const char SCHEMA_TEXT[] =
#include "trace_schema.inc"
    ;
#define SCHEMA_NAME "docs/trace.schema.json"

void validate_usage(FILE *f) {
    fprintf(f,
            "usage: trace validate FILE...\n"
            "       trace validate --schema\n"
            "Check each file as every trace command reads it: the envelope (format,\n"
            "version, kind), the fields the tools read, their consistency (increasing step\n"
            "numbers, one error record per tensor and quantity, known quantities, errors\n"
            ">= 0, \"complete\" agreeing with stop_reason and stop_step, a complete train\n"
            "trace holding all its steps, bench rows of the sizes listed), and then the\n"
            "JSON Schema docs/trace.schema.json (compiled in), as any JSON Schema validator\n"
            "checks it. Prints one line per file: valid, or the first problem found.\n\n"
            "  --schema   print the schema this command checks against and exit\n\n"
            "Exit codes: 0 every file is valid, 1 some file is not, 2 bad usage.\n");
}

int cmd_validate(int argc, char **argv) {
    int n = 0, bad = 0, flags_done = 0;
    cJSON *schema = cJSON_Parse(SCHEMA_TEXT);
    char err[1024];
    if (!schema) die(EXIT_USAGE, "validate: the compiled-in %s is not JSON (rebuild)", SCHEMA_NAME);
    if (json_schema_supported(schema, err, sizeof err))
        die(EXIT_USAGE, "validate: %s cannot be checked here: %s", SCHEMA_NAME, err);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!flags_done && is_flag(a)) {
            if (!strcmp(a, "--")) flags_done = 1;
            else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
                validate_usage(stdout);
                cJSON_Delete(schema);
                return 0;
            } else if (!strcmp(a, "--schema")) {
                if (argc != 2) die(EXIT_USAGE, "validate: --schema takes no file (see trace validate --help)");
                fputs(SCHEMA_TEXT, stdout);
                cJSON_Delete(schema);
                stdout_check();
                return 0;
            } else unknown_flag("validate", a);
            continue;
        }
        n++;
        TraceData t;
        if (trace_load(&t, a, err, sizeof err)) {
            printf("%s\n", err);
            bad++;
            continue;
        }
        int rc = json_schema_validate(schema, t.root, err, sizeof err);
        if (rc < 0) die(EXIT_USAGE, "validate: %s cannot be checked here: %s", SCHEMA_NAME, err);
        if (rc) {
            printf("%s: not valid against %s: %s\n", a, SCHEMA_NAME, err);
            bad++;
        } else if (t.kind == TRACE_KIND_BENCH) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(t.root, "complete");
            printf("%s: valid bench trace, %d sizes, %d rows, %s\n", a,
                   cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(t.root, "sizes")),
                   cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(t.root, "bench")),
                   cJSON_IsFalse(c) ? "incomplete" : "complete");
        } else {
            printf("%s: valid %s trace, %d steps, %s\n", a, trace_kind_name(t.kind), t.n_steps,
                   t.complete == 0 ? "incomplete" : "complete");
        }
        trace_data_free(&t);
    }
    cJSON_Delete(schema);
    if (!n) die(EXIT_USAGE, "validate: needs at least one file (see trace validate --help)");
    stdout_check();
    return bad ? EXIT_MISMATCH : 0;
}
