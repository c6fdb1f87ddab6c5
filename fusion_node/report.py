"""HTML report of a replay: how the streams were aligned and what the model made of them.

One page (index.html) with PNG plots (matplotlib, Agg): alignment timeline (arrivals per
modality and the samples each fused frame used), latency and age distributions, per-modality
weights over time, image-attention heatmaps for cross-attention models, and head outputs
against ground truth when the bag has it. Everything is drawn from a ReplayResult.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, same output everywhere
import matplotlib.pyplot as plt
import numpy as np

from fusion_node import MODALITIES
from fusion_node.replay_result import FrameTrace, ReplayResult

COLORS = {"image": "#1f77b4", "audio": "#ff7f0e", "joints": "#2ca02c", "text": "#9467bd"}
TIMELINE_WINDOW = 1.0  # s of the detailed alignment view
DPI = 100


def write_report(res: ReplayResult, out_dir: str | Path) -> Path:
    """Write index.html and its PNGs into out_dir; returns the page's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections: list[tuple[str, str, str]] = []  # (title, png name, caption)
    if not res.frames:
        raise ValueError(f"{res.bag}: no fused frames to report on (replay with trace=True keeps them)")
    t0 = res.frames[0].stamp
    sections.append(("Alignment timeline", _alignment(res, t0, out / "alignment.png"),
                     f"First {TIMELINE_WINDOW:g} s: sample capture stamps per modality (ticks), the samples each "
                     "fused frame used (lines from the frame), and when each frame left the sync buffer "
                     "(x). Below: messages received per 100 ms over the whole bag."))
    sections.append(("Latency and age", _latency(res, out / "latency.png"),
                     "On the arrival clock: reference stamp to fused frame (capture, transport and waiting for "
                     "the other modalities) and the wait after the last needed input; compute time per frame "
                     "(wall clock); per-modality age (reference stamp minus the sample time used)."))
    sections.append(("Where the time goes", _stages(res, t0, out / "stages.png"),
                     "Per frame, stacked: camera stamp to the arrival of the last input the frame needed "
                     "(capture, transport and waiting for the other inputs, on the bag's clock), the wait "
                     "from that arrival until the sync buffer released the frame (deadlines), then "
                     "preprocessing and inference on this machine. The title counts which input completed "
                     "the frames."))
    sections.append(("Modality weights", _weights(res, t0, out / "weights.png"),
                     "Per-modality contribution over time (gate weight / attention mass); shaded where a "
                     "modality was absent."))
    if any(f.attention is not None for f in res.frames) and res.snapshots:
        sections.append(("Image attention", _attention(res, out / "attention.png"),
                         "Cross-attention mass over the image grid, overlaid on the camera frame."))
    metrics: dict[str, float] = {}
    if res.truth:
        png, metrics = _truth(res, t0, out / "truth.png")
        sections.append(("Heads against ground truth", png,
                         "Predicted target position, direction and command against the bag's ground truth."))
    page = out / "index.html"
    page.write_text(_html(res, sections, metrics))
    return page


# -- plots ---------------------------------------------------------------------------------
def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path.name


