#!/usr/bin/env python3
"""Turns the JSON reports of one compare.sh run into a Markdown table, with Courier's ratios to each other server.

Usage: summarize.py DIR   (DIR holds TARGET-WORKLOAD.json files written by `media-tests load --out`)
"""
import json
import pathlib
import sys

d = pathlib.Path(sys.argv[1])
runs = {}
for f in sorted(d.glob("*.json")):
    target, workload = f.stem.split("-", 1)
    runs.setdefault(workload, {})[target] = json.loads(f.read_text())


def fmt(v, digits=0):
    return "-" if v is None else f"{v:,.{digits}f}"


print("| workload | server | out pkts/s | server CPU % | fwd pkts per CPU-s | RSS/sub MiB | loss % | delivered min / median % | delay p50 / p99 ms | ramp s | gen CPU % |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for workload, by in runs.items():
    for target, r in sorted(by.items(), key=lambda kv: kv[0] != "courier"):
        print(
            f"| {workload} | {target} | {fmt(r['packets_out_per_s'])} | {fmt(r['server_cpu_percent'], 1)} | "
            f"{fmt(r['forwarded_per_cpu_second'])} | {fmt(r['rss_per_subscriber_mib'], 3)} | {fmt(r['loss_percent'], 3)} | "
            f"{fmt(r.get('delivered_min_percent'), 2)} / {fmt(r.get('delivered_median_percent'), 2)} | "
            f"{fmt(r['delay_p50_ms'], 3)} / {fmt(r['delay_p99_ms'], 3)} | {fmt(r['ramp_seconds'], 1)} | "
            f"{fmt(r['generator_cpu_percent'], 1)} |"
        )
print()
print("Courier relative to the others (forwarded packets per CPU-second; RSS per subscriber):")
print()
for workload, by in runs.items():
    c = by.get("courier")
    if not c:
        continue
    for target, r in by.items():
        if target == "courier" or not r["forwarded_per_cpu_second"]:
            continue
        ratio = c["forwarded_per_cpu_second"] / r["forwarded_per_cpu_second"]
        mem = (c["rss_per_subscriber_mib"] / r["rss_per_subscriber_mib"]) if r["rss_per_subscriber_mib"] else None
        print(f"- {workload}: {ratio:.2f}× {target}'s packets per CPU-second; memory per subscriber "
              f"{'-' if mem is None else f'{mem:.2f}×'} {target}'s")
