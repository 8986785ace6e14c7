"""OpenTelemetry spans from the journal, following the GenAI semantic conventions.

`TelemetryObserver` turns journal events into spans as they are appended:

    invoke_agent {agent}          one per run segment (a drive of the run in a process)
    └─ cycle {n}                  one per cycle, attribute tether.correlation_id
       ├─ chat {model}            model call: gen_ai.operation.name=chat, gen_ai.request.model,
       │                          gen_ai.usage.input_tokens / output_tokens,
       │                          gen_ai.response.finish_reasons
       └─ execute_tool {tool}     tool call: gen_ai.operation.name=execute_tool,
          └─ invoke_agent {sub}   gen_ai.tool.name, gen_ai.tool.call.id (a sub-agent's run
                                  nests under the tool call that started it)

Every span carries `tether.run_id`, `tether.correlation_id` (cycles and below) and
`tether.event_id` (the event that opened it); start and end times are the journal's
timestamps. Approvals, budget checks, compactions and limits become span events.

Wire it with `instrument(store, TelemetryObserver(tracer_provider))`: the returned store
feeds every appended event to the observer. `export_run(store, run_id, observer)` sends
a stored run's spans after the fact (a backfill, or a run driven without telemetry).

Spans are never held for a worker's lifetime: a run segment ends when the run ends,
pauses or its lease is released, and the provider is flushed then (and at most every
`flush_interval_s` while a long run goes on), so a worker that never shuts down still
exports everything. A reader takes a role like every other (default `operator`): events
above it produce no span, and error texts are redacted.

OpenTelemetry is an optional extra (`pip install 'tether-runtime[otel]'`); this module
imports without it and says what to install when an observer is created.

From the command line: `observer_from_env()` reads `TETHER_OTEL` (`console`: spans as one
JSON object a line on stderr; `otlp`: the OTLP exporter, set up by the standard
`OTEL_EXPORTER_OTLP_*` variables), and `tether run`, `resume`, `demo` and `worker` use it.
"""

from ._env import observer_from_env
from ._observer import INSTRUMENTATION_NAME, OTEL_ENV, TelemetryObserver
from ._store import export_run, instrument

__all__ = [
    "INSTRUMENTATION_NAME",
    "OTEL_ENV",
    "TelemetryObserver",
    "export_run",
    "instrument",
    "observer_from_env",
]
