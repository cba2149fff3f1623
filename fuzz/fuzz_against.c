// libFuzzer target: --against's checks of a step's tensor file
// (compare/against_check.c) on arbitrary safetensors bytes, against a tiny
// model's reference values. A file it cannot check is refused through die()
// (exit 2 in the tool; here the die hook returns), never a crash.
#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "compare/against_check.h"

static jmp_buf g_back;

static void back(int code, const char *msg) {
    (void)msg;
    if (code != EXIT_USAGE) abort();   // a malformed file is bad input data, nothing else
    longjmp(g_back, 1);
}

typedef struct {
    ParamLayout L;
    size_t size;   // the input's
} Model;

// The reference: a fixed pattern; logits only when the input's size is odd
// (a partial engine otherwise).
static int ref_get(void *ctx, Quantity q, double *out) {
    const Model *m = ctx;
    if (q == Q_LOGITS && !(m->size & 1)) return -1;
    const size_t n = q == Q_LOGITS ? 2 * 3 * (size_t)m->L.shape.vocab_size : m->L.n_params;
    for (size_t i = 0; i < n; i++) out[i] = sin((double)i + (double)q);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Model m;
    static int ready;
    static double lg[2 * 3 * 8], rlg[2 * 3 * 8], *rec, *ref;
    static Tolerance tol[Q_NUM];
    if (!ready) {
        ModelShape s = {.vocab_size = 5, .n_embd = 4, .n_head = 2, .n_kv_head = 1, .head_dim = 2, .n_layer = 1,
                        .block_size = 3};
        layout_init(&m.L, &s);
        rec = malloc(m.L.n_params * sizeof *rec);
        ref = malloc(m.L.n_params * sizeof *ref);
        for (int q = 0; q < Q_NUM; q++) tol[q] = (Tolerance){1e-12, 1e-9, 0};
        ready = 1;
    }
    m.size = size;
    StFile sf;
    char err[512];
    if (safetensors_decode(data, size, &sf, err, sizeof err)) return 0;
    static const int n[2] = {3, 1};   // the batch: two documents of 3 and 1 positions
    AgainstRef r = {.L = &m.L, .tol = tol, .engine = "scalar", .recorder = "fuzz", .get = ref_get, .ctx = &m,
                    .lg = lg, .rlg = rlg, .rec = rec, .ref = ref};
    static AgainstFirst f;
    static AgainstStep out;
    memset(&f, 0, sizeof f);
    memset(&out, 0, sizeof out);
    add_die_hook(back);
    if (setjmp(g_back) == 0) {
        against_check_file(&r, &sf, "fuzz.safetensors", 2, 3, n, 1, &f, &out);
        if (out.bad && !f.failed) abort();   // a failure is always described
        if (!out.have[Q_LOGITS] && !out.have[Q_GRADS] && !out.have[Q_PARAMS]) abort();
        free(out.zero_note);
    }
    remove_die_hook(back);
    st_file_free(&sf);
    return 0;
}
