/*
 * odmrd_flush.c - the reversed session: odmrd as the SMTP client.
 *
 * After "250 OK now reversing the connection" the customer is the server.
 * This file behaves like Postfix's smtp(8) on that connection: it waits
 * for the 220, sends EHLO (HELO when EHLO gets a 5xx), may start TLS, then
 * sends the held mail of the locked domains, oldest first, and QUIT.
 *
 * States are numbered; their log text ("while sending RCPT TO") and their
 * timeouts (Postfix's smtp_*_timeout parameters) are arrays indexed by
 * state. Commands go out through one pending list: with PIPELINING a whole
 * group (MAIL, RCPTs, DATA) is written before the replies are read in
 * order; without it, each command waits for its reply.
 *
 * Across messages, with PIPELINING: one message's content and final dot,
 * then the next message's MAIL, RCPT and DATA go out as one group (RFC
 * 2920 section 3.1: the content may start a group), corked into the same
 * TCP segments; the dot's reply is read with the next message's replies.
 * A message costs one round trip instead of two. The earlier message's
 * results are recorded once its dot reply is in (never before: nothing
 * leaves the queue without its 2xx); a connection lost meanwhile defers
 * it ("message may be sent more than once").
 *
 * A message goes once to all its still-queued recipients in the requested
 * domains (the first requested domain that indexes it sends it; the others
 * skip it).
 *
 * Per recipient (only those of the requested domains that are still queued):
 *     2xx after the final dot      -> delivered: 'D', logged status=sent
 *     5xx (MAIL, RCPT, DATA, dot)  -> failed: 'F', status=bounced; never
 *                                     sent again, odmr-queue makes the DSN
 *     4xx, 421, lost connection,   -> stays 'Q' (reason kept), status=deferred
 *     timeout
 * A message larger than the customer's SIZE is failed with 552 5.3.4, as
 * Postfix bounces on a permanent size refusal.
 *
 * A message's steps: txn_select() (which recipients), txn_refused_here()
 * (SIZE, SMTPUTF8), txn_envelope() (MAIL), txn_recipients() (RCPT),
 * txn_data() (DATA, replies, content through txn_data_send(), RSET), then
 * txn_again() when recipients got 452 (too many recipients): they go in a
 * further transaction at once, after the dot's reply is in; the retries
 * end when all are done or a transaction delivers nobody. Every result goes
 * through rcpt_result().
 *
 * A reply to DATA that is not 354, 4xx or 5xx is a protocol error: the
 * recipients stay queued (4.5.0), RSET, QUIT, no more mail this session.
 *
 * STARTTLS on the reversed side: see flush_tls_policy().
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "mime.h"
#include "odmrd.h"
#include "queue.h"
#include "smtp.h"
#include "stream.h"
#include "util.h"

typedef enum {
    FLUSH_BANNER = 0, /* waiting for the customer's 220 */
    FLUSH_EHLO,
    FLUSH_HELO,
    FLUSH_STARTTLS,
    FLUSH_MAIL,
    FLUSH_RCPT,
    FLUSH_DATA,
    FLUSH_XFER, /* sending the content */
    FLUSH_DOT,  /* waiting for the reply to the final dot */
    FLUSH_RSET,
    FLUSH_QUIT,
    FLUSH_STATE_COUNT
} FLUSH_STATE;

/* "... while <text>" in log lines, as Postfix words them. */
static const char *const flush_state_text[FLUSH_STATE_COUNT] = {
    [FLUSH_BANNER] = "receiving the initial server greeting",
    [FLUSH_EHLO] = "performing the EHLO handshake",
    [FLUSH_HELO] = "performing the HELO handshake",
    [FLUSH_STARTTLS] = "performing the STARTTLS handshake",
    [FLUSH_MAIL] = "sending MAIL FROM",
    [FLUSH_RCPT] = "sending RCPT TO",
    [FLUSH_DATA] = "sending DATA command",
    [FLUSH_XFER] = "sending message body",
    [FLUSH_DOT] = "sending end of data -- message may be sent more than once",
    [FLUSH_RSET] = "sending RSET",
    [FLUSH_QUIT] = "sending QUIT",
};

/* "(in reply to <text>)" */
static const char *const flush_reply_to[FLUSH_STATE_COUNT] = {
    [FLUSH_BANNER] = "initial greeting",
    [FLUSH_EHLO] = "EHLO command",
    [FLUSH_HELO] = "HELO command",
    [FLUSH_STARTTLS] = "STARTTLS command",
    [FLUSH_MAIL] = "MAIL FROM command",
    [FLUSH_RCPT] = "RCPT TO command",
    [FLUSH_DATA] = "DATA command",
    [FLUSH_XFER] = "end of DATA command",
    [FLUSH_DOT] = "end of DATA command",
    [FLUSH_RSET] = "RSET command",
    [FLUSH_QUIT] = "QUIT command",
};

/* Postfix's smtp(8) timeouts (STARTTLS: a short one, see flush_tls_policy());
 * RSET like Postfix's 20s default is not a
 * parameter here, it shares MAIL's. */
static long *const flush_timeout[FLUSH_STATE_COUNT] = {
    [FLUSH_BANNER] = &var_smtp_helo_timeout,
    [FLUSH_EHLO] = &var_smtp_helo_timeout,
    [FLUSH_HELO] = &var_smtp_helo_timeout,
    [FLUSH_STARTTLS] = &var_smtp_starttls_timeout,
    [FLUSH_MAIL] = &var_smtp_mail_timeout,
    [FLUSH_RCPT] = &var_smtp_rcpt_timeout,
    [FLUSH_DATA] = &var_smtp_data_init_timeout,
    [FLUSH_XFER] = &var_smtp_data_xfer_timeout,
    [FLUSH_DOT] = &var_smtp_data_done_timeout,
    [FLUSH_RSET] = &var_smtp_mail_timeout,
    [FLUSH_QUIT] = &var_smtp_quit_timeout,
};

/* Customer's ESMTP features */
#define FEAT_PIPELINING 0x01
#define FEAT_SIZE 0x02
#define FEAT_8BITMIME 0x04
#define FEAT_DSN 0x08
#define FEAT_SMTPUTF8 0x10
#define FEAT_STARTTLS 0x20

/* Commands in flight before their replies are read. */
#define FLUSH_PIPE_MAX 100

typedef struct {
    FLUSH_STATE kind; /* FLUSH_MAIL, FLUSH_RCPT or FLUSH_DATA */
    size_t k;         /* recipient slot for FLUSH_RCPT */
} FLUSH_PENDING;

typedef struct {
    ODMRD_SESSION *sp;
    STREAM *s;
    FLUSH_STATE state;
    int features;
    ODMRD_TLS_LEVEL tls_level; /* STARTTLS on the reversed side: none, may,
                                * encrypt (flush_tls_policy()) */
    char tls_policy[ODMRD_NAME_MAX + 64]; /* where tls_level came from */
    int hold;             /* send no mail in this session */
    long long size_limit; /* customer's SIZE; 0: none announced */
    int stop;             /* the connection is unusable or closing */
    int stop_quit;        /* ... but still answers: RSET and QUIT (after a
                           * protocol error) */
    char stop_reason[512];
    int stop_code;        /* 4xx the remaining recipients get */
    char stop_dsn[16];
    char relay[ODMRD_NAME_MAX + ODMRD_ADDR_MAX + 24]; /* name[addr]:port */
    int64_t reversed_ms;  /* the turn-around */
    int64_t setup_ms;     /* EHLO done */
    unsigned long messages, sent, deferred, bounced;
    unsigned long since_sync;
    struct flush_msg *prev; /* content sent, reply to its dot not read yet */
    int corked;             /* TCP_CORK set on the customer's socket */
    /* Messages with recipients in more than one requested domain, already
     * sent (once, to all of them) under an earlier domain: sorted IDs. */
    char (*seen)[QUEUE_ID_LEN + 1];
    size_t nseen, aseen;
} FLUSH;

