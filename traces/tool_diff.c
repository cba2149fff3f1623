// trace diff: two traces compared step by step.
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
// diff

void diff_usage(FILE *f) {
    fprintf(f,
            "usage: trace diff A B [--tolerance X]\n"
            "Compare two traces of the same kind. Lists the settings and dataset fields\n"
            "that differ, then compares the losses step by step (for compare traces each\n"
            "engine's loss): bit-identical or not, the first step where they differ (both\n"
            "values with %%.17g and the distance in ulps), the largest absolute and relative\n"
            "difference and their steps. Also the learning rates, the step numbers, the\n"
            "samples (train) and the verdicts (compare). The engines, timings and the\n"
            "dataset path are shown but do not count as differences.\n\n"
            "  --tolerance X   treat relative differences |a-b|/max(|a|,|b|) <= X as equal\n"
            "                  (losses and learning rates); samples then do not count;\n"
            "                  two bench traces: a row counts as slower only when the 95%%\n"
            "                  bootstrap intervals of A's and B's median ms/step (from each\n"
            "                  row's timed runs) do not overlap and B/A > 1+X (X 0.05);\n"
            "                  faster when they do not and B/A < 1/(1+X); else no significant\n"
            "                  change; rows of fewer than 3 runs are not judged; a worse\n"
            "                  verdict or a row missing in B counts too\n"
            "  --error-tolerance R\n"
            "                  compare traces: the largest error of each tensor and quantity\n"
            "                  over the run (max_abs) counts as changed when B > A*(1+R)\n"
            "                  (worse) or B*(1+R) < A (better); default 0: any change\n"
            "  --help          this text\n\n"
            "Exit codes: 0 same (losses bit-identical, or within X, and settings equal;\n"
            "bench traces: no row significantly slower, none worse or missing), 1 the traces\n"
            "differ (bench: a significant slowdown, a worse verdict or a missing row; a row\n"
            "only faster is 0), 2 bad usage or an input that is not a readable trace.\n");
}

// The members of an object by key: one hash index, so that comparing two
// objects of n keys takes linear time, not n lookups of n steps each.
typedef struct {
    StrIndex idx;
    const cJSON **item;
} ObjIndex;

static void obj_index(ObjIndex *x, const cJSON *o) {
    memset(x, 0, sizeof *x);
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, o) n++;
    x->item = xmalloc((size_t)(n ? n : 1) * sizeof *x->item);
    n = 0;
    cJSON_ArrayForEach(c, o) {
        if (!c->string) continue;
        x->item[n] = c;
        if (strindex_put(&x->idx, c->string, n) < 0) n++;   // the first of a key counts (as cJSON reads it)
    }
}

static const cJSON *obj_get(const ObjIndex *x, const char *key) {
    int i = strindex_get(&x->idx, key);
    return i >= 0 ? x->item[i] : NULL;
}

static void obj_index_free(ObjIndex *x) {
    strindex_free(&x->idx);
    free(x->item);
}

// Compare two JSON values exactly (numbers by their bits).
static int json_equal(const cJSON *a, const cJSON *b) {
    if (!a || !b) return a == b;
    if (cJSON_IsNumber(a) && cJSON_IsNumber(b)) return same_bits(a->valuedouble, b->valuedouble);
    if (cJSON_IsArray(a) && cJSON_IsArray(b)) {
        const cJSON *x = a->child, *y = b->child;
        for (; x && y; x = x->next, y = y->next)
            if (!json_equal(x, y)) return 0;
        return !x && !y;
    }
    if (cJSON_IsObject(a) && cJSON_IsObject(b)) {
        if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) return 0;
        ObjIndex ib;
        obj_index(&ib, b);
        int same = 1;
        const cJSON *x;
        cJSON_ArrayForEach(x, a) {
            if (!(same = json_equal(x, obj_get(&ib, x->string)))) break;
        }
        obj_index_free(&ib);
        return same;
    }
    return cJSON_Compare(a, b, 1);
}

static void print_value(const cJSON *v) {
    StrBuf b = {0};
    if (cJSON_IsString(v)) sb_printf(&b, "\"%s\"", text_safe(v->valuestring));
    else item_text(v, &b);
    fputs(b.s, stdout);
    sb_free(&b);
}

