/*
 * config.c - odmr.cf in main.cf syntax; see config.h.
 *
 * One table describes every parameter: its name, type, range, default text
 * and the variable that receives the value. Loading is done in stages so
 * that each error can name where the offending text came from:
 *
 *   1. every parameter gets its default text (source: built-in default);
 *   2. DIR/odmr.cf replaces texts (source: "FILE, line N");
 *   3. -o overrides replace texts (source: "-o name=value");
 *   4. every text is expanded ($name, ${name}), each parameter once;
 *   5. every expanded text is checked against its type and range;
 *   6. the rules between parameters are checked;
 *   7. the logging parameters are handed to log.h.
 */
#include <errno.h>
#include <sysexits.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "util.h"

/* The variables; config_load() fills them, config_reset() clears them. */
char *var_config_dir;
char *var_queue_dir;
char *var_domain_maps;
char *var_auth_maps;
char *var_user_domain_maps;
char *var_tls_cert_user_maps;
char *var_postmap_path;
char *var_sendmail_path;
char *var_postfix_config_dir;
char *var_syslog_name;
char *var_syslog_facility;
char *var_log_file;
char *var_myhostname;
char *var_odmr_banner;
char *var_lmtp_banner;
long var_message_size_limit;
long var_line_length_limit;
long var_recipient_limit;
long var_atrn_domain_limit;
long var_auth_failure_limit;
long var_auth_response_limit;
long var_flush_message_limit;
long var_error_limit;
long var_command_timeout;
long var_session_timeout;
long var_lock_timeout;
long var_auth_failure_delay;
long var_smtp_helo_timeout;
long var_smtp_mail_timeout;
long var_smtp_rcpt_timeout;
long var_smtp_data_init_timeout;
long var_smtp_data_xfer_timeout;
long var_smtp_data_done_timeout;
long var_smtp_quit_timeout;
long var_maximal_queue_lifetime;
long var_delay_warning_time;
long var_bounce_size_limit;
long var_notice_submit_timeout;
int var_index_sync;
int var_smtputf8_enable;
char *var_sasl_mechanisms;
char *var_tls_security_level;
char *var_tls_cert_file;
char *var_tls_key_file;
char *var_tls_CAfile;
char *var_smtp_tls_security_level;
char *var_reversed_tls_policy_maps;
long var_smtp_starttls_timeout;
char *var_test_fault_point;
/* odmrd on the open internet (issue 9) */
long var_odmrd_client_connection_count_limit;
long var_odmrd_pre_auth_timeout;
long var_odmrd_client_auth_failure_limit;
long var_odmrd_client_user_auth_failure_limit;
long var_odmrd_auth_failure_window;
long var_odmrd_atrn_command_limit;
long var_odmrd_atrn_wait;
char *var_odmrd_atrn_wait_maps;

#define CONFIG_FILE_NAME "odmr.cf"
#define CONFIG_DEFAULT_DIR "/etc/postfix"
/* A chain of $name references longer than this is a mistake, not a design. */
#define CONFIG_MAX_DEPTH 20
/* Bounds on a logical line and on an expanded value: the file is trusted,
 * but a runaway continuation or $a$a$a... chain must not eat memory. */
#define CONFIG_LINE_MAX 65536
#define CONFIG_VALUE_MAX 65536

#define DAY (24L * 3600)

enum param_type {
    PT_STR,   /* any text */
    PT_ENUM,  /* one of 'allowed', case-insensitive, stored in lower case */
    PT_INT,   /* decimal integer in [min, max] */
    PT_TIME,  /* interval with unit, in [min, max] seconds */
    PT_SIZE,  /* bytes with optional k/m/g, in [min, max] */
    PT_BOOL,  /* yes/no and friends */
};

struct param {
    const char *name;
    enum param_type type;
    const char *def;              /* default text, may hold $name */
    const char *(*def_fn)(void);  /* computed default, overrides def */
    char **str_var;               /* PT_STR, PT_ENUM */
    long *long_var;               /* PT_INT, PT_TIME, PT_SIZE */
    int *bool_var;                /* PT_BOOL */
    long min, max;
    char unit;                    /* PT_TIME default unit */
    const char *const *allowed;   /* PT_ENUM, NULL-terminated */
    int fixed;                    /* only -c/$MAIL_CONFIG may set it */
};

