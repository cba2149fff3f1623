// The mixed-precision recipe's matrix products (tensor_gpu/mixed.h): both
// operands rounded to the low precision, the float matmul of layers.c
// (fp32 sums), the outputs rounded where autocast stores them in bf16/fp16.
#include "tensor_gpu/mixed.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "tensor_gpu/layers.h"
#include "tensor_gpu/lowp.h"

void mixed_mm_init(MixedMM *m, Precision p, size_t rows, size_t width, size_t weights, float (*round)(float)) {
    m->round = round ? round : p == PREC_BF16 ? round_bf16 : p == PREC_FP16 ? round_fp16 : round_tf32;
    m->round_out = p != PREC_TF32;
    m->a = xmalloc(rows * width * sizeof(float));
    m->t = xmalloc(rows * width * sizeof(float));
    m->d = xmalloc(rows * width * sizeof(float));
    m->w = xmalloc(weights * sizeof(float));
}

void mixed_mm_free(MixedMM *m) {
    free(m->a);
    free(m->t);
    free(m->d);
    free(m->w);
}

// dst = src rounded (count floats); returns dst.
static const float *rounded(const MixedMM *m, float *dst, const float *src, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = m->round(src[i]);
    return dst;
}

void mixed_matmul_forward(const MixedMM *m, float *out, const float *inp, const float *w, int N, int IC, int OC) {
    matmul_forward_f32(out, rounded(m, m->a, inp, (size_t)N * IC), rounded(m, m->w, w, (size_t)OC * IC), N, IC, OC);
    if (m->round_out)
        for (size_t i = 0; i < (size_t)N * OC; i++) out[i] = m->round(out[i]);
}

void mixed_matmul_backward(const MixedMM *m, float *dinp, float *dw, const float *dout, const float *inp,
                           const float *w, int N, int IC, int OC) {
    const size_t NI = (size_t)N * IC;
    const float *d = rounded(m, m->d, dout, (size_t)N * OC), *a = rounded(m, m->a, inp, NI);
    const float *b = rounded(m, m->w, w, (size_t)OC * IC);
    memset(m->t, 0, NI * sizeof(float));
    matmul_backward_f32(m->t, dw, d, a, b, N, IC, OC);
    for (size_t i = 0; i < NI; i++) dinp[i] += m->round_out ? m->round(m->t[i]) : m->t[i];
}
