// trace inspect: the summary of a trace, as text or JSON.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic_file.h"
#include "common/util.h"
#include "traces/bench_view.h"
#include "traces/tool.h"
#include "traces/trace.h"
#include "traces/trace_read.h"

// ---------------------------------------------------------------------------
// inspect

void inspect_usage(FILE *f) {
    fprintf(f,
            "usage: trace inspect FILE [--json]\n"
            "A summary of one trace (kind \"train\" or \"compare\"): format version, settings,\n"
            "dataset, engine(s), number of steps, the loss (first, last, min and max with\n"
            "their steps, mean of the first and of the last 100 steps) and the time per\n"
            "step (mean, median) of each engine. Train traces: the samples. Compare traces:\n"
            "mode, tolerances, the verdict, the first failure in words and a table of the\n"
            "largest error of each quantity/tensor over all steps.\n\n"
            "  --json     print the summary as JSON (numbers exact) instead of text\n"
            "  --help     this text\n\n"
            "Exit codes: 0 ok, 2 bad usage or FILE is not a readable trace.\n");
}

// The members of an object as "key=value" pairs wrapped at ~78 columns;
// nested objects on their own lines below.
static void print_pairs(const cJSON *obj, const char *indent) {
    int col = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, obj) {
        if (cJSON_IsObject(v)) continue;
        StrBuf b = {0};
        sb_printf(&b, "%s=", text_safe(v->string));
        item_text(v, &b);
        if (col && col + 1 + (int)b.n > 78) {
            putchar('\n');
            col = 0;
        }
        if (!col) col = printf("%s%s", indent, b.s);
        else col += printf(" %s", b.s);
        sb_free(&b);
    }
    if (col) putchar('\n');
    cJSON_ArrayForEach(v, obj) {
        if (!cJSON_IsObject(v)) continue;
        char deeper[64];
        snprintf(deeper, sizeof deeper, "%s  ", indent);
        printf("%s%s:\n", indent, text_safe(v->string));
        print_pairs(v, deeper);
    }
}

