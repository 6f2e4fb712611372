/*
 * mime.c - 8-bit to 7-bit MIME downgrade (see mime.h for what changes).
 *
 * Three layers:
 *  - the reader (MIME_RD): pread(2) into one buffer, hands out the content
 *    line by line in pieces (a line longer than the buffer comes in several
 *    pieces; the first piece of a line holds min(line, buffer) bytes, so a
 *    header name or a boundary is always seen whole), removes the stuffed
 *    dot, stops at the "." line, and can go back to any line start (cheap
 *    while it is still in the buffer);
 *  - the writer (MIME_WR): one output buffer, dot-stuffing at line start;
 *  - the MIME walk, recursive like the structure it follows: an entity is
 *    a header block and a body; a body is a leaf (copied, or converted to
 *    quoted-printable), a multipart (preamble, parts, epilogue) or a
 *    message/rfc822 (an entity). A body ends at a line that starts with
 *    "--" and any boundary on the stack, innermost first, trailing cruft
 *    ignored (Postfix's rule), or at the end of the message.
 *
 * Before a leaf's headers are written, a look-ahead reads its body up to
 * its end to see whether it holds 8-bit bytes; then the reader goes back
 * to the header block and writes it, dropping the Content-Transfer-Encoding
 * header when the part is converted and adding the new one at the end.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mime.h"
#include "util.h"

#define MIME_RD_BUF (64 * 1024)
#define MIME_WR_BUF (64 * 1024)
/* Content-Type and Content-Transfer-Encoding values kept for parsing
 * (unfolded); the rest of a longer header is not looked at. */
#define MIME_HVALUE_MAX (16 * 1024)
/* Boundary bytes kept; a longer one (RFC 2046 allows 70) is matched by its
 * first MIME_BOUNDARY_MAX bytes, as Postfix does with its saved copy. */
#define MIME_BOUNDARY_MAX 256
/* Longest quoted-printable output line before the soft break "=". */
#define MIME_QP_LINE 75

/* ---- reader -------------------------------------------------------------- */

typedef struct {
    int fd;
    off_t base;        /* file offset of the content */
    long long length;  /* content bytes */
    long long win;     /* content offset of buf[0] */
    size_t start;      /* next unread byte in buf */
    size_t end;        /* bytes valid in buf */
    int line_start;    /* the next byte starts a line */
    int done;          /* the "." line has been read */
    char buf[MIME_RD_BUF];
} MIME_RD;

/* Content offset of the next unread byte (a line start between lines). */
static long long
rd_tell(const MIME_RD *r)
{
    return r->win + (long long) r->start;
}

/* Go back (or forth) to a line start seen before. */
static void
rd_seek(MIME_RD *r, long long off)
{
    if (off >= r->win && off <= r->win + (long long) r->end) {
        r->start = (size_t) (off - r->win);
    } else {
        r->win = off;
        r->start = r->end = 0;
    }
    r->line_start = 1;
    r->done = 0;
}

/* Move unread data to the front and read more. 1 read, 0 nothing left in
 * the content or no room, -1 with errno (EIO for a short file). */
static int
rd_fill(MIME_RD *r)
{
    long long left;
    size_t room;
    ssize_t n;

    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->win += (long long) r->start;
        r->end -= r->start;
        r->start = 0;
    }
    left = r->length - (r->win + (long long) r->end);
    room = MIME_RD_BUF - r->end;
    if (left <= 0 || room == 0)
        return 0;
    if ((long long) room > left)
        room = (size_t) left;
    do {
        n = pread(r->fd, r->buf + r->end, room, r->base + (off_t) (r->win + (long long) r->end));
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    if (n == 0) {
        errno = EIO; /* the file is shorter than the content length */
        return -1;
    }
    r->end += (size_t) n;
    return 1;
}

/* The next piece of the current line: *p, *len (CRLF and a stuffed leading
 * dot removed); *eol is 1 when the piece ends the line. Returns 1, 0 at the
 * end of the content (the "." line, or no more bytes at a line start), -1
 * with errno. */
