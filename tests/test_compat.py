"""The RecBole 1.2.1 compatibility fixes stay in force (numpy 1.26 and 2.x, PyTorch >= 2.6, no ray)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_trainer, init_seed

from recbole_diffusion import compat
from recbole_diffusion.quick_start import build_config, run
from conftest import FAST


def test_numpy_aliases_that_recbole_config_reads_exist():
    for name in ("float_", "complex_", "unicode_"):
        assert hasattr(np, name)
    Config(model="Pop", dataset="ml-100k", config_dict={"state": "WARNING"})  # calls compatibility_settings
    assert np.float is np.float64


def test_apply_is_idempotent_and_only_recbole_trainer_sees_the_trusting_load():
    import recbole.trainer.trainer as trainer_module

    compat.apply()
    compat.apply()
    assert trainer_module.torch.load.keywords == {"weights_only": False}
    assert trainer_module.torch.nn is torch.nn
    assert torch.load is not trainer_module.torch.load  # the rest of the process keeps PyTorch's default


def test_distributed_mode_is_refused_with_a_clear_message(data_root):
    with pytest.raises(ValueError, match="nproc=2: .*NCCL"):
        build_config("DiffuRec", "ml-100k-small", config_dict={**FAST, "data_path": data_root, "nproc": 2})


def test_best_model_reload_and_resume_under_weights_only_default(data_root, in_tmp_cwd):
    """PyTorch >= 2.6 refuses RecBole's checkpoints by default; both RecBole paths that load them work."""
    settings = {**FAST, "data_path": data_root, "epochs": 1}
    result = run("SASRec", "ml-100k-small", config_dict=settings)
    checkpoint = result["saved_model_file"]
    if tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 6):
        with pytest.raises(Exception, match="weights_only"):
            torch.load(checkpoint)

    config, model_class = build_config("SASRec", "ml-100k-small", config_dict={**settings, "epochs": 2})
    init_seed(config["seed"], True)
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model_class(config, train_data._dataset))
    trainer.resume_checkpoint(checkpoint)
    assert trainer.start_epoch == 1
    trainer.fit(train_data, valid_data, saved=True)
    assert trainer.evaluate(test_data, load_best_model=True)["ndcg@10"] >= 0


def test_running_a_model_never_imports_ray(data_root, tmp_path):
    """recbole.quick_start imports ray (pkg_resources, numpy < 2); our path must not need it."""
    script = textwrap.dedent(f"""
        import sys
        from recbole_diffusion.quick_start import run
        run("DiffuRec", "ml-100k-small", config_dict={dict(FAST, data_path=data_root, epochs=1)!r}, saved=False)
        assert "ray" not in sys.modules, "ray was imported"
        assert "recbole.quick_start" not in sys.modules
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_reported_numpy_version_is_covered():
    """CI runs this file under numpy 1.26 and 2.x; each run must be on one of those lines."""
    major, minor = (int(p) for p in np.__version__.split(".")[:2])
    assert (major, minor) >= (1, 26)
    assert os.environ.get("EXPECT_NUMPY_MAJOR", str(major)) == str(major)
