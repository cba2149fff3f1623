// libFuzzer target: the shared flag parser and the settings checks. The
// input is a command line, arguments separated by NUL bytes. die() (a
// refused flag) returns here through the die hook instead of exiting.
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/settings.h"
#include "common/util.h"

static jmp_buf g_back;

static void back(int code, const char *msg) {
    (void)msg;
    if (code != EXIT_USAGE) abort();  // a bad flag is a usage error, nothing else
    longjmp(g_back, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[64];
    int argc = 0;
    argv[argc++] = "fuzz";
    for (size_t i = 0; i <= size && argc < 63;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    argv[argc] = NULL;
    static Settings s;  // static: longjmp must not leave it indeterminate
    settings_defaults(&s);
    add_die_hook(back);
    if (setjmp(g_back) == 0) {
        for (int i = 1; i < argc; i++)
            if (!settings_parse_flag(&s, argc, argv, &i)) break;
        settings_validate(&s);
        if (s.n_embd % s.n_head || s.batch < 1 || !(s.temperature > 0)) abort();
    }
    remove_die_hook(back);
    free(buf);
    return 0;
}
