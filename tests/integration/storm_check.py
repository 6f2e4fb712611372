#!/usr/bin/python3
"""A storm of concurrent writers into the hold queue while random writers
and odmrd sessions are killed with SIGKILL (t_queue_storm.sh).

Writers (WRITERS at once, mixed): LMTP sessions through the sandbox's door
(the spawn(8) socket private/odmr-store, each session storing MSGS messages)
and runs of odmr-enqueue as user odmr (MSGS runs one after another). A
message that got no acknowledgement because its writer was killed is sent
again, as Postfix would (at most TRIES attempts). Meanwhile a killer sends
SIGKILL to random odmr-store, odmr-enqueue and odmrd processes of this
sandbox (recognized by their -c CONFIG_DIR argument), and customers run
ATRN sessions for example.com (some mail preloaded) over and over.

Afterwards:
  - every acknowledged message (LMTP 250 after the dot, odmr-enqueue exit
    0) is in the hold queue, complete and indexed for its domain, exactly
    once; twice only when one of its attempts was killed (a kill after the
    index commit, where the sender got no acknowledgement);
  - no writer that was not killed failed: no 4xx/5xx from odmr-store, no
    odmr-enqueue exit status other than 0, no connection closed without a
    reply beyond the number of odmr-store processes killed; no "fatal:"
    line and no environment error in the odmr log;
  - every customer session ended within its time limit; its ATRN got 250
    (and the session ended with QUIT), 451 or 453; sessions that ended
    otherwise are at most as many as the odmrd processes killed;
  - odmr-queue reindex finds no damaged file.
Prints the counts (attempts, kills, seconds) for the record.
"""
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qlib import report, results, sandbox_env, queue_files, parse_queue_file, odmr_queue, ID_RE

env = sandbox_env()
ETC = env["CONFIG_DIR"]
BIN = os.path.join(env["BUILD_DIR"], "bin")
SOCK = os.path.join(os.environ["POSTFIX_QUEUE_DIR"], "private", "odmr-store")
WRITERS = int(os.environ.get("STORM_WRITERS", "200"))
MSGS = int(os.environ.get("STORM_MSGS", "3"))
TRIES = 10
KILL_EVERY = float(os.environ.get("STORM_KILL_EVERY", "0.15"))
SESSIONS = int(os.environ.get("STORM_SESSIONS", "4"))
PRELOAD = 20
TIMEOUT = 60  # one LMTP reply, one odmr-enqueue run, one customer session
PW2 = os.environ["ODMR_PASSWORD_cust2"]

lock = threading.Lock()
acked = {}          # name -> domain
killed_names = set()
problems = []       # healthy writers that failed
eofs = [0]          # LMTP connections closed without a reply
door_full = [0]     # LMTP connects refused with EAGAIN: the door's backlog was full
attempts = [0]
kills = {"odmr-store": 0, "odmr-enqueue": 0, "odmrd": 0}
session_results = []
storm_over = threading.Event()
active = [0]        # writers still running


def message(name):
    return ("From: storm@sender.test\r\nTo: %s\r\nSubject: %s\r\nX-Name: %s\r\n\r\n"
            "storm message %s\r\n.leading dot\r\n%s\r\n" %
            (name, name, name, name, "x" * 2000)).encode()


def problem(text):
    with lock:
        problems.append(text)


class DoorFull(Exception):
    pass


class Lmtp:
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(TIMEOUT)
        try:
            self.s.connect(SOCK)
        except BlockingIOError:
            # A socket with a timeout connects without blocking, as lmtp(8)
            # does (timed_connect): when more connections wait than the
            # listen backlog master gave the door (max(maxproc,
            # default_process_limit) = 100) the kernel answers EAGAIN at
            # once. lmtp(8) defers the message and qmgr tries again later;
            # nothing of ours ran, so it is no writer's failure.
            self.s.close()
            raise DoorFull()
        self.buf = b""

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError()
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def cmd(self, text):
        self.s.sendall(text.encode() + b"\r\n")
        return self.reply()

    def close(self):
        self.s.close()


