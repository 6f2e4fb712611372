/*
 * NAME
 *	odmr-store - LMTP server that writes mail into the ODMR hold queue
 * SYNOPSIS
 *	odmr-store [-c config_dir] [-o name=value] [-v]
 * DESCRIPTION
 *	odmr-store speaks LMTP (RFC 2033) on its standard input and output.
 *	Postfix's spawn(8) runs it once per connection on a UNIX-domain socket
 *	in Postfix's private/ directory; Postfix's lmtp(8) delivers to it when
 *	the transport map routes a customer domain there:
 *
 *	    /etc/postfix/transport:
 *	        example.org   odmr:unix:private/odmr-store
 *	    /etc/postfix/master.cf:
 *	        odmr       unix  -  -  n  -  -  lmtp
 *	            -o lmtp_send_xforward_command=yes
 *	        odmr-store unix  -  n  n  -  -  spawn user=odmr
 *	            argv=/usr/lib/postfix-odmr/odmr-store
 *
 *	LHLO announces PIPELINING, ENHANCEDSTATUSCODES, 8BITMIME, SIZE, DSN,
 *	SMTPUTF8 and XFORWARD. Every ESMTP parameter of MAIL FROM and RCPT TO
 *	(SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY, ORCPT) is kept in the queue
 *	file so that the flush to the customer can pass it on. XFORWARD
 *	attributes (the original client, HELO name and Postfix queue ID) are
 *	kept for logging and for delivery status notifications.
 *
 *	A recipient is accepted only when its domain has an entry in
 *	domain_maps (the customers who may collect it); any other domain gets
 *	550 5.1.2. After the final dot the message is written, fsync'd,
 *	renamed into place and indexed (see queue.h) before any 250 goes out:
 *	one reply per accepted recipient, as LMTP requires. Any failure on the
 *	way (disk full, lock timeout, index error) answers 451 for every
 *	recipient, and nothing of the message stays visible, so Postfix keeps
 *	it and tries again. A process of the queue that crashed costs a pause,
 *	not a 451: the index waits for another process's recovery (up to 60 s,
 *	see CRASH RECOVERY in queue.h). A 451 means the disk ("queue file
 *	write error") or the index ("queue index unavailable") is really
 *	unusable, and the log line says which.
 *
 *	The content is stored in SMTP wire form: CRLF line ends and
 *	dot-stuffing as received. A line ended by a bare LF is stored with
 *	CRLF; only CR LF "." CR LF ends the data, so a bare-LF "." line is
 *	content (stored dot-stuffed), not an end of data.
 * SECURITY
 *	odmr-store refuses to run as root. spawn(8) runs it as the queue
 *	owner (user odmr); it never writes to standard error, which is the
 *	client socket under spawn(8).
 * DIAGNOSTICS
 *	Problems go to syslog (facility mail, tag postfix/odmr-store) and to
 *	log_file when set. Exit status 0 after QUIT or end of input, 75
 *	(EX_TEMPFAIL) on a fatal error such as a bad configuration.
 * CONFIGURATION PARAMETERS
 *	Read from odmr.cf in the configuration directory (-c, $MAIL_CONFIG,
 *	or /etc/postfix).
 *	queue_directory (/var/spool/postfix-odmr)
 *	domain_maps (hash:$config_directory/odmr_domains)
 *	message_size_limit (10240000)
 *	recipient_limit (1000)
 *	line_length_limit (2048)
 *	command_timeout (300s), session_timeout (3600s)
 *	lmtp_banner ($myhostname LMTP odmr-store)
 *	index_sync (yes)
 *	syslog_name (postfix), syslog_facility (mail), log_file (empty)
 * STANDARDS
 *	RFC 2033 (LMTP), RFC 5321 (SMTP), RFC 1870 (SIZE), RFC 6152
 *	(8BITMIME), RFC 3461 (DSN), RFC 6531 (SMTPUTF8), RFC 2034 (enhanced
 *	status codes), RFC 2920 (PIPELINING).
 * SEE ALSO
 *	odmrd(8), odmr-enqueue(8), odmr-queue(8), spawn(8), lmtp(8)
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "maps.h"
#include "queue.h"
#include "smtp.h"
#include "stream.h"
#include "util.h"

/* Session states: which commands make sense when. */
enum store_state {
    ST_GREETED = 1 << 0, /* before LHLO */
    ST_READY = 1 << 1,   /* after LHLO, no transaction */
    ST_MAIL = 1 << 2,    /* MAIL FROM accepted */
};
#define ST_ANY (ST_GREETED | ST_READY | ST_MAIL)

