#include "helpers.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

const char *th_names_path(void) {
    static const char *p = "data/names.txt";
    if (!exists(p))
        cr_assert_fail("data/names.txt is missing: run the tests from the repository root after "
                 "`make data` (or copy ../shared/data/names.txt there, as .ci/run does)");
    return p;
}

const char *th_build_dir(void) {
    static char dir[PATH_MAX];
    if (!dir[0]) {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0) cr_assert_fail("cannot read /proc/self/exe");
        exe[n] = '\0';
        // <build>/tests/<binary>
        snprintf(dir, sizeof dir, "%s", dirname(dirname(exe)));
    }
    return dir;
}

char *th_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) cr_assert_fail("cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    for (;;) {
        if (n == cap) b = realloc(b, (cap *= 2) + 1);
        size_t got = fread(b + n, 1, cap - n, f);
        if (!got) break;
        n += got;
    }
    fclose(f);
    b[n] = '\0';
    if (len) *len = n;
    return b;
}

const char *th_temp_dir(void) {
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/microgpt-test-XXXXXX");
        if (!mkdtemp(dir)) cr_assert_fail("mkdtemp: %s", strerror(errno));
    }
    return dir;
}

const char *th_temp_path(const char *name) {
    static char buf[16][PATH_MAX];
    static int k;
    char *p = buf[k++ % 16];
    snprintf(p, PATH_MAX, "%s/%s", th_temp_dir(), name);
    return p;
}

static char g_case[PATH_MAX];

const char *th_case_dir(const char *name) {
    snprintf(g_case, sizeof g_case, "%.1000s/%.200s", th_temp_dir(), name);
    mkdir(g_case, 0755);
    return g_case;
}

const char *th_case_current(void) { return g_case; }

const char *th_case_path(const char *name) {
    static char buf[8][PATH_MAX];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, PATH_MAX, "%.1200s/%.300s", g_case, name);
    return p;
}

const char *th_write_temp(const char *name, const void *data, size_t len) {
    const char *p = th_temp_path(name);
    FILE *f = fopen(p, "wb");
    if (!f) cr_assert_fail("cannot create %s", p);
    if (len && fwrite(data, 1, len, f) != len) cr_assert_fail("cannot write %s", p);
    fclose(f);
    return p;
}

static char *slurp_fd(int fd, size_t *len) {
    size_t cap = 4096, n = 0;
    char *b = malloc(cap + 1);
    for (;;) {
        if (n == cap) b = realloc(b, (cap *= 2) + 1);
        ssize_t got = read(fd, b + n, cap - n);
        if (got <= 0) break;
        n += (size_t)got;
    }
    b[n] = '\0';
    *len = n;
    return b;
}

ThRun th_run(char *const argv[]) {
    ThRun r = {0};
    char outp[PATH_MAX], errp[PATH_MAX];
    snprintf(outp, sizeof outp, "%s/.run-out-%d", th_temp_dir(), (int)getpid());
    snprintf(errp, sizeof errp, "%s/.run-err-%d", th_temp_dir(), (int)getpid());
    pid_t pid = fork();
    if (pid < 0) cr_assert_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0) _exit(127);
        dup2(o, 1);
        dup2(e, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    int fo = open(outp, O_RDONLY), fe = open(errp, O_RDONLY);
    r.out = slurp_fd(fo, &r.out_len);
    r.err = slurp_fd(fe, &r.err_len);
    close(fo);
    close(fe);
    unlink(outp);
    unlink(errp);
    return r;
}

