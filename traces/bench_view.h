// The trace tool's views of a bench trace (kind "bench").
#ifndef TRACES_BENCH_VIEW_H
#define TRACES_BENCH_VIEW_H

#include <cjson/cJSON.h>

// `trace inspect`: the sizes and the table, with each median's 95% interval
// (json: the sizes and rows as JSON).
void bench_view_inspect(const cJSON *root, const char *path, int json);
// `trace plot`: ms/step per size and engine, a text chart on stdout or, with
// svg, an SVG written atomically (sizes as categories; per row the median,
// its interval and min-max whiskers). width/height <= 0: the defaults.
// Returns the exit code.
int bench_view_plot(const cJSON *root, const char *svg, int width, int height);

// `trace diff A B` of two bench traces: each row of A against B's row of the
// same size, engine and precision, judged by the 95% bootstrap intervals
// of their medians (compare/bench_stats.h; recomputed from the rows'
// ms_per_step where not recorded): slower when the intervals do not overlap
// and B/A > 1 + slower_tol, faster when they do not and B/A < 1 / (1 +
// slower_tol); rows of fewer than 3 runs are not judged. Exit code 1 if a
// row is slower, missing in B or its verdict got worse; else 0.
int bench_view_diff(const cJSON *a, const cJSON *b, double slower_tol);

#endif
