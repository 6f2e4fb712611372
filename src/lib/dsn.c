/*
 * dsn.c - delivery status notifications: compose (dsn_write) and submit
 * through sendmail (dsn_submit). See dsn.h for the shape of a notice.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dsn.h"
#include "log.h"
#include "smtp.h"
#include "util.h"

#define FOLD_COLUMN 78   /* fold fields and wrap text here where spaces allow */
#define LINE_HARD_MAX 900 /* cut a longer run without spaces (RFC 5322: 998) */
#define SEGMENT_SIZE 1024 /* decoded content is handled in pieces this big */
#define NCAND 4          /* boundary candidates */
#define CAND_MAX 70      /* RFC 2046: a boundary has at most 70 characters */
#define SUBMIT_ARGS_MAX 32
#define SUBMIT_STDERR_MAX 2048

/* ---- buffered output ------------------------------------------------------ */

typedef struct {
    int fd;
    char buf[8192];
    size_t len;
    int err; /* errno of the first failed write, 0 when none */
} OUT;

static void
out_flush(OUT *o)
{
    if (o->err == 0 && o->len > 0 && write_all(o->fd, o->buf, o->len) < 0)
        o->err = errno ? errno : EIO;
    o->len = 0;
}

static void
out_put(OUT *o, const char *s, size_t len)
{
    while (len > 0) {
        size_t room = sizeof(o->buf) - o->len, n = len < room ? len : room;

        memcpy(o->buf + o->len, s, n);
        o->len += n;
        s += n;
        len -= n;
        if (o->len == sizeof(o->buf))
            out_flush(o);
    }
}

static void
out_str(OUT *o, const char *s)
{
    out_put(o, s, strlen(s));
}

static void ODMR_PRINTF(2, 3)
out_fmt(OUT *o, const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        msg_fatal("out of memory");
    va_end(ap);
    out_str(o, s);
    free(s);
}

/*
 * Write first, a space and value, folded near FOLD_COLUMN at spaces. As a header
 * field (text == 0) the space stays and a newline goes before it, so
 * unfolding gives the value back byte for byte; as text (text == 1) the
 * space becomes a line break and the next line is indented four columns,
 * as Postfix wraps its report lines. A run without spaces longer than
 * LINE_HARD_MAX is cut there, the only case that alters the value.
 */
static void
out_folded(OUT *o, const char *first, const char *value, int text)
{
    const char *p = value, *sp;
    size_t col = strlen(first), w;
    int first_word = 1;

    out_str(o, first);
    for (;;) {
        sp = strchr(p, ' ');
        w = sp ? (size_t) (sp - p) : strlen(p);
        if (first_word) {
            out_put(o, " ", 1);
            col++;
        } else {
            if (col + 1 + w > FOLD_COLUMN && col > 4) {
                out_str(o, text ? "\n    " : "\n ");
                col = text ? 4 : 1;
            } else {
                out_put(o, " ", 1);
                col++;
            }
        }
        first_word = 0;
        while (w > LINE_HARD_MAX) {
            out_put(o, p, LINE_HARD_MAX);
            out_str(o, text ? "\n    " : "\n ");
            p += LINE_HARD_MAX;
            w -= LINE_HARD_MAX;
            col = text ? 4 : 1;
        }
        out_put(o, p, w);
        col += w;
        if (sp == NULL)
            break;
        p = sp + 1;
    }
    out_put(o, "\n", 1);
}

/* ---- the original content: SMTP wire form back to the message ------------ */

typedef struct {
    int fd;
    off_t pos, end;     /* wire bytes still to read: [pos, end) */
    char in[DSN_READ_CHUNK];
    size_t in_len, in_pos;
    int raw_push;       /* a wire byte to process again, or -1 */
    int at_line_start;  /* the next wire byte starts a line */
    int pending_cr;     /* a CR was read; is it part of CRLF? */
    char *error;        /* malloc'd, set when reading failed */
} WIRE;

/* The wire range without its final ".\r\n". -1 with *error_r for a range
 * that does not end like a queue file's content. */
static int
wire_init(WIRE *w, int fd, const QUEUE_ENV *env, char **error_r)
{
    char tail[5];
    off_t start = env->content_offset;
    long long len = env->content_length;
    size_t want;
    ssize_t got;

    memset(w, 0, sizeof(*w));
    w->fd = fd;
    w->raw_push = -1;
    w->at_line_start = 1;
    /* ".\r\n" alone (an empty message), or "\r\n.\r\n" at the end. */
    if (start < 0 || len < 3 || len == 4) {
        *error_r = x_asprintf("queue file %s: damaged content range (%lld bytes at %lld)",
                              env->id, len, (long long) start);
        return -1;
    }
    want = len >= 5 ? 5 : 3;
    do {
        got = pread(fd, tail, want, start + len - (off_t) want);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        *error_r = x_asprintf("queue file %s: read: %s", env->id, strerror(errno));
        return -1;
    }
    if ((size_t) got != want
        || memcmp(tail + want - 3, ".\r\n", 3) != 0
        || (want == 5 && memcmp(tail, "\r\n", 2) != 0)) {
        *error_r = x_asprintf("queue file %s: content does not end with CRLF.CRLF",
                              env->id);
        return -1;
    }
    w->pos = start;
    w->end = start + len - 3;
    return 0;
}

