#!/usr/bin/env python3
"""The side-by-side benchmark's report: JSON, a Markdown table and an SVG bar chart, built from
the load generator's JSON lines. Standard library only.

    report.py --write-meta FILE            (metadata from BENCH_META_* variables; bench/run)
    report.py --meta FILE --jsonl FILE --json OUT --markdown OUT --svg OUT [--docs DIR]
"""

import argparse
import datetime
import html
import json
import os
from pathlib import Path

BENCH = Path(__file__).resolve().parent

SERVERS = ["bare", "banter", "banter-deflate", "node", "django"]
LABELS = {
    "bare": "bare Rust fan-out (stores nothing: the ceiling)",
    "banter": "banter (SQLite)",
    "banter-deflate": "banter (SQLite), every client with permessage-deflate",
    "node": "Node.js ws + better-sqlite3",
    "django": "Django Channels + daphne (SQLite)",
}
COLORS = {"bare": "#9e9e9e", "banter": "#1f77b4", "banter-deflate": "#6baed6", "node": "#2ca02c", "django": "#d62728"}


# ---------------------------------------------------------------------------------------------
# Metadata


def read(path):
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def package_versions():
    versions = {}
    for line in read(BENCH / "peers/django/requirements.lock").splitlines():
        name, _, version = line.partition("==")
        if name.lower() in ("django", "channels", "daphne", "twisted"):
            versions[name] = version
    try:
        lock = json.loads(read(BENCH / "peers/node/package-lock.json"))
        for name in ("ws", "better-sqlite3"):
            versions[name] = lock["packages"][f"node_modules/{name}"]["version"]
    except (ValueError, KeyError):
        pass
    return versions


