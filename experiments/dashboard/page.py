"""The dashboard page: one HTML document used both live and as the `--static` file.

Plotting library: plotly.js, taken from the `plotly` Python package (`package_data/plotly.min.js`).
Why plotly: its Python wheel ships the complete, versioned JS bundle, so the page needs no CDN
and `--static` can inline it (the file opens offline); it has the trace types the panels need
(lines with secondary axes, heatmaps, stacked bars, grid subplots) plus zoom, hover and legend
toggling that engineers expect when comparing runs. The cost is a ~4.8 MB script, which is
served once with caching (and gzip) live, and inlined once into a static file.

The bundle contains URL strings for map tiles and topojson (plotly's geo/map traces); we use no
such trace, and the Content-Security-Policy below makes the browser refuse any request the page
did not intend (`connect-src 'none'` in the static file), so nothing can quietly go online.

Run data reaches the page only as JSON in a `<script type="application/json">` block with `<`,
`>` and `&` escaped as \\uXXXX (so model text containing `</script>` cannot end the block), and
the page's script inserts it with `textContent`, never `innerHTML`. Scripts run only with the
per-page nonce, so even a missed escape could not execute injected script.
"""

from __future__ import annotations

import functools
import html
import importlib.resources
import json
import secrets
import string
from typing import Any

from rl.rewards.scores import CORRECT_THRESHOLD

PLOTLY_ROUTE = "plotly.min.js"