/* fd 1 is the customer's socket under spawn(8) (odmrd.c reads fd 0 and
 * writes fd 1); setsockopt() on anything else fails harmlessly. */
#define FLUSH_SOCKET_FD 1

/* One message's content, the dot and the next message's MAIL, RCPT and
 * DATA leave in the same TCP segments: the customer then reads them in one
 * go and answers them with one write. Sent apart, a customer with Nagle on
 * (smtp-sink, smtpd) answers the dot at once and holds the next replies
 * until that answer is ACKed: a delayed-ACK stall (up to 40 ms) per
 * message. */
static void
flush_cork(FLUSH *f)
{
    int one = 1;

    if (!f->corked
        && setsockopt(FLUSH_SOCKET_FD, IPPROTO_TCP, TCP_CORK, &one, sizeof(one)) == 0)
        f->corked = 1;
}

/* Before any wait for a reply: everything we wrote goes out now. */
static void
flush_uncork(FLUSH *f)
{
    int zero = 0;

    if (!f->corked)
        return;
    (void) stream_flush(f->s); /* a failure shows at the next read */
    (void) setsockopt(FLUSH_SOCKET_FD, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero));
    f->corked = 0;
}

typedef struct flush_msg {
    QUEUE_FILE *qf;
    const QUEUE_ENV *env;
    const char *domain;
    size_t n;           /* selected recipients */
    size_t *idx;        /* their index in env->rcpt */
    size_t *dom;        /* their domain's index in sp->domains */
    int *accepted;      /* RCPT got 2xx */
    int *final;         /* the result recorded: 0 (none yet) or QUEUE_RCPT_* */
    size_t naccepted;
    int *retry;         /* 452 to RCPT: goes in the next transaction */
    size_t nretry;
    SMTP_REPLY *too_many; /* the last such 452, for when no retry comes */
    unsigned round;     /* transactions of this message so far, minus one */
    int mail_failed;
    int need_rset;
    int dot_pending;    /* content sent; the dot's reply comes later */
    int64_t start_ms;
    int conv_fd;        /* content converted to 7-bit MIME, or -1 */
    off_t conv_len;
    FLUSH_PENDING pend[FLUSH_PIPE_MAX + 2];
    size_t npend;
} FLUSH_MSG;

static void
flush_set_state(FLUSH *f, FLUSH_STATE state)
{
    if (msg_verbose && state != f->state)
        msg_debug("%s: reversed session: %s", f->sp->client, flush_state_text[state]);
    f->state = state;
    stream_set_timeout(f->s, (int) (*flush_timeout[state] * 1000));
}

/* The connection broke (or timed out) in the current state. */
static void
flush_stop_stream(FLUSH *f)
{
    const char *host = f->sp->client;

    if (stream_is_timeout(f->s))
        (void) str_format(f->stop_reason, sizeof(f->stop_reason),
                          "conversation with %s timed out while %s", host,
                          flush_state_text[f->state]);
    else
        (void) str_format(f->stop_reason, sizeof(f->stop_reason),
                          "lost connection with %s while %s", host, flush_state_text[f->state]);
    f->stop = 1;
    f->stop_quit = 0;
    f->stop_code = 451;
    str_copy(f->stop_dsn, "4.4.2", sizeof(f->stop_dsn));
    msg_info("%s: %s", host, f->stop_reason);
}

/* Read a reply in the current state, each line through each() if not
 * NULL. 0, or -1 (f->stop is set). */
static int
flush_read_each(FLUSH *f, SMTP_REPLY *r, SMTP_REPLY_LINE_FN each)
{
    int ret = smtp_reply_read_each(f->s, r, each, f);

    if (ret == 0) {
        if (msg_verbose) {
            char sum[256];

            msg_debug("%s: < %s", f->sp->client, smtp_reply_summary(r, sum, sizeof(sum)));
        }
        return 0;
    }
    if (ret == SMTP_REPLY_MALFORMED) {
        (void) str_format(f->stop_reason, sizeof(f->stop_reason),
                          "malformed reply from %s while %s", f->sp->client,
                          flush_state_text[f->state]);
        f->stop = 1;
        f->stop_quit = 0;
        f->stop_code = 451;
        str_copy(f->stop_dsn, "4.5.0", sizeof(f->stop_dsn));
        msg_warn("%s: %s", f->sp->client, f->stop_reason);
        return -1;
    }
    flush_stop_stream(f);
    return -1;
}

static int
flush_read(FLUSH *f, SMTP_REPLY *r)
{
    return flush_read_each(f, r, NULL);
}

/* 421: the customer is closing; what was not answered stays queued. */
static void
flush_check_421(FLUSH *f, const SMTP_REPLY *r)
{
    char sum[256];

    if (r->code != 421 || f->stop)
        return;
    (void) str_format(f->stop_reason, sizeof(f->stop_reason), "host %s said: %s (in reply to %s)",
                      f->sp->client, smtp_reply_summary(r, sum, sizeof(sum)),
                      flush_reply_to[f->state]);
    f->stop = 1;
    f->stop_code = 421;
    str_copy(f->stop_dsn, r->enh[0] ? r->enh : "4.0.0", sizeof(f->stop_dsn));
    msg_info("%s: %s", f->sp->client, f->stop_reason);
}

/* Called when every reply owed has been read, before any of them is acted
 * on: input waiting now answers no command, so the customer is out of step
 * with us. One extra reply shifts every later one onto the wrong command
 * (a stray 250 read as the answer to a dot: a refused message counted as
 * delivered; a refusal read as the next message's), and nothing tells
 * which reply is which: the recipients waiting on these replies stay
 * queued (4.5.0), and the session ends without another command, which
 * would be misread too. Only what has already arrived can be seen: a
 * stray reply still on its way when the check runs is not caught. 1 when
 * out of step (f->stop is set), else 0. */
static int
flush_out_of_step(FLUSH *f)
{
    if (f->stop || !stream_input_waiting(f->s))
        return 0;
    (void) str_format(f->stop_reason, sizeof(f->stop_reason),
                      "host %s sent input that answers no command (after the reply to %s)",
                      f->sp->client, flush_reply_to[f->state]);
    f->stop = 1;
    f->stop_quit = 0;
    f->stop_code = 451;
    str_copy(f->stop_dsn, "4.5.0", sizeof(f->stop_dsn));
    msg_warn("%s: protocol error: %s; ending the session", f->sp->client, f->stop_reason);
    return 1;
}

static int
flush_send(FLUSH *f, const char *fmt, ...) ODMR_PRINTF(2, 3);

static int
flush_send(FLUSH *f, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t) n >= sizeof(line) - 2)
        msg_panic("flush_send: command too long");
    if (msg_verbose)
        msg_debug("%s: > %s", f->sp->client, line);
    memcpy(line + n, "\r\n", 3);
    if (stream_write(f->s, line, (size_t) n + 2) < 0) {
        flush_stop_stream(f);
        return -1;
    }
    return 0;
}

/* ---- delays and per-recipient results ----------------------------------- */


/* Record the result for selected recipient k and log it. code 2xx, 4xx or
 * 5xx; text is what goes between the parentheses. */
