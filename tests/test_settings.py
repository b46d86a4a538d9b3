"""Settings: every invalid value becomes one line of words naming the variable; typos are warned about."""

from __future__ import annotations

import re

import pytest

from leaderboard.settings import ConfigError, load_settings, redact_url, unknown_variables

# Things a pydantic error message shows that a person setting a variable should never have to read.
PYDANTIC_NOISE = re.compile(r"validation error|pydantic|ref\.|constrained|\[type=|input_value|errors\.pydantic|\^|\$")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean environment: no LEADERBOARD_* variable except those a test sets."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("LEADERBOARD_"):
            monkeypatch.delenv(key)
    return monkeypatch


def problem(env: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        env.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "\n" not in text, text
    assert not PYDANTIC_NOISE.search(text), text
    return text


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LEADERBOARD_PORT", "abc", "LEADERBOARD_PORT: must be an integer 0-65535, got 'abc'"),
        ("LEADERBOARD_PORT", "70000", "LEADERBOARD_PORT: must be an integer 0-65535, got '70000'"),
        ("LEADERBOARD_WORKERS", "0", "LEADERBOARD_WORKERS: must be an integer 1-64, got '0'"),
        ("LEADERBOARD_MAX_FRAME_BYTES", "10", "LEADERBOARD_MAX_FRAME_BYTES: must be an integer >= 1024, got '10'"),
        ("LEADERBOARD_DRAIN_TIMEOUT_S", "-1", "LEADERBOARD_DRAIN_TIMEOUT_S: must be a number > 0, got '-1'"),
        ("LEADERBOARD_PUBLIC_READ", "maybe", "LEADERBOARD_PUBLIC_READ: must be true or false, got 'maybe'"),
        (
            "LEADERBOARD_PLAYER_SUBMIT_RATE",
            "-1",
            "LEADERBOARD_PLAYER_SUBMIT_RATE: must be a number 0-1000000, got '-1'",
        ),
        (
            "LEADERBOARD_WS_IDLE_TIMEOUT_S",
            "0",
            "LEADERBOARD_WS_IDLE_TIMEOUT_S: must be a number > 0 and <= 86400, got '0'",
        ),
        ("LEADERBOARD_AUTH_FAILURES_MAX", "x", "LEADERBOARD_AUTH_FAILURES_MAX: must be an integer 0-1000000, got 'x'"),
        ("LEADERBOARD_MAX_FOLLOWED", "0", "LEADERBOARD_MAX_FOLLOWED: must be an integer 1-100000, got '0'"),
        ("LEADERBOARD_LOG_FORMAT", "xml", "LEADERBOARD_LOG_FORMAT: must be one of auto, json, human, got 'xml'"),
        (
            "LEADERBOARD_LOG_LEVEL",
            "verbose",
            "LEADERBOARD_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'verbose'",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    env: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    assert problem(env, **{variable: value}) == expected


def test_a_short_player_token_secret_says_how_to_make_one_and_never_shows_it(env: pytest.MonkeyPatch) -> None:
    secret = "x" * 28  # as long as the CHANGE_ME placeholder of deploy/env/app.env.example
    text = problem(env, LEADERBOARD_PLAYER_TOKEN_SECRET=secret)
    assert text.startswith("LEADERBOARD_PLAYER_TOKEN_SECRET: must be at least 32 characters")
    assert "got 28" in text and "secrets.token_urlsafe" in text
    assert secret not in text


@pytest.mark.parametrize(
    "variable",
    ["LEADERBOARD_PLAYER_TOKEN_SECRET", "LEADERBOARD_DATABASE_URL", "LEADERBOARD_REDIS_URL", "LEADERBOARD_PORT"],
)
def test_change_me_placeholders_are_refused(env: pytest.MonkeyPatch, variable: str) -> None:
    value = {
        "LEADERBOARD_PLAYER_TOKEN_SECRET": "CHANGE_ME_long_random_secret_that_is_long_enough",
        "LEADERBOARD_DATABASE_URL": "postgresql://leaderboard:CHANGE_ME_postgres_password@postgres:5432/leaderboard",
        "LEADERBOARD_REDIS_URL": "redis://:CHANGE_ME@redis:6379/0",
        "LEADERBOARD_PORT": "CHANGE_ME",
    }[variable]
    text = problem(env, **{variable: value})
    assert text.startswith(f"{variable}: ") and "CHANGE_ME placeholder" in text
    assert "postgres_password" not in text  # the value is not echoed


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("localhost:5432", "not a URL"),
        ("mysql://u:pw@db/x", "mysql:// is not postgresql:// or postgres://"),
        ("postgresql://u:pw@db:port/x", "the port is not a number"),
        ("postgresql://u:pw@:5432/x", "no host"),
    ],
)
def test_a_malformed_database_url_is_explained_with_the_password_hidden(
    env: pytest.MonkeyPatch, value: str, why: str
) -> None:
    text = problem(env, LEADERBOARD_DATABASE_URL=value)
    assert text.startswith("LEADERBOARD_DATABASE_URL: must be a PostgreSQL URL like postgresql://"), text
    assert why in text
    assert "pw" not in text.split("got", 1)[1]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("localhost:6379", "not a URL"),
        ("http://redis:6379/0", "http:// is not redis://"),
        ("redis://redis:63x9/0", "the port is not a number"),
        ("redis://redis:6379/zero", "the database after the / must be a number"),
    ],
)
def test_a_malformed_redis_url_is_explained(env: pytest.MonkeyPatch, value: str, why: str) -> None:
    text = problem(env, LEADERBOARD_REDIS_URL=value)
    assert text.startswith("LEADERBOARD_REDIS_URL: must be a Redis URL like redis://host:6379/0"), text
    assert why in text


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LEADERBOARD_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/leaderboard"),
        ("LEADERBOARD_DATABASE_URL", "postgresql://postgres:@/lb_test?host=/tmp/lbt-x/pg/pg"),
        ("LEADERBOARD_DATABASE_URL", "postgres://u:p%40ss@db.internal/lb?sslmode=require"),
        ("LEADERBOARD_REDIS_URL", "redis://127.0.0.1:6379/9"),
        ("LEADERBOARD_REDIS_URL", "rediss://:pw@cache.internal:6380"),
        ("LEADERBOARD_REDIS_URL", "unix:///run/redis.sock?db=2"),
        ("LEADERBOARD_LOG_LEVEL", "debug"),
    ],
)
def test_good_values_pass(env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    env.setenv(variable, value)
    load_settings()


def test_log_level_is_normalised(env: pytest.MonkeyPatch) -> None:
    env.setenv("LEADERBOARD_LOG_LEVEL", "warn")
    assert load_settings().log_level == "WARNING"


def test_every_bad_variable_gets_its_own_line_in_field_order(env: pytest.MonkeyPatch) -> None:
    env.setenv("LEADERBOARD_WORKERS", "0")
    env.setenv("LEADERBOARD_PORT", "abc")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).splitlines() == [
        "LEADERBOARD_PORT: must be an integer 0-65535, got 'abc'",
        "LEADERBOARD_WORKERS: must be an integer 1-64, got '0'",
    ]


