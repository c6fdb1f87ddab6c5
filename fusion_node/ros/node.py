"""FusionNode: the live ROS 2 lifecycle node that feeds messages through the Pipeline.

Lifecycle: configure reads and validates parameters, loads the model and backend and warms
them up; activate creates subscriptions, publishers, the diagnostics timer and the inference
worker; deactivate and cleanup release them. `auto_activate` runs configure + activate at start.

Threading: subscription callbacks only convert a message, add the sample to the sync buffer and
collect the frames it completes (under a lock held for microseconds); one worker thread runs
inference on them and also polls the buffer for expired deadlines. Frames that become ready
while the worker is inferring are collapsed to the newest (latest wins) and the others counted
as skipped; the hand-off queue is bounded besides, so nothing queues without bound.

Clocks: `arrival` times handed to the sync buffer are time.monotonic() (deadlines are about
waiting for data in transport, whatever the ROS clock does); sample stamps come from headers,
and the headerless instruction is stamped with the node's ROS clock, so use_sim_time with
`fusion play --clock` keeps all stamps on the bag's time line.

Failure containment: a message is refused at the door (limits.*) or by conversion under a named
reason, counted per input and logged once per reason and period; a failure while aligning is
the sync buffer's, never the message's that happened to trigger it; a non-finite result is
counted and withheld; the worker survives any exception in a frame, and the diagnostics timer
restarts it should it die anyway. Warnings go through one RateLimiter whose period
(log_throttle) may change at run time. Processes, signals and exit: fusion_node.ros.spin.
"""
from __future__ import annotations

import functools
import gc
import importlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from fusion_node import MODALITIES, convert
from fusion_node.audio_common import audio_data_stamped_from_msg, audio_stamped_from_msg
from fusion_node.errors import NonFiniteOutput
from fusion_node.frames import AlignedFrame
from fusion_node.ratelimit import RateLimiter
from fusion_node.ros import messages, params
from fusion_node.ros.inputs import Expected, joint_names_problem, problems, ros_type_name
from fusion_node.ros.logbridge import RosLogBridge
from fusion_node.ros.monitor import NodeMonitor, frame_stages, other_clock_warning, transport_delay
from fusion_node.stamps import StampBook

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE

# Upper bound between two polls of the sync buffer: the granularity of max_wait deadlines.
_POLL_PERIOD = 0.005
# Frames handed from callbacks to the worker; more than this means the worker is stalled.
_MAX_PENDING = 4


def sensor_qos(depth: int, reliable: bool = False) -> QoSProfile:
    """SensorDataQoS with a configurable depth (best effort matches every publisher); reliable for
    publishers that all offer reliable delivery (see follow_reliability)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def follow_reliability(offered: list[Any], mode: str = "auto") -> bool:
    """Whether a sensor subscription should be reliable, as rosbag2 decides: reliable when every
    publisher seen offers reliable delivery (a reliable reader then gets what a reliable writer
    would resend), best effort when any offers best effort or none is seen yet (it matches all);
    `mode` reliable/best_effort forces it."""
    if mode != "auto":
        return mode == "reliable"
    return bool(offered) and all(r == ReliabilityPolicy.RELIABLE for r in offered)


def latched_qos() -> QoSProfile:
    """Instructions: reliable and transient local, so a late-joining node gets the one in force."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _volatile(qos: QoSProfile) -> QoSProfile:
    return QoSProfile(history=qos.history, depth=qos.depth, reliability=qos.reliability,
                      durability=DurabilityPolicy.VOLATILE)


def output_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


