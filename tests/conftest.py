"""Fixtures shared by the test files: simulated devices on real transports, shut down after each test.

Plain helpers (run, wait_for, edge_agent, cli, lists_applied) are in helpers.py.
A test file may still define a fixture of the same name: its own wins (test_rdm6300's `pair`).
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from hardware_sim.chargers import SimChargerThread
from hardware_sim.pty import SocatPair


@pytest.fixture
def sims() -> Iterator[SimChargerThread]:
    """One thread serving simulated chargers and meters (Modbus TCP servers, RTU on a pty)."""
    with SimChargerThread() as thread:
        yield thread


@pytest.fixture
def pair() -> Iterator[SocatPair]:
    """A socat pseudo-terminal pair: the agent's end `a`, the simulated bus's end `b`."""
    with SocatPair() as p:
        yield p
