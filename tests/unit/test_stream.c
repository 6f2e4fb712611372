/*
 * test_stream.c - unit tests for stream.c over socketpairs and pipes: line
 * splitting, partial lines, byte-at-a-time input, NUL bytes, EOF, timeouts
 * and deadlines, flush-before-read, sendfile, and a TLS round trip with a
 * throwaway certificate made in memory.
 *
 * Peers that must run concurrently are forked children; a child reports
 * failure through its exit status (the line number of the failed check).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "stream.h"
#include "util.h"

/* In a forked child: exit with the failing line (mod 256, never 0). */
#define CHILD_CHECK(cond)                                                   \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "child check failed at line %d: %s\n", __LINE__, #cond); \
            _exit(1 + (__LINE__ % 250));                                    \
        }                                                                   \
    } while (0)

static void
wait_child_ok(pid_t pid)
{
    int status;

    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("child failed: status 0x%x", status);
}

static void
make_socketpair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

/* ---- line splitting against a reference ---------------------------------- */

typedef struct {
    char data[40000];
    size_t len;
    int flags; /* STREAM_LINE_CRLF/LF/EOF */
} LINE;

/* The obvious (unbuffered) split: what reassembled pieces must equal. */
static size_t
reference_lines(const char *in, size_t len, LINE *out, size_t max)
{
    size_t n = 0, start = 0;

    for (size_t i = 0; i <= len && n < max; i++) {
        if (i == len) {
            if (i > start) {
                out[n].len = i - start;
                memcpy(out[n].data, in + start, out[n].len);
                out[n++].flags = STREAM_LINE_EOF;
            }
            break;
        }
        if (in[i] == '\n') {
            size_t end = i;
            int crlf = end > start && in[end - 1] == '\r';

            if (crlf)
                end--;
            out[n].len = end - start;
            memcpy(out[n].data, in + start, out[n].len);
            out[n++].flags = crlf ? STREAM_LINE_CRLF : STREAM_LINE_LF;
            start = i + 1;
        }
    }
    return n;
}

/* Read every line with a bufsize buffer, gluing PARTIAL pieces together. */
static size_t
read_lines(STREAM *s, size_t bufsize, LINE *out, size_t max)
{
    char *buf = malloc(bufsize);
    size_t n = 0, acc = 0;

    assert_non_null(buf);
    for (;;) {
        size_t len;
        int flags, ret = stream_get_line(s, buf, bufsize, &len, &flags);

        if (ret == STREAM_EOF) {
            if (acc > 0) {
                out[n].len = acc;
                out[n++].flags = STREAM_LINE_EOF;
            }
            break;
        }
        assert_int_equal(ret, STREAM_OK);
        assert_true(len <= bufsize - 1);
        assert_int_equal(buf[len], 0);
        assert_true(n < max);
        assert_true(acc + len <= sizeof(out[n].data));
        memcpy(out[n].data + acc, buf, len);
        acc += len;
        if (flags == STREAM_LINE_PARTIAL) {
            /* a piece always makes progress unless the line ends */
            assert_true(len > 0);
            continue;
        }
        assert_true(flags == STREAM_LINE_CRLF || flags == STREAM_LINE_LF
                    || flags == STREAM_LINE_EOF);
        out[n].len = acc;
        out[n++].flags = flags;
        acc = 0;
    }
    free(buf);
    return n;
}

static void
compare_lines(const LINE *got, size_t ngot, const LINE *want, size_t nwant, const char *what)
{
    if (ngot != nwant)
        fail_msg("%s: %zu lines, want %zu", what, ngot, nwant);
    for (size_t i = 0; i < nwant; i++) {
        if (got[i].len != want[i].len || got[i].flags != want[i].flags
            || memcmp(got[i].data, want[i].data, want[i].len) != 0)
            fail_msg("%s: line %zu differs (len %zu/%zu flags %d/%d)", what, i, got[i].len,
                     want[i].len, got[i].flags, want[i].flags);
    }
}

