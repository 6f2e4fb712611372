/*
 * util.c - see util.h.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

void *
x_malloc(size_t len)
{
    void *p = malloc(len ? len : 1);

    if (p == NULL)
        msg_fatal("out of memory allocating %zu bytes", len);
    return p;
}

void *
x_calloc(size_t n, size_t len)
{
    void *p = calloc(n ? n : 1, len ? len : 1);

    if (p == NULL)
        msg_fatal("out of memory allocating %zu x %zu bytes", n, len);
    return p;
}

void *
x_realloc(void *ptr, size_t len)
{
    void *p = realloc(ptr, len ? len : 1);

    if (p == NULL)
        msg_fatal("out of memory reallocating %zu bytes", len);
    return p;
}

char *
x_strdup(const char *s)
{
    return x_strndup(s, strlen(s));
}

char *
x_strndup(const char *s, size_t len)
{
    char *p;
    size_t n = strnlen(s, len);

    p = x_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *
x_asprintf(const char *fmt, ...)
{
    va_list ap;
    char *p;

    va_start(ap, fmt);
    if (vasprintf(&p, fmt, ap) < 0)
        msg_fatal("out of memory formatting a string");
    va_end(ap);
    return p;
}

void
x_free(void *pp)
{
    void **p = pp;

    free(*p);
    *p = NULL;
}

size_t
str_copy(char *dst, const char *src, size_t size)
{
    size_t len = strlen(src);

    if (size > 0) {
        size_t n = len < size - 1 ? len : size - 1;

        memcpy(dst, src, n);
        dst[n] = 0;
    }
    return len;
}

int
str_format(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(dst, size, fmt, ap);
    va_end(ap);
    return (n < 0 || (size_t) n >= size) ? -1 : 0;
}

char *
str_lower(char *s)
{
    for (char *p = s; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p += 'a' - 'A';
    return s;
}

char *
str_upper(char *s)
{
    for (char *p = s; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p -= 'a' - 'A';
    return s;
}

static int
lower_c(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

int
str_casecmp(const char *a, const char *b)
{
    for (;; a++, b++) {
        int d = lower_c((unsigned char) *a) - lower_c((unsigned char) *b);

        if (d != 0 || *a == 0)
            return d;
    }
}

int
str_ncasecmp(const char *a, const char *b, size_t n)
{
    for (; n > 0; a++, b++, n--) {
        int d = lower_c((unsigned char) *a) - lower_c((unsigned char) *b);

        if (d != 0 || *a == 0)
            return d;
    }
    return 0;
}

static int
is_blank(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

char *
str_trim(char *s)
{
    char *start = s, *end;

    while (is_blank((unsigned char) *start))
        start++;
    end = start + strlen(start);
    while (end > start && is_blank((unsigned char) end[-1]))
        end--;
    memmove(s, start, (size_t) (end - start));
    s[end - start] = 0;
    return s;
}

int
parse_long(const char *s, long min, long max, long *value_r)
{
    const char *p = s;
    int neg = 0;
    unsigned long v = 0, limit;

    if (*p == '-' && min < 0) {
        neg = 1;
        p++;
    }
    if (*p == 0)
        return -1;
    /* Accumulate the magnitude unsigned, so LONG_MIN fits and no step overflows. */
    limit = neg ? (unsigned long) LONG_MAX + 1 : (unsigned long) LONG_MAX;
    for (; *p; p++) {
        unsigned long d;

        if (*p < '0' || *p > '9')
            return -1;
        d = (unsigned long) (*p - '0');
        if (v > (limit - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (neg) {
        long n = v == (unsigned long) LONG_MAX + 1 ? LONG_MIN : -(long) v;

        if (n < min || n > max)
            return -1;
        *value_r = n;
        return 0;
    }
    if ((long) v < min || (long) v > max)
        return -1;
    *value_r = (long) v;
    return 0;
}

/* Split "123x" into number and a one-letter unit (0 when none). */
static int
split_unit(const char *s, long long *num_r, char *unit_r)
{
    long long v = 0;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');
        if (v > (1LL << 50))
            return -1;
    }
    if (p[0] != 0 && p[1] != 0)
        return -1;
    *num_r = v;
    *unit_r = (char) lower_c((unsigned char) p[0]);
    return 0;
}

int
parse_time(const char *s, char unit_default, long min, long max, long *seconds_r)
{
    long long v;
    char unit;
    long long mult;

    if (split_unit(s, &v, &unit) < 0)
        return -1;
    if (unit == 0)
        unit = unit_default;
    switch (unit) {
    case 's':
        mult = 1;
        break;
    case 'm':
        mult = 60;
        break;
    case 'h':
        mult = 3600;
        break;
    case 'd':
        mult = 86400;
        break;
    case 'w':
        mult = 7 * 86400;
        break;
    default:
        return -1;
    }
    /* split_unit allows up to 2^50, so a large unit could overflow. */
    if (v > LONG_MAX / mult)
        return -1;
    v *= mult;
    if (v < min || v > max)
        return -1;
    *seconds_r = (long) v;
    return 0;
}

int
parse_size(const char *s, long long min, long long max, long long *bytes_r)
{
    long long v;
    char unit;
    int shift;

    if (split_unit(s, &v, &unit) < 0)
        return -1;
    switch (unit) {
    case 0:
        shift = 0;
        break;
    case 'k':
        shift = 10;
        break;
    case 'm':
        shift = 20;
        break;
    case 'g':
        shift = 30;
        break;
    default:
        return -1;
    }
    /* split_unit allows up to 2^50, so 'g' could shift past 63 bits. */
    if (v > (LLONG_MAX >> shift))
        return -1;
    v <<= shift;
    if (v < min || v > max)
        return -1;
    *bytes_r = v;
    return 0;
}

int
parse_bool(const char *s, int *value_r)
{
    static const char *yes[] = {"yes", "true", "on", "1"};
    static const char *no[] = {"no", "false", "off", "0"};

    for (size_t i = 0; i < ODMR_ARRAY_LEN(yes); i++) {
        if (str_casecmp(s, yes[i]) == 0) {
            *value_r = 1;
            return 0;
        }
        if (str_casecmp(s, no[i]) == 0) {
            *value_r = 0;
            return 0;
        }
    }
    return -1;
}

int
write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t) n;
    }
    return 0;
}

