// --bench (being rewritten): time the engines.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare.h"
#include "common/util.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void cpu_model(char *out, size_t n) {
    snprintf(out, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c += 2;
                c[strcspn(c, "\n")] = '\0';
                snprintf(out, n, "%s", c);
            }
            break;
        }
    fclose(f);
}

static int run_bench(Run *r, Trace *t) {
    Options *o = r->o;
    const int warmup = o->s.steps >= 20 ? 5 : 0;
    double ms[2], med[2], last_loss[2];
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    double *times = xmalloc((size_t)o->s.steps * sizeof *times);
    Batch b = {0};
    for (int k = 0; k < 2; k++) {
        Engine *e = r->e[k];
        double total = 0;
        for (int step = 0; step < o->s.steps; step++) {
            batch_make(&b, &r->d, step, o->s.batch, o->s.block_size);
            double t0 = now_seconds();
            last_loss[k] = e->ops->step(e, &b, step);  // returns the loss: the step is complete
            times[step] = now_seconds() - t0;
            if (step >= warmup) total += times[step];
            if (!isfinite(last_loss[k])) die(EXIT_MISMATCH, "engine %s: the loss is not finite at step %d", o->names[k], step + 1);
        }
        ms[k] = 1e3 * total / (o->s.steps - warmup);
        qsort(times + warmup, (size_t)(o->s.steps - warmup), sizeof *times, cmp_double);
        med[k] = 1e3 * times[warmup + (o->s.steps - warmup) / 2];
    }
    free(times);
    batch_free(&b);
    printf("bench: %d steps (first %d not timed), batch %d, n_embd %d, n_layer %d, block_size %d\n", o->s.steps, warmup,
           o->s.batch, o->s.n_embd, o->s.n_layer, o->s.block_size);
    printf("  host CPU: %s\n", cpu);
    for (int k = 0; k < 2; k++) {
        const char *dev = r->e[k]->ops->device ? r->e[k]->ops->device(r->e[k]) : cpu;
        printf("  %-7s %s  %9.4f ms/step (median %.4f)  %8.1f steps/s  final loss %.6f  [%s]\n", o->names[k],
               prec_name(engine_prec(o, k)), ms[k], med[k], 1e3 / ms[k], last_loss[k], dev);
    }
    printf("  speedup of %s over %s: %.2fx (mean ms/step)\n", o->names[1], o->names[0], ms[0] / ms[1]);
    if (t->root) {
        cJSON *bo = cJSON_AddObjectToObject(t->root, "bench");
        cJSON_AddStringToObject(bo, "host_cpu", cpu);
        cJSON_AddNumberToObject(bo, "untimed_warmup_steps", warmup);
        for (int k = 0; k < 2; k++) {
            cJSON *x = cJSON_AddObjectToObject(bo, k == 0 ? "reference" : "candidate");
            cJSON_AddStringToObject(x, "engine", o->names[k]);
            trace_add_number(x, "ms_per_step", ms[k]);
            trace_add_number(x, "median_ms_per_step", med[k]);
            trace_add_number(x, "final_loss", last_loss[k]);
        }
        trace_add_number(bo, "speedup", ms[0] / ms[1]);
        cJSON_AddStringToObject(t->root, "verdict", "pass");
        cJSON_AddNullToObject(t->root, "first_failure");
    }
    return 0;
}

int bench_main(Options *o) {
    if (o->n_engines != 2) die(EXIT_USAGE, "--bench: name two engines");
    Run r;
    run_setup(&r, o);
    for (int k = 0; k < 2; k++) r.e[k] = run_make_engine(&r, k);
    Trace t = {0};
    if (o->s.trace_path) trace_open(&t, o->s.trace_path, "compare");
    if (t.root) run_trace_header(&t, &r);
    int failed = run_bench(&r, &t);
    fflush(stdout);
    if (t.root) trace_commit(&t);
    run_teardown(&r);
    return failed;
}
