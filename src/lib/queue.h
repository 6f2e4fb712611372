/*
 * queue.h - the hold queue: durable queue files plus a Berkeley DB index.
 *
 * LAYOUT (queue_directory, owned by the odmr user, mode 0700)
 *     incoming/          temp files being written (O_EXCL, 0600)
 *     msg/XY/ID          complete queue files; XY = last two hex digits of ID
 *     db/                Berkeley DB environment (Transactional Data Store)
 *                        with databases "index.db" and "stats.db" (the
 *                        per-domain figures and collection records,
 *                        queue_stats.h)
 *     lock/DOMAIN        per-domain lock files (fcntl F_WRLCK, whole file)
 *     wait/DOMAIN        wake-up files of customers waiting in ATRN (empty;
 *                        queue_wake.c)
 *     status/ID          per-recipient results (one line per result, see
 *                        QUEUE_REASON below), written by a flush for 4xx/5xx
 *                        results, by expiry, and for a delay warning sent
 *
 * ONE FILE PER MESSAGE. A message with recipients in several domains is
 * one file; each recipient has a one-byte status at a known offset that a
 * flush rewrites in place with pwrite(2) (domain locks keep two flushes of
 * one domain apart; flushes of different domains write different bytes).
 * The file is removed when every recipient is final (delivered or failed),
 * under an fcntl lock on the file itself.
 *
 * QUEUE FILE FORMAT (text header, then the content in SMTP wire form)
 *     ODMRQ 1\n
 *     id ID\n
 *     time SEC.USEC\n                arrival
 *     sender ADDR\n                  (empty after the space for <>)
 *     size N\n                       message size as the client declared or
 *                                     counted (bytes of content, CRLF form)
 *     envid XTEXT\n                  optional (kept as xtext, as received)
 *     ret FULL|HDRS\n                optional
 *     body 7BIT|8BITMIME|BINARYMIME\n optional
 *     smtputf8 1\n                   optional
 *     client NAME[ADDR]\n            optional
 *     helo NAME\n                    optional
 *     protocol LMTP|pipe|local\n     optional
 *     rcpt S NOTIFY ORCPT ADDR\n     one per recipient. S is the status
 *                                     byte: 'Q' queued, 'D' delivered,
 *                                     'S' delivered with a success notice
 *                                     owed, 'F' failed (5xx or expired)
 *                                     with a failure notice owed, 'B'
 *                                     failed and notified (or no notice
 *                                     wanted), 'X' removed by the
 *                                     administrator. NOTIFY and ORCPT are
 *                                     "-" when absent; ORCPT is xtext
 *                                     ("rfc822;user@example.org" encoded).
 *     content OFFSET LENGTH\n        fixed width (20 digits each)
 *     \n
 *     CONTENT                         CRLF lines, dot-stuffed, ending with
 *                                     ".\r\n": the whole DATA stream a flush
 *                                     sends after the 354.
 * The file size equals OFFSET + LENGTH; the last five bytes are
 * "\r\n.\r\n" (or the file content is just ".\r\n"). Anything else is a
 * damaged file: reported, never delivered, never deleted silently.
 *
 * DURABILITY (queue_writer_commit)
 *     write the temp file incoming/ID (locked by its writer), fsync it,
 *     link it to msg/XY/ID, fsync msg/XY, then add one index record per
 *     recipient domain in one transaction (committed durably when
 *     index_sync = yes), then unlink incoming/ID. Only after the commit may
 *     the caller say 250.
 *
 * ORPHANS. A crash between the link and the index commit leaves a file in
 * msg/ that no index entry names (an orphan): the sender got no 250, so
 * delivering it makes a duplicate, never a loss; not delivering it would
 * hold it for ever. Its incoming/ID link says so: queue_recover() (run by
 * `odmr-queue expire`, so every few minutes) looks only at incoming/,
 * which holds the messages being written, and for each file there whose
 * writer is dead (no OFD lock on it, older than QUEUE_RECOVER_AGE) either
 * indexes its msg/ twin (same inode) again or, when there is none, removes
 * it (never acknowledged). Its cost grows with the writes in progress, not
 * with the queue. incoming/ is not fsynced, so after a system crash its
 * entries may be gone while msg/ kept the file: once per boot (the
 * kernel's boot ID, remembered in db/boot-id), queue_recover() also walks
 * msg/ and indexes every file again (adding an entry twice is harmless).
 * `odmr-queue reindex` rebuilds everything from msg/.
 *
 * INDEX: Berkeley DB btree with sorted duplicates: key = lower-cased
 * recipient domain (no NUL), data = queue ID. IDs sort by arrival time,
 * so a flush sends the oldest first. Environment opened as described under
 * CRASH RECOVERY, DB_LOG_AUTO_REMOVE. Every operation retries on lock
 * conflicts. Index entries whose file is gone are dropped by the next flush
 * of that domain.
 *
 * IDs: 14 upper-case hex digits of microseconds since the epoch (12 would
 * wrap every 8.9 years; 14 last until 2254), followed by 4 random hex
 * digits: "0006282A1B2C3D4E5F" style, QUEUE_ID_LEN chars. Sortable by
 * arrival; strictly increasing within a process. The incoming file is made
 * with O_EXCL and moved into msg/ with renameat2(RENAME_NOREPLACE) (link(2)
 * where unsupported), so a colliding ID can never replace a queued message;
 * on a collision the ID is redrawn.
 *
 * CRASH RECOVERY. Every program (odmr-store, odmr-enqueue, odmrd, odmr-queue)
 * is a process of its own that may be killed at any instruction, also
 * inside Berkeley DB. A crashed process must cost the others a pause, never
 * a failure: under load, recovery run by whichever process opened next
 * while the rest failed to join (and, exiting, looked dead in turn) was
 * seen to refuse deliveries for minutes. So:
 *   - One opener at a time. Opening the environment and index.db happens
 *     under an exclusive fcntl (OFD) lock on db/odmr-open.lock, waited for
 *     up to QUEUE_OPEN_WAIT_S seconds. Nobody attaches to the regions while
 *     another process creates, checks or recovers them, so "unable to join
 *     the environment" (BDB1546, EAGAIN) cannot happen between our own
 *     processes; a process that still sees EAGAIN or a busy environment
 *     waits and tries again until the deadline. The kernel drops the lock
 *     of a process killed while holding it.
 *   - Dead processes are found by DB_REGISTER (each process holds an fcntl
 *     lock on its slot of db/__db.register; the kernel drops it at death).
 *     The opener that finds one runs recovery (DB_RECOVER) under the open
 *     lock, so the others wait for it instead of failing to join: Berkeley
 *     DB panics the old regions, every process still attached gets
 *     DB_RUNRECOVERY at its next call, closes its handle and reopens, i.e.
 *     waits behind the open lock until the recovery is done, then repeats
 *     the operation (every transaction body is repeatable, and adding or
 *     removing an index entry twice is harmless). Recovery is short:
 *     checkpoints every QUEUE_CHECKPOINT_EVERY commits. An operation gives
 *     up only when the environment cannot be opened before its deadline:
 *     then the disk or the index is really unusable, and the error says
 *     which.
 *   - failchk, not recovery, for a lock held by a dead process that no
 *     opener has come across yet: the environment has a thread table
 *     (set_thread_count) and an is_alive callback (kill(pid, 0)); a process
 *     lock-waiting for QUEUE_FAILCHK_AFTER_MS runs DB_ENV->failchk, which
 *     aborts the dead process's transaction and releases its locks, or
 *     says DB_RUNRECOVERY (it died inside the library): reopen as above.
 *     failchk is not run by the opens (DB_FAILCHK): Berkeley DB 5.3's
 *     failchk for a dead registrant attaches the regions first and spins
 *     for ever on a region mutex the dead process held (seen under kill -9
 *     in t_queue_storm.sh); recovery never takes that mutex.
 *   - A panicked environment that the registry does not flag, or one made
 *     by the previous version without a thread table, is recovered by the
 *     opener that meets it, by starting a new db/__db.register (an empty
 *     registry makes DB_REGISTER | DB_RECOVER recover).
 *   - WATCHDOG: no wait inside Berkeley DB is unbounded. A process killed
 *     while holding one of the library's mutexes (seen in t_queue_storm:
 *     a writer killed inside log_flush, holding the log's flush mutex)
 *     leaves every process that then wants that mutex in
 *     __db_pthread_mutex_lock -> pthread_cond_wait for ever: nothing wakes
 *     it, neither failchk nor a recovery by another opener (which makes
 *     new regions and leaves the old ones to those still attached). So
 *     every call into the library (a transaction try, failchk, a
 *     checkpoint, the open, the close) is a guarded call: a watchdog
 *     thread in each process sees a call that has run for queue_stuck_ms
 *     (10 s), and when the environment is wedged, i.e. a pid in
 *     db/__db.register no longer exists (a registrant died without
 *     closing) or db/__db.001 is no longer the region file we attached
 *     (someone recovered under us), it signals the thread, whose handler
 *     leaves the call with siglongjmp. The watchdog reads the registry
 *     through a descriptor opened with the environment and closed only
 *     after it (pread): closing any descriptor of that file would drop
 *     this process's slot lock, and the next opener would take the
 *     process for dead and recover the environment under it. A
 *     transaction's log flush and the checkpoint are guarded calls of
 *     their own, so a flush that is left never runs the committed
 *     transaction again. The handle is abandoned, never
 *     closed (a close would wait on the same mutex; its memory and
 *     mapping stay until the process exits), and the operation reopens
 *     and repeats as after DB_RUNRECOVERY; the reopen recovers (a new
 *     registry) unless db/__db.001 shows that another process already
 *     did. A slow call in a sound environment (nobody died, regions
 *     unchanged) is never left. The cost of a dead mutex holder is a
 *     pause of about queue_stuck_ms for those who waited on it, never an
 *     error.
 * Crash cases, with the durability order above:
 *   killed outside Berkeley DB (writing or fsyncing the file, talking to a
 *     peer): recovery at the next open, a pause for the others; nothing of
 *     the index changes. An unindexed file in msg/ is an orphan that
 *     queue_recover() puts back (no 250 given; see ORPHANS).
 *   killed inside an index transaction (between txn_begin and commit):
 *     failchk by a waiter, or recovery at the next open, aborts it; the
 *     message was not acknowledged.
 *   killed inside a library call holding a latch (e.g. writing the log):
 *     recovery; committed transactions are redone from the log, the rest
 *     undone. A commit whose log_flush returned is durable either way.
 *     A process waiting on that latch is freed by its watchdog (above)
 *     and repeats its operation in the recovered environment; if it was
 *     a writer's add, its message was not acknowledged yet, and the
 *     repeated add is what the acknowledgement waits for.
 *   killed after the index commit, before the reply: the message is held;
 *     the sender retries: a duplicate, never a loss.
 *   killed while recovering, or holding the open lock: the lock is
 *     dropped, the registry slot stays unlocked, the next opener recovers
 *     again (recovery is idempotent).
 * The registry allows one environment handle per process: open the queue
 * once per process, and never use a QUEUE in a child after fork(2).
 * A pid reused by an unrelated process looks alive to failchk; its locks
 * then stay until a lock timeout or a later recovery.
 *
 * GROUP COMMIT. Index transactions commit without waiting for the disk and
 * then flush the log (when index_sync = yes) before returning, so page
 * locks are not held across an fsync and one log flush serves every
 * process that committed meanwhile. The commit writes its log records to
 * the log file (DB_TXN_WRITE_NOSYNC, not DB_TXN_NOSYNC): a commit left in
 * the log buffer of the shared regions would be lost by the recovery that
 * any other process's crash causes (recovery rebuilds the regions from
 * the log file), and with index.db closed without a sync nothing else
 * writes it out. A committed transaction thus survives every process
 * crash; only a power failure can take one whose log flush had not
 * returned, and no acknowledgement is given before that return.
 *
 * WHY A MESSAGE STILL COSTS THREE SYNCS (issue 10 part 3, measured on the
 * 2-core test machine, ext4 without journal, shared with other builds):
 *   - A cross-process group commit of the whole file system was built and
 *     measured: file, rename and index commit (DB_TXN_WRITE_NOSYNC)
 *     without syncs, then one syncfs(2), shared by every writer that
 *     finished while the previous one ran (leader election by an OFD lock
 *     on a mapped counter page; a writer waits for a sync that began after
 *     its last write). It was slower than three syncs in every run: 1.4-3.4
 *     against 0.9-2.6 ms a message alone, 1.3-4.6 against 0.55-2.2 ms with
 *     5 to 20 writers, and more CPU (1.4-1.6 against 0.6-0.7 ms): syncfs
 *     writes back and waits for every dirty inode of the file system
 *     (here the root, with other processes' files), not just ours. It
 *     would also let a power failure leave a renamed but incomplete file
 *     (reported as damaged), which the fsync before the rename prevents.
 *   - The three syncs are not what bench/store measures: with no sync at
 *     all odmr-store reached 0.63-0.65x of virtual(8), in the same hour as
 *     0.52-0.69x for the durable version. Postfix's side of the
 *     LMTP door (lmtp(8), scache(8) handing the session over, and an RSET
 *     to check a cached session before every delivery) took 2.9 s of CPU
 *     for 2,000 deliveries against 2.0 s for virtual(8)'s whole delivery,
 *     on a machine where the benchmark is CPU-bound. The library's own
 *     commit path, without Postfix, stores 1,700 messages/s with 20
 *     writers (0.57 ms each), three times virtual(8)'s rate.
 *   So the order above stays, and what was cut is per process: index.db
 *   is closed with DB_NOSYNC (its changes are in the log; the cache lives
 *   in the shared regions), which saves odmr-enqueue a fourth sync per
 *   message, and the open lock is polled every 0.1-2 ms.
 *
 * NOTICES (DSNs). A recipient whose result needs a notice to the sender is
 * marked 'F' (failure or expiry) or 'S' (delivered to a customer without
 * the DSN extension and NOTIFY=SUCCESS asked: "relayed"); its reason line
 * goes to status/ID. queue_file_done() then puts the ID on the notice
 * list, in the same index transaction that removes the domain's entry, so
 * the two cannot part: a crash before that commit leaves the domain entry,
 * and the next flush or expiry run of the domain does the same again. The
 * notice runner (notice.h) submits the DSN, marks the recipients 'B' (or
 * 'D'), makes those marks durable, and only then takes the ID off the list
 * (queue_file_settle): a crash in between sends the notice twice, never
 * not at all. The list lives in the index database under a key no domain
 * can have ("\001notice"), and reindex rebuilds it from the status bytes.
 *
 * FIGURES. Every transaction that adds or removes a domain's index entry
 * also changes that domain's figures in stats.db (messages, recipients
 * waiting, bytes) and a record of what the entry counted, so the figures
 * cannot drift from the index; queue_file_done() batches a recount for an
 * entry that stays with fewer recipients waiting. See queue_stats.h.
 *
 * EXPIRY AND DELAY WARNINGS cost O(domains) when nothing is due: IDs sort
 * by arrival and carry it (queue_id_time), so a domain's first index entry
 * says whether any of its messages is old enough. For delay warnings each
 * domain keeps a watermark (key "\002" + domain: the newest ID already
 * looked at), so messages already warned are not looked at again; whether
 * a message was warned is a line in its status file, so a message with
 * recipients in several domains is warned once, and a reindex (which
 * forgets the watermarks) sends no second warning.
 */
