"""pressroom's own local Ray: listens on loopback only, and leaves nothing listening once stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.search.conftest import PRESSROOM
from tests.search.listeners import descendants, listen_addresses

LOOPBACK = {"127.0.0.1", "::1"}


@pytest.mark.slow
def test_a_local_search_listens_on_loopback_only_and_a_sigterm_leaves_no_listener(write_spec, tmp_path):
    evopress = {"name": "evopress", "params": {"generations": 200, "offspring": 6, "stages": [[2, 256], [1, 512]]}}
    spec = write_spec(algorithm=evopress)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [PRESSROOM, "search", str(spec), "--storage", f"sqlite:///{tmp_path}/s.db"]
    log = tmp_path / "search.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while "evaluator actors" not in log.read_text():  # Ray is up, and the search started its workers
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        time.sleep(5)  # the workers start their own servers as they come up
        tree = descendants(proc.pid)
        listening = listen_addresses(tree)
        assert len(listening) >= 3, listening  # the GCS, the raylet, its agents, the workers
        assert set().union(*listening.values()) <= LOOPBACK, listening

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
        deadline = time.monotonic() + 60
        while listen_addresses(tree) and time.monotonic() < deadline:
            time.sleep(1)
        assert not listen_addresses(tree), "Ray processes still listen after the coordinator stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
