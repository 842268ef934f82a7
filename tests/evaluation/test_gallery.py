import base64
import io

import numpy as np
import torch
from PIL import Image

from osrkit import ImageSet
from osrkit.evaluation.evaluate import evaluate
from osrkit.evaluation.gallery import confident_mistakes, render_gallery, thumbnail_uri
from osrkit.evaluation.report import render_report
from tests.conftest import synthetic_digits, synthetic_set, synthetic_unknowns
from tests.evaluation.test_report import METRICS


def mixed_unknowns() -> ImageSet:
    """Noise plus 30 digit-like images: the model accepts some of these "unknowns"."""
    digits, _ = synthetic_digits(30, seed=21)
    images = np.concatenate([synthetic_unknowns(90), digits])
    return ImageSet(torch.from_numpy(images), torch.zeros(len(images), dtype=torch.long), ["noise"], "noise")


def decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_most_confident_mistakes_of_the_decision_scorer(fitted):
    ev = evaluate(fitted, synthetic_set(300, seed=11), mixed_unknowns())
    name = fitted.decision_scorer
    t = fitted.thresholds_[name]
    g = confident_mistakes(ev, name, t, fitted.class_names_, n=5)
    k, u = ev.known_scores[name], ev.unknown_scores[name]
    m = ev.metrics["scorers"][name]
    assert g.counts == {
        "known": 300,
        "known_rejected": int((k > t).sum()),
        "unknown": 120,
        "unknown_accepted": int((u <= t).sum()),
    }
    assert g.counts["known_rejected"] == round((1 - m["known_accept_rate"]) * 300)
    assert g.counts["unknown_accepted"] >= 1  # the digit-like "unknowns"
    rejected = [x.score for x in g.known_rejected]
    accepted = [x.score for x in g.unknown_accepted]
    assert len(rejected) == min(5, g.counts["known_rejected"])
    assert rejected == sorted(rejected, reverse=True) and all(s > t for s in rejected)
    assert accepted == sorted(accepted) and all(s <= t for s in accepted)
    if rejected:  # the largest known scores of all, not any five above the threshold
        assert rejected[0] == k.max()
    assert accepted[0] == u.min()
    labels = ev.known.labels.numpy()
    for x in g.known_rejected:
        assert x.score == k[x.index] and x.true == fitted.class_names_[labels[x.index]]
        assert x.predicted == "unknown"
    for x in g.unknown_accepted:
        assert (
            x.true == "noise" and x.predicted == fitted.class_names_[ev.unknown_outputs.predictions[x.index]]
        )
        np.testing.assert_array_equal(x.image, ev.unknown.images[x.index].numpy())

    page = render_gallery(g)
    assert page.count("<img ") == len(rejected) + len(accepted)
    assert f"Unknown images accepted: {g.counts['unknown_accepted']} of 120" in page
    html = render_report(METRICS, {}, gallery=g)
    assert "Most confident mistakes" in html and html.count("data:image/png;base64,") == page.count("<img ")


def test_thumbnails_are_enlarged_pngs():
    gray = decode(thumbnail_uri(np.full((1, 28, 28), 200, np.uint8)))
    assert gray.size == (56, 56) and gray.mode == "L"
    colour = np.zeros((3, 32, 32), np.uint8)
    colour[0] = 255
    rgb = decode(thumbnail_uri(colour))
    assert rgb.size == (64, 64) and rgb.getpixel((5, 5)) == (255, 0, 0)
