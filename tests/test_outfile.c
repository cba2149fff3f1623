// Output files (common/atomic_file.h) as a careful Unix tool writes them:
// "-" is stdout (which then carries that data alone), files are replaced atomically keeping their mode, symlinks'
// targets are written, FIFOs and character devices are written in place,
// read-only files are refused also as root (CI runs as root), an output
// that is an input is refused, a group of files is replaced together or not
// at all, and no temporary file is ever left.
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/atomic_file.h"
#include "helpers.h"


static void put(const char *path, const char *text, mode_t mode) {
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
    cr_assert_eq(write_all(fd, text, strlen(text)), 0);
    close(fd);
    chmod(path, mode);
}

static int entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static int write_path(const char *path, const char *text, char *err, size_t n) {
    OutFile o;
    if (outfile_open(&o, path, err, n)) return -1;
    return outfile_write(&o, text, strlen(text), err, n);
}

Test(outfile, a_regular_file_is_replaced_atomically_keeping_its_mode) {
    th_case_dir("regular");
    const char *p = th_case_path("t.json");
    put(p, "old", 0640);
    struct stat before, after;
    stat(p, &before);
    char err[512];
    cr_assert_eq(write_path(p, "new text", err, sizeof err), 0, "%s", err);
    char *got = th_read_file(p, NULL);
    cr_expect_str_eq(got, "new text");
    free(got);
    stat(p, &after);
    cr_expect_eq(after.st_mode & 07777, 0640, "the mode was %04o", (unsigned)(after.st_mode & 07777));
    cr_expect_neq(before.st_ino, after.st_ino, "written in place, not renamed over");
    cr_expect_eq(entries(th_case_current()), 1, "a temporary file was left beside it");
    // a new path
    cr_assert_eq(write_path(th_case_path("new.json"), "x", err, sizeof err), 0, "%s", err);
    cr_expect_eq(entries(th_case_current()), 2);
}

Test(outfile, a_symlink_target_is_written_and_the_link_kept) {
    th_case_dir("symlink");
    put(th_case_path("target.json"), "old", 0644);
    cr_assert_eq(symlink("target.json", th_case_path("link.json")), 0);
    char err[512];
    cr_assert_eq(write_path(th_case_path("link.json"), "via link", err, sizeof err), 0, "%s", err);
    struct stat st;
    lstat(th_case_path("link.json"), &st);
    cr_expect(S_ISLNK(st.st_mode), "the symlink was replaced by a file");
    char *got = th_read_file(th_case_path("target.json"), NULL);
    cr_expect_str_eq(got, "via link");
    free(got);
    // a dangling symlink: its target is created
    mkdir(th_case_path("sub"), 0755);
    cr_assert_eq(symlink("sub/later.json", th_case_path("dangling.json")), 0);
    cr_assert_eq(write_path(th_case_path("dangling.json"), "created", err, sizeof err), 0, "%s", err);
    lstat(th_case_path("dangling.json"), &st);
    cr_expect(S_ISLNK(st.st_mode));
    got = th_read_file(th_case_path("sub/later.json"), NULL);
    cr_expect_str_eq(got, "created");
    free(got);
}

Test(outfile, a_fifo_and_character_devices_are_written_in_place) {
    th_case_dir("fifo");
    const char *f = th_case_path("pipe");
    cr_assert_eq(mkfifo(f, 0644), 0);
    pid_t pid = fork();
    if (pid == 0) {  // the reader: exit 0 when it read exactly the text
        char buf[64] = {0};
        int fd = open(f, O_RDONLY);
        ssize_t n = read(fd, buf, sizeof buf - 1);
        _exit(n == 10 && !strcmp(buf, "to a pipe\n") ? 0 : 1);
    }
    char err[512];
    cr_assert_eq(write_path(f, "to a pipe\n", err, sizeof err), 0, "%s", err);
    int st;
    waitpid(pid, &st, 0);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the reader did not get the text");
    struct stat s;
    stat(f, &s);
    cr_expect(S_ISFIFO(s.st_mode), "the FIFO was replaced");
    cr_expect_eq(write_path("/dev/null", "gone", err, sizeof err), 0, "%s", err);
    stat("/dev/null", &s);
    cr_expect(S_ISCHR(s.st_mode), "/dev/null is no longer a device");
    // a full disk is an error with the reason
    cr_expect_eq(write_path("/dev/full", "full", err, sizeof err), -1);
    cr_expect(strstr(err, "No space left"), "%s", err);
}

