"""Tracker evaluation: AegisVision's tracker against a peer ByteTrack from PyPI, on generated
sequences with known ground truth, scored by TrackEval (HOTA, MOTA, IDF1) in the same run.

Run through scripts/bench-tracker.sh, which installs the pinned tools. Everything is seeded: the
same command gives the same sequences, so quality numbers repeat exactly; speed numbers vary
with the machine.

Sequences (1920x1080, 30 fps, people-shaped boxes):
  crossing   two groups walking through each other
  occlusion  a pillar hides whoever walks behind it (no detections there)
  clutter    15% of detections missed, 3 false positives per frame, noisy boxes
  turning    objects that change direction and speed
  low_score  stretches where an object's score drops to 0.15-0.45 (ByteTrack's second stage)
Throughput: 10, 50 and 200 objects per frame, 600 frames each, the same detections for both.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

W, H, FPS = 1920, 1080, 30


class Walker:
    """An object moving in straight segments, turning now and then."""

    def __init__(self, rng, oid, x, y, vx, vy, turn_every=0):
        self.id, self.x, self.y, self.vx, self.vy = oid, x, y, vx, vy
        self.w = rng.uniform(40, 80)
        self.h = self.w * rng.uniform(2.0, 2.6)
        self.turn_every = turn_every

    def step(self, rng, frame):
        if self.turn_every and frame % self.turn_every == 0:
            angle = rng.uniform(-1.2, 1.2)
            c, s = np.cos(angle), np.sin(angle)
            speed = rng.uniform(0.6, 1.4)
            self.vx, self.vy = speed * (c * self.vx - s * self.vy), speed * (s * self.vx + c * self.vy)
        self.x += self.vx
        self.y += self.vy

    def box(self):
        return (self.x - self.w / 2, self.y - self.h, self.w, self.h)

    def visible(self):
        x, y, w, h = self.box()
        return x >= 0 and y >= 0 and x + w <= W and y + h <= H


def generate(name, seed, frames=300):
    """Returns (gt rows, det rows) as lists of tuples in MOTChallenge order."""
    rng = np.random.default_rng(seed)
    walkers, gt, det = [], [], []
    miss, fps_per_frame, noise, turn, pillar, low = 0.0, 0, 0.03, 0, None, False
    if name == "crossing":
        for i in range(8):
            left = i % 2 == 0
            walkers.append(Walker(rng, i + 1, 100 + 60 * i if left else W - 100 - 60 * i,
                                  700 + rng.uniform(-40, 40), 5.0 if left else -5.0, rng.uniform(-0.3, 0.3)))
    elif name == "occlusion":
        pillar = (900, 1020)
        for i in range(10):
            walkers.append(Walker(rng, i + 1, rng.uniform(100, 600), rng.uniform(350, 1000),
                                  rng.uniform(3, 6), rng.uniform(-0.5, 0.5)))
    elif name == "clutter":
        miss, fps_per_frame, noise = 0.15, 3, 0.05
        for i in range(15):
            walkers.append(Walker(rng, i + 1, rng.uniform(200, 1700), rng.uniform(300, 1000),
                                  rng.uniform(-3, 3), rng.uniform(-1, 1)))
    elif name == "turning":
        turn = 20
        for i in range(12):
            walkers.append(Walker(rng, i + 1, rng.uniform(400, 1500), rng.uniform(400, 900),
                                  rng.uniform(-4, 4), rng.uniform(-2, 2), turn_every=turn + i))
    elif name == "low_score":
        low = True
        for i in range(10):
            walkers.append(Walker(rng, i + 1, rng.uniform(200, 1700), rng.uniform(300, 1000),
                                  rng.uniform(-3, 3), rng.uniform(-1, 1)))
    else:
        raise ValueError(name)
    for f in range(1, frames + 1):
        for o in walkers:
            o.step(rng, f)
            if not o.visible():
                continue
            x, y, w, h = o.box()
            gt.append((f, o.id, x, y, w, h))
            if pillar and pillar[0] < o.x < pillar[1]:
                continue
            if rng.random() < miss:
                continue
            score = float(np.clip(rng.normal(0.8, 0.1), 0.5, 1.0))
            if low and (f // 25 + o.id) % 4 == 0:
                score = float(rng.uniform(0.15, 0.45))
            j = lambda v: v * noise * rng.normal()
            det.append((f, x + j(w), y + j(h), w + j(w), h + j(h), score))
        for _ in range(fps_per_frame):
            w = rng.uniform(40, 80)
            det.append((f, rng.uniform(0, W - w), rng.uniform(0, H - 2.3 * w), w, 2.3 * w, float(rng.uniform(0.1, 0.6))))
    return gt, det


def crowd(n, seed, frames=600):
    """n objects bouncing around the frame for the throughput runs."""
    rng = np.random.default_rng(seed)
    state = np.column_stack([rng.uniform(50, W - 150, n), rng.uniform(50, H - 250, n),
                             rng.uniform(-4, 4, n), rng.uniform(-4, 4, n), rng.uniform(30, 60, n)])
    det = []
    for f in range(1, frames + 1):
        state[:, 0] += state[:, 2]
        state[:, 1] += state[:, 3]
        for axis, limit in ((0, W - 150), (1, H - 250)):
            out = (state[:, axis] < 0) | (state[:, axis] > limit)
            state[out, axis + 2] *= -1
        for x, y, _, _, w in state:
            det.append((f, x + rng.normal(0, 1), y + rng.normal(0, 1), w, 2.3 * w,
                        float(np.clip(rng.normal(0.8, 0.1), 0.3, 1.0))))
    return det


def write_gt(path, rows):
    with open(path, "w") as f:
        for fr, oid, x, y, w, h in rows:
            f.write(f"{fr},{oid},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,1,1\n")


def write_det(path, rows):
    with open(path, "w") as f:
        for fr, x, y, w, h, s in rows:
            f.write(f"{fr},-1,{x:.2f},{y:.2f},{w:.2f},{h:.2f},{s:.4f},-1,-1,-1\n")


def run_aegis(aegis, det, out):
    """AegisVision's tracker through the CLI; returns its own frames/s (tracking only)."""
    r = subprocess.run([aegis, "track", "--mot-det", det, "--out", out],
                       check=True, capture_output=True, text=True)
    m = re.search(r"\(([\d.]+) frames/s\)", r.stderr)
    return float(m.group(1))


