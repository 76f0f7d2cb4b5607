#!/usr/bin/env python3
"""Draws benches/results.svg from harness results.json files: for each scenario, each target's throughput
relative to the no-auth nginx hop (same-round medians) and its CPU per request. Plain SVG, no dependencies.

usage: chart.py SAME_TOKEN_RESULTS.json UNIQUE_TOKENS_RESULTS.json OUT.svg
"""
import json
import sys
from html import escape

COLORS = {"R-runway": "#2f6fdf", "A-haproxy": "#d9822b", "B-apache-oidc": "#8e44ad", "C-nginx-noauth": "#7f8c8d",
          "D-direct": "#27ae60"}


def load(path):
    with open(path) as f:
        data = json.load(f)
    return data["scenario"], [t for t in data["targets"] if t.get("rps_median") is not None]


def panel(x0, y0, width, height, title, rows, key, unit, fmt):
    out = [f'<text x="{x0}" y="{y0 - 8}" font-size="13" font-weight="bold">{escape(title)}</text>']
    values = [r[key] for r in rows if r.get(key) is not None]
    top = max(values + [1e-9]) * 1.15
    bar_h = min(28, (height - 10) / max(len(rows), 1) - 6)
    for i, r in enumerate(rows):
        v = r.get(key)
        y = y0 + i * (bar_h + 6)
        name = r["name"]
        w = 0 if v is None else (width - 150) * v / top
        out.append(f'<text x="{x0}" y="{y + bar_h * 0.7}" font-size="11">{escape(name)}</text>')
        out.append(f'<rect x="{x0 + 110}" y="{y}" width="{w:.1f}" height="{bar_h:.1f}" fill="{COLORS.get(name, "#555")}"/>')
        label = "n/a" if v is None else fmt.format(v) + unit
        out.append(f'<text x="{x0 + 114 + w:.1f}" y="{y + bar_h * 0.7}" font-size="11">{escape(label)}</text>')
    return out


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    scenarios = [load(sys.argv[1]), load(sys.argv[2])]
    width, col = 980, 480
    body = ['<text x="20" y="24" font-size="16" font-weight="bold">Runway vs peers on loopback '
            '(median over rounds; same-round ratios)</text>']
    y = 60
    for scenario, rows in scenarios:
        body.append(f'<text x="20" y="{y}" font-size="13" fill="#333">scenario: {escape(scenario)}</text>')
        h = 40 + 34 * len(rows)
        body += panel(20, y + 28, col, h, "throughput ÷ nginx no-auth hop (higher is better)", rows,
                      "rps_ratio_ref", "x", "{:.2f}")
        body += panel(20 + col, y + 28, col, h, "CPU per request (lower is better)", rows,
                      "proxy_cpu_us_per_req", " µs", "{:.0f}")
        y += h + 50
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" font-family="sans-serif">',
           f'<rect width="{width}" height="{y}" fill="white"/>'] + body + ["</svg>"]
    with open(sys.argv[3], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