Test(outfile, read_only_files_directories_and_missing_directories_are_refused) {
    th_case_dir("refused");
    const char *p = th_case_path("ro.json");
    put(p, "keep me", 0444);
    char err[512];
    OutFile o;
    // as root access() would allow it: the mode bits decide
    cr_expect_eq(outfile_open(&o, p, err, sizeof err), -1, "a read-only file was accepted (uid %d)",
                 (int)geteuid());
    cr_expect(strstr(err, "read-only"), "%s", err);
    char *got = th_read_file(p, NULL);
    cr_expect_str_eq(got, "keep me");
    free(got);
    cr_expect_eq(outfile_open(&o, th_case_current(), err, sizeof err), -1);
    cr_expect(strstr(err, "directory"), "%s", err);
    cr_expect_eq(outfile_open(&o, th_case_path("no/such/dir/t.json"), err, sizeof err), -1);
    cr_expect(strstr(err, "does not exist"), "%s", err);
    cr_expect_eq(outfile_open(&o, "", err, sizeof err), -1);
}

Test(outfile, an_input_of_the_run_is_refused_under_any_name) {
    th_case_dir("inputs");
    const char *p = th_case_path("data.txt");
    put(p, "anna\n", 0644);
    cr_assert_eq(link(p, th_case_path("hardlink.txt")), 0);
    cr_assert_eq(symlink("data.txt", th_case_path("sym.txt")), 0);
    outfile_note_input(p);
    char err[512];
    OutFile o;
    const char *names[] = {p, th_case_path("hardlink.txt"), th_case_path("sym.txt")};
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(outfile_open(&o, names[i], err, sizeof err), -1, "%s accepted", names[i]);
        cr_expect(strstr(err, "input"), "%s", err);
    }
    char *got = th_read_file(p, NULL);
    cr_expect_str_eq(got, "anna\n");
    free(got);
}

Test(outfile, stale_temporary_files_of_dead_processes_are_removed) {
    th_case_dir("stale");
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    char stale[256], live[256];
    snprintf(stale, sizeof stale, ".t.json.tmp-%d-abcdef", (int)dead);
    snprintf(live, sizeof live, ".t.json.tmp-%d-ghijkl", (int)getpid());
    put(th_case_path(stale), "", 0600);
    put(th_case_path(live), "", 0600);
    char err[512];
    cr_assert_eq(write_path(th_case_path("t.json"), "{}", err, sizeof err), 0, "%s", err);
    cr_expect_neq(access(th_case_path(stale), F_OK), 0, "the dead process's temporary file is still there");
    cr_expect_eq(access(th_case_path(live), F_OK), 0, "a running process's temporary file was removed");
}

// --export-init's files: a member that turns read-only after the check
// stops the whole group before any file is replaced.
Test(outfile, a_group_is_replaced_together_or_none) {
    th_case_dir("group");
    const char *name[3] = {"a", "b", "c"};
    OutFile o[3];
    const void *data[3] = {"new a", "new b", "new c"};
    size_t len[3] = {5, 5, 5};
    char err[1024];
    for (int k = 0; k < 3; k++) {
        put(th_case_path(name[k]), "old", 0644);
        cr_assert_eq(outfile_open(&o[k], th_case_path(name[k]), err, sizeof err), 0, "%s", err);
    }
    chmod(th_case_path("c"), 0444);
    cr_expect_eq(outfile_write_group(o, data, len, 3, err, sizeof err), -1);
    cr_expect(strstr(err, th_case_path("c")) && strstr(err, "read-only"), "%s", err);
    for (int k = 0; k < 3; k++) {
        char *got = th_read_file(th_case_path(name[k]), NULL);
        cr_expect_str_eq(got, "old", "%s was replaced", name[k]);
        free(got);
    }
    cr_expect_eq(entries(th_case_current()), 3, "a temporary file was left");
    chmod(th_case_path("c"), 0644);
    cr_assert_eq(outfile_write_group(o, data, len, 3, err, sizeof err), 0, "%s", err);
    for (int k = 0; k < 3; k++) {
        char *got = th_read_file(th_case_path(name[k]), NULL);
        cr_expect_str_eq(got, data[k]);
        free(got);
    }
    cr_expect_eq(entries(th_case_current()), 3, "a temporary file was left");
}

