"""Check DSNs written by src/lib/dsn.c, field by field, with Python's email
package, against the inputs that made them (the NAME.json files that
`test_dsn --emit DIR` writes beside each NAME.eml).

Usage:
    dsn_check.py emit DIR                 every DIR/NAME.eml as written
    dsn_check.py maildir DIR MAILDIR      the notices of DIR as they arrived
                                          in a Maildir through the sandbox
    dsn_check.py held DIR QUEUE_DIR NAME... the notices of DIR held in the
                                          odmr hold queue (null sender)

Prints "ok NAME" / "fail NAME: REASON" lines (lib.sh's py_checks)."""
import email
import email.utils
import glob
import json
import os
import re
import sys

SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "expired": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "relayed": "Successful Mail Delivery Report",
}
ACTIONS = {"failed": "failed", "expired": "failed", "delayed": "delayed",
           "relayed": "relayed"}
DEFAULT_STATUS = {"failed": "5.0.0", "expired": "4.4.7", "delayed": "4.0.0",
                  "relayed": "2.0.0"}


class Checker:
    def __init__(self, prefix):
        self.prefix = prefix
        self.failed = 0

    def eq(self, name, got, want):
        if got == want:
            print("ok %s: %s" % (self.prefix, name))
        else:
            self.failed += 1
            print("fail %s: %s: got %r, want %r" % (self.prefix, name, got, want))

    def true(self, name, cond, why=""):
        if cond:
            print("ok %s: %s" % (self.prefix, name))
        else:
            self.failed += 1
            print("fail %s: %s: %s" % (self.prefix, name, why or "false"))


def unfold(v):
    return None if v is None else re.sub(r"\r?\n(?=[ \t])", "", str(v))


def xtext_decode(s):
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def date_of(v):
    return int(email.utils.parsedate_to_datetime(unfold(v)).timestamp())


def has_8bit(s):
    return any(ord(ch) > 127 for ch in s)


def ds_blocks(part, raw_body):
    """The field blocks of a delivery-status part: as the email package
    splits message/delivery-status; message/global-delivery-status (which
    it does not know) from the raw part body."""
    payload = part.get_payload()
    if part.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        return payload
    return [email.message_from_string(b) for b in re.split(r"\n[ \t]*\n", raw_body.strip())]


