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

static void xml_text(Buf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
            case '&': buf_printf(b, "&amp;"); break;
            case '<': buf_printf(b, "&lt;"); break;
            case '>': buf_printf(b, "&gt;"); break;
            case '"': buf_printf(b, "&quot;"); break;
            case '\'': buf_printf(b, "&apos;"); break;
            default:
                if ((unsigned char)*s < 0x20) buf_printf(b, " ");
                else buf_printf(b, "%c", *s);
        }
    }
}

static void svg_panel(Buf *b, const Panel *p, const Axis *ax, double top, double width,
                      double height) {
    const double ml = 78, mr = 20, mt = 30, mb = 44;
    double left = ml, pw = width - ml - mr, ptop = top + mt, ph = height - mt - mb;
    buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"14\" font-weight=\"bold\">", left,
               top + 19);
    xml_text(b, p->title);
    buf_printf(b, "</text>\n");
    double x0 = 0, x1 = 0, y0 = 0, y1 = 0;
    if (!panel_range(p, &x0, &x1, &y0, &y1)) {
        buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                      "stroke=\"#999\"/>\n", left, ptop, pw, ph);
        buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#555\">",
                   left + pw / 2, ptop + ph / 2);
        xml_text(b, p->empty_note);
        buf_printf(b, "</text>\n");
        return;
    }
    Axis ay;
    axis_make(&ay, y0, y1, p->log, ph >= 200 ? 6 : 4, 0);
    // Grid and y ticks.
    for (int i = 0; i < ay.nt; i++) {
        double y = ptop + (1 - axis_frac(&ay, ay.tick[i])) * ph;
        if (y < ptop - 0.5 || y > ptop + ph + 0.5) continue;
        buf_printf(b, "<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#e4e4e4\"/>\n",
                   left, y, left + pw, y);
        buf_printf(b, "<text x=\"%.1f\" y=\"%.2f\" text-anchor=\"end\">%s</text>\n", left - 6,
                   y + 4, tick_label(ay.tick[i]));
    }
    for (int i = 0; i < ax->nt; i++) {
        double f = axis_frac(ax, ax->tick[i]);
        if (f < -1e-9 || f > 1 + 1e-9) continue;
        double x = left + f * pw;
        buf_printf(b, "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n",
                   x, ptop, x, ptop + ph);
        buf_printf(b, "<text x=\"%.2f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x,
                   ptop + ph + 16, tick_label(ax->tick[i]));
    }
    buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                  "stroke=\"#333\"/>\n", left, ptop, pw, ph);
    buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", left + pw / 2,
               ptop + ph + 34);
    buf_printf(b, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
               16.0, ptop + ph / 2, p->ylabel);
    // The curves: one path each, broken where a point cannot be drawn.
    buf_printf(b, "<g fill=\"none\" stroke-width=\"1.5\" stroke-linejoin=\"round\">\n");
    for (int si = 0; si < p->n; si++) {
        const Series *s = &p->s[si];
        buf_printf(b, "<path stroke=\"%s\"%s d=\"", COLORS[si],
                   s->dashed ? " stroke-dasharray=\"6 3\"" : "");
        int pen = 0, pts = 0;
        for (int k = 0; k < s->n; k++) {
            if (!usable(p, s->y[k])) {
                pen = 0;
                continue;
            }
            double x = left + axis_frac(ax, s->x[k]) * pw;
            double y = ptop + (1 - axis_frac(&ay, s->y[k])) * ph;
            buf_printf(b, "%s%.2f %.2f", pen ? " L" : (pts ? " M" : "M"), x, y);
            pen = 1;
            pts++;
        }
        // A lone point would draw nothing: mark it with a dot.
        if (pts == 1) buf_printf(b, " h0.01\" stroke-linecap=\"round\" stroke-width=\"4");
        buf_printf(b, "\"/>\n");
    }
    buf_printf(b, "</g>\n");
    // Legend, in the top right corner of the plot.
    int longest = 0;
    for (int si = 0; si < p->n; si++)
        if ((int)strlen(p->s[si].label) > longest) longest = (int)strlen(p->s[si].label);
    double lwid = 40 + longest * 6.6, lhei = 8 + 16 * p->n;
    double lx = left + pw - lwid - 8, ly = ptop + 8;
    if (lx < left + 4) lx = left + 4;
    buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" "
                  "fill-opacity=\"0.85\" stroke=\"#bbb\"/>\n", lx, ly, lwid, lhei);
    for (int si = 0; si < p->n; si++) {
        double y = ly + 14 + 16 * si;
        buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                      "stroke-width=\"2\"%s/>\n", lx + 6, y - 4, lx + 30, y - 4, COLORS[si],
                   p->s[si].dashed ? " stroke-dasharray=\"6 3\"" : "");
        buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">", lx + 36, y);
        xml_text(b, p->s[si].label);
        buf_printf(b, "</text>\n");
    }
}

void svg_render(Buf *b, const Panel *panels, int np, const Axis *ax, int width, int height) {
    buf_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                  "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
               width, height, width, height);
    buf_printf(b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    double top = 0;
    for (int i = 0; i < np; i++) {
        double h = np == 1 ? height : (i == 0 ? 0.55 : 0.45) * height;
        svg_panel(b, &panels[i], ax, top, width, h);
        top += h;
    }
    buf_printf(b, "</svg>\n");
}
