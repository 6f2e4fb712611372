/*
 * fetch_util.c - odmr-fetch helpers without protocol state: EHLO reply
 * keywords, SASL mechanism choice, fingerprints, addresses, the password
 * file and connecting with a deadline. See fetch.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "fetch.h"
#include "util.h"

#define PASSWORD_MAX 1024

/* First word of text, upper-cased, into buf; returns buf. */
static char *
first_word(const char *text, char *buf, size_t size)
{
    size_t n = 0;

    while (*text == ' ' || *text == '\t')
        text++;
    while (text[n] != 0 && text[n] != ' ' && text[n] != '\t' && text[n] != '='
           && text[n] != '\n' && n + 1 < size) {
        buf[n] = text[n];
        n++;
    }
    buf[n] = 0;
    return str_upper(buf);
}

int
fetch_ehlo_drop(const char *text)
{
    static const char *const dropped[] = {
        "STARTTLS", "CHUNKING", "BINARYMIME", "AUTH", "XCLIENT", "XFORWARD",
    };
    char word[32];

    first_word(text, word, sizeof(word));
    for (size_t i = 0; i < ODMR_ARRAY_LEN(dropped); i++)
        if (strcmp(word, dropped[i]) == 0)
            return 1;
    return 0;
}

int
fetch_ehlo_has(const char *text, const char *keyword, char **args_r)
{
    const char *line = strchr(text, '\n'); /* the first line is the greeting */
    char word[32];

    if (args_r != NULL)
        *args_r = NULL;
    while (line != NULL) {
        const char *next, *p;

        line++;
        next = strchr(line, '\n');
        first_word(line, word, sizeof(word));
        if (str_casecmp(word, keyword) == 0) {
            if (args_r != NULL) {
                p = line;
                while (*p == ' ' || *p == '\t')
                    p++;
                p += strlen(word);
                if (*p == ' ' || *p == '=')
                    p++;
                *args_r = next ? x_strndup(p, (size_t) (next - p)) : x_strdup(p);
            }
            return 1;
        }
        line = next;
    }
    return 0;
}

/* Is name (upper case) one of the words of list (space/comma separated)? */
static int
word_in_list(const char *name, const char *list)
{
    size_t len = strlen(name);
    const char *p = list;

    while (*p != 0) {
        size_t n;

        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        n = strcspn(p, " ,\t");
        if (n == len && str_ncasecmp(p, name, n) == 0)
            return 1;
        p += n;
    }
    return 0;
}

const char *
fetch_choose_mech(const char *wanted, const char *offered, int tls_active, int have_cert)
{
    static const char *const known[] = {
        "EXTERNAL", "SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN",
    };
    const char *p = wanted;

    if (wanted == NULL || offered == NULL)
        return NULL;
    /* In the order of 'wanted'. */
    while (*p != 0) {
        size_t n;

        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        n = strcspn(p, " ,\t");
        for (size_t i = 0; n > 0 && i < ODMR_ARRAY_LEN(known); i++) {
            const char *k = known[i];

            if (strlen(k) != n || str_ncasecmp(p, k, n) != 0)
                continue;
            if (!word_in_list(k, offered))
                break;
            if ((strcmp(k, "PLAIN") == 0 || strcmp(k, "LOGIN") == 0) && !tls_active)
                break;
            if (strcmp(k, "EXTERNAL") == 0 && (!have_cert || !tls_active))
                break;
            return k;
        }
        p += n;
    }
    return NULL;
}

static int
hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int
fetch_fingerprint_parse(const char *text, unsigned char out[32])
{
    size_t n = 0;
    const char *p = text;

    if (text == NULL)
        return -1;
    while (*p != 0) {
        int hi, lo;

        if (n > 0 && *p == ':')
            p++;
        if ((hi = hexval((unsigned char) p[0])) < 0 || (lo = hexval((unsigned char) p[1])) < 0)
            return -1;
        if (n == 32)
            return -1;
        out[n++] = (unsigned char) (hi << 4 | lo);
        p += 2;
    }
    return n == 32 ? 0 : -1;
}

int
fetch_parse_address(const char *text, const char *default_port, char **host_r,
                    char **port_r, char **path_r, char **error_r)
{
    const char *colon;

    *host_r = *port_r = *path_r = NULL;
    *error_r = NULL;
    if (text == NULL || *text == 0) {
        *error_r = x_strdup("empty address");
        return -1;
    }
    if (strncmp(text, "unix:", 5) == 0) {
        if (text[5] == 0 || strlen(text + 5) >= sizeof(((struct sockaddr_un *) 0)->sun_path)) {
            *error_r = x_asprintf("bad unix socket path in \"%.100s\"", text);
            return -1;
        }
        *path_r = x_strdup(text + 5);
        return 0;
    }
    if (strncmp(text, "inet:", 5) == 0)
        text += 5;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');

        if (end == NULL || end == text + 1 || (end[1] != 0 && end[1] != ':')) {
            *error_r = x_asprintf("bad address \"%.100s\"", text);
            return -1;
        }
        *host_r = x_strndup(text + 1, (size_t) (end - text - 1));
        colon = end[1] == ':' ? end + 1 : NULL;
    } else {
        colon = strrchr(text, ':');
        if (colon != NULL && strchr(text, ':') != colon) {
            *error_r = x_asprintf("bad address \"%.100s\" (IPv6: use [address]:port)", text);
            return -1;
        }
        *host_r = colon ? x_strndup(text, (size_t) (colon - text)) : x_strdup(text);
    }
    *port_r = x_strdup(colon ? colon + 1 : default_port);
    if ((*host_r)[0] == 0 || (*port_r)[0] == 0 || strlen(*host_r) > 255) {
        *error_r = x_asprintf("bad address \"%.100s\"", text);
        x_free(host_r);
        x_free(port_r);
        return -1;
    }
    return 0;
}

