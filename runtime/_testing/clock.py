"""The clock of a test: the runtime's idea of now, which moves only when the test moves it."""

from __future__ import annotations

from datetime import datetime, timedelta

from .._config.units import parse_duration


class Clock:
    """What the runtime takes for now while a test's app runs: due jobs, cron ticks and
    workflow wake-ups go by it. It starts at the real time and stands still until moved.

    Only the runtime's own time is moved: ``datetime.now()`` in your code, and token
    or cache expiry (wall-clock seconds), keep the real time.
    """

    def __init__(self, start: datetime) -> None:
        self._now = start
        self.jumped_to = start
        """Where `set` last put the clock: no cron tick before it is due."""

    @property
    def now(self) -> datetime:
        """The runtime's now: an aware datetime, in UTC."""
        return self._now

    def read(self) -> datetime:
        return self._now

    def advance(self, duration: float | str | timedelta) -> datetime:
        """Let `duration` pass (seconds, ``"90s"``, ``"1h"``, ``"3d"`` or a timedelta); the
        new now. Every cron tick within it falls due, as for an app that kept running."""
        if isinstance(duration, timedelta):
            seconds = duration.total_seconds()
        else:
            try:
                seconds = float(parse_duration(duration))  # type: ignore[arg-type]
            except ValueError as exc:
                raise ValueError(f"clock.advance({duration!r}): {exc}") from None
        if seconds < 0:
            raise ValueError(f"clock.advance({duration!r}): the clock only moves forward")
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, moment: datetime) -> datetime:
        """Jump to `moment` (aware, not before now): as if the app started then, so no
        cron tick between the two is due. Jobs and workflow wake-ups up to it are."""
        if moment.tzinfo is None:
            raise ValueError(f"clock.set({moment!r}): give an aware datetime (tzinfo=UTC)")
        if moment < self._now:
            raise ValueError(
                f"clock.set({moment.isoformat()}): the clock only moves forward "
                f"(it reads {self._now.isoformat()})"
            )
        self._now = self.jumped_to = moment
        return self._now

    def __repr__(self) -> str:
        return f"<Clock {self._now.isoformat()}>"