def check_notice(c, text, inp, extra_top=0):
    """text: the notice (str, LF lines) as it was written or as it arrived."""
    ev = inp["event"]
    msg = email.message_from_string(text)
    c.eq("no parse defects", [str(d) for d in msg.defects], [])

    # Top-level header.
    c.eq("From", email.utils.parseaddr(msg["From"]),
         ("Mail Delivery System", "MAILER-DAEMON@" + inp["myhostname"]))
    c.eq("To", email.utils.parseaddr(msg["To"])[1], inp["sender"])
    c.eq("Subject", msg["Subject"], SUBJECTS[ev])
    c.eq("Date", date_of(msg["Date"]), inp["now"])
    c.eq("Message-Id", msg["Message-Id"], "<%s>" % inp["message_id"])
    c.eq("Auto-Submitted", msg["Auto-Submitted"], "auto-replied")
    c.eq("MIME-Version", msg["MIME-Version"], "1.0")
    c.eq("Content-Type", msg.get_content_type(), "multipart/report")
    c.eq("report-type", msg.get_param("report-type"), "delivery-status")
    c.eq("Content-Transfer-Encoding", msg["Content-Transfer-Encoding"],
         "8bit" if has_8bit(text) else "7bit")
    boundary = msg.get_boundary()
    c.true("boundary is 1..70 characters", boundary and 1 <= len(boundary) <= 70)
    parts = msg.get_payload()
    content = inp["content"]
    full = (ev in ("failed", "expired") and (inp["ret"] or "").upper() != "HDRS"
            and len(content.encode("utf-8")) <= inp["limit"])
    c.eq("number of parts", len(parts), 3)
    starts = [ln for ln in text.split("\n") if ln.startswith("--" + boundary)]
    c.eq("boundary starts only the delimiter lines", len(starts), len(parts) + 1)
    if len(parts) != 3:
        return

    # Part 1: readable text.
    p1 = parts[0]
    c.eq("part 1 type", p1.get_content_type(), "text/plain")
    body1 = p1.get_payload()
    c.eq("part 1 charset", p1.get_content_charset(), "utf-8" if has_8bit(body1) else "us-ascii")
    flat1 = " ".join(body1.split())
    c.true("part 1 names the host", "at host %s." % inp["myhostname"] in body1)
    for r in inp["rcpts"]:
        if r["text"]:
            want = r["text"]
        elif r["diag"] and r["remote_mta"]:
            want = "host %s said: %s" % (r["remote_mta"], r["diag"])
        elif r["diag"]:
            want = r["diag"]
        else:
            want = ""
        c.true("part 1 quotes the reply for <%s>" % r["address"],
               ("<%s>: %s" % (r["address"], " ".join(want.split()))).strip() in flat1,
               "not in: " + flat1[-300:])

    # Part 2: delivery status.
    p2 = parts[1]
    c.eq("part 2 type", p2.get_content_type(),
         "message/global-delivery-status" if inp["smtputf8"] else "message/delivery-status")
    blocks = ds_blocks(p2, text.split("\n--" + boundary)[2].split("\n\n", 1)[1])
    c.eq("part 2 blocks", len(blocks), 1 + len(inp["rcpts"]))
    m = blocks[0]
    c.eq("Reporting-MTA", m["Reporting-MTA"], "dns; " + inp["myhostname"])
    c.eq("X-Odmr-Queue-ID", m["X-Odmr-Queue-ID"], inp["queue_id"])
    sender_type = "utf-8" if inp["smtputf8"] and has_8bit(inp["sender"]) else "rfc822"
    c.eq("X-Odmr-Sender", m["X-Odmr-Sender"], "%s; %s" % (sender_type, inp["sender"]))
    c.eq("Arrival-Date", date_of(m["Arrival-Date"]), inp["arrival"])
    envid = xtext_decode(inp["envid_xtext"]) if inp["envid_xtext"] else None
    c.eq("Original-Envelope-Id", unfold(m["Original-Envelope-Id"]), envid)
    for r, b in zip(inp["rcpts"], blocks[1:]):
        a = "<%s> " % r["address"]
        ftype = "utf-8" if inp["smtputf8"] and has_8bit(r["address"]) else "rfc822"
        c.eq(a + "Final-Recipient", b["Final-Recipient"], "%s; %s" % (ftype, r["address"]))
        orcpt = r["orcpt"]
        if orcpt and ";" not in orcpt:
            orcpt = "rfc822;" + orcpt
        c.eq(a + "Original-Recipient", b["Original-Recipient"], orcpt)
        c.eq(a + "Action", b["Action"], ACTIONS[ev])
        c.eq(a + "Status", b["Status"], r["status"] or DEFAULT_STATUS[ev])
        c.eq(a + "Remote-MTA", unfold(b["Remote-MTA"]),
             "dns; " + r["remote_mta"] if r["remote_mta"] else None)
        diag = unfold(b["Diagnostic-Code"])
        if r["diag"]:
            c.eq(a + "Diagnostic-Code", diag, "smtp; " + r["diag"])
        else:
            c.true(a + "Diagnostic-Code", diag and diag.startswith("X-Odmr; "), repr(diag))
        c.eq(a + "Last-Attempt-Date",
             date_of(b["Last-Attempt-Date"]) if b["Last-Attempt-Date"] else None,
             r["last_attempt"] or None)
        c.eq(a + "Will-Retry-Until",
             date_of(b["Will-Retry-Until"]) if b["Will-Retry-Until"] else None,
             inp["will_retry_until"] if ev == "delayed" else None)

    # Part 3: the message or its headers.
    p3 = parts[2]
    if inp["smtputf8"]:
        want_type = "message/global" if full else "message/global-headers"
    else:
        want_type = "message/rfc822" if full else "text/rfc822-headers"
    c.eq("part 3 type", p3.get_content_type(), want_type)
    raw3 = text.split("\n--" + boundary)[3]
    body3 = raw3.split("\n\n", 1)[1]
    end = content.find("\n\n")
    headers = content[:end + 1] if end >= 0 else ""
    if re.match(r"[^\s:]+:", content) is None:
        headers = ""
    c.eq("part 3 returns %s" % ("the message" if full else "the headers"), body3,
         "Return-Path: <%s>\n" % inp["sender"] + (content if full else headers))
    if full and not inp["smtputf8"]:
        inner = p3.get_payload()[0]
        subj = re.search(r"^Subject: (.*)$", content, re.M)
        c.eq("part 3 parses as a message", inner["Subject"], subj.group(1) if subj else None)


