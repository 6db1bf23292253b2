# What a NixOS test's testScript can use, bound for ty and ruff: nixos-26.05's test framework
# checks a testScript with `ty check` and `ruff check` (nixpkgs PR #509615, April 2026) on a
# file that starts with such a prelude, then binds every VM's name to a QemuMachine
# (`<machine> = qemu_machine()`), then holds the testScript. ty wants names bound, not only
# declared, hence values here. `polling_condition` is declared as nixpkgs' prelude declares it:
# the function to watch is a required positional argument and the result has no declared type.
# Written for kuutamod from the driver's interface; see test_driver/__init__.pyi.
import os
import unittest
from contextlib import contextmanager
from typing import Callable, Iterator

from test_driver.debug import DebugAbstract, DebugNop
from test_driver.driver import Driver
from test_driver.logger import AbstractLogger, CompositeLogger
from test_driver.machine import BaseMachine, NspawnMachine, QemuMachine
from test_driver.vlan import VLan


def _driver() -> Driver:
    raise NotImplementedError("type information only")


def qemu_machine() -> QemuMachine:
    raise NotImplementedError("type information only")


def start_all() -> None: ...
def test_script() -> None: ...
def run_tests() -> None: ...
def join_all() -> None: ...
def serial_stdout_on() -> None: ...
def serial_stdout_off() -> None: ...


@contextmanager
def subtest(name: str) -> Iterator[None]:
    yield


def retry(fn: Callable[[bool], bool], timeout_seconds: int = 900) -> None: ...


def create_machine(
    start_command: str, name: str | None = None, keep_machine_state: bool = False
) -> QemuMachine:
    raise NotImplementedError("type information only")


def polling_condition(fun, seconds_interval: float = 2.0, description: str | None = None):
    del fun, seconds_interval, description


machines: list[BaseMachine] = []
machines_qemu: list[QemuMachine] = []
machines_nspawn: list[NspawnMachine] = []
vlans: list[VLan] = []
driver = _driver()
log: AbstractLogger = CompositeLogger([])
t = unittest.TestCase()
debug: DebugAbstract = DebugNop()
# The driver also hands the script `os` and, for annotations, `BaseMachine`.
_runtime_symbols = (os, BaseMachine)
