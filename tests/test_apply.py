"""`contrastive predict` and `contrastive similar` end to end on the embedded digits (contrastive.apply)."""

import contextlib
import csv
import io
import os
import shutil

import pytest
import torch
from PIL import Image

from contrastive import apply
from contrastive.cli import main
from contrastive.config import KnnConfig, PretrainConfig
from contrastive.evaluate.classifier import load_classifier, random_classifier, reader_of, save_classifier
from contrastive.modality import Reader, load_data
from contrastive.train import pretrain
from helpers import quiet


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@contextlib.contextmanager
def one_thread():
    """conftest's one-thread rule, for module fixtures (they run before its per-test fixture)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "run"
    with one_thread():
        pretrain(PretrainConfig(method="simclr", epochs=1, batch_size=64, train_limit=256, out=str(out)), log=quiet)
    return out / "checkpoint-epoch0001.pt"


@pytest.fixture(scope="module")
def classifier(checkpoint, tmp_path_factory):
    """A fine-tuned digit classifier: 60 steps on 200 labels reach about 0.90 test top-1 (20 steps stay at 0.10)."""
    out = tmp_path_factory.mktemp("finetune")
    with one_thread():
        assert main(["finetune", "--checkpoint", str(checkpoint), "--label-fraction", "0.05", "--epochs", "1",
                     "--min-steps", "60", "--out", str(out)]) == 0
    return out / "classifier.pt"


@pytest.fixture(scope="module")
def digits():
    return load_data(None)


# --- predict ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_predict_csv_is_the_models_own_softmax(classifier, digits, tmp_path, capsys):
    out = tmp_path / "preds" / "test.csv"
    code, stdout, err = run(capsys, "predict", "--model", classifier, "--out", out, "--batch-size", 300)
    assert code == 0 and stdout == ""
    rows = list(csv.reader(out.open(newline="")))
    classes = [str(c) for c in range(10)]
    assert rows[0] == ["id", "class", *classes]
    assert len(rows) - 1 == len(digits.test) == 1000
    assert [r[0] for r in rows[1:]] == [f"test:{i}" for i in range(1000)]
    probs = torch.tensor([[float(p) for p in r[2:]] for r in rows[1:]], dtype=torch.float64)
    assert torch.allclose(probs.sum(1), torch.ones(1000, dtype=torch.float64), atol=1e-5)
    assert [r[1] for r in rows[1:]] == [classes[c] for c in probs.argmax(1).tolist()]
    assert all(len(p.split(".")[1]) == 6 for r in rows[1:3] for p in r[2:])
    # The round trip: the classifier run by hand on the test digits gives the same classes and probabilities.
    model, _ = load_classifier(classifier)
    model.eval()
    reader = reader_of(model)
    with torch.no_grad():
        x = reader.eval_views(digits.test).batched(digits.test.images, None)[0]
        direct = torch.softmax(model(x), dim=1).double()
    assert [r[1] for r in rows[1:]] == [classes[c] for c in direct.argmax(1).tolist()]
    assert len({r[1] for r in rows[1:]}) >= 8  # a trained classifier, not one that answers a constant
    assert (probs - direct).abs().max() < 1e-5
    accuracy = (direct.argmax(1) == digits.test.labels).double().mean().item()
    assert err.strip().splitlines()[-1] == f"predicted 1000 items of mnist test -> {out}; accuracy {accuracy:.4f}"
    assert os.listdir(out.parent) == ["test.csv"]  # the temporary file was renamed, not left behind


@pytest.mark.slow
def test_predict_writes_the_same_csv_to_stdout_without_out(classifier, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert run(capsys, "predict", "--model", classifier, "--split", "train", "--out", out)[0] == 0
    code, stdout, err = run(capsys, "predict", "--model", classifier, "--split", "train")
    assert code == 0
    assert stdout == out.read_text()
    assert len(stdout.splitlines()) == 4001 and stdout.splitlines()[1].startswith("train:0,")
    assert "predicted 4000 items of mnist train -> standard output; accuracy" in err


@pytest.mark.slow
def test_predict_refuses_a_pretraining_checkpoint_in_one_line(checkpoint, capsys):
    code, stdout, err = run(capsys, "predict", "--model", checkpoint)
    assert code == 2 and stdout == ""
    assert "is not a classifier" in one_error_line(err)


@pytest.mark.slow
def test_predict_to_an_unwritable_out_says_so_and_leaves_nothing(classifier, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me\n")
    out = blocker / "preds.csv"  # a path under a regular file
    code, stdout, err = run(capsys, "predict", "--model", classifier, "--out", out)
    assert code == 2 and stdout == ""
    line = one_error_line(err)
    assert line.startswith(f"error: cannot write {out} (") and line.endswith("; choose another --out")
    assert os.listdir(tmp_path) == ["a-file"] and blocker.read_text() == "keep me\n"


def test_predict_on_a_flat_folder_of_new_items(tmp_path, capsys):
    """A folder without train/ is one unlabelled split: auto predicts it, ids are the file paths,
    columns are the classes the model was trained on, and there is nothing to score."""
    reader = Reader("image", {"channels": 3, "image_size": 16, "cifar_stem": True})
    model = random_classifier(reader, "small_cnn", 3, seed=0)
    path = save_classifier(model, tmp_path / "clf.pt", data={"name": "shapes", "num_classes": 3,
                                                             "classes": ["circle", "square", "star"]},
                           label_fraction=1.0, indices=torch.arange(3))
    folder = tmp_path / "new"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(5):
        pixels = torch.randint(0, 256, (16, 16, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"item{i}.png")
    code, stdout, err = run(capsys, "predict", "--model", path, "--data", f"folder:{folder}")
    assert code == 0
    rows = list(csv.reader(io.StringIO(stdout)))
    assert rows[0] == ["id", "class", "circle", "square", "star"]
    assert [r[0] for r in rows[1:]] == [str(folder / f"item{i}.png") for i in range(5)]
    assert all(r[1] in ("circle", "square", "star") for r in rows[1:])
    assert "predicted 5 items" in err and "accuracy" not in err
    code, _, err = run(capsys, "predict", "--model", path, "--data", f"folder:{folder}", "--split", "test")
    assert code == 2 and "has no test split; pass --split train" in one_error_line(err)


# --- similar ---------------------------------------------------------------------------------

def neighbours(stdout: str) -> list[tuple[int, float, str, str]]:
    """(rank, similarity, label, id) of each printed line."""
    lines = [ln.split("\t") for ln in stdout.splitlines()]
    return [(int(r), float(s), label, i) for r, s, label, i in lines]


@pytest.mark.slow
def test_similar_finds_a_training_item_itself_first(checkpoint, digits, capsys):
    code, stdout, _ = run(capsys, "similar", "--checkpoint", checkpoint, "--query", "train:5", "--sheet", "")
    assert code == 0
    found = neighbours(stdout)
    assert [n[0] for n in found] == list(range(1, 11))
    _, sim, label, item = found[0]
    assert item == "train:5" and abs(sim - 1.0) < 1e-4 and label == str(int(digits.train.labels[5]))
    assert [n[1] for n in found] == sorted((n[1] for n in found), reverse=True)
    assert all(f"{n[1]:.4f}" in stdout for n in found)


@pytest.mark.slow
def test_nearest_training_digits_mostly_share_the_query_label(checkpoint, digits, capsys):
    agree = []
    for i in range(50):
        code, stdout, _ = run(capsys, "similar", "--checkpoint", checkpoint, "--query", f"test:{i}", "--sheet", "")
        assert code == 0
        want = str(int(digits.test.labels[i]))
        agree += [label == want for _, _, label, _ in neighbours(stdout)]
    assert len(agree) == 500
    # Measured 0.742 after this 1-epoch, 256-item SimCLR pretraining (chance: 0.1, ten balanced classes).
    assert sum(agree) / len(agree) > 0.6


@pytest.mark.slow
def test_the_second_query_reuses_the_index_until_the_checkpoint_changes(checkpoint, tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "copy.pt"
    shutil.copy(checkpoint, ckpt)
    encoded = []
    real = apply.extract_features

    def counting(encoder, items, *a, **kw):
        encoded.append(len(items))
        return real(encoder, items, *a, **kw)

    monkeypatch.setattr(apply, "extract_features", counting)
    first = run(capsys, "similar", "--checkpoint", ckpt, "--query", "test:7", "--sheet", "")
    assert first[0] == 0 and encoded == [4000, 1] and (tmp_path / "copy.index.pt").is_file()
    second = run(capsys, "similar", "--checkpoint", ckpt, "--query", "test:7", "--sheet", "")
    assert encoded == [4000, 1, 1] and second[1] == first[1]  # only the query encoded; the same answer
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a rewritten checkpoint
    assert run(capsys, "similar", "--checkpoint", ckpt, "--query", "test:7", "--sheet", "")[0] == 0
    assert encoded == [4000, 1, 1, 4000, 1]


@pytest.mark.slow
def test_a_query_file_gives_what_its_split_index_gives(checkpoint, digits, tmp_path, capsys):
    query = tmp_path / "digit.png"
    Image.fromarray(digits.test.images[3, 0].numpy()).save(query)
    by_file = run(capsys, "similar", "--checkpoint", checkpoint, "--query", query, "--sheet", "")
    by_index = run(capsys, "similar", "--checkpoint", checkpoint, "--query", "test:3", "--sheet", "")
    assert by_file[0] == by_index[0] == 0
    assert by_file[1] == by_index[1] and len(by_file[1].splitlines()) == 10


@pytest.mark.slow
@pytest.mark.parametrize("query, expected", [
    ("notes.txt", "cannot read image"),  # a file of another modality
    ("weights.pt", "cannot read image"),
    ("missing.png", "is neither SPLIT:INDEX of mnist (e.g. test:12) nor a readable file"),
    ("val:3", "mnist has no split 'val'; use train:INDEX or test:INDEX"),
    ("test:1000", "test has 1000 items; pass an index in 0..999"),
])
def test_a_bad_query_is_one_line(checkpoint, tmp_path, capsys, query, expected):
    (tmp_path / "notes.txt").write_text("not a picture\n")
    torch.save({"w": torch.zeros(3)}, tmp_path / "weights.pt")
    arg = str(tmp_path / query) if query.endswith((".txt", ".pt", ".png")) else query
    code, stdout, err = run(capsys, "similar", "--checkpoint", checkpoint, "--query", arg, "--sheet", "")
    assert code == 2 and stdout == ""
    assert expected in one_error_line(err)


@pytest.mark.slow
def test_similar_draws_a_png_contact_sheet(checkpoint, tmp_path, capsys):
    sheet = tmp_path / "sheets" / "q.png"
    code, stdout, err = run(capsys, "similar", "--checkpoint", checkpoint, "--query", "test:0", "-k", "4",
                            "--sheet", sheet)
    assert code == 0 and len(stdout.splitlines()) == 4 and f"sheet: {sheet}" in err  # stdout: the neighbours only
    with Image.open(sheet) as image:
        image.verify()
        assert image.format == "PNG"
    with Image.open(sheet) as image:
        assert image.width > 3 * image.height  # five panels side by side: the query and four neighbours
    assert os.listdir(sheet.parent) == ["q.png"]


def test_a_grayscale_model_predicts_a_folder_of_new_grayscale_pngs(tmp_path, capsys):
    """A folder is read as RGB unless a model says otherwise: predict reads it with the model's channels."""
    reader = Reader("image", {"channels": 1, "image_size": 28, "cifar_stem": True})
    model = random_classifier(reader, "small_cnn", 10, seed=0)
    path = save_classifier(model, tmp_path / "clf.pt", data={"name": "mnist", "num_classes": 10,
                                                             "classes": [str(c) for c in range(10)]},
                           label_fraction=1.0, indices=torch.arange(10))
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(3):
        Image.new("L", (28, 28), 40 * i).save(folder / f"d{i}.png")
    code, stdout, err = run(capsys, "predict", "--model", path, "--data", f"folder:{folder}")
    assert code == 0, err
    assert len(list(csv.reader(io.StringIO(stdout)))) == 4 and "predicted 3 items" in err


