"""Shut the guest down from its shell and wait for it, as tp-qemu's shutdown test does."""


def run(test, params, env):
    vm = env.get_vm(params["main_vm"])
    session = vm.wait_for_login(timeout=float(params.get("login_timeout", 240)))
    test.log.info("distribution: %r", vm.get_distro())
    session.sendline(params.get("shutdown_command", "poweroff"))
    if not vm.wait_for_shutdown(float(params.get("shutdown_timeout", 120))):
        test.fail("the guest did not go down")
    if not vm.is_dead():
        test.fail("wait_for_shutdown() returned True for a live VM")
    vm.verify_status("shut off")
