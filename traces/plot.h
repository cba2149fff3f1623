// The chart model trace plot draws as text (tool_plot.c) and SVG (tool_svg.c).
#ifndef TRACES_PLOT_H
#define TRACES_PLOT_H

#include "traces/tool.h"

enum { MAX_SERIES = 10 };  // one glyph and one colour each
enum { MAX_HLINES = 4 };   // bounds drawn across a panel
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
    int n_hlines;            // horizontal lines: each plotted quantity's own bound
    struct {
        double y;            // NaN or unusable: not drawn (nor in the legend)
        int series;          // the series it bounds (its colour), -1: none (grey)
        char label[96];
    } hline[MAX_HLINES];
    int n_marks;             // steps marked across the panel: failing ('F') or excused ('E')
    double *mark_x;
    char *mark_kind;
} Panel;

typedef struct {
    int log;
    double lo, hi;     // the axis range, in log10 units when log
    int nt;
    double tick[64];   // tick values (not log10)
} Axis;

int usable(const Panel *p, double y);
// lround(f * (n - 1)) clamped to [-1, n] (-1 also for NaN): a cell index or out of range.
int cell_of(double f, int n);
double axis_t(const Axis *a, double v);
double axis_frac(const Axis *a, double v);
void axis_make(Axis *a, double vmin, double vmax, int log_scale, int want, int extend);
int panel_range(const Panel *p, double *x0, double *x1, double *y0, double *y1);
const char *tick_label(double v);
int label_width(const Axis *a);
void svg_render(StrBuf *b, const char *title, const Panel *panels, int np, const Axis *ax, int width, int height);

// What trace plot draws of loaded traces (none a bench trace): the loss
// panel, the error panel of compare traces, the steps' axis and the title.
typedef struct {
    Panel panels[2];
    int np;            // 1, or 2 with a compare trace
    Axis ax;
    char title[1024];
} PlotView;
// 0, or -1 with the reason in why (nothing to plot, too many curves); the
// view is then freed. svg: the axis's ticks are for an SVG of width sw,
// else for a text chart of width tw.
int plot_view(PlotView *v, const TraceData *t, int nfiles, int log_scale, long smooth, int svg, long tw, long sw,
              char *why, size_t n);
void plot_view_text(const PlotView *v, long tw, long th);
void plot_view_free(PlotView *v);

#endif