static int
rd_piece(MIME_RD *r, const char **p, size_t *len, int *eol)
{
    const char *s, *nl;
    size_t avail, n, skip;
    long long left;
    int ret;

    if (r->done)
        return 0;
    for (;;) {
        avail = r->end - r->start;
        s = r->buf + r->start;
        nl = NULL;
        for (const char *q = s; (q = memchr(q, '\n', (size_t) (s + avail - q))) != NULL; q++) {
            if (q > s && q[-1] == '\r') {
                nl = q;
                break;
            }
        }
        if (nl != NULL) {
            n = (size_t) (nl - 1 - s);
            skip = n + 2;
            *eol = 1;
            break;
        }
        left = r->length - (r->win + (long long) r->end);
        if (left > 0 && (r->start > 0 || r->end < MIME_RD_BUF)) {
            if ((ret = rd_fill(r)) < 0)
                return -1;
            continue;
        }
        if (left > 0) {
            /* A full buffer without a line end: hand it out, keeping a
             * last CR that may start the CRLF. */
            n = avail;
            if (s[n - 1] == '\r')
                n--;
            skip = n;
            *eol = 0;
            break;
        }
        /* The end of the content. */
        if (avail == 0 && r->line_start)
            return 0;
        n = skip = avail; /* a last line without CRLF, or the rest of one */
        *eol = 1;
        break;
    }
    r->start += skip;
    if (r->line_start && n > 0 && s[0] == '.') {
        if (n == 1 && *eol) {
            r->done = 1;
            return 0;
        }
        s++;
        n--;
    }
    r->line_start = *eol;
    *p = s;
    *len = n;
    return 1;
}

/* ---- writer -------------------------------------------------------------- */

typedef struct {
    int fd;
    size_t len;
    int line_start;
    char buf[MIME_WR_BUF];
} MIME_WR;

static int
wr_flush(MIME_WR *w)
{
    if (w->len > 0 && write_all(w->fd, w->buf, w->len) < 0)
        return -1;
    w->len = 0;
    return 0;
}

/* Raw bytes. */
static int
wr_bytes(MIME_WR *w, const char *p, size_t n)
{
    while (n > 0) {
        size_t k = MIME_WR_BUF - w->len;

        if (k == 0) {
            if (wr_flush(w) < 0)
                return -1;
            continue;
        }
        if (k > n)
            k = n;
        memcpy(w->buf + w->len, p, k);
        w->len += k;
        p += k;
        n -= k;
    }
    return 0;
}

/* Line content: a '.' at the start of a line is doubled. */
static int
wr_text(MIME_WR *w, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (w->line_start && p[0] == '.' && wr_bytes(w, ".", 1) < 0)
        return -1;
    w->line_start = 0;
    return wr_bytes(w, p, n);
}

static int
wr_eol(MIME_WR *w)
{
    w->line_start = 1;
    return wr_bytes(w, "\r\n", 2);
}

/* ---- MIME walk ----------------------------------------------------------- */

enum { CT_TEXT, CT_MULTIPART, CT_MESSAGE, CT_OTHER };
enum { ST_OTHER, ST_RFC822, ST_GLOBAL, ST_DIGEST };
enum { CTE_NONE, CTE_7BIT, CTE_8BIT, CTE_BINARY, CTE_QP, CTE_BASE64, CTE_OTHER };

typedef struct {
    char text[MIME_BOUNDARY_MAX];
    size_t len;
} MIME_BOUND;

typedef struct {
    MIME_RD rd;
    MIME_WR wr;
    char *error;          /* why: IMPOSSIBLE or -1 */
    int nbound;           /* boundaries on the stack */
    MIME_BOUND bound[MIME_NESTING_MAX];
    char hval[MIME_HVALUE_MAX]; /* value of the header being collected */
    size_t hlen;
    /* quoted-printable output line */
    char qline[MIME_QP_LINE + 8];
    size_t qlen;
    int qsoft;            /* the current output line follows a soft break */
} MIME_CTX;

