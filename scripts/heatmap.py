"""The companion page's clicks as a heatmap PNG: heat blended over a screenshot of the page.

The screenshot comes from Debian's chromium driven by Playwright when it is installed (never a
browser Playwright downloads); otherwise the heat is drawn over a plain outline of the page. Clicks
are stored in page coordinates for the viewport width they happened at, and scaled to the width
the picture is taken at.
"""

from __future__ import annotations

import io
import math
import shutil
from collections import Counter
from collections.abc import Iterable

import structlog
from PIL import Image, ImageDraw

log = structlog.get_logger(__name__)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
# Heat is summed on a grid of CELL-pixel squares, then scaled up smoothly: fast in pure Python.
CELL = 4
RADIUS_CELLS = 6


def scale_clicks(clicks: Iterable[tuple[int, int, int]], width: int) -> list[tuple[float, float]]:
    """(x, y, viewport width) → positions in a picture `width` pixels wide."""
    out = []
    for x, y, vw in clicks:
        k = width / vw if vw > 0 else 1.0
        out.append((x * k, y * k))
    return out


def heat_layer(points: Iterable[tuple[float, float]], size: tuple[int, int]) -> Image.Image:
    """An 'L' image: 255 where clicks are densest, fading to 0 about RADIUS_CELLS*CELL pixels away."""
    w, h = size
    gw, gh = max(1, math.ceil(w / CELL)), max(1, math.ceil(h / CELL))
    cells = Counter((int(x // CELL), int(y // CELL)) for x, y in points if 0 <= x < w and 0 <= y < h)
    grid = [0.0] * (gw * gh)
    r = RADIUS_CELLS
    sigma2 = 2 * (r / 2.5) ** 2
    kernel = [(dx, dy, math.exp(-(dx * dx + dy * dy) / sigma2))
              for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dx * dx + dy * dy <= r * r]
    for (cx, cy), n in cells.items():
        for dx, dy, k in kernel:
            gx, gy = cx + dx, cy + dy
            if 0 <= gx < gw and 0 <= gy < gh:
                grid[gy * gw + gx] += n * k
    top = max(grid) if grid else 0.0
    data = bytes(min(255, round(255 * v / top)) for v in grid) if top > 0 else bytes(gw * gh)
    return Image.frombytes("L", (gw, gh), data).resize((gw * CELL, gh * CELL), Image.BILINEAR).crop((0, 0, w, h))


def _ramp(v: int) -> tuple[int, int, int, int]:
    """Blue (cold) → green → yellow → red (hot); transparent where there is no heat."""
    t = v / 255
    stops = [(0.0, (0, 0, 255)), (0.35, (0, 255, 0)), (0.7, (255, 255, 0)), (1.0, (255, 0, 0))]
    for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            rgb = tuple(round(a + (b - a) * f) for a, b in zip(c0, c1))
            break
    alpha = min(200, round(400 * t))  # fades in, so the heat has no hard rim
    return (*rgb, alpha)  # type: ignore[return-value]


_LUT = [_ramp(v) for v in range(256)]


def blend(base: Image.Image, heat: Image.Image) -> Image.Image:
    bands = [heat.point([_LUT[v][i] for v in range(256)]) for i in range(4)]
    overlay = Image.merge("RGBA", bands)
    return Image.alpha_composite(base.convert("RGBA"), overlay).convert("RGB")


def outline(page: str, size: tuple[int, int]) -> Image.Image:
    """The page's frame without a browser: white, a border, the path at the top."""
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, size[0] - 1, size[1] - 1), outline=(160, 160, 160), width=2)
    draw.text((10, 8), f"{page} (outline: no browser)", fill=(110, 110, 110))
    return img


async def screenshot(url: str, width: int, height: int) -> Image.Image | None:
    """A full-page screenshot by Debian's chromium, or None when it (or Playwright) is not there."""
    executable = shutil.which("chromium")
    if executable is None:
        return None
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        return None
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            # Taking the picture must not count as a visit.
            await page.route("**/api/track", lambda route: route.fulfill(status=204))
            # after the page's own requests (who is logged in, the balance) have drawn what they draw:
            # "load" alone let a slow machine photograph it half-drawn
            await page.goto(url, wait_until="networkidle")
            png = await page.screenshot(full_page=True, animations="disabled")
        finally:
            await browser.close()
    return Image.open(io.BytesIO(png)).convert("RGB")


async def render(page: str, clicks: list[tuple[int, int, int]], out: str, *, url: str | None, width: int = 390,
                 height: int = 844) -> str:
    """Write the heatmap PNG to `out`; returns "screenshot" or "outline" (what the heat lies on)."""
    points = scale_clicks(clicks, width)
    base = None
    if url is not None:
        try:
            base = await screenshot(url, width, height)
        except Exception as e:  # noqa: BLE001 - a broken browser still leaves the outline
            log.warning("heatmap.screenshot_failed", error=str(e)[:200])
    kind = "screenshot" if base is not None else "outline"
    if base is None:
        tallest = max((y for _, y in points), default=0)
        base = outline(page, (width, max(height, math.ceil(tallest) + 40)))
    blend(base, heat_layer(points, base.size)).save(out, "PNG")
    return kind
