/*
 * test_dsn.c - unit tests for src/lib/dsn.c: which recipients want which
 * notice (NOTIFY), the shape of each notice (RET, null sender, 8-bit,
 * SMTPUTF8, bounce_size_limit), MIME boundary safety, the wire form turned
 * back into the message across read-buffer edges, and the submission
 * through a fake sendmail (arguments, stdin, environment, exit 75, a
 * sendmail that hangs, stderr kept away from ours).
 *
 * Hidden mode for tests/integration/t_dsn.sh (not run by tests/run-unit):
 *     test_dsn --emit DIR [SENDER]
 *         writes DIR/NAME.eml (the notice) and DIR/NAME.json (its inputs)
 *         for every case of the table below; SENDER replaces the sender
 *     test_dsn --submit SENDMAIL_PATH SENDER FILE TIMEOUT
 *         dsn_submit(FILE); prints "ok" or "error: TEXT"; exit 0 or 1
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dsn.h"
#include "log.h"
#include "queue.h"
#include "smtp.h"
#include "util.h"

#define NOW 1764943200L     /* Fri, 5 Dec 2025 14:00:00 UTC */
#define ARRIVAL 1764500000L
#define QID "0006282A1B2C3D4EAB"

/* ---- building inputs -------------------------------------------------------- */

/* Raw message (LF lines) -> SMTP wire form with the final ".\r\n". */
static char *
wire_form(const char *raw, size_t len, size_t *wlen_r)
{
    char *w = x_malloc(len * 3 + 8);
    size_t i, o = 0;
    int bol = 1;

    for (i = 0; i < len; i++) {
        if (bol && raw[i] == '.')
            w[o++] = '.';
        if (raw[i] == '\n') {
            w[o++] = '\r';
            w[o++] = '\n';
            bol = 1;
        } else {
            w[o++] = raw[i];
            bol = 0;
        }
    }
    if (!bol) {
        w[o++] = '\r';
        w[o++] = '\n';
    }
    memcpy(w + o, ".\r\n", 3);
    o += 3;
    *wlen_r = o;
    return w;
}

/* A temp file: pad bytes of junk, then the wire form. Sets the content range. */
static int
content_file(const char *raw, size_t len, size_t pad, QUEUE_ENV *env)
{
    char path[] = "/tmp/test_dsn.content.XXXXXX";
    int fd = mkstemp(path);
    size_t wlen;
    char *w = wire_form(raw, len, &wlen);
    char *junk = x_malloc(pad + 1);

    assert_true(fd >= 0);
    (void) unlink(path);
    memset(junk, 'J', pad);
    assert_int_equal(write_all(fd, junk, pad), 0);
    assert_int_equal(write_all(fd, w, wlen), 0);
    env->content_offset = (off_t) pad;
    env->content_length = (long long) wlen;
    free(w);
    free(junk);
    return fd;
}

static int
temp_fd(void)
{
    char path[] = "/tmp/test_dsn.out.XXXXXX";
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    (void) unlink(path);
    return fd;
}

static char *
fd_slurp(int fd, size_t *len_r)
{
    struct stat st;
    char *buf;

    assert_int_equal(fstat(fd, &st), 0);
    buf = x_malloc((size_t) st.st_size + 1);
    assert_int_equal(pread(fd, buf, (size_t) st.st_size, 0), st.st_size);
    buf[st.st_size] = 0;
    if (len_r)
        *len_r = (size_t) st.st_size;
    return buf;
}

/* ---- cases -------------------------------------------------------------------- */

typedef struct {
    const char *address, *notify, *orcpt;          /* the envelope */
    const char *status, *diag, *remote, *text;     /* the report */
    long last_attempt;
} RC;

typedef struct {
    const char *name;
    DSN_EVENT event;
    const char *ret;    /* NULL, "FULL", "HDRS" */
    int smtputf8;
    const char *sender;
    const char *envid;  /* xtext or NULL */
    const char *content;
    long long limit;
    RC rc[3];
    /* what this notice must show */
    const char *part3;  /* content type of part 3 */
    int body_back;      /* the message body is returned */
    int eight;          /* Content-Transfer-Encoding: 8bit at the top */
} WCASE;

#define MSG_PLAIN \
    "From: Sender <sender@sender.test>\n" \
    "To: alice@example.org\n" \
    "Subject: hello there\n" \
    "Message-ID: <m1@sender.test>\n" \
    "\n" \
    "line one\n" \
    ".dot line\n" \
    "..two dots\n" \
    ".\n" \
    "BODY-MARKER last line\n"

#define MSG_8BIT_BODY \
    "From: sender@sender.test\n" \
    "Subject: plain header\n" \
    "\n" \
    "caf\xc3\xa9 BODY-MARKER\n"

#define MSG_8BIT_HDR \
    "From: sender@sender.test\n" \
    "Subject: caf\xc3\xa9\n" \
    "\n" \
    "BODY-MARKER\n"

#define MSG_UTF8 \
    "From: j\xc3\xb6rg@sender.test\n" \
    "To: \xc3\xa5sa@example.org\n" \
    "Subject: gr\xc3\xbc\xc3\x9f" "e\n" \
    "\n" \
    "BODY-MARKER h\xc3\xa9llo\n"

#define MSG_NO_HEADERS "BODY-MARKER with no header at all\nsecond line\n"

#define MSG_DOTS \
    "Subject: dots\n" \
    "\n" \
    ".\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n" \
    ".\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n.\n" \
    "BODY-MARKER\n"

#define ALICE \
    {"alice@example.org", NULL, "rfc822;Alice+2Bx@example.org", "5.1.1", \
     "550 5.1.1 <alice@example.org>: Recipient address rejected: User unknown", \
     "mail.example.org[192.0.2.25]", \
     "host mail.example.org[192.0.2.25] said: 550 5.1.1 <alice@example.org>: Recipient " \
     "address rejected: User unknown (in reply to RCPT TO command)", ARRIVAL + 3600}
#define BOB {"bob@example.org", "FAILURE,DELAY", NULL, NULL, NULL, NULL, NULL, 0}

