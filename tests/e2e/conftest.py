"""Stacks shared by the end-to-end tests: started once per session, cleaned for each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.stacks import Stack, start_stack

MC_DELAY_SECONDS = 4


@pytest.fixture(scope="package")
def stack_factory(tmp_path_factory: pytest.TempPathFactory, autotask_server: tuple[ThreadedServer, SandboxState],
                  request: pytest.FixtureRequest) -> Iterator[Callable[[str], Stack]]:
    started: dict[str, Stack] = {}

    def get(mode: str) -> Stack:
        if mode not in started:
            server, state = autotask_server
            distributed = mode != "embedded"
            started[mode] = start_stack(
                tmp_path_factory.mktemp(mode.replace("+", "-")), mode=mode, sandbox_server=server, sandbox=state,
                pg_url=request.getfixturevalue("pg_database") if distributed else None,
                redis_url=request.getfixturevalue("redis_url") if distributed else None,
                env_extra={"ATRELAY_MC_NO_CONTACT_DELAY_SECONDS": str(MC_DELAY_SECONDS)},
            )
        return started[mode]

    yield get
    for stack in started.values():
        stack.stop()


@pytest.fixture(params=["redis+postgresql", "embedded"])
def stack(request: pytest.FixtureRequest, stack_factory: Callable[[str], Stack]) -> Iterator[Stack]:
    """Each stack, cleaned for this test."""
    s = stack_factory(request.param)
    s.clean()
    yield s
    s.sandbox.reset()


@pytest.fixture
def dist(stack_factory: Callable[[str], Stack]) -> Iterator[Stack]:
    """The distributed stack (Redis + PostgreSQL), cleaned for this test."""
    s = stack_factory("redis+postgresql")
    s.clean()
    yield s
    s.sandbox.reset()
