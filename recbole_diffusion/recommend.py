"""Recommend with a trained model: each user's next-item top-k item tokens, with scores.

``python -m recbole_diffusion.recommend --model_file=PATH --users=ID,ID,... [--k=10] [--output=FILE.csv]``
(or ``--users_file=FILE``, one token per line, for tokens holding commas or spaces)

A sequential model continues each user's whole history in the dataset (train, valid and test interactions,
in time order, the last ``MAX_ITEM_LIST_LENGTH`` of them as the model reads it); a general, traditional,
knowledge-aware or context-aware model scores from the user's id (and features), pair by pair with ``predict``
where it has no ``full_sort_predict``, as RecBole's full ranking does. Items the user already interacted with
are left out unless ``--include_seen``; the padding item never appears. This package's diffusion models draw
their evaluation noise from ``(eval_seed, user, ...)`` and RecBole's models are deterministic in eval mode, so the
same command gives the same output.
"""

import argparse
import collections
import csv
import os
import sys

import torch
from recbole.data.interaction import Interaction
from recbole.utils import ModelType, init_seed

from recbole_diffusion.data.dataloader import cut_to_longest
from recbole_diffusion.evaluation.metrics import unrankable_rows
from recbole_diffusion.model import MODELS
from recbole_diffusion.quick_start.inference import load_data_and_model
from recbole_diffusion.utils.command_line import entry_parser, parse_entry
from recbole_diffusion.utils.files import atomic_write, read_file_bytes

SUPPORTED_MODEL_TYPES = (ModelType.SEQUENTIAL, ModelType.GENERAL, ModelType.TRADITIONAL, ModelType.CONTEXT,
                         ModelType.KNOWLEDGE)


class RecommendError(ValueError):
    """A request the model cannot answer (unknown users, a user without history, an unsupported model)."""


def user_ids_of(dataset, tokens):
    """Internal ids of user tokens; one error naming every unknown token."""
    token_to_id = dataset.field2token_id[dataset.uid_field]
    unknown = [token for token in tokens if token not in token_to_id]
    if unknown:
        raise RecommendError(f"unknown user token{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: not in "
                             f"the dataset {dataset.dataset_name!r} this model was trained on "
                             f"({dataset.user_num - 1} users)")
    users = dataset.inter_feat[dataset.uid_field]
    return torch.tensor([token_to_id[token] for token in tokens], dtype=torch.long, device=users.device)


def _last_rows(dataset, user_ids):
    """Each user's last row of the (time-ordered) interaction table; users without a row are refused.

    The table keeps RecBole's order within a user (sorted by user and time, then stably by time), so a user's last
    row holds the longest prefix of the history and the latest target.
    """
    users = dataset.inter_feat[dataset.uid_field]
    rows = torch.arange(len(users), device=users.device)
    last = torch.full((dataset.user_num,), -1, dtype=torch.long, device=users.device)
    last = last.scatter_reduce(0, users, rows, reduce="amax")[user_ids.to(users.device)]
    missing = user_ids[(last < 0).to(user_ids.device)]
    if len(missing):
        tokens = dataset.id2token(dataset.uid_field, missing.cpu().numpy())
        who = f"users {', '.join(map(str, tokens))} have" if len(tokens) > 1 else f"user {tokens[0]} has"
        raise RecommendError(f"{who} no sequence in the dataset (a single interaction: nothing to continue)")
    return dataset.inter_feat[last]


def next_item_input(dataset, user_ids):
    """The model input that asks for the item after each user's whole history, built like RecBole's sequential
    dataloaders build theirs: ``<field>_list`` (left-aligned, zero-padded), the list length, the user id.

    A user's last row holds the history before its target, so the target is appended to every list field, and the
    oldest entry dropped where the list is already ``MAX_ITEM_LIST_LENGTH`` long. The next item, unknown, is the
    padding id: RecBole's softmax-CPR models compute their loss inside ``full_sort_predict`` (its value unused) and
    read a target there; their losses ignore the padding id. A list without a field of its own (DIEN's sampled
    negatives, ``neg_item_id_list``, read only by its auxiliary loss) gets the padding id at the new position.
    """
    rows = _last_rows(dataset, user_ids)
    length_field, suffix = dataset.item_list_length_field, dataset.config["LIST_SUFFIX"]
    lengths = rows[length_field]
    max_length = dataset.max_item_list_len
    row_index = torch.arange(len(lengths), device=lengths.device)
    # The last max_length entries of history + target (pre-split files' lists may be narrower than max_length).
    start = torch.clamp(lengths + 1 - max_length, min=0)
    window = start[:, None] + torch.arange(max_length, device=lengths.device)[None, :]
    features = {dataset.uid_field: rows[dataset.uid_field], length_field: torch.clamp(lengths + 1, max=max_length),
                dataset.iid_field: torch.zeros_like(rows[dataset.iid_field])}
    list_fields = [field + suffix for field in rows.columns if field != dataset.uid_field and field + suffix in rows]
    negatives = getattr(dataset, "neg_item_list_field", None)
    for list_field in list_fields + ([negatives] if negatives in rows else []):
        lists = rows[list_field]
        extended = lists.new_zeros((len(lists), max(lists.size(1) + 1, max_length)))
        extended[:, :lists.size(1)] = lists
        if list_field != negatives:
            extended[row_index, lengths] = rows[list_field[:-len(suffix)]].to(extended.dtype)
        features[list_field] = extended[row_index[:, None], window]
    return dataset.join(Interaction(features))


