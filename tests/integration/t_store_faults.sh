#!/bin/bash
# Fault injection: kill -9 of odmr-store at chosen points while the real
# Postfix delivers to it; no accepted message is lost, nothing is
# half-visible, Postfix redelivers what was not acknowledged
# (checks in fault_check.py).
set -eu
. "$(dirname "$0")/lib.sh"
require_root
require_cmd postqueue
require_bin odmr-store odmr-queue
sandbox_start
# Retry deferred mail quickly: the test flushes by hand anyway.
py_checks faults fault_check.py
done_testing
