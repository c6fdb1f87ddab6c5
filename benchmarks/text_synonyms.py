"""Does the shipped sentence encoder know the evaluation paraphrases' synonyms?

The paraphrase condition names each object with words no training instruction uses ("crimson
box" for the red square). The fusion model reads the instruction only through the frozen
sentence encoder's 384-d vector. So if that vector puts "crimson box" nearer another object's
training instructions than the red square's, no fusion head can recover the object. This script
measures that, with no model in the loop:

- sentences: for each of the 648 evaluation paraphrases, the nearest training instruction
  (templates plus training paraphrases: 936 sentences) by cosine. The score is how often it names
  the same object, colour and shape. Chance is 1/12 for the object.
- words: each evaluation synonym alone ("crimson"; also in "the crimson one"), against the
  training words for each colour and shape. The score is how often its nearest training word
  belongs to the right colour or shape.
- static words: the same, on the encoder's input word-piece table (mean over a word's pieces),
  before any context: what the lexicon itself knows.
- probe: the best a learned linear readout could do. Logistic regressions from the vector to the colour
  and to the shape, fitted on the training instructions and scored on the evaluation
  paraphrases; the same on the encoder's per-token outputs (max and mean over the tokens), which
  a token-attending text input would read instead of the pooled vector.
- fine-tuned: the encoder itself trained on the training instructions (colour and shape
  classified by cosine to learned prototypes that start at the canonical words), then scored as
  above, per epoch and per seed. This is what fine-tuning the text encoder inside the fusion
  model could at best teach it about the held-out words.
- colour survey: matplotlib's XKCD colour survey names 949 colours with their RGB. Each name
  within a CIELAB distance of one of the world's four object colours is given that colour, and
  every name containing an evaluation synonym is dropped. Scored: the lookup itself (an evaluation
  synonym's survey RGB -> the nearest world colour, no encoder), and those names as training
  text (each in three training sentences) for the colour probe and for the fine-tuning above:
  whether many more colour words teach the encoder's vector the held-out ones.

    .venv/bin/python benchmarks/text_synonyms.py --json benchmarks/text_synonyms.json
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib import colors as mcolors

from fusion_node.text import DEFAULT_ENCODER, TextEncoder
from fusion_node.world import language
from fusion_node.world.scene import COLOURS

Obj = tuple[str, str]  # (colour, shape) in the canonical words


def _unit(rows: list[np.ndarray]) -> np.ndarray:
    m = np.stack(rows).astype(np.float64)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def training_sentences() -> dict[str, Obj]:
    out: dict[str, Obj] = {}
    for colour, shape in itertools.product(language.TRAIN_COLOUR_SYNONYMS, language.TRAIN_SHAPE_SYNONYMS):
        for frame in language.TEMPLATES:
            text = frame.format(colour=colour, shape=shape)
            out[text] = (colour, shape)
            out.update(dict.fromkeys(language.training_paraphrases(text), (colour, shape)))
    return out


def template_sentences(train: dict[str, Obj]) -> dict[str, Obj]:
    """The training instructions that are templates (the canonical words in a template frame)."""
    return {t: o for t, o in train.items() if any(t == f.format(colour=o[0], shape=o[1]) for f in language.TEMPLATES)}


def evaluation_sentences() -> dict[str, Obj]:
    out: dict[str, Obj] = {}
    for colour, shape in itertools.product(language.COLOUR_SYNONYMS, language.SHAPE_SYNONYMS):
        for frame in language.PARAPHRASES:
            for c, s in itertools.product(language.COLOUR_SYNONYMS[colour], language.SHAPE_SYNONYMS[shape]):
                out[frame.format(colour=c, shape=s)] = (colour, shape)
    return out


def sentence_scores(encode, train: dict[str, Obj], evaluation: dict[str, Obj]) -> dict[str, float]:
    a = _unit([encode(t) for t in train])
    b = _unit([encode(t) for t in evaluation])
    labels = list(train.values())
    nearest = [labels[j] for j in (b @ a.T).argmax(axis=1)]
    truth = list(evaluation.values())
    return {
        "object": float(np.mean([n == t for n, t in zip(nearest, truth)])),
        "colour": float(np.mean([n[0] == t[0] for n, t in zip(nearest, truth)])),
        "shape": float(np.mean([n[1] == t[1] for n, t in zip(nearest, truth)])),
        "train_sentences": len(train), "evaluation_sentences": len(evaluation),
    }


def word_scores(encode, frame: str) -> dict[str, str]:
    """'right/total' per word kind: each evaluation synonym's nearest training word is of its class."""
    out = {}
    for kind, evaluation, train in (("colour", language.COLOUR_SYNONYMS, language.TRAIN_COLOUR_SYNONYMS),
                                    ("shape", language.SHAPE_SYNONYMS, language.TRAIN_SHAPE_SYNONYMS)):
        words = [(cls, w) for cls, ws in train.items() for w in ws]
        ref = _unit([encode(frame.format(w)) for _, w in words])
        right = total = 0
        for cls, synonyms in evaluation.items():
            for w in synonyms:
                v = _unit([encode(frame.format(w))])[0]
                right += words[int((ref @ v).argmax())][0] == cls
                total += 1
        out[kind] = f"{right}/{total}"
    return out