# The page's script, app.js beside this file (package data), with its threshold placeholder filled.
APP_JS = (importlib.resources.files(__package__) / "app.js").read_text(encoding="utf-8").replace(
    "__CORRECT_THRESHOLD__", repr(CORRECT_THRESHOLD)
)


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.min.js from the installed `plotly` package (never fetched from the network)."""
    try:
        res = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
        return res.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise RuntimeError(
            "the dashboard needs the `plotly` Python package for its bundled plotly.min.js "
            "(pip install 'plotly>=6,<8', or reinstall thinkrl)"
        ) from e


def json_for_script(obj: Any) -> str:
    """JSON safe to place inside <script type="application/json">: strict, with <, >, & escaped."""
    text = json.dumps(obj, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def csp(nonce: str, static: bool) -> str:
    """Content-Security-Policy: scripts only with our nonce; no network at all when static."""
    src = "'none'" if static else "'self'"
    script = f"'nonce-{nonce}'" if static else f"'self' 'nonce-{nonce}'"
    return (
        f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; "
        f"img-src data: blob:; connect-src {src}; base-uri 'none'; form-action 'none'"
    )


CSS = """
:root { --fg:#1d2330; --muted:#5b6478; --line:#d9dee8; --bg:#f6f7fa; --card:#fff; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color:var(--fg); background:var(--bg); }
header { padding:12px 20px; background:var(--card); border-bottom:1px solid var(--line);
         display:flex; flex-wrap:wrap; gap:8px 24px; align-items:baseline; }
header h1 { font-size:18px; margin:0; }
#status { color:var(--muted); }
#status.error { color:#b00020; }
.controls { display:flex; flex-wrap:wrap; gap:6px 14px; align-items:center; }
.controls label { color:var(--muted); }
main { padding:14px 20px 40px; display:grid; gap:14px;
       grid-template-columns:repeat(auto-fill, minmax(560px, 1fr)); }
.card { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:10px 12px;
        min-width:0; }
.card.wide { grid-column:1 / -1; }
.card h2 { font-size:15px; margin:0 0 6px; display:flex; gap:12px; align-items:baseline;
           flex-wrap:wrap; }
.card h2 .controls { font-size:13px; font-weight:normal; }
.plot { width:100%; min-height:320px; }
.empty { color:var(--muted); padding:40px 0; text-align:center; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:3px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; }
td.num { font-variant-numeric:tabular-nums; }
.swatch { display:inline-block; width:12px; height:12px; border-radius:2px; margin-right:6px;
          vertical-align:-1px; }
.warn { color:#a15c00; }
details pre, .rb-text { white-space:pre-wrap; word-break:break-word; background:#f3f4f8;
        padding:8px; border-radius:4px; margin:4px 0 10px; max-height:420px; overflow:auto;
        font:12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.rb-body { display:grid; grid-template-columns:minmax(340px, 2fr) 3fr; gap:14px; }
#rb-table tbody tr { cursor:pointer; }
#rb-table tbody tr:hover { background:#eef1f7; }
#rb-table tbody tr.selected { background:#dde6fb; }
.ok { color:#11733a; } .bad { color:#b00020; }
#rb-meta span { margin-right:16px; }
"""

PAGE = string.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>${title}</title>
<style>${css}</style>
${plotly}
</head>
<body>
<header>
  <h1>${title}</h1>
  <span id="status">loading…</span>
  <div class="controls">
    <label for="x-mode">x axis</label>
    <select id="x-mode"><option value="iteration">iteration</option>
      <option value="wall">wall clock (hours)</option></select>
  </div>
</header>
<main>
  <section class="card wide" id="runs-card"><h2>Runs</h2>
    <table id="runs"><thead><tr><th>run</th><th>iterations</th><th>last iteration</th>
      <th>eval pass@1 (start → last)</th><th>reward mean (last)</th><th>files</th></tr></thead>
      <tbody></tbody></table></section>
  <section class="card" data-panel="reward"><h2>Reward and pass rate</h2><div class="plot" id="panel-reward"></div></section>
  <section class="card" data-panel="difficulty"><h2>Pass rate by difficulty
    <span class="controls"><select id="diff-source">
      <option value="pass_rate_by_difficulty">train batch</option>
      <option value="eval_pass_at_1_by_difficulty">eval pass@1</option></select></span></h2>
    <div class="plot" id="panel-difficulty"></div></section>
  <section class="card" data-panel="length"><h2>Response length and length penalty</h2><div class="plot" id="panel-length"></div></section>
  <section class="card" data-panel="kl"><h2>KL to iteration reference and entropy</h2><div class="plot" id="panel-kl"></div></section>
  <section class="card" data-panel="loss"><h2>Loss and gradient norm</h2><div class="plot" id="panel-loss"></div></section>
  <section class="card" data-panel="sampler"><h2>Sampler mix (chosen prompts by difficulty, filtered)</h2><div class="plot" id="panel-sampler"></div></section>
  <section class="card" data-panel="throughput"><h2>Throughput</h2><div class="plot" id="panel-throughput"></div></section>
  <section class="card" data-panel="phases"><h2>Time per phase</h2><div class="plot" id="panel-phases"></div></section>
  <section class="card wide" id="rollouts"><h2>Rollout browser
    <span class="controls">
      <label for="rb-run">run</label><select id="rb-run"></select>
      <label for="rb-iter">iteration</label><select id="rb-iter"></select>
      <label for="rb-filter">show</label><select id="rb-filter"><option value="all">all</option>
        <option value="correct">correct</option><option value="incorrect">incorrect</option></select>
      <span id="rb-count"></span></span></h2>
    <div class="rb-body">
      <div><table id="rb-table"><thead><tr><th>#</th><th>prompt id</th><th>difficulty</th>
        <th>reward</th><th>score</th><th>length</th><th>verifier reason</th></tr></thead><tbody></tbody></table></div>
      <div id="rb-detail"><div id="rb-meta"></div>
        <h3>Prompt</h3><pre class="rb-text" id="rb-prompt"></pre>
        <h3>Response</h3><pre class="rb-text" id="rb-response"></pre></div>
    </div></section>
</main>
<script id="boot" type="application/json">${boot}</script>
<script nonce="${nonce}">${app}</script>
</body>
</html>
""")


def render_page(boot: dict, *, static: bool, title: str = "thinkrl · RL runs") -> tuple[str, str]:
    """(html, csp) for the page. `boot` is the initial state the script starts from."""
    nonce = secrets.token_urlsafe(16)
    if static:
        plotly = f'<script nonce="{nonce}">{plotly_js()}</script>'
    else:
        plotly = f'<script src="{PLOTLY_ROUTE}"></script>'
    policy = csp(nonce, static)
    # string.Template substitutes in one pass: a run name such as "${app}" stays literal text.
    return PAGE.substitute(
        csp=html.escape(policy),
        title=html.escape(title),
        css=CSS,
        plotly=plotly,
        boot=json_for_script(boot),
        nonce=nonce,
        app=APP_JS,
    ), policy
