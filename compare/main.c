// compare: run two engines on the same data from the same initial weights and
// check them against each other step by step (lockstep), or let both train
// and compare the loss curves (free), or time them (--bench).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines.h"
#include "tolerance.h"
#include "common/dataset.h"
#include "common/engine.h"
#include "common/model.h"
#include "common/pyrandom.h"
#include "common/settings.h"
#include "common/util.h"
#include "traces/trace.h"

typedef enum { MODE_LOCKSTEP, MODE_FREE } Mode;

typedef struct {
    Settings s;
    char names[2][16];        // [0] the reference, [1] the candidate
    Precision prec;
    Mode mode;
    int bench;
    Fault fault;
    Tolerance tol[Q_NUM];
    double drift_tol;
    double relu_margin;
    int keep_going, quiet, every;
} Options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: compare --engines REF,CAND [flags]\n"
            "Run two engines (scalar, cpu, cuda) on the same documents from the same initial\n"
            "weights and compare them. REF is the reference: an element a of CAND agrees with b\n"
            "of REF when |a-b| <= atol + rtol*|b|.\n\n"
            "  --engines REF,CAND   engines to compare, e.g. scalar,cpu or scalar,cuda (required)\n"
            "  --precision P        fp64 or fp32: the precision of the tensor engines; the scalar\n"
            "                       engine is always fp64 (fp64)\n"
            "  --mode M             lockstep: every step both start from REF's parameters and Adam\n"
            "                       state; every logit, the loss and every gradient tensor are\n"
            "                       compared with REF's, and CAND's updated parameters with Adam\n"
            "                       applied in fp64 to CAND's own gradients (default)\n"
            "                       free: both train on their own; the loss curves are compared\n"
            "  --rtol X, --atol X   override the tolerance of every compared quantity\n"
            "  --drift-tol X        free mode: largest allowed |loss difference| (fp64 1e-9, fp32 2e-3)\n"
            "  --relu-margin X      lockstep: a step whose gradients differ only because a ReLU input\n"
            "                       within X of 0 fell on different sides in the two engines is\n"
            "                       excused and reported (fp64 1e-12, fp32 1e-5; 0: never)\n"
            "  --keep-going         lockstep: go on after a failing step (exit 1 at the end)\n"
            "  --every N            print one line every N steps (1)\n"
            "  --quiet              print only the summary\n"
            "  --bench              time each engine over the steps instead (no comparison) and\n"
            "                       report ms/step and the speedup of CAND over REF\n"
            "  --inject-fault F     test only: make CAND commit fault F (attn-scale, causal-mask,\n"
            "                       rmsnorm-bwd, grad-sign, adam-bias) to show the check catches it\n"
            "  --help               this text\n"
            "model and data flags (as build/microgpt):\n");
    settings_print_help(f);
    fprintf(f, "\nExit codes: 0 the engines agree, 1 a mismatch (or a run failure), 2 bad usage,\n"
               "bad data, or an engine that cannot run here (e.g. no GPU).\n");
}