#ifndef ODMR_QUEUE_H
#define ODMR_QUEUE_H

#include <stddef.h>
#include <sys/types.h>

#define QUEUE_ID_LEN 18

#define QUEUE_RCPT_QUEUED 'Q'
#define QUEUE_RCPT_DELIVERED 'D'
#define QUEUE_RCPT_FAILED 'F'
#define QUEUE_RCPT_REMOVED 'X' /* removed by the administrator: no bounce */
#define QUEUE_RCPT_SUCCESS 'S' /* delivered; a success notice is owed */
#define QUEUE_RCPT_BOUNCED 'B' /* failed; its notice went out or was not wanted */

typedef struct queue QUEUE;
typedef struct queue_writer QUEUE_WRITER;

typedef struct {
    char *address;  /* without <>; never empty */
    char *notify;   /* "SUCCESS,DELAY" ... or NULL */
    char *orcpt;    /* xtext as received ("rfc822;x@y" encoded) or NULL */
    int status;     /* QUEUE_RCPT_* */
    off_t status_offset; /* where the status byte is (when read from a file) */
} QUEUE_RCPT;

typedef struct {
    char id[QUEUE_ID_LEN + 1];
    char *sender;    /* "" for <> */
    long arrival_sec, arrival_usec;
    long long size;
    char *envid, *ret, *body; /* NULL when absent */
    int smtputf8;
    char *client, *helo, *protocol; /* NULL when absent */
    QUEUE_RCPT *rcpt;
    size_t rcpt_count;
    off_t content_offset;
    long long content_length; /* includes the final ".\r\n" */
} QUEUE_ENV;

