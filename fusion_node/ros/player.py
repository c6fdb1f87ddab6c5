"""Playing a rosbag2 on ROS topics with its recorded timing (the command: fusion_node.commands.play).

Stored CDR bytes are published as they are (rclpy's raw publish), so nothing is decoded on the
hot path. The publisher still needs a generated message class: for a type whose package is not
installed, one is built from the definition stored in the bag (fusion_node.ros.msggen), or the
topic is skipped with a warning. When the bag's definition of a type differs from the
installed one (hash mismatch, e.g. a bag from another ROS distribution), messages are decoded
with the bag's definition and copied field by field into the installed class.
"""
from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusion_node.bag.reader import BagMessage, BagReader
from fusion_node.bag.typestore import get_typestore

CLOCK_TOPIC = "/clock"


@dataclass
class PlayOptions:
    rate: float = 1.0
    loop: bool = False
    start_offset: float = 0.0  # s after the bag's first message
    topics: tuple[str, ...] = ()  # empty: every topic that can be published
    remap: dict[str, str] = field(default_factory=dict)
    namespace: str = ""  # recorded topics are published under it (a namespaced node's inputs); /clock stays global
    ros_args: tuple[str, ...] = ()  # passed to rclpy.init after --ros-args (remaps -r FROM:=TO, ...)
    clock_hz: float = 0.0  # 0: no /clock
    wait_subscribers: float = 0.0  # s at most to wait for subscribers before starting (_wait_for_subscribers)
    wait_node: str = ""  # full node name: only its subscriptions end the wait; empty: anyone's
    qos_depth: int = 0  # publisher history; 0: 2 s of the topic's recorded rate, at least 100
    build_types: bool = True  # build rclpy packages for types the bag defines but nothing installs
    progress: bool = True


@dataclass
class PlayStats:
    published: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # topic -> why it is not played
    lateness: list[float] = field(default_factory=list)  # s each publish trailed its schedule (sampled)
    wall: float = 0.0
    loops: int = 0  # completed passes over the bag
    interrupted: bool = False

    def summary(self) -> str:
        n = sum(self.published.values())
        late = np.asarray(self.lateness) * 1e3 if self.lateness else np.zeros(1)
        return (
            f"published {n} messages on {len(self.published)} topics in {self.wall:.2f} s"
            f" ({self.loops} full pass{'es' if self.loops != 1 else ''}{', interrupted' if self.interrupted else ''});"
            f" schedule lag p50 {np.percentile(late, 50):.2f} ms,"
            f" p99 {np.percentile(late, 99):.2f} ms"
        )


