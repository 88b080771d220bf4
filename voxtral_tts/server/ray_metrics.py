"""The metrics of every Ray Serve replica at ``GET /metrics`` through Ray's proxy, each with a
``replica`` label.

Ray's proxy hands ``/metrics`` to one replica, which knows only its own numbers. So each replica
pushes its metrics (Prometheus' text, :mod:`.metrics`) every :data:`PUSH_INTERVAL_S` seconds to one
small named actor per application, the :class:`MetricsHub` (no CPU reserved; detached, so that it
outlives the replica that created it; found by name by the others; :func:`remove_hub` ends it
with the application). The replica answering a scrape renders its
own metrics fresh, adds the others' latest from the hub — those pushed within
:data:`STALE_AFTER_S`: a replica that died drops out — and labels every sample with its replica's
tag (:func:`merge`). Counters are per replica, as Prometheus expects: ``sum by`` adds them up.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import ray
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

HUB_NAME = "voxtral-tts-metrics"
HUB_NAMESPACE = "voxtral-tts"
PUSH_INTERVAL_S = 1.0
STALE_AFTER_S = 10.0
REPLICA_LABEL = "replica"


@ray.remote(num_cpus=0)
class MetricsHub:
    """The latest metrics text of each replica, with when it came."""

    def __init__(self):
        self.texts: dict[str, tuple[float, str]] = {}

    def push(self, replica: str, text: str) -> None:
        self.texts[replica] = (time.time(), text)

    def drop(self, replica: str) -> None:
        self.texts.pop(replica, None)

    def latest(self, max_age: float) -> dict[str, str]:
        now = time.time()
        return {replica: text for replica, (at, text) in self.texts.items() if now - at <= max_age}


def hub(app_name: str):
    """The application's hub (created by the first replica that asks)."""
    return MetricsHub.options(name=f"{HUB_NAME}:{app_name}", namespace=HUB_NAMESPACE, get_if_exists=True,
                              lifetime="detached").remote()


def remove_hub(app_name: str) -> None:
    """End the application's hub (taking the application down), if there is one."""
    try:
        ray.kill(ray.get_actor(f"{HUB_NAME}:{app_name}", namespace=HUB_NAMESPACE))
    except ValueError:  # none
        pass


class _Families:
    """A collector yielding already built metric families (for :func:`generate_latest`)."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def merge(texts: dict[str, str]) -> bytes:
    """The replicas' metrics (``{replica: Prometheus text}``) as one text, each sample labelled
    with its replica; one family per name (its help and type from the first replica having it)."""
    families: dict[str, object] = {}
    for replica, text in texts.items():
        for family in text_string_to_metric_families(text):
            labelled = [sample._replace(labels={**sample.labels, REPLICA_LABEL: replica}) for sample in family.samples]
            if family.name in families:
                families[family.name].samples.extend(labelled)
            else:
                family.samples = labelled
                families[family.name] = family
    return generate_latest(_Families(list(families.values())))


class ReplicaMetrics:
    """A replica's side: pushes ``render()`` to the hub from a daemon thread, and answers a scrape
    with every live replica's metrics (:meth:`exposition`, which replaces
    :attr:`~.metrics.Metrics.exposition`)."""

    def __init__(self, replica: str, render: Callable[[], bytes], app_name: str):
        self.replica, self.render, self.app_name = replica, render, app_name
        self.hub = hub(app_name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._push_forever, name="voxtral-metrics-push", daemon=True)
        self._thread.start()

    def _push_forever(self) -> None:
        while not self._stop.wait(PUSH_INTERVAL_S):
            try:
                self.hub.push.remote(self.replica, self.render().decode())
            except Exception as exc:  # the hub restarting, the cluster going down: the next push retries
                log.debug("metrics push failed: %s", exc)
                try:
                    self.hub = hub(self.app_name)
                except Exception:
                    pass

    def exposition(self) -> bytes:
        try:
            texts = ray.get(self.hub.latest.remote(STALE_AFTER_S), timeout=5)
        except Exception as exc:  # this replica's own metrics are still worth answering
            log.warning("metrics of the other replicas unavailable: %s", exc)
            texts = {}
        texts[self.replica] = self.render().decode()
        return merge(texts)

    def close(self) -> None:
        self._stop.set()
        try:
            self.hub.drop.remote(self.replica)
        except Exception:
            pass
