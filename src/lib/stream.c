/*
 * stream.c - buffered line I/O over a plain fd or OpenSSL; see stream.h.
 *
 * Every wait goes through stream_wait(), which is the one place where the
 * per-call timeout and the session deadline are applied. I/O is attempted
 * without blocking first and only waits on EAGAIN, so a slow or silent peer
 * can never hold us past a deadline: sockets use MSG_DONTWAIT, TLS puts the
 * fd in O_NONBLOCK mode (OpenSSL may need several reads per record), and
 * other fds (pipes) are polled before each read(2)/write(2).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "log.h"
#include "stream.h"
#include "util.h"

#define STREAM_INBUF 16384
#define STREAM_OUTBUF 8192
#define STREAM_DEFAULT_TIMEOUT_MS 300000

#define STREAM_F_EOF 1
#define STREAM_F_TIMEOUT 2
#define STREAM_F_ERROR 4
#define STREAM_F_SHUT 8 /* stream_shutdown: our side is closed */

/* Result of one raw I/O attempt that did not move data. */
#define RAW_AGAIN (-1) /* would block: wait for s->want_events and retry */
#define RAW_FAIL (-2)  /* sticky failure already recorded */
#define RAW_EOF (-3)   /* peer closed (reads only) */

struct stream {
    int rfd;
    int wfd;
    int rsock;          /* rfd is a socket: recv(MSG_DONTWAIT) works */
    int wsock;          /* wfd is a socket: send(MSG_NOSIGNAL) works */
    int timeout_ms;     /* per wait; <= 0 means none */
    int64_t deadline_ms; /* absolute now_ms(); 0 means none */
    int flags;          /* STREAM_F_* */
    char errtext[256];

    unsigned char in[STREAM_INBUF];
    size_t in_pos;      /* first unread byte */
    size_t in_len;      /* end of valid bytes */
    unsigned char out[STREAM_OUTBUF];
    size_t out_len;

    SSL *ssl;
    int rfl_saved;      /* fd flags before TLS set O_NONBLOCK; -1 if untouched */
    int wfl_saved;
    short want_events;  /* what the last RAW_AGAIN is waiting for */
    char tls_info[160];

    uint64_t bytes_in;
    uint64_t bytes_out;
};

static int
fd_is_socket(int fd)
{
    struct stat st;

    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

STREAM *
stream_open(int rfd, int wfd)
{
    STREAM *s = x_calloc(1, sizeof(*s));

    s->rfd = rfd;
    s->wfd = wfd;
    s->rsock = fd_is_socket(rfd);
    s->wsock = (wfd == rfd) ? s->rsock : fd_is_socket(wfd);
    s->timeout_ms = STREAM_DEFAULT_TIMEOUT_MS;
    s->rfl_saved = -1;
    s->wfl_saved = -1;
    return s;
}

void
stream_set_timeout(STREAM *s, int timeout_ms)
{
    s->timeout_ms = timeout_ms;
}

void
stream_set_deadline(STREAM *s, int64_t deadline_ms)
{
    s->deadline_ms = deadline_ms;
}

static void stream_fail(STREAM *s, int flag, const char *fmt, ...) ODMR_PRINTF(3, 4);

/* Record the first failure only: later ones are consequences of it. */
static void
stream_fail(STREAM *s, int flag, const char *fmt, ...)
{
    va_list ap;

    if (s->flags & (STREAM_F_ERROR | STREAM_F_TIMEOUT))
        return;
    s->flags |= flag;
    va_start(ap, fmt);
    /* A cut reason text is still a useful reason. */
    (void) vsnprintf(s->errtext, sizeof(s->errtext), fmt, ap);
    va_end(ap);
}

/* The OpenSSL error queue as text, for the failure reason. */
static void
stream_tls_fail(STREAM *s, const char *what, int ssl_err)
{
    unsigned long e = ERR_get_error();
    char buf[200];

    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
    } else if (ssl_err == SSL_ERROR_SYSCALL && errno != 0) {
        str_copy(buf, strerror(errno), sizeof(buf));
    } else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN) {
        str_copy(buf, "lost connection", sizeof(buf));
    } else {
        (void) str_format(buf, sizeof(buf), "SSL error %d", ssl_err);
    }
    ERR_clear_error();
    stream_fail(s, STREAM_F_ERROR, "TLS error: %s: %s", what, buf);
}

