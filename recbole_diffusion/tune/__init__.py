"""Hyper-parameter search on Optuna that resumes, prunes and hands back a config file.

    python -m recbole_diffusion.tune --model PreferDiff --dataset amazon-beauty --data_path ../shared/data \\
        --trials 20 --study studies/preferdiff-beauty --epochs 10

* The search space is a RecBole ``.hyper`` file (``--space``; default ``properties/hyper/<Model>.hyper``), read
  as RecBole 1.2.1's ``HyperTuning`` reads it: ``key choice [...]``, ``key uniform a,b``, ``key quniform a,b,q``,
  ``key loguniform a,b`` with natural-log bounds (``loguniform -8,0`` is e^-8 .. 1). Values are parsed with
  ``ast.literal_eval``, never ``eval``; full-line ``#`` comments are allowed (RecBole's reader refuses them).
  ``quniform`` with integer bounds and step searches integers (hyperopt gives floats such as 64.0).
* Every ``--key=value`` and every ``--config_files`` key is fixed for all trials. Each trial runs in its own
  process through :func:`recbole_diffusion.quick_start.run`, the runner's path (same YAML merge, checks and
  split), with the configuration's seed; the tuner sets ``checkpoint_dir`` (deleted after the trial),
  ``checkpoint_every: 0`` and ``resume: False``. Trials are chosen on the best validation score
  (``valid_metric``); their test metrics are recorded and never used to choose.
* The study is an SQLite file in ``--study DIR``. Rerunning the same command continues it up to ``--trials``
  finished trials; a different model, dataset, fixed configuration or search space is refused, naming each
  difference. A lock file keeps a second search off the same study, so a trial still marked running when a
  search starts was killed with an earlier search: it is marked failed and rerun once (same parameters). A trial
  that raises (a bad combination, a NaN loss) is recorded with its error and the search goes on.
* ``--pruner median``: after each validation a trial reports its score; one below the median of the earlier
  trials' scores at the same epoch stops (Optuna's ``MedianPruner``, after ``--prune_startup_trials`` finished
  trials and from epoch ``--prune_warmup_epochs``).
* ``--confirm_seeds N``: the ``--confirm_top`` best configurations are rerun with N other seeds and the one with
  the best mean validation score is chosen (the search seed's score is selection-biased: the winner's curse).

Output in ``DIR`` (rewritten after every trial): ``trials.csv``, ``best.yaml`` (the fixed and the chosen keys,
and the seed: ``--config_files=DIR/best.yaml`` reproduces the chosen trial), ``summary.md`` (top trials, the
command, parameter importances), ``history.png``; ``confirm.csv`` with ``--confirm_seeds``; per trial a log in
``work/trial-<n>/output.log``.

The parts: the search space (:mod:`.space`), the search's settings (:mod:`.search`), one trial in its process
(:mod:`.trial`), the study and its loop (:mod:`.study`), the output files (:mod:`.reports`), the command line
(:mod:`.cli`, run by ``python -m recbole_diffusion.tune``).
"""


try:
    import optuna  # noqa: F401
except ImportError as missing:
    raise ImportError("recbole_diffusion.tune runs on Optuna, which is not installed: pip install -e \".[tune]\" "
                      "(or pip install optuna)") from missing

from recbole_diffusion.tune.cli import main, parse_args  # noqa: E402
from recbole_diffusion.tune.reports import best_trial, write_outputs  # noqa: E402
from recbole_diffusion.tune.search import STUDY_NAME, Search, default_space_file, prepare_search  # noqa: E402
from recbole_diffusion.tune.space import decoded_params, parse_param, read_space, suggest  # noqa: E402
from recbole_diffusion.tune.study import open_study, recover_interrupted, run_search, study_lock  # noqa: E402

__all__ = ["STUDY_NAME", "Search", "best_trial", "decoded_params", "default_space_file", "main", "open_study",
           "parse_args", "parse_param", "prepare_search", "read_space", "recover_interrupted", "run_search",
           "study_lock", "suggest", "write_outputs"]
