// trace export --csv: a trace as CSV tables for pandas, R or a spreadsheet.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/atomic_file.h"
#include "common/cli.h"
#include "common/util.h"
#include "traces/tool.h"

void export_usage(FILE *f) {
    fprintf(f,
            "usage: trace export --csv FILE [--errors] [--out OUT.csv]\n"
            "Write a trace as CSV (a header row, then one row per record; numbers as the\n"
            "trace has them, exact; empty for null). Without --errors, one row per step:\n"
            "  train:   step,lr,loss,time_s\n"
            "  compare: step,lr,loss_<ref>,loss_<cand>,time_s_<ref>,time_s_<cand>,ok\n"
            "With --errors (compare traces), the per-tensor errors in long format, one row\n"
            "per step, quantity and tensor:\n"
            "  step,quantity,tensor,max_abs,max_rel,n_bad\n\n"
            "  --csv          the format (the only one)\n"
            "  --errors       the per-tensor error table instead of the step table\n"
            "  --out OUT.csv  write there instead of stdout (as every output file is\n"
            "                 written: atomically, never over an input)\n"
            "  --help         this text\n\n"
            "Exit codes: 0 ok, 1 OUT could not be written, 2 bad usage or an input that is\n"
            "not a readable trace (or --errors on a train trace).\n");
}

static void num(StrBuf *b, double x) {
    char s[32];
    trace_format_number(x, s);
    sb_printf(b, ",%s", isfinite(x) ? s : "");
}

// A CSV field: quoted when it holds a comma, quote or newline.
static void field(StrBuf *b, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) {
        sb_printf(b, "%s", s);
        return;
    }
    sb_printf(b, "\"");
    for (; *s; s++) sb_printf(b, *s == '"' ? "\"\"" : "%c", *s);
    sb_printf(b, "\"");
}

static void step_table(const TraceData *t, StrBuf *b) {
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
        sb_printf(b, ",ok\n");
    }
    for (int i = 0; i < t->n_steps; i++) {
        const TraceStep *s = &t->steps[i];
        sb_printf(b, "%d", s->step);
        num(b, s->lr);
        for (int e = 0; e < t->n_engines; e++) num(b, s->loss[e]);
        for (int e = 0; e < t->n_engines; e++) num(b, s->time_s[e]);
        if (t->kind == TRACE_KIND_COMPARE) sb_printf(b, ",%s", s->ok < 0 ? "" : s->ok ? "true" : "false");
        sb_printf(b, "\n");
    }
}

static void error_table(const TraceData *t, StrBuf *b) {
    sb_printf(b, "step,quantity,tensor,max_abs,max_rel,n_bad\n");
    for (int i = 0; i < t->n_steps; i++)
        for (int j = 0; j < t->steps[i].n_errors; j++) {
            const TraceError *e = &t->steps[i].errors[j];
            sb_printf(b, "%d,%s,", t->steps[i].step, e->quantity);
            field(b, e->tensor);
            num(b, e->max_abs);
            num(b, e->max_rel);
            if (e->n_bad >= 0) sb_printf(b, ",%d\n", e->n_bad);
            else sb_printf(b, ",\n");
        }
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
    if (t.kind == TRACE_KIND_BENCH)
        die(EXIT_USAGE, "export: %s is a bench trace: its \"bench\" array is the table (jq or pandas read it)", file);
    if (errors && t.kind != TRACE_KIND_COMPARE)
        die(EXIT_USAGE, "export: %s is a train trace: --errors needs a compare trace", file);
    char err[512];
    OutFile o;
    if (outfile_open(&o, out, err, sizeof err)) die(EXIT_USAGE, "export: --out %s: %s", out, err);
    StrBuf b = {0};
    if (errors) error_table(&t, &b);
    else step_table(&t, &b);
    if (outfile_write(&o, b.s ? b.s : "", b.n, err, sizeof err))
        die(EXIT_MISMATCH, "export: --out %s: could not write: %s", out, err);
    sb_free(&b);
    trace_data_free(&t);
    stdout_check();
    return 0;
}
