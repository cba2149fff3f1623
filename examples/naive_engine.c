// A complete engine plugin written against include/microgpt/engine_abi.h
// alone, nothing else of the project: the template to copy for an engine of
// your own. Plain loops over one document at a time, float64, forward and
// backward by hand, Adam. Build it as any shared library:
//     gcc -O2 -shared -fPIC -Iinclude examples/naive_engine.c -o libnaive.so -lm
//     build/compare --engines scalar,plugin:./libnaive.so --steps 50
// (`make` builds it as build/libmicrogpt_naive_engine.so; the tests run it in
// lockstep against the scalar engine.)
#include <math.h>
#include <microgpt/engine_abi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NW 6   // per-layer weights: wq, wk, wv, wo, fc1, fc2

typedef struct {
    double *wq, *wk, *wv, *wo, *fc1, *fc2;
} LayerW;

// Activations of one step, per document b and position t: a (B*T, dim) array
// each, row (b*T + t).
typedef struct {
    double *x0, *r0;                                  // embedding sum (C), its rmsnorm scale (1)
    double *xin1, *h1, *r1, *q, *k, *v, *att, *o;     // per layer, stacked (L, B*T, dim); att (L, B*T, NH, T)
    double *xmid, *h2, *r2, *u, *a;
    double *xf, *prob;                                // final residual (C), softmax of the logits (V)
} Acts;

struct mg_engine {
    int V, C, NH, NKV, HS, KV, L, Tmax, maxB, steps;
    double lr, b1, b2, eps;
    size_t P;
    double *p, *g, *m, *v;         // (P) each: parameters, gradients, Adam moments
    double *wte, *wpe, *lm;        // views into p
    LayerW *w;                     // (L) views into p
    double *logits;                // (maxB, Tmax, V) of the last step
    int B, T;
    Acts a;
};

// ---- small dense helpers ----

// out (R) = W (R,K) x (K)
static void matvec(double *out, const double *W, const double *x, int R, int K) {
    for (int r = 0; r < R; r++) {
        double s = 0;
        for (int c = 0; c < K; c++) s += W[(size_t)r * K + c] * x[c];
        out[r] = s;
    }
}

// dx (K) += W^T dy; dW (R,K) += dy x^T
static void matvec_back(double *dx, double *dW, const double *W, const double *x, const double *dy, int R, int K) {
    for (int r = 0; r < R; r++) {
        for (int c = 0; c < K; c++) {
            if (dx) dx[c] += W[(size_t)r * K + c] * dy[r];
            dW[(size_t)r * K + c] += dy[r] * x[c];
        }
    }
}

static double rmsnorm(double *y, const double *x, int C) {
    double ms = 0;
    for (int i = 0; i < C; i++) ms += x[i] * x[i];
    double r = 1.0 / sqrt(ms / C + 1e-5);
    for (int i = 0; i < C; i++) y[i] = x[i] * r;
    return r;
}

// y = x r with r = (mean(x^2) + eps)^-1/2: dx += r dy - r^3 x mean(x dy)
static void rmsnorm_back(double *dx, const double *x, double r, const double *dy, int C) {
    double s = 0;
    for (int i = 0; i < C; i++) s += x[i] * dy[i];
    for (int i = 0; i < C; i++) dx[i] += r * dy[i] - r * r * r * x[i] * s / C;
}

// ---- the model ----

// Where a tensor starts in the flat parameter array; -1 if the layout lacks it.
static long tensor_offset(const mg_config *c, const char *name) {
    for (int i = 0; i < c->n_tensors; i++)
        if (!strcmp(c->tensors[i].name, name)) return (long)c->tensors[i].offset;
    return -1;
}

