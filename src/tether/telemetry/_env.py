"""An observer configured from the environment, for the command line."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from ..errors import UsageError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

from ._observer import _INSTALL_OTEL, INSTRUMENTATION_NAME, OTEL_ENV, TelemetryObserver


def observer_from_env(environ: Mapping[str, str] | None = None) -> TelemetryObserver | None:
    """An observer exporting spans as `TETHER_OTEL` asks (`environ` defaults to os.environ).

    - unset or empty: None (no telemetry; OpenTelemetry is not even imported);
    - `console`: spans on stderr, one JSON object a line (stdout stays clean for --json);
    - `otlp`: the OTLP exporter (`opentelemetry-exporter-otlp-proto-http`, or `-grpc` when
      `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL=grpc`), configured by the standard
      `OTEL_EXPORTER_OTLP_*` variables (the exporter reads them from os.environ).

    The provider is an SDK `TracerProvider` of its own (not the global one) with a
    `BatchSpanProcessor`, its resource `service.name` from `OTEL_SERVICE_NAME` (default
    `tether`, plus `OTEL_RESOURCE_ATTRIBUTES`). The observer owns it: call `close()` when
    the process is done (an atexit hook of the SDK shuts it down otherwise). Anything else
    in `TETHER_OTEL`, or a missing package, is a UsageError saying what to do.
    """
    env = os.environ if environ is None else environ
    value = env.get(OTEL_ENV, "")
    mode = value.strip().lower()
    if not mode:
        return None
    if mode not in ("console", "otlp"):
        raise UsageError(
            f"unknown {OTEL_ENV}={value!r}: use console (spans on stderr) or otlp "
            "(OTEL_EXPORTER_OTLP_* settings), or leave it unset"
        )
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise UsageError(_INSTALL_OTEL) from None
    exporter: SpanExporter
    if mode == "console":
        exporter = ConsoleSpanExporter(
            out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + "\n"
        )
    else:
        exporter = _otlp_exporter(env)
    service = env.get("OTEL_SERVICE_NAME", "").strip() or INSTRUMENTATION_NAME
    provider = SdkTracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return TelemetryObserver(provider, owns_provider=True)


_OTLP_EXPORTERS = {
    "http/protobuf": (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry-exporter-otlp-proto-http",
    ),
    "grpc": (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry-exporter-otlp-proto-grpc",
    ),
}


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or "http/protobuf"
    ).lower()
    if protocol not in _OTLP_EXPORTERS:
        raise UsageError(
            f"OTLP protocol {protocol!r} is not supported with {OTEL_ENV}=otlp: "
            "set OTEL_EXPORTER_OTLP_PROTOCOL to http/protobuf or grpc"
        )
    module, package = _OTLP_EXPORTERS[protocol]
    try:
        exporter_class = importlib.import_module(module).OTLPSpanExporter
    except ImportError:
        raise UsageError(
            f"{OTEL_ENV}=otlp ({protocol}) needs the OTLP exporter: pip install {package}"
        ) from None
    return cast("SpanExporter", exporter_class())
