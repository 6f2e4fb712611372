#!/usr/bin/python3
"""fetchmail_check.py - messages and checks for t_fetchmail.sh.

    fetchmail_check.py inject WORKDIR     send the test messages into the
                                          sandbox (smtplib, swaks, smtp-source)
    fetchmail_check.py held WORKDIR       every message is in the hold queue
                                          with its recipients queued; saves the
                                          held content of each message
    fetchmail_check.py received WORKDIR SINKDIR
                                          what smtp-sink dumped (-d) is what
                                          was sent, byte for byte, to the right
                                          envelope recipients, once each
    fetchmail_check.py after WORKDIR      the hold queue afterwards: cust1's
                                          recipients delivered, cust2's queued

Each message carries an "X-Test-Id: mN" header that names it. Prints
"ok NAME" / "fail NAME: REASON" lines for lib.sh's py_checks. Uses the
sandbox variables SMTP_HOST, SMTP_PORT, CONFIG_DIR, BUILD_DIR from the
environment. Only Debian's /usr/bin/python3 standard library.

smtp-sink's dump format (man smtp-sink): its own X-Client-Addr, X-Client-Proto,
X-Helo-Args, X-Mail-Args, X-Rcpt-Args (one per RCPT) and a three-line
Received: header, then the message as received with the dot-stuffing removed
and LF line ends, then one empty line. So "byte for byte" here means: every
byte of every line, with CRLF compared as LF.
"""

import json
import os
import re
import smtplib
import subprocess
import sys

CUST1_DOMAINS = ("example.org", "example.net")
DATE = "Date: Mon, 2 Mar 2026 10:00:00 +0000"


def msg(test_id, to, subject, body, extra=b""):
    """A complete message (every header Postfix's cleanup would otherwise
    add is present), CRLF line ends."""
    head = ("From: Sender <sender@sender.test>\r\n"
            "To: %s\r\n"
            "Subject: %s\r\n"
            "%s\r\n"
            "Message-Id: <%s.fetchmail-test@sender.test>\r\n"
            "X-Test-Id: %s\r\n" % (", ".join(to), subject, DATE, test_id, test_id))
    return head.encode() + extra + b"\r\n" + body


def messages():
    """id -> dict(sender, rcpts, how, data (bytes, CRLF) or None, params)."""
    big = b"".join(b"line %05d of a larger message: %s\r\n" % (i, b"x" * 60) for i in range(3000))
    dots = (b".starts with a dot\r\n"
            b"..starts with two dots\r\n"
            b".\r\n"
            b"a line with a lone dot above and below\r\n"
            b".\r\n"
            b" . not at the start\r\n"
            b"...\r\n"
            b"last line\r\n")
    eight = ("UTF-8: \u00e4\u00f6\u00fc \u00df \u20ac \u65e5\u672c\r\n".encode("utf-8") +
             b"Latin-1 bytes: \xe4\xf6\xfc\r\n" +
             b"all high bytes: " + bytes(range(0x80, 0x100)) + b"\r\n" +
             b"tab\there, trailing space \r\n" +
             b"\r\n" +
             b"after an empty line\r\n")
    m = {
        "m1": dict(sender="sender@sender.test", rcpts=["alice@example.org"], how="smtplib",
                   params=["BODY=8BITMIME"],
                   data=msg("m1", ["alice@example.org"], "8-bit body", eight,
                            b"MIME-Version: 1.0\r\n"
                            b"Content-Type: text/plain; charset=utf-8\r\n"
                            b"Content-Transfer-Encoding: 8bit\r\n")),
        "m2": dict(sender="sender@sender.test",
                   rcpts=["bob@example.org", "carol@example.org", "dave@example.net",
                          "eve@example.com"],
                   how="smtplib", params=[],
                   data=msg("m2", ["bob@example.org", "carol@example.org", "dave@example.net",
                                   "eve@example.com"],
                            "four recipients, one of them cust2's",
                            b"Hello all four of you.\r\n")),
        # smtp-source -r 2 -t frank@example.net: frank@, 2frank@.
        "m3": dict(sender="dots@sender.test", rcpts=["frank@example.net", "2frank@example.net"],
                   how="smtp-source", params=[],
                   data=msg("m3", ["frank@example.net"], "leading dots", dots)),
        "m4": dict(sender="swaks@sender.test", rcpts=["grace@example.org"], how="swaks",
                   params=[], data=None),
        "m5": dict(sender="sender@sender.test", rcpts=["henry@example.com"], how="smtplib",
                   params=[],
                   data=msg("m5", ["henry@example.com"], "for cust2 only",
                            b"cust1 must never see this.\r\n")),
        "m6": dict(sender="<>", rcpts=["ivan@example.org"], how="smtplib", params=[],
                   data=msg("m6", ["ivan@example.org"], "about 250 KB, null sender", big)),
    }
    return m


