// The scalar autograd engine: each operation's local gradients, CPython's
// arithmetic where it is not plain IEEE, and the backward order.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/dataset.h"
#include "common/model.h"
#include "common/pyrandom.h"
#include "common/settings.h"
#include "scalar_ref/autograd.h"
#include "scalar_ref/gpt.h"
#include "scalar_ref/pymath.h"

typedef enum { OP_ADD, OP_MUL, OP_SQUARE, OP_ADDC, OP_MULC, OP_POW, OP_EXP, OP_LOG, OP_RELU } Op;

// out = op(x0, x1) on leaves x0, x1; returns out's value and fills the
// leaves' gradients after backward.
static double run_op(Op op, double a, double b, double k, double *ga, double *gb) {
    Graph g;
    double init[2] = {a, b};
    graph_init(&g, init, 2);
    V out = 0;
    switch (op) {
    case OP_ADD: out = g_add(&g, 0, 1); break;
    case OP_MUL: out = g_mul(&g, 0, 1); break;
    case OP_SQUARE: out = g_mul(&g, 0, 0); break;
    case OP_ADDC: out = g_addc(&g, 0, k); break;
    case OP_MULC: out = g_mulc(&g, 0, k); break;
    case OP_POW: out = g_pow(&g, 0, k); break;
    case OP_EXP: out = g_exp(&g, 0); break;
    case OP_LOG: out = g_log(&g, 0); break;
    case OP_RELU: out = g_relu(&g, 0); break;
    }
    graph_backward(&g, out);
    double v = g.n[out].data;
    *ga = g.n[0].grad;
    *gb = g.n[1].grad;
    graph_free(&g);
    return v;
}

static void check_fd(Op op, double a, double b, double k, const char *what) {
    double ga, gb, t1, t2;
    run_op(op, a, b, k, &ga, &gb);
    const double h = 1e-6;
    double fa = (run_op(op, a + h, b, k, &t1, &t2) - run_op(op, a - h, b, k, &t1, &t2)) / (2 * h);
    double fb = (run_op(op, a, b + h, k, &t1, &t2) - run_op(op, a, b - h, k, &t1, &t2)) / (2 * h);
    cr_expect(fabs(ga - fa) <= 1e-6 * (1 + fabs(fa)), "%s: d/da %.17g vs finite difference %.17g", what, ga, fa);
    if (op == OP_ADD || op == OP_MUL)
        cr_expect(fabs(gb - fb) <= 1e-6 * (1 + fabs(fb)), "%s: d/db %.17g vs finite difference %.17g", what, gb, fb);
}

Test(autograd, local_gradients_match_finite_differences) {
    check_fd(OP_ADD, 0.3, -1.7, 0, "add");
    check_fd(OP_MUL, 0.3, -1.7, 0, "mul");
    check_fd(OP_SQUARE, -0.8, 0, 0, "x*x");
    check_fd(OP_ADDC, 0.3, 0, 2.5, "add const");
    check_fd(OP_MULC, 0.3, 0, -2.5, "mul const");
    const double ks[] = {-1.0, -0.5, 0.5, 2.0, 3.0};
    for (int i = 0; i < 5; i++) check_fd(OP_POW, 1.37, 0, ks[i], "pow");
    check_fd(OP_EXP, -0.4, 0, 0, "exp");
    check_fd(OP_LOG, 0.6, 0, 0, "log");
    check_fd(OP_RELU, 0.6, 0, 0, "relu (positive)");
    check_fd(OP_RELU, -0.6, 0, 0, "relu (negative)");
}

Test(autograd, local_gradients_are_the_originals_exactly) {
    double ga, gb;
    // mul: (other.data, self.data); x*x accumulates x twice
    run_op(OP_MUL, 3.0, 5.0, 0, &ga, &gb);
    cr_expect_eq(ga, 5.0);
    cr_expect_eq(gb, 3.0);
    run_op(OP_SQUARE, 0.1, 0, 0, &ga, &gb);
    cr_expect_eq(ga, 0.1 + 0.1);
    // pow: k * x**(k-1) through pow(), not 1/x
    double x = 1.37;
    run_op(OP_POW, x, 0, -1.0, &ga, &gb);
    cr_expect_eq(ga, -1.0 * pow(x, -2.0));
    // log: 1/x as a true division; exp: exp(x) again
    run_op(OP_LOG, x, 0, 0, &ga, &gb);
    cr_expect_eq(ga, 1.0 / x);
    run_op(OP_EXP, x, 0, 0, &ga, &gb);
    cr_expect_eq(ga, exp(x));
    // relu at 0 passes no gradient (float(0 > 0) == 0)
    run_op(OP_RELU, 0.0, 0, 0, &ga, &gb);
    cr_expect_eq(ga, 0.0);
}

