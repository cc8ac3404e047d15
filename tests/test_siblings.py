"""Project siblings: the heuristic over real git repositories, resource://project/{slug}, the decision
tool from either side, and the LLM's judgement through litellm's mock_response."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from maild.services.siblings import Facts, git_remotes, normalise_remote, score_pair
from shared.errors import InvalidArgument, NotFound
from shared.slugs import slugify
from tests.conftest import Mailbox, git_init


def repo(path: Path, *remotes: str) -> str:
    git_init(path)
    for n, url in enumerate(remotes):
        subprocess.run(["git", "-C", str(path), "remote", "add", f"r{n}", url], check=True)
    return str(path)


def register(mailbox: Mailbox, key: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = mailbox.call("register_agent", project_key=key, program="p", model="m", name=name)
    return found


def siblings(mailbox: Mailbox, key: str) -> list[dict[str, Any]]:
    with mailbox.client() as conn:
        found = conn.read_resource(f"resource://project/{slugify(key)}")
    listing: list[dict[str, Any]] = found["siblings"]
    return listing


def test_remote_urls_are_compared_in_one_spelling() -> None:
    same = {normalise_remote(u) for u in (
        "git@github.com:Acme/App.git", "https://github.com/acme/app", "ssh://git@github.com/acme/app.git/",
        "https://user@GitHub.com:443/acme/app.git")}
    assert same == {"github.com/acme/app"}
    assert normalise_remote("/srv/git/app.git") == normalise_remote("file:///srv/git/app") == "/srv/git/app"
    assert normalise_remote("https://bot:s3cret-token@github.com/acme/app.git") == "github.com/acme/app", \
        "credentials in a remote URL never reach a rationale or a prompt"


def test_git_remotes_are_read_from_a_repository_and_its_worktrees(tmp_path: Path) -> None:
    main = repo(tmp_path / "main", "git@github.com:acme/app.git", "https://gitlab.com/acme/app-mirror")
    subprocess.run(["git", "-C", main, "commit", "-q", "--allow-empty", "-m", "x"], check=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})
    subprocess.run(["git", "-C", main, "worktree", "add", "-q", str(tmp_path / "wt")], check=True)
    expected = frozenset({"github.com/acme/app", "gitlab.com/acme/app-mirror"})
    assert git_remotes(main) == expected
    assert git_remotes(str(tmp_path / "wt")) == expected, "a worktree shares its repository's remotes"
    assert git_remotes(repo(tmp_path / "bare-local")) == frozenset()
    assert git_remotes(str(tmp_path / "missing")) == frozenset()
    assert git_remotes("just-a-label") == frozenset()


def facts(key: str, remotes: tuple[str, ...] = (), agents: tuple[str, ...] = (), pid: int = 1) -> Facts:
    return Facts(pid, slugify(key), key, frozenset(remotes), frozenset(agents))


def test_the_heuristic_weighs_remote_names_folder_and_agents() -> None:
    web, api = facts("/code/shop-web"), facts("/code/shop-api", pid=2)
    score, why = score_pair(web, api)
    assert SUGGESTED <= score < 0.95
    assert "both in /code" in why
    assert "'shop-web' and 'shop-api'" in why
    far_apart, _ = score_pair(facts("/a/shop-web"), facts("/b/shop-api"))
    assert far_apart < score, "a shared parent folder counts"
    unrelated, why = score_pair(facts("/a/compiler"), facts("/b/gardening"))
    assert unrelated < 0.4
    assert why == "nothing in common"
    remote, why = score_pair(facts("/a/x", ("github.com/acme/app",)), facts("/b/y", ("github.com/acme/app",)))
    assert remote == 0.95
    assert why.startswith("same git remote github.com/acme/app")
    alone, _ = score_pair(facts("/a/billing"), facts("/b/billing-worker"))
    shared, why = score_pair(facts("/a/billing", agents=("bluelake",)),
                             facts("/b/billing-worker", agents=("bluelake",)))
    assert shared == round(alone + 0.1, 2)
    assert "agents in both: bluelake" in why
    labels, _ = score_pair(facts("payments"), facts("payments-v2"))
    assert labels >= SUGGESTED, "labels that are not paths compare as names"


SUGGESTED = 0.6


def test_a_shared_remote_is_suggested_and_either_side_confirms_dismisses_or_reverts(
    mailbox: Mailbox, tmp_path: Path
) -> None:
    web = repo(tmp_path / "one" / "storefront", "git@github.com:Acme/Shop.git")
    api = repo(tmp_path / "two" / "payments", "https://github.com/acme/shop")
    other = repo(tmp_path / "three" / "wiki", "https://github.com/acme/wiki")
    for key, name in ((web, "BlueLake"), (api, "GreenHill"), (other, "RedFox")):
        register(mailbox, key, name)
    [pair] = siblings(mailbox, web)
    assert (pair["slug"], pair["status"], pair["score"]) == (slugify(api), "suggested", 0.95)
    assert pair["source"] == "heuristic"
    assert "same git remote github.com/acme/shop" in pair["rationale"]
    assert [p["slug"] for p in siblings(mailbox, api)] == [slugify(web)], "a pair shows on both sides"
    assert siblings(mailbox, other) == []

    confirmed = mailbox.call("update_project_sibling", project_key=api, other_project=slugify(web), status="confirmed")
    assert confirmed["project"] == slugify(api)
    assert confirmed["sibling"]["status"] == "confirmed"
    assert confirmed["sibling"]["confirmed_ts"]
    [seen] = siblings(mailbox, web)
    assert seen["status"] == "confirmed"
    mailbox.call("update_project_sibling", project_key=web, other_project=api, status="dismissed")
    [seen] = siblings(mailbox, api)
    assert (seen["status"], seen["confirmed_ts"]) == ("dismissed", None)
    assert seen["dismissed_ts"]
    mailbox.call("update_project_sibling", project_key=web, other_project=api, status="suggested")
    [seen] = siblings(mailbox, web)
    assert (seen["status"], seen["confirmed_ts"], seen["dismissed_ts"]) == ("suggested", None, None)

    # A person may also confirm a pair the heuristic did not suggest; it then shows with its score.
    mailbox.call("update_project_sibling", project_key=other, other_project=web, status="confirmed")
    decided = {p["slug"]: p for p in siblings(mailbox, other)}
    assert decided[slugify(web)]["status"] == "confirmed"
    assert decided[slugify(web)]["score"] < SUGGESTED

    with pytest.raises(InvalidArgument, match="same project"):
        mailbox.call("update_project_sibling", project_key=web, other_project=slugify(web), status="confirmed")
    with pytest.raises(NotFound, match="ensure_project"):
        mailbox.call("update_project_sibling", project_key=web, other_project="/nowhere", status="confirmed")
    with pytest.raises(InvalidArgument, match="status"):
        mailbox.call("update_project_sibling", project_key=web, other_project=api, status="maybe")


def test_an_agent_working_in_both_projects_makes_them_siblings(mailbox: Mailbox, tmp_path: Path) -> None:
    billing, worker = str(tmp_path / "a" / "billing"), str(tmp_path / "b" / "billing-worker")
    first = register(mailbox, billing, "BlueLake")
    register(mailbox, worker, "GreenHill")
    assert siblings(mailbox, billing) == [], "alike names alone, in different folders, stay below the floor"
    mailbox.call("retire_agent", project_key=billing, agent_name="BlueLake",
                 registration_token=first["registration_token"])
    register(mailbox, worker, "BlueLake")  # the same agent moves on to the other project
    [pair] = siblings(mailbox, billing)
    assert pair["slug"] == slugify(worker)
    assert "agents in both: bluelake" in pair["rationale"]


def until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 60
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


LLM_REPLY = json.dumps({"score": 0.88, "rationale": "A storefront and the payments service behind it."})


# One backend: the model is called from a worker thread either way, and importing litellm takes seconds.
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["asyncio"])
def test_with_an_llm_plausible_pairs_are_judged_by_the_model_in_the_background(
    mailbox: Mailbox, tmp_path: Path
) -> None:
    mailbox.paths.state_dir.mkdir(parents=True, exist_ok=True)
    (mailbox.paths.state_dir / "config.toml").write_text(
        f"llm_enabled = true\nllm_default_model = 'openai/gpt-4o-mini'\nllm_mock_response = '''{LLM_REPLY}'''\n"
    )
    shop, shop_api = str(tmp_path / "code" / "shop"), str(tmp_path / "code" / "shop-api")
    register(mailbox, shop, "BlueLake")
    register(mailbox, shop_api, "GreenHill")
    until(lambda: mailbox.call("health_check")["siblings"]["llm_judged"] >= 1, "the LLM's judgement")
    [pair] = siblings(mailbox, shop)
    assert (pair["source"], pair["score"], pair["status"]) == ("llm", 0.88, "suggested")
    assert pair["rationale"] == "LLM: A storefront and the payments service behind it."
    mailbox.call("update_project_sibling", project_key=shop, other_project=shop_api, status="confirmed")
    [pair] = siblings(mailbox, shop_api)
    assert (pair["source"], pair["status"], pair["score"]) == ("llm", "confirmed", 0.88), "the judgement stays"
    assert mailbox.call("health_check")["llm"]["calls"] == 1, "a judged pair is not asked again"
