#!/usr/bin/python3
"""fetch_check.py - messages and checks for t_fetch.sh (odmr-fetch).

    fetch_check.py inject WORKDIR TAG     send the test messages into the
                                          sandbox's Postfix (smtplib); TAG
                                          goes into every X-Test-Id
    fetch_check.py held WORKDIR           save the held content of every
                                          message (odmr-queue show) by X-Test-Id
    fetch_check.py received WORKDIR SINKDIR TAG
                                          every transaction fetch_sink.py
                                          recorded is a held message of TAG,
                                          byte for byte in wire form, and
                                          cust1's recipients of TAG's messages
                                          arrived once each

Each message carries "X-Test-Id: TAG-mN". Prints "ok NAME" / "fail NAME:
REASON" lines for lib.sh's py_checks. Uses SMTP_HOST, SMTP_PORT,
CONFIG_DIR, BUILD_DIR from the environment.
"""
import json
import os
import re
import smtplib
import subprocess
import sys

CUST1 = ("example.org", "example.net")


def out(cond, name, why):
    print("ok %s" % name if cond else "fail %s: %s" % (name, why))
    sys.stdout.flush()


def messages(tag):
    """id -> (sender, rcpts, bytes with CRLF, mail options)."""
    dots = (b".starts with a dot\r\n..two dots\r\n.\r\n"
            b"a lone dot above\r\n...\r\n. space after dot\r\n")
    eight = "8-bit: gr\u00fc\u00dfe, \u00e9t\u00e9, \u65e5\u672c\r\n".encode("utf-8")
    big = b"".join(b"line %06d %s\r\n" % (i, b"y" * 70) for i in range(3000))
    spaces = b"trailing spaces   \r\n\ttab start\r\n\r\n\r\nblank lines above\r\n"

    def m(n, to, body, subject):
        head = ("From: <s@sender.test>\r\nTo: %s\r\nSubject: %s\r\n"
                "Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n"
                "Message-Id: <%s-m%d@sender.test>\r\nX-Test-Id: %s-m%d\r\n"
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\n"
                % (", ".join(to), subject, tag, n, tag, n)).encode()
        return head + body

    return {
        "%s-m1" % tag: ("s@sender.test", ["alice@example.org", "dave@example.net"],
                        m(1, ["alice@example.org", "dave@example.net"], dots + eight, "dots"),
                        ["BODY=8BITMIME"]),
        "%s-m2" % tag: ("", ["bob@example.org"], m(2, ["bob@example.org"], big, "big"), []),
        "%s-m3" % tag: ("s@sender.test", ["carol@example.net", "eve@example.com"],
                        m(3, ["carol@example.net", "eve@example.com"], spaces, "mixed"), []),
        "%s-m4" % tag: ("s@sender.test", ["henry@example.com"],
                        m(4, ["henry@example.com"], b"cust2 only\r\n", "cust2"), []),
    }


def inject(work, tag):
    os.makedirs(work, exist_ok=True)
    meta = {}
    for tid, (sender, rcpts, data, opts) in messages(tag).items():
        try:
            s = smtplib.SMTP(os.environ["SMTP_HOST"], int(os.environ["SMTP_PORT"]), timeout=30)
            s.ehlo("client.test")
            s.sendmail(sender, rcpts, data, mail_options=opts)
            s.quit()
            out(True, "%s accepted by Postfix" % tid, "")
        except Exception as e:  # noqa: BLE001
            out(False, "%s accepted by Postfix" % tid, repr(e))
        meta[tid] = {"sender": sender, "rcpts": rcpts}
    path = os.path.join(work, "manifest-%s.json" % tag)
    with open(path, "w") as f:
        json.dump(meta, f)


def odmr_queue(*args):
    cmd = [os.path.join(os.environ["BUILD_DIR"], "bin", "odmr-queue"),
           "-c", os.environ["CONFIG_DIR"]] + list(args)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False).stdout


def held(work):
    d = os.path.join(work, "held")
    os.makedirs(d, exist_ok=True)
    n = 0
    for line in odmr_queue("list").decode("utf-8", "replace").splitlines():
        mo = re.match(r"^([0-9A-F]{18})\s", line)
        if not mo:
            continue
        show = odmr_queue("show", mo.group(1))
        head, _, content = show.partition(b"\n\n")
        tid = re.search(rb"^X-Test-Id: (\S+)\r$", content, re.M)
        if tid is None:
            continue
        with open(os.path.join(d, tid.group(1).decode()), "wb") as f:
            f.write(content)
        n += 1
    out(n > 0, "held copies saved", "no message in odmr-queue list")


def addr(rcpt_line):
    mo = re.search(r"<([^>]*)>", rcpt_line)
    return mo.group(1).lower() if mo else None


def received(work, sinkdir, tag):
    meta = json.load(open(os.path.join(work, "manifest-%s.json" % tag)))
    got = {}
    names = sorted(f for f in os.listdir(sinkdir) if f.endswith(".data"))
    for f in names:
        data = open(os.path.join(sinkdir, f), "rb").read()
        env = json.load(open(os.path.join(sinkdir, f[:-5] + ".json")))
        mo = re.search(rb"^X-Test-Id: (\S+)\r$", data, re.M)
        tid = mo.group(1).decode() if mo else "?"
        if not tid.startswith(tag + "-"):
            continue
        got.setdefault(tid, []).append((f, data, env))
    out(len(got) > 0, "%s: the local MTA recorded transactions" % tag, "none in %s" % sinkdir)
    for tid in sorted(meta):
        want = sorted(r.lower() for r in meta[tid]["rcpts"] if r.split("@")[1] in CUST1)
        trans = got.get(tid, [])
        if not want:
            out(not trans, "%s (cust2 only) not delivered" % tid, "%d copies" % len(trans))
            continue
        rcpts = sorted(addr(r) for _, _, env in trans for r in env["rcpts"]
                       if env["replies"] and all(x.startswith("2") for x in env["replies"]))
        out(rcpts == want, "%s: each of cust1's recipients once" % tid,
            "got %r, want %r" % (rcpts, want))
        heldpath = os.path.join(work, "held", tid)
        if not os.path.exists(heldpath):
            out(False, "%s: held copy" % tid, "missing")
            continue
        held_bytes = open(heldpath, "rb").read()
        for f, data, _ in trans:
            same = data + b".\r\n" == held_bytes
            why = ""
            if not same:
                i = next((k for k in range(min(len(data), len(held_bytes)))
                          if data[k] != held_bytes[k]), min(len(data), len(held_bytes)))
                why = "%s differs at byte %d: got %r, held %r" % (
                    f, i, data[i:i + 40], held_bytes[i:i + 40])
            out(same, "%s: %s byte-exact (%d bytes, dot-stuffed wire form)" % (tid, f, len(data)),
                why)


def main():
    cmd = sys.argv[1]
    if cmd == "inject":
        inject(sys.argv[2], sys.argv[3])
    elif cmd == "held":
        held(sys.argv[2])
    elif cmd == "received":
        received(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        print("fail usage: unknown command %s" % cmd)


if __name__ == "__main__":
    main()
