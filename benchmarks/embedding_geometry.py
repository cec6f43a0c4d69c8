"""How a model's learnable item table moves during training, and what its forward process sees of it.

    python benchmarks/embedding_geometry.py --model PreferDiff-smallinit --epochs 20 --threads 1 \
        --set hidden_size=64 inner_size=64 n_layers=1 n_heads=1 MAX_ITEM_LIST_LENGTH=10 learning_rate=0.001
    # a trained checkpoint (e.g. kept by compare --keep_checkpoints), with the same --model and --set
    python benchmarks/embedding_geometry.py --model DiffuRec-smallinit --checkpoint PATH --set hidden_size=64 ...

DreamRec, PreferDiff and DiffuRec learn the item table that is also their regression target, so a loss can
fall by making items alike instead of predicting the next one. After every epoch this prints the mean row
norm, the mean cosine of a fixed random sample of item pairs, the mean cosine of the rows to their mean
direction, and the norm of the null guidance vector where there is one; every ``--eval_every`` epochs also the
validation NDCG@10. Every line also gives the forward process's per-dimension signal-to-noise ratio
``SNR_t = abar_t * E[x0^2] / (1 - abar_t)`` (``E[x0^2]``: mean squared entry of the item rows) at the first and
last step, and the share of the T steps where it is below 1: where SNR < 1 at every step, ``x_t`` is mostly noise
and the model regresses ``x0`` from the history rather than denoising it. With ``--checkpoint`` the script
loads a trained model instead (through the trainer's own reload) and prints one line for it. Training and
loading go through the runner's pipeline (``recbole_diffusion.quick_start``).
"""

import json

import torch

from common import apply_threads_and_overrides, single_model_parser
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data

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


def forward_snr(weight, alphas_cumprod):
    """Per-dimension SNR of ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` over the rows of ``weight``, per step."""
    signal_power = weight.double().pow(2).mean()
    return alphas_cumprod * signal_power / (1.0 - alphas_cumprod)


def geometry(model, pairs):
    items = model.item_embedding.weight.detach()[1:]  # row 0 is padding
    result = item_table_geometry(items, pairs)
    norms = items.norm(dim=-1)
    result["row_norm_quartiles"] = [round(q, 4) for q in torch.quantile(norms, norms.new_tensor([0.25, 0.5, 0.75])).tolist()]
    snr = forward_snr(items, model.diffusion.alphas_cumprod)
    result.update(snr_first_step=snr[0].item(), snr_last_step=snr[-1].item(),
                  share_of_steps_snr_below_1=(snr < 1).double().mean().item())
    if hasattr(model, "null_guidance"):
        result["null_norm"] = model.null_guidance.detach().norm().item()
    return result


def main():
    parser = single_model_parser(__doc__, "PreferDiff")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eval_every", type=int, default=5)
    parser.add_argument("--checkpoint", default=None, help="measure this trained checkpoint instead of training")
    args = parser.parse_args()
    overrides = apply_threads_and_overrides(args)
    config, model_class = build_config(args.model, args.dataset, config_dict={
        "data_path": args.data_path, "show_progress": False, "state": "WARNING", **overrides})
    data = prepare_data(config)
    trainer = build_trainer(config, model_class, data.train)
    model = trainer.model
    generator = torch.Generator().manual_seed(0)
    pairs = (torch.randint(1, model.n_items, (2, PAIRS), generator=generator) - 1).to(config["device"])
    if args.checkpoint:
        valid = trainer.evaluate(data.valid, load_best_model=True, model_file=args.checkpoint)
        print(json.dumps({"checkpoint": args.checkpoint, "valid_ndcg@10": valid["ndcg@10"], **geometry(model, pairs)}))
        return
    print(json.dumps({"epoch": None, **geometry(model, pairs)}), flush=True)
    for epoch in range(args.epochs):
        loss = trainer._train_epoch(data.train, epoch, show_progress=False)
        record = {"epoch": epoch, "train_loss": float(loss), **geometry(model, pairs)}
        if (epoch + 1) % args.eval_every == 0:
            record["valid_ndcg@10"] = trainer.evaluate(data.valid, load_best_model=False)["ndcg@10"]
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
