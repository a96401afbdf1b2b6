"""File transfer with filesize, stop/continue and save/restore, as tp-qemu's tests do them."""

import hashlib
import os


def run(test, params, env):
    vm = env.get_vm(params["main_vm"])
    session = vm.wait_for_login(timeout=float(params.get("login_timeout", 240)))

    size_mb = int(params.get("filesize", 2))
    host_file = os.path.join(test.workdir, "payload.bin")
    with open(host_file, "wb") as f:
        f.write(os.urandom(size_mb * 1024 * 1024))
    guest_file = params.get("guest_file", "/tmp/payload.bin")
    vm.copy_files_to(host_file, guest_file, filesize=size_mb)
    back = os.path.join(test.workdir, "back.bin")
    vm.copy_files_from(guest_file, back, 0, "", False, 120, filesize=size_mb)
    with open(host_file, "rb") as a, open(back, "rb") as b:
        if hashlib.sha256(a.read()).digest() != hashlib.sha256(b.read()).digest():
            test.fail("the file came back different")
    ls = session.cmd_output(f"ls -l {guest_file}")
    if str(size_mb * 1024 * 1024) not in ls:
        test.fail(f"guest file has the wrong size: {ls}")

    # stop/continue (tp-qemu's stop_continue)
    vm.pause()
    vm.verify_status("paused")
    if not vm.is_paused():
        test.fail("is_paused() is False after pause()")
    vm.resume()
    vm.verify_status("running")
    vm.resume()  # on a running VM: no error
    session.cmd("true", timeout=60)

    # save/restore (tp-qemu's save_restore: pause, save, restore, resume)
    session.close()
    vm.pause()
    state_file = os.path.join(test.workdir, "state")
    vm.save_to_file(state_file)
    if vm.is_alive():
        test.fail("the VM still runs after save_to_file()")
    vm.restore_from_file(state_file)
    vm.resume()
    vm.verify_status("running")
    session = vm.wait_for_login(timeout=120)
    if session.cmd(f"test -f {guest_file} && echo here").strip() != "here":
        test.fail("the restored guest lost its file")
    session.close()
