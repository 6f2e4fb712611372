/*
 * NAME
 *     odmr-fetch - collect held mail from an ODMR provider (RFC 2645)
 *
 * SYNOPSIS
 *     odmr-fetch [-v] [-f file] [-c config_dir] [-o name=value]
 *         -s server[:port] -u user -p password_file [options] [domain...]
 *     odmr-fetch [-f file] [options] [domain...]
 *
 * DESCRIPTION
 *     odmr-fetch is the customer's side of On-Demand Mail Relay. It
 *     connects to the provider's ODMR service (port 366), starts TLS,
 *     authenticates, and asks with ATRN for the mail held for the given
 *     domains (none: every domain of the user). When the provider answers
 *     250 the connection turns around: the provider becomes the SMTP
 *     client and odmr-fetch relays that session, command by command, into
 *     the local mail system (SMTP or LMTP, over TCP or a UNIX socket). The
 *     local MTA's greeting and replies go back to the provider unchanged,
 *     so the provider removes a message only once the local MTA accepted
 *     it; a 4xx or 5xx of the local MTA is the provider's to handle
 *     (kept, or bounced).
 *
 *     Not relayed: a STARTTLS, BDAT, AUTH, XCLIENT or XFORWARD from the
 *     provider is answered "502" by odmr-fetch, and the matching keywords
 *     are removed from the local MTA's EHLO reply before it goes to the
 *     provider. Message content is copied byte for byte (line ends and
 *     dot-stuffing untouched); the local MTA sees the final dot only after
 *     the provider sent it.
 *
 *     LMTP: an LMTP server answers the final dot once per recipient (RFC
 *     2033), the provider expects one reply. odmr-fetch therefore lets one
 *     recipient into each transaction: a further RCPT gets "452 4.5.3"
 *     (RFC 5321: send it again later), and the one LMTP reply to the dot
 *     is the provider's dot reply. Nothing is lost and nothing is
 *     delivered twice; the recipients put off stay with the provider, and
 *     odmr-fetch collects again at once (at most --max-sessions sessions
 *     in one run) while a session put recipients off and delivered
 *     something.
 *
 *     Options (each also a parameter of the configuration file, see
 *     below):
 *     -f, --config file
 *         Read the settings from file (see CONFIGURATION FILE) before the
 *         command line, which overrides them. Without -f,
 *         /etc/odmr-fetch/odmr-fetch.cf is read when it exists.
 *     -s, --server host[:port]
 *         The provider's ODMR service (port 366 by default; IPv6 as
 *         [address]:port).
 *     -u, --user name
 *         The SASL user name.
 *     -p, --password-file file
 *         The password is the first line of file, which must be a
 *         regular file owned by the user running odmr-fetch and not
 *         readable or writable by group or others (mode 0600 or 0400);
 *         otherwise odmr-fetch refuses to run. The password is never
 *         taken from the command line and never logged.
 *     domain...
 *         The domains to collect, sent as one comma-separated ATRN
 *         argument. None: a bare ATRN (every domain of the user).
 *     -d, --deliver smtp:host:port | lmtp:host:port | smtp:unix:path |
 *         lmtp:unix:path
 *         The local MTA (default smtp:127.0.0.1:25).
 *     --tls none | may | encrypt | verify
 *         verify (the default): STARTTLS is required and the server's
 *         certificate must verify against the system CAs (or
 *         --tls-ca-file) and match the server name, or match
 *         --tls-fingerprint. encrypt: STARTTLS required, the certificate
 *         is not checked. may: STARTTLS when offered. none: never.
 *     --tls-ca-file file
 *         Trusted CAs (PEM) instead of the system's.
 *     --tls-fingerprint hex
 *         The SHA-256 fingerprint of the server certificate (64 hex
 *         digits, colons allowed, as openssl x509 -fingerprint -sha256
 *         prints it). When set, this pin replaces CA verification.
 *     --tls-servername name
 *         The name sent with SNI and checked in the certificate (default:
 *         the server host).
 *     --tls-cert file, --tls-key file
 *         A client certificate (PEM) and key (default: in the certificate
 *         file), for SASL EXTERNAL.
 *     --sasl-mechanisms list
 *         Mechanisms in order of preference (default: EXTERNAL
 *         SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN). EXTERNAL is used only with
 *         --tls-cert, PLAIN and LOGIN only inside TLS.
 *     --helo name
 *         The EHLO name (default: the host name; with -c or -o, the
 *         myhostname parameter of odmr.cf).
 *     --connect-timeout time (default 30s), --timeout time (default 300s)
 *         Connecting (to either side); each reply of the provider before
 *         ATRN and each command of the provider in the reversed session.
 *     --atrn-timeout time (default 600s)
 *         The wait for the reply to ATRN: RFC 2645 allows the server 10
 *         minutes to prepare.
 *     --local-timeout time (default 300s)
 *         Each reply of the local MTA, except to the final dot.
 *     --data-timeout time (default 600s)
 *         The local MTA's reply to the final dot, and each line of message
 *         content from the provider.
 *     --max-sessions n (default 20)
 *         Sessions in one run while LMTP splitting puts recipients off.
 *     --follow
 *         Do not exit: start the next session (a new connection, RFC 2645
 *         ends the connection with the reversed session) as soon as one
 *         ends. With a provider that holds an ATRN until mail arrives
 *         (odmrd's odmrd_atrn_wait), mail reaches the local MTA about a
 *         second after it reached the provider, without polling. An ATRN
 *         answered 453 is repeated no sooner than --follow-pause after the
 *         previous one (a provider that does not wait is not hammered);
 *         after a failure (any other exit status) the next try comes after
 *         10 seconds, doubling up to --retry-max, and the pause starts
 *         again once a session works. SIGTERM, SIGINT or SIGHUP stop it
 *         with status 0: at once while it waits for the ATRN reply
 *         (nothing is being transferred), else when the session under way
 *         ends; a second signal ends it at once (the provider keeps what
 *         was not acknowledged). Keep --atrn-timeout above the provider's
 *         wait. TCP keepalive probes (after 60 seconds idle) keep a NAT
 *         mapping alive while an ATRN waits and notice a provider that
 *         is gone. systemd/odmr-fetch-follow.service runs it.
 *     --follow-pause time (default 60s), --retry-max time (default 600s)
 *         See --follow.
 *     -c config_dir, -o name=value
 *         Read config_dir/odmr.cf, or set a parameter of it; only the
 *         logging parameters and myhostname are used here.
 *     -v  Log each command and reply (never AUTH data); twice: the
 *         states too.
 *
 * CONFIGURATION FILE
 *     main.cf syntax, as odmr.cf(5): "name = value" lines, a line that
 *     starts with white space continues the one before, "#" starts a
 *     comment line, the last setting of a name wins. The names are those
 *     of the long options with "_" for "-": server, user, password_file,
 *     deliver, tls, tls_ca_file, tls_fingerprint, tls_servername,
 *     tls_cert, tls_key, sasl_mechanisms, helo, connect_timeout, timeout,
 *     atrn_timeout, local_timeout, data_timeout, max_sessions, follow
 *     (yes or no), follow_pause, retry_max; and domains (the domains to
 *     collect, separated by commas or blanks; domains given on the
 *     command line replace them) and syslog_name, syslog_facility and
 *     log_file (as in odmr.cf). An example:
 *     .nf
 *         server = odmr.isp.example
 *         user = cust1
 *         password_file = /etc/odmr-fetch/password
 *         deliver = smtp:127.0.0.1:25
 *         domains = example.org, example.net
 *         follow = yes
 *     .fi
 *     The password itself is never in this file (a "password" parameter
 *     is an error): it stays in password_file. Because the file says where
 *     the password is sent, it must be a regular file that belongs to the
 *     user running odmr-fetch or to root and that neither group nor
 *     others may write; otherwise odmr-fetch refuses to run (exit 78). An
 *     unknown parameter or a bad value is an error that names the file,
 *     the line and the parameter, e.g. "odmr-fetch: fatal:
 *     /etc/odmr-fetch/odmr-fetch.cf, line 7: parameter atrn_timeout: bad
 *     time "10 minutes" (a number with unit s, m, h)" (exit 78).
 *
 * HOW MUCH MAIL IS WAITING (no --check)
 *     RFC 2645 has no way to ask how much mail waits without collecting
 *     it: the only question is ATRN, and its 250 turns the connection
 *     around at once; EHLO, AUTH and ATRN's 453 say nothing about
 *     quantity. A --check that works only against this project's odmrd
 *     (an extension keyword or a count in a reply text) would tie
 *     customers to one server and was left out. The provider's
 *     administrator sees the figures (odmr-queue list, summary); the
 *     customer sees them in odmr-fetch's log line after collecting, and
 *     with --follow there is nothing to count: the mail is delivered as
 *     it arrives.
 *
 * SECURITY
 *     Run it as an ordinary user (the systemd unit and cron line in
 *     systemd/ do). It needs no privilege: it listens on nothing. The
 *     password stays in memory only while needed and is wiped at exit.
 *
 * DIAGNOSTICS
 *     One log line per session, to syslog (facility mail, tag
 *     postfix/odmr-fetch) and to stderr, in Postfix's shape:
 *
 *     server=HOST[ADDR]:PORT, user=U, atrn=DOMAINS, tls=yes,
 *     sasl_method=M, messages=N, recipients=N, refused=N, split=N,
 *     status=STATUS (DETAIL)
 *
 *     messages counts transactions the local MTA accepted, refused the
 *     commands it refused, split the recipients put off (LMTP).
 *
 * EXIT STATUS
 *     With --follow the status is 0 when stopped by a signal; the
 *     outcome of each session is in its log line.
 *     0   delivered (status=delivered): the session ended with QUIT and
 *         the local MTA accepted every transaction.
 *     1   no mail (status=nomail): ATRN was answered 453.
 *     2   authentication failed (status=authfailed): 535 or another AUTH
 *         refusal, 530, no common mechanism, or a SCRAM server that failed
 *         to prove itself.
 *     3   domain refused (status=refused): ATRN was answered 450.
 *     4   busy (status=busy): 451 (domain busy, lookup failure) or another
 *         temporary refusal before the turn-around.
 *     5   network or TLS failure (status=network): connect, timeout, lost
 *         connection, no STARTTLS when required, certificate not verified
 *         or fingerprint mismatch.
 *     6   local MTA failure (status=local): unreachable, failed during the
 *         session, or refused some mail (the provider keeps or bounces it).
 *     7   protocol error (status=protocol): a malformed or unexpected reply.
 *     64  (EX_USAGE) bad command line.
 *     77  (EX_NOPERM) the password file is unsafe or unreadable.
 *     78  (EX_CONFIG) the configuration file is missing (-f), unsafe or
 *         wrong.
 *     75  (EX_TEMPFAIL) a fatal error in the environment.
 *
 * CONFIGURATION PARAMETERS
 *     Of odmr.cf, only when -c or -o is given: syslog_name (default:
 *     postfix), syslog_facility (default: mail), log_file (default:
 *     empty), myhostname (default: the host name).
 *
 * STANDARDS
 *     RFC 2645 (ODMR), RFC 4954 (SMTP AUTH), RFC 3207 (STARTTLS), RFC 7677
 *     (SCRAM-SHA-256), RFC 2195 (CRAM-MD5), RFC 4422 (EXTERNAL), RFC 5321
 *     (SMTP), RFC 2033 (LMTP).
 *
 * SEE ALSO
 *     odmrd(8), fetchmail(1), systemd/odmr-fetch.service
 */
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/socket.h>

