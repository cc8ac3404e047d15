"""What tool handlers receive: the services of one daemon, built once in maild/app.py."""

from __future__ import annotations

from dataclasses import dataclass

from maild.services.health import Health
from maild.services.projects import Projects
from maild.services.search import Search
from maild.services.sessions import Sessions
from maild.services.summaries import Summaries
from shared.config import Settings


@dataclass
class Services:
    settings: Settings
    projects: Projects
    sessions: Sessions
    health: Health
    search: Search
    summaries: Summaries
