/*
 * fuzz_mime.c - libFuzzer target: mime_downgrade() on the input made into
 * wire form (smtp_stuff, then ".\r\n") and on the raw input as it comes.
 * It must never crash nor fail with a system error; on success the output
 * is wire form (CRLF only, every line starting with "." stuffed, one "."
 * line at the end) and 7-bit, and converting it again gives it unchanged;
 * a 7-bit input always converts; IMPOSSIBLE comes with a reason.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mime.h"
#include "smtp.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    char *buf;
    size_t len;
} SINK;

static int
sink_out(void *ctx, const char *buf, size_t n)
{
    SINK *k = ctx;

    memcpy(k->buf + k->len, buf, n);
    k->len += n;
    return 0;
}

static int
mem_fd(const char *p, size_t n)
{
    int fd = memfd_create("fuzz_mime", 0);

    if (fd < 0 || write_all(fd, p, n) < 0)
        abort();
    return fd;
}

static char *
fd_contents(int fd, size_t *len_r)
{
    off_t end = lseek(fd, 0, SEEK_END);
    char *buf = malloc((size_t) end + 1);

    if (end < 0 || buf == NULL || pread(fd, buf, (size_t) end, 0) != end)
        abort();
    *len_r = (size_t) end;
    return buf;
}

/* Wire form and 7-bit, or abort. */
static void
check_wire(const char *p, size_t n)
{
    size_t i = 0;

    if (n < 3 || memcmp(p + n - 3, ".\r\n", 3) != 0)
        abort();
    for (size_t k = 0; k < n; k++) {
        if ((unsigned char) p[k] >= 0x80)
            abort();
        if (p[k] == '\n' && (k == 0 || p[k - 1] != '\r'))
            abort();
    }
    while (i < n - 3) {
        const char *nl = memchr(p + i, '\n', n - 3 - i);

        if (nl == NULL)
            abort(); /* the last line before "." is ended */
        if (p[i] == '.' && (nl - (p + i) < 3 || p[i + 1] != '.'))
            abort(); /* a "." line, or an unstuffed dot */
        i = (size_t) (nl - p) + 1;
    }
}

/* Convert; on success check the output (wire form only when the input was:
 * bare LFs in parts left alone stay as they are) and return it. */
static int
convert(const char *in, size_t len, int wire, char **out_r, size_t *out_len_r)
{
    int in_fd = mem_fd(in, len), out_fd = memfd_create("fuzz_mime_out", 0);
    char *err = NULL;
    int r;

    if (out_fd < 0)
        abort();
    r = mime_downgrade(in_fd, 0, (long long) len, out_fd, &err);
    if (r < 0 || (r != 0 && (err == NULL || *err == 0)))
        abort();
    free(err);
    *out_r = NULL;
    if (r == 0) {
        *out_r = fd_contents(out_fd, out_len_r);
        if (wire)
            check_wire(*out_r, *out_len_r);
        if (mime_has_8bit(out_fd, 0, (long long) *out_len_r, &err) != 0)
            abort();
    }
    close(in_fd);
    close(out_fd);
    return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    SINK w = {malloc(size * 2 + 8), 0};
    SMTP_STUFF st;
    char *out, *again, *err = NULL;
    size_t out_len, again_len;
    int fd, eight, r;

    if (w.buf == NULL)
        abort();
    smtp_stuff_init(&st);
    smtp_stuff_feed(&st, (const char *) data, size, sink_out, &w);
    smtp_stuff_finish(&st, sink_out, &w);
    sink_out(&w, ".\r\n", 3);

    fd = mem_fd(w.buf, w.len);
    eight = mime_has_8bit(fd, 0, (long long) w.len, &err);
    close(fd);
    if (eight < 0)
        abort();
    r = convert(w.buf, w.len, 1, &out, &out_len);
    if (r != 0 && !eight)
        abort(); /* nothing to convert cannot be impossible */
    if (r == 0) {
        /* Converted output converts to itself. */
        if (convert(out, out_len, 1, &again, &again_len) != 0)
            abort();
        if (again_len != out_len || memcmp(again, out, out_len) != 0)
            abort();
        free(again);
        free(out);
    }

    /* The raw bytes, not in wire form: no crash, no system error, 7-bit
     * output when it converts. */
    if (convert((const char *) data, size, 0, &out, &out_len) == 0)
        free(out);
    free(w.buf);
    return 0;
}