static const char *myhostname_default(void);

static const char *const tls_levels[] = {"none", "may", "encrypt", NULL};
static const char *const facilities[] = {
    "mail", "daemon", "user", "local0", "local1", "local2", "local3",
    "local4", "local5", "local6", "local7", NULL,
};

#define P_STR(n, d, v) {.name = (n), .type = PT_STR, .def = (d), .str_var = &(v)}
#define P_ENUM(n, d, v, a) \
    {.name = (n), .type = PT_ENUM, .def = (d), .str_var = &(v), .allowed = (a)}
#define P_INT(n, d, v, lo, hi) \
    {.name = (n), .type = PT_INT, .def = (d), .long_var = &(v), .min = (lo), .max = (hi)}
#define P_TIME(n, d, v, u, lo, hi) \
    {.name = (n), .type = PT_TIME, .def = (d), .long_var = &(v), .unit = (u), \
     .min = (lo), .max = (hi)}
#define P_SIZE(n, d, v, lo, hi) \
    {.name = (n), .type = PT_SIZE, .def = (d), .long_var = &(v), .min = (lo), .max = (hi)}
#define P_BOOL(n, d, v) {.name = (n), .type = PT_BOOL, .def = (d), .bool_var = &(v)}

/*
 * The one table. Upper bounds keep later arithmetic (milliseconds in an
 * int64, buffer sizes) far from overflow; lower bounds encode the rules
 * that involve a single parameter (line_length_limit >= 512, smtp_*_timeout
 * > 0).
 */
