"""i-PI socket client with batched replies and reconnection.

It speaks the protocol of i-PI 3.x (STATUS, INIT, POSDATA, GETFORCE, EXIT),
including the batched variant announced by ``batch_size:N`` in INIT. i-PI's
reference client (the ``i-pi-py_driver`` script) is not importable and spins
forever when i-PI goes away, so ``legato serve`` uses this one: a closed socket
ends the session cleanly and the client waits for i-PI to come back (restart
from RESTART), so neither side loses a run when the other restarts.
"""

from __future__ import annotations

import logging
import socket
import time

import numpy as np

log = logging.getLogger("legato.driver")
HDRLEN = 12


class Disconnected(ConnectionError):
    pass


def _msg(text: str) -> bytes:
    return text.ljust(HDRLEN).encode()


STATUS, INIT, POSDATA, GETFORCE, EXIT = (_msg(m) for m in ("STATUS", "INIT", "POSDATA", "GETFORCE", "EXIT"))
NEEDINIT, READY, HAVEDATA, FORCEREADY = (_msg(m) for m in ("NEEDINIT", "READY", "HAVEDATA", "FORCEREADY"))


def _recv_exact(sock: socket.socket, nbytes: int) -> bytes:
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    while got < nbytes:
        n = sock.recv_into(view[got:], nbytes - got)
        if n == 0:
            raise Disconnected("i-PI closed the connection")
        got += n
    return bytes(buf)


def _recv_array(sock, shape, dtype=np.float64) -> np.ndarray:
    count = int(np.prod(shape))
    return np.frombuffer(_recv_exact(sock, count * np.dtype(dtype).itemsize), dtype=dtype).reshape(shape).copy()


def _recv_int(sock) -> int:
    return int(np.frombuffer(_recv_exact(sock, 4), np.int32)[0])


def connect(address: str, port: int | None, unix: bool, sockets_prefix: str = "/tmp/ipi_", wait: float = 60.0, give_up=None) -> socket.socket:
    """Connect to i-PI, retrying for ``wait`` seconds (i-PI may still be starting),
    or until ``give_up()`` returns True (e.g. the i-PI process exited)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if unix:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(sockets_prefix + address)
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.connect((address, port))
            return sock
        except (FileNotFoundError, ConnectionRefusedError, OSError) as exc:
            sock.close()
            if time.monotonic() > deadline or (give_up is not None and give_up()):
                where = sockets_prefix + address if unix else f"{address}:{port}"
                raise TimeoutError(f"no i-PI server at {where} after {wait:.0f} s (start i-pi first, or check the address)") from exc
            time.sleep(0.2)


def run_session(sock: socket.socket, driver) -> str:
    """Serve one i-PI connection until EXIT ('exit') or disconnection ('disconnected')."""
    initialized, have_data, batch_n = False, False, 1
    results: list = []
    nat = 0
    try:
        while True:
            header = _recv_exact(sock, HDRLEN)
            if header == STATUS:
                sock.sendall(NEEDINIT if not initialized else HAVEDATA if have_data else READY)
            elif header == INIT:
                _recv_int(sock)  # replica id
                text = _recv_exact(sock, _recv_int(sock)).decode(errors="replace")
                for token in text.split(","):
                    key, sep, value = token.partition(":")
                    if sep and key.strip() == "batch_size":
                        batch_n = int(value)
                initialized = True
                log.info("i-PI INIT, batch size %d", batch_n)
            elif header == POSDATA:
                if batch_n == 1:
                    cells = _recv_array(sock, (1, 2, 3, 3))[:, 0]
                    nat = _recv_int(sock)
                    positions = _recv_array(sock, (1, nat, 3))
                else:
                    nat = _recv_int(sock)
                    cells = _recv_array(sock, (batch_n, 2, 3, 3))[:, 0]
                    positions = _recv_array(sock, (batch_n, nat, 3))
                # i-PI 3.3.1 sends GETFORCE right behind the positions. Taking it off
                # the socket before the model runs means a driver killed mid-step
                # closes with an empty receive buffer (FIN, not RST): i-PI's batched
                # receiver treats only a clean close as a disconnection and re-queues.
                getforce_waiting = _take_pending(sock, GETFORCE)
                results = driver.evaluate(cells, positions)
                have_data = True
                if getforce_waiting:
                    _send_results(sock, results, nat, batched=batch_n > 1)
                    have_data = False
            elif header == GETFORCE:
                _send_results(sock, results, nat, batched=batch_n > 1)
                have_data = False
            elif header == EXIT:
                return "exit"
            else:
                raise Disconnected(f"unexpected message {header!r} from i-PI")
    except (Disconnected, ConnectionResetError, BrokenPipeError):
        return "disconnected"
    finally:
        sock.close()


def _take_pending(sock: socket.socket, header: bytes) -> bool:
    """Consume ``header`` if it is already waiting on the socket (never blocks)."""
    try:
        peeked = sock.recv(HDRLEN, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    if peeked == header:
        _recv_exact(sock, HDRLEN)
        return True
    return False


def _send_results(sock, results, nat: int, batched: bool) -> None:
    pots = np.array([r[0] for r in results], np.float64)
    forces = np.array([np.asarray(r[1]).reshape(3 * nat) for r in results], np.float64)
    virials = np.array([np.asarray(r[2]).reshape(3, 3) for r in results], np.float64)
    parts = [FORCEREADY]
    if batched:
        parts += [pots.tobytes(), np.int32(nat).tobytes(), forces.tobytes(), virials.tobytes()]
        for r in results:
            extra = r[3].encode()
            parts += [np.int32(len(extra)).tobytes(), extra]
    else:
        extra = results[0][3].encode()
        parts += [pots[:1].tobytes(), np.int32(nat).tobytes(), forces[0].tobytes(), virials[0].tobytes(), np.int32(len(extra)).tobytes(), extra]
    sock.sendall(b"".join(parts))


def serve(driver, address: str, port: int | None = None, unix: bool = True, reconnect_wait: float = 0.0, connect_wait: float = 60.0, give_up=None) -> str:
    """Serve i-PI; after a disconnection wait up to ``reconnect_wait`` s for it to return.

    Returns 'exit' when i-PI said EXIT, 'disconnected' when it went away for good.
    """
    sock = connect(address, port, unix, wait=connect_wait, give_up=give_up)
    while True:
        outcome = run_session(sock, driver)
        if outcome == "exit" or reconnect_wait <= 0:
            return outcome
        log.warning("i-PI disconnected; waiting up to %.0f s for it to come back", reconnect_wait)
        try:
            sock = connect(address, port, unix, wait=reconnect_wait)
        except TimeoutError:
            return "disconnected"