def seen_items(dataset, user_ids):
    """``(len(user_ids), item_num)`` booleans: the items each user interacted with, in any split."""
    table = dataset.inter_feat
    users = table[dataset.uid_field]
    position = torch.full((dataset.user_num,), -1, dtype=torch.long, device=users.device)
    position[user_ids.to(users.device)] = torch.arange(len(user_ids), device=users.device)
    row_position = position[users]
    kept = row_position >= 0
    seen = torch.zeros((len(user_ids), dataset.item_num), dtype=torch.bool, device=users.device)
    seen[row_position[kept], table[dataset.iid_field][kept]] = True
    list_field = dataset.iid_field + dataset.config["LIST_SUFFIX"]
    if list_field in table:  # a sequential table: the history before each target
        lists = table[list_field][kept]
        seen[row_position[kept][:, None].expand_as(lists), lists] = True
    return seen


def model_input(config, dataset, test_data, user_ids):
    """What ``full_sort_predict`` reads for these users, on ``config['device']``; this package's models read each
    batch cut after its longest history, as in evaluation (the same scores)."""
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        interaction = next_item_input(dataset, user_ids)
    else:
        interaction = dataset.join(Interaction({dataset.uid_field: user_ids}))
    interaction = test_data.transform(dataset, interaction)
    if config["model"] in MODELS:
        cut_to_longest(interaction, config)
    return interaction.to(config["device"])