static const struct param params[] = {
    {.name = "config_directory", .type = PT_STR, .def = CONFIG_DEFAULT_DIR,
     .str_var = &var_config_dir, .fixed = 1},
    P_STR("queue_directory", "/var/spool/postfix-odmr", var_queue_dir),
    P_STR("domain_maps", "hash:$config_directory/odmr_domains", var_domain_maps),
    P_STR("auth_maps", "hash:$config_directory/odmr_passwd", var_auth_maps),
    P_STR("user_domain_maps", "", var_user_domain_maps),
    P_STR("tls_cert_user_maps", "", var_tls_cert_user_maps),
    P_STR("postmap_path", "/usr/sbin/postmap", var_postmap_path),
    P_STR("sendmail_path", "/usr/sbin/sendmail", var_sendmail_path),
    P_STR("postfix_config_directory", "$config_directory", var_postfix_config_dir),

    P_STR("syslog_name", "postfix", var_syslog_name),
    P_ENUM("syslog_facility", "mail", var_syslog_facility, facilities),
    P_STR("log_file", "", var_log_file),

    {.name = "myhostname", .type = PT_STR, .def_fn = myhostname_default,
     .str_var = &var_myhostname},
    P_STR("odmr_banner", "$myhostname ESMTP on-demand mail relay", var_odmr_banner),
    P_STR("lmtp_banner", "$myhostname LMTP odmr-store", var_lmtp_banner),
    P_SIZE("message_size_limit", "10240000", var_message_size_limit, 0, LONG_MAX),
    P_INT("line_length_limit", "2048", var_line_length_limit, 512, 1048576),
    P_INT("recipient_limit", "1000", var_recipient_limit, 1, INT_MAX),
    P_INT("atrn_domain_limit", "100", var_atrn_domain_limit, 1, INT_MAX),
    P_INT("auth_failure_limit", "3", var_auth_failure_limit, 1, INT_MAX),
    P_SIZE("auth_response_limit", "12288", var_auth_response_limit, 512, 1048576),
    P_INT("flush_message_limit", "0", var_flush_message_limit, 0, INT_MAX),
    P_INT("error_limit", "20", var_error_limit, 1, INT_MAX),

    P_TIME("command_timeout", "300s", var_command_timeout, 's', 1, DAY),
    P_TIME("session_timeout", "3600s", var_session_timeout, 's', 1, 7 * DAY),
    P_TIME("lock_timeout", "10s", var_lock_timeout, 's', 1, 3600),
    P_TIME("auth_failure_delay", "1s", var_auth_failure_delay, 's', 0, 3600),
    P_TIME("smtp_helo_timeout", "300s", var_smtp_helo_timeout, 's', 1, DAY),
    P_TIME("smtp_mail_timeout", "300s", var_smtp_mail_timeout, 's', 1, DAY),
    P_TIME("smtp_rcpt_timeout", "300s", var_smtp_rcpt_timeout, 's', 1, DAY),
    P_TIME("smtp_data_init_timeout", "120s", var_smtp_data_init_timeout, 's', 1, DAY),
    P_TIME("smtp_data_xfer_timeout", "180s", var_smtp_data_xfer_timeout, 's', 1, DAY),
    P_TIME("smtp_data_done_timeout", "600s", var_smtp_data_done_timeout, 's', 1, DAY),
    P_TIME("smtp_quit_timeout", "300s", var_smtp_quit_timeout, 's', 1, DAY),
    P_TIME("maximal_queue_lifetime", "5d", var_maximal_queue_lifetime, 'd', 1, 3650 * DAY),
    P_TIME("delay_warning_time", "0h", var_delay_warning_time, 'h', 0, 3650 * DAY),
    P_SIZE("bounce_size_limit", "50000", var_bounce_size_limit, 1, LONG_MAX),
    P_TIME("notice_submit_timeout", "60s", var_notice_submit_timeout, 's', 1, 3600),

    P_BOOL("index_sync", "yes", var_index_sync),
    P_BOOL("smtputf8_enable", "yes", var_smtputf8_enable),
    P_STR("sasl_mechanisms", "CRAM-MD5 SCRAM-SHA-256 PLAIN LOGIN EXTERNAL",
          var_sasl_mechanisms),

    /* TLS by default with the system's certificate, as Debian's Postfix
     * does for smtpd (the ssl-cert package's snakeoil pair). */
    P_ENUM("tls_security_level", "may", var_tls_security_level, tls_levels),
    P_STR("tls_cert_file", "/etc/ssl/certs/ssl-cert-snakeoil.pem", var_tls_cert_file),
    P_STR("tls_key_file", "/etc/ssl/private/ssl-cert-snakeoil.key", var_tls_key_file),
    P_STR("tls_CAfile", "", var_tls_CAfile),
    P_ENUM("smtp_tls_security_level", "none", var_smtp_tls_security_level, tls_levels),
    P_STR("reversed_tls_policy_maps", "", var_reversed_tls_policy_maps),
    P_TIME("smtp_starttls_timeout", "30s", var_smtp_starttls_timeout, 's', 1, DAY),

    P_STR("test_fault_point", "", var_test_fault_point),

    /* odmrd on the open internet: limits shared by the odmrd processes
     * through small files under queue_directory (src/odmrd/odmrd_limit.c). */
    P_INT("odmrd_client_connection_count_limit", "10",
          var_odmrd_client_connection_count_limit, 0, 100000),
    P_TIME("odmrd_pre_auth_timeout", "60s", var_odmrd_pre_auth_timeout, 's', 1, DAY),
    P_INT("odmrd_client_auth_failure_limit", "20", var_odmrd_client_auth_failure_limit, 0,
          INT_MAX),
    P_INT("odmrd_client_user_auth_failure_limit", "5",
          var_odmrd_client_user_auth_failure_limit, 0, INT_MAX),
    P_TIME("odmrd_auth_failure_window", "10m", var_odmrd_auth_failure_window, 's', 1,
           7 * DAY),
    P_INT("odmrd_atrn_command_limit", "10", var_odmrd_atrn_command_limit, 1, INT_MAX),
    /* The waiting ATRN (issue 8): RFC 2645 gives the server 10 minutes to
     * answer ATRN, so no wait may be longer. */
    P_TIME("odmrd_atrn_wait", "0s", var_odmrd_atrn_wait, 's', 0, 600),
    P_STR("odmrd_atrn_wait_maps", "", var_odmrd_atrn_wait_maps),
};

#define NPARAMS ODMR_ARRAY_LEN(params)

