/*
 * fetch_relay.c - the reversed session: odmr-fetch between the provider
 * (now the SMTP client) and the local MTA (SMTP or LMTP server).
 *
 * A proxy: read a command line from the provider, send it to the local
 * MTA, read the local MTA's reply and send it back unchanged. Replies of
 * the local MTA are what the provider sees, so nothing is accepted that
 * the local MTA did not accept. Commands the provider pipelined (RFC
 * 2920: MAIL, RCPT, RSET, NOOP, and DATA last) go to the local MTA as one
 * group while more of them are already read, and the replies come back in
 * order: one round trip to the local MTA per group, as the provider
 * meant, not one per command (the local MTA advertised PIPELINING, or the
 * provider would not pipeline). Every command answered here, and every
 * other command, waits for the replies owed before it. In LMTP mode RCPT
 * is not pipelined (its answer depends on the one before).
 *
 * What is not passed through:
 *   - STARTTLS, BDAT, AUTH, XCLIENT, XFORWARD, ATRN, ETRN, TURN from the
 *     provider: answered here with 502 (the provider's STARTTLS would
 *     otherwise start a handshake with the local MTA that the provider
 *     cannot finish: fetchmail's hang). The matching EHLO keywords are
 *     taken out of the local MTA's EHLO reply.
 *   - LMTP: EHLO and HELO go out as LHLO (HELO's reply is cut to its first
 *     line). LMTP answers the final dot once per accepted recipient (RFC
 *     2033 section 4.2) and the provider expects one reply: so a
 *     transaction carries one recipient. Once a RCPT of this transaction
 *     was accepted, every further RCPT gets "452 4.5.3" from us (RFC 5321
 *     section 4.5.3.1.10: the client sends it again later), and the dot's
 *     single LMTP reply is the dot reply. Nothing is lost and nothing is
 *     delivered twice: the put-off recipients stay with the provider and
 *     odmr-fetch collects again (see --max-sessions).
 *
 * Message content: lines are copied as they come, with their own line
 * ends (CRLF, or a bare LF passed as is), dot-stuffing untouched, until
 * the line "." that ends it. Only then does the local MTA see the final
 * dot: a provider that fails in the middle leaves the local MTA with an
 * unfinished transaction, which it discards.
 *
 * Timeouts are per side: local_timeout for each local reply (data_timeout
 * for the final dot's), command_timeout for the provider's next command,
 * data_timeout while the provider sends content. A local MTA that fails
 * gets the provider a 421 (451 after the content was read) and ends the
 * session; the provider keeps the mail.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch.h"
#include "log.h"
#include "smtp.h"
#include "stream.h"
#include "util.h"

#define RELAY_REPLY_LINES 64   /* EHLO lines kept; more are dropped */
#define RELAY_REPLY_LINE_MAX 1024

typedef enum {
    RELAY_GREETING = 0, /* waiting for the local MTA's 220 */
    RELAY_COMMAND,      /* waiting for the provider's next command */
    RELAY_LOCAL_REPLY,  /* waiting for the local MTA's reply to a command */
    RELAY_CONTENT,      /* copying message content */
    RELAY_DOT_REPLY,    /* waiting for the local MTA's reply to the dot */
    RELAY_QUIT,
    RELAY_DONE,
} RELAY_STATE;

static const char *const relay_state_name[] = {
    "greeting", "command", "local reply", "message content", "end of data", "QUIT", "done",
};

#define RELAY_PIPELINE_MAX 128  /* commands sent whose replies are owed */

/* What a pending reply counts toward. */
typedef enum {
    PEND_OTHER = 0,
    PEND_MAIL,
    PEND_RCPT,
} PEND_KIND;

