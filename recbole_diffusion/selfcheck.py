"""Check a machine in minutes: every model and variant trains, evaluates, reloads and samples on its device.

    python -m recbole_diffusion.selfcheck                  # CUDA when available, else the CPU
    python -m recbole_diffusion.selfcheck --device cpu
    python -m recbole_diffusion.selfcheck --device cuda --gpu_id 1

On the first ``--users`` users of the ml-100k copy inside the ``recbole`` package (tiny sizes: d 16, one block,
histories of 10), each model of this package and each variant, plus RecBole's SASRec, trains for one epoch
through the runner's pipeline and is evaluated on the test split. For every model it then checks that a fresh
model loaded from the checkpoint gives the very same test metrics, that the comparison's per-user ranks
reproduce RecBole's metrics, and, for the five diffusion models and SASRec, that a resumed run continues for a
second epoch from the first one's "last" checkpoint; for the five diffusion models, that every sampler runs
(all-step DDPM, strided DDPM, DDIM, a 2-run ensemble; SeqDiffRec's own evaluation is the one-step sampler). On
CUDA, one more epoch per diffusion model runs with RecBole's ``enable_amp``. One line per check (PASS / FAIL,
seconds); the exit status is 1 if any check failed.
The sizes are not the presets' (``-paper`` variants included): this checks code paths and devices, not quality.
"""

import importlib.util
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings

import torch

from recbole_diffusion.config.configurator import build_config, model_variants, resolve_model
from recbole_diffusion.data.slices import ML100K_INTER, ML100K_ITEM, write_user_slice
from recbole_diffusion.evaluation.metrics import METRICS, group_metrics
from recbole_diffusion.model import MODELS
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data, train_in_process
from recbole_diffusion.utils.collectives import cuda_indices
from recbole_diffusion.utils.command_line import entry_parser, parse_entry

DATASET = "ml-100k-selfcheck"
TINY = {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 2, "MAX_ITEM_LIST_LENGTH": 10,
        "epochs": 1, "train_batch_size": 256, "eval_batch_size": 256, "show_progress": False, "state": "WARNING"}
SAMPLERS = {"ddpm, all steps": {"sampler": "ddpm", "ddpm_steps": None},
            "ddpm, 4 strided steps": {"sampler": "ddpm", "ddpm_steps": 4},
            "ddim, 4 steps": {"sampler": "ddim", "ddim_steps": 4},
            "ensemble of 2 ddim runs": {"sampler": "ddim", "ddim_steps": 4, "n_ensemble": 2}}
RECBOLE_BASELINE = "SASRec"
# T = 200 instead of 2000 (1000 for SeqDiffRec) keeps the all-step DDPM evaluations short; every code path
# (DDPM over all steps, strided DDPM, DDIM with 20 strides, one step) is the same at any T. SeqDiffRec's one-step
# start needs x_{T-1} to be noise, which the linear schedule does not give at T = 200; cosine does, so it is used
# for every model or variant whose sampler is one step. Looked up by model or variant name, then by base model.
ONE_STEP_AT_200 = {"diffusion_steps": 200, "beta_schedule": "cosine"}
# PreferDiff-T reads the slice's copy of ml-100k's .item file (title, year, genres, as ml-100k's dataset YAML says);
# its table's width is the encoder's 384 whatever hidden_size is. It is left out, with a line saying so, when the
# text extra is not installed.
TEXT_VARIANTS = {"PreferDiff-T"}
TINY_PER_MODEL = {"DreamRec": {"diffusion_steps": 200}, "PreferDiff": {"diffusion_steps": 200},
                  "SeqDiffRec": ONE_STEP_AT_200, "PreferDiff-fast": ONE_STEP_AT_200,
                  "PreferDiff-T": {"diffusion_steps": 200, "item_text_fields": ["movie_title", "release_year", "class"],
                                   "item_text_template": "{movie_title} ({release_year}). Genres: {class}"}}