#include <openssl/crypto.h>

#include "config.h"
#include "fetch.h"
#include "log.h"
#include "sasl.h"
#include "util.h"

#define DAY (24L * 3600)

static const char usage_text[] =
    "usage: odmr-fetch [-v] [-f file] [-c config_dir] [-o name=value] -s server[:port] -u user\n"
    "       -p password_file [-d smtp|lmtp:host:port|smtp|lmtp:unix:path]\n"
    "       [--tls none|may|encrypt|verify] [--tls-ca-file file] [--tls-fingerprint hex]\n"
    "       [--tls-servername name] [--tls-cert file] [--tls-key file]\n"
    "       [--sasl-mechanisms list] [--helo name] [--connect-timeout t] [--timeout t]\n"
    "       [--atrn-timeout t] [--local-timeout t] [--data-timeout t] [--max-sessions n]\n"
    "       [--follow [--follow-pause t] [--retry-max t]] [domain...]";

static void
usage(const char *why)
{
    if (why != NULL)
        fprintf(stderr, "odmr-fetch: %s\n", why);
    fprintf(stderr, "%s\n", usage_text);
    exit(EX_USAGE);
}

enum {
    OPT_TLS = 256,
    OPT_TLS_CA,
    OPT_TLS_FP,
    OPT_TLS_NAME,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_MECHS,
    OPT_HELO,
    OPT_CONNECT_TIMEOUT,
    OPT_TIMEOUT,
    OPT_ATRN_TIMEOUT,
    OPT_LOCAL_TIMEOUT,
    OPT_DATA_TIMEOUT,
    OPT_MAX_SESSIONS,
    OPT_FOLLOW,
    OPT_FOLLOW_PAUSE,
    OPT_RETRY_MAX,
    OPT_DOMAINS, /* the file's domains */
};