static void
rcpt_result(FLUSH *f, FLUSH_MSG *m, size_t k, int code, const char *dsn, const char *diag,
            const char *text)
{
    const QUEUE_ENV *env = m->env;
    size_t i = m->idx[k];
    int64_t now = now_ms(), arrival;
    char d_all[32], d_a[32], d_b[32], d_c[32], d_d[32], clean[LOG_CLEAN_BUFSIZE];
    const char *status, *notify = env->rcpt[i].notify;
    QUEUE_REASON reason;
    char *err = NULL;
    long sec, usec;
    int mark;

    if (m->final[k])
        return;
    memset(&reason, 0, sizeof(reason));
    if (code / 100 == 2) {
        status = "sent";
        mark = QUEUE_RCPT_DELIVERED;
        f->sent++;
        /* NOTIFY=SUCCESS to a customer without the DSN extension: we tell
         * the sender it was relayed (RFC 3461 section 5.2.2). */
        if (!(f->features & FEAT_DSN) && notify != NULL && strcasestr(notify, "SUCCESS")) {
            mark = QUEUE_RCPT_SUCCESS;
            reason.event = QUEUE_EVENT_RELAYED;
        }
    } else if (code / 100 == 5) {
        status = "bounced";
        mark = QUEUE_RCPT_FAILED;
        reason.event = QUEUE_EVENT_FAILED;
        f->bounced++;
    } else {
        status = "deferred";
        mark = QUEUE_RCPT_QUEUED;
        reason.event = QUEUE_EVENT_DEFERRED;
        f->deferred++;
    }
    if (code / 100 != 2) {
        char why[LOG_CLEAN_BUFSIZE];

        if (diag != NULL)
            odmrd_collect_failure(f->sp, "customer's MTA answered %s",
                                  log_clean(why, sizeof(why), diag, strlen(diag)));
        else
            odmrd_collect_failure(f->sp, "%s", text);
    }
    /* The reason (odmr-queue show, the notices): the customer, its reply,
     * our text. A notice owed goes out after the session (odmrd.c). */
    m->final[k] = mark == QUEUE_RCPT_SUCCESS ? QUEUE_RCPT_DELIVERED : mark;
    now_wall(&sec, &usec);
    reason.time = sec;
    str_copy(reason.dsn, dsn, sizeof(reason.dsn));
    reason.relay = f->relay;
    reason.diag = (char *) diag;
    reason.text = (char *) text;
    if (queue_file_mark_reason(m->qf, i, mark, reason.event ? &reason : NULL, &err) < 0) {
        msg_warn("%s: cannot mark recipient %zu as %c: %s", env->id, i, mark, err);
        free(err);
    } else if (mark == QUEUE_RCPT_FAILED || mark == QUEUE_RCPT_SUCCESS) {
        odmrd_notice_add(f->sp, env->id);
    }

    /* arrival -> turn-around / earlier messages / setup / this message */
    arrival = 0;
    {
        int64_t wall_ms, age_ms;

        wall_ms = (int64_t) sec * 1000 + usec / 1000;
        age_ms = wall_ms - ((int64_t) env->arrival_sec * 1000 + env->arrival_usec / 1000);
        arrival = now - age_ms; /* arrival on the monotonic clock */
    }
    delay_format(d_all, sizeof(d_all), now - arrival);
    delay_format(d_a, sizeof(d_a), f->reversed_ms - arrival);
    delay_format(d_b, sizeof(d_b), m->start_ms - f->setup_ms);
    delay_format(d_c, sizeof(d_c), f->setup_ms - f->reversed_ms);
    delay_format(d_d, sizeof(d_d), now - m->start_ms);
    msg_info("%s: to=<%s>, relay=%s, delay=%s, delays=%s/%s/%s/%s, dsn=%s, status=%s (%s)",
             env->id, log_clean(clean, sizeof(clean), env->rcpt[i].address,
                                strlen(env->rcpt[i].address)),
             f->relay, d_all, d_a, d_b, d_c, d_d, dsn, status, text);
}

/* The result of a customer reply for recipient k. */
static void
rcpt_reply(FLUSH *f, FLUSH_MSG *m, size_t k, const SMTP_REPLY *r, FLUSH_STATE in_reply_to)
{
    char sum[512], text[700];
    const char *dsn;
    char dflt[8];
    /* A 1xx or 3xx where it makes no sense counts as a temporary failure. */
    int code = r->code / 100 == 2 || r->code / 100 >= 4 ? r->code : 450;

    smtp_reply_summary(r, sum, sizeof(sum));
    if (r->enh[0] && r->enh[0] - '0' == code / 100) {
        dsn = r->enh;
    } else {
        (void) str_format(dflt, sizeof(dflt), "%d.0.0", code / 100);
        dsn = dflt;
    }
    if (r->code / 100 == 2)
        str_copy(text, sum, sizeof(text));
    else
        (void) str_format(text, sizeof(text), "host %s said: %s (in reply to %s)",
                          f->sp->client, sum, flush_reply_to[in_reply_to]);
    rcpt_result(f, m, k, code, dsn, r->code / 100 == 2 ? NULL : sum, text);
}

/* Every recipient without a result yet: deferred for the stop reason. */
static void
rcpt_defer_rest(FLUSH *f, FLUSH_MSG *m)
{
    for (size_t k = 0; k < m->n; k++)
        rcpt_result(f, m, k, f->stop_code ? f->stop_code : 451,
                    f->stop_dsn[0] ? f->stop_dsn : "4.4.2", NULL,
                    f->stop_reason[0] ? f->stop_reason : "delivery interrupted");
}

/* ---- the customer's greeting and EHLO ------------------------------------- */

/* One line of the EHLO reply: the keywords of a 2xx, each line taken as
 * it arrives (the reply's kept text is cut at SMTP_REPLY_MAX; a keyword
 * after the cut would be lost, a SIZE value cut short taken as a limit). */
static void
ehlo_line(void *ctx, const SMTP_REPLY *r, const char *line, size_t len)
{
    FLUSH *f = ctx;
    char word[32];
    size_t n = 0;

    if (r->nlines == 1) { /* the greeting line: no keyword */
        f->features = 0;
        f->size_limit = 0;
        return;
    }
    if (r->code / 100 != 2)
        return;
    while (n < len && line[n] != ' ' && line[n] != '=' && n < sizeof(word) - 1) {
        word[n] = line[n];
        n++;
    }
    word[n] = 0;
    str_upper(word);
    if (strcmp(word, "PIPELINING") == 0) {
        f->features |= FEAT_PIPELINING;
    } else if (strcmp(word, "SIZE") == 0) {
        f->features |= FEAT_SIZE;
        if (n < len && line[n] == ' ') {
            long long v = 0;

            for (size_t q = n + 1; q < len && line[q] >= '0' && line[q] <= '9' && v < (1LL << 50);
                 q++)
                v = v * 10 + (line[q] - '0');
            f->size_limit = v;
        }
    } else if (strcmp(word, "8BITMIME") == 0) {
        f->features |= FEAT_8BITMIME;
    } else if (strcmp(word, "DSN") == 0) {
        f->features |= FEAT_DSN;
    } else if (strcmp(word, "SMTPUTF8") == 0) {
        f->features |= FEAT_SMTPUTF8;
    } else if (strcmp(word, "STARTTLS") == 0) {
        f->features |= FEAT_STARTTLS;
    }
}

/* Read the reply to EHLO: f->features and f->size_limit from its keywords
 * when it is a 2xx. 0, or -1 (f->stop is set). */
static int
flush_read_ehlo(FLUSH *f, SMTP_REPLY *r)
{
    int ret = flush_read_each(f, r, ehlo_line);

    if (ret < 0 || r->code / 100 != 2) {
        f->features = 0;
        f->size_limit = 0;
    }
    return ret;
}

/* The STARTTLS policy of the reversed side, into f->tls_level. An outer
 * session in TLS is encrypted already: no STARTTLS inside it. In clear, a
 * TLS handshake inside the reversed session passes only if the customer's
 * client relays bytes, not lines (fetchmail relays lines: the handshake
 * hangs), so it is tried only when reversed_tls_policy_maps says so for
 * the SASL user name, or else for the first requested domain that has an
 * entry; without one, smtp_tls_security_level (default none) applies.
 * Values: none, may, encrypt (the first word; more is ignored). 0, or -1
 * on a failed lookup or a bad value (temporary: no mail this session). */
