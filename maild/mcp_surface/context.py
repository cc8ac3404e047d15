"""What tool handlers receive: the services of one daemon, built once in maild/app.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maild.services.acks import AckDeadlines
from maild.services.agents import Agents
from maild.services.attachments import Attachments
from maild.services.build_slots import BuildSlots
from maild.services.changes import ChangeFeed
from maild.services.contact_requests import Contacts
from maild.services.health import Health
from maild.services.lifecycle import Lifecycle
from maild.services.mail_views import MailViews
from maild.services.messaging import Messaging
from maild.services.metrics import ToolMetrics
from maild.services.projects import Projects
from maild.services.reservations import Reservations
from maild.services.revocations import Revocations
from maild.services.search import Search
from maild.services.sessions import Sessions
from maild.services.siblings import Siblings
from maild.services.summaries import Summaries
from maild.services.waiting import MailWaiters
from maild.store import Store
from shared.config import Settings
from shared.paths import MailboxPaths


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
    build_slots: BuildSlots
    metrics: ToolMetrics
    paths: MailboxPaths
    siblings: Siblings
    attachments: Attachments | None = None
    acks: AckDeadlines | None = None  # the ack-deadline scanner (ACK_TTL_ENABLED)
    revocations: Revocations | None = None