/* How a body ended: at a boundary line of stack level `level` (not yet
 * read), or at the end of the message (level -1). */
typedef struct {
    int level;
    int closing;
} MIME_TERM;

typedef struct {
    int ctype, stype, cte;
    int have_ct, have_cte, have_mv;
    int hdr8;               /* a byte >= 0x80 in a header */
    MIME_BOUND boundary;    /* len 0: none */
    long long hdr_off;      /* first header line */
    long long sep_off;      /* the line that ended the header block */
    long long body_off;     /* after the empty separator line, if any */
} MIME_ENTITY;

static int ODMR_PRINTF(2, 3)
ctx_impossible(MIME_CTX *c, const char *fmt, ...)
{
    va_list ap;

    if (c->error == NULL) {
        char why[256];

        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        c->error = x_strdup(why);
    }
    return MIME_DOWNGRADE_IMPOSSIBLE;
}

static int
ctx_syserr(MIME_CTX *c, const char *what)
{
    if (c->error == NULL)
        c->error = x_asprintf("%s: %s", what, strerror(errno));
    return -1;
}

/* The file changed between the look-ahead and the second reading. */
static int
ctx_changed(MIME_CTX *c)
{
    errno = EIO;
    return ctx_syserr(c, "read message content: changed while converting");
}

static int
ctx_piece(MIME_CTX *c, const char **p, size_t *n, int *eol)
{
    int r = rd_piece(&c->rd, p, n, eol);

    if (r < 0)
        return ctx_syserr(c, "read message content");
    return r;
}

static int
has_8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char) p[i] & 0x80)
            return 1;
    return 0;
}

/* Stack level of the boundary this line starts with (innermost first), or
 * -1. Only the first piece of a line is passed. */
static int
match_boundary(const MIME_CTX *c, const char *p, size_t n, int *closing)
{
    if (n < 3 || p[0] != '-' || p[1] != '-')
        return -1;
    for (int i = c->nbound - 1; i >= 0; i--) {
        const MIME_BOUND *b = &c->bound[i];

        if (n >= 2 + b->len && memcmp(p + 2, b->text, b->len) == 0) {
            *closing = n >= 4 + b->len && p[2 + b->len] == '-' && p[3 + b->len] == '-';
            return i;
        }
    }
    return -1;
}

/* Length of "name:" (or obsolete "name :") at the start of a line, or 0. */
static size_t
header_name_len(const char *p, size_t n)
{
    size_t i = 0;

    while (i < n && (unsigned char) p[i] > ' ' && (unsigned char) p[i] < 0x7f && p[i] != ':')
        i++;
    if (i == 0)
        return 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    return i < n && p[i] == ':' ? i + 1 : 0;
}

