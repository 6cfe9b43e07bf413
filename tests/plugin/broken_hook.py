"""A hook module whose import raises: stands in for a bug in one of the plugin's hooks.

Fixture only, named by the fixture manifests of test_lifecycle.py and test_doctor.py.
"""

MESSAGE = "fixture hook raised on purpose"

raise RuntimeError(MESSAGE)