def parse_remap(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        src, sep, dst = item.partition(":=")
        if not sep or not src.startswith("/") or not dst.startswith("/"):
            raise ValueError(f"bad --remap {item!r}: expected /from:=/to")
        out[src] = dst
    return out


class _Topic:
    """One played topic: its publisher and how a stored message becomes what it publishes."""

    def __init__(self, publisher, prepare: Callable[[BagMessage], object]) -> None:
        self.publisher = publisher
        self.prepare = prepare


def published_name(topic: str, opts: PlayOptions) -> str:
    """Where a recorded topic is published: remapped, then moved under the namespace."""
    name = opts.remap.get(topic, topic)
    ns = opts.namespace.strip("/")
    if name == CLOCK_TOPIC:  # a namespaced node's clock subscription is still the global one
        return name
    return f"/{ns}/{name.lstrip('/')}" if ns else name


def _setup_topics(node, bag: BagReader, opts: PlayOptions, stats: PlayStats) -> dict[str, _Topic]:
    from fusion_node.ros.bagtypes import message_class, qos_profile, transcode

    ours = get_typestore()
    wanted = list(opts.topics) or sorted(bag.topics)
    if opts.topics:
        bag.require_topics(wanted)
    if opts.build_types:
        _build_missing(bag, wanted)
    topics: dict[str, _Topic] = {}
    for name in wanted:
        if name == CLOCK_TOPIC and opts.clock_hz > 0:
            # Two /clock sources would throw every use_sim_time node's time back and forth between them.
            stats.skipped[name] = "--clock publishes the bag's log time there instead of the recorded clock"
            continue
        info = bag.topics[name]
        cls = message_class(info.msgtype)
        if cls is None:
            why = "no definition in the bag" if info.msgtype not in bag.typestore.fielddefs else "not built"
            stats.skipped[name] = f"type {info.msgtype} is not installed ({why})"
            continue
        local_hash = ours.hash_rihs01(info.msgtype) if info.msgtype in ours.fielddefs else ""
        if info.digest and local_hash and info.digest != local_hash:
            bag.check_type(name)

            def prepare(m: BagMessage, cls=cls) -> object:
                return transcode(bag.decode(m), cls)
        else:

            def prepare(m: BagMessage) -> object:
                return m.data

        depth = opts.qos_depth or _auto_depth(info.count, bag.duration)
        pub = node.create_publisher(cls, published_name(name, opts), qos_profile(info.qos, depth))
        topics[name] = _Topic(pub, prepare)
        stats.published[pub.topic_name] = 0  # the resolved name: after remaps and the namespace
    if not topics:
        why = "; ".join(f"{t}: {r}" for t, r in stats.skipped.items()) or "no topics selected"
        raise RuntimeError(f"{bag.path}: nothing to play ({why})")
    return topics


def _auto_depth(count: int | None, duration: float | None) -> int:
    """History for a reliable publisher: unacknowledged samples beyond it are overwritten, so it
    must cover a subscriber's hiccup (2 s) at the topic's rate (a 1 kHz topic lost samples at 100)."""
    if not count or not duration:
        return 1000
    return int(min(10_000, max(100, 2.0 * count / duration)))


def _build_missing(bag: BagReader, topics: list[str]) -> None:
    """Generate rclpy packages for bag-defined types that are not installed (cached builds)."""
    from fusion_node.ros import msggen
    from fusion_node.ros.bagtypes import message_class

    missing = sorted({bag.topics[t].msgtype for t in topics if message_class(bag.topics[t].msgtype) is None})
    if not missing or not msggen.missing_types(bag.typestore, missing):
        return
    print(f"building message packages for {', '.join(missing)} from the bag's definitions "
          f"(cached in {msggen.cache_dir()})", file=sys.stderr)
    try:
        msggen.provide(bag.typestore, missing)
    except RuntimeError as exc:
        print(f"warning: {exc}", file=sys.stderr)


# A node creates its subscriptions together (the fusion node on activate; a recorder polls the
# graph every 0.5 s), so a second without a new match means no one else is coming: a topic that
# nothing reads (a bag's ground truth, /tf) must not hold the whole bag back for the full wait.
SUBSCRIBER_SETTLE = 1.0  # s


def _full_name(namespace: str, name: str) -> str:
    return f"{namespace.rstrip('/')}/{name}"


def _subscribed(node, topic: _Topic, wait_node: str) -> bool:
    """A subscription has matched the topic's publisher (wait_node's own, when one is named)."""
    if topic.publisher.get_subscription_count() == 0:
        return False
    return not wait_node or any(_full_name(i.node_namespace, i.node_name) == wait_node
                                for i in node.get_subscriptions_info_by_topic(topic.publisher.topic_name))


def _wait_for_subscribers(node, topics: dict[str, _Topic], timeout: float, wait_node: str = "",
                          settle: float = SUBSCRIBER_SETTLE) -> list[str]:
    """Wait until every topic has a subscriber, or until some have and no further topic matched
    for `settle` s, or `timeout` s; returns the topics still without one. With wait_node (a full
    node name), only that node's subscriptions count: a node starting alongside the player
    (play_bag.launch.py) is waited for even where others, such as robot_state_publisher on
    /joint_states, already subscribe."""
    deadline = time.monotonic() + timeout
    matched: set[str] = set()
    changed = time.monotonic()
    while True:
        now = time.monotonic()
        have = {name for name, t in topics.items() if _subscribed(node, t, wait_node)}
        if have != matched:
            matched, changed = have, now
        missing = [name for name in topics if name not in matched]
        if not missing or now >= deadline or (matched and now - changed >= settle):
            return missing
        time.sleep(0.02)


def _wait_acked(topics: dict[str, _Topic], timeout: float = 5.0) -> None:
    """Let reliable subscribers acknowledge the last messages before the publishers go away:
    a large sample still in transit when the process exits is lost."""
    from rclpy.duration import Duration

    deadline = time.monotonic() + timeout
    for t in topics.values():
        left = max(0.0, deadline - time.monotonic())
        t.publisher.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))


def _sleep_until(target: float) -> None:
    # Coarse sleep, then a short spin: time.sleep alone overshoots by up to a millisecond.
    while True:
        left = target - time.perf_counter()
        if left <= 0:
            return
        time.sleep(left - 0.0005 if left > 0.002 else 0)


