"""ROS messages the node publishes: FusedOutput -> fusion_msgs/FusedState, health -> DiagnosticArray.

`health()` is pure and ROS-free (snapshots in, statuses out) so its OK/WARN/ERROR rules are
unit-tested directly; the `*_msg` builders only copy fields into message objects.
"""
from __future__ import annotations

import array
import math
from dataclasses import dataclass, field
from typing import Any

from fusion_node import MODALITIES
from fusion_node.frames import FusedOutput
from fusion_node.fused_state import fused_state_fields

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels
# s of audio chunk beyond the slack that the audio status names as a wait (benchmarks/e2e.md:
# 10 ms chunks already keep the node over the latency bound, 5 ms ones within it)
CHUNK_HINT_S = 0.008


def time_msg(t: float):
    from builtin_interfaces.msg import Time

    sec = math.floor(t)
    nanosec = min(int(round((t - sec) * 1e9)), 999_999_999)
    return Time(sec=int(sec), nanosec=nanosec)


def fused_state_msg(out: FusedOutput, frame_id: str = "", stamp: tuple[int, int] | None = None):
    """The FusedState for one pipeline result (fields: fusion_node.fused_state); arrays go in as
    array.array, rclpy's fast path. `stamp` (sec, nanosec) is the camera header's exact stamp when
    known (fusion_node.stamps)."""
    from builtin_interfaces.msg import Time

    from fusion_msgs.msg import FusedState

    fields = fused_state_fields(out)
    msg = FusedState()
    msg.header.stamp = time_msg(out.stamp) if stamp is None else Time(sec=stamp[0], nanosec=stamp[1])
    msg.header.frame_id = frame_id
    msg.model_id = fields["model_id"]
    msg.backend = fields["backend"]
    msg.modalities = fields["modalities"]
    msg.present = fields["present"].tolist()
    msg.output_names = fields["output_names"]
    for name, code in (("state", "f"), ("age", "f"), ("weight", "f"), ("outputs", "f"), ("output_sizes", "I")):
        setattr(msg, name, array.array(code, fields[name].tobytes()))
    msg.latency = float(out.latency)
    return msg


@dataclass
class Status:
    level: int
    name: str
    message: str
    values: dict[str, str] = field(default_factory=dict)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _delta(now: dict, before: dict | None, key: str) -> int:
    return int(now.get(key, 0)) - int((before or {}).get(key, 0))


