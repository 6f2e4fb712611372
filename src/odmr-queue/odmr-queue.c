/*
 * NAME
 *     odmr-queue - inspect and manage the ODMR hold queue
 *
 * SYNOPSIS
 *     odmr-queue [-v] [-c config_dir] [-o name=value] list [domain]
 *     odmr-queue [options] summary
 *     odmr-queue [options] show queue_id
 *     odmr-queue [options] delete queue_id...
 *     odmr-queue [options] delete -d domain
 *     odmr-queue [options] bounce queue_id...
 *     odmr-queue [options] bounce -d domain
 *     odmr-queue [options] expire [-n] [--now time]
 *     odmr-queue [options] reindex
 *     odmr-queue [options] stats [--json] [--walk] [--now time]
 *     odmr-queue [options] stats [--json] -d domain | -u user | --stale days
 *     odmr-queue [options] stats --prometheus [-o file] [--min-messages n]
 *
 * DESCRIPTION
 *     odmr-queue is the administrator's tool for the hold queue that
 *     odmr-store fills and odmrd empties. Messages are named by their queue
 *     ID (18 hexadecimal digits); recipients have a status: queued,
 *     delivered, "delivered, notice pending" (a success notice for a
 *     customer without DSN support), "failed, notice pending", failed (the
 *     sender was told, or asked not to be), or removed by the
 *     administrator.
 *
 *     list [domain]
 *         Like mailq(1): for each message (every message, or those indexed
 *         for domain) the queue ID, the size in bytes, the arrival date and
 *         the sender ("<>" for the null sender), then one indented line per
 *         recipient with its status. Damaged files are listed with the
 *         reason. The last line is "-- N Kbytes in M Requests.".
 *
 *     summary
 *         One line per domain that has mail in the index: domain, number
 *         of messages, bytes, and the age of the oldest message.
 *
 *     show queue_id
 *         The envelope (one "name: value" line per field, the recipients
 *         with NOTIFY, ORCPT and status, the failure texts recorded so far),
 *         an empty line, then the content exactly as stored: SMTP wire form,
 *         CRLF line ends, dot-stuffed, ending with "." on a line of its own.
 *
 *     delete queue_id...
 *         Delete messages (file, failure texts, index entries). Each
 *         message's domains are locked first, so a delete waits (up to
 *         5 seconds) for a flush of one of them to end.
 *
 *     delete -d domain
 *         Drop every queued recipient of domain: under the domain lock, each
 *         such recipient is marked failed ("deleted by the administrator",
 *         no bounce is sent) and a message whose recipients are then all
 *         final is removed. Recipients in other domains stay queued.
 *
 *     bounce queue_id...
 *     bounce -d domain
 *         Return messages to their senders now: every queued recipient
 *         (of every domain of the message) fails with 5.0.0 "returned to
 *         sender by the administrator" and one non-delivery notice goes to
 *         the sender, as for any failure. Waits up to 5 seconds for a
 *         flush of one of the message's domains to end.
 *
 *     expire [-n] [--now time]
 *         What a timer runs every few minutes. First the orphan recovery:
 *         a message whose writer (odmr-store, odmr-enqueue) died between
 *         putting its file in the queue and indexing it is indexed, and
 *         what such a writer left half written is removed (logged either
 *         way; the sender got no 250 for them, so at worst a duplicate is
 *         delivered). It looks only at the files being written; on its
 *         first run after a reboot it also checks every queue file once.
 *         Then messages older than
 *         maximal_queue_lifetime expire: their queued recipients fail
 *         (4.4.7, status=expired) and the sender gets a non-delivery
 *         notice. When delay_warning_time is set (and shorter than
 *         maximal_queue_lifetime), each message still queued after that
 *         long gets one delay warning. Then every notice still owed (a
 *         submission that failed, a crash) is sent. Notices go through
 *         sendmail_path, so Postfix routes them like any mail (a notice to
 *         a held domain is itself held). A message whose domain is being
 *         flushed waits for the next run. When nothing is due, a run costs
 *         one index step per domain, whatever the number of messages.
 *         Safe to run while sessions run, and from several places at once.
 *         -n (--dry-run) lists what is due and changes nothing. --now time
 *         runs as if the clock said time: epoch seconds, or +N or -N with
 *         a unit (s, m, h, d, w) relative to now (tests, and to see what
 *         would expire tomorrow: -n --now +1d).
 *
 *     reindex
 *         Rebuild the Berkeley DB index from the queue files (after a crash
 *         that left files without index entries, or a lost db/ directory),
 *         including the list of notices owed, and remove incoming/ files
 *         older than a day. Reports the counts;
 *         damaged files are reported and left alone. Safe while the queue
 *         is in use; run it from a timer now and then.
 *
 *     stats [--json] [--walk]
 *         Totals from the figures the queue keeps per domain (messages,
 *         recipients waiting, bytes; changed in the same index transactions
 *         as the domain's index entries, rebuilt by reindex): messages and
 *         recipients queued (sums over domains: a message held for two
 *         domains counts in both), bytes, domains with mail, damaged files
 *         (as the last reindex found them), the oldest message and the last
 *         collection. One index step per domain, whatever the number of
 *         messages. With --json, one JSON object (messages,
 *         recipients_queued, bytes, domains, damaged, oldest_id,
 *         oldest_arrival, oldest_age_seconds, last_collect,
 *         last_collect_domain). --walk reads every queue file instead, as
 *         before (distinct messages, and recipients delivered and failed
 *         in files still held); so does stats on a queue whose figures a
 *         version without them left incomplete (run reindex once after
 *         such an upgrade). --now time judges ages at time (as expire).
 *
 *     stats [--json] -d domain
 *         One domain in a few index lookups: its messages, recipients
 *         waiting, bytes, oldest message, and its last collection: when the
 *         last authorized ATRN that collected it turned around, that
 *         session's outcome (messages delivered, deferred, bounced), the
 *         totals of all sessions, and the last failure's reason ("customer's
 *         MTA answered 451 ...", "lost connection ...") with its time.
 *         odmrd writes these records once per session, after the
 *         customer's connection is closed; a refused ATRN writes none.
 *
 *     stats [--json] -u user
 *         The same collection record for a SASL user.
 *
 *     stats [--json] --stale days
 *         Domains that hold mail and were not collected for that many days
 *         (or never), with the time of their last collection.
 *
 *     stats --prometheus [-o file] [--min-messages n]
 *         The Prometheus text exposition format, for node_exporter's
 *         textfile collector: per domain (label domain) the gauges
 *         odmr_queue_messages, odmr_queue_recipients, odmr_queue_bytes,
 *         odmr_queue_oldest_message_age_seconds and
 *         odmr_last_collect_timestamp_seconds, the same without label for
 *         the whole queue (sums; the oldest age and the latest collection),
 *         the counters odmr_delivered_messages_total,
 *         odmr_deferred_messages_total and odmr_bounced_messages_total per
 *         domain, and odmr_queue_domains and odmr_queue_damaged_files. With
 *         -o the text goes to file.PID.tmp beside file (mode 0644, made
 *         before the privileges are dropped, so root may write where the
 *         queue owner may not) and is renamed to file when complete: the
 *         collector never reads half a file. Each domain with mail costs
 *         about 200 bytes, about 430 once it has a collection record (20 MB
 *         and 43 MB for 100,000 domains, bench/stats); --min-messages n keeps
 *         only the per-domain lines of domains that hold at least n
 *         messages (the totals still count every domain). The Debian
 *         package's postfix-odmr-prometheus.timer writes
 *         /var/lib/prometheus/node-exporter/postfix-odmr.prom every minute
 *         when that directory exists.
 *
 *     Options:
 *     -c config_dir   read config_dir/odmr.cf (default $MAIL_CONFIG, else
 *                     /etc/postfix).
 *     -o name=value   override a parameter of odmr.cf.
 *     -v              verbose logging.
 *
 * SECURITY
 *     Run as root or as the owner of the queue directory. Run as root, the
 *     program first becomes the owner of queue_directory, so that nothing
 *     it creates there (index log files, lock files) is owned by root.
 *     Nothing is setuid.
 *
 * DIAGNOSTICS
 *     Problems go to stderr and to syslog (facility mail).
 *
 * EXIT STATUS
 *     0   success.
 *     64  (EX_USAGE) bad command line.
 *     66  (EX_NOINPUT) an unknown queue ID (for delete: at least one).
 *     75  (EX_TEMPFAIL) the queue could not be opened or read, a domain
 *         stayed locked, an index error, a notice that could not be
 *         submitted (it stays pending); try again later.
 *
 * CONFIGURATION PARAMETERS
 *     queue_directory (default: /var/spool/postfix-odmr)
 *         The hold queue.
 *     index_sync (default: yes)
 *         Flush the index log at every index change.
 *     lock_timeout (default: 10s)
 *         How long an index operation retries while others hold its locks.
 *     maximal_queue_lifetime (default: 5d)
 *         Held mail older than this expires and is returned (expire).
 *     delay_warning_time (default: 0h, none)
 *         Age at which a message gets its one delay warning (expire).
 *     sendmail_path (default: /usr/sbin/sendmail)
 *         The command that submits notices (with options, e.g. "-C dir"
 *         for a Postfix instance with another configuration directory).
 *     notice_submit_timeout (default: 60s)
 *         How long one sendmail run may take; then it is killed and the
 *         notice stays pending.
 *     bounce_size_limit (default: 50000)
 *         A notice returns the whole message only up to this size, else
 *         its headers.
 *     myhostname (default: the system's host name)
 *         Notices come from MAILER-DAEMON@myhostname.
 *     syslog_name (default: postfix), syslog_facility (default: mail),
 *     log_file (default: empty)
 *         Logging.
 *
 * SEE ALSO
 *     odmr-store(8), odmrd(8), odmr.cf(5), mailq(1)
 */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "notice.h"