static int
name_is(const char *p, size_t n, const char *name)
{
    size_t k = strlen(name);

    while (n > 0 && (p[n - 1] == ':' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return n == k && str_ncasecmp(p, name, k) == 0;
}

/* ---- header values (RFC 2045 section 5.1: tokens, quoted strings, and
 * RFC 5322 comments) ---- */

typedef struct {
    const char *p, *end;
} MIME_LEX;

static void
lex_skip(MIME_LEX *x)
{
    int depth = 0;

    while (x->p < x->end) {
        char ch = *x->p;

        if (depth > 0) {
            if (ch == '\\' && x->p + 1 < x->end)
                x->p++;
            else if (ch == '(')
                depth++;
            else if (ch == ')')
                depth--;
        } else if (ch == '(') {
            depth = 1;
        } else if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') {
            return;
        }
        x->p++;
    }
}

static int
is_tspecial(char ch)
{
    return strchr("()<>@,;:\\\"/[]?=", ch) != NULL;
}

/* A token into out (cut to size-1); 0 when there is none. */
static int
lex_token(MIME_LEX *x, char *out, size_t size)
{
    size_t n = 0;

    lex_skip(x);
    while (x->p < x->end && (unsigned char) *x->p > ' ' && (unsigned char) *x->p < 0x7f
           && !is_tspecial(*x->p)) {
        if (n + 1 < size)
            out[n++] = *x->p;
        x->p++;
    }
    out[n] = 0;
    return n > 0;
}

/* A token or a quoted string. */
static int
lex_value(MIME_LEX *x, char *out, size_t size, size_t *len_r)
{
    size_t n = 0;

    lex_skip(x);
    if (x->p < x->end && *x->p == '"') {
        for (x->p++; x->p < x->end && *x->p != '"'; x->p++) {
            if (*x->p == '\\' && x->p + 1 < x->end)
                x->p++;
            if (*x->p == '\r' || *x->p == '\n')
                continue; /* unfolding */
            if (n + 1 < size)
                out[n++] = *x->p;
        }
        if (x->p < x->end)
            x->p++;
        out[n] = 0;
        *len_r = n;
        return 1;
    }
    if (!lex_token(x, out, size))
        return 0;
    *len_r = strlen(out);
    return 1;
}

static int
lex_char(MIME_LEX *x, char ch)
{
    lex_skip(x);
    if (x->p < x->end && *x->p == ch) {
        x->p++;
        return 1;
    }
    return 0;
}

static void
parse_content_type(MIME_ENTITY *e, const char *v, size_t n)
{
    MIME_LEX x = {v, v + n};
    char type[64], sub[64], attr[64], val[MIME_BOUNDARY_MAX + 1];
    size_t vlen;

    e->have_ct = 1;
    if (!lex_token(&x, type, sizeof(type)) || !lex_char(&x, '/')
        || !lex_token(&x, sub, sizeof(sub))) {
        /* Unparsable: as Postfix, not text (so not given a charset). */
        e->ctype = CT_OTHER;
        e->stype = ST_OTHER;
        return;
    }
    if (str_casecmp(type, "text") == 0)
        e->ctype = CT_TEXT;
    else if (str_casecmp(type, "multipart") == 0)
        e->ctype = CT_MULTIPART;
    else if (str_casecmp(type, "message") == 0)
        e->ctype = CT_MESSAGE;
    else
        e->ctype = CT_OTHER;
    if (str_casecmp(sub, "rfc822") == 0)
        e->stype = ST_RFC822;
    else if (str_casecmp(sub, "global") == 0)
        e->stype = ST_GLOBAL;
    else if (str_casecmp(sub, "digest") == 0)
        e->stype = ST_DIGEST;
    else
        e->stype = ST_OTHER;
    while (lex_char(&x, ';')) {
        if (!lex_token(&x, attr, sizeof(attr)) || !lex_char(&x, '='))
            break;
        if (!lex_value(&x, val, sizeof(val), &vlen))
            break;
        if (str_casecmp(attr, "boundary") == 0 && e->boundary.len == 0 && vlen > 0) {
            if (vlen > MIME_BOUNDARY_MAX)
                vlen = MIME_BOUNDARY_MAX;
            memcpy(e->boundary.text, val, vlen);
            e->boundary.len = vlen;
        }
    }
}

static void
parse_cte(MIME_ENTITY *e, const char *v, size_t n)
{
    static const struct {
        const char *name;
        int cte;
    } map[] = {
        {"7bit", CTE_7BIT},   {"8bit", CTE_8BIT},     {"binary", CTE_BINARY},
        {"base64", CTE_BASE64}, {"quoted-printable", CTE_QP},
    };
    MIME_LEX x = {v, v + n};
    char tok[64];

    e->have_cte = 1;
    e->cte = CTE_OTHER;
    if (!lex_token(&x, tok, sizeof(tok)))
        return;
    for (size_t i = 0; i < ODMR_ARRAY_LEN(map); i++)
        if (str_casecmp(tok, map[i].name) == 0)
            e->cte = map[i].cte;
}

/* Headers we look at. */
enum { H_NONE, H_OTHER, H_CT, H_CTE, H_MV };

static int
header_kind(const char *p, size_t namelen)
{
    if (name_is(p, namelen, "content-type"))
        return H_CT;
    if (name_is(p, namelen, "content-transfer-encoding"))
        return H_CTE;
    if (name_is(p, namelen, "mime-version"))
        return H_MV;
    return H_OTHER;
}

static void
hval_add(MIME_CTX *c, const char *p, size_t n)
{
    if (n > MIME_HVALUE_MAX - c->hlen)
        n = MIME_HVALUE_MAX - c->hlen;
    memcpy(c->hval + c->hlen, p, n);
    c->hlen += n;
}

static void
header_done(MIME_CTX *c, MIME_ENTITY *e, int kind)
{
    /* The first of each wins, as in Python's email package. */
    if (kind == H_CT && !e->have_ct)
        parse_content_type(e, c->hval, c->hlen);
    else if (kind == H_CTE && !e->have_cte)
        parse_cte(e, c->hval, c->hlen);
    else if (kind == H_MV)
        e->have_mv = 1;
    c->hlen = 0;
}

/* Read the header block at the reader's position into e; the reader is left
 * at e->body_off. A header block ends at an empty line (the separator, kept
 * apart), at a line that is not a header or its continuation, at a
 * boundary line, or at the end. */
static int
scan_headers(MIME_CTX *c, MIME_ENTITY *e, int dflt_ctype, int dflt_stype)
{
    const char *p;
    size_t n, nl;
    int eol, r, kind = H_NONE, closing;
    long long off;

    memset(e, 0, sizeof(*e));
    e->ctype = dflt_ctype;
    e->stype = dflt_stype;
    e->cte = CTE_NONE;
    e->hdr_off = rd_tell(&c->rd);
    c->hlen = 0;
    for (;;) {
        off = rd_tell(&c->rd);
        if ((r = ctx_piece(c, &p, &n, &eol)) < 0)
            return -1;
        if (r == 0) {
            e->sep_off = e->body_off = off;
            rd_seek(&c->rd, off);
            break;
        }
        if (kind != H_NONE && n > 0 && (p[0] == ' ' || p[0] == '\t')) {
            if (kind == H_CT || kind == H_CTE)
                hval_add(c, "\r\n", 2); /* keep the fold: values are unfolded by lex_skip */
        } else if ((nl = header_name_len(p, n)) > 0 && match_boundary(c, p, n, &closing) < 0) {
            if (kind != H_NONE)
                header_done(c, e, kind);
            kind = header_kind(p, nl);
            e->hdr8 |= has_8bit(p, nl);
            p += nl;
            n -= nl;
        } else {
            if (kind != H_NONE)
                header_done(c, e, kind);
            e->sep_off = off;
            if (n == 0 && eol) {
                e->body_off = rd_tell(&c->rd);
            } else {
                e->body_off = off;
                rd_seek(&c->rd, off);
            }
            return 0;
        }
        for (;;) {
            e->hdr8 |= has_8bit(p, n);
            if (kind == H_CT || kind == H_CTE)
                hval_add(c, p, n);
            if (eol)
                break;
            if ((r = ctx_piece(c, &p, &n, &eol)) <= 0)
                return r < 0 ? -1 : 0; /* cannot end mid-line: rd ends lines */
        }
    }
    if (kind != H_NONE)
        header_done(c, e, kind);
    return 0;
}

/* Write the header block again from e->hdr_off, without the
 * Content-Transfer-Encoding header(s) when drop_cte, then `add` (CRLF
 * lines), then the separator line. The reader ends at e->body_off. */
static int
emit_headers(MIME_CTX *c, const MIME_ENTITY *e, int drop_cte, const char *add)
{
    const char *p;
    size_t n, nl;
    int eol, r, skip = 0;

    rd_seek(&c->rd, e->hdr_off);
    while (rd_tell(&c->rd) < e->sep_off) {
        if ((r = ctx_piece(c, &p, &n, &eol)) <= 0)
            return r < 0 ? -1 : ctx_changed(c);
        if (!(n > 0 && (p[0] == ' ' || p[0] == '\t')) && (nl = header_name_len(p, n)) > 0)
            skip = drop_cte && header_kind(p, nl) == H_CTE;
        for (;;) {
            if (!skip && wr_text(&c->wr, p, n) < 0)
                return ctx_syserr(c, "write converted content");
            if (eol)
                break;
            if ((r = ctx_piece(c, &p, &n, &eol)) <= 0)
                return r < 0 ? -1 : ctx_changed(c);
        }
        if (!skip && wr_eol(&c->wr) < 0)
            return ctx_syserr(c, "write converted content");
    }
    if (add != NULL && wr_bytes(&c->wr, add, strlen(add)) < 0)
        return ctx_syserr(c, "write converted content");
    if (e->body_off > e->sep_off) {
        rd_seek(&c->rd, e->sep_off);
        if (ctx_piece(c, &p, &n, &eol) < 0)
            return -1;
        if (wr_eol(&c->wr) < 0)
            return ctx_syserr(c, "write converted content");
    }
    rd_seek(&c->rd, e->body_off);
    return 0;
}

/* ---- quoted-printable output (RFC 2045 section 6.7) ---- */

static int
qp_line_out(MIME_CTX *c, int soft)
{
    if (soft)
        c->qline[c->qlen++] = '=';
    if (wr_text(&c->wr, c->qline, c->qlen) < 0 || wr_eol(&c->wr) < 0)
        return -1;
    c->qlen = 0;
    c->qsoft = soft;
    return 0;
}

static int
qp_encode(MIME_CTX *c, const char *p, size_t n, int eol)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char) p[i];
        int literal = ch >= 33 && ch <= 126 && ch != '=';
        int blank = ch == ' ' || ch == '\t';
        /* A blank may end the line and then needs "=20": reserve room. */
        size_t need = (literal && !blank) ? 1 : 3;

        if (c->qlen + need > MIME_QP_LINE && qp_line_out(c, 1) < 0)
            return -1;
        /* After a soft break, a line starting "--" could read as a
         * boundary: encode the dash. */
        if (c->qlen == 0 && c->qsoft && ch == '-')
            literal = 0;
        if (literal || blank) {
            c->qline[c->qlen++] = (char) ch;
        } else {
            c->qline[c->qlen++] = '=';
            c->qline[c->qlen++] = hex[ch >> 4];
            c->qline[c->qlen++] = hex[ch & 0xf];
        }
    }
    if (eol) {
        if (c->qlen > 0 && (c->qline[c->qlen - 1] == ' ' || c->qline[c->qlen - 1] == '\t')) {
            unsigned char ch = (unsigned char) c->qline[--c->qlen];

            c->qline[c->qlen++] = '=';
            c->qline[c->qlen++] = hex[ch >> 4];
            c->qline[c->qlen++] = hex[ch & 0xf];
        }
        if (qp_line_out(c, 0) < 0)
            return -1;
    }
    return 0;
}