/* What the table cannot hold because it changes while loading. */
struct param_state {
    char *raw;        /* text before expansion */
    char *where;      /* "FILE, line N", "-o name=value" or NULL (default) */
    char *value;      /* expanded text; PT_STR variables point here */
    long num;         /* parsed value of numeric and boolean types */
    int expanding;    /* on the expansion stack (loop detection) */
};

static struct param_state state[NPARAMS];
static int loaded;

static char *config_dir;         /* from config_set_directory() */
static char **overrides;
static size_t override_count;
static char file_path[PATH_MAX];

/* The expansion stack, for the loop message "a -> b -> a". */
static size_t expand_stack[CONFIG_MAX_DEPTH + 1];

/* A growing string with a hard cap; exceeding the cap is fatal. */
struct sbuf {
    char *s;
    size_t len, cap, max;
};

static int
sbuf_add(struct sbuf *b, const char *p, size_t n)
{
    if (n > b->max - b->len)
        return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;

        while (cap < b->len + n + 1)
            cap *= 2;
        b->s = x_realloc(b->s, cap);
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = 0;
    return 0;
}

static const char *
myhostname_default(void)
{
    static char host[256];

    /* A name without a dot is still the best we know; use it as is. */
    if (gethostname(host, sizeof(host)) < 0 || host[0] == 0)
        str_copy(host, "localhost", sizeof(host));
    host[sizeof(host) - 1] = 0;
    return host;
}

static const char *
param_default(const struct param *p)
{
    return p->def_fn ? p->def_fn() : p->def;
}

static int
param_find(const char *name, size_t len)
{
    for (size_t i = 0; i < NPARAMS; i++)
        if (strlen(params[i].name) == len && memcmp(params[i].name, name, len) == 0)
            return (int) i;
    return -1;
}

static int
is_name_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
        || c == '_';
}

/* Where a parameter's text came from, for the front of a fatal message. */
static const char *
param_where(size_t i)
{
    return state[i].where ? state[i].where : "built-in default";
}

static void
param_set(size_t i, const char *raw, char *where)
{
    x_free(&state[i].raw);
    x_free(&state[i].where);
    state[i].raw = x_strdup(raw);
    state[i].where = where;
}

static void
clear_values(void)
{
    for (size_t i = 0; i < NPARAMS; i++) {
        const struct param *p = &params[i];

        x_free(&state[i].raw);
        x_free(&state[i].where);
        x_free(&state[i].value);
        state[i].num = 0;
        state[i].expanding = 0;
        if (p->str_var)
            *p->str_var = NULL;
        if (p->long_var)
            *p->long_var = 0;
        if (p->bool_var)
            *p->bool_var = 0;
    }
    loaded = 0;
}

int
config_option(int ch, const char *arg)
{
    switch (ch) {
    case 'c':
        config_set_directory(arg);
        return 1;
    case 'o':
        config_add_override(arg);
        return 1;
    case 'v':
        msg_verbose++;
        return 1;
    default:
        return 0;
    }
}

void
config_daemon_init(int argc, char **argv, const char *usage)
{
    int fd, ch;

    fds_sanitize();
    if ((fd = open("/dev/null", O_WRONLY | O_CLOEXEC)) >= 0 && fd != 2) {
        (void) dup2(fd, 2); /* dup2 clears close-on-exec on fd 2 */
        (void) close(fd);
    }
    opterr = 0;
    while ((ch = getopt(argc, argv, CONFIG_OPTIONS)) != -1)
        if (!config_option(ch, optarg))
            msg_fatal_status(EX_USAGE, "usage: %s", usage);
    if (optind != argc)
        msg_fatal_status(EX_USAGE, "usage: %s", usage);
    config_load();
    if (getuid() == 0 || geteuid() == 0)
        msg_fatal("refusing to run as root: set user=odmr on the spawn(8) service in master.cf");
}

void
config_set_directory(const char *dir)
{
    x_free(&config_dir);
    if (dir != NULL)
        config_dir = x_strdup(dir);
}

void
config_add_override(const char *name_eq_value)
{
    overrides = x_realloc(overrides, (override_count + 1) * sizeof(*overrides));
    overrides[override_count++] = x_strdup(name_eq_value);
}

