// trace: inspect, diff and plot the JSON traces written by microgpt (kind
// "train") and compare (kind "compare"). docs/traces.md describes the format
// and this tool.
//
//   trace inspect FILE [--json]
//   trace diff A B [--tolerance X]
//   trace plot FILE... [--svg OUT.svg] [--width N] [--height N] [--log]
//   trace validate FILE...
//   trace export --csv FILE [--errors] [--out OUT.csv]
//
// Exit codes: 0 ok (diff: same), 1 diff found differences or an output file
// could not be written, 2 bad usage or an input that is not a readable trace.
//
// One file per subcommand (traces/tool_*.c), the shared pieces in
// tool_common.c (traces/tool.h); this file dispatches.
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "traces/tool.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: trace COMMAND [ARGS]\n"
            "Inspect, compare and plot the JSON traces written by microgpt and compare\n"
            "(--trace FILE). docs/traces.md describes the format.\n\n"
            "commands:\n"
            "  inspect FILE [--json]          a summary of one trace\n"
            "  diff A B [--tolerance X]       compare two traces of the same kind step by step\n"
            "  plot FILE... [--svg OUT.svg]   loss curves as a text chart, optionally an SVG\n"
            "  validate FILE...               check that files are well-formed, consistent traces\n"
            "  export --csv FILE [--errors]   a trace as CSV (steps, or per-tensor errors)\n"
            "  help [COMMAND]                 this text, or a command's\n\n"
            "`trace COMMAND --help` describes a command and its flags.\n"
            "Exit codes: 0 ok (diff: the same), 1 diff found differences or an output file\n"
            "could not be written, 2 bad usage or an input that is not a readable trace.\n");
}

int main(int argc, char **argv) {
    set_prog_name(argv[0]);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        const char *topic = argc > 2 && !strcmp(cmd, "help") ? argv[2] : NULL;
        if (!topic) usage(stdout);
        else if (!strcmp(topic, "inspect")) inspect_usage(stdout);
        else if (!strcmp(topic, "diff")) diff_usage(stdout);
        else if (!strcmp(topic, "plot")) plot_usage(stdout);
        else if (!strcmp(topic, "validate")) validate_usage(stdout);
        else if (!strcmp(topic, "export")) export_usage(stdout);
        else die(EXIT_USAGE, "help: unknown command '%s' (commands: inspect, diff, plot, validate, export)", topic);
        stdout_check();   // a help text that could not be written is not a success (exit 1)
        return 0;
    }
    int (*run)(int, char **) = !strcmp(cmd, "inspect")    ? cmd_inspect
                               : !strcmp(cmd, "diff")     ? cmd_diff
                               : !strcmp(cmd, "plot")     ? cmd_plot
                               : !strcmp(cmd, "validate") ? cmd_validate
                               : !strcmp(cmd, "export")   ? cmd_export
                                                          : NULL;
    if (run) {
        const int rc = run(argc - 1, argv + 1);
        stdout_check();   // what a command printed (its --help too) must have reached stdout: else exit 1
        return rc;
    }
    if (is_flag(cmd)) die(EXIT_USAGE, "unknown flag '%s' before the command (see trace --help)", cmd);
    die(EXIT_USAGE, "unknown command '%s' (commands: inspect, diff, plot, validate, export; see trace --help)", cmd);
}