static void parse(Options *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    settings_defaults(&o->s);
    o->prec = PREC_FP64;
    o->mode = MODE_LOCKSTEP;
    o->fault = FAULT_NONE;
    o->drift_tol = -1;
    o->relu_margin = -1;
    o->every = 1;
    int have_engines = 0;
    double rtol = -1, atol = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE() do { if (!v) die(EXIT_USAGE, "%s needs a value (see --help)", a); i++; } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--engines")) {
            NEED_VALUE();
            const char *comma = strchr(v, ',');
            if (!comma || strchr(comma + 1, ','))
                die(EXIT_USAGE, "--engines: '%s' must name two engines, e.g. scalar,cpu", v);
            size_t n0 = (size_t)(comma - v);
            if (n0 == 0 || n0 >= sizeof o->names[0] || strlen(comma + 1) >= sizeof o->names[1] || !comma[1])
                die(EXIT_USAGE, "--engines: '%s' must name two engines, e.g. scalar,cpu", v);
            memcpy(o->names[0], v, n0);
            strcpy(o->names[1], comma + 1);
            for (int k = 0; k < 2; k++)
                if (!engine_known(o->names[k]))
                    die(EXIT_USAGE, "--engines: unknown engine '%s' (scalar, cpu or cuda)", o->names[k]);
            have_engines = 1;
        } else if (!strcmp(a, "--precision")) {
            NEED_VALUE();
            if (!strcmp(v, "fp64")) o->prec = PREC_FP64;
            else if (!strcmp(v, "fp32")) o->prec = PREC_FP32;
            else die(EXIT_USAGE, "--precision: '%s' is not fp64 or fp32", v);
        } else if (!strcmp(a, "--mode")) {
            NEED_VALUE();
            if (!strcmp(v, "lockstep")) o->mode = MODE_LOCKSTEP;
            else if (!strcmp(v, "free")) o->mode = MODE_FREE;
            else die(EXIT_USAGE, "--mode: '%s' is not lockstep or free", v);
        } else if (!strcmp(a, "--rtol") || !strcmp(a, "--atol") || !strcmp(a, "--drift-tol") ||
                   !strcmp(a, "--relu-margin")) {
            NEED_VALUE();
            double x;
            if (parse_double(v, &x) || x < 0) die(EXIT_USAGE, "%s: '%s' is not a number >= 0", a, v);
            if (!strcmp(a, "--rtol")) rtol = x;
            else if (!strcmp(a, "--atol")) atol = x;
            else if (!strcmp(a, "--drift-tol")) o->drift_tol = x;
            else o->relu_margin = x;
        } else if (!strcmp(a, "--every")) {
            NEED_VALUE();
            long x;
            if (parse_int(v, 1, 1000000000L, &x)) die(EXIT_USAGE, "--every: '%s' is not an integer >= 1", v);
            o->every = (int)x;
        } else if (!strcmp(a, "--keep-going")) {
            o->keep_going = 1;
        } else if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
        } else if (!strcmp(a, "--bench")) {
            o->bench = 1;
        } else if (!strcmp(a, "--inject-fault")) {
            NEED_VALUE();
            o->fault = fault_from_name(v);
            if (o->fault == FAULT_NUM || o->fault == FAULT_NONE)
                die(EXIT_USAGE, "--inject-fault: unknown fault '%s' (attn-scale, causal-mask, "
                    "rmsnorm-bwd, grad-sign, adam-bias)", v);
        } else if (!settings_parse_flag(&o->s, argc, argv, &i)) {
            die(EXIT_USAGE, "unknown flag '%s' (see --help)", a);
        }
#undef NEED_VALUE
    }
    if (!have_engines) die(EXIT_USAGE, "--engines REF,CAND is required, e.g. --engines scalar,cpu (see --help)");
    settings_validate(&o->s);
    if (o->s.steps < 1) die(EXIT_USAGE, "--steps must be at least 1 to compare anything");
    if (!engine_supports(o->names[0], o->prec) && !engine_supports(o->names[1], o->prec))
        die(EXIT_USAGE, "--precision fp32: the scalar engine computes in fp64 only; compare it "
            "with a tensor engine (cpu or cuda)");
    if (o->fault != FAULT_NONE && !strcmp(o->names[1], "scalar"))
        die(EXIT_USAGE, "--inject-fault: faults are injected into the candidate engine, and the "
            "scalar engine has none; put a tensor engine second, e.g. --engines scalar,cpu");
    for (int q = 0; q < Q_NUM; q++) {
        o->tol[q] = tolerance_default(o->prec, (Quantity)q);
        if (rtol >= 0) o->tol[q].rtol = rtol;
        if (atol >= 0) o->tol[q].atol = atol;
    }
    if (o->drift_tol < 0) o->drift_tol = o->prec == PREC_FP64 ? 1e-9 : 2e-3;
    if (o->relu_margin < 0) o->relu_margin = o->prec == PREC_FP64 ? 1e-12 : 1e-5;
    if (o->bench && o->mode == MODE_FREE)
        die(EXIT_USAGE, "--bench times the engines on their own: leave out --mode");
}

static const char *prec_name(Precision p) { return p == PREC_FP64 ? "fp64" : "fp32"; }

static Precision engine_prec(const Options *o, int k) {
    return engine_supports(o->names[k], PREC_FP32) ? o->prec : PREC_FP64;
}

// Everything one run needs.
typedef struct {
    Options *o;
    Dataset d;
    ParamLayout L;
    double *init;
    PyRandom rng;   // after the shuffle and the init draws
    Engine *e[2];
} Run;

static void setup(Run *r, Options *o) {
    memset(r, 0, sizeof *r);
    r->o = o;
    char err[512];
    pyrandom_seed_text(&r->rng, o->s.seed);
    if (dataset_load(&r->d, o->s.data_path, err, sizeof err)) die(EXIT_USAGE, "%s", err);
    dataset_shuffle(&r->d, &r->rng);
    ModelShape m = model_shape(&o->s, r->d.vocab_size);
    layout_init(&r->L, &m);
    r->init = xmalloc(r->L.n_params * sizeof *r->init);
    params_init(&r->L, &r->rng, o->s.init_std, r->init);
}