typedef struct relay {
    STREAM *p;           /* provider */
    STREAM *l;           /* local MTA, NULL until connected */
    const FETCH_OPTIONS *opt;
    FETCH_RELAY_RESULT *res;
    RELAY_STATE state;
    char local_peer[300];
    int rcpt_ok;         /* recipients accepted in this transaction */
    char *line;          /* provider command line buffer */
    PEND_KIND pending[RELAY_PIPELINE_MAX]; /* sent, reply not yet read */
    int npending;
    void *rep;           /* RELAY_REPLY buffer for pending replies */
} RELAY;

static void
relay_enter(RELAY *r, RELAY_STATE st)
{
    if (msg_verbose > 1)
        msg_debug("relay: state %s -> %s", relay_state_name[r->state], relay_state_name[st]);
    r->state = st;
}

/* Note a local failure once (the first reason wins). */
static void ODMR_PRINTF(2, 3)
local_fail(RELAY *r, const char *fmt, ...)
{
    va_list ap;

    r->res->local_failed = 1;
    if (r->res->reason[0] != 0)
        return;
    va_start(ap, fmt);
    (void) vsnprintf(r->res->reason, sizeof(r->res->reason), fmt, ap);
    va_end(ap);
}

static void
provider_fail(RELAY *r)
{
    r->res->provider_failed = 1;
    if (r->res->reason[0] == 0)
        (void) snprintf(r->res->reason, sizeof(r->res->reason), "provider: %s in state %s",
                        stream_error_text(r->p), relay_state_name[r->state]);
}

static void
set_local_timeout(RELAY *r, long seconds)
{
    if (r->l != NULL)
        stream_set_timeout(r->l, (int) (seconds * 1000));
}

/*
 * Read one reply from the local MTA. Lines (without their end) go into
 * lines[] (up to RELAY_REPLY_LINES; the rest are read and dropped). 0 and
 * *code_r, or -1 on failure (local_fail recorded).
 */
typedef struct {
    char text[RELAY_REPLY_LINES][RELAY_REPLY_LINE_MAX];
    size_t len[RELAY_REPLY_LINES];
    int n;
    int code;
} RELAY_REPLY;

static int
local_reply(RELAY *r, RELAY_REPLY *rep)
{
    SMTP_REPLY parsed;
    char buf[RELAY_REPLY_LINE_MAX];
    size_t len;
    int flags, ret;

    smtp_reply_init(&parsed);
    rep->n = 0;
    rep->code = 0;
    for (;;) {
        ret = stream_get_line(r->l, buf, sizeof(buf), &len, &flags);
        if (ret != STREAM_OK) {
            local_fail(r, "local MTA: %s", ret == STREAM_EOF ? "lost connection"
                                          : stream_error_text(r->l));
            return -1;
        }
        if (flags & STREAM_LINE_PARTIAL) {
            /* Over-long reply line: keep the start, drop the rest. */
            char junk[RELAY_REPLY_LINE_MAX];
            size_t jl;
            int jf = STREAM_LINE_PARTIAL;

            while (jf & STREAM_LINE_PARTIAL)
                if (stream_get_line(r->l, junk, sizeof(junk), &jl, &jf) != STREAM_OK) {
                    local_fail(r, "local MTA: %s", "lost connection");
                    return -1;
                }
        }
        ret = smtp_reply_feed(&parsed, buf, len);
        if (ret < 0) {
            char clean[LOG_CLEAN_BUFSIZE];

            local_fail(r, "local MTA: malformed reply \"%s\"",
                       log_clean(clean, sizeof(clean), buf, len));
            return -1;
        }
        if (rep->n < RELAY_REPLY_LINES) {
            memcpy(rep->text[rep->n], buf, len + 1);
            rep->len[rep->n] = len;
            rep->n++;
        }
        if (ret == 1)
            break;
    }
    rep->code = parsed.code;
    return 0;
}

/* Send the reply to the provider as read; with filter_ehlo, without the
 * keywords we do not relay; with first_only, as one line. */
