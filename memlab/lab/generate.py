"""``python -m memlab generate runs/NAME``: sample text from a trained run's checkpoint (byte-level)."""
from __future__ import annotations

import argparse
import sys

import torch

from .train import load_checkpoint, resolve_device


def sample_text(model, prompt: str = "\n", max_new_tokens: int = 200, temperature: float = 0.8,
                top_k: int | None = 40, seed: int = 0) -> str:
    """The prompt followed by ``max_new_tokens`` sampled bytes, decoded as UTF-8 (invalid bytes replaced)."""
    device = next(model.parameters()).device
    prompt_bytes = list(prompt.encode()) or [10]
    ids = torch.tensor([prompt_bytes], dtype=torch.long, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k, generator=g)
    finally:
        model.train(was_training)
    return bytes(out[0].tolist()).decode("utf-8", errors="replace")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder (runs/NAME) or a checkpoint file")
    parser.add_argument("--prompt", default="\n")
    parser.add_argument("--tokens", type=int, default=300, help="bytes to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")


def run(args) -> int:
    try:
        model, _ = load_checkpoint(args.run, device=str(resolve_device(args.device)))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(sample_text(model, args.prompt, args.tokens, args.temperature, args.top_k, args.seed))
    return 0
