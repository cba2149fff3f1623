// The mixed-precision recipe's rounding (tensor_gpu/lowp.h) against values
// worked out by hand from the formats: bf16 keeps 8 significant bits, tf32
// and fp16 11; ties go to the even neighbour; fp16 overflows to inf from
// 65520 and has subnormals down to 2^-24. Every rounding is also checked
// against an independent reference (nearest by exhaustive comparison of the
// two neighbours, in double) on many random floats.
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "tensor_gpu/lowp.h"

static uint32_t bits(float x) { return lowp_bits(x); }
static float from_bits(uint32_t u) { return lowp_float(u); }

// a and b are the same float, bit for bit (so -0 is not +0)
#define EXPECT_SAME(a, b, ...) cr_expect(bits(a) == bits(b), __VA_ARGS__)

Test(lowp, bf16_rounds_to_nearest_with_ties_to_even) {
    // bf16 around 1: spacing 2^-7
    const float u = 0x1p-7f;
    EXPECT_SAME(round_bf16(1.0f), 1.0f, "exact");
    EXPECT_SAME(round_bf16(1.0f + u / 2), 1.0f, "a tie goes to the even 1.0 (mantissa 0)");
    EXPECT_SAME(round_bf16(1.0f + 3 * u / 2), 1.0f + 2 * u, "a tie goes to the even 1+2u, up");
    EXPECT_SAME(round_bf16(1.0f + u / 2 + 0x1p-20f), 1.0f + u, "just above half rounds up (truncation would not)");
    EXPECT_SAME(round_bf16(1.0f + u / 2 - 0x1p-20f), 1.0f, "just below half rounds down");
    EXPECT_SAME(round_bf16(-(1.0f + u / 2 + 0x1p-20f)), -(1.0f + u), "negative values round in magnitude");
    // 1/3 = 0x3eaaaaab: the dropped half 0xaaab > 0x8000, so up to 0x3eab
    EXPECT_SAME(round_bf16(1.0f / 3.0f), from_bits(0x3eab0000u), "1/3 rounds up, to 0.333984375");
    EXPECT_SAME(round_bf16(3.14159265f), 3.140625f, "pi (0x40490fdb) rounds down to 0x4049");
    // the carry out of the mantissa raises the exponent
    EXPECT_SAME(round_bf16(from_bits(0x3fffffffu)), 2.0f, "1.99999988 rounds up to 2");
}

Test(lowp, bf16_specials_subnormals_and_overflow) {
    EXPECT_SAME(round_bf16(0.0f), 0.0f, "+0");
    EXPECT_SAME(round_bf16(-0.0f), -0.0f, "-0 keeps its sign");
    EXPECT_SAME(round_bf16(INFINITY), INFINITY, "inf");
    EXPECT_SAME(round_bf16(-INFINITY), -INFINITY, "-inf");
    float n = round_bf16(from_bits(0x7f800001u));   // a NaN whose payload lies only in the dropped bits
    cr_expect(isnan(n), "a NaN stays NaN (truncating it would give inf), got %08x", bits(n));
    cr_expect(isnan(round_bf16(-NAN)) && signbit(round_bf16(-NAN)), "-NaN stays a negative NaN");
    // largest bf16: 0x7f7f0000 = 3.3895e38; half an ulp above it is the tie
    // with 2^128 (even): inf
    EXPECT_SAME(round_bf16(from_bits(0x7f7f7fffu)), from_bits(0x7f7f0000u), "below the tie: the largest bf16");
    EXPECT_SAME(round_bf16(from_bits(0x7f7f8000u)), INFINITY, "the tie with 2^128 overflows to inf");
    EXPECT_SAME(round_bf16(3.4028235e38f), INFINITY, "FLT_MAX rounds to inf");
    EXPECT_SAME(round_bf16(-3.4028235e38f), -INFINITY, "-FLT_MAX rounds to -inf");
    // subnormals: bf16 has float's exponent, so its subnormals are
    // multiples of 2^-133
    EXPECT_SAME(round_bf16(0x1p-149f), 0.0f, "the smallest float subnormal is below half of 2^-133");
    EXPECT_SAME(round_bf16(0x1p-133f), 0x1p-133f, "the smallest bf16 subnormal is exact");
    EXPECT_SAME(round_bf16(0x1p-134f), 0.0f, "half of it ties to even 0");
    EXPECT_SAME(round_bf16(0x1p-134f + 0x1p-149f), 0x1p-133f, "just above half rounds up");
    EXPECT_SAME(round_bf16(0x3p-134f), 0x1p-132f, "1.5 x 2^-133 ties to even 2 x 2^-133");
}

