/*
 * notice.c - the notices the hold queue owes to senders (see notice.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "dsn.h"
#include "log.h"
#include "notice.h"
#include "queue.h"
#include "util.h"

/* How long an expiry or an administrator's bounce waits for a domain that
 * a session is flushing: expiry does not wait (the next run comes soon),
 * a bounce from the command line waits a little. */
#define NOTICE_BOUNCE_WAIT_MS 5000

static const char *
event_name(DSN_EVENT event)
{
    switch (event) {
    case DSN_EVENT_DELAYED:
        return "sender delay notification";
    case DSN_EVENT_RELAYED:
        return "sender delivery status notification";
    default:
        return "sender non-delivery notification";
    }
}

/* "name[addr]:port" -> "name", or "addr" when the name is unknown. */
static const char *
remote_mta(char *buf, size_t size, const char *relay)
{
    const char *open, *close;

    if (relay == NULL)
        return NULL;
    open = strchr(relay, '[');
    close = open ? strchr(open, ']') : NULL;
    if (open == NULL || close == NULL) {
        str_copy(buf, relay, size);
        return buf;
    }
    if (open > relay && !(open - relay == 7 && strncmp(relay, "unknown", 7) == 0)) {
        (void) str_format(buf, size, "%.*s", (int) (open - relay), relay);
        return buf;
    }
    (void) str_format(buf, size, "%.*s", (int) (close - open - 1), open + 1);
    return buf;
}

/* Make the notice and hand it to sendmail. 0 with newid_r, or -1. */
static int
notice_submit(QUEUE_FILE *f, DSN_EVENT event, const DSN_RCPT *rcpts, size_t n, long now,
              long retry_until, char *newid_r, char **error_r)
{
    const QUEUE_ENV *env = queue_file_env(f);
    char msgid[QUEUE_ID_LEN + 300];
    DSN_REPORT rep;
    int fd, ret;

    queue_new_id(newid_r);
    (void) str_format(msgid, sizeof(msgid), "%s@%s", newid_r, var_myhostname);
    memset(&rep, 0, sizeof(rep));
    rep.event = event;
    rep.myhostname = var_myhostname;
    rep.message_id = msgid;
    rep.now = now;
    rep.will_retry_until = retry_until;
    rep.bounce_size_limit = var_bounce_size_limit;
    /* The notice is small (the returned message is cut at
     * bounce_size_limit): memory, not a file in the queue. */
    if ((fd = memfd_create("odmr-notice", MFD_CLOEXEC)) < 0) {
        *error_r = x_asprintf("memfd_create: %s", strerror(errno));
        return -1;
    }
    ret = dsn_write(fd, env, queue_file_fd(f), &rep, rcpts, n, error_r);
    if (ret == 0)
        ret = dsn_submit(var_sendmail_path, env->sender, fd, (int) var_notice_submit_timeout,
                         error_r);
    (void) close(fd);
    return ret;
}

/* One notice for the recipients idx[0..n) of the event, if any of them
 * wants it; then their marks. 0, or -1 (nothing marked). */