static const WCASE wcases[] = {
    {"failed-ret-absent", DSN_EVENT_FAILED, NULL, 0, "sender@sender.test", "ENV+2B1",
     MSG_PLAIN, 50000, {ALICE, BOB}, "message/rfc822", 1, 0},
    {"failed-ret-full", DSN_EVENT_FAILED, "FULL", 0, "sender@sender.test", NULL, MSG_PLAIN,
     50000, {ALICE}, "message/rfc822", 1, 0},
    {"failed-ret-hdrs", DSN_EVENT_FAILED, "HDRS", 0, "sender@sender.test", NULL, MSG_PLAIN,
     50000, {ALICE, BOB}, "text/rfc822-headers", 0, 0},
    {"expired", DSN_EVENT_EXPIRED, NULL, 0, "sender@sender.test", "id-7", MSG_PLAIN, 50000,
     {{"alice@example.org", NULL, NULL, "4.4.7", NULL, NULL,
       "message expired: not collected by the customer within 5 days", 0},
      BOB},
     "message/rfc822", 1, 0},
    {"delayed-ret-full", DSN_EVENT_DELAYED, "FULL", 0, "sender@sender.test", NULL, MSG_PLAIN,
     50000, {BOB}, "text/rfc822-headers", 0, 0},
    {"relayed", DSN_EVENT_RELAYED, "FULL", 0, "sender@sender.test", NULL, MSG_PLAIN, 50000,
     {{"carol@example.org", "SUCCESS", "rfc822;carol@example.org", "2.0.0",
       "250 2.0.0 Ok: queued as 4Xyz", "mail.example.org[192.0.2.25]", NULL, NOW - 10}},
     "text/rfc822-headers", 0, 0},
    {"size-at-limit", DSN_EVENT_FAILED, NULL, 0, "sender@sender.test", NULL, MSG_PLAIN,
     (long long) sizeof(MSG_PLAIN) - 1, {ALICE}, "message/rfc822", 1, 0},
    {"size-over-limit", DSN_EVENT_FAILED, NULL, 0, "sender@sender.test", NULL, MSG_PLAIN,
     (long long) sizeof(MSG_PLAIN) - 2, {ALICE}, "text/rfc822-headers", 0, 0},
    /* The wire form is far over the limit, the message is not: returned. */
    {"dots-at-limit", DSN_EVENT_FAILED, NULL, 0, "sender@sender.test", NULL, MSG_DOTS,
     (long long) sizeof(MSG_DOTS) - 1, {ALICE}, "message/rfc822", 1, 0},
    {"dots-over-limit", DSN_EVENT_FAILED, NULL, 0, "sender@sender.test", NULL, MSG_DOTS,
     (long long) sizeof(MSG_DOTS) - 2, {ALICE}, "text/rfc822-headers", 0, 0},
    {"8bit-body-full", DSN_EVENT_FAILED, NULL, 0, "sender@sender.test", NULL, MSG_8BIT_BODY,
     50000, {ALICE}, "message/rfc822", 1, 1},
    {"8bit-body-hdrs", DSN_EVENT_FAILED, "HDRS", 0, "sender@sender.test", NULL, MSG_8BIT_BODY,
     50000, {ALICE}, "text/rfc822-headers", 0, 0},
    {"8bit-header-hdrs", DSN_EVENT_FAILED, "HDRS", 0, "sender@sender.test", NULL,
     MSG_8BIT_HDR, 50000, {ALICE}, "text/rfc822-headers", 0, 1},
    {"smtputf8-full", DSN_EVENT_FAILED, NULL, 1, "j\xc3\xb6rg@sender.test", NULL, MSG_UTF8,
     50000,
     {{"\xc3\xa5sa@example.org", NULL, "utf-8;\xc3\xa5sa@example.org", "5.1.1",
       "550 5.1.1 no such user", "mail.example.org[192.0.2.25]", NULL, 0}},
     "message/global", 1, 1},
    {"smtputf8-delayed", DSN_EVENT_DELAYED, NULL, 1, "j\xc3\xb6rg@sender.test", NULL,
     MSG_UTF8, 50000, {{"\xc3\xa5sa@example.org", NULL, NULL, NULL, NULL, NULL, NULL, 0}},
     "message/global-headers", 0, 1},
    {"no-headers", DSN_EVENT_FAILED, "HDRS", 0, "sender@sender.test", NULL, MSG_NO_HEADERS,
     50000, {ALICE}, "text/rfc822-headers", 0, 0},
};

static size_t
case_nrcpt(const WCASE *c)
{
    size_t n = 0;

    while (n < 3 && c->rc[n].address != NULL)
        n++;
    return n;
}

/* env, rcpt array and report of a case (strings point into the case). */
static void
case_build(const WCASE *c, const char *sender, QUEUE_ENV *env, QUEUE_RCPT *qr, DSN_RCPT *dr,
           DSN_REPORT *rep)
{
    size_t i, n = case_nrcpt(c);

    memset(env, 0, sizeof(*env));
    str_copy(env->id, QID, sizeof(env->id));
    env->sender = (char *) (sender ? sender : c->sender);
    env->arrival_sec = ARRIVAL;
    env->envid = (char *) c->envid;
    env->ret = (char *) c->ret;
    env->smtputf8 = c->smtputf8;
    env->rcpt = qr;
    env->rcpt_count = n;
    for (i = 0; i < n; i++) {
        memset(&qr[i], 0, sizeof(qr[i]));
        qr[i].address = (char *) c->rc[i].address;
        qr[i].notify = (char *) c->rc[i].notify;
        qr[i].status = QUEUE_RCPT_FAILED;
        dr[i].rcpt = i;
        dr[i].status = c->rc[i].status;
        dr[i].diag = c->rc[i].diag;
        dr[i].remote_mta = c->rc[i].remote;
        dr[i].text = c->rc[i].text;
        dr[i].last_attempt = c->rc[i].last_attempt;
    }
    /* ORCPT is stored as xtext: encode the case's plain text. */
    for (i = 0; i < n; i++) {
        static char enc[3][512];

        if (c->rc[i].orcpt == NULL) {
            qr[i].orcpt = NULL;
            continue;
        }
        assert_true(xtext_encode(c->rc[i].orcpt, strlen(c->rc[i].orcpt), enc[i],
                                 sizeof(enc[i])) >= 0);
        qr[i].orcpt = enc[i];
    }
    memset(rep, 0, sizeof(*rep));
    rep->event = c->event;
    rep->myhostname = "odmr.isp.test";
    rep->message_id = "20251205140000.DSN1@odmr.isp.test";
    rep->now = NOW;
    rep->will_retry_until = c->event == DSN_EVENT_DELAYED ? ARRIVAL + 5 * 86400 : 0;
    rep->bounce_size_limit = c->limit;
}

/* ---- a small reader of the notices we write ----------------------------------- */

