"""Evaluation noise that is a pure function of a key: one checkpoint, one set of metrics.

Every draw of a reverse run (``x_T``, DDPM noise, DiffuRec's lambda) is keyed by ``(eval_seed, stream, step, user,
ensemble member)`` and computed by hashing, never read from a random generator, so a user's noise does not depend on
the batch, the batch size, the order or the number of processes.
"""

import math

import torch

_MASK32 = 0xFFFFFFFF
# Rows of a draw hashed at a time on a CPU: about 2**16 int64 elements (512 KiB), so that the in-place passes of
# the hash stay in the core's cache instead of streaming through memory (measured on a 2-core EPYC: 2**15 to
# 2**16 fastest, 2**13 slower from Python's per-block cost); a GPU takes every row at once.
_CPU_CHUNK_ELEMENTS = 1 << 16
_UNIFORM_SALTS = (0x68E31DA4, 0x1B56C4E9)


def _mul32(x, constant):
    """``x * constant mod 2**32`` for int64 tensors of 32-bit values, split so no product leaves int64."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def _hash32(x):
    """A 32-bit integer mixer (xor-shift / multiply, "lowbias32" constants): every input bit flips about half
    of the output bits. Exact integer arithmetic, so CPU and CUDA give the same bits. Works on int64 tensors
    of 32-bit values and on Python ints alike (same bits)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _hash32_(x, scratch):
    """:func:`_hash32` in place on the int64 tensor ``x`` (``scratch``: a tensor of its shape), same bits."""
    for shift, constant in ((16, 0x7FEB352D), (15, 0x846CA68B), (16, None)):
        x.bitwise_xor_(torch.bitwise_right_shift(x, shift, out=scratch))
        if constant is not None:  # x * constant mod 2**32, split as in _mul32
            torch.mul(x, constant >> 16, out=scratch).bitwise_and_(0xFFFF).bitwise_left_shift_(16)
            x.mul_(constant & 0xFFFF).add_(scratch).bitwise_and_(_MASK32)
    return x


def _row_states(state, keys):
    """Hash each row's key columns into the running ``state`` (a ``B`` tensor), one column at a time."""
    for column in keys.long().unbind(dim=1):
        state = _hash32(state ^ (column & _MASK32))
    return state


def _element_hashes(numel, device):
    """The hash of each element index of a draw: it depends on the draw's size only."""
    return _hash32(torch.arange(numel, dtype=torch.int64, device=device))


def _normal_from_states(states, elements, shape):
    """Box-Muller normals ``B x *shape`` from row states (``B``) and element hashes (``numel``).

    Two hashed 24-bit uniforms per element; computed in place, a block of rows at a time (see
    ``_CPU_CHUNK_ELEMENTS``), with exactly the operations of the plain formula, so the bits do not depend on
    the blocks.
    """
    rows, numel = states.size(0), elements.numel()
    out = torch.empty(rows, numel, dtype=torch.float32, device=states.device)
    block = rows if states.is_cuda else max(1, _CPU_CHUNK_ELEMENTS // max(numel, 1))
    for begin in range(0, rows, block):
        bits = states[begin:begin + block, None] ^ elements[None, :]
        scratch = torch.empty_like(bits)
        _hash32_(bits, scratch)
        first = _hash32_(bits ^ _UNIFORM_SALTS[0], scratch)
        second = _hash32_(bits.bitwise_xor_(_UNIFORM_SALTS[1]), scratch)
        u1 = first.bitwise_right_shift_(8).float().add_(0.5).div_(2.0 ** 24)
        u2 = second.bitwise_right_shift_(8).float().add_(0.5).div_(2.0 ** 24)
        # sqrt(-2 log u1) * cos(2 pi u2)
        target = out[begin:begin + block]
        torch.log(u1, out=target).mul_(-2.0).sqrt_().mul_(u2.mul_(2.0 * math.pi).cos_())
    return out.view(rows, *shape)


def keyed_normal(seed, keys, shape):
    """Standard normal draws that are a pure function of ``(seed, keys[b], element index)``.

    ``keys`` is a ``B x K`` integer tensor (one row of K counters per draw, values below 2**32); the result is
    ``B x *shape`` on ``keys``' device. Two hashed 24-bit uniforms per element go through Box-Muller, so no
    random generator state is read or advanced: the same key gives the same noise in any batch, any process
    and any order (up to float rounding of ``log`` / ``cos`` between devices).
    """
    state = torch.full((keys.size(0),), int(seed) & _MASK32, dtype=torch.int64, device=keys.device)
    states = _row_states(_hash32(state), keys)
    return _normal_from_states(states, _element_hashes(math.prod(shape), keys.device), shape)


class KeyedNoise:
    """The noise of one evaluation batch, keyed by ``(eval_seed, stream, step, row key)`` (see :func:`keyed_normal`).

    ``row_keys`` (``B x K``) names each row: a user id and an ensemble member, say. Each use of noise is a
    ``stream``; a draw at reverse step ``t`` is keyed by it too, so every user gets the same noise for the same
    step whatever the batch size, the batch it falls in or the number of processes. Equal to
    ``keyed_normal(seed, [stream, step, row_keys])``; a draw at an integer step hashes the part of the key that
    all rows share once, and the element hashes of a draw size are kept for the batch's later draws.
    """

    START, DDPM, LAMBDA = 1, 2, 3  # streams: x_T, the DDPM step noise, DiffuRec's lambda

    def __init__(self, seed, row_keys):
        self.seed, self.row_keys = int(seed), row_keys
        self._elements = {}

    def normal(self, stream, step, shape):
        """``B x *shape`` standard normal draws for ``stream`` at reverse step ``step`` (an int or a ``B`` tensor)."""
        rows = self.row_keys.size(0)
        numel = math.prod(shape)
        if numel not in self._elements:
            self._elements[numel] = _element_hashes(numel, self.row_keys.device)
        if isinstance(step, int):  # the key's shared part (seed, stream, step) hashed once, as a Python int
            shared = _hash32(_hash32(_hash32(self.seed & _MASK32) ^ (stream & _MASK32)) ^ (step & _MASK32))
            states = _row_states(torch.full((rows,), shared, dtype=torch.int64, device=self.row_keys.device),
                                 self.row_keys)
        else:
            step = torch.as_tensor(step, device=self.row_keys.device).expand(rows)
            state = torch.full((rows,), self.seed & _MASK32, dtype=torch.int64, device=self.row_keys.device)
            keys = torch.cat([torch.full_like(step, stream)[:, None], step[:, None], self.row_keys], dim=1)
            states = _row_states(_hash32(state), keys)
        return _normal_from_states(states, self._elements[numel], shape)
