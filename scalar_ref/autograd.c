#include "autograd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pymath.h"
#include "common/util.h"

static void alloc_arrays(Graph *g, size_t old_cap) {
    g->n = xrealloc(g->n, g->cap * sizeof *g->n);
    g->kid = xrealloc(g->kid, g->cap * sizeof *g->kid);
    g->chain = xrealloc(g->chain, g->cap * sizeof *g->chain);
    g->mark = xrealloc(g->mark, g->cap * sizeof *g->mark);
    memset(g->mark + old_cap, 0, (g->cap - old_cap) * sizeof *g->mark);
    g->stack = xrealloc(g->stack, g->cap * sizeof *g->stack);
    g->state = xrealloc(g->state, g->cap * sizeof *g->state);
    g->order = xrealloc(g->order, g->cap * sizeof *g->order);
}

void graph_init(Graph *g, const double *init, size_t n_params) {
    memset(g, 0, sizeof *g);
    g->cap = n_params + 1 + 4096;
    alloc_arrays(g, 0);
    for (size_t i = 0; i < n_params; i++) g->n[i] = (Node){.data = init[i]};
    g->sink = (V)n_params;
    g->n[n_params] = (Node){0};
    memset(g->kid, 0, (n_params + 1) * sizeof *g->kid);
    memset(g->chain, 0, (n_params + 1) * sizeof *g->chain);
    g->n_leaves = (V)(n_params + 1);
    g->len = n_params + 1;
}

void graph_free(Graph *g) {
    free(g->n);
    free(g->kid);
    free(g->chain);
    free(g->mark);
    free(g->stack);
    free(g->state);
    free(g->order);
    memset(g, 0, sizeof *g);
}

void graph_reset(Graph *g) { g->len = g->n_leaves; }

void graph_grow(Graph *g) {
    size_t old = g->cap;
    if (old * 2 > (size_t)ORDER_PAIR) die(EXIT_MISMATCH, "the scalar graph would exceed 2^31 nodes; use smaller settings");
    g->cap = old * 2;
    alloc_arrays(g, old);
}

V g_pow(Graph *g, V a, double k) {
    double x = D(g, a);
    return g_node(g, py_pow(x, k), a, k * py_pow(x, k - 1.0), g->sink, 0.0);
}

V g_exp(Graph *g, V a) {
    double e = exp(D(g, a));  // the original calls math.exp twice on the same value
    return g_node(g, e, a, e, g->sink, 0.0);
}

V g_log(Graph *g, V a) {
    double x = D(g, a);
    return g_node(g, log(x), a, 1.0 / x, g->sink, 0.0);
}

V g_relu(Graph *g, V a) {
    double x = D(g, a);
    return g_node(g, x > 0 ? x : 0.0, a, x > 0 ? 1.0 : 0.0, g->sink, 0.0);
}

V g_sum(Graph *g, const V *xs, int n) {
    V acc = g_addc(g, xs[0], 0.0);
    for (int i = 1; i < n; i++) acc = g_add(g, acc, xs[i]);
    g->chain[acc] = ((uint32_t)n << 1) | CHAIN_SUM;
    return acc;
}

// A dot chain's inner nodes (the products m_k and the running sums before the
// last) have no parent outside the chain. The ordering reads only their
// children (kid) and backward takes a product's local gradients from its
// children's values, so their Node entries are never read and not written
// here; only the chain's output node is a full node. The values are computed
// exactly as the node-by-node graph would: m_k = a_k * b_k, s_0 = m_0 + 0,
// s_k = s_{k-1} + m_k.
V g_dot(Graph *g, const V *a, int sa, const V *b, int sb, int K) {
    graph_reserve(g, 2 * (size_t)K);
    Node *n = g->n;
    Kids *kid = g->kid;
    V at = (V)g->len;
    double acc = 0.0;
    for (int k = 0; k < K; k++, at += 2) {
        const V ak = a[(size_t)k * (size_t)sa], bk = b[(size_t)k * (size_t)sb];
        const double p = n[ak].data * n[bk].data;
        acc = k ? acc + p : p + 0.0;
        kid[at] = (Kids){ak, bk};
        kid[at + 1] = k ? (Kids){at - 1, at} : (Kids){at, g->sink};
    }
    const V end = at - 1;
    n[end] = (Node){acc, 0.0, 1.0, 1.0};
    g->chain[end] = ((uint32_t)K << 1) | CHAIN_DOT;
    g->len = at;
    return end;
}

