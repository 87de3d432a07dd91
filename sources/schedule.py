"""Schedules: five cron fields (minute hour day-of-month month day-of-week), read by Celery's
crontab so Celery beat (cluster) and the standalone scheduler agree on them."""

from __future__ import annotations

from datetime import datetime

from celery.schedules import crontab

from sources.options import OptionError


def schedule_parse(text: str) -> crontab:
    fields = text.split()
    if len(fields) != 5:
        raise OptionError(
            f"A schedule is five cron fields (minute hour day month weekday), not “{text}”."
        )
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except (ValueError, TypeError) as error:
        raise OptionError(f"The schedule “{text}” is not valid cron: {error}.") from None


def next_run_after(text: str, moment: datetime) -> datetime | None:
    """The first time after `moment` that the schedule names; None for no schedule."""
    if not text.strip():
        return None
    schedule = schedule_parse(text)
    schedule.nowfun = lambda: moment
    return moment + schedule.remaining_estimate(moment)
