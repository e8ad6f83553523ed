"""The code modality's data: extraction and labels on made-up Juliet-like files, the label-leak
checks, bad files counted and skipped (issue 14); the split by flaw variant, the parse cache and the
functions' first lines (issue 24)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("tree_sitter_c")

from contrastive.code.cache import CACHE_ENV, SourceCache  # noqa: E402
from contrastive.code.data import CodeSet, Sample, cached_rows, in_test, load_code  # noqa: E402
from contrastive.code.extract import read_functions  # noqa: E402
from contrastive.code.juliet import case_of, label_of_name, variant_of  # noqa: E402
from contrastive.code.normalise import LABEL_WORDS, carries_label  # noqa: E402
from contrastive.code.transforms import tokens_of  # noqa: E402

CWE = "CWE121_Stack_Based_Buffer_Overflow"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Every test parses into a cache of its own, never the user's ~/.cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("cache")))

SINGLE = """/* TEMPLATE GENERATED TESTCASE FILE
 * @description POTENTIAL FLAW: copies too much */
#include "std_testcase.h"
#ifndef OMITBAD
void CWE121_Stack_Based_Buffer_Overflow__char_cpy_01_bad()
{
    char badBuffer[10]; /* FLAW: too small */
    char * data = badBuffer;
    strcpy(data, "AAAAAAAAAAAAAAAAAAAA");
    printLine("bad sink reached");
}
#endif /* OMITBAD */
#ifndef OMITGOOD
static void goodG2B()
{
    char goodBuffer[100]; // FIX: large enough
    char * data = goodBuffer;
    strncpy(data, "%s\\n", 99);
    printf("%d\\n", 5);
}
void CWE121_Stack_Based_Buffer_Overflow__char_cpy_01_good()
{
    goodG2B();
}
#endif /* OMITGOOD */
#ifdef INCLUDEMAIN
int main(int argc, char * argv[])
{
    printLine("Calling good()...");
    CWE121_Stack_Based_Buffer_Overflow__char_cpy_01_good();
    return 0;
}
#endif
"""

PART_A = """#include "std_testcase.h"
#ifndef OMITBAD
void CWE121_Stack_Based_Buffer_Overflow__char_loop_22_badSink(char * data);
void CWE121_Stack_Based_Buffer_Overflow__char_loop_22_bad()
{
    char * data = (char *)malloc(10);
    CWE121_Stack_Based_Buffer_Overflow__char_loop_22_badSink(data);
}
#endif
#ifndef OMITGOOD
static void goodB2G()
{
    char * data = (char *)malloc(100);
    int goodCount = 0;
    goodCount++;
    CWE121_Stack_Based_Buffer_Overflow__char_loop_22_goodB2GSink(data);
}
#endif
"""

PART_B = """#include "std_testcase.h"
#ifndef OMITBAD
void CWE121_Stack_Based_Buffer_Overflow__char_loop_22_badSink(char * data)
{
    size_t i;
    for (i = 0; i < 100; i++) { data[i] = 'A'; }
    free(data);
}
#endif
#ifndef OMITGOOD
void CWE121_Stack_Based_Buffer_Overflow__char_loop_22_goodB2GSink(char * data)
{
    size_t i;
    for (i = 0; i < 10; i++) { data[i] = 'A'; }
    free(data);
}
#endif
"""

# A flawed and a fixed sink with the same code: dropped as conflicting; the same fixed function twice: a duplicate.
CONFLICT = """void CWE122_Heap__x_01_badSink(int * p) { p[0] = 1; }
void CWE122_Heap__x_01_goodG2BSink(int * p) { p[0] = 1; }
static void goodG2B1() { int n = 2; n = n * 3; }
static void goodG2B2() { int m = 2; m = m * 3; }
"""

CPP = """#include "std_testcase.h"
namespace CWE401_Memory_Leak__new_int_01
{
#ifndef OMITBAD
void bad()
{
    int * data = new int;
    *data = 5;
    printIntLine(*data);
}
#endif
#ifndef OMITGOOD
static void goodG2B()
{
    int * data = new int;
    *data = 5;
    printIntLine(*data);
    delete data;
}
void good() { goodG2B(); }
#endif
}
"""


def write_tree(root, extra: dict | None = None):
    files = {
        f"testcases/{CWE}/s01/{CWE}__char_cpy_01.c": SINGLE,
        f"testcases/{CWE}/s01/{CWE}__char_loop_22a.c": PART_A,
        f"testcases/{CWE}/s01/{CWE}__char_loop_22b.c": PART_B,
        "testcases/CWE122_Heap/CWE122_Heap__x_01.c": CONFLICT,
        "testcases/CWE401_Memory_Leak/CWE401_Memory_Leak__new_int_01.cpp": CPP,
        "testcasesupport/io.c": "void printLine(const char * line) { puts(line); }\n",
    }
    files.update(extra or {})
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


def load(root, **kw):
    lines = []
    data = load_code(f"juliet:{root}", juliet_cases=None, variants=3, log=lines.append, **kw)
    return data, lines


def every_item(data):
    for split in (data.train, data.test):
        for i in range(len(split)):
            yield split, i


def test_case_ids_join_the_files_of_one_test_case():
    assert case_of(f"{CWE}__char_loop_22a.c") == (f"{CWE}__char_loop_22", 121)
    assert case_of(f"{CWE}__char_loop_22b.c") == (f"{CWE}__char_loop_22", 121)
    assert case_of("CWE401_Memory_Leak__new_char_81_goodG2B.cpp") == ("CWE401_Memory_Leak__new_char_81", 401)
    assert case_of("io.c") is None


@pytest.mark.parametrize("name, label", [("CWE121_x_01_bad", "vulnerable"), ("badSink", "vulnerable"),
                                         ("goodG2B", "fixed"), ("goodB2GSink", "fixed"), ("good1", "fixed"),
                                         ("CWE121_x_01_good", None), ("good", None), ("main", None),
                                         ("staticTrue", None), ("ns::Klass_bad::~Klass_bad", "vulnerable")])
def test_labels_come_from_function_names(name, label):
    assert label_of_name(name) == label


def test_functions_of_both_guards_and_both_files_are_extracted_with_their_labels(tmp_path):
    data, _ = load(write_tree(tmp_path))
    got = {}
    for split, i in every_item(data):
        got[split.ids[i].rsplit(":", 1)[1]] = data.classes[int(split.labels[i])]
    assert got == {
        f"{CWE}__char_cpy_01_bad": "vulnerable", "goodG2B": "fixed",  # both guards of one file
        f"{CWE}__char_loop_22_bad": "vulnerable", "goodB2G": "fixed",  # file a
        f"{CWE}__char_loop_22_badSink": "vulnerable", f"{CWE}__char_loop_22_goodB2GSink": "fixed",  # file b
        "goodG2B1": "fixed",  # goodG2B2 is its duplicate; the two x_01 sinks conflict
        "bad": "vulnerable",  # C++, inside a namespace (its goodG2B has the same name as the C one: both kept)
    } | ({"goodG2B": "fixed"})
    assert data.positive_class == data.classes.index("vulnerable")
    assert data.stats["conflicting"] == 2 and data.stats["duplicates"] == 1


def test_the_cpp_fixed_function_is_kept_beside_the_c_one(tmp_path):
    data, _ = load(write_tree(tmp_path))
    ids = [split.ids[i] for split, i in every_item(data)]
    assert sum(i.endswith(":goodG2B") for i in ids) == 2  # the C and the C++ test case's
    assert not any(i.endswith((":main", "_good", ":good", "printLine")) for i in ids)  # main, dispatchers, support


def test_cwe_task_labels_every_function_with_its_test_case_cwe(tmp_path):
    data, _ = load(write_tree(tmp_path), task="cwe")
    assert data.classes == ["CWE121", "CWE122", "CWE401"] and data.positive_class is None
    for split, i in every_item(data):
        assert data.classes[int(split.labels[i])] == f"CWE{int(split.cwes[i])}"


def leaked_words(text: str) -> set[str]:
    return {w for w in LABEL_WORDS if w in text.lower()}


def test_no_token_string_or_name_carries_a_label_or_its_test_case(tmp_path):
    data, _ = load(write_tree(tmp_path))
    vocab = data.vocab
    for split, i in every_item(data):
        text = split.texts[i]
        assert leaked_words(text) == set(), text
        assert "OMIT" not in text and "/*" not in text and "//" not in text
        assert not text.startswith("static")  # Juliet's fixed variants are static, its flawed entry points not
        case = split.groups[i]
        assert case.lower() not in text.lower() and case.split("__")[0].lower() not in text.lower()
        for row in split.tokens[i]:
            tokens = [vocab[t] for t in row.tolist() if t]
            assert not any(carries_label(t) for t in tokens), tokens
    assert not any(carries_label(t) for t in vocab)


def test_names_are_renamed_consistently_and_library_calls_and_format_strings_kept(tmp_path):
    data, _ = load(write_tree(tmp_path))
    texts = {split.ids[i].rsplit(":", 1)[1]: split.texts[i] for split, i in every_item(data)}
    fixed = texts["goodG2B"] if "strncpy" in texts["goodG2B"] else None
    if fixed is None:  # the C++ goodG2B was listed last
        fixed = next(t for t in (s.texts[i] for s, i in every_item(data)) if "strncpy" in t)
    assert re.search(r"char VAR_(\d+) \[ 100 \] ;\nchar \* VAR_(\d+) = VAR_\1 ;", fixed)
    assert '"%s\\n"' in fixed and '"%d\\n"' in fixed  # format strings hold no words: kept
    flawed = texts[f"{CWE}__char_cpy_01_bad"]
    assert "strcpy" in flawed and '"STR"' in flawed and "printLine" in flawed


def test_flaw_variants_are_test_cases_without_their_flow_number():
    fgets = f"{CWE}__CWE129_fgets"
    for name in (f"{fgets}_01.c", f"{fgets}_22a.c", f"{fgets}_22b.c", f"{fgets}_81_bad.cpp",
                 f"{fgets}_81_goodG2B.cpp", f"{fgets}_84a.cpp"):
        assert variant_of(case_of(name)[0]) == fgets, name
    assert variant_of("CWE190_Integer_Overflow__char_fscanf_add_01") == "CWE190_Integer_Overflow__char_fscanf_add"


def flows_tree(root):
    """40 flaw variants, each in flows 01 and 02 and in a flow 22 split over files a and b."""
    extra = {}
    for n in range(40):
        for flow in ("01", "02"):
            extra[f"testcases/CWE190_X/CWE190_X__t{n}_{flow}.c"] = (
                f"void CWE190_X__t{n}_{flow}_bad() {{ int a = {n}; a = a + {flow}; }}\n"
                f"static void goodG2B() {{ int b = {n}; b = b - {flow}; }}\n")
        for part in ("a", "b"):
            extra[f"testcases/CWE190_X/CWE190_X__t{n}_22{part}.c"] = \
                f"void CWE190_X__t{n}_22_bad{part}() {{ long c = {n}; c = c * {7 if part == 'a' else 71}; }}\n"
    return write_tree(root, extra)


def test_the_split_keeps_every_flow_variant_of_a_flaw_on_one_side(tmp_path):
    data, _ = load(flows_tree(tmp_path))
    train, test = set(data.train.groups), set(data.test.groups)
    assert train and test and not train & test
    assert all(in_test(g) for g in test) and not any(in_test(g) for g in train)
    side = {}  # flaw variant read off the file name -> the splits its functions are in
    for split, i in every_item(data):
        stem = os.path.basename(split.ids[i].split(":")[0])
        side.setdefault(variant_of(case_of(stem)[0]), set()).add("test" if split is data.test else "train")
        assert split.groups[i] == variant_of(case_of(stem)[0])
    assert all(len(s) == 1 for s in side.values())
    files = {os.path.basename(split.ids[i].split(":")[0]) for split, i in every_item(data)
             if split.groups[i] == "CWE190_X__t3"}
    assert files == {f"CWE190_X__t3_{f}.c" for f in ("01", "02", "22a", "22b")}  # siblings and both parts
    again, _ = load(tmp_path)
    assert again.test.groups == data.test.groups  # seeded and fixed


def test_bad_files_are_counted_and_skipped_with_a_summary_line(tmp_path):
    extra = {f"testcases/{CWE}/{CWE}__bin_01.c": b"\x7fELF\x00\x01\x02",
             f"testcases/{CWE}/{CWE}__latin_01.c": "void f_bad() { char *s = \"caf\xe9\"; }".encode("latin-1"),
             f"testcases/{CWE}/{CWE}__broken_01.c": "void CWE121_broken_01_bad() { int x = ; if ( }\n"}
    data, lines = load(write_tree(tmp_path, extra))
    assert data.stats["skipped"] == {"binary": 1, "not UTF-8": 1, "does not parse": 1}
    assert len(lines) == 1 and "1 binary, 1 does not parse, 1 not UTF-8 skipped" in lines[0]
    assert not any("broken" in i for s in (data.train, data.test) for i in s.ids)


def test_a_file_that_parses_in_part_gives_its_clean_functions(tmp_path):
    from contrastive.code.extract import PARTIAL, functions_of

    source = (b"int add(int a, int b) { return a + b; }\n"
              b"void broken(int x) { int y = ; if ( }\n"
              b"int twice(int a) { return 2 * a; }\n")
    found, reason = functions_of(source, "c", "p.c")
    assert [f.name for f in found] == ["add", "twice"] and reason == PARTIAL and [f.line for f in found] == [1, 3]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "p.c").write_bytes(source)
    (tmp_path / "src" / "q.c").write_bytes(b"void only_broken() { int y = ; }\n")
    lines = []
    tree = load_code(f"code:{tmp_path / 'src'}", log=lines.append)
    assert sorted(i.split(":")[1] for i in tree.train.ids) == ["add", "twice"]
    assert tree.stats["partial"] == 1 and tree.stats["skipped"] == {"does not parse": 1}
    assert "1 does not parse skipped; 1 parse in part, only their clean functions read" in lines[0]


def test_long_functions_are_truncated_and_counted(tmp_path):
    body = " ".join(f"x{i} = {i};" for i in range(60))
    extra = {f"testcases/{CWE}/{CWE}__long_01.c": f"void CWE121_long_01_bad() {{ int x0; {body} }}\n"}
    data, lines = load(write_tree(tmp_path, extra), max_tokens=32)
    assert data.stats["truncated"] >= 1 and "truncated" in lines[0]
    assert data.train.tokens.shape[-1] == 32 and data.test.tokens.shape[-1] == 32
    assert (data.train.tokens[..., -1] != 0).any() or (data.test.tokens[..., -1] != 0).any()


def test_vocabulary_comes_from_the_training_split_only(tmp_path):
    extra = {f"testcases/CWE190_X/CWE190_X__t{n:02d}_01.c":
             f"void CWE190_X__t{n:02d}_01_bad() {{ int a = {1000 + n}; a = a + {1000 + n}; }}\n" for n in range(40)}
    data, _ = load(write_tree(tmp_path, extra))
    test_only = {str(1000 + int(g[-2:])) for g in data.test.groups if g.startswith("CWE190")}
    assert test_only and not test_only & set(data.vocab)
    train_only = {str(1000 + int(g[-2:])) for g in data.train.groups if g.startswith("CWE190")}
    assert train_only <= set(data.vocab)


def test_items_are_fixed_length_int64_in_memory_with_variants(tmp_path):
    data, _ = load(write_tree(tmp_path), max_tokens=64)
    assert data.train.tokens.dtype == torch.int64 and data.train.tokens.shape[1:] == (3, 64)
    assert data.train.in_memory and data.train.take(torch.tensor([0])).shape == (1, 3, 64)
    item, label = data.train[0]
    assert item.shape == (3, 64) and label in (0, 1)
    sub = data.train.subset([1, 0])
    assert sub.ids == [data.train.ids[1], data.train.ids[0]] and torch.equal(sub.tokens[1], data.train.tokens[0])


def test_code_tree_and_jsonl_records(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.c").write_text("int add(int a, int b) { return a + b; }\nint neg(int a) { return -a; }\n")
    tree = load_code(f"code:{tmp_path / 'src'}", log=lambda m: None)
    assert len(tree.train) == 2 and tree.test is None and not tree.train.has_labels and tree.num_classes == 0
    records = [{"code": f"int f{i}(int x) {{ return x * {i}; }}", "label": i % 2} for i in range(30)]
    records.append({"code": "int broken( { ", "label": 1})
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    data = load_code(f"code:{path}", log=lambda m: None)
    assert data.classes == ["0", "1"] and data.positive_class == 1
    assert len(data.train) + len(data.test) == 30 and data.stats["skipped"] == {"does not parse": 1}
    assert tokens_of("int f(int x) { return x; }", "c")[:3] == ["int", "f", "("]


def test_load_data_reads_the_modality_options_and_an_encoders_vocabulary(tmp_path):
    from contrastive.modality import load_data, reader_for

    write_tree(tmp_path)
    quiet = {"juliet_cases": 0, "variants": 2, "max_tokens": 48}
    data = load_data(f"juliet:{tmp_path}", {**quiet, "task": "cwe"})
    assert data.modality == "code" and data.classes == ["CWE121", "CWE122", "CWE401"]
    assert data.train.tokens.shape[1:] == (2, 48)
    inputs = reader_for(data, {}).inputs
    inputs = {**inputs, "vocab": inputs["vocab"] + ["never_seen"], "max_tokens": 40}
    again = load_data(f"juliet:{tmp_path}", quiet, inputs)  # read as that encoder reads
    assert again.vocab == inputs["vocab"] and again.train.tokens.shape[-1] == 40
    one = load_data(f"juliet:{tmp_path}", {**quiet, "juliet_cases": 1})
    assert len(set(one.train.groups) | set(one.test.groups)) == 1


@pytest.mark.skipif(not os.environ.get("JULIET_DIR"), reason="set JULIET_DIR to the unpacked juliet-c folder")
def test_no_leak_in_real_juliet_functions():
    data = load_code(f"juliet:{os.environ['JULIET_DIR']}", juliet_cases=150, variants=2, log=lambda m: None)
    assert not set(data.train.groups) & set(data.test.groups)
    for split, i in every_item(data):
        assert leaked_words(split.texts[i]) == set(), split.texts[i]
        assert split.groups[i].split("__")[0].lower() not in split.texts[i].lower()
        tokens = [data.vocab[t] for row in split.tokens[i] for t in row.tolist() if t]
        assert not any(carries_label(t) for t in tokens)


# --- the cache of parsed files and drawn variants (issue 24) ---------------------------------------

def all_texts(data) -> list[str]:
    return [split.texts[i] for split, i in every_item(data)]


def test_a_changed_file_is_parsed_again_and_an_unchanged_load_parses_nothing(tmp_path, monkeypatch):
    import contrastive.code.parse as parse_module

    root = write_tree(tmp_path / "tree")
    first, _ = load(root)
    assert not any("memcpy" in t for t in all_texts(first))
    target = root / f"testcases/{CWE}/s01/{CWE}__char_cpy_01.c"
    target.write_text(SINGLE.replace('strcpy(data, "AAAAAAAAAAAAAAAAAAAA");', "memcpy(data, data + 1, 20);"))
    second, _ = load(root)
    texts = all_texts(second)
    assert any("memcpy" in t for t in texts) and not any("strcpy" in t for t in texts)

    tables = sorted(Path(os.environ[CACHE_ENV]).rglob("*.json"))
    assert tables  # the shards the two loads wrote
    written = {p: p.stat().st_mtime_ns for p in tables}

    def no_parsing(language):
        raise AssertionError("parsed although every file and variant was cached")

    monkeypatch.setattr(parse_module, "parser", no_parsing)
    third, _ = load(root)  # neither the files nor the variants (tokens_of parses) are parsed again
    assert all_texts(third) == texts and torch.equal(third.train.tokens, second.train.tokens)
    assert torch.equal(third.test.tokens, second.test.tokens) and third.train.ids == second.train.ids
    assert {p: p.stat().st_mtime_ns for p in tables} == written  # nothing new: nothing rewritten


def test_variants_are_seeded_by_the_function_text_not_its_place(tmp_path):
    sample = Sample("void FUNC_1 ( ) { int VAR_1 = 1 ; int VAR_2 = 2 ; VAR_1 = VAR_1 + VAR_2 ; }",
                    tuple("void FUNC_1 ( ) { int VAR_1 = 1 ; int VAR_2 = 2 ; VAR_1 = VAR_1 + VAR_2 ; }".split()),
                    "c", "g", None)
    rows = cached_rows(sample, 6, SourceCache(tmp_path / "a"))
    assert len(rows) == 6 and rows[0] == list(sample.tokens) and any(r != rows[0] for r in rows[1:])
    assert cached_rows(sample, 6, SourceCache(tmp_path / "b")) == rows  # a fresh cache draws them alike
    other = Sample(sample.text.replace("2 ;", "3 ;"), sample.tokens, "c", "g", None)
    assert cached_rows(other, 6, SourceCache(tmp_path / "c"))[1:] != rows[1:]


def test_a_cache_folder_that_cannot_be_written_is_reported_and_the_load_goes_on(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    data, lines = load(write_tree(tmp_path / "tree"))
    assert len(data.train) + len(data.test) == 9
    assert any(line.startswith("code cache not saved") and CACHE_ENV in line for line in lines)


# --- the first line of each function (issue 24: `contrastive predict` names it) ---------------------

LINES = """/* a comment */
#include <stdio.h>

static int
CWE121_x__lines_01_bad(int a,
                       int b)
{
    return a + b;
}
#ifndef OMITGOOD
void goodG2B(void) { printf("%d\\n", 1); }
#endif
"""


def test_each_function_knows_its_first_line_and_the_sets_keep_it(tmp_path):
    path = tmp_path / "testcases" / "CWE121_x" / "CWE121_x__lines_01.c"
    path.parent.mkdir(parents=True)
    path.write_text(LINES)
    functions, reason = read_functions(str(path))
    assert reason is None and [(f.name, f.line) for f in functions] == [("CWE121_x__lines_01_bad", 4),
                                                                         ("goodG2B", 11)]
    data, _ = load(tmp_path)
    split = data.train if len(data.train) else data.test
    got = {i.rsplit(":", 1)[1]: line for i, line in zip(split.ids, split.lines)}
    assert got == {"CWE121_x__lines_01_bad": 4, "goodG2B": 11}
    first = split.ids.index("testcases/CWE121_x/CWE121_x__lines_01.c:goodG2B")
    assert split.subset([first]).lines == [11] and split.with_labels(split.labels).lines == split.lines
    assert CodeSet(split.tokens, split.labels).lines == [0] * len(split)  # not given: unknown
