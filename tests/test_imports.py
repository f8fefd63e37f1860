"""The driver's import path: no analysis, no matplotlib, no import cycle in study/."""
import subprocess
import sys


def test_driver_modules_import_without_the_analysis_and_each_alone():
    code = ("import sys, importlib\n"
            "for m in ('study.optuna_run', 'study.runner', 'study.tuner', 'study.cli',"
            " 'study.trainable'):\n"
            "    importlib.import_module(m)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'analysis', 'matplotlib'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_ray_patches_check_what_they_replace():
    from ray._private import services

    from study import raypatch

    raypatch.keep_loopback_address()
    assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"
