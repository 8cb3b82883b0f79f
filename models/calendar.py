"""Local time, contact windows and allowed hours: the calendar shared by simulator, features and rules.

Every instant in cureflow is a UTC timestamp; local time follows from the account's IANA time zone.
A contact window is a named slot of the local week (weekday morning, weekday afternoon, weekday evening,
weekend) with an hour range; `next_window` finds its next occurrence inside the hours the law allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import numpy as np
import pandas as pd

DEFAULT_TIMEZONE = "Asia/Tokyo"


@dataclass(frozen=True)
class Window:
    """One contact window: weekday or weekend days, local hours [start, end)."""

    name: str
    weekend: bool
    start: time
    end: time

    def contains(self, local: pd.Timestamp) -> bool:
        """Whether a local (naive or aware) timestamp falls inside this window."""
        is_weekend = local.day_of_week >= 5
        return is_weekend == self.weekend and self.start <= local.time() < self.end


def _hhmm(text: str) -> time:
    hours, minutes = (int(part) for part in str(text).split(":"))
    return time(hours, minutes)


def parse_windows(calendar_params: dict) -> tuple[Window, ...]:
    """The windows of params.yaml's `calendar.windows`, in their declared order."""
    return _windows(tuple((name, spec["days"], str(spec["start"]), str(spec["end"]))
                          for name, spec in calendar_params["windows"].items()))


@lru_cache(maxsize=32)
def _windows(specs: tuple[tuple[str, str, str, str], ...]) -> tuple[Window, ...]:
    """Parsed once per distinct set of windows: every scoring call reads them."""
    return tuple(Window(name, days == "weekend", _hhmm(start), _hhmm(end)) for name, days, start, end in specs)


# tz database keys that name no place: `localtime` is whatever zone the machine running the code is set to
# (so a batch and an API server could disagree on an account's hours), `Factory` is "local time zone must
# be set". Both load with ZoneInfo, so they are refused here and the rules fail closed (R-TIME-ZONE).
NOT_A_PLACE = frozenset({"localtime", "Factory"})


@lru_cache(maxsize=1)
def _iana_names() -> frozenset[str]:
    """Every zone name of the tz database (the system's, else the `tzdata` package's; `posix/` and `right/`
    copies are not in it). Raises when there is none: every account would fail closed, silently."""
    names = frozenset(available_timezones()) - NOT_A_PLACE
    if not names:
        raise RuntimeError("no time zone database: install the tzdata package (a dependency of cureflow)")
    return names


@lru_cache(maxsize=512)
def zone(name: str | None) -> ZoneInfo | None:
    """The ZoneInfo for an IANA name (None and '' mean the default zone); None when the name is invalid or
    names no place."""
    if name is None or (isinstance(name, float) and np.isnan(name)) or name == "":
        name = DEFAULT_TIMEZONE
    if str(name) not in _iana_names():
        return None
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        return None


def is_valid_timezone(name: str | None) -> bool:
    """True for a known IANA name or a missing one (which means the default zone)."""
    return zone(name) is not None


def effective_timezones(tz: pd.Series) -> pd.Series:
    """Each account's zone name, the default where missing or invalid (features need *a* clock)."""
    names = tz.astype(object).where(tz.notna(), DEFAULT_TIMEZONE)
    codes, uniques = pd.factorize(names)
    effective = np.array([name if zone(name) is not None else DEFAULT_TIMEZONE for name in uniques], dtype=object)
    return pd.Series(effective[codes], index=tz.index, dtype=object)


def valid_timezones(tz: pd.Series) -> np.ndarray:
    """Per account, whether its zone is a known IANA name or missing (the vectorised `is_valid_timezone`)."""
    codes, uniques = pd.factorize(tz.astype(object))
    return np.append(np.array([is_valid_timezone(name) for name in uniques], dtype=bool), True)[codes]


def effective_timezone(name: str | None) -> str:
    """One account's zone name, the default where missing or invalid (the scalar `effective_timezones`)."""
    return name if name and zone(name) is not None else DEFAULT_TIMEZONE


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def instant_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime (exact, no float rounding)."""
    return (moment - _EPOCH) // _MICROSECOND * 1000


@lru_cache(maxsize=1 << 16)
def local_midnight_ns(day: date, name: str) -> int:
    """When `day` begins in zone `name`, as UTC nanoseconds: a repeated midnight at its first occurrence,
    a skipped one at the first instant after the gap (the scalar `local_midnight_utc`). Remembered: the
    requests' instalments fall due on the same few days in the same few zones."""
    return instant_ns(datetime.combine(day, time(0), tzinfo=zone(name)))  # fold=0 does both


