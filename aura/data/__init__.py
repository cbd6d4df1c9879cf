"""Speech data: the manifest format, its checker, espeak-ng synthesis of real-fact tasks, and imports."""

from aura.data.manifest import Example, ManifestError, Problem, read_manifest, scan_manifest, write_manifest

__all__ = ["Example", "ManifestError", "Problem", "read_manifest", "scan_manifest", "write_manifest"]
