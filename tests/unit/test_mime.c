/*
 * test_mime.c - unit tests for src/lib/mime.c: 8-bit detection and the
 * 8-bit to 7-bit MIME downgrade.
 *
 * Every converted output is checked for wire form (CRLF only, stuffed, one
 * "." line at the end), for 7-bit bytes, and decoded back (a small
 * quoted-printable decoder below) against the original text.
 *
 * Hidden modes used by tests/integration/t_mime.sh and the benchmark:
 *     test_mime convert IN OUT   IN: wire form; OUT: converted wire form.
 *                                Exit 0, 2 (impossible; reason on
 *                                stderr), 1 (error).
 *     test_mime has8bit IN       prints 1 or 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "mime.h"
#include "smtp.h"
#include "util.h"

/* ---- helpers --------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len;
    size_t cap;
} BUF;

static void
buf_add(BUF *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->buf = x_realloc(b->buf, b->cap);
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    b->buf[b->len] = 0;
}

static void
buf_str(BUF *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static int
sink(void *ctx, const char *p, size_t n)
{
    buf_add(ctx, p, n);
    return 0;
}

/* Text with LF or CRLF line ends -> wire form with the final ".\r\n". */
static BUF
wire(const char *text, size_t len)
{
    BUF b = {0};
    SMTP_STUFF st;

    buf_add(&b, "", 0);
    smtp_stuff_init(&st);
    smtp_stuff_feed(&st, text, len, sink, &b);
    smtp_stuff_finish(&st, sink, &b);
    buf_str(&b, ".\r\n");
    return b;
}

static int
mem_fd(const char *p, size_t n)
{
    int fd = memfd_create("test_mime", 0);

    assert_true(fd >= 0);
    assert_int_equal(write_all(fd, p, n), 0);
    return fd;
}

static BUF
fd_read_all(int fd)
{
    BUF b = {0};
    char tmp[65536];
    off_t off = 0;
    ssize_t n;

    buf_add(&b, "", 0);
    while ((n = pread(fd, tmp, sizeof(tmp), off)) > 0) {
        buf_add(&b, tmp, (size_t) n);
        off += n;
    }
    return b;
}

/* Run mime_downgrade on wire-form input placed at an offset (so offsets
 * are honoured); returns its result, output in *out, reason in *err. */
static int
downgrade(const BUF *in, BUF *out, char **err)
{
    static const char pad[] = "QUEUE-FILE-ENVELOPE\n";
    BUF file = {0};
    int in_fd, out_fd, r;

    buf_str(&file, pad);
    buf_add(&file, in->buf, in->len);
    buf_str(&file, "trailing bytes that are not content");
    in_fd = mem_fd(file.buf, file.len);
    out_fd = memfd_create("test_mime_out", 0);
    assert_true(out_fd >= 0);
    *err = NULL;
    r = mime_downgrade(in_fd, (off_t) strlen(pad), (long long) in->len, out_fd, err);
    *out = fd_read_all(out_fd);
    close(in_fd);
    close(out_fd);
    free(file.buf);
    if (r != 0)
        assert_non_null(*err);
    return r;
}

/* The output is wire form and 7-bit; returns it un-stuffed, without the
 * final ".\r\n". Also checks every line against max_line (0: no limit). */
