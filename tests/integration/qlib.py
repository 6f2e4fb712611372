"""Shared helpers for the Python parts of the integration tests: read the
sandbox's variables, talk SMTP to it, read the hold queue's files, ask
odmr-queue what is indexed.

Only the standard library of Debian's /usr/bin/python3."""
import glob
import os
import re
import smtplib
import subprocess
import time

ID_RE = re.compile(r"\b[0-9A-F]{18}\b")

results = []


def report(name, ok, why=""):
    results.append(bool(ok))
    print(("ok %s" % name) if ok else ("fail %s: %s" % (name, why)), flush=True)
    return ok


def sandbox_env():
    """The variables of scripts/odmr-sandbox env, from the environment."""
    need = ["SMTP_PORT", "QUEUE_DIR", "CONFIG_DIR", "BUILD_DIR", "ODMR_LOG_FILE", "LOG_FILE"]
    env = {k: os.environ[k] for k in need}
    env["SMTP_PORT"] = int(env["SMTP_PORT"])
    return env


def smtp_send(env, sender, rcpts, msg_bytes, mail_options=(), rcpt_options=()):
    """Send msg_bytes (CRLF lines) and return the refused-recipients dict."""
    with smtplib.SMTP("127.0.0.1", env["SMTP_PORT"], local_hostname="client.test",
                      timeout=30) as s:
        s.ehlo("client.test")
        return s.sendmail(sender, rcpts, msg_bytes, mail_options=list(mail_options),
                          rcpt_options=list(rcpt_options))


def postfix_queue_empty(env):
    out = subprocess.run(["postqueue", "-c", env["CONFIG_DIR"], "-p"], capture_output=True,
                         text=True).stdout
    return out.startswith("Mail queue is empty")


def wait_until(fn, timeout=60, step=0.1):
    end = time.time() + timeout
    while time.time() < end:
        if fn():
            return True
        time.sleep(step)
    return fn()


def queue_files(env):
    return sorted(glob.glob(os.path.join(env["QUEUE_DIR"], "msg", "*", "*")))


def parse_queue_file(path):
    """(fields dict, list of (status, notify, orcpt, addr), content bytes)."""
    data = open(path, "rb").read()
    head, _, _ = data.partition(b"\n\n")
    fields, rcpts = {}, []
    lines = head.split(b"\n")
    if lines[0] != b"ODMRQ 1":
        raise ValueError("%s: bad magic %r" % (path, lines[0]))
    for line in lines[1:]:
        k, _, v = line.partition(b" ")
        if k == b"rcpt":
            st, notify, orcpt, addr = v.decode("utf-8").split(" ", 3)
            rcpts.append((st, notify, orcpt, addr))
        else:
            fields[k.decode()] = v.decode("utf-8")
    off, length = (int(x) for x in fields["content"].split())
    content = data[off:off + length]
    if len(data) != off + length:
        raise ValueError("%s: size %d != %d + %d" % (path, len(data), off, length))
    return fields, rcpts, content


def unstuff(wire):
    """SMTP wire form (ending CRLF . CRLF) back to the message bytes."""
    assert wire.endswith(b".\r\n"), wire[-10:]
    body = wire[:-3]
    out = []
    for line in body.split(b"\r\n"):
        out.append(line[1:] if line.startswith(b".") else line)
    return b"\r\n".join(out)


def find_by_subject(env, subject):
    """Queue files whose content has this Subject: line."""
    needle = b"\r\nSubject: " + subject.encode() + b"\r\n"
    hits = []
    for p in queue_files(env):
        try:
            if needle in open(p, "rb").read():
                hits.append(p)
        except FileNotFoundError:
            pass
    return hits


def odmr_queue(env, *args):
    # Never the test_fault_point a fault test set for odmr-store.
    return subprocess.run([os.path.join(env["BUILD_DIR"], "bin", "odmr-queue"), "-c",
                           env["CONFIG_DIR"], "-o", "test_fault_point="] + list(args),
                          capture_output=True, text=True, timeout=120)


def indexed_ids(env, domain):
    out = odmr_queue(env, "list", domain)
    return set(ID_RE.findall(out.stdout))


def make_message(subject, body, extra_headers=b""):
    msgid = "<%s.%d@client.test>" % (re.sub(r"[^A-Za-z0-9]", "", subject), time.time_ns())
    return (b"From: sender@sender.test\r\nTo: someone@example.org\r\n"
            b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
            b"Message-ID: " + msgid.encode() + b"\r\n" + extra_headers +
            b"Subject: " + subject.encode() + b"\r\n\r\n" + body)