def run_peer(det, out):
    """The peer: Roboflow `trackers` ByteTrack with its defaults (30-frame buffer at 30 fps).
    Parsing is not timed; building its input per frame and reading its output are, as ours."""
    import supervision as sv
    from trackers import ByteTrackTracker

    rows = np.loadtxt(det, delimiter=",", ndmin=2)
    last = int(rows[:, 0].max())
    frames = [rows[rows[:, 0] == f] for f in range(1, last + 1)]
    tracker = ByteTrackTracker(lost_track_buffer=30, frame_rate=FPS)
    lines = []
    started = time.perf_counter()
    for f, r in enumerate(frames, start=1):
        xyxy = np.column_stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]]).astype(np.float32)
        d = sv.Detections(xyxy=xyxy, confidence=r[:, 6].astype(np.float32),
                          class_id=np.zeros(len(r), dtype=int))
        t = tracker.update(d)
        for (x1, y1, x2, y2), tid in zip(t.xyxy, t.tracker_id):
            if tid >= 0:
                lines.append((f, int(tid), x1, y1, x2 - x1, y2 - y1))
    elapsed = time.perf_counter() - started
    with open(out, "w") as fh:
        for f, tid, x, y, w, h in lines:
            fh.write(f"{f},{tid},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,-1,-1,-1\n")
    return last / elapsed


def evaluate(root, seqs, trackers):
    import trackeval

    eval_config = trackeval.Evaluator.get_default_eval_config()
    eval_config.update(USE_PARALLEL=False, PRINT_RESULTS=False, PRINT_CONFIG=False,
                       TIME_PROGRESS=False, OUTPUT_SUMMARY=False, OUTPUT_DETAILED=False,
                       PLOT_CURVES=False, DISPLAY_LESS_PROGRESS=True)
    ds_config = trackeval.datasets.MotChallenge2DBox.get_default_dataset_config()
    ds_config.update(GT_FOLDER=f"{root}/gt", TRACKERS_FOLDER=f"{root}/trackers", SKIP_SPLIT_FOL=True,
                     TRACKERS_TO_EVAL=trackers, SEQ_INFO=seqs, DO_PREPROC=False,
                     BENCHMARK="AEGIS", PRINT_CONFIG=False)
    # TrackEval prints its configuration on stdout; keep stdout for the report.
    with contextlib.redirect_stdout(sys.stderr):
        evaluator = trackeval.Evaluator(eval_config)
        metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(), trackeval.metrics.Identity()]
        res, _ = evaluator.evaluate([trackeval.datasets.MotChallenge2DBox(ds_config)], metrics)
    out = {}
    for t in trackers:
        per = {}
        for seq in list(seqs) + ["COMBINED_SEQ"]:
            m = res["MotChallenge2DBox"][t][seq]["pedestrian"]
            per[seq] = {"HOTA": round(100 * float(np.mean(m["HOTA"]["HOTA"])), 1),
                        "MOTA": round(100 * float(m["CLEAR"]["MOTA"]), 1),
                        "IDF1": round(100 * float(m["Identity"]["IDF1"]), 1),
                        "IDSW": int(m["CLEAR"]["IDSW"])}
        out[t] = per
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aegis", required=True, help="path to the aegis binary")
    ap.add_argument("--work", required=True, help="scratch directory (replaced)")
    args = ap.parse_args()
    root = args.work
    shutil.rmtree(root, ignore_errors=True)
    seqs = {}
    os.makedirs(f"{root}/det")
    for t in ("aegis", "peer"):
        os.makedirs(f"{root}/trackers/{t}/data")
    for i, name in enumerate(["crossing", "occlusion", "clutter", "turning", "low_score"]):
        gt, det = generate(name, seed=1000 + i)
        seqs[name] = 300
        os.makedirs(f"{root}/gt/{name}/gt")
        write_gt(f"{root}/gt/{name}/gt/gt.txt", gt)
        write_det(f"{root}/det/{name}.txt", det)
        run_aegis(args.aegis, f"{root}/det/{name}.txt", f"{root}/trackers/aegis/data/{name}.txt")
        run_peer(f"{root}/det/{name}.txt", f"{root}/trackers/peer/data/{name}.txt")
    quality = evaluate(root, seqs, ["aegis", "peer"])

    speed = {}
    for n in (10, 50, 200):
        det = f"{root}/det/crowd{n}.txt"
        write_det(det, crowd(n, seed=n))
        ours = run_aegis(args.aegis, det, f"{root}/crowd{n}.aegis.txt")
        peer = run_peer(det, f"{root}/crowd{n}.peer.txt")
        speed[n] = {"aegis_fps": round(ours), "peer_fps": round(peer, 1), "ratio": round(ours / peer, 1)}
    print(json.dumps({"quality": quality, "throughput": speed}, indent=2))


if __name__ == "__main__":
    main()
