"""Headless Chromium helpers for the report's browser tests (stdlib only: no playwright, no PIL).

``probe(html)`` opens a copy of the page with two injected scripts: one (first in <head>) records every
uncaught error and ``console.error`` call; one (end of <body>) waits for the page, lists the figures drawn
wider than their box, clicks the first legend entry of the first 3D display the way a user would (mousedown
+ mouseup on the legend toggle), and writes the outcome as JSON into ``<pre id="__result">``, read back through ``--dump-dom``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",  # software WebGL for the 3D displays (deprecated automatic fallback)
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
)

HEAD_JS = """<script>window.__errs=[];
window.addEventListener('error',function(e){window.__errs.push('error: '+e.message);});
window.addEventListener('unhandledrejection',function(e){window.__errs.push('rejection: '+e.reason);});
(function(){var ce=console.error;console.error=function(){window.__errs.push('console.error: '+Array.prototype.join.call(arguments,' '));ce.apply(console,arguments);};})();
</script>"""

TAIL_JS = """<script>
window.addEventListener('load', function(){ setTimeout(function(){
  var out = {errs: window.__errs};
  function done(){ out.errs = window.__errs; var p=document.createElement('pre'); p.id='__result';
    p.textContent=JSON.stringify(out); document.body.appendChild(p); }
  try {
    out.n_plots = document.querySelectorAll('.js-plotly-plot').length;
    out.too_wide = Array.prototype.filter.call(document.querySelectorAll('.js-plotly-plot'), function(g){
      return g._fullLayout && g._fullLayout.width > g.offsetWidth + 1; }).map(function(g){
      return g.id + ' ' + g._fullLayout.width + '>' + g.offsetWidth; });
    var gds = Array.prototype.filter.call(document.querySelectorAll('.js-plotly-plot'), function(g){
      return g._fullLayout && g._fullLayout.scene && g.querySelector('g.legend g.traces'); });
    out.n3d = gds.length;
    if (!gds.length) { done(); return; }
    var gd = gds[0];
    out.gl = !!gd.querySelector('canvas');
    out.before = String(gd._fullData[0].visible);
    gd.on('plotly_legendclick', function(){ out.clicked = (out.clicked||0) + 1; });
    var item = gd.querySelector('g.legend g.traces');
    item.scrollIntoView({block:'center'});
    var r = item.getBoundingClientRect();
    var x = r.left + Math.min(10, r.width/2), y = r.top + r.height/2;
    var tgt = document.elementFromPoint(x, y) || item;
    out.target = tgt.getAttribute('class');
    var o = {bubbles:true, cancelable:true, clientX:x, clientY:y, button:0, buttons:1, view:window};
    tgt.dispatchEvent(new MouseEvent('mousedown', o));
    tgt.dispatchEvent(new MouseEvent('mouseup', o));
    setTimeout(function(){ out.after = String(gd._fullData[0].visible); done(); }, 1500);
  } catch (e) { out.exc = String(e); done(); }
 }, 500); });
</script>"""


def find_chromium() -> str | None:
    for name in CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


def _run(args, timeout: float):
    env = dict(os.environ, HOME=tempfile.gettempdir())
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def probe(html_path, workdir, timeout: float = 180.0) -> tuple[dict, str]:
    """Open the page with the probes injected; returns (result dict, chromium stderr)."""
    exe = find_chromium()
    workdir = Path(workdir)
    text = Path(html_path).read_text(encoding="utf-8")
    assert "<head>" in text and "</body>" in text
    text = text.replace("<head>", "<head>" + HEAD_JS, 1)
    text = text[: text.rindex("</body>")] + TAIL_JS + text[text.rindex("</body>"):]
    page = workdir / "probe.html"
    page.write_text(text, encoding="utf-8")
    proc = _run([exe, *FLAGS, f"--user-data-dir={workdir / 'profile-dom'}", "--window-size=1280,1000",
                 "--virtual-time-budget=20000", "--dump-dom", page.as_uri()], timeout)
    m = re.search(r'<pre id="__result">(.*?)</pre>', proc.stdout, re.S)
    if not m:
        return {"missing": True, "rc": proc.returncode}, proc.stderr
    import html as _html

    return json.loads(_html.unescape(m.group(1))), proc.stderr


def console_errors(stderr: str) -> list[str]:
    """Lines of chromium's log that report a JavaScript error of the page (uncaught exception, console.error).

    Chromium logs page console messages as ``INFO:CONSOLE... "message", source: ...``; WebGL driver
    performance notes ("GPU stall due to ReadPixels", the software-WebGL notice) are not page errors.
    """
    bad = []
    for line in stderr.splitlines():
        if "Uncaught" in line or (":CONSOLE" in line and re.search(r'"[A-Za-z]*Error\b', line)):
            bad.append(line.strip())
    return bad


def screenshot(html_path, png_path, workdir, size=(1280, 1800), timeout: float = 180.0, scale: float = 1.0) -> Path:
    exe = find_chromium()
    png_path = Path(png_path)
    _run([exe, *FLAGS, f"--user-data-dir={Path(workdir) / 'profile-shot'}", f"--window-size={size[0]},{size[1]}",
          f"--force-device-scale-factor={scale}", "--virtual-time-budget=20000", f"--screenshot={png_path}",
          Path(html_path).resolve().as_uri()], timeout)
    return png_path


def read_png(path):
    """Decode an 8-bit non-interlaced RGB/RGBA/grey PNG (what Chromium writes) → (width, height, rows of bytes, channels)."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and ctype in (0, 2, 6), (depth, ctype, interlace)
            ch = {0: 1, 2: 3, 6: 4}[ctype]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * ch
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b = prev[i]
            c = prev[i - ch] if i >= ch else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else (b if pb <= pc else c))) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, rows, ch


def image_stats(path, step: int = 4) -> dict:
    """Distinct colours and the fraction of non-background pixels on a sub-sampled grid."""
    w, h, rows, ch = read_png(path)
    colors, counts = set(), {}
    for y in range(0, h, step):
        row = rows[y]
        for x in range(0, w, step):
            px = row[x * ch : x * ch + min(ch, 3)]
            colors.add(px)
            counts[px] = counts.get(px, 0) + 1
    total = sum(counts.values())
    dominant = max(counts.values()) / total
    return {"width": w, "height": h, "distinct_colors": len(colors), "dominant_fraction": dominant}