def score_every_item(model, interaction, dataset, max_pairs):
    """``full_sort_predict``, or for a model without one (NeuMF, the context-aware models, ...) its ``predict`` on
    every (user, item) pair with the item's features, for as many users at a time as keep the pairs within
    ``max_pairs`` (at least one), as RecBole's full-ranking evaluation scores such a model."""
    try:
        return model.full_sort_predict(interaction)
    except NotImplementedError:
        pass
    device = next(iter(interaction.interaction.values())).device
    items = dataset.get_item_feature().to(device)
    users_at_once = max(1, max_pairs // dataset.item_num)
    scores = []
    for start in range(0, len(interaction), users_at_once):
        users = interaction[start:start + users_at_once]
        pairs = users.repeat_interleave(dataset.item_num)
        pairs.update(items.repeat(len(users)))
        scores.append(model.predict(pairs))
    return torch.cat(scores)


@torch.no_grad()
def top_k(config, model, dataset, test_data, user_ids, k, include_seen=False):
    """``(scores, item ids)``, each ``(len(user_ids), k)``: the best-scored items for each user, scored in batches
    of ``eval_batch_size`` users. Excluded items (padding always, seen ones unless ``include_seen``) score
    ``-inf``; they fill a row's end only when fewer than ``k`` items remain."""
    if config["MODEL_TYPE"] not in SUPPORTED_MODEL_TYPES:
        raise RecommendError(f"{config['model']} is a {config['MODEL_TYPE'].name.lower()} model; recommending "
                             "supports sequential, general, traditional, context-aware and knowledge-aware models "
                             "(they score all items from a user's history, id or features)")
    init_seed(config["seed"], config["reproducibility"])
    model.eval()
    best_scores, best_items = [], []
    for start in range(0, len(user_ids), config["eval_batch_size"]):
        batch = user_ids[start:start + config["eval_batch_size"]]
        interaction = model_input(config, dataset, test_data, batch)
        scores = score_every_item(model, interaction, dataset, config["eval_batch_size"])
        scores = scores.view(len(batch), dataset.item_num)
        if bool(unrankable_rows(scores).any()):
            raise FloatingPointError(f"{config['model']} scored NaN or an infinity (+inf, or -inf for every item) "
                                     "for some of the requested users")
        if include_seen:
            excluded = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        else:
            excluded = seen_items(dataset, batch).to(scores.device)
        excluded[:, 0] = True
        values, items = torch.topk(scores.masked_fill(excluded, float("-inf")), k, dim=1)
        best_scores.append(values.cpu())
        best_items.append(items.cpu())
    return torch.cat(best_scores), torch.cat(best_items)


def recommendation_rows(dataset, user_tokens, scores, items):
    """``(user_id, rank, item_id, score)`` rows, excluded items (``-inf``) left out."""
    item_tokens = dataset.id2token(dataset.iid_field, items.numpy())
    rows = []
    for user_index, user in enumerate(user_tokens):
        for rank in range(items.size(1)):
            score = float(scores[user_index, rank])
            if score != float("-inf"):
                rows.append((user, rank + 1, str(item_tokens[user_index, rank]), score))
    return rows


def format_table(rows):
    """The rows as an aligned text table with a header."""
    header = ("user_id", "rank", "item_id", "score")
    cells = [header] + [(user, str(rank), item, f"{score:.6g}") for user, rank, item, score in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def write_csv(rows, path):
    """Write the rows as CSV (``user_id,rank,item_id,score``), atomically."""
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("user_id", "rank", "item_id", "score"))
        writer.writerows(rows)


def _flag(value):
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def parse_args(argv=None):
    parser = entry_parser(
        "Each user's next-item top-k from a trained model, continuing the user's whole history in the dataset (all "
        "splits); items the user already saw are left out unless --include_seen.")
    parser.prog = "python -m recbole_diffusion.recommend"
    parser.add_argument("--model_file", required=True, help="a checkpoint written by recbole_diffusion")
    users = parser.add_mutually_exclusive_group(required=True)
    users.add_argument("--users", help="user tokens as in the dataset, comma-separated (spaces around them dropped)")
    users.add_argument("--users_file", help="a UTF-8 file of user tokens, one per line, read verbatim (for tokens "
                                            "holding commas or spaces)")
    parser.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    parser.add_argument("--output", help="write CSV (user_id,rank,item_id,score) here instead of printing a table")
    parser.add_argument("--include_seen", action="store_true", help="also rank items the user already saw")
    parser.add_argument("--data_path", help="folder holding <dataset>/<dataset>.inter, when the data moved")
    parser.add_argument("--gpu_id", help="GPU to run on (default: the checkpoint's)")
    parser.add_argument("--use_gpu", type=_flag, help="True or False (default: the checkpoint's)")
    parser.add_argument("--eval_batch_size", type=int, help="users scored at once (default: the checkpoint's)")
    parser.add_argument("--sampler", help="a diffusion model's reverse process for scoring: ddpm, ddim or one_step "
                                          "(default: the checkpoint's; e.g. a -fast variant's, see the README)")
    parser.add_argument("--ddim_steps", type=int, help="DDIM strides with --sampler ddim (default: the checkpoint's)")
    parser.add_argument("--ddpm_steps", type=int, help="DDPM strides with --sampler ddpm (default: the checkpoint's)")
    parser.add_argument("--state", default="WARNING", help="console log level (default WARNING)")
    parser.add_argument("--trust_pickled_checkpoint", type=_flag, nargs="?", const=True, default=False,
                        help="also read RecBole's pickled format: only for files you wrote (unpickling runs code)")
    return parse_entry(parser, argv, overrides=False)[0]


def requested_users(args):
    """The user tokens asked for, in order, each once: ``--users`` split on commas and stripped, or the lines of
    ``--users_file`` as they are (blank lines skipped)."""
    if args.users is not None:
        tokens = [token.strip() for token in args.users.split(",")]
    else:
        try:
            text = read_file_bytes(args.users_file, "users file").decode("utf-8-sig")  # a byte order mark dropped
        except UnicodeDecodeError as error:
            raise RecommendError(f"--users_file={args.users_file}: not UTF-8 ({error.reason} at byte {error.start})")
        tokens = [line.rstrip("\r") for line in text.split("\n")]
    return list(dict.fromkeys(token for token in tokens if token.strip()))


def _check_request(args, user_tokens):
    if not os.path.isfile(args.model_file):
        raise RecommendError(f"--model_file={args.model_file}: no such file")
    if args.k < 1:
        raise RecommendError(f"--k={args.k}: must be at least 1")
    if not user_tokens:
        raise RecommendError("--users / --users_file: give at least one user token")
    if args.eval_batch_size is not None and args.eval_batch_size < 1:
        raise RecommendError(f"--eval_batch_size={args.eval_batch_size}: must be at least 1")
    if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise RecommendError(f"--output={args.output}: its folder does not exist")


def main(argv=None):
    """Run the command; returns the exit status (2: a refused request, with one message on stderr)."""
    args = parse_args(argv)
    overrides = {key: getattr(args, key) for key in ("data_path", "gpu_id", "use_gpu", "eval_batch_size", "state",
                                                     "sampler", "ddim_steps", "ddpm_steps")
                 if getattr(args, key) is not None}
    try:
        user_tokens = requested_users(args)
        _check_request(args, user_tokens)
        config, model, dataset, _, _, test_data = load_data_and_model(
            args.model_file, trust_pickled=args.trust_pickled_checkpoint, write_logs=False, **overrides)
        n_items = dataset.item_num - 1  # id 0 is padding
        if args.k > n_items:
            raise RecommendError(f"--k={args.k}: the dataset has only {n_items} items")
        user_ids = user_ids_of(dataset, user_tokens)
        scores, items = top_k(config, model, dataset, test_data, user_ids, args.k, args.include_seen)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = recommendation_rows(dataset, user_tokens, scores, items)
    counts = collections.Counter(row[0] for row in rows)
    short = [user for user in user_tokens if counts[user] < args.k]
    if short:
        print(f"note: fewer than {args.k} unseen items remain for user(s) {', '.join(short)}", file=sys.stderr)
    if args.output:
        write_csv(rows, args.output)
        print(f"{len(rows)} recommendations for {len(user_tokens)} users written to {args.output}")
    else:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
