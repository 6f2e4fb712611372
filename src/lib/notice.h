/*
 * notice.h - what the hold queue owes to senders: failure notices (5xx
 * from the customer, expiry, an administrator's bounce), delay warnings
 * and "relayed" success notices, made by dsn.h and submitted through
 * Postfix's sendmail.
 *
 * Who runs it: odmrd, for the messages of a session, after the customer's
 * connection is closed (notice_run_ids); odmr-queue expire (a timer) for
 * expiry, delay warnings and whatever is still on the notice list (a
 * submission that failed, a crash); odmr-queue bounce.
 *
 * Every step is safe to repeat and to run from several processes at once:
 * a queue file is handled under its own lock, the recipients a notice
 * covers are marked ('B' or 'D') only after sendmail accepted it, and the
 * ID leaves the notice list only after those marks are on disk (queue.h,
 * NOTICES). A failed submission keeps everything as it was; a crash
 * between submission and marks sends the notice once more.
 *
 * Log lines, in Postfix's shape:
 *     ID: to=<r>, relay=none, delay=D, delays=D/0/0/0, dsn=4.4.7, status=expired, returned to sender (text)
 *     ID: sender non-delivery notification: NEWID
 *     ID: sender delay notification: NEWID
 *     ID: sender delivery status notification: NEWID
 */
#ifndef ODMR_NOTICE_H
#define ODMR_NOTICE_H

#include "queue.h"

typedef struct {
    unsigned long notices;     /* notices submitted */
    unsigned long failures;    /* submissions that failed (kept for later) */
    unsigned long expired;     /* messages expired */
    unsigned long warned;      /* delay warnings submitted */
    unsigned long busy;        /* messages skipped: a domain was being flushed */
    unsigned long bounced;     /* messages returned by notice_bounce() */
} NOTICE_STATS;

/* Send what the queue file owes ('F' recipients: failure or expiry notice;
 * 'S': relayed notice), then settle it (queue_file_settle). A file that is
 * gone owes nothing (taken off the list). 0, or -1 with *error_r (a
 * failed submission: the event stays pending). now: epoch seconds. */
int notice_run_file(QUEUE *q, const char *id, long now, NOTICE_STATS *st, char **error_r);

/* notice_run_file for each ID, then queue_sync. Failures are logged and
 * counted; returns -1 with *error_r (the first) when any failed. */
int notice_run_ids(QUEUE *q, char *const *ids, size_t count, long now, NOTICE_STATS *st,
                   char **error_r);

/* Expiry (maximal_queue_lifetime), delay warnings (delay_warning_time),
 * then every ID on the notice list. Cost when nothing is due: O(domains).
 * Messages whose domain is being flushed are skipped until the next run.
 * 0, or -1 with *error_r when something stays pending. */
int notice_expire(QUEUE *q, long now, NOTICE_STATS *st, char **error_r);

/* Return a message to its sender now: every queued recipient fails
 * (5.0.0, "returned to sender by the administrator") and the notice goes
 * out. 0; -1 with *error_r and errno ENOENT (no such message), EAGAIN (a
 * domain stays locked by a flush) or another errno. */
int notice_bounce(QUEUE *q, const char *id, long now, NOTICE_STATS *st, char **error_r);

#endif