static void
provider_reply(RELAY *r, const RELAY_REPLY *rep, int filter_ehlo, int first_only)
{
    int keep[RELAY_REPLY_LINES];
    int last = -1;

    for (int i = 0; i < rep->n; i++) {
        keep[i] = !(filter_ehlo && i > 0 && rep->len[i] > 4 && fetch_ehlo_drop(rep->text[i] + 4));
        if (first_only && i > 0)
            keep[i] = 0;
        if (keep[i])
            last = i;
    }
    for (int i = 0; i < rep->n; i++) {
        if (!keep[i])
            continue;
        if (rep->len[i] >= 4) {
            /* Our own separator: the last line kept ends the reply. */
            (void) stream_write(r->p, rep->text[i], 3);
            (void) stream_write(r->p, i == last ? " " : "-", 1);
            (void) stream_write(r->p, rep->text[i] + 4, rep->len[i] - 4);
        } else {
            (void) stream_write(r->p, rep->text[i], rep->len[i]);
        }
        (void) stream_write(r->p, "\r\n", 2);
    }
}

static int pending_drain(RELAY *r);

/* Our own reply to the provider: after the replies owed before it. */
static void
own_reply(RELAY *r, const char *text)
{
    if (r->npending > 0 && pending_drain(r) < 0)
        return; /* the drain answered 421 */
    (void) stream_puts(r->p, text);
    (void) stream_write(r->p, "\r\n", 2);
}

/* Count a reply of a pipelined command. */
static void
pending_count(RELAY *r, PEND_KIND kind, int code)
{
    if (kind == PEND_MAIL && code >= 400)
        r->res->refused++;
    else if (kind == PEND_RCPT && code >= 200 && code < 300)
        r->rcpt_ok++;
    else if (kind == PEND_RCPT)
        r->res->refused++;
}

/* Read and relay the replies owed for pipelined commands, in order. 0, or
 * -1 when the local MTA failed (the provider got a 421). */
static int
pending_drain(RELAY *r)
{
    RELAY_REPLY *rep = r->rep;
    int n = r->npending;

    r->npending = 0;
    relay_enter(r, RELAY_LOCAL_REPLY);
    set_local_timeout(r, r->opt->local_timeout);
    for (int i = 0; i < n; i++) {
        if (local_reply(r, rep) < 0) {
            local_fail(r, "local MTA: %s", stream_error_text(r->l));
            own_reply(r, "421 4.4.2 local mail system not responding, try again later");
            return -1;
        }
        provider_reply(r, rep, 0, 0);
        pending_count(r, r->pending[i], rep->code);
    }
    return 0;
}

/* A command that may be pipelined: sent now, its reply read once the
 * provider has no further command read ahead (or the queue is full). */
static int
pipelined_command(RELAY *r, const char *line, size_t len, PEND_KIND kind)
{
    if (r->npending == RELAY_PIPELINE_MAX && pending_drain(r) < 0)
        return -1;
    if (stream_write(r->l, line, len) < 0 || stream_write(r->l, "\r\n", 2) < 0) {
        local_fail(r, "local MTA: %s", stream_error_text(r->l));
        own_reply(r, "421 4.4.2 local mail system not responding, try again later");
        return -1;
    }
    r->pending[r->npending++] = kind;
    if (stream_pending(r->p) == 0)
        return pending_drain(r);
    return 0;
}

/* Send a command line to the local MTA and relay its reply, after the
 * replies owed before it (a DATA pipelined after MAIL and RCPT goes out
 * with them). 0, or -1 when the local MTA failed (the provider got a
 * 421). */
