"""Compares a PNG the ldm tool wrote on the GPU with the reference's CPU image (raw float32 HWC in [0, 1]).

Usage: png_parity.py IMAGE.png EXPECTED.f32 LABEL
"""
import sys

import numpy as np
from PIL import Image

image, expected, label = sys.argv[1:4]
a = np.asarray(Image.open(image).convert('RGB')).astype(np.float32) / 255
e = np.fromfile(expected, dtype=np.float32).reshape(a.shape)
print(f"{label} on CUDA float32 vs reference CPU: max abs {np.abs(a - e).max():.5f} (PNG rounding allows 1/255 = 0.00392 + 2e-3)")