#define DATA_LINE_MAX 8192

typedef struct store_session STORE;

typedef struct {
    const char *verb;
    int states;                   /* where the verb is allowed */
    void (*action)(STORE *, const SMTP_CMD *);
} STORE_CMD;

struct store_session {
    STREAM *stream;
    QUEUE *queue;
    MAPS *domain_maps;
    enum store_state state;
    char client[64];         /* who connected (for our own logs) */
    /* XFORWARD attributes for the current transaction */
    char *xf_name, *xf_addr, *xf_helo, *xf_proto, *xf_ident;
    /* the transaction */
    QUEUE_ENV env;
    size_t rcpt_alloc;
    int quit;
    long errors;
};

static void
xforward_reset(STORE *sp)
{
    x_free(&sp->xf_name);
    x_free(&sp->xf_addr);
    x_free(&sp->xf_helo);
    x_free(&sp->xf_proto);
    x_free(&sp->xf_ident);
}

static void
transaction_reset(STORE *sp)
{
    queue_env_free(&sp->env);
    memset(&sp->env, 0, sizeof(sp->env));
    sp->rcpt_alloc = 0;
    xforward_reset(sp);
    if (sp->state == ST_MAIL)
        sp->state = ST_READY;
}

static void
reply(STORE *sp, int code, const char *enh, const char *text)
{
    (void) smtp_reply_send(sp->stream, code, enh, "%s", text);
}

/* ---- LHLO ------------------------------------------------------------- */

static void
cmd_lhlo(STORE *sp, const SMTP_CMD *cmd)
{
    char line[128];

    if (*cmd->args == 0) {
        reply(sp, 501, "5.5.4", "Syntax: LHLO hostname");
        return;
    }
    transaction_reset(sp);
    (void) smtp_reply_send_line(sp->stream, 250, 0, var_myhostname);
    (void) smtp_reply_send_line(sp->stream, 250, 0, "PIPELINING");
    if (var_message_size_limit > 0) {
        (void) str_format(line, sizeof(line), "SIZE %ld", var_message_size_limit);
        (void) smtp_reply_send_line(sp->stream, 250, 0, line);
    } else {
        (void) smtp_reply_send_line(sp->stream, 250, 0, "SIZE");
    }
    (void) smtp_reply_send_line(sp->stream, 250, 0, "ENHANCEDSTATUSCODES");
    (void) smtp_reply_send_line(sp->stream, 250, 0, "8BITMIME");
    (void) smtp_reply_send_line(sp->stream, 250, 0, "DSN");
    if (var_smtputf8_enable)
        (void) smtp_reply_send_line(sp->stream, 250, 0, "SMTPUTF8");
    (void) smtp_reply_send_line(sp->stream, 250, 1, "XFORWARD NAME ADDR PROTO HELO IDENT");
    sp->state = ST_READY;
}

static void
cmd_helo(STORE *sp, const SMTP_CMD *cmd)
{
    reply(sp, 500, "5.5.1", "Error: this is an LMTP server: use LHLO");
}

/* ---- XFORWARD (Postfix's lmtp_send_xforward_command) ------------------ */

static void
cmd_xforward(STORE *sp, const SMTP_CMD *cmd)
{
    char *args = x_strdup(cmd->args), *save = NULL;
    char **slot;
    int bad = 0;

    if (*args == 0)
        bad = 1;
    for (char *tok = strtok_r(args, " ", &save); tok && !bad; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        char value[256];

        if (eq == NULL) {
            bad = 1;
            break;
        }
        *eq++ = 0;
        if (str_casecmp(tok, "NAME") == 0)
            slot = &sp->xf_name;
        else if (str_casecmp(tok, "ADDR") == 0)
            slot = &sp->xf_addr;
        else if (str_casecmp(tok, "HELO") == 0)
            slot = &sp->xf_helo;
        else if (str_casecmp(tok, "PROTO") == 0)
            slot = &sp->xf_proto;
        else if (str_casecmp(tok, "IDENT") == 0)
            slot = &sp->xf_ident;
        else if (str_casecmp(tok, "SOURCE") == 0)
            continue;
        else {
            bad = 1;
            break;
        }
        if (xtext_decode(eq, value, sizeof(value)) < 0) {
            bad = 1;
            break;
        }
        /* Postfix sends [UNAVAILABLE] / [TEMPUNAVAIL] for unknown values. */
        x_free(slot);
        if (value[0] != '[' || strcmp(value, "[UNAVAILABLE]") != 0)
            *slot = x_strdup(value);
        for (char *p = *slot; p && *p; p++)
            if ((unsigned char) *p < 0x21 || (unsigned char) *p > 0x7e)
                *p = '?';
    }
    free(args);
    if (bad)
        reply(sp, 501, "5.5.4", "Syntax: XFORWARD attribute=value...");
    else
        reply(sp, 250, "2.0.0", "Ok");
}

