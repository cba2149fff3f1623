// The comparison of one tensor under the fixed or the ratio rule, the run's
// maxima and the first failure (check.h).
#include "check.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int bigger(double x, double y) { return isnan(x) ? !isnan(y) : x > y; }

static void where_update(Where *w, double v, int step, const char *tensor) {
    if (w->step && !bigger(v, w->v)) return;
    w->v = v;
    w->step = step;
    snprintf(w->tensor, sizeof w->tensor, "%s", tensor);
}

static void where_merge(Where *into, const Where *s) {
    if (s->step) where_update(into, s->v, s->step, s->tensor);
}

static void note_failure(Step *S, Quantity q, const char *tensor, size_t idx, const char *where, double a, double b,
                         Tolerance t, double rms, long n_bad) {
    Failure *f = &S->f;
    if (f->failed) return;
    f->failed = 1;
    f->step = S->step;
    f->q = q;
    snprintf(f->tensor, sizeof f->tensor, "%s", tensor);
    f->index = idx;
    snprintf(f->where, sizeof f->where, "%s", where);
    f->a = a;
    f->b = b;
    f->abs_err = fabs(a - b);
    f->tol = t.atol + t.rtol * fabs(b) + (t.scaled > 0 ? t.scaled * rms : 0);   // err_compare's bound
    f->n_bad = n_bad;
}

// The noise reference's own error is out of its fixed bound: the verdict
// cannot rest on it (a bug in the CPU engine's path for this precision).
static void note_noise_failure(Step *S, Quantity q, const char *tensor, const char *member, double ref_err,
                               double ref_cap, double rms) {
    Failure *f = &S->f;
    size_t len = strlen(f->others);
    snprintf(f->others + len, sizeof f->others - len, "%snoise reference %s %s", len ? ", " : "", quantity_name(q),
             tensor);
    if (f->failed) return;
    f->failed = 1;
    f->step = S->step;
    f->q = q;
    f->noise = 1;
    snprintf(f->tensor, sizeof f->tensor, "%s", tensor);
    snprintf(f->member, sizeof f->member, "%s", member);
    snprintf(f->where, sizeof f->where, "%s", tensor);
    f->ratio = 1;
    f->ref_err = ref_err;
    f->ref_cap = ref_cap;
    f->rms = rms;
    f->bound = ref_cap;
    f->abs_err = ref_err * rms;
    f->tol = ref_cap * rms;
}

