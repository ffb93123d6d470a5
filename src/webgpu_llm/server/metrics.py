"""`GET /metrics`: Prometheus text from the scheduler's counters and the server's histograms.

Counters the engine keeps (requests, tokens) are read at scrape time; the rate of generated
tokens is taken over the last `WINDOW_S` seconds from samples the server takes every second;
time to first token, inter-token latency and request durations are histograms of finished
requests; answers by finish reason and refused requests by status are counted here.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

WINDOW_S = 10.0
PREFIX = "webgpu_llm"


class _EngineCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        s = self.m.scheduler
        st = s.stats
        yield CounterMetricFamily(f"{PREFIX}_requests", "requests the engine accepted", value=st.requests)
        yield CounterMetricFamily(f"{PREFIX}_prompt_tokens", "prompt tokens the engine processed",
                                  value=st.prompt_tokens)
        yield CounterMetricFamily(f"{PREFIX}_generated_tokens", "tokens the engine generated",
                                  value=st.generated_tokens)
        yield GaugeMetricFamily(f"{PREFIX}_generated_tokens_per_second",
                                f"tokens generated per second over the last {WINDOW_S:g} s", value=self.m.rate())
        yield GaugeMetricFamily(f"{PREFIX}_queue_depth", "requests waiting for a sequence slot",
                                value=s.queue_depth)
        yield GaugeMetricFamily(f"{PREFIX}_active_sequences", "requests being decoded", value=s.active)
        yield GaugeMetricFamily(f"{PREFIX}_parallel_sequences", "sequence slots (--parallel)", value=s.parallel)
        yield GaugeMetricFamily(f"{PREFIX}_context_tokens", "context length of each sequence (--ctx)", value=s.ctx)
        used, total = s.kv_tokens
        yield GaugeMetricFamily(f"{PREFIX}_kv_cache_used_tokens", "KV-cache positions the running requests hold",
                                value=used)
        yield GaugeMetricFamily(f"{PREFIX}_kv_cache_tokens", "KV-cache positions there are (--kv-tokens, or --parallel x --ctx)",
                                value=total)
        yield GaugeMetricFamily(f"{PREFIX}_streams_open", "responses being sent", value=self.m.open_streams)
        # the batched engine's steps (0 with --parallel 1): rows / steps is the batch a step
        # ran, and the wait the share of the engine thread's time the GPU had it blocked
        yield CounterMetricFamily(f"{PREFIX}_engine_steps", "batched steps the engine submitted", value=st.steps)
        yield CounterMetricFamily(f"{PREFIX}_engine_step_rows", "rows (decode tokens and prompt tokens) of those steps",
                                  value=st.step_rows)
        yield CounterMetricFamily(f"{PREFIX}_engine_wait_seconds", "engine thread time blocked on the GPU's read-backs",
                                  value=st.wait_s)


class Metrics:
    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.open_streams = 0
        self._samples: deque[tuple[float, int]] = deque()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_EngineCollector(self))
        self.finished = Counter(f"{PREFIX}_responses", "answers sent, by finish reason",
                                ["finish_reason"], registry=self.registry)
        self.refused = Counter(f"{PREFIX}_refused_requests", "requests answered with an error, by HTTP status",
                               ["status"], registry=self.registry)
        latency = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds", "from submission to the first token",
                              buckets=latency, registry=self.registry)
        self.itl = Histogram(f"{PREFIX}_inter_token_latency_seconds",
                             "mean time between tokens of each finished request",
                             buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1), registry=self.registry)
        self.duration = Histogram(f"{PREFIX}_request_duration_seconds", "from submission to the last token",
                                  buckets=latency, registry=self.registry)

    def sample(self) -> None:
        """Record the engine's token count now (the server calls this every second)."""
        now = time.monotonic()
        self._samples.append((now, self.scheduler.stats.generated_tokens))
        while len(self._samples) > 2 and now - self._samples[1][0] >= WINDOW_S:
            self._samples.popleft()

    def rate(self) -> float:
        self.sample()
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def observe(self, c: Any, finish_reason: str) -> None:
        """A finished request: its finish reason and timings."""
        self.finished.labels(finish_reason).inc()
        end = c.finished_at or time.perf_counter()
        if c.first_token_at is not None:
            self.ttft.observe(c.first_token_at - c.submitted_at)
            if len(c.tokens) > 1:
                self.itl.observe((end - c.first_token_at) / (len(c.tokens) - 1))
        self.duration.observe(end - c.submitted_at)

    def text(self) -> bytes:
        return generate_latest(self.registry)
