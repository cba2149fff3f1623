#include <math.h>
#include <stdint.h>
#include <string.h>

#include "pymath.h"

// Results within this many ulps of the exact value are the only double that
// glibc's pow (worst-case error 0.54 ulp) can return.
#define SAFE_ULPS 0.45

// ulp(r) for a positive normal r that is not a power of two, or 0 when r is
// outside the range where the shortcut is safe (tiny, huge, power of two: the
// ulp below a power of two is half as large).
static double safe_ulp(double r) {
    uint64_t b;
    memcpy(&b, &r, sizeof b);
    uint64_t e = (b >> 52) & 0x7ff;
    uint64_t mant = b & ((1ull << 52) - 1);
    if (e < 160 || e > 1800 || mant == 0) return 0.0;
    uint64_t u = (e - 52) << 52;
    double ulp;
    memcpy(&ulp, &u, sizeof ulp);
    return ulp;
}

// Dekker's exact product: a*b = p + err exactly (no FMA needed, no overflow
// in the range safe_ulp admits).
static inline double two_product_err(double a, double b, double p) {
    const double split = 134217729.0;  // 2^27 + 1
    double ca = split * a, cb = split * b;
    double ah = ca - (ca - a), al = a - ah;
    double bh = cb - (cb - b), bl = b - bh;
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl;
}

double py_pow2(double x) {
    double r = x * x;
    double ulp = safe_ulp(r);
    if (ulp != 0.0 && fabs(two_product_err(x, x, r)) < SAFE_ULPS * ulp) return r;
    return py_pow(x, 2.0);
}

double py_pow_half(double x) {
    if (x > 0) {
        double r = sqrt(x);
        double ulp = safe_ulp(r);
        if (ulp != 0.0) {
            // r*r = p + pe exactly; p - x is exact (Sterbenz). sqrt(x) differs
            // from r by (r*r - x) / (r + sqrt(x)), about (r*r - x) / 2r.
            double p = r * r;
            double res = (p - x) + two_product_err(r, r, p);
            if (fabs(res) < SAFE_ULPS * ulp * 2.0 * r * (1.0 - 0x1p-30)) return r;
        }
    }
    return py_pow(x, 0.5);
}