Test(lowp, tf32_keeps_ten_mantissa_bits) {
    const float u = 0x1p-10f;
    EXPECT_SAME(round_tf32(1.0f + u / 2), 1.0f, "tie to even, down");
    EXPECT_SAME(round_tf32(1.0f + 3 * u / 2), 1.0f + 2 * u, "tie to even, up");
    EXPECT_SAME(round_tf32(1.0f + u / 2 + 0x1p-23f), 1.0f + u, "above half rounds up");
    EXPECT_SAME(round_tf32(1.0f / 3.0f), from_bits(0x3eaaa000u), "1/3: dropped 0xaab < 0x1000, down");
    EXPECT_SAME(round_tf32(0x1.002p100f), 0x1p100f, "a tie at 2^100 goes to even (float's exponent range)");
    EXPECT_SAME(round_tf32(0x1.006p100f), 0x1.008p100f, "and up to even");
    cr_expect(isfinite(round_tf32(1e38f)), "tf32 has float's range");
    EXPECT_SAME(round_tf32(3.4028235e38f), INFINITY, "FLT_MAX rounds to inf");
    cr_expect(isnan(round_tf32(from_bits(0x7f800001u))), "NaN stays NaN");
    EXPECT_SAME(round_tf32(-0.0f), -0.0f, "-0");
    EXPECT_SAME(round_tf32(0x1p-136f), 0x1p-136f, "the smallest tf32 subnormal, 2^-136, is exact");
    EXPECT_SAME(round_tf32(0x1p-137f), 0.0f, "half of it ties to 0");
}

Test(lowp, fp16_range_overflow_and_subnormals) {
    const float u = 0x1p-10f;
    EXPECT_SAME(round_fp16(1.0f + u / 2), 1.0f, "tie to even, down");
    EXPECT_SAME(round_fp16(1.0f + 3 * u / 2), 1.0f + 2 * u, "tie to even, up");
    EXPECT_SAME(round_fp16(0.1f), 0.0999755859375f, "0.1 is 0x2e66 in fp16");
    EXPECT_SAME(round_fp16(65504.0f), 65504.0f, "the largest fp16");
    EXPECT_SAME(round_fp16(65519.0f), 65504.0f, "below the tie: the largest fp16");
    EXPECT_SAME(round_fp16(65520.0f), INFINITY, "65520 ties with 65536 (even): overflows to inf");
    EXPECT_SAME(round_fp16(-70000.0f), -INFINITY, "-inf");
    EXPECT_SAME(round_fp16(1e30f), INFINITY, "far out of range: inf");
    EXPECT_SAME(round_fp16(INFINITY), INFINITY, "inf");
    cr_expect(isnan(round_fp16(NAN)), "NaN stays NaN");
    cr_expect(isnan(round_fp16(from_bits(0xff800001u))), "a NaN with a payload only in the dropped bits stays NaN");
    // the smallest normal is 2^-14; subnormals are multiples of 2^-24
    EXPECT_SAME(round_fp16(0x1p-14f), 0x1p-14f, "the smallest normal");
    EXPECT_SAME(round_fp16(0x1p-24f), 0x1p-24f, "the smallest subnormal");
    EXPECT_SAME(round_fp16(0x1p-25f), 0.0f, "half the smallest subnormal ties to even 0");
    EXPECT_SAME(round_fp16(-0x1p-25f), -0.0f, "and keeps its sign");
    EXPECT_SAME(round_fp16(0x1p-25f + 0x1p-40f), 0x1p-24f, "above half rounds up");
    EXPECT_SAME(round_fp16(0x3p-25f), 0x1p-23f, "1.5 x 2^-24 ties to even 2 x 2^-24");
    EXPECT_SAME(round_fp16(0x5p-25f), 0x1p-23f, "2.5 x 2^-24 ties to even 2 x 2^-24");
    EXPECT_SAME(round_fp16(1e-9f), 0.0f, "underflow to 0");
    EXPECT_SAME(round_fp16(0x1.ff8p-15f), 0x1.ff8p-15f, "the largest subnormal, 1023 x 2^-24, is exact");
    EXPECT_SAME(round_fp16(0x1.ffcp-15f), 0x1p-14f, "between it and 2^-14 (a tie): to even 2^-14");
}

