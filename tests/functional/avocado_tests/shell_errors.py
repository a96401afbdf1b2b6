"""The shell errors a test catches: aexpect's when it is installed, else virtlib's own."""

try:
    import aexpect

    ShellCmdError = aexpect.ShellCmdError
    ShellTimeoutError = aexpect.ShellTimeoutError
except ImportError:
    from virtlib import ShellCmdError, ShellTimeoutError

__all__ = ["ShellCmdError", "ShellTimeoutError"]
