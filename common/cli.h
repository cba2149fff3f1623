// Command-line conventions every tool shares (getopt_long's, by hand so that
// the shared settings can be parsed flag by flag): a value follows its flag
// as the next argument or after '=' (`--steps 3`, `--steps=3`); a switch
// takes no value (`--quiet=1` is refused); a flag given twice is refused.
#ifndef COMMON_CLI_H
#define COMMON_CLI_H

#define CLI_MAX_SEEN 48

typedef struct {
    const char *seen[CLI_MAX_SEEN];  // flag names given so far
    int n;
} CliSeen;

// If argv[*i] is `name` or `name=VALUE`: its value (the next argument, or
// what follows '='), *i advanced past it, the flag marked seen; exits 2 when
// the value is missing or the flag was already given. NULL when argv[*i] is
// another flag.
const char *cli_value(CliSeen *s, int argc, char **argv, int *i, const char *name);
// If argv[*i] is the switch `name`: 1, the flag marked seen (exits 2 for
// `name=...` or a repeat); else 0.
int cli_switch(CliSeen *s, char **argv, int i, const char *name);
// Whether the flag `name` was given.
int cli_given(const CliSeen *s, const char *name);

// A path flag's value v, checked: exits 2 when it is empty or starts with
// "--", which is the next flag taken for a left-out value (`--trace --quiet`);
// a file of such a name is still reachable as ./--name.
const char *cli_path(const char *flag, const char *v);

// One output of a run: the flag and its path (NULL: not given).
typedef struct {
    const char *flag, *path;
} CliOut;

// Check a run's outputs before it starts, after its inputs are noted
// (common/atomic_file.h): each must be writable and no input, and no two may
// be the same file under any spelling ("-" twice included), or the second
// would replace the first. Exits 2 naming the flags.
void cli_check_outputs(const CliOut *out, int n);

#endif
