"""Incremental detokenisation with the real SmolLM2 tokenizer: no broken UTF-8, stop strings withheld."""

import random

from fleetserve.engine.detokenizer import IncrementalDetokenizer

TEXT = "Emoji 😀🎉 and 中文字符 mixed: naïve café ✓"


def stream(tokenizer, text, stop=()):
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode("Say:"), list(stop))
    chunks, stopped = [], False
    for token in tokenizer.encode(text):
        detok.add_token(token)
        chunk, stopped = detok.take()
        chunks.append(chunk)
        if stopped:
            break
    if not stopped:
        chunks.append(detok.flush())
    return chunks, stopped


def test_multibyte_characters_are_never_split(tokenizer):
    ids = tokenizer.encode(TEXT)
    assert any("\ufffd" in tokenizer.decode([t]) for t in ids)  # the tokenizer does split characters
    chunks, _ = stream(tokenizer, TEXT)
    assert all("\ufffd" not in c for c in chunks)
    assert "".join(chunks) == TEXT


def test_stop_string_across_tokens_is_withheld_and_dropped(tokenizer):
    chunks, stopped = stream(tokenizer, "Hello there, the END is near", stop=["END is"])
    assert stopped and "".join(chunks) == "Hello there, the "
    assert not any("E" in c for c in chunks)


def test_false_alarm_is_released_once_disambiguated(tokenizer):
    chunks, stopped = stream(tokenizer, "Hello ENDLESS road", stop=["END!"])
    assert not stopped and "".join(chunks) == "Hello ENDLESS road"
    assert chunks.index(next(c for c in chunks if "END" in c)) > 0


def test_stop_string_inside_a_multibyte_run(tokenizer):
    chunks, stopped = stream(tokenizer, TEXT, stop=["字符"])
    assert stopped and "".join(chunks) == "Emoji 😀🎉 and 中文"


def test_byte_level_pieces_give_what_decoding_every_window_gives(tokenizer):
    """The per-token texts are a shortcut: on any id stream (characters split across tokens, special tokens, ids
    past the vocabulary, random ids) the detokenizer hands out the same text, token by token, as without them."""
    assert IncrementalDetokenizer(tokenizer, [1], [])._pieces is not None  # SmolLM2 is byte-level
    rng = random.Random(0)
    text_ids = tokenizer.encode(TEXT)
    for trial in range(40):
        prompt = [rng.randrange(len(tokenizer)) for _ in range(rng.randint(1, 8))]
        stream_ids = [rng.choice([rng.choice(text_ids), rng.randrange(len(tokenizer)), rng.randrange(200),
                                  tokenizer.all_special_ids[0], len(tokenizer) + 3]) for _ in range(60)]
        fast = IncrementalDetokenizer(tokenizer, prompt, [])
        slow = IncrementalDetokenizer(tokenizer, prompt, [])
        slow._pieces = None
        for token in stream_ids:
            fast.add_token(token)
            slow.add_token(token)
            assert fast.take() == slow.take(), (trial, prompt, stream_ids)
            assert (fast.prefix_offset, fast.read_offset) == (slow.prefix_offset, slow.read_offset)
        assert fast.flush() == slow.flush()
