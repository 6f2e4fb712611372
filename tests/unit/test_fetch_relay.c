/*
 * test_fetch_relay.c - unit tests for the reversed-session relay
 * (fetch_relay.c): fetch_relay() runs in the test process between a
 * scripted provider (a forked child on a socketpair) and a scripted local
 * MTA (a forked child on a UNIX socket).
 *
 * Each child writes what it received, byte for byte, to a file; the test
 * compares. Checked: the EHLO reply loses STARTTLS and CHUNKING (and stays
 * a well-formed multi-line reply); a STARTTLS from the provider gets 502
 * and never reaches the local MTA; content (dot-stuffed lines, a bare LF,
 * a line longer than every buffer) reaches the local MTA unchanged; LMTP:
 * LHLO, one recipient per transaction (452 for the next), the one LMTP
 * reply as the dot reply; a local 550 reaches the provider; a local MTA
 * that dies in DATA gives the provider 451 after its dot; a provider that
 * dies in DATA leaves the local MTA without a final dot; a local MTA that
 * is down gives 421.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fetch.h"
#include "stream.h"
#include "util.h"

static char dir[64];
static char sock_path[128];

/* ---- file helpers -------------------------------------------------------- */

static char *
slurp(const char *path, size_t *len_r)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, len = 0, n;

    if (fp == NULL) {
        *len_r = 0;
        return x_strdup("");
    }
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = (len + 4096 + 1) * 2;
            buf = x_realloc(buf, cap);
        }
        n = fread(buf + len, 1, 4096, fp);
        if (n == 0)
            break;
        len += n;
    }
    fclose(fp);
    buf[len] = 0;
    *len_r = len;
    return buf;
}

static void
dump(const char *path, const char *data, size_t len)
{
    FILE *fp = fopen(path, "ab");

    if (fp != NULL) {
        fwrite(data, 1, len, fp);
        fclose(fp);
    }
}

/* ---- the local MTA child ------------------------------------------------- */

#define LOCAL_SMTP 0
#define LOCAL_LMTP 1
#define LOCAL_DIE_IN_DATA 2
/* Replies to MAIL, RCPT, RSET and NOOP held back until DATA arrives: a
 * relay that waits for each reply before sending the next command hangs
 * (and times out); one that passes a pipelined group on in one go does not. */
#define LOCAL_BATCH 4

static void
say(int fd, const char *text)
{
    (void) write_all(fd, text, strlen(text));
}

static void
reply_or_hold(int fd, int mode, char *held, size_t size, const char *reply)
{
    if (mode & LOCAL_BATCH)
        strncat(held, reply, size - strlen(held) - 1);
    else
        say(fd, reply);
}

/* Accept one connection; answer like a small MTA; everything read goes to
 * DIR/local.in. RCPT addresses containing "bad" get 550. */
static void
local_child(int listen_fd, int mode)
{
    char path[128], line[70000];
    size_t len = 0;
    int fd = accept(listen_fd, NULL, NULL), in_data = 0, rcpts = 0;
    char held[4096] = "";
    FILE *in;

    if (fd < 0)
        _exit(2);
    snprintf(path, sizeof(path), "%s/local.in", dir);
    in = fdopen(fd, "rb");
    say(fd, "220 local.test ESMTP\r\n");
    while (fgets(line, sizeof(line), in) != NULL) {
        len = strlen(line);
        dump(path, line, len);
        if (in_data) {
            if (strcmp(line, ".\r\n") == 0) {
                in_data = 0;
                if (mode & LOCAL_LMTP) {
                    for (int i = 0; i < rcpts; i++)
                        say(fd, "250 2.0.0 lmtp delivered\r\n");
                } else {
                    say(fd, "250 2.0.0 queued as LOCAL1\r\n");
                }
                rcpts = 0;
            } else if (mode & LOCAL_DIE_IN_DATA) {
                _exit(0);
            }
            continue;
        }
        if (strncmp(line, "EHLO", 4) == 0 || strncmp(line, "LHLO", 4) == 0)
            say(fd, "250-local.test\r\n250-STARTTLS\r\n250-PIPELINING\r\n250-CHUNKING\r\n"
                    "250 STARTTLS\r\n");
        else if (strncmp(line, "MAIL", 4) == 0)
            reply_or_hold(fd, mode, held, sizeof(held), "250 2.1.0 ok\r\n");
        else if (strncmp(line, "RCPT", 4) == 0 && strstr(line, "bad") != NULL)
            reply_or_hold(fd, mode, held, sizeof(held), "550 5.1.1 no such user\r\n");
        else if (strncmp(line, "RCPT", 4) == 0) {
            rcpts++;
            reply_or_hold(fd, mode, held, sizeof(held), "250 2.1.5 ok\r\n");
        } else if (strncmp(line, "RSET", 4) == 0 || strncmp(line, "NOOP", 4) == 0) {
            reply_or_hold(fd, mode, held, sizeof(held), "250 2.0.0 ok\r\n");
        } else if (strncmp(line, "DATA", 4) == 0) {
            in_data = 1;
            say(fd, held);
            held[0] = 0;
            say(fd, "354 go ahead\r\n");
        } else if (strncmp(line, "QUIT", 4) == 0) {
            say(fd, "221 2.0.0 bye\r\n");
            break;
        } else {
            say(fd, "502 5.5.2 what?\r\n");
        }
    }
    _exit(0);
}

