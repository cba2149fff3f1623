// The chart model trace plot draws as text (tool_plot.c) and SVG (tool_svg.c).
#ifndef TRACES_PLOT_H
#define TRACES_PLOT_H

#include "traces/tool.h"

enum { MAX_SERIES = 10 };  // one glyph and one colour each
extern const char GLYPHS[MAX_SERIES + 1];
extern const char *const COLORS[MAX_SERIES];

typedef struct {
    char *label;
    int n;
    double *x, *y;
    int dashed;
} Series;

typedef struct {
    const char *title;
    const char *ylabel;  // SVG: the y axis title
    int log;        // log10 y axis
    int use_max;    // text chart: a column shows the max of its steps (else the mean)
    int n, cap;
    Series *s;
    const char *empty_note;  // said instead of a chart when nothing can be drawn
} Panel;

typedef struct {
    int log;
    double lo, hi;     // the axis range, in log10 units when log
    int nt;
    double tick[64];   // tick values (not log10)
} Axis;

int usable(const Panel *p, double y);
double axis_t(const Axis *a, double v);
double axis_frac(const Axis *a, double v);
void axis_make(Axis *a, double vmin, double vmax, int log_scale, int want, int extend);
int panel_range(const Panel *p, double *x0, double *x1, double *y0, double *y1);
const char *tick_label(double v);
int label_width(const Axis *a);
void svg_render(Buf *b, const Panel *panels, int np, const Axis *ax, int width, int height);

#endif
