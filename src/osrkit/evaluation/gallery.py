"""The decision scorer's most confident mistakes, for the report: the known test images it
rejects with the largest scores and the unknown test images it accepts with the smallest,
each a thumbnail (a PNG data URI, so the page stays offline) with its score."""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from osrkit.data.transforms import chw_to_pil
from osrkit.evaluation.evaluate import Evaluation
from osrkit.files.atomic import png_data_uri
from osrkit.scorers.calibration import rejects

THUMBNAIL_SIDE = 64


@dataclass
class Mistake:
    """One test image the decision got wrong."""

    index: int  # position in its test set (after subsampling)
    image: np.ndarray  # (C, H, W) uint8, the model's input
    score: float  # the decision scorer's score (larger = more likely unknown)
    true: str  # class name, or the unknown set's name
    predicted: str  # class name, or "unknown"


@dataclass
class Gallery:
    """Both kinds of mistakes of ``scorer`` at ``threshold``, most confident first, with
    how many there were in all."""

    scorer: str
    threshold: float
    known_rejected: list[Mistake] = field(default_factory=list)
    unknown_accepted: list[Mistake] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def confident_mistakes(
    ev: Evaluation, scorer: str, threshold: float, class_names: list[str], n: int = 8
) -> Gallery:
    """The ``n`` known images ``scorer`` rejects with the largest scores, and the ``n``
    unknown images it accepts with the smallest (ties keep the test-set order)."""
    k, u = ev.known_scores[scorer], ev.unknown_scores[scorer]
    rejected = np.flatnonzero(rejects(k, threshold))  # a NaN score is rejected too
    accepted = np.flatnonzero(~rejects(u, threshold))
    rejected = rejected[np.argsort(-k[rejected], kind="stable")]
    accepted = accepted[np.argsort(u[accepted], kind="stable")]
    labels = ev.known.labels.numpy()
    u_pred = ev.unknown_outputs.predictions
    known_images, unknown_images = ev.known.images.numpy(), ev.unknown.images.numpy()
    return Gallery(
        scorer,
        float(threshold),
        [
            Mistake(int(i), known_images[i], float(k[i]), class_names[labels[i]], "unknown")
            for i in rejected[:n]
        ],
        [
            Mistake(int(i), unknown_images[i], float(u[i]), ev.unknown.name, class_names[u_pred[i]])
            for i in accepted[:n]
        ],
        {
            "known": len(k),
            "known_rejected": len(rejected),
            "unknown": len(u),
            "unknown_accepted": len(accepted),
        },
    )


def thumbnail_uri(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> str:
    """A ``(C, H, W)`` uint8 image (C = 1 or 3) as a PNG data URI, enlarged to ``side``
    pixels on its longer side with nearest-neighbour pixels."""
    pil = chw_to_pil(image)
    scale = max(1, side // max(pil.size))
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return png_data_uri(buf.getvalue())


def _cards(mistakes: list[Mistake], known: bool) -> str:
    e = html.escape
    cards = []
    for m in mistakes:
        what = f"{e(m.true)}, rejected" if known else f"{e(m.true)}, taken for {e(m.predicted)}"
        cards.append(
            f'<figure class="mistake"><img alt="{e(m.true)} #{m.index}" src="{thumbnail_uri(m.image)}">'
            f"<figcaption>#{m.index}: {what}<br>score <b>{m.score:.4g}</b></figcaption></figure>"
        )
    return f'<div class="gallery">{"".join(cards)}</div>' if cards else "<p>None.</p>"


def render_gallery(gallery: Gallery) -> str:
    """The gallery as an HTML section."""
    c, e = gallery.counts, html.escape
    return (
        f"<h2>Most confident mistakes (<code>{e(gallery.scorer)}</code> scorer)</h2>"
        f"<p>An image is rejected as unknown when its score is above the threshold "
        f"<b>{gallery.threshold:.4g}</b>.</p>"
        f"<h3>Known images rejected: {c['known_rejected']} of {c['known']}, largest scores first</h3>"
        f"{_cards(gallery.known_rejected, known=True)}"
        f"<h3>Unknown images accepted: {c['unknown_accepted']} of {c['unknown']}, smallest scores first</h3>"
        f"{_cards(gallery.unknown_accepted, known=False)}"
    )
