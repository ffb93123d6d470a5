"""Continuous batching (engine/batch.py) through the scheduler: what each request gets does
not depend on what else runs beside it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from webgpu_llm.engine import SamplingParams, Session, Settings
from webgpu_llm.engine.batch import scheduler
from webgpu_llm.engine.scheduler import Completion, Outbox, QueueFull
from webgpu_llm.errors import UserError
from webgpu_llm.models.presets import preset_model

GREEDY = SamplingParams()


@pytest.fixture(scope="module")
def session(wgpu_gpu):
    cfg, tensors = preset_model("tiny", "f32")
    return Session.build(wgpu_gpu, cfg, tensors.get, Settings(batch=16), ctx=96)


def _prompts(vocab: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab, n).tolist() for n in lengths]


def test_batched_greedy_equals_each_request_alone(session):
    """Five requests on three slots (two wait for a free slot), prompts of 3 to 41 tokens
    prefilled in chunks of at most 12 rows beside the running decodes: each gets the tokens
    it gets alone on the one-sequence engine."""
    prompts = _prompts(session.cfg.vocab, [5, 41, 3, 17, 29])
    alone = [list(session.stream(p, 0, GREEDY, 10)) for p in prompts]
    s = scheduler(session, parallel=3, max_rows=12)
    try:
        cs = [s.submit(p, GREEDY, 10) for p in prompts]
        assert [c.wait() for c in cs] == alone
        assert all(c.finish_reason == "length" for c in cs)
        assert s.stats.generated_tokens == 50 and s.stats.finished == 5 and s.active == 0
    finally:
        s.close()


def test_kv_pages_admit_what_fits(session):
    """A KV cache of 64 positions (4 pages) shared by 3 slots: requests of 2 and 3 pages wait
    until running ones free theirs, and each still gets what it gets alone; the pages in use
    are reported, and a request that could never fit is refused at once."""
    from webgpu_llm.kernels.common import PAGE

    prompts = _prompts(session.cfg.vocab, [20, 9, 33, 14], seed=3)
    alone = [list(session.stream(p, 0, GREEDY, 8)) for p in prompts]
    s = scheduler(session, parallel=3, max_rows=12, kv_tokens=4 * PAGE)
    try:
        assert s.kv_tokens == (0, 64)
        cs = [s.submit(p, GREEDY, 8) for p in prompts]
        seen = set()
        while not all(c.done for c in cs):
            used, total = s.kv_tokens
            assert used <= total == 64
            seen.add(s.active)
            time.sleep(0.002)
        assert [c.wait() for c in cs] == alone
        assert s.kv_tokens == (0, 64) and max(seen) <= 2  # 27 + 16 positions fit, 40 + 27 do not
        with pytest.raises(UserError, match="KV cache"):
            s.submit(prompts[2], GREEDY, 40)  # 33 + 39 positions: 5 pages
        s.submit(prompts[2], GREEDY, 31).wait()  # 33 + 30: the 4 pages
    finally:
        s.close()


def test_requests_without_max_tokens_take_pages_as_they_go(session):
    """Two requests without max_tokens on a 4-page pool: each is admitted with the pages of
    its prompt and first token, takes more as it goes and ends ("length") when none is free
    (long before the context's end), its tokens those it gets alone up to there; the first
    to end frees its pages for the other; the pool is free again after."""
    from webgpu_llm.kernels.common import PAGE

    prompts = _prompts(session.cfg.vocab, [9, 20], seed=4)
    alone = [list(session.stream(p, 0, GREEDY, 60)) for p in prompts]
    s = scheduler(session, parallel=2, max_rows=12, kv_tokens=4 * PAGE)
    try:
        cs = [s.submit(p, GREEDY, None, stop_ids=frozenset()) for p in prompts]
        got = [c.wait() for c in cs]
        assert all(c.finish_reason == "length" for c in cs)
        assert all(0 < len(g) and g == a[:len(g)] for g, a in zip(got, alone))
        held = [-(-(len(p) + len(g) - 1) // PAGE) for p, g in zip(prompts, got)]
        assert max(held) <= 4 < sum(held) and s.kv_tokens == (0, 4 * PAGE)
    finally:
        s.close()


def test_many_rows_take_the_tiled_matmuls(session):
    """A step of more than Tuning.thin_rows rows (a long prompt's chunk) runs the tiled matmuls;
    the answers are the same."""
    thin_rows = session.tuning.thin_rows
    prompts = _prompts(session.cfg.vocab, [thin_rows + 9, 7], seed=1)
    alone = [list(session.stream(p, 0, GREEDY, 6)) for p in prompts]
    s = scheduler(session, parallel=2, max_rows=thin_rows + 16)
    try:
        assert [s.submit(p, GREEDY, 6).wait() for p in prompts] == alone
    finally:
        s.close()


@pytest.mark.parametrize("dtype", ["f32", "q8_0"])
def test_one_stream_decodes_on_the_mat_vecs(wgpu_gpu, session, dtype):
    """A step of one row (one stream decoding) runs the one-sequence decode's mat-vecs (with
    int8 activations for quantized weights and row groups of 8 lanes here, RMSNorms in their
    prologues), a step of a few the thin matmuls: a request alone, and one beside another, get
    what they get alone."""
    import dataclasses

    from webgpu_llm.engine.settings import ROLES

    if dtype != "f32":
        cfg, tensors = preset_model("tiny", dtype)
        t = dataclasses.replace(session.tuning, int8=True, int8_direct=True, mv=tuple((r, 64, 8, 1) for r in ROLES),
                                batch_tiles=())  # (a few rows: the thin matmuls, where a GPU takes the tiles)
        session = Session.build(wgpu_gpu, cfg, tensors.get, Settings(batch=16, tuning=t), ctx=96)
    prompts = _prompts(session.cfg.vocab, [7, 12], seed=6)
    alone = [list(session.stream(p, 0, GREEDY, 8)) for p in prompts]
    s = scheduler(session, parallel=2, max_rows=12)
    try:
        one, few = s.programs.step(1, 1, False, False), s.programs.step(2, 2, False, False)
        assert any(d.label.startswith("matvec") for d in one.dispatches)
        assert not any(d.label.startswith("thin") for d in one.dispatches)
        assert any(d.label.startswith("thin") for d in few.dispatches)
        # the RMSNorms in the QKV and gate/up mat-vecs' prologues: two kernels less a layer
        norms = lambda p: sum(d.label.startswith("rmsnorm") for d in p.dispatches)  # noqa: E731
        assert norms(one) == norms(few) - 2 * session.cfg.n_layers
        if dtype != "f32":
            assert "int8" in s.programs.mv_paths.values()
        assert s.submit(prompts[0], GREEDY, 8).wait() == alone[0]
        assert [c.wait() for c in [s.submit(p, GREEDY, 8) for p in prompts]] == alone
    finally:
        s.close()
    # the earlier path, for a comparison on a GPU: one row on the thin matmuls, a workgroup a head
    # (the module's session gets its tuning back)
    base = session.tuning
    session.rebuild(dataclasses.replace(base, batch_one_row=False, pack_heads=False))
    s = scheduler(session, parallel=2, max_rows=12)
    try:
        assert any(d.label.startswith("thin") for d in s.programs.step(1, 1, False, False).dispatches)
        assert [c.wait() for c in [s.submit(p, GREEDY, 8) for p in prompts]] == alone
    finally:
        s.close()
        session.rebuild(base)


def test_thin_steps_of_other_shapes(wgpu_gpu):
    """Tuning.thin_tokens and thin_rows: thin matmuls of 3 rows a pass (a partial last pass),
    steps of more than 4 rows on the prompt matmuls; three requests still get what they get
    alone."""
    import dataclasses

    cfg, tensors = preset_model("tiny", "f32")
    t = Session.build(wgpu_gpu, cfg, tensors.get, Settings(batch=16), ctx=96).tuning
    session = Session.build(wgpu_gpu, cfg, tensors.get,
                            Settings(batch=16, tuning=dataclasses.replace(t, thin_tokens=3, thin_rows=4)), ctx=96)
    prompts = _prompts(cfg.vocab, [5, 9, 13], seed=7)
    alone = [list(session.stream(p, 0, GREEDY, 8)) for p in prompts]
    s = scheduler(session, parallel=3, max_rows=12)
    try:
        layers = lambda rows: [d.label for d in s.programs.step(rows, 1, False, False).dispatches  # noqa: E731
                               if "_qkv_" in d.label]
        assert layers(3) and all(x.startswith("thin") for x in layers(3))
        assert layers(5) and not any(x.startswith("thin") for x in layers(5))
        assert [c.wait() for c in [s.submit(p, GREEDY, 8) for p in prompts]] == alone
    finally:
        s.close()


def test_decode_rows_on_split_keys(wgpu_gpu):
    """Tuning.batch_split_keys: the one-row blocks of a several-row step (streams decoding, at
    positions past several 16-key splits) on split-K attention, merged into their rows, the
    prompt kernel taking the prompt chunks beside them: each request gets what it gets alone."""
    import dataclasses

    cfg, tensors = preset_model("tiny", "f32")
    t = Session.build(wgpu_gpu, cfg, tensors.get, Settings(batch=16), ctx=96).tuning
    session = Session.build(wgpu_gpu, cfg, tensors.get, Settings(
        batch=16, tuning=dataclasses.replace(t, batch_split_keys=True, attn_chunk=16)), ctx=96)
    prompts = _prompts(cfg.vocab, [40, 3, 27, 51], seed=8)
    alone = [list(session.stream(p, 0, GREEDY, 10)) for p in prompts]
    s = scheduler(session, parallel=3, max_rows=12)
    try:
        labels = [d.label for d in s.programs.step(3, 3, False, False).dispatches]
        assert "attn_combine_blocks" in labels and "attention_split" in labels
        # a step of decoding rows alone leaves the prompt kernel out
        decoding = [d.label for d in s.programs.step(3, 3, False, False, decode_only=True).dispatches]
        assert "attention_prompt" in labels and "attention_prompt" not in decoding and "attention_split" in decoding
        assert [c.wait() for c in [s.submit(p, GREEDY, 10) for p in prompts]] == alone
    finally:
        s.close()


def test_decode_rows_on_split_keys_beside_attention_tiles(gpu):
    """Tuning.batch_split_keys with the prompt attention on the f16 tiles (emulated here): the
    tiles kernel leaves one-row blocks to split-K attention, as the f32 kernel does; each
    request gets what it gets alone."""
    import dataclasses

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    cfg, tensors = preset_model("tiny", "f16")
    t = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=96).tuning
    session = Session.build(gpu, cfg, tensors.get, Settings(batch=16, tuning=dataclasses.replace(
        t, mma="emulate", attn_tiles=True, batch_split_keys=True, attn_chunk=16)), ctx=96)
    prompts = _prompts(cfg.vocab, [40, 3, 27, 51], seed=8)
    alone = [list(session.stream(p, 0, GREEDY, 10)) for p in prompts]
    s = scheduler(session, parallel=3, max_rows=12)
    try:
        labels = [d.label for d in s.programs.step(3, 3, False, False).dispatches]
        assert {"attn_combine_blocks", "attention_split"} <= set(labels), labels
        assert any(x.startswith("attention_prompt_tiles") for x in labels), labels
        decoding = [d.label for d in s.programs.step(3, 3, False, False, decode_only=True).dispatches]
        assert not any(x.startswith("attention_prompt") for x in decoding) and "attention_split" in decoding
        assert [c.wait() for c in [s.submit(p, GREEDY, 10) for p in prompts]] == alone
    finally:
        s.close()


def test_stops_budgets_and_the_context(session):
    p = _prompts(session.cfg.vocab, [9])[0]
    alone = list(session.stream(p, 0, GREEDY, 8))
    s = scheduler(session, parallel=2)
    try:
        stop = s.submit(p, GREEDY, 8, stop_ids=frozenset({alone[3]}))
        long = s.submit(_prompts(session.cfg.vocab, [90])[0], GREEDY, 50)  # 96 positions: room for 6
        assert stop.wait() == alone[:alone.index(alone[3])] and stop.finish_reason == "stop"
        assert len(long.wait()) == 6 and long.finish_reason == "length"
    finally:
        s.close()


def test_seeded_sampling_is_reproducible_beside_other_requests(session):
    prompts = _prompts(session.cfg.vocab, [6, 11, 4], seed=2)
    params = [SamplingParams(0.9, 20, 0.9, 0.0, seed=7), SamplingParams(1.2, 0, 1.0, 0.0, seed=8),
              SamplingParams(0.7, 5, 0.8, 0.1, repeat_penalty=1.3, seed=9)]
    s = scheduler(session, parallel=3)
    try:
        first = [c.wait() for c in [s.submit(p, q, 12) for p, q in zip(prompts, params)]]
        again = [s.submit(p, q, 12).wait() for p, q in zip(prompts, params)]  # one at a time now
        assert first == again
        assert first[0] != s.submit(prompts[0], SamplingParams(0.9, 20, 0.9, 0.0, seed=70), 12).wait()
    finally:
        s.close()


def test_a_cancelled_request_frees_its_slot(session):
    prompts = _prompts(session.cfg.vocab, [5, 6, 7], seed=3)
    s = scheduler(session, parallel=2, max_queue=1)
    try:
        a = s.submit(prompts[0], GREEDY, 80)
        next(iter(a))  # admitted
        b = s.submit(prompts[1], GREEDY, 80)
        next(iter(b))
        c = s.submit(prompts[2], GREEDY, 4)  # waits: both slots are taken
        with pytest.raises(QueueFull):
            s.submit(prompts[2], GREEDY, 4)
        used, total = s.kv_tokens
        assert total == 2 * session.ctx and used >= len(prompts[0]) + len(prompts[1])
        a.cancel()
        assert c.wait() == list(session.stream(prompts[2], 0, GREEDY, 4))  # served in a's slot
        assert a.finish_reason == "cancelled" and len(a.tokens) < 80
        b.cancel()
        b.wait()
    finally:
        s.close()


def test_async_readers_and_closing(session):
    prompts = _prompts(session.cfg.vocab, [4, 8], seed=4)
    s = scheduler(session, parallel=2)

    async def read(c: Completion) -> list[int]:
        return [t for group in [g async for g in c] for t in group]

    async def both() -> list[list[int]]:
        return await asyncio.gather(*(read(s.submit(p, GREEDY, 5)) for p in prompts))

    try:
        assert asyncio.run(both()) == [list(session.stream(p, 0, GREEDY, 5)) for p in prompts]
        running = s.submit(prompts[0], GREEDY, 60)
        next(iter(running))
    finally:
        s.close(drain=False)
    assert running.finish_reason == "cancelled"
    with pytest.raises(QueueFull):
        s.submit(prompts[0], GREEDY, 2)


def test_logprobs_are_the_models_distribution(session):
    """Each token's log-probability and its 5 most likely alternatives, for a greedy and a
    sampled request side by side, against log-softmax of the one-sequence engine's logits."""
    prompts = _prompts(session.cfg.vocab, [7, 12], seed=5)
    params = [GREEDY, SamplingParams(0.9, 0, 1.0, 0.0, seed=3)]
    s = scheduler(session, parallel=2)
    try:
        cs = [s.submit(p, q, 5, logprobs=5) for p, q in zip(prompts, params)]
        for c in cs:
            c.wait()
        plain = s.submit(prompts[0], GREEDY, 5)
        assert plain.wait() == cs[0].tokens and plain.token_logprobs == []
        with pytest.raises(UserError):
            s.submit(prompts[0], GREEDY, 5, logprobs=21)
    finally:
        s.close()
    for p, c in zip(prompts, cs):
        assert len(c.token_logprobs) == len(c.tokens) == 5
        for i, (tok, (lp, top)) in enumerate(zip(c.tokens, c.token_logprobs)):
            logits = session.logits(p + c.tokens[:i])[-1].astype(np.float64)
            ref = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
            assert abs(lp - ref[tok]) < 1e-4
            # the 5 best values, each id's own value (ties may come in any order)
            assert np.allclose([v for _, v in top], np.sort(ref)[::-1][:5], atol=1e-4)
            assert np.allclose([ref[t] for t, _ in top], [v for _, v in top], atol=1e-4)
            assert len({t for t, _ in top}) == 5
    assert cs[0].token_logprobs[0][0] == cs[0].token_logprobs[0][1][0][1]  # greedy: the best one


def test_logprobs_of_an_odd_slot_count(gpu):
    """Three slots: the log-probabilities start 12 bytes into the read-back, where Dawn maps
    only from offsets of 8 (the engine thread once died there, its requests never ending)."""
    cfg, tensors = preset_model("tiny", "f32")
    session = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=96)
    s = scheduler(session, parallel=3)
    try:
        cs = [s.submit(p, GREEDY, 3, logprobs=2) for p in _prompts(cfg.vocab, [4, 6, 5], seed=2)]
        for c in cs:
            assert len(c.wait()) == 3 and c.finish_reason == "length"
            assert [lp for lp, _ in c.token_logprobs] == [top[0][1] for _, top in c.token_logprobs]
    finally:
        s.close()


