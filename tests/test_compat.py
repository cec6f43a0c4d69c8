"""The RecBole 1.2.1 compatibility fixes stay in force (numpy 1.26 and 2.x, pandas 2 and 3, PyTorch >= 2.6,
no ray, no deprecation noise), and BERT4Rec's faster loss stays RecBole's."""

import importlib.util
import logging
import os
import re
import subprocess
import sys
import textwrap
import types
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.dataset.dataset import Dataset
from recbole.data.interaction import Interaction
from recbole.utils import FeatureType, get_trainer, init_seed

from recbole_diffusion import compat
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import run
from conftest import TINY


def test_numpy_aliases_that_recbole_config_reads_exist():
    for name in ("float_", "complex_", "unicode_"):
        assert hasattr(np, name)
    Config(model="Pop", dataset="ml-100k", config_dict={"state": "WARNING"})  # calls compatibility_settings
    assert np.float is np.float64


def test_apply_is_idempotent_and_leaves_torch_load_and_anomaly_mode_alone():
    import recbole.trainer.trainer as trainer_module
    from recbole.utils import get_model

    compat.apply()
    compat.apply()
    assert trainer_module.torch is torch  # checkpoints need no trusting torch.load
    get_model("SASRec")  # imports every RecBole sequential model, sine.py included
    assert importlib.util.find_spec("recbole.model.sequential_recommender.sine") is not None
    assert "recbole.model.sequential_recommender.sine" in sys.modules
    assert not torch.is_anomaly_enabled()


def test_recboles_own_trainer_reads_our_checkpoints_under_weights_only(data_root, in_tmp_cwd):
    """RecBole's unpatched ``Trainer.evaluate`` (``torch.load`` with PyTorch's default) reads the best checkpoint
    this package writes, and gives the runner's test metrics."""
    settings = {**TINY, "data_path": data_root, "epochs": 1}
    result = run("SASRec", "ml-100k-tiny", config_dict=settings)
    torch.load(result["saved_model_file"], weights_only=True)
    config, model_class = build_config("SASRec", "ml-100k-tiny", config_dict=settings)
    init_seed(config["seed"], True)
    _, _, test_data = data_preparation(config, create_dataset(config))
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model_class(config, test_data._dataset))
    metrics = trainer.evaluate(test_data, load_best_model=True, model_file=result["saved_model_file"])
    assert dict(metrics) == result["test_result"]


