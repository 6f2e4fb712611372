/*
 * log.h - graded diagnostics in Postfix's shape.
 *
 * msg_info    an event worth a log line.
 * msg_warn    a peer or protocol problem: report and carry on.
 * msg_fatal   the environment is bad (config, permissions, disk): log and
 *             exit with EX_TEMPFAIL (or the status given to msg_fatal_status).
 * msg_panic   an internal rule broke: log and abort().
 *
 * Output goes to syslog (facility mail by default, tag "<syslog_name>/<prog>")
 * and, when msg_set_logfile() named one, to a file with lines shaped like
 * Postfix's maillog_file: "Mon DD HH:MM:SS host tag[pid]: text".
 * MSG_STDERR also copies to stderr: only for command-line tools, never for
 * programs run by spawn(8), where fd 2 is the client socket.
 *
 * Text from a peer is passed through log_clean() first.
 */
#ifndef ODMR_LOG_H
#define ODMR_LOG_H

#include <stddef.h>
#include "util.h"

#define MSG_SYSLOG 1
#define MSG_STDERR 2

void msg_init(const char *program, int flags);
void msg_set_syslog_name(const char *syslog_name);
void msg_set_facility(const char *facility); /* "mail", "local0".. */
void msg_set_logfile(const char *path);      /* "" or NULL: none */
void msg_set_flags(int flags);
extern int msg_verbose;
const char *msg_program(void);

void msg_info(const char *fmt, ...) ODMR_PRINTF(1, 2);
void msg_warn(const char *fmt, ...) ODMR_PRINTF(1, 2);
void msg_debug(const char *fmt, ...) ODMR_PRINTF(1, 2); /* only when msg_verbose */
ODMR_NORETURN void msg_fatal(const char *fmt, ...) ODMR_PRINTF(1, 2);
ODMR_NORETURN void msg_fatal_status(int status, const char *fmt, ...) ODMR_PRINTF(2, 3);
ODMR_NORETURN void msg_panic(const char *fmt, ...) ODMR_PRINTF(1, 2);

/* Called by msg_fatal before exit (e.g. to remove a temp file); one slot. */
void msg_set_cleanup(void (*fn)(void));

/* Clean peer text for logging: at most 'cut' bytes (100 when 0) of len
 * bytes from in; every byte outside printable ASCII becomes '?'.
 * Writes into buf (size >= cut+4) and returns it; "..." marks a cut. */
#define LOG_CLEAN_MAX 100
#define LOG_CLEAN_BUFSIZE (LOG_CLEAN_MAX + 4)
char *log_clean(char *buf, size_t bufsize, const char *in, size_t len);

#endif
