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
 * no queue transaction. It wakes up:
 *   - when the queue index changes: an inotify watch on queue_directory/db
 *     sees the Berkeley DB log being written by any commit (odmr-store,
 *     odmr-enqueue, a flush, odmr-queue). That wakes every waiter for every
 *     commit, whichever domain it was for; each then does one index lookup
 *     per domain, at most once per ODMRD_WAIT_MIN_GAP_MS. The alternative,
 *     a per-domain signal from odmr-store (touching lock/DOMAIN, say),
 *     would wake only the right waiter but puts work on the store's commit
 *     path, the one path that must stay short; and a lookup is cheap
 *     (O(log n), the index's pages are in the shared cache).
 *   - every ODMRD_WAIT_POLL_MS anyway (ODMRD_WAIT_POLL_NOTIFY_MS when the
 *     watch works), so a missed event or a full inotify table (fs.inotify.
 *     max_user_instances) costs delay, never mail;
 *   - when the customer sends anything or closes the connection: the wait
 *     ends at once and the ATRN gets its 453; what the customer sent is
 *     then read as the next command;
 *   - at the end of the wait, or of the session (session_timeout).
 * Once mail is seen, the caller's check locks the domains and looks again
 * under the lock, exactly as an ATRN that found the mail at once.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "config.h"
#include "odmrd.h"
#include "util.h"

#define ODMRD_WAIT_MIN_GAP_MS 100       /* between two index checks */
#define ODMRD_WAIT_POLL_MS 1000         /* check this often without inotify */
#define ODMRD_WAIT_POLL_NOTIFY_MS 5000  /* and with it */

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
                 err ? err : "error");
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
                 sp->sasl_username_log, err ? err : "error");
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

int
odmrd_wait_mail(ODMRD_SESSION *sp, long secs, int (*check)(ODMRD_SESSION *, void *),
                void *ctx)
{
    int64_t start = now_ms(), end = start + (int64_t) secs * 1000;
    int64_t session_end = sp->start_ms + (int64_t) var_session_timeout * 1000;
    int64_t next_check;
    char dbdir[4096];
    int ifd = -1, ret = ODMRD_WAIT_TIMEOUT;
    long poll_ms = ODMRD_WAIT_POLL_MS;

    if (end > session_end)
        end = session_end;
    if (client_spoke(sp, NULL))
        return ODMRD_WAIT_CLIENT;
    if (str_format(dbdir, sizeof(dbdir), "%s/db", var_queue_dir) >= 0
        && (ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) >= 0) {
        if (inotify_add_watch(ifd, dbdir, IN_MODIFY | IN_CREATE | IN_MOVED_TO) < 0) {
            msg_warn("%s: inotify watch on %s: %m; checking every %d ms", sp->client, dbdir,
                     ODMRD_WAIT_POLL_MS);
            (void) close(ifd);
            ifd = -1;
        } else {
            poll_ms = ODMRD_WAIT_POLL_NOTIFY_MS;
        }
    } else if (ifd < 0) {
        msg_warn("%s: inotify_init1: %m; checking every %d ms", sp->client, ODMRD_WAIT_POLL_MS);
    }
    if (msg_verbose)
        msg_info("%s: ATRN: waiting up to %lds for mail", sp->client,
                 (long) ((end - start) / 1000));
    next_check = start + poll_ms;
    for (;;) {
        struct pollfd pfd[2] = {{.fd = 0, .events = POLLIN}, {.fd = ifd, .events = POLLIN}};
        int64_t now = now_ms(), wake = next_check < end ? next_check : end;
        int n, due = 0;

        if (now >= end)
            break;
        n = poll(pfd, ifd >= 0 ? 2 : 1, (int) (wake - now));
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

            /* Drain: one check serves every event so far. */
            while (read(ifd, buf, sizeof(buf)) > 0)
                ;
            /* Not before the gap since the last check is over. */
            if (next_check > now + ODMRD_WAIT_MIN_GAP_MS)
                next_check = now + ODMRD_WAIT_MIN_GAP_MS;
            if (next_check < now)
                next_check = now;
        }
        now = now_ms();
        due = now >= next_check;
        if (!due)
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
        /* Wait for a change now, or for the next poll. The gap keeps a
         * busy index from making every waiter look up all the time. */
        next_check = now_ms() + poll_ms;
        if (ifd >= 0) {
            int64_t gap_end = now_ms() + ODMRD_WAIT_MIN_GAP_MS;

            /* Let events of the gap collect; they are drained above. */
            while (now_ms() < gap_end && now_ms() < end) {
                struct pollfd c = {.fd = 0, .events = POLLIN};
                int64_t left = gap_end - now_ms();

                if (poll(&c, 1, (int) left) > 0 && client_spoke(sp, &c)) {
                    ret = ODMRD_WAIT_CLIENT;
                    goto done;
                }
            }
        }
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
