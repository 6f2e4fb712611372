/*
 * smtp.c - SMTP/LMTP text helpers; see smtp.h.
 *
 * Every parser here reads peer input: each one works within the caller's
 * buffers or fixed-size fields, never allocates, and rejects rather than
 * repairs anything it does not understand.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "smtp.h"
#include "stream.h"
#include "util.h"

/* ---- small character classes (ASCII only, locale independent) ----------- */

static int
is_alpha(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int
is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int
is_alnum(int c)
{
    return is_alpha(c) || is_digit(c);
}

static int
is_ctrl(int c)
{
    return c < 0x20 || c == 0x7f;
}

static int
to_upper(int c)
{
    return (c >= 'a' && c <= 'z') ? c - ('a' - 'A') : c;
}

/* ---- commands ------------------------------------------------------------ */

int
smtp_cmd_split(const char *line, size_t len, SMTP_CMD *cmd)
{
    size_t i, n;

    cmd->verb[0] = 0;
    cmd->args = "";
    /* A NUL inside the line would make the C-string view lie about it. */
    for (i = 0; i < len; i++)
        if (line[i] == 0 || line[i] == '\r' || line[i] == '\n')
            return -1;
    if (line[len] != 0)
        return -1;
    for (n = 0; n < len && line[n] != ' '; n++) {
        if (!is_alnum((unsigned char) line[n]) || n >= SMTP_VERB_MAX)
            return -1;
        cmd->verb[n] = (char) to_upper((unsigned char) line[n]);
    }
    cmd->verb[n] = 0;
    /* " FOO": no verb but something after it is not a command. */
    if (n == 0 && len > 0)
        return -1;
    while (n < len && line[n] == ' ')
        n++;
    cmd->args = line + n;
    return 0;
}

/* ---- paths and ESMTP parameters ---------------------------------------- */

static const char *
why_syntax(const char *keyword)
{
    return str_casecmp(keyword, "FROM") == 0 ? "5.5.4 Syntax: MAIL FROM:<address>"
                                             : "5.5.4 Syntax: RCPT TO:<address>";
}

static const char *
why_bad_addr(const char *keyword)
{
    return str_casecmp(keyword, "FROM") == 0 ? "5.1.7 Bad sender address syntax"
                                             : "5.1.3 Bad recipient address syntax";
}

/*
 * Find the '>' that closes the path starting after '<' at p, honouring
 * quoted strings. Rejects control characters, unbalanced quotes and bare
 * spaces or '<' outside quotes. Returns the '>' or NULL.
 */
static char *
path_end(char *p)
{
    int quoted = 0;

    for (; *p; p++) {
        int c = (unsigned char) *p;

        if (is_ctrl(c))
            return NULL;
        if (quoted) {
            if (c == '\\') {
                /* quoted-pair: backslash and one printable character */
                if (p[1] == 0 || is_ctrl((unsigned char) p[1]))
                    return NULL;
                p++;
            } else if (c == '"') {
                quoted = 0;
            }
            continue;
        }
        if (c == '"')
            quoted = 1;
        else if (c == '>')
            return p;
        else if (c == ' ' || c == '<' || c == '\\')
            return NULL;
    }
    return NULL;
}

/* Skip a source route "@a,@b:" (obsolete, RFC 5321 section 4.1.2): its
 * hosts are to be ignored. Returns the address after it, or NULL. */
static const char *
skip_route(const char *a)
{
    const char *p = a;

    for (;;) {
        if (*p != '@')
            return NULL;
        p++;
        if (!is_alnum((unsigned char) *p) && *p != '[')
            return NULL;
        while (is_alnum((unsigned char) *p) || *p == '-' || *p == '.' || *p == '['
               || *p == ']')
            p++;
        if (*p == ':')
            return p + 1;
        if (*p != ',')
            return NULL;
        p++;
    }
}

static int
param_name_ok(const char *name, size_t len)
{
    if (len == 0 || len >= sizeof(((SMTP_PARAM *) 0)->name))
        return 0;
    if (!is_alnum((unsigned char) name[0]))
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!is_alnum((unsigned char) name[i]) && name[i] != '-')
            return 0;
    return 1;
}

/* esmtp-value: printable, no spaces; bytes >= 0x80 for SMTPUTF8 peers. */
static int
param_value_ok(const char *v)
{
    if (*v == 0)
        return 0;
    for (; *v; v++) {
        int c = (unsigned char) *v;

        if (is_ctrl(c) || c == ' ')
            return 0;
    }
    return 1;
}

