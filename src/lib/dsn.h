/*
 * dsn.h - delivery status notifications (RFC 3461, 3464, 6522): compose
 * one notice for one message and one event, and submit it through
 * Postfix's sendmail(1).
 *
 * SHAPE (follows Postfix's bounce(8) output)
 *     From: MAILER-DAEMON@$myhostname (Mail Delivery System)
 *     Subject: Undelivered Mail Returned to Sender     (failed, expired)
 *              Delayed Mail (still being retried)      (delayed)
 *              Successful Mail Delivery Report         (relayed)
 *     To: the original sender; Date; Message-Id; Auto-Submitted: auto-replied
 *     Content-Type: multipart/report; report-type=delivery-status
 *       1. text/plain: readable report; one paragraph per recipient with
 *          the customer host's reply
 *       2. message/delivery-status (message/global-delivery-status for an
 *          SMTPUTF8 message, RFC 6533): Reporting-MTA, Original-Envelope-Id,
 *          X-Odmr-Queue-ID, X-Odmr-Sender, Arrival-Date; per recipient
 *          Final-Recipient, Original-Recipient, Action, Status, Remote-MTA,
 *          Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until (delayed)
 *       3. the message (message/rfc822, or message/global) or its headers
 *          (text/rfc822-headers, or message/global-headers). As Postfix:
 *          failures return what RET asked for (FULL without RET); delay
 *          warnings and success reports return the headers only; a message
 *          larger than bounce_size_limit returns its headers only (it is
 *          never cut in the middle: that would break its MIME structure).
 * Lines end in LF (sendmail's input). Text from the customer (replies) is
 * cleaned: control characters become spaces, non-ASCII bytes '?'; long
 * fields are folded at spaces.
 *
 * The MIME structure is written by hand rather than with GMime: it is a
 * fixed structure of output only (nothing is parsed), the original is
 * streamed from the queue file within a fixed buffer, and the daemons that
 * link this library stay free of GLib.
 */
#ifndef ODMR_DSN_H
#define ODMR_DSN_H

#include <stddef.h>

#include "queue.h"

typedef enum {
    DSN_EVENT_FAILED,  /* permanent failure (5xx from the customer, ...) */
    DSN_EVENT_DELAYED, /* delay warning: still held, will be retried */
    DSN_EVENT_RELAYED, /* NOTIFY=SUCCESS to a customer without DSN support */
    DSN_EVENT_EXPIRED, /* a failure: held longer than maximal_queue_lifetime */
} DSN_EVENT;

typedef struct {
    size_t rcpt;            /* index into env->rcpt */
    const char *status;     /* enhanced status "5.1.1"; NULL: 5.0.0 failed,
                             * 4.4.7 expired, 4.0.0 delayed, 2.0.0 relayed.
                             * On expiry Postfix reports each recipient's
                             * last deferral (status and text; it has no
                             * code of its own); 4.4.7 is RFC 3463's
                             * "delivery time expired" for a recipient that
                             * was never tried */
    const char *diag;       /* the remote reply "550 5.1.1 <x@y>: user unknown"
                             * (Diagnostic-Code: smtp; ...) or NULL */
    const char *remote_mta; /* the customer's host name or [addr]
                             * (Remote-MTA: dns; ...) or NULL */
    const char *text;       /* human text for part 1: "host X[1.2.3.4] said:
                             * 550 ... (in reply to RCPT TO command)"; NULL:
                             * the diag, else a text for the event. Also the
                             * Diagnostic-Code (X-Odmr; text) when diag is NULL */
    long last_attempt;      /* epoch seconds, 0 = none (no Last-Attempt-Date) */
} DSN_RCPT;

typedef struct {
    DSN_EVENT event;
    const char *myhostname;      /* Reporting-MTA: dns; ..., From: MAILER-DAEMON@... */
    const char *message_id;      /* the notice's own Message-ID, without <> */
    long now;                    /* Date: */
    long will_retry_until;       /* DELAYED only: Will-Retry-Until, 0 = none */
    long long bounce_size_limit; /* return the message in full only when its
                                  * size is at most this many bytes (Postfix's
                                  * bounce_size_limit; > 0) */
} DSN_REPORT;

/* Size of the reads from the queue file (exposed for tests that place
 * line ends and dots across read edges). */
#define DSN_READ_CHUNK 8192

/* Does recipient rcpt of env want a notice of this event? RFC 3461 NOTIFY,
 * per recipient: SUCCESS -> relayed, FAILURE -> failed and expired, DELAY
 * -> delayed; NEVER -> none; no NOTIFY -> Postfix's default (failed,
 * expired and delayed, not relayed). Never for the null sender, nor for an
 * index out of range. 1 or 0. */
int dsn_wanted(const QUEUE_ENV *env, size_t rcpt, DSN_EVENT event);

/* Write the whole notice (an RFC 5322 message with LF line ends) to
 * out_fd: one notice of rep->event covering the n recipients rcpts[] (the
 * caller picks those that dsn_wanted()). The original message is read
 * with pread(2) from content_fd at env->content_offset, length
 * env->content_length: the queue file's SMTP wire form (CRLF lines,
 * dot-stuffed, ending with ".\r\n"), which is turned back into the message
 * (dots unstuffed, LF line ends). content_fd < 0: the message is reported
 * unavailable. The MIME boundary is checked against every line of the
 * returned content and every text of the report.
 * 0, or -1 with *error_r (malloc'd): bad arguments (no recipients, an
 * index out of range, the null sender), a read error or a damaged content
 * range, a write error. */
int dsn_write(int out_fd, const QUEUE_ENV *env, int content_fd, const DSN_REPORT *rep,
              const DSN_RCPT *rcpts, size_t n, char **error_r);

/* Submit a notice through Postfix: fork and exec (no shell) sendmail_path,
 * split on white space (it may carry options: "/usr/sbin/sendmail -C
 * /etc/postfix-x"; the program must be an absolute path), with
 *     -i -f "" [-B 8BITMIME] -- SENDER
 * (null envelope sender: Postfix's sendmail takes the empty string as
 * <>; -B 8BITMIME when the notice holds 8-bit bytes), the notice on its
 * stdin (msg_fd, read from offset 0; it is scanned for 8-bit bytes first).
 * The child gets /dev/null as stdout, a pipe as stderr (read into the
 * error text; nothing reaches our fd 2, which in odmrd is the customer's
 * socket), no other descriptor of ours, its own process group, and the
 * environment PATH plus MAIL_CONFIG when set. The child must exit within
 * timeout_sec seconds; after that its process group is killed.
 * 0 when sendmail exited 0; -1 with *error_r otherwise ("sendmail exited
 * 75 (EX_TEMPFAIL): its stderr text", "... did not finish within N
 * seconds", "... killed by signal N"): the caller keeps the event pending
 * and retries later. The null sender is refused (-1): no notice ever goes
 * to <>. */
int dsn_submit(const char *sendmail_path, const char *sender, int msg_fd, int timeout_sec,
               char **error_r);

#endif
