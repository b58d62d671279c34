"""Telemetry: OpenTelemetry traces of workflows (one trace per goal), set up from the OTEL_* variables.

`setup_tracing` installs the SDK in a service process when OTEL_* configures traces (the
`choreograph[otel]` extra); `tracing()` is what services ask at start, None when tracing is off.
"""

from ._setup import exporter_names, setup_tracing
from ._tracing import Tracing, message_attributes, span_name, tracing, use_tracer_provider

__all__ = [
    "Tracing",
    "exporter_names",
    "message_attributes",
    "setup_tracing",
    "span_name",
    "tracing",
    "use_tracer_provider",
]
