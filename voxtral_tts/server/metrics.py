"""``GET /metrics``: the server's Prometheus metrics (``prometheus-client``), one registry per app.

What is counted, and where it comes from:

- per request, when it ends (:meth:`Metrics.observe_request`, an observer of the app's
  :class:`~.access_log.RequestLog`): ``voxtral_requests_total{endpoint,status,code}``,
  ``voxtral_request_duration_seconds{endpoint}``; for speech, ``voxtral_time_to_first_audio_seconds``,
  ``voxtral_real_time_factor``, ``voxtral_frames_total``, ``voxtral_audio_seconds_total`` and
  ``voxtral_speech_finished_total{reason}`` (end, length, cancelled, failed);
- per decode step (:meth:`Metrics.observe_step`, called by the worker): ``voxtral_decode_batch_rows``;
- read when scraped, from the worker (:class:`~.worker.Synthesizer`): ``voxtral_requests_in_flight``,
  ``voxtral_requests_queued``, ``voxtral_decode_slots``, ``voxtral_decode_slots_free``, the prefix
  cache's ``voxtral_prefix_cache_{hits,misses,evictions}_total``, ``_bytes``, ``_budget_bytes`` and
  ``_entries``, ``voxtral_model_load_seconds`` and ``voxtral_model_info{model,backend,slots}``.

Another part of the server (a WebSocket, a Wyoming server) counts its requests the same way by
ending them through the app's :class:`~.access_log.RequestLog` (``app.state.request_log.track``):
the record's fields drive every per-request metric above. Its own metrics, if any, go in
``app.state.metrics.registry``. Under Ray Serve each replica's metrics are gathered with a
``replica`` label by :mod:`.ray_metrics`, which replaces :attr:`Metrics.exposition`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from .access_log import FINISH_REASONS, RequestRecord

if TYPE_CHECKING:
    from .worker import Synthesizer

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: seconds: from a tenth of a second (a short answer on a GPU) to minutes (long text on a CPU)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
TTFA_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
#: generation time over audio time: below 1 is faster than real time
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
ROW_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
#: the endpoint label of a request no route matched (any path: kept out of the label values)
UNMATCHED = "unmatched"


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("voxtral_requests", "HTTP requests and WebSocket sessions answered, by endpoint "
                                "(route template), status and error code ('' for none)",
                                ["endpoint", "status", "code"], registry=r)
        self.latency = Histogram("voxtral_request_duration_seconds", "Time from a request's arrival to the end "
                                 "of its answer (streams: the last byte)", ["endpoint"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.ttfa = Histogram("voxtral_time_to_first_audio_seconds", "Time from a speech request's arrival to "
                              "its first audio (queueing included)", buckets=TTFA_BUCKETS, registry=r)
        self.rtf = Histogram("voxtral_real_time_factor", "A speech request's time from submission to its last "
                             "audio over the audio's duration (queueing included; < 1: faster than real time)",
                             buckets=RTF_BUCKETS, registry=r)
        self.frames = Counter("voxtral_frames", "Audio frames generated (80 ms of audio each), cancelled "
                              "requests' included", registry=r)
        self.audio = Counter("voxtral_audio_seconds", "Seconds of audio generated", registry=r)
        self.finished = Counter("voxtral_speech_finished", "Speech requests ended, by finish reason: end "
                                "(every part said END_AUDIO), length (a part cut at its frame budget), cancelled "
                                "(the client went away), failed", ["reason"], registry=r)
        self.rows = Histogram("voxtral_decode_batch_rows", "Text parts decoded together in one step (each step "
                              "observed): the decode batch's occupancy, at most voxtral_decode_slots",
                              buckets=ROW_BUCKETS, registry=r)
        self.exposition: Callable[[], bytes] = self.render
        for reason in FINISH_REASONS:
            self.finished.labels(reason)  # each reason shows, at 0, before its first request

    def watch(self, synth: Synthesizer) -> None:
        """Read the gauges of ``synth`` (load, decode slots, prefix cache, model) when scraped."""
        self.registry.register(_WorkerCollector(synth))

    def render(self) -> bytes:
        """This registry in Prometheus' text format."""
        return generate_latest(self.registry)

    def observe_request(self, record: RequestRecord) -> None:
        endpoint = record.endpoint or UNMATCHED
        self.requests.labels(endpoint, str(record.status or 0), record.error or "").inc()
        if record.latency is not None:
            self.latency.labels(endpoint).observe(record.latency)
        if record.finish_reason is not None:
            self.finished.labels(record.finish_reason).inc()
        if record.ttfa is not None:
            self.ttfa.observe(record.ttfa)
        if record.frames:
            self.frames.inc(record.frames)
        if record.audio_seconds:
            self.audio.inc(record.audio_seconds)
            if record.generation is not None and record.finish_reason in ("end", "length"):
                self.rtf.observe(record.generation / record.audio_seconds)

    def observe_step(self, rows: int) -> None:
        if rows:
            self.rows.observe(rows)


class _WorkerCollector:
    """The gauges read from the worker when scraped (see the module's docstring)."""

    def __init__(self, synth: Synthesizer):
        self.synth = synth

    def describe(self):
        return []  # built at each scrape; nothing to check at registration

    def collect(self):
        synth = self.synth
        load = synth.load
        yield GaugeMetricFamily("voxtral_requests_in_flight", "Speech requests generating (a part started)",
                                value=load.in_flight)
        yield GaugeMetricFamily("voxtral_requests_queued", "Speech requests admitted and waiting for a decoding "
                                "slot", value=load.queued)
        tts = synth.tts
        if tts is None:
            return
        yield GaugeMetricFamily("voxtral_decode_slots", "Decoding slots (--max-batch)", value=tts.backend.max_batch)
        yield GaugeMetricFamily("voxtral_decode_slots_free", "Decoding slots free after the latest step",
                                value=load.free_slots)
        if synth.load_seconds is not None:
            yield GaugeMetricFamily("voxtral_model_load_seconds", "Seconds the model took to load",
                                    value=synth.load_seconds)
        info = InfoMetricFamily("voxtral_model", "The model served")
        info.add_metric([], {"model": synth.options.model_id, "backend": tts.backend.name,
                             "slots": str(tts.backend.max_batch)})
        yield info
        cache = tts.scheduler.prefix_cache
        if cache is None:
            return
        stats = cache.stats
        for name, value, text in (("hits", stats.hits, "voice prefixes found in the cache"),
                                  ("misses", stats.misses, "voice prefixes computed (not in the cache)"),
                                  ("evictions", stats.evictions, "cache entries dropped for the byte budget")):
            yield CounterMetricFamily(f"voxtral_prefix_cache_{name}", f"Prefix cache: {text}", value=value)
        yield GaugeMetricFamily("voxtral_prefix_cache_bytes", "Prefix cache: bytes held", value=stats.bytes)
        yield GaugeMetricFamily("voxtral_prefix_cache_budget_bytes", "Prefix cache: byte budget",
                                value=stats.budget_bytes)
        yield GaugeMetricFamily("voxtral_prefix_cache_entries", "Prefix cache: entries held", value=stats.entries)
