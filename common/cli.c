#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "atomic_file.h"
#include "util.h"

static void mark(CliSeen *s, const char *name) {
    if (cli_given(s, name)) die(EXIT_USAGE, "%s is given twice; give it once", name);
    if (s->n < CLI_MAX_SEEN) s->seen[s->n++] = name;
}

int cli_given(const CliSeen *s, const char *name) {
    for (int k = 0; k < s->n; k++)
        if (!strcmp(s->seen[k], name)) return 1;
    return 0;
}

const char *cli_value(CliSeen *s, int argc, char **argv, int *i, const char *name) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0 || (a[n] != '\0' && a[n] != '=')) return NULL;
    mark(s, name);
    if (a[n] == '=') return a + n + 1;
    if (*i + 1 >= argc) die(EXIT_USAGE, "%s needs a value (see --help)", name);
    *i += 1;
    return argv[*i];
}

int cli_switch(CliSeen *s, char **argv, int i, const char *name) {
    const char *a = argv[i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0 || (a[n] != '\0' && a[n] != '=')) return 0;
    if (a[n] == '=') die(EXIT_USAGE, "%s takes no value (got '%s')", name, a);
    mark(s, name);
    return 1;
}

const char *cli_path(const char *flag, const char *v) {
    if (!*v) die(EXIT_USAGE, "%s: empty path", flag);
    if (!strncmp(v, "--", 2))
        die(EXIT_USAGE, "%s: its value is missing ('%s' is a flag); to name a file that begins with '--', "
            "write ./%s", flag, v, v);
    return v;
}

void cli_check_outputs(const CliOut *out, int n) {
    OutFile *o = calloc((size_t)n, sizeof *o);
    if (!o) die(EXIT_USAGE, "out of memory");
    char err[512];
    for (int i = 0; i < n; i++) {
        if (!out[i].path) continue;
        if (outfile_open(&o[i], out[i].path, err, sizeof err))
            die(EXIT_USAGE, "%s %s: %s", out[i].flag, path_short(out[i].path), err);
        for (int j = 0; j < i; j++) {
            if (!out[j].path || !outfile_same(&o[j], &o[i])) continue;
            if (o[i].kind == OUT_STDOUT)
                die(EXIT_USAGE, "%s %s and %s %s both write to standard output, where one would run into the "
                    "other; give one of them a file", out[j].flag, path_short(out[j].path), out[i].flag,
                    path_short(out[i].path));
            die(EXIT_USAGE, "%s %s and %s %s are the same file: one output would replace the other; give each "
                "its own path", out[j].flag, path_short(out[j].path), out[i].flag, path_short(out[i].path));
        }
    }
    free(o);
}