static void inspect_text(const TraceData *t) {
    const cJSON *root = t->root;
    printf("%s: microgpt-trace version %d, kind \"%s\"\n", t->path, TRACE_VERSION,
           trace_kind_name(t->kind));
    if (t->complete == 0)
        printf("INCOMPLETE: the run stopped after step %d: %s\n", t->stop_step, text_safe(t->stop_reason));
    const cJSON *settings = cJSON_GetObjectItemCaseSensitive(root, "settings");
    if (settings) {
        printf("settings:\n");
        print_pairs(settings, "  ");
    } else {
        printf("settings: (absent)\n");
    }
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(root, "dataset");
    if (ds) {
        const char *p = trace_get_string(ds, "path");
        const char *sha = trace_get_string(ds, "sha256");
        double docs, bytes, vocab;
        printf("dataset: %s", p ? text_safe(p) : "(no path)");
        StrBuf b = {0};
        if (trace_get_number(ds, "documents", &docs) == 0)
            sb_printf(&b, "%s%s documents", b.n ? ", " : "", exact(docs));
        if (trace_get_number(ds, "bytes", &bytes) == 0)
            sb_printf(&b, "%s%s bytes", b.n ? ", " : "", exact(bytes));
        if (trace_get_number(ds, "vocab_size", &vocab) == 0)
            sb_printf(&b, "%svocab %s", b.n ? ", " : "", exact(vocab));
        if (sha) sb_printf(&b, "%ssha256 %s...", b.n ? ", " : "", text_safe_n(sha, 12, 0));
        if (b.n) printf(" (%s)", b.s);
        printf("\n");
        sb_free(&b);
    } else {
        printf("dataset: (absent)\n");
    }
    if (t->kind == TRACE_KIND_TRAIN) {
        printf("engine: %s%s%s%s\n", text_safe(t->engine[0]), *t->precision[0] ? " (" : "", text_safe(t->precision[0]),
               *t->precision[0] ? ")" : "");
    } else {
        printf("engines: %s (%s%sreference), %s (%s%scandidate)\n", text_safe(t->engine[0]),
               text_safe(t->precision[0]), *t->precision[0] ? ", " : "", text_safe(t->engine[1]),
               text_safe(t->precision[1]), *t->precision[1] ? ", " : "");
        const char *mode = trace_get_string(root, "mode");
        const char *prec = trace_get_string(root, "precision");
        printf("mode: %s, precision: %s\n", mode ? text_safe(mode) : "(absent)", prec ? text_safe(prec) : "(absent)");
        const cJSON *tol = cJSON_GetObjectItemCaseSensitive(root, "tolerances");
        if (tol) {
            printf("tolerances:\n");
            const cJSON *q;
            cJSON_ArrayForEach(q, tol) {
                printf("  %-8s", text_safe(q->string));
                if (!cJSON_IsObject(q)) {  // a single number, e.g. "drift"
                    StrBuf b = {0};
                    item_text(q, &b);
                    printf(" %s\n", b.s);
                    sb_free(&b);
                    continue;
                }
                double atol, rtol;
                int ha = trace_get_number(q, "atol", &atol) == 0;
                int hr = trace_get_number(q, "rtol", &rtol) == 0;
                printf(" atol %-9s rtol %s\n", ha ? fmtn("%.3g", atol) : "-", hr ? fmtn("%.3g", rtol) : "-");
            }
        }
    }
    double np;
    if (trace_get_number(root, "num_params", &np) == 0) printf("parameters: %s\n", exact(np));
    if (t->n_steps) printf("steps: %d (step %d to %d)\n", t->n_steps, t->steps[0].step,
                           t->steps[t->n_steps - 1].step);
    else printf("steps: 0\n");

    for (int e = 0; e < t->n_engines && t->n_steps; e++) {
        LossStats s;
        loss_stats(t, e, &s);
        const TraceStep *st = t->steps;
        if (t->n_engines > 1) printf("loss of %s (%s):\n", text_safe(t->engine[e]), e ? "candidate" : "reference");
        else printf("loss:\n");
        printf("  first    %-12s at step %d\n", fmtn("%.6g", st[s.first].loss[e]), st[s.first].step);
        printf("  last     %-12s at step %d\n", fmtn("%.6g", st[s.last].loss[e]), st[s.last].step);
        if (s.min >= 0) {
            printf("  min      %-12s at step %d\n", fmtn("%.6g", st[s.min].loss[e]), st[s.min].step);
            printf("  max      %-12s at step %d\n", fmtn("%.6g", st[s.max].loss[e]), st[s.max].step);
        }
        printf("  mean of the first %d steps  %s\n", s.k_first, fmtn("%.6g", s.mean_first));
        printf("  mean of the last %d steps   %s\n", s.k_last, fmtn("%.6g", s.mean_last));
        if (s.non_finite) printf("  non-finite (null) losses: %d\n", s.non_finite);
    }
    for (int e = 0; e < t->n_engines && t->n_steps; e++) {
        TimeStats ts;
        time_stats(t, e, &ts);
        if (t->n_engines > 1) printf("time per step of %s: ", text_safe(t->engine[e]));
        else printf("time per step: ");
        if (ts.n) printf("mean %s ms, median %s ms (%s s over %d steps)\n",
                         fmtn("%.4g", ts.mean * 1e3), fmtn("%.4g", ts.median * 1e3),
                         fmtn("%.4g", ts.total), ts.n);
        else printf("not recorded\n");
    }
    double tt;
    if (trace_get_number(root, "train_time_s", &tt) == 0)
        printf("training time: %s s\n", fmtn("%.4g", tt));

    if (t->kind == TRACE_KIND_COMPARE) {
        const char *verdict = trace_get_string(root, "verdict");
        int nf = failed_steps(t);
        printf("verdict: %s", verdict ? text_safe(verdict) : "(absent)");
        if (nf) printf(" (%d of %d steps not ok)", nf, t->n_steps);
        printf("\n");
        const cJSON *ff = cJSON_GetObjectItemCaseSensitive(root, "first_failure");
        if (cJSON_IsObject(ff)) {
            StrBuf b = {0};
            failure_words(t, ff, &b);
            printf("first failure: %s\n", b.s);
            sb_free(&b);
            double nbad;
            if (trace_get_number(ff, "elements_out_of_tolerance", &nbad) == 0)
                printf("  elements out of tolerance at that step: %s\n", exact(nbad));
            const char *others = trace_get_string(ff, "tensors_out_of_tolerance");
            if (others) printf("  out of tolerance at that step: %s\n", text_safe(others));
            const char *where = trace_get_string(root, "first_divergence");
            if (where) printf("  %s\n", text_safe(where));
        } else if (ff) {
            printf("first failure: none\n");
        }
        const cJSON *drift = cJSON_GetObjectItemCaseSensitive(root, "drift");
        if (drift) {
            double ma, tol, step;
            int hm = trace_get_number(drift, "max_abs", &ma) == 0;
            int hs = trace_get_number(drift, "step", &step) == 0;
            int ht = trace_get_number(drift, "tol", &tol) == 0;
            printf("drift (free mode): max |a-b| %s", hm ? fmtn("%.3g", ma) : "?");
            if (hs) printf(" at step %s", exact(step));
            if (ht) printf(", tolerance %s", fmtn("%.3g", tol));
            double win;
            if (trace_get_number(drift, "window", &win) == 0 && win > 1)
                printf(" (the mean of the last %s steps)", exact(win));
            printf("\n");
        }
        const cJSON *sk = cJSON_GetObjectItemCaseSensitive(root, "skipped_steps");
        if (sk) {   // fp16 loss scaling (docs/mixed_precision.md): never silent
            double n = 0, allowed = 0, first = 0;
            trace_get_number(sk, "count", &n);
            trace_get_number(sk, "allowed", &allowed);
            trace_get_number(sk, "first", &first);
            printf("skipped updates (fp16 loss scaling, a gradient overflowed): %s (allowed %s)", exact(n),
                   exact(allowed));
            if (n > 0) printf(", the first at step %s", exact(first));
            printf("\n");
        }
        ErrTable tab;
        err_table(t, &tab);
        if (tab.n) {
            int w = 6;
            for (int i = 0; i < tab.n; i++)
                if ((int)strlen(tab.r[i].key) > w) w = (int)strlen(tab.r[i].key);
            printf("largest error over all steps:\n");
            printf("  %-8s %-*s  %-10s %-7s  %-10s %-7s  %-9s %-9s\n", "quantity", w, "name",
                   "max |a-b|", "step", "max rel", "step", "atol", "rtol");
            for (int i = 0; i < tab.n; i++) {
                const ErrRow *r = &tab.r[i];
                const char *q = quantity_of(r->key);
                double atol, rtol;
                tolerance_of(t, q, &atol, &rtol);
                char es[16] = "-", rs[16] = "-";
                if (r->err_i >= 0) snprintf(es, sizeof es, "%d", t->steps[r->err_i].step);
                if (r->rel_i >= 0) snprintf(rs, sizeof rs, "%d", t->steps[r->rel_i].step);
                printf("  %-8s %-*s  %-10s %-7s  %-10s %-7s  %-9s %-9s\n", q, w, text_safe(r->key),
                       r->err_i >= 0 ? fmtn("%.3g", r->err) : "-", es,
                       r->rel_i >= 0 ? fmtn("%.3g", r->rel) : "-", rs,
                       isnan(atol) ? "-" : fmtn("%.3g", atol), isnan(rtol) ? "-" : fmtn("%.3g", rtol));
            }
        }
        err_table_free(&tab);
        static const char *const extra[] = {"final_params", "bench"};
        for (size_t k = 0; k < sizeof extra / sizeof *extra; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, extra[k]);
            if (!cJSON_IsObject(v)) continue;
            printf("%s:\n", extra[k]);
            print_pairs(v, "  ");
        }
    }
    const cJSON *samples = cJSON_GetObjectItemCaseSensitive(root, "samples");
    if (samples) {
        printf("samples (%d):", cJSON_GetArraySize(samples));
        int col = 78;
        const cJSON *s;
        cJSON_ArrayForEach(s, samples) {
            int len = (int)strlen(s->valuestring) + 4;
            if (col + len > 78) {
                printf("\n ");
                col = 1;
            }
            col += printf(" \"%s\"%s", text_safe(s->valuestring), s->next ? "," : "");
        }
        printf("\n");
    }
}

