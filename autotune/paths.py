"""Study names as safe path components: a name is the user's to choose, a folder name must not escape its parent."""

from __future__ import annotations

import hashlib
import re


def safe_component(name: str) -> str:
    """``name`` as one folder or file name: characters other than letters, digits, ``.``, ``_`` and ``-``
    replaced, no leading dots; a name that had to change gets a short hash of itself, so two names never meet."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    if cleaned and cleaned == name:
        return name
    return f"{cleaned or 'study'}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
