/*
 * test_config.c - unit tests for src/lib/config.c.
 *
 * Good configurations are loaded in this process. Bad ones are loaded in a
 * forked child with MSG_STDERR, because msg_fatal exits: the parent checks
 * the exit status (75) and the text of the fatal message.
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
#include <sysexits.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "util.h"

static char tmpdir[PATH_MAX];

/* Write DIR/odmr.cf (or remove it when text is NULL). */
static void
write_cf(const char *text)
{
    char path[PATH_MAX + 16];
    FILE *fp;

    assert_int_equal(str_format(path, sizeof(path), "%s/odmr.cf", tmpdir), 0);
    if (text == NULL) {
        (void) unlink(path);
        return;
    }
    fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

/* A fresh load from tmpdir with the given -o overrides (NULL-terminated). */
static void
load(const char *cf, const char *const *ovr)
{
    write_cf(cf);
    config_reset();
    config_set_directory(tmpdir);
    for (; ovr && *ovr; ovr++)
        config_add_override(*ovr);
    config_load();
}

struct child_result {
    int status;       /* exit code, or -1 when killed by a signal */
    char out[8192];   /* what the child wrote to stderr */
};

/*
 * Load DIR/odmr.cf as it is in a child; stderr comes back through a pipe.
 * The child must not use cmocka assertions: it only loads and exits. With
 * drop_privileges, a root child becomes nobody first (root reads anything).
 */
static void
run_child(const char *const *ovr, int drop_privileges, struct child_result *res)
{
    int fds[2];
    pid_t pid;
    size_t len = 0;
    ssize_t n;
    int status;

    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (dup2(fds[1], 2) < 0)
            _exit(99);
        if (drop_privileges && geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
            _exit(98);
        msg_init("test_config", MSG_STDERR);
        config_reset();
        config_set_directory(tmpdir);
        for (; ovr && *ovr; ovr++)
            config_add_override(*ovr);
        config_load();
        _exit(0);
    }
    close(fds[1]);
    while ((n = read(fds[0], res->out + len, sizeof(res->out) - 1 - len)) > 0)
        len += (size_t) n;
    res->out[len] = 0;
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    res->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void
load_in_child(const char *cf, const char *const *ovr, struct child_result *res)
{
    write_cf(cf);
    run_child(ovr, 0, res);
}

/* Expect a fatal exit whose message is exactly "test_config: fatal: <want>". */
static void
expect_fatal(const char *cf, const char *const *ovr, const char *want)
{
    struct child_result res;
    char line[4096];

    load_in_child(cf, ovr, &res);
    assert_int_equal(str_format(line, sizeof(line), "test_config: fatal: %s\n", want), 0);
    assert_string_equal(res.out, line);
    assert_int_equal(res.status, EX_TEMPFAIL);
}

static char *
cf_path(void)
{
    static char path[PATH_MAX + 16];

    assert_int_equal(str_format(path, sizeof(path), "%s/odmr.cf", tmpdir), 0);
    return path;
}

static void
test_defaults(void **unused)
{
    char want[PATH_MAX + 64], host[256];

    load(NULL, NULL);
    assert_string_equal(config_file_path(), cf_path());
    assert_string_equal(var_config_dir, tmpdir);
    assert_string_equal(var_queue_dir, "/var/spool/postfix-odmr");
    assert_int_equal(str_format(want, sizeof(want), "hash:%s/odmr_domains", tmpdir), 0);
    assert_string_equal(var_domain_maps, want);
    assert_int_equal(str_format(want, sizeof(want), "hash:%s/odmr_passwd", tmpdir), 0);
    assert_string_equal(var_auth_maps, want);
    assert_string_equal(var_user_domain_maps, "");
    assert_string_equal(var_tls_cert_user_maps, "");
    assert_string_equal(var_postmap_path, "/usr/sbin/postmap");
    assert_string_equal(var_sendmail_path, "/usr/sbin/sendmail");
    assert_string_equal(var_postfix_config_dir, tmpdir);
    assert_string_equal(var_syslog_name, "postfix");
    assert_string_equal(var_syslog_facility, "mail");
    assert_string_equal(var_log_file, "");

    assert_int_equal(gethostname(host, sizeof(host)), 0);
    assert_string_equal(var_myhostname, host);
    assert_int_equal(str_format(want, sizeof(want), "%s ESMTP on-demand mail relay", host), 0);
    assert_string_equal(var_odmr_banner, want);
    assert_int_equal(str_format(want, sizeof(want), "%s LMTP odmr-store", host), 0);
    assert_string_equal(var_lmtp_banner, want);

    assert_int_equal(var_message_size_limit, 10240000);
    assert_int_equal(var_line_length_limit, 2048);
    assert_int_equal(var_recipient_limit, 1000);
    assert_int_equal(var_atrn_domain_limit, 100);
    assert_int_equal(var_auth_failure_limit, 3);
    assert_int_equal(var_auth_response_limit, 12288);
    assert_int_equal(var_flush_message_limit, 0);
    assert_int_equal(var_error_limit, 20);
    assert_int_equal(var_command_timeout, 300);
    assert_int_equal(var_session_timeout, 3600);
    assert_int_equal(var_lock_timeout, 10);
    assert_int_equal(var_auth_failure_delay, 1);
    assert_int_equal(var_smtp_helo_timeout, 300);
    assert_int_equal(var_smtp_mail_timeout, 300);
    assert_int_equal(var_smtp_rcpt_timeout, 300);
    assert_int_equal(var_smtp_data_init_timeout, 120);
    assert_int_equal(var_smtp_data_xfer_timeout, 180);
    assert_int_equal(var_smtp_data_done_timeout, 600);
    assert_int_equal(var_smtp_quit_timeout, 300);
    assert_int_equal(var_maximal_queue_lifetime, 5 * 86400);
    assert_int_equal(var_delay_warning_time, 0);
    assert_int_equal(var_bounce_size_limit, 50000);
    assert_int_equal(var_index_sync, 1);
    assert_int_equal(var_smtputf8_enable, 1);
    assert_string_equal(var_sasl_mechanisms, "CRAM-MD5 SCRAM-SHA-256 PLAIN LOGIN EXTERNAL");
    assert_string_equal(var_tls_security_level, "may");
    assert_string_equal(var_tls_cert_file, "/etc/ssl/certs/ssl-cert-snakeoil.pem");
    assert_string_equal(var_tls_key_file, "/etc/ssl/private/ssl-cert-snakeoil.key");
    assert_int_equal(var_odmrd_client_connection_count_limit, 10);
    assert_int_equal(var_odmrd_pre_auth_timeout, 60);
    assert_int_equal(var_odmrd_client_auth_failure_limit, 20);
    assert_int_equal(var_odmrd_client_user_auth_failure_limit, 5);
    assert_int_equal(var_odmrd_auth_failure_window, 600);
    assert_int_equal(var_odmrd_atrn_command_limit, 10);
    assert_string_equal(var_tls_CAfile, "");
    assert_string_equal(var_smtp_tls_security_level, "none");
    assert_string_equal(var_reversed_tls_policy_maps, "");
    assert_int_equal(var_smtp_starttls_timeout, 30);
    assert_string_equal(var_test_fault_point, "");

    assert_string_equal(config_get("message_size_limit"), "10240000");
    assert_string_equal(config_get("maximal_queue_lifetime"), "5d");
    assert_string_equal(config_get("domain_maps"), var_domain_maps);
    assert_null(config_get("no_such_parameter"));
}

static void
test_directory_choice(void **unused)
{
    char want[PATH_MAX + 16];

    config_reset();
    assert_int_equal(unsetenv("MAIL_CONFIG"), 0);
    assert_string_equal(config_file_path(), "/etc/postfix/odmr.cf");

    assert_int_equal(setenv("MAIL_CONFIG", "/nonexistent/env", 1), 0);
    assert_string_equal(config_file_path(), "/nonexistent/env/odmr.cf");
    /* An empty MAIL_CONFIG is no choice at all. */
    assert_int_equal(setenv("MAIL_CONFIG", "", 1), 0);
    assert_string_equal(config_file_path(), "/etc/postfix/odmr.cf");

    /* -c beats the environment. */
    assert_int_equal(setenv("MAIL_CONFIG", "/nonexistent/env", 1), 0);
    config_set_directory(tmpdir);
    assert_string_equal(config_file_path(), cf_path());
    config_set_directory(NULL);
    assert_string_equal(config_file_path(), "/nonexistent/env/odmr.cf");

    /* A missing directory is a missing file: all defaults. */
    config_load();
    assert_string_equal(var_config_dir, "/nonexistent/env");
    assert_string_equal(var_domain_maps, "hash:/nonexistent/env/odmr_domains");

    /* The environment is used when -c is not given. */
    write_cf("queue_directory = /from/env\n");
    assert_int_equal(setenv("MAIL_CONFIG", tmpdir, 1), 0);
    config_load();
    assert_string_equal(var_queue_dir, "/from/env");
    assert_int_equal(str_format(want, sizeof(want), "%s/odmr.cf", tmpdir), 0);
    assert_string_equal(config_file_path(), want);
    assert_int_equal(unsetenv("MAIL_CONFIG"), 0);
}

static void
test_file_syntax(void **unused)
{
    load("# a comment\n"
         "\n"
         "queue_directory=/q1\n"
         "   # indented comment\n"
         "sasl_mechanisms = CRAM-MD5\n"
         "    PLAIN\n"
         "\n"
         "  # a comment inside a continued setting\n"
         "\tLOGIN   \n"
         "odmr_banner =   hello  world  \n"
         "tls_CAfile =\n"
         "postmap_path = /bin/a=b\n"
         "queue_directory = /q2\r\n"
         "log_file = \n",
         NULL);
    assert_string_equal(var_queue_dir, "/q2");
    assert_string_equal(var_sasl_mechanisms, "CRAM-MD5 PLAIN LOGIN");
    assert_string_equal(var_odmr_banner, "hello  world");
    assert_string_equal(var_tls_CAfile, "");
    assert_string_equal(var_postmap_path, "/bin/a=b");
    assert_string_equal(var_log_file, "");
    /* Untouched ones keep their defaults. */
    assert_int_equal(var_message_size_limit, 10240000);

    /* An empty file is all defaults too. */
    load("", NULL);
    assert_string_equal(var_queue_dir, "/var/spool/postfix-odmr");
}

static void
test_override_precedence(void **unused)
{
    static const char *const ovr[] = {
        "queue_directory=/from/o1",
        "message_size_limit = 5k",
        "queue_directory=/from/o2",
        "odmr_banner=",
        NULL,
    };

    load("queue_directory = /from/file\n"
         "message_size_limit = 1m\n"
         "recipient_limit = 7\n"
         "odmr_banner = from file\n",
         ovr);
    assert_string_equal(var_queue_dir, "/from/o2");
    assert_int_equal(var_message_size_limit, 5120);
    assert_int_equal(var_recipient_limit, 7);
    assert_string_equal(var_odmr_banner, "");

    /* Overrides survive a second config_load (only config_reset drops them). */
    config_load();
    assert_string_equal(var_queue_dir, "/from/o2");
    config_reset();
    config_set_directory(tmpdir);
    config_load();
    assert_string_equal(var_queue_dir, "/from/file");
}

/* Good values of every type: name, text, the number it must give. */
static const struct {
    const char *name;
    const char *text;
    long want;
} good_numbers[] = {
    {"message_size_limit", "0", 0},
    {"message_size_limit", "10k", 10240},
    {"message_size_limit", "10K", 10240},
    {"message_size_limit", "3m", 3L << 20},
    {"message_size_limit", "2g", 2L << 30},
    {"message_size_limit", "123456789", 123456789},
    {"line_length_limit", "512", 512},
    {"line_length_limit", "1048576", 1048576},
    {"recipient_limit", "1", 1},
    {"flush_message_limit", "0", 0},
    {"auth_response_limit", "12k", 12288},
    {"command_timeout", "1", 1},
    {"command_timeout", "45s", 45},
    {"command_timeout", "5m", 300},
    {"command_timeout", "1h", 3600},
    {"session_timeout", "2h", 7200},
    {"session_timeout", "1d", 86400},
    {"session_timeout", "1w", 604800},
    {"auth_failure_delay", "0", 0},
    {"smtp_quit_timeout", "10S", 10},
    {"maximal_queue_lifetime", "5", 5 * 86400},
    {"maximal_queue_lifetime", "36h", 36 * 3600},
    {"delay_warning_time", "4", 4 * 3600},
    {"delay_warning_time", "0", 0},
    {"index_sync", "no", 0},
    {"index_sync", "off", 0},
    {"index_sync", "false", 0},
    {"index_sync", "0", 0},
    {"smtputf8_enable", "YES", 1},
    {"smtputf8_enable", "true", 1},
    {"smtputf8_enable", "on", 1},
    {"smtputf8_enable", "1", 1},
};

static long
number_of(const char *name)
{
    static const struct {
        const char *name;
        long *lv;
        int *iv;
    } vars[] = {
        {"message_size_limit", &var_message_size_limit, NULL},
        {"line_length_limit", &var_line_length_limit, NULL},
        {"recipient_limit", &var_recipient_limit, NULL},
        {"flush_message_limit", &var_flush_message_limit, NULL},
        {"auth_response_limit", &var_auth_response_limit, NULL},
        {"command_timeout", &var_command_timeout, NULL},
        {"session_timeout", &var_session_timeout, NULL},
        {"auth_failure_delay", &var_auth_failure_delay, NULL},
        {"smtp_quit_timeout", &var_smtp_quit_timeout, NULL},
        {"maximal_queue_lifetime", &var_maximal_queue_lifetime, NULL},
        {"delay_warning_time", &var_delay_warning_time, NULL},
        {"index_sync", NULL, &var_index_sync},
        {"smtputf8_enable", NULL, &var_smtputf8_enable},
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(vars); i++)
        if (strcmp(vars[i].name, name) == 0)
            return vars[i].lv ? *vars[i].lv : *vars[i].iv;
    fail_msg("no variable for %s in the test table", name);
    return -1;
}

static void
test_good_values(void **unused)
{
    char cf[256], ovr[256];
    const char *ovrv[] = {ovr, NULL};

    for (size_t i = 0; i < ODMR_ARRAY_LEN(good_numbers); i++) {
        /* From the file... */
        assert_int_equal(str_format(cf, sizeof(cf), "%s = %s\n", good_numbers[i].name,
                                    good_numbers[i].text), 0);
        load(cf, NULL);
        if (number_of(good_numbers[i].name) != good_numbers[i].want)
            fail_msg("%s = %s: got %ld, want %ld", good_numbers[i].name,
                     good_numbers[i].text, number_of(good_numbers[i].name),
                     good_numbers[i].want);
        assert_string_equal(config_get(good_numbers[i].name), good_numbers[i].text);
        /* ...and from -o. */
        assert_int_equal(str_format(ovr, sizeof(ovr), "%s=%s", good_numbers[i].name,
                                    good_numbers[i].text), 0);
        load(NULL, ovrv);
        assert_int_equal(number_of(good_numbers[i].name), good_numbers[i].want);
    }

    /* Enumerations take any case and are stored in lower case. */
    load("tls_security_level = ENCRYPT\n"
         "tls_cert_file = /c.pem\n"
         "smtp_tls_security_level = May\n"
         "syslog_facility = LOCAL3\n",
         NULL);
    assert_string_equal(var_tls_security_level, "encrypt");
    assert_string_equal(var_smtp_tls_security_level, "may");
    assert_string_equal(var_syslog_facility, "local3");
    assert_string_equal(config_get("tls_security_level"), "encrypt");
}

/* Bad values: the setting, and the message after "FILE, line 2: ". */
static const struct {
    const char *setting;
    const char *msg;
} bad_values[] = {
    {"message_size_limit = 10x", "parameter message_size_limit: bad size value \"10x\" "
     "(expected a number with optional k, m or g)"},
    {"message_size_limit = -1", "parameter message_size_limit: bad size value \"-1\" "
     "(expected a number with optional k, m or g)"},
    {"message_size_limit = 10kb", "parameter message_size_limit: bad size value \"10kb\" "
     "(expected a number with optional k, m or g)"},
    {"message_size_limit = 99999999999999999999", "parameter message_size_limit: bad size "
     "value \"99999999999999999999\" (expected a number with optional k, m or g)"},
    {"auth_response_limit = 100", "parameter auth_response_limit: value \"100\" out of "
     "range (512..1048576 bytes)"},
    {"line_length_limit = 511", "parameter line_length_limit: value 511 out of range "
     "(512..1048576)"},
    {"line_length_limit = abc", "parameter line_length_limit: bad numerical value \"abc\" "
     "(expected an integer)"},
    {"line_length_limit = 1024.5", "parameter line_length_limit: bad numerical value "
     "\"1024.5\" (expected an integer)"},
    {"line_length_limit =", "parameter line_length_limit: bad numerical value \"\" "
     "(expected an integer)"},
    {"recipient_limit = 0", "parameter recipient_limit: value 0 out of range "
     "(1..2147483647)"},
    {"recipient_limit = -5", "parameter recipient_limit: value -5 out of range "
     "(1..2147483647)"},
    {"command_timeout = 5x", "parameter command_timeout: bad time value \"5x\" (expected a "
     "number with optional s, m, h, d or w; default unit s)"},
    {"command_timeout = 1.5h", "parameter command_timeout: bad time value \"1.5h\" "
     "(expected a number with optional s, m, h, d or w; default unit s)"},
    {"command_timeout = 2d", "parameter command_timeout: value \"2d\" out of range "
     "(1..86400 seconds)"},
    {"smtp_helo_timeout = 0", "parameter smtp_helo_timeout: value \"0\" out of range "
     "(1..86400 seconds)"},
    {"smtp_data_done_timeout = 0s", "parameter smtp_data_done_timeout: value \"0s\" out of "
     "range (1..86400 seconds)"},
    {"maximal_queue_lifetime = x", "parameter maximal_queue_lifetime: bad time value \"x\" "
     "(expected a number with optional s, m, h, d or w; default unit d)"},
    {"index_sync = maybe", "parameter index_sync: bad boolean value \"maybe\" (expected "
     "yes or no)"},
    {"smtputf8_enable =", "parameter smtputf8_enable: bad boolean value \"\" (expected "
     "yes or no)"},
    {"tls_security_level = always", "parameter tls_security_level: bad value \"always\" "
     "(expected none | may | encrypt)"},
    {"smtp_tls_security_level = dane", "parameter smtp_tls_security_level: bad value "
     "\"dane\" (expected none | may | encrypt)"},
    {"syslog_facility = local9", "parameter syslog_facility: bad value \"local9\" (expected "
     "mail | daemon | user | local0 | local1 | local2 | local3 | local4 | local5 | local6 "
     "| local7)"},
    {"foo = 1", "unknown parameter \"foo\""},
    {"Queue_Directory = /x", "unknown parameter \"Queue_Directory\""},
    {"queue_directory /x", "missing '=' after \"queue_directory /x\""},
    {"= /x", "missing parameter name before '='"},
    {"config_directory = /x", "parameter config_directory: cannot be set here; use -c or "
     "MAIL_CONFIG"},
};

static void
test_bad_values(void **unused)
{
    char cf[512], want[1024], ovr[512];
    const char *ovrv[] = {ovr, NULL};

    for (size_t i = 0; i < ODMR_ARRAY_LEN(bad_values); i++) {
        const char *eq = strchr(bad_values[i].setting, '=');

        /* Line 2, after a good line, so the line number is really counted. */
        assert_int_equal(str_format(cf, sizeof(cf), "queue_directory = /q\n%s\n",
                                    bad_values[i].setting), 0);
        assert_int_equal(str_format(want, sizeof(want), "%s, line 2: %s", cf_path(),
                                    bad_values[i].msg), 0);
        expect_fatal(cf, NULL, want);

        /* The same through -o names the override instead of file and line. */
        if (eq == NULL)
            continue;
        assert_int_equal(str_format(ovr, sizeof(ovr), "%.*s=%s",
                                    (int) (eq - bad_values[i].setting),
                                    bad_values[i].setting, eq + 1), 0);
        assert_int_equal(str_format(want, sizeof(want), "-o %s: %s", ovr,
                                    bad_values[i].msg), 0);
        expect_fatal(NULL, ovrv, want);
    }
}

static void
test_bad_syntax(void **unused)
{
    char want[1024];
    static const char *const ovr_noeq[] = {"message_size_limit", NULL};
    static const char *const ovr_unknown[] = {"foo=1", NULL};
    static const char *const ovr_size[] = {"message_size_limit=10x", NULL};

    /* The line of a continued setting is the line where it starts. */
    assert_int_equal(str_format(want, sizeof(want), "%s, line 3: parameter recipient_limit: "
                                "bad numerical value \"10 20\" (expected an integer)",
                                cf_path()), 0);
    expect_fatal("# comment\n\nrecipient_limit = 10\n  20\n", NULL, want);

    assert_int_equal(str_format(want, sizeof(want), "%s, line 2: logical line must not "
                                "start with whitespace", cf_path()), 0);
    expect_fatal("# comment\n  queue_directory = /x\n", NULL, want);

    expect_fatal(NULL, ovr_noeq, "-o message_size_limit: missing '=' after "
                 "\"message_size_limit\"");
    expect_fatal(NULL, ovr_unknown, "-o foo=1: unknown parameter \"foo\"");
    expect_fatal(NULL, ovr_size, "-o message_size_limit=10x: parameter message_size_limit: "
                 "bad size value \"10x\" (expected a number with optional k, m or g)");

    /* A bad file value overridden by a good -o is no error. */
    {
        static const char *const ovr_good[] = {"message_size_limit=10", NULL};
        struct child_result res;

        load_in_child("message_size_limit = 10x\n", ovr_good, &res);
        assert_string_equal(res.out, "");
        assert_int_equal(res.status, 0);
    }
}

static void
test_rules(void **unused)
{
    char want[1024];

    assert_int_equal(str_format(want, sizeof(want), "%s, line 1: parameter "
                                "tls_security_level: level \"may\" needs tls_cert_file and "
                                "tls_key_file", cf_path()), 0);
    expect_fatal("tls_security_level = may\ntls_cert_file =\n", NULL, want);
    assert_int_equal(str_format(want, sizeof(want), "%s, line 1: parameter "
                                "tls_security_level: level \"encrypt\" needs tls_cert_file "
                                "and tls_key_file", cf_path()), 0);
    expect_fatal("tls_security_level = encrypt\ntls_cert_file = /c.pem\ntls_key_file =\n",
                 NULL, want);

    /* The key file defaults to the certificate file. */
    /* The key is not $tls_cert_file by default (Debian's snakeoil pair is
     * two files): a combined file names itself twice. */
    load("tls_security_level = may\ntls_cert_file = /etc/c.pem\n", NULL);
    assert_string_equal(var_tls_key_file, "/etc/ssl/private/ssl-cert-snakeoil.key");
    load("tls_security_level = may\ntls_cert_file = /etc/c.pem\ntls_key_file = $tls_cert_file\n",
         NULL);
    assert_string_equal(var_tls_key_file, "/etc/c.pem");
    load("tls_security_level = may\ntls_cert_file = /c.pem\ntls_key_file = /k.pem\n", NULL);
    assert_string_equal(var_tls_key_file, "/k.pem");

    assert_int_equal(str_format(want, sizeof(want), "%s, line 2: parameter "
                                "session_timeout: 100s is less than command_timeout (300s)",
                                cf_path()), 0);
    expect_fatal("command_timeout = 5m\nsession_timeout = 100\n", NULL, want);
    load("command_timeout = 5m\nsession_timeout = 300\n", NULL);
    assert_int_equal(var_session_timeout, 300);
}

static void
test_expansion(void **unused)
{
    char want[PATH_MAX + 64];

    load("odmr_banner = ${myhostname} says $syslog_name/${syslog_name}x $$HOME\n"
         "myhostname = mx.example.org\n"
         "syslog_name = $test_fault_point-odmr\n"
         "test_fault_point = pf\n"
         "queue_directory = $config_directory/queue\n"
         "session_timeout = $command_timeout\n"
         "command_timeout = 10m\n",
         NULL);
    assert_string_equal(var_odmr_banner, "mx.example.org says pf-odmr/pf-odmrx $HOME");
    assert_string_equal(var_lmtp_banner, "mx.example.org LMTP odmr-store");
    assert_string_equal(var_syslog_name, "pf-odmr");
    assert_int_equal(str_format(want, sizeof(want), "%s/queue", tmpdir), 0);
    assert_string_equal(var_queue_dir, want);
    assert_int_equal(var_session_timeout, 600);
    assert_string_equal(config_get("session_timeout"), "10m");

    /* A -o value is expanded too, and others see it. */
    {
        static const char *const ovr[] = {"myhostname=o.example", NULL};

        load("odmr_banner = $myhostname hi\n", ovr);
        assert_string_equal(var_odmr_banner, "o.example hi");
    }
}

static void
test_expansion_errors(void **unused)
{
    char want[1024];

    assert_int_equal(str_format(want, sizeof(want), "%s, line 2: parameter syslog_name: "
                                "loop in $name expansion: syslog_name -> log_file -> "
                                "syslog_name", cf_path()), 0);
    expect_fatal("log_file = /x/$syslog_name\nsyslog_name = $log_file\n", NULL, want);

    assert_int_equal(str_format(want, sizeof(want), "%s, line 1: parameter queue_directory: "
                                "loop in $name expansion: queue_directory -> "
                                "queue_directory", cf_path()), 0);
    expect_fatal("queue_directory = ${queue_directory}/x\n", NULL, want);

    /* A loop reached through a parameter that is not part of it. */
    assert_int_equal(str_format(want, sizeof(want), "%s, line 3: parameter sendmail_path: "
                                "loop in $name expansion: sendmail_path -> tls_CAfile -> "
                                "sendmail_path", cf_path()), 0);
    expect_fatal("queue_directory = $sendmail_path\n"
                 "tls_CAfile = $sendmail_path\n"
                 "sendmail_path = $tls_CAfile\n", NULL, want);

    assert_int_equal(str_format(want, sizeof(want), "%s, line 1: parameter odmr_banner: "
                                "reference to unknown parameter \"$nosuch\"", cf_path()), 0);
    expect_fatal("odmr_banner = hi $nosuch there\n", NULL, want);
    expect_fatal("odmr_banner = hi ${nosuch}there\n", NULL, want);

    assert_int_equal(str_format(want, sizeof(want), "%s, line 1: parameter odmr_banner: "
                                "missing '}' after \"${\"", cf_path()), 0);
    expect_fatal("odmr_banner = ${myhostname\n", NULL, want);

    assert_int_equal(str_format(want, sizeof(want), "%s, line 1: parameter odmr_banner: "
                                "'$' not followed by a parameter name (write \"$$\" for a "
                                "literal '$')", cf_path()), 0);
    expect_fatal("odmr_banner = costs 5$\n", NULL, want);
    expect_fatal("odmr_banner = a $ b\n", NULL, want);
    expect_fatal("odmr_banner = a ${} b\n", NULL, want);

    assert_int_equal(str_format(want, sizeof(want), "%s, line 1: parameter odmr_banner: "
                                "bad parameter name in \"${my-hostname}\"", cf_path()), 0);
    expect_fatal("odmr_banner = ${my-hostname}\n", NULL, want);

    /* An unknown name in a default is reported for the parameter using it. */
    {
        static const char *const ovr[] = {"myhostname=$bogus", NULL};

        expect_fatal(NULL, ovr, "-o myhostname=$bogus: parameter myhostname: reference to "
                     "unknown parameter \"$bogus\"");
    }
}

/*
 * Parameters that can all hold "300", chained by $name one to the next, in
 * the order of config.c's table (expansion starts at the first one).
 */
static const char *const chain[] = {
    "user_domain_maps", "tls_cert_user_maps", "recipient_limit", "atrn_domain_limit", "auth_failure_limit", "flush_message_limit",
    "error_limit", "command_timeout", "session_timeout", "lock_timeout",
    "auth_failure_delay", "smtp_helo_timeout", "smtp_mail_timeout", "smtp_rcpt_timeout",
    "smtp_data_init_timeout", "smtp_data_xfer_timeout", "smtp_data_done_timeout",
    "smtp_quit_timeout", "maximal_queue_lifetime", "delay_warning_time",
    "tls_CAfile", "test_fault_point",
};

static void
make_chain(char *cf, size_t size, size_t len)
{
    size_t used = 0;

    cf[0] = 0;
    for (size_t i = 0; i < len; i++) {
        if (i + 1 < len)
            assert_int_equal(str_format(cf + used, size - used, "%s = $%s\n", chain[i],
                                        chain[i + 1]), 0);
        else
            assert_int_equal(str_format(cf + used, size - used, "%s = 300\n", chain[i]), 0);
        used += strlen(cf + used);
    }
}

static void
test_expansion_limits(void **unused)
{
    char cf[4096], want[1024];
    char *big;
    size_t used;

    /* Twelve levels of references are fine. */
    make_chain(cf, sizeof(cf), 12);
    load(cf, NULL);
    assert_string_equal(var_user_domain_maps, "300");
    assert_int_equal(var_recipient_limit, 300);
    assert_int_equal(var_smtp_helo_timeout, 300);

    /* Twenty-two are not: the first parameter of the chain is named. */
    assert_int_equal(ODMR_ARRAY_LEN(chain), 22);
    make_chain(cf, sizeof(cf), ODMR_ARRAY_LEN(chain));
    assert_int_equal(str_format(want, sizeof(want), "%s, line 1: parameter user_domain_maps: "
                                "$name references nested deeper than 20", cf_path()), 0);
    expect_fatal(cf, NULL, want);

    /* Expansion that grows past 64 KiB. */
    big = x_malloc(4096);
    used = 0;
    used += (size_t) snprintf(big, 4096, "tls_CAfile = ");
    memset(big + used, 'x', 1000);
    used += 1000;
    (void) str_format(big + used, 4096 - used,
                      "\ntls_cert_user_maps = %s\nuser_domain_maps = %s\n",
                      "$tls_CAfile$tls_CAfile$tls_CAfile$tls_CAfile$tls_CAfile$tls_CAfile"
                      "$tls_CAfile$tls_CAfile$tls_CAfile$tls_CAfile$tls_CAfile$tls_CAfile"
                      "$tls_CAfile$tls_CAfile$tls_CAfile$tls_CAfile",
                      "$tls_cert_user_maps$tls_cert_user_maps$tls_cert_user_maps"
                      "$tls_cert_user_maps$tls_cert_user_maps");
    assert_int_equal(str_format(want, sizeof(want), "%s, line 3: parameter user_domain_maps: "
                                "value longer than 65536 bytes after $name expansion",
                                cf_path()), 0);
    expect_fatal(big, NULL, want);
    free(big);
}

static void
test_file_errors(void **unused)
{
    char want[1024];
    struct child_result res;

    /* odmr.cf that is a directory: a read error, not "defaults". */
    write_cf(NULL);
    assert_int_equal(mkdir(cf_path(), 0755), 0);
    run_child(NULL, 0, &res);
    assert_int_equal(rmdir(cf_path()), 0);
    assert_int_equal(str_format(want, sizeof(want), "test_config: fatal: read %s: "
                                "Is a directory\n", cf_path()), 0);
    assert_string_equal(res.out, want);
    assert_int_equal(res.status, EX_TEMPFAIL);

    /* An unreadable file is fatal, not "defaults". */
    assert_int_equal(chmod(tmpdir, 0755), 0);
    write_cf("queue_directory = /x\n");
    assert_int_equal(chmod(cf_path(), 0), 0);
    run_child(NULL, 1, &res);
    assert_int_equal(chmod(cf_path(), 0600), 0);
    assert_int_equal(chmod(tmpdir, 0700), 0);
    assert_int_equal(str_format(want, sizeof(want), "test_config: fatal: open %s: "
                                "Permission denied\n", cf_path()), 0);
    assert_string_equal(res.out, want);
    assert_int_equal(res.status, EX_TEMPFAIL);
}

static char *
print_to_string(int changed_only)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);

    assert_non_null(fp);
    config_print(fp, changed_only);
    assert_int_equal(fclose(fp), 0);
    return buf;
}

