/*
 * NAME
 *     check_odmr - monitoring plugin for the ODMR hold queue
 *
 * SYNOPSIS
 *     check_odmr [-w range] [-c range] [-m age|messages|bytes|stale]
 *                [-d domain] [-s days] [--config-dir dir] [-t seconds]
 *                [--now time] [-v] [-h] [-V]
 *
 * DESCRIPTION
 *     check_odmr is a plugin for Nagios, Icinga, Naemon and the other
 *     monitoring systems that run Monitoring Plugins. It reads the figures
 *     that the hold queue keeps per domain (see odmr-queue(8), stats), so
 *     a check costs one index step per domain with mail, or a few lookups
 *     with -d, whatever the number of messages. It prints one status line
 *     with performance data and exits 0 (OK), 1 (WARNING), 2 (CRITICAL)
 *     or 3 (UNKNOWN).
 *
 *     The thresholds apply to one measure:
 *         age       the age in seconds of the oldest held message (the
 *                   default): the customer that stopped collecting.
 *         messages  held messages (a message for two domains counts in
 *                   both).
 *         bytes     bytes of held messages.
 *         stale     domains that hold mail and were not collected (no
 *                   authorized ATRN) for the last -s days.
 *     With -d domain, age, messages and bytes are those of one domain.
 *
 *     Options:
 *     .TP
 *     -w, --warning range
 *     The warning threshold. Ranges in the Monitoring Plugins syntax:
 *     "10" alerts outside 0..10, "10:" below 10, "~:10" above 10, "10:20"
 *     outside 10..20, "@10:20" inside 10..20. Without -w and -c the status
 *     is OK and the line only reports.
 *     .TP
 *     -c, --critical range
 *     The critical threshold.
 *     .TP
 *     -m, --measure age|messages|bytes|stale
 *     What the thresholds apply to (default age).
 *     .TP
 *     -d, --domain domain
 *     One domain's age, messages or bytes.
 *     .TP
 *     -s, --stale-days days
 *     For the stale measure: not collected for this many days (default 7).
 *     .TP
 *     --config-dir dir
 *     Read dir/odmr.cf (default: $MAIL_CONFIG, else /etc/postfix), as
 *     odmr-queue does.
 *     .TP
 *     -t, --timeout seconds
 *     UNKNOWN after this long (default 10).
 *     .TP
 *     --now time
 *     Judge ages as if the clock said time: epoch seconds, or +N / -N with
 *     a unit (s, m, h, d, w) relative to now. For tests.
 *     .TP
 *     -v, --verbose
 *     After the status line, one line per domain with mail.
 *     .TP
 *     -h, --help, -V, --version
 *     Help, version.
 *     .PP
 *
 * OUTPUT
 *     One line (folded here), e.g.
 *         ODMR WARNING - oldest message 2h00m old (7200 s, example.org);
 *           12 messages, 40960 bytes in 3 domains | age=7200s;3600;86400;0
 *           messages=12;;;0 bytes=40960B;;;0 domains=3;;;0
 *     A queue that cannot be read gives UNKNOWN with the reason.
 *
 * SECURITY
 *     The queue directory belongs to the odmr user, mode 0700. Run the
 *     plugin as that user (e.g. sudo -u odmr from the monitoring user:
 *     "nagios ALL=(odmr) NOPASSWD: /usr/lib/nagios/plugins/check_odmr"),
 *     or as root: it then becomes the owner of queue_directory before it
 *     opens the queue. It only reads. Nothing is setuid.
 *
 * EXIT STATUS
 *     0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (bad arguments, no queue, a
 *     configuration or index error, a timeout).
 *
 * CONFIGURATION PARAMETERS
 *     queue_directory (default: /var/spool/postfix-odmr)
 *         The hold queue.
 *
 * STANDARDS
 *     Monitoring Plugins Development Guidelines (threshold ranges, the
 *     status line, performance data, exit statuses).
 *
 * SEE ALSO
 *     odmr-queue(8), odmr.cf(5)
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "queue.h"
#include "queue_stats.h"
#include "util.h"

#define PLUGIN_OK 0
#define PLUGIN_WARNING 1
#define PLUGIN_CRITICAL 2
#define PLUGIN_UNKNOWN 3

#ifndef ODMR_VERSION
#define ODMR_VERSION "1"
#endif

static const char *const status_text[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};

typedef struct {
    int set;
    int inside; /* '@': alert inside start..end */
    double start, end;
    char text[64];
} RANGE;

typedef enum { M_AGE, M_MESSAGES, M_BYTES, M_STALE } MEASURE;

