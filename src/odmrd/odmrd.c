/*++
 * NAME
 *     odmrd 8
 * SUMMARY
 *     On-Demand Mail Relay server (RFC 2645) for Postfix
 * SYNOPSIS
 *     odmrd [-v] [-c config_dir] [-o name=value ...]
 *
 *     master.cf:
 *     366 inet n n n - 50 spawn user=odmr
 *         argv=/usr/lib/postfix-odmr/odmrd
 * DESCRIPTION
 *     odmrd serves one ODMR connection. spawn(8) runs it with the
 *     customer's TCP connection on file descriptors 0, 1 and 2. The
 *     customer authenticates and sends ATRN; odmrd then turns the same
 *     connection around and delivers the mail that the hold queue keeps for
 *     the requested domains, acting as the SMTP client, like Postfix's
 *     smtp(8).
 *
 *     Server side (RFC 2645 sections 5 and 7, RFC 4954, RFC 3207):
 *     .IP "greeting"
 *     220 $odmr_banner; or, when the client's address already holds
 *     odmrd_client_connection_count_limit sessions, "421 4.7.0 host Error:
 *     too many connections from ADDR" and the end of the session.
 *     .IP "EHLO, HELO"
 *     EHLO lists AUTH with the mechanisms usable now, ATRN, STARTTLS when
 *     TLS is configured and not yet on, and ENHANCEDSTATUSCODES.
 *     With tls_security_level = encrypt, AUTH is neither listed nor
 *     accepted (530) before STARTTLS.
 *     .IP "STARTTLS"
 *     220, then the TLS handshake (TLS 1.2 or newer). Everything the
 *     client sent before the handshake is thrown away, and so is the EHLO
 *     state. TLS stays on after the turn-around. OpenSSL's context is made
 *     at the first STARTTLS (a session without TLS does not pay for it):
 *     a certificate that cannot be loaded then gives 454 4.7.0 and the
 *     session goes on in plain text. An unreadable tls_cert_file or
 *     tls_key_file is found at start: with tls_security_level = may, a
 *     warning, and STARTTLS is not offered; with encrypt, fatal (421 to
 *     the client).
 *     .IP "AUTH"
 *     Mechanisms: CRAM-MD5, SCRAM-SHA-256, PLAIN and LOGIN (only under TLS),
 *     EXTERNAL (a verified TLS client certificate whose SHA-256 fingerprint
 *     tls_cert_user_maps maps to a user), limited by sasl_mechanisms.
 *     Replies 235, 334, 454 (temporary failure), 500 (response too long),
 *     501 (bad base64, or "*" to cancel), 503 (no EHLO yet, or already
 *     authenticated), 504 (unknown mechanism), 530 (STARTTLS first), 535
 *     (bad credentials), 538 (mechanism needs TLS). Every failure is
 *     followed by a pause of auth_failure_delay; after auth_failure_limit
 *     failures the session ends with 421.
 *     Failed password checks are also counted across all odmrd processes,
 *     per client address and per user name and client address, each in a
 *     window of odmrd_auth_failure_window from its first failure. Once the
 *     address has odmrd_client_auth_failure_limit failures, AUTH gets "454
 *     4.7.0 Temporary authentication failure" at once; once the user name
 *     has odmrd_client_user_auth_failure_limit failures from that address,
 *     AUTH for that name gets the same 454 as soon as the name is known,
 *     without looking at the password. Other addresses are not affected (a
 *     user name alone never locks its owner out), and a successful AUTH
 *     forgets its user's failures from that address. A count is checked
 *     before and raised after a password check, so parallel sessions from
 *     one address may get a few more checks than the limit: at most one
 *     per session held at that moment (odmrd_client_connection_count_limit).
 *     Everything before a successful AUTH (STARTTLS and the AUTH exchanges
 *     included) must be done within odmrd_pre_auth_timeout of the
 *     connection, else the session ends.
 *     SCRAM-SHA-256 for a user without a SCRAM secret (an unknown user, or
 *     one with a {PLAIN} or {CRAM-MD5} secret) uses the default iteration
 *     count (4096) and a 16-byte salt that is HMAC-SHA-256 of a server
 *     secret and the user name: the same at every attempt, like a real
 *     user's, so that the salt does not tell who exists.
 *     .IP "ATRN [domain *(\(dq,\(dq domain)]"
 *     Only after AUTH (else 530). Domains are case-insensitive; a malformed
 *     list, or more than atrn_domain_limit domains, gives 501. Every
 *     requested domain must list the SASL user in domain_maps, else 450 and
 *     nothing is sent. Without domains: every domain the user may collect
 *     that holds mail (from user_domain_maps when set, else by walking the
 *     domains in the queue index). A failed map or queue lookup gives 451;
 *     so does a domain that another session is flushing (one flush per
 *     domain at a time: a message is never delivered twice by two
 *     sessions). No mail: 453. Otherwise "250 2.0.0 OK now reversing the
 *     connection", and the roles change. A 450 counts toward error_limit;
 *     the odmrd_atrn_command_limit+1st ATRN of a session gets "421 4.7.0
 *     Error: too many ATRN commands" and ends it; at most 5 ATRN warning
 *     lines are logged per session.
 *     .IP "NOOP, RSET, QUIT"
 *     As in RFC 5321.
 *     .IP "anything else"
 *     502: the ODMR port never accepts mail.
 *
 *     Reversed session (RFC 5321, like Postfix's smtp(8)): odmrd waits for
 *     the customer's 220 (bytes it sent right after the ATRN reply are kept),
 *     sends EHLO (HELO when EHLO gets a 5xx), uses PIPELINING, SIZE
 *     (messages larger than the customer's SIZE are bounced with 552 5.3.4),
 *     8BITMIME, DSN (ENVID, RET, NOTIFY, ORCPT as the queue kept them) and
 *     SMTPUTF8 when advertised. Only recipients of the
 *     requested domains are sent; the oldest message goes first. Per
 *     recipient: a 2xx after the final dot removes it from the queue; a 4xx,
 *     a lost connection, a timeout or a 421 keeps it for the next ATRN; a
 *     5xx marks it failed (never sent again; odmr-queue shows it and makes
 *     the bounce). Recipients refused with 452 (too many recipients, RFC
 *     5321 section 4.5.3.1.10) go in further transactions of the same
 *     session, until all are done or a transaction delivers nobody (they
 *     are then kept). A reply to DATA other than 354 that is neither 4xx
 *     nor 5xx (250, say) is a protocol error: the recipients are kept
 *     (4.5.0), odmrd sends RSET and QUIT and no further mail in that
 *     session. So is input that answers no command (the customer sent a
 *     reply more than it was asked for: after a 354, or after the last
 *     reply owed): each later reply would answer the wrong command, so
 *     none of the replies just read is trusted, their recipients are kept
 *     (4.5.0) and the session ends without another command. A refused
 *     RSET leaves the customer's transaction open: the session ends with
 *     QUIT and the rest waits for the next ATRN, as Postfix's smtp(8)
 *     stops using such a connection. QUIT at the end.
 *
 *     STARTTLS on the reversed side: when the ODMR session is in TLS, the
 *     reversed session is encrypted already and STARTTLS is never sent.
 *     When it is in clear, odmrd sends STARTTLS (if the customer offers it)
 *     only at the level reversed_tls_policy_maps gives the SASL user name,
 *     or else the first requested domain with an entry: none (never), may
 *     (when offered; a refusal is not an error) or encrypt (no mail without
 *     TLS); without an entry, smtp_tls_security_level (default none). A
 *     customer whose client relays the session line by line, as fetchmail
 *     does, cannot pass a TLS handshake: it must stay at none. A handshake
 *     is given smtp_starttls_timeout, then the session ends, logged, and
 *     the mail stays queued. A failed reversed_tls_policy_maps lookup or a
 *     bad value is a temporary error: no mail in that session.
 * SECURITY
 *     odmrd talks to untrusted clients. It refuses to run as root (spawn(8)
 *     runs it as user odmr, which owns the hold queue), never writes to
 *     standard error (under spawn(8) that is the client socket; it is
 *     pointed at /dev/null first), enforces its own deadlines
 *     (command_timeout per wait, session_timeout for the whole session;
 *     spawn(8) does not before Postfix 3.10; odmrd_pre_auth_timeout before
 *     AUTH), bounds every line and AUTH response, and never logs a secret.
 *     Nothing a client sends makes it exit with a fatal error.
 *
 *     The odmrd processes share three small files in queue_directory (user
 *     odmr, mode 0600): odmrd.sessions (a slot per live session with the
 *     client address, held by an fcntl lock that the kernel drops when the
 *     process ends, however it ends), odmrd.failures (failure counters,
 *     keyed by a SHA-256 hash of the address and user name, so no user name
 *     is stored) and odmrd.secret (32 random bytes, made at the first AUTH,
 *     the key of the fake SCRAM salts; keep it: a new one changes every
 *     unknown user's salt). A lock wait is bounded (1 second) and any
 *     problem with these files is logged and lets the session go on: a
 *     crash, a stale lock or a damaged file never locks anyone out.
 *     Postfix's anvil(8) was not used: its socket is in Postfix's
 *     private/ directory, which user odmr cannot reach, and it does not
 *     count failed logins per user name.
 * DIAGNOSTICS
 *     Problems go to syslog (facility mail, tag postfix/odmrd by default)
 *     or log_file, in Postfix's shape:
 *     "connect from name[addr]", "disconnect from name[addr] ehlo=1 auth=1
 *     atrn=1 commands=3", "name[addr]: sasl_method=CRAM-MD5,
 *     sasl_username=cust1", "name[addr]: ATRN example.org sasl_username=cust1:
 *     250 2.0.0 OK now reversing the connection", and per recipient
 *     "QUEUEID: to=<r>, relay=name[addr]:port, delay=D, delays=a/b/c/d,
 *     dsn=X.Y.Z, status=sent|deferred|bounced (reply)".
 *
 *     Lines for fail2ban (the first two are the shapes of Postfix's smtpd):
 *     .nf
 *     warning: name[addr]: SASL CRAM-MD5 authentication failed: wrong password, sasl_username=u
 *     warning: Connection concurrency limit exceeded: 11 from name[addr] for service odmrd (...)
 *     warning: name[addr]: SASL authentication blocked: 20 failures from this client in 600s (...)
 *     warning: name[addr]: SASL authentication blocked: 5 failures for sasl_username=u from this client in 600s (...)
 *     .fi
 *     A fail2ban filter for them:
 *     .nf
 *     failregex = warning: [-._\w]+\[<HOST>\]: SASL (\S+ )?authentication (failed|blocked)
 *                 warning: Connection concurrency limit exceeded: \d+ from [-._\w]+\[<HOST>\]
 *     .fi
 *     Exit status 0 after a session, 75 (EX_TEMPFAIL) after a fatal error
 *     (bad configuration, run as root).
 * CONFIGURATION PARAMETERS
 *     From $config_directory/odmr.cf (-c, $MAIL_CONFIG, /etc/postfix), -o
 *     overrides:
 *     .IP "domain_maps (hash:$config_directory/odmr_domains)"
 *     Customer domain -> SASL user names that may collect it.
 *     .IP "auth_maps (hash:$config_directory/odmr_passwd)"
 *     SASL user name -> {SCHEME}secret (odmr-passwd).
 *     .IP "user_domain_maps (empty)"
 *     SASL user -> domains, for ATRN without domains on large sites.
 *     .IP "tls_cert_user_maps (empty)"
 *     Client certificate SHA-256 fingerprint -> SASL user (EXTERNAL).
 *     .IP "queue_directory (/var/spool/postfix-odmr)"
 *     .IP "odmr_banner ($myhostname ESMTP on-demand mail relay)"
 *     .IP "myhostname (the system's host name)"
 *     Also the name sent in EHLO on the reversed side.
 *     .IP "sasl_mechanisms (CRAM-MD5 SCRAM-SHA-256 PLAIN LOGIN EXTERNAL)"
 *     .IP "auth_failure_limit (3), auth_failure_delay (1s), auth_response_limit (12288)"
 *     .IP "atrn_domain_limit (100), flush_message_limit (0: none)"
 *     .IP "line_length_limit (2048), error_limit (20)"
 *     .IP "command_timeout (300s), session_timeout (3600s)"
 *     .IP "odmrd_client_connection_count_limit (10)"
 *     Sessions one client address may hold at once (0: no limit); the
 *     master.cf process limit (50 in the sample entry) is shared by all.
 *     .IP "odmrd_pre_auth_timeout (60s)"
 *     From the connection to a successful AUTH.
 *     .IP "odmrd_client_auth_failure_limit (20)"
 *     Failed password checks per client address per window (0: no limit).
 *     .IP "odmrd_client_user_auth_failure_limit (5)"
 *     Failed password checks per user name and client address per window
 *     (0: no limit).
 *     .IP "odmrd_auth_failure_window (10m)"
 *     A counter goes back to zero this long after its first failure. With
 *     the defaults one address gets at most 20 password checks per 10
 *     minutes (2 a minute), at most 5 of them for one user name.
 *     .IP "odmrd_atrn_command_limit (10)"
 *     ATRN commands per session.
 *     .IP "odmrd_atrn_wait (0s), odmrd_atrn_wait_maps (empty)"
 *     The waiting ATRN: an ATRN that finds no mail waits up to this long
 *     (per SASL user from the map: "cust1 540s"; at most 10m, RFC 2645)
 *     and answers 250 and sends the mail as soon as some arrives, else 453
 *     at the end. The wait holds no lock; it checks the index when a
 *     message for one of its domains is committed (odmr-store and
 *     odmr-enqueue touch queue_directory/wait/DOMAIN, which the waiter
 *     watches with inotify; for an ATRN without domains and without
 *     user_domain_maps, any change of the index) and every minute, and
 *     ends when the customer sends anything or hangs up. Only for clients
 *     that wait longer than that for the reply (odmr-fetch --follow:
 *     600s; fetchmail 300s, Exim 30s). Each waiting customer is one odmrd
 *     process (under 1 MB of its own) and one inotify instance of user
 *     odmr: raise the master.cf process limit of the service and
 *     fs.inotify.max_user_instances (128) for many (beyond it a waiter
 *     checks every 5 seconds instead).
 *     .IP "smtp_helo_timeout (300s), smtp_mail_timeout (300s), smtp_rcpt_timeout (300s)"
 *     .IP "smtp_data_init_timeout (120s), smtp_data_xfer_timeout (180s)"
 *     .IP "smtp_data_done_timeout (600s), smtp_quit_timeout (300s)"
 *     Postfix's smtp(8) defaults, for the reversed session (the helo timeout
 *     also bounds the wait for the customer's 220).
 *     .IP "smtputf8_enable (yes)"
 *     .IP "tls_security_level (may): none, may or encrypt"
 *     Production sites should use encrypt with a real certificate:
 *     CRAM-MD5 and the mail then never go in clear.
 *     .IP "tls_cert_file (/etc/ssl/certs/ssl-cert-snakeoil.pem)"
 *     .IP "tls_key_file (/etc/ssl/private/ssl-cert-snakeoil.key)"
 *     Debian's snakeoil pair (package ssl-cert), as Debian's Postfix uses
 *     for smtpd; user odmr must be able to read the key (group ssl-cert).
 *     For a file that holds both, name it in both.
 *     .IP "tls_CAfile (empty)"
 *     .IP "smtp_tls_security_level (none): none, may or encrypt"
 *     STARTTLS on the reversed side, when the ODMR session is in clear, for
 *     customers that reversed_tls_policy_maps does not list.
 *     .IP "reversed_tls_policy_maps (empty)"
 *     SASL user name, then domain -> none, may or encrypt (as Postfix's
 *     smtp_tls_policy_maps levels): STARTTLS on the reversed side when the
 *     ODMR session is in clear.
 *     .IP "smtp_starttls_timeout (30s)"
 *     The wait for the reply to STARTTLS and for the TLS handshake on the
 *     reversed side.
 *     .IP "syslog_name (postfix), syslog_facility (mail), log_file (empty)"
 * STANDARDS
 *     RFC 2645 (ODMR), RFC 4954 (SMTP AUTH), RFC 2195 (CRAM-MD5),
 *     RFC 5802 and RFC 7677 (SCRAM-SHA-256), RFC 4616 (PLAIN), RFC 4422
 *     (EXTERNAL), RFC 3207 (STARTTLS), RFC 5321 (SMTP), RFC 2920
 *     (PIPELINING), RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 3461 (DSN),
 *     RFC 6531 (SMTPUTF8), RFC 2034 and RFC 3463 (enhanced status codes).
 * SEE ALSO
 *     odmr-store(8), odmr-queue(8), odmr-passwd(8), spawn(8), smtp(8)
 *--*/
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "config.h"
#include "log.h"
#include "maps.h"
#include "notice.h"
#include "odmrd.h"
#include "queue.h"
#include "smtp.h"
#include "stream.h"
#include "util.h"

