"""The detokenizer's direct Rust decode gives exactly `tokenizer.decode(ids, skip_special_tokens=True)`."""

import random

from transformers import TokenizersBackend

from fleetserve.engine.detokenizer import TokenText


def windows(tokenizer):
    """Short windows like the detokenizer's: real text split mid-character, special tokens, ids past the vocabulary
    (random models sample those) and random ids."""
    rng = random.Random(0)
    text_ids = tokenizer.encode("Emoji 😀🎉 and 中文字符 mixed: naïve café ✓  spaces\n\tand tabs")
    yield from (text_ids[i:i + n] for n in (1, 2, 3, 6) for i in range(len(text_ids) - n + 1))
    yield from ([t] for t in tokenizer.all_special_ids)
    yield [text_ids[0], tokenizer.all_special_ids[0], text_ids[1]]
    yield [len(tokenizer) + 5, text_ids[2]]
    for _ in range(300):
        yield [rng.randrange(len(tokenizer)) for _ in range(rng.randint(1, 6))]


def test_direct_decode_matches_tokenizer_decode(tokenizer):
    assert isinstance(tokenizer, TokenizersBackend)  # SmolLM2's takes the direct path
    decode = TokenText(tokenizer).decode
    for ids in windows(tokenizer):
        assert decode(ids) == tokenizer.decode(ids, skip_special_tokens=True), ids


def test_tokenizers_with_their_own_decode_keep_it(tokenizer):
    class Custom(type(tokenizer)):
        def _decode(self, token_ids, **kwargs):
            return "custom"

    tokenizer_copy = Custom.__new__(Custom)
    tokenizer_copy.__dict__.update(tokenizer.__dict__)
    assert TokenText(tokenizer_copy).decode([1, 2]) == "custom"


def test_space_clean_up_setting_is_honoured(tokenizer):
    """GGUF tokenizers can come with clean_up_tokenization_spaces=True, which transformers ignores for BPE unless
    forced: the direct path must give what decode gives in both cases."""
    ids = tokenizer.encode("Hello , world . Is it ? Yes !")
    for force in (False, True):
        tokenizer_copy = type(tokenizer).__new__(type(tokenizer))
        tokenizer_copy.__dict__.update(tokenizer.__dict__)
        tokenizer_copy.clean_up_tokenization_spaces = True
        tokenizer_copy.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = force
        expected = tokenizer_copy.decode(ids, skip_special_tokens=True)
        assert TokenText(tokenizer_copy).decode(ids) == expected
        assert (expected == "Hello, world. Is it? Yes!") == force