/* ---- the provider child ---------------------------------------------------- */

/* Write the script (all at once: the relay answers in order), then read
 * every reply until EOF into DIR/provider.in. With 'close_early', stop
 * after the script without reading (a provider that dies). */
static void
provider_child(int fd, const char *script, size_t len, int close_early)
{
    char path[128], buf[4096];
    ssize_t n;

    snprintf(path, sizeof(path), "%s/provider.in", dir);
    /* A relay that fails at once (local MTA down) may close before the
     * script is written: read its reply anyway. A byte \001 in the script
     * is not sent: it cuts the script into writes 50 ms apart, so the
     * relay reads the pieces separately. */
    for (size_t i = 0, start = 0; i <= len; i++) {
        if (i == len || script[i] == '\001') {
            (void) write_all(fd, script + start, i - start);
            if (i < len)
                usleep(50000);
            start = i + 1;
        }
    }
    if (close_early)
        _exit(0);
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        dump(path, buf, (size_t) n);
    _exit(0);
}

/* ---- one run --------------------------------------------------------------- */

typedef struct {
    FETCH_RELAY_RESULT res;
    char *provider_in;  /* replies the provider got */
    char *local_in;     /* bytes the local MTA got */
    size_t local_len;
} RUN;

static void
run_relay(const char *script, size_t script_len, int local_mode, int local_up,
          int provider_dies, RUN *run)
{
    FETCH_OPTIONS opt;
    int sv[2], lfd = -1;
    pid_t lp = -1, pp;
    STREAM *p;
    char path[128];
    size_t n;

    memset(&opt, 0, sizeof(opt));
    opt.local_lmtp = (local_mode & LOCAL_LMTP) != 0;
    opt.local_path = sock_path;
    opt.connect_timeout = 5;
    opt.command_timeout = 5;
    opt.local_timeout = 5;
    opt.data_timeout = 5;
    opt.line_max = 2048;

    snprintf(path, sizeof(path), "%s/local.in", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/provider.in", dir);
    unlink(path);
    unlink(sock_path);
    if (local_up) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};

        str_copy(sun.sun_path, sock_path, sizeof(sun.sun_path));
        lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_true(lfd >= 0);
        assert_int_equal(bind(lfd, (struct sockaddr *) &sun, sizeof(sun)), 0);
        assert_int_equal(listen(lfd, 1), 0);
        lp = fork();
        assert_true(lp >= 0);
        if (lp == 0)
            local_child(lfd, local_mode);
        close(lfd);
    }
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    pp = fork();
    assert_true(pp >= 0);
    if (pp == 0) {
        close(sv[0]);
        provider_child(sv[1], script, script_len, provider_dies);
    }
    close(sv[1]);
    p = stream_open(sv[0], sv[0]);
    fetch_relay(p, &opt, &run->res);
    stream_close(&p, 1);
    if (lp > 0)
        assert_int_equal(waitpid(lp, NULL, 0), lp);
    assert_int_equal(waitpid(pp, NULL, 0), pp);
    snprintf(path, sizeof(path), "%s/provider.in", dir);
    run->provider_in = slurp(path, &n);
    snprintf(path, sizeof(path), "%s/local.in", dir);
    run->local_in = slurp(path, &run->local_len);
}

static void
run_free(RUN *run)
{
    x_free(&run->provider_in);
    x_free(&run->local_in);
}

