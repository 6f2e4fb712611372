/*
 * queue_file.c - queue files: the writer (incoming/ -> msg/XY/ID), the
 * strict reader, status marks, removal when every recipient is final,
 * deletion by the administrator, and rebuilding the index from the files.
 * See queue.h for the format and the durability order.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "queue_private.h"
#include "queue_stats.h"
#include "util.h"

/* Our own output buffer: a typical message becomes one write(2). */
#define QUEUE_WBUF_SIZE (64 * 1024)
/* "content " + 20 digits + " " + 20 digits + "\n" */
#define QUEUE_CONTENT_LINE_LEN 50
#define QUEUE_NUM_WIDTH 20
/* A header bigger than this is damage, not a message (1000 recipients of
 * 1000 bytes each stay well below). */
#define QUEUE_HEADER_MAX (16 * 1024 * 1024)
#define QUEUE_HEADER_FIRST_READ (16 * 1024)
#define QUEUE_DELETE_WAIT_MS 5000
#define QUEUE_REINDEX_BATCH 256

/* ---- growable text -------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, alloc;
} QBUF;

static void
qbuf_add(QBUF *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->alloc) {
        while (b->len + n + 1 > b->alloc)
            b->alloc = b->alloc ? b->alloc * 2 : 1024;
        b->p = x_realloc(b->p, b->alloc);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void
qbuf_str(QBUF *b, const char *s)
{
    qbuf_add(b, s, strlen(s));
}

/* "key value\n" */
static void
qbuf_line(QBUF *b, const char *key, const char *value)
{
    qbuf_str(b, key);
    qbuf_add(b, " ", 1);
    qbuf_str(b, value);
    qbuf_add(b, "\n", 1);
}

/* ---- helpers -------------------------------------------------------------- */

/* No control characters: the header is line-oriented text. */
static int
text_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char) *s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* A space-free, non-empty token (xtext, keywords). */
static int
token_ok(const char *s)
{
    return s[0] != 0 && text_ok(s) && strchr(s, ' ') == NULL;
}

void
queue_strings_free(char ***list, size_t count)
{
    if (*list == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free((*list)[i]);
    x_free(list);
}

size_t
queue_env_domains(const QUEUE_ENV *env, int queued_only, char ***domains_r)
{
    char **list = x_calloc(env->rcpt_count + 1, sizeof(*list));
    size_t count = 0;

    for (size_t i = 0; i < env->rcpt_count; i++) {
        const char *d;
        char *lower;
        size_t j;

        if (queued_only && env->rcpt[i].status != QUEUE_RCPT_QUEUED)
            continue;
        if ((d = addr_domain(env->rcpt[i].address)) == NULL)
            continue;
        lower = str_lower(x_strdup(d));
        for (j = 0; j < count; j++)
            if (strcmp(list[j], lower) == 0)
                break;
        if (j < count)
            free(lower);
        else
            list[count++] = lower;
    }
    *domains_r = list;
    return count;
}

/* ---- writer --------------------------------------------------------------- */

struct queue_writer {
    QUEUE *q;
    int fd;
    char id[QUEUE_ID_LEN + 1];
    char tmp[QUEUE_ID_LEN + 1]; /* name in incoming/ */
    char *buf;
    size_t len;
    off_t flushed;       /* file bytes already written */
    off_t content_offset;
    off_t length_field;  /* file offset of the content LENGTH digits */
    long long content_len;
    char tail[2];        /* last two content bytes: does it end in CRLF? */
    char *error;         /* first write error, reported by commit */
    char **domains;
    unsigned *domain_rcpts; /* recipients of each domain, for its figures */
    size_t domain_count;
};

static int
writer_lock(int fd)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    return fcntl(fd, F_OFD_SETLK, &fl);
}

static void
writer_free(QUEUE_WRITER *w)
{
    if (w->fd >= 0)
        (void) close(w->fd);
    free(w->buf);
    free(w->error);
    queue_strings_free(&w->domains, w->domain_count);
    free(w->domain_rcpts);
    free(w);
}

static int
writer_flush(QUEUE_WRITER *w)
{
    if (w->len == 0)
        return 0;
    if (write_all(w->fd, w->buf, w->len) < 0) {
        if (w->error == NULL)
            queue_error(&w->error, "write %s/incoming/%s: %m", w->q->dir, w->tmp);
        return -1;
    }
    w->flushed += (off_t) w->len;
    w->len = 0;
    return 0;
}

static int
writer_append(QUEUE_WRITER *w, const void *data, size_t n)
{
    if (w->error != NULL)
        return -1;
    if (w->len + n > QUEUE_WBUF_SIZE && writer_flush(w) < 0)
        return -1;
    if (n >= QUEUE_WBUF_SIZE) {
        if (write_all(w->fd, data, n) < 0) {
            queue_error(&w->error, "write %s/incoming/%s: %m", w->q->dir, w->tmp);
            return -1;
        }
        w->flushed += (off_t) n;
        return 0;
    }
    memcpy(w->buf + w->len, data, n);
    w->len += n;
    return 0;
}

static int
env_check(const QUEUE_ENV *env, char **error_r)
{
    const char *opt[] = {env->envid, env->ret, env->body};
    const char *txt[] = {env->client, env->helo, env->protocol};

    if (env->sender == NULL || !text_ok(env->sender)) {
        queue_error(error_r, "bad sender address");
        return -1;
    }
    if (env->rcpt_count == 0) {
        queue_error(error_r, "no recipients");
        return -1;
    }
    for (size_t i = 0; i < ODMR_ARRAY_LEN(opt); i++) {
        if (opt[i] != NULL && !token_ok(opt[i])) {
            queue_error(error_r, "bad envelope parameter \"%.100s\"", opt[i]);
            return -1;
        }
        if (txt[i] != NULL && (txt[i][0] == 0 || !text_ok(txt[i]))) {
            queue_error(error_r, "bad client information");
            return -1;
        }
    }
    for (size_t i = 0; i < env->rcpt_count; i++) {
        const QUEUE_RCPT *r = &env->rcpt[i];
        const char *domain;
        char lower[256];

        if (r->address == NULL || r->address[0] == 0 || !text_ok(r->address)) {
            queue_error(error_r, "bad recipient address");
            return -1;
        }
        domain = addr_domain(r->address);
        if (domain == NULL || str_copy(lower, domain, sizeof(lower)) >= sizeof(lower)
            || !domain_valid(lower)) {
            queue_error(error_r, "recipient address without a valid domain: %.100s",
                        r->address);
            return -1;
        }
        if ((r->notify != NULL && !token_ok(r->notify))
            || (r->orcpt != NULL && !token_ok(r->orcpt))) {
            queue_error(error_r, "bad NOTIFY or ORCPT for %.100s", r->address);
            return -1;
        }
        if (r->status != QUEUE_RCPT_QUEUED) {
            queue_error(error_r, "recipient %.100s: status is not queued", r->address);
            return -1;
        }
    }
    return 0;
}