class Report:
    """Runs checks, prints one line per check and remembers failures."""

    def __init__(self, stream=None):
        self.stream, self.failures, self.lines = stream or sys.stdout, 0, []

    def check(self, name, function):
        """Run ``function()``; PASS unless it raises. Returns its result, or ``None`` after a failure."""
        start = time.perf_counter()
        try:
            result, status, detail = function(), "PASS", ""
        except Exception as error:  # noqa: BLE001  (every failure is reported; the other checks go on)
            result, status = None, "FAIL"
            detail = f"  {type(error).__name__}: {error}"
            self.failures += 1
            if os.environ.get("RECBOLE_DIFFUSION_SELFCHECK_TRACEBACK"):
                detail += "\n" + traceback.format_exc()
        line = f"{status}  {name:<62} {time.perf_counter() - start:6.1f}s{detail}"
        self.lines.append(line)
        print(line, file=self.stream, flush=True)
        return result


def _config(model, data_path, device_settings, extra=None):
    per_model = TINY_PER_MODEL.get(model, TINY_PER_MODEL.get(resolve_model(model)[1], {}))
    return build_config(model, DATASET, config_dict={**TINY, **per_model, **device_settings,
                                                      "data_path": data_path, **(extra or {})})


def _finite_metrics(result):
    bad = {key: value for key, value in result.items() if not (0.0 <= float(value) <= 1.0 and math.isfinite(value))}
    if bad:
        raise AssertionError(f"metrics outside [0, 1]: {bad}")
    return result


def train_and_test(model, data_path, device_settings, extra=None):
    """One epoch and a test pass through the runner's pipeline (resuming as the runner does, with ``resume`` in
    ``extra``); returns (config, data, trainer, result)."""
    config, model_class = _config(model, data_path, device_settings, extra)
    built = {}

    def keep_data(config, trainer, data, result):
        built["data"] = data
        return result

    trainer, result = train_in_process(config, model_class, saved=True, report=keep_data)
    data = built["data"]
    _finite_metrics(result["test_result"])
    if not trainer.learning_rates:
        raise AssertionError("no training epoch ran")
    return config, data, trainer, result


def evaluate_checkpoint(model, data_path, device_settings, checkpoint, extra=None):
    """Test metrics of a fresh model (built with ``extra`` settings) loaded from ``checkpoint``."""
    config, model_class = _config(model, data_path, device_settings, extra)
    data = prepare_data(config)
    trainer = build_trainer(config, model_class, data.train)
    return _finite_metrics(trainer.evaluate(data.test, load_best_model=True, model_file=checkpoint))


def check_reload(model, data_path, device_settings, trained):
    _, _, trainer, result = trained
    reloaded = evaluate_checkpoint(model, data_path, device_settings, trainer.saved_model_file)
    if dict(reloaded) != dict(result["test_result"]):
        raise AssertionError(f"reloaded checkpoint gave {dict(reloaded)}, training ended with "
                             f"{dict(result['test_result'])}")


def check_resume(model, data_path, device_settings, checkpoint_dir):
    """A second run with ``resume`` and one more epoch continues from the first run's "last" checkpoint (its random
    states and optimizer read onto this device) and trains that epoch."""
    _, _, trainer, _ = train_and_test(model, data_path, device_settings,
                                      {"checkpoint_dir": checkpoint_dir, "resume": True, "epochs": 2})
    if trainer.start_epoch != 1 or len(trainer.epoch_seconds) != 2:
        raise AssertionError(f"resumed at epoch {trainer.start_epoch} with {len(trainer.epoch_seconds)} epoch(s) "
                             "recorded; expected epoch 1 after the first run's one epoch")


def check_group_metrics(trained):
    _, data, trainer, result = trained
    groups = group_metrics(*trainer.collected_target_ranks(), data.item_counts, data.user_lengths)
    for metric in METRICS:
        if abs(groups["all users"][metric] - result["test_result"][metric]) > 1e-4:
            raise AssertionError(f"{metric}: per-user ranks give {groups['all users'][metric]:.5f}, RecBole "
                                 f"{result['test_result'][metric]:.5f}")
    sizes = groups["head items"]["users"] + groups["long-tail items"]["users"]
    if sizes != groups["all users"]["users"]:
        raise AssertionError("head and long-tail groups do not partition the users")


def device_settings(device, gpu_id):
    """RecBole's ``gpu_id`` for the device (empty = the CPU; ``device`` ``None``: CUDA when torch sees it). Without
    a scheduler's ``CUDA_VISIBLE_DEVICES`` it becomes the mask; under one it indexes into it
    (:func:`recbole_diffusion.utils.collectives.cuda_indices`).

    Call before anything asks torch about CUDA: once CUDA is initialised, a new ``CUDA_VISIBLE_DEVICES`` is
    ignored and RecBole's ``cuda`` would be whichever GPU came first.
    """
    if device == "cpu":
        return {"gpu_id": ""}
    try:
        cuda_indices(str(gpu_id))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if not torch.cuda.is_available():
        if device is None:
            return {"gpu_id": ""}
        raise SystemExit(f"error: --device cuda --gpu_id {gpu_id}, but torch sees no such CUDA device")
    return {"gpu_id": str(gpu_id)}