/* ---- MAIL FROM ---------------------------------------------------------- */

static int
param_value_ok(const char *value, size_t max)
{
    return value != NULL && *value != 0 && strlen(value) <= max;
}

static void
cmd_mail(STORE *sp, const SMTP_CMD *cmd)
{
    char *args = x_strdup(cmd->args);
    SMTP_PATH path;
    const char *why;
    long long size = 0;

    if (smtp_path_parse(args, "FROM", 1, &path, &why) < 0) {
        reply(sp, 501, NULL, why);
        free(args);
        return;
    }
    /* Parameters first: nothing is kept when one of them is bad. */
    for (int i = 0; i < path.nparam; i++) {
        const SMTP_PARAM *p = &path.param[i];

        /* Twice the same one (fuzz_store_lmtp found that the second BODY,
         * RET or ENVID leaked the first). */
        for (int j = 0; j < i; j++) {
            if (strcmp(path.param[j].name, p->name) == 0) {
                reply(sp, 501, "5.5.4", "Error: duplicate MAIL parameter");
                goto out;
            }
        }

        if (strcmp(p->name, "SIZE") == 0) {
            if (p->value == NULL || parse_size(p->value, 0, 1LL << 50, &size) < 0
                || p->value[strspn(p->value, "0123456789")] != 0) {
                reply(sp, 501, "5.5.4", "Bad SIZE parameter");
                goto out;
            }
            if (var_message_size_limit > 0 && size > var_message_size_limit) {
                reply(sp, 552, "5.3.4", "Message size exceeds fixed limit");
                goto out;
            }
        } else if (strcmp(p->name, "BODY") == 0) {
            if (p->value == NULL
                || (str_casecmp(p->value, "7BIT") != 0 && str_casecmp(p->value, "8BITMIME") != 0)) {
                reply(sp, 501, "5.5.4", "Unsupported BODY parameter value");
                goto out;
            }
        } else if (strcmp(p->name, "SMTPUTF8") == 0) {
            if (p->value != NULL || !var_smtputf8_enable) {
                reply(sp, 555, "5.5.4", "Unsupported SMTPUTF8 parameter");
                goto out;
            }
        } else if (strcmp(p->name, "RET") == 0) {
            if (p->value == NULL
                || (str_casecmp(p->value, "FULL") != 0 && str_casecmp(p->value, "HDRS") != 0)) {
                reply(sp, 501, "5.5.4", "Bad RET parameter syntax");
                goto out;
            }
        } else if (strcmp(p->name, "ENVID") == 0) {
            /* RFC 3461: at most 100 characters of xtext. */
            if (!param_value_ok(p->value, 100) || !xtext_valid(p->value)) {
                reply(sp, 501, "5.5.4", "Bad ENVID parameter syntax");
                goto out;
            }
        } else {
            reply(sp, 555, "5.5.4", "Unsupported option");
            goto out;
        }
    }
    /* A new transaction; the XFORWARD attributes sent before it stay. */
    queue_env_free(&sp->env);
    memset(&sp->env, 0, sizeof(sp->env));
    sp->rcpt_alloc = 0;
    sp->env.sender = x_strdup(path.addr);
    sp->env.size = size;
    for (int i = 0; i < path.nparam; i++) {
        const SMTP_PARAM *p = &path.param[i];
        char *upper = p->value ? x_strdup(p->value) : NULL;

        if (strcmp(p->name, "BODY") == 0) {
            sp->env.body = str_upper(upper);
            upper = NULL;
        } else if (strcmp(p->name, "RET") == 0) {
            sp->env.ret = str_upper(upper);
            upper = NULL;
        } else if (strcmp(p->name, "ENVID") == 0) {
            sp->env.envid = upper;
            upper = NULL;
        } else if (strcmp(p->name, "SMTPUTF8") == 0) {
            sp->env.smtputf8 = 1;
        }
        free(upper);
    }
    sp->state = ST_MAIL;
    reply(sp, 250, "2.1.0", "Ok");
out:
    free(args);
}