static int
notice_group(QUEUE_FILE *f, const QUEUE_REASON *reasons, const size_t *idx, size_t n,
             DSN_EVENT event, long now, NOTICE_STATS *st, char **error_r)
{
    const QUEUE_ENV *env = queue_file_env(f);
    DSN_RCPT *rcpts = x_calloc(n ? n : 1, sizeof(*rcpts));
    char (*mta)[256] = x_calloc(n ? n : 1, sizeof(*mta));
    char newid[QUEUE_ID_LEN + 1];
    size_t wanted = 0;

    for (size_t k = 0; k < n; k++) {
        const QUEUE_REASON *r = reasons + idx[k];
        DSN_RCPT *d;

        if (!dsn_wanted(env, idx[k], event))
            continue;
        d = rcpts + wanted++;
        d->rcpt = idx[k];
        d->status = r->dsn[0] ? r->dsn
                    : event == DSN_EVENT_RELAYED ? "2.0.0"
                    : event == DSN_EVENT_EXPIRED ? "4.4.7"
                                                 : "5.0.0";
        d->diag = r->diag;
        d->remote_mta = remote_mta(mta[k], sizeof(mta[k]), r->relay);
        d->text = r->text && r->text[0] ? r->text
                  : event == DSN_EVENT_RELAYED ? "delivered to a server without DSN support"
                                               : "undeliverable";
        /* An expired recipient may never have been tried. */
        d->last_attempt = event == DSN_EVENT_EXPIRED && r->relay == NULL ? 0 : r->time;
    }
    if (wanted > 0) {
        if (notice_submit(f, event, rcpts, wanted, now, 0, newid, error_r) < 0) {
            free(rcpts);
            free(mta);
            if (st)
                st->failures++;
            return -1;
        }
        msg_info("%s: %s: %s", env->id, event_name(event), newid);
        if (st)
            st->notices++;
        /* Tests: a crash between the submission and the marks. */
        queue_fault("after-notice");
    }
    free(rcpts);
    free(mta);
    /* Notified (or nobody wanted it): the reason lines stay as they are,
     * so odmr-queue show still tells why. */
    for (size_t k = 0; k < n; k++) {
        int was = env->rcpt[idx[k]].status;

        if (queue_file_mark_reason(f, idx[k],
                                   was == QUEUE_RCPT_SUCCESS ? QUEUE_RCPT_DELIVERED
                                                             : QUEUE_RCPT_BOUNCED,
                                   NULL, error_r) < 0)
            return -1;
    }
    return 0;
}

int
notice_run_file(QUEUE *q, const char *id, long now, NOTICE_STATS *st, char **error_r)
{
    static const DSN_EVENT events[] = {DSN_EVENT_FAILED, DSN_EVENT_EXPIRED, DSN_EVENT_RELAYED};
    QUEUE_FILE *f;
    QUEUE_REASON *reasons = NULL;
    const QUEUE_ENV *env;
    size_t *idx = NULL;
    char *error = NULL;
    int ret = 0;

    errno = 0;
    if ((f = queue_file_open(q, id, 1, &error)) == NULL) {
        if (errno == ENOENT && error == NULL) /* deleted, or settled by another runner */
            return queue_notice_remove(q, id, error_r);
        *error_r = error ? error : x_asprintf("%s: cannot open queue file", id);
        return -1;
    }
    if (queue_file_lock(f, error_r) < 0 || queue_file_reasons(f, &reasons, NULL, error_r) < 0) {
        queue_file_close(&f);
        return -1;
    }
    env = queue_file_env(f);
    idx = x_calloc(env->rcpt_count ? env->rcpt_count : 1, sizeof(*idx));
    for (size_t e = 0; e < ODMR_ARRAY_LEN(events) && ret == 0; e++) {
        size_t n = 0;

        for (size_t i = 0; i < env->rcpt_count; i++) {
            int s = env->rcpt[i].status;
            DSN_EVENT ev;

            if (s == QUEUE_RCPT_SUCCESS)
                ev = DSN_EVENT_RELAYED;
            else if (s == QUEUE_RCPT_FAILED)
                ev = reasons[i].event == QUEUE_EVENT_EXPIRED ? DSN_EVENT_EXPIRED
                                                             : DSN_EVENT_FAILED;
            else
                continue;
            if (ev == events[e])
                idx[n++] = i;
        }
        if (n > 0)
            ret = notice_group(f, reasons, idx, n, events[e], now, st, error_r);
    }
    free(idx);
    queue_reasons_free(&reasons, env->rcpt_count);
    if (ret < 0) {
        queue_file_close(&f);
        return -1;
    }
    return queue_file_settle(q, &f, error_r);
}

int
notice_run_ids(QUEUE *q, char *const *ids, size_t count, long now, NOTICE_STATS *st,
               char **error_r)
{
    char *first = NULL, *error = NULL;

    for (size_t i = 0; i < count; i++) {
        if (notice_run_file(q, ids[i], now, st, &error) < 0) {
            msg_warn("%s: notice to the sender not sent: %s; kept for the next try", ids[i],
                     error);
            if (first == NULL)
                first = error;
            else
                free(error);
            error = NULL;
        }
    }
    if (queue_sync(q, &error) < 0) {
        if (first == NULL)
            first = error;
        else
            free(error);
    }
    if (first != NULL) {
        *error_r = first;
        return -1;
    }
    return 0;
}

