"""The simulated world: determinism, render/truth consistency, kinematics, audio commands, language."""
from __future__ import annotations

import numpy as np
import pytest

from fusion_node.world import COMMANDS, TABLE_SIZE, World, WorldConfig, varied_config
from fusion_node.world.arm import LINKS, effector, forward_kinematics
from fusion_node.world.audio import BEEP_HZ, COMMAND_SOUNDS
from fusion_node.world.language import COLOUR_SYNONYMS, PARAPHRASES, SHAPE_SYNONYMS, TEMPLATES
from fusion_node.world.scene import ARM_RGB, COLOURS, GRID, OUTER, SHAPES, TABLE_RGB
from fusion_node.world.truth import direction

TIMES = np.arange(0.05, 20.0, 0.1)


def _nearest_colour(pixel: np.ndarray, alpha: float = WorldConfig().arm_alpha) -> str:
    """Name of the closest scene colour, also as seen through the semi-transparent arm."""
    base = {**COLOURS, "table": TABLE_RGB}
    palette = [(name, np.array(rgb)) for name, rgb in base.items()]
    palette += [(name, (1 - alpha) * np.array(rgb) + alpha * np.array(ARM_RGB)) for name, rgb in base.items()]
    palette.append(("arm", np.array(ARM_RGB)))
    return min(palette, key=lambda item: np.abs(pixel.astype(float) - item[1]).sum())[0]


def _pixel(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return img[min(h - 1, int(xy[1] * h)), min(w - 1, int(xy[0] * w))]


def test_same_seed_same_world_and_different_seed_differs() -> None:
    a, b, c = World(WorldConfig(), 7), World(WorldConfig(), 7), World(WorldConfig(), 8)
    for t in (0.1, 2.345, 9.9):
        assert np.array_equal(a.render(t), b.render(t))
        ta, tb = a.truth(t), b.truth(t)
        assert np.array_equal(ta.target_xy, tb.target_xy) and ta.instruction == tb.instruction
    assert np.array_equal(a.audio_samples(0, 48000), b.audio_samples(0, 48000))
    assert not np.array_equal(a.render(1.0), c.render(1.0))
    assert [o.name for o in a.objects] != [o.name for o in c.objects] or not np.array_equal(
        a.audio_samples(0, 16000), c.audio_samples(0, 16000))


def test_audio_is_the_same_however_it_is_requested() -> None:
    whole = World(seed=3).audio_samples(0, 5 * 16000)
    w = World(seed=3)
    chunks = [w.audio_samples(k * 320, 320) for k in range(250)]
    assert np.array_equal(np.concatenate(chunks), whole)
    # a late first request (events scheduled lazily) still gives the same samples
    assert np.array_equal(World(seed=3).audio_samples(60000, 5000), whole[60000:65000])
    # before time 0 there is background noise, continuous with what follows
    early = World(seed=3).audio_samples(-20000, 21000)
    assert np.array_equal(early[20000:], whole[:1000]) and 0 < np.abs(early[:20000]).max() < 0.2


def test_render_shape_and_custom_resolution() -> None:
    img = World(WorldConfig(width=640, height=480), 1).render(0.5)
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_target_pixel_has_the_target_colour(seed: int) -> None:
    w = World(WorldConfig(), seed)
    for t in TIMES:
        g = w.truth(t)
        assert 0 < g.target_xy[0] < 1 and 0 < g.target_xy[1] < 1
        assert _nearest_colour(_pixel(w.render(t), g.target_xy)) == g.target.split()[0], (seed, t, g.target)


def test_target_moves_and_truth_fields_are_consistent() -> None:
    w = World(WorldConfig(), 4)
    g0, g1 = w.truth(1.0), w.truth(2.0)
    assert g0.target == g1.target  # first instruction lasts at least 3 s
    assert np.linalg.norm(g1.target_xy - g0.target_xy) > 0.005  # objects drift
    for t in TIMES:
        g = w.truth(t)
        d = (g.target_xy - g.effector_xy) * np.asarray(TABLE_SIZE)
        assert np.allclose(g.direction, d / np.linalg.norm(d), atol=1e-9)
        assert g.command_name == COMMANDS[g.command]
        assert g.target in g.instruction.replace("  ", " ") or not w.config.paraphrase


def test_arm_is_faint_and_sometimes_invisible_so_joints_matter() -> None:
    w = World(WorldConfig(occlusion_fraction=0.35), 5)
    visible = np.array([w.occlusion.visible(t) for t in np.arange(0, 300, 0.05)])
    assert 0.2 < 1 - visible.mean() < 0.5
    seen = hidden = 0
    for t in TIMES:
        g = w.truth(t)
        img = w.render(t)
        if not 0.03 < g.effector_xy[0] < 0.97 or not 0.03 < g.effector_xy[1] < 0.97:
            continue
        px = _pixel(img, g.effector_xy).astype(int)
        background = _pixel(w.renderer.background, g.effector_xy).astype(int)
        eff_m = g.effector_xy * np.asarray(TABLE_SIZE)
        if any(np.linalg.norm(o.position(t) - eff_m) < 2 * o.radius for o in w.objects):
            continue  # effector over an object
        if g.arm_visible:
            seen += 1
            assert 30 < (background - px).sum() < 100  # darker where the arm is, but faint
        else:
            hidden += 1
            assert np.array_equal(px, background)
    assert seen > 10 and hidden > 5


def test_end_effector_moves_fast_and_velocity_is_the_derivative() -> None:
    w = World(WorldConfig(), 6)
    t = np.arange(0, 10, 0.002)
    q, v = w.joints(t)
    assert q.shape == (t.size, 3)
    assert np.allclose(np.gradient(q, t, axis=0)[1:-1], v[1:-1], atol=2e-3)
    speed = np.linalg.norm(np.diff(effector(q), axis=0), axis=1) / 0.002
    # timing matters: a 20 ms misalignment moves the effector more than 0.5 cm on average
    assert speed.mean() * 0.02 > 0.005
    pts = forward_kinematics(q[:5])
    assert np.allclose(np.linalg.norm(np.diff(pts, axis=1), axis=-1), LINKS)


def test_objects_stay_in_their_cells_so_never_overlap() -> None:
    w = World(WorldConfig(n_objects=6), 9)
    cell = np.asarray(TABLE_SIZE) / np.asarray(GRID)
    cells = set()
    for o in w.objects:
        cells.add(tuple(np.floor(o.cell_centre / cell).astype(int)))
        pos = o.position(TIMES)
        reach = OUTER * o.radius  # farthest vertex of any shape at any rotation
        assert (pos - reach >= o.cell_centre - cell / 2).all() and (pos + reach <= o.cell_centre + cell / 2).all()
        assert np.ptp(pos, axis=0).min() > 0.02  # it does move
    assert len(cells) == 6


def _dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size), n=8192))
    return float(np.fft.rfftfreq(8192, 1 / rate)[spec.argmax()])