int
smtp_path_parse(char *args, const char *keyword, int allow_null, SMTP_PATH *path,
                const char **why_r)
{
    size_t klen = strlen(keyword), alen;
    char *p = args, *end;
    const char *addr;

    path->addr[0] = 0;
    path->nparam = 0;
    *why_r = NULL;

    if (str_ncasecmp(p, keyword, klen) != 0 || p[klen] != ':') {
        *why_r = why_syntax(keyword);
        return -1;
    }
    p += klen + 1;
    /* Many clients send "MAIL FROM: <a@b>"; Postfix accepts it too. */
    while (*p == ' ')
        p++;
    if (*p != '<') {
        *why_r = why_syntax(keyword);
        return -1;
    }
    p++;
    if ((end = path_end(p)) == NULL) {
        *why_r = why_bad_addr(keyword);
        return -1;
    }
    *end = 0;
    addr = p;
    if (*addr == '@' && (addr = skip_route(addr)) == NULL) {
        *why_r = why_bad_addr(keyword);
        return -1;
    }
    alen = strlen(addr);
    if (alen == 0 && (!allow_null || addr != p)) {
        *why_r = allow_null ? why_bad_addr(keyword) : "5.5.4 Null address not allowed here";
        return -1;
    }
    if (alen > SMTP_ADDR_MAX) {
        *why_r = "5.5.4 Address too long";
        return -1;
    }
    memcpy(path->addr, addr, alen + 1);

    p = end + 1;
    if (*p != 0 && *p != ' ') {
        *why_r = why_syntax(keyword);
        return -1;
    }
    for (;;) {
        char *name, *eq;
        size_t nlen;
        SMTP_PARAM *prm;

        while (*p == ' ')
            p++;
        if (*p == 0)
            break;
        name = p;
        while (*p && *p != ' ')
            p++;
        if (*p)
            *p++ = 0;
        if (path->nparam >= SMTP_PARAM_MAX) {
            *why_r = "5.5.4 Too many parameters";
            return -1;
        }
        eq = strchr(name, '=');
        nlen = eq ? (size_t) (eq - name) : strlen(name);
        if (!param_name_ok(name, nlen) || (eq && !param_value_ok(eq + 1))) {
            *why_r = "5.5.4 Invalid parameter syntax";
            return -1;
        }
        prm = &path->param[path->nparam++];
        for (size_t i = 0; i < nlen; i++)
            prm->name[i] = (char) to_upper((unsigned char) name[i]);
        prm->name[nlen] = 0;
        if (eq) {
            *eq = 0;
            prm->value = eq + 1;
        } else {
            prm->value = NULL;
        }
    }
    return 0;
}

const SMTP_PARAM *
smtp_path_param(const SMTP_PATH *path, const char *name)
{
    for (int i = 0; i < path->nparam; i++)
        if (str_casecmp(path->param[i].name, name) == 0)
            return &path->param[i];
    return NULL;
}

/* ---- xtext --------------------------------------------------------------- */

static int
xtext_hexval(int c)
{
    /* RFC 3461 hexchar: upper-case only */
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode one xtext unit at s: byte value via *c_r, returns units consumed
 * (1 or 3), or 0 when malformed. */
static int
xtext_unit(const char *s, int *c_r)
{
    int c = (unsigned char) s[0];

    if (c == '+') {
        int hi = xtext_hexval((unsigned char) s[1]), lo;

        if (hi < 0 || (lo = xtext_hexval((unsigned char) s[2])) < 0)
            return 0;
        *c_r = hi * 16 + lo;
        return 3;
    }
    if (c < '!' || c > '~' || c == '=')
        return 0;
    *c_r = c;
    return 1;
}

int
xtext_valid(const char *s)
{
    while (*s) {
        int c, n = xtext_unit(s, &c);

        if (n == 0)
            return 0;
        s += n;
    }
    return 1;
}

int
xtext_decode(const char *in, char *out, size_t size)
{
    size_t len = 0;

    if (size == 0)
        return -1;
    while (*in) {
        int c, n = xtext_unit(in, &c);

        if (n == 0 || len + 1 >= size)
            return -1;
        out[len++] = (char) c;
        in += n;
    }
    out[len] = 0;
    return (int) len;
}

int
xtext_encode(const char *in, size_t len, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    if (size == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char) in[i];

        if (c < '!' || c > '~' || c == '+' || c == '=') {
            if (o + 3 >= size)
                return -1;
            out[o++] = '+';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            if (o + 1 >= size)
                return -1;
            out[o++] = (char) c;
        }
    }
    out[o] = 0;
    return o > (size_t) 0x7fffffff ? -1 : (int) o;
}

/* ---- replies ------------------------------------------------------------- */

void
smtp_reply_init(SMTP_REPLY *r)
{
    r->code = 0;
    r->enh[0] = 0;
    r->text[0] = 0;
    r->nlines = 0;
    r->done = 0;
}

/* Length of an enhanced status code "C.SSS.DDD" at t whose class matches
 * the reply's first digit and that is followed by a space or the end;
 * 0 when there is none. */
