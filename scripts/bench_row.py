"""One JSON line from an `aegis bench pipeline` report, for scripts/bench.sh and bench-ab.sh.

Usage: bench_row.py REPORT [COMMITTED SUB] [LABEL=VALUE...]
COMMITTED is the run's --events-out file and SUB mosquitto_sub's `-F '%U %p'` output: each MQTT
event is paired by id with the moment the bench saw it committed on the live feed, and
mosquitto_sub's receipt time gives the MQTT path's own delay.
"""
import json
import sys

args = sys.argv[1:]
labels = dict(a.split("=", 1) for a in args if "=" in a)
files = [a for a in args if "=" not in a]
r = json.load(open(files[0]))
out = dict(labels)
for key in ("events", "glass_to_event_ms", "pipeline_share_ms", "pipeline_share_after_decode_ms",
            "inference_ms", "mqtt_dropped"):
    out[key] = r[key]
if len(files) == 3:
    committed, sub = files[1:]
    at = {e["id"]: e["committed_unix_ms"] for e in map(json.loads, open(committed))}
    lat = sorted(float(t) * 1e3 - at[json.loads(p)["after"]["id"]]
                 for t, p in (line.split(" ", 1) for line in open(sub))
                 if json.loads(p)["after"]["id"] in at)
    q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2)
    out["commit_to_mqtt_subscriber_ms"] = {"messages": len(lat), "p50": q(0.5), "p95": q(0.95),
                                           "p99": q(0.99)}
print(json.dumps(out))