void g_linear(Graph *g, V w, const V *x, int nin, int nout, V *out) {
    graph_reserve(g, 2 * (size_t)nin * (size_t)nout);
    double xs[nin];  // the inputs' values, read once for all rows
    for (int i = 0; i < nin; i++) xs[i] = g->n[x[i]].data;
    Node *n = g->n;
    Kids *kid = g->kid;
    const V sink = g->sink;
    V at = (V)g->len;
    for (int o = 0; o < nout; o++, w += (V)nin) {
        // one dot chain per row, as g_dot builds it (weight on the left)
        double acc = n[w].data * xs[0] + 0.0;
        kid[at] = (Kids){w, x[0]};
        kid[at + 1] = (Kids){at, sink};
        at += 2;
        for (int i = 1; i < nin; i++, at += 2) {
            acc = acc + n[w + (V)i].data * xs[i];
            kid[at] = (Kids){w + (V)i, x[i]};
            kid[at + 1] = (Kids){at - 1, at};
        }
        n[at - 1] = (Node){acc, 0.0, 1.0, 1.0};
        g->chain[at - 1] = ((uint32_t)nin << 1) | CHAIN_DOT;
        out[o] = at - 1;
    }
    g->len = at;
}

// The original's build_topo, iteratively:
//   visit(v): if v unseen: mark v; visit(c) for c in children; emit v
// Leaves have no children and nothing to propagate, so only non-leaf nodes
// are walked and emitted. A chain end is walked as one frame: its inner
// nodes have no other parent, so visiting them in place gives exactly the
// node-by-node order (graph->plain_order = 1 checks that in the tests).
// The post-order is written from the end of g->order backwards, which leaves
// the reversed post-order, the order of backward, in front.
size_t graph_order(Graph *g, V root) {
    const V first = g->n_leaves;
    if (root < first) return 0;
    if (++g->epoch == 0) {  // the marks wrapped around: clear them
        memset(g->mark, 0, g->cap * sizeof *g->mark);
        g->epoch = 1;
    }
    const uint32_t ep = g->epoch;
    const Kids *n = g->kid;
    const uint32_t *chain = g->chain;
    const int plain = g->plain_order;
    uint32_t *mark = g->mark;
    V *stack = g->stack;
    uint32_t *state = g->state;  // child slots examined so far
    V *const end = g->order + (g->len - first);
    V *post = end;
    size_t sp = 0;

#define NEEDS_VISIT(c) ((c) >= first && mark[c] != ep)
#define PUSH(c) do { mark[c] = ep; stack[sp] = (c); state[sp++] = 0; } while (0)

    PUSH(root);
    while (sp) {
        const V v = stack[sp - 1];
        uint32_t s = state[sp - 1];
        const uint32_t ch = plain ? 0 : chain[v];
        if (ch) {
            const uint32_t K = ch >> 1;
            if (ch & CHAIN_DOT) {
                // nodes m_k = v-2K+1+2k (product), s_k = m_k+1 (running sum);
                // state = (k << 2) | step, step 0 / 1: m_k's first / second
                // child, step 2: both done, emit m_k and s_k
                const V base = v - 2 * K + 1;
                for (uint32_t k = s >> 2, step = s & 3; k < K; k++, step = 0) {
                    const V m = base + 2 * k;
                    if (step == 0) {
                        const V c = n[m].c0;
                        if (NEEDS_VISIT(c)) {
                            state[sp - 1] = (k << 2) | 1;
                            PUSH(c);
                            goto next;
                        }
                        step = 1;
                    }
                    if (step == 1) {
                        const V c = n[m].c1;
                        if (NEEDS_VISIT(c)) {
                            state[sp - 1] = (k << 2) | 2;
                            PUSH(c);
                            goto next;
                        }
                    }
                    *--post = m | ORDER_PAIR;
                }
            } else {
                // running sums s_k = v-K+1+k; state 2k: visit the k-th
                // summand, 2k+1: emit s_k
                const V base = v - K + 1;
                for (;;) {
                    if (s == 2 * K) break;
                    const uint32_t k = s >> 1;
                    if (!(s & 1)) {
                        const V a = base + k;
                        const V c = k ? n[a].c1 : n[a].c0;
                        s++;
                        if (NEEDS_VISIT(c)) {
                            state[sp - 1] = s;
                            PUSH(c);
                            goto next;
                        }
                    }
                    *--post = base + k;
                    s++;
                }
            }
            sp--;
            continue;
        }
        if (s < 2) {
            state[sp - 1] = s + 1;
            const V c = s ? n[v].c1 : n[v].c0;
            if (NEEDS_VISIT(c)) PUSH(c);
            continue;
        }
        sp--;
        *--post = v;
    next:;
    }
#undef NEEDS_VISIT
#undef PUSH
    size_t len = (size_t)(end - post);
    if (post != g->order) memmove(g->order, post, len * sizeof *post);
    return len;
}

