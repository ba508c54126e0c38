"""Fixtures for end-to-end tests: mock providers, a pass-through ext_proc server, real Envoys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from policy_extproc.mockprovider import MockProvider
from tests.envoy_harness import (
    TEMPLATE,
    BackgroundLoop,
    EnvoyPorts,
    EnvoyProcess,
    PassThroughProcessor,
    free_port,
    start_passthrough,
)

PROVIDERS = ("openai", "azure-openai", "anthropic")


@pytest.fixture(scope="session")
def mock_providers() -> Iterator[dict[str, MockProvider]]:
    """One in-thread mock provider per Envoy provider cluster, named after it."""
    started: dict[str, MockProvider] = {}
    try:
        for name in PROVIDERS:
            started[name] = MockProvider(name=name).start()
        yield started
    finally:
        for provider in started.values():
            provider.stop()


@pytest.fixture
def mock_provider(mock_providers: dict[str, MockProvider]) -> MockProvider:
    """The openai mock provider; all three start the test with no stats and no failures."""
    for provider in mock_providers.values():
        provider.reset()
        provider.configure(fail_rate=0.0, latency_ms=0.0)
    return mock_providers["openai"]


@dataclass
class ExtProcServer:
    """A running in-process ext_proc server."""

    port: int
    processor: PassThroughProcessor


@pytest.fixture(scope="module")
def passthrough_extproc() -> Iterator[ExtProcServer]:
    """The pass-through ext_proc server (grpc.aio, in a background loop) on a free port."""
    loop = BackgroundLoop()
    processor = PassThroughProcessor()
    server: grpc.aio.Server | None = None
    try:
        server, port = loop.run(start_passthrough(processor))
        yield ExtProcServer(port, processor)
    finally:
        if server is not None:
            loop.run(server.stop(grace=None))
        loop.close()


EnvoyFactory = Callable[..., EnvoyProcess]


@pytest.fixture(scope="module")
def envoy_factory(
    mock_providers: dict[str, MockProvider], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvoyFactory]:
    """make(extproc_port=None, *, ext_proc=True, template=TEMPLATE) -> a started Envoy.

    In front of the mocks. extproc_port None points the filter at a port nobody listens on (the
    sidecar is down); template picks the configuration (envoy-jwt.yaml.tmpl: JWT mode).
    Every Envoy made is stopped when the module's tests are done.
    """
    made: list[EnvoyProcess] = []

    def make(
        extproc_port: int | None = None, *, ext_proc: bool = True, template: Path = TEMPLATE
    ) -> EnvoyProcess:
        ports = EnvoyPorts(
            extproc=extproc_port if extproc_port is not None else free_port(),
            openai=mock_providers["openai"].port,
            azure=mock_providers["azure-openai"].port,
            anthropic=mock_providers["anthropic"].port,
            listen=0,
            admin=0,
        )
        envoy = EnvoyProcess(
            ports, ext_proc=ext_proc, template=template, workdir=tmp_path_factory.mktemp("envoy")
        )
        made.append(envoy)
        return envoy.start()

    try:
        yield make
    finally:
        for envoy in made:
            envoy.stop()


@pytest.fixture(scope="module")
def envoy(envoy_factory: EnvoyFactory, passthrough_extproc: ExtProcServer) -> EnvoyProcess:
    """Envoy with the ext_proc filter pointed at the pass-through server."""
    return envoy_factory(passthrough_extproc.port)
