"""Hook objects for the fixture manifests in test_manifest.py (not product hooks)."""

REPLACED_VERSION = "0.0.0-patched-by-a-fixture"
