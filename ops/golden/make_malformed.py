#!/usr/bin/env python3
"""make_malformed.py — a corpus of broken (and a few tricky valid) safetensors
files for tests/test_safetensors.c, plus the libFuzzer seed corpora.

Writes, using only the Python standard library:

  tests/data/malformed/<case>.safetensors   one file per case
  tests/data/malformed/expected.txt         <file> TAB <FORMAT|IO|OK> TAB <substring
                                            the loader's error message must contain>
  tests/fuzz/corpus/safetensors/*           small valid and invalid seeds
  tests/fuzz/corpus/config/*                config.json seeds (three rotary spellings, bad ones)

Every bad file must be refused with ENG_ERR_FORMAT (or ENG_ERR_IO) and a
message naming the file; the OK files must load. Re-running rewrites the same
bytes (deterministic).

  python3 ops/golden/make_malformed.py [--root .]
"""
import argparse
import json
import os
import struct

CASES = []  # (name, bytes, status, substring)


def hdr(obj_text, pad=True):
    """8-byte length + header text (padded with spaces to a multiple of 8)."""
    b = obj_text.encode("utf-8") if isinstance(obj_text, str) else obj_text
    if pad:
        b += b" " * (-len(b) % 8)
    return struct.pack("<Q", len(b)) + b


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def st(tensors, data, meta=None):
    """A file from a dict name -> entry (written in the given order)."""
    obj = {}
    if meta is not None:
        obj["__metadata__"] = meta
    obj.update(tensors)
    return hdr(json.dumps(obj, separators=(",", ":"))) + data


def case(name, blob, status, sub):
    CASES.append((name + ".safetensors", blob, status, sub))


