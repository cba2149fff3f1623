// Lockstep: every step both engines start from the reference's state; the
// logits, the loss, every gradient tensor and the update (parameters and
// Adam's moments m and v) are compared; at the end (--samples N) the sampled
// names and their probabilities (samples.c). Under the ratio rule a third
// engine, the CPU engine in the candidate's precision (plain fp32, or the
// emulation of a mixed-precision recipe), runs the same step from the same
// state and measures what that precision's rounding alone gives (check.c,
// docs/compare.md, docs/mixed_precision.md). An fp16 step that loss scaling
// skipped is compared as one: the forward as usual, the update against no
// update at all, the (overflowed) gradients not; it is counted and printed.
// A partial engine (docs/outside_engines.md, "Partial engines") is asked
// only for what it offers: without logits they are not compared; when the
// candidate cannot report or take Adam's moments (or the reference cannot
// report them) the candidate trains on its own trajectory and every other
// engine starts each step from its parameters (Partial below).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acts.h"
#include "check.h"
#include "compare.h"
#include "localize.h"
#include "engines.h"
#include "traces/timeline.h"
#include "grad_check.h"
#include "samples.h"
#include "common/util.h"
#include "tensor_gpu/cpu/engine_cpu.h"

// E_NOISE..: the ratio rule's noise reference, the CPU engine in the
// candidate's precision with its sums in each of NOISE_ORDERS' orders.
enum { E_REF, E_CAND, E_NOISE, E_NUM = E_NOISE + NOISE_MEMBERS };

// What an engine holds after a step, in float64; for the candidate and the
// noise engines also the update they should have made (exp_*), and the
// gradients they should have computed with their own ReLU gates (exp_grads;
// REF's gradients when the gates are REF's).
typedef struct {
    double *logits, *grads, *params, *m, *v;   // logits: the real positions only, gathered
    double *exp_params, *exp_m, *exp_v;
    double *exp_grads;                         // own buffer, used when gates_matched
    int gates_matched;                         // exp_grads holds the fp64 gradients with this engine's gates
    int flips, flips_out;                      // gates that differ from REF's; of them beyond the margin
    double flip_worst;                         // the largest |input| of a flipped gate
    int flip_at[4];                            // the first flip: layer, document, position, unit
    double flip_a, flip_b;                     // its inputs here and in REF
    int skipped;                               // fp16: loss scaling skipped the update
    double scale;                              // the loss scale the step used
} State;

typedef struct {
    const Batch *b;
    const Dataset *d;
    int V;
} LogitsAt;

// Gathered logit i (real positions only, document after document) as
// "logits[b,t,v] (document b = docs[i], position t, vocab v = 'e')".
static void describe_logit(const void *ctx, size_t i, char *out, size_t n) {
    const LogitsAt *c = ctx;
    const Batch *b = c->b;
    const size_t V = (size_t)c->V;
    int bi = 0;
    while (bi + 1 < b->B && i >= (size_t)b->n[bi] * V) i -= (size_t)b->n[bi++] * V;
    int t = (int)(i / V), v = (int)(i % V);
    char tok[16] = "BOS";
    if (v < c->d->n_chars) {
        uint32_t cp = c->d->vocab[v];
        if (cp >= 0x20 && cp < 0x7f) snprintf(tok, sizeof tok, "'%c'", (char)cp);
        else snprintf(tok, sizeof tok, "U+%04X", (unsigned)cp);
    }
    snprintf(out, n, "logits[%d,%d,%d] (document %d = docs[%d], position %d, vocab %d = %s)", bi, t, v, bi,
             b->doc[bi], t, v, tok);
}

static void describe_loss(const void *ctx, size_t i, char *out, size_t n) {
    (void)ctx, (void)i;
    snprintf(out, n, "the loss");
}

typedef struct {
    const ParamLayout *L;
    size_t offset;   // of the tensor
} ParamAt;

static void describe_param(const void *ctx, size_t i, char *out, size_t n) {
    const ParamAt *c = ctx;
    layout_describe(c->L, c->offset + i, out, n);
}

// Adam as the original, in float64: the parameters and moments after step
// `step` from parameters p0 and moments m0, v0 with gradients g.
static void adam_expected(const Settings *s, int step, const double *p0, const double *m0, const double *v0,
                          const double *g, double *p, double *m, double *v, size_t n) {
    const double b1 = s->beta1, b2 = s->beta2, lr_t = lr_at(s->lr, step, s->steps);
    const double c1 = 1.0 - pow(b1, step + 1), c2 = 1.0 - pow(b2, step + 1);
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m0[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v0[i] + (1.0 - b2) * (g[i] * g[i]);
        p[i] = p0[i] - (lr_t * (m[i] / c1)) / (sqrt(v[i] / c2) + s->eps);
    }
}

// The noise reference's member j: the CPU engine in the candidate's
// precision with its sums in NOISE_ORDERS[j]'s order.
static Engine *make_noise_engine(Run *r, int j) {
    const Precision p = engine_prec(r->o, 1);
    EngineConfig cfg = {.s = &r->o->s, .L = &r->L, .precision = p, .fault = FAULT_NONE,
                        .max_batch = r->o->s.batch, .loss_scale = r->o->loss_scale, .activations = 1};
    char err[512] = "";
    Engine *e = cpu_engine_create_order(&cfg, r->init, NOISE_ORDERS[j], err, sizeof err);
    if (!e) die(EXIT_USAGE, "the noise reference's %s cpu:%s engine: %s", precision_name(p),
                reduce_order_name(NOISE_ORDERS[j]), err);
    return e;
}

// The fp64 model on the reference's state: with another engine's ReLU gates
// (cpu_engine_force_gates), and what each op's output and gradient should be.
static Engine *make_gate_engine(Run *r) {
    EngineConfig cfg = {.s = &r->o->s, .L = &r->L, .precision = PREC_FP64, .fault = FAULT_NONE,
                        .max_batch = r->o->s.batch, .activations = 1};
    char err[512] = "";
    Engine *e = cpu_engine_create(&cfg, r->init, err, sizeof err);
    if (!e) die(EXIT_USAGE, "the fp64 cpu engine for ReLU gate matching: %s", err);
    return e;
}

