"""A real `cowmem watch` of gunicorn serving tests/watch_app.py: docs/watch.md's table and plot.

Starts ``cowmem watch --interval 0.5 --plot PLOT -- python -m gunicorn
--preload -w 3 -b 127.0.0.1:PORT watch_app:app`` (with ``--freeze``, also
``-c tests/watch_gunicorn_freeze.py``: gc.freeze() in pre_fork; with
``--attach``, ``-c tests/watch_gunicorn_attach.py``: cowmem.watch.attach()
in when_ready; with ``--collect``, a gc.collect() per request), waits for the workers, sends
ROUNDS rounds of 6 requests (3 at a time, each reading 1/24 of the
data, every part once in 4 rounds) a second apart, then stops watch with
Ctrl-C (SIGINT), which writes the plot, and ends gunicorn.  Prints
watch's last table and each worker's last copied MiB.

    .venv/bin/python scripts/watch_gunicorn.py --plot docs/watch-gunicorn.png
    .venv/bin/python scripts/watch_gunicorn.py --collect
    .venv/bin/python scripts/watch_gunicorn.py --collect --freeze
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cowmem.watch import processes  # noqa: E402
from watching import client, wait_for  # noqa: E402

PARTS, PER_ROUND, WORKERS = 24, 6, 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", help="where watch writes the timeline (.png)")
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() in gunicorn's pre_fork hook")
    parser.add_argument("--collect", action="store_true", help="gc.collect() per request")
    parser.add_argument("--attach", action="store_true",
                        help="cowmem.watch.attach() in gunicorn's when_ready hook (not with --freeze)")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    port = free_port()
    server = [sys.executable, "-m", "gunicorn", "--preload", "-w", str(WORKERS), "-b", f"127.0.0.1:{port}",
              "--chdir", str(ROOT / "tests"), "watch_app:app"]
    if args.freeze or args.attach:
        config = "watch_gunicorn_freeze.py" if args.freeze else "watch_gunicorn_attach.py"
        server[3:3] = ["-c", str(ROOT / "tests" / config)]
    env = {**os.environ, "WATCH_APP_GC_COLLECT": "1" if args.collect else "0"}
    watch_cmd = [sys.executable, "-m", "cowmem", "watch", "--interval", "0.5"]
    if args.plot:
        watch_cmd += ["--plot", args.plot]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as log:
        watch = subprocess.Popen([*watch_cmd, "--", *server], stdout=out, stderr=log, env=env)
        master = None
        try:
            wait_for(lambda: len(processes.tree(watch.pid)) == 2 + WORKERS, timeout=120, what="the workers")
            master = processes.tree(watch.pid)[1].info.pid
            time.sleep(1.0)
            for r in range(args.rounds):
                first = (r * PER_ROUND) % PARTS
                client(port, PARTS, first, PER_ROUND)
                time.sleep(1.0)
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=60)
        finally:
            if master is not None:
                os.killpg(master, signal.SIGKILL)
                for index in Path("/tmp").glob(f"cowmem-watch-{master}-*.npz"):
                    index.unlink()  # attach() removes it at a normal exit only
            if watch.poll() is None:
                watch.kill()
                watch.wait()
        out.seek(0)
        tables = out.read().split("\n\n")
    print(f"# {' '.join(['cowmem', 'watch', *watch_cmd[4:], '--', 'gunicorn', *server[3:]])}")
    print(f"# WATCH_APP_GC_COLLECT={env['WATCH_APP_GC_COLLECT']}, {args.rounds} rounds of {PER_ROUND} requests")
    print(tables[-1].rstrip())


if __name__ == "__main__":
    main()
