// What a compare run reads and writes, checked before anything runs: every
// file it reads (the data, a plugin library, the files an exec engine's
// command names, the --against trace) is noted so that no output replaces it
// (common/atomic_file.h), and the outputs (--trace, --timeline, --markdown)
// must be writable and distinct. --export-init checks its files itself.
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "compare.h"
#include "engines.h"
#include "common/atomic_file.h"
#include "common/cli.h"

#define EXEC_ROLE "a file named in the exec engine's command of --engines:"

// A word of an exec command that names a regular file (the script, its
// weights); in NAME=VALUE or --flag=VALUE, VALUE too. Devices and the like
// are not noted: `> /dev/null` in a command makes /dev/null no input.
static void note_exec_word(const char *w) {
    struct stat st;
    if (stat(w, &st) == 0 && S_ISREG(st.st_mode)) outfile_note_input_as(w, EXEC_ROLE);
    const char *eq = strchr(w, '=');
    if (eq && stat(eq + 1, &st) == 0 && S_ISREG(st.st_mode)) outfile_note_input_as(eq + 1, EXEC_ROLE);
}

// The command's words as the shell splits plain words: on blanks, quotes
// removed (enough to find the file names in it).
static void note_exec_words(const char *cmd) {
    char word[4096];
    size_t n = 0;
    char quote = 0;
    for (const char *c = cmd;; c++) {
        if (*c == '\0' || (!quote && (*c == ' ' || *c == '\t'))) {
            word[n] = '\0';
            if (n) note_exec_word(word);
            n = 0;
            if (!*c) break;
        } else if (quote ? *c == quote : (*c == '\'' || *c == '"')) {
            quote = quote ? 0 : *c;
        } else if (n + 1 < sizeof word) {
            word[n++] = *c;
        }
    }
}

static void note_engine(const char *name) {
    if (!strncmp(name, "plugin:", 7)) {
        outfile_note_input_as(name + 7, "the plugin --engines loads:");
    } else if (!strncmp(name, "exec:", 5)) {
        note_exec_words(name + 5);
    } else if (!strncmp(name, "cuda", 4)) {
        char path[4200];
        engine_cuda_plugin_path(path, sizeof path);
        outfile_note_input_as(path, "the CUDA engine's plugin");
    }
}

void outputs_check(const Options *o) {
    outfile_note_input_as(o->s.data_path, "--data");
    for (int k = 0; k < o->n_engines; k++) note_engine(o->names[k]);
    if (o->against) outfile_note_input_as(o->against, "--against");
    const CliOut out[] = {{"--trace", o->s.trace_path}, {"--timeline", o->s.timeline_path},
                          {"--markdown", o->b.markdown}};
    cli_check_outputs(out, 3);
}
