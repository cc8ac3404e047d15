"""What tool handlers receive: the services of one daemon, built once in maild/app.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maild.services.agents import Agents
from maild.services.attachments import Attachments
from maild.services.changes import ChangeFeed
from maild.services.contact_requests import Contacts
from maild.services.health import Health
from maild.services.lifecycle import Lifecycle
from maild.services.mail_views import MailViews
from maild.services.messaging import Messaging
from maild.services.projects import Projects
from maild.services.reservations import Reservations
from maild.services.revocations import Revocations
from maild.services.search import Search
from maild.services.sessions import Sessions
from maild.services.summaries import Summaries
from maild.services.waiting import MailWaiters
from maild.store import Store
from shared.config import Settings


@dataclass
class Services:
    settings: Settings
    projects: Projects
    sessions: Sessions
    health: Health
    agents: Agents
    messaging: Messaging
    views: MailViews
    store: Store
    archive_path: Path
    reservations: Reservations
    search: Search
    summaries: Summaries
    lifecycle: Lifecycle
    contacts: Contacts
    changes: ChangeFeed
    waiters: MailWaiters
    attachments: Attachments | None = None
    revocations: Revocations | None = None
