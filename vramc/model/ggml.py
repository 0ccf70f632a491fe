"""ggml tensor types: id, name, block size and bytes per block, as in the pinned ggml.h / ggml.c.

Kept here (not imported from the `gguf` package) so that reading a header never imports numpy.
A test checks this table against `gguf.GGML_QUANT_SIZES`.
"""

from __future__ import annotations

# id: (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("f32", 1, 4),
    1: ("f16", 1, 2),
    2: ("q4_0", 32, 18),
    3: ("q4_1", 32, 20),
    6: ("q5_0", 32, 22),
    7: ("q5_1", 32, 24),
    8: ("q8_0", 32, 34),
    9: ("q8_1", 32, 40),
    10: ("q2_k", 256, 84),
    11: ("q3_k", 256, 110),
    12: ("q4_k", 256, 144),
    13: ("q5_k", 256, 176),
    14: ("q6_k", 256, 210),
    15: ("q8_k", 256, 292),
    16: ("iq2_xxs", 256, 66),
    17: ("iq2_xs", 256, 74),
    18: ("iq3_xxs", 256, 98),
    19: ("iq1_s", 256, 50),
    20: ("iq4_nl", 32, 18),
    21: ("iq3_s", 256, 110),
    22: ("iq2_s", 256, 82),
    23: ("iq4_xs", 256, 136),
    24: ("i8", 1, 1),
    25: ("i16", 1, 2),
    26: ("i32", 1, 4),
    27: ("i64", 1, 8),
    28: ("f64", 1, 8),
    29: ("iq1_m", 256, 56),
    30: ("bf16", 1, 2),
    34: ("tq1_0", 256, 54),
    35: ("tq2_0", 256, 66),
    39: ("mxfp4", 32, 17),
    40: ("nvfp4", 64, 36),
    41: ("q1_0", 128, 18),
    42: ("q2_0", 64, 18),
}
TYPE_BY_NAME: dict[str, int] = {name: tid for tid, (name, _, _) in GGML_TYPES.items()}


def type_name(type_id: int) -> str:
    return GGML_TYPES[type_id][0]


def row_size(type_name_or_id: str | int, n_elements: int) -> int:
    """Bytes of `n_elements` consecutive values (ggml_row_size); n must be a whole number of blocks."""
    tid = TYPE_BY_NAME[type_name_or_id] if isinstance(type_name_or_id, str) else type_name_or_id
    _, block, size = GGML_TYPES[tid]
    return size * n_elements // block


def tensor_nbytes(type_name_or_id: str | int, shape) -> int:
    """Bytes of a tensor (ggml_nbytes for a contiguous tensor): rows of ne[0] elements."""
    n0 = shape[0] if shape else 1
    rows = 1
    for d in shape[1:]:
        rows *= d
    return row_size(type_name_or_id, n0) * rows