// List the members of objects a and b that differ; `ignore` (may be NULL) is
// a member shown but not counted. Returns the number of counted differences.
static int diff_object(const char *what, const cJSON *a, const cJSON *b, const char *ignore) {
    if (!a && !b) {
        printf("%s: absent in both\n", what);
        return 0;
    }
    int counted = 0, shown = 0;
    StrBuf out = {0};
    const cJSON *pass[2] = {a, b};
    ObjIndex ia, ib;
    obj_index(&ia, a);
    obj_index(&ib, b);
    for (int p = 0; p < 2; p++) {
        const cJSON *x;
        cJSON_ArrayForEach(x, pass[p]) {
            const cJSON *in_a = obj_get(&ia, x->string);
            const cJSON *in_b = obj_get(&ib, x->string);
            if (p == 1 && in_a) continue;  // already seen in a's pass
            if (json_equal(in_a, in_b)) continue;
            int count = !(ignore && !strcmp(x->string, ignore));
            counted += count;
            shown++;
            sb_printf(&out, "  %s.%s: A = ", what, text_safe(x->string));
            StrBuf v = {0};
            if (cJSON_IsString(in_a)) sb_printf(&v, "\"%s\"", text_safe(in_a->valuestring));
            else item_text(in_a, &v);
            sb_printf(&out, "%s, B = ", v.s);
            v.n = 0;
            if (cJSON_IsString(in_b)) sb_printf(&v, "\"%s\"", text_safe(in_b->valuestring));
            else item_text(in_b, &v);
            sb_printf(&out, "%s%s\n", v.s, count ? "" : " (not counted)");
            sb_free(&v);
        }
    }
    obj_index_free(&ia);
    obj_index_free(&ib);
    if (!a || !b) {
        printf("%s: only in %s\n", what, a ? "A" : "B");
        sb_free(&out);
        return 1;
    }
    if (!shown) printf("%s: equal\n", what);
    else if (!counted) printf("%s: equal except:\n%s", what, out.s);
    else printf("%s: %d difference%s\n%s", what, counted, counted == 1 ? "" : "s", out.s);
    sb_free(&out);
    return counted;
}

typedef struct {
    int n;               // steps compared (the common prefix)
    int n_bits;          // steps not bit-identical
    int n_diff;          // steps beyond the tolerance (= n_bits without one)
    int first_bits;      // index of the first step not bit-identical (-1: none)
    int first_diff;      // index of the first step beyond the tolerance (-1: none)
    double max_abs, max_rel;
    int max_abs_i, max_rel_i;
} SeriesDiff;

static void diff_series(const double *a, const double *b, int n, double tol, SeriesDiff *d) {
    memset(d, 0, sizeof *d);
    d->n = n;
    d->first_bits = d->first_diff = d->max_abs_i = d->max_rel_i = -1;
    for (int i = 0; i < n; i++) {
        if (same_bits(a[i], b[i])) continue;
        d->n_bits++;
        if (d->first_bits < 0) d->first_bits = i;
        double r = rel_diff(a[i], b[i]);
        double ab = isfinite(a[i]) && isfinite(b[i]) ? fabs(a[i] - b[i]) : INFINITY;
        if (!(r <= tol)) {
            d->n_diff++;
            if (d->first_diff < 0) d->first_diff = i;
        }
        if (d->max_abs_i < 0 || ab > d->max_abs) {
            d->max_abs = ab;
            d->max_abs_i = i;
        }
        if (d->max_rel_i < 0 || r > d->max_rel) {
            d->max_rel = r;
            d->max_rel_i = i;
        }
    }
}

static void print_pair_diff(const char *what, const double *a, const double *b, int i, int step) {
    printf("  first %s at step %d: A = %s, B = %s", what, step, fmtn("%.17g", a[i]),
           fmtn("%.17g", b[i]));
    if (isfinite(a[i]) && isfinite(b[i])) {
        uint64_t u = ulp_distance(a[i], b[i]);
        printf(" (B - A = %s, %llu ulp%s)\n", fmtn("%.3g", b[i] - a[i]), (unsigned long long)u,
               u == 1 ? "" : "s");
    } else {
        printf(" (not finite)\n");
    }
}