static BUF
unwire_checked(const BUF *out, size_t max_line)
{
    BUF t = {0};
    size_t i = 0;

    buf_add(&t, "", 0);
    assert_true(out->len >= 3);
    assert_memory_equal(out->buf + out->len - 3, ".\r\n", 3);
    while (i < out->len - 3) {
        const char *nl = memchr(out->buf + i, '\n', out->len - 3 - i);
        size_t n;

        assert_non_null(nl);
        n = (size_t) (nl - (out->buf + i)) + 1;
        assert_true(n >= 2 && out->buf[i + n - 2] == '\r');
        for (size_t k = 0; k < n; k++) {
            assert_true((unsigned char) out->buf[i + k] < 0x80);
            assert_true(out->buf[i + k] != '\n' || k == n - 1);
        }
        if (out->buf[i] == '.') {
            assert_true(n > 3 && out->buf[i + 1] == '.'); /* stuffed, not the end */
            i++;
            n--;
        }
        if (max_line > 0)
            assert_true(n - 2 <= max_line);
        buf_add(&t, out->buf + i, n);
        i += n;
    }
    return t;
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode quoted-printable (CRLF hard breaks kept, "=\r\n" removed). Fails
 * the test on bad syntax, a space before a line end, a line over 76. */
static BUF
qp_decode(const char *p, size_t n)
{
    BUF b = {0};
    size_t col = 0;

    buf_add(&b, "", 0);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r') {
            assert_true(i + 1 < n && p[i + 1] == '\n');
            assert_true(col <= 76);
            assert_true(i == 0 || (p[i - 1] != ' ' && p[i - 1] != '\t'));
            buf_add(&b, "\r\n", 2);
            i++;
            col = 0;
            continue;
        }
        col++;
        if (p[i] == '=') {
            if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') {
                assert_true(col <= 76);
                i += 2;
                col = 0;
                continue;
            }
            assert_true(i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0);
            char ch = (char) (hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
            buf_add(&b, &ch, 1);
            i += 2;
            col += 2;
            continue;
        }
        assert_true((unsigned char) p[i] >= 32 || p[i] == '\t');
        buf_add(&b, p + i, 1);
    }
    return b;
}

/* The text between the first occurrence of `after` and of `before` that
 * follows it. */
static BUF
slice(const BUF *t, const char *after, const char *before)
{
    const char *a = strstr(t->buf, after), *z;
    BUF b = {0};

    assert_non_null(a);
    a += strlen(after);
    z = strstr(a, before);
    assert_non_null(z);
    buf_add(&b, "", 0);
    buf_add(&b, a, (size_t) (z - a));
    return b;
}

static void
assert_buf_str(const BUF *b, const char *s)
{
    assert_int_equal(b->len, strlen(s));
    assert_memory_equal(b->buf, s, b->len);
}

static void
buf_free(BUF *b)
{
    x_free(&b->buf);
    b->len = b->cap = 0;
}

/* Convert text (LF ends), expect success; returns the un-stuffed output. */
static BUF
convert_ok(const char *text, size_t max_line)
{
    BUF in = wire(text, strlen(text)), out, t;
    char *err;

    if (downgrade(&in, &out, &err) != 0)
        fail_msg("mime_downgrade: %s", err);
    t = unwire_checked(&out, max_line);
    buf_free(&in);
    buf_free(&out);
    return t;
}

/* Convert text, expect MIME_DOWNGRADE_IMPOSSIBLE with a reason containing
 * `why`. */
static void
convert_impossible(const char *text, const char *why)
{
    BUF in = wire(text, strlen(text)), out;
    char *err;
    int r = downgrade(&in, &out, &err);

    if (r != MIME_DOWNGRADE_IMPOSSIBLE)
        fail_msg("expected IMPOSSIBLE (%s), got %d (%s)", why, r, err ? err : "");
    if (strstr(err, why) == NULL)
        fail_msg("reason \"%s\" lacks \"%s\"", err, why);
    free(err);
    buf_free(&in);
    buf_free(&out);
}

/* ---- mime_has_8bit ----------------------------------------------------------- */

