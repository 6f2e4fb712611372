/*
 * test_smtp.c - unit tests for smtp.c: command split, paths and parameters,
 * xtext, reply parsing and formatting, dot-stuffing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "smtp.h"
#include "stream.h"
#include "util.h"

/* ---- smtp_cmd_split ------------------------------------------------------ */

static void
test_cmd_split(void **state)
{
    static const struct {
        const char *line;
        int ret;
        const char *verb;
        const char *args;
    } cases[] = {
        {"EHLO client.example", 0, "EHLO", "client.example"},
        {"ehlo   client.example", 0, "EHLO", "client.example"},
        {"quit", 0, "QUIT", ""},
        {"QUIT ", 0, "QUIT", ""},
        {"", 0, "", ""},
        {"MAIL FROM:<a@b> SIZE=1", 0, "MAIL", "FROM:<a@b> SIZE=1"},
        {"X-FOO bar", -1, NULL, NULL},
        {"AUTH\tPLAIN", -1, NULL, NULL},
        {" NOOP", -1, NULL, NULL},
        {"ABCDEFGHIJKLMNOP x", 0, "ABCDEFGHIJKLMNOP", "x"},   /* 16: the limit */
        {"ABCDEFGHIJKLMNOPQ x", -1, NULL, NULL},              /* 17 */
        {"RCPT TO:<a@b>\r", -1, NULL, NULL},
        {"RCPT TO:<a\n@b>", -1, NULL, NULL},
        {"ATRN example.org,example.com", 0, "ATRN", "example.org,example.com"},
        {"B\xc3\xa4" "D", -1, NULL, NULL},
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        SMTP_CMD cmd;
        int ret = smtp_cmd_split(cases[i].line, strlen(cases[i].line), &cmd);

        if (ret != cases[i].ret)
            fail_msg("case %zu \"%s\": got %d", i, cases[i].line, ret);
        if (ret == 0) {
            assert_string_equal(cmd.verb, cases[i].verb);
            assert_string_equal(cmd.args, cases[i].args);
        }
    }
}

static void
test_cmd_split_nul(void **state)
{
    const char line[] = "NOOP\0junk";
    SMTP_CMD cmd;

    assert_int_equal(smtp_cmd_split(line, sizeof(line) - 1, &cmd), -1);
    assert_int_equal(smtp_cmd_split(line, 4, &cmd), 0);
    assert_string_equal(cmd.verb, "NOOP");
}

/* ---- smtp_path_parse ----------------------------------------------------- */

static void
test_path_good(void **state)
{
    static const struct {
        const char *args;
        const char *keyword;
        int allow_null;
        const char *addr;
        int nparam;
        const char *params; /* "NAME=value NAME ..." as parsed, '~' = no value */
    } cases[] = {
        {"FROM:<a@b>", "FROM", 1, "a@b", 0, ""},
        {"from:<a@b> SIZE=123 BODY=8BITMIME", "FROM", 1, "a@b", 2, "SIZE=123 BODY=8BITMIME"},
        {"FROM: <a@b>", "FROM", 1, "a@b", 0, ""},
        {"FROM:<>", "FROM", 1, "", 0, ""},
        {"FROM:<> RET=HDRS ENVID=QQ+2B1", "FROM", 1, "", 2, "RET=HDRS ENVID=QQ+2B1"},
        {"TO:<x@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y", "TO", 0, "x@y", 2,
         "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y"},
        {"TO:<\"a b\"@c>", "TO", 0, "\"a b\"@c", 0, ""},
        {"TO:<\"a\\\"b>\"@c>", "TO", 0, "\"a\\\"b>\"@c", 0, ""},
        {"TO:<@hosta.int,@jkl.org:userc@d.bar.org>", "TO", 0, "userc@d.bar.org", 0, ""},
        {"TO:<@[10.0.0.1]:u@d>", "TO", 0, "u@d", 0, ""},
        {"FROM:<a@b>  SMTPUTF8   size=5 ", "FROM", 1, "a@b", 2, "SMTPUTF8=~ SIZE=5"},
        {"TO:<postmaster>", "TO", 0, "postmaster", 0, ""},
        {"FROM:<us\xc3\xa9r@b> SMTPUTF8", "FROM", 1, "us\xc3\xa9r@b", 1, "SMTPUTF8=~"},
        {"FROM:<a@b> X-FOO=a=b", "FROM", 1, "a@b", 1, "X-FOO=a=b"},
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        char args[256], got[256];
        SMTP_PATH path;
        const char *why = NULL;
        size_t o = 0;

        str_copy(args, cases[i].args, sizeof(args));
        if (smtp_path_parse(args, cases[i].keyword, cases[i].allow_null, &path, &why) != 0)
            fail_msg("case %zu \"%s\" rejected: %s", i, cases[i].args, why);
        assert_string_equal(path.addr, cases[i].addr);
        assert_int_equal(path.nparam, cases[i].nparam);
        got[0] = 0;
        for (int p = 0; p < path.nparam; p++) {
            int n = snprintf(got + o, sizeof(got) - o, "%s%s=%s", p ? " " : "",
                             path.param[p].name,
                             path.param[p].value ? path.param[p].value : "~");

            assert_true(n > 0 && (size_t) n < sizeof(got) - o);
            o += (size_t) n;
        }
        assert_string_equal(got, cases[i].params);
    }
}

