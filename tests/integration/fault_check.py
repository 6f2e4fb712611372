#!/usr/bin/python3
"""Fault injection: odmr-store is killed with SIGKILL at chosen points of
storing a message that the sandbox's Postfix delivers to it (the
test_fault_point parameter in odmr.cf). Afterwards:
  - nothing is half-visible: before the rename no queue file exists; after
    the rename but before the index commit the file is not indexed (ATRN
    cannot see it); after the index commit it is complete and indexed;
  - Postfix got no 250, so it keeps the message and delivers it again once
    the fault is gone: the message is then held, complete and indexed
    (a kill after the index commit may leave a duplicate, never a loss);
  - odmr-queue expire's orphan recovery indexes what a writer killed
    after the link into msg/ left unindexed, from its incoming/ entry
    alone, and removes what was never complete; after a reboot (a new
    boot ID) it checks every file once;
  - odmr-queue reindex finds no damaged file.
"""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qlib import (report, results, sandbox_env, smtp_send, wait_until, postfix_queue_empty,
                  find_by_subject, parse_queue_file, unstuff, indexed_ids, odmr_queue,
                  make_message, queue_files)

env = sandbox_env()
CF = os.path.join(env["CONFIG_DIR"], "odmr.cf")
BASE_CF = open(CF).read()

# point -> is the file in msg/ and indexed while Postfix still holds the message?
POINTS = [
    ("before-commit", False, False),
    ("before-fsync", False, False),
    ("after-fsync", False, False),
    ("after-rename", True, False),
    ("after-index", True, True),
    ("before-reply", True, True),
    # The open path: killed holding the open lock (the next opener must not
    # wait for it), and inside the index transaction holding its write
    # locks (failchk aborts it; the next writer is not blocked).
    ("open-locked", False, False),
    ("index-txn", True, False),
    # Committed (the commit record written to the log file, not synced),
    # killed before the log flush: the entry survives the process (a power
    # failure is what the flush is for), Postfix got no 250 and delivers
    # again, so a duplicate is possible, never a loss.
    ("log-flush", True, True),
]


def set_fault(point):
    with open(CF, "w") as f:
        f.write(BASE_CF)
        if point:
            f.write("test_fault_point = %s\n" % point)
    # A cached lmtp connection keeps the old odmr-store (and its config)
    # for lmtp_connection_cache_time_limit (2s).
    time.sleep(2.5)


def postfix_deferred_count():
    out = subprocess.run(["postqueue", "-c", env["CONFIG_DIR"], "-j"], capture_output=True,
                         text=True).stdout
    return len(re.findall(r'"queue_name": *"deferred"', out))


def killed_logged(count_before):
    log = open(env["LOG_FILE"], errors="replace").read()
    return len(re.findall(r"relay=\S+private/odmr-store\].*status=deferred", log)) > count_before


def deferred_lines():
    log = open(env["LOG_FILE"], errors="replace").read()
    return len(re.findall(r"relay=\S+private/odmr-store\].*status=deferred", log))


def run_point(point, visible, indexed):
    subj = "fault-" + point
    sent = make_message(subj, ("killed at %s\r\n" % point).encode())
    set_fault(point)
    n = deferred_lines()
    smtp_send(env, "sender@sender.test", ["f@example.org"], sent)
    if not report(point + ": deferred by Postfix", wait_until(lambda: killed_logged(n), 60),
                  "no deferral logged"):
        return
    paths = find_by_subject(env, subj)
    ids = {os.path.basename(p) for p in paths}
    idx = indexed_ids(env, "example.org")
    report(point + ": visibility", (len(paths) == 1) == visible and bool(ids & idx) == indexed,
           "files=%r indexed=%r" % (paths, ids & idx))
    for p in paths:
        try:
            parse_queue_file(p)
            ok = True
        except Exception as e:
            ok = False
            why = repr(e)
        report(point + ": renamed file is complete", ok, why if not ok else "")
    report(point + ": still in Postfix's queue", postfix_deferred_count() >= 1, "")

    # The fault is gone: Postfix delivers again.
    set_fault(None)
    subprocess.run(["postqueue", "-c", env["CONFIG_DIR"], "-f"], check=True)
    if not report(point + ": redelivered", wait_until(lambda: postfix_queue_empty(env), 90),
                  "Postfix queue not empty"):
        return
    paths = find_by_subject(env, subj)
    ids = {os.path.basename(p) for p in paths}
    idx = indexed_ids(env, "example.org")
    good = [p for p in paths if os.path.basename(p) in idx]
    report(point + ": held and indexed after redelivery", len(good) >= 1, repr(paths))
    if good:
        _, rcpts, wire = parse_queue_file(good[0])
        report(point + ": content intact", unstuff(wire).endswith(sent)
               and [r[3] for r in rcpts] == ["f@example.org"], "")
    if not visible:
        report(point + ": exactly one copy", len(paths) == 1, repr(paths))