def test_a_failed_read_back_ends_its_requests(session, monkeypatch):
    """A step whose read-back fails ends every running request with the error, and the engine
    serves the next ones: nothing waits forever on a dead engine thread."""
    from webgpu_llm.engine.batch import BatchScheduler

    real = BatchScheduler._collect
    broken = {"on": True}

    def collect(self, step):
        if broken["on"] and step.read is not None:
            broken["on"] = False
            raise RuntimeError("device lost")
        return real(self, step)
    monkeypatch.setattr(BatchScheduler, "_collect", collect)
    s = scheduler(session, parallel=2)
    try:
        prompts = _prompts(session.cfg.vocab, [5, 7], seed=1)
        cs = [s.submit(p, GREEDY, 4) for p in prompts]
        for c in cs:
            c.wait()
        assert {c.finish_reason for c in cs} == {"error"} and "device lost" in cs[0].error
        again = s.submit(prompts[0], GREEDY, 4)
        assert len(again.wait()) == 4 and again.finish_reason == "length"
    finally:
        s.close()


def test_the_serial_scheduler_refuses_logprobs(session):
    s = scheduler(session, parallel=1)
    try:
        with pytest.raises(UserError, match="parallel"):
            s.submit([1, 2, 3], GREEDY, 2, logprobs=1)
    finally:
        s.close()