static void
test_path_bad(void **state)
{
    static const struct {
        const char *args;
        const char *keyword;
        int allow_null;
        const char *why_prefix;
    } cases[] = {
        {"FROM:a@b", "FROM", 1, "5.5.4 Syntax: MAIL FROM:"},
        {"TO:x@y", "TO", 0, "5.5.4 Syntax: RCPT TO:"},
        {"FROM <a@b>", "FROM", 1, "5.5.4 Syntax"},
        {"TO:<a@b>", "FROM", 1, "5.5.4 Syntax"},
        {"FROM:<a@b", "FROM", 1, "5.1.7"},
        {"TO:<\"a b@c>", "TO", 0, "5.1.3"},
        {"TO:<a b@c>", "TO", 0, "5.1.3"},
        {"TO:<a\x01@c>", "TO", 0, "5.1.3"},
        {"TO:<a\x7f@c>", "TO", 0, "5.1.3"},
        {"TO:<\"a\\\x01\"@c>", "TO", 0, "5.1.3"},
        {"TO:<>", "TO", 0, "5.5.4 Null"},
        {"TO:<@a,@b>", "TO", 0, "5.1.3"},
        {"TO:<@a:>", "TO", 1, "5.1.3"},
        {"FROM:<a@b>SIZE=1", "FROM", 1, "5.5.4 Syntax"},
        {"FROM:<a@b> SI_ZE=1", "FROM", 1, "5.5.4 Invalid parameter"},
        {"FROM:<a@b> -SIZE=1", "FROM", 1, "5.5.4 Invalid parameter"},
        {"FROM:<a@b> =1", "FROM", 1, "5.5.4 Invalid parameter"},
        {"FROM:<a@b> SIZE=", "FROM", 1, "5.5.4 Invalid parameter"},
        {"FROM:<a@b> SIZE=1\t2", "FROM", 1, "5.5.4 Invalid parameter"},
        {"FROM:<a@b> A B C D E F G H I J K L M N O P Q", "FROM", 1, "5.5.4 Too many"},
        {"FROM:<a@b> ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456=1", "FROM", 1, "5.5.4 Invalid"},
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        char args[256];
        SMTP_PATH path;
        const char *why = NULL;

        str_copy(args, cases[i].args, sizeof(args));
        if (smtp_path_parse(args, cases[i].keyword, cases[i].allow_null, &path, &why) != -1)
            fail_msg("case %zu \"%s\" accepted", i, cases[i].args);
        assert_non_null(why);
        if (strncmp(why, cases[i].why_prefix, strlen(cases[i].why_prefix)) != 0)
            fail_msg("case %zu: why \"%s\"", i, why);
    }
}

