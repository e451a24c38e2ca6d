#!/usr/bin/env python3
"""Parquet fixtures for data/parquet.c (tests/test_parquet.c, tests/cli_parquet.sh, the fuzz seeds).

Writes tests/fixtures/parquet/ with pyarrow:
  mt_*.parquet      one small table shaped like HuggingFaceH4/Multilingual-Thinking (reasoning_language,
                    developer, user, analysis, final: strings; messages: list<struct<content, role,
                    thinking>>), rows in several languages with a null string, a null "thinking" on the
                    system/user messages (as the dataset has), an empty messages list, a null messages
                    list and a null element inside one; written once per combination of data page V1/V2,
                    dictionary on/off (and one that falls back from dictionary to PLAIN mid-column, and
                    one in format version 1.0, whose pages say PLAIN_DICTIONARY),
                    UNCOMPRESSED/SNAPPY/GZIP/ZSTD, one page and row group or many small ones.
  mt_rows.jsonl     what pyarrow reads back from every mt_*.parquet (Table.to_pylist(), one JSON object
                    a line): the expected rows.
  mt_good.parquet + mt_good.jsonl
                    the rows of the table that render as conversations, for the end-to-end check that
                    `gptoss data` counts the same tokens on a parquet file and on its JSONL twin.
  types_*.parquet + types_rows.jsonl
                    the other supported shapes: INT32/INT64/FLOAT/DOUBLE/BOOLEAN columns (int8, uint32
                    and uint64 annotations), required and optional, nulls, list<string>, a struct of
                    primitives, list<int64>.
  unsupported_*.parquet
                    valid files gptoss refuses with a message naming the column or codec: a map column,
                    a list of lists, a timestamp column, LZ4 and BROTLI compression.
  bad_*.parquet     damaged copies of mt files (a page header's compressed or uncompressed size, a
                    dictionary's value count patched in place), for the reader's error messages.

    python3 tests/ref/make_parquet_fixture.py     # needs pyarrow (pip install pyarrow)
"""
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests/fixtures/parquet")
SEEDS = os.path.join(ROOT, "tests/fuzz/seeds/fuzz_parquet")


def conv(lang, dev, user, analysis, final):
    sys_msg = "reasoning language: %s\n\n%s" % (lang, dev) if dev is not None else "reasoning language: %s" % lang
    return [{"content": sys_msg, "role": "system", "thinking": None},
            {"content": user, "role": "user", "thinking": None},
            {"content": final, "role": "assistant", "thinking": analysis}]


DEV = "You are a concise assistant."
MT_ROWS = [
    ("French", DEV, "Combien font 12 fois 7 ?", "L'utilisateur veut 12 × 7 = 84.", "12 × 7 = 84."),
    ("German", DEV, "Wie viele Minuten hat eine Stunde?", "Eine Stunde hat 60 Minuten.", "60 Minuten."),
    ("Spanish", None, "¿Cuánto es 9 más 5?", "9 + 5 = 14, respuesta corta.", "Son 14."),
    ("English", DEV, "日本の首都はどこですか？", "The capital of Japan is Tokyo.", "東京です。"),
    ("Arabic", "Answer briefly.", "What is 3 squared?", "٣ × ٣ = ٩", "3² = 9."),
    ("English", DEV, "Say hi.", None, "Hi! 👋"),
]


def mt_table():
    rows = []
    for lang, dev, user, analysis, final in MT_ROWS:
        rows.append({"reasoning_language": lang, "developer": dev, "user": user, "analysis": analysis,
                     "final": final, "messages": conv(lang, dev, user, analysis, final)})
    # The bad shapes the pipeline must refuse row by row: an empty list, a null list, a null element.
    rows.append({"reasoning_language": "Italian", "developer": DEV, "user": "Ciao", "analysis": "Un saluto.",
                 "final": "Ciao!", "messages": []})
    rows.append({"reasoning_language": "Italian", "developer": DEV, "user": "Ciao", "analysis": "Un saluto.",
                 "final": "Ciao!", "messages": None})
    m = conv("Chinese", DEV, "你好", "用户在打招呼。", "你好！")
    rows.append({"reasoning_language": "Chinese", "developer": DEV, "user": "你好", "analysis": "用户在打招呼。",
                 "final": "你好！", "messages": [m[0], None, m[2]]})
    # One more good row after the bad ones, so that the readers' cursors are checked past them.
    lang, dev, user, analysis, final = ("Portuguese", DEV, "Quanto é 2 + 2?", "2 + 2 = 4.", "4.")
    rows.append({"reasoning_language": lang, "developer": dev, "user": user, "analysis": analysis,
                 "final": final, "messages": conv(lang, dev, user, analysis, final)})
    msg = pa.struct([("content", pa.string()), ("role", pa.string()), ("thinking", pa.string())])
    schema = pa.schema([("reasoning_language", pa.string()), ("developer", pa.string()), ("user", pa.string()),
                        ("analysis", pa.string()), ("final", pa.string()), ("messages", pa.list_(msg))])
    return pa.Table.from_pylist(rows, schema=schema)