/* Next wire byte, -1 at the end, -2 on error (w->error set). */
static int
wire_raw(WIRE *w)
{
    ssize_t got;
    size_t want;

    if (w->raw_push >= 0) {
        int b = w->raw_push;

        w->raw_push = -1;
        return b;
    }
    if (w->in_pos < w->in_len)
        return (unsigned char) w->in[w->in_pos++];
    if (w->pos >= w->end)
        return -1;
    want = w->end - w->pos > (off_t) sizeof(w->in) ? sizeof(w->in) : (size_t) (w->end - w->pos);
    do {
        got = pread(w->fd, w->in, want, w->pos);
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {
        if (w->error == NULL)
            w->error = got < 0 ? x_asprintf("read: %s", strerror(errno))
                               : x_strdup("read: the queue file is shorter than its content");
        return -2;
    }
    w->pos += got;
    w->in_len = (size_t) got;
    w->in_pos = 0;
    return (unsigned char) w->in[w->in_pos++];
}

/* Next byte of the message: the leading dot of a line dropped, CRLF made
 * LF (a lone CR or LF is kept). -1 at the end, -2 on error. */
static int
wire_getc(WIRE *w)
{
    int b;

    for (;;) {
        b = wire_raw(w);
        if (w->pending_cr) {
            w->pending_cr = 0;
            if (b == '\n') {
                w->at_line_start = 1;
                return '\n';
            }
            if (b == -2)
                return -2;
            if (b >= 0)
                w->raw_push = b;
            w->at_line_start = 0;
            return '\r';
        }
        if (b < 0)
            return b;
        if (w->at_line_start && b == '.') {
            w->at_line_start = 0;
            continue;
        }
        if (b == '\r') {
            w->pending_cr = 1;
            continue;
        }
        w->at_line_start = b == '\n';
        return b;
    }
}

/* Up to size decoded bytes, stopping after a LF. Returns the length, 0 at
 * the end, -1 on error. */
static ssize_t
wire_segment(WIRE *w, char *buf, size_t size)
{
    size_t len = 0;
    int c;

    while (len < size) {
        if ((c = wire_getc(w)) == -2)
            return -1;
        if (c == -1)
            break;
        buf[len++] = (char) c;
        if (c == '\n')
            break;
    }
    return (ssize_t) len;
}

/* A header line or a continuation, as Postfix's is_header(): a field name
 * of printable ASCII (optional blanks before the colon), or a line that
 * starts with a blank. */
static int
header_line(const char *s, size_t len)
{
    size_t i = 0;

    if (len > 0 && (s[0] == ' ' || s[0] == '\t'))
        return 1;
    while (i < len && (unsigned char) s[i] > ' ' && (unsigned char) s[i] < 127 && s[i] != ':')
        i++;
    if (i == 0)
        return 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t'))
        i++;
    return i < len && s[i] == ':';
}

static int
has_8bit(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if ((unsigned char) s[i] >= 0x80)
            return 1;
    return 0;
}

/* ---- boundary candidates --------------------------------------------------- */

typedef struct {
    char cand[NCAND][CAND_MAX + 1];
    size_t len[NCAND];
} CANDS;

/* Bit i set when line (the start of a line) begins with "--" cand[i]. */
static unsigned
cand_line_conflicts(const CANDS *c, const char *line, size_t len)
{
    unsigned bits = 0;
    size_t i;

    if (len < 2 || line[0] != '-' || line[1] != '-')
        return 0;
    for (i = 0; i < NCAND; i++)
        if (len >= 2 + c->len[i] && memcmp(line + 2, c->cand[i], c->len[i]) == 0)
            bits |= 1u << i;
    return bits;
}

/* Bit i set when s contains cand[i] anywhere. */
static unsigned
cand_text_conflicts(const CANDS *c, const char *s)
{
    unsigned bits = 0;
    size_t i;

    if (s == NULL)
        return 0;
    for (i = 0; i < NCAND; i++)
        if (strstr(s, c->cand[i]) != NULL)
            bits |= 1u << i;
    return bits;
}

/* The first is Postfix's form (queue ID, time); the others add 64 random
 * bits, so no message prepared in advance can hold all of them. */
static void
cand_make(CANDS *c, const char *id, long now)
{
    size_t i;

    for (i = 0; i < NCAND; i++) {
        uint64_t r = 0;

        if (i == 0) {
            (void) str_format(c->cand[i], sizeof(c->cand[i]), "%.24s.%ld/odmr", id, now);
        } else {
            if (random_bytes(&r, sizeof(r)) < 0)
                r = (uint64_t) now_ms() * 0x9E3779B97F4A7C15ULL + i;
            (void) str_format(c->cand[i], sizeof(c->cand[i]), "%.24s.%ld.%016llX/odmr", id,
                              now, (unsigned long long) r);
        }
        c->len[i] = strlen(c->cand[i]);
    }
}

/* ---- what the content holds -------------------------------------------------- */

typedef struct {
    int hdr_8bit, body_8bit;
    unsigned hdr_conflict, body_conflict;
    long long size;   /* decoded bytes seen */
    int complete;     /* read to the end (size is the message size) */
} SCAN;

/* Read the headers, and the body too when whole: sizes, 8-bit bytes,
 * lines that start with a boundary candidate. 0 or -1 with *error_r. */
static int
content_scan(int fd, const QUEUE_ENV *env, int whole, const CANDS *c, SCAN *s,
             char **error_r)
{
    WIRE w;
    char seg[SEGMENT_SIZE];
    ssize_t len;
    int line_start = 1, in_hdr = 1;

    memset(s, 0, sizeof(*s));
    if (wire_init(&w, fd, env, error_r) < 0)
        return -1;
    while ((len = wire_segment(&w, seg, sizeof(seg))) > 0) {
        if (line_start && in_hdr && !header_line(seg, (size_t) len)) {
            in_hdr = 0;
            if (!whole)
                break;
        }
        if (in_hdr) {
            s->hdr_8bit |= has_8bit(seg, (size_t) len);
            if (line_start)
                s->hdr_conflict |= cand_line_conflicts(c, seg, (size_t) len);
        } else {
            s->body_8bit |= has_8bit(seg, (size_t) len);
            if (line_start)
                s->body_conflict |= cand_line_conflicts(c, seg, (size_t) len);
        }
        s->size += len;
        line_start = seg[len - 1] == '\n';
    }
    if (len < 0) {
        *error_r = x_asprintf("queue file %s: %s", env->id, w.error);
        free(w.error);
        return -1;
    }
    s->complete = len == 0;
    return 0;
}

/* Copy the message (or its headers) into the notice. The part ends with a
 * line end, so the closing boundary follows on a line of its own. */
static int
content_copy(OUT *o, int fd, const QUEUE_ENV *env, int full, char **error_r)
{
    WIRE w;
    char seg[SEGMENT_SIZE];
    ssize_t len;
    int line_start = 1;

    if (wire_init(&w, fd, env, error_r) < 0)
        return -1;
    while ((len = wire_segment(&w, seg, sizeof(seg))) > 0) {
        if (!full && line_start && !header_line(seg, (size_t) len))
            break;
        out_put(o, seg, (size_t) len);
        line_start = seg[len - 1] == '\n';
    }
    if (len < 0) {
        *error_r = x_asprintf("queue file %s: %s", env->id, w.error);
        free(w.error);
        return -1;
    }
    if (!line_start)
        out_put(o, "\n", 1);
    return 0;
}

/* ---- texts -------------------------------------------------------------------- */

/* A copy fit for a notice: control characters become ctl (a space for
 * text, '?' in addresses), bytes outside ASCII '?' unless keep_8bit. */
static char *
clean_copy(const char *s, char ctl, int keep_8bit)
{
    char *copy = x_strdup(s), *p;

    for (p = copy; *p; p++) {
        unsigned char b = (unsigned char) *p;

        if (b < ' ' || b == 127)
            *p = ctl;
        else if (b >= 0x80 && !keep_8bit)
            *p = '?';
    }
    return copy;
}

/* xtext (ENVID, ORCPT) decoded and cleaned; the raw text cleaned when it
 * is not valid xtext. */
static char *
xtext_copy(const char *s, int keep_8bit)
{
    size_t size = strlen(s) + 1;
    char *buf = x_malloc(size), *copy;

    if (xtext_decode(s, buf, size) < 0)
        copy = clean_copy(s, '?', keep_8bit);
    else
        copy = clean_copy(buf, '?', keep_8bit);
    free(buf);
    return copy;
}

/* RFC 5322 date in local time, in English whatever the locale. */
static const char *
rfc5322_date(long t, char *buf, size_t size)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t when = (time_t) t;
    struct tm tm;
    long off;
    char zone[16];

    if (localtime_r(&when, &tm) == NULL) {
        (void) str_format(buf, size, "Thu, 1 Jan 1970 00:00:00 +0000");
        return buf;
    }
    off = tm.tm_gmtoff / 60;
    (void) str_format(zone, sizeof(zone), "%c%02ld%02ld", off < 0 ? '-' : '+',
                      labs(off) / 60, labs(off) % 60);
    (void) str_format(buf, size, "%s, %d %s %d %02d:%02d:%02d %s", days[tm.tm_wday % 7],
                      tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour,
                      tm.tm_min, tm.tm_sec, zone);
    return buf;
}