static int
local_command(RELAY *r, const char *line, size_t len, RELAY_REPLY *rep, int filter_ehlo,
              int first_only)
{
    if (r->npending > 0) {
        if (stream_write(r->l, line, len) < 0 || stream_write(r->l, "\r\n", 2) < 0) {
            local_fail(r, "local MTA: %s", stream_error_text(r->l));
            own_reply(r, "421 4.4.2 local mail system not responding, try again later");
            return -1;
        }
        if (pending_drain(r) < 0)
            return -1;
        relay_enter(r, RELAY_LOCAL_REPLY);
        set_local_timeout(r, r->opt->local_timeout);
        if (local_reply(r, rep) < 0) {
            local_fail(r, "local MTA: %s", stream_error_text(r->l));
            own_reply(r, "421 4.4.2 local mail system not responding, try again later");
            return -1;
        }
        provider_reply(r, rep, filter_ehlo, first_only);
        return 0;
    }
    relay_enter(r, RELAY_LOCAL_REPLY);
    set_local_timeout(r, r->opt->local_timeout);
    if (stream_write(r->l, line, len) < 0 || stream_write(r->l, "\r\n", 2) < 0
        || local_reply(r, rep) < 0) {
        local_fail(r, "local MTA: %s", stream_error_text(r->l));
        own_reply(r, "421 4.4.2 local mail system not responding, try again later");
        return -1;
    }
    provider_reply(r, rep, filter_ehlo, first_only);
    return 0;
}

/* Copy the content from the provider to the local MTA until the final
 * dot. 1: the dot was read and sent on; 0: the local MTA failed meanwhile
 * (the content was read to its end anyway); -1: the provider failed.
 *
 * In bulk, straight from the provider stream's buffer: only line starts
 * are looked at (for "." CRLF, or "." LF), and everything up to the final
 * dot goes to the local MTA as it came, in one write per buffer. A "." or
 * ".\r" at a line start that ends the buffer is held back (carry) until
 * the next bytes tell whether it is the end. Bytes after the final dot
 * (a pipelined command) stay in the stream for the command loop. */
static int
relay_content(RELAY *r)
{
    int at_line_start = 1, local_ok = 1, ret = -1;
    char carry[2];
    size_t ncarry = 0;

    relay_enter(r, RELAY_CONTENT);
    stream_set_timeout(r->p, (int) (r->opt->data_timeout * 1000));
    set_local_timeout(r, r->opt->local_timeout);
    for (;;) {
        const void *vp;
        const char *buf;
        ssize_t got = stream_peek(r->p, &vp);
        size_t n, i = 0, start, term = 0;

        if (got < 0) {
            provider_fail(r);
            goto out;
        }
        buf = vp;
        n = (size_t) got;
        /* A held-back "." or ".\r": the end, or ordinary content. */
        if (ncarry > 0) {
            if (buf[0] == '\n') {
                stream_skip(r->p, 1);
                goto final_dot;
            }
            if (ncarry == 1 && buf[0] == '\r') {
                carry[ncarry++] = '\r';
                stream_skip(r->p, 1);
                continue;
            }
            if (local_ok && stream_write(r->l, carry, ncarry) < 0)
                local_ok = 0;
            /* ".\rX": the CR did not end the line. */
            at_line_start = 0;
            ncarry = 0;
        }
        start = i;
        while (i < n) {
            const char *nl;

            if (at_line_start && buf[i] == '.') {
                if (i + 1 < n && buf[i + 1] == '\n') {
                    term = 2;
                } else if (i + 2 < n && buf[i + 1] == '\r' && buf[i + 2] == '\n') {
                    term = 3;
                } else if (i + 1 == n || (i + 2 == n && buf[i + 1] == '\r')) {
                    /* Cut at the end of the buffer: decide with the next. */
                    ncarry = n - i;
                    memcpy(carry, buf + i, ncarry);
                    break;
                }
                if (term)
                    break;
            }
            if ((nl = memchr(buf + i, '\n', n - i)) == NULL) {
                at_line_start = 0;
                i = n;
                break;
            }
            i = (size_t) (nl - buf) + 1;
            at_line_start = 1;
        }
        if (local_ok && i > start && stream_write(r->l, buf + start, i - start) < 0)
            local_ok = 0;
        if (term) {
            stream_skip(r->p, i + term);
            goto final_dot;
        }
        stream_skip(r->p, ncarry > 0 ? i + ncarry : i);
    }
final_dot:
    if (local_ok && (stream_write(r->l, ".\r\n", 3) < 0 || stream_flush(r->l) < 0))
        local_ok = 0;
    ret = local_ok;
out:
    if (!local_ok)
        local_fail(r, "local MTA: %s while sending message content", stream_error_text(r->l));
    return ret;
}