static int
flush_tls_policy(FLUSH *f)
{
    ODMRD_SESSION *sp = f->sp;
    char *value = NULL, *err = NULL, word[16];
    const char *key = NULL;
    int ret = MAP_NOTFOUND;
    size_t n;

    f->tls_level = ODMRD_TLS_NONE;
    if (stream_tls_active(f->s)) {
        str_copy(f->tls_policy, "outer session in TLS", sizeof(f->tls_policy));
        return 0;
    }
    if (sp->reversed_tls_maps != NULL) {
        if (sp->sasl_username != NULL) {
            key = sp->sasl_username;
            ret = maps_lookup(sp->reversed_tls_maps, key, &value, &err);
        }
        for (size_t i = 0; ret == MAP_NOTFOUND && i < sp->ndomains; i++) {
            key = sp->domains[i];
            ret = maps_lookup(sp->reversed_tls_maps, key, &value, &err);
        }
    }
    if (ret == MAP_ERROR) {
        msg_warn("%s: reversed_tls_policy_maps lookup of %s: %s; no mail this session",
                 sp->client, key, err);
        free(err);
        return -1;
    }
    if (ret == MAP_NOTFOUND) {
        (void) str_format(f->tls_policy, sizeof(f->tls_policy), "smtp_tls_security_level=%s",
                          var_smtp_tls_security_level);
        str_copy(word, var_smtp_tls_security_level, sizeof(word));
    } else {
        n = strcspn(value + strspn(value, " \t,"), " \t,");
        if (n >= sizeof(word))
            n = sizeof(word) - 1;
        memcpy(word, value + strspn(value, " \t,"), n);
        word[n] = 0;
        (void) str_format(f->tls_policy, sizeof(f->tls_policy),
                          "reversed_tls_policy_maps %s=%s", key, word);
        free(value);
    }
    if (str_casecmp(word, "none") == 0) {
        f->tls_level = ODMRD_TLS_NONE;
    } else if (str_casecmp(word, "may") == 0) {
        f->tls_level = ODMRD_TLS_MAY;
    } else if (str_casecmp(word, "encrypt") == 0) {
        f->tls_level = ODMRD_TLS_ENCRYPT;
    } else {
        msg_warn("%s: %s: bad TLS level (none, may or encrypt); no mail this session",
                 sp->client, f->tls_policy);
        return -1;
    }
    if (msg_verbose)
        msg_debug("%s: reversed session TLS policy: %s", sp->client, f->tls_policy);
    return 0;
}

/* The customer refused the session (its greeting, EHLO or HELO): logged,
 * and the reason kept for the collection record (odmr-queue stats). */
static void
flush_refused(FLUSH *f, const SMTP_REPLY *r, const char *what)
{
    char sum[256];

    (void) smtp_reply_summary(r, sum, sizeof(sum));
    msg_warn("%s: customer refused %s: %s", f->sp->client, what, sum);
    odmrd_collect_failure(f->sp, "customer's MTA answered %s (in reply to %s)", sum,
                          flush_reply_to[f->state]);
    flush_check_421(f, r);
}

/* Greeting, EHLO (or HELO), STARTTLS. 0 when mail can be sent. */
static int
flush_handshake(FLUSH *f)
{
    SMTP_REPLY r;
    char sum[256];
    int tls_done = 0;

    flush_set_state(f, FLUSH_BANNER);
    if (flush_read(f, &r) < 0 || flush_out_of_step(f))
        return -1;
    if (r.code / 100 != 2) {
        flush_refused(f, &r, "to talk to me");
        return -1;
    }
    for (;;) {
        flush_set_state(f, FLUSH_EHLO);
        if (flush_send(f, "EHLO %s", var_myhostname) < 0 || flush_read_ehlo(f, &r) < 0
            || flush_out_of_step(f))
            return -1;
        /* A 2xx: flush_read_ehlo() took the keywords. */
        if (r.code / 100 == 5) {
            flush_set_state(f, FLUSH_HELO);
            if (flush_send(f, "HELO %s", var_myhostname) < 0 || flush_read(f, &r) < 0
                || flush_out_of_step(f))
                return -1;
            if (r.code / 100 != 2) {
                flush_refused(f, &r, "HELO");
                return -1;
            }
        } else if (r.code / 100 != 2) {
            flush_refused(f, &r, "EHLO");
            return -1;
        }
        if (tls_done || stream_tls_active(f->s) || f->tls_level == ODMRD_TLS_NONE
            || f->sp->tls_client_failed || !(f->features & FEAT_STARTTLS))
            break;
        if (f->sp->tls_client_ctx == NULL) {
            char *err = NULL;

            if ((f->sp->tls_client_ctx = odmrd_tls_client_ctx(&err)) == NULL) {
                msg_warn("TLS client: %s; no STARTTLS on the reversed side", err);
                free(err);
                f->sp->tls_client_failed = 1;
                break;
            }
        }

        /* Opportunistic TLS when the ODMR session itself was plain. */
        flush_set_state(f, FLUSH_STARTTLS);
        if (flush_send(f, "STARTTLS") < 0 || flush_read(f, &r) < 0 || flush_out_of_step(f))
            return -1;
        if (r.code != 220) {
            msg_info("%s: customer offered STARTTLS but said: %s", f->sp->client,
                     smtp_reply_summary(&r, sum, sizeof(sum)));
            flush_check_421(f, &r);
            if (f->stop)
                return -1;
            break;
        }
        if (stream_tls_client(f->s, f->sp->tls_client_ctx, NULL) < 0) {
            if (stream_is_timeout(f->s))
                msg_warn("%s: reversed session: STARTTLS handshake timed out after %lds "
                         "(%s): a customer that relays the session line by line "
                         "(fetchmail) cannot pass TLS; give it \"none\" in "
                         "reversed_tls_policy_maps; mail stays queued",
                         f->sp->client, var_smtp_starttls_timeout, f->tls_policy);
            else
                msg_warn("%s: reversed session: STARTTLS handshake failed (%s): %s; "
                         "mail stays queued", f->sp->client, f->tls_policy,
                         stream_error_text(f->s));
            flush_stop_stream(f);
            return -1;
        }
        msg_info("%s: reversed session TLS established: %s", f->sp->client,
                 stream_tls_info(f->s));
        tls_done = 1;
    }
    if (!stream_tls_active(f->s) && f->tls_level == ODMRD_TLS_ENCRYPT) {
        msg_warn("%s: TLS is required (%s) but not available on the reversed side; "
                 "mail stays queued", f->sp->client, f->tls_policy);
        return -1;
    }
    return 0;
}

/* ---- one message --------------------------------------------------------- */

/* Values from the queue file go on command lines: no control bytes, no
 * angle brackets, and short enough that a command line stays within
 * flush_send()'s buffer. */
static int
field_ok(const char *s)
{
    if (s == NULL)
        return 1;
    if (strlen(s) > 1000)
        return 0;
    for (; *s; s++)
        if ((unsigned char) *s < 0x20 || *s == 0x7f || *s == '<' || *s == '>')
            return 0;
    return 1;
}

static int
has_8bit(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char) *s >= 0x80)
            return 1;
    return 0;
}

static void
txn_free(FLUSH_MSG *m)
{
    if (m->conv_fd >= 0)
        (void) close(m->conv_fd);
    m->conv_fd = -1;
    free(m->idx);
    free(m->dom);
    free(m->accepted);
    free(m->final);
    free(m->retry);
    free(m->too_many);
    m->idx = m->dom = NULL;
    m->accepted = m->final = m->retry = NULL;
    m->too_many = NULL;
}

/* Has the message selected recipients in requested domain j? */
static int
flush_msg_in_domain(const FLUSH_MSG *m, size_t j)
{
    for (size_t k = 0; k < m->n; k++)
        if (m->dom[k] == j)
            return 1;
    return 0;
}