@pytest.mark.slow
def test_similar_refuses_a_classifier_in_one_line(classifier, capsys):
    code, _, err = run(capsys, "similar", "--checkpoint", classifier, "--query", "test:0")
    assert code == 2 and "is a classifier; this command embeds with a pretrained encoder" in one_error_line(err)


def test_the_index_is_rebuilt_when_the_images_change(tmp_path):
    """Same name, size and (no) labels, other images: the fingerprint must differ."""
    from contrastive.apply import fingerprint
    from contrastive.image.data import DataSplits, ImageSet

    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"x")

    def data(seed):
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (6, 1, 8, 8), generator=g, dtype=torch.uint8)
        return DataSplits(name="folder:/x", train=ImageSet(images=images), test=None, num_classes=0, channels=1,
                          image_size=8, classes=[])

    assert fingerprint(ckpt, data(0)) == fingerprint(ckpt, data(0))
    assert fingerprint(ckpt, data(0)) != fingerprint(ckpt, data(1))


def test_the_index_is_a_file_of_its_own_kind_and_an_untagged_one_is_still_read(tmp_path):
    from contrastive import files

    path, embeddings, key = tmp_path / "c.index.pt", torch.eye(3), {"items": 3}
    files.save(path, files.INDEX, {"embeddings": embeddings, "fingerprint": key})
    assert torch.load(path, weights_only=True)["kind"] == files.INDEX
    saved = apply.saved_index(path)
    assert torch.equal(saved[0], embeddings) and saved[1] == key
    torch.save({"model": embeddings, "config": key}, path)  # as written before the kind tag
    saved = apply.saved_index(path)
    assert torch.equal(saved[0], embeddings) and saved[1] == key
    for other in (b"not an index\n", b""):  # damaged or foreign: none, so it is rebuilt
        path.write_bytes(other)
        assert apply.saved_index(path) is None
    files.save(path, files.CHECKPOINT, {"model": {}, "config": {}})
    assert apply.saved_index(path) is None and apply.saved_index(tmp_path / "missing.index.pt") is None