def local_day_bounds(now_ns: int, name: str) -> tuple[int, int]:
    """[start, end) of the local calendar day holding `now` in zone `name`, as UTC nanoseconds."""
    today = (_EPOCH + timedelta(microseconds=now_ns // 1000)).astimezone(zone(name)).date()
    return local_midnight_ns(today, name), local_midnight_ns(today + timedelta(days=1), name)


def window_code(local: datetime, windows: tuple[Window, ...]) -> int:
    """The index of the window a local wall-clock time falls in, or -1 (the scalar `window_codes`)."""
    minutes, weekend = local.hour * 60 + local.minute, local.weekday() >= 5
    for code, win in enumerate(windows):
        if weekend == win.weekend and win.start.hour * 60 + win.start.minute <= minutes < \
                win.end.hour * 60 + win.end.minute:
            return code
    return -1


def to_local(instants: pd.Series, tz_names: pd.Series) -> pd.Series:
    """Naive local wall-clock times of UTC `instants`, each in its own zone (vectorised by zone)."""
    out = pd.Series(np.empty(len(instants), dtype="datetime64[ns]"), index=instants.index)
    tz_names = pd.Series(np.asarray(tz_names, dtype=object), index=instants.index)
    utc = instants.dt.tz_convert("UTC")
    for name, idx in tz_names.groupby(tz_names, sort=False).groups.items():
        out.loc[idx] = utc.loc[idx].dt.tz_convert(name).dt.tz_localize(None).astype("datetime64[ns]")
    return out


def local_midnight_utc(dates: pd.Series, tz_names: pd.Series) -> pd.Series:
    """The UTC instant at which each calendar date begins in its zone (a due date falls due then)."""
    # (numpy has no "datetime64[ns, UTC]" dtype; a midnight repeated by a DST change starts at its first
    # occurrence, a skipped one at the first instant after the gap: never NaT)
    out = pd.Series(pd.NaT, index=dates.index, dtype="datetime64[ns, UTC]")
    tz_names = pd.Series(np.asarray(tz_names, dtype=object), index=dates.index)
    naive = dates.astype("datetime64[ns]")
    for name, idx in tz_names.groupby(tz_names, sort=False).groups.items():
        first = np.ones(len(idx), dtype=bool)
        localized = naive.loc[idx].dt.tz_localize(name, ambiguous=first, nonexistent="shift_forward")
        out.loc[idx] = localized.dt.tz_convert("UTC").dt.as_unit("ns")
    return out


def window_codes(local: pd.Series, windows: tuple[Window, ...]) -> np.ndarray:
    """For each local time, the index of the window it falls in, or -1 when in none."""
    local = pd.Series(local)
    minutes = (local.dt.hour * 60 + local.dt.minute).to_numpy()
    weekend = (local.dt.day_of_week >= 5).to_numpy()
    codes = np.full(len(local), -1, dtype=np.int64)
    for code, win in enumerate(windows):
        lo = win.start.hour * 60 + win.start.minute
        hi = win.end.hour * 60 + win.end.minute
        hit = (weekend == win.weekend) & (minutes >= lo) & (minutes < hi) & (codes < 0)
        codes[hit] = code
    return codes


def next_window(
    earliest_local: pd.Timestamp, window: Window, hours: tuple[time, time], horizon_days: int = 14
) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The next [start, end) of `window` at or after `earliest_local`, clipped to the allowed `hours`.

    `earliest_local` is a naive local wall-clock time. Returns naive local times, or None when the window
    has no allowed minute at all (for example a window wholly outside the hours).
    """
    lo = max(window.start, hours[0])
    hi = min(window.end, hours[1])
    if lo >= hi:
        return None
    day, first = earliest_local.normalize(), earliest_local.ceil("min")
    opens, closes = timedelta(hours=lo.hour, minutes=lo.minute), timedelta(hours=hi.hour, minutes=hi.minute)
    weekday = day.day_of_week
    for offset in range(horizon_days + 1):
        if ((weekday + offset) % 7 >= 5) != window.weekend:
            continue
        current = day + timedelta(days=offset)
        start, end = max(current + opens, first), current + closes
        if start >= end:
            continue
        return start, end
    return None


def within_hours(local: pd.Timestamp, hours: tuple[time, time]) -> bool:
    """R-HOURS: 20:59 is inside 08:00-21:00, 21:00 is not."""
    return hours[0] <= local.time() < hours[1]