/* DATA: 354 from the local MTA, the content, the dot's reply. */
static int
relay_data(RELAY *r, const char *line, size_t len)
{
    RELAY_REPLY *rep = x_malloc(sizeof(*rep));
    int ret = -1, c;

    if (local_command(r, line, len, rep, 0, 0) < 0)
        goto out;
    if (rep->code != 354) {
        if (rep->code >= 400)
            r->res->refused++;
        ret = 0;
        goto out;
    }
    c = relay_content(r);
    if (c < 0)
        goto out;
    if (c == 0) {
        own_reply(r, "451 4.4.2 local mail system failed during the message, try again later");
        goto out;
    }
    relay_enter(r, RELAY_DOT_REPLY);
    set_local_timeout(r, r->opt->data_timeout);
    if (local_reply(r, rep) < 0) {
        own_reply(r, "451 4.4.2 local mail system did not answer the end of data, "
                     "try again later");
        goto out;
    }
    provider_reply(r, rep, 0, 0);
    if (rep->code >= 200 && rep->code < 300) {
        r->res->messages++;
        r->res->recipients += (unsigned long) r->rcpt_ok;
    } else {
        r->res->refused++;
    }
    r->rcpt_ok = 0;
    ret = 0;
out:
    free(rep);
    return ret;
}

/* Verbs answered here, never passed to the local MTA. */
static const char *const refused_verbs[] = {
    "STARTTLS", "BDAT", "AUTH", "XCLIENT", "XFORWARD", "ATRN", "ETRN", "TURN",
};

/* One provider command. 0 go on, 1 session over (QUIT), -1 failure. */
static int
relay_command(RELAY *r, const char *line, size_t len)
{
    RELAY_REPLY *rep = x_malloc(sizeof(*rep));
    SMTP_CMD cmd;
    int ret = 0;

    if (smtp_cmd_split(line, len, &cmd) < 0) {
        own_reply(r, "500 5.5.2 Error: bad syntax");
        goto out;
    }
    for (size_t i = 0; i < ODMR_ARRAY_LEN(refused_verbs); i++)
        if (strcmp(cmd.verb, refused_verbs[i]) == 0) {
            /* Not offered: the provider's STARTTLS must not reach the
             * local MTA (the session is already encrypted, or was not
             * meant to be by us). */
            own_reply(r, "502 5.5.1 Error: command not implemented");
            goto out;
        }
    if (strcmp(cmd.verb, "EHLO") == 0 || strcmp(cmd.verb, "HELO") == 0) {
        int helo = strcmp(cmd.verb, "HELO") == 0;

        if (r->opt->local_lmtp) {
            char *lhlo = x_asprintf("LHLO %s", cmd.args);

            ret = local_command(r, lhlo, strlen(lhlo), rep, 1, helo);
            free(lhlo);
        } else {
            ret = local_command(r, line, len, rep, 1, 0);
        }
        r->rcpt_ok = 0;
    } else if (strcmp(cmd.verb, "RCPT") == 0) {
        if (r->opt->local_lmtp && r->rcpt_ok > 0) {
            r->res->split++;
            own_reply(r, "452 4.5.3 Error: one recipient per transaction here, "
                         "send the others again");
            goto out;
        }
        if (!r->opt->local_lmtp) {
            ret = pipelined_command(r, line, len, PEND_RCPT);
            goto out;
        }
        ret = local_command(r, line, len, rep, 0, 0);
        if (ret == 0)
            pending_count(r, PEND_RCPT, rep->code);
    } else if (strcmp(cmd.verb, "DATA") == 0) {
        ret = relay_data(r, line, len);
    } else if (strcmp(cmd.verb, "QUIT") == 0) {
        if (r->npending > 0 && pending_drain(r) < 0) {
            ret = -1;
            goto out;
        }
        relay_enter(r, RELAY_QUIT);
        set_local_timeout(r, r->opt->local_timeout);
        if (stream_puts(r->l, "QUIT\r\n") < 0 || local_reply(r, rep) < 0)
            own_reply(r, "221 2.0.0 Bye");
        else
            provider_reply(r, rep, 0, 0);
        ret = 1;
    } else {
        /* MAIL, RSET, NOOP, VRFY, ... as they are; those RFC 2920 lets a
         * client pipeline go out with the group. */
        int mail = strcmp(cmd.verb, "MAIL") == 0;

        if (mail || strcmp(cmd.verb, "RSET") == 0)
            r->rcpt_ok = 0;
        if (mail || strcmp(cmd.verb, "RSET") == 0 || strcmp(cmd.verb, "NOOP") == 0) {
            ret = pipelined_command(r, line, len, mail ? PEND_MAIL : PEND_OTHER);
        } else {
            ret = local_command(r, line, len, rep, 0, 0);
        }
    }
out:
    free(rep);
    return ret;
}

