// The mixed-precision recipe's matrix products (docs/mixed_precision.md):
// the plain-C reference in tensor_gpu/cpu/mixed.c, which the CPU engine runs
// for --precision bf16, fp16 and tf32 and which the CUDA mixed-precision
// kernels are to be checked against, product by product. Shapes as the
// matmul of tensor_gpu/layers.h: inp (N,IC), w (OC,IC) row-major, out (N,OC).
#ifndef TENSOR_GPU_MIXED_H
#define TENSOR_GPU_MIXED_H

#include <stddef.h>

#include "common/engine.h"

typedef struct {
    float (*round)(float);    // to the low precision, nearest even (tensor_gpu/lowp.h)
    int round_out;            // bf16/fp16: a product's activation output is stored rounded
    float *a, *w, *d, *t;     // scratch: rounded input, weight, output gradient; dinp
} MixedMM;

// For precision p (PREC_BF16, PREC_FP16 or PREC_TF32): the rounding and
// scratch for products of at most `rows` rows, `width` columns of an input or
// output and `weights` weight elements. round: NULL for p's own (test-only
// otherwise: another rounding, e.g. truncation or none).
void mixed_mm_init(MixedMM *m, Precision p, size_t rows, size_t width, size_t weights, float (*round)(float));
void mixed_mm_free(MixedMM *m);

// out = rnd(inp) @ rnd(w)^T with fp32 sums; bf16/fp16: out rounded.
void mixed_matmul_forward(const MixedMM *m, float *out, const float *inp, const float *w, int N, int IC, int OC);
// dw += rnd(dout)^T @ rnd(inp) with fp32 sums (dw stays fp32: the master
// gradient); dinp += rnd(rnd(dout) @ rnd(w)) (bf16/fp16; tf32 unrounded),
// the product rounded on its own before it is added in fp32.
void mixed_matmul_backward(const MixedMM *m, float *dinp, float *dw, const float *dout, const float *inp,
                           const float *w, int N, int IC, int OC);

#endif
