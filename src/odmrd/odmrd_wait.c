/*
 * odmrd_wait.c - the waiting ATRN: an ATRN that finds no mail waits for
 * some, up to odmrd_atrn_wait (or the user's odmrd_atrn_wait_maps entry),
 * instead of answering 453 at once.
 *
 * RFC 2645 section 5.2.1 gives the server up to 10 minutes to answer ATRN.
 * A customer whose client waits that long (odmr-fetch --follow, with its
 * --atrn-timeout above the wait) then gets its mail a moment after it was
 * queued, over one connection that is already authenticated, instead of at
 * the next poll. Clients that give up sooner (fetchmail: 300 s, Exim: 30 s)
 * must not be made to wait longer than they listen, hence the per-user map.
 *
 * While waiting, the session holds no domain lock (an expiry run, or a
 * second session of the same customer, is never blocked by a waiter) and
 * no queue handle (each check opens the queue and closes it again: an open
 * handle takes one of the 4000 slots of the Berkeley DB environment's
 * thread table and registry for as long as it stays open). It wakes up:
 *   - when a message for one of its domains is committed: the waiter makes
 *     queue_directory/wait/DOMAIN for each domain and watches it with
 *     inotify; odmr-store and odmr-enqueue touch that file after each
 *     commit (queue_wake.c: one utimensat per recipient domain, ENOENT
 *     when nobody waits). Only the waiter of that domain wakes, and it
 *     then does one index lookup per domain, at most once per
 *     ODMRD_WAIT_MIN_GAP_MS. The doors pay a system call per domain; the
 *     first design, a watch on queue_directory/db (the Berkeley DB log is
 *     written by every commit), needs nothing from the doors but wakes
 *     every waiter for every commit, which was measured at about 0.2 ms of
 *     CPU per waiter and commit: 200 waiters and 5 commits a second took
 *     a fifth of a core. It remains the fallback when the domains are not
 *     known (an ATRN without domains and without user_domain_maps) or a
 *     wake-up file cannot be made.
 *   - every ODMRD_WAIT_POLL_NOTIFY_MS (a minute) anyway, so a missed
 *     wake-up (a message put back by odmr-queue reindex, say) costs
 *     delay, never mail; every ODMRD_WAIT_POLL_MS (5 s) without inotify
 *     (fs.inotify.max_user_instances, 128 by default, is the number of
 *     inotify instances of user odmr, so of waiters with a watch). A
 *     check opens the queue (a few milliseconds of CPU), so not more
 *     often;
 *   - when the customer sends anything or closes the connection: the wait
 *     ends at once and the ATRN gets its 453; what the customer sent is
 *     then read as the next command;
 *   - at the end of the wait, or of the session (session_timeout).
 * Once mail is seen, the caller's check locks the domains and looks again
 * under the lock, exactly as an ATRN that found the mail at once.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "config.h"
#include "odmrd.h"
#include "queue.h"
#include "util.h"

#define ODMRD_WAIT_MIN_GAP_MS 100       /* between two index checks */
#define ODMRD_WAIT_POLL_MS 5000         /* check this often without inotify */
#define ODMRD_WAIT_POLL_NOTIFY_MS 60000 /* and with it */

long
odmrd_wait_time(ODMRD_SESSION *sp)
{
    MAPS *maps;
    char *value = NULL, *err = NULL;
    long secs = var_odmrd_atrn_wait;

    if (var_odmrd_atrn_wait_maps == NULL || var_odmrd_atrn_wait_maps[0] == 0
        || sp->sasl_username == NULL)
        return secs;
    if ((maps = maps_open(var_odmrd_atrn_wait_maps, &err)) == NULL) {
        msg_warn("%s: parameter odmrd_atrn_wait_maps: %s; no waiting", config_file_path(),
                 err);
        free(err);
        return 0;
    }
    switch (maps_lookup(maps, sp->sasl_username, &value, &err)) {
    case MAP_FOUND:
        if (parse_time(str_trim(value), 's', 0, 600, &secs) < 0) {
            msg_warn("%s: odmrd_atrn_wait_maps: bad time \"%.40s\" for sasl_username=%s "
                     "(0 to 600 seconds, unit s, m); no waiting",
                     maps_title(maps), value, sp->sasl_username_log);
            secs = 0;
        }
        free(value);
        break;
    case MAP_NOTFOUND:
        break;
    default:
        /* Not knowing is a reason to answer now, not to wait. */
        msg_warn("%s: odmrd_atrn_wait_maps lookup of %s: %s; no waiting", sp->client,
                 sp->sasl_username_log, err);
        free(err);
        secs = 0;
        break;
    }
    maps_close(&maps);
    return secs;
}

/* Has the customer sent something (or closed), so that the wait must end?
 * Bytes may wait in our buffer or in OpenSSL's as well as in the socket. */
