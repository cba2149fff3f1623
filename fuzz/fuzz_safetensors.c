// libFuzzer target: the safetensors reader (common/safetensors.c) on
// arbitrary bytes. A refusal says why, in text that is safe on a terminal;
// an accepted file's tensors are found by their names, lie inside the
// buffer, read back, and survive an encode-decode round trip unchanged.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/safetensors.h"

static void check_message(const char *err) {
    if (!err[0]) abort();   // a refusal always says why
    for (const unsigned char *c = (const unsigned char *)err; *c; c++)
        if (*c < 0x20 || *c == 0x7f) abort();   // a name from the file is shown with text_safe()
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    StFile f;
    char err[512];
    if (safetensors_decode(data, size, &f, err, sizeof err)) {
        check_message(err);
        return 0;
    }
    for (int i = 0; i < f.n; i++) {
        const StTensor *t = &f.t[i];
        if (st_find(&f, t->name) != t) abort();
        const size_t n = st_numel(t), bytes = n * st_dtype_size(t->dtype);
        const unsigned char *p = t->data;
        if (p < data || p + bytes > data + size) abort();
        if (t->dtype == ST_I32) {
            int *x = malloc(n ? n * sizeof *x : 1);
            if (st_read_i32(t, x) || st_read_f64(t, NULL) != -1) abort();
            free(x);
        } else {
            double *x = malloc(n ? n * sizeof *x : 1);
            if (st_read_f64(t, x)) abort();
            free(x);
        }
        char d[96];
        st_describe(t, d, sizeof d);
    }
    if (st_find(&f, "__metadata__")) abort();
    // encode what was read, decode it again: the same tensors
    size_t len;
    unsigned char *again = safetensors_encode(f.t, f.n, NULL, 0, &len, err, sizeof err);
    if (!again) abort();
    StFile g;
    if (safetensors_decode(again, len, &g, err, sizeof err) || g.n != f.n) abort();
    for (int i = 0; i < f.n; i++) {
        const StTensor *a = &f.t[i], *b = st_find(&g, a->name);
        if (!b || a->dtype != b->dtype || a->ndim != b->ndim || memcmp(a->shape, b->shape, sizeof a->shape)) abort();
        const size_t bytes = st_numel(a) * st_dtype_size(a->dtype);
        if (bytes && memcmp(a->data, b->data, bytes)) abort();
    }
    st_file_free(&g);
    free(again);
    st_file_free(&f);
    return 0;
}