/* ---- bodies ---- */

enum {
    BODY_SCAN,   /* read only: does it hold 8-bit bytes? */
    BODY_COPY,   /* copy unchanged */
    BODY_QP,     /* convert to quoted-printable */
    BODY_7BIT    /* copy; 8-bit bytes cannot be labelled (preamble, epilogue) */
};

/* Read a body up to the next boundary line of any level (left unread) or
 * the end of the message. *has8_r: a byte >= 0x80 was seen. */
static int
body(MIME_CTX *c, int mode, MIME_TERM *term, int *has8_r)
{
    const char *p;
    size_t n;
    int eol, r, first = 1, level, closing = 0;
    long long off = 0;

    *has8_r = 0;
    term->level = -1;
    term->closing = 0;
    c->qlen = 0;
    c->qsoft = 0;
    for (;;) {
        if (first)
            off = rd_tell(&c->rd);
        if ((r = ctx_piece(c, &p, &n, &eol)) < 0)
            return -1;
        if (r == 0)
            return 0;
        if (first && (level = match_boundary(c, p, n, &closing)) >= 0) {
            rd_seek(&c->rd, off);
            term->level = level;
            term->closing = closing;
            return 0;
        }
        if (!*has8_r && has_8bit(p, n)) {
            *has8_r = 1;
            if (mode == BODY_7BIT)
                return ctx_impossible(c, "8-bit data in a multipart preamble or epilogue");
        }
        switch (mode) {
        case BODY_SCAN:
            break;
        case BODY_QP:
            if (qp_encode(c, p, n, eol) < 0)
                return ctx_syserr(c, "write converted content");
            break;
        default:
            if (wr_text(&c->wr, p, n) < 0 || (eol && wr_eol(&c->wr) < 0))
                return ctx_syserr(c, "write converted content");
            break;
        }
        first = eol;
    }
}

