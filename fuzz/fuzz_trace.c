// libFuzzer target: the trace reader on arbitrary bytes (as `trace` reads
// a file: NUL-terminated). It must accept or refuse with a message, never crash.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "traces/trace_read.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    TraceData t;
    char err[512];
    if (trace_load_text(&t, "fuzz.json", text, size, err, sizeof err) == 0) {
        if (t.n_steps < 0 || (t.n_steps > 0 && !t.steps)) abort();
        trace_data_free(&t);
    } else if (!err[0]) {
        abort();  // a refusal always says why
    }
    free(text);
    return 0;
}