def write_jsonl(path, table):
    with open(path, "w", encoding="utf-8") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# (name, data page version, dictionary, compression, small pages and row groups)
MT_VARIANTS = [
    ("mt_v1_plain_none", "1.0", False, "none", False),
    ("mt_v1_dict_snappy", "1.0", True, "snappy", False),  # what HF's datasets writes by default
    ("mt_format1_dict_snappy", "1.0", True, "snappy", False),  # format version 1.0: PLAIN_DICTIONARY pages
    ("mt_v1_dict_gzip_pages", "1.0", True, "gzip", True),
    ("mt_v1_fallback_snappy_pages", "1.0", "fallback", "snappy", True),
    ("mt_v2_dict_zstd_pages", "2.0", True, "zstd", True),
    ("mt_v2_plain_gzip_pages", "2.0", False, "gzip", True),
    ("mt_v2_plain_none", "2.0", False, "none", False),
    ("mt_v2_dict_snappy", "2.0", True, "snappy", False),
]


def write_variant(path, table, page_version, dictionary, compression, small):
    kw = dict(data_page_version=page_version, compression=compression, use_dictionary=bool(dictionary),
              store_schema=False)
    if small:
        # Pages of a few values and row groups of 3 rows: every reader path crosses page and row-group
        # boundaries, also inside one row's messages list (no statistics: they would double the size; the
        # other files have them, and the reader skips them).
        kw.update(data_page_size=64, write_batch_size=2, row_group_size=3, write_statistics=False)
    if os.path.basename(path).startswith("mt_format1"):
        kw.update(version="1.0")
    if dictionary == "fallback":
        kw.update(dictionary_pagesize_limit=48)  # the dictionary fills up: later pages are PLAIN
    pq.write_table(table, path, **kw)


def types_table():
    rows = [
        {"i32": 1, "i64": -(2 ** 40), "f32": 0.5, "f64": 3.25, "flag": True, "i8": -5, "u32": 4000000000,
         "u64": 2 ** 63 - 1, "req": 7, "tags": ["a", "ß"], "point": {"x": 1, "name": "p"}, "nums": [1, 2, 3]},
        {"i32": None, "i64": 0, "f32": None, "f64": -1e300, "flag": False, "i8": 127, "u32": 0, "u64": 0,
         "req": -7, "tags": [], "point": None, "nums": None},
        {"i32": -2147483648, "i64": None, "f32": -2.0, "f64": None, "flag": None, "i8": None, "u32": None,
         "u64": None, "req": 0, "tags": None, "point": {"x": None, "name": None}, "nums": [None, 5]},
        {"i32": 2147483647, "i64": 2 ** 63 - 1, "f32": 1e-3, "f64": 0.1, "flag": True, "i8": -128,
         "u32": 1, "u64": 12345678901234, "req": 1, "tags": [None, "x"], "point": {"x": -1, "name": "日本"},
         "nums": []},
    ]
    schema = pa.schema([("i32", pa.int32()), ("i64", pa.int64()), ("f32", pa.float32()), ("f64", pa.float64()),
                        ("flag", pa.bool_()), ("i8", pa.int8()), ("u32", pa.uint32()), ("u64", pa.uint64()),
                        pa.field("req", pa.int32(), nullable=False), ("tags", pa.list_(pa.string())),
                        ("point", pa.struct([("x", pa.int64()), ("name", pa.string())])),
                        ("nums", pa.list_(pa.int64()))])
    return pa.Table.from_pylist(rows, schema=schema)


def unsupported():
    one = {"a": [1]}
    tables = {
        "unsupported_map": pa.table({"id": [1], "m": pa.array([[("k", 1)]], type=pa.map_(pa.string(), pa.int32()))}),
        "unsupported_list_of_lists": pa.table({"id": [1], "ll": pa.array([[[1, 2], [3]]], type=pa.list_(pa.list_(pa.int32())))}),
        "unsupported_timestamp": pa.table({"t": pa.array([0], type=pa.timestamp("ms"))}),
    }
    for name, t in tables.items():
        pq.write_table(t, os.path.join(OUT, name + ".parquet"), store_schema=False, compression="none")
    for codec in ("lz4", "brotli"):
        pq.write_table(pa.table(one), os.path.join(OUT, "unsupported_%s.parquet" % codec), compression=codec,
                       store_schema=False)