/* Copy one (boundary) line unchanged. */
static int
copy_line(MIME_CTX *c)
{
    const char *p;
    size_t n;
    int eol, r;

    do {
        if ((r = ctx_piece(c, &p, &n, &eol)) <= 0)
            return r < 0 ? -1 : 0;
        if (has_8bit(p, n))
            return ctx_impossible(c, "8-bit data in a multipart boundary line");
        if (wr_text(&c->wr, p, n) < 0 || (eol && wr_eol(&c->wr) < 0))
            return ctx_syserr(c, "write converted content");
    } while (!eol);
    return 0;
}

static int entity(MIME_CTX *c, int dflt_ctype, int dflt_stype, int depth, int is_message,
                  MIME_TERM *term);

/* The body of a multipart whose boundary is e->boundary. */
static int
multipart(MIME_CTX *c, const MIME_ENTITY *e, int depth, MIME_TERM *term)
{
    int level = c->nbound, r, has8;
    int child_ctype = e->stype == ST_DIGEST ? CT_MESSAGE : CT_TEXT;
    int child_stype = e->stype == ST_DIGEST ? ST_RFC822 : ST_OTHER;

    c->bound[c->nbound++] = e->boundary;
    r = body(c, BODY_7BIT, term, &has8); /* preamble */
    while (r == 0 && term->level == level && !term->closing) {
        if ((r = copy_line(c)) != 0)
            break;
        r = entity(c, child_ctype, child_stype, depth + 1, 0, term);
    }
    if (r == 0 && term->level == level) { /* the close delimiter */
        if ((r = copy_line(c)) == 0)
            r = body(c, BODY_7BIT, term, &has8); /* epilogue */
    }
    /* Otherwise the end, or an outer boundary: this multipart was not
     * closed, and the outer level goes on. */
    c->nbound = level;
    return r;
}