void
config_reset(void)
{
    clear_values();
    config_set_directory(NULL);
    for (size_t i = 0; i < override_count; i++)
        x_free(&overrides[i]);
    x_free(&overrides);
    override_count = 0;
    file_path[0] = 0;
}

static const char *
chosen_directory(void)
{
    const char *env;

    if (config_dir != NULL)
        return config_dir;
    env = getenv("MAIL_CONFIG");
    if (env != NULL && env[0] != 0)
        return env;
    return CONFIG_DEFAULT_DIR;
}

const char *
config_file_path(void)
{
    if (str_format(file_path, sizeof(file_path), "%s/%s", chosen_directory(),
                   CONFIG_FILE_NAME) < 0)
        msg_fatal("configuration directory name too long: \"%.100s...\"",
                  chosen_directory());
    return file_path;
}

/*
 * Split one logical line "name = value" in place. 0, or -1 with the
 * reason (malloc'd) in *error_r.
 */
static int
split_setting(char *text, char **name_r, char **value_r, char **error_r)
{
    char *eq = strchr(text, '=');
    char clean[LOG_CLEAN_BUFSIZE];

    if (eq == NULL) {
        str_trim(text);
        *error_r = x_asprintf("missing '=' after \"%s\"",
                              log_clean(clean, sizeof(clean), text, strlen(text)));
        return -1;
    }
    *eq = 0;
    *name_r = str_trim(text);
    *value_r = str_trim(eq + 1);
    if ((*name_r)[0] == 0) {
        *error_r = x_strdup("missing parameter name before '='");
        return -1;
    }
    return 0;
}

/* One odmr.cf setting; 'where' names it in messages and is owned by the
 * parameter afterwards. */
static void
apply_pair(const char *name, const char *value, char *where)
{
    char clean[LOG_CLEAN_BUFSIZE];
    int i = param_find(name, strlen(name));

    if (i < 0)
        msg_fatal("%s: unknown parameter \"%s\"", where,
                  log_clean(clean, sizeof(clean), name, strlen(name)));
    if (params[i].fixed)
        msg_fatal("%s: parameter %s: cannot be set here; use -c or MAIL_CONFIG", where,
                  params[i].name);
    param_set((size_t) i, value, where);
}

/* A -o override. */
static void
apply_setting(char *text, char *where)
{
    char *name, *value, *error = NULL;

    if (split_setting(text, &name, &value, &error) < 0)
        msg_fatal("%s: %s", where, error);
    apply_pair(name, value, where);
}

static int
finish_logical_line(struct sbuf *line, const char *path, long lineno, config_setting_fn fn,
                    void *ctx, char **error_r)
{
    char *name, *value, *error = NULL, *where;
    int ret;

    if (line->len == 0)
        return 0;
    where = x_asprintf("%s, line %ld", path, lineno);
    if (split_setting(line->s, &name, &value, &error) < 0) {
        *error_r = x_asprintf("%s: %s", where, error);
        free(error);
        free(where);
        return -1;
    }
    ret = fn(name, value, where, ctx, error_r);
    line->len = 0;
    line->s[0] = 0;
    return ret;
}

