"""virtlib's benchmarks: how close to the hypervisor's own limits, how far ahead of the peers.

Run ``python -m bench`` from the repository root; see bench/README.md.
"""
