"""Boot, then reboot both ways, as tp-qemu's boot and reboot tests do."""

from shell_errors import ShellCmdError


def run(test, params, env):
    vm = env.get_vm(params["main_vm"])
    vm.verify_alive()
    test.log.info(
        "shell errors from %s",
        ShellCmdError.__module__.split(".")[0]
        if ShellCmdError.__module__.startswith("aexpect")
        else ShellCmdError.__module__,
    )
    timeout = float(params.get("login_timeout", 240))
    session = vm.wait_for_login(timeout=timeout)
    test.log.info("logged in: %s", session.cmd_output("uname -r").strip())
    if vm.start_time <= 0 or vm.start_monotonic_time <= 0:
        test.fail("start_time was not set when the VM started")
    try:
        session.cmd("false")
    except ShellCmdError as exc:
        test.log.info("a failing command raised %s (status %s)", type(exc).__name__, exc.status)
    else:
        test.fail("a failing command did not raise ShellCmdError")
    if vm.get_cpu_count() != int(params.get("smp", 1)):
        test.fail(f"guest sees {vm.get_cpu_count()} CPUs, params say {params.get('smp', 1)}")

    boot_id = session.cmd_output("cat /proc/sys/kernel/random/boot_id").strip()
    # positional, as tp-qemu calls it: session, method, nic_index, timeout
    session = vm.reboot(session, "shell", 0, timeout)
    second = session.cmd_output("cat /proc/sys/kernel/random/boot_id").strip()
    if second == boot_id:
        test.fail("the shell reboot did not reboot the guest")
    session = vm.reboot(
        session, method=params.get("reboot_method", "system_reset"), timeout=timeout, serial=True
    )
    third = session.cmd_output_safe("cat /proc/sys/kernel/random/boot_id").strip()
    if third in (boot_id, second):
        test.fail("the reset did not reboot the guest")
    if session is not vm.serial_console:
        test.fail("reboot(serial=True) did not return the serial console")
    test.log.info("three boots: %s %s %s", boot_id, second, third)
