/*
 * test_log.c - unit tests for src/lib/log.c: log_clean(), the shape of
 * log_file lines, stderr copies, and the exits of fatal and panic.
 *
 * Nothing here goes to syslog: every msg_init() leaves MSG_SYSLOG out.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <regex.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "util.h"

static char tmpdir[PATH_MAX];
static char logpath[PATH_MAX + 16];

static void
test_log_clean(void **unused)
{
    static const struct {
        const char *in;
        size_t len;
        size_t bufsize;
        const char *want;
    } cases[] = {
        {"hello", 5, LOG_CLEAN_BUFSIZE, "hello"},
        {"", 0, LOG_CLEAN_BUFSIZE, ""},
        {"a\r\nb\0c\x7f\xff~ ", 10, LOG_CLEAN_BUFSIZE, "a??b?c??~ "},
        {"\x1b[31mred", 8, LOG_CLEAN_BUFSIZE, "?[31mred"},
        {"tab\there", 8, LOG_CLEAN_BUFSIZE, "tab?here"},
        /* len, not the NUL, decides how much is read */
        {"abcdef", 3, LOG_CLEAN_BUFSIZE, "abc"},
        /* a small buffer cuts at bufsize - 4 and marks the cut */
        {"0123456789abcdefghij", 20, 10, "012345..."},
        {"012345", 6, 10, "012345"},
        {"0123456", 7, 10, "012345..."},
        {"abc", 3, 4, "..."},
        {"abc", 3, 3, ""},
        {"abc", 3, 1, ""},
        {"", 0, 1, ""},
    };
    char buf[LOG_CLEAN_BUFSIZE + 50];

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        memset(buf, 'Z', sizeof(buf));
        assert_ptr_equal(log_clean(buf, cases[i].bufsize, cases[i].in, cases[i].len), buf);
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, buf, cases[i].want);
        /* Nothing written past the buffer given. */
        assert_int_equal(buf[cases[i].bufsize], 'Z');
    }

    /* Size 0: nothing written at all. */
    buf[0] = 'Q';
    log_clean(buf, 0, "abc", 3);
    assert_int_equal(buf[0], 'Q');
}

static void
test_log_clean_cut(void **unused)
{
    char in[300], buf[LOG_CLEAN_BUFSIZE], big[400], want[LOG_CLEAN_BUFSIZE];

    memset(in, 'x', sizeof(in));
    /* Exactly 100 bytes: kept whole. */
    log_clean(buf, sizeof(buf), in, LOG_CLEAN_MAX);
    assert_int_equal(strlen(buf), LOG_CLEAN_MAX);
    assert_null(strchr(buf, '.'));
    /* 101 bytes: 100 and "...". */
    log_clean(buf, sizeof(buf), in, LOG_CLEAN_MAX + 1);
    memset(want, 'x', LOG_CLEAN_MAX);
    str_copy(want + LOG_CLEAN_MAX, "...", sizeof(want) - LOG_CLEAN_MAX);
    assert_string_equal(buf, want);
    /* A bigger buffer does not raise the 100-byte cut. */
    log_clean(big, sizeof(big), in, sizeof(in));
    assert_string_equal(big, want);
}

/* Read the whole log file; returns its length. */
static size_t
read_log(char *buf, size_t size)
{
    int fd = open(logpath, O_RDONLY);
    size_t len = 0;
    ssize_t n;

    if (fd < 0) {
        buf[0] = 0;
        return 0;
    }
    while (len < size - 1 && (n = read(fd, buf + len, size - 1 - len)) > 0)
        len += (size_t) n;
    close(fd);
    buf[len] = 0;
    return len;
}

/* Match 'line' against a regex built from 'fmt' (anchored at both ends). */
static void
assert_line_matches(const char *line, const char *pattern)
{
    regex_t re;
    int ret;

    assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    ret = regexec(&re, line, 0, NULL, 0);
    regfree(&re);
    if (ret != 0)
        fail_msg("log line \"%s\" does not match /%s/", line, pattern);
}