/* ---- RCPT TO ------------------------------------------------------------ */

static int
notify_valid(const char *v)
{
    char *copy, *save = NULL;
    int never = 0, count = 0, ok = 1;

    if (v == NULL || *v == 0)
        return 0;
    copy = x_strdup(v);
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        count++;
        if (str_casecmp(tok, "NEVER") == 0)
            never = 1;
        else if (str_casecmp(tok, "SUCCESS") != 0 && str_casecmp(tok, "FAILURE") != 0
                 && str_casecmp(tok, "DELAY") != 0)
            ok = 0;
    }
    free(copy);
    /* NEVER stands alone (RFC 3461 section 4.1). */
    return ok && count > 0 && (!never || count == 1);
}

static int
orcpt_valid(const char *v)
{
    const char *semi;

    if (!param_value_ok(v, 500) || (semi = strchr(v, ';')) == NULL || semi == v)
        return 0;
    for (const char *p = v; p < semi; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
              || *p == '-'))
            return 0;
    return xtext_valid(semi + 1);
}

static void
cmd_rcpt(STORE *sp, const SMTP_CMD *cmd)
{
    char *args = x_strdup(cmd->args);
    SMTP_PATH path;
    const char *why, *domain;
    const char *notify = NULL, *orcpt = NULL;
    char *value = NULL, *error = NULL, clean[LOG_CLEAN_BUFSIZE];
    char lower[256];
    QUEUE_RCPT *r;

    if (smtp_path_parse(args, "TO", 0, &path, &why) < 0) {
        reply(sp, 501, NULL, why);
        goto out;
    }
    for (int i = 0; i < path.nparam; i++) {
        const SMTP_PARAM *p = &path.param[i];

        if (strcmp(p->name, "NOTIFY") == 0) {
            if (!notify_valid(p->value)) {
                reply(sp, 501, "5.5.4", "Bad NOTIFY parameter syntax");
                goto out;
            }
            notify = p->value;
        } else if (strcmp(p->name, "ORCPT") == 0) {
            if (!orcpt_valid(p->value)) {
                reply(sp, 501, "5.5.4", "Bad ORCPT parameter syntax");
                goto out;
            }
            orcpt = p->value;
        } else {
            reply(sp, 555, "5.5.4", "Unsupported option");
            goto out;
        }
    }
    if ((domain = addr_domain(path.addr)) == NULL || strlen(domain) >= sizeof(lower)) {
        reply(sp, 550, "5.1.3", "Recipient address rejected: no domain part");
        goto out;
    }
    str_copy(lower, domain, sizeof(lower));
    str_lower(lower);
    if (!domain_valid(lower)) {
        reply(sp, 550, "5.1.2", "Recipient address rejected: bad domain syntax");
        goto out;
    }
    if (sp->env.rcpt_count >= (size_t) var_recipient_limit) {
        reply(sp, 452, "4.5.3", "Error: too many recipients");
        goto out;
    }
    switch (maps_lookup(sp->domain_maps, lower, &value, &error)) {
    case MAP_FOUND:
        break;
    case MAP_NOTFOUND:
        msg_info("reject: RCPT to=<%s>: domain %s is not held for on-demand relay",
                 log_clean(clean, sizeof(clean), path.addr, strlen(path.addr)), lower);
        reply(sp, 550, "5.1.2", "Recipient address rejected: domain not held for on-demand relay");
        goto out;
    default:
        msg_warn("domain_maps lookup of %s failed: %s", lower, error);
        reply(sp, 451, "4.3.0", "Recipient address lookup failed: try again later");
        goto out;
    }
    if (sp->env.rcpt_count >= sp->rcpt_alloc) {
        sp->rcpt_alloc = sp->rcpt_alloc ? sp->rcpt_alloc * 2 : 8;
        sp->env.rcpt = x_realloc(sp->env.rcpt, sp->rcpt_alloc * sizeof(QUEUE_RCPT));
    }
    r = &sp->env.rcpt[sp->env.rcpt_count++];
    memset(r, 0, sizeof(*r));
    r->address = x_strdup(path.addr);
    r->notify = notify ? str_upper(x_strdup(notify)) : NULL;
    r->orcpt = orcpt ? x_strdup(orcpt) : NULL;
    r->status = QUEUE_RCPT_QUEUED;
    reply(sp, 250, "2.1.5", "Ok");
out:
    free(value);
    free(error);
    free(args);
}

