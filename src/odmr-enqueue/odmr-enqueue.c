/*
 * NAME
 *	odmr-enqueue - put a message into the ODMR hold queue
 * SYNOPSIS
 *	odmr-enqueue [-c config_dir] [-o name=value] [-v] [-f sender]
 *		[-V envid] [-R FULL|HDRS] [-B 7BIT|8BITMIME] [-U]
 *		[-N notify] [-C client] [--] recipient...
 * DESCRIPTION
 *	odmr-enqueue reads one message from standard input (plain text with
 *	LF or CRLF line ends, as pipe(8) hands it over) and holds it for the
 *	recipients' domains, in the same queue that odmr-store(8) writes. It
 *	is the second, simpler door into the queue: a pipe(8) command
 *
 *	    odmr-pipe unix - n n - - pipe flags=Rq user=odmr
 *	        argv=/usr/lib/postfix-odmr/odmr-enqueue -f ${sender} -- ${recipient}
 *
 *	or a command-line injector. The LMTP door (odmr-store) is preferred:
 *	pipe(8) cannot report a status per recipient and does not pass the
 *	DSN parameters. With pipe(8), set odmr-pipe_destination_recipient_limit
 *	= 1 so that one recipient's problem does not decide for the others.
 *
 *	Every recipient's domain must have an entry in domain_maps; otherwise
 *	nothing is queued and the exit status is EX_NOUSER. The message is
 *	durable (written, fsync'd, renamed, indexed) before the exit status 0.
 *
 *	-f sender   envelope sender ("" or "<>" for the null sender).
 *	-V envid, -R ret, -B body, -U (SMTPUTF8): DSN and ESMTP attributes.
 *	-N notify   NOTIFY for every recipient (e.g. "SUCCESS,FAILURE").
 *	-C client   client description kept in the envelope.
 * SECURITY
 *	Started as root, odmr-enqueue switches to the owner of
 *	queue_directory before it touches the queue, and refuses to go on if
 *	that owner is root.
 * EXIT STATUS
 *	0 queued; 64 (EX_USAGE) bad options; 65 (EX_DATAERR) malformed
 *	address or message over message_size_limit; 67 (EX_NOUSER) a
 *	recipient domain not held for on-demand relay; 75 (EX_TEMPFAIL) any
 *	temporary problem (map lookup, disk, index): try again later.
 * CONFIGURATION PARAMETERS
 *	queue_directory, domain_maps, message_size_limit, recipient_limit,
 *	index_sync, syslog_name, log_file (see odmr-store(8)).
 * SEE ALSO
 *	odmr-store(8), odmr-queue(8), pipe(8)
 */
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "maps.h"
#include "queue.h"
#include "smtp.h"
#include "util.h"

typedef struct {
    QUEUE_WRITER *writer;
    long long size;
    int too_big;
} SINK;

static int
sink_write(void *ctx, const char *buf, size_t n)
{
    SINK *sink = ctx;

    sink->size += (long long) n;
    if (var_message_size_limit > 0 && sink->size > var_message_size_limit) {
        sink->too_big = 1;
        return -1;
    }
    return queue_writer_write(sink->writer, buf, n);
}

/* Root may inject by hand, but queue files must belong to the queue owner. */
static void
drop_privileges(void)
{
    struct stat st;

    if (geteuid() != 0)
        return;
    if (stat(var_queue_dir, &st) < 0)
        msg_fatal("queue_directory %s: %m", var_queue_dir);
    if (st.st_uid == 0)
        msg_fatal_status(EX_TEMPFAIL, "queue_directory %s is owned by root: refusing to "
                                      "write the queue as root", var_queue_dir);
    if (setgroups(0, NULL) < 0 || setgid(st.st_gid) < 0 || setuid(st.st_uid) < 0)
        msg_fatal("cannot switch to the queue owner uid %ld: %m", (long) st.st_uid);
}

static const char *
strip_brackets(char *addr)
{
    size_t len = strlen(addr);

    if (len >= 2 && addr[0] == '<' && addr[len - 1] == '>') {
        addr[len - 1] = 0;
        return addr + 1;
    }
    return addr;
}

static int
address_ok(const char *addr)
{
    if (strlen(addr) > SMTP_ADDR_MAX)
        return 0;
    for (const char *p = addr; *p; p++)
        if ((unsigned char) *p <= ' ' || *p == 0x7f || *p == '<' || *p == '>')
            return 0;
    return 1;
}

static void
usage(void)
{
    msg_fatal_status(EX_USAGE, "usage: odmr-enqueue [-c config_dir] [-o name=value] [-v] "
                               "[-f sender] [-V envid] [-R ret] [-B body] [-U] [-N notify] "
                               "[-C client] [--] recipient...");
}

