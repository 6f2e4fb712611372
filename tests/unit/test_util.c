/*
 * test_util.c - unit tests for src/lib/util.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "util.h"

#define OK 0
#define BAD -1

static const struct {
    const char *s;
    long min, max;
    int ret;
    long want;
} long_cases[] = {
    {"0", 0, 10, OK, 0},
    {"7", 0, 10, OK, 7},
    {"10", 0, 10, OK, 10},
    {"11", 0, 10, BAD, 0},
    {"0", 1, 10, BAD, 0},
    {"007", 0, 10, OK, 7},
    {"-5", -10, 10, OK, -5},
    {"-0", -10, 10, OK, 0},
    {"-11", -10, 10, BAD, 0},
    {"-5", 0, 10, BAD, 0},        /* no sign unless negatives are allowed */
    {"", 0, 10, BAD, 0},
    {"-", -10, 10, BAD, 0},
    {"+5", 0, 10, BAD, 0},
    {" 5", 0, 10, BAD, 0},
    {"5 ", 0, 10, BAD, 0},
    {"5a", 0, 10, BAD, 0},
    {"0x10", 0, 100, BAD, 0},
    {"1.0", 0, 10, BAD, 0},
    {"--5", -10, 10, BAD, 0},
    {"9223372036854775807", 0, LONG_MAX, OK, LONG_MAX},
    {"9223372036854775808", 0, LONG_MAX, BAD, 0},
    {"99999999999999999999", 0, LONG_MAX, BAD, 0},
    {"999999999999999999999999999999", 0, LONG_MAX, BAD, 0},
    {"-9223372036854775807", LONG_MIN, LONG_MAX, OK, -LONG_MAX},
    {"-9223372036854775808", LONG_MIN, LONG_MAX, OK, LONG_MIN},
    {"-9223372036854775809", LONG_MIN, LONG_MAX, BAD, 0},
    {"-99999999999999999999", LONG_MIN, LONG_MAX, BAD, 0},
};

static void
test_parse_long(void **unused)
{
    for (size_t i = 0; i < ODMR_ARRAY_LEN(long_cases); i++) {
        long v = 12345;
        int ret = parse_long(long_cases[i].s, long_cases[i].min, long_cases[i].max, &v);

        if (ret != long_cases[i].ret || (ret == OK && v != long_cases[i].want))
            fail_msg("parse_long(\"%s\", %ld, %ld): ret %d value %ld, want ret %d value %ld",
                     long_cases[i].s, long_cases[i].min, long_cases[i].max, ret, v,
                     long_cases[i].ret, long_cases[i].want);
    }
}

static const struct {
    const char *s;
    char unit;
    long min, max;
    int ret;
    long want;
} time_cases[] = {
    {"10", 's', 0, LONG_MAX, OK, 10},
    {"10", 'm', 0, LONG_MAX, OK, 600},
    {"10", 'h', 0, LONG_MAX, OK, 36000},
    {"10", 'd', 0, LONG_MAX, OK, 864000},
    {"10", 'w', 0, LONG_MAX, OK, 6048000},
    {"10s", 'd', 0, LONG_MAX, OK, 10},
    {"10m", 's', 0, LONG_MAX, OK, 600},
    {"2h", 's', 0, LONG_MAX, OK, 7200},
    {"1d", 's', 0, LONG_MAX, OK, 86400},
    {"1w", 's', 0, LONG_MAX, OK, 604800},
    {"10M", 's', 0, LONG_MAX, OK, 600},
    {"3H", 's', 0, LONG_MAX, OK, 10800},
    {"0", 's', 0, LONG_MAX, OK, 0},
    {"0s", 's', 1, LONG_MAX, BAD, 0},
    {"60", 's', 0, 60, OK, 60},
    {"61", 's', 0, 60, BAD, 0},
    {"1m", 's', 0, 59, BAD, 0},
    {"10", 'x', 0, LONG_MAX, BAD, 0},   /* no unit and no usable default */
    {"", 's', 0, LONG_MAX, BAD, 0},
    {"s", 's', 0, LONG_MAX, BAD, 0},
    {"-1", 's', 0, LONG_MAX, BAD, 0},
    {"+1", 's', 0, LONG_MAX, BAD, 0},
    {"1.5h", 's', 0, LONG_MAX, BAD, 0},
    {"10ms", 's', 0, LONG_MAX, BAD, 0},
    {"10y", 's', 0, LONG_MAX, BAD, 0},
    {"10 s", 's', 0, LONG_MAX, BAD, 0},
    {" 10", 's', 0, LONG_MAX, BAD, 0},
    /* Overflow must fail cleanly, not wrap (UBSan watches this). */
    {"1125899906842624w", 's', 0, LONG_MAX, BAD, 0},
    {"1125899906842623w", 's', 0, LONG_MAX, BAD, 0},
    {"15250284452471w", 's', 0, LONG_MAX, OK, 15250284452471L * 604800},
    {"15250284452472w", 's', 0, LONG_MAX, BAD, 0},
    {"99999999999999999999", 's', 0, LONG_MAX, BAD, 0},
    {"9223372036854775807", 's', 0, LONG_MAX, BAD, 0}, /* above the 2^50 digit cap */
};

