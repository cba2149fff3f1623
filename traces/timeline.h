// --timeline FILE: the phases of every step as Chrome trace-event JSON
// ({"traceEvents": [{"name", "ph": "X", "ts", "dur", "pid", "tid", "args"}]},
// times in microseconds), which Perfetto (ui.perfetto.dev) and
// chrome://tracing open. One track (tid) per engine. Written at the end as
// every output file is (common/atomic_file.h), also when the run fails.
// One timeline per process; every call is a no-op while none is open.
#ifndef TRACES_TIMELINE_H
#define TRACES_TIMELINE_H

// Check the path (exit 2 with a message when it cannot be written) and start
// the clock: events are timed from here.
void timeline_open(const char *path);
int timeline_active(void);
// Name a track (an engine, or the comparator itself).
void timeline_track(int tid, const char *name);
// One phase: [start, start + dur) in now_seconds() time, of step `step` (1-based).
void timeline_event(int tid, const char *name, double start, double dur, int step);
// Write the file (exit 1 with a message when it cannot be written).
void timeline_commit(void);

#endif