static size_t
enh_code_len(const char *t, size_t len, int class_digit)
{
    size_t i = 0;
    int digits;

    if (len < 5 || t[0] != class_digit || t[1] != '.')
        return 0;
    i = 2;
    for (int part = 0; part < 2; part++) {
        for (digits = 0; i < len && is_digit((unsigned char) t[i]) && digits < 4; i++)
            digits++;
        if (digits < 1 || digits > 3)
            return 0;
        if (part == 0) {
            if (i >= len || t[i] != '.')
                return 0;
            i++;
        }
    }
    if (i < len && t[i] != ' ')
        return 0;
    return i;
}

int
smtp_reply_feed(SMTP_REPLY *r, const char *line, size_t len)
{
    int code, last;
    const char *t;
    size_t tlen, have, room, elen;

    if (r->done)
        return -1;
    if (len < 3 || memchr(line, 0, len) != NULL)
        return -1;
    if (line[0] < '2' || line[0] > '5' || !is_digit((unsigned char) line[1])
        || !is_digit((unsigned char) line[2]))
        return -1;
    code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (len == 3) {
        last = 1; /* "250" alone: a final line with no text */
    } else if (line[3] == ' ') {
        last = 1;
    } else if (line[3] == '-') {
        last = 0;
    } else {
        return -1;
    }
    if (r->nlines > 0 && code != r->code)
        return -1;
    r->code = code;

    t = len > 4 ? line + 4 : "";
    tlen = len > 4 ? len - 4 : 0;
    elen = enh_code_len(t, tlen, line[0]);
    if (elen > 0 && r->nlines == 0 && elen < sizeof(r->enh)) {
        memcpy(r->enh, t, elen);
        r->enh[elen] = 0;
    }
    /* Drop the enhanced code from the text when it is the reply's own:
     * summaries print it once, after the numeric code. */
    if (elen > 0 && r->enh[0] && elen == strlen(r->enh) && memcmp(t, r->enh, elen) == 0) {
        t += elen;
        tlen -= elen;
        if (tlen > 0 && *t == ' ') {
            t++;
            tlen--;
        }
    }

    /* Append "\n" + text, cut to what fits. */
    have = strlen(r->text);
    room = sizeof(r->text) - 1 - have;
    if (r->nlines > 0 && room > 0) {
        r->text[have++] = '\n';
        room--;
    }
    if (tlen > room)
        tlen = room;
    memcpy(r->text + have, t, tlen);
    r->text[have + tlen] = 0;
    r->nlines++;
    r->done = last;
    return last;
}

/* Longest reply line we read whole; longer ones are cut (RFC 5321 says 512). */
#define SMTP_REPLY_LINE 2048
/* A peer that sends continuation lines forever is not answering. */
#define SMTP_REPLY_LINES_MAX 1000

int
smtp_reply_read(STREAM *s, SMTP_REPLY *r)
{
    return smtp_reply_read_each(s, r, NULL, NULL);
}

int
smtp_reply_read_each(STREAM *s, SMTP_REPLY *r, SMTP_REPLY_LINE_FN each, void *ctx)
{
    char buf[SMTP_REPLY_LINE + 1];

    smtp_reply_init(r);
    for (;;) {
        size_t len, skip_len;
        int flags, ret;

        ret = stream_get_line(s, buf, sizeof(buf), &len, &flags);
        if (ret < 0)
            return ret;
        /* Cut an over-long line: drain the rest of it. */
        if (flags & STREAM_LINE_PARTIAL) {
            char junk[512];
            int jflags = STREAM_LINE_PARTIAL;

            while (jflags & STREAM_LINE_PARTIAL) {
                ret = stream_get_line(s, junk, sizeof(junk), &skip_len, &jflags);
                if (ret < 0)
                    return ret;
            }
            flags = jflags;
        }
        ret = smtp_reply_feed(r, buf, len);
        if (ret < 0)
            return SMTP_REPLY_MALFORMED;
        if (each != NULL)
            each(ctx, r, len > 4 ? buf + 4 : "", len > 4 ? len - 4 : 0);
        if (ret == 1)
            return 0;
        if (flags & STREAM_LINE_EOF)
            return STREAM_EOF;
        if (r->nlines >= SMTP_REPLY_LINES_MAX)
            return SMTP_REPLY_MALFORMED;
    }
}

