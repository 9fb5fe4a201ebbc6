"""What the Present and audience pages draw, as plain data: the audience link, its QR code, and
the top classes as large bars (HTML, so nothing on a phone offers a download or a toolbar)."""

from __future__ import annotations

import html
import re
from urllib.parse import urlencode, urlsplit

from tlcore.caches import BoundedCache

PRESENT_PARAMETER = "present"


# QR codes of the audience links in use (a few hundred bytes each).
_QR_CODES = BoundedCache("audience-link QR codes", max_items=32)


def audience_url(base: str, token: str) -> str:
    """The link a phone opens: the server's address with ``?present=<token>`` and nothing else.

    Args:
        base: the address the audience reaches the server at (``http://host:port/``; any path
            or query in it is dropped: the audience page is served at the root).
        token: the room's token.

    Raises:
        ValueError: ``base`` is not an http(s) address.
    """
    parts = urlsplit(base.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"Expected an http(s) address such as http://192.168.1.20:8501. Received: {base!r}.")
    return f"{parts.scheme}://{parts.netloc}/?{urlencode({PRESENT_PARAMETER: token})}"


def qr_png(url: str, scale: int = 8) -> bytes:
    """The QR code of ``url`` as PNG bytes (segno: pure Python), dark on white, with its quiet zone.

    A PNG, not inline SVG: ``st.html`` sanitises markup and dropped the SVG (an empty box in the room).
    Kept per link: encoding took 35 of the Present page's 85 ms per run (cProfile, bench/audience.py).
    """
    return _QR_CODES.get_or_create((url, scale), lambda: _encode_qr(url, scale))


def _encode_qr(url: str, scale: int) -> bytes:
    import io

    import segno

    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="png", scale=scale, dark="#111111", light="#ffffff")
    return buffer.getvalue()


def bars_html(result: list[dict], font_px: int = 40) -> str:
    """The top classes as horizontal bars, labels large enough to read from the back of a room.

    Args:
        result: ``[{"label", "probability"}, …]``, most likely first (``predict_top_k``'s row).
        font_px: the label size in CSS pixels.
    """
    rows = []
    for index, entry in enumerate(result):
        share = max(0.0, min(1.0, float(entry["probability"])))
        colour = "#2b6cb0" if index == 0 else "#90a4be"
        rows.append(
            f'<div style="margin:0.25em 0;font-size:{font_px}px;line-height:1.2">'
            f'<div style="display:flex;justify-content:space-between;font-weight:{700 if index == 0 else 400}">'
            f"<span>{html.escape(str(entry['label']))}</span><span>{share:.0%}</span></div>"
            f'<div style="background:#e6ebf2;border-radius:6px;height:0.5em">'
            f'<div style="width:{share * 100:.1f}%;background:{colour};height:100%;border-radius:6px"></div></div></div>'
        )
    return '<div class="tl-bars">' + "".join(rows) + "</div>"


def tally_rows(tally: dict, labels: list[str]) -> list[dict]:
    """The room's tally as bar rows (every class of the run, most answered first), shares of all answers."""
    total = sum(tally.values())
    counts = {label: int(tally.get(label, 0)) for label in labels}
    order = sorted(counts, key=lambda label: -counts[label])
    return [
        {"label": f"{label} · {counts[label]}", "probability": counts[label] / total if total else 0.0}
        for label in order
    ]


PUBLIC_URL_VARIABLE = "TLCORE_PUBLIC_URL"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0")


def public_base(page_url: str | None) -> str:
    """The address phones reach this server at: ``$TLCORE_PUBLIC_URL`` when the operator set it
    (behind a proxy, or a presenter on ``localhost``), else the address the presenter's page was opened at."""
    import os

    return os.environ.get(PUBLIC_URL_VARIABLE) or page_url or "http://localhost:8501/"


def is_loopback(url: str) -> bool:
    """True when ``url`` names this machine only: a phone cannot open it."""
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


def requested_page(url: str | None) -> str:
    """The page part of the address a browser opened: ``http://host:8501/model`` → ``"model"``.

    The audience page answers at every page address (a phone given ``…/model?present=…`` must not
    get Streamlit's "Page not found"): the router serves it under this name too. ``""`` for the root,
    for no address, and for a segment that is not plain URL characters (no page can be named so).
    """
    segment = urlsplit(url or "").path.strip("/").rsplit("/", 1)[-1]
    return segment if re.fullmatch(r"[A-Za-z0-9_.~-]{1,100}", segment) else ""
