// Run settings shared by every tool: the original's hyper-parameters as
// defaults, and the command-line flags that change them.
#ifndef COMMON_SETTINGS_H
#define COMMON_SETTINGS_H

#include <stdio.h>

#include "cli.h"

typedef struct {
    const char *data_path;   // --data        (data/names.txt)
    const char *seed;        // --seed        integer of any size, as text (42)
    int steps;               // --steps       (1000)
    int n_embd;              // --n-embd      (16)
    int n_head;              // --n-head      (4)
    int n_kv_head;           // --n-kv-head   (0: same as n_head)
    int n_layer;             // --n-layer     (1)
    int block_size;          // --block-size  (16)
    double lr;               // --lr          (0.01)
    double beta1, beta2;     // Adam (0.85, 0.99)
    double eps;              // Adam (1e-8)
    double init_std;         // N(0, init_std) initial weights (0.08)
    double temperature;      // --temperature (0.5)
    int samples;             // --samples     (20)
    int batch;               // --batch       (1)
    int token_mean;          // --loss        0: doc-mean (the original), 1: token-mean
    const char *trace_path;  // --trace       (none)
    const char *timeline_path;  // --timeline (none)
    int pretty;              // --pretty      the trace indented for reading (compact)
    CliSeen seen;            // the flags given (a tool's own flags too: one set per command line)
} Settings;

void settings_defaults(Settings *s);

// The loss definitions (--loss): "doc-mean" (the mean of the documents'
// mean cross-entropies: the original's) and "token-mean" (the mean over every
// trained position of the batch: F.cross_entropy over the batch's tokens).
const char *loss_name(int token_mean);

// If argv[*i] is one of the shared flags (`--flag VALUE` or `--flag=VALUE`),
// consume it and its value (advancing *i) and return 1; return 0 if it is
// not a shared flag. A bad value or a repeated flag exits 2.
int settings_parse_flag(Settings *s, int argc, char **argv, int *i);

// Refuse impossible settings with a clear message, exit code 2.
void settings_validate(const Settings *s);

// n_kv_head with the default resolved.
int settings_kv_heads(const Settings *s);

// Help text for the shared flags.
// The shared flags' help; a tool that describes --samples itself (compare)
// passes own_samples = 1 so that each flag is listed once.
void settings_print_help(FILE *f, int own_samples);

#endif
