/*
 * queue_wake.c - wake-up files for the waiting ATRN; see queue.h.
 *
 * A waiting odmrd (odmrd_atrn_wait) makes queue_directory/wait/DOMAIN for
 * each domain it waits for and watches that file with inotify. The doors
 * into the queue (odmr-store, odmr-enqueue) touch the file of each domain
 * of a message they have committed, when it exists: the one waiter of
 * that domain wakes, no other. Cost to a door: one utimensat(2) per
 * recipient domain (ENOENT when nobody ever waited for it). The files
 * stay: at most one per domain that was ever waited for, empty.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue.h"
#include "util.h"

#define QUEUE_WAKE_DIR "wait"

int
queue_wake_path(const char *queue_dir, const char *domain, char *buf, size_t size)
{
    char lower[256];

    if (strlen(domain) >= sizeof(lower))
        return -1;
    str_copy(lower, domain, sizeof(lower));
    str_lower(lower);
    /* A file name: no '/', no "..": the domain syntax guarantees both. */
    if (!domain_valid(lower))
        return -1;
    return str_format(buf, size, "%s/%s/%s", queue_dir, QUEUE_WAKE_DIR, lower) < 0 ? -1 : 0;
}

int
queue_wake_prepare(const char *queue_dir, const char *domain, char *path, size_t size)
{
    char dir[4096];
    int fd;

    if (str_format(dir, sizeof(dir), "%s/%s", queue_dir, QUEUE_WAKE_DIR) < 0
        || queue_wake_path(queue_dir, domain, path, size) < 0) {
        errno = EINVAL;
        return -1;
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -1;
    if ((fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
        return -1;
    (void) close(fd);
    return 0;
}

void
queue_wake_env(const char *queue_dir, const QUEUE_ENV *env)
{
    for (size_t i = 0; i < env->rcpt_count; i++) {
        const char *at = strrchr(env->rcpt[i].address, '@');
        char path[4096];
        int dup = 0;

        if (at == NULL)
            continue;
        /* Once per domain of the message. */
        for (size_t k = 0; k < i && !dup; k++) {
            const char *other = strrchr(env->rcpt[k].address, '@');

            dup = other != NULL && str_casecmp(other, at) == 0;
        }
        if (dup || queue_wake_path(queue_dir, at + 1, path, sizeof(path)) < 0)
            continue;
        /* ENOENT: nobody waits for it. Any other error only costs the
         * waiter its next regular check. */
        (void) utimensat(AT_FDCWD, path, NULL, AT_SYMLINK_NOFOLLOW);
    }
}