@pytest.mark.parametrize("parallel", [1, 2])
def test_token_ids_outside_the_vocabulary_are_refused(session, parallel):
    """Every way in refuses an id outside the vocabulary before a kernel indexes the embedding
    table with it (unchecked where WebGPU's bounds checks are off)."""
    vocab = session.cfg.vocab
    for bad in ([1, vocab], [-1, 2], [2, 10**30]):
        with pytest.raises(UserError, match=f"token id {bad[0] if bad[0] < 0 else bad[1]} is outside the vocabulary"):
            list(session.stream(bad, 0, GREEDY, 2))
        with pytest.raises(UserError, match="outside the vocabulary"):
            session.logits(bad)
    s = scheduler(session, parallel=parallel)
    try:
        with pytest.raises(UserError, match=f"token id {vocab} is outside the vocabulary"):
            s.submit([3, vocab], GREEDY, 2)
        assert len(s.submit([3, 4], GREEDY, 2).wait()) == 2  # and it serves on
    finally:
        s.close()


def test_a_reader_behind_takes_what_queued_up_as_one_group():
    """Groups handed over while an async reader was busy reach it as one (one server event,
    not one a group); what came before the reader started comes first, then the end."""
    c = Completion([1, 2], GREEDY, 8, frozenset())

    async def read() -> tuple[list[int], list[list[int]]]:
        it = c.__aiter__()
        c._push([5])
        first = await it.__anext__()  # the reader starts: what came before it
        for g in ([6], [7, 8], [9]):
            c._push(g)
        c._finish("length")
        await asyncio.sleep(0)  # the hand-overs land in the reader's queue
        return first, [g async for g in it]

    assert asyncio.run(read()) == ([5], [[6, 7, 8, 9]])
    assert c.tokens == [5, 6, 7, 8, 9] and c.finish_reason == "length"


