// Free-running: both engines train on their own; the loss curves and the
// final parameters are compared. The curves are compared step by step, or
// (--drift-window W > 1, the default for the mixed precisions) as the mean
// of the last W steps: two trainings that part ways by rounding each draw
// their own noise on a single document, and the mean over a window is the
// curve that the precision should not move.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "compare.h"
#include "traces/timeline.h"
#include "common/util.h"

int free_run(Run *r, Trace *t, cJSON *steps) {
    Options *o = r->o;
    Batch b = {0};
    double max_drift = 0;
    int max_step = 0, diverged = 0, steps_run = 0, n_skipped[2] = {0, 0};
    const int W = drift_window_for(o);
    double *diffs = xcalloc((size_t)W, sizeof *diffs), window_sum = 0;   // the last W of loss[1] - loss[0]
    for (int step = 0; step < o->s.steps; step++) {
        run_step_begin(t, step);
        batch_make(&b, &r->d, step, o->s.batch, o->s.block_size);
        double loss[2], dt[2];
        for (int k = 0; k < 2; k++) {
            double t0 = now_seconds();
            loss[k] = r->e[k]->ops->step(r->e[k], &b, step);
            dt[k] = now_seconds() - t0;
            run_timeline_step(r->e[k], k, t0, dt[k], step + 1);
            double scale;
            if (r->e[k]->ops->step_skipped && r->e[k]->ops->step_skipped(r->e[k], &scale)) {
                n_skipped[k]++;   // fp16 loss scaling: an overflow skipped the update; never silent
                if (!o->quiet || n_skipped[k] <= 3)
                    printf("step %4d | %s: update skipped (fp16 gradient overflow at loss scale %g)\n", step + 1,
                           o->names[k], scale);
            }
        }
        for (int i = 0; i < o->n_plants; i++)   // test-only (--plant loss@STEP=DELTA)
            if (o->plant[i].q == Q_LOSS && o->plant[i].step == step + 1) loss[1] += o->plant[i].delta;
        steps_run++;
        const double step_drift = fabs(loss[1] - loss[0]);
        window_sum += (loss[1] - loss[0]) - diffs[step % W];
        diffs[step % W] = loss[1] - loss[0];
        const double drift = W == 1 ? step_drift : fabs(window_sum) / (step + 1 < W ? step + 1 : W);
        if (!(drift <= max_drift)) {  // NaN sticks
            max_drift = drift;
            max_step = step + 1;
        }
        if (!isfinite(loss[0]) || !isfinite(loss[1])) diverged = 1;
        if (steps) {
            cJSON *so = run_trace_step(o, step, loss, dt);
            cJSON *me = cJSON_AddObjectToObject(so, "max_err");
            cJSON_AddItemToObject(me, "loss", trace_number(step_drift));
            if (W > 1) cJSON_AddItemToObject(so, "window_drift", trace_number(drift));
            cJSON_AddBoolToObject(so, "ok", drift <= o->drift_tol);
            cJSON_AddItemToArray(steps, so);
        }
        if (!o->quiet && ((step + 1) % o->every == 0 || step == 0 || step + 1 == o->s.steps))
            printf("step %4d | loss %s %.12f | %s %.12f | drift %.2e\n", step + 1, o->names[0], loss[0], o->names[1],
                   loss[1], step_drift);
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
    printf("%s: free-running, %s (%s) vs %s (%s), %d of %d steps run, batch %d\n", failed ? "FAIL" : "PASS",
           o->names[0], precision_name(engine_prec(o, 0)), o->names[1], precision_name(engine_prec(o, 1)), steps_run,
           o->s.steps, o->s.batch);
    if (diverged) printf("  a loss is not finite: an engine diverged\n");
    for (int k = 0; k < 2; k++)
        if (n_skipped[k] || engine_prec(o, k) == PREC_FP16)
            printf("  %s: %d update(s) skipped by fp16 loss scaling (part of its training, inside the band)\n",
                   o->names[k], n_skipped[k]);
    if (W > 1)
        printf("  largest loss difference %.3e at step %d (tolerance %.1e; the mean of the %d steps to there)\n",
               max_drift, max_step, o->drift_tol, W);
    else
        printf("  largest loss difference %.3e at step %d (tolerance %.1e)\n", max_drift, max_step, o->drift_tol);
    printf("  parameters after training: largest difference %.3e at %s, largest relative %.3e\n", sp.max_abs, where,
           sp.max_rel);
    // Below fp64 two correct trainings part ways by rounding, and the band
    // that holds them also holds subtle bugs: at batch 4 five of the six
    // --inject-fault faults pass it in fp32 (docs/compare.md, "Free-running")
    if (o->prec != PREC_FP64)
        printf("  note: in %s two correct trainings part ways, so this band catches gross errors only (a wrong "
               "schedule, a diverging engine); lockstep checks every step\n", precision_name(o->prec));
    if (t->root) {
        cJSON_AddStringToObject(t->root, "verdict", failed ? "fail" : "pass");
        cJSON_AddNumberToObject(t->root, "steps_run", steps_run);
        cJSON *dr = cJSON_AddObjectToObject(t->root, "drift");
        trace_add_number(dr, "max_abs", max_drift);
        cJSON_AddNumberToObject(dr, "step", max_step);
        trace_add_number(dr, "tol", o->drift_tol);
        cJSON_AddNumberToObject(dr, "window", W);
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
    free(diffs);
    free(pa);
    free(pb);
    batch_free(&b);
    return failed;
}