#include "odmr-queue.h"
#include "queue.h"
#include "util.h"

#define DELETE_WAIT_MS 5000

static void
usage(void)
{
    fprintf(stderr,
            "usage: odmr-queue [-v] [-c config_dir] [-o name=value] command\n"
            "  list [domain] | summary | show queue_id | delete queue_id... |\n"
            "  delete -d domain | bounce queue_id... | bounce -d domain |\n"
            "  expire [-n] [--now time] | reindex |\n"
            "  stats [--json] [--walk] [-d domain | -u user] [--stale days] [--now time]\n"
            "  stats --prometheus [-o file] [--min-messages n] [--now time]\n");
    exit(EX_USAGE);
}

/* As root, become the queue owner: root-owned files in the queue would
 * lock the odmr user out of its own index. */
static void
drop_privileges(const char *dir)
{
    struct stat st;

    if (geteuid() != 0)
        return;
    if (stat(dir, &st) < 0)
        msg_fatal("queue directory %s: %m", dir);
    if (st.st_uid == 0)
        return;
    if (setgroups(0, NULL) < 0 || setgid(st.st_gid) < 0 || setuid(st.st_uid) < 0)
        msg_fatal("cannot become the owner of %s (uid %ld): %m", dir, (long) st.st_uid);
}

static const char *
status_name(int status)
{
    switch (status) {
    case QUEUE_RCPT_QUEUED:
        return "queued";
    case QUEUE_RCPT_DELIVERED:
        return "delivered";
    case QUEUE_RCPT_FAILED:
        return "failed, notice pending";
    case QUEUE_RCPT_BOUNCED:
        return "failed";
    case QUEUE_RCPT_SUCCESS:
        return "delivered, notice pending";
    case QUEUE_RCPT_REMOVED:
        return "removed";
    default:
        return "unknown";
    }
}

