"""A tiny stand-in service for supervisor tests: serves GET /health, and can misbehave on request.

    python fake_service.py --port P [--crash] [--spawn-child] [--detached-child] [--ignore-term] [--pid-out F]

--crash            print a message and exit 3 before listening
--spawn-child      start a child process (same session) that sleeps
--detached-child   start a grandchild in a NEW session (escapes the process group)
--ignore-term      ignore SIGTERM (the supervisor must SIGKILL it after the grace period)
--pid-out F        write the PIDs of spawned children to F, one per line
--signal-log F     on SIGTERM/SIGINT append "<signal> <epoch seconds>" to F, wait --linger seconds, stop the
                   children it spawned and exit 0 (a service that shuts its own children down)
"""

from __future__ import annotations

import argparse
import http.server
import signal
import subprocess
import sys
import time
from pathlib import Path

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--crash", action="store_true")
    ap.add_argument("--spawn-child", action="store_true")
    ap.add_argument("--detached-child", action="store_true")
    ap.add_argument("--ignore-term", action="store_true")
    ap.add_argument("--pid-out")
    ap.add_argument("--signal-log")
    ap.add_argument("--linger", type=float, default=0.0)
    a = ap.parse_args()
    if a.crash:
        print("fake_service: cannot open the database (simulated crash)", flush=True)
        sys.exit(3)
    if a.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    children = []
    if a.spawn_child:
        children.append(subprocess.Popen(SLEEP))
    if a.detached_child:
        children.append(subprocess.Popen(SLEEP, start_new_session=True))
    pids = [c.pid for c in children]
    if a.signal_log:
        log = Path(a.signal_log)

        def stop(signum: int, _frame: object) -> None:
            with log.open("a") as f:
                f.write(f"{signal.Signals(signum).name} {time.time()}\n")
            time.sleep(a.linger)
            for child in children:
                child.terminate()
                child.wait()
            sys.exit(0)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    if a.pid_out:
        Path(a.pid_out).write_text("".join(f"{p}\n" for p in pids))
    print(f"fake_service: listening on {a.port}", flush=True)
    http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Health).serve_forever()


if __name__ == "__main__":
    main()
