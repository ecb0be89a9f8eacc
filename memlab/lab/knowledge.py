"""Factual capacity: a synthetic knowledge base made from a seed, its training stream, and a probe that scores how
many bits of it a model stores (the measure of Allen-Zhu & Li, "Physics of Language Models 3.3", arXiv 2404.05405).

The knowledge base (``KnowledgeBase``): N entities with invented two-word names, each with A attributes (city, pet,
job, hue, …). Every value is one of V pseudo-words (V = 256: 8 bits), drawn uniformly and independently, so nothing
can be inferred and everything must be stored: N·A·log2 V bits in all. Lines state the facts in a fixed, tagged
format, with the attribute order shuffled at every exposure::

    @ravo kitu: pet=lub; hue=zod; city=bek; job=fiz.

The stream (``KnowledgeStream``) is fact lines only: pass p is every entity once, in a fresh order, packed whole into
rows of ``seq_len + 1`` bytes (a row never cuts a line; padding is not trained). A run of s steps of batch B has seen
every fact s·B / rows_per_pass times (``exposures``).

The probe (``KnowledgeStream.score``), for each (entity, attribute) and the prompt ``@name: attr=``:

    greedy exact match        byte-by-byte argmax reproduces the value
    ranking accuracy          the true value has the highest probability among the V candidates (chance: 1/V)
    bits stored               Σ (log2 V + log2 q(v*)), q = the model's probabilities renormalised over the V candidates
                              (0 for a uniform guess, log2 V per fact for certainty; negative when confidently wrong)
    bits per parameter        bits / total parameters, and / parameters active per token

and three controls: held-out entities that were never trained (must score at chance), the same probe with the memory
layer's output zeroed (``memory_zeroed``; accuracy should collapse if the memory holds the facts), and which memory rows
the prompts read (rows used, and for a sample of facts the rows each prompt hits).

A value word is three bytes, first consonant + its vowel + last consonant ("bak", "dez"): every byte that tells
candidates apart follows a prefix shared by at most ``b`` candidates, so the V probabilities come from one forward
pass per first letter (16 for V = 256) instead of one per candidate.
"""
from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .._checks import check_positive_int

#: Attribute tags, in order; a knowledge base uses the first A of them.
ATTRIBUTE_NAMES = ("city", "pet", "job", "hue", "food", "tool", "gem", "sport")
#: Letters a value word starts and ends with (at most 20 × 20 = 400 values); the vowel follows from the first letter.
CONSONANTS = "bdfgklmnprstvzhjwcxq"
VOWELS = "aeiou"
#: Entity names: two words of two consonant-vowel syllables ("ravo kitu"): 70⁴ ≈ 24 M names, all 9 bytes long.
NAME_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in VOWELS]
NAME_BYTES = 9
PAD = ord("\n")
IGNORE = -100  # targets F.cross_entropy skips (padding)
#: Keys of ``score``'s flat metrics: results.json, and the sweep's DataFrame columns (``sweep.record_row``).
METRIC_PREFIX = "kb_"


