/*
 * fuzz_smtp_reply.c - libFuzzer target: smtp_reply_feed over the input
 * split into lines, and smtp_reply_read_each over the same bytes through a
 * STREAM on a pipe (which also exercises stream_get_line): every line
 * reaches the callback once, within the line limit.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtp.h"
#include "stream.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_reply(const SMTP_REPLY *r)
{
    char sum[128];

    if (strlen(r->text) >= SMTP_REPLY_MAX || strlen(r->enh) >= sizeof(r->enh))
        abort();
    if (r->nlines > 0 && (r->code < 200 || r->code > 599))
        abort();
    if (r->enh[0] && r->enh[0] != '0' + r->code / 100)
        abort();
    smtp_reply_summary(r, sum, sizeof(sum));
    if (strlen(sum) >= sizeof(sum))
        abort();
    for (const char *p = sum; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            abort();
}

static void
feed_lines(const uint8_t *data, size_t size)
{
    SMTP_REPLY r;
    size_t start = 0;

    smtp_reply_init(&r);
    for (size_t i = 0; i <= size; i++) {
        int ret;

        if (i < size && data[i] != '\n')
            continue;
        ret = smtp_reply_feed(&r, (const char *) data + start, i - start);
        check_reply(&r);
        if (ret != 0)
            smtp_reply_init(&r);
        start = i + 1;
    }
}

static void
each_line(void *ctx, const SMTP_REPLY *r, const char *text, size_t len)
{
    int *lines = ctx;

    if (++*lines != r->nlines || len > 2048 || (len > 0 && text[len - 1] == '\n'))
        abort();
    if (len > 0) { /* touch the last byte: ASan checks the length */
        volatile char last = text[len - 1];

        (void) last;
    }
}

static void
read_replies(const uint8_t *data, size_t size)
{
    int p[2];
    STREAM *s;
    SMTP_REPLY r;

    /* A pipe holds 64 KiB: larger inputs are covered by feed_lines only. */
    if (size > 60000 || pipe(p) < 0)
        return;
    if (write_all(p[1], data, size) < 0)
        abort();
    close(p[1]);
    s = stream_open(p[0], -1);
    stream_set_timeout(s, 1000);
    for (int n = 0; n < 100000; n++) {
        int lines = 0;
        int ret = smtp_reply_read_each(s, &r, each_line, &lines);

        if (ret == 0) {
            check_reply(&r);
            if (lines != r.nlines)
                abort();
        } else if (ret != SMTP_REPLY_MALFORMED) {
            break;
        }
    }
    if (stream_is_timeout(s))
        abort(); /* all input was there: nothing may wait */
    stream_close(&s, 0);
    close(p[0]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    feed_lines(data, size);
    read_replies(data, size);
    return 0;
}