/* ---- opening ------------------------------------------------------------- */

#define QUEUE_OPEN_CREATE 1   /* create the queue directory when missing
                               * (missing subdirectories are always made) */
#define QUEUE_OPEN_READONLY 2 /* no index writes (list/show) */

/* Open the queue at dir: directories, the BDB environment (with recovery
 * when needed) and the index. NULL with *error_r (malloc'd) on failure. */
QUEUE *queue_open(const char *dir, int flags, char **error_r);
void queue_close(QUEUE **qp);
const char *queue_dir(const QUEUE *q);

/* ---- writing (odmr-store, odmr-enqueue) -------------------------------- */

/* Start a queue file for env (id, content_* and status_offset are filled in
 * here; rcpt[].status must be QUEUE_RCPT_QUEUED). NULL + *error_r. */
QUEUE_WRITER *queue_writer_begin(QUEUE *q, const QUEUE_ENV *env, char **error_r);
/* Content in wire form (CRLF, dot-stuffed) without the final ".\r\n".
 * 0 or -1 (the error is kept for commit). */
int queue_writer_write(QUEUE_WRITER *w, const void *buf, size_t len);
/* Bytes of content written so far. */
long long queue_writer_length(const QUEUE_WRITER *w);
/* Append ".\r\n", finish the header, fsync, rename, fsync the directory,
 * commit the index. 0 with id_r filled (QUEUE_ID_LEN+1 bytes), or -1 with
 * *error_r; after -1 nothing is visible and the writer is freed. After 0
 * the message is accepted. Either way *wp becomes NULL. Every failure here
 * is temporary (disk full, lock timeout, index error): the caller says 4xx. */