def test_audio_events_are_detectable_at_their_frequency_and_set_the_command() -> None:
    w = World(WorldConfig(), 11)
    rate, hold = w.config.audio_rate, w.config.command_hold
    events = w.audio.schedule(60.0)
    assert {e.command for e in events} == {1, 2, 3}
    for e in events:
        i0 = int(np.ceil(e.onset * rate))
        x = w.audio_samples(i0, int(e.duration * rate))
        half = x.size // 2
        f_first, f_second = _dominant_hz(x[:half], rate), _dominant_hz(x[half:], rate)
        lo, hi = COMMAND_SOUNDS[e.command]
        if lo == hi:
            assert abs(f_first - lo) < 30 and abs(f_second - lo) < 30
        elif lo < hi:
            assert lo - 50 < f_first < f_second < hi + 50
        else:
            assert hi - 50 < f_second < f_first < lo + 50
        assert w.audio.command_at(e.onset + 0.01) == e.command
        assert w.audio.command_at(e.onset + hold - 0.01) == e.command
        assert w.audio.command_at(e.onset + hold + 0.01) == 0
    # outside events: noise only, quiet
    assert w.audio.command_at(events[0].onset - 0.01) == 0
    quiet = w.audio_samples(0, int(events[0].onset * rate) - 10)
    assert np.abs(quiet).max() < 0.2


def test_distractor_sounds_never_change_the_command() -> None:
    w = World(WorldConfig(), 12)
    w.audio.schedule(120.0)
    assert w.audio.distractors, "expected some distractor sounds in two minutes"
    for d in w.audio.distractors:
        assert w.audio.command_at(np.linspace(d.onset, d.onset + d.duration, 5)).max() == 0
        if d.kind == "beep":
            x = w.audio_samples(int(np.ceil(d.onset * 16000)), int(d.duration * 16000))
            assert abs(_dominant_hz(x, 16000) - BEEP_HZ) < 30