// Report one per-step series; returns 1 if it counts as a difference.
static int report_series(const char *name, const double *a, const double *b, const int *steps,
                         int n, double tol, int detail) {
    SeriesDiff d;
    diff_series(a, b, n, tol, &d);
    if (!d.n_bits) {
        printf("%s: bit-identical over %d step%s\n", name, n, n == 1 ? "" : "s");
        return 0;
    }
    if (!d.n_diff)
        printf("%s: not bit-identical at %d of %d steps, all within the relative tolerance %s\n",
               name, d.n_bits, n, fmtn("%.3g", tol));
    else if (tol > 0)
        printf("%s: %d of %d steps differ beyond the relative tolerance %s (%d not bit-identical)\n",
               name, d.n_diff, n, fmtn("%.3g", tol), d.n_bits);
    else
        printf("%s: %d of %d steps differ\n", name, d.n_diff, n);
    if (d.first_diff >= 0 && d.first_diff != d.first_bits)
        print_pair_diff("difference beyond the tolerance", a, b, d.first_diff, steps[d.first_diff]);
    print_pair_diff("difference", a, b, d.first_bits, steps[d.first_bits]);
    if (detail) {
        printf("  largest absolute difference %s at step %d\n", fmtn("%.3g", d.max_abs),
               steps[d.max_abs_i]);
        printf("  largest relative difference %s at step %d\n", fmtn("%.3g", d.max_rel),
               steps[d.max_rel_i]);
    }
    return d.n_diff > 0;
}

static int diff_samples(const TraceData *A, const TraceData *B, int counts) {
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(A->root, "samples");
    const cJSON *sb = cJSON_GetObjectItemCaseSensitive(B->root, "samples");
    if (!sa && !sb) return 0;
    if (!sa || !sb) {
        printf("samples: only in %s%s\n", sa ? "A" : "B", counts ? "" : " (not counted)");
        return counts;
    }
    int na = cJSON_GetArraySize(sa), nb = cJSON_GetArraySize(sb), n = na < nb ? na : nb;
    int ndiff = 0, first = -1;
    const cJSON *x = sa->child, *y = sb->child, *fx = NULL, *fy = NULL;   // walked once, not indexed
    for (int i = 0; i < n; i++, x = x->next, y = y->next) {
        if (strcmp(x->valuestring, y->valuestring)) {
            ndiff++;
            if (first < 0) first = i, fx = x, fy = y;
        }
    }
    if (!ndiff && na == nb) {
        printf("samples: identical (%d)\n", na);
        return 0;
    }
    printf("samples: ");
    if (na != nb) printf("A has %d, B has %d; ", na, nb);
    printf("%d of %d differ%s\n", ndiff, n, counts ? "" : " (not counted with --tolerance)");
    int shown = 0;
    x = fx, y = fy;
    for (int i = first; i >= 0 && i < n && shown < 5; i++, x = x->next, y = y->next) {
        if (!strcmp(x->valuestring, y->valuestring)) continue;
        printf("  sample %d: A \"%s\", B \"%s\"\n", i + 1, text_safe(x->valuestring), text_safe(y->valuestring));
        shown++;
    }
    return counts;
}

// The largest max_abs of each (quantity, tensor) over the run.
typedef struct {
    const char *q;
    const char *tensor;
    double worst[2];
    int step[2];
} TensorErr;

// Rows are found by name through one index per quantity (seen[q]): linear
// in the records, however many tensors there are.
static void worst_errors(const TraceData *t, int k, TensorErr **rows, int *n, int *cap, StrIndex *seen) {
    for (int i = 0; i < t->n_steps; i++)
        for (int j = 0; j < t->steps[i].n_errors; j++) {
            const TraceError *e = &t->steps[i].errors[j];
            int m = strindex_put(&seen[trace_quantity_index(e->quantity)], e->tensor, *n);
            TensorErr *r;
            if (m >= 0) {
                r = &(*rows)[m];
            } else {
                if (*n == *cap) *rows = xrealloc(*rows, (size_t)(*cap = *cap ? 2 * *cap : 16) * sizeof **rows);
                r = &(*rows)[(*n)++];
                *r = (TensorErr){e->quantity, e->tensor, {-1, -1}, {0, 0}};
            }
            double x = isnan(e->max_abs) ? INFINITY : e->max_abs;  // a non-finite error is the worst
            if (x > r->worst[k]) {
                r->worst[k] = x;
                r->step[k] = t->steps[i].step;
            }
        }
}

