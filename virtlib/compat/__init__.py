"""Compatibility layers: running tests written for other frameworks on virtlib VMs.

:mod:`virtlib.compat.avocado` runs avocado-vt style ``run(test, params, env)`` tests.
"""