def static_encoder(model):
    """A word's vector from the encoder's input embedding table: the mean of its word pieces' rows."""
    table = model[0].auto_model.embeddings.word_embeddings.weight.detach().numpy()
    return lambda text: table[model.tokenizer(text, add_special_tokens=False)["input_ids"]].mean(axis=0)


def _fit_predict(train_x: np.ndarray, train_y: list[str], eval_x: np.ndarray, l2: float = 5e-5) -> list[str]:
    """Multinomial logistic regression (L2-penalised, full-batch L-BFGS): the eval rows' classes."""
    classes = sorted(set(train_y))
    x, e = torch.as_tensor(train_x, dtype=torch.float64), torch.as_tensor(eval_x, dtype=torch.float64)
    y = torch.as_tensor([classes.index(c) for c in train_y])
    w = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return [classes[i] for i in (e @ w + b).argmax(1).tolist()]


def probe_scores(train_x: np.ndarray, train: dict[str, Obj], eval_x: np.ndarray,
                 evaluation: dict[str, Obj]) -> dict[str, float]:
    """Colour, shape and object accuracy of linear readouts fitted on the training instructions."""
    truth = list(evaluation.values())
    pred = [_fit_predict(train_x, [o[k] for o in train.values()], eval_x) for k in (0, 1)]
    return {
        "object": float(np.mean([(pred[0][i], pred[1][i]) == t for i, t in enumerate(truth)])),
        "colour": float(np.mean([p == t[0] for p, t in zip(pred[0], truth)])),
        "shape": float(np.mean([p == t[1] for p, t in zip(pred[1], truth)])),
    }


def token_features(model, texts: list[str]) -> np.ndarray:
    """Max and mean of the encoder's per-token outputs (special tokens left out), unit norm."""
    rows = model.encode(texts, output_value="token_embeddings", convert_to_numpy=False, show_progress_bar=False)
    return _unit([np.concatenate([t[1:-1].max(0), t[1:-1].mean(0)]) for t in (r.cpu().numpy() for r in rows)])


def _embed(model, texts: list[str], grad: bool = False) -> torch.Tensor:
    """Unit sentence vectors, through the SentenceTransformer's own modules (so gradients flow)."""
    with torch.set_grad_enabled(grad):
        return torch.nn.functional.normalize(model(model.preprocess(texts))["sentence_embedding"], dim=-1)


def _embed_all(model, texts: list[str]) -> np.ndarray:
    model.eval()
    return np.concatenate([_embed(model, texts[i:i + 64]).numpy() for i in range(0, len(texts), 64)])


def finetune_scores(train: dict[str, Obj], evaluation: dict[str, Obj], seed: int, epochs: int = 4,
                    lr: float = 2e-5, tau: float = 0.05) -> list[dict]:
    """Per epoch (0 = before): nearest-template and probe scores of a freshly loaded encoder
    fine-tuned on the training instructions to classify colour and shape."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = TextEncoder(DEFAULT_ENCODER)._load()  # a fresh copy: each seed starts from the shipped weights
    classes = (sorted(language.COLOUR_SYNONYMS), sorted(language.SHAPE_SYNONYMS))
    texts = list(train)
    labels = [torch.tensor([c.index(o[k]) for o in train.values()]) for k, c in enumerate(classes)]
    protos = [torch.nn.Parameter(_embed(model, c)) for c in classes]
    templates = template_sentences(train)
    opt = torch.optim.AdamW([{"params": model.parameters(), "lr": lr}, {"params": protos, "lr": 1e-2}],
                            weight_decay=0.01)
    history = []
    for epoch in range(epochs + 1):
        if epoch:
            model.train()
            for batch in np.array_split(rng.permutation(len(texts)), len(texts) // 32):
                e = _embed(model, [texts[j] for j in batch], grad=True)
                loss = sum(torch.nn.functional.cross_entropy(e @ torch.nn.functional.normalize(p, dim=-1).T / tau,
                                                             y[batch]) for p, y in zip(protos, labels))
                opt.zero_grad()
                loss.backward()
                opt.step()
        vectors = dict(zip(texts, _embed_all(model, texts)))
        vectors.update(zip(evaluation, _embed_all(model, list(evaluation))))
        near = sentence_scores(vectors.__getitem__, templates, evaluation)
        history.append({
            "epoch": epoch,
            "nearest_template": {k: near[k] for k in ("object", "colour", "shape")},
            "probe_sentence_vector": probe_scores(np.stack([vectors[t] for t in train]), train,
                                                  np.stack([vectors[t] for t in evaluation]), evaluation),
        })
        print(f"seed {seed} epoch {epoch}: nearest template names the object {near['object']:.3f}", flush=True)
    return history


def _lab(rgb: tuple[float, float, float]) -> np.ndarray:
    """CIELAB (L 0-100) of an RGB triple in 0-1."""
    return cv2.cvtColor(np.float32([[rgb]]), cv2.COLOR_RGB2LAB)[0, 0].astype(np.float64)


def nearest_world_colour(rgb: tuple[float, float, float]) -> tuple[str, float]:
    """The world's object colour nearest in CIELAB, and the distance (CIE76 delta E)."""
    lab = _lab(rgb)
    dist = {c: float(np.linalg.norm(lab - _lab(tuple(v / 255 for v in ref)))) for c, ref in COLOURS.items()}
    best = min(dist, key=dist.get)
    return best, dist[best]