/*
 * Wait until fd is ready for events, bounded by the per-call timeout and
 * the session deadline. 0 when ready, -1 on timeout or poll failure (sticky
 * flag set).
 */
static int
stream_wait(STREAM *s, int fd, short events)
{
    int64_t start = now_ms();

    for (;;) {
        int64_t now = now_ms(), limit = 0;
        int bounded = 0;
        struct pollfd pfd;
        int n;

        if (s->timeout_ms > 0) {
            limit = start + s->timeout_ms - now;
            bounded = 1;
        }
        if (s->deadline_ms > 0) {
            int64_t left = s->deadline_ms - now;

            if (!bounded || left < limit)
                limit = left;
            bounded = 1;
        }
        if (bounded && limit <= 0) {
            stream_fail(s, STREAM_F_TIMEOUT, "timeout");
            return -1;
        }
        if (!bounded)
            limit = -1;
        else if (limit > INT_MAX)
            limit = INT_MAX;
        pfd.fd = fd;
        pfd.events = events;
        pfd.revents = 0;
        n = poll(&pfd, 1, (int) limit);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            stream_fail(s, STREAM_F_ERROR, "poll error: %s", strerror(errno));
            return -1;
        }
        if (n == 0)
            continue; /* the top of the loop decides whether time is up */
        if (pfd.revents & POLLNVAL) {
            stream_fail(s, STREAM_F_ERROR, "poll error: bad file descriptor");
            return -1;
        }
        /* POLLHUP/POLLERR: the next read or write reports what happened. */
        return 0;
    }
}

/* Is fd ready right now? Used for fds where a plain read/write may block. */
static int
fd_ready_now(int fd, short events)
{
    struct pollfd pfd = {.fd = fd, .events = events, .revents = 0};
    int n;

    do {
        n = poll(&pfd, 1, 0);
    } while (n < 0 && errno == EINTR);
    return n > 0;
}

/* One non-blocking read attempt: bytes read, or RAW_AGAIN/RAW_EOF/RAW_FAIL. */
static ssize_t
raw_read(STREAM *s, void *buf, size_t len)
{
    ssize_t n;

    if (s->ssl) {
        int ret, err;

        ERR_clear_error();
        ret = SSL_read(s->ssl, buf, len > INT_MAX ? INT_MAX : (int) len);
        if (ret > 0)
            return ret;
        err = SSL_get_error(s->ssl, ret);
        switch (err) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
            s->want_events = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
            return RAW_AGAIN;
        case SSL_ERROR_ZERO_RETURN:
            return RAW_EOF;
        default:
            stream_tls_fail(s, "read", err);
            return RAW_FAIL;
        }
    }
    s->want_events = POLLIN;
    for (;;) {
        if (s->rsock) {
            n = recv(s->rfd, buf, len, MSG_DONTWAIT);
        } else {
            if (!fd_ready_now(s->rfd, POLLIN))
                return RAW_AGAIN;
            n = read(s->rfd, buf, len);
        }
        if (n > 0)
            return n;
        if (n == 0)
            return RAW_EOF;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return RAW_AGAIN;
        if (errno == ECONNRESET) {
            stream_fail(s, STREAM_F_ERROR, "lost connection (connection reset)");
            return RAW_FAIL;
        }
        stream_fail(s, STREAM_F_ERROR, "read error: %s", strerror(errno));
        return RAW_FAIL;
    }
}

