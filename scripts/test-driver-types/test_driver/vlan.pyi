# A virtual network shared by the test's machines (`vlan1`... in a testScript).
from pathlib import Path

from test_driver.logger import AbstractLogger

class VLan:
    nr: int
    def __init__(self, nr: int, tmp_dir: Path, logger: AbstractLogger) -> None: ...
    def stop(self) -> None: ...