static void
test_has_8bit(void **state)
{
    char *big = x_malloc(200000), *err = NULL;
    int fd;

    memset(big, 'a', 200000);
    fd = mem_fd(big, 200000);
    assert_int_equal(mime_has_8bit(fd, 0, 200000, &err), 0);
    close(fd);

    /* past the first 64 KiB read, and only inside the range */
    big[150000] = (char) 0xe9;
    big[10] = (char) 0x80;
    fd = mem_fd(big, 200000);
    assert_int_equal(mime_has_8bit(fd, 0, 200000, &err), 1);
    assert_int_equal(mime_has_8bit(fd, 11, 100000, &err), 0);
    assert_int_equal(mime_has_8bit(fd, 11, 150000 - 11, &err), 0);
    assert_int_equal(mime_has_8bit(fd, 11, 150000 - 10, &err), 1);
    assert_int_equal(mime_has_8bit(fd, 10, 1, &err), 1);
    assert_int_equal(mime_has_8bit(fd, 0, 0, &err), 0);
    /* a file shorter than the length */
    assert_int_equal(mime_has_8bit(fd, 199000, 2000, &err), -1);
    assert_non_null(err);
    x_free(&err);
    close(fd);
    /* a bad descriptor */
    assert_int_equal(mime_has_8bit(-1, 0, 10, &err), -1);
    assert_non_null(strstr(err, "read"));
    x_free(&err);
    free(big);
}

/* ---- conversions ---------------------------------------------------------- */

static const char MULTI_7BIT[] =
    "From: a@example.net\n"
    "To: b@example.org\n"
    "Subject: plain\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed;\n"
    "\tboundary=\"==b1==\"\n"
    "\n"
    "preamble\n"
    "--==b1==\n"
    "Content-Type: text/plain\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "only ascii = here\n"
    ".leading dot\n"
    "--==b1==\n"
    "\n"
    "no headers\n"
    "--==b1==--\n"
    "epilogue\n";

static void
test_7bit_untouched(void **state)
{
    BUF in = wire(MULTI_7BIT, strlen(MULTI_7BIT)), out;
    char *err;
    int fd = mem_fd(in.buf, in.len);

    assert_int_equal(mime_has_8bit(fd, 0, (long long) in.len, &err), 0);
    close(fd);
    /* Nothing to convert: the same bytes, declared 8bit or not. */
    assert_int_equal(downgrade(&in, &out, &err), 0);
    assert_int_equal(out.len, in.len);
    assert_memory_equal(out.buf, in.buf, in.len);
    buf_free(&in);
    buf_free(&out);
}

static void
test_text_plain(void **state)
{
    BUF t = convert_ok("From: a@example.net\n"
                       "MIME-Version: 1.0\n"
                       "Content-Transfer-Encoding: 8bit\n"
                       "Content-Type: text/plain; charset=utf-8\n"
                       "Subject: hi\n"
                       "\n"
                       "Gr\xc3\xbc\xc3\x9f" "e = 100%\n"
                       "tab\tend \n"
                       "\n"
                       "last\n",
                       76);

    assert_buf_str(&t, "From: a@example.net\r\n"
                       "MIME-Version: 1.0\r\n"
                       "Content-Type: text/plain; charset=utf-8\r\n"
                       "Subject: hi\r\n"
                       "Content-Transfer-Encoding: quoted-printable\r\n"
                       "\r\n"
                       "Gr=C3=BC=C3=9Fe =3D 100%\r\n"
                       "tab\tend=20\r\n"
                       "\r\n"
                       "last\r\n");
    buf_free(&t);
}

static void
test_no_mime_version(void **state)
{
    BUF t = convert_ok("Subject: old\n"
                       "Content-Transfer-Encoding:\n"
                       " 8bit\n"
                       "\n"
                       "caf\xe9\n",
                       76);

    /* The folded CTE header goes with its continuation line. */
    assert_buf_str(&t, "Subject: old\r\n"
                       "MIME-Version: 1.0\r\n"
                       "Content-Type: text/plain; charset=unknown-8bit\r\n"
                       "Content-Transfer-Encoding: quoted-printable\r\n"
                       "\r\n"
                       "caf=E9\r\n");
    buf_free(&t);
}

