"""Senders: the delivery pool in child processes, so HTTP runs beside the daemon, not in it.

Sending an attempt (signing, the request, reading the answer) is most of the CPU
a delivery costs, and one interpreter lock lets the daemon use one core. So the
daemon hands attempts to ``Senders``, which has the interface of
``router.delivery.DeliveryPool`` (``start``, ``submit(attempt, reply)``,
``stop``), and each child process runs a ``DeliveryPool`` of its own. The
supervisors keep owning retries and health: a child only reports facts.

Each child is joined to the daemon by a socket pair it inherits: no file to
protect, and a child whose daemon died (even by kill -9) reads end-of-file and
exits. On several daemons it also inherits the lease trust (``router.trust``), shared
memory its pool checks before each POST. Both ways carry a stream of msgpack arrays,
one per record; whatever is waiting when a writer thread wakes goes in one write.
What a child must know of a webhook to send to it (``_sendable``) travels once per
config, not per attempt.

A child that dies is replaced. Its attempts in flight are answered as the
router's fault ("the sender process stopped"): they never count against the
webhook's health, and their deliveries are retried like any other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from functools import partial
from typing import Any

import msgpack

import router
from router import RouterError
from router.clock import Clock
from router.messages import Attempt, AttemptResult, Payload
from router.trust import Trust

log = logging.getLogger(__name__)

READ_SIZE = 1 << 16  # bytes per socket read, into one buffer reused
NUM_CONFIGS = 4096  # webhook configs a child keeps worked out (as the pool's targets)
RESTART_BACKOFF = (0.1, 5.0)  # seconds before starting a child again: first, most
STOP_GRACE = 2.0  # seconds a child may take past the stop timeout before it is killed

# What one record to a child is: its first field. A record back is a result,
# its first field the attempt's token (from 1), or the child's hello.
_CONFIG, _FORGET, _ATTEMPT, _STOP = 0, 1, 2, 3
_HELLO = 0

# The fields of a result after its token, in AttemptResult's order: what the daemon
# does not know already (the webhook, seq and attempt number are the token's).
_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(AttemptResult))[3:]

# The fields of a webhook config a child needs to send to it.
_SENDABLE = ("name", "url", "secrets", "timeout", "headers", "signature", "signature_header",
             "allow_private_networks")  # fmt: skip


def _packer() -> msgpack.Packer:
    # A payload may hold lone surrogates; they travel as they are and fail in the
    # child's pool, which says the body cannot be encoded.
    return msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass")


def _unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(use_list=True, raw=False, unicode_errors="surrogatepass",
                            max_buffer_size=1 << 30)  # fmt: skip


# --------------------------------------------------------------------------- the daemon's side


class Senders:
    """Attempts go to ``processes`` child processes of ``workers`` sending threads in all."""

    def __init__(
        self, processes: int, workers: int, clock: Clock | None = None, trust: Trust | None = None
    ):
        """``trust``: what the daemon's leases allow (SPEC §8); the children map it too."""
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self._clock = clock or Clock()
        self.trust = trust
        self._threads = -(-workers // processes)  # each child's share, rounded up
        self._tokens = itertools.count(1)
        self._stopping = False
        self._children = [_Child(self, n) for n in range(processes)]

    def start(self) -> None:
        """Start the children; ``ready`` waits until they can send."""
        for child in self._children:
            child.start()

    def ready(self, timeout: float) -> None:
        """Raises ``RouterError`` if a child is not up within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for child in self._children:
            if not child.up.wait(max(0.0, deadline - time.monotonic())):
                raise RouterError(f"sender process {child.number} did not start in {timeout:g} s")

    def submit(self, attempt: Attempt, reply) -> None:
        """Queue one attempt; ``reply(result)`` is called later from a reader thread.

        The children take turns, attempt by attempt: a busy webhook keeps them all
        busy (each keeps its own warm connections to it). Results for the same
        ``reply`` that come back together are handed over in one call, as a tuple.
        """
        token = next(self._tokens)
        children = self._children
        children[token % len(children)].submit(token, attempt, reply)

    def stop(self, timeout: float) -> None:
        """Let running attempts finish for up to ``timeout`` seconds; drop queued ones.

        Dropped attempts get no reply: their deliveries stay pending in the journal.
        """
        self._stopping = True
        for child in self._children:
            child.ask_stop(timeout)
        deadline = time.monotonic() + timeout + STOP_GRACE
        for child in self._children:
            child.join(deadline)
        log.info("sender processes stopped")

    def replace(self, dead: _Child) -> None:
        """Start another child in place of ``dead`` (from its reader thread)."""
        if self._stopping:
            return
        child = _Child(self, dead.number, dead.next_backoff())
        self._children[dead.number] = child
        child.start()


class _Child:
    """One child process: its socket, a reader thread, and its attempts in flight.

    Attempts are written to the socket by the threads that submit them (one lock
    orders the writes): handing them to a writer thread would cost a thread switch
    per attempt. The socket pair exists before the child does, so attempts
    submitted while it starts wait in the socket's buffer.
    """

    def __init__(self, senders: Senders, number: int, backoff: float = 0.0):
        self.senders = senders
        self.number = number
        self.backoff = backoff  # waited before starting; grows while children keep dying
        self.started = 0.0
        self.proc: subprocess.Popen | None = None
        self.sock, self._theirs = socket.socketpair()
        self._lock = threading.Lock()  # guards pending and dead; never held while writing
        self._pending: dict[int, tuple[Attempt, Any]] = {}
        self._dead = False
        self.up = threading.Event()  # the child said it can send
        self._send_lock = threading.Lock()  # orders the writes; guards the configs
        self._pack = _packer().pack
        self._configs: OrderedDict[int, tuple[int, Any]] = OrderedDict()
        self._keys = itertools.count(1)
        self._reader = threading.Thread(target=self._read, name=f"sender-{number}", daemon=True)

    def start(self) -> None:
        self._reader.start()  # it starts the process, after the backoff

    def _spawn(self) -> bool:
        theirs = self._theirs
        env = dict(os.environ)  # the child runs this very package, wherever it came from
        top = os.path.dirname(os.path.dirname(os.path.abspath(router.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (top, env.get("PYTHONPATH"))))
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        trust = self.senders.trust
        fds = (theirs.fileno(), *([trust.fileno()] if trust else []))
        argv = [sys.executable, "-m", "router.senders", str(self.senders._threads), level,
                *map(str, fds)]  # fmt: skip
        try:
            self.proc = subprocess.Popen(argv, pass_fds=fds, env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            log.error("cannot start sender process %d: %s", self.number, exc)
            return False
        finally:
            theirs.close()
        self.started = time.monotonic()
        log.info("sender process %d started (pid %d, %d threads)", self.number, self.proc.pid,
                 self.senders._threads)  # fmt: skip
        return True

    def next_backoff(self) -> float:
        """A child that lived a minute starts the next at once; otherwise back off more."""
        if self.started and time.monotonic() - self.started > 60:
            return 0.0
        low, high = RESTART_BACKOFF
        return min(high, max(low, self.backoff * 2))

    # ------------------------------------------------------------------ to the child

    def submit(self, token: int, attempt: Attempt, reply) -> None:
        with self._lock:
            dead = self._dead
            if not dead:
                self._pending[token] = (attempt, reply)
        if dead:  # between a death and its replacement
            self._answer_lost(attempt, reply)
            return
        try:
            with self._send_lock:
                data = b"".join(self._pack(r) for r in self._records(token, attempt))
                self.sock.sendall(data)
        except OSError:
            pass  # the child is gone: its reader answers for what was in flight
        except Exception:  # e.g. a value msgpack cannot carry: answered, never stuck
            log.exception("%s: event %s: cannot hand the attempt to sender process %d",
                          attempt.webhook.name, attempt.payload.id, self.number)  # fmt: skip
            self._fail(token)

    def ask_stop(self, timeout: float) -> None:
        with contextlib.suppress(OSError), self._send_lock:
            self.sock.sendall(self._pack([_STOP, timeout]))

    def _records(self, token: int, attempt: Attempt) -> list:
        """The attempt's record, after its webhook config's if the child lacks it."""
        webhook, out = attempt.webhook, []
        known = self._configs.get(id(webhook))
        if known is None:
            key = next(self._keys)
            out.append([_CONFIG, key, *(_sendable(webhook))])
            known = self._configs[id(webhook)] = (key, webhook)  # held: its id stays its own
            if len(self._configs) > NUM_CONFIGS:
                old, _ = self._configs.popitem(last=False)[1]
                out.append([_FORGET, old])
        else:
            self._configs.move_to_end(id(webhook))
        p = attempt.payload
        out.append([_ATTEMPT, token, known[0], attempt.seq, p.id, p.type, p.body, attempt.number,
                    attempt.lease_generation])  # fmt: skip
        return out

    # ------------------------------------------------------------------ from the child

    def _read(self) -> None:
        if self.backoff:
            time.sleep(self.backoff)
        if self.senders._stopping or not self._spawn():
            self._theirs.close()
            self._died(None)
            return
        records = _records(self.sock)
        while (batch := next(records, None)) is not None:
            self._deliver(batch)
        self._died(self._exit_code())

    def _deliver(self, records: list[list]) -> None:
        """Hand each result to its reply; several for one reply go together, as a tuple.

        Results pile up only while the daemon is busy, and then one message to a
        supervisor for all of its results saves a message per result.
        """
        if records and records[0][0] == _HELLO:
            self.up.set()
            del records[0]
        with self._lock:
            jobs = [(self._pending.pop(r[0], None), r) for r in records]
        replies: dict[Any, list[AttemptResult]] = {}
        for job, record in jobs:
            if job is not None:
                attempt, reply = job
                result = AttemptResult(
                    attempt.webhook.name, attempt.seq, attempt.number, *record[1:]
                )
                replies.setdefault(reply, []).append(result)
        for reply, results in replies.items():
            try:
                reply(results[0] if len(results) == 1 else tuple(results))
            except Exception:
                log.exception("%s: reply callback failed", results[0].webhook)

    def _exit_code(self) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:  # closed its socket but lives on: end it
            self.proc.kill()
            return self.proc.wait()

    def _died(self, code: int | None) -> None:
        """Answer every attempt in flight as lost, and have the child replaced."""
        with self._lock:
            self._dead = True
            lost, self._pending = list(self._pending.values()), {}
        with contextlib.suppress(OSError):  # a submit writing to it fails at once
            self.sock.shutdown(socket.SHUT_RDWR)
        if self.senders._stopping:
            return
        log.error("sender process %d stopped (exit code %s) with %d attempts in flight; "
                  "starting another", self.number, code, len(lost))  # fmt: skip
        for attempt, reply in lost:
            self._answer_lost(attempt, reply)
        self.senders.replace(self)

    def _fail(self, token: int) -> None:
        with self._lock:
            job = self._pending.pop(token, None)
        if job is not None:
            self._answer_lost(*job)

    def _answer_lost(self, attempt: Attempt, reply) -> None:
        now = self.senders._clock.time()
        result = AttemptResult(
            webhook=attempt.webhook.name, seq=attempt.seq, number=attempt.number, ok=False,
            status=None, error="internal error: the sender process stopped", retry_after=None,
            latency=0.0, response="", started_at=now, router_fault=True,
        )  # fmt: skip
        try:
            reply(result)
        except Exception:
            log.exception("%s: event %s: reply callback failed", result.webhook, attempt.payload.id)

    def join(self, deadline: float) -> None:
        """Wait for the child to end by ``deadline``; then kill it."""
        self._reader.join(max(0.0, deadline - time.monotonic()))
        if self.proc is not None and self.proc.poll() is None:
            log.warning("sender process %d did not stop in time; killing it", self.number)
            self.proc.kill()
            self.proc.wait()
        self._reader.join(STOP_GRACE)


def _records(sock: socket.socket) -> Iterator[list[list]]:
    """The records that each socket read completes, until end-of-file or an error."""
    unpacker, buf = _unpacker(), bytearray(READ_SIZE)
    view = memoryview(buf)
    while True:
        try:
            n = sock.recv_into(buf)
        except OSError:
            return
        if not n:
            return
        unpacker.feed(view[:n])
        yield list(unpacker)


def _sendable(webhook: Any) -> list:
    """What a child needs of a webhook config to send to it: no rules, nothing else."""
    return [getattr(webhook, name) for name in _SENDABLE]  # msgpack packs tuples as arrays


def _config(fields: list) -> Any:
    from router.config import WebhookConfig

    values = dict(zip(_SENDABLE, fields, strict=True))
    values["secrets"] = tuple(values["secrets"])
    values["headers"] = tuple(tuple(pair) for pair in values["headers"])
    return WebhookConfig(**values)


# --------------------------------------------------------------------------- the child's side


def child_main(threads: int, level: str, fd: int, trust_fd: int | None = None) -> int:
    """Run one child: attempts in, results out, until a stop or end-of-file.

    ``fd`` is its end of the socket pair; ``trust_fd`` the daemon's lease trust, if any.
    """
    from router.cli import setup_logging
    from router.delivery import DeliveryPool

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the daemon decides when its senders stop
    setup_logging(level)
    sock = socket.socket(fileno=fd)
    out = _Out(sock)
    pool = DeliveryPool(threads, trust=None if trust_fd is None else Trust(trust_fd))
    pool.start()
    out.send([_HELLO])
    configs: dict[int, Any] = {}
    stop_after = None
    for batch in _records(sock):  # until a stop, or the daemon's end (end-of-file)
        for record in batch:
            kind = record[0]
            if kind == _ATTEMPT:
                _, token, key, seq, pid, ptype, body, number, generation = record
                payload = Payload(pid, ptype, body)
                attempt = Attempt(configs[key], seq, payload, number, generation)
                pool.submit(attempt, partial(out.result, token))
            elif kind == _CONFIG:
                configs[record[1]] = _config(record[2:])
            elif kind == _FORGET:
                configs.pop(record[1], None)
            elif kind == _STOP:
                stop_after = record[1]
        if stop_after is not None:
            break
    pool.stop(stop_after or 0.0)  # on end-of-file nobody waits for the results
    sock.close()
    return 0


class _Out:
    """The child's way back: each worker writes its own result (one lock orders the writes)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._lock = threading.Lock()
        self._pack = _packer().pack

    def result(self, token: int, r: AttemptResult) -> None:
        self.send([token, *(getattr(r, name) for name in _RESULT_FIELDS)])

    def send(self, record: list) -> None:
        with self._lock, contextlib.suppress(OSError):  # the daemon is gone: nobody waits
            self._sock.sendall(self._pack(record))


if __name__ == "__main__":
    sys.exit(child_main(int(sys.argv[1]), sys.argv[2], *map(int, sys.argv[3:])))