static Engine *make_engine(Run *r, int k) {
    const Options *o = r->o;
    EngineConfig cfg = {.s = &o->s, .L = &r->L, .precision = engine_prec(o, k),
                        .fault = k == 1 ? o->fault : FAULT_NONE, .max_batch = o->s.batch};
    char err[512] = "";
    Engine *e = engine_new(o->names[k], &cfg, r->init, err, sizeof err);
    if (!e) die(EXIT_USAGE, "engine %s: %s", o->names[k], err);
    return e;
}

static void teardown(Run *r) {
    for (int k = 0; k < 2; k++)
        if (r->e[k]) r->e[k]->ops->destroy(r->e[k]);
    free(r->init);
    layout_free(&r->L);
    dataset_free(&r->d);
}

static cJSON *trace_header(Trace *t, Run *r) {
    const Options *o = r->o;
    ModelShape m = r->L.shape;
    cJSON_AddItemToObject(t->root, "settings", trace_settings(&o->s, &m));
    cJSON_AddItemToObject(t->root, "dataset", trace_dataset(&r->d));
    cJSON *eng = cJSON_AddArrayToObject(t->root, "engines");
    for (int k = 0; k < 2; k++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", o->names[k]);
        cJSON_AddStringToObject(e, "precision", prec_name(engine_prec(o, k)));
        if (r->e[k] && r->e[k]->ops->device) cJSON_AddStringToObject(e, "device", r->e[k]->ops->device(r->e[k]));
        cJSON_AddItemToArray(eng, e);
    }
    cJSON_AddStringToObject(t->root, "mode", o->bench ? "bench" : o->mode == MODE_LOCKSTEP ? "lockstep" : "free");
    cJSON_AddStringToObject(t->root, "precision", prec_name(o->prec));
    if (o->fault != FAULT_NONE) cJSON_AddStringToObject(t->root, "injected_fault", fault_name(o->fault));
    cJSON *tol = cJSON_AddObjectToObject(t->root, "tolerances");
    for (int q = 0; q < Q_NUM; q++) {
        cJSON *x = cJSON_AddObjectToObject(tol, quantity_name((Quantity)q));
        trace_add_number(x, "atol", o->tol[q].atol);
        trace_add_number(x, "rtol", o->tol[q].rtol);
    }
    trace_add_number(tol, "drift", o->drift_tol);
    trace_add_number(tol, "relu_margin", o->relu_margin);
    cJSON_AddNumberToObject(t->root, "num_params", (double)r->L.n_params);
    return cJSON_AddArrayToObject(t->root, "steps");
}

// A step's trace entry: its number, lr, and each engine's loss and time.
static cJSON *trace_step(const Options *o, int step, const double loss[2], const double dt[2]) {
    cJSON *so = cJSON_CreateObject();
    cJSON_AddNumberToObject(so, "step", step + 1);
    trace_add_number(so, "lr", lr_at(o->s.lr, step, o->s.steps));
    cJSON *l = cJSON_AddArrayToObject(so, "loss"), *ts = cJSON_AddArrayToObject(so, "time_s");
    for (int k = 0; k < 2; k++) {
        cJSON_AddItemToArray(l, trace_number(loss[k]));
        cJSON_AddItemToArray(ts, trace_number(dt[k]));
    }
    return so;
}

// ---- lockstep ----------------------------------------------------------

typedef struct {
    int failed;
    int step;
    char others[512];   // every tensor out of tolerance at the failing step
    char quantity[16];
    char tensor[96];
    size_t index;
    char where[160];
    double a, b, abs_err, tol;
    long n_bad;
} Failure;

// Running maxima over the whole run, per quantity.
typedef struct {
    ErrStats q[Q_NUM];
    int step[Q_NUM];
    char tensor[Q_NUM][96];
} Totals;

static void describe_logit(const Batch *b, const Dataset *d, size_t i, int V, char *out, size_t n) {
    int bi = (int)(i / ((size_t)b->T * (size_t)V));
    int t = (int)(i / (size_t)V % (size_t)b->T);
    int v = (int)(i % (size_t)V);
    char tok[16] = "BOS";
    if (v < d->n_chars) {
        if (d->vocab[v] >= 0x20 && d->vocab[v] < 0x7f) snprintf(tok, sizeof tok, "'%c'", (char)d->vocab[v]);
        else snprintf(tok, sizeof tok, "U+%04X", (unsigned)d->vocab[v]);
    }
    snprintf(out, n, "logits[%d,%d,%d] (document %d = docs[%d], position %d, vocab %d = %s)", bi, t, v, bi,
             b->doc[bi], t, v, tok);
}