int queue_writer_commit(QUEUE_WRITER **wp, char *id_r, char **error_r);
/* Throw the temp file away. */
void queue_writer_abort(QUEUE_WRITER **wp);
/* Benchmarks only (bench/gen-queue -b): finish the same file and move it
 * into msg/ without any fsync and without index entries; the caller adds
 * those in bulk (*domains_r: the recipient domains, lower case, freed with
 * queue_strings_free). Not crash-safe. 0 or -1 with *error_r. */
int queue_writer_commit_bulk(QUEUE_WRITER **wp, char *id_r, char ***domains_r,
                             size_t *count_r, char **error_r);

/* ---- reading ------------------------------------------------------------- */

typedef struct queue_file QUEUE_FILE;

/* Open and parse a queue file. NULL with errno ENOENT (and no *error_r)
 * when it is gone: a caller that got the ID from the index then calls
 * queue_index_drop(). Otherwise NULL with *error_r, and errno EINVAL for a
 * damaged file or a malformed ID, another errno for a system error. */
QUEUE_FILE *queue_file_open(QUEUE *q, const char *id, int writable, char **error_r);
const QUEUE_ENV *queue_file_env(const QUEUE_FILE *f);
int queue_file_fd(const QUEUE_FILE *f); /* for sendfile of the content */
/* Set recipient i's status byte (pwrite); reason (may be NULL) is appended
 * to status/ID for failed or deferred recipients. 0 or -1. */
