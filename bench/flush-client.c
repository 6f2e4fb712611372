/*
 * flush-client.c - the ODMR customer of bench/flush: a small C splice.
 *
 * USAGE
 *     flush-client -p ODMR_PORT -u USER -P PASSWORD -d DOMAIN[,DOMAIN...]
 *                  -s SINK_PORT [-c SESSIONS] [-t TIMEOUT_S]
 *     flush-client -r FILE
 *
 * Session mode: connects to odmrd on 127.0.0.1:ODMR_PORT, reads the 220,
 * says EHLO, AUTH CRAM-MD5 and ATRN DOMAIN. On 250 it connects to the
 * customer's MTA (smtp-sink on 127.0.0.1:SINK_PORT) and relays bytes both
 * ways with splice(2) (through a pipe, no copy into user space) until both
 * sides have closed: odmrd's QUIT and the sink's 221 pass through it.
 * Prints one line:
 *     code=250 atrn_ms=A flush_ms=F down=BYTES up=BYTES
 * atrn_ms: from writing ATRN to reading its reply; flush_ms: from the
 * ATRN reply to the end of the relayed session (both sides closed).
 * On 453 (no mail) it says QUIT and prints code=453 with atrn_ms.
 *
 * -S: no smtp-sink, no relay: the client answers the reversed session
 * itself (250/354/221; the content is read in 1 MiB chunks and only
 * scanned for the final dot). odmrd's own pace, without smtp-sink's
 * line-by-line parsing.
 *
 * -c N: N sessions at once (fork). DOMAIN must hold "%d" (0 .. N-1). Each
 * child connects and authenticates, then waits at a barrier; when all N
 * have authenticated (N odmrd processes alive together) the parent counts
 * the odmrd processes (-C TEXT: only those whose command line holds TEXT),
 * releases them, and every child sends its ATRN.
 * Prints each child's line and a summary:
 *     sessions=N authenticated=A at_barrier_odmrd=P code250=X code453=Y ok=Z
 *
 * Raw mode (-r FILE): the wire's pace with nothing in between: a child
 * accepts on a loopback socket and reads into a 256 KiB buffer until EOF,
 * the parent sendfile(2)s FILE into it. Prints raw_ms=T bytes=B.
 *
 * Exit status 0 when every session ended as described, 1 otherwise.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int timeout_ms = 600000;

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

static void
die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fprintf(stderr, "flush-client: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static int
connect_local(int port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    if (fd < 0)
        die("socket: %s", strerror(errno));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short) port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *) &sin, sizeof(sin)) < 0)
        die("connect 127.0.0.1:%d: %s", port, strerror(errno));
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* ---- line I/O on the ODMR connection (before the turn-around) ---------- */

typedef struct {
    int fd;
    char buf[8192];
    size_t len;
} CONN;

static void
send_line(CONN *c, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    memcpy(line + n, "\r\n", 2);
    if (write(c->fd, line, (size_t) n + 2) != n + 2)
        die("write: %s", strerror(errno));
}

/* One reply (multi-line joined); returns the code; text of the last line
 * in last (may be NULL). */
static int
read_reply(CONN *c, char *last, size_t lsize)
{
    for (;;) {
        char *nl;

        while ((nl = memchr(c->buf, '\n', c->len)) == NULL) {
            struct pollfd p = {c->fd, POLLIN, 0};
            ssize_t n;

            if (poll(&p, 1, timeout_ms) <= 0)
                die("timeout waiting for a reply");
            n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
            if (n <= 0)
                die("connection closed while waiting for a reply");
            c->len += (size_t) n;
        }
        size_t ll = (size_t) (nl - c->buf) + 1;
        char line[8192];

        memcpy(line, c->buf, ll);
        line[ll] = 0;
        memmove(c->buf, c->buf + ll, c->len - ll);
        c->len -= ll;
        if (ll < 4)
            die("malformed reply");
        if (line[3] != '-') {
            if (last) {
                size_t n = strcspn(line + 4, "\r\n");

                if (n >= lsize)
                    n = lsize - 1;
                memcpy(last, line + 4, n);
                last[n] = 0;
            }
            return atoi(line);
        }
    }
}