# ---------------------------------------------------------------------------------------------------------- words
def word_grid(n_values: int) -> tuple[int, int]:
    """(first letters a, last letters b) of the smallest near-square grid with a·b ≥ n_values (a, b ≤ 20)."""
    if isinstance(n_values, bool) or not isinstance(n_values, int) or not 2 <= n_values <= len(CONSONANTS) ** 2:
        raise ValueError(f"n_values={n_values!r} must be an integer in [2, {len(CONSONANTS) ** 2}] (value words are "
                         f"first consonant + vowel + last consonant, {len(CONSONANTS)} consonants)")
    a = math.isqrt(n_values - 1) + 1
    return a, -(-n_values // a)


def value_words(n_values: int) -> list[str]:
    """The V value words in candidate order, first letter major ("bab", "bad", …): word j is grid cell
    (j // b, j % b)."""
    a, b = word_grid(n_values)
    return [CONSONANTS[i] + VOWELS[i % len(VOWELS)] + CONSONANTS[j] for i in range(a) for j in range(b)][:n_values]


def entity_names(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct invented names ("ravo kitu"), all ``NAME_BYTES`` long, deterministic in ``seed``."""
    s = len(NAME_SYLLABLES)
    codes = random.Random(seed).sample(range(s**4), n)
    return [NAME_SYLLABLES[c // s**3] + NAME_SYLLABLES[c // s**2 % s] + " "
            + NAME_SYLLABLES[c // s % s] + NAME_SYLLABLES[c % s] for c in codes]


def line_bytes(n_attributes: int = 4) -> int:
    """Bytes of one fact line (every line has the same length): '@' name ': ' a=vvv; … '.' newline."""
    tags = sum(len(a) + 1 + 3 for a in ATTRIBUTE_NAMES[:n_attributes])
    return 1 + NAME_BYTES + 2 + tags + 2 * (n_attributes - 1) + 2


def lines_per_row(seq_len: int, n_attributes: int = 4) -> int:
    """Whole lines in a row of seq_len + 1 bytes that starts with a newline."""
    k = seq_len // line_bytes(n_attributes)
    if k < 1:
        raise ValueError(f"seq_len={seq_len} is shorter than one fact line ({line_bytes(n_attributes)} bytes with "
                         f"{n_attributes} attributes); use seq_len >= {line_bytes(n_attributes)}")
    return k


def rows_per_pass(n_entities: int, seq_len: int, n_attributes: int = 4) -> int:
    """Rows of one pass over the facts (every entity once)."""
    return -(-n_entities // lines_per_row(seq_len, n_attributes))


def steps_for_exposures(exposures: float, n_entities: int, seq_len: int, batch_size: int,
                        n_attributes: int = 4) -> int:
    """Training steps after which every fact has been seen ``exposures`` times."""
    return max(1, math.ceil(exposures * rows_per_pass(n_entities, seq_len, n_attributes) / batch_size))


def bits_in(n_entities: int, n_attributes: int = 4, n_values: int = 256) -> float:
    """Information in the knowledge base: N · A · log2 V bits."""
    return n_entities * n_attributes * math.log2(n_values)


# ---------------------------------------------------------------------------------------------------------- the facts
@dataclass
class KnowledgeBase:
    """N trained entities (ids 0 … N−1) and ``n_heldout`` never-trained ones (ids N … N+H−1), A attributes each,
    values uniform over V words; everything is a function of ``seed``."""

    n_entities: int = 1000
    n_attributes: int = 4
    n_values: int = 256
    n_heldout: int = 64
    seed: int = 0
    names: list = field(init=False, repr=False)
    values: torch.Tensor = field(init=False, repr=False)  # (N + H, A) int64 word ids

    def __post_init__(self):
        check_positive_int(self.n_entities, "n_entities")
        if not 1 <= self.n_attributes <= len(ATTRIBUTE_NAMES):
            raise ValueError(f"n_attributes={self.n_attributes} must lie in [1, {len(ATTRIBUTE_NAMES)}]")
        if self.n_heldout < 0:
            raise ValueError(f"n_heldout must be >= 0, got {self.n_heldout}")
        self.words = value_words(self.n_values)
        self.names = entity_names(self.n_entities + self.n_heldout, self.seed)
        g = torch.Generator().manual_seed(self.seed)
        self.values = torch.randint(0, self.n_values, (self.n_entities + self.n_heldout, self.n_attributes),
                                    generator=g)

    @property
    def attributes(self) -> tuple[str, ...]:
        return ATTRIBUTE_NAMES[: self.n_attributes]

    @property
    def bits(self) -> float:
        """N · A · log2 V: what a model that stored every trained fact would hold."""
        return bits_in(self.n_entities, self.n_attributes, self.n_values)

    @property
    def chance(self) -> float:
        """Ranking accuracy of a uniform guess: exactly 1/V."""
        return 1 / self.n_values

    def heldout_ids(self) -> range:
        return range(self.n_entities, self.n_entities + self.n_heldout)

    def line(self, entity: int, order=None) -> str:
        """One fact line of ``entity``, attributes in ``order`` (default: tag order)."""
        order = range(self.n_attributes) if order is None else order
        facts = "; ".join(f"{self.attributes[a]}={self.words[int(self.values[entity, a])]}" for a in order)
        return f"@{self.names[entity]}: {facts}.\n"

    def prompt(self, entity: int, attribute: int) -> str:
        """The probe's question: a newline (every line follows one), then ``@name: attr=``."""
        return f"\n@{self.names[entity]}: {self.attributes[attribute]}="

    def fact(self, entity: int, attribute: int) -> str:
        return self.words[int(self.values[entity, attribute])]


# ---------------------------------------------------------------------------------------------------------- scoring
def candidate_log_probs(lp0: torch.Tensor, lp1: torch.Tensor, lp2: torch.Tensor, n_values: int) -> torch.Tensor:
    """log P(word) of every candidate word from the model's byte log-probabilities (n, V).

    lp0 (n, 256): the first byte after the prompt; lp1, lp2 (n, a, 256): the second and third byte after the prompt
    followed by first letter i (and its vowel). Word (i, j) = CONSONANTS[i] VOWEL(i) CONSONANTS[j]."""
    a, b = word_grid(n_values)
    first = torch.tensor([ord(c) for c in CONSONANTS[:a]], device=lp0.device)
    vowel = torch.tensor([ord(VOWELS[i % len(VOWELS)]) for i in range(a)], device=lp0.device)
    last = torch.tensor([ord(c) for c in CONSONANTS[:b]], device=lp0.device)
    rows = torch.arange(a, device=lp0.device)
    head = lp0[:, first] + lp1[:, rows, vowel]                 # (n, a): first letter and its vowel
    return (head[:, :, None] + lp2[:, :, last]).flatten(1)[:, :n_values]


def greedy_words(lp0: torch.Tensor, lp1: torch.Tensor, lp2: torch.Tensor, n_values: int) -> torch.Tensor:
    """Word id that greedy decoding (argmax byte by byte, over all 256 bytes) writes, or −1 if it is no candidate."""
    a, b = word_grid(n_values)
    code = torch.full((256,), -1, dtype=torch.long, device=lp0.device)
    first_ix, last_ix = code.clone(), code.clone()
    first_ix[[ord(c) for c in CONSONANTS[:a]]] = torch.arange(a, device=lp0.device)
    last_ix[[ord(c) for c in CONSONANTS[:b]]] = torch.arange(b, device=lp0.device)
    vowel = torch.tensor([ord(VOWELS[i % len(VOWELS)]) for i in range(a)], device=lp0.device)
    i = first_ix[lp0.argmax(-1)]                                # (n,)
    safe = i.clamp(min=0)
    n = torch.arange(lp0.shape[0], device=lp0.device)
    ok_vowel = lp1[n, safe].argmax(-1) == vowel[safe]
    j = last_ix[lp2[n, safe].argmax(-1)]
    word = safe * b + j
    valid = (i >= 0) & ok_vowel & (j >= 0) & (word < n_values)
    return torch.where(valid, word, torch.full_like(word, -1))


def ranking_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per fact: 1 if the target scores highest among the candidates, ties shared (1/t for a t-way tie at the top),
    else 0 — so a uniform guess scores exactly 1/V. logits (n, V) (any monotone score), target (n,)."""
    t = logits.gather(1, target[:, None])
    above = (logits > t).sum(1)
    tied = (logits == t).sum(1)
    return torch.where(above == 0, 1.0 / tied.double(), torch.zeros((), dtype=torch.float64))


def bits_stored(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per fact: log2 V + log2 q(v*), q = softmax of ``log_probs`` over the V candidates (renormalised)."""
    q = torch.log_softmax(log_probs.double(), dim=1).gather(1, target[:, None]).squeeze(1)
    return math.log2(log_probs.shape[1]) + q / math.log(2)


@torch.no_grad()
def probe_log_probs(model, kb: KnowledgeBase, entities, attribute: int, chunk: int = 2048):
    """(candidate log-probabilities (n, V), greedy word ids (n,)) for the prompt ``@name: attr=`` of each entity.

    One sequence per (entity, first letter): prompt + letter + its vowel; its last three positions give the three
    byte distributions ``candidate_log_probs`` and ``greedy_words`` combine."""
    device = next(model.parameters()).device
    a, _ = word_grid(kb.n_values)
    tail = torch.tensor([[ord(CONSONANTS[i]), ord(VOWELS[i % len(VOWELS)])] for i in range(a)])
    entities = list(entities)
    scores, greedy = [], []
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(entities), max(1, chunk // a)):
            part = entities[s: s + max(1, chunk // a)]
            prompts = torch.tensor([list(kb.prompt(e, attribute).encode()) for e in part])  # (n, P)
            n, p = prompts.shape
            ids = torch.cat([prompts[:, None, :].expand(n, a, p), tail[None].expand(n, a, 2)], dim=2)
            logits, _ = model(ids.reshape(n * a, p + 2).to(device))
            lp = torch.log_softmax(logits[:, p - 1:].float(), dim=-1).reshape(n, a, 3, -1)
            lp0, lp1, lp2 = lp[:, 0, 0], lp[:, :, 1], lp[:, :, 2]
            scores.append(candidate_log_probs(lp0, lp1, lp2, kb.n_values).cpu())
            greedy.append(greedy_words(lp0, lp1, lp2, kb.n_values).cpu())
    finally:
        model.train(was_training)
    return torch.cat(scores), torch.cat(greedy)


def score_facts(model, kb: KnowledgeBase, entities) -> dict:
    """Every scoring formula over (entities × attributes): {exact, rank_acc, bits, facts, per_attribute: [...]}.
    ``exact`` and ``rank_acc`` are means; ``bits`` is the sum over facts."""
    entities = list(entities)
    per_attribute, exact, rank, bits = [], [], [], []
    for a in range(kb.n_attributes):
        log_probs, greedy = probe_log_probs(model, kb, entities, a)
        target = kb.values[entities, a]
        e, r, b = (greedy == target).double(), ranking_accuracy(log_probs, target), bits_stored(log_probs, target)
        per_attribute.append({"attribute": kb.attributes[a], "exact": float(e.mean()), "rank_acc": float(r.mean()),
                              "bits": float(b.sum())})
        exact.append(e), rank.append(r), bits.append(b)
    e, r, b = torch.cat(exact), torch.cat(rank), torch.cat(bits)
    return {"exact": float(e.mean()), "rank_acc": float(r.mean()), "bits": float(b.sum()), "facts": len(e),
            "per_attribute": per_attribute}


# ---------------------------------------------------------------------------------------------------------- controls
@contextlib.contextmanager
def memory_zeroed(model, layers=None):
    """Within the block, the FFN slot of ``layers`` (default: the model config's ``memory_layer_ids()``: the layers a
    memory variant fills) outputs zeros — the memory of pkm / memoryplus / peer, the MoE or Memory Block there, and
    for dense the FFN a memory would replace. The hooks are removed on exit."""
    ids = set(model.config.memory_layer_ids() if layers is None else layers)
    handles = [block.ffn.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
               for block in model.blocks if block.layer_id in ids]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


def prompt_rows(model, kb: KnowledgeBase, entities, attribute: int, chunk: int = 4096) -> dict:
    """{memory layer: (rows (n, r), weights (n, r), rows in the memory)} that each prompt's last byte reads, for the
    memories ``memlab.lab.models.memory_layers`` names (layer{i}.pkm, layer{i}.mb2, layer{i}.moe, …; {} for dense).

    The forward pass keeps autograd on (as ``memlab.lab.snapshots.memory_inputs`` does): without it a layer may take a
    fused path that never calls the sub-module whose input the hook records."""
    from .models.usage import addressed_rows, memory_layers

    layers = memory_layers(model)
    if not layers:
        return {}
    device = next(model.parameters()).device
    found: dict = {name: ([], [], 0) for name in layers}
    inputs: dict = {}
    handles = [m.register_forward_pre_hook(lambda m, args, name=name: inputs.__setitem__(name, args[0][:, -1:]))
               for name, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        entities = list(entities)
        for s in range(0, len(entities), chunk):
            ids = torch.tensor([list(kb.prompt(e, attribute).encode()) for e in entities[s: s + chunk]])
            inputs.clear()
            with torch.enable_grad():
                model(ids.to(device))
            missing = set(layers) - set(inputs)
            if missing:
                raise RuntimeError(f"memory layer(s) {sorted(missing)} were not called by the forward pass")
            for name, module in layers.items():
                with torch.no_grad():
                    rows, weights, n_rows = addressed_rows(module, inputs[name].detach())
                found[name][0].append(rows.cpu())
                found[name][1].append(weights.float().cpu())
                found[name] = (found[name][0], found[name][1], n_rows)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {name: (torch.cat(r), torch.cat(w), n) for name, (r, w, n) in found.items()}


# ---------------------------------------------------------------------------------------------------------- stream
class KnowledgeStream:
    """The training stream of a ``KnowledgeBase``: rows of whole fact lines, pass after pass, each pass a fresh
    shuffle of the entities and of every line's attribute order. ``batch(step)`` is a function of the step alone,
    so a resumed run reads the same batches."""

    def __init__(self, kb: KnowledgeBase, seq_len: int):
        self.kb, self.seq_len = kb, seq_len
        self.lines_per_row = lines_per_row(seq_len, kb.n_attributes)
        self.rows_per_pass = rows_per_pass(kb.n_entities, seq_len, kb.n_attributes)
        self._passes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def pass_rows(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (rows_per_pass, seq_len) int64, of pass ``index`` (the last two are cached)."""
        if index not in self._passes:
            kb, k, width = self.kb, self.lines_per_row, self.seq_len + 1
            rng = random.Random(kb.seed * 1_000_003 + index)
            order = list(range(kb.n_entities))
            rng.shuffle(order)
            lines = [kb.line(e, rng.sample(range(kb.n_attributes), kb.n_attributes)) for e in order]
            rows = [("\n" + "".join(lines[i: i + k])).encode() for i in range(0, len(lines), k)]
            data = torch.frombuffer(bytearray(b"".join(r.ljust(width, b"\n") for r in rows)), dtype=torch.uint8)
            data = data.reshape(len(rows), width).long()
            targets = data[:, 1:].clone()
            used = torch.tensor([len(r) for r in rows])[:, None]
            targets[torch.arange(self.seq_len)[None, :] >= used - 1] = IGNORE  # padding is not trained
            if len(self._passes) >= 2:
                self._passes.pop(next(iter(self._passes)))
            self._passes[index] = (data[:, :-1], targets)
        return self._passes[index]

    def batch(self, step: int, batch_size: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows step·B … step·B + B − 1 of the endless stream (pass = row // rows_per_pass)."""
        xs, ys = [], []
        for g in range(step * batch_size, (step + 1) * batch_size):
            x, y = self.pass_rows(g // self.rows_per_pass)
            xs.append(x[g % self.rows_per_pass])
            ys.append(y[g % self.rows_per_pass])
        return torch.stack(xs).to(device), torch.stack(ys).to(device)

    def eval_batches(self, n_batches: int, batch_size: int) -> list:
        """Fixed batches of the facts in an order no training pass uses (pass −1): the "validation" loss of a
        memorisation task is the loss on the training facts."""
        x, y = self.pass_rows(-1)
        idx = torch.arange(n_batches * batch_size) % x.shape[0]
        return [(x[i], y[i]) for i in idx.split(batch_size)]

    def exposures(self, steps: int, batch_size: int) -> float:
        """Times every fact has been seen after ``steps`` steps."""
        return steps * batch_size / self.rows_per_pass

    def score(self, model, steps: int, batch_size: int, sample_entities: int = 12, control_entities: int = 1000,
              top_rows: int = 4) -> dict:
        """The probe and its controls → flat ``kb_*`` metrics plus ``details`` (per-attribute scores, memory rows
        used per layer, and for the first ``sample_entities`` entities every fact with the rows its prompt reads)."""
        kb = self.kb
        params = model.param_counts()
        trained = score_facts(model, kb, range(kb.n_entities))
        heldout = score_facts(model, kb, kb.heldout_ids()) if kb.n_heldout else None
        control = range(min(kb.n_entities, control_entities))
        with memory_zeroed(model):
            zeroed = score_facts(model, kb, control)
        layers, sample = {}, []
        shown = list(range(min(sample_entities, kb.n_entities)))
        for a in range(kb.n_attributes):
            rows = prompt_rows(model, kb, range(kb.n_entities), a)
            for name, (r, w, n_rows) in rows.items():
                hit = layers.setdefault(name, {"rows": n_rows, "hit": torch.zeros(n_rows, dtype=torch.bool)})["hit"]
                hit[r.reshape(-1)] = True
            log_probs, greedy = probe_log_probs(model, kb, shown, a)
            for i, e in enumerate(shown):
                order = {name: w[e].argsort(descending=True)[:top_rows] for name, (_, w, _) in rows.items()}
                sample.append({
                    "entity": kb.names[e], "attribute": kb.attributes[a], "value": kb.fact(e, a),
                    "greedy": kb.words[int(greedy[i])] if greedy[i] >= 0 else None,
                    "rank_correct": float(ranking_accuracy(log_probs[i: i + 1], kb.values[[e], a])[0]),
                    "rows": {name: r[e][order[name]].tolist() for name, (r, _, _) in rows.items()},
                })
        layer_use = {name: {"rows": v["rows"], "rows_hit": int(v["hit"].sum()),
                            "fraction_hit": float(v["hit"].double().mean())} for name, v in layers.items()}
        facts = trained["facts"]
        metrics = {
            "kb_entities": kb.n_entities, "kb_attributes": kb.n_attributes, "kb_values": kb.n_values,
            "kb_facts": facts, "kb_bits_max": kb.bits, "kb_chance": kb.chance,
            "kb_exposures": self.exposures(steps, batch_size),
            "kb_exact": trained["exact"], "kb_rank_acc": trained["rank_acc"], "kb_bits": trained["bits"],
            "kb_bits_per_fact": trained["bits"] / facts,
            "kb_bits_per_param": trained["bits"] / params["total"],
            "kb_bits_per_active_param": trained["bits"] / params["active"],
            "kb_heldout_exact": heldout["exact"] if heldout else math.nan,
            "kb_heldout_rank_acc": heldout["rank_acc"] if heldout else math.nan,
            "kb_heldout_bits_per_fact": heldout["bits"] / heldout["facts"] if heldout else math.nan,
            "kb_zeroed_rank_acc": zeroed["rank_acc"], "kb_zeroed_bits_per_fact": zeroed["bits"] / zeroed["facts"],
            "kb_rows_hit_fraction": (sum(v["fraction_hit"] for v in layer_use.values()) / len(layer_use)
                                     if layer_use else math.nan),
        }
        details = {"per_attribute": trained["per_attribute"], "layers": layer_use, "sample": sample,
                   "zeroed_layers": list(model.config.memory_layer_ids())}
        return {**metrics, "details": details}


def build_stream(n_entities: int, seq_len: int, n_attributes: int = 4, n_values: int = 256, n_heldout: int = 64,
                 seed: int = 0) -> KnowledgeStream:
    """The knowledge base of ``seed`` and its stream (what ``train`` builds for ``task="knowledge"``)."""
    return KnowledgeStream(KnowledgeBase(n_entities, n_attributes, n_values, n_heldout, seed), seq_len)