int
config_read_file(const char *path, config_setting_fn fn, void *ctx, char **error_r)
{
    FILE *fp = fopen(path, "re");
    struct sbuf line = {.max = CONFIG_LINE_MAX};
    char *buf = NULL;
    size_t bufsize = 0;
    ssize_t n;
    long lineno = 0, start = 0;
    int ret = -1;

    *error_r = NULL;
    if (fp == NULL) {
        if (errno == ENOENT)
            return 1;
        *error_r = x_asprintf("open %s: %s", path, strerror(errno));
        return -1;
    }
    while ((n = getline(&buf, &bufsize, fp)) >= 0) {
        char *p = buf, *text;

        lineno++;
        if (memchr(buf, 0, (size_t) n) != NULL) {
            *error_r = x_asprintf("%s, line %ld: NUL byte in line", path, lineno);
            goto out;
        }
        while (*p == ' ' || *p == '\t')
            p++;
        text = str_trim(p);
        /* Blank and comment lines neither start nor end a logical line. */
        if (text[0] == 0 || text[0] == '#')
            continue;
        if (p != buf) {
            if (line.len == 0) {
                *error_r = x_asprintf("%s, line %ld: logical line must not start with "
                                      "whitespace", path, lineno);
                goto out;
            }
            if (sbuf_add(&line, " ", 1) < 0 || sbuf_add(&line, text, strlen(text)) < 0) {
                *error_r = x_asprintf("%s, line %ld: logical line too long", path, start);
                goto out;
            }
            continue;
        }
        if (finish_logical_line(&line, path, start, fn, ctx, error_r) < 0)
            goto out;
        start = lineno;
        if (sbuf_add(&line, text, strlen(text)) < 0) {
            *error_r = x_asprintf("%s, line %ld: logical line too long", path, start);
            goto out;
        }
    }
    if (ferror(fp)) {
        *error_r = x_asprintf("read %s: %s", path, strerror(errno));
        goto out;
    }
    if (finish_logical_line(&line, path, start, fn, ctx, error_r) < 0)
        goto out;
    ret = 0;
out:
    free(line.s);
    free(buf);
    fclose(fp);
    return ret;
}

static int
odmr_cf_setting(const char *name, const char *value, char *where, void *ctx, char **error_r)
{
    apply_pair(name, value, where);
    return 0;
}

/* A missing file means every parameter keeps its default. */
static void
read_file(const char *path)
{
    char *error = NULL;

    if (config_read_file(path, odmr_cf_setting, NULL, &error) < 0)
        msg_fatal("%s", error);
}

static const char *expand_param(size_t i, int depth);

/*
 * Expand $name and ${name} in 'text', which belongs to parameter 'owner';
 * "$$" stands for one '$'. Returns allocated text.
 */
static char *
expand_text(const char *text, size_t owner, int depth)
{
    struct sbuf out = {.max = CONFIG_VALUE_MAX};
    const char *p = text;

    (void) sbuf_add(&out, "", 0);
    while (*p) {
        const char *dollar = strchr(p, '$'), *name, *end;
        int i;

        if (dollar == NULL)
            dollar = p + strlen(p);
        if (sbuf_add(&out, p, (size_t) (dollar - p)) < 0)
            goto too_long;
        if (*dollar == 0)
            break;
        p = dollar + 1;
        if (*p == '$') {
            if (sbuf_add(&out, "$", 1) < 0)
                goto too_long;
            p++;
            continue;
        }
        if (*p == '{') {
            name = p + 1;
            end = strchr(name, '}');
            if (end == NULL)
                msg_fatal("%s: parameter %s: missing '}' after \"${\"", param_where(owner),
                          params[owner].name);
            p = end + 1;
        } else {
            name = p;
            for (end = p; is_name_char((unsigned char) *end); end++)
                ;
            p = end;
        }
        if (end == name)
            msg_fatal("%s: parameter %s: '$' not followed by a parameter name "
                      "(write \"$$\" for a literal '$')", param_where(owner),
                      params[owner].name);
        for (const char *q = name; q < end; q++)
            if (!is_name_char((unsigned char) *q))
                msg_fatal("%s: parameter %s: bad parameter name in \"${%.*s}\"",
                          param_where(owner), params[owner].name, (int) (end - name),
                          name);
        i = param_find(name, (size_t) (end - name));
        if (i < 0)
            msg_fatal("%s: parameter %s: reference to unknown parameter \"$%.*s\"",
                      param_where(owner), params[owner].name, (int) (end - name), name);
        name = expand_param((size_t) i, depth + 1);
        if (sbuf_add(&out, name, strlen(name)) < 0)
            goto too_long;
    }
    return out.s;

too_long:
    msg_fatal("%s: parameter %s: value longer than %d bytes after $name expansion",
              param_where(owner), params[owner].name, CONFIG_VALUE_MAX);
}