/* "2.0.0" .. "5.999.999" */
static int
status_valid(const char *s)
{
    int part, digits;

    if (s[0] != '2' && s[0] != '4' && s[0] != '5')
        return 0;
    s++;
    for (part = 0; part < 2; part++) {
        if (*s++ != '.')
            return 0;
        for (digits = 0; isdigit((unsigned char) *s); s++)
            digits++;
        if (digits < 1 || digits > 3)
            return 0;
    }
    return *s == 0;
}

typedef struct {
    char *final;   /* address */
    char *orcpt;   /* "type;address" or NULL */
    char *status;
    char *remote;  /* or NULL */
    char *diag;    /* or NULL */
    char *text;    /* never NULL */
    long last_attempt;
} LINE;

static const char *
default_status(DSN_EVENT e)
{
    switch (e) {
    case DSN_EVENT_FAILED:
        return "5.0.0";
    case DSN_EVENT_EXPIRED:
        return "4.4.7";
    case DSN_EVENT_DELAYED:
        return "4.0.0";
    case DSN_EVENT_RELAYED:
        return "2.0.0";
    }
    return "5.0.0";
}

static const char *
default_text(DSN_EVENT e)
{
    switch (e) {
    case DSN_EVENT_FAILED:
        return "delivery failed";
    case DSN_EVENT_EXPIRED:
        return "message expired: the customer's mail server did not collect it "
               "within the maximal queue lifetime";
    case DSN_EVENT_DELAYED:
        return "not yet collected by the customer's mail server";
    case DSN_EVENT_RELAYED:
        return "relayed to a mail server that does not return delivery notifications";
    }
    return "delivery failed";
}

