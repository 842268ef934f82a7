"""Closed-set accuracy per CPU-minute of a `colour_cnn` variant on CIFAR-10 (10 classes).

Trains with `colour_cnn`'s default recipe on 45,000 images of `cifar10:train` and prints,
after each epoch, the cumulative training time and the test accuracy on the 10,000 test
PNGs, of each image alone and averaged with its mirror image. This is how the default
network was chosen (BENCHMARKS.md, "Choosing the colour backbone again"); no unknown data
is read. Examples::

    python benchmarks/colour_backbone.py                                 # the default network
    python benchmarks/colour_backbone.py --stem space_to_depth           # the earlier one
    python benchmarks/colour_backbone.py --stem patch --widths 32 96 192 --epochs 6
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from osrkit.data.catalog import load_dataset
from osrkit.data.spec import CIFAR10_SPEC
from osrkit.models import create_backbone
from osrkit.protocols.cifar import classification_accuracy, training_flops
from osrkit.training.config import TrainConfig
from osrkit.training.loop import stratified_split, train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stem", default="patch", choices=["patch", "space_to_depth"])
    parser.add_argument("--widths", type=int, nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--max-train", type=int, default=None, help="subsample (quick checks only)")
    args = parser.parse_args()

    train = load_dataset("cifar10:train", args.data_root, input_spec=CIFAR10_SPEC)
    train = train.take(args.max_train, seed=0)
    test = load_dataset("cifar10:test", args.data_root, input_spec=CIFAR10_SPEC)
    cfg = TrainConfig.for_backbone("colour_cnn", epochs=args.epochs)
    tr, va = stratified_split(train.labels, cfg.val_size, cfg.seed)
    torch.manual_seed(cfg.seed)
    options = {"stem": args.stem, "flip_tta": False} | ({"widths": args.widths} if args.widths else {})
    net = create_backbone("colour_cnn", CIFAR10_SPEC, len(train.class_names), **options)
    flops = training_flops(net, CIFAR10_SPEC.shape, len(train.class_names))
    print(f"colour_cnn {net.backbone_options}: {flops / 1e6:.1f} MFLOP per training image")
    print("| epoch | training s | test acc | mirror-averaged |")
    print("|---:|---:|---:|---:|")
    clock = {"train_s": 0.0, "since": 0.0}

    def on_epoch(epoch: int, model: torch.nn.Module) -> None:
        clock["train_s"] += time.perf_counter() - clock["since"]
        both = copy.deepcopy(model)
        both.flip_tta = True
        plain, mirrored = (classification_accuracy(m, test.images, test.labels, cfg) for m in (model, both))
        print(f"| {epoch} | {clock['train_s']:.0f} | {plain:.4f} | {mirrored:.4f} |", flush=True)
        clock["since"] = time.perf_counter()

    clock["since"] = time.perf_counter()
    train_classifier(
        net, train.images[tr], train.labels[tr], train.images[va], train.labels[va], cfg, on_epoch=on_epoch
    )


if __name__ == "__main__":
    main()
