// trace plot --svg: the panels as an SVG line chart.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic_file.h"
#include "common/util.h"
#include "traces/plot.h"
#include "traces/tool.h"
#include "traces/trace.h"
#include "traces/trace_read.h"

static void xml_text(StrBuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
            case '&': sb_printf(b, "&amp;"); break;
            case '<': sb_printf(b, "&lt;"); break;
            case '>': sb_printf(b, "&gt;"); break;
            case '"': sb_printf(b, "&quot;"); break;
            case '\'': sb_printf(b, "&apos;"); break;
            default:
                if ((unsigned char)*s < 0x20) sb_printf(b, " ");
                else sb_printf(b, "%c", *s);
        }
    }
}

// The legend's width: the same for every panel, so that their x axes line up.
static double legend_width(const Panel *panels, int np, int width) {
    int longest = 14;
    for (int i = 0; i < np; i++) {
        const Panel *p = &panels[i];
        for (int si = 0; si < p->n; si++)
            if ((int)strlen(p->s[si].label) > longest) longest = (int)strlen(p->s[si].label);
        for (int h = 0; h < p->n_hlines; h++)
            if (usable(p, p->hline[h].y) && (int)strlen(p->hline[h].label) > longest)
                longest = (int)strlen(p->hline[h].label);
    }
    double w = 40 + longest * 6.2;
    return w > width * 0.4 ? width * 0.4 : w;
}

// A bound's colour: that of the series it bounds, else grey.
static const char *hline_color(const Panel *p, int h) {
    int si = p->hline[h].series;
    return si >= 0 && si < p->n && si < MAX_SERIES ? COLORS[si] : "#555";
}

