"""``voxtral-serve``'s run: uvicorn with a bounded drain (:func:`run`).

On the first SIGTERM (or SIGINT), the server stops admitting — new speech requests get 503
``shutting_down`` with ``Connection: close``, ``/ready`` 503 so that a load balancer takes it out —
and keeps listening while the requests in progress (queued ones included) finish. When none is
left it exits. At the deadline (``--graceful-timeout`` seconds after the signal) the requests still
in progress are ended visibly: a whole file's client gets 503 ``shutting_down``, a server-sent event
stream ends with an ``error`` event, a chunked audio stream is cut (an incomplete transfer), each
logged; their clients get :data:`CUT_GRACE_S` seconds to receive that, then the connections left
are closed (after at most :data:`CLOSE_WAIT_S` more) and the process exits. A second SIGTERM or SIGINT exits at once.

Under Kubernetes, keep ``--graceful-timeout`` a few seconds under the pod's
``terminationGracePeriodSeconds`` (30 s by default, then SIGKILL): the default,
:data:`DEFAULT_GRACEFUL_TIMEOUT_S`, leaves 5 s for ending requests and exiting.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import uvicorn

log = logging.getLogger(__name__)

#: the default --graceful-timeout: Kubernetes' default terminationGracePeriodSeconds (30 s) less 5 s
DEFAULT_GRACEFUL_TIMEOUT_S = 25.0
#: after the deadline ended the requests in progress, how long their clients get to receive the end
CUT_GRACE_S = 1.5
#: then uvicorn's own wait for the connections left, before it cancels their tasks (cut connections)
CLOSE_WAIT_S = 1.0
#: a second signal exits at once; if the event loop does not return within this, the process ends anyway
FORCE_EXIT_S = 3.0


class GracefulServer(uvicorn.Server):
    """uvicorn's server with the drain described in the module's docstring; ``synth``: the app's
    :class:`~.worker.Synthesizer`."""

    def __init__(self, config: uvicorn.Config, synth, graceful_timeout: float):
        super().__init__(config)
        self.synth = synth
        self.graceful_timeout = graceful_timeout
        self.signalled: float | None = None  # when the first signal came
        self.ending = False  # the deadline passed: the requests left were ended

    def handle_exit(self, sig: int, frame) -> None:
        """A signal handler (the main thread, between two bytecodes of the event loop): it only sets flags."""
        if self.signalled is None:
            self.signalled = time.monotonic()
            self.synth.drain()
            return
        self.force_exit = self.should_exit = True
        timer = threading.Timer(FORCE_EXIT_S, os._exit, args=(128 + sig,))
        timer.daemon = True
        timer.start()

    def busy(self) -> int:
        """Requests in progress: admitted to the worker, or an answer still being sent."""
        return max(self.synth.pending, len(self.server_state.tasks))

    async def on_tick(self, counter: int) -> bool:
        if self.force_exit:
            log.warning("a second signal: exiting at once, %d requests in progress", self.busy())
        elif self.signalled is not None and not self.should_exit:
            self._drain_tick()
        return await super().on_tick(counter)

    def _drain_tick(self) -> None:
        """Called every 0.1 s while draining."""
        elapsed = time.monotonic() - self.signalled
        busy = self.busy()
        if not hasattr(self, "_announced"):
            self._announced = True
            log.info("shutting down: admitting nothing more; %d requests in progress get up to %.0f s", busy,
                     self.graceful_timeout)
        if not busy:
            log.info("shutting down: no request left after %.1f s", elapsed)
            self.should_exit = True
        elif not self.ending and elapsed >= self.graceful_timeout:
            log.warning("shutting down: the graceful timeout (%.0f s) passed; ending %d requests in progress",
                        self.graceful_timeout, busy)
            self.ending = True
            self.synth.end_all()
        elif self.ending and elapsed >= self.graceful_timeout + CUT_GRACE_S:
            log.warning("shutting down: closing %d connections still open", busy)
            self.should_exit = True


def http_server(app, *, host: str, port: int, graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT_S,
                ssl_certfile: str | None = None, ssl_keyfile: str | None = None, access_log: bool = False,
                log_level: str = "info") -> GracefulServer:
    """The server of ``app`` (:func:`~.app.create_app`'s), to run or to ``serve()`` in an event loop
    of one's own (``voxtral-serve --wyoming``). Logging is the process's own
    (:func:`~.access_log.configure_logging`); uvicorn's access log only with ``access_log``."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level=log_level, access_log=access_log,
                            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                            timeout_graceful_shutdown=CLOSE_WAIT_S)
    return GracefulServer(config, app.state.synthesizer, graceful_timeout)


def exit_if_forced(server: GracefulServer) -> None:
    """After a second signal: the process ends now, whatever threads are left."""
    if server.force_exit:
        os._exit(128 + signal.SIGTERM)


def run(app, **options) -> None:
    """Serve ``app`` until a signal (see the module's docstring); ``options``: :func:`http_server`'s."""
    server = http_server(app, **options)
    server.run()
    exit_if_forced(server)