static const char *
action_name(DSN_EVENT e)
{
    switch (e) {
    case DSN_EVENT_FAILED:
    case DSN_EVENT_EXPIRED:
        return "failed";
    case DSN_EVENT_DELAYED:
        return "delayed";
    case DSN_EVENT_RELAYED:
        return "relayed";
    }
    return "failed";
}

static const char *
subject_of(DSN_EVENT e)
{
    switch (e) {
    case DSN_EVENT_FAILED:
    case DSN_EVENT_EXPIRED:
        return "Undelivered Mail Returned to Sender";
    case DSN_EVENT_DELAYED:
        return "Delayed Mail (still being retried)";
    case DSN_EVENT_RELAYED:
        return "Successful Mail Delivery Report";
    }
    return "Undelivered Mail Returned to Sender";
}

static void
lines_free(LINE *lines, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        free(lines[i].final);
        free(lines[i].orcpt);
        free(lines[i].status);
        free(lines[i].remote);
        free(lines[i].diag);
        free(lines[i].text);
    }
    free(lines);
}

/* The readable first part: our own words, Postfix's layout. */
static void
write_notification(OUT *o, const QUEUE_ENV *env, const DSN_REPORT *rep, const LINE *lines,
                   size_t n, int returned, int full)
{
    char date[64];
    size_t i;

    out_fmt(o, "This is the mail system at host %s.\n\n", rep->myhostname);
    switch (rep->event) {
    case DSN_EVENT_FAILED:
        out_str(o, "Your message could not be delivered to one or more recipients.\n"
                   "Their domain collects its mail from this host on demand (ODMR),\n"
                   "and its mail server refused the message. Its replies are quoted\n"
                   "below.\n");
        break;
    case DSN_EVENT_EXPIRED:
        out_str(o, "Your message could not be delivered to one or more recipients.\n"
                   "Their domain collects its mail from this host on demand (ODMR),\n"
                   "and its mail server did not collect the message before it became\n"
                   "too old to deliver. It has been given up and is returned to you.\n");
        if (env->arrival_sec > 0)
            out_fmt(o, "It was held here since %s.\n",
                    rfc5322_date(env->arrival_sec, date, sizeof(date)));
        break;
    case DSN_EVENT_DELAYED:
        out_str(o, "#######################################################################\n"
                   "# THIS IS A WARNING ONLY. YOU DO NOT NEED TO SEND YOUR MESSAGE AGAIN. #\n"
                   "#######################################################################\n"
                   "\n"
                   "Your message is held here for recipients whose domain collects its\n"
                   "mail from this host on demand (ODMR), and their mail server has not\n"
                   "collected it yet.\n");
        if (rep->will_retry_until > 0)
            out_fmt(o, "It will be kept until %s; if it is still\n"
                       "not collected by then, it will be returned to you.\n",
                    rfc5322_date(rep->will_retry_until, date, sizeof(date)));
        break;
    case DSN_EVENT_RELAYED:
        out_str(o, "Your message was relayed to the mail server of the recipients\n"
                   "listed below. That server does not return delivery status\n"
                   "notifications, so this is the last notice you will get from this\n"
                   "host; you may still get notices of delivery errors from other\n"
                   "systems.\n");
        break;
    }
    if (returned)
        out_fmt(o, "\n%s attached below.\n",
                full ? "Your message is" : "The headers of your message are");
    if (rep->event != DSN_EVENT_RELAYED)
        out_str(o, "\nFor further assistance, please send mail to postmaster.\n"
                   "If you do so, please include this problem report.\n");
    out_str(o, "\n                   The mail system\n");
    for (i = 0; i < n; i++) {
        char *first = x_asprintf("<%s>:", lines[i].final);

        out_put(o, "\n", 1);
        out_folded(o, first, lines[i].text, 1);
        free(first);
    }
}