/* One non-blocking write attempt: bytes written, or RAW_AGAIN/RAW_FAIL. */
static ssize_t
raw_write(STREAM *s, const void *buf, size_t len)
{
    ssize_t n;

    if (s->ssl) {
        int ret, err;

        ERR_clear_error();
        ret = SSL_write(s->ssl, buf, len > INT_MAX ? INT_MAX : (int) len);
        if (ret > 0)
            return ret;
        err = SSL_get_error(s->ssl, ret);
        switch (err) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
            s->want_events = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
            return RAW_AGAIN;
        default:
            stream_tls_fail(s, "write", err);
            return RAW_FAIL;
        }
    }
    s->want_events = POLLOUT;
    for (;;) {
        if (s->wsock) {
            n = send(s->wfd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            if (!fd_ready_now(s->wfd, POLLOUT))
                return RAW_AGAIN;
            /* A pipe that polls writable takes PIPE_BUF bytes without blocking. */
            n = write(s->wfd, buf, len > PIPE_BUF ? PIPE_BUF : len);
        }
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return RAW_AGAIN;
        if (errno == EPIPE || errno == ECONNRESET) {
            stream_fail(s, STREAM_F_ERROR, "lost connection (%s)", strerror(errno));
            return RAW_FAIL;
        }
        stream_fail(s, STREAM_F_ERROR, "write error: %s", strerror(errno));
        return RAW_FAIL;
    }
}

/* The fd a TLS or plain wait must watch for the given direction. */
static int
wait_fd(const STREAM *s, short events)
{
    return (events & POLLIN) ? s->rfd : s->wfd;
}

/* Write out buf completely, waiting as needed. 0 or -1. */
static int
write_fully(STREAM *s, const unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = raw_write(s, buf, len);

        if (n > 0) {
            buf += n;
            len -= (size_t) n;
            s->bytes_out += (uint64_t) n;
            continue;
        }
        if (n == RAW_FAIL)
            return -1;
        if (stream_wait(s, wait_fd(s, s->want_events), s->want_events) < 0)
            return -1;
    }
    return 0;
}

int
stream_flush(STREAM *s)
{
    int ret;

    if (s->flags & (STREAM_F_ERROR | STREAM_F_TIMEOUT))
        return -1;
    if (s->out_len == 0)
        return 0;
    if (s->flags & STREAM_F_SHUT) {
        s->out_len = 0;
        stream_fail(s, STREAM_F_ERROR, "write after the connection was shut down");
        return -1;
    }
    ret = write_fully(s, s->out, s->out_len);
    s->out_len = 0;
    return ret;
}

/*
 * Read more input into the buffer (there must be room). Flushes output
 * before waiting so that the peer has our reply before we wait for its
 * next command. Returns bytes added, or STREAM_EOF/TIMEOUT/ERROR.
 */
static int
stream_fill(STREAM *s)
{
    if (s->in_pos > 0) {
        memmove(s->in, s->in + s->in_pos, s->in_len - s->in_pos);
        s->in_len -= s->in_pos;
        s->in_pos = 0;
    }
    /* A zero-length read would look like EOF: callers only fill with room. */
    if (s->in_len == sizeof(s->in))
        msg_panic("stream_fill: input buffer full");
    for (;;) {
        ssize_t n = raw_read(s, s->in + s->in_len, sizeof(s->in) - s->in_len);

        if (n > 0) {
            s->in_len += (size_t) n;
            s->bytes_in += (uint64_t) n;
            return (int) n;
        }
        if (n == RAW_EOF) {
            s->flags |= STREAM_F_EOF;
            return STREAM_EOF;
        }
        if (n == RAW_FAIL)
            break;
        if (s->out_len > 0 && stream_flush(s) < 0)
            break;
        if (stream_wait(s, wait_fd(s, s->want_events), s->want_events) < 0)
            break;
    }
    return (s->flags & STREAM_F_TIMEOUT) ? STREAM_TIMEOUT : STREAM_ERROR;
}