int queue_file_mark(QUEUE_FILE *f, size_t i, int status, const char *reason);
void queue_file_close(QUEUE_FILE **fp);

/* One result line of status/ID. Events: */
#define QUEUE_EVENT_FAILED 'F'   /* 5xx from the customer, or decided here */
#define QUEUE_EVENT_EXPIRED 'E'  /* maximal_queue_lifetime passed */
#define QUEUE_EVENT_DEFERRED 'D' /* 4xx, timeout, lost connection */
#define QUEUE_EVENT_RELAYED 'R'  /* delivered to a customer without DSN */
#define QUEUE_EVENT_WARNED 'W'   /* a delay warning went out (message level) */
#define QUEUE_EVENT_NOTIFIED 'N' /* the notice for the recipient went out */
typedef struct {
    int event;     /* QUEUE_EVENT_*; 0: no line for this recipient */
    long time;     /* epoch seconds */
    char dsn[16];  /* enhanced status code "5.1.1" */
    char *relay;   /* "host[addr]:port", or NULL */
    char *diag;    /* the customer's reply, "550 5.1.1 user unknown", or NULL */
    char *text;    /* human text for logs and notices; never NULL */
} QUEUE_REASON;

/* Set recipient i's status byte (pwrite, made durable by queue_sync()) and
 * append the reason (may be NULL) to status/ID. Fields with control
 * characters are cleaned. 0, or -1 with *error_r. */