static void
write_delivery_status(OUT *o, const QUEUE_ENV *env, const DSN_REPORT *rep, const char *sender,
                      const char *envid, const LINE *lines, size_t n)
{
    char date[64];
    size_t i;
    int utf8 = env->smtputf8;

    out_fmt(o, "Reporting-MTA: dns; %s\n", rep->myhostname);
    if (envid != NULL)
        out_folded(o, "Original-Envelope-Id:", envid, 0);
    out_fmt(o, "X-Odmr-Queue-ID: %s\n", env->id);
    out_fmt(o, "X-Odmr-Sender: %s; %s\n",
            utf8 && has_8bit(sender, strlen(sender)) ? "utf-8" : "rfc822", sender);
    if (env->arrival_sec > 0)
        out_fmt(o, "Arrival-Date: %s\n", rfc5322_date(env->arrival_sec, date, sizeof(date)));
    for (i = 0; i < n; i++) {
        const LINE *l = &lines[i];

        out_put(o, "\n", 1);
        out_fmt(o, "Final-Recipient: %s; %s\n",
                utf8 && has_8bit(l->final, strlen(l->final)) ? "utf-8" : "rfc822", l->final);
        if (l->orcpt != NULL)
            out_fmt(o, "Original-Recipient: %s\n", l->orcpt);
        out_fmt(o, "Action: %s\n", action_name(rep->event));
        out_fmt(o, "Status: %s\n", l->status);
        if (l->remote != NULL)
            out_folded(o, "Remote-MTA: dns;", l->remote, 0);
        if (l->diag != NULL)
            out_folded(o, "Diagnostic-Code: smtp;", l->diag, 0);
        else
            out_folded(o, "Diagnostic-Code: X-Odmr;", l->text, 0);
        if (l->last_attempt > 0)
            out_fmt(o, "Last-Attempt-Date: %s\n",
                    rfc5322_date(l->last_attempt, date, sizeof(date)));
        if (rep->event == DSN_EVENT_DELAYED && rep->will_retry_until > 0)
            out_fmt(o, "Will-Retry-Until: %s\n",
                    rfc5322_date(rep->will_retry_until, date, sizeof(date)));
    }
}