// Forward of document b (tokens tok[0..n-1]) into the activations; writes
// the logits (n, V) to lg and returns the document's mean loss (tok[n] is the
// last target) when targets is not 0.
static double forward_doc(mg_engine *e, int b, const int *tok, int n, int targets, double *lg) {
    const int C = e->C, T = e->T, H = 4 * C;
    Acts *A = &e->a;
    double loss = 0;
    for (int t = 0; t < n; t++) {
        size_t row = (size_t)b * T + t;
        double *x0 = A->x0 + row * C, *x = A->xf + row * C;
        for (int i = 0; i < C; i++) x0[i] = e->wte[(size_t)tok[t] * C + i] + e->wpe[(size_t)t * C + i];
        A->r0[row] = rmsnorm(x, x0, C);
    }
    for (int l = 0; l < e->L; l++) {
        const LayerW *w = &e->w[l];
        size_t lo = (size_t)l * e->maxB * e->Tmax;   // this layer's block of rows
        for (int t = 0; t < n; t++) {
            size_t row = (size_t)b * T + t, r = lo + row;
            memcpy(A->xin1 + r * C, A->xf + row * C, (size_t)C * sizeof(double));
            A->r1[r] = rmsnorm(A->h1 + r * C, A->xin1 + r * C, C);
            matvec(A->q + r * C, w->wq, A->h1 + r * C, C, C);
            matvec(A->k + r * e->KV, w->wk, A->h1 + r * C, e->KV, C);
            matvec(A->v + r * e->KV, w->wv, A->h1 + r * C, e->KV, C);
        }
        const double scale = 1.0 / sqrt((double)e->HS);
        for (int t = 0; t < n; t++) {
            size_t r = lo + (size_t)b * T + t;
            for (int h = 0; h < e->NH; h++) {
                const int g = h / (e->NH / e->NKV);
                const double *q = A->q + r * C + h * e->HS;
                double *att = A->att + (r * e->NH + h) * e->Tmax, mx = -INFINITY, sum = 0;
                for (int s = 0; s <= t; s++) {
                    const double *k = A->k + (lo + (size_t)b * T + s) * e->KV + g * e->HS;
                    double d = 0;
                    for (int i = 0; i < e->HS; i++) d += q[i] * k[i];
                    att[s] = d * scale;
                    if (att[s] > mx) mx = att[s];
                }
                for (int s = 0; s <= t; s++) sum += (att[s] = exp(att[s] - mx));
                double *o = A->o + r * C + h * e->HS;
                for (int i = 0; i < e->HS; i++) o[i] = 0;
                for (int s = 0; s <= t; s++) {
                    att[s] /= sum;
                    const double *v = A->v + (lo + (size_t)b * T + s) * e->KV + g * e->HS;
                    for (int i = 0; i < e->HS; i++) o[i] += att[s] * v[i];
                }
            }
            double *xm = A->xmid + r * C;
            matvec(xm, w->wo, A->o + r * C, C, C);
            for (int i = 0; i < C; i++) xm[i] += A->xin1[r * C + i];
            A->r2[r] = rmsnorm(A->h2 + r * C, xm, C);
            matvec(A->u + r * H, w->fc1, A->h2 + r * C, H, C);
            for (int i = 0; i < H; i++) A->a[r * H + i] = A->u[r * H + i] > 0 ? A->u[r * H + i] : 0;
            double *x = A->xf + ((size_t)b * T + t) * C;
            matvec(x, w->fc2, A->a + r * H, C, H);
            for (int i = 0; i < C; i++) x[i] += xm[i];
        }
    }
    for (int t = 0; t < n; t++) {
        size_t row = (size_t)b * T + t;
        double *l = lg + (size_t)t * e->V, *p = A->prob + row * e->V, mx = -INFINITY, sum = 0;
        matvec(l, e->lm, A->xf + row * C, e->V, C);
        for (int i = 0; i < e->V; i++) mx = l[i] > mx ? l[i] : mx;
        for (int i = 0; i < e->V; i++) sum += (p[i] = exp(l[i] - mx));
        for (int i = 0; i < e->V; i++) p[i] /= sum;
        if (targets) loss += -log(p[tok[t + 1]]);
    }
    return loss / n;
}

