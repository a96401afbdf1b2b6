"""The libvirt backend (``vm_type = libvirt``): KVM, QEMU/TCG and Xen through libvirt-python."""