/* ---- failing a message: expiry and the administrator's bounce ----------- */

static int
str_ptr_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * Every queued recipient of the message fails with the given event, under
 * the locks of their domains (so no flush is sending it meanwhile), and
 * the domains are done with it; then its notice goes out. 0; -1 with
 * errno ENOENT (gone), EAGAIN (a domain is being flushed) or another.
 */
static int
notice_fail_message(QUEUE *q, const char *id, int event, const char *dsn, const char *why,
                    long now, int wait_ms, NOTICE_STATS *st, char **error_r)
{
    QUEUE_FILE *f;
    const QUEUE_ENV *env;
    QUEUE_REASON *reasons = NULL;
    char **domains = NULL, *error = NULL;
    size_t nd = 0, nr = 0, locked = 0, marked = 0;
    int *locks = NULL, ret = 0, saved = 0;

    errno = 0;
    if ((f = queue_file_open(q, id, 1, &error)) == NULL) {
        saved = errno ? errno : EIO;
        *error_r = error ? error : x_asprintf("%s: no such message", id);
        errno = saved;
        return -1;
    }
    /* Sorted: two runners lock overlapping sets in one order. */
    nd = queue_env_domains(queue_file_env(f), 1, &domains);
    if (nd > 1)
        qsort(domains, nd, sizeof(*domains), str_ptr_cmp);
    locks = x_calloc(nd + 1, sizeof(*locks));
    for (locked = 0; locked < nd; locked++) {
        if ((locks[locked] = queue_lock_domain(q, domains[locked], wait_ms, error_r)) < 0) {
            saved = errno;
            ret = -1;
            goto out;
        }
    }
    if (queue_file_lock(f, error_r) < 0 || queue_file_reasons(f, &reasons, NULL, error_r) < 0) {
        saved = errno ? errno : EIO;
        ret = -1;
        goto out;
    }
    env = queue_file_env(f);
    nr = env->rcpt_count;
    for (size_t i = 0; i < env->rcpt_count; i++) {
        QUEUE_REASON r;
        char d_all[32], clean[LOG_CLEAN_BUFSIZE], text[600];
        const QUEUE_REASON *last = reasons + i;

        if (env->rcpt[i].status != QUEUE_RCPT_QUEUED)
            continue;
        /* An expired recipient's notice tells the last reason it waited
         * for, when there was one (as Postfix's do). */
        if (last->event == QUEUE_EVENT_DEFERRED && last->text && last->text[0])
            (void) str_format(text, sizeof(text), "%s; last attempt: %s", why, last->text);
        else
            str_copy(text, why, sizeof(text));
        memset(&r, 0, sizeof(r));
        r.event = event;
        r.time = now;
        str_copy(r.dsn, dsn, sizeof(r.dsn));
        if (last->event == QUEUE_EVENT_DEFERRED) {
            r.relay = last->relay;
            r.diag = last->diag;
        }
        r.text = text;
        if (queue_file_mark_reason(f, i, QUEUE_RCPT_FAILED, &r, error_r) < 0) {
            saved = errno ? errno : EIO;
            ret = -1;
            goto out;
        }
        marked++;
        delay_format(d_all, sizeof(d_all), ((int64_t) now - env->arrival_sec) * 1000);
        msg_info("%s: to=<%s>, relay=none, delay=%s, delays=%s/0/0/0, dsn=%s, status=%s (%s)",
                 env->id,
                 log_clean(clean, sizeof(clean), env->rcpt[i].address,
                           strlen(env->rcpt[i].address)),
                 d_all, d_all, dsn,
                 event == QUEUE_EVENT_EXPIRED ? "expired, returned to sender" : "bounced", text);
    }
    queue_file_close(&f);
    /* Each domain is done with the file: its index entry goes and the ID
     * goes on the notice list, in one transaction (queue.h, NOTICES). */
    for (size_t j = 0; j < nd && marked > 0; j++) {
        if ((f = queue_file_open(q, id, 1, &error)) == NULL) {
            x_free(&error);
            break; /* settled meanwhile */
        }
        if (queue_file_done(q, &f, domains[j], error_r) < 0) {
            saved = errno ? errno : EIO;
            ret = -1;
            goto out;
        }
    }
    if (queue_sync(q, error_r) < 0) {
        saved = errno ? errno : EIO;
        ret = -1;
        goto out;
    }
out:
    if (f != NULL)
        queue_file_close(&f);
    queue_reasons_free(&reasons, nr);
    for (size_t j = 0; j < locked; j++)
        queue_unlock_domain(locks[j]);
    free(locks);
    queue_strings_free(&domains, nd);
    if (ret < 0) {
        errno = saved;
        return -1;
    }
    if (marked > 0 && st != NULL) {
        if (event == QUEUE_EVENT_EXPIRED)
            st->expired++;
        else
            st->bounced++;
    }
    return notice_run_file(q, id, now, st, error_r);
}

