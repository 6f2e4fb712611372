/*
 * util.h - small helpers shared by every program: checked allocation,
 * bounded string copies, case folding, number parsing, file helpers.
 *
 * Conventions: allocation failure is fatal (msg_fatal); functions that
 * can fail on input return -1 (or NULL) and never log on their own.
 */
#ifndef ODMR_UTIL_H
#define ODMR_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ODMR_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define ODMR_NORETURN __attribute__((noreturn))
#define ODMR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

void *x_malloc(size_t len);
void *x_calloc(size_t n, size_t len);
void *x_realloc(void *ptr, size_t len);
char *x_strdup(const char *s);
char *x_strndup(const char *s, size_t len);
char *x_asprintf(const char *fmt, ...) ODMR_PRINTF(1, 2);
/* free(*pp) and set *pp = NULL */
void x_free(void *pp);

/* Copy at most size-1 bytes and NUL-terminate; returns strlen(src), so a
 * result >= size means the copy was cut. */
size_t str_copy(char *dst, const char *src, size_t size);
/* snprintf that reports truncation: returns 0, or -1 when cut/failed. */
int str_format(char *dst, size_t size, const char *fmt, ...) ODMR_PRINTF(3, 4);

/* ASCII-only case folding in place; returns s. */
char *str_lower(char *s);
char *str_upper(char *s);
int str_casecmp(const char *a, const char *b);
int str_ncasecmp(const char *a, const char *b, size_t n);
/* Trim ASCII blanks (space, tab, CR, LF) at both ends in place; returns s. */
char *str_trim(char *s);

/* Parse a decimal number in [min,max]; the whole string must be digits
 * (an optional leading '-' when min < 0). 0 on success, -1 otherwise. */
int parse_long(const char *s, long min, long max, long *value_r);

/* A time interval: number plus optional unit s, m, h, d, w (default
 * unit_default: 's' or other). Result in seconds. */
int parse_time(const char *s, char unit_default, long min, long max, long *seconds_r);

/* A size: number with optional k, m, g (powers of 1024). */
int parse_size(const char *s, long long min, long long max, long long *bytes_r);

/* Booleans the way main.cf spells them: yes/no/true/false/1/0/on/off. */
int parse_bool(const char *s, int *value_r);

/* Full write with EINTR retry; 0 or -1 with errno. */
int write_all(int fd, const void *buf, size_t len);
/* fsync a directory by path: 0 or -1 with errno. */
int fsync_dir(const char *path);
/* Fill buf with len bytes from the kernel's CSPRNG (getrandom(2)); 0 or -1.
 * Used for nonces and salts: unlike OpenSSL's RAND it sets up nothing, so
 * a session that needs only a challenge stays small. */
int random_bytes(void *buf, size_t len);
/* Monotonic clock in milliseconds. */
int64_t now_ms(void);
/* Wall clock: seconds and microseconds. */
void now_wall(long *sec_r, long *usec_r);

/* A delay in Postfix's log shape: two significant digits below 10 s,
 * whole seconds above, trailing zeros dropped ("0.12", "1.3", "0", "27"). */
void delay_format(char *buf, size_t size, int64_t ms);
/* An age for people, two units: "3d04h", "2h05m", "0m42s" (negative: 0). */
void format_age(long seconds, char *buf, size_t size);

/* Make sure fds 0, 1, 2 are open (open /dev/null where not). */
void fds_sanitize(void);

/* A well-formed DNS domain per RFC 2645's ABNF (letters, digits, hyphens,
 * at least two labels, labels start and end with a letter or digit,
 * at most 255 bytes). Returns 1 or 0. */
int domain_valid(const char *s);

/* The domain part of an address (after the last '@'), or NULL. */
const char *addr_domain(const char *addr);

#endif