int
dsn_wanted(const QUEUE_ENV *env, size_t rcpt, DSN_EVENT event)
{
    const char *p, *notify;
    const char *want;

    if (env == NULL || env->sender == NULL || env->sender[0] == 0 || rcpt >= env->rcpt_count)
        return 0;
    notify = env->rcpt[rcpt].notify;
    if (notify == NULL || *notify == 0)
        return event != DSN_EVENT_RELAYED;
    switch (event) {
    case DSN_EVENT_FAILED:
    case DSN_EVENT_EXPIRED:
        want = "FAILURE";
        break;
    case DSN_EVENT_DELAYED:
        want = "DELAY";
        break;
    case DSN_EVENT_RELAYED:
        want = "SUCCESS";
        break;
    default:
        return 0;
    }
    /* A comma-separated list; NEVER stands alone (RFC 3461 4.1), and a
     * list that has it anyway asks for nothing. */
    for (p = notify; *p;) {
        size_t len = strcspn(p, ",");

        if (len == 5 && str_ncasecmp(p, "NEVER", 5) == 0)
            return 0;
        p += len;
        if (*p == ',')
            p++;
    }
    for (p = notify; *p;) {
        size_t len = strcspn(p, ",");

        if (len == strlen(want) && str_ncasecmp(p, want, len) == 0)
            return 1;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

int
dsn_write(int out_fd, const QUEUE_ENV *env, int content_fd, const DSN_REPORT *rep,
          const DSN_RCPT *rcpts, size_t n, char **error_r)
{
    LINE *lines = NULL;
    char *sender = NULL, *envid = NULL;
    CANDS c;
    SCAN scan;
    OUT *o = NULL;
    unsigned conflicts = 0;
    const char *boundary = NULL, *part3_type;
    char date[64];
    int want_full, full = 0, returned, part12_8bit = 0, part3_8bit = 0, ret = -1;
    size_t i;

    if (env == NULL || rep == NULL || (rcpts == NULL && n > 0)) {
        *error_r = x_strdup("dsn_write: missing argument");
        return -1;
    }
    if (env->sender == NULL || env->sender[0] == 0) {
        *error_r = x_asprintf("queue file %s: no notice is sent to the null sender", env->id);
        return -1;
    }
    if (n == 0) {
        *error_r = x_asprintf("queue file %s: a notice without recipients", env->id);
        return -1;
    }
    if (rep->myhostname == NULL || *rep->myhostname == 0 || rep->message_id == NULL
        || *rep->message_id == 0 || rep->bounce_size_limit <= 0
        || (int) rep->event < (int) DSN_EVENT_FAILED
        || (int) rep->event > (int) DSN_EVENT_EXPIRED) {
        *error_r = x_strdup("dsn_write: bad report (myhostname, message_id, "
                            "bounce_size_limit or event)");
        return -1;
    }

    /* What the notice says, cleaned. */
    sender = clean_copy(env->sender, '?', env->smtputf8);
    if (env->envid != NULL && *env->envid)
        envid = xtext_copy(env->envid, 0);
    lines = x_calloc(n, sizeof(*lines));
    for (i = 0; i < n; i++) {
        const DSN_RCPT *r = &rcpts[i];
        LINE *l = &lines[i];
        const QUEUE_RCPT *qr;

        if (r->rcpt >= env->rcpt_count) {
            *error_r = x_asprintf("queue file %s: recipient index %zu out of range (%zu)",
                                  env->id, r->rcpt, env->rcpt_count);
            goto done;
        }
        qr = &env->rcpt[r->rcpt];
        if (r->status != NULL && !status_valid(r->status)) {
            *error_r = x_asprintf("queue file %s: bad enhanced status code for <%s>",
                                  env->id, qr->address);
            goto done;
        }
        l->status = x_strdup(r->status ? r->status : default_status(rep->event));
        l->final = clean_copy(qr->address, '?', env->smtputf8);
        if (qr->orcpt != NULL && *qr->orcpt) {
            char *o_dec = xtext_copy(qr->orcpt, env->smtputf8);

            if (strchr(o_dec, ';') == NULL) {
                l->orcpt = x_asprintf("rfc822;%s", o_dec);
                free(o_dec);
            } else {
                l->orcpt = o_dec;
            }
        }
        if (r->remote_mta != NULL && *r->remote_mta)
            l->remote = clean_copy(r->remote_mta, ' ', 0);
        if (r->diag != NULL && *r->diag)
            l->diag = clean_copy(r->diag, ' ', 0);
        if (r->text != NULL && *r->text)
            l->text = clean_copy(r->text, ' ', 0);
        else if (l->diag != NULL && l->remote != NULL)
            l->text = x_asprintf("host %s said: %s", l->remote, l->diag);
        else if (l->diag != NULL)
            l->text = x_strdup(l->diag);
        else
            l->text = x_strdup(default_text(rep->event));
        l->last_attempt = r->last_attempt;
        part12_8bit |= has_8bit(l->final, strlen(l->final))
                       || (l->orcpt && has_8bit(l->orcpt, strlen(l->orcpt)));
    }
    part12_8bit |= has_8bit(sender, strlen(sender));

    /*
     * Postfix returns the whole message in a failure notice unless RET=HDRS,
     * and the headers in a delay warning or a success notice. A message over
     * bounce_size_limit is returned as headers only. Its size is that of the
     * message (LF line ends, no dot-stuffing); the wire form is never
     * smaller and at most three times as large (".\r\n" for "\n"), so the
     * size is counted only for a wire form up to three times the limit.
     */
    cand_make(&c, env->id, rep->now);
    want_full = (rep->event == DSN_EVENT_FAILED || rep->event == DSN_EVENT_EXPIRED)
                && !(env->ret != NULL && str_casecmp(env->ret, "HDRS") == 0);
    returned = content_fd >= 0;
    memset(&scan, 0, sizeof(scan));
    if (returned) {
        long long wire = env->content_length - 3;
        int whole = want_full && wire / 3 <= rep->bounce_size_limit;

        if (content_scan(content_fd, env, whole, &c, &scan, error_r) < 0)
            goto done;
        full = whole && scan.complete && scan.size <= rep->bounce_size_limit;
        conflicts |= scan.hdr_conflict | (full ? scan.body_conflict : 0);
        part3_8bit = scan.hdr_8bit || (full && scan.body_8bit);
    }
    conflicts |= cand_text_conflicts(&c, sender) | cand_text_conflicts(&c, envid)
                 | cand_text_conflicts(&c, rep->myhostname)
                 | cand_text_conflicts(&c, rep->message_id);
    for (i = 0; i < n; i++)
        conflicts |= cand_text_conflicts(&c, lines[i].final)
                     | cand_text_conflicts(&c, lines[i].orcpt)
                     | cand_text_conflicts(&c, lines[i].remote)
                     | cand_text_conflicts(&c, lines[i].diag)
                     | cand_text_conflicts(&c, lines[i].text);
    for (i = 0; i < NCAND && boundary == NULL; i++)
        if ((conflicts & (1u << i)) == 0)
            boundary = c.cand[i];
    if (boundary == NULL) {
        *error_r = x_asprintf("queue file %s: no MIME boundary is free of the content",
                              env->id);
        goto done;
    }

    o = x_calloc(1, sizeof(*o));
    o->fd = out_fd;
    out_fmt(o, "From: MAILER-DAEMON@%s (Mail Delivery System)\n", rep->myhostname);
    out_fmt(o, "Subject: %s\n", subject_of(rep->event));
    out_fmt(o, "To: %s\n", sender);
    out_fmt(o, "Date: %s\n", rfc5322_date(rep->now, date, sizeof(date)));
    out_fmt(o, "Message-Id: <%s>\n", rep->message_id);
    out_str(o, "Auto-Submitted: auto-replied\n");
    out_str(o, "MIME-Version: 1.0\n");
    out_str(o, "Content-Type: multipart/report; report-type=delivery-status;\n");
    out_fmt(o, "\tboundary=\"%s\"\n", boundary);
    out_fmt(o, "Content-Transfer-Encoding: %s\n",
            part12_8bit || part3_8bit ? "8bit" : "7bit");
    out_str(o, "\nThis is a MIME-encapsulated message.\n\n");

    out_fmt(o, "--%s\n", boundary);
    out_str(o, "Content-Description: Notification\n");
    out_fmt(o, "Content-Type: text/plain; charset=%s\n", part12_8bit ? "utf-8" : "us-ascii");
    if (part12_8bit)
        out_str(o, "Content-Transfer-Encoding: 8bit\n");
    out_put(o, "\n", 1);
    write_notification(o, env, rep, lines, n, returned, full);

    out_fmt(o, "\n--%s\n", boundary);
    out_str(o, "Content-Description: Delivery report\n");
    out_fmt(o, "Content-Type: message/%sdelivery-status\n", env->smtputf8 ? "global-" : "");
    if (env->smtputf8 && part12_8bit)
        out_str(o, "Content-Transfer-Encoding: 8bit\n");
    out_put(o, "\n", 1);
    write_delivery_status(o, env, rep, sender, envid, lines, n);

    if (returned) {
        if (env->smtputf8)
            part3_type = full ? "message/global" : "message/global-headers";
        else
            part3_type = full ? "message/rfc822" : "text/rfc822-headers";
        out_fmt(o, "\n--%s\n", boundary);
        out_fmt(o, "Content-Description: %s%s\n",
                rep->event == DSN_EVENT_RELAYED ? "" : "Undelivered ",
                full ? "Message" : "Message Headers");
        out_fmt(o, "Content-Type: %s\n", part3_type);
        if (part3_8bit)
            out_str(o, "Content-Transfer-Encoding: 8bit\n");
        out_put(o, "\n", 1);
        out_fmt(o, "Return-Path: <%s>\n", sender);
        if (content_copy(o, content_fd, env, full, error_r) < 0)
            goto done;
    }
    out_fmt(o, "\n--%s--\n", boundary);
    out_flush(o);
    if (o->err != 0) {
        *error_r = x_asprintf("queue file %s: write the notice: %s", env->id,
                              strerror(o->err));
        goto done;
    }
    ret = 0;

done:
    free(o);
    free(sender);
    free(envid);
    lines_free(lines, n);
    return ret;
}

/* ---- submission ------------------------------------------------------------- */

static const char *
sysexit_name(int code)
{
    static const char *const names[] = {
        "EX_USAGE", "EX_DATAERR", "EX_NOINPUT", "EX_NOUSER", "EX_NOHOST",
        "EX_UNAVAILABLE", "EX_SOFTWARE", "EX_OSERR", "EX_OSFILE", "EX_CANTCREAT",
        "EX_IOERR", "EX_TEMPFAIL", "EX_PROTOCOL", "EX_NOPERM", "EX_CONFIG",
    };

    if (code >= 64 && code <= 78)
        return names[code - 64];
    if (code == 127)
        return "cannot execute";
    return "unknown";
}

/* The line of sendmail's stderr that says the most: the first fatal
 * error, else the last non-empty line; cleaned and cut for a log line. */
static char *
stderr_line(const char *err, size_t len)
{
    const char *line, *end, *pick = NULL, *last = NULL;
    size_t pick_len = 0, last_len = 0;
    char buf[LOG_CLEAN_BUFSIZE];

    for (line = err; line < err + len; line = end + 1) {
        if ((end = memchr(line, '\n', (size_t) (err + len - line))) == NULL)
            end = err + len;
        if (end > line) {
            last = line;
            last_len = (size_t) (end - line);
            if (pick == NULL && memmem(line, last_len, "fatal:", 6) != NULL) {
                pick = line;
                pick_len = last_len;
            }
        }
    }
    if (pick == NULL) {
        pick = last;
        pick_len = last_len;
    }
    if (pick == NULL)
        return NULL;
    return x_strdup(log_clean(buf, sizeof(buf), pick, pick_len));
}

static int
high_fd(int fd)
{
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 10);

    return high < 0 ? fd : high;
}

/* In the child: never returns. Plain system calls only. */
ODMR_NORETURN static void
submit_child(int msg_fd, int devnull, int err_w, char *const argv[], char *const envp[])
{
    sigset_t none;
    int fds[3], i;

    (void) setpgid(0, 0);
    fds[0] = high_fd(msg_fd);
    fds[1] = high_fd(devnull);
    fds[2] = high_fd(err_w);
    for (i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0)
            _exit(127);
    if (close_range(3, ~0U, 0) < 0) {
        long max = sysconf(_SC_OPEN_MAX);

        if (max < 0 || max > 65536)
            max = 65536;
        for (i = 3; i < max; i++)
            (void) close(i);
    }
    (void) signal(SIGPIPE, SIG_DFL);
    sigemptyset(&none);
    (void) sigprocmask(SIG_SETMASK, &none, NULL);
    execve(argv[0], argv, envp);
    (void) write_all(2, "sendmail: fatal: execute ", 25);
    (void) write_all(2, argv[0], strlen(argv[0]));
    (void) write_all(2, ": ", 2);
    (void) write_all(2, strerror(errno), strlen(strerror(errno)));
    (void) write_all(2, "\n", 1);
    _exit(127);
}

static void
kill_group(pid_t pid)
{
    (void) kill(-pid, SIGKILL);
    (void) kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        continue;
}

/* Does fd (from offset 0) hold a byte outside ASCII? 1, 0, or -1. */
static int
fd_has_8bit(int fd)
{
    char buf[8192];
    ssize_t got;
    off_t pos = 0;

    for (;;) {
        got = pread(fd, buf, sizeof(buf), pos);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -1;
        if (got == 0)
            return 0;
        if (has_8bit(buf, (size_t) got))
            return 1;
        pos += got;
    }
}

int
dsn_submit(const char *sendmail_path, const char *sender, int msg_fd, int timeout_sec,
           char **error_r)
{
    char *copy = NULL, *argv[SUBMIT_ARGS_MAX + 10], *envp[3], *save = NULL, *tok;
    char *env_path = NULL, *env_mc = NULL, err[SUBMIT_STDERR_MAX];
    const char *mail_config = getenv("MAIL_CONFIG");
    size_t argc = 0, err_len = 0, envc = 0;
    int err_p[2] = {-1, -1}, devnull = -1, eight, ret = -1, wstatus = 0;
    int64_t deadline;
    pid_t pid;

    if (sender == NULL || *sender == 0) {
        *error_r = x_strdup("no notice is sent to the null sender");
        return -1;
    }
    if (sendmail_path == NULL) {
        *error_r = x_strdup("sendmail_path is empty");
        return -1;
    }
    copy = x_strdup(sendmail_path);
    for (tok = strtok_r(copy, " \t\r\n", &save); tok != NULL;
         tok = strtok_r(NULL, " \t\r\n", &save)) {
        if (argc == SUBMIT_ARGS_MAX) {
            *error_r = x_asprintf("sendmail_path has more than %d words", SUBMIT_ARGS_MAX);
            goto done;
        }
        argv[argc++] = tok;
    }
    if (argc == 0 || argv[0][0] != '/') {
        *error_r = x_asprintf("sendmail_path \"%s\" does not start with an absolute path",
                              sendmail_path);
        goto done;
    }
    if ((eight = fd_has_8bit(msg_fd)) < 0 || lseek(msg_fd, 0, SEEK_SET) < 0) {
        *error_r = x_asprintf("read the notice: %s", strerror(errno));
        goto done;
    }
    argv[argc++] = "-i";
    argv[argc++] = "-f";
    argv[argc++] = ""; /* the null sender: Postfix's sendmail reads "" as <> */
    if (eight) {
        argv[argc++] = "-B";
        argv[argc++] = "8BITMIME";
    }
    argv[argc++] = "--";
    argv[argc++] = (char *) sender;
    argv[argc] = NULL;
    env_path = x_strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
    envp[envc++] = env_path;
    if (mail_config != NULL && *mail_config)
        envp[envc++] = env_mc = x_asprintf("MAIL_CONFIG=%s", mail_config);
    envp[envc] = NULL;

    if ((devnull = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0
        || pipe2(err_p, O_CLOEXEC) < 0) {
        *error_r = x_asprintf("cannot run %s: %s", argv[0], strerror(errno));
        goto done;
    }
    if (timeout_sec < 1)
        timeout_sec = 1;
    deadline = now_ms() + (int64_t) timeout_sec * 1000;
    if ((pid = fork()) < 0) {
        *error_r = x_asprintf("cannot run %s: fork: %s", argv[0], strerror(errno));
        goto done;
    }
    if (pid == 0)
        submit_child(msg_fd, devnull, err_p[1], argv, envp);
    (void) setpgid(pid, pid); /* as the child does: no window for kill_group */
    (void) close(err_p[1]);
    err_p[1] = -1;

    /*
     * Read its stderr (bounded, the rest drained) until the child has
     * exited; a grandchild that keeps the pipe open does not hold us up.
     */
    for (;;) {
        int64_t left = deadline - now_ms();
        pid_t got;

        if (left <= 0) {
            kill_group(pid);
            *error_r = x_asprintf("%s did not finish within %d seconds (killed)", argv[0],
                                  timeout_sec);
            goto done;
        }
        if (err_p[0] >= 0) {
            struct pollfd pfd = {.fd = err_p[0], .events = POLLIN};
            int nready = poll(&pfd, 1, left < 50 ? (int) left : 50);

            if (nready > 0) {
                char junk[1024];
                char *dst = err_len < sizeof(err) ? err + err_len : junk;
                size_t room = err_len < sizeof(err) ? sizeof(err) - err_len : sizeof(junk);
                ssize_t r = read(err_p[0], dst, room);

                if (r > 0 && dst != junk)
                    err_len += (size_t) r;
                else if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
                    (void) close(err_p[0]);
                    err_p[0] = -1;
                }
            }
        } else {
            struct timespec ts = {0, 5 * 1000 * 1000};

            (void) nanosleep(&ts, NULL);
        }
        got = waitpid(pid, &wstatus, WNOHANG);
        if (got == pid)
            break;
        if (got < 0 && errno != EINTR) {
            kill_group(pid);
            *error_r = x_asprintf("%s: waitpid: %s", argv[0], strerror(errno));
            goto done;
        }
    }
    /* What the pipe still holds now that the child is gone. */
    if (err_p[0] >= 0 && fcntl(err_p[0], F_SETFL, O_NONBLOCK) == 0) {
        ssize_t r;

        while (err_len < sizeof(err)
               && (r = read(err_p[0], err + err_len, sizeof(err) - err_len)) > 0)
            err_len += (size_t) r;
    }

    if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
        ret = 0;
    } else {
        char *why = stderr_line(err, err_len);

        if (WIFSIGNALED(wstatus))
            *error_r = x_asprintf("%s killed by signal %d%s%s", argv[0], WTERMSIG(wstatus),
                                  why ? ": " : "", why ? why : "");
        else
            *error_r = x_asprintf("%s exited %d (%s)%s%s", argv[0], WEXITSTATUS(wstatus),
                                  sysexit_name(WEXITSTATUS(wstatus)), why ? ": " : "",
                                  why ? why : "");
        free(why);
    }

done:
    if (err_p[0] >= 0)
        (void) close(err_p[0]);
    if (err_p[1] >= 0)
        (void) close(err_p[1]);
    if (devnull >= 0)
        (void) close(devnull);
    free(env_path);
    free(env_mc);
    free(copy);
    return ret;
}
