"""Sequence layers shared by the models: a pre-norm transformer stack and padding-aware position ids."""

import torch
from torch import nn


class TransformerStack(nn.Module):
    """``n_layers`` pre-norm transformer blocks (GELU FFN of width ``inner_size``), dropout, a final LayerNorm.

    Padding is masked on the key side (``key_padding_mask``), so real positions never attend to padding.
    ``dropout_after_each_block`` adds a dropout on every block's output (the residual stream), as DiffuRec's
    authors' ``TransformerBlock`` does; the dropout before the final LayerNorm is always there.
    """

    def __init__(self, hidden_size, n_layers, n_heads, inner_size, dropout, causal=False,
                 dropout_after_each_block=False):
        super().__init__()
        self.causal = causal
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                hidden_size, n_heads, dim_feedforward=inner_size, dropout=dropout,
                activation="gelu", batch_first=True, norm_first=True,
            )
            for _ in range(n_layers)
        )
        self.block_dropouts = nn.ModuleList(
            nn.Dropout(dropout) if dropout_after_each_block else nn.Identity() for _ in range(n_layers)
        )
        self.output_dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, hidden, padding_mask):
        """``hidden``: ``B x L x d``; ``padding_mask``: ``B x L``, True at padding."""
        attn_mask = None
        if self.causal:
            length = hidden.size(1)
            attn_mask = torch.triu(torch.ones(length, length, dtype=torch.bool, device=hidden.device), diagonal=1)
        for layer, block_dropout in zip(self.layers, self.block_dropouts):
            hidden = block_dropout(layer(hidden, src_mask=attn_mask, src_key_padding_mask=padding_mask))
        return self.norm(self.output_dropout(hidden))


def embedding_table(num_embeddings, hidden_size, init_std, padding_idx=None):
    """An embedding table initialised ``N(0, init_std^2)`` (the padding row, if any, kept at zero).

    Every table a model owns (items, positions) takes the same ``embedding_init_std``, so the history's item
    and position parts start at the same scale. The authors keep PyTorch's default N(0, 1); a small std
    (RecBole's SASRec uses 0.02) makes the full-softmax logits small at the start and, on CPU-sized runs,
    converges much faster (see BENCHMARKS.md).
    """
    table = nn.Embedding(num_embeddings, hidden_size, padding_idx=padding_idx)
    nn.init.normal_(table.weight, 0.0, init_std)
    if padding_idx is not None:
        with torch.no_grad():
            table.weight[padding_idx].zero_()
    return table


def positions_from_end(item_seq_len, max_length):
    """Position ids counted back from the newest real item (0 = newest), clamped to 0 at right padding.

    This is our choice, not the authors': DreamRec and PreferDiff right-pad and count positions from the
    oldest item (the newest item's id is the history's length - 1, so it changes with the length), as
    RecBole's SASRec does. Counting from the newest gives the item the guidance / ``x0_hat`` is read at the same
    position id in every history, whatever its length, and the ids do not depend on the padding side. Models
    trained either way are not interchangeable: the same table row means "k steps ago" here, "k-th item" there.
    """
    index = torch.arange(max_length, device=item_seq_len.device)
    return (item_seq_len[:, None] - 1 - index[None, :]).clamp(min=0)