Test(autograd, sum_starts_from_integer_zero) {
    // sum([v]) is v + 0, which turns -0.0 into +0.0
    Graph g;
    double init[1] = {-0.0};
    graph_init(&g, init, 1);
    V leaf = 0;
    V s = g_sum(&g, &leaf, 1);
    cr_expect(!signbit(g.n[s].data), "sum([-0.0]) is +0.0 as in Python");
    graph_free(&g);
}

// pow(x, -1) differs from 1/x for some x: find one, and check that the graph
// and py_pow give pow's bits (the compiler must not fold the exponent).
Test(autograd, pow_is_not_folded_into_division) {
    double (*volatile libm_pow)(double, double) = pow;
    PyRandom r;
    pyrandom_seed(&r, 1);
    double x = 0;
    for (int i = 0; i < 1000000; i++) {
        double c = 0.5 + pyrandom_random(&r) * 30.0;
        if (libm_pow(c, -1.0) != 1.0 / c) {
            x = c;
            break;
        }
    }
    cr_assert_neq(x, 0, "found no x with pow(x,-1) != 1/x");
    cr_expect_eq(py_pow(x, -1.0), libm_pow(x, -1.0));
    Graph g;
    graph_init(&g, &x, 1);
    V p = g_pow(&g, 0, -1.0);
    cr_expect_eq(g.n[p].data, libm_pow(x, -1.0));
    cr_expect_neq(g.n[p].data, 1.0 / x);
    graph_free(&g);
}

Test(autograd, py_pow_follows_cpython_special_cases) {
    cr_expect_eq(py_pow(NAN, 0.0), 1.0);
    cr_expect_eq(py_pow(1.0, NAN), 1.0);
    cr_expect_eq(py_pow(-2.0, 2.0), 4.0);
    cr_expect_eq(py_pow(-2.0, 3.0), -8.0);
    cr_expect(isnan(py_pow(-8.0, 1.0 / 3.0)), "a negative base with a fractional exponent");
    cr_expect_eq(py_pow(0.0, 2.0), 0.0);
    cr_expect(!signbit(py_pow(-0.0, 2.0)), "(-0.0)**2 is +0.0");
    cr_expect(signbit(py_pow(-0.0, 3.0)), "(-0.0)**3 is -0.0");
    cr_expect(isinf(py_pow(0.0, -1.0)), "0**-1 (ZeroDivisionError in Python) is inf here");
    cr_expect_eq(py_pow(-1.0, 1e300), 1.0);
    cr_expect_eq(py_pow(16.0, -1.0), 0.0625);
}

// The fast x**2 and x**0.5 must equal pow's result bit for bit.
Test(autograd, fast_square_and_sqrt_equal_pow) {
    PyRandom r;
    pyrandom_seed(&r, 2024);
    long n = 0;
    for (int i = 0; i < 2000000; i++) {
        // magnitudes from 1e-30 to 1e30, both signs for the square
        double x = (pyrandom_random(&r) + 0.5) * pow(10.0, (double)(int)(pyrandom_random(&r) * 60) - 30);
        double y = i & 1 ? -x : x;
        if (py_pow2(y) != py_pow(y, 2.0)) n++;
        if (py_pow_half(x) != py_pow(x, 0.5)) n++;
    }
    // powers of two, their neighbours, zero, subnormals
    for (int e = -1070; e < 1020; e += 7) {
        double x = ldexp(1.0, e);
        double xs[3] = {x, nextafter(x, 0), nextafter(x, INFINITY)};
        for (int j = 0; j < 3; j++) {
            if (py_pow2(xs[j]) != py_pow(xs[j], 2.0)) n++;
            if (py_pow_half(xs[j]) != py_pow(xs[j], 0.5)) n++;
        }
    }
    cr_expect_eq(py_pow2(0.0), py_pow(0.0, 2.0));
    cr_expect_eq(py_pow_half(0.0), py_pow(0.0, 0.5));
    cr_expect_eq(n, 0, "%ld results differ from pow", n);
}