/* For the collection record: the message's outcome in each requested
 * domain it has recipients in: deferred when one of them was, else
 * bounced when one failed, else delivered. */
static void
flush_collect_count(FLUSH *f, FLUSH_MSG *m)
{
    for (size_t j = 0; j < f->sp->ndomains; j++) {
        int seen = 0, outcome = QUEUE_RCPT_DELIVERED;

        for (size_t k = 0; k < m->n; k++) {
            if (m->dom[k] != j)
                continue;
            seen = 1;
            if (m->final[k] != QUEUE_RCPT_DELIVERED && m->final[k] != QUEUE_RCPT_FAILED)
                outcome = QUEUE_RCPT_QUEUED;
            else if (m->final[k] == QUEUE_RCPT_FAILED && outcome == QUEUE_RCPT_DELIVERED)
                outcome = QUEUE_RCPT_FAILED;
        }
        if (seen)
            odmrd_collect_message(f->sp, j, outcome);
    }
}

/* The queue's bookkeeping for each requested domain of the message whose
 * selected recipients are all final now: that domain is done with the
 * file (queue_file_done() also removes the file once nothing is left). A
 * domain with a deferred recipient keeps its index entry. */
static void
txn_queue_update(FLUSH *f, FLUSH_MSG *m)
{
    char id[QUEUE_ID_LEN + 1], *err = NULL;
    size_t nd = f->sp->ndomains;
    int *final_dom = x_calloc(nd ? nd : 1, sizeof(int));

    str_copy(id, m->env->id, sizeof(id)); /* m->env goes with m->qf */
    for (size_t k = 0; k < m->n; k++)
        final_dom[m->dom[k]] = 1;
    for (size_t k = 0; k < m->n; k++)
        if (m->final[k] != QUEUE_RCPT_DELIVERED && m->final[k] != QUEUE_RCPT_FAILED)
            final_dom[m->dom[k]] = 0;
    flush_collect_count(f, m);
    for (size_t j = 0; j < nd; j++) {
        /* A domain with a deferred recipient keeps its entry, but its
         * figures follow the recipients delivered (queue_file_done()). */
        if (!final_dom[j] && !flush_msg_in_domain(m, j))
            continue;
        /* queue_file_done() closes the file: open it again for the next
         * domain of a multi-domain message (gone: nothing left to do). */
        if (m->qf == NULL && (m->qf = queue_file_open(f->sp->queue, id, 1, &err)) == NULL) {
            if (err != NULL)
                msg_warn("%s: cannot open queue file: %s", id, err);
            x_free(&err);
            break;
        }
        if (queue_file_done(f->sp->queue, &m->qf, f->sp->domains[j], &err) < 0) {
            msg_warn("%s: queue_file_done for %s: %s", id, f->sp->domains[j],
                     err);
            x_free(&err);
        }
    }
    free(final_dom);
    if (m->qf != NULL)
        queue_file_close(&m->qf);
    if (++f->since_sync >= 100) {
        if (queue_sync(f->sp->queue, &err) < 0) {
            msg_warn("queue_sync: %s", err);
            free(err);
        }
        f->since_sync = 0;
    }
}

/* Send length bytes of content in wire form (CRLF, dot-stuffed, ending
 * with the final dot) from fd at offset, after the 354. Every message's
 * content goes out through here. 0 or -1 (f->stop is set). */
static int
txn_data_send(FLUSH *f, int fd, off_t offset, size_t length)
{
    flush_set_state(f, FLUSH_XFER);
    if (stream_sendfile(f->s, fd, offset, length) < 0) {
        flush_stop_stream(f);
        return -1;
    }
    return 0;
}

/* The content of m: the queue file's own bytes, or their 7-bit MIME
 * conversion for a customer without 8BITMIME. */
static int
txn_content(FLUSH *f, FLUSH_MSG *m)
{
    const QUEUE_ENV *env = m->env;

    if (m->conv_fd >= 0)
        return txn_data_send(f, m->conv_fd, 0, (size_t) m->conv_len);
    return txn_data_send(f, queue_file_fd(m->qf), env->content_offset,
                         (size_t) env->content_length);
}

/* Record the reply to the final dot. */
static void
txn_dot_apply(FLUSH *f, FLUSH_MSG *m, const SMTP_REPLY *r)
{
    flush_set_state(f, FLUSH_DOT);
    /* Tests: die between the customer's answer and our bookkeeping. */
    queue_fault("mid-flush");
    for (size_t k = 0; k < m->n; k++)
        if (m->accepted[k])
            rcpt_reply(f, m, k, r, FLUSH_DOT);
    flush_check_421(f, r);
}

/* Read the reply to the final dot (nothing else is owed) and record it. */
static void
txn_dot_reply(FLUSH *f, FLUSH_MSG *m)
{
    SMTP_REPLY r;

    flush_set_state(f, FLUSH_DOT);
    if (flush_read(f, &r) < 0 || flush_out_of_step(f))
        return;
    txn_dot_apply(f, m, &r);
}

/* The reply to DATA: 354 sends the content (its dot reply is read now, or
 * with the next message's replies when later is set); anything else ends
 * the transaction. */
static void
txn_data_reply(FLUSH *f, FLUSH_MSG *m, const SMTP_REPLY *r, int later)
{
    if (r->code == 354) {
        if (m->mail_failed || m->naccepted == 0) {
            SMTP_REPLY dot;

            /* A server that says 354 with nobody to deliver to: end the
             * empty transaction, then reset. */
            flush_set_state(f, FLUSH_DOT);
            if (flush_send(f, ".") == 0)
                (void) flush_read(f, &dot);
            m->need_rset = 1;
            return;
        }
        m->need_rset = 0;
        /* With PIPELINING the dot's reply is read together with the next
         * message's replies. */
        if (later)
            flush_cork(f);
        if (txn_content(f, m) == 0) {
            if (later)
                m->dot_pending = 1;
            else
                txn_dot_reply(f, m);
        }
    } else if (r->code / 100 == 4 || r->code / 100 == 5) {
        if (!m->mail_failed)
            for (size_t k = 0; k < m->n; k++)
                if (m->accepted[k])
                    rcpt_reply(f, m, k, r, FLUSH_DATA);
    } else {
        char sum[256];

        /* 250, 220, a 3xx other than 354...: the customer did not take the
         * content, so nothing was delivered, and it is out of step with
         * us: an extra reply may have shifted every later one. Postfix's
         * smtp(8) (smtp_proto.c, smtp_trouble.c) calls this a protocol
         * error, resets the transaction, says QUIT and never reuses the
         * connection ("the protocol may be in a bad state"); so do we.
         * Postfix bounces with 5.5.0; here the recipients stay queued
         * (4.5.0) for the next ATRN: a customer's broken server is no
         * reason to lose its mail. */
        (void) str_format(f->stop_reason, sizeof(f->stop_reason),
                          "host %s said: %s (in reply to %s)", f->sp->client,
                          smtp_reply_summary(r, sum, sizeof(sum)), flush_reply_to[FLUSH_DATA]);
        f->stop = 1;
        f->stop_quit = 1;
        f->stop_code = 451;
        str_copy(f->stop_dsn, "4.5.0", sizeof(f->stop_dsn));
        msg_warn("%s: protocol error: %s; ending the session", f->sp->client, f->stop_reason);
        /* Now, before RSET and QUIT can replace the reason. */
        rcpt_defer_rest(f, m);
    }
}