static void
test_parse_time(void **unused)
{
    for (size_t i = 0; i < ODMR_ARRAY_LEN(time_cases); i++) {
        long v = 12345;
        int ret = parse_time(time_cases[i].s, time_cases[i].unit, time_cases[i].min,
                             time_cases[i].max, &v);

        if (ret != time_cases[i].ret || (ret == OK && v != time_cases[i].want))
            fail_msg("parse_time(\"%s\", '%c'): ret %d value %ld, want ret %d value %ld",
                     time_cases[i].s, time_cases[i].unit, ret, v, time_cases[i].ret,
                     time_cases[i].want);
    }
}

static const struct {
    const char *s;
    long long min, max;
    int ret;
    long long want;
} size_cases[] = {
    {"0", 0, LLONG_MAX, OK, 0},
    {"1", 0, LLONG_MAX, OK, 1},
    {"1k", 0, LLONG_MAX, OK, 1024},
    {"1K", 0, LLONG_MAX, OK, 1024},
    {"10240000", 0, LLONG_MAX, OK, 10240000},
    {"3m", 0, LLONG_MAX, OK, 3LL << 20},
    {"3M", 0, LLONG_MAX, OK, 3LL << 20},
    {"2g", 0, LLONG_MAX, OK, 2LL << 30},
    {"1024", 0, 1024, OK, 1024},
    {"1025", 0, 1024, BAD, 0},
    {"1k", 0, 1023, BAD, 0},
    {"511", 512, LLONG_MAX, BAD, 0},
    {"1t", 0, LLONG_MAX, BAD, 0},
    {"10kb", 0, LLONG_MAX, BAD, 0},
    {"10x", 0, LLONG_MAX, BAD, 0},
    {"", 0, LLONG_MAX, BAD, 0},
    {"k", 0, LLONG_MAX, BAD, 0},
    {"-1", 0, LLONG_MAX, BAD, 0},
    {"1.5m", 0, LLONG_MAX, BAD, 0},
    {"1 k", 0, LLONG_MAX, BAD, 0},
    /* Shifts past 63 bits must fail, not wrap. */
    {"1125899906842624g", 0, LLONG_MAX, BAD, 0},
    {"8589934591g", 0, LLONG_MAX, OK, 8589934591LL << 30},
    {"8589934592g", 0, LLONG_MAX, BAD, 0},
    {"99999999999999999999", 0, LLONG_MAX, BAD, 0},
};

static void
test_parse_size(void **unused)
{
    for (size_t i = 0; i < ODMR_ARRAY_LEN(size_cases); i++) {
        long long v = 12345;
        int ret = parse_size(size_cases[i].s, size_cases[i].min, size_cases[i].max, &v);

        if (ret != size_cases[i].ret || (ret == OK && v != size_cases[i].want))
            fail_msg("parse_size(\"%s\"): ret %d value %lld, want ret %d value %lld",
                     size_cases[i].s, ret, v, size_cases[i].ret, size_cases[i].want);
    }
}