def test_one_stream_server_hands_over_read_back_groups_and_cuts_at_a_stop(session):
    """The serial scheduler (`--parallel 1`) pushes a read-back's tokens together; a stop id
    inside a group ends the request there, the tokens before it delivered."""
    prompt = _prompts(session.cfg.vocab, [6], seed=9)[0]
    seeded = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=7)  # varied tokens, reproducible
    want = list(session.stream(prompt, 0, seeded, 24))
    groups = list(session.stream_groups(prompt, 0, seeded, 24))
    assert [t for g in groups for t in g] == want and all(groups)
    cut = next(i for i in range(2, len(want)) if want[i] not in want[:i])
    s = scheduler(session, parallel=1)
    try:
        c = s.submit(prompt, seeded, 24, stop_ids=frozenset({want[cut]}))
        assert c.wait() == want[:cut] and c.finish_reason == "stop"
        assert s.stats.generated_tokens == cut
    finally:
        s.close()


def test_a_streams_read_back_groups_follow_the_tuning(session):
    """Tuning.stream_group and stream_readbacks: groups of at most 2 tokens, one read-back in
    flight; the same tokens as the defaults' groups (the module's session gets its tuning back)."""
    import dataclasses

    prompt = _prompts(session.cfg.vocab, [5], seed=11)[0]
    want = list(session.stream(prompt, 0, GREEDY, 20))
    base = session.tuning
    session.rebuild(dataclasses.replace(base, stream_group=2, stream_readbacks=1))
    try:
        groups = list(session.stream_groups(prompt, 0, GREEDY, 20))
    finally:
        session.rebuild(base)
    assert [t for g in groups for t in g] == want and max(map(len, groups)) <= 2 and len(groups) >= 10


