"""Every model variant memlab trains, in one registry: name → how its blocks are built, checked and measured.

    dense         attention (W_Q, W_K, W_V, W_O) + FFN                          the Pythia-like baseline
    moe           attention + top-k mixture-of-experts FFN, same active parameters as the dense FFN
    memoryformer  Q/K/V from three HashMemory tables sharing one hash, no W_O; MemoryBlock instead of the FFN
    pkm           ProductKeyMemory instead of the FFN in ``memory_layers`` (one SharedValues pool across them)
    memoryplus    MemoryPlus instead of the FFN in ``memory_layers`` (one SharedValues pool across them)
    peer          PEER instead of the FFN in ``memory_layers`` (each layer owns its n² single-neuron experts)

``GPT`` and ``Block`` (gpt.py), ``ModelConfig.validate`` (config.py), the usage statistics (usage.py), the CLI's
``--model`` and ``MODEL_TYPES`` read this registry and nothing else. Adding a variant is one ``Variant`` entry in
``VARIANTS`` plus its layer module; the tests in tests/test_models.py run over every entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from torch import nn

from ...layers.hash_input import HASH_INPUTS
from ...layers.memory_block import MemoryBlock
from ...layers.memory_plus import MemoryPlus
from ...layers.peer import PEER
from ...layers.product_key_memory import ProductKeyMemory
from .blocks import FFN, INIT_STD, DenseAttention, MemoryFormerAttention
from .moe import MoEFFN

if TYPE_CHECKING:
    from ...layers.shared_values import SharedValues
    from .config import ModelConfig


def _none(module: nn.Module) -> dict[str, nn.Module]:
    return {}


def _no_check(config: ModelConfig) -> None:
    return None


@dataclass(frozen=True)
class Variant:
    """How one variant fills a decoder block ``x + Attn(Norm(x))``, ``+ FFN(Norm(x))``.

    description: one line for tables and help texts.
    ffn: ``(config, shared values or None) → module`` that takes the dense FFN's place.
    ffn_kind: ``Block.ffn_kind`` of a layer whose FFN was replaced (a layer that keeps its dense FFN says "dense").
    attention: ``config → module``, the attention of every layer.
    memory_layers_only: replace the FFN only in ``config.memory_layer_ids()`` (the memories of Memory Layers at Scale
        §3.2); otherwise in every layer.
    shared_values: the model builds one ``SharedValues`` (pkm_n_keys² × (pkm_v_dim or d_model)) that ``ffn`` receives
        in every memory layer.
    attention_memories, ffn_memories: ``module → {name: sub-module}`` whose row usage ``usage.py`` reports as
        ``layer{i}.{name}`` (``ffn_memories`` is asked only for replaced FFNs).
    check: raises one ``ValueError`` naming the fix for sizes this variant cannot build (``ModelConfig.validate``).
    """

    description: str
    ffn: Callable[[ModelConfig, SharedValues | None], nn.Module]
    ffn_kind: str
    attention: Callable[[ModelConfig], nn.Module] = DenseAttention
    memory_layers_only: bool = False
    shared_values: bool = False
    attention_memories: Callable[[nn.Module], dict[str, nn.Module]] = _none
    ffn_memories: Callable[[nn.Module], dict[str, nn.Module]] = _none
    check: Callable[[ModelConfig], None] = _no_check

    def replaces_ffn(self, config: ModelConfig, layer_id: int) -> bool:
        """Whether layer ``layer_id`` gets this variant's ``ffn`` (else the dense FFN)."""
        return not self.memory_layers_only or layer_id in config.memory_layer_ids()


# ------------------------------------------------------------------------------------------------ per-variant checks
def _check_memoryformer(c: ModelConfig) -> None:
    if c.d_model % c.tau:
        taus = [t for t in range(3, 17) if c.d_model % t == 0]
        raise ValueError(
            f"d_model={c.d_model} is not divisible by tau={c.tau}; MemoryFormer splits each token into "
            f"d_model/tau chunks — choose tau in {taus} or a d_model that is a multiple of {c.tau}"
        )
    if c.mf_hash_input not in HASH_INPUTS:
        raise ValueError(f"mf_hash_input={c.mf_hash_input!r} is not one of {HASH_INPUTS}")
    if c.tau + c.expand_bits > 20:
        bits = c.tau + c.expand_bits
        raise ValueError(f"tau + expand_bits = {bits} gives tables of 2^{bits} rows; keep it ≤ 20")