def test_paraphrases_are_disjoint_from_templates() -> None:
    template_strings = {t.format(colour=c, shape=s) for t in TEMPLATES for c in COLOURS for s in SHAPES}
    para_strings = {
        p.format(colour=c, shape=s)
        for p in PARAPHRASES for col in COLOURS for c in COLOUR_SYNONYMS[col]
        for shp in SHAPES for s in SHAPE_SYNONYMS[shp]
    }
    assert not template_strings & para_strings
    frames = {t.replace("{colour} {shape}", "") for t in TEMPLATES}
    assert not frames & {p.replace("{colour} {shape}", "") for p in PARAPHRASES}
    canonical = set(COLOURS) | set(SHAPES)
    assert not any(word in canonical for s in para_strings for word in s.replace("?", "").split())


def test_paraphrase_changes_words_only() -> None:
    plain = World(WorldConfig(), 13).instructions.until(60.0)
    para = World(WorldConfig(paraphrase=True), 13).instructions.until(60.0)
    assert [(i.time, i.target) for i in plain] == [(i.time, i.target) for i in para]
    assert plain[0].time == 0.0 and len(plain) >= 8
    assert all(a.text != b.text for a, b in zip(plain, para))
    assert all(a.target != b.target for a, b in zip(plain, plain[1:]))  # a new instruction names a new object


def test_bad_config_and_seed_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_objects"):
        World(WorldConfig(n_objects=7))
    with pytest.raises(ValueError, match="seed"):
        World(WorldConfig(), -1)


def test_misaligned_inputs_change_the_truth() -> None:
    """Joints or audio taken 50 ms off the reference time give measurably wrong answers."""
    angles, flips = [], []
    for seed in range(3):
        w = World(WorldConfig(), seed)
        t = np.arange(0.1, 30.0, 0.1)
        stale = effector(w.joints(t - 0.05)[0])
        for ti, eff in zip(t, stale):
            g = w.truth(ti)
            d = direction(eff, g.target_xy * np.asarray(TABLE_SIZE))
            angles.append(np.degrees(np.arccos(np.clip(d @ g.direction, -1, 1))))
        flips.append(np.mean(w.audio.command_at(t) != w.audio.command_at(t - 0.05)))
    assert np.mean(angles) > 3.0  # degrees of direction error from stale joints alone
    assert np.mean(flips) > 0.03  # share of frames whose command label differs


def test_varied_config_is_seeded_and_valid() -> None:
    base = WorldConfig(width=96, height=72)
    a, b, c = varied_config(base, 1), varied_config(base, 1), varied_config(base, 2)
    assert a == b and a != c
    assert (a.width, a.height, a.command_hold) == (96, 72, base.command_hold)
    for seed in range(20):
        varied_config(base, seed).validate()


def test_training_paraphrases_share_no_frame_string_or_synonym_with_the_evaluation_ones() -> None:
    from fusion_node.world.language import (
        COLOUR_SYNONYMS,
        PARAPHRASES,
        SHAPE_SYNONYMS,
        TEMPLATES,
        TRAIN_COLOUR_SYNONYMS,
        TRAIN_PARAPHRASES,
        TRAIN_SHAPE_SYNONYMS,
        training_paraphrases,
    )

    assert not set(TRAIN_PARAPHRASES) & (set(PARAPHRASES) | set(TEMPLATES))
    words = lambda table: {w for names in table.values() for name in names for w in name.split()}  # noqa: E731
    assert not words(TRAIN_COLOUR_SYNONYMS) & words(COLOUR_SYNONYMS)
    assert not words(TRAIN_SHAPE_SYNONYMS) & words(SHAPE_SYNONYMS)
    evaluation = {f.format(colour=c, shape=s) for f in PARAPHRASES for cs in COLOUR_SYNONYMS.values() for c in cs
                  for ss in SHAPE_SYNONYMS.values() for s in ss}
    alts = training_paraphrases("touch the blue triangle")
    assert len(alts) == len(TRAIN_PARAPHRASES) * 9 and "find the sapphire arrowhead" in alts
    assert all("triangle" in a or "trigon" in a or "arrowhead" in a for a in alts)
    assert not set(alts) & evaluation
    assert training_paraphrases("move toward the azure wedge") == [] and training_paraphrases("stop") == []