static void
cram_md5(const char *user, const char *pass, const char *chal_b64, char *out, size_t osize)
{
    unsigned char chal[1024], mac[EVP_MAX_MD_SIZE];
    char resp[1024], hex[2 * EVP_MAX_MD_SIZE + 1];
    size_t maclen = 0;
    int clen = EVP_DecodeBlock(chal, (const unsigned char *) chal_b64, (int) strlen(chal_b64));

    if (clen < 0)
        die("bad CRAM-MD5 challenge");
    /* EVP_DecodeBlock counts the "=" padding as zero bytes. */
    for (size_t l = strlen(chal_b64); l > 0 && chal_b64[l - 1] == '='; l--)
        clen--;
    if (EVP_Q_mac(NULL, "HMAC", NULL, "MD5", NULL, pass, strlen(pass), chal, (size_t) clen,
                  mac, sizeof(mac), &maclen) == NULL)
        die("HMAC-MD5 failed");
    for (size_t i = 0; i < maclen; i++)
        sprintf(hex + 2 * i, "%02x", mac[i]);
    snprintf(resp, sizeof(resp), "%s %s", user, hex);
    if ((size_t) (4 * ((strlen(resp) + 2) / 3) + 1) > osize)
        die("CRAM-MD5 response too long");
    EVP_EncodeBlock((unsigned char *) out, (const unsigned char *) resp, (int) strlen(resp));
}

/* Connect, EHLO, AUTH. Returns the connection fd. */
static void
odmr_login(CONN *c, int port, const char *user, const char *pass)
{
    char text[4096], resp[1024];
    int code;

    c->fd = connect_local(port);
    c->len = 0;
    if ((code = read_reply(c, NULL, 0)) != 220)
        die("greeting %d", code);
    send_line(c, "EHLO bench.customer.test");
    if ((code = read_reply(c, NULL, 0)) != 250)
        die("EHLO %d", code);
    send_line(c, "AUTH CRAM-MD5");
    if ((code = read_reply(c, text, sizeof(text))) != 334)
        die("AUTH %d", code);
    cram_md5(user, pass, text, resp, sizeof(resp));
    send_line(c, "%s", resp);
    if ((code = read_reply(c, text, sizeof(text))) != 235)
        die("AUTH response %d %s", code, text);
}

/* ---- the relay ------------------------------------------------------------ */

typedef struct {
    int from, to;
    int pipe[2];
    int eof;
    unsigned long long bytes;
} DIR_;

static int
relay_step(DIR_ *d)
{
    ssize_t n = splice(d->from, NULL, d->pipe[1], NULL, 1 << 20,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);

    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        if (errno == ECONNRESET) {
            n = 0;
        } else {
            die("splice in: %s", strerror(errno));
        }
    }
    if (n == 0) {
        d->eof = 1;
        (void) shutdown(d->to, SHUT_WR);
        return 0;
    }
    d->bytes += (unsigned long long) n;
    while (n > 0) {
        ssize_t m = splice(d->pipe[0], NULL, d->to, NULL, (size_t) n, SPLICE_F_MOVE);

        if (m < 0) {
            if (errno == EINTR)
                continue;
            die("splice out: %s", strerror(errno));
        }
        n -= m;
    }
    return 0;
}

static void
relay(int a, int b, unsigned long long *down_r, unsigned long long *up_r)
{
    DIR_ d[2] = {{a, b, {-1, -1}, 0, 0}, {b, a, {-1, -1}, 0, 0}};

    for (int i = 0; i < 2; i++) {
        if (pipe2(d[i].pipe, O_CLOEXEC) < 0)
            die("pipe: %s", strerror(errno));
        (void) fcntl(d[i].pipe[1], F_SETPIPE_SZ, 1 << 20);
    }
    while (!d[0].eof || !d[1].eof) {
        struct pollfd p[2];
        int np = 0, idx[2];

        for (int i = 0; i < 2; i++)
            if (!d[i].eof) {
                p[np].fd = d[i].from;
                p[np].events = POLLIN;
                p[np].revents = 0;
                idx[np++] = i;
            }
        if (poll(p, (nfds_t) np, timeout_ms) <= 0)
            die("relay timeout");
        for (int k = 0; k < np; k++)
            if (p[k].revents)
                relay_step(&d[idx[k]]);
    }
    for (int i = 0; i < 2; i++) {
        close(d[i].pipe[0]);
        close(d[i].pipe[1]);
    }
    *down_r = d[0].bytes;
    *up_r = d[1].bytes;
}