def test_a_stream_left_mid_group_counts_the_tokens_taken(session):
    prompt = _prompts(session.cfg.vocab, [5], seed=10)[0]
    gen = session.stream(prompt, 0, GREEDY, 30)
    taken = [next(gen) for _ in range(3)]
    gen.close()
    assert len(taken) == 3 and session.stats.generated_tokens == 3


def test_a_steps_hand_over_reaches_each_loop_at_once_and_in_order():
    """The batched engine's outbox: two requests' tokens and one's end reach their async readers
    only when the step's outbox is sent, in the order they were handed over."""
    a, b = Completion([1], GREEDY, 8, frozenset()), Completion([2], GREEDY, 8, frozenset())

    async def read() -> tuple[list[Any], list[list[int]], list[list[int]]]:
        ia, ib = a.__aiter__(), b.__aiter__()
        a._push([3])
        b._push([4])
        first = [await ia.__anext__(), await ib.__anext__()]  # both readers are listening now
        out = Outbox()
        a._push([5], outbox=out)
        b._push([6], outbox=out)
        a._push([7], outbox=out)
        a._finish("length", outbox=out)
        await asyncio.sleep(0)
        assert a.tokens == [3, 5, 7]  # recorded at once, handed to the loop only when sent
        waiting = asyncio.ensure_future(ib.__anext__())
        await asyncio.sleep(0)
        assert not waiting.done()
        out.send()
        return first, [g async for g in ia], [await waiting]

    first, rest_a, rest_b = asyncio.run(read())
    assert first == [[3], [4]] and rest_a == [[5, 7]] and rest_b == [[6]]
    assert a.finish_reason == "length" and b.finish_reason is None


@pytest.mark.parametrize(("dtype", "tiles", "splits", "head", "few", "preset"), [
    ("f16", (1, 4, 1, 2), (("o", 2), ("down", 16), ("qkv", 2), ("gate_up", 3)), (), (), "tiny"),
    ("q4_0", (1, 4, 1, 2), (), (2, 2, 2, 2), (), "tiny"),
    ("q4_0", (1, 1, 1, 1), (("down", 2), ("gate_up", 4)), (), (), "tiny"),
    ("q4_0", (1, 4, 1, 2, False, False, 1, True), (("down", 4), ("qkv", 8)), (), (), "tiny"),
    ("f16", (1, 4, 1, 2, False, False, 1, False, 2), (("down", 8), ("gate_up", 2)), (), (), "tiny"),
    ("q4_0", (1, 4, 1, 2, False, False, 1, False, 2), (("o", 2), ("qkv", 4)), (), (), "tiny"),
    ("q4_0", (1, 4, 1, 2), (("down", 2),), (), (("o", 2), ("down", 16), ("gate_up", 2)), "tiny"),
    ("q4_0", (1, 4, 1, 2), (("qkv", 4), ("gate_up", 2)), (), (), "tiny-qwen3"),
    ("q4_0", (1, 4, 2, 2), (("o", 2), ("down", 4)), (), (), "tiny"),  # 32 tokens a workgroup
    ("f16", (2, 4, 1, 2), (("qkv", 2),), (), (), "tiny")])
def test_batched_rows_on_f16_tiles(gpu, dtype, tiles, splits, head, few, preset):
    """Tuning.batch_tiles: a step of several rows runs its matmuls (the LM head's too) on the
    f16 tiles in workgroups of 16 or 32 tokens and 128 or 16 weight rows (their next loads without a
    branch, or two steps ahead, too: TileShape.straight, depth; quantized weights
    dequantized into them; emulated here), O, down, QKV and gate/up with their K split as
    Tuning.batch_splits says (down SPLIT_MAX ways, a unit of K each here; QKV's and gate/up's epilogues then on the sums: split_finish), the LM
    head on its own shape where Tuning.batch_head_tiles gives one, a step of up to few_rows
    (2) rows with Tuning.batch_splits_few's splits where given, a step of one row still the
    mat-vecs; three requests get what they get alone. With per-head q/k norms (tiny-qwen3), the
    norm kernel sums QKV's partials (split_finish_qk_norm_rope)."""
    import dataclasses

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    cfg, tensors = preset_model(preset, dtype)
    t = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=96).tuning
    session = Session.build(gpu, cfg, tensors.get, Settings(batch=16, tuning=dataclasses.replace(
        t, mma="emulate", batch_tiles=tiles, thin_rows=4, batch_splits=splits, batch_head_tiles=head,
        batch_splits_few=few, few_rows=2)), ctx=96)
    prompts = _prompts(cfg.vocab, [5, 9, 13], seed=9)
    alone = [list(session.stream(p, 0, GREEDY, 8)) for p in prompts]
    s = scheduler(session, parallel=3, max_rows=12)
    try:
        def matmuls(rows: int) -> list[str]:
            return [d.label for d in s.programs.step(rows, rows, False, False).dispatches if "matmul" in d.label]

        assert matmuls(3) and all(x.startswith("f16_matmul") for x in matmuls(3)), matmuls(3)
        assert matmuls(9) and all(x.startswith("f16_matmul") for x in matmuls(9)), matmuls(9)
        assert sum("partial" in x for x in matmuls(3)) == len(splits) * cfg.n_layers, matmuls(3)
        assert sum("partial" in x for x in matmuls(2)) == len(few or splits) * cfg.n_layers, matmuls(2)
        shape = "x".join(map(str, (head or tiles)[:4]))
        assert matmuls(3)[-1].startswith("f16_matmul_store") and f"_{shape}" in matmuls(3)[-1], matmuls(3)  # the head
        finish = [d.label for d in s.programs.step(3, 3, False, False).dispatches if d.label.startswith("split_finish")]
        assert len(finish) == sum(r in ("qkv", "gate_up") for r, _ in splits) * cfg.n_layers, finish
        assert sum("qk_norm" in x for x in finish) == (cfg.n_layers if cfg.architecture.qk_norm else 0), finish
        assert not matmuls(1)
        assert [c.wait() for c in [s.submit(p, GREEDY, 8) for p in prompts]] == alone
    finally:
        s.close()