/* ---- DATA --------------------------------------------------------------- */

/*
 * Read the message up to CR LF "." CR LF and write it in wire form.
 * Returns 0 when the terminator was seen, -1 when the connection failed
 * (the caller ends the session; nothing was accepted).
 * *too_big_r is set when the content went past message_size_limit (the rest
 * is read and thrown away so that the replies stay in step).
 */
static int
data_receive(STORE *sp, QUEUE_WRITER *w, int *too_big_r, long long *size_r)
{
    char buf[DATA_LINE_MAX];
    size_t len;
    int flags, at_line_start = 1, write_ok = (w != NULL);
    long long size = 0;

    *too_big_r = 0;
    for (;;) {
        if (stream_get_line(sp->stream, buf, sizeof(buf), &len, &flags) != STREAM_OK)
            return -1;
        if (flags & STREAM_LINE_EOF)
            return -1;
        /* The one end of data: "." alone on a CRLF line. */
        if (at_line_start && (flags & STREAM_LINE_CRLF) && len == 1 && buf[0] == '.')
            break;
        /* A bare-LF "." line is content: store it dot-stuffed. */
        if (at_line_start && (flags & STREAM_LINE_LF) && len == 1 && buf[0] == '.') {
            buf[1] = '.';
            len = 2;
        }
        size += (long long) len + ((flags & STREAM_LINE_PARTIAL) ? 0 : 2);
        if (var_message_size_limit > 0 && size > var_message_size_limit)
            *too_big_r = 1;
        if (write_ok && !*too_big_r) {
            if (queue_writer_write(w, buf, len) < 0
                || (!(flags & STREAM_LINE_PARTIAL) && queue_writer_write(w, "\r\n", 2) < 0))
                write_ok = 0; /* the error is kept for commit */
        }
        at_line_start = !(flags & STREAM_LINE_PARTIAL);
    }
    *size_r = size;
    return 0;
}

static void
reply_each(STORE *sp, int code, const char *enh, const char *text)
{
    for (size_t i = 0; i < sp->env.rcpt_count; i++)
        reply(sp, code, enh, text);
}

static void
log_accepted(STORE *sp, const char *id)
{
    char clean[LOG_CLEAN_BUFSIZE];
    const QUEUE_ENV *env = &sp->env;

    msg_info("%s: from=<%s>, size=%lld, nrcpt=%zu%s%s (held for on-demand relay)", id,
             log_clean(clean, sizeof(clean), env->sender, strlen(env->sender)), env->size,
             env->rcpt_count, sp->xf_ident ? ", orig_queue_id=" : "",
             sp->xf_ident ? sp->xf_ident : "");
    for (size_t i = 0; i < env->rcpt_count; i++)
        msg_info("%s: to=<%s>, status=held", id,
                 log_clean(clean, sizeof(clean), env->rcpt[i].address,
                           strlen(env->rcpt[i].address)));
}