static const char *const state_names[ODMRD_STATE_COUNT] = {
    [ODMRD_STATE_INITIAL] = "initial",
    [ODMRD_STATE_AUTHENTICATED] = "authenticated",
    [ODMRD_STATE_REVERSED] = "reversed",
    [ODMRD_STATE_DONE] = "done",
};

const char *
odmrd_state_name(ODMRD_STATE state)
{
    if ((unsigned) state >= ODMRD_STATE_COUNT)
        msg_panic("odmrd_state_name: bad state %d", (int) state);
    return state_names[state];
}

/* The customer's address and a forward-confirmed name, as Postfix does. */
static void
peer_lookup(ODMRD_SESSION *sp)
{
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    char host[NI_MAXHOST], addr[NI_MAXHOST], port[NI_MAXSERV];

    str_copy(sp->client_name, "unknown", sizeof(sp->client_name));
    str_copy(sp->client_addr, "unknown", sizeof(sp->client_addr));
    str_copy(sp->client_port, "unknown", sizeof(sp->client_port));

    if (getpeername(0, (struct sockaddr *) &ss, &sslen) < 0) {
        msg_warn("getpeername: %s (not run by spawn(8)?)", strerror(errno));
    } else if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        /* An IPv4-mapped IPv6 address is logged as plain IPv4. */
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *) &ss;

            if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
                struct sockaddr_in s4;

                memset(&s4, 0, sizeof(s4));
                s4.sin_family = AF_INET;
                s4.sin_port = s6->sin6_port;
                memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
                memcpy(&ss, &s4, sizeof(s4));
                sslen = sizeof(s4);
            }
        }
        if (getnameinfo((struct sockaddr *) &ss, sslen, addr, sizeof(addr), port,
                        sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
            str_copy(sp->client_addr, addr, sizeof(sp->client_addr));
            str_copy(sp->client_port, port, sizeof(sp->client_port));
        }
        if (getnameinfo((struct sockaddr *) &ss, sslen, host, sizeof(host), NULL, 0,
                        NI_NAMEREQD) == 0) {
            struct addrinfo hints, *res = NULL, *ai;
            int confirmed = 0;

            memset(&hints, 0, sizeof(hints));
            hints.ai_family = ss.ss_family;
            hints.ai_socktype = SOCK_STREAM;
            if (getaddrinfo(host, NULL, &hints, &res) == 0) {
                for (ai = res; ai != NULL && !confirmed; ai = ai->ai_next) {
                    char a2[NI_MAXHOST];

                    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, a2, sizeof(a2), NULL, 0,
                                    NI_NUMERICHOST) == 0
                        && strcmp(a2, sp->client_addr) == 0)
                        confirmed = 1;
                }
                freeaddrinfo(res);
            }
            if (confirmed && domain_valid(host))
                str_copy(sp->client_name, host, sizeof(sp->client_name));
            else if (confirmed && strcmp(host, "localhost") == 0)
                str_copy(sp->client_name, host, sizeof(sp->client_name));
        }
    } else if (ss.ss_family == AF_UNIX) {
        str_copy(sp->client_addr, "local", sizeof(sp->client_addr));
    }
    (void) str_format(sp->client, sizeof(sp->client), "%s[%s]", sp->client_name,
                      sp->client_addr);
}