static void
test_multipart_alternative(void **state)
{
    static const char seven[] = "Content-Type: text/plain; charset=us-ascii\r\n"
                                "\r\n"
                                "Hello = world, plain ascii\r\n"
                                "..stuffed twice\r\n";
    BUF t = convert_ok("From: a@example.net\n"
                       "MIME-Version: 1.0\n"
                       "Content-Type: multipart/alternative; boundary=XyZ\n"
                       "\n"
                       "--XyZ\n"
                       "Content-Type: text/plain; charset=us-ascii\n"
                       "\n"
                       "Hello = world, plain ascii\n"
                       "..stuffed twice\n"
                       "--XyZ\n"
                       "Content-Type: text/html; charset=utf-8\n"
                       "Content-Transfer-Encoding: 8bit\n"
                       "\n"
                       "<p>\xc3\xa9t\xc3\xa9</p>\n"
                       "--XyZ--\n",
                       76);
    BUF p1 = slice(&t, "--XyZ\r\n", "--XyZ\r\n"), p2;

    /* The 7-bit part, byte for byte. */
    assert_buf_str(&p1, seven);
    p2 = slice(&t, "Content-Type: text/html; charset=utf-8\r\n", "--XyZ--\r\n");
    assert_buf_str(&p2, "Content-Transfer-Encoding: quoted-printable\r\n"
                        "\r\n"
                        "<p>=C3=A9t=C3=A9</p>\r\n");
    /* Container headers unchanged. */
    assert_non_null(strstr(t.buf, "Content-Type: multipart/alternative; boundary=XyZ\r\n\r\n--XyZ"));
    buf_free(&t);
    buf_free(&p1);
    buf_free(&p2);
}

static void
test_nested(void **state)
{
    BUF t = convert_ok("MIME-Version: 1.0\n"
                       "Content-Type: multipart/mixed; boundary=\"outer\"\n"
                       "Content-Transfer-Encoding: 8bit\n"
                       "\n"
                       "--outer\n"
                       "Content-Type: multipart/alternative; boundary=inner\n"
                       "\n"
                       "--inner\n"
                       "\n"
                       "inner one \xc3\xa4\n"
                       "--inner\n"
                       "Content-Type: text/plain\n"
                       "\n"
                       "inner two ascii\n"
                       "--inner--\n"
                       "--outer\n"
                       "Content-Type: message/rfc822\n"
                       "Content-Transfer-Encoding: 8bit\n"
                       "\n"
                       "Subject: forwarded\n"
                       "\n"
                       "nested body \xc3\xb6\n"
                       "--outer\n"
                       "Content-Type: message/rfc822\n"
                       "\n"
                       "Subject: forwarded mime\n"
                       "MIME-Version: 1.0\n"
                       "Content-Type: multipart/mixed; boundary=deep\n"
                       "\n"
                       "--deep\n"
                       "Content-Type: text/plain; charset=iso-8859-1\n"
                       "\n"
                       "deep \xfc\n"
                       "--deep--\n"
                       "--outer--\n",
                       76);

    assert_buf_str(&t, "MIME-Version: 1.0\r\n"
                       "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
                       "Content-Transfer-Encoding: 7bit\r\n"
                       "\r\n"
                       "--outer\r\n"
                       "Content-Type: multipart/alternative; boundary=inner\r\n"
                       "\r\n"
                       "--inner\r\n"
                       "Content-Type: text/plain; charset=unknown-8bit\r\n"
                       "Content-Transfer-Encoding: quoted-printable\r\n"
                       "\r\n"
                       "inner one =C3=A4\r\n"
                       "--inner\r\n"
                       "Content-Type: text/plain\r\n"
                       "\r\n"
                       "inner two ascii\r\n"
                       "--inner--\r\n"
                       "--outer\r\n"
                       "Content-Type: message/rfc822\r\n"
                       "Content-Transfer-Encoding: 7bit\r\n"
                       "\r\n"
                       "Subject: forwarded\r\n"
                       "MIME-Version: 1.0\r\n"
                       "Content-Type: text/plain; charset=unknown-8bit\r\n"
                       "Content-Transfer-Encoding: quoted-printable\r\n"
                       "\r\n"
                       "nested body =C3=B6\r\n"
                       "--outer\r\n"
                       "Content-Type: message/rfc822\r\n"
                       "\r\n"
                       "Subject: forwarded mime\r\n"
                       "MIME-Version: 1.0\r\n"
                       "Content-Type: multipart/mixed; boundary=deep\r\n"
                       "\r\n"
                       "--deep\r\n"
                       "Content-Type: text/plain; charset=iso-8859-1\r\n"
                       "Content-Transfer-Encoding: quoted-printable\r\n"
                       "\r\n"
                       "deep =FC\r\n"
                       "--deep--\r\n"
                       "--outer--\r\n");
    buf_free(&t);
}