// ReLU gates: the gates of engine k's step that differ from REF's (inputs
// rk and rref, (n_layer,B,T,4C), NaN at padding), counted into st, and k's
// own pattern into open. Returns the number of flips.
static int gate_flips(const Run *r, const Batch *b, const double *rk, const double *rref, double margin, State *st,
                      unsigned char *open) {
    const size_t H = 4 * (size_t)r->L.shape.n_embd;
    st->flips = st->flips_out = 0;
    st->flip_worst = 0;
    for (int l = 0; l < r->L.shape.n_layer; l++)
        for (int d = 0; d < b->B; d++)
            for (int t = 0; t < b->T; t++)
                for (size_t j = 0; j < H; j++) {
                    const size_t i = (((size_t)l * (size_t)b->B + (size_t)d) * (size_t)b->T + (size_t)t) * H + j;
                    const double x = rk[i], y = rref[i];
                    open[i] = x > 0;
                    if (t >= b->n[d] || (x > 0) == (y > 0)) continue;
                    const double m = fmax(fabs(x), fabs(y));
                    if (st->flips++ == 0) {
                        st->flip_at[0] = l, st->flip_at[1] = d, st->flip_at[2] = t, st->flip_at[3] = (int)j;
                        st->flip_a = x, st->flip_b = y;
                    }
                    if (!(m <= margin)) st->flips_out++;
                    if (!(m <= st->flip_worst)) st->flip_worst = m;
                }
    return st->flips;
}

// The gradients engine k should have computed: REF's, or when k's ReLU
// gates differ from REF's only within the margin (rounding decided them),
// the fp64 model's from the same state with k's gates (exp_grads).
static void match_gates(Run *r, Engine *g, const Batch *b, int step, const double *p0, const double *m0,
                        const double *v0, State *st, const double *rk, const double *rref, unsigned char *open,
                        size_t nopen, ActSet *exp) {
    st->gates_matched = 0;
    if (!gate_flips(r, b, rk, rref, r->o->relu_margin, st, open) || st->flips_out) return;
    g->ops->set_state(g, p0, m0, v0);
    (void)nopen;
    cpu_engine_force_gates(g, open, (size_t)r->L.shape.n_layer * (size_t)b->B * (size_t)b->T * 4 * (size_t)r->L.shape.n_embd);
    g->ops->step(g, b, step);
    cpu_engine_force_gates(g, NULL, 0);
    g->ops->get_grads(g, st->exp_grads);
    if (exp) actset_fetch(exp, g, &r->L.shape, b);   // its ops, under these gates
    st->gates_matched = 1;
}

static void flip_text(const Options *o, const State *st, char *out, size_t n) {
    snprintf(out, n, "%d ReLU gate(s) differ from %s's, the first layer %d, document %d, position %d, unit %d "
             "(input %s %.2e, %s %.2e)", st->flips, o->names[0], st->flip_at[0], st->flip_at[1], st->flip_at[2],
             st->flip_at[3], o->names[1], st->flip_a, o->names[0], st->flip_b);
}

// What a run checks of two engines that may be partial (docs/outside_engines.md,
// "Partial engines"): the logits where both offer them, m and v where the
// candidate reports them, and whose trajectory the run follows.
typedef struct {
    int logits;          // both engines offer their logits: compared
    int moments;         // the candidate reports m and v: compared
    int own;             // the candidate trains on its own trajectory (it cannot report or take the moments, or
                         // the reference cannot report them): the others start each step from its parameters
    const char *no_logits, *no_moments;   // the engine that lacks them (NULL: none)
    char why_own[256];   // why the run follows the candidate
} Partial;

// Compare a step's state: st[k] holds engine k's state after the step; ne
// engines ran (E_NOISE.. under the ratio rule).
static void compare_step(Step *S, Run *r, const Batch *b, State *st, double loss[E_NUM], size_t nlog, int ne,
                         const Partial *pa) {
    // in the order they are computed: logits, loss, gradients, update
    LogitsAt la = {b, &r->d, r->L.shape.vocab_size};
    Noise nz = {0};
    for (int j = 0; E_NOISE + j < ne; j++) nz.x[j] = st[E_NOISE + j].logits, nz.e[j] = st[E_REF].logits, nz.n++;
    if (pa->logits)
        check(S, Q_LOGITS, "logits", "logits", st[E_CAND].logits, st[E_REF].logits, &nz, nlog, describe_logit, &la);
    for (int j = 0; j < nz.n; j++) nz.x[j] = &loss[E_NOISE + j], nz.e[j] = &loss[E_REF];
    check(S, Q_LOSS, "loss", "loss", &loss[E_CAND], &loss[E_REF], &nz, 1, describe_loss, NULL);
    // The update: the candidate's new parameters and moments against Adam
    // applied in float64 to the candidate's own gradients from the shared
    // start (Adam divides by sqrt(v)+eps, which magnifies the last bits of a
    // gradient near zero: comparing with the reference's update would test
    // the gradients again, not the update). The gradients themselves are
    // checked against the reference's (with each engine's own ReLU gates
    // where rounding decided one: match_gates).
    static const Quantity qs[] = {Q_GRADS, Q_PARAMS, Q_M, Q_V};
    for (size_t qi = 0; qi < sizeof qs / sizeof qs[0]; qi++) {
        Quantity q = qs[qi];
        if (q == Q_GRADS && st[E_CAND].skipped) continue;   // they overflowed: the update is checked to be none
        if ((q == Q_M || q == Q_V) && !pa->moments) continue;   // not offered
        for (int k = 0; k < r->L.n_tensors; k++) {
            const ParamTensor *pt = &r->L.t[k];
            const size_t o = pt->offset;
            const double *a = NULL, *e = NULL;
            for (int x = E_CAND; x < ne; x++) {
                const State *sx = &st[x];
                const double *vx, *ex;
                switch (q) {
                case Q_GRADS: vx = sx->grads, ex = sx->gates_matched ? sx->exp_grads : st[E_REF].grads; break;
                case Q_PARAMS: vx = sx->params, ex = sx->exp_params; break;
                case Q_M: vx = sx->m, ex = sx->exp_m; break;
                default: vx = sx->v, ex = sx->exp_v; break;
                }
                if (x == E_CAND) a = vx + o, e = ex + o;
                else nz.x[x - E_NOISE] = vx + o, nz.e[x - E_NOISE] = ex + o;
            }
            char key[96];
            snprintf(key, sizeof key, "%s%s", pt->name, q == Q_GRADS ? ".grad" : "");
            ParamAt at = {&r->L, o};
            const ErrStats es = check(S, q, pt->name, q == Q_GRADS || q == Q_PARAMS ? key : NULL, a, e, &nz,
                                      pt->size, describe_param, &at);
            if (q == Q_GRADS && S->grad_bad) S->grad_bad[k] = es.n_bad > 0;
        }
    }
}