static LINE got_lines[8], want_lines[8];

/* Whole input written at once, then read with many buffer sizes. */
static void
test_lines_table(void **state)
{
    static const struct {
        const char *in;
        size_t len;
    } cases[] = {
#define C(s) {s, sizeof(s) - 1}
        C("EHLO x\r\nQUIT\r\n"),
        C("bare\nlf\r\nmix\n"),
        C("\r\n\n\r\n"),
        C("cr\rinside\r\n"),
        C("cr at end\r"),
        C("no line end"),
        C("nul\0inside\r\nand\0\0\n"),
        C("abcdefghijklmnopqrstuvwxyz0123456789\r\nshort\r\n"),
        C("abcdefg\r\r\n\r\r\r\n"),
        C(""),
#undef C
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        size_t nwant = reference_lines(cases[i].in, cases[i].len, want_lines, 8);

        for (size_t bufsize = 2; bufsize <= 48; bufsize++) {
            int sv[2];
            STREAM *s;
            char what[64];

            make_socketpair(sv);
            assert_int_equal(write_all(sv[1], cases[i].in, cases[i].len), 0);
            close(sv[1]);
            s = stream_open(sv[0], sv[0]);
            stream_set_timeout(s, 2000);
            snprintf(what, sizeof(what), "case %zu bufsize %zu", i, bufsize);
            compare_lines(got_lines, read_lines(s, bufsize, got_lines, 8), want_lines, nwant,
                          what);
            assert_true(stream_is_eof(s));
            assert_int_equal(stream_bytes_in(s), cases[i].len);
            stream_close(&s, 1);
        }
    }
}

/* The exact pieces and flags for a few hand-checked cases. */
static void
test_lines_pieces(void **state)
{
    static const char in[] = "abcd\r\nabcde\r\nab\0\nxyz";
    static const struct {
        const char *data;
        size_t len;
        int flags;
    } want[] = {
        {"abcd", 4, STREAM_LINE_CRLF},   /* exactly max bytes, then CRLF */
        {"abcd", 4, STREAM_LINE_PARTIAL},
        {"e", 1, STREAM_LINE_CRLF},
        {"ab\0", 3, STREAM_LINE_LF},
        {"xyz", 3, STREAM_LINE_EOF},
    };
    int sv[2];
    STREAM *s;
    char buf[5];
    size_t len;
    int flags;

    make_socketpair(sv);
    assert_int_equal(write_all(sv[1], in, sizeof(in) - 1), 0);
    shutdown(sv[1], SHUT_WR);
    s = stream_open(sv[0], sv[0]);
    for (size_t i = 0; i < ODMR_ARRAY_LEN(want); i++) {
        assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_OK);
        assert_int_equal(len, want[i].len);
        assert_memory_equal(buf, want[i].data, len);
        assert_int_equal(flags, want[i].flags);
    }
    /* EOF is sticky */
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_EOF);
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_EOF);
    assert_int_equal(stream_read(s, buf, sizeof(buf)), STREAM_EOF);
    assert_true(stream_is_eof(s));
    assert_false(stream_is_timeout(s));
    assert_false(stream_is_error(s));
    assert_true(stream_failed(s));
    assert_string_equal(stream_error_text(s), "lost connection");
    /* the peer only half-closed: it can still read our answer */
    assert_int_equal(stream_puts(s, "221 bye\r\n"), 0);
    assert_int_equal(stream_flush(s), 0);
    assert_int_equal(read(sv[1], buf, 4), 4);
    assert_memory_equal(buf, "221 ", 4);
    stream_close(&s, 1);
    close(sv[1]);
}

