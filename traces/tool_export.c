// trace export --csv: a trace as CSV tables for pandas, R or a spreadsheet.
// Every table has one header row of unique names and one value per column in
// every row, so that pandas.read_csv(FILE) reads it in one call.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic_file.h"
#include "common/cli.h"
#include "common/util.h"
#include "traces/tool.h"

void export_usage(FILE *f) {
    fprintf(f,
            "usage: trace export --csv FILE [--errors] [--out OUT.csv]\n"
            "Write a trace as CSV (a header row, then one row per record; numbers as the\n"
            "trace has them, exact; empty for null or absent). Without --errors, one row per\n"
            "step:\n"
            "  train:   step,lr,loss,time_s\n"
            "  compare: step,lr,loss_<ref>,loss_<cand>,time_s_<ref>,time_s_<cand>,ok\n"
            "           free mode adds drift,drift_tol (the step's loss difference, or its\n"
            "           window's mean with --drift-window > 1, and the bound it must stay under)\n"
            "  bench:   one row per (size, engine, precision): every field of the row that\n"
            "           is a number, string, boolean or null, then the size's as size_<field>\n"
            "           (the arrays, ms_per_step and losses, and the settings are left out)\n"
            "With --errors (compare traces), the per-tensor errors in long format, one row\n"
            "per step, quantity and tensor, with the columns that decide pass or fail:\n"
            "  step,quantity,tensor,max_abs,max_rel,n_bad,err_rms,rms,ref_err_rms,bound\n"
            "(n_bad > 0: out of tolerance; under the ratio rule exactly when err_rms >\n"
            "bound; ref_err_rms and bound are empty under the fixed rule, and the last\n"
            "four in traces that have only the older max_err maps), and the sampled names'\n"
            "probabilities (quantity probs, tensor \"sample N\") at the last step.\n\n"
            "  --csv          the format (the only one)\n"
            "  --errors       the per-tensor error table instead of the step table\n"
            "  --out OUT.csv  write there instead of stdout (as every output file is\n"
            "                 written: atomically, never over an input)\n"
            "  --help         this text\n\n"
            "Exit codes: 0 ok, 1 OUT could not be written, 2 bad usage or an input that is\n"
            "not a readable trace (or --errors on a train or bench trace).\n");
}

static void num(StrBuf *b, double x) {
    char s[32];
    trace_format_number(x, s);
    sb_printf(b, ",%s", isfinite(x) ? s : "");
}

// A CSV field: quoted when it holds a comma, quote or newline.
static void field(StrBuf *b, const char *s) {
    s = text_safe(s);   // a name an engine chose: no escape sequences reach a terminal that shows the CSV
    if (!strpbrk(s, ",\"\n\r")) {
        sb_printf(b, "%s", s);
        return;
    }
    sb_printf(b, "\"");
    for (; *s; s++) sb_printf(b, *s == '"' ? "\"\"" : "%c", *s);
    sb_printf(b, "\"");
}

// A JSON scalar as a CSV field (after a comma): numbers exact, null and
// absent empty, strings quoted as needed.
static void scalar(StrBuf *b, const cJSON *v) {
    sb_printf(b, ",");
    if (cJSON_IsNumber(v)) {
        char s[32];
        trace_format_number(v->valuedouble, s);
        sb_printf(b, "%s", isfinite(v->valuedouble) ? s : "");
    } else if (cJSON_IsString(v)) {
        field(b, v->valuestring);
    } else if (cJSON_IsBool(v)) {
        sb_printf(b, "%s", cJSON_IsTrue(v) ? "true" : "false");
    }
}

static int is_scalar(const cJSON *v) {
    return cJSON_IsNumber(v) || cJSON_IsString(v) || cJSON_IsBool(v) || cJSON_IsNull(v);
}

static int is_free_mode(const TraceData *t) {
    const char *mode = trace_get_string(t->root, "mode");
    return t->kind == TRACE_KIND_COMPARE && mode && !strcmp(mode, "free");
}