// Test-only (--plant): one element of what the candidate (or the noise
// reference's member p->noise) reported becomes its expected value plus
// delta x the RMS of the expected tensor.
static void apply_plant(const Plant *p, const Run *r, State *st, double *loss, size_t nlog, int ne,
                        const Partial *pa) {
    const int k = p->noise ? E_NOISE + p->noise - 1 : E_CAND;
    if (k >= ne) die(EXIT_USAGE, "--plant noise:...: only the ratio rule has a noise reference");
    if (p->q == Q_LOGITS && !pa->logits) die(EXIT_USAGE, "--plant logits: %s offers no logits", pa->no_logits);
    if ((p->q == Q_M || p->q == Q_V) && !pa->moments)
        die(EXIT_USAGE, "--plant %s: %s offers no Adam moments", quantity_name(p->q), pa->no_moments);
    State *s = &st[k];
    double *a = NULL;
    const double *e = NULL;
    size_t n = 0;
    if (p->q == Q_LOSS) {
        a = &loss[k], e = &loss[E_REF], n = 1;
    } else if (p->q == Q_LOGITS) {
        a = s->logits, e = st[E_REF].logits, n = nlog;
    } else {
        const ParamTensor *pt = NULL;
        for (int i = 0; i < r->L.n_tensors && !pt; i++)
            if (!strcmp(r->L.t[i].name, p->tensor)) pt = &r->L.t[i];
        if (!pt) die(EXIT_USAGE, "--plant: no tensor '%s' in this model", p->tensor);
        const size_t off = pt->offset;
        n = pt->size;
        switch (p->q) {
        case Q_GRADS: a = s->grads + off, e = (s->gates_matched ? s->exp_grads : st[E_REF].grads) + off; break;
        case Q_PARAMS: a = s->params + off, e = s->exp_params + off; break;
        case Q_M: a = s->m + off, e = s->exp_m + off; break;
        default: a = s->v + off, e = s->exp_v + off; break;
        }
    }
    a[0] = e[0] + p->delta * rms_of(e, n);
}

// Whether the candidate's gradients pass against REF's own (unmatched)
// gradients: how a step with flipped gates would have fared without
// matching them (the evidence that the flips explain the difference).
static int passes_unmatched(const Options *o, Run *r, const State *st, int ne, char *why, size_t n) {
    Step S = {.o = o, .step = 0};
    Noise nz = {0};
    for (int j = 0; E_NOISE + j < ne; j++) nz.n++;
    for (int k = 0; k < r->L.n_tensors; k++) {
        const ParamTensor *pt = &r->L.t[k];
        const size_t off = pt->offset;
        for (int j = 0; j < nz.n; j++)
            nz.x[j] = st[E_NOISE + j].grads + off,
            nz.e[j] = (st[E_NOISE + j].gates_matched ? st[E_NOISE + j].exp_grads : st[E_REF].grads) + off;
        ParamAt at = {&r->L, off};
        check(&S, Q_GRADS, pt->name, NULL, st[E_CAND].grads + off, st[E_REF].grads + off, &nz, pt->size,
              describe_param, &at);
    }
    if (S.f.failed) snprintf(why, n, "%s", S.f.others);
    return !S.f.failed;
}

// Gather engine e's logits of the real positions: document after document
// (e NULL: only count them).
static size_t gather_logits(Engine *e, const Batch *b, int V, double *tmp, double *out) {
    if (e) e->ops->get_logits(e, tmp);
    size_t k = 0;
    for (int d = 0; d < b->B; d++) {
        size_t len = (size_t)b->n[d] * (size_t)V;
        if (e) memcpy(out + k, tmp + (size_t)d * (size_t)b->T * (size_t)V, len * sizeof *out);
        k += len;
    }
    return k;
}

// What the two engines offer, and so what the run checks and whose
// trajectory it follows. Lockstep from the reference's state needs the
// reference's moments and a candidate that takes them; the candidate must
// also report them, or a moment it stores wrong would be overwritten every
// step and never seen. Otherwise the candidate trains on its own trajectory.
static void partial_setup(const Options *o, const Engine *ref, const Engine *cand, Partial *pa) {
    memset(pa, 0, sizeof *pa);
    pa->logits = engine_offers_logits(ref) && engine_offers_logits(cand);
    if (!engine_offers_logits(cand)) pa->no_logits = o->names[1];
    else if (!engine_offers_logits(ref)) pa->no_logits = o->names[0];
    pa->moments = engine_offers_moments(cand);
    if (!pa->moments) pa->no_moments = o->names[1];
    if (!engine_offers_moments(cand))
        snprintf(pa->why_own, sizeof pa->why_own, "%s offers no Adam moments", o->names[1]);
    else if (!engine_takes_moments(cand))
        snprintf(pa->why_own, sizeof pa->why_own, "%s cannot take Adam moments", o->names[1]);
    else if (!engine_offers_moments(ref))
        snprintf(pa->why_own, sizeof pa->why_own, "the reference %s offers no Adam moments", o->names[0]);
    pa->own = pa->why_own[0] != '\0';
}