static int
client_spoke(ODMRD_SESSION *sp, struct pollfd *pfd)
{
    SSL *ssl = stream_tls_ssl(sp->stream);

    if (stream_pending(sp->stream) > 0 || (ssl != NULL && SSL_pending(ssl) > 0))
        return 1;
    return pfd != NULL && (pfd->revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/* A watch on the wake-up file of each domain (queue_wake.c). 0, or -1
 * when there are none or one failed (the caller falls back). */
static int
watch_domains(ODMRD_SESSION *sp, int ifd, char **domains, size_t ndomains)
{
    char path[4096];

    if (ndomains == 0)
        return -1;
    for (size_t i = 0; i < ndomains; i++) {
        if (queue_wake_prepare(var_queue_dir, domains[i], path, sizeof(path)) < 0
            || inotify_add_watch(ifd, path, IN_ATTRIB | IN_MODIFY | IN_CLOSE_WRITE) < 0) {
            msg_warn("%s: ATRN wait: wake-up file for %s: %m; watching the index instead",
                     sp->client, domains[i]);
            return -1;
        }
    }
    return 0;
}

int
odmrd_wait_mail(ODMRD_SESSION *sp, long secs, char **domains, size_t ndomains,
                int (*check)(ODMRD_SESSION *, void *), void *ctx)
{
    int64_t start = now_ms(), end = start + (int64_t) secs * 1000;
    int64_t session_end = sp->start_ms + (int64_t) var_session_timeout * 1000;
    int64_t next_check;
    char dbdir[4096] = "";
    int ifd = -1, ret = ODMRD_WAIT_TIMEOUT;
    long poll_ms = ODMRD_WAIT_POLL_MS;

    if (end > session_end)
        end = session_end;
    if (client_spoke(sp, NULL))
        return ODMRD_WAIT_CLIENT;
    /* A customer that vanished (a NAT mapping dropped, a host switched
     * off) is noticed by TCP keepalive within two minutes; the probes
     * also keep the customer's NAT mapping alive. Not a socket: no harm. */
    {
        int one = 1, idle = 60, intvl = 15, cnt = 4;

        (void) setsockopt(0, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        (void) setsockopt(0, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
        (void) setsockopt(0, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
        (void) setsockopt(0, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    }
    if ((ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
        msg_warn("%s: inotify_init1: %m (fs.inotify.max_user_instances?); checking every %d ms",
                 sp->client, ODMRD_WAIT_POLL_MS);
    } else if (watch_domains(sp, ifd, domains, ndomains) == 0) {
        poll_ms = ODMRD_WAIT_POLL_NOTIFY_MS;
    } else if (str_format(dbdir, sizeof(dbdir), "%s/db", var_queue_dir) >= 0
               && inotify_add_watch(ifd, dbdir, IN_MODIFY | IN_CREATE | IN_MOVED_TO) >= 0) {
        /* Every commit wakes this waiter (see the top of this file). */
        poll_ms = ODMRD_WAIT_POLL_NOTIFY_MS;
    } else {
        msg_warn("%s: inotify watch on %s: %m; checking every %d ms", sp->client, dbdir,
                 ODMRD_WAIT_POLL_MS);
        (void) close(ifd);
        ifd = -1;
    }
    if (msg_verbose)
        msg_info("%s: ATRN: waiting up to %lds for mail", sp->client,
                 (long) ((end - start) / 1000));
    /* Once at once: mail committed before the watches were set. */
    next_check = start;
    for (;;) {
        struct pollfd pfd[2] = {{.fd = 0, .events = POLLIN}, {.fd = ifd, .events = POLLIN}};
        int64_t now = now_ms(), wake = next_check < end ? next_check : end;
        int n;

        if (now >= end)
            break;
        /* Never a negative timeout: that would wait for ever. */
        n = poll(pfd, ifd >= 0 ? 2 : 1, wake > now ? (int) (wake - now) : 0);
        if (n < 0 && errno != EINTR) {
            msg_warn("%s: ATRN wait: poll: %m", sp->client);
            ret = ODMRD_WAIT_ERROR;
            break;
        }
        if (n > 0 && client_spoke(sp, &pfd[0])) {
            ret = ODMRD_WAIT_CLIENT;
            break;
        }
        if (n > 0 && ifd >= 0 && (pfd[1].revents & POLLIN)) {
            char buf[4096];

            /* Drain: one check serves every event so far. A check is due
             * ODMRD_WAIT_MIN_GAP_MS after the event, so never sooner than
             * that after the last one, and the events of the gap collect
             * into it: a busy index does not make a waiter look up all
             * the time. */
            while (read(ifd, buf, sizeof(buf)) > 0)
                ;
            if (next_check > now + ODMRD_WAIT_MIN_GAP_MS)
                next_check = now + ODMRD_WAIT_MIN_GAP_MS;
        }
        if (now_ms() < next_check)
            continue;
        switch (check(sp, ctx)) {
        case 0:
            break;
        case 1:
            ret = ODMRD_WAIT_MAIL;
            goto done;
        default:
            ret = ODMRD_WAIT_ERROR;
            goto done;
        }
        /* Wait for a change now, or for the next poll. */
        next_check = now_ms() + poll_ms;
    }
done:
    if (ifd >= 0)
        (void) close(ifd);
    if (msg_verbose)
        msg_info("%s: ATRN: waited %lld ms: %s", sp->client, (long long) (now_ms() - start),
                 ret == ODMRD_WAIT_MAIL ? "mail" : ret == ODMRD_WAIT_CLIENT ? "client spoke"
                 : ret == ODMRD_WAIT_ERROR ? "error" : "no mail");
    return ret;
}
