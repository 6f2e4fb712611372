#!/usr/bin/python3
"""stats_check.py - the kept queue figures against a recount of the queue
files, through the sandbox (t_stats.sh).

    stats_check.py churn STEPS SEED
        Random steps: store (odmr-enqueue, 1-3 recipients over the
        sandbox's domains), flush (a scripted customer through the sandbox's
        real odmrd, with random 250/451/550 replies per recipient), delete,
        expire (odmr-queue expire --now +6d, now and then), and a store
        killed with SIGKILL at one of the queue's fault points. After each
        step the figures (odmr-queue stats --prometheus, and stats -d for
        one domain) must equal a recount of the files the index lists; a
        killed store leaves at most an unindexed orphan. At the end,
        reindex, and the figures must equal a recount of every file.

One "ok NAME" / "fail NAME: why" line per check (qlib.report)."""
import os
import random
import re
import subprocess
import sys

import qlib

DOMAINS = ["example.org", "example.net", "example.com"]
OWNER = {"example.org": "cust1", "example.net": "cust1", "example.com": "cust2"}
FAULTS = ["before-fsync", "after-fsync", "after-rename", "index-txn", "after-index"]
LINE_RE = re.compile(r'^(odmr_queue_\w+)\{domain="([^"]+)"\} (\d+)$')


def recount(env, indexed_only):
    """{domain: [messages, recipients, bytes]} and the orphan files."""
    idx = {d: qlib.indexed_ids(env, d) for d in DOMAINS} if indexed_only else None
    figs, orphans = {}, 0
    for path in qlib.queue_files(env):
        try:
            fields, rcpts, content = qlib.parse_queue_file(path)
        except (FileNotFoundError, ValueError):
            continue
        qid = fields["id"]
        per = {}
        for st, _notify, _orcpt, addr in rcpts:
            if st == "Q":
                d = addr.rsplit("@", 1)[1].lower()
                per[d] = per.get(d, 0) + 1
        orphan = False
        for d, n in per.items():
            if idx is not None and qid not in idx.get(d, set()):
                orphan = True
                continue
            f = figs.setdefault(d, [0, 0, 0])
            f[0] += 1
            f[1] += n
            f[2] += len(content)
        orphans += orphan
    return figs, orphans


def kept(env):
    out = qlib.odmr_queue(env, "stats", "--prometheus")
    figs = {}
    col = {"odmr_queue_messages": 0, "odmr_queue_recipients": 1, "odmr_queue_bytes": 2}
    for line in out.stdout.splitlines():
        m = LINE_RE.match(line)
        if m and m.group(1) in col:
            figs.setdefault(m.group(2), [0, 0, 0])[col[m.group(1)]] = int(m.group(3))
    return figs, out


def kept_one(env, domain):
    import json
    out = qlib.odmr_queue(env, "stats", "-d", domain, "--json")
    j = json.loads(out.stdout)
    return [j["messages"], j["recipients_queued"], j["bytes"]]


def compare(env, what, indexed_only=True):
    want, orphans = recount(env, indexed_only)
    got, out = kept(env)
    ok = want == got and out.returncode == 0
    d = random.choice(DOMAINS)
    one = kept_one(env, d)
    ok = ok and one == want.get(d, [0, 0, 0])
    qlib.report("figures = recount after %s" % what, ok,
                "kept %r (-d %s: %r), files %r, stderr %r" % (got, d, one, want, out.stderr))
    return orphans


def enqueue(env, rcpts, fault=""):
    args = [os.path.join(env["BUILD_DIR"], "bin", "odmr-enqueue"), "-c", env["CONFIG_DIR"]]
    if fault:
        args += ["-o", "test_fault_point=" + fault]
    args += ["-f", "sender@sender.test", "--"] + rcpts
    msg = b"Subject: churn\n\n" + b"x" * random.randint(1, 3000) + b"\n"
    return subprocess.run(args, input=msg, capture_output=True, timeout=60).returncode


def flush(env, domain):
    user = OWNER[domain]
    ids = qlib.indexed_ids(env, domain)
    replies = []
    for path in qlib.queue_files(env):
        if os.path.basename(path) not in ids:
            continue
        try:
            _f, rcpts, _c = qlib.parse_queue_file(path)
        except (FileNotFoundError, ValueError):
            continue
        for st, _n, _o, addr in rcpts:
            if st == "Q" and addr.lower().endswith("@" + domain):
                r = random.random()
                if r < 0.2:
                    replies += ["--rcpt-reply", addr + "=451 4.3.0 try again later"]
                elif r < 0.3:
                    replies += ["--rcpt-reply", addr + "=550 5.1.1 no such user"]
    args = ["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "odmr_customer.py"),
            "--host", os.environ["ODMR_HOST"], "--port", os.environ["ODMR_PORT"],
            "--timeout", "30", "--user", user,
            "--password", os.environ["ODMR_PASSWORD_" + user], "--domains", domain] + replies
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def churn(steps, seed):
    env = qlib.sandbox_env()
    env["ODMR_HOST"] = os.environ["ODMR_HOST"]
    random.seed(seed)
    compare(env, "start")
    for step in range(steps):
        r = random.random()
        if r < 0.4:
            rcpts = ["u%d@%s" % (i, random.choice(DOMAINS)) for i in range(random.randint(1, 3))]
            what = "store"
            if enqueue(env, rcpts) != 0:
                qlib.report("store %d" % step, False, "odmr-enqueue failed")
        elif r < 0.65:
            d = random.choice(DOMAINS)
            what = "flush of %s" % d
            flush(env, d)
        elif r < 0.75:
            what = "delete"
            ids = list(qlib.indexed_ids(env, random.choice(DOMAINS)))
            if ids:
                qlib.odmr_queue(env, "delete", random.choice(ids))
        elif r < 0.8:
            what = "expire"
            qlib.odmr_queue(env, "expire", "--now", "+6d")
        elif r < 0.85:
            what = "bounce"
            ids = list(qlib.indexed_ids(env, random.choice(DOMAINS)))
            if ids:
                qlib.odmr_queue(env, "bounce", random.choice(ids))
        else:
            fault = random.choice(FAULTS)
            what = "store killed at %s" % fault
            rc = enqueue(env, ["k@%s" % random.choice(DOMAINS)], fault)
            if rc not in (-9, 137):
                qlib.report("kill -9 at %s" % fault, False, "exit %d" % rc)
        orphans = compare(env, "step %d (%s)" % (step, what))
        if orphans and not what.startswith("store killed"):
            pass  # left by an earlier kill; reindex puts it back
    out = qlib.odmr_queue(env, "reindex")
    qlib.report("reindex", out.returncode == 0, out.stderr)
    orphans = compare(env, "reindex (every file)", indexed_only=False)
    _w, orphans = recount(env, True)
    qlib.report("no orphans after reindex", orphans == 0, "%d" % orphans)


def main():
    if sys.argv[1] == "churn":
        churn(int(sys.argv[2]), int(sys.argv[3]))
    return 0 if all(qlib.results) else 1


if __name__ == "__main__":
    sys.exit(main())