/* The expanded text of parameter i, computed once per load. */
static const char *
expand_param(size_t i, int depth)
{
    struct param_state *st = &state[i];

    if (st->value != NULL)
        return st->value;
    if (st->expanding) {
        char chain[1024] = "";
        size_t len = 0;
        int start = 0;

        /* Show only the loop itself, not what led into it. */
        for (int d = 0; d < depth; d++)
            if (expand_stack[d] == i)
                start = d;
        for (int d = start; d < depth; d++) {
            str_copy(chain + len, params[expand_stack[d]].name, sizeof(chain) - len);
            len = strnlen(chain, sizeof(chain) - 1);
            str_copy(chain + len, " -> ", sizeof(chain) - len);
            len = strnlen(chain, sizeof(chain) - 1);
        }
        str_copy(chain + len, params[i].name, sizeof(chain) - len);
        msg_fatal("%s: parameter %s: loop in $name expansion: %s", param_where(i),
                  params[i].name, chain);
    }
    /* Name the parameter where the chain starts: that is where to look. */
    if (depth >= CONFIG_MAX_DEPTH)
        msg_fatal("%s: parameter %s: $name references nested deeper than %d",
                  param_where(expand_stack[0]), params[expand_stack[0]].name,
                  CONFIG_MAX_DEPTH);
    /* The directory name is taken literally: it comes from -c or the environment. */
    if (params[i].fixed)
        return st->value = x_strdup(st->raw);
    expand_stack[depth] = i;
    st->expanding = 1;
    st->value = expand_text(st->raw, i, depth);
    st->expanding = 0;
    return st->value;
}

/*
 * Check 'text' against parameter p's type. On success store the number in
 * *num_r (numeric and boolean types) and return NULL; otherwise return what
 * was wrong, as text for the message.
 */
static const char *
parse_value(const struct param *p, const char *text, long *num_r, char *err, size_t errlen)
{
    char clean[LOG_CLEAN_BUFSIZE];
    long v = 0;
    long long sz;
    int b;

    log_clean(clean, sizeof(clean), text, strlen(text));
    switch (p->type) {
    case PT_STR:
        return NULL;
    case PT_ENUM:
        for (size_t k = 0; p->allowed[k] != NULL; k++)
            if (str_casecmp(text, p->allowed[k]) == 0)
                return NULL;
        {
            char list[256] = "";
            size_t len = 0;

            for (size_t k = 0; p->allowed[k] != NULL; k++) {
                str_copy(list + len, k ? " | " : "", sizeof(list) - len);
                len = strnlen(list, sizeof(list) - 1);
                str_copy(list + len, p->allowed[k], sizeof(list) - len);
                len = strnlen(list, sizeof(list) - 1);
            }
            (void) str_format(err, errlen, "bad value \"%s\" (expected %s)", clean, list);
        }
        return err;
    case PT_INT:
        if (parse_long(text, LONG_MIN, LONG_MAX, &v) < 0) {
            (void) str_format(err, errlen, "bad numerical value \"%s\" (expected an integer)",
                              clean);
            return err;
        }
        break;
    case PT_TIME:
        if (parse_time(text, p->unit, 0, LONG_MAX, &v) < 0) {
            (void) str_format(err, errlen, "bad time value \"%s\" (expected a number with "
                              "optional s, m, h, d or w; default unit %c)", clean, p->unit);
            return err;
        }
        break;
    case PT_SIZE:
        if (parse_size(text, 0, LONG_MAX, &sz) < 0) {
            (void) str_format(err, errlen, "bad size value \"%s\" (expected a number with "
                              "optional k, m or g)", clean);
            return err;
        }
        v = (long) sz;
        break;
    case PT_BOOL:
        if (parse_bool(text, &b) < 0) {
            (void) str_format(err, errlen, "bad boolean value \"%s\" (expected yes or no)",
                              clean);
            return err;
        }
        *num_r = b;
        return NULL;
    }
    if (v < p->min || v > p->max) {
        if (p->type == PT_INT)
            (void) str_format(err, errlen, "value %ld out of range (%ld..%ld)", v, p->min,
                              p->max);
        else
            (void) str_format(err, errlen, "value \"%s\" out of range (%ld..%ld %s)", clean,
                              p->min, p->max, p->type == PT_TIME ? "seconds" : "bytes");
        return err;
    }
    *num_r = v;
    return NULL;
}