def _check_moe(c: ModelConfig) -> None:
    if c.moe_topk > c.moe_experts:
        raise ValueError(f"moe_topk={c.moe_topk} exceeds moe_experts={c.moe_experts}")
    if c.ffn_hidden % c.moe_topk:
        raise ValueError(
            f"ffn_mult·d_model={c.ffn_hidden} is not divisible by moe_topk={c.moe_topk}: "
            "each expert gets ffn_hidden/moe_topk units so that the active FFN equals the dense one"
        )


def _check_product_keys(c: ModelConfig) -> None:
    if c.pkm_topk > c.pkm_n_keys:
        raise ValueError(f"pkm_topk={c.pkm_topk} exceeds pkm_n_keys={c.pkm_n_keys}")


def _check_peer(c: ModelConfig) -> None:
    _check_product_keys(c)
    if c.pkm_v_dim not in (None, c.d_model):
        raise ValueError(
            f"pkm_v_dim={c.pkm_v_dim} does not apply to peer: PEER's experts map d_model → d_model "
            f"(up-rows of d_model={c.d_model}); leave pkm_v_dim unset"
        )


# ------------------------------------------------------------------------------------------------ the registry
VARIANTS: dict[str, Variant] = {
    "dense": Variant(
        "attention with W_O + dense FFN: the Pythia-like baseline",
        ffn=lambda c, values: FFN(c),
        ffn_kind="dense",
    ),
    "moe": Variant(
        "attention + top-k mixture-of-experts FFN with the dense FFN's active parameters",
        ffn=lambda c, values: MoEFFN(c.d_model, c.expert_hidden, c.moe_experts, c.moe_topk, INIT_STD,
                                     INIT_STD / (2 * c.n_layers) ** 0.5),
        ffn_kind="moe",
        ffn_memories=lambda ffn: {"moe": ffn},
        check=_check_moe,
    ),
    "memoryformer": Variant(
        "MemoryFormer: Q/K/V from hash tables sharing one hash, no W_O; Memory Block instead of the FFN",
        ffn=lambda c, values: MemoryBlock(c.d_model, tau=c.tau, expand_bits=c.expand_bits,
                                          temperature=c.mf_temperature, weighting=c.mf_weighting,
                                          activation=c.mf_activation, hash_input=c.mf_hash_input),
        ffn_kind="memoryblock",
        attention=MemoryFormerAttention,
        attention_memories=lambda attn: {"qkv": attn},
        ffn_memories=lambda ffn: {"mb1": ffn.ml1, "mb2": ffn.ml2},
        check=_check_memoryformer,
    ),
    "pkm": Variant(
        "product-key memory instead of the FFN in the memory layers, one shared value pool",
        ffn=lambda c, values: ProductKeyMemory(c.d_model, n_keys=c.pkm_n_keys, heads=c.pkm_heads, topk=c.pkm_topk,
                                               k_dim=c.pkm_k_dim, v_dim=c.pkm_v_dim,
                                               query_norm=c.pkm_query_norm, values=values),
        ffn_kind="pkm",
        memory_layers_only=True,
        shared_values=True,
        ffn_memories=lambda ffn: {"pkm": ffn},
        check=_check_product_keys,
    ),
    "memoryplus": Variant(
        "Memory+ (swilu gating, qk-norm) instead of the FFN in the memory layers, one shared value pool",
        ffn=lambda c, values: MemoryPlus(c.d_model, n_keys=c.pkm_n_keys, heads=c.pkm_heads, topk=c.pkm_topk,
                                         k_dim=c.pkm_k_dim, v_dim=c.pkm_v_dim, qk_norm=c.qk_norm, values=values),
        ffn_kind="memoryplus",
        memory_layers_only=True,
        shared_values=True,
        ffn_memories=lambda ffn: {"pkm": ffn.memory},
        check=_check_product_keys,
    ),
    "peer": Variant(
        "PEER: product-key retrieval of single-neuron experts instead of the FFN in the memory layers",
        ffn=lambda c, values: PEER(c.d_model, n_keys=c.pkm_n_keys, heads=c.pkm_heads, topk=c.pkm_topk,
                                   k_dim=c.pkm_k_dim, query_norm=c.pkm_query_norm),
        ffn_kind="peer",
        memory_layers_only=True,
        ffn_memories=lambda ffn: {"peer": ffn},
        check=_check_peer,
    ),
}

#: The variant names, in registry order (notebooks and the CLI list these).
MODEL_TYPES = tuple(VARIANTS)


def ffn_kind(config: ModelConfig, layer_id: int) -> str:
    """What takes the FFN's place in layer ``layer_id``: the variant's ``ffn_kind``, or "dense" outside its layers."""
    variant = VARIANTS[config.model]
    return variant.ffn_kind if variant.replaces_ffn(config, layer_id) else "dense"
