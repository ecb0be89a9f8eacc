"""Top-k mixture-of-experts FFN: the baseline Memory Layers at Scale compares against at equal active parameters.

    gates = softmax over the top-k router logits          y = Σ_{e ∈ top-k} gate_e · W2_e gelu(W1_e x)

Each expert has ffn_hidden / k hidden units, so the k experts a token visits hold exactly the dense FFN's parameters
(plus the d × E router). A Switch-style load-balancing loss, E · Σ_e f_e · P_e, is kept in ``aux_loss``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MoEFFN(nn.Module):
    def __init__(self, d_model: int, hidden: int, n_experts: int, topk: int, init_std: float = 0.02,
                 out_std: float | None = None):
        super().__init__()
        self.d_model, self.hidden, self.n_experts, self.topk = d_model, hidden, n_experts, topk
        self.router = nn.Linear(d_model, n_experts, bias=False)
        nn.init.normal_(self.router.weight, std=init_std)
        self.w1 = nn.Parameter(torch.randn(n_experts, d_model, hidden) * init_std)
        self.w2 = nn.Parameter(torch.randn(n_experts, hidden, d_model) * (out_std or init_std))
        self.aux_loss = torch.zeros(())
        self.last_choice: torch.Tensor | None = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(expert ids (N, k), gates (N, k), router probabilities (N, E)) for flat tokens x (N, d)."""
        logits = self.router(x)
        top_logits, experts = logits.topk(self.topk, dim=-1)
        return experts, torch.softmax(top_logits, dim=-1), torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.d_model)
        experts, gates, probs = self.route(flat)
        out = torch.zeros_like(flat)
        for e in range(self.n_experts):
            token, slot = torch.nonzero(experts == e, as_tuple=True)
            if token.numel() == 0:
                continue
            h = F.gelu(flat[token] @ self.w1[e]) @ self.w2[e]
            out.index_add_(0, token, h * gates[token, slot].unsqueeze(-1))
        # load balance: fraction of routed slots per expert times mean router probability (Switch Transformer)
        frac = torch.bincount(experts.reshape(-1), minlength=self.n_experts).to(flat.dtype) / experts.numel()
        self.aux_loss = self.n_experts * (frac * probs.mean(0)).sum()
        self.last_choice = experts.detach()
        return out.reshape(shape)

    def flops_per_token(self) -> int:
        """Router d·E plus k experts of 2·d·hidden multiply-adds."""
        return self.d_model * self.n_experts + self.topk * 2 * self.d_model * self.hidden

    def inactive_params(self) -> int:
        """Parameters a token does not touch: the experts it is not routed to."""
        return (self.n_experts - self.topk) * 2 * self.d_model * self.hidden

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, hidden={self.hidden}, experts={self.n_experts}, topk={self.topk}"