/* Act on the reply to pending command p of m. */
static void
txn_pending_apply(FLUSH *f, FLUSH_MSG *m, size_t p, const SMTP_REPLY *r)
{
    FLUSH_PENDING *pd = m->pend + p;

    flush_set_state(f, pd->kind);
    switch (pd->kind) {
    case FLUSH_MAIL:
        if (r->code / 100 != 2) {
            m->mail_failed = 1;
            for (size_t k = 0; k < m->n; k++)
                rcpt_reply(f, m, k, r, FLUSH_MAIL);
        } else {
            m->need_rset = 1;
        }
        break;
    case FLUSH_RCPT:
        if (m->mail_failed)
            break;
        if (r->code / 100 == 2) {
            m->accepted[pd->k] = 1;
            m->naccepted++;
        } else if (r->code == 452) {
            /* RFC 5321 4.5.3.1.10: too many recipients; this one goes in a
             * further transaction (txn_again()). */
            m->retry[pd->k] = 1;
            m->nretry++;
            if (m->too_many == NULL)
                m->too_many = x_malloc(sizeof(*m->too_many));
            *m->too_many = *r;
        } else {
            rcpt_reply(f, m, pd->k, r, FLUSH_RCPT);
        }
        break;
    case FLUSH_DATA:
        /* With recipients left for another transaction, the dot's reply
         * is read at once: they go out only after it. */
        txn_data_reply(f, m, r,
                       (f->features & FEAT_PIPELINING) && p + 1 == m->npend && m->nretry == 0);
        break;
    default:
        msg_panic("txn_pending_apply: bad pending kind %d", (int) pd->kind);
    }
    flush_check_421(f, r);
}

static void txn_complete(FLUSH *f, FLUSH_MSG *m);

/* The replies of every pending command, in order: first read them all,
 * then check that nothing more came (flush_out_of_step()), and only then
 * act on them. The previous message's dot reply comes first: its content,
 * this message's MAIL, RCPT and DATA went out as one group (RFC 2920
 * section 3.1 lets the content open a group), so a message costs one
 * round trip instead of two. m may be NULL: only the previous message's
 * dot reply is owed. */
static void
txn_drain(FLUSH *f, FLUSH_MSG *m)
{
    FLUSH_MSG *prev = f->prev;
    size_t npend = m != NULL ? m->npend : 0;
    size_t first = prev != NULL ? 1 : 0, owed = first + npend, got = 0;
    SMTP_REPLY *r = x_malloc((owed ? owed : 1) * sizeof(*r)); /* filled by flush_read() */

    flush_uncork(f);
    f->prev = NULL;
    /* Reading stops at a failure and after a 421 (the customer closes). */
    while (got < owed && !f->stop) {
        flush_set_state(f, got < first ? FLUSH_DOT : m->pend[got - first].kind);
        if (flush_read(f, r + got) < 0)
            break;
        if (r[got++].code == 421)
            break;
    }
    if (got < owed || !flush_out_of_step(f)) {
        if (prev != NULL && got > 0)
            txn_dot_apply(f, prev, r);
        for (size_t i = first; i < got; i++)
            txn_pending_apply(f, m, i - first, r + i);
    }
    if (prev != NULL) {
        txn_complete(f, prev);
        free(prev);
    }
    if (m != NULL)
        m->npend = 0;
    free(r);
}

static void
txn_queue_cmd(FLUSH *f, FLUSH_MSG *m, FLUSH_STATE kind, size_t k)
{
    m->pend[m->npend].kind = kind;
    m->pend[m->npend].k = k;
    m->npend++;
    if (!(f->features & FEAT_PIPELINING) || m->npend >= FLUSH_PIPE_MAX)
        txn_drain(f, m);
}

/* Results for whatever has none yet, then the queue's bookkeeping. */
static void
txn_complete(FLUSH *f, FLUSH_MSG *m)
{
    if (f->stop)
        rcpt_defer_rest(f, m);
    /* Anything still without a result (cannot happen unless the customer
     * skipped a reply): deferred. */
    for (size_t k = 0; k < m->n; k++)
        if (!m->final[k])
            rcpt_result(f, m, k, 451, "4.4.2", NULL, "no reply from the customer");
    txn_queue_update(f, m);
    txn_free(m);
}

/* Which requested domain, if any, an address belongs to: an index into
 * sp->domains (lower case), or -1. */
static ssize_t
requested_domain(const FLUSH *f, const char *addr)
{
    const char *d = addr_domain(addr);

    for (size_t j = 0; d != NULL && j < f->sp->ndomains; j++)
        if (str_casecmp(d, f->sp->domains[j]) == 0)
            return (ssize_t) j;
    return -1;
}

static int
seen_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int
seen_has(const FLUSH *f, const char *id)
{
    return f->nseen > 0 && bsearch(id, f->seen, f->nseen, sizeof(*f->seen), seen_cmp) != NULL;
}

