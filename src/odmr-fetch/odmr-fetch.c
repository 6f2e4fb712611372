/*
 * NAME
 *     odmr-fetch - collect held mail from an ODMR provider (RFC 2645)
 *
 * SYNOPSIS
 *     odmr-fetch [-v] [-c config_dir] [-o name=value] -s server[:port]
 *         -u user -p password_file [options] [domain...]
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
 *     Options:
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
 *         wait. systemd/odmr-fetch-follow.service runs it.
 *     --follow-pause time (default 60s), --retry-max time (default 600s)
 *         See --follow.
 *     -c config_dir, -o name=value
 *         Read config_dir/odmr.cf, or set a parameter of it; only the
 *         logging parameters and myhostname are used here.
 *     -v  Log each command and reply (never AUTH data); twice: the
 *         states too.
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
    "usage: odmr-fetch [-v] [-c config_dir] [-o name=value] -s server[:port] -u user\n"
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
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static FETCH_OPTIONS opt;

static void
wipe_password(void)
{
    sasl_wipe_free(&opt.password);
}

static long
time_arg(const char *name, const char *arg)
{
    long secs;

    if (parse_time(arg, 's', 1, 7 * DAY, &secs) < 0) {
        char *why = x_asprintf("--%s: bad time \"%.50s\" (a number with unit s, m, h)", name, arg);

        usage(why);
    }
    return secs;
}

static void
deliver_arg(const char *arg)
{
    char *error = NULL;
    const char *rest;

    if (strncmp(arg, "smtp:", 5) == 0) {
        opt.local_lmtp = 0;
    } else if (strncmp(arg, "lmtp:", 5) == 0) {
        opt.local_lmtp = 1;
    } else {
        usage("--deliver: smtp:... or lmtp:...");
    }
    rest = arg + 5;
    x_free(&opt.local_host);
    x_free(&opt.local_port);
    x_free(&opt.local_path);
    if (fetch_parse_address(rest, opt.local_lmtp ? "24" : "25", &opt.local_host,
                            &opt.local_port, &opt.local_path, &error) < 0)
        usage(error);
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
    const char *password_file = NULL;
    int ch, use_config = 0, rc;
    long n;

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
    deliver_arg("smtp:127.0.0.1:25");

    while ((ch = getopt_long(argc, argv, CONFIG_OPTIONS "s:u:p:d:h", long_options, NULL)) != -1) {
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
        case 's':
            x_free(&opt.server_host);
            x_free(&opt.server_port);
            {
                char *path = NULL;

                if (fetch_parse_address(optarg, "366", &opt.server_host, &opt.server_port,
                                        &path, &error) < 0 || path != NULL) {
                    free(path);
                    usage(error ? error : "--server: a host, not a unix socket");
                }
            }
            break;
        case 'u':
            x_free(&opt.user);
            opt.user = x_strdup(optarg);
            break;
        case 'p':
            password_file = optarg;
            break;
        case 'd':
            deliver_arg(optarg);
            break;
        case OPT_TLS:
            if (strcmp(optarg, "none") == 0)
                opt.tls_level = FETCH_TLS_NONE;
            else if (strcmp(optarg, "may") == 0)
                opt.tls_level = FETCH_TLS_MAY;
            else if (strcmp(optarg, "encrypt") == 0)
                opt.tls_level = FETCH_TLS_ENCRYPT;
            else if (strcmp(optarg, "verify") == 0)
                opt.tls_level = FETCH_TLS_VERIFY;
            else
                usage("--tls: none, may, encrypt or verify");
            break;
        case OPT_TLS_CA:
            opt.tls_ca_file = optarg;
            break;
        case OPT_TLS_FP: {
            unsigned char fp[32];

            if (fetch_fingerprint_parse(optarg, fp) < 0)
                usage("--tls-fingerprint: 64 hex digits (colons allowed)");
            opt.tls_fingerprint = optarg;
            break;
        }
        case OPT_TLS_NAME:
            opt.tls_servername = optarg;
            break;
        case OPT_TLS_CERT:
            opt.tls_cert_file = optarg;
            break;
        case OPT_TLS_KEY:
            opt.tls_key_file = optarg;
            break;
        case OPT_MECHS:
            if (sasl_mech_list_check(optarg, &error) < 0)
                usage(error);
            x_free(&opt.mechanisms);
            opt.mechanisms = x_strdup(optarg);
            break;
        case OPT_HELO:
            opt.helo_name = optarg;
            break;
        case OPT_CONNECT_TIMEOUT:
            opt.connect_timeout = time_arg("connect-timeout", optarg);
            break;
        case OPT_TIMEOUT:
            opt.command_timeout = time_arg("timeout", optarg);
            break;
        case OPT_ATRN_TIMEOUT:
            opt.atrn_timeout = time_arg("atrn-timeout", optarg);
            break;
        case OPT_LOCAL_TIMEOUT:
            opt.local_timeout = time_arg("local-timeout", optarg);
            break;
        case OPT_DATA_TIMEOUT:
            opt.data_timeout = time_arg("data-timeout", optarg);
            break;
        case OPT_MAX_SESSIONS:
            if (parse_long(optarg, 1, 10000, &n) < 0)
                usage("--max-sessions: a number from 1 to 10000");
            opt.max_sessions = n;
            break;
        case OPT_FOLLOW:
            opt.follow = 1;
            break;
        case OPT_FOLLOW_PAUSE:
            opt.follow_pause = time_arg("follow-pause", optarg);
            break;
        case OPT_RETRY_MAX:
            opt.retry_max = time_arg("retry-max", optarg);
            break;
        case 'h':
            fprintf(stdout, "%s\n", usage_text);
            exit(0);
        default:
            usage(NULL);
        }
    }
    if (use_config || getenv("MAIL_CONFIG") != NULL) {
        config_load();
        if (opt.helo_name == NULL)
            opt.helo_name = var_myhostname;
    }
    if (opt.helo_name == NULL) {
        static char host[256];

        if (gethostname(host, sizeof(host)) < 0 || host[0] == 0)
            str_copy(host, "localhost", sizeof(host));
        host[sizeof(host) - 1] = 0;
        opt.helo_name = host;
    }
    if (opt.server_host == NULL)
        usage("--server is required");
    /* Domains: one comma-separated ATRN argument. */
    for (int i = optind; i < argc; i++) {
        char *joined;

        if (!domain_valid(argv[i])) {
            char *why = x_asprintf("bad domain \"%.100s\"", argv[i]);

            usage(why);
        }
        joined = opt.domains ? x_asprintf("%s,%s", opt.domains, argv[i]) : x_strdup(argv[i]);
        free(opt.domains);
        opt.domains = joined;
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
    x_free(&opt.server_host);
    x_free(&opt.server_port);
    x_free(&opt.user);
    x_free(&opt.domains);
    x_free(&opt.mechanisms);
    x_free(&opt.local_host);
    x_free(&opt.local_port);
    x_free(&opt.local_path);
    if (use_config)
        config_reset();
    return rc;
}