static const char *
cte_name(int cte)
{
    switch (cte) {
    case CTE_BINARY:
        return "binary";
    case CTE_QP:
        return "quoted-printable";
    case CTE_BASE64:
        return "base64";
    default:
        return "an unknown encoding";
    }
}

/* An entity (headers and body) at the reader's position. */
static int
entity(MIME_CTX *c, int dflt_ctype, int dflt_stype, int depth, int is_message,
       MIME_TERM *term)
{
    MIME_ENTITY e;
    int identity, container, relabel, has8, r;
    char add[160];

    if ((r = scan_headers(c, &e, dflt_ctype, dflt_stype)) != 0)
        return r;
    if (e.hdr8)
        return ctx_impossible(c, "8-bit data in a message header");
    identity = e.cte == CTE_NONE || e.cte == CTE_7BIT || e.cte == CTE_8BIT || e.cte == CTE_BINARY;
    container = identity && depth < MIME_NESTING_MAX && c->nbound < MIME_NESTING_MAX
                && ((e.ctype == CT_MULTIPART && e.boundary.len > 0)
                    || (e.ctype == CT_MESSAGE && e.stype == ST_RFC822));
    if (container) {
        relabel = e.cte == CTE_8BIT || e.cte == CTE_BINARY;
        if ((r = emit_headers(c, &e, relabel,
                              relabel ? "Content-Transfer-Encoding: 7bit\r\n" : NULL))
            != 0)
            return r;
        if (e.ctype == CT_MULTIPART)
            return multipart(c, &e, depth, term);
        return entity(c, CT_TEXT, ST_OTHER, depth + 1, 1, term);
    }

    /* A leaf: look ahead. */
    if ((r = body(c, BODY_SCAN, term, &has8)) != 0)
        return r;
    if (!has8) {
        if ((r = emit_headers(c, &e, 0, NULL)) != 0)
            return r;
        return body(c, BODY_COPY, term, &has8);
    }
    if (!identity || e.cte == CTE_BINARY)
        return ctx_impossible(c, "8-bit data in a body part with Content-Transfer-Encoding %s",
                              cte_name(e.cte));
    if (e.ctype == CT_MULTIPART)
        return ctx_impossible(c, "%s", e.boundary.len > 0
                                           ? "8-bit data in a multipart nested too deeply"
                                           : "8-bit data in a multipart without a boundary");
    if (e.ctype == CT_MESSAGE && e.stype != ST_GLOBAL)
        return ctx_impossible(c, "%s", e.stype == ST_RFC822
                                           ? "8-bit data in a message/rfc822 nested too deeply"
                                           : "8-bit data in a message/* part that must be 7bit");
    if (str_format(add, sizeof(add), "%s%s%s",
                   is_message && !e.have_mv ? "MIME-Version: 1.0\r\n" : "",
                   !e.have_ct ? "Content-Type: text/plain; charset=unknown-8bit\r\n" : "",
                   "Content-Transfer-Encoding: quoted-printable\r\n")
        < 0)
        return ctx_impossible(c, "internal error: header does not fit");
    if ((r = emit_headers(c, &e, 1, add)) != 0)
        return r;
    /* Headers that ended at a line of text, not at an empty line: put the
     * empty line in, or the first encoded line could read as a header
     * ("=E9: x") and the added ones would no longer end the block. */
    if (e.body_off == e.sep_off && wr_eol(&c->wr) < 0)
        return ctx_syserr(c, "write converted content");
    return body(c, BODY_QP, term, &has8);
}