static void
seen_add(FLUSH *f, const char *id)
{
    size_t lo = 0, hi = f->nseen;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;

        if (strcmp(f->seen[mid], id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (f->nseen == f->aseen) {
        f->aseen = f->aseen ? f->aseen * 2 : 64;
        f->seen = x_realloc(f->seen, f->aseen * sizeof(*f->seen));
    }
    memmove(f->seen + lo + 1, f->seen + lo, (f->nseen - lo) * sizeof(*f->seen));
    str_copy(f->seen[lo], id, sizeof(*f->seen));
    f->nseen++;
}

/* Open queue file id and select its recipients still queued in any
 * requested domain: one transaction for all of them, as smtp(8) sends one
 * message to all its recipients at one destination. 0 when there is
 * something to send (m is set up); -1 when not (stale index entry,
 * damaged envelope, unreadable file: handled here, m holds nothing). */
static int
txn_select(FLUSH *f, FLUSH_MSG *m, const char *domain, const char *id)
{
    char *err = NULL;
    const QUEUE_ENV *env;
    int here = 0, other = 0, ok;

    memset(m, 0, sizeof(*m));
    m->conv_fd = -1;
    m->domain = domain;
    errno = 0;
    if ((m->qf = queue_file_open(f->sp->queue, id, 1, &err)) == NULL) {
        if (errno == ENOENT && err == NULL) {
            /* Delivered through another domain's flush, or deleted: the
             * index entry is stale. */
            msg_debug("%s: queue file gone; dropping its %s index entry", id, domain);
            if (queue_index_drop(f->sp->queue, domain, id, &err) < 0)
                msg_warn("%s: cannot drop index entry for %s: %s", id, domain,
                         err);
        } else
            msg_warn("%s: cannot open queue file: %s", id, err ? err : strerror(errno));
        free(err);
        return -1;
    }
    env = m->env = queue_file_env(m->qf);

    m->idx = x_calloc(env->rcpt_count ? env->rcpt_count : 1, sizeof(size_t));
    m->dom = x_calloc(env->rcpt_count ? env->rcpt_count : 1, sizeof(size_t));
    for (size_t i = 0; i < env->rcpt_count; i++) {
        ssize_t j = requested_domain(f, env->rcpt[i].address);

        if (env->rcpt[i].status != QUEUE_RCPT_QUEUED || j < 0)
            continue;
        if (str_casecmp(f->sp->domains[j], domain) == 0)
            here = 1;
        else
            other = 1;
        m->dom[m->n] = (size_t) j;
        m->idx[m->n++] = i;
    }
    if (!here)
        m->n = 0; /* stale entry for this domain: handled below */
    else if (other)
        seen_add(f, id);
    if (m->n == 0) {
        /* Nothing of this domain left in the file (an earlier flush was
         * interrupted before its index update): just drop the entry. */
        txn_free(m);
        if (queue_file_done(f->sp->queue, &m->qf, domain, &err) < 0) {
            msg_warn("%s: queue_file_done for %s: %s", id, domain, err);
            free(err);
        }
        if (m->qf != NULL)
            queue_file_close(&m->qf);
        return -1;
    }
    m->accepted = x_calloc(m->n, sizeof(int));
    m->final = x_calloc(m->n, sizeof(int));
    m->retry = x_calloc(m->n, sizeof(int));

    /* Damaged envelope fields never reach the wire. */
    ok = field_ok(env->sender) && field_ok(env->envid) && field_ok(env->ret);
    for (size_t k = 0; k < m->n && ok; k++) {
        const QUEUE_RCPT *rc = env->rcpt + m->idx[k];

        ok = field_ok(rc->address) && field_ok(rc->notify) && field_ok(rc->orcpt);
    }
    if (!ok) {
        msg_warn("%s: queue file has control characters in its envelope; skipped", id);
        queue_file_close(&m->qf);
        txn_free(m);
        return -1;
    }
    return 0;
}

/* The size the sender declared or the store counted; the content's own
 * length when the file has none. */
static long long
txn_size(const FLUSH_MSG *m)
{
    const QUEUE_ENV *env = m->env;

    return env->size > 0 ? env->size
                         : (env->content_length > 3 ? env->content_length - 3 : 0);
}

/* Refusals decided here, as smtp(8) does: 1 when the message is refused
 * (every recipient has its result), else 0. */
static int
txn_refused_here(FLUSH *f, FLUSH_MSG *m)
{
    const QUEUE_ENV *env = m->env;
    long long size = txn_size(m);
    char text[512];

    if ((f->features & FEAT_SIZE) && f->size_limit > 0 && size > f->size_limit) {
        (void) str_format(text, sizeof(text),
                          "message size %lld exceeds size limit %lld of server %s", size,
                          f->size_limit, f->sp->client);
        for (size_t k = 0; k < m->n; k++)
            rcpt_result(f, m, k, 552, "5.3.4", NULL, text);
        return 1;
    }
    if (env->smtputf8 && !(f->features & FEAT_SMTPUTF8)) {
        int need = has_8bit(env->sender);

        for (size_t k = 0; k < m->n && !need; k++)
            need = has_8bit(env->rcpt[m->idx[k]].address);
        if (need) {
            (void) str_format(text, sizeof(text),
                              "SMTPUTF8 is required, but was not offered by host %s",
                              f->sp->client);
            for (size_t k = 0; k < m->n; k++)
                rcpt_result(f, m, k, 550, "5.6.7", NULL, text);
            return 1;
        }
    }
    /* RFC 6152 section 3: no 8-bit data to a server without 8BITMIME.
     * Converted to quoted-printable as Postfix's smtp(8) does, into an
     * unnamed file in the queue's incoming/ (messages may be large). */
    if (!(f->features & FEAT_8BITMIME)) {
        char *err = NULL, dir[4096];
        int r = mime_has_8bit(queue_file_fd(m->qf), env->content_offset, env->content_length,
                              &err);

        if (r == 1) {
            (void) str_format(dir, sizeof(dir), "%s/incoming", queue_dir(f->sp->queue));
            if ((m->conv_fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) < 0) {
                err = x_asprintf("open a temporary file in %s: %s", dir, strerror(errno));
                r = -1;
            } else {
                r = mime_downgrade(queue_file_fd(m->qf), env->content_offset,
                                   env->content_length, m->conv_fd, &err);
                if (r == 0 && (m->conv_len = lseek(m->conv_fd, 0, SEEK_END)) < 0) {
                    err = x_asprintf("temporary file: %s", strerror(errno));
                    r = -1;
                }
            }
            if (r == MIME_DOWNGRADE_IMPOSSIBLE) {
                (void) str_format(text, sizeof(text),
                                  "host %s does not announce 8BITMIME and the message "
                                  "cannot be converted to 7-bit MIME: %s",
                                  f->sp->client, err);
                for (size_t k = 0; k < m->n; k++)
                    rcpt_result(f, m, k, 550, "5.6.3", NULL, text);
            }
        }
        if (r < 0) {
            (void) str_format(text, sizeof(text), "8-bit to 7-bit conversion failed: %s",
                              err);
            msg_warn("%s: %s", env->id, text);
            for (size_t k = 0; k < m->n; k++)
                rcpt_result(f, m, k, 451, "4.3.0", NULL, text);
        }
        free(err);
        /* 0: nothing 8-bit, or converted; else every recipient has its
         * result (5.6.3, or 4.3.0 to try again). */
        if (r != 0)
            return 1;
    }
    return 0;
}

/* ESMTP parameters of one MAIL or RCPT command. A parameter that would
 * not fit is left out (field_ok() keeps every value far below the size). */
typedef struct {
    char text[600];
    size_t used;
} TXN_PARAMS;

static void
txn_param(TXN_PARAMS *p, const char *fmt, ...) ODMR_PRINTF(2, 3);

static void
txn_param(TXN_PARAMS *p, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(p->text + p->used, sizeof(p->text) - p->used, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t) n < sizeof(p->text) - p->used)
        p->used += (size_t) n;
    else
        p->text[p->used] = 0;
}

/* MAIL FROM with its parameters. 0, or -1 when it could not be sent. */
static int
txn_envelope(FLUSH *f, FLUSH_MSG *m)
{
    const QUEUE_ENV *env = m->env;
    TXN_PARAMS p = {.used = 0};

    if (f->features & FEAT_SIZE)
        txn_param(&p, " SIZE=%lld", txn_size(m));
    if (env->body != NULL && (f->features & FEAT_8BITMIME)
        && (str_casecmp(env->body, "8BITMIME") == 0 || str_casecmp(env->body, "BINARYMIME") == 0))
        txn_param(&p, " BODY=8BITMIME");
    if (env->smtputf8 && (f->features & FEAT_SMTPUTF8) && var_smtputf8_enable)
        txn_param(&p, " SMTPUTF8");
    if ((f->features & FEAT_DSN) && env->ret)
        txn_param(&p, " RET=%s", env->ret);
    if ((f->features & FEAT_DSN) && env->envid)
        txn_param(&p, " ENVID=%s", env->envid);
    flush_set_state(f, FLUSH_MAIL);
    if (flush_send(f, "MAIL FROM:<%s>%s", env->sender, p.text) < 0)
        return -1;
    txn_queue_cmd(f, m, FLUSH_MAIL, 0);
    return 0;
}

/* RCPT TO for each selected recipient without a result yet (in a further
 * transaction: those that got 452). 0, or -1 when one could not be sent. */
static int
txn_recipients(FLUSH *f, FLUSH_MSG *m)
{
    for (size_t k = 0; k < m->n && !f->stop && !m->mail_failed; k++) {
        const QUEUE_RCPT *rc = m->env->rcpt + m->idx[k];
        TXN_PARAMS p = {.used = 0};

        if (m->final[k])
            continue;
        if ((f->features & FEAT_DSN) && rc->notify)
            txn_param(&p, " NOTIFY=%s", rc->notify);
        if ((f->features & FEAT_DSN) && rc->orcpt)
            txn_param(&p, " ORCPT=%s", rc->orcpt);
        flush_set_state(f, FLUSH_RCPT);
        if (flush_send(f, "RCPT TO:<%s>%s", rc->address, p.text) < 0)
            return -1;
        txn_queue_cmd(f, m, FLUSH_RCPT, k);
    }
    return 0;
}

/* RSET after a transaction left open. A customer that refuses it still
 * has the transaction open, and would refuse the next MAIL ("nested MAIL
 * command") as if it refused that message: like Postfix's smtp(8), which
 * then never reuses the connection, the session ends (QUIT), and the
 * rest waits for the next ATRN. */
static void
txn_rset(FLUSH *f)
{
    SMTP_REPLY r;
    char sum[256];

    flush_set_state(f, FLUSH_RSET);
    if (flush_send(f, "RSET") < 0 || flush_read(f, &r) < 0 || flush_out_of_step(f))
        return;
    flush_check_421(f, &r);
    if (f->stop || r.code / 100 == 2)
        return;
    (void) str_format(f->stop_reason, sizeof(f->stop_reason), "host %s said: %s (in reply to %s)",
                      f->sp->client, smtp_reply_summary(&r, sum, sizeof(sum)),
                      flush_reply_to[FLUSH_RSET]);
    f->stop = 1;
    f->stop_quit = 1;
    f->stop_code = 451;
    str_copy(f->stop_dsn, "4.5.0", sizeof(f->stop_dsn));
    msg_warn("%s: %s; ending the session, the rest waits for the next ATRN", f->sp->client,
             f->stop_reason);
}

/* DATA (with PIPELINING even when no RCPT reply is in yet), the replies of
 * the group, the content; RSET when the transaction was left open. 1 when
 * the dot's reply is still to come (m then belongs to f->prev), else 0. */
static int
txn_data(FLUSH *f, FLUSH_MSG *m)
{
    if (!f->stop && !m->mail_failed
        && ((f->features & FEAT_PIPELINING) || m->naccepted > 0)) {
        flush_set_state(f, FLUSH_DATA);
        if (flush_send(f, "DATA") < 0)
            return 0;
        txn_queue_cmd(f, m, FLUSH_DATA, 0);
    }
    if (m->npend > 0)
        txn_drain(f, m);
    if (m->dot_pending && !f->stop) {
        /* Finished by the next txn_drain() (or flush_finish_prev()) once
         * the dot's reply is read. */
        f->prev = x_malloc(sizeof(*f->prev));
        *f->prev = *m;
        return 1;
    }

    /* A transaction left open (no recipient, DATA refused, a protocol
     * error): reset it. */
    if ((!f->stop || f->stop_quit) && m->need_rset && !m->mail_failed)
        txn_rset(f);
    return 0;
}

/* After a transaction that left recipients with 452: 1 when they go in
 * another one now, else 0 (they are deferred with that 452). Another one
 * only after a transaction that delivered someone, so the retries end. */
static int
txn_again(FLUSH *f, FLUSH_MSG *m)
{
    int progress = 0;

    if (m->nretry == 0)
        return 0;
    for (size_t k = 0; k < m->n; k++)
        if (m->accepted[k] && m->final[k] == QUEUE_RCPT_DELIVERED)
            progress = 1;
    if (f->stop || !progress) {
        /* Stopped: txn_complete() gives them the stop reason. */
        for (size_t k = 0; k < m->n && !f->stop; k++)
            if (m->retry[k])
                rcpt_reply(f, m, k, m->too_many, FLUSH_RCPT);
        return 0;
    }
    m->round++;
    msg_info("%s: %zu recipient%s refused with 452 (too many recipients): "
             "sending %s in transaction %u of the message", m->env->id, m->nretry,
             m->nretry == 1 ? "" : "s", m->nretry == 1 ? "it" : "them", m->round + 1);
    memset(m->accepted, 0, m->n * sizeof(int));
    memset(m->retry, 0, m->n * sizeof(int));
    m->naccepted = m->nretry = 0;
    m->mail_failed = m->need_rset = m->dot_pending = 0;
    return 1;
}

static void
flush_message(FLUSH *f, const char *domain, const char *id)
{
    FLUSH_MSG m;

    /* Sent already, to every requested domain at once, under an earlier
     * domain of this ATRN. */
    if (seen_has(f, id))
        return;
    if (txn_select(f, &m, domain, id) < 0)
        return;
    f->messages++;
    m.start_ms = now_ms();
    /* MAIL, RCPT..., DATA: one group with PIPELINING, else one by one; a
     * further transaction for the recipients that got 452. */
    if (!txn_refused_here(f, &m)) {
        do {
            if (txn_envelope(f, &m) < 0 || txn_recipients(f, &m) < 0)
                break;
            if (txn_data(f, &m) == 1)
                return;
        } while (txn_again(f, &m));
    }
    txn_complete(f, &m);
}

/* The reply to the previous message's dot (if one is outstanding), then
 * that message's bookkeeping. */
static void
flush_finish_prev(FLUSH *f)
{
    if (f->prev != NULL)
        txn_drain(f, NULL);
    else
        flush_uncork(f);
}

/* ---- the session --------------------------------------------------------- */

static int
flush_limit_reached(const FLUSH *f)
{
    return var_flush_message_limit > 0 && f->messages >= (unsigned long) var_flush_message_limit;
}

/* Send the held mail of one domain. last: no domain follows in this
 * session, so the marks and removals are made durable after QUIT (the
 * customer is not kept waiting for an fsync, nor for the removal of a
 * big file); a crash before that re-sends, never loses. */
static void
flush_domain(FLUSH *f, const char *domain, int last)
{
    char **ids = NULL, *err = NULL;
    ssize_t n = queue_domain_ids(f->sp->queue, domain, &ids, &err);

    if (n < 0) {
        msg_warn("%s: queue lookup of %s: %s", f->sp->client, domain, err);
        free(err);
        return;
    }
    for (ssize_t i = 0; i < n && !f->stop; i++) {
        if (flush_limit_reached(f)) {
            msg_info("%s: flush_message_limit=%ld reached; the rest waits for the next ATRN",
                     f->sp->client, var_flush_message_limit);
            break;
        }
        flush_message(f, domain, ids[i]);
    }
    flush_finish_prev(f);
    queue_ids_free(&ids, (size_t) n);
    /* Make this domain's marks and index removals durable before the next
     * domain's lookups (after the last domain: odmrd_flush_run, after
     * QUIT). */
    if (!last) {
        if (queue_sync(f->sp->queue, &err) < 0) {
            msg_warn("queue_sync: %s", err);
            free(err);
        }
        f->since_sync = 0;
    }
}

void
odmrd_flush_run(ODMRD_SESSION *sp)
{
    FLUSH f;
    char *err = NULL;

    memset(&f, 0, sizeof(f));
    f.sp = sp;
    f.s = sp->stream;
    f.reversed_ms = now_ms();
    /* Small writes (a command group, QUIT) go out at once; flush_cork()
     * groups the bigger ones. */
    {
        int one = 1;

        (void) setsockopt(FLUSH_SOCKET_FD, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    (void) str_format(f.relay, sizeof(f.relay), "%s:%s", sp->client, sp->client_port);
    if (flush_tls_policy(&f) < 0) {
        f.hold = 1;
        f.tls_level = ODMRD_TLS_NONE;
    }

    if (flush_handshake(&f) == 0) {
        f.setup_ms = now_ms();
        for (size_t i = 0; i < sp->ndomains && !f.stop && !f.hold && !flush_limit_reached(&f);
             i++)
            flush_domain(&f, sp->domains[i], i + 1 == sp->ndomains);
        if (!f.stop || f.stop_quit) {
            SMTP_REPLY r;

            flush_set_state(&f, FLUSH_QUIT);
            if (flush_send(&f, "QUIT") == 0)
                (void) flush_read(&f, &r);
        }
    } else if (!f.stop) {
        SMTP_REPLY r;

        /* The customer refused the session politely: say goodbye. */
        flush_set_state(&f, FLUSH_QUIT);
        if (flush_send(&f, "QUIT") == 0)
            (void) flush_read(&f, &r);
    }
    /* The customer is done: let it go (TLS close_notify, then our FIN)
     * before the last bookkeeping, which it need not wait for: the fsyncs
     * and the removal of the files sent (slow for a big one). */
    (void) stream_shutdown(f.s);
    if (queue_sync(sp->queue, &err) < 0) {
        msg_warn("queue_sync: %s", err);
        free(err);
    }
    if ((f.stop || f.hold) && f.stop_reason[0])
        odmrd_collect_failure(sp, "%s", f.stop_reason);
    msg_info("%s: reversed session done: messages=%lu sent=%lu deferred=%lu bounced=%lu",
             sp->client, f.messages, f.sent, f.deferred, f.bounced);
    free(f.seen);
}