# --- a small Thrift compact reader: enough to find a field's varint inside a page header ---
def varint(b, i):
    shift = v = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def skip(b, i, t):
    if t in (1, 2):
        return i
    if t == 3:
        return i + 1
    if t in (4, 5, 6):
        return varint(b, i)[1]
    if t == 7:
        return i + 8
    if t == 8:
        n, i = varint(b, i)
        return i + n
    if t in (9, 10):
        h = b[i]
        i += 1
        n, et = h >> 4, h & 15
        if n == 15:
            n, i = varint(b, i)
        for _ in range(n):
            i = skip(b, i, et)
        return i
    if t == 12:
        return struct_fields(b, i, None)[1]
    raise ValueError("thrift type %d" % t)


def struct_fields(b, i, found):
    """Walks a struct from i; records (path of field ids) -> (start, end) of each integer field."""
    fid = 0
    while True:
        h = b[i]
        i += 1
        if h == 0:
            return found, i
        t = h & 15
        if h >> 4:
            fid += h >> 4
        else:
            z, i = varint(b, i)
            fid = (z >> 1) ^ -(z & 1)
        if t == 12 and found is not None:
            sub, i = struct_fields(b, i, {})
            for k, v in sub.items():
                found[(fid,) + k] = v
        elif t in (5, 6) and found is not None:
            end = varint(b, i)[1]
            found[(fid,)] = (i, end)
            i = end
        else:
            i = skip(b, i, t)


def zigzag_same_width(value, width):
    """value as a zigzag varint of exactly `width` bytes (padded with continuation bytes)."""
    z = (value << 1) ^ (value >> 63)
    out = []
    for k in range(width):
        c = z & 0x7F
        z >>= 7
        out.append(c | (0x80 if k < width - 1 else 0))
    if z:
        raise ValueError("%d does not fit in %d bytes" % (value, width))
    return bytes(out)


def patch(src, dst, offset, field, value):
    b = bytearray(open(src, "rb").read())
    found, _ = struct_fields(b, offset, {})
    s, e = found[field]
    if value is None:
        value = (1 << (7 * (e - s) - 1)) - 1
    b[s:e] = zigzag_same_width(value, e - s)
    open(dst, "wb").write(bytes(b))


def bad_files():
    # PageHeader: 2 uncompressed_page_size, 3 compressed_page_size, 7 dictionary_page_header (1 num_values).
    src = os.path.join(OUT, "mt_v1_dict_snappy.parquet")
    col = pq.ParquetFile(src).metadata.row_group(0).column(0)
    dict_off, data_off = col.dictionary_page_offset, col.data_page_offset
    # the largest compressed size the varint's width holds, past the chunk's end
    patch(src, os.path.join(OUT, "bad_page_past_chunk.parquet"), data_off, (3,), None)
    patch(src, os.path.join(OUT, "bad_snappy_size.parquet"), dict_off, (2,), 13)
    # The dictionary holds 1 value instead of 6: the data page's indices point past it.
    patch(src, os.path.join(OUT, "bad_dict_index.parquet"), dict_off, (7, 1), 1)
    src = os.path.join(OUT, "mt_v2_plain_none.parquet")
    col = pq.ParquetFile(src).metadata.row_group(0).column(1)
    patch(src, os.path.join(OUT, "bad_uncompressed_size.parquet"), col.data_page_offset, (2,), 20)


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    t = mt_table()
    for name, ver, dic, comp, small in MT_VARIANTS:
        path = os.path.join(OUT, name + ".parquet")
        write_variant(path, t, ver, dic, comp, small)
        back = pq.read_table(path)
        assert back.to_pylist() == t.to_pylist(), name
    write_jsonl(os.path.join(OUT, "mt_rows.jsonl"), t)
    good = t.filter(pa.array([m is not None and len(m) > 0 and None not in m
                              for m in t.column("messages").to_pylist()]))
    write_variant(os.path.join(OUT, "mt_good.parquet"), good, "1.0", True, "zstd", True)
    write_jsonl(os.path.join(OUT, "mt_good.jsonl"), good)
    tt = types_table()
    write_variant(os.path.join(OUT, "types_v1_dict_snappy.parquet"), tt, "1.0", True, "snappy", False)
    write_variant(os.path.join(OUT, "types_v2_plain_zstd_pages.parquet"), tt, "2.0", False, "zstd", True)
    write_jsonl(os.path.join(OUT, "types_rows.jsonl"), tt)
    unsupported()
    bad_files()
    if os.path.isdir(SEEDS):
        shutil.rmtree(SEEDS)
    os.makedirs(SEEDS)
    for name in ("mt_v1_dict_snappy", "mt_v2_dict_zstd_pages", "mt_v1_plain_none", "mt_v2_plain_gzip_pages",
                 "types_v1_dict_snappy", "types_v2_plain_zstd_pages"):
        shutil.copy(os.path.join(OUT, name + ".parquet"), SEEDS)
    for f in sorted(os.listdir(OUT)):
        print("%6d  %s" % (os.path.getsize(os.path.join(OUT, f)), f))


if __name__ == "__main__":
    main()