static MAPS *
open_maps(const char *param, const char *value, int optional)
{
    MAPS *maps;
    char *err = NULL;

    if (optional && (value == NULL || *value == 0))
        return NULL;
    if ((maps = maps_open(value, &err)) == NULL)
        msg_fatal("%s: parameter %s: %s", config_file_path(), param, err);
    return maps;
}

/* Tell the customer before a fatal configuration error ends the session. */
static ODMRD_SESSION *fatal_session;

static void
fatal_reply(void)
{
    if (fatal_session != NULL && fatal_session->stream != NULL
        && fatal_session->state != ODMRD_STATE_REVERSED) {
        (void) smtp_reply_send(fatal_session->stream, 421, "4.3.0",
                               "%s Server configuration error", var_myhostname);
        (void) stream_flush(fatal_session->stream);
    }
}

void
odmrd_notice_add(ODMRD_SESSION *sp, const char *id)
{
    for (size_t i = 0; i < sp->notice_count; i++)
        if (strcmp(sp->notice_ids[i], id) == 0)
            return;
    if (sp->notice_count == sp->notice_alloc) {
        sp->notice_alloc = sp->notice_alloc ? sp->notice_alloc * 2 : 16;
        sp->notice_ids = x_realloc(sp->notice_ids, sp->notice_alloc * sizeof(*sp->notice_ids));
    }
    sp->notice_ids[sp->notice_count++] = x_strdup(id);
}