int
notice_bounce(QUEUE *q, const char *id, long now, NOTICE_STATS *st, char **error_r)
{
    return notice_fail_message(q, id, QUEUE_EVENT_FAILED, "5.0.0",
                               "returned to sender by the administrator", now,
                               NOTICE_BOUNCE_WAIT_MS, st, error_r);
}

/* ---- delay warnings ------------------------------------------------------- */

/* The delay warning for a message, once: 0 (sent, not wanted, or sent
 * before), or -1 (submission failed: try again on the next run). */
static int
notice_warn_message(QUEUE *q, const char *id, long now, NOTICE_STATS *st, char **error_r)
{
    QUEUE_FILE *f;
    QUEUE_REASON *reasons = NULL;
    const QUEUE_ENV *env;
    DSN_RCPT *rcpts;
    char (*mta)[256];
    char *error = NULL, newid[QUEUE_ID_LEN + 1];
    size_t n = 0, nr;
    int warned = 0, ret = 0;

    errno = 0;
    if ((f = queue_file_open(q, id, 1, &error)) == NULL) {
        if (errno == ENOENT && error == NULL)
            return 0; /* collected meanwhile */
        *error_r = error ? error : x_asprintf("%s: cannot open queue file", id);
        return -1;
    }
    /* Under the file's lock: two runners cannot both warn. */
    if (queue_file_lock(f, error_r) < 0 || queue_file_reasons(f, &reasons, &warned, error_r) < 0) {
        queue_file_close(&f);
        return -1;
    }
    env = queue_file_env(f);
    nr = env->rcpt_count;
    if (warned) {
        queue_reasons_free(&reasons, nr);
        queue_file_close(&f);
        return 0;
    }
    rcpts = x_calloc(nr ? nr : 1, sizeof(*rcpts));
    mta = x_calloc(nr ? nr : 1, sizeof(*mta));
    for (size_t i = 0; i < nr; i++) {
        const QUEUE_REASON *r = reasons + i;
        DSN_RCPT *d;

        if (env->rcpt[i].status != QUEUE_RCPT_QUEUED || !dsn_wanted(env, i, DSN_EVENT_DELAYED))
            continue;
        d = rcpts + n++;
        d->rcpt = i;
        if (r->event == QUEUE_EVENT_DEFERRED) {
            d->status = r->dsn[0] ? r->dsn : "4.0.0";
            d->diag = r->diag;
            d->remote_mta = remote_mta(mta[i], sizeof(mta[i]), r->relay);
            d->text = r->text;
            d->last_attempt = r->time;
        } else {
            /* Never tried: the customer has not connected to collect it. */
            d->status = "4.4.1";
            d->text = "the customer has not collected the mail yet (on-demand relay)";
        }
    }
    if (n > 0) {
        ret = notice_submit(f, DSN_EVENT_DELAYED, rcpts, n, now,
                            env->arrival_sec + var_maximal_queue_lifetime, newid, error_r);
        if (ret == 0) {
            msg_info("%s: %s: %s", env->id, event_name(DSN_EVENT_DELAYED), newid);
            if (st) {
                st->warned++;
                st->notices++;
            }
        } else if (st) {
            st->failures++;
        }
    }
    /* Sent, or nobody wanted one: either way, not again. */
    if (ret == 0)
        ret = queue_file_set_warned(f, error_r);
    free(rcpts);
    free(mta);
    queue_reasons_free(&reasons, nr);
    queue_file_close(&f);
    return ret;
}

