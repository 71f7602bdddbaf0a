"""The status page: plain HTML that refreshes itself, no JavaScript. What an on-call engineer
needs in one look: which replicas and slots are broken, which responders are ready, how long
new serials take to become authoritative, what is wrong now, and whether the CRLs are fresh."""

from __future__ import annotations

import datetime as dt
import html
import statistics
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}
.ok{color:#176f2c}.broken,.critical{color:#fff;background:#b3261e}.warning{background:#f5c542}
.muted{color:#777}
"""


def _cell(value: Any) -> str:
    return f"<td>{html.escape('-' if value is None else str(value))}</td>"


def _when(unix: float | None) -> str:
    if unix is None:
        return "-"
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(state: dict[str, Any], refresh: int = 5) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{refresh}'>",
        f"<title>certstatus status</title><style>{STYLE}</style></head><body>",
        "<h1>certstatus status</h1>",
        f"<p class='muted'>generated {_when(state['now'])}; refreshes every {refresh}s</p>",
    ]
    active = state["findings"]
    verdict = (
        "<p class='critical' id='overall'>CRITICAL</p>"
        if any(f["severity"] == "critical" for f in active)
        else "<p class='warning' id='overall'>WARNING</p>"
        if active
        else "<p class='ok' id='overall'>all checks pass</p>"
    )
    parts.append(verdict)
    primary = state.get("primary")
    if primary is not None:
        parts.append(f"<p id='primary'>primary: {html.escape(_primary(primary))}</p>")
    for issuer in state.get("issuers_not_watched", []):
        parts.append(
            f"<p class='warning' data-issuer='{html.escape(issuer['name'])}'>issuer "
            f"{html.escape(issuer['name'])} not watched: {html.escape(issuer['problem'])}</p>"
        )
    parts.append("<h2>Replicas</h2>")
    if state["replicas"]:
        parts.append(
            "<table id='replicas'><tr><th>replica</th><th>site</th><th>state</th>"
            "<th>staleness</th><th>slot wal_status</th><th>safe_wal_size</th>"
            "<th>bytes behind</th></tr>"
        )
        for r in state["replicas"]:
            broken = r["broken"]
            staleness = _staleness(r)
            parts.append(
                f"<tr class='{'broken' if broken else 'ok'}' data-replica='{html.escape(r['name'])}'>"
                + _cell(r["name"])
                + _cell(r["site"])
                + _cell("starting" if r.get("starting") else "BROKEN" if broken else "ok")
                + _cell(staleness)
                + _cell(r["wal_status"])
                + _cell(r["safe_wal_size"])
                + _cell(r["bytes_behind"])
                + "</tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p class='muted'>one database, no replicas</p>")
    parts.append("<h2>Targets</h2><table id='targets'><tr><th>target</th><th>kind</th>")
    parts.append("<th>ready</th><th>time to authoritative (recent serials)</th></tr>")
    for t in state["targets"]:
        samples = state["time_to_authoritative"].get(t["name"], [])
        parts.append(
            f"<tr class='{'ok' if t['ready'] is not False else 'broken'}'>"
            + _cell(t["name"])
            + _cell(t["kind"])
            + _cell({True: "ready", False: "NOT READY", None: "-"}[t["ready"]])
            + _cell(_distribution(samples))
            + "</tr>"
        )
    parts.append("</table>")
    parts.append("<h2>Findings</h2>")
    if active:
        parts.append("<table id='findings'><tr><th>severity</th><th>kind</th><th>subject</th>")
        parts.append("<th>since</th><th>summary</th></tr>")
        for f in active:
            parts.append(
                f"<tr class='{f['severity']}'>"
                + _cell(f["severity"])
                + _cell(f["kind"])
                + _cell(f["subject"])
                + _cell(_when(f["since"]))
                + _cell(f["summary"])
                + "</tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p class='ok'>none active</p>")
    if state["cleared"]:
        parts.append("<h2>Recently cleared</h2><table><tr><th>kind</th><th>subject</th>")
        parts.append("<th>from</th><th>to</th></tr>")
        for f in state["cleared"][:20]:
            parts.append(
                "<tr class='muted'>"
                + _cell(f["kind"])
                + _cell(f["subject"])
                + _cell(_when(f["since"]))
                + _cell(_when(f["cleared"]))
                + "</tr>"
            )
        parts.append("</table>")
    parts.append("<h2>CRLs</h2>")
    if state["crls"]:
        parts.append("<table id='crls'><tr><th>URL</th><th>number</th><th>thisUpdate</th>")
        parts.append("<th>nextUpdate</th><th>state</th></tr>")
        for c in state["crls"]:
            parts.append(
                f"<tr class='{'ok' if c['ok'] else 'broken'}'>"
                + _cell(c["url"])
                + _cell(c["number"])
                + _cell(_when(c["this_update"]))
                + _cell(_when(c["next_update"]))
                + _cell("ok" if c["ok"] else "; ".join(c["problems"]))
                + "</tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p class='muted'>no CRLs checked yet</p>")
    parts.append("</body></html>")
    return "".join(parts)


def _staleness(replica: dict[str, Any]) -> str:
    """An age, or what stands instead of one: never an age counted from 1970."""
    if replica["staleness_s"] is not None:
        return f"{replica['staleness_s']:.1f}s"
    return {"none": "no heartbeat"}.get(replica.get("heartbeat", ""), "unreachable")


def _primary(primary: dict[str, Any]) -> str:
    if primary["state"] == "ok" and primary["heartbeat_age_s"] is not None:
        return f"heartbeat {primary['heartbeat_age_s']:.1f}s old"
    return {"no heartbeat": "no heartbeat", "unreachable": "unreachable"}.get(
        primary["state"], "not probed yet"
    )


def _distribution(samples: list[float]) -> str:
    if not samples:
        return "no recent serials"
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"n={len(ordered)} p50={statistics.median(ordered):.2f}s "
        f"p99={p99:.2f}s max={ordered[-1]:.2f}s"
    )