static void
test_long_lines(void **state)
{
    BUF msg = {0}, line = {0}, t, body, dec;

    /* A 5000-byte line of 8-bit, '=', blanks, dashes; a 79-char ascii line
     * ending in a blank; a line of dashes that soft breaks must not turn
     * into a boundary. */
    for (int i = 0; i < 5000; i++) {
        static const char pat[] = "ab\xc3\xa9 =-\t.x";
        buf_add(&line, pat + i % 10, 1);
    }
    buf_str(&msg, "Content-Type: multipart/mixed; boundary=b\n\n--b\n\n");
    buf_add(&msg, line.buf, line.len);
    buf_str(&msg, "\n");
    for (int i = 0; i < 78; i++)
        buf_str(&msg, "y");
    buf_str(&msg, " \n\xe9");
    for (int i = 0; i < 200; i++)
        buf_str(&msg, "-");
    buf_str(&msg, "b\n");
    /* 75 characters fill an output line: the soft break falls before "--b" */
    for (int i = 0; i < 75; i++)
        buf_str(&msg, "z");
    buf_str(&msg, "--b trap\n--b--\n");

    t = convert_ok(msg.buf, 76);
    body = slice(&t, "Content-Transfer-Encoding: quoted-printable\r\n\r\n", "\r\n--b--\r\n");
    buf_str(&body, "\r\n");
    dec = qp_decode(body.buf, body.len);
    buf_str(&line, "\r\n");
    for (int i = 0; i < 78; i++)
        buf_str(&line, "y");
    buf_str(&line, " \r\n\xe9");
    for (int i = 0; i < 200; i++)
        buf_str(&line, "-");
    buf_str(&line, "b\r\n");
    for (int i = 0; i < 75; i++)
        buf_str(&line, "z");
    buf_str(&line, "--b trap\r\n");
    assert_non_null(strstr(t.buf, "zzz=\r\n=2D-b trap\r\n"));
    assert_int_equal(dec.len, line.len);
    assert_memory_equal(dec.buf, line.buf, line.len);
    /* Only the real delimiters start with "--b". */
    {
        int n = 0;

        for (const char *p = t.buf; (p = strstr(p, "\r\n--b")) != NULL; p++)
            n++;
        assert_int_equal(n, 2);
    }
    buf_free(&msg);
    buf_free(&line);
    buf_free(&t);
    buf_free(&body);
    buf_free(&dec);
}

static void
test_dots(void **state)
{
    BUF in = wire("Content-Type: text/plain\n\n.\xe9t\xe9\n.\n..\nx\n.",
                  strlen("Content-Type: text/plain\n\n.\xe9t\xe9\n.\n..\nx\n.")),
        out, body;
    char *err;

    assert_int_equal(downgrade(&in, &out, &err), 0);
    /* On the wire every line starting with "." is stuffed. */
    body = slice(&out, "quoted-printable\r\n\r\n", "\r\n.\r\n");
    assert_buf_str(&body, "..=E9t=E9\r\n"
                          "..\r\n"
                          "...\r\n"
                          "x\r\n"
                          "..");
    assert_true(out.len > 9 && strcmp(out.buf + out.len - 9, "\r\n..\r\n.\r\n") == 0);
    buf_free(&body);
    body = unwire_checked(&out, 76);
    buf_free(&in);
    buf_free(&out);
    buf_free(&body);
}