/* ---- the timer's run ------------------------------------------------------ */

static int
due_id_cmp(const void *a, const void *b)
{
    return strcmp(((const QUEUE_DUE *) a)->id, ((const QUEUE_DUE *) b)->id);
}

/* Remember the first error, log the others. */
static void
keep_error(char **first, char *error, const char *id, const char *what)
{
    msg_warn("%s: %s: %s", id, what, error);
    if (*first == NULL)
        *first = error;
    else
        free(error);
}

int
notice_expire(QUEUE *q, long now, NOTICE_STATS *st, char **error_r)
{
    long expire_before = now - var_maximal_queue_lifetime;
    /* As Postfix: no warning when it would come after the expiry. */
    long warn_before = var_delay_warning_time > 0
                               && var_delay_warning_time < var_maximal_queue_lifetime
                           ? now - var_delay_warning_time
                           : 0;
    QUEUE_DUE *due = NULL, *exp;
    size_t n = 0, nexp = 0;
    char **ids = NULL, *first = NULL, *error = NULL;
    ssize_t nids;
    char why[128];

    if (queue_scan_due(q, expire_before, warn_before, &due, &n, error_r) < 0)
        return -1;

    /* Expiry: each message once, whichever domains index it. */
    exp = x_calloc(n ? n : 1, sizeof(*exp));
    for (size_t i = 0; i < n; i++)
        if (due[i].expire)
            exp[nexp++] = due[i];
    if (nexp > 1)
        qsort(exp, nexp, sizeof(*exp), due_id_cmp);
    (void) str_format(why, sizeof(why),
                      "message expired: not collected by the customer within %ld days",
                      var_maximal_queue_lifetime / 86400);
    for (size_t i = 0; i < nexp; i++) {
        if (i > 0 && strcmp(exp[i].id, exp[i - 1].id) == 0)
            continue;
        if (notice_fail_message(q, exp[i].id, QUEUE_EVENT_EXPIRED, "4.4.7", why, now, 0, st,
                                &error) == 0)
            continue;
        if (errno == ENOENT) {
            x_free(&error); /* collected meanwhile */
        } else if (errno == EAGAIN) {
            msg_info("%s: expiry postponed: %s", exp[i].id, error);
            x_free(&error);
            if (st)
                st->busy++;
        } else {
            keep_error(&first, error, exp[i].id, "expiry");
        }
        error = NULL;
    }
    free(exp);

    /* Delay warnings, per domain in index order; a domain's watermark
     * moves past what was done, and stops at a failed submission. */
    for (size_t i = 0; i < n;) {
        size_t j = i;
        const char *mark = NULL;
        int stuck = 0;

        while (j < n && strcmp(due[j].domain, due[i].domain) == 0) {
            if (!due[j].expire && !stuck) {
                if (notice_warn_message(q, due[j].id, now, st, &error) == 0) {
                    mark = due[j].id;
                } else {
                    keep_error(&first, error, due[j].id, "delay warning");
                    error = NULL;
                    stuck = 1;
                }
            }
            j++;
        }
        if (mark != NULL && queue_warn_mark(q, due[i].domain, mark, &error) < 0) {
            keep_error(&first, error, mark, "delay warning watermark");
            error = NULL;
        }
        i = j;
    }
    free(due);

    /* Whatever is still owed: submissions that failed, crashes. */
    if ((nids = queue_notice_ids(q, &ids, &error)) < 0) {
        keep_error(&first, error, "-", "notice list");
    } else {
        if (notice_run_ids(q, ids, (size_t) nids, now, st, &error) < 0)
            x_free(&error); /* each was logged */
        queue_ids_free(&ids, (size_t) nids);
    }
    if (first != NULL) {
        *error_r = first;
        return -1;
    }
    return 0;
}
