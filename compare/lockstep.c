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
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "compare.h"
#include "engines.h"
#include "traces/timeline.h"
#include "grad_check.h"
#include "samples.h"
#include "common/util.h"

enum { E_REF, E_CAND, E_F32, E_NUM };   // E_F32: the ratio rule's CPU engine (fp32 or the mixed recipe)

// What an engine holds after a step, in float64; for the candidate and the
// fp32 engine also the update they should have made (exp_*).
typedef struct {
    double *logits, *grads, *params, *m, *v;   // logits: the real positions only, gathered
    double *exp_params, *exp_m, *exp_v;
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

// Fetch both engines' ReLU inputs of this step; 1 if some gate is open in one
// and shut in the other and every such input is within `margin` of 0 (why
// gets the evidence), 0 otherwise.
static int relu_flips(Run *r, const Batch *b, double *relu[2], double margin, char *why, size_t n) {
    if (!(margin > 0)) return 0;
    for (int k = 0; k < 2; k++) r->e[k]->ops->get_relu_inputs(r->e[k], relu[k]);
    const size_t H = 4 * (size_t)r->L.shape.n_embd;
    int flips = 0, first[4] = {0};
    double worst = 0, fa = 0, fb = 0;
    for (int l = 0; l < r->L.shape.n_layer; l++)
        for (int d = 0; d < b->B; d++)
            for (int t = 0; t < b->n[d]; t++)
                for (size_t j = 0; j < H; j++) {
                    size_t i = (((size_t)l * (size_t)b->B + (size_t)d) * (size_t)b->T + (size_t)t) * H + j;
                    double x = relu[1][i], y = relu[0][i];
                    if ((x > 0) == (y > 0)) continue;
                    double m = fmax(fabs(x), fabs(y));
                    if (flips++ == 0) {
                        first[0] = l, first[1] = d, first[2] = t, first[3] = (int)j;
                        fa = x, fb = y;
                    }
                    if (!(m <= worst)) worst = m;
                }
    if (!flips || !(worst <= margin)) return 0;
    snprintf(why, n, "ReLU gate flip: %d unit(s), the first layer %d, document %d, position %d, unit %d "
             "(input %s %.2e, %s %.2e)", flips, first[0], first[1], first[2], first[3],
             r->o->names[1], fa, r->o->names[0], fb);
    return 1;
}

static Engine *make_ratio_engine(Run *r) {
    const Precision p = engine_prec(r->o, 1);
    EngineConfig cfg = {.s = &r->o->s, .L = &r->L, .precision = p, .fault = FAULT_NONE,
                        .max_batch = r->o->s.batch, .loss_scale = r->o->loss_scale};
    char err[512] = "";
    Engine *e = engine_new("cpu", &cfg, r->init, err, sizeof err);
    if (!e) die(EXIT_USAGE, "the ratio rule's %s cpu engine: %s", precision_name(p), err);
    return e;
}

// Compare a step's state: st[k] holds engine k's state after the step.
static void compare_step(Step *S, Run *r, const Batch *b, State *st, double loss[E_NUM], size_t nlog) {
    const int ratio = S->o->tol_ratio;
    State *c = &st[E_CAND], *f = ratio ? &st[E_F32] : NULL;
    // in the order they are computed: logits, loss, gradients, update
    LogitsAt la = {b, &r->d, r->L.shape.vocab_size};
    check(S, Q_LOGITS, "logits", "logits", c->logits, st[E_REF].logits, f ? f->logits : NULL,
          f ? st[E_REF].logits : NULL, nlog, describe_logit, &la);
    check(S, Q_LOSS, "loss", "loss", &loss[E_CAND], &loss[E_REF], f ? &loss[E_F32] : NULL, &loss[E_REF], 1,
          describe_loss, NULL);
    // The update: the candidate's new parameters and moments against Adam
    // applied in float64 to the candidate's own gradients from the shared
    // start (Adam divides by sqrt(v)+eps, which magnifies the last bits of a
    // gradient near zero: comparing with the reference's update would test
    // the gradients again, not the update). The gradients themselves are
    // checked against the reference's.
    static const Quantity qs[] = {Q_GRADS, Q_PARAMS, Q_M, Q_V};
    for (size_t qi = 0; qi < sizeof qs / sizeof qs[0]; qi++) {
        Quantity q = qs[qi];
        if (q == Q_GRADS && c->skipped) continue;   // they overflowed: the update is checked to be none
        for (int k = 0; k < r->L.n_tensors; k++) {
            const ParamTensor *pt = &r->L.t[k];
            const size_t o = pt->offset;
            const double *a, *e, *fa = NULL, *fe = NULL;
            switch (q) {
            case Q_GRADS: a = c->grads, e = st[E_REF].grads; if (f) fa = f->grads, fe = e; break;
            case Q_PARAMS: a = c->params, e = c->exp_params; if (f) fa = f->params, fe = f->exp_params; break;
            case Q_M: a = c->m, e = c->exp_m; if (f) fa = f->m, fe = f->exp_m; break;
            default: a = c->v, e = c->exp_v; if (f) fa = f->v, fe = f->exp_v; break;
            }
            char key[96];
            snprintf(key, sizeof key, "%s%s", pt->name, q == Q_GRADS ? ".grad" : "");
            ParamAt at = {&r->L, o};
            check(S, q, pt->name, q == Q_GRADS || q == Q_PARAMS ? key : NULL, a + o, e + o, fa ? fa + o : NULL,
                  fe ? fe + o : NULL, pt->size, describe_param, &at);
        }
    }
}

// Gather engine e's logits of the real positions: document after document.
static size_t gather_logits(Engine *e, const Batch *b, int V, double *tmp, double *out) {
    e->ops->get_logits(e, tmp);
    size_t k = 0;
    for (int d = 0; d < b->B; d++) {
        size_t len = (size_t)b->n[d] * (size_t)V;
        memcpy(out + k, tmp + (size_t)d * (size_t)b->T * (size_t)V, len * sizeof *out);
        k += len;
    }
    return k;
}

int lockstep_run(Run *r, Trace *t, cJSON *steps) {
    Options *o = r->o;
    const size_t P = r->L.n_params;
    const int V = r->L.shape.vocab_size;
    const size_t nlog = (size_t)o->s.batch * (size_t)o->s.block_size * (size_t)V;
    const int ne = o->tol_ratio ? 3 : 2;
    Engine *eng[E_NUM] = {r->e[0], r->e[1], o->tol_ratio ? make_ratio_engine(r) : NULL};
    State st[E_NUM] = {0};
    for (int k = 0; k < ne; k++) {
        State *s = &st[k];
        s->logits = xmalloc(nlog * sizeof(double));
        double **bufs[] = {&s->grads, &s->params, &s->m, &s->v, &s->exp_params, &s->exp_m, &s->exp_v};
        for (size_t j = 0; j < sizeof bufs / sizeof bufs[0]; j++) *bufs[j] = xmalloc(P * sizeof(double));
    }
    double *tmp = xmalloc(nlog * sizeof(double));
    // the reference's state before the step: what the others start from
    double *p0 = xmalloc(P * sizeof(double)), *m0 = xcalloc(P, sizeof(double)), *v0 = xcalloc(P, sizeof(double));
    memcpy(p0, r->init, P * sizeof(double));
    Failure f = {0};
    Totals T = {0};
    Batch b = {0};
    const size_t H = 4 * (size_t)r->L.shape.n_embd;
    const size_t nrelu = (size_t)r->L.shape.n_layer * (size_t)o->s.batch * (size_t)o->s.block_size * H;
    double *relu[2] = {NULL, NULL};
    if (r->e[0]->ops->get_relu_inputs && r->e[1]->ops->get_relu_inputs)
        for (int k = 0; k < 2; k++) relu[k] = xmalloc(nrelu * sizeof(double));
    const int allowed = max_excused_for(o);
    int n_excused = 0, steps_run = 0, n_skipped = 0, first_skipped = 0;
    cJSON *excused_list = cJSON_CreateArray();
    Totals Tx = {0};   // the excused steps' largest errors, reported apart
    for (int step = 0; step < o->s.steps; step++) {
        run_step_begin(t, step);
        batch_make(&b, &r->d, step, o->s.batch, o->s.block_size);
        double loss[E_NUM] = {0}, dt[E_NUM] = {0};
        size_t n_real = 0;
        for (int k = 0; k < ne; k++) {
            double t0 = now_seconds();
            loss[k] = eng[k]->ops->step(eng[k], &b, step);
            dt[k] = now_seconds() - t0;
            run_timeline_step(eng[k], k, t0, dt[k], step + 1);
            n_real = gather_logits(eng[k], &b, V, tmp, st[k].logits);
            eng[k]->ops->get_grads(eng[k], st[k].grads);
            eng[k]->ops->get_params(eng[k], st[k].params);
            eng[k]->ops->get_moments(eng[k], st[k].m, st[k].v);
            timeline_event(k, "read back", t0 + dt[k], now_seconds() - t0 - dt[k], step + 1);
            st[k].skipped = eng[k]->ops->step_skipped && eng[k]->ops->step_skipped(eng[k], &st[k].scale);
            if (k == E_REF) continue;
            if (st[k].skipped) {   // what a skipped update leaves: the state it started from
                memcpy(st[k].exp_params, p0, P * sizeof(double));
                memcpy(st[k].exp_m, m0, P * sizeof(double));
                memcpy(st[k].exp_v, v0, P * sizeof(double));
            } else {
                adam_expected(&o->s, step, p0, m0, v0, st[k].grads, st[k].exp_params, st[k].exp_m, st[k].exp_v, P);
            }
        }
        steps_run++;
        Step S = {.o = o, .step = step + 1};
        cJSON *so = NULL;
        if (steps) {
            so = run_trace_step(o, step, loss, dt);
            S.max_err = cJSON_AddObjectToObject(so, "max_err");
            S.max_rel = cJSON_AddObjectToObject(so, "max_rel");
            S.errors = cJSON_AddArrayToObject(so, "errors");
        }
        compare_step(&S, r, &b, st, loss, n_real);
        int ok = !S.f.failed;
        char skip_note[96] = "";
        if (st[E_CAND].skipped) {
            if (!n_skipped++) first_skipped = step + 1;
            snprintf(skip_note, sizeof skip_note, " (update skipped: fp16 gradient overflow at loss scale %g)",
                     st[E_CAND].scale);
            if (so) cJSON_AddNumberToObject(so, "skipped_loss_scale", st[E_CAND].scale);
        }
        // A ReLU whose input is within rounding of 0 may open in one engine
        // and stay shut in the other: the forward agrees (the unit's output
        // is ~0 either way) but every gradient through that unit differs by
        // a whole term. Such a step is excused, with the evidence printed;
        // the logits and the loss must still agree. More than `allowed`
        // excused steps fail the run.
        char why[256] = "";
        int excused = !ok && !S.bad[Q_LOSS] && !S.bad[Q_LOGITS] && relu[0] &&
                      relu_flips(r, &b, relu, o->relu_margin, why, sizeof why);
        if (excused) {
            n_excused++;
            totals_merge(&Tx, &S.T);
            cJSON *x = cJSON_CreateObject();
            cJSON_AddNumberToObject(x, "step", step + 1);
            cJSON_AddStringToObject(x, "reason", why);
            cJSON_AddStringToObject(x, "out_of_tolerance", S.f.others);
            cJSON_AddStringToObject(x, "first", S.f.where);
            trace_add_number(x, "abs_err", S.f.abs_err);
            trace_add_number(x, "tol", S.f.tol);
            cJSON_AddItemToArray(excused_list, x);
        } else {
            totals_merge(&T, &S.T);
            if (S.f.failed && !f.failed) f = S.f;
        }
        if (so) {
            cJSON_AddBoolToObject(so, "ok", ok || excused);
            if (excused) cJSON_AddStringToObject(so, "excused", why);
            cJSON_AddItemToArray(steps, so);
        }
        if (!ok || skip_note[0] || (!o->quiet && ((step + 1) % o->every == 0 || step == 0 || step + 1 == o->s.steps))) {
            printf("step %4d | loss %.6f | loss %.1e | logits %.1e | grads %.1e (rel %.1e) | params %.1e | m %.1e | "
                   "v %.1e | %s%s%s\n",
                   step + 1, loss[E_REF], S.T.abs[Q_LOSS].v, S.T.abs[Q_LOGITS].v, S.T.abs[Q_GRADS].v,
                   S.T.rel[Q_GRADS].v, S.T.abs[Q_PARAMS].v, S.T.abs[Q_M].v, S.T.abs[Q_V].v,
                   ok ? "ok" : excused ? "excused: " : "FAIL", why, skip_note);
            if (excused) printf("           excused errors: %s (first: %s, |a-b| %.3g > %.3g)\n", S.f.others,
                                S.f.where, S.f.abs_err, S.f.tol);
        }
        if (!ok && !excused) grads_zero_report(&r->L, st[E_CAND].grads, st[E_REF].grads, o->names[1], stdout);
        if (!ok && !excused && !o->keep_going) break;
        // lockstep: the others continue from the reference's state
        memcpy(p0, st[E_REF].params, P * sizeof(double));
        memcpy(m0, st[E_REF].m, P * sizeof(double));
        memcpy(v0, st[E_REF].v, P * sizeof(double));
        for (int k = 1; k < ne; k++) eng[k]->ops->set_state(eng[k], p0, m0, v0);
    }
    int failed = f.failed;
    int too_many_excused = n_excused > allowed, too_many_skipped = n_skipped > allowed;
    SampleResult sr = {0};
    int sampled = o->samples_given && o->s.samples > 0 && (!failed || o->keep_going) && steps_run == o->s.steps;
    if (sampled) {
        sr = samples_check(r, eng, ne, p0, m0, v0, t->root);
        totals_merge(&T, &sr.T);
        if (sr.f.failed && !f.failed) f = sr.f;
        if (sr.failed) failed = 1;
    }
    if (f.failed) failure_print(o, &f);
    failed |= too_many_excused | too_many_skipped;
    printf("%s: lockstep, %s (%s) vs %s (%s), %d of %d steps run, batch %d, %s rule%s\n", failed ? "FAIL" : "PASS",
           o->names[0], precision_name(engine_prec(o, 0)), o->names[1], precision_name(engine_prec(o, 1)), steps_run,
           o->s.steps, o->s.batch, o->tol_ratio ? "ratio" : "fixed",
           o->tol_ratio ? (engine_prec(o, 1) == PREC_FP32 ? " (vs the plain fp32 cpu engine on the same state)"
                                                           : " (vs the cpu engine's emulation on the same state)")
                        : "");
    if (n_skipped || engine_prec(o, 1) == PREC_FP16) {
        printf("skipped updates (fp16 loss scaling: a gradient overflowed): %d (allowed %d)", n_skipped, allowed);
        if (n_skipped) printf(", the first at step %d", first_skipped);
        printf("%s\n", too_many_skipped ? ": too many, the run fails (--max-excused N allows more)" : "");
    }
    printf("excused steps: %d (allowed %d)%s\n", n_excused, allowed,
           too_many_excused ? ": too many, the run fails (--max-excused N allows more)" : "");
    if (n_excused) {
        cJSON *x;
        cJSON_ArrayForEach(x, excused_list) {
            printf("  step %d: %s; out of tolerance: %s\n", cJSON_GetObjectItem(x, "step")->valueint,
                   cJSON_GetObjectItem(x, "reason")->valuestring,
                   cJSON_GetObjectItem(x, "out_of_tolerance")->valuestring);
        }
        printf("  largest errors of the excused steps (not in the table below): grads %.3e (step %d, %s), params "
               "%.3e (step %d, %s)\n",
               Tx.abs[Q_GRADS].v, Tx.abs[Q_GRADS].step, Tx.abs[Q_GRADS].tensor, Tx.abs[Q_PARAMS].v,
               Tx.abs[Q_PARAMS].step, Tx.abs[Q_PARAMS].tensor);
    }
    if (sampled) samples_print(o, &sr);
    totals_print(o, &T);
    if (t->root) {
        cJSON_AddStringToObject(t->root, "verdict", failed ? "fail" : "pass");
        cJSON_AddNumberToObject(t->root, "steps_run", steps_run);
        cJSON_AddStringToObject(t->root, "tolerance_rule", o->tol_ratio ? "ratio" : "fixed");
        if (f.failed) failure_to_json(cJSON_AddObjectToObject(t->root, "first_failure"), &f);
        else cJSON_AddNullToObject(t->root, "first_failure");
        if (n_skipped || engine_prec(o, 1) == PREC_FP16) {
            cJSON *sk = cJSON_AddObjectToObject(t->root, "skipped_steps");
            cJSON_AddNumberToObject(sk, "count", n_skipped);
            cJSON_AddNumberToObject(sk, "allowed", allowed);
            cJSON_AddNumberToObject(sk, "first", first_skipped);
        }
        cJSON *ex = cJSON_AddObjectToObject(t->root, "excused_steps");
        cJSON_AddNumberToObject(ex, "count", n_excused);
        cJSON_AddNumberToObject(ex, "allowed", allowed);
        cJSON_AddBoolToObject(ex, "too_many", too_many_excused);
        cJSON_AddItemToObject(ex, "steps", excused_list);
        excused_list = NULL;
        if (n_excused) totals_to_json(cJSON_AddObjectToObject(ex, "max_errors"), o, &Tx);
        totals_to_json(cJSON_AddObjectToObject(t->root, "max_errors"), o, &T);
    }
    cJSON_Delete(excused_list);
    for (int k = 0; k < 2; k++) free(relu[k]);
    batch_free(&b);
    for (int k = 0; k < ne; k++) {
        State *s = &st[k];
        double *bufs[] = {s->logits, s->grads, s->params, s->m, s->v, s->exp_params, s->exp_m, s->exp_v};
        for (size_t j = 0; j < sizeof bufs / sizeof bufs[0]; j++) free(bufs[j]);
    }
    if (eng[E_F32]) eng[E_F32]->ops->destroy(eng[E_F32]);
    free(tmp);
    free(p0);
    free(m0);
    free(v0);
    return failed;
}