def _alignment(res: ReplayResult, t0: float, path: Path) -> str:
    mods = [m for m in MODALITIES if m in res.arrivals]
    rows = {m: len(mods) - i for i, m in enumerate(mods)}
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(12, 7), gridspec_kw={"height_ratios": [3, 1.3]})
    lo, hi = t0 - 0.1, t0 + TIMELINE_WINDOW
    for m in mods:
        stamps = np.asarray(res.arrivals[m].stamps)
        sel = stamps[(stamps >= lo) & (stamps <= hi)] - t0
        ax.scatter(sel, np.full(sel.size, rows[m]), marker="|", s=120, color=COLORS[m], alpha=0.45, lw=1)
    frames = [f for f in res.frames if lo <= f.stamp <= hi]
    for f in frames:
        x = f.stamp - t0
        for m, used in f.used.items():
            if m not in rows or not used:
                continue
            u = np.asarray(used) - t0
            if m == "audio":  # a window: show its span rather than every chunk
                ax.plot([u.min(), u.max()], [rows[m] + 0.18] * 2, color=COLORS[m], lw=2, alpha=0.6)
            for ux in u if m != "audio" else (u.min(), u.max()):
                ax.plot([x, ux], [0, rows[m]], color=COLORS[m], lw=0.6, alpha=0.5)
        ax.scatter([x], [0], color="black", s=14, zorder=3)
        ax.scatter([f.emitted - t0], [-0.35], color="red", marker="x", s=14, zorder=3)
    ax.set_yticks([0, -0.35, *rows.values()], ["fused frame", "emitted", *rows.keys()])
    ax.set_xlim(lo - t0, hi - t0)
    ax.set_xlabel("time since first frame (s)")
    ax.set_title("Alignment: samples used by each fused frame")
    ax.grid(axis="x", alpha=0.3)
    # whole-bag receive rate per modality: gaps and bursts stand out
    times = {m: np.asarray(res.arrivals[m].times) for m in mods}
    end = max((float(t.max()) for t in times.values() if t.size), default=t0)
    start = min((float(t.min()) for t in times.values() if t.size), default=t0)
    bins = np.arange(start, end + 0.1, 0.1)
    for m in mods:
        arr = times[m]
        if arr.size and bins.size > 1:
            counts, _ = np.histogram(arr, bins)
            ax2.step(bins[:-1] - start, counts * 10.0, where="post", color=COLORS[m], label=m, lw=1)
    ax2.set_yscale("symlog")
    ax2.set_ylabel("msgs/s")
    ax2.set_xlabel("bag time (s)")
    ax2.legend(ncol=4, fontsize=8, loc="upper right")
    fig.tight_layout()
    return _save(fig, path)


def _latency(res: ReplayResult, path: Path) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    delay = np.array([f.emitted - f.stamp for f in res.frames]) * 1e3
    wait = np.array([f.latency for f in res.frames]) * 1e3
    comp = np.array([f.compute for f in res.frames]) * 1e3
    titles = (
        f"stamp to fused frame (arrival clock)\nwait after last input: p50 {np.percentile(wait, 50):.2f}, "
        f"p99 {np.percentile(wait, 99):.2f} ms",
        "compute per frame (wall clock)",
    )
    for ax, data, title in zip(axes[:2], (delay, comp), titles):
        ax.hist(data, bins=40, color="#555", alpha=0.8)
        for q, ls in ((50, "-"), (99, "--")):
            v = float(np.percentile(data, q))
            ax.axvline(v, color="red", ls=ls, lw=1, label=f"p{q} {v:.2f} ms")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ms")
        ax.legend(fontsize=8)
    ages, names = [], []
    for m in MODALITIES:
        a = np.array([f.age.get(m, np.nan) for f in res.frames if f.present.get(m)]) * 1e3
        a = a[np.isfinite(a)]
        if a.size:
            ages.append(a)
            names.append(f"{m}\np50 {round(float(np.median(a)), 1) + 0.0:.1f} ms")  # + 0.0: "0.0", not "-0.0"
    if ages:
        parts = axes[2].boxplot(ages, vert=False, patch_artist=True, showfliers=True)
        for patch, name in zip(parts["boxes"], names):
            patch.set_facecolor(COLORS[name.split("\n")[0]])
        axes[2].set_yticks(range(1, len(names) + 1), names, fontsize=8)
        axes[2].set_xscale("symlog", linthresh=1.0)
    axes[2].set_title("age of the sample used", fontsize=10)
    axes[2].set_xlabel("ms (linear below 1 ms)")
    fig.tight_layout()
    return _save(fig, path)


def _stages(res: ReplayResult, t0: float, path: Path) -> str:
    t = np.array([f.stamp for f in res.frames]) - t0
    parts = {
        "stamp -> last input": [max(0.0, f.arrival - f.stamp) for f in res.frames],
        "last input -> released": [max(0.0, f.emitted - f.arrival) for f in res.frames],
        "preprocess": [f.preprocess for f in res.frames],
        "inference": [f.inference for f in res.frames],
    }
    stacks = [np.asarray(v) * 1e3 for v in parts.values()]
    total = np.sum(stacks, axis=0)
    fig, ax = plt.subplots(figsize=(12, 3.6))
    ax.stackplot(t, *stacks, labels=list(parts), colors=("#9ecae1", "#fdae6b", "#a1d99b", "#756bb1"), alpha=0.9)
    # One slow frame (the first instruction's sentence encoding, a cold cache) would flatten the
    # rest: the axis stops at twice the 90th percentile and says what it cut.
    top = float(np.percentile(total, 90)) * 2.0 or 1.0
    over = total > top
    ax.set_ylim(0.0, top)
    counts: dict[str, int] = {}
    for f in res.frames:
        counts[f.last_input] = counts.get(f.last_input, 0) + 1
    title = "completed by: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
    if over.any():
        title += f"; {int(over.sum())} frame(s) above the axis (max {total.max():.0f} ms)"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("reference time (s)")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8, loc="upper right", ncol=4)
    fig.tight_layout()
    return _save(fig, path)


