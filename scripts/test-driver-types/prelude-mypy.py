# What a NixOS test's testScript can use, declared for mypy: the globals the driver hands the
# script (Driver.test_symbols), with their types. scripts/check-vm-test-scripts puts this first,
# then one `<machine>: QemuMachine` line per VM, then the testScript, and runs
# `mypy --no-implicit-optional` on the result, as nixpkgs' test framework did with mypy and
# pyflakes (early 2026: driver with BaseMachine/QemuMachine, before ty and ruff). Written for
# kuutamod from the driver's interface; see test_driver/__init__.pyi.
import unittest
from contextlib import AbstractContextManager
from typing import Any, Callable, Protocol

from test_driver.debug import DebugAbstract
from test_driver.driver import Driver
from test_driver.logger import AbstractLogger
from test_driver.machine import BaseMachine, NspawnMachine, QemuMachine
from test_driver.vlan import VLan


class _Retry(Protocol):
    def __call__(self, fn: Callable[[bool], bool], timeout_seconds: int = 900) -> None: ...


class _CreateMachine(Protocol):
    def __call__(
        self, start_command: str, *, name: str | None = None, keep_machine_state: bool = False
    ) -> QemuMachine: ...


class _PollingCondition(Protocol):
    # Called with a function it returns a context manager; called without one, a decorator.
    # The type says "either", so a checker accepts neither use without narrowing.
    def __call__(
        self,
        fun_: Callable[..., Any] | None = None,
        *,
        seconds_interval: float = 2.0,
        description: str | None = None,
    ) -> Callable[[Callable[..., Any]], AbstractContextManager[Any]] | AbstractContextManager[Any]: ...


start_all: Callable[[], None]
test_script: Callable[[], None]
run_tests: Callable[[], None]
join_all: Callable[[], None]
serial_stdout_on: Callable[[], None]
serial_stdout_off: Callable[[], None]
subtest: Callable[[str], AbstractContextManager[None]]
retry: _Retry
create_machine: _CreateMachine
polling_condition: _PollingCondition
machines: list[BaseMachine]
machines_qemu: list[QemuMachine]
machines_nspawn: list[NspawnMachine]
vlans: list[VLan]
driver: Driver
log: AbstractLogger
t: unittest.TestCase
debug: DebugAbstract
