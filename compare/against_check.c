// --against's checks of one step's tensor file: compare/against_check.h.
#include "against_check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare/grad_check.h"
#include "common/util.h"

void against_first_fail(AgainstFirst *f, int step, const char *fmt, ...) {
    if (f->failed) return;
    f->failed = 1;
    f->step = step;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->what, sizeof f->what, fmt, ap);
    va_end(ap);
}

// A file's name as messages show it (the trace names it).
static const char *shown(const char *file) { return text_safe(path_short(file)); }

// A recorded tensor of the expected shape; NULL if the file lacks it. A
// tensor of another shape is refused.
static const StTensor *recorded(const StFile *sf, const char *name, const size_t *shape, int ndim, const char *file) {
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
        die(EXIT_USAGE, "--against: %s: '%s' is %s, expected %s (F32 is also read)", shown(file), name, got, want);
    }
    return t;
}

// Whether the file holds every tensor prefix/<name> of the layout (1) or
// none (0); some of them, or one of another shape, is refused.
static int holds_all(const ParamLayout *L, const StFile *sf, const char *file, const char *prefix) {
    int have = 0, missing = -1;   // (a tensor missing before the first one there counts too)
    for (int k = 0; k < L->n_tensors; k++) {
        char name[128];
        snprintf(name, sizeof name, "%s/%s", prefix, L->t[k].name);
        size_t shape[2] = {(size_t)L->t[k].rows, (size_t)L->t[k].cols};
        if (recorded(sf, name, shape, 2, file)) have++;
        else if (missing < 0) missing = k;
    }
    if (have && missing >= 0)
        die(EXIT_USAGE, "--against: %s has some %s/ tensors but not '%s/%s'", shown(file), prefix, prefix,
            L->t[missing].name);
    return have > 0;
}

// Compare every tensor prefix/<name> of the layout (holds_all said they are
// there, of their shapes) with the reference in r->ref; 1 when one is out
// of tolerance. The recorded values are left in r->rec.
static int check_tensors(const AgainstRef *r, const StFile *sf, const char *prefix, Quantity q, int step,
                         AgainstFirst *f, double *max_err, double *max_scaled) {
    const ParamLayout *L = r->L;
    int bad = 0;
    for (int k = 0; k < L->n_tensors; k++) {
        const ParamTensor *pt = &L->t[k];
        char name[128];
        snprintf(name, sizeof name, "%s/%s", prefix, pt->name);
        st_read_f64(st_find(sf, name), r->rec + pt->offset);
        ErrStats s = {0};
        err_compare(r->rec + pt->offset, r->ref + pt->offset, pt->size, r->tol[q], &s);
        if (!(s.max_abs <= *max_err)) *max_err = s.max_abs;
        const double e = scaled_err(r->rec + pt->offset, r->ref + pt->offset, pt->size);
        if (!(e <= *max_scaled)) *max_scaled = e;
        if (s.n_bad) {
            bad = 1;
            size_t i = pt->offset + s.first_bad;
            char where[160];
            layout_describe(L, i, where, sizeof where);
            against_first_fail(f, step, "%s %s: recorded %.17g, reference %.17g (%ld element(s) of %s out of tolerance)",
                               q == Q_GRADS ? "the gradient of" : "the updated parameter", where, r->rec[i], r->ref[i],
                               s.n_bad, pt->name);
        }
    }
    return bad;
}

void against_check_file(const AgainstRef *r, const StFile *sf, const char *file, int B, int T, const int *n, int step,
                        AgainstFirst *f, AgainstStep *out) {
    memset(out, 0, sizeof *out);
    const size_t V = (size_t)r->L->shape.vocab_size;
    // what the file holds, before anything is compared: every refusal comes here
    size_t shape[3] = {(size_t)B, (size_t)T, V};
    const StTensor *logits = recorded(sf, "logits", shape, 3, file);
    out->have[Q_LOGITS] = logits != NULL;
    out->have[Q_GRADS] = holds_all(r->L, sf, file, "grads");
    out->have[Q_PARAMS] = holds_all(r->L, sf, file, "params");
    const int expected = out->have[Q_LOGITS] + (out->have[Q_GRADS] + out->have[Q_PARAMS]) * r->L->n_tensors;
    if (!expected || sf->n != expected)
        die(EXIT_USAGE, "--against: %s holds %d tensors, %d of them logits, grads/<tensor> or params/<tensor> "
            "(docs/outside_engines.md)", shown(file), sf->n, expected);
    if (logits) {
        if (r->get(r->ctx, Q_LOGITS, r->rlg))   // a partial engine (docs/outside_engines.md, "Partial engines")
            die(EXIT_USAGE, "--against: %s records logits; the engine %s offers none to check them against "
                "(--engines scalar does)", shown(file), r->engine);
        st_read_f64(logits, r->lg);
        // the real positions, document after document, as one tensor (lockstep's logits)
        size_t k = 0;
        for (int dd = 0; dd < B; dd++) {
            const size_t off = (size_t)dd * (size_t)T * V, len = (size_t)n[dd] * V;
            memmove(r->lg + k, r->lg + off, len * sizeof *r->lg);
            memmove(r->rlg + k, r->rlg + off, len * sizeof *r->rlg);
            k += len;
        }
        ErrStats s = {0};
        err_compare(r->lg, r->rlg, k, r->tol[Q_LOGITS], &s);
        out->err[Q_LOGITS] = s.max_abs;
        out->scaled[Q_LOGITS] = scaled_err(r->lg, r->rlg, k);
        if (s.n_bad) {
            out->bad = 1;
            size_t at = s.first_bad, dd = 0;
            while (dd + 1 < (size_t)B && at >= (size_t)n[dd] * V) at -= (size_t)n[dd++] * V;
            against_first_fail(f, step, "logits[%zu,%zu,%zu]: recorded %.17g, reference %.17g (%ld out of tolerance)",
                               dd, at / V, at % V, r->lg[s.first_bad], r->rlg[s.first_bad], s.n_bad);
        }
    }
    r->get(r->ctx, Q_GRADS, r->ref);
    if (out->have[Q_GRADS] && check_tensors(r, sf, "grads", Q_GRADS, step, f, &out->err[Q_GRADS], &out->scaled[Q_GRADS])) {
        out->bad = 1;
        // printed after the step's line: made now, while rec and ref hold the gradients
        size_t len = 0;
        FILE *mf = open_memstream(&out->zero_note, &len);
        if (mf) grads_zero_report(r->L, r->rec, r->ref, r->recorder, mf), fclose(mf);
    }
    r->get(r->ctx, Q_PARAMS, r->ref);
    if (out->have[Q_PARAMS] && check_tensors(r, sf, "params", Q_PARAMS, step, f, &out->err[Q_PARAMS], &out->scaled[Q_PARAMS])) out->bad = 1;
}
