"""The OpenAI-compatible HTTP API over one `Engine`.

    GET  /health                 {"status": "ok", "running": rows decoding, "waiting": queued, ...} (no key)
    GET  /v1/models              the base model and each adapter, by served name
    POST /v1/chat/completions    messages -> chat template -> engine (stream: server-sent events)
    POST /v1/completions         raw text or token ids -> engine

Each request (times `n`) becomes engine requests whose events hop from the
engine's worker thread onto the event loop through one asyncio queue; the
engine batches them with everything else in flight. A client that goes away
mid-stream cancels its requests. Every failure answers with the OpenAI error
body: 400 for a malformed request, 401 for a bad key, 404 for an unknown model
or path, 500 when generation itself fails; nothing a client sends stops the
server.
"""

import asyncio
import dataclasses
import hmac
import json

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from unitune.errors import UnituneError
from unitune.infer.engine import Completion, PromptTooLong, SamplingParams
from unitune.infer.rows import with_system
from unitune.serve.protocol import APIError, ChatRequest, CompletionRequest, new_id, now, parse, usage


def create_app(engine, models: dict[str, str | None], cfg) -> FastAPI:
    """`models`: served name -> adapter name (None: the bare base). `cfg`: a ServeRoot."""
    app = FastAPI(title="unitune", docs_url=None, redoc_url=None, openapi_url=None)
    created = now()

    async def check_key(request: Request):
        key = cfg.serve.api_key
        if key and not hmac.compare_digest(request.headers.get("authorization", "").encode(),
                                           f"Bearer {key}".encode()):
            raise APIError(401, "Incorrect API key provided (send 'Authorization: Bearer KEY')",
                           code="invalid_api_key")

    auth = [Depends(check_key)]

    @app.exception_handler(APIError)
    async def _api_error(_, err: APIError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request, err: HTTPException):
        message = f"{request.method} {request.url.path}: {err.detail}"
        return JSONResponse(APIError(err.status_code, message).body(), status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_, err):
        return JSONResponse(APIError(400, str(err)).body(), status_code=400)

    @app.exception_handler(Exception)
    async def _crash(_, err: Exception):  # uvicorn logs the traceback
        body = APIError(500, f"internal error: {type(err).__name__}", type="server_error").body()
        return JSONResponse(body, status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(models), **engine.stats()}

    @app.get("/v1/models", dependencies=auth)
    async def list_models():
        return {"object": "list", "data": [_model_card(name, created) for name in models]}

    @app.get("/v1/models/{name:path}", dependencies=auth)
    async def get_model(name: str):
        _adapter(models, name)
        return _model_card(name, created)

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat(request: Request):
        req = parse(ChatRequest, await _json(request))
        adapter = _adapter(models, req.model)
        messages = with_system([m.plain() for m in req.messages], cfg.template.system)
        try:
            ids = engine.encode_chat(messages, tools=req.tools)
        except UnituneError as err:
            raise APIError(400, str(err), param="messages") from None
        jobs = _Jobs(engine, [ids], _params(engine, cfg, req, len(ids), req.max_completion_tokens or req.max_tokens,
                                           "messages"), req.n, adapter)
        rid = new_id("chatcmpl")
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return _sse(_chat_chunks(jobs, rid, req.model, include_usage))
        done = await jobs.results()
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                    "finish_reason": c.finish_reason} for i, c in enumerate(done)]
        return {"id": rid, "object": "chat.completion", "created": now(), "model": req.model, "choices": choices,
                "usage": usage(len(ids), sum(c.completion_tokens for c in done))}

    @app.post("/v1/completions", dependencies=auth)
    async def completions(request: Request):
        req = parse(CompletionRequest, await _json(request))
        adapter = _adapter(models, req.model)
        prompts = [engine.encode_text(p) if isinstance(p, str) else _check_ids(engine, p) for p in req.prompts()]
        longest = max(len(p) for p in prompts)
        explicit = req.max_tokens if "max_tokens" in req.model_fields_set else None
        params = _params(engine, cfg, req, longest, explicit, "prompt", default=req.max_tokens)
        jobs = _Jobs(engine, prompts, params, req.n, adapter)
        echo = [engine.tokenizer.decode(p) if req.echo else "" for p in prompts for _ in range(req.n)]
        rid = new_id("cmpl")
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return _sse(_text_chunks(jobs, rid, req.model, include_usage, echo))
        done = await jobs.results()
        choices = [{"index": i, "text": echo[i] + c.text, "logprobs": None, "finish_reason": c.finish_reason}
                   for i, c in enumerate(done)]
        return {"id": rid, "object": "text_completion", "created": now(), "model": req.model, "choices": choices,
                "usage": usage(sum(len(p) for p in prompts), sum(c.completion_tokens for c in done))}

    return app


def _model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "unitune"}


def _adapter(models: dict, name: str):
    if name not in models:
        raise APIError(404, f"The model '{name}' does not exist; served: {', '.join(models)}", param="model",
                       code="model_not_found")
    return models[name]


async def _json(request: Request):
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"the request body is not valid JSON ({err})") from None