QUEUE_WRITER *
queue_writer_begin(QUEUE *q, const QUEUE_ENV *env, char **error_r)
{
    QUEUE_WRITER *w;
    QBUF h = {NULL, 0, 0};
    char num[64];
    long sec = env->arrival_sec, usec = env->arrival_usec;

    if (q->flags & QUEUE_OPEN_READONLY) {
        queue_error(error_r, "queue %s: opened read-only", q->dir);
        return NULL;
    }
    if (env_check(env, error_r) < 0)
        return NULL;
    if (sec <= 0)
        now_wall(&sec, &usec);
    w = x_calloc(1, sizeof(*w));
    w->q = q;
    w->fd = -1;
    w->domain_count = queue_env_domains(env, 0, &w->domains);
    w->domain_rcpts = queue_stats_rcpts(env, w->domains, w->domain_count);

    /* O_EXCL: another process may have drawn the same ID. */
    for (int attempt = 0;; attempt++) {
        queue_new_id(w->id);
        w->fd = openat(q->incoming_fd, w->id, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (w->fd >= 0)
            break;
        if (errno != EEXIST || attempt >= 20) {
            queue_error(error_r, "create %s/incoming/%s: %m", q->dir, w->id);
            writer_free(w);
            return NULL;
        }
    }
    memcpy(w->tmp, w->id, sizeof(w->tmp));
    /* The writer's mark of life: queue_recover_incoming() leaves a locked
     * incoming/ file alone (the kernel drops the lock when we die). */
    if (writer_lock(w->fd) < 0) {
        queue_error(error_r, "lock %s/incoming/%s: %m", q->dir, w->tmp);
        (void) unlinkat(q->incoming_fd, w->tmp, 0);
        writer_free(w);
        return NULL;
    }

    qbuf_str(&h, "ODMRQ 1\n");
    qbuf_line(&h, "id", w->id);
    (void) str_format(num, sizeof(num), "%ld.%06ld", sec, usec);
    qbuf_line(&h, "time", num);
    qbuf_line(&h, "sender", env->sender);
    (void) str_format(num, sizeof(num), "%lld", env->size > 0 ? env->size : 0);
    qbuf_line(&h, "size", num);
    if (env->envid)
        qbuf_line(&h, "envid", env->envid);
    if (env->ret)
        qbuf_line(&h, "ret", env->ret);
    if (env->body)
        qbuf_line(&h, "body", env->body);
    if (env->smtputf8)
        qbuf_line(&h, "smtputf8", "1");
    if (env->client)
        qbuf_line(&h, "client", env->client);
    if (env->helo)
        qbuf_line(&h, "helo", env->helo);
    if (env->protocol)
        qbuf_line(&h, "protocol", env->protocol);
    for (size_t i = 0; i < env->rcpt_count; i++) {
        const QUEUE_RCPT *r = &env->rcpt[i];

        qbuf_str(&h, "rcpt Q ");
        qbuf_str(&h, r->notify ? r->notify : "-");
        qbuf_add(&h, " ", 1);
        qbuf_str(&h, r->orcpt ? r->orcpt : "-");
        qbuf_add(&h, " ", 1);
        qbuf_str(&h, r->address);
        qbuf_add(&h, "\n", 1);
    }
    /* The content line is fixed width so commit can fill in the length
     * in place; the offset is known now. */
    w->content_offset = (off_t) (h.len + QUEUE_CONTENT_LINE_LEN + 1);
    w->length_field = (off_t) (h.len + 8 + QUEUE_NUM_WIDTH + 1);
    (void) str_format(num, sizeof(num), "content %0*lld %0*lld\n\n", QUEUE_NUM_WIDTH,
                      (long long) w->content_offset, QUEUE_NUM_WIDTH, 0LL);
    qbuf_str(&h, num);

    w->buf = x_malloc(QUEUE_WBUF_SIZE);
    if (writer_append(w, h.p, h.len) < 0) {
        queue_error(error_r, "%s", w->error);
        free(h.p);
        queue_writer_abort(&w);
        return NULL;
    }
    free(h.p);
    return w;
}

int
queue_writer_write(QUEUE_WRITER *w, const void *buf, size_t len)
{
    if (len == 0)
        return w->error ? -1 : 0;
    if (writer_append(w, buf, len) < 0)
        return -1;
    w->content_len += (long long) len;
    if (len >= 2) {
        memcpy(w->tail, (const char *) buf + len - 2, 2);
    } else {
        w->tail[0] = w->tail[1];
        w->tail[1] = *(const char *) buf;
    }
    return 0;
}

long long
queue_writer_length(const QUEUE_WRITER *w)
{
    return w->content_len;
}

void
queue_writer_abort(QUEUE_WRITER **wp)
{
    QUEUE_WRITER *w = *wp;

    if (w == NULL)
        return;
    *wp = NULL;
    (void) unlinkat(w->q->incoming_fd, w->tmp, 0);
    writer_free(w);
}

/*
 * Link incoming/TMP to msg/XY/ID without ever replacing an existing file:
 * link(2) refuses to, so an ID collision with a queued message cannot
 * destroy that message. On collision the ID is redrawn and the id line
 * rewritten in place. incoming/TMP stays until the index commit is done:
 * while it exists, a file in msg/ under its ID may be an orphan (queue.h,
 * ORPHANS).
 */
static int
writer_link(QUEUE_WRITER *w, int *xy_fd_r, char **error_r)
{
    QUEUE *q = w->q;

    for (int attempt = 0;; attempt++) {
        int xy = queue_xy_fd(q, w->id, 1, error_r);

        if (xy < 0)
            return -1;
        if (linkat(q->incoming_fd, w->tmp, xy, w->id, 0) == 0) {
            *xy_fd_r = xy;
            return 0;
        }
        if (errno != EEXIST || attempt >= 20) {
            queue_error(error_r, "link %s/incoming/%s into msg/: %m", q->dir, w->tmp);
            return -1;
        }
        queue_new_id(w->id);
        if (pwrite(w->fd, w->id, QUEUE_ID_LEN, QUEUE_ID_LINE_OFFSET) != QUEUE_ID_LEN
            || fsync(w->fd) < 0) {
            queue_error(error_r, "rewrite %s/incoming/%s: %m", q->dir, w->tmp);
            return -1;
        }
    }
}

/* The final dot and the content length: the file is complete (not yet
 * durable). 0, or -1 with w->error. */
static int
writer_finish(QUEUE_WRITER *w)
{
    char digits[QUEUE_NUM_WIDTH + 1];

    /* A content that does not end in CRLF would make the final dot part
     * of its last line, and the file would read back as damaged. */
    if (w->content_len > 0 && (w->tail[0] != '\r' || w->tail[1] != '\n'))
        (void) queue_writer_write(w, "\r\n", 2);
    (void) queue_writer_write(w, ".\r\n", 3);
    if (w->error != NULL)
        return -1;
    (void) str_format(digits, sizeof(digits), "%0*lld", QUEUE_NUM_WIDTH, w->content_len);
    if (w->length_field >= w->flushed) {
        /* Still in our buffer: the whole file goes out in one write. */
        memcpy(w->buf + (w->length_field - w->flushed), digits, QUEUE_NUM_WIDTH);
        return writer_flush(w);
    }
    if (writer_flush(w) < 0)
        return -1;
    if (pwrite(w->fd, digits, QUEUE_NUM_WIDTH, w->length_field) != QUEUE_NUM_WIDTH) {
        queue_error(&w->error, "write %s/incoming/%s: %m", w->q->dir, w->tmp);
        return -1;
    }
    return 0;
}

int
queue_writer_commit_bulk(QUEUE_WRITER **wp, char *id_r, char ***domains_r, size_t *count_r,
                         char **error_r)
{
    QUEUE_WRITER *w = *wp;
    int xy = -1;

    *wp = NULL;
    if (writer_finish(w) < 0 || writer_link(w, &xy, &w->error) < 0) {
        (void) unlinkat(w->q->incoming_fd, w->tmp, 0);
        if (error_r != NULL) {
            *error_r = w->error;
            w->error = NULL;
        }
        writer_free(w);
        return -1;
    }
    /* Bulk loading (tests, benchmarks): no crash guarantees. */
    (void) unlinkat(w->q->incoming_fd, w->tmp, 0);
    memcpy(id_r, w->id, QUEUE_ID_LEN + 1);
    *domains_r = w->domains;
    *count_r = w->domain_count;
    w->domains = NULL;
    w->domain_count = 0;
    writer_free(w);
    return 0;
}

int
queue_writer_commit(QUEUE_WRITER **wp, char *id_r, char **error_r)
{
    QUEUE_WRITER *w = *wp;
    QUEUE *q = w->q;
    int xy = -1;

    *wp = NULL;
    if (writer_finish(w) < 0)
        goto fail_tmp;
    queue_fault("before-fsync");
    if (fsync(w->fd) < 0) {
        queue_error(&w->error, "fsync %s/incoming/%s: %m", q->dir, w->tmp);
        goto fail_tmp;
    }
    queue_fault("after-fsync");
    if (writer_link(w, &xy, &w->error) < 0)
        goto fail_tmp;
    queue_fault("after-rename");
    if (fsync(xy) < 0) {
        queue_error(&w->error, "fsync %s/msg directory: %m", q->dir);
        goto fail_msg;
    }
    if (queue_index_add(q, w->domains, w->domain_rcpts, w->domain_count, w->id, w->content_len,
                        &w->error) < 0)
        goto fail_msg;
    queue_fault("after-index");
    /* Indexed: no longer a possible orphan. (A crash before this unlink
     * leaves incoming/TMP; recovery indexes the file again, harmlessly.) */
    (void) unlinkat(q->incoming_fd, w->tmp, 0);
    memcpy(id_r, w->id, QUEUE_ID_LEN + 1);
    writer_free(w);
    return 0;

fail_msg:
    /* Not accepted: the caller says 4xx, so the file must go. A crash
     * before these unlinks leaves an orphan that recovery would deliver:
     * a duplicate, never a loss. */
    (void) unlinkat(xy, w->id, 0);
fail_tmp:
    (void) unlinkat(q->incoming_fd, w->tmp, 0);
    if (error_r != NULL) {
        *error_r = w->error;
        w->error = NULL;
    }
    writer_free(w);
    return -1;
}

/* ---- reader --------------------------------------------------------------- */

static void
file_free(QUEUE_FILE *f)
{
    if (f->fd >= 0)
        (void) close(f->fd);
    queue_env_free(&f->env);
    free(f);
}

/* Parse "N" or "N.NNNNNN" style numbers strictly. */
static int
parse_ll(const char *s, size_t len, long long *v_r)
{
    long long v = 0;
    size_t digits = 0;

    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        /* Fixed-width fields carry leading zeros; 18 significant digits
         * cannot overflow. */
        if ((digits += (v != 0 || s[i] != '0')) > 18)
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *v_r = v;
    return 0;
}

static int
set_once(char **field, const char *value)
{
    if (*field != NULL)
        return -1;
    *field = x_strdup(value);
    return 0;
}

/* A status byte this version knows. */
static int
status_valid(int c)
{
    return c == QUEUE_RCPT_QUEUED || c == QUEUE_RCPT_DELIVERED || c == QUEUE_RCPT_FAILED
           || c == QUEUE_RCPT_REMOVED || c == QUEUE_RCPT_SUCCESS || c == QUEUE_RCPT_BOUNCED;
}

/* Parse one "rcpt S NOTIFY ORCPT ADDR" value (after "rcpt "). */
static const char *
parse_rcpt(QUEUE_ENV *env, char *v, off_t status_offset)
{
    QUEUE_RCPT *r;
    char *notify, *orcpt, *addr;

    if (!status_valid(v[0]) || v[1] != ' ')
        return "bad recipient status";
    notify = v + 2;
    if ((orcpt = strchr(notify, ' ')) == NULL)
        return "bad recipient line";
    *orcpt++ = 0;
    if ((addr = strchr(orcpt, ' ')) == NULL)
        return "bad recipient line";
    *addr++ = 0;
    if (notify[0] == 0 || orcpt[0] == 0 || addr[0] == 0 || addr_domain(addr) == NULL)
        return "bad recipient line";
    env->rcpt = x_realloc(env->rcpt, (env->rcpt_count + 1) * sizeof(*env->rcpt));
    r = &env->rcpt[env->rcpt_count++];
    r->status = v[0];
    r->status_offset = status_offset;
    r->notify = strcmp(notify, "-") == 0 ? NULL : x_strdup(notify);
    r->orcpt = strcmp(orcpt, "-") == 0 ? NULL : x_strdup(orcpt);
    r->address = x_strdup(addr);
    return NULL;
}

/* Parse the header in buf[0..hlen) (hlen includes the blank line).
 * Returns NULL or why the file is damaged. */
static const char *
parse_header(QUEUE_ENV *env, char *buf, size_t hlen, const char *id)
{
    char *p = buf, *end = buf + hlen - 1; /* the final blank line's \n */
    int seen_time = 0, seen_size = 0, seen_content = 0, line_no = 0;

    while (p < end) {
        char *nl = memchr(p, '\n', (size_t) (end - p + 1));
        char *key = p, *v;
        off_t line_off = p - buf;
        long long n1, n2;

        if (nl == NULL || nl == p)
            return "bad header line";
        *nl = 0;
        p = nl + 1;
        if (memchr(key, 0, (size_t) (nl - key)) != NULL)
            return "NUL byte in header";
        line_no++;
        if (seen_content)
            return "header line after content";
        if (line_no == 1) {
            if (strcmp(key, "ODMRQ 1") != 0)
                return "not a queue file (version line)";
            continue;
        }
        if ((v = strchr(key, ' ')) == NULL)
            return "bad header line";
        *v++ = 0;
        if (line_no == 2) {
            if (strcmp(key, "id") != 0 || (id ? strcmp(v, id) != 0 : !queue_id_valid(v)))
                return "id line does not match the file name";
            memcpy(env->id, v, QUEUE_ID_LEN + 1);
            continue;
        }
        if (strcmp(key, "time") == 0) {
            char *dot = strchr(v, '.');

            if (seen_time++ || dot == NULL || parse_ll(v, (size_t) (dot - v), &n1) < 0
                || strlen(dot + 1) != 6 || parse_ll(dot + 1, 6, &n2) < 0)
                return "bad time line";
            env->arrival_sec = (long) n1;
            env->arrival_usec = (long) n2;
        } else if (strcmp(key, "sender") == 0) {
            if (set_once(&env->sender, v) < 0)
                return "two sender lines";
        } else if (strcmp(key, "size") == 0) {
            if (seen_size++ || parse_ll(v, strlen(v), &env->size) < 0)
                return "bad size line";
        } else if (strcmp(key, "envid") == 0) {
            if (set_once(&env->envid, v) < 0)
                return "two envid lines";
        } else if (strcmp(key, "ret") == 0) {
            if (set_once(&env->ret, v) < 0)
                return "two ret lines";
        } else if (strcmp(key, "body") == 0) {
            if (set_once(&env->body, v) < 0)
                return "two body lines";
        } else if (strcmp(key, "smtputf8") == 0) {
            if (env->smtputf8 || strcmp(v, "1") != 0)
                return "bad smtputf8 line";
            env->smtputf8 = 1;
        } else if (strcmp(key, "client") == 0) {
            if (set_once(&env->client, v) < 0)
                return "two client lines";
        } else if (strcmp(key, "helo") == 0) {
            if (set_once(&env->helo, v) < 0)
                return "two helo lines";
        } else if (strcmp(key, "protocol") == 0) {
            if (set_once(&env->protocol, v) < 0)
                return "two protocol lines";
        } else if (strcmp(key, "rcpt") == 0) {
            const char *why = parse_rcpt(env, v, line_off + 5);

            if (why != NULL)
                return why;
        } else if (strcmp(key, "content") == 0) {
            if (strlen(v) != 2 * QUEUE_NUM_WIDTH + 1 || v[QUEUE_NUM_WIDTH] != ' '
                || parse_ll(v, QUEUE_NUM_WIDTH, &n1) < 0
                || parse_ll(v + QUEUE_NUM_WIDTH + 1, QUEUE_NUM_WIDTH, &n2) < 0)
                return "bad content line";
            env->content_offset = (off_t) n1;
            env->content_length = n2;
            seen_content = 1;
        } else {
            return "unknown header record";
        }
    }
    if (line_no < 2 || !seen_time || env->sender == NULL || !seen_size)
        return "missing header records";
    if (env->rcpt_count == 0)
        return "no recipients";
    if (!seen_content)
        return "no content line";
    if ((size_t) env->content_offset != hlen)
        return "content offset does not match the header";
    return NULL;
}

int
queue_env_parse(const char *buf, size_t len, const char *id, QUEUE_ENV *env,
                char **error_r)
{
    const char *hend = len >= 2 ? memmem(buf, len, "\n\n", 2) : NULL;
    const char *why = "no end of header";
    char *copy;

    memset(env, 0, sizeof(*env));
    if (hend != NULL && (size_t) (hend - buf) + 2 <= QUEUE_HEADER_MAX) {
        size_t hlen = (size_t) (hend - buf) + 2;

        copy = x_malloc(hlen);
        memcpy(copy, buf, hlen);
        why = parse_header(env, copy, hlen, id);
        free(copy);
    }
    if (why == NULL)
        return 0;
    queue_env_free(env);
    memset(env, 0, sizeof(*env));
    queue_error(error_r, "damaged: %s", why);
    return -1;
}

static QUEUE_FILE *
file_damaged(QUEUE_FILE *f, const char *id, const char *why, char **error_r)
{
    queue_error(error_r, "queue file %s: damaged: %s", id, why);
    file_free(f);
    errno = EINVAL;
    return NULL;
}

static QUEUE_FILE *
file_failed(QUEUE_FILE *f, const char *id, const char *what, char **error_r)
{
    int saved = errno;

    queue_error(error_r, "queue file %s: %s: %s", id, what, strerror(saved));
    file_free(f);
    errno = saved;
    return NULL;
}

QUEUE_FILE *
queue_file_open(QUEUE *q, const char *id, int writable, char **error_r)
{
    QUEUE_FILE *f;
    struct stat st;
    char *buf = NULL, *hend = NULL;
    size_t alloc, got = 0;
    const char *why;
    char tail[5];
    int xy;

    if (!queue_id_valid(id)) {
        queue_error(error_r, "bad queue ID \"%.40s\"", id);
        errno = EINVAL;
        return NULL;
    }
    if (writable && (q->flags & QUEUE_OPEN_READONLY)) {
        queue_error(error_r, "queue %s: opened read-only", q->dir);
        errno = EROFS;
        return NULL;
    }
    if ((xy = queue_xy_fd(q, id, 0, error_r)) < 0)
        return NULL;
    f = x_calloc(1, sizeof(*f));
    f->q = q;
    f->writable = writable;
    f->fd = openat(xy, id, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (f->fd < 0) {
        if (errno == ENOENT) {
            file_free(f);
            errno = ENOENT;
            return NULL;
        }
        return file_failed(f, id, "open", error_r);
    }
    if (fstat(f->fd, &st) < 0)
        return file_failed(f, id, "fstat", error_r);

    /* Read until the blank line that ends the header. */
    alloc = st.st_size < QUEUE_HEADER_FIRST_READ ? (size_t) st.st_size + 1
                                                 : QUEUE_HEADER_FIRST_READ;
    buf = x_malloc(alloc);
    for (;;) {
        ssize_t n = pread(f->fd, buf + got, alloc - got, (off_t) got);
        char *s;

        if (n < 0) {
            if (errno == EINTR)
                continue;
            free(buf);
            return file_failed(f, id, "read", error_r);
        }
        s = got > 0 ? buf + got - 1 : buf;
        got += (size_t) n;
        if ((hend = memmem(s, got - (size_t) (s - buf), "\n\n", 2)) != NULL)
            break;
        if (n == 0 || got >= QUEUE_HEADER_MAX) {
            free(buf);
            return file_damaged(f, id, "no end of header", error_r);
        }
        if (got == alloc) {
            alloc *= 2;
            buf = x_realloc(buf, alloc);
        }
    }
    why = parse_header(&f->env, buf, (size_t) (hend - buf) + 2, id);
    free(buf);
    if (why != NULL)
        return file_damaged(f, id, why, error_r);
    if (f->env.content_length < 3
        || (long long) st.st_size != (long long) f->env.content_offset + f->env.content_length)
        return file_damaged(f, id, "file size does not match the content line", error_r);
    if (f->env.content_length == 3) {
        if (pread(f->fd, tail, 3, f->env.content_offset) != 3 || memcmp(tail, ".\r\n", 3) != 0)
            return file_damaged(f, id, "content does not end with \".\"", error_r);
    } else if (pread(f->fd, tail, 5, st.st_size - 5) != 5
               || memcmp(tail, "\r\n.\r\n", 5) != 0) {
        return file_damaged(f, id, "content does not end with CRLF.CRLF", error_r);
    }
    return f;
}

const QUEUE_ENV *
queue_file_env(const QUEUE_FILE *f)
{
    return &f->env;
}

int
queue_file_fd(const QUEUE_FILE *f)
{
    return f->fd;
}

static int file_reread_status(QUEUE_FILE *f);

/* Append one line to status/ID. */
static int
status_append(QUEUE_FILE *f, const char *line, char **error_r)
{
    int fd = openat(f->q->status_fd, f->env.id, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);

    if (fd < 0 || write_all(fd, line, strlen(line)) < 0) {
        queue_error(error_r, "write %s/status/%s: %m", f->q->dir, f->env.id);
        if (fd >= 0)
            (void) close(fd);
        return -1;
    }
    (void) close(fd);
    return 0;
}

/* A status-file field: no control characters (tabs and newlines separate
 * fields and lines), "-" when empty. */
static const char *
status_field(char *buf, size_t size, const char *s)
{
    if (s == NULL || *s == 0)
        return "-";
    str_copy(buf, s, size);
    for (char *p = buf; *p; p++)
        if ((unsigned char) *p < 0x20 || *p == 0x7f)
            *p = ' ';
    return buf;
}

int
queue_file_mark_reason(QUEUE_FILE *f, size_t i, int status, const QUEUE_REASON *reason,
                       char **error_r)
{
    char c = (char) status;

    if (!f->writable || i >= f->env.rcpt_count || !status_valid(status)) {
        queue_error(error_r, "%s: bad mark %c for recipient %zu", f->env.id, status, i);
        errno = EINVAL;
        return -1;
    }
    if (f->env.rcpt[i].status != status) {
        if (pwrite(f->fd, &c, 1, f->env.rcpt[i].status_offset) != 1) {
            queue_error(error_r, "%s: write status: %m", f->env.id);
            return -1;
        }
        f->env.rcpt[i].status = status;
        f->marked = 1;
    }
    if (reason != NULL) {
        char dsn[16], relay[300], diag[600], text[1100], line[2100];

        (void) str_format(line, sizeof(line), "%zu\t%ld\t%c\t%s\t%s\t%s\t%s\n", i,
                          reason->time, reason->event ? reason->event : QUEUE_EVENT_DEFERRED,
                          status_field(dsn, sizeof(dsn), reason->dsn),
                          status_field(relay, sizeof(relay), reason->relay),
                          status_field(diag, sizeof(diag), reason->diag),
                          status_field(text, sizeof(text), reason->text));
        if (status_append(f, line, error_r) < 0)
            return -1;
    }
    return 0;
}

int
queue_file_mark(QUEUE_FILE *f, size_t i, int status, const char *reason)
{
    QUEUE_REASON r;
    const char *p = reason;
    char *error = NULL;
    long sec, usec;
    int ret;

    /* "CODE DSN text", the form of the first status files. */
    memset(&r, 0, sizeof(r));
    now_wall(&sec, &usec);
    r.time = sec;
    r.event = status == QUEUE_RCPT_QUEUED ? QUEUE_EVENT_DEFERRED : QUEUE_EVENT_FAILED;
    if (p != NULL && strlen(p) > 4 && p[3] == ' ') {
        const char *sp = strchr(p + 4, ' ');

        if (sp != NULL && (size_t) (sp - (p + 4)) < sizeof(r.dsn)) {
            memcpy(r.dsn, p + 4, (size_t) (sp - (p + 4)));
            r.dsn[sp - (p + 4)] = 0;
            p = sp + 1;
        }
    }
    r.text = (char *) p;
    ret = queue_file_mark_reason(f, i, status, reason ? &r : NULL, &error);
    if (ret < 0) {
        int saved = errno;

        free(error);
        errno = saved;
    }
    return ret;
}

void
queue_reasons_free(QUEUE_REASON **reasons, size_t count)
{
    if (*reasons == NULL)
        return;
    for (size_t i = 0; i < count; i++) {
        free((*reasons)[i].relay);
        free((*reasons)[i].diag);
        free((*reasons)[i].text);
    }
    x_free(reasons);
}

static char *
field_dup(const char *s)
{
    return strcmp(s, "-") == 0 ? NULL : x_strdup(s);
}

/* One status-file line into reasons[] (the last line of a recipient wins). */
static void
reason_parse_line(QUEUE_FILE *f, char *line, QUEUE_REASON *reasons, int *warned)
{
    char *field[7];
    size_t nf = 0;
    char *p = line;
    unsigned long idx;
    char *end;
    QUEUE_REASON *r;

    if (strchr(line, '\t') == NULL) {
        /* First format: "INDEX CODE DSN text". */
        char *code, *dsn, *text;

        idx = strtoul(line, &end, 10);
        if (end == line || *end != ' ' || idx >= f->env.rcpt_count)
            return;
        code = end + 1;
        if ((dsn = strchr(code, ' ')) == NULL)
            return;
        *dsn++ = 0;
        text = strchr(dsn, ' ');
        if (text != NULL)
            *text++ = 0;
        r = reasons + idx;
        free(r->relay);
        free(r->diag);
        free(r->text);
        memset(r, 0, sizeof(*r));
        r->event = code[0] == '5' ? QUEUE_EVENT_FAILED : QUEUE_EVENT_DEFERRED;
        str_copy(r->dsn, dsn, sizeof(r->dsn));
        r->text = x_strdup(text ? text : "");
        return;
    }
    while (nf < 7) {
        field[nf++] = p;
        if ((p = strchr(p, '\t')) == NULL)
            break;
        *p++ = 0;
    }
    if (nf < 7 || field[2][0] == 0 || field[2][1] != 0)
        return;
    if (strcmp(field[0], "*") == 0) {
        if (field[2][0] == QUEUE_EVENT_WARNED && warned != NULL)
            *warned = 1;
        return;
    }
    idx = strtoul(field[0], &end, 10);
    if (end == field[0] || *end != 0 || idx >= f->env.rcpt_count)
        return;
    r = reasons + idx;
    free(r->relay);
    free(r->diag);
    free(r->text);
    memset(r, 0, sizeof(*r));
    r->event = field[2][0];
    r->time = strtol(field[1], NULL, 10);
    if (strcmp(field[3], "-") != 0)
        str_copy(r->dsn, field[3], sizeof(r->dsn));
    r->relay = field_dup(field[4]);
    r->diag = field_dup(field[5]);
    r->text = x_strdup(strcmp(field[6], "-") == 0 ? "" : field[6]);
}

/* status/ID files are small (one line per result); this bounds them. */
#define QUEUE_STATUS_FILE_MAX (4 * 1024 * 1024)

int
queue_file_reasons(QUEUE_FILE *f, QUEUE_REASON **reasons_r, int *warned_r, char **error_r)
{
    QUEUE_REASON *reasons = x_calloc(f->env.rcpt_count ? f->env.rcpt_count : 1,
                                     sizeof(*reasons));
    int fd = openat(f->q->status_fd, f->env.id, O_RDONLY | O_CLOEXEC);
    int warned = 0;
    struct stat st;
    char *buf, *p;
    ssize_t n;

    if (fd < 0) {
        if (errno != ENOENT) {
            queue_error(error_r, "open %s/status/%s: %m", f->q->dir, f->env.id);
            free(reasons);
            return -1;
        }
        *reasons_r = reasons;
        if (warned_r)
            *warned_r = 0;
        return 0;
    }
    if (fstat(fd, &st) < 0 || st.st_size > QUEUE_STATUS_FILE_MAX) {
        queue_error(error_r, "%s/status/%s: %s", f->q->dir, f->env.id,
                    st.st_size > QUEUE_STATUS_FILE_MAX ? "too large" : strerror(errno));
        (void) close(fd);
        free(reasons);
        return -1;
    }
    buf = x_malloc((size_t) st.st_size + 1);
    n = pread(fd, buf, (size_t) st.st_size, 0);
    (void) close(fd);
    if (n < 0) {
        queue_error(error_r, "read %s/status/%s: %m", f->q->dir, f->env.id);
        free(buf);
        free(reasons);
        return -1;
    }
    buf[n] = 0;
    for (p = buf; *p;) {
        char *nl = strchr(p, '\n');

        if (nl == NULL)
            break; /* a line a crash cut short */
        *nl = 0;
        reason_parse_line(f, p, reasons, &warned);
        p = nl + 1;
    }
    free(buf);
    *reasons_r = reasons;
    if (warned_r)
        *warned_r = warned;
    return 0;
}

int
queue_file_set_warned(QUEUE_FILE *f, char **error_r)
{
    char line[64];
    long sec, usec;

    now_wall(&sec, &usec);
    (void) str_format(line, sizeof(line), "*\t%ld\t%c\t-\t-\t-\tdelay warning sent\n", sec,
                      QUEUE_EVENT_WARNED);
    return status_append(f, line, error_r);
}

int
queue_file_lock(QUEUE_FILE *f, char **error_r)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    while (fcntl(f->fd, F_OFD_SETLKW, &fl) < 0) {
        if (errno != EINTR) {
            queue_error(error_r, "lock queue file %s: %m", f->env.id);
            return -1;
        }
    }
    f->locked = 1;
    if (file_reread_status(f) < 0) {
        queue_error(error_r, "read queue file %s: %m", f->env.id);
        return -1;
    }
    return 0;
}

static void
file_unlock(QUEUE_FILE *f)
{
    struct flock fl;

    if (!f->locked || f->fd < 0)
        return;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    (void) fcntl(f->fd, F_OFD_SETLK, &fl);
    f->locked = 0;
}

void
queue_file_close(QUEUE_FILE **fp)
{
    QUEUE_FILE *f = *fp;

    if (f == NULL)
        return;
    *fp = NULL;
    /* The descriptor may live on until queue_sync(): the lock goes now. */
    file_unlock(f);
    /* Marks are made durable in bulk by queue_sync(). */
    if (f->marked && f->fd >= 0) {
        queue_sync_fd_add(f->q, f->fd);
        f->fd = -1;
    }
    file_free(f);
}

/* Re-read every status byte from the disk: other domains' flushes write
 * their own bytes through their own descriptors. */
static int
file_reread_status(QUEUE_FILE *f)
{
    size_t len = (size_t) f->env.content_offset;
    char *buf = x_malloc(len);
    ssize_t n = pread(f->fd, buf, len, 0);

    if (n != (ssize_t) len) {
        free(buf);
        if (n >= 0)
            errno = EIO;
        return -1;
    }
    for (size_t i = 0; i < f->env.rcpt_count; i++) {
        char c = buf[f->env.rcpt[i].status_offset];

        if (status_valid(c))
            f->env.rcpt[i].status = c;
    }
    free(buf);
    return 0;
}

int
queue_env_owed(const QUEUE_ENV *env)
{
    for (size_t i = 0; i < env->rcpt_count; i++)
        if (env->rcpt[i].status == QUEUE_RCPT_FAILED || env->rcpt[i].status == QUEUE_RCPT_SUCCESS)
            return 1;
    return 0;
}

static int
rcpt_in_domain(const QUEUE_RCPT *r, const char *domain)
{
    const char *d = addr_domain(r->address);

    return d != NULL && str_casecmp(d, domain) == 0;
}

/* Every domain's index entry of f goes (batched), and the file itself:
 * the removal thread unlinks msg/XY/ID and status/ID and closes the
 * descriptor. The caller has dropped its lock on f. 0 or -1. */
static int
file_discard(QUEUE *q, QUEUE_FILE *f, char **error_r)
{
    char **domains;
    size_t n = queue_env_domains(&f->env, 0, &domains);
    int xy = queue_xy_fd(q, f->env.id, 0, NULL), ret = 0;

    if (xy < 0) {
        (void) unlinkat(q->status_fd, f->env.id, 0);
    } else {
        int fd = f->fd;

        f->fd = -1;
        if (queue_remove_file(q, xy, f->env.id, fd) < 0) {
            queue_error(error_r, "remove queue file %s: %m", f->env.id);
            ret = -1;
        }
    }
    if (ret == 0)
        for (size_t i = 0; i < n; i++)
            queue_pending_add(q, domains[i], f->env.id);
    queue_strings_free(&domains, n);
    f->marked = 0; /* gone: nothing left to sync */
    return ret;
}

int
queue_file_done(QUEUE *q, QUEUE_FILE **fp, const char *domain, char **error_r)
{
    QUEUE_FILE *f = *fp;
    char *key = str_lower(x_strdup(domain));
    struct flock fl;
    int pending_here = 0, pending_all = 0, owed = 0, locked = 0;
    unsigned queued_here = 0;
    int ret = 0;

    *fp = NULL;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    /* Serialize the "is everything final?" decision between the flushes of
     * different domains of this message. */
    while (fcntl(f->fd, F_OFD_SETLKW, &fl) < 0) {
        if (errno != EINTR) {
            queue_error(error_r, "lock queue file %s: %m", f->env.id);
            ret = -1;
            goto out;
        }
    }
    locked = 1;
    if (file_reread_status(f) < 0) {
        queue_error(error_r, "read queue file %s: %m", f->env.id);
        ret = -1;
        goto out;
    }
    owed = queue_env_owed(&f->env);
    for (size_t i = 0; i < f->env.rcpt_count; i++) {
        if (f->env.rcpt[i].status != QUEUE_RCPT_QUEUED)
            continue;
        pending_all = 1;
        if (rcpt_in_domain(&f->env.rcpt[i], key)) {
            pending_here = 1;
            queued_here++;
        }
    }
    /* A notice is owed: on the notice list, in the same transaction as
     * the index removals below (queue.h, NOTICES). */
    if (owed)
        queue_pending_notice(q, f->env.id, 1);
    if (!pending_all && owed) {
        /* Nothing left to send, but a notice is owed: the file stays
         * (odmr-queue shows it) and leaves the index, so no ATRN sends it
         * again. */
        char **domains;
        size_t n = queue_env_domains(&f->env, 0, &domains);

        for (size_t i = 0; i < n; i++)
            queue_pending_add(q, domains[i], f->env.id);
        queue_strings_free(&domains, n);
    } else if (!pending_all) {
        /* Unlock before the descriptor goes to the removal thread. */
        fl.l_type = F_UNLCK;
        (void) fcntl(f->fd, F_OFD_SETLK, &fl);
        locked = 0;
        if (file_discard(q, f, error_r) < 0) {
            ret = -1;
            goto out;
        }
    } else if (!pending_here) {
        queue_pending_add(q, key, f->env.id);
    } else {
        /* A recipient of this domain is still queued (deferred), so the
         * entry stays and the next flush tries again; the domain's figures
         * follow the recipients delivered meanwhile, in the transaction
         * that comes after their marks are on disk. */
        queue_pending_recount(q, key, f->env.id, queued_here);
    }

out:
    free(key);
    /* The descriptor may live on until queue_sync() (for the fdatasync of
     * the marks): drop the lock now, or the next flush of another domain
     * of this message, even in this process, would wait on it for ever. */
    if (locked) {
        fl.l_type = F_UNLCK;
        (void) fcntl(f->fd, F_OFD_SETLK, &fl);
    }
    queue_file_close(&f);
    if (ret == 0 && (q->pending_count >= QUEUE_BATCH_MAX || q->sync_count >= QUEUE_BATCH_MAX))
        ret = queue_sync(q, error_r);
    return ret;
}

int
queue_file_settle(QUEUE *q, QUEUE_FILE **fp, char **error_r)
{
    QUEUE_FILE *f = *fp;
    int queued = 0, owed, ret = 0;

    *fp = NULL;
    if (queue_file_lock(f, error_r) < 0) {
        queue_file_close(&f);
        return -1;
    }
    for (size_t i = 0; i < f->env.rcpt_count; i++)
        if (f->env.rcpt[i].status == QUEUE_RCPT_QUEUED)
            queued = 1;
    owed = queue_env_owed(&f->env);
    if (!owed)
        queue_pending_notice(q, f->env.id, 0);
    if (!queued && !owed) {
        /* The marks that settle it are on disk before the file goes: a
         * crash before the unlink then leaves a file that owes nothing
         * (reindex removes it), never one that owes a notice and is on no
         * list. */
        if (f->marked && fdatasync(f->fd) < 0) {
            queue_error(error_r, "fdatasync queue file %s: %m", f->env.id);
            queue_file_close(&f);
            return -1;
        }
        file_unlock(f);
        ret = file_discard(q, f, error_r);
    }
    queue_file_close(&f);
    if (ret == 0 && (q->pending_count >= QUEUE_BATCH_MAX || q->sync_count >= QUEUE_BATCH_MAX))
        ret = queue_sync(q, error_r);
    return ret;
}

void
queue_env_free(QUEUE_ENV *env)
{
    if (env == NULL)
        return;
    free(env->sender);
    free(env->envid);
    free(env->ret);
    free(env->body);
    free(env->client);
    free(env->helo);
    free(env->protocol);
    for (size_t i = 0; i < env->rcpt_count; i++) {
        free(env->rcpt[i].address);
        free(env->rcpt[i].notify);
        free(env->rcpt[i].orcpt);
    }
    free(env->rcpt);
    memset(env, 0, sizeof(*env));
}

/* ---- walking, deleting, reindexing ---------------------------------------- */

static int
hex_upper(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static int
id_compare(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

int
queue_walk_files(QUEUE *q, int (*fn)(const char *id, void *ctx), void *ctx, char **error_r)
{
    int fd = openat(q->msg_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *top;
    struct dirent *de;
    char **ids = NULL;
    size_t count = 0, alloc = 0;
    int ret = 0;

    if (fd < 0 || (top = fdopendir(fd)) == NULL) {
        queue_error(error_r, "open %s/msg: %m", q->dir);
        if (fd >= 0)
            (void) close(fd);
        return -1;
    }
    /* Collected and sorted first, so callbacks may remove files and the
     * order is oldest first. */
    while ((de = readdir(top)) != NULL) {
        const char *xy = de->d_name;
        struct dirent *fe;
        DIR *sub;
        int sfd;

        if (!(hex_upper(xy[0]) && hex_upper(xy[1]) && xy[2] == 0))
            continue;
        sfd = openat(q->msg_fd, xy, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sfd < 0 || (sub = fdopendir(sfd)) == NULL) {
            if (sfd >= 0)
                (void) close(sfd);
            continue;
        }
        while ((fe = readdir(sub)) != NULL) {
            if (!queue_id_valid(fe->d_name) || fe->d_name[QUEUE_ID_LEN - 2] != xy[0]
                || fe->d_name[QUEUE_ID_LEN - 1] != xy[1])
                continue;
            if (count == alloc) {
                alloc = alloc ? alloc * 2 : 256;
                ids = x_realloc(ids, alloc * sizeof(*ids));
            }
            ids[count++] = x_strdup(fe->d_name);
        }
        (void) closedir(sub);
    }
    (void) closedir(top);
    if (count > 1)
        qsort(ids, count, sizeof(*ids), id_compare);
    for (size_t i = 0; i < count && ret == 0; i++)
        ret = fn(ids[i], ctx);
    queue_strings_free(&ids, count);
    return ret;
}

static int
domain_compare(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

int
queue_delete(QUEUE *q, const char *id, char **error_r)
{
    QUEUE_FILE *f;
    char **domains = NULL;
    size_t n = 0, locked = 0;
    int *locks = NULL;
    int xy, ret = -1, saved = 0;
    char *error = NULL;

    if (q->flags & QUEUE_OPEN_READONLY) {
        queue_error(error_r, "queue %s: opened read-only", q->dir);
        errno = EROFS;
        return -1;
    }
    if ((f = queue_file_open(q, id, 0, &error)) == NULL) {
        if (errno == ENOENT) {
            queue_error(error_r, "%s: no such message", id);
            errno = ENOENT;
            return -1;
        }
        if (errno != EINVAL || !queue_id_valid(id)) {
            saved = errno;
            if (error_r != NULL)
                *error_r = error;
            else
                free(error);
            errno = saved;
            return -1;
        }
        /* Damaged: its domains are unknown, but the administrator asked
         * for it by name. Dangling index entries are dropped when seen. */
        x_free(&error);
    } else {
        n = queue_env_domains(&f->env, 0, &domains);
        queue_file_close(&f);
    }
    /* Sorted, so two deletes of overlapping domain sets cannot deadlock. */
    if (n > 1)
        qsort(domains, n, sizeof(*domains), domain_compare);
    locks = x_calloc(n + 1, sizeof(*locks));
    for (locked = 0; locked < n; locked++) {
        locks[locked] = queue_lock_domain(q, domains[locked], QUEUE_DELETE_WAIT_MS, error_r);
        if (locks[locked] < 0) {
            saved = errno ? errno : EIO;
            goto out;
        }
    }
    xy = queue_xy_fd(q, id, 0, NULL);
    if (xy < 0 || unlinkat(xy, id, 0) < 0) {
        saved = errno == ENOENT || xy < 0 ? ENOENT : errno;
        queue_error(error_r, "remove queue file %s: %s", id, strerror(saved));
        goto out;
    }
    (void) unlinkat(q->status_fd, id, 0);
    {
        QUEUE_PAIR *pairs = x_calloc(n + 1, sizeof(*pairs));

        for (size_t i = 0; i < n; i++) {
            pairs[i].domain = domains[i];
            memcpy(pairs[i].id, id, QUEUE_ID_LEN + 1);
        }
        /* Off the notice list too: a deleted message owes nothing. */
        pairs[n].domain = (char *) QUEUE_NOTICE_KEY;
        memcpy(pairs[n].id, id, QUEUE_ID_LEN + 1);
        /* The file is gone already: a failure here only leaves dangling
         * entries that the next flush drops. */
        if (queue_index_remove(q, pairs, n + 1, &error) < 0) {
            msg_warn("%s", error);
            x_free(&error);
        }
        free(pairs);
    }
    ret = 0;
out:
    for (size_t i = 0; i < locked; i++)
        queue_unlock_domain(locks[i]);
    free(locks);
    queue_strings_free(&domains, n);
    if (ret < 0)
        errno = saved;
    return ret;
}

typedef struct {
    QUEUE *q;
    QUEUE_PAIR *pairs;
    size_t pair_count, pair_alloc, files_in_batch;
    size_t files, entries, damaged, notices;
    char *error;
} REINDEX_CTX;

static int
reindex_flush(REINDEX_CTX *r)
{
    int ret = queue_index_add_pairs(r->q, r->pairs, r->pair_count, &r->error);

    for (size_t i = 0; ret == 0 && i < r->pair_count; i++)
        r->entries += (unsigned char) r->pairs[i].domain[0] >= 0x20; /* not the notice list */
    for (size_t i = 0; i < r->pair_count; i++)
        free(r->pairs[i].domain);
    r->pair_count = 0;
    r->files_in_batch = 0;
    return ret;
}

static void
reindex_push(REINDEX_CTX *r, const char *key, const char *id, int add)
{
    if (r->pair_count == r->pair_alloc) {
        r->pair_alloc = r->pair_alloc ? r->pair_alloc * 2 : 256;
        r->pairs = x_realloc(r->pairs, r->pair_alloc * sizeof(*r->pairs));
    }
    r->pairs[r->pair_count].domain = x_strdup(key);
    memcpy(r->pairs[r->pair_count].id, id, QUEUE_ID_LEN + 1);
    r->pairs[r->pair_count].add = add;
    r->pairs[r->pair_count].rcpts = 0;
    r->pairs[r->pair_count].bytes = 0;
    r->pair_count++;
}

static int
reindex_one(const char *id, void *ctx)
{
    REINDEX_CTX *r = ctx;
    char *error = NULL;
    QUEUE_FILE *f = queue_file_open(r->q, id, 0, &error);
    char **domains;
    size_t n;

    if (f == NULL) {
        if (errno == ENOENT)
            return 0; /* flushed meanwhile */
        msg_warn("%s", error);
        free(error);
        if (errno == EINVAL)
            r->damaged++;
        return 0;
    }
    n = queue_env_domains(&f->env, 1, &domains);
    if (queue_env_owed(&f->env)) {
        /* A notice is owed: back on the notice list. */
        reindex_push(r, QUEUE_NOTICE_KEY, id, 1);
        r->notices++;
    }
    if (n == 0 && queue_env_owed(&f->env)) {
        /* Waiting for its notice: kept, not indexed. */
        r->files++;
    } else if (n == 0) {
        int xy = queue_xy_fd(r->q, id, 0, NULL);

        /* Every recipient is final: finish the removal a crash interrupted. */
        msg_info("%s: removed: every recipient is final", id);
        if (xy >= 0)
            (void) unlinkat(xy, id, 0);
        (void) unlinkat(r->q->status_fd, id, 0);
    } else {
        r->files++;
    }
    {
        unsigned *rcpts = queue_stats_rcpts(&f->env, domains, n);

        for (size_t i = 0; i < n; i++) {
            reindex_push(r, domains[i], id, 1);
            r->pairs[r->pair_count - 1].rcpts = rcpts[i];
            r->pairs[r->pair_count - 1].bytes = f->env.content_length;
        }
        free(rcpts);
    }
    queue_strings_free(&domains, n);
    queue_file_close(&f);
    if (++r->files_in_batch >= QUEUE_REINDEX_BATCH)
        return reindex_flush(r) < 0 ? -1 : 0;
    return 0;
}

/*
 * Is incoming/NAME left by a dead writer? A live writer holds an OFD lock
 * on it from the moment it is created; the age margin covers the instant
 * between creation and locking. Returns an open descriptor (read-write,
 * locked by us) for a dead writer's file, -1 otherwise.
 */
static int
incoming_dead(QUEUE *q, const char *name, time_t cutoff)
{
    struct stat st;
    int fd;

    if (strlen(name) != QUEUE_ID_LEN || !queue_id_valid(name))
        return -1;
    fd = openat(q->incoming_fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_mtime > cutoff
        || writer_lock(fd) < 0) {
        (void) close(fd);
        return -1;
    }
    return fd;
}

/* The ID in a queue file's id line (rewritten after an ID collision, so
 * not always the name in incoming/). */
static int
incoming_id(int fd, char *id_r)
{
    char head[QUEUE_ID_LINE_OFFSET + QUEUE_ID_LEN + 1];

    if (pread(fd, head, sizeof(head), 0) != (ssize_t) sizeof(head)
        || memcmp(head, "ODMRQ 1\nid ", QUEUE_ID_LINE_OFFSET) != 0
        || head[QUEUE_ID_LINE_OFFSET + QUEUE_ID_LEN] != '\n')
        return -1;
    memcpy(id_r, head + QUEUE_ID_LINE_OFFSET, QUEUE_ID_LEN);
    id_r[QUEUE_ID_LEN] = 0;
    return queue_id_valid(id_r) ? 0 : -1;
}

/* The kernel's boot ID, "" when unknown. */
static void
boot_id(char *buf, size_t size)
{
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, size - 1);

    if (fd >= 0)
        (void) close(fd);
    buf[n > 0 ? n : 0] = 0;
    buf[strcspn(buf, "\n")] = 0;
}

static int
scan_one(const char *id, void *ctx)
{
    return reindex_one(id, ctx);
}

/*
 * After a reboot (a power failure, a kernel crash) the incoming/ entry
 * that marks a possible orphan may not have reached the disk: once per
 * boot, every file in msg/ gets its index entries again (queue.h,
 * ORPHANS). The boot ID last scanned is in db/boot-id.
 */
static int
recover_after_boot(QUEUE *q, size_t *files_r, char **error_r)
{
    char now_id[64], seen[64] = "", path[4096], tmp[4096];
    REINDEX_CTX r;
    int fd, ret;

    boot_id(now_id, sizeof(now_id));
    (void) str_format(path, sizeof(path), "%s/db/boot-id", q->dir);
    if (now_id[0] == 0)
        return 0;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
        ssize_t n = read(fd, seen, sizeof(seen) - 1);

        seen[n > 0 ? n : 0] = 0;
        seen[strcspn(seen, "\n")] = 0;
        (void) close(fd);
    }
    if (strcmp(seen, now_id) == 0)
        return 0;
    memset(&r, 0, sizeof(r));
    r.q = q;
    ret = queue_walk_files(q, scan_one, &r, error_r);
    if (ret == 0 && r.pair_count > 0)
        ret = reindex_flush(&r);
    for (size_t i = 0; i < r.pair_count; i++)
        free(r.pairs[i].domain);
    free(r.pairs);
    if (ret < 0) {
        if (r.error != NULL && error_r != NULL && *error_r == NULL)
            *error_r = r.error;
        else
            free(r.error);
        return -1;
    }
    *files_r = r.files;
    (void) str_format(tmp, sizeof(tmp), "%s.%ld", path, (long) getpid());
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) >= 0) {
        ret = write(fd, now_id, strlen(now_id)) == (ssize_t) strlen(now_id) ? 0 : -1;
        if (close(fd) < 0 || ret < 0 || rename(tmp, path) < 0)
            fd = -1;
    }
    if (fd < 0) {
        queue_error(error_r, "write %s: %m", path);
        (void) unlink(tmp);
        return -1;
    }
    msg_info("queue %s: first run since boot: %zu queue files checked for index entries",
             q->dir, r.files);
    return 0;
}

static int
recover_incoming(QUEUE *q, long now, long min_age, size_t *recovered_r,
                 size_t *removed_r, char **error_r)
{
    int dfd = openat(q->incoming_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REINDEX_CTX r;
    struct dirent *de;
    size_t recovered = 0, removed = 0;
    int ret = 0;
    DIR *d;

    if (dfd < 0 || (d = fdopendir(dfd)) == NULL) {
        queue_error(error_r, "open %s/incoming: %m", q->dir);
        if (dfd >= 0)
            (void) close(dfd);
        return -1;
    }
    memset(&r, 0, sizeof(r));
    r.q = q;
    while (ret == 0 && (de = readdir(d)) != NULL) {
        char id[QUEUE_ID_LEN + 1];
        struct stat tmp_st, msg_st;
        int fd, xy;

        if (de->d_name[0] == '.' || (fd = incoming_dead(q, de->d_name, now - min_age)) < 0)
            continue;
        /* Linked into msg/ (the same inode) but maybe never indexed: index
         * it again (adding an entry twice is harmless). Otherwise it never
         * got that far, and nobody was told it was accepted. */
        if (incoming_id(fd, id) == 0 && fstat(fd, &tmp_st) == 0
            && (xy = queue_xy_fd(q, id, 0, NULL)) >= 0
            && fstatat(xy, id, &msg_st, AT_SYMLINK_NOFOLLOW) == 0
            && msg_st.st_ino == tmp_st.st_ino && msg_st.st_dev == tmp_st.st_dev) {
            size_t files = r.files;

            (void) reindex_one(id, &r);
            ret = r.pair_count > 0 ? reindex_flush(&r) : 0;
            if (ret == 0 && r.files > files) {
                msg_info("%s: recovered: its writer died before the index commit", id);
                recovered++;
            }
        } else {
            msg_info("removing incoming file %s: its writer died before the message "
                     "was complete", de->d_name);
            removed++;
        }
        if (ret == 0)
            (void) unlinkat(q->incoming_fd, de->d_name, 0);
        (void) close(fd);
    }
    (void) closedir(d);
    free(r.pairs);
    if (ret < 0) {
        if (error_r != NULL)
            *error_r = r.error;
        else
            free(r.error);
        return -1;
    }
    if (recovered_r)
        *recovered_r = recovered;
    if (removed_r)
        *removed_r = removed;
    return 0;
}

int
queue_recover(QUEUE *q, long now, size_t *recovered_r, size_t *removed_r,
               size_t *checked_r, char **error_r)
{
    size_t checked = 0;

    if (recover_after_boot(q, &checked, error_r) < 0)
        return -1;
    if (checked_r)
        *checked_r = checked;
    return recover_incoming(q, now, QUEUE_RECOVER_AGE, recovered_r, removed_r, error_r);
}

int
queue_reindex(QUEUE *q, size_t *files_r, size_t *entries_r, size_t *damaged_r,
              char **error_r)
{
    REINDEX_CTX r;
    int ret;

    memset(&r, 0, sizeof(r));
    r.q = q;
    if (queue_index_truncate(q, error_r) < 0)
        return -1;
    /* Batches, not one transaction: a big queue would need more locks
     * than the environment has. Messages stored meanwhile add their own
     * entries; adding one twice is harmless. */
    ret = queue_walk_files(q, reindex_one, &r, error_r);
    if (ret == 0 && r.pair_count > 0)
        ret = reindex_flush(&r);
    else
        for (size_t i = 0; i < r.pair_count; i++)
            free(r.pairs[i].domain);
    free(r.pairs);
    if (ret != 0) {
        if (r.error != NULL && error_r != NULL)
            *error_r = r.error;
        else
            free(r.error);
        return -1;
    }
    /* Every file in msg/ is indexed now; what a dead writer left in
     * incoming/ can go (or is indexed again, harmlessly). */
    if (recover_incoming(q, (long) time(NULL), QUEUE_RECOVER_AGE, NULL, NULL, error_r) < 0
        || queue_figures_reindexed(q, r.damaged, error_r) < 0)
        return -1;
    if (files_r)
        *files_r = r.files;
    if (entries_r)
        *entries_r = r.entries;
    if (damaged_r)
        *damaged_r = r.damaged;
    return 0;
}