def _weights(res: ReplayResult, t0: float, path: Path) -> str:
    t = np.array([f.stamp for f in res.frames]) - t0
    w = np.array([[f.weight.get(m, 0.0) for m in MODALITIES] for f in res.frames], dtype=np.float64)
    w = np.nan_to_num(w)
    present = np.array([[f.present.get(m, False) for m in MODALITIES] for f in res.frames])
    fig, (ax, axp) = plt.subplots(2, 1, figsize=(12, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.stackplot(t, w.T, labels=MODALITIES, colors=[COLORS[m] for m in MODALITIES], alpha=0.85)
    ax.set_ylabel("weight")
    ax.set_ylim(0, max(1.0, float(w.sum(axis=1).max()) if w.size else 1.0))
    ax.legend(ncol=4, fontsize=8, loc="upper right")
    ax.set_title("Per-modality weight")
    for i, m in enumerate(MODALITIES):
        axp.fill_between(t, i, i + 0.8, where=~present[:, i], color=COLORS[m], alpha=0.6, step="mid", lw=0)
    axp.set_yticks(np.arange(len(MODALITIES)) + 0.4, [f"{m} absent" for m in MODALITIES], fontsize=8)
    axp.set_xlabel("time since first frame (s)")
    fig.tight_layout()
    return _save(fig, path)


def _attention_grid(att: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Attention over G cells as a grid with the model input's aspect ratio (H, W)."""
    g = att.size
    h, w = shape
    side_h = int(round(np.sqrt(g * h / w)))
    if side_h > 0 and g % side_h == 0:
        return att.reshape(side_h, g // side_h)
    return att.reshape(1, g)


def _attention(res: ReplayResult, path: Path) -> str:
    by_stamp = {f.stamp: f for f in res.frames}
    shots = [(s, img, by_stamp[s].attention) for s, img in res.snapshots
             if s in by_stamp and by_stamp[s].attention is not None]
    fig, axes = plt.subplots(1, len(shots), figsize=(3.2 * len(shots), 3.0), squeeze=False)
    t0 = res.frames[0].stamp
    for ax, (s, img, att) in zip(axes[0], shots):
        grid = _attention_grid(np.asarray(att, dtype=np.float64), res.image_size)
        ax.imshow(img)
        ax.imshow(grid, cmap="inferno", alpha=0.55, extent=(0, img.shape[1], img.shape[0], 0), interpolation="bilinear")
        ax.set_title(f"t = {s - t0:.2f} s", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def _match_truth(res: ReplayResult) -> list[tuple[FrameTrace, object]]:
    truth = {round(t.stamp, 6): t for t in res.truth}
    return [(f, truth[round(f.stamp, 6)]) for f in res.frames if round(f.stamp, 6) in truth]


def _truth(res: ReplayResult, t0: float, path: Path) -> tuple[str, dict[str, float]]:
    pairs = _match_truth(res)
    fig, axes = plt.subplots(3, 1, figsize=(12, 8), sharex=True)
    metrics: dict[str, float] = {"matched_frames": float(len(pairs))}
    if pairs:
        t = np.array([f.stamp for f, _ in pairs]) - t0
        if all("target_xy" in f.outputs for f, _ in pairs):
            pred = np.array([f.outputs["target_xy"][:2] for f, _ in pairs])
            true = np.array([g.target_xy[:2] for _, g in pairs])
            for i, (axis, ls) in enumerate((("x", "-"), ("y", "--"))):
                axes[0].plot(t, true[:, i], color="black", ls=ls, lw=1, label=f"truth {axis}")
                axes[0].plot(t, pred[:, i], color="#d62728", ls=ls, lw=1, label=f"predicted {axis}")
            metrics["target_xy_mae"] = float(np.abs(pred - true).mean())
            axes[0].set_ylabel("target (normalised)")
            axes[0].legend(ncol=4, fontsize=8)
        if all("direction" in f.outputs for f, _ in pairs):
            pd_ = np.array([f.outputs["direction"][:2] for f, _ in pairs])
            td = np.array([g.direction[:2] for _, g in pairs])
            ang_p, ang_t = np.arctan2(pd_[:, 1], pd_[:, 0]), np.arctan2(td[:, 1], td[:, 0])
            err = np.degrees(np.abs(np.angle(np.exp(1j * (ang_p - ang_t)))))
            axes[1].plot(t, np.degrees(ang_t), color="black", lw=1, label="truth")
            axes[1].plot(t, np.degrees(ang_p), color="#d62728", lw=1, label="predicted")
            metrics["direction_error_deg_median"] = float(np.median(err))
            axes[1].set_ylabel("direction (deg)")
            axes[1].legend(fontsize=8)
        if all("command" in f.outputs for f, _ in pairs):
            pc = np.array([int(np.argmax(f.outputs["command"])) for f, _ in pairs])
            tc = np.array([g.command for _, g in pairs])
            axes[2].step(t, tc, where="post", color="black", lw=1, label="truth")
            axes[2].step(t, pc, where="post", color="#d62728", lw=1, alpha=0.8, label="predicted")
            names = list(res.commands) or [str(i) for i in range(int(max(pc.max(), tc.max())) + 1)]
            axes[2].set_yticks(range(len(names)), names)
            metrics["command_accuracy"] = float((pc == tc).mean())
            axes[2].legend(fontsize=8)
    axes[2].set_xlabel("time since first frame (s)")
    axes[0].set_title("Head outputs against ground truth")
    fig.tight_layout()
    return _save(fig, path), metrics


# -- page ----------------------------------------------------------------------------------
def _html(res: ReplayResult, sections: list[tuple[str, str, str]], metrics: dict[str, float]) -> str:
    s = res.summary()
    rows = [
        ("bag", s["bag"]), ("model", s["model_id"]), ("backend", s["backend"]),
        ("topics", ", ".join(f"{m}: {t}" for m, t in s["topics"].items())),
        ("fused frames", s["frames"]), ("messages", s["messages"]),
        ("bag duration", f"{s['bag_duration_s']:.2f} s"),
        ("replay speed", f"{s['realtime_factor']:.1f}x real time ({s['loop_wall_s']:.2f} s)"),
        ("stamp to frame p50 / p99", f"{s['delay_ms']['p50']:.2f} / {s['delay_ms']['p99']:.2f} ms"),
        ("wait p50 / p99", f"{s['latency_ms']['p50']:.2f} / {s['latency_ms']['p99']:.2f} ms"),
        ("compute p50 / p99", f"{s['compute_ms']['p50']:.2f} / {s['compute_ms']['p99']:.2f} ms"),
        ("skipped bad messages", json.dumps(s["bad_messages"]) if s["bad_messages"] else "none"),
    ]
    if s["error"]:
        rows.append(("stopped early", s["error"]))
    rows += [(k.replace("_", " "), f"{v:.4g}") for k, v in metrics.items()]
    table = "\n".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    sync_rows = "\n".join(
        "<tr><th>{}</th>{}</tr>".format(
            html.escape(m), "".join(f"<td>{st.get(k, 0):g}</td>" for k in ("received", "late", "dropped", "duplicates"))
        )
        for m, st in s["sync"].items() if m in MODALITIES
    )
    figures = "\n".join(
        f'<section><h2>{html.escape(title)}</h2><img src="{png}" alt="{html.escape(title)}">'
        f"<p>{html.escape(caption)}</p></section>"
        for title, png, caption in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fusion replay: {html.escape(Path(s['bag']).name)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1250px; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
th, td {{ text-align: left; padding: 2px 12px 2px 0; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
section p {{ color: #555; font-size: 90%; }}
</style></head>
<body data-images-loaded="">
<h1>Replay report: {html.escape(Path(s['bag']).name)}</h1>
<table id="summary">{table}</table>
<h2>Sync buffer</h2>
<table id="sync"><tr><th>modality</th><th>received</th><th>late</th><th>dropped</th><th>duplicates</th></tr>
{sync_rows}</table>
{figures}
<script>
// A machine-readable render check: how many plots decoded (headless browser tests read it).
window.addEventListener("load", () => {{
  const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesLoaded = ok + "/" + document.images.length;
}});
</script>
</body></html>
"""