// Backward of document b: the gradient of the batch loss, weight w per position.
static void backward_doc(mg_engine *e, int b, const int *tok, int n, double wpos) {
    const int C = e->C, T = e->T, H = 4 * C, V = e->V;
    Acts *A = &e->a;
    double *dx = calloc((size_t)n * C, sizeof *dx), *dl = malloc((size_t)V * sizeof *dl);
    double *dxm = calloc((size_t)C, sizeof *dxm), *da = calloc((size_t)H, sizeof *da);
    double *dh = calloc((size_t)C, sizeof *dh), *dq = calloc((size_t)n * C, sizeof *dq);
    double *dk = calloc((size_t)n * e->KV, sizeof *dk), *dv = calloc((size_t)n * e->KV, sizeof *dv);
    double *dxin = calloc((size_t)n * C, sizeof *dxin), *datt = malloc((size_t)n * sizeof *datt);
    double *dwte = e->g + (e->wte - e->p), *dwpe = e->g + (e->wpe - e->p), *dlm = e->g + (e->lm - e->p);
    for (int t = 0; t < n; t++) {
        size_t row = (size_t)b * T + t;
        for (int i = 0; i < V; i++) dl[i] = A->prob[row * V + i] * wpos;
        dl[tok[t + 1]] -= wpos;
        matvec_back(dx + (size_t)t * C, dlm, e->lm, A->xf + row * C, dl, V, C);
    }
    const double scale = 1.0 / sqrt((double)e->HS);
    for (int l = e->L - 1; l >= 0; l--) {
        const LayerW *w = &e->w[l];
        double *gw[NW];
        const double *pw[NW] = {w->wq, w->wk, w->wv, w->wo, w->fc1, w->fc2};
        for (int j = 0; j < NW; j++) gw[j] = e->g + (pw[j] - e->p);
        size_t lo = (size_t)l * e->maxB * e->Tmax;
        memset(dq, 0, (size_t)n * C * sizeof *dq);
        memset(dk, 0, (size_t)n * e->KV * sizeof *dk);
        memset(dv, 0, (size_t)n * e->KV * sizeof *dv);
        for (int t = 0; t < n; t++) {
            size_t r = lo + (size_t)b * T + t;
            // x = a fc2^T + xmid ; a = relu(u) ; u = rmsnorm(xmid) fc1^T
            memcpy(dxm, dx + (size_t)t * C, (size_t)C * sizeof *dxm);
            memset(da, 0, (size_t)H * sizeof *da);
            matvec_back(da, gw[5], w->fc2, A->a + r * H, dx + (size_t)t * C, C, H);
            for (int i = 0; i < H; i++) da[i] = A->u[r * H + i] > 0 ? da[i] : 0;
            memset(dh, 0, (size_t)C * sizeof *dh);
            matvec_back(dh, gw[4], w->fc1, A->h2 + r * C, da, H, C);
            rmsnorm_back(dxm, A->xmid + r * C, A->r2[r], dh, C);
            // xmid = o wo^T + xin1
            memcpy(dxin + (size_t)t * C, dxm, (size_t)C * sizeof *dxm);
            memset(dh, 0, (size_t)C * sizeof *dh);
            matvec_back(dh, gw[3], w->wo, A->o + r * C, dxm, C, C);
            // o_h[t] = sum_s att[t,s] v_g[s]; att = softmax(q_h[t] . k_g[s] * scale)
            for (int h = 0; h < e->NH; h++) {
                const int g = h / (e->NH / e->NKV);
                const double *att = A->att + (r * e->NH + h) * e->Tmax, *dO = dh + h * e->HS;
                double dot = 0;
                for (int s = 0; s <= t; s++) {
                    const double *v = A->v + (lo + (size_t)b * T + s) * e->KV + g * e->HS;
                    double d = 0;
                    for (int i = 0; i < e->HS; i++) {
                        d += dO[i] * v[i];
                        dv[(size_t)s * e->KV + g * e->HS + i] += att[s] * dO[i];
                    }
                    datt[s] = d;
                    dot += d * att[s];
                }
                for (int s = 0; s <= t; s++) {
                    const double ds = att[s] * (datt[s] - dot) * scale;
                    const double *k = A->k + (lo + (size_t)b * T + s) * e->KV + g * e->HS;
                    const double *q = A->q + r * C + h * e->HS;
                    for (int i = 0; i < e->HS; i++) {
                        dq[(size_t)t * C + h * e->HS + i] += ds * k[i];
                        dk[(size_t)s * e->KV + g * e->HS + i] += ds * q[i];
                    }
                }
            }
        }
        for (int t = 0; t < n; t++) {
            size_t r = lo + (size_t)b * T + t;
            memset(dh, 0, (size_t)C * sizeof *dh);
            matvec_back(dh, gw[0], w->wq, A->h1 + r * C, dq + (size_t)t * C, C, C);
            matvec_back(dh, gw[1], w->wk, A->h1 + r * C, dk + (size_t)t * e->KV, e->KV, C);
            matvec_back(dh, gw[2], w->wv, A->h1 + r * C, dv + (size_t)t * e->KV, e->KV, C);
            rmsnorm_back(dxin + (size_t)t * C, A->xin1 + r * C, A->r1[r], dh, C);
        }
        memcpy(dx, dxin, (size_t)n * C * sizeof *dx);
    }
    for (int t = 0; t < n; t++) {
        size_t row = (size_t)b * T + t;
        memset(dh, 0, (size_t)C * sizeof *dh);
        rmsnorm_back(dh, A->x0 + row * C, A->r0[row], dx + (size_t)t * C, C);
        for (int i = 0; i < C; i++) {
            dwte[(size_t)tok[t] * C + i] += dh[i];
            dwpe[(size_t)t * C + i] += dh[i];
        }
    }
    free(dx), free(dl), free(dxm), free(da), free(dh), free(dq), free(dk), free(dv), free(dxin), free(datt);
}

