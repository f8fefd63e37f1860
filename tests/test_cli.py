"""The command line: bad input refused before Ray starts, exit 2, one line, nothing written."""
import subprocess
import sys

import pytest

from study import presets
from study.cli import main
from study.spec import parse


def _refused(capsys, tmp_path, argv, needle):
    import ray
    out = tmp_path / "out"
    if not any(a.startswith("storage=") for a in argv):
        argv = [*argv, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("vaestudy: error: ") and needle in err, err
    assert not out.exists() or not any(out.rglob("*")), "something was written"
    assert not ray.is_initialized()


BAD_SETS = [
    (["--set", "noise.sigma2=0"], "noise.sigma2: got 0"),
    (["--set", "noise.sigma2=[0.01, -0.1]"], "noise.sigma2: got -0.1"),
    (["--set", "noise.beta=-1"], "noise.beta: got -1"),
    (["--set", "train.epochs=0"], "train.epochs: got 0"),
    (["--set", "model.latent_dim=0"], "model.latent_dim"),
    (["--set", "noise.sigma2=[]"], "empty grid"),
    (["--set", "noise.kind=laplace"], "noise.kind"),
    (["--set", "dataset.name=cifar"], "dataset.name"),
    (["--set", "name=a/b"], "name: got 'a/b'"),
    (["--set", "name=.."], "name: got '..'"),
    (["--set", "trian.epochs=3"], "trian: unknown key"),
    (["--set", "train.epoch=3"], "train.epoch: unknown key"),
    (["--set", "train.epochs=three"], "train.epochs: got 'three'; allowed: an integer"),
    (["--set", "seeds=[]"], "seeds"),
    (["--set", "resources.gpu=-1"], "resources.gpu"),
    (["--set", "storage=ftp://host/x"], "unknown scheme 'ftp'"),
    (["--set", "dataset.name=mnist", "--set", "dataset.path=/nonexistent/mnist"], "/nonexistent/mnist"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--set", "noise.sigma2={loguniform: [0.001, 0.1]}"], "needs `search:`"),
]


@pytest.mark.parametrize("argv,needle", BAD_SETS, ids=[b[1][:30] for b in BAD_SETS])
def test_bad_study_input_is_refused_before_anything_starts(capsys, tmp_path, argv, needle):
    _refused(capsys, tmp_path, ["run", *argv], needle)


@pytest.mark.parametrize("text,needle", [
    ("name: [unclosed", "invalid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("noise: 3\n", "noise: got 3"),
])
def test_bad_spec_files_are_refused(capsys, tmp_path, text, needle):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    _refused(capsys, tmp_path, ["run", str(spec)], needle)


def test_bad_trial_config_for_train_is_refused(capsys, tmp_path):
    _refused(capsys, tmp_path, ["train", "--set", "noise.var_floor=0"], "noise.var_floor")


def test_truncated_idx_file_is_refused_naming_it(capsys, tmp_path):
    import gzip
    d = tmp_path / "mnist"
    d.mkdir()
    import struct
    header = struct.pack(">IIII", 2051, 100, 28, 28)
    gzip.open(d / "t10k-images-idx3-ubyte.gz", "wb").write(header + b"\x00" * 500)
    _refused(capsys, tmp_path, ["run", "--preset", "paper-mnist-specified", "--set",
                                f"dataset.path={d}"], "truncated IDX")


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_is_valid_and_states_its_size(name):
    from study.search import parse_search
    spec = parse(presets.load(name))
    if spec.search is not None:
        assert parse_search(spec).num_samples == spec.num_samples
    assert spec.size_line().endswith("trials") or spec.size_line().endswith("trial")
    assert spec.description


def test_paper_presets_hold_the_papers_grids():
    spec = parse(presets.load("paper-mnist-specified"))
    s2 = spec.axes()["noise.sigma2"]
    assert len(s2) == 23 and s2[0] == 0.0005 and s2[-1] == 0.11
    assert spec.size_line() == "23 sigma2 x 1 seed = 23 trials"
    betas = parse(presets.load("paper-mnist-learned")).axes()["noise.beta"]
    assert betas == [0.1, 0.5, 1, 2, 4, 6, 8, 10, 12, 14, 16, 18]


def test_train_runs_one_trial_and_prints_where_results_are(tmp_path):
    r = subprocess.run([sys.executable, "-m", "study.cli", "train", "--out", str(tmp_path),
                        "--set", "dataset.n=300", "--set", "model.latent_dim=3",
                        "--set", "train.epochs=1", "--set", "eval.traversals=false"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "completed; results in" in r.stdout and str(tmp_path) in r.stdout
    assert list((tmp_path / "train" / "trials").rglob("*.parquet"))


@pytest.mark.parametrize("case,needle", [
    ("npz-no-x", "no array named 'x'"),
    ("npz-nan", "NaN"),
    ("mixed-images", "mixed sizes"),
    ("empty-folder", "no images"),
])
def test_bad_data_files_are_refused_before_anything_starts(capsys, tmp_path, case, needle):
    import numpy as np
    from PIL import Image
    if case.startswith("npz"):
        path = tmp_path / "d.npz"
        arrays = {"y": np.zeros((4, 8, 8))} if case == "npz-no-x" else \
            {"x": np.full((4, 8, 8), np.nan)}
        np.savez(path, **arrays)
        sets = ["dataset.name=npz", f"dataset.path={path}"]
    else:
        path = tmp_path / "imgs"
        path.mkdir()
        if case == "mixed-images":
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(path / "a.png")
            Image.fromarray(np.zeros((9, 8), np.uint8)).save(path / "b.png")
        sets = ["dataset.name=image_folder", f"dataset.path={path}"]
    argv = ["run"] + [x for s in sets for x in ("--set", s)]
    _refused(capsys, tmp_path, argv, str(path))
    _refused(capsys, tmp_path, argv, needle)


def test_exponent_notation_in_a_spec_file_is_a_number(tmp_path):
    from study.inputs import load_yaml
    spec = tmp_path / "s.yaml"
    spec.write_text("train: {lr: 1e-4}\nnoise: {sigma2: [5e-4, 1e-3]}\n")
    s = parse(load_yaml(spec))
    assert s.trial["train.lr"] == 1e-4 and s.axes()["noise.sigma2"] == [5e-4, 1e-3]


@pytest.mark.parametrize("argv, needle", [
    (["--threshold", "-1"], "--threshold: got -1.0"),
    (["--higgins", "slow"], "--higgins: got 'slow'; allowed: fast, published, none"),
    ([], "no trials/ folder"),
])
def test_report_options_are_checked(capsys, tmp_path, argv, needle):
    assert main(["report", str(tmp_path / "nostudy"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err
    assert not (tmp_path / "nostudy").exists()
