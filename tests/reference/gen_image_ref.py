#!/usr/bin/python3
"""gen_image_ref.py: test images and their CLIP preprocessing by PIL, for lavinia's image tests.

Run with Debian's interpreter (PIL, numpy), from this directory:

    cd tests/reference && /usr/bin/python3 gen_image_ref.py

It writes images/ (a photo-like JPEG, a PNG with alpha, a 1x1 PNG, a 7x4000 and a 4000x7
PNG) and image_ref.bin (the LVREF layout of tests/refdata.h) holding, for each image,
"pixels.NAME" (3, 112, 112): what Hugging Face's CLIPImageProcessor computes with size =
crop = 112 and OpenAI CLIP's mean and std. Its steps, done here with PIL as it does
them: convert('RGB') (alpha dropped), the shortest side resized to 112 with the long side
int()-truncated (Image.BICUBIC), a centre crop with offsets rounded down, / 255, then
(x - mean) / std per channel. All are committed, so `make check` needs no Python.
"""

import os
import sys

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_llama_lm import write_ref  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 112
MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


def make_images(d):
    rs = np.random.RandomState(20261126)
    os.makedirs(d, exist_ok=True)
    # photo-like: gradients, shapes and noise, saved as JPEG
    y, x = np.mgrid[0:240, 0:320]
    a = np.stack([x * 255 / 319, y * 255 / 239, (x + y) * 255 / 558], -1)
    a = a + rs.normal(0, 12, a.shape)
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    dr = ImageDraw.Draw(img)
    dr.ellipse((40, 30, 180, 170), fill=(200, 40, 60))
    dr.rectangle((200, 120, 300, 220), fill=(30, 160, 90))
    dr.line((0, 239, 319, 0), fill=(250, 250, 250), width=5)
    img.save(os.path.join(d, "photo.jpg"), quality=90)
    rgba = np.concatenate([rs.randint(0, 256, (61, 97, 3)),
                           np.tile(np.linspace(0, 255, 97), (61, 1))[..., None]], -1)
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(os.path.join(d, "alpha.png"))
    Image.fromarray(np.array([[[10, 200, 30]]], dtype=np.uint8)).save(os.path.join(d, "tiny.png"))
    Image.fromarray(rs.randint(0, 256, (4000, 7, 3)).astype(np.uint8)).save(
        os.path.join(d, "tall.png"))
    Image.fromarray(rs.randint(0, 256, (7, 4000, 3)).astype(np.uint8)).save(
        os.path.join(d, "wide.png"))


def preprocess(path):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = SIZE, int(SIZE * h / w)
    else:
        nw, nh = int(SIZE * w / h), SIZE
    img = img.resize((max(nw, 1), max(nh, 1)), Image.BICUBIC)
    a = np.asarray(img).astype(np.float64)
    top, left = (a.shape[0] - SIZE) // 2, (a.shape[1] - SIZE) // 2
    a = a[top:top + SIZE, left:left + SIZE] / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)


def main():
    d = os.path.join(HERE, "images")
    make_images(d)
    out = []
    for name in ("photo.jpg", "alpha.png", "tiny.png", "tall.png", "wide.png"):
        out.append(("pixels." + name.split(".")[0], preprocess(os.path.join(d, name))))
    write_ref(os.path.join(HERE, "image_ref.bin"), out)
    print("wrote images/ and image_ref.bin")


if __name__ == "__main__":
    main()
