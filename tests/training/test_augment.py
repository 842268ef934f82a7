import pytest
import torch

from osrkit.errors import ConfigError
from osrkit.training.augment import Augmentation


def batch(n=16):
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 4:10, 2:8] = 1.0  # off-centre block: flips and rotations move it
    return x


def test_off_is_identity():
    x = batch()
    assert Augmentation(0, 0)(x) is x


def test_flip_always_mirrors():
    x = batch()
    torch.testing.assert_close(Augmentation(0, 1.0)(x), x.flip(-1))


def test_flip_probability_is_respected():
    x = batch(4000)
    flipped = (Augmentation(0, 0.3)(x, torch.Generator().manual_seed(0)) != x).flatten(1).any(1)
    assert abs(flipped.float().mean().item() - 0.3) < 0.03


def test_rotation_changes_images_but_keeps_mass_and_shape():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    y = Augmentation(30, 0)(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert not torch.equal(x, y)
    torch.testing.assert_close(y.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.08, atol=0)


def test_rotation_angle_is_bounded():
    # a tiny maximum angle barely moves a centred block
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 12:16, 12:16] = 1.0
    y = Augmentation(0.5, 0)(x, torch.Generator().manual_seed(0))
    assert (y - x).abs().max() < 0.1


def test_seeded_generator_is_reproducible():
    x = batch()
    a = Augmentation(20, 0.5)(x, torch.Generator().manual_seed(3))
    b = Augmentation(20, 0.5)(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("rot,flip", [(-1, 0), (181, 0), (0, -0.1), (0, 1.5)])
def test_bad_values(rot, flip):
    with pytest.raises(ConfigError):
        Augmentation(rot, flip)


def test_crop_shifts_each_image_by_at_most_the_padding():
    x = torch.zeros(64, 3, 20, 24)
    x[:, :, 8:12, 10:14] = torch.tensor([0.2, 0.5, 1.0]).view(1, 3, 1, 1)  # a colour block
    y = Augmentation(0, 0, crop_padding=3)(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    torch.testing.assert_close(y.sum((2, 3)), x.sum((2, 3)))  # the block stays whole, colours kept
    shifts = set()
    for img in y:
        rows, cols = img[2].nonzero(as_tuple=True)
        dy, dx = int(rows.min()) - 8, int(cols.min()) - 10
        assert abs(dy) <= 3 and abs(dx) <= 3
        torch.testing.assert_close(img, x[0].roll((dy, dx), (1, 2)))  # a pure shift
        shifts.add((dy, dx))
    assert len(shifts) > 10  # random per image


@pytest.mark.parametrize("padding", [-1, 65, 1.5])
def test_bad_crop_padding(padding):
    with pytest.raises(ConfigError, match="crop padding"):
        Augmentation(0, 0, crop_padding=padding)


def test_alternating_flips_invert_every_other_epoch_and_flip_half():
    from osrkit.training.augment import alternating_flips

    rows = torch.arange(10000)
    even, odd = alternating_flips(rows, 0), alternating_flips(rows, 1)
    assert torch.equal(even, ~odd) and torch.equal(alternating_flips(rows, 2), even)
    assert abs(even.float().mean().item() - 0.5) < 0.02
    x = batch(8)
    aug = Augmentation(0, 0.5, alternate_flip=True)
    out = aug(x, torch.Generator().manual_seed(0), rows=torch.arange(8), epoch=1)
    flipped = (out != x).flatten(1).any(1)
    assert torch.equal(flipped, alternating_flips(torch.arange(8), 1))


def test_reflect_crop_fills_with_the_image_not_zeros():
    x = torch.arange(16.0).view(1, 1, 4, 4) + 1  # no zero anywhere
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        out = Augmentation(0, 0, crop_padding=2, crop_mode="reflect")(x, gen)
        assert (out > 0).all()
    zeros = Augmentation(0, 0, crop_padding=2)(x.repeat(50, 1, 1, 1), gen)
    assert (zeros == 0).any()
    with pytest.raises(ConfigError, match="crop mode must be one of zeros, reflect"):
        Augmentation(0, 0, crop_mode="wrap")