void
format_date(long sec, char *buf, size_t size)
{
    time_t t = (time_t) sec;
    struct tm tm;

    if (localtime_r(&t, &tm) == NULL || strftime(buf, size, "%a %b %e %H:%M:%S", &tm) == 0)
        str_copy(buf, "?", size);
}

/* ---- list ----------------------------------------------------------------- */

typedef struct {
    QUEUE *q;
    long long bytes;
    size_t count;
} LIST_CTX;

static int
list_one(const char *id, void *ctx)
{
    LIST_CTX *l = ctx;
    char *error = NULL;
    QUEUE_FILE *f = queue_file_open(l->q, id, 0, &error);
    const QUEUE_ENV *env;
    char date[64];

    if (f == NULL) {
        if (errno != ENOENT) {
            printf("%-18s  (%s)\n\n", id, error);
            l->count++;
        }
        free(error);
        return 0;
    }
    env = queue_file_env(f);
    format_date(env->arrival_sec, date, sizeof(date));
    printf("%-18s %8lld %s  %s\n", env->id, env->content_length, date,
           env->sender[0] ? env->sender : "<>");
    for (size_t i = 0; i < env->rcpt_count; i++)
        printf("%30s %s (%s)\n", "", env->rcpt[i].address, status_name(env->rcpt[i].status));
    printf("\n");
    l->bytes += env->content_length;
    l->count++;
    queue_file_close(&f);
    return 0;
}

