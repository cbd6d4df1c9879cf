"""Keywords that differ across the transformers versions AuRA supports."""

from __future__ import annotations

import transformers
from packaging.version import Version

# The keyword that hands a KV cache to a model's forward or generate: transformers 5.24 renamed
# `past_key_values` to `cache` and warns on the old name, which goes away in 5.40.
CACHE_KWARG = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"
