"""OpenTelemetry spans, opt-in: one ``smallfleet.step`` span per step and a ``smallfleet.attempt``
child per model call, exported over OTLP/HTTP to ``[telemetry] otlp_endpoint`` (or
``SMALLFLEET_OTLP_ENDPOINT``). Needs the ``otel`` extra (``pip install 'smallfleet[otel]'``).

Spans are built after the step from the times the cascade recorded, so a gateway without telemetry
pays nothing and one with it pays only for the export (batched, in the SDK's own thread). A client's
W3C ``traceparent`` header makes the step a child of the client's span, so an agent's trace shows
what the gateway did inside each call. Attributes carry ids, models, tiers, tokens, costs and check
names: never request text, run or session names (clients choose those), or anything pseudonymised.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .errors import NotAvailableError
from .outcome import Outcome
from .step import Step


def traces_url(endpoint: str) -> str:
    """A collector's base URL (``http://collector:4318``) or its full traces URL."""
    return endpoint.rstrip("/") + "/v1/traces" if urlsplit(endpoint).path in ("", "/") else endpoint


class Telemetry:
    """A tracer provider of our own (never the process-wide one: the application may have its own)."""

    def __init__(self, endpoint: str | None = None, *, exporter: Any = None, service: str = "smallfleet") -> None:
        try:
            from opentelemetry.propagators.textmap import DefaultGetter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError as e:
            raise NotAvailableError(f"OpenTelemetry tracing needs the SDK ({e}).", hint="pip install 'smallfleet[otel]'") from e
        if exporter is None:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as e:
                raise NotAvailableError(f"the OTLP exporter is not installed ({e}).", hint="pip install 'smallfleet[otel]'") from e
            exporter = OTLPSpanExporter(endpoint=traces_url(endpoint or ""), timeout=5)
        self._provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("smallfleet")
        self._propagator, self._getter = TraceContextTextMapPropagator(), DefaultGetter()

    def step(self, step: Step, outcome: Outcome | None, ended: float, error: str | None = None) -> None:
        """The step's span and its attempts' (``outcome`` None: the step failed before any answer)."""
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        parent = self._propagator.extract({"traceparent": step.traceparent}, getter=self._getter) if step.traceparent else None
        attrs: dict[str, Any] = {"smallfleet.step_id": step.step_id, "smallfleet.step_kind": step.kind.value}
        if outcome is not None:
            final = outcome.final
            attrs.update({"smallfleet.model": final.spec.name, "smallfleet.tier": final.tier,
                          "smallfleet.attempts": len(outcome.attempts), "smallfleet.escalated": len(outcome.attempts) > 1,
                          "smallfleet.verified": final.passed, "smallfleet.cost_usd": outcome.cost_usd,
                          "smallfleet.frontier_cost_usd": outcome.frontier_cost_usd})
        span = self._tracer.start_span("smallfleet.step", context=parent, kind=SpanKind.SERVER, attributes=attrs,
                                       start_time=_ns(step.started))
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error[:200]))
        inside = set_span_in_context(span)
        for i, a in enumerate(outcome.attempts if outcome is not None else []):
            r = a.result
            child = self._tracer.start_span("smallfleet.attempt", context=inside, kind=SpanKind.CLIENT, start_time=_ns(a.started or step.started),
                                            attributes={
                "smallfleet.attempt": i, "gen_ai.request.model": a.spec.name, "smallfleet.tier": a.tier,
                "smallfleet.local": a.spec.is_local, "gen_ai.usage.input_tokens": r.tokens_in if r else 0,
                "gen_ai.usage.output_tokens": r.tokens_out if r else 0, "smallfleet.cost_usd": a.cost_usd,
                "smallfleet.passed": a.passed, "smallfleet.escalated": a.escalated,
                "smallfleet.checks_failed": [v.check for v in a.verdicts if not v.passed],
                "smallfleet.pseudonymised": max(a.pseudonymised, 0)})
            if a.error:
                child.set_status(Status(StatusCode.ERROR, a.error.split(":", 1)[0]))  # the kind, not a message that may quote text
            child.end(end_time=_ns(a.ended or ended))
        span.end(end_time=_ns(ended))

    def flush(self) -> None:
        self._provider.force_flush(5_000)

    def close(self) -> None:
        self._provider.shutdown()


def _ns(t: float) -> int:
    return int(t * 1e9)