def out(ok, name, reason=""):
    if ok:
        print("ok %s" % name)
    else:
        print("fail %s: %s" % (name, reason))
    sys.stdout.flush()


def cust1(rcpt):
    return rcpt.rsplit("@", 1)[1] in CUST1_DOMAINS


def odmr_queue(*args):
    b = os.path.join(os.environ["BUILD_DIR"], "bin", "odmr-queue")
    r = subprocess.run([b, "-c", os.environ["CONFIG_DIR"]] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError("odmr-queue %s: exit %d: %s" % (" ".join(args), r.returncode,
                                                           r.stderr.decode(errors="replace")))
    return r.stdout


# ---- inject ---------------------------------------------------------------

def inject(work):
    host, port = os.environ["SMTP_HOST"], int(os.environ["SMTP_PORT"])
    ms = messages()
    for tid, m in sorted(ms.items()):
        name = "inject %s (%s, %d rcpt)" % (tid, m["how"], len(m["rcpts"]))
        try:
            if m["how"] == "smtplib":
                sender = "" if m["sender"] == "<>" else m["sender"]
                with smtplib.SMTP(host, port, local_hostname="client.test", timeout=60) as s:
                    refused = s.sendmail(sender, m["rcpts"], m["data"], m["params"])
                out(not refused, name, "refused: %r" % (refused,))
            elif m["how"] == "smtp-source":
                # smtp-source -F: the file's lines get CRLF and dot-stuffing.
                f = os.path.join(work, tid + ".source")
                with open(f, "wb") as fh:
                    fh.write(m["data"].replace(b"\r\n", b"\n"))
                r = subprocess.run(["smtp-source", "-M", "client.test", "-f", m["sender"],
                                    "-t", "frank@example.net", "-r", "2", "-F", f,
                                    "%s:%d" % (host, port)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
                out(r.returncode == 0, name, r.stdout.decode(errors="replace"))
            elif m["how"] == "swaks":
                r = subprocess.run(["swaks", "--server", "%s:%d" % (host, port),
                                    "--helo", "client.test", "--from", m["sender"],
                                    "--to", ",".join(m["rcpts"]), "--timeout", "30",
                                    "--header", "Subject: sent with swaks",
                                    "--add-header", "X-Test-Id: m4",
                                    "--body", "A message from swaks.\nSecond line.\n"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
                out(r.returncode == 0, name, r.stdout.decode(errors="replace")[-500:])
        except Exception as e:  # noqa: BLE001 - report, go on
            out(False, name, repr(e))
    meta = {tid: dict(sender=m["sender"], rcpts=m["rcpts"], how=m["how"],
                      params=m["params"])
            for tid, m in ms.items()}
    with open(os.path.join(work, "manifest.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    for tid, m in ms.items():
        if m["data"] is not None:
            data = m["data"]
            if m["how"] == "smtp-source":
                # smtp-source -F ends the message with an empty line of its
                # own (seen with Postfix 3.7.11's smtp-source).
                data += b"\r\n"
            with open(os.path.join(work, tid + ".sent"), "wb") as fh:
                fh.write(data)


# ---- the hold queue -----------------------------------------------------------

QID = re.compile(r"^([0-9A-F]{18})\s")
RCPT_LINE = re.compile(r"^\s+(\S+) \((\w+)\)")


def queue_list():
    """[(qid, {rcpt: status})] from odmr-queue list."""
    res = []
    for line in odmr_queue("list").decode(errors="replace").splitlines():
        m = QID.match(line)
        if m:
            res.append((m.group(1), {}))
            continue
        m = RCPT_LINE.match(line)
        if m and res:
            res[-1][1][m.group(1).lower()] = m.group(2)
    return res


def show(qid):
    """(envelope text, content bytes with CRLF, dot-stuffing removed)."""
    raw = odmr_queue("show", qid)
    env, _, content = raw.partition(b"\n\n")
    if not content.endswith(b".\r\n"):
        raise RuntimeError("show %s: content does not end with .CRLF" % qid)
    content = content[:-3]
    lines = content.split(b"\r\n")
    lines = [ln[1:] if ln.startswith(b".") else ln for ln in lines]
    return env.decode(errors="replace"), b"\r\n".join(lines)


def test_id(content):
    m = re.search(rb"^X-Test-Id: (m\d+)\r?$", content, re.M)
    return m.group(1).decode() if m else None


def held(work):
    meta = json.load(open(os.path.join(work, "manifest.json")))
    try:
        q = queue_list()
    except Exception as e:  # noqa: BLE001
        out(False, "odmr-queue list", repr(e))
        return
    by_id = {}
    for qid, rcpts in q:
        try:
            env, content = show(qid)
        except Exception as e:  # noqa: BLE001
            out(False, "odmr-queue show %s" % qid, repr(e))
            continue
        tid = test_id(content)
        if tid:
            by_id.setdefault(tid, []).append((qid, rcpts, env, content))
    for tid in sorted(meta):
        m = meta[tid]
        got = by_id.get(tid, [])
        if len(got) != 1:
            out(False, "%s held once" % tid, "found %d queue files" % len(got))
            continue
        qid, rcpts, env, content = got[0]
        want = {r.lower(): "queued" for r in m["rcpts"]}
        out(rcpts == want, "%s held with every recipient queued" % tid,
            "list says %r, want %r" % (rcpts, want))
        with open(os.path.join(work, tid + ".held"), "wb") as fh:
            fh.write(content)
        with open(os.path.join(work, tid + ".qid"), "w") as fh:
            fh.write(qid + "\n")
        if "BODY=8BITMIME" in m["params"]:
            out("body: 8BITMIME" in env, "%s held with BODY=8BITMIME" % tid, env)


# ---- what the customer received ---------------------------------------------------

def parse_dump(path):
    """smtp-sink -d file -> (mail args, [rcpt args], content bytes, LF)."""
    data = open(path, "rb").read()
    lines = data.split(b"\n")
    mail, rcpts, i = None, [], 0
    while i < len(lines) and lines[i].startswith(b"X-"):
        k, _, v = lines[i].partition(b": ")
        if k == b"X-Mail-Args":
            mail = v.decode(errors="replace")
        elif k == b"X-Rcpt-Args":
            rcpts.append(v.decode(errors="replace"))
        i += 1
    if i >= len(lines) or not lines[i].startswith(b"Received: ") or b"(smtp-sink)" not in lines[i + 1]:
        raise RuntimeError("%s: no smtp-sink Received header after the X- lines" % path)
    i += 1
    while i < len(lines) and lines[i][:1] in (b"\t", b" "):
        i += 1
    content = b"\n".join(lines[i:])
    # The dump ends with the message's last LF plus one empty line.
    if not content.endswith(b"\n\n"):
        raise RuntimeError("%s: does not end with the empty line smtp-sink adds" % path)
    return mail, rcpts, content[:-1]


def strip_first_header(content):
    """Remove the first header field (Postfix's Received:) and its
    continuation lines."""
    lines = content.split(b"\n")
    if not lines[0].startswith(b"Received: "):
        return None
    i = 1
    while i < len(lines) and lines[i][:1] in (b"\t", b" "):
        i += 1
    return b"\n".join(lines[i:])


def lf(b):
    return b.replace(b"\r\n", b"\n")


def addr(arg):
    m = re.match(r"<([^>]*)>", arg)
    return m.group(1).lower() if m else None


def received(work, sinkdir):
    meta = json.load(open(os.path.join(work, "manifest.json")))
    got = {}
    files = sorted(os.listdir(sinkdir)) if os.path.isdir(sinkdir) else []
    out(len(files) > 0, "smtp-sink dumped messages", "no files in %s" % sinkdir)
    for f in files:
        path = os.path.join(sinkdir, f)
        try:
            mail, rcpts, content = parse_dump(path)
        except Exception as e:  # noqa: BLE001
            out(False, "dump %s parses" % f, repr(e))
            continue
        tid = test_id(content)
        got.setdefault(tid, []).append((f, mail, rcpts, content))
    unknown = [f for tid in got if tid not in meta for f, _, _, _ in got[tid]]
    out(not unknown, "every dumped message is a test message", "unknown: %r" % unknown)

    for tid in sorted(meta):
        m = meta[tid]
        want = sorted(r.lower() for r in m["rcpts"] if cust1(r))
        trans = got.get(tid, [])
        if not want:
            out(not trans, "%s (cust2 only) not delivered to cust1" % tid,
                "%d copies arrived" % len(trans))
            continue
        delivered = sorted(addr(r) for _, _, rcpts, _ in trans for r in rcpts)
        out(delivered == want, "%s envelope recipients: each cust1 recipient once" % tid,
            "got %r, want %r" % (delivered, want))
        if not trans:
            continue
        # One transaction per message, even with recipients in both of
        # cust1's requested domains (as smtp(8) sends one per destination).
        out(len(trans) == 1, "%s arrives as one transaction" % tid, "%d transactions" % len(trans))
        leaked = [addr(r) for _, _, rcpts, _ in trans for r in rcpts if not cust1(addr(r) or "")]
        if any(not cust1(r) for r in m["rcpts"]):
            out(not leaked, "%s cust2's recipient not sent to cust1" % tid, "%r" % leaked)
        sender = "" if m["sender"] == "<>" else m["sender"].lower()
        senders = sorted({addr(mail or "") for _, mail, _, _ in trans})
        out(senders == [sender], "%s envelope sender" % tid,
            "got %r, want %r" % (senders, [sender]))
        for p in m["params"]:
            bad = [mail for _, mail, _, _ in trans if p not in (mail or "").split()]
            out(not bad, "%s MAIL FROM carries %s" % (tid, p), "%r" % bad)
        # Every transaction carries the same content: compare each.
        heldf = os.path.join(work, tid + ".held")
        heldc = lf(open(heldf, "rb").read()) if os.path.exists(heldf) else None
        sentf = os.path.join(work, tid + ".sent")
        sent = lf(open(sentf, "rb").read()) if os.path.exists(sentf) else None
        for f, _, _, content in trans:
            if heldc is not None:
                out(content == heldc, "%s (%s) identical to the held copy" % (tid, f),
                    first_diff(heldc, content))
            if sent is not None:
                body = strip_first_header(content)
                out(body == sent,
                    "%s (%s) is what was sent, below Postfix's Received header" % (tid, f),
                    "no Received header on top" if body is None else first_diff(sent, body))
            top = content.split(b"\n", 2)[:2]
            out(len(top) == 2 and top[0].startswith(b"Received: from client.test")
                and b"by sandbox.odmr.test (Postfix)" in top[1],
                "%s (%s) has Postfix's Received header on top" % (tid, f), repr(top))


def first_diff(a, b):
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return "sizes %d/%d, first difference at byte %d: %r vs %r" % (
        len(a), len(b), n, a[max(0, n - 20):n + 20], b[max(0, n - 20):n + 20])


def after(work):
    meta = json.load(open(os.path.join(work, "manifest.json")))
    try:
        q = queue_list()
    except Exception as e:  # noqa: BLE001
        out(False, "odmr-queue list after", repr(e))
        return
    status = {}
    for qid, rcpts in q:
        for r, s in rcpts.items():
            status[r] = s
    for tid in sorted(meta):
        for r in meta[tid]["rcpts"]:
            r = r.lower()
            if cust1(r):
                out(status.get(r) in (None, "delivered"),
                    "%s: %s no longer queued" % (tid, r), "status %r" % status.get(r))
            else:
                out(status.get(r) == "queued", "%s: %s (cust2) still queued" % (tid, r),
                    "status %r" % status.get(r))
    left = [r for r, s in status.items() if s == "queued" and cust1(r)]
    out(not left, "no cust1 recipient left queued", "%r" % left)


def main(argv):
    if len(argv) < 2:
        print("usage: fetchmail_check.py inject|held|received|after WORKDIR [SINKDIR]")
        return 2
    cmd, work = argv[0], argv[1]
    if cmd == "inject":
        inject(work)
    elif cmd == "held":
        held(work)
    elif cmd == "received":
        received(work, argv[2])
    elif cmd == "after":
        after(work)
    else:
        print("fail usage: unknown command %s" % cmd)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