/* The notices this session's flush made owed. One that cannot be sent
 * now stays on the queue's notice list for odmr-queue expire. */
static void
notices_send(ODMRD_SESSION *sp)
{
    NOTICE_STATS st;
    char *error = NULL;

    if (sp->queue == NULL)
        return;
    memset(&st, 0, sizeof(st));
    if (notice_run_ids(sp->queue, sp->notice_ids, sp->notice_count, (long) time(NULL), &st,
                       &error) < 0) {
        msg_warn("%s: %lu notice%s to senders left pending for odmr-queue expire", sp->client,
                 st.failures, st.failures == 1 ? "" : "s");
        free(error);
    }
}

static void
session_free(ODMRD_SESSION *sp)
{
    for (size_t i = 0; i < sp->ndomains; i++)
        if (sp->lock_fds && sp->lock_fds[i] >= 0)
            queue_unlock_domain(sp->lock_fds[i]);
    odmrd_atrn_free(&sp->domains, sp->ndomains);
    x_free(&sp->lock_fds);
    sp->ndomains = 0;
    queue_strings_free(&sp->notice_ids, sp->notice_count);
    sp->notice_count = sp->notice_alloc = 0;
    odmrd_collect_free(sp);
    if (sp->queue)
        queue_close(&sp->queue);
    if (sp->domain_maps)
        maps_close(&sp->domain_maps);
    if (sp->auth_maps)
        maps_close(&sp->auth_maps);
    if (sp->user_domain_maps)
        maps_close(&sp->user_domain_maps);
    if (sp->cert_user_maps)
        maps_close(&sp->cert_user_maps);
    if (sp->reversed_tls_maps)
        maps_close(&sp->reversed_tls_maps);
    x_free(&sp->sasl_method);
    x_free(&sp->sasl_username);
    x_free(&sp->external_user);
    if (sp->stream)
        stream_close(&sp->stream, 0);
    /* Frees this session's slot in odmrd.sessions (the kernel would at
     * exit; closing keeps no descriptor open for leak checkers). */
    if (sp->slot_fd >= 0) {
        (void) close(sp->slot_fd);
        sp->slot_fd = -1;
    }
    OPENSSL_cleanse(sp->fake_salt_key, sizeof(sp->fake_salt_key));
    odmrd_tls_free_ctx(&sp->tls_server_ctx);
    odmrd_tls_free_ctx(&sp->tls_client_ctx);
}