def play(bag_path: str | Path, opts: PlayOptions, node=None) -> PlayStats:
    """Publish the bag on `node` (a fresh node when None); returns what was published."""
    for bad, problem in ((opts.rate <= 0, f"--rate must be positive, got {opts.rate:g}"),
                         (opts.clock_hz < 0, f"clock_hz must be >= 0 (0: no /clock), got {opts.clock_hz:g}"),
                         (opts.qos_depth < 0, f"--qos-depth must be >= 0, got {opts.qos_depth}"),
                         (opts.wait_subscribers < 0, f"--wait-subscribers must be >= 0, got {opts.wait_subscribers:g}"),
                         (opts.start_offset < 0, f"--start-offset must be >= 0, got {opts.start_offset:g}")):
        if bad:
            raise ValueError(problem)
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    own = node is None
    if own:
        from fusion_node.rosenv import ensure_ros_env

        ensure_ros_env()
        # Plain KeyboardInterrupt on Ctrl-C (also in a background job, which starts with SIGINT
        # ignored): rclpy's own handler would shut the context down under the publisher first.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        args = [sys.argv[0], "--ros-args", *opts.ros_args] if opts.ros_args else None
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node("fusion_player")
    stats = PlayStats()
    try:
        with BagReader(bag_path) as bag:
            bag.require_messages()
            if bag.duration is not None and opts.start_offset > bag.duration:
                raise ValueError(f"--start-offset {opts.start_offset:g} s is outside the bag, which is "
                                 f"{bag.duration:.2f} s long")
            topics = _setup_topics(node, bag, opts, stats)
            for name, why in stats.skipped.items():
                print(f"warning: not playing {name}: {why}", file=sys.stderr)
            clock = None
            if opts.clock_hz > 0:
                from rosgraph_msgs.msg import Clock

                clock = node.create_publisher(Clock, CLOCK_TOPIC, 10)
            if opts.wait_subscribers > 0:
                missing = _wait_for_subscribers(node, topics, opts.wait_subscribers, opts.wait_node)
                if len(missing) == len(topics):
                    who = f"{opts.wait_node} subscribed to none of the played topics" if opts.wait_node else \
                        "no subscriber appeared"
                    print(f"warning: {who} within {opts.wait_subscribers:g} s; playing anyway", file=sys.stderr)
                elif missing:  # common and harmless (ground truth, /tf): said, not warned about
                    print(f"playing without a subscriber: {', '.join(missing)}", file=sys.stderr)
            try:
                _play_loop(bag, topics, clock, opts, stats)
            except KeyboardInterrupt:  # the normal end of --loop: report what was played
                stats.interrupted = True
            _wait_acked(topics)
    finally:
        if own:
            node.destroy_node()
            rclpy.try_shutdown()
    return stats


def _play_loop(bag: BagReader, topics: dict[str, _Topic], clock, opts: PlayOptions, stats: PlayStats) -> None:
    first = bag.start_time
    start = None if first is None else first + int(opts.start_offset * 1e9)
    total = sum((bag.topics[t].count or 0) for t in topics)
    bar = _progress(total, opts.progress)
    t_begin = time.perf_counter()
    clock_period = 1.0 / opts.clock_hz if clock is not None else 0.0
    try:
        while True:
            wall0: float | None = None
            bag0 = start
            next_clock = 0.0
            for m in bag.messages(list(topics), start=start):
                if bag0 is None:  # damaged bag without an index: the first message sets the origin
                    bag0 = m.log_time + int(opts.start_offset * 1e9)
                    if m.log_time < bag0:
                        continue
                if wall0 is None:
                    wall0 = time.perf_counter()
                due = wall0 + (m.log_time - bag0) * 1e-9 / opts.rate
                while clock is not None and wall0 + next_clock <= due:
                    _sleep_until(wall0 + next_clock)
                    _publish_clock(clock, bag0 + int(next_clock * opts.rate * 1e9))
                    next_clock += clock_period
                _sleep_until(due)
                topic = topics[m.topic]
                topic.publisher.publish(topic.prepare(m))
                if len(stats.lateness) < 100_000:
                    stats.lateness.append(time.perf_counter() - due)
                stats.published[topic.publisher.topic_name] += 1
                bar.update(1)
            stats.loops += 1
            if not opts.loop or wall0 is None:  # a pass that published nothing would loop on nothing forever
                break
    finally:
        bar.close()
        stats.wall = time.perf_counter() - t_begin


def _publish_clock(pub, t_ns: int) -> None:
    from rosgraph_msgs.msg import Clock

    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = t_ns // 1_000_000_000, t_ns % 1_000_000_000
    pub.publish(msg)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total or None, unit="msg", disable=not enabled, file=sys.stderr, leave=False)


# -- CLI -----------------------------------------------------------------------------------
