"""Incremental detokenisation with the real SmolLM2 tokenizer: no broken UTF-8, stop strings withheld."""

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
