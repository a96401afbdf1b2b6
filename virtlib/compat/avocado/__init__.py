"""Run tests written for avocado-vt (tp-qemu, tp-libvirt style) on virtlib VMs.

An avocado-vt test is a module with ``run(test, params, env)``.  This package
gives it what avocado-vt would: ``params`` from a cfg file (:mod:`.cfg`, the
``key = value`` subset of the Cartesian config), an ``env`` holding the VMs
(:class:`Env`), a ``test`` object with avocado's ``fail``/``error``/``cancel``
(:class:`Test`), and starts and destroys the VMs the params name
(:func:`run_test`).  ``virtlib run-avocado-test MODULE.py --cfg FILE`` is the
command line.  The README's "Porting tests from avocado-vt" says what works
unchanged and what differs.
"""

from __future__ import annotations

from virtlib.compat.avocado.cfg import load_cfg, parse_cfg
from virtlib.compat.avocado.env import Env
from virtlib.compat.avocado.runner import Result, run_test
from virtlib.compat.avocado.test import (
    STATUSES,
    Test,
    TestBaseException,
    TestCancel,
    TestError,
    TestFail,
    TestSkipError,
    TestWarn,
)

__all__ = [
    "STATUSES",
    "Env",
    "Result",
    "Test",
    "TestBaseException",
    "TestCancel",
    "TestError",
    "TestFail",
    "TestSkipError",
    "TestWarn",
    "load_cfg",
    "parse_cfg",
    "run_test",
]