static void step_table(const TraceData *t, StrBuf *b) {
    const int free_mode = is_free_mode(t);
    const cJSON *jsteps = cJSON_GetObjectItemCaseSensitive(t->root, "steps");
    double drift_tol = NAN;
    if (free_mode)
        trace_get_number(cJSON_GetObjectItemCaseSensitive(t->root, "drift"), "tol", &drift_tol);
    if (t->kind == TRACE_KIND_TRAIN) {
        sb_printf(b, "step,lr,loss,time_s\n");
    } else {
        sb_printf(b, "step,lr");
        static const char *const cols[2] = {"loss", "time_s"};
        for (int c = 0; c < 2; c++)
            for (int e = 0; e < 2; e++) {
                char name[200];
                snprintf(name, sizeof name, "%s_%s", cols[c], t->engine[e]);
                sb_printf(b, ",");
                field(b, name);
            }
        sb_printf(b, ",ok%s\n", free_mode ? ",drift,drift_tol" : "");
    }
    // the steps' JSON walked alongside (cJSON_GetArrayItem per step would be quadratic)
    const cJSON *js = jsteps ? jsteps->child : NULL;
    for (int i = 0; i < t->n_steps; i++, js = js ? js->next : NULL) {
        const TraceStep *s = &t->steps[i];
        sb_printf(b, "%d", s->step);
        num(b, s->lr);
        for (int e = 0; e < t->n_engines; e++) num(b, s->loss[e]);
        for (int e = 0; e < t->n_engines; e++) num(b, s->time_s[e]);
        if (t->kind == TRACE_KIND_COMPARE) sb_printf(b, ",%s", s->ok < 0 ? "" : s->ok ? "true" : "false");
        if (free_mode) {
            // the judged difference: the window's mean where there is one, else the step's own
            double d = NAN;
            if (trace_get_number(js, "window_drift", &d) != 0) trace_get_number(s->max_err, "loss", &d);
            num(b, d);
            num(b, drift_tol);
        }
        sb_printf(b, "\n");
    }
}

// The columns of a record beyond the reader's: the ones the ratio rule judges.
static const char *const JUDGED[4] = {"err_rms", "rms", "ref_err_rms", "bound"};

static void error_row(StrBuf *b, int step, const char *quantity, const char *tensor, double max_abs,
                      double max_rel, int n_bad, const cJSON *rec) {
    sb_printf(b, "%d,%s,", step, quantity);
    field(b, tensor);
    num(b, max_abs);
    num(b, max_rel);
    if (n_bad >= 0) sb_printf(b, ",%d", n_bad);
    else sb_printf(b, ",");
    for (int k = 0; k < 4; k++) scalar(b, rec ? cJSON_GetObjectItemCaseSensitive(rec, JUDGED[k]) : NULL);
    sb_printf(b, "\n");
}

static void error_table(const TraceData *t, StrBuf *b) {
    sb_printf(b, "step,quantity,tensor,max_abs,max_rel,n_bad");
    for (int k = 0; k < 4; k++) sb_printf(b, ",%s", JUDGED[k]);
    sb_printf(b, "\n");
    const cJSON *jsteps = cJSON_GetObjectItemCaseSensitive(t->root, "steps");
    const cJSON *js = jsteps ? jsteps->child : NULL;   // walked alongside: linear, not quadratic
    for (int i = 0; i < t->n_steps; i++, js = js ? js->next : NULL) {
        // the long layout's records are the reader's, in the same order
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(js, "errors");
        const int n_list = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : -1;
        const cJSON *rec = n_list == t->steps[i].n_errors ? list->child : NULL;
        for (int j = 0; j < t->steps[i].n_errors; j++, rec = rec ? rec->next : NULL) {
            const TraceError *e = &t->steps[i].errors[j];
            error_row(b, t->steps[i].step, e->quantity, e->tensor, e->max_abs, e->max_rel, e->n_bad, rec);
        }
    }
    // the sampled names' probabilities, judged after the last step
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(t->root, "sample_check");
    const cJSON *rec;
    const int last = t->n_steps ? t->steps[t->n_steps - 1].step : 0;
    cJSON_ArrayForEach(rec, cJSON_GetObjectItemCaseSensitive(sc, "errors")) {
        const char *q = trace_get_string(rec, "quantity"), *tn = trace_get_string(rec, "tensor");
        double a = NAN, r = NAN, nb = -1;
        trace_get_number(rec, "max_abs", &a);
        trace_get_number(rec, "max_rel", &r);
        trace_get_number(rec, "n_bad", &nb);
        error_row(b, last, q ? q : "probs", tn ? tn : "", a, r, nb >= 0 && nb < 2e9 ? (int)nb : -1, rec);
    }
}

