"""The attempt log on disk: a 2xx keeps a prefix of its body, and the log stays under its ceiling.

The real daemon against real receivers with 64 KiB bodies; the journal (the file, read
straight from disk, or the database) is read to see what was stored.
"""

from __future__ import annotations

import json

from tests.integration.conftest import Daemon, JournalDB, Reply, wait_until

BIG = 64 * 1024  # what the delivery pool keeps of a body
PREFIX = 1024  # what the attempt log keeps of a 2xx's body
CEILING = 1024 * 1024


def big(tag: str) -> bytes:
    return tag.encode() * BIG


class Journal(JournalDB):
    """The daemon's journal, read-only, as another process sees its commits."""

    def __init__(self, d: Daemon) -> None:
        super().__init__(d)
        self._bytes = "octet_length({})" if self.postgres else "length(CAST({} AS BLOB))"

    def text_bytes(self) -> int:
        """What the stored responses and errors take, summed from the rows themselves."""
        response = self._bytes.format("coalesce(response, '')")
        error = self._bytes.format("coalesce(error, '')")
        return self.rows(f"SELECT coalesce(sum({response} + {error}), 0) FROM attempts")[0][0]

    def done(self, webhook: str) -> int:
        sql = "SELECT count(*) FROM deliveries WHERE webhook = ? AND state = 'done'"
        return self.rows(sql, webhook)[0][0]


def test_success_bodies_are_cut_and_the_attempt_log_stays_under_its_ceiling(hooks, daemon_factory):
    hooks.default("/ok", Reply(200, body=big("o")))
    for _ in range(45):  # each event to /flaky fails once, then succeeds: both 64 KiB
        hooks.script("/flaky", Reply(500, body=big("f")), Reply(200, body=big("s")))
    hooks.default("/down", Reply(500, body=big("d")))
    d = daemon_factory(
        [
            {"name": "chatty", "url": hooks.url("/ok"), "events": ["A", "C"]},
            # ordered: one delivery at a time, so one retrying delivery at most
            {"name": "flaky", "url": hooks.url("/flaky"), "events": ["A"], "ordered": True},
            {"name": "down", "url": hooks.url("/down"), "events": ["D"],
             "retry": {"attempts": 2, "backoff": ["50ms"]}},
        ],
        attempt_log_max="1MiB",
    ).start()  # fmt: skip
    journal = Journal(d)

    # The oldest attempts of all: an exhausted delivery, whose newest attempt must stay.
    d.send({"type": "D", "id": "down-1"})
    wait_until(lambda: d.webhook("down")["state"] == "disabled", what="down disabled")
    for i in range(5):
        d.send({"type": "A", "id": f"old-{i}"})
    wait_until(lambda: journal.done("flaky") == 5, what="the old events delivered")

    sizes = []
    for i in range(40):
        d.send({"type": "A", "id": f"new-{i}"})
        sizes.append(journal.text_bytes())

    def delivered() -> bool:
        sizes.append(journal.text_bytes())
        return journal.done("chatty") == 45 and journal.done("flaky") == 45

    wait_until(delivered, 60, "every event delivered to chatty and flaky")
    d.send({"type": "C", "id": "last"})  # chatty only: the newest attempt of all
    wait_until(lambda: journal.done("chatty") == 46, what="the last event delivered")
    sizes.append(journal.text_bytes())
    # Every commit leaves the log under the ceiling (the file may hold one transaction
    # more in free pages, which the next transaction reuses).
    assert max(sizes) <= CEILING, f"attempt log reached {max(sizes)} bytes"
    assert journal.text_bytes() > CEILING // 2  # the ceiling was the limit, not a wipe

    # A 2xx keeps its first KiB, a failure all 64 KiB.
    oks = dict(journal.rows("SELECT event_id, response FROM attempts WHERE webhook = 'chatty'"))
    assert "last" in oks and set(oks.values()) == {"o" * PREFIX}
    flaky = dict(journal.rows("SELECT status, max(length(response)) FROM attempts"
                              " WHERE webhook = 'flaky' GROUP BY status"))  # fmt: skip
    assert flaky == {200: PREFIX, 500: BIG}

    # The oldest attempts of done deliveries went first...
    kept = journal.rows("SELECT id, webhook, event_id, number FROM attempts ORDER BY id")
    done = [row for row in kept if row[1] != "down"]
    assert not [row for row in done if row[2].startswith("old-")]
    ids = [row[0] for row in done]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # a suffix: no newer row went
    assert done[-1][1:] == ("chatty", "last", 1)
    # ...while the exhausted delivery's newest attempt, older than all of them, stayed.
    assert ("down", "down-1", 2) in {(w, e, n) for _, w, e, n in kept}
    proc = d.cli("attempts", "down", "--json")
    assert proc.returncode == 0, proc.stderr
    newest = json.loads(proc.stdout)[0]
    assert (newest["id"], newest["attempt"], newest["error"]) == ("down-1", 2, "HTTP 500")
    assert newest["response"] == "d" * BIG
    assert d.stop() == 0
