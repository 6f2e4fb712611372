/*
 * stream.h - buffered line I/O over a file descriptor, plain or TLS.
 *
 * One type for every network conversation. The rest of the code never sees
 * TLS: after stream_tls_server()/stream_tls_client() the same calls go
 * through OpenSSL.
 *
 * Deadlines: every wait (poll) is bounded by the per-call timeout
 * (stream_set_timeout, milliseconds) and by the session deadline
 * (stream_set_deadline, absolute now_ms() value; 0 = none), whichever comes
 * first. A wait that runs out sets the sticky TIMEOUT flag.
 * The per-call timeout defaults to 300000 ms (Postfix's smtp timeouts);
 * 0 or less means none.
 * Errors are sticky: after STREAM_ERROR/STREAM_TIMEOUT/STREAM_EOF every
 * later read returns the same (EOF only once the buffered input is used
 * up). After ERROR/TIMEOUT every write fails; after EOF writes are still
 * attempted, because a peer that half-closed may still read our reply.
 *
 * SIGPIPE: sockets are written with send(MSG_NOSIGNAL), but other fds
 * (pipes) with write(2), sendfile(2) has no such flag and OpenSSL's socket
 * BIO writes with write(2): every program must ignore SIGPIPE itself.
 *
 * Flush before every read: a read that must wait for input first writes
 * out whatever is buffered for output.
 *
 * Output is buffered (8 KiB); input buffer is 16 KiB. Neither grows.
 */
#ifndef ODMR_STREAM_H
#define ODMR_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

typedef struct stream STREAM;

/* Results of stream_get_line() */
#define STREAM_OK 0        /* a line or part of one was returned */
#define STREAM_EOF (-1)    /* the peer closed (no partial line left) */
#define STREAM_TIMEOUT (-2)
#define STREAM_ERROR (-3)  /* I/O or TLS error */

/* Flags from stream_get_line() describing how the returned bytes ended */
#define STREAM_LINE_CRLF 1    /* ended with CR LF (both removed) */
#define STREAM_LINE_LF 2      /* ended with a bare LF (removed) */
#define STREAM_LINE_PARTIAL 4 /* buffer full: no line end yet, more follows */
#define STREAM_LINE_EOF 8     /* last bytes before EOF without a line end */

/* rfd and wfd may be the same (a socket) or differ (pipes, tests). The
 * stream does not own the fds unless stream_close is told so. */
STREAM *stream_open(int rfd, int wfd);
/* close_fds: also close(2) the descriptors. Shuts TLS down politely. */
void stream_close(STREAM **sp, int close_fds);
/* End our side of the conversation and keep the stream: pending output,
 * the TLS close_notify, then shutdown(SHUT_WR) when wfd is a socket (the
 * peer reads EOF). Reads go on; a write after it fails and fails the
 * stream (reads then fail too). A second call, and stream_close() after
 * it, send nothing more. 0, or -1 when the pending output could not be
 * sent. */
int stream_shutdown(STREAM *s);

void stream_set_timeout(STREAM *s, int timeout_ms);
void stream_set_deadline(STREAM *s, int64_t deadline_ms);

/* Read one line into buf (size bytes incl. the NUL it adds). Returns
 * STREAM_OK with *len_r bytes (line end removed, NUL-terminated) and *flags_r
 * telling how it ended; a line longer than size-1 comes back in pieces marked
 * STREAM_LINE_PARTIAL. buf may contain NUL bytes: use *len_r. */
int stream_get_line(STREAM *s, char *buf, size_t size, size_t *len_r, int *flags_r);

/* Read exactly up to len bytes that are already buffered or arrive (at least
 * one); returns count, or STREAM_EOF/TIMEOUT/ERROR. */
ssize_t stream_read(STREAM *s, void *buf, size_t len);

/* The buffered input, without copying: *ptr_r and the count of bytes
 * (at least one; the fd is read when nothing is buffered), or
 * STREAM_EOF/TIMEOUT/ERROR. The bytes stay buffered until stream_skip()
 * consumes them (n at most the count returned). */
ssize_t stream_peek(STREAM *s, const void **ptr_r);
void stream_skip(STREAM *s, size_t n);

/* Bytes already read from the fd (or TLS) but not yet returned. */
size_t stream_pending(const STREAM *s);
/* 1 when the peer has sent bytes not read yet: buffered here, decrypted
 * and waiting in OpenSSL, or (plain) waiting in the kernel's socket or
 * pipe buffer (FIONREAD; an end of file is not input). Does not wait and
 * reads nothing. Through TLS, bytes in the kernel are not counted: they
 * may be a record that carries no data (a session ticket). For a client
 * that owes no reply at that moment, 1 means the peer is out of step. */
int stream_input_waiting(const STREAM *s);
/* Throw away buffered input (STARTTLS: nothing read before the handshake
 * may be used afterwards). Returns how many bytes were dropped. */
size_t stream_discard_input(STREAM *s);

/* Buffered writes; 0 or -1 (sticky error). */
int stream_write(STREAM *s, const void *buf, size_t len);
int stream_puts(STREAM *s, const char *str);
int stream_printf(STREAM *s, const char *fmt, ...) ODMR_PRINTF(2, 3);
int stream_flush(STREAM *s);

/* Send len bytes of file fd from offset off: sendfile(2) on a plain socket,
 * pread + write through TLS. Flushes buffered output first. 0 or -1. */
int stream_sendfile(STREAM *s, int fd, off_t off, size_t len);

int stream_is_eof(const STREAM *s);
int stream_is_timeout(const STREAM *s);
int stream_is_error(const STREAM *s);
/* Any of the three. */
int stream_failed(const STREAM *s);
/* Human-readable reason of the sticky failure ("timeout", "lost connection",
 * "TLS error: ..."), or "" when none. */
const char *stream_error_text(const STREAM *s);

/* TLS (OpenSSL). ctx is an SSL_CTX * (void * to keep OpenSSL out of this
 * header). Discards buffered input first. Returns 0 or -1 (reason in
 * stream_error_text). */
int stream_tls_server(STREAM *s, void *ssl_ctx);
int stream_tls_client(STREAM *s, void *ssl_ctx, const char *servername);
int stream_tls_active(const STREAM *s);
/* The SSL * of an active TLS stream, or NULL. */
void *stream_tls_ssl(const STREAM *s);
/* "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)" or "" */
const char *stream_tls_info(const STREAM *s);

/* Counters (bytes read from / written to the fd). */
uint64_t stream_bytes_in(const STREAM *s);
uint64_t stream_bytes_out(const STREAM *s);

#endif