static void
test_path_limits(void **state)
{
    char args[SMTP_ADDR_MAX + 64];
    SMTP_PATH path;
    const char *why;
    size_t o;

    /* exactly SMTP_ADDR_MAX bytes: accepted */
    o = (size_t) snprintf(args, sizeof(args), "TO:<");
    memset(args + o, 'a', SMTP_ADDR_MAX - 2);
    o += SMTP_ADDR_MAX - 2;
    memcpy(args + o, "@b>", 4);
    assert_int_equal(smtp_path_parse(args, "TO", 0, &path, &why), 0);
    assert_int_equal(strlen(path.addr), SMTP_ADDR_MAX);

    /* one more: rejected */
    o = (size_t) snprintf(args, sizeof(args), "TO:<");
    memset(args + o, 'a', SMTP_ADDR_MAX - 1);
    o += SMTP_ADDR_MAX - 1;
    memcpy(args + o, "@b>", 4);
    assert_int_equal(smtp_path_parse(args, "TO", 0, &path, &why), -1);
    assert_string_equal(why, "5.5.4 Address too long");

    /* SMTP_PARAM_MAX parameters: accepted, values point into args */
    str_copy(args, "FROM:<a@b> A B C D E F G H I J K L M N O P=last", sizeof(args));
    assert_int_equal(smtp_path_parse(args, "FROM", 1, &path, &why), 0);
    assert_int_equal(path.nparam, SMTP_PARAM_MAX);
    assert_non_null(smtp_path_param(&path, "p"));
    assert_string_equal(smtp_path_param(&path, "P")->value, "last");
    assert_true(smtp_path_param(&path, "P")->value > args);
    assert_true(smtp_path_param(&path, "P")->value < args + sizeof(args));
    assert_null(smtp_path_param(&path, "Q"));
    assert_null(smtp_path_param(&path, "A")->value);
}

/* ---- xtext --------------------------------------------------------------- */

static void
test_xtext(void **state)
{
    static const struct {
        const char *raw;
        const char *xtext;
    } cases[] = {
        {"", ""},
        {"rfc822;user@example.org", "rfc822;user@example.org"},
        {"a+b=c", "a+2Bb+3Dc"},
        {"sp ace", "sp+20ace"},
        {"tab\tnl\n", "tab+09nl+0A"},
        {"\xc3\xa9", "+C3+A9"},
        {"~!", "~!"},
        {"\x7f", "+7F"},
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        char enc[128], dec[128];
        int n;

        n = xtext_encode(cases[i].raw, strlen(cases[i].raw), enc, sizeof(enc));
        assert_int_equal(n, (int) strlen(cases[i].xtext));
        assert_string_equal(enc, cases[i].xtext);
        assert_true(xtext_valid(enc));
        n = xtext_decode(enc, dec, sizeof(dec));
        assert_int_equal(n, (int) strlen(cases[i].raw));
        assert_memory_equal(dec, cases[i].raw, (size_t) n);
    }
}

static void
test_xtext_bad(void **state)
{
    static const char *bad[] = {
        "a=b", "+2", "+", "+2b", "+G0", "a b", "\x01", "\xc3\xa9", "+2B+", "x\x7f",
    };
    char out[64];

    for (size_t i = 0; i < ODMR_ARRAY_LEN(bad); i++) {
        if (xtext_valid(bad[i]))
            fail_msg("case %zu \"%s\" valid", i, bad[i]);
        assert_int_equal(xtext_decode(bad[i], out, sizeof(out)), -1);
    }
    /* Sizes: the NUL must fit too. */
    assert_int_equal(xtext_encode("abc", 3, out, 3), -1);
    assert_int_equal(xtext_encode("abc", 3, out, 4), 3);
    assert_int_equal(xtext_encode("a+", 2, out, 4), -1);
    assert_int_equal(xtext_encode("a+", 2, out, 5), 4);
    assert_int_equal(xtext_decode("abc", out, 3), -1);
    assert_int_equal(xtext_decode("abc", out, 4), 3);
    assert_int_equal(xtext_decode("+00", out, 4), 1);
    assert_int_equal(out[0], 0);
    /* round trip of every byte value */
    {
        char raw[256], enc[1024], dec[257];

        for (int c = 0; c < 256; c++)
            raw[c] = (char) c;
        assert_true(xtext_encode(raw, sizeof(raw), enc, sizeof(enc)) > 0);
        assert_int_equal(xtext_decode(enc, dec, sizeof(dec)), 256);
        assert_memory_equal(raw, dec, 256);
    }
}

/* ---- replies ------------------------------------------------------------- */