static const struct option long_options[] = {
    {"server", required_argument, NULL, 's'},
    {"user", required_argument, NULL, 'u'},
    {"password-file", required_argument, NULL, 'p'},
    {"deliver", required_argument, NULL, 'd'},
    {"tls", required_argument, NULL, OPT_TLS},
    {"tls-ca-file", required_argument, NULL, OPT_TLS_CA},
    {"tls-fingerprint", required_argument, NULL, OPT_TLS_FP},
    {"tls-servername", required_argument, NULL, OPT_TLS_NAME},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"sasl-mechanisms", required_argument, NULL, OPT_MECHS},
    {"helo", required_argument, NULL, OPT_HELO},
    {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"atrn-timeout", required_argument, NULL, OPT_ATRN_TIMEOUT},
    {"local-timeout", required_argument, NULL, OPT_LOCAL_TIMEOUT},
    {"data-timeout", required_argument, NULL, OPT_DATA_TIMEOUT},
    {"max-sessions", required_argument, NULL, OPT_MAX_SESSIONS},
    {"follow", no_argument, NULL, OPT_FOLLOW},
    {"follow-pause", required_argument, NULL, OPT_FOLLOW_PAUSE},
    {"retry-max", required_argument, NULL, OPT_RETRY_MAX},
    {"config", required_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

#define OPTSTRING CONFIG_OPTIONS "f:s:u:p:d:h"
/* Read when it exists and -f is not given. */
#define FETCH_CONFIG_FILE "/etc/odmr-fetch/odmr-fetch.cf"

static FETCH_OPTIONS opt;

static void
wipe_password(void)
{
    sasl_wipe_free(&opt.password);
}

static char *password_file;
static int use_config;        /* -c or -o, or logging parameters in the file */

/* A time value: 0, or -1 with *error_r. */
static int
time_arg(const char *arg, long *secs_r, char **error_r)
{
    if (parse_time(arg, 's', 1, 7 * DAY, secs_r) < 0) {
        *error_r = x_asprintf("bad time \"%.50s\" (a number with unit s, m, h)", arg);
        return -1;
    }
    return 0;
}

static int
deliver_arg(const char *arg, char **error_r)
{
    const char *rest;

    if (strncmp(arg, "smtp:", 5) == 0) {
        opt.local_lmtp = 0;
    } else if (strncmp(arg, "lmtp:", 5) == 0) {
        opt.local_lmtp = 1;
    } else {
        *error_r = x_strdup("smtp:... or lmtp:...");
        return -1;
    }
    rest = arg + 5;
    x_free(&opt.local_host);
    x_free(&opt.local_port);
    x_free(&opt.local_path);
    return fetch_parse_address(rest, opt.local_lmtp ? "24" : "25", &opt.local_host,
                               &opt.local_port, &opt.local_path, error_r);
}

static void
set_str(char **field, const char *value)
{
    x_free(field);
    *field = x_strdup(value);
}

/* Domains, from the command line or the file's "domains" (a list split
 * at commas and blanks): one comma-separated ATRN argument. */
static int
add_domain(const char *d, char **error_r)
{
    char *joined;

    if (!domain_valid(d)) {
        *error_r = x_asprintf("bad domain \"%.100s\"", d);
        return -1;
    }
    joined = opt.domains ? x_asprintf("%s,%s", opt.domains, d) : x_strdup(d);
    free(opt.domains);
    opt.domains = joined;
    return 0;
}

static int
domains_list(const char *value, char **error_r)
{
    char *copy = x_strdup(value), *save = NULL;
    int ret = 0;

    x_free(&opt.domains);
    for (char *d = strtok_r(copy, ", \t", &save); d != NULL && ret == 0;
         d = strtok_r(NULL, ", \t", &save))
        ret = add_domain(d, error_r);
    free(copy);
    return ret;
}

/*
 * One option, from the command line or the configuration file (arg is
 * then the parameter's value; a flag takes yes or no). 0, or -1 with
 * *error_r.
 */
static int
set_option(int id, const char *arg, char **error_r)
{
    long n;
    int b;

    switch (id) {
    case 's': {
        char *path = NULL;

        x_free(&opt.server_host);
        x_free(&opt.server_port);
        if (fetch_parse_address(arg, "366", &opt.server_host, &opt.server_port, &path,
                                error_r) < 0)
            return -1;
        if (path != NULL) {
            free(path);
            *error_r = x_strdup("a host, not a unix socket");
            return -1;
        }
        return 0;
    }
    case 'u':
        set_str(&opt.user, arg);
        return 0;
    case 'p':
        set_str(&password_file, arg);
        return 0;
    case 'd':
        return deliver_arg(arg, error_r);
    case OPT_TLS:
        if (strcmp(arg, "none") == 0)
            opt.tls_level = FETCH_TLS_NONE;
        else if (strcmp(arg, "may") == 0)
            opt.tls_level = FETCH_TLS_MAY;
        else if (strcmp(arg, "encrypt") == 0)
            opt.tls_level = FETCH_TLS_ENCRYPT;
        else if (strcmp(arg, "verify") == 0)
            opt.tls_level = FETCH_TLS_VERIFY;
        else {
            *error_r = x_strdup("none, may, encrypt or verify");
            return -1;
        }
        return 0;
    case OPT_TLS_CA:
        set_str(&opt.tls_ca_file, arg);
        return 0;
    case OPT_TLS_FP: {
        unsigned char fp[32];

        if (fetch_fingerprint_parse(arg, fp) < 0) {
            *error_r = x_strdup("64 hex digits (colons allowed)");
            return -1;
        }
        set_str(&opt.tls_fingerprint, arg);
        return 0;
    }
    case OPT_TLS_NAME:
        set_str(&opt.tls_servername, arg);
        return 0;
    case OPT_TLS_CERT:
        set_str(&opt.tls_cert_file, arg);
        return 0;
    case OPT_TLS_KEY:
        set_str(&opt.tls_key_file, arg);
        return 0;
    case OPT_MECHS:
        if (sasl_mech_list_check(arg, error_r) < 0)
            return -1;
        set_str(&opt.mechanisms, arg);
        return 0;
    case OPT_HELO:
        set_str(&opt.helo_name, arg);
        return 0;
    case OPT_CONNECT_TIMEOUT:
        return time_arg(arg, &opt.connect_timeout, error_r);
    case OPT_TIMEOUT:
        return time_arg(arg, &opt.command_timeout, error_r);
    case OPT_ATRN_TIMEOUT:
        return time_arg(arg, &opt.atrn_timeout, error_r);
    case OPT_LOCAL_TIMEOUT:
        return time_arg(arg, &opt.local_timeout, error_r);
    case OPT_DATA_TIMEOUT:
        return time_arg(arg, &opt.data_timeout, error_r);
    case OPT_MAX_SESSIONS:
        if (parse_long(arg, 1, 10000, &n) < 0) {
            *error_r = x_strdup("a number from 1 to 10000");
            return -1;
        }
        opt.max_sessions = n;
        return 0;
    case OPT_FOLLOW:
        if (arg == NULL) {
            opt.follow = 1;
        } else if (parse_bool(arg, &b) < 0) {
            *error_r = x_asprintf("bad boolean value \"%.50s\" (yes or no)", arg);
            return -1;
        } else {
            opt.follow = b;
        }
        return 0;
    case OPT_FOLLOW_PAUSE:
        return time_arg(arg, &opt.follow_pause, error_r);
    case OPT_RETRY_MAX:
        return time_arg(arg, &opt.retry_max, error_r);
    case OPT_DOMAINS:
        return domains_list(arg, error_r);
    default:
        msg_panic("set_option: option %d", id);
    }
}

/* The configuration file's parameters: the long options' names with '_'
 * for '-', plus domains and the logging parameters of odmr.cf. */
static const struct {
    const char *name;
    int id;
} file_params[] = {
    {"server", 's'}, {"user", 'u'}, {"password_file", 'p'}, {"deliver", 'd'},
    {"domains", OPT_DOMAINS}, {"tls", OPT_TLS}, {"tls_ca_file", OPT_TLS_CA},
    {"tls_fingerprint", OPT_TLS_FP}, {"tls_servername", OPT_TLS_NAME},
    {"tls_cert", OPT_TLS_CERT}, {"tls_key", OPT_TLS_KEY}, {"sasl_mechanisms", OPT_MECHS},
    {"helo", OPT_HELO}, {"connect_timeout", OPT_CONNECT_TIMEOUT}, {"timeout", OPT_TIMEOUT},
    {"atrn_timeout", OPT_ATRN_TIMEOUT}, {"local_timeout", OPT_LOCAL_TIMEOUT},
    {"data_timeout", OPT_DATA_TIMEOUT}, {"max_sessions", OPT_MAX_SESSIONS},
    {"follow", OPT_FOLLOW}, {"follow_pause", OPT_FOLLOW_PAUSE}, {"retry_max", OPT_RETRY_MAX},
};
static const char *const file_log_params[] = {"syslog_name", "syslog_facility", "log_file"};

static int
file_setting(const char *name, const char *value, char *where, void *ctx, char **error_r)
{
    char *error = NULL;
    int ret = -1;

    for (size_t i = 0; i < ODMR_ARRAY_LEN(file_log_params); i++) {
        if (strcmp(name, file_log_params[i]) == 0) {
            char *o = x_asprintf("%s=%s", name, value);

            /* Checked and applied by config_load(), which names "-o". */
            config_add_override(o);
            free(o);
            use_config = 1;
            free(where);
            return 0;
        }
    }
    for (size_t i = 0; i < ODMR_ARRAY_LEN(file_params); i++) {
        if (strcmp(name, file_params[i].name) == 0) {
            if (set_option(file_params[i].id, value, &error) == 0) {
                free(where);
                return 0;
            }
            *error_r = x_asprintf("%s: parameter %s: %s", where, name, error);
            free(error);
            free(where);
            return ret;
        }
    }
    if (strcmp(name, "password") == 0)
        *error_r = x_asprintf("%s: parameter password: not here: the password goes in a file "
                              "of its own, named by password_file", where);
    else
        *error_r = x_asprintf("%s: unknown parameter \"%.60s\"", where, name);
    free(where);
    return ret;
}

/* The file may say where the password goes: only its owner (or root) may
 * be able to change it. */
static void
read_config_file(const char *path, int must_exist)
{
    struct stat st;
    char *error = NULL;

    if (stat(path, &st) < 0) {
        if (errno == ENOENT && !must_exist)
            return;
        msg_fatal_status(EX_CONFIG, "configuration file %s: %m", path);
    }
    if (!S_ISREG(st.st_mode))
        msg_fatal_status(EX_CONFIG, "configuration file %s: not a regular file", path);
    if ((st.st_uid != geteuid() && st.st_uid != 0) || (st.st_mode & 022) != 0)
        msg_fatal_status(EX_CONFIG, "configuration file %s: refused: it must belong to you "
                         "or root and not be writable by group or others (uid %ld, mode "
                         "%04o)", path, (long) st.st_uid, (unsigned) (st.st_mode & 07777));
    if (config_read_file(path, file_setting, NULL, &error) < 0)
        msg_fatal_status(EX_CONFIG, "%s", error);
}

/* Sessions: one, or more while LMTP splitting put recipients off and
 * the session made progress. A local failure in any session is the
 * run's outcome; a last session that found nothing left does not undo
 * the deliveries before it. */
static int
run_once(void)
{
    int rc = FETCH_EXIT_DELIVERED, delivered = 0, local_failed = 0;

    for (long round = 0; round < opt.max_sessions && !fetch_stop; round++) {
        FETCH_RELAY_RESULT relay;

        rc = fetch_session(&opt, &relay);
        if (rc == FETCH_EXIT_DELIVERED || relay.messages > 0)
            delivered = 1;
        if (rc == FETCH_EXIT_LOCAL)
            local_failed = 1;
        if (relay.split == 0 || relay.messages == 0
            || (rc != FETCH_EXIT_DELIVERED && rc != FETCH_EXIT_LOCAL))
            break;
    }
    if (local_failed)
        rc = FETCH_EXIT_LOCAL;
    else if (delivered && rc == FETCH_EXIT_NOMAIL)
        rc = FETCH_EXIT_DELIVERED;
    return rc;
}

/* SIGTERM, SIGINT, SIGHUP under --follow: stop after the session under
 * way; one that only waits for the ATRN reply ends at once (the
 * connection is shut down: nothing is being transferred). A second
 * signal ends the process at once: the provider keeps whatever was not
 * acknowledged. */
static void
on_stop(int sig)
{
    int fd = fetch_atrn_fd;

    if (fetch_stop) {
        (void) signal(sig, SIG_DFL);
        (void) raise(sig);
        return;
    }
    fetch_stop = 1;
    if (fd >= 0)
        (void) shutdown(fd, SHUT_RDWR);
}

/* Sleep up to secs, or until a stop signal. */
static void
pause_for(long secs)
{
    int64_t end = now_ms() + (int64_t) secs * 1000;

    while (!fetch_stop) {
        int64_t left = end - now_ms();

        if (left <= 0)
            break;
        (void) poll(NULL, 0, (int) (left > 60000 ? 60000 : left));
    }
}

/* --follow: the next ATRN as soon as a session ends. A provider with the
 * waiting ATRN (odmrd_atrn_wait) holds each ATRN until mail arrives, so
 * mail comes within seconds over a connection that is already open; one
 * that answers 453 at once is asked again follow_pause after the last
 * ATRN, not in a tight loop. After a failure the pause grows from 10
 * seconds, doubling up to retry_max, and starts again after a session
 * that worked. Ends, with status 0, on SIGTERM, SIGINT or SIGHUP. */
static int
follow(void)
{
    long retry = 0;

    msg_info("following server=%s:%s, user=%s: collecting until stopped", opt.server_host,
             opt.server_port, opt.user ? opt.user : "");
    while (!fetch_stop) {
        int64_t start = now_ms();
        int rc = run_once();
        long waited = (long) ((now_ms() - start) / 1000);

        if (fetch_stop)
            break;
        switch (rc) {
        case FETCH_EXIT_DELIVERED:
            retry = 0;
            break;
        case FETCH_EXIT_NOMAIL:
            retry = 0;
            if (waited < opt.follow_pause)
                pause_for(opt.follow_pause - waited);
            break;
        default:
            retry = retry ? retry * 2 : 10;
            if (retry > opt.retry_max)
                retry = opt.retry_max;
            msg_info("next try in %lds", retry);
            pause_for(retry);
            break;
        }
    }
    msg_info("stopped by a signal");
    return 0;
}

int
main(int argc, char **argv)
{
    const char *config_file = NULL;
    int ch, rc;

    fds_sanitize();
    (void) signal(SIGPIPE, SIG_IGN);
    msg_init("odmr-fetch", MSG_SYSLOG | MSG_STDERR);
    opt.server_port = x_strdup("366");
    opt.tls_level = FETCH_TLS_VERIFY;
    opt.mechanisms = x_strdup("EXTERNAL SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN");
    opt.connect_timeout = 30;
    opt.command_timeout = 300;
    opt.atrn_timeout = 600;
    opt.local_timeout = 300;
    opt.data_timeout = 600;
    opt.max_sessions = 20;
    opt.follow_pause = 60;
    opt.retry_max = 600;
    opt.line_max = 2048;
    {
        char *error = NULL;

        if (deliver_arg("smtp:127.0.0.1:25", &error) < 0)
            msg_panic("default deliver: %s", error);
    }

    /* First the file (-f, else the default one when it exists), then the
     * command line, which overrides it. */
    opterr = 0;
    while ((ch = getopt_long(argc, argv, OPTSTRING, long_options, NULL)) != -1)
        if (ch == 'f')
            config_file = optarg;
    opterr = 1;
    read_config_file(config_file ? config_file : FETCH_CONFIG_FILE, config_file != NULL);

    optind = 0;
    while ((ch = getopt_long(argc, argv, OPTSTRING, long_options, NULL)) != -1) {
        char *error = NULL;

        switch (ch) {
        case 'c':
        case 'o':
            use_config = 1;
            (void) config_option(ch, optarg);
            break;
        case 'v':
            (void) config_option(ch, optarg);
            break;
        case 'f':
            break;
        case 'h':
            fprintf(stdout, "%s\n", usage_text);
            exit(0);
        case '?':
        case ':':
            usage(NULL);
            break;
        default:
            if (set_option(ch, optarg, &error) < 0) {
                const char *name = "?";

                for (size_t i = 0; long_options[i].name != NULL; i++)
                    if (long_options[i].val == ch)
                        name = long_options[i].name;
                usage(x_asprintf("--%s: %s", name, error));
            }
            break;
        }
    }
    if (use_config || getenv("MAIL_CONFIG") != NULL) {
        config_load();
        if (opt.helo_name == NULL)
            opt.helo_name = x_strdup(var_myhostname);
    }
    if (opt.helo_name == NULL) {
        char host[256];

        if (gethostname(host, sizeof(host)) < 0 || host[0] == 0)
            str_copy(host, "localhost", sizeof(host));
        host[sizeof(host) - 1] = 0;
        opt.helo_name = x_strdup(host);
    }
    if (opt.server_host == NULL)
        usage("--server is required");
    /* Domains on the command line replace those of the file. */
    if (optind < argc)
        x_free(&opt.domains);
    for (int i = optind; i < argc; i++) {
        char *error = NULL;

        if (add_domain(argv[i], &error) < 0)
            usage(error);
    }
    if (opt.tls_key_file != NULL && opt.tls_cert_file == NULL)
        usage("--tls-key needs --tls-cert");
    if (password_file == NULL && opt.tls_cert_file == NULL)
        usage("--password-file is required (or --tls-cert for EXTERNAL)");
    if (password_file != NULL && opt.user == NULL)
        usage("--user is required with --password-file");
    if (password_file != NULL) {
        char *error = NULL;

        if (fetch_password_file(password_file, &opt.password, &error) < 0)
            msg_fatal_status(FETCH_EXIT_PASSWORD, "%s", error);
    }
    msg_set_cleanup(wipe_password);

    if (opt.follow) {
        struct sigaction sa;

        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_stop;
        (void) sigemptyset(&sa.sa_mask);
        (void) sigaction(SIGTERM, &sa, NULL);
        (void) sigaction(SIGINT, &sa, NULL);
        (void) sigaction(SIGHUP, &sa, NULL);
        rc = follow();
    } else {
        rc = run_once();
    }
    wipe_password();
    x_free(&password_file);
    x_free(&opt.server_host);
    x_free(&opt.server_port);
    x_free(&opt.user);
    x_free(&opt.domains);
    x_free(&opt.mechanisms);
    x_free(&opt.local_host);
    x_free(&opt.local_port);
    x_free(&opt.local_path);
    x_free(&opt.tls_ca_file);
    x_free(&opt.tls_fingerprint);
    x_free(&opt.tls_servername);
    x_free(&opt.tls_cert_file);
    x_free(&opt.tls_key_file);
    x_free(&opt.helo_name);
    if (use_config)
        config_reset();
    return rc;
}
