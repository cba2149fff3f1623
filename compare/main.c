// compare: run two engines on the same data from the same initial weights and
// check them against each other step by step (lockstep.c), or let both train
// and compare the loss curves (free.c), or time any number of engines on the
// same work and check their losses (--bench, bench.c). The command line is
// cli.c, the check of what a run reads and writes outputs.c; the set-up
// both comparing modes share is run.c.
#include <stdio.h>

#include "compare.h"
#include "traces/timeline.h"
#include "common/interrupt.h"
#include "common/util.h"

// A signal noted after the last step (common/interrupt.h): the trace and the
// timeline written marked interrupted, then the end by the signal.
static void stop_if_interrupted(Trace *t) {
    const int sig = interrupt_pending();
    if (!sig) return;
    timeline_commit();
    if (t->path) trace_exit_on_signal(t, sig);
    fflush(stdout);
    fprintf(stderr, "%s: interrupted by %s after the last step\n", prog_name(), interrupt_signal_name(sig));
    interrupt_exit(sig);
}

int main(int argc, char **argv) {
    set_prog_name(argv[0]);
    // SIGINT, SIGTERM, SIGHUP end compare and the engines' process groups;
    // with a trace or a timeline they are noted and the run stops between
    // steps (or while it waits for an engine) and writes them marked
    // interrupted; a second signal ends it at once (common/interrupt.h)
    interrupt_install();
    Options o;
    cli_parse(&o, argc, argv);
    outputs_check(&o);
    if (o.bench) return bench_main(&o) ? EXIT_MISMATCH : 0;
    if (o.export_dir) {
        const int rc = export_main(&o);
        stdout_check();   // its report lost is not a success
        return rc;
    }
    if (o.against) {
        const int failed = against_main(&o);
        stdout_check();   // the verdict's text lost is not a success (exit 1)
        return failed ? EXIT_MISMATCH : 0;
    }
    Run r;
    run_setup(&r, &o);
    for (int k = 0; k < 2; k++) r.e[k] = run_make_engine(&r, k);
    Trace t = {0};
    if (o.s.trace_path) trace_open(&t, o.s.trace_path, "compare");
    if (o.s.timeline_path) {
        timeline_open(o.s.timeline_path);
        for (int k = 0; k < 2; k++) timeline_track(k, o.names[k]);
        if (o.mode == MODE_LOCKSTEP && o.tol_ratio) timeline_track(2, "cpu fp32 (the ratio rule's reference)");
    }
    if (o.s.trace_path || o.s.timeline_path) interrupt_defer();
    cJSON *steps = t.root ? run_trace_header(&t, &r) : NULL;
    int failed = o.mode == MODE_LOCKSTEP ? lockstep_run(&r, &t, steps) : free_run(&r, &t, steps);
    stop_if_interrupted(&t);
    stdout_check();
    if (t.root) trace_commit(&t);
    timeline_commit();
    run_teardown(&r);
    // a signal noted while they were written: they are complete, the run still ends by it
    if (interrupt_pending()) interrupt_exit(interrupt_pending());
    return failed ? EXIT_MISMATCH : 0;
}