int
fetch_password_file(const char *path, char **password_r, char **error_r)
{
    struct stat st;
    char buf[PASSWORD_MAX + 2];
    ssize_t n;
    size_t len = 0;
    int fd;

    *password_r = NULL;
    *error_r = NULL;
    if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY)) < 0) {
        *error_r = x_asprintf("open password file %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        *error_r = x_asprintf("stat password file %s: %s", path, strerror(errno));
        (void) close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        *error_r = x_asprintf("password file %s: not a regular file", path);
        (void) close(fd);
        return -1;
    }
    if (st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
        *error_r = x_asprintf("password file %s: refused: it must belong to uid %ld and "
                              "be readable by its owner only (it is uid %ld, mode %04o)",
                              path, (long) geteuid(), (long) st.st_uid,
                              (unsigned) (st.st_mode & 07777));
        (void) close(fd);
        return -1;
    }
    while (len < sizeof(buf) - 1) {
        n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            *error_r = x_asprintf("read password file %s: %s", path, strerror(errno));
            (void) close(fd);
            OPENSSL_cleanse(buf, sizeof(buf));
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t) n;
    }
    (void) close(fd);
    buf[len] = 0;
    len = strcspn(buf, "\r\n");
    if (len > PASSWORD_MAX || (buf[len] == 0 && len == sizeof(buf) - 2)) {
        OPENSSL_cleanse(buf, sizeof(buf));
        *error_r = x_asprintf("password file %s: first line longer than %d bytes", path,
                              PASSWORD_MAX);
        return -1;
    }
    buf[len] = 0;
    if (len == 0) {
        *error_r = x_asprintf("password file %s: the first line is empty", path);
        return -1;
    }
    *password_r = x_strdup(buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

/* Non-blocking connect bounded by timeout_ms; 0 or -1 with errno. */
static int
connect_wait(int fd, const struct sockaddr *sa, socklen_t salen, int timeout_ms)
{
    int fl = fcntl(fd, F_GETFL), err = 0;
    socklen_t len = sizeof(err);
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int64_t deadline = now_ms() + timeout_ms;

    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    if (connect(fd, sa, salen) < 0) {
        if (errno != EINPROGRESS)
            return -1;
        for (;;) {
            int64_t left = deadline - now_ms();
            int r;

            if (left <= 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            r = poll(&pfd, 1, (int) left);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                return -1;
            if (r > 0)
                break;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return -1;
        if (err != 0) {
            errno = err;
            return -1;
        }
    }
    return fcntl(fd, F_SETFL, fl);
}

int
fetch_connect(const char *host, const char *port, const char *path, int timeout_ms,
              char *peer_r, size_t size, char **error_r)
{
    struct addrinfo hints, *res = NULL, *ai;
    char addr[NI_MAXHOST];
    int fd = -1, gai, saved = 0;

    *error_r = NULL;
    if (path != NULL) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};

        (void) str_copy(peer_r, path, size);
        if (str_copy(sun.sun_path, path, sizeof(sun.sun_path)) >= sizeof(sun.sun_path)) {
            *error_r = x_asprintf("socket path too long: %.100s", path);
            return -1;
        }
        if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0
            || connect_wait(fd, (struct sockaddr *) &sun, sizeof(sun), timeout_ms) < 0) {
            *error_r = x_asprintf("connect to %s: %s", path, strerror(errno));
            if (fd >= 0)
                (void) close(fd);
            return -1;
        }
        return fd;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if ((gai = getaddrinfo(host, port, &hints, &res)) != 0) {
        *error_r = x_asprintf("%s:%s: %s", host, port, gai_strerror(gai));
        (void) str_copy(peer_r, host, size);
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof(addr), NULL, 0,
                        NI_NUMERICHOST) != 0)
            str_copy(addr, "?", sizeof(addr));
        (void) str_format(peer_r, size, "%s[%s]:%s", host, addr, port);
        if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
            saved = errno;
            continue;
        }
        if (connect_wait(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms) == 0) {
            int one = 1, idle = 60, intvl = 15, cnt = 4;

            (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            /* An ATRN may wait minutes for its reply (the waiting ATRN):
             * keep NAT mappings alive, and notice a provider that is gone
             * within two minutes instead of at --atrn-timeout. */
            (void) setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
            (void) setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
            (void) setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
            (void) setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
            freeaddrinfo(res);
            return fd;
        }
        saved = errno;
        (void) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    *error_r = x_asprintf("connect to %s: %s", peer_r, strerror(saved ? saved : ECONNREFUSED));
    return -1;
}