static void
short_hostname(char *host, size_t size)
{
    char *dot;

    assert_int_equal(gethostname(host, size), 0);
    host[size - 1] = 0;
    dot = strchr(host, '.');
    if (dot)
        *dot = 0;
}

static void
test_logfile_shape(void **unused)
{
    char buf[8192], host[256], pattern[1024];
    char *line, *save = NULL;
    int n = 0;

    (void) unlink(logpath);
    msg_init("/usr/lib/postfix-odmr/odmr-store", 0);
    assert_string_equal(msg_program(), "odmr-store");
    msg_set_logfile(logpath);
    errno = ENOSPC;
    msg_warn("disk full on %s", "/var");
    /* A log call leaves errno alone, so callers can log then use it. */
    assert_int_equal(errno, ENOSPC);
    msg_info("two\nlines\rjoined");
    msg_set_syslog_name("postfix-test");
    msg_info("renamed");
    msg_set_syslog_name("postfix");
    msg_debug("not shown");
    msg_verbose = 1;
    msg_debug("shown %d", 1);
    msg_verbose = 0;

    read_log(buf, sizeof(buf));
    short_hostname(host, sizeof(host));
    for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        static const struct {
            const char *tag, *text;
        } want[] = {
            {"postfix/odmr-store", "warning: disk full on /var"},
            {"postfix/odmr-store", "two lines joined"},
            {"postfix-test/odmr-store", "renamed"},
            {"postfix/odmr-store", "shown 1"},
        };
        char tail[256];

        assert_true((size_t) n < ODMR_ARRAY_LEN(want));
        assert_int_equal(str_format(tail, sizeof(tail), "%s\\[%ld\\]: %s", want[n].tag,
                                    (long) getpid(), want[n].text), 0);
        /* "Mon DD HH:MM:SS host tag[pid]: text", the day space-padded as in syslog. */
        assert_int_equal(str_format(pattern, sizeof(pattern),
                                    "^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                                    "[ 123][0-9] [012][0-9]:[0-5][0-9]:[0-6][0-9] %s %s$",
                                    host, tail), 0);
        assert_line_matches(line, pattern);
        n++;
    }
    assert_int_equal(n, 4);

    /* An empty name turns the file off. */
    msg_set_logfile("");
    msg_warn("nowhere");
    assert_int_equal(read_log(buf, sizeof(buf)) > 0, 1);
    assert_null(strstr(buf, "nowhere"));
    assert_int_equal(unlink(logpath), 0);
    msg_set_logfile(NULL);
    msg_warn("nowhere either");
    assert_int_equal(access(logpath, F_OK), -1);
}

struct child_result {
    int exited, status, signal;
    char err[4096];
};

static void (*child_fn)(void);

/* Run child_fn in a child with stderr into a pipe. */
static void
run_child(void (*fn)(void), struct child_result *res)
{
    int fds[2], status;
    pid_t pid;
    size_t len = 0;
    ssize_t n;

    child_fn = fn;
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (dup2(fds[1], 2) < 0)
            _exit(99);
        /* msg_panic aborts on purpose: no core file for that. */
        {
            struct rlimit rl = {0, 0};

            (void) setrlimit(RLIMIT_CORE, &rl);
        }
        msg_init("test_log", MSG_STDERR);
        msg_set_logfile(logpath);
        child_fn();
        _exit(0);
    }
    close(fds[1]);
    while ((n = read(fds[0], res->err + len, sizeof(res->err) - 1 - len)) > 0)
        len += (size_t) n;
    res->err[len] = 0;
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    res->exited = WIFEXITED(status);
    res->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    res->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void
cleanup_marker(void)
{
    (void) write_all(2, "cleanup ran\n", 12);
}

static void
child_fatal(void)
{
    msg_set_cleanup(cleanup_marker);
    msg_warn("about to fail");
    msg_fatal("open %s: %s", "/x/odmr.cf", "Permission denied");
}

