// The trace tool's views of a bench trace (kind "bench").
#ifndef TRACES_BENCH_VIEW_H
#define TRACES_BENCH_VIEW_H

#include <cjson/cJSON.h>

// `trace inspect`: the sizes and the table (json: the sizes and rows as JSON).
void bench_view_inspect(const cJSON *root, const char *path, int json);
// `trace plot`: ms/step per size and engine, a text chart on stdout or, with
// svg, an SVG written atomically. width/height <= 0: the defaults. Returns
// the exit code.
int bench_view_plot(const cJSON *root, const char *svg, int width, int height);

// `trace diff A B` of two bench traces: each row of A against B's row of the
// same size, engine and precision. Exit code 1 if a row is missing in B, its
// verdict got worse, or its median ms/step grew by more than slower_tol
// (relative); else 0.
int bench_view_diff(const cJSON *a, const cJSON *b, double slower_tol);

#endif
