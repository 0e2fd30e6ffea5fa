"""Command line: serve runs live, write a static page, or take a screenshot.

    python -m experiments.dashboard runs/arith-lenpen runs/arith-nolenpen           # live, 127.0.0.1:6070
    python -m experiments.dashboard runs/* --static report.html                     # one offline file
    python -m experiments.dashboard runs/demo --screenshot docs/dashboard.png        # PNG for the docs
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from experiments.dashboard.browser import BrowserMissing, screenshot
from experiments.dashboard.data import open_runs
from experiments.dashboard.page import render_page
from experiments.dashboard.server import DashboardServer, serve, static_boot

DEFAULT_PORT = 6070  # next to TensorBoard's 6006; Ray's dashboard has 8265


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="thinkrl-dashboard",
        description="Reward-curve dashboard for thinkrl run directories (metrics.jsonl, samples.jsonl).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories to show, overlaid")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; anything else exposes model outputs "
                        "to whoever can reach it, so it must be asked for explicitly)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    p.add_argument("--refresh", type=float, default=5.0, metavar="SECONDS",
                   help="how often the live page polls for new rows (default 5)")
    p.add_argument("--static", type=Path, metavar="OUT.html",
                   help="write the page as one self-contained offline HTML file and exit")
    p.add_argument("--screenshot", type=Path, metavar="OUT.png",
                   help="render the page in headless Chromium, save a full-page PNG and exit")
    p.add_argument("--screenshot-width", type=int, default=1500, help="viewport width in pixels (default 1500)")
    p.add_argument("--samples-per-iteration", type=int, default=8, metavar="N",
                   help="rollouts per iteration embedded by --static (default 8, half correct where possible)")
    p.add_argument("--max-chars", type=int, default=20000, metavar="N",
                   help="cut prompts/responses longer than this in the page, marked as cut (default 20000)")
    p.add_argument("--verbose", action="store_true", help="log every HTTP request")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.refresh <= 0:
        parser.error("--refresh must be > 0 seconds")
    if args.samples_per_iteration < 1 or args.max_chars < 1:
        parser.error("--samples-per-iteration and --max-chars must be >= 1")
    try:
        runs = open_runs(args.runs)
    except (FileNotFoundError, NotADirectoryError) as e:
        parser.error(str(e))  # exits 2 with the message naming the path
    for run in runs.values():
        if not run.metrics.path.exists():
            print(f"warning: {run.metrics.path} does not exist yet; its panels stay empty until it does",
                  file=sys.stderr)

    if args.static:
        page, _ = render_page(static_boot(runs, args.samples_per_iteration, args.max_chars), static=True)
        args.static.parent.mkdir(parents=True, exist_ok=True)
        args.static.write_text(page, encoding="utf-8")
        print(f"wrote {args.static} ({len(page) / 1e6:.1f} MB, opens offline)")
    if args.screenshot:
        take_screenshot(runs, args.screenshot, args.screenshot_width, args.max_chars, args.refresh)
        print(f"wrote {args.screenshot}")
    if args.static or args.screenshot:
        return 0

    try:
        server = DashboardServer(args.host, args.port, runs, refresh_s=args.refresh,
                                 max_chars=args.max_chars, verbose=args.verbose)
    except OSError as e:
        parser.error(f"cannot bind {args.host}:{args.port}: {e.strerror} (use --port 0 for any free port)")
    serve(server)
    return 0


def take_screenshot(runs, out: Path, width: int, max_chars: int, refresh_s: float) -> None:
    """Screenshot of the live page (the exact path users see), served on a free loopback port."""
    server = DashboardServer("127.0.0.1", 0, runs, refresh_s=refresh_s, max_chars=max_chars)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        screenshot(server.url, out, width=width)
    except BrowserMissing as e:
        sys.exit(f"error: {e}")
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