void
fetch_relay(STREAM *p, const FETCH_OPTIONS *opt, FETCH_RELAY_RESULT *res)
{
    RELAY r = {.p = p, .opt = opt, .res = res, .state = RELAY_GREETING};
    RELAY_REPLY *rep = x_malloc(sizeof(*rep));
    char *error = NULL;
    size_t len;
    int fd, flags, rc;

    memset(res, 0, sizeof(*res));
    r.line = x_malloc(opt->line_max + 1);
    r.rep = x_malloc(sizeof(RELAY_REPLY));
    fd = fetch_connect(opt->local_host, opt->local_port, opt->local_path,
                       (int) (opt->connect_timeout * 1000), r.local_peer,
                       sizeof(r.local_peer), &error);
    if (fd < 0) {
        local_fail(&r, "local MTA: %s", error);
        own_reply(&r, "421 4.3.0 local mail system unavailable, try again later");
        (void) stream_flush(p);
        goto done;
    }
    r.l = stream_open(fd, fd);
    set_local_timeout(&r, opt->local_timeout);
    if (local_reply(&r, rep) < 0) {
        own_reply(&r, "421 4.3.0 local mail system unavailable, try again later");
        (void) stream_flush(p);
        goto done;
    }
    /* The local MTA's greeting is ours. A refusal (554) goes to the
     * provider as well; it will QUIT. */
    provider_reply(&r, rep, 0, 0);
    if (rep->code != 220)
        local_fail(&r, "local MTA greeting: %.3s", rep->text[0]);
    for (;;) {
        relay_enter(&r, RELAY_COMMAND);
        stream_set_timeout(p, (int) (opt->command_timeout * 1000));
        rc = stream_get_line(p, r.line, opt->line_max + 1, &len, &flags);
        if (rc != STREAM_OK) {
            provider_fail(&r);
            break;
        }
        if (flags & STREAM_LINE_PARTIAL) {
            while ((flags & STREAM_LINE_PARTIAL)
                   && stream_get_line(p, r.line, opt->line_max + 1, &len, &flags) == STREAM_OK)
                ;
            own_reply(&r, "500 5.5.0 Error: line too long");
            continue;
        }
        rc = relay_command(&r, r.line, len);
        if (rc != 0)
            break;
    }
    (void) stream_flush(p);
    relay_enter(&r, RELAY_DONE);
done:
    if (r.l != NULL)
        stream_close(&r.l, 1);
    x_free(&error);
    free(r.line);
    free(r.rep);
    free(rep);
}
