"""SPEC §2: typed settings, defaults, malformed values, unknown names, the docs reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from heldar.config import (
    LogFormat,
    Settings,
    load_settings,
    render_reference,
    unknown_variables,
)
from heldar.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_match_the_spec() -> None:
    s = load_settings({})
    assert s.data_dir == Path("data")
    assert s.resolved_database_url == "sqlite+aiosqlite:///data/heldar.db"
    assert s.resolved_frames_dir == Path("data/frames")
    assert s.resolved_snapshots_dir == Path("data/snapshots")
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.ai_max_total_fps == 40
    assert s.max_samplers == 80  # budget / 0.5
    assert (s.default_ai_fps, s.default_ai_width) == (5, 1280)
    assert s.snapshot_retention_hours == 168
    assert s.media_job_concurrency == 3
    assert s.log_format is LogFormat.TEXT


def test_blank_means_default_and_values_are_parsed() -> None:
    s = load_settings(
        {
            "HELDAR_PORT": "  ",
            "HELDAR_AI_ENABLED": "false",
            "HELDAR_AI_MAX_TOTAL_FPS": "10",
            "HELDAR_LOG_FORMAT": "json",
            "HELDAR_DATA_DIR": "/var/lib/heldar",
        }
    )
    assert s.port == 8000
    assert s.ai_enabled is False
    assert s.max_samplers == 20
    assert s.log_format is LogFormat.JSON
    assert s.resolved_snapshots_dir == Path("/var/lib/heldar/snapshots")


def test_sampler_cap_never_exceeds_what_the_budget_allows() -> None:
    assert load_settings({"HELDAR_AI_MAX_SAMPLERS": "8"}).max_samplers == 8
    capped = load_settings({"HELDAR_AI_MAX_TOTAL_FPS": "2", "HELDAR_AI_MAX_SAMPLERS": "50"})
    assert capped.max_samplers == 4


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("HELDAR_PORT", "eighty", "valid integer"),
        ("HELDAR_PORT", "70000", "less than or equal to 65535"),
        ("HELDAR_PORT", "-1", "greater than or equal to 0"),
        ("HELDAR_AI_MAX_TOTAL_FPS", "0.5", "greater than or equal to 1"),
        ("HELDAR_AI_ENABLED", "maybe", "valid boolean"),
        ("HELDAR_LOG_FORMAT", "xml", "'text' or 'json'"),
        ("HELDAR_SNAPSHOT_SCHEDULER_INTERVAL_S", "1", "greater than or equal to 5"),
        ("HELDAR_RETENTION_INTERVAL_S", "10", "greater than or equal to 30"),
        ("HELDAR_DEFAULT_AI_WIDTH", "100", "greater than or equal to 160"),
    ],
)
def test_malformed_values_name_the_variable(variable: str, value: str, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    assert variable in info.value.message
    assert rule in info.value.message


def test_overrides_win_over_the_environment() -> None:
    s = load_settings({"HELDAR_PORT": "9000"}, port=9100)
    assert s.port == 9100


def test_unknown_variables_are_listed() -> None:
    env = {"HELDAR_PROT": "1", "HELDAR_PORT": "2", "PATH": "/bin", "heldar_lower_typo": "x"}
    assert unknown_variables(env) == ["HELDAR_PROT", "heldar_lower_typo"]


def test_every_setting_is_documented() -> None:
    reference = render_reference()
    for name in Settings.model_fields:
        assert f"`HELDAR_{name.upper()}`" in reference


def test_docs_configuration_md_is_in_sync() -> None:
    on_disk = (REPO / "docs" / "configuration.md").read_text()
    assert on_disk == render_reference(), (
        "run: .venv/bin/heldar config-docs > docs/configuration.md"
    )