# --- code: a C/C++ tree of the user's own ----------------------------------------------------

# (file, source); each function's first line is where its name is written below (the functions differ in
# shape, so none is a duplicate of another once names are replaced by placeholders).
TREE = {
    "a.c": "#include <stdio.h>\n\nint add(int a, int b) { return a + b; }\n\n"
           "/* negation */\nint neg(int a)\n{\n    return -a;\n}\n\n"
           "static void show(const char *s) { if (s) { printf(\"%s\", s); } }\n",
    "lib/b.c": "int sum(const int *v, int n)\n{\n    int t = 0;\n    for (int i = 0; i < n; i++) t += v[i];\n"
               "    return t;\n}\n\nint max3(int x, int y, int z) { int m = x > y ? x : y; return m > z ? m : z; }\n",
    "lib/c.cpp": "class Box { public: int size() const; int w; };\n\n"
                 "int Box::size() const { return w * 2; }\n\nnamespace geo {\nint area(int w, int h) { while (w < 0) "
                 "{ w++; } return w * h; }\n}\n",
}
FUNCTIONS = {("a.c", "add", 3), ("a.c", "neg", 6), ("a.c", "show", 11), ("lib/b.c", "sum", 1),
             ("lib/b.c", "max3", 8), ("lib/c.cpp", "Box::size", 3), ("lib/c.cpp", "area", 6)}


