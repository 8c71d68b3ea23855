"""Run i-PI (the installed ``i-pi`` script) with one fix for driver restarts.

i-PI 3.3.1's batched receiver treats a clean close of a driver's socket as a
disconnection and re-queues the work, but a connection *reset* (a driver killed
while i-PI's next message sat unread in its buffer) escapes as
ConnectionResetError and stops i-PI's socket thread, so the run hangs. Here a
reset counts as a disconnection too. Usage: ``python -m legato.driver.ipi_main
input.xml`` (what ``legato run`` starts); plain ``i-pi`` works otherwise the same.
"""

from __future__ import annotations

import runpy
import shutil
import sys
from pathlib import Path

from ipi.interfaces import sockets

_recvall = sockets.DriverSocket.recvall


def _recvall_reset_is_disconnect(self, dest):
    try:
        return _recvall(self, dest)
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise sockets.Disconnected() from exc


def main() -> None:
    sockets.DriverSocket.recvall = _recvall_reset_is_disconnect
    beside = Path(sys.executable).parent / "i-pi"
    script = str(beside) if beside.exists() else shutil.which("i-pi")
    sys.argv = ["i-pi", *sys.argv[1:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
