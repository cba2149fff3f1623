// What the lockstep and free modes share: the data, the initial weights,
// the two engines, and the trace envelope.
#include <stdlib.h>
#include <string.h>

#include "compare.h"
#include "engines.h"
#include "common/interrupt.h"
#include "common/util.h"
#include "scalar_ref/engine_scalar.h"
#include "tensor_gpu/cpu/engine_cpu.h"
#include "traces/timeline.h"

void run_setup(Run *r, Options *o) {
    memset(r, 0, sizeof *r);
    r->o = o;
    char err[512];
    pyrandom_seed_text(&r->rng, o->s.seed);
    if (dataset_load(&r->d, o->s.data_path, err, sizeof err)) die(EXIT_USAGE, "%s", err);
    dataset_shuffle(&r->d, &r->rng);
    ModelShape m = model_shape(&o->s, r->d.vocab_size);
    layout_init(&r->L, &m);
    // the memory the engines need, before any of it is allocated
    double need = 0;
    for (int k = 0; k < o->n_engines && k < 2; k++) {
        if (!strcmp(o->names[k], "scalar")) need += scalar_engine_bytes(&r->L, &r->d, o->s.batch, o->s.steps);
        else if (engine_cpu_order(o->names[k]) != ORDER_NUM) need += cpu_engine_bytes(&m, r->L.n_params, o->s.batch, engine_prec(o, k));
    }
    memory_check(need, "the two engines at these settings",
                 "use a smaller --batch, --n-embd, --n-layer or --block-size");
    r->init = xmalloc(r->L.n_params * sizeof *r->init);
    params_init(&r->L, &r->rng, o->s.init_std, r->init);
}

Engine *run_make_engine(Run *r, int k) {
    const Options *o = r->o;
    // lockstep compares the ops' outputs and gradients where an engine keeps them
    EngineConfig cfg = {.s = &o->s, .L = &r->L, .precision = engine_prec(o, k),
                        .fault = k == 1 ? o->fault : FAULT_NONE, .max_batch = o->s.batch,
                        .loss_scale = o->loss_scale, .activations = o->mode == MODE_LOCKSTEP && !o->bench,
                        .fault_op = k == 1 ? o->fault_op : 0};
    char err[1024] = "";  // room for a plugin's whole message (512 bytes) and what precedes it
    Engine *e = engine_new(o->names[k], &cfg, r->init, err, sizeof err);
    if (!e) die(EXIT_USAGE, "engine %s: %s", o->names[k], err);
    return e;
}

void run_teardown(Run *r) {
    for (int k = 0; k < 2; k++)
        if (r->e[k]) r->e[k]->ops->destroy(r->e[k]);
    free(r->init);
    layout_free(&r->L);
    dataset_free(&r->d);
}

