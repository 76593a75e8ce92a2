"""Typed shapes of what goes in and out of :meth:`smallfleet.Engine.complete`: OpenAI's chat request,
messages, tools and tool calls, as TypedDicts (plain dicts at run time, checked by a type checker).

Only the fields smallfleet reads are listed; any other OpenAI field passes through untouched."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


class FunctionCall(TypedDict):
    """The function a :class:`ToolCall` names, with its arguments as JSON text."""

    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(TypedDict):
    """A call the model proposed: the client runs it and answers with a ``role: "tool"`` message."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(TypedDict):
    """One chat message: a system/developer/user text, an assistant answer or tool calls, or a tool result."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: NotRequired[str | list[dict[str, Any]] | None]
    tool_calls: NotRequired[list[ToolCall]]  # assistant
    tool_call_id: NotRequired[str]  # tool
    name: NotRequired[str]


class FunctionSpec(TypedDict):
    """A tool's name, description and parameter schema."""

    name: str
    description: NotRequired[str]
    parameters: NotRequired[dict[str, Any]]  # a JSON schema


class Tool(TypedDict):
    """A function the model may call, with a JSON schema of its arguments."""

    type: Literal["function"]
    function: FunctionSpec


class ChatRequest(TypedDict):
    """An OpenAI chat completion request. ``model`` is ``"auto"`` (the cascade) or a fleet model's name."""

    messages: list[Message]
    model: NotRequired[str]
    tools: NotRequired[list[Tool]]
    tool_choice: NotRequired[Literal["auto", "none", "required"] | dict[str, Any]]
    response_format: NotRequired[dict[str, Any]]
    max_tokens: NotRequired[int]
    max_completion_tokens: NotRequired[int]
    temperature: NotRequired[float]
    stream: NotRequired[bool]
    metadata: NotRequired[dict[str, str]]