int queue_file_mark_reason(QUEUE_FILE *f, size_t i, int status, const QUEUE_REASON *reason,
                           char **error_r);
/* The last result line of every recipient (an array of rcpt_count entries,
 * event 0 where none) and whether a delay warning went out (*warned_r,
 * may be NULL). Lines in the first format ("INDEX CODE DSN text") are read
 * too. 0, or -1 with *error_r. Free with queue_reasons_free(). */
int queue_file_reasons(QUEUE_FILE *f, QUEUE_REASON **reasons_r, int *warned_r,
                       char **error_r);
void queue_reasons_free(QUEUE_REASON **reasons, size_t count);
/* Record that the delay warning for this message went out. 0 or -1. */
int queue_file_set_warned(QUEUE_FILE *f, char **error_r);

/* Lock the file against other notice runners and the "is everything
 * final?" decisions of flushes (fcntl OFD lock, waiting), then re-read the
 * status bytes. Released by queue_file_close(). 0, or -1 with *error_r. */
int queue_file_lock(QUEUE_FILE *f, char **error_r);

/* Distinct lower-cased recipient domains of env (only QUEUED ones when
 * queued_only), in recipient order; a malloc'd array of malloc'd strings, freed with
 * queue_strings_free(). */
size_t queue_env_domains(const QUEUE_ENV *env, int queued_only, char ***domains_r);
void queue_strings_free(char ***list, size_t count);

/* Does a recipient owe a notice ('F' or 'S')? */
int queue_env_owed(const QUEUE_ENV *env);

/* After the notice runner: under the file's lock, when no recipient is
 * queued and none owes a notice, remove the file (and its index and
 * notice-list entries); when none owes a notice, take the ID off the
 * notice list. The marks are made durable before the list changes (by
 * queue_sync(), which the caller runs, or which runs by itself when a
 * batch is full). *fp is closed either way. 0, or -1 with *error_r. */
int queue_file_settle(QUEUE *q, QUEUE_FILE **fp, char **error_r);

