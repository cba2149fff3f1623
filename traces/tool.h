// The pieces the trace subcommands share (tool_common.c) and the
// subcommands themselves: inspect (tool_inspect.c), diff (tool_diff.c),
// plot (tool_plot.c, tool_svg.c), validate (tool_validate.c), export
// (tool_export.c). trace_tool.c dispatches.
#ifndef TRACES_TOOL_H
#define TRACES_TOOL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/strbuf.h"
#include "common/util.h"
#include "traces/trace_read.h"


typedef struct {
    int first, last;       // step indices (-1 when there are no steps)
    int min, max;          // indices of the smallest/largest finite loss (-1: none)
    int non_finite;        // steps whose loss is null
    int k_first, k_last;   // steps in the first/last window (min(100, n))
    double mean_first, mean_last;  // over the finite losses in those windows (NaN: none)
} LossStats;

typedef struct {
    int n;              // steps with a finite time
    double mean, median, total;
} TimeStats;

// The largest error of one max_err key over all steps.
typedef struct {
    const char *key;
    double err, rel;       // NaN-dominant maxima (a null error is worse than any number)
    int err_i, rel_i;      // step indices (-1: never present)
} ErrRow;

typedef struct {
    int n, cap;
    ErrRow *r;
    StrIndex index;        // key -> row
} ErrTable;

const char *fmtn(const char *fmt, double x);
const char *exact(double x);
int same_bits(double a, double b);
uint64_t ulp_distance(double a, double b);
double rel_diff(double a, double b);
TraceData load_or_die(const char *path);
int is_flag(const char *a);
const char *flag_value(const char *cmd, int argc, char **argv, int *i, const char *name);
void unknown_flag(const char *cmd, const char *flag);
double window_mean(const TraceData *t, int e, int from, int to);
void loss_stats(const TraceData *t, int e, LossStats *s);
int cmp_double(const void *a, const void *b);
void time_stats(const TraceData *t, int e, TimeStats *s);
const char *quantity_of(const char *key);
ErrRow *err_row(ErrTable *t, const char *key);
void take_max(double v, int i, double *best, int *best_i);
void err_table(const TraceData *t, ErrTable *tab);
void err_table_free(ErrTable *tab);
void tolerance_of(const TraceData *t, const char *quantity, double *atol, double *rtol);
void item_text(const cJSON *v, StrBuf *b);
void failure_words(const TraceData *t, const cJSON *ff, StrBuf *b);
int failed_steps(const TraceData *t);

// The subcommands' output for traces already loaded (what cmd_* print after
// loading; fuzz/fuzz_trace_tools.c calls them). diff_render: A and B of one
// kind; returns the exit code (0 the same, 1 they differ).
void inspect_render(const TraceData *t, int json);
int diff_render(const TraceData *A, const TraceData *B, double tol, int tol_given, double err_tol);

void inspect_usage(FILE *f);
int cmd_inspect(int argc, char **argv);
void diff_usage(FILE *f);
int cmd_diff(int argc, char **argv);
int cmd_plot(int argc, char **argv);
void plot_usage(FILE *f);
int cmd_validate(int argc, char **argv);
void validate_usage(FILE *f);
int cmd_export(int argc, char **argv);
void export_usage(FILE *f);

#endif
