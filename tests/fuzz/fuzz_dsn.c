/*
 * fuzz_dsn.c - libFuzzer target: dsn_write on any queue-file content and
 * any customer reply. Byte 0 picks the event, RET, SMTPUTF8 and the size
 * limit; bytes 1..N up to the first NUL are the customer's reply (diag);
 * the rest is the content range of the queue file, wire form or not.
 * Content that does not end with CRLF.CRLF must be refused (-1); any other
 * must give a notice in which the boundary starts exactly the delimiter
 * lines, every line of the delivery-status part is a field, a fold or a
 * block separator, and the returned message equals the content un-stuffed
 * by an independent reference (or, as headers only, a prefix of it made of
 * whole lines).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dsn.h"
#include "queue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reference: drop the final ".\r\n"; per LF-ended piece, drop one leading
 * dot and turn a final CRLF into LF. */
static char *
reference(const char *w, size_t len, size_t *out_len)
{
    char *out = malloc(len + 1);
    size_t i = 0, o = 0;

    len -= 3;
    while (i < len) {
        const char *nl = memchr(w + i, '\n', len - i);
        size_t end = nl ? (size_t) (nl - w) + 1 : len, s = i;

        if (w[s] == '.')
            s++;
        if (end - s >= 2 && w[end - 1] == '\n' && w[end - 2] == '\r') {
            memcpy(out + o, w + s, end - s - 2);
            o += end - s - 2;
            out[o++] = '\n';
        } else {
            memcpy(out + o, w + s, end - s);
            o += end - s;
        }
        i = end;
    }
    *out_len = o;
    return out;
}

static size_t
count_prefixed_lines(const char *s, size_t len, const char *prefix)
{
    size_t n = 0, plen = strlen(prefix), i = 0;

    while (i < len) {
        const char *nl = memchr(s + i, '\n', len - i);
        size_t end = nl ? (size_t) (nl - s) : len;

        if (end - i >= plen && memcmp(s + i, prefix, plen) == 0)
            n++;
        i = end + 1;
    }
    return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const DSN_EVENT events[] = {DSN_EVENT_FAILED, DSN_EVENT_DELAYED,
                                       DSN_EVENT_RELAYED, DSN_EVENT_EXPIRED};
    QUEUE_ENV env;
    QUEUE_RCPT qr;
    DSN_RCPT dr;
    DSN_REPORT rep;
    char *diag, *err = NULL, *out, *ref, delim[128], *p, *part2, *part3, *part3_hdr, *end3;
    const uint8_t *content;
    size_t dlen, clen, olen, rlen;
    int cfd, ofd, ret, returned_full;
    off_t osize;

    if (size < 1)
        return 0;
    dlen = strnlen((const char *) data + 1, size - 1);
    diag = strndup((const char *) data + 1, dlen);
    content = data + 1 + dlen + (1 + dlen < size ? 1 : 0);
    clen = size - (size_t) (content - data);

    memset(&env, 0, sizeof(env));
    memset(&qr, 0, sizeof(qr));
    memcpy(env.id, "0006282A1B2C3D4EAB", 19);
    env.sender = "sender@sender.test";
    env.arrival_sec = 1764500000;
    env.ret = (data[0] & 4) ? "HDRS" : NULL;
    env.smtputf8 = (data[0] & 8) != 0;
    env.rcpt = &qr;
    env.rcpt_count = 1;
    qr.address = "rcpt@example.org";
    qr.orcpt = "rfc822;rcpt@example.org";
    memset(&dr, 0, sizeof(dr));
    dr.diag = diag;
    dr.remote_mta = "mail.example.org[192.0.2.1]";
    memset(&rep, 0, sizeof(rep));
    rep.event = events[data[0] & 3];
    rep.myhostname = "odmr.isp.test";
    rep.message_id = "fuzz@odmr.isp.test";
    rep.now = 1764943200;
    rep.will_retry_until = rep.now + 86400;
    rep.bounce_size_limit = 1 + (long long) (data[0] >> 4) * 64;

    cfd = memfd_create("content", 0);
    ofd = memfd_create("notice", 0);
    if (cfd < 0 || ofd < 0)
        abort();
    if (clen > 0 && write(cfd, content, clen) != (ssize_t) clen)
        abort();
    env.content_offset = 0;
    env.content_length = (long long) clen;
    ret = dsn_write(ofd, &env, cfd, &rep, &dr, 1, &err);
    if (clen < 3 || clen == 4 || memcmp(content + clen - 3, ".\r\n", 3) != 0
        || (clen >= 5 && memcmp(content + clen - 5, "\r\n", 2) != 0)) {
        if (ret != -1 || err == NULL)
            abort();
        goto done;
    }
    if (ret != 0)
        abort();

    osize = lseek(ofd, 0, SEEK_END);
    olen = (size_t) osize;
    out = malloc(olen + 1);
    if (pread(ofd, out, olen, 0) != (ssize_t) olen)
        abort();
    out[olen] = 0;
    p = strstr(out, "boundary=\"");
    if (p == NULL)
        abort();
    p += 10;
    snprintf(delim, sizeof(delim), "--%.*s", (int) strcspn(p, "\""), p);
    if (count_prefixed_lines(out, olen, delim) != 4)
        abort();

    /* Part 2: fields, folds, block separators only. */
    strcat(delim, "\n");
    part2 = strstr(strstr(out, delim) + 1, delim);
    part2 = strstr(part2, "\n\n") + 2;
    part3 = strstr(part2, "\n--");
    for (p = part2; p < part3; p = strchr(p, '\n') + 1) {
        size_t n = (size_t) (strchr(p, '\n') - p);

        if (n == 0 || p[0] == ' ' || p[0] == '\t')
            continue;
        if (memchr(p, ':', n) == NULL)
            abort();
    }

    /* Part 3: the message, or whole header lines from its start. */
    /* Only part 3's own header says what it holds (the content may say
     * anything). */
    part3_hdr = part3 + 1;
    part3 = strstr(part3_hdr, "\n\n") + 2;
    returned_full = memmem(part3_hdr, (size_t) (part3 - part3_hdr),
                           "Content-Type: message/rfc822\n", 29) != NULL
                    || memmem(part3_hdr, (size_t) (part3 - part3_hdr),
                              "Content-Type: message/global\n", 29) != NULL;
    part3 = strchr(part3, '\n') + 1; /* after Return-Path */
    end3 = out + olen - strlen(delim) - 3; /* "\n--B--\n" */
    if (end3 < part3 || memcmp(end3, "\n--", 3) != 0)
        abort();
    ref = reference((const char *) content, clen, &rlen);
    /* A failure returns the whole message when RET allows and it fits. */
    if ((rep.event == DSN_EVENT_FAILED || rep.event == DSN_EVENT_EXPIRED) && env.ret == NULL
        && rlen <= (size_t) rep.bounce_size_limit && !returned_full)
        abort();
    if (returned_full) {
        if ((size_t) (end3 - part3) != rlen || memcmp(part3, ref, rlen) != 0)
            abort();
        if (rlen > (size_t) rep.bounce_size_limit)
            abort();
    } else {
        size_t hl = (size_t) (end3 - part3);

        if (hl > rlen || memcmp(part3, ref, hl) != 0)
            abort();
        if (hl > 0 && part3[hl - 1] != '\n' && hl != rlen)
            abort();
    }
    free(ref);
    free(out);

done:
    free(err);
    free(diag);
    close(cfd);
    close(ofd);
    return 0;
}
