/*
 * log.c - see log.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <syslog.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

int msg_verbose;

static char msg_prog[64] = "odmr";
static char msg_syslog_name[64] = "postfix";
static char msg_tag[160] = "postfix/odmr";
static char msg_logfile[1024];
static int msg_logfile_fd = -1; /* kept open: one open(2) per line is costly */
static int msg_flags = MSG_SYSLOG;
static int msg_facility = LOG_MAIL;
static int msg_syslog_open;
static int msg_syslog_absent; /* no /dev/log at the first line: skip syslog */
static void (*msg_cleanup)(void);

static void
msg_retag(void)
{
    (void) str_format(msg_tag, sizeof(msg_tag), "%s/%s", msg_syslog_name, msg_prog);
    if (msg_syslog_open) {
        closelog();
        msg_syslog_open = 0;
    }
}

void
msg_init(const char *program, int flags)
{
    const char *slash = strrchr(program, '/');

    str_copy(msg_prog, slash ? slash + 1 : program, sizeof(msg_prog));
    msg_flags = flags;
    msg_retag();
}

void
msg_set_syslog_name(const char *syslog_name)
{
    str_copy(msg_syslog_name, syslog_name, sizeof(msg_syslog_name));
    msg_retag();
}

void
msg_set_facility(const char *facility)
{
    static const struct {
        const char *name;
        int value;
    } table[] = {
        {"mail", LOG_MAIL}, {"daemon", LOG_DAEMON}, {"user", LOG_USER},
        {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
        {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},
        {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7},
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(table); i++) {
        if (str_casecmp(facility, table[i].name) == 0) {
            msg_facility = table[i].value;
            msg_retag();
            return;
        }
    }
    msg_warn("unknown syslog facility \"%s\": using mail", facility);
}

void
msg_set_logfile(const char *path)
{
    if (strcmp(msg_logfile, path ? path : "") != 0 && msg_logfile_fd >= 0) {
        (void) close(msg_logfile_fd);
        msg_logfile_fd = -1;
    }
    str_copy(msg_logfile, path ? path : "", sizeof(msg_logfile));
}

void
msg_set_flags(int flags)
{
    msg_flags = flags;
}

const char *
msg_program(void)
{
    return msg_prog;
}

void
msg_set_cleanup(void (*fn)(void))
{
    msg_cleanup = fn;
}

static void msg_emit(int level, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void
msg_emit(int level, const char *prefix, const char *fmt, va_list ap)
{
    char text[2048];
    char line[3200];
    int saved = errno;

    vsnprintf(text, sizeof(text), fmt, ap);
    /* Never let a newline split a log record. */
    for (char *p = text; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';

    /* Without a syslog socket (a container, a test machine) glibc tries to
     * connect again for every line: two wasted system calls per line on
     * the mail path. Look once; log_file still works. */
    if ((msg_flags & MSG_SYSLOG) && !msg_syslog_open && !msg_syslog_absent
        && access("/dev/log", W_OK) < 0)
        msg_syslog_absent = 1;
    if ((msg_flags & MSG_SYSLOG) && !msg_syslog_absent) {
        if (!msg_syslog_open) {
            openlog(msg_tag, LOG_PID | LOG_NDELAY, msg_facility);
            msg_syslog_open = 1;
        }
        syslog(level, "%s%s", prefix, text);
    }
    if (msg_logfile[0]) {
        char stamp[64], host[256];
        time_t now = time(NULL);
        struct tm tm;
        int fd;

        localtime_r(&now, &tm);
        strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm);
        if (gethostname(host, sizeof(host)) < 0)
            str_copy(host, "localhost", sizeof(host));
        host[sizeof(host) - 1] = 0;
        {
            char *dot = strchr(host, '.');

            if (dot)
                *dot = 0;
        }
        snprintf(line, sizeof(line), "%s %s %s[%ld]: %s%s\n", stamp, host, msg_tag,
                 (long) getpid(), prefix, text);
        if (msg_logfile_fd < 0)
            msg_logfile_fd = open(msg_logfile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        fd = msg_logfile_fd;
        if (fd >= 0)
            (void) write_all(fd, line, strlen(line));
    }
    if (msg_flags & MSG_STDERR) {
        snprintf(line, sizeof(line), "%s: %s%s\n", msg_prog, prefix, text);
        (void) write_all(2, line, strlen(line));
    }
    errno = saved;
}

#define MSG_BODY(level, prefix)              \
    do {                                     \
        va_list ap;                          \
        va_start(ap, fmt);                   \
        msg_emit((level), (prefix), fmt, ap); \
        va_end(ap);                          \
    } while (0)

void
msg_info(const char *fmt, ...)
{
    MSG_BODY(LOG_INFO, "");
}

void
msg_warn(const char *fmt, ...)
{
    MSG_BODY(LOG_WARNING, "warning: ");
}

void
msg_debug(const char *fmt, ...)
{
    if (msg_verbose)
        MSG_BODY(LOG_DEBUG, "");
}

static void
msg_run_cleanup(void)
{
    void (*fn)(void) = msg_cleanup;

    msg_cleanup = NULL;
    if (fn)
        fn();
}

void
msg_fatal(const char *fmt, ...)
{
    MSG_BODY(LOG_CRIT, "fatal: ");
    msg_run_cleanup();
    _exit(EX_TEMPFAIL);
}

void
msg_fatal_status(int status, const char *fmt, ...)
{
    MSG_BODY(LOG_CRIT, "fatal: ");
    msg_run_cleanup();
    _exit(status);
}

void
msg_panic(const char *fmt, ...)
{
    MSG_BODY(LOG_CRIT, "panic: ");
    abort();
}

char *
log_clean(char *buf, size_t bufsize, const char *in, size_t len)
{
    size_t cut = bufsize > 4 ? bufsize - 4 : 0, i;

    if (cut > LOG_CLEAN_MAX)
        cut = LOG_CLEAN_MAX;
    if (bufsize == 0)
        return buf;
    for (i = 0; i < len && i < cut; i++) {
        unsigned char c = (unsigned char) in[i];

        buf[i] = (c >= 0x20 && c < 0x7f) ? (char) c : '?';
    }
    if (i < len && bufsize >= i + 4) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i < bufsize ? i : bufsize - 1] = 0;
    return buf;
}