static void
test_print(void **unused)
{
    char *out, *line, *save = NULL, prev[128] = "";
    char want[PATH_MAX + 256];
    int lines = 0;

    load("queue_directory = /q\n"
         "message_size_limit = 10k\n"
         "command_timeout = 5m\n"
         "index_sync = true\n"
         "auth_maps = hash:$config_directory/odmr_passwd\n"
         "odmr_banner = $myhostname ESMTP on-demand mail relay\n"
         "tls_security_level = MAY\n"
         "smtputf8_enable = no\n",
         NULL);

    /* Only what differs in meaning from the default. */
    out = print_to_string(1);
    assert_int_equal(str_format(want, sizeof(want),
                                "config_directory = %s\n"
                                "message_size_limit = 10k\n"
                                "queue_directory = /q\n"
                                "smtputf8_enable = no\n", tmpdir), 0);
    assert_string_equal(out, want);
    free(out);

    /* Everything, sorted, one "name = value" (or "name =") per line. */
    out = print_to_string(0);
    assert_non_null(strstr(out, "\nmessage_size_limit = 10k\n"));
    assert_non_null(strstr(out, "\nlog_file =\n"));
    assert_non_null(strstr(out, "\ncommand_timeout = 5m\n"));
    assert_non_null(strstr(out, "\ntls_security_level = may\n"));
    for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[128];
        const char *eq = strstr(line, " =");

        assert_non_null(eq);
        assert_true(eq[2] == 0 || (eq[2] == ' ' && eq[3] != 0));
        assert_true((size_t) (eq - line) < sizeof(name));
        memcpy(name, line, (size_t) (eq - line));
        name[eq - line] = 0;
        assert_true(strcmp(prev, name) < 0);
        assert_non_null(config_get(name));
        assert_string_equal(eq[2] ? eq + 3 : "", config_get(name));
        str_copy(prev, name, sizeof(prev));
        lines++;
    }
    /* One line per variable in config.h. */
    assert_int_equal(lines, 57);
    free(out);
}

