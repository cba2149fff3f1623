// trace validate: check that files are well-formed, consistent traces.
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "traces/tool.h"

void validate_usage(FILE *f) {
    fprintf(f,
            "usage: trace validate FILE...\n"
            "Check each file as every trace command reads it: the envelope (format,\n"
            "version, kind), the types of the fields (docs/trace.schema.json describes\n"
            "them), and their consistency: increasing step numbers, one error record per\n"
            "tensor and quantity, known quantities, errors >= 0, \"complete\" agreeing\n"
            "with stop_reason and stop_step, a complete train trace holding all its steps.\n"
            "Prints one line per file.\n\n"
            "Exit codes: 0 every file is valid, 1 some file is not, 2 bad usage.\n");
}

int cmd_validate(int argc, char **argv) {
    int n = 0, bad = 0, flags_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!flags_done && is_flag(a)) {
            if (!strcmp(a, "--")) flags_done = 1;
            else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
                validate_usage(stdout);
                return 0;
            } else unknown_flag("validate", a);
            continue;
        }
        n++;
        TraceData t;
        char err[1024];
        if (trace_load(&t, a, err, sizeof err)) {
            printf("%s\n", err);
            bad++;
            continue;
        }
        printf("%s: valid %s trace, %d steps, %s\n", a, trace_kind_name(t.kind), t.n_steps,
               t.complete == 0 ? "incomplete" : "complete");
        trace_data_free(&t);
    }
    if (!n) die(EXIT_USAGE, "validate: needs at least one file (see trace validate --help)");
    stdout_check();
    return bad ? EXIT_MISMATCH : 0;
}