/* Lines longer than the 16 KiB input buffer with a bigger caller buffer. */
static void
test_lines_huge(void **state)
{
    static char in[40000];
    size_t len = 0, nwant;
    pid_t pid;
    int sv[2];
    STREAM *s;

    /* a CR exactly at the end of a full input buffer, then its LF */
    memset(in, 'x', 16383);
    len = 16383;
    memcpy(in + len, "\r\n", 2);
    len += 2;
    memset(in + len, 'y', 20000);
    len += 20000;
    memcpy(in + len, "\r\nend", 5);
    len += 5;
    nwant = reference_lines(in, len, want_lines, 8);
    assert_int_equal(nwant, 3);

    for (size_t bufsize = 16000; bufsize <= 32768; bufsize += 16768) {
        make_socketpair(sv);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(sv[0]);
            CHILD_CHECK(write_all(sv[1], in, len) == 0);
            _exit(0);
        }
        close(sv[1]);
        s = stream_open(sv[0], sv[0]);
        stream_set_timeout(s, 5000);
        compare_lines(got_lines, read_lines(s, bufsize, got_lines, 8), want_lines, nwant,
                      "huge");
        stream_close(&s, 1);
        wait_child_ok(pid);
    }
}

/* A writer child that sends one byte at a time, slowly enough that every
 * read sees a single byte. */
static void
test_lines_one_byte(void **state)
{
    static const char in[] = "EHLO a\r\nbare\nlong line here\r\nnul\0x\r\n\r\n.\r\ncr\rx\r\nlast";
    size_t nwant = reference_lines(in, sizeof(in) - 1, want_lines, 8);
    int sv[2];
    pid_t pid;
    STREAM *s;

    make_socketpair(sv);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(sv[0]);
        for (size_t i = 0; i < sizeof(in) - 1; i++) {
            CHILD_CHECK(write_all(sv[1], in + i, 1) == 0);
            usleep(500);
        }
        _exit(0);
    }
    close(sv[1]);
    s = stream_open(sv[0], sv[0]);
    stream_set_timeout(s, 5000);
    compare_lines(got_lines, read_lines(s, 6, got_lines, 8), want_lines, nwant, "one byte");
    assert_int_equal(stream_bytes_in(s), sizeof(in) - 1);
    stream_close(&s, 1);
    wait_child_ok(pid);
}

/* Pipes: separate read and write fds, read(2)/write(2) instead of recv/send. */
/* stream_input_waiting(): buffered bytes, bytes in the kernel, and not an
 * end of file; nothing is consumed. */
static void
test_input_waiting(void **state)
{
    int sv[2];
    STREAM *s;
    char buf[64];
    size_t len;
    int flags;

    make_socketpair(sv);
    s = stream_open(sv[0], sv[0]);
    stream_set_timeout(s, 2000);
    assert_int_equal(stream_input_waiting(s), 0);
    assert_int_equal(write_all(sv[1], "354 go\r\n", 8), 0);
    assert_int_equal(stream_input_waiting(s), 1); /* in the kernel */
    assert_int_equal(stream_input_waiting(s), 1); /* and still there */
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_OK);
    assert_string_equal(buf, "354 go");
    assert_int_equal(stream_input_waiting(s), 0);
    /* a stray line in the same write as the reply: buffered here */
    assert_int_equal(write_all(sv[1], "250 ok\r\n250 stray\r\n", 19), 0);
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_OK);
    assert_string_equal(buf, "250 ok");
    assert_int_equal(stream_input_waiting(s), 1);
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_OK);
    assert_string_equal(buf, "250 stray");
    assert_int_equal(stream_input_waiting(s), 0);
    /* the peer's end of file is no input */
    close(sv[1]);
    assert_int_equal(stream_input_waiting(s), 0);
    stream_close(&s, 1);
}