def test_batched_prompt_rows_on_split_tails(gpu, monkeypatch):
    """A batched step of more than thin_rows rows takes the prompt matmuls, and with Tuning.sms
    their K splits and split tails (the tiny model's short walks pay for a tail only with its
    epilogue dispatch free, so the model is told it is, and prices their small tiles): QKV's epilogue on its tail's sums
    writes the paged KV cache of each row's sequence; three requests get what they get alone."""
    import dataclasses

    from webgpu_llm.engine import waves

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    monkeypatch.setattr(waves, "DISPATCH_US", 0.0)
    monkeypatch.setattr(waves, "WAVE_AREA", 0)
    cfg, tensors = preset_model("tiny", "f16")
    t = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=96).tuning
    session = Session.build(gpu, cfg, tensors.get, Settings(batch=16, tuning=dataclasses.replace(
        t, mma="emulate", batch_tiles=(1, 4, 1, 2), thin_rows=4, tiles=(2, 2, 2, 2), float_tiles=(), role_tiles=(),
        sms=6)), ctx=96)
    prompts = _prompts(cfg.vocab, [5, 9, 13], seed=9)
    alone = [list(session.stream(p, 0, GREEDY, 8)) for p in prompts]
    s = scheduler(session, parallel=3, max_rows=12)
    try:
        assert s.programs.prompt_splits["qkv"].tail_ways > 1, s.programs.prompt_splits
        labels = [d.label for d in s.programs.step(9, 9, False, False).dispatches]
        assert sum(x.startswith("split_finish_qkv") for x in labels) == cfg.n_layers, labels
        assert [c.wait() for c in [s.submit(p, GREEDY, 8) for p in prompts]] == alone
    finally:
        s.close()


def test_warm_up_builds_the_steps_a_server_takes(session):
    """scheduler(warm_up=True) builds the step Programs first and runs each of their kernels
    once (their pipelines compile there, not in a first request's time to first token):
    requests alone, several at once with prompts past thin_rows and a filtering sampler, then
    decoding together, need no other."""
    prompts = _prompts(session.cfg.vocab, [5, 41, 3, 17, 29], seed=2)
    alone = list(session.stream(prompts[0], 0, GREEDY, 6))
    s = scheduler(session, parallel=3, max_rows=12, warm_up=True)
    try:
        built = set(s.programs._steps)
        assert len(built) > 1
        # every kernel ran once (on slot 0, position 0), and the first request, in slot 0, is
        # what it is alone
        pipes = {id(d.pipeline) for p in s.programs._steps.values() for d in p.dispatches}
        assert pipes <= session.gpu.ran, len(pipes - session.gpu.ran)
        assert s.submit(prompts[0], GREEDY, 6).wait() == alone
        top_k = SamplingParams(temperature=0.7, top_k=5, seed=1)
        cs = [s.submit(p, top_k if i % 2 else GREEDY, 12) for i, p in enumerate(prompts)]
        assert all(len(c.wait()) == 12 for c in cs)
        assert set(s.programs._steps) == built, set(s.programs._steps) - built
    finally:
        s.close()


@pytest.mark.parametrize("parallel", [2, 3])
def test_several_decode_steps_a_submit(gpu, parallel):
    """Tuning.batch_steps: while only running streams decode, 4 steps go in one submit (a kernel
    moves the tables one position on between them; a one-row step's split-K position too): every
    request gets what it gets alone, greedy and seeded, a stop id inside a submit's steps ends
    its request there, and budgets that are not a multiple of 4 end where they should."""
    import dataclasses

    cfg, tensors = preset_model("tiny", "f32")
    t = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=96).tuning
    session = Session.build(gpu, cfg, tensors.get,
                            Settings(batch=16, tuning=dataclasses.replace(t, batch_steps=4)), ctx=96)
    prompts = _prompts(cfg.vocab, [5, 9, 13][:parallel], seed=12)
    seeded = SamplingParams(temperature=1.3, top_k=0, top_p=1.0, min_p=0.0, seed=5)
    alone = [list(session.stream(p, 0, GREEDY, 11)) for p in prompts]
    alone_seeded = [list(session.stream(p, 0, seeded, 10)) for p in prompts]
    s = scheduler(session, parallel=parallel, max_rows=16)
    subs: list[int] = []
    submit = s._submit

    def spy(*a: Any, sub: int = 1) -> None:
        subs.append(sub)
        submit(*a, sub=sub)

    s._submit = spy  # type: ignore[method-assign]
    try:
        assert [c.wait() for c in [s.submit(p, GREEDY, 11) for p in prompts]] == alone
        assert max(subs) == 4
        assert [c.wait() for c in [s.submit(p, seeded, 10) for p in prompts]] == alone_seeded
        # one request alone: one-row steps, four a submit
        subs.clear()
        assert s.submit(prompts[0], GREEDY, 11).wait() == alone[0] and max(subs) == 4
        want = alone_seeded[1]
        cut = next(i for i in range(2, len(want)) if want[i] not in want[:i])
        c = s.submit(prompts[1], seeded, 10, stop_ids=frozenset({want[cut]}))
        assert c.wait() == want[:cut] and c.finish_reason == "stop"
    finally:
        s.close()


