/*
 * NAME
 *     odmr-passwd - make and test auth_maps secrets for postfix-odmr
 *
 * SYNOPSIS
 *     odmr-passwd [-s SCHEME] [-r ROUNDS] [-u USER] [-p PASSWORD | -p -]
 *     odmr-passwd -t ENTRY [-u USER] [-p PASSWORD | -p -]
 *
 * DESCRIPTION
 *     odmr-passwd prints the value of an auth_maps entry for a password,
 *     tagged with its scheme, in the shape odmrd reads it. With -u it
 *     prints "USER VALUE", a line ready to append to the map source file
 *     before running postmap(1) on it.
 *
 *     Without -p the password is read from standard input: when that is a
 *     terminal, twice, with a prompt on standard error and echo turned off;
 *     otherwise one line (trailing CR LF removed). -p - reads one line from
 *     standard input without prompting, for scripts.
 *
 *     Schemes (-s, case-insensitive):
 *
 *     SCRAM-SHA-256 (default)
 *         "{SCRAM-SHA-256}ITER:SALT$STOREDKEY:SERVERKEY" (RFC 5803 shape,
 *         base64 fields, 16 random bytes of salt). Serves SCRAM-SHA-256,
 *         PLAIN and LOGIN; not CRAM-MD5. The password cannot be recovered
 *         from it except by guessing.
 *     CRAM-MD5
 *         "{CRAM-MD5}" and 64 hex digits: the HMAC-MD5 key schedule (as
 *         Dovecot stores it). Serves CRAM-MD5, PLAIN and LOGIN. Unsalted and
 *         cheap to attack by guessing; and whoever holds it can log in
 *         with CRAM-MD5: protect the map like the password itself.
 *     PLAIN
 *         "{PLAIN}password". Serves every mechanism. The only scheme whose
 *         value shows the password.
 *
 *     A user who must be able to use both CRAM-MD5 (which RFC 2645 makes
 *     mandatory, and which fetchmail uses) and SCRAM-SHA-256 needs a PLAIN
 *     secret.
 *
 * OPTIONS
 *     -s SCHEME   SCRAM-SHA-256, CRAM-MD5 or PLAIN.
 *     -r ROUNDS   SCRAM-SHA-256 iteration count, 4096 (default) to 1000000.
 *     -u USER     print "USER VALUE"; the name may not contain white space.
 *     -p PASSWORD the password, or "-" for one line from standard input.
 *     -t ENTRY    test the password against ENTRY ("{SCHEME}...", or with
 *                 -u, a whole "USER {SCHEME}..." line whose user must match)
 *                 instead of printing anything.
 *
 * SECURITY
 *     A password given with -p is visible to other local users in the
 *     process list while the program starts: prefer standard input. The
 *     copy in the argument vector is overwritten at once, and every copy
 *     in memory is wiped before exit. Nothing here needs privileges.
 *
 * EXIT STATUS
 *     0      the value was printed; with -t, the password matches.
 *     1      with -t: the password does not match.
 *     64     EX_USAGE: bad option or argument.
 *     65     EX_DATAERR: the two passwords differ, an empty or too long
 *            (over 1023 bytes) password, a password a map value cannot
 *            carry, a malformed -t ENTRY or one for another user.
 *     66     EX_NOINPUT: no password on standard input.
 *     70     EX_SOFTWARE: the crypto library failed.
 *     74     EX_IOERR: reading the password or writing the result failed.
 *
 * EXAMPLES
 *     odmr-passwd -u cust1 >> /etc/postfix/odmr_passwd
 *     postmap /etc/postfix/odmr_passwd
 *     odmr-passwd -t "$(postmap -q cust1 hash:/etc/postfix/odmr_passwd)"
 *
 * STANDARDS
 *     RFC 2195 (CRAM-MD5), RFC 2104 (HMAC), RFC 5802 and RFC 7677
 *     (SCRAM-SHA-256), RFC 5803 (SCRAM secret syntax).
 *
 * SEE ALSO
 *     odmrd(8), postmap(1), doveadm-pw(1)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "log.h"
#include "sasl.h"
#include "util.h"

#define PASSWORD_MAX 1024

static const char usage_text[] =
    "usage: odmr-passwd [-s SCHEME] [-r ROUNDS] [-u USER] [-p PASSWORD|-]\n"
    "       odmr-passwd -t ENTRY [-u USER] [-p PASSWORD|-]\n"
    "schemes: SCRAM-SHA-256 (default), CRAM-MD5, PLAIN\n";

static ODMR_NORETURN void
usage(void)
{
    fputs(usage_text, stderr);
    exit(EX_USAGE);
}

/* One line from fd 0 into buf; 1 read, 0 EOF, -1 read error, -2 too long. */
static int
read_line(char *buf, size_t size)
{
    size_t len = 0;

    for (;;) {
        char c;
        ssize_t n = read(0, &c, 1);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            if (len == 0)
                return 0;
            break;
        }
        if (c == '\n')
            break;
        if (len + 1 >= size) {
            OPENSSL_cleanse(buf, size);
            return -2;
        }
        buf[len++] = c;
    }
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    buf[len] = 0;
    return 1;
}

/* Prompt on stderr and read without echo from the terminal on fd 0. */
static int
read_hidden(const char *prompt, char *buf, size_t size)
{
    struct termios saved, quiet;
    int rc;

    fputs(prompt, stderr);
    fflush(stderr);
    if (tcgetattr(0, &saved) < 0)
        return -1;
    quiet = saved;
    /* TCSANOW, not TCSAFLUSH: keep what was typed ahead. */
    quiet.c_lflag &= ~(tcflag_t) (ECHO | ECHONL);
    if (tcsetattr(0, TCSANOW, &quiet) < 0)
        return -1;
    rc = read_line(buf, size);
    (void) tcsetattr(0, TCSANOW, &saved);
    fputs("\n", stderr);
    return rc;
}

