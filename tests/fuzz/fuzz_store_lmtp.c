/*
 * fuzz_store_lmtp.c - libFuzzer target: odmr-store's LMTP command parser,
 * the dispatcher and the LHLO, XFORWARD, MAIL (SIZE, BODY, RET, ENVID,
 * SMTPUTF8), RCPT (NOTIFY, ORCPT, domain check), RSET, NOOP, VRFY and QUIT
 * handlers of src/odmr-store/odmr-store.c, fed one input as a series of
 * command lines, as Postfix's lmtp(8) (or anything that reaches the
 * socket) would send them.
 *
 * odmr-store.c is compiled into this target as it is (its main() renamed),
 * so the fuzzer drives the real handlers, not a copy. DATA and BDAT lines
 * are skipped (they need the queue and a message; fuzz_stuff covers the
 * content path). Replies go to /dev/null; domain_maps is a small hash:
 * table made here with libdb (example.org, example.net).
 *
 * Checked after every line:
 *     the state is one of greeted, ready, mail;
 *     outside a transaction there is no sender and no recipient; in one,
 *     a sender; never more recipients than recipient_limit, each with an
 *     address with a domain of domain_maps, NOTIFY upper case, ORCPT with
 *     its "type;" prefix;
 *     XFORWARD values hold only printable ASCII;
 * and at the end, ASan's leak check after the session's own cleanup.
 */
#include <db.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define main odmr_store_main
#include "../../src/odmr-store/odmr-store.c"
#undef main

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static MAPS *fuzz_maps;
static int devnull = -1;

/* hash:DIR/domains with two domains, keys and values with their NUL as
 * postmap writes them. */
static void
make_domain_map(const char *path)
{
    static const char *const keys[] = {"example.org", "example.net"};
    DB *db;
    char file[512];

    (void) str_format(file, sizeof(file), "%s.db", path);
    if (db_create(&db, NULL, 0) != 0
        || db->open(db, NULL, file, NULL, DB_HASH, DB_CREATE | DB_TRUNCATE, 0600) != 0)
        abort();
    for (size_t i = 0; i < ODMR_ARRAY_LEN(keys); i++) {
        DBT k, v;

        memset(&k, 0, sizeof(k));
        memset(&v, 0, sizeof(v));
        k.data = (void *) keys[i];
        k.size = (u_int32_t) strlen(keys[i]) + 1;
        v.data = (void *) "cust1";
        v.size = 6;
        if (db->put(db, NULL, &k, &v, 0) != 0)
            abort();
    }
    if (db->close(db, 0) != 0)
        abort();
}

/* libdb keeps parts of an open table where LeakSanitizer does not see a
 * pointer to them (its own region memory): those are not ours to find. */
const char *__lsan_default_suppressions(void);
const char *
__lsan_default_suppressions(void)
{
    return "leak:libdb\n";
}

/* Close the table before the leak check at exit. */
static void
fuzz_fini(void)
{
    if (fuzz_maps != NULL)
        maps_close(&fuzz_maps);
}

static void
fuzz_init(void)
{
    char dir[] = "/tmp/fuzz_store_lmtp.XXXXXX", path[512], *err = NULL;

    msg_init("fuzz_store_lmtp", 0);     /* no syslog, no stderr */
    if (mkdtemp(dir) == NULL)
        abort();
    config_set_directory(dir);          /* no odmr.cf there: the defaults */
    config_load();
    (void) str_format(path, sizeof(path), "%s/domains", dir);
    make_domain_map(path);
    (void) str_format(path, sizeof(path), "hash:%s/domains", dir);
    if ((fuzz_maps = maps_open(path, &err)) == NULL)
        abort();
    if ((devnull = open("/dev/null", O_RDWR)) < 0)
        abort();
    (void) atexit(fuzz_fini);
}

static int
printable(const char *s)
{
    for (; s != NULL && *s; s++)
        if ((unsigned char) *s < 0x21 || (unsigned char) *s > 0x7e)
            return 0;
    return 1;
}

static void
check(const STORE *sp)
{
    const QUEUE_ENV *env = &sp->env;

    if (sp->state != ST_GREETED && sp->state != ST_READY && sp->state != ST_MAIL)
        abort();
    if (sp->state != ST_MAIL && (env->sender != NULL || env->rcpt_count != 0))
        abort();
    if (sp->state == ST_MAIL && env->sender == NULL)
        abort();
    if (env->rcpt_count > (size_t) var_recipient_limit || env->rcpt_count > sp->rcpt_alloc)
        abort();
    for (size_t i = 0; i < env->rcpt_count; i++) {
        const QUEUE_RCPT *r = env->rcpt + i;
        const char *d = addr_domain(r->address);
        char lower[256];

        if (d == NULL || strlen(d) >= sizeof(lower))
            abort();
        str_copy(lower, d, sizeof(lower));
        str_lower(lower);
        if (strcmp(lower, "example.org") != 0 && strcmp(lower, "example.net") != 0)
            abort();
        if (r->status != QUEUE_RCPT_QUEUED)
            abort();
        for (const char *p = r->notify; p != NULL && *p; p++)
            if (*p >= 'a' && *p <= 'z')
                abort();
        if (r->orcpt != NULL && strchr(r->orcpt, ';') == NULL)
            abort();
    }
    if (!printable(sp->xf_name) || !printable(sp->xf_addr) || !printable(sp->xf_helo)
        || !printable(sp->xf_proto) || !printable(sp->xf_ident))
        abort();
}

/* DATA and BDAT (any case) with or without arguments. */
static int
skipped(const char *line, size_t len)
{
    return (len >= 4 && (strncasecmp(line, "DATA", 4) == 0 || strncasecmp(line, "BDAT", 4) == 0)
            && (len == 4 || line[4] == ' '));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    STORE session, *sp = &session;
    size_t max = (size_t) var_line_length_limit;
    const char *p, *end;
    char *line;

    if (fuzz_maps == NULL)
        fuzz_init();
    max = (size_t) var_line_length_limit;
    memset(sp, 0, sizeof(*sp));
    sp->state = ST_GREETED;
    sp->domain_maps = fuzz_maps;
    str_copy(sp->client, "fuzz", sizeof(sp->client));
    sp->stream = stream_open(devnull, devnull);
    line = x_malloc(max + 1);

    for (p = (const char *) data, end = p + size; p < end && !sp->quit;) {
        const char *nl = memchr(p, '\n', (size_t) (end - p));
        size_t len = (size_t) ((nl ? nl : end) - p);

        /* read_command() hands over at most line_length_limit bytes and
         * refuses longer lines. */
        if (len <= max) {
            memcpy(line, p, len);
            if (len > 0 && line[len - 1] == '\r')
                len--;
            line[len] = 0;
            if (!skipped(line, len))
                dispatch(sp, line, len);
            check(sp);
        }
        if (sp->errors >= var_error_limit)
            break;
        p = nl ? nl + 1 : end;
    }
    free(line);
    transaction_reset(sp);
    stream_close(&sp->stream, 0);
    return 0;
}
