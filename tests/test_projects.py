"""ensure_project: upstream slug rules, idempotent, any string key (the fork's behaviour).

One daemon per backend serves the module: each test uses keys no other test uses."""

from __future__ import annotations

import pytest

from maild.services.projects import slugify
from shared.errors import InvalidArgument
from tests.conftest import Mailbox


@pytest.fixture
def mailbox(shared_mailbox: Mailbox) -> Mailbox:
    return shared_mailbox


@pytest.mark.parametrize(
    ("key", "slug"),
    [
        ("/home/me/Backend", "home-me-backend"),
        ("Backend", "backend"),
        ("/backend/", "backend"),
        ("my_app v2!", "my-app-v2"),
        ("---", "project-cb3f91d5"),
        ("Ünïcode Straße", "n-code-stra-e"),
    ],
)
def test_slug_rules_match_upstream(key: str, slug: str) -> None:
    assert slugify(key) == slug


def test_ensure_project_is_idempotent_and_keys_that_slugify_alike_are_one_project(mailbox: Mailbox) -> None:
    first = mailbox.call("ensure_project", human_key="/backend")
    assert first["slug"] == "backend"
    assert first["human_key"] == "/backend"
    assert first["created_at"].endswith("Z")
    assert mailbox.call("ensure_project", human_key="/backend") == first
    assert mailbox.call("ensure_project", human_key="Backend") == first
    other = mailbox.call("ensure_project", human_key="frontend")
    assert other["id"] != first["id"]


@pytest.mark.parametrize("bad", ["", "   ", "x" * 1025, "a\x00b"])
def test_ensure_project_rejects_unusable_keys_with_a_clear_message(mailbox: Mailbox, bad: str) -> None:
    with pytest.raises(InvalidArgument, match="project_key"):
        mailbox.call("ensure_project", human_key=bad)


def test_ensure_project_keys_with_sql_and_path_metacharacters_are_just_labels(mailbox: Mailbox) -> None:
    hostile = "'; DROP TABLE projects; -- ../../etc/passwd"
    project = mailbox.call("ensure_project", human_key=hostile)
    assert project["human_key"] == hostile
    assert project["slug"] == "drop-table-projects-etc-passwd"
    assert mailbox.call("health_check")["status"] == "ok"


def test_keys_without_ascii_letters_get_distinct_hashed_slugs_not_one_project(mailbox: Mailbox) -> None:
    if mailbox.backend != "asyncio":
        pytest.skip("slugs are computed in a sync unit of work: one backend is enough")
    japanese = mailbox.call("ensure_project", human_key="プロジェクト")
    bangs = mailbox.call("ensure_project", human_key="!!!")
    assert japanese["slug"].startswith("project-")
    assert bangs["slug"].startswith("project-")
    assert japanese["id"] != bangs["id"], "two different keys must not share one project"
    assert mailbox.call("ensure_project", human_key="プロジェクト") == japanese
