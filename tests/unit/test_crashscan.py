"""Kernel crash reports found in console text (virtlib.crashscan), as current kernels print them."""

from __future__ import annotations

from virtlib.crashscan import find_crash

PANIC_61 = """\
[   12.100000] sysrq: Trigger a crash\r
[   12.100100] Kernel panic - not syncing: sysrq triggered crash\r
[   12.100200] CPU: 0 PID: 128 Comm: sh Not tainted 6.1.0-57-cloud-amd64 #1  Debian 6.1.192-3\r
[   12.100300] Call Trace:\r
[   12.100400]  <TASK>\r
[   12.100500]  dump_stack_lvl+0x44/0x5c\r
[   12.100600]  panic+0x118/0x2ed\r
[   12.100700]  </TASK>\r
[   12.100800] Kernel Offset: disabled\r
[   12.100900] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---\r
after the end
"""

OOPS = """\
login: root
[    3.673195] BUG: kernel NULL pointer dereference, address: 0000000000000000
[    3.679708] #PF: supervisor read access in kernel mode
[    3.680000] Oops: 0000 [#1] PREEMPT SMP NOPTI
[    3.690000] Call Trace:
[    3.700000]  virtlib_oops_write+0x1d/0x30
[    3.710279] ---[ end trace 0000000000000000 ]---
#
"""


def test_a_6x_panic_runs_to_its_own_trailer() -> None:
    crash = find_crash(PANIC_61)
    assert crash is not None and crash.panic and crash.complete
    assert crash.title == "Kernel panic - not syncing: sysrq triggered crash"
    assert crash.text.startswith("Kernel panic - not syncing")
    assert crash.text.endswith("---[ end Kernel panic - not syncing: sysrq triggered crash ]---")
    assert "dump_stack_lvl" in crash.text and "after the end" not in crash.text


def test_an_oops_starts_at_bug_and_ends_at_end_trace() -> None:
    crash = find_crash(OOPS)
    assert crash is not None and not crash.panic and crash.complete
    assert crash.text.startswith("BUG: kernel NULL pointer dereference")
    assert crash.text.endswith("---[ end trace 0000000000000000 ]---")


def test_a_report_still_being_printed_is_already_a_crash() -> None:
    crash = find_crash("[    1.0] general protection fault, probably for non-canonical address\n")
    assert crash is not None and not crash.complete
    assert crash.title.startswith("general protection fault")


def test_log_levels_and_no_timestamps_are_accepted() -> None:
    crash = find_crash("<1>BUG: unable to handle page fault for address: ffff\n")
    assert crash is not None and crash.title.startswith("BUG: unable to handle page fault")
    crash = find_crash("Unable to handle kernel paging request at virtual address 0\n")
    assert crash is not None


def test_ordinary_output_is_no_crash() -> None:
    assert find_crash("") is None
    assert find_crash("[root@guest ~]# echo BUG: not really\nBUGS: none\n") is None
    assert find_crash("[    1.0] WARNING: CPU: 0 PID: 1 at foo.c:1 bar+0x1\n") is None
    assert find_crash("a panic - not a kernel one\n") is None