const char *
smtp_reply_summary(const SMTP_REPLY *r, char *buf, size_t size)
{
    char head[32];
    size_t o, i;

    if (size == 0)
        return buf;
    if (r->enh[0])
        (void) str_format(head, sizeof(head), "%03d %s ", r->code, r->enh);
    else
        (void) str_format(head, sizeof(head), "%03d ", r->code);
    o = str_copy(buf, head, size);
    if (o >= size)
        return buf; /* cut; str_copy terminated it */
    for (i = 0; r->text[i] && r->text[i] != '\n' && o + 1 < size; i++) {
        unsigned char c = (unsigned char) r->text[i];

        buf[o++] = (c >= 0x20 && c < 0x7f) ? (char) c : '?';
    }
    /* No text at all: do not leave a dangling space. */
    if (i == 0 && o > 0 && buf[o - 1] == ' ')
        o--;
    buf[o] = 0;
    return buf;
}

/* Write "CODE<sep>text\r\n" with CR and LF in text made harmless, so no
 * caller can split one reply into two by accident. */
static int
reply_write(STREAM *s, int code, char sep, const char *text)
{
    char line[1024];
    size_t o;

    if (code < 100 || code > 999)
        msg_panic("smtp reply: bad code %d", code);
    if (str_format(line, sizeof(line), "%03d%c", code, sep) < 0)
        return -1;
    o = 4;
    for (; *text && o < sizeof(line) - 3; text++)
        line[o++] = (*text == '\r' || *text == '\n') ? ' ' : *text;
    line[o++] = '\r';
    line[o++] = '\n';
    return stream_write(s, line, o);
}

int
smtp_reply_send(STREAM *s, int code, const char *enh, const char *fmt, ...)
{
    char text[1000];
    char full[1024];
    va_list ap;

    va_start(ap, fmt);
    /* A reply cut to a line's length is still a valid reply. */
    (void) vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (enh != NULL && *enh != 0) {
        if (str_format(full, sizeof(full), "%s%s%s", enh, *text ? " " : "", text) < 0)
            full[sizeof(full) - 1] = 0;
        return reply_write(s, code, ' ', full);
    }
    return reply_write(s, code, ' ', text);
}

int
smtp_reply_send_line(STREAM *s, int code, int last, const char *text)
{
    return reply_write(s, code, last ? ' ' : '-', text);
}

/* ---- dot-stuffing -------------------------------------------------------- */

void
smtp_stuff_init(SMTP_STUFF *st)
{
    st->at_line_start = 1;
    st->pending_cr = 0;
}

/* A small output batch so out() is not called once per byte. */
typedef struct {
    char buf[1024];
    size_t len;
    int (*out)(void *ctx, const char *buf, size_t n);
    void *ctx;
    int ret;
} STUFF_OUT;

static void
stuff_put(STUFF_OUT *o, const char *p, size_t n)
{
    for (size_t i = 0; i < n && o->ret == 0; i++) {
        if (o->len == sizeof(o->buf)) {
            o->ret = o->out(o->ctx, o->buf, o->len);
            o->len = 0;
            if (o->ret != 0)
                return;
        }
        o->buf[o->len++] = p[i];
    }
}

static int
stuff_drain(STUFF_OUT *o)
{
    if (o->ret == 0 && o->len > 0)
        o->ret = o->out(o->ctx, o->buf, o->len);
    o->len = 0;
    return o->ret;
}

int
smtp_stuff_feed(SMTP_STUFF *st, const char *in, size_t len,
                int (*out)(void *ctx, const char *buf, size_t n), void *ctx)
{
    STUFF_OUT o = {.len = 0, .out = out, .ctx = ctx, .ret = 0};

    for (size_t i = 0; i < len && o.ret == 0; i++) {
        char c = in[i];

        if (st->pending_cr) {
            st->pending_cr = 0;
            if (c == '\n') {
                stuff_put(&o, "\r\n", 2);
                st->at_line_start = 1;
                continue;
            }
            /* A bare CR is data; the line has begun with it. */
            stuff_put(&o, "\r", 1);
            st->at_line_start = 0;
        }
        if (c == '\r') {
            st->pending_cr = 1;
        } else if (c == '\n') {
            stuff_put(&o, "\r\n", 2);
            st->at_line_start = 1;
        } else {
            if (st->at_line_start && c == '.')
                stuff_put(&o, ".", 1);
            stuff_put(&o, &c, 1);
            st->at_line_start = 0;
        }
    }
    return stuff_drain(&o);
}

int
smtp_stuff_finish(SMTP_STUFF *st, int (*out)(void *ctx, const char *buf, size_t n), void *ctx)
{
    STUFF_OUT o = {.len = 0, .out = out, .ctx = ctx, .ret = 0};

    /* A CR at the very end is not followed by LF: it is data. */
    if (st->pending_cr) {
        stuff_put(&o, "\r", 1);
        st->pending_cr = 0;
        st->at_line_start = 0;
    }
    if (!st->at_line_start) {
        stuff_put(&o, "\r\n", 2);
        st->at_line_start = 1;
    }
    return stuff_drain(&o);
}