static int
cmd_list(QUEUE *q, const char *domain)
{
    LIST_CTX l = {q, 0, 0};
    char *error = NULL;

    if (domain != NULL) {
        char **ids = NULL;
        ssize_t n = queue_domain_ids(q, domain, &ids, &error);

        if (n < 0)
            msg_fatal("%s", error);
        for (ssize_t i = 0; i < n; i++)
            (void) list_one(ids[i], &l);
        queue_ids_free(&ids, (size_t) n);
    } else if (queue_walk_files(q, list_one, &l, &error) < 0) {
        msg_fatal("%s", error);
    }
    if (l.count == 0)
        printf("Mail queue is empty\n");
    else
        printf("-- %lld Kbytes in %zu Request%s.\n", (l.bytes + 1023) / 1024, l.count,
               l.count == 1 ? "" : "s");
    return EX_OK;
}

/* ---- summary -------------------------------------------------------------- */

static int
summary_one(const char *domain, size_t count, void *ctx)
{
    QUEUE *q = ctx;
    char **ids = NULL, *error = NULL, age[32];
    long long bytes = 0;
    long oldest = 0;
    size_t found = 0;
    ssize_t n = queue_domain_ids(q, domain, &ids, &error);

    if (n < 0)
        msg_fatal("%s", error);
    for (ssize_t i = 0; i < n; i++) {
        QUEUE_FILE *f = queue_file_open(q, ids[i], 0, &error);

        if (f == NULL) {
            x_free(&error);
            continue;
        }
        bytes += queue_file_env(f)->content_length;
        if (found == 0 || queue_file_env(f)->arrival_sec < oldest)
            oldest = queue_file_env(f)->arrival_sec;
        found++;
        queue_file_close(&f);
    }
    queue_ids_free(&ids, (size_t) n);
    if (found > 0)
        format_age((long) time(NULL) - oldest, age, sizeof(age));
    else
        str_copy(age, "-", sizeof(age));
    printf("%-40s %8zu %12lld %10s\n", domain, found, bytes, age);
    return 0;
}

static int
cmd_summary(QUEUE *q)
{
    char *error = NULL;

    printf("%-40s %8s %12s %10s\n", "DOMAIN", "MESSAGES", "BYTES", "OLDEST");
    if (queue_walk_domains(q, summary_one, q, &error) < 0)
        msg_fatal("%s", error);
    return EX_OK;
}

/* ---- show ----------------------------------------------------------------- */

static void
copy_out(int fd, off_t offset, long long length)
{
    char buf[65536];

    while (length > 0) {
        size_t want = length < (long long) sizeof(buf) ? (size_t) length : sizeof(buf);
        ssize_t n = pread(fd, buf, want, offset);

        if (n <= 0)
            msg_fatal("read queue file: %s", n < 0 ? strerror(errno) : "short file");
        if (fwrite(buf, 1, (size_t) n, stdout) != (size_t) n)
            msg_fatal("write to stdout: %m");
        offset += n;
        length -= n;
    }
}

static int
cmd_show(QUEUE *q, const char *id)
{
    char *error = NULL, date[64];
    QUEUE_FILE *f = queue_file_open(q, id, 0, &error);
    const QUEUE_ENV *env;
    QUEUE_REASON *reasons = NULL;
    int warned = 0;

    if (f == NULL) {
        if (errno == ENOENT || errno == EINVAL) {
            if (error != NULL)
                msg_warn("%s", error);
            else
                msg_warn("%s: no such message", id);
            return EX_NOINPUT;
        }
        msg_fatal("%s", error);
    }
    env = queue_file_env(f);
    format_date(env->arrival_sec, date, sizeof(date));
    printf("id: %s\narrival: %s (%ld.%06ld)\nsender: <%s>\nsize: %lld\n", env->id, date,
           env->arrival_sec, env->arrival_usec, env->sender, env->size);
    if (env->envid)
        printf("envid: %s\n", env->envid);
    if (env->ret)
        printf("ret: %s\n", env->ret);
    if (env->body)
        printf("body: %s\n", env->body);
    if (env->smtputf8)
        printf("smtputf8: yes\n");
    if (env->client)
        printf("client: %s\n", env->client);
    if (env->helo)
        printf("helo: %s\n", env->helo);
    if (env->protocol)
        printf("protocol: %s\n", env->protocol);
    for (size_t i = 0; i < env->rcpt_count; i++)
        printf("recipient %zu: <%s> status=%s notify=%s orcpt=%s\n", i, env->rcpt[i].address,
               status_name(env->rcpt[i].status), env->rcpt[i].notify ? env->rcpt[i].notify : "-",
               env->rcpt[i].orcpt ? env->rcpt[i].orcpt : "-");
    /* The last result of each recipient, through the queue module. */
    if (queue_file_reasons(f, &reasons, &warned, &error) < 0) {
        msg_warn("%s", error);
        x_free(&error);
    } else {
        for (size_t i = 0; i < env->rcpt_count; i++) {
            const QUEUE_REASON *r = reasons + i;

            if (r->event == 0)
                continue;
            format_date(r->time, date, sizeof(date));
            printf("result %zu: %s dsn=%s%s%s%s%s (%s)\n", i, date, r->dsn[0] ? r->dsn : "-",
                   r->relay ? " relay=" : "", r->relay ? r->relay : "",
                   r->diag ? " reply=" : "", r->diag ? r->diag : "", r->text);
        }
        if (warned)
            printf("delay warning: sent\n");
        queue_reasons_free(&reasons, env->rcpt_count);
    }
    printf("content: %lld bytes\n\n", env->content_length);
    fflush(stdout);
    copy_out(queue_file_fd(f), env->content_offset, env->content_length);
    if (fflush(stdout) != 0)
        msg_fatal("write to stdout: %m");
    queue_file_close(&f);
    return EX_OK;
}