ErrStats check(Step *S, Quantity q, const char *tensor, const char *legacy_key, const double *a, const double *b,
               const Noise *nz, size_t n, Describe describe, const void *dctx) {
    const Options *o = S->o;
    Tolerance tol = o->tol[q];
    double cand_err = NAN, ref_err = NAN, bound = NAN, rms = NAN;
    int member = -1;
    RatioRule rr = {0};
    // the candidate's error in units of the tensor's RMS, under either rule
    cand_err = scaled_err(a, b, n);
    rms = rms_of(b, n);
    if (o->tol_ratio) {
        // errors scaled by the RMS of what the values should be; the bound
        // becomes a tolerance in units of this tensor's RMS
        ref_err = 0;
        for (int j = 0; j < nz->n; j++) {
            const double e = scaled_err(nz->x[j], nz->e[j], n);
            if (member < 0 || bigger(e, ref_err)) ref_err = e, member = j;
        }
        rr = o->ratio[q];
        if (!S->gates_matched) rr = ratio_for_tensor(rr, q, tensor);
        bound = ratio_bound(rr, ref_err);
        tol = rms > 0 ? (Tolerance){0, 0, bound} : (Tolerance){bound, 0, 0};
        tol.atol += o->extra[q].atol, tol.rtol += o->extra[q].rtol;   // --tol
    }
    ErrStats s = {0};
    err_compare(a, b, n, tol, &s);
    S->last_err = cand_err;
    S->last_bound = o->tol_ratio ? bound : tol.scaled > 0 ? tol.scaled : NAN;
    if (o->tol_ratio && rr.ref_cap > 0 && !(ref_err <= rr.ref_cap)) {
        char name[32];
        snprintf(name, sizeof name, "cpu:%s", reduce_order_name(NOISE_ORDERS[member < 0 ? 0 : member]));
        note_noise_failure(S, q, tensor, name, ref_err, rr.ref_cap, rms);
        S->bad[q]++;
    }
    if (S->errors) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "quantity", quantity_name(q));
        cJSON_AddStringToObject(x, "tensor", tensor);
        cJSON_AddItemToObject(x, "max_abs", trace_number(s.max_abs));
        cJSON_AddItemToObject(x, "max_rel", trace_number(s.max_rel));
        cJSON_AddNumberToObject(x, "n_bad", (double)s.n_bad);
        cJSON_AddItemToObject(x, "err_rms", trace_number(cand_err));
        cJSON_AddItemToObject(x, "rms", trace_number(rms));
        if (o->tol_ratio) {
            cJSON_AddItemToObject(x, "ref_err_rms", trace_number(ref_err));
            cJSON_AddItemToObject(x, "bound", trace_number(bound));
        }
        cJSON_AddItemToArray(S->errors, x);
    }
    if (legacy_key && S->max_err) {
        cJSON_AddItemToObject(S->max_err, legacy_key, trace_number(s.max_abs));
        cJSON_AddItemToObject(S->max_rel, legacy_key, trace_number(s.max_rel));
    }
    Totals *T = &S->T;
    T->seen[q] = 1;
    T->n_bad[q] += s.n_bad;
    where_update(&T->abs[q], s.max_abs, S->step, tensor);
    where_update(&T->rel[q], s.max_rel, S->step, tensor);
    if (o->tol_ratio) {
        if (!T->err[q].step || bigger(cand_err, T->err[q].v)) {
            where_update(&T->err[q], cand_err, S->step, tensor);
            T->err_ref[q] = ref_err;
            T->err_bound[q] = bound;
        }
        if (ref_err > 0) where_update(&T->ratio[q], cand_err / ref_err, S->step, tensor);
        where_update(&T->noise[q], ref_err, S->step, tensor);
    }
    S->bad[q] += s.n_bad;
    if (s.n_bad) {
        Failure *f = &S->f;
        size_t len = strlen(f->others);
        snprintf(f->others + len, sizeof f->others - len, "%s%s %s (%ld)", len ? ", " : "", quantity_name(q), tensor,
                 s.n_bad);
        char where[200];
        describe(dctx, s.first_bad, where, sizeof where);
        if (!f->failed) {
            note_failure(S, q, tensor, s.first_bad, where, a[s.first_bad], b[s.first_bad], tol, rms, s.n_bad);
            f->ratio = o->tol_ratio;
            f->cand_err = cand_err, f->ref_err = ref_err, f->bound = bound, f->rms = rms;
        }
    }
    return s;
}

void totals_merge(Totals *into, const Totals *s) {
    for (int q = 0; q < Q_NUM; q++) {
        if (!s->seen[q]) continue;
        into->seen[q] = 1;
        into->n_bad[q] += s->n_bad[q];
        where_merge(&into->abs[q], &s->abs[q]);
        where_merge(&into->rel[q], &s->rel[q]);
        where_merge(&into->ratio[q], &s->ratio[q]);
        where_merge(&into->noise[q], &s->noise[q]);
        if (s->err[q].step && (!into->err[q].step || bigger(s->err[q].v, into->err[q].v))) {
            into->err[q] = s->err[q];
            into->err_ref[q] = s->err_ref[q];
            into->err_bound[q] = s->err_bound[q];
        }
    }
}

static const char *failure_subject(Quantity q) {
    switch (q) {
    case Q_GRADS: return "the gradient of";
    case Q_PARAMS: return "the updated parameter";
    case Q_M: return "Adam's first moment m of";
    case Q_V: return "Adam's second moment v of";
    case Q_PROBS: return "the sampling probability of";
    case Q_ACTS: return "the output of";
    case Q_DACTS: return "the loss's gradient with respect to the output of";
    default: return "";
    }
}

