"""When boards reset: presets and 5-field cron expressions, evaluated in UTC with croniter. No I/O.

    null       never (the default)
    daily      00:00 UTC every day           "0 0 * * *"
    weekly     Monday 00:00 UTC              "0 0 * * 1"
    monthly    the 1st, 00:00 UTC            "0 0 1 * *"
    "m h d M w"  any 5-field cron expression, in UTC ("0 */6 * * *", "* * * * *")

A reset ends the live season and starts the next one (store.reset_board, service.reset). Boundaries missed
while no process ran close one season at start-up (not one per missed boundary): the standings belong to the
season that was live, and the next season starts then, with the next boundary after it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import CroniterBadDateError, croniter

PRESETS = {"daily": "0 0 * * *", "weekly": "0 0 * * 1", "monthly": "0 0 1 * *"}
# What a schedule looks like (the schema says it; croniter then checks each field's range)
SHAPE = r"^\s*(daily|weekly|monthly|\S+(\s+\S+){4})\s*$"
RULE = 'null, "daily", "weekly", "monthly", or a 5-field cron expression in UTC such as "0 */6 * * *"'


def check(reset: str | None) -> str | None:
    """The reset schedule as stored (a preset name or a cron expression), or ValueError saying what is wrong."""
    if reset is None:
        return None
    text = " ".join(reset.split())
    if text in PRESETS:
        return text
    if len(text.split(" ")) != 5 or not croniter.is_valid(text):
        raise ValueError(f"must be {RULE}; got {reset!r}")
    try:
        next_reset(text, datetime.now(UTC))
    except CroniterBadDateError:  # well-formed, but no date matches it (30 February)
        raise ValueError(f"never occurs: no date matches {reset!r}") from None
    return text


def next_reset(reset: str | None, after: datetime) -> datetime | None:
    """The first boundary strictly after `after` (UTC), or None for a board that never resets."""
    if reset is None:
        return None
    expression = PRESETS.get(reset, reset)
    found: datetime = croniter(expression, after.astimezone(UTC)).get_next(datetime)
    return found.astimezone(UTC)
