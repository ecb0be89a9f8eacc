"""Factual capacity (memlab.lab.knowledge): the knowledge stream, every scoring formula on distributions whose answer
is known, the controls (held-out entities at chance, zeroed memory), the capacity study's design, and the notebook's
view function."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from memlab.lab import capacity
from memlab.lab import knowledge as K
from memlab.lab import sweep
from memlab.lab.models import ModelConfig, build_model
from memlab.lab.studies import CAPACITY_BEND, CAPACITY_EXPOSURES, STUDIES, capacity_label
from memlab.lab.train import TrainConfig, train

TINY = dict(d_model=16, n_layers=2, n_heads=2, seq_len=49, pkm_n_keys=8, pkm_heads=2, pkm_topk=2, tau=4,
            expand_bits=1, moe_experts=4, moe_topk=2)


def tiny_model(kind="pkm", seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(kind, **{**TINY, **kw})


# ---------------------------------------------------------------------------------------------------------- the facts
def test_words_names_and_lines_have_the_documented_shape():
    words = K.value_words(256)
    assert len(words) == len(set(words)) == 256 and {len(w) for w in words} == {3}
    assert words[:3] == ["bab", "bad", "baf"] and K.word_grid(256) == (16, 16) and K.word_grid(10) == (4, 3)
    names = K.entity_names(500, seed=3)
    assert len(set(names)) == 500 and {len(n) for n in names} == {K.NAME_BYTES}
    kb = K.KnowledgeBase(30, n_attributes=4, n_values=256, n_heldout=5, seed=1)
    assert {len(kb.line(e, order)) for e in range(35) for order in ([0, 1, 2, 3], [3, 1, 0, 2])} == {K.line_bytes(4)}
    assert K.line_bytes(4) == 49 and kb.bits == 30 * 4 * 8 and kb.chance == 1 / 256
    assert kb.prompt(0, 2) == f"\n@{kb.names[0]}: job="
    assert f"job={kb.fact(0, 2)};" in kb.line(0) or kb.line(0).endswith(f"job={kb.fact(0, 2)}.\n")
    assert K.bits_in(1000, 4, 256) == 32_000
    with pytest.raises(ValueError, match="n_values"):
        K.value_words(401)
    with pytest.raises(ValueError, match="shorter than one fact line"):
        K.lines_per_row(40)


def test_stream_packs_whole_lines_every_entity_once_per_pass_and_never_the_heldout():
    kb = K.KnowledgeBase(10, n_attributes=3, n_values=16, n_heldout=4, seed=0)
    stream = K.KnowledgeStream(kb, seq_len=2 * K.line_bytes(3) + 5)  # 2 lines per row, 5 padding bytes
    assert stream.lines_per_row == 2 and stream.rows_per_pass == 5
    x, y = stream.pass_rows(0)
    assert x.shape == y.shape == (5, stream.seq_len)
    text = "".join(bytes(row[:1 + 2 * K.line_bytes(3)].tolist()).decode() for row in x)
    lines = [line for line in text.split("\n") if line]
    assert sorted(line.split(":")[0][1:] for line in lines) == sorted(kb.names[:10])  # each trained entity once
    assert not any(name in text for name in kb.names[10:])                          # held-out: never trained
    assert (y[:, -5:] == K.IGNORE).all() and (y[:, :-5] != K.IGNORE).all()         # padding is not trained
    assert torch.equal(y[:, :-5], x[:, 1:-4])  # targets are the next byte
    orders = {stream.pass_rows(p)[0][0, 1:13].tolist().__repr__() for p in range(6)}
    assert len(orders) > 1  # a fresh shuffle each pass
    a, b = stream.batch(3, 4), stream.batch(3, 4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # a function of the step: exact resume


def test_steps_for_exposures_sees_every_fact_that_often():
    kb = K.KnowledgeBase(7, n_attributes=2, n_values=16, n_heldout=0, seed=2)
    stream = K.KnowledgeStream(kb, seq_len=3 * K.line_bytes(2))
    steps = K.steps_for_exposures(4, 7, stream.seq_len, batch_size=2, n_attributes=2)
    seen = {name: 0 for name in kb.names}
    for s in range(steps):
        for row in stream.batch(s, 2)[0]:
            for line in bytes(row.tolist()).decode().split("\n"):
                if line.startswith("@"):
                    seen[line[1:1 + K.NAME_BYTES]] += 1
    assert min(seen.values()) >= 4 and stream.exposures(steps, 2) >= 4


# ---------------------------------------------------------------------------------------------------------- formulas
def test_ranking_accuracy_is_exactly_chance_for_a_uniform_guess_and_shares_ties():
    V = 8
    target = torch.tensor([0, 3, 5, 7])
    assert torch.allclose(K.ranking_accuracy(torch.zeros(4, V), target), torch.full((4,), 1 / V, dtype=torch.float64))
    scores = torch.tensor([[5.0, 1, 1, 1, 1, 1, 1, 1],     # target 0 on top: 1
                           [0.0, 0, 0, 9, 9, 0, 0, 0],     # target 3 tied with 4 at the top: 1/2
                           [0.0, 0, 0, 0, 0, 1, 2, 0],     # target 5 below 6: 0
                           [0.0, 0, 0, 0, 0, 0, 0, -1]])   # target 7 last: 0
    assert K.ranking_accuracy(scores, target).tolist() == [1.0, 0.5, 0.0, 0.0]


def test_bits_stored_on_distributions_with_known_answers():
    V = 16
    t = torch.tensor([2])
    certain = torch.full((1, V), -1e9)
    certain[0, 2] = 0.0
    assert K.bits_stored(certain, t).item() == pytest.approx(4.0)                  # log2 V: the whole value
    assert K.bits_stored(torch.zeros(1, V), t).item() == pytest.approx(0.0, abs=1e-12)  # uniform: nothing
    half = torch.full((1, V), math.log(0.5 / (V - 1)))
    half[0, 2] = math.log(0.5)
    assert K.bits_stored(half, t).item() == pytest.approx(3.0)                     # q = 1/2: log2 V − 1
    # renormalised over the candidates: only 1 % of the byte-level mass on them changes nothing
    assert K.bits_stored(half + math.log(0.01), t).item() == pytest.approx(3.0)
    wrong = half.clone()
    wrong[0, 2], wrong[0, 3] = wrong[0, 3].item(), wrong[0, 2].item()
    assert K.bits_stored(wrong, t).item() == pytest.approx(4 + math.log2(0.5 / 15))  # confidently wrong: < 0


def test_candidate_log_probs_and_greedy_from_byte_distributions():
    V = 16  # grid 4 × 4: first letters b d f g (vowels a e i o), last letters b d f g
    n = 1
    lp0 = torch.full((n, 256), -1e9)
    lp0[0, ord("b")], lp0[0, ord("d")] = math.log(0.75), math.log(0.25)
    lp1 = torch.full((n, 4, 256), -1e9)
    for i, v in enumerate("aeio"):
        lp1[0, i, ord(v)] = 0.0                                   # the vowel always follows its letter
    lp2 = torch.full((n, 4, 256), math.log(1e-12))
    lp2[0, :, ord("b"):ord("b") + 1] = math.log(0.1)
    for i in range(4):
        lp2[0, i, ord("g")] = math.log(0.9)
    logp = K.candidate_log_probs(lp0, lp1, lp2, V)
    words = K.value_words(V)
    p = dict(zip(words, logp[0].exp().tolist()))
    assert p["bag"] == pytest.approx(0.75 * 0.9) and p["deb"] == pytest.approx(0.25 * 0.1)
    assert sum(p.values()) == pytest.approx(1.0, abs=1e-6)
    assert K.greedy_words(lp0, lp1, lp2, V).tolist() == [words.index("bag")]
    lp1[0, 0, ord("a")], lp1[0, 0, ord("u")] = -5.0, 0.0           # greedy writes "bu…": no candidate
    assert K.greedy_words(lp0, lp1, lp2, V).tolist() == [-1]
    lp0[0, ord("x")] = 5.0                                         # first byte not a value letter
    assert K.greedy_words(lp0, lp1, lp2, V).tolist() == [-1]


def test_probe_matches_teacher_forcing_every_candidate():
    """The brute-force twin: log P(word | prompt) by running the model on prompt + word for each of the V words."""
    kb = K.KnowledgeBase(3, n_attributes=2, n_values=10, n_heldout=0, seed=4)
    model = tiny_model("memoryplus").eval()
    logp, greedy = K.probe_log_probs(model, kb, range(3), attribute=1)
    for e in range(3):
        prompt = list(kb.prompt(e, 1).encode())
        for j, word in enumerate(kb.words):
            ids = torch.tensor([prompt + list(word.encode())])
            lp = torch.log_softmax(model(ids)[0][0].float(), -1)
            brute = sum(lp[len(prompt) - 1 + i, ids[0, len(prompt) + i]].item() for i in range(3))
            assert logp[e, j].item() == pytest.approx(brute, abs=1e-4)
        ids = torch.tensor([prompt])
        written = bytes(model.generate(ids, 3, temperature=0)[0, len(prompt):].tolist()).decode("latin-1")
        assert (kb.words[greedy[e]] if greedy[e] >= 0 else None) == (written if written in kb.words else None)


# ---------------------------------------------------------------------------------------------------------- controls
def test_an_untrained_model_scores_chance_on_heldout_entities():
    kb = K.KnowledgeBase(4, n_attributes=4, n_values=16, n_heldout=96, seed=5)
    scores = K.score_facts(tiny_model("pkm", seed=1), kb, kb.heldout_ids())
    assert scores["facts"] == 384
    sigma = math.sqrt(kb.chance * (1 - kb.chance) / scores["facts"])
    assert abs(scores["rank_acc"] - kb.chance) < 5 * sigma      # 1/16 ± 0.06
    assert abs(scores["bits"] / scores["facts"]) < 0.05          # near-uniform predictions store ~0 bits
    assert scores["exact"] < 0.2


@pytest.mark.parametrize("kind", ["pkm", "memoryplus", "peer", "dense"])
def test_memory_zeroed_removes_exactly_the_memory_contribution(kind):
    model = tiny_model(kind).eval()
    ids = torch.randint(0, 256, (2, 12))
    before = model(ids)[0]
    reference = copy.deepcopy(model)
    layer = model.config.memory_layer_ids()[0]
    ffn = reference.blocks[layer].ffn
    with torch.no_grad():  # the memory's output is 0 when what it reads (values / the FFN's output rows) is 0
        {"pkm": lambda: ffn.values.weight.zero_(), "memoryplus": lambda: ffn.out_proj.weight.zero_(),
         "peer": lambda: ffn.values.weight.zero_(), "dense": lambda: ffn.w2.weight.zero_()}[kind]()
    with K.memory_zeroed(model):
        zeroed = model(ids)[0]
    assert torch.allclose(zeroed, reference(ids)[0], atol=1e-6)
    assert not torch.allclose(zeroed, before, atol=1e-4)
    assert torch.equal(model(ids)[0], before)  # hooks removed on exit


def test_prompt_rows_name_the_rows_each_prompt_reads():
    kb = K.KnowledgeBase(5, n_attributes=2, n_values=16, n_heldout=0)
    rows = K.prompt_rows(tiny_model("pkm"), kb, range(5), 0)
    (name, (r, w, n_rows)), = rows.items()
    assert name == "layer1.pkm" and r.shape == w.shape == (5, 2 * 2) and n_rows == 64
    assert K.prompt_rows(tiny_model("dense"), kb, range(5), 0) == {}
    with torch.no_grad():  # Memory+ has a fused path without autograd that skips its product-key sub-module
        (name, (r, w, n_rows)), = K.prompt_rows(tiny_model("memoryplus"), kb, range(5), 1).items()
    assert name == "layer1.pkm" and r.shape == (5, 4)
    mf = K.prompt_rows(tiny_model("memoryformer"), kb, range(5), 0)
    assert {k.split(".")[1] for k in mf} == {"qkv", "mb1", "mb2"}


# ---------------------------------------------------------------------------------------------------------- training
def test_train_on_the_knowledge_task_writes_the_capacity_scores(tmp_path):
    cfg = dict(task="knowledge", knowledge_entities=6, knowledge_attributes=2, knowledge_values=16,
               knowledge_heldout=4, steps=4, batch_size=2, warmup_steps=1, eval_every=2, eval_batches=1,
               stats_every=4, ckpt_every=4, log_every=2, out_dir=str(tmp_path), name="kb")
    results = train({**TINY, "model": "pkm"}, cfg, verbose=False)
    assert results["kb_facts"] == 12 and results["kb_bits_max"] == 48 and results["kb_chance"] == 1 / 16
    assert results["kb_exposures"] == pytest.approx(4 * 2 / 6)  # 6 entities, 1 line per row of 49 + 1 bytes
    assert results["kb_bits_per_param"] == pytest.approx(results["kb_bits"] / results["params_total"])
    assert 0 <= results["kb_rows_hit_fraction"] <= 1
    details = results["details"]
    assert [a["attribute"] for a in details["per_attribute"]] == ["city", "pet"] and len(details["sample"]) == 12
    assert json.loads((tmp_path / "kb" / "results.json").read_text())["kb_facts"] == 12
    with pytest.raises(ValueError, match="task="):
        TrainConfig.from_dict({"task": "knowlege"})


def test_a_killed_knowledge_run_resumes_to_the_same_losses(tmp_path):
    cfg = dict(task="knowledge", knowledge_entities=5, knowledge_attributes=2, knowledge_values=16,
               knowledge_heldout=2, steps=6, batch_size=2, warmup_steps=1, eval_every=3, eval_batches=1,
               stats_every=0, ckpt_every=3, log_every=3, out_dir=str(tmp_path))
    model = {**TINY, "model": "dense"}
    straight = train(model, {**cfg, "name": "a"}, verbose=False)
    train(model, {**cfg, "name": "b", "stop_after": 3}, verbose=False)
    resumed = train(model, {**cfg, "name": "b"}, resume=True, verbose=False)
    assert [h["loss"] for h in straight["history"]] == [h["loss"] for h in resumed["history"]]
    assert straight["kb_bits"] == resumed["kb_bits"]


def test_the_sweep_turns_kb_metrics_into_columns_and_exports_details(tmp_path):
    from memlab.lab.studies import Study

    study = Study("kb-tiny", "tiny", {**TINY, "model": "pkm"},
                  dict(task="knowledge", knowledge_entities=4, knowledge_attributes=1, knowledge_values=16,
                       knowledge_heldout=2, steps=2, batch_size=2, warmup_steps=1, eval_every=2, eval_batches=1,
                       stats_every=2, ckpt_every=2, log_every=2),
                  points=(("pkm, N=4", {}), ("pkm, N=6", {"knowledge_entities": 6})), seeds=1)
    with pytest.raises(ValueError, match=r"no point 'pkm, N=5' \(did you mean"):
        sweep.run_sweep(study, out=tmp_path, progress=False, points=["pkm, N=5"])
    assert not (tmp_path / "kb-tiny").exists()  # nothing written for a bad label
    df = sweep.run_sweep(study, out=tmp_path, progress=False, points=["pkm, N=4"])  # a pilot: one point
    assert len(df) == 1 and df.loc[0, "status"] == "ok" and df.loc[0, "kb_facts"] == 4 and "kb_bits" in df.columns
    assert list(sweep.load("kb-tiny", tmp_path)["status"]) == ["ok", "pending"]
    path = sweep.export_details("kb-tiny", tmp_path, tmp_path / "kb-tiny.details.json")
    records = capacity.load_details(path)
    (record,) = records.values()
    assert record["model"] == "pkm" and record["kb_entities"] == 4 and record["details"]["sample"]


def test_curves_average_each_runs_loss_over_windows_and_skip_unfinished_runs(tmp_path, monkeypatch):
    folder = tmp_path / capacity.STUDY
    folder.mkdir()
    tasks = [{"key": "a", "point": "dense, N=10", "seed": 0}, {"key": "b", "point": "dense, N=10", "seed": 1},
             {"key": "c", "point": "pkm, N=10", "seed": 0}]
    (folder / "manifest.json").write_text(json.dumps({"format": sweep.FORMAT, "study": "capacity", "tasks": tasks}))
    history = [{"step": i + 1, "loss": float(i)} for i in range(5)]  # losses 0 1 2 3 4
    for key, status in (("a", "ok"), ("b", "failed")):  # "c" never finished
        record = {"format": sweep.FORMAT, "key": key, "status": status,
                  "results": {"history": history, "steps": 5, "kb_exposures": 10.0}}
        (folder / f"{key}.json").write_text(json.dumps(record))
    path = capacity.export_curves(tmp_path, tmp_path / "capacity.curves.csv", window=2)
    monkeypatch.setenv("MEMLAB_CAPACITY", str(tmp_path))
    curves = capacity.load_curves()
    assert path == tmp_path / "capacity.curves.csv"
    assert curves[["step", "exposures", "loss"]].values.tolist() == [[2, 4.0, 0.5], [4, 8.0, 2.5], [5, 10.0, 4.0]]
    assert set(curves["arch"]) == {"dense"} and set(curves["N"]) == {10} and set(curves["seed"]) == {0}
    ax = capacity.plot_curves(curves, 10)
    assert len(ax.lines) >= 1 and "exposures" in ax.get_xlabel()
    assert capacity.export_curves(tmp_path / "nothing-here", tmp_path / "x.csv") is None
    assert not (tmp_path / "x.csv").exists()


# ---------------------------------------------------------------------------------------------------------- the study
def test_capacity_study_is_matched_in_flops_and_gives_each_point_its_exposures():
    study = STUDIES["capacity"]
    assert not study.in_all  # make capacity, not make ablations
    tasks = sweep.plan("capacity")
    assert not [t.error for t in tasks if t.error]
    assert len(tasks) == sum(study.seeds_of(label) for label, _ in study.point_list())
    flops, params = {}, {}
    for label, values in study.point_list():
        model = build_model(ModelConfig.from_dict({**study.model, **{k: v for k, v in values.items()
                                                                   if k in ModelConfig.__dataclass_fields__}}))
        arch = label.split(",")[0]
        flops[arch], params[arch] = model.flops_per_token()["total"], model.param_counts()["total"]
        n = values["knowledge_entities"]
        rows = K.rows_per_pass(n, study.model["seq_len"])
        assert values["steps"] * study.train["batch_size"] / rows >= CAPACITY_EXPOSURES  # every fact that often
    assert 30_000 < params["dense"] < 36_000  # dense-tiny: ~33 k parameters
    for arch in ("moe", "pkm", "memoryplus", "peer"):
        assert abs(flops[arch] / flops["dense"] - 1) < 0.05, arch  # matched FLOPs/token
    assert 8 < flops["dense-10x"] / flops["dense"] < 12
    assert flops["memoryformer"] < flops["dense"]
    bend = [capacity_label(arch, n) for arch, n in CAPACITY_BEND]
    assert len(bend) == 5 and set(bend) <= {label for label, _ in study.point_list()}
    assert {label: study.seeds_of(label) for label in bend} == {label: 3 for label in bend}
    assert sum(study.seeds_of(label) == 1 for label, _ in study.point_list()) == len(study.point_list()) - len(bend)


def test_knowledge_fields_at_their_defaults_leave_other_studies_keys_alone():
    task = sweep.plan("mf-tau", seeds=1)[0]
    without = {k: v for k, v in task.train.items() if not k.startswith(("task", "knowledge"))}
    assert sweep.config_key(task.model, without) == task.key
    assert sweep.config_key(task.model, {**task.train, "task": "knowledge"}) != task.key


# ---------------------------------------------------------------------------------------------------------- the view
def test_fact_view_shows_one_run_or_says_what_exists():
    sample = [{"entity": "ravo kitu", "attribute": "city", "value": "bak", "greedy": "bak", "rank_correct": 1.0,
               "rows": {"layer1.pkm": [5, 9]}},
              {"entity": "lemi doza", "attribute": "city", "value": "dez", "greedy": None, "rank_correct": 0.0,
               "rows": {"layer1.pkm": [5, 2]}}]
    records = {"k1": {"model": "pkm", "kb_entities": 250, "seed": 0, "kb_rank_acc": 0.5, "kb_bits": 1000.0,
                      "details": {"per_attribute": [{"attribute": "city", "exact": 0.5, "rank_acc": 0.5,
                                                     "bits": 10.0}],
                                  "layers": {"layer1.pkm": {"rows": 64, "rows_hit": 3, "fraction_hit": 3 / 64}},
                                  "sample": sample}}}
    view = capacity.fact_view(records, "pkm", 250)
    assert view["found"] and view["per_attribute"][0]["rank_acc"] == 0.5
    assert [f["correct"] for f in view["facts"]] == [True, False] and view["facts"][1]["greedy"] == "—"
    assert view["facts"][0]["rows"] == "pkm@1: 5 9"
    assert view["shared_rows"] == {"layer1.pkm": 1}  # row 5 is the top row of both entities' prompts
    assert "50.0%" in view["text"] and "3 of 64 rows" in view["text"]
    missing = capacity.fact_view(records, "dense", 250)
    assert not missing["found"] and "pkm N=250" in missing["text"]


def _capacity_frame(rows):
    import pandas as pd

    df = pd.DataFrame([{"point": f"{arch}, N={n}", "seed": seed, "status": "ok", "kb_bits": bits,
                        "flops_per_token": flops, "kb_bits_max": 32 * n, "kb_entities": n}
                       for arch, n, seed, bits, flops in rows])
    return df.assign(arch=df["point"].str.split(", N=").str[0], N=df["point"].str.split(", N=").str[1].astype(int))


def test_dense_saturation_and_the_preregistered_verdict():
    dense = {250: 7000, 500: 14000, 1000: 26000, 2000: 30000, 4000: 31000}  # 1000 → 2000 adds 15 %: saturated
    rows = [("dense", n, s, b + 300 * s, 50_000) for n, b in dense.items()
            for s in range(3 if n in (1000, 2000) else 1)]
    rows += [("memoryplus", n, s, 2.5 * dense[n] + 500 * s, 51_000) for n in (1000, 2000) for s in range(3)]
    rows += [("pkm", n, s, dense[n] + 200 * s, 49_000) for n in (1000, 2000) for s in range(3)]
    rows += [("peer", 4000, 0, 90_000, 49_500), ("memoryplus", 4000, 0, 80_000, 51_000)]
    df = _capacity_frame(rows)
    assert capacity.dense_saturation(df) == 1000
    df["kb_rank_acc"] = 0.2
    assert capacity.saturation_kind(df, 1000) == "exposures"  # it never learned N = 1000: a training limit
    df.loc[(df["arch"] == "dense") & (df["N"] == 1000), "kb_rank_acc"] = 0.8
    assert capacity.saturation_kind(df, 1000) == "parameters" and capacity.saturation_kind(df, None) is None
    found = {(r["arch"], r["N"]): r["verdict"] for r in capacity.verdict(df)}
    assert found[("memoryplus", 1000)] == found[("memoryplus", 2000)] == capacity.HOLDS
    assert found[("pkm", 1000)] == found[("pkm", 2000)] == capacity.FAILS  # a null result is reported as one
    assert found[("memoryplus", 4000)] == capacity.FEW_SEEDS and found[("peer", 4000)] == capacity.FEW_SEEDS
    growing = _capacity_frame([("dense", n, 0, 30 * n, 50_000) for n in (250, 500, 1000)]
                              + [("pkm", 1000, 0, 60_000, 49_000)])
    assert capacity.dense_saturation(growing) is None
    assert capacity.verdict(growing)[0]["verdict"] == capacity.NO_SATURATION
    costly = _capacity_frame([("dense", 1000, s, 20_000, 50_000) for s in range(2)]
                             + [("dense", 2000, s, 20_000, 50_000) for s in range(2)]
                             + [("pkm", 1000, s, 90_000, 60_000) for s in range(2)])
    assert capacity.verdict(costly)[0]["verdict"].startswith("not comparable (1.20×")


def test_demo_capacity_probe_says_what_it_shows_and_points_to_the_study():
    from memlab.lab import demo

    models, trains = demo.capacity_probe_configs(fast=False)
    assert list(models) == list(demo.CAPACITY_PROBE_MODELS)
    assert all(t.task == "knowledge" and t.knowledge_entities == demo.CAPACITY_PROBE["knowledge_entities"]
               for t in trains.values())
    base = {"kb_chance": 1 / 256, "kb_entities": 100, "kb_facts": 400, "kb_bits_max": 3200.0, "kb_exposures": 40.0}
    at_chance = [{**base, "model": m, "kb_rank_acc": 0.01, "kb_bits": 3.0} for m in ("dense", "memoryplus")]
    (note,) = demo.capacity_observations(at_chance)  # 4 of 400 ranked first: within 3 standard errors of 1/256
    assert "no model ranked the facts above chance" in note and "notebook 07" in note
    stored = [{**at_chance[0], "kb_rank_acc": 0.4, "kb_bits": 1200.0}, at_chance[1]]
    (note,) = demo.capacity_observations(stored)
    assert "dense 1,200 bits" in note and "not a capacity difference" in note and "notebook 07" in note
    assert "rank acc" in demo.capacity_table(stored)