/* The sticky read result, or STREAM_OK when reads may proceed. */
static int
sticky_read_status(const STREAM *s)
{
    if (s->flags & STREAM_F_TIMEOUT)
        return STREAM_TIMEOUT;
    if (s->flags & STREAM_F_ERROR)
        return STREAM_ERROR;
    return STREAM_OK;
}

/* Hand out n buffered bytes as (part of) a line, skipping 'skip' line-end bytes. */
static void
take_line(STREAM *s, char *buf, size_t n, size_t skip, size_t *len_r)
{
    memcpy(buf, s->in + s->in_pos, n);
    buf[n] = 0;
    s->in_pos += n + skip;
    *len_r = n;
}

int
stream_get_line(STREAM *s, char *buf, size_t size, size_t *len_r, int *flags_r)
{
    size_t max, window;
    int ret;

    *len_r = 0;
    *flags_r = 0;
    if (size < 2)
        msg_panic("stream_get_line: buffer size %zu too small", size);
    if ((ret = sticky_read_status(s)) != STREAM_OK)
        return ret;
    max = size - 1;
    /* Content of max bytes plus CR LF is still a whole line: look that far. */
    window = max + 2 < sizeof(s->in) ? max + 2 : sizeof(s->in);

    for (;;) {
        size_t avail = s->in_len - s->in_pos;
        size_t look = avail < window ? avail : window;
        const unsigned char *lf = memchr(s->in + s->in_pos, '\n', look);

        if (lf != NULL) {
            size_t i = (size_t) (lf - (s->in + s->in_pos));
            int crlf = i > 0 && s->in[s->in_pos + i - 1] == '\r';
            size_t content = crlf ? i - 1 : i;

            if (content <= max) {
                take_line(s, buf, content, crlf ? 2 : 1, len_r);
                *flags_r = crlf ? STREAM_LINE_CRLF : STREAM_LINE_LF;
                return STREAM_OK;
            }
            take_line(s, buf, max, 0, len_r);
            *flags_r = STREAM_LINE_PARTIAL;
            return STREAM_OK;
        }
        if (avail >= window || ((s->flags & STREAM_F_EOF) && avail > max)) {
            size_t n = avail < max ? avail : max;

            /* Keep a trailing CR back when we cannot see whether LF follows. */
            if (n == avail && n > 1 && s->in[s->in_pos + n - 1] == '\r'
                && !(s->flags & STREAM_F_EOF))
                n--;
            take_line(s, buf, n, 0, len_r);
            *flags_r = STREAM_LINE_PARTIAL;
            return STREAM_OK;
        }
        if (s->flags & STREAM_F_EOF) {
            if (avail == 0)
                return STREAM_EOF;
            take_line(s, buf, avail, 0, len_r);
            *flags_r = STREAM_LINE_EOF;
            return STREAM_OK;
        }
        ret = stream_fill(s);
        if (ret < 0 && ret != STREAM_EOF)
            return ret;
    }
}

/* Buffered input for stream_read and stream_peek: STREAM_OK with at least
 * one byte buffered, or the read status (EOF, timeout, error). */
static int
stream_need_input(STREAM *s)
{
    int ret;

    if ((ret = sticky_read_status(s)) != STREAM_OK)
        return ret;
    if (s->in_pos == s->in_len) {
        if (s->flags & STREAM_F_EOF)
            return STREAM_EOF;
        if ((ret = stream_fill(s)) < 0)
            return ret;
    }
    return STREAM_OK;
}

ssize_t
stream_read(STREAM *s, void *buf, size_t len)
{
    size_t avail;
    int ret;

    if (len == 0)
        return sticky_read_status(s);
    if ((ret = stream_need_input(s)) != STREAM_OK)
        return ret;
    avail = s->in_len - s->in_pos;
    if (avail > len)
        avail = len;
    memcpy(buf, s->in + s->in_pos, avail);
    s->in_pos += avail;
    return (ssize_t) avail;
}