/* -S: no relay; play the customer's MTA ourselves, as cheaply as possible:
 * 250 to everything, 354 to DATA, the content read in 1 MiB chunks and
 * scanned only for the final CRLF.CRLF (and dot-stuffed lines are not
 * undone: the bytes are thrown away). Measures odmrd's own pace. */
static void
fast_server(CONN *c, unsigned long long *down_r, unsigned long long *up_r)
{
    static char data[1 << 20];
    char line[8192];
    unsigned long long down = 0, up = 0;
    int in_data = 0;
    char tail[5] = {0, 0, 0, 0, 0};

#define REPLY(str)                                                       \
    do {                                                                 \
        size_t l_ = strlen(str);                                         \
        if (write(c->fd, str, l_) != (ssize_t) l_)                       \
            die("write: %s", strerror(errno));                           \
        up += l_;                                                        \
    } while (0)

    REPLY("220 fast.customer.test ESMTP\r\n");
    for (;;) {
        if (in_data) {
            ssize_t n;
            int done = 0;

            if (c->len > 0) {
                memcpy(data, c->buf, c->len);
                n = (ssize_t) c->len;
                c->len = 0;
            } else if ((n = read(c->fd, data, sizeof(data))) <= 0) {
                die("connection closed in DATA");
            }
            down += (unsigned long long) n;
            /* Look for "\r\n.\r\n": across the chunk boundary (the last
             * four bytes before this chunk and its first four), then in it. */
            {
                char win[8];
                size_t head = n < 4 ? (size_t) n : 4;
                const char *hit = NULL;
                size_t end = 0;

                memcpy(win, tail + 1, 4);
                memcpy(win + 4, data, head);
                for (size_t i = 0; i + 5 <= 4 + head && hit == NULL; i++)
                    if (memcmp(win + i, "\r\n.\r\n", 5) == 0) {
                        hit = win + i;
                        end = i + 5 - 4; /* bytes of data up to the dot */
                    }
                if (hit == NULL && (hit = memmem(data, (size_t) n, "\r\n.\r\n", 5)) != NULL)
                    end = (size_t) (hit - data) + 5;
                if (hit != NULL) {
                    size_t rest = (size_t) n - end;

                    memcpy(c->buf, data + end, rest);
                    c->len = rest;
                    down -= rest;
                    done = 1;
                } else if (n >= 4) {
                    memcpy(tail + 1, data + n - 4, 4);
                } else {
                    memmove(tail + 1, tail + 1 + n, (size_t) (4 - n));
                    memcpy(tail + 5 - n, data, (size_t) n);
                }
            }
            if (done) {
                in_data = 0;
                memset(tail, 0, sizeof(tail));
                REPLY("250 2.0.0 Ok\r\n");
            }
            continue;
        }
        char *nl;

        while ((nl = memchr(c->buf, '\n', c->len)) == NULL) {
            ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);

            if (n <= 0) {
                *down_r = down;
                *up_r = up;
                return;
            }
            c->len += (size_t) n;
        }
        size_t ll = (size_t) (nl - c->buf) + 1;

        memcpy(line, c->buf, ll);
        line[ll] = 0;
        memmove(c->buf, c->buf + ll, c->len - ll);
        c->len -= ll;
        down += ll;
        if (strncasecmp(line, "EHLO", 4) == 0) {
            REPLY("250-fast.customer.test\r\n250-PIPELINING\r\n250-SIZE\r\n250 8BITMIME\r\n");
        } else if (strncasecmp(line, "DATA", 4) == 0) {
            REPLY("354 go ahead\r\n");
            in_data = 1;
            memset(tail, 0, sizeof(tail));
            tail[3] = '\r';
            tail[4] = '\n'; /* the content may be just ".\r\n" */
        } else if (strncasecmp(line, "QUIT", 4) == 0) {
            REPLY("221 2.0.0 Bye\r\n");
            shutdown(c->fd, SHUT_WR);
            /* wait for odmrd to close */
            while (read(c->fd, line, sizeof(line)) > 0)
                ;
            *down_r = down;
            *up_r = up;
            return;
        } else {
            REPLY("250 2.0.0 Ok\r\n");
        }
    }
