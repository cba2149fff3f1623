// --against TRACE: check what another program recorded. The trace is a
// microgpt-trace of kind "train" (docs/traces.md; the schema is
// docs/schemas/against_trace.schema.json): per-step losses, and per step
// optionally "tensors": a safetensors file (relative to the trace) holding
// "logits" (B,T,V), "grads/<tensor>" and "params/<tensor>" (after the update).
// The reference engine trains from the same initial weights on the same
// batches (compare --export-init writes them); each recorded loss must be
// within the loss-drift tolerance of the reference's, each recorded tensor
// within the lockstep tolerance of its quantity.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare.h"
#include "engines.h"
#include "grad_check.h"
#include "common/atomic_file.h"
#include "common/safetensors.h"
#include "common/util.h"
#include "traces/trace_read.h"

// The trace's settings must be this run's (the ones that change the numbers).
static void check_settings(const Options *o, const TraceData *td, const Run *r) {
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(td->root, "settings");
    if (ts && !cJSON_IsObject(ts)) die(EXIT_USAGE, "--against: %s: \"settings\" is not an object", td->path);
    cJSON *ours = trace_settings(&o->s, &r->L.shape);
    for (const cJSON *x = ts ? ts->child : NULL; x; x = x->next) {
        if (!strcmp(x->string, "temperature") || !strcmp(x->string, "samples") || !strcmp(x->string, "steps"))
            continue;
        const cJSON *y = cJSON_GetObjectItemCaseSensitive(ours, x->string);
        if (!y) continue;
        // ours holds exact numbers as raw text (trace_number)
        const double yv = cJSON_IsRaw(y) ? strtod(y->valuestring, NULL) : y->valuedouble;
        int same = cJSON_IsNumber(x) && (cJSON_IsNumber(y) || cJSON_IsRaw(y)) ? x->valuedouble == yv
                   : cJSON_IsString(x) && cJSON_IsString(y) ? !strcmp(x->valuestring, y->valuestring)
                   : 0;
        if (!same) {
            char *a = cJSON_PrintUnformatted(x), *b = cJSON_PrintUnformatted(y);
            die(EXIT_USAGE, "--against: %s was recorded with %s %s; this run has %s: give compare the same model and "
                "data flags", td->path, x->string, a ? a : "?", b ? b : "?");
        }
    }
    // the learning-rate schedule's horizon
    double steps;
    if (ts && trace_get_number(ts, "steps", &steps) == 0 && steps != o->s.steps)
        die(EXIT_USAGE, "--against: %s was recorded with a %g-step schedule; this run has --steps %d", td->path,
            steps, o->s.steps);
    cJSON_Delete(ours);
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(td->root, "dataset");
    const char *sha = ds ? trace_get_string(ds, "sha256") : NULL;
    if (sha && strcmp(sha, r->d.sha256))
        die(EXIT_USAGE, "--against: %s was recorded on data with sha256 %s; %s has %s", td->path, sha,
            o->s.data_path, r->d.sha256);
}

typedef struct {
    int failed, step;
    char what[512];
} First;

static void first_fail(First *f, int step, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void first_fail(First *f, int step, const char *fmt, ...) {
    if (f->failed) return;
    f->failed = 1;
    f->step = step;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->what, sizeof f->what, fmt, ap);
    va_end(ap);
}

// A recorded tensor, of the expected shape; NULL if the file lacks it.
static const double *recorded(const StFile *sf, const char *name, const size_t *shape, int ndim, const char *file,
                              double *buf) {
    const StTensor *t = st_find(sf, name);
    if (!t) return NULL;
    int same = t->ndim == ndim && t->dtype != ST_I32;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char got[96], want[96];
        st_describe(t, got, sizeof got);
        StTensor w = {.dtype = ST_F64, .ndim = ndim};
        memcpy(w.shape, shape, (size_t)ndim * sizeof *shape);
        st_describe(&w, want, sizeof want);
        die(EXIT_USAGE, "--against: %s: '%s' is %s, expected %s (F32 is also read)", file, name, got, want);
    }
    st_read_f64(t, buf);
    return buf;
}

// Compare every tensor prefix/<name> of the layout; all or none must be there.
static int check_tensors(const Run *r, const StFile *sf, const char *file, const char *prefix, Quantity q,
                         const double *ref, double *buf, int step, First *f, double *max_err) {
    const ParamLayout *L = &r->L;
    int have = 0, bad = 0;
    for (int k = 0; k < L->n_tensors; k++) {
        char name[128];
        snprintf(name, sizeof name, "%s/%s", prefix, L->t[k].name);
        size_t shape[2] = {(size_t)L->t[k].rows, (size_t)L->t[k].cols};
        if (recorded(sf, name, shape, 2, file, buf + L->t[k].offset)) have++;
        else if (have) die(EXIT_USAGE, "--against: %s has some %s/ tensors but not '%s'", file, prefix, name);
    }
    if (!have) return -1;
    for (int k = 0; k < L->n_tensors; k++) {
        const ParamTensor *pt = &L->t[k];
        ErrStats s = {0};
        err_compare(buf + pt->offset, ref + pt->offset, pt->size, r->o->tol[q], &s);
        if (!(s.max_abs <= *max_err)) *max_err = s.max_abs;
        if (s.n_bad) {
            bad = 1;
            size_t i = pt->offset + s.first_bad;
            char where[160];
            layout_describe(L, i, where, sizeof where);
            first_fail(f, step, "%s %s: recorded %.17g, reference %.17g (%ld element(s) of %s out of tolerance)",
                       q == Q_GRADS ? "the gradient of" : "the updated parameter", where, buf[i], ref[i], s.n_bad,
                       pt->name);
        }
    }
    return bad;
}