// Per-tensor errors of two compare traces; returns how many changed beyond R.
static int diff_errors(const TraceData *A, const TraceData *B, double R) {
    TensorErr *rows = NULL;
    int n = 0, cap = 0;
    StrIndex seen[N_TRACE_QUANTITIES] = {{0}};
    worst_errors(A, 0, &rows, &n, &cap, seen);
    worst_errors(B, 1, &rows, &n, &cap, seen);
    for (int q = 0; q < N_TRACE_QUANTITIES; q++) strindex_free(&seen[q]);
    if (!n) {
        free(rows);
        return 0;
    }
    int worse = 0, better = 0, shown = 0;
    for (int m = 0; m < n; m++) {
        const TensorErr *r = &rows[m];
        double a = r->worst[0], b = r->worst[1];
        const char *what = NULL;
        if (a < 0 || b < 0) what = a < 0 ? "only in B" : "only in A";
        else if (b > a * (1 + R)) what = "worse", worse++;
        else if (b * (1 + R) < a) what = "better", better++;
        if (!what) continue;
        if (a < 0 || b < 0) worse++;
        if (shown++ < 20)
            printf("  %-7s %-24s A %-10s (step %d)  B %-10s (step %d)  %s\n", r->q, text_safe(r->tensor),
                   a < 0 ? "-" : fmtn("%.3e", a), r->step[0], b < 0 ? "-" : fmtn("%.3e", b), r->step[1], what);
    }
    if (shown > 20) printf("  ... and %d more\n", shown - 20);
    printf("errors per tensor: %d of %d changed beyond %s (%d worse, %d better)\n", worse + better, n,
           R > 0 ? fmtn("a factor 1+%.3g", R) : "0 (any change)", worse, better);
    free(rows);
    return worse + better;
}

int cmd_diff(int argc, char **argv) {
    const char *files[2] = {NULL, NULL};
    int nfiles = 0, flags_done = 0;
    double tol = 0, err_tol = 0;
    int tol_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!flags_done && is_flag(a)) {
            const char *v;
            if (!strcmp(a, "--")) flags_done = 1;
            else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
                diff_usage(stdout);
                return 0;
            } else if ((v = flag_value("diff", argc, argv, &i, "--tolerance"))) {
                if (parse_double(v, &tol) || tol < 0)
                    die(EXIT_USAGE, "diff: --tolerance '%s' is not a number >= 0", v);
                tol_given = 1;
            } else if ((v = flag_value("diff", argc, argv, &i, "--error-tolerance"))) {
                if (parse_double(v, &err_tol) || err_tol < 0)
                    die(EXIT_USAGE, "diff: --error-tolerance '%s' is not a number >= 0", v);
            } else {
                unknown_flag("diff", a);
            }
        } else if (nfiles < 2) {
            files[nfiles++] = a;
        } else {
            die(EXIT_USAGE, "diff: two files A and B ('%s' is extra; see trace diff --help)", a);
        }
    }
    if (nfiles < 2) die(EXIT_USAGE, "diff: needs two files A and B (see trace diff --help)");
    TraceData A = load_or_die(files[0]), B = load_or_die(files[1]);
    if (A.kind != B.kind)
        die(EXIT_USAGE, "diff: %s is a %s trace but %s is a %s trace; diff compares traces of the "
            "same kind", B.path, trace_kind_name(B.kind), A.path, trace_kind_name(A.kind));
    int rc = diff_render(&A, &B, tol, tol_given, err_tol);
    trace_data_free(&A);
    trace_data_free(&B);
    stdout_check();
    return rc;
}