#undef REPLY
}

static int fast_mode; /* -S */

/* After the ATRN line is written: read its reply, relay or QUIT. Prints the
 * result line; returns the ATRN reply code (or -1 on a relay problem). */
static int
atrn_and_flush(CONN *c, const char *domains, int sink_port, const char *tag)
{
    char text[1024];
    double t0, t1, t2;
    unsigned long long down = 0, up = 0;
    int code, sink;

    t0 = now_ms();
    send_line(c, "ATRN %s", domains);
    code = read_reply(c, text, sizeof(text));
    t1 = now_ms();
    if (code != 250) {
        send_line(c, "QUIT");
        (void) read_reply(c, NULL, 0);
        close(c->fd);
        printf("%scode=%d atrn_ms=%.3f text=%s\n", tag, code, t1 - t0, text);
        return code;
    }
    if (fast_mode) {
        fast_server(c, &down, &up);
        t2 = now_ms();
        close(c->fd);
        printf("%scode=250 atrn_ms=%.3f flush_ms=%.3f down=%llu up=%llu\n", tag, t1 - t0,
               t2 - t1, down, up);
        return 250;
    }
    sink = connect_local(sink_port);
    /* Bytes odmrd sent after its 250 (none expected: it waits for the
     * customer's 220). */
    if (c->len > 0 && write(sink, c->buf, c->len) != (ssize_t) c->len)
        die("write to sink: %s", strerror(errno));
    relay(c->fd, sink, &down, &up);
    t2 = now_ms();
    close(sink);
    close(c->fd);
    printf("%scode=250 atrn_ms=%.3f flush_ms=%.3f down=%llu up=%llu\n", tag, t1 - t0,
           t2 - t1, down, up);
    return 250;
}

static const char *count_match; /* -C: only odmrd processes whose command line has this */

static int
count_odmrd(void)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        char path[300], comm[64] = "";
        FILE *fp;

        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
        if ((fp = fopen(path, "r")) == NULL)
            continue;
        if (fgets(comm, sizeof(comm), fp) && strcmp(comm, "odmrd\n") == 0) {
            char cmd[4096];
            size_t len;
            FILE *cf;

            snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
            if (count_match == NULL)
                n++;
            else if ((cf = fopen(path, "r")) != NULL) {
                len = fread(cmd, 1, sizeof(cmd) - 1, cf);
                for (size_t i = 0; i < len; i++)
                    if (cmd[i] == 0)
                        cmd[i] = ' ';
                cmd[len] = 0;
                if (strstr(cmd, count_match) != NULL)
                    n++;
                fclose(cf);
            }
        }
        fclose(fp);
    }
    closedir(d);
    return n;
}