def test_fill_nan_fills_every_field_type_under_the_installed_pandas():
    """RecBole's chained ``fillna(inplace=True)`` warns under pandas 2.2 and fills nothing under pandas 3."""
    feat = pd.DataFrame({
        "genre": [1.0, np.nan, 2.0],
        "price": [1.0, np.nan, 3.0],
        "tags": pd.Series([np.array([1, 2]), np.nan, np.array([3])], dtype=object),
        "scores": pd.Series([np.array([0.5]), np.nan, np.nan], dtype=object),
    })
    dataset = types.SimpleNamespace(
        logger=logging.getLogger("test"), feat_name_list=["item_feat"], item_feat=feat,
        field2type={"genre": FeatureType.TOKEN, "price": FeatureType.FLOAT, "tags": FeatureType.TOKEN_SEQ,
                    "scores": FeatureType.FLOAT_SEQ},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Dataset._fill_nan(dataset)
    assert dataset.item_feat is feat
    assert feat["genre"].tolist() == [1.0, 0.0, 2.0]
    assert feat["price"].tolist() == [1.0, 2.0, 3.0]
    assert [list(x) for x in feat["tags"]] == [[1, 2], [], [3]] and feat["tags"][1].dtype == np.int64
    assert [list(x) for x in feat["scores"]] == [[0.5], [], []] and feat["scores"][2].dtype == np.float64


def _recbole_original_sort():
    """``Interaction.sort`` as RecBole ships it, from a fresh copy of its module (compat patched the loaded one)."""
    import recbole.data.interaction as interaction_module

    spec = importlib.util.spec_from_file_location("original_interaction", interaction_module.__file__)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    return fresh.Interaction.sort


def test_interaction_sort_matches_recboles_and_does_not_warn():
    """Same order as RecBole's ``Interaction.sort``; its descending branch fails on today's numpy / torch
    (a negative-stride array), so that one is compared with the stable order it means."""
    original_sort = _recbole_original_sort()
    user, time = [2, 1, 2, 1, 3, 1], [5.0, 7.0, 5.0, 1.0, 2.0, 7.0]
    data = {"user": torch.tensor(user), "time": torch.tensor(time), "row": torch.arange(6),
            "seq": torch.tensor([[3, 0], [1, 0], [3, 9], [2, 0], [0, 0], [1, 1]])}

    def sorted_rows(by, ascending):
        interaction = Interaction(dict(data))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            interaction.sort(by, ascending)
        return interaction["row"].tolist()

    for by in ("user", ["user", "time"], "seq", ["seq", "user"]):
        theirs = Interaction(dict(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            original_sort(theirs, by, True)
        assert sorted_rows(by, True) == theirs["row"].tolist(), by
    assert sorted_rows("time", False) == sorted(range(6), key=lambda i: (time[i], i))[::-1]
    assert sorted_rows(["user", "time"], [True, False]) == sorted(range(6), key=lambda i: (user[i], -time[i], -i))
    for by, ascending, error in [("nope", True, ValueError), (1, True, TypeError), ("user", "yes", TypeError),
                                 (["user", "time"], [True, False, True], ValueError)]:
        with pytest.raises(error):
            Interaction(dict(data)).sort(by, ascending)


def test_recbole_trainer_uses_torch_amp_without_deprecation():
    """RecBole's trainer makes a ``torch.cuda.amp.GradScaler`` every epoch (deprecated since PyTorch 2.4)."""
    import recbole.trainer.trainer as trainer_module

    compat.apply()
    amp = trainer_module.amp
    compat.apply()
    assert trainer_module.amp is amp
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaler = amp.GradScaler(enabled=False)
        with amp.autocast(enabled=False):
            pass
    assert isinstance(scaler, torch.amp.GradScaler) and not scaler.is_enabled()
    assert scaler._device == "cuda"


def test_running_a_model_never_imports_ray_nor_warns(data_root, tmp_path):
    """recbole.quick_start imports ray (pkg_resources, numpy < 2); our path must not need it. And a run shows
    none of RecBole's deprecation noise (pandas, torch.cuda.amp) on the console (Python's default filters)."""
    script = textwrap.dedent(f"""
        import sys
        from recbole_diffusion.quick_start.quick_start import run
        run("DiffuRec", "ml-100k-tiny", config_dict={dict(TINY, data_path=data_root, epochs=1)!r}, saved=False)
        assert "ray" not in sys.modules, "ray was imported"
        assert "recbole.quick_start" not in sys.modules
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
    assert not re.search(r"\w*Warning\b", done.stderr), done.stderr[-2000:]


def test_reported_numpy_version_is_covered():
    """CI runs this file under numpy 1.26 and 2.x; each run must be on one of those lines."""
    major, minor = (int(p) for p in np.__version__.split(".")[:2])
    assert (major, minor) >= (1, 26)
    assert os.environ.get("EXPECT_NUMPY_MAJOR", str(major)) == str(major)



def test_recboles_graph_models_can_fill_a_dok_matrix():
    """RecBole's LightGCN (and NGCF, GCMC, NCL, SpectralCF, ...) call dok_matrix._update, gone since scipy 1.12."""
    import numpy as np
    import scipy.sparse as sp

    compat.apply()
    matrix = sp.dok_matrix((3, 4), dtype=np.float32)
    matrix._update({(np.int32(0), np.int32(1)): 1, (2, 3): 1})
    assert matrix.tocsr().toarray().tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]


def test_a_folder_another_process_created_after_the_check_is_no_error(tmp_path, monkeypatch):
    import recbole.data.utils
    import recbole.trainer.trainer
    import recbole.utils.logger

    folder = tmp_path / "saved"
    folder.mkdir()
    monkeypatch.setattr(os.path, "exists", lambda path: False)  # the other rank creates it right after the check
    for module in (recbole.trainer.trainer, recbole.data.utils, recbole.utils.logger):
        module.ensure_dir(str(folder))  # RecBole's raised FileExistsError here
    monkeypatch.undo()
    recbole.trainer.trainer.ensure_dir(str(tmp_path / "new" / "nested"))
    assert (tmp_path / "new" / "nested").is_dir()


def test_a_message_logged_with_prints_convention_is_joined_not_a_logging_error(capsys):
    """RaCT's ``logger.info("Load pretrained model from", path)``: logging printed "--- Logging error ---"."""
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        root.warning("Load pretrained model from", "saved/RaCT.pth")
        root.warning("%d%% of %s", 5, "items")  # a message with placeholders is formatted as before
    finally:
        root.removeHandler(handler)
    assert capsys.readouterr().err.splitlines() == ["Load pretrained model from saved/RaCT.pth", "5% of items"]


def test_a_given_data_path_holds_ml100k_too(tmp_path):
    """RecBole points ml-100k at its own copy whatever data_path says; a given data_path is followed."""
    import recbole

    from recbole_diffusion.config.configurator import build_config
    from recbole_diffusion.data.slices import ML100K_INTER, write_user_slice

    folder = write_user_slice(ML100K_INTER, "ml-100k", 5, str(tmp_path))
    config, _ = build_config("Pop", "ml-100k", config_dict={"data_path": folder})
    assert config["data_path"] == os.path.join(folder, "ml-100k")
    default, _ = build_config("Pop", "ml-100k")
    assert os.path.realpath(default["data_path"]).startswith(os.path.realpath(os.path.dirname(recbole.__file__)))


@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
def test_bert4rec_loss_over_real_mask_slots_is_recboles(loss_type, data_root):
    from recbole.model.sequential_recommender.bert4rec import BERT4Rec

    compat.apply()
    config, _ = build_config("BERT4Rec", "ml-100k-small", config_dict={
        **TINY, "data_path": data_root, "loss_type": loss_type, "mask_ratio": 0.6, "train_batch_size": 256,
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1} if loss_type == "BPR" else None})
    init_seed(config["seed"], True)
    train_data = data_preparation(config, create_dataset(config))[0]
    batch = next(iter(train_data))
    model = BERT4Rec(config, train_data._dataset)
    mask_index = batch[model.MASK_INDEX]
    assert 0 < int((mask_index > 0).sum()) < mask_index.numel()  # rows with real and with padded slots

    def loss_and_gradients(calculate_loss):
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout draws for both
        loss = calculate_loss(model, batch)
        loss.backward()
        return loss.detach(), [parameter.grad.clone() for parameter in model.parameters()]

    ours, ours_gradients = loss_and_gradients(BERT4Rec.calculate_loss)
    recboles, recboles_gradients = loss_and_gradients(BERT4Rec.calculate_loss.recbole)
    assert torch.isfinite(ours) and torch.allclose(ours, recboles, rtol=1e-5, atol=1e-7)
    for gradient, expected in zip(ours_gradients, recboles_gradients):
        assert torch.allclose(gradient, expected, rtol=1e-4, atol=1e-7)