// The chain-aware ordering must give exactly the node-by-node depth-first
// order, on real model graphs of several shapes.
static void check_order(int n_layer, int n_embd, int n_head, int n_kv, int B, const char *seed) {
    static const char text[] = "emma\nolivia\nava\nisabella\nsophia\nx\nmia\namelia\nharper\nevelyn\n"
                               "abigail\nemily\nelizabethanne\nmila\nella\navery\nsofia\ncamila\n";
    Dataset d;
    char err[256];
    cr_assert_eq(dataset_from_text(&d, "t", text, sizeof text - 1, err, sizeof err), 0);
    PyRandom rng;
    pyrandom_seed_text(&rng, seed);
    dataset_shuffle(&d, &rng);
    Settings s;
    settings_defaults(&s);
    s.n_layer = n_layer;
    s.n_embd = n_embd;
    s.n_head = n_head;
    s.n_kv_head = n_kv;
    s.block_size = 8;
    ModelShape m = model_shape(&s, d.vocab_size);
    ParamLayout L;
    layout_init(&L, &m);
    double *p = malloc(L.n_params * sizeof *p);
    params_init(&L, &rng, 0.08, p);
    ScalarGPT sg;
    sgpt_init(&sg, &L, p);
    Batch b = {0};
    for (int step = 0; step < 4; step++) {
        batch_make(&b, &d, step, B, s.block_size);
        graph_reset(&sg.g);
        V *dl = malloc((size_t)B * sizeof *dl);
        for (int k = 0; k < B; k++) dl[k] = sgpt_doc_loss(&sg, b.tokens + (size_t)k * (size_t)(b.T + 1), b.n[k], 1.0 / b.n[k], NULL);
        V loss = B == 1 ? dl[0] : g_mulc(&sg.g, g_sum(&sg.g, dl, B), 1.0 / B);
        free(dl);
        sg.g.plain_order = 1;
        size_t n_plain = graph_order(&sg.g, loss);
        V *plain = malloc(n_plain * sizeof *plain);
        memcpy(plain, sg.g.order, n_plain * sizeof *plain);
        sg.g.plain_order = 0;
        size_t n_fast = graph_order(&sg.g, loss);
        V *fast = malloc(2 * n_fast * sizeof *fast);
        size_t n_exp = graph_order_expand(&sg.g, n_fast, fast);
        cr_assert_eq(n_exp, n_plain, "orders have different lengths");
        cr_assert_eq(memcmp(fast, plain, n_plain * sizeof *plain), 0,
                     "chain-aware order differs (layers %d, embd %d, heads %d/%d, B %d, step %d)",
                     n_layer, n_embd, n_head, n_kv, B, step);
        free(plain);
        free(fast);
    }
    batch_free(&b);
    sgpt_free(&sg);
    free(p);
    layout_free(&L);
    dataset_free(&d);
}

Test(autograd, chain_order_equals_plain_depth_first_order) {
    check_order(1, 16, 4, 4, 1, "42");
    check_order(2, 8, 2, 2, 1, "7");
    check_order(1, 12, 4, 2, 1, "3");
    check_order(1, 12, 4, 1, 3, "5");
    check_order(3, 8, 2, 1, 2, "11");
}

// n_layer 12: the original dies with RecursionError; the iterative ordering
// must not overflow the C stack.
Test(autograd, deep_model_runs) {
    Graph g;
    double one = 1.0001;
    graph_init(&g, &one, 1);
    V v = 0;
    for (int i = 0; i < 2000000; i++) v = g_mulc(&g, v, 1.0);  // a chain 2e6 deep
    graph_backward(&g, v);
    cr_expect_eq(g.n[0].grad, 1.0);
    graph_free(&g);
}