static void
test_crlf(void **state)
{
    /* Raw wire form: a bare CR and a bare LF inside lines of an 8-bit part
     * are data, encoded; the CRLF line ends stay the hard line breaks. */
    static const char raw[] = "Content-Type: text/plain\r\n"
                              "\r\n"
                              "a\rb\xff\r\n"
                              "c\nd\r\n"
                              "\r\n"
                              "end\r\n"
                              ".\r\n";
    BUF in = {0}, out, t;
    char *err;

    buf_add(&in, raw, sizeof(raw) - 1);
    assert_int_equal(downgrade(&in, &out, &err), 0);
    t = unwire_checked(&out, 76);
    assert_buf_str(&t, "Content-Type: text/plain\r\n"
                       "MIME-Version: 1.0\r\n"
                       "Content-Transfer-Encoding: quoted-printable\r\n"
                       "\r\n"
                       "a=0Db=FF\r\n"
                       "c=0Ad\r\n"
                       "\r\n"
                       "end\r\n");
    buf_free(&in);
    buf_free(&out);
    buf_free(&t);

    /* A last line without CRLF and no "." line: ended, terminated. */
    buf_str(&in, "Subject: x\r\n\r\n\xe9");
    assert_int_equal(downgrade(&in, &out, &err), 0);
    t = unwire_checked(&out, 76);
    assert_non_null(strstr(t.buf, "\r\n\r\n=E9\r\n"));
    buf_free(&in);
    buf_free(&out);
    buf_free(&t);
}

static void
test_impossible(void **state)
{
    convert_impossible("Subject: caf\xc3\xa9\n\nascii body\n", "8-bit data in a message header");
    convert_impossible("Subject: x\nContent-Type: message/rfc822\n\nFrom: \xe9\n\nbody\n",
                       "8-bit data in a message header");
    convert_impossible("Content-Type: application/octet-stream\n"
                       "Content-Transfer-Encoding: binary\n\n\x01\xff\n",
                       "Content-Transfer-Encoding binary");
    convert_impossible("Content-Transfer-Encoding: base64\n\n\xe9\xe9\n",
                       "Content-Transfer-Encoding base64");
    convert_impossible("Content-Transfer-Encoding: quoted-printable\n\n\xe9\n",
                       "Content-Transfer-Encoding quoted-printable");
    convert_impossible("Content-Transfer-Encoding: x-uuencode\n\n\xe9\n", "unknown encoding");
    convert_impossible("Content-Type: multipart/mixed; boundary=b\n\npre \xe9\n--b\n\nx\n--b--\n",
                       "preamble or epilogue");
    convert_impossible("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b--\npost \xe9\n",
                       "preamble or epilogue");
    convert_impossible("Content-Type: multipart/mixed; boundary=b\n\n--b \xe9\n\nx\n--b--\n",
                       "boundary line");
    convert_impossible("Content-Type: multipart/mixed\n\n\xe9\n", "without a boundary");
    convert_impossible("Content-Type: message/partial; id=1; number=1\n\n\xe9\n", "must be 7bit");
    convert_impossible("Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n\xe9\n",
                       "base64");
    /* 8-bit in a 7-bit part's header is a header too */
    convert_impossible("Content-Type: multipart/mixed; boundary=b\n\n--b\n"
                       "Content-Description: \xe9\n\nascii\n--b\n\n\xe9\n--b--\n",
                       "8-bit data in a message header");
}

static void
test_nesting(void **state)
{
    BUF msg = {0}, t;
    char line[128];

    for (int i = 0; i <= MIME_NESTING_MAX; i++) {
        snprintf(line, sizeof(line), "Content-Type: multipart/mixed; boundary=b%dx\n\n--b%dx\n", i, i);
        buf_str(&msg, line);
    }
    buf_str(&msg, "\nascii\n");
    /* 7-bit below the limit: fine, unchanged. */
    t = convert_ok(msg.buf, 0);
    buf_free(&t);
    buf_str(&msg, "\xe9\n");
    convert_impossible(msg.buf, "nested too deeply");
    buf_free(&msg);

    /* At the limit exactly: converted. */
    for (int i = 0; i < MIME_NESTING_MAX; i++) {
        snprintf(line, sizeof(line), "Content-Type: multipart/mixed; boundary=b%dx\n\n--b%dx\n", i, i);
        buf_str(&msg, line);
    }
    buf_str(&msg, "\n\xe9\n");
    t = convert_ok(msg.buf, 0);
    assert_non_null(strstr(t.buf, "--b99x\r\nContent-Type: text/plain; charset=unknown-8bit\r\n"
                                  "Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9\r\n"));
    buf_free(&t);
    buf_free(&msg);
}

