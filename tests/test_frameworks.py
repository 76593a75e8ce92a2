"""Agent frameworks through `smallfleet serve` with the real local models (issue 13): each runs its own
tool loop — the model calls a tool, the framework sends the result back, the model answers — against
the session gateway (SmolLM2-135M small tier, Qwen2.5-Coder-0.5B large tier).

The task offers two tools and needs one call: "What's the weather in Madrid?" with get_weather and
get_time. A task that needs two calls in a row is beyond the test fleet's models (bench/agents.py: only
the 1.5B makes the second call, and only in some chains), so it is not what CI asserts.
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytestmark = pytest.mark.model

QUESTION = "What's the weather in Madrid?"
CALLS: list[tuple[str, str]] = []


def weather(city: str) -> str:
    """Current weather in a city."""
    CALLS.append(("get_weather", city))
    return json.dumps({"city": city, "temp_c": 31, "sky": "clear"})


def local_time(city: str) -> str:
    """Current local time in a city."""
    CALLS.append(("get_time", city))
    return json.dumps({"city": city, "time": "21:14"})


def _finished(answer: str) -> None:
    """The loop ended in words that carry the tool's result, after a call of the right tool."""
    assert ("get_weather", "Madrid") in CALLS, CALLS
    assert answer and "arguments" not in answer and "{" not in answer, answer
    assert "31" in answer or "clear" in answer.lower(), answer


@pytest.fixture(autouse=True)
def _fresh_calls():
    CALLS.clear()


def test_langchain_create_agent(gateway) -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return weather(city)

    @tool
    def get_time(city: str) -> str:
        """Current local time in a city."""
        return local_time(city)

    llm = ChatOpenAI(base_url=gateway.base + "/v1", api_key="unused", model="auto", max_tokens=120, max_retries=0, timeout=300)
    agent = create_agent(llm, [get_weather, get_time])
    out = agent.invoke({"messages": [{"role": "user", "content": QUESTION}]})
    roles = [m.type for m in out["messages"]]
    assert "tool" in roles  # the result went back as a tool message
    _finished(out["messages"][-1].content)


def test_pydantic_ai_agent(gateway) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.settings import ModelSettings

    model = OpenAIChatModel("auto", provider=OpenAIProvider(base_url=gateway.base + "/v1", api_key="unused"))
    agent = Agent(model, tools=[weather, local_time], model_settings=ModelSettings(max_tokens=120, timeout=300))
    result = agent.run_sync(QUESTION)
    _finished(result.output)


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
def test_openai_agents_sdk(gateway, api) -> None:
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no trace export: nothing leaves this machine
    client = AsyncOpenAI(base_url=gateway.base + "/v1", api_key="unused", max_retries=0, timeout=300)
    model = OpenAIResponsesModel("auto", client) if api == "responses" else OpenAIChatCompletionsModel("auto", client)
    agent = Agent(name="assistant", instructions="You answer questions with the tools.", model=model,
                  tools=[function_tool(weather, name_override="get_weather"), function_tool(local_time, name_override="get_time")],
                  model_settings=ModelSettings(max_tokens=120))
    result = asyncio.run(Runner.run(agent, QUESTION, max_turns=4))
    _finished(result.final_output)