// What a run on the candidate's own trajectory can and cannot show.
static void trajectory_text(const Options *o, const Partial *pa, char *out, size_t n) {
    if (!pa->own) {
        snprintf(out, n, "every step starts from %s's parameters and Adam moments", o->names[0]);
        return;
    }
    snprintf(out, n, "the candidate's own (%s): it trains from the same start on the same batches and learning "
             "rates, and every step the reference starts from its parameters, so its logits, loss and gradients are "
             "checked as in lockstep; %s",
             pa->why_own,
             pa->moments ? "its update and its moments are checked against Adam in fp64 on its own gradients from "
                           "the moments it reports"
                         : "its update is checked against Adam in fp64 on its own gradients from the moments compare "
                           "accumulates from them since step 1: its moments are not seen, so a moment bug shows "
                           "only through the parameters, from the step after it");
}

// Per quantity: checked, or why not (the summary's "quantities:" line and
// the trace's "quantities").
static void quantities_report(const Options *o, const Partial *pa, const Totals *T, int probs, const char *no_probs,
                              cJSON *root) {
    static const Quantity qs[] = {Q_LOSS, Q_LOGITS, Q_GRADS, Q_PARAMS, Q_M, Q_V, Q_PROBS, Q_ACTS, Q_DACTS};
    cJSON *js = root ? cJSON_AddObjectToObject(root, "quantities") : NULL;
    printf("quantities:");
    int first = 1;
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        const Quantity q = qs[i];
        if (q == Q_PROBS && !probs) continue;   // no names were scored (no --samples, or --sampler own)
        const char *why = NULL, *who = NULL;
        if (!T->seen[q]) {
            if (q == Q_LOGITS && !pa->logits) why = "not offered", who = pa->no_logits;
            else if ((q == Q_M || q == Q_V) && !pa->moments) why = "not offered", who = pa->no_moments;
            else if (q == Q_PROBS && no_probs) why = "not offered", who = no_probs;
            else if (q == Q_ACTS || q == Q_DACTS) why = "not reported", who = o->names[1];
            else why = "not compared";
        }
        printf("%s %s %s", first ? "" : ",", quantity_name(q), why ? why : "checked");
        if (who) printf(" (%s)", who);
        first = 0;
        if (js) {
            cJSON *x = cJSON_AddObjectToObject(js, quantity_name(q));
            cJSON_AddBoolToObject(x, "checked", !why);
            if (why) cJSON_AddStringToObject(x, "reason", why);
            if (who) cJSON_AddStringToObject(x, "engine", who);
        }
    }
    printf("\n");
}

// A step line's value of quantity q: its largest error, or "-" where it was not compared.
static const char *step_value(const Totals *T, Quantity q, char *buf, size_t n) {
    if (T->seen[q]) snprintf(buf, n, "%.1e", T->abs[q].v);
    else snprintf(buf, n, "-");
    return buf;
}