/* Parts of many sizes so that boundary lines, header blocks and CRLFs fall
 * across the 64 KiB read buffer's edges; one line longer than the buffer.
 * Each 8-bit part must decode to its text, each 7-bit part be unchanged. */
static void
test_buffer_edges(void **state)
{
    enum { NPARTS = 40 };
    BUF msg = {0}, part[NPARTS], t;
    unsigned seed = 12345;
    char hdr[128];

    buf_str(&msg, "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"edge\"\n\n");
    for (int i = 0; i < NPARTS; i++) {
        size_t size = i == 7 ? 70000 : (i % 5 == 0 ? 65536 - 3 - (size_t) i : 1 + (size_t) i * 997);
        int eight = i % 3 != 1;

        part[i] = (BUF){0};
        buf_add(&part[i], "", 0);
        for (size_t k = 0; k < size; k++) {
            char ch;

            seed = seed * 1103515245 + 12345;
            if (i != 7 && (seed >> 16) % 60 == 0)
                ch = '\n';
            else if (eight && (seed >> 16) % 7 == 0)
                ch = (char) (0x80 + (seed >> 8) % 128);
            else
                ch = (char) ('!' + (seed >> 16) % 90);
            if (ch == '\n' && (part[i].len == 0 || part[i].buf[part[i].len - 1] == '\n'))
                ch = 'z';
            buf_add(&part[i], &ch, 1);
        }
        buf_str(&part[i], "\n");
        snprintf(hdr, sizeof(hdr), "--edge\nContent-Type: text/plain\nX-Part: %d\n\n", i);
        buf_str(&msg, hdr);
        buf_add(&msg, part[i].buf, part[i].len);
    }
    buf_str(&msg, "--edge--\n");
    t = convert_ok(msg.buf, 0);
    for (int i = 0; i < NPARTS; i++) {
        BUF body, want = {0}, dec;
        const char *q;

        snprintf(hdr, sizeof(hdr), "X-Part: %d\r\n", i);
        body = slice(&t, hdr, "\r\n--edge");
        buf_str(&body, "\r\n");
        /* the part's text in CRLF form */
        buf_add(&want, "", 0);
        for (q = part[i].buf; *q; q++) {
            if (*q == '\n')
                buf_str(&want, "\r");
            buf_add(&want, q, 1);
        }
        if (i % 3 != 1) {
            assert_true(strncmp(body.buf, "Content-Transfer-Encoding: quoted-printable\r\n\r\n", 47) == 0);
            dec = qp_decode(body.buf + 47, body.len - 47);
            assert_int_equal(dec.len, want.len);
            assert_memory_equal(dec.buf, want.buf, want.len);
            buf_free(&dec);
        } else {
            assert_true(strncmp(body.buf, "\r\n", 2) == 0);
            assert_int_equal(body.len - 2, want.len);
            assert_memory_equal(body.buf + 2, want.buf, want.len);
        }
        buf_free(&body);
        buf_free(&want);
        buf_free(&part[i]);
    }
    buf_free(&t);
    buf_free(&msg);
}

/* Shift a boundary line across the reader's first buffer edge (content
 * offset 65536) and its edge after going back for the part's headers,
 * byte by byte. CRLF text, so text offsets are content offsets. */