static void
test_pipes_and_read(void **state)
{
    int in[2], out[2];
    STREAM *s;
    char buf[64];
    size_t len;
    int flags;

    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    assert_int_equal(write_all(in[1], "line one\nrest of data", 21), 0);
    close(in[1]);
    s = stream_open(in[0], out[1]);
    stream_set_timeout(s, 2000);
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_OK);
    assert_string_equal(buf, "line one");
    assert_int_equal(flags, STREAM_LINE_LF);
    assert_int_equal(stream_pending(s), 12);
    assert_int_equal(stream_read(s, buf, 4), 4);
    assert_memory_equal(buf, "rest", 4);
    assert_int_equal(stream_discard_input(s), 8);
    assert_int_equal(stream_pending(s), 0);
    assert_int_equal(stream_read(s, buf, sizeof(buf)), STREAM_EOF);

    assert_int_equal(stream_printf(s, "%d %s\r\n", 250, "ok"), 0);
    assert_int_equal(stream_flush(s), 0);
    assert_int_equal(read(out[0], buf, sizeof(buf)), 8);
    assert_memory_equal(buf, "250 ok\r\n", 8);
    assert_int_equal(stream_bytes_out(s), 8);
    stream_close(&s, 1);
    close(out[0]);
}

/* A long printf and a write bigger than the output buffer, in order. */
static void
test_big_writes(void **state)
{
    static char big[20000], got[40000];
    char *longstr = malloc(3000);
    int sv[2];
    STREAM *s;
    size_t have = 0;

    assert_non_null(longstr);
    memset(longstr, 'p', 2999);
    longstr[2999] = 0;
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char) ('a' + i % 26);
    make_socketpair(sv);
    s = stream_open(sv[0], sv[0]);
    assert_int_equal(stream_puts(s, "head"), 0);
    assert_int_equal(stream_printf(s, "[%s]", longstr), 0);
    assert_int_equal(stream_write(s, big, sizeof(big)), 0);
    assert_int_equal(stream_flush(s), 0);
    shutdown(sv[0], SHUT_WR);
    for (;;) {
        ssize_t n = read(sv[1], got + have, sizeof(got) - have);

        assert_true(n >= 0);
        if (n == 0)
            break;
        have += (size_t) n;
    }
    assert_int_equal(have, 4 + 3001 + sizeof(big));
    assert_memory_equal(got, "head[", 5);
    assert_int_equal(got[4 + 3000], ']');
    assert_memory_equal(got + 4 + 3001, big, sizeof(big));
    stream_close(&s, 1);
    close(sv[1]);
    free(longstr);
}

/* ---- time limits --------------------------------------------------------- */

static void
test_timeout(void **state)
{
    int sv[2];
    STREAM *s;
    char buf[16];
    size_t len;
    int flags;
    int64_t start, took;

    make_socketpair(sv);
    s = stream_open(sv[0], sv[0]);
    stream_set_timeout(s, 200);
    start = now_ms();
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_TIMEOUT);
    took = now_ms() - start;
    assert_true(took >= 190 && took < 1500);
    assert_true(stream_is_timeout(s));
    assert_string_equal(stream_error_text(s), "timeout");
    /* sticky: no second wait, writes fail, even when data arrives */
    assert_int_equal(write_all(sv[1], "x\r\n", 3), 0);
    start = now_ms();
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_TIMEOUT);
    assert_int_equal(stream_read(s, buf, sizeof(buf)), STREAM_TIMEOUT);
    assert_true(now_ms() - start < 100);
    assert_int_equal(stream_puts(s, "x"), -1);
    assert_int_equal(stream_flush(s), -1);
    stream_close(&s, 1);
    close(sv[1]);
}