def test_short_prompts_prefill_on_the_batch_tiles(gpu):
    """Programs.prefill_for: a prompt batch of up to Tuning.thin_rows tokens runs its matmuls on
    the batched steps' f16 tiles (emulated here), a longer one on the prompt tiles; the logits
    of a short prompt are those of the prompt tiles' and greedy tokens are unchanged."""
    import dataclasses

    from webgpu_llm.engine.export import prefill_logits

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    cfg, tensors = preset_model("tiny", "f16")
    t = Session.build(gpu, cfg, tensors.get, Settings(batch=32), ctx=96).tuning
    plain = Session.build(gpu, cfg, tensors.get, Settings(batch=32, tuning=dataclasses.replace(t, mma="emulate", batch_tiles=())),
                          ctx=96)
    tiled = Session.build(gpu, cfg, tensors.get, Settings(batch=32, tuning=dataclasses.replace(
        t, mma="emulate", batch_tiles=(1, 4, 1, 2), thin_rows=16, batch_splits=(("qkv", 3), ("gate_up", 2)))), ctx=96)
    m = tiled.programs
    assert m.prefill_for(17) is m.prefill and plain.programs.prefill_for(9) is plain.programs.prefill
    short = [d.label for d in m.prefill_for(9).dispatches if "matmul" in d.label]
    assert short and all(x.startswith("f16_matmul") and "1x4x1x2" in x for x in short), short
    assert sum(d.label.startswith("split_finish") for d in m.prefill_for(9).dispatches) == 2 * cfg.n_layers
    ids = _prompts(cfg.vocab, [9], seed=4)[0]
    want, got = prefill_logits(plain, ids), prefill_logits(tiled, ids)
    assert np.abs(got - want).max() < 1e-2 * np.abs(want).max()
    assert list(tiled.stream(ids, 0, GREEDY, 8)) == list(plain.stream(ids, 0, GREEDY, 8))
    # what `info` and `bench` report is the long prompts' path: quantized weights keep the int8 tiles
    cfg, tensors = preset_model("tiny", "q4_0")
    q = Session.build(gpu, cfg, tensors.get, Settings(batch=32, tuning=dataclasses.replace(
        t, mma="emulate", batch_tiles=(1, 4, 1, 2), thin_rows=16, quant_f16=False)), ctx=96).programs
    assert q.prefill_for(9) is not q.prefill and set(q.mm_paths.values()) == {"int8"}, q.mm_paths


def _same_runs(a: list, b: list, tol: float) -> None:
    """Two runs of the same requests ((tokens, log-probs) each) took the same tokens, their
    log-probabilities (the sampled token's and the top ones') within `tol`."""
    for (tok_a, lp_a), (tok_b, lp_b) in zip(a, b):
        assert tok_a == tok_b
        x = np.array([[lp, *(v for _, v in top)] for lp, top in lp_a])
        y = np.array([[lp, *(v for _, v in top)] for lp, top in lp_b])
        assert np.abs(x - y).max() < tol, np.abs(x - y).max()


@pytest.mark.parametrize("preset", ["tiny", "tiny-qwen3", "qwen2.5-0.5b"])
def test_batched_decode_rows_fold_qkv_into_attention(gpu, preset):
    """Tuning.batch_fold_qkv: a batched step of decoding rows alone, QKV split over K, takes
    each row's QKV partial sums in its split-K attention (their bias, the q/k norms where the
    model has them, RoPE and the append to the row's pages there), a dispatch less a layer;
    steps with prompt rows keep the split_finish kernel. Three requests get the tokens and
    log-probabilities they get without the fold, in one split a head and in two of several
    4-key chunks, the latter with the first chunk's keys and values preloaded
    (AttentionSpec.preload); the 0.5B's shape (QKV's bias), cut to one layer, in the latter
    alone (its emulated tiles are slow on a CPU adapter)."""
    import dataclasses

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    qwen = preset.startswith("qwen")
    cfg, tensors = preset_model(preset, "q4_0", **({"n_layers": 1, "vocab": 4096} if qwen else {}))
    t = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=96).tuning
    prompts = _prompts(cfg.vocab, [5, 9, 13], seed=4)
    base = dataclasses.replace(t, mma="emulate", batch_tiles=(1, 4, 1, 2), thin_rows=4, batch_split_keys=True,
                               batch_splits=(("qkv", 3), ("down", 2)), batch_splits_few=())
    for chunk, cap in ((16, 0), (4, 2))[qwen:]:
        got = []
        for fold in (False, True):
            tuning = dataclasses.replace(base, attn_chunk=chunk, decode_splits=cap, batch_decode_splits=cap,
                                         batch_fold_qkv=fold, attn_preload=fold and chunk == 4)
            session = Session.build(gpu, cfg, tensors.get, Settings(batch=16, tuning=tuning), ctx=96)
            s = scheduler(session, parallel=3, max_rows=12)
            try:
                folded, mixed = ([d.label for d in s.programs.step(3, 3, False, False, decode_only=only).dispatches]
                                 for only in (True, False))
                assert sum("attention_split_qkv_fold" in x for x in folded) == (cfg.n_layers if fold else 0), folded
                assert any("preload" in x for x in folded) == (fold and chunk == 4), folded
                assert any(x.startswith("split_finish_qk") for x in folded) != fold, folded
                assert sum(x.startswith("split_finish_qk") for x in mixed) == cfg.n_layers, mixed
                cs = [s.submit(p, GREEDY, 8, logprobs=3) for p in prompts]
                got.append([(c.wait(), c.token_logprobs) for c in cs])
            finally:
                s.close()
        _same_runs(*got, 1e-4)