static void
child_fatal_status(void)
{
    msg_fatal_status(EX_USAGE, "usage: odmr-queue [-c dir] command");
}

static void
child_panic(void)
{
    msg_panic("queue: record type %d", 9);
}

static void
child_bad_facility(void)
{
    msg_set_facility("local9");
    msg_set_facility("LOCAL2");
}

static void
test_fatal_and_panic(void **unused)
{
    struct child_result res;
    char buf[8192], host[256], pattern[512];

    (void) unlink(logpath);
    run_child(child_fatal, &res);
    assert_true(res.exited);
    assert_int_equal(res.status, EX_TEMPFAIL);
    assert_int_equal(res.status, 75);
    assert_string_equal(res.err, "test_log: warning: about to fail\n"
                        "test_log: fatal: open /x/odmr.cf: Permission denied\n"
                        "cleanup ran\n");
    /* The same fatal line in the log file, in Postfix's shape. */
    read_log(buf, sizeof(buf));
    short_hostname(host, sizeof(host));
    assert_int_equal(str_format(pattern, sizeof(pattern),
                                "\n[A-Z][a-z]{2} [ 123][0-9] [0-9:]{8} %s postfix/test_log"
                                "\\[[0-9]+\\]: fatal: open /x/odmr.cf: Permission denied\n$",
                                host), 0);
    {
        regex_t re;

        assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
        assert_int_equal(regexec(&re, buf, 0, NULL, 0), 0);
        regfree(&re);
    }

    run_child(child_fatal_status, &res);
    assert_true(res.exited);
    assert_int_equal(res.status, EX_USAGE);
    assert_string_equal(res.err, "test_log: fatal: usage: odmr-queue [-c dir] command\n");

    run_child(child_panic, &res);
    assert_false(res.exited);
    assert_int_equal(res.signal, SIGABRT);
    assert_non_null(strstr(res.err, "test_log: panic: queue: record type 9\n"));
    assert_ptr_equal(strstr(res.err, "test_log: panic:"), res.err);

    run_child(child_bad_facility, &res);
    assert_true(res.exited);
    assert_int_equal(res.status, 0);
    assert_string_equal(res.err,
                        "test_log: warning: unknown syslog facility \"local9\": using mail\n");
    (void) unlink(logpath);
}

static void
child_long_line(void)
{
    char big[5000];

    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    msg_warn("%s", big);
}

static void
test_long_message(void **unused)
{
    struct child_result res;
    char buf[8192];
    size_t len;

    /* An over-long message is cut, never overruns, and keeps its newline. */
    (void) unlink(logpath);
    run_child(child_long_line, &res);
    assert_true(res.exited);
    assert_int_equal(res.status, 0);
    len = strlen(res.err);
    assert_true(len > 2000 && len < 4096);
    assert_int_equal(res.err[len - 1], '\n');
    len = read_log(buf, sizeof(buf));
    assert_true(len > 2000 && len < 4096);
    assert_int_equal(buf[len - 1], '\n');
    assert_ptr_equal(strchr(buf, '\n'), buf + len - 1);
    assert_int_equal(unlink(logpath), 0);
}

static int
setup(void **unused)
{
    str_copy(tmpdir, "/tmp/test_log.XXXXXX", sizeof(tmpdir));
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    return str_format(logpath, sizeof(logpath), "%s/maillog", tmpdir);
}

static int
teardown(void **unused)
{
    (void) unlink(logpath);
    return rmdir(tmpdir);
}

static int
run_all(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_clean),
        cmocka_unit_test(test_log_clean_cut),
        cmocka_unit_test(test_logfile_shape),
        cmocka_unit_test(test_fatal_and_panic),
        cmocka_unit_test(test_long_message),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}

int
main(void)
{
    msg_init("test_log", MSG_STDERR);
    return run_all();
}