ssize_t
stream_peek(STREAM *s, const void **ptr_r)
{
    int ret;

    if ((ret = stream_need_input(s)) != STREAM_OK)
        return ret;
    *ptr_r = s->in + s->in_pos;
    return (ssize_t) (s->in_len - s->in_pos);
}

void
stream_skip(STREAM *s, size_t n)
{
    if (n > s->in_len - s->in_pos)
        msg_panic("stream_skip: %zu bytes, %zu buffered", n, s->in_len - s->in_pos);
    s->in_pos += n;
}

size_t
stream_pending(const STREAM *s)
{
    return s->in_len - s->in_pos;
}

int
stream_input_waiting(const STREAM *s)
{
    int n = 0;

    if (s->in_pos < s->in_len)
        return 1;
    if (s->ssl != NULL)
        return SSL_pending(s->ssl) > 0;
    return ioctl(s->rfd, FIONREAD, &n) == 0 && n > 0;
}

size_t
stream_discard_input(STREAM *s)
{
    size_t n = s->in_len - s->in_pos;

    s->in_pos = s->in_len = 0;
    return n;
}

int
stream_write(STREAM *s, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    if (s->flags & (STREAM_F_ERROR | STREAM_F_TIMEOUT))
        return -1;
    if (s->flags & STREAM_F_SHUT) {
        stream_fail(s, STREAM_F_ERROR, "write after the connection was shut down");
        return -1;
    }
    while (len > 0) {
        size_t room = sizeof(s->out) - s->out_len;

        /* A big write with nothing buffered goes out directly, no copy. */
        if (s->out_len == 0 && len >= sizeof(s->out))
            return write_fully(s, p, len);
        if (room == 0) {
            if (stream_flush(s) < 0)
                return -1;
            continue;
        }
        if (room > len)
            room = len;
        memcpy(s->out + s->out_len, p, room);
        s->out_len += room;
        p += room;
        len -= room;
    }
    return 0;
}

int
stream_puts(STREAM *s, const char *str)
{
    return stream_write(s, str, strlen(str));
}

int
stream_printf(STREAM *s, const char *fmt, ...)
{
    va_list ap;
    char small[1024];
    char *big = NULL;
    int n, ret;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t) n < sizeof(small))
        return stream_write(s, small, (size_t) n);
    /* Rare long output: format again into memory of the exact size. */
    big = x_malloc((size_t) n + 1);
    va_start(ap, fmt);
    (void) vsnprintf(big, (size_t) n + 1, fmt, ap);
    va_end(ap);
    ret = stream_write(s, big, (size_t) n);
    free(big);
    return ret;
}

/* pread + stream_write: the TLS path and the fallback for non-sockets. */
static int
sendfile_copy(STREAM *s, int fd, off_t off, size_t len)
{
    char buf[STREAM_OUTBUF];

    while (len > 0) {
        ssize_t n = pread(fd, buf, len < sizeof(buf) ? len : sizeof(buf), off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            stream_fail(s, STREAM_F_ERROR, "file read error: %s",
                        n < 0 ? strerror(errno) : "file shorter than expected");
            return -1;
        }
        if (stream_write(s, buf, (size_t) n) < 0)
            return -1;
        off += n;
        len -= (size_t) n;
    }
    return stream_flush(s);
}