// The nearest value of a format with `m` mantissa bits, exponent range
// [emin, emax] (normal), by comparing the two neighbours in double; ties to
// the one with an even last mantissa bit. Independent of lowp.h's bit tricks.
static double nearest_ref(double x, int m, int emin, int emax) {
    if (isnan(x) || isinf(x) || x == 0) return x;
    double a = fabs(x);
    int e;
    frexp(a, &e);                                // a = f * 2^e, f in [0.5, 1)
    int ex = e - 1;                              // a in [2^ex, 2^(ex+1))
    if (ex < emin) ex = emin;                    // subnormal: the spacing of the smallest normals
    const double ulp = ldexp(1.0, ex - m);
    const double lo = floor(a / ulp) * ulp, hi = lo + ulp;
    double r;
    if (a - lo < hi - a) r = lo;
    else if (hi - a < a - lo) r = hi;
    else r = fmod(lo / ulp, 2.0) == 0 ? lo : hi;
    const double maxv = ldexp(2.0 - ldexp(1.0, -m), emax);
    if (r > maxv) r = INFINITY;
    return copysign(r, x);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t next_u32(void) {   // splitmix64
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

Test(lowp, random_floats_match_the_nearest_neighbour) {
    long bad[3] = {0};
    for (int i = 0; i < 300000; i++) {
        uint32_t u = next_u32();
        if (i % 3 == 1) u = (u & 0x807fffffu) | ((uint32_t)(100 + next_u32() % 60) << 23);   // |x| near 1
        if (i % 3 == 2) u = (u & 0x807fffffu) | ((uint32_t)(95 + next_u32() % 25) << 23);    // fp16's subnormals
        const float x = from_bits(u);
        if (isnan(x)) continue;
        const float got[3] = {round_bf16(x), round_tf32(x), round_fp16(x)};
        const double want[3] = {nearest_ref(x, 7, -126, 127), nearest_ref(x, 10, -126, 127),
                                nearest_ref(x, 10, -14, 15)};
        for (int k = 0; k < 3; k++)
            if (!((double)got[k] == want[k] && !signbit(got[k]) == !signbit(want[k])) && bad[k]++ < 3)
                cr_log_error("%s(%a) = %a, nearest even is %a", k == 0 ? "bf16" : k == 1 ? "tf32" : "fp16",
                             (double)x, (double)got[k], want[k]);
    }
    cr_expect(bad[0] == 0 && bad[1] == 0 && bad[2] == 0, "mismatches: bf16 %ld, tf32 %ld, fp16 %ld", bad[0], bad[1],
              bad[2]);
}

Test(lowp, rounding_is_idempotent_and_monotone) {
    float prev[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (float x = -3.0f; x <= 3.0f; x += 0.0009765f) {
        const float r[3] = {round_bf16(x), round_tf32(x), round_fp16(x)};
        EXPECT_SAME(round_bf16(r[0]), r[0], "bf16 of a bf16 value is itself (%a)", (double)x);
        EXPECT_SAME(round_tf32(r[1]), r[1], "tf32 idempotent (%a)", (double)x);
        EXPECT_SAME(round_fp16(r[2]), r[2], "fp16 idempotent (%a)", (double)x);
        for (int k = 0; k < 3; k++) {
            cr_expect(r[k] >= prev[k], "monotone (%d at %a)", k, (double)x);
            prev[k] = r[k];
        }
    }
}
