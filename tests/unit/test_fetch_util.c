/*
 * test_fetch_util.c - unit tests for odmr-fetch's helpers (fetch_util.c):
 * EHLO keywords that are not relayed, finding EHLO keywords, the SASL
 * mechanism choice (PLAIN/LOGIN only under TLS, EXTERNAL only with a
 * certificate), SHA-256 fingerprints, addresses, and the password file
 * rules (owner, mode, symlink, empty, long).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fetch.h"
#include "util.h"

static void
test_ehlo_drop(void **state)
{
    static const struct {
        const char *text;
        int drop;
    } t[] = {
        {"STARTTLS", 1},      {"starttls", 1},        {"CHUNKING", 1},
        {"BINARYMIME", 1},    {"AUTH PLAIN LOGIN", 1}, {"AUTH=PLAIN", 1},
        {"XCLIENT NAME ADDR", 1}, {"XFORWARD NAME", 1}, {"PIPELINING", 0},
        {"SIZE 10240000", 0}, {"8BITMIME", 0},        {"DSN", 0},
        {"STARTTLSX", 0},     {"", 0},                {"ENHANCEDSTATUSCODES", 0},
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++)
        assert_int_equal(fetch_ehlo_drop(t[i].text), t[i].drop);
}

static void
test_ehlo_has(void **state)
{
    const char *reply = "odmr.test\nPIPELINING\nSTARTTLS\nAUTH SCRAM-SHA-256 CRAM-MD5\nSIZE 1000";
    char *args = NULL;

    assert_int_equal(fetch_ehlo_has(reply, "STARTTLS", NULL), 1);
    assert_int_equal(fetch_ehlo_has(reply, "starttls", NULL), 1);
    assert_int_equal(fetch_ehlo_has(reply, "AUTH", &args), 1);
    assert_string_equal(args, "SCRAM-SHA-256 CRAM-MD5");
    x_free(&args);
    assert_int_equal(fetch_ehlo_has(reply, "SIZE", &args), 1);
    assert_string_equal(args, "1000");
    x_free(&args);
    assert_int_equal(fetch_ehlo_has(reply, "CHUNKING", &args), 0);
    assert_null(args);
    /* The greeting line is not a keyword. */
    assert_int_equal(fetch_ehlo_has("STARTTLS\nPIPELINING", "STARTTLS", NULL), 0);
    assert_int_equal(fetch_ehlo_has("host", "AUTH", NULL), 0);
    /* Old "AUTH=" form. */
    assert_int_equal(fetch_ehlo_has("h\nAUTH=CRAM-MD5", "AUTH", &args), 1);
    assert_string_equal(args, "CRAM-MD5");
    x_free(&args);
}

static void
test_choose_mech(void **state)
{
    const char *all = "EXTERNAL SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN";

    assert_string_equal(fetch_choose_mech(all, "PLAIN CRAM-MD5 SCRAM-SHA-256", 1, 0),
                        "SCRAM-SHA-256");
    assert_string_equal(fetch_choose_mech(all, "PLAIN LOGIN CRAM-MD5", 1, 0), "CRAM-MD5");
    /* PLAIN and LOGIN only inside TLS. */
    assert_string_equal(fetch_choose_mech(all, "PLAIN LOGIN", 1, 0), "PLAIN");
    assert_null(fetch_choose_mech(all, "PLAIN LOGIN", 0, 0));
    assert_string_equal(fetch_choose_mech("LOGIN", "plain login", 1, 0), "LOGIN");
    /* EXTERNAL only with a certificate, and only inside TLS. */
    assert_string_equal(fetch_choose_mech(all, "EXTERNAL CRAM-MD5", 1, 1), "EXTERNAL");
    assert_string_equal(fetch_choose_mech(all, "EXTERNAL CRAM-MD5", 1, 0), "CRAM-MD5");
    assert_string_equal(fetch_choose_mech(all, "EXTERNAL CRAM-MD5", 0, 1), "CRAM-MD5");
    /* Our order, not the server's; only what we allow. */
    assert_string_equal(fetch_choose_mech("CRAM-MD5,SCRAM-SHA-256", "SCRAM-SHA-256 CRAM-MD5", 0, 0),
                        "CRAM-MD5");
    assert_null(fetch_choose_mech("CRAM-MD5", "SCRAM-SHA-256", 1, 0));
    assert_null(fetch_choose_mech(all, "", 1, 1));
    assert_null(fetch_choose_mech(all, "DIGEST-MD5 GSSAPI", 1, 1));
    assert_null(fetch_choose_mech(all, NULL, 1, 1));
    /* A prefix is not a match. */
    assert_null(fetch_choose_mech(all, "CRAM-MD5X SCRAM-SHA-2", 1, 0));
}