static void
test_parse_bool(void **unused)
{
    static const struct {
        const char *s;
        int ret, want;
    } cases[] = {
        {"yes", OK, 1}, {"YES", OK, 1}, {"Yes", OK, 1}, {"true", OK, 1}, {"TRUE", OK, 1},
        {"on", OK, 1}, {"1", OK, 1},
        {"no", OK, 0}, {"NO", OK, 0}, {"false", OK, 0}, {"off", OK, 0}, {"Off", OK, 0},
        {"0", OK, 0},
        {"", BAD, 0}, {"y", BAD, 0}, {"n", BAD, 0}, {"yes ", BAD, 0}, {" no", BAD, 0},
        {"2", BAD, 0}, {"yess", BAD, 0}, {"enable", BAD, 0}, {"00", BAD, 0},
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        int v = 7;
        int ret = parse_bool(cases[i].s, &v);

        if (ret != cases[i].ret || (ret == OK && v != cases[i].want))
            fail_msg("parse_bool(\"%s\"): ret %d value %d", cases[i].s, ret, v);
    }
}

static void
test_domain_valid(void **unused)
{
    static const struct {
        const char *s;
        int want;
    } cases[] = {
        {"example.org", 1},
        {"EXAMPLE.Org", 1},
        {"a.b", 1},
        {"mail.example.co.uk", 1},
        {"1.2", 1},                 /* the ABNF lets labels start with a digit */
        {"3com.example", 1},
        {"a-b.example", 1},
        {"a--b.example", 1},
        {"a", 0},                   /* one label */
        {"org", 0},
        {"", 0},
        {".", 0},
        {"-a.org", 0},
        {"a-.org", 0},
        {"a.-org", 0},
        {"a.org-", 0},
        {"a..org", 0},
        {".a.org", 0},
        {"a.org.", 0},              /* no trailing root dot */
        {"a_b.org", 0},
        {"a b.org", 0},
        {"[192.0.2.1]", 0},
        {"ex\xc3\xa4mple.org", 0},  /* raw UTF-8: not in the ABNF */
        {"a.org\n", 0},
        {"@a.org", 0},
    };
    char buf[400];

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++)
        if (domain_valid(cases[i].s) != cases[i].want)
            fail_msg("domain_valid(\"%s\") != %d", cases[i].s, cases[i].want);

    /* A label of 63 characters is the DNS limit; 64 is too long. */
    memset(buf, 'a', 63);
    str_copy(buf + 63, ".org", sizeof(buf) - 63);
    assert_int_equal(domain_valid(buf), 1);
    memset(buf, 'a', 64);
    str_copy(buf + 64, ".org", sizeof(buf) - 64);
    assert_int_equal(domain_valid(buf), 0);
    /* The same at the end of the name. */
    str_copy(buf, "org.", sizeof(buf));
    memset(buf + 4, 'b', 63);
    buf[67] = 0;
    assert_int_equal(domain_valid(buf), 1);
    buf[67] = 'b';
    buf[68] = 0;
    assert_int_equal(domain_valid(buf), 0);

    /* 255 bytes in total is allowed, 256 is not: 4 labels of 63 plus dots. */
    for (size_t i = 0; i < 256; i++)
        buf[i] = (i % 64 == 63) ? '.' : 'c';
    buf[255] = 0;                            /* "63.63.63.63": 255 bytes */
    assert_int_equal(strlen(buf), 255);
    assert_int_equal(domain_valid(buf), 1);
    buf[254] = '.';                          /* ends with a dot: bad anyway */
    assert_int_equal(domain_valid(buf), 0);
    buf[254] = 'c';
    buf[255] = 'c';                          /* "63.63.63.64" would be 256 */
    buf[256] = 0;
    assert_int_equal(domain_valid(buf), 0);
    buf[255] = 0;
    buf[191] = 'c';                          /* join two labels: 63.63.127 */
    assert_int_equal(domain_valid(buf), 0);
    /* 256 bytes made only of short labels: the length limit alone decides. */
    for (size_t i = 0; i < 256; i++)
        buf[i] = (i % 2) ? '.' : 'x';
    buf[255] = 0;                            /* "x.x. ... x": 255 bytes */
    assert_int_equal(domain_valid(buf), 1);
    buf[255] = '.';
    buf[256] = 'x';
    buf[257] = 0;                            /* 257 bytes */
    assert_int_equal(domain_valid(buf), 0);
}