def lmtp_writer(job):
    todo = ["L%03dm%d" % (job, k) for k in range(MSGS)]
    domain = "example.org" if job % 2 else "example.net"
    tries = 0
    door_deadline = time.time() + TIMEOUT
    while todo and tries < TRIES * MSGS:
        tries += 1
        c = None
        inflight = None
        try:
            try:
                c = Lmtp()
            except DoorFull:
                with lock:
                    door_full[0] += 1
                if time.time() > door_deadline:
                    problem("LMTP writer %d: the door stayed full for %d s" % (job, TIMEOUT))
                    return
                tries -= 1
                time.sleep(0.2 + random.random() * 0.5)
                continue
            r = c.reply()
            if not r[0].startswith("220"):
                problem("LMTP greeting %r" % r)
                return
            c.cmd("LHLO storm.test")
            while todo:
                name = todo[0]
                with lock:
                    attempts[0] += 1
                for cmd, want in (("MAIL FROM:<storm@sender.test>", "250"),
                                  ("RCPT TO:<%s@%s>" % (name, domain), "250"),
                                  ("DATA", "354")):
                    r = c.cmd(cmd)
                    if not r[-1].startswith(want):
                        problem("%s: %s -> %r" % (name, cmd.split(":")[0], r))
                        return
                # From here on a kill may leave a copy the sender never
                # heard of (a kill after the index commit).
                inflight = name
                c.s.sendall(message(name) + b".\r\n")
                r = c.reply()
                inflight = None
                if not r[-1].startswith("250"):
                    problem("%s: final dot -> %r" % (name, r))
                    return
                with lock:
                    acked[name] = domain
                todo.pop(0)
            c.cmd("QUIT")
        except (EOFError, ConnectionResetError, BrokenPipeError):
            # The odmr-store of this session was killed (nothing else
            # closes it without a reply): try again, as Postfix would.
            with lock:
                eofs[0] += 1
                if inflight:
                    killed_names.add(inflight)
        except OSError as e:
            problem("LMTP writer %d: %r" % (job, e))
            return
        finally:
            if c is not None:
                c.close()
    if todo:
        problem("LMTP writer %d: gave up on %r" % (job, todo))