static void
test_deadline(void **state)
{
    int sv[2];
    STREAM *s;
    char buf[16];
    size_t len;
    int flags;
    int64_t start, took;

    make_socketpair(sv);
    s = stream_open(sv[0], sv[0]);
    stream_set_timeout(s, 5000);
    start = now_ms();
    stream_set_deadline(s, start + 250);
    /* data before the deadline is fine */
    assert_int_equal(write_all(sv[1], "ok\r\n", 4), 0);
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_OK);
    assert_string_equal(buf, "ok");
    /* then the deadline cuts the 5 s per-call timeout short */
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_TIMEOUT);
    took = now_ms() - start;
    assert_true(took >= 240 && took < 2000);
    stream_close(&s, 0);

    /* a deadline already past: no wait at all */
    s = stream_open(sv[0], sv[0]);
    stream_set_deadline(s, now_ms() - 1);
    start = now_ms();
    assert_int_equal(stream_read(s, buf, sizeof(buf)), STREAM_TIMEOUT);
    assert_true(now_ms() - start < 100);
    stream_close(&s, 0);

    /* a write to a peer that does not read times out too */
    s = stream_open(sv[0], sv[0]);
    stream_set_timeout(s, 200);
    {
        static char chunk[65536];
        int ret = 0;

        memset(chunk, 'w', sizeof(chunk));
        start = now_ms();
        for (int i = 0; i < 200 && ret == 0; i++)
            ret = stream_write(s, chunk, sizeof(chunk));
        assert_int_equal(ret, -1);
        assert_true(stream_is_timeout(s));
        assert_true(now_ms() - start < 3000);
    }
    stream_close(&s, 1);
    close(sv[1]);
}

/* Output waits in the buffer until a read must wait; then it goes out. */
static void
test_flush_before_read(void **state)
{
    int sv[2];
    pid_t pid;
    STREAM *s;
    char buf[64];
    size_t len;
    int flags;
    struct pollfd pfd;

    make_socketpair(sv);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        STREAM *peer;

        close(sv[0]);
        peer = stream_open(sv[1], sv[1]);
        stream_set_timeout(peer, 5000);
        CHILD_CHECK(stream_get_line(peer, buf, sizeof(buf), &len, &flags) == STREAM_OK);
        CHILD_CHECK(strcmp(buf, "EHLO me") == 0);
        CHILD_CHECK(stream_printf(peer, "250 got %s\r\n", buf) == 0);
        CHILD_CHECK(stream_flush(peer) == 0);
        stream_close(&peer, 1);
        _exit(0);
    }
    s = stream_open(sv[0], sv[0]);
    stream_set_timeout(s, 5000);
    assert_int_equal(stream_puts(s, "EHLO me\r\n"), 0);
    /* nothing sent yet: the command sits in the output buffer */
    pfd.fd = sv[1];
    pfd.events = POLLIN;
    assert_int_equal(poll(&pfd, 1, 0), 0);
    close(sv[1]);
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_OK);
    assert_string_equal(buf, "250 got EHLO me");
    stream_close(&s, 1);
    wait_child_ok(pid);
}

/* A peer that went away: EPIPE without SIGPIPE on a socket. */
static void
test_write_to_closed(void **state)
{
    int sv[2], p[2];
    STREAM *s;
    void (*old)(int);

    make_socketpair(sv);
    close(sv[1]);
    s = stream_open(sv[0], sv[0]);
    assert_int_equal(stream_puts(s, "hello\r\n"), 0);
    assert_int_equal(stream_flush(s), -1);
    assert_true(stream_is_error(s));
    assert_non_null(strstr(stream_error_text(s), "lost connection"));
    stream_close(&s, 1);

    /* a pipe needs SIGPIPE ignored by the program (stream.h says so) */
    old = signal(SIGPIPE, SIG_IGN);
    assert_int_equal(pipe(p), 0);
    close(p[0]);
    s = stream_open(-1, p[1]);
    assert_int_equal(stream_puts(s, "x"), 0);
    assert_int_equal(stream_flush(s), -1);
    assert_true(stream_is_error(s));
    stream_close(&s, 0);
    close(p[1]);
    signal(SIGPIPE, old);
}

/* ---- sendfile ------------------------------------------------------------ */

static int
make_pattern_file(size_t size)
{
    char path[] = "/tmp/test_stream.XXXXXX";
    int fd = mkstemp(path);
    char buf[4096];

    assert_true(fd >= 0);
    unlink(path);
    for (size_t off = 0; off < size; off += sizeof(buf)) {
        size_t n = size - off < sizeof(buf) ? size - off : sizeof(buf);

        for (size_t i = 0; i < n; i++)
            buf[i] = (char) ((off + i) * 7 % 251);
        assert_int_equal(write_all(fd, buf, n), 0);
    }
    return fd;
}

