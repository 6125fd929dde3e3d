"""The control socket: how the CLI asks a running router for status and changes.

One thread owns a ZeroMQ ROUTER socket (pyzmq sockets are not thread-safe).
Requests may block for seconds (``enable`` waits for a health check), so each
runs on its own short-lived thread; the answers come back through a queue and
a wake pipe and are sent by the socket's own thread. At most ``MAX_REQUESTS``
run at once; beyond that the server answers "busy" at once rather than queueing
work an impatient operator has already given up on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from router import ControlError, RouterError

log = logging.getLogger(__name__)

MAX_REQUESTS = 8
MAX_ATTEMPTS_LIMIT = 10_000
ATTEMPTS_LIMIT = 20  # attempts shown when no limit is asked for (CLI, API)
_STOP = object()


class NotReachable(ControlError):
    """Nothing answered on the control address: the router is most likely not running."""


def _name(args: dict) -> str:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise RouterError("'name' must be a webhook name")
    return name


def _time(args: dict, key: str) -> float | None:
    at = args.get(key)
    if at is not None and (isinstance(at, bool) or not isinstance(at, int | float)):
        raise RouterError(f"'{key}' must be epoch seconds or null")
    return None if at is None else float(at)


def _flag(args: dict, key: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise RouterError(f"'{key}' must be true or false")
    return value


def _event(args: dict) -> str | None:
    event = args.get("event")
    if event is not None and (not isinstance(event, str) or not event):
        raise RouterError("'event' must be an event id or null")
    return event


def _limit(args: dict) -> int:
    limit = args.get("limit", ATTEMPTS_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_ATTEMPTS_LIMIT:
        raise RouterError(f"'limit' must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}")
    return limit


# cmd -> (allowed argument names, call)
COMMANDS: dict[str, tuple[frozenset[str], Callable[[Any, dict], Any]]] = {
    "status": (frozenset(), lambda app, a: app.status()),
    "enable": (frozenset({"name"}), lambda app, a: app.enable(_name(a))),
    "disable": (frozenset({"name"}), lambda app, a: app.disable(_name(a))),
    "replay": (
        frozenset({"name", "since", "until", "event", "failed_only"}),
        lambda app, a: app.replay(
            _name(a), _time(a, "since"), _flag(a, "failed_only"), _time(a, "until"), _event(a)
        ),
    ),
    "reload": (frozenset(), lambda app, a: app.reload()),
    # one webhook's part of ``status`` (``replay`` follows its progress there)
    "webhook": (
        frozenset({"name"}),
        lambda app, a: app.webhook(_name(a)),
    ),
    "attempts": (
        frozenset({"name", "limit", "failed", "event"}),
        lambda app, a: app.attempts(_name(a), _limit(a), _flag(a, "failed"), _event(a)),
    ),
}


def handle(app: Any, body: bytes) -> dict:
    """Answer one request frame. Never raises: every failure becomes an error reply."""
    try:
        request = msgpack.unpackb(body, raw=False)
    except Exception:
        return {"ok": False, "error": "request is not a msgpack map"}
    if not isinstance(request, dict):
        return {"ok": False, "error": "request is not a msgpack map"}
    cmd, args = request.get("cmd"), request.get("args") or {}
    if cmd not in COMMANDS:
        known = ", ".join(COMMANDS)
        return {"ok": False, "error": f"unknown command {cmd!r} (known: {known})"}
    if not isinstance(args, dict):
        return {"ok": False, "error": "'args' must be a map"}
    allowed, call = COMMANDS[cmd]
    unknown = sorted(str(k) for k in args if k not in allowed)
    if unknown:
        return {"ok": False, "error": f"{cmd}: unknown argument(s) {', '.join(unknown)}"}
    try:
        return {"ok": True, "result": call(app, args)}
    except RouterError as e:
        return {"ok": False, "error": str(e)}
    except Exception:
        log.exception("control command %r failed", cmd)
        return {"ok": False, "error": f"{cmd} failed inside the router (see its log)"}


def _pack(reply: dict) -> bytes:
    try:
        return msgpack.packb(reply, default=str)
    except Exception:
        log.exception("cannot encode the control reply")
        return msgpack.packb({"ok": False, "error": "the router could not encode its answer"})


def _ipc_path(bind: str) -> str | None:
    """The socket file of an ``ipc://`` address (None for tcp:// or Linux abstract sockets)."""
    if not bind.startswith("ipc://") or bind.startswith("ipc://@"):
        return None
    return bind[len("ipc://") :]


