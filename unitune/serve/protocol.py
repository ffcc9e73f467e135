"""The OpenAI wire format: request bodies (validated strictly: a string where a number
belongs is an error, not a guess), response objects and the error body

    {"error": {"message": ..., "type": "invalid_request_error", "param": ..., "code": ...}}

Parameters the engine cannot honour (logprobs, non-zero presence/frequency
penalties, suffix, best_of) are refused with a 400 rather than silently ignored;
unknown extra fields are ignored, as most OpenAI-compatible servers do.
"""

import time
import uuid
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[dict]] = None
    tool_call_id: Optional[str] = None

    def plain(self) -> dict:
        """A message for the chat template: text parts joined, 'developer' read as 'system'."""
        content = self.content if not isinstance(self.content, list) else "".join(p.text for p in self.content)
        out = {"role": "system" if self.role == "developer" else self.role, "content": content or ""}
        out.update({k: v for k in ("name", "tool_calls", "tool_call_id") if (v := getattr(self, k)) is not None})
        return out


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)  # extension (vLLM spelling)
    repetition_penalty: Optional[float] = Field(None, gt=0)  # extension (vLLM spelling)
    n: int = Field(1, ge=1)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    user: Optional[str] = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    def refuse_unsupported(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise APIError(400, f"{name} is not supported by this server (use repetition_penalty)", param=name)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: Optional[bool] = None
    tools: Optional[list[dict]] = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.logprobs:
            raise APIError(400, "logprobs are not supported by this server", param="logprobs")


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = Field(16, ge=1)  # the OpenAI default for completions
    echo: bool = False
    logprobs: Optional[int] = None
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        for name in ("logprobs", "suffix"):
            if getattr(self, name) is not None:
                raise APIError(400, f"{name} is not supported by this server", param=name)
        if self.best_of not in (None, 1, self.n):
            raise APIError(400, "best_of is not supported by this server", param="best_of")

    def prompts(self) -> list[Union[str, list[int]]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise APIError(400, "prompt is empty", param="prompt")
        if isinstance(p[0], int):
            return [p]
        return list(p)


def parse(model: type[_Strict], body) -> _Strict:
    """Validate a decoded JSON body; the first problem becomes a 400 naming its field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        request = model.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if not _union_tag(p)) or None
        missing = first["type"] == "missing"
        message = f"'{param}' is required" if missing else f"'{param}': {first['msg']}"
        raise APIError(400, message, param=param, code="missing_required_parameter" if missing else "invalid_value")
    request.refuse_unsupported()
    return request


def _union_tag(part) -> bool:
    """Pydantic names the union member it tried in `loc` ('str', 'list[int]', 'TextPart'): not a field."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool") or "[" in part or part[:1].isupper())


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def now() -> int:
    return int(time.time())