@pytest.mark.parametrize(("preset", "dtype", "splits"), [
    ("tiny", "f16", (("o", 2), ("down", 3))), ("tiny-qwen3", "f16", (("o", 2), ("qkv", 2), ("down", 3))),
    ("tiny", "q4_0", (("o", 2), ("qkv", 2), ("down", 3)))])
def test_batched_rows_on_direct_f16_tiles(gpu, preset, dtype, splits):
    """Tuning.batch_direct: a batched step's matmuls of f16 weights (the LM head's too) load
    their weight fragments from the weight buffers (direct_tiles; emulated here), K split as
    Tuning.batch_splits says (QKV whole: its epilogue's RoPE and paged KV append in the direct
    kernel; gate/up whole: its SiLU·mul); a quantized model's with Tuning.batch_f16_weights,
    from f16 copies of its matrices (made once). Three requests get the tokens and
    log-probabilities of the staged tiles; a step of one row keeps the mat-vecs on the model's
    own weights."""
    import dataclasses

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    cfg, tensors = preset_model(preset, dtype)
    t = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=96).tuning
    prompts = _prompts(cfg.vocab, [5, 9, 13], seed=11)
    base = dataclasses.replace(t, mma="emulate", batch_tiles=(1, 4, 1, 2), thin_rows=4, batch_f16_weights=dtype != "f16",
                               batch_splits=splits, batch_splits_few=())
    got = []
    for direct in ((), (2, 2, 2, 1, 64, 4)):
        session = Session.build(gpu, cfg, tensors.get, Settings(batch=16, tuning=dataclasses.replace(base, batch_direct=direct)),
                                ctx=96)
        s = scheduler(session, parallel=3, max_rows=12)
        try:
            labels = [d.label for d in s.programs.step(3, 3, False, False).dispatches if "matmul" in d.label or "direct" in d.label]
            assert labels and all(x.startswith("f16_direct" if direct else "f16_matmul") for x in labels), labels
            if direct:
                assert sum("partial" in x for x in labels) == len(splits) * cfg.n_layers, labels
                assert any("f16_direct_qkv" in x for x in labels) == ("qkv" not in dict(splits)), labels
                one = [d.label for d in s.programs.step(1, 1, False, False).dispatches]
                assert not any("direct" in x or "f16_copy" in x for x in one), one
            cs = [s.submit(p, GREEDY, 8, logprobs=3) for p in prompts]
            got.append([(c.wait(), c.token_logprobs) for c in cs])
        finally:
            s.close()
    _same_runs(*got, 1e-3)


@pytest.mark.parametrize(("preset", "dtype", "direct"), [("tiny", "q4_0", ()), ("tiny-qwen3", "f16", (2, 2, 2, 1, 64, 4))])
def test_batched_rows_read_f16_rows(gpu, preset, dtype, direct):
    """Tuning.batch_x_f16: a batched step of several rows has its norms write xn as f16s for
    QKV and gate/up, and gate/up (its split sums' finish) its outputs for down, on the staged
    and the direct tiles; a step of one row keeps f32 rows. Three requests get the tokens and
    log-probabilities of the f32 rows (the tiles round x to f16 either way)."""
    import dataclasses

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    cfg, tensors = preset_model(preset, dtype)
    t = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=96).tuning
    prompts = _prompts(cfg.vocab, [5, 9, 13], seed=12)
    base = dataclasses.replace(t, mma="emulate", batch_tiles=(1, 4, 1, 2), thin_rows=4, batch_direct=direct,
                               batch_splits=(("o", 2), ("gate_up", 2), ("down", 3)), batch_splits_few=())
    got = []
    for half in (False, True):
        session = Session.build(gpu, cfg, tensors.get, Settings(batch=16, tuning=dataclasses.replace(base, batch_x_f16=half)),
                                ctx=96)
        s = scheduler(session, parallel=3, max_rows=12)
        try:
            many, one = ([d for d in s.programs.step(n, n, False, False).dispatches] for n in (3, 1))
            mm = [d.label for d in many if d.label.startswith(("f16_matmul", "f16_direct"))]
            assert sum(x.endswith("_xh") or "_xh_" in x for x in mm) == (3 * cfg.n_layers if half else 0), mm
            assert not any("_xh" in d.label for d in one)
            cs = [s.submit(p, GREEDY, 8, logprobs=3) for p in prompts]
            got.append([(c.wait(), c.token_logprobs) for c in cs])
        finally:
            s.close()
    _same_runs(*got, 1e-4)