/* ---- delete --------------------------------------------------------------- */

static int
cmd_delete_ids(QUEUE *q, int argc, char **argv)
{
    int status = EX_OK;

    for (int i = 0; i < argc; i++) {
        char id[QUEUE_ID_LEN + 1];
        char *error = NULL;

        str_copy(id, argv[i], sizeof(id));
        for (char *p = id; *p; p++)
            if (*p >= 'a' && *p <= 'f')
                *p -= 'a' - 'A';
        if (strlen(argv[i]) != QUEUE_ID_LEN) {
            msg_warn("%s: bad queue ID", argv[i]);
            status = status == EX_OK ? EX_NOINPUT : status;
            continue;
        }
        if (queue_delete(q, id, &error) == 0) {
            printf("%s: deleted\n", id);
            msg_info("%s: removed by the administrator", id);
        } else if (errno == ENOENT) {
            msg_warn("%s", error);
            status = status == EX_OK ? EX_NOINPUT : status;
        } else {
            msg_warn("%s", error);
            status = EX_TEMPFAIL;
        }
        free(error);
    }
    return status;
}

static int
cmd_delete_domain(QUEUE *q, const char *domain)
{
    char **ids = NULL, *error = NULL;
    size_t rcpts = 0, removed = 0;
    ssize_t n;
    int lock;

    lock = queue_lock_domain(q, domain, DELETE_WAIT_MS, &error);
    if (lock < 0) {
        int usage = errno == EINVAL;

        msg_warn("%s", error);
        free(error);
        return usage ? EX_USAGE : EX_TEMPFAIL;
    }
    if ((n = queue_domain_ids(q, domain, &ids, &error)) < 0)
        msg_fatal("%s", error);
    for (ssize_t i = 0; i < n; i++) {
        QUEUE_FILE *f = queue_file_open(q, ids[i], 1, &error);
        const QUEUE_ENV *env;
        int all_final = 1;

        if (f == NULL) {
            if (errno == ENOENT) {
                if (queue_index_drop(q, domain, ids[i], &error) < 0)
                    msg_fatal("%s", error);
            } else {
                msg_warn("%s", error);
                x_free(&error);
            }
            continue;
        }
        env = queue_file_env(f);
        for (size_t r = 0; r < env->rcpt_count; r++) {
            const char *d = addr_domain(env->rcpt[r].address);

            if (env->rcpt[r].status == QUEUE_RCPT_QUEUED && d && str_casecmp(d, domain) == 0) {
                if (queue_file_mark(f, r, QUEUE_RCPT_REMOVED, "deleted by the administrator") < 0)
                    msg_fatal("%s: mark recipient: %m", ids[i]);
                rcpts++;
            }
            if (env->rcpt[r].status == QUEUE_RCPT_QUEUED)
                all_final = 0;
        }
        if (all_final)
            removed++;
        if (queue_file_done(q, &f, domain, &error) < 0)
            msg_fatal("%s", error);
        msg_info("%s: recipients in %s removed by the administrator", ids[i], domain);
    }
    if (queue_sync(q, &error) < 0)
        msg_fatal("%s", error);
    queue_unlock_domain(lock);
    printf("%s: %zu recipient%s in %zd message%s deleted; %zu message%s removed\n", domain,
           rcpts, rcpts == 1 ? "" : "s", n, n == 1 ? "" : "s", removed, removed == 1 ? "" : "s");
    queue_ids_free(&ids, (size_t) n);
    return EX_OK;
}

