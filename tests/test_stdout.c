// A tool whose standard output cannot be written (/dev/full) does not exit
// 0: its output was lost (issue #29 item 15). The bench's table has its own
// test (test_bench); here the help texts and the rules table.
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"

// Run "<build>/TOOL ARGS > /dev/full" through the shell.
static ThRun to_full(const char *tool, const char *args) {
    static char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/%.64s' %.2048s > /dev/full", th_build_dir(), tool, args);
    char *const argv[] = {"/bin/sh", "-c", cmd, NULL};
    return th_run(argv);
}

Test(stdout, help_to_a_full_stdout_is_exit_1, .timeout = 30) {
    th_expect_status(to_full("compare", "--help"), 1, "writing standard output failed", "compare --help");
    th_expect_status(to_full("compare", "--rules"), 1, "writing standard output failed", "compare --rules");
    th_expect_status(to_full("trace", "--help"), 1, "writing standard output failed", "trace --help");
    th_expect_status(to_full("trace", "help inspect"), 1, "writing standard output failed", "trace help inspect");
    th_expect_status(to_full("microgpt", "--help"), 1, "writing standard output failed", "microgpt --help");
    th_expect_status(to_full("trace", "plot --help"), 1, "writing standard output failed", "trace plot --help");
    th_expect_status(to_full("trace", "diff --help"), 1, "writing standard output failed", "trace diff --help");
    th_expect_status(to_full("compare", "--bench --help"), 1, "writing standard output failed", "compare --bench --help");
    // --against's verdict lost: exit 1 (its record: a short training run)
    const char *rec = th_temp_path("rec.json");
    th_expect_status(th_tool("microgpt", "--data", th_names_path(), "--steps", "3", "--samples", "0", "--trace", rec,
                             NULL),
                     0, NULL, "the record");
    char args[1024];
    snprintf(args, sizeof args, "--against '%s' --engines cpu --data '%s'", rec, th_names_path());
    th_expect_status(to_full("compare", args), 1, "writing standard output failed", "compare --against");
    // and the same texts to a writable stdout are a success
    th_expect_status(th_tool("compare", "--help", NULL), 0, "--engines", "compare --help");
    th_expect_status(th_tool("trace", "--help", NULL), 0, NULL, "trace --help");
}
