// CPython 3.11's `random` module in C: MT19937 plus the exact derivations the
// original uses (random, getrandbits, _randbelow, shuffle, gauss, choices).
// Every function reproduces CPython's arithmetic so the bits match.
#ifndef COMMON_PYRANDOM_H
#define COMMON_PYRANDOM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t mt[624];
    int mti;
    int has_gauss_next;   // gauss() caches its second value
    double gauss_next;
} PyRandom;

// random.seed(n) for an integer n of any size given as decimal text ("-42" too:
// CPython uses abs(n)). Returns 0, or -1 if the text is not an integer.
int pyrandom_seed_text(PyRandom *r, const char *decimal);
// random.seed(n) for a small non-negative integer.
void pyrandom_seed(PyRandom *r, uint64_t n);
// init_by_array on explicit 32-bit key words, least significant first.
void pyrandom_seed_words(PyRandom *r, const uint32_t *key, size_t n_words);

uint32_t pyrandom_u32(PyRandom *r);                        // genrand_uint32
double pyrandom_random(PyRandom *r);                       // random.random()
uint64_t pyrandom_getrandbits(PyRandom *r, int k);         // 1 <= k <= 64
uint64_t pyrandom_randbelow(PyRandom *r, uint64_t n);      // n >= 1
// random.shuffle(x) on an array of n elements of `size` bytes each.
void pyrandom_shuffle(PyRandom *r, void *x, size_t n, size_t size);
double pyrandom_gauss(PyRandom *r, double mu, double sigma);
// random.choices(range(n), weights=w)[0]; weights whose total is not > 0
// or not finite end the program (exit 1) as CPython raises ValueError.
size_t pyrandom_choice_weighted(PyRandom *r, const double *w, size_t n);

#endif
