"""Cheap stand-in vocabularies of the real size, valid for llama.cpp's tokenizer loader.

llama.cpp needs, per tokenizer model: `llama` (SentencePiece) tokens, scores and types, with
`<0xNN>` byte tokens so that the newline token resolves; `gpt2` (byte-level BPE) tokens, types and
a merges array (which may be short: only its presence is checked). Tokens must be unique (the
loader asserts id_to_token and token_to_id have the same size). Content is otherwise irrelevant:
count and special-token ids are what memory and tensor shapes depend on.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramc.dev.synth.shapes import Tokenizer

# gguf TokenType
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    scores: list[float] | None  # SentencePiece only
    merges: list[str] | None  # BPE only


def _gpt2_byte_chars() -> list[str]:
    """GPT-2's bytes_to_unicode: the printable stand-in character of every byte, by byte value."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def build_vocab(tok: Tokenizer, n_vocab: int) -> Vocab:
    tokens: list[str | None] = [None] * n_vocab
    types = [NORMAL] * n_vocab
    for tid, text in tok.specials:
        tokens[tid] = text
        types[tid] = UNKNOWN if tid == tok.unk_id else CONTROL
    if tok.model == "llama":
        byte_tokens, byte_type = [f"<0x{b:02X}>" for b in range(256)], BYTE
    else:
        byte_tokens, byte_type = _gpt2_byte_chars(), NORMAL
    free = (i for i in range(n_vocab) if tokens[i] is None)
    for text in byte_tokens:
        i = next(free)
        tokens[i], types[i] = text, byte_type
    if tok.model == "llama":  # the word-boundary piece every SentencePiece vocabulary has
        i = next(free, None)
        if i is not None:
            tokens[i] = "\u2581"
    # fillers: the same "[PAD{i}]" the converter pads short vocabularies with, by id so unique
    for i in free:
        tokens[i] = f"[PAD{i}]"
    if tok.model == "llama":
        scores = [0.0 if t in (CONTROL, UNKNOWN, BYTE) else -float(i) for i, t in enumerate(types)]
        return Vocab(tokens, types, scores, None)  # type: ignore[arg-type]
    merges = [f"{byte_tokens[ord(a)]} {byte_tokens[ord(b)]}" for a, b in ("in", "th", "er", "an")]
    return Vocab(tokens, types, None, merges)  # type: ignore[arg-type]


def tokenizer_metadata(tok: Tokenizer, n_vocab: int) -> dict:
    """The `tokenizer.ggml.*` keys for `tok` (arrays included)."""
    v = build_vocab(tok, n_vocab)
    kv: dict = {"tokenizer.ggml.model": tok.model}
    if tok.pre:
        kv["tokenizer.ggml.pre"] = tok.pre
    kv["tokenizer.ggml.tokens"] = v.tokens
    if v.scores is not None:
        kv["tokenizer.ggml.scores"] = v.scores
    kv["tokenizer.ggml.token_type"] = v.types
    if v.merges is not None:
        kv["tokenizer.ggml.merges"] = v.merges
    kv["tokenizer.ggml.bos_token_id"] = tok.bos_id
    kv["tokenizer.ggml.eos_token_id"] = tok.eos_id
    if tok.unk_id is not None:
        kv["tokenizer.ggml.unknown_token_id"] = tok.unk_id
    if tok.pad_id is not None:
        kv["tokenizer.ggml.padding_token_id"] = tok.pad_id
    return kv
