"""BagSource: one bag as the pipeline's input, read one way for replay, training and calibration.

It picks one topic per modality (a `--topic`-style override first, else the one topic whose type
converts to it; a raw Image wins over its CompressedImage twin; several candidates are an
error naming the choice), finds ground truth by type (fusion_msgs/GroundTruth), decodes every
camera, audio (AudioFrame and both audio_common layouts, AudioDataStamped with its latest
AudioInfo), joint and instruction message with fusion_node.convert, and yields them in
log-time order with the log time as the arrival clock. Messages that do not convert are
yielded as refusals with the reason, so every driver counts them the same way.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fusion_node import MODALITIES
from fusion_node.audio_common import audio_data_stamped_from_msg, audio_stamped_from_msg
from fusion_node.bag.reader import BagError, BagMessage, BagReader
from fusion_node.convert import CONVERTERS, BadMessage
from fusion_node.frames import Sample

TRUTH_TYPE = "fusion_msgs/msg/GroundTruth"
IMAGE_TYPE = "sensor_msgs/msg/Image"
# audio_common layouts robots record (decoded with the bag's definitions: no package needed);
# AudioDataStamped takes its format from the latest AudioInfo message.
AUDIO_STAMPED = "audio_common_msgs/msg/AudioStamped"
AUDIO_DATA_STAMPED = "audio_common_msgs/msg/AudioDataStamped"
AUDIO_INFO = "audio_common_msgs/msg/AudioInfo"


def modality_of(msgtype: str) -> str:
    """The modality a message type converts to, "" for none."""
    if msgtype in (AUDIO_STAMPED, AUDIO_DATA_STAMPED):
        return "audio"
    return CONVERTERS.get(msgtype, ("",))[0]


def select_topics(bag: BagReader, overrides: Mapping[str, str]) -> dict[str, str]:
    """modality -> topic: overrides first ("" leaves the modality out), else the one topic whose
    type converts to it (a raw Image wins over its CompressedImage twin)."""
    chosen: dict[str, str] = {}
    for modality in MODALITIES:
        if overrides.get(modality) == "":
            continue
        if modality in overrides:
            topic = overrides[modality]
            bag.require_topics([topic])
            msgtype = bag.topics[topic].msgtype
            if modality_of(msgtype) != modality:
                raise BagError(f"{bag.path}: topic {topic} is {msgtype}, which does not convert to {modality}")
            chosen[modality] = topic
            continue
        candidates = sorted(t for t, i in bag.topics.items() if modality_of(i.msgtype) == modality)
        raw = [t for t in candidates if bag.topics[t].msgtype == IMAGE_TYPE]
        if len(candidates) > 1 and len(raw) == 1:
            candidates = raw
        if len(candidates) > 1:
            raise BagError(
                f"{bag.path}: several {modality} topics ({', '.join(candidates)}); "
                f"choose one with --topic {modality}=TOPIC"
            )
        if candidates:
            bag.check_type(candidates[0])
            chosen[modality] = candidates[0]
    return chosen


def plan(bag: BagReader, overrides: Mapping[str, str], reference: str) -> tuple[dict[str, str], list[str]]:
    """(modality -> topic, ground-truth topics) to read; BagError when the bag cannot feed the pipeline."""
    bag.require_messages()
    chosen = select_topics(bag, overrides)
    if reference in MODALITIES and reference not in chosen:
        have = ", ".join(f"{t} ({i.msgtype})" for t, i in sorted(bag.topics.items()))
        raise BagError(f"{bag.path}: no topic for the reference modality {reference}; topics: {have}")
    if ("audio" in chosen and bag.topics[chosen["audio"]].msgtype == AUDIO_DATA_STAMPED
            and not bag.topics_of_type(AUDIO_INFO)):
        raise BagError(f"{bag.path}: topic {chosen['audio']} is AudioDataStamped but no {AUDIO_INFO} "
                       "topic gives its format")
    return chosen, bag.topics_of_type(TRUTH_TYPE)


@dataclass(frozen=True)
class BagEvent:
    """One message of a chosen topic. kind "sample": `sample` is the converted modality sample;
    "truth": a ground-truth message (`decoded`); "label": a message of a label topic (`decoded`);
    "format": an AudioInfo, already applied to the audio that follows; "refused": it did not
    convert, `reason` says why."""

    kind: str
    message: BagMessage
    decoded: Any
    modality: str = ""
    sample: Sample | None = None
    reason: str = ""

    @property
    def arrival(self) -> float:
        """The bag's log time: the arrival clock a live node receiving the recording would have."""
        return self.message.time


class BagSource:
    """The messages of one open bag that the pipeline consumes, converted; see the module doc."""

    def __init__(self, bag: BagReader, overrides: Mapping[str, str] | None = None, reference: str = "image",
                 label_topics: tuple[str, ...] = ()) -> None:
        self.bag = bag
        self.topics, self.truth_topics = plan(bag, overrides or {}, reference)
        bag.require_topics(label_topics)
        self.label_topics = list(dict.fromkeys(label_topics))
        self.info_topics = bag.topics_of_type(AUDIO_INFO) if "audio" in self.topics else []
        self._modality = {t: m for m, t in self.topics.items()}
        self._audio_info: Any = None

    @property
    def wanted(self) -> list[str]:
        return list(dict.fromkeys([*self.topics.values(), *self.truth_topics, *self.info_topics, *self.label_topics]))

    def message_count(self) -> int | None:
        """Messages events() will read (None when the bag has no index)."""
        return sum(self.bag.topics[t].count or 0 for t in self.wanted) or None

    def _convert(self, msgtype: str, msg: Any, arrival: float) -> Sample:
        if msgtype == AUDIO_STAMPED:
            return audio_stamped_from_msg(msg)
        if msgtype == AUDIO_DATA_STAMPED:
            return audio_data_stamped_from_msg(msg, self._audio_info)
        return CONVERTERS[msgtype][1](msg, arrival)

    def events(self) -> Iterator[BagEvent]:
        """Every message of the chosen topics in log-time order. Raises BagError at the first
        unreadable record, after yielding everything before it."""
        for m in self.bag.messages(self.wanted):
            msg = self.bag.decode(m)
            if m.topic in self.label_topics:
                # a label topic may also be an input (joint positions as a label): both see it
                yield BagEvent("label", m, msg)
                if m.topic not in self._modality:
                    continue
            if m.topic in self.truth_topics:
                yield BagEvent("truth", m, msg)
                continue
            if m.topic in self.info_topics:
                self._audio_info = msg
                yield BagEvent("format", m, msg)
                continue
            modality = self._modality[m.topic]
            try:
                sample = self._convert(m.msgtype, msg, m.time)
            except BadMessage as exc:
                yield BagEvent("refused", m, msg, modality, reason=str(exc))
                continue
            yield BagEvent("sample", m, msg, modality, sample)