def health(
    snapshot: dict,
    previous: dict | None,
    sync_stats: dict[str, dict[str, float]],
    *,
    node: str,
    topics: dict[str, str],
    reference: str,
    stale_after: float,
    max_latency: float,
    backend: str,
    model_id: str,
    max_loss: float = 0.02,
    mismatch: dict[str, str] | None = None,
    audio_slack: float = 0.0,
) -> list[Status]:
    """Statuses for one diagnostics period: one per input, one for inference.

    `mismatch` (SyncBuffer.mismatch()): inputs that arrive but that the model cannot use (a
    robot's joint names the model does not know) are ERROR, with the reason, while it lasts.

    `previous` is the snapshot of the last period, so counts that grew since then (malformed,
    skipped, errors) degrade the level for one period instead of forever.

    Audio chunks longer than CHUNK_HINT_S beyond `audio_slack` (the sync window's) are named in
    the audio status: every frame waits up to one chunk for its audio, a latency the driver's
    chunk setting controls.
    """
    statuses = []
    for m in MODALITIES:
        s = snapshot["inputs"][m]
        if s.get("unused"):
            statuses.append(Status(OK, f"{node}: input {m}", "not used by the model (its contract leaves it out)",
                                   {"topic": ""}))
            continue
        prev = (previous or {}).get("inputs", {}).get(m)
        sync = sync_stats.get(m, {})
        values = {"topic": topics.get(m, ""), "rate_hz": _fmt(s["rate_hz"]), "age_s": _fmt(s["age"]),
                  "received": _fmt(s["received"]), "malformed": _fmt(s["malformed"]),
                  "rejected_by_sync": _fmt(s["rejected"]), "lost_in_transport": _fmt(s["lost"])}
        values.update({f"dropped_{reason}": _fmt(n) for reason, n in sorted(s.get("refused", {}).items())})
        values.update({f"sync_{k}": _fmt(v) for k, v in sorted(sync.items())})
        if s["last_error"]:
            values["last_error"] = s["last_error"]
        sporadic = m == "text"
        if s["received"] == 0 and s["last_error"]:
            # nothing received and already an error: the node could not subscribe (monitor.unavailable)
            level, msg = ERROR, f"not subscribed: {s['last_error']}"
        elif s["received"] == 0 and s.get("missing"):
            # activation found no publisher of its type: the model runs without it (missing_input: run)
            level, msg = ERROR, f"missing: {s['missing']}"
        elif s["received"] == 0:
            level = OK if sporadic else ERROR if m == reference else WARN
            msg = "no instruction yet" if sporadic else "no messages received"
        elif s["age"] > stale_after and not sporadic:
            level = ERROR if m == reference else WARN
            msg = f"stale: last message {s['age']:.1f} s ago"
        else:
            level, msg = OK, f"{s['rate_hz']:.1f} Hz"
        missing = s.get("gap_missing", 0.0) - (prev or {}).get("gap_missing", 0.0)
        expected = s.get("gap_expected", 0.0) - (prev or {}).get("gap_expected", 0.0)
        loss = missing / expected if expected > 0 else 0.0
        chunk = s.get("chunk_s", 0.0) if m == "audio" else 0.0
        if chunk > 0.0:
            values["chunk_ms"] = _fmt(1e3 * chunk)
            if level == OK and chunk - audio_slack > CHUNK_HINT_S:
                msg += (f"; {1e3 * chunk:.0f} ms chunks: frames wait up to that for their audio (a driver chunk "
                        "of about 5 ms removes the wait: docs/node.md)")
        values["transport_loss_pct"] = _fmt(100.0 * loss)  # this period, from the stamps
        values["transport_missing_total"] = _fmt(float(round(s.get("gap_missing", 0.0))))
        if loss > max_loss:
            level = max(level, WARN)
            msg += (f"; {100.0 * loss:.0f}% lost in transport this period (stamp gaps): see docs/node.md, "
                    "'Fast DDS and large images'")
        bad, late, lost = (_delta(s, prev, k) for k in ("malformed", "rejected", "lost"))
        # samples naming none of the model's joints (another publisher's) are ignored, not rejected:
        # the sync buffer's mismatch() says when that leaves the model without joints
        ignored = max(0, _delta(s, prev, "unmatched"))
        late = max(0, late - ignored)
        if ignored:
            msg += f"; {ignored} ignored (joint names the model does not use)"
        if bad or late or lost:
            level = max(level, WARN)
            msg += f"; this period: {bad} refused at the door, {late} rejected (late/duplicate), {lost} lost in transport"
        if (mismatch or {}).get(m):
            level = ERROR
            msg = f"unusable by the model: {mismatch[m]}; " + msg
            values["mismatch"] = mismatch[m]
        statuses.append(Status(level, f"{node}: input {m}", msg, values))

    inf, lat = snapshot["inference"], snapshot["latency"]
    values = {"backend": backend, "model_id": model_id, "published": _fmt(snapshot["published"]),
              "skipped_latest_wins": _fmt(snapshot["skipped"]), "errors": _fmt(snapshot["errors"]),
              "resets": _fmt(snapshot["resets"]), "sync_resets": _fmt(snapshot.get("sync_resets", 0)),
              "nonfinite_outputs": _fmt(snapshot.get("nonfinite", 0)),
              "inputs_cleaned": _fmt(snapshot.get("cleaned", 0)),
              "sync_errors": _fmt(snapshot.get("sync_errors", 0)),
              "worker_restarts": _fmt(snapshot.get("worker_restarts", 0)),
              "inference_p50_ms": _fmt(inf["p50"] * 1e3), "inference_p99_ms": _fmt(inf["p99"] * 1e3),
              "latency_p50_ms": _fmt(lat["p50"] * 1e3), "latency_p99_ms": _fmt(lat["p99"] * 1e3),
              "latency_max_ms": _fmt(lat["max"] * 1e3)}
    for name, s in snapshot.get("stages", {}).items():  # where the time goes (docs/node.md)
        if s["n"]:
            values[f"stage_{name}_p50_ms"] = _fmt(s["p50"] * 1e3)
            values[f"stage_{name}_p99_ms"] = _fmt(s["p99"] * 1e3)
    for what, n in sorted(snapshot.get("waited_for", {}).items()):
        values[f"waited_for_{what}"] = _fmt(n)
    if snapshot["last_error"]:
        values["last_error"] = snapshot["last_error"]
    level, parts = OK, [f"{snapshot['published']} published"]
    errors = _delta(snapshot, previous, "errors")
    skipped = _delta(snapshot, previous, "skipped")
    if errors:
        level = ERROR
        parts.append(f"{errors} inference errors this period")
    for key, level_if, text in (("nonfinite", ERROR, "non-finite results withheld"),
                                ("worker_restarts", ERROR, "inference worker restarts"),
                                ("sync_errors", ERROR, "sync buffer failures (reset)"),
                                ("sync_resets", WARN, "sync resets (clock jumps)"),
                                ("cleaned", WARN, "inputs with non-finite values marked absent")):
        n = _delta(snapshot, previous, key)
        if n:
            level = max(level, level_if)
            parts.append(f"{n} {text} this period")
    if skipped:
        level = max(level, WARN)
        parts.append(f"{skipped} frames skipped (inference slower than input)")
    if lat["n"] and lat["p99"] > max_latency:
        level = max(level, WARN)
        parts.append(f"latency p99 {lat['p99'] * 1e3:.1f} ms > {max_latency * 1e3:.0f} ms")
    statuses.append(Status(level, f"{node}: inference", "; ".join(parts), values))
    return statuses


def diagnostic_array_msg(statuses: list[Status], stamp: float, hardware_id: str):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    arr = DiagnosticArray()
    arr.header.stamp = time_msg(stamp)
    for s in statuses:
        st = DiagnosticStatus(level=bytes([s.level]), name=s.name, message=s.message, hardware_id=hardware_id)
        st.values = [KeyValue(key=k, value=v) for k, v in s.values.items()]
        arr.status.append(st)
    return arr