void th_run_free(ThRun *r) {
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

ThRun th_tool_argv(const char *tool, const char *const *args) {
    static char exe[PATH_MAX + 64];
    snprintf(exe, sizeof exe, "%s/%.60s", th_build_dir(), tool);
    if (access(exe, X_OK) != 0) cr_assert_fail("%s is missing: build it first (make %s)", exe, exe);
    char *argv[64];
    int n = 0;
    argv[n++] = exe;
    for (; *args; args++) {
        cr_assert_lt(n, 63, "too many arguments");
        argv[n++] = (char *)*args;
    }
    argv[n] = NULL;
    return th_run(argv);
}

ThRun th_tool(const char *tool, ...) {
    const char *args[64];
    int n = 0;
    va_list ap;
    va_start(ap, tool);
    for (const char *a = va_arg(ap, const char *); a; a = va_arg(ap, const char *)) {
        cr_assert_lt(n, 63, "too many arguments");
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    return th_tool_argv(tool, args);
}

const char *th_python(const char *code) {
    static char found[8][256], tried[8][200];
    static int n;
    for (int i = 0; i < n; i++)
        if (!strcmp(tried[i], code)) return found[i][0] ? found[i] : NULL;
    if (n == 8) return NULL;
    snprintf(tried[n], sizeof tried[n], "%s", code);
    // the project's virtual environment (make deps) first
    const char *cands[] = {getenv("MICROGPT_PYTHON"), ".venv/bin/python", "/usr/bin/python3", "python3"};
    for (int i = 0; i < 4 && !found[n][0]; i++) {
        if (!cands[i] || !*cands[i]) continue;
        char cmd[600];
        snprintf(cmd, sizeof cmd, "%s -c '%s' >/dev/null 2>&1", cands[i], code);
        if (system(cmd) == 0) snprintf(found[n], sizeof found[n], "%s", cands[i]);
    }
    n++;
    return found[n - 1][0] ? found[n - 1] : NULL;
}

ThRun th_python_script(const char *code, const char *script, const char **py_used) {
    const char *py = th_python(code);
    if (!py) {
        fprintf(stderr, "SKIP: no Python for which '%s' runs ($MICROGPT_PYTHON, .venv/bin/python, /usr/bin/python3 "
                        "or python3 on PATH; make deps installs numpy into .venv)\n", code);
        cr_skip_test("no Python for %s", script);
    }
    if (py_used) *py_used = py;
    // env finds a bare "python3" on PATH (th_run takes a path)
    char *const argv[] = {"/usr/bin/env", (char *)py, (char *)script, NULL};
    return th_run(argv);
}

void th_check_schema(const char *schema, const char *file, int lines) {
    const char *py = th_python("import jsonschema");
    if (!py) {
        fprintf(stderr, "SKIP schema check of %s: no Python with jsonschema (apt-get install python3-jsonschema)\n",
                file);
        return;
    }
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s tests/validate_schema.py docs/schemas/%s %s%s >/dev/null", py, schema, file,
             lines ? " --lines" : "");
    int rc = system(cmd);
    cr_expect_eq(rc, 0, "%s does not match docs/schemas/%s (see stderr)", file, schema);
}

void th_expect_status(ThRun r, int status, const char *needle, const char *what) {
    cr_expect_eq(r.status, status, "%s: exit %d (want %d)\n%s%s", what, r.status, status, r.out, r.err);
    if (needle)
        cr_expect(strstr(r.err, needle) || strstr(r.out, needle), "%s: the output lacks '%s':\n%s%s", what, needle,
                  r.out, r.err);
    th_run_free(&r);
}

void th_expect_usage(ThRun r, const char *needle, const char *what) {
    cr_expect_eq(r.status, 2, "%s: exit %d (want 2): %s", what, r.status, r.err);
    cr_expect(strstr(r.err, needle) != NULL, "%s: message should mention '%s': %s", what, needle, r.err);
    th_run_free(&r);
}

cJSON *th_stdout_json(ThRun r, int status, const char *text, const char *what) {
    cr_expect_eq(r.status, status, "%s: exit %d (want %d): %s", what, r.status, status, r.err);
    cr_expect(strstr(r.err, text) != NULL, "%s: the run's text ('%s') should be on stderr: %s", what, text, r.err);
    cJSON *root = cJSON_Parse(r.out);   // fails on anything before or after the JSON
    cr_assert(root, "%s: stdout is not JSON alone: %.300s", what, r.out);
    th_run_free(&r);
    return root;
}

cJSON *th_load_json(const char *path) {
    char *text = th_read_file(path, NULL);
    cJSON *root = cJSON_Parse(text);
    free(text);
    cr_assert(root, "%s is not JSON", path);
    return root;
}