def _check_ids(engine, ids: list[int]) -> list[int]:
    vocab = getattr(engine.model.config, "vocab_size", None) or len(engine.tokenizer)
    if not ids or any(i < 0 or i >= vocab for i in ids):
        raise APIError(400, f"prompt token ids must be a non-empty list of ids in [0, {vocab})", param="prompt")
    return ids


def _params(engine, cfg, req, prompt_len: int, max_tokens: int | None, what: str, default: int | None = None):
    """SamplingParams for a request, with the context-length checks OpenAI makes."""
    if req.n > cfg.serve.max_n:
        raise APIError(400, f"n={req.n} is more than this server allows ({cfg.serve.max_n})", param="n")
    room = engine.context_length - prompt_len
    if room <= 0 or (max_tokens is not None and max_tokens > room):
        asked = f"; with max_tokens={max_tokens} that is {prompt_len + max_tokens}" if max_tokens else ""
        raise APIError(400, f"This model's maximum context length is {engine.context_length} tokens; the {what} "
                            f"has {prompt_len}{asked}", param=what, code="context_length_exceeded")
    gen = cfg.generate
    pick = lambda value, fallback: fallback if value is None else value  # noqa: E731
    return SamplingParams(max_new_tokens=max_tokens or min(default or gen.max_new_tokens, room),
                          temperature=pick(req.temperature, gen.temperature), top_p=pick(req.top_p, gen.top_p),
                          top_k=pick(req.top_k, gen.top_k),
                          repetition_penalty=pick(req.repetition_penalty, gen.repetition_penalty),
                          stop=list(req.stop or []) + list(gen.stop), seed=req.seed)


class _Jobs:
    """n engine requests per prompt, their events merged onto one asyncio queue as (choice index, event)."""

    def __init__(self, engine, prompts: list[list[int]], params: SamplingParams, n: int, adapter):
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.prompt_tokens = sum(len(p) for p in prompts)
        self.requests = []
        def sink(index: int):
            return lambda event: loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))

        try:
            for p in prompts:
                for j in range(n):  # choice j draws from seed + j
                    seed = None if params.seed is None else params.seed + j
                    seeded = dataclasses.replace(params, seed=seed)
                    self.requests.append(engine.submit(p, seeded, adapter=adapter, sink=sink(len(self.requests))))
        except PromptTooLong as err:
            self.cancel()
            raise APIError(400, str(err), param="prompt", code="context_length_exceeded") from None
        except UnituneError as err:
            self.cancel()
            raise APIError(400, str(err)) from None

    def cancel(self) -> None:
        for r in self.requests:
            r.cancel()

    async def events(self):
        """(index, str delta | Completion) until every request is done; cancels them if abandoned."""
        left = len(self.requests)
        try:
            while left:
                index, event = await self.queue.get()
                left -= isinstance(event, Completion)
                yield index, event
        finally:
            self.cancel()

    async def results(self) -> list[Completion]:
        done = {}
        async for index, event in self.events():
            if isinstance(event, Completion):
                done[index] = event
        failed = [c for c in done.values() if c.finish_reason in ("error", "cancelled")]
        if failed:
            _raise_failed(failed[0])
        return [done[i] for i in range(len(done))]


def _raise_failed(c: Completion):
    if c.finish_reason == "cancelled":
        raise APIError(503, "the server is shutting down", type="server_error")
    raise APIError(500, f"generation failed: {c.error}", type="server_error")


def _sse(chunks) -> StreamingResponse:
    async def body():
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _chat_chunks(jobs: _Jobs, rid: str, model: str, include_usage: bool):
    created = now()

    def chunk(index, delta, finish=None):
        return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    for i in range(len(jobs.requests)):
        yield chunk(i, {"role": "assistant", "content": ""})
    completion_tokens = 0
    async for index, event in jobs.events():
        if isinstance(event, str):
            yield chunk(index, {"content": event})
        elif event.finish_reason in ("error", "cancelled"):
            yield _stream_error(event)
            return
        else:
            completion_tokens += event.completion_tokens
            yield chunk(index, {}, event.finish_reason)
    if include_usage:
        yield {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
               "usage": usage(jobs.prompt_tokens, completion_tokens)}


async def _text_chunks(jobs: _Jobs, rid: str, model: str, include_usage: bool, echo: list[str]):
    created = now()

    def chunk(index, text, finish=None):
        return {"id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}]}

    for i, text in enumerate(echo):
        if text:
            yield chunk(i, text)
    completion_tokens = 0
    async for index, event in jobs.events():
        if isinstance(event, str):
            yield chunk(index, event)
        elif event.finish_reason in ("error", "cancelled"):
            yield _stream_error(event)
            return
        else:
            completion_tokens += event.completion_tokens
            yield chunk(index, "", event.finish_reason)
    if include_usage:
        yield {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": [],
               "usage": usage(jobs.prompt_tokens, completion_tokens)}


def _stream_error(c: Completion) -> dict:
    try:
        _raise_failed(c)
    except APIError as err:
        return err.body()
