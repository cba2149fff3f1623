// Shared test helpers: locating the data and golden files, running a tool as
// a subprocess and capturing its output.
#ifndef TESTS_HELPERS_H
#define TESTS_HELPERS_H

#include <stddef.h>

// Defined in a build with AddressSanitizer (make test SANITIZE=1), which
// reserves terabytes of address space: tests that limit it (ulimit -v,
// RLIMIT_AS) cannot run there.
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

// Path of data/names.txt; fails the test (with a message saying how to get
// it) if it is missing.
const char *th_names_path(void);
// The build directory the running test binary lives in (its parent folder).
const char *th_build_dir(void);
// Read a whole file (NUL-terminated); fails the test if it cannot.
char *th_read_file(const char *path, size_t *len);
// Parse a JSON file (cJSON *, freed with cJSON_Delete); fails the test if it
// cannot be read or is not JSON.
struct cJSON *th_load_json(const char *path);
// Write text to a fresh file in a temporary directory; returns its path.
const char *th_write_temp(const char *name, const void *data, size_t len);
// A fresh temporary directory (one per test process).
const char *th_temp_dir(void);
// name inside it (one of 16 rotating buffers)
const char *th_temp_path(const char *name);
// A fresh directory `name` under th_temp_dir() that becomes the current case's
// (th_case_current()); th_case_path(name): a path inside it (one of 8
// rotating buffers).
const char *th_case_dir(const char *name);
const char *th_case_current(void);
const char *th_case_path(const char *name);

typedef struct {
    int status;      // exit code, or 128 + signal
    char *out, *err; // captured stdout and stderr (NUL-terminated)
    size_t out_len, err_len;
} ThRun;

// Run argv[0] (a path) with argv, capturing output. argv is NULL-terminated.
ThRun th_run(char *const argv[]);
// Run one of the project's tools, <build dir>/<tool>, with the arguments
// args[] (NULL-terminated), or with a NULL-terminated argument list.
ThRun th_tool_argv(const char *tool, const char *const *args);
ThRun th_tool(const char *tool, ...);
void th_run_free(ThRun *r);
// Expect exit code `status` and, if needle is not NULL, needle in stderr or
// stdout; `what` names the case in the failure. Frees r.
void th_expect_status(ThRun r, int status, const char *needle, const char *what);
// Expect bad usage: exit 2 with needle in stderr. Frees r.
void th_expect_usage(ThRun r, const char *needle, const char *what);
// A run whose data output was "-": it exits with `status`, stdout is that
// JSON alone (returned, freed with cJSON_Delete) and the human-readable
// `text` is on stderr; `what` names the case. Frees r.
struct cJSON *th_stdout_json(ThRun r, int status, const char *text, const char *what);

// A Python interpreter for which `code` runs (e.g. "import numpy"):
// $MICROGPT_PYTHON, else the project's .venv/bin/python (make deps), else
// Debian's /usr/bin/python3, else python3 on PATH; NULL if none. Answers
// are cached.
const char *th_python(const char *code);
// Run `python SCRIPT` (from the repository root) with th_python(code);
// where there is none, skip the test saying so. *py_used (if not NULL)
// names the interpreter.
ThRun th_python_script(const char *code, const char *script, const char **py_used);
// Check a JSON file (or each of its lines) against a schema of docs/schemas/
// with tests/validate_schema.py; fails the test on a violation, and only
// logs when no Python has the jsonschema module.
void th_check_schema(const char *schema, const char *file, int lines);

#endif