static void
test_addr_domain(void **unused)
{
    static const struct {
        const char *addr;
        const char *want;
    } cases[] = {
        {"user@example.org", "example.org"},
        {"@example.org", "example.org"},
        {"\"a@b\"@example.org", "example.org"},
        {"a@b@c.example", "c.example"},
        {"user@", NULL},
        {"user", NULL},
        {"", NULL},
        {"@", NULL},
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        const char *got = addr_domain(cases[i].addr);

        if (cases[i].want == NULL)
            assert_null(got);
        else
            assert_string_equal(got, cases[i].want);
    }
}

static void
test_str_trim(void **unused)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"", ""},
        {"   ", ""},
        {"\t\r\n ", ""},
        {"abc", "abc"},
        {" abc", "abc"},
        {"abc ", "abc"},
        {"  a b  c \t", "a b  c"},
        {"\r\nline\r\n", "line"},
        {"\vx\v", "\vx\v"},          /* only space, tab, CR and LF are blanks */
        {"x", "x"},
    };
    char buf[64];

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        str_copy(buf, cases[i].in, sizeof(buf));
        assert_ptr_equal(str_trim(buf), buf);
        assert_string_equal(buf, cases[i].want);
    }
}

static void
test_str_copy_format(void **unused)
{
    char buf[8];

    /* Fits: the full length comes back. */
    memset(buf, 'Z', sizeof(buf));
    assert_int_equal(str_copy(buf, "abc", sizeof(buf)), 3);
    assert_string_equal(buf, "abc");
    /* Exactly size-1 bytes still fits. */
    assert_int_equal(str_copy(buf, "abcdefg", sizeof(buf)), 7);
    assert_string_equal(buf, "abcdefg");
    /* Cut: NUL-terminated, and the result >= size says so. */
    assert_int_equal(str_copy(buf, "abcdefgh", sizeof(buf)), 8);
    assert_string_equal(buf, "abcdefg");
    assert_int_equal(str_copy(buf, "abcdefghijklmnop", sizeof(buf)), 16);
    assert_string_equal(buf, "abcdefg");
    /* Size 1 holds only the NUL; size 0 writes nothing. */
    assert_int_equal(str_copy(buf, "xyz", 1), 3);
    assert_string_equal(buf, "");
    buf[0] = 'Q';
    assert_int_equal(str_copy(buf, "xyz", 0), 3);
    assert_int_equal(buf[0], 'Q');
    assert_int_equal(str_copy(buf, "", sizeof(buf)), 0);
    assert_string_equal(buf, "");

    assert_int_equal(str_format(buf, sizeof(buf), "%d-%s", 12, "ab"), 0);
    assert_string_equal(buf, "12-ab");
    assert_int_equal(str_format(buf, sizeof(buf), "%s", "1234567"), 0);
    assert_int_equal(str_format(buf, sizeof(buf), "%s", "12345678"), -1);
    assert_string_equal(buf, "1234567");
}

static void
test_case_helpers(void **unused)
{
    char buf[32];

    str_copy(buf, "MiXeD-Case.ORG \xc3\x84", sizeof(buf));
    assert_string_equal(str_lower(buf), "mixed-case.org \xc3\x84");
    assert_int_equal(str_casecmp("Example.ORG", "example.org"), 0);
    assert_true(str_casecmp("a", "B") < 0);
    assert_true(str_casecmp("b", "A") > 0);
    assert_true(str_casecmp("abc", "ab") > 0);
    assert_true(str_casecmp("", "a") < 0);
    assert_int_equal(str_ncasecmp("ATRN example", "atrn", 4), 0);
    assert_true(str_ncasecmp("ATR", "atrn", 4) < 0);
    assert_int_equal(str_ncasecmp("abc", "xyz", 0), 0);
    /* Bytes above 127 are compared as unsigned, not folded. */
    assert_true(str_casecmp("\xc3", "a") > 0);
}