@pytest.fixture(scope="module")
def c_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree") / "src"
    for name, source in TREE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    return root


@pytest.fixture(scope="module")
def code_reader(c_tree):
    data = load_data(f"code:{c_tree}", {"max_tokens": 48, "variants": 2})
    return Reader("code", {"vocab": list(data.vocab), "max_tokens": data.max_tokens})


@pytest.fixture(scope="module")
def code_checkpoint(c_tree, tmp_path_factory):
    """One SimCLR epoch of a cnn on the tree itself: the encoder `similar` embeds the functions with."""
    from helpers import TINY_OPTIONS

    out = tmp_path_factory.mktemp("code-pre") / "run"
    cfg = PretrainConfig(method="simclr", backbone="cnn", epochs=1, batch_size=4, out=str(out),
                         data=f"code:{c_tree}", data_options={"max_tokens": 48, "variants": 2},
                         method_options=dict(TINY_OPTIONS["simclr"]), knn=KnnConfig(k=3, every=0))
    with one_thread():
        pretrain(cfg, data=load_data(f"code:{c_tree}", {"max_tokens": 48, "variants": 2}), log=quiet)
    return out / "checkpoint-epoch0001.pt"


def test_predict_on_a_c_tree_writes_one_row_per_function_with_its_place(c_tree, code_reader, tmp_path, capsys):
    model = random_classifier(code_reader, "cnn", 2, seed=0)
    path = save_classifier(model, tmp_path / "clf.pt", data={"name": "juliet:x", "num_classes": 2,
                                                             "classes": ["fixed", "vulnerable"]},
                           label_fraction=1.0, indices=torch.arange(2))
    out = tmp_path / "functions.csv"
    code, stdout, err = run(capsys, "predict", "--model", path, "--data", f"code:{c_tree}", "--out", out)
    assert code == 0 and stdout == "", err
    rows = list(csv.reader(out.open(newline="")))
    assert rows[0] == ["file", "function", "line", "class", "fixed", "vulnerable"]
    assert {(r[0], r[1], int(r[2])) for r in rows[1:]} == FUNCTIONS and len(rows) - 1 == len(FUNCTIONS)
    probs = torch.tensor([[float(p) for p in r[4:]] for r in rows[1:]], dtype=torch.float64)
    assert torch.allclose(probs.sum(1), torch.ones(len(FUNCTIONS), dtype=torch.float64), atol=1e-5)
    assert [r[3] for r in rows[1:]] == [["fixed", "vulnerable"][c] for c in probs.argmax(1).tolist()]
    # Each row's probability is the model's own on that function: the one read from its file by `similar`'s reader.
    model.eval()
    with torch.no_grad():
        for r, p in zip(rows[1:], probs):
            tokens = code_reader.handler.read_item(f"{c_tree / r[0]}:{r[1]}", code_reader.inputs)
            direct = torch.softmax(model(tokens), dim=1)[0].double()
            assert (direct - p).abs().max() < 1e-5, r
    assert err.strip().splitlines()[-1] == f"predicted {len(FUNCTIONS)} items of code:{c_tree} train -> {out}"