static void
test_boundary_straddles(void **state)
{
    for (size_t pad = 65536 - 70; pad < 65536 + 120; pad++) {
        BUF msg = {0}, t;

        buf_str(&msg, "Content-Type: multipart/mixed; boundary=\"straddle-boundary\"\r\n\r\n"
                      "--straddle-boundary\r\n\r\n");
        while (msg.len < pad)
            buf_str(&msg, msg.len % 50 == 0 ? "\r\n" : "\xe9");
        buf_str(&msg, "\r\n--straddle-boundary\r\n\r\n\xe9 two\r\n--straddle-boundary--\r\n");
        t = convert_ok(msg.buf, 76);
        assert_non_null(strstr(t.buf, "\r\n--straddle-boundary\r\n"
                                      "Content-Type: text/plain; charset=unknown-8bit\r\n"
                                      "Content-Transfer-Encoding: quoted-printable\r\n"
                                      "\r\n=E9 two\r\n--straddle-boundary--\r\n"));
        buf_free(&msg);
        buf_free(&t);
    }
}

/* A converted message converts to itself. */
static void
test_idempotent(void **state)
{
    BUF t = convert_ok("Content-Type: multipart/mixed; boundary=i\n"
                       "Content-Transfer-Encoding: binary\n\n"
                       "--i\n\n\xe9\xe9 = \t\n--i\n"
                       "Content-Type: message/rfc822\n\n"
                       "Subject: s\n\n\xe8\n--i--\n",
                       76),
        in = wire(t.buf, t.len), out;
    char *err;

    assert_int_equal(downgrade(&in, &out, &err), 0);
    assert_int_equal(out.len, in.len);
    assert_memory_equal(out.buf, in.buf, in.len);
    buf_free(&t);
    buf_free(&in);
    buf_free(&out);
}

static void
test_errors(void **state)
{
    char *err = NULL;
    int out = memfd_create("o", 0), in = mem_fd("Subject: x\r\n\r\n\xe9\r\n", 17);

    /* unreadable input */
    assert_int_equal(mime_downgrade(-1, 0, 100, out, &err), -1);
    assert_non_null(strstr(err, "read"));
    x_free(&err);
    /* shorter than its length (no "." line to stop at) */
    assert_int_equal(mime_downgrade(in, 0, 500, out, &err), -1);
    assert_non_null(err);
    x_free(&err);
    /* unwritable output */
    assert_int_equal(mime_downgrade(in, 0, 17, -1, &err), -1);
    assert_non_null(strstr(err, "write"));
    x_free(&err);
    close(in);
    close(out);
}

/* ---- hidden driver modes ------------------------------------------------------ */

static int
driver(int argc, char **argv)
{
    char *err = NULL;
    struct stat st;
    int in, out, r;

    if ((in = open(argv[2], O_RDONLY)) < 0 || fstat(in, &st) < 0) {
        fprintf(stderr, "%s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    if (strcmp(argv[1], "has8bit") == 0 && argc == 3) {
        r = mime_has_8bit(in, 0, (long long) st.st_size, &err);
        if (r < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        printf("%d\n", r);
        return 0;
    }
    if (strcmp(argv[1], "convert") != 0 || argc != 4) {
        fprintf(stderr, "usage: test_mime convert IN OUT | has8bit IN\n");
        return 1;
    }
    if ((out = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0600)) < 0) {
        fprintf(stderr, "%s: %s\n", argv[3], strerror(errno));
        return 1;
    }
    r = mime_downgrade(in, 0, (long long) st.st_size, out, &err);
    if (r != 0) {
        fprintf(stderr, "%s\n", err);
        free(err);
        return r == MIME_DOWNGRADE_IMPOSSIBLE ? 2 : 1;
    }
    if (close(out) < 0)
        return 1;
    return 0;
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_has_8bit),
        cmocka_unit_test(test_7bit_untouched),
        cmocka_unit_test(test_text_plain),
        cmocka_unit_test(test_no_mime_version),
        cmocka_unit_test(test_multipart_alternative),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_dots),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_impossible),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_buffer_edges),
        cmocka_unit_test(test_boundary_straddles),
        cmocka_unit_test(test_idempotent),
        cmocka_unit_test(test_errors),
    };

    msg_init("test_mime", MSG_STDERR);
    if (argc >= 3)
        return driver(argc, argv);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