def write_meta(path):
    env = os.environ.get
    cpuinfo = read("/proc/cpuinfo")
    model = next(
        (l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")),
        "unknown",
    )
    mem_kib = next(
        (int(l.split()[1]) for l in read("/proc/meminfo").splitlines() if l.startswith("MemTotal:")),
        0,
    )
    parameters = {}
    for pair in env("BENCH_META_PARAMETERS", "").split():
        key, _, value = pair.partition("=")
        try:
            parameters[key] = float(value) if "." in value else int(value)
        except ValueError:
            parameters[key] = value
    meta = {
        "command": env("BENCH_META_COMMAND", ""),
        "started": env("BENCH_META_STARTED", ""),
        "finished": env("BENCH_META_FINISHED", ""),
        "quick": env("BENCH_META_QUICK", "0") == "1",
        "machine": {
            "nproc": os.cpu_count(),
            "model": model,
            "memory_gib": round(mem_kib / 1048576, 1),
            "kernel": os.uname().release,
        },
        "versions": {
            "banter": env("BENCH_META_BANTER", "unknown"),
            "rustc": env("BENCH_META_RUSTC", "").removeprefix("rustc ").split(" (")[0],
            "node": env("BENCH_META_NODE", "").removeprefix("v"),
            "python": env("BENCH_META_PYTHON", "").removeprefix("Python "),
            **package_versions(),
        },
        "parameters": parameters,
    }
    Path(path).write_text(json.dumps(meta, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Summary


def load(meta_path, jsonl_path):
    meta = json.loads(read(meta_path))
    lines = [json.loads(l) for l in read(jsonl_path).splitlines() if l.strip()]
    by_kind = {k: [l for l in lines if l.get("kind") == k] for k in ("run", "probe", "max", "idle")}
    summary = {}
    for server in SERVERS:
        entry = {}
        for m in by_kind["max"]:
            if m["server"] == server:
                key = m["shape"].replace("-", "_")
                entry[f"{key}_max_deliveries_per_s"] = m["max_deliveries_per_s"]
                entry[f"{key}_max_capped"] = m.get("capped", False)
                if not m["max_deliveries_per_s"] and m.get("lowest_failing_deliveries_per_s"):
                    # Not even the lowest rate tried passed: the figure is below that.
                    entry[f"{key}_max_below"] = m["lowest_failing_deliveries_per_s"]
                entry[f"{key}_shape"] = shape_text(m)
        for i in by_kind["idle"]:
            if i["server"] == server:
                entry["idle_kib_per_connection"] = i.get("kib_per_connection")
                entry["idle_connections_held"] = i.get("connections_held")
        if entry:
            summary[server] = entry
    return {
        **meta,
        "summary": summary,
        "runs": by_kind["run"],
        "max": by_kind["max"],
        "probes": by_kind["probe"],
        "idle": by_kind["idle"],
    }


def shape_text(line):
    rooms, clients, senders = line["rooms"], line["clients_per_room"], line["senders_per_room"]
    who = "all post" if senders >= clients else f"{senders} senders each"
    return f"{rooms} rooms × {clients}, {who}"


def num(value, digits=0):
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if digits == 0:
        return f"{round(value):,}"
    return f"{value:,.{digits}f}"


# ---------------------------------------------------------------------------------------------
# Markdown


def markdown(result, svg_name):
    meta, machine, versions = result, result["machine"], result["versions"]
    servers = [s for s in SERVERS if s in result["summary"]]
    out = []
    date = (meta.get("started") or "")[:10]
    out.append(f"# Side-by-side benchmark, {date}")
    out.append("")
    if meta.get("quick"):
        out.append(
            "**A `--quick` smoke run:** short probes, fewer rooms and connections, a coarse rate "
            "search. Its figures only show that everything works; do not quote them."
        )
        out.append("")
    out.append(f"Command: `{meta.get('command', '')}` (banter {versions.get('banter')}), "
               f"{meta.get('started', '')} – {meta.get('finished', '')}.")
    out.append("")
    out.append(
        f"Machine: {machine['nproc']} cores ({machine['model']}), {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}; the load generator runs on the same cores as the server. "
        + "Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "banter" and v)
        + "."
    )
    out.append("")
    fan = next((m for m in result["max"] if m["shape"] == "fanout"), None)
    wh = next((m for m in result["max"] if m["shape"] == "write-heavy"), None)
    idle = next((i for i in result["idle"] if i["server"] != "django"), None) or next(
        iter(result["idle"]), None
    )
    fan_h = f"fan-out max, deliveries/s ({shape_text(fan)})" if fan else "fan-out max, deliveries/s"
    wh_h = f"write-heavy max, deliveries/s ({shape_text(wh)})" if wh else "write-heavy max, deliveries/s"
    idle_h = (
        f"idle memory per connection, KiB ({num(idle['connections_target'])} held)"
        if idle
        else "idle memory per connection, KiB"
    )
    out.append(f"| server | {fan_h} | {wh_h} | {idle_h} |")
    out.append("|---|---:|---:|---:|")
    for s in servers:
        e = result["summary"][s]

        def best(key):
            v = e.get(f"{key}_max_deliveries_per_s")
            if v is None:
                return "–"
            if e.get(f"{key}_max_below"):
                return "< " + num(e[f"{key}_max_below"])
            return ("≥ " if e.get(f"{key}_max_capped") else "") + num(v)

        kib = e.get("idle_kib_per_connection")
        held = e.get("idle_connections_held")
        idle_cell = num(kib, 1) if kib is not None else "–"
        if idle and held is not None and held != idle["connections_target"]:
            idle_cell += f" ({num(held)} held)"
        out.append(f"| {LABELS[s]} | {best('fanout')} | {best('write_heavy')} | {idle_cell} |")
    out.append("")
    p = meta.get("parameters", {})
    out.append(
        "Max is the highest offered rate at which every post reached every connection of its "
        f"room (the sender's included) within the probe ({p.get('probe_seconds', '?')} s) plus "
        f"a {p.get('grace_seconds', '?')} s grace, with p99 latency ≤ {p.get('p99_limit_ms', 50)} ms: "
        "the rate doubles until a probe fails, then bisects. ≥ marks a search that passed at its "
        "cap; < one in which not even the lowest rate tried passed. Latency is post sent → frame "
        "received, so it includes storing the message. Every peer but the bare one commits each "
        "message to SQLite (WAL; synchronous="
        f"{p.get('sqlite_synchronous', 'FULL')} for Node and Django, FULL for banter) before "
        "sending it; banter batches commits, the others commit one message at a time. Idle "
        "memory is the server's RSS growth (VmRSS) divided by the connections held."
    )
    out.append("")
    if svg_name:
        out.append(f"![The three figures above as bars]({svg_name})")
        out.append("")

    if result["runs"]:
        out.append("## At a fixed load")
        out.append("")
        out.append(
            "| server | shape | posts/s | offered deliveries/s | delivered/s | p50 ms | p99 ms | "
            "max ms | lost | server CPU µs/delivery | server CPU, cores |"
        )
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in sorted(result["runs"], key=lambda r: (SERVERS.index(r["server"]), r["shape"])):
            out.append(
                f"| {r['server']} | {shape_text(r)} | {num(r['rate_posts_per_s'], 1 if r['rate_posts_per_s'] % 1 else 0)} "
                f"| {num(r['offered_deliveries_per_s'])} | {num(r['deliveries_per_s'])} "
                f"| {num(r['p50_ms'], 1)} | {num(r['p99_ms'], 1)} | {num(r['max_ms'], 1)} "
                f"| {num(r['lost'])} | {num(r['server_cpu_us_per_delivery'], 2)} "
                f"| {num(r['server_cpu_share'], 2)} |"
            )
        out.append("")
    if result["max"]:
        out.append("## Rate search")
        out.append("")
        out.append(
            "| server | shape | max posts/s | deliveries/s | p50 ms | p99 ms | server CPU µs/delivery "
            "| server CPU, cores | probes | lowest failing posts/s |"
        )
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for m in sorted(result["max"], key=lambda m: (SERVERS.index(m["server"]), m["shape"])):
            out.append(
                f"| {m['server']} | {shape_text(m)} | {num(m['max_rate_posts_per_s'])} "
                f"| {num(m['max_deliveries_per_s'])} | {num(m.get('p50_ms'), 1)} "
                f"| {num(m.get('p99_ms'), 1)} | {num(m.get('server_cpu_us_per_delivery'), 2)} "
                f"| {num(m.get('server_cpu_share'), 2)} | {m['probes']} "
                f"| {num(m.get('lowest_failing_rate')) if m.get('lowest_failing_rate') else '– (cap)'} |"
            )
        out.append("")
    if result["idle"]:
        out.append("## Idle connections")
        out.append("")
        out.append(
            "| server | held | of | ramp s | connects/s | RSS before MiB | RSS after MiB | KiB per connection |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for i in sorted(result["idle"], key=lambda i: SERVERS.index(i["server"])):
            mib = lambda k: num((i.get(k) or 0) / 1024, 1) if i.get(k) is not None else "–"  # noqa: E731
            out.append(
                f"| {i['server']} | {num(i['connections_held'])} | {num(i['connections_target'])} "
                f"| {num(i['ramp_seconds'], 1)} | {num(i['connects_per_s'])} "
                f"| {mib('server_rss_before_kib')} | {mib('server_rss_after_kib')} "
                f"| {num(i.get('kib_per_connection'), 1)} |"
            )
        out.append("")
    out.append(f"Raw data: every probe is in `bench/results/` (the JSON of this run).")
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# SVG


def short(value):
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def svg(result):
    servers = [s for s in SERVERS if s in result["summary"]]
    panels = [
        ("fan-out max", "deliveries/s", "fanout_max_deliveries_per_s", "fanout_max_capped"),
        ("write-heavy max", "deliveries/s", "write_heavy_max_deliveries_per_s", "write_heavy_max_capped"),
        ("idle memory per connection", "KiB (lower is better)", "idle_kib_per_connection", None),
    ]
    pw, ph, top, bottom, left = 300, 300, 70, 50, 20
    width, height = pw * len(panels) + 2 * left, ph + top + bottom + 20
    e = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    date = (result.get("started") or "")[:10]
    m = result["machine"]
    title = f"banter side-by-side benchmark, {date}" + (" (quick smoke run)" if result.get("quick") else "")
    parts.append(f'<text x="{left}" y="22" font-size="16" font-weight="bold">{e(title)}</text>')
    parts.append(
        f'<text x="{left}" y="40" fill="#555">{e(str(m["nproc"]))} cores ({e(m["model"])}), '
        f'{e(str(m["memory_gib"]))} GiB; max = highest rate with no loss and p99 ≤ 50 ms</text>'
    )
    for pi, (name, unit, key, capped_key) in enumerate(panels):
        x0 = left + pi * pw
        values = [result["summary"][s].get(key) for s in servers]
        peak = max([v for v in values if v is not None] or [1]) or 1
        plot_top, plot_h = top + 30, ph - 40
        parts.append(f'<text x="{x0 + pw / 2}" y="{top}" text-anchor="middle" font-weight="bold">{e(name)}</text>')
        parts.append(f'<text x="{x0 + pw / 2}" y="{top + 16}" text-anchor="middle" fill="#555">{e(unit)}</text>')
        base = plot_top + plot_h
        parts.append(f'<line x1="{x0 + 10}" y1="{base}" x2="{x0 + pw - 10}" y2="{base}" stroke="#333"/>')
        slot = (pw - 20) / max(len(servers), 1)
        bw = min(50, slot * 0.6)
        for si, (server, value) in enumerate(zip(servers, values)):
            cx = x0 + 10 + slot * (si + 0.5)
            if value is None:
                parts.append(f'<text x="{cx}" y="{base - 4}" text-anchor="middle" fill="#999">n/a</text>')
            else:
                h = max(1.0, plot_h * 0.85 * value / peak)
                parts.append(
                    f'<rect x="{cx - bw / 2:.1f}" y="{base - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                    f'fill="{COLORS[server]}"><title>{e(LABELS[server])}: {value}</title></rect>'
                )
                summary = result["summary"][server]
                capped = capped_key and summary.get(capped_key)
                below = capped_key and summary.get(capped_key.replace("capped", "below"))
                if below:
                    h, label = 1.0, "<" + short(below)
                else:
                    label = ("≥" if capped else "") + short(value)
                parts.append(f'<text x="{cx}" y="{base - h - 5:.1f}" text-anchor="middle">{e(label)}</text>')
            parts.append(f'<text x="{cx}" y="{base + 16}" text-anchor="middle">{e(server)}</text>')
    for si, server in enumerate(servers):
        lx = left + (si % 2) * (width - 2 * left) / 2
        ly = top + ph + 30 + (si // 2) * 18
        parts.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{COLORS[server]}"/>')
        parts.append(f'<text x="{lx + 16}" y="{ly}">{e(LABELS[server])}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-meta")
    parser.add_argument("--meta")
    parser.add_argument("--jsonl")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    parser.add_argument("--svg")
    parser.add_argument("--docs", help="also write DIR/results.md and DIR/results.svg")
    args = parser.parse_args()
    if args.write_meta:
        write_meta(args.write_meta)
        return
    result = load(args.meta, args.jsonl)
    result["generated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    picture = svg(result)
    if args.svg:
        Path(args.svg).write_text(picture)
    if args.markdown:
        Path(args.markdown).write_text(markdown(result, Path(args.svg).name if args.svg else None))
    if args.docs:
        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        (docs / "results.svg").write_text(picture)
        (docs / "results.md").write_text(markdown(result, "results.svg"))


if __name__ == "__main__":
    main()