static int
sessions(int n, int port, const char *user, const char *pass, const char *pattern,
         int sink_port)
{
    int ready[2], go[2], results[2];
    pid_t *pids = calloc((size_t) n, sizeof(pid_t));
    int authenticated = 0, procs, c250 = 0, c453 = 0, ok = 0, status;
    char ch, line[512];
    FILE *rf;

    if (pipe(ready) < 0 || pipe(go) < 0 || pipe(results) < 0)
        die("pipe: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        if ((pids[i] = fork()) < 0)
            die("fork: %s", strerror(errno));
        if (pids[i] == 0) {
            CONN c;
            char dom[300], tag[32];
            int code;

            close(ready[0]);
            close(go[1]);
            close(results[0]);
            dup2(results[1], 1);
            setvbuf(stdout, NULL, _IOLBF, 0);
            snprintf(dom, sizeof(dom), pattern, i);
            snprintf(tag, sizeof(tag), "session %d ", i);
            odmr_login(&c, port, user, pass);
            if (write(ready[1], "r", 1) != 1)
                _exit(1);
            if (read(go[0], &ch, 1) != 0) /* released by the parent's close */
                _exit(1);
            code = atrn_and_flush(&c, dom, sink_port, tag);
            _exit(code == 250 || code == 453 ? 0 : 1);
        }
    }
    close(ready[1]);
    close(go[0]);
    close(results[1]);
    {
        double deadline = now_ms() + timeout_ms;

        while (authenticated < n && now_ms() < deadline) {
            struct pollfd p = {ready[0], POLLIN, 0};

            if (poll(&p, 1, 1000) > 0) {
                if (read(ready[0], &ch, 1) != 1)
                    break; /* every child is gone */
                authenticated++;
            }
        }
    }
    procs = count_odmrd();
    close(go[1]); /* release everybody */
    rf = fdopen(results[0], "r");
    while (fgets(line, sizeof(line), rf) != NULL) {
        fputs(line, stdout);
        if (strstr(line, "code=250 "))
            c250++;
        else if (strstr(line, "code=453 "))
            c453++;
    }
    for (int i = 0; i < n; i++)
        if (waitpid(pids[i], &status, 0) == pids[i] && WIFEXITED(status)
            && WEXITSTATUS(status) == 0)
            ok++;
    printf("sessions=%d authenticated=%d at_barrier_odmrd=%d code250=%d code453=%d ok=%d\n", n,
           authenticated, procs, c250, c453, ok);
    free(pids);
    return ok == n && authenticated == n ? 0 : 1;
}

/* ---- raw copy -------------------------------------------------------------- */

static int
raw_copy(const char *file)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), fd, s, status;
    struct stat st;
    pid_t pid;
    double t0, t1;
    off_t off = 0;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *) &sin, sizeof(sin)) < 0 || listen(lfd, 1) < 0
        || getsockname(lfd, (struct sockaddr *) &sin, &sl) < 0)
        die("listen: %s", strerror(errno));
    if ((fd = open(file, O_RDONLY)) < 0 || fstat(fd, &st) < 0)
        die("%s: %s", file, strerror(errno));
    if ((pid = fork()) == 0) {
        static char buf[256 * 1024];
        int a = accept(lfd, NULL, NULL);
        ssize_t n;

        while ((n = read(a, buf, sizeof(buf))) > 0)
            ;
        _exit(n == 0 ? 0 : 1);
    }
    close(lfd);
    t0 = now_ms();
    s = connect_local(ntohs(sin.sin_port));
    while (off < st.st_size) {
        ssize_t n = sendfile(s, fd, &off, (size_t) (st.st_size - off));

        if (n <= 0)
            die("sendfile: %s", strerror(errno));
    }
    close(s);
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("reader failed");
    t1 = now_ms();
    printf("raw_ms=%.3f bytes=%lld\n", t1 - t0, (long long) st.st_size);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *user = NULL, *pass = NULL, *domains = NULL, *raw = NULL;
    int port = 0, sink_port = 0, nsess = 0, opt;

    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    while ((opt = getopt(argc, argv, "p:u:P:d:s:c:t:r:C:S")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'u': user = optarg; break;
        case 'P': pass = optarg; break;
        case 'd': domains = optarg; break;
        case 's': sink_port = atoi(optarg); break;
        case 'c': nsess = atoi(optarg); break;
        case 't': timeout_ms = atoi(optarg) * 1000; break;
        case 'r': raw = optarg; break;
        case 'C': count_match = optarg; break;
        case 'S': fast_mode = 1; sink_port = -1; break;
        default:
            fprintf(stderr, "usage: flush-client -p PORT -u USER -P PASS -d DOMAINS -s SINKPORT "
                            "[-c N] [-t SECONDS] | -r FILE\n");
            return 2;
        }
    }
    if (raw != NULL)
        return raw_copy(raw);
    if (!port || !user || !pass || !domains || !sink_port)
        die("missing options (see the source)");
    if (nsess > 0)
        return sessions(nsess, port, user, pass, domains, sink_port);
    {
        CONN c;
        int code;

        odmr_login(&c, port, user, pass);
        code = atrn_and_flush(&c, domains, sink_port, "");
        return code == 250 || code == 453 ? 0 : 1;
    }
}
