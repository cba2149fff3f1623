// CPython 3.11's random module, reimplemented in common/pyrandom.c, against
// the test vectors of SPEC.md (each from a fresh random.seed(42)).
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "common/dataset.h"
#include "common/model.h"
#include "common/pyrandom.h"
#include "common/settings.h"
#include "helpers.h"

static PyRandom seeded(const char *seed) {
    PyRandom r;
    cr_assert_eq(pyrandom_seed_text(&r, seed), 0);
    return r;
}

Test(pyrandom, random_vectors) {
    PyRandom r = seeded("42");
    const double want[3] = {0.6394267984578837, 0.025010755222666936, 0.27502931836911926};
    for (int i = 0; i < 3; i++) cr_expect_eq(pyrandom_random(&r), want[i], "random() #%d", i);
}

Test(pyrandom, getrandbits_vectors) {
    PyRandom r = seeded("42");
    const uint64_t want[3] = {2746317213u, 478163327u, 107420369u};
    for (int i = 0; i < 3; i++) cr_expect_eq(pyrandom_getrandbits(&r, 32), want[i]);
}

Test(pyrandom, gauss_vectors_use_the_cached_second_value) {
    PyRandom r = seeded("42");
    const double want[3] = {-0.14409032957792836, -0.1729036003315193, -0.11131586156766246};
    for (int i = 0; i < 3; i++) cr_expect_eq(pyrandom_gauss(&r, 0.0, 1.0), want[i], "gauss #%d", i);
    // seeding clears the cache: the first value again
    pyrandom_seed(&r, 42);
    cr_expect_eq(pyrandom_gauss(&r, 0.0, 1.0), want[0]);
}

Test(pyrandom, shuffle_vector) {
    PyRandom r = seeded("42");
    int x[10];
    for (int i = 0; i < 10; i++) x[i] = i;
    pyrandom_shuffle(&r, x, 10, sizeof x[0]);
    const int want[10] = {7, 3, 2, 8, 5, 6, 9, 4, 0, 1};
    for (int i = 0; i < 10; i++) cr_expect_eq(x[i], want[i], "x[%d]", i);
}

Test(pyrandom, weighted_choices_vector) {
    PyRandom r = seeded("42");
    const double w[4] = {1, 2, 3, 4};
    const size_t want[5] = {3, 0, 1, 1, 3};
    for (int i = 0; i < 5; i++) cr_expect_eq(pyrandom_choice_weighted(&r, w, 4), want[i], "#%d", i);
}

Test(pyrandom, multi_word_seed) {
    PyRandom r = seeded("123456789012345678901234567890");
    cr_expect_eq(pyrandom_random(&r), 0.7275084571578186);
}

Test(pyrandom, seed_uses_abs_and_zero_is_one_word) {
    PyRandom a = seeded("-42"), b = seeded("42");
    cr_expect_eq(pyrandom_random(&a), pyrandom_random(&b));
    PyRandom z = seeded("0"), z2;
    uint32_t key0 = 0;
    pyrandom_seed_words(&z2, &key0, 1);
    cr_expect_eq(pyrandom_u32(&z), pyrandom_u32(&z2));
    // leading zeros do not add key words
    PyRandom c = seeded("00042");
    PyRandom d = seeded("42");
    cr_expect_eq(pyrandom_u32(&c), pyrandom_u32(&d));
}

Test(pyrandom, seed_text_rejects_non_integers) {
    PyRandom r;
    cr_expect_eq(pyrandom_seed_text(&r, ""), -1);
    cr_expect_eq(pyrandom_seed_text(&r, "4x2"), -1);
    cr_expect_eq(pyrandom_seed_text(&r, "1.5"), -1);
    cr_expect_eq(pyrandom_seed_text(&r, "-"), -1);
}

Test(pyrandom, randbelow_stays_below_and_covers) {
    PyRandom r = seeded("7");
    int seen[5] = {0};
    for (int i = 0; i < 1000; i++) {
        uint64_t v = pyrandom_randbelow(&r, 5);
        cr_assert_lt(v, 5);
        seen[v]++;
    }
    for (int i = 0; i < 5; i++) cr_expect_gt(seen[i], 100);
    cr_expect_eq(pyrandom_randbelow(&r, 1), 0);
}

// names.txt, seed 42: the shuffled documents and the initial weights.
Test(pyrandom, names_shuffle_and_init) {
    Dataset d;
    char err[256];
    cr_assert_eq(dataset_load(&d, th_names_path(), err, sizeof err), 0, "%s", err);
    PyRandom r = seeded("42");
    dataset_shuffle(&d, &r);
    const char *want[5] = {"yuheng", "diondre", "xavien", "jori", "juanluis"};
    for (int i = 0; i < 6; i++) {
        int k = i < 5 ? i : d.n_docs - 1;
        const char *w = i < 5 ? want[i] : "yovani";
        int len;
        const int *tok = dataset_doc(&d, k, &len);
        char s[64] = {0};
        for (int j = 0; j < len && j < 63; j++) s[j] = (char)d.vocab[tok[j]];
        cr_expect_str_eq(s, w, "docs[%d]", k);
    }
    Settings st;
    settings_defaults(&st);
    ModelShape m = model_shape(&st, d.vocab_size);
    ParamLayout L;
    layout_init(&L, &m);
    cr_assert_eq(L.n_params, 4192);
    double *p = malloc(L.n_params * sizeof *p);
    params_init(&L, &r, st.init_std, p);
    cr_expect_eq(p[0], -0.04273180935726127);
    cr_expect_eq(p[1], 0.07696138795865093);
    cr_expect_eq(p[2], 0.10844210106107166);
    cr_expect_eq(p[4191], -0.09496111892676082);
    double sum = 0;
    for (size_t i = 0; i < L.n_params; i++) sum += p[i];
    cr_expect_eq(sum, 4.289341802239092);
    free(p);
    layout_free(&L);
    dataset_free(&d);
}

// random.choices raises ValueError on weights whose total is not finite or
// not > 0: the port ends the run (exit 1) rather than draw from them.
Test(pyrandom, choices_refuses_non_finite_weights, .exit_code = 1) {
    PyRandom r;
    pyrandom_seed(&r, 42);
    const double w[3] = {0.5, NAN, 0.5};
    pyrandom_choice_weighted(&r, w, 3);
}

Test(pyrandom, choices_refuses_zero_weights, .exit_code = 1) {
    PyRandom r;
    pyrandom_seed(&r, 42);
    const double w[2] = {0.0, 0.0};
    pyrandom_choice_weighted(&r, w, 2);
}