/* IDs on the notice list, oldest first (free with queue_ids_free). */
ssize_t queue_notice_ids(QUEUE *q, char ***ids_r, char **error_r);
/* Put an ID on the notice list now (durable), or take it off. 0 or -1. */
int queue_notice_add(QUEUE *q, const char *id, char **error_r);
int queue_notice_remove(QUEUE *q, const char *id, char **error_r);

/* A new ID (QUEUE_ID_LEN + 1 bytes), e.g. for a notice's Message-ID. */
void queue_new_id(char *id_r);
/* The arrival time (epoch seconds) an ID carries; -1 for a bad ID. */
long queue_id_time(const char *id);

/* Messages due for expiry or a delay warning, found from the index in
 * O(domains) when nothing is due. For every domain: each indexed ID that
 * arrived at or before expire_before (expire = 1), then, when warn_before
 * > 0, each ID after the domain's watermark that arrived at or before
 * warn_before (expire = 0). A message indexed for several domains appears
 * once per domain. *due_r is malloc'd (free with free()). 0 or -1. */
typedef struct {
    char domain[256];
    char id[QUEUE_ID_LEN + 1];
    int expire;
} QUEUE_DUE;
int queue_scan_due(QUEUE *q, long expire_before, long warn_before, QUEUE_DUE **due_r,
                   size_t *count_r, char **error_r);
/* Move the domain's delay-warning watermark to id (IDs up to it were
 * looked at). 0 or -1. */
int queue_warn_mark(QUEUE *q, const char *domain, const char *id, char **error_r);

/* The domain is done with this file (its recipients are all final): remove
 * the domain's index entry; when no recipient of the file is QUEUED,
 * remove every index entry, and the file and its status file too unless a
 * recipient FAILED (then the file waits, unindexed, for its bounce; a
 * recipient REMOVED by the administrator gets none). Deferred index
 * removal: records are batched and committed by queue_sync() (at most
 * every 100 calls): a crash before that re-sends, never loses.
 * The status bytes are re-read from the disk under an fcntl lock on the
 * file; when a recipient of this domain is still QUEUED (deferred) the
 * domain's entry is kept. *fp is closed and set to NULL either way.
 * A file closed after queue_file_mark() is fdatasync'd by queue_sync(),
 * before the batched removals are committed. A file that is removed is
 * unlinked and closed by a thread of the library, off the caller's path;
 * queue_sync() and queue_close() wait until those removals are done. */
int queue_file_done(QUEUE *q, QUEUE_FILE **fp, const char *domain, char **error_r);
/* Commit batched index removals and fdatasync marked files. */
int queue_sync(QUEUE *q, char **error_r);
/* Drop one (domain, ID) index entry now, e.g. after queue_file_open()
 * said ENOENT for an ID the index gave. 0 or -1. */
int queue_index_drop(QUEUE *q, const char *domain, const char *id, char **error_r);

/* Queue IDs indexed for a domain (lower-cased internally), oldest first.
 * Returns count (>= 0) with *ids_r a malloc'd array of malloc'd strings
 * (free with queue_ids_free), or -1 with *error_r. */
ssize_t queue_domain_ids(QUEUE *q, const char *domain, char ***ids_r, char **error_r);
void queue_ids_free(char ***ids, size_t count);
/* Does the domain have anything indexed? 1, 0 or -1. */
int queue_domain_has_mail(QUEUE *q, const char *domain, char **error_r);
/* Every indexed domain, in order: fn(domain, message count, ctx). A
 * non-zero return from fn stops the walk and is returned. */
int queue_walk_domains(QUEUE *q, int (*fn)(const char *domain, size_t count, void *ctx),
                       void *ctx, char **error_r);
/* Every queue file on disk, oldest ID first: fn(id, ctx); fn may remove
 * the file. A non-zero return from fn stops the walk and is returned. */
int queue_walk_files(QUEUE *q, int (*fn)(const char *id, void *ctx), void *ctx,
                     char **error_r);

/* ---- locks --------------------------------------------------------------- */

