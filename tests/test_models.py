"""App. D architectures: picked from the input shape, mirrored exactly, odd sizes included."""
import pytest
import torch
from torch import nn

from trainables import models
from trainables.config import TrialConfig
from trainables.vae import VAE


@pytest.mark.parametrize("shape,arch,channels", [
    ((1, 28, 28), "conv2", [32, 32]),                 # MNIST
    ((3, 64, 64), "conv4", [32, 32, 64, 64]),         # CelebA
    ((1, 192, 168), "conv4", [32, 32, 64, 64]),       # Extended Yale B: 168 -> 84 -> 42 -> 21 -> 10
])
def test_architecture_follows_app_d_and_decodes_to_the_input_shape(shape, arch, channels):
    assert models.pick_arch("auto", shape) == arch
    enc, dec = models.build("auto", shape, 16)
    convs = [m for m in enc.conv if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == channels
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert enc.fc[0].out_features == 256 and enc.latent.out_features == 2 * 16
    x = torch.rand(2, *shape)
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (2, 16)
    xhat = dec(mu)
    assert xhat.shape == x.shape and 0 <= xhat.min() and xhat.max() <= 1


def test_named_architecture_overrides_the_shape_and_too_small_images_are_refused():
    assert models.pick_arch("mnist", (3, 64, 64)) == "conv2"
    with pytest.raises(ValueError, match="at least 16 pixels"):
        models.build("conv4", (1, 8, 8), 4)


def test_mog_vae_on_rgb_64_takes_a_finite_step():
    cfg = TrialConfig.from_dict({"noise.kind": "mog", "noise.k": 2, "model.latent_dim": 8})
    torch.manual_seed(0)
    vae = VAE((3, 64, 64), cfg)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-4)
    x = torch.rand(4, 3, 64, 64)
    loss, xhat = vae.loss(x, torch.randn(4, 8))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and xhat.shape == x.shape
    assert sum(vae.noise.summary()["pi"]) == pytest.approx(1.0)
