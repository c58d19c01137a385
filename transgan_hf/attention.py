"""Attention kernels of the TransGAN models; a model runs the one that `config._attn_implementation` names.

Like `transformers`' `ALL_ATTENTION_FUNCTIONS`, `ATTENTION_FUNCTIONS` maps an implementation name to a function
`(query, key, value, bias) -> output` on `(batch, heads, tokens, head_dim)` tensors, where `bias` is an optional
additive `(1, heads, tokens, tokens)` mask (the learned relative-position bias):

- `"sdpa"`: `torch.nn.functional.scaled_dot_product_attention`, differentiable twice. The discriminator's default:
  the gradient penalty differentiates it twice.
- `"cpu_bias_gradient"`: the same, except on a CPU when the bias needs a gradient (a training step), where
  `AttentionWithBiasGradient` runs instead of SDPA's unfused math path. The generator's default.

Choose one with `Model.from_pretrained(..., attn_implementation="sdpa")` or `model.set_attn_implementation("sdpa")`.
Why the CPU kernel exists, with measurements: `benchmarks/README.md`. This file imports only `torch`, so that it can be
copied next to a Hub checkpoint as remote code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

AttentionFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class AttentionWithBiasGradient(torch.autograd.Function):
    """Attention `softmax(q k^T / sqrt(d) + bias) v` on the CPU whose additive `bias` needs a gradient.

    `scaled_dot_product_attention` falls back to its unfused math path for a mask that requires grad: it stores every
    `tokens x tokens` attention map (in fp32 for bf16 inputs) and runs a generic softmax backward, the largest cost of
    a CPU generator step. Here the forward is SDPA's fused CPU kernel (which also returns the row log-sum-exp) and the
    backward recomputes the maps a few samples at a time, small enough to stay in cache, to get the gradients of
    q, k, v and the batch-summed bias in one pass. Not differentiable twice: models that need a double backward (the
    discriminator under a gradient penalty) keep SDPA. On CUDA, SDPA's memory-efficient kernel already does this.
    """

    # Attention-map elements recomputed at once in the backward (4 MiB of fp32): small enough to stay in cache, large
    # enough for few products, which matters when idle OpenMP threads sleep between kernels (OMP_WAIT_POLICY=PASSIVE).
    chunk_elements = 2**20

    @staticmethod
    def forward(ctx, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        fused_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        output, logsumexp = fused_attention(query, key, value, attn_mask=bias)
        ctx.save_for_backward(query, key, value, bias, output, logsumexp)
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        query, key, value, bias, output, logsumexp = ctx.saved_tensors
        batch, heads, tokens, head_dim = query.shape
        scale = head_dim**-0.5
        grad_out = grad_output.float()
        # Softmax backward: dS = P * (dO v^T - rowsum(dO * O)). One extra column on each operand folds the row terms
        # into the products: [q * scale, -lse] [k, 1]^T + bias = log P, and [dO, -rowsum] [v, 1]^T = dP - rowsum.
        query_scaled, key_float = query.float() * scale, key.float()
        query_ext = torch.cat([query_scaled, -logsumexp.float().unsqueeze(-1)], dim=-1)
        key_ext = F.pad(key_float, (0, 1), value=1.0)
        grad_out_ext = torch.cat([grad_out, -(grad_out * output.float()).sum(-1, keepdim=True)], dim=-1)
        value_ext = F.pad(value.float(), (0, 1), value=1.0)
        key_scaled = key_float * scale
        grad_query, grad_key, grad_value = torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)
        grad_bias = torch.zeros(bias.shape[1:], dtype=torch.float32, device=bias.device)
        step = max(1, AttentionWithBiasGradient.chunk_elements // (tokens * tokens))
        for head in range(heads):  # one head's maps for a few samples at a time, in fp32: the products are small,
            head_bias = bias[0, head].float()  # the maps' memory traffic is not
            for start in range(0, batch, step):
                rows = slice(start, start + step)
                probs = torch.baddbmm(head_bias, query_ext[rows, head], key_ext[rows, head].transpose(-1, -2)).exp_()
                grad_value[rows, head] = torch.bmm(probs.transpose(-1, -2), grad_out[rows, head])
                grad_scores = probs.mul_(torch.bmm(grad_out_ext[rows, head], value_ext[rows, head].transpose(-1, -2)))
                grad_bias[head] += grad_scores.sum(0) if grad_scores.shape[0] > 1 else grad_scores[0]
                grad_query[rows, head] = torch.bmm(grad_scores, key_scaled[rows, head])
                grad_key[rows, head] = torch.bmm(grad_scores.transpose(-1, -2), query_scaled[rows, head])
        return grad_query, grad_key, grad_value, grad_bias.unsqueeze(0).to(bias.dtype)


def sdpa_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """PyTorch's `scaled_dot_product_attention` with `bias` as the additive mask."""
    return F.scaled_dot_product_attention(query, key, value, attn_mask=bias)


def cpu_bias_gradient_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`AttentionWithBiasGradient` where it applies (CPU, a bias that needs a gradient), `sdpa_attention` elsewhere."""
    if bias is not None and bias.requires_grad and query.device.type == "cpu":
        return AttentionWithBiasGradient.apply(query, key, value, bias)
    return sdpa_attention(query, key, value, bias)


ATTENTION_FUNCTIONS: dict[str, AttentionFunction] = {
    "sdpa": sdpa_attention,
    "cpu_bias_gradient": cpu_bias_gradient_attention,
}


def attention_function(implementation: str | None) -> AttentionFunction:
    """The function of `ATTENTION_FUNCTIONS` named `implementation`; SDPA for a module whose configuration no model
    has resolved yet (`None`: a layer built on its own)."""
    return ATTENTION_FUNCTIONS[implementation or "sdpa"]