void failure_print(const Options *o, const Failure *f) {
    if (f->noise) {
        printf("FAIL at step %d: the noise reference itself is off: %s's %s %s has an error %.3g of its RMS %.3g "
               "against %s, over the fixed bound %.3g every %s engine meets (docs/compare.md)\n"
               "  the CPU engine's %s path is wrong, so no verdict can rest on it\n",
               f->step, f->member, quantity_name(f->q), f->tensor, f->ref_err, f->rms, quantity_what(f->q),
               f->ref_cap, precision_name(engine_prec(o, 1)), precision_name(engine_prec(o, 1)));
        if (f->others[0]) printf("  out of tolerance at step %d: %s\n", f->step, f->others);
        return;
    }
    if (f->q == Q_LOSS) printf("FAIL at step %d: the loss differs\n", f->step);
    else if (f->q == Q_LOGITS) printf("FAIL at step %d: %s\n", f->step, f->where);
    else if (f->q == Q_PROBS) printf("FAIL after training: %s %s\n", failure_subject(f->q), f->where);
    else printf("FAIL at step %d: %s %s\n", f->step, failure_subject(f->q), f->where);
    const int update = f->q == Q_PARAMS || f->q == Q_M || f->q == Q_V;
    printf("  %s = %.17g\n  %s = %.17g (%s)\n  |a-b| = %.3g > tolerance %.3g (%ld element(s) of %s out of "
           "tolerance)\n",
           o->names[1], f->a, update ? "expected" : o->names[0], f->b, quantity_what(f->q), f->abs_err, f->tol,
           f->n_bad, f->tensor);
    if (f->ratio) {
        const RatioRule *r = &o->ratio[f->q];
        printf("  ratio rule: %s's error is %.3g of the tensor's RMS %.3g; allowed %.3g = %s%g x %.3g (the noise "
               "reference's error: the %s CPU engine with its sums in %d other orders) + %g",
               o->names[1], f->cand_err, f->rms, f->bound, r->cap > 0 ? "min(" : "", r->k, f->ref_err,
               precision_name(engine_prec(o, 1)), NOISE_MEMBERS, r->floor);
        if (r->cap > 0) printf(", cap %g: the largest error the precision was measured to make, with a margin)", r->cap);
        printf("\n");
    } else if (o->tol[f->q].scaled > 0) {
        printf("  fixed rule: |a-b| <= %g x the tensor's RMS %.3g\n", o->tol[f->q].scaled,
               o->tol[f->q].scaled > 0 ? f->tol / o->tol[f->q].scaled : 0);
    }
    if (f->others[0]) printf("  out of tolerance at step %d: %s\n", f->step, f->others);
}

void failure_to_json(cJSON *ff, const Failure *f) {
    cJSON_AddNumberToObject(ff, "step", f->step);
    cJSON_AddStringToObject(ff, "quantity", quantity_name(f->q));
    cJSON_AddStringToObject(ff, "tensor", f->tensor);
    cJSON_AddNumberToObject(ff, "index", (double)f->index);
    cJSON_AddStringToObject(ff, "where", f->where);
    trace_add_number(ff, "a", f->a);
    trace_add_number(ff, "b", f->b);
    trace_add_number(ff, "abs_err", f->abs_err);
    trace_add_number(ff, "tol", f->tol);
    cJSON_AddNumberToObject(ff, "elements_out_of_tolerance", (double)f->n_bad);
    if (f->ratio) {
        trace_add_number(ff, "err_rms", f->cand_err);
        trace_add_number(ff, "ref_err_rms", f->ref_err);
        trace_add_number(ff, "bound", f->bound);
    }
    if (f->noise) {
        cJSON_AddBoolToObject(ff, "noise_reference", 1);
        cJSON_AddStringToObject(ff, "member", f->member);
        trace_add_number(ff, "ref_cap", f->ref_cap);
    }
    if (f->others[0]) cJSON_AddStringToObject(ff, "tensors_out_of_tolerance", f->others);
}

