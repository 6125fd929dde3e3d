"""The lease trust the keeper writes and the senders read (router.trust)."""

import subprocess
import sys
import time

from router.trust import Trust
from tests.builders import HandClock


def test_nothing_is_trusted_before_a_round_and_until_the_renewal_after_one():
    clock = HandClock()
    t = Trust(monotonic=clock)
    handed = t.generation
    assert handed >= 1  # 0 is an attempt without a lease
    assert not t.allows(handed)
    t.renewed(1010.0)
    assert t.allows(handed)
    clock.now = 1010.0
    assert not t.allows(handed)
    t.renewed(1020.0)  # a renewal made while the attempt waited for a worker counts
    assert t.allows(handed)


def test_a_loss_stops_what_was_handed_over_before_it_even_once_trusted_again():
    clock = HandClock()
    t = Trust(monotonic=clock)
    t.renewed(1010.0)
    before = t.generation
    t.lose()
    assert t.until == 0.0 and not t.allows(before)
    t.renewed(1020.0)
    assert not t.allows(before)
    assert t.allows(t.generation)


def test_a_child_process_reads_what_the_parent_writes():
    t = Trust()
    t.renewed(time.monotonic() + 60)
    handed = t.generation
    script = (
        "import sys; from router.trust import Trust; t = Trust(int(sys.argv[1]));"
        "print(t.allows(int(sys.argv[2])), flush=True); sys.stdin.readline();"
        "print(t.allows(int(sys.argv[2])))"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(t.fileno()), str(handed)],
        pass_fds=(t.fileno(),), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "True"
        t.lose()  # seen by the child at once: the memory is shared
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "False"
    finally:
        child.stdin.close()
        assert child.wait(timeout=30) == 0