int diff_render(const TraceData *pa, const TraceData *pb, double tol, int tol_given, double err_tol) {
    const TraceData A = *pa, B = *pb;   // (copies of the handles: the data is shared)
    if (A.kind == TRACE_KIND_BENCH) {   // timings: slower by more than --tolerance (5%) counts
        printf("A: %s (bench trace)\nB: %s (bench trace)\n", A.path, B.path);
        return bench_view_diff(A.root, B.root, tol_given ? tol : 0.05);
    }

    printf("A: %s (%s trace, %d steps)\n", A.path, trace_kind_name(A.kind), A.n_steps);
    printf("B: %s (%s trace, %d steps)\n", B.path, trace_kind_name(B.kind), B.n_steps);
    StrBuf why = {0};
#define DIFFERS(what) sb_printf(&why, "%s%s", why.n ? ", " : "", what)
    if (diff_object("settings", cJSON_GetObjectItemCaseSensitive(A.root, "settings"),
                    cJSON_GetObjectItemCaseSensitive(B.root, "settings"), NULL))
        DIFFERS("settings");
    if (diff_object("dataset", cJSON_GetObjectItemCaseSensitive(A.root, "dataset"),
                    cJSON_GetObjectItemCaseSensitive(B.root, "dataset"), "path"))
        DIFFERS("dataset");
    if (A.kind == TRACE_KIND_COMPARE) {
        static const char *const setup[] = {"mode", "precision", "tolerances", "injected_fault"};
        for (size_t k = 0; k < sizeof setup / sizeof *setup; k++) {
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(A.root, setup[k]);
            const cJSON *y = cJSON_GetObjectItemCaseSensitive(B.root, setup[k]);
            if (json_equal(x, y)) continue;
            printf("%s: A = ", setup[k]);
            print_value(x);
            printf(", B = ");
            print_value(y);
            printf("\n");
            DIFFERS(setup[k]);
        }
    }
    for (int e = 0; e < A.n_engines; e++) {
        if (!strcmp(A.engine[e], B.engine[e]) && !strcmp(A.precision[e], B.precision[e])) continue;
        printf("%s: A = %s (%s), B = %s (%s) (not counted)\n",
               A.n_engines == 1 ? "engine" : e ? "candidate engine" : "reference engine", text_safe(A.engine[e]),
               text_safe(A.precision[e]), text_safe(B.engine[e]), text_safe(B.precision[e]));
    }

    int n = A.n_steps < B.n_steps ? A.n_steps : B.n_steps;
    if (A.n_steps != B.n_steps) {
        printf("steps: A has %d, B has %d (comparing the first %d)\n", A.n_steps, B.n_steps, n);
        DIFFERS("number of steps");
    }
    int *steps = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *steps);
    double *va = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *va);
    double *vb = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *vb);
    int bad_step = -1;
    for (int i = 0; i < n; i++) {
        steps[i] = A.steps[i].step;
        if (A.steps[i].step != B.steps[i].step && bad_step < 0) bad_step = i;
    }
    if (bad_step >= 0) {
        printf("step numbers: differ from index %d on (A step %d, B step %d)\n", bad_step,
               A.steps[bad_step].step, B.steps[bad_step].step);
        DIFFERS("step numbers");
    }
    for (int e = 0; e < A.n_engines; e++) {
        char name[160];
        if (A.n_engines > 1)
            snprintf(name, sizeof name, "loss of %s (%s)", text_safe(A.engine[e]), e ? "candidate" : "reference");
        else snprintf(name, sizeof name, "loss");
        for (int i = 0; i < n; i++) {
            va[i] = A.steps[i].loss[e];
            vb[i] = B.steps[i].loss[e];
        }
        if (report_series(name, va, vb, steps, n, tol, 1)) DIFFERS(A.n_engines > 1 ? name : "loss");
    }
    for (int i = 0; i < n; i++) {
        va[i] = A.steps[i].lr;
        vb[i] = B.steps[i].lr;
    }
    if (report_series("lr", va, vb, steps, n, tol, 0)) DIFFERS("lr");

    if (A.kind == TRACE_KIND_TRAIN) {
        if (diff_samples(&A, &B, tol == 0)) DIFFERS("samples");
    } else {
        const char *x = trace_get_string(A.root, "verdict"), *y = trace_get_string(B.root, "verdict");
        if ((x || y) && (!x || !y || strcmp(x, y))) {
            printf("verdict: A = %s, B = %s\n", x ? text_safe(x) : "(absent)", y ? text_safe(y) : "(absent)");
            DIFFERS("verdict");
        } else if (x) {
            printf("verdict: both %s\n", text_safe(x));
        }
        if (diff_errors(&A, &B, err_tol)) DIFFERS("errors");
        const cJSON *fa = cJSON_GetObjectItemCaseSensitive(A.root, "first_failure");
        const cJSON *fb = cJSON_GetObjectItemCaseSensitive(B.root, "first_failure");
        if (!json_equal(fa, fb)) {
            for (int k = 0; k < 2; k++) {
                const cJSON *f = k ? fb : fa;
                printf("first failure %c: ", 'A' + k);
                if (cJSON_IsObject(f)) {
                    StrBuf b = {0};
                    failure_words(k ? &B : &A, f, &b);
                    printf("%s\n", b.s);
                    sb_free(&b);
                } else {
                    printf("none\n");
                }
            }
        }
    }
    for (int e = 0; e < A.n_engines; e++) {
        TimeStats ta, tb;
        time_stats(&A, e, &ta);
        time_stats(&B, e, &tb);
        if (!ta.n && !tb.n) continue;
        printf("time per step%s%s: A mean %s ms, B mean %s ms (not counted)\n",
               A.n_engines > 1 ? " of " : "", A.n_engines > 1 ? text_safe(A.engine[e]) : "",
               fmtn("%.4g", ta.mean * 1e3), fmtn("%.4g", tb.mean * 1e3));
    }
#undef DIFFERS
    int differ = why.n > 0;
    if (differ) printf("result: the traces differ (%s)\n", why.s);
    else if (tol > 0) printf("result: the same within the relative tolerance %s\n", fmtn("%.3g", tol));
    else printf("result: the same (losses bit-identical, settings equal)\n");
    sb_free(&why);
    free(steps);
    free(va);
    free(vb);
    return differ ? EXIT_MISMATCH : 0;
}
