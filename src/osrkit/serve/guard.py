"""A deadline on every HTTP request's arrival, and room for new connections, for uvicorn.

uvicorn times out idle keep-alive connections but not a request arriving slowly: a
client sending its headers or body a byte at a time holds its connection, and its place
under ``limit_concurrency`` (which counts open connections, and answers 503 past it), for
as long as it likes, so a few such clients lock everyone else out. ``guarded_protocol``
wraps uvicorn's HTTP protocol class so that

- a request (headers and body) not received in full within ``timeout`` seconds of its
  first byte (or of the connection opening) gets a 408 and the connection is closed;
- a new connection that brings the count to ``max_connections`` first closes (408) the
  connections that have been waiting longest for a request to arrive, so that only
  requests being answered, not connections sending nothing, can fill the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger("osrkit.serve")

# After the 408 the connection is half-closed and what the client still sends is read and
# dropped for this long before closing: closing with unread input sends a TCP reset, which
# makes the client's system drop the 408 unread.
LINGER_S = 1.0


def timeout_response(timeout: float) -> bytes:
    """The raw 408 sent to a client whose request did not arrive in time."""
    message = f"request not received in full within {timeout:g} s (osrkit serve --request-timeout)"
    body = json.dumps({"error": message + "; send it at once"}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def guarded_protocol(
    base: type[asyncio.Protocol], timeout: float, max_connections: int | None = None
) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol class ``base`` (httptools' or h11's: both keep
    the request being received in ``self.cycle``, with ``more_body`` false once its body
    is in, and the server's open connections in ``self.connections``) that closes a
    connection whose request is not in within ``timeout`` seconds, and makes room under
    ``max_connections`` (uvicorn's ``limit_concurrency``) as described above."""
    response = timeout_response(timeout)

    class GuardedProtocol(base):  # type: ignore[valid-type, misc]
        _deadline: asyncio.TimerHandle | None = None
        _waiting_since: float | None = None  # loop time the awaited request's clock started
        _received: Any = None  # the last request received in full
        _lingering = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()
            if max_connections is not None and len(self.connections) >= max_connections:
                self._make_room()

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                return
            if self._deadline is None:  # the first bytes of a request on a kept-alive connection
                self._arm()
            super().data_received(data)
            cycle = self.cycle
            if cycle is not None and not cycle.more_body and cycle is not self._received:
                self._received = cycle
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._waiting_since = self.loop.time()
            self._deadline = self.loop.call_later(timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if not self._lingering:
                self._waiting_since = None

        def _make_room(self) -> None:
            """Close the connections waiting longest for a request (lingering ones first),
            until this one leaves a place free under ``max_connections``."""
            others = [c for c in self.connections if c is not self]
            closing = sum(c.transport.is_closing() for c in others)  # gone at the next turn
            waiting = [c for c in others if c._waiting_since is not None and not c.transport.is_closing()]
            waiting.sort(key=lambda c: (not c._lingering, c._waiting_since))
            excess = len(self.connections) - closing - max_connections + 1  # negative: room enough
            victims = waiting[: max(0, excess)]
            for victim in victims:
                victim._expired(linger=False)
            if victims:
                log.info("closed %d connection(s) sending no request, for a new one", len(victims))

        def _expired(self, linger: bool = True) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if self._lingering:  # answered already; its place is wanted now
                self.connections.discard(self)
                self.transport.close()
                return
            if self.transport.is_closing():
                return
            cycle = self.cycle
            receiving = cycle is not None and cycle is not self._received
            # a 408, unless the request (or the one before it) has its response under way
            answered = (
                cycle.response_started if receiving else cycle is not None and not cycle.response_complete
            )
            if not answered:
                self.transport.write(response)
            if receiving:  # the application stops waiting for the body: it reads a disconnect
                cycle.disconnected = True
                cycle.message_event.set()
            if not linger:
                self._waiting_since = None
                # out of the count now: uvicorn removes it when the loop reports the close,
                # possibly after the new connection's request was counted
                self.connections.discard(self)
                self.transport.close()
                return
            log.info("closed a connection whose request was not in within %g s", timeout)
            self._lingering = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def uvicorn_protocol(timeout: float, max_connections: int | None = None) -> type[asyncio.Protocol]:
    """uvicorn's own HTTP protocol class (httptools where installed, else h11), guarded."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol  # the serve extra

    return guarded_protocol(AutoHTTPProtocol, timeout, max_connections)
