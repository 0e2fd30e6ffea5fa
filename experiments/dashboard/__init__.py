"""Reward-curve dashboard for thinkrl runs (issue 8).

    python -m experiments.dashboard RUN_DIR [RUN_DIR ...]        # live page on 127.0.0.1:6070
    thinkrl-dashboard RUN_DIR --static out.html                   # one self-contained offline file
    thinkrl-dashboard RUN_DIR --screenshot docs/dashboard.png     # PNG via headless Chromium

Modules: `data` reads run directories incrementally (tolerating a run that is still writing),
`server` serves the page and its JSON API (stdlib only), `page` / `app.js` are the page itself,
`browser` drives headless Chromium for screenshots and tests, `cli` is the command line.
TensorBoard / W&B logging is the trainer's job; this reads the same run directory beside them.
"""

from experiments.dashboard.cli import main

__all__ = ["main"]
