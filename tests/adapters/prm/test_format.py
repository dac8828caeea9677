"""The step-tag format: layout, tag positions, truncation, resolving against a tokenizer, prm_config.json."""

from __future__ import annotations

import pytest

from adapters.prm.format import (
    FormatTokens,
    PRMConfig,
    StepTagFormat,
    assemble,
    encode_rollouts,
    format_tokens,
    token_ids,
)
from adapters.prm.synthetic import VOCABULARY, tiny_tokenizer

TAG = [90]


def test_every_step_is_followed_by_the_tag_and_read_at_its_last_token():
    encoded = assemble(
        prefix_ids=[1],
        prompt_ids=[10, 11],
        step_ids=[[20, 21], [], [30]],
        tag_ids=[90, 91],
        max_length=None,
        keep_all_steps=False,
    )
    assert encoded.input_ids == (1, 10, 11, 20, 21, 90, 91, 90, 91, 30, 90, 91)
    assert encoded.tag_positions == (6, 8, 11)
    assert [encoded.input_ids[p] for p in encoded.tag_positions] == [91, 91, 91]
    assert encoded.steps_dropped == encoded.prompt_tokens_dropped == 0


def test_truncation_keeps_the_end_of_the_prompt_first():
    encoded = assemble(
        prefix_ids=[1], prompt_ids=list(range(100, 110)), step_ids=[[20], [21]], tag_ids=TAG, max_length=9,
        keep_all_steps=False,
    )  # fmt: skip
    # 4 step tokens + 1 prefix leave 4 prompt tokens: the last four.
    assert encoded.input_ids == (1, 106, 107, 108, 109, 20, 90, 21, 90)
    assert encoded.prompt_tokens_dropped == 6
    assert len(encoded.tag_positions) == 2


def test_training_drops_the_trailing_steps_that_do_not_fit_but_keeps_half_the_budget_for_the_prompt():
    encoded = assemble(
        prefix_ids=[], prompt_ids=list(range(100, 110)), step_ids=[[20, 20], [21, 21], [22, 22]], tag_ids=TAG,
        max_length=10, keep_all_steps=False,
    )  # fmt: skip
    assert encoded.input_ids[:5] == (105, 106, 107, 108, 109)
    assert encoded.tag_positions == (7,)
    assert encoded.steps_dropped == 2


def test_scoring_keeps_every_step_past_max_length():
    encoded = assemble(
        prefix_ids=[], prompt_ids=list(range(100, 110)), step_ids=[[20, 20], [21, 21], [22, 22]], tag_ids=TAG,
        max_length=10, keep_all_steps=True,
    )  # fmt: skip
    assert len(encoded.tag_positions) == 3
    assert encoded.steps_dropped == 0
    assert len(encoded.input_ids) == 5 + 9


def test_format_resolves_tag_good_bad_and_the_tokenizers_own_prefix():
    tokenizer = tiny_tokenizer()
    tokens = format_tokens(StepTagFormat(), tokenizer)
    vocab = {token: index for index, token in enumerate(VOCABULARY)}
    assert tokens.tag_ids == (vocab["ки"],)
    assert (tokens.good_id, tokens.bad_id) == (vocab["+"], vocab["-"])
    assert tokens.prefix_ids == (vocab["<s>"],)
    assert tokens.pad_id == vocab["<pad>"]


def test_a_tag_of_several_tokens_is_read_at_its_last_token():
    tokenizer = tiny_tokenizer()
    fmt = StepTagFormat(step_tag="answer ки")
    tokens = format_tokens(fmt, tokenizer)
    [encoded] = encode_rollouts(tokenizer, fmt, tokens, [("Problem w1", ["step w2", "step w3"])], max_length=None,
                                keep_all_steps=True)  # fmt: skip
    assert len(tokens.tag_ids) == 2
    assert [encoded.input_ids[p] for p in encoded.tag_positions] == [tokens.tag_ids[-1]] * 2
    assert [encoded.input_ids[p - 1] for p in encoded.tag_positions] == [tokens.tag_ids[0]] * 2


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        (StepTagFormat(good_token="step w1"), "good token 'step w1' is 2 tokens"),
        (StepTagFormat(bad_token="+"), "the same token id"),
        (StepTagFormat(step_tag=" "), "encodes to no token"),
    ],
)
def test_a_format_the_tokenizer_cannot_read_is_refused_with_the_reason(fmt, message):
    with pytest.raises(ValueError, match=message):
        format_tokens(fmt, tiny_tokenizer())


def test_encoding_many_rollouts_matches_encoding_them_one_by_one():
    tokenizer = tiny_tokenizer()
    fmt = StepTagFormat()
    tokens = format_tokens(fmt, tokenizer)
    rollouts = [("Problem w1 w2", ["step m1 w3\n", "step w4 m9\n"]), ("Problem w5", ["step m5\n"])]
    together = encode_rollouts(tokenizer, fmt, tokens, rollouts, max_length=None, keep_all_steps=True)
    apart = [encode_rollouts(tokenizer, fmt, tokens, [r], max_length=None, keep_all_steps=True)[0] for r in rollouts]
    assert together == apart


def test_prm_config_round_trips_and_names_the_token_ids_that_differ(tmp_path):
    tokens = FormatTokens(tag_ids=(4,), good_id=5, bad_id=6, prefix_ids=(2,), pad_id=0)
    config = PRMConfig(
        format=StepTagFormat(step_tag="<step>"), token_ids=tokens.as_dict(), base_model="org/model", max_length=512,
        prm_version="v1", training={"eval": {"loss": 0.5}},
    )  # fmt: skip
    config.write(tmp_path)
    read = PRMConfig.read(tmp_path)
    assert read == config
    assert read.token_mismatch(tokens) is None
    other = FormatTokens(tag_ids=(4,), good_id=7, bad_id=6, prefix_ids=(), pad_id=0)
    assert read.token_mismatch(other) == "good_id 5 at training, 7 now"
    assert PRMConfig.read(tmp_path / "nowhere") is None


@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_the_rust_backend_reads_the_same_ids_as_the_tokenizer_and_is_left_when_it_would_pad(add_special_tokens):
    tokenizer = tiny_tokenizer()
    texts = ["Problem w1 w2\n", "step m3 w4\n", "", " ки", "unknown words here"]
    expected = [list(ids) for ids in tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]]
    assert token_ids(tokenizer, texts, add_special_tokens=add_special_tokens) == expected
    tokenizer.backend_tokenizer.enable_padding(pad_id=0, pad_token="<pad>")
    assert token_ids(tokenizer, texts, add_special_tokens=add_special_tokens) == expected