cJSON *run_trace_header(Trace *t, Run *r) {
    const Options *o = r->o;
    ModelShape m = r->L.shape;
    cJSON_AddItemToObject(t->root, "settings", trace_settings(&o->s, &m));
    cJSON_AddItemToObject(t->root, "dataset", trace_dataset(&r->d));
    cJSON *eng = cJSON_AddArrayToObject(t->root, "engines");
    for (int k = 0; k < 2; k++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", o->names[k]);
        cJSON_AddStringToObject(e, "precision", precision_name(engine_prec(o, k)));
        if (r->e[k] && r->e[k]->ops->device) cJSON_AddStringToObject(e, "device", r->e[k]->ops->device(r->e[k]));
        if (r->e[k]) {   // what a partial engine offers (docs/outside_engines.md, "Partial engines")
            cJSON *of = cJSON_AddObjectToObject(e, "offers");
            cJSON_AddBoolToObject(of, "logits", engine_offers_logits(r->e[k]));
            cJSON_AddBoolToObject(of, "moments", engine_offers_moments(r->e[k]));
            cJSON_AddBoolToObject(of, "set_moments", engine_takes_moments(r->e[k]));
        }
        cJSON_AddItemToArray(eng, e);
    }
    cJSON_AddStringToObject(t->root, "mode", o->bench ? "bench" : o->mode == MODE_LOCKSTEP ? "lockstep" : "free");
    cJSON_AddStringToObject(t->root, "precision", precision_name(o->prec));
    if (o->fault != FAULT_NONE) cJSON_AddStringToObject(t->root, "injected_fault", fault_name(o->fault));
    cJSON *tol = cJSON_AddObjectToObject(t->root, "tolerances");
    for (int q = 0; q < Q_NUM; q++) {
        cJSON *x = cJSON_AddObjectToObject(tol, quantity_name((Quantity)q));
        trace_add_number(x, "atol", o->tol[q].atol);
        trace_add_number(x, "rtol", o->tol[q].rtol);
        if (o->tol[q].scaled > 0) trace_add_number(x, "scaled", o->tol[q].scaled);   // x the tensor's RMS
        if (o->extra[q].atol > 0 || o->extra[q].rtol > 0) {   // --tol, on top of the rule
            trace_add_number(x, "extra_atol", o->extra[q].atol);
            trace_add_number(x, "extra_rtol", o->extra[q].rtol);
        }
    }
    cJSON_AddStringToObject(tol, "rule", o->tol_ratio ? "ratio" : "fixed");
    if (o->tol_ratio)
        for (int q = 0; q < Q_NUM; q++) {
            cJSON *x = cJSON_GetObjectItem(tol, quantity_name((Quantity)q));
            trace_add_number(x, "ratio_k", o->ratio[q].k);
            trace_add_number(x, "ratio_floor", o->ratio[q].floor);
            if (o->ratio[q].cap > 0) trace_add_number(x, "ratio_cap", o->ratio[q].cap);   // mixed precisions
            if (o->ratio[q].ref_cap > 0) trace_add_number(x, "noise_ref_cap", o->ratio[q].ref_cap);
        }
    if (o->tol_ratio) {
        cJSON *no = cJSON_AddArrayToObject(tol, "noise_reference");
        for (int j = 0; j < NOISE_MEMBERS; j++) {
            char name[32];
            snprintf(name, sizeof name, "cpu:%s", reduce_order_name(NOISE_ORDERS[j]));
            cJSON_AddItemToArray(no, cJSON_CreateString(name));
        }
    }
    trace_add_number(tol, "drift", o->drift_tol);
    if (o->mode == MODE_FREE) cJSON_AddNumberToObject(tol, "drift_window", drift_window_for(o));
    if (o->loss_scale > 0) trace_add_number(tol, "loss_scale", o->loss_scale);
    trace_add_number(tol, "relu_margin", o->relu_margin);
    cJSON_AddNumberToObject(t->root, "num_params", (double)r->L.n_params);
    return cJSON_AddArrayToObject(t->root, "steps");
}


cJSON *run_trace_step(const Options *o, int step, const double loss[2], const double dt[2]) {
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

void run_timeline_step(Engine *e, int k, double t0, double dt, int step) {
    if (!timeline_active()) return;
    timeline_event(k, "step", t0, dt, step);
    if (!e->ops->step_phases) return;
    EnginePhase ph[ENGINE_MAX_PHASES];
    const int n = e->ops->step_phases(e, ph);
    for (int i = 0; i < n && i < ENGINE_MAX_PHASES; i++) {
        timeline_event(k, ph[i].name, t0, ph[i].seconds, step);
        t0 += ph[i].seconds;
    }
}

void run_step_begin(Trace *t, int step) {
    if (ferror(stdout)) stdout_check();   // a closed stdout (EPIPE): exit 1, the trace marked incomplete
    const int sig = interrupt_pending();  // common/interrupt.h (compare/main.c: interrupt_defer)
    if (sig) {
        timeline_commit();
        if (t->path) trace_exit_on_signal(t, sig);
        fflush(stdout);
        fprintf(stderr, "%s: interrupted by %s after step %d\n", prog_name(), interrupt_signal_name(sig), t->step);
        interrupt_exit(sig);
    }
    t->step = step + 1;
}
