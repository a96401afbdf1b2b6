"""The ``test`` object an avocado-vt test gets, and avocado's test statuses.

``test.fail()``, ``test.error()`` and ``test.cancel()`` raise exceptions whose
``status`` is the test's result, as avocado's do; the runner also reads
``status`` from avocado's own exceptions (``avocado.core.exceptions.TestFail``
and friends), so tests that raise those directly work without avocado's runner.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, NoReturn

from virtlib.errors import VMParamsKeyError
from virtlib.params import Params

#: Every status a test can end with, in avocado's words.
STATUSES = ("PASS", "WARN", "FAIL", "ERROR", "CANCEL", "SKIP")


class TestBaseException(Exception):
    """Root of the exceptions that end a test with ``status``."""

    __test__ = False  # not a pytest test class
    status: ClassVar[str] = "ERROR"


class TestFail(TestBaseException, AssertionError):
    """The test found what it checks to be wrong (also an AssertionError, as avocado's)."""

    status = "FAIL"


class TestError(TestBaseException):
    """The test could not do its job (set-up, environment)."""

    status = "ERROR"


class TestCancel(TestBaseException):
    """The test does not apply here (missing feature, unsupported guest)."""

    status = "CANCEL"


class TestSkipError(TestBaseException):
    """avocado-vt's skip (also what a missing mandatory parameter gives)."""

    status = "SKIP"


class TestWarn(TestBaseException):
    """The test passed with a warning."""

    status = "WARN"


def status_of(exc: BaseException) -> str:
    """The status an exception ends a test with, as avocado decides it.

    An exception with a ``status`` that is one of STATUSES (ours, avocado's)
    gives that; a missing parameter (``params[key]``) is SKIP, as avocado-vt's
    ParamNotFound; any other AssertionError is FAIL; anything else is ERROR.
    """
    status = getattr(type(exc), "status", None)
    if isinstance(status, str) and status in STATUSES:
        return status
    if isinstance(exc, VMParamsKeyError):
        return "SKIP"
    if isinstance(exc, AssertionError):
        return "FAIL"
    return "ERROR"


class Test:
    """What avocado-vt's VirtTest gives a test function: params, log, directories, verdicts."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str, params: Params, outputdir: Path, bindir: Path) -> None:
        self.name = name
        self.params = params
        #: avocado's test logger (its records go to the run's debug.log).
        self.log = logging.getLogger("avocado.test")
        self.outputdir = outputdir
        self.logdir = self.debugdir = self.resultsdir = outputdir
        self.workdir = outputdir / "work"
        self.workdir.mkdir(mode=0o700, exist_ok=True)
        self.tmpdir = self.teststmpdir = self.workdir
        self.bindir = bindir
        self.iteration = 0
        self.whiteboard = ""

    def fail(self, message: object = None) -> NoReturn:
        """End the test as FAIL."""
        raise TestFail(message)

    def error(self, message: object = None) -> NoReturn:
        """End the test as ERROR."""
        raise TestError(message)

    def cancel(self, message: object = None) -> NoReturn:
        """End the test as CANCEL."""
        raise TestCancel(message)

    def __repr__(self) -> str:
        return f"<Test {self.name!r}>"