int
main(int argc, char **argv)
{
    QUEUE_ENV env;
    QUEUE *queue;
    MAPS *maps;
    SINK sink;
    SMTP_STUFF stuff;
    char *error = NULL, *value = NULL, id[QUEUE_ID_LEN + 1];
    char *sender = NULL, *notify = NULL, buf[65536];
    ssize_t n;
    int ch, status = EX_OK;

    fds_sanitize();
    msg_init(argv[0], MSG_SYSLOG | (isatty(2) ? MSG_STDERR : 0));
    signal(SIGPIPE, SIG_IGN);
    memset(&env, 0, sizeof(env));
    while ((ch = getopt(argc, argv, CONFIG_OPTIONS "f:V:R:B:UN:C:")) != -1) {
        switch (ch) {
        case 'f':
            sender = optarg;
            break;
        case 'V':
            if (!xtext_valid(optarg) || strlen(optarg) > 100)
                msg_fatal_status(EX_USAGE, "-V %s: not valid xtext of at most 100 bytes", optarg);
            env.envid = x_strdup(optarg);
            break;
        case 'R':
            if (str_casecmp(optarg, "FULL") != 0 && str_casecmp(optarg, "HDRS") != 0)
                msg_fatal_status(EX_USAGE, "-R %s: expected FULL or HDRS", optarg);
            env.ret = str_upper(x_strdup(optarg));
            break;
        case 'B':
            if (str_casecmp(optarg, "7BIT") != 0 && str_casecmp(optarg, "8BITMIME") != 0)
                msg_fatal_status(EX_USAGE, "-B %s: expected 7BIT or 8BITMIME", optarg);
            env.body = str_upper(x_strdup(optarg));
            break;
        case 'U':
            env.smtputf8 = 1;
            break;
        case 'N':
            notify = optarg;
            break;
        case 'C':
            env.client = x_strdup(optarg);
            break;
        default:
            if (!config_option(ch, optarg))
                usage();
        }
    }
    if (optind >= argc)
        usage();
    config_load();
    drop_privileges();

    /* Envelope, checked before anything touches the queue. */
    env.sender = x_strdup(sender ? strip_brackets(sender) : "");
    if (!address_ok(env.sender))
        msg_fatal_status(EX_DATAERR, "bad sender address \"%s\"", env.sender);
    if ((size_t) (argc - optind) > (size_t) var_recipient_limit)
        msg_fatal_status(EX_DATAERR, "too many recipients (recipient_limit = %ld)",
                         var_recipient_limit);
    if ((maps = maps_open(var_domain_maps, &error)) == NULL)
        msg_fatal("%s: domain_maps = %s: %s", config_file_path(), var_domain_maps, error);
    env.rcpt = x_calloc((size_t) (argc - optind), sizeof(QUEUE_RCPT));
    for (int i = optind; i < argc; i++) {
        QUEUE_RCPT *r = &env.rcpt[env.rcpt_count++];
        const char *addr = strip_brackets(argv[i]);
        const char *domain = addr_domain(addr);
        char lower[256];

        if (!address_ok(addr) || *addr == 0 || domain == NULL
            || str_copy(lower, domain, sizeof(lower)) >= sizeof(lower)
            || !domain_valid(str_lower(lower)))
            msg_fatal_status(EX_DATAERR, "bad recipient address \"%s\"", addr);
        switch (maps_lookup(maps, lower, &value, &error)) {
        case MAP_FOUND:
            x_free(&value);
            break;
        case MAP_NOTFOUND:
            msg_fatal_status(EX_NOUSER, "<%s>: domain %s is not held for on-demand relay", addr,
                             lower);
        default:
            msg_fatal("domain_maps lookup of %s: %s", lower, error);
        }
        r->address = x_strdup(addr);
        r->notify = notify ? str_upper(x_strdup(notify)) : NULL;
        r->status = QUEUE_RCPT_QUEUED;
    }
    maps_close(&maps);
    env.protocol = x_strdup("pipe");
    now_wall(&env.arrival_sec, &env.arrival_usec);

    if ((queue = queue_open(var_queue_dir, QUEUE_OPEN_CREATE, &error)) == NULL)
        msg_fatal("open queue %s: %s", var_queue_dir, error);
    memset(&sink, 0, sizeof(sink));
    if ((sink.writer = queue_writer_begin(queue, &env, &error)) == NULL)
        msg_fatal("cannot create queue file: %s", error);
    smtp_stuff_init(&stuff);
    for (;;) {
        n = read(0, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            queue_writer_abort(&sink.writer);
            msg_fatal("read message from standard input: %m");
        }
        if (n == 0 || smtp_stuff_feed(&stuff, buf, (size_t) n, sink_write, &sink) != 0)
            break;
    }
    if (sink.too_big) {
        queue_writer_abort(&sink.writer);
        msg_fatal_status(EX_DATAERR, "message exceeds message_size_limit %ld",
                         var_message_size_limit);
    }
    (void) smtp_stuff_finish(&stuff, sink_write, &sink);
    if (sink.too_big) {
        queue_writer_abort(&sink.writer);
        msg_fatal_status(EX_DATAERR, "message exceeds message_size_limit %ld",
                         var_message_size_limit);
    }
    if (queue_writer_commit(&sink.writer, id, &error) < 0)
        msg_fatal("queue file commit failed: %s", error);
    queue_wake_env(var_queue_dir, &env); /* customers waiting in ATRN */
    msg_info("%s: from=<%s>, size=%lld, nrcpt=%zu (held for on-demand relay)", id, env.sender,
             sink.size, env.rcpt_count);
    for (size_t i = 0; i < env.rcpt_count; i++)
        msg_info("%s: to=<%s>, status=held", id, env.rcpt[i].address);
    queue_env_free(&env);
    queue_close(&queue);
    return status;
}