static void
test_fingerprint(void **state)
{
    unsigned char fp[32];
    const char *colons = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:"
                         "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
    const char *plain = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

    assert_int_equal(fetch_fingerprint_parse(colons, fp), 0);
    assert_int_equal(fp[0], 0xab);
    assert_int_equal(fp[31], 0x89);
    assert_int_equal(fetch_fingerprint_parse(plain, fp), 0);
    assert_int_equal(fp[1], 0xcd);
    assert_int_equal(fetch_fingerprint_parse("abcd", fp), -1);             /* short */
    assert_int_equal(fetch_fingerprint_parse("", fp), -1);
    assert_int_equal(fetch_fingerprint_parse(NULL, fp), -1);
    {
        char longer[80];

        snprintf(longer, sizeof(longer), "%s00", plain);
        assert_int_equal(fetch_fingerprint_parse(longer, fp), -1);          /* long */
        snprintf(longer, sizeof(longer), "%s", plain);
        longer[10] = 'g';
        assert_int_equal(fetch_fingerprint_parse(longer, fp), -1);          /* not hex */
        snprintf(longer, sizeof(longer), "%s", plain);
        longer[63] = 0;
        assert_int_equal(fetch_fingerprint_parse(longer, fp), -1);          /* odd */
    }
    assert_int_equal(fetch_fingerprint_parse(":ab", fp), -1);
}

static void
test_parse_address(void **state)
{
    char *host, *port, *path, *error;

    assert_int_equal(fetch_parse_address("mx.example:2525", "25", &host, &port, &path, &error), 0);
    assert_string_equal(host, "mx.example");
    assert_string_equal(port, "2525");
    assert_null(path);
    x_free(&host);
    x_free(&port);
    assert_int_equal(fetch_parse_address("odmr.isp.example", "366", &host, &port, &path, &error), 0);
    assert_string_equal(port, "366");
    x_free(&host);
    x_free(&port);
    assert_int_equal(fetch_parse_address("[::1]:24", "25", &host, &port, &path, &error), 0);
    assert_string_equal(host, "::1");
    assert_string_equal(port, "24");
    x_free(&host);
    x_free(&port);
    assert_int_equal(fetch_parse_address("[::1]", "25", &host, &port, &path, &error), 0);
    assert_string_equal(port, "25");
    x_free(&host);
    x_free(&port);
    assert_int_equal(fetch_parse_address("unix:/run/lmtp", "24", &host, &port, &path, &error), 0);
    assert_null(host);
    assert_string_equal(path, "/run/lmtp");
    x_free(&path);
    assert_int_equal(fetch_parse_address("inet:127.0.0.1:25", "24", &host, &port, &path, &error), 0);
    assert_string_equal(host, "127.0.0.1");
    x_free(&host);
    x_free(&port);

    static const char *const bad[] = {"", "::1", "[::1", "[]:25", "host:", ":25", "unix:",
                                      "[::1]x"};
    for (size_t i = 0; i < ODMR_ARRAY_LEN(bad); i++) {
        assert_int_equal(fetch_parse_address(bad[i], "25", &host, &port, &path, &error), -1);
        assert_non_null(error);
        assert_null(host);
        assert_null(port);
        assert_null(path);
        x_free(&error);
    }
}

