// Rounding a float to the low-precision formats of the mixed-precision
// recipe (docs/mixed_precision.md): bf16 (8-bit exponent, 7-bit mantissa),
// fp16 (IEEE binary16: 5-bit exponent, 10-bit mantissa, largest 65504) and
// tf32 (8-bit exponent, 10-bit mantissa). Each returns the nearest value of
// the format, ties to even (IEEE round-to-nearest-even, what
// __float2bfloat16_rn and __float2half_rn do), as a float: the recipe keeps
// low-precision values in float buffers, exactly representable.
//   NaN stays NaN (a quiet NaN of the same sign; never rounded to inf).
//   +-inf stays +-inf; a finite value past the format's largest one by half
//   an ulp or more becomes +-inf (fp16: |x| >= 65520).
//   Subnormals round like any value (fp16: to a multiple of 2^-24, so
//   |x| <= 2^-25 becomes +-0); the sign of zero is kept.
// Plain C99 with no library calls, so that a CUDA kernel can include this
// header and round with the same arithmetic (LOWP_FN adds __host__
// __device__ under nvcc).
#ifndef TENSOR_GPU_LOWP_H
#define TENSOR_GPU_LOWP_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define LOWP_FN static inline __host__ __device__
#else
#define LOWP_FN static inline
#endif

LOWP_FN uint32_t lowp_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

LOWP_FN float lowp_float(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

// Keep the top 32-drop bits of x, rounded to nearest, ties to even. Adding
// half an ulp minus one, plus the kept part's last bit, carries into the
// kept bits exactly when the dropped part is above half, or exactly half
// with an odd kept part; a carry out of the mantissa raises the exponent
// (the largest finite values become inf, as they should).
LOWP_FN float lowp_round_bits(float x, int drop) {
    uint32_t u = lowp_bits(x);
    const uint32_t mask = ~((1u << drop) - 1u);
    if ((u & 0x7f800000u) == 0x7f800000u) {                    // inf or NaN
        if (u & 0x007fffffu) return lowp_float((u & mask) | 0x00400000u);  // quiet NaN, payload cut
        return x;
    }
    u += ((1u << (drop - 1)) - 1u) + ((u >> drop) & 1u);
    return lowp_float(u & mask);
}

LOWP_FN float round_bf16(float x) { return lowp_round_bits(x, 16); }
LOWP_FN float round_tf32(float x) { return lowp_round_bits(x, 13); }

LOWP_FN float round_fp16(float x) {
    const uint32_t u = lowp_bits(x), sign = u & 0x80000000u;
    const float a = lowp_float(u & 0x7fffffffu);               // |x|
    if (a != a) return lowp_round_bits(x, 13);                  // NaN
    if (a < 0x1p-14f) {
        // fp16 subnormals are multiples of 2^-24, the ulp of [0.5, 1): the
        // float addition rounds |x| there (to nearest even), the subtraction
        // is exact
        volatile float t = a + 0.5f;                            // volatile: no reassociation
        const float r = t - 0.5f;
        return lowp_float(lowp_bits(r) | sign);
    }
    // normal range: 10 mantissa bits, as tf32; then fp16's smaller exponent
    const float r = lowp_round_bits(a, 13);
    return lowp_float((r > 65504.0f ? 0x7f800000u : lowp_bits(r)) | sign);
}

#endif
