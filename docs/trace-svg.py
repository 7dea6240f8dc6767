#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Draw a sluice trace (Chrome trace-event JSON) as an SVG timeline.

Usage: python3 docs/trace-svg.py TRACE.json [OUT.svg] [--title TEXT]
                                 [--width PX] [--from MS] [--to MS]

One row per thread (its thread_name), a bar per span: busy, blocked on a
full output (backpressure), waiting on an empty input (starved); under the
threads, one small area chart per ring level ("C" events); a time axis in
milliseconds and a legend. Written to OUT.svg, or to standard output.
Standard library only.
"""

import argparse
import json
import sys
from xml.sax.saxutils import escape

COLOURS = {
    "busy": "#2e7d32",
    "blocked full": "#c62828",
    "blocked empty": "#f9a825",
}
LABELS = {
    "busy": "busy (running its op)",
    "blocked full": "blocked on a full output",
    "blocked empty": "waiting on an empty input",
}
ROW = 22
GAP = 6
LEFT = 150
RIGHT = 20
TOP = 46
COUNTER_ROW = 34


def nice_step(span_ms, ticks=8):
    raw = span_ms / ticks if span_ms > 0 else 1
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1
    while mag > raw:
        mag /= 10
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--title", default=None)
    ap.add_argument("--width", type=int, default=960)
    ap.add_argument("--from", dest="t_from", type=float, default=None,
                    help="start of the window, in ms")
    ap.add_argument("--to", dest="t_to", type=float, default=None,
                    help="end of the window, in ms")
    a = ap.parse_args()

    with open(a.trace) as f:
        doc = json.load(f)
    events = doc["traceEvents"] if isinstance(doc, dict) else doc

    names, order = {}, {}
    spans, counters, peaks = [], {}, {}
    for e in events:
        ph = e.get("ph")
        if ph == "M" and e.get("name") == "thread_name":
            names[e["tid"]] = e["args"]["name"]
        elif ph == "M" and e.get("name") == "thread_sort_index":
            order[e["tid"]] = e["args"]["sort_index"]
        elif ph == "X":
            spans.append(e)
        elif ph == "C":
            # "level" is sampled; "peak" is the ring's own high-water mark
            # so far, the peak of the stats table.
            args = e.get("args", {})
            if "level" in args:
                counters.setdefault(e["name"], []).append(
                    (e["ts"], args["level"]))
            if "peak" in args:
                peaks[e["name"]] = max(peaks.get(e["name"], 0), args["peak"])

    tids = sorted(set(names) | {e["tid"] for e in spans},
                  key=lambda t: (order.get(t, t), t))
    times = [e["ts"] for e in spans] + [e["ts"] + e["dur"] for e in spans]
    times += [t for pts in counters.values() for t, _ in pts]
    if not times:
        sys.exit("trace-svg: no spans or counters in %s" % a.trace)
    t0 = min(times) / 1000.0 if a.t_from is None else a.t_from
    t1 = max(times) / 1000.0 if a.t_to is None else a.t_to
    if t1 <= t0:
        t1 = t0 + 1
    width = a.width
    plot = width - LEFT - RIGHT

    def x(ms):
        ms = min(max(ms, t0), t1)
        return LEFT + (ms - t0) / (t1 - t0) * plot

    rows_h = len(tids) * (ROW + GAP)
    ctr_names = list(counters)  # in the order the trace first names them
    height = TOP + rows_h + len(ctr_names) * (COUNTER_ROW + GAP) + 70

    out = []
    w = out.append
    w('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
      'viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">'
      % (width, height, width, height))
    w('<rect width="100%" height="100%" fill="white"/>')
    title = a.title or "sluice trace: %s" % a.trace.split("/")[-1]
    w('<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>'
      % (LEFT, escape(title)))

    # Rows of spans.
    row_of = {t: i for i, t in enumerate(tids)}
    for t in tids:
        y = TOP + row_of[t] * (ROW + GAP)
        w('<rect x="%d" y="%d" width="%d" height="%d" fill="#eeeeee"/>'
          % (LEFT, y, plot, ROW))
        w('<text x="%d" y="%d" text-anchor="end">%s</text>'
          % (LEFT - 8, y + ROW - 7, escape(names.get(t, "tid %s" % t))))
    for e in spans:
        s_ms, e_ms = e["ts"] / 1000.0, (e["ts"] + e["dur"]) / 1000.0
        if e_ms < t0 or s_ms > t1:
            continue
        y = TOP + row_of[e["tid"]] * (ROW + GAP)
        x0, x1 = x(s_ms), x(e_ms)
        w('<rect x="%.2f" y="%d" width="%.2f" height="%d" fill="%s"/>'
          % (x0, y, max(x1 - x0, 0.4), ROW,
             COLOURS.get(e["name"], "#777777")))

    # Ring levels.
    base = TOP + rows_h
    for i, name in enumerate(ctr_names):
        y = base + i * (COUNTER_ROW + GAP)
        pts = sorted(counters[name])
        top = max(v for _, v in pts) or 1
        w('<rect x="%d" y="%d" width="%d" height="%d" fill="#f5f5f5"/>'
          % (LEFT, y, plot, COUNTER_ROW))
        w('<text x="%d" y="%d" text-anchor="end">%s</text>'
          % (LEFT - 8, y + COUNTER_ROW / 2 + 4, escape("ring " + name)))
        path = ["M%.2f,%d" % (x(t0), y + COUNTER_ROW)]
        last = 0
        for ts, v in pts:
            ms = ts / 1000.0
            if ms > t1:
                break
            yy = y + COUNTER_ROW - v / top * (COUNTER_ROW - 4)
            if ms >= t0:
                path.append("H%.2f" % x(ms))
            path.append("V%.2f" % yy)
            last = yy
        path.append("H%.2f V%d Z" % (x(t1), y + COUNTER_ROW))
        del last
        w('<path d="%s" fill="#90caf9" stroke="#1565c0" stroke-width="0.8"/>'
          % " ".join(path))
        if name in peaks:  # the exact peak, as in the stats table
            label = "peak %s (highest sample %s)" % (peaks[name], top)
        else:
            label = "highest sample %s" % top
        w('<text x="%d" y="%d" font-size="10" fill="#555" '
          'text-anchor="end">%s</text>' % (LEFT + plot - 4, y + 11, label))

    # Time axis.
    axis_y = base + len(ctr_names) * (COUNTER_ROW + GAP) + 4
    w('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>'
      % (LEFT, axis_y, LEFT + plot, axis_y))
    step = nice_step(t1 - t0)
    tick = (int(t0 / step) + (1 if t0 % step else 0)) * step
    while tick <= t1 + 1e-9:
        xx = x(tick)
        w('<line x1="%.2f" y1="%d" x2="%.2f" y2="%d" stroke="#333"/>'
          % (xx, axis_y, xx, axis_y + 4))
        w('<text x="%.2f" y="%d" text-anchor="middle">%g</text>'
          % (xx, axis_y + 16, round(tick, 6)))
        tick += step
    w('<text x="%d" y="%d" text-anchor="end">ms</text>'
      % (LEFT - 8, axis_y + 16))

    # Legend.
    ly = axis_y + 36
    lx = LEFT
    for key in ("busy", "blocked full", "blocked empty"):
        w('<rect x="%d" y="%d" width="14" height="14" fill="%s"/>'
          % (lx, ly - 11, COLOURS[key]))
        w('<text x="%d" y="%d">%s</text>' % (lx + 20, ly, LABELS[key]))
        lx += 30 + 7 * len(LABELS[key])
    w('<rect x="%d" y="%d" width="14" height="14" fill="#90caf9" '
      'stroke="#1565c0"/>' % (lx, ly - 11))
    w('<text x="%d" y="%d">ring level</text>' % (lx + 20, ly))
    w("</svg>")

    svg = "\n".join(out) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(svg)
    else:
        sys.stdout.write(svg)


if __name__ == "__main__":
    main()
