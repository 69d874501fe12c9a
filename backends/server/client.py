"""A small HTTP client for one server: JSON requests and server-sent event streams that can be cancelled.

httpx is an optional dependency (``llm-tui[remote]``), imported when a
client is made. The API key, when there is one, only ever lives here and in
the request's header: it is never stored, exported or logged.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

from backends.core.errors import LlmTuiError, MissingPackageError

#: Seconds to connect.
CONNECT_TIMEOUT = 5.0
#: Seconds for a small request (probe, tokenize, metrics).
SHORT_TIMEOUT = 10.0
#: Seconds a stream may stay silent (a long prefill on a busy server is silent too) before the
#: turn ends with an error; LLM_TUI_SERVER_TIMEOUT changes it.
STREAM_SILENCE_TIMEOUT = 300.0


def stream_timeout() -> float:
    value = os.environ.get("LLM_TUI_SERVER_TIMEOUT")
    try:
        return float(value) if value else STREAM_SILENCE_TIMEOUT
    except ValueError:
        return STREAM_SILENCE_TIMEOUT


class ServerError(LlmTuiError):
    """The server could not be reached, or answered with an error."""


def is_url(source: str | None) -> bool:
    return bool(source) and str(source).startswith(("http://", "https://"))


class ServerClient:
    """One server: ``base`` is its OpenAI-compatible root (``http://host:port/v1``)."""

    def __init__(self, base: str, api_key: str | None = None) -> None:
        try:
            import httpx
        except ImportError:
            raise MissingPackageError("httpx", "opening a model served by URL", extra="remote") from None
        self.base = base.rstrip("/")
        self.root = self.base[:-3] if self.base.endswith("/v1") else self.base  # where /metrics, /tokenize live
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._httpx = httpx
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(SHORT_TIMEOUT, connect=CONNECT_TIMEOUT))

    def url(self, path: str) -> str:
        """``/v1/...`` paths go under the API root, others (``/metrics``, ``/tokenize``) under the server's."""
        if path.startswith("/v1/"):
            return self.base + path[3:]
        return self.root + path

    def _call(self, method: str, path: str, body: dict | None = None, *, timeout: float | None = None):
        try:
            response = self._client.request(method, self.url(path), json=body,
                                            timeout=timeout if timeout is not None else SHORT_TIMEOUT)
        except self._httpx.HTTPError as err:
            raise ServerError(f"cannot reach {self.url(path)}: {type(err).__name__}: {err}",
                              "check the URL and that the server is running") from None
        return response

    def get(self, path: str) -> tuple[int, str]:
        """(status, body text) of a GET; never raises for an HTTP error status."""
        response = self._call("GET", path)
        return response.status_code, response.text

    def get_json(self, path: str):
        response = self._call("GET", path)
        return _json_of(response, path)

    def post_json(self, path: str, body: dict, *, timeout: float | None = None):
        response = self._call("POST", path, body, timeout=timeout)
        return _json_of(response, path)

    def stream(self, path: str, body: dict) -> "EventStream":
        """A server-sent event stream of JSON objects; ``close()`` it to cancel the request."""
        return EventStream(self, path, body)

    def close(self) -> None:
        self._client.close()


class EventStream:
    """The ``data:`` lines of an SSE response, as JSON objects, until ``[DONE]``.

    Closing it closes the connection, which is how OpenAI-compatible servers
    learn that the client is gone and cancel the request.
    """

    def __init__(self, client: ServerClient, path: str, body: dict) -> None:
        httpx = self._httpx = client._httpx
        self._response = None
        self._closed = False  # closed by us (a stop), so an end or an error is no fault of the server
        self.finished = False  # the server said [DONE] (not every server does: see the remote runner)
        self._silence = stream_timeout()
        self._context = client._client.stream(
            "POST", client.url(path), json=body,
            timeout=httpx.Timeout(self._silence, connect=CONNECT_TIMEOUT))
        try:
            self._response = self._context.__enter__()
        except httpx.HTTPError as err:
            raise ServerError(f"cannot reach {client.url(path)}: {type(err).__name__}: {err}",
                              "check the URL and that the server is running") from None
        if self._response.status_code >= 400:
            self._response.read()
            text = self._response.text
            self.close()
            raise ServerError(f"{client.url(path)} answered {self._response.status_code}: {_detail(text)}",
                              _hint(self._response.status_code, "check the model name (--model) and the "
                                                                 "request's parameters"))

    def __iter__(self) -> Iterator[dict]:
        """The stream's JSON objects; a line that is not JSON, silence past the timeout or a broken
        connection raise ServerError (what came before it has been given already)."""
        try:
            for line in self._response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    self.finished = True
                    return
                try:
                    yield json.loads(data)
                except json.JSONDecodeError:
                    raise ServerError(f"the server sent a stream line that is not JSON: {_detail(data)}",
                                      "is this an OpenAI-compatible server? the reply so far is kept") from None
        except ServerError:
            raise
        except Exception as err:
            if self._closed:
                return  # closed on purpose: the turn was stopped
            if isinstance(err, self._httpx.ReadTimeout):
                raise ServerError(f"the server sent nothing for {self._silence:.0f} s",
                                  "it may be overloaded or still reading a long prompt; "
                                  "LLM_TUI_SERVER_TIMEOUT=SECONDS waits longer") from None
            raise ServerError(f"the stream from the server broke: {type(err).__name__}: {err}",
                              "the reply so far is kept") from None


    def close(self) -> None:
        self._closed = True
        if self._response is not None and not self._response.is_closed:
            self._response.close()
        try:
            self._context.__exit__(None, None, None)
        except Exception:
            pass


def _json_of(response, path: str):
    if response.status_code >= 400:
        raise ServerError(f"{path} answered {response.status_code}: {_detail(response.text)}",
                          _hint(response.status_code, "check the URL (an OpenAI-compatible server's ends in /v1) "
                                                      "and that this server offers that endpoint"))
    try:
        return response.json()
    except ValueError:
        raise ServerError(f"{path} did not answer with JSON: {_detail(response.text)}",
                          "is this an OpenAI-compatible server? its URL usually ends in /v1") from None


def _hint(status: int, otherwise: str) -> str:
    if status in (401, 403):
        return ("the server refused the API key: set it in the environment variable the config alias names "
                "(api_key_env), never in the config itself")
    return otherwise


def _detail(text: str) -> str:
    """The server's own error message, on one line."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError):
        return " ".join(str(text).split())[:200]
    if isinstance(data, dict):
        inner = data.get("error", data.get("detail", data.get("message", data)))
        if isinstance(inner, dict):
            inner = inner.get("message", inner)
        return " ".join(str(inner).split())[:200]
    return " ".join(str(data).split())[:200]