def load_inputs(d):
    out = {}
    for path in sorted(glob.glob(os.path.join(d, "*.json"))):
        with open(path, encoding="utf-8") as f:
            inp = json.load(f)
        out[inp["name"]] = inp
    return out


def unstuff(wire):
    """SMTP wire form (CRLF, dot-stuffed, ending .CRLF) -> message (LF)."""
    assert wire.endswith(b".\r\n")
    wire = wire[:-3]
    lines = wire.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = [ln[1:] if ln.startswith(b".") else ln for ln in lines]
    return b"\n".join(out) + b"\n"


def main(argv):
    mode = argv[1]
    inputs = load_inputs(argv[2])
    if mode == "emit":
        for name, inp in inputs.items():
            with open(os.path.join(argv[2], name + ".eml"), "rb") as f:
                data = f.read()
            c = Checker(name)
            c.true("LF line ends only", b"\r" not in data)
            check_notice(c, data.decode("utf-8"), inp)
    elif mode == "maildir":
        found = {}
        for path in glob.glob(os.path.join(argv[3], "new", "*")) + \
                glob.glob(os.path.join(argv[3], "cur", "*")):
            with open(path, "rb") as f:
                data = f.read()
            msg = email.message_from_bytes(data)
            mid = (msg["Message-Id"] or "").strip("<>")
            found[mid] = data
        for name, inp in inputs.items():
            c = Checker("arrived " + name)
            data = found.get(inp["message_id"])
            c.true("in the Maildir", data is not None, "no message " + inp["message_id"])
            if data is None:
                continue
            text = data.decode("utf-8").replace("\r\n", "\n")
            msg = email.message_from_string(text)
            c.eq("Return-Path (null envelope sender)", msg["Return-Path"], "<>")
            check_notice(c, text, inp)
    elif mode == "held":
        qdir, names = argv[3], argv[4:]
        files = {}
        for path in glob.glob(os.path.join(qdir, "msg", "*", "*")):
            with open(path, "rb") as f:
                data = f.read()
            m = re.search(rb"^content (\d+) (\d+)\n", data, re.M)
            if not m:
                continue
            off, length = int(m.group(1)), int(m.group(2))
            message = unstuff(data[off:off + length])
            mid = (email.message_from_bytes(message)["Message-Id"] or "").strip("<>")
            files[mid] = (data[:off], message)
        for name in names:
            inp = inputs[name]
            c = Checker("held " + name)
            got = files.get(inp["message_id"])
            c.true("in the hold queue", got is not None, "no queue file for " + name)
            if got is None:
                continue
            header, message = got
            c.true("envelope sender is <>", re.search(rb"^sender \n", header, re.M) is not None,
                   header.decode(errors="replace")[:300])
            c.true("recipient is the original sender",
                   re.search(rb"^rcpt Q .* " + re.escape(inp["sender"].encode()) + rb"\n",
                             header, re.M) is not None,
                   header.decode(errors="replace")[:300])
            check_notice(c, message.decode("utf-8"), inp)
    else:
        print("fail usage: unknown mode " + mode)


main(sys.argv)
