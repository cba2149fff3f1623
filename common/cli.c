#include "cli.h"

#include <string.h>

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
