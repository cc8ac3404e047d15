"""Project slugs: the one rule that turns a project key (a path, a repo name, any label) into a slug.

Shared by the daemon (maild.services.projects) and the guard hook (mailctl.guard), which must agree.
Standard library only; no I/O.
"""

from __future__ import annotations

import hashlib
import re

_NON_SLUG = re.compile(r"[^a-z0-9]+")
# What keys without a single ASCII letter or digit slugged to before they got a hash (issue 13).
LEGACY_EMPTY_SLUG = "project"


def slugify(human_key: str) -> str:
    """Lowercase; runs of anything outside [a-z0-9] become '-'; dashes trimmed (upstream's rule).

    A key with nothing left (`プロジェクト`, `!!!`) gets `project-` plus a short hash of the key, so
    such keys stay distinct projects instead of all collapsing into one called `project`."""
    slug = _NON_SLUG.sub("-", human_key.lower()).strip("-")
    if slug:
        return slug
    digest = hashlib.sha256(human_key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{LEGACY_EMPTY_SLUG}-{digest}"
