#!/usr/bin/python3
"""Mail into the sandbox's Postfix is held in the hold queue, per domain,
with its envelope and content intact (t_hold.sh runs this in a sandbox).

Checks: two held domains, a multi-recipient and a multi-domain message (one
queue file, indexed under every domain), DSN parameters (ENVID, RET,
NOTIFY, ORCPT) carried through Postfix's lmtp(8), 8-bit and SMTPUTF8
content, the content byte for byte (what the client sent, after the
Received: header Postfix prepends), odmr-queue's views, and a load of
smtp-source messages for two domains."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qlib import (report, results, sandbox_env, smtp_send, wait_until, postfix_queue_empty,
                  find_by_subject, parse_queue_file, unstuff, indexed_ids, odmr_queue,
                  make_message, queue_files)

env = sandbox_env()


def held(subject, count=1, timeout=60):
    ok = wait_until(lambda: len(find_by_subject(env, subject)) >= count and
                    postfix_queue_empty(env), timeout)
    return find_by_subject(env, subject) if ok else []


def check_content(name, path, sent):
    fields, rcpts, wire = parse_queue_file(path)
    msg = unstuff(wire)
    # Postfix prepends its Received: header; everything after is ours.
    ok = msg.endswith(sent) and msg.startswith(b"Received: ")
    report(name, ok, "stored %r... does not end with what was sent" % msg[:200])
    return fields, rcpts


def test_single_domains():
    for dom in ("example.org", "example.com"):
        subj = "single-" + dom
        body = b"Hello " + dom.encode() + b"\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"
        sent = make_message(subj, body)
        refused = smtp_send(env, "sender@sender.test", ["rcpt@" + dom], sent)
        paths = held(subj)
        if not report("held-" + dom, len(paths) == 1 and not refused, repr((paths, refused))):
            continue
        fields, rcpts = check_content("content-exact-" + dom, paths[0], sent)
        report("envelope-" + dom, fields["sender"] == "sender@sender.test"
               and [r[3] for r in rcpts] == ["rcpt@" + dom] and rcpts[0][0] == "Q",
               repr((fields, rcpts)))
        qid = os.path.basename(paths[0])
        report("indexed-" + dom, qid in indexed_ids(env, dom), qid)


def test_multi_domain():
    subj = "multi-domain"
    sent = make_message(subj, b"to three domains and two users\r\n")
    rcpts = ["a1@example.org", "a2@example.org", "b1@example.com", "c1@example.net"]
    smtp_send(env, "sender@sender.test", rcpts, sent)
    paths = held(subj)
    if not report("multi-domain-held", len(paths) >= 1, repr(paths)):
        return
    stored = []
    for p in paths:
        stored += [r[3] for r in parse_queue_file(p)[1]]
    report("multi-domain-all-recipients", sorted(stored) == sorted(rcpts), repr(stored))
    report("multi-domain-one-file", len(paths) == 1, "%d files" % len(paths))
    ids = {os.path.basename(p) for p in paths}
    for dom in ("example.org", "example.com", "example.net"):
        report("multi-domain-indexed-" + dom, ids & indexed_ids(env, dom), repr(ids))
    check_content("multi-domain-content", paths[0], sent)


def test_dsn_params():
    subj = "dsn-params"
    sent = make_message(subj, b"dsn\r\n")
    smtp_send(env, "sender@sender.test", ["d1@example.org", "d2@example.org"], sent,
              mail_options=["RET=HDRS", "ENVID=env+2Bid42"],
              rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;orig+2Bd@example.org"])
    paths = held(subj)
    if not report("dsn-held", len(paths) == 1, repr(paths)):
        return
    fields, rcpts, _ = parse_queue_file(paths[0])
    report("dsn-envid", fields.get("envid") == "env+2Bid42", repr(fields))
    report("dsn-ret", fields.get("ret") == "HDRS", repr(fields))
    report("dsn-notify", all(r[1] == "SUCCESS,FAILURE" for r in rcpts), repr(rcpts))
    report("dsn-orcpt", all(r[2] == "rfc822;orig+2Bd@example.org" for r in rcpts), repr(rcpts))


def test_8bit_and_smtputf8():
    subj = "eight-bit"
    body = "Grüße aus Köln, 8-bit body\r\n".encode("utf-8")
    sent = make_message(subj, body, b"Content-Type: text/plain; charset=utf-8\r\n"
                                    b"Content-Transfer-Encoding: 8bit\r\n")
    smtp_send(env, "sender@sender.test", ["e8@example.org"], sent, mail_options=["BODY=8BITMIME"])
    paths = held(subj)
    if report("8bit-held", len(paths) == 1, repr(paths)):
        fields, _ = check_content("8bit-content-exact", paths[0], sent)
        report("8bit-body-param", fields.get("body") == "8BITMIME", repr(fields))

    subj = "smtputf8"
    sent = make_message(subj, "Unicode everywhere: 日本語\r\n".encode("utf-8"),
                        "X-Note: ü\r\n".encode("utf-8"))
    rcpt = "jürgen@example.org"
    smtp_send(env, "sénder@sender.test", [rcpt], sent, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    paths = held(subj)
    if report("smtputf8-held", len(paths) == 1, repr(paths)):
        fields, rcpts = check_content("smtputf8-content-exact", paths[0], sent)
        report("smtputf8-flag", fields.get("smtputf8") == "1", repr(fields))
        report("smtputf8-addresses", rcpts[0][3] == rcpt and fields["sender"] == "sénder@sender.test",
               repr((fields, rcpts)))


def test_smtp_source_load():
    before = {d: len(indexed_ids(env, d)) for d in ("example.org", "example.com")}
    for dom in ("example.org", "example.com"):
        subprocess.run(["smtp-source", "-c", "-m", "50", "-s", "5", "-l", "4096", "-f",
                        "load@sender.test", "-t", "load@" + dom,
                        "127.0.0.1:%d" % env["SMTP_PORT"]], check=True, capture_output=True)
    wait_until(lambda: postfix_queue_empty(env), 120)
    after = {d: len(indexed_ids(env, d)) for d in ("example.org", "example.com")}
    for d in after:
        report("smtp-source-50-" + d, after[d] - before[d] == 50, "%d -> %d" % (before[d], after[d]))
    out = odmr_queue(env, "summary")
    report("summary-lists-domains", out.returncode == 0 and "example.org" in out.stdout
           and "example.com" in out.stdout, out.stdout + out.stderr)
    out = odmr_queue(env, "stats", "--json")
    try:
        import json
        stats = json.loads(out.stdout)
        report("stats-json", out.returncode == 0 and isinstance(stats, dict), out.stdout)
    except ValueError as e:
        report("stats-json", False, "%s: %r" % (e, out.stdout))
    # Every file in the queue is well formed.
    bad = []
    for p in queue_files(env):
        try:
            parse_queue_file(p)
        except Exception as e:
            bad.append((p, e))
    report("all-files-well-formed", not bad, repr(bad[:3]))


for t in (test_single_domains, test_multi_domain, test_dsn_params, test_8bit_and_smtputf8,
          test_smtp_source_load):
    try:
        t()
    except Exception as e:
        report(t.__name__, False, "exception %r" % (e,))
sys.exit(0 if all(results) else 1)