static void
test_logging_applied(void **unused)
{
    char cf[PATH_MAX + 128], logpath[PATH_MAX + 16], buf[1024], want[128];
    int fd;
    ssize_t n;

    assert_int_equal(str_format(logpath, sizeof(logpath), "%s/test.log", tmpdir), 0);
    assert_int_equal(str_format(cf, sizeof(cf), "syslog_name = postfix-odmrtest\n"
                                "syslog_facility = local1\nlog_file = %s\n", logpath), 0);
    load(cf, NULL);
    msg_set_flags(0);
    msg_warn("hello %d", 42);
    fd = open(logpath, O_RDONLY);
    assert_true(fd >= 0);
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    assert_true(n > 0);
    buf[n] = 0;
    assert_int_equal(str_format(want, sizeof(want), " postfix-odmrtest/test_config[%ld]: "
                                "warning: hello 42\n", (long) getpid()), 0);
    assert_non_null(strstr(buf, want));

    /* Loading again without log_file turns the file off. */
    load(NULL, NULL);
    msg_warn("not in the file");
    fd = open(logpath, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, buf, sizeof(buf) - 1), n);
    close(fd);
    assert_int_equal(unlink(logpath), 0);
    msg_set_syslog_name("postfix");
    msg_set_flags(MSG_STDERR);
}