typedef struct {
    char *text;
    size_t len;
    char boundary[128];
    char *part[4]; /* each part: its header lines, an empty line, its body */
    int nparts;
    int closed;    /* the closing delimiter was seen last */
} NOTICE;

static void
notice_free(NOTICE *nt)
{
    int i;

    free(nt->text);
    for (i = 0; i < 4; i++)
        free(nt->part[i]);
    memset(nt, 0, sizeof(*nt));
}

static void
notice_parse(NOTICE *nt)
{
    const char *b = strstr(nt->text, "boundary=\""), *p, *q;
    char delim[160], close_d[160];
    size_t blen;

    assert_non_null(b);
    b += 10;
    blen = strcspn(b, "\"");
    assert_true(blen > 0 && blen <= 70);
    memcpy(nt->boundary, b, blen);
    nt->boundary[blen] = 0;
    (void) str_format(delim, sizeof(delim), "\n--%s\n", nt->boundary);
    (void) str_format(close_d, sizeof(close_d), "\n--%s--\n", nt->boundary);
    p = strstr(nt->text, delim);
    assert_non_null(p);
    while (p != NULL && nt->nparts < 4) {
        p += strlen(delim);
        q = strstr(p, delim);
        if (q == NULL) {
            q = strstr(p, close_d);
            assert_non_null(q);
            nt->closed = strcmp(q, close_d) == 0;
        }
        /* The line end before a delimiter belongs to the delimiter. */
        nt->part[nt->nparts++] = x_strndup(p, (size_t) (q - p));
        p = strstr(q, delim) == q ? q : NULL;
    }
}

/* Write a case's notice; parse it. */
static int
notice_of(const WCASE *c, size_t pad, NOTICE *nt, char **error_r)
{
    QUEUE_ENV env;
    QUEUE_RCPT qr[3];
    DSN_RCPT dr[3];
    DSN_REPORT rep;
    int cfd, ofd, ret;

    case_build(c, NULL, &env, qr, dr, &rep);
    cfd = content_file(c->content, strlen(c->content), pad, &env);
    ofd = temp_fd();
    memset(nt, 0, sizeof(*nt));
    ret = dsn_write(ofd, &env, cfd, &rep, dr, case_nrcpt(c), error_r);
    if (ret == 0) {
        nt->text = fd_slurp(ofd, &nt->len);
        notice_parse(nt);
    }
    (void) close(cfd);
    (void) close(ofd);
    return ret;
}