def test_similar_finds_the_query_function_itself_first(c_tree, code_checkpoint, capsys):
    for file, name, line in sorted(FUNCTIONS):
        code, stdout, err = run(capsys, "similar", "--checkpoint", code_checkpoint, "--data", f"code:{c_tree}",
                                "--query", f"{c_tree / file}:{name}", "-k", 3, "--sheet", "")
        assert code == 0, err
        found = neighbours(stdout)
        assert len(found) == 3 and found[0][3] == f"{file}:{name}:{line}" and abs(found[0][1] - 1) < 1e-4, stdout
        assert found[0][2] == "-" and found[1][1] < found[0][1] - 1e-4  # unlabelled; the others are not it
    # A file alone is still its first function.
    code, stdout, _ = run(capsys, "similar", "--checkpoint", code_checkpoint, "--data", f"code:{c_tree}",
                          "--query", c_tree / "lib" / "b.c", "-k", 1, "--sheet", "")
    assert code == 0 and neighbours(stdout)[0][3] == "lib/b.c:sum:1"


def test_an_unknown_function_is_refused_with_the_files_names(c_tree, code_checkpoint, capsys):
    code, stdout, err = run(capsys, "similar", "--checkpoint", code_checkpoint, "--data", f"code:{c_tree}",
                            "--query", f"{c_tree / 'a.c'}:main", "--sheet", "")
    assert code == 2 and stdout == ""
    line = one_error_line(err)  # refused before the tree is read: no summary line
    assert f"{c_tree / 'a.c'} has no function 'main'; its functions: add, neg, show; pass FILE:FUNCTION" in line
    code, _, err = run(capsys, "similar", "--checkpoint", code_checkpoint, "--data", f"code:{c_tree}",
                       "--query", f"{c_tree / 'missing.c'}:add", "--sheet", "")
    last = err.strip().splitlines()[-1]  # after the tree's summary line: the message names the data
    assert code == 2 and last.startswith("error: ") and "nor a readable file (or FILE:FUNCTION" in last