/* config_read_file(): another program's file in the same syntax. */
struct collected {
    char text[1024];
    int stop_at;   /* fail on this setting (1-based), 0 never */
    int seen;
};

static int
collect(const char *name, const char *value, char *where, void *ctx, char **error_r)
{
    struct collected *c = ctx;
    size_t len = strlen(c->text);

    c->seen++;
    (void) str_format(c->text + len, sizeof(c->text) - len, "[%s|%s|%s]", name, value, where);
    free(where);
    if (c->seen == c->stop_at) {
        *error_r = x_strdup("stop");
        return -1;
    }
    return 0;
}

static void
test_read_file(void **unused)
{
    struct collected c;
    char *error = NULL, want[2048];

    write_cf("# comment\nserver = a.example:366\n\n  # indented comment\n"
             "domains = x.example,\n    y.example\nfollow=yes\nempty =\n");
    memset(&c, 0, sizeof(c));
    assert_int_equal(config_read_file(cf_path(), collect, &c, &error), 0);
    assert_null(error);
    assert_int_equal(str_format(want, sizeof(want), "[server|a.example:366|%s, line 2]"
                                "[domains|x.example, y.example|%s, line 5][follow|yes|%s, line 7]"
                                "[empty||%s, line 8]", cf_path(), cf_path(), cf_path(),
                                cf_path()), 0);
    assert_string_equal(c.text, want);

    /* The callback's error stops the reading. */
    memset(&c, 0, sizeof(c));
    c.stop_at = 2;
    assert_int_equal(config_read_file(cf_path(), collect, &c, &error), -1);
    assert_string_equal(error, "stop");
    assert_int_equal(c.seen, 2);
    x_free(&error);

    /* Syntax errors name the file and line; no fatal. */
    write_cf("a = b\nno equals sign here\n");
    memset(&c, 0, sizeof(c));
    assert_int_equal(config_read_file(cf_path(), collect, &c, &error), -1);
    assert_int_equal(str_format(want, sizeof(want), "%s, line 2: missing '=' after \"no equals "
                                "sign here\"", cf_path()), 0);
    assert_string_equal(error, want);
    x_free(&error);
    write_cf(" x = y\n");
    assert_int_equal(config_read_file(cf_path(), collect, &c, &error), -1);
    assert_non_null(strstr(error, ", line 1: logical line must not start with whitespace"));
    x_free(&error);

    /* A missing file is 1, not an error. */
    write_cf(NULL);
    assert_int_equal(config_read_file(cf_path(), collect, &c, &error), 1);
    assert_null(error);
}

static int
setup(void **unused)
{
    str_copy(tmpdir, "/tmp/test_config.XXXXXX", sizeof(tmpdir));
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    return 0;
}

static int
teardown(void **unused)
{
    write_cf(NULL);
    config_reset();
    return rmdir(tmpdir);
}

static int
run_all(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_directory_choice),
        cmocka_unit_test(test_file_syntax),
        cmocka_unit_test(test_override_precedence),
        cmocka_unit_test(test_good_values),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_bad_syntax),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_expansion),
        cmocka_unit_test(test_expansion_errors),
        cmocka_unit_test(test_expansion_limits),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_print),
        cmocka_unit_test(test_logging_applied),
        cmocka_unit_test(test_read_file),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}

int
main(void)
{
    /* No syslog from a test run; an unexpected fatal shows on stderr. */
    msg_init("test_config", MSG_STDERR);
    unsetenv("MAIL_CONFIG");
    return run_all();
}