def survey_colours(max_delta_e: float) -> dict[str, str]:
    """XKCD survey names within max_delta_e of a world colour, none containing an evaluation synonym."""
    held_out = {w for ws in language.COLOUR_SYNONYMS.values() for w in ws}
    out = {}
    for key, value in mcolors.XKCD_COLORS.items():
        name = key.removeprefix("xkcd:")
        if set(name.replace("/", " ").split()) & held_out:
            continue
        colour, dist = nearest_world_colour(mcolors.to_rgb(value))
        if dist <= max_delta_e:
            out[name] = colour
    return out


def survey_sentences(names: dict[str, str], per_name: int = 3) -> dict[str, Obj]:
    """Each survey name in per_name training frames (templates and training paraphrases) with a
    training shape word, drawn with a fixed seed."""
    rng = np.random.default_rng(0)
    frames = language.TEMPLATES + language.TRAIN_PARAPHRASES
    shapes = [(shape, w) for shape, ws in language.TRAIN_SHAPE_SYNONYMS.items() for w in ws]
    out: dict[str, Obj] = {}
    for name, colour in names.items():
        for _ in range(per_name):
            shape, word = shapes[rng.integers(len(shapes))]
            out[frames[rng.integers(len(frames))].format(colour=name, shape=word)] = (colour, shape)
    return out


def survey_scores(encoder: TextEncoder, train: dict[str, Obj], evaluation: dict[str, Obj],
                  seeds: list[int], lr: float, max_delta_e: float = 40.0) -> dict:
    names = survey_colours(max_delta_e)
    lookup = {w: nearest_world_colour(mcolors.to_rgb(mcolors.XKCD_COLORS["xkcd:" + w]))[0]
              for ws in language.COLOUR_SYNONYMS.values() for w in ws}
    right = sum(lookup[w] == colour for colour, ws in language.COLOUR_SYNONYMS.items() for w in ws)
    augmented = {**train, **survey_sentences(names)}
    return {
        "max_delta_e": max_delta_e,
        "names": {c: sum(v == c for v in names.values()) for c in COLOURS},
        "lookup": f"{right}/{len(lookup)}",
        "lookup_colours": lookup,
        "train_sentences": len(augmented),
        "probe_sentence_vector": probe_scores(encoder.encode_batch(augmented), augmented,
                                              encoder.encode_batch(evaluation), evaluation),
        "finetuned": {str(seed): finetune_scores(augmented, evaluation, seed, lr=lr) for seed in seeds},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path)
    p.add_argument("--finetune-seeds", type=int, nargs="*", default=[0, 1, 2],
                   help="seeds of the encoder fine-tuning runs (none: skip them; about a minute each)")
    p.add_argument("--finetune-lr", type=float, default=2e-5, help="the encoder's learning rate when fine-tuned")
    args = p.parse_args()
    encoder = TextEncoder(DEFAULT_ENCODER)
    encode = encoder.encode
    model = encoder._load()  # the SentenceTransformer itself: its per-token outputs
    train, evaluation = training_sentences(), evaluation_sentences()
    templates = template_sentences(train)
    report = {
        "encoder": DEFAULT_ENCODER,
        "nearest_training_instruction": sentence_scores(encode, train, evaluation),
        "nearest_template": sentence_scores(encode, templates, evaluation),
        "words": {frame: word_scores(encode, frame) for frame in ("{}", "the {} one")},
        "static_words": word_scores(static_encoder(model), "{}"),
        "probe_sentence_vector": probe_scores(encoder.encode_batch(train), train, encoder.encode_batch(evaluation),
                                              evaluation),
        "probe_token_outputs": probe_scores(token_features(model, list(train)), train,
                                            token_features(model, list(evaluation)), evaluation),
        "finetuned": {str(seed): finetune_scores(train, evaluation, seed, lr=args.finetune_lr)
                      for seed in args.finetune_seeds},
        "finetune_lr": args.finetune_lr,
        "colour_survey": survey_scores(encoder, train, evaluation, args.finetune_seeds, args.finetune_lr),
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
