/*
 * fuzz_stuff.c - libFuzzer target: smtp_stuff_* must give the same output
 * for any chunking, produce only CRLF line ends and no lone "." line, and
 * un-stuffing its output must give the input with bare LF turned into CRLF
 * and a line end added after an unterminated last line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    char *buf;
    size_t len;
    size_t cap;
} SINK;

static int
sink_out(void *ctx, const char *buf, size_t n)
{
    SINK *k = ctx;

    if (n == 0 || k->len + n > k->cap)
        abort(); /* stuffing at most doubles the input, plus a final CRLF */
    memcpy(k->buf + k->len, buf, n);
    k->len += n;
    return 0;
}

static void
stuff(const uint8_t *data, size_t size, size_t chunk, SINK *k)
{
    SMTP_STUFF st;

    k->len = 0;
    smtp_stuff_init(&st);
    for (size_t i = 0; i < size; i += chunk) {
        size_t n = size - i < chunk ? size - i : chunk;

        if (smtp_stuff_feed(&st, (const char *) data + i, n, sink_out, k) != 0)
            abort();
    }
    if (smtp_stuff_finish(&st, sink_out, k) != 0)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cap = size * 2 + 3;
    SINK whole = {malloc(cap), 0, cap}, pieces = {malloc(cap), 0, cap};
    char *expect = malloc(cap), *unstuffed = malloc(cap);
    size_t elen = 0, ulen = 0, chunk;
    int at_start = 1;

    stuff(data, size, size ? size : 1, &whole);
    chunk = size ? (size_t) data[0] % 7 + 1 : 1;
    stuff(data, size, chunk, &pieces);
    if (whole.len != pieces.len || memcmp(whole.buf, pieces.buf, whole.len) != 0)
        abort();
    stuff(data, size, 1, &pieces);
    if (whole.len != pieces.len || memcmp(whole.buf, pieces.buf, whole.len) != 0)
        abort();

    /* wire form: every LF after a CR, ends with CRLF, no "." line */
    if (whole.len > 0 && (whole.len < 2 || memcmp(whole.buf + whole.len - 2, "\r\n", 2) != 0))
        abort();
    for (size_t i = 0; i < whole.len; i++) {
        if (whole.buf[i] == '\n' && (i == 0 || whole.buf[i - 1] != '\r'))
            abort();
        if (at_start && whole.buf[i] == '.' && (i + 1 >= whole.len || whole.buf[i + 1] != '.'))
            abort();
        /* un-stuff: drop the first of the two dots */
        if (!(at_start && whole.buf[i] == '.'))
            unstuffed[ulen++] = whole.buf[i];
        at_start = whole.buf[i] == '\n';
    }

    /* the input with LF -> CRLF and a final line end */
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r'))
            expect[elen++] = '\r';
        expect[elen++] = (char) data[i];
    }
    if (size > 0 && data[size - 1] != '\n') {
        expect[elen++] = '\r';
        expect[elen++] = '\n';
    }
    if (ulen != elen || memcmp(unstuffed, expect, elen) != 0)
        abort();
    free(whole.buf);
    free(pieces.buf);
    free(expect);
    free(unstuffed);
    return 0;
}