int lockstep_run(Run *r, Trace *t, cJSON *steps) {
    Options *o = r->o;
    const size_t P = r->L.n_params;
    const int V = r->L.shape.vocab_size;
    const size_t nlog = (size_t)o->s.batch * (size_t)o->s.block_size * (size_t)V;
    const int ne = o->tol_ratio ? E_NUM : 2;
    Engine *eng[E_NUM] = {r->e[0], r->e[1]};
    for (int k = E_NOISE; k < ne; k++) eng[k] = make_noise_engine(r, k - E_NOISE);
    State st[E_NUM] = {0};
    for (int k = 0; k < ne; k++) {
        State *s = &st[k];
        s->logits = xmalloc(nlog * sizeof(double));
        double **bufs[] = {&s->grads, &s->params, &s->m, &s->v, &s->exp_params, &s->exp_m, &s->exp_v, &s->exp_grads};
        for (size_t j = 0; j < sizeof bufs / sizeof bufs[0]; j++) *bufs[j] = xmalloc(P * sizeof(double));
    }
    double *tmp = xmalloc(nlog * sizeof(double));
    // the reference's state before the step: what the others start from
    double *p0 = xmalloc(P * sizeof(double)), *m0 = xcalloc(P, sizeof(double)), *v0 = xcalloc(P, sizeof(double));
    memcpy(p0, r->init, P * sizeof(double));
    // What a partial engine offers decides what is compared and whose
    // trajectory the run follows. On the candidate's own trajectory (pa.own)
    // p0 is the candidate's parameters before the step, and each engine that
    // trains (the candidate, the noise reference's members) keeps its own
    // moments: its update is checked from own_m[k], own_v[k], the moments it
    // reports, or where the candidate reports none, those compare
    // accumulates from the engine's own gradients in fp64 (each member of the
    // noise reference keeps its own too, so its error includes what the
    // candidate's precision does to moments kept over many steps).
    Partial pa;
    partial_setup(o, r->e[0], r->e[1], &pa);
    if (o->sampler_own && !engine_offers_logits(r->e[0]))
        die(EXIT_USAGE, "--sampler own needs the reference's logits (its exact first-token probabilities); %s offers "
            "none", o->names[0]);
    double *own_m[E_NUM] = {NULL}, *own_v[E_NUM] = {NULL};
    if (pa.own)
        for (int k = E_CAND; k < ne; k++) own_m[k] = xcalloc(P, sizeof(double)), own_v[k] = xcalloc(P, sizeof(double));
    char traj[768];
    trajectory_text(o, &pa, traj, sizeof traj);
    if (pa.own && !o->quiet) printf("trajectory: %s\n", traj);
    if (!pa.logits && !o->quiet)
        printf("note: %s offers no logits: they are not compared%s\n", pa.no_logits,
               engine_offers_logits(r->e[0]) ? "" : ", and a failing loss is not traced to its definition");
    Failure f = {0};
    Totals T = {0};
    Batch b = {0};
    // ReLU gates: where rounding puts a ReLU input on the other side of 0 in
    // one engine, the forward agrees (the unit's output is ~0 either way)
    // but every gradient through the unit differs by a whole term. When the
    // reference and the candidate report their ReLU inputs, each engine's
    // gradients are compared with the fp64 model's under that engine's own
    // gates (match_gates), provided every gate that differs from the
    // reference's has both inputs within --relu-margin of 0.
    const size_t H = 4 * (size_t)r->L.shape.n_embd;
    const size_t nrelu = (size_t)r->L.shape.n_layer * (size_t)o->s.batch * (size_t)o->s.block_size * H;
    const int matching = o->relu_margin > 0 && r->e[0]->ops->get_relu_inputs && r->e[1]->ops->get_relu_inputs;
    double *relu[E_NUM] = {NULL};
    unsigned char *open = NULL;
    Engine *gate_engine = NULL;
    if (matching) {
        for (int k = 0; k < ne; k++) relu[k] = xmalloc(nrelu * sizeof(double));
        open = xmalloc(nrelu);
    }
    // The ops' outputs and gradients (common/activations.h), when the
    // candidate keeps them: compared every step against the fp64 CPU
    // engine's on the same state (with each engine's own gates where those
    // were matched); a failing step is localized from them (localize.h).
    int acts_on = r->e[1]->ops->get_activation != NULL;
    ActSet vals[E_NUM], exps[E_NUM], plain;   // each engine's; what each should be; the fp64 model's
    const int n_ops = act_count(&r->L.shape);
    signed char *ev_fwd = xcalloc((size_t)n_ops, 1), *ev_bwd = xcalloc((size_t)n_ops, 1);
    signed char *grad_bad = xcalloc((size_t)r->L.n_tensors, 1);
    double *ev_num = xcalloc(4 * (size_t)n_ops, sizeof *ev_num);
    if (acts_on) {
        actset_init(&plain, &r->L.shape, o->s.batch);
        for (int k = E_CAND; k < ne; k++) actset_init(&vals[k], &r->L.shape, o->s.batch),
                                          actset_init(&exps[k], &r->L.shape, o->s.batch);
    }
    if (matching || acts_on) gate_engine = make_gate_engine(r);
    // a reference that is the fp64 CPU engine itself (cpu, cpu@fp64) already
    // ran the fp64 model on this state: its ops are the expectation as they are
    const int ref_is_model = engine_cpu_order(o->names[0]) == ORDER_SEQ && engine_prec(o, 0) == PREC_FP64;
    int localized = 0;
    char first_where[1024] = "";
    const int allowed = max_excused_for(o);
    int n_excused = 0, steps_run = 0, n_skipped = 0, first_skipped = 0, flip_steps = 0, flip_units = 0;
    int flip_steps_unmatched = 0;
    cJSON *excused_list = cJSON_CreateArray();
    for (int step = 0; step < o->s.steps; step++) {
        run_step_begin(t, step);
        batch_make(&b, &r->d, step, o->s.batch, o->s.block_size);
        double loss[E_NUM] = {0}, dt[E_NUM] = {0};
        size_t n_real = 0;
        for (int k = 0; k < ne; k++) {
            double t0 = now_seconds();
            loss[k] = eng[k]->ops->step(eng[k], &b, step);
            dt[k] = now_seconds() - t0;
            if (k < 2) run_timeline_step(eng[k], k, t0, dt[k], step + 1);
            // only what the engines offer is asked for: the reference's logits
            // where it has them (the loss's diagnosis reads them), the others'
            // where both have them; the reference's moments where the run
            // follows it, the others' where the candidate reports them
            const int want_logits = k == E_REF ? engine_offers_logits(eng[k]) : pa.logits;
            n_real = gather_logits(want_logits ? eng[k] : NULL, &b, V, tmp, st[k].logits);
            eng[k]->ops->get_grads(eng[k], st[k].grads);
            eng[k]->ops->get_params(eng[k], st[k].params);
            if (k == E_REF ? !pa.own : pa.moments) eng[k]->ops->get_moments(eng[k], st[k].m, st[k].v);
            if (relu[k]) eng[k]->ops->get_relu_inputs(eng[k], relu[k]);
            if (k < 2) timeline_event(k, "read back", t0 + dt[k], now_seconds() - t0 - dt[k], step + 1);
            st[k].skipped = eng[k]->ops->step_skipped && eng[k]->ops->step_skipped(eng[k], &st[k].scale);
            if (k == E_REF) continue;
            const double *mk = pa.own ? own_m[k] : m0, *vk = pa.own ? own_v[k] : v0;   // its moments before the step
            if (st[k].skipped) {   // what a skipped update leaves: the state it started from
                memcpy(st[k].exp_params, p0, P * sizeof(double));
                memcpy(st[k].exp_m, mk, P * sizeof(double));
                memcpy(st[k].exp_v, vk, P * sizeof(double));
            } else {
                adam_expected(&o->s, step, p0, mk, vk, st[k].grads, st[k].exp_params, st[k].exp_m, st[k].exp_v, P);
            }
        }
        for (int i = 0; i < o->n_plants; i++)   // test-only: a gate flip of a chosen size
            if (o->plant[i].relu && o->plant[i].step == step + 1 && matching)
                relu[E_REF][0] = o->plant[i].delta, relu[E_CAND][0] = -o->plant[i].delta;
        if (acts_on) {   // the fp64 model's ops on the reference's state
            if (ref_is_model) {
                actset_fetch(&plain, eng[E_REF], &r->L.shape, &b);
            } else {
                gate_engine->ops->set_state(gate_engine, p0, m0, v0);
                gate_engine->ops->step(gate_engine, &b, step);
                actset_fetch(&plain, gate_engine, &r->L.shape, &b);
            }
            for (int k = E_CAND; k < ne; k++) {
                if (!actset_fetch(&vals[k], eng[k], &r->L.shape, &b) && k == E_CAND) {
                    acts_on = 0;   // it keeps none after all
                    if (!o->quiet) printf("note: %s reports no op outputs or gradients: a failing step is localized "
                                          "from the gradient tensors alone\n", o->names[1]);
                    break;
                }
                // fp16: a step whose scaled gradients overflowed has no gradients to compare
                if (st[k].skipped) memset(vals[k].have_bwd, 0, (size_t)vals[k].n_ops);
            }
        }
        if (matching)
            for (int k = E_CAND; k < ne; k++)
                match_gates(r, gate_engine, &b, step, p0, m0, v0, &st[k], relu[k], relu[E_REF], open, nrelu,
                            acts_on ? &exps[k] : NULL);
        for (int i = 0; i < o->n_plants; i++)
            if (!o->plant[i].relu && o->plant[i].q != Q_PROBS && o->plant[i].step == step + 1)
                apply_plant(&o->plant[i], r, st, loss, n_real, ne, &pa);
        steps_run++;
        Step S = {.o = o, .step = step + 1, .gates_matched = matching};
        cJSON *so = NULL;
        if (steps) {
            so = run_trace_step(o, step, loss, dt);
            // the long layout alone: the older max_err/max_rel maps held the
            // same max_abs/max_rel again (readers build them from "errors")
            S.errors = cJSON_AddArrayToObject(so, "errors");
        }
        S.grad_bad = grad_bad;
        memset(grad_bad, 0, (size_t)r->L.n_tensors);
        compare_step(&S, r, &b, st, loss, n_real, ne, &pa);
        double *ef = ev_num, *bf = ev_num + n_ops, *eb = ev_num + 2 * n_ops, *bb = ev_num + 3 * n_ops;
        if (acts_on) {
            ActSides sides = {.cand = &vals[E_CAND], .cand_exp = st[E_CAND].gates_matched ? &exps[E_CAND] : &plain};
            for (int k = E_NOISE; k < ne; k++) {
                sides.noise[sides.n_noise] = &vals[k];
                sides.noise_exp[sides.n_noise++] = st[k].gates_matched ? &exps[k] : &plain;
            }
            acts_compare(&S, &r->L.shape, &b, &sides, ev_fwd, ev_bwd, ef, bf, eb, bb);
        }
        const int ok = !S.f.failed;
        // where it broke: from the ops where the candidate reports them, else
        // from the gradient tensors in backward order
        char where[1024] = "";
        Divergence dv = {0};
        // the logits: compared (1 off, 0 agree), else the logits op where the
        // candidate reports it, else not known (-1: a candidate without logits)
        const int logits_bad = pa.logits ? S.bad[Q_LOGITS] > 0 : acts_on ? ev_fwd[n_ops - 1] : -1;
        if (!ok && acts_on) {
            const StepEvidence ev = {n_ops, ev_fwd, ev_bwd, ef, bf, eb, bb, logits_bad, S.bad[Q_LOSS] > 0, grad_bad};
            localize_ops(&r->L.shape, &r->L, &ev, &dv);
            if (dv.found) snprintf(where, sizeof where, "%s", dv.text);
        }
        if (!ok && !where[0] && S.bad[Q_GRADS]) localize_grads(&r->L.shape, &r->L, grad_bad, where, sizeof where);
        if (!ok && pa.own && !pa.moments && S.bad[Q_PARAMS] && !S.bad[Q_GRADS]) {
            const size_t w = strlen(where);
            snprintf(where + w, sizeof where - w, "%sthe update is off while the gradients agree: Adam's step, or the "
                     "moments %s kept (not offered: not seen), is wrong%s", w ? "\n  " : "", o->names[1],
                     step ? "" : " (at step 1 the moments hold one gradient only: the step itself)");
        }
        if (!ok && S.bad[Q_LOSS] && logits_bad <= 0) {   // which loss the candidate computes
            char note[640];
            const size_t w = strlen(where);
            if (!engine_offers_logits(r->e[0]))
                snprintf(note, sizeof note, "which loss %s computes is not traced: the reference %s offers no logits",
                         o->names[1], o->names[0]);
            else
                loss_definition_note(st[E_REF].logits, b.tokens, b.n, b.B, b.T, V, loss[E_CAND], o->s.token_mean,
                                     note, sizeof note);
            snprintf(where + w, sizeof where - w, "%s%s%s", w ? "\n  " : "", note,
                     logits_bad < 0 && engine_offers_logits(r->e[0])
                         ? " (its own logits are not offered: whether they agree is not known)" : "");
        }
        const State *c = &st[E_CAND];
        char skip_note[96] = "", why[320] = "";
        if (c->skipped) {
            if (!n_skipped++) first_skipped = step + 1;
            snprintf(skip_note, sizeof skip_note, " (update skipped: fp16 gradient overflow at loss scale %g)",
                     c->scale);
            if (so) cJSON_AddNumberToObject(so, "skipped_loss_scale", c->scale);
        }
        // The candidate's flipped gates: matched (its gradients compared
        // with the fp64 model's under its own gates) or, with an input
        // beyond the margin, not (compared with REF's, and said).
        int excused = 0;
        char unmatched[512] = "";
        if (matching && c->flips) {
            flip_text(o, c, why, sizeof why);
            if (c->gates_matched) {
                flip_steps++;
                flip_units += c->flips;
                // excused: it passes with its own gates and would fail with REF's
                excused = ok && !passes_unmatched(o, r, st, ne, unmatched, sizeof unmatched);
                if (so) {
                    cJSON *g = cJSON_AddObjectToObject(so, "gate_flips");
                    cJSON_AddNumberToObject(g, "units", c->flips);
                    trace_add_number(g, "largest_input", c->flip_worst);
                    cJSON_AddBoolToObject(g, "matched", 1);
                }
                if (excused) {
                    n_excused++;
                    cJSON *x = cJSON_CreateObject();
                    cJSON_AddNumberToObject(x, "step", step + 1);
                    cJSON_AddStringToObject(x, "reason", why);
                    cJSON_AddStringToObject(x, "out_of_tolerance", unmatched);
                    cJSON_AddBoolToObject(x, "explained", 1);
                    cJSON_AddItemToArray(excused_list, x);
                    if (so) cJSON_AddStringToObject(so, "excused", why);
                }
            } else {
                flip_steps_unmatched++;
                if (so) {
                    cJSON *g = cJSON_AddObjectToObject(so, "gate_flips");
                    cJSON_AddNumberToObject(g, "units", c->flips);
                    cJSON_AddNumberToObject(g, "beyond_margin", c->flips_out);
                    trace_add_number(g, "largest_input", c->flip_worst);
                    cJSON_AddBoolToObject(g, "matched", 0);
                }
            }
        }
        totals_merge(&T, &S.T);
        if (S.f.failed && !f.failed) {
            f = S.f;
            snprintf(first_where, sizeof first_where, "%s", where);
        }
        if (so) {
            cJSON_AddBoolToObject(so, "ok", ok);
            cJSON_AddItemToArray(steps, so);
        }
        const int show_excused = excused && (!o->quiet || n_excused <= 3);
        if (!ok || skip_note[0] || show_excused ||
            (!o->quiet && ((step + 1) % o->every == 0 || step == 0 || step + 1 == o->s.steps))) {
            char vl[16], vm[16], vv[16];   // "-": not compared (not offered)
            printf("step %4d | loss %.6f | loss err %.1e | logits %s | grads %.1e (rel %.1e) | params %.1e | m %s "
                   "| v %s | %s%s\n",
                   step + 1, loss[E_REF], S.T.abs[Q_LOSS].v, step_value(&S.T, Q_LOGITS, vl, sizeof vl),
                   S.T.abs[Q_GRADS].v, S.T.rel[Q_GRADS].v, S.T.abs[Q_PARAMS].v, step_value(&S.T, Q_M, vm, sizeof vm),
                   step_value(&S.T, Q_V, vv, sizeof vv), ok ? (excused ? "ok, gates matched" : "ok") : "FAIL",
                   skip_note);
            if (show_excused)
                printf("           %s; with %s's own gates the fp64 gradients agree (with %s's out of tolerance: %s)\n",
                       why, o->names[1], o->names[0], unmatched);
        }
        if (where[0]) {
            printf("  %s\n", where);
            if (so) {
                cJSON *x = cJSON_AddObjectToObject(so, "first_divergence");
                if (dv.found) {
                    cJSON_AddStringToObject(x, "op", dv.op_name);
                    cJSON_AddStringToObject(x, "direction", dv.backward ? "backward" : "forward");
                    trace_add_number(x, "err_rms", dv.err);
                    trace_add_number(x, "bound", dv.bound);
                }
                cJSON_AddStringToObject(x, "text", where);
            }
            timeline_event(1, dv.found ? dv.op_name : "first failure", now_seconds(), 0, step + 1);
            if (!localized++ && t->root) cJSON_AddStringToObject(t->root, "first_divergence", where);
        }
        if (!ok && matching && c->flips && !c->gates_matched)
            printf("  %s; %d of them with an input beyond --relu-margin %g (largest %.3g): not rounding, so not "
                   "matched\n", why, c->flips_out, o->relu_margin, c->flip_worst);
        if (!ok && !matching && !r->e[1]->ops->get_relu_inputs)
            printf("  (%s reports no ReLU inputs: a gate that rounding flips cannot be matched; "
                   "docs/outside_engines.md)\n", o->names[1]);
        if (!ok) grads_zero_report(&r->L, c->grads, st[E_REF].grads, o->names[1], stdout);
        if (!ok && !o->keep_going) break;
        if (!pa.own) {
            // lockstep: the others continue from the reference's state
            memcpy(p0, st[E_REF].params, P * sizeof(double));
            memcpy(m0, st[E_REF].m, P * sizeof(double));
            memcpy(v0, st[E_REF].v, P * sizeof(double));
            for (int k = 1; k < ne; k++) eng[k]->ops->set_state(eng[k], p0, m0, v0);
        } else {
            // the candidate's own trajectory: it goes on as it is; the others
            // start from its parameters, each training engine keeping its own
            // moments (reported, or accumulated here from its gradients)
            memcpy(p0, st[E_CAND].params, P * sizeof(double));
            for (int k = E_CAND; k < ne; k++) {
                memcpy(own_m[k], pa.moments ? st[k].m : st[k].exp_m, P * sizeof(double));
                memcpy(own_v[k], pa.moments ? st[k].v : st[k].exp_v, P * sizeof(double));
            }
            memcpy(m0, own_m[E_CAND], P * sizeof(double));   // what the reference and the samples are given
            memcpy(v0, own_v[E_CAND], P * sizeof(double));
            engine_set_state(eng[E_REF], p0, m0, v0);
            for (int k = E_NOISE; k < ne; k++) eng[k]->ops->set_state(eng[k], p0, NULL, NULL);
        }
    }
    int failed = f.failed;
    int too_many_skipped = n_skipped > allowed;
    SampleResult sr = {0};
    int sampled = o->samples_given && o->s.samples > 0 && (!failed || o->keep_going) && steps_run == o->s.steps;
    if (sampled) {
        sr = samples_check(r, eng, ne, p0, m0, v0, t->root);
        totals_merge(&T, &sr.T);
        if (sr.f.failed && !f.failed) f = sr.f;
        if (sr.failed) failed = 1;
    }
    if (f.failed) {
        failure_print(o, &f);
        if (first_where[0]) printf("  %s\n", first_where);
    }
    failed |= too_many_skipped;
    char rule[160] = "";
    if (o->tol_ratio)
        snprintf(rule, sizeof rule, " (vs the noise reference: the cpu engine's %s with its sums in %d other orders)",
                 engine_prec(o, 1) == PREC_FP32 ? "fp32" : "emulation of the recipe", NOISE_MEMBERS);
    char smp[200] = "";   // which sampler check ran (samples.h)
    if (sampled) samples_verdict(&sr, smp, sizeof smp);
    printf("%s: lockstep%s, %s (%s) vs %s (%s), %d of %d steps run, batch %d, %s rule%s%s\n", failed ? "FAIL" : "PASS",
           pa.own ? " on the candidate's own trajectory" : "", o->names[0], precision_name(engine_prec(o, 0)),
           o->names[1], precision_name(engine_prec(o, 1)), steps_run, o->s.steps, o->s.batch,
           o->tol_ratio ? "ratio" : "fixed", rule, smp);
    quantities_report(o, &pa, &T, sampled && !sr.own, sampled && sr.unscored[0] ? sr.unscored : NULL, t->root);
    if (pa.own) printf("trajectory: %s\n", traj);
    if (n_skipped || engine_prec(o, 1) == PREC_FP16) {
        printf("skipped updates (fp16 loss scaling: a gradient overflowed): %d (allowed %d)", n_skipped, allowed);
        if (n_skipped) printf(", the first at step %d", first_skipped);
        printf("%s\n", too_many_skipped ? ": too many, the run fails (--max-excused N allows more)" : "");
    }
    if (!matching)
        printf("ReLU gates: not matched (%s)\n", o->relu_margin > 0 ? "an engine reports no ReLU inputs"
                                                                    : "--relu-margin 0");
    else if (!flip_steps && !flip_steps_unmatched)
        printf("ReLU gates: none flipped against %s's\n", o->names[0]);
    else
        printf("ReLU gates: %d unit(s) at %d step(s) flipped against %s's within --relu-margin %g and were matched "
               "(%s compared with the fp64 model under its own gates); %d of those steps passed only so "
               "(excused)%s\n",
               flip_units, flip_steps, o->names[0], o->relu_margin, o->names[1], n_excused,
               flip_steps_unmatched ? "; at other steps flips beyond the margin were not matched" : "");
    if (n_excused) {
        cJSON *x;
        int shown = 0;
        cJSON_ArrayForEach(x, excused_list) {
            if (shown++ == 5) {
                printf("  ... (%d more in the trace)\n", n_excused - 5);
                break;
            }
            printf("  step %d: %s; with %s's gates out of tolerance: %s\n", cJSON_GetObjectItem(x, "step")->valueint,
                   cJSON_GetObjectItem(x, "reason")->valuestring, o->names[0],
                   cJSON_GetObjectItem(x, "out_of_tolerance")->valuestring);
        }
    }
    if (sampled) samples_print(o, &sr);
    totals_print(o, &T);
    if (t->root) {
        cJSON_AddStringToObject(t->root, "verdict", failed ? "fail" : "pass");
        cJSON_AddNumberToObject(t->root, "steps_run", steps_run);
        cJSON_AddStringToObject(t->root, "tolerance_rule", o->tol_ratio ? "ratio" : "fixed");
        cJSON *tj = cJSON_AddObjectToObject(t->root, "trajectory");
        cJSON_AddStringToObject(tj, "follows", pa.own ? "candidate" : "reference");
        cJSON_AddStringToObject(tj, "text", traj);
        if (f.failed) failure_to_json(cJSON_AddObjectToObject(t->root, "first_failure"), &f);
        else cJSON_AddNullToObject(t->root, "first_failure");
        if (n_skipped || engine_prec(o, 1) == PREC_FP16) {
            cJSON *sk = cJSON_AddObjectToObject(t->root, "skipped_steps");
            cJSON_AddNumberToObject(sk, "count", n_skipped);
            cJSON_AddNumberToObject(sk, "allowed", allowed);
            cJSON_AddNumberToObject(sk, "first", first_skipped);
        }
        cJSON *gf = cJSON_AddObjectToObject(t->root, "gate_flips");
        cJSON_AddBoolToObject(gf, "matching", matching);
        cJSON_AddNumberToObject(gf, "steps", flip_steps);
        cJSON_AddNumberToObject(gf, "units", flip_units);
        cJSON_AddNumberToObject(gf, "steps_beyond_margin", flip_steps_unmatched);
        cJSON *ex = cJSON_AddObjectToObject(t->root, "excused_steps");
        cJSON_AddNumberToObject(ex, "count", n_excused);
        cJSON_AddItemToObject(ex, "steps", excused_list);
        excused_list = NULL;
        totals_to_json(cJSON_AddObjectToObject(t->root, "max_errors"), o, &T);
    }
    cJSON_Delete(excused_list);
    for (int k = 0; k < E_NUM; k++) free(relu[k]);
    free(open);
    if (gate_engine) gate_engine->ops->destroy(gate_engine);
    batch_free(&b);
    for (int k = 0; k < ne; k++) {
        State *s = &st[k];
        double *bufs[] = {s->logits, s->grads, s->params, s->m, s->v, s->exp_params, s->exp_m, s->exp_v, s->exp_grads};
        for (size_t j = 0; j < sizeof bufs / sizeof bufs[0]; j++) free(bufs[j]);
    }
    for (int k = E_NOISE; k < ne; k++) eng[k]->ops->destroy(eng[k]);
    if (r->e[1]->ops->get_activation) {
        actset_free(&plain);
        for (int k = E_CAND; k < ne; k++) actset_free(&vals[k]), actset_free(&exps[k]);
    }
    for (int k = 0; k < E_NUM; k++) free(own_m[k]), free(own_v[k]);
    free(ev_fwd);
    free(ev_bwd);
    free(ev_num);
    free(grad_bad);
    free(tmp);
    free(p0);
    free(m0);
    free(v0);
    return failed;
}