def build_cases():
    f32_4x4 = entry("F32", [4, 4], 0, 64)
    good = {"w": f32_4x4}
    z64 = bytes(64)

    # --- the 8-byte length and the header bounds
    case("short_file", b"\x01\x02\x03", "FORMAT", "too short")
    case("empty_file", b"", "FORMAT", "too short")
    case("header_len_past_eof", struct.pack("<Q", 1000) + b"{}" + bytes(6), "FORMAT", "past the end")
    case("header_len_over_100mb", struct.pack("<Q", 100_000_001) + b"{}      ", "FORMAT", "limit")
    case("header_len_u64_max", struct.pack("<Q", 2**64 - 1) + b"{}      ", "FORMAT", "limit")
    case("header_len_zero", struct.pack("<Q", 0) + bytes(8), "FORMAT", "JSON error")
    # --- the header text
    case("header_not_json", hdr("this is not json"), "FORMAT", "JSON error at line 1")
    case("header_json_array", hdr("[1, 2, 3]"), "FORMAT", "not a JSON object")
    case("header_json_string", hdr('"tensors"'), "FORMAT", "JSON error")
    case("header_trailing_garbage", hdr('{} x'), "FORMAT", "JSON error")
    case("header_unterminated", hdr('{"w": {"dtype": "F32"'), "FORMAT", "JSON error")
    case("header_bad_utf8", hdr(b'{"\xff\xfe": {}}'), "FORMAT", "JSON error")
    case("header_nul_byte", hdr(b'{"a\x00b": {}}'), "FORMAT", "JSON error")
    case("header_nul_escape", hdr('{"a\\u0000b": {}}'), "FORMAT", "JSON error")
    case("header_deep_nesting", hdr('{"w": ' + "[" * 5000 + "]" * 5000 + "}"), "FORMAT", "JSON error")
    case("header_int_too_big", hdr('{"w": {"dtype": "F32", "shape": [4], "data_offsets": '
                                   '[0, 100000000000000000000000]}}'), "FORMAT", "JSON error")
    case("duplicate_names", hdr('{"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}, '
                                '"w": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}}') + bytes(8),
         "FORMAT", "duplicate")
    # --- __metadata__
    case("metadata_not_object", st(good, z64, meta=[1, 2]), "FORMAT", "'__metadata__' is not a JSON object")
    case("metadata_value_not_string", st(good, z64, meta={"format": 1}), "FORMAT", "'__metadata__' field 'format'")
    # --- entries and their fields
    case("entry_not_object", st({"w": [1, 2]}, b""), "FORMAT", "tensor 'w': entry is not a JSON object")
    case("missing_dtype", st({"w": {"shape": [4, 4], "data_offsets": [0, 64]}}, z64), "FORMAT",
         "tensor 'w': missing field 'dtype'")
    case("missing_shape", st({"w": {"dtype": "F32", "data_offsets": [0, 64]}}, z64), "FORMAT",
         "tensor 'w': missing field 'shape'")
    case("missing_data_offsets", st({"w": {"dtype": "F32", "shape": [4, 4]}}, z64), "FORMAT",
         "tensor 'w': missing field 'data_offsets'")
    case("unknown_dtype", st({"w": entry("F4", [4, 4], 0, 64)}, z64), "FORMAT", "tensor 'w': unknown dtype 'F4'")
    case("dtype_lowercase", st({"w": entry("f32", [4, 4], 0, 64)}, z64), "FORMAT", "unknown dtype 'f32'")
    case("dtype_not_string", st({"w": {"dtype": 7, "shape": [4, 4], "data_offsets": [0, 64]}}, z64), "FORMAT",
         "field 'dtype' is not a string")
    case("shape_not_array", st({"w": entry("F32", 16, 0, 64)}, z64), "FORMAT", "field 'shape' is not an array")
    case("negative_shape", st({"w": entry("F32", [-4, -4], 0, 64)}, z64), "FORMAT", "shape[0] is not a non-negative")
    case("shape_float", st({"w": entry("F32", [4, 4.0], 0, 64)}, z64), "FORMAT", "shape[1] is not a non-negative")
    case("shape_string", st({"w": entry("F32", ["4"], 0, 16)}, bytes(16)), "FORMAT", "shape[0]")
    case("too_many_dims", st({"w": entry("U8", [1] * 9, 0, 1)}, b"\0"), "FORMAT", "at most 8")
    case("huge_shape_overflow", st({"w": entry("F32", [2**62, 2**62, 4], 0, 64)}, z64), "FORMAT", "overflows")
    case("shape_bytes_overflow", st({"w": entry("F64", [2**62], 0, 64)}, z64), "FORMAT", "overflows")
    case("size_mismatch", st({"w": entry("F32", [4, 4], 10, 20)}, bytes(20)), "FORMAT",
         "data_offsets [10, 20] size 10 != shape [4, 4] x F32 = 64")
    case("data_offsets_wrong_type", st({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": "0,64"}}, z64),
         "FORMAT", "field 'data_offsets'")
    case("data_offsets_one_elem", st({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [64]}}, z64),
         "FORMAT", "field 'data_offsets'")
    case("data_offsets_three", st({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64, 64]}}, z64),
         "FORMAT", "field 'data_offsets'")
    case("data_offsets_negative", st({"w": entry("U8", [4], -4, 0)}, b""), "FORMAT", "field 'data_offsets'")
    case("data_offsets_float", st({"w": entry("F32", [4, 4], 0, 64.0)}, z64), "FORMAT", "field 'data_offsets'")
    case("begin_gt_end", st({"w": entry("F32", [0], 16, 0)}, bytes(16)), "FORMAT", "begin > end")
    # --- tiling of the data buffer
    case("truncated_data", st(good, bytes(32)), "FORMAT", "past the end of the 32-byte data buffer")
    case("offsets_past_eof", st({"w": entry("U8", [8], 2**63 - 9, 2**63 - 1)}, bytes(8)), "FORMAT",
         "past the end")
    case("first_not_at_zero", st({"w": entry("U8", [16], 4, 20)}, bytes(20)), "FORMAT", "must begin at 0")
    case("gap_between_tensors", st({"a": entry("U8", [16], 0, 16), "b": entry("U8", [16], 20, 36)}, bytes(36)),
         "FORMAT", "tensor 'b': data_offsets begin 20 but previous tensor 'a' ends at 16 (gap)")
    case("overlapping_tensors", st({"a": entry("U8", [16], 0, 16), "b": entry("U8", [16], 8, 24)}, bytes(24)),
         "FORMAT", "(overlap)")
    case("same_offsets_twice", st({"a": entry("U8", [16], 0, 16), "b": entry("U8", [16], 0, 16)}, bytes(16)),
         "FORMAT", "overlap")
    case("trailing_bytes", st(good, bytes(68)), "FORMAT", "trailing bytes")
    case("no_tensors_trailing", st({}, b"x"), "FORMAT", "trailing bytes")

    # --- valid but unusual: these must load
    case("ok_empty_header", hdr("{}"), "OK", "")
    case("ok_header_leading_space", hdr(' \n{}'), "OK", "")  # safetensors 0.8 accepts it too
    case("ok_metadata_only", st({}, b"", meta={"format": "pt"}), "OK", "")
    case("ok_zero_size_and_scalar",
         st({"s": entry("F32", [], 0, 4), "z": entry("F16", [0, 7], 4, 4), "e": entry("BF16", [2], 4, 8)},
            struct.pack("<f", 1.5) + struct.pack("<HH", 0x3F80, 0xC000)), "OK", "")
    # an F32 tensor at an odd file offset: readers must not assume alignment
    case("ok_unaligned",
         st({"b": entry("U8", [3], 0, 3), "f": entry("F32", [2], 3, 11)},
            b"\1\2\3" + struct.pack("<ff", 0.25, -3.0)), "OK", "")
    dts = [("BOOL", 1), ("U8", 1), ("I8", 1), ("F8_E5M2", 1), ("F8_E4M3", 1), ("I16", 2), ("U16", 2),
           ("F16", 2), ("BF16", 2), ("I32", 4), ("U32", 4), ("F32", 4), ("F64", 8), ("I64", 8), ("U64", 8)]
    tens, at = {}, 0
    for name, size in dts:
        tens["t_" + name] = entry(name, [2], at, at + 2 * size)
        at += 2 * size
    case("ok_all_dtypes", st(tens, bytes(at), meta={"format": "pt"}), "OK", "")