static void
cmd_data(STORE *sp, const SMTP_CMD *cmd)
{
    QUEUE_WRITER *w;
    char *error = NULL, id[QUEUE_ID_LEN + 1], text[128];
    int too_big;
    long long size;

    if (*cmd->args) {
        reply(sp, 501, "5.5.4", "Syntax: DATA");
        return;
    }
    if (sp->env.rcpt_count == 0) {
        reply(sp, 503, "5.5.1", "Error: need RCPT command");
        return;
    }
    if (sp->xf_addr || sp->xf_name) {
        sp->env.client = x_asprintf("%s[%s]", sp->xf_name ? sp->xf_name : "unknown",
                                    sp->xf_addr ? sp->xf_addr : "unknown");
    }
    if (sp->xf_helo)
        sp->env.helo = x_strdup(sp->xf_helo);
    sp->env.protocol = x_strdup(sp->xf_proto ? sp->xf_proto : "LMTP");
    now_wall(&sp->env.arrival_sec, &sp->env.arrival_usec);

    /* Open the queue file first: if that fails there is no point reading. */
    w = queue_writer_begin(sp->queue, &sp->env, &error);
    if (w == NULL) {
        msg_warn("cannot create queue file: %s", error);
        x_free(&error);
    }
    reply(sp, 354, NULL, "End data with <CR><LF>.<CR><LF>");
    if (data_receive(sp, w, &too_big, &size) < 0) {
        msg_warn("lost connection after DATA from %s: %s", sp->client,
                 stream_error_text(sp->stream));
        if (w)
            queue_writer_abort(&w);
        sp->quit = 1;
        return;
    }
    if (too_big) {
        if (w)
            queue_writer_abort(&w);
        reply_each(sp, 552, "5.3.4", "Message size exceeds fixed limit");
        msg_info("reject: message of %lld bytes from <%s> exceeds message_size_limit %ld", size,
                 sp->env.sender, var_message_size_limit);
        transaction_reset(sp);
        return;
    }
    if (w == NULL) {
        reply_each(sp, 451, "4.3.0", "Error: queue file write error");
        transaction_reset(sp);
        return;
    }
    queue_fault("before-commit");
    if (queue_writer_commit(&w, id, &error) < 0) {
        int index = strncmp(error, "queue index:", 12) == 0;

        msg_warn("queue file commit failed (%s): %s", index ? "index" : "disk", error);
        free(error);
        reply_each(sp, 451, "4.3.0",
                   index ? "Error: queue index unavailable" : "Error: queue file write error");
        transaction_reset(sp);
        return;
    }
    /* The size the client declared or, when none, what arrived. */
    if (sp->env.size == 0)
        sp->env.size = size;
    log_accepted(sp, id);
    queue_fault("before-reply");
    (void) str_format(text, sizeof(text), "Ok: held as %s", id);
    reply_each(sp, 250, "2.0.0", text);
    /* A customer waiting in ATRN for one of these domains wakes now. */
    queue_wake_env(var_queue_dir, &sp->env);
    transaction_reset(sp);
}

/* ---- small commands ----------------------------------------------------- */

static void
cmd_rset(STORE *sp, const SMTP_CMD *cmd)
{
    transaction_reset(sp);
    reply(sp, 250, "2.0.0", "Ok");
}

static void
cmd_noop(STORE *sp, const SMTP_CMD *cmd)
{
    reply(sp, 250, "2.0.0", "Ok");
}

static void
cmd_quit(STORE *sp, const SMTP_CMD *cmd)
{
    reply(sp, 221, "2.0.0", "Bye");
    sp->quit = 1;
}

static void
cmd_vrfy(STORE *sp, const SMTP_CMD *cmd)
{
    reply(sp, 502, "5.5.1", "Error: command not implemented");
}

static const STORE_CMD store_cmds[] = {
    {"LHLO", ST_ANY, cmd_lhlo},
    {"HELO", ST_ANY, cmd_helo},
    {"EHLO", ST_ANY, cmd_helo},
    {"XFORWARD", ST_READY, cmd_xforward},
    {"MAIL", ST_READY, cmd_mail},
    {"RCPT", ST_MAIL, cmd_rcpt},
    {"DATA", ST_MAIL, cmd_data},
    {"RSET", ST_ANY, cmd_rset},
    {"NOOP", ST_ANY, cmd_noop},
    {"QUIT", ST_ANY, cmd_quit},
    {"VRFY", ST_ANY, cmd_vrfy},
    {"EXPN", ST_ANY, cmd_vrfy},
};

