"""The server tokenizer's fallbacks, against small local HTTP servers: a server without
`/tokenize` is asked once, a broken answer is never trusted, and texts are counted once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import tether.models._base as models_base
from tether.models import Message
from tether.models._server_tokens import ServerTokenizer, tokenize_url
from tether.models._tokens import estimate_tokens
from tether.models.openai import MESSAGE_OVERHEAD, OpenAIModel


class Server:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, **body})
                status, payload = outer.answer(self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(autouse=True)
def allow_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models_base, "ALLOW_MODEL_REQUESTS", True)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    made = Server(request.param)
    yield made
    made.close()


def words(path: str, body: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"tokens": list(range(len(body["content"].split())))}


MESSAGES = (
    Message(role="system", content="be brief"),
    Message(role="user", content="one two three four"),
)


@pytest.mark.parametrize("server", [words], indirect=True)
def test_counts_come_from_the_server_once_per_text(server: Server) -> None:
    model = OpenAIModel("local", base_url=server.base_url, api_key="k")
    assert model.count_tokens(MESSAGES) == (2 + 4) + 3 * MESSAGE_OVERHEAD
    model.count_tokens(MESSAGES)
    assert [r["content"] for r in server.requests] == ["be brief", "one two three four"]
    assert all(r["path"] == "/tokenize" for r in server.requests)


@pytest.mark.parametrize(
    "server", [lambda path, body: (404, {"error": "not found"})], indirect=True
)
def test_a_server_without_a_tokenizer_is_asked_once(server: Server) -> None:
    model = OpenAIModel("local", base_url=server.base_url, api_key="k")
    expected = estimate_tokens(MESSAGES) + MESSAGE_OVERHEAD
    assert model.count_tokens(MESSAGES) == expected
    assert model.count_tokens(MESSAGES) == expected
    assert len(server.requests) == 1


@pytest.mark.parametrize("server", [lambda path, body: (200, {"tokens": "many"})], indirect=True)
def test_a_malformed_answer_is_never_trusted(server: Server) -> None:
    model = OpenAIModel("local", base_url=server.base_url, api_key="k")
    assert model.count_tokens(MESSAGES) == estimate_tokens(MESSAGES) + MESSAGE_OVERHEAD


def test_an_unreachable_server_falls_back_to_the_estimate() -> None:
    tokenizer = ServerTokenizer("http://127.0.0.1:9/v1", timeout_s=0.5)
    assert tokenizer.count("hello") is None and tokenizer.available is False


def test_requests_forbidden_means_no_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models_base, "ALLOW_MODEL_REQUESTS", False)
    tokenizer = ServerTokenizer("http://127.0.0.1:9/v1", timeout_s=0.5)
    assert tokenizer.count("hello") is None and tokenizer.available is None


def test_the_tokenize_url_sits_beside_the_chat_api() -> None:
    assert tokenize_url("http://h:8080/v1") == "http://h:8080/tokenize"
    assert tokenize_url("http://h:8080/v1/") == "http://h:8080/tokenize"
    assert tokenize_url("http://h:8080") == "http://h:8080/tokenize"


def test_a_bad_tokenizer_name_is_a_usage_error() -> None:
    from tether.errors import UsageError

    with pytest.raises(UsageError, match="tokenizer is one of"):
        OpenAIModel("local", base_url="http://h/v1", api_key="k", tokenizer="sentencepiece")