Test(outfile, the_same_file_under_any_spelling) {
    th_case_dir("same");
    mkdir(th_case_path("sub"), 0755);
    put(th_case_path("y"), "", 0644);
    cr_assert_eq(symlink("y", th_case_path("link")), 0);
    static const struct { const char *a, *b; int same; } cases[] = {
        {"x", "./x", 1}, {"x", "sub/../x", 1}, {"y", "link", 1}, {"x", "y", 0}, {"x", "sub/x", 0},
    };
    char err[512];
    OutFile a, b;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cr_assert_eq(outfile_open(&a, th_case_path(cases[i].a), err, sizeof err), 0, "%s", err);
        cr_assert_eq(outfile_open(&b, th_case_path(cases[i].b), err, sizeof err), 0, "%s", err);
        cr_expect_eq(outfile_same(&a, &b), cases[i].same, "%s and %s", cases[i].a, cases[i].b);
    }
    cr_assert_eq(outfile_open(&a, "-", err, sizeof err), 0, "%s", err);
    cr_assert_eq(outfile_open(&b, "-", err, sizeof err), 0, "%s", err);
    cr_expect(outfile_same(&a, &b), "- twice");
    // writing twice to /dev/null loses nothing
    cr_assert_eq(outfile_open(&a, "/dev/null", err, sizeof err), 0, "%s", err);
    cr_assert_eq(outfile_open(&b, "/dev/null", err, sizeof err), 0, "%s", err);
    cr_expect(!outfile_same(&a, &b), "/dev/null twice");
}

static void custom(int sig) { (void)sig; }

Test(outfile, signal_state_is_as_before) {
    th_case_dir("signals");
    struct sigaction sa = {0}, now;
    sa.sa_handler = custom;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGTERM, SIG_IGN);
    char err[512];
    cr_assert_eq(write_path(th_case_path("t.json"), "{}", err, sizeof err), 0, "%s", err);
    sigaction(SIGHUP, NULL, &now);
    cr_expect(now.sa_handler == custom, "the SIGHUP handler was changed");
    sigaction(SIGTERM, NULL, &now);
    cr_expect(now.sa_handler == SIG_IGN, "an ignored SIGTERM is no longer ignored");
    sigset_t mask;
    sigprocmask(SIG_BLOCK, NULL, &mask);
    cr_expect(!sigismember(&mask, SIGINT) && !sigismember(&mask, SIGTERM), "signals left blocked");
}