def incoming_files():
    return sorted(os.listdir(os.path.join(env["QUEUE_DIR"], "incoming")))


def unindexed():
    idx = indexed_ids(env, "example.org")
    return {os.path.basename(p) for p in queue_files(env)} - idx


def check_recovery():
    """The orphans the kill points left: recovered by expire from incoming/."""
    orphans = unindexed()
    report("kill points left orphans in msg/", len(orphans) >= 1, repr(orphans))
    report("... each with its incoming/ entry", orphans <= set(incoming_files()),
           "orphans=%r incoming=%r" % (orphans, incoming_files()))
    # Younger than QUEUE_RECOVER_AGE: left alone (a writer may be starting).
    out = odmr_queue(env, "expire")
    report("expire leaves young incoming files alone", out.returncode == 0
           and unindexed() == orphans, out.stdout + out.stderr)
    out = odmr_queue(env, "expire", "--now", "+2m")
    m = re.search(r"recovered (\d+) orphaned message", out.stdout)
    # Writers killed after the index commit left incoming/ entries too:
    # their files are indexed again, harmlessly, and counted.
    report("expire recovers the orphans", out.returncode == 0 and m is not None
           and int(m.group(1)) >= len(orphans), out.stdout + out.stderr)
    report("every file in msg/ is indexed after expire", not unindexed(), repr(unindexed()))
    report("incoming/ is empty after expire", incoming_files() == [], repr(incoming_files()))
    log = open(env["ODMR_LOG_FILE"], errors="replace").read()
    report("recovery logged per message", all(
        "%s: recovered: its writer died before the index commit" % i in log for i in orphans),
        "")


def check_boot_scan():
    """A system crash may lose the incoming/ entry: once per boot, all of msg/."""
    set_fault("after-rename")
    subj = "fault-boot"
    n = deferred_lines()
    smtp_send(env, "sender@sender.test", ["f@example.org"], make_message(subj, b"boot\r\n"))
    report("boot: killed after the link", wait_until(lambda: killed_logged(n), 60), "")
    set_fault(None)
    orphans = unindexed()
    for name in incoming_files():  # as if the crash lost incoming/'s block
        os.unlink(os.path.join(env["QUEUE_DIR"], "incoming", name))
    out = odmr_queue(env, "expire", "--now", "+2m")
    report("boot: same boot, no incoming/ entry: not found", out.returncode == 0
           and unindexed() == orphans and len(orphans) == 1, repr(orphans))
    with open(os.path.join(env["QUEUE_DIR"], "db", "boot-id"), "w") as f:
        f.write("00000000-0000-0000-0000-000000000000\n")
    out = odmr_queue(env, "expire")
    report("boot: first run after a reboot indexes it", out.returncode == 0
           and not unindexed(), out.stdout + out.stderr)
    log = open(env["ODMR_LOG_FILE"], errors="replace").read()
    report("boot: logged", "first run since boot" in log, "")
    subprocess.run(["postqueue", "-c", env["CONFIG_DIR"], "-f"], check=True)
    wait_until(lambda: postfix_queue_empty(env), 90)


def main():
    # Remember this boot, so only incoming/ can tell the orphans below.
    out = odmr_queue(env, "expire")
    report("expire on a fresh queue", out.returncode == 0, out.stdout + out.stderr)
    try:
        for point, visible, indexed in POINTS:
            try:
                run_point(point, visible, indexed)
            except Exception as e:
                report(point, False, "exception %r" % (e,))
        check_recovery()
        check_boot_scan()
    finally:
        set_fault(None)
    out = odmr_queue(env, "reindex")
    report("reindex after faults", out.returncode == 0, out.stdout + out.stderr)
    m = re.search(r"(\d+) damaged", out.stdout + out.stderr)
    report("reindex finds no damaged file", m is None or m.group(1) == "0", out.stdout + out.stderr)
    # After reindex every file in msg/ is indexed (orphans come back).
    idx = indexed_ids(env, "example.org")
    files = {os.path.basename(p) for p in queue_files(env)}
    report("reindex indexes every file", files <= idx, repr(files - idx))


main()
sys.exit(0 if all(results) else 1)