def config_seeds():
    base = {"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 256, "vocab_size": 512, "max_position_embeddings": 256, "layer_norm_eps": 1e-5,
            "use_parallel_residual": True, "hidden_act": "gelu", "attention_bias": True,
            "bos_token_id": 0, "eos_token_id": 0, "tie_word_embeddings": False}
    seeds = {
        "pythia.json": dict(base, rotary_pct=0.25, rotary_emb_base=10000, torch_dtype="float16"),
        "top_level.json": dict(base, partial_rotary_factor=0.25, rope_theta=5000.0),
        "rope_parameters.json": dict(base, rope_parameters={"partial_rotary_factor": 0.25, "rope_theta": 10000.0,
                                                            "rope_type": "default"}, rope_scaling=None),
        "minimal.json": {k: base[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "intermediate_size", "vocab_size", "max_position_embeddings")},
        "bad_act.json": dict(base, hidden_act="relu"),
        "bad_rope_type.json": dict(base, rope_parameters={"rope_type": "linear", "factor": 2.0}),
        "bad_heads.json": dict(base, num_attention_heads=3),
        "eos_list.json": dict(base, eos_token_id=[0, 2]),
    }
    out = {k: (json.dumps(v, indent=2) + "\n").encode() for k, v in seeds.items()}
    out["syntax_error.json"] = b'{"hidden_size": 64,, }\n'
    out["array.json"] = b"[1, 2]\n"
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=".")
    a = ap.parse_args()
    build_cases()
    mdir = os.path.join(a.root, "tests", "data", "malformed")
    os.makedirs(mdir, exist_ok=True)
    for fn in os.listdir(mdir):
        if fn.endswith(".safetensors"):
            os.remove(os.path.join(mdir, fn))
    names = set()
    with open(os.path.join(mdir, "expected.txt"), "w") as ex:
        for name, blob, status, sub in CASES:
            assert name not in names, name
            names.add(name)
            with open(os.path.join(mdir, name), "wb") as f:
                f.write(blob)
            ex.write(f"{name}\t{status}\t{sub}\n")
    sdir = os.path.join(a.root, "tests", "fuzz", "corpus", "safetensors")
    os.makedirs(sdir, exist_ok=True)
    for name, blob, status, _ in CASES:  # small ones only: libFuzzer mutates better
        if len(blob) <= 4096:
            with open(os.path.join(sdir, name), "wb") as f:
                f.write(blob)
    cdir = os.path.join(a.root, "tests", "fuzz", "corpus", "config")
    os.makedirs(cdir, exist_ok=True)
    for name, blob in config_seeds().items():
        with open(os.path.join(cdir, name), "wb") as f:
            f.write(blob)
    bad = sum(1 for c in CASES if c[2] != "OK")
    print(f"{len(CASES)} safetensors cases ({bad} malformed) in {mdir}; seeds in {sdir} and {cdir}")


if __name__ == "__main__":
    main()