/* ---- bounce and expire ------------------------------------------------------ */

static void
notice_summary(const char *what, const NOTICE_STATS *st)
{
    printf("%s: %lu expired, %lu returned, %lu delay warning%s, %lu notice%s sent, "
           "%lu submission%s failed (kept), %lu postponed (domain being flushed)\n",
           what, st->expired, st->bounced, st->warned, st->warned == 1 ? "" : "s", st->notices,
           st->notices == 1 ? "" : "s", st->failures, st->failures == 1 ? "" : "s", st->busy);
    msg_info("%s: expired=%lu returned=%lu warned=%lu notices=%lu failed=%lu postponed=%lu", what,
             st->expired, st->bounced, st->warned, st->notices, st->failures, st->busy);
}

/* A queue ID from the command line: 18 hex digits, any case. */
static int
arg_id(const char *arg, char *id)
{
    if (strlen(arg) != QUEUE_ID_LEN) {
        msg_warn("%s: bad queue ID", arg);
        return -1;
    }
    str_copy(id, arg, QUEUE_ID_LEN + 1);
    for (char *p = id; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p -= 'a' - 'A';
    return 0;
}

static int
cmd_bounce(QUEUE *q, int argc, char **argv)
{
    NOTICE_STATS st;
    char **ids = NULL, *error = NULL;
    ssize_t n;
    int status = EX_OK;
    long now = (long) time(NULL);

    memset(&st, 0, sizeof(st));
    if (strcmp(argv[0], "-d") == 0) {
        if (!domain_valid(argv[1])) {
            msg_warn("bad domain name \"%.100s\"", argv[1]);
            return EX_USAGE;
        }
        if ((n = queue_domain_ids(q, argv[1], &ids, &error)) < 0)
            msg_fatal_status(EX_TEMPFAIL, "%s", error);
    } else {
        n = argc;
        ids = x_calloc((size_t) argc + 1, sizeof(*ids));
        for (int i = 0; i < argc; i++) {
            char id[QUEUE_ID_LEN + 1];

            ids[i] = x_strdup(arg_id(argv[i], id) == 0 ? id : "");
        }
    }
    for (ssize_t i = 0; i < n; i++) {
        if (ids[i][0] == 0) {
            status = status == EX_OK ? EX_NOINPUT : status;
            continue;
        }
        if (notice_bounce(q, ids[i], now, &st, &error) == 0) {
            printf("%s: returned to sender\n", ids[i]);
        } else if (errno == ENOENT) {
            msg_warn("%s", error);
            status = status == EX_OK ? EX_NOINPUT : status;
        } else {
            msg_warn("%s", error);
            status = EX_TEMPFAIL;
        }
        x_free(&error);
    }
    queue_ids_free(&ids, (size_t) n);
    notice_summary("bounce", &st);
    return status;
}

/* --now: epoch seconds, or +N / -N with a unit (s, m, h, d, w) from now. */
int
parse_now(const char *arg, long *now_r)
{
    long v;

    if (arg[0] == '+' || arg[0] == '-') {
        if (parse_time(arg + 1, 's', 0, 3650L * 86400, &v) < 0)
            return -1;
        *now_r = (long) time(NULL) + (arg[0] == '+' ? v : -v);
        return 0;
    }
    return parse_long(arg, 0, 1L << 40, now_r);
}

static int
cmd_expire(QUEUE *q, long now, int dry_run)
{
    NOTICE_STATS st;
    char *error = NULL;
    size_t recovered = 0, removed = 0;
    int status = EX_OK;

    if (dry_run) {
        long expire_before = now - var_maximal_queue_lifetime;
        long warn_before = var_delay_warning_time > 0
                                   && var_delay_warning_time < var_maximal_queue_lifetime
                               ? now - var_delay_warning_time
                               : 0;
        QUEUE_DUE *due = NULL;
        size_t n = 0;
        char **ids = NULL;
        ssize_t nids;

        if (queue_scan_due(q, expire_before, warn_before, &due, &n, &error) < 0
            || (nids = queue_notice_ids(q, &ids, &error)) < 0)
            msg_fatal_status(EX_TEMPFAIL, "%s", error);
        for (size_t i = 0; i < n; i++)
            printf("%s %s: %s\n", due[i].id, due[i].domain,
                   due[i].expire ? "would expire" : "delay warning due unless sent before");
        for (ssize_t i = 0; i < nids; i++)
            printf("%s: notice to the sender pending\n", ids[i]);
        free(due);
        queue_ids_free(&ids, (size_t) nids);
        return EX_OK;
    }
    /* Orphans first (queue.h, ORPHANS): a recovered message then expires
     * or is warned about like any other. */
    if (queue_recover(q, now, &recovered, &removed, NULL, &error) < 0) {
        msg_warn("expire: orphan recovery: %s", error);
        x_free(&error);
        status = EX_TEMPFAIL;
    } else if (recovered + removed > 0) {
        printf("recovered %zu orphaned message%s, removed %zu incomplete incoming file%s\n",
               recovered, recovered == 1 ? "" : "s", removed, removed == 1 ? "" : "s");
    }
    memset(&st, 0, sizeof(st));
    if (notice_expire(q, now, &st, &error) < 0) {
        notice_summary("expire", &st);
        msg_warn("expire: %s", error);
        free(error);
        return EX_TEMPFAIL;
    }
    notice_summary("expire", &st);
    return status;
}

/* ---- stats ---------------------------------------------------------------- */

typedef struct {
    QUEUE *q;
    size_t messages, queued, delivered, failed, damaged, domains;
    long long bytes;
    long oldest;
    char oldest_id[QUEUE_ID_LEN + 1];
} STATS;

static int
stats_file(const char *id, void *ctx)
{
    STATS *s = ctx;
    char *error = NULL;
    QUEUE_FILE *f = queue_file_open(s->q, id, 0, &error);
    const QUEUE_ENV *env;

    if (f == NULL) {
        if (errno != ENOENT)
            s->damaged++;
        free(error);
        return 0;
    }
    env = queue_file_env(f);
    s->messages++;
    s->bytes += env->content_length;
    for (size_t i = 0; i < env->rcpt_count; i++) {
        if (env->rcpt[i].status == QUEUE_RCPT_QUEUED)
            s->queued++;
        else if (env->rcpt[i].status == QUEUE_RCPT_DELIVERED)
            s->delivered++;
        else
            s->failed++;
    }
    if (s->oldest == 0 || env->arrival_sec < s->oldest) {
        s->oldest = env->arrival_sec;
        memcpy(s->oldest_id, env->id, sizeof(s->oldest_id));
    }
    queue_file_close(&f);
    return 0;
}

static int
stats_domain(const char *domain, size_t count, void *ctx)
{
    ((STATS *) ctx)->domains++;
    return 0;
}

int
cmd_stats_walk(QUEUE *q, int json)
{
    STATS s;
    char *error = NULL, age[32];
    long now = (long) time(NULL);

    memset(&s, 0, sizeof(s));
    s.q = q;
    if (queue_walk_files(q, stats_file, &s, &error) < 0
        || queue_walk_domains(q, stats_domain, &s, &error) < 0)
        msg_fatal("%s", error);
    if (json) {
        /* Every value is a number or an ID of hex digits: no escaping. */
        printf("{\"messages\":%zu,\"recipients_queued\":%zu,\"recipients_delivered\":%zu,"
               "\"recipients_failed\":%zu,\"bytes\":%lld,\"domains\":%zu,\"damaged\":%zu,",
               s.messages, s.queued, s.delivered, s.failed, s.bytes, s.domains, s.damaged);
        if (s.messages > 0)
            printf("\"oldest_id\":\"%s\",\"oldest_arrival\":%ld,\"oldest_age_seconds\":%ld}\n",
                   s.oldest_id, s.oldest, now - s.oldest);
        else
            printf("\"oldest_id\":null,\"oldest_arrival\":null,\"oldest_age_seconds\":null}\n");
        return EX_OK;
    }
    printf("messages:             %zu\n", s.messages);
    printf("recipients queued:    %zu\n", s.queued);
    printf("recipients delivered: %zu\n", s.delivered);
    printf("recipients failed:    %zu\n", s.failed);
    printf("bytes:                %lld\n", s.bytes);
    printf("domains with mail:    %zu\n", s.domains);
    printf("damaged files:        %zu\n", s.damaged);
    if (s.messages > 0) {
        format_age(now - s.oldest, age, sizeof(age));
        printf("oldest message:       %s (%s old)\n", s.oldest_id, age);
    }
    return EX_OK;
}

/* ---- main ----------------------------------------------------------------- */

int
main(int argc, char **argv)
{
    const char *cmd;
    char *error = NULL;
    QUEUE *q;
    int c, status, readonly, dry_run = 0;
    long now = (long) time(NULL);
    STATS_OPTS so;

    fds_sanitize();
    msg_init(argv[0], MSG_STDERR | MSG_SYSLOG);
    while ((c = getopt(argc, argv, "+" CONFIG_OPTIONS)) != -1) {
        if (!config_option(c, optarg))
            usage();
    }
    argc -= optind;
    argv += optind;
    if (argc < 1)
        usage();
    cmd = argv[0];
    argc--;
    argv++;
    /* Check the command line before touching the queue. */
    if (strcmp(cmd, "list") == 0) {
        if (argc > 1)
            usage();
    } else if (strcmp(cmd, "summary") == 0 || strcmp(cmd, "reindex") == 0) {
        if (argc != 0)
            usage();
    } else if (strcmp(cmd, "show") == 0) {
        if (argc != 1)
            usage();
    } else if (strcmp(cmd, "delete") == 0 || strcmp(cmd, "bounce") == 0) {
        if (argc < 1 || (strcmp(argv[0], "-d") == 0 && argc != 2))
            usage();
    } else if (strcmp(cmd, "expire") == 0) {
        for (int i = 0; i < argc; i++) {
            if (strcmp(argv[i], "-n") == 0 || strcmp(argv[i], "--dry-run") == 0)
                dry_run = 1;
            else if (strcmp(argv[i], "--now") == 0 && i + 1 < argc
                     && parse_now(argv[i + 1], &now) == 0)
                i++;
            else
                usage();
        }
    } else if (strcmp(cmd, "stats") == 0) {
        if (stats_parse(argc, argv, &so) < 0)
            usage();
    } else {
        usage();
    }
    config_load();
    /* stats -o FILE: the file is made as the caller (root may write where
     * the queue owner may not), the figures are read as the queue owner. */
    if (strcmp(cmd, "stats") == 0 && so.output != NULL) {
        if (stats_output_open(&so) < 0)
            return EX_CANTCREAT;
        stats_output_fork(&so);
    }
    drop_privileges(var_queue_dir);
    readonly = strcmp(cmd, "delete") != 0 && strcmp(cmd, "reindex") != 0
               && strcmp(cmd, "bounce") != 0 && !(strcmp(cmd, "expire") == 0 && !dry_run);
    if ((q = queue_open(var_queue_dir, readonly ? QUEUE_OPEN_READONLY : 0, &error)) == NULL)
        msg_fatal("%s", error);

    if (strcmp(cmd, "list") == 0) {
        status = cmd_list(q, argc == 1 ? argv[0] : NULL);
    } else if (strcmp(cmd, "summary") == 0) {
        status = cmd_summary(q);
    } else if (strcmp(cmd, "show") == 0) {
        char id[QUEUE_ID_LEN + 1];

        str_copy(id, argv[0], sizeof(id));
        for (char *p = id; *p; p++)
            if (*p >= 'a' && *p <= 'f')
                *p -= 'a' - 'A';
        status = strlen(argv[0]) == QUEUE_ID_LEN ? cmd_show(q, id) : EX_NOINPUT;
        if (strlen(argv[0]) != QUEUE_ID_LEN)
            msg_warn("%s: bad queue ID", argv[0]);
    } else if (strcmp(cmd, "delete") == 0) {
        status = strcmp(argv[0], "-d") == 0 ? cmd_delete_domain(q, argv[1])
                                            : cmd_delete_ids(q, argc, argv);
    } else if (strcmp(cmd, "bounce") == 0) {
        status = cmd_bounce(q, argc, argv);
    } else if (strcmp(cmd, "expire") == 0) {
        status = cmd_expire(q, now, dry_run);
    } else if (strcmp(cmd, "reindex") == 0) {
        size_t files, entries, damaged;

        if (queue_reindex(q, &files, &entries, &damaged, &error) < 0)
            msg_fatal("%s", error);
        printf("reindex: %zu message%s, %zu index entr%s, %zu damaged file%s\n", files,
               files == 1 ? "" : "s", entries, entries == 1 ? "y" : "ies", damaged,
               damaged == 1 ? "" : "s");
        msg_info("reindex: files=%zu entries=%zu damaged=%zu", files, entries, damaged);
        status = EX_OK;
    } else {
        status = cmd_stats(q, &so);
    }
    queue_close(&q);
    if (fflush(stdout) != 0)
        msg_fatal("write to stdout: %m");
    return status;
}