static void
test_reply_parse(void **state)
{
    static const struct {
        const char *lines[4]; /* fed in order until NULL */
        int results[4];       /* expected smtp_reply_feed result per line */
        int code;
        const char *enh;
        const char *text;
    } cases[] = {
        {{"250 Ok"}, {1}, 250, "", "Ok"},
        {{"250 2.0.0 Ok: queued as ABC"}, {1}, 250, "2.0.0", "Ok: queued as ABC"},
        {{"250"}, {1}, 250, "", ""},
        {{"250 "}, {1}, 250, "", ""},
        {{"220-mx.example ESMTP", "220-more", "220 end"}, {0, 0, 1}, 220, "",
         "mx.example ESMTP\nmore\nend"},
        {{"250-mx.example", "250-PIPELINING", "250 8BITMIME"}, {0, 0, 1}, 250, "",
         "mx.example\nPIPELINING\n8BITMIME"},
        {{"550-5.1.1 no such user", "550 5.1.1 really"}, {0, 1}, 550, "5.1.1",
         "no such user\nreally"},
        {{"452 4.5.3 Too many recipients"}, {1}, 452, "4.5.3", "Too many recipients"},
        /* class digit must match the code */
        {{"250 5.1.1 odd"}, {1}, 250, "", "5.1.1 odd"},
        {{"250 2.1.5"}, {1}, 250, "2.1.5", ""},
        {{"250 2.1.5x"}, {1}, 250, "", "2.1.5x"},
        {{"250 2.1234.5 x"}, {1}, 250, "", "2.1234.5 x"},
        {{"250 2.123.456 x"}, {1}, 250, "2.123.456", "x"},
        /* malformed */
        {{"25 Ok"}, {-1}, 0, "", ""},
        {{"2500 Ok"}, {-1}, 0, "", ""},
        {{"abc Ok"}, {-1}, 0, "", ""},
        {{"250_Ok"}, {-1}, 0, "", ""},
        {{"650 Ok"}, {-1}, 0, "", ""},
        {{"150 Ok"}, {-1}, 0, "", ""},
        {{""}, {-1}, 0, "", ""},
        {{"250-a", "251 b"}, {0, -1}, 250, "", "a"},
        {{"250-a", "25"}, {0, -1}, 250, "", "a"},
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        SMTP_REPLY r;

        smtp_reply_init(&r);
        for (int l = 0; l < 4 && cases[i].lines[l]; l++) {
            int ret = smtp_reply_feed(&r, cases[i].lines[l], strlen(cases[i].lines[l]));

            if (ret != cases[i].results[l])
                fail_msg("case %zu line %d: got %d", i, l, ret);
            if (ret < 0)
                break;
        }
        assert_int_equal(r.code, cases[i].code);
        assert_string_equal(r.enh, cases[i].enh);
        assert_string_equal(r.text, cases[i].text);
    }
}

static void
test_reply_bounds(void **state)
{
    SMTP_REPLY r;
    char line[600];
    int ret = 0;
    char sum[64];

    /* NUL inside a line is malformed */
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_feed(&r, "250 a\0b", 7), -1);

    /* more text than fits: cut, never overflowed */
    smtp_reply_init(&r);
    memcpy(line, "250-", 4);
    memset(line + 4, 'x', sizeof(line) - 4);
    for (int i = 0; i < 20; i++)
        assert_int_equal(smtp_reply_feed(&r, line, sizeof(line)), 0);
    line[3] = ' ';
    ret = smtp_reply_feed(&r, line, sizeof(line));
    assert_int_equal(ret, 1);
    assert_int_equal(r.nlines, 21);
    assert_int_equal(strlen(r.text), SMTP_REPLY_MAX - 1);
    /* a complete reply takes no more lines */
    assert_int_equal(smtp_reply_feed(&r, "250 x", 5), -1);

    /* summary: code, enhanced code, first line cleaned and cut */
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_feed(&r, "250-2.0.0 Ok\x01 queued", 20), 0);
    assert_int_equal(smtp_reply_feed(&r, "250 2.0.0 second", 16), 1);
    assert_string_equal(smtp_reply_summary(&r, sum, sizeof(sum)), "250 2.0.0 Ok? queued");
    assert_string_equal(smtp_reply_summary(&r, sum, 8), "250 2.0");
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_feed(&r, "221", 3), 1);
    assert_string_equal(smtp_reply_summary(&r, sum, sizeof(sum)), "221");
}

