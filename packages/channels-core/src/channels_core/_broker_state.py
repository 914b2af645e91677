"""What the broker has of each group and pattern, and the one call in flight per name.

The channel asks its layer to subscribe a name when a local subscriber needs
it and nobody has, and to unsubscribe it when its last local subscriber
leaves. Those calls run without any channel-wide lock, so that a subscribe
stuck in an outage holds up neither other names nor leaving. The order per
name is kept by this invariant:

    For each name, the layer sees subscribe and unsubscribe calls strictly
    alternating, starting with a subscribe, and never two at once: a call
    for a name starts only after the previous call for it has ended.

It follows from three rules, each applied synchronously (no await between
reading and updating the state, so concurrent tasks cannot interleave):

* A name with no call in flight and nothing at the broker is *claimed* by
  the first subscriber that needs it, which issues the subscribe; every
  other subscriber that needs it meanwhile waits for that call's outcome:
  success, and the name is live; an error, and it fails with the same error;
  cancellation of the issuer, and it claims the name again, once its clean-up
  unsubscribe (next rule) has ended.
* A subscribe that fails (error or cancellation) is followed at once by an
  unsubscribe of the same names, since the layer may hold them in part.
* The last local subscriber of a live name unsubscribes it. It cannot be
  waiting for someone else's subscribe: a name has a subscribe in flight only
  while its issuer is a local subscriber that is not live yet, and a name
  with an unsubscribe in flight is claimed again only once that has ended.

So a subscriber waits only for calls of its own names: a subscribe another
task started for it (bounded by the layer's subscribe timeout), or an
unsubscribe just issued for it (bounded by the channel's unsubscribe_timeout;
the network layers return from it at once). Leaving waits for no one.
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio

from .subscriber import Subscriber

__all__ = ["BrokerCall", "BrokerState"]


class BrokerCall:
    """One subscribe or unsubscribe of some names, issued by one task; others may await it."""

    __slots__ = ("_done", "_waiter", "error", "groups", "patterns", "subscribing")

    def __init__(self, subscribing: bool, groups: list[str], patterns: list[str]) -> None:
        self.subscribing = subscribing
        self.groups = groups
        self.patterns = patterns
        #: What the call raised (an exception, or the issuer's cancellation).
        self.error: BaseException | None = None
        self._done = False
        self._waiter: anyio.Event | None = None  # made by the first to wait: most never do

    def __repr__(self) -> str:
        kind = "subscribe" if self.subscribing else "unsubscribe"
        return f"<BrokerCall {kind} {[*self.groups, *self.patterns]!r}>"

    async def wait(self) -> None:
        """Return once the call has ended (see `error`)."""
        if not self._done:
            if self._waiter is None:
                self._waiter = anyio.Event()
            await self._waiter.wait()

    def _end(self, error: BaseException | None) -> None:
        self.error = error
        self._done = True
        if self._waiter is not None:
            self._waiter.set()


#: A name's state: absent, nothing at the broker and no call in flight;
#: ``LIVE``, subscribed at the broker; a `BrokerCall`, that call in flight.
LIVE = None
_Table = dict[str, BrokerCall | None]


class BrokerState:
    """The broker side of every group and pattern of one channel (see the module doc)."""

    def __init__(self) -> None:
        self._groups: _Table = {}
        self._patterns: _Table = {}

    def claim(self, subscriber: Subscriber) -> tuple[BrokerCall | None, list[BrokerCall]]:
        """What `subscriber` must do before it is live.

        Returns the subscribe it must issue itself (for the names it just
        claimed; None if none), and the calls of others it must wait for.
        Nothing left to do: ``(None, [])``.
        """
        others: dict[BrokerCall, None] = {}
        groups = _claim(self._groups, subscriber.groups, others)
        patterns = _claim(self._patterns, subscriber.patterns, others)
        if not (groups or patterns):
            return None, list(others)
        call = BrokerCall(True, groups, patterns)
        _mark(self._groups, groups, call)
        _mark(self._patterns, patterns, call)
        return call, list(others)

    def unsubscribe(
        self, groups: Iterable[str], patterns: Iterable[str], failed: BrokerCall | None = None
    ) -> BrokerCall | None:
        """The unsubscribe to issue for names nobody needs any more, and `failed`'s names.

        Of `groups` and `patterns` (names whose last local subscriber has
        left), only the live ones need it; `failed` is a subscribe that has
        just failed. None if there is nothing to unsubscribe.
        """
        if failed is not None:
            groups = [*groups, *failed.groups]
            patterns = [*patterns, *failed.patterns]
        gone_groups = _leaving(self._groups, groups, failed)
        gone_patterns = _leaving(self._patterns, patterns, failed)
        if not (gone_groups or gone_patterns):
            return None
        call = BrokerCall(False, gone_groups, gone_patterns)
        _mark(self._groups, gone_groups, call)
        _mark(self._patterns, gone_patterns, call)
        return call

    def finish(self, call: BrokerCall, error: BaseException | None = None) -> None:
        """Record how `call` ended and wake whoever waits for it."""
        live = call.subscribing and error is None
        _settle(self._groups, call.groups, call, live)
        _settle(self._patterns, call.patterns, call, live)
        call._end(error)


def _claim(table: _Table, names: tuple[str, ...], others: dict[BrokerCall, None]) -> list[str]:
    claimed = []
    for name in names:
        if name not in table:
            claimed.append(name)
        elif (call := table[name]) is not LIVE:
            others[call] = None
    return claimed


def _leaving(table: _Table, names: Iterable[str], failed: BrokerCall | None) -> list[str]:
    """Of `names`, each one that is live or held by `failed`, once."""
    return [
        name
        for name in dict.fromkeys(names)
        if name in table and ((call := table[name]) is LIVE or call is failed)
    ]


def _mark(table: _Table, names: list[str], call: BrokerCall) -> None:
    for name in names:
        table[name] = call


def _settle(table: _Table, names: list[str], call: BrokerCall, live: bool) -> None:
    for name in names:
        if table.get(name, LIVE) is call:  # not taken over by a later call
            if live:
                table[name] = LIVE
            else:
                del table[name]
