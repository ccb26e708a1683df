#!/usr/bin/env python3
"""Draws bench/overload.sh's memory trace as an SVG line chart: the server's resident memory
(OUTDIR/rss.txt, "epoch MiB" per second) over time, with the load windows (OUTDIR/load.txt,
"start end" per round) shaded. Standard library only (matplotlib is not a requirement).

  python3 bench/plot_memory.py /tmp/vitserve-overload docs/images/overload_memory.svg [TITLE]
"""
import pathlib
import sys
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 36, 44


def nice_step(span, ticks=5):
    raw = span / ticks
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000):
        if step >= raw:
            return step
    return raw


def main():
    out_dir, svg_path = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    title = sys.argv[3] if len(sys.argv) > 3 else "vitserve resident memory under overload"
    samples = [tuple(map(float, line.split())) for line in
               (out_dir / "rss.txt").read_text().splitlines() if len(line.split()) == 2]
    if len(samples) < 2:
        sys.exit(f"{out_dir / 'rss.txt'}: fewer than two samples")
    windows = []
    load = out_dir / "load.txt"
    if load.exists():
        windows = [tuple(map(float, line.split())) for line in load.read_text().splitlines()
                   if len(line.split()) == 2]
    t0 = samples[0][0]
    t_max = samples[-1][0] - t0
    y_step = nice_step(max(m for _, m in samples))
    y_max = y_step * (int(max(m for _, m in samples) // y_step) + 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t):
        return LEFT + plot_w * (t - t0) / t_max

    def y(mib):
        return TOP + plot_h * (1 - mib / y_max)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">'
             f'{escape(title)}</text>']
    for start, end in windows:
        parts.append(f'<rect x="{x(start):.1f}" y="{TOP}" width="{x(end) - x(start):.1f}" '
                     f'height="{plot_h}" fill="#fde2c8"/>')
    mib = 0
    while mib <= y_max:
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(mib):.1f}" y2="{y(mib):.1f}" '
                     f'stroke="#ddd"/><text x="{LEFT - 6}" y="{y(mib) + 4:.1f}" '
                     f'text-anchor="end">{mib:g}</text>')
        mib += y_step
    t_step = nice_step(t_max, 8)
    t = 0
    while t <= t_max:
        parts.append(f'<line x1="{x(t0 + t):.1f}" x2="{x(t0 + t):.1f}" y1="{TOP + plot_h}" '
                     f'y2="{TOP + plot_h + 4}" stroke="black"/><text x="{x(t0 + t):.1f}" '
                     f'y="{TOP + plot_h + 18}" text-anchor="middle">{t:g}</text>')
        t += t_step
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
                 f'stroke="black"/>')
    points = " ".join(f"{x(ts):.1f},{y(m):.1f}" for ts, m in samples)
    parts.append(f'<polyline points="{points}" fill="none" stroke="#1f5fa8" stroke-width="2"/>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
                 f'seconds (shaded: open-loop load)</text>')
    parts.append(f'<text x="14" y="{TOP + plot_h / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {TOP + plot_h / 2})">resident memory, MiB</text>')
    parts.append("</svg>")
    svg_path.parent.mkdir(parents=True, exist_ok=True)
    svg_path.write_text("\n".join(parts) + "\n")
    print(f"{svg_path}: {len(samples)} samples over {t_max:.0f} s, "
          f"{min(m for _, m in samples):.0f}-{max(m for _, m in samples):.0f} MiB")


if __name__ == "__main__":
    main()