static void svg_panel(StrBuf *b, const Panel *p, const Axis *ax, double top, double width,
                      double height, double lwid) {
    const double ml = 78, mr = lwid + 24, mt = 30, mb = 44;
    double left = ml, pw = width - ml - mr, ptop = top + mt, ph = height - mt - mb;
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"14\" font-weight=\"bold\">", left,
               top + 19);
    xml_text(b, p->title);
    sb_printf(b, "</text>\n");
    double x0 = 0, x1 = 0, y0 = 0, y1 = 0;
    if (!panel_range(p, &x0, &x1, &y0, &y1)) {
        sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                      "stroke=\"#999\"/>\n", left, ptop, pw, ph);
        sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#555\">",
                   left + pw / 2, ptop + ph / 2);
        xml_text(b, p->empty_note);
        sb_printf(b, "</text>\n");
        return;
    }
    for (int h = 0; h < p->n_hlines; h++)
        if (usable(p, p->hline[h].y)) {
            y0 = fmin(y0, p->hline[h].y);
            y1 = fmax(y1, p->hline[h].y);
        }
    Axis ay;
    axis_make(&ay, y0, y1, p->log, ph >= 200 ? 6 : 4, 0);
    // Grid and y ticks.
    for (int i = 0; i < ay.nt; i++) {
        double y = ptop + (1 - axis_frac(&ay, ay.tick[i])) * ph;
        if (y < ptop - 0.5 || y > ptop + ph + 0.5) continue;
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#e4e4e4\"/>\n",
                   left, y, left + pw, y);
        sb_printf(b, "<text x=\"%.1f\" y=\"%.2f\" text-anchor=\"end\">%s</text>\n", left - 6,
                   y + 4, tick_label(ay.tick[i]));
    }
    for (int i = 0; i < ax->nt; i++) {
        double f = axis_frac(ax, ax->tick[i]);
        if (f < -1e-9 || f > 1 + 1e-9) continue;
        double x = left + f * pw;
        sb_printf(b, "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n",
                   x, ptop, x, ptop + ph);
        sb_printf(b, "<text x=\"%.2f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x,
                   ptop + ph + 16, tick_label(ax->tick[i]));
    }
    sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                  "stroke=\"#333\"/>\n", left, ptop, pw, ph);
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", left + pw / 2,
               ptop + ph + 34);
    sb_printf(b, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
               16.0, ptop + ph / 2, p->ylabel);
    // Failing and excused steps: thin vertical bands behind the curves.
    for (int i = 0; i < p->n_marks; i++) {
        double f = axis_frac(ax, p->mark_x[i]);
        if (!(f >= 0 && f <= 1)) continue;
        sb_printf(b, "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"%s\" stroke-opacity=\"0.5\"/>\n",
                   left + f * pw, ptop, left + f * pw, ptop + ph, p->mark_kind[i] == 'F' ? "#d62728" : "#ff9f1c");
    }
    // The bounds: dotted, each in the colour of the series it bounds.
    for (int h = 0; h < p->n_hlines; h++) {
        if (!usable(p, p->hline[h].y)) continue;
        double y = ptop + (1 - axis_frac(&ay, p->hline[h].y)) * ph;
        sb_printf(b, "<line class=\"bound\" data-value=\"%.6g\" x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" "
                      "stroke=\"%s\" stroke-dasharray=\"2 3\"/>\n",
                   p->hline[h].y, left, y, left + pw, y, hline_color(p, h));
    }
    // The curves: one path each, broken where a point cannot be drawn.
    sb_printf(b, "<g fill=\"none\" stroke-width=\"1.5\" stroke-linejoin=\"round\">\n");
    for (int si = 0; si < p->n; si++) {
        const Series *s = &p->s[si];
        sb_printf(b, "<path stroke=\"%s\"%s d=\"", COLORS[si],
                   s->dashed ? " stroke-dasharray=\"6 3\"" : "");
        int pen = 0, pts = 0;
        for (int k = 0; k < s->n; k++) {
            if (!usable(p, s->y[k])) {
                pen = 0;
                continue;
            }
            double x = left + axis_frac(ax, s->x[k]) * pw;
            double y = ptop + (1 - axis_frac(&ay, s->y[k])) * ph;
            if (!isfinite(x) || !isfinite(y)) {  // never NaN in a path
                pen = 0;
                continue;
            }
            sb_printf(b, "%s%.2f %.2f", pen ? " L" : (pts ? " M" : "M"), x, y);
            pen = 1;
            pts++;
        }
        // A lone point would draw nothing: mark it with a dot.
        if (pts == 1) sb_printf(b, " h0.01\" stroke-linecap=\"round\" stroke-width=\"4");
        sb_printf(b, "\"/>\n");
    }
    sb_printf(b, "</g>\n");
    // Legend, right of the plot.
    int n_bounds = 0, has_mark[2] = {0, 0};
    for (int h = 0; h < p->n_hlines; h++) n_bounds += usable(p, p->hline[h].y);
    for (int i = 0; i < p->n_marks; i++) has_mark[p->mark_kind[i] == 'F' ? 0 : 1] = 1;
    int rows = p->n + n_bounds + has_mark[0] + has_mark[1];
    double lx = left + pw + 12, ly = ptop, lhei = 8 + 16 * rows;
    sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" "
                  "stroke=\"#bbb\"/>\n", lx, ly, lwid, lhei);
    int row = 0;
    for (int si = 0; si < p->n; si++, row++) {
        double y = ly + 14 + 16 * row;
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                      "stroke-width=\"2\"%s/>\n", lx + 6, y - 4, lx + 30, y - 4, COLORS[si],
                   p->s[si].dashed ? " stroke-dasharray=\"6 3\"" : "");
        sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">", lx + 36, y);
        xml_text(b, p->s[si].label);
        sb_printf(b, "</text>\n");
    }
    for (int h = 0; h < p->n_hlines; h++) {
        if (!usable(p, p->hline[h].y)) continue;
        double y = ly + 14 + 16 * row++;
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                      "stroke-dasharray=\"2 3\"/>\n<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">",
                   lx + 6, y - 4, lx + 30, y - 4, hline_color(p, h), lx + 36, y);
        xml_text(b, p->hline[h].label);
        sb_printf(b, "</text>\n");
    }
    {
        static const char *const what[2] = {"failing step", "excused step"};
        static const char *const col[2] = {"#d62728", "#ff9f1c"};
        for (int k = 0; k < 2; k++) {
            if (!has_mark[k]) continue;
            double y = ly + 14 + 16 * row++;
            sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                          "stroke-width=\"2\"/>\n<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">%s</text>\n",
                       lx + 18, y - 10, lx + 18, y + 2, col[k], lx + 36, y, what[k]);
        }
    }
}

void svg_render(StrBuf *b, const char *title, const Panel *panels, int np, const Axis *ax, int width, int height) {
    sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                  "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
               width, height, width, height);
    sb_printf(b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    sb_printf(b, "<title>");
    xml_text(b, title);
    sb_printf(b, "</title>\n<text x=\"%d\" y=\"18\" text-anchor=\"middle\" font-size=\"13\">", width / 2);
    xml_text(b, title);
    sb_printf(b, "</text>\n");
    double top = 22, lwid = legend_width(panels, np, width);
    height -= 22;
    for (int i = 0; i < np; i++) {
        double h = np == 1 ? height : (i == 0 ? 0.55 : 0.45) * height;
        svg_panel(b, &panels[i], ax, top, width, h, lwid);
        top += h;
    }
    sb_printf(b, "</svg>\n");
}