static ODMR_NORETURN void
unknown(const char *fmt, ...) ODMR_PRINTF(1, 2);

static void
unknown(const char *fmt, ...)
{
    va_list ap;

    printf("ODMR UNKNOWN - ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    _exit(PLUGIN_UNKNOWN);
}

/* msg_fatal (a bad odmr.cf, say) ends here: UNKNOWN, never 75. */
static void
fatal_cleanup(void)
{
    printf("ODMR UNKNOWN - fatal error (details in the mail log)\n");
    fflush(stdout);
    _exit(PLUGIN_UNKNOWN);
}

static long timeout_s = 10;

static void
on_alarm(int sig)
{
    static const char text[] = "ODMR UNKNOWN - timed out\n";

    (void) sig;
    if (write(1, text, sizeof(text) - 1) < 0)
        _exit(PLUGIN_UNKNOWN);
    _exit(PLUGIN_UNKNOWN);
}

static int
parse_double(const char *s, double *v)
{
    char *end;

    errno = 0;
    *v = strtod(s, &end);
    return end != s && *end == 0 && errno == 0 && !isnan(*v) ? 0 : -1;
}

/* [@][start:][end], start "~" = minus infinity, end empty = infinity. */
static int
range_parse(const char *arg, RANGE *r)
{
    char buf[64];
    char *colon, *s = buf;

    memset(r, 0, sizeof(r[0]));
    if (str_copy(buf, arg, sizeof(buf)) >= sizeof(buf) || buf[0] == 0)
        return -1;
    str_copy(r->text, arg, sizeof(r->text));
    if (*s == '@') {
        r->inside = 1;
        s++;
    }
    r->start = 0;
    r->end = INFINITY;
    if ((colon = strchr(s, ':')) != NULL) {
        *colon = 0;
        if (strcmp(s, "~") == 0)
            r->start = -INFINITY;
        else if (parse_double(s, &r->start) < 0)
            return -1;
        s = colon + 1;
        if (*s != 0 && parse_double(s, &r->end) < 0)
            return -1;
    } else if (parse_double(s, &r->end) < 0) {
        return -1;
    }
    if (r->start > r->end)
        return -1;
    r->set = 1;
    return 0;
}

static int
range_alert(const RANGE *r, double v)
{
    int in = v >= r->start && v <= r->end;

    return r->set && (r->inside ? in : !in);
}

static int
parse_now(const char *arg, long *now_r)
{
    long v;

    if (arg[0] == '+' || arg[0] == '-') {
        if (parse_time(arg + 1, 's', 0, 3650L * 86400, &v) < 0)
            return -1;
        *now_r = (long) time(NULL) + (arg[0] == '+' ? v : -v);
        return 0;
    }
    return parse_long(arg, 0, 1L << 40, now_r);
}

static void
usage(void)
{
    printf("Usage: check_odmr [-w range] [-c range] [-m age|messages|bytes|stale] [-d domain]\n"
           "                  [-s days] [--config-dir dir] [-t seconds] [--now time] [-v]\n");
}

static void
help(void)
{
    printf("check_odmr " ODMR_VERSION " - the ODMR hold queue (postfix-odmr)\n\n");
    usage();
    printf("\n"
           " -w, --warning RANGE      warning threshold (Monitoring Plugins range syntax)\n"
           " -c, --critical RANGE     critical threshold\n"
           " -m, --measure WHAT       age (of the oldest held message, seconds; default),\n"
           "                          messages, bytes, or stale (domains with mail not\n"
           "                          collected for -s days)\n"
           " -d, --domain DOMAIN      one domain's age, messages or bytes\n"
           " -s, --stale-days DAYS    for -m stale (default 7)\n"
           "     --config-dir DIR     read DIR/odmr.cf (default $MAIL_CONFIG, else /etc/postfix)\n"
           " -t, --timeout SECONDS    UNKNOWN after this long (default 10)\n"
           "     --now TIME           judge ages at TIME (epoch, or +N/-N with s m h d w)\n"
           " -v, --verbose            one more line per domain\n"
           " -h, --help    -V, --version\n"
           "\nRanges: 10 (outside 0..10), 10: (below 10), ~:10 (above 10), 10:20, @10:20 "
           "(inside).\nSee check_odmr(8).\n");
}

/* As root, become the queue owner (the queue is 0700). */
static void
drop_privileges(const char *dir)
{
    struct stat st;

    if (geteuid() != 0)
        return;
    if (stat(dir, &st) < 0)
        unknown("queue directory %s: %s", dir, strerror(errno));
    if (st.st_uid == 0)
        return;
    if (setgroups(0, NULL) < 0 || setgid(st.st_gid) < 0 || setuid(st.st_uid) < 0)
        unknown("cannot become the owner of %s: %s", dir, strerror(errno));
}

typedef struct {
    char **names;
    long *last;
    size_t count, alloc;
} COLLECTED;

static int
collected_add(const char *name, const QUEUE_COLLECT *c, void *ctx)
{
    COLLECTED *cs = ctx;

    if (cs->count == cs->alloc) {
        cs->alloc = cs->alloc ? cs->alloc * 2 : 64;
        cs->names = x_realloc(cs->names, cs->alloc * sizeof(*cs->names));
        cs->last = x_realloc(cs->last, cs->alloc * sizeof(*cs->last));
    }
    cs->names[cs->count] = x_strdup(name);
    cs->last[cs->count++] = c->last_atrn;
    return 0;
}

/* Perf data: label=value[UOM];warn;crit;min */
static void
perf(const char *label, double v, const char *uom, const RANGE *w, const RANGE *c)
{
    printf(" %s=%.0f%s;%s;%s;0", label, v, uom, w && w->set ? w->text : "",
           c && c->set ? c->text : "");
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"warning", required_argument, NULL, 'w'},  {"critical", required_argument, NULL, 'c'},
        {"measure", required_argument, NULL, 'm'},  {"domain", required_argument, NULL, 'd'},
        {"stale-days", required_argument, NULL, 's'}, {"config-dir", required_argument, NULL, 'C'},
        {"timeout", required_argument, NULL, 't'},  {"now", required_argument, NULL, 'N'},
        {"verbose", no_argument, NULL, 'v'},        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},        {NULL, 0, NULL, 0},
    };
    RANGE warn, crit;
    MEASURE measure = M_AGE;
    const char *domain = NULL;
    long stale_days = 7, now = (long) time(NULL);
    int verbose = 0, ch, status = PLUGIN_OK;
    QUEUE_FIGURES *figs = NULL, one;
    size_t nfig = 0;
    unsigned long long messages = 0, bytes = 0;
    long oldest = 0, age = 0;
    const char *oldest_domain = NULL;
    size_t stale = 0, ndomains = 0;
    char *error = NULL, agebuf[32];
    double value = 0;
    QUEUE *q;
    int built = 1;

    memset(&warn, 0, sizeof(warn));
    memset(&crit, 0, sizeof(crit));
    fds_sanitize();
    msg_init("check_odmr", MSG_SYSLOG);
    msg_set_cleanup(fatal_cleanup);
    while ((ch = getopt_long(argc, argv, "w:c:m:d:s:t:vhV", longopts, NULL)) != -1) {
        switch (ch) {
        case 'w':
            if (range_parse(optarg, &warn) < 0)
                unknown("bad warning range \"%.60s\"", optarg);
            break;
        case 'c':
            if (range_parse(optarg, &crit) < 0)
                unknown("bad critical range \"%.60s\"", optarg);
            break;
        case 'm':
            if (strcmp(optarg, "age") == 0)
                measure = M_AGE;
            else if (strcmp(optarg, "messages") == 0)
                measure = M_MESSAGES;
            else if (strcmp(optarg, "bytes") == 0)
                measure = M_BYTES;
            else if (strcmp(optarg, "stale") == 0)
                measure = M_STALE;
            else
                unknown("bad measure \"%.60s\" (age, messages, bytes or stale)", optarg);
            break;
        case 'd':
            if (!domain_valid(optarg))
                unknown("bad domain \"%.100s\"", optarg);
            domain = optarg;
            break;
        case 's':
            if (parse_long(optarg, 0, 100000, &stale_days) < 0)
                unknown("bad number of days \"%.60s\"", optarg);
            break;
        case 'C':
            config_set_directory(optarg);
            break;
        case 't':
            if (parse_long(optarg, 1, 86400, &timeout_s) < 0)
                unknown("bad timeout \"%.60s\"", optarg);
            break;
        case 'N':
            if (parse_now(optarg, &now) < 0)
                unknown("bad time \"%.60s\"", optarg);
            break;
        case 'v':
            verbose++;
            break;
        case 'h':
            help();
            return PLUGIN_OK;
        case 'V':
            printf("check_odmr " ODMR_VERSION " (postfix-odmr)\n");
            return PLUGIN_OK;
        default:
            usage();
            return PLUGIN_UNKNOWN;
        }
    }
    if (optind != argc) {
        usage();
        return PLUGIN_UNKNOWN;
    }
    if (domain != NULL && measure == M_STALE)
        unknown("-d goes with the measures age, messages and bytes");
    signal(SIGALRM, on_alarm);
    alarm((unsigned) timeout_s);

    config_load();
    {
        struct stat st;

        if (stat(var_queue_dir, &st) < 0 || !S_ISDIR(st.st_mode))
            unknown("no queue: %s: %s", var_queue_dir,
                    errno ? strerror(errno) : "not a directory");
    }
    drop_privileges(var_queue_dir);
    if ((q = queue_open(var_queue_dir, QUEUE_OPEN_READONLY, &error)) == NULL)
        unknown("cannot open the queue: %s", error);

    if (domain != NULL) {
        int found = queue_figures_domain(q, domain, &one, &built, &error);

        if (found < 0)
            unknown("%s", error);
        if (found) {
            messages = one.messages;
            bytes = one.bytes;
            oldest = one.oldest;
            oldest_domain = one.domain;
            ndomains = 1;
        }
    } else {
        const QUEUE_FIGURES *first;

        if (queue_figures_all(q, &figs, &nfig, NULL, &built, &error) < 0)
            unknown("%s", error);
        first = queue_figures_oldest(figs, nfig);
        ndomains = nfig;
        for (size_t i = 0; i < nfig; i++) {
            messages += figs[i].messages;
            bytes += figs[i].bytes;
        }
        if (first != NULL) {
            oldest = first->oldest;
            oldest_domain = first->domain;
        }
        if (measure == M_STALE) {
            COLLECTED cs = {NULL, NULL, 0, 0};
            long cutoff = now - stale_days * 86400;
            size_t j = 0;

            if (queue_collect_walk(q, 0, collected_add, &cs, &error) < 0)
                unknown("%s", error);
            for (size_t i = 0; i < nfig; i++) {
                long last = 0;

                while (j < cs.count && strcmp(cs.names[j], figs[i].domain) < 0)
                    j++;
                if (j < cs.count && strcmp(cs.names[j], figs[i].domain) == 0)
                    last = cs.last[j];
                stale += last <= cutoff;
            }
            for (size_t i = 0; i < cs.count; i++)
                free(cs.names[i]);
            free(cs.names);
            free(cs.last);
        }
    }
    if (!built)
        unknown("the queue's figures are not built yet: run \"odmr-queue reindex\" once");
    age = oldest ? now - oldest : 0;
    if (age < 0)
        age = 0;
    switch (measure) {
    case M_AGE:
        value = (double) age;
        break;
    case M_MESSAGES:
        value = (double) messages;
        break;
    case M_BYTES:
        value = (double) bytes;
        break;
    case M_STALE:
        value = (double) stale;
        break;
    }
    if (range_alert(&crit, value))
        status = PLUGIN_CRITICAL;
    else if (range_alert(&warn, value))
        status = PLUGIN_WARNING;

    printf("ODMR %s - ", status_text[status]);
    if (measure == M_STALE)
        printf("%zu domain%s with mail not collected for %ld day%s; ", stale,
               stale == 1 ? "" : "s", stale_days, stale_days == 1 ? "" : "s");
    if (oldest) {
        format_age(age, agebuf, sizeof(agebuf));
        printf("oldest message %s old (%ld s, %s); ", agebuf, age, oldest_domain);
    } else {
        printf("no mail held%s%s; ", domain ? " for " : "", domain ? domain : "");
    }
    printf("%llu message%s, %llu bytes in %zu domain%s |", messages, messages == 1 ? "" : "s",
           bytes, ndomains, ndomains == 1 ? "" : "s");
    perf("age", (double) age, "s", measure == M_AGE ? &warn : NULL,
         measure == M_AGE ? &crit : NULL);
    perf("messages", (double) messages, "", measure == M_MESSAGES ? &warn : NULL,
         measure == M_MESSAGES ? &crit : NULL);
    perf("bytes", (double) bytes, "B", measure == M_BYTES ? &warn : NULL,
         measure == M_BYTES ? &crit : NULL);
    perf("domains", (double) ndomains, "", NULL, NULL);
    if (measure == M_STALE)
        perf("stale_domains", (double) stale, "", &warn, &crit);
    printf("\n");
    for (size_t i = 0; verbose && i < nfig; i++) {
        format_age(figs[i].oldest ? now - figs[i].oldest : 0, agebuf, sizeof(agebuf));
        printf("%s: %llu messages, %llu recipients, %llu bytes, oldest %s\n", figs[i].domain,
               figs[i].messages, figs[i].recipients, figs[i].bytes, agebuf);
    }
    free(figs);
    queue_close(&q);
    fflush(stdout);
    return status;
}