/* Close politely: a client that pipelined more commands after our last
 * reply (a 421, say) would otherwise get a TCP reset from the kernel, which
 * can destroy that reply before the client reads it. Half-close, then read
 * and discard for at most two seconds. */
static void
linger_close(void)
{
    int64_t end = now_ms() + 2000;
    char junk[4096];

    if (shutdown(1, SHUT_WR) < 0)
        return;
    for (;;) {
        struct pollfd pfd = {.fd = 0, .events = POLLIN};
        int64_t left = end - now_ms();

        if (left <= 0 || poll(&pfd, 1, (int) left) <= 0)
            break;
        if (read(0, junk, sizeof(junk)) <= 0)
            break;
    }
}

int
main(int argc, char **argv)
{
    ODMRD_SESSION session, *sp = &session;

    msg_init("odmrd", MSG_SYSLOG);
    (void) signal(SIGPIPE, SIG_IGN);
    umask(077);
    /* Root would own the queue files: refused there. */
    config_daemon_init(argc, argv, "odmrd [-v] [-c config_dir] [-o name=value ...]");

    memset(sp, 0, sizeof(*sp));
    sp->state = ODMRD_STATE_INITIAL;
    sp->start_ms = now_ms();
    sp->slot_fd = -1;
    sp->pre_auth_deadline = sp->start_ms + (int64_t) var_odmrd_pre_auth_timeout * 1000;
    peer_lookup(sp);

    if ((sp->stream = stream_open(0, 1)) == NULL)
        msg_fatal("cannot open stream on fd 0/1");
    stream_set_timeout(sp->stream, (int) (var_command_timeout * 1000));
    stream_set_deadline(sp->stream, sp->start_ms + (int64_t) var_session_timeout * 1000);
    fatal_session = sp;
    msg_set_cleanup(fatal_reply);

    msg_info("connect from %s", sp->client);

    sp->domain_maps = open_maps("domain_maps", var_domain_maps, 0);
    sp->auth_maps = open_maps("auth_maps", var_auth_maps, 0);
    sp->user_domain_maps = open_maps("user_domain_maps", var_user_domain_maps, 1);
    sp->cert_user_maps = open_maps("tls_cert_user_maps", var_tls_cert_user_maps, 1);
    sp->reversed_tls_maps = open_maps("reversed_tls_policy_maps", var_reversed_tls_policy_maps, 1);

    if (str_casecmp(var_tls_security_level, "none") == 0)
        sp->tls_level = ODMRD_TLS_NONE;
    else if (str_casecmp(var_tls_security_level, "may") == 0)
        sp->tls_level = ODMRD_TLS_MAY;
    else if (str_casecmp(var_tls_security_level, "encrypt") == 0)
        sp->tls_level = ODMRD_TLS_ENCRYPT;
    else
        msg_fatal("%s: parameter tls_security_level: bad value \"%s\" (none, may or encrypt)",
                  config_file_path(), var_tls_security_level);
    /* The TLS contexts are made when first needed (STARTTLS): a session
     * that never uses TLS does not pay for OpenSSL's set-up, which is most
     * of a session's memory. The key and certificate must be readable now,
     * so that a broken configuration shows at once. */
    /* At level may (the default, with Debian's snakeoil pair) a missing or
     * unreadable certificate turns TLS off with a warning, as Postfix's
     * smtpd does: the port keeps working in plain text. At encrypt it is
     * fatal: AUTH would never be possible. */
    if (sp->tls_level != ODMRD_TLS_NONE) {
        const char *param = NULL, *file = NULL;

        if (access(var_tls_cert_file, R_OK) < 0) {
            param = "tls_cert_file";
            file = var_tls_cert_file;
        } else if (access(var_tls_key_file, R_OK) < 0) {
            param = "tls_key_file";
            file = var_tls_key_file;
        }
        if (param != NULL && sp->tls_level == ODMRD_TLS_ENCRYPT)
            msg_fatal("%s: %s %s: %m", config_file_path(), param, file);
        if (param != NULL) {
            msg_warn("%s: %s %s: %m; TLS is off (tls_security_level = may)",
                     config_file_path(), param, file);
            sp->tls_level = ODMRD_TLS_NONE;
        }
    }
    odmrd_auth_init(sp);

    odmrd_server_run(sp);

    fatal_session = NULL;
    if (sp->notice_count > 0 || odmrd_collect_pending(sp)) {
        /* The customer is done: close its connection first, then tell the
         * senders (sendmail may take its time; the customer never waits
         * for it). */
        stream_close(&sp->stream, 0);
        linger_close();
        (void) close(0);
        (void) close(1);
        odmrd_collect_write(sp);
        notices_send(sp);
        session_free(sp);
        return 0;
    }
    session_free(sp);
    linger_close();
    return 0;
}
