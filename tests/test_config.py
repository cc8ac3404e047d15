"""Settings precedence: flag > environment > config.toml > default, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ConfigError, Settings, load_settings


def test_defaults_apply_when_nothing_is_set(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={}) == Settings()
    assert Settings().idle_timeout_seconds == 900


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("idle_timeout_seconds = 30\nname_enforcement_mode = 'strict'\n")
    from_file = load_settings(tmp_path, environ={})
    assert from_file.idle_timeout_seconds == 30
    assert from_file.name_enforcement_mode == "strict"
    from_env = load_settings(tmp_path, environ={"AGENT_MAIL_IDLE_TIMEOUT": "20"})
    assert from_env.idle_timeout_seconds == 20
    from_flag = load_settings(tmp_path, {"idle_timeout_seconds": 10}, environ={"AGENT_MAIL_IDLE_TIMEOUT": "20"})
    assert from_flag.idle_timeout_seconds == 10


def test_upstream_environment_names_are_honoured() -> None:
    settings = load_settings(None, environ={"MCP_TOOLS_MODE": "extended", "AGENT_NAME_ENFORCEMENT_MODE": "always_auto",
                                            "MESSAGING_AUTO_REGISTER_RECIPIENTS": "yes", "LOG_JSON_ENABLED": "on"})
    assert settings.tools_mode == "extended"
    assert settings.name_enforcement_mode == "always_auto"
    assert settings.auto_register_recipients is True
    assert settings.log_json is True


def test_an_invalid_tools_mode_falls_back_to_core_like_upstream() -> None:
    assert load_settings(None, environ={"MCP_TOOLS_MODE": "everything"}).tools_mode == "core"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AGENT_NAME_ENFORCEMENT_MODE": "loose"}, "must be one of strict, coerce, always_auto"),
        ({"AGENT_MAIL_IDLE_TIMEOUT": "soon"}, "must be a float"),
        ({"MESSAGING_AUTO_REGISTER_RECIPIENTS": "perhaps"}, "must be a bool"),
        ({"AGENT_MAIL_READER_CONNECTIONS": "0"}, "must be between 1 and 64"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, environ=environ)


def test_unknown_or_broken_config_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("idle_timeout = 3\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_settings(tmp_path, environ={})
    (tmp_path / "config.toml").write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="fix or delete"):
        load_settings(tmp_path, environ={})