// A copy of a JSON value whose numbers print exactly (cJSON's own printer
// may drop the last bits).
static cJSON *dup_exact(const cJSON *v) {
    if (cJSON_IsNumber(v)) return trace_number(v->valuedouble);
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        cJSON *o = cJSON_IsArray(v) ? cJSON_CreateArray() : cJSON_CreateObject();
        const cJSON *c;
        cJSON_ArrayForEach(c, v) {
            if (cJSON_IsArray(v)) cJSON_AddItemToArray(o, dup_exact(c));
            else cJSON_AddItemToObject(o, c->string, dup_exact(c));
        }
        return o;
    }
    return cJSON_Duplicate(v, 1);
}

static cJSON *at_step(const TraceData *t, int i, int e) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", t->steps[i].step);
    trace_add_number(o, "value", t->steps[i].loss[e]);
    return o;
}

static void inspect_json(const TraceData *t) {
    const cJSON *root = t->root;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "file", t->path);
    cJSON_AddStringToObject(j, "format", TRACE_FORMAT);
    cJSON_AddNumberToObject(j, "version", TRACE_VERSION);
    cJSON_AddStringToObject(j, "kind", trace_kind_name(t->kind));
    cJSON_AddBoolToObject(j, "complete", t->complete != 0);
    if (t->complete == 0) {
        cJSON_AddStringToObject(j, "stop_reason", t->stop_reason);
        cJSON_AddNumberToObject(j, "stop_step", t->stop_step);
    }
    const cJSON *settings = cJSON_GetObjectItemCaseSensitive(root, "settings");
    cJSON_AddItemToObject(j, "settings", settings ? dup_exact(settings) : cJSON_CreateNull());
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(root, "dataset");
    if (ds) {
        cJSON *d = cJSON_AddObjectToObject(j, "dataset");
        static const char *const keys[] = {"path", "documents", "bytes", "vocab_size", "sha256"};
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(ds, keys[k]);
            if (v) cJSON_AddItemToObject(d, keys[k], dup_exact(v));
        }
    } else {
        cJSON_AddNullToObject(j, "dataset");
    }
    cJSON *engines = cJSON_AddArrayToObject(j, "engines");
    for (int e = 0; e < t->n_engines; e++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->engine[e]);
        cJSON_AddStringToObject(o, "precision", t->precision[e]);
        cJSON_AddItemToArray(engines, o);
    }
    double np;
    if (trace_get_number(root, "num_params", &np) == 0) trace_add_number(j, "num_params", np);
    cJSON_AddNumberToObject(j, "steps", t->n_steps);
    cJSON *losses = cJSON_AddArrayToObject(j, "loss");
    cJSON *times = cJSON_AddArrayToObject(j, "time_per_step_s");
    for (int e = 0; e < t->n_engines && t->n_steps; e++) {
        LossStats s;
        loss_stats(t, e, &s);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "engine", t->engine[e]);
        cJSON_AddItemToObject(o, "first", at_step(t, s.first, e));
        cJSON_AddItemToObject(o, "last", at_step(t, s.last, e));
        cJSON_AddItemToObject(o, "min", s.min >= 0 ? at_step(t, s.min, e) : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "max", s.max >= 0 ? at_step(t, s.max, e) : cJSON_CreateNull());
        cJSON *mf = cJSON_AddObjectToObject(o, "mean_first");
        cJSON_AddNumberToObject(mf, "steps", s.k_first);
        trace_add_number(mf, "value", s.mean_first);
        cJSON *ml = cJSON_AddObjectToObject(o, "mean_last");
        cJSON_AddNumberToObject(ml, "steps", s.k_last);
        trace_add_number(ml, "value", s.mean_last);
        cJSON_AddNumberToObject(o, "non_finite", s.non_finite);
        cJSON_AddItemToArray(losses, o);

        TimeStats ts;
        time_stats(t, e, &ts);
        cJSON *to = cJSON_CreateObject();
        cJSON_AddStringToObject(to, "engine", t->engine[e]);
        trace_add_number(to, "mean", ts.mean);
        trace_add_number(to, "median", ts.median);
        trace_add_number(to, "total", ts.total);
        cJSON_AddNumberToObject(to, "steps", ts.n);
        cJSON_AddItemToArray(times, to);
    }
    double tt;
    if (trace_get_number(root, "train_time_s", &tt) == 0) trace_add_number(j, "train_time_s", tt);
    if (t->kind == TRACE_KIND_COMPARE) {
        static const char *const copy[] = {"mode", "precision", "tolerances", "verdict"};
        for (size_t k = 0; k < sizeof copy / sizeof *copy; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, copy[k]);
            cJSON_AddItemToObject(j, copy[k], v ? dup_exact(v) : cJSON_CreateNull());
        }
        cJSON_AddNumberToObject(j, "failed_steps", failed_steps(t));
        const cJSON *ff = cJSON_GetObjectItemCaseSensitive(root, "first_failure");
        if (cJSON_IsObject(ff)) {
            cJSON *o = dup_exact(ff);
            StrBuf b = {0};
            failure_words(t, ff, &b);
            cJSON_AddStringToObject(o, "text", b.s);
            sb_free(&b);
            cJSON_AddItemToObject(j, "first_failure", o);
        } else {
            cJSON_AddNullToObject(j, "first_failure");
        }
        const char *where = trace_get_string(root, "first_divergence");
        if (where) cJSON_AddStringToObject(j, "first_divergence", where);
        ErrTable tab;
        err_table(t, &tab);
        cJSON *rows = cJSON_AddArrayToObject(j, "max_errors");
        for (int i = 0; i < tab.n; i++) {
            const ErrRow *r = &tab.r[i];
            cJSON *o = cJSON_CreateObject();
            const char *q = quantity_of(r->key);
            cJSON_AddStringToObject(o, "name", r->key);
            cJSON_AddStringToObject(o, "quantity", q);
            if (r->err_i >= 0) {
                trace_add_number(o, "max_err", r->err);
                cJSON_AddNumberToObject(o, "step", t->steps[r->err_i].step);
            }
            if (r->rel_i >= 0) {
                trace_add_number(o, "max_rel", r->rel);
                cJSON_AddNumberToObject(o, "rel_step", t->steps[r->rel_i].step);
            }
            double atol, rtol;
            tolerance_of(t, q, &atol, &rtol);
            if (!isnan(atol)) trace_add_number(o, "atol", atol);
            if (!isnan(rtol)) trace_add_number(o, "rtol", rtol);
            cJSON_AddItemToArray(rows, o);
        }
        err_table_free(&tab);
        static const char *const opt[] = {"drift", "final_params", "bench"};
        for (size_t k = 0; k < sizeof opt / sizeof *opt; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, opt[k]);
            if (v) cJSON_AddItemToObject(j, opt[k], dup_exact(v));
        }
    }
    const cJSON *samples = cJSON_GetObjectItemCaseSensitive(root, "samples");
    if (samples) cJSON_AddItemToObject(j, "samples", cJSON_Duplicate(samples, 1));
    char *text = cJSON_Print(j);
    if (!text) die(EXIT_MISMATCH, "out of memory while printing JSON");
    printf("%s\n", text);
    free(text);
    cJSON_Delete(j);
}

void inspect_render(const TraceData *t, int json) {
    if (t->kind == TRACE_KIND_BENCH) bench_view_inspect(t->root, t->path, json);
    else if (json) inspect_json(t);
    else inspect_text(t);
}

int cmd_inspect(int argc, char **argv) {
    const char *file = NULL;
    int json = 0, flags_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!flags_done && is_flag(a)) {
            if (!strcmp(a, "--")) flags_done = 1;
            else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
                inspect_usage(stdout);
                return 0;
            } else if (!strcmp(a, "--json")) json = 1;
            else unknown_flag("inspect", a);
        } else if (!file) {
            file = a;
        } else {
            die(EXIT_USAGE, "inspect: one FILE at a time ('%s' is extra; see trace inspect --help)", a);
        }
    }
    if (!file) die(EXIT_USAGE, "inspect: no FILE given (see trace inspect --help)");
    TraceData t = load_or_die(file);
    inspect_render(&t, json);
    trace_data_free(&t);
    stdout_check();
    return 0;
}