// Each bench row's scalar fields, then its size's as size_<field>: the
// columns in the order first seen, so that a new statistic of a row shows up
// without a change here.
static void add_name(const char ***names, int *n, int *cap, const char *name) {
    for (int i = 0; i < *n; i++)
        if (!strcmp((*names)[i], name)) return;
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 32;
        *names = xrealloc(*names, (size_t)*cap * sizeof **names);
    }
    (*names)[(*n)++] = name;
}

static const cJSON *size_of(const cJSON *sizes, const char *name) {
    const cJSON *z;
    cJSON_ArrayForEach(z, sizes) {
        const char *zn = trace_get_string(z, "name");
        if (zn && name && !strcmp(zn, name)) return z;
    }
    return NULL;
}

static void bench_table(const TraceData *t, StrBuf *b) {
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(t->root, "bench");
    const cJSON *sizes = cJSON_GetObjectItemCaseSensitive(t->root, "sizes");
    const char **rk = NULL, **sk = NULL;
    int nr = 0, cr = 0, ns = 0, cs = 0;
    const cJSON *r, *v;
    cJSON_ArrayForEach(r, rows) cJSON_ArrayForEach(v, r) if (is_scalar(v)) add_name(&rk, &nr, &cr, v->string);
    cJSON_ArrayForEach(r, sizes) cJSON_ArrayForEach(v, r) {
        if (is_scalar(v) && strcmp(v->string, "name")) add_name(&sk, &ns, &cs, v->string);
    }
    for (int i = 0; i < nr; i++) {
        if (i) sb_printf(b, ",");
        field(b, rk[i]);
    }
    for (int i = 0; i < ns; i++) {
        char name[200];
        snprintf(name, sizeof name, "size_%s", sk[i]);
        sb_printf(b, ",");
        field(b, name);
    }
    sb_printf(b, "\n");
    cJSON_ArrayForEach(r, rows) {
        // the first field without its comma
        StrBuf row = {0};
        for (int i = 0; i < nr; i++) scalar(&row, cJSON_GetObjectItemCaseSensitive(r, rk[i]));
        const cJSON *z = size_of(sizes, trace_get_string(r, "size"));
        for (int i = 0; i < ns; i++) scalar(&row, z ? cJSON_GetObjectItemCaseSensitive(z, sk[i]) : NULL);
        sb_printf(b, "%s\n", row.s ? row.s + 1 : "");
        sb_free(&row);
    }
    free(rk);
    free(sk);
}

int cmd_export(int argc, char **argv) {
    const char *file = NULL, *out = "-";
    int csv = 0, errors = 0, flags_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!flags_done && is_flag(a)) {
            if (!strcmp(a, "--")) flags_done = 1;
            else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
                export_usage(stdout);
                return 0;
            } else if (!strcmp(a, "--csv")) csv = 1;
            else if (!strcmp(a, "--errors")) errors = 1;
            else if ((v = flag_value("export", argc, argv, &i, "--out"))) out = cli_path("export: --out", v);
            else unknown_flag("export", a);
        } else if (!file) {
            file = a;
        } else {
            die(EXIT_USAGE, "export: one file ('%s' is extra; see trace export --help)", a);
        }
    }
    if (!csv) die(EXIT_USAGE, "export: give the format, --csv (see trace export --help)");
    if (!file) die(EXIT_USAGE, "export: needs a trace file (see trace export --help)");
    TraceData t = load_or_die(file);
    if (errors && t.kind != TRACE_KIND_COMPARE)
        die(EXIT_USAGE, "export: %s is a %s trace: --errors needs a compare trace", file, trace_kind_name(t.kind));
    char err[512];
    OutFile o;
    if (outfile_open(&o, out, err, sizeof err)) die(EXIT_USAGE, "export: --out %s: %s", out, err);
    StrBuf b = {0};
    if (errors) error_table(&t, &b);
    else if (t.kind == TRACE_KIND_BENCH) bench_table(&t, &b);
    else step_table(&t, &b);
    if (outfile_write(&o, b.s ? b.s : "", b.n, err, sizeof err))
        die(EXIT_MISMATCH, "export: --out %s: could not write: %s", out, err);
    sb_free(&b);
    trace_data_free(&t);
    stdout_check();
    return 0;
}
