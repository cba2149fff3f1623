// Scalar autograd in an arena: the original's `Value` graph without a malloc
// per node. A node holds its value, its gradient, up to two children and the
// local derivative toward each; nodes are addressed by index.
//
// Leaves (the parameters, and one "sink" standing for the original's constant
// Values, which nothing reads back) come first and live across steps; the
// nodes of one step's graph follow and are dropped by graph_reset().
#ifndef SCALAR_AUTOGRAD_H
#define SCALAR_AUTOGRAD_H

#include <stddef.h>
#include <stdint.h>

typedef uint32_t V;

typedef struct {
    double data, grad;
    double lg0, lg1;   // local gradients d(this)/d(c0), d(this)/d(c1)
} Node;                // 32 bytes: two to a cache line

typedef struct {
    V c0, c1;          // children, in the original's tuple order
} Kids;                // apart from Node, so that the ordering reads 8 bytes a node

typedef struct {
    Node *n;
    Kids *kid;
    size_t len, cap;
    V n_leaves;        // nodes [0, n_leaves) are leaves
    V sink;            // a leaf standing for the constants: c1 of unary nodes
    // chain[v] != 0 marks v as the end of a chain built by g_dot or g_sum:
    // (K << 1) | CHAIN_DOT or CHAIN_SUM, K its length. The ordering walks a
    // chain as one frame instead of node by node.
    uint32_t *chain;
    // scratch for the depth-first ordering
    uint32_t *mark;
    uint32_t epoch;
    V *stack;
    uint32_t *state;
    V *order;
    int plain_order;   // 1: walk node by node, ignoring chains (tests compare the two)
} Graph;

enum { CHAIN_DOT = 1, CHAIN_SUM = 0 };

// In g->order, an entry with this bit is a fused pair of a dot chain: the
// product m = entry & ~ORDER_PAIR and its running sum m+1, which come one
// after the other in the node-by-node order (m+1 first).
#define ORDER_PAIR 0x80000000u

// A graph whose first n_params nodes are the parameter leaves (data = init).
void graph_init(Graph *g, const double *init, size_t n_params);
// Make room for k more nodes.
static inline void graph_reserve(Graph *g, size_t k);
void graph_free(Graph *g);
// Drop every non-leaf node.
void graph_reset(Graph *g);

void graph_grow(Graph *g);
static inline void graph_reserve(Graph *g, size_t k) {
    while (g->len + k > g->cap) graph_grow(g);
}

static inline V g_node(Graph *g, double data, V c0, double lg0, V c1, double lg1) {
    if (g->len == g->cap) graph_grow(g);
    Node *p = &g->n[g->len];
    p->data = data;
    p->grad = 0.0;
    p->lg0 = lg0;
    p->lg1 = lg1;
    g->kid[g->len] = (Kids){c0, c1};
    g->chain[g->len] = 0;
    return (V)g->len++;
}

#define D(g, v) ((g)->n[(v)].data)

// a + b
static inline V g_add(Graph *g, V a, V b) { return g_node(g, D(g, a) + D(g, b), a, 1.0, b, 1.0); }
// a * b: local gradients (b.data, a.data)
static inline V g_mul(Graph *g, V a, V b) {
    double x = D(g, a), y = D(g, b);
    return g_node(g, x * y, a, y, b, x);
}
// a + Value(c)
static inline V g_addc(Graph *g, V a, double c) { return g_node(g, D(g, a) + c, a, 1.0, g->sink, 1.0); }
// a * Value(c)
static inline V g_mulc(Graph *g, V a, double c) { return g_node(g, D(g, a) * c, a, c, g->sink, D(g, a)); }

V g_pow(Graph *g, V a, double k);   // a ** k, local gradient k * a**(k-1)
V g_exp(Graph *g, V a);             // local gradient exp(a)
V g_log(Graph *g, V a);             // local gradient 1 / a
V g_relu(Graph *g, V a);            // max(0, a), local gradient (a > 0)

// sum(xs) as Python computes it: 0 + xs[0], then left to right. Nodes
// [end-K+1, end] are the running sums (a CHAIN_SUM).
V g_sum(Graph *g, const V *xs, int n);
// sum(a[k*sa] * b[k*sb] for k in range(K)): K products and K running sums,
// laid out as m_0, s_0, m_1, s_1, ... (a CHAIN_DOT). The products keep a on
// the left, as the original's `w * x` does.
V g_dot(Graph *g, const V *a, int sa, const V *b, int sb, int K);
// linear(x, w): out[o] = sum(w[o][i] * x[i] for i), one dot chain per row,
// w the first of nout*nin consecutive leaves (row-major weight matrix).
void g_linear(Graph *g, V w, const V *x, int nin, int nout, V *out);

// Backward from `root` (grad 1) in the order of the original: the reverse of
// the recursive depth-first post-order, children in tuple order, each node
// once. The order is recomputed for every graph: it depends on the target
// tokens, not only on the graph's size.
void graph_backward(Graph *g, V root);
// The two halves of graph_backward: the reversed post-order of the non-leaf
// nodes under root into g->order (returns its length; pairs of dot chains are
// fused entries, see ORDER_PAIR), then the gradients along it:
// child.grad += local_grad * node.grad.
size_t graph_order(Graph *g, V root);
void graph_propagate(Graph *g, V root, size_t len);
// Expand fused pairs of g->order[0..len) into their two nodes, into out
// (room for 2*len); returns the new length. For tests.
size_t graph_order_expand(const Graph *g, size_t len, V *out);

#endif