/* The password from -p, from stdin, or from the terminal (twice when
 * confirm). Exits on failure. */
static char *
get_password(const char *arg, int confirm)
{
    char buf[PASSWORD_MAX], again[PASSWORD_MAX];
    char *password;
    int rc;

    if (arg != NULL && strcmp(arg, "-") != 0)
        return x_strdup(arg);
    if (arg == NULL && isatty(0)) {
        rc = read_hidden("Password: ", buf, sizeof(buf));
        if (rc > 0 && confirm) {
            rc = read_hidden("Retype password: ", again, sizeof(again));
            if (rc > 0 && strcmp(buf, again) != 0) {
                OPENSSL_cleanse(buf, sizeof(buf));
                OPENSSL_cleanse(again, sizeof(again));
                msg_fatal_status(EX_DATAERR, "the passwords differ");
            }
            OPENSSL_cleanse(again, sizeof(again));
        }
    } else {
        rc = read_line(buf, sizeof(buf));
    }
    if (rc == -2)
        msg_fatal_status(EX_DATAERR, "password longer than %d bytes", PASSWORD_MAX - 1);
    if (rc < 0)
        msg_fatal_status(EX_IOERR, "cannot read the password: %m");
    if (rc == 0)
        msg_fatal_status(EX_NOINPUT, "no password on standard input");
    password = x_strdup(buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    return password;
}

/* A map key: printable, no white space. */
static int
user_valid(const char *user)
{
    if (*user == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *) user; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return 0;
    return 1;
}

/* -t: 0 match, 1 mismatch; exits on a malformed entry. */
static int
test_entry(const char *entry, const char *user, const char *password)
{
    const char *value = entry;
    const char *why;
    int rc;

    /* With -u the whole source line may be given. */
    if (user != NULL && entry[0] != '{') {
        size_t n = strcspn(entry, " \t");

        if (n != strlen(user) || strncmp(entry, user, n) != 0)
            msg_fatal_status(EX_DATAERR, "-t entry is not for user %s", user);
        value = entry + n + strspn(entry + n, " \t");
    }
    rc = sasl_secret_verify(value, password, &why);
    if (rc < 0)
        msg_fatal_status(EX_DATAERR, "malformed entry: %s", why);
    return rc == 1 ? 0 : 1;
}

int
main(int argc, char **argv)
{
    const char *scheme_name = "SCRAM-SHA-256", *user = NULL, *entry = NULL;
    char *password_arg = NULL, *password, *value, *error = NULL;
    long rounds = 0;
    int scheme, ch, status;

    fds_sanitize();
    msg_init(argv[0], MSG_STDERR);
    while ((ch = getopt(argc, argv, "p:r:s:t:u:")) != -1) {
        switch (ch) {
        case 'p':
            free(password_arg);
            password_arg = x_strdup(optarg);
            /* Shorten the time the password shows in the process list. */
            if (strcmp(optarg, "-") != 0)
                OPENSSL_cleanse(optarg, strlen(optarg));
            break;
        case 'r':
            if (parse_long(optarg, SASL_SCRAM_ITER_MIN, SASL_SCRAM_ITER_MAX, &rounds) < 0)
                msg_fatal_status(EX_USAGE, "-r: iterations must be a number %d..%d",
                                 SASL_SCRAM_ITER_MIN, SASL_SCRAM_ITER_MAX);
            break;
        case 's':
            scheme_name = optarg;
            break;
        case 't':
            entry = optarg;
            break;
        case 'u':
            user = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();
    if ((scheme = sasl_scheme_by_name(scheme_name)) == 0)
        msg_fatal_status(EX_USAGE, "-s: unknown scheme \"%s\" (SCRAM-SHA-256, CRAM-MD5, PLAIN)",
                         scheme_name);
    if (user != NULL && !user_valid(user))
        msg_fatal_status(EX_USAGE, "-u: a user name may not be empty or contain white space");

    password = get_password(password_arg, entry == NULL);
    sasl_wipe_free(&password_arg);
    if (*password == 0)
        msg_fatal_status(EX_DATAERR, "empty password");

    if (entry != NULL) {
        status = test_entry(entry, user, password);
        sasl_wipe_free(&password);
        return status;
    }

    /* The map source file is line-based and postmap trims white space
     * around a value. */
    if (strpbrk(password, "\r\n") != NULL
        || (scheme == SASL_SCHEME_PLAIN
            && (strchr(" \t", password[0]) != NULL
                || strchr(" \t", password[strlen(password) - 1]) != NULL))) {
        sasl_wipe_free(&password);
        msg_fatal_status(EX_DATAERR, "a %s value cannot carry this password "
                         "(line break, or white space at either end)",
                         sasl_scheme_name(scheme));
    }
    value = sasl_secret_make(scheme, password, rounds, NULL, 0, &error);
    sasl_wipe_free(&password);
    if (value == NULL)
        msg_fatal_status(EX_SOFTWARE, "%s", error);
    if (user != NULL)
        printf("%s %s\n", user, value);
    else
        printf("%s\n", value);
    sasl_wipe_free(&value);
    if (fflush(stdout) != 0 || ferror(stdout))
        msg_fatal_status(EX_IOERR, "write error on standard output");
    return EX_OK;
}