static void
check_and_store(size_t i)
{
    const struct param *p = &params[i];
    struct param_state *st = &state[i];
    char err[512];

    if (parse_value(p, st->value, &st->num, err, sizeof(err)) != NULL)
        msg_fatal("%s: parameter %s: %s", param_where(i), p->name, err);
    if (p->type == PT_ENUM)
        str_lower(st->value);
    if (p->str_var)
        *p->str_var = st->value;
    if (p->long_var)
        *p->long_var = st->num;
    if (p->bool_var)
        *p->bool_var = (int) st->num;
}

static size_t
param_index(const char *name)
{
    int i = param_find(name, strlen(name));

    if (i < 0)
        msg_panic("config: no parameter %s in the table", name);
    return (size_t) i;
}

/* The rules that involve more than one parameter. */
static void
check_rules(void)
{
    if (strcmp(var_tls_security_level, "none") != 0
        && (var_tls_cert_file[0] == 0 || var_tls_key_file[0] == 0)) {
        size_t i = param_index("tls_security_level");

        msg_fatal("%s: parameter tls_security_level: level \"%s\" needs tls_cert_file "
                  "and tls_key_file", param_where(i), var_tls_security_level);
    }
    if (var_session_timeout < var_command_timeout) {
        size_t i = param_index("session_timeout");

        msg_fatal("%s: parameter session_timeout: %lds is less than command_timeout (%lds)",
                  param_where(i), var_session_timeout, var_command_timeout);
    }
}

void
config_load(void)
{
    const char *path;

    clear_values();
    for (size_t i = 0; i < NPARAMS; i++)
        state[i].raw = x_strdup(param_default(&params[i]));
    param_set(param_index("config_directory"), chosen_directory(), NULL);

    path = config_file_path();
    read_file(path);
    for (size_t k = 0; k < override_count; k++) {
        char *copy = x_strdup(overrides[k]);
        char *where = x_asprintf("-o %s", overrides[k]);

        apply_setting(copy, where);
        free(copy);
    }
    for (size_t i = 0; i < NPARAMS; i++)
        (void) expand_param(i, 0);
    for (size_t i = 0; i < NPARAMS; i++)
        check_and_store(i);
    check_rules();
    loaded = 1;

    msg_set_syslog_name(var_syslog_name);
    msg_set_facility(var_syslog_facility);
    msg_set_logfile(var_log_file);
}

const char *
config_get(const char *name)
{
    int i = param_find(name, strlen(name));

    if (i < 0 || !loaded)
        return NULL;
    return state[i].value;
}

/*
 * Whether parameter i has its default value. Compares meaning, not text:
 * "300" and "5m" are the same command_timeout, and a default with $name
 * is compared after expansion.
 */
static int
param_is_default(size_t i)
{
    const struct param *p = &params[i];
    char *def;
    char err[512];
    long num = 0;
    int same;

    if (p->fixed)
        return strcmp(state[i].value, param_default(p)) == 0;
    def = expand_text(param_default(p), i, 0);
    if (p->type == PT_STR)
        same = strcmp(def, state[i].value) == 0;
    else if (p->type == PT_ENUM)
        same = str_casecmp(def, state[i].value) == 0;
    else
        same = parse_value(p, def, &num, err, sizeof(err)) == NULL && num == state[i].num;
    free(def);
    return same;
}

static int
compare_names(const void *a, const void *b)
{
    return strcmp(params[*(const size_t *) a].name, params[*(const size_t *) b].name);
}

void
config_print(FILE *fp, int changed_only)
{
    size_t order[NPARAMS];

    if (!loaded)
        msg_panic("config_print: called before config_load");
    for (size_t i = 0; i < NPARAMS; i++)
        order[i] = i;
    qsort(order, NPARAMS, sizeof(order[0]), compare_names);
    for (size_t k = 0; k < NPARAMS; k++) {
        size_t i = order[k];

        if (changed_only && param_is_default(i))
            continue;
        /* postconf prints "name =" for an empty value, without a trailing blank. */
        if (state[i].value[0])
            fprintf(fp, "%s = %s\n", params[i].name, state[i].value);
        else
            fprintf(fp, "%s =\n", params[i].name);
    }
}
