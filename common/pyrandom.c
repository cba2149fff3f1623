#include "pyrandom.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MT_N 624
#define MT_M 397

static void init_genrand(PyRandom *r, uint32_t s) {
    r->mt[0] = s;
    for (int i = 1; i < MT_N; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->mti = MT_N;
}

// The reference init_by_array, as CPython's _randommodule.c uses it.
void pyrandom_seed_words(PyRandom *r, const uint32_t *key, size_t n_words) {
    init_genrand(r, 19650218u);
    size_t i = 1, j = 0;
    size_t k = MT_N > n_words ? MT_N : n_words;
    for (; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] +
                   (uint32_t)j;
        i++;
        j++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i = 1;
        }
        if (j >= n_words) j = 0;
    }
    for (k = MT_N - 1; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i = 1;
        }
    }
    r->mt[0] = 0x80000000u;  // MSB is 1, assuring a non-zero initial array
    r->mti = MT_N;
    r->has_gauss_next = 0;
    r->gauss_next = 0.0;
}

void pyrandom_seed(PyRandom *r, uint64_t n) {
    uint32_t key[2] = {(uint32_t)n, (uint32_t)(n >> 32)};
    pyrandom_seed_words(r, key, key[1] ? 2 : 1);
}

int pyrandom_seed_text(PyRandom *r, const char *s) {
    if (!s) return -1;
    if (*s == '-' || *s == '+') s++;  // CPython seeds with abs(n)
    size_t len = strlen(s);
    if (len == 0) return -1;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)s[i])) return -1;
    // Base-10 text to base-2^32 words, least significant first.
    size_t cap = len / 9 + 2, n = 1;
    uint32_t *w = xcalloc(cap, sizeof *w);
    for (size_t i = 0; i < len; i++) {
        uint64_t carry = (uint64_t)(s[i] - '0');
        for (size_t k = 0; k < n; k++) {
            uint64_t v = (uint64_t)w[k] * 10u + carry;
            w[k] = (uint32_t)v;
            carry = v >> 32;
        }
        if (carry) w[n++] = (uint32_t)carry;
    }
    while (n > 1 && w[n - 1] == 0) n--;  // CPython uses as many words as the value needs
    pyrandom_seed_words(r, w, n);
    free(w);
    return 0;
}

uint32_t pyrandom_u32(PyRandom *r) {
    static const uint32_t mag01[2] = {0x0u, 0x9908b0dfu};
    uint32_t y;
    if (r->mti >= MT_N) {
        int kk;
        for (kk = 0; kk < MT_N - MT_M; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + MT_M] ^ (y >> 1) ^ mag01[y & 0x1u];
        }
        for (; kk < MT_N - 1; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 0x1u];
        }
        y = (r->mt[MT_N - 1] & 0x80000000u) | (r->mt[0] & 0x7fffffffu);
        r->mt[MT_N - 1] = r->mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 0x1u];
        r->mti = 0;
    }
    y = r->mt[r->mti++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

double pyrandom_random(PyRandom *r) {
    uint32_t a = pyrandom_u32(r) >> 5, b = pyrandom_u32(r) >> 6;
    return ((double)a * 67108864.0 + (double)b) * (1.0 / 9007199254740992.0);
}

// CPython fills 32-bit words least significant first; the last word drawn
// keeps only its top bits.
uint64_t pyrandom_getrandbits(PyRandom *r, int k) {
    if (k <= 32) return pyrandom_u32(r) >> (32 - k);
    uint64_t lo = pyrandom_u32(r);
    uint64_t hi = pyrandom_u32(r) >> (64 - k);
    return lo | (hi << 32);
}

uint64_t pyrandom_randbelow(PyRandom *r, uint64_t n) {
    int k = 0;
    for (uint64_t t = n; t; t >>= 1) k++;  // n.bit_length()
    uint64_t v = pyrandom_getrandbits(r, k);
    while (v >= n) v = pyrandom_getrandbits(r, k);
    return v;
}

void pyrandom_shuffle(PyRandom *r, void *x, size_t n, size_t size) {
    unsigned char *base = x, tmp[64];
    if (size > sizeof tmp) die(EXIT_MISMATCH, "pyrandom_shuffle: element of %zu bytes too large", size);
    for (size_t i = n; i-- > 1;) {
        size_t j = (size_t)pyrandom_randbelow(r, (uint64_t)i + 1);
        memcpy(tmp, base + i * size, size);
        memcpy(base + i * size, base + j * size, size);
        memcpy(base + j * size, tmp, size);
    }
}

double pyrandom_gauss(PyRandom *r, double mu, double sigma) {
    double z;
    if (r->has_gauss_next) {
        z = r->gauss_next;
        r->has_gauss_next = 0;
    } else {
        const double twopi = 2.0 * M_PI;
        double x2pi = pyrandom_random(r) * twopi;
        double g2rad = sqrt(-2.0 * log(1.0 - pyrandom_random(r)));
        z = cos(x2pi) * g2rad;
        r->gauss_next = sin(x2pi) * g2rad;
        r->has_gauss_next = 1;
    }
    return mu + z * sigma;
}

size_t pyrandom_choice_weighted(PyRandom *r, const double *w, size_t n) {
    // cum_weights = list(accumulate(weights)); total = cum_weights[-1] + 0.0
    double *cum = xmalloc(n * sizeof *cum);
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        acc = i ? acc + w[i] : w[i];
        cum[i] = acc;
    }
    // checked before the draw, as CPython checks them (it raises ValueError)
    const double total = cum[n - 1] + 0.0;
    if (!(total > 0.0) && !isnan(total))
        die(EXIT_MISMATCH, "sampling: random.choices: Total of weights must be greater than zero (the original "
            "raises ValueError here)");
    if (!isfinite(total))
        die(EXIT_MISMATCH, "sampling: random.choices: Total of weights must be finite: the probabilities are not "
            "finite numbers (at a tiny --temperature, logits / temperature overflow); the original raises "
            "ValueError here");
    double x = pyrandom_random(r) * total;
    // bisect_right(cum, x, 0, n - 1)
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (x < cum[mid]) hi = mid;
        else lo = mid + 1;
    }
    free(cum);
    return lo;
}
