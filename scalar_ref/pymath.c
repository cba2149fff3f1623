#include "pymath.h"

#include <math.h>

static double (*volatile libm_pow)(double, double) = pow;

static int is_odd_integer(double y) { return fmod(fabs(y), 2.0) == 1.0; }

double py_pow(double x, double y) {
    if (y == 0) return 1.0;
    if (isnan(x)) return x;
    if (isnan(y)) return x == 1.0 ? 1.0 : y;
    if (isinf(y)) {
        x = fabs(x);
        if (x == 1.0) return 1.0;
        if ((y > 0.0) == (x > 1.0)) return fabs(y);
        return 0.0;
    }
    if (isinf(x)) {
        int odd = is_odd_integer(y);
        if (y > 0.0) return odd ? x : fabs(x);
        return odd ? copysign(0.0, x) : 0.0;
    }
    if (x == 0.0) {
        // CPython raises ZeroDivisionError for a negative y; we return inf and
        // let the caller's non-finite check report it.
        if (y < 0.0) return HUGE_VAL;
        return is_odd_integer(y) ? x : 0.0;
    }
    int negate = 0;
    if (x < 0.0) {
        if (y != floor(y)) return NAN;  // CPython would return a complex number
        x = -x;
        negate = is_odd_integer(y);
    }
    if (x == 1.0) return negate ? -1.0 : 1.0;
    double r = libm_pow(x, y);
    return negate ? -r : r;
}
