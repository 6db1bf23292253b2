# What the driver does when a test fails (`debug` in a testScript; see __init__.pyi).
from abc import ABC

class DebugAbstract(ABC):
    def breakpoint(self) -> None: ...

class DebugNop(DebugAbstract):
    def __init__(self) -> None: ...
