"""The real `unitune serve` process on a loopback port, spoken to with the official
`openai` client and raw httpx: models, chat, streaming, completions, adapters,
the API key, a malformed-request corpus, and SIGTERM while a stream is running."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.infer.helpers import adapters

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-123"
HI = [{"role": "user", "content": "Hi there"}]


@pytest.fixture(scope="module")
def server():
    paths = adapters()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "unitune", "serve", "--model", "tiny-llama", "--serve.port", "0",
           "--serve.api_key", KEY, "--serve.adapters", f"pirate={paths['pirate']}", f"noise={paths['noise']}",
           "--serve.max_n", "4", "--generate.max_new_tokens", "8", "--generate.top_k", "40",
           "--engine.max_batch_size", "16", "--engine.threads", "1"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    url = _wait_for_url(proc, Path(log.name))
    yield proc, url, Path(log.name)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _wait_for_url(proc, log: Path, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in log.read_text().splitlines():
            if "serving" in line and "http://" in line:
                return line.split("on ", 1)[1].split()[0]
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.2)
    raise AssertionError(f"server did not start:\n{log.read_text()}")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[1], api_key=KEY, max_retries=0, timeout=60)


def _raw(server, method: str, path: str, key: str | None = KEY, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, server[1].removesuffix("/v1") + path, headers=headers, timeout=60, **kwargs)


def test_binds_loopback_and_lists_models(server, client):
    assert server[1].startswith("http://127.0.0.1:")
    assert sorted(m.id for m in client.models.list()) == ["noise", "pirate", "tiny-llama"]
    assert client.models.retrieve("pirate").id == "pirate"
    assert _raw(server, "GET", "/health", key=None).json()["status"] == "ok"


def test_chat_and_usage(client):
    r = client.chat.completions.create(model="tiny-llama", messages=HI, max_tokens=5, seed=1)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    assert r.usage.prompt_tokens > 5 and r.usage.total_tokens == r.usage.prompt_tokens + 5
    again = client.chat.completions.create(model="tiny-llama", messages=HI, max_tokens=5, seed=1)
    assert again.choices[0].message.content == r.choices[0].message.content
    two = client.chat.completions.create(model="tiny-llama", messages=HI, max_tokens=5, n=2, seed=1)
    assert [c.index for c in two.choices] == [0, 1] and two.usage.completion_tokens == 10
    assert two.choices[0].message.content == r.choices[0].message.content  # choice i uses seed + i


def test_streaming_chat_matches_the_plain_answer(client):
    plain = client.chat.completions.create(model="tiny-llama", messages=HI, max_tokens=6, seed=5,
                                           temperature=0.8, top_p=0.9)
    chunks = list(client.chat.completions.create(model="tiny-llama", messages=HI, max_tokens=6, seed=5,
                                                 temperature=0.8, top_p=0.9, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content and len(chunks) >= 4
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 6 and not chunks[-1].choices


def test_completions(client):
    r = client.completions.create(model="tiny-llama", prompt="Once upon a time", max_tokens=4, seed=2)
    assert r.object == "text_completion" and r.usage.completion_tokens == 4 and r.choices[0].text
    echo = client.completions.create(model="tiny-llama", prompt="Once upon a time", max_tokens=4, seed=2, echo=True)
    assert echo.choices[0].text == "Once upon a time" + r.choices[0].text
    ids = client.completions.create(model="tiny-llama", prompt=[[1, 2, 3], [4, 5]], max_tokens=3, n=2)
    assert len(ids.choices) == 4 and ids.usage.prompt_tokens == 5
    streamed = list(client.completions.create(model="tiny-llama", prompt="Once upon a time", max_tokens=4, seed=2,
                                              stream=True))
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text


def test_adapter_selected_by_model_name(client):
    def answer(model):
        r = client.chat.completions.create(model=model, messages=HI, max_tokens=8, seed=3, temperature=1.0)
        return r.choices[0].message.content

    base, pirate, noise = answer("tiny-llama"), answer("pirate"), answer("noise")
    assert len({base, pirate, noise}) == 3
    assert answer("pirate") == pirate and answer("tiny-llama") == base


def test_concurrent_streams_share_the_engine(server, client):
    results, errors = {}, []

    def one(i):
        try:
            stream = client.chat.completions.create(model=["tiny-llama", "pirate"][i % 2], messages=HI,
                                                    max_tokens=6, seed=i, stream=True)
            results[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        except Exception as err:  # noqa: BLE001
            errors.append(repr(err))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert not errors and len(results) == 8
    solo = client.chat.completions.create(model="pirate", messages=HI, max_tokens=6, seed=3)
    assert results[3] == solo.choices[0].message.content


def test_api_key_rejected_and_accepted(server):
    bad = openai.OpenAI(base_url=server[1], api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    for key in (None, "wrong", KEY + "x"):
        r = _raw(server, "POST", "/v1/chat/completions", key=key, json={"model": "tiny-llama", "messages": HI})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert _raw(server, "GET", "/v1/models").status_code == 200


LONG = "hello " * 3000
CHAT = "/v1/chat/completions"
CORPUS = [  # (name, path, body (str: sent as is), status, error param or None)
    ("bad json", CHAT, "{not json", 400, None),
    ("not an object", CHAT, "[1, 2]", 400, None),
    ("unknown model", CHAT, {"model": "gpt-9", "messages": HI}, 404, "model"),
    ("missing messages", CHAT, {"model": "tiny-llama"}, 400, "messages"),
    ("missing model", CHAT, {"messages": HI}, 400, "model"),
    ("empty messages", CHAT, {"model": "tiny-llama", "messages": []}, 400, "messages"),
    ("bad role", CHAT, {"model": "tiny-llama", "messages": [{"role": "wizard", "content": "x"}]}, 400,
     "messages.0.role"),
    ("message not an object", CHAT, {"model": "tiny-llama", "messages": ["hi"]}, 400, "messages.0"),
    ("content wrong type", CHAT, {"model": "tiny-llama", "messages": [{"role": "user", "content": 5}]}, 400,
     "messages.0.content"),
    ("negative max_tokens", CHAT, {"model": "tiny-llama", "messages": HI, "max_tokens": -1}, 400, "max_tokens"),
    ("max_tokens a string", CHAT, {"model": "tiny-llama", "messages": HI, "max_tokens": "10"}, 400, "max_tokens"),
    ("temperature too high", CHAT, {"model": "tiny-llama", "messages": HI, "temperature": 7}, 400, "temperature"),
    ("top_p zero", CHAT, {"model": "tiny-llama", "messages": HI, "top_p": 0}, 400, "top_p"),
    ("n too large", CHAT, {"model": "tiny-llama", "messages": HI, "n": 50}, 400, "n"),
    ("n zero", CHAT, {"model": "tiny-llama", "messages": HI, "n": 0}, 400, "n"),
    ("stop wrong type", CHAT, {"model": "tiny-llama", "messages": HI, "stop": 3}, 400, "stop"),
    ("too many stops", CHAT, {"model": "tiny-llama", "messages": HI, "stop": list("abcde")}, 400, "stop"),
    ("stream not bool", CHAT, {"model": "tiny-llama", "messages": HI, "stream": "yes"}, 400, "stream"),
    ("logprobs unsupported", CHAT, {"model": "tiny-llama", "messages": HI, "logprobs": True}, 400, "logprobs"),
    ("prompt over context", CHAT, {"model": "tiny-llama", "messages": [{"role": "user", "content": LONG}]}, 400,
     "messages"),
    ("max_tokens over context", CHAT, {"model": "tiny-llama", "messages": HI, "max_tokens": 5000}, 400, "messages"),
    ("completion prompt over context", "/v1/completions", {"model": "tiny-llama", "prompt": LONG}, 400, "prompt"),
    ("token id out of range", "/v1/completions", {"model": "tiny-llama", "prompt": [1, 10**9]}, 400, "prompt"),
    ("empty prompt list", "/v1/completions", {"model": "tiny-llama", "prompt": []}, 400, "prompt"),
    ("prompt wrong type", "/v1/completions", {"model": "tiny-llama", "prompt": {"a": 1}}, 400, "prompt"),
    ("unknown path", "/v1/embeddings", {"model": "tiny-llama", "input": "x"}, 404, None),
]


@pytest.mark.parametrize("name,path,body,status,param", CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_request_corpus(server, name, path, body, status, param):
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    r = _raw(server, "POST", path, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param, error
    if "context" in name:
        assert error["code"] == "context_length_exceeded"


def test_still_answering_after_the_corpus(server, client):
    assert server[0].poll() is None
    r = client.chat.completions.create(model="noise", messages=HI, max_tokens=3)
    assert r.usage.completion_tokens == 3
    assert "Traceback" not in server[2].read_text()


def test_client_leaving_mid_stream_is_fine(server, client):
    with httpx.stream("POST", server[1] + "/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "tiny-llama", "messages": HI, "max_tokens": 1900, "stream": True},
                      timeout=60) as r:
        lines = (line for line in r.iter_lines() if line)
        assert '"role":"assistant"' in next(lines)
        assert '"content":' in next(lines)  # a token: it is decoding
        health = _raw(server, "GET", "/health").json()
        assert health["running"] + health["waiting"] == 1
    deadline = time.time() + 5  # the abandoned request is cancelled, not run to its 1900 tokens
    while _raw(server, "GET", "/health").json()["running"] and time.time() < deadline:
        time.sleep(0.05)
    assert _raw(server, "GET", "/health").json()["running"] == 0
    r = client.chat.completions.create(model="tiny-llama", messages=HI, max_tokens=2)
    assert r.choices[0].finish_reason == "length"


def test_sigterm_lets_the_running_stream_finish_then_exits_0(server):
    proc, url, log = server
    started, lines = threading.Event(), []

    def stream():
        with httpx.stream("POST", url + "/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": "pirate", "messages": HI, "max_tokens": 60, "stream": True},
                          timeout=120) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    started.set()

    t = threading.Thread(target=stream)
    t.start()
    assert started.wait(60)
    proc.send_signal(signal.SIGTERM)  # mid-stream
    assert proc.wait(timeout=60) == 0
    t.join(60)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(x[len("data: "):]) for x in lines[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert sum(bool(c["choices"][0]["delta"].get("content")) for c in chunks) > 30
    assert "server stopped" in log.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url.removesuffix("/v1") + "/health", timeout=5)