/* The one place that compares verbs. */
static void
dispatch(STORE *sp, const char *line, size_t len)
{
    SMTP_CMD cmd;
    const STORE_CMD *c = NULL;

    if (memchr(line, 0, len) != NULL) {
        reply(sp, 500, "5.5.2", "Error: command contains a NUL byte");
        sp->errors++;
        return;
    }
    if (smtp_cmd_split(line, len, &cmd) < 0 || cmd.verb[0] == 0) {
        reply(sp, 500, "5.5.2", "Error: bad command syntax");
        sp->errors++;
        return;
    }
    for (size_t i = 0; i < ODMR_ARRAY_LEN(store_cmds); i++) {
        if (strcmp(store_cmds[i].verb, cmd.verb) == 0) {
            c = &store_cmds[i];
            break;
        }
    }
    if (c == NULL) {
        reply(sp, 500, "5.5.2", "Error: command not recognized");
        sp->errors++;
        return;
    }
    if (!(c->states & sp->state)) {
        if (sp->state == ST_GREETED)
            reply(sp, 503, "5.5.1", "Error: send LHLO first");
        else if (strcmp(c->verb, "MAIL") == 0)
            reply(sp, 503, "5.5.1", "Error: nested MAIL command");
        else if (strcmp(c->verb, "XFORWARD") == 0)
            reply(sp, 503, "5.5.1", "Error: XFORWARD not allowed during a transaction");
        else
            reply(sp, 503, "5.5.1", "Error: need MAIL command");
        sp->errors++;
        return;
    }
    c->action(sp, &cmd);
}

/* Read one command line; an over-long line is read to its end and refused. */
static int
read_command(STORE *sp, char *buf, size_t size, size_t *len_r)
{
    int flags;

    for (;;) {
        if (stream_get_line(sp->stream, buf, size, len_r, &flags) != STREAM_OK)
            return -1;
        if (flags & STREAM_LINE_EOF)
            return -1;
        if (!(flags & STREAM_LINE_PARTIAL))
            return 0;
        /* Too long: skip the rest, then answer once. */
        do {
            if (stream_get_line(sp->stream, buf, size, len_r, &flags) != STREAM_OK)
                return -1;
        } while (flags & STREAM_LINE_PARTIAL);
        reply(sp, 500, "5.5.2", "Error: line too long");
        sp->errors++;
    }
}

/* Under spawn(8) the peer is Postfix's lmtp(8) on a UNIX socket; tests may
 * run us on a TCP socket, where the address is worth logging. */
static void
describe_client(STORE *sp)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[64];

    str_copy(sp->client, "local", sizeof(sp->client));
    if (getpeername(0, (struct sockaddr *) &ss, &len) == 0
        && (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
        && getnameinfo((struct sockaddr *) &ss, len, host, sizeof(host), NULL, 0,
                       NI_NUMERICHOST) == 0)
        (void) str_format(sp->client, sizeof(sp->client), "[%s]", host);
}

int
main(int argc, char **argv)
{
    STORE session, *sp = &session;
    char *error = NULL;
    char *line;
    size_t line_size, len;

    msg_init(argv[0], MSG_SYSLOG);
    signal(SIGPIPE, SIG_IGN);
    config_daemon_init(argc, argv, "odmr-store [-c config_dir] [-o name=value] [-v]");

    memset(sp, 0, sizeof(*sp));
    describe_client(sp);
    sp->state = ST_GREETED;
    if ((sp->queue = queue_open(var_queue_dir, QUEUE_OPEN_CREATE, &error)) == NULL)
        msg_fatal("open queue %s: %s", var_queue_dir, error);
    if ((sp->domain_maps = maps_open(var_domain_maps, &error)) == NULL)
        msg_fatal("%s: domain_maps = %s: %s", config_file_path(), var_domain_maps, error);

    sp->stream = stream_open(0, 1);
    stream_set_timeout(sp->stream, (int) var_command_timeout * 1000);
    stream_set_deadline(sp->stream, now_ms() + var_session_timeout * 1000);
    line_size = (size_t) var_line_length_limit + 1;
    line = x_malloc(line_size);

    msg_debug("connect from %s", sp->client);
    (void) smtp_reply_send(sp->stream, 220, NULL, "%s", var_lmtp_banner);
    while (!sp->quit) {
        if (read_command(sp, line, line_size, &len) < 0) {
            if (sp->state == ST_MAIL || stream_is_timeout(sp->stream))
                msg_warn("%s from %s in state %s", stream_error_text(sp->stream), sp->client,
                         sp->state == ST_MAIL ? "MAIL" : "idle");
            break;
        }
        dispatch(sp, line, len);
        if (sp->errors >= var_error_limit) {
            reply(sp, 421, "4.7.0", "Error: too many errors");
            msg_warn("too many errors from %s", sp->client);
            break;
        }
    }
    (void) stream_flush(sp->stream);
    transaction_reset(sp);
    free(line);
    stream_close(&sp->stream, 0);
    maps_close(&sp->domain_maps);
    queue_close(&sp->queue);
    return 0;
}