class FusionNode(LifecycleNode):
    """The live fusion node; see the module docstring for its lifecycle, threading and clocks."""

    def __init__(self, node_name: str = params.NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._param_errors = self._declare_parameters()
        # rclpy keeps every override given for this node, declared or not (a private attribute,
        # but the only record of them); undeclared ones would otherwise vanish without a word.
        self.ignored_parameters = params.not_declared(getattr(self, "_parameter_overrides", {}))
        if self.ignored_parameters:
            self.get_logger().warning("ignored, not parameters of this node: " + "; ".join(self.ignored_parameters))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.cfg = None
        self.settings = params.NodeSettings()
        self.pipeline = None
        self.monitor = NodeMonitor(MODALITIES)
        self._sync_lock = threading.Lock()  # guards pipeline.sync: callbacks add, the worker polls
        self._pending: deque[AlignedFrame] = deque()  # guarded by _sync_lock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._subs: list = []
        self._state_pub = None
        self._diag_pub = None
        self._diag_timer = None
        self._inputs_timer = None  # one-shot: the input topics' check, discovery_wait after activation
        self._expected: list[Expected] = []  # what each subscription expects of the graph
        self._reset_srv = None
        self._audio_info = None  # latest audio_common AudioInfo (AudioDataStamped input)
        self._unstamped_text = None  # instruction received before a simulated clock started
        self._text_pool: ThreadPoolExecutor | None = None
        self._frame_id = ""
        self._stamps = StampBook()  # exact camera stamps (and receipt times) for the FusedState headers
        self._reference = "image"  # the sync reference, set on configure
        self._sim_time = False  # use_sim_time, read on configure: transport is measured on a real clock only
        self._previous_snapshot: dict | None = None
        # Read on every call: log_throttle may change at run time.
        self._limiter = RateLimiter(lambda: self.settings.log_throttle)
        # The library's logging (sync buffer, backends) reaches /rosout through this node.
        self._log_bridge = RosLogBridge(self.get_logger(), self._limiter).install()
        self.loading = False  # in configure: a stop signal abandons the load (fusion_node.ros.spin)
        self.stop_signal: int | None = None  # the signal that ended spin(), if one did

    # -- parameters ------------------------------------------------------------------------
    def _declare_parameters(self) -> list[str]:
        """Declare every parameter; overrides that violate a descriptor are kept as errors for configure."""
        from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

        errors = []
        for name, default in params.defaults().items():
            desc = params.descriptor(name, default)
            try:
                self.declare_parameter(name, params.ros_value(default), desc)
            except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
                errors.append(f"{name}: {exc}")
                self.declare_parameter(name, params.ros_value(default), desc, ignore_override=True)
        return errors

    def _parameter_values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in params.defaults()}

    def _on_set_parameters(self, changes: list) -> Any:
        from rcl_interfaces.msg import SetParametersResult

        configured = self.pipeline is not None
        for p in changes:
            reason = params.check_change(p.name, p.value, configured)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        for p in changes:
            self._apply_runtime(p.name, p.value)
        return SetParametersResult(successful=True)

    def _apply_runtime(self, name: str, value: Any) -> None:
        if self.pipeline is None:
            return  # read by the next configure
        if name.startswith("sync."):
            # The buffer reads its timing once, so a new one takes over (what it held is dropped:
            # at most the frames of one max_wait, but not the instruction in force) and the
            # change counts as a reset.
            with self._sync_lock:
                self.cfg.sync = params.apply_sync_change(self.cfg.sync, name, value)
                self.pipeline.retune_sync(self.cfg.sync)
            self.monitor.reset_done()
        elif name == "log_throttle":
            self.settings.log_throttle = float(value)
        elif name.startswith("diagnostics."):
            setattr(self.settings.diagnostics, name.split(".", 1)[1], float(value))
        self.get_logger().info(f"parameter {name} = {value!r} applied")

    def destroy_node(self) -> None:
        self._log_bridge.remove()
        super().destroy_node()

    def _warn(self, key: Any, text: str) -> None:
        """A warning at most once per log_throttle seconds per key; never raises."""
        self._limiter.emit(key, text, self.get_logger().warning)

    # -- lifecycle ---------------------------------------------------------------------------
    def _LifecycleNodeMixin__on_change_state(self, request, response):
        """The ~/change_state service. rclpy before Kilted (Jazzy's 7.x) lets the error of a
        transition that is invalid in the current state (activate while unconfigured) escape the
        service callback: the caller never gets an answer and the exception reaches the executor.
        Answer it as Kilted does: success false, the state unchanged, one logged line."""
        try:
            return super()._LifecycleNodeMixin__on_change_state(request, response)
        except _rclpy.RCLError as exc:
            self.get_logger().error(f"transition {request.transition.id} {request.transition.label!r} refused in "
                                    f"state {self._state_machine.current_state[1]}: {exc}")
            response.success = False
            return response

    def autostart(self) -> bool:
        """Configure and activate when `auto_activate` is set; False when a transition failed."""
        if not self.get_parameter("auto_activate").value:
            self.get_logger().info("waiting for a lifecycle manager (auto_activate is false)")
            return True
        return self.trigger_configure() == SUCCESS and self.trigger_activate() == SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.loading = True
        try:
            return self._configure()
        finally:
            self.loading = False

    def _configure(self) -> TransitionCallbackReturn:
        log = self.get_logger()
        if self._param_errors:
            log.error("configure failed: invalid parameters: " + "; ".join(self._param_errors))
            return FAILURE
        try:
            cfg, settings = params.load(self._parameter_values())
            cfg.model_dir = str(params.resolve_model_dir(cfg.model_dir))
            from fusion_node.pipeline import Pipeline

            pipeline = Pipeline(cfg)
            self._warm_up(pipeline, settings.warmup_runs)
        except Exception as exc:  # noqa: BLE001 - a broken model or config must fail the transition, not the process
            log.error(f"configure failed: {exc}")
            return FAILURE
        self.cfg, self.settings, self.pipeline = cfg, settings, pipeline
        self._reference = cfg.sync.reference
        self._sim_time = bool(self.get_parameter("use_sim_time").value)
        # The model, the sentence encoder and their libraries are a few million long-lived
        # objects; a full collection walking them stalled the worker for about 150 ms every
        # ~17 s at 30 Hz (frames skipped). Frozen, collections only walk what streams in.
        # Unfrozen first, so what a previous configure froze (an old pipeline) can still go.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.monitor = NodeMonitor(MODALITIES)
        self._previous_snapshot = None
        from std_srvs.srv import Trigger

        self._reset_srv = self.create_service(Trigger, "~/reset", self._on_reset)
        log.info(f"configured: model {pipeline.model_id} on {pipeline.backend.name} from {cfg.model_dir}")
        return SUCCESS

    def _warm_up(self, pipeline, runs: int) -> None:
        """Run the model on a blank frame so the first real frame pays no lazy initialisation."""
        spec = pipeline.spec
        h, w = spec.image_size
        present = {m: True for m in MODALITIES}
        frame = AlignedFrame(
            stamp=0.0, image=np.zeros((h, w, 3), np.uint8), audio=np.zeros(spec.audio_samples, np.float32),
            joint_position=np.zeros(len(spec.joint_names), np.float32),
            joint_velocity=np.zeros(len(spec.joint_names), np.float32),
            joint_mask=np.ones(len(spec.joint_names), bool), text="stop", present=present,
            age={m: 0.0 for m in MODALITIES},
        )
        for _ in range(runs):
            pipeline.infer(frame)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        from diagnostic_msgs.msg import DiagnosticArray

        from fusion_msgs.msg import FusedState

        s = self.settings
        try:
            self._state_pub = self.create_lifecycle_publisher(FusedState, s.topics.state, output_qos())
            self._diag_pub = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", output_qos())
            self._subs = self._create_subscriptions()
            if s.missing_input == "refuse":
                self._refuse_missing_inputs(time.monotonic() + s.discovery_wait)
                self._refuse_unknown_joints(time.monotonic() + s.discovery_wait)
        except Exception as exc:  # noqa: BLE001 - e.g. a missing audio_common_msgs package, or an input (refuse)
            self.get_logger().error(f"activate failed: {exc}")
            self.release_active()
            return FAILURE
        if s.missing_input == "run":
            # Publishers take a moment to show in the graph: checked once, discovery_wait from now.
            self._inputs_timer = self.create_timer(max(s.discovery_wait, 0.01), self._report_missing_inputs,
                                                   clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._stop.clear()
        self._text_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fusion-text")
        self._start_worker()
        # Steady clock: diagnostics keep coming while a simulated clock is paused or jumps.
        self._diag_timer = self.create_timer(s.diagnostics.period, self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"active: publishing {s.topics.state}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ret = super().on_deactivate(state)
        self.release_active()
        return ret

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release_configured()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release_active()
        self.release_configured()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release_active()
        self.release_configured()
        return SUCCESS

    def release_active(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None
        with self._sync_lock:
            self._pending.clear()
        if self._text_pool is not None:
            self._text_pool.shutdown(wait=True)
            self._text_pool = None
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        for timer in (self._diag_timer, self._inputs_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._diag_timer = self._inputs_timer = None
        self._expected = []
        for pub in (self._state_pub, self._diag_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._state_pub = self._diag_pub = None

    def release_configured(self) -> None:
        if self._reset_srv is not None:
            self.destroy_service(self._reset_srv)
            self._reset_srv = None
        self.pipeline = None

    # -- inputs ------------------------------------------------------------------------------
    def _input_problems(self) -> dict[str, list[str]]:
        """modality -> what the graph lacks for it now (no publisher, another type)."""
        offered = {e.topic: [i.topic_type for i in self.get_publishers_info_by_topic(e.topic)] for e in self._expected}
        return problems(self._expected, offered)

    def _refuse_missing_inputs(self, deadline: float) -> None:
        """missing_input: refuse. Raises, naming every problem, unless each input the model reads
        has a publisher of its type by `deadline` (discovery takes a moment)."""
        found = self._input_problems()
        while found and time.monotonic() < deadline:
            time.sleep(0.05)
            found = self._input_problems()
        if found:
            raise RuntimeError("missing_input is refuse and " + "; ".join(
                f"input {m}: {', '.join(texts)}" for m, texts in found.items()) +
                " (missing_input: run runs without them)")

    def _refuse_unknown_joints(self, deadline: float) -> None:
        """missing_input: refuse. Raises unless the JointStates that arrive by `deadline` carry
        every joint the model needs (names merged over publishers and topics)."""
        from rclpy.wait_for_message import wait_for_message
        from sensor_msgs.msg import JointState

        needed = tuple(self.pipeline.spec.joint_names)
        if "joints" not in self.pipeline.spec.inputs or not needed:
            return
        topics = [self.resolve_topic_name(t) for t in self.settings.topics.joints]
        seen: dict[str, None] = {}
        while time.monotonic() < deadline and not set(needed) <= set(seen):
            for topic in topics:
                # its own short-lived subscription and wait set: the executor is busy with this transition
                ok, msg = wait_for_message(JointState, self, topic, qos_profile=sensor_qos(10),
                                           time_to_wait=max(0.05, deadline - time.monotonic()))
                if ok:
                    seen.update(dict.fromkeys(msg.name))
        text = joint_names_problem(needed, seen, topics)
        if text:
            raise RuntimeError(f"missing_input is refuse and {text} (missing_input: run runs without them)")

    def _report_missing_inputs(self) -> None:
        """missing_input: run. One ERROR per input without a publisher of its type; /diagnostics
        says ERROR "missing: ..." until its messages arrive."""
        if self._inputs_timer is not None:
            self.destroy_timer(self._inputs_timer)
            self._inputs_timer = None
        for modality, texts in self._input_problems().items():
            text = ", ".join(texts)
            self.monitor.missing(modality, text)
            self.get_logger().error(f"input {modality}: {text}; running without it until it comes "
                                    "(missing_input: refuse fails the activation instead)")

    def _create_subscriptions(self) -> list:
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import String

        s = self.settings
        limits = self.cfg.limits
        used = self.pipeline.spec.inputs
        for modality in MODALITIES:
            if modality not in used:
                self.monitor.unused(modality)
        image_topic = s.topics.image + ("/compressed" if s.image_transport == "compressed" else "")
        qos = self._sensor_qos(image_topic, s.sensor_qos_depth)
        if s.image_transport == "compressed":
            subs = [self._subscribe(CompressedImage, s.topics.image + "/compressed", "image",
                                    self._handler("image", convert.compressed_image_from_msg, limits), qos)]
        else:
            subs = [self._subscribe(Image, s.topics.image, "image",
                                    self._handler("image", convert.image_from_msg, limits), qos)]
        if "audio" in used:
            subs.extend(self._audio_subscriptions(self._sensor_qos(s.audio.topic, s.audio_qos_depth)))
        if "joints" in used:
            subs.extend(self._subscribe(JointState, topic, "joints",
                                        self._handler("joints", convert.joints_from_msg, limits),
                                        self._sensor_qos(topic, s.joints_qos_depth))
                        for topic in s.topics.joints)
        if "text" in used:
            # A volatile instruction publisher (`ros2 topic pub`, a bag without QoS metadata) cannot
            # match the transient-local request: it gets a volatile subscription of its own.
            subs.append(self._subscribe(String, s.topics.text, "text", self._on_text, latched_qos(),
                                        fallback=_volatile(latched_qos())))
        return subs

    def _sensor_qos(self, topic: str, depth: int) -> QoSProfile:
        """The QoS of a sensor subscription, following the reliability its publishers offer now."""
        offered = [i.qos_profile.reliability for i in self.get_publishers_info_by_topic(self.resolve_topic_name(topic))]
        reliable = follow_reliability(offered, self.settings.sensor_reliability)
        self.get_logger().info(f"{topic}: {'reliable' if reliable else 'best-effort'} subscription "
                               f"({len(offered)} publisher(s) seen; sensor_reliability {self.settings.sensor_reliability})")
        return sensor_qos(depth, reliable)

    def _subscribe(self, msg_type: Any, topic: str, modality: str, callback: Callable[[Any], None], qos: QoSProfile,
                   fallback: QoSProfile | None = None):
        """A subscription whose DDS-level losses are counted and whose QoS mismatches are logged;
        with `fallback`, a mismatch adds a second subscription with that QoS (once)."""
        try:
            from rclpy.event_handler import SubscriptionEventCallbacks
        except ImportError:  # Humble
            from rclpy.qos_event import SubscriptionEventCallbacks

        def lost(info: Any) -> None:
            self.monitor.lost(modality, int(info.total_count_change))

        def incompatible(info: Any) -> None:
            nonlocal fallback
            if fallback is not None and self._state_pub is not None:
                extra, fallback = fallback, None
                self._subs.append(self.create_subscription(msg_type, topic, callback, extra))
                self.get_logger().warning(
                    f"{topic}: a publisher offers {extra.reliability.name.lower()} reliability and "
                    f"{extra.durability.name.lower()} durability; also subscribed with it")
                return
            self._warn(("qos", topic), f"{topic}: a publisher's QoS is incompatible with this subscription's "
                       f"(policy id {info.last_policy_kind}; {qos.reliability.name.lower()}, "
                       f"{qos.durability.name.lower()})")

        if fallback is None and qos.reliability == ReliabilityPolicy.RELIABLE and modality != "text":
            # A best-effort publisher that appears later still gets heard, on a second subscription.
            fallback = sensor_qos(qos.depth)
        events = SubscriptionEventCallbacks(message_lost=lost, incompatible_qos=incompatible)
        # the instruction is not required: a planner publishes one when it has a task
        self._expected.append(Expected(modality, self.resolve_topic_name(topic), ros_type_name(msg_type),
                                       required=modality != "text"))
        return self.create_subscription(msg_type, topic, callback, qos, event_callbacks=events)

    def _audio_subscriptions(self, qos: QoSProfile) -> list:
        s = self.settings
        limits = self.cfg.limits
        source = s.audio
        if source.msgtype == "fusion_msgs/AudioFrame":
            from fusion_msgs.msg import AudioFrame

            return [self._subscribe(AudioFrame, source.topic, "audio",
                                    self._handler("audio", convert.audio_from_msg, limits), qos)]
        package, name = source.msgtype.split("/")
        try:
            acm = importlib.import_module(f"{package}.msg")
            msg_type = getattr(acm, name)
        except (ImportError, AttributeError) as exc:
            why = (f"audio_source {s.audio_source} ({source.publisher}) needs {source.msgtype}, which does not "
                   f"load here ({exc}): install ros-$ROS_DISTRO-audio-common-msgs (or build the driver's own "
                   "package), or set audio_source to the driver you run")
            if s.missing_input == "refuse":
                raise RuntimeError(f"missing_input is refuse and {why}") from exc
            # Not fatal: the node runs without audio (absent in every frame), as without a microphone.
            why += "; running without audio"
            self.get_logger().error(why)
            self.monitor.unavailable("audio", why)
            if self.pipeline is not None:  # no audio can come: frames must not wait out its max_wait
                self.pipeline.sync.forgo("audio")
            return []
        if source.msgtype == "audio_common_msgs/AudioStamped":
            return [self._subscribe(msg_type, source.topic, "audio",
                                    self._handler("audio", audio_stamped_from_msg, limits), qos)]
        convert_stamped = self._handler(
            "audio", lambda msg, _arrival, limits: audio_data_stamped_from_msg(msg, self._audio_info, limits), limits)
        return [
            self._subscribe(msg_type, source.topic, "audio", convert_stamped, qos),
            self._subscribe(acm.AudioInfo, s.topics.audio_info, "audio", self._on_audio_info, QoSProfile(depth=1)),
        ]

    def _on_audio_info(self, msg: Any) -> None:
        self._audio_info = msg

    def _handler(self, modality: str, conv: Callable[..., Any], limits: Any) -> Callable[[Any], None]:
        conv = functools.partial(conv, limits=limits)

        def callback(msg: Any) -> None:
            self._ingest(modality, conv, msg)

        return callback

    def _on_text(self, msg: Any) -> None:
        # Headerless: stamped with the ROS clock so it shares the sensors' (possibly simulated) time
        # line. Under use_sim_time before the first /clock the clock reads 0: the instruction then
        # waits for the next sensor message and takes its stamp.
        stamp = self.get_clock().now().nanoseconds * 1e-9
        if stamp <= 0.0:
            self._unstamped_text = msg
            return
        self._ingest_text(msg, stamp)

    def _ingest_text(self, msg: Any, stamp: float) -> None:
        limits = self.cfg.limits
        self._ingest("text", lambda m, _arrival: convert.text_from_msg(m, stamp, limits), msg)

    def _ingest(self, modality: str, conv: Callable[[Any, float | None], Any], msg: Any) -> None:
        """Convert and hand over; never raises. A message refused at the door is counted under its
        reason; a failure while aligning is the sync buffer's and never blamed on this message."""
        arrival = time.monotonic()
        pipeline = self.pipeline
        if pipeline is None:
            return
        # The reference's receipt on the ROS clock: stamp -> receipt is the transport (on a real
        # clock only: a simulated one says nothing about the wire).
        received = self.get_clock().now().nanoseconds * 1e-9 if modality == self._reference else 0.0
        try:
            sample = conv(msg, arrival)
            if modality == "image":
                note = None
                if modality == self._reference:  # (receipt, converted, transport) for frame_stages
                    transport = math.nan if self._sim_time else transport_delay(received, sample.stamp)
                    note = (arrival, time.monotonic(), transport)
                    if math.isnan(transport) and not self._sim_time:
                        self._warn(("clock", modality), other_clock_warning(modality, received, sample.stamp))
                self._stamps.add(sample.stamp, msg.header.stamp, note)
                self.monitor.stamped("image", sample.stamp)
                if not self._frame_id:
                    self._frame_id = str(getattr(msg.header, "frame_id", ""))
            elif modality == "audio":
                self.monitor.stamped("audio", sample.stamp, sample.samples.shape[0] / sample.sample_rate)
        except Exception as exc:  # noqa: BLE001 - BadMessage, and anything a hostile message provokes
            bad = isinstance(exc, convert.BadMessage)
            reason = exc.reason if bad else "malformed"
            text = str(exc) if bad else f"{type(exc).__name__}: {exc}"
            self.monitor.refused(modality, reason, text)
            what = f"malformed {modality} message" if reason == "malformed" else f"{modality} message ({reason})"
            self._warn(("refused", modality, reason), f"dropped {what}: {text}")
            return
        with self._sync_lock:
            try:
                accepted = pipeline.add(modality, sample, arrival)
            except Exception as exc:  # noqa: BLE001 - a sample the buffer cannot hold is this message's fault
                self.monitor.refused(modality, "malformed", f"{type(exc).__name__}: {exc}")
                self._warn(("refused", modality, "sync"), f"dropped {modality} message the sync buffer refused: {exc}")
                return
            self._collect(pipeline, arrival)
        self.monitor.arrived(modality, arrival, accepted)
        if modality == "text" and accepted:
            self._warm_text(pipeline, sample.text)
        if self._unstamped_text is not None and modality != "text":
            msg, self._unstamped_text = self._unstamped_text, None
            self._ingest_text(msg, sample.stamp)

    def _warm_text(self, pipeline, text: str) -> None:
        """Encode a new instruction now, off the executor and the worker, so the next frame finds it
        cached instead of paying the sentence encoder (15 ms and more on CPU) in its latency."""
        pool = self._text_pool
        if pool is not None:
            try:
                pool.submit(self._encode_quietly, pipeline, text)
            except RuntimeError:  # shut down by a concurrent deactivate: the worker encodes it instead
                pass

    def _encode_quietly(self, pipeline, text: str) -> None:
        try:
            pipeline.text_encoder.encode(text)
        except Exception as exc:  # noqa: BLE001 - the worker will meet (and count) the same error
            self._warn("encode", f"instruction encoding failed: {exc}")

    def _hand_over(self, frames: list[AlignedFrame]) -> None:
        """Queue ready frames for the worker (caller holds _sync_lock); the bound drops the oldest."""
        if not frames:
            return
        self._pending.extend(frames)
        excess = len(self._pending) - _MAX_PENDING
        if excess > 0:
            for _ in range(excess):
                self._pending.popleft()
            self.monitor.frames_skipped(excess)
        self._wake.set()

    def _on_reset(self, request: Any, response: Any) -> Any:
        pipeline = self.pipeline
        if pipeline is None:
            response.success, response.message = False, "node is not configured"
            return response
        with self._sync_lock:
            pipeline.reset("reset service")
            self._pending.clear()
        self.monitor.reset_done()
        self.get_logger().info("sync buffer reset by service call")
        response.success, response.message = True, "sync buffer reset"
        return response

    # -- inference worker ----------------------------------------------------------------------
    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._work, name="fusion-inference", daemon=True)
        self._worker.start()

    def _work(self) -> None:
        pipeline = self.pipeline
        busy = False  # inferred since the queue was last empty: what queued meanwhile is a backlog
        while not self._stop.is_set():
            try:
                busy = self._work_once(pipeline, busy)
            except Exception as exc:  # noqa: BLE001 - the worker outlives any frame
                if self._stop.is_set() or not self.context.ok():
                    return  # shutting down: the publisher may already be gone
                self.monitor.frame_failed(f"worker: {type(exc).__name__}: {exc}")
                self._warn("worker", f"inference worker error ({type(exc).__name__}: {exc}); continuing")
                busy = False

    def _work_once(self, pipeline, busy: bool) -> bool:
        with self._sync_lock:
            if not self._pending:
                self._collect(pipeline, time.monotonic())
            frame = None
            if self._pending:
                if busy and len(self._pending) > 1:
                    self.monitor.frames_skipped(len(self._pending) - 1)
                    while len(self._pending) > 1:
                        self._pending.popleft()
                frame = self._pending.popleft()
        if frame is None:
            self._wake.wait(_POLL_PERIOD)
            self._wake.clear()
            return False
        self._infer_and_publish(pipeline, frame, time.monotonic())
        return True

    def _collect(self, pipeline, now: float) -> None:
        """Hand the frames the buffer has ready by `now` to the worker (caller holds _sync_lock).

        The buffer contains a failing policy itself; should it raise anyway, it is reset (the
        instruction in force survives) and the failure counted as the buffer's own.
        """
        try:
            frames = pipeline.frames(now)
            for frame in frames:
                frame.released = now
            self._hand_over(frames)
        except Exception as exc:  # noqa: BLE001 - keep serving with a fresh buffer
            self.monitor.sync_failed(f"{type(exc).__name__}: {exc}")
            self._warn("sync", f"sync buffer failed ({type(exc).__name__}: {exc}); resetting it")
            pipeline.reset(f"error: {exc}")

    def _infer_and_publish(self, pipeline, frame: AlignedFrame, now: float) -> None:
        t0 = time.perf_counter()
        try:
            out = pipeline.infer(frame, now)
        except NonFiniteOutput as exc:
            self.monitor.nonfinite(str(exc))
            self._warn("nonfinite", f"{exc}: not published")
            return
        except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the node
            self.monitor.frame_failed(f"{type(exc).__name__}: {exc}")
            self._warn("inference", f"inference failed: {exc}")
            return
        inference = time.perf_counter() - t0
        pub = self._state_pub
        if pub is None:
            return
        frame_id = self.settings.frame_id or self._frame_id
        stamp, note = self._stamps.take_noted(out.stamp)
        msg = messages.fused_state_msg(out, frame_id, stamp)
        pub.publish(msg)
        self.monitor.frame_done(inference, msg.latency, out.weight)
        if note is not None:
            self.monitor.frame_stages(*frame_stages(frame, out, note, picked=now, published=time.monotonic()))

    # -- diagnostics ---------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        try:
            self._check_worker()
            self._diagnostics_once()
        except Exception as exc:  # noqa: BLE001 - diagnostics must never end the spin
            if self.context.ok():
                self._warn("diagnostics", f"diagnostics failed: {type(exc).__name__}: {exc}")

    def _check_worker(self) -> None:
        """The watchdog: a worker that died while active is counted (ERROR) and restarted."""
        worker = self._worker
        if worker is not None and not worker.is_alive() and not self._stop.is_set():
            self.monitor.worker_restarted()
            self.get_logger().error("the inference worker stopped; restarting it")
            self._start_worker()

    def _diagnostics_once(self) -> None:
        pipeline, pub = self.pipeline, self._diag_pub
        if pipeline is None or pub is None:
            return
        snapshot = self.monitor.snapshot(time.monotonic())
        with self._sync_lock:
            sync_stats = pipeline.stats()
            mismatch = pipeline.sync.mismatch()
        snapshot["sync_resets"] = int(sync_stats["frames"]["resets"])
        for name, counters in snapshot["inputs"].items():  # for health(): ignored, not rejected
            counters["unmatched"] = sync_stats.get(name, {}).get("unmatched", 0.0)
        snapshot["cleaned"] = sum(pipeline.preprocess.cleaned.values())
        s = self.settings
        topics = {"image": s.topics.image + ("/compressed" if s.image_transport == "compressed" else ""),
                  "audio": s.audio.topic, "joints": ",".join(s.topics.joints), "text": s.topics.text}
        statuses = messages.health(
            snapshot, self._previous_snapshot, sync_stats, node=self.get_fully_qualified_name(), topics=topics,
            reference=self.cfg.sync.reference, stale_after=s.diagnostics.stale_after,
            max_latency=s.diagnostics.max_latency, backend=pipeline.backend.name, model_id=pipeline.model_id,
            max_loss=s.diagnostics.max_loss, mismatch=mismatch,
            audio_slack=self.cfg.sync.modalities["audio"].slack if "audio" in self.cfg.sync.modalities else 0.0,
        )
        self._previous_snapshot = snapshot
        for status in statuses:
            if "lost in transport this period" in status.message:
                self._warn(("transport", status.name), f"{status.name}: {status.message}")
        stamp = self.get_clock().now().nanoseconds * 1e-9
        pub.publish(messages.diagnostic_array_msg(statuses, stamp, self.get_name()))