static char tmpdir[64];

static char *
write_file(const char *name, const char *content, mode_t mode)
{
    char *path = x_asprintf("%s/%s", tmpdir, name);
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void
test_password_file(void **state)
{
    char *pw = NULL, *error = NULL, *path;

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_fetch_util.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));

    path = write_file("ok", "s3cret-pass\nsecond line\n", 0600);
    assert_int_equal(fetch_password_file(path, &pw, &error), 0);
    assert_string_equal(pw, "s3cret-pass");
    assert_null(error);
    x_free(&pw);
    unlink(path);
    free(path);

    path = write_file("crlf", "pw\r\n", 0400);
    assert_int_equal(fetch_password_file(path, &pw, &error), 0);
    assert_string_equal(pw, "pw");
    x_free(&pw);
    unlink(path);
    free(path);

    path = write_file("nonl", "no-newline", 0600);
    assert_int_equal(fetch_password_file(path, &pw, &error), 0);
    assert_string_equal(pw, "no-newline");
    x_free(&pw);
    unlink(path);
    free(path);

    /* Modes that let anyone else read or write it. */
    static const mode_t bad_modes[] = {0640, 0604, 0620, 0602, 0644, 0660, 0610};
    for (size_t i = 0; i < ODMR_ARRAY_LEN(bad_modes); i++) {
        path = write_file("mode", "the-password\n", bad_modes[i]);
        assert_int_equal(fetch_password_file(path, &pw, &error), -1);
        assert_null(pw);
        assert_non_null(error);
        assert_non_null(strstr(error, "refused"));
        assert_null(strstr(error, "the-password"));
        x_free(&error);
        unlink(path);
        free(path);
    }

    /* Another owner (only testable as root). */
    if (geteuid() == 0) {
        path = write_file("owner", "pw\n", 0600);
        assert_int_equal(chown(path, 65534, (gid_t) -1), 0);
        assert_int_equal(fetch_password_file(path, &pw, &error), -1);
        assert_non_null(strstr(error, "uid 65534"));
        x_free(&error);
        unlink(path);
        free(path);
    }

    /* A symlink is not followed. */
    {
        char *target = write_file("target", "pw\n", 0600);
        char *link = x_asprintf("%s/link", tmpdir);

        assert_int_equal(symlink(target, link), 0);
        assert_int_equal(fetch_password_file(link, &pw, &error), -1);
        assert_non_null(error);
        x_free(&error);
        unlink(link);
        unlink(target);
        free(link);
        free(target);
    }

    /* Empty, an empty first line, missing, a directory, too long. */
    path = write_file("empty", "", 0600);
    assert_int_equal(fetch_password_file(path, &pw, &error), -1);
    x_free(&error);
    unlink(path);
    free(path);
    path = write_file("emptyline", "\nsecond\n", 0600);
    assert_int_equal(fetch_password_file(path, &pw, &error), -1);
    x_free(&error);
    unlink(path);
    free(path);
    assert_int_equal(fetch_password_file("/nonexistent/pw", &pw, &error), -1);
    x_free(&error);
    assert_int_equal(fetch_password_file(tmpdir, &pw, &error), -1);
    x_free(&error);
    {
        char *big = x_malloc(3000);

        memset(big, 'x', 2999);
        big[2999] = 0;
        path = write_file("long", big, 0600);
        assert_int_equal(fetch_password_file(path, &pw, &error), -1);
        assert_non_null(strstr(error, "longer"));
        x_free(&error);
        unlink(path);
        free(path);
        free(big);
    }
    rmdir(tmpdir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ehlo_drop),
        cmocka_unit_test(test_ehlo_has),
        cmocka_unit_test(test_choose_mech),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_parse_address),
        cmocka_unit_test(test_password_file),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
