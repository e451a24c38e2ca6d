#!/usr/bin/env python3
"""Writes tests/fixtures/safetensors_py.safetensors with Python's safetensors (the reference writer).

tests/test_safetensors.c reads it and checks every value against the formulas below (restated there),
then writes the same tensors with safetensors_write and checks the two files agree: the same header JSON
and byte-identical data. One tensor per dtype gptoss reads, a scalar (ndim 0) and a zero-size tensor.
Values are chosen exactly representable in their dtype; fp8 values are checked as their known bit
patterns.

    python3 tests/ref/make_safetensors_fixture.py   (needs torch and safetensors)
"""
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "safetensors_py.safetensors")


def main():
    i = lambda n: torch.arange(n, dtype=torch.float64)
    t = {
        "bool": (torch.arange(5) % 3 == 0),                                          # [1,0,0,1,0]
        "u8": (torch.arange(6) * 40 + 3).to(torch.uint8).reshape(2, 3),              # 3, 43, ..., 203
        "i8": (torch.arange(4) * -37 + 5).to(torch.int8),                            # 5, -32, -69, -106
        "i16": (torch.arange(3) * 20000 - 30000).to(torch.int16),                    # -30000, -10000, 10000
        "i32": (torch.arange(4, dtype=torch.int64) * 1000000007 - 2000000000).to(torch.int32).reshape(2, 2),
        "i64": torch.arange(3, dtype=torch.int64) * (1 << 45) - (1 << 50),
        "f16": ((i(4) - 1.5) * 0.75).to(torch.float16).reshape(2, 2),
        "bf16": (i(3) * 1.25 - 2.0).to(torch.bfloat16),
        "f32": (i(6) * 0.1 - 0.25).to(torch.float32).reshape(2, 1, 3),
        "f64": torch.tensor(3.141592653589793, dtype=torch.float64),                 # scalar, ndim 0
        "f8_e4m3": torch.tensor([0.5, -1.0, 1.5, 448.0]).to(torch.float8_e4m3fn),   # 0x30 0xb8 0x3c 0x7e
        "f8_e5m2": torch.tensor([0.5, -2.0, 57344.0]).to(torch.float8_e5m2),        # 0x38 0xc0 0x7b
        "layers.0.empty": torch.zeros(0, 4, dtype=torch.float32),                    # zero-size
    }
    save_file(t, OUT, metadata={"format": "pt", "made_by": "tests/ref/make_safetensors_fixture.py"})
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
