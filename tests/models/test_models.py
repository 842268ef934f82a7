import torch

from osrkit.models import AutoencoderConfig, Classifier, ClassifierConfig, ConvAutoencoder


def test_classifier_shapes_and_features():
    m = Classifier(ClassifierConfig(num_classes=7, feature_dim=32)).eval()
    x = torch.rand(5, 1, 28, 28)
    logits, feats = m.forward_with_features(x)
    assert logits.shape == (5, 7) and feats.shape == (5, 32)
    torch.testing.assert_close(m(x), logits)
    torch.testing.assert_close(m.features(x), feats)
    assert (feats >= 0).all()  # ReLU features


def test_autoencoder_shapes_range_and_error():
    ae = ConvAutoencoder(AutoencoderConfig(latent_dim=8)).eval()
    x = torch.rand(3, 1, 28, 28)
    y = ae(x)
    assert y.shape == x.shape and (y >= 0).all() and (y <= 1).all()
    err = ae.reconstruction_error(x)
    assert err.shape == (3,)
    torch.testing.assert_close(err, ((y - x) ** 2).mean((1, 2, 3)))


def test_configs_serialise():
    assert ClassifierConfig().to_dict()["channels"] == [16, 32, 64]
    assert AutoencoderConfig().to_dict()["latent_dim"] == 32