class ControlServer:
    """Serves control requests on ``bind`` (``ipc://`` or ``tcp://``) for ``app``."""

    def __init__(self, bind: str, app: Any):
        self.bind = bind
        self.app = app
        self.address = bind  # the bound endpoint, with the real port for tcp://…:0
        self._replies: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._wake_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_REQUESTS)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and start serving; raises ``RouterError`` when the address cannot be bound."""
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            self._close_pipe()
            raise RouterError(f"cannot bind the control socket {self.bind}: {self._error}")
        log.info("control socket listening on %s", self.address)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving; requests still running are abandoned (their answers dropped)."""
        if self._thread is None:
            return
        self._replies.put(_STOP)
        self._wake()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("control thread did not stop within %.1fs", timeout)
        else:
            self._close_pipe()
        self._thread = None

    def _close_pipe(self) -> None:
        with self._wake_lock:  # request threads may still try to wake us
            if self._wake_w >= 0:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_w = -1

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_w < 0:
                return
            with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
                os.write(self._wake_w, b"x")

    # ------------------------------------------------------------------ socket thread

    def _bind(self, ctx: zmq.Context) -> zmq.Socket:
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 100)
        path = _ipc_path(self.bind)
        if path is not None and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            sock.bind(self.bind)
            if path is not None:
                os.chmod(path, 0o600)  # owner-only: the socket can disable webhooks
        except Exception:
            sock.close(0)
            raise
        self.address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return sock

    def _run(self) -> None:
        ctx = zmq.Context()
        try:
            sock = self._bind(ctx)
        except Exception as e:
            self._error = e
            self._ready.set()
            ctx.term()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while self._serve_once(sock, poller):
                pass
        finally:
            sock.close()
            ctx.term()

    def _serve_once(self, sock: zmq.Socket, poller: zmq.Poller) -> bool:
        events = dict(poller.poll())
        if self._wake_r in events:
            os.read(self._wake_r, 4096)
        while True:
            try:
                item = self._replies.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return False
            sock.send_multipart(item)
        while sock.poll(0, zmq.POLLIN):
            frames = sock.recv_multipart()
            if len(frames) < 2:
                continue  # not a routed request; nothing to answer to
            self._dispatch(frames[:-1], frames[-1])
        return True

    def _dispatch(self, envelope: list[bytes], body: bytes) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(envelope, "the router is busy with other control requests")
            return
        try:
            threading.Thread(
                target=self._work, args=(envelope, body), name="control-request", daemon=True
            ).start()
        except RuntimeError as e:  # no thread to be had (a process or memory limit)
            self._slots.release()
            log.error("control: cannot start a thread for a request: %s", e)
            self._refuse(envelope, "the router cannot start a thread for the request: try again")

    def _refuse(self, envelope: list[bytes], why: str) -> None:
        self._replies.put([*envelope, _pack({"ok": False, "error": why})])
        self._wake()

    def _work(self, envelope: list[bytes], body: bytes) -> None:
        try:
            reply = _pack(handle(self.app, body))
            self._replies.put([*envelope, reply])
            self._wake()
        finally:
            self._slots.release()


# ---------------------------------------------------------------------- client


def _probe(address: str, path: str) -> None:
    """Fail fast on an ipc socket nobody serves; ZeroMQ would just wait out the timeout."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotReachable(f"no router listening at {address} — is it running?") from None
    except PermissionError:
        raise ControlError(
            f"permission denied on {address}: run this as the router's user"
        ) from None
    except OSError:
        pass  # let ZeroMQ try and report
    finally:
        probe.close()


def request(address: str, cmd: str, args: dict | None = None, timeout: float = 10.0) -> Any:
    """Send one control request and return its result.

    Raises:
        NotReachable: no answer within ``timeout`` (or no ipc socket file at all).
        ControlError: the router answered with an error.
    """
    path = _ipc_path(address)
    if path is not None:
        _probe(address, path)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        sock.send(msgpack.packb({"cmd": cmd, "args": args or {}}))
        if not sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise NotReachable(
                f"no answer from the router at {address} within {timeout:g}s "
                "(it may be busy; try --timeout)"
            )
        body = sock.recv()
    except zmq.ZMQError as e:
        raise ControlError(f"cannot talk to {address}: {e}") from None
    finally:
        sock.close()
    try:
        reply = msgpack.unpackb(body, raw=False)
    except Exception:
        raise ControlError(f"{address} answered with something that is not msgpack") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlError(f"{address} answered with an unexpected reply")
    if not reply["ok"]:
        raise ControlError(str(reply.get("error") or "unknown error"))
    return reply.get("result")