static int
pattern_ok(const char *buf, size_t len, size_t off)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != (char) ((off + i) * 7 % 251))
            return 0;
    return 1;
}

static void
test_sendfile_small(void **state)
{
    int fd = make_pattern_file(10000);
    int sv[2], p[2];
    STREAM *s;
    char buf[7000];
    size_t have = 0;

    /* socket: buffered text first, then the file region */
    make_socketpair(sv);
    s = stream_open(sv[0], sv[0]);
    assert_int_equal(stream_puts(s, "HDR"), 0);
    assert_int_equal(stream_sendfile(s, fd, 100, 5000), 0);
    assert_int_equal(stream_bytes_out(s), 5003);
    /* past the end of the file: an error, not a hang */
    assert_int_equal(stream_sendfile(s, fd, 9000, 2000), -1);
    assert_true(stream_is_error(s));
    assert_int_equal(stream_bytes_out(s), 6003);
    shutdown(sv[0], SHUT_WR);
    for (ssize_t n; (n = read(sv[1], buf + have, sizeof(buf) - have)) > 0;)
        have += (size_t) n;
    assert_int_equal(have, 6003);
    assert_memory_equal(buf, "HDR", 3);
    assert_true(pattern_ok(buf + 3, 5000, 100));
    assert_true(pattern_ok(buf + 5003, 1000, 9000));
    stream_close(&s, 1);
    close(sv[1]);

    /* pipe: the pread + write path */
    assert_int_equal(pipe(p), 0);
    s = stream_open(-1, p[1]);
    assert_int_equal(stream_sendfile(s, fd, 1, 4000), 0);
    stream_close(&s, 0);
    close(p[1]);
    have = 0;
    for (ssize_t n; (n = read(p[0], buf + have, sizeof(buf) - have)) > 0;)
        have += (size_t) n;
    assert_int_equal(have, 4000);
    assert_true(pattern_ok(buf, 4000, 1));
    close(p[0]);
    close(fd);
}

/* More than the socket buffer holds: sendfile must wait for the reader. */
static void
test_sendfile_big(void **state)
{
    size_t size = 3 * 1024 * 1024;
    int fd = make_pattern_file(size + 10);
    int sv[2];
    pid_t pid;
    STREAM *s;

    make_socketpair(sv);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        static char buf[65536];
        size_t have = 0;

        close(sv[0]);
        usleep(100000); /* let the sender fill the socket buffer first */
        for (ssize_t n; (n = read(sv[1], buf, sizeof(buf))) > 0;) {
            CHILD_CHECK(pattern_ok(buf, (size_t) n, 10 + have));
            have += (size_t) n;
        }
        CHILD_CHECK(have == size);
        _exit(0);
    }
    close(sv[1]);
    s = stream_open(sv[0], sv[0]);
    stream_set_timeout(s, 10000);
    assert_int_equal(stream_sendfile(s, fd, 10, size), 0);
    /* the socket is blocking again afterwards */
    assert_int_equal(fcntl(sv[0], F_GETFL) & O_NONBLOCK, 0);
    stream_close(&s, 1);
    wait_child_ok(pid);
    close(fd);
}

/* stream_shutdown: pending output goes out, the peer reads EOF, reads on
 * our side go on, a later write fails, stream_close sends nothing more. */
static void
test_shutdown(void **state)
{
    int sv[2];
    char buf[64], line[64];
    size_t len;
    int flags;
    ssize_t n;
    STREAM *s;

    make_socketpair(sv);
    s = stream_open(sv[0], sv[0]);
    stream_set_timeout(s, 5000);
    assert_int_equal(stream_write(s, "221 bye\r\n", 9), 0);
    assert_int_equal(stream_shutdown(s), 0);
    n = read(sv[1], buf, sizeof(buf));
    assert_int_equal(n, 9);
    assert_memory_equal(buf, "221 bye\r\n", 9);
    assert_int_equal(read(sv[1], buf, sizeof(buf)), 0); /* EOF: our FIN */
    assert_int_equal(write(sv[1], "late\r\n", 6), 6);
    assert_int_equal(stream_get_line(s, line, sizeof(line), &len, &flags), STREAM_OK);
    assert_string_equal(line, "late");
    assert_int_equal(stream_shutdown(s), 0); /* again: nothing */
    assert_int_equal(stream_write(s, "x\r\n", 3), -1);
    assert_true(stream_failed(s));
    stream_close(&s, 1);
    assert_null(s);
    close(sv[1]);
}