// Through the tools: the run's own data and a trace being plotted are inputs.
Test(outfile, tools_refuse_to_overwrite_their_inputs) {
    th_case_dir("tools");
    const char *d = th_case_path("d.txt");
    put(d, "anna\nbob\ncarl\n", 0644);
    ThRun r = th_tool("microgpt", "--data", d, "--trace", d, "--steps", "1", NULL);
    cr_expect_eq(r.status, 2, "%s", r.err);
    cr_expect(strstr(r.err, "input"), "%s", r.err);
    th_run_free(&r);
    char *got = th_read_file(d, NULL);
    cr_expect_str_eq(got, "anna\nbob\ncarl\n");
    free(got);
    const char *tr = th_case_path("a.json");
    r = th_tool("microgpt", "--data", d, "--trace", tr, "--steps", "2", "--samples", "0", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    th_run_free(&r);
    size_t n0, n1;
    free(th_read_file(tr, &n0));
    r = th_tool("trace", "plot", tr, "--svg", tr, NULL);
    cr_expect_eq(r.status, 2, "%s", r.err);
    cr_expect(strstr(r.err, "input"), "%s", r.err);
    th_run_free(&r);
    free(th_read_file(tr, &n1));
    cr_expect_eq(n0, n1, "plot changed the trace it read");
}

// `--trace /dev/stdout` with stdout a regular file (as th_run makes it):
// written through stdout, the file is not replaced; `-` is stdout too. Stdout
// then carries the trace (or the timeline) alone and the run's text goes to
// stderr (`--trace - | jq`), in microgpt and bench_scalar; a failed write of
// it is exit 1.
Test(outfile, dev_stdout_and_dash_write_the_data_alone) {
    const char *flags[3][2] = {{"--trace", "/dev/stdout"}, {"--trace", "-"}, {"--timeline", "-"}};
    for (int k = 0; k < 3; k++) {
        char what[64];
        snprintf(what, sizeof what, "microgpt %s %s", flags[k][0], flags[k][1]);
        cJSON *j = th_stdout_json(th_tool("microgpt", "--data", th_names_path(), "--steps", "2", "--samples", "1",
                                          flags[k][0], flags[k][1], NULL), 0, "sample  1:", what);
        if (k < 2) cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "kind")), "train", "%s", what);
        else cr_expect(cJSON_IsArray(cJSON_GetObjectItem(j, "traceEvents")), "%s", what);
        cJSON_Delete(j);
    }
    cJSON *j = th_stdout_json(th_tool("bench_scalar", "--data", th_names_path(), "--repeats", "1", "--steps", "2",
                                      "--samples", "1", "--trace", "-", NULL), 0, "ms/step", "bench_scalar --trace -");
    cJSON_Delete(j);
    ThRun r = th_tool("microgpt", "--data", th_names_path(), "--steps", "1", "--samples", "0", "--trace",
                      "/dev/full", NULL);
    cr_expect_eq(r.status, 1, "a full disk: exit %d", r.status);
    cr_expect(strstr(r.err, "No space left"), "%s", r.err);
    th_run_free(&r);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "'%s/microgpt' --data %s --steps 1 --samples 0 --trace - >/dev/full 2>/dev/null",
             th_build_dir(), th_names_path());
    int st = system(cmd);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "--trace - to a full disk: exit %d", WEXITSTATUS(st));
}

// As a normal user (CI runs as root: the test drops to uid 65534 with
// setpriv): a trace through a pipe via /dev/stdout works; another user's
// file and a directory without write permission are refused before the run.
Test(outfile, as_a_normal_user) {
    if (geteuid() != 0 || access("/usr/bin/setpriv", X_OK) != 0) {
        cr_log_info("skipped: needs root and setpriv to become a normal user");
        return;
    }
    chmod(th_temp_dir(), 0711);  // the user may pass through, not list
    th_case_dir("user");
    chmod(th_case_current(), 0755);
    put(th_case_path("roots.json"), "{}", 0644);
    char exe[4200], cmd[9000];
    snprintf(exe, sizeof exe, "%s/microgpt", th_build_dir());
    const char *sp = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    snprintf(cmd, sizeof cmd, "%s '%s' --data data/names.txt --steps 1 --samples 0 --trace /dev/stdout 2>&1 | grep -c microgpt-trace >/dev/null", sp, exe);
    int st = system(cmd);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "--trace /dev/stdout into a pipe as a normal user");
    static const struct { const char *file, *says; } refused[2] = {
        {"roots.json", "is not writable by this user"}, {"new.json", "cannot create a file in"}};
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd,
                 "out=$(%s '%s' --data data/names.txt --steps 1 --trace '%s' 2>&1); [ $? -eq 2 ] && "
                 "printf '%%s' \"$out\" | grep -q '%s'",
                 sp, exe, th_case_path(refused[k].file), refused[k].says);
        st = system(cmd);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: not refused with '%s'", refused[k].file, refused[k].says);
    }
    char *got = th_read_file(th_case_path("roots.json"), NULL);
    cr_expect_str_eq(got, "{}");
    free(got);
}