int
stream_sendfile(STREAM *s, int fd, off_t off, size_t len)
{
    int saved_fl, ret = 0;

    if (stream_flush(s) < 0)
        return -1;
    if (s->flags & STREAM_F_SHUT) {
        stream_fail(s, STREAM_F_ERROR, "write after the connection was shut down");
        return -1;
    }
    if (s->ssl || !s->wsock)
        return sendfile_copy(s, fd, off, len);

    /* sendfile(2) has no MSG_DONTWAIT: make the socket non-blocking for the
     * duration so the deadline holds, and put the flags back afterwards. */
    if ((saved_fl = fcntl(s->wfd, F_GETFL)) < 0
        || (!(saved_fl & O_NONBLOCK) && fcntl(s->wfd, F_SETFL, saved_fl | O_NONBLOCK) < 0)) {
        stream_fail(s, STREAM_F_ERROR, "fcntl error: %s", strerror(errno));
        return -1;
    }
    while (len > 0) {
        size_t chunk = len > (1U << 30) ? (1U << 30) : len;
        ssize_t n = sendfile(s->wfd, fd, &off, chunk);

        if (n > 0) {
            len -= (size_t) n;
            s->bytes_out += (uint64_t) n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (stream_wait(s, s->wfd, POLLOUT) < 0) {
                ret = -1;
                break;
            }
            continue;
        }
        if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
            /* This kind of file cannot be spliced: copy the rest by hand. */
            if (!(saved_fl & O_NONBLOCK))
                (void) fcntl(s->wfd, F_SETFL, saved_fl);
            return sendfile_copy(s, fd, off, len);
        }
        if (n == 0)
            stream_fail(s, STREAM_F_ERROR, "file read error: file shorter than expected");
        else if (errno == EPIPE || errno == ECONNRESET)
            stream_fail(s, STREAM_F_ERROR, "lost connection (%s)", strerror(errno));
        else
            stream_fail(s, STREAM_F_ERROR, "sendfile error: %s", strerror(errno));
        ret = -1;
        break;
    }
    if (!(saved_fl & O_NONBLOCK))
        (void) fcntl(s->wfd, F_SETFL, saved_fl);
    return ret;
}

int
stream_is_eof(const STREAM *s)
{
    return (s->flags & STREAM_F_EOF) != 0;
}

int
stream_is_timeout(const STREAM *s)
{
    return (s->flags & STREAM_F_TIMEOUT) != 0;
}

int
stream_is_error(const STREAM *s)
{
    return (s->flags & STREAM_F_ERROR) != 0;
}

int
stream_failed(const STREAM *s)
{
    return s->flags != 0;
}

const char *
stream_error_text(const STREAM *s)
{
    if (s->flags & (STREAM_F_ERROR | STREAM_F_TIMEOUT))
        return s->errtext;
    if (s->flags & STREAM_F_EOF)
        return "lost connection";
    return "";
}

/* Put fd into O_NONBLOCK mode for OpenSSL; remember the old flags. */
static int
set_nonblock(int fd, int *saved_r)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0)
        return -1;
    if (*saved_r < 0)
        *saved_r = fl;
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    return 0;
}

static void
restore_fl(int fd, int *saved_r)
{
    if (*saved_r >= 0) {
        (void) fcntl(fd, F_SETFL, *saved_r);
        *saved_r = -1;
    }
}