/* ---- TLS ----------------------------------------------------------------- */

static SSL_CTX *
make_server_ctx(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    X509_NAME *name;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    assert_non_null(key);
    assert_non_null(cert);
    assert_non_null(ctx);
    assert_int_equal(X509_set_version(cert, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(cert), 1), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(cert), -3600));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(cert), 3600));
    assert_int_equal(X509_set_pubkey(cert, key), 1);
    name = X509_get_subject_name(cert);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const unsigned char *) "odmr.test", -1, -1, 0),
                     1);
    assert_int_equal(X509_set_issuer_name(cert, name), 1);
    assert_true(X509_sign(cert, key, EVP_sha256()) > 0);
    assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
    X509_free(cert);
    EVP_PKEY_free(key);
    return ctx;
}

static void
test_tls_roundtrip(void **state)
{
    size_t fsize = 200000;
    int fd = make_pattern_file(fsize);
    SSL_CTX *sctx = make_server_ctx();
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    int sv[2];
    pid_t pid;
    STREAM *s;
    char buf[256];
    size_t len;
    int flags;

    assert_non_null(cctx);
    /* OpenSSL writes with write(2): the close_notify to a peer that is gone
     * raises SIGPIPE, which programs ignore (stream.h). */
    signal(SIGPIPE, SIG_IGN);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    make_socketpair(sv);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* the server side */
        STREAM *srv;

        close(sv[0]);
        srv = stream_open(sv[1], sv[1]);
        stream_set_timeout(srv, 5000);
        CHILD_CHECK(stream_get_line(srv, buf, sizeof(buf), &len, &flags) == STREAM_OK);
        CHILD_CHECK(strcmp(buf, "STARTTLS") == 0);
        /* the injected command arrived with STARTTLS, in the clear */
        CHILD_CHECK(stream_pending(srv) == strlen("RSET injected\r\n"));
        CHILD_CHECK(stream_puts(srv, "220 2.0.0 Ready to start TLS\r\n") == 0);
        CHILD_CHECK(stream_tls_server(srv, sctx) == 0);
        CHILD_CHECK(stream_pending(srv) == 0);
        CHILD_CHECK(stream_tls_active(srv));
        CHILD_CHECK(stream_tls_ssl(srv) != NULL);
        CHILD_CHECK(strncmp(stream_tls_info(srv), "TLSv1.3 with cipher ", 20) == 0);
        /* the first line after the handshake is the client's, not the injected one */
        CHILD_CHECK(stream_get_line(srv, buf, sizeof(buf), &len, &flags) == STREAM_OK);
        CHILD_CHECK(strcmp(buf, "EHLO secure") == 0 && flags == STREAM_LINE_CRLF);
        CHILD_CHECK(stream_puts(srv, "250-hello\r\n250 ok\r\n") == 0);
        CHILD_CHECK(stream_get_line(srv, buf, sizeof(buf), &len, &flags) == STREAM_OK);
        CHILD_CHECK(strcmp(buf, "SEND") == 0);
        CHILD_CHECK(stream_sendfile(srv, fd, 5, fsize - 5) == 0);
        CHILD_CHECK(stream_get_line(srv, buf, sizeof(buf), &len, &flags) == STREAM_OK);
        CHILD_CHECK(strcmp(buf, "QUIT") == 0);
        CHILD_CHECK(stream_puts(srv, "221 bye\r\n") == 0);
        stream_close(&srv, 1);
        _exit(0);
    }
    close(sv[1]);
    s = stream_open(sv[0], sv[0]);
    stream_set_timeout(s, 5000);
    /* STARTTLS and an injected command in one packet */
    assert_int_equal(stream_puts(s, "STARTTLS\r\nRSET injected\r\n"), 0);
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_OK);
    assert_string_equal(buf, "220 2.0.0 Ready to start TLS");
    assert_false(stream_tls_active(s));
    assert_string_equal(stream_tls_info(s), "");
    assert_null(stream_tls_ssl(s));
    if (stream_tls_client(s, cctx, "odmr.test") != 0)
        fail_msg("client handshake: %s", stream_error_text(s));
    assert_true(stream_tls_active(s));
    assert_non_null(strstr(stream_tls_info(s), "bits)"));
    assert_int_equal(stream_puts(s, "EHLO secure\r\n"), 0);
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_OK);
    assert_string_equal(buf, "250-hello");
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_OK);
    assert_string_equal(buf, "250 ok");
    assert_int_equal(stream_puts(s, "SEND\r\n"), 0);
    {
        size_t have = 0;
        char chunk[10000];

        while (have < fsize - 5) {
            size_t want = fsize - 5 - have < sizeof(chunk) ? fsize - 5 - have : sizeof(chunk);
            ssize_t n = stream_read(s, chunk, want);

            assert_true(n > 0);
            assert_true(pattern_ok(chunk, (size_t) n, 5 + have));
            have += (size_t) n;
        }
    }
    assert_int_equal(stream_puts(s, "QUIT\r\n"), 0);
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_OK);
    assert_string_equal(buf, "221 bye");
    /* the server closed (with close_notify): a clean EOF */
    assert_int_equal(stream_get_line(s, buf, sizeof(buf), &len, &flags), STREAM_EOF);
    assert_true(stream_bytes_in(s) > fsize);
    stream_close(&s, 1);
    wait_child_ok(pid);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    close(fd);
}

