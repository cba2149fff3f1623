// libFuzzer target: what the trace subcommands print (inspect as text and
// JSON, diff, plot as text and SVG, export as CSV) for any trace the reader
// accepts. The input is one trace, or two separated by a form feed (\f):
// A and B of diff and plot. Their output goes to /dev/null; a die() on an
// accepted trace is a finding (the hook aborts).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "traces/bench_view.h"
#include "traces/plot.h"
#include "traces/tool.h"

static char g_file[64];   // export reads a file: A's text goes here

static void on_die(int code, const char *msg) {
    (void)code;
    (void)msg;
    abort();
}

static void remove_file(void) { unlink(g_file); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (!freopen("/dev/null", "w", stdout)) abort();
    snprintf(g_file, sizeof g_file, "/tmp/fuzz_trace_tools-XXXXXX");
    int fd = mkstemp(g_file);
    if (fd < 0) abort();
    close(fd);
    atexit(remove_file);
    return 0;
}

static int load(TraceData *t, const uint8_t *data, size_t size, const char *name) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    char err[512];
    int rc = trace_load_text(t, name, text, size, err, sizeof err);
    free(text);
    return rc;
}

static void plot(const TraceData *t, int n) {
    for (int i = 0; i < n; i++)
        if (t[i].kind == TRACE_KIND_BENCH) return;
    PlotView v;
    char why[1024];
    for (int svg = 0; svg < 2; svg++) {
        if (plot_view(&v, t, n, svg, 1 + 3 * svg, svg, 80, 900, why, sizeof why)) continue;
        if (svg) {
            StrBuf b = {0};
            svg_render(&b, v.title, v.panels, v.np, &v.ax, 900, v.np == 2 ? 760 : 520);
            sb_free(&b);
        } else {
            plot_view_text(&v, 80, 20);
        }
        plot_view_free(&v);
    }
}

static void export_csv(const TraceData *t, const uint8_t *data, size_t size) {
    if (t->kind == TRACE_KIND_BENCH) return;
    FILE *f = fopen(g_file, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    char *argv[] = {"export", "--csv", g_file, "--out", "/dev/zero", "--errors", NULL};
    cmd_export(5, argv);
    if (t->kind == TRACE_KIND_COMPARE) cmd_export(6, argv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *ff = memchr(data, '\f', size);
    const size_t na = ff ? (size_t)(ff - data) : size;
    TraceData t[2];
    if (load(&t[0], data, na, "a.json")) return 0;
    int two = ff && !load(&t[1], ff + 1, size - na - 1, "b.json");
    add_die_hook(on_die);
    inspect_render(&t[0], 0);
    inspect_render(&t[0], 1);
    diff_render(&t[0], &t[0], 0, 0, 0);
    if (two && t[1].kind == t[0].kind) {
        diff_render(&t[0], &t[1], 0, 0, 0);
        diff_render(&t[0], &t[1], 1e-3, 1, 0.5);
    }
    if (t[0].kind == TRACE_KIND_BENCH) bench_view_plot(t[0].root, NULL, 80, -1);
    plot(t, 1);
    if (two) plot(t, 2);
    export_csv(&t[0], data, na);
    fflush(stdout);
    remove_die_hook(on_die);
    trace_data_free(&t[0]);
    if (two) trace_data_free(&t[1]);
    return 0;
}
