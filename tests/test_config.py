"""Trial configs: defaults, dotted and nested keys, and one clear refusal per bad value."""
import pytest

from trainables.config import ConfigError, TrialConfig, all_keys


def test_defaults_follow_app_d_and_round_trip():
    cfg = TrialConfig.from_dict({})
    assert (cfg.train.batch_size, cfg.train.lr, cfg.model.latent_dim) == (100, 1e-3, 128)
    assert cfg.dataset.split == (0.6, 0.2, 0.2) and cfg.eval.max_points == 10_000
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    assert set(cfg.flat()) == set(all_keys())


def test_dotted_and_nested_keys_mean_the_same_and_ids_are_stable():
    a = TrialConfig.from_dict({"noise.beta": 2, "noise": {"sigma2": 0.02}})
    b = TrialConfig.from_dict({"noise": {"beta": 2.0, "sigma2": 0.02}})
    assert a == b and a.trial_id() == b.trial_id()
    assert a.trial_id() != TrialConfig.from_dict({"noise.beta": 3}).trial_id()


@pytest.mark.parametrize("raw,key,allowed", [
    ({"noise.sigma2": 0}, "noise.sigma2", "> 0"),
    ({"noise.sigma2": -1e-3}, "noise.sigma2", "> 0"),
    ({"noise.beta": -1}, "noise.beta", ">= 0"),
    ({"train.epochs": 0}, "train.epochs", "> 0"),
    ({"model.latent_dim": 0}, "model.latent_dim", "> 0"),
    ({"noise.kind": "laplace"}, "noise.kind", "specified, learned, mog"),
    ({"dataset.name": "cifar"}, "dataset.name", "mnist, intrinsic"),
    ({"dataset.name": "mnist"}, "dataset.path", "required"),
    ({"noise.betta": 1}, "noise.betta", "unknown key"),
    ({"optimiser.lr": 1}, "optimiser", "unknown section"),
    ({"train.epochs": "ten"}, "train.epochs", "an integer"),
    ({"train.epochs": 2.5}, "train.epochs", "an integer"),
    ({"noise.beta": True}, "noise.beta", "a number"),
    ({"dataset.split": [0.5, 0.5]}, "dataset.split", "three fractions"),
    ({"eval.traversals": "yes"}, "eval.traversals", "true or false"),
])
def test_bad_values_name_the_key_and_what_is_allowed(raw, key, allowed):
    with pytest.raises(ConfigError) as e:
        TrialConfig.from_dict(raw)
    assert e.value.key == key and allowed in str(e.value) and "\n" not in str(e.value)