/* A handshake with a silent peer is bounded by the timeout too. */
static void
test_tls_handshake_timeout(void **state)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    int sv[2];
    STREAM *s;
    int64_t start;

    assert_non_null(cctx);
    make_socketpair(sv);
    s = stream_open(sv[0], sv[0]);
    stream_set_timeout(s, 200);
    start = now_ms();
    assert_int_equal(stream_tls_client(s, cctx, NULL), -1);
    assert_true(stream_is_timeout(s));
    assert_true(now_ms() - start < 2000);
    assert_false(stream_tls_active(s));
    stream_close(&s, 0);
    /* the fd is given back blocking, as it was */
    assert_int_equal(fcntl(sv[0], F_GETFL) & O_NONBLOCK, 0);
    close(sv[0]);

    /* garbage instead of a ServerHello: an error with a reason */
    make_socketpair(sv);
    assert_int_equal(write_all(sv[1], "220 not tls at all\r\n", 20), 0);
    s = stream_open(sv[0], sv[0]);
    stream_set_timeout(s, 2000);
    assert_int_equal(stream_tls_client(s, cctx, NULL), -1);
    assert_true(stream_is_error(s));
    assert_int_equal(strncmp(stream_error_text(s), "TLS error: handshake", 20), 0);
    stream_close(&s, 1);
    close(sv[1]);
    SSL_CTX_free(cctx);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_table),
        cmocka_unit_test(test_lines_pieces),
        cmocka_unit_test(test_lines_huge),
        cmocka_unit_test(test_lines_one_byte),
        cmocka_unit_test(test_pipes_and_read),
        cmocka_unit_test(test_input_waiting),
        cmocka_unit_test(test_big_writes),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_flush_before_read),
        cmocka_unit_test(test_write_to_closed),
        cmocka_unit_test(test_sendfile_small),
        cmocka_unit_test(test_sendfile_big),
        cmocka_unit_test(test_shutdown),
        cmocka_unit_test(test_tls_roundtrip),
        cmocka_unit_test(test_tls_handshake_timeout),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