// ---- the ABI ----

static void engine_free(mg_engine *e) {
    double **bufs[] = {&e->p, &e->g, &e->m, &e->v, &e->logits, &e->a.x0, &e->a.r0, &e->a.xin1, &e->a.h1, &e->a.r1,
                       &e->a.q, &e->a.k, &e->a.v, &e->a.att, &e->a.o, &e->a.xmid, &e->a.h2, &e->a.r2, &e->a.u,
                       &e->a.a, &e->a.xf, &e->a.prob};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(*bufs[i]);
    free(e->w);
    free(e);
}

static mg_engine *create(const mg_config *c, const double *init, char *err, size_t errlen) {
    if (c->precision != MG_FP64) return snprintf(err, errlen, "the naive engine computes in fp64 only"), NULL;
    if (c->fault) return snprintf(err, errlen, "the naive engine has no injected faults"), NULL;
    if (c->token_mean) return snprintf(err, errlen, "the naive engine computes the original's loss (doc-mean) only"), NULL;
    mg_engine *e = calloc(1, sizeof *e);
    if (!e) return snprintf(err, errlen, "out of memory"), NULL;
    *e = (mg_engine){.V = c->vocab_size, .C = c->n_embd, .NH = c->n_head, .NKV = c->n_kv_head, .HS = c->head_dim,
                     .KV = c->n_kv_head * c->head_dim, .L = c->n_layer, .Tmax = c->block_size, .maxB = c->max_batch,
                     .steps = c->steps, .lr = c->lr, .b1 = c->beta1, .b2 = c->beta2, .eps = c->eps, .P = c->n_params};
    e->p = malloc(e->P * sizeof(double));
    e->g = calloc(e->P, sizeof(double));
    e->m = calloc(e->P, sizeof(double));
    e->v = calloc(e->P, sizeof(double));
    e->w = calloc((size_t)(e->L ? e->L : 1), sizeof *e->w);
    const size_t N = (size_t)e->maxB * e->Tmax, NL = N * (size_t)(e->L ? e->L : 1), C = (size_t)e->C;
#define ALLOC(n) malloc((n) * sizeof(double))
    e->logits = ALLOC(N * e->V);
    Acts *A = &e->a;
    A->x0 = ALLOC(N * C), A->r0 = ALLOC(N), A->xf = ALLOC(N * C), A->prob = ALLOC(N * e->V);
    A->xin1 = ALLOC(NL * C), A->h1 = ALLOC(NL * C), A->r1 = ALLOC(NL), A->q = ALLOC(NL * C);
    A->k = ALLOC(NL * e->KV), A->v = ALLOC(NL * e->KV), A->o = ALLOC(NL * C);
    A->att = ALLOC(NL * e->NH * e->Tmax), A->xmid = ALLOC(NL * C), A->h2 = ALLOC(NL * C);
    A->r2 = ALLOC(NL), A->u = ALLOC(NL * 4 * C), A->a = ALLOC(NL * 4 * C);
#undef ALLOC
    int ok = e->p && e->g && e->m && e->v && e->w && e->logits && A->x0 && A->r0 && A->xf && A->prob && A->xin1 &&
             A->h1 && A->r1 && A->q && A->k && A->v && A->o && A->att && A->xmid && A->h2 && A->r2 && A->u && A->a;
    if (!ok) {
        snprintf(err, errlen, "out of memory");
        engine_free(e);
        return NULL;
    }
    // the tensors by name, at their offsets in the canonical layout
    const char *global[3] = {"wte", "wpe", "lm_head"};
    double **gdst[3] = {&e->wte, &e->wpe, &e->lm};
    for (int j = 0; j < 3 + NW * e->L; j++) {
        const char *k[NW] = {"attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2"};
        char name[64];
        double **dst;
        if (j < 3) {
            snprintf(name, sizeof name, "%s", global[j]);
            dst = gdst[j];
        } else {
            const int l = (j - 3) / NW, i = (j - 3) % NW;
            LayerW *w = &e->w[l];
            double **ld[NW] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->fc1, &w->fc2};
            snprintf(name, sizeof name, "layer%d.%s", l, k[i]);
            dst = ld[i];
        }
        long o = tensor_offset(c, name);
        if (o < 0) {
            snprintf(err, errlen, "the layout has no tensor %s", name);
            engine_free(e);
            return NULL;
        }
        *dst = e->p + o;
    }
    memcpy(e->p, init, e->P * sizeof(double));
    return e;
}

