/*
 * config.h - odmr.cf: main.cf syntax, one table of parameters with defaults.
 *
 * Every program does, in this order:
 *     config_set_directory(dir)        -c DIR (else $MAIL_CONFIG, else /etc/postfix)
 *     config_add_override("name=value") once per -o
 *     config_load()                    read DIR/odmr.cf (a missing file means all
 *                                      defaults), apply the -o overrides, expand
 *                                      $name and ${name} references, check every
 *                                      value against its type and range, check the
 *                                      rules between parameters, apply the logging
 *                                      parameters (syslog_name, syslog_facility,
 *                                      log_file) to log.h.
 * A syntax error, unknown parameter or bad value is fatal (msg_fatal), and the
 * message names the file, the line and the parameter, e.g.
 *     fatal: /etc/postfix/odmr.cf, line 12: parameter message_size_limit:
 *     bad size value "10x" (expected a number with optional k, m or g)
 * An -o override names "-o" instead of file and line.
 *
 * main.cf syntax: "name = value"; lines starting with whitespace continue the
 * previous line; '#' at the start of a line (after optional whitespace) makes a
 * comment; empty lines are ignored; the last setting of a name wins.
 *
 * The variables below hold the values after config_load(). Times are seconds
 * (values accept s/m/h/d/w units, default unit s unless noted), sizes are
 * bytes (k/m/g accepted), booleans are 0/1.
 */
#ifndef ODMR_CONFIG_H
#define ODMR_CONFIG_H

#include <stdio.h>

/* Locations and maps */
extern char *var_config_dir;         /* config_directory: set by -c/$MAIL_CONFIG */
extern char *var_queue_dir;          /* queue_directory = /var/spool/postfix-odmr */
extern char *var_domain_maps;        /* domain_maps = hash:$config_directory/odmr_domains */
extern char *var_auth_maps;          /* auth_maps = hash:$config_directory/odmr_passwd */
extern char *var_user_domain_maps;   /* user_domain_maps = (empty) */
extern char *var_tls_cert_user_maps; /* tls_cert_user_maps = (empty): cert fingerprint -> user */
extern char *var_postmap_path;       /* postmap_path = /usr/sbin/postmap */
extern char *var_sendmail_path;      /* sendmail_path = /usr/sbin/sendmail */
extern char *var_postfix_config_dir; /* postfix_config_directory = $config_directory:
                                      * passed to postmap -c and sendmail -C */

/* Logging */
extern char *var_syslog_name;        /* syslog_name = postfix (tag postfix/<program>) */
extern char *var_syslog_facility;    /* syslog_facility = mail */
extern char *var_log_file;           /* log_file = (empty: syslog only) */

/* Identity and limits */
extern char *var_myhostname;         /* myhostname = gethostname() */
extern char *var_odmr_banner;        /* odmr_banner = $myhostname ESMTP on-demand mail relay */
extern char *var_lmtp_banner;        /* lmtp_banner = $myhostname LMTP odmr-store */
extern long var_message_size_limit;  /* message_size_limit = 10240000 (size; 0 = none) */
extern long var_line_length_limit;   /* line_length_limit = 2048 (command lines; min 512) */
extern long var_recipient_limit;     /* recipient_limit = 1000 (per message) */
extern long var_atrn_domain_limit;   /* atrn_domain_limit = 100 */
extern long var_auth_failure_limit;  /* auth_failure_limit = 3 */
extern long var_auth_response_limit; /* auth_response_limit = 12288 (bytes) */
extern long var_flush_message_limit; /* flush_message_limit = 0 (per session; 0 = none) */
extern long var_error_limit;         /* error_limit = 20 (bad commands per session) */

/* Timeouts (seconds) */
extern long var_command_timeout;     /* command_timeout = 300s (idle limit per command) */
extern long var_session_timeout;     /* session_timeout = 3600s (whole session) */
extern long var_lock_timeout;        /* lock_timeout = 10s (index and locks in odmr-store) */
extern long var_auth_failure_delay;  /* auth_failure_delay = 1s */
extern long var_smtp_helo_timeout;   /* smtp_helo_timeout = 300s (also the 220 wait) */
extern long var_smtp_mail_timeout;   /* smtp_mail_timeout = 300s */
extern long var_smtp_rcpt_timeout;   /* smtp_rcpt_timeout = 300s */
extern long var_smtp_data_init_timeout; /* smtp_data_init_timeout = 120s */
extern long var_smtp_data_xfer_timeout; /* smtp_data_xfer_timeout = 180s */
extern long var_smtp_data_done_timeout; /* smtp_data_done_timeout = 600s */
extern long var_smtp_quit_timeout;   /* smtp_quit_timeout = 300s */
extern long var_maximal_queue_lifetime; /* maximal_queue_lifetime = 5d (default unit d,
                                      * as in Postfix) */
extern long var_delay_warning_time;  /* delay_warning_time = 0h (0 = none; default unit h,
                                      * as in Postfix) */
