// CPython's float arithmetic where it is not plain IEEE: `x ** y`.
#ifndef SCALAR_PYMATH_H
#define SCALAR_PYMATH_H

// x ** y for floats as CPython's float_pow computes it: its special cases
// (y == 0, x == 1, x == 0, negative x with an integral y) and otherwise the C
// library's pow(). Every `**` of the original goes through here. pow is called
// through a pointer the compiler cannot see through, so a literal exponent is
// never folded into 1/x, x*x or sqrt(x), which differ from glibc's pow in the
// last bit for some x.
double py_pow(double x, double y);

#endif

// x ** 2.0 and x ** 0.5, bit-identical to py_pow(x, 2.0) and py_pow(x, 0.5)
// but mostly without calling pow(): the correctly rounded x*x (or sqrt(x)) is
// returned when it lies within 0.4 ulp of the exact result, where glibc's pow,
// whose documented worst-case error is 0.54 ulp, cannot round the other way;
// otherwise (and for zero, subnormal, huge and power-of-two results) this
// calls py_pow. tests/test_pymath.c checks both against py_pow.
double py_pow2(double x);
double py_pow_half(double x);