def enqueue_writer(job):
    domain = "example.org" if job % 2 else "example.net"
    for k in range(MSGS):
        name = "E%03dm%d" % (job, k)
        for _ in range(TRIES):
            with lock:
                attempts[0] += 1
            try:
                p = subprocess.run(["setpriv", "--reuid", "odmr", "--regid", "odmr",
                                    "--clear-groups", os.path.join(BIN, "odmr-enqueue"), "-c",
                                    ETC, "-f", "storm@sender.test", "--",
                                    "%s@%s" % (name, domain)],
                                   input=message(name).replace(b"\r\n", b"\n"),
                                   capture_output=True, timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                problem("%s: odmr-enqueue ran over %d s" % (name, TIMEOUT))
                break
            if p.returncode == 0:
                with lock:
                    acked[name] = domain
                break
            if p.returncode == -signal.SIGKILL:
                with lock:
                    killed_names.add(name)
                continue
            problem("%s: odmr-enqueue exit %d %s" % (name, p.returncode,
                                                     p.stderr.decode(errors="replace")[:300]))
            break


def sandbox_pids():
    """pid -> program for the odmr processes of this sandbox."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = open("/proc/%s/cmdline" % d, "rb").read().split(b"\0")
        except OSError:
            continue
        if len(argv) < 3 or ETC.encode() not in argv:
            continue
        prog = os.path.basename(argv[0].decode(errors="replace"))
        if prog in kills:
            out[int(d)] = prog
    return out


def killer():
    rnd = random.Random(os.getpid())
    while not storm_over.is_set():
        time.sleep(KILL_EVERY * (0.5 + rnd.random()))
        # Only in the storm: at its tail the last few writers would be
        # killed over and over.
        if active[0] < WRITERS // 10:
            continue
        pids = sandbox_pids()
        if not pids:
            continue
        pid = rnd.choice(sorted(pids))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        with lock:
            kills[pids[pid]] += 1


def customer():
    while not storm_over.is_set():
        t0 = time.time()
        try:
            p = subprocess.run(["/usr/bin/python3",
                                os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "odmr_customer.py"),
                                "--host", os.environ["ODMR_HOST"], "--port",
                                os.environ["ODMR_PORT"], "--timeout", "30", "--user", "cust2",
                                "--password", PW2, "--domains", "example.com"],
                               capture_output=True, text=True, timeout=TIMEOUT)
            out, rc = p.stdout, p.returncode
        except subprocess.TimeoutExpired:
            out, rc = "hung", -1
        m = re.search(r"^atrn: (\d{3})", out, re.M)
        atrn = int(m.group(1)) if m else 0
        good = (atrn == 250 and rc == 0) or atrn in (451, 453)
        with lock:
            session_results.append((good, atrn, rc, round(time.time() - t0, 1),
                                    out.strip().splitlines()[-1:] if out else []))


def preload():
    for k in range(PRELOAD):
        p = subprocess.run(["setpriv", "--reuid", "odmr", "--regid", "odmr", "--clear-groups",
                            os.path.join(BIN, "odmr-enqueue"), "-c", ETC, "-f",
                            "storm@sender.test", "--", "p%d@example.com" % k],
                           input=message("P%d" % k).replace(b"\r\n", b"\n"),
                           capture_output=True, timeout=TIMEOUT)
        if p.returncode != 0:
            return False
    return True


def main():
    report("preload example.com", preload(), "odmr-enqueue failed")
    log_before = os.path.getsize(env["ODMR_LOG_FILE"]) if os.path.exists(
        env["ODMR_LOG_FILE"]) else 0
    t0 = time.time()
    threads = []
    def run(fn, job):
        try:
            fn(job)
        finally:
            with lock:
                active[0] -= 1

    active[0] = WRITERS
    for job in range(WRITERS):
        fn = lmtp_writer if job % 5 < 3 else enqueue_writer
        threads.append(threading.Thread(target=run, args=(fn, job), daemon=True))
    extra = [threading.Thread(target=killer, daemon=True)]
    extra += [threading.Thread(target=customer, daemon=True) for _ in range(SESSIONS)]
    for t in extra + threads:
        t.start()
    deadline = time.time() + 150
    for t in threads:
        t.join(max(1, deadline - time.time()))
    hung = sum(t.is_alive() for t in threads)
    storm_over.set()
    for t in extra:
        t.join(TIMEOUT + 10)
    took = time.time() - t0
    print("# storm: %d writers x %d messages, %d attempts, %d acknowledged, %.0f s; killed %r;"
          " %d LMTP connections closed without a reply; %d LMTP connects deferred (backlog"
          " full); %d customer sessions" %
          (WRITERS, MSGS, attempts[0], len(acked), took, kills, eofs[0], door_full[0],
           len(session_results)))
    report("every writer finished in time", hung == 0, "%d still running" % hung)
    report("every customer session ended in time", not any(t.is_alive() for t in extra), "")
    report("no healthy writer failed", not problems, "; ".join(problems[:8]) +
           (" ... (%d)" % len(problems) if len(problems) > 8 else ""))
    report("LMTP connections closed without a reply <= odmr-store processes killed",
           eofs[0] <= kills["odmr-store"], "%d > %d" % (eofs[0], kills["odmr-store"]))
    report("something was killed", kills["odmr-store"] > 0 and kills["odmr-enqueue"] > 0,
           repr(kills))

    with open(env["ODMR_LOG_FILE"], errors="replace") as f:
        f.seek(log_before)
        log = f.read()
    bad = [l for l in log.splitlines()
           if re.search(r"fatal:|panic:|open environment|unable to join|cannot open queue", l)]
    report("no fatal and no environment error in the odmr log", not bad,
           "%d lines, e.g. %s" % (len(bad), " | ".join(bad[:3])))

    bad_sessions = [s for s in session_results if not s[0]]
    report("customer sessions: 250, 451 or 453, or killed",
           len(bad_sessions) <= kills["odmrd"],
           "%d bad > %d odmrd killed: %r" % (len(bad_sessions), kills["odmrd"], bad_sessions[:5]))
    report("some customer sessions ran", len(session_results) > 0, "")

    # The hold queue: what each acknowledged message became.
    copies = {}
    damaged = []
    for path in queue_files(env):
        try:
            fields, rcpts, wire = parse_queue_file(path)
        except FileNotFoundError:
            continue
        except Exception as e:
            damaged.append("%s: %r" % (path, e))
            continue
        m = re.search(rb"\r\nX-Name: (\S+)\r\n", wire)
        if m:
            copies.setdefault(m.group(1).decode(), []).append(os.path.basename(path))
    report("no damaged queue file", not damaged, "; ".join(damaged[:5]))
    indexed = {}
    for domain in ("example.org", "example.net"):
        out = odmr_queue(env, "list", domain)
        indexed[domain] = set(ID_RE.findall(out.stdout))
    lost, dup, unindexed = [], [], []
    for name, domain in sorted(acked.items()):
        ids = copies.get(name, [])
        good = [i for i in ids if i in indexed[domain]]
        if not good:
            (unindexed if ids else lost).append(name)
        if len(ids) > 1 and name not in killed_names:
            dup.append("%s x%d" % (name, len(ids)))
    report("every acknowledged message is held", not lost,
           "%d lost: %s" % (len(lost), " ".join(lost[:10])))
    report("every acknowledged message is indexed", not unindexed,
           "%d unindexed: %s" % (len(unindexed), " ".join(unindexed[:10])))
    report("no duplicate without a kill", not dup, " ".join(dup[:10]))
    report("acknowledged messages: %d of %d" % (len(acked), WRITERS * MSGS),
           len(acked) == WRITERS * MSGS, "some messages were never acknowledged")
    out = odmr_queue(env, "reindex")
    m = re.search(r"(\d+) damaged", out.stdout + out.stderr)
    report("reindex after the storm", out.returncode == 0 and (m is None or m.group(1) == "0"),
           (out.stdout + out.stderr)[-300:])


main()
sys.exit(0 if all(results) else 1)