static void where_text(const Where *w, char *out, size_t n) {
    if (w->step) snprintf(out, n, " (step %d, %s)", w->step, w->tensor);
    else snprintf(out, n, "%s", "");
}

void totals_print(const Options *o, const Totals *T) {
    printf("largest errors: max|a-b|, rel = max|a-b| / max|b| of the tensor; each with its own step and tensor:\n");
    for (int q = 0; q < Q_NUM; q++) {
        if (!T->seen[q]) continue;
        char wa[128], wr[128];
        where_text(&T->abs[q], wa, sizeof wa);
        where_text(&T->rel[q], wr, sizeof wr);
        printf("  %-7s %.3e%s  rel %.3e%s\n", quantity_name((Quantity)q), T->abs[q].v, wa, T->rel[q].v, wr);
        if (o->tol_ratio) {
            char we[128], wq[128];
            where_text(&T->err[q], we, sizeof we);
            where_text(&T->ratio[q], wq, sizeof wq);
            char wn[128];
            where_text(&T->noise[q], wn, sizeof wn);
            printf("          ratio rule: worst err %.3e of RMS%s vs noise %.3e, allowed %.3e; largest "
                   "err/err_noise %.2f%s; noise reference at most %.3e%s",
                   T->err[q].v, we, T->err_ref[q], T->err_bound[q], T->ratio[q].v, wq, T->noise[q].v, wn);
            if (o->ratio[q].ref_cap > 0) printf(" (its fixed bound %.1e)", o->ratio[q].ref_cap);
            printf("\n");
        } else if (o->tol[q].scaled > 0) {
            printf("          tolerance %g x the tensor's RMS", o->tol[q].scaled);
            if (o->tol[q].atol > 0 || o->tol[q].rtol > 0) printf(" + atol %g + rtol %g x |b|", o->tol[q].atol, o->tol[q].rtol);
            printf("\n");
        } else {
            printf("          tolerance atol %.0e, rtol %.0e\n", o->tol[q].atol, o->tol[q].rtol);
        }
        if (o->extra[q].atol > 0 || o->extra[q].rtol > 0)
            printf("          --tol %s: atol %g + rtol %g x |b| added to each element's bound\n",
                   quantity_name((Quantity)q), o->extra[q].atol, o->extra[q].rtol);
    }
}

void totals_to_json(cJSON *mx, const Options *o, const Totals *T) {
    for (int q = 0; q < Q_NUM; q++) {
        if (!T->seen[q]) continue;
        cJSON *x = cJSON_AddObjectToObject(mx, quantity_name((Quantity)q));
        // abs/step/tensor as before; the relative maximum has its own place
        trace_add_number(x, "abs", T->abs[q].v);
        cJSON_AddNumberToObject(x, "step", T->abs[q].step);
        cJSON_AddStringToObject(x, "tensor", T->abs[q].tensor);
        trace_add_number(x, "rel", T->rel[q].v);
        cJSON_AddNumberToObject(x, "rel_step", T->rel[q].step);
        cJSON_AddStringToObject(x, "rel_tensor", T->rel[q].tensor);
        cJSON_AddNumberToObject(x, "n_bad", (double)T->n_bad[q]);
        if (o->tol_ratio) {
            trace_add_number(x, "err_rms", T->err[q].v);
            cJSON_AddNumberToObject(x, "err_step", T->err[q].step);
            cJSON_AddStringToObject(x, "err_tensor", T->err[q].tensor);
            trace_add_number(x, "ref_err_rms", T->err_ref[q]);
            trace_add_number(x, "bound", T->err_bound[q]);
            trace_add_number(x, "max_ratio", T->ratio[q].v);
            trace_add_number(x, "noise_err_rms", T->noise[q].v);
            cJSON_AddNumberToObject(x, "max_ratio_step", T->ratio[q].step);
            cJSON_AddStringToObject(x, "max_ratio_tensor", T->ratio[q].tensor);
        }
    }
}