def run_selfcheck(device=None, gpu_id=0, users=300, models=None, stream=None):
    """Run every check, printing to ``stream`` (standard output by default); returns the :class:`Report`."""
    stream = stream or sys.stdout
    settings = device_settings(device, gpu_id)
    device = "cuda" if settings["gpu_id"] else "cpu"
    report = Report(stream)
    gpu = f" (GPU {gpu_id}: {torch.cuda.get_device_name(cuda_indices(str(gpu_id))[0])})" if device == "cuda" else ""
    print(f"recbole-diffusion self-check on {device}{gpu}, torch {torch.__version__}, first {users} users of ml-100k",
          file=stream, flush=True)
    names = models or [*MODELS, *model_variants(), RECBOLE_BASELINE]
    if importlib.util.find_spec("tokenizers") is None and TEXT_VARIANTS & set(names):
        print(f"left out: {', '.join(sorted(TEXT_VARIANTS & set(names)))} (item tables from text need the text extra: "
              'pip install -e ".[text]")', file=stream, flush=True)
        names = [name for name in names if name not in TEXT_VARIANTS]
    with tempfile.TemporaryDirectory(prefix="recbole-diffusion-selfcheck-") as folder, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="recbole")  # RecBole 1.2.1's own noise
        data_path = write_user_slice(ML100K_INTER, DATASET, users, os.path.join(folder, "data"), positions=True)
        shutil.copy(ML100K_ITEM, os.path.join(data_path, DATASET, f"{DATASET}.item"))
        settings = {**settings, "text_cache_dir": os.path.join(folder, "text-cache")}
        cwd = os.getcwd()
        os.chdir(folder)  # RecBole writes ./log and ./saved here, removed with the folder
        try:
            for name in names:
                trained = report.check(f"{name}: train 1 epoch, test", lambda n=name: train_and_test(
                    n, data_path, settings, {"checkpoint_dir": os.path.join(folder, "saved", n)}))
                if trained is None:
                    continue
                report.check(f"{name}: reloaded checkpoint, same test metrics",
                             lambda n=name, t=trained: check_reload(n, data_path, settings, t))
                report.check(f"{name}: per-user ranks and group metrics", lambda t=trained: check_group_metrics(t))
                if name in MODELS:
                    for sampler, extra in SAMPLERS.items():
                        report.check(f"{name}: sampler {sampler}", lambda n=name, e=extra, t=trained: evaluate_checkpoint(
                            n, data_path, settings, t[2].saved_model_file, e))
                if name in MODELS or name == RECBOLE_BASELINE:  # last: it may overwrite the best checkpoint
                    report.check(f"{name}: resume for a second epoch", lambda n=name: check_resume(
                        n, data_path, settings, os.path.join(folder, "saved", n)))
                if name in MODELS and device == "cuda":
                    report.check(f"{name}: 1 epoch with enable_amp", lambda n=name: train_and_test(
                        n, data_path, settings, {"enable_amp": True,
                                                 "checkpoint_dir": os.path.join(folder, "saved", f"{n}-amp")}))
        finally:
            os.chdir(cwd)
    verdict = "all checks passed" if not report.failures else f"{report.failures} check(s) FAILED"
    print(f"{len(report.lines)} checks, {verdict}", file=stream, flush=True)
    return report


def main(argv=None):
    parser = entry_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="where to run (default: cuda when available, else cpu)")
    parser.add_argument("--gpu_id", type=int, default=0, help="CUDA device index (RecBole's gpu_id)")
    parser.add_argument("--users", type=int, default=300, help="users of ml-100k to train on (default 300)")
    parser.add_argument("--models", default=None, help="comma-separated subset of models (default: all)")
    args, _ = parse_entry(parser, argv, overrides=False)
    models = [m for m in args.models.split(",") if m] if args.models else None
    report = run_selfcheck(args.device, args.gpu_id, args.users, models)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