static int
stream_tls_start(STREAM *s, SSL_CTX *ctx, int server, const char *servername)
{
    SSL *ssl;
    const SSL_CIPHER *cipher;
    int alg_bits = 0, bits;

    if (s->ssl != NULL) {
        stream_fail(s, STREAM_F_ERROR, "TLS error: already active");
        return -1;
    }
    /* The peer must see our "220 Ready" before it starts the handshake. */
    if (stream_flush(s) < 0)
        return -1;
    /* Anything the peer sent before the handshake came in the clear and
     * could have been injected: it must not be used afterwards. */
    (void) stream_discard_input(s);
    if (s->flags & STREAM_F_EOF) {
        stream_fail(s, STREAM_F_ERROR, "TLS error: lost connection before handshake");
        return -1;
    }
    if (set_nonblock(s->rfd, &s->rfl_saved) < 0
        || (s->wfd != s->rfd && set_nonblock(s->wfd, &s->wfl_saved) < 0)) {
        stream_fail(s, STREAM_F_ERROR, "fcntl error: %s", strerror(errno));
        return -1;
    }
    ERR_clear_error();
    if ((ssl = SSL_new(ctx)) == NULL) {
        stream_tls_fail(s, "SSL_new", SSL_ERROR_SSL);
        return -1;
    }
    if (!SSL_set_rfd(ssl, s->rfd) || !SSL_set_wfd(ssl, s->wfd)) {
        SSL_free(ssl);
        stream_tls_fail(s, "set fd", SSL_ERROR_SSL);
        return -1;
    }
    /* SMTP has its own end marker (QUIT, the final dot): a peer that closes
     * without close_notify is an ordinary EOF, not an error. */
    SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_set_mode(ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (servername != NULL && *servername != 0)
            (void) SSL_set_tlsext_host_name(ssl, servername);
    }
    s->ssl = ssl;
    for (;;) {
        int ret, err;

        ERR_clear_error();
        ret = SSL_do_handshake(ssl);
        if (ret == 1)
            break;
        err = SSL_get_error(ssl, ret);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            short ev = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;

            if (stream_wait(s, wait_fd(s, ev), ev) < 0)
                return -1;
            continue;
        }
        stream_tls_fail(s, "handshake", err);
        return -1;
    }
    cipher = SSL_get_current_cipher(ssl);
    bits = SSL_CIPHER_get_bits(cipher, &alg_bits);
    if (str_format(s->tls_info, sizeof(s->tls_info), "%s with cipher %s (%d/%d bits)",
                   SSL_get_version(ssl), SSL_CIPHER_get_name(cipher), bits, alg_bits) < 0)
        s->tls_info[sizeof(s->tls_info) - 1] = 0; /* cut text is still informative */
    return 0;
}

int
stream_tls_server(STREAM *s, void *ssl_ctx)
{
    return stream_tls_start(s, ssl_ctx, 1, NULL);
}

int
stream_tls_client(STREAM *s, void *ssl_ctx, const char *servername)
{
    return stream_tls_start(s, ssl_ctx, 0, servername);
}

int
stream_tls_active(const STREAM *s)
{
    return s->ssl != NULL && s->tls_info[0] != 0;
}

void *
stream_tls_ssl(const STREAM *s)
{
    return stream_tls_active(s) ? s->ssl : NULL;
}

const char *
stream_tls_info(const STREAM *s)
{
    return s->tls_info;
}

uint64_t
stream_bytes_in(const STREAM *s)
{
    return s->bytes_in;
}

uint64_t
stream_bytes_out(const STREAM *s)
{
    return s->bytes_out;
}

/* The TLS close_notify: best effort, one attempt (one that does not fit
 * in the socket buffer right now is not worth waiting for). */
static void
stream_tls_notify(STREAM *s)
{
    if (s->ssl != NULL && !(s->flags & (STREAM_F_ERROR | STREAM_F_TIMEOUT | STREAM_F_SHUT))
        && s->tls_info[0] != 0) {
        ERR_clear_error();
        (void) SSL_shutdown(s->ssl);
        ERR_clear_error();
    }
}

int
stream_shutdown(STREAM *s)
{
    int ret;

    if (s->flags & STREAM_F_SHUT)
        return 0;
    ret = stream_flush(s);
    stream_tls_notify(s);
    if (s->wsock)
        (void) shutdown(s->wfd, SHUT_WR);
    s->flags |= STREAM_F_SHUT;
    return ret;
}

void
stream_close(STREAM **sp, int close_fds)
{
    STREAM *s = *sp;

    if (s == NULL)
        return;
    if (!(s->flags & STREAM_F_SHUT))
        (void) stream_flush(s);
    if (s->ssl != NULL) {
        stream_tls_notify(s);
        ERR_clear_error();
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (!close_fds) {
        restore_fl(s->rfd, &s->rfl_saved);
        if (s->wfd != s->rfd)
            restore_fl(s->wfd, &s->wfl_saved);
    } else {
        if (s->rfd >= 0)
            (void) close(s->rfd);
        if (s->wfd >= 0 && s->wfd != s->rfd)
            (void) close(s->wfd);
    }
    free(s);
    *sp = NULL;
}