int against_main(Options *o) {
    TraceData td;
    char err[1024];
    if (trace_load(&td, o->against, err, sizeof err)) die(EXIT_USAGE, "--against: %s", err);
    if (td.kind != TRACE_KIND_TRAIN)
        die(EXIT_USAGE, "--against: %s is a compare trace; give a trace of one program's run (kind \"train\")",
            o->against);
    if (!td.n_steps) die(EXIT_USAGE, "--against: %s has no steps", o->against);
    // the recorded precision picks the tolerances (fp32: fp32's)
    Precision tp = PREC_FP64;
    if (!strcmp(td.precision[0], "fp32")) tp = PREC_FP32;
    else if (td.precision[0][0] && strcmp(td.precision[0], "fp64"))
        die(EXIT_USAGE, "--against: %s: precision '%s' (fp64 or fp32)", o->against, td.precision[0]);
    if (o->prec_given && o->prec != tp)
        die(EXIT_USAGE, "--against: %s was recorded in %s; --precision says %s", o->against, precision_name(tp),
            precision_name(o->prec));
    if (!o->prec_given && tp == PREC_FP32) {
        o->prec = tp;
        for (int q = 0; q < Q_NUM; q++) o->tol[q] = fixed_tolerance(o, tp, (Quantity)q);
        o->drift_tol = drift_tol_for(o, tp);
    }
    // the recorded schedule's horizon, unless --steps says otherwise (then it must agree)
    const cJSON *tset = cJSON_GetObjectItemCaseSensitive(td.root, "settings");
    double tsteps;
    if (!o->b.steps_given && cJSON_IsObject(tset) && trace_get_number(tset, "steps", &tsteps) == 0 && tsteps >= 1 &&
        tsteps <= 1e9 && tsteps == floor(tsteps))
        o->s.steps = (int)tsteps;
    if (td.n_steps > o->s.steps)
        die(EXIT_USAGE, "--against: %s has %d steps; this run has --steps %d", o->against, td.n_steps, o->s.steps);
    const cJSON *jsteps = cJSON_GetObjectItemCaseSensitive(td.root, "steps");
    Run r;
    run_setup(&r, o);
    check_settings(o, &td, &r);
    r.e[0] = run_make_engine(&r, 0);
    Engine *e = r.e[0];
    const size_t P = r.L.n_params;
    const int V = r.L.shape.vocab_size;
    double *lg = xmalloc((size_t)o->s.batch * (size_t)o->s.block_size * (size_t)V * sizeof(double));
    double *rlg = xmalloc((size_t)o->s.batch * (size_t)o->s.block_size * (size_t)V * sizeof(double));
    double *ref = xmalloc(P * sizeof(double)), *buf = xmalloc(P * sizeof(double));
    // the trace's folder: tensor files are relative to it
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", o->against);
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = '\0';
    else dir[0] = '\0';
    First f = {0};
    double worst[Q_NUM] = {0};
    int n_tensor_steps = 0;
    Batch b = {0};
    for (int i = 0; i < td.n_steps; i++) {
        const int step = td.steps[i].step;
        if (step != i + 1)
            die(EXIT_USAGE, "--against: %s: steps[%d] is step %d; steps must be 1, 2, 3, ... in order", o->against, i,
                step);
        batch_make(&b, &r.d, i, o->s.batch, o->s.block_size);
        const double loss = e->ops->step(e, &b, i), rec = td.steps[i].loss[0];
        const double d = fabs(rec - loss);
        if (!(d <= worst[Q_LOSS])) worst[Q_LOSS] = d;
        int bad = !(d <= o->drift_tol);
        if (bad) first_fail(&f, step, "the loss: recorded %.17g, reference %.17g, |a-b| = %.3g > %.3g", rec, loss, d,
                            o->drift_tol);
        const char *tf = trace_get_string(cJSON_GetArrayItem(jsteps, i), "tensors");
        char line[256] = "", *zero_note = NULL;
        size_t zero_len = 0;
        if (tf) {
            char file[8192];
            snprintf(file, sizeof file, "%s%s", tf[0] == '/' ? "" : dir, tf);
            StFile sf;
            unsigned char *raw;
            if (safetensors_read_file(file, &sf, &raw, err, sizeof err)) die(EXIT_USAGE, "--against: %s", err);
            outfile_note_input_as(file, "a tensor file of --against:");
            n_tensor_steps++;
            int checked = 0;
            size_t shape[3] = {(size_t)b.B, (size_t)b.T, (size_t)V};
            if (recorded(&sf, "logits", shape, 3, file, lg)) {
                checked++;
                e->ops->get_logits(e, rlg);
                // the real positions, document after document, as one tensor (lockstep's logits)
                size_t k = 0;
                for (int dd = 0; dd < b.B; dd++) {
                    const size_t off = (size_t)dd * (size_t)b.T * (size_t)V, len = (size_t)b.n[dd] * (size_t)V;
                    memmove(lg + k, lg + off, len * sizeof *lg);
                    memmove(rlg + k, rlg + off, len * sizeof *rlg);
                    k += len;
                }
                ErrStats s = {0};
                err_compare(lg, rlg, k, o->tol[Q_LOGITS], &s);
                if (!(s.max_abs <= worst[Q_LOGITS])) worst[Q_LOGITS] = s.max_abs;
                if (s.n_bad) {
                    bad = 1;
                    size_t at = s.first_bad, dd = 0;
                    while (dd + 1 < (size_t)b.B && at >= (size_t)b.n[dd] * V) at -= (size_t)b.n[dd++] * V;
                    first_fail(&f, step, "logits[%zu,%zu,%zu]: recorded %.17g, reference %.17g (%ld out of tolerance)",
                               dd, at / V, at % V, lg[s.first_bad], rlg[s.first_bad], s.n_bad);
                }
                snprintf(line + strlen(line), sizeof line - strlen(line), " | logits %.1e", s.max_abs);
            }
            e->ops->get_grads(e, ref);
            double gerr = 0, perr = 0;
            int gb = check_tensors(&r, &sf, file, "grads", Q_GRADS, ref, buf, step, &f, &gerr);
            if (gb >= 0) {
                checked++;
                bad |= gb;
                if (gb) {   // printed after the step's line
                    FILE *mf = open_memstream(&zero_note, &zero_len);
                    if (mf) grads_zero_report(&r.L, buf, ref, td.engine[0], mf), fclose(mf);
                }
                if (!(gerr <= worst[Q_GRADS])) worst[Q_GRADS] = gerr;
                snprintf(line + strlen(line), sizeof line - strlen(line), " | grads %.1e", gerr);
            }
            e->ops->get_params(e, ref);
            int pb = check_tensors(&r, &sf, file, "params", Q_PARAMS, ref, buf, step, &f, &perr);
            if (pb >= 0) {
                checked++;
                bad |= pb;
                if (!(perr <= worst[Q_PARAMS])) worst[Q_PARAMS] = perr;
                snprintf(line + strlen(line), sizeof line - strlen(line), " | params %.1e", perr);
            }
            const int expected = (st_find(&sf, "logits") != NULL) + (gb >= 0 ? r.L.n_tensors : 0) +
                                 (pb >= 0 ? r.L.n_tensors : 0);
            if (!checked || sf.n != expected)
                die(EXIT_USAGE, "--against: %s holds %d tensors, %d of them logits, grads/<tensor> or "
                    "params/<tensor> (docs/outside_engines.md)", file, sf.n, expected);
            st_file_free(&sf);
            free(raw);
        }
        if (bad || (!o->quiet && ((i + 1) % o->every == 0 || i == 0 || i + 1 == td.n_steps)))
            printf("step %4d | loss %s %.12f | %s %.12f | diff %.1e%s | %s\n", step, o->names[0], loss, td.engine[0],
                   rec, d, line, bad ? "FAIL" : "ok");
        if (zero_note) fputs(zero_note, stdout);
        free(zero_note);
    }
    printf("%s: %s (recorded by %s, %s) against %s (%s), %d steps (%d with tensors), batch %d\n",
           f.failed ? "FAIL" : "PASS", o->against, td.engine[0], precision_name(o->prec), o->names[0],
           precision_name(engine_prec(o, 0)), td.n_steps, n_tensor_steps, o->s.batch);
    if (f.failed) printf("  first failure at step %d: %s\n", f.step, f.what);
    printf("  largest differences: loss %.3e (tolerance %.0e)", worst[Q_LOSS], o->drift_tol);
    if (n_tensor_steps) {
        printf(", logits %.3e, grads %.3e, params %.3e", worst[Q_LOGITS], worst[Q_GRADS], worst[Q_PARAMS]);
        if (o->tol[Q_GRADS].scaled > 0)
            printf(" (tolerances %g/%g/%g x each tensor's RMS)", o->tol[Q_LOGITS].scaled, o->tol[Q_GRADS].scaled,
                   o->tol[Q_PARAMS].scaled);
        else
            printf(" (tolerances atol %.0e/%.0e/%.0e + rtol %.0e/%.0e/%.0e x |b|)", o->tol[Q_LOGITS].atol,
                   o->tol[Q_GRADS].atol, o->tol[Q_PARAMS].atol, o->tol[Q_LOGITS].rtol, o->tol[Q_GRADS].rtol,
                   o->tol[Q_PARAMS].rtol);
    }
    printf("\n");
    batch_free(&b);
    free(lg);
    free(rlg);
    free(ref);
    free(buf);
    run_teardown(&r);
    trace_data_free(&td);
    return f.failed;
}