static void note_failure(Failure *f, int step, const char *q, const char *tensor, size_t idx, const char *where,
                         double a, double b, Tolerance t, long n_bad) {
    if (f->failed) return;
    f->failed = 1;
    f->step = step;
    snprintf(f->quantity, sizeof f->quantity, "%s", q);
    snprintf(f->tensor, sizeof f->tensor, "%s", tensor);
    f->index = idx;
    snprintf(f->where, sizeof f->where, "%s", where);
    f->a = a;
    f->b = b;
    f->abs_err = fabs(a - b);
    f->tol = t.atol + t.rtol * fabs(b);
    f->n_bad = n_bad;
}

static void total_update(Totals *T, Quantity q, const ErrStats *s, int step, const char *tensor) {
    ErrStats *t = &T->q[q];
    if (isnan(s->max_abs) ? !isnan(t->max_abs) : s->max_abs > t->max_abs) {
        T->step[q] = step;
        snprintf(T->tensor[q], sizeof T->tensor[q], "%s", tensor);
    }
    err_merge(t, s, 0);
}

// Compare the per-tensor slices of a (candidate) and b (reference); fills
// `per` (one object per tensor) and merges into the quantity's statistics.
static void compare_tensors(const ParamLayout *L, const double *a, const double *b, Tolerance tol, Quantity q,
                            int step, const char *suffix, cJSON *max_err, cJSON *max_rel, ErrStats *all,
                            Totals *T, Failure *f) {
    for (int k = 0; k < L->n_tensors; k++) {
        const ParamTensor *pt = &L->t[k];
        ErrStats s = {0};
        err_compare(a + pt->offset, b + pt->offset, pt->size, tol, &s);
        char key[96];
        snprintf(key, sizeof key, "%s%s", pt->name, suffix);
        if (max_err) cJSON_AddItemToObject(max_err, key, trace_number(s.max_abs));
        if (max_rel) cJSON_AddItemToObject(max_rel, key, trace_number(s.max_rel));
        total_update(T, q, &s, step, key);
        err_merge(all, &s, pt->offset);
        if (s.n_bad && (!f->failed || f->step == step)) {
            size_t len = strlen(f->others);
            snprintf(f->others + len, sizeof f->others - len, "%s%s (%ld)", len ? ", " : "", key, s.n_bad);
        }
        if (s.n_bad) {
            size_t i = pt->offset + s.first_bad;
            char where[160];
            layout_describe(L, i, where, sizeof where);
            note_failure(f, step, quantity_name(q), pt->name, s.first_bad, where, a[i], b[i], tol, s.n_bad);
        }
    }
}

static void print_failure(const Options *o, const Failure *f) {
    if (!strcmp(f->quantity, "loss")) printf("FAIL at step %d: the loss differs\n", f->step);
    else if (!strcmp(f->quantity, "logits")) printf("FAIL at step %d: %s\n", f->step, f->where);
    else
        printf("FAIL at step %d: %s %s\n", f->step,
               !strcmp(f->quantity, "grads") ? "the gradient of" : "the updated parameter", f->where);
    printf("  %s = %.17g\n  %s = %.17g (reference)\n  |a-b| = %.3g > tolerance %.3g (%ld element(s) of %s out of "
           "tolerance)\n",
           o->names[1], f->a, o->names[0], f->b, f->abs_err, f->tol, f->n_bad, f->tensor);
    if (f->others[0]) printf("  tensors out of tolerance at step %d: %s\n", f->step, f->others);
}

// Adam as the original, in float64: the parameters after step `step` from
// parameters p0 and moments m0, v0 with gradients g.
static void adam_expected(const Settings *s, int step, const double *p0, const double *m0, const double *v0,
                          const double *g, double *out, size_t n) {
    const double b1 = s->beta1, b2 = s->beta2, lr_t = lr_at(s->lr, step, s->steps);
    const double c1 = 1.0 - pow(b1, step + 1), c2 = 1.0 - pow(b2, step + 1);
    for (size_t i = 0; i < n; i++) {
        double m = b1 * m0[i] + (1.0 - b1) * g[i];
        double v = b2 * v0[i] + (1.0 - b2) * (g[i] * g[i]);
        out[i] = p0[i] - (lr_t * (m / c1)) / (sqrt(v / c2) + s->eps);
    }
}

