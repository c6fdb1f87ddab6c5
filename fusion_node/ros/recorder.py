"""Recording ROS topics into a bag, ros2 bag record's job where rosbag2 is not installable (the command:
fusion_node.commands.record).

Subscriptions are raw (CDR bytes, never deserialized) with QoS matched to the publishers;
callbacks only timestamp and enqueue, a writer thread does the disk work. The queue is bounded in
messages and bytes: if the disk cannot keep up, messages are dropped and counted, never buffered
without limit.
Log time is the receive time on the system clock, as ros2 bag records it.
"""
from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fusion_node.bag.typestore import get_typestore
from fusion_node.bag.writer import BagWriter

_STOP = None  # queue sentinel


@dataclass
class RecordOptions:
    topics: tuple[str, ...] = ()  # empty: every topic seen (see all_topics)
    all_topics: bool = False
    duration: float = 0.0  # s; 0 = until interrupted
    discovery: float = 5.0  # s to wait for the requested topics before recording starts (later ones still join)
    queue_size: int = 20_000  # messages held between callbacks and the writer thread
    queue_mb: float = 1024.0  # and at most this many MB of them (VGA frames are ~1 MB each)
    overwrite: bool = False
    humble: bool = False  # sqlite3 + metadata version 5, as ROS 2 Humble's `ros2 bag` reads (bag/humble.py)


@dataclass
class RecordStats:
    counts: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    never: list[str] = field(default_factory=list)  # requested topics no publisher ever offered
    wall: float = 0.0

    def summary(self, out: Path) -> str:
        per = ", ".join(f"{t} {n}" for t, n in sorted(self.counts.items()))
        n = sum(self.counts.values())
        never = f"; never published: {', '.join(self.never)}" if self.never else ""
        return f"recorded {n} messages in {self.wall:.1f} s to {out} ({per}); dropped {self.dropped}{never}"


def _publisher_qos(node, topic: str):
    from fusion_node.ros.bagtypes import qos_profile

    offered = [info.qos_profile for info in node.get_publishers_info_by_topic(topic)]
    return qos_profile(offered, depth=0)  # KEEP_ALL: a slow moment here must not lose messages


class Recorder:
    """Subscriptions on `node` feeding a BagWriter through a bounded queue."""

    def __init__(self, node, writer: BagWriter, opts: RecordOptions) -> None:
        self.node = node
        self.opts = opts
        self.stats = RecordStats()
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=opts.queue_size)
        self._budget = int(opts.queue_mb * 1e6)
        self._queued = 0  # bytes waiting for the writer
        self._lock = threading.Lock()
        self._subs: dict[str, object] = {}
        self._thread = threading.Thread(target=self._drain, name="fusion-record-writer", daemon=True)
        self._known = get_typestore()

    def start(self) -> None:
        self.writer.open()
        self._thread.start()

    def subscribe_available(self) -> list[str]:
        """Subscribe to requested (or, with all_topics, all) topics that are now visible."""
        from fusion_node.bag.typestore import with_installed_type
        from fusion_node.ros.bagtypes import message_class

        added = []
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self._subs or topic in self.stats.skipped:
                continue
            if not self.opts.all_topics and topic not in self.opts.topics:
                continue
            msgtype = types[0]
            cls = message_class(msgtype)
            if cls is None:
                self.stats.skipped[topic] = f"type {msgtype} is not installed"
            elif msgtype not in self._known.fielddefs:
                try:  # a package of the user's: its .msg files are installed next to the class
                    self._known = with_installed_type(self._known, msgtype)
                except (LookupError, ValueError) as exc:
                    self.stats.skipped[topic] = str(exc)
            if topic in self.stats.skipped:
                print(f"warning: not recording {topic}: {self.stats.skipped[topic]}", file=sys.stderr)
                continue
            self.writer.add_topic(topic, msgtype, msgdef=self._known.generate_msgdef(msgtype, ros_version=2)[0],
                                  digest=self._known.hash_rihs01(msgtype))
            self.stats.counts[topic] = 0
            self._subs[topic] = self.node.create_subscription(
                cls, topic, self._callback(topic), _publisher_qos(self.node, topic), raw=True
            )
            added.append(topic)
        return added

    @property
    def subscribed(self) -> list[str]:
        return sorted(self._subs)

    def missing(self) -> list[str]:
        return [t for t in self.opts.topics if t not in self._subs and t not in self.stats.skipped]

    def _callback(self, topic: str):
        put = self._queue.put_nowait

        def on_message(data: bytes) -> None:
            with self._lock:
                if self._queued + len(data) > self._budget:
                    self.stats.dropped += 1
                    return
                self._queued += len(data)
            try:
                put((topic, time.time_ns(), data))
            except queue.Full:
                with self._lock:
                    self._queued -= len(data)
                self.stats.dropped += 1

        return on_message

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            topic, t, data = item
            self.writer.write(topic, t, data)
            self.stats.counts[topic] += 1
            with self._lock:
                self._queued -= len(data)

    def stop(self) -> None:
        for sub in self._subs.values():
            self.node.destroy_subscription(sub)
        self._subs.clear()
        self._queue.put(_STOP)
        self._thread.join()
        self.writer.close()


def record(out: str | Path, opts: RecordOptions) -> RecordStats:
    """Record until opts.duration elapses or SIGINT/SIGTERM; the bag is closed either way."""
    if not opts.topics and not opts.all_topics:
        raise ValueError("name the topics to record, or pass --all")
    for name, value in (("--duration", opts.duration), ("--discovery", opts.discovery)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value:g}")
    if opts.queue_size < 1 or opts.queue_mb <= 0:
        raise ValueError(f"--queue-size and --queue-mb must be positive, got {opts.queue_size} and {opts.queue_mb:g}")
    from fusion_node.rosenv import ensure_ros_env

    ensure_ros_env()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    out = Path(out)
    writer = BagWriter(out, overwrite=opts.overwrite, humble=opts.humble)  # refuses an existing OUT before ROS
    # The signal handlers below end the recording; rclpy's would shut the context down
    # under the executor first.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("fusion_recorder")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    rec = Recorder(node, writer, opts)
    stopping = threading.Event()
    # Both signals end the recording cleanly; SIGINT is set explicitly because a shell starts
    # background jobs with it ignored.
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.monotonic()
    try:
        rec.start()
        deadline = t0 + opts.discovery
        while (rec.missing() or not rec.subscribed) and time.monotonic() < deadline and not stopping.is_set():
            rec.subscribe_available()
            executor.spin_once(timeout_sec=0.05)
        # A robot often starts after its recorder: a topic not up yet is recorded from when it appears.
        print(f"recording {', '.join(rec.subscribed) or 'nothing yet'} to {out}", file=sys.stderr)
        if rec.missing():
            print(f"warning: not published within {opts.discovery:g} s: {', '.join(rec.missing())}; "
                  "recording each from when it appears", file=sys.stderr)
        t0 = time.monotonic()
        next_scan = t0 + 0.5
        while not stopping.is_set() and (opts.duration <= 0 or time.monotonic() - t0 < opts.duration):
            executor.spin_once(timeout_sec=0.05)
            if (opts.all_topics or rec.missing()) and time.monotonic() >= next_scan:
                for topic in rec.subscribe_available():
                    print(f"recording {topic} from now", file=sys.stderr)
                next_scan = time.monotonic() + 0.5
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        rec.stats.never = rec.missing()
        rec.stop()
        rec.stats.wall = time.monotonic() - t0
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return rec.stats
