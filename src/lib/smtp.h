/*
 * smtp.h - SMTP/LMTP text: commands, paths and ESMTP parameters, xtext,
 * replies (parse and format), dot-stuffing and line-end conversion.
 *
 * Pure functions over buffers: no I/O except smtp_reply_send(), which writes
 * to a STREAM. Every parser has a fuzz target (tests/fuzz/).
 */
#ifndef ODMR_SMTP_H
#define ODMR_SMTP_H

#include <stddef.h>

#include "stream.h"
#include "util.h"

/* ---- commands ---------------------------------------------------------- */

#define SMTP_VERB_MAX 16
#define SMTP_ADDR_MAX 512 /* RFC 5321: 64 + 1 + 255, with room for quoting */
#define SMTP_PARAM_MAX 16  /* ESMTP parameters per MAIL/RCPT */

typedef struct {
    char verb[SMTP_VERB_MAX + 1]; /* upper-cased; "" when the line is empty */
    const char *args;             /* points into the line: after the verb and
                                   * one or more spaces; "" when none */
} SMTP_CMD;

/* Split a command line (NUL-terminated, line end already removed) into verb
 * and arguments. -1 when the verb is longer than SMTP_VERB_MAX or has a
 * byte that is not a letter or digit, or the line has a NUL/CR/LF inside
 * (len tells the true length). */
int smtp_cmd_split(const char *line, size_t len, SMTP_CMD *cmd);

typedef struct {
    char name[32];    /* upper-cased, e.g. "SIZE", "NOTIFY", "ORCPT" */
    char *value;      /* points into the caller's copy of the arguments; NULL
                       * when the parameter has no "=value" */
} SMTP_PARAM;

typedef struct {
    char addr[SMTP_ADDR_MAX + 1]; /* without <>; "" for the null path <> */
    SMTP_PARAM param[SMTP_PARAM_MAX];
    int nparam;
} SMTP_PATH;

/* Parse "FROM:<addr> PARAM=VALUE ..." (keyword "FROM" or "TO", case
 * insensitive, optional space after the colon as many clients send it).
 * args is modified in place (parameter values point into it). Quoted local
 * parts are kept as sent; a source route "<@a,@b:user@host>" is stripped;
 * "<>" is allowed only when allow_null. Returns 0, or -1 with *why_r set to
 * a static text suitable for a 501 reply ("5.5.4 Syntax: MAIL FROM:<address>"
 * style strings without the code). */
int smtp_path_parse(char *args, const char *keyword, int allow_null, SMTP_PATH *path,
                    const char **why_r);

/* First parameter of that name, or NULL. */
const SMTP_PARAM *smtp_path_param(const SMTP_PATH *path, const char *name);

/* ---- xtext (RFC 3461 section 4) ------------------------------------------ */

/* 1 when s is well-formed xtext ("+XX" hex with upper-case digits, no
 * chars outside '!'..'~' except '+' and '='), else 0. */
int xtext_valid(const char *s);
/* Decode into out (size bytes with NUL); -1 on bad xtext or when it does
 * not fit. Returns decoded length. */
int xtext_decode(const char *in, char *out, size_t size);
/* Encode into out; -1 when it does not fit. Returns length. */
int xtext_encode(const char *in, size_t len, char *out, size_t size);

/* ---- replies ------------------------------------------------------------- */

#define SMTP_REPLY_MAX 4096 /* total text kept of one (multi-line) reply */

typedef struct {
    int code;            /* 3 digits, 0 when none yet */
    char enh[16];        /* enhanced status code "2.1.5", or "" */
    char text[SMTP_REPLY_MAX]; /* lines joined with "\n", without code and
                          * separator; cut (not overflowed) when longer */
    int nlines;
    int done;            /* the last line ("250 ..." with a space) was seen */
} SMTP_REPLY;

void smtp_reply_init(SMTP_REPLY *r);
/* Feed one reply line (line end removed). Returns 1 when the reply is
 * complete, 0 when more lines follow, -1 when the line is malformed (no
 * 3-digit code, code changes between lines, bad separator). */
int smtp_reply_feed(SMTP_REPLY *r, const char *line, size_t len);

/* Read a whole reply from a stream (lines up to 'line_max' bytes; longer
 * lines are cut, not an error). Returns 0, or STREAM_EOF/TIMEOUT/ERROR, or
 * -10 for a malformed reply. */
#define SMTP_REPLY_MALFORMED (-10)
int smtp_reply_read(STREAM *s, SMTP_REPLY *r);

/* As smtp_reply_read(), and each(ctx, r, text, len) is called for every
 * line as it arrives (r->nlines counts it already; text is the line after
 * the code and separator, cut at the line limit like the line), so that a
 * reply whose whole text would not fit in r->text (an EHLO reply with
 * long lines before its keywords) can still be read line by line. */
typedef void (*SMTP_REPLY_LINE_FN)(void *ctx, const SMTP_REPLY *r, const char *text, size_t len);
int smtp_reply_read_each(STREAM *s, SMTP_REPLY *r, SMTP_REPLY_LINE_FN each, void *ctx);

/* The reply as one log-friendly line: "250 2.0.0 Ok: queued as X" (first
 * line, cleaned, cut to fit). */
const char *smtp_reply_summary(const SMTP_REPLY *r, char *buf, size_t size);

/* Send "CODE ENH text\r\n" (enh may be NULL or ""). Multi-line replies: use
 * smtp_reply_send_line with last = 0 for all lines but the last. Does not
 * flush. 0 or -1. */
int smtp_reply_send(STREAM *s, int code, const char *enh, const char *fmt, ...)
    ODMR_PRINTF(4, 5);
int smtp_reply_send_line(STREAM *s, int code, int last, const char *text);

/* ---- message content ----------------------------------------------------- */

/* Convert raw message text (LF or CRLF line ends, as from a file or a pipe)
 * into SMTP wire form: CRLF line ends, a '.' added before every line that
 * starts with '.'. Streaming: feed any chunking; call finish at the end,
 * which terminates a last line that has no line end (no final "." line is
 * added: the caller writes ".\r\n"). */
typedef struct {
    int at_line_start; /* next byte starts a line */
    int pending_cr;    /* a CR was seen, waiting for the next byte */
} SMTP_STUFF;

void smtp_stuff_init(SMTP_STUFF *st);
/* Writes the converted form of in[0..len) through out(ctx, buf, n); returns
 * 0 or the first non-zero out() result. */
int smtp_stuff_feed(SMTP_STUFF *st, const char *in, size_t len,
                    int (*out)(void *ctx, const char *buf, size_t n), void *ctx);
int smtp_stuff_finish(SMTP_STUFF *st, int (*out)(void *ctx, const char *buf, size_t n),
                      void *ctx);

#endif