/* A pipe-backed stream: write test input into one end, read replies. */
static void
test_reply_stream(void **state)
{
    int in[2], out[2];
    STREAM *s;
    SMTP_REPLY r;
    char buf[256];
    ssize_t n;
    static const char input[] =
        "250-mx.example\r\n250-SIZE 1000\r\n250 2.0.0 HELP\r\n"
        "550 5.7.1 "
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "\r\n"
        "bad\r\n"
        "220 partial";

    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    assert_int_equal(write(in[1], input, sizeof(input) - 1), (ssize_t) sizeof(input) - 1);
    close(in[1]);
    s = stream_open(in[0], out[1]);
    stream_set_timeout(s, 2000);

    assert_int_equal(smtp_reply_read(s, &r), 0);
    assert_int_equal(r.code, 250);
    assert_int_equal(r.nlines, 3);
    assert_string_equal(r.enh, "");
    assert_string_equal(r.text, "mx.example\nSIZE 1000\n2.0.0 HELP");
    assert_int_equal(smtp_reply_read(s, &r), 0);
    assert_int_equal(r.code, 550);
    assert_string_equal(r.enh, "5.7.1");
    assert_int_equal(smtp_reply_read(s, &r), SMTP_REPLY_MALFORMED);
    /* a final line without CRLF before EOF still completes a reply */
    assert_int_equal(smtp_reply_read(s, &r), 0);
    assert_int_equal(r.code, 220);
    assert_int_equal(smtp_reply_read(s, &r), STREAM_EOF);

    /* formatting */
    assert_int_equal(smtp_reply_send(s, 250, "2.0.0", "Ok"), 0);
    assert_int_equal(smtp_reply_send(s, 502, NULL, "%s not implemented", "VRFY"), 0);
    assert_int_equal(smtp_reply_send(s, 221, "", "Bye"), 0);
    assert_int_equal(smtp_reply_send(s, 354, "", "%s", ""), 0);
    assert_int_equal(smtp_reply_send_line(s, 250, 0, "mx.example"), 0);
    assert_int_equal(smtp_reply_send_line(s, 250, 1, "inject\r\n250 x"), 0);
    assert_int_equal(stream_flush(s), 0);
    close(out[1]);
    n = read(out[0], buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = 0;
    assert_string_equal(buf, "250 2.0.0 Ok\r\n502 VRFY not implemented\r\n221 Bye\r\n354 \r\n"
                             "250-mx.example\r\n250 inject  250 x\r\n");
    stream_close(&s, 0);
    assert_null(s);
    close(in[0]);
    close(out[0]);
}

/* A reply line longer than the read buffer is cut, and the rest of it
 * does not turn into a bogus next line. */
static void
test_reply_long_line(void **state)
{
    static char input[8000];
    int in[2];
    STREAM *s;
    SMTP_REPLY r;
    size_t o;

    memcpy(input, "250-", 4);
    memset(input + 4, 'z', 5000);
    o = 5004;
    memcpy(input + o, "\r\n250 2.0.0 end\r\n", 17);
    o += 17;
    assert_int_equal(pipe(in), 0);
    assert_int_equal(write_all(in[1], input, o), 0);
    close(in[1]);
    s = stream_open(in[0], -1);
    assert_int_equal(smtp_reply_read(s, &r), 0);
    assert_int_equal(r.code, 250);
    assert_int_equal(r.nlines, 2);
    assert_true(strlen(r.text) > 1000 && strlen(r.text) < 5000);
    assert_non_null(strstr(r.text, "z\n2.0.0 end"));
    assert_int_equal(smtp_reply_read(s, &r), STREAM_EOF);
    stream_close(&s, 1);
}

/* smtp_reply_read_each(): every line reaches the callback whole, also the
 * lines past SMTP_REPLY_MAX that r->text no longer keeps (an EHLO reply
 * with long lines before its keywords). */
typedef struct {
    int calls;
    int last_nlines;
    char last[64];
    int saw_size;
} EACH_LOG;

static void
each_line(void *ctx, const SMTP_REPLY *r, const char *text, size_t len)
{
    EACH_LOG *lg = ctx;

    lg->calls++;
    assert_int_equal(r->nlines, lg->calls);
    lg->last_nlines = r->nlines;
    if (len == strlen("SIZE 10485760") && memcmp(text, "SIZE 10485760", len) == 0)
        lg->saw_size = 1;
    if (len < sizeof(lg->last)) {
        memcpy(lg->last, text, len);
        lg->last[len] = 0;
    }
}

static void
test_reply_read_each(void **state)
{
    static char input[8000];
    int in[2];
    STREAM *s;
    SMTP_REPLY r;
    EACH_LOG lg = {0};
    size_t o = 0;

    o += (size_t) sprintf(input + o, "250-mx.example\r\n");
    for (int i = 0; i < 3; i++) {
        o += (size_t) sprintf(input + o, "250-X-PAD");
        memset(input + o, 'p', 1500);
        o += 1500;
        o += (size_t) sprintf(input + o, "\r\n");
    }
    o += (size_t) sprintf(input + o, "250-SIZE 10485760\r\n250 8BITMIME\r\n");
    assert_int_equal(pipe(in), 0);
    assert_int_equal(write_all(in[1], input, o), 0);
    close(in[1]);
    s = stream_open(in[0], -1);
    assert_int_equal(smtp_reply_read_each(s, &r, each_line, &lg), 0);
    assert_int_equal(r.code, 250);
    assert_int_equal(r.nlines, 6);
    /* the kept text ends before SIZE ... */
    assert_null(strstr(r.text, "SIZE 10485760"));
    /* ... the callback saw it and the last line whole */
    assert_int_equal(lg.calls, 6);
    assert_int_equal(lg.saw_size, 1);
    assert_string_equal(lg.last, "8BITMIME");
    assert_int_equal(smtp_reply_read_each(s, &r, each_line, &lg), STREAM_EOF);
    stream_close(&s, 1);
}

/* ---- dot-stuffing -------------------------------------------------------- */

typedef struct {
    char buf[4096];
    size_t len;
} SINK;

static int
sink_out(void *ctx, const char *buf, size_t n)
{
    SINK *k = ctx;

    assert_true(k->len + n <= sizeof(k->buf));
    memcpy(k->buf + k->len, buf, n);
    k->len += n;
    return 0;
}

static void
stuff_all(const char *in, size_t len, size_t chunk, SINK *k)
{
    SMTP_STUFF st;

    k->len = 0;
    smtp_stuff_init(&st);
    for (size_t i = 0; i < len; i += chunk)
        assert_int_equal(smtp_stuff_feed(&st, in + i, len - i < chunk ? len - i : chunk,
                                         sink_out, k), 0);
    assert_int_equal(smtp_stuff_finish(&st, sink_out, k), 0);
}

static void
test_stuff(void **state)
{
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {
        {"", ""},
        {"a", "a\r\n"},
        {"a\n", "a\r\n"},
        {"a\r\n", "a\r\n"},
        {".", "..\r\n"},
        {".\n", "..\r\n"},
        {"a\n.\nb", "a\r\n..\r\nb\r\n"},
        {"..x\r\n", "...x\r\n"},
        {"a.b\n", "a.b\r\n"},
        {"a\rb\n", "a\rb\r\n"},
        {"\r.x\n", "\r.x\r\n"},
        {"a\r", "a\r\r\n"},
        {"\r\r\n", "\r\r\n"},
        {"\n\n.\r\n", "\r\n\r\n..\r\n"},
        {"x\r\r\n.\r", "x\r\r\n..\r\r\n"},
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        size_t len = strlen(cases[i].in);

        /* whole buffer, then every chunk size: the result must not change */
        for (size_t chunk = len ? len : 1; chunk >= 1; chunk--) {
            SINK k;

            stuff_all(cases[i].in, len, chunk, &k);
            if (k.len != strlen(cases[i].out) || memcmp(k.buf, cases[i].out, k.len) != 0)
                fail_msg("case %zu chunk %zu: got \"%.*s\"", i, chunk, (int) k.len, k.buf);
        }
    }
}

static int
sink_fail(void *ctx, const char *buf, size_t n)
{
    int *calls = ctx;

    (*calls)++;
    return 7;
}

static void
test_stuff_big_and_error(void **state)
{
    char in[3000];
    SINK whole, bytes;
    SMTP_STUFF st;
    int calls = 0;

    /* Longer than the internal batch, mixed line ends and dots. */
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = ".a\r\n.\nb\r"[i % 9];
    stuff_all(in, sizeof(in), sizeof(in), &whole);
    stuff_all(in, sizeof(in), 1, &bytes);
    assert_int_equal(whole.len, bytes.len);
    assert_memory_equal(whole.buf, bytes.buf, whole.len);

    smtp_stuff_init(&st);
    assert_int_equal(smtp_stuff_feed(&st, in, sizeof(in), sink_fail, &calls), 7);
    assert_int_equal(calls, 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmd_split),
        cmocka_unit_test(test_cmd_split_nul),
        cmocka_unit_test(test_path_good),
        cmocka_unit_test(test_path_bad),
        cmocka_unit_test(test_path_limits),
        cmocka_unit_test(test_xtext),
        cmocka_unit_test(test_xtext_bad),
        cmocka_unit_test(test_reply_parse),
        cmocka_unit_test(test_reply_bounds),
        cmocka_unit_test(test_reply_stream),
        cmocka_unit_test(test_reply_long_line),
        cmocka_unit_test(test_reply_read_each),
        cmocka_unit_test(test_stuff),
        cmocka_unit_test(test_stuff_big_and_error),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