static void totals_merge(Totals *T, const Totals *s) {
    for (int q = 0; q < Q_NUM; q++) {
        if (isnan(s->q[q].max_abs) ? !isnan(T->q[q].max_abs) : s->q[q].max_abs > T->q[q].max_abs) {
            T->step[q] = s->step[q];
            memcpy(T->tensor[q], s->tensor[q], sizeof T->tensor[q]);
        }
        err_merge(&T->q[q], &s->q[q], 0);
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

static int run_lockstep(Run *r, Trace *t, cJSON *steps) {
    Options *o = r->o;
    const size_t P = r->L.n_params;
    const int V = r->L.shape.vocab_size;
    const size_t nlog = (size_t)o->s.batch * (size_t)o->s.block_size * (size_t)V;
    double *buf[2][5];
    // the reference's state before the step: what the candidate starts from
    double *p0 = xmalloc(P * sizeof(double)), *m0 = xcalloc(P, sizeof(double)), *v0 = xcalloc(P, sizeof(double));
    double *expect = xmalloc(P * sizeof(double));
    memcpy(p0, r->init, P * sizeof(double));
    for (int k = 0; k < 2; k++) {
        buf[k][0] = xmalloc(nlog * sizeof(double));  // logits
        for (int j = 1; j < 5; j++) buf[k][j] = xmalloc(P * sizeof(double));  // grads, params, m, v
    }
    Failure f = {0};
    Totals T = {0};
    Batch b = {0};
    const size_t H = 4 * (size_t)r->L.shape.n_embd;
    const size_t nrelu = (size_t)r->L.shape.n_layer * (size_t)o->s.batch * (size_t)o->s.block_size * H;
    double *relu[2] = {NULL, NULL};
    if (r->e[0]->ops->get_relu_inputs && r->e[1]->ops->get_relu_inputs)
        for (int k = 0; k < 2; k++) relu[k] = xmalloc(nrelu * sizeof(double));
    int n_excused = 0;
    cJSON *excused_list = t->root ? cJSON_AddArrayToObject(t->root, "excused_steps") : NULL;
    for (int step = 0; step < o->s.steps; step++) {
        batch_make(&b, &r->d, step, o->s.batch, o->s.block_size);
        Failure fs = {0};   // this step's first failure
        Totals Ts = {0};    // this step's largest errors
        double loss[2], dt[2];
        for (int k = 0; k < 2; k++) {
            double t0 = now_seconds();
            loss[k] = r->e[k]->ops->step(r->e[k], &b, step);
            dt[k] = now_seconds() - t0;
            r->e[k]->ops->get_logits(r->e[k], buf[k][0]);
            r->e[k]->ops->get_grads(r->e[k], buf[k][1]);
            r->e[k]->ops->get_params(r->e[k], buf[k][2]);
        }
        cJSON *so = NULL, *max_err = NULL, *max_rel = NULL;
        if (steps) {
            so = trace_step(o, step, loss, dt);
            max_err = cJSON_AddObjectToObject(so, "max_err");
            max_rel = cJSON_AddObjectToObject(so, "max_rel");
        }
        // in the order they are computed: logits, loss, gradients, updated
        // parameters; the first quantity out of tolerance is reported
        // logits of the real positions
        ErrStats sg = {0};
        for (int d = 0; d < b.B; d++) {
            size_t off = (size_t)d * (size_t)b.T * (size_t)V;
            ErrStats s = {0};
            err_compare(buf[1][0] + off, buf[0][0] + off, (size_t)b.n[d] * (size_t)V, o->tol[Q_LOGITS], &s);
            err_merge(&sg, &s, off);
        }
        total_update(&Ts, Q_LOGITS, &sg, step + 1, "logits");
        if (sg.n_bad) {
            char where[160];
            describe_logit(&b, &r->d, sg.first_bad, V, where, sizeof where);
            note_failure(&fs, step + 1, "logits", "logits", sg.first_bad, where, buf[1][0][sg.first_bad],
                         buf[0][0][sg.first_bad], o->tol[Q_LOGITS], sg.n_bad);
        }
        if (max_err) {
            cJSON_AddItemToObject(max_err, "logits", trace_number(sg.max_abs));
            cJSON_AddItemToObject(max_rel, "logits", trace_number(sg.max_rel));
        }
        // loss
        ErrStats sl = {0};
        err_compare(&loss[1], &loss[0], 1, o->tol[Q_LOSS], &sl);
        total_update(&Ts, Q_LOSS, &sl, step + 1, "loss");
        if (sl.n_bad) note_failure(&fs, step + 1, "loss", "loss", 0, "the loss", loss[1], loss[0], o->tol[Q_LOSS], 1);
        if (max_err) {
            cJSON_AddItemToObject(max_err, "loss", trace_number(sl.max_abs));
            cJSON_AddItemToObject(max_rel, "loss", trace_number(sl.max_rel));
        }
        ErrStats sgr = {0}, spr = {0};
        compare_tensors(&r->L, buf[1][1], buf[0][1], o->tol[Q_GRADS], Q_GRADS, step + 1, ".grad", max_err, max_rel,
                        &sgr, &Ts, &fs);
        // the update: the candidate's new parameters against Adam applied in
        // float64 to the candidate's own gradients from the shared start
        // (Adam divides by sqrt(v)+eps, which magnifies the last bits of a
        // gradient near zero: comparing with the reference's parameters would
        // test the gradients again, not the update)
        adam_expected(&o->s, step, p0, m0, v0, buf[1][1], expect, P);
        compare_tensors(&r->L, buf[1][2], expect, o->tol[Q_PARAMS], Q_PARAMS, step + 1, "", max_err, max_rel,
                        &spr, &Ts, &fs);
        int ok = !(sl.n_bad || sg.n_bad || sgr.n_bad || spr.n_bad);
        // A ReLU whose input is within rounding of 0 may open in one engine
        // and stay shut in the other: the forward agrees (the unit's output
        // is ~0 either way) but every gradient through that unit differs by
        // a whole term. Such a step is excused, with the evidence printed;
        // the logits and the loss must still agree.
        char why[256] = "";
        int excused = !ok && !sl.n_bad && !sg.n_bad && relu[0] &&
                      relu_flips(r, &b, relu, o->relu_margin, why, sizeof why);
        if (excused) {
            n_excused++;
            if (excused_list) {
                cJSON *x = cJSON_CreateObject();
                cJSON_AddNumberToObject(x, "step", step + 1);
                cJSON_AddStringToObject(x, "reason", why);
                cJSON_AddItemToArray(excused_list, x);
            }
        } else {
            totals_merge(&T, &Ts);
            if (fs.failed && !f.failed) f = fs;
        }
        if (so) {
            cJSON_AddBoolToObject(so, "ok", ok || excused);
            if (excused) cJSON_AddStringToObject(so, "excused", why);
            cJSON_AddItemToArray(steps, so);
        }
        if (!ok || (!o->quiet && ((step + 1) % o->every == 0 || step == 0 || step + 1 == o->s.steps)))
            printf("step %4d | loss %.6f | loss %.1e | logits %.1e | grads %.1e (rel %.1e) | params %.1e | %s%s\n",
                   step + 1, loss[0], sl.max_abs, sg.max_abs, sgr.max_abs, sgr.max_rel, spr.max_abs,
                   ok ? "ok" : excused ? "excused: " : "FAIL", why);
        if (!ok && !excused && !o->keep_going) break;
        // lockstep: the candidate continues from the reference's state
        r->e[0]->ops->get_moments(r->e[0], m0, v0);
        memcpy(p0, buf[0][2], P * sizeof(double));
        r->e[1]->ops->set_state(r->e[1], p0, m0, v0);
    }
    int failed = f.failed;
    for (int k = 0; k < 2; k++) free(relu[k]);
    if (failed) print_failure(o, &f);
    if (n_excused)
        printf("%d step(s) excused for ReLU gate flips (inputs within %.0e of 0; see the step lines)\n", n_excused,
               o->relu_margin);
    printf("%s: lockstep, %s (%s) vs %s (%s), %d steps, batch %d\n", failed ? "FAIL" : "PASS", o->names[0],
           prec_name(engine_prec(o, 0)), o->names[1], prec_name(engine_prec(o, 1)), o->s.steps, o->s.batch);
    printf("largest errors over the run: max|a-b|, and rel = max|a-b| / max|b| per tensor:\n");
    for (int q = 0; q < Q_NUM; q++) {
        char at[128] = "";
        if (T.step[q]) snprintf(at, sizeof at, " at step %d, %s", T.step[q], T.tensor[q]);
        printf("  %-7s %.3e  rel %.3e%s  (tolerance atol %.0e, rtol %.0e)\n", quantity_name((Quantity)q),
               T.q[q].max_abs, T.q[q].max_rel, at, o->tol[q].atol, o->tol[q].rtol);
    }
    if (t->root) {
        cJSON_AddStringToObject(t->root, "verdict", failed ? "fail" : "pass");
        if (failed) {
            cJSON *ff = cJSON_AddObjectToObject(t->root, "first_failure");
            cJSON_AddNumberToObject(ff, "step", f.step);
            cJSON_AddStringToObject(ff, "quantity", f.quantity);
            cJSON_AddStringToObject(ff, "tensor", f.tensor);
            cJSON_AddNumberToObject(ff, "index", (double)f.index);
            cJSON_AddStringToObject(ff, "where", f.where);
            trace_add_number(ff, "a", f.a);
            trace_add_number(ff, "b", f.b);
            trace_add_number(ff, "abs_err", f.abs_err);
            trace_add_number(ff, "tol", f.tol);
            cJSON_AddNumberToObject(ff, "elements_out_of_tolerance", (double)f.n_bad);
            if (f.others[0]) cJSON_AddStringToObject(ff, "tensors_out_of_tolerance", f.others);
        } else {
            cJSON_AddNullToObject(t->root, "first_failure");
        }
        cJSON *mx = cJSON_AddObjectToObject(t->root, "max_errors");
        for (int q = 0; q < Q_NUM; q++) {
            cJSON *x = cJSON_AddObjectToObject(mx, quantity_name((Quantity)q));
            trace_add_number(x, "abs", T.q[q].max_abs);
            trace_add_number(x, "rel", T.q[q].max_rel);
            cJSON_AddNumberToObject(x, "step", T.step[q]);
            cJSON_AddStringToObject(x, "tensor", T.tensor[q]);
        }
    }
    batch_free(&b);
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 5; j++) free(buf[k][j]);
    free(p0);
    free(m0);
    free(v0);
    free(expect);
    return failed;
}

// ---- free-running ------------------------------------------------------

static int run_free(Run *r, Trace *t, cJSON *steps) {
    Options *o = r->o;
    Batch b = {0};
    double max_drift = 0;
    int max_step = 0, diverged = 0;
    for (int step = 0; step < o->s.steps; step++) {
        batch_make(&b, &r->d, step, o->s.batch, o->s.block_size);
        double loss[2], dt[2];
        for (int k = 0; k < 2; k++) {
            double t0 = now_seconds();
            loss[k] = r->e[k]->ops->step(r->e[k], &b, step);
            dt[k] = now_seconds() - t0;
        }
        double drift = fabs(loss[1] - loss[0]);
        if (!(drift <= max_drift)) {  // NaN sticks
            max_drift = drift;
            max_step = step + 1;
        }
        if (!isfinite(loss[0]) || !isfinite(loss[1])) diverged = 1;
        if (steps) {
            cJSON *so = trace_step(o, step, loss, dt);
            cJSON *me = cJSON_AddObjectToObject(so, "max_err");
            cJSON_AddItemToObject(me, "loss", trace_number(drift));
            cJSON_AddBoolToObject(so, "ok", drift <= o->drift_tol);
            cJSON_AddItemToArray(steps, so);
        }
        if (!o->quiet && ((step + 1) % o->every == 0 || step == 0 || step + 1 == o->s.steps))
            printf("step %4d | loss %s %.12f | %s %.12f | drift %.2e\n", step + 1, o->names[0], loss[0], o->names[1],
                   loss[1], drift);
        if (diverged) break;
    }
    // the parameters after training
    size_t P = r->L.n_params;
    double *pa = xmalloc(P * sizeof *pa), *pb = xmalloc(P * sizeof *pb);
    r->e[0]->ops->get_params(r->e[0], pb);
    r->e[1]->ops->get_params(r->e[1], pa);
    ErrStats sp = {0};
    err_compare(pa, pb, P, o->tol[Q_PARAMS], &sp);
    char where[160] = "";
    if (sp.n) layout_describe(&r->L, sp.max_abs_at, where, sizeof where);
    int failed = diverged || !(max_drift <= o->drift_tol);
    printf("%s: free-running, %s (%s) vs %s (%s), %d steps, batch %d\n", failed ? "FAIL" : "PASS", o->names[0],
           prec_name(engine_prec(o, 0)), o->names[1], prec_name(engine_prec(o, 1)), o->s.steps, o->s.batch);
    if (diverged) printf("  a loss is not finite: an engine diverged\n");
    printf("  largest loss difference %.3e at step %d (tolerance %.1e)\n", max_drift, max_step, o->drift_tol);
    printf("  parameters after training: largest difference %.3e at %s, largest relative %.3e\n", sp.max_abs, where,
           sp.max_rel);
    if (t->root) {
        cJSON_AddStringToObject(t->root, "verdict", failed ? "fail" : "pass");
        cJSON *dr = cJSON_AddObjectToObject(t->root, "drift");
        trace_add_number(dr, "max_abs", max_drift);
        cJSON_AddNumberToObject(dr, "step", max_step);
        trace_add_number(dr, "tol", o->drift_tol);
        cJSON *fp = cJSON_AddObjectToObject(t->root, "final_params");
        trace_add_number(fp, "max_abs", sp.max_abs);
        trace_add_number(fp, "max_rel", sp.max_rel);
        cJSON_AddStringToObject(fp, "where", where);
        if (failed) {
            cJSON *ff = cJSON_AddObjectToObject(t->root, "first_failure");
            cJSON_AddNumberToObject(ff, "step", max_step);
            cJSON_AddStringToObject(ff, "quantity", "loss");
            cJSON_AddStringToObject(ff, "tensor", "loss");
            trace_add_number(ff, "abs_err", max_drift);
            trace_add_number(ff, "tol", o->drift_tol);
        } else {
            cJSON_AddNullToObject(t->root, "first_failure");
        }
    }
    free(pa);
    free(pb);
    batch_free(&b);
    return failed;
}

// ---- bench -------------------------------------------------------------

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void cpu_model(char *out, size_t n) {
    snprintf(out, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c += 2;
                c[strcspn(c, "\n")] = '\0';
                snprintf(out, n, "%s", c);
            }
            break;
        }
    fclose(f);
}