static void
test_alloc_helpers(void **unused)
{
    char *p = x_strndup("abcdef", 3);
    char *q;

    assert_string_equal(p, "abc");
    x_free(&p);
    assert_null(p);
    x_free(&p);                     /* freeing NULL again is harmless */
    p = x_strndup("ab", 10);        /* shorter than the limit */
    assert_string_equal(p, "ab");
    x_free(&p);
    p = x_asprintf("%s=%d", "n", 42);
    assert_string_equal(p, "n=42");
    q = x_strdup(p);
    assert_string_equal(q, "n=42");
    assert_ptr_not_equal(p, q);
    x_free(&p);
    x_free(&q);
    p = x_calloc(4, 8);
    for (int i = 0; i < 32; i++)
        assert_int_equal(p[i], 0);
    p = x_realloc(p, 64);
    x_free(&p);
    p = x_malloc(0);                /* a usable pointer, never NULL */
    assert_non_null(p);
    x_free(&p);
}

static void
test_fsync_dir(void **unused)
{
    char dir[] = "/tmp/test_util.XXXXXX";
    char file[64];
    int fd;

    assert_non_null(mkdtemp(dir));
    assert_int_equal(fsync_dir(dir), 0);
    assert_int_equal(str_format(file, sizeof(file), "%s/f", dir), 0);
    fd = open(file, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    close(fd);
    errno = 0;
    assert_int_equal(fsync_dir(file), -1);
    assert_int_equal(errno, ENOTDIR);
    assert_int_equal(unlink(file), 0);
    errno = 0;
    assert_int_equal(fsync_dir(file), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(rmdir(dir), 0);
}

static void
test_write_all(void **unused)
{
    int fds[2];
    char big[100000], got[100000];
    size_t have = 0;
    pid_t pid;
    int status;

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char) ('a' + i % 26);
    /* More than a pipe buffer: write_all must loop over short writes. */
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        _exit(write_all(fds[1], big, sizeof(big)) == 0 ? 0 : 1);
    }
    close(fds[1]);
    while (have < sizeof(got)) {
        ssize_t n = read(fds[0], got + have, sizeof(got) - have);

        assert_true(n > 0);
        have += (size_t) n;
    }
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_memory_equal(got, big, sizeof(big));

    errno = 0;
    assert_int_equal(write_all(-1, "x", 1), -1);
    assert_int_equal(errno, EBADF);
    assert_int_equal(write_all(-1, "", 0), 0);
}

static void
test_clocks_and_fds(void **unused)
{
    int64_t a = now_ms(), b;
    long sec, usec;
    pid_t pid;
    int status;

    b = now_ms();
    assert_true(b >= a);
    now_wall(&sec, &usec);
    assert_true(sec > 1600000000L);
    assert_true(usec >= 0 && usec < 1000000);

    /* fds_sanitize reopens closed standard descriptors on /dev/null. */
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct stat st, null;

        close(0);
        close(2);
        fds_sanitize();
        if (fcntl(0, F_GETFD) < 0 || fcntl(2, F_GETFD) < 0)
            _exit(1);
        if (fstat(2, &st) < 0 || stat("/dev/null", &null) < 0 || st.st_rdev != null.st_rdev)
            _exit(2);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void
test_format_age(void **state)
{
    char buf[32];

    (void) state;
    format_age(-5, buf, sizeof(buf));
    assert_string_equal(buf, "0m00s");
    format_age(42, buf, sizeof(buf));
    assert_string_equal(buf, "0m42s");
    format_age(3599, buf, sizeof(buf));
    assert_string_equal(buf, "59m59s");
    format_age(7500, buf, sizeof(buf));
    assert_string_equal(buf, "2h05m");
    format_age(3 * 86400 + 4 * 3600 + 59, buf, sizeof(buf));
    assert_string_equal(buf, "3d04h");
}

static int
run_all(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_long),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_domain_valid),
        cmocka_unit_test(test_addr_domain),
        cmocka_unit_test(test_str_trim),
        cmocka_unit_test(test_str_copy_format),
        cmocka_unit_test(test_case_helpers),
        cmocka_unit_test(test_alloc_helpers),
        cmocka_unit_test(test_fsync_dir),
        cmocka_unit_test(test_write_all),
        cmocka_unit_test(test_clocks_and_fds),
        cmocka_unit_test(test_format_age),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

int
main(void)
{
    msg_init("test_util", MSG_STDERR);
    return run_all();
}