int
fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int ret, saved;

    if (fd < 0)
        return -1;
    ret = fsync(fd);
    saved = errno;
    close(fd);
    errno = saved;
    return ret;
}

int
random_bytes(void *buf, size_t len)
{
    unsigned char *p = buf;

    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t) n;
    }
    return 0;
}

int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
now_wall(long *sec_r, long *usec_r)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    *sec_r = (long) tv.tv_sec;
    *usec_r = (long) tv.tv_usec;
}

void
fds_sanitize(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            int n = open("/dev/null", O_RDWR);

            if (n < 0)
                abort();
            if (n != fd)
                abort();
        }
    }
}

static int
is_let_dig(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int
domain_valid(const char *s)
{
    size_t len = strlen(s), label = 0;
    int labels = 1;

    if (len == 0 || len > 255)
        return 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char) s[i];

        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return 0;
            labels++;
            label = 0;
            continue;
        }
        if (c == '-') {
            if (label == 0)
                return 0;
        } else if (!is_let_dig(c)) {
            return 0;
        }
        if (++label > 63)
            return 0;
    }
    if (label == 0 || s[len - 1] == '-')
        return 0;
    return labels >= 2;
}

const char *
addr_domain(const char *addr)
{
    const char *at = strrchr(addr, '@');

    return (at && at[1]) ? at + 1 : NULL;
}

void
format_age(long seconds, char *buf, size_t size)
{
    if (seconds < 0)
        seconds = 0;
    if (seconds >= 86400)
        (void) str_format(buf, size, "%ldd%02ldh", seconds / 86400, seconds % 86400 / 3600);
    else if (seconds >= 3600)
        (void) str_format(buf, size, "%ldh%02ldm", seconds / 3600, seconds % 3600 / 60);
    else
        (void) str_format(buf, size, "%ldm%02lds", seconds / 60, seconds % 60);
}

void
delay_format(char *buf, size_t size, int64_t ms)
{
    double s = ms < 0 ? 0 : (double) ms / 1000.0;
    char *p;

    if (s >= 10)
        (void) snprintf(buf, size, "%.0f", s);
    else if (s >= 1)
        (void) snprintf(buf, size, "%.1f", s);
    else
        (void) snprintf(buf, size, "%.2f", s);
    if (strchr(buf, '.') != NULL) {
        for (p = buf + strlen(buf) - 1; *p == '0'; p--)
            *p = 0;
        if (*p == '.')
            *p = 0;
    }
}
