"""Open the report in a real browser (headless Chromium, offline) and take screenshots: not a unit test.

    python tools/browser_check.py [REPORTS] [--out DIR] [--pages index.html,summary.html,pages/X.html]

For each page it (1) loads the DOM after scripts ran (`--dump-dom`, virtual time so that MathJax finishes) and
checks that the math was typeset by the local MathJax (no raw `$...$` left in the text, no MathJax error), (2)
collects what the browser logged about resources it could not load, and (3) writes two screenshots: the first
screen (1280 x 900) and the whole page (up to --tall pixels). The network is cut (every host resolves to
nothing), so a page that needs a CDN shows it. Exit status 1 when a check fails; look at the PNGs yourself.

Chromium comes from the system's packages: `apt-get update && apt-get install -y chromium` (or `--install`).
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--hide-scrollbars", "--force-device-scale-factor=1",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",  # offline: no host, no proxy
         "--allow-file-access-from-files"]
RAW_MATH = re.compile(r"(?<![\\$])\$(?!\s)[^$<>\n]{1,200}(?<!\s)\$(?!\$)|\$\$[^$]+\$\$")


def find_browser(install: bool) -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if install:
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True)
        return find_browser(False)
    sys.exit("no Chromium found: apt-get update && apt-get install -y chromium (or pass --install)")


def chromium(browser: str, url: str, extra: list[str], budget_ms: int, timeout: float = 120):
    """Run one headless Chromium with a fresh profile; returns (stdout, stderr, seconds)."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
               "--enable-logging=stderr", "--v=0", *extra, url]
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return r.stdout, r.stderr, time.time() - t0


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style|svg)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", " ", dom))


def check_page(browser: str, page: Path, out: Path, tall: int, budget_ms: int) -> list[str]:
    url = page.resolve().as_uri()
    problems = []
    dom, log, secs = chromium(browser, url, ["--dump-dom"], budget_ms)
    typeset = len(re.findall(r'class="(?:MathJax|MathJax_SVG|MathJax_CHTML)"[^>]*id="MathJax-Element-\d+-Frame"', dom))
    text = visible_text(dom)
    raw = RAW_MATH.findall(text)
    errors = re.findall(r"Math Processing Error|class=\"(?:MathJax_Error|merror)\"", text + dom)
    failed = sorted({m.strip() for m in re.findall(r"(?:Failed to load resource|net::ERR_[A-Z_]+)[^\n]*", log)})
    uses_mathjax = "MathJax.js" in dom
    print(f"{page.name}: DOM {len(dom) // 1024} KiB after scripts in {secs:.1f} s; {typeset} formulas typeset by "
          f"{'the local MathJax' if uses_mathjax else 'no MathJax'}; {len(raw)} raw $...$ left; "
          f"{len(errors)} MathJax errors; {len(failed)} resources not loaded")
    if raw:
        problems.append(f"{page.name}: raw math left in the text: {raw[:3]}")
    if errors:
        problems.append(f"{page.name}: MathJax errors: {errors[:3]}")
    if failed:
        problems.append(f"{page.name}: not loaded: {failed[:3]}")
    if re.search(r'<script[^>]+src="https?://', dom):
        problems.append(f"{page.name}: loads a script from the network")
    # one tall shot (headless Chromium lays the page out in a viewport a little shorter than the window, so a
    # first-screen shot is cut from it rather than taken with a 900-pixel window), trimmed to the content
    tall_png, first_png = out / f"{page.stem}_full.png", out / f"{page.stem}.png"
    _, _, secs = chromium(browser, url, [f"--screenshot={tall_png}", f"--window-size=1280,{tall}"], budget_ms)
    if not tall_png.exists():
        return problems + [f"{page.name}: no screenshot"]
    from PIL import Image, ImageOps

    img = Image.open(tall_png).convert("RGB")
    box = ImageOps.invert(img).getbbox()  # the non-white part
    bottom = min(img.height, (box[3] if box else img.height) + 40)
    if box and box[3] >= img.height - 200:
        print(f"  the page may be longer than {tall} px: raise --tall")
    img.crop((0, 0, img.width, bottom)).save(tall_png)
    img.crop((0, 0, img.width, min(900, bottom))).save(first_png)
    print(f"  screenshots ({secs:.1f} s): {first_png} (first screen, 1280 x {min(900, bottom)}), "
          f"{tall_png} (whole page, 1280 x {bottom})")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="?", default=str(ROOT / "reports"), help="the report folder (default reports/)")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "studylib-browser-check"),
                    help="where the screenshots go")
    ap.add_argument("--pages", default="index.html,summary.html", help="pages to open, relative to REPORTS")
    ap.add_argument("--tall", type=int, default=7000, help="height of the tall screenshot in pixels")
    ap.add_argument("--budget-ms", type=int, default=15000, help="virtual time for scripts (MathJax) to finish")
    ap.add_argument("--install", action="store_true", help="apt-get install chromium when it is missing")
    args = ap.parse_args(argv)
    browser = find_browser(args.install)
    version = subprocess.run([browser, "--version"], capture_output=True, text=True).stdout.strip()
    reports, out = Path(args.reports), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{version}; offline; screenshots in {out}")
    problems = []
    for rel in [p for p in args.pages.split(",") if p]:
        page = reports / rel
        if not page.exists():
            problems.append(f"{rel}: missing")
            continue
        problems += check_page(browser, page, out, args.tall, args.budget_ms)
    print("\n".join(["problems:", *problems]) if problems else "all checks passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