/* ---- API ----------------------------------------------------------------- */

int
mime_has_8bit(int fd, off_t offset, long long length, char **error_r)
{
    unsigned char *buf = x_malloc(MIME_RD_BUF);
    long long done = 0;
    int found = 0;

    while (done < length && !found) {
        size_t want = length - done < MIME_RD_BUF ? (size_t) (length - done) : MIME_RD_BUF;
        ssize_t n = pread(fd, buf, want, offset + (off_t) done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *error_r = n < 0 ? x_asprintf("read message content: %s", strerror(errno))
                             : x_strdup("read message content: file shorter than its content length");
            free(buf);
            return -1;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] & 0x80) {
                found = 1;
                break;
            }
        }
        done += n;
    }
    free(buf);
    return found;
}

int
mime_downgrade(int in_fd, off_t offset, long long length, int out_fd, char **error_r)
{
    MIME_CTX *c = x_malloc(sizeof(*c)); /* the buffers need no zeroing */
    MIME_TERM term;
    int r;

    c->error = NULL;
    c->nbound = 0;
    c->hlen = c->qlen = 0;
    c->qsoft = 0;
    c->rd.win = 0;
    c->rd.start = c->rd.end = 0;
    c->rd.done = 0;
    c->wr.len = 0;
    c->rd.fd = in_fd;
    c->rd.base = offset;
    c->rd.length = length < 0 ? 0 : length;
    c->rd.line_start = 1;
    c->wr.fd = out_fd;
    c->wr.line_start = 1;
    r = entity(c, CT_TEXT, ST_OTHER, 0, 1, &term);
    if (r == 0 && (wr_bytes(&c->wr, ".\r\n", 3) < 0 || wr_flush(&c->wr) < 0))
        r = ctx_syserr(c, "write converted content");
    if (r != 0)
        *error_r = c->error != NULL ? c->error : x_strdup("MIME conversion failed");
    else
        free(c->error);
    free(c);
    return r;
}
