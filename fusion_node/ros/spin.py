"""Running the fusion node as a process: the executor, stop signals, the spin loop and the exit.

`ros2 run fusion_node fusion_node` (main) and `fusion node` (commands/node.py) both end up in spin().
The node class itself (fusion_node.ros.node) knows nothing of processes or signals beyond the
`loading` flag a stop signal reads.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from fusion_node.ros.node import FusionNode

EXECUTORS = ("auto", "events", "single")


def make_executor(kind: str = "auto"):
    """rclpy's EventsExecutor where it exists (Kilted+: several times less overhead per message,
    which matters for 500 Hz joint states), else the SingleThreadedExecutor."""
    if kind in ("auto", "events"):
        try:
            from rclpy.experimental import EventsExecutor

            return EventsExecutor()
        except ImportError:
            if kind == "events":
                raise RuntimeError("this rclpy has no EventsExecutor (Kilted or newer)") from None
    return SingleThreadedExecutor()


class StopSignals:
    """SIGINT and SIGTERM end the node quietly, in any lifecycle state.

    rclpy's own handlers shut the context down at once (the worker may then publish on a dead
    context) and chain to Python's KeyboardInterrupt, which can land inside a subscription
    callback and be logged as FATAL. Here a signal only sets `stop`, which the spin loop reads
    every 0.1 s, so the node releases its publishers and threads before the context goes. During
    a model load (configure) nothing is running yet, so the signal abandons the load instead of
    waiting seconds for it. rclpy.init must be called with SignalHandlerOptions.NO.
    """

    def __init__(self, node: FusionNode) -> None:
        self.node = node
        self.stop = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.stop.set()
        self.node.stop_signal = signum
        if self.node.loading:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def spin(node: FusionNode, duration: float | None = None, summary: bool = False, executor: str = "auto") -> int:
    """Autostart and spin until a stop signal, shutdown or `duration` seconds; 1 when autostart
    failed (0 when it failed because a stop signal abandoned it)."""
    executor = make_executor(executor)
    executor.add_node(node)
    signals = StopSignals(node)
    try:
        with signals:
            if not node.autostart():
                if signals.stop.is_set():
                    return 0
                node.get_logger().error("could not start; see the errors above")
                return 1
            # spin_once in a loop, not spin(): the loop checks for a stop between callbacks.
            end = time.monotonic() + duration if duration is not None else float("inf")
            while rclpy.ok() and not signals.stop.is_set() and time.monotonic() < end:
                executor.spin_once(timeout_sec=min(0.1, max(0.0, end - time.monotonic())))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.release_active()
        node.release_configured()
        if summary:
            print(summary_line(node.monitor.snapshot(time.monotonic())), flush=True)
        executor.shutdown()
        node.destroy_node()
    return 0


def summary_line(snapshot: dict) -> str:
    """One line for the end of a run: frames, latency, inference time, drops, mean weights."""
    lat, inf = snapshot["latency"], snapshot["inference"]
    bad = {m: s["malformed"] for m, s in snapshot["inputs"].items() if s["malformed"]}
    weights = " ".join(f"{m}={w:.2f}" for m, w in snapshot["weights_mean"].items())
    stages = " ".join(f"{name}={s['p50'] * 1e3:.2f}" for name, s in snapshot.get("stages", {}).items() if s["n"])
    waited = " ".join(f"{k}={n}" for k, n in sorted(snapshot.get("waited_for", {}).items()))
    return (f"fusion node: {snapshot['published']} fused states; latency p50 {lat['p50'] * 1e3:.1f} ms "
            f"p99 {lat['p99'] * 1e3:.1f} ms; inference p50 {inf['p50'] * 1e3:.1f} ms; "
            f"skipped {snapshot['skipped']}; malformed {bad or 0}; mean weights {weights or '-'}; "
            f"stage p50 ms {stages or '-'}; waited for {waited or '-'}")


def main(argv: list[str] | None = None) -> int:
    """`ros2 run fusion_node fusion_node [--ros-args ...]`."""
    from fusion_node import rosenv

    rosenv.ensure_ros_env()
    rclpy.init(args=sys.argv if argv is None else argv, signal_handler_options=SignalHandlerOptions.NO)
    node = FusionNode()
    try:
        status = spin(node)
    finally:
        rclpy.try_shutdown()
    exit_if_signalled(node, status)
    return status


def exit_if_signalled(node: FusionNode, status: int) -> None:
    """After a stop signal, leave at once: everything the node owned is released, and the
    interpreter's own teardown of torch and the sentence encoder takes about a second more."""
    if node.stop_signal is None:
        return
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