static int
setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/test_fetch_relay.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(sock_path, sizeof(sock_path), "%s/local.sock", dir);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int
teardown(void **state)
{
    char path[128];

    snprintf(path, sizeof(path), "%s/local.in", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/provider.in", dir);
    unlink(path);
    unlink(sock_path);
    rmdir(dir);
    return 0;
}

/* ---- tests ------------------------------------------------------------------ */

static void
test_smtp_faithful(void **state)
{
    char *content, *script, *longline;
    RUN run;

    /* Content as the provider sends it (dot-stuffed wire form), with a bare
     * LF line and a line far longer than any buffer of the relay. */
    longline = x_malloc(40001);
    memset(longline, 'L', 40000);
    longline[40000] = 0;
    content = x_asprintf("Subject: t\r\n\r\n..stuffed\r\nbare lf\nlast %s\r\n.x\r\n", longline);
    script = x_asprintf("EHLO provider.test\r\nSTARTTLS\r\nMAIL FROM:<a@b.test>\r\n"
                        "RCPT TO:<c@d.test>\r\nDATA\r\n%s.\r\nQUIT\r\n", content);
    run_relay(script, strlen(script), LOCAL_SMTP, 1, 0, &run);

    /* EHLO: STARTTLS and CHUNKING gone, and the last line kept ends it. */
    assert_non_null(strstr(run.provider_in, "220 local.test ESMTP\r\n"
                                            "250-local.test\r\n250 PIPELINING\r\n"
                                            "502 5.5.1 "));
    assert_null(strstr(run.provider_in, "STARTTLS"));
    assert_null(strstr(run.provider_in, "CHUNKING"));
    /* The local MTA never saw STARTTLS. */
    assert_null(strstr(run.local_in, "STARTTLS"));
    /* Content byte for byte, then the dot. */
    {
        char *want = x_asprintf("EHLO provider.test\r\nMAIL FROM:<a@b.test>\r\n"
                                "RCPT TO:<c@d.test>\r\nDATA\r\n%s.\r\nQUIT\r\n", content);

        assert_int_equal(run.local_len, strlen(want));
        assert_memory_equal(run.local_in, want, strlen(want));
        free(want);
    }
    assert_non_null(strstr(run.provider_in, "250 2.0.0 queued as LOCAL1\r\n221 2.0.0 bye\r\n"));
    assert_int_equal(run.res.messages, 1);
    assert_int_equal(run.res.recipients, 1);
    assert_int_equal(run.res.refused, 0);
    assert_int_equal(run.res.local_failed, 0);
    assert_int_equal(run.res.provider_failed, 0);
    run_free(&run);
    free(script);
    free(content);
    free(longline);
}

static void
test_lmtp_split(void **state)
{
    const char *script = "EHLO provider.test\r\nMAIL FROM:<a@b.test>\r\n"
                         "RCPT TO:<one@d.test>\r\nRCPT TO:<two@d.test>\r\nDATA\r\n"
                         "hello\r\n.\r\nHELO provider.test\r\nQUIT\r\n";
    RUN run;

    run_relay(script, strlen(script), LOCAL_LMTP, 1, 0, &run);
    assert_non_null(strstr(run.local_in, "LHLO provider.test\r\n"));
    assert_null(strstr(run.local_in, "EHLO"));
    assert_null(strstr(run.local_in, "HELO"));
    assert_non_null(strstr(run.local_in, "RCPT TO:<one@d.test>\r\n"));
    assert_null(strstr(run.local_in, "two@d.test"));
    assert_non_null(strstr(run.provider_in, "250 2.1.5 ok\r\n452 4.5.3 "));
    /* One LMTP reply for the one recipient: the dot reply. */
    assert_non_null(strstr(run.provider_in, "354 go ahead\r\n250 2.0.0 lmtp delivered\r\n"));
    /* HELO over LMTP: a one-line reply. */
    assert_non_null(strstr(run.provider_in, "lmtp delivered\r\n250 local.test\r\n221 "));
    assert_int_equal(run.res.split, 1);
    assert_int_equal(run.res.messages, 1);
    assert_int_equal(run.res.recipients, 1);
    run_free(&run);
}

static void
test_local_refuses(void **state)
{
    const char *script = "EHLO p\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bad@d.test>\r\n"
                         "RCPT TO:<ok@d.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
    RUN run;

    run_relay(script, strlen(script), LOCAL_SMTP, 1, 0, &run);
    assert_non_null(strstr(run.provider_in, "550 5.1.1 no such user\r\n250 2.1.5 ok\r\n"));
    assert_int_equal(run.res.refused, 1);
    assert_int_equal(run.res.messages, 1);
    assert_int_equal(run.res.recipients, 1);
    run_free(&run);
}

/* A pipelined group (RFC 2920) goes to the local MTA as a group, and the
 * replies come back in order: this local MTA answers MAIL and RCPT only
 * once it has DATA. Two messages, a refused recipient, a NOOP and RSET. */
static void
test_pipelined_group(void **state)
{
    const char *script = "EHLO p\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bad@d.test>\r\n"
                         "RCPT TO:<ok@d.test>\r\nDATA\r\nx\r\n.\r\n"
                         "RSET\r\nNOOP\r\nMAIL FROM:<e@b.test>\r\nRCPT TO:<ok2@d.test>\r\n"
                         "DATA\r\ny\r\n.\r\nQUIT\r\n";
    RUN run;

    run_relay(script, strlen(script), LOCAL_SMTP | LOCAL_BATCH, 1, 0, &run);
    assert_non_null(strstr(run.provider_in, "250 PIPELINING\r\n250 2.1.0 ok\r\n"
                                            "550 5.1.1 no such user\r\n250 2.1.5 ok\r\n"
                                            "354 go ahead\r\n250 2.0.0 queued as LOCAL1\r\n"
                                            "250 2.0.0 ok\r\n250 2.0.0 ok\r\n"
                                            "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"
                                            "250 2.0.0 queued as LOCAL1\r\n221 2.0.0 bye\r\n"));
    assert_int_equal(run.res.refused, 1);
    assert_int_equal(run.res.messages, 2);
    assert_int_equal(run.res.recipients, 2);
    assert_int_equal(run.res.local_failed, 0);
    run_free(&run);
}

/* Content cut where the end of data could start: after a "." and after
 * ".\r" at a line start, after "." in the middle of a line, and a final
 * dot cut in two; the bytes after each dot (the next, pipelined command)
 * stay for the command loop. */
static void
test_content_cut(void **state)
{
    const char *script = "EHLO p\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<ok@d.test>\r\nDATA\r\n"
                         "one\r\n.\001.stuffed\r\n.\001\rnot the end\r\n"
                         "a.\001\r\nx\r\n.\001\r\001\nMAIL FROM:<e@b.test>\r\n"
                         "RCPT TO:<ok2@d.test>\r\nDATA\r\nbare lf\n.\001\nQUIT\r\n";
    const char *want = "EHLO p\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<ok@d.test>\r\nDATA\r\n"
                       "one\r\n..stuffed\r\n.\rnot the end\r\na.\r\nx\r\n.\r\n"
                       "MAIL FROM:<e@b.test>\r\nRCPT TO:<ok2@d.test>\r\nDATA\r\n"
                       "bare lf\n.\r\nQUIT\r\n";
    RUN run;

    run_relay(script, strlen(script), LOCAL_SMTP, 1, 0, &run);
    assert_int_equal(run.local_len, strlen(want));
    assert_memory_equal(run.local_in, want, strlen(want));
    assert_int_equal(run.res.messages, 2);
    assert_int_equal(run.res.provider_failed, 0);
    assert_non_null(strstr(run.provider_in, "221 2.0.0 bye\r\n"));
    run_free(&run);
}

static void
test_local_dies_in_data(void **state)
{
    const char *script = "EHLO p\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<ok@d.test>\r\n"
                         "DATA\r\nline one\r\nline two\r\n.\r\nQUIT\r\n";
    RUN run;

    run_relay(script, strlen(script), LOCAL_SMTP | LOCAL_DIE_IN_DATA, 1, 0, &run);
    /* The provider's whole content was read; its dot got 451, not 250. */
    assert_non_null(strstr(run.provider_in, "354 go ahead\r\n451 4.4.2 "));
    assert_null(strstr(run.provider_in, "queued"));
    assert_int_equal(run.res.local_failed, 1);
    assert_int_equal(run.res.messages, 0);
    run_free(&run);
}

static void
test_provider_dies_in_data(void **state)
{
    const char *script = "EHLO p\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<ok@d.test>\r\n"
                         "DATA\r\nhalf a message\r\n";
    RUN run;

    run_relay(script, strlen(script), LOCAL_SMTP, 1, 1, &run);
    assert_int_equal(run.res.provider_failed, 1);
    assert_int_equal(run.res.messages, 0);
    /* The local MTA got the start but never a final dot. */
    assert_non_null(strstr(run.local_in, "half a message\r\n"));
    assert_null(strstr(run.local_in, "\r\n.\r\n"));
    run_free(&run);
}

static void
test_local_down(void **state)
{
    const char *script = "EHLO p\r\nQUIT\r\n";
    RUN run;

    run_relay(script, strlen(script), LOCAL_SMTP, 0, 0, &run);
    assert_string_equal(run.provider_in,
                        "421 4.3.0 local mail system unavailable, try again later\r\n");
    assert_int_equal(run.res.local_failed, 1);
    assert_non_null(strstr(run.res.reason, "connect to"));
    run_free(&run);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smtp_faithful),
        cmocka_unit_test(test_lmtp_split),
        cmocka_unit_test(test_local_refuses),
        cmocka_unit_test(test_pipelined_group),
        cmocka_unit_test(test_content_cut),
        cmocka_unit_test(test_local_dies_in_data),
        cmocka_unit_test(test_provider_dies_in_data),
        cmocka_unit_test(test_local_down),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