/* Lock a domain for a flush (fcntl, released by the kernel when the
 * process dies). wait_ms 0 = do not wait. Returns an fd >= 0 (keep it; close
 * it with queue_unlock_domain), or -1 with *error_r and errno: EAGAIN when
 * another flush holds it (after wait_ms), EINVAL for a name that is not a
 * valid domain, another errno for a system error.
 * Open-file-description locks (F_OFD_SETLK): two locks of one domain also
 * exclude each other inside one process; a child that inherits the fd
 * shares the lock until both have closed it. */
int queue_lock_domain(QUEUE *q, const char *domain, int wait_ms, char **error_r);
void queue_unlock_domain(int fd);

/* ---- administration ------------------------------------------------------ */

/* Delete a message (file, status file, index entries) under the domain
 * locks of its recipients (waiting up to 5 s for each). 0, or -1 with
 * *error_r: errno ENOENT when unknown, EAGAIN when a domain stays busy.
 * A damaged file is deleted too (its index entries are dropped when seen). */
int queue_delete(QUEUE *q, const char *id, char **error_r);
/* Rebuild the index from the files: empty it, walk msg/, add every
 * pending recipient's domain. Counts go to *files_r (files with queued
 * recipients), *entries_r (index entries), damaged files to *damaged_r
 * (each logged with msg_warn, left in place). A file whose recipients are
 * all final is removed (a removal a crash interrupted). Also removes what
 * dead writers left in incoming/. 0 or -1. */
int queue_reindex(QUEUE *q, size_t *files_r, size_t *entries_r, size_t *damaged_r,
                  char **error_r);

/* Orphan recovery (ORPHANS above): a dead writer's incoming/ file older
 * than QUEUE_RECOVER_AGE seconds (at time now) is indexed again when it
 * reached msg/ (*recovered_r) or else removed (*removed_r); on the first
 * run after a reboot every file in msg/ is indexed again (*checked_r
 * files). Safe while sessions and writers run. 0, or -1 with *error_r. */
#define QUEUE_RECOVER_AGE 60
int queue_recover(QUEUE *q, long now, size_t *recovered_r, size_t *removed_r,
                  size_t *checked_r, char **error_r);

/* Fault injection (tests only): when var_test_fault_point equals point,
 * the process kills itself with SIGKILL. Points in the queue library:
 * "before-fsync", "after-fsync", "after-rename", "after-index" (the commit
 * order), "open-locked" (holding the open lock, before the environment is
 * opened), "index-txn" (inside an index transaction that adds, holding its
 * write locks, before the commit), "log-flush" (committed, before the log
 * flush of a durable transaction); in notice.c: "after-notice"
 * (submitted, recipients not marked yet). */
void queue_fault(const char *point);

void queue_env_free(QUEUE_ENV *env); /* frees members, not env itself */

/* Parse a queue file's header: buf[0..len) must start with it and hold its
 * end (the blank line); what follows is not looked at. id: the ID the "id"
 * line must carry, or NULL for any valid ID. 0 with *env filled (free it
 * with queue_env_free; rcpt[].status_offset is the offset in buf), or -1
 * with *error_r ("damaged: why") and *env empty. queue_file_open() checks
 * the same and then the content against the file. For tests and the fuzz
 * target (tests/fuzz/fuzz_queue_header.c). */
int queue_env_parse(const char *buf, size_t len, const char *id, QUEUE_ENV *env,
                    char **error_r);

/* ---- wake-up files for the waiting ATRN (queue_wake.c) ------------------- */

/* queue_dir/wait/DOMAIN (lower-cased) into buf. 0, or -1 for a name that is
 * not a domain or does not fit. */
int queue_wake_path(const char *queue_dir, const char *domain, char *buf, size_t size);
/* A waiter: make the file (and wait/, mode 0700) if needed; its path in
 * path. 0, or -1 with errno. */
int queue_wake_prepare(const char *queue_dir, const char *domain, char *path, size_t size);
/* A door, after the commit: touch the file of each recipient domain of env
 * that has one (a waiter's inotify watch sees IN_ATTRIB). Never fails. */
void queue_wake_env(const char *queue_dir, const QUEUE_ENV *env);

#endif
