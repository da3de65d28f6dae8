"""Shared fixtures: a real Consul dev agent for the whole session, plus extras on demand."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from consul_harness import ConsulAgent, ConsulUnavailableError, find_consul


@pytest.fixture(scope="session")
def consul_binary() -> str:
    """Path of the consul binary ($CTEMPLATE_CONSUL or scripts/get-consul).

    A missing consul fails the tests that need it; it never skips them.
    """
    try:
        return find_consul()
    except ConsulUnavailableError as exc:
        pytest.fail(
            "a consul binary is required for these tests (set CTEMPLATE_CONSUL, put consul "
            f"on PATH, or let scripts/get-consul fetch it): {exc}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def consul(consul_binary: str) -> Iterator[ConsulAgent]:
    """One started Consul dev agent shared by the whole session.

    Tests share it, so use the ``unique`` fixture for service names and KV
    prefixes. Do not stop, kill or restart it: use ``consul_agent_factory``.
    """
    agent = ConsulAgent(consul_binary, node_name="ctemplate-test")
    agent.start()
    try:
        yield agent
    finally:
        agent.close()


@pytest.fixture
def consul_agent_factory(consul_binary: str) -> Iterator[Callable[..., ConsulAgent]]:
    """A factory for extra, independent agents (own ports, own data).

    ``consul_agent_factory(node_name=None, start=True, **kwargs)`` returns a
    ``ConsulAgent``; all of them are stopped at teardown. Use these for tests
    that kill or restart Consul.
    """
    agents: list[ConsulAgent] = []

    def make(node_name: str | None = None, start: bool = True, **kwargs: Any) -> ConsulAgent:
        agent = ConsulAgent(consul_binary, node_name, **kwargs)
        agents.append(agent)
        if start:
            agent.start()
        return agent

    try:
        yield make
    finally:
        for agent in agents:
            agent.close()


@pytest.fixture
def unique() -> str:
    """A short unique string for per-test service names and KV prefixes."""
    return uuid.uuid4().hex[:8]
