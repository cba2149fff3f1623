#include "timeline.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic_file.h"
#include "common/util.h"
#include "traces/trace.h"

static struct {
    cJSON *root, *events;
    OutFile out;
    double t0;
} g;

static void on_die(int code, const char *msg) {
    (void)code;
    (void)msg;
    timeline_commit();
}

void timeline_open(const char *path) {
    char err[512];
    if (outfile_open(&g.out, path, err, sizeof err)) die(EXIT_USAGE, "--timeline %s: %s", path_short(path), err);
    g.root = cJSON_CreateObject();
    g.events = cJSON_AddArrayToObject(g.root, "traceEvents");
    cJSON_AddStringToObject(g.root, "displayTimeUnit", "ms");
    g.t0 = now_seconds();
    add_die_hook(on_die);
}

int timeline_active(void) { return g.root != NULL; }

void timeline_track(int tid, const char *name) {
    if (!g.root) return;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", "thread_name");
    cJSON_AddStringToObject(e, "ph", "M");
    cJSON_AddNumberToObject(e, "pid", 1);
    cJSON_AddNumberToObject(e, "tid", tid);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(e, "args"), "name", name);
    cJSON_AddItemToArray(g.events, e);
}

void timeline_event(int tid, const char *name, double start, double dur, int step) {
    if (!g.root) return;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", name);
    cJSON_AddStringToObject(e, "ph", "X");
    trace_add_number(e, "ts", (start - g.t0) * 1e6);
    trace_add_number(e, "dur", dur * 1e6);
    cJSON_AddNumberToObject(e, "pid", 1);
    cJSON_AddNumberToObject(e, "tid", tid);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(e, "args"), "step", step);
    cJSON_AddItemToArray(g.events, e);
}

void timeline_commit(void) {
    if (!g.root) return;
    remove_die_hook(on_die);
    char *text = cJSON_PrintUnformatted(g.root);
    cJSON_Delete(g.root);
    g.root = NULL;
    char err[512];
    int rc = text ? outfile_write(&g.out, text, strlen(text), err, sizeof err) : -1;
    if (!text) snprintf(err, sizeof err, "out of memory while serializing");
    free(text);
    if (rc) die(EXIT_MISMATCH, "--timeline %s: could not write the timeline: %s", path_short(g.out.path), err);
}
