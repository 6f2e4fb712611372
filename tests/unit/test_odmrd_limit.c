/*
 * test_odmrd_limit.c - unit tests for the state odmrd processes share
 * (src/odmrd/odmrd_limit.c): session slots per client address (held by
 * child processes, since a process never sees its own fcntl locks), failure
 * counters with their window, fail-open on a held lock, the server secret.
 *
 * The Makefile links src/odmrd/odmrd_limit.c into this test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "odmrd.h"
#include "util.h"

static char dir[] = "/tmp/test_odmrd_limit.XXXXXX";

static int
setup(void **state)
{
    return mkdtemp(dir) ? 0 : -1;
}

static int
teardown(void **state)
{
    char cmd[256];

    (void) snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A child that takes a session slot for addr, writes its result byte to
 * the parent and then waits to be killed. */
static pid_t
slot_holder(const char *addr, long limit, int *result_r)
{
    int p[2];
    pid_t pid;
    char c;

    assert_int_equal(pipe(p), 0);
    if ((pid = fork()) == 0) {
        int fd;
        long count;
        char *err = NULL;
        int r = odmrd_limit_session(dir, addr, limit, &fd, &count, &err);

        c = (char) ('0' + r + 1);
        if (write(p[1], &c, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    assert_true(pid > 0);
    (void) close(p[1]);
    assert_int_equal(read(p[0], &c, 1), 1);
    (void) close(p[0]);
    *result_r = c - '0' - 1;
    return pid;
}

static void
reap(pid_t pid)
{
    int status;

    (void) kill(pid, SIGKILL);
    (void) waitpid(pid, &status, 0);
}

static void
test_sessions(void **unused)
{
    pid_t held[3];
    int r, fd;
    long count;
    char *err = NULL;

    for (int i = 0; i < 3; i++) {
        held[i] = slot_holder("192.0.2.1", 3, &r);
        assert_int_equal(r, 0);
    }
    /* The fourth from the same address is refused; the count is right. */
    assert_int_equal(odmrd_limit_session(dir, "192.0.2.1", 3, &fd, &count, &err), 1);
    assert_int_equal(count, 3);
    assert_int_equal(fd, -1);
    /* A limit of 4 lets it in; its own slot does not count for itself. */
    assert_int_equal(odmrd_limit_session(dir, "192.0.2.1", 4, &fd, &count, &err), 0);
    assert_true(fd >= 0);
    assert_int_equal(count, 3);
    (void) close(fd);
    /* Another address is served. */
    assert_int_equal(odmrd_limit_session(dir, "192.0.2.2", 3, &fd, &count, &err), 0);
    assert_int_equal(count, 0);
    (void) close(fd);
    /* 0: no limit. */
    assert_int_equal(odmrd_limit_session(dir, "192.0.2.1", 0, &fd, &count, &err), 0);
    (void) close(fd);
    /* A crashed session frees its slot: nothing to clean up. */
    reap(held[0]);
    assert_int_equal(odmrd_limit_session(dir, "192.0.2.1", 3, &fd, &count, &err), 0);
    assert_int_equal(count, 2);
    (void) close(fd);
    reap(held[1]);
    reap(held[2]);
    assert_int_equal(odmrd_limit_session(dir, "192.0.2.1", 1, &fd, &count, &err), 0);
    assert_int_equal(count, 0);
    (void) close(fd);
}

/* A child that holds a write lock on the whole of dir/name until killed. */
static pid_t
file_locker(const char *name)
{
    int p[2];
    pid_t pid;
    char c;

    assert_int_equal(pipe(p), 0);
    if ((pid = fork()) == 0) {
        char path[512];
        struct flock fl;
        int fd;

        (void) snprintf(path, sizeof(path), "%s/%s", dir, name);
        fd = open(path, O_RDWR | O_CREAT, 0600);
        memset(&fl, 0, sizeof(fl));
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        if (fd < 0 || fcntl(fd, F_SETLKW, &fl) < 0)
            _exit(1);
        c = 'x';
        if (write(p[1], &c, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    (void) close(p[1]);
    assert_int_equal(read(p[0], &c, 1), 1);
    (void) close(p[0]);
    return pid;
}

/* A lock that is never released (a stopped process) costs at most
 * ODMRD_LIMIT_LOCK_MS and gives -1: the caller lets the session go on. */
static void
test_stuck_lock(void **unused)
{
    pid_t pid = file_locker("odmrd.sessions");
    int fd;
    long count;
    int64_t t0 = now_ms();
    char *err = NULL;

    assert_int_equal(odmrd_limit_session(dir, "192.0.2.9", 1, &fd, &count, &err), -1);
    assert_non_null(err);
    assert_non_null(strstr(err, "lock"));
    assert_true(now_ms() - t0 >= ODMRD_LIMIT_LOCK_MS - 50);
    assert_true(now_ms() - t0 < ODMRD_LIMIT_LOCK_MS + 2000);
    free(err);
    err = NULL;
    reap(pid);

    pid = file_locker("odmrd.failures");
    assert_int_equal(odmrd_limit_failures(dir, "192.0.2.9", NULL, ODMRD_FAIL_ADD, 600,
                                          time(NULL), &count, &err), -1);
    assert_non_null(err);
    free(err);
    err = NULL;
    reap(pid);
    assert_int_equal(odmrd_limit_failures(dir, "192.0.2.9", NULL, ODMRD_FAIL_ADD, 600,
                                          time(NULL), &count, &err), 0);
    assert_int_equal(count, 1);
}

static void
test_failures(void **unused)
{
    time_t t = 1700000000;
    long n;
    char *err = NULL;

    for (int i = 1; i <= 4; i++) {
        assert_int_equal(odmrd_limit_failures(dir, "198.51.100.1", "cust1", ODMRD_FAIL_ADD,
                                              60, t + i, &n, &err), 0);
        assert_int_equal(n, i);
    }
    assert_int_equal(odmrd_limit_failures(dir, "198.51.100.1", "cust1", ODMRD_FAIL_GET, 60,
                                          t + 10, &n, &err), 0);
    assert_int_equal(n, 4);
    /* Separate counters: the address alone, another user, another address. */
    assert_int_equal(odmrd_limit_failures(dir, "198.51.100.1", NULL, ODMRD_FAIL_GET, 60,
                                          t + 10, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(odmrd_limit_failures(dir, "198.51.100.1", "cust2", ODMRD_FAIL_GET, 60,
                                          t + 10, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(odmrd_limit_failures(dir, "198.51.100.2", "cust1", ODMRD_FAIL_GET, 60,
                                          t + 10, &n, &err), 0);
    assert_int_equal(n, 0);
    /* "cust1" at "198.51.100.1" is not "1" at "198.51.100.1cust" ... */
    assert_int_equal(odmrd_limit_failures(dir, "198.51.100.1c", "ust1", ODMRD_FAIL_GET, 60,
                                          t + 10, &n, &err), 0);
    assert_int_equal(n, 0);
    /* The window runs from the first failure (t + 1): gone at t + 61. */
    assert_int_equal(odmrd_limit_failures(dir, "198.51.100.1", "cust1", ODMRD_FAIL_GET, 60,
                                          t + 60, &n, &err), 0);
    assert_int_equal(n, 4);
    assert_int_equal(odmrd_limit_failures(dir, "198.51.100.1", "cust1", ODMRD_FAIL_GET, 60,
                                          t + 61, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(odmrd_limit_failures(dir, "198.51.100.1", "cust1", ODMRD_FAIL_ADD, 60,
                                          t + 61, &n, &err), 0);
    assert_int_equal(n, 1);
    /* CLEAR forgets it. */
    assert_int_equal(odmrd_limit_failures(dir, "198.51.100.1", "cust1", ODMRD_FAIL_CLEAR, 60,
                                          t + 62, &n, &err), 0);
    assert_int_equal(odmrd_limit_failures(dir, "198.51.100.1", "cust1", ODMRD_FAIL_GET, 60,
                                          t + 62, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_null(err);
}

/* Many keys: the table never loses a live counter to an expired one, and
 * a full neighbourhood gives up its oldest window, never fails. */
static void
test_failures_many(void **unused)
{
    time_t t = 1700000000;
    long n;
    char *err = NULL, addr[64];

    for (int i = 0; i < 3000; i++) {
        (void) snprintf(addr, sizeof(addr), "10.0.%d.%d", i / 256, i % 256);
        assert_int_equal(odmrd_limit_failures(dir, addr, NULL, ODMRD_FAIL_ADD, 600, t, &n,
                                              &err), 0);
    }
    assert_int_equal(odmrd_limit_failures(dir, "10.0.0.7", NULL, ODMRD_FAIL_ADD, 600, t, &n,
                                          &err), 0);
    assert_int_equal(n, 2);
}

static void
test_secret(void **unused)
{
    unsigned char k1[ODMRD_SECRET_LEN], k2[ODMRD_SECRET_LEN], zero[ODMRD_SECRET_LEN];
    char path[512], *err = NULL;
    struct stat st;
    int fd;

    memset(zero, 0, sizeof(zero));
    assert_int_equal(odmrd_limit_secret(dir, k1, &err), 0);
    assert_null(err);
    assert_memory_not_equal(k1, zero, sizeof(zero));
    (void) snprintf(path, sizeof(path), "%s/odmrd.secret", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, ODMRD_SECRET_LEN);
    assert_int_equal(odmrd_limit_secret(dir, k2, &err), 0);
    assert_memory_equal(k1, k2, sizeof(k1));
    /* A damaged secret is refused, not replaced. */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(odmrd_limit_secret(dir, k2, &err), -1);
    assert_non_null(err);
    free(err);
    err = NULL;
    assert_int_equal(chmod(path, 0600), 0);
    fd = open(path, O_WRONLY | O_APPEND);
    assert_int_equal(write(fd, "x", 1), 1);
    (void) close(fd);
    assert_int_equal(odmrd_limit_secret(dir, k2, &err), -1);
    free(err);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sessions),
        cmocka_unit_test(test_stuck_lock),
        cmocka_unit_test(test_failures),
        cmocka_unit_test(test_failures_many),
        cmocka_unit_test(test_secret),
    };

    msg_init("test_odmrd_limit", MSG_STDERR);
    return cmocka_run_group_tests(tests, setup, teardown);
}