def test_overrides_can_be_named_as_command_line_options(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(workers=0)
    assert str(info.value.naming({"workers": "--workers"})) == "--workers: must be an integer 1-64, got 0"


def test_unknown_variables_are_warned_about_with_a_suggestion() -> None:
    warnings = unknown_variables(
        {
            "LEADERBOARD_DATABSE_URL": "postgresql://x",
            "leaderboard_log_levl": "DEBUG",
            "LEADERBOARD_SOMETHING_ELSE": "1",
            # not settings, but known: compose interpolation, UI tooling, the test suite
            "LEADERBOARD_HTTP_PORT": "8080",
            "LEADERBOARD_URL": "http://127.0.0.1:8000",
            "LEADERBOARD_TEST_DATABASE_URL": "postgresql://x",
            "LEADERBOARD_PORT": "8000",
            "PATH": "/usr/bin",
        }
    )
    assert warnings == [
        "warning: LEADERBOARD_DATABSE_URL is not a setting and is ignored; did you mean LEADERBOARD_DATABASE_URL?",
        "warning: LEADERBOARD_SOMETHING_ELSE is not a setting and is ignored; README.md lists the settings",
        "warning: leaderboard_log_levl is not a setting and is ignored; did you mean LEADERBOARD_LOG_LEVEL?",
    ]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://lb:s3cret@db:5432/lb", "postgresql://lb:***@db:5432/lb"),
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("postgresql://lb@db/lb", "postgresql://lb@db/lb"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("postgres//lb:s3cret@db/lb", "postgres//lb:***@db/lb"),  # not even a URL: still hidden
        ("postgresql://lb:p@ss@db/lb?host=/x", "postgresql://lb:***@db/lb?host=/x"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