/* Number of lines of s that start with prefix. */
static int
lines_starting(const char *s, const char *prefix)
{
    size_t plen = strlen(prefix);
    int n = 0;
    const char *p = s;

    while (p != NULL && *p) {
        if (strncmp(p, prefix, plen) == 0)
            n++;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return n;
}

/* The body of a part (after its first empty line). */
static const char *
part_body(const char *part)
{
    const char *p = strstr(part, "\n\n");

    assert_non_null(p);
    return p + 2;
}

/* ---- dsn_wanted ---------------------------------------------------------------- */

static void
test_wanted(void **unused)
{
    static const struct {
        const char *notify;
        int failed, delayed, relayed, expired;
    } t[] = {
        {NULL, 1, 1, 0, 1},
        {"", 1, 1, 0, 1},
        {"NEVER", 0, 0, 0, 0},
        {"never", 0, 0, 0, 0},
        {"SUCCESS", 0, 0, 1, 0},
        {"FAILURE", 1, 0, 0, 1},
        {"DELAY", 0, 1, 0, 0},
        {"SUCCESS,DELAY", 0, 1, 1, 0},
        {"failure,success", 1, 0, 1, 1},
        {"SUCCESS,FAILURE,DELAY", 1, 1, 1, 1},
        {"FAILURES", 0, 0, 0, 0},
        {"FAIL", 0, 0, 0, 0},
        {"NEVER,FAILURE", 0, 0, 0, 0},
    };
    QUEUE_RCPT r;
    QUEUE_ENV env;
    size_t i;

    memset(&env, 0, sizeof(env));
    env.rcpt = &r;
    env.rcpt_count = 1;
    r.address = "a@example.org";
    for (i = 0; i < ODMR_ARRAY_LEN(t); i++) {
        r.notify = (char *) t[i].notify;
        env.sender = "s@sender.test";
        assert_int_equal(dsn_wanted(&env, 0, DSN_EVENT_FAILED), t[i].failed);
        assert_int_equal(dsn_wanted(&env, 0, DSN_EVENT_DELAYED), t[i].delayed);
        assert_int_equal(dsn_wanted(&env, 0, DSN_EVENT_RELAYED), t[i].relayed);
        assert_int_equal(dsn_wanted(&env, 0, DSN_EVENT_EXPIRED), t[i].expired);
        /* Never anything for the null sender. */
        env.sender = "";
        assert_int_equal(dsn_wanted(&env, 0, DSN_EVENT_FAILED), 0);
        assert_int_equal(dsn_wanted(&env, 0, DSN_EVENT_DELAYED), 0);
        assert_int_equal(dsn_wanted(&env, 0, DSN_EVENT_RELAYED), 0);
        assert_int_equal(dsn_wanted(&env, 0, DSN_EVENT_EXPIRED), 0);
    }
    env.sender = "s@sender.test";
    r.notify = NULL;
    assert_int_equal(dsn_wanted(&env, 1, DSN_EVENT_FAILED), 0); /* out of range */
}

/* ---- dsn_write: every case of the table ---------------------------------------- */

static void
test_write_cases(void **unused)
{
    size_t i, k;

    for (i = 0; i < ODMR_ARRAY_LEN(wcases); i++) {
        const WCASE *c = &wcases[i];
        NOTICE nt;
        char *err = NULL, want[512];
        const char *ds, *subject, *action;
        int failure = c->event == DSN_EVENT_FAILED || c->event == DSN_EVENT_EXPIRED;
        size_t n = case_nrcpt(c);

        print_message("case %s\n", c->name);
        assert_int_equal(notice_of(c, 100, &nt, &err), 0);
        assert_int_equal(nt.nparts, 3);
        assert_true(nt.closed);

        /* Top-level headers. */
        subject = failure ? "Undelivered Mail Returned to Sender"
                  : c->event == DSN_EVENT_DELAYED ? "Delayed Mail (still being retried)"
                                                  : "Successful Mail Delivery Report";
        (void) str_format(want, sizeof(want), "\nSubject: %s\n", subject);
        assert_non_null(strstr(nt.text, want));
        assert_true(strncmp(nt.text, "From: MAILER-DAEMON@odmr.isp.test (Mail Delivery System)\n",
                            57) == 0);
        (void) str_format(want, sizeof(want), "\nTo: %s\n", c->sender);
        assert_non_null(strstr(nt.text, want));
        assert_non_null(strstr(nt.text, "\nMessage-Id: <20251205140000.DSN1@odmr.isp.test>\n"));
        assert_non_null(strstr(nt.text, "\nAuto-Submitted: auto-replied\n"));
        assert_non_null(strstr(nt.text, "\nMIME-Version: 1.0\n"));
        assert_non_null(strstr(nt.text, "\nDate: "));
        assert_non_null(strstr(nt.text, "\nContent-Type: multipart/report; "
                                        "report-type=delivery-status;\n"));
        assert_non_null(strstr(nt.text, c->eight ? "\nContent-Transfer-Encoding: 8bit\n"
                                                 : "\nContent-Transfer-Encoding: 7bit\n"));
        /* No CR anywhere: sendmail gets LF lines. */
        assert_null(memchr(nt.text, '\r', nt.len));

        /* Part 1: readable, one paragraph per recipient with its text. */
        assert_non_null(strstr(nt.part[0], "Content-Type: text/plain; charset="));
        assert_non_null(strstr(nt.part[0], "This is the mail system at host odmr.isp.test."));
        for (k = 0; k < n; k++) {
            const RC *r = &c->rc[k];
            const char *start = r->text       ? r->text
                                : r->diag && r->remote ? "host "
                                : r->diag   ? r->diag
                                            : "";

            (void) str_format(want, sizeof(want), "\n<%s>: %.20s", r->address, start);
            assert_non_null(strstr(nt.part[0], want));
        }

        /* Part 2: delivery status. */
        assert_non_null(strstr(nt.part[1], c->smtputf8
                                               ? "Content-Type: message/global-delivery-status\n"
                                               : "Content-Type: message/delivery-status\n"));
        ds = part_body(nt.part[1]);
        assert_true(strncmp(ds, "Reporting-MTA: dns; odmr.isp.test\n", 34) == 0);
        assert_non_null(strstr(ds, "\nX-Odmr-Queue-ID: " QID "\n"));
        (void) str_format(want, sizeof(want), "\nX-Odmr-Sender: %s; %s\n",
                          c->smtputf8 ? "utf-8" : "rfc822", c->sender);
        assert_non_null(strstr(ds, want));
        assert_non_null(strstr(ds, "\nArrival-Date: "));
        if (c->envid != NULL)
            assert_non_null(strstr(ds, "\nOriginal-Envelope-Id: "));
        else
            assert_null(strstr(ds, "Original-Envelope-Id"));
        action = failure ? "failed" : c->event == DSN_EVENT_DELAYED ? "delayed" : "relayed";
        (void) str_format(want, sizeof(want), "Action: %s", action);
        assert_int_equal(lines_starting(ds, want), (int) n);
        assert_int_equal(lines_starting(ds, "Action: "), (int) n);
        assert_int_equal(lines_starting(ds, "Final-Recipient: "), (int) n);
        assert_int_equal(lines_starting(ds, "Status: "), (int) n);
        assert_int_equal(lines_starting(ds, "Diagnostic-Code: "), (int) n);
        assert_int_equal(lines_starting(ds, "Will-Retry-Until: "),
                         c->event == DSN_EVENT_DELAYED ? (int) n : 0);
        for (k = 0; k < n; k++) {
            const char *st = c->rc[k].status;

            if (st == NULL)
                st = c->event == DSN_EVENT_FAILED    ? "5.0.0"
                     : c->event == DSN_EVENT_EXPIRED ? "4.4.7"
                     : c->event == DSN_EVENT_DELAYED ? "4.0.0"
                                                     : "2.0.0";
            /* ORCPT went in as xtext and comes out decoded. */
            if (c->rc[k].orcpt != NULL)
                (void) str_format(want, sizeof(want),
                                  "\nFinal-Recipient: %s; %s\nOriginal-Recipient: %s\n"
                                  "Action: %s\n",
                                  c->smtputf8 ? "utf-8" : "rfc822", c->rc[k].address,
                                  c->rc[k].orcpt, action);
            else
                (void) str_format(want, sizeof(want), "\nFinal-Recipient: %s; %s\nAction: %s\n",
                                  c->smtputf8 ? "utf-8" : "rfc822", c->rc[k].address, action);
            assert_non_null(strstr(ds, want));
            (void) str_format(want, sizeof(want), "Action: %s\nStatus: %s\n", action, st);
            assert_non_null(strstr(ds, want));
            if (c->rc[k].remote != NULL) {
                (void) str_format(want, sizeof(want), "\nRemote-MTA: dns; %s\n",
                                  c->rc[k].remote);
                assert_non_null(strstr(ds, want));
            }
        }
        assert_int_equal(lines_starting(ds, "Remote-MTA: "),
                         (int) (c->rc[0].remote != NULL) + (int) (n > 1 && c->rc[1].remote));
        assert_int_equal(lines_starting(ds, "Last-Attempt-Date: "),
                         (int) (c->rc[0].last_attempt > 0));

        /* Part 3: the message or its headers. */
        (void) str_format(want, sizeof(want), "Content-Type: %s\n", c->part3);
        assert_non_null(strstr(nt.part[2], want));
        assert_int_equal(strstr(nt.part[2], "BODY-MARKER") != NULL, c->body_back);
        assert_non_null(strstr(part_body(nt.part[2]), "Return-Path: <"));
        if (strncmp(c->content, "BODY", 4) != 0)
            assert_non_null(strstr(nt.part[2], "\nSubject: "));
        /* The returned message is the original, dots and line ends undone. */
        if (c->body_back) {
            const char *body = strchr(part_body(nt.part[2]), '\n') + 1;

            assert_string_equal(body, c->content);
        } else {
            const char *hdrs = strchr(part_body(nt.part[2]), '\n') + 1;
            const char *end = strstr(c->content, "\n\n");
            size_t hlen = end ? (size_t) (end - c->content + 1) : 0;

            assert_int_equal(strlen(hdrs), hlen);
            assert_memory_equal(hdrs, c->content, hlen);
        }
        /* The boundary starts no line inside the parts. */
        (void) str_format(want, sizeof(want), "--%s", nt.boundary);
        assert_int_equal(lines_starting(nt.text, want), 4);
        notice_free(&nt);
    }
}

/* Text from the customer and the envelope cannot add lines or fields. */
static void
test_write_cleaning(void **unused)
{
    WCASE c = wcases[0];
    QUEUE_ENV env;
    QUEUE_RCPT qr[3];
    DSN_RCPT dr[3];
    DSN_REPORT rep;
    NOTICE nt;
    char *err = NULL, *long_diag, *unfolded, *p, *q;
    const char *ds;
    int cfd, ofd;
    size_t i;

    c.rc[0].orcpt = "rfc822;x@y\r\nX-Injected: 1";
    c.rc[0].diag = "550-5.1.1 first line\n550 5.1.1 second\rline\x01";
    c.envid = "ENV+0D+0AX-Injected:+202";
    case_build(&c, NULL, &env, qr, dr, &rep);
    cfd = content_file(c.content, strlen(c.content), 0, &env);
    ofd = temp_fd();
    assert_int_equal(dsn_write(ofd, &env, cfd, &rep, dr, 2, &err), 0);
    memset(&nt, 0, sizeof(nt));
    nt.text = fd_slurp(ofd, &nt.len);
    notice_parse(&nt);
    assert_int_equal(lines_starting(nt.text, "X-Injected"), 0);
    ds = part_body(nt.part[1]);
    assert_non_null(strstr(ds, "\nOriginal-Envelope-Id: ENV??X-Injected: 2\n"));
    assert_non_null(strstr(ds, "\nOriginal-Recipient: rfc822;x@y??X-Injected: 1\n"));
    assert_non_null(
        strstr(ds, "\nDiagnostic-Code: smtp; 550-5.1.1 first line 550 5.1.1 second line \n"));
    notice_free(&nt);
    (void) close(ofd);

    /* A long reply is folded at spaces; unfolding gives it back. */
    long_diag = x_malloc(3000);
    p = long_diag;
    p += sprintf(p, "550 5.7.1");
    for (i = 0; i < 200; i++)
        p += sprintf(p, " word%zu", i);
    dr[0].diag = long_diag;
    ofd = temp_fd();
    assert_int_equal(dsn_write(ofd, &env, cfd, &rep, dr, 1, &err), 0);
    memset(&nt, 0, sizeof(nt));
    nt.text = fd_slurp(ofd, &nt.len);
    p = strstr(nt.text, "\nDiagnostic-Code: smtp; ");
    assert_non_null(p);
    p += 24;
    unfolded = x_malloc(strlen(p) + 1);
    for (q = unfolded; *p && !(p[0] == '\n' && p[1] != ' '); p++)
        if (*p != '\n')
            *q++ = *p;
    *q = 0;
    assert_string_equal(unfolded, long_diag);
    /* and no line of the notice is longer than 78 + a word */
    for (p = nt.text; (q = strchr(p, '\n')) != NULL; p = q + 1)
        assert_true(q - p <= 90);
    free(unfolded);
    free(long_diag);
    notice_free(&nt);
    (void) close(ofd);
    (void) close(cfd);
}

/* Refused arguments: null sender, no recipients, bad index, bad status,
 * damaged content. No output is half-written for argument errors. */
static void
test_write_errors(void **unused)
{
    const WCASE *c = &wcases[0];
    QUEUE_ENV env;
    QUEUE_RCPT qr[3];
    DSN_RCPT dr[3];
    DSN_REPORT rep;
    char *err = NULL;
    int cfd, ofd = temp_fd();
    struct stat st;

    case_build(c, "", &env, qr, dr, &rep);
    cfd = content_file(c->content, strlen(c->content), 0, &env);
    assert_int_equal(dsn_write(ofd, &env, cfd, &rep, dr, 2, &err), -1);
    assert_non_null(strstr(err, "null sender"));
    x_free(&err);

    env.sender = "s@sender.test";
    assert_int_equal(dsn_write(ofd, &env, cfd, &rep, dr, 0, &err), -1);
    assert_non_null(err);
    x_free(&err);

    dr[1].rcpt = 7;
    assert_int_equal(dsn_write(ofd, &env, cfd, &rep, dr, 2, &err), -1);
    assert_non_null(strstr(err, "out of range"));
    x_free(&err);
    dr[1].rcpt = 1;

    dr[0].status = "5.1";
    assert_int_equal(dsn_write(ofd, &env, cfd, &rep, dr, 2, &err), -1);
    assert_non_null(strstr(err, "status"));
    x_free(&err);
    dr[0].status = "5.1.1";

    rep.bounce_size_limit = 0;
    assert_int_equal(dsn_write(ofd, &env, cfd, &rep, dr, 2, &err), -1);
    x_free(&err);
    rep.bounce_size_limit = 50000;
    assert_int_equal(fstat(ofd, &st), 0);
    assert_int_equal(st.st_size, 0);

    /* Content that does not end with CRLF.CRLF, or a file too short. */
    env.content_length -= 1;
    assert_int_equal(dsn_write(ofd, &env, cfd, &rep, dr, 2, &err), -1);
    assert_non_null(strstr(err, "CRLF.CRLF"));
    x_free(&err);
    env.content_length += 1;
    env.content_offset += 4096;
    assert_int_equal(dsn_write(ofd, &env, cfd, &rep, dr, 2, &err), -1);
    assert_non_null(err);
    x_free(&err);
    env.content_offset -= 4096;

    /* Four bytes cannot be a content range (".\r\n" or "...\r\n.\r\n"). */
    {
        QUEUE_ENV e4 = env;
        int fd4 = temp_fd();

        assert_int_equal(write_all(fd4, "X.\r\n", 4), 0);
        e4.content_offset = 0;
        e4.content_length = 4;
        assert_int_equal(dsn_write(ofd, &e4, fd4, &rep, dr, 2, &err), -1);
        assert_non_null(strstr(err, "damaged"));
        x_free(&err);
        (void) close(fd4);
    }

    /* A write error is reported. */
    assert_int_equal(dsn_write(-1, &env, cfd, &rep, dr, 2, &err), -1);
    assert_non_null(strstr(err, "write"));
    x_free(&err);

    /* Content unavailable: the notice has no third part. */
    assert_int_equal(ftruncate(ofd, 0), 0);
    assert_int_equal(dsn_write(ofd, &env, -1, &rep, dr, 2, &err), 0);
    {
        NOTICE nt;

        memset(&nt, 0, sizeof(nt));
        nt.text = fd_slurp(ofd, &nt.len);
        notice_parse(&nt);
        assert_int_equal(nt.nparts, 2);
        assert_true(nt.closed);
        notice_free(&nt);
    }
    (void) close(cfd);
    (void) close(ofd);
}

/* The boundary never starts a line of what the notice returns, and never
 * appears in the report's texts. The first candidate is Postfix's form
 * "QUEUEID.TIME/odmr"; a message that holds it gets another. */
static void
test_boundary(void **unused)
{
    char first[128], *content, *diag;
    WCASE c = wcases[0];
    NOTICE nt;
    char *err = NULL;

    (void) str_format(first, sizeof(first), "%s.%ld/odmr", QID, NOW);

    /* Nothing in the way: the first candidate. */
    assert_int_equal(notice_of(&c, 0, &nt, &err), 0);
    assert_string_equal(nt.boundary, first);
    notice_free(&nt);

    /* In the body of a returned message, as a delimiter line. */
    content = x_asprintf("Subject: trap\n\n--%s\nContent-Type: text/plain\n\n--%s--\n", first,
                         first);
    c.content = content;
    assert_int_equal(notice_of(&c, 0, &nt, &err), 0);
    assert_string_not_equal(nt.boundary, first);
    assert_int_equal(nt.nparts, 3);
    assert_non_null(strstr(nt.part[2], content)); /* returned whole */
    notice_free(&nt);

    /* In the headers, returned with RET=HDRS. */
    free(content);
    content = x_asprintf("Subject: trap\n--%s: x\n\nbody\n", first);
    c.content = content;
    c.ret = "HDRS";
    assert_int_equal(notice_of(&c, 0, &nt, &err), 0);
    assert_string_not_equal(nt.boundary, first);
    notice_free(&nt);

    /* In a body that is not returned: no conflict, the first is kept. */
    free(content);
    content = x_asprintf("Subject: trap\n\n--%s\n", first);
    c.content = content;
    assert_int_equal(notice_of(&c, 0, &nt, &err), 0);
    assert_string_equal(nt.boundary, first);
    notice_free(&nt);

    /* Not at the start of a line: harmless. */
    free(content);
    content = x_asprintf("Subject: trap\n\nsee --%s\n", first);
    c.content = content;
    c.ret = NULL;
    assert_int_equal(notice_of(&c, 0, &nt, &err), 0);
    assert_string_equal(nt.boundary, first);
    notice_free(&nt);

    /* In the customer's reply. */
    c.content = MSG_PLAIN;
    diag = x_asprintf("550 5.1.1 --%s", first);
    c.rc[0].diag = diag;
    assert_int_equal(notice_of(&c, 0, &nt, &err), 0);
    assert_string_not_equal(nt.boundary, first);
    notice_free(&nt);
    free(diag);
    free(content);
}

/*
 * Dots and CRLF across read-buffer edges: the body is made of short lines
 * with dots, lone CRs, CRLF in the raw text; a prefix of k bytes (k = 0..15)
 * moves every wire position past DSN_READ_CHUNK edges. The returned message
 * must equal the original byte for byte.
 */
static void
test_unstuff_edges(void **unused)
{
    static const char *const pieces[] = {
        ".\n", "..\n", ".x\n", "a\n", "\n", ".\r\n", "b\rc\n", "...\n", "\r\n", ".a.b\n",
    };
    size_t k, i, len, total = 3 * DSN_READ_CHUNK;
    char *raw;
    WCASE c = wcases[0];

    raw = x_malloc(total + 64);
    for (k = 0; k < 16; k++) {
        NOTICE nt;
        char *err = NULL;
        const char *body;

        len = (size_t) sprintf(raw, "Subject: edges\n\n");
        for (i = 0; i < k; i++)
            raw[len++] = 'p';
        raw[len++] = '\n';
        for (i = 0; len < total; i++) {
            const char *p = pieces[(i * 7 + k) % ODMR_ARRAY_LEN(pieces)];

            memcpy(raw + len, p, strlen(p));
            len += strlen(p);
        }
        raw[len] = 0;
        c.content = raw;
        c.limit = 1000000;
        assert_int_equal(notice_of(&c, k * 3, &nt, &err), 0);
        body = strchr(part_body(nt.part[2]), '\n') + 1;
        assert_int_equal(strlen(body), len);
        assert_memory_equal(body, raw, len);
        notice_free(&nt);
    }
    free(raw);
}

/* A big message: headers only, without reading it whole into memory (the
 * notice stays small). */
static void
test_big_message(void **unused)
{
    WCASE c = wcases[0];
    size_t i, len, total = 4u << 20;
    char *raw = x_malloc(total + 100);
    NOTICE nt;
    char *err = NULL;

    len = (size_t) sprintf(raw, "Subject: big\nX-Big: yes\n\n");
    for (i = 0; len < total; i++)
        len += (size_t) sprintf(raw + len, "line %zu of a big message\n", i);
    c.content = raw;
    assert_int_equal(notice_of(&c, 0, &nt, &err), 0);
    assert_null(strstr(nt.part[2], "Content-Type: message/rfc822"));
    assert_non_null(strstr(nt.part[2], "Content-Type: text/rfc822-headers\n"));
    assert_non_null(strstr(nt.part[2], "\nX-Big: yes\n"));
    assert_null(strstr(nt.part[2], "line 0 of"));
    assert_true(nt.len < 8192);
    notice_free(&nt);
    free(raw);
}

/* ---- dsn_submit --------------------------------------------------------------------- */

typedef struct {
    char dir[64];
} SUB;

static void
write_script(const char *dir, const char *name, const char *body)
{
    char path[256];
    FILE *fp;

    (void) str_format(path, sizeof(path), "%s/%s", dir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "#!/bin/sh\n%s", body);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(chmod(path, 0755), 0);
}

static char *
file_text(const char *dir, const char *name)
{
    char path[256];
    int fd;
    char *s;

    (void) str_format(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    s = fd_slurp(fd, NULL);
    (void) close(fd);
    return s;
}

static int
sub_setup(void **state)
{
    SUB *s = x_calloc(1, sizeof(*s));
    char *body;

    str_copy(s->dir, "/tmp/test_dsn.XXXXXX", sizeof(s->dir));
    if (mkdtemp(s->dir) == NULL)
        return -1;
    body = x_asprintf("for a in \"$@\"; do printf '[%%s]\\n' \"$a\"; done >%s/args\n"
                      "cat >%s/stdin\n"
                      "echo \"MAIL_CONFIG=$MAIL_CONFIG PATH=$PATH\" >%s/env\n"
                      "ls /proc/$$/fd >%s/fds\n"
                      "echo 'a harmless warning' >&2\n"
                      "exit 0\n",
                      s->dir, s->dir, s->dir, s->dir);
    write_script(s->dir, "ok", body);
    free(body);
    write_script(s->dir, "tempfail",
                 "cat >/dev/null\necho 'sendmail: 451 4.3.0 try again later' >&2\nexit 75\n");
    body = x_asprintf("sleep 30 &\necho $! >%s/sleep.pid\nwait\n", s->dir);
    write_script(s->dir, "hang", body);
    free(body);
    write_script(s->dir, "noisy", "head -c 200000 /dev/zero | tr '\\0' x >&2\nexit 0\n");
    write_script(s->dir, "killed", "kill -TERM $$\n");
    *state = s;
    return 0;
}

static int
sub_teardown(void **state)
{
    SUB *s = *state;
    char *cmd = x_asprintf("rm -rf '%s'", s->dir);

    if (system(cmd) != 0)
        fprintf(stderr, "sub_teardown: %s failed\n", cmd);
    free(cmd);
    free(s);
    return 0;
}

static int
notice_fd(const char *text)
{
    int fd = temp_fd();

    assert_int_equal(write_all(fd, text, strlen(text)), 0);
    return fd;
}

static void
test_submit_ok(void **state)
{
    SUB *s = *state;
    char *path, *args, *in, *env, *fds, *err = NULL;
    const char *msg = "From: MAILER-DAEMON@x\nSubject: t\n\nplain\n";
    int fd = notice_fd(msg), keep = dup2(fd, 57);
    int saved2 = dup(2), errfile = temp_fd();
    struct stat st;

    assert_int_equal(keep, 57);
    /* Our fd 2 is odmrd's client socket: the child's stderr must not reach it. */
    assert_int_equal(dup2(errfile, 2), 2);
    assert_int_equal(setenv("MAIL_CONFIG", "/etc/postfix-test", 1), 0);
    path = x_asprintf("%s/ok -C /etc/postfix-x", s->dir);
    /* The offset is at the end: dsn_submit reads from 0 all the same. */
    (void) lseek(fd, 0, SEEK_END);
    assert_int_equal(dsn_submit(path, "sender@sender.test", fd, 10, &err), 0);
    assert_int_equal(dup2(saved2, 2), 2);
    (void) close(saved2);
    assert_int_equal(fstat(errfile, &st), 0);
    assert_int_equal(st.st_size, 0);

    args = file_text(s->dir, "args");
    assert_string_equal(args, "[-C]\n[/etc/postfix-x]\n[-i]\n[-f]\n[]\n[--]\n"
                              "[sender@sender.test]\n");
    in = file_text(s->dir, "stdin");
    assert_string_equal(in, msg);
    env = file_text(s->dir, "env");
    assert_string_equal(env, "MAIL_CONFIG=/etc/postfix-test PATH=/usr/sbin:/usr/bin:/sbin:/bin\n");
    fds = file_text(s->dir, "fds");
    assert_null(strstr(fds, "57\n")); /* none of our descriptors */
    free(args);
    free(in);
    free(env);
    free(fds);

    /* 8-bit notice: -B 8BITMIME; no MAIL_CONFIG when unset. */
    (void) close(fd);
    fd = notice_fd("Subject: t\n\ncaf\xc3\xa9\n");
    assert_int_equal(unsetenv("MAIL_CONFIG"), 0);
    assert_int_equal(dsn_submit(path, "-looks-like-an-option@sender.test", fd, 10, &err), 0);
    args = file_text(s->dir, "args");
    assert_string_equal(args, "[-C]\n[/etc/postfix-x]\n[-i]\n[-f]\n[]\n[-B]\n[8BITMIME]\n[--]\n"
                              "[-looks-like-an-option@sender.test]\n");
    env = file_text(s->dir, "env");
    assert_string_equal(env, "MAIL_CONFIG= PATH=/usr/sbin:/usr/bin:/sbin:/bin\n");
    free(args);
    free(env);
    free(path);
    (void) close(fd);
    (void) close(57);
    (void) close(errfile);
}

static void
test_submit_failures(void **state)
{
    SUB *s = *state;
    char *path, *err = NULL, *pidtext;
    int fd = notice_fd("Subject: t\n\nx\n");
    int64_t t0;
    pid_t sleeper;
    int i, gone = 0;

    /* Exit 75 with its reason. */
    path = x_asprintf("%s/tempfail", s->dir);
    assert_int_equal(dsn_submit(path, "s@sender.test", fd, 10, &err), -1);
    assert_non_null(strstr(err, "exited 75 (EX_TEMPFAIL)"));
    assert_non_null(strstr(err, "451 4.3.0 try again later"));
    x_free(&err);
    free(path);

    /* A sendmail that hangs (and leaves a grandchild holding stderr). */
    path = x_asprintf("%s/hang", s->dir);
    t0 = now_ms();
    assert_int_equal(dsn_submit(path, "s@sender.test", fd, 1, &err), -1);
    assert_true(now_ms() - t0 < 5000);
    assert_true(now_ms() - t0 >= 900);
    assert_non_null(strstr(err, "did not finish within 1 seconds"));
    x_free(&err);
    free(path);
    pidtext = file_text(s->dir, "sleep.pid");
    assert_non_null(pidtext);
    sleeper = (pid_t) atol(pidtext);
    free(pidtext);
    /* The whole process group was killed: the sleep is gone (or a zombie
     * for a moment, until init reaps it). */
    for (i = 0; i < 200 && !gone; i++) {
        char statpath[64], *st;
        int sfd;

        (void) str_format(statpath, sizeof(statpath), "/proc/%ld/stat", (long) sleeper);
        if ((sfd = open(statpath, O_RDONLY)) < 0) {
            gone = 1;
            break;
        }
        st = fd_slurp(sfd, NULL);
        (void) close(sfd);
        gone = strstr(st, ") Z ") != NULL || strstr(st, "sleep") == NULL;
        free(st);
        if (!gone)
            usleep(10000);
    }
    assert_true(gone);

    /* Much on stderr: read and drained, no deadlock. */
    path = x_asprintf("%s/noisy", s->dir);
    assert_int_equal(dsn_submit(path, "s@sender.test", fd, 10, &err), 0);
    free(path);

    /* Killed by a signal. */
    path = x_asprintf("%s/killed", s->dir);
    assert_int_equal(dsn_submit(path, "s@sender.test", fd, 10, &err), -1);
    assert_non_null(strstr(err, "killed by signal 15"));
    x_free(&err);
    free(path);

    /* Missing program; relative path; empty path; null sender. */
    path = x_asprintf("%s/missing -t", s->dir);
    assert_int_equal(dsn_submit(path, "s@sender.test", fd, 10, &err), -1);
    assert_non_null(strstr(err, "exited 127"));
    assert_non_null(strstr(err, "No such file"));
    x_free(&err);
    free(path);
    assert_int_equal(dsn_submit("sendmail -t", "s@sender.test", fd, 10, &err), -1);
    assert_non_null(strstr(err, "absolute"));
    x_free(&err);
    assert_int_equal(dsn_submit("  ", "s@sender.test", fd, 10, &err), -1);
    x_free(&err);
    assert_int_equal(dsn_submit("/bin/true", "", fd, 10, &err), -1);
    assert_non_null(strstr(err, "null sender"));
    x_free(&err);
    assert_int_equal(dsn_submit("/bin/true", "s@sender.test", -1, 10, &err), -1);
    x_free(&err);
    (void) close(fd);
}

/* ---- hidden mode for the integration test ------------------------------------------- */

static void
json_str(FILE *fp, const char *s)
{
    if (s == NULL) {
        fputs("null", fp);
        return;
    }
    fputc('"', fp);
    for (; *s; s++) {
        unsigned char b = (unsigned char) *s;

        if (b == '"' || b == '\\')
            fprintf(fp, "\\%c", b);
        else if (b < 0x20)
            fprintf(fp, "\\u%04x", b);
        else
            fputc(b, fp);
    }
    fputc('"', fp);
}

static const char *const event_names[] = {"failed", "delayed", "relayed", "expired"};

static int
emit_main(const char *dir, const char *sender)
{
    size_t i, k;

    for (i = 0; i < ODMR_ARRAY_LEN(wcases); i++) {
        const WCASE *c = &wcases[i];
        QUEUE_ENV env;
        QUEUE_RCPT qr[3];
        DSN_RCPT dr[3];
        DSN_REPORT rep;
        char path[512], msgid[128], *err = NULL;
        int cfd, ofd;
        FILE *fp;
        size_t n = case_nrcpt(c);

        case_build(c, sender, &env, qr, dr, &rep);
        /* One Message-Id per case, to find each notice where it lands. */
        (void) str_format(msgid, sizeof(msgid), "%s.%ld.DSN@odmr.isp.test", c->name, NOW);
        rep.message_id = msgid;
        cfd = content_file(c->content, strlen(c->content), 77, &env);
        (void) str_format(path, sizeof(path), "%s/%s.eml", dir, c->name);
        if ((ofd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0
            || dsn_write(ofd, &env, cfd, &rep, dr, n, &err) < 0) {
            fprintf(stderr, "%s: %s\n", c->name, err ? err : strerror(errno));
            return 1;
        }
        (void) close(ofd);
        (void) close(cfd);
        (void) str_format(path, sizeof(path), "%s/%s.json", dir, c->name);
        if ((fp = fopen(path, "w")) == NULL)
            return 1;
        fprintf(fp, "{\"name\": ");
        json_str(fp, c->name);
        fprintf(fp, ", \"event\": \"%s\", \"ret\": ", event_names[c->event]);
        json_str(fp, c->ret);
        fprintf(fp, ", \"smtputf8\": %d, \"sender\": ", c->smtputf8);
        json_str(fp, env.sender);
        fprintf(fp, ", \"envid_xtext\": ");
        json_str(fp, c->envid);
        fprintf(fp, ", \"queue_id\": \"%s\", \"arrival\": %ld, \"now\": %ld, "
                    "\"will_retry_until\": %ld, \"limit\": %lld, \"myhostname\": ",
                env.id, env.arrival_sec, rep.now, rep.will_retry_until, c->limit);
        json_str(fp, rep.myhostname);
        fprintf(fp, ", \"message_id\": ");
        json_str(fp, rep.message_id);
        fprintf(fp, ", \"content\": ");
        json_str(fp, c->content);
        fprintf(fp, ", \"rcpts\": [");
        for (k = 0; k < n; k++) {
            fprintf(fp, "%s{\"address\": ", k ? ", " : "");
            json_str(fp, c->rc[k].address);
            fprintf(fp, ", \"notify\": ");
            json_str(fp, c->rc[k].notify);
            fprintf(fp, ", \"orcpt\": ");
            json_str(fp, c->rc[k].orcpt);
            fprintf(fp, ", \"status\": ");
            json_str(fp, c->rc[k].status);
            fprintf(fp, ", \"diag\": ");
            json_str(fp, c->rc[k].diag);
            fprintf(fp, ", \"remote_mta\": ");
            json_str(fp, c->rc[k].remote);
            fprintf(fp, ", \"text\": ");
            json_str(fp, c->rc[k].text);
            fprintf(fp, ", \"last_attempt\": %ld}", c->rc[k].last_attempt);
        }
        fprintf(fp, "]}\n");
        if (fclose(fp) != 0)
            return 1;
    }
    return 0;
}

static int
submit_main(const char *sendmail_path, const char *sender, const char *file,
            const char *timeout)
{
    int fd = open(file, O_RDONLY);
    char *err = NULL;

    if (fd < 0) {
        printf("error: open %s: %s\n", file, strerror(errno));
        return 1;
    }
    if (dsn_submit(sendmail_path, sender, fd, atoi(timeout), &err) < 0) {
        printf("error: %s\n", err);
        free(err);
        return 1;
    }
    printf("ok\n");
    return 0;
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wanted),
        cmocka_unit_test(test_write_cases),
        cmocka_unit_test(test_write_cleaning),
        cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_boundary),
        cmocka_unit_test(test_unstuff_edges),
        cmocka_unit_test(test_big_message),
        cmocka_unit_test_setup_teardown(test_submit_ok, sub_setup, sub_teardown),
        cmocka_unit_test_setup_teardown(test_submit_failures, sub_setup, sub_teardown),
    };

    if (argc >= 3 && strcmp(argv[1], "--emit") == 0)
        return emit_main(argv[2], argc >= 4 ? argv[3] : NULL);
    if (argc == 6 && strcmp(argv[1], "--submit") == 0)
        return submit_main(argv[2], argv[3], argv[4], argv[5]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