static double step(mg_engine *e, const mg_batch *b, int s) {
    e->B = b->B, e->T = b->T;
    memset(e->g, 0, e->P * sizeof(double));
    double loss = 0;
    for (int d = 0; d < b->B; d++) {
        const int *tok = b->tokens + (size_t)d * (b->T + 1), n = b->n[d];
        double *lg = e->logits + (size_t)d * b->T * e->V;
        for (size_t i = (size_t)n * e->V; i < (size_t)b->T * e->V; i++) lg[i] = NAN;   // padding
        loss += forward_doc(e, d, tok, n, 1, lg) / b->B;
        backward_doc(e, d, tok, n, 1.0 / ((double)n * b->B));
    }
    const double lr_t = e->lr * (1.0 - (double)s / e->steps);
    const double c1 = 1.0 - pow(e->b1, s + 1), c2 = 1.0 - pow(e->b2, s + 1);
    for (size_t i = 0; i < e->P; i++) {
        e->m[i] = e->b1 * e->m[i] + (1 - e->b1) * e->g[i];
        e->v[i] = e->b2 * e->v[i] + (1 - e->b2) * e->g[i] * e->g[i];
        e->p[i] -= lr_t * (e->m[i] / c1) / (sqrt(e->v[i] / c2) + e->eps);
    }
    return loss;
}

static void get_logits(mg_engine *e, double *out) {
    memcpy(out, e->logits, (size_t)e->B * e->T * e->V * sizeof(double));
}
static void get_grads(mg_engine *e, double *out) { memcpy(out, e->g, e->P * sizeof(double)); }
static void get_params(mg_engine *e, double *out) { memcpy(out, e->p, e->P * sizeof(double)); }
static void get_moments(mg_engine *e, double *m, double *v) {
    memcpy(m, e->m, e->P * sizeof(double));
    memcpy(v, e->v, e->P * sizeof(double));
}
static void set_state(mg_engine *e, const double *p, const double *m, const double *v) {
    memcpy(e->p, p, e->P * sizeof(double));
    if (m && v) {
        memcpy(e->m, m, e->P * sizeof(double));
        memcpy(e->v, v, e->P * sizeof(double));
    }
}

// One document from BOS: the forward pass over the tokens so far, then the
// harness draws the next token from the last position's logits.
static int sample(mg_engine *e, const mg_sampler *s, double temperature, int *out) {
    int *seq = malloc((size_t)(e->Tmax + 1) * sizeof *seq), n = 0;
    double *lg = malloc((size_t)e->Tmax * e->V * sizeof *lg);
    seq[0] = e->V - 1;   // BOS
    const int T_step = e->T;   // the last step's, for get_logits
    e->T = e->Tmax;
    for (int pos = 0; pos < e->Tmax; pos++) {
        forward_doc(e, 0, seq, pos + 1, 0, lg);
        int tok = s->sample_token(s->rng, lg + (size_t)pos * e->V, e->V, temperature);
        if (tok == e->V - 1) break;
        out[n++] = seq[pos + 1] = tok;
    }
    e->T = T_step;
    free(seq);
    free(lg);
    return n;
}

static const char *device(mg_engine *e) {
    (void)e;
    return "cpu (naive loops)";
}

MG_EXPORT const mg_engine_abi *microgpt_engine_abi_v1(void) {
    static const mg_engine_abi abi = {
        .abi_version = MICROGPT_ENGINE_ABI_VERSION, .size = sizeof(mg_engine_abi), .name = "naive",
        .create = create, .destroy = engine_free, .step = step, .get_logits = get_logits, .get_grads = get_grads,
        .get_params = get_params, .get_moments = get_moments, .set_state = set_state, .sample = sample,
        .device = device};
    return &abi;
}