void graph_backward(Graph *g, V root) { graph_propagate(g, root, graph_order(g, root)); }

void graph_propagate(Graph *g, V root, size_t len) {
    Node *n = g->n;
    const Kids *kid = g->kid;
    const V *order = g->order;
    n[root].grad = 1.0;
    // A fused pair (s = m+1, then m, node by node): s passes its gradient gs
    // to m (its only parent) and to s_{k-1} = m-1, unless m is the first
    // product (then s = m + 0); m passes it on with its local gradients.
    // Both have no other parent and a gradient starts at 0, and a sum of
    // gradients is never -0 (x + -x is +0), so their gradient 0 + 1*gs is gs
    // itself: it is stored as is, and carried in a register to the chain's
    // next pair when that comes right after.
    V carry_node = 0;  // the node whose gradient `carry` holds (0: none)
    double carry = 0.0;
    for (size_t i = 0; i < len; i++) {
        const V o = order[i];
        if (o & ORDER_PAIR) {
            const V m = o & ~ORDER_PAIR;
            const double gs = carry_node == m + 1 ? carry : n[m + 1].grad;
            if (kid[m + 1].c0 != m) {
                n[m - 1].grad = gs;  // 0 + 1*gs: s_{k-1}'s only contribution
                carry_node = m - 1;
                carry = gs;
            } else {
                carry_node = 0;
            }
            // m = c0 * c1: local gradients (c1.data, c0.data), one after the
            // other (c0 == c1 for x*x accumulates twice)
            const Kids k = kid[m];
            const double d0 = n[k.c0].data, d1 = n[k.c1].data;
            n[k.c0].grad += d1 * gs;
            n[k.c1].grad += d0 * gs;
            continue;
        }
        carry_node = 0;
        const Node *p = &n[o];
        const Kids k = kid[o];
        const double gr = p->grad;
        n[k.c0].grad += p->lg0 * gr;
        n[k.c1].grad += p->lg1 * gr;
    }
}

size_t graph_order_expand(const Graph *g, size_t len, V *out) {
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        V o = g->order[i];
        if (o & ORDER_PAIR) {
            out[k++] = (o & ~ORDER_PAIR) + 1;
            out[k++] = o & ~ORDER_PAIR;
        } else {
            out[k++] = o;
        }
    }
    return k;
}