static int run_bench(Run *r, Trace *t) {
    Options *o = r->o;
    const int warmup = o->s.steps >= 20 ? 5 : 0;
    double ms[2], med[2], last_loss[2];
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    double *times = xmalloc((size_t)o->s.steps * sizeof *times);
    Batch b = {0};
    for (int k = 0; k < 2; k++) {
        Engine *e = r->e[k];
        double total = 0;
        for (int step = 0; step < o->s.steps; step++) {
            batch_make(&b, &r->d, step, o->s.batch, o->s.block_size);
            double t0 = now_seconds();
            last_loss[k] = e->ops->step(e, &b, step);  // returns the loss: the step is complete
            times[step] = now_seconds() - t0;
            if (step >= warmup) total += times[step];
            if (!isfinite(last_loss[k])) die(EXIT_MISMATCH, "engine %s: the loss is not finite at step %d", o->names[k], step + 1);
        }
        ms[k] = 1e3 * total / (o->s.steps - warmup);
        qsort(times + warmup, (size_t)(o->s.steps - warmup), sizeof *times, cmp_double);
        med[k] = 1e3 * times[warmup + (o->s.steps - warmup) / 2];
    }
    free(times);
    batch_free(&b);
    printf("bench: %d steps (first %d not timed), batch %d, n_embd %d, n_layer %d, block_size %d\n", o->s.steps, warmup,
           o->s.batch, o->s.n_embd, o->s.n_layer, o->s.block_size);
    printf("  host CPU: %s\n", cpu);
    for (int k = 0; k < 2; k++) {
        const char *dev = r->e[k]->ops->device ? r->e[k]->ops->device(r->e[k]) : cpu;
        printf("  %-7s %s  %9.4f ms/step (median %.4f)  %8.1f steps/s  final loss %.6f  [%s]\n", o->names[k],
               prec_name(engine_prec(o, k)), ms[k], med[k], 1e3 / ms[k], last_loss[k], dev);
    }
    printf("  speedup of %s over %s: %.2fx (mean ms/step)\n", o->names[1], o->names[0], ms[0] / ms[1]);
    if (t->root) {
        cJSON *bo = cJSON_AddObjectToObject(t->root, "bench");
        cJSON_AddStringToObject(bo, "host_cpu", cpu);
        cJSON_AddNumberToObject(bo, "untimed_warmup_steps", warmup);
        for (int k = 0; k < 2; k++) {
            cJSON *x = cJSON_AddObjectToObject(bo, k == 0 ? "reference" : "candidate");
            cJSON_AddStringToObject(x, "engine", o->names[k]);
            trace_add_number(x, "ms_per_step", ms[k]);
            trace_add_number(x, "median_ms_per_step", med[k]);
            trace_add_number(x, "final_loss", last_loss[k]);
        }
        trace_add_number(bo, "speedup", ms[0] / ms[1]);
        cJSON_AddStringToObject(t->root, "verdict", "pass");
        cJSON_AddNullToObject(t->root, "first_failure");
    }
    return 0;
}

int main(int argc, char **argv) {
    set_prog_name(argv[0]);
    Options o;
    parse(&o, argc, argv);
    Run r;
    setup(&r, &o);
    for (int k = 0; k < 2; k++) r.e[k] = make_engine(&r, k);
    Trace t = {0};
    if (o.s.trace_path) trace_open(&t, o.s.trace_path, "compare");
    cJSON *steps = t.root ? trace_header(&t, &r) : NULL;
    int failed;
    if (o.bench) failed = run_bench(&r, &t);
    else if (o.mode == MODE_LOCKSTEP) failed = run_lockstep(&r, &t, steps);
    else failed = run_free(&r, &t, steps);
    fflush(stdout);
    if (t.root) trace_commit(&t);
    teardown(&r);
    return failed ? EXIT_MISMATCH : 0;
}