extern long var_bounce_size_limit;   /* bounce_size_limit = 50000 (bytes; a notice returns
                                      * a larger message's headers only, as Postfix) */
extern long var_notice_submit_timeout; /* notice_submit_timeout = 60s (one sendmail run) */

/* Behaviour */
extern int var_index_sync;           /* index_sync = yes: fsync the index log at commit */
extern int var_smtputf8_enable;      /* smtputf8_enable = yes */
extern char *var_sasl_mechanisms;    /* sasl_mechanisms = CRAM-MD5 SCRAM-SHA-256 PLAIN LOGIN EXTERNAL */

/* TLS */
extern char *var_tls_security_level; /* tls_security_level = may (none | may | encrypt) */
extern char *var_tls_cert_file;      /* tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem */
extern char *var_tls_key_file;       /* tls_key_file = /etc/ssl/private/ssl-cert-snakeoil.key */
extern char *var_tls_CAfile;         /* tls_CAfile = (empty): CAs for client certificates */
extern char *var_smtp_tls_security_level; /* smtp_tls_security_level = none: reversed
                                      * side, for customers that reversed_tls_policy_maps
                                      * does not list (only when the outer session is
                                      * in clear) */
extern char *var_reversed_tls_policy_maps; /* reversed_tls_policy_maps = (empty): SASL user
                                      * name, then domain -> none | may | encrypt */
extern long var_smtp_starttls_timeout; /* smtp_starttls_timeout = 30s: the STARTTLS reply
                                      * and handshake on the reversed side */

/* Testing only: name of a fault point where the program kills itself with
 * SIGKILL ("before-fsync", "after-rename", "after-index", "before-reply",
 * "mid-flush"...). Empty in production. */
extern char *var_test_fault_point;

/* odmrd on the open internet: limits shared by all odmrd processes */
extern long var_odmrd_client_connection_count_limit; /* = 10 sessions per client
                                      * address at once (0 = none) */
extern long var_odmrd_pre_auth_timeout; /* = 60s from connect to a successful AUTH */
extern long var_odmrd_client_auth_failure_limit; /* = 20 failed AUTHs per client
                                      * address per window (0 = none) */
extern long var_odmrd_client_user_auth_failure_limit; /* = 5 per user name and
                                      * client address per window (0 = none) */
extern long var_odmrd_auth_failure_window; /* = 10m */
extern long var_odmrd_atrn_command_limit; /* = 10 ATRN commands per session */
extern long var_odmrd_atrn_wait;     /* odmrd_atrn_wait = 0s: how long an ATRN that
                                      * finds no mail waits for some (0 = answer 453
                                      * at once; at most 10m, RFC 2645) */
extern char *var_odmrd_atrn_wait_maps; /* odmrd_atrn_wait_maps = (empty): SASL user
                                      * name -> wait time, for that user */

/* The options every program takes, for getopt(): -c DIR, -o name=value and
 * -v (more logging). config_option() handles one of them and returns 1, or
 * returns 0 for any other option character. */
#define CONFIG_OPTIONS "c:o:v"
int config_option(int ch, const char *arg);

/* Start-up of a program that spawn(8) runs with the client socket on fds 0,
 * 1 and 2: fd 2 goes to /dev/null (nothing may ever reach the client that
 * way, not even a library's or getopt()'s message), the options above are
 * read (any other option or operand: fatal "usage: USAGE", EX_USAGE),
 * odmr.cf is loaded, and root is refused (spawn's user=odmr runs it). Call
 * after msg_init(). */
void config_daemon_init(int argc, char **argv, const char *usage);

void config_set_directory(const char *dir);
void config_add_override(const char *name_eq_value);
void config_load(void);

/* Forget the -c directory and every -o override and free every value;
 * the variables go back to NULL/0 until the next config_load(). For tests
 * and leak checkers; config_load() itself keeps -c and -o. */
void config_reset(void);

/* Read any file in main.cf syntax (as above, without $name expansion):
 * fn(name, value, where, ctx, error_r) for each setting, in order; where
 * is "FILE, line N" (malloc'd, fn's to keep or free). fn returns 0, or -1
 * with a malloc'd *error_r to stop. Returns 0, 1 when the file does not
 * exist, or -1 with a malloc'd *error_r naming the file and line (a
 * syntax error, a read error, or fn's error). For odmr-fetch's own file. */
typedef int (*config_setting_fn)(const char *name, const char *value, char *where, void *ctx,
                                 char **error_r);
int config_read_file(const char *path, config_setting_fn fn, void *ctx, char **error_r);

/* Path of the file read by config_load() ("DIR/odmr.cf"). */
const char *config_file_path(void);

/* Print "name = value" lines, sorted by name; only those that differ from
 * the default when changed_only. */
void config_print(FILE *fp, int changed_only);

/* Look up any parameter by name as text (after load); NULL when unknown. */
const char *config_get(const char *name);

#endif
