"""How a model's learnable item table moves during training: the diagnostic behind BENCHMARKS.md runs 5-7.

    python benchmarks/embedding_geometry.py --model PreferDiff-smallinit --epochs 20 --threads 1 \
        --set hidden_size=64 inner_size=64 n_layers=1 n_heads=1 MAX_ITEM_LIST_LENGTH=10 learning_rate=0.001

DreamRec, PreferDiff and DiffuRec learn the item table that is also their regression target, so a loss can
fall by making items alike instead of predicting the next one. After every epoch this prints the mean row
norm, the mean cosine of a fixed random sample of item pairs, the mean cosine of the rows to their mean
direction, and the norm of the null guidance vector where there is one; every ``--eval_every`` epochs also the
validation NDCG@10. Training goes through RecBole's Trainer with the runner's configuration.
"""

import json

import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_trainer, init_seed

from common import apply_threads_and_overrides, single_model_parser
from recbole_diffusion.quick_start import build_config

PAIRS = 20000


def item_table_geometry(weight, pairs):
    """Mean row norm, mean cosine over ``pairs`` (two rows of row indices), mean cosine to the mean row."""
    unit = torch.nn.functional.normalize(weight, dim=-1)
    mean_direction = torch.nn.functional.normalize(weight.mean(0), dim=0)
    return {
        "row_norm": weight.norm(dim=-1).mean().item(),
        "pair_cosine": (unit[pairs[0]] * unit[pairs[1]]).sum(-1).mean().item(),
        "cosine_to_mean": (unit @ mean_direction).mean().item(),
    }


def geometry(model, pairs):
    items = model.item_embedding.weight.detach()[1:]  # row 0 is padding
    result = item_table_geometry(items, pairs)
    if hasattr(model, "null_guidance"):
        result["null_norm"] = model.null_guidance.detach().norm().item()
    return result


def main():
    parser = single_model_parser(__doc__, "PreferDiff")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eval_every", type=int, default=5)
    args = parser.parse_args()
    overrides = apply_threads_and_overrides(args)
    config, model_class = build_config(args.model, args.dataset, config_dict={
        "data_path": args.data_path, "show_progress": False, "state": "WARNING", **overrides})
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = model_class(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    pairs = torch.randint(1, model.n_items, (2, PAIRS), generator=torch.Generator().manual_seed(0)) - 1
    print(json.dumps({"epoch": None, **geometry(model, pairs.to(config["device"]))}), flush=True)
    for epoch in range(args.epochs):
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        record = {"epoch": epoch, "train_loss": float(loss), **geometry(model, pairs.to(config["device"]))}
        if (epoch + 1) % args.eval_every == 0:
            record["valid_ndcg@10"] = trainer.evaluate(valid_data, load_best_model=False)["ndcg@10"]
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
